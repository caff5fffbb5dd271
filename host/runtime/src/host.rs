//! Host functions: each checks the grant at call time, does the work (or simulates it in
//! a dry run), and traces the call.

use crate::backends::{self, ProcError, Verb, probe};
use crate::bindings::runwarden::runbook::{
    exec, http, log, probe as wprobe, secrets, services, types,
};
use crate::grant::{Grant, parse_origin};
use crate::policy::{Policy, SecretSource};
use crate::trace::{self, Call, Trace};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use types::HostError;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Everything one invocation's host calls need.
pub(crate) struct CallContext {
    pub policy: Arc<Policy>,
    pub grant: Grant,
    pub dry_run: bool,
    /// The runbook's effective risk: a `low` one may send only GET and HEAD requests.
    pub risk: crate::manifest::Risk,
    pub deadline: Instant,
    pub trace: Trace,
    pub io: tokio::runtime::Handle,
    pub http: reqwest::Client,
    /// The output budget shared by log calls, stdout and stderr.
    pub output: crate::output::Output,
    /// Guest paths of open descriptors, for tracing filesystem calls.
    pub fs_paths: std::collections::HashMap<u32, String>,
    /// In a dry run, the state each simulated start/stop/restart left a unit in, so a
    /// later `status` answers consistently with the simulation.
    pub simulated_units: std::collections::HashMap<String, String>,
}

/// Caps linear memory (summed over all of the store's memories) and tables; remembers
/// that a growth was refused.
pub(crate) struct Limiter {
    pub memory_bytes: usize,
    pub hit: bool,
    /// Bytes of all memories so far.
    pub total: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.total - current.min(self.total)).saturating_add(desired);
        let ok = total <= self.memory_bytes;
        if ok {
            self.total = total;
        }
        self.hit |= !ok;
        Ok(ok)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The store's data.
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub cx: CallContext,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn err_json(e: &HostError) -> Value {
    let (kind, msg) = match e {
        HostError::Denied(m) => ("denied", m),
        HostError::NotFound(m) => ("not-found", m),
        HostError::Timeout(m) => ("timeout", m),
        HostError::Invalid(m) => ("invalid", m),
        HostError::Failed(m) => ("failed", m),
    };
    json!({"error": kind, "message": msg})
}

impl CallContext {
    /// Time left for a host call: the smaller of the request and the invocation deadline.
    fn budget(&self, requested_ms: Option<u32>) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match requested_ms {
            Some(ms) => left.min(Duration::from_millis(ms as u64)),
            None => left,
        }
    }

    fn cap(&self) -> usize {
        self.policy.limits.output_bytes as usize
    }

    /// Record a denial and return the error the guest sees.
    fn deny(&self, call: Call, why: String) -> HostError {
        let e = self.scrub(HostError::Denied(why));
        self.trace.record(call, false, err_json(&e));
        e
    }

    /// An error with revealed secrets scrubbed from its message: host errors repeat what
    /// the guest sent (URLs, arguments, unit names), and the guest may pass them on.
    fn scrub(&self, e: HostError) -> HostError {
        let r = |m: String| self.trace.redact(&m);
        match e {
            HostError::Denied(m) => HostError::Denied(r(m)),
            HostError::NotFound(m) => HostError::NotFound(r(m)),
            HostError::Timeout(m) => HostError::Timeout(r(m)),
            HostError::Invalid(m) => HostError::Invalid(r(m)),
            HostError::Failed(m) => HostError::Failed(r(m)),
        }
    }

    fn finish<T>(
        &self,
        call: Call,
        r: Result<T, HostError>,
        ok: impl FnOnce(&T) -> Value,
    ) -> Result<T, HostError> {
        let r = r.map_err(|e| self.scrub(e));
        let v = match &r {
            Ok(t) => ok(t),
            Err(e) => err_json(e),
        };
        self.trace.record(call, true, v);
        r
    }

    fn service(&mut self, verb: Verb, unit: String) -> Result<Option<(String, String)>, HostError> {
        let mut call = Call::new("services", verb.name(), json!({"unit": unit}));
        if !self.grant.allows_unit(&self.policy, &unit) {
            return Err(self.deny(
                call,
                format!("unit {unit:?} is not granted to this runbook"),
            ));
        }
        // The service backend runs with runwarden's rights: the program it starts is the
        // one checked, and no argument leads through a link inside a write grant.
        let argv = backends::service_argv(&self.policy.services, verb, &unit);
        let exe = match self.host_program(&argv[0], &argv[1..]) {
            Ok(exe) => exe,
            Err(why) => return Err(self.deny(call, why)),
        };
        if self.dry_run {
            match verb {
                Verb::Status => {
                    if let Some(state) = self.simulated_units.get(&unit).cloned() {
                        call.dry_run = true;
                        self.trace.record(
                            call,
                            true,
                            json!({"active_state": state, "sub_state": "simulated"}),
                        );
                        return Ok(Some((state, "simulated".into())));
                    }
                }
                _ => {
                    let state = match verb {
                        Verb::Stop => Some("inactive"),
                        Verb::Start | Verb::Restart => Some("active"),
                        _ => None,
                    };
                    if let Some(state) = state {
                        self.simulated_units.insert(unit.clone(), state.to_string());
                    }
                    call.dry_run = true;
                    self.trace.record(call, true, json!({"simulated": true}));
                    return Ok(None);
                }
            }
        }
        let budget = self.budget(None);
        let cap = self.cap();
        let r = self.io.block_on(backends::run_process(
            &argv[0],
            exe.as_ref(),
            &argv[1..],
            budget,
            cap,
        ));
        let r = match r {
            Err(ProcError::NotFound(p)) => Err(HostError::Failed(format!(
                "service manager {p} not found on this host"
            ))),
            Err(ProcError::Timeout) => Err(HostError::Timeout(format!("{} {unit}", verb.name()))),
            Err(ProcError::Failed(m)) => Err(HostError::Failed(m)),
            Ok(out) => match verb {
                Verb::Status => match backends::parse_status(&self.policy.services, &out) {
                    None => Err(HostError::NotFound(format!("unit {unit}"))),
                    Some(s) => Ok(Some(s)),
                },
                _ if out.exit_code == Some(0) => Ok(None),
                _ => Err(HostError::Failed(format!(
                    "{} {unit} exited with {:?}: {}",
                    verb.name(),
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))),
            },
        };
        self.finish(call, r, |s| match s {
            Some((a, sub)) => json!({"active_state": a, "sub_state": sub}),
            None => json!("ok"),
        })
    }
}

impl CallContext {
    /// Open a program runwarden is about to run with its own rights, and check it and the
    /// paths it is handed (see `confine`). The error says why it must not run.
    fn host_program(
        &self,
        program: &str,
        args: &[String],
    ) -> Result<Option<std::os::fd::OwnedFd>, String> {
        let mut write_dirs = self.policy.grants.write_dirs.clone();
        write_dirs.extend(self.grant.write_dirs.iter().cloned());
        let write_dirs = crate::confine::with_canonical(&write_dirs);
        let exe = crate::confine::open_program(program, &write_dirs)?;
        crate::confine::check_host_args(args, &write_dirs)?;
        Ok(exe)
    }
}

impl HostState {
    /// Every host call starts here: once the trace is full, the guest is stopped
    /// (`output_limit`) instead of growing host memory without bound.
    pub(crate) fn guard(&mut self) -> wasmtime::Result<()> {
        if self.cx.trace.exhausted() {
            self.cx.output.mark_exceeded();
            return Err(wasmtime::Error::msg(format!(
                "trace limit of {} host calls reached",
                crate::trace::MAX_ENTRIES
            )));
        }
        Ok(())
    }
}

impl types::Host for HostState {}

impl services::Host for HostState {
    fn status(
        &mut self,
        unit: String,
    ) -> wasmtime::Result<Result<services::UnitStatus, HostError>> {
        self.guard()?;
        let r: Result<services::UnitStatus, HostError> = (|| {
            let (active_state, sub_state) = self
                .cx
                .service(Verb::Status, unit.clone())?
                .unwrap_or_default();
            Ok(services::UnitStatus {
                name: unit,
                active_state,
                sub_state,
            })
        })();
        Ok(r)
    }
    fn start(&mut self, unit: String) -> wasmtime::Result<Result<(), HostError>> {
        self.guard()?;
        let r: Result<(), HostError> = self.cx.service(Verb::Start, unit).map(|_| ());
        Ok(r)
    }
    fn stop(&mut self, unit: String) -> wasmtime::Result<Result<(), HostError>> {
        self.guard()?;
        let r: Result<(), HostError> = self.cx.service(Verb::Stop, unit).map(|_| ());
        Ok(r)
    }
    fn restart(&mut self, unit: String) -> wasmtime::Result<Result<(), HostError>> {
        self.guard()?;
        let r: Result<(), HostError> = self.cx.service(Verb::Restart, unit).map(|_| ());
        Ok(r)
    }
    fn reload(&mut self, unit: String) -> wasmtime::Result<Result<(), HostError>> {
        self.guard()?;
        let r: Result<(), HostError> = self.cx.service(Verb::Reload, unit).map(|_| ());
        Ok(r)
    }
}

impl exec::Host for HostState {
    fn run(&mut self, cmd: exec::Command) -> wasmtime::Result<Result<exec::Output, HostError>> {
        self.guard()?;
        let r: Result<exec::Output, HostError> = (|| {
            let cx = &mut self.cx;
            let mut call = Call::new(
                "exec",
                "run",
                json!({"program": trace::text(&cmd.program), "args": trace::strings(&cmd.args), "timeout_ms": cmd.timeout_ms}),
            );
            if !cx.grant.allows_exec(&cx.policy, &cmd.program, &cmd.args) {
                return Err(cx.deny(
                    call,
                    format!(
                        "{} with these arguments is not granted to this runbook",
                        cmd.program
                    ),
                ));
            }
            let exe = match cx.host_program(&cmd.program, &cmd.args) {
                Ok(exe) => exe,
                Err(why) => return Err(cx.deny(call, why)),
            };
            if cx.dry_run {
                call.dry_run = true;
                cx.trace
                    .record(call, true, json!({"simulated": true, "exit_code": 0}));
                return Ok(exec::Output {
                    exit_code: Some(0),
                    stdout: String::new(),
                    stderr: String::new(),
                    truncated: false,
                });
            }
            let budget = cx.budget(cmd.timeout_ms);
            let r = cx.io.block_on(backends::run_process(
                &cmd.program,
                exe.as_ref(),
                &cmd.args,
                budget,
                cx.cap(),
            ));
            let r = match r {
                Ok(o) => Ok(exec::Output {
                    exit_code: o.exit_code,
                    stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                    truncated: o.truncated,
                }),
                Err(ProcError::NotFound(p)) => Err(HostError::NotFound(p)),
                Err(ProcError::Timeout) => Err(HostError::Timeout(format!(
                    "{} after {} ms",
                    cmd.program,
                    budget.as_millis()
                ))),
                Err(ProcError::Failed(m)) => Err(HostError::Failed(m)),
            };
            cx.finish(call, r, |o| {
                json!({"exit_code": o.exit_code, "stdout_bytes": o.stdout.len(), "stderr_bytes": o.stderr.len(), "truncated": o.truncated})
            })
        })();
        Ok(r)
    }
}

impl http::Host for HostState {
    fn send(&mut self, req: http::Request) -> wasmtime::Result<Result<http::Response, HostError>> {
        self.guard()?;
        let r: Result<http::Response, HostError> = (|| {
            let cx = &mut self.cx;
            let method = req.method.to_ascii_uppercase();
            let mut call = Call::new(
                "http",
                "send",
                json!({"method": trace::text(&method), "url": trace::text(&req.url), "headers": trace::strings(&req.headers.iter().take(trace::MAX_ITEMS + 1).map(|h| h.name.as_str()).collect::<Vec<_>>()),
                       "body_bytes": req.body.as_ref().map(|b| b.len())}),
            );
            let origin = match parse_origin(&req.url) {
                Ok(o) => o,
                Err(m) => {
                    let e = HostError::Invalid(format!("url {:?}: {m}", req.url));
                    let e = cx.scrub(e);
                    cx.trace.record(call, false, err_json(&e));
                    return Err(e);
                }
            };
            if !cx.grant.allows_origin(&cx.policy, &origin) {
                return Err(cx.deny(
                    call,
                    format!("origin {origin} is not granted to this runbook"),
                ));
            }
            // The transport owns these: a guest-chosen Host would reach other virtual hosts
            // behind a granted origin, and framing headers could smuggle requests.
            if let Some(h) = req.headers.iter().find(|h| {
                let n = h.name.to_ascii_lowercase();
                matches!(
                    n.as_str(),
                    "host"
                        | "connection"
                        | "keep-alive"
                        | "transfer-encoding"
                        | "te"
                        | "trailer"
                        | "upgrade"
                        | "content-length"
                ) || n.starts_with("proxy-")
            }) {
                let e = HostError::Invalid(format!(
                    "header {:?} is set by the host, not the runbook",
                    h.name
                ));
                let e = cx.scrub(e);
                cx.trace.record(call, false, err_json(&e));
                return Err(e);
            }
            let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
                let e = HostError::Invalid(format!("method {method:?}"));
                let e = cx.scrub(e);
                cx.trace.record(call, true, err_json(&e));
                return Err(e);
            };
            if !matches!(
                method.as_str(),
                "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
            ) {
                let e = HostError::Invalid(format!("method {method} is not supported"));
                let e = cx.scrub(e);
                cx.trace.record(call, true, err_json(&e));
                return Err(e);
            }
            if cx.risk == crate::manifest::Risk::Low && !matches!(method.as_str(), "GET" | "HEAD") {
                return Err(cx.deny(
                    call,
                    format!(
                        "method {method} changes state: a runbook of risk low may only send GET \
                         and HEAD; declare risk medium or high"
                    ),
                ));
            }
            if cx.dry_run && !matches!(method.as_str(), "GET" | "HEAD") {
                call.dry_run = true;
                cx.trace
                    .record(call, true, json!({"simulated": true, "status": 200}));
                return Ok(http::Response {
                    status: 200,
                    headers: Vec::new(),
                    body: Vec::new(),
                    truncated: false,
                });
            }
            let budget = cx.budget(req.timeout_ms);
            let cap = cx.cap();
            let client = cx.http.clone();
            let fut = async move {
                let mut rb = client.request(m, &req.url).timeout(budget);
                for h in &req.headers {
                    rb = rb.header(&h.name, &h.value);
                }
                if let Some(b) = req.body {
                    rb = rb.body(b);
                }
                let mut resp = rb.send().await?;
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| http::Header {
                        name: k.to_string(),
                        value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    })
                    .collect();
                let mut body = Vec::new();
                let mut truncated = false;
                while let Some(chunk) = resp.chunk().await? {
                    let room = cap.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        truncated = true;
                        break;
                    }
                }
                Ok::<_, reqwest::Error>(http::Response {
                    status,
                    headers,
                    body,
                    truncated,
                })
            };
            let r = cx.io.block_on(fut).map_err(|e| {
                if e.is_timeout() {
                    HostError::Timeout(format!("{origin} after {} ms", budget.as_millis()))
                } else {
                    HostError::Failed(format!("{origin}: {e}"))
                }
            });
            cx.finish(
                call,
                r,
                |r| json!({"status": r.status, "body_bytes": r.body.len(), "truncated": r.truncated}),
            )
        })();
        Ok(r)
    }
}

impl CallContext {
    fn probe_call<T>(
        &mut self,
        function: &'static str,
        args: Value,
        f: impl FnOnce() -> Result<T, HostError>,
        show: impl FnOnce(&T) -> Value,
    ) -> Result<T, HostError> {
        let call = Call::new("probe", function, args);
        if !self.grant.probe {
            return Err(self.deny(call, "probe is not granted to this runbook".into()));
        }
        let r = f();
        self.finish(call, r, show)
    }
}

/// A secret's file, read without blocking: a FIFO or device in its place is refused
/// instead of hanging the run (and the host's shutdown) until something writes to it.
fn read_secret_file(p: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    // Secrets are small; a policy pointing at a huge file must not fill host memory.
    let mut s = String::new();
    f.by_ref().take(1 << 20).read_to_string(&mut s)?;
    Ok(s)
}

fn io_err(e: std::io::Error) -> HostError {
    HostError::Failed(e.to_string())
}

impl wprobe::Host for HostState {
    fn disk_usage(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wprobe::DiskInfo, HostError>> {
        self.guard()?;
        let r: Result<wprobe::DiskInfo, HostError> = (|| {
            let cx = &mut self.cx;
            let p = std::path::PathBuf::from(&path);
            if cx.grant.probe && path != "/" && !cx.grant.allows_path(&p) {
                return Err(cx.deny(
                    Call::new("probe", "disk-usage", json!({"path": path})),
                    format!("{path} is not / or a granted directory"),
                ));
            }
            cx.probe_call(
                "disk-usage",
                json!({"path": path}),
                || {
                    let (total, free, avail, inodes, ifree) = probe::disk(&p).map_err(io_err)?;
                    Ok(wprobe::DiskInfo {
                        path: path.clone(),
                        total_bytes: total,
                        free_bytes: free,
                        available_bytes: avail,
                        total_inodes: inodes,
                        free_inodes: ifree,
                    })
                },
                |d| json!({"total_bytes": d.total_bytes, "available_bytes": d.available_bytes}),
            )
        })();
        Ok(r)
    }
    fn memory(&mut self) -> wasmtime::Result<Result<wprobe::MemoryInfo, HostError>> {
        self.guard()?;
        let r: Result<wprobe::MemoryInfo, HostError> = self.cx.probe_call(
            "memory",
            json!({}),
            || {
                let (t, a, st, sf) = probe::memory().map_err(io_err)?;
                Ok(wprobe::MemoryInfo {
                    total_bytes: t,
                    available_bytes: a,
                    swap_total_bytes: st,
                    swap_free_bytes: sf,
                })
            },
            |m| json!({"total_bytes": m.total_bytes, "available_bytes": m.available_bytes}),
        );
        Ok(r)
    }
    fn load(&mut self) -> wasmtime::Result<Result<wprobe::LoadAverage, HostError>> {
        self.guard()?;
        let r: Result<wprobe::LoadAverage, HostError> = self.cx.probe_call(
            "load",
            json!({}),
            || {
                let (one, five, fifteen) = probe::load().map_err(io_err)?;
                Ok(wprobe::LoadAverage { one, five, fifteen })
            },
            |l| json!([l.one, l.five, l.fifteen]),
        );
        Ok(r)
    }
    fn uptime(&mut self) -> wasmtime::Result<Result<u64, HostError>> {
        self.guard()?;
        let r: Result<u64, HostError> = self.cx.probe_call(
            "uptime",
            json!({}),
            || probe::uptime().map_err(io_err),
            |u| json!(u),
        );
        Ok(r)
    }
    fn processes(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Vec<wprobe::ProcessInfo>, HostError>> {
        self.guard()?;
        let r: Result<Vec<wprobe::ProcessInfo>, HostError> = self.cx.probe_call(
            "processes",
            json!({"name": name}),
            || {
                Ok(probe::processes(&name)
                    .map_err(io_err)?
                    .into_iter()
                    .map(|(pid, name, rss_bytes)| wprobe::ProcessInfo {
                        pid,
                        name,
                        rss_bytes,
                    })
                    .collect())
            },
            |v: &Vec<_>| json!({"count": v.len()}),
        );
        Ok(r)
    }
    fn listening_ports(&mut self) -> wasmtime::Result<Result<Vec<wprobe::Listener>, HostError>> {
        self.guard()?;
        let r: Result<Vec<wprobe::Listener>, HostError> = self.cx.probe_call(
            "listening-ports",
            json!({}),
            || {
                Ok(probe::listeners()
                    .into_iter()
                    .map(|(protocol, address, port)| wprobe::Listener {
                        protocol,
                        address,
                        port,
                    })
                    .collect())
            },
            |v: &Vec<_>| json!({"count": v.len()}),
        );
        Ok(r)
    }
}

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, HostError>> {
        self.guard()?;
        let r: Result<String, HostError> = (|| {
            let cx = &mut self.cx;
            let call = Call::new("secrets", "get", json!({"name": name}));
            if !cx.grant.allows_secret(&cx.policy, &name) {
                return Err(cx.deny(
                    call,
                    format!("secret {name:?} is not granted to this runbook"),
                ));
            }
            let r = match cx.policy.secrets.get(&name) {
                Some(SecretSource::File(p)) => read_secret_file(p)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| {
                        HostError::Failed(format!("secret {name}: cannot read its file: {e}"))
                    }),
                Some(SecretSource::Env(var)) => std::env::var(var).map_err(|_| {
                    HostError::NotFound(format!("secret {name}: variable {var} is not set"))
                }),
                None => Err(HostError::NotFound(format!("secret {name}"))),
            };
            if let Ok(v) = &r {
                cx.trace.reveal_secret(&name, v);
            }
            cx.finish(call, r, |_| json!("[redacted]"))
        })();
        Ok(r)
    }
}

impl log::Host for HostState {
    fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.guard()?;
        let cx = &mut self.cx;
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if !cx.output.take(size as u64) {
            let call = Call::new("log", "log", json!({"bytes": size}));
            let limit = cx.output.cap();
            cx.trace.record(
                call,
                false,
                json!({"error": "output-limit", "limit_bytes": limit}),
            );
            return Err(wasmtime::Error::msg("output limit exceeded"));
        }
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        let fields: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let call = Call::new(
            "log",
            "log",
            json!({"level": level, "message": message, "fields": fields}),
        );
        cx.trace.record(call, true, Value::Null);
        Ok(())
    }
}
