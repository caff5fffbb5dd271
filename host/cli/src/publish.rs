//! Publishers and signed releases: `runwarden publisher keygen`, `runwarden runbook sign`
//! and `runwarden runbook verify`.

use anyhow::Context;
use clap::Subcommand;
use runwarden_evidence as ev;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PublisherCommand {
    /// Generate a publisher's Ed25519 key pair: NAME.key (0600, keep it off the fleet) and
    /// NAME.pub (what tenants' trust policies list).
    Keygen {
        /// Directory to write the key files into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The publisher's name, e.g. the MSP's (letters, digits, `.`, `_`, `-`, `/`).
        #[arg(long, default_value = "publisher")]
        name: String,
    },
}

pub fn publisher(cmd: PublisherCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PublisherCommand::Keygen { out, name } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let (private, public) = ev::write_key_pair(&out, &name)?;
            let vk = ev::read_verifying_key(&public)?;
            outln!(
                "private key: {} (mode 0600: sign releases with it; keep it off the fleet)",
                private.display()
            );
            outln!("public key:  {}", public.display());
            outln!("key id:      {}", vk.key_id_hex());
            outln!("trust it in a tenant's trust policy (TOML):");
            outln!("  [[publishers]]");
            outln!("  key = \"{}\"", vk.to_text());
            outln!("  components = [\"*\"]   # names or globs it may publish");
            outln!("  max_risk = \"medium\"  # low, medium or high");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where a component's release is kept unless told: beside it, `COMPONENT.release.json`.
pub fn release_path(component: &Path) -> PathBuf {
    beside(component, ".release.json")
}

/// The file beside `component` named after it with `suffix` appended.
pub fn beside(component: &Path, suffix: &str) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `runwarden runbook sign COMPONENT --key KEY [--out FILE]`.
pub fn sign(
    data_dir: PathBuf,
    file: &Path,
    key: &Path,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let key = ev::read_signing_key(key)?;
    let rt = crate::runbook::runtime(data_dir)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let loaded = match rt.load(&bytes) {
        Ok(l) => l,
        Err(e) => {
            anyhow::ensure!(
                rt.load_rules(&bytes).is_err(),
                "{} is an L1 rule set: sign it with `runwarden rules sign {} --name NAME --version VERSION --key KEY`",
                file.display(),
                file.display()
            );
            return Err(anyhow::Error::from(e).context(file.display().to_string()));
        }
    };
    let release = ev::Release::of_runbook(loaded.manifest_json(), loaded.sha256());
    write_release(release, file, &key, out)
}

/// `runwarden rules sign RULES --name N --version V --key KEY [--out FILE]`.
pub fn sign_rules(
    rt: &runwarden_runtime::Runtime,
    file: &Path,
    name: &str,
    version: &str,
    key: &Path,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let key = ev::read_signing_key(key)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let set = rt
        .load_rules(&bytes)
        .with_context(|| format!("{} is not an L1 rule component", file.display()))?;
    anyhow::ensure!(
        runwarden_proto::is_component_name(name),
        "{:?} cannot name a rule set: use lowercase letters, digits and - (at most 64)",
        crate::term::clean(name)
    );
    anyhow::ensure!(
        version.len() <= 64
            && version.starts_with(|c: char| c.is_ascii_digit())
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b)),
        "{:?} is not a version (MAJOR.MINOR.PATCH, e.g. 1.0.0)",
        crate::term::clean(version)
    );
    let release = ev::Release::of_rules(name, version, set.sha256(), set.manifest_json());
    write_release(release, file, &key, out)
}

/// Sign `release` of the component at `file` (with what `runbook build` noted it was
/// built from) and write it to `out` (default: beside the component).
fn write_release(
    mut release: ev::Release,
    file: &Path,
    key: &ev::SigningKey,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    // What `runbook build` noted it was built from, signed with it.
    let info = crate::runbook::build_info_path(file);
    if info.is_file() {
        let text = std::fs::read_to_string(&info)
            .with_context(|| format!("cannot read {}", info.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!("{} is not JSON: build the component again", info.display())
        })?;
        anyhow::ensure!(
            v.is_object() && text.len() <= 64 * 1024,
            "{} is not the build info `runbook build` writes",
            info.display()
        );
        release.built_from = Some(v);
    }
    let out = out.unwrap_or_else(|| release_path(file));
    let envelope = release.sign(key);
    ev::write_atomic(&out, format!("{}\n", envelope.to_json()).as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    outln!(
        "signed {} {} {} (sha256 {}, {} risk) as publisher {}: {}",
        release.kind.as_str(),
        crate::term::clean(&release.name),
        crate::term::clean(&release.version),
        release.sha256,
        release.risk.as_str(),
        key.verifying_key().label(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Read a trust policy (TOML).
pub fn read_trust_policy(path: &Path) -> anyhow::Result<ev::TrustPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trust policy {}", path.display()))?;
    let policy: ev::TrustPolicy =
        toml::from_str(&text).with_context(|| format!("trust policy {}", path.display()))?;
    policy
        .keys()
        .with_context(|| format!("trust policy {}", path.display()))?;
    Ok(policy)
}

/// `runwarden runbook verify COMPONENT --trust POLICY [--release FILE]`: what an agent
/// checks before it loads a component, checked by hand.
pub fn verify(
    data_dir: PathBuf,
    file: &Path,
    release: Option<PathBuf>,
    trust: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = read_trust_policy(trust)?;
    let release_file = release.unwrap_or_else(|| release_path(file));
    let envelope = std::fs::read_to_string(&release_file)
        .with_context(|| format!("cannot read release {}", release_file.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // The same admission as a host's: the policy, then the component must be what the
    // release says it is (a runbook with that manifest, a rule set with those rules).
    let rt = crate::runbook::runtime(data_dir)?;
    let verdict =
        runwarden_agent::components::admit_deployable(&rt, &bytes, &envelope, Some(&policy))
            .map(|a| (a.release, a.key))
            .map_err(anyhow::Error::msg);
    match verdict {
        Ok((r, key)) => {
            if json {
                println!(
                    "{}",
                    crate::term::json_line(&serde_json::json!({
                        "verified": true, "name": r.name, "version": r.version,
                        "sha256": r.sha256, "risk": r.risk.as_str(),
                        "publisher": key.to_text(), "key_id": key.key_id_hex(),
                    }))
                );
            } else {
                outln!(
                    "verified {} {} (sha256 {}, {} risk): signed by publisher {}, admitted by {}",
                    crate::term::clean(&r.name),
                    crate::term::clean(&r.version),
                    r.sha256,
                    r.risk.as_str(),
                    key.label(),
                    trust.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    crate::term::json_line(
                        &serde_json::json!({"verified": false, "error": format!("{e:#}")})
                    )
                );
            } else {
                errln!("REFUSED {}: {e:#}", file.display());
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Set your tenant's trust policy at the control plane from a TOML file (admin token):
    /// [[publishers]] key, components (names or globs), max_risk, rules; [minimum_versions].
    Set {
        /// The policy (TOML).
        file: PathBuf,
    },
    /// Print your tenant's trust policy.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn io() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn print_policy(p: &ev::TrustPolicy) {
    if p.publishers.is_empty() {
        outln!("no publishers: nothing can be published");
    }
    for t in &p.publishers {
        outln!(
            "publisher {}: {} at {} risk at most{}",
            crate::term::clean(t.key.trim()),
            crate::term::clean(&t.components.join(", ")),
            t.max_risk.as_str(),
            if t.rules { "; rule sets too" } else { "" }
        );
    }
    for (name, v) in &p.minimum_versions {
        outln!(
            "{}: version {} or later",
            crate::term::clean(name),
            crate::term::clean(v)
        );
    }
}

pub fn trust(
    cmd: TrustCommand,
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let client = crate::incident::Client::new(server, data_dir)?;
    io()?.block_on(async {
        match cmd {
            TrustCommand::Set { file } => {
                let policy = read_trust_policy(&file)?;
                let v = client
                    .send(
                        client
                            .http
                            .put(format!("{}/v1/trust", client.base))
                            .header("content-type", "application/json")
                            .body(serde_json::to_vec(&policy)?),
                    )
                    .await?;
                let set: ev::TrustPolicy = serde_json::from_value(v)?;
                outln!("trust policy set from {}:", file.display());
                print_policy(&set);
            }
            TrustCommand::Show { json } => {
                let v = client
                    .send(client.http.get(format!("{}/v1/trust", client.base)))
                    .await?;
                if json {
                    println!("{}", crate::term::json_line(&v));
                } else {
                    print_policy(&serde_json::from_value(v)?);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `runwarden runbook publish COMPONENT [--release FILE]`: into the control plane's
/// registry, which checks it against the tenant's trust policy.
pub fn publish(
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
    file: &Path,
    release: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use base64::Engine as _;
    let release_file = release.unwrap_or_else(|| release_path(file));
    let envelope: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&release_file)
            .with_context(|| format!("cannot read release {}", release_file.display()))?,
    )
    .with_context(|| format!("release {}: not JSON", release_file.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let client = crate::incident::Client::new(server, data_dir)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
        "release": envelope,
    }))?;
    let v = io()?.block_on(
        client.send(
            client
                .http
                .post(format!("{}/v1/components", client.base))
                .header("content-type", "application/json")
                .body(body),
        ),
    )?;
    if json {
        println!("{}", crate::term::json_line(&v));
        return Ok(ExitCode::SUCCESS);
    }
    let r: runwarden_control::ReleaseView = serde_json::from_value(v)?;
    outln!(
        "{} {} {} ({} risk, sha256 {}), signed by {}",
        if r.new {
            "published"
        } else {
            "already published:"
        },
        crate::term::clean(&r.name),
        crate::term::clean(&r.version),
        crate::term::clean(&r.risk),
        crate::term::clean(&r.sha256),
        crate::term::clean(&r.publisher)
    );
    Ok(ExitCode::SUCCESS)
}

/// `runwarden runbook published [--name N]`: the tenant's registry.
pub fn published(
    server: &crate::incident::ServerArgs,
    data_dir: &Path,
    name: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let client = crate::incident::Client::new(server, data_dir)?;
    let mut req = client.http.get(format!("{}/v1/components", client.base));
    if let Some(n) = &name {
        req = req.query(&[("name", n)]);
    }
    let v = io()?.block_on(client.send(req))?;
    let list: Vec<runwarden_control::ReleaseView> =
        serde_json::from_value(v["components"].clone())?;
    for r in &list {
        if json {
            println!("{}", crate::term::json_line(&serde_json::to_value(r)?));
        } else {
            outln!(
                "{} {} {:<8} {:<6} {} {} by {}",
                crate::term::clean(&r.published_at),
                crate::term::clean(&r.sha256),
                crate::term::clean(&r.kind),
                crate::term::clean(&r.risk),
                crate::term::clean(&r.name),
                crate::term::clean(&r.version),
                crate::term::clean(&r.publisher)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
