//! `runwarden incident submit/list/show` and `runwarden escalation list/show`: the HTTP
//! API from the command line.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the server is and who is asking.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The runwarden server (default: the local `runwarden up`).
    #[arg(long, global = true, env = "RUNWARDEN_SERVER")]
    server: Option<String>,
    /// API token (default: RUNWARDEN_TOKEN, else DATA_DIR/admin-token).
    #[arg(long, global = true, env = "RUNWARDEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ServerArgs {
    /// The server's base URL as given (`--server`, `RUNWARDEN_SERVER`), without a
    /// trailing `/`.
    pub(crate) fn server(&self) -> Option<String> {
        self.server
            .as_deref()
            .map(|s| s.trim_end_matches('/').to_string())
    }
}

#[derive(Subcommand)]
pub enum IncidentCommand {
    /// Submit an incident (JSON) and wait for its final state.
    Submit {
        /// The incident, as JSON (`-` for stdin).
        file: PathBuf,
        /// Return as soon as it is accepted instead of waiting for the outcome.
        #[arg(long)]
        no_wait: bool,
        /// Print the incident record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List incidents, newest first.
    List {
        /// Only this status (healed, no-op, failed, escalated, suppressed, awaiting_approval).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident.
    Show {
        /// Its id.
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum EscalationCommand {
    /// List escalations (incidents a human must decide), newest first.
    List {
        /// Only this state (open, acknowledged, approved, denied, expired, resolved).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one escalation.
    Show {
        /// Its id (`esc_…`).
        id: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve it: the proposed runbook runs now, with your token's identity in its evidence.
    Approve {
        /// Its id.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Deny it: nothing runs, and the denial is recorded.
    Deny {
        /// Its id.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Resolve it: it was fixed another way (by hand); nothing runs, and that is recorded.
    Resolve {
        /// Its id.
        id: String,
        /// How, for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Acknowledge it: someone is on it.
    Ack {
        /// Its id.
        id: String,
        /// A note.
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn print_escalation(e: &serde_json::Value) {
    let s = |k: &str| crate::term::clean(e[k].as_str().unwrap_or("")).into_owned();
    outln!(
        "escalation {}: {}{} ({} incident {}, host {})",
        s("id"),
        s("state"),
        if e["breached"] == true {
            ", SLA BREACHED"
        } else {
            ""
        },
        s("severity"),
        s("incident_id"),
        s("host")
    );
    outln!("  {}", s("reason"));
    outln!(
        "  raised {}, decide by {}",
        s("created_at"),
        s("sla_deadline")
    );
    if let Some(p) = e.get("proposal").filter(|p| !p.is_null()) {
        outln!(
            "  proposed: run {} {}",
            crate::term::clean(p["runbook"].as_str().unwrap_or("?")),
            p["params"]
        );
    }
    if !s("decided_by").is_empty() {
        outln!(
            "  decided by {} at {}: {}",
            s("decided_by"),
            s("decided_at"),
            s("note")
        );
    }
    for n in e["notifications"].as_array().into_iter().flatten() {
        let attempts = n["attempts"].as_u64().unwrap_or(0);
        let status = crate::term::clean(n["status"].as_str().unwrap_or("?"));
        let outcome = match attempts {
            0 => status.to_string(),
            1 => format!("{status} after 1 attempt"),
            _ => format!("{status} after {attempts} attempts"),
        };
        let error = crate::term::clean(n["last_error"].as_str().unwrap_or(""));
        outln!(
            "  notified {} of {} at {}: {outcome}{}",
            crate::term::clean(n["webhook"].as_str().unwrap_or("?")),
            crate::term::clean(n["event"].as_str().unwrap_or("?")),
            crate::term::clean(n["at"].as_str().unwrap_or("?")),
            if error.is_empty() {
                String::new()
            } else {
                format!(": {error}")
            }
        );
    }
}

/// `runwarden escalation …`.
pub fn run_escalation(
    cmd: EscalationCommand,
    server: &ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(server, data_dir)?;
    let cmd_name = match &cmd {
        EscalationCommand::Approve { .. } => "approve",
        EscalationCommand::Deny { .. } => "deny",
        EscalationCommand::Resolve { .. } => "resolve",
        _ => "other",
    };
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async {
        match cmd {
            EscalationCommand::List { state, limit, json } => {
                let mut req = client
                    .http
                    .get(format!("{}/v1/escalations", client.base))
                    .query(&[("limit", limit.to_string())]);
                if let Some(s) = &state {
                    req = req.query(&[("state", s)]);
                }
                let v = client.send(req).await?;
                for e in v["escalations"].as_array().into_iter().flatten() {
                    if json {
                        println!("{}", crate::term::json_line(e));
                    } else {
                        outln!(
                            "{}  {:<12} {:<9} decide by {}{}  {}",
                            crate::term::clean(e["id"].as_str().unwrap_or("?")),
                            crate::term::clean(e["state"].as_str().unwrap_or("?")),
                            crate::term::clean(e["severity"].as_str().unwrap_or("?")),
                            crate::term::clean(e["sla_deadline"].as_str().unwrap_or("?")),
                            if e["breached"] == true {
                                " BREACHED"
                            } else {
                                ""
                            },
                            crate::term::clean(e["reason"].as_str().unwrap_or(""))
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            EscalationCommand::Show { id, json } => {
                let v = client
                    .send(
                        client
                            .http
                            .get(format!("{}/v1/escalations/{id}", client.base)),
                    )
                    .await?;
                if json {
                    println!("{}", crate::term::json_line(&v));
                } else {
                    print_escalation(&v);
                }
                Ok(ExitCode::SUCCESS)
            }
            EscalationCommand::Approve { id, note }
            | EscalationCommand::Deny { id, note }
            | EscalationCommand::Resolve { id, note }
            | EscalationCommand::Ack { id, note } => {
                let verb = match cmd_name {
                    "approve" | "deny" | "resolve" => cmd_name,
                    _ => "acknowledge",
                };
                let v = client
                    .send(
                        client
                            .http
                            .post(format!("{}/v1/escalations/{id}/{verb}", client.base))
                            .header("content-type", "application/json")
                            .body(serde_json::json!({ "note": note }).to_string()),
                    )
                    .await?;
                print_escalation(&v["escalation"]);
                print_record(&v["incident"]);
                let ok = matches!(v["incident"]["status"].as_str(), Some("healed" | "no-op"))
                    || verb != "approve";
                Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    })
}

/// An API client: the server's base URL, the token, and one connection pool.
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(args: &ServerArgs, data_dir: &Path) -> anyhow::Result<Client> {
        // On an enrolled host, its agent's local intake and token are the default.
        let agent = data_dir.join("agent.json").exists();
        let base = args
            .server
            .clone()
            .unwrap_or_else(|| {
                let listen = if agent {
                    crate::serve::AGENT_LISTEN
                } else {
                    crate::serve::DEFAULT_LISTEN
                };
                format!("http://{listen}")
            })
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base:?}: give a URL like http://127.0.0.1:8640");
        }
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let f = data_dir.join(if agent {
                    crate::serve::LOCAL_TOKEN
                } else {
                    "admin-token"
                });
                std::fs::read_to_string(&f)
                    .with_context(|| {
                        format!(
                            "no API token: pass --token or set RUNWARDEN_TOKEN (or start `runwarden up` or `runwarden agent run`, which write {})",
                            f.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("http client")?;
        Ok(Client { base, token, http })
    }

    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<serde_json::Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach runwarden at {}", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the response")?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(
            |_| serde_json::json!({"error": {"message": String::from_utf8_lossy(&body)}}),
        );
        if !status.is_success() {
            let msg = v["error"]["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            bail!("the server answered {status}: {msg}");
        }
        Ok(v)
    }
}

fn print_record(v: &serde_json::Value) {
    outln!(
        "incident {}: {} (tier {})",
        crate::term::clean(v["id"].as_str().unwrap_or("?")),
        crate::term::clean(v["status"].as_str().unwrap_or("?")),
        crate::term::clean(v["tier"].as_str().unwrap_or("?"))
    );
    if let Some(r) = v["reason"].as_str().filter(|r| !r.is_empty()) {
        outln!("  {}", crate::term::clean(r));
    }
    if let Some(d) = v.get("decision").filter(|d| !d.is_null()) {
        match d.get("planner").filter(|p| !p.is_null()) {
            Some(p) => outln!(
                "  planner {} {} (confidence {:.2}): {}",
                crate::term::clean(p["provider"].as_str().unwrap_or("?")),
                crate::term::clean(p["model"].as_str().unwrap_or("?")),
                p["confidence"].as_f64().unwrap_or(0.0),
                crate::term::clean(p["rationale"].as_str().unwrap_or(""))
            ),
            None => outln!(
                "  rule {}",
                crate::term::clean(d["rule_id"].as_str().unwrap_or("?"))
            ),
        }
    }
    for g in v["guardrails"].as_array().into_iter().flatten() {
        outln!(
            "  guardrail {:<16} {:<15} {}",
            crate::term::clean(g["guardrail"].as_str().unwrap_or("?")),
            crate::term::clean(g["verdict"].as_str().unwrap_or("?")),
            crate::term::clean(g["detail"].as_str().unwrap_or(""))
        );
    }
    for r in v["runs"].as_array().into_iter().flatten() {
        outln!(
            "  ran {}{}: {} — {} (evidence record {})",
            crate::term::clean(r["runbook"].as_str().unwrap_or("?")),
            if r["dry_run"] == true {
                " (dry run)"
            } else {
                ""
            },
            crate::term::clean(r["status"].as_str().unwrap_or("?")),
            crate::term::clean(r["summary"].as_str().unwrap_or("")),
            r["evidence_index"]
        );
    }
    if let Some(id) = v["escalation"].as_str() {
        let id = crate::term::clean(id);
        outln!("  escalation {id}: `runwarden escalation show {id}`");
    }
    if let Some(e) = v["evidence"].as_array().filter(|e| !e.is_empty()) {
        let list: Vec<String> = e.iter().map(|x| x.to_string()).collect();
        outln!("  evidence: {}", list.join(", "));
    }
}

pub fn run(cmd: IncidentCommand, server: &ServerArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let client = Client::new(server, data_dir)?;
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    io.block_on(async {
        match cmd {
            IncidentCommand::Submit {
                file,
                no_wait,
                json,
            } => {
                let body = if file.as_os_str() == "-" {
                    let mut s = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)
                        .context("read the incident from stdin")?;
                    s
                } else {
                    std::fs::read(&file)
                        .with_context(|| format!("read incident {}", file.display()))?
                };
                // Checked here too, so a typo is caught before the network.
                runwarden_control::Incident::from_json(&body)
                    .with_context(|| format!("incident {}", file.display()))?;
                let url = format!(
                    "{}/v1/incidents{}",
                    client.base,
                    if no_wait { "" } else { "?wait=true" }
                );
                let v = client
                    .send(
                        client
                            .http
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body),
                    )
                    .await?;
                if json {
                    println!("{}", crate::term::json_line(&v));
                } else {
                    print_record(&v);
                }
                let ok = matches!(
                    v["status"].as_str(),
                    Some("healed" | "no-op" | "processing")
                );
                Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            IncidentCommand::List {
                status,
                limit,
                json,
            } => {
                let mut req = client
                    .http
                    .get(format!("{}/v1/incidents", client.base))
                    .query(&[("limit", limit.to_string())]);
                if let Some(s) = &status {
                    req = req.query(&[("status", s)]);
                }
                let v = client.send(req).await?;
                for i in v["incidents"].as_array().into_iter().flatten() {
                    if json {
                        println!("{}", crate::term::json_line(i));
                    } else {
                        outln!(
                            "{}  {:<19} {:<18} {:<24} {}",
                            crate::term::clean(i["id"].as_str().unwrap_or("?")),
                            i["received_at"]
                                .as_str()
                                .unwrap_or("?")
                                .get(..19)
                                .unwrap_or("?"),
                            crate::term::clean(i["status"].as_str().unwrap_or("?")),
                            format!(
                                "{} {}",
                                crate::term::clean(i["incident"]["type"].as_str().unwrap_or("?")),
                                crate::term::clean(i["incident"]["service"].as_str().unwrap_or(""))
                            ),
                            crate::term::clean(i["incident"]["host"].as_str().unwrap_or("?")),
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            IncidentCommand::Show { id, json } => {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    bail!("incident id {id:?}: ids are UUIDs");
                }
                let v = client
                    .send(
                        client
                            .http
                            .get(format!("{}/v1/incidents/{id}", client.base)),
                    )
                    .await?;
                if json {
                    println!("{}", crate::term::json_line(&v));
                } else {
                    print_record(&v);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
