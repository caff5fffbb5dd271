//! What the local agent reports about its host: platform, OS and version, init system,
//! package manager, and the service units present. Read from files only (no command is
//! run): `/etc/os-release`, the systemd unit directories, the package managers' binaries.
//! Rules see it as host labels (`os`, `os_version`, `init`, `package_manager`), planners
//! in their prompt, and runbooks that declare platforms are offered only on theirs.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One host's inventory. The default knows only the platform this binary runs on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Inventory {
    /// `linux`, `macos`, … (the Rust target's OS name).
    pub platform: String,
    /// `ID` from os-release (`debian`, `ubuntu`, `nixos`), if known.
    pub os: Option<String>,
    /// `VERSION_ID` from os-release (`12`, `24.04`), if known.
    pub os_version: Option<String>,
    /// `systemd` when it runs the host, else `unknown`.
    pub init: String,
    /// `apt`, `dnf`, `yum`, `zypper`, `apk`, `pacman`, `nix`, if one is found.
    pub package_manager: Option<String>,
    /// Service units installed (`nginx.service`), sorted; at most [`MAX_SERVICES`].
    pub services: Vec<String>,
}

impl Default for Inventory {
    fn default() -> Inventory {
        Inventory {
            platform: std::env::consts::OS.to_string(),
            os: None,
            os_version: None,
            init: "unknown".into(),
            package_manager: None,
            services: Vec::new(),
        }
    }
}

/// Most service units listed.
pub const MAX_SERVICES: usize = 500;

/// Package managers, by the binary that reveals them, in the order they are preferred.
const PACKAGE_MANAGERS: &[(&str, &str)] = &[
    ("usr/bin/apt-get", "apt"),
    ("usr/bin/dnf", "dnf"),
    ("usr/bin/yum", "yum"),
    ("usr/bin/zypper", "zypper"),
    ("sbin/apk", "apk"),
    ("usr/bin/pacman", "pacman"),
    ("run/current-system/sw/bin/nix", "nix"),
    ("nix/var/nix/profiles/default/bin/nix", "nix"),
];

/// Where unit files live, most specific first.
const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "run/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
    "run/current-system/sw/lib/systemd/system",
];

impl Inventory {
    /// The inventory of the host whose filesystem is at `root` (`/` for this host).
    pub fn detect(root: &Path) -> Inventory {
        let release = std::fs::read_to_string(root.join("etc/os-release"))
            .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
            .unwrap_or_default();
        let field = |name: &str| {
            release.lines().find_map(|l| {
                let v = l.strip_prefix(name)?.strip_prefix('=')?;
                let v = v.trim().trim_matches('"').trim_matches('\'');
                (!v.is_empty()).then(|| v.to_string())
            })
        };
        // systemd's own test for "booted with systemd" (sd_booted).
        let init = if root.join("run/systemd/system").is_dir() {
            "systemd"
        } else {
            "unknown"
        };
        let package_manager = PACKAGE_MANAGERS
            .iter()
            .find(|(bin, _)| root.join(bin).exists())
            .map(|(_, name)| name.to_string());
        let mut services = std::collections::BTreeSet::new();
        for dir in UNIT_DIRS {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Templates (`getty@.service`) are not units that run.
                if name.ends_with(".service") && !name.contains("@.") {
                    services.insert(name);
                }
            }
        }
        Inventory {
            platform: std::env::consts::OS.to_string(),
            os: field("ID"),
            os_version: field("VERSION_ID"),
            init: init.to_string(),
            package_manager,
            services: services.into_iter().take(MAX_SERVICES).collect(),
        }
    }

    /// The labels rules see, beside the configured ones (which win).
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("platform", self.platform.clone()),
            ("init", self.init.clone()),
        ];
        if let Some(v) = &self.os {
            out.push(("os", v.clone()));
        }
        if let Some(v) = &self.os_version {
            out.push(("os_version", v.clone()));
        }
        if let Some(v) = &self.package_manager {
            out.push(("package_manager", v.clone()));
        }
        out
    }

    /// One line for a planner: `linux, debian 12, systemd, apt`.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.platform.clone()];
        match (&self.os, &self.os_version) {
            (Some(os), Some(v)) => parts.push(format!("{os} {v}")),
            (Some(os), None) => parts.push(os.clone()),
            _ => {}
        }
        parts.push(format!("init {}", self.init));
        if let Some(p) = &self.package_manager {
            parts.push(format!("packages {p}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_os_release_init_package_manager_and_units_from_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "etc",
            "run/systemd/system",
            "usr/bin",
            "lib/systemd/system",
            "etc/systemd/system",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(
            r.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        std::fs::write(r.join("usr/bin/apt-get"), "").unwrap();
        for unit in ["nginx.service", "getty@.service", "ssh.socket"] {
            std::fs::write(r.join("lib/systemd/system").join(unit), "").unwrap();
        }
        std::fs::write(r.join("etc/systemd/system/php8.2-fpm.service"), "").unwrap();
        let inv = Inventory::detect(r);
        assert_eq!(inv.os.as_deref(), Some("debian"));
        assert_eq!(inv.os_version.as_deref(), Some("12"));
        assert_eq!(inv.init, "systemd");
        assert_eq!(inv.package_manager.as_deref(), Some("apt"));
        assert_eq!(inv.services, ["nginx.service", "php8.2-fpm.service"]);
        assert_eq!(
            inv.describe(),
            format!(
                "{}, debian 12, init systemd, packages apt",
                std::env::consts::OS
            )
        );
        assert!(inv.labels().contains(&("os", "debian".into())));
    }

    #[test]
    fn an_empty_root_is_an_inventory_of_unknowns() {
        let d = tempfile::tempdir().unwrap();
        let inv = Inventory::detect(d.path());
        assert_eq!(
            (inv.os, inv.init.as_str(), inv.package_manager),
            (None, "unknown", None)
        );
        assert!(inv.services.is_empty());
    }
}
