//! The NATS JetStream bus and NATS credentials against a real nats-server 2.15
//! (runwarden-testkit: `RUNWARDEN_NATS_SERVER` or `target/nats-venv/bin/nats-server`), one
//! server per test.

mod auth;
mod crash;
mod delivery;

use runwarden_bus::jetstream::{self, Client, ConsumerSettings, JetStreamDispatch, JetStreamJobs};
use runwarden_bus::{Address, Jobs};
use runwarden_proto::bus::{RunJob, RunReport};
use runwarden_testkit::Nats;
use std::time::Duration;

/// Every acknowledged message on disk before the PubAck: without it JetStream fsyncs every
/// 2 minutes and a SIGKILL loses acknowledged jobs. Production needs it too.
const DURABLE: &str = "jetstream { sync_interval: always }\n";

/// Consumers that redeliver fast, for tests.
fn fast() -> ConsumerSettings {
    ConsumerSettings {
        ack_wait: Duration::from_secs(2),
        max_deliver: 20,
        max_ack_pending: 16,
    }
}

async fn start_with(config: &str) -> (Nats, Client) {
    let nats = Nats::start_with_config(config);
    let client = jetstream::connect(&nats.url, None, "runwarden-bus-test")
        .await
        .unwrap();
    jetstream::ensure_streams(&client).await.unwrap();
    // Idempotent: a second control plane does the same.
    jetstream::ensure_streams(&client).await.unwrap();
    (nats, client)
}

async fn start() -> (Nats, Client) {
    start_with(DURABLE).await
}

fn addr(tenant: &str, host: &str) -> Address {
    Address {
        tenant: tenant.to_string(),
        host: host.to_string(),
    }
}

/// The test's job bytes: a `RunJob` in JSON (unsigned: the transport never looks).
fn job(id: &str, to: &Address) -> Vec<u8> {
    serde_json::to_vec(&RunJob {
        job: id.to_string(),
        incident: format!("inc-{id}"),
        tenant: to.tenant.clone(),
        host: to.host.clone(),
        runs: vec![],
        dry_run: true,
        provenance: runwarden_proto::bus::Provenance::L3 {
            approver: "test".into(),
        },
        verdicts: vec![],
        issued_at_ms: 0,
        expires_at_ms: i64::MAX,
    })
    .unwrap()
}

fn report_for(job: &RunJob, host: &str) -> RunReport {
    RunReport {
        job: job.job.clone(),
        incident: job.incident.clone(),
        host: host.to_string(),
        runs: vec![],
        refused: None,
        deployed: None,
    }
}

/// A test agent: answers every job of `to` with a report built from it, and sends what it
/// received to `seen`.
fn agent(
    client: &Client,
    to: &Address,
    seen: tokio::sync::mpsc::UnboundedSender<RunJob>,
) -> tokio::task::JoinHandle<()> {
    let mut jobs = JetStreamJobs::new(client, &to.tenant, &to.host).unwrap();
    let host = to.host.clone();
    tokio::spawn(async move {
        while let Some(d) = jobs.next().await {
            let j: RunJob = serde_json::from_slice(&d.job).unwrap();
            let r = report_for(&j, &host);
            let _ = seen.send(j);
            d.reply(r).await;
        }
    })
}

async fn stream_messages(client: &Client, name: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream(name).await.unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test]
async fn round_trip() {
    let (_nats, client) = start().await;
    let to = addr("acme", "web-1");
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    // Enrolling twice is fine.
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let _agent = agent(&client, &to, seen_tx);
    let d = JetStreamDispatch::start(&client, Duration::from_secs(10))
        .await
        .unwrap();
    for i in 0..3 {
        let id = format!("job-{i}");
        let report = runwarden_bus::Dispatch::dispatch(&d, &to, &id, job(&id, &to))
            .await
            .unwrap();
        assert_eq!(report.job, id);
        assert_eq!(report.incident, format!("inc-{id}"));
        assert_eq!(report.host, "web-1");
        assert_eq!(seen.recv().await.unwrap().job, id);
    }
    // Answered and acked: nothing left in the work queue.
    assert_eq!(stream_messages(&client, "RW_CMD").await, 0);
    // A job the bus cannot carry is refused before it is sent.
    let big = vec![b'x'; runwarden_proto::bus::MAX_MESSAGE_BYTES + 1];
    let e = runwarden_bus::Dispatch::dispatch(&d, &to, "big", big)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    // As is a host name NATS would split.
    let e = runwarden_bus::Dispatch::dispatch(&d, &addr("acme", "web.1"), "x", vec![])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("subject separator"), "{e}");
}

#[tokio::test]
async fn each_agent_gets_only_its_hosts_jobs() {
    let (_nats, client) = start().await;
    let hosts = [addr("acme", "a"), addr("acme", "b"), addr("other", "a")];
    let mut seen = Vec::new();
    for to in &hosts {
        jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        agent(&client, to, tx);
        seen.push(rx);
    }
    let d = JetStreamDispatch::start(&client, Duration::from_secs(10))
        .await
        .unwrap();
    for round in 0..3 {
        for (i, to) in hosts.iter().enumerate() {
            let id = format!("job-{round}-{i}");
            let r = runwarden_bus::Dispatch::dispatch(&d, to, &id, job(&id, to))
                .await
                .unwrap();
            assert_eq!(
                (r.job.as_str(), r.host.as_str()),
                (id.as_str(), to.host.as_str())
            );
        }
    }
    for (to, rx) in hosts.iter().zip(&mut seen) {
        let mut n = 0;
        while let Ok(j) = rx.try_recv() {
            assert_eq!((&j.tenant, &j.host), (&to.tenant, &to.host));
            n += 1;
        }
        assert_eq!(n, 3, "{to:?}");
    }
}

/// A component stored for two tenants (the same bytes, within the duplicate window) is
/// there for each, whole, in chunks; one stored again is not sent again; bytes of
/// another size or a sha256 never stored are not handed out as if they were.
#[tokio::test]
async fn components_are_stored_once_per_tenant_and_read_back_whole() {
    use runwarden_bus::{Blobs, Dispatch};
    let (_nats, client) = start().await;
    let d = JetStreamDispatch::start(&client, Duration::from_secs(10))
        .await
        .unwrap();
    // Three chunks and a bit: not a multiple of the chunk size.
    let bytes: Vec<u8> = (0..(jetstream::BLOB_CHUNK_BYTES * 3 + 1234))
        .map(|i| (i % 251) as u8)
        .collect();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    for tenant in ["acme", "bravo"] {
        assert!(d.store_blob(tenant, &sha, &bytes).await.unwrap());
    }
    let stored = stream_messages(&client, jetstream::BLOB_STREAM).await;
    assert_eq!(stored, 8, "four chunks for each tenant");
    assert!(d.store_blob("acme", &sha, &bytes).await.unwrap());
    assert_eq!(
        stream_messages(&client, jetstream::BLOB_STREAM).await,
        stored
    );
    for tenant in ["acme", "bravo"] {
        let blobs = jetstream::JetStreamBlobs::new(&client, tenant).unwrap();
        let got = blobs.fetch(&sha, bytes.len() as u64).await.unwrap();
        assert!(got == bytes, "{tenant}: the bytes stored");
    }
    let other = jetstream::JetStreamBlobs::new(&client, "charlie").unwrap();
    assert!(other.fetch(&sha, bytes.len() as u64).await.is_err());
    assert!(
        d.store_blob("acme", "not-a-sha", &bytes).await.is_err(),
        "a name that is not a sha256"
    );
}
