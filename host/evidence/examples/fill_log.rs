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
//! 5 KB, as the issue states. Run again, it adds to the log. The records and the layout
//! are `runwarden_testkit::evidence`'s, which the CLI's 50,000-record test fills the same
//! way.

use runwarden_testkit::evidence::fill_log;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fill_log DATA_DIR RECORDS";
    let dir = PathBuf::from(args.first().expect(usage));
    let records: u64 = args.get(1).and_then(|n| n.parse().ok()).expect(usage);
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    io.block_on(async {
        let started = Instant::now();
        let filled = fill_log(&dir, records, |done| {
            eprintln!(
                "{done} records, {:.0}/s",
                done as f64 / started.elapsed().as_secs_f64()
            )
        })
        .await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{records} records appended in {secs:.1} s ({:.0}/s), {:.0} bytes per envelope on average; the log holds {}",
            records as f64 / secs,
            filled.envelope_bytes as f64 / records.max(1) as f64,
            filled.size
        );
    });
}
