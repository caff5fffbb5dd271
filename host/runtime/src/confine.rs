//! Deciding on resolved paths, not on text.
//!
//! wasmtime-wasi resolves a guest's paths beneath its preopens, but host programs (granted
//! commands, the service backend) run with runwarden's rights and follow links anywhere.
//! So whatever a runbook leaves behind for them, and whatever path they are handed, is
//! checked here on the filesystem itself: with `openat2` and `RESOLVE_BENEATH` from the
//! directory the guest's descriptor really is (the same rule cap-std applies), and by
//! opening a program once and executing exactly the file that was checked.
//!
//! The rules:
//! - a symlink a runbook makes has a relative target without `..` that, as far as it
//!   exists, resolves beneath the directory it is made in; so every link a runbook makes
//!   points down, wherever it is later moved;
//! - a symlink may be renamed only if its target is a plain name (no `/`), and hard links
//!   are made only to regular files; links planted by others cannot be moved into place;
//! - a guest opens only regular files and directories: FIFOs would block the run (an open
//!   of a FIFO waits for a writer), sockets and devices are not files to remediate;
//! - a path inside a write grant handed to a host program passes through no symlink;
//! - a granted directory resolves beneath the policy directory that grants it;
//! - a granted program is a regular file outside every write grant, not writable by group
//!   or others, and is executed through the descriptor that was checked.

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// What a resolved path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
}

impl Kind {
    fn of(fd: impl AsFd) -> io::Result<Kind> {
        let st = rustix::fs::fstat(fd)?;
        Ok(match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            _ => Kind::Device,
        })
    }

    /// How a denial names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::Device => "device file",
        }
    }
}

/// Open `path` as an `O_PATH` descriptor beneath `dir`: no absolute paths, no `..` above
/// `dir`, no symlink leading out of it, no `/proc` magic links. `O_PATH` never blocks,
/// not even on a FIFO.
fn beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    follow_last: bool,
    extra: ResolveFlags,
) -> io::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow_last {
        flags |= OFlags::NOFOLLOW;
    }
    Ok(rustix::fs::openat2(
        dir,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | extra,
    )?)
}

/// If `path` beneath `dir` is something a guest must not open (FIFO, socket, device),
/// its kind. Paths that do not resolve are left to wasmtime-wasi, which refuses them.
pub(crate) fn special(dir: BorrowedFd<'_>, path: &str, follow: bool) -> Option<Kind> {
    let fd = beneath(dir, path, follow, ResolveFlags::empty()).ok()?;
    match Kind::of(&fd).ok()? {
        k @ (Kind::Fifo | Kind::Socket | Kind::Device) => Some(k),
        _ => None,
    }
}

/// May a runbook make the symlink `link` (beneath `dir`) pointing to `target`?
pub(crate) fn check_symlink(dir: BorrowedFd<'_>, link: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("the symlink target is empty".into());
    }
    if target.starts_with('/') {
        return Err(format!(
            "symlink target {target:?} is absolute; a link must point into the grant with a relative path"
        ));
    }
    if target.split('/').any(|c| c == "..") {
        return Err(format!(
            "symlink target {target:?} has a `..` component; a link may only point down from its directory"
        ));
    }
    // As far as the target exists, it must resolve beneath the directory it is made in.
    let parent = link.rsplit_once('/').map_or(".", |(p, _)| p);
    let parent = if parent.is_empty() { "." } else { parent };
    match beneath(
        dir,
        &format!("{parent}/{target}"),
        true,
        ResolveFlags::empty(),
    ) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc_errno::ENOENT | libc_errno::ENOTDIR)
            ) =>
        {
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc_errno::EXDEV) => Err(format!(
            "symlink target {target:?} passes through a link that leaves the grant"
        )),
        Err(e) => Err(format!("symlink target {target:?} cannot be checked: {e}")),
    }
}

/// May `old` (beneath `dir`) be renamed? A symlink only if its target is a plain name.
pub(crate) fn check_rename(dir: BorrowedFd<'_>, old: &str) -> Result<(), String> {
    let fd = match beneath(dir, old, false, ResolveFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => return unresolved(old, e),
    };
    if Kind::of(&fd).ok() != Some(Kind::Symlink) {
        return Ok(());
    }
    let target = rustix::fs::readlinkat(&fd, "", Vec::new())
        .map_err(|e| format!("{old} is a symlink whose target cannot be read: {e}"))?;
    let target = target.to_string_lossy();
    if target.contains('/') || target == ".." || target == "." {
        return Err(format!(
            "{old} is a symlink to {target:?}; only links to a plain name in their own directory may be renamed"
        ));
    }
    Ok(())
}

/// May `old` (beneath `dir`) be hard-linked? Only a regular file.
pub(crate) fn check_hard_link(dir: BorrowedFd<'_>, old: &str, follow: bool) -> Result<(), String> {
    let fd = match beneath(dir, old, follow, ResolveFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => return unresolved(old, e),
    };
    match Kind::of(&fd) {
        Ok(Kind::File) => Ok(()),
        Ok(k) => Err(format!(
            "{old} is a {}; hard links are made only to regular files",
            k.name()
        )),
        Err(e) => Err(format!("{old} cannot be checked: {e}")),
    }
}

/// A source that does not exist is left to wasmtime-wasi to report; one that cannot be
/// resolved beneath the descriptor is refused.
fn unresolved(path: &str, e: io::Error) -> Result<(), String> {
    match e.raw_os_error() {
        Some(libc_errno::ENOENT) => Ok(()),
        Some(libc_errno::EXDEV) => Err(format!("{path} leads out of the grant")),
        _ => Err(format!("{path} cannot be checked: {e}")),
    }
}

/// `p` with `.` dropped and `..` popped; None if it is relative or climbs above `/`.
pub(crate) fn lexical(p: &str) -> Option<PathBuf> {
    if !p.starts_with('/') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(s) => out.push(s),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `dirs` as written and, where they exist, with their symlinks resolved.
pub(crate) fn with_canonical(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dirs.to_vec();
    out.extend(dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()));
    out.sort();
    out.dedup();
    out
}

/// The write directory (of `write_dirs`, as written or canonical) that holds `path`.
pub(crate) fn write_dir_holding<'a>(path: &Path, write_dirs: &'a [PathBuf]) -> Option<&'a Path> {
    write_dirs
        .iter()
        .find(|w| path.starts_with(w))
        .map(PathBuf::as_path)
}

/// Check the paths in `args` that a host program will follow: a path inside a write
/// grant must not pass through any symlink there (a runbook could have made or moved
/// one). `write_dirs` should come from [`with_canonical`].
pub(crate) fn check_host_args(args: &[String], write_dirs: &[PathBuf]) -> Result<(), String> {
    for a in args {
        let after_eq = a.split_once('=').map(|(_, v)| v);
        for text in std::iter::once(a.as_str()).chain(after_eq) {
            if text.starts_with('/') {
                check_host_path(text, write_dirs)?;
            }
        }
    }
    Ok(())
}

fn check_host_path(text: &str, write_dirs: &[PathBuf]) -> Result<(), String> {
    let Some(path) = lexical(text) else {
        return Err(format!("argument {text:?} climbs above /"));
    };
    let Some(root) = write_dir_holding(&path, write_dirs) else {
        return Ok(());
    };
    let rel = path.strip_prefix(root).unwrap_or(Path::new(""));
    let rel = rel.to_string_lossy();
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("write grant {} cannot be opened: {e}", root.display()))?;
    match beneath(dir.as_fd(), &rel, true, ResolveFlags::NO_SYMLINKS) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc_errno::ENOENT) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc_errno::ELOOP | libc_errno::EXDEV)
            ) =>
        {
            Err(format!(
                "{text} passes through a symlink inside write grant {}; programs run with runwarden's rights follow links, so they are handed only paths without any",
                root.display()
            ))
        }
        Err(e) => Err(format!("{text} cannot be checked: {e}")),
    }
}

/// Open granted directory `dir` beneath one of `roots` (the policy directories that may
/// grant it), refusing it when a symlink (planted by an earlier run, say) leads out of
/// them. The descriptor is the directory to preopen.
pub(crate) fn open_granted_dir(dir: &Path, roots: &[PathBuf]) -> Result<OwnedFd, String> {
    let mut last = format!("it is under none of the policy's directories {roots:?}");
    for root in roots.iter().filter(|r| dir.starts_with(r)) {
        let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
        let opened = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|r| {
            rustix::fs::openat2(
                r,
                if rel.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    rel
                },
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            )
        });
        match opened {
            Ok(fd) => return Ok(fd),
            Err(e) if e == rustix::io::Errno::XDEV => {
                last = format!(
                    "it resolves outside the policy's {} through a symlink",
                    root.display()
                )
            }
            Err(e) => last = format!("beneath {}: {e}", root.display()),
        }
    }
    Err(format!(
        "granted directory {} refused: {last}; grant the real directory, not a link to it",
        dir.display()
    ))
}

/// The path through which the file behind `fd` is opened again (or executed).
pub(crate) fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Open granted program `program` and check it: a regular file, not writable by group or
/// others, and (with its links resolved) outside every write grant. Execute the returned
/// descriptor, never the name, so a swap after the check does not matter. `None` when
/// there is no such program (the caller reports it as not found).
pub(crate) fn open_program(
    program: &str,
    write_dirs: &[PathBuf],
) -> Result<Option<OwnedFd>, String> {
    let fd = match rustix::fs::open(program, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(format!("{program} cannot be opened: {e}")),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{program}: {e}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(format!("{program} is not a regular file"));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(format!(
            "{program} is writable by group or others (mode {:o}); make it 0755 or stricter",
            st.st_mode & 0o7777
        ));
    }
    let real = std::fs::read_link(proc_path(&fd))
        .map_err(|e| format!("{program}: cannot resolve: {e}"))?;
    if let Some(w) = write_dir_holding(&real, write_dirs) {
        return Err(format!(
            "{program} resolves to {}, inside write grant {}: a runbook could rewrite it",
            real.display(),
            w.display()
        ));
    }
    Ok(Some(fd))
}

/// errno values compared against `io::Error::raw_os_error`.
mod libc_errno {
    use rustix::io::Errno;
    pub const ENOENT: i32 = Errno::NOENT.raw_os_error();
    pub const ENOTDIR: i32 = Errno::NOTDIR.raw_os_error();
    pub const EXDEV: i32 = Errno::XDEV.raw_os_error();
    pub const ELOOP: i32 = Errno::LOOP.raw_os_error();
}
