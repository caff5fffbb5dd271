//! attack-report: how the adversarial guests (`adv-*`) report what they tried.
//!
//! Each attempt is recorded under a name, so a host test can assert from the inside
//! (which attempt was refused, with which error) as well as from the trace. Attacks are
//! attempts the sandbox must refuse; controls are attempts the grant allows, proving the
//! attack was refused for being out of scope and not because nothing works. The outcome
//! is `no-op` when every attack was refused and `failed` (summary `escaped: …`) otherwise.
//!
//! `raw` reaches the WASI filesystem below `std::fs` path resolution, the way a hostile
//! guest would: `openat` relative to an open directory with absolute or `..` paths.

use runwarden_sdk::prelude::*;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;

/// Errors the guests can meet: host-call errors and WASI (libc) errors.
pub trait Failure {
    /// The error as JSON: `{"error": kind, "message": …}`.
    fn describe(&self) -> Value;
}

impl<F: Failure + ?Sized> Failure for Box<F> {
    fn describe(&self) -> Value {
        (**self).describe()
    }
}

impl Failure for HostError {
    fn describe(&self) -> Value {
        let (kind, msg) = match self {
            HostError::Denied(m) => ("denied", m),
            HostError::NotFound(m) => ("not-found", m),
            HostError::Timeout(m) => ("timeout", m),
            HostError::Invalid(m) => ("invalid", m),
            HostError::Failed(m) => ("failed", m),
        };
        json!({"error": kind, "message": msg})
    }
}

impl Failure for std::io::Error {
    fn describe(&self) -> Value {
        json!({"error": format!("{:?}", self.kind()), "message": self.to_string(), "errno": self.raw_os_error()})
    }
}

/// What one guest tried, attempt by attempt.
#[derive(Default)]
pub struct Report {
    attacks: Map<String, Value>,
    controls: Map<String, Value>,
    escaped: Vec<String>,
}

/// At most 200 characters of what an attempt got, so a leak is visible but bounded.
fn shown(v: Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > 200 => Value::String(s.chars().take(200).collect()),
        v => v,
    }
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report::default()
    }

    /// An attempt the sandbox must refuse. Returns whether it was refused.
    pub fn attack<T: Into<Value>, E: Failure>(&mut self, name: &str, r: Result<T, E>) -> bool {
        let entry = match r {
            Ok(got) => {
                self.escaped.push(name.to_string());
                json!({"refused": false, "got": shown(got.into())})
            }
            Err(e) => {
                let mut d = e.describe();
                d["refused"] = json!(true);
                d
            }
        };
        let refused = entry["refused"] == json!(true);
        self.attacks.insert(name.to_string(), entry);
        refused
    }

    /// An attempt the grant allows. Returns whether it worked.
    pub fn control<T: Into<Value>, E: Failure>(&mut self, name: &str, r: Result<T, E>) -> bool {
        let entry = match r {
            Ok(got) => json!({"ok": true, "got": shown(got.into())}),
            Err(e) => {
                let mut d = e.describe();
                d["ok"] = json!(false);
                d
            }
        };
        let ok = entry["ok"] == json!(true);
        self.controls.insert(name.to_string(), entry);
        ok
    }

    /// `no-op` when every attack was refused, `failed` naming the escapes otherwise.
    pub fn outcome(self, what: &str) -> Outcome {
        let details =
            json!({"attacks": self.attacks, "controls": self.controls, "escaped": self.escaped});
        if self.escaped.is_empty() {
            Outcome::no_op(format!(
                "{what}: all {} attacks were refused",
                self.attacks.len()
            ))
            .details(details)
        } else {
            let mut s = format!("{what}: escaped:");
            for e in &self.escaped {
                let _ = write!(s, " {e}");
            }
            Outcome::failed(s).details(details)
        }
    }
}

/// Filesystem calls below `std::fs` path resolution.
pub mod raw {
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd};

    fn c(s: &str) -> io::Result<CString> {
        CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    /// `openat(dir, path)` for reading, with `path` handed to the host as is.
    pub fn open_at(dir: &File, path: &str) -> io::Result<File> {
        let p = c(path)?;
        // SAFETY: `p` is a valid C string; `dir` is an open descriptor for this call.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), p.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Create a symlink at `link` (resolved by libc against the preopens) pointing to `target`.
    pub fn symlink(target: &str, link: &str) -> io::Result<()> {
        let (t, l) = (c(target)?, c(link)?);
        // SAFETY: both are valid C strings.
        if unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `linkat(dir, old, dir, new)`: a hard link, with both paths handed to the host as is.
    pub fn link_at(dir: &File, old: &str, new: &str) -> io::Result<()> {
        let (o, n) = (c(old)?, c(new)?);
        // SAFETY: valid C strings and an open descriptor.
        if unsafe { libc::linkat(dir.as_raw_fd(), o.as_ptr(), dir.as_raw_fd(), n.as_ptr(), 0) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
