//! L1 performance (issue #4):
//! - `rules_1000`: evaluate one incident against a rule set of 1,000 YAML rules compiled
//!   into the rule engine; the incident matches only the last rule (every rule is tried);
//! - `l1_end_to_end`: `Controller::submit` in one process — incident accepted, rule
//!   matched, guardrails, runbook (clear-tmp) run in the sandbox, evidence signed and
//!   durable, incident state stored, result ready. Also prints median and p99 over
//!   2,000 sequential submissions.
//!
//! `cargo bench -p runwarden-control --bench l1`

use criterion::{Criterion, criterion_group, criterion_main};
use runwarden_control::{ControlConfig, Controller, GuardrailConfig, HostConfig, Incident};
use runwarden_runtime::{Policy, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `runwarden` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn compile(yaml: &str) -> Vec<u8> {
    let program =
        runwarden_control::rules::compile(&[("bench.yaml".into(), yaml.into())], None).unwrap();
    runwarden_control::rules::embed(runwarden_guests::rule_engine(), &program.to_bytes()).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        Runtime::new(RuntimeConfig {
            data_dir: dir.path().join("data"),
        })
        .unwrap(),
    );

    // 1,000 rules of the usual shape; only the last matches.
    let mut yaml = String::from("rules:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  - id: r{i}\n    match: {{type: kind-{i}, min_severity: low, service: \"svc-{i}*\", labels: {{dir: \"*/tmp\"}}, message: \"(?i)disk {i} full\"}}\n    action: {{runbook: clear-tmp, params: {{dir: \"{{{{labels.dir}}}}\", older_than_hours: 24}}}}\n"
        ));
    }
    let set = rt.load_rules(&compile(&yaml)).unwrap();
    let incident = Incident::from_json(
        br#"{"tenant":"t","host":"h","type":"kind-999","severity":"high","service":"svc-999.service","message":"Disk 999 full","labels":{"dir":"/srv/tmp"}}"#,
    )
    .unwrap();
    let input =
        runwarden_control::rule_input(&incident, "id", &BTreeMap::new(), "2026-11-22T00:00:00Z");
    assert_eq!(rt.evaluate(&set, &input).unwrap().unwrap().rule_id, "r999");
    let mut g = c.benchmark_group("l1");
    g.bench_function("rules_1000", |b| {
        b.iter(|| rt.evaluate(&set, &input).unwrap().unwrap())
    });

    // End to end.
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let policy = Policy::parse(&format!(
        "host_id = \"bench-host\"\n[grants]\nwrite_dirs = [\"{}\"]\n",
        work.display()
    ))
    .unwrap();
    let rules = compile(&format!(
        "rules:\n  - id: tmp-full\n    match: {{type: disk-full}}\n    action: {{runbook: clear-tmp, params: {{dir: \"{}\", older_than_hours: 24}}}}\n    cooldown: 0\n",
        work.join("tmp").display()
    ));
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let policy = Arc::new(policy);
    let (link, agent) = runwarden_bus::in_process("bench-host", 64);
    let runbooks: Vec<Vec<u8>> = runwarden_guests::standard_runbooks()
        .map(|(_, b)| b.to_vec())
        .collect();
    let controller = io
        .block_on(Controller::start(
            ControlConfig {
                database: dir.path().join("rw.db").display().to_string(),
                data_dir: dir.path().join("data"),
                hosts: vec![HostConfig {
                    tenant: "bench".into(),
                    policy: policy.clone(),
                    labels: BTreeMap::new(),
                    inventory: Default::default(),
                }],
                signer: runwarden_control::LogSigner::Host("bench-host".into()),
                // Every submission must run: no cooldown, repeat or breaker in the way.
                guardrails: GuardrailConfig {
                    cooldown_secs: 0,
                    repeat_threshold: u32::MAX,
                    breaker_max_per_minute: u32::MAX,
                    ..GuardrailConfig::default()
                },
                llm: None,
                planner: Default::default(),
                sla: Default::default(),
                dispatch: Arc::new(link),
                hand_up: false,
            },
            rt.clone(),
            runbooks.clone(),
            vec![rules],
        ))
        .unwrap();
    let (key, _) =
        runwarden_control::evidence::host_key(&dir.path().join("data"), None, "bench-host")
            .unwrap();
    // The agent's task runs on `io`, like the controller.
    io.block_on(runwarden_agent::spawn_local(
        rt.clone(),
        runwarden_agent::AgentConfig {
            publishers: Default::default(),
            trust: None,
            components: None,
            tenant: "bench".into(),
            policy,
            runbooks: Vec::new(),
            key,
            control_keys: vec![controller.control_public_key()],
            log: controller.evidence_log(),
            journal: dir.path().join("data/agent-journal.db"),
        },
        &runbooks,
        agent,
    ))
    .unwrap();
    let incident =
        Incident::from_json(br#"{"host":"bench-host","type":"disk-full","severity":"high"}"#)
            .unwrap();
    let submit = || {
        let r = io
            .block_on(controller.submit("bench", incident.clone()))
            .unwrap();
        assert_eq!(r.status, "no-op", "{r:?}");
    };
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("l1_end_to_end", |b| b.iter(submit));
    g.finish();

    let mut lat: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            submit();
            t.elapsed()
        })
        .collect();
    lat.sort();
    println!(
        "l1_end_to_end over 2000 sequential submissions: median {:?}, p99 {:?}, max {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat[lat.len() - 1]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
