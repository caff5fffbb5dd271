//! adv-read-outside: granted one directory read-only, it tries to read `/etc/passwd`
//! and a file next to its granted directory (a sibling such as `/tmp/x/secret.txt`
//! beside the granted `/tmp/x/granted`), both through `std::fs` and through raw
//! `openat` on the granted directory's descriptor (an absolute path, and `../` to the
//! sibling, handed to the host as is), and to list `/`. Every attempt must fail: no
//! byte of either file reaches the guest, each open that reaches the host is traced as
//! `filesystem`/`open-at` with `allowed = false`, and reading inside the grant still
//! works. The guest reports each attempt in its details and ends `no-op` when all were
//! refused.

use attack_report::{Report, raw};
use runwarden_sdk::prelude::*;
use std::io::Read;

#[derive(serde::Deserialize)]
struct Params {
    /// The granted directory.
    granted: String,
    /// A file beside it, e.g. `/tmp/x/secret.txt` for `/tmp/x/granted`.
    sibling: String,
}

struct ReadOutside;

fn read(mut f: std::fs::File) -> std::io::Result<String> {
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

impl Runbook for ReadOutside {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-read-outside",
            "0.1.0",
            "Try to read files outside the granted directory",
        )
        .capability(Capability::ReadDir("{granted}".into()))
        .params_schema(serde_json::json!({
            "type": "object", "required": ["granted", "sibling"], "additionalProperties": false,
            "properties": {"granted": {"type": "string"}, "sibling": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut r = Report::new();
        r.control(
            "read-inside",
            std::fs::read_to_string(format!("{}/inside.txt", p.granted)),
        );
        r.attack("etc-passwd", std::fs::read_to_string("/etc/passwd"));
        r.attack("sibling", std::fs::read_to_string(&p.sibling));
        r.attack(
            "list-root",
            std::fs::read_dir("/").map(|d| d.count().to_string()),
        );
        let sibling_name = p.sibling.rsplit('/').next().unwrap_or_default().to_string();
        match std::fs::File::open(&p.granted) {
            Ok(dir) => {
                r.attack(
                    "raw-etc-passwd",
                    raw::open_at(&dir, "/etc/passwd").and_then(read),
                );
                r.attack(
                    "raw-sibling",
                    raw::open_at(&dir, &format!("../{sibling_name}")).and_then(read),
                );
                r.attack(
                    "raw-absolute-sibling",
                    raw::open_at(&dir, &p.sibling).and_then(read),
                );
            }
            Err(e) => {
                r.control("open-granted-dir", Err::<String, _>(e));
            }
        }
        Ok(r.outcome("read outside the grant"))
    }
}

runwarden_sdk::export_runbook!(ReadOutside);
