//! A burst of incidents through the fleet while nats-server is killed (SIGKILL) and
//! restarted: every incident the server acknowledged ends with exactly one run of its
//! runbook on the host — none lost in the outage, none run twice by a retry or a
//! redelivery. Real processes: nats-server 2.15 (operator mode, JetStream), `runwarden
//! server`, one `runwarden agent`.

use super::fleet::OperatorFleet;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Incidents in the burst.
const INCIDENTS: usize = 1000;
/// Clients submitting at once.
const CLIENTS: usize = 16;

#[test]
fn killing_nats_during_a_burst_of_1000_incidents_loses_none_and_runs_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let host = "clinic-burst-01";
    // Every incident must run: no cooldown, repeat or breaker in the way (the services
    // differ, so no two incidents share a fingerprint anyway), and no API rate limit.
    let fleet = OperatorFleet::start_with(
        root.path(),
        "[guardrails]\ncooldown_secs = 0\nbreaker_max_per_minute = 1000000\n\
         [api]\nrate_per_sec = 100000\nburst = 100000\n",
    );
    let data = fleet.enroll_with(root.path(), host, "svc-*.service");
    let (_agent, _) = fleet.agent(&data);
    let token = std::fs::read_to_string(fleet.data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let url = fleet.url.clone();
    let fleet = std::sync::Mutex::new(fleet);

    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let acked = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = io.block_on(async {
        // The cut, a third of the way in; the bus is back two seconds later.
        let cutter = {
            let (acked, http, url, token) =
                (acked.clone(), http.clone(), url.clone(), token.clone());
            let fleet = &fleet;
            async move {
                while acked.load(Ordering::Relaxed) < INCIDENTS / 3 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                fleet.lock().unwrap().nats.kill();
                // The cut lands while the server has jobs in flight.
                let body = http
                    .get(format!("{url}/v1/incidents?status=processing&limit=1"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(
                    v["incidents"].as_array().map(Vec::len),
                    Some(1),
                    "incidents in flight at the cut: {v}"
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
                fleet.lock().unwrap().nats.restart();
            }
        };
        let next = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (http, url, token, next, acked) = (
                http.clone(),
                url.clone(),
                token.clone(),
                next.clone(),
                acked.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= INCIDENTS {
                        return mine;
                    }
                    let body = serde_json::json!({
                        "host": host, "type": "service-down", "severity": "high",
                        "service": format!("svc-{i}.service"),
                    });
                    let resp = http
                        .post(format!("{url}/v1/incidents"))
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await
                        .expect("the server answers");
                    assert_eq!(resp.status(), 202, "incident {i}");
                    let rec: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
                    mine.push(rec["id"].as_str().unwrap().to_string());
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let (_, ids) = tokio::join!(cutter, async {
            let mut ids = Vec::new();
            for c in clients {
                ids.extend(c.await.unwrap());
            }
            ids
        });
        ids
    });
    assert_eq!(ids.len(), INCIDENTS, "every incident was acknowledged");

    // Every acknowledged incident concludes, healed by one run.
    let deadline = Instant::now() + Duration::from_secs(300);
    let records: Vec<Value> = io.block_on(async {
        let mut done = HashMap::new();
        loop {
            let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
            if pending.is_empty() {
                break;
            }
            for id in pending {
                let body = http
                    .get(format!("{url}/v1/incidents/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let rec: Value = serde_json::from_slice(&body).unwrap();
                if rec["status"] != "processing" {
                    done.insert(id.clone(), rec);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} of {INCIDENTS} incidents still processing after 300 s",
                ids.len() - done.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        done.into_values().collect()
    });
    let not_healed: Vec<&Value> = records.iter().filter(|r| r["status"] != "healed").collect();
    assert!(
        not_healed.is_empty(),
        "{} not healed, e.g. {}",
        not_healed.len(),
        not_healed[0]
    );

    // The host's log: exactly one run record per incident, under the invocation id the
    // server planned — none missing, none twice.
    io.block_on(async {
        let log = runwarden_evidence::Store::open(&data.join("evidence.db").display().to_string())
            .await
            .unwrap();
        let all = log.range(0, 10 * INCIDENTS as u64).await.unwrap();
        let mut runs: HashMap<String, usize> = HashMap::new();
        for r in all.iter().filter(|r| r.runbook == "restart-service") {
            *runs.entry(r.invocation_id.clone()).or_default() += 1;
        }
        assert_eq!(runs.len(), INCIDENTS, "one run per incident");
        assert!(runs.values().all(|n| *n == 1), "no invocation ran twice");
        for rec in &records {
            let inv = rec["runs"][0]["invocation_id"].as_str().unwrap();
            assert_eq!(runs.get(inv), Some(&1), "{rec}");
        }
    });
}
