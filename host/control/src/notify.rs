//! Webhook notifications of L3 escalations: `escalation.opened` when an incident ends
//! with a human to decide, `escalation.decided` when one acknowledges, approves or
//! denies it.
//!
//! The incident path never waits on a webhook: each webhook has a worker task fed by a
//! bounded queue, which delivers in order, one at a time. A request that fails in
//! transport, times out, or is answered 429 or 5xx is retried with doubling backoff
//! (`Retry-After` in seconds honoured on 429 and 503; no wait longer than 30 s), up to
//! `max_attempts`; any other answer is final, and redirects are not followed (a signed
//! payload goes only where it was configured to). Every delivery's outcome is recorded
//! in `notifications` — delivered, failed, or dropped when the queue was full or
//! runwarden stopped first — with a status code or error kind, never the URL: a Slack
//! webhook URL is itself a secret.

use crate::escalation::Escalation;
use crate::incident::Incident;
use crate::planner::llm::{retry_after, wait};
use crate::store::{ControlStore, EscalationRow, NotificationRow, Write};
use hmac::{Hmac, Mac};
use runwarden_evidence as ev;
use runwarden_proto::EscalationState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// The body a webhook is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// runwarden's own JSON: `{event, escalation, incident, url_path, sent_at}`.
    #[default]
    Json,
    /// A Slack incoming webhook message: `{text, blocks}`.
    Slack,
}

impl Format {
    /// `json` or `slack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// One webhook (`[[escalations.webhooks]]` in runwarden.toml).
///
/// `Debug` shows the URL's scheme and host only, and the secret as `[redacted]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for people, recorded with every delivery (letters, digits, `-_.`).
    pub name: String,
    /// Where to POST (`http://` or `https://`). Treated as a secret: never logged,
    /// recorded or sent in full.
    pub url: String,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: Format,
    /// HMAC-SHA256 key: when set, every request carries
    /// `X-Runwarden-Signature: sha256=<hex HMAC of the body>`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Per attempt, connect to last byte (default 5, at most 60).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts in all (default 4; 1 to 10).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First wait between attempts; doubles per retry (default 500, at most 30000).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_timeout_secs() -> u64 {
    5
}

fn default_max_attempts() -> u32 {
    4
}

fn default_backoff_ms() -> u64 {
    500
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &format_args!("{}", self.redacted_url()))
            .field("format", &self.format)
            .field(
                "secret",
                &format_args!(
                    "{}",
                    if self.secret.is_some() {
                        "[redacted]"
                    } else {
                        "none"
                    }
                ),
            )
            .field("timeout_secs", &self.timeout_secs)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_ms", &self.backoff_ms)
            .finish()
    }
}

/// Longest name.
const MAX_NAME: usize = 64;
/// Most attempts a webhook may ask for.
const MAX_ATTEMPTS: u32 = 10;
/// Longest per-attempt timeout.
const MAX_TIMEOUT_SECS: u64 = 60;
/// Longest single wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Deliveries waiting per webhook; past it, a notification is recorded as dropped.
const QUEUE: usize = 256;
/// How long [`Notifier::shutdown`] lets deliveries in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl WebhookConfig {
    /// The URL's host (`hooks.slack.com`): what may be shown of it.
    pub fn host(&self) -> String {
        reqwest::Url::parse(self.url.trim())
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_else(|| "?".into())
    }

    /// The URL with everything after the host cut (`https://hooks.slack.com/…`).
    pub fn redacted_url(&self) -> String {
        match reqwest::Url::parse(self.url.trim()) {
            Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
            Err(_) => "[not a URL]".into(),
        }
    }

    /// Check one webhook; `index` (from 0) names it when it has no name.
    fn validate(&self, index: usize) -> Result<(), NotifyError> {
        let webhook = if self.name.trim().is_empty() {
            format!("#{}", index + 1)
        } else {
            format!("{:?}", self.name)
        };
        let bad = |field: &'static str, problem: String| NotifyError::Config {
            webhook: webhook.clone(),
            field,
            problem,
        };
        if self.name.trim().is_empty() {
            return Err(bad(
                "name",
                "is empty: give every webhook a name (it is recorded with each delivery)".into(),
            ));
        }
        if self.name.len() > MAX_NAME
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(
                "name",
                format!(
                    "{:?}: use at most {MAX_NAME} letters, digits and - _ .",
                    self.name
                ),
            ));
        }
        // The URL is a secret: errors say what is wrong with it, never what it is.
        match reqwest::Url::parse(self.url.trim()) {
            Err(e) => return Err(bad("url", format!("is not a URL ({e})"))),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                return Err(bad(
                    "url",
                    format!(
                        "has scheme {:?}: use an http:// or https:// URL",
                        u.scheme()
                    ),
                ));
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                return Err(bad("url", "has no host".into()));
            }
            Ok(_) => {}
        }
        if self.secret.as_deref().is_some_and(|s| s.is_empty()) {
            return Err(bad(
                "secret",
                "is empty: remove it, or set a key to sign requests with".into(),
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(bad(
                "max_attempts",
                format!("= {}: use 1 to {MAX_ATTEMPTS}", self.max_attempts),
            ));
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(bad(
                "timeout_secs",
                format!("= {}: use 1 to {MAX_TIMEOUT_SECS}", self.timeout_secs),
            ));
        }
        if self.backoff_ms > MAX_WAIT.as_millis() as u64 {
            return Err(bad(
                "backoff_ms",
                format!(
                    "= {}: use at most {}",
                    self.backoff_ms,
                    MAX_WAIT.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

/// Check every webhook: each one's fields, and that no two share a name.
pub fn validate(webhooks: &[WebhookConfig]) -> Result<(), NotifyError> {
    for (i, w) in webhooks.iter().enumerate() {
        w.validate(i)?;
        if webhooks[..i].iter().any(|o| o.name == w.name) {
            return Err(NotifyError::Config {
                webhook: format!("{:?}", w.name),
                field: "name",
                problem: "is used twice: give each webhook its own name".into(),
            });
        }
    }
    Ok(())
}

/// Why webhooks cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A webhook is misconfigured.
    #[error("[[escalations.webhooks]] {webhook}: {field} {problem}")]
    Config {
        /// Its name (quoted), or `#N` when it has none.
        webhook: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

pub use runwarden_proto::NotificationView;

impl From<NotificationRow> for NotificationView {
    fn from(r: NotificationRow) -> NotificationView {
        NotificationView {
            webhook: r.webhook,
            event: r.event,
            status: r.status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            last_error: r.last_error,
            at: ev::rfc3339_ms(r.at_ms.max(0) as u64),
        }
    }
}

/// An escalation event to tell webhooks about.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    event: &'static str,
    id: String,
    incident_id: String,
    tenant: String,
    host: String,
    severity: String,
    state: EscalationState,
    reason: String,
    sla_deadline: String,
    proposal: Option<Value>,
    incident_type: String,
    service: Option<String>,
}

impl Notice {
    /// An escalation was raised (its row just queued).
    pub(crate) fn opened(row: &EscalationRow, incident: &Incident) -> Notice {
        Notice {
            event: "escalation.opened",
            id: row.id.clone(),
            incident_id: row.incident_id.clone(),
            tenant: row.tenant.clone(),
            host: row.host.clone(),
            severity: row.severity.clone(),
            state: EscalationState::Open,
            reason: row.reason.clone(),
            sla_deadline: ev::rfc3339_ms(row.sla_deadline_ms.max(0) as u64),
            proposal: serde_json::from_str(&row.proposal).ok(),
            incident_type: incident.kind.clone(),
            service: incident.service.clone(),
        }
    }

    /// A human acknowledged, approved or denied an escalation; `e` as it ended.
    pub(crate) fn decided(e: &Escalation, incident: &Incident) -> Notice {
        Notice {
            event: "escalation.decided",
            id: e.id.clone(),
            incident_id: e.incident_id.clone(),
            tenant: e.tenant.clone(),
            host: e.host.clone(),
            severity: e.severity.to_string(),
            state: e.state,
            reason: e.reason.clone(),
            sla_deadline: e.sla_deadline.clone(),
            proposal: e.proposal.clone(),
            incident_type: incident.kind.clone(),
            service: incident.service.clone(),
        }
    }

    /// An escalation still undecided past its SLA deadline.
    pub(crate) fn breached(e: &Escalation, incident: &Incident) -> Notice {
        Notice {
            event: "escalation.breached",
            ..Notice::decided(e, incident)
        }
    }

    /// The body in `format`. Nothing secret goes in: no token, webhook URL or key.
    fn body(&self, format: Format, sent_at_ms: i64) -> Vec<u8> {
        let url_path = format!("/v1/escalations/{}", self.id);
        let v = match format {
            Format::Json => json!({
                "event": self.event,
                "escalation": {
                    "id": self.id,
                    "incident_id": self.incident_id,
                    "tenant": self.tenant,
                    "host": self.host,
                    "severity": self.severity,
                    "state": self.state,
                    "reason": self.reason,
                    "sla_deadline": self.sla_deadline,
                    "proposal": self.proposal,
                },
                "incident": {"type": self.incident_type, "service": self.service},
                "url_path": url_path,
                "sent_at": ev::rfc3339_ms(sent_at_ms.max(0) as u64),
            }),
            Format::Slack => self.slack(&url_path),
        };
        serde_json::to_vec(&v).expect("a JSON value serializes")
    }

    /// A Slack message: a one-line `text` (notifications, clients without blocks) and one
    /// mrkdwn section.
    fn slack(&self, url_path: &str) -> Value {
        let what = match self.event {
            "escalation.opened" => "opened".to_string(),
            "escalation.breached" => format!("BREACHED its SLA (still {})", self.state),
            _ => self.state.to_string(),
        };
        let incident = match &self.service {
            Some(s) => format!("{} ({s})", self.incident_type),
            None => self.incident_type.clone(),
        };
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = format!(
            "runwarden: escalation {} {what}: {} {} on {} (tenant {}): {}",
            self.id,
            self.severity,
            incident,
            self.host,
            self.tenant,
            crate::planner::catalog::cut(&one_line(&self.reason), 200)
        );
        let mut section = format!(
            "*Escalation {}* `{}`\n*Severity:* {}   *Host:* {}   *Tenant:* {}\n*Incident:* {}\n*Reason:* {}",
            esc(&what),
            esc(&self.id),
            esc(&self.severity),
            esc(&self.host),
            esc(&self.tenant),
            esc(&incident),
            esc(&crate::planner::catalog::cut(&self.reason, 1500)),
        );
        if let Some(rb) = self
            .proposal
            .as_ref()
            .and_then(|p| p.get("runbook"))
            .and_then(Value::as_str)
        {
            section.push_str(&format!("\n*Proposed:* run `{}`", esc(rb)));
        }
        if self.state.is_undecided() {
            section.push_str(&format!("\n*Decide by:* {}", esc(&self.sla_deadline)));
        }
        section.push_str(&format!(
            "\n`runwarden escalation show {}` · `GET {}`",
            esc(&self.id),
            esc(url_path)
        ));
        json!({
            "text": esc(&one_line(&text)),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}],
        })
    }
}

/// Slack's three control characters in message text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Deliveries by outcome, for `/metrics`.
#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Counts {
    fn add(&self, status: &str) {
        let c = match status {
            "delivered" => &self.delivered,
            "failed" => &self.failed,
            _ => &self.dropped,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a worker needs besides its queue.
#[derive(Clone)]
struct Context {
    http: reqwest::Client,
    store: ControlStore,
    counts: Arc<Counts>,
}

/// Sends escalation events to the configured webhooks, in the background.
pub(crate) struct Notifier {
    /// Webhook names, in the order of `senders`.
    names: Vec<String>,
    /// One queue per webhook; `None` once shutdown began.
    senders: Mutex<Option<Vec<mpsc::Sender<Arc<Notice>>>>>,
    workers: Mutex<Option<JoinSet<()>>>,
    /// Tells workers to give up what is in flight (recorded as dropped).
    stop: watch::Sender<bool>,
    store: ControlStore,
    counts: Arc<Counts>,
}

impl Notifier {
    /// Check `webhooks` and start a worker for each (none when there are none).
    pub(crate) fn start(
        webhooks: &[WebhookConfig],
        store: ControlStore,
    ) -> Result<Notifier, NotifyError> {
        Notifier::with_queue(webhooks, store, QUEUE)
    }

    fn with_queue(
        webhooks: &[WebhookConfig],
        store: ControlStore,
        queue: usize,
    ) -> Result<Notifier, NotifyError> {
        validate(webhooks)?;
        let counts = Arc::new(Counts::default());
        let (stop, _) = watch::channel(false);
        let mut senders = Vec::new();
        let mut workers = JoinSet::new();
        if !webhooks.is_empty() {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("runwarden/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| NotifyError::Client(e.to_string()))?;
            let cx = Context {
                http,
                store: store.clone(),
                counts: counts.clone(),
            };
            for hook in webhooks {
                let (tx, rx) = mpsc::channel(queue);
                senders.push(tx);
                workers.spawn(worker(hook.clone(), cx.clone(), rx, stop.subscribe()));
            }
        }
        Ok(Notifier {
            names: webhooks.iter().map(|w| w.name.clone()).collect(),
            senders: Mutex::new(Some(senders)),
            workers: Mutex::new(Some(workers)),
            stop,
            store,
            counts,
        })
    }

    /// Queue `notice` for every webhook; never waits for a delivery. A webhook whose
    /// queue is full (or that is stopping) gets a `dropped` record instead.
    pub(crate) async fn notify(&self, notice: Notice) {
        if self.names.is_empty() {
            return;
        }
        let notice = Arc::new(notice);
        let mut dropped = Vec::new();
        {
            let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
            match senders.as_ref() {
                None => dropped.extend(self.names.iter().map(|n| (n, "runwarden was stopping"))),
                Some(senders) => {
                    for (name, tx) in self.names.iter().zip(senders) {
                        match tx.try_send(notice.clone()) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropped.push((name, "the delivery queue was full"));
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                dropped.push((name, "runwarden was stopping"));
                            }
                        }
                    }
                }
            }
        }
        if dropped.is_empty() {
            return;
        }
        let rows = dropped
            .into_iter()
            .map(|(name, why)| {
                self.counts.add("dropped");
                eprintln!(
                    "runwarden: webhook {name}: {} of {} dropped: {why}",
                    notice.event, notice.id
                );
                Write::Notification(row(&notice, name, "dropped", 0, why))
            })
            .collect();
        record(&self.store, rows).await;
    }

    /// `(status, deliveries)` since start, for every status.
    /// Whether no webhook is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub(crate) fn counts(&self) -> [(&'static str, u64); 3] {
        let c = &self.counts;
        [
            ("delivered", c.delivered.load(Ordering::Relaxed)),
            ("failed", c.failed.load(Ordering::Relaxed)),
            ("dropped", c.dropped.load(Ordering::Relaxed)),
        ]
    }

    /// Take no more notices; give deliveries queued or in flight [`SHUTDOWN_GRACE`] to
    /// finish, then stop them (recorded as dropped). Their records are queued for the
    /// store's writer before this returns.
    pub(crate) async fn shutdown(&self) {
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut workers) = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            self.stop.send_replace(true);
            let recorded = tokio::time::timeout(Duration::from_secs(2), async {
                while workers.join_next().await.is_some() {}
            })
            .await;
            if recorded.is_err() {
                workers.abort_all();
            }
        }
    }
}

/// A row for `notice` sent to webhook `name`.
fn row(notice: &Notice, name: &str, status: &str, attempts: u32, error: &str) -> NotificationRow {
    NotificationRow {
        id: delivery_id(),
        escalation_id: notice.id.clone(),
        tenant: notice.tenant.clone(),
        webhook: name.to_string(),
        event: notice.event.into(),
        status: status.into(),
        attempts: i64::from(attempts),
        last_error: error.into(),
        at_ms: now_ms(),
    }
}

fn delivery_id() -> String {
    format!("ntf_{}", &crate::evidence::uuid_v4().replace('-', "")[..16])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Queue rows for the store's writer; nobody waits for the commit (the writer reports
/// a failed one), shutdown flushes them.
async fn record(store: &ControlStore, rows: Vec<Write>) {
    match store.queue(rows).await {
        Ok(pending) => drop(pending),
        Err(e) => eprintln!("runwarden: recording a webhook delivery: {e}"),
    }
}

/// Resolves once `stop` says so; never, if the notifier is gone without saying it.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One webhook's deliveries, in order, until its queue closes (and is drained) or it is
/// told to stop (what is left is recorded as dropped).
async fn worker(
    hook: WebhookConfig,
    cx: Context,
    mut rx: mpsc::Receiver<Arc<Notice>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let notice = tokio::select! {
            biased;
            _ = stopping(&mut stop) => break,
            n = rx.recv() => match n {
                Some(n) => n,
                None => return,
            },
        };
        let id = delivery_id();
        let mut attempts = 0;
        let (status, error, stopped) = tokio::select! {
            r = deliver(&cx.http, &hook, &notice, &id, &mut attempts) => match r {
                Ok(()) => ("delivered", String::new(), false),
                Err(e) => ("failed", e, false),
            },
            _ = stopping(&mut stop) => (
                "dropped",
                "runwarden stopped before the delivery finished".to_string(),
                true,
            ),
        };
        cx.counts.add(status);
        if status != "delivered" {
            eprintln!(
                "runwarden: webhook {}: {} of {} {status} after {attempts} attempt(s): {error}",
                hook.name, notice.event, notice.id
            );
        }
        let mut r = row(&notice, &hook.name, status, attempts, &error);
        r.id = id;
        record(&cx.store, vec![Write::Notification(r)]).await;
        if stopped {
            break;
        }
    }
    rx.close();
    let mut rows = Vec::new();
    while let Ok(notice) = rx.try_recv() {
        cx.counts.add("dropped");
        rows.push(Write::Notification(row(
            &notice,
            &hook.name,
            "dropped",
            0,
            "runwarden stopped before it was sent",
        )));
    }
    if !rows.is_empty() {
        record(&cx.store, rows).await;
    }
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    /// Worth trying again: why, and the wait the server asked for.
    Retry(String, Option<Duration>),
    /// Trying again will not help.
    Failed(String),
}

/// Deliver `notice` to `hook` as delivery `id`, counting requests in `attempts`. The
/// error names a status code or an error kind only.
async fn deliver(
    http: &reqwest::Client,
    hook: &WebhookConfig,
    notice: &Notice,
    id: &str,
    attempts: &mut u32,
) -> Result<(), String> {
    let body = notice.body(hook.format, now_ms());
    let signature = hook.secret.as_deref().map(|key| sign(key, &body));
    let max = hook.max_attempts.clamp(1, MAX_ATTEMPTS);
    let timeout = Duration::from_secs(hook.timeout_secs.clamp(1, MAX_TIMEOUT_SECS));
    loop {
        *attempts += 1;
        let mut req = http
            .post(hook.url.trim())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-runwarden-event", notice.event)
            .header("x-runwarden-delivery", id)
            .body(body.clone());
        if let Some(sig) = &signature {
            req = req.header("x-runwarden-signature", sig);
        }
        let outcome = match req.send().await {
            Ok(resp) => classify(resp.status().as_u16(), retry_after(resp.headers())),
            Err(e) if e.is_builder() => Attempt::Failed(describe(&e, timeout)),
            Err(e) => Attempt::Retry(describe(&e, timeout), None),
        };
        match outcome {
            Attempt::Delivered => return Ok(()),
            Attempt::Failed(e) => return Err(e),
            Attempt::Retry(e, _) if *attempts >= max => return Err(e),
            Attempt::Retry(_, asked) => {
                tokio::time::sleep(wait(
                    Duration::from_millis(hook.backoff_ms),
                    *attempts,
                    asked,
                    MAX_WAIT,
                ))
                .await;
            }
        }
    }
}

/// 2xx is delivered; 429 and 5xx are retried (429 and 503 as soon as the server asks);
/// anything else, redirects included, is final.
fn classify(status: u16, asked: Option<Duration>) -> Attempt {
    let error = format!("HTTP {status}");
    match status {
        200..=299 => Attempt::Delivered,
        429 | 503 => Attempt::Retry(error, asked),
        500..=599 => Attempt::Retry(error, None),
        _ => Attempt::Failed(error),
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`.
fn sign(key: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A transport failure in words without the URL, which reqwest's own message carries.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs());
    }
    // An I/O error's kind says why ("connection refused") and nothing else.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return format!("connection failed: {}", io.kind());
        }
        source = s.source();
    }
    if e.is_connect() {
        "connection failed".into()
    } else if e.is_builder() {
        "the request could not be built".into()
    } else {
        "the request failed before an answer".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            name: "ops".into(),
            url: url.into(),
            format: Format::Json,
            secret: None,
            timeout_secs: 5,
            max_attempts: 4,
            backoff_ms: 500,
        }
    }

    #[test]
    fn config_defaults_and_validation_name_the_webhook_and_field() {
        let w: WebhookConfig = from_json(
            r#"{"name": "ops-slack", "url": "https://hooks.slack.com/services/T0/B0/xyz", "format": "slack"}"#,
        );
        assert_eq!(
            (w.timeout_secs, w.max_attempts, w.backoff_ms, w.format),
            (5, 4, 500, Format::Slack)
        );
        assert!(validate(std::slice::from_ref(&w)).is_ok());
        assert!(
            serde_json::from_str::<WebhookConfig>(
                r#"{"name": "a", "url": "http://x", "retries": 3}"#
            )
            .is_err(),
            "unknown keys are refused"
        );
        let cases = [
            (
                WebhookConfig {
                    name: "".into(),
                    ..hook("http://x")
                },
                "#1: name",
            ),
            (hook("ftp://x/secret-path"), "\"ops\": url"),
            (hook("not a url"), "\"ops\": url"),
            (
                WebhookConfig {
                    max_attempts: 0,
                    ..hook("http://x")
                },
                "\"ops\": max_attempts",
            ),
            (
                WebhookConfig {
                    max_attempts: 11,
                    ..hook("http://x")
                },
                "\"ops\": max_attempts",
            ),
            (
                WebhookConfig {
                    timeout_secs: 0,
                    ..hook("http://x")
                },
                "\"ops\": timeout_secs",
            ),
            (
                WebhookConfig {
                    secret: Some(String::new()),
                    ..hook("http://x")
                },
                "\"ops\": secret",
            ),
        ];
        for (w, want) in cases {
            let e = validate(&[w]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("secret-path"), "the URL stays out: {e}");
        }
        let e = validate(&[hook("http://x"), hook("http://y")]).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
    }

    fn from_json(json: &str) -> WebhookConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn debug_shows_neither_the_url_path_nor_the_secret() {
        let w = WebhookConfig {
            secret: Some("hunter2-signing-key".into()),
            ..hook("https://hooks.slack.com/services/T0/B0/TOKENPART?x=1")
        };
        let d = format!("{w:?}");
        assert!(d.contains("https://hooks.slack.com/…"), "{d}");
        assert!(d.contains("[redacted]"), "{d}");
        assert!(!d.contains("TOKENPART") && !d.contains("hunter2"), "{d}");
        assert_eq!(w.host(), "hooks.slack.com");
    }

    #[test]
    fn which_answers_are_retried_and_how_long_to_wait() {
        assert!(matches!(classify(204, None), Attempt::Delivered));
        for s in [429, 500, 502, 503, 504] {
            assert!(matches!(classify(s, None), Attempt::Retry(..)), "{s}");
        }
        for s in [301, 400, 401, 404, 410] {
            assert!(matches!(classify(s, None), Attempt::Failed(_)), "{s}");
        }
        let asked = Some(Duration::from_secs(2));
        assert!(matches!(classify(429, asked), Attempt::Retry(_, Some(_))));
        assert!(matches!(classify(500, asked), Attempt::Retry(_, None)));
        let b = Duration::from_millis(500);
        assert_eq!(wait(b, 1, None, MAX_WAIT), b);
        assert_eq!(wait(b, 3, None, MAX_WAIT), Duration::from_secs(2));
        assert_eq!(wait(b, 40, None, MAX_WAIT), MAX_WAIT);
        assert_eq!(
            wait(b, 1, Some(Duration::from_secs(3600)), MAX_WAIT),
            MAX_WAIT
        );
    }

    #[test]
    fn slack_text_is_escaped_and_carries_no_secret() {
        let n = Notice {
            event: "escalation.opened",
            id: "esc_1".into(),
            incident_id: "inc".into(),
            tenant: "t".into(),
            host: "h".into(),
            severity: "high".into(),
            state: EscalationState::Open,
            reason: "a <b> & c".into(),
            sla_deadline: "2026-01-01T00:00:00.000Z".into(),
            proposal: Some(json!({"runbook": "restart-service", "params": {}})),
            incident_type: "service-down".into(),
            service: Some("nginx.service".into()),
        };
        let v: Value = serde_json::from_slice(&n.body(Format::Slack, 0)).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            !text.contains('\n') && text.contains("a &lt;b&gt; &amp; c"),
            "{text}"
        );
        let section = v["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        assert!(section.contains("`restart-service`"), "{section}");
        let j: Value = serde_json::from_slice(&n.body(Format::Json, 0)).unwrap();
        assert_eq!(j["url_path"], "/v1/escalations/esc_1");
        assert_eq!(j["incident"]["service"], "nginx.service");
    }

    /// A queue that is full records `dropped`; nothing is lost silently.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_records_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = ControlStore::open(&dir.path().join("rw.db").display().to_string())
            .await
            .unwrap();
        // A server that accepts and never answers: the worker is busy with the first.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let w = WebhookConfig {
            timeout_secs: 2,
            max_attempts: 1,
            ..hook(&format!("http://{addr}/hook"))
        };
        let n = Notifier::with_queue(&[w], store.clone(), 1).unwrap();
        let notice = Notice {
            event: "escalation.opened",
            id: "esc_full".into(),
            incident_id: "inc".into(),
            tenant: "t".into(),
            host: "h".into(),
            severity: "low".into(),
            state: EscalationState::Open,
            reason: "r".into(),
            sla_deadline: String::new(),
            proposal: None,
            incident_type: "x".into(),
            service: None,
        };
        for _ in 0..4 {
            n.notify(notice.clone()).await;
        }
        let rows = store.notifications("t", "esc_full").await.unwrap();
        assert!(
            rows.iter()
                .any(|r| r.status == "dropped" && r.last_error.contains("queue was full")),
            "{rows:?}"
        );
        n.shutdown().await;
        store.flush().await.unwrap();
        let rows = store.notifications("t", "esc_full").await.unwrap();
        assert_eq!(rows.len(), 4, "every notice is accounted for: {rows:?}");
        assert!(n.counts()[2].1 >= 2, "{:?}", n.counts());
        hold.abort();
    }
}
