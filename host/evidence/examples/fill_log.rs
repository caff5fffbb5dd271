//! Fill an evidence log with pipeline-shaped records, for the audit-scale benchmarks
//! (issue #14; `scripts/bench-evidence` drives it).
//!
//! ```sh
//! cargo run --release -p runwarden-evidence --example fill_log -- DATA_DIR RECORDS
//! ```
//!
//! Writes `DATA_DIR/evidence.db` and the key that signs its log,
//! `DATA_DIR/signing-keys/bench-host.{key,pub}`, as `runwarden up` lays out its data
//! directory, then appends `RECORDS` records spread evenly over the year from 2025-12-01:
//! statements of the shapes the pipeline writes (built with the same types), each signed
//! with the host key. The mix follows a clinic fleet's year — mostly rules restarting a
//! service, clearing temporary files and rotating logs; some planner and approved runs,
//! dry runs, failures, denied calls and interrupted runs — so that a record averages about
//! 5 KB, as the issue states. Run again, it adds to the log.

#[path = "shapes/mod.rs"]
mod shapes;

use runwarden_evidence::Store;
use std::path::PathBuf;
use std::time::Instant;

const HOST: &str = "bench-host";
const TENANT: &str = "clinic-bench";
/// 2025-12-01T00:00:00Z.
const YEAR_START_MS: u64 = 1_764_547_200_000;
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
/// Appends in flight at once (the store commits them in batches).
const IN_FLIGHT: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fill_log DATA_DIR RECORDS";
    let dir = PathBuf::from(args.first().expect(usage));
    let records: u64 = args.get(1).and_then(|n| n.parse().ok()).expect(usage);
    let keys = dir.join("signing-keys");
    std::fs::create_dir_all(&keys).expect("the data directory");
    let key_file = keys.join(format!("{HOST}.key"));
    if !key_file.exists() {
        runwarden_evidence::write_key_pair(&keys, HOST).expect("the host key");
    }
    let key = runwarden_evidence::read_signing_key(&key_file).expect("the host key");
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    io.block_on(async {
        let store = Store::open_sqlite(&dir.join("evidence.db"))
            .await
            .expect("the evidence database");
        let held = store.size().await.expect("the log's size");
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut pending = tokio::task::JoinSet::new();
        for i in held..held + records {
            let at = YEAR_START_MS + (i - held) * (YEAR_MS / records.max(1));
            let record = shapes::record(&key, (HOST, TENANT), i, at);
            bytes += record.envelope.len() as u64;
            let s = store.clone();
            pending.spawn(async move { s.append(record).await });
            if pending.len() >= IN_FLIGHT {
                pending.join_next().await.unwrap().unwrap().expect("appended");
            }
            if (i - held + 1) % 100_000 == 0 {
                eprintln!(
                    "{} records, {:.0}/s",
                    i - held + 1,
                    (i - held + 1) as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        while let Some(r) = pending.join_next().await {
            r.unwrap().expect("appended");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{records} records appended in {secs:.1} s ({:.0}/s), {:.0} bytes per envelope on average; the log holds {}",
            records as f64 / secs,
            bytes as f64 / records.max(1) as f64,
            store.size().await.unwrap()
        );
    });
}
