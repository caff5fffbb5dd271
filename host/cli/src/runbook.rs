//! `runwarden runbook …`

use anyhow::{Context, bail};
use clap::Subcommand;
use runwarden_runtime::{Invocation, Policy, RunOptions, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[path = "../../guests/reproducible.rs"]
mod reproducible;

#[derive(Subcommand)]
pub enum RunbookCommand {
    /// Scaffold a new runbook crate from the SDK template.
    New {
        /// Runbook name: lower-case letters, digits and dashes.
        name: String,
        /// Parent directory to create the crate in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to the runwarden Rust SDK (sdk/rust). Default: the SDK of this source tree.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a runbook crate to a component, reproducibly (paths remapped, dependencies
    /// pinned by Cargo.lock), and print the .wasm path; what it was built from goes to
    /// COMPONENT.wasm.build.json, which `runbook sign` puts into the release.
    Build {
        /// The crate (or guest workspace) directory.
        dir: PathBuf,
    },
    /// Sign a component as its publisher: a DSSE envelope over its SHA-256 together with
    /// its manifest, name and version (COMPONENT.release.json unless --out).
    Sign {
        /// The component.
        file: PathBuf,
        /// The publisher's private key (`runwarden publisher keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the release. Default: COMPONENT.release.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check a component against its release and a trust policy, as an agent does before
    /// it loads one: the publisher's signature, the bytes, and what the policy lets that
    /// publisher ship. Exit status 1 when refused.
    Verify {
        /// The component.
        file: PathBuf,
        /// The trust policy (TOML: [[publishers]] key, components, max_risk, rules;
        /// [minimum_versions]).
        #[arg(long)]
        trust: PathBuf,
        /// Its release. Default: COMPONENT.release.json.
        #[arg(long)]
        release: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Publish a component and its signed release into the control plane's registry
    /// (admin token); the tenant's trust policy must admit it.
    Publish {
        /// The component.
        file: PathBuf,
        /// Its release. Default: COMPONENT.release.json.
        #[arg(long)]
        release: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the components your tenant published, newest first.
    Published {
        /// Only this component.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a component's manifest and SHA-256.
    Describe {
        /// The component.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a component once under a host policy.
    Run {
        /// The component.
        file: PathBuf,
        /// The host policy (TOML).
        #[arg(long)]
        policy: PathBuf,
        /// Params as a JSON object, or @FILE to read them from a file.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Simulate mutating calls (service changes, exec, non-GET HTTP, file changes).
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Tenant (clinic) this run is for, recorded in the evidence.
        #[arg(long, default_value = "local", env = "RUNWARDEN_TENANT")]
        tenant: String,
        /// Host signing key. Default: DATA_DIR/signing-keys/HOST_ID.key, created on first use.
        #[arg(long, env = "RUNWARDEN_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
    },
}

pub fn run(
    cmd: RunbookCommand,
    data_dir: PathBuf,
    log: &crate::evidence::LogArgs,
    server: &crate::incident::ServerArgs,
) -> anyhow::Result<ExitCode> {
    match cmd {
        RunbookCommand::Publish {
            file,
            release,
            json,
        } => crate::publish::publish(server, &data_dir, &file, release, json),
        RunbookCommand::Published { name, json } => {
            crate::publish::published(server, &data_dir, name, json)
        }
        RunbookCommand::New { name, dir, sdk } => new(&name, &dir, sdk).map(|_| ExitCode::SUCCESS),
        RunbookCommand::Build { dir } => {
            outln!("{}", build(&dir)?.display());
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Sign { file, key, out } => crate::publish::sign(data_dir, &file, &key, out),
        RunbookCommand::Verify {
            file,
            trust,
            release,
            json,
        } => crate::publish::verify(data_dir, &file, release, &trust, json),
        RunbookCommand::Describe { file, json } => {
            let rt = runtime(data_dir)?;
            let loaded = load(&rt, &file)?;
            let m = loaded.manifest();
            if json {
                let mut v = serde_json::to_value(m)?;
                v["sha256"] = loaded.sha256().into();
                println!(
                    "{}",
                    crate::term::json_text(serde_json::to_string_pretty(&v)?)
                );
            } else {
                outln!(
                    "{} {} — {}",
                    crate::term::clean(&m.name),
                    crate::term::clean(&m.version),
                    crate::term::clean(&m.summary)
                );
                outln!("sha256:       {}", loaded.sha256());
                outln!(
                    "risk:         {}",
                    serde_json::to_value(m.risk)?.as_str().unwrap_or("?")
                );
                let platforms = if m.platforms.is_empty() {
                    "any".to_string()
                } else {
                    m.platforms.join(", ")
                };
                outln!("platforms:    {}", crate::term::clean(&platforms));
                outln!("capabilities:");
                for c in &m.capabilities {
                    outln!("  - {}", crate::term::clean(&c.to_string()));
                }
                outln!(
                    "params schema: {}",
                    serde_json::to_string_pretty(&m.params_schema)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Run {
            file,
            policy,
            params,
            dry_run,
            json,
            tenant,
            signing_key,
        } => {
            let policy = Arc::new(Policy::load(&policy)?);
            let params = parse_params(&params)?;
            let rt = runtime(data_dir.clone())?;
            let loaded = load(&rt, &file)?;
            let inv = rt.invoke(
                &loaded,
                &policy,
                RunOptions {
                    params,
                    dry_run,
                    invocation_id: None,
                },
            );
            // Every run is recorded, refused and failed ones included. If the record cannot
            // be written the run is still reported, and the command fails.
            let recorded =
                crate::evidence::record(&data_dir, log, signing_key.as_deref(), &tenant, &inv);
            if json {
                let mut v = serde_json::to_value(&inv)?;
                if let Ok(index) = &recorded {
                    v["evidence_index"] = (*index).into();
                }
                println!("{}", crate::term::json_line(&v));
            } else {
                print_human(&inv);
                if let Ok(index) = &recorded {
                    outln!("evidence: record {index}");
                }
            }
            recorded.context("the run happened but its evidence record could not be written")?;
            Ok(if inv.outcome.status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

pub(crate) fn runtime(data_dir: PathBuf) -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig { data_dir })?)
}

pub(crate) fn load(rt: &Runtime, file: &Path) -> anyhow::Result<Arc<runwarden_runtime::Loaded>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    rt.load(&bytes)
        .with_context(|| format!("{}", file.display()))
}

fn parse_params(text: &str) -> anyhow::Result<serde_json::Value> {
    let (text, origin) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read params file {path}"))?,
            path.to_string(),
        ),
        None => (text.to_string(), "--params".to_string()),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{origin} is not valid JSON"))?;
    if !v.is_object() {
        bail!("{origin} must be a JSON object, e.g. '{{\"unit\": \"nginx.service\"}}'");
    }
    Ok(v)
}

fn print_human(inv: &Invocation) {
    let status = serde_json::to_value(inv.outcome.status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    outln!(
        "{} {} (sha256 {}…) on {}{}",
        crate::term::clean(&inv.runbook),
        crate::term::clean(&inv.version),
        &inv.sha256[..12],
        inv.host_id,
        if inv.dry_run { " [dry run]" } else { "" }
    );
    outln!(
        "status: {status} — {}",
        crate::term::clean(&inv.outcome.summary)
    );
    if !inv.trace.is_empty() {
        outln!("trace:");
        for e in &inv.trace {
            outln!(
                "  #{:<3} {}.{} {} → {}{}{} ({} µs)",
                e.seq,
                e.interface,
                e.function,
                e.args,
                e.result,
                if e.allowed { "" } else { " DENIED" },
                if e.dry_run { " [simulated]" } else { "" },
                e.duration_us
            );
        }
    }
    for (name, text) in [("stdout", &inv.stdout), ("stderr", &inv.stderr)] {
        if !text.is_empty() {
            // The guest's own lines, each marked as its output so none can pass for ours.
            outln!("{name}:");
            for l in text.trim_end().lines() {
                outln!("  | {}", crate::term::clean(l));
            }
        }
    }
    outln!(
        "invocation {} in {:.1} ms, fuel {}",
        inv.invocation_id,
        inv.duration_us as f64 / 1000.0,
        inv.fuel_consumed
    );
}

/// Build a guest crate for wasm32-wasip2 and return the component path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: pass the runbook crate's directory",
            dir.display()
        );
    }
    ensure_wasip2_target()?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let (workspace, target_dir) = workspace_of(&dir.join("Cargo.toml"))?;
    let locked = workspace.join("Cargo.lock").is_file();
    if !locked {
        errln!(
            "warning: {} has no Cargo.lock: dependencies are not pinned, so this build cannot be reproduced until one is committed",
            workspace.display()
        );
    }
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format=json-render-diagnostics",
    ]);
    if locked {
        cmd.arg("--locked");
    }
    cmd.arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env_remove("RUSTFLAGS")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            reproducible::encoded_rustflags(&workspace, &target_dir),
        );
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo build failed for {}", dir.display());
    }
    let mut wasm = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            for f in msg["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    wasm.push(PathBuf::from(f));
                }
            }
        }
    }
    let built = match wasm.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "cargo built no .wasm in {}: is it a `crate-type = [\"cdylib\"]` runbook crate?",
            dir.display()
        ),
        many => bail!(
            "{} built {} components; build one runbook crate at a time",
            dir.display(),
            many.len()
        ),
    };
    let info = build_info(&dir, &workspace, locked)?;
    let info_file = build_info_path(&built);
    runwarden_evidence::write_atomic(&info_file, format!("{info:#}\n").as_bytes())
        .with_context(|| format!("cannot write {}", info_file.display()))?;
    let bytes =
        std::fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    errln!(
        "built {} (sha256 {}) from source {}; build info in {}",
        built.display(),
        runwarden_evidence::component_sha256(&bytes),
        info["source_sha256"].as_str().unwrap_or("?"),
        info_file.display()
    );
    Ok(built)
}

/// Where `runbook build` notes what a component was built from: `COMPONENT.build.json`.
pub fn build_info_path(component: &Path) -> PathBuf {
    crate::publish::beside(component, ".build.json")
}

/// The workspace root of the crate whose manifest is `manifest`, and its target
/// directory.
fn workspace_of(manifest: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(manifest)
            .output()
            .context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "cargo cannot read the workspace of {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata")?;
    let path = |k: &str| {
        v[k].as_str()
            .map(PathBuf::from)
            .with_context(|| format!("cargo metadata says no {k}"))
    };
    Ok((path("workspace_root")?, path("target_directory")?))
}

/// `git -C dir ARGS`' output, if git answers.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn tool_version(tool: &str) -> String {
    std::process::Command::new(tool)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// What a component was built from: the SHA-256 over the crate's files and its
/// workspace's Cargo.toml and Cargo.lock (each path, relative to the workspace, and
/// its bytes, in path order; `target/` and hidden files left out), the git commit when
/// the checkout is clean, the toolchain and how it was built.
fn build_info(dir: &Path, workspace: &Path, locked: bool) -> anyhow::Result<serde_json::Value> {
    let source_root = workspace;
    let mut files = Vec::new();
    collect_sources(dir, &mut files)?;
    for f in ["Cargo.toml", "Cargo.lock"] {
        let p = workspace.join(f);
        if p.is_file() && !files.contains(&p) {
            files.push(p);
        }
    }
    let rel = |p: &Path| {
        p.strip_prefix(source_root)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    files.sort_by_key(|p| rel(p));
    let mut stream = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        stream.extend_from_slice(rel(f).as_bytes());
        stream.push(0);
        stream.extend_from_slice(bytes.len().to_string().as_bytes());
        stream.push(0);
        stream.extend_from_slice(&bytes);
    }
    let clean =
        git(source_root, &["status", "--porcelain", "--", "."]).is_some_and(|s| s.is_empty());
    Ok(serde_json::json!({
        "source_sha256": runwarden_evidence::component_sha256(&stream),
        "source_files": files.len(),
        "crate": rel(dir),
        "git_commit": if clean { git(source_root, &["rev-parse", "HEAD"]) } else { None },
        "toolchain": tool_version("rustc"),
        "cargo": tool_version("cargo"),
        "target": "wasm32-wasip2",
        "profile": "release",
        "locked": locked,
        "paths": {"workspace": "/src", "cargo_home": "/cargo", "target": "/target"},
    }))
}

fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_sources(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn ensure_wasip2_target() -> anyhow::Result<()> {
    let out = std::process::Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success() && Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir());
    if !ok {
        bail!("the wasm32-wasip2 target is not installed: run `rustup target add wasm32-wasip2`");
    }
    Ok(())
}

fn new(name: &str, parent: &Path, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        bail!(
            "runbook name {name:?} must be lower-case letters, digits and dashes, e.g. `check-disk`"
        );
    }
    let sdk = match sdk {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/rust"),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "runwarden SDK not found at {}: pass --sdk PATH/TO/sdk/rust",
            sdk.display()
        )
    })?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    let files = [
        ("Cargo.toml", include_str!("../template/Cargo.toml.tmpl")),
        (
            ".cargo/config.toml",
            include_str!("../template/config.toml.tmpl"),
        ),
        ("src/lib.rs", include_str!("../template/lib.rs.tmpl")),
        (".gitignore", "/target\n"),
    ];
    for (path, text) in files {
        let text = text
            .replace("{{name}}", name)
            .replace("{{sdk}}", &sdk.display().to_string());
        std::fs::write(dir.join(path), text).with_context(|| format!("cannot write {path}"))?;
    }
    outln!("created {}", dir.display());
    outln!("build it with: runwarden runbook build {}", dir.display());
    Ok(())
}
