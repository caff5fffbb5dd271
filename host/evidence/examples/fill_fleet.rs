//! A control plane's evidence database at audit scale, for the tenant-bundle benchmark
//! (issue #14; `scripts/bench-evidence-tenant` drives it).
//!
//! ```sh
//! fill_fleet fill DATA_DIR HOSTS PER_HOST CONTROL
//! fill_fleet export DATA_DIR OUT
//! ```
//!
//! `fill` writes `DATA_DIR/evidence.db` as a server holds it: `CONTROL` records of the
//! control plane's own log (signed by `DATA_DIR/control-key/runwarden-control.key`, made
//! alternately for tenants `clinic-bench` and `other`), and the logs of `HOSTS` hosts of
//! `clinic-bench`, `PER_HOST` records each, mirrored as agents forward them (segments of
//! 4,096 records with their signed checkpoints, each record's signature checked). Records
//! are pipeline-shaped (about 5 KB) and spread over the year from 2025-12-01.
//!
//! `export` writes the tenant bundle of `clinic-bench` to `OUT` through the same library
//! call `runwarden evidence export --tenant` makes (the control plane's view of its log,
//! then each host's log), without the enrollment tables a real server would read the
//! hosts from.

use runwarden_evidence::{
    Checkpoint, CompactTree, Filter, LogRole, LogSource, Segment, SigningKey, Store, TenantLog,
    leaf_hash,
};
use runwarden_testkit::evidence::{self as shapes, TENANT, YEAR_MS, YEAR_START_MS};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: fill_fleet fill DATA_DIR HOSTS PER_HOST CONTROL | fill_fleet export DATA_DIR OUT";
    let dir = PathBuf::from(args.get(1).expect(usage));
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let num = |i: usize| -> u64 { args.get(i).and_then(|n| n.parse().ok()).expect(usage) };
    match args.first().map(String::as_str) {
        Some("fill") => io.block_on(fill(&dir, num(2), num(3), num(4))),
        Some("export") => io.block_on(export(&dir, Path::new(args.get(2).expect(usage)))),
        _ => panic!("{usage}"),
    }
}

fn control_key(dir: &Path) -> SigningKey {
    let keys = dir.join("control-key");
    let file = keys.join("runwarden-control.key");
    if !file.exists() {
        std::fs::create_dir_all(&keys).expect("the data directory");
        runwarden_evidence::write_key_pair(&keys, "runwarden-control").expect("the control key");
    }
    runwarden_evidence::read_signing_key(&file).expect("the control key")
}

fn host_name(h: u64) -> String {
    format!("clinic-bench-{h:02}")
}

async fn fill(dir: &Path, hosts: u64, per_host: u64, control: u64) {
    let key = control_key(dir);
    let store = Store::open_sqlite(&dir.join("evidence.db"))
        .await
        .expect("the evidence database");
    let started = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..control {
        let tenant = if i % 2 == 0 { TENANT } else { "other" };
        let at = YEAR_START_MS + i * (YEAR_MS / control.max(1));
        let record = shapes::record(&key, ("runwarden-control", tenant), i, at);
        let s = store.clone();
        pending.spawn(async move { s.append(record).await });
        if pending.len() >= 256 {
            pending
                .join_next()
                .await
                .unwrap()
                .unwrap()
                .expect("appended");
        }
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap().expect("appended");
    }
    eprintln!(
        "{control} control-plane records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for h in 0..hosts {
        let name = host_name(h);
        let hk = SigningKey::generate(&name).expect("a host key");
        let origin = runwarden_evidence::log_origin(&name);
        let mut tree = CompactTree::new();
        let mut first = 0;
        while first < per_host {
            let end = per_host.min(first + 4096);
            let envelopes: Vec<Vec<u8>> = (first..end)
                .map(|i| {
                    let at = YEAR_START_MS + i * (YEAR_MS / per_host.max(1));
                    shapes::record(&hk, (&name, TENANT), i + h * 10_000_000, at).envelope
                })
                .collect();
            for e in &envelopes {
                tree.append(leaf_hash(e));
            }
            let checkpoint = Checkpoint {
                origin: origin.clone(),
                size: end,
                root: tree.root(),
            }
            .sign(&hk)
            .expect("a checkpoint");
            store
                .mirror(
                    &hk.verifying_key(),
                    &Segment {
                        origin: origin.clone(),
                        first,
                        envelopes,
                        checkpoint,
                    },
                )
                .await
                .expect("mirrored");
            first = end;
        }
        eprintln!(
            "host {name}: {per_host} records mirrored, {:.1} s in all",
            started.elapsed().as_secs_f64()
        );
    }
}

async fn export(dir: &Path, out: &Path) {
    let key = control_key(dir);
    let store = Store::open_sqlite(&dir.join("evidence.db"))
        .await
        .expect("the evidence database");
    let mut logs = vec![TenantLog {
        role: LogRole::Control,
        host: None,
        enrolled_at_ms: None,
        source: LogSource::TenantView,
    }];
    for origin in store.mirrored_origins().await.expect("the mirrored logs") {
        logs.push(TenantLog {
            role: LogRole::Host,
            host: origin.strip_prefix("runwarden/").map(String::from),
            enrolled_at_ms: Some(YEAR_START_MS),
            source: LogSource::Mirror(origin),
        });
    }
    let filter = Filter {
        tenant: Some(TENANT.into()),
        ..Filter::default()
    };
    let file = std::fs::File::create(out).expect("the bundle file");
    let started = Instant::now();
    let (w, statement) = runwarden_evidence::export_tenant(
        &store,
        &filter,
        &logs,
        &key,
        None,
        vec![key.verifying_key()],
        std::io::BufWriter::with_capacity(1 << 20, file),
        &|_, _| {},
    )
    .await
    .expect("exported");
    w.into_inner().expect("written").sync_all().expect("synced");
    let records: u64 = statement.logs.iter().map(|l| l.records).sum();
    println!(
        "exported {records} records of {} logs in {:.1} s",
        statement.logs.len(),
        started.elapsed().as_secs_f64()
    );
}
