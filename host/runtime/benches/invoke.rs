//! `invoke`: one complete invocation of a trivial runbook (instantiate from the cached
//! `InstancePre`, call `run`, one traced host call, tear down), against a baseline of bare
//! wasmtime instantiate + call of the same component on an identically configured engine.
//!
//! `cargo bench -p runwarden-runtime --bench invoke`

use criterion::{Criterion, criterion_group, criterion_main};
use runwarden_runtime::{Policy, RunOptions, Runtime, RuntimeConfig, engine_config};
use std::hint::black_box;
use std::sync::Arc;
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn bench(c: &mut Criterion) {
    let wasm = runwarden_test_artifacts::bytes("trivial");
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        data_dir: dir.path().to_path_buf(),
    })
    .unwrap();
    let loaded = rt.load(&wasm).unwrap();
    let policy = Arc::new(Policy::parse("host_id = \"bench\"\n").unwrap());

    let mut g = c.benchmark_group("invoke");
    g.bench_function("runwarden", |b| {
        b.iter(|| {
            let inv = rt.invoke(
                &loaded,
                &policy,
                RunOptions {
                    params: serde_json::json!({}),
                    dry_run: false,
                    invocation_id: None,
                },
            );
            assert_eq!(inv.trace.len(), 1);
            black_box(inv)
        })
    });

    // Baseline: the same component on bare wasmtime with the same engine configuration:
    // WASI linked, the log import a no-op, other imports trapping; a fresh store, an
    // instantiate from an InstancePre, one call of `run`, drop.
    let engine = Engine::new(&engine_config()).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let mut linker: Linker<Bare> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    linker
        .instance("runwarden:runbook/log@0.1.0")
        .unwrap()
        .func_new("log", |_, _, _, _| Ok(()))
        .unwrap();
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let run_idx = component.get_export_index(None, "run").unwrap();
    g.bench_function("bare-wasmtime", |b| {
        b.iter(|| {
            let mut store = Store::new(
                &engine,
                Bare {
                    wasi: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            store.set_fuel(10_000_000_000).unwrap();
            store.set_epoch_deadline(1_000_000);
            let instance = pre.instantiate(&mut store).unwrap();
            let run = instance.get_func(&mut store, run_idx).unwrap();
            let mut results = [Val::Bool(false)];
            run.call(&mut store, &[Val::String("{}".into())], &mut results)
                .unwrap();
            black_box(results)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
