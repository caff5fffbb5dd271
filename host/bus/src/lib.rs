//! How the control plane reaches a host's agent.
//!
//! The control plane hands a signed job (a DSSE envelope of a
//! [`RunJob`](runwarden_proto::bus::RunJob)) to a [`Dispatch`] and gets the agent's
//! [`RunReport`] back. The transport carries bytes and is trusted with nothing: the
//! agent checks the signature, the host and the tenant itself.
//!
//! [`in_process`] is the link of `runwarden up`: a channel from the control plane to the
//! agent task in the same process. NATS JetStream goes behind the same trait.

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
}

/// Deliver a signed job to the agent of `host` and wait for its report.
#[async_trait::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Deliver `job` (signed envelope bytes) to the agent of `host` and wait for its
    /// report.
    async fn dispatch(&self, host: &str, job: Vec<u8>) -> Result<RunReport, BusError>;
}

/// A job as the agent receives it, with the way back.
pub struct Delivery {
    /// The host it is addressed to.
    pub host: String,
    /// The signed envelope.
    pub job: Vec<u8>,
    reply: oneshot::Sender<RunReport>,
}

impl Delivery {
    /// Answer it.
    pub fn reply(self, report: RunReport) {
        // The control plane stopped waiting: the record is in the log all the same.
        let _ = self.reply.send(report);
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

impl AgentLink {
    /// The next job, or `None` once the control plane's end is dropped.
    pub async fn next(&mut self) -> Option<Delivery> {
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
    async fn dispatch(&self, host: &str, job: Vec<u8>) -> Result<RunReport, BusError> {
        if host != self.host {
            return Err(BusError::NoAgent(host.to_string()));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Delivery {
                host: host.to_string(),
                job,
                reply,
            })
            .await
            .map_err(|_| BusError::Gone(host.to_string()))?;
        answer.await.map_err(|_| BusError::Gone(host.to_string()))
    }
}
