//! adv-limits: pushes past the invocation's limits. Mode `sleep-heal` sleeps past its
//! deadline (the host cuts the sleep at the deadline) and then reports `healed`; mode
//! `fifo` reads `path`, a FIFO in its granted directory that nobody writes to (if the read
//! is refused it sleeps past the deadline instead), then reports `healed`; mode `flood`
//! makes `calls` denied `exec.run` calls with `args` arguments of `arg_bytes` bytes each;
//! mode `leak` reads the granted secret `s` and sends it through every host interface's
//! error paths (an HTTP request to a refused port with the secret in its query, a URL that
//! does not parse, a POST a low-risk runbook may not send, `exec` of and with the secret,
//! a unit named after it), logs it percent-encoded and in base64, and writes it to stdout
//! and stderr; mode `cut` writes `fill` bytes and then the secret to stdout, so the output
//! limit cuts the secret in half. Whatever the guest says, a run past its deadline must
//! end `timeout`, at the deadline and within a bounded time even while blocked; every
//! trace entry and the whole trace stay bounded; the secret appears in no spelling
//! anywhere in the invocation (not even its first bytes at a cut), nor in any host error
//! the guest receives (the guest checks for the `needles` it is given and reports what it
//! found in `details.errors_with_secret`).

use runwarden_sdk::prelude::*;
use std::io::Write;
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Params {
    mode: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    calls: u32,
    #[serde(default)]
    args: u32,
    #[serde(default)]
    arg_bytes: u32,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    needles: Vec<String>,
    #[serde(default)]
    fill: usize,
}

struct Limits;

fn leak(p: &Params) -> Outcome {
    let s = secrets::get("s").unwrap_or_default();
    let pct: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut errors = Vec::new();
    let mut note = |what: &str, e: Result<String, HostError>| {
        if let Err(e) = e {
            let text = format!("{e:?}");
            if p.needles.iter().any(|n| text.contains(n.as_str())) {
                errors.push(what.to_string());
            }
        }
    };
    let status = |r: Result<http::Response, HostError>| r.map(|r| r.status.to_string());
    note(
        "http-refused",
        status(http::get(&format!("{}/?p={s}&q={pct}", p.origin))),
    );
    note(
        "http-bad-url",
        status(http::get(&format!("http://[{s}]/x"))),
    );
    note(
        "http-post",
        status(http::send(&http::Request {
            method: "POST".into(),
            url: format!("{}/?p={s}", p.origin),
            headers: vec![http::Header {
                name: s.clone(),
                value: s.clone(),
            }],
            body: Some(s.clone().into_bytes()),
            timeout_ms: None,
        })),
    );
    note("exec-program", exec::run(&s, &[]).map(|o| o.stdout));
    note(
        "exec-args",
        exec::run("/bin/echo", &[&s, &pct]).map(|o| o.stdout),
    );
    note(
        "service",
        services::stop(&format!("{s}.service")).map(|_| String::new()),
    );
    log::log(
        log::Level::Info,
        &format!("percent {pct} base64 {}", base64(&s)),
        &[("raw", &s)],
    );
    println!("stdout {s} {pct}");
    eprintln!("stderr {s:?}");
    Outcome::no_op(format!("leaked {s}")).details(serde_json::json!({
        "errors_with_secret": errors,
        "leaked": s,
    }))
}

/// Standard base64, padded; the guest has no base64 crate.
fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Runbook for Limits {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-limits",
            "0.1.0",
            "Outlive the deadline, flood the trace, leak a secret",
        )
        .risk(Risk::Low)
        .capability(Capability::ReadDir("{dir}".into()))
        .capability(Capability::Http("{origin}".into()))
        .capability(Capability::Secret("s".into()))
        .params_schema(serde_json::json!({
            "type": "object", "required": ["mode", "dir", "origin"],
            "properties": {
                "mode": {"enum": ["sleep-heal", "fifo", "flood", "leak", "cut"]},
                "dir": {"type": "string"}, "path": {"type": "string"},
                "sleep_ms": {"type": "integer", "minimum": 0},
                "calls": {"type": "integer", "minimum": 0},
                "args": {"type": "integer", "minimum": 0},
                "arg_bytes": {"type": "integer", "minimum": 0},
                "origin": {"type": "string"},
                "needles": {"type": "array", "items": {"type": "string"}},
                "fill": {"type": "integer", "minimum": 0}
            }
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        match p.mode.as_str() {
            "sleep-heal" => {
                std::thread::sleep(Duration::from_millis(p.sleep_ms));
                Ok(Outcome::healed("healed after the deadline"))
            }
            "fifo" => {
                if std::fs::read(&p.path).is_err() {
                    std::thread::sleep(Duration::from_millis(p.sleep_ms));
                }
                Ok(Outcome::healed("read the fifo"))
            }
            "flood" => {
                let arg = "a".repeat(p.arg_bytes as usize);
                let args: Vec<&str> = (0..p.args).map(|_| arg.as_str()).collect();
                let mut denied = 0;
                for _ in 0..p.calls {
                    if let Err(HostError::Denied(_)) = exec::run("/bin/sh", &args) {
                        denied += 1;
                    }
                }
                Ok(Outcome::no_op("flooded").details(serde_json::json!({"denied": denied})))
            }
            "leak" => Ok(leak(&p)),
            _ => {
                let s = secrets::get("s").unwrap_or_default();
                let mut text = "x".repeat(p.fill).into_bytes();
                text.extend_from_slice(s.as_bytes());
                let r = std::io::stdout().write_all(&text);
                let _ = std::io::stdout().flush();
                Ok(Outcome::no_op(format!("wrote: {}", r.is_ok())))
            }
        }
    }
}

runwarden_sdk::export_runbook!(Limits);
