//! Grants: what one invocation may touch.
//!
//! The effective grant is the manifest's requests, with `{param}` placeholders filled in
//! from the params, each of which must be covered by the host policy. A request the
//! policy does not cover refuses the run before the component is instantiated. At call
//! time every host function checks its target against both the request and the policy,
//! so a runbook whose manifest under-declared gets nothing it did not ask for.

use crate::policy::{ExecGrant, Policy, normalize_dir};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One capability as a manifest asks for it (mirrors the WIT `capability` variant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "scope")]
pub enum Capability {
    /// Units matching a name or glob.
    Service(String),
    /// A program with argument patterns.
    Exec(ExecGrant),
    /// An HTTP origin.
    Http(String),
    /// A directory to read.
    ReadDir(String),
    /// A directory to read and write.
    WriteDir(String),
    /// A named secret.
    Secret(String),
    /// Host metadata.
    Probe,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capability::Service(s) => write!(f, "service {s}"),
            Capability::Exec(e) => write!(f, "exec {} {}", e.program, e.args.join(" ")),
            Capability::Http(o) => write!(f, "http {o}"),
            Capability::ReadDir(d) => write!(f, "read-dir {d}"),
            Capability::WriteDir(d) => write!(f, "write-dir {d}"),
            Capability::Secret(s) => write!(f, "secret {s}"),
            Capability::Probe => write!(f, "probe"),
        }
    }
}

/// The capabilities one invocation holds, each covered by the policy.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Grant {
    /// Unit patterns.
    pub services: Vec<String>,
    /// Programs and argument patterns.
    pub exec: Vec<ExecGrant>,
    /// Normalised origins (`scheme://host:port`).
    pub http: Vec<String>,
    /// Directories preopened read-only.
    pub read_dirs: Vec<PathBuf>,
    /// Directories preopened read-write.
    pub write_dirs: Vec<PathBuf>,
    /// Secret names.
    pub secrets: Vec<String>,
    /// Host metadata.
    pub probe: bool,
}

/// Why a manifest's requests could not be granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Each request the policy does not cover, with the reason.
    pub missing: Vec<String>,
}

impl Grant {
    /// Resolve `requests` against `params` and check each against `policy`.
    pub fn resolve(
        requests: &[Capability],
        params: &serde_json::Value,
        policy: &Policy,
    ) -> Result<Grant, Refusal> {
        let mut grant = Grant::default();
        let mut missing = Vec::new();
        for req in requests {
            if let Err(m) = grant.add(req, params, policy) {
                missing.push(m);
            }
        }
        if missing.is_empty() {
            Ok(grant)
        } else {
            Err(Refusal { missing })
        }
    }

    /// Add one request; the error names the request with its placeholders filled in.
    fn add(
        &mut self,
        req: &Capability,
        params: &serde_json::Value,
        policy: &Policy,
    ) -> Result<(), String> {
        let resolved = resolve_placeholders(req, params).map_err(|m| format!("{req}: {m}"))?;
        self.add_resolved(&resolved, policy)
            .map_err(|m| format!("{resolved}: {m}"))
    }

    fn add_resolved(&mut self, req: &Capability, policy: &Policy) -> Result<(), String> {
        let g = &policy.grants;
        match req {
            Capability::Service(pat) => {
                let pat = pat.clone();
                check_unit_pattern(&pat)?;
                if !g.services.iter().any(|p| pattern_covers(p, &pat)) {
                    return Err("not in the policy's grants.services".into());
                }
                self.services.push(pat);
            }
            Capability::Exec(e) => {
                let (program, args) = (e.program.clone(), e.args.clone());
                let covered = g.exec.iter().any(|p| {
                    p.program == program
                        && p.args.len() == args.len()
                        && p.args.iter().zip(&args).all(|(p, a)| pattern_covers(p, a))
                });
                if !covered {
                    return Err(
                        "no grants.exec entry with this program and covering argument patterns"
                            .into(),
                    );
                }
                self.exec.push(ExecGrant { program, args });
            }
            Capability::Http(o) => {
                let origin = parse_origin(o)?;
                if !g
                    .http
                    .iter()
                    .any(|p| parse_origin(p).as_deref() == Ok(origin.as_str()))
                {
                    return Err(format!(
                        "origin {origin} is not in the policy's grants.http"
                    ));
                }
                self.http.push(origin);
            }
            Capability::ReadDir(d) | Capability::WriteDir(d) => {
                let write = matches!(req, Capability::WriteDir(_));
                let dir = normalize_dir(Path::new(d))?;
                let within = |roots: &[PathBuf]| {
                    roots
                        .iter()
                        .filter_map(|r| normalize_dir(r).ok())
                        .any(|r| dir.starts_with(r))
                };
                let ok = if write {
                    within(&g.write_dirs)
                } else {
                    within(&g.read_dirs) || within(&g.write_dirs)
                };
                if !ok {
                    return Err(format!(
                        "{} is not under any of the policy's {}",
                        dir.display(),
                        if write {
                            "grants.write_dirs"
                        } else {
                            "grants.read_dirs or grants.write_dirs"
                        }
                    ));
                }
                if write {
                    self.write_dirs.push(dir)
                } else {
                    self.read_dirs.push(dir)
                }
            }
            Capability::Secret(name) => {
                let name = name.clone();
                if !g.secrets.contains(&name) {
                    return Err("not in the policy's grants.secrets".into());
                }
                self.secrets.push(name);
            }
            Capability::Probe => {
                if !g.probe {
                    return Err("the policy has grants.probe = false".into());
                }
                self.probe = true;
            }
        }
        Ok(())
    }

    /// May `unit` be managed? Checks the grant and the policy.
    pub fn allows_unit(&self, policy: &Policy, unit: &str) -> bool {
        valid_unit_name(unit)
            && self.services.iter().any(|p| glob_matches(p, unit))
            && policy.grants.services.iter().any(|p| glob_matches(p, unit))
    }

    /// May `program args` run? Checks the grant and the policy.
    pub fn allows_exec(&self, policy: &Policy, program: &str, args: &[String]) -> bool {
        let fits = |g: &ExecGrant| {
            g.program == program
                && g.args.len() == args.len()
                && g.args.iter().zip(args).all(|(p, a)| arg_matches(p, a))
        };
        self.exec.iter().any(fits) && policy.grants.exec.iter().any(fits)
    }

    /// May a request go to `origin` (already normalised)? Checks the grant and the policy.
    pub fn allows_origin(&self, policy: &Policy, origin: &str) -> bool {
        self.http.iter().any(|o| o == origin)
            && policy
                .grants
                .http
                .iter()
                .any(|p| parse_origin(p).as_deref() == Ok(origin))
    }

    /// May secret `name` be read? Checks the grant and the policy.
    pub fn allows_secret(&self, policy: &Policy, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name) && policy.grants.secrets.iter().any(|s| s == name)
    }

    /// Is `path` inside a granted directory (read or write)?
    pub fn allows_path(&self, path: &Path) -> bool {
        match normalize_dir(path) {
            Ok(p) => self
                .read_dirs
                .iter()
                .chain(&self.write_dirs)
                .any(|d| p.starts_with(d)),
            Err(_) => false,
        }
    }

    /// SHA-256 of the grant's canonical JSON, for traces and evidence.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(json))
    }
}

fn resolve_placeholders(
    req: &Capability,
    params: &serde_json::Value,
) -> Result<Capability, String> {
    Ok(match req {
        Capability::Service(s) => Capability::Service(fill(s, params)?),
        Capability::Exec(e) => Capability::Exec(ExecGrant {
            program: fill(&e.program, params)?,
            args: e
                .args
                .iter()
                .map(|a| fill(a, params))
                .collect::<Result<_, _>>()?,
        }),
        Capability::Http(o) => Capability::Http(fill(o, params)?),
        Capability::ReadDir(d) => Capability::ReadDir(fill(d, params)?),
        Capability::WriteDir(d) => Capability::WriteDir(fill(d, params)?),
        Capability::Secret(n) => Capability::Secret(fill(n, params)?),
        Capability::Probe => Capability::Probe,
    })
}

/// Replace `{name}` with the string param `name`. A placeholder whose param is missing or
/// not a string is an error: the scope cannot be known, so nothing is granted.
fn fill(template: &str, params: &serde_json::Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {template:?}"))?
            + start;
        let name = &rest[start + 1..end];
        match params.get(name) {
            // A param names one target: it must not widen the scope with wildcards, nor
            // vanish (`/var/log/{app}` with an empty app would grant all of /var/log).
            Some(serde_json::Value::String(v)) if v.is_empty() => {
                return Err(format!("param `{name}` is empty"));
            }
            Some(serde_json::Value::String(v)) if v.contains(['*', '?', '[', ']', '{', '}']) => {
                return Err(format!(
                    "param `{name}` contains glob characters (*?[]{{}}): {v:?}"
                ));
            }
            Some(serde_json::Value::String(v)) => out.push_str(v),
            _ => {
                return Err(format!(
                    "placeholder {{{name}}} needs a string param `{name}`"
                ));
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_unit_pattern(unit: &str) -> Result<(), String> {
    let ok = !unit.is_empty()
        && unit.len() <= 256
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:-\\*?[]".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{unit:?} is not a valid unit name"))
    }
}

/// A concrete unit name at call time: letters, digits and `@._:-` only, no leading `-`.
pub(crate) fn valid_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && unit.len() <= 256
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c))
}

/// Does argument `arg` fit argument pattern `pattern`? Stricter than a plain glob so a
/// pattern such as `/var/log/app/*` cannot be stretched: `*` does not cross `/`, an
/// argument with a `..` segment only matches a pattern that spells it out, and an
/// argument starting with `-` (an option) only matches a pattern that starts with `-`.
pub(crate) fn arg_matches(pattern: &str, arg: &str) -> bool {
    if pattern == arg {
        return true;
    }
    if arg.split('/').any(|seg| seg == "..") || (arg.starts_with('-') && !pattern.starts_with('-'))
    {
        return false;
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher().is_match(arg))
        .unwrap_or(false)
}

fn glob_matches(pattern: &str, text: &str) -> bool {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(text))
        .unwrap_or(false)
}

/// Does policy pattern `policy` cover every text requested pattern `request` could match?
/// Exact equality always covers. Otherwise the request's text must match the policy
/// pattern, and only `*` wildcards are trusted to absorb a wildcard request: a policy
/// with `?` or `[…]` covers literal requests only.
fn pattern_covers(policy: &str, request: &str) -> bool {
    if policy == request {
        return true;
    }
    let request_is_glob = request.contains(['*', '?', '[']);
    if request_is_glob && (policy.contains(['?', '[']) || request.contains(['?', '['])) {
        return false;
    }
    glob_matches(policy, request)
}

/// Normalise an origin or URL to `scheme://host:port` (http and https only).
pub(crate) fn parse_origin(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with credentials are not allowed".into());
    }
    let host = url.host_str().ok_or("URL has no host")?;
    let port = url.port_or_known_default().ok_or("URL has no port")?;
    Ok(format!(
        "{}://{}:{}",
        url.scheme(),
        host.to_ascii_lowercase(),
        port
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy::parse(
            r#"host_id = "h"
[grants]
services = ["nginx.service", "php*-fpm.service"]
http = ["http://127.0.0.1:8080"]
read_dirs = ["/var/log"]
write_dirs = ["/var/tmp/app"]
secrets = ["smtp"]
probe = true
[[grants.exec]]
program = "/usr/bin/certbot"
args = ["renew", "--cert-name", "*"]
[secrets]
smtp = { env = "SMTP" }
"#,
        )
        .unwrap()
    }

    #[test]
    fn placeholders_are_filled_from_params_and_checked() {
        let p = policy();
        let reqs = [Capability::Service("{unit}".into())];
        let g = Grant::resolve(&reqs, &json!({"unit": "nginx.service"}), &p).unwrap();
        assert_eq!(g.services, ["nginx.service"]);
        let err = Grant::resolve(&reqs, &json!({"unit": "sshd.service"}), &p).unwrap_err();
        assert!(err.missing[0].contains("service sshd.service"), "{err:?}");
        let err = Grant::resolve(&reqs, &json!({}), &p).unwrap_err();
        assert!(
            err.missing[0].contains("needs a string param `unit`"),
            "{err:?}"
        );
    }

    #[test]
    fn every_missing_grant_is_named() {
        let p = policy();
        let reqs = [
            Capability::Secret("db".into()),
            Capability::Http("https://evil.example".into()),
            Capability::WriteDir("/var/log".into()),
            Capability::ReadDir("/var/log/nginx".into()),
        ];
        let err = Grant::resolve(&reqs, &json!({}), &p).unwrap_err();
        assert_eq!(err.missing.len(), 3, "{err:?}");
        assert!(err.missing[0].starts_with("secret db"));
        assert!(err.missing[1].starts_with("http https://evil.example"));
        assert!(err.missing[2].starts_with("write-dir /var/log"));
    }

    #[test]
    fn wildcard_requests_need_wildcard_policy() {
        assert!(pattern_covers("php*-fpm.service", "php8.2-fpm.service"));
        assert!(pattern_covers("*", "php*-fpm.service"));
        assert!(!pattern_covers("nginx.service", "*"));
        assert!(!pattern_covers("a?c", "a*c"));
    }

    #[test]
    fn call_time_checks_need_both_grant_and_policy() {
        let p = policy();
        let g = Grant::resolve(
            &[Capability::Exec(ExecGrant {
                program: "/usr/bin/certbot".into(),
                args: vec!["renew".into(), "--cert-name".into(), "{name}".into()],
            })],
            &json!({"name": "clinic"}),
            &p,
        )
        .unwrap();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(g.allows_exec(
            &p,
            "/usr/bin/certbot",
            &args(&["renew", "--cert-name", "clinic"])
        ));
        assert!(!g.allows_exec(
            &p,
            "/usr/bin/certbot",
            &args(&["renew", "--cert-name", "other"])
        ));
        assert!(!g.allows_exec(
            &p,
            "/usr/bin/certbot",
            &args(&["delete", "--cert-name", "clinic"])
        ));
        assert!(
            !g.allows_unit(&p, "nginx.service"),
            "services were not requested"
        );
    }

    #[test]
    fn exec_argument_patterns_cannot_be_stretched() {
        assert!(arg_matches("/var/log/app/*", "/var/log/app/x.log"));
        assert!(!arg_matches(
            "/var/log/app/*",
            "/var/log/app/../../../etc/shadow"
        ));
        assert!(!arg_matches("/var/log/app/*", "/var/log/app/sub/x.log"));
        assert!(arg_matches("/var/log/app/**", "/var/log/app/sub/x.log"));
        assert!(!arg_matches("*", "--config=/etc/evil"));
        assert!(arg_matches("--name=*", "--name=clinic"));
        assert!(arg_matches("clinic", "clinic"));
    }

    #[test]
    fn params_cannot_widen_or_empty_a_scope() {
        let p = policy();
        let reqs = [Capability::Service("{unit}".into())];
        for unit in ["php*-fpm.service", "", "nginx.[s]ervice"] {
            let err = Grant::resolve(&reqs, &json!({"unit": unit}), &p).unwrap_err();
            assert!(err.missing[0].contains("param `unit`"), "{unit:?}: {err:?}");
        }
        assert!(!valid_unit_name("nginx\\.service"));
        assert!(!valid_unit_name("-all"));
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            parse_origin("http://127.0.0.1:8080/health").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            parse_origin("HTTPS://Example.org").unwrap(),
            "https://example.org:443"
        );
        assert!(parse_origin("file:///etc/passwd").is_err());
        assert!(parse_origin("http://user:pw@host/").is_err());
    }
}
