//! Bursts of incidents through the fleet while a part of it is killed (SIGKILL): the
//! nats-server, or one of two `runwarden server`s sharing one PostgreSQL. Every incident a
//! server acknowledged concludes — none lost — and no invocation runs twice. Real
//! processes: nats-server 2.15 (operator mode, JetStream), PostgreSQL, `runwarden server`,
//! one `runwarden agent`.

use super::fleet::{OperatorFleet, server};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Clients submitting at once.
const CLIENTS: usize = 16;

/// Every incident must run: no cooldown, repeat or breaker in the way (the services
/// differ, so no two incidents share a fingerprint anyway), and no API rate limit.
const CONFIG: &str = "[guardrails]\ncooldown_secs = 0\nbreaker_max_per_minute = 1000000\n\
                      [api]\nrate_per_sec = 100000\nburst = 100000\n";

/// Submit `n` incidents on `host` (`svc-I.service`) round-robin to `urls` with `token`,
/// `CLIENTS` at a time; once `cut_at` were acknowledged, `cut` runs beside them. The ids
/// acknowledged (202); an incident refused because its server is gone is not.
fn burst(
    io: &tokio::runtime::Runtime,
    urls: &[String],
    token: &str,
    host: &str,
    n: usize,
    cut_at: usize,
    cut: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let acked = Arc::new(AtomicUsize::new(0));
    io.block_on(async {
        let cutter = {
            let acked = acked.clone();
            async move {
                while acked.load(Ordering::Relaxed) < cut_at {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                cut.await
            }
        };
        let next = Arc::new(AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (http, urls, token, host, next, acked) = (
                http.clone(),
                urls.to_vec(),
                token.to_string(),
                host.to_string(),
                next.clone(),
                acked.clone(),
            );
            clients.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return mine;
                    }
                    let body = serde_json::json!({
                        "host": host, "type": "service-down", "severity": "high",
                        "service": format!("svc-{i}.service"),
                    });
                    let Ok(resp) = http
                        .post(format!("{}/v1/incidents", urls[i % urls.len()]))
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await
                    else {
                        continue; // its server is gone: not acknowledged
                    };
                    if resp.status() != 202 {
                        assert!(
                            resp.status().is_server_error(),
                            "incident {i}: {}",
                            resp.status()
                        );
                        continue;
                    }
                    let body = resp.bytes().await.unwrap();
                    let rec: Value = serde_json::from_slice(&body).unwrap();
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
    })
}

/// GET `path` at `url` with `token`, as JSON.
/// A connection reset under load is tried again (5 times at most).
async fn get(http: &reqwest::Client, url: &str, token: &str, path: &str) -> Value {
    let mut tries = 0;
    loop {
        let sent = http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await;
        match sent {
            Ok(resp) => return serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap(),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("GET {path}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("GET {path}: {e}"),
        }
    }
}

/// The records of incidents `ids` at `url`, once none is `processing` (`within`).
fn concluded(
    io: &tokio::runtime::Runtime,
    url: &str,
    token: &str,
    ids: &[String],
    within: Duration,
) -> Vec<Value> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    io.block_on(async {
        let mut done = HashMap::new();
        loop {
            let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
            for id in pending {
                let rec = get(&http, url, token, &format!("/v1/incidents/{id}")).await;
                if rec["status"] != "processing" {
                    done.insert(id.clone(), rec);
                }
            }
            if done.len() == ids.len() {
                return done.into_values().collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} incidents still processing after {within:?}",
                ids.len() - done.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The runs of `restart-service` in the host log at `data`, by invocation id: each at
/// most once, and each healed incident's run there exactly once. How many.
fn one_run_each(io: &tokio::runtime::Runtime, data: &std::path::Path, records: &[Value]) -> usize {
    io.block_on(async {
        let log = runwarden_evidence::Store::open(&data.join("evidence.db").display().to_string())
            .await
            .unwrap();
        let size = log.size().await.unwrap();
        let mut runs: HashMap<String, usize> = HashMap::new();
        for r in log.range(0, size).await.unwrap() {
            if r.runbook == "restart-service" {
                *runs.entry(r.invocation_id.clone()).or_default() += 1;
            }
        }
        assert!(runs.values().all(|n| *n == 1), "no invocation ran twice");
        for rec in records.iter().filter(|r| r["status"] == "healed") {
            let inv = rec["runs"][0]["invocation_id"].as_str().unwrap();
            assert_eq!(runs.get(inv), Some(&1), "{rec}");
        }
        runs.len()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn admin_token(data: &std::path::Path) -> String {
    std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn killing_nats_during_a_burst_of_1000_incidents_loses_none_and_runs_none_twice() {
    const INCIDENTS: usize = 1000;
    let root = tempfile::tempdir().unwrap();
    let host = "clinic-burst-01";
    let fleet = OperatorFleet::start_with(root.path(), CONFIG);
    let data = fleet.enroll_with(root.path(), host, "svc-*.service");
    let (_agent, _) = fleet.agent(&data);
    let token = admin_token(&fleet.data);
    let url = fleet.url.clone();
    let fleet = std::sync::Mutex::new(fleet);
    let io = runtime();
    // The cut, a third of the way in, while the server has jobs in flight; the bus is
    // back two seconds later.
    // What the server said was in flight at the cut, checked once the bus is back (a
    // failed check inside the cut would leave it down and hide the reason).
    let at_cut = std::sync::Mutex::new(Vec::new());
    let cut = async {
        fleet.lock().unwrap().nats.kill();
        let http = reqwest::Client::new();
        for _ in 0..20 {
            let v = get(
                &http,
                &url,
                &token,
                "/v1/incidents?status=processing&limit=1",
            )
            .await;
            let listed = v["incidents"].is_array();
            at_cut.lock().unwrap().push(v);
            if listed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        fleet.lock().unwrap().nats.restart();
    };
    let ids = burst(
        &io,
        std::slice::from_ref(&url),
        &token,
        host,
        INCIDENTS,
        INCIDENTS / 3,
        cut,
    );
    let at_cut = at_cut.into_inner().unwrap();
    assert_eq!(
        at_cut
            .last()
            .and_then(|v| v["incidents"].as_array())
            .map(Vec::len),
        Some(1),
        "incidents in flight at the cut (what the server answered): {at_cut:?}"
    );
    assert_eq!(ids.len(), INCIDENTS, "every incident was acknowledged");
    let records = concluded(&io, &url, &token, &ids, Duration::from_secs(300));
    let not_healed: Vec<&Value> = records.iter().filter(|r| r["status"] != "healed").collect();
    assert!(
        not_healed.is_empty(),
        "{} not healed, e.g. {}",
        not_healed.len(),
        not_healed[0]
    );
    assert_eq!(
        one_run_each(&io, &data, &records),
        INCIDENTS,
        "one run per incident"
    );
}

#[test]
fn killing_one_of_two_servers_on_one_postgres_loses_nothing_and_doubles_nothing() {
    const INCIDENTS: usize = 300;
    let db = runwarden_testkit::Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let host = "clinic-pair-01";
    let mut fleet = OperatorFleet::start_on(root.path(), CONFIG, &["--database", &db.url]);
    let data = fleet.enroll_with(root.path(), host, "svc-*.service");
    let (_agent, _) = fleet.agent(&data);
    // The second server: the same control key (agents trust one), NATS identity and
    // database, its own process and data directory.
    let second = root.path().join("server-2");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("runwarden.toml"), CONFIG).unwrap();
    for dir in ["control-key", "nats"] {
        let (from, to) = (fleet.data.join(dir), second.join(dir));
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
    let (_b, url_b) = server(&second, &fleet.nats.url, &["--database", &db.url]);
    let token = admin_token(&fleet.data);
    let io = runtime();
    // Server A dies (SIGKILL) a third of the way in, with incidents in flight.
    let mut a = fleet._server.child.take().unwrap();
    let cut = async move {
        a.kill().unwrap();
        a.wait().unwrap();
    };
    let urls = [fleet.url.clone(), url_b.clone()];
    let ids = burst(&io, &urls, &token, host, INCIDENTS, INCIDENTS / 3, cut);
    assert!(ids.len() >= INCIDENTS / 3, "acknowledged: {}", ids.len());
    // Nothing lost: B concludes every one, A's cut-off ones once their lease lapsed.
    let records = concluded(&io, &url_b, &token, &ids, Duration::from_secs(240));
    for r in &records {
        assert!(
            r["status"] == "healed" || (r["status"] == "escalated" && r["tier"] == "L3"),
            "{r}"
        );
    }
    let healed = records.iter().filter(|r| r["status"] == "healed").count();
    assert!(healed >= INCIDENTS / 3, "healed: {healed}");
    // Nothing twice.
    one_run_each(&io, &data, &records);
    fleet.nats.kill();
}
