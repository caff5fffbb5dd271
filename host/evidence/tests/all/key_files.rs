//! Key files on disk: written once, private half unreadable to others.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use runwarden_evidence::{Error, read_signing_key, read_verifying_key, write_key_pair};

#[test]
fn a_written_pair_reads_back_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = write_key_pair(dir.path(), "runwarden.example/host-17").unwrap();
    assert_eq!(private, dir.path().join("runwarden.example_host-17.key"));
    assert_eq!(public, dir.path().join("runwarden.example_host-17.pub"));
    assert_eq!(
        fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let sk = read_signing_key(&private).unwrap();
    let vk = read_verifying_key(&public).unwrap();
    assert_eq!(sk.name(), "runwarden.example/host-17");
    assert_eq!(sk.verifying_key(), vk);
    assert!(vk.verify(b"m", &sk.sign(b"m")));
    let text = fs::read_to_string(&public).unwrap();
    assert_eq!(text, format!("{}\n", vk.to_text()));
    assert!(
        fs::read_to_string(&private)
            .unwrap()
            .starts_with("PRIVATE+KEY+runwarden.example/host-17+")
    );
}

#[test]
fn an_existing_key_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = write_key_pair(dir.path(), "host").unwrap();
    let before = (fs::read(&private).unwrap(), fs::read(&public).unwrap());
    let err = write_key_pair(dir.path(), "host").unwrap_err();
    assert!(matches!(err, Error::KeyFileExists { .. }), "{err}");
    assert_eq!(
        (fs::read(&private).unwrap(), fs::read(&public).unwrap()),
        before
    );

    // A stray .pub alone also blocks, and no private key is left behind.
    fs::write(dir.path().join("other.pub"), "x").unwrap();
    assert!(matches!(
        write_key_pair(dir.path(), "other"),
        Err(Error::KeyFileExists { .. })
    ));
    assert!(!dir.path().join("other.key").exists());
}

#[test]
fn a_private_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = write_key_pair(dir.path(), "host").unwrap();
    for mode in [0o640, 0o604, 0o644] {
        fs::set_permissions(&private, fs::Permissions::from_mode(mode)).unwrap();
        let err = read_signing_key(&private).unwrap_err();
        assert!(matches!(err, Error::InsecureKeyFile { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 600 {}", private.display())),
            "{msg}"
        );
    }
    fs::set_permissions(&private, fs::Permissions::from_mode(0o400)).unwrap();
    read_signing_key(&private).unwrap();
}

#[test]
fn key_file_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pub");
    let err = read_verifying_key(&missing).unwrap_err().to_string();
    assert!(
        err.contains("could not read public key") && err.contains("missing.pub"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pub");
    fs::write(&garbage, "hello\n").unwrap();
    let err = read_verifying_key(&garbage).unwrap_err().to_string();
    assert!(
        err.contains("not a runwarden public key: expected NAME+KEYID+BASE64"),
        "{err}"
    );

    assert!(matches!(
        write_key_pair(dir.path(), "bad name"),
        Err(Error::InvalidKeyName { .. })
    ));
    assert!(matches!(
        write_key_pair(&dir.path().join("nope"), "host"),
        Err(Error::Io { .. })
    ));
}
