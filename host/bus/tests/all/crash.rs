//! nats-server killed (SIGKILL) and restarted with jobs in flight.
//!
//! The server runs with `sync_interval: always`, as production must. A SIGKILL alone
//! leaves the OS page cache intact, so this test also passes without it (checked): what
//! the setting protects against is a power loss or kernel crash, which a test cannot make.

use super::*;
use runwarden_bus::{BusError, Dispatch};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How a caller dispatches through failures: the same job with the same id again, a
/// bounded number of times (stored once within the duplicate window; answered from the
/// agent's log after it).
async fn dispatch_until_answered(
    d: &JetStreamDispatch,
    to: &Address,
    id: &str,
    attempts: u32,
) -> Result<RunReport, BusError> {
    let mut last = None;
    for _ in 0..attempts {
        match d.dispatch(to, id, job(id, to)).await {
            Ok(r) => return Ok(r),
            Err(e @ (BusError::Transport(_) | BusError::Timeout(_))) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap())
}

/// What the control plane does once it is connected again after the NATS server
/// restarted: make the host's job consumer again (it kept its state in the NATS server's
/// memory). Retried while the client reconnects, for at most 20 s.
async fn remake_consumer(client: &Client, to: &Address) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match jetstream::ensure_agent_consumer(client, &to.tenant, &to.host, &fast()).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn jobs_acknowledged_before_a_kill_are_answered_after_the_restart() {
    let (mut nats, client) = start().await;
    let to = addr("acme", "h1");
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();

    // Phase 1: no agent. Each dispatch returns Timeout only after its PubAck, so all
    // ten are stored; then the server dies.
    let d = Arc::new(
        JetStreamDispatch::start(&client, Duration::from_millis(200))
            .await
            .unwrap(),
    );
    let mut unclaimed = d.take_unclaimed().unwrap();
    let stored: BTreeSet<String> = (0..10).map(|i| format!("stored-{i}")).collect();
    for id in &stored {
        let e = d.dispatch(&to, id, job(id, &to)).await.unwrap_err();
        assert!(matches!(e, BusError::Timeout(_)), "{e}");
    }
    nats.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    remake_consumer(&client, &to).await;

    // The agent starts after the restart: every stored job reaches it, and every report
    // reaches the dispatcher (its report reader resumed) as unclaimed.
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let _agent = agent(&client, &to, tx);
    let mut answered = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answered != stored {
        let r = tokio::time::timeout_at(deadline, unclaimed.recv())
            .await
            .unwrap_or_else(|_| panic!("answered only {answered:?}"))
            .unwrap();
        answered.insert(r.job);
    }
    let mut received = BTreeSet::new();
    while let Ok(j) = seen.try_recv() {
        received.insert(j.job);
    }
    assert_eq!(received, stored);

    // Phase 2: the agent runs, and the server is killed while twenty dispatches are in
    // flight; callers dispatch again after Transport or Timeout errors.
    let d = Arc::new(
        JetStreamDispatch::start(&client, Duration::from_secs(3))
            .await
            .unwrap(),
    );
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let d = d.clone();
        let to = to.clone();
        calls.spawn(async move {
            let id = format!("inflight-{i}");
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            let r = dispatch_until_answered(&d, &to, &id, 10).await;
            (id, r)
        });
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart();
    remake_consumer(&client, &to).await;
    let mut done = 0;
    let all = tokio::time::timeout(Duration::from_secs(25), async {
        while let Some(r) = calls.join_next().await {
            let (id, r) = r.unwrap();
            assert_eq!(r.unwrap_or_else(|e| panic!("{id}: {e}")).job, id);
            done += 1;
        }
    })
    .await;
    assert!(all.is_ok(), "only {done} of 20 answered");
    assert_eq!(done, 20);
}
