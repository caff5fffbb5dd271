//! `runwarden flywheel candidates/promote`: repeated good L2 decisions become L1 rules,
//! after a human reads the rule and its replay against past incidents.

use crate::incident::{Client, ServerArgs};
use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum FlywheelCommand {
    /// L2 signatures ready to become L1 rules, with their history.
    Candidates {
        /// Also those still collecting successes, disqualified, or promoted.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the public key the control plane signs promoted rule sets with (created in
    /// DATA_DIR/flywheel/ when absent), as a trust policy entry: once a tenant's policy and
    /// its hosts' trust it, every promotion is deployed to the tenant's hosts as the rule
    /// set `flywheel`.
    Key,
    /// Show a candidate's rule and its replay against stored incidents; deploy it once
    /// confirmed (asked on a terminal, or --yes). Needs an admin token.
    Promote {
        /// The candidate's id (`fw-…`).
        id: String,
        /// Deploy without asking.
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn print_candidate(c: &Value) {
    let service = crate::term::clean(c["service"].as_str().unwrap_or(""));
    outln!(
        "{}  {:<12} {}{} → {}: {} ok, {} failed — {}",
        crate::term::clean(c["id"].as_str().unwrap_or("?")),
        crate::term::clean(c["state"].as_str().unwrap_or("?")),
        crate::term::clean(c["incident_type"].as_str().unwrap_or("?")),
        if service.is_empty() {
            String::new()
        } else {
            format!(" on {service}")
        },
        crate::term::clean(c["runbook"].as_str().unwrap_or("?")),
        c["successes"],
        c["failures"],
        crate::term::clean(c["why"].as_str().unwrap_or(""))
    );
    if let Some(p) = c.get("params").filter(|p| !p.is_null()) {
        outln!("    rule params {p}");
    }
    for h in c["history"].as_array().into_iter().flatten().take(5) {
        outln!(
            "    {} {} {:<8} incident {}: {}",
            crate::term::clean(h["at"].as_str().unwrap_or("?")),
            crate::term::clean(h["host"].as_str().unwrap_or("?")),
            crate::term::clean(h["status"].as_str().unwrap_or("?")),
            crate::term::clean(h["incident_id"].as_str().unwrap_or("?")),
            crate::term::clean(h["summary"].as_str().unwrap_or(""))
        );
    }
}

fn print_proposal(p: &Value) {
    outln!(
        "rule {}:",
        crate::term::clean(p["candidate"]["id"].as_str().unwrap_or("?"))
    );
    for line in p["yaml"].as_str().unwrap_or("").lines() {
        outln!("  {}", crate::term::clean(line));
    }
    let r = &p["replay"];
    outln!(
        "replay against {} stored incidents: matched {}, {} resolved the same way by L2, {} ended otherwise",
        r["incidents"],
        r["matched"],
        r["agreed"],
        r["differed"]
    );
    for m in r["matches"].as_array().into_iter().flatten().take(10) {
        let would: Vec<String> = m["would_run"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{} {}",
                    crate::term::clean(a["runbook"].as_str().unwrap_or("?")),
                    a["params"]
                )
            })
            .collect();
        outln!(
            "  {} {} (then {} at {}): would run {}",
            crate::term::clean(m["received_at"].as_str().unwrap_or("?")),
            crate::term::clean(m["incident_id"].as_str().unwrap_or("?")),
            crate::term::clean(m["status"].as_str().unwrap_or("?")),
            crate::term::clean(m["tier"].as_str().unwrap_or("?")),
            would.join(", ")
        );
    }
    outln!(
        "compiled rule component sha256 {}",
        crate::term::clean(p["rule_sha256"].as_str().unwrap_or("?"))
    );
}

/// Ask on the terminal; false without one.
fn confirm(id: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    print!("deploy {} to this host now? [y/N] ", crate::term::clean(id));
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// `runwarden flywheel …`.
/// The key promoted rule sets are signed with: `DATA_DIR/flywheel/flywheel-publisher.key`,
/// made (0600) the first time it is asked for.
pub(crate) fn publisher_key(data_dir: &Path) -> anyhow::Result<runwarden_evidence::SigningKey> {
    use runwarden_evidence as ev;
    let dir = data_dir.join("flywheel");
    let key = dir.join("flywheel-publisher.key");
    if !key.exists() {
        ev::create_private_dir(&dir)?;
        match ev::write_key_pair(&dir, "flywheel-publisher") {
            // Another process made it meanwhile: read that one.
            Ok(_) | Err(ev::Error::KeyFileExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ev::read_signing_key(&key)?)
}

pub fn run(cmd: FlywheelCommand, server: &ServerArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        FlywheelCommand::Key => print_key(data_dir),
        cmd => remote(cmd, server, data_dir),
    }
}

/// `runwarden flywheel key`: the publisher key as a trust policy entry.
fn print_key(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let key = publisher_key(data_dir)?.verifying_key();
    outln!(
        "# The flywheel's publisher key (key id {}): trust it for the rule set",
        key.key_id_hex()
    );
    outln!("# `flywheel` in the tenant's trust policy and in each host's.");
    outln!("[[publishers]]");
    outln!("key = \"{}\"", key.to_text());
    outln!("components = [\"flywheel\"]");
    outln!("max_risk = \"low\"");
    outln!("rules = true");
    Ok(ExitCode::SUCCESS)
}

/// The commands that ask the control plane.
fn remote(cmd: FlywheelCommand, server: &ServerArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let client = Client::new(server, data_dir)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async {
        match cmd {
            FlywheelCommand::Key => print_key(data_dir),
            FlywheelCommand::Candidates { all, json } => {
                let v = client
                    .send(
                        client
                            .http
                            .get(format!("{}/v1/flywheel/candidates", client.base)),
                    )
                    .await?;
                let list: Vec<&Value> = v["candidates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| all || c["state"] == "candidate")
                    .collect();
                if list.is_empty() && !json {
                    outln!(
                        "no candidates yet: a signature needs repeated successful L2 resolutions \
                         and no failure (--all shows them all)"
                    );
                }
                for c in list {
                    if json {
                        println!("{}", crate::term::json_line(c));
                    } else {
                        print_candidate(c);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            FlywheelCommand::Promote { id, yes, json } => {
                let url = format!("{}/v1/flywheel/candidates/{id}/promote", client.base);
                let proposal = client
                    .send(
                        client
                            .http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(r#"{"confirm": false}"#),
                    )
                    .await?;
                if !json {
                    print_proposal(&proposal);
                }
                if !(yes || confirm(&id)?) {
                    if json {
                        println!("{}", crate::term::json_line(&proposal));
                    }
                    errln!("not deployed: confirm on a terminal, or pass --yes");
                    return Ok(ExitCode::from(1));
                }
                let done = client
                    .send(
                        client
                            .http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(
                                serde_json::json!({
                                    "confirm": true,
                                    "rule_sha256": proposal["rule_sha256"],
                                })
                                .to_string(),
                            ),
                    )
                    .await?;
                if json {
                    println!("{}", crate::term::json_line(&done));
                } else {
                    outln!(
                        "deployed {id}: written to {}, evidence record {}",
                        crate::term::clean(done["path"].as_str().unwrap_or("?")),
                        done["evidence_index"]
                    );
                    if let Some(d) = done["distributed"].as_str() {
                        outln!("to the hosts: {}", crate::term::clean(d));
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
