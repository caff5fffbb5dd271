//! Build a guest workspace for wasm32-wasip2 from a build script (shared by
//! `host/guests/build.rs` and `tests/artifacts/build.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "reproducible.rs"]
mod reproducible;

/// The repository root, from a crate two levels below it.
pub fn repo_root() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `cargo build --release --target wasm32-wasip2` in `root/ws`, into `target/guests`
/// (the standard runbooks) or `target/guests-WS` (another guest workspace: its compiler
/// flags name its own directory, so sharing one target directory would rebuild the
/// dependencies of each in turn); returns the directory the components are in.
pub fn build(root: &Path, ws: &str) -> PathBuf {
    let target_dir = match ws {
        "runbooks" => root.join("target/guests"),
        other => root.join(format!("target/guests-{}", other.replace('/', "-"))),
    };
    for dir in [ws, "sdk/rust", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let libdir = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output();
    let installed = matches!(&libdir, Ok(o) if o.status.success()
        && Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir());
    if !installed {
        panic!(
            "\n\nthe wasm32-wasip2 target is not installed: run `rustup target add wasm32-wasip2`\n\n"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root.join(ws))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--locked",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Do not leak the host build's settings into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // The same bytes wherever the repository is checked out (see reproducible.rs).
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        reproducible::encoded_rustflags(&root.join(ws), &target_dir),
    );
    let status = cmd
        .status()
        .expect("cannot run cargo for the guest workspaces");
    assert!(
        status.success(),
        "building the guest workspace {ws} failed (see the errors above)"
    );
    target_dir.join("wasm32-wasip2/release")
}

/// The components a guest workspace built: (crate name with dashes, path), sorted.
/// Only `members` are listed (the release dir is shared by several workspaces).
pub fn components(release: &Path, members: &[String]) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<(String, PathBuf)> = members
        .iter()
        .map(|m| {
            (
                m.clone(),
                release.join(format!("{}.wasm", m.replace('-', "_"))),
            )
        })
        .filter(|(_, p)| p.exists())
        .collect();
    entries.sort();
    entries
}

/// The members of a guest workspace that build components (`crate-type` has `cdylib`).
pub fn component_members(root: &Path, ws: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join(ws)).unwrap().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if !text.contains("cdylib") {
            continue;
        }
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \""))
            .and_then(|r| r.strip_suffix('"'))
            .map(String::from);
        if let Some(name) = name {
            out.push(name);
        }
    }
    out.sort();
    out
}
