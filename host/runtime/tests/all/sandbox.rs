//! The runtime's own guarantees: loading, refusal, validation, tracing, the cache.
use super::*;
use runwarden_runtime::Error;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

#[test]
fn trivial_runbook_runs_and_traces_its_log_call() {
    let h = Harness::new();
    let inv = h.run("trivial", "host_id = \"t\"\n", json!({}), false);
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.trace.len(), 1);
    assert_eq!(inv.trace[0].interface, "log");
    assert_eq!(inv.trace[0].args["message"], "hello from the sandbox");
    assert!(inv.trace[0].allowed);
    assert!(inv.fuel_consumed > 0);
    assert_eq!(inv.host_id, "t");
    assert_eq!(inv.sha256.len(), 64);
}

#[test]
fn manifest_asking_beyond_policy_is_refused_before_instantiation_naming_each_grant() {
    let h = Harness::new();
    let units = h.path("units");
    let policy = format!(
        "host_id = \"t\"\n[grants]\nservices = [\"nginx.service\"]\n{}",
        service_backend(&units)
    );
    let inv = h.run(
        "restart-service",
        &policy,
        json!({"unit": "sshd.service"}),
        false,
    );
    assert_status(&inv, Status::Refused);
    assert!(
        inv.outcome.summary.contains("service sshd.service"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(inv.fuel_consumed, 0, "the guest must not have run");
    assert!(inv.trace.is_empty());
    assert!(inv.grant.is_none());
    assert!(!units.join("sshd.service").exists());
}

#[test]
fn params_are_validated_against_the_schema_before_the_guest_runs() {
    let h = Harness::new();
    let policy = "host_id = \"t\"\n[grants]\nservices = [\"*\"]\n";
    for params in [
        json!({"unit": 5}),
        json!({}),
        json!({"unit": "a", "extra": true}),
    ] {
        let inv = h.run("restart-service", policy, params.clone(), false);
        assert_status(&inv, Status::InvalidParams);
        assert_eq!(inv.fuel_consumed, 0, "{params}");
        assert!(
            inv.outcome
                .summary
                .starts_with("invalid params for restart-service"),
            "{}",
            inv.outcome.summary
        );
    }
}

#[test]
fn restart_service_heals_a_stopped_unit_and_dry_run_only_simulates() {
    let h = Harness::new();
    let units = h.path("units");
    std::fs::write(units.join("nginx.service"), "inactive\n").unwrap();
    let policy = format!(
        "host_id = \"t\"\n[grants]\nservices = [\"nginx.service\"]\n{}",
        service_backend(&units)
    );

    let dry = h.run(
        "restart-service",
        &policy,
        json!({"unit": "nginx.service"}),
        true,
    );
    assert_status(&dry, Status::Healed);
    assert_eq!(
        std::fs::read_to_string(units.join("nginx.service")).unwrap(),
        "inactive\n"
    );
    assert!(
        !units.join("nginx.service.log").exists(),
        "dry run must not restart"
    );
    let restart = dry.trace.iter().find(|e| e.function == "restart").unwrap();
    assert!(restart.dry_run && restart.allowed);

    let live = h.run(
        "restart-service",
        &policy,
        json!({"unit": "nginx.service"}),
        false,
    );
    assert_status(&live, Status::Healed);
    assert_eq!(
        std::fs::read_to_string(units.join("nginx.service")).unwrap(),
        "active\n"
    );
    assert_eq!(
        std::fs::read_to_string(units.join("nginx.service.log")).unwrap(),
        "restarted\n"
    );
    let fns: Vec<_> = live
        .trace
        .iter()
        .map(|e| (e.interface, e.function, e.dry_run))
        .collect();
    assert_eq!(
        fns,
        [
            ("services", "status", false),
            ("services", "restart", false),
            ("services", "status", false)
        ]
    );
    assert_eq!(live.trace[1].args, json!({"unit": "nginx.service"}));
}

#[test]
fn bytes_that_are_not_a_component_are_rejected_clearly() {
    let h = Harness::new();
    let core_module = b"\0asm\x01\0\0\0";
    match h.rt.load(core_module) {
        Err(Error::NotAComponent(m)) => assert!(m.contains("core WebAssembly module"), "{m}"),
        other => panic!("expected NotAComponent, got {:?}", other.err()),
    }
    match h.rt.load(b"#!/bin/sh\necho hi\n") {
        Err(e @ Error::NotAComponent(_)) => assert!(e.to_string().contains("wasm32-wasip2")),
        other => panic!("expected NotAComponent, got {:?}", other.err()),
    }
    // A truncated real component.
    let bytes = runwarden_test_artifacts::bytes("trivial");
    assert!(matches!(
        h.rt.load(&bytes[..bytes.len() / 2]),
        Err(Error::NotAComponent(_))
    ));
}

#[test]
fn a_component_of_another_world_is_rejected_clearly() {
    let h = Harness::new();
    // The empty component: valid, but exports neither `describe` nor `run`.
    let empty = b"\0asm\x0d\0\x01\0";
    match h.rt.load(empty) {
        Err(e @ Error::WrongWorld(_)) => assert!(e.to_string().contains("runbook"), "{e}"),
        other => panic!("expected WrongWorld, got {:?}", other.err()),
    }
}

fn artifacts(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data.join("cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

#[test]
fn compiled_artifacts_are_cached_privately_and_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bytes = runwarden_test_artifacts::bytes("trivial");
    let policy = Arc::new(Policy::parse("host_id = \"t\"\n").unwrap());
    let run = |rt: &Runtime| {
        let l = rt.load(&bytes).unwrap();
        let inv = rt.invoke(&l, &policy, RunOptions::default());
        assert_status(&inv, Status::NoOp);
        l.cache_status()
    };

    assert_eq!(
        run(&Runtime::new(RuntimeConfig {
            data_dir: data.clone()
        })
        .unwrap()),
        "miss"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("cache")), 0o700);
    assert_eq!(mode(&data.join("keys/cache.key")), 0o600);
    let files = artifacts(&data);
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0]), 0o600);

    // A second process finds the authenticated artifact.
    assert_eq!(
        run(&Runtime::new(RuntimeConfig {
            data_dir: data.clone()
        })
        .unwrap()),
        "hit"
    );

    // Tampered: one flipped byte in the native code. Discarded, recompiled, still correct.
    let mut artifact = std::fs::read(&files[0]).unwrap();
    let mid = artifact.len() / 2;
    artifact[mid] ^= 0x01;
    std::fs::write(&files[0], &artifact).unwrap();
    assert_eq!(
        run(&Runtime::new(RuntimeConfig {
            data_dir: data.clone()
        })
        .unwrap()),
        "rejected"
    );
    assert_eq!(
        run(&Runtime::new(RuntimeConfig {
            data_dir: data.clone()
        })
        .unwrap()),
        "hit"
    );

    // Foreign: an artifact another host (another key) compiled is not trusted here.
    let other = dir.path().join("other");
    assert_eq!(
        run(&Runtime::new(RuntimeConfig {
            data_dir: other.clone()
        })
        .unwrap()),
        "miss"
    );
    let foreign = artifacts(&other).pop().unwrap();
    std::fs::copy(&foreign, &files[0]).unwrap();
    assert_eq!(
        run(&Runtime::new(RuntimeConfig {
            data_dir: data.clone()
        })
        .unwrap()),
        "rejected"
    );

    // Truncated to less than its tag.
    std::fs::write(&artifacts(&data)[0], b"short").unwrap();
    assert_eq!(
        run(&Runtime::new(RuntimeConfig { data_dir: data }).unwrap()),
        "rejected"
    );
}

#[test]
fn one_runtime_serves_concurrent_invocations() {
    let h = Harness::new();
    let loaded =
        h.rt.load(&runwarden_test_artifacts::bytes("trivial"))
            .unwrap();
    let policy = Arc::new(Policy::parse("host_id = \"t\"\n").unwrap());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .map(|_| h.rt.invoke(&loaded, &policy, RunOptions::default()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for hd in handles {
            for inv in hd.join().unwrap() {
                assert_status(&inv, Status::NoOp);
                assert!(ids.insert(inv.invocation_id));
            }
        }
        assert_eq!(ids.len(), 100);
    });
}

#[test]
fn malformed_policies_name_the_problem() {
    for (text, expect) in [
        ("host_id = \"h\"\nlimits = 3\n", "invalid type"),
        (
            "host_id = \"h\"\n[limits]\ntimeout = 5\n",
            "unknown field `timeout`",
        ),
        ("[grants]\nprobe = true\n", "missing field `host_id`"),
        ("host_id = \"h\"\n[grants]\nhttp = [\"ftp://x\"]\n", "ftp"),
        (
            "host_id = \"h\"\n[[grants.exec]]\nprogram = \"certbot\"\n",
            "absolute path",
        ),
        (
            "host_id = \"h\"\n[services]\nbackend = \"upstart\"\n",
            "upstart",
        ),
    ] {
        let err = Policy::parse(text).unwrap_err().to_string();
        assert!(
            err.contains(expect),
            "{text:?} gave {err:?}, expected it to mention {expect:?}"
        );
        assert!(!err.contains('\n'), "one line: {err:?}");
    }
}
