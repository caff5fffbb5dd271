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
}

impl Delivery {
    /// A delivery of `job` answered through `reply` (for transports).
    pub fn new(job: Vec<u8>, reply: Box<dyn Reply>) -> Delivery {
        Delivery { job, reply }
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
        self.tx
            .send(Delivery::new(job, Box::new(ChannelReply(reply))))
            .await
            .map_err(|_| BusError::Gone(to.host.clone()))?;
        answer.await.map_err(|_| BusError::Gone(to.host.clone()))
    }
}
