//! Files only the service user can read, whatever the umask: the data directory (0700),
//! databases and their `-wal`/`-shm` companions, keys, tokens and the checkpoint file (0600);
//! and the atomic replacement of a small file.
//!
//! A mode given at creation can only be narrowed by the umask, never widened, so creating
//! with 0600/0700 is enough for new files. SQLite creates a database file with 0644 minus the
//! umask, and its `-wal` and `-shm` files with the database file's mode: so the database file
//! is created here first, 0600, before SQLite opens it, and existing files that group or
//! others can read (from an older runwarden) are narrowed to 0600.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Creates `dir` and any missing parents, each new one mode 0700. An existing directory is
/// left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes the SQLite database at `path` private before SQLite opens it: creates it empty with
/// mode 0600 if missing (SQLite gives its `-wal` and `-shm` files the same mode), and narrows
/// it and its existing `-wal`, `-shm` and `-journal` files to 0600 if group or others could
/// read them.
pub fn private_sqlite_files(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        narrow(Path::new(&name))?;
    }
    Ok(())
}

/// Sets `path` to 0600 if it exists and group or others have any access.
fn narrow(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file:
/// write a temporary file (0600) beside it, fsync it, rename it over `path`, fsync the
/// directory. The file is readable by its owner only.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.checkpoint");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn existing_readable_database_files_are_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a/b/e.db");
        private_sqlite_files(&db).unwrap();
        let wal = dir.path().join("a/b/e.db-wal");
        fs::write(&wal, b"").unwrap();
        fs::set_permissions(&wal, fs::Permissions::from_mode(0o644)).unwrap();
        private_sqlite_files(&db).unwrap();
        for p in [&db, &wal] {
            assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let parent = fs::metadata(dir.path().join("a/b")).unwrap();
        assert_eq!(
            parent.permissions().mode() & 0o077,
            0,
            "new directories are 0700"
        );
    }
}
