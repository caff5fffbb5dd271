//! The WASI subset a runbook gets: preopens of exactly its granted directories, captured
//! stdout/stderr, clocks and random. No environment, arguments, stdin or network.
//!
//! The filesystem functions that open or change paths are wrapped so that each call is
//! checked against the grant and traced — paths outside every grant, including `..`
//! escapes, are denied before wasmtime-wasi sees them, and an empty read-only root
//! preopen makes such paths reach the host rather than fail inside the guest's libc —
//! and so that a dry run simulates changes: removals, renames and new
//! directories are answered as successes without acting, and files opened for writing
//! are redirected into a per-invocation scratch directory that is deleted afterwards.
//!
//! What a runbook leaves behind is later used by host programs that follow links, so
//! links, renames and hard links are also checked on the resolved filesystem
//! (`confine`), and opening anything but a regular file or a directory is refused.

use crate::confine;
use crate::host::{CallContext, HostState};
use crate::output::Output;
use crate::trace::Call;
use serde_json::json;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::sync::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, NewTimestamp, OpenFlags,
    PathFlags,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// Guest path of the dry-run scratch directory.
pub(crate) const SCRATCH: &str = "/.runwarden-dry-run";

const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Build the WASI context for one invocation. Each granted directory is opened beneath
/// the policy directory that grants it (`policy`), so a link planted inside a policy
/// directory cannot move a preopen (a `{param}` directory, say) out of it.
pub(crate) fn context(
    read_dirs: &[std::path::PathBuf],
    write_dirs: &[std::path::PathBuf],
    policy: &crate::policy::Grants,
    scratch: Option<&Path>,
    root: &Path,
    dry_run: bool,
    output: &Output,
) -> Result<WasiCtx, String> {
    let mut b = WasiCtxBuilder::new();
    // Invocations run on threads that may block (never on an async worker): filesystem
    // calls happen on this thread instead of a hop to tokio's blocking pool and back for
    // each one (an empty-directory clear-tmp: 350 → … µs).
    b.allow_blocking_current_thread(true)
        .stdout(output.stream(false))
        .stderr(output.stream(true))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let normal = |d: &PathBuf| crate::policy::normalize_dir(d).ok();
    let write_roots: Vec<PathBuf> = policy.write_dirs.iter().filter_map(normal).collect();
    let read_roots: Vec<PathBuf> = policy
        .read_dirs
        .iter()
        .filter_map(normal)
        .chain(write_roots.iter().cloned())
        .collect();
    // Kept open until the preopens are made: each is opened again through its descriptor.
    let mut checked = Vec::new();
    for d in read_dirs {
        let fd = confine::open_granted_dir(d, &read_roots)?;
        b.preopened_dir(
            confine::proc_path(&fd),
            d.to_string_lossy(),
            FsPerms::ReadOnly,
        )
        .map_err(|e| format!("cannot open granted directory {}: {e}", d.display()))?;
        checked.push(fd);
    }
    for d in write_dirs {
        let fd = confine::open_granted_dir(d, &write_roots)?;
        // In a dry run the real directory is read-only to wasmtime-wasi as well: whatever
        // the wrappers below do not intercept still cannot change it.
        let perms = if dry_run {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(confine::proc_path(&fd), d.to_string_lossy(), perms)
            .map_err(|e| format!("cannot open granted directory {}: {e}", d.display()))?;
        checked.push(fd);
    }
    drop(checked);
    // An empty, read-only directory at `/`: paths outside every grant reach the host (and
    // so the trace, as denials) instead of failing silently inside the guest's libc.
    b.preopened_dir(root, "/", FsPerms::ReadOnly)
        .map_err(|e| format!("cannot open the sandbox root {}: {e}", root.display()))?;
    if let Some(s) = scratch {
        b.preopened_dir(s, SCRATCH, FsPerms::ReadWrite)
            .map_err(|e| format!("cannot open scratch directory: {e}"))?;
    }
    Ok(b.build())
}

fn view(s: &mut HostState) -> (WasiFilesystemCtxView<'_>, &mut crate::host::CallContext) {
    let HostState {
        wasi, table, cx, ..
    } = s;
    (
        WasiFilesystemCtxView {
            ctx: wasi.filesystem(),
            table,
        },
        cx,
    )
}

fn join(base: Option<&String>, path: &str) -> String {
    match base {
        Some(b) if b.ends_with('/') => format!("{b}{path}"),
        Some(b) => format!("{b}/{path}"),
        None => format!("?/{path}"),
    }
}

/// Where a guest path lands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Zone {
    /// Inside a read-write grant.
    Write,
    /// Inside a read-only grant.
    Read,
    /// Inside the dry-run scratch directory.
    Scratch,
    /// Anywhere else, including paths that `..` out of a grant.
    Outside,
}

/// Classify `full` lexically (`.` dropped, `..` popped). Symlinks are resolved later by
/// cap-std, which refuses any that leave the preopen; what host programs would follow is
/// checked on the resolved filesystem (`confine`).
fn zone(cx: &CallContext, full: &str) -> Zone {
    let mut parts: Vec<&str> = Vec::new();
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Zone::Outside;
                }
            }
            c => parts.push(c),
        }
    }
    let p = PathBuf::from(format!("/{}", parts.join("/")));
    if p.starts_with(SCRATCH) && cx.dry_run {
        Zone::Scratch
    } else if cx.grant.write_dirs.iter().any(|d| p.starts_with(d)) {
        Zone::Write
    } else if cx.grant.read_dirs.iter().any(|d| p.starts_with(d)) {
        Zone::Read
    } else {
        Zone::Outside
    }
}

/// The error for an access the zone does not allow, if any.
fn refusal(zone: Zone, writes: bool) -> Option<ErrorCode> {
    match zone {
        Zone::Outside => Some(ErrorCode::Access),
        Zone::Read if writes => Some(ErrorCode::ReadOnly),
        _ => None,
    }
}

fn denied<T>(r: &Result<T, ErrorCode>) -> bool {
    matches!(
        r,
        Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)
    )
}

/// The host directory behind descriptor `rep`, if it is one.
fn host_dir(v: &WasiFilesystemCtxView<'_>, rep: u32) -> Option<Arc<std::fs::File>> {
    match v.table.get(&Resource::<Descriptor>::new_borrow(rep)).ok()? {
        wasmtime_wasi::filesystem::Descriptor::Dir(d) => Some(d.dir.clone()),
        wasmtime_wasi::filesystem::Descriptor::File(_) => None,
    }
}

/// A check on the resolved filesystem: given the host directory behind the call's first
/// descriptor, why the call must be refused, if it must.
type Check<'a> = &'a dyn Fn(&std::fs::File) -> Result<(), String>;

/// A traced path mutation: every target must be inside a write grant and pass `check`;
/// in a dry run the change is answered as done without acting.
fn mutate(
    s: &mut HostState,
    function: &'static str,
    targets: &[(u32, &str)],
    extra: Option<(&'static str, &str)>,
    check: Option<Check<'_>>,
    act: impl FnOnce(&mut WasiFilesystemCtxView<'_>) -> Result<(), wasmtime_wasi::p2::FsError>,
) -> FsOut<()> {
    s.guard()?;
    let (mut v, cx) = view(s);
    let paths: Vec<String> = targets
        .iter()
        .map(|(rep, p)| join(cx.fs_paths.get(rep), p))
        .collect();
    let mut args = json!({ "paths": paths });
    if let Some((k, val)) = extra {
        args[k] = json!(val);
    }
    let mut call = Call::new("filesystem", function, args);
    if let Some(code) = paths.iter().find_map(|p| refusal(zone(cx, p), true)) {
        cx.trace
            .record(call, false, json!({"error": format!("{code:?}")}));
        return Ok((Err(code),));
    }
    if let Some(check) = check {
        // Fail closed: a call whose directory cannot be inspected is not made.
        let verdict = match host_dir(&v, targets[0].0) {
            Some(dir) => check(&dir),
            None => Err("the descriptor is not a directory".into()),
        };
        if let Err(message) = verdict {
            cx.trace
                .record(call, false, json!({"error": "Access", "message": message}));
            return Ok((Err(ErrorCode::Access),));
        }
    }
    if cx.dry_run && paths.iter().all(|p| zone(cx, p) == Zone::Write) {
        call.dry_run = true;
        cx.trace.record(call, true, json!("simulated"));
        return Ok((Ok(()),));
    }
    let r = act(&mut v);
    let r = finish(&mut v, r)?;
    let result = match &r {
        Ok(()) => json!("ok"),
        Err(e) => json!({"error": format!("{e:?}")}),
    };
    cx.trace.record(call, !denied(&r), result);
    Ok((r,))
}

type Preopens = Vec<(Resource<Descriptor>, String)>;
type FsOut<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

fn finish<T>(
    v: &mut WasiFilesystemCtxView<'_>,
    r: Result<T, wasmtime_wasi::p2::FsError>,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    match r {
        Ok(t) => Ok(Ok(t)),
        Err(e) => Ok(Err(fs::Host::convert_error_code(v, e)?)),
    }
}

/// Replace the WASI functions runwarden must see: path-level filesystem calls (traced,
/// checked, dry-run aware), clock waits (capped at the deadline, so a sleeping guest
/// cannot hold its thread past it), and socket creation (denied and traced).
pub(crate) fn wrap(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    wrap_clocks(linker)?;
    wrap_sockets(linker)?;
    wrap_filesystem(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn wrap_clocks(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::clocks::WasiClocksCtxView;
    use wasmtime_wasi::p2::DynPollable;
    use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host;

    fn capped(s: &mut HostState, wait_ns: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let left =
            s.cx.deadline
                .saturating_duration_since(std::time::Instant::now());
        let wait = wait_ns.min(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX));
        let HostState { wasi, table, .. } = s;
        Host::subscribe_duration(
            &mut WasiClocksCtxView {
                ctx: wasi.clocks(),
                table,
            },
            wait,
        )
    }
    let mut m = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    m.func_wrap("subscribe-duration", |mut store, (ns,): (u64,)| {
        Ok((capped(store.data_mut(), ns)?,))
    })?;
    m.func_wrap("subscribe-instant", |mut store, (when,): (u64,)| {
        let s = store.data_mut();
        let HostState { wasi, table, .. } = &mut *s;
        let now = Host::now(&mut WasiClocksCtxView {
            ctx: wasi.clocks(),
            table,
        })?;
        Ok((capped(s, when.saturating_sub(now))?,))
    })?;
    Ok(())
}

fn wrap_sockets(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode as NetError, IpAddressFamily};
    use wasmtime_wasi::p2::{Network, TcpSocket, UdpSocket};

    fn deny(s: &mut HostState, function: &'static str, args: serde_json::Value) -> NetError {
        let call = Call::new("sockets", function, args);
        s.cx.trace.record(call, false, json!({"error": "access-denied", "message": "runbooks get no network sockets; use the http interface"}));
        NetError::AccessDenied
    }
    let family = |f: IpAddressFamily| {
        json!(match f {
            IpAddressFamily::Ipv4 => "ipv4",
            IpAddressFamily::Ipv6 => "ipv6",
        })
    };
    linker
        .instance("wasi:sockets/tcp-create-socket@0.2.12")?
        .func_wrap(
            "create-tcp-socket",
            move |mut store,
                  (f,): (IpAddressFamily,)|
                  -> wasmtime::Result<(Result<Resource<TcpSocket>, NetError>,)> {
                Ok((Err(deny(
                    store.data_mut(),
                    "create-tcp-socket",
                    json!({"family": family(f)}),
                )),))
            },
        )?;
    linker
        .instance("wasi:sockets/udp-create-socket@0.2.12")?
        .func_wrap(
            "create-udp-socket",
            move |mut store,
                  (f,): (IpAddressFamily,)|
                  -> wasmtime::Result<(Result<Resource<UdpSocket>, NetError>,)> {
                Ok((Err(deny(
                    store.data_mut(),
                    "create-udp-socket",
                    json!({"family": family(f)}),
                )),))
            },
        )?;
    linker
        .instance("wasi:sockets/ip-name-lookup@0.2.12")?
        .func_wrap(
            "resolve-addresses",
            |mut store,
             (_net, name): (Resource<Network>, String)|
             -> wasmtime::Result<(
                Result<
                    Resource<
                        wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::ResolveAddressStream,
                    >,
                    NetError,
                >,
            )> {
                Ok((Err(deny(
                    store.data_mut(),
                    "resolve-addresses",
                    json!({"name": name}),
                )),))
            },
        )?;
    Ok(())
}

fn wrap_filesystem(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut pre = linker.instance(PREOPENS)?;
    pre.func_wrap(
        "get-directories",
        |mut store, (): ()| -> wasmtime::Result<(Preopens,)> {
            let (mut v, cx) = view(store.data_mut());
            let dirs =
                wasmtime_wasi::p2::bindings::sync::filesystem::preopens::Host::get_directories(
                    &mut v,
                )?;
            for (d, p) in &dirs {
                cx.fs_paths.insert(d.rep(), p.clone());
            }
            Ok((dirs,))
        },
    )?;

    let mut t = linker.instance(TYPES)?;
    t.func_wrap(
        "[method]descriptor.open-at",
        |mut store,
         (fd, pflags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )|
         -> FsOut<Resource<Descriptor>> {
            store.data_mut().guard()?;
            let (mut v, cx) = view(store.data_mut());
            let full = join(cx.fs_paths.get(&fd.rep()), &path);
            let writes = flags.contains(DescriptorFlags::WRITE)
                || oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
            let mut call = Call::new(
                "filesystem",
                "open-at",
                json!({"path": full, "write": writes, "create": oflags.contains(OpenFlags::CREATE),
                       "truncate": oflags.contains(OpenFlags::TRUNCATE)}),
            );
            let zone = zone(cx, &full);
            if let Some(code) = refusal(zone, writes) {
                cx.trace
                    .record(call, false, json!({"error": format!("{code:?}")}));
                return Ok((Err(code),));
            }
            // Only regular files and directories: opening a FIFO would block the run past
            // its deadline, and sockets and devices are not files to remediate. Checked
            // through an O_PATH descriptor, which never blocks.
            let follow = pflags.contains(PathFlags::SYMLINK_FOLLOW);
            let special =
                host_dir(&v, fd.rep()).and_then(|dir| confine::special(dir.as_fd(), &path, follow));
            if let Some(kind) = special {
                let message = format!(
                    "{full} is a {}; runbooks may open only regular files and directories",
                    kind.name()
                );
                cx.trace
                    .record(call, false, json!({"error": "Access", "message": message}));
                return Ok((Err(ErrorCode::Access),));
            }
            let redirect = writes && cx.dry_run && zone == Zone::Write;
            let r = if redirect {
                // Simulate the write: the guest gets a writable file in the scratch directory.
                call.dry_run = true;
                let scratch = cx
                    .fs_paths
                    .iter()
                    .find(|(_, p)| p.as_str() == SCRATCH)
                    .map(|(rep, _)| *rep);
                match scratch {
                    Some(rep) => {
                        let name = format!("{}-{}", cx.trace.len(), full.replace('/', "_"));
                        let r = HostDescriptor::open_at(
                            &mut v,
                            Resource::new_borrow(rep),
                            PathFlags::empty(),
                            name,
                            oflags | OpenFlags::CREATE,
                            flags,
                        );
                        finish(&mut v, r)?
                    }
                    None => Err(ErrorCode::ReadOnly),
                }
            } else {
                let r = HostDescriptor::open_at(&mut v, fd, pflags, path, oflags, flags);
                finish(&mut v, r)?
            };
            let result = match &r {
                Ok(d) => {
                    cx.fs_paths.insert(d.rep(), full.clone());
                    json!(if redirect { "simulated" } else { "ok" })
                }
                Err(e) => json!({"error": format!("{e:?}")}),
            };
            cx.trace.record(call, !denied(&r), result);
            Ok((r,))
        },
    )?;

    t.func_wrap(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| -> FsOut<()> {
            mutate(
                store.data_mut(),
                "create-directory-at",
                &[(fd.rep(), &path)],
                None,
                None,
                |v| HostDescriptor::create_directory_at(v, fd, path.clone()),
            )
        },
    )?;
    t.func_wrap(
        "[method]descriptor.unlink-file-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| -> FsOut<()> {
            mutate(
                store.data_mut(),
                "unlink-file-at",
                &[(fd.rep(), &path)],
                None,
                None,
                |v| HostDescriptor::unlink_file_at(v, fd, path.clone()),
            )
        },
    )?;
    t.func_wrap(
        "[method]descriptor.remove-directory-at",
        |mut store, (fd, path): (Resource<Descriptor>, String)| -> FsOut<()> {
            mutate(
                store.data_mut(),
                "remove-directory-at",
                &[(fd.rep(), &path)],
                None,
                None,
                |v| HostDescriptor::remove_directory_at(v, fd, path.clone()),
            )
        },
    )?;
    t.func_wrap(
        "[method]descriptor.symlink-at",
        |mut store, (fd, target, path): (Resource<Descriptor>, String, String)| -> FsOut<()> {
            // Host programs (service templates, granted commands) follow links with
            // runwarden's rights: a link may only point down from where it is made.
            let check = |dir: &std::fs::File| confine::check_symlink(dir.as_fd(), &path, &target);
            mutate(
                store.data_mut(),
                "symlink-at",
                &[(fd.rep(), &path)],
                Some(("target", &target)),
                Some(&check),
                |v| HostDescriptor::symlink_at(v, fd, target.clone(), path.clone()),
            )
        },
    )?;
    t.func_wrap(
        "[method]descriptor.set-times-at",
        |mut store,
         (fd, pflags, path, atime, mtime): (
            Resource<Descriptor>,
            PathFlags,
            String,
            NewTimestamp,
            NewTimestamp,
        )|
         -> FsOut<()> {
            mutate(
                store.data_mut(),
                "set-times-at",
                &[(fd.rep(), &path)],
                None,
                None,
                |v| HostDescriptor::set_times_at(v, fd, pflags, path.clone(), atime, mtime),
            )
        },
    )?;
    t.func_wrap(
        "[method]descriptor.rename-at",
        |mut store,
         (fd, old, new_fd, new): (Resource<Descriptor>, String, Resource<Descriptor>, String)|
         -> FsOut<()> {
            mutate(
                store.data_mut(),
                "rename-at",
                &[(fd.rep(), &old), (new_fd.rep(), &new)],
                None,
                Some(&|dir: &std::fs::File| confine::check_rename(dir.as_fd(), &old)),
                |v| HostDescriptor::rename_at(v, fd, old.clone(), new_fd, new.clone()),
            )
        },
    )?;
    t.func_wrap(
        "[method]descriptor.link-at",
        |mut store,
         (fd, oflags, old, new_fd, new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )|
         -> FsOut<()> {
            mutate(
                store.data_mut(),
                "link-at",
                &[(fd.rep(), &old), (new_fd.rep(), &new)],
                None,
                Some(&|dir: &std::fs::File| {
                    let follow = oflags.contains(PathFlags::SYMLINK_FOLLOW);
                    confine::check_hard_link(dir.as_fd(), &old, follow)
                }),
                |v| HostDescriptor::link_at(v, fd, oflags, old.clone(), new_fd, new.clone()),
            )
        },
    )?;
    Ok(())
}
