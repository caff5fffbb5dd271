//! How the control plane reaches a host's agent.
//!
//! The control plane hands a signed job (a DSSE envelope of a
//! [`RunJob`](runwarden_proto::bus::RunJob)) to a [`Dispatch`] and gets the agent's
//! [`RunReport`] back. The agent takes jobs from its [`Jobs`] and answers each
//! [`Delivery`]. The transport carries bytes and is trusted with nothing: the agent checks
//! the signature, the host and the tenant itself, and answers a job delivered twice from
//! its log.
//!
//! [`in_process`] is the link of `runwarden up`: a channel from the control plane to the
//! agent task in the same process. [`jetstream`] (feature `jetstream`) carries the same
//! traits over NATS JetStream between processes and hosts.
//!
//! With the feature `nats-auth`, [`nats_auth`] mints the NATS operator, account (one per
//! tenant) and user credentials that isolate tenants and hosts at the NATS server.

#[cfg(feature = "jetstream")]
pub mod jetstream;
#[cfg(feature = "nats-auth")]
pub mod nats_auth;

use runwarden_proto::bus::RunReport;
use tokio::sync::{mpsc, oneshot};

/// Why a job could not be delivered or answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// No agent serves the host on this link.
    #[error("no agent serves host {0:?} on this link")]
    NoAgent(String),
    /// The agent went away before it answered (it may or may not have run the job: ask
    /// it again with the same job, which it answers from its log).
    #[error("the agent of host {0:?} stopped before it answered")]
    Gone(String),
    /// No answer came in time (the job may still run: ask again with the same job).
    #[error("the agent of host {0:?} did not answer in time")]
    Timeout(String),
    /// The transport failed.
    #[error("the bus: {0}")]
    Transport(String),
    /// The bus will not carry this (too large, a name it cannot carry, a server too old).
    #[error("{0}")]
    Refused(String),
}

/// Where a job goes: a host of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// The tenant that owns the host.
    pub tenant: String,
    /// The host.
    pub host: String,
}

/// Deliver a signed job to the agent of a host and wait for its report.
#[async_trait::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Deliver `job` (signed envelope bytes of the job with id `job_id`) to the agent of
    /// `to` and wait for its report. Delivering the same job again is safe: the agent
    /// answers it from its log.
    async fn dispatch(
        &self,
        to: &Address,
        job_id: &str,
        job: Vec<u8>,
    ) -> Result<RunReport, BusError>;

    /// Whether the link reaches agents now (NATS: the client is connected). The
    /// in-process link always does.
    fn connected(&self) -> bool {
        true
    }

    /// Keep `bytes` (whose SHA-256 is `sha256`) where the agents of `tenant` can fetch
    /// them ([`Blobs`]), so that a job can name a component rather than carry it.
    /// `Ok(false)`: this link keeps no blobs (jobs carry components inline).
    async fn store_blob(
        &self,
        _tenant: &str,
        _sha256: &str,
        _bytes: &[u8],
    ) -> Result<bool, BusError> {
        Ok(false)
    }
}

/// Where an agent fetches what a job names by reference (a component too large to
/// carry inline). The transport is trusted with nothing here either: the agent checks
/// the bytes against the signed job's SHA-256 before it uses them.
#[async_trait::async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// The `size` bytes stored under `sha256` for this agent's tenant.
    async fn fetch(&self, sha256: &str, size: u64) -> Result<Vec<u8>, BusError>;
}

/// Where an agent takes its jobs from.
#[async_trait::async_trait]
pub trait Jobs: Send + 'static {
    /// The next job, or `None` once the link is closed for good.
    async fn next(&mut self) -> Option<Delivery>;
}

/// How a transport carries an answer back (and settles the delivery: acknowledged only
/// once the answer is on its way).
#[async_trait::async_trait]
pub trait Reply: Send + 'static {
    /// Send `report` back.
    async fn send(self: Box<Self>, report: RunReport);
    /// The agent could not answer (its log failed): let the job come again later.
    async fn abandon(self: Box<Self>) {}
}

/// A job as the agent receives it, with the way back.
pub struct Delivery {
    /// The signed envelope.
    pub job: Vec<u8>,
    reply: Box<dyn Reply>,
    blobs: Option<std::sync::Arc<dyn Blobs>>,
}

impl Delivery {
    /// A delivery of `job` answered through `reply` (for transports).
    pub fn new(job: Vec<u8>, reply: Box<dyn Reply>) -> Delivery {
        Delivery {
            job,
            reply,
            blobs: None,
        }
    }

    /// The same, with the store where what the job names by reference is fetched.
    pub fn with_blobs(mut self, blobs: std::sync::Arc<dyn Blobs>) -> Delivery {
        self.blobs = Some(blobs);
        self
    }

    /// Where what the job names by reference is fetched (`None`: this link carries
    /// everything inline).
    pub fn blobs(&self) -> Option<&dyn Blobs> {
        self.blobs.as_deref()
    }

    /// Answer it.
    pub async fn reply(self, report: RunReport) {
        self.reply.send(report).await
    }

    /// Give it up unanswered (the agent's log failed): the transport may deliver it again.
    pub async fn abandon(self) {
        self.reply.abandon().await
    }
}

struct ChannelReply(oneshot::Sender<RunReport>);

#[async_trait::async_trait]
impl Reply for ChannelReply {
    async fn send(self: Box<Self>, report: RunReport) {
        // The control plane stopped waiting: the record is in the log all the same.
        let _ = self.0.send(report);
    }
}

/// The control plane's end of an in-process link.
#[derive(Clone)]
pub struct ServerLink {
    host: String,
    tx: mpsc::Sender<Delivery>,
    blobs: std::sync::Arc<MemoryBlobs>,
}

/// The blobs of an in-process link: the components its jobs named, in memory.
#[derive(Default)]
struct MemoryBlobs(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<[u8]>>>);

#[async_trait::async_trait]
impl Blobs for MemoryBlobs {
    async fn fetch(&self, sha256: &str, _size: u64) -> Result<Vec<u8>, BusError> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.get(sha256)
            .map(|b| b.to_vec())
            .ok_or_else(|| BusError::Transport(format!("no component {sha256} on this link")))
    }
}

/// The agent's end of an in-process link.
pub struct AgentLink {
    rx: mpsc::Receiver<Delivery>,
}

#[async_trait::async_trait]
impl Jobs for AgentLink {
    async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// A link between the control plane and the one agent of `host` in the same process;
/// at most `capacity` jobs wait for the agent at once (the rest wait to be sent).
pub fn in_process(host: &str, capacity: usize) -> (ServerLink, AgentLink) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        ServerLink {
            host: host.to_string(),
            tx,
            blobs: Default::default(),
        },
        AgentLink { rx },
    )
}

#[async_trait::async_trait]
impl Dispatch for ServerLink {
    async fn dispatch(
        &self,
        to: &Address,
        _job_id: &str,
        job: Vec<u8>,
    ) -> Result<RunReport, BusError> {
        if to.host != self.host {
            return Err(BusError::NoAgent(to.host.clone()));
        }
        let (reply, answer) = oneshot::channel();
        let delivery =
            Delivery::new(job, Box::new(ChannelReply(reply))).with_blobs(self.blobs.clone());
        self.tx
            .send(delivery)
            .await
            .map_err(|_| BusError::Gone(to.host.clone()))?;
        answer.await.map_err(|_| BusError::Gone(to.host.clone()))
    }

    /// Kept in memory for this link's agent (the control plane names each component it
    /// deploys, so few are ever held).
    async fn store_blob(
        &self,
        _tenant: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<bool, BusError> {
        self.blobs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sha256.to_string())
            .or_insert_with(|| bytes.into());
        Ok(true)
    }
}
