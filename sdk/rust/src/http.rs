//! HTTP to granted origins.
use crate::HostError;
pub use crate::bindings::runwarden::runbook::http::{Header, Request, Response};
use crate::bindings::runwarden::runbook::http as raw;

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HostError> {
    send(&Request { method: "GET".into(), url: url.into(), headers: Vec::new(), body: None, timeout_ms: None })
}

/// Send any request.
pub fn send(req: &Request) -> Result<Response, HostError> {
    raw::send(req)
}
