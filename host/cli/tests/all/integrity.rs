//! The evidence database losing its newest records, as a lost or cut `-wal` file does:
//! `runwarden up` and `runwarden evidence export` refuse it, naming both sizes and how to
//! recover, instead of serving or exporting a shorter log as complete. And the data dir,
//! databases, keys and kept checkpoint are private whatever the umask.

use super::{component, runwarden, stderr, write_policy};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `runwarden ARGS` under `umask`.
fn with_umask(umask: &str, data: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_runwarden"))
        .args(args)
        .env("RUNWARDEN_DATA_DIR", data)
        .output()
        .expect("runwarden runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn data_dir_databases_keys_and_checkpoint_are_private_whatever_the_umask() {
    for umask in ["000", "022"] {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let policy = write_policy(d.path(), "");
        let o = with_umask(
            umask,
            &data,
            &[
                "runbook",
                "run",
                &component("trivial"),
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "umask {umask}: {}", stderr(&o));
        // An export signs a checkpoint, which is kept beside the database.
        let bundle = d.path().join("bundle.tar");
        let o = with_umask(
            umask,
            &data,
            &["evidence", "export", "--out", bundle.to_str().unwrap()],
        );
        assert!(o.status.success(), "umask {umask}: {}", stderr(&o));
        let o = with_umask(
            umask,
            &data,
            &["token", "create", "--tenant", "clinic-a", "--scope", "read"],
        );
        assert!(o.status.success(), "umask {umask}: {}", stderr(&o));
        for dir in ["", "signing-keys"] {
            assert_eq!(mode(&data.join(dir)), 0o700, "umask {umask}: {dir:?}");
        }
        for file in [
            "evidence.db",
            "evidence.db.checkpoint",
            "evidence-control.db",
            "signing-keys/cli-test.key",
        ] {
            assert_eq!(mode(&data.join(file)), 0o600, "umask {umask}: {file}");
        }
        // Whatever SQLite left beside them has the database's mode.
        for e in std::fs::read_dir(&data).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".db") {
                assert_eq!(mode(&e.path()), 0o600, "umask {umask}: {name}");
            }
        }
    }
}

/// `runwarden up` on `data`: its output once it exits (within 2 minutes, else a failure).
fn up_exits(data: &Path, policy: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["up", "--listen", "127.0.0.1:0", "--policy"])
        .arg(policy)
        .env("RUNWARDEN_DATA_DIR", data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runwarden up started on a log that lost records");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn up_and_export_refuse_a_log_that_lost_its_newest_records() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let policy = write_policy(d.path(), "");
    let run = || {
        let o = runwarden(
            &data,
            &[
                "runbook",
                "run",
                &component("trivial"),
                "--policy",
                policy.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run();
    // The database as it was after one record: what a crash that loses the WAL leaves.
    let backup = d.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    let db_files = ["evidence.db", "evidence.db-wal", "evidence.db-shm"];
    for f in db_files {
        if data.join(f).exists() {
            std::fs::copy(data.join(f), backup.join(f)).unwrap();
        }
    }
    run();
    run();
    // An auditor's export signs a checkpoint of all 3.
    let first = d.path().join("first.tar");
    let o = runwarden(
        &data,
        &["evidence", "export", "--out", first.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for f in db_files {
        let _ = std::fs::remove_file(data.join(f));
        if backup.join(f).exists() {
            std::fs::copy(backup.join(f), data.join(f)).unwrap();
        }
    }

    let o = up_exits(&data, &policy);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    for want in [
        "the log has 1 records",
        "covers 3 records",
        "restore",
        "from a backup",
        "evidence.db.checkpoint",
    ] {
        assert!(err.contains(want), "{err:?} does not say {want:?}");
    }

    let bundle = d.path().join("bundle.tar");
    let o = runwarden(
        &data,
        &["evidence", "export", "--out", bundle.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the log has 1 records"),
        "{}",
        stderr(&o)
    );
    assert!(!bundle.exists(), "no bundle of a shortened log");
    // The kept checkpoint is still the one for 3 records.
    let kept = std::fs::read_to_string(data.join("evidence.db.checkpoint")).unwrap();
    assert_eq!(kept.lines().nth(1), Some("3"), "{kept}");
}
