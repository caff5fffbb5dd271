//! The compiler flags that make a guest build independent of where it runs: the source
//! tree and Cargo's home are remapped to fixed names (`/src`, `/cargo`), so the same
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

/// `CARGO_ENCODED_RUSTFLAGS` for a build whose sources are under `source_root`.
pub fn encoded_rustflags(source_root: &Path) -> String {
    [
        format!("--remap-path-prefix={}=/src", source_root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home().display()),
    ]
    .join("\x1f")
}
