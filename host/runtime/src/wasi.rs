//! The WASI subset a runbook gets: preopens of exactly its granted directories, captured
//! stdout/stderr, clocks and random. No environment, arguments, stdin or network.
//!
//! The filesystem functions that open or change paths are wrapped so that each call is
//! traced, and so that a dry run simulates changes: removals, renames and new
//! directories are answered as successes without acting, and files opened for writing
//! are redirected into a per-invocation scratch directory that is deleted afterwards.

use crate::host::HostState;
use crate::trace::Call;
use serde_json::json;
use std::path::Path;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::sync::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// Guest path of the dry-run scratch directory.
pub(crate) const SCRATCH: &str = "/.runwarden-dry-run";

const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Captured stdout and stderr of one invocation.
pub(crate) struct Stdio {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
    pub cap: usize,
}

impl Stdio {
    /// Did the guest fill either pipe?
    pub fn full(&self) -> bool {
        self.stdout.contents().len() >= self.cap || self.stderr.contents().len() >= self.cap
    }
}

/// Build the WASI context for one invocation.
pub(crate) fn context(
    read_dirs: &[std::path::PathBuf],
    write_dirs: &[std::path::PathBuf],
    scratch: Option<&Path>,
    dry_run: bool,
    output_cap: usize,
) -> Result<(WasiCtx, Stdio), String> {
    let stdout = MemoryOutputPipe::new(output_cap);
    let stderr = MemoryOutputPipe::new(output_cap);
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for d in read_dirs {
        b.preopened_dir(d, d.to_string_lossy(), FsPerms::ReadOnly)
            .map_err(|e| format!("cannot open granted directory {}: {e}", d.display()))?;
    }
    for d in write_dirs {
        // In a dry run the real directory is read-only to wasmtime-wasi as well: whatever
        // the wrappers below do not intercept still cannot change it.
        let perms = if dry_run {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(d, d.to_string_lossy(), perms)
            .map_err(|e| format!("cannot open granted directory {}: {e}", d.display()))?;
    }
    if let Some(s) = scratch {
        b.preopened_dir(s, SCRATCH, FsPerms::ReadWrite)
            .map_err(|e| format!("cannot open scratch directory: {e}"))?;
    }
    Ok((
        b.build(),
        Stdio {
            stdout,
            stderr,
            cap: output_cap,
        },
    ))
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

fn code_json(r: &Result<(), ErrorCode>) -> serde_json::Value {
    match r {
        Ok(()) => json!("ok"),
        Err(e) => json!({"error": format!("{e:?}")}),
    }
}

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

/// Replace the path-level filesystem functions with traced, dry-run-aware wrappers.
pub(crate) fn wrap_filesystem(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut pre = linker.instance(PREOPENS)?;
    pre.func_wrap(
        "get-directories",
        |mut store, (): ()| -> wasmtime::Result<(Vec<(Resource<Descriptor>, String)>,)> {
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
        |mut store, (fd, pflags, path, oflags, flags): (Resource<Descriptor>, PathFlags, String, OpenFlags, DescriptorFlags)|
         -> FsOut<Resource<Descriptor>> {
            let (mut v, cx) = view(store.data_mut());
            let full = join(cx.fs_paths.get(&fd.rep()), &path);
            let writes = flags.contains(DescriptorFlags::WRITE)
                || oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
            let mut call = Call::new(
                "filesystem",
                "open-at",
                json!({"path": full, "write": writes, "create": oflags.contains(OpenFlags::CREATE), "truncate": oflags.contains(OpenFlags::TRUNCATE)}),
            );
            let redirect = writes && cx.dry_run && !full.starts_with(SCRATCH);
            let r = if redirect {
                call.dry_run = true;
                // Simulate the write: the guest gets a writable file in the scratch directory.
                let scratch = cx.fs_paths.iter().find(|(_, p)| p.as_str() == SCRATCH).map(|(rep, _)| *rep);
                match scratch {
                    Some(rep) => {
                        let name = format!("{}-{}", cx.trace.entries().len(), full.replace('/', "_"));
                        let r = HostDescriptor::open_at(&mut v, Resource::new_borrow(rep), PathFlags::empty(), name, oflags | OpenFlags::CREATE, flags);
                        finish(&mut v, r)?
                    }
                    None => Err(ErrorCode::ReadOnly),
                }
            } else {
                let r = HostDescriptor::open_at(&mut v, fd, pflags, path, oflags, flags);
                finish(&mut v, r)?
            };
            let allowed = !matches!(r, Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly));
            let result = match &r {
                Ok(d) => {
                    cx.fs_paths.insert(d.rep(), full.clone());
                    json!(if redirect { "simulated" } else { "ok" })
                }
                Err(e) => json!({"error": format!("{e:?}")}),
            };
            cx.trace.record(call, allowed, result);
            Ok((r,))
        },
    )?;

    macro_rules! mutation {
        ($name:literal, $fn_name:literal, |$v:ident, $fd:ident, $args:ident| $call:expr, ($($arg:ident: $ty:ty),*)) => {
            t.func_wrap($name, |mut store, ($fd, $($arg),*): (Resource<Descriptor>, $($ty),*)| -> FsOut<()> {
                let (mut $v, cx) = view(store.data_mut());
                let base = cx.fs_paths.get(&$fd.rep()).cloned();
                let $args = json!({ $(stringify!($arg): format!("{:?}", $arg)),* , "dir": base });
                let mut call = Call::new("filesystem", $fn_name, $args);
                if cx.dry_run {
                    call.dry_run = true;
                    cx.trace.record(call, true, json!("simulated"));
                    return Ok((Ok(()),));
                }
                let r = $call;
                let r = finish(&mut $v, r)?;
                let allowed = !matches!(r, Err(ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly));
                cx.trace.record(call, allowed, code_json(&r));
                Ok((r,))
            })?;
        };
    }
    mutation!("[method]descriptor.create-directory-at", "create-directory-at",
        |v, fd, _a| HostDescriptor::create_directory_at(&mut v, fd, path.clone()), (path: String));
    mutation!("[method]descriptor.unlink-file-at", "unlink-file-at",
        |v, fd, _a| HostDescriptor::unlink_file_at(&mut v, fd, path.clone()), (path: String));
    mutation!("[method]descriptor.remove-directory-at", "remove-directory-at",
        |v, fd, _a| HostDescriptor::remove_directory_at(&mut v, fd, path.clone()), (path: String));
    mutation!("[method]descriptor.symlink-at", "symlink-at",
        |v, fd, _a| HostDescriptor::symlink_at(&mut v, fd, old_path.clone(), new_path.clone()), (old_path: String, new_path: String));
    mutation!("[method]descriptor.rename-at", "rename-at",
        |v, fd, _a| HostDescriptor::rename_at(&mut v, fd, old_path.clone(), new_dir, new_path.clone()),
        (old_path: String, new_dir: Resource<Descriptor>, new_path: String));
    mutation!("[method]descriptor.link-at", "link-at",
        |v, fd, _a| HostDescriptor::link_at(&mut v, fd, old_flags, old_path.clone(), new_dir, new_path.clone()),
        (old_flags: PathFlags, old_path: String, new_dir: Resource<Descriptor>, new_path: String));
    linker.allow_shadowing(false);
    Ok(())
}
