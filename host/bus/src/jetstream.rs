//! The bus over NATS JetStream (feature `jetstream`).
//!
//! # Subjects and streams
//!
//! | what | subject | stream |
//! |---|---|---|
//! | a job for `host` of `tenant` | `rw.v1.cmd.{tenant}.{host}` ([`command_subject`]) | [`CMD_STREAM`] `RW_CMD`: work queue, file storage, 2 min duplicate window, messages up to [`MAX_MESSAGE_BYTES`] |
//! | the agent's report of a job | `rw.v1.evt.{tenant}.{host}.report` ([`event_subject`]) | [`EVT_STREAM`] `RW_EVT`: limits, file storage, kept 7 days, 2 min duplicate window |
//! | chunk `i` of a component a deployment job names by sha256 | `rw.v1.blob.{tenant}.{sha256}.{i}` ([`blob_subject`]) | [`BLOB_STREAM`] `RW_BLOB`: limits, file storage, one message per subject, direct get, kept 30 days (stored again when a job names it) |
//!
//! A tenant or host name is one subject token: the names of `runwarden-proto`
//! (`check_name`) without `.` (NATS reads `.` as a token separator, so `acme.web1` + `x`
//! and `acme` + `web1.x` would share a subject). The transport refuses other names.
//!
//! # Consumers
//!
//! Each agent has one durable pull consumer on `RW_CMD`, named by [`agent_consumer_name`]
//! and filtered on its command subject, with explicit acks ([`ConsumerSettings`]), its
//! state kept in the NATS server's memory. The control plane creates it when the host
//! enrolls ([`ensure_agent_consumer`]) and again once it is connected after the NATS
//! server restarted (such a consumer does not outlive the NATS server; the jobs it had
//! not acked are still in the stream and reach the new one), so an agent needs no right
//! to create consumers: only to fetch from and ack its own consumer
//! (`$JS.API.CONSUMER.MSG.NEXT.RW_CMD.<name>`, `$JS.API.CONSUMER.INFO.RW_CMD.<name>`,
//! `$JS.ACK.RW_CMD.<name>.>`), to publish on `rw.v1.evt.{tenant}.{host}.>` and to
//! subscribe `_INBOX.>`. Work-queue streams refuse overlapping filters, so no two
//! consumers ever share a host's jobs.
//!
//! An agent reads a component's chunks with direct gets by subject
//! (`$JS.API.DIRECT.GET.RW_BLOB.rw.v1.blob.{tenant}.>`: its own tenant's only), so a
//! component of any size up to `MAX_DEPLOYED_COMPONENT_BYTES` reaches it while every
//! job stays small; the job's signed sha256 is what the agent trusts, not the stream.
//!
//! Each [`JetStreamDispatch`] reads reports through an ordered (ephemeral, in-memory)
//! consumer on `rw.v1.evt.*.*.report` that starts at the end of the stream: several
//! control-plane processes each see every report and complete the waiters of their own
//! jobs. When the server restarts, that consumer is recreated from the last report seen.
//!
//! # Delivery: at least once, and the agent's log makes it once
//!
//! [`JetStreamDispatch::dispatch`] publishes with `Nats-Msg-Id` = the job id and returns
//! only after the server's PubAck: from then on the job is stored and reaches the agent
//! at least once. A dispatch that failed ([`BusError::Transport`], [`BusError::Timeout`])
//! may be repeated with the same job and id — within the 2 min window JetStream stores it
//! once; after it, the agent gets it again and answers from its log.
//!
//! The agent's [`JetStreamJobs`] fetches one job at a time, keeps it with AckProgress
//! while it runs, publishes the report (`Nats-Msg-Id` = `report-{job}`, awaits the
//! PubAck) and only then double-acks the job. A job whose agent crashed, abandoned it or
//! whose ack was lost comes again (ack wait, at most `max_deliver` times). An ack is
//! never proof of "run once": an ack sent after the ack wait is silently lost (nats.rs
//! #1042) and may count for another delivery (nats-server #4786). What makes a job run
//! once is the agent's log, in which each invocation id is unique: a job delivered twice
//! is answered from the log, not run twice.
//!
//! # Durability of the server
//!
//! JetStream fsyncs every 2 minutes by default, so a server killed (power loss, SIGKILL)
//! can lose messages it had acknowledged. Production servers need
//! `jetstream { sync_interval: always }` in their configuration (the tests run with it),
//! and nats-server ≥ 2.11 ([`connect`] refuses older ones: Debian's 2.9.10 silently
//! ignores newer consumer settings).

use crate::{Address, Blobs, BusError, Delivery, Dispatch, Jobs, Reply};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use runwarden_proto::bus::{MAX_MESSAGE_BYTES, RunReport, command_subject, event_subject};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

pub use async_nats::Client;

/// The stream of jobs (work queue).
pub const CMD_STREAM: &str = "RW_CMD";
/// The stream of agents' events (reports).
pub const EVT_STREAM: &str = "RW_EVT";
/// How long JetStream remembers a `Nats-Msg-Id` to drop a repeated publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long `RW_EVT` keeps an event.
pub const EVENT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream of components deployment jobs name by sha256, in chunks.
pub const BLOB_STREAM: &str = "RW_BLOB";
/// Bytes of a component per message of `RW_BLOB`.
pub const BLOB_CHUNK_BYTES: usize = 512 * 1024;
/// How long `RW_BLOB` keeps a chunk (a dispatch stores it again if it is gone).
pub const BLOB_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the control plane trusts its note that a component is stored.
const BLOB_NOTED: Duration = Duration::from_secs(600);
/// The oldest nats-server accepted.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 11, 0);

/// Room for the headers (`Nats-Msg-Id`, …) of a message whose payload is
/// [`MAX_MESSAGE_BYTES`]: the server counts headers and payload against a stream's limit.
const HEADER_ROOM: usize = 4096;
/// Fetch requests wait this long on the server for a job.
const FETCH_EXPIRES: Duration = Duration::from_secs(5);
/// Longest pause between retries after a transport error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Reports kept to answer a repeated dispatch of a job already answered (its report,
/// published again, would be dropped as a duplicate within the window).
const RECENT_REPORTS: usize = 4096;
const RECENT_REPORT_AGE: Duration = Duration::from_secs(300);
/// Reports nobody waits for, queued for [`JetStreamDispatch::take_unclaimed`].
const UNCLAIMED_CAPACITY: usize = 1024;
/// Attempts to publish a report (and to double-ack its job) before giving the job back.
const REPLY_ATTEMPTS: u32 = 5;

/// Connect to NATS at `url` as `name` (shown in the server's connection list), with the
/// user credentials file `credentials` when given, and refuse a server older than 2.11.
/// The client reconnects by itself after a disconnection.
pub async fn connect(
    url: &str,
    credentials: Option<&Path>,
    name: &str,
) -> Result<Client, BusError> {
    connect_with(url, credentials, name, None).await
}

/// [`connect`] with replies to this client under `inbox_prefix` instead of `_INBOX`: an
/// agent's NATS user may subscribe only below its own prefix
/// (`nats_auth::agent_inbox_prefix`), so no host reads another's replies.
pub async fn connect_with(
    url: &str,
    credentials: Option<&Path>,
    name: &str,
    inbox_prefix: Option<&str>,
) -> Result<Client, BusError> {
    let log_name = name.to_string();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(10))
        .event_callback(move |event| {
            let log_name = log_name.clone();
            async move { warn(&format!("{log_name}: NATS {event}")) }
        });
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(path) = credentials {
        options = options.credentials_file(path).await.map_err(|e| {
            BusError::Transport(format!(
                "cannot read the NATS credentials file {}: {e}",
                path.display()
            ))
        })?;
    }
    let client = options
        .connect(url)
        .await
        .map_err(|e| BusError::Transport(format!("cannot connect to NATS at {url:?}: {e}")))?;
    check_server_version(&client.server_info().version)?;
    Ok(client)
}

/// Accept a nats-server version `found` (`2.15.1`, `v2.11.0-RC.1`) of at least
/// [`MIN_SERVER_VERSION`].
pub fn check_server_version(found: &str) -> Result<(), BusError> {
    let parsed = parse_version(found).ok_or_else(|| {
        BusError::Refused(format!(
            "cannot read the nats-server version {:?}: install nats-server 2.11 or later",
            escape(found)
        ))
    })?;
    if parsed < MIN_SERVER_VERSION {
        let (a, b, c) = MIN_SERVER_VERSION;
        return Err(BusError::Refused(format!(
            "nats-server {} is too old: install nats-server {a}.{b}.{c} or later (older servers \
             silently ignore consumer filters and message TTLs)",
            escape(found)
        )));
    }
    Ok(())
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

fn nats_err(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Transport(format!("{what}: {e}"))
}

/// Create or update the streams `RW_CMD`, `RW_EVT` and `RW_BLOB` (see the module's documentation).
/// Idempotent: several control-plane processes may call it.
pub async fn ensure_streams(client: &Client) -> Result<(), BusError> {
    let js = jetstream::new(client.clone());
    let max_message_size = (MAX_MESSAGE_BYTES + HEADER_ROOM) as i32;
    let cmd = stream::Config {
        name: CMD_STREAM.to_string(),
        description: Some("runwarden jobs for agents".to_string()),
        subjects: vec!["rw.v1.cmd.>".to_string()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size,
        ..Default::default()
    };
    let evt = stream::Config {
        name: EVT_STREAM.to_string(),
        description: Some("runwarden agents' events".to_string()),
        subjects: vec!["rw.v1.evt.>".to_string()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: EVENT_MAX_AGE,
        max_message_size,
        ..Default::default()
    };
    let blob = stream::Config {
        name: BLOB_STREAM.to_string(),
        description: Some("runwarden components named by deployment jobs".to_string()),
        subjects: vec!["rw.v1.blob.>".to_string()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: BLOB_MAX_AGE,
        max_messages_per_subject: 1,
        allow_direct: true,
        max_message_size,
        ..Default::default()
    };
    for config in [cmd, evt, blob] {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| nats_err(&format!("cannot create or update stream {name}"), e))?;
    }
    Ok(())
}

/// How an agent's consumer redelivers.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// A delivery not acked (nor kept in progress) this long is delivered again; the agent
    /// sends AckProgress every third of it while it runs a job.
    pub ack_wait: Duration,
    /// Deliveries of one job at most (then it stays in the stream, undelivered).
    pub max_deliver: i64,
    /// Jobs delivered and not yet acked at most (the agent runs at most so many at once).
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            max_ack_pending: 16,
        }
    }
}

/// Check that `v` (a tenant or host name) is one subject token.
fn subject_token(field: &'static str, v: &str) -> Result<(), BusError> {
    runwarden_proto::check_name(field, v)
        .map_err(|e| BusError::Refused(format!("the {field} name {}", e.message)))?;
    if v.contains('.') {
        return Err(BusError::Refused(format!(
            "the {field} name {v:?} holds a '.', which NATS reads as a subject separator: \
             the NATS bus carries names of letters, digits and - _ @ : only"
        )));
    }
    Ok(())
}

/// The subject of chunk `index` of the component `sha256` of `tenant`.
pub fn blob_subject(tenant: &str, sha256: &str, index: usize) -> String {
    format!("rw.v1.blob.{tenant}.{sha256}.{index}")
}

fn check_sha256(sha256: &str) -> Result<(), BusError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Ok(());
    }
    Err(BusError::Refused(format!(
        "{:?} is not a sha256 (64 lowercase hex digits)",
        escape(sha256)
    )))
}

/// The durable consumer name of the agent of `host` of `tenant`: `agent-{t}__{h}` where
/// letters, digits and `-` stay and every other byte becomes `_xx` (hex), so distinct
/// pairs get distinct names; a name longer than 200 bytes becomes
/// `agent-sha256-{hex of SHA-256(tenant NUL host)}` (no `__`, so it meets no readable name).
pub fn agent_consumer_name(tenant: &str, host: &str) -> String {
    fn enc(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' {
                out.push(b as char);
            } else {
                out.push_str(&format!("_{b:02x}"));
            }
        }
    }
    let mut name = String::from("agent-");
    enc(tenant, &mut name);
    name.push_str("__");
    enc(host, &mut name);
    if name.len() <= 200 {
        return name;
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(host.as_bytes());
    format!("agent-sha256-{}", hex::encode(h.finalize()))
}

/// Create (or update to `settings`) the durable consumer of the agent of `host` of
/// `tenant`: the control plane calls it when the host enrolls.
pub async fn ensure_agent_consumer(
    client: &Client,
    tenant: &str,
    host: &str,
    settings: &ConsumerSettings,
) -> Result<(), BusError> {
    subject_token("tenant", tenant)?;
    subject_token("host", host)?;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(CMD_STREAM).await.map_err(|e| {
        nats_err(
            &format!("cannot open stream {CMD_STREAM} (ensure_streams first)"),
            e,
        )
    })?;
    let name = agent_consumer_name(tenant, host);
    let made = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("runwarden agent {tenant}/{host}")),
            filter_subject: command_subject(tenant, host),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: settings.max_deliver,
            max_ack_pending: settings.max_ack_pending,
            // The consumer's state (what was delivered, what acked) in the NATS server's
            // memory, not synced to disk at every delivery and ack: that was most of what
            // the NATS server spent per job with a thousand agents. Nothing it held is
            // lost when the NATS server restarts: an acked job has left the work queue
            // (the stream is on disk), and every other is delivered again to the
            // consumer, made again (see `runwarden server`), and answered from the agent's
            // log if it ran.
            memory_storage: true,
            ..Default::default()
        })
        .await;
    match made {
        Ok(_) => Ok(()),
        // Made by an earlier runwarden with other settings (which NATS may refuse to
        // change in place): it serves as it is.
        Err(e) => match stream.get_consumer::<consumer::pull::Config>(&name).await {
            Ok(_) => Ok(()),
            Err(_) => Err(nats_err(
                &format!("cannot create consumer {name} on {CMD_STREAM}"),
                e,
            )),
        },
    }
}

/// Print a line for the operator on stderr, control characters escaped (a report's text
/// comes from the network).
fn warn(line: &str) {
    eprintln!("runwarden bus: {}", escape(line));
}

/// `s` with control characters escaped, cut at 1000 characters.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 1000 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Push an account JWT to a NATS server with the full resolver, as a system account user
/// (`client`, connected with `nats_auth::Permissions::claims_pusher`) on `subject`
/// (`nats_auth::claims_update_subject`): the server stores it and applies it at once —
/// limits changed, revoked users' connections closed and refused from then on.
pub async fn push_account_jwt(client: &Client, subject: String, jwt: &str) -> Result<(), BusError> {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject, jwt.to_string().into()),
    )
    .await
    .map_err(|_| BusError::Timeout("the NATS server's answer to an account update".into()))?
    .map_err(|e| match e.kind() {
        async_nats::RequestErrorKind::NoResponders => BusError::Refused(
            "no NATS server answers account updates: it is not in operator mode, or this \
             user is not of its system account (configure it as `runwarden server \
             --init-nats` writes)"
                .into(),
        ),
        _ => BusError::Transport(format!("an account update: {e}")),
    })?;
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).map_err(|_| {
        BusError::Refused("the NATS server's answer to an account update is not JSON".into())
    })?;
    if answer["data"]["code"] == 200 {
        Ok(())
    } else {
        Err(BusError::Refused(format!(
            "the NATS server refused the account update: {}",
            answer["error"]
        )))
    }
}

/// Whether `client` is connected to NATS now.
pub fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Resolves once the connection is down (checked every 250 ms).
async fn disconnected(client: &Client) {
    while is_connected(client) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Resolves once the connection went down and came back.
async fn reconnected(client: Client) {
    disconnected(&client).await;
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(MAX_BACKOFF)
}

// ---------------------------------------------------------------------------------------
// The control plane's end.

/// The control plane's end: publishes jobs on `RW_CMD` and waits for their reports.
pub struct JetStreamDispatch {
    js: jetstream::Context,
    /// Components known stored on `RW_BLOB`, by (tenant, sha256), and when that was seen.
    blobs: Mutex<HashMap<(String, String), Instant>>,
    shared: Arc<Shared>,
    answer_timeout: Duration,
    unclaimed: Mutex<Option<mpsc::Receiver<RunReport>>>,
    reader: tokio::task::JoinHandle<()>,
}

struct Shared {
    state: Mutex<Waiting>,
    unclaimed: mpsc::Sender<RunReport>,
}

#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// By job id: who waits, for which address.
    waiters: HashMap<String, Vec<(u64, Address, oneshot::Sender<RunReport>)>>,
    /// Recent reports by job id, with the tenant they came from.
    recent: HashMap<String, (String, RunReport)>,
    order: VecDeque<(String, Instant)>,
}

impl Waiting {
    fn remember(&mut self, tenant: &str, report: &RunReport) {
        let now = Instant::now();
        while let Some((job, at)) = self.order.front() {
            if self.order.len() < RECENT_REPORTS && now.duration_since(*at) < RECENT_REPORT_AGE {
                break;
            }
            self.recent.remove(job);
            self.order.pop_front();
        }
        if self
            .recent
            .insert(report.job.clone(), (tenant.to_string(), report.clone()))
            .is_none()
        {
            self.order.push_back((report.job.clone(), now));
        }
    }
}

/// Removes its waiter when the dispatch ends (answered, timed out or cancelled).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    job: &'a str,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = state.waiters.get_mut(self.job) {
            list.retain(|(id, _, _)| *id != self.id);
            if list.is_empty() {
                state.waiters.remove(self.job);
            }
        }
    }
}

impl JetStreamDispatch {
    /// Start reading reports (from the end of `RW_EVT`, which [`ensure_streams`] makes)
    /// and return the dispatcher; a dispatch waits at most `answer_timeout` for its
    /// report once the job is stored.
    pub async fn start(
        client: &Client,
        answer_timeout: Duration,
    ) -> Result<JetStreamDispatch, BusError> {
        let js = jetstream::new(client.clone());
        let mut stream = js.get_stream(EVT_STREAM).await.map_err(|e| {
            nats_err(
                &format!("cannot open stream {EVT_STREAM} (ensure_streams first)"),
                e,
            )
        })?;
        let last = stream
            .info()
            .await
            .map_err(|e| nats_err(&format!("cannot read stream {EVT_STREAM}"), e))?
            .state
            .last_sequence;
        let messages = report_messages(&js, last + 1).await?;
        let (tx, rx) = mpsc::channel(UNCLAIMED_CAPACITY);
        let shared = Arc::new(Shared {
            state: Mutex::new(Waiting::default()),
            unclaimed: tx,
        });
        let reader = tokio::spawn(read_reports(js.clone(), shared.clone(), messages, last));
        Ok(JetStreamDispatch {
            js,
            blobs: Mutex::default(),
            shared,
            answer_timeout,
            unclaimed: Mutex::new(Some(rx)),
            reader,
        })
    }

    /// The reports nobody here waited for (a dispatch that timed out, another
    /// control-plane process's jobs, jobs of before a restart), to apply idempotently by
    /// job id. Only the first call gets the receiver; while nobody reads it, at most 1024
    /// wait and later ones are dropped with a line on stderr.
    pub fn take_unclaimed(&self) -> Option<mpsc::Receiver<RunReport>> {
        self.unclaimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for JetStreamDispatch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn report_messages(
    js: &jetstream::Context,
    start: u64,
) -> Result<consumer::pull::Ordered, BusError> {
    let stream = js
        .get_stream(EVT_STREAM)
        .await
        .map_err(|e| nats_err(&format!("cannot open stream {EVT_STREAM}"), e))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: "rw.v1.evt.*.*.report".to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            // Pulls of 5 s (not 30 s): a lost pull is noticed sooner.
            max_expires: FETCH_EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_err("cannot create the report consumer", e))?;
    consumer
        .messages()
        .await
        .map_err(|e| nats_err("cannot read reports", e))
}

/// The report reader: one per dispatcher, for its life. It recreates its consumer after
/// the last report seen whenever the stream of messages fails, with bounded back-off.
async fn read_reports(
    js: jetstream::Context,
    shared: Arc<Shared>,
    messages: consumer::pull::Ordered,
    mut last: u64,
) {
    let mut messages = Some(messages);
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some(current) = messages.as_mut() else {
            tokio::time::sleep(backoff).await;
            backoff = next_backoff(backoff);
            match report_messages(&js, last + 1).await {
                Ok(m) => messages = Some(m),
                Err(e) => warn(&format!("reports: {e}; retrying")),
            }
            continue;
        };
        let next = tokio::select! {
            next = current.next() => Some(next),
            () = reconnected(js.client()) => None,
        };
        let Some(next) = next else {
            // Pulls made before the disconnection are gone with it: read again now rather
            // than after missed heartbeats.
            messages = None;
            backoff = Duration::from_millis(50);
            continue;
        };
        match next {
            Some(Ok(message)) => {
                backoff = Duration::from_millis(250);
                if let Ok(info) = message.info() {
                    last = last.max(info.stream_sequence);
                }
                take_report(&shared, &message.message.subject, &message.message.payload);
            }
            Some(Err(e)) => {
                warn(&format!(
                    "reports: {e}; reading again after stream sequence {last}"
                ));
                messages = None;
            }
            None => {
                warn(&format!(
                    "reports: the consumer ended; reading again after stream sequence {last}"
                ));
                messages = None;
            }
        }
    }
}

/// `(tenant, host)` of a report subject `rw.v1.evt.{tenant}.{host}.report`.
fn report_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("rw.v1.evt.")?;
    let mut parts = rest.split('.');
    let (tenant, host, kind) = (parts.next()?, parts.next()?, parts.next()?);
    (kind == "report" && parts.next().is_none()).then_some((tenant, host))
}

/// Check a report and hand it to its waiter, or to the unclaimed queue.
fn take_report(shared: &Shared, subject: &str, payload: &[u8]) {
    let Some((tenant, host)) = report_subject(subject) else {
        warn(&format!(
            "dropped a message on {subject:?}: not a report subject"
        ));
        return;
    };
    if payload.len() > MAX_MESSAGE_BYTES {
        warn(&format!(
            "dropped a report on {subject:?}: {} bytes, at most {MAX_MESSAGE_BYTES}",
            payload.len()
        ));
        return;
    }
    let report: RunReport = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            warn(&format!(
                "dropped a report on {subject:?}: it does not parse: {e}"
            ));
            return;
        }
    };
    if report.host != host {
        warn(&format!(
            "dropped a report on {subject:?}: it names host {:?}",
            report.host
        ));
        return;
    }
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    state.remember(tenant, &report);
    let mut mine = Vec::new();
    if let Some(list) = state.waiters.get_mut(&report.job) {
        let mut i = 0;
        while i < list.len() {
            if list[i].1.tenant == tenant && list[i].1.host == host {
                mine.push(list.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        if list.is_empty() {
            state.waiters.remove(&report.job);
        }
    }
    drop(state);
    let mut claimed = false;
    for waiter in mine {
        claimed |= waiter.send(report.clone()).is_ok();
    }
    if claimed {
        return;
    }
    let job = report.job.clone();
    if let Err(mpsc::error::TrySendError::Full(_)) = shared.unclaimed.try_send(report) {
        warn(&format!(
            "dropped the report of job {job:?} from {tenant}/{host}: nobody waits for it and \
             {UNCLAIMED_CAPACITY} unclaimed reports are queued"
        ));
    }
}

/// Check a job id before it goes into a `Nats-Msg-Id` header: 1 to 256 visible ASCII
/// characters.
fn check_job_id(job_id: &str) -> Result<(), BusError> {
    if job_id.is_empty() || job_id.len() > 256 || !job_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BusError::Refused(format!(
            "the job id {:?} must be 1 to 256 visible ASCII characters",
            escape(job_id)
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Dispatch for JetStreamDispatch {
    /// Store the job on `RW_CMD` (awaiting the PubAck), then wait for its report. On
    /// [`BusError::Transport`] or [`BusError::Timeout`] the caller may dispatch the same
    /// job with the same id again: it is stored once within the duplicate window, and a
    /// report already received is returned at once.
    async fn dispatch(
        &self,
        to: &Address,
        job_id: &str,
        job: Vec<u8>,
    ) -> Result<RunReport, BusError> {
        if job.len() > MAX_MESSAGE_BYTES {
            return Err(BusError::Refused(format!(
                "the job {job_id:?} is {} bytes; the bus carries at most {MAX_MESSAGE_BYTES}",
                job.len()
            )));
        }
        subject_token("tenant", &to.tenant)?;
        subject_token("host", &to.host)?;
        check_job_id(job_id)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((tenant, report)) = state.recent.get(job_id)
                && *tenant == to.tenant
                && report.host == to.host
            {
                return Ok(report.clone());
            }
            state.next_id += 1;
            let id = state.next_id;
            state
                .waiters
                .entry(job_id.to_string())
                .or_default()
                .push((id, to.clone(), tx));
            id
        };
        let _guard = WaiterGuard {
            shared: &self.shared,
            job: job_id,
            id,
        };
        let subject = command_subject(&to.tenant, &to.host);
        self.js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(job.into())
                    .message_id(job_id),
            )
            .await
            .map_err(|e| nats_err(&format!("cannot publish job {job_id:?}"), e))?
            .await
            .map_err(|e| {
                nats_err(
                    &format!("job {job_id:?} was not confirmed stored (dispatch it again)"),
                    e,
                )
            })?;
        match tokio::time::timeout(self.answer_timeout, rx).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(_)) => Err(BusError::Transport("the report reader stopped".to_string())),
            Err(_) => Err(BusError::Timeout(to.host.clone())),
        }
    }

    /// Store `bytes` on `RW_BLOB` in chunks ([`blob_subject`]), each publish confirmed,
    /// the last chunk last: a component whose last chunk is there is there whole. One
    /// already stored (noted here in the last 10 minutes, or its last chunk found) is not
    /// sent again.
    async fn store_blob(&self, tenant: &str, sha256: &str, bytes: &[u8]) -> Result<bool, BusError> {
        if bytes.is_empty() {
            return Ok(false);
        }
        subject_token("tenant", tenant)?;
        check_sha256(sha256)?;
        let key = (tenant.to_string(), sha256.to_string());
        let noted = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < BLOB_NOTED);
        if noted {
            return Ok(true);
        }
        let chunks: Vec<&[u8]> = bytes.chunks(BLOB_CHUNK_BYTES).collect();
        let last = chunks.len() - 1;
        if !self
            .has_chunk(tenant, sha256, last, chunks[last].len())
            .await?
        {
            for (i, chunk) in chunks.iter().enumerate() {
                self.js
                    .send_publish(
                        blob_subject(tenant, sha256, i),
                        jetstream::message::PublishMessage::build()
                            .payload(chunk.to_vec().into())
                            .message_id(format!("blob-{tenant}-{sha256}-{i}")),
                    )
                    .await
                    .map_err(|e| nats_err(&format!("cannot store component {sha256}"), e))?
                    .await
                    .map_err(|e| {
                        nats_err(&format!("component {sha256} was not confirmed stored"), e)
                    })?;
            }
        }
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Instant::now());
        Ok(true)
    }
}

impl JetStreamDispatch {
    /// Whether chunk `index` of `sha256` of `tenant` is on `RW_BLOB` with `len` bytes.
    async fn has_chunk(
        &self,
        tenant: &str,
        sha256: &str,
        index: usize,
        len: usize,
    ) -> Result<bool, BusError> {
        let stream = self
            .js
            .get_stream_no_info(BLOB_STREAM)
            .await
            .map_err(|e| nats_err(&format!("cannot use stream {BLOB_STREAM}"), e))?;
        match stream
            .direct_get_last_for_subject(blob_subject(tenant, sha256, index))
            .await
        {
            Ok(m) => Ok(m.payload.len() == len),
            Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => Ok(false),
            Err(e) => Err(nats_err(&format!("cannot read stream {BLOB_STREAM}"), e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The agent's end.

/// Makes [`JetStreamJobs::next`] return `None` (see [`JetStreamJobs::stopper`]).
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Close the link for good.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// The agent's end: the jobs of one host from its durable consumer.
pub struct JetStreamJobs {
    js: jetstream::Context,
    tenant: String,
    host: String,
    name: String,
    consumer: Option<consumer::PullConsumer>,
    /// How long a pull waits on the server for a job.
    pull_expiry: Duration,
    abandon_delay: Duration,
    stop_tx: Arc<watch::Sender<bool>>,
    stop: watch::Receiver<bool>,
    complained: bool,
    blobs: Arc<JetStreamBlobs>,
}

/// Where an agent fetches the components its tenant's deployment jobs name: `RW_BLOB`,
/// by direct get (see the module's documentation).
pub struct JetStreamBlobs {
    js: jetstream::Context,
    tenant: String,
}

impl JetStreamBlobs {
    /// The components of `tenant`'s deployment jobs, read through `client` (an agent's
    /// [`JetStreamJobs`] hands its deliveries one of these).
    pub fn new(client: &Client, tenant: &str) -> Result<JetStreamBlobs, BusError> {
        subject_token("tenant", tenant)?;
        Ok(JetStreamBlobs {
            js: jetstream::new(client.clone()),
            tenant: tenant.to_string(),
        })
    }
}

#[async_trait::async_trait]
impl Blobs for JetStreamBlobs {
    /// The chunks of `sha256` in order, `size` bytes in all; stops once more than `size`
    /// came (the caller refuses what is not `size` bytes of `sha256`).
    async fn fetch(&self, sha256: &str, size: u64) -> Result<Vec<u8>, BusError> {
        check_sha256(sha256)?;
        let size = usize::try_from(size)
            .map_err(|_| BusError::Refused(format!("a component of {size} bytes")))?;
        let stream = self
            .js
            .get_stream_no_info(BLOB_STREAM)
            .await
            .map_err(|e| nats_err(&format!("cannot use stream {BLOB_STREAM}"), e))?;
        let mut out = Vec::with_capacity(size);
        for i in 0..size.div_ceil(BLOB_CHUNK_BYTES) {
            let m = stream
                .direct_get_last_for_subject(blob_subject(&self.tenant, sha256, i))
                .await
                .map_err(|e| {
                    nats_err(&format!("cannot read chunk {i} of component {sha256}"), e)
                })?;
            out.extend_from_slice(&m.payload);
            if out.len() > size {
                break;
            }
        }
        Ok(out)
    }
}

impl JetStreamJobs {
    /// The jobs of `host` of `tenant`, from the consumer the control plane made with
    /// [`ensure_agent_consumer`] (waited for if it does not exist yet).
    pub fn new(client: &Client, tenant: &str, host: &str) -> Result<JetStreamJobs, BusError> {
        subject_token("tenant", tenant)?;
        subject_token("host", host)?;
        let (stop_tx, stop) = watch::channel(false);
        Ok(JetStreamJobs {
            js: jetstream::new(client.clone()),
            tenant: tenant.to_string(),
            host: host.to_string(),
            name: agent_consumer_name(tenant, host),
            consumer: None,
            pull_expiry: FETCH_EXPIRES,
            abandon_delay: Duration::from_secs(5),
            stop_tx: Arc::new(stop_tx),
            stop,
            complained: false,
            blobs: Arc::new(JetStreamBlobs {
                js: jetstream::new(client.clone()),
                tenant: tenant.to_string(),
            }),
        })
    }

    /// How long a pull waits on the server for a job (5 s unless set): an idle agent
    /// pulls again this often. A lost connection is noticed at once either way.
    pub fn with_pull_expiry(mut self, expiry: Duration) -> JetStreamJobs {
        self.pull_expiry = expiry.max(Duration::from_secs(1));
        self
    }

    /// How long an abandoned job waits before it is delivered again (5 s unless set).
    pub fn with_abandon_delay(mut self, delay: Duration) -> JetStreamJobs {
        self.abandon_delay = delay;
        self
    }

    /// A handle that closes this link for good: [`Jobs::next`] returns `None` then.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop_tx.clone())
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleep `d`, or less if stopped.
    async fn pause(&mut self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    fn complain(&mut self, line: String) {
        // One line per run of failures, not one per retry.
        if !self.complained {
            warn(&format!(
                "agent {}/{}: {line}; retrying",
                self.tenant, self.host
            ));
            self.complained = true;
        }
    }

    /// One job, or `None` when none came within the pull's expiry.
    async fn fetch_one(&mut self) -> Result<Option<jetstream::Message>, String> {
        if self.consumer.is_none() {
            let c: consumer::PullConsumer = self
                .js
                .get_consumer_from_stream(&self.name, CMD_STREAM)
                .await
                .map_err(|e| {
                    format!(
                        "cannot open consumer {} of stream {CMD_STREAM} (the control plane \
                         makes it when the host enrolls, and again at its next heartbeat after \
                         the NATS server restarted): {e}",
                        self.name
                    )
                })?;
            self.consumer = Some(c);
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(None);
        };
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(self.pull_expiry)
            .messages()
            .await
            .map_err(|e| format!("cannot fetch a job: {e}"))?;
        let mut stop = self.stop.clone();
        let client = self.js.client();
        let next = tokio::select! {
            n = tokio::time::timeout(self.pull_expiry + Duration::from_secs(5), batch.next()) => n,
            _ = stop.wait_for(|s| *s) => return Ok(None),
            // The pull died with the connection: pull again once it is back (a job sent
            // for it meanwhile comes again after the ack wait).
            () = disconnected(&client) => return Err("the connection to NATS is down".into()),
        };
        match next {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(Ok(m))) => Ok(Some(m)),
            Ok(Some(Err(e))) => Err(format!("fetching a job: {e}")),
        }
    }

    fn delivery(&self, message: jetstream::Message) -> Delivery {
        let ack_wait = self
            .consumer
            .as_ref()
            .map_or(ConsumerSettings::default().ack_wait, |c| {
                c.cached_info().config.ack_wait
            });
        // A job larger than the bus carries cannot come through RW_CMD (its limit), but the
        // agent refuses it with a signed refusal all the same, so it is handed over.
        let job = message.message.payload.to_vec();
        let progress = {
            let message = message.clone();
            let every = (ack_wait / 3).max(Duration::from_millis(100));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let _ = message.ack_with(jetstream::AckKind::Progress).await;
                }
            })
        };
        Delivery::new(
            job,
            Box::new(JetStreamReply {
                js: self.js.clone(),
                subject: event_subject(&self.tenant, &self.host, "report"),
                who: format!("{}/{}", self.tenant, self.host),
                message: Some(message),
                progress,
                abandon_delay: self.abandon_delay,
            }),
        )
        .with_blobs(self.blobs.clone())
    }
}

#[async_trait::async_trait]
impl Jobs for JetStreamJobs {
    async fn next(&mut self) -> Option<Delivery> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stopped() {
                return None;
            }
            match self.fetch_one().await {
                Ok(Some(message)) => {
                    self.complained = false;
                    return Some(self.delivery(message));
                }
                Ok(None) => {
                    self.complained = false;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    self.complain(e);
                    // Look the consumer up again: it may have been recreated.
                    self.consumer = None;
                    self.pause(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }
}

/// The way back for one job: report, then double ack; or nak.
struct JetStreamReply {
    js: jetstream::Context,
    subject: String,
    who: String,
    message: Option<jetstream::Message>,
    progress: tokio::task::JoinHandle<()>,
    abandon_delay: Duration,
}

impl JetStreamReply {
    async fn publish(&self, report: &RunReport) -> Result<(), String> {
        let payload = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        let ack = self
            .js
            .send_publish(
                self.subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(format!("report-{}", report.job)),
            )
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map(|_| ()).map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Reply for JetStreamReply {
    async fn send(mut self: Box<Self>, report: RunReport) {
        let mut backoff = Duration::from_millis(200);
        let mut published = false;
        for attempt in 1..=REPLY_ATTEMPTS {
            match self.publish(&report).await {
                Ok(()) => {
                    published = true;
                    break;
                }
                Err(e) => {
                    warn(&format!(
                        "agent {}: the report of job {:?} was not stored (attempt {attempt} of \
                         {REPLY_ATTEMPTS}): {e}",
                        self.who, report.job
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
        let Some(message) = self.message.take() else {
            return;
        };
        if !published {
            // Let the job come again: the agent answers it from its log then.
            self.progress.abort();
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(self.abandon_delay)))
                .await;
            return;
        }
        for attempt in 1..=REPLY_ATTEMPTS {
            match message.double_ack().await {
                Ok(()) => break,
                Err(e) => {
                    // Unacked, the job comes again and is answered from the log.
                    warn(&format!(
                        "agent {}: the ack of job {:?} was not confirmed (attempt {attempt} of \
                         {REPLY_ATTEMPTS}): {e}",
                        self.who, report.job
                    ));
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
        self.progress.abort();
    }

    async fn abandon(mut self: Box<Self>) {
        self.progress.abort();
        if let Some(message) = self.message.take()
            && let Err(e) = message
                .ack_with(jetstream::AckKind::Nak(Some(self.abandon_delay)))
                .await
        {
            warn(&format!("agent {}: cannot give a job back: {e}", self.who));
        }
    }
}

impl Drop for JetStreamReply {
    fn drop(&mut self) {
        self.progress.abort();
        // Dropped unanswered (the agent's task died): give the job back now rather than
        // after the ack wait.
        if let Some(message) = self.message.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Agents' other events: log segments and heartbeats.

/// The durable consumer, shared by every control-plane process, that takes agents' log
/// segments and heartbeats.
pub const EVENTS_CONSUMER: &str = "control-events";

/// The event kinds [`Events`] takes: `log` (a [`runwarden_proto::bus::LogSegment`]),
/// `heartbeat` and `handup` (a [`runwarden_proto::bus::HandUp`]).
pub const EVENT_KINDS: [&str; 3] = ["log", "heartbeat", "handup"];

/// Publish `payload` as event `kind` of `host` of `tenant` on `RW_EVT`, stored once per
/// `msg_id` within the duplicate window; `Ok` once the server confirmed it stored.
pub async fn publish_event(
    client: &Client,
    tenant: &str,
    host: &str,
    kind: &str,
    msg_id: &str,
    payload: Vec<u8>,
) -> Result<(), BusError> {
    subject_token("tenant", tenant)?;
    subject_token("host", host)?;
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(BusError::Refused(format!(
            "a {kind} event of {} bytes; the bus carries at most {MAX_MESSAGE_BYTES}",
            payload.len()
        )));
    }
    let js = jetstream::new(client.clone());
    js.send_publish(
        event_subject(tenant, host, kind),
        jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id),
    )
    .await
    .map_err(|e| nats_err(&format!("cannot publish a {kind} event"), e))?
    .await
    .map_err(|e| nats_err(&format!("a {kind} event was not confirmed stored"), e))?;
    Ok(())
}

/// One agent's event as the control plane takes it. The subject names the tenant and the
/// host; nothing else about it is trusted (a log segment is checked against the host's
/// enrolled key).
pub struct Event {
    /// Tenant, from the subject.
    pub tenant: String,
    /// Host, from the subject.
    pub host: String,
    /// `log` or `heartbeat`.
    pub kind: String,
    /// The payload.
    pub payload: Vec<u8>,
    message: jetstream::Message,
}

impl Event {
    /// Done with it (whatever the outcome): it is not delivered again.
    pub async fn ack(self) {
        if let Err(e) = self.message.double_ack().await {
            warn(&format!("acknowledging an event of {}: {e}", self.host));
        }
    }

    /// Not now (the store failed): deliver it again after `delay`.
    pub async fn retry(self, delay: Duration) {
        let _ = self
            .message
            .ack_with(jetstream::AckKind::Nak(Some(delay)))
            .await;
    }
}

/// The control plane's end of agents' events: one at a time, in stream order, across
/// every control-plane process (a host's log segments must be mirrored in order).
pub struct Events {
    js: jetstream::Context,
    consumer: Option<consumer::PullConsumer>,
    complained: bool,
}

impl Events {
    /// Create (or update) the durable consumer [`EVENTS_CONSUMER`] and read from it.
    pub async fn open(client: &Client) -> Result<Events, BusError> {
        let js = jetstream::new(client.clone());
        let stream = js.get_stream(EVT_STREAM).await.map_err(|e| {
            nats_err(
                &format!("cannot open stream {EVT_STREAM} (ensure_streams first)"),
                e,
            )
        })?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(EVENTS_CONSUMER.to_string()),
                description: Some(
                    "runwarden control plane: agents' logs, heartbeats and hand-ups".into(),
                ),
                filter_subjects: EVENT_KINDS
                    .iter()
                    .map(|k| format!("rw.v1.evt.*.*.{k}"))
                    .collect(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                // In order: a segment is applied before the next one is delivered.
                max_ack_pending: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                nats_err(
                    &format!("cannot create consumer {EVENTS_CONSUMER} on {EVT_STREAM}"),
                    e,
                )
            })?;
        Ok(Events {
            js,
            consumer: Some(consumer),
            complained: false,
        })
    }

    /// The next event; waits (retrying with backoff across NATS restarts) until one comes.
    pub async fn next(&mut self) -> Event {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.fetch_one().await {
                Ok(Some(e)) => {
                    self.complained = false;
                    return e;
                }
                Ok(None) => continue,
                Err(line) => {
                    if !self.complained {
                        warn(&format!("agents' events: {line}; retrying"));
                        self.complained = true;
                    }
                    self.consumer = None;
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                }
            }
        }
    }

    async fn fetch_one(&mut self) -> Result<Option<Event>, String> {
        if self.consumer.is_none() {
            self.consumer = Some(
                self.js
                    .get_consumer_from_stream(EVENTS_CONSUMER, EVT_STREAM)
                    .await
                    .map_err(|e| format!("cannot open consumer {EVENTS_CONSUMER}: {e}"))?,
            );
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(None);
        };
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(FETCH_EXPIRES)
            .messages()
            .await
            .map_err(|e| format!("cannot fetch an event: {e}"))?;
        let client = self.js.client();
        let next = tokio::select! {
            n = tokio::time::timeout(FETCH_EXPIRES + Duration::from_secs(5), batch.next()) => n,
            () = disconnected(&client) => return Err("the connection to NATS is down".into()),
        };
        let message = match next {
            Err(_) | Ok(None) => return Ok(None),
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(format!("fetching an event: {e}")),
        };
        let subject = message.subject.to_string();
        let mut parts = subject.split('.');
        let (Some("rw"), Some("v1"), Some("evt"), Some(tenant), Some(host), Some(kind), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            warn(&format!(
                "an event on an unexpected subject {subject}: dropped"
            ));
            let _ = message.double_ack().await;
            return Ok(None);
        };
        Ok(Some(Event {
            tenant: tenant.to_string(),
            host: host.to_string(),
            kind: kind.to_string(),
            payload: message.payload.to_vec(),
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_servers_older_than_2_11() {
        let e = check_server_version("2.9.10").unwrap_err().to_string();
        assert!(
            e.contains("2.9.10") && e.contains("install nats-server 2.11.0 or later"),
            "{e}"
        );
        assert!(check_server_version("2.10.29").is_err());
        for ok in ["2.11.0", "2.15.1", "v2.12.3", "2.11.0-RC.1", "3.0.0"] {
            check_server_version(ok).unwrap();
        }
        for bad in ["", "two", "2", "2.x.1", "2.11.0.1"] {
            assert!(check_server_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn consumer_names_are_distinct_and_valid() {
        let pairs = [
            ("a_b", "c"),
            ("a", "b_c"),
            ("a", "b__c"),
            ("a__b", "c"),
            ("acme", "web-1"),
            ("acme", "web@1"),
            ("acme", "web:1"),
            ("acme", "web_1"),
        ];
        let names: std::collections::HashSet<_> = pairs
            .iter()
            .map(|(t, h)| agent_consumer_name(t, h))
            .collect();
        assert_eq!(names.len(), pairs.len());
        assert_eq!(agent_consumer_name("acme", "web-1"), "agent-acme__web-1");
        let long = "_".repeat(128);
        let n = agent_consumer_name(&long, "h:1");
        assert!(n.starts_with("agent-sha256-") && n.len() < 100, "{n}");
        for n in names.iter().chain([&n]) {
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn names_with_dots_are_refused() {
        assert!(subject_token("host", "web1.example").is_err());
        assert!(subject_token("host", "*").is_err());
        assert!(subject_token("host", "").is_err());
        subject_token("host", "web1@site:2").unwrap();
    }

    #[test]
    fn report_subjects_parse() {
        assert_eq!(report_subject("rw.v1.evt.t.h.report"), Some(("t", "h")));
        assert_eq!(report_subject("rw.v1.evt.t.h.x.report"), None);
        assert_eq!(report_subject("rw.v1.evt.t.h.heartbeat"), None);
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }
}
