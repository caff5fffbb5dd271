//! `runwarden rules`: compile YAML rule sets into a rule component, list and test it.

use anyhow::{Context, bail};
use clap::Subcommand;
use runwarden_control::Incident;
use runwarden_control::rules::{self, RunbookParams};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Compile YAML rule sets into one L1 rule component (rule engine + rules).
    Compile {
        /// Rule set files, evaluated in this order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the component.
        #[arg(short, long)]
        out: PathBuf,
        /// Also accept the runbook components in DIR as action targets (the standard
        /// runbooks always are).
        #[arg(long)]
        runbooks: Option<PathBuf>,
    },
    /// Sign a rule component as a release of publisher KEY (DSSE, Ed25519): its sha256,
    /// the name and version given, and the rules it holds. Publish and deploy it like a
    /// runbook (`runwarden runbook publish`, `runwarden deploy NAME@VERSION`).
    #[command(disable_version_flag = true)]
    Sign {
        /// The rule component (`runwarden rules compile`).
        rules: PathBuf,
        /// The rule set's name (lowercase letters, digits and -).
        #[arg(long)]
        name: String,
        /// Its version (MAJOR.MINOR.PATCH).
        #[arg(long = "version", id = "set_version", value_name = "VERSION")]
        set_version: String,
        /// The publisher's private key (`runwarden publisher keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the release. Default: RULES.release.json.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the rules a rule component holds.
    List {
        /// The rule component.
        rules: PathBuf,
        /// One JSON object per rule.
        #[arg(long)]
        json: bool,
    },
    /// Show which rule matches an incident and what it decides.
    Test {
        /// The rule component.
        rules: PathBuf,
        /// The incident, as JSON.
        incident: PathBuf,
        /// A label of the incident's host (`role=db`); repeat for more.
        #[arg(long = "host-label", value_name = "KEY=VALUE")]
        host_labels: Vec<String>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The runbooks rules may name: the standard ones, plus any in `dir`.
pub(crate) fn catalog(
    rt: &runwarden_runtime::Runtime,
    dir: Option<&Path>,
) -> anyhow::Result<HashMap<String, RunbookParams>> {
    let mut out = HashMap::new();
    let mut add = |bytes: &[u8], origin: &str| -> anyhow::Result<()> {
        let l = rt
            .load(bytes)
            .with_context(|| format!("runbook {origin}"))?;
        out.insert(
            l.manifest().name.clone(),
            RunbookParams::from_schema(&l.manifest().params_schema),
        );
        Ok(())
    };
    for (name, bytes) in runwarden_guests::standard_runbooks() {
        add(bytes, name)?;
    }
    if let Some(dir) = dir {
        for p in wasm_files(dir)? {
            let bytes = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
            // Rule components and other non-runbooks in the directory are skipped.
            if rt.load(&bytes).is_ok() {
                add(&bytes, &p.display().to_string())?;
            }
        }
    }
    Ok(out)
}

/// The `.wasm` files directly in `dir`, sorted.
pub(crate) fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("runbooks dir {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Write `bytes` to `path` whole or not at all.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("write {}", path.display())
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn run(cmd: RulesCommand, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let rt = crate::runbook::runtime(data_dir)?;
    match cmd {
        RulesCommand::Compile {
            files,
            out,
            runbooks,
        } => {
            let sources = files
                .iter()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .with_context(|| format!("read rule set {}", f.display()))
                        .map(|t| (f.display().to_string(), t))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let catalog = catalog(&rt, runbooks.as_deref())?;
            let program = rules::compile(&sources, Some(&catalog))?;
            let wasm = rules::embed(runwarden_guests::rule_engine(), &program.to_bytes())?;
            // Load it once before writing: what is written is known to work.
            let set = rt
                .load_rules(&wasm)
                .context("the compiled rule component")?;
            write_atomically(&out, &wasm)?;
            outln!(
                "compiled {} rule(s) from {} file(s) into {} (sha256 {})",
                set.rules().len(),
                files.len(),
                out.display(),
                sha256_hex(&wasm)
            );
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Sign {
            rules,
            name,
            set_version,
            key,
            out,
        } => crate::publish::sign_rules(&rt, &rules, &name, &set_version, &key, out),
        RulesCommand::List { rules, json } => {
            let bytes =
                std::fs::read(&rules).with_context(|| format!("read {}", rules.display()))?;
            let set = rt.load_rules(&bytes)?;
            for r in set.rules() {
                if json {
                    println!(
                        "{}",
                        crate::term::json_line(
                            &serde_json::json!({"id": r.id, "summary": r.summary, "runbooks": r.runbooks})
                        )
                    );
                } else {
                    outln!(
                        "{:<28} {:<40} {}",
                        crate::term::clean(&r.id),
                        crate::term::clean(&r.runbooks.join(" → ")),
                        crate::term::clean(&r.summary)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test {
            rules,
            incident,
            host_labels,
            json,
        } => {
            let bytes =
                std::fs::read(&rules).with_context(|| format!("read {}", rules.display()))?;
            let set = rt.load_rules(&bytes)?;
            let text = std::fs::read(&incident)
                .with_context(|| format!("read incident {}", incident.display()))?;
            let inc = Incident::from_json(&text)
                .with_context(|| format!("incident {}", incident.display()))?;
            let mut labels = BTreeMap::new();
            for l in &host_labels {
                let Some((k, v)) = l.split_once('=') else {
                    bail!("--host-label {l:?}: write KEY=VALUE");
                };
                labels.insert(k.to_string(), v.to_string());
            }
            let now = runwarden_evidence::now_rfc3339();
            let decision = rt.evaluate(
                &set,
                &runwarden_control::rule_input(&inc, "test", &labels, &now),
            )?;
            let Some(d) = decision else {
                if json {
                    outln!("{}", serde_json::json!({"matched": false}));
                } else {
                    outln!("no rule matched (tier L1 would not act; the incident would go to L2)");
                }
                return Ok(ExitCode::from(1));
            };
            let actions: Vec<serde_json::Value> = d
                .actions
                .iter()
                .map(|a| {
                    serde_json::json!({"runbook": a.runbook,
                        "params": serde_json::from_str::<serde_json::Value>(&a.params).unwrap_or(serde_json::Value::Null)})
                })
                .collect();
            if json {
                println!(
                    "{}",
                    crate::term::json_line(
                        &serde_json::json!({"matched": true, "rule_id": d.rule_id, "actions": actions,
                        "dry_run": d.dry_run, "cooldown_secs": d.cooldown_secs,
                        "rules_sha256": set.sha256()})
                    )
                );
            } else {
                outln!("rule {} matched", crate::term::clean(&d.rule_id));
                for a in &d.actions {
                    outln!(
                        "  run {} {}",
                        crate::term::clean(&a.runbook),
                        crate::term::clean(&a.params)
                    );
                }
                if d.dry_run {
                    outln!("  (dry run only)");
                }
                if let Some(c) = d.cooldown_secs {
                    outln!("  cooldown {c} s per (host, runbook)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
