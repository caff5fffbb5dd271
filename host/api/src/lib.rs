//! The runwarden HTTP API: authenticated, versioned JSON over the control plane.
//!
//! [`serve`] takes a bound listener and a shutdown signal (so tests bind `127.0.0.1:0`
//! and stop it cleanly). Every route but `/healthz` and `/v1/openapi.json` needs an
//! `Authorization: Bearer <token>` whose scope covers it; every failure answers with
//! `{"error": {"code", "message"}}`. The routes are described in `/v1/openapi.json`
//! ([`openapi_document`]) and in this crate's README.

mod auth;
mod error;
mod listen;
mod mcp;
mod openapi;
mod routes;

pub use openapi::document as openapi_document;
pub use routes::{ApiConfig, serve};
