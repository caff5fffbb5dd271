//! HTTP to granted origins.
use crate::HostError;
use crate::bindings::runwarden::runbook::http as raw;
pub use crate::bindings::runwarden::runbook::http::{Header, Request, Response};

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HostError> {
    send(&Request {
        method: "GET".into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout_ms: None,
    })
}

/// Send any request.
pub fn send(req: &Request) -> Result<Response, HostError> {
    raw::send(req)
}
