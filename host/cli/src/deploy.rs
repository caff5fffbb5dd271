//! `runwarden deploy`, `runwarden rollback` and `runwarden deployments`: signed components
//! to a tenant's hosts, through the control plane's API.

use anyhow::Context;
use clap::Args;
use runwarden_proto::{DeployRequest, DeploymentView};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `runwarden deploy NAME@VERSION --hosts SELECTOR`.
#[derive(Args)]
pub struct DeployArgs {
    /// The published release: NAME@VERSION (see `runwarden runbook published`).
    target: String,
    /// Which hosts: `*`, host ids and key=value labels, comma separated (a host is
    /// chosen when named, or when it has every label given).
    #[arg(long)]
    hosts: String,
    /// First to this share of the chosen hosts (e.g. 10%), watched, then to the rest
    /// while few enough of their runs fail.
    #[arg(long)]
    canary: Option<String>,
    /// Seconds the canaries are watched (default 300).
    #[arg(long)]
    soak: Option<u64>,
    /// The canaries' share of failed runs above which the rollout halts and they are
    /// rolled back (0 to 1; default 0.2).
    #[arg(long)]
    max_failure_rate: Option<f64>,
    #[command(flatten)]
    wait: WaitArgs,
}

/// `runwarden rollback NAME --hosts SELECTOR`.
#[derive(Args)]
pub struct RollbackArgs {
    /// The component.
    name: String,
    /// Which hosts (as for deploy).
    #[arg(long)]
    hosts: String,
    #[command(flatten)]
    wait: WaitArgs,
}

/// How long to follow a deployment.
#[derive(Args)]
pub struct WaitArgs {
    /// Return once it is started; follow it with `runwarden deployments ID`.
    #[arg(long)]
    no_wait: bool,
    /// Follow it at most this many seconds (default 600).
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `runwarden deployments [ID]`.
#[derive(Args)]
pub struct DeploymentsArgs {
    /// One deployment, host by host.
    id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The share in `10%` or `10`.
fn percent(text: &str) -> anyhow::Result<u8> {
    let n: u8 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("--canary {text:?}: a share such as 10%"))?;
    anyhow::ensure!((1..=99).contains(&n), "--canary {n}%: 1% to 99%");
    Ok(n)
}

pub fn deploy(
    args: DeployArgs,
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let Some((name, version)) = args.target.split_once('@') else {
        anyhow::bail!(
            "{:?}: name the release as NAME@VERSION (see `runwarden runbook published`)",
            crate::term::clean(&args.target)
        );
    };
    let req = DeployRequest {
        name: name.to_string(),
        version: version.to_string(),
        hosts: args.hosts,
        rollback: false,
        canary_percent: args.canary.as_deref().map(percent).transpose()?,
        soak_secs: args.soak,
        max_failure_rate: args.max_failure_rate,
    };
    start(req, &args.wait, server, data_dir)
}

pub fn rollback(
    args: RollbackArgs,
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let req = DeployRequest {
        name: args.name,
        version: String::new(),
        hosts: args.hosts,
        rollback: true,
        canary_percent: None,
        soak_secs: None,
        max_failure_rate: None,
    };
    start(req, &args.wait, server, data_dir)
}

fn start(
    req: DeployRequest,
    wait: &WaitArgs,
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let client = crate::incident::Client::new(server, data_dir)?;
    let rt = crate::publish::io()?;
    let v = rt.block_on(
        client.send(
            client
                .http
                .post(format!("{}/v1/deployments", client.base))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&req)?),
        ),
    )?;
    let mut d: DeploymentView = serde_json::from_value(v)?;
    if !wait.json {
        outln!(
            "deployment {}: {} {} — {}",
            d.id,
            d.action,
            crate::term::clean(&d.name),
            crate::term::clean(&d.detail)
        );
    }
    if !wait.no_wait {
        let deadline = Instant::now() + Duration::from_secs(wait.wait_secs);
        while !matches!(d.state.as_str(), "done" | "halted") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let v = rt.block_on(
                client.send(
                    client
                        .http
                        .get(format!("{}/v1/deployments/{}", client.base, d.id)),
                ),
            )?;
            d = serde_json::from_value(v)?;
        }
    }
    show(&d, wait.json)?;
    Ok(outcome(&d, wait.no_wait))
}

/// 0 when every host took it (or, not waiting, when it started); 1 when it halted or a
/// host refused; 3 when it is still under way.
fn outcome(d: &DeploymentView, no_wait: bool) -> ExitCode {
    if d.state == "halted" || d.hosts.iter().any(|h| h.state == "refused") {
        ExitCode::from(1)
    } else if d.state == "done" || no_wait {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn show(d: &DeploymentView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", crate::term::json_line(&serde_json::to_value(d)?));
        return Ok(());
    }
    outln!(
        "{} {} {} {} to {:?}: {} — {}",
        crate::term::clean(&d.created_at),
        d.id,
        d.action,
        crate::term::clean(&format!("{}@{}", d.name, d.version)),
        crate::term::clean(&d.selector),
        d.state,
        crate::term::clean(&d.detail)
    );
    for h in &d.hosts {
        outln!(
            "  {:<24} {:<9}{} {} {}",
            crate::term::clean(&h.host),
            h.state,
            if h.canary { " canary" } else { "" },
            crate::term::clean(if h.version.is_empty() {
                "(its own)"
            } else {
                &h.version
            }),
            crate::term::clean(&h.detail)
        );
    }
    Ok(())
}

pub fn deployments(
    args: DeploymentsArgs,
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let client = crate::incident::Client::new(server, data_dir)?;
    let rt = crate::publish::io()?;
    let list: Vec<DeploymentView> =
        match &args.id {
            Some(id) => vec![serde_json::from_value(
                rt.block_on(
                    client.send(
                        client
                            .http
                            .get(format!("{}/v1/deployments/{id}", client.base)),
                    ),
                )?,
            )?],
            None => serde_json::from_value(
                rt.block_on(
                    client.send(client.http.get(format!("{}/v1/deployments", client.base))),
                )?["deployments"]
                    .clone(),
            )?,
        };
    for d in &list {
        show(d, args.json)?;
    }
    Ok(ExitCode::SUCCESS)
}
