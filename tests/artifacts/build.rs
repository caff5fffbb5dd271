//! Builds the guest workspaces (`runbooks/`, `tests/guests/`) for wasm32-wasip2 and
//! writes a table of the components' paths for host tests and benches.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let target_dir = root.join("target/guests");
    for dir in ["runbooks", "tests/guests", "sdk/rust", "wit"] {
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
    for ws in ["runbooks", "tests/guests"] {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root.join(ws))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--workspace",
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
        let status = cmd
            .status()
            .expect("cannot run cargo for the guest workspaces");
        assert!(
            status.success(),
            "building the guest workspace {ws} failed (see the errors above)"
        );
    }

    let release = target_dir.join("wasm32-wasip2/release");
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(&release)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().replace('_', "-"),
                p,
            )
        })
        .collect();
    entries.sort();
    let mut code = String::from(
        "/// Every guest component built for the tests: (name, path).\npub const COMPONENTS: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &entries {
        code.push_str(&format!(
            "    ({name:?}, {:?}),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(out, code).unwrap();
}
