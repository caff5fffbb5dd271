//! The API over real HTTP on 127.0.0.1:0, in front of a real controller: the standard
//! runbooks and rule set running in the sandbox, SQLite in a temporary directory.

mod access;
mod connections;
mod hosts;
mod incidents;
mod mcp;
mod service;
mod tenancy;

use runwarden_api::ApiConfig;
use runwarden_control::{ControlConfig, Controller, HostConfig, Scope};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

/// The host id of the test policy.
pub const HOST: &str = "clinic-demo-01";

/// Compiled components are cached in one directory for the whole binary, and controllers
/// start one at a time, so the runbooks are compiled once rather than by every test.
fn runtime_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn policy(dir: &Path) -> String {
    let granted = dir.join("granted").display().to_string();
    let units = dir.join("units").display().to_string();
    format!(
        r#"
host_id = "{HOST}"

[grants]
services = ["demo-*.service"]
probe = true
write_dirs = ["{granted}"]

[limits]
timeout_ms = 10000

[services]
backend = "command"
status = ["/bin/sh", "-c", "cat {units}/{{unit}} 2>/dev/null || echo inactive"]
start = ["/bin/sh", "-c", "mkdir -p {units} && echo active > {units}/{{unit}}"]
stop = ["/bin/sh", "-c", "mkdir -p {units} && echo inactive > {units}/{{unit}}"]
restart = ["/bin/sh", "-c", "mkdir -p {units} && echo active > {units}/{{unit}}"]
reload = ["/bin/sh", "-c", "test -f {units}/{{unit}}"]
"#
    )
}

async fn controller(dir: &Path) -> Arc<Controller> {
    let _one_at_a_time = STARTING.lock().await;
    let rt = Arc::new(
        runwarden_runtime::Runtime::new(runwarden_runtime::RuntimeConfig {
            data_dir: runtime_dir().to_path_buf(),
        })
        .unwrap(),
    );
    let policy = runwarden_runtime::Policy::parse(&policy(dir)).unwrap();
    let runbooks: Vec<Vec<u8>> = runwarden_guests::standard_runbooks()
        .map(|(_, b)| b.to_vec())
        .collect();
    let rules_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/standard.yaml");
    let program = runwarden_control::rules::compile(
        &[(
            "standard.yaml".into(),
            std::fs::read_to_string(rules_path).unwrap(),
        )],
        None,
    )
    .unwrap();
    let rules =
        runwarden_control::rules::embed(runwarden_guests::rule_engine(), &program.to_bytes())
            .unwrap();
    let policy = Arc::new(policy);
    let (link, agent) = runwarden_bus::in_process(&policy.host_id, 64);
    let c = Controller::start(
        ControlConfig {
            database: dir.join("rw.db").display().to_string(),
            data_dir: dir.to_path_buf(),
            hosts: vec![HostConfig {
                tenant: "clinic-a".into(),
                policy: policy.clone(),
                labels: Default::default(),
                inventory: Default::default(),
            }],
            signer: runwarden_control::LogSigner::Host(policy.host_id.clone()),
            guardrails: Default::default(),
            llm: None,
            planner: Default::default(),
            sla: Default::default(),
            dispatch: Arc::new(link),
            hand_up: false,
        },
        rt.clone(),
        runbooks.clone(),
        vec![rules],
    )
    .await
    .unwrap();
    let (key, _) = runwarden_control::evidence::host_key(dir, None, &policy.host_id).unwrap();
    runwarden_agent::spawn_local(
        rt,
        runwarden_agent::AgentConfig {
            publishers: Default::default(),
            trust: None,
            components: None,
            tenant: "clinic-a".to_string(),
            policy,
            runbooks: Vec::new(),
            key,
            control_keys: vec![c.control_public_key()],
            log: c.evidence_log(),
            journal: dir.join("agent-journal.db"),
        },
        &runbooks,
        agent,
    )
    .await
    .unwrap();
    Arc::new(c)
}

/// A running API server and what the tests need around it.
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The controller behind it.
    pub controller: Arc<Controller>,
    /// A granted directory the `disk-full-tmp` rule can clear.
    pub tmp: PathBuf,
    /// An operate token of tenant `clinic-a`.
    pub secret: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A response, read whole.
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert an error answer: the status, the JSON error shape, the code; returns the message.
    pub fn error(&self, status: u16, code: &str) -> String {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        assert_eq!(body["error"].as_object().unwrap().len(), 2, "{body}");
        let message = body["error"]["message"].as_str().unwrap().to_string();
        assert!(!message.is_empty() && !message.contains('\n'), "{body}");
        message
    }
}

impl Api {
    /// Start a controller and an API server with `config`.
    pub async fn start(config: ApiConfig) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("granted/tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let controller = controller(dir.path()).await;
        let (secret, _) = controller
            .create_token("clinic-a", Scope::Operate, "test")
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(runwarden_api::serve(
            listener,
            controller.clone(),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Api {
            base,
            controller,
            tmp,
            secret,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    /// The HTTP client, for requests `send` cannot express.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A new token.
    pub async fn token(&self, tenant: &str, scope: Scope) -> String {
        self.controller
            .create_token(tenant, scope, "test")
            .await
            .unwrap()
            .0
    }

    /// Send a request, with `token` as bearer if given.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(
            reqwest::Method::POST,
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// An incident the `disk-full-tmp` rule sends to `clear-tmp` on the granted directory.
    pub fn disk_full(&self) -> Value {
        serde_json::json!({
            "host": HOST,
            "type": "disk-full",
            "severity": "high",
            "message": "/ is 97% full",
            "labels": {"dir": self.tmp.display().to_string()}
        })
    }

    /// An incident on the host that no rule matches and no runbook fits: the offline
    /// planner escalates it, with an open escalation.
    pub fn unplannable(&self) -> Value {
        serde_json::json!({
            "host": HOST,
            "type": "printer-jam",
            "severity": "high",
            "message": "the label printer at the front desk is jammed"
        })
    }

    /// Send the shutdown signal and return what `serve` returned.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.stop.take().unwrap().send(()).unwrap();
        let server = self.server.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("serve returns after the shutdown signal")
            .unwrap()
    }
}
