//! adv-write-readonly: granted a directory read-only, it tries to change it: create a
//! file (`create` and `create_new`), append to an existing file, write over it in place,
//! truncate it (on open, and with `set_len` on a read-only handle), delete it, rename it,
//! hard-link and symlink it, make a directory and remove one. Every attempt must fail and
//! the directory must be byte-for-byte as before; the host refuses each at `open-at`,
//! `unlink-file-at`, `rename-at`, `link-at`, `symlink-at`, `create-directory-at` or
//! `remove-directory-at`, traced with `allowed = false`. Reading still works; the guest
//! ends `no-op`.

use attack_report::{Report, raw};
use runwarden_sdk::prelude::*;
use std::fs::{self, OpenOptions};
use std::io::Write;

#[derive(serde::Deserialize)]
struct Params {
    /// Granted read-only; holds `existing.txt` and an empty directory `empty`.
    dir: String,
}

struct WriteReadOnly;

fn done(r: std::io::Result<()>) -> std::io::Result<String> {
    r.map(|_| "done".to_string())
}

impl Runbook for WriteReadOnly {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-write-readonly",
            "0.1.0",
            "Try to change files in a read-only grant",
        )
        .capability(Capability::ReadDir("{dir}".into()))
        .params_schema(serde_json::json!({
            "type": "object", "required": ["dir"], "additionalProperties": false,
            "properties": {"dir": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let d = &p.dir;
        let existing = format!("{d}/existing.txt");
        let mut r = Report::new();
        r.control("read-existing", fs::read_to_string(&existing));

        r.attack(
            "create",
            done(fs::File::create(format!("{d}/new.txt")).and_then(|mut f| f.write_all(b"new"))),
        );
        r.attack(
            "create-new",
            done(
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(format!("{d}/new2.txt"))
                    .map(|_| ()),
            ),
        );
        r.attack(
            "append",
            done(
                OpenOptions::new()
                    .append(true)
                    .open(&existing)
                    .and_then(|mut f| f.write_all(b"appended")),
            ),
        );
        r.attack(
            "overwrite",
            done(
                OpenOptions::new()
                    .write(true)
                    .open(&existing)
                    .and_then(|mut f| f.write_all(b"XXXX")),
            ),
        );
        r.attack(
            "truncate",
            done(
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&existing)
                    .map(|_| ()),
            ),
        );
        r.attack(
            "set-len",
            done(fs::File::open(&existing).and_then(|f| f.set_len(0))),
        );
        r.attack("delete", done(fs::remove_file(&existing)));
        r.attack(
            "rename",
            done(fs::rename(&existing, format!("{d}/renamed.txt"))),
        );
        r.attack(
            "hardlink",
            done(fs::hard_link(&existing, format!("{d}/hard.txt"))),
        );
        r.attack(
            "symlink",
            done(raw::symlink("existing.txt", &format!("{d}/soft.txt"))),
        );
        r.attack("mkdir", done(fs::create_dir(format!("{d}/newdir"))));
        r.attack("rmdir", done(fs::remove_dir(format!("{d}/empty"))));
        Ok(r.outcome("write in a read-only grant"))
    }
}

runwarden_sdk::export_runbook!(WriteReadOnly);
