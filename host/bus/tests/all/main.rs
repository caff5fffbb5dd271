//! Integration tests of runwarden-bus, against a real nats-server where they need one
//! (`runwarden-testkit`: `RUNWARDEN_NATS_SERVER` or `target/nats-venv/bin/nats-server`).

#[cfg(feature = "nats-auth")]
mod auth;
