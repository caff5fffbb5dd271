//! Evidence throughput (issue #3):
//! - `sign_append`: sign a record (DSSE, Ed25519) and append it durably to SQLite, many
//!   appenders at once so commits are batched — records/s;
//! - `verify_bundle`: verify a 100,000-record bundle offline (every signature, every
//!   inclusion proof, the checkpoint) — records/s; also prints the bundle size per record.
//!
//! `cargo bench -p runwarden-evidence --bench evidence`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runwarden_evidence::{Envelope, Filter, NewRecord, SigningKey, Store, export, verify_bundle};
use std::time::Duration;

const BURST: u64 = 2_000;
const BUNDLE: u64 = 100_000;

fn payload(i: u64) -> Vec<u8> {
    // About the size of a small real statement (a few host calls in the trace).
    format!(
        "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{{\"name\":\"restart-service\",\"digest\":{{\"sha256\":\"c73b7727a07ab051d5b3458b7d72c85ee2ff4b5c2c3e790e6ffa5ec3cabc3c9d\"}}}}],\
\"predicateType\":\"https://runwarden.dev/attestation/invocation/v1\",\"predicate\":{{\"invocation_id\":\"{i:032x}\",\"tenant\":\"clinic\",\"host_id\":\"host-1\",\
\"trace\":[{{\"seq\":0,\"interface\":\"services\",\"function\":\"status\",\"args\":{{\"unit\":\"nginx.service\"}},\"result\":{{\"active_state\":\"inactive\"}},\"allowed\":true,\"dry_run\":false,\"duration_us\":1200}},\
{{\"seq\":1,\"interface\":\"services\",\"function\":\"restart\",\"args\":{{\"unit\":\"nginx.service\"}},\"result\":\"ok\",\"allowed\":true,\"dry_run\":false,\"duration_us\":90000}}],\
\"outcome\":{{\"status\":\"healed\",\"summary\":\"restarted nginx.service\"}}}}}}"
    )
    .into_bytes()
}

async fn append_burst(store: &Store, key: &SigningKey, base: u64) {
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (store, key) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..BURST).step_by(8) {
                let n = base + i;
                let env = Envelope::sign("application/vnd.in-toto+json", &payload(n), &key);
                store
                    .append(NewRecord {
                        envelope: env.to_json().into_bytes(),
                        invocation_id: format!("{n:032x}"),
                        host_id: "host-1".into(),
                        runbook: "restart-service".into(),
                        status: "healed".into(),
                        started_at_ms: n as i64,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("host-1").unwrap();

    let store = rt.block_on(Store::open(dir.path().join("append.db").to_str().unwrap())).unwrap();
    let mut g = c.benchmark_group("evidence");
    g.throughput(Throughput::Elements(BURST));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let mut base = 0;
    g.bench_function("sign_append", |b| {
        b.iter(|| {
            rt.block_on(append_burst(&store, &key, base));
            base += BURST;
        })
    });

    // A 100,000-record log, exported once.
    let big = rt.block_on(Store::open(dir.path().join("big.db").to_str().unwrap())).unwrap();
    for chunk in 0..BUNDLE / BURST {
        rt.block_on(append_burst(&big, &key, chunk * BURST));
    }
    let contents = rt.block_on(export(&big, &Filter::default(), &key, "runwarden/host-1", vec![])).unwrap();
    let mut bytes = Vec::new();
    contents.write(&mut bytes).unwrap();
    println!(
        "bundle of {BUNDLE} records: {} bytes, {} bytes per record",
        bytes.len(),
        bytes.len() as u64 / BUNDLE
    );
    let trusted = [key.verifying_key()];
    g.throughput(Throughput::Elements(BUNDLE));
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("verify_bundle", |b| {
        b.iter(|| {
            let v = verify_bundle(bytes.as_slice(), &trusted, None).unwrap();
            assert_eq!(v.records, BUNDLE);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
