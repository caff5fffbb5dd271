//! Helpers shared by the standard runbooks: a file-name glob, a directory walk that never
//! follows symlinks, the bookkeeping to prune directories a cleanup emptied, and small
//! formatting helpers.
//!
//! Pure `std`, no host calls: the runbooks do their own logging, and this crate's unit
//! tests run natively (`cargo test -p runbook-common --target x86_64-unknown-linux-gnu`).
//!
//! Inside the sandbox `std::fs` works on WASI preopens of the granted directories at
//! their own absolute paths; `symlink_metadata` never follows a link, which is what keeps
//! a walk inside the directory it was asked to clean.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Does file name `name` match `pattern`? `*` matches any run of characters, `?` any one
/// character; everything else is literal. As in a shell, a leading `.` in `name` is only
/// matched by a literal `.` at the start of the pattern, so `*.log` skips hidden files.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Position of the last `*` and the name position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((s, mark)) = star {
            pi = s + 1;
            ni = mark + 1;
            star = Some((s, mark + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Clean an absolute path given as a param: it must be absolute and contain no `.` or `..`
/// parts (the host refuses those in grants too). Trailing slashes are dropped.
pub fn clean_abs(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => out.push(s),
            _ => return None,
        }
    }
    Some(out)
}

/// Is `path` strictly below `dir`? Both must already be cleaned with [`clean_abs`].
pub fn is_within(dir: &Path, path: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// How long ago `t` was, zero when it lies in the future (clock skew, touched files).
pub fn age(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or(Duration::ZERO)
}

/// Is `t` at least `hours` hours before `now`?
pub fn older_than_hours(now: SystemTime, t: SystemTime, hours: u64) -> bool {
    age(now, t) >= Duration::from_secs(hours.saturating_mul(3600))
}

/// Seconds since the Unix epoch (negative before it), for details.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A regular file found by [`walk`].
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes (apparent size: WASI does not report allocated blocks).
    pub size: u64,
    /// Last modification time.
    pub modified: SystemTime,
    /// Index of the directory holding it in [`Tree::dirs`].
    pub parent: usize,
}

/// A directory found by [`walk`]; `dirs[0]` is the root.
#[derive(Clone, Debug)]
pub struct DirInfo {
    /// Absolute path.
    pub path: PathBuf,
    /// Last modification time, read before anything was removed.
    pub modified: SystemTime,
    /// Index of the parent directory; `None` for the root.
    pub parent: Option<usize>,
    /// Number of entries of every kind (files, directories, symlinks, others).
    pub entries: u64,
    /// Whether all of its entries were seen (not cut short by the depth or entry cap,
    /// and listed without error). Only complete directories may be pruned.
    pub complete: bool,
}

/// A symlink found by [`walk`]: listed, never followed.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    /// Absolute path of the link itself.
    pub path: PathBuf,
    /// Index of the directory holding it in [`Tree::dirs`].
    pub parent: usize,
}

/// Everything under a directory, symlinks listed but not followed.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Regular files.
    pub files: Vec<FileInfo>,
    /// Directories, parents before children; `dirs[0]` is the root.
    pub dirs: Vec<DirInfo>,
    /// Symlinks seen (never followed); [`walk`] does not act on them, a caller may unlink them.
    pub links: Vec<LinkInfo>,
    /// Sockets, FIFOs, devices: left alone.
    pub others: u64,
    /// Whether the walk stopped at `max_depth` or `max_entries` somewhere.
    pub truncated: bool,
    /// Entries that could not be read, with the reason.
    pub errors: Vec<String>,
}

/// List everything under `root` without following symlinks, at most `max_depth` levels
/// below it and at most `max_entries` entries in all (a bound on memory and fuel).
pub fn walk(root: &Path, max_depth: u32, max_entries: usize) -> io::Result<Tree> {
    let meta = std::fs::symlink_metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut tree = Tree::default();
    tree.dirs.push(DirInfo {
        path: root.to_path_buf(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        parent: None,
        entries: 0,
        complete: true,
    });
    // Depth-first with an explicit stack: (directory index, depth).
    let mut stack = vec![(0usize, 0u32)];
    let mut seen = 0usize;
    while let Some((di, depth)) = stack.pop() {
        let dir = tree.dirs[di].path.clone();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                tree.errors
                    .push(format!("{}: cannot list: {e}", dir.display()));
                tree.dirs[di].complete = false;
                continue;
            }
        };
        for entry in rd {
            if seen >= max_entries {
                tree.truncated = true;
                tree.dirs[di].complete = false;
                break;
            }
            seen += 1;
            tree.dirs[di].entries += 1;
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tree.errors
                        .push(format!("{}: cannot list: {e}", dir.display()));
                    tree.dirs[di].complete = false;
                    continue;
                }
            };
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    tree.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let ft = meta.file_type();
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if ft.is_symlink() {
                tree.links.push(LinkInfo { path, parent: di });
            } else if ft.is_file() {
                tree.files.push(FileInfo {
                    path,
                    size: meta.len(),
                    modified,
                    parent: di,
                });
            } else if ft.is_dir() {
                if depth + 1 > max_depth {
                    tree.truncated = true;
                    tree.dirs[di].complete = false;
                    continue;
                }
                tree.dirs.push(DirInfo {
                    path,
                    modified,
                    parent: Some(di),
                    entries: 0,
                    complete: true,
                });
                stack.push((tree.dirs.len() - 1, depth + 1));
            } else {
                tree.others += 1;
            }
        }
    }
    Ok(tree)
}

/// Directories a cleanup left empty, removed deepest first.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    /// Directories removed.
    pub removed: Vec<PathBuf>,
    /// Directories that should have been empty but could not be removed, with the reason.
    pub errors: Vec<String>,
}

impl Tree {
    /// Per-directory counters for [`Tree::prune`]: call `count[file.parent] += 1` for
    /// each file the cleanup removed.
    pub fn removal_counts(&self) -> Vec<u64> {
        vec![0; self.dirs.len()]
    }

    /// Remove every directory below the root whose entries were all removed (counted in
    /// `removed_in`) and for which `eligible` holds, deepest first, so that a parent
    /// emptied by removing its children goes too. Emptiness is judged from what the
    /// cleanup removed, not by listing again, so a dry run reports the same plan.
    pub fn prune(
        &self,
        removed_in: &mut [u64],
        eligible: impl Fn(&DirInfo) -> bool,
        mut remove: impl FnMut(&Path) -> io::Result<()>,
    ) -> Pruned {
        let mut out = Pruned::default();
        // Children always come after their parents in `dirs`, so reverse order is deepest-first.
        for i in (1..self.dirs.len()).rev() {
            let d = &self.dirs[i];
            if !d.complete || removed_in[i] != d.entries || !eligible(d) {
                continue;
            }
            match remove(&d.path) {
                Ok(()) => {
                    out.removed.push(d.path.clone());
                    if let Some(p) = d.parent {
                        removed_in[p] += 1;
                    }
                }
                Err(e) => out.errors.push(format!("{}: {e}", d.path.display())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob_match("*.log", "app.log"));
        assert!(
            !glob_match("*.log", ".log"),
            "leading dot needs a literal dot"
        );
        assert!(glob_match(".*.log", ".hidden.log"));
        assert!(!glob_match("*.log", "app.log.1.gz"));
        assert!(glob_match("app-?.log", "app-1.log"));
        assert!(!glob_match("app-?.log", "app-10.log"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYYbZ"));
        assert!(glob_match("**x", "x"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(glob_match("*.lóg", "ä.lóg"));
    }

    #[test]
    fn paths_are_cleaned_and_contained() {
        assert_eq!(clean_abs("/etc/ssl/").unwrap(), PathBuf::from("/etc/ssl"));
        assert!(clean_abs("etc/ssl").is_none());
        assert!(clean_abs("/etc/../root").is_none());
        assert!(clean_abs("/etc/./ssl").is_some_and(|p| p == Path::new("/etc/ssl")));
        let d = clean_abs("/etc/ssl").unwrap();
        assert!(is_within(&d, &clean_abs("/etc/ssl/a.pem").unwrap()));
        assert!(!is_within(&d, &d));
        assert!(!is_within(&d, &clean_abs("/etc/sslx/a.pem").unwrap()));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    #[cfg(unix)]
    fn walk_skips_symlinks_and_prunes_emptied_dirs() {
        let root = std::env::temp_dir().join(format!("runbook-common-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("keep")).unwrap();
        std::fs::write(root.join("a/b/f1"), b"12345").unwrap();
        std::fs::write(root.join("a/f2"), b"1").unwrap();
        std::fs::write(root.join("keep/f3"), b"1").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/link")).unwrap();
        let t = walk(&root, 8, 1000).unwrap();
        assert_eq!(t.files.len(), 3);
        assert_eq!(t.links.len(), 1);
        assert_eq!(t.dirs.len(), 4);
        // Remove f1 and f2: b empties, a still holds the symlink.
        let mut counts = t.removal_counts();
        for f in &t.files {
            if !f.path.ends_with("f3") {
                counts[f.parent] += 1;
            }
        }
        let pruned = t.prune(&mut counts, |_| true, |_| Ok(()));
        assert_eq!(pruned.removed, vec![root.join("a/b")]);
        let shallow = walk(&root, 0, 1000).unwrap();
        assert!(shallow.truncated);
        assert_eq!(shallow.files.len(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
