//! The compiler flags that make a guest build independent of where it runs: the guest
//! workspace, Cargo's home and the target directory are remapped to fixed names (`/src`,
//! `/cargo`, `/target`; the SDK is reached through a link inside the workspace), so the same
//! source, lockfile and toolchain give the same component bytes on any machine and in
//! any directory. Rust embeds no timestamps; the guest profiles strip symbols and debug
//! information. Shared by the build scripts that embed the standard runbooks and by
//! `runwarden runbook build`.

use std::path::{Path, PathBuf};

/// Cargo's home: `CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// `CARGO_ENCODED_RUSTFLAGS` for a build of the workspace at `workspace` into
/// `target_dir`. The target directory is remapped after the workspace (the compiler tries
/// the last mapping first), so one inside the other still gets its own name.
pub fn encoded_rustflags(workspace: &Path, target_dir: &Path) -> String {
    [
        format!("--remap-path-prefix={}=/src", workspace.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home().display()),
        format!("--remap-path-prefix={}=/target", target_dir.display()),
    ]
    .join("\x1f")
}
