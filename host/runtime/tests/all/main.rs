//! Integration tests of the sandbox: real components (built by `runwarden-test-artifacts`)
//! run by a real `Runtime` under real policies, against temp directories, a loopback
//! HTTP server and a command-template service backend.

mod adversarial;
mod runbooks;
mod sandbox;
mod symlinks;

use runwarden_runtime::{Invocation, Policy, RunOptions, Runtime, RuntimeConfig, Status};
use std::path::Path;
use std::sync::Arc;

/// A runtime with its own data directory.
pub struct Harness {
    /// The runtime under test.
    pub rt: Runtime,
    /// Holds the data directory and test files; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A fresh runtime in a fresh temp directory.
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(RuntimeConfig {
            data_dir: dir.path().join("data"),
        })
        .unwrap();
        Harness { rt, dir }
    }

    /// A scratch directory inside the harness's temp dir.
    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Run component `name` (a crate under runbooks/ or tests/guests/) once.
    pub fn run(
        &self,
        name: &str,
        policy: &str,
        params: serde_json::Value,
        dry_run: bool,
    ) -> Invocation {
        let policy = Arc::new(
            Policy::parse(policy).unwrap_or_else(|e| panic!("test policy: {e}\n{policy}")),
        );
        let loaded = self
            .rt
            .load(&runwarden_test_artifacts::bytes(name))
            .unwrap();
        self.rt.invoke(
            &loaded,
            &policy,
            RunOptions {
                params,
                dry_run,
                invocation_id: None,
            },
        )
    }
}

/// A command-template service backend keeping unit states as files under `dir`.
/// Units that have no file do not exist (`not-found`).
pub fn service_backend(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"[services]
backend = "command"
status = ["/bin/sh", "-c", "cat {d}/{{unit}} 2>/dev/null || echo not-found"]
start = ["/bin/sh", "-c", "echo active > {d}/{{unit}}"]
stop = ["/bin/sh", "-c", "echo inactive > {d}/{{unit}}"]
restart = ["/bin/sh", "-c", "echo restarted >> {d}/{{unit}}.log; echo active > {d}/{{unit}}"]
reload = ["/bin/sh", "-c", "test -f {d}/{{unit}}"]
"#
    )
}

/// Assert a status, printing the whole invocation when it differs.
#[track_caller]
pub fn assert_status(inv: &Invocation, status: Status) {
    assert_eq!(
        inv.outcome.status,
        status,
        "{}",
        serde_json::to_string_pretty(inv).unwrap()
    );
}
