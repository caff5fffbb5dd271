//! The audit-scale benchmark's smaller sibling (issue #14). `scripts/bench-evidence` fills a
//! log with 1.8M pipeline-shaped records and runs `evidence export` and `evidence verify`
//! under GNU time; this fills 50,000 the same way (`runwarden_testkit::evidence`, which the
//! benchmark's `fill_log` calls) and runs the same commands through the real binary. The
//! bundle must hold every record and verify as the complete log, `--json` must print one
//! object and nothing on a terminal's standard error, and no command's peak resident memory
//! may reach the 256 MiB. Times are printed, not asserted.

use runwarden_testkit::evidence::{HOST, fill_log};
use serde_json::Value;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

const RECORDS: u64 = 50_000;
/// The bound on what one command may hold, whatever the log's size.
const PEAK_RSS_MIB: u64 = 256;

/// A finished `runwarden` process.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// Its peak resident set (`ru_maxrss`), in MiB.
    peak_mib: u64,
    /// The test process's resident set when it forked the child, in MiB: a child's
    /// `ru_maxrss` starts from what its fork copied, so a peak at or below this may be ours.
    forked_from_mib: u64,
}

/// Runs `runwarden ARGS` to the end: standard output into `out`.out, standard error into
/// a pseudo-terminal if `terminal` (where progress is drawn) or else into `out`.err.
fn run(out: &Path, args: &[&str], terminal: bool) -> Run {
    let what = out.file_name().unwrap().to_string_lossy().into_owned();
    let stdout = out.with_extension("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runwarden"));
    cmd.args(args)
        .env_remove("RUNWARDEN_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap());
    let stderr: Box<dyn FnOnce() -> Vec<u8>> = if terminal {
        let (master, terminal) = pty();
        cmd.stderr(terminal);
        // Until the child's side closes: then the read ends (EIO), what it drew kept.
        let reader = std::thread::spawn(move || {
            let (mut master, mut seen) = (master, Vec::new());
            let _ = master.read_to_end(&mut seen);
            seen
        });
        Box::new(move || reader.join().unwrap())
    } else {
        let file = out.with_extension("err");
        cmd.stderr(File::create(&file).unwrap());
        Box::new(move || std::fs::read(file).unwrap())
    };
    // Forked, not spawned with posix_spawn: a vfork child's `ru_maxrss` starts at this
    // test process's own peak (its memory is the parent's until exec), a forked one's at
    // what this process holds now.
    // SAFETY: the closure does nothing, so nothing unsafe runs between fork and exec.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let forked_from_mib = resident_mib();
    let started = Instant::now();
    // Reaped by `reap` (wait4, for its resource usage), not through `Child`.
    let pid = cmd.spawn().expect("runwarden starts").id();
    drop(cmd); // our copies of its output files and terminal
    let (status, peak_kib) = reap(pid);
    let secs = started.elapsed().as_secs_f64();
    let run = Run {
        status,
        stdout: std::fs::read_to_string(stdout).unwrap(),
        stderr: String::from_utf8_lossy(&stderr()).into_owned(),
        peak_mib: peak_kib / 1024,
        forked_from_mib,
    };
    println!(
        "{what}: {secs:.1} s, peak RSS {} MiB (this test held {} MiB when it forked)",
        run.peak_mib, run.forked_from_mib
    );
    run
}

/// Waits for child `pid`: its exit status and its peak resident set in KiB, from the
/// kernel's accounting of the process itself (`wait4`), not sampled.
fn reap(pid: u32) -> (ExitStatus, u64) {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    loop {
        // SAFETY: wait4 writes an int and a rusage through pointers to both; the pid is
        // our child's, whose `Child` never waits for it.
        let got = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, usage.as_mut_ptr()) };
        if got == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4: {e}");
    }
    // SAFETY: wait4 returned the child, so it filled the rusage.
    let usage = unsafe { usage.assume_init() };
    (ExitStatus::from_raw(status), usage.ru_maxrss as u64)
}

/// This process's resident set now, in MiB.
fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024
}

/// A pseudo-terminal: (its master side, read by the test; its terminal, given to a child).
fn pty() -> (File, File) {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // SAFETY: posix_openpt returns a new descriptor (or -1), owned by the File from here on.
    let master = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        File::from_raw_fd(fd)
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&master);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: fd is an open pseudo-terminal master; ptsname_r writes at most name.len()
    // bytes, nul-terminated, into name.
    let name = unsafe {
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        std::ffi::CStr::from_ptr(name.as_ptr())
    };
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name.to_str().unwrap())
        .expect("the pseudo-terminal");
    (master, terminal)
}

#[test]
fn fifty_thousand_pipeline_records_export_and_verify_within_the_memory_bound() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let started = Instant::now();
    let filled = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(fill_log(&data, RECORDS, |_| {}));
    println!(
        "filled {RECORDS} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(filled.size, RECORDS);
    // The benchmark's records, not tiny ones: about 5 KB each, as the issue states.
    let average = filled.envelope_bytes / RECORDS;
    assert!(
        (4_000..6_000).contains(&average),
        "{average} bytes a record"
    );

    let keys = data.join("signing-keys");
    let (key, public) = (
        keys.join(format!("{HOST}.key")),
        keys.join(format!("{HOST}.pub")),
    );
    let bundle = d.path().join("bundle.tar");
    let (data, bundle, key, public) = (
        data.to_str().unwrap(),
        bundle.to_str().unwrap(),
        key.to_str().unwrap(),
        public.to_str().unwrap(),
    );
    let export = run(
        &d.path().join("export"),
        &[
            "--data-dir",
            data,
            "evidence",
            "export",
            "-o",
            bundle,
            "--signing-key",
            key,
        ],
        false,
    );
    assert!(export.status.success(), "{}", export.stderr);
    assert!(
        export.stdout.starts_with(&format!(
            "exported {RECORDS} record(s) of runwarden/{HOST} to {bundle} (checkpoint size {RECORDS}, complete log)"
        )),
        "{}",
        export.stdout
    );

    let verify = [
        "evidence",
        "verify",
        bundle,
        "--key",
        public,
        "--require-complete",
    ];
    let text = run(&d.path().join("verify"), &verify, true);
    assert!(text.status.success(), "{}{}", text.stdout, text.stderr);
    assert!(
        text.stdout.starts_with(&format!(
            "verified {RECORDS} records of runwarden/{HOST} (complete log), tree size {RECORDS}, root "
        )),
        "{}",
        text.stdout
    );
    // On a terminal, progress is drawn: the terminal works, so the next run's silence counts.
    assert!(text.stderr.contains("verifying: ["), "{:?}", text.stderr);

    let json = run(
        &d.path().join("verify-json"),
        &[&verify[..], &["--json"]].concat(),
        true,
    );
    assert!(json.status.success(), "{}{}", json.stdout, json.stderr);
    assert_eq!(
        json.stderr, "",
        "--json draws no progress, even on a terminal"
    );
    assert_eq!(json.stdout.lines().count(), 1, "{}", json.stdout);
    let v: Value = serde_json::from_str(&json.stdout).expect("one JSON object");
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(v["records"], RECORDS, "{v}");
    assert_eq!(v["tree_size"], RECORDS, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["origin"], format!("runwarden/{HOST}"), "{v}");
    assert_eq!(v["error"], Value::Null, "{v}");

    for (what, r) in [
        ("export", &export),
        ("verify", &text),
        ("verify --json", &json),
    ] {
        assert!(
            r.peak_mib < PEAK_RSS_MIB,
            "{what} peaked at {} MiB of resident memory (the bound is {PEAK_RSS_MIB} MiB; this test held {} MiB when it forked it)",
            r.peak_mib,
            r.forked_from_mib
        );
    }
}
