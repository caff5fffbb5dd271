//! Forwarding this host's log to the control plane, which mirrors it.
//!
//! The host's log is the agent's outbox: every record is in it (durable) before anything
//! is reported, so nothing needs a second buffer. A [`LogSegment`] carries consecutive
//! records with the host's signed checkpoint at their end; the control plane takes it only
//! if it continues what it holds under the key the host enrolled with. Segments are sized
//! to fit one bus message.

use crate::executor::{AgentError, Executor};
use runwarden_evidence as ev;
use runwarden_proto::bus::{LogSegment, MAX_MESSAGE_BYTES};

/// Most bytes of envelopes in one segment (the rest of the message is the checkpoint and
/// JSON framing, far below the margin).
pub const MAX_SEGMENT_BYTES: usize = MAX_MESSAGE_BYTES * 3 / 4;

impl Executor {
    /// Sign (and store) a checkpoint of this host's log at `size` records, or return the
    /// one stored.
    pub async fn checkpoint_at(&self, size: u64) -> Result<String, AgentError> {
        if let Some((s, note)) = self.log().checkpoint_at_most(size).await?
            && s == size
        {
            return Ok(note);
        }
        let cp = ev::Checkpoint {
            origin: self.origin().to_string(),
            size,
            root: self.log().root_at(size).await?,
        };
        let note = cp.sign(self.key())?;
        self.log().put_checkpoint(size, &cp.root, &note).await?;
        Ok(note)
    }

    /// The records of this host's log from `from` on — as many as fit one message, at most
    /// [`ev::MAX_SEGMENT_RECORDS`] — with the signed checkpoint at their end; `None` when
    /// the log holds nothing from `from` on.
    ///
    /// When record `from` is missing (deleted from this host's buffer before it was
    /// forwarded), the records after the hole go without a checkpoint: the tree can no
    /// longer be signed, and the control plane raises the gap.
    pub async fn segment(&self, from: u64) -> Result<Option<LogSegment>, AgentError> {
        let records = self
            .log()
            .range(from, from.saturating_add(ev::MAX_SEGMENT_RECORDS as u64))
            .await?;
        let Some(first) = records.first().map(|r| r.index) else {
            return Ok(None);
        };
        let mut envelopes = Vec::new();
        let mut bytes = 0;
        for r in records {
            if r.index != first + envelopes.len() as u64 {
                break;
            }
            // One record always goes, whatever its size (records are bounded far below).
            if !envelopes.is_empty() && bytes + r.envelope.len() > MAX_SEGMENT_BYTES {
                break;
            }
            bytes += r.envelope.len();
            envelopes.push(String::from_utf8(r.envelope).map_err(|_| {
                AgentError::Evidence(ev::Error::MalformedRecord(format!(
                    "record {} of this host's log is not UTF-8",
                    r.index
                )))
            })?);
        }
        let end = first + envelopes.len() as u64;
        let checkpoint = if first == from {
            self.checkpoint_at(end).await?
        } else {
            String::new()
        };
        Ok(Some(LogSegment {
            origin: self.origin().to_string(),
            first,
            checkpoint,
            envelopes,
        }))
    }
}
