//! renew-cert: renew a TLS certificate that expires soon, and check that it did.
//!
//! Reads the PEM certificate at `cert_path` (inside the read-only grant `cert_dir`),
//! computes the days left before its notAfter and, when fewer than `threshold_days`,
//! runs `PROGRAM renew --cert-name NAME` (certbot by default). It then reads the
//! certificate again: healed when the new expiry is beyond the threshold, failed
//! otherwise.
//!
//! certbot's `live/NAME/*.pem` files are symlinks into `archive/`: grant the directory
//! holding both (`/etc/letsencrypt`) as `cert_dir`, since a preopen cannot be left even
//! through a symlink. certbot renews only within its own window (30 days by default), so
//! a `threshold_days` above it makes certbot exit 0 without renewing; the runbook then
//! reports the certificate unchanged, as failed. A dry run simulates the renew command
//! the same way, so a dry run on a due certificate ends failed with "certificate
//! unchanged" in its summary, and its trace shows the simulated `exec` call.

mod x509;

use runbook_common::{clean_abs, is_within};
use runwarden_sdk::log::Level;
use runwarden_sdk::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::time::SystemTime;
use x509::{CertInfo, iso8601};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    cert_dir: String,
    cert_path: String,
    cert_name: String,
    #[serde(default = "default_threshold")]
    threshold_days: i64,
    #[serde(default = "default_program")]
    program: String,
}

fn default_threshold() -> i64 {
    30
}

fn default_program() -> String {
    "/usr/bin/certbot".into()
}

struct RenewCert;

impl Runbook for RenewCert {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "renew-cert",
            env!("CARGO_PKG_VERSION"),
            "Renew a TLS certificate with certbot when it expires within a threshold, then check the new expiry",
        )
        .risk(Risk::High)
        .capability(Capability::ReadDir("{cert_dir}".into()))
        .capability(Capability::Exec {
            program: "{program}".into(),
            args: vec!["renew".into(), "--cert-name".into(), "{cert_name}".into()],
        })
        .platform("linux")
        .params_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["cert_dir", "cert_path", "cert_name"],
            "properties": {
                "cert_dir": {"type": "string", "pattern": "^/", "minLength": 2, "maxLength": 4096,
                             "description": "directory granted read-only that holds the certificate and whatever its symlinks point to, e.g. /etc/letsencrypt"},
                "cert_path": {"type": "string", "pattern": "^/.*\\.(pem|crt|cer)$", "minLength": 2, "maxLength": 4096,
                              "description": "absolute path of the PEM certificate inside cert_dir, e.g. /etc/letsencrypt/live/clinic.example/cert.pem"},
                "cert_name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$", "minLength": 1, "maxLength": 253,
                              "description": "certbot certificate name, passed as `--cert-name`"},
                "threshold_days": {"type": "integer", "minimum": 1, "maximum": 365, "default": 30,
                                   "description": "renew when fewer than this many days are left"},
                "program": {"type": "string", "pattern": "^/[^\\s]*$", "minLength": 2, "maxLength": 4096, "default": "/usr/bin/certbot",
                            "description": "absolute path of the renew program, called as `PROGRAM renew --cert-name NAME`"}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let bad = |m: String| RunError::InvalidParams(m);
        let dir = clean_abs(&p.cert_dir).ok_or_else(|| {
            bad(format!(
                "cert_dir {:?} must be absolute without `.` or `..`",
                p.cert_dir
            ))
        })?;
        let path = clean_abs(&p.cert_path).ok_or_else(|| {
            bad(format!(
                "cert_path {:?} must be absolute without `.` or `..`",
                p.cert_path
            ))
        })?;
        if !is_within(&dir, &path) {
            return Err(bad(format!(
                "cert_path {} is not inside cert_dir {}",
                path.display(),
                dir.display()
            )));
        }
        let path_s = path.display().to_string();
        let threshold = p.threshold_days;

        let before = read_cert(&path_s)?;
        let now = runbook_common::unix_seconds(SystemTime::now());
        let days = days_left(&before, now);
        log::log(
            Level::Info,
            "certificate read",
            &[
                ("path", &path_s),
                ("not_after", &iso8601(before.not_after)),
                ("days_left", &days.to_string()),
            ],
        );
        let mut details = json!({
            "cert_path": path_s,
            "cert_name": p.cert_name,
            "threshold_days": threshold,
            "before": cert_json(&before, now),
        });
        if days >= threshold {
            return Ok(Outcome::no_op(format!(
                "certificate {} expires {} ({days} days left, threshold {threshold}): nothing to renew",
                p.cert_name,
                iso8601(before.not_after)
            ))
            .details(details));
        }

        log::log(
            Level::Warn,
            "renewing",
            &[("cert_name", &p.cert_name), ("program", &p.program)],
        );
        let out = match exec::run(&p.program, &["renew", "--cert-name", &p.cert_name]) {
            Ok(o) => o,
            Err(HostError::Denied(m)) => return Err(RunError::Denied(m)),
            Err(e) => {
                let msg = host_error(&e);
                log::log(
                    Level::Error,
                    "renew command did not run",
                    &[("error", &msg)],
                );
                details["error"] = json!(msg);
                return Ok(Outcome::failed(format!(
                    "could not run {} for {}: {msg}",
                    p.program, p.cert_name
                ))
                .details(details));
            }
        };
        details["exit_code"] = json!(out.exit_code);
        details["stdout_tail"] = json!(tail(&out.stdout));
        details["stderr_tail"] = json!(tail(&out.stderr));
        if out.exit_code != Some(0) {
            log::log(
                Level::Error,
                "renew command failed",
                &[("exit_code", &format!("{:?}", out.exit_code))],
            );
            return Ok(Outcome::failed(format!(
                "{} renew --cert-name {} exited with {}: {}",
                p.program,
                p.cert_name,
                out.exit_code.map_or("a signal".into(), |c| c.to_string()),
                tail(&out.stderr).lines().last().unwrap_or("")
            ))
            .details(details));
        }

        let after = read_cert(&path_s)?;
        let now = runbook_common::unix_seconds(SystemTime::now());
        let days_after = days_left(&after, now);
        details["after"] = cert_json(&after, now);
        let changed = after != before;
        details["changed"] = json!(changed);
        log::log(
            Level::Info,
            "certificate after renewal",
            &[
                ("not_after", &iso8601(after.not_after)),
                ("days_left", &days_after.to_string()),
                ("changed", &changed.to_string()),
            ],
        );
        if days_after >= threshold {
            Ok(Outcome::healed(format!(
                "renewed certificate {}: expiry {} → {} ({days_after} days left)",
                p.cert_name,
                iso8601(before.not_after),
                iso8601(after.not_after)
            ))
            .details(details))
        } else if !changed {
            Ok(Outcome::failed(format!(
                "certificate {} unchanged after `{} renew` exited 0: still expires {} ({days_after} days left, threshold {threshold}); \
                 the program may consider it not yet due, or this was a dry run that only simulated the renew command",
                p.cert_name,
                p.program,
                iso8601(after.not_after)
            ))
            .details(details))
        } else {
            Ok(Outcome::failed(format!(
                "certificate {} was replaced but the new one expires {} ({days_after} days left), within the threshold of {threshold} days",
                p.cert_name,
                iso8601(after.not_after)
            ))
            .details(details))
        }
    }
}

fn read_cert(path: &str) -> Result<CertInfo, RunError> {
    let pem = std::fs::read(path).map_err(|e| {
        RunError::Failed(format!(
            "cannot read certificate {path}: {e} (is it inside cert_dir, and do its symlinks stay inside it?)"
        ))
    })?;
    x509::parse_pem(&pem)
        .map_err(|e| RunError::Failed(format!("cannot parse certificate {path}: {e}")))
}

/// Whole days left before notAfter, negative once expired.
fn days_left(c: &CertInfo, now: i64) -> i64 {
    (c.not_after - now).div_euclid(86_400)
}

fn cert_json(c: &CertInfo, now: i64) -> serde_json::Value {
    json!({
        "not_before": iso8601(c.not_before),
        "not_after": iso8601(c.not_after),
        "days_left": days_left(c, now),
        "subject_cn": c.subject_cn,
        "serial": c.serial,
    })
}

/// The last 2000 bytes of program output, cut on a character boundary.
fn tail(s: &str) -> String {
    let mut start = s.len().saturating_sub(2000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim().to_string()
}

fn host_error(e: &HostError) -> String {
    match e {
        HostError::Denied(m) => format!("denied: {m}"),
        HostError::NotFound(m) => format!("not found: {m}"),
        HostError::Timeout(m) => format!("timed out: {m}"),
        HostError::Invalid(m) => format!("invalid: {m}"),
        HostError::Failed(m) => m.clone(),
    }
}

runwarden_sdk::export_runbook!(RenewCert);
