//! Outcomes and errors.

use crate::bindings::runwarden::runbook::types as wit;
use std::fmt;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The problem was found and fixed.
    Healed,
    /// Nothing needed doing.
    NoOp,
    /// The runbook tried and could not fix the problem.
    Failed,
}

/// What a run returns when it completes.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Healed, no-op or failed.
    pub status: Status,
    /// One line for humans.
    pub summary: String,
    /// Structured details (a JSON object).
    pub details: serde_json::Value,
}

impl Outcome {
    /// A healed outcome.
    pub fn healed(summary: impl Into<String>) -> Self {
        Self::with(Status::Healed, summary)
    }
    /// A no-op outcome.
    pub fn no_op(summary: impl Into<String>) -> Self {
        Self::with(Status::NoOp, summary)
    }
    /// A failed outcome.
    pub fn failed(summary: impl Into<String>) -> Self {
        Self::with(Status::Failed, summary)
    }
    fn with(status: Status, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            summary: summary.into(),
            details: serde_json::json!({}),
        }
    }
    /// Attach structured details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub(crate) fn into_wit(self) -> wit::Outcome {
        wit::Outcome {
            status: match self.status {
                Status::Healed => wit::Status::Healed,
                Status::NoOp => wit::Status::NoOp,
                Status::Failed => wit::Status::Failed,
            },
            summary: self.summary,
            details: self.details.to_string(),
        }
    }
}

/// Why a run could not complete.
#[derive(Clone, Debug)]
pub enum RunError {
    /// The params did not fit.
    InvalidParams(String),
    /// A host call was denied.
    Denied(String),
    /// Anything else.
    Failed(String),
}

impl RunError {
    pub(crate) fn into_wit(self) -> wit::RunError {
        match self {
            RunError::InvalidParams(m) => wit::RunError::InvalidParams(m),
            RunError::Denied(m) => wit::RunError::Denied(m),
            RunError::Failed(m) => wit::RunError::Failed(m),
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::InvalidParams(m) => write!(f, "invalid params: {m}"),
            RunError::Denied(m) => write!(f, "denied: {m}"),
            RunError::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// The error a host call returns.
pub type HostError = wit::HostError;

impl From<HostError> for RunError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Denied(m) => RunError::Denied(m),
            HostError::NotFound(m) => RunError::Failed(format!("not found: {m}")),
            HostError::Timeout(m) => RunError::Failed(format!("timed out: {m}")),
            HostError::Invalid(m) => RunError::Failed(format!("invalid: {m}")),
            HostError::Failed(m) => RunError::Failed(m),
        }
    }
}

impl From<std::io::Error> for RunError {
    fn from(e: std::io::Error) -> Self {
        RunError::Failed(e.to_string())
    }
}
