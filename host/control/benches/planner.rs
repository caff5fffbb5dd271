//! L2 planner overhead (issue #5), excluding the model's own latency: with 100 runbooks
//! deployed, build the host's catalog (platform and grant filter, history from 500 recent
//! runs), build the prompt, and validate a proposal (catalog membership, params schema,
//! grants, threshold). `offline` also runs the offline planner's retrieval in between.
//! Prints the prompt's estimated size in tokens.
//!
//! `cargo bench -p runwarden-control --bench planner`

use criterion::{Criterion, criterion_group, criterion_main};
use runwarden_control::Incident;
use runwarden_control::planner::{self, Backend, PlannerConfig, catalog, prompt};
use runwarden_control::store::RunRow;
use runwarden_runtime::{Policy, Runtime, RuntimeConfig};
use std::collections::BTreeMap;

/// The allocator the `runwarden` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        data_dir: dir.path().join("data"),
    })
    .unwrap();
    // 100 runbooks: the standard library's manifests, deployed under 100 names.
    let standard: Vec<_> = runwarden_guests::standard_runbooks()
        .map(|(_, b)| rt.load(b).unwrap())
        .collect();
    let mut deployed = BTreeMap::new();
    for i in 0..100 {
        let l = &standard[i % standard.len()];
        deployed.insert(format!("{}-{i:03}", l.manifest().name), l.clone());
    }
    let policy = Policy::parse(
        "host_id = \"h1\"\n[grants]\nservices = [\"nginx.service\", \"php*-fpm.service\"]\nwrite_dirs = [\"/var/tmp/app\", \"/var/log/app\"]\nread_dirs = [\"/etc/ssl\", \"/etc/letsencrypt\"]\nhttp = [\"http://127.0.0.1:8080\"]\nprobe = true\n[[grants.exec]]\nprogram = \"/usr/bin/certbot\"\nargs = [\"renew\", \"--cert-name\", \"*\"]\n",
    )
    .unwrap();
    let names: Vec<String> = deployed.keys().cloned().collect();
    let recent: Vec<std::sync::Arc<RunRow>> = (0..500)
        .map(|i| RunRow {
            invocation_id: format!("inv-{i}"),
            incident_id: format!("inc-{i}"),
            tenant: "t".into(),
            host: if i % 3 == 0 { "h1" } else { "h2" }.into(),
            runbook: names[i % names.len()].clone(),
            status: if i % 7 == 0 { "failed" } else { "healed" }.into(),
            summary: "restarted nginx.service; it is active".into(),
            tier: "L1".into(),
            dry_run: false,
            incident_type: "service-down".into(),
            service: "nginx.service".into(),
            message: "nginx is not running".into(),
            params: r#"{"unit":"nginx.service"}"#.into(),
            at_ms: 1_790_000_000_000 - i as i64 * 1000,
        })
        .map(std::sync::Arc::new)
        .collect();
    let incident = Incident::from_json(
        br#"{"tenant":"t","host":"h1","type":"php-fpm-stuck","severity":"high","service":"php8.2-fpm.service","message":"php-fpm workers stuck; requests time out","labels":{"site":"portal"}}"#,
    )
    .unwrap();
    let config = PlannerConfig::default();

    let (cat, excluded) = catalog::build(&deployed, &policy, "linux", "h1", &recent);
    let host = "h1 (linux, debian 12, init systemd, packages apt); service units present that runbooks may touch: nginx.service, php8.2-fpm.service";
    let req = prompt::request(&serde_json::to_value(&incident).unwrap(), host, &cat);
    if std::env::var_os("PLANNER_BENCH_SHOW").is_some() {
        println!("{}\n{excluded:?}", req.user);
    }
    println!(
        "prompt with {} runbooks in the catalog: {} bytes, ≈ {} tokens (estimate: bytes / 4)",
        cat.len(),
        req.system.len()
            + req.user.len()
            + req
                .tools
                .iter()
                .map(|t| t.input_schema.to_string().len())
                .sum::<usize>(),
        prompt::estimate_tokens(&req)
    );

    let io = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("planner");
    // Catalog + prompt + validation of a proposal as a model would send it.
    g.bench_function("overhead_100_runbooks", |b| {
        b.iter(|| {
            let (cat, _) = catalog::build(&deployed, &policy, "linux", "h1", &recent);
            let req = prompt::request(&serde_json::to_value(&incident).unwrap(), host, &cat);
            let entry = cat
                .iter()
                .find(|e| e.name.starts_with("restart-service"))
                .unwrap();
            let params = serde_json::json!({"unit": "php8.2-fpm.service"});
            (
                req,
                planner::validate(entry, &params, 0.9, &config, &policy),
            )
        })
    });
    // The same with the offline planner choosing (retrieval over manifests and history).
    g.bench_function("offline_100_runbooks", |b| {
        b.iter(|| {
            let (cat, _) = catalog::build(&deployed, &policy, "linux", "h1", &recent);
            io.block_on(planner::plan(
                &Backend::Offline,
                &config,
                host,
                &incident,
                &cat,
                &recent,
                &policy,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
