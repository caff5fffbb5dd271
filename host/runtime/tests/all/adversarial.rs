//! The adversarial guests (`tests/guests/adv-*`, each described in tests/guests/README.md)
//! against a real runtime. For every attack: the real effect did not happen (files,
//! listeners, unit state files are checked from the outside), the guest saw each attempt
//! fail (its own report in the outcome details), every host call it made is in the trace
//! (denials with `allowed = false`), the status is the expected one, and the same runtime
//! then serves `trivial` normally.
use super::*;
use runwarden_runtime::TraceEntry;
use serde_json::{Value, json};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ----- helpers -----------------------------------------------------------------------

/// The host survived: the same runtime (same `Harness`) then runs `trivial` normally.
#[track_caller]
fn assert_host_survives(h: &Harness) {
    let inv = h.run("trivial", "host_id = \"after-attack\"\n", json!({}), false);
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.trace.len(), 1, "{}", pretty(&inv));
    assert_eq!(inv.trace[0].interface, "log");
    assert!(inv.trace[0].allowed);
}

fn pretty(inv: &Invocation) -> String {
    serde_json::to_string_pretty(inv).unwrap()
}

/// The guest ran to its end, reported exactly `attacks`, and each was refused.
#[track_caller]
fn assert_all_refused(inv: &Invocation, attacks: &[&str]) {
    assert_status(inv, Status::NoOp);
    let reported = inv.outcome.details["attacks"]
        .as_object()
        .unwrap_or_else(|| panic!("no attacks: {}", pretty(inv)));
    let mut names: Vec<&str> = reported.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = attacks.to_vec();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "the guest reports other attacks than the test expects"
    );
    for name in attacks {
        assert_eq!(
            reported[*name]["refused"],
            json!(true),
            "attack {name} was not refused: {}",
            pretty(inv)
        );
    }
    assert_eq!(inv.outcome.details["escaped"], json!([]), "{}", pretty(inv));
    for e in inv.trace.iter().filter(|e| !e.allowed) {
        assert!(!e.dry_run, "a denied call was simulated: {e:?}");
    }
}

/// What the guest reports for control `name` (an attempt the grant allows); it must have worked.
#[track_caller]
fn control<'a>(inv: &'a Invocation, name: &str) -> &'a Value {
    let c = &inv.outcome.details["controls"][name];
    assert_eq!(
        c["ok"],
        json!(true),
        "control {name} failed: {}",
        pretty(inv)
    );
    &c["got"]
}

/// The guest's report of attack `name`.
fn attack<'a>(inv: &'a Invocation, name: &str) -> &'a Value {
    &inv.outcome.details["attacks"][name]
}

/// Trace entries of `interface`/`function`.
fn calls<'a>(inv: &'a Invocation, interface: &str, function: &str) -> Vec<&'a TraceEntry> {
    inv.trace
        .iter()
        .filter(|e| e.interface == interface && e.function == function)
        .collect()
}

/// A denied call of `interface`/`function` matching `pred` is in the trace.
#[track_caller]
fn assert_denied(
    inv: &Invocation,
    interface: &str,
    function: &str,
    what: &str,
    pred: impl Fn(&TraceEntry) -> bool,
) {
    let found = calls(inv, interface, function)
        .into_iter()
        .find(|e| pred(e));
    match found {
        Some(e) => assert!(
            !e.allowed,
            "{interface}.{function} ({what}) was traced as allowed: {e:?}\n{}",
            pretty(inv)
        ),
        None => panic!(
            "no {interface}.{function} call ({what}) in the trace:\n{}",
            pretty(inv)
        ),
    }
}

fn arg<'a>(e: &'a TraceEntry, key: &str) -> &'a str {
    e.args[key].as_str().unwrap_or("")
}

/// Nothing ever connected to `listener` (a completed handshake would wait in its backlog).
#[track_caller]
fn assert_no_connection(listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!(
            "a connection from {from} reached {:?}",
            listener.local_addr()
        ),
        Err(e) => panic!("accept: {e}"),
    }
}

/// A one-file-per-entry snapshot of a directory tree: relative path → contents (or link target).
fn snapshot(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                out.push((rel, format!("-> {}", fs::read_link(&p).unwrap().display())));
            } else if meta.is_dir() {
                out.push((rel + "/", String::new()));
                stack.push(p);
            } else {
                out.push((rel, fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn toml_path(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

// ----- 1. reading outside the grant --------------------------------------------------

#[test]
fn reading_etc_passwd_and_a_sibling_of_the_grant_is_refused() {
    let h = Harness::new();
    let granted = h.path("x/granted");
    fs::write(granted.join("inside.txt"), "inside").unwrap();
    let sibling = h.path("x").join("secret.txt");
    fs::write(&sibling, "SIBLING-SECRET").unwrap();
    let policy = format!(
        "host_id = \"adv\"\n[grants]\nread_dirs = [{}]\n",
        toml_path(&granted)
    );

    let inv = h.run(
        "adv-read-outside",
        &policy,
        json!({"granted": granted, "sibling": sibling}),
        false,
    );

    assert_all_refused(
        &inv,
        &[
            "etc-passwd",
            "sibling",
            "list-root",
            "raw-etc-passwd",
            "raw-sibling",
            "raw-absolute-sibling",
        ],
    );
    assert_eq!(control(&inv, "read-inside"), "inside");
    let text = serde_json::to_string(&inv).unwrap();
    assert!(
        !text.contains("SIBLING-SECRET") && !text.contains("root:x:0:0"),
        "content leaked: {text}"
    );
    // Each attempt reached the host, which refused it and traced the refusal.
    let sib = sibling.display().to_string();
    let opens = calls(&inv, "filesystem", "open-at");
    let denied_opens = |path: &str| {
        opens
            .iter()
            .filter(|e| arg(e, "path") == path && !e.allowed)
            .count()
    };
    assert_eq!(
        denied_opens("/etc/passwd"),
        2,
        "std and raw opens of /etc/passwd:\n{}",
        pretty(&inv)
    );
    assert_eq!(
        denied_opens(&sib),
        2,
        "std and raw opens of the sibling:\n{}",
        pretty(&inv)
    );
    assert_denied(
        &inv,
        "filesystem",
        "open-at",
        "granted/../secret.txt",
        |e| arg(e, "path").ends_with("/../secret.txt"),
    );
    assert_denied(&inv, "filesystem", "open-at", "listing /", |e| {
        arg(e, "path") == "/."
    });
    for e in calls(&inv, "filesystem", "open-at") {
        if e.result == json!("ok") {
            let p = arg(e, "path");
            assert!(
                p.starts_with(&granted.display().to_string()) && !p.contains(".."),
                "opened {p}"
            );
        }
    }
    assert_host_survives(&h);
}

// ----- 2. `..` and symlink escapes ---------------------------------------------------

#[test]
fn dotdot_and_symlink_escapes_are_refused() {
    let h = Harness::new();
    let x = h.path("x");
    let granted = h.path("x/granted");
    let writable = h.path("x/writable");
    h.path("x/granted/sub");
    fs::write(granted.join("sub/inside.txt"), "inside").unwrap();
    let outside = x.join("secret.txt");
    fs::write(&outside, "OUTSIDE-SECRET").unwrap();
    std::os::unix::fs::symlink(&outside, granted.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", granted.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("..", granted.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("/etc", granted.join("etc-link")).unwrap();
    let policy = format!(
        "host_id = \"adv\"\n[grants]\nread_dirs = [{}]\nwrite_dirs = [{}]\n",
        toml_path(&granted),
        toml_path(&writable)
    );
    let before = snapshot(&x);

    let inv = h.run(
        "adv-escape",
        &policy,
        json!({"granted": granted, "writable": writable, "outside": outside}),
        false,
    );

    assert_all_refused(
        &inv,
        &[
            "dotdot",
            "dotdot-deep",
            "dotdot-list",
            "symlink-absolute",
            "symlink-relative",
            "symlink-dir",
            "symlink-etc",
            "symlink-metadata-follow",
            "make-symlink-absolute",
            "make-symlink-relative",
            "hardlink-outside",
            "raw-dotdot",
            "write-dotdot",
        ],
    );
    assert_eq!(control(&inv, "read-inside"), "inside");
    // Contained: the outside file is intact, nothing new beside the grants, no hard link to it.
    assert_eq!(fs::read_to_string(&outside).unwrap(), "OUTSIDE-SECRET");
    assert!(!x.join("planted.txt").exists());
    assert!(!writable.join("hard").exists());
    let after: Vec<_> = snapshot(&x)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("writable/evil-"))
        .collect();
    assert_eq!(
        after, before,
        "the tree outside the guest's own links changed"
    );
    let text = serde_json::to_string(&inv).unwrap();
    assert!(
        !text.contains("OUTSIDE-SECRET") && !text.contains("root:x:0:0"),
        "content leaked: {text}"
    );
    // The host refused each, and traced it.
    let g = granted.display().to_string();
    let w = writable.display().to_string();
    let open_denied = |what: &str, path: String| {
        assert_denied(&inv, "filesystem", "open-at", what, |e| {
            arg(e, "path") == path
        });
    };
    open_denied("granted/../secret.txt", format!("{g}/../secret.txt"));
    open_denied(
        "granted/sub/../../secret.txt",
        format!("{g}/sub/../../secret.txt"),
    );
    open_denied("granted/..", format!("{g}/.."));
    open_denied("abs-link", format!("{g}/abs-link"));
    open_denied("rel-link", format!("{g}/rel-link"));
    open_denied("dir-link", format!("{g}/dir-link/secret.txt"));
    open_denied("etc-link", format!("{g}/etc-link/passwd"));
    // A symlink the guest makes pointing outside is refused when made or when followed.
    let made_abs = calls(&inv, "filesystem", "symlink-at")
        .into_iter()
        .find(|e| e.args["paths"][0] == format!("{w}/evil-abs"));
    let read_abs = calls(&inv, "filesystem", "open-at")
        .into_iter()
        .find(|e| arg(e, "path") == format!("{w}/evil-abs"));
    assert!(
        made_abs.is_some_and(|e| !e.allowed) || read_abs.is_some_and(|e| !e.allowed),
        "the absolute symlink was neither refused nor its target:\n{}",
        pretty(&inv)
    );
    assert_denied(
        &inv,
        "filesystem",
        "symlink-at",
        "own relative symlink out",
        |e| e.args["paths"][0] == format!("{w}/evil-rel") && e.args["target"] == "../secret.txt",
    );
    open_denied("writable/../planted.txt", format!("{w}/../planted.txt"));
    assert_denied(
        &inv,
        "filesystem",
        "link-at",
        "hard link to ../secret.txt",
        |e| e.args["paths"][0] == format!("{w}/./../secret.txt"),
    );
    assert_host_survives(&h);
}

// ----- 3. writes in a read-only grant ------------------------------------------------

#[test]
fn writes_in_a_read_only_grant_are_refused() {
    writes_in_a_read_only_grant(false);
}

/// A dry run simulates only what the grant allows; refusals stay refusals.
#[test]
fn writes_in_a_read_only_grant_are_refused_in_a_dry_run_too() {
    writes_in_a_read_only_grant(true);
}

fn writes_in_a_read_only_grant(dry_run: bool) {
    let h = Harness::new();
    let dir = h.path("ro");
    fs::write(dir.join("existing.txt"), "original\n").unwrap();
    h.path("ro/empty");
    let policy = format!(
        "host_id = \"adv\"\n[grants]\nread_dirs = [{}]\n",
        toml_path(&dir)
    );
    let before = snapshot(&dir);

    let inv = h.run("adv-write-readonly", &policy, json!({"dir": dir}), dry_run);

    assert_all_refused(
        &inv,
        &[
            "create",
            "create-new",
            "append",
            "overwrite",
            "truncate",
            "set-len",
            "delete",
            "rename",
            "hardlink",
            "symlink",
            "mkdir",
            "rmdir",
        ],
    );
    assert_eq!(control(&inv, "read-existing"), "original\n");
    assert_eq!(snapshot(&dir), before, "the read-only directory changed");
    let d = dir.display().to_string();
    let existing = format!("{d}/existing.txt");
    assert_denied(&inv, "filesystem", "open-at", "create new.txt", |e| {
        arg(e, "path") == format!("{d}/new.txt")
    });
    assert_denied(&inv, "filesystem", "open-at", "create_new new2.txt", |e| {
        arg(e, "path") == format!("{d}/new2.txt")
    });
    let write_opens: Vec<_> = calls(&inv, "filesystem", "open-at")
        .into_iter()
        .filter(|e| arg(e, "path") == existing && e.args["write"] == json!(true))
        .collect();
    assert_eq!(
        write_opens.len(),
        3,
        "append, overwrite and truncate each open existing.txt for writing"
    );
    assert!(write_opens.iter().all(|e| !e.allowed), "{write_opens:?}");
    for f in [
        "unlink-file-at",
        "rename-at",
        "link-at",
        "symlink-at",
        "create-directory-at",
        "remove-directory-at",
    ] {
        let c = calls(&inv, "filesystem", f);
        assert_eq!(c.len(), 1, "one {f} call expected:\n{}", pretty(&inv));
        assert!(!c[0].allowed, "{f} traced as allowed: {:?}", c[0]);
    }
    assert_host_survives(&h);
}

// ----- 4. sockets --------------------------------------------------------------------

fn run_socket_guest(h: &Harness) -> (Invocation, TcpListener, UdpSocket) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let params = json!({"tcp": tcp.local_addr().unwrap().to_string(), "udp": udp.local_addr().unwrap().to_string()});
    let inv = h.run("adv-socket", "host_id = \"adv\"\n", params, false);
    (inv, tcp, udp)
}

#[test]
fn sockets_are_refused_and_nothing_connects() {
    let h = Harness::new();
    let (inv, tcp, udp) = run_socket_guest(&h);

    assert_all_refused(
        &inv,
        &[
            "tcp-connect",
            "tcp-connect-by-name",
            "udp-send",
            "tcp-listen",
            "dns-lookup",
        ],
    );
    assert_no_connection(&tcp);
    udp.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match udp.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a datagram reached the test's UDP socket: {other:?}"),
    }
    assert_host_survives(&h);
}

/// DESIGN: "a denied call returns an error to the guest and is traced", and the trace
/// names `sockets` as an interface. WASI socket calls are host calls too.
#[test]
fn socket_denials_are_traced() {
    let h = Harness::new();
    let (inv, _tcp, _udp) = run_socket_guest(&h);
    assert_status(&inv, Status::NoOp);
    let denied: Vec<_> = inv
        .trace
        .iter()
        .filter(|e| e.interface == "sockets" && !e.allowed)
        .collect();
    assert!(
        denied.len() >= 4,
        "the guest's TCP connect, UDP bind, TCP listen and name lookup were refused by WASI but not traced:\n{}",
        pretty(&inv)
    );
    assert_host_survives(&h);
}

// ----- 5. HTTP to an origin not granted ----------------------------------------------

/// A loopback HTTP server: answers `/redirect` with a 302 to `redirect_to`, anything else
/// with 200. Returns the request lines it saw once `stop` is set (or after 30 s).
fn serve_http(
    listener: TcpListener,
    redirect_to: String,
    stop: std::sync::Arc<AtomicBool>,
) -> JoinHandle<Vec<String>> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            let mut conn = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("accept: {e}"),
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 << 10 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let resp = if line.contains(" /redirect ") {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {redirect_to}/followed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string()
            };
            let _ = conn.write_all(resp.as_bytes());
            seen.push(line);
        }
        seen
    })
}

#[test]
fn http_to_an_origin_not_granted_is_refused_and_nothing_connects() {
    let h = Harness::new();
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let granted_origin = format!("http://{}", granted.local_addr().unwrap());
    let other_origin = format!("http://{}", other.local_addr().unwrap());
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let server = serve_http(granted, other_origin.clone(), stop.clone());
    let policy = format!("host_id = \"adv\"\n[grants]\nhttp = [{granted_origin:?}]\n");

    let inv = h.run(
        "adv-http-origin",
        &policy,
        json!({"granted": granted_origin, "other": other_origin}),
        false,
    );
    stop.store(true, Ordering::SeqCst);
    let seen = server.join().unwrap();

    assert_all_refused(
        &inv,
        &[
            "other-port",
            "other-port-post",
            "localhost-alias",
            "https-scheme",
            "userinfo",
            "decimal-ip",
            "file-scheme",
            "connect-method",
            "host-header",
        ],
    );
    assert_eq!(
        control(&inv, "granted-redirect"),
        "status 302",
        "the redirect must be returned, not followed"
    );
    // Contained: the other origin never saw a connection; the granted one saw only the legitimate request.
    assert_no_connection(&other);
    assert_eq!(seen, ["GET /redirect HTTP/1.1"]);
    // Traced: origin denials and malformed URLs with allowed = false.
    let other_port = other_origin.rsplit(':').next().unwrap().to_string();
    for (what, url_part) in [
        ("other port", format!("{other_origin}/stolen")),
        ("localhost alias", "/alias".to_string()),
        ("https", "/tls".to_string()),
        ("userinfo", "/userinfo".to_string()),
        ("decimal ip", format!("2130706433:{other_port}/decimal")),
        ("file scheme", "file:///etc/passwd".to_string()),
    ] {
        assert_denied(&inv, "http", "send", what, |e| {
            arg(e, "url").contains(&url_part)
        });
    }
    let posts: Vec<_> = calls(&inv, "http", "send")
        .into_iter()
        .filter(|e| e.args["method"] == "POST")
        .collect();
    assert!(posts.len() == 1 && !posts[0].allowed, "{posts:?}");
    let connect: Vec<_> = calls(&inv, "http", "send")
        .into_iter()
        .filter(|e| e.args["method"] == "CONNECT")
        .collect();
    assert!(
        connect.len() == 1 && connect[0].result["error"] == "invalid",
        "{connect:?}"
    );
    assert_eq!(attack(&inv, "other-port")["error"], "denied");
    assert_host_survives(&h);
}

// ----- 6. exec -----------------------------------------------------------------------

#[test]
fn programs_and_arguments_not_granted_are_refused() {
    programs_and_arguments_not_granted(false);
}

#[test]
fn programs_and_arguments_not_granted_are_refused_in_a_dry_run_too() {
    programs_and_arguments_not_granted(true);
}

fn programs_and_arguments_not_granted(dry_run: bool) {
    let h = Harness::new();
    let marker = h.path("exec").join("marker");
    let policy =
        "host_id = \"adv\"\n[[grants.exec]]\nprogram = \"/bin/echo\"\nargs = [\"hello\", \"*\"]\n";

    let inv = h.run("adv-exec", policy, json!({"marker": marker}), dry_run);

    assert_all_refused(
        &inv,
        &[
            "wrong-argument",
            "extra-argument",
            "no-argument",
            "shell",
            "shell-with-fitting-args",
            "program-alias",
            "relative-program",
            "empty-program",
        ],
    );
    // A dry run answers the granted call as a simulated success with no output.
    let echoed = if dry_run {
        "exit Some(0): "
    } else {
        "exit Some(0): hello world"
    };
    assert_eq!(control(&inv, "echo-hello-world"), echoed);
    assert!(!marker.exists(), "the shell ran");
    let runs = calls(&inv, "exec", "run");
    assert_eq!(runs.len(), 9, "{}", pretty(&inv));
    let allowed: Vec<_> = runs.iter().filter(|e| e.allowed).collect();
    assert_eq!(allowed.len(), 1, "{allowed:?}");
    assert_eq!(allowed[0].args["args"], json!(["hello", "world"]));
    assert_eq!(allowed[0].dry_run, dry_run);
    for e in runs.iter().filter(|e| !e.allowed) {
        assert_eq!(e.result["error"], "denied", "{e:?}");
    }
    assert_denied(&inv, "exec", "run", "/bin/sh -c touch", |e| {
        arg(e, "program") == "/bin/sh" && e.args["args"][0] == "-c"
    });
    assert_host_survives(&h);
}

// ----- 7. services -------------------------------------------------------------------

#[test]
fn units_not_granted_are_refused_and_their_state_is_untouched() {
    units_not_granted(false);
}

#[test]
fn units_not_granted_are_refused_in_a_dry_run_too() {
    units_not_granted(true);
}

fn units_not_granted(dry_run: bool) {
    let h = Harness::new();
    let units = h.path("units");
    fs::write(units.join("granted.service"), "inactive\n").unwrap();
    fs::write(units.join("ungranted.service"), "active\n").unwrap();
    let backend = service_backend(&units);
    // A narrow policy, and a broad one where only the manifest's request (filled from params)
    // keeps the guest to its unit.
    for services in ["[\"granted.service\"]", "[\"*.service\", \"*\"]"] {
        let before = snapshot(&units);
        let policy = format!("host_id = \"adv\"\n[grants]\nservices = {services}\n{backend}");
        let inv = h.run(
            "adv-service",
            &policy,
            json!({"unit": "granted.service"}),
            dry_run,
        );

        assert_all_refused(
            &inv,
            &[
                "restart",
                "stop",
                "start",
                "reload",
                "status",
                "glob-star",
                "glob-question",
                "path",
                "shell",
                "two-names",
                "option",
            ],
        );
        assert_eq!(control(&inv, "status-granted"), "inactive");
        assert_eq!(
            snapshot(&units),
            before,
            "unit state changed under policy {services}"
        );
        assert!(!units.join("ungranted.service.log").exists() && !PathBuf::from("/pwned").exists());
        let svc: Vec<_> = inv
            .trace
            .iter()
            .filter(|e| e.interface == "services")
            .collect();
        assert_eq!(svc.len(), 12, "{}", pretty(&inv));
        for e in &svc {
            let granted_status = e.function == "status" && arg(e, "unit") == "granted.service";
            assert_eq!(e.allowed, granted_status, "{e:?}");
        }
        assert_denied(&inv, "services", "restart", "ungranted.service", |e| {
            arg(e, "unit") == "ungranted.service"
        });
    }
    assert_host_survives(&h);
}

// ----- 8. secrets --------------------------------------------------------------------

const SMTP: &str = "smtp-Pa55word-7Q";
const DB: &str = "db-Hunter2-Zx9";

fn run_secret_guest(h: &Harness, smtp_value: &str) -> Invocation {
    let dir = h.path("secrets");
    fs::write(dir.join("smtp"), format!("{smtp_value}\n")).unwrap();
    fs::write(dir.join("db"), format!("{DB}\n")).unwrap();
    let policy = format!(
        "host_id = \"adv\"\n[grants]\nsecrets = [\"smtp\"]\n[secrets]\nsmtp = {{ file = {} }}\ndb = {{ file = {} }}\n",
        toml_path(&dir.join("smtp")),
        toml_path(&dir.join("db"))
    );
    h.run(
        "adv-secret",
        &policy,
        json!({"db_file": dir.join("db")}),
        false,
    )
}

#[test]
fn a_secret_not_granted_is_refused_and_appears_nowhere() {
    let h = Harness::new();
    let inv = run_secret_guest(&h, SMTP);

    assert_all_refused(&inv, &["ungranted", "unknown", "source-file"]);
    assert_eq!(attack(&inv, "ungranted")["error"], "denied");
    assert_denied(&inv, "secrets", "get", "db", |e| arg(e, "name") == "db");
    assert_denied(&inv, "secrets", "get", "nope", |e| arg(e, "name") == "nope");
    let db_file = h.path("secrets").join("db").display().to_string();
    assert_denied(&inv, "filesystem", "open-at", "db's source file", |e| {
        arg(e, "path") == db_file
    });
    let text = serde_json::to_string(&inv).unwrap();
    assert!(
        !text.contains(DB),
        "the ungranted secret's value is in the invocation: {text}"
    );
    assert_host_survives(&h);
}

/// Where `secret` occurs in `v` (in a string or an object key), as JSON pointers.
fn leaks(v: &Value, secret: &str, at: String, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains(secret) => out.push(at),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaks(v, secret, format!("{at}/{i}"), out)),
        Value::Object(o) => {
            for (k, v) in o {
                if k.contains(secret) {
                    out.push(format!("{at}/<key {k:?}>"));
                }
                leaks(v, secret, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// The value of `secret` occurs nowhere in `inv`, and is replaced by its marker where the
/// guest leaked it.
#[track_caller]
fn assert_redacted(inv: &Invocation, secret: &str) {
    let mut found = Vec::new();
    leaks(
        &serde_json::to_value(inv).unwrap(),
        secret,
        String::new(),
        &mut found,
    );
    assert!(
        found.is_empty(),
        "the granted secret's value is in the invocation at {found:?}:\n{}",
        pretty(inv)
    );
    // And not in some escaped form either.
    let text = serde_json::to_string(inv).unwrap();
    let escaped = serde_json::to_string(secret).unwrap();
    assert!(!text.contains(&escaped[1..escaped.len() - 1]), "{text}");
    let marker = "[secret:smtp]";
    assert!(inv.stdout.contains(marker), "stdout: {:?}", inv.stdout);
    assert!(inv.stderr.contains(marker), "stderr: {:?}", inv.stderr);
    assert!(
        inv.outcome.summary.contains(marker),
        "summary: {:?}",
        inv.outcome.summary
    );
    assert_eq!(inv.outcome.details["leaked"], marker, "{}", pretty(inv));
    let logs = calls(inv, "log", "log");
    assert!(arg(logs[0], "message").contains(marker), "{:?}", logs[0]);
}

#[test]
fn the_granted_secret_is_redacted_everywhere() {
    let h = Harness::new();
    let inv = run_secret_guest(&h, SMTP);
    assert_status(&inv, Status::NoOp);
    assert_eq!(control(&inv, "granted"), "read");
    let get = calls(&inv, "secrets", "get")
        .into_iter()
        .find(|e| arg(e, "name") == "smtp")
        .unwrap();
    assert!(get.allowed);
    assert_redacted(&inv, SMTP);
    assert_host_survives(&h);
}

/// Real passwords hold quotes and backslashes; JSON escapes them in the guest's details.
#[test]
fn a_granted_secret_with_json_special_characters_is_redacted_everywhere() {
    let h = Harness::new();
    let secret = r#"smtp-"Pa55\word"-7Q"#;
    let inv = run_secret_guest(&h, secret);
    assert_status(&inv, Status::NoOp);
    assert_redacted(&inv, secret);
    assert_host_survives(&h);
}

// ----- 9. infinite loops -------------------------------------------------------------

#[test]
fn a_spinning_guest_times_out() {
    let h = Harness::new();
    let policy = "host_id = \"adv\"\n[limits]\ntimeout_ms = 200\n";
    let inv = h.run("adv-loop", policy, json!({"mode": "spin"}), false);
    assert_status(&inv, Status::Timeout);
    assert!(
        inv.duration_us < 5_000_000,
        "the 200 ms deadline took {} µs",
        inv.duration_us
    );
    assert_host_survives(&h);
}

#[test]
fn a_spinning_guest_runs_out_of_fuel() {
    let h = Harness::new();
    let policy = "host_id = \"adv\"\n[limits]\ntimeout_ms = 60000\nfuel = 20000000\n";
    let inv = h.run("adv-loop", policy, json!({"mode": "spin"}), false);
    assert_status(&inv, Status::OutOfFuel);
    assert!(
        inv.fuel_consumed >= 19_000_000 && inv.fuel_consumed <= 20_000_000,
        "fuel {}",
        inv.fuel_consumed
    );
    assert_host_survives(&h);
}

/// A guest blocked in a WASI clock wait is not running WebAssembly, so epoch interruption
/// alone cannot stop it; the deadline must hold anyway.
#[test]
fn a_sleeping_guest_times_out_at_its_deadline() {
    let h = Harness::new();
    let policy = "host_id = \"adv\"\n[limits]\ntimeout_ms = 200\n";
    let started = Instant::now();
    let inv = h.run(
        "adv-loop",
        policy,
        json!({"mode": "sleep", "sleep_ms": 10_000}),
        false,
    );
    let took = started.elapsed();
    assert_status(&inv, Status::Timeout);
    assert!(
        took < Duration::from_secs(3),
        "a 200 ms deadline ended the run only after {took:?} (the guest slept 10 s)"
    );
    assert_host_survives(&h);
}

// ----- 10. memory --------------------------------------------------------------------

#[test]
fn a_memory_bomb_runs_out_of_memory() {
    let h = Harness::new();
    let policy = format!("host_id = \"adv\"\n[limits]\nmemory_bytes = {}\n", 16 << 20);
    let inv = h.run("adv-memory", &policy, json!({"mode": "grow"}), false);
    assert_status(&inv, Status::OutOfMemory);
    let held: Vec<u64> = calls(&inv, "log", "log")
        .iter()
        .filter_map(|e| e.args["fields"]["mib"].as_str()?.parse().ok())
        .collect();
    let most = held.iter().copied().max().unwrap_or(0);
    assert!(
        (4..16).contains(&most),
        "the guest held {most} MiB under a 16 MiB limit"
    );
    assert_host_survives(&h);

    let inv = h.run("adv-memory", &policy, json!({"mode": "huge"}), false);
    assert_status(&inv, Status::OutOfMemory);
    assert_host_survives(&h);
}

// ----- 11. deep recursion ------------------------------------------------------------

#[test]
fn deep_recursion_traps_with_a_stack_overflow() {
    let h = Harness::new();
    let policy = "host_id = \"adv\"\n";
    let inv = h.run(
        "adv-recursion",
        policy,
        json!({"mode": "wasm-stack", "depth": 1_000_000_000_000u64}),
        false,
    );
    assert_status(&inv, Status::Trapped);
    assert_eq!(inv.outcome.summary, "stack overflow", "{}", pretty(&inv));
    assert_host_survives(&h);

    let inv = h.run(
        "adv-recursion",
        policy,
        json!({"mode": "shadow-stack", "depth": 1_000_000_000_000u64}),
        false,
    );
    assert_status(&inv, Status::Trapped);
    assert_host_survives(&h);
}

// ----- 12. output floods -------------------------------------------------------------

#[test]
fn output_floods_hit_the_output_limit() {
    let h = Harness::new();
    let limit = 64u64 << 10;
    let policy = format!("host_id = \"adv\"\n[limits]\noutput_bytes = {limit}\n");
    for mode in ["log", "stdout", "stderr"] {
        let started = Instant::now();
        let inv = h.run(
            "adv-flood",
            &policy,
            json!({"mode": mode, "bytes": 64u64 << 20}),
            false,
        );
        assert_status(&inv, Status::OutputLimit);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode} flood took {:?}",
            started.elapsed()
        );
        let logged: usize = calls(&inv, "log", "log")
            .iter()
            .filter(|e| e.allowed)
            .map(|e| arg(e, "message").len())
            .sum();
        let kept = (logged + inv.stdout.len() + inv.stderr.len()) as u64;
        assert!(
            kept <= limit,
            "{mode}: kept {kept} bytes over a {limit}-byte limit"
        );
        assert!(
            kept >= limit / 2,
            "{mode}: kept only {kept} bytes before the limit"
        );
        if mode == "log" {
            let last = inv.trace.last().unwrap();
            assert!(
                last.interface == "log" && !last.allowed && last.result["error"] == "output-limit",
                "{last:?}"
            );
        }
        assert_host_survives(&h);
    }
}

// ----- 13. a manifest that under-declares ---------------------------------------------

#[test]
fn calls_beyond_an_under_declared_manifest_are_refused() {
    calls_beyond_an_under_declared_manifest(false);
}

#[test]
fn calls_beyond_an_under_declared_manifest_are_refused_in_a_dry_run_too() {
    calls_beyond_an_under_declared_manifest(true);
}

fn calls_beyond_an_under_declared_manifest(dry_run: bool) {
    let h = Harness::new();
    let units = h.path("units");
    fs::write(units.join("granted.service"), "inactive\n").unwrap();
    let marker = h.path("touch").join("marker");
    let dir = h.path("files");
    fs::write(dir.join("existing.txt"), "DATA-CONTENT").unwrap();
    let secret = h.path("secrets").join("smtp");
    fs::write(&secret, format!("{SMTP}\n")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    // The policy would grant all of it; the manifest asks only for probe.
    let policy = format!(
        r#"host_id = "adv"
[grants]
services = ["granted.service"]
http = [{origin:?}]
write_dirs = [{dir}]
secrets = ["smtp"]
probe = true
[[grants.exec]]
program = "/usr/bin/touch"
args = ["*"]
[secrets]
smtp = {{ file = {secret} }}
{backend}"#,
        dir = toml_path(&dir),
        secret = toml_path(&secret),
        backend = service_backend(&units),
    );
    let before = snapshot(&dir);
    let units_before = snapshot(&units);

    let inv = h.run(
        "adv-underdeclare",
        &policy,
        json!({"unit": "granted.service", "marker": marker, "url": format!("{origin}/health"), "dir": dir}),
        dry_run,
    );

    assert_all_refused(
        &inv,
        &[
            "services-restart",
            "exec-run",
            "secrets-get",
            "http-send",
            "probe-disk-usage",
            "file-read",
            "file-write",
        ],
    );
    control(&inv, "probe-uptime");
    let grant = inv.grant.as_ref().unwrap();
    assert!(grant.probe);
    assert!(
        grant.services.is_empty()
            && grant.exec.is_empty()
            && grant.http.is_empty()
            && grant.secrets.is_empty()
    );
    assert!(grant.read_dirs.is_empty() && grant.write_dirs.is_empty());
    // Nothing happened.
    assert_eq!(snapshot(&units), units_before);
    assert!(!marker.exists());
    assert_no_connection(&listener);
    assert_eq!(snapshot(&dir), before);
    let text = serde_json::to_string(&inv).unwrap();
    assert!(
        !text.contains(SMTP) && !text.contains("DATA-CONTENT"),
        "{text}"
    );
    // Every host call but probe.uptime was denied and traced.
    for (interface, function) in [
        ("services", "restart"),
        ("exec", "run"),
        ("secrets", "get"),
        ("http", "send"),
        ("probe", "disk-usage"),
    ] {
        assert_denied(&inv, interface, function, "not requested", |_| true);
    }
    let d = dir.display().to_string();
    assert_denied(&inv, "filesystem", "open-at", "read", |e| {
        arg(e, "path") == format!("{d}/existing.txt")
    });
    assert_denied(&inv, "filesystem", "open-at", "write", |e| {
        arg(e, "path") == format!("{d}/new.txt")
    });
    let allowed: Vec<_> = inv.trace.iter().filter(|e| e.allowed).collect();
    assert!(
        allowed.len() == 1 && allowed[0].function == "uptime",
        "{allowed:?}"
    );
    assert_host_survives(&h);
}

// ----- 14. limits: deadlines, trace size, secrets in every spelling, risk --------------

/// `adv-limits` under a policy granting `dir` read-only, the origin `http://127.0.0.1:1`
/// (nothing listens there) and the secret `s` read from a file holding `secret`.
fn run_limits_guest(h: &Harness, limits: &str, secret: &str, params: Value) -> Invocation {
    let (policy, params) = limits_guest(h, limits, secret, params);
    h.run("adv-limits", &policy, params, false)
}

/// The policy and params [`run_limits_guest`] runs `adv-limits` with.
fn limits_guest(h: &Harness, limits: &str, secret: &str, params: Value) -> (String, Value) {
    let dir = h.path("limits");
    let file = h.path("limits-secrets").join("s");
    fs::write(&file, format!("{secret}\n")).unwrap();
    let policy = format!(
        "host_id = \"adv\"\n[limits]\n{limits}\n[grants]\nread_dirs = [{}]\nhttp = [\"http://127.0.0.1:1\"]\nsecrets = [\"s\"]\n[secrets]\ns = {{ file = {} }}\n",
        toml_path(&dir),
        toml_path(&file)
    );
    let mut params = params;
    params["dir"] = json!(dir);
    params["origin"] = json!("http://127.0.0.1:1");
    (policy, params)
}

#[test]
fn more_runs_at_once_than_the_pool_holds_wait_their_turn_and_all_end() {
    // Twice as many runs as the pool has instances (64), each sleeping 200 ms: past
    // `MAX_RUNS` they wait for a slot instead of failing on an exhausted pool.
    let h = Harness::new();
    let (policy, params) = limits_guest(
        &h,
        "timeout_ms = 60000",
        "unused-secret",
        json!({"mode": "sleep-heal", "sleep_ms": 200}),
    );
    let policy = std::sync::Arc::new(runwarden_runtime::Policy::parse(&policy).unwrap());
    let loaded =
        h.rt.load(&runwarden_test_artifacts::bytes("adv-limits"))
            .unwrap();
    let invs: Vec<Invocation> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..128)
            .map(|_| {
                s.spawn(|| {
                    let params = params.clone();
                    h.rt.invoke(
                        &loaded,
                        &policy,
                        RunOptions {
                            params,
                            dry_run: false,
                            invocation_id: None,
                        },
                    )
                })
            })
            .collect();
        runs.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for inv in &invs {
        assert_status(inv, Status::Healed);
    }
    assert_host_survives(&h);
}

#[test]
fn a_guest_woken_at_its_deadline_cannot_report_healed() {
    let h = Harness::new();
    let inv = run_limits_guest(
        &h,
        "timeout_ms = 200",
        "unused-secret",
        json!({"mode": "sleep-heal", "sleep_ms": 10_000}),
    );
    assert_status(&inv, Status::Timeout);
    assert!(inv.outcome.summary.contains("Healed"), "{}", pretty(&inv));
    assert_host_survives(&h);
}

/// A read of a FIFO nobody writes to blocks the run's thread in the host, where the
/// epoch cannot interrupt it. The run still ends `timeout` at its deadline (plus a grace
/// period), abandoned; the host keeps serving; writing to the FIFO later releases the
/// abandoned thread. (Where opening a FIFO is refused, the guest sleeps past its deadline
/// instead and must end `timeout` all the same.)
#[test]
fn a_run_blocked_on_a_fifo_ends_at_its_deadline() {
    let h = Harness::new();
    let fifo = h.path("limits").join("pipe");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let started = Instant::now();
    let inv = run_limits_guest(
        &h,
        "timeout_ms = 300",
        "unused-secret",
        json!({"mode": "fifo", "path": fifo, "sleep_ms": 60_000}),
    );
    let took = started.elapsed();
    assert_status(&inv, Status::Timeout);
    assert!(
        took < Duration::from_secs(10),
        "a 300 ms deadline ended a run blocked on a FIFO only after {took:?}"
    );
    assert_host_survives(&h);
    // Release the abandoned thread, if the open blocked.
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut w) = fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
    {
        let _ = w.write_all(b"x");
    }
}

/// A secret file that is a FIFO is refused instead of hanging the run.
#[test]
fn a_secret_file_that_is_a_fifo_is_refused_without_blocking() {
    let h = Harness::new();
    let dir = h.path("limits");
    let fifo = h.path("fifo-secret").join("s");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let policy = format!(
        "host_id = \"adv\"\n[limits]\ntimeout_ms = 30000\n[grants]\nread_dirs = [{}]\nhttp = [\"http://127.0.0.1:1\"]\nsecrets = [\"s\"]\n[secrets]\ns = {{ file = {} }}\n",
        toml_path(&dir),
        toml_path(&fifo)
    );
    let started = Instant::now();
    let inv = h.run(
        "adv-limits",
        &policy,
        json!({"mode": "cut", "fill": 1, "dir": dir, "origin": "http://127.0.0.1:1"}),
        false,
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_status(&inv, Status::NoOp);
    let get = &calls(&inv, "secrets", "get")[0];
    assert!(
        get.result["message"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{get:?}"
    );
}

#[test]
fn denied_calls_with_huge_argument_lists_leave_a_bounded_trace() {
    let h = Harness::new();
    // 40 calls of 100 000 arguments each: once 2.4 GB of trace.
    let inv = run_limits_guest(
        &h,
        "timeout_ms = 60000\nmemory_bytes = 268435456",
        "unused-secret",
        json!({"mode": "flood", "calls": 40, "args": 100_000, "arg_bytes": 8}),
    );
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.outcome.details["denied"], 40, "{}", pretty(&inv));
    let execs = calls(&inv, "exec", "run");
    assert_eq!(execs.len(), 40);
    for e in &execs {
        assert!(!e.allowed);
        let args = e.args["args"].as_array().unwrap();
        assert_eq!(
            args.len(),
            16,
            "15 arguments and a count of the rest: {e:?}"
        );
        assert_eq!(args[15], "…[99985 more]");
        assert!(serde_json::to_string(e).unwrap().len() < 4096, "{e:?}");
    }
    assert!(serde_json::to_string(&inv).unwrap().len() < 200_000);
}

#[test]
fn the_trace_of_one_record_is_capped() {
    let h = Harness::new();
    // 300 calls with 16 arguments of 5 000 bytes: ~5 MB of bounded arguments.
    let inv = run_limits_guest(
        &h,
        "timeout_ms = 60000",
        "unused-secret",
        json!({"mode": "flood", "calls": 300, "args": 16, "arg_bytes": 5000}),
    );
    assert_status(&inv, Status::NoOp);
    let execs = calls(&inv, "exec", "run");
    assert_eq!(execs.len(), 300, "every call is still in the trace");
    assert!(execs.iter().all(|e| !e.allowed));
    let elided = execs
        .iter()
        .filter(|e| e.args.get("elided").is_some())
        .count();
    assert!(elided > 0 && elided < 300, "{elided} entries elided");
    let size = serde_json::to_string(&inv.trace).unwrap().len();
    assert!(size < (1 << 20) + 300 * 400, "the trace is {size} bytes");
}

/// A password with a space and symbols that every encoding changes.
const NASTY: &str = r#"p@ss w/rd+%&"\"#;

/// Pieces of NASTY that any spelling of it keeps (raw, percent, form, JSON, base64 aside).
const NEEDLES: [&str; 5] = ["p@ss", "p%40ss", "ss%20w", "ss+w", "w%2Frd"];

#[track_caller]
fn assert_nasty_nowhere(inv: &Invocation) {
    use base64::Engine;
    // The params hold the needles the guest looks for, not the secret.
    let mut inv = inv.clone();
    inv.params = json!({});
    let inv = &inv;
    let text = serde_json::to_string(inv).unwrap();
    for n in NEEDLES {
        assert!(
            !text.contains(n),
            "{n:?} is in the invocation:\n{}",
            pretty(inv)
        );
    }
    let lower: String = NASTY.bytes().map(|b| format!("%{b:02x}")).collect();
    assert!(!text.to_lowercase().contains(&lower[..12]), "{text}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(NASTY);
    assert!(!text.contains(&b64[..8]), "{text}");
}

#[test]
fn a_secret_with_spaces_and_symbols_is_scrubbed_from_every_error_path() {
    let h = Harness::new();
    let inv = run_limits_guest(
        &h,
        "timeout_ms = 30000",
        NASTY,
        json!({"mode": "leak", "needles": NEEDLES}),
    );
    assert_status(&inv, Status::NoOp);
    assert_nasty_nowhere(&inv);
    // The guest saw no spelling of the secret in the errors the host returned to it.
    assert_eq!(
        inv.outcome.details["errors_with_secret"],
        json!([]),
        "{}",
        pretty(&inv)
    );
    // Each error path was taken.
    let http = calls(&inv, "http", "send");
    assert_eq!(http.len(), 3, "{}", pretty(&inv));
    assert!(http[0].allowed, "{:?}", http[0]);
    assert_eq!(http[0].result["error"], "failed", "{:?}", http[0]);
    assert!(arg(http[0], "url").contains("[secret:s]"), "{:?}", http[0]);
    assert_eq!(http[1].result["error"], "invalid", "{:?}", http[1]);
    // A low-risk runbook may not POST.
    assert!(!http[2].allowed, "{:?}", http[2]);
    assert!(
        http[2].result["message"]
            .as_str()
            .unwrap()
            .contains("risk low"),
        "{:?}",
        http[2]
    );
    assert_eq!(calls(&inv, "exec", "run").len(), 2);
    assert_eq!(calls(&inv, "services", "stop").len(), 1);
    assert!(inv.stdout.contains("[secret:s]"), "{:?}", inv.stdout);
    assert!(inv.stderr.contains("[secret:s]"), "{:?}", inv.stderr);
    assert_eq!(inv.outcome.details["leaked"], "[secret:s]");
    assert_host_survives(&h);
}

#[test]
fn a_secret_cut_by_the_output_limit_leaves_no_first_bytes() {
    let h = Harness::new();
    // The limit falls 6 bytes into the secret: "p@ss w" would survive a plain scrub.
    let inv = run_limits_guest(
        &h,
        "timeout_ms = 30000\noutput_bytes = 1000",
        NASTY,
        json!({"mode": "cut", "fill": 994}),
    );
    assert!(
        matches!(inv.outcome.status, Status::OutputLimit | Status::NoOp),
        "{}",
        pretty(&inv)
    );
    assert!(inv.stdout.starts_with("xxxx"), "{:?}", inv.stdout);
    assert!(inv.stdout.ends_with("[secret:s]"), "{:?}", inv.stdout);
    assert_nasty_nowhere(&inv);
    assert!(!inv.stdout.contains("p@s"), "{:?}", inv.stdout);
}

/// A runbook declaring `low` while asking to manage a service and write a directory is
/// treated as `high`: its manifest's effective risk is what the high-risk gate reads.
#[test]
fn a_manifest_cannot_lower_its_risk_below_its_capabilities() {
    let h = Harness::new();
    let loaded =
        h.rt.load(&runwarden_test_artifacts::bytes("adv-lowrisk"))
            .unwrap();
    let m = loaded.manifest();
    assert_eq!(m.declared_risk, runwarden_runtime::Risk::Low);
    assert_eq!(m.risk, runwarden_runtime::Risk::High);
    let limits =
        h.rt.load(&runwarden_test_artifacts::bytes("adv-limits"))
            .unwrap();
    assert_eq!(limits.manifest().risk, runwarden_runtime::Risk::Low);
}
