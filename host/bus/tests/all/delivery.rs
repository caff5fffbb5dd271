//! Redelivery, de-duplication and bad reports.

use super::*;
use runwarden_bus::Dispatch;

/// The next delivery of `jobs` within `within`, if any.
async fn next_within(
    jobs: &mut JetStreamJobs,
    within: Duration,
) -> Option<runwarden_bus::Delivery> {
    tokio::time::timeout(within, jobs.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn abandoned_or_dropped_jobs_come_again_and_answered_ones_do_not() {
    let (_nats, client) = start().await;
    let to = addr("acme", "h1");
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    let d = std::sync::Arc::new(
        JetStreamDispatch::start(&client, Duration::from_secs(20))
            .await
            .unwrap(),
    );
    let waiting = {
        let d = d.clone();
        let to = to.clone();
        tokio::spawn(async move { d.dispatch(&to, "j1", job("j1", &to)).await })
    };

    // The agent's log failed: it abandons the job, which comes again.
    let mut jobs = JetStreamJobs::new(&client, "acme", "h1")
        .unwrap()
        .with_abandon_delay(Duration::from_millis(200));
    let first = next_within(&mut jobs, Duration::from_secs(10))
        .await
        .unwrap();
    let bytes = first.job.clone();
    first.abandon().await;
    let again = next_within(&mut jobs, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(again.job, bytes);

    // The agent crashes holding it (delivery and link dropped): a new link for the same
    // host gets it.
    drop(again);
    drop(jobs);
    let mut jobs = JetStreamJobs::new(&client, "acme", "h1").unwrap();
    let third = next_within(&mut jobs, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(third.job, bytes);
    let j: RunJob = serde_json::from_slice(&third.job).unwrap();
    third.reply(report_for(&j, "h1")).await;
    let report = waiting.await.unwrap().unwrap();
    assert_eq!(report.job, "j1");

    // Answered and acked: not delivered again, even after the ack wait.
    assert!(
        next_within(&mut jobs, Duration::from_secs(4))
            .await
            .is_none()
    );
    assert_eq!(stream_messages(&client, "RW_CMD").await, 0);

    // Dispatched again (same id) after its answer: the report already received answers it.
    let again = d.dispatch(&to, "j1", job("j1", &to)).await.unwrap();
    assert_eq!(again, report);
}

#[tokio::test]
async fn a_job_held_longer_than_the_ack_wait_is_not_redelivered() {
    let (_nats, client) = start().await;
    let to = addr("acme", "slow");
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    let d = std::sync::Arc::new(
        JetStreamDispatch::start(&client, Duration::from_secs(20))
            .await
            .unwrap(),
    );
    let waiting = {
        let d = d.clone();
        let to = to.clone();
        tokio::spawn(async move { d.dispatch(&to, "long", job("long", &to)).await })
    };
    let mut jobs = JetStreamJobs::new(&client, "acme", "slow").unwrap();
    let held = next_within(&mut jobs, Duration::from_secs(10))
        .await
        .unwrap();
    // Three ack waits of 2 s: AckProgress keeps it ours; a second link gets nothing.
    let mut other = JetStreamJobs::new(&client, "acme", "slow").unwrap();
    assert!(
        next_within(&mut other, Duration::from_secs(6))
            .await
            .is_none()
    );
    let j: RunJob = serde_json::from_slice(&held.job).unwrap();
    held.reply(report_for(&j, "slow")).await;
    assert_eq!(waiting.await.unwrap().unwrap().job, "long");
}

#[tokio::test]
async fn the_same_job_dispatched_twice_is_stored_once() {
    let (_nats, client) = start().await;
    let to = addr("acme", "h1");
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    // No agent yet: both dispatches are stored (PubAck) and then time out.
    let d = JetStreamDispatch::start(&client, Duration::from_millis(300))
        .await
        .unwrap();
    for _ in 0..2 {
        let e = d.dispatch(&to, "dup", job("dup", &to)).await.unwrap_err();
        assert!(matches!(e, runwarden_bus::BusError::Timeout(_)), "{e}");
    }
    assert_eq!(stream_messages(&client, "RW_CMD").await, 1);

    // The agent comes: one delivery; its report, nobody waiting any more, is unclaimed.
    let mut unclaimed = d.take_unclaimed().unwrap();
    assert!(d.take_unclaimed().is_none());
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    agent(&client, &to, tx);
    let r = tokio::time::timeout(Duration::from_secs(10), unclaimed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.job, "dup");
    assert_eq!(seen.recv().await.unwrap().job, "dup");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(seen.try_recv().is_err(), "delivered twice");
}

#[tokio::test]
async fn bad_reports_do_not_stop_the_dispatcher() {
    // Room on the wire for a report larger than the bus accepts.
    let (_nats, client) = start_with(&format!("{DURABLE}max_payload: 2097152\n")).await;
    let to = addr("acme", "h1");
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    let d = std::sync::Arc::new(
        JetStreamDispatch::start(&client, Duration::from_secs(20))
            .await
            .unwrap(),
    );
    let mut unclaimed = d.take_unclaimed().unwrap();
    let waiting = {
        let d = d.clone();
        let to = to.clone();
        tokio::spawn(async move { d.dispatch(&to, "j1", job("j1", &to)).await })
    };
    let mut jobs = JetStreamJobs::new(&client, "acme", "h1").unwrap();
    let held = next_within(&mut jobs, Duration::from_secs(10))
        .await
        .unwrap();
    let j: RunJob = serde_json::from_slice(&held.job).unwrap();

    let js = async_nats::jetstream::new(client.clone());
    let subject = "rw.v1.evt.acme.h1.report";
    let good = report_for(&j, "h1");
    let mut oversized = good.clone();
    oversized.incident = "x".repeat(runwarden_proto::bus::MAX_MESSAGE_BYTES);
    let mut other_host = good.clone();
    other_host.host = "h2".into();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (subject, b"{not json\x1b[31m".to_vec()),
        (subject, serde_json::to_vec(&oversized).unwrap()),
        // Claims to come from h2 on h1's subject.
        (subject, serde_json::to_vec(&other_host).unwrap()),
        // From h2 of the same tenant, for h1's job: not h1's answer.
        (
            "rw.v1.evt.acme.h2.report",
            serde_json::to_vec(&other_host).unwrap(),
        ),
    ];
    for (s, payload) in bad {
        js.publish(s.to_string(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // The one from h2 for h1's job is well formed: nobody here waits for it from h2.
    let r = tokio::time::timeout(Duration::from_secs(10), unclaimed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.host, "h2");
    assert!(!waiting.is_finished());
    held.reply(good.clone()).await;
    assert_eq!(waiting.await.unwrap().unwrap(), good);
    assert!(unclaimed.try_recv().is_err());
}

#[tokio::test]
async fn a_job_consumer_made_by_an_earlier_runwarden_serves_as_it_is() {
    let (_nats, client) = start().await;
    let to = addr("acme", "old");
    // As runwarden made it before its consumers kept their state in memory.
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(jetstream::CMD_STREAM).await.unwrap();
    let name = jetstream::agent_consumer_name(&to.tenant, &to.host);
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: runwarden_proto::bus::command_subject(&to.tenant, &to.host),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(2),
            max_ack_pending: 16,
            ..Default::default()
        })
        .await
        .unwrap();
    // Made again at a server's start: no error, and the consumer is the one there was
    // (or the same, updated in place).
    jetstream::ensure_agent_consumer(&client, &to.tenant, &to.host, &fast())
        .await
        .unwrap();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let _agent = agent(&client, &to, tx);
    let d = JetStreamDispatch::start(&client, Duration::from_secs(10))
        .await
        .unwrap();
    let r = d.dispatch(&to, "old-1", job("old-1", &to)).await.unwrap();
    assert_eq!(r.job, "old-1");
    assert_eq!(seen.recv().await.unwrap().job, "old-1");
}
