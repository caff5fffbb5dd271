//! An agent cut off from the bus, as an operator would see it: real processes, a real
//! nats-server killed and restarted (the cut), the host's local intake.
//!
//! While the link is down the host heals at L1 by itself, under its own guardrails, and
//! signs every record into its own log; what L1 cannot finish waits on the host. When the
//! link is back the log is forwarded and mirrored (the chain verifies: the server takes
//! a segment only if it extends what it holds to the host's signed root), and what waited
//! is decided at the control plane. A record deleted from the host's buffer before it was
//! forwarded is raised there as a gap.

use super::fleet::{OperatorFleet, unit_state};
use super::{runwarden, stderr};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// `runwarden incident submit --json` of `incident` at `server` with `data`'s token: the
/// record (the exit status is 1 when it did not heal).
pub(super) fn submit(data: &Path, server: &str, incident: &str) -> Value {
    let file = data.join("incident.json");
    std::fs::write(&file, incident).unwrap();
    let out = runwarden(
        data,
        &[
            "--server",
            server,
            "incident",
            "submit",
            "--json",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}{}",
        out.status,
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET /metrics` at `url` with the token in `token_file`: each sample line (`name{labels}`
/// → value).
pub(super) fn metrics(url: &str, token_file: &Path) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let token = std::fs::read_to_string(token_file).unwrap();
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Wait until `metrics` at `url` (token in `token_file`) has `want` for each `(sample,
/// value)`; the last scrape.
pub(super) fn metrics_reach(
    url: &str,
    token_file: &Path,
    want: &[(&str, f64)],
) -> std::collections::BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(url, token_file);
        if want.iter().all(|(k, v)| m.get(*k) == Some(v)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "metrics at {url} never showed {want:?} in 60 s: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The incident `id` at the server, once it exists and is no longer `processing`.
fn decided_at_server(fleet: &OperatorFleet, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = runwarden(
            &fleet.data,
            &["--server", &fleet.url, "incident", "show", id, "--json"],
        );
        if out.status.success() {
            let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
            if rec["status"] != "processing" {
                return rec;
            }
        }
        assert!(
            Instant::now() < deadline,
            "incident {id} was not decided at the server in 90 s: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Wait until the server mirrors all of `host`'s log, at least `min` records; its size.
pub(super) fn caught_up(fleet: &OperatorFleet, host: &str, min: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let h = fleet.host(host);
        if h["online"] == true
            && h["log_records"].as_u64().is_some_and(|n| n >= min)
            && h["log_records"] == h["mirrored_records"]
        {
            return h["mirrored_records"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "not caught up in 90 s: {h}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn an_agent_cut_off_from_the_bus_heals_at_l1_hands_up_the_rest_and_forwards_it_all_later() {
    let root = tempfile::tempdir().unwrap();
    let mut fleet = OperatorFleet::start(root.path());
    let host = "clinic-off-01";
    let data = fleet.enroll(root.path(), host);
    let (_agent, local) = fleet.agent(&data);
    // Connected: one incident through the control plane, healed on the host.
    let first = submit(
        &fleet.data,
        &fleet.url,
        &format!(
            r#"{{"host":"{host}","type":"service-down","severity":"high","service":"nginx.service"}}"#
        ),
    );
    assert_eq!(first["status"], "healed", "{first}");
    let before = caught_up(&fleet, host, 1);

    // The cut.
    fleet.nats.kill();
    std::fs::write(
        root.path().join(host).join("units/nginx.service"),
        "inactive",
    )
    .unwrap();
    let healed = submit(
        &data,
        &local,
        &format!(
            r#"{{"host":"{host}","type":"service-down","severity":"high","service":"other.service"}}"#
        ),
    );
    // No grant for other.service: the host's guardrails say so (known target), and a
    // human must decide — it waits for the link.
    assert_eq!(healed["status"], "handed-up", "{healed}");
    assert_eq!(healed["handed_up"], "escalation", "{healed}");
    // L1 on the host: healed, by the host's rules, signed into its log.
    let restart = submit(
        &data,
        &local,
        &format!(
            r#"{{"host":"{host}","type":"service-down","severity":"high","service":"nginx.service"}}"#
        ),
    );
    assert_eq!(restart["tier"], "L1", "{restart}");
    assert_eq!(restart["status"], "healed", "{restart}");
    assert_eq!(
        unit_state(root.path(), host),
        "active",
        "healed while cut off"
    );
    // No rule for this: it needs the control plane's tiers.
    let unknown = submit(
        &data,
        &local,
        &format!(r#"{{"host":"{host}","type":"disk-smart-warning","severity":"medium"}}"#),
    );
    assert_eq!(unknown["status"], "handed-up", "{unknown}");
    assert_eq!(unknown["handed_up"], "plan", "{unknown}");
    // Nothing of it reached the server yet.
    let h = fleet.host(host);
    assert_eq!(h["mirrored_records"].as_u64(), Some(before), "{h}");
    // The agent's metrics say so: no link, two incidents waiting for it, the three
    // records made since the cut not forwarded.
    let token = data.join("local-token");
    let m = metrics_reach(
        &local,
        &token,
        &[
            ("runwarden_bus_connected", 0.0),
            ("runwarden_agent_hand_ups_pending", 2.0),
        ],
    );
    assert_eq!(
        m["runwarden_agent_log_records"],
        (before + 3) as f64,
        "{m:?}"
    );
    assert_eq!(m["runwarden_agent_unforwarded_records"], 3.0, "{m:?}");
    let out = runwarden(
        &fleet.data,
        &[
            "--server",
            &fleet.url,
            "incident",
            "show",
            unknown["id"].as_str().unwrap(),
            "--json",
        ],
    );
    assert!(!out.status.success(), "the server cannot know it yet");

    // The link is back: the log is forwarded and mirrored, what waited is decided there.
    fleet.nats.restart();
    // Records made while cut off: the escalation, the run, the hand-up of the unknown.
    let size = caught_up(&fleet, host, before + 3);
    let escalated = decided_at_server(&fleet, healed["id"].as_str().unwrap());
    assert_eq!(escalated["tier"], "L3", "{escalated}");
    assert_eq!(escalated["status"], "escalated", "{escalated}");
    assert_eq!(escalated["handed_up"], "escalation", "{escalated}");
    assert!(escalated["escalation"].is_string(), "{escalated}");
    assert!(
        escalated["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("decided on host {host}")),
        "{escalated}"
    );
    let planned = decided_at_server(&fleet, unknown["id"].as_str().unwrap());
    assert_eq!(planned["handed_up"], "plan", "{planned}");
    assert_ne!(planned["tier"], "L1", "{planned}");
    // Both ends' metrics: linked again, nothing waiting, nothing unforwarded; at the
    // server the host is online with an empty queue and its log all held.
    metrics_reach(
        &local,
        &token,
        &[
            ("runwarden_bus_connected", 1.0),
            ("runwarden_agent_hand_ups_pending", 0.0),
            ("runwarden_agent_unforwarded_records", 0.0),
        ],
    );
    let on = |name: &str| format!("{name}{{host=\"{host}\"}}");
    let m = metrics_reach(
        &fleet.url,
        &fleet.data.join("admin-token"),
        &[
            ("runwarden_bus_connected", 1.0),
            (&on("runwarden_host_online"), 1.0),
            (&on("runwarden_host_queue_depth"), 0.0),
            (&on("runwarden_host_unforwarded_records"), 0.0),
            ("runwarden_hosts{state=\"online\"}", 1.0),
        ],
    );
    assert!(
        m[&on("runwarden_host_last_seen_timestamp_seconds")] > 1.7e9,
        "{m:?}"
    );
    // The operator's list names the host's newest record.
    let h = fleet.host(host);
    assert_eq!(h["queue_depth"], 0, "{h}");
    assert_eq!(h["last_record"]["index"], size - 1, "{h}");
    // Every record of the host's log is at the server, byte for byte, under its key.
    let io = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let origin = format!("runwarden/{host}");
    io.block_on(async {
        let host_log =
            runwarden_evidence::Store::open(&data.join("evidence.db").display().to_string())
                .await
                .unwrap();
        let server_log =
            runwarden_evidence::Store::open(&fleet.data.join("evidence.db").display().to_string())
                .await
                .unwrap();
        let ours = host_log.range(0, size).await.unwrap();
        let theirs = server_log.mirrored_records(&origin, 0, size).await.unwrap();
        assert_eq!(ours.len() as u64, size);
        assert!(
            ours.iter()
                .zip(&theirs)
                .all(|(a, b)| a.envelope == b.envelope && a.index == b.index),
            "the mirror is the host's log"
        );
        assert!(
            ours.iter()
                .any(|r| r.status == "healed" && r.runbook == "restart-service"),
            "the run made while cut off is in the log"
        );
    });

    // A record deleted from the host's buffer before it was forwarded, with records
    // after it, is a gap at the server.
    fleet.nats.kill();
    std::fs::write(
        root.path().join(host).join("units/nginx.service"),
        "inactive",
    )
    .unwrap();
    let again = submit(
        &data,
        &local,
        &format!(
            r#"{{"host":"{host}","type":"service-down","severity":"high","service":"nginx.service"}}"#
        ),
    );
    assert_ne!(again["status"], "processing", "{again}");
    let after = submit(
        &data,
        &local,
        &format!(r#"{{"host":"{host}","type":"fan-noise","severity":"low"}}"#),
    );
    assert_eq!(after["status"], "handed-up", "{after}");
    io.block_on(async {
        let host_log =
            runwarden_evidence::Store::open(&data.join("evidence.db").display().to_string())
                .await
                .unwrap();
        let records = host_log.range(size, size + 100).await.unwrap();
        assert!(records.len() >= 2, "the host signed records while cut off");
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("evidence.db").display()))
                .await
                .unwrap();
        sqlx::query("DELETE FROM evidence_log WHERE idx = ?")
            .bind(size as i64)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    fleet.nats.restart();
    let deadline = Instant::now() + Duration::from_secs(90);
    let gap = loop {
        let out = runwarden(
            &fleet.data,
            &["--server", &fleet.url, "incident", "list", "--json"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        // One JSON record per line.
        let list: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if let Some(g) = list
            .iter()
            .find(|r| r["incident"]["type"] == "evidence-gap")
        {
            break g.clone();
        }
        assert!(Instant::now() < deadline, "no gap raised in 90 s: {list:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(gap["incident"]["host"], host, "{gap}");
    assert_eq!(gap["status"], "escalated", "{gap}");
    assert_eq!(gap["incident"]["severity"], "critical", "{gap}");
    // The mirror holds nothing past the hole. (A publish the agent tried while the bus was
    // down stays in its client's buffer and may reach the server once the link is back:
    // then the deleted record was sent before it was deleted, the server holds it, and
    // the hole is the host's own — which the host says, and the server raises the same.)
    let held = fleet.host(host)["mirrored_records"].as_u64().unwrap();
    let message = gap["incident"]["message"].as_str().unwrap();
    if held == size {
        assert!(message.contains("has a gap"), "{gap}");
    } else {
        assert!(
            held > size,
            "{held} records mirrored, {size} before the hole"
        );
        assert!(message.contains("misses a record before"), "{gap}");
    }
}
