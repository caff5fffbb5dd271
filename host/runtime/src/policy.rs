//! The host policy: what a host lets runbooks touch, and the limits of one invocation.
//!
//! A policy is a TOML file (see `examples/policy.toml`). Unknown keys are errors, so a
//! typo never silently widens or narrows a grant.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The largest `limits.memory_bytes` a policy may set (the pooling allocator's slot size).
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;

/// A parsed and checked host policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Identifies this host in traces and evidence.
    pub host_id: String,
    /// What runbooks may be granted on this host. Absent means nothing.
    #[serde(default)]
    pub grants: Grants,
    /// Where granted secrets come from.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Per-invocation limits.
    #[serde(default)]
    pub limits: Limits,
    /// How service units are managed.
    #[serde(default)]
    pub services: ServiceBackend,
}

/// The most a runbook may be granted on this host.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Unit names or globs (`nginx.service`, `php*-fpm.service`).
    #[serde(default)]
    pub services: Vec<String>,
    /// Programs with argument patterns.
    #[serde(default)]
    pub exec: Vec<ExecGrant>,
    /// HTTP origins (`https://example.org`, `http://127.0.0.1:8080`).
    #[serde(default)]
    pub http: Vec<String>,
    /// Directories runbooks may read.
    #[serde(default)]
    pub read_dirs: Vec<PathBuf>,
    /// Directories runbooks may read and write.
    #[serde(default)]
    pub write_dirs: Vec<PathBuf>,
    /// Names of secrets runbooks may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Whether runbooks may read host metadata.
    #[serde(default)]
    pub probe: bool,
}

/// A program a runbook may run, with one pattern per argument.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// Absolute path of the program.
    pub program: String,
    /// One pattern per argument: a literal, or a glob where `*` matches any text.
    #[serde(default)]
    pub args: Vec<String>,
}

/// Where a secret's value is read from when a runbook asks for it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// A file holding the value (trailing newline trimmed).
    File(PathBuf),
    /// An environment variable of the runwarden process.
    Env(String),
}

/// Hard limits of one invocation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline in milliseconds, host calls included.
    pub timeout_ms: u64,
    /// WebAssembly fuel (roughly, instructions).
    pub fuel: u64,
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
    /// Cap on log messages plus stdout/stderr, and on each exec/http body read back.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 30_000,
            fuel: 10_000_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 256 << 10,
        }
    }
}

/// How service units are managed on this host.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "snake_case")]
pub enum ServiceBackend {
    /// `systemctl` (the default).
    #[default]
    Systemd,
    /// Command templates for hosts without systemd (and for tests). `{unit}` is replaced
    /// by the unit name, which is validated first (letters, digits, `@._:-` only).
    Command(CommandTemplates),
}

/// Command templates of the `command` service backend; each is argv, program first.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTemplates {
    /// Prints the state (`active`, `inactive`, `failed`, …) or exits 0 when active.
    pub status: Vec<String>,
    /// Starts the unit.
    pub start: Vec<String>,
    /// Stops the unit.
    pub stop: Vec<String>,
    /// Restarts the unit.
    pub restart: Vec<String>,
    /// Reloads the unit.
    pub reload: Vec<String>,
}

impl Policy {
    /// Read and check a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Policy {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::Policy { message, .. } => Error::Policy {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parse and check policy text.
    pub fn parse(text: &str) -> Result<Policy> {
        let policy: Policy = toml::from_str(text).map_err(|e| Error::Policy {
            path: "<policy>".into(),
            message: e.message().trim_end().to_string()
                + &e.span()
                    .map(|s| {
                        let before = &text[..s.start.min(text.len())];
                        let line = before.matches('\n').count() + 1;
                        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                        format!(" (line {line}, column {col})")
                    })
                    .unwrap_or_default(),
        })?;
        policy.check().map_err(|message| Error::Policy {
            path: "<policy>".into(),
            message,
        })?;
        Ok(policy)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.host_id.trim().is_empty() {
            return Err("host_id must not be empty".into());
        }
        for d in self.grants.read_dirs.iter().chain(&self.grants.write_dirs) {
            normalize_dir(d).map_err(|m| format!("grants: directory {}: {m}", d.display()))?;
        }
        for o in &self.grants.http {
            crate::grant::parse_origin(o).map_err(|m| format!("grants.http: {o:?}: {m}"))?;
            let path = o.splitn(4, '/').nth(3).unwrap_or("");
            if !path.is_empty() || o.contains(['?', '#']) {
                return Err(format!(
                    "grants.http: {o:?} has a path or query, but grants are whole origins; write scheme://host[:port]"
                ));
            }
        }
        for e in &self.grants.exec {
            if !e.program.starts_with('/') {
                return Err(format!(
                    "grants.exec: program {:?} must be an absolute path",
                    e.program
                ));
            }
            for a in &e.args {
                globset::Glob::new(a).map_err(|err| {
                    format!("grants.exec: {} argument pattern {a:?}: {err}", e.program)
                })?;
            }
        }
        for s in &self.grants.services {
            globset::Glob::new(s).map_err(|e| format!("grants.services: {s:?}: {e}"))?;
        }
        for name in &self.grants.secrets {
            if !self.secrets.contains_key(name) {
                return Err(format!(
                    "grants.secrets names {name:?} but [secrets] has no source for it; add `{name} = {{ file = \"…\" }}`"
                ));
            }
        }
        for e in &self.grants.exec {
            self.program_outside_write_dirs("grants.exec", &e.program)?;
        }
        if let ServiceBackend::Command(t) = &self.services {
            for (what, argv) in [
                ("status", &t.status),
                ("start", &t.start),
                ("stop", &t.stop),
                ("restart", &t.restart),
                ("reload", &t.reload),
            ] {
                if argv.is_empty() || !argv[0].starts_with('/') {
                    return Err(format!(
                        "services.{what}: the template must start with an absolute program path"
                    ));
                }
                self.program_outside_write_dirs(&format!("services.{what}"), &argv[0])?;
            }
        }
        let l = &self.limits;
        if l.timeout_ms == 0 || l.fuel == 0 || l.memory_bytes < (1 << 16) || l.output_bytes == 0 {
            return Err("limits: timeout_ms, fuel and output_bytes must be positive and memory_bytes at least 65536".into());
        }
        if l.memory_bytes > MAX_MEMORY_BYTES {
            return Err(format!(
                "limits.memory_bytes is {} but at most {MAX_MEMORY_BYTES} (1 GiB) is supported",
                l.memory_bytes
            ));
        }
        Ok(())
    }
}

impl Policy {
    /// A program runwarden runs with its own rights must not live where runbooks write:
    /// a runbook could rewrite it or swap it for a link. Checked as written and with
    /// symlinks resolved (as far as the paths exist when the policy is loaded).
    fn program_outside_write_dirs(
        &self,
        what: &str,
        program: &str,
    ) -> std::result::Result<(), String> {
        let program = Path::new(program);
        let real = std::fs::canonicalize(program).ok();
        for w in &self.grants.write_dirs {
            let real_w = std::fs::canonicalize(w).ok();
            let inside = program.starts_with(w)
                || real.as_ref().is_some_and(|r| {
                    r.starts_with(w) || real_w.as_ref().is_some_and(|rw| r.starts_with(rw))
                })
                || real_w.as_ref().is_some_and(|rw| program.starts_with(rw));
            if inside {
                return Err(format!(
                    "{what}: program {} lies inside grants.write_dirs entry {}{}; runbooks could rewrite it or swap it for a link, and it runs with runwarden's rights. Install it outside every write directory",
                    program.display(),
                    w.display(),
                    real.as_ref()
                        .filter(|r| r.as_path() != program)
                        .map(|r| format!(" (it resolves to {})", r.display()))
                        .unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

/// Check that a directory path is absolute and has no `.`/`..` parts; return it cleaned.
pub(crate) fn normalize_dir(p: &Path) -> std::result::Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => out.push(s),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err("must not contain `.` or `..`".into());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let err = Policy::parse("host_id = \"h\"\n[grants]\nservice = [\"x\"]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `service`"), "{err}");
    }

    #[test]
    fn granted_secret_needs_a_source() {
        let err = Policy::parse("host_id = \"h\"\n[grants]\nsecrets = [\"db\"]\n").unwrap_err();
        assert!(err.to_string().contains("no source"), "{err}");
    }

    #[test]
    fn relative_and_dotdot_dirs_are_refused() {
        for d in ["tmp", "/var/../etc"] {
            let text = format!("host_id = \"h\"\n[grants]\nread_dirs = [\"{d}\"]\n");
            assert!(Policy::parse(&text).is_err(), "{d} accepted");
        }
    }

    #[test]
    fn programs_inside_write_dirs_are_refused() {
        let err = Policy::parse(
            "host_id = \"h\"\n[grants]\nwrite_dirs = [\"/srv/app\"]\n[[grants.exec]]\nprogram = \"/srv/app/bin/tool\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("grants.exec")
                && err.contains("/srv/app/bin/tool")
                && err.contains("/srv/app"),
            "{err}"
        );

        // Through a symlink: the program's real path is inside the write directory.
        let dir = std::env::temp_dir().join(format!("rw-policy-{}", std::process::id()));
        let w = dir.join("w");
        std::fs::create_dir_all(&w).unwrap();
        std::fs::write(w.join("tool"), "#!/bin/sh\n").unwrap();
        let link = dir.join("tool");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(w.join("tool"), &link).unwrap();
        let text = format!(
            "host_id = \"h\"\n[grants]\nwrite_dirs = [\"{}\"]\n[services]\nbackend = \"command\"\nstatus = [\"/bin/true\"]\nstart = [\"{}\"]\nstop = [\"/bin/true\"]\nrestart = [\"/bin/true\"]\nreload = [\"/bin/true\"]\n",
            w.display(),
            link.display()
        );
        let err = Policy::parse(&text).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("services.start") && err.contains("resolves to"),
            "{err}"
        );
    }

    #[test]
    fn example_policy_parses() {
        let text = include_str!("../../../examples/policy.toml");
        let p = Policy::parse(text).unwrap();
        assert!(!p.host_id.is_empty());
    }
}
