//! The engine, the component cache, and one invocation from grant to outcome.

use crate::bindings::{Runbook, RunbookPre};
use crate::cache::{ArtifactCache, CacheStatus};
use crate::error::{Error, Result};
use crate::grant::Grant;
use crate::host::{CallContext, HostState, Limiter};
use crate::manifest::Manifest;
use crate::output::Output;
use crate::policy::Policy;
use crate::trace::{Trace, TraceEntry};
use crate::wasi;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// One epoch tick; deadlines are rounded up to it.
const TICK: Duration = Duration::from_millis(5);
/// Resources (open files, streams, pollables) one invocation may hold at once.
const MAX_RESOURCES: usize = 1024;
/// Longest outcome summary kept, in bytes.
const MAX_SUMMARY: usize = 1024;
/// The pooling allocator's per-memory ceiling; policy memory limits above it are capped.
const POOL_MAX_MEMORY: usize = crate::policy::MAX_MEMORY_BYTES as usize;

/// Where the runtime keeps its state.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Data directory: `cache/` (compiled artifacts, 0700), `keys/` (0600 keys), `scratch/`.
    pub data_dir: PathBuf,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The runbook fixed the problem.
    Healed,
    /// Nothing needed doing.
    #[serde(rename = "no-op")]
    NoOp,
    /// The runbook ran and failed (its own verdict or a returned error).
    Failed,
    /// The manifest asked for capabilities the policy does not grant; nothing ran.
    Refused,
    /// The params were rejected: by the manifest's schema before the guest ran (fuel 0),
    /// or by the runbook itself for a rule the schema cannot express.
    InvalidParams,
    /// The wall-clock deadline passed.
    Timeout,
    /// The fuel ran out.
    OutOfFuel,
    /// The guest needed more memory than the limit.
    OutOfMemory,
    /// The guest trapped (panic, stack overflow, bad memory access, …).
    Trapped,
    /// The guest wrote more log/stdout/stderr than the limit.
    OutputLimit,
}

impl Status {
    /// Did the run succeed (healed or no-op)?
    pub fn is_success(self) -> bool {
        matches!(self, Status::Healed | Status::NoOp)
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// One line for humans.
    pub summary: String,
    /// Structured details from the runbook, or about the failure.
    pub details: serde_json::Value,
}

/// Everything about one invocation: the basis of its evidence record.
#[derive(Clone, Debug, Serialize)]
pub struct Invocation {
    /// Unique id (UUID v4).
    pub invocation_id: String,
    /// Runbook name.
    pub runbook: String,
    /// Runbook version.
    pub version: String,
    /// SHA-256 of the component bytes.
    pub sha256: String,
    /// The host that ran it.
    pub host_id: String,
    /// Whether mutating calls were simulated.
    pub dry_run: bool,
    /// The params as given (secrets never appear in params: they come from `secrets`).
    pub params: serde_json::Value,
    /// The effective grant, when one was given.
    pub grant: Option<Grant>,
    /// SHA-256 of the grant's canonical JSON.
    pub grant_digest: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Every host call in order.
    pub trace: Vec<TraceEntry>,
    /// Captured stdout (redacted, capped).
    pub stdout: String,
    /// Captured stderr (redacted, capped).
    pub stderr: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Wall-clock duration in microseconds.
    pub duration_us: u64,
    /// Fuel the guest consumed.
    pub fuel_consumed: u64,
}

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Params as a JSON object.
    pub params: serde_json::Value,
    /// Simulate mutating calls instead of performing them.
    pub dry_run: bool,
    /// The invocation id to use (a UUID), when the caller chose it: an agent uses the id
    /// the control plane put in the job, so that a second delivery is recognised. A new
    /// time-ordered id when `None`; anything but a UUID is refused.
    pub invocation_id: Option<String>,
}

/// A loaded component, ready to run many times.
pub struct Loaded {
    sha256: String,
    manifest: Manifest,
    validator: jsonschema::Validator,
    pre: RunbookPre<HostState>,
    cache: CacheStatus,
}

impl Loaded {
    /// Whether a run with `params` would pass the params schema and `policy`'s grants —
    /// checked without running anything; the reason when it would not.
    pub fn precheck(&self, policy: &Policy, params: &serde_json::Value) -> Result<(), String> {
        let params = with_defaults(
            &self.manifest.params_schema,
            if params.is_null() {
                serde_json::json!({})
            } else {
                params.clone()
            },
        );
        if let Some(e) = self.validator.iter_errors(&params).next() {
            return Err(format!("invalid params for {}: {e}", self.manifest.name));
        }
        Grant::resolve(&self.manifest.capabilities, &params, policy)
            .map(|_| ())
            .map_err(|r| {
                format!(
                    "the policy of host {} does not grant {}",
                    policy.host_id,
                    r.missing.join("; ")
                )
            })
    }

    /// SHA-256 of the component bytes (hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// The manifest the component described.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Its manifest as JSON, as the component declares it: what a signed release of it
    /// must carry.
    pub fn manifest_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.manifest).unwrap_or_default()
    }
    /// Whether the compiled artifact came from the cache (`hit`), was compiled (`miss`),
    /// or was found tampered and recompiled (`rejected`).
    pub fn cache_status(&self) -> &'static str {
        match self.cache {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Rejected => "rejected",
        }
    }
}

/// The sandbox: one engine, one linker, a cache of loaded components.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// WASI only: what rule components link against.
    rule_linker: Linker<HostState>,
    cache: ArtifactCache,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
    io: Option<tokio::runtime::Runtime>,
    http: reqwest::Client,
    data_dir: PathBuf,
    /// An empty read-only directory preopened at `/` (see `wasi.rs`).
    root: PathBuf,
    stop_ticker: Arc<AtomicBool>,
    /// Runs abandoned past their deadline and still blocked (see [`MAX_ABANDONED`]).
    abandoned: Arc<Abandoned>,
    /// Runs in progress (see [`MAX_RUNS`]).
    slots: Arc<RunSlots>,
    /// The threads guests run on, kept between runs.
    threads: Arc<RunThreads>,
}

impl Runtime {
    /// Run `f` on each thread kept idle for guests: for what must be done on a thread
    /// itself, such as returning its allocator's freed memory once the host is idle.
    pub fn on_idle_run_threads(&self, f: fn()) {
        self.threads.on_each_idle(f);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(rt) = self.io.take() {
            rt.shutdown_background();
        }
    }
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Setup(format!("{what}: {e}"))
}

/// The engine configuration every runtime uses: pooling allocator sized for a small host,
/// epoch interruption, fuel, no component-model concurrency. Public so benchmarks can
/// build an identically configured bare-wasmtime baseline.
pub fn engine_config() -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // Sized for a 2-core host running a handful of invocations at once; virtual memory
    // is reserved per slot, so these counts stay modest.
    pool.total_component_instances(64)
        .total_core_instances(256)
        .total_memories(64)
        .total_tables(256)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_core_instances_per_component(32)
        .max_memory_size(POOL_MAX_MEMORY)
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10)
        // Reset only the pages a guest dirtied, with memset/memcpy instead of madvise:
        // madvise costs page faults and TLB-shootdown IPIs on every invocation.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut c = Config::new();
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(true)
        .concurrency_support(false)
        .max_wasm_stack(512 << 10);
    c
}

impl Runtime {
    /// Create a runtime keeping its cache and keys under `config.data_dir`.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let engine = Engine::new(&engine_config()).map_err(setup("engine"))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(setup("wasi"))?;
        wasi::wrap(&mut linker).map_err(setup("wasi wrappers"))?;
        Runbook::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(setup("host interfaces"))?;
        let mut rule_linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut rule_linker).map_err(setup("wasi"))?;
        wasi::wrap(&mut rule_linker).map_err(setup("wasi wrappers"))?;
        let cache = ArtifactCache::open(&config.data_dir, &engine)
            .map_err(|e| Error::Setup(format!("cache under {}: {e}", config.data_dir.display())))?;
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("runwarden-io")
            .enable_all()
            .build()
            .map_err(setup("io runtime"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(setup("http client"))?;
        raise_open_file_limit();
        let root = config.data_dir.join("sandbox-root");
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Setup(format!("sandbox root {}: {e}", root.display())))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("runwarden-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(setup("epoch thread"))?;
        }
        Ok(Runtime {
            engine,
            linker,
            rule_linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            io: Some(io),
            http,
            data_dir: config.data_dir,
            root,
            stop_ticker,
            abandoned: Arc::default(),
            slots: Arc::default(),
            threads: Arc::default(),
        })
    }

    /// Load a component: check it is a runbook component, compile it (or load its
    /// authenticated cached artifact), and read its manifest. Loading the same bytes
    /// again returns the same [`Loaded`].
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<Loaded>> {
        let sha256 = hex::encode(Sha256::digest(wasm));
        if let Some(l) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sha256)
        {
            return Ok(l.clone());
        }
        let (component, cache) = self.compile_with_sha(wasm, &sha256)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::WrongWorld(format!("{e:#}")))?;
        let pre = RunbookPre::new(pre).map_err(|e| Error::WrongWorld(format!("{e:#}")))?;
        let manifest = self.describe(&pre)?;
        let validator = jsonschema::validator_for(&manifest.params_schema)
            .map_err(|e| Error::Manifest(format!("params-schema: {e}")))?;
        let loaded = Arc::new(Loaded {
            sha256: sha256.clone(),
            manifest,
            validator,
            pre,
            cache,
        });
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256, loaded.clone());
        Ok(loaded)
    }

    /// Compile a component (or load its authenticated cached artifact); its SHA-256 hex.
    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<(wasmtime::component::Component, String)> {
        let sha256 = hex::encode(Sha256::digest(wasm));
        let (component, _) = self.compile_with_sha(wasm, &sha256)?;
        Ok((component, sha256))
    }

    fn compile_with_sha(
        &self,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<(wasmtime::component::Component, CacheStatus)> {
        if !is_component(wasm) {
            let what = if wasm.starts_with(b"\0asm\x01\0\0\0") {
                "this is a core WebAssembly module, not a component"
            } else {
                "the file does not start with the WebAssembly magic bytes"
            };
            return Err(Error::NotAComponent(what.into()));
        }
        self.cache
            .get_or_compile(&self.engine, sha256, wasm)
            .map_err(|e| Error::NotAComponent(format!("{e:#}")))
    }

    pub(crate) fn rule_linker(&self) -> &Linker<HostState> {
        &self.rule_linker
    }

    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Epoch ticks covering `timeout_ms`.
    pub(crate) fn ticks(&self, timeout_ms: u64) -> u64 {
        timeout_ms.div_ceil(TICK.as_millis() as u64) + 1
    }

    fn io(&self) -> tokio::runtime::Handle {
        self.io
            .as_ref()
            .expect("io runtime lives until drop")
            .handle()
            .clone()
    }

    pub(crate) fn context(
        &self,
        policy: Arc<Policy>,
        grant: Grant,
        dry_run: bool,
        deadline: Instant,
    ) -> CallContext {
        CallContext {
            output: Output::new(policy.limits.output_bytes),
            policy,
            grant,
            dry_run,
            risk: crate::manifest::Risk::Low,
            deadline,
            trace: Trace::default(),
            io: self.io(),
            http: self.http.clone(),
            fs_paths: HashMap::new(),
            simulated_units: HashMap::new(),
        }
    }

    pub(crate) fn store(
        &self,
        wasi: wasmtime_wasi::WasiCtx,
        cx: CallContext,
        limits: &crate::Limits,
    ) -> Store<HostState> {
        let memory_bytes = (limits.memory_bytes as usize).min(POOL_MAX_MEMORY);
        let mut store = Store::new(
            &self.engine,
            HostState {
                wasi,
                table: {
                    // Descriptors, streams and pollables a guest holds at once; bounds the
                    // host file descriptors and memory one invocation can pin.
                    let mut t = ResourceTable::new();
                    t.set_max_capacity(MAX_RESOURCES);
                    t
                },
                limiter: Limiter {
                    memory_bytes,
                    hit: false,
                    total: 0,
                },
                cx,
            },
        );
        store.limiter(|s| &mut s.limiter);
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(self.ticks(limits.timeout_ms));
        store
    }

    /// Call `describe` with no grant at all: a manifest must not need the host.
    fn describe(&self, pre: &RunbookPre<HostState>) -> Result<Manifest> {
        let policy = Arc::new(Policy::parse(
            "host_id = \"describe\"\n[limits]\ntimeout_ms = 5000\n",
        )?);
        let cx = self.context(
            policy.clone(),
            Grant::default(),
            true,
            Instant::now() + Duration::from_secs(5),
        );
        let wasi = wasi::context(&[], &[], &policy.grants, None, &self.root, true, &cx.output)
            .map_err(Error::Setup)?;
        let mut store = self.store(wasi, cx, &policy.limits);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| Error::WrongWorld(format!("instantiate: {e:#}")))?;
        let m = instance
            .call_describe(&mut store)
            .map_err(|e| Error::Manifest(format!("describe trapped: {}", trap_message(&e))))?;
        Manifest::from_wit(m)
    }

    /// Run a loaded component once under `policy`. Never fails: refusals, invalid params,
    /// traps and limits are statuses of the returned [`Invocation`], which is what gets
    /// recorded. Blocks the calling thread; from async code call it on a blocking thread.
    pub fn invoke(&self, loaded: &Loaded, policy: &Arc<Policy>, opts: RunOptions) -> Invocation {
        let started = Instant::now();
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let m = &loaded.manifest;
        let params = if opts.params.is_null() {
            serde_json::json!({})
        } else {
            opts.params
        };
        let params = with_defaults(&m.params_schema, params);
        // A given id names a scratch directory below: only a UUID, in its canonical form.
        let given = opts
            .invocation_id
            .as_deref()
            .map(|id| uuid::Uuid::try_parse(id).map(|u| u.hyphenated().to_string()));
        let mut inv = Invocation {
            // Time-ordered (v7): the evidence log and runs tables are keyed by it.
            invocation_id: match &given {
                Some(Ok(id)) => id.clone(),
                _ => uuid::Uuid::now_v7().to_string(),
            },
            runbook: m.name.clone(),
            version: m.version.clone(),
            sha256: loaded.sha256.clone(),
            host_id: policy.host_id.clone(),
            dry_run: opts.dry_run,
            params: params.clone(),
            grant: None,
            grant_digest: None,
            outcome: Outcome {
                status: Status::Refused,
                summary: String::new(),
                details: serde_json::json!({}),
            },
            trace: Vec::new(),
            stdout: String::new(),
            stderr: String::new(),
            started_at_ms,
            duration_us: 0,
            fuel_consumed: 0,
        };
        let finish = |mut inv: Invocation| {
            inv.duration_us = started.elapsed().as_micros() as u64;
            inv
        };
        if let Some(Err(e)) = given {
            inv.outcome = Outcome {
                status: Status::Refused,
                summary: format!("refused: the invocation id is not a UUID ({e})"),
                details: serde_json::json!({}),
            };
            return finish(inv);
        }

        let errors: Vec<String> = loaded
            .validator
            .iter_errors(&params)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!(
                    "{}{}",
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!("{at}: ")
                    },
                    e
                )
            })
            .collect();
        if !errors.is_empty() {
            inv.outcome = Outcome {
                status: Status::InvalidParams,
                summary: format!("invalid params for {}: {}", m.name, errors.join("; ")),
                details: serde_json::json!({ "errors": errors }),
            };
            return finish(inv);
        }
        let grant = match Grant::resolve(&m.capabilities, &params, policy) {
            Ok(g) => g,
            Err(refusal) => {
                inv.outcome = Outcome {
                    status: Status::Refused,
                    summary: format!(
                        "refused before instantiation: the policy of host {} does not grant {}",
                        policy.host_id,
                        refusal.missing.join("; ")
                    ),
                    details: serde_json::json!({ "missing_grants": refusal.missing }),
                };
                return finish(inv);
            }
        };
        inv.grant_digest = Some(grant.digest());
        inv.grant = Some(grant.clone());

        let scratch = (opts.dry_run && !grant.write_dirs.is_empty())
            .then(|| self.data_dir.join("scratch").join(&inv.invocation_id));
        if let Some(Err(e)) = scratch.as_ref().map(std::fs::create_dir_all) {
            inv.outcome = failed(format!("cannot create dry-run scratch directory: {e}"));
            return finish(inv);
        }
        let limits = policy.limits.clone();
        // A run waits for a free slot at most its own timeout; its deadline starts once it
        // has one.
        let Some(slot) = self.slots.acquire(Duration::from_millis(limits.timeout_ms)) else {
            inv.outcome = failed(format!(
                "host busy: {MAX_RUNS} runs were in progress for the whole {} ms timeout; \
                 nothing ran; retry later",
                limits.timeout_ms
            ));
            return finish(inv);
        };
        let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
        let mut cx = self.context(policy.clone(), grant, opts.dry_run, deadline);
        cx.risk = m.risk;
        let output = cx.output.clone();
        let wasi = match wasi::context(
            &cx.grant.read_dirs,
            &cx.grant.write_dirs,
            &policy.grants,
            scratch.as_deref(),
            &self.root,
            opts.dry_run,
            &output,
        ) {
            Ok(x) => x,
            Err(e) => {
                if let Some(s) = &scratch {
                    let _ = std::fs::remove_dir_all(s);
                }
                inv.outcome = Outcome {
                    status: Status::Refused,
                    summary: e,
                    details: serde_json::json!({}),
                };
                return finish(inv);
            }
        };
        let trace = cx.trace.clone();
        let store = self.store(wasi, cx, &limits);

        // The guest runs on a thread of its own, and this thread waits for it at most until
        // the deadline and a grace period: a run blocked in a host call that the epoch
        // cannot interrupt (a FIFO, a hung mount) is abandoned and ends `timeout` now.
        if let Err(n) = self.abandoned.admit() {
            {
                if let Some(s) = &scratch {
                    let _ = std::fs::remove_dir_all(s);
                }
                inv.outcome = failed(format!(
                    "host busy: {n} runs are still blocked in host calls past their deadline \
                     (at most {MAX_ABANDONED}); nothing ran; retry when they end"
                ));
                return finish(inv);
            }
        }
        let job = Job {
            pre: loaded.pre.clone(),
            store,
            params: params.to_string(),
            limits: limits.clone(),
            name: m.name.clone(),
            trace: trace.clone(),
            output: output.clone(),
            deadline,
            scratch: scratch.clone(),
            _slot: slot,
        };
        let done = Arc::new(Done::default());
        let spawned = {
            let done = done.clone();
            self.threads.run(Box::new(move || {
                let r = job.run();
                done.put(r);
            }))
        };
        if let Err(e) = spawned {
            // The job (and its scratch directory) was dropped with the closure.
            if let Some(s) = &scratch {
                let _ = std::fs::remove_dir_all(s);
            }
            inv.outcome = failed(format!("cannot start the run's thread: {e}"));
            return finish(inv);
        }
        match done.wait(deadline + GRACE, &self.abandoned) {
            Some((outcome, fuel)) => {
                inv.outcome = outcome;
                inv.fuel_consumed = fuel;
            }
            None => {
                inv.outcome = Outcome {
                    status: Status::Timeout,
                    summary: format!(
                        "deadline of {} ms passed while the runbook was blocked in a host call; \
                         the run was abandoned",
                        limits.timeout_ms
                    ),
                    details: serde_json::json!({ "abandoned": true }),
                };
                inv.fuel_consumed = 0;
            }
        }
        // Everything recorded is scrubbed once more: the outcome may quote host errors.
        inv.outcome.summary = trace.redact_cut(&inv.outcome.summary, MAX_SUMMARY);
        trace.redact_json(&mut inv.outcome.details);
        inv.trace = trace.entries();
        let (stdout, stderr) = output.captured();
        // Captured output may end mid-secret where the output limit (or the deadline) cut
        // it: the cut-aware scrub drops a secret's first bytes too.
        // Only output that was cut short is treated so: a run that ended on its own may
        // well end with text that happens to begin like a secret.
        let cut_short = output.exceeded() || !inv.outcome.status.is_success();
        let scrub = |b: &[u8]| {
            let text = String::from_utf8_lossy(b);
            if cut_short {
                trace.redact_tail(&text)
            } else {
                trace.redact(&text)
            }
        };
        inv.stdout = scrub(&stdout);
        inv.stderr = scrub(&stderr);
        finish(inv)
    }
}

/// How long past its deadline a run may take to end before it is abandoned: time for the
/// epoch interrupt (a few ticks) and for a host call bounded by the deadline to return.
const GRACE: Duration = Duration::from_secs(2);
/// Runs that may be abandoned (blocked past their deadline) at once. Each holds a thread,
/// an instance slot of the pool and up to its memory limit until its blocking call
/// returns; past this many, new runs are refused (`failed`, host busy) instead.
pub const MAX_ABANDONED: usize = 8;

/// Runs in progress at once. Each holds a component instance of the pool (64, shared with
/// rule sets and manifest reads), a thread and up to its memory limit; a run past this
/// many waits for one to end (at most its own timeout) rather than failing on an
/// exhausted pool, and the process's memory stays bounded however many incidents arrive
/// at once. Abandoned runs (see [`MAX_ABANDONED`]) keep their slot until they end.
pub const MAX_RUNS: usize = 32;

/// The count of runs in progress, and a wake-up when one ends.
#[derive(Default)]
struct RunSlots {
    busy: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One run's place among [`MAX_RUNS`]; given back when dropped.
struct RunSlot(Arc<RunSlots>);

impl RunSlots {
    /// A slot, waiting at most `wait` for one.
    fn acquire(self: &Arc<Self>, wait: Duration) -> Option<RunSlot> {
        let until = Instant::now() + wait;
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= MAX_RUNS {
            let now = Instant::now();
            if now >= until {
                return None;
            }
            busy = self
                .freed
                .wait_timeout(busy, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *busy += 1;
        Some(RunSlot(self.clone()))
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|e| e.into_inner());
        *busy = busy.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// Threads kept idle between runs: starting a thread per run cost more than the run of a
/// small runbook. A run finds an idle thread or starts one; a thread that is done goes
/// back to the idle list unless [`KEPT_RUN_THREADS`] are there already, and ends when the
/// runtime is dropped. A run abandoned past its deadline keeps its thread, so the next
/// run simply takes another.
#[derive(Default)]
struct RunThreads {
    idle: Mutex<Vec<std::sync::mpsc::SyncSender<RunTask>>>,
}

type RunTask = Box<dyn FnOnce() + Send>;

/// Idle run threads kept at most: enough for a 2-core host's steady load; a burst beyond
/// it starts threads that end after their run.
const KEPT_RUN_THREADS: usize = 4;

impl RunThreads {
    /// Run `f` once on every idle thread (each goes back to the idle list after).
    fn on_each_idle(self: &Arc<Self>, f: fn()) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        for to in idle {
            // A thread that is gone has nothing to do.
            let _ = to.send(Box::new(f));
        }
    }

    /// Run `task` on an idle thread, or on a new one.
    fn run(self: &Arc<Self>, task: RunTask) -> std::io::Result<()> {
        let mut task = task;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(to) = idle else { break };
            match to.send(task) {
                Ok(()) => return Ok(()),
                // That thread is gone (it cannot be while listed, but a task is never lost).
                Err(std::sync::mpsc::SendError(t)) => task = t,
            }
        }
        let threads = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("runwarden-run".into())
            .spawn(move || {
                let mut next = Some(task);
                while let Some(task) = next.take() {
                    task();
                    let Some(pool) = threads.upgrade() else {
                        return;
                    };
                    let (to, from) = std::sync::mpsc::sync_channel(1);
                    {
                        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                        if idle.len() >= KEPT_RUN_THREADS {
                            return;
                        }
                        idle.push(to);
                    }
                    drop(pool);
                    // Ends when the runtime (and with it the idle list) is dropped.
                    next = from.recv().ok();
                }
            })
            .map(|_| ())
    }
}

/// Runs abandoned and not yet ended.
#[derive(Default)]
struct Abandoned {
    count: Mutex<usize>,
}

impl Abandoned {
    /// Room for one more run, or how many are abandoned when there is none.
    fn admit(&self) -> Result<(), usize> {
        let n = *self.count.lock().unwrap_or_else(|e| e.into_inner());
        if n >= MAX_ABANDONED { Err(n) } else { Ok(()) }
    }
}

/// The result of a run's thread, handed over under a lock so that a run ending just as
/// it is abandoned is counted exactly once.
#[derive(Default)]
struct Done {
    state: Mutex<DoneState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct DoneState {
    result: Option<(Outcome, u64)>,
    /// Set when the caller gave up waiting: the run's thread then uncounts itself.
    abandoned: Option<Arc<Abandoned>>,
}

impl Done {
    /// Called by the run's thread when the run ended.
    fn put(&self, r: (Outcome, u64)) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.abandoned.take() {
            Some(a) => {
                let mut n = a.count.lock().unwrap_or_else(|e| e.into_inner());
                *n = n.saturating_sub(1);
            }
            None => {
                st.result = Some(r);
                self.cv.notify_all();
            }
        }
    }

    /// The run's result if it ends by `until`; otherwise the run is counted as abandoned.
    fn wait(&self, until: Instant, abandoned: &Arc<Abandoned>) -> Option<(Outcome, u64)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = st.result.take() {
                return Some(r);
            }
            let now = Instant::now();
            if now >= until {
                *abandoned.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                st.abandoned = Some(abandoned.clone());
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One run on its own thread: everything it needs, owned.
struct Job {
    pre: RunbookPre<HostState>,
    store: Store<HostState>,
    params: String,
    limits: crate::Limits,
    name: String,
    trace: Trace,
    output: Output,
    deadline: Instant,
    scratch: Option<PathBuf>,
    /// Held until the run's thread ends (an abandoned run keeps its slot).
    _slot: RunSlot,
}

impl Job {
    /// Instantiate and run; the outcome and the fuel consumed.
    fn run(mut self) -> (Outcome, u64) {
        let limits = &self.limits;
        let trace = &self.trace;
        let output = &self.output;
        let result = self
            .pre
            .instantiate(&mut self.store)
            .and_then(|instance| instance.call_run(&mut self.store, &self.params));
        let fuel = limits
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        let late = Instant::now() > self.deadline;
        let memory_hit = self.store.data().limiter.hit;
        let returned = result.is_ok();
        let mut outcome = match result {
            Ok(Ok(o)) => {
                use crate::bindings::runwarden::runbook::types::Status as S;
                // Parse first, then scrub: secrets with JSON-escaped characters would
                // otherwise slip past a scrub of the text.
                let mut details: serde_json::Value = serde_json::from_str(&o.details)
                    .unwrap_or_else(|_| serde_json::json!({ "text": o.details }));
                trace.redact_json(&mut details);
                let status = match o.status {
                    S::Healed => Status::Healed,
                    S::NoOp => Status::NoOp,
                    S::Failed => Status::Failed,
                };
                let summary = trace.redact_cut(&o.summary, MAX_SUMMARY);
                let size = details.to_string().len() as u64;
                if size > limits.output_bytes {
                    details = serde_json::json!({ "truncated": true, "bytes": size });
                }
                Outcome {
                    status,
                    summary,
                    details,
                }
            }
            Ok(Err(e)) => {
                use crate::bindings::runwarden::runbook::types::RunError as E;
                let (kind, msg) = match e {
                    E::InvalidParams(m) => ("invalid-params", m),
                    E::Denied(m) => ("denied", m),
                    E::Failed(m) => ("failed", m),
                };
                let msg = trace.redact_cut(&msg, MAX_SUMMARY);
                Outcome {
                    status: if kind == "invalid-params" {
                        Status::InvalidParams
                    } else {
                        Status::Failed
                    },
                    summary: format!("{} returned an error ({kind}): {msg}", self.name),
                    details: serde_json::json!({ "error": kind, "message": msg }),
                }
            }
            Err(e) => classify_trap(&e, memory_hit, output.exceeded(), limits),
        };
        if returned && late {
            // Past the deadline the run timed out, whatever the runbook says: a guest
            // woken from a sleep cut at the deadline must not report `healed`.
            outcome = Outcome {
                status: Status::Timeout,
                summary: format!(
                    "deadline of {} ms passed (the runbook then reported {:?}: {})",
                    limits.timeout_ms, outcome.status, outcome.summary
                ),
                details: outcome.details,
            };
        } else if returned && output.exceeded() {
            // The runbook carried on after its output was cut off: say so.
            outcome = Outcome {
                status: Status::OutputLimit,
                summary: format!(
                    "output limit of {} bytes exceeded (the runbook then reported {:?}: {})",
                    limits.output_bytes, outcome.status, outcome.summary
                ),
                details: outcome.details,
            };
        }
        drop(self.store);
        if let Some(s) = &self.scratch {
            let _ = std::fs::remove_dir_all(s);
        }
        (outcome, fuel)
    }
}

/// Fill in the schema's top-level `properties.*.default` for params the caller left out,
/// so that `{param}` placeholders, the guest and the record all see the same values.
fn with_defaults(schema: &serde_json::Value, mut params: serde_json::Value) -> serde_json::Value {
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(|p| p.as_object()),
        params.as_object_mut(),
    ) {
        for (name, prop) in props {
            if let Some(default) = prop.get("default") {
                obj.entry(name.clone()).or_insert_with(|| default.clone());
            }
        }
    }
    params
}

/// A component's preamble: magic, version 0x0d, layer 1 (a core module has layer 0).
fn is_component(wasm: &[u8]) -> bool {
    wasm.starts_with(b"\0asm") && wasm.get(6..8) == Some(&[1, 0])
}

/// Guests' open files are host file descriptors: raise the soft limit to the hard one so
/// concurrent invocations do not starve the host (the default soft limit is often 1024).
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

fn failed(summary: String) -> Outcome {
    Outcome {
        status: Status::Failed,
        summary,
        details: serde_json::json!({}),
    }
}

pub(crate) fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(t) => t.to_string(),
        None => format!("{e}"),
    }
}

fn classify_trap(
    e: &wasmtime::Error,
    memory_hit: bool,
    output_full: bool,
    limits: &crate::Limits,
) -> Outcome {
    let trap = e.downcast_ref::<Trap>().copied();
    let (status, summary) = match trap {
        Some(Trap::Interrupt) => (
            Status::Timeout,
            format!("deadline of {} ms passed", limits.timeout_ms),
        ),
        Some(Trap::OutOfFuel) => (
            Status::OutOfFuel,
            format!("fuel limit of {} ran out", limits.fuel),
        ),
        _ if output_full => (
            Status::OutputLimit,
            format!("output limit of {} bytes exceeded", limits.output_bytes),
        ),
        _ if memory_hit => (
            Status::OutOfMemory,
            format!("memory limit of {} bytes exceeded", limits.memory_bytes),
        ),
        Some(Trap::StackOverflow) => (Status::Trapped, "stack overflow".to_string()),
        None if format!("{e:#}").contains("concurrent") => (
            Status::Failed,
            format!("host busy: too many concurrent invocations, nothing ran; retry ({e})"),
        ),
        _ => (Status::Trapped, format!("trapped: {}", trap_message(e))),
    };
    Outcome {
        status,
        summary,
        details: serde_json::json!({ "trap": format!("{e:#}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn on_pool(pool: &Arc<RunThreads>) -> std::thread::ThreadId {
        let (tx, rx) = mpsc::channel();
        pool.run(Box::new(move || {
            tx.send(std::thread::current().id()).unwrap()
        }))
        .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    /// A thread goes back to the idle list just after its task: wait for it.
    fn wait_until_one_is_idle(pool: &Arc<RunThreads>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.idle.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the run thread was not kept");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn run_threads_are_kept_and_a_blocked_one_does_not_hold_up_the_next() {
        let pool = Arc::<RunThreads>::default();
        let first = on_pool(&pool);
        wait_until_one_is_idle(&pool);
        assert_eq!(on_pool(&pool), first, "a kept thread runs the next task");

        // Something to do on each idle thread (returning its allocator's memory) reaches it.
        static RAN_ON: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());
        wait_until_one_is_idle(&pool);
        pool.on_each_idle(|| RAN_ON.lock().unwrap().push(std::thread::current().id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !RAN_ON.lock().unwrap().contains(&first) {
            assert!(Instant::now() < deadline, "the idle thread did not run it");
            std::thread::sleep(Duration::from_millis(1));
        }

        // A task that blocks (a run abandoned in a host call) keeps its thread; the next
        // task runs on another one.
        let (release, blocked) = mpsc::channel::<()>();
        wait_until_one_is_idle(&pool);
        pool.run(Box::new(move || {
            let _ = blocked.recv();
        }))
        .unwrap();
        assert_ne!(on_pool(&pool), first);
        release.send(()).unwrap();

        // Never more than the kept number idle.
        let done: Vec<_> = (0..KEPT_RUN_THREADS * 2)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<()>();
                pool.run(Box::new(move || {
                    let _ = rx.recv();
                }))
                .unwrap();
                tx
            })
            .collect();
        drop(done);
        std::thread::sleep(Duration::from_millis(100));
        assert!(pool.idle.lock().unwrap().len() <= KEPT_RUN_THREADS);
    }
}
