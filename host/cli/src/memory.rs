//! What the long-running roles (`up`, `server`, `agent run`) hold while idle.
//!
//! mimalloc keeps memory a process freed for reuse: after a start that compiled the
//! standard runbooks, or after a burst of incidents, an idle agent held three to five
//! times what it uses. Two settings return it without costing throughput under load
//! (both measured with `scripts/bench-http`, BENCHMARKS.md):
//! - arenas are committed on demand instead of eagerly;
//! - a watcher thread returns freed memory to the OS (`mi_collect`) once the process
//!   has gone idle — under load nothing changes. Purging every free at once (mimalloc's
//!   `purge_delay=0`) would do the same but halved throughput. mimalloc frees a thread's
//!   pages only on that thread, so the watcher also has the async workers (as they next
//!   park), the guests' kept threads and wasmtime's compile pool collect their own, and
//!   trims the C library's malloc, which SQLite allocates through. (sqlx's connection
//!   threads run no code of ours and keep theirs.)
//!
//! An operator's `MIMALLOC_ARENA_EAGER_COMMIT` still wins: a value given there is left
//! alone.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// The mimalloc linked as the global allocator (libmimalloc-sys, its v3 sources).
unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// The variable mimalloc reads `mi_option_arena_eager_commit` from.
const EAGER_COMMIT_VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// How often the watcher looks, and the CPU share below which the process counts as idle.
const WATCH: Duration = Duration::from_secs(5);
const IDLE_CPU_SHARE: f64 = 0.01;

/// Tune the allocator for a long-running role and start the idle watcher.
///
/// mimalloc reserves its first arena before `main` runs, so the commit setting only takes
/// effect through its environment variable: the process re-executes itself once with it
/// set (same pid, same arguments). Should that fail, it runs on untuned.
pub fn long_running() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(EAGER_COMMIT_VAR).is_none() {
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_default();
        let exe = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("runwarden: running without allocator tuning (own path: {e})");
                return idle_watcher();
            }
        };
        let err = std::process::Command::new(exe)
            .arg0(argv0)
            .args(args)
            .env(EAGER_COMMIT_VAR, "0")
            .exec();
        eprintln!("runwarden: running without allocator tuning (re-exec failed: {err})");
    }
    idle_watcher();
}

/// Bumped each time the process goes idle: a thread that sees a new value returns what its
/// own allocator heap holds freed (mimalloc frees a thread's pages only on that thread).
static IDLE_GENERATION: AtomicU64 = AtomicU64::new(0);

/// What else runs when the process goes idle (see [`on_idle`]).
type IdleHook = Box<dyn Fn() + Send>;
static IDLE_HOOKS: Mutex<Vec<IdleHook>> = Mutex::new(Vec::new());

/// Also run `hook` (on the watcher's thread) each time the process goes idle.
pub fn on_idle(hook: impl Fn() + Send + 'static) {
    IDLE_HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(hook));
}

/// Return this thread's freed allocator memory to the OS.
pub fn collect_this_thread() {
    // SAFETY: mi_collect may be called from any thread at any time; it acts on the
    // calling thread's heap.
    unsafe { mi_collect(true) };
}

/// For a tokio runtime's `on_thread_park`: a worker about to park collects its heap once
/// per idle period.
pub fn on_park() {
    thread_local! {
        static SEEN: Cell<u64> = const { Cell::new(0) };
    }
    let now = IDLE_GENERATION.load(Ordering::Relaxed);
    if SEEN.with(|s| s.replace(now)) != now {
        collect_this_thread();
    }
}

fn idle_watcher() {
    let spawned = std::thread::Builder::new()
        .name("runwarden-trim".into())
        .spawn(|| {
            let mut last = cpu_time();
            let mut trimmed = false;
            loop {
                std::thread::sleep(WATCH);
                let now = cpu_time();
                let idle = (now - last).as_secs_f64() < WATCH.as_secs_f64() * IDLE_CPU_SHARE;
                last = now;
                if idle && !trimmed {
                    // Each thread frees its own pages: this one, the pool wasmtime
                    // compiled on (its threads idle forever after a start that compiled),
                    // the async workers as they next park, and whatever registered.
                    collect_this_thread();
                    rayon_core::broadcast(|_| collect_this_thread());
                    IDLE_GENERATION.fetch_add(1, Ordering::Relaxed);
                    for hook in IDLE_HOOKS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                        hook();
                    }
                    // SQLite allocates through the C library's malloc: give back what its
                    // arenas hold free.
                    // SAFETY: malloc_trim may be called at any time from any thread.
                    unsafe { libc::malloc_trim(0) };
                    // What the collection itself cost is not activity.
                    last = cpu_time();
                    trimmed = true;
                } else if !idle {
                    trimmed = false;
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("runwarden: idle memory watcher not started: {e}");
    }
}

/// CPU time (user + system) of the whole process so far.
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer given; RUSAGE_SELF is valid.
    let ru = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::raw::{c_int, c_long};

    /// mimalloc reads the variable this module sets under the option it is named for
    /// (`mi_option_arena_eager_commit`, number 4 in mimalloc v3's `mi_option_t`): a
    /// mimalloc upgrade that renamed it would make the re-exec pointless.
    #[test]
    fn mimalloc_reads_the_eager_commit_variable() {
        unsafe extern "C" {
            fn mi_option_get(option: c_int) -> c_long;
        }
        const CHILD: &str = "RUNWARDEN_TEST_MIMALLOC_CHILD";
        const ARENA_EAGER_COMMIT: c_int = 4;
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: reading a mimalloc option.
            assert_eq!(unsafe { mi_option_get(ARENA_EAGER_COMMIT) }, 7);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "memory::tests::mimalloc_reads_the_eager_commit_variable",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env(EAGER_COMMIT_VAR, "7")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_time();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(cpu_time() > before);
    }
}
