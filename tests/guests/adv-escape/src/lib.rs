//! adv-escape: granted a directory read-only and another read-write, it tries to leave
//! them: `..` paths (`granted/../secret.txt`, `granted/sub/../../secret.txt`, listing
//! `granted/..`), symlinks the test planted inside the read-only grant pointing outside
//! (absolute, relative, to the parent directory, to `/etc`), symlinks it tries to create in
//! the writable grant pointing outside (refused, so host programs never follow them out), a hard link to the outside file, and a write to
//! `writable/../planted.txt`. Every attempt must fail: the outside file is never read nor
//! changed, nothing is created outside the grants, the host's refusals appear in the trace
//! as `filesystem` calls with `allowed = false`, and the guest ends `no-op`.

use attack_report::{Report, raw};
use runwarden_sdk::prelude::*;
use std::io::Read;

#[derive(serde::Deserialize)]
struct Params {
    /// Granted read-only; holds the planted links `abs-link`, `rel-link`, `dir-link`, `etc-link`
    /// and a subdirectory `sub`.
    granted: String,
    /// Granted read-write.
    writable: String,
    /// The outside file, absolute (a sibling of both grants).
    outside: String,
}

struct Escape;

impl Runbook for Escape {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new("adv-escape", "0.1.0", "Try to leave the granted directories through .. and symlinks")
            .risk(Risk::Medium)
            .capability(Capability::ReadDir("{granted}".into()))
            .capability(Capability::WriteDir("{writable}".into()))
            .params_schema(serde_json::json!({
                "type": "object", "required": ["granted", "writable", "outside"], "additionalProperties": false,
                "properties": {"granted": {"type": "string"}, "writable": {"type": "string"}, "outside": {"type": "string"}}
            }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let (g, w) = (&p.granted, &p.writable);
        let name = p.outside.rsplit('/').next().unwrap_or_default().to_string();
        let read = |path: String| std::fs::read_to_string(path);
        let mut r = Report::new();
        r.control("read-inside", read(format!("{g}/sub/inside.txt")));

        r.attack("dotdot", read(format!("{g}/../{name}")));
        r.attack("dotdot-deep", read(format!("{g}/sub/../../{name}")));
        r.attack(
            "dotdot-list",
            std::fs::read_dir(format!("{g}/..")).map(|d| d.count().to_string()),
        );
        r.attack("symlink-absolute", read(format!("{g}/abs-link")));
        r.attack("symlink-relative", read(format!("{g}/rel-link")));
        r.attack("symlink-dir", read(format!("{g}/dir-link/{name}")));
        r.attack("symlink-etc", read(format!("{g}/etc-link/passwd")));
        r.attack(
            "symlink-metadata-follow",
            std::fs::metadata(format!("{g}/abs-link")).map(|m| m.len().to_string()),
        );

        // Links the guest makes itself pointing out of its grant: refused outright, since a
        // host program (a service template, a granted command) could follow them later.
        // Were one created anyway, following it must fail too.
        let made =
            raw::symlink(&p.outside, &format!("{w}/evil-abs")).map(|_| "created".to_string());
        let abs_made = made.is_ok();
        r.attack("make-symlink-absolute", made);
        let made = raw::symlink(&format!("../{name}"), &format!("{w}/evil-rel"))
            .map(|_| "created".to_string());
        let rel_made = made.is_ok();
        r.attack("make-symlink-relative", made);
        if abs_made {
            r.attack("own-symlink-absolute", read(format!("{w}/evil-abs")));
        }
        if rel_made {
            r.attack("own-symlink-relative", read(format!("{w}/evil-rel")));
            r.attack(
                "own-symlink-write",
                std::fs::write(format!("{w}/evil-rel"), "overwritten by the guest")
                    .map(|_| "written".to_string()),
            );
        }
        match std::fs::File::open(w) {
            Ok(dir) => {
                r.attack(
                    "hardlink-outside",
                    raw::link_at(&dir, &format!("../{name}"), "hard").map(|_| "linked".to_string()),
                );
                r.attack(
                    "raw-dotdot",
                    raw::open_at(&dir, &format!("../{name}")).and_then(|mut f| {
                        let mut s = String::new();
                        f.read_to_string(&mut s).map(|_| s)
                    }),
                );
            }
            Err(e) => {
                r.control("open-writable-dir", Err::<String, _>(e));
            }
        }
        r.attack(
            "write-dotdot",
            std::fs::write(format!("{w}/../planted.txt"), "planted by the guest")
                .map(|_| "written".to_string()),
        );
        Ok(r.outcome("escape the grants"))
    }
}

runwarden_sdk::export_runbook!(Escape);
