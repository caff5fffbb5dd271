//! `runwarden`: run and inspect sandboxed remediation runbooks.

#[macro_use]
mod term;
mod archive;
mod deploy;
mod evidence;
mod fleet;
mod flywheel;
mod incident;
mod mcp;
mod memory;
mod publish;
mod report;
mod rules;
mod runbook;
mod serve;
mod trusted;

use clap::{Parser, Subcommand};

/// mimalloc: the service allocates and frees small JSON trees, records and buffers on
/// every incident from several threads; glibc's allocator spent a fifth of the CPU on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

/// WebAssembly-sandboxed runbooks with capability grants and a full trace of every host call.
#[derive(Parser)]
#[command(name = "runwarden", version, about, propagate_version = true)]
struct Cli {
    /// Data directory (compiled-artifact cache, keys). Default: $XDG_DATA_HOME/runwarden.
    #[arg(long, global = true, env = "RUNWARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    log: evidence::LogArgs,
    #[command(flatten)]
    server: incident::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write, build, inspect and run runbook components.
    #[command(subcommand)]
    Runbook(runbook::RunbookCommand),
    /// Start the control plane and a local agent (SQLite, in-process; zero configuration).
    Up(serve::UpArgs),
    /// Start the control plane of a fleet: agents over NATS JetStream (it runs nothing
    /// itself).
    Server(fleet::ServerCmd),
    /// This host's agent in a fleet: enroll once, then run.
    #[command(subcommand)]
    Agent(fleet::AgentCommand),
    /// The fleet's hosts: enrollment tokens, list, drain.
    #[command(subcommand)]
    Hosts(fleet::HostsCommand),
    /// Submit and inspect incidents through the HTTP API.
    #[command(subcommand)]
    Incident(incident::IncidentCommand),
    /// Inspect escalations: incidents a human must decide, with SLA deadlines.
    #[command(subcommand)]
    Escalation(incident::EscalationCommand),
    /// Turn repeated good L2 decisions into L1 rules.
    #[command(subcommand)]
    Flywheel(flywheel::FlywheelCommand),
    /// Serve this host's runbooks to an MCP client over stdio (relayed to the running
    /// service's /mcp with the token: the same guardrails, approvals and evidence).
    Mcp,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Compile, list and test L1 rule sets.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(evidence::KeysCommand),
    /// Publishers of components: their signing keys.
    #[command(subcommand)]
    Publisher(publish::PublisherCommand),
    /// Your tenant's trust policy: which publishers may ship which components.
    #[command(subcommand)]
    Trust(publish::TrustCommand),
    /// Deploy a published release to hosts (canaries first with --canary N%).
    Deploy(deploy::DeployArgs),
    /// Roll hosts back to what they ran before the last deployment of a component.
    Rollback(deploy::RollbackArgs),
    /// Your tenant's deployments, or one of them host by host.
    Deployments(deploy::DeploymentsArgs),
    /// Read the signed evidence log.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Reports for clinic owners: the monthly executive report.
    #[command(subcommand)]
    Report(report::ReportCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bearer token bound to a tenant; prints the secret once.
    Create {
        /// The tenant (clinic) it acts for.
        #[arg(long)]
        tenant: String,
        /// read, operate (submit incidents) or admin.
        #[arg(long)]
        scope: String,
        /// A name for people.
        #[arg(long, default_value = "api token")]
        name: String,
    },
    /// List tokens (ids, tenants, scopes; never secrets).
    List,
    /// Revoke a token by id (`tok_…`); it stops working within 5 seconds.
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// Where runwarden keeps its state.
fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("runwarden"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/runwarden")),
        None => anyhow::bail!("no data directory: set RUNWARDEN_DATA_DIR or pass --data-dir"),
    }
}

fn main() -> ExitCode {
    // Writing into a closed pipe (`runwarden evidence list | head`) ends the process
    // quietly, as other Unix tools do, instead of panicking.
    // SAFETY: first thing in main, before any other thread exists; SIG_DFL is always a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Up(_) | Command::Server(_) | Command::Agent(fleet::AgentCommand::Run { .. })
    ) {
        memory::long_running();
    }
    let result = match cli.command {
        Command::Runbook(cmd) => {
            data_dir(cli.data_dir).and_then(|d| runbook::run(cmd, d, &cli.log, &cli.server))
        }
        Command::Up(args) => data_dir(cli.data_dir).and_then(|d| serve::up(args, d, &cli.log)),
        Command::Server(cmd) => {
            data_dir(cli.data_dir).and_then(|d| fleet::server(cmd, d, &cli.log))
        }
        Command::Agent(cmd) => {
            data_dir(cli.data_dir).and_then(|d| fleet::agent(cmd, &cli.server, d, &cli.log))
        }
        Command::Hosts(cmd) => {
            data_dir(cli.data_dir).and_then(|d| fleet::hosts(cmd, &cli.server, &d))
        }
        Command::Incident(cmd) => {
            data_dir(cli.data_dir).and_then(|d| incident::run(cmd, &cli.server, &d))
        }
        Command::Escalation(cmd) => {
            data_dir(cli.data_dir).and_then(|d| incident::run_escalation(cmd, &cli.server, &d))
        }
        Command::Flywheel(cmd) => {
            data_dir(cli.data_dir).and_then(|d| flywheel::run(cmd, &cli.server, &d))
        }
        Command::Mcp => data_dir(cli.data_dir).and_then(|d| mcp::run(&cli.server, &d)),
        Command::Token(TokenCommand::Create {
            tenant,
            scope,
            name,
        }) => data_dir(cli.data_dir)
            .and_then(|d| serve::token_create(&d, &cli.log, &tenant, &scope, &name)),
        Command::Token(TokenCommand::List) => {
            data_dir(cli.data_dir).and_then(|d| serve::token_admin(&d, &cli.log, None))
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            data_dir(cli.data_dir).and_then(|d| serve::token_admin(&d, &cli.log, Some(&id)))
        }
        Command::Rules(cmd) => data_dir(cli.data_dir).and_then(|d| rules::run(cmd, d)),
        Command::Keys(cmd) => evidence::keys(cmd),
        Command::Publisher(cmd) => publish::publisher(cmd),
        Command::Trust(cmd) => {
            data_dir(cli.data_dir).and_then(|d| publish::trust(cmd, &cli.server, &d))
        }
        Command::Deploy(args) => {
            data_dir(cli.data_dir).and_then(|d| deploy::deploy(args, &cli.server, &d))
        }
        Command::Rollback(args) => {
            data_dir(cli.data_dir).and_then(|d| deploy::rollback(args, &cli.server, &d))
        }
        Command::Deployments(args) => {
            data_dir(cli.data_dir).and_then(|d| deploy::deployments(args, &cli.server, &d))
        }
        Command::Report(cmd) => data_dir(cli.data_dir).and_then(|d| report::run(cmd, &d, &cli.log)),
        Command::Evidence(cmd) => {
            data_dir(cli.data_dir).and_then(|d| evidence::evidence(cmd, &d, &cli.log))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // The context chain on one line, without repeating a cause a message already
            // quotes.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            errln!("error: {}", crate::term::clean(&msg));
            ExitCode::from(2)
        }
    }
}
