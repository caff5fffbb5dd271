//! The standard runbooks (`runbooks/`) against real temp directories, a loopback HTTP
//! server, a shell script standing in for certbot, a tmpfs for disk-cleanup and the
//! command-template service backend. Each test checks what an operator relies on: the
//! effect on disk (or its absence in a dry run), the counts in the details, the calls in
//! the trace, refusal when the policy does not grant the scope, and schema validation.
use super::*;
use runwarden_runtime::TraceEntry;
use serde_json::{Value, json};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

// ----- helpers -----------------------------------------------------------------------

fn pretty(inv: &Invocation) -> String {
    serde_json::to_string_pretty(inv).unwrap()
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A policy granting `dirs` read-write (and probe when asked).
fn write_policy(dirs: &[&Path], probe: bool) -> String {
    let dirs: Vec<String> = dirs.iter().map(|d| toml_path(d)).collect();
    format!(
        "host_id = \"t\"\n[grants]\nprobe = {probe}\nwrite_dirs = [{}]\n",
        dirs.join(", ")
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Trace entries of one host function.
fn calls<'a>(inv: &'a Invocation, interface: &str, function: &str) -> Vec<&'a TraceEntry> {
    inv.trace
        .iter()
        .filter(|e| e.interface == interface && e.function == function)
        .collect()
}

/// Messages the runbook logged, in order.
fn logged(inv: &Invocation) -> Vec<String> {
    calls(inv, "log", "log")
        .iter()
        .map(|e| e.args["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Paths of the filesystem mutations (`unlink-file-at`, `rename-at`, …) in the trace.
fn mutated(inv: &Invocation, function: &str) -> Vec<String> {
    calls(inv, "filesystem", function)
        .iter()
        .flat_map(|e| e.args["paths"].as_array().cloned().unwrap_or_default())
        .map(|p| p.as_str().unwrap_or("").to_string())
        .collect()
}

/// Every mutation and every write-open in the trace was simulated.
#[track_caller]
fn assert_all_simulated(inv: &Invocation) {
    let writes: Vec<&TraceEntry> = inv
        .trace
        .iter()
        .filter(|e| {
            e.interface == "filesystem"
                && (e.function != "open-at" || e.args["write"] == json!(true))
        })
        .collect();
    assert!(
        !writes.is_empty(),
        "a dry run that would change something shows the changes: {}",
        pretty(inv)
    );
    for e in writes {
        assert!(
            e.dry_run && e.allowed,
            "not simulated: {}",
            serde_json::to_string(e).unwrap()
        );
    }
}

/// Relative path → (size, contents when small, mtime): the whole observable state of a tree.
fn snapshot(dir: &Path) -> Vec<(String, u64, String, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&p).unwrap();
            let mtime = meta.modified().unwrap();
            if meta.is_symlink() {
                out.push((
                    rel,
                    0,
                    format!("-> {}", fs::read_link(&p).unwrap().display()),
                    mtime,
                ));
            } else if meta.is_dir() {
                out.push((rel + "/", 0, String::new(), mtime));
                stack.push(p);
            } else {
                let body = if meta.len() <= 64 {
                    String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
                } else {
                    String::new()
                };
                out.push((rel, meta.len(), body, mtime));
            }
        }
    }
    out.sort();
    out
}

/// Set a file's or directory's mtime to `hours` ago.
fn age(path: &Path, hours: u64) {
    let t = SystemTime::now() - Duration::from_secs(hours * 3600);
    let f = if path.is_dir() {
        fs::File::open(path)
    } else {
        fs::File::options().write(true).open(path)
    };
    f.unwrap().set_modified(t).unwrap();
}

/// Write `len` bytes to `path` and age it.
fn file(path: &Path, len: usize, hours: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, vec![b'x'; len]).unwrap();
    age(path, hours);
}

/// Params that fail the schema are rejected before the guest runs.
#[track_caller]
fn assert_rejected(h: &Harness, name: &str, policy: &str, bad: &[Value]) {
    for params in bad {
        let inv = h.run(name, policy, params.clone(), false);
        assert_eq!(
            inv.outcome.status,
            Status::InvalidParams,
            "{params} accepted: {}",
            pretty(&inv)
        );
        assert_eq!(inv.fuel_consumed, 0, "{params}: the guest must not run");
        assert!(inv.trace.is_empty());
    }
}

/// The run was refused before instantiation, naming `missing`.
#[track_caller]
fn assert_refused(inv: &Invocation, missing: &str) {
    assert_eq!(inv.outcome.status, Status::Refused, "{}", pretty(inv));
    assert!(
        inv.outcome.summary.contains(missing),
        "refusal does not name {missing:?}: {}",
        inv.outcome.summary
    );
    assert_eq!(inv.fuel_consumed, 0);
    assert!(inv.trace.is_empty());
}

fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .expect("gzip is needed to check rotated logs");
    assert!(
        out.status.success(),
        "{} is not valid gzip: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn gzip(data: &[u8], path: &Path) {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    fs::write(path, out.stdout).unwrap();
}

// ----- restart-service ---------------------------------------------------------------

fn units_policy(units: &Path, services: &str) -> String {
    format!(
        "host_id = \"t\"\n[grants]\nservices = [{services}]\n{}",
        service_backend(units)
    )
}

#[test]
fn restart_service_leaves_an_active_unit_alone_unless_forced() {
    let h = Harness::new();
    let units = h.path("units");
    fs::write(units.join("nginx.service"), "active\n").unwrap();
    let policy = units_policy(&units, "\"nginx.service\"");

    let inv = h.run(
        "restart-service",
        &policy,
        json!({"unit": "nginx.service"}),
        false,
    );
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.outcome.details["before"], "active");
    assert!(
        calls(&inv, "services", "restart").is_empty(),
        "{}",
        pretty(&inv)
    );
    assert!(!units.join("nginx.service.log").exists());
    assert_eq!(
        inv.grant.as_ref().unwrap().services,
        ["nginx.service"],
        "the grant is the one unit asked for"
    );

    let forced = h.run(
        "restart-service",
        &policy,
        json!({"unit": "nginx.service", "force": true}),
        false,
    );
    assert_status(&forced, Status::Healed);
    assert_eq!(calls(&forced, "services", "restart").len(), 1);
    assert_eq!(
        fs::read_to_string(units.join("nginx.service.log")).unwrap(),
        "restarted\n"
    );
}

#[test]
fn restart_service_reports_a_unit_that_does_not_come_back() {
    let h = Harness::new();
    let units = h.path("units");
    fs::write(units.join("php8.2-fpm.service"), "failed\n").unwrap();
    // A backend whose restart leaves the unit failed.
    let d = units.display();
    let policy = format!(
        r#"host_id = "t"
[grants]
services = ["php*-fpm.service"]
[services]
backend = "command"
status = ["/bin/sh", "-c", "cat {d}/{{unit}} 2>/dev/null || echo not-found"]
start = ["/bin/true"]
stop = ["/bin/true"]
restart = ["/bin/sh", "-c", "echo restarted >> {d}/{{unit}}.log"]
reload = ["/bin/true"]
"#
    );
    let inv = h.run(
        "restart-service",
        &policy,
        json!({"unit": "php8.2-fpm.service"}),
        false,
    );
    assert_status(&inv, Status::Failed);
    assert!(
        inv.outcome.summary.contains("failed after restart"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(inv.outcome.details["before"], "failed");
    assert_eq!(inv.outcome.details["after"], "failed");
    assert_eq!(
        fs::read_to_string(units.join("php8.2-fpm.service.log")).unwrap(),
        "restarted\n"
    );
}

#[test]
fn restart_service_refuses_units_outside_the_policy_and_bad_params() {
    let h = Harness::new();
    let units = h.path("units");
    fs::write(units.join("sshd.service"), "inactive\n").unwrap();
    let policy = units_policy(&units, "\"nginx.service\", \"php*-fpm.service\"");
    let inv = h.run(
        "restart-service",
        &policy,
        json!({"unit": "sshd.service"}),
        false,
    );
    assert_refused(&inv, "service sshd.service");
    assert!(!units.join("sshd.service.log").exists());
    assert_rejected(
        &h,
        "restart-service",
        &policy,
        &[
            json!({}),
            json!({"unit": ""}),
            json!({"unit": "nginx.service", "force": "yes"}),
            json!({"unit": "x", "now": 1}),
        ],
    );
}

// ----- rotate-logs -------------------------------------------------------------------

/// A log directory: app.log (with two generations), api.log, an empty and a small log,
/// and a file the pattern does not match.
fn log_dir(h: &Harness) -> (PathBuf, Vec<u8>) {
    let dir = h.path("logs");
    let content: Vec<u8> = (0..2000)
        .flat_map(|i| format!("2026-01-01T00:00:{i:04} GET /patient-portal 200\n").into_bytes())
        .collect();
    fs::write(dir.join("app.log"), &content).unwrap();
    gzip(b"generation one\n", &dir.join("app.log.1.gz"));
    gzip(b"generation two\n", &dir.join("app.log.2.gz"));
    fs::write(dir.join("api.log"), b"api line\n".repeat(50)).unwrap();
    fs::write(dir.join("empty.log"), b"").unwrap();
    fs::write(dir.join("small.log"), b"x\n").unwrap();
    fs::write(dir.join("notes.txt"), b"not a log\n").unwrap();
    (dir, content)
}

#[test]
fn rotate_logs_gzips_shifts_generations_and_truncates_in_place() {
    let h = Harness::new();
    let (dir, content) = log_dir(&h);
    // The daemon's handle, opened before the rotation and used after it.
    let mut daemon = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("app.log"))
        .unwrap();

    let policy = write_policy(&[&dir], false);
    let inv = h.run(
        "rotate-logs",
        &policy,
        json!({"dir": s(&dir), "pattern": "*.log", "keep": 2, "min_size_bytes": 100}),
        false,
    );
    assert_status(&inv, Status::Healed);
    let d = &inv.outcome.details;

    // app.log: compressed into generation 1, old generation 1 shifted, generation 2 dropped (keep = 2).
    assert_eq!(gunzip(&dir.join("app.log.1.gz")), content);
    assert_eq!(gunzip(&dir.join("app.log.2.gz")), b"generation one\n");
    assert!(
        !dir.join("app.log.3.gz").exists(),
        "keep = 2 allows two generations"
    );
    assert_eq!(
        fs::metadata(dir.join("app.log")).unwrap().len(),
        0,
        "the live file is truncated"
    );
    // Copytruncate: the daemon keeps writing through its old handle, from the start.
    daemon.write_all(b"after rotation\n").unwrap();
    assert_eq!(fs::read(dir.join("app.log")).unwrap(), b"after rotation\n");
    // api.log: first rotation.
    assert_eq!(gunzip(&dir.join("api.log.1.gz")), b"api line\n".repeat(50));
    assert_eq!(fs::metadata(dir.join("api.log")).unwrap().len(), 0);
    // Untouched: too small, empty, not matching. No temporary file left behind.
    assert_eq!(fs::read(dir.join("small.log")).unwrap(), b"x\n");
    assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"not a log\n");
    assert!(!dir.join("small.log.1.gz").exists() && !dir.join("empty.log.1.gz").exists());
    assert!(
        fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp"))
    );

    assert_eq!(d["matched"], 4, "{}", pretty(&inv));
    let rotated = d["rotated"].as_array().unwrap();
    assert_eq!(rotated.len(), 2);
    let app = rotated.iter().find(|r| r["file"] == "app.log").unwrap();
    assert_eq!(app["bytes"], content.len());
    assert_eq!(
        app["compressed_bytes"],
        fs::metadata(dir.join("app.log.1.gz")).unwrap().len()
    );
    assert_eq!(app["deleted"], json!(["app.log.2.gz"]));
    assert_eq!(app["shifted"], json!(["app.log.1.gz -> app.log.2.gz"]));
    let skipped: Vec<(&str, &str)> = d["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["file"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("empty.log", "empty"),
            ("small.log", "below min_size_bytes")
        ]
    );
    assert!(
        inv.outcome.summary.starts_with("rotated 2 file(s)"),
        "{}",
        inv.outcome.summary
    );

    // The trace shows each step on the real paths.
    let p = |n: &str| s(&dir.join(n));
    assert_eq!(mutated(&inv, "unlink-file-at"), [p("app.log.2.gz")]);
    let renames = mutated(&inv, "rename-at");
    assert!(
        renames
            .windows(2)
            .any(|w| w == [p("app.log.1.gz"), p("app.log.2.gz")]),
        "{renames:?}"
    );
    assert!(
        renames
            .windows(2)
            .any(|w| w == [p("app.log.1.gz.tmp"), p("app.log.1.gz")]),
        "{renames:?}"
    );
    assert!(
        calls(&inv, "filesystem", "rename-at")
            .iter()
            .all(|e| e.allowed && !e.dry_run)
    );
    let msgs = logged(&inv);
    assert_eq!(
        msgs.iter().filter(|m| *m == "rotated").count(),
        2,
        "{msgs:?}"
    );

    // Running again: both live files are now empty, nothing to do.
    let again = h.run(
        "rotate-logs",
        &policy,
        json!({"dir": s(&dir), "pattern": "*.log", "keep": 2, "min_size_bytes": 100}),
        false,
    );
    assert_status(&again, Status::NoOp);
    assert!(
        again.outcome.summary.contains("none needs rotating"),
        "{}",
        again.outcome.summary
    );
}

#[test]
fn rotate_logs_dry_run_changes_nothing_but_reports_the_plan() {
    let h = Harness::new();
    let (dir, content) = log_dir(&h);
    let before = snapshot(&dir);
    let inv = h.run(
        "rotate-logs",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "pattern": "app.*"}),
        true,
    );
    assert_status(&inv, Status::Healed);
    assert_eq!(
        snapshot(&dir),
        before,
        "a dry run must not touch the log directory"
    );
    assert_eq!(fs::read(dir.join("app.log")).unwrap(), content);

    let rotated = inv.outcome.details["rotated"].as_array().unwrap();
    assert_eq!(rotated.len(), 1, "{}", pretty(&inv));
    assert_eq!(rotated[0]["file"], "app.log");
    assert_eq!(rotated[0]["bytes"], content.len());
    assert_eq!(
        rotated[0]["shifted"],
        json!([
            "app.log.2.gz -> app.log.3.gz",
            "app.log.1.gz -> app.log.2.gz"
        ])
    );
    assert_all_simulated(&inv);
    assert!(!calls(&inv, "filesystem", "rename-at").is_empty());
}

#[test]
fn rotate_logs_is_a_no_op_when_nothing_matches() {
    let h = Harness::new();
    let (dir, _) = log_dir(&h);
    let before = snapshot(&dir);
    let inv = h.run(
        "rotate-logs",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "pattern": "*.err"}),
        false,
    );
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.outcome.details["matched"], 0);
    assert!(
        inv.outcome.summary.contains("no file"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn rotate_logs_drops_generations_beyond_a_lowered_keep() {
    let h = Harness::new();
    let dir = h.path("logs");
    fs::write(dir.join("app.log"), b"current\n").unwrap();
    for i in 1..=6 {
        gzip(
            format!("generation {i}\n").as_bytes(),
            &dir.join(format!("app.log.{i}.gz")),
        );
    }
    let inv = h.run(
        "rotate-logs",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "pattern": "app.log", "keep": 3}),
        false,
    );
    assert_status(&inv, Status::Healed);
    assert_eq!(gunzip(&dir.join("app.log.1.gz")), b"current\n");
    assert_eq!(gunzip(&dir.join("app.log.2.gz")), b"generation 1\n");
    assert_eq!(gunzip(&dir.join("app.log.3.gz")), b"generation 2\n");
    for i in 4..=7 {
        assert!(
            !dir.join(format!("app.log.{i}.gz")).exists(),
            "generation {i} should be gone"
        );
    }
    let mut deleted: Vec<String> = inv.outcome.details["rotated"][0]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "app.log.3.gz",
            "app.log.4.gz",
            "app.log.5.gz",
            "app.log.6.gz"
        ]
    );
}

#[test]
fn rotate_logs_compresses_megabytes_within_the_default_limits() {
    let h = Harness::new();
    let dir = h.path("logs");
    let content: Vec<u8> = (0..200_000u32)
        .flat_map(|i| {
            format!(
                "{i:08} 10.0.0.{} GET /api/v1/appointments?id={} 200\n",
                i % 255,
                i * 7
            )
            .into_bytes()
        })
        .collect();
    assert!(content.len() > 8 << 20);
    fs::write(dir.join("big.log"), &content).unwrap();
    let inv = h.run(
        "rotate-logs",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "pattern": "*.log"}),
        false,
    );
    assert_status(&inv, Status::Healed);
    assert_eq!(gunzip(&dir.join("big.log.1.gz")), content);
    let compressed = fs::metadata(dir.join("big.log.1.gz")).unwrap().len() as f64;
    assert!(
        compressed < content.len() as f64 / 4.0,
        "logs compress well: {compressed} of {}",
        content.len()
    );
    let fuel_per_byte = inv.fuel_consumed as f64 / content.len() as f64;
    eprintln!(
        "rotate-logs: {} bytes, {:.1} fuel/byte, {} ms",
        content.len(),
        fuel_per_byte,
        inv.duration_us / 1000
    );
    // The default fuel (10^10) must cover 100 MiB of logs in one run.
    assert!(
        fuel_per_byte * ((100 << 20) as f64) < 1e10,
        "{fuel_per_byte:.1} fuel per byte"
    );
}

#[test]
fn rotate_logs_is_refused_without_a_write_grant_and_rejects_bad_params() {
    let h = Harness::new();
    let (dir, _) = log_dir(&h);
    let before = snapshot(&dir);
    let other = h.path("other");
    // Read-only is not enough, nor is a sibling directory.
    let ro = format!(
        "host_id = \"t\"\n[grants]\nread_dirs = [{}]\nwrite_dirs = [{}]\n",
        toml_path(&dir),
        toml_path(&other)
    );
    let inv = h.run(
        "rotate-logs",
        &ro,
        json!({"dir": s(&dir), "pattern": "*.log"}),
        false,
    );
    assert_refused(&inv, &format!("write-dir {}", s(&dir)));
    assert_eq!(snapshot(&dir), before);

    let policy = write_policy(&[&dir], false);
    let d = s(&dir);
    assert_rejected(
        &h,
        "rotate-logs",
        &policy,
        &[
            json!({"dir": d}),
            json!({"pattern": "*.log"}),
            json!({"dir": "logs", "pattern": "*.log"}),
            json!({"dir": d, "pattern": "../*.log"}),
            json!({"dir": d, "pattern": ""}),
            json!({"dir": d, "pattern": "*.log", "keep": 0}),
            json!({"dir": d, "pattern": "*.log", "keep": 101}),
            json!({"dir": d, "pattern": "*.log", "min_size_bytes": -1}),
            json!({"dir": d, "pattern": "*.log", "compress": false}),
        ],
    );
}

// ----- clear-tmp ---------------------------------------------------------------------

/// A temp directory with old and young files, nested directories and symlinks pointing
/// out of it at an old file and an old directory that must survive.
fn tmp_tree(h: &Harness) -> (PathBuf, PathBuf) {
    let dir = h.path("tmp");
    let outside = h.path("outside");
    file(&outside.join("precious.txt"), 10, 100);
    file(&outside.join("sub/also-precious.txt"), 10, 100);

    file(&dir.join("old-1.tmp"), 1000, 72);
    file(&dir.join("old-2.tmp"), 500, 48);
    file(&dir.join("young.tmp"), 300, 1);
    file(&dir.join("olddir/deep/old-3.tmp"), 200, 50);
    file(&dir.join("youngdir/old-4.tmp"), 100, 30);
    file(&dir.join("mixed/old-5.tmp"), 50, 30);
    file(&dir.join("mixed/young-2.tmp"), 20, 0);
    std::os::unix::fs::symlink(outside.join("precious.txt"), dir.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), dir.join("olddir/link-to-dir")).unwrap();
    // Directory ages last: adding entries touched them.
    age(&dir.join("olddir/deep"), 50);
    age(&dir.join("olddir"), 50);
    age(&dir.join("youngdir"), 1);
    age(&dir.join("mixed"), 40);
    (dir, outside)
}

#[test]
fn clear_tmp_removes_old_files_and_emptied_old_dirs_never_following_symlinks() {
    let h = Harness::new();
    let (dir, outside) = tmp_tree(&h);
    let outside_before = snapshot(&outside);
    let inv = h.run(
        "clear-tmp",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "older_than_hours": 24}),
        false,
    );
    assert_status(&inv, Status::Healed);

    for gone in [
        "old-1.tmp",
        "old-2.tmp",
        "olddir/deep/old-3.tmp",
        "youngdir/old-4.tmp",
        "mixed/old-5.tmp",
    ] {
        assert!(!dir.join(gone).exists(), "{gone} should be removed");
    }
    for kept in ["young.tmp", "mixed/young-2.tmp", "youngdir", "mixed"] {
        assert!(dir.join(kept).exists(), "{kept} should be kept");
    }
    // olddir/deep emptied and old: removed. olddir still holds the symlink: kept.
    assert!(!dir.join("olddir/deep").exists());
    assert!(dir.join("olddir").is_dir());
    assert!(
        fs::symlink_metadata(dir.join("link-to-file"))
            .unwrap()
            .is_symlink(),
        "symlinks are skipped, not removed"
    );
    assert!(
        fs::symlink_metadata(dir.join("olddir/link-to-dir"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "nothing outside the directory may change"
    );

    let d = &inv.outcome.details;
    assert_eq!(d["files_seen"], 7, "{}", pretty(&inv));
    assert_eq!(d["files_removed"], 5);
    assert_eq!(d["bytes_freed"], 1000 + 500 + 200 + 100 + 50);
    assert_eq!(d["dirs_removed"], json!([s(&dir.join("olddir/deep"))]));
    assert_eq!(d["symlinks_skipped"], 2);
    assert_eq!(d["limit_reached"], false);
    // Oldest first.
    let order: Vec<&str> = d["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(order[0], s(&dir.join("old-1.tmp")));
    assert_eq!(order[1], s(&dir.join("olddir/deep/old-3.tmp")));
    assert!(
        inv.outcome.summary.contains("removed 5 file(s)"),
        "{}",
        inv.outcome.summary
    );

    let mut unlinked = mutated(&inv, "unlink-file-at");
    unlinked.sort();
    let mut expected: Vec<String> = order.iter().map(|p| p.to_string()).collect();
    expected.sort();
    assert_eq!(unlinked, expected, "the trace shows exactly the removals");
    assert_eq!(
        mutated(&inv, "remove-directory-at"),
        [s(&dir.join("olddir/deep"))]
    );
}

#[test]
fn clear_tmp_honours_max_files_oldest_first() {
    let h = Harness::new();
    let (dir, _) = tmp_tree(&h);
    let inv = h.run(
        "clear-tmp",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "older_than_hours": 24, "max_files": 2}),
        false,
    );
    assert_status(&inv, Status::Healed);
    assert!(!dir.join("old-1.tmp").exists() && !dir.join("olddir/deep/old-3.tmp").exists());
    assert!(dir.join("old-2.tmp").exists() && dir.join("youngdir/old-4.tmp").exists());
    let d = &inv.outcome.details;
    assert_eq!(d["files_removed"], 2);
    assert_eq!(d["files_eligible"], 5);
    assert_eq!(d["limit_reached"], true);
    assert!(
        inv.outcome.summary.contains("3 old file(s) left"),
        "{}",
        inv.outcome.summary
    );
}

#[test]
fn clear_tmp_dry_run_changes_nothing_but_reports_the_same_plan() {
    let h = Harness::new();
    let (dir, _) = tmp_tree(&h);
    let before = snapshot(&dir);
    let dry = h.run(
        "clear-tmp",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "older_than_hours": 24}),
        true,
    );
    assert_status(&dry, Status::Healed);
    assert_eq!(
        snapshot(&dir),
        before,
        "a dry run must not touch the directory"
    );
    assert_eq!(dry.outcome.details["files_removed"], 5, "{}", pretty(&dry));
    assert_eq!(
        dry.outcome.details["dirs_removed"],
        json!([s(&dir.join("olddir/deep"))])
    );
    assert_eq!(mutated(&dry, "unlink-file-at").len(), 5);
    assert_all_simulated(&dry);
}

#[test]
fn clear_tmp_is_a_no_op_when_nothing_is_old_enough() {
    let h = Harness::new();
    let (dir, _) = tmp_tree(&h);
    let before = snapshot(&dir);
    let inv = h.run(
        "clear-tmp",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "older_than_hours": 1000}),
        false,
    );
    assert_status(&inv, Status::NoOp);
    assert_eq!(inv.outcome.details["files_removed"], 0);
    assert_eq!(snapshot(&dir), before);
    assert!(calls(&inv, "filesystem", "unlink-file-at").is_empty());
}

#[test]
fn clear_tmp_is_refused_outside_the_policy_and_rejects_bad_params() {
    let h = Harness::new();
    let (dir, _) = tmp_tree(&h);
    let before = snapshot(&dir);
    let elsewhere = h.path("elsewhere");
    let inv = h.run(
        "clear-tmp",
        &write_policy(&[&elsewhere], false),
        json!({"dir": s(&dir), "older_than_hours": 24}),
        false,
    );
    assert_refused(&inv, &format!("write-dir {}", s(&dir)));
    assert_eq!(snapshot(&dir), before);
    // `..` in the param cannot widen the grant either.
    let sneaky = format!("{}/../tmp", s(&elsewhere));
    let inv = h.run(
        "clear-tmp",
        &write_policy(&[&elsewhere], false),
        json!({"dir": sneaky, "older_than_hours": 24}),
        false,
    );
    assert_eq!(inv.outcome.status, Status::Refused, "{}", pretty(&inv));
    assert_eq!(snapshot(&dir), before);

    let policy = write_policy(&[&dir], false);
    let d = s(&dir);
    assert_rejected(
        &h,
        "clear-tmp",
        &policy,
        &[
            json!({"dir": d}),
            json!({"dir": d, "older_than_hours": 0}),
            json!({"dir": d, "older_than_hours": "24"}),
            json!({"dir": d, "older_than_hours": 1.5}),
            json!({"dir": d, "older_than_hours": 24, "max_files": 0}),
            json!({"dir": "tmp", "older_than_hours": 24}),
            json!({"dir": d, "older_than_hours": 24, "recursive": false}),
        ],
    );
}

// ----- clear-cache -------------------------------------------------------------------

fn cache_tree(h: &Harness) -> (PathBuf, PathBuf) {
    let dir = h.path("cache");
    let outside = h.path("outside");
    file(&outside.join("target.bin"), 10, 5);
    file(&dir.join("a.bin"), 100, 4);
    file(&dir.join("b.bin"), 100, 3);
    file(&dir.join("sub/c.bin"), 100, 2);
    file(&dir.join("sub/deeper/d.bin"), 100, 1);
    std::os::unix::fs::symlink(outside.join("target.bin"), dir.join("sub/link")).unwrap();
    (dir, outside)
}

#[test]
fn clear_cache_empties_the_directory_but_keeps_it_and_link_targets() {
    let h = Harness::new();
    let (dir, outside) = cache_tree(&h);
    let inv = h.run(
        "clear-cache",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir)}),
        false,
    );
    assert_status(&inv, Status::Healed);
    assert!(dir.is_dir(), "the cache directory itself stays");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "{:?}",
        snapshot(&dir)
    );
    assert_eq!(
        fs::read(outside.join("target.bin")).unwrap(),
        vec![b'x'; 10],
        "a link's target is never touched"
    );
    let d = &inv.outcome.details;
    assert_eq!(d["files_removed"], 4, "{}", pretty(&inv));
    assert_eq!(d["bytes_freed"], 400);
    assert_eq!(d["bytes_after"], 0);
    assert_eq!(d["links_removed"], 1);
    assert_eq!(d["dirs_removed"], 2);
    assert!(
        inv.outcome.summary.contains("cache emptied"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(mutated(&inv, "unlink-file-at").len(), 5);
    assert_eq!(
        mutated(&inv, "remove-directory-at"),
        [s(&dir.join("sub/deeper")), s(&dir.join("sub"))]
    );

    let again = h.run(
        "clear-cache",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir)}),
        false,
    );
    assert_status(&again, Status::NoOp);
    assert!(
        again.outcome.summary.contains("already empty"),
        "{}",
        again.outcome.summary
    );
}

#[test]
fn clear_cache_trims_oldest_first_down_to_max_bytes() {
    let h = Harness::new();
    let (dir, _) = cache_tree(&h);
    let inv = h.run(
        "clear-cache",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "max_bytes": 250}),
        false,
    );
    assert_status(&inv, Status::Healed);
    assert!(
        !dir.join("a.bin").exists() && !dir.join("b.bin").exists(),
        "the two oldest go"
    );
    assert!(
        dir.join("sub/c.bin").exists()
            && dir.join("sub/deeper/d.bin").exists()
            && dir.join("sub/link").exists()
    );
    let d = &inv.outcome.details;
    assert_eq!(d["bytes_before"], 400);
    assert_eq!(d["bytes_after"], 200);
    assert_eq!(d["files_removed"], 2);
    assert_eq!(d["removed"][0]["path"], s(&dir.join("a.bin")));

    let within = h.run(
        "clear-cache",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir), "max_bytes": 200}),
        false,
    );
    assert_status(&within, Status::NoOp);
    assert!(
        within.outcome.summary.contains("within max_bytes"),
        "{}",
        within.outcome.summary
    );
    assert!(calls(&within, "filesystem", "unlink-file-at").is_empty());
}

#[test]
fn clear_cache_dry_run_changes_nothing_and_refusal_and_params() {
    let h = Harness::new();
    let (dir, _) = cache_tree(&h);
    let before = snapshot(&dir);
    let dry = h.run(
        "clear-cache",
        &write_policy(&[&dir], false),
        json!({"dir": s(&dir)}),
        true,
    );
    assert_status(&dry, Status::Healed);
    assert_eq!(snapshot(&dir), before);
    assert_eq!(dry.outcome.details["files_removed"], 4);
    assert_eq!(dry.outcome.details["dirs_removed"], 2);
    assert_all_simulated(&dry);

    let other = h.path("other");
    let inv = h.run(
        "clear-cache",
        &write_policy(&[&other], false),
        json!({"dir": s(&dir)}),
        false,
    );
    assert_refused(&inv, &format!("write-dir {}", s(&dir)));
    assert_eq!(snapshot(&dir), before);

    assert_rejected(
        &h,
        "clear-cache",
        &write_policy(&[&dir], false),
        &[
            json!({}),
            json!({"dir": s(&dir), "max_bytes": -1}),
            json!({"dir": s(&dir), "max_bytes": "1G"}),
            json!({"dir": "cache"}),
            json!({"dir": s(&dir), "all": true}),
        ],
    );
}

// ----- renew-cert --------------------------------------------------------------------

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A PEM certificate valid for `days` from now when openssl exists; otherwise the
/// vendored one (`data/`): expired on 2020-03-01 for short lives, valid until 2099 otherwise.
fn cert(days: u32, out: &Path) {
    if let Some(p) = out.parent() {
        fs::create_dir_all(p).unwrap();
    }
    if openssl_available() {
        let key = out.with_extension("key");
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=clinic.test",
                "-days",
                &days.to_string(),
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(out)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        fs::remove_file(key).unwrap();
    } else {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/data");
        let src = if days < 60 {
            "expired-2020-03-01.pem"
        } else {
            "valid-until-2099-12-31.pem"
        };
        fs::copy(data.join(src), out).unwrap();
    }
}

/// certbot's layout: `live/NAME/cert.pem` is a symlink into `archive/NAME/`.
struct Certbot {
    root: PathBuf,
    live: PathBuf,
    script: PathBuf,
    calls: PathBuf,
}

/// A certbot stand-in: records its argv, and on `renew` installs `archive/NAME/cert2.pem`
/// (valid for a year) by moving the live symlink, unless told to fail or do nothing.
fn certbot(h: &Harness, days_left: u32, behaviour: &str) -> Certbot {
    let root = h.path("letsencrypt");
    cert(days_left, &root.join("archive/clinic/cert1.pem"));
    cert(365, &root.join("archive/clinic/cert2.pem"));
    fs::create_dir_all(root.join("live/clinic")).unwrap();
    std::os::unix::fs::symlink(
        "../../archive/clinic/cert1.pem",
        root.join("live/clinic/cert.pem"),
    )
    .unwrap();
    let bin = h.path("bin");
    let script = bin.join("certbot");
    let calls = bin.join("calls");
    let r = root.display();
    let action = match behaviour {
        "renew" => format!("ln -sf ../../archive/clinic/cert2.pem {r}/live/clinic/cert.pem"),
        "nothing" => "echo 'Certificate not yet due for renewal'".to_string(),
        "fail" => "echo 'Challenge failed for domain clinic.test' >&2; exit 1".to_string(),
        other => panic!("unknown behaviour {other}"),
    };
    fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\n{action}\n", calls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    Certbot {
        live: root.join("live/clinic/cert.pem"),
        root,
        script,
        calls,
    }
}

impl Certbot {
    fn policy(&self) -> String {
        format!(
            "host_id = \"t\"\n[grants]\nread_dirs = [{}]\n[[grants.exec]]\nprogram = {}\nargs = [\"renew\", \"--cert-name\", \"*\"]\n",
            toml_path(&self.root),
            toml_path(&self.script)
        )
    }
    fn params(&self, threshold: u32) -> Value {
        json!({"cert_dir": s(&self.root), "cert_path": s(&self.live), "cert_name": "clinic",
               "threshold_days": threshold, "program": s(&self.script)})
    }
    fn calls(&self) -> String {
        fs::read_to_string(&self.calls).unwrap_or_default()
    }
}

#[test]
fn renew_cert_renews_a_certificate_close_to_expiry_and_checks_the_new_one() {
    let h = Harness::new();
    let cb = certbot(&h, 5, "renew");
    let inv = h.run("renew-cert", &cb.policy(), cb.params(30), false);
    assert_status(&inv, Status::Healed);
    assert_eq!(cb.calls(), "renew --cert-name clinic\n");
    let d = &inv.outcome.details;
    assert!(
        d["before"]["days_left"].as_i64().unwrap() < 30,
        "{}",
        pretty(&inv)
    );
    assert!(d["after"]["days_left"].as_i64().unwrap() >= 300);
    assert_eq!(d["changed"], true);
    assert_eq!(d["exit_code"], 0);
    assert!(
        inv.outcome
            .summary
            .starts_with("renewed certificate clinic"),
        "{}",
        inv.outcome.summary
    );

    let exec = calls(&inv, "exec", "run");
    assert_eq!(exec.len(), 1);
    assert_eq!(exec[0].args["program"], s(&cb.script));
    assert_eq!(
        exec[0].args["args"],
        json!(["renew", "--cert-name", "clinic"])
    );
    assert!(exec[0].allowed && !exec[0].dry_run);
    // The certificate was read before and after, through the live symlink.
    let reads = calls(&inv, "filesystem", "open-at")
        .iter()
        .filter(|e| e.args["path"] == s(&cb.live))
        .count();
    assert_eq!(reads, 2, "{}", pretty(&inv));
}

#[test]
fn renew_cert_is_a_no_op_for_a_certificate_far_from_expiry() {
    let h = Harness::new();
    let cb = certbot(&h, 200, "renew");
    let inv = h.run("renew-cert", &cb.policy(), cb.params(30), false);
    assert_status(&inv, Status::NoOp);
    assert!(
        calls(&inv, "exec", "run").is_empty(),
        "nothing to renew, nothing run"
    );
    assert_eq!(cb.calls(), "");
    assert!(inv.outcome.details["before"]["days_left"].as_i64().unwrap() >= 30);
    assert!(
        inv.outcome.summary.contains("nothing to renew"),
        "{}",
        inv.outcome.summary
    );
}

#[test]
fn renew_cert_reads_the_expiry_exactly() {
    // The vendored certificate's dates are known to the second (see data/README.md).
    let h = Harness::new();
    let dir = h.path("certs");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/data");
    fs::copy(
        data.join("valid-until-2099-12-31.pem"),
        dir.join("cert.pem"),
    )
    .unwrap();
    let policy = format!(
        "host_id = \"t\"\n[grants]\nread_dirs = [{}]\n[[grants.exec]]\nprogram = \"/usr/bin/certbot\"\nargs = [\"renew\", \"--cert-name\", \"*\"]\n",
        toml_path(&dir)
    );
    let params = json!({"cert_dir": s(&dir), "cert_path": s(&dir.join("cert.pem")), "cert_name": "long.test", "program": "/usr/bin/certbot"});
    let inv = h.run("renew-cert", &policy, params, false);
    assert_status(&inv, Status::NoOp);
    let before = &inv.outcome.details["before"];
    assert_eq!(
        before["not_after"],
        "2099-12-31T23:59:59Z",
        "{}",
        pretty(&inv)
    );
    assert_eq!(before["not_before"], "2024-01-01T00:00:00Z");
    assert_eq!(before["subject_cn"], "long.test");
    assert_eq!(before["serial"], "1001");
    assert_eq!(
        inv.outcome.details["threshold_days"], 30,
        "the default threshold"
    );

    // An expired certificate has negative days left and is due.
    fs::copy(data.join("expired-2020-03-01.pem"), dir.join("cert.pem")).unwrap();
    let params = json!({"cert_dir": s(&dir), "cert_path": s(&dir.join("cert.pem")), "cert_name": "expired.test", "program": "/nonexistent/certbot"});
    let policy = format!(
        "host_id = \"t\"\n[grants]\nread_dirs = [{}]\n[[grants.exec]]\nprogram = \"/nonexistent/certbot\"\nargs = [\"renew\", \"--cert-name\", \"*\"]\n",
        toml_path(&dir)
    );
    let inv = h.run("renew-cert", &policy, params, false);
    assert_status(&inv, Status::Failed);
    assert_eq!(
        inv.outcome.details["before"]["not_after"],
        "2020-03-01T00:00:00Z"
    );
    assert!(inv.outcome.details["before"]["days_left"].as_i64().unwrap() < -2000);
    assert!(
        inv.outcome
            .summary
            .contains("could not run /nonexistent/certbot"),
        "{}",
        inv.outcome.summary
    );
}

#[test]
fn renew_cert_reports_a_failing_or_idle_renew_command() {
    let h = Harness::new();
    let cb = certbot(&h, 5, "fail");
    let inv = h.run("renew-cert", &cb.policy(), cb.params(30), false);
    assert_status(&inv, Status::Failed);
    assert!(
        inv.outcome.summary.contains("exited with 1"),
        "{}",
        inv.outcome.summary
    );
    assert!(
        inv.outcome.summary.contains("Challenge failed"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(inv.outcome.details["exit_code"], 1);
    assert!(inv.outcome.details.get("after").is_none());

    let h = Harness::new();
    let cb = certbot(&h, 5, "nothing");
    let inv = h.run("renew-cert", &cb.policy(), cb.params(30), false);
    assert_status(&inv, Status::Failed);
    assert!(
        inv.outcome.summary.contains("unchanged"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(inv.outcome.details["changed"], false);
    assert_eq!(cb.calls(), "renew --cert-name clinic\n");
}

#[test]
fn renew_cert_dry_run_only_simulates_the_renew_command() {
    let h = Harness::new();
    let cb = certbot(&h, 5, "renew");
    let before = snapshot(&cb.root);
    let inv = h.run("renew-cert", &cb.policy(), cb.params(30), true);
    // The certificate cannot change in a dry run: reported as failed, saying why.
    assert_status(&inv, Status::Failed);
    assert!(
        inv.outcome.summary.contains("unchanged") && inv.outcome.summary.contains("dry run"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(cb.calls(), "", "the program must not run in a dry run");
    assert_eq!(snapshot(&cb.root), before);
    let exec = calls(&inv, "exec", "run");
    assert_eq!(exec.len(), 1);
    assert!(exec[0].dry_run && exec[0].allowed);
}

#[test]
fn renew_cert_keeps_to_its_grant() {
    let h = Harness::new();
    let cb = certbot(&h, 5, "renew");
    // A policy without the program: refused before anything runs.
    let no_exec = format!(
        "host_id = \"t\"\n[grants]\nread_dirs = [{}]\n",
        toml_path(&cb.root)
    );
    let inv = h.run("renew-cert", &no_exec, cb.params(30), false);
    assert_refused(
        &inv,
        &format!("exec {} renew --cert-name clinic", s(&cb.script)),
    );
    assert_eq!(cb.calls(), "");

    // A cert_path outside cert_dir is the guest's own invalid-params error.
    let outside = h.path("elsewhere");
    cert(5, &outside.join("cert.pem"));
    let mut params = cb.params(30);
    params["cert_path"] = json!(s(&outside.join("cert.pem")));
    let inv = h.run("renew-cert", &cb.policy(), params, false);
    assert_eq!(
        inv.outcome.status,
        Status::InvalidParams,
        "{}",
        pretty(&inv)
    );
    assert!(inv.fuel_consumed > 0, "the runbook itself rejected them");
    assert_eq!(inv.outcome.details["error"], "invalid-params");
    assert!(
        inv.outcome.summary.contains("is not inside cert_dir"),
        "{}",
        inv.outcome.summary
    );
    assert!(calls(&inv, "exec", "run").is_empty());
    assert_eq!(cb.calls(), "");

    let policy = cb.policy();
    let with = |k: &str, v: Value| {
        let mut p = cb.params(30);
        p[k] = v;
        p
    };
    let mut missing = cb.params(30);
    missing.as_object_mut().unwrap().remove("cert_name");
    assert_rejected(
        &h,
        "renew-cert",
        &policy,
        &[
            missing,
            with("cert_name", json!("--force-renewal")),
            with("cert_name", json!("clinic other")),
            with("threshold_days", json!(0)),
            with("threshold_days", json!(400)),
            with("program", json!("certbot")),
            with(
                "cert_path",
                json!(s(&cb.root.join("live/clinic/privkey.key"))),
            ),
            with("extra", json!(1)),
        ],
    );
}

/// `program` defaults to /usr/bin/certbot in the schema, and the guest uses that default.
/// The grant must be resolved with it too: a policy granting /usr/bin/certbot must let
/// the run through when `program` is omitted.
#[test]
fn renew_cert_default_program_is_granted_by_a_policy_naming_certbot() {
    let h = Harness::new();
    let dir = h.path("certs");
    cert(365, &dir.join("cert.pem"));
    let policy = format!(
        "host_id = \"t\"\n[grants]\nread_dirs = [{}]\n[[grants.exec]]\nprogram = \"/usr/bin/certbot\"\nargs = [\"renew\", \"--cert-name\", \"*\"]\n",
        toml_path(&dir)
    );
    let params =
        json!({"cert_dir": s(&dir), "cert_path": s(&dir.join("cert.pem")), "cert_name": "clinic"});
    let inv = h.run("renew-cert", &policy, params, false);
    assert_status(&inv, Status::NoOp);
    let grant = inv.grant.as_ref().unwrap();
    assert_eq!(grant.exec[0].program, "/usr/bin/certbot");
}

// ----- verify-health -----------------------------------------------------------------

enum Reply {
    /// Answer with this status and body.
    Status(u16, &'static str),
    /// Accept, read the request, never answer (until the test ends).
    Hang,
}

/// A loopback HTTP server answering one connection per reply, in order, then stopping.
/// Returns its origin and a handle yielding the request lines it saw.
fn serve(replies: Vec<Reply>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        let mut hung = Vec::new();
        for reply in replies {
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return seen,
                }
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
            seen.push(
                String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            match reply {
                Reply::Status(code, body) => {
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes());
                }
                Reply::Hang => hung.push(conn),
            }
        }
        if !hung.is_empty() {
            // Keep unanswered connections open long enough for the client to time out.
            std::thread::sleep(Duration::from_secs(3));
        }
        seen
    });
    (origin, handle)
}

fn http_policy(origin: &str) -> String {
    format!("host_id = \"t\"\n[grants]\nhttp = [{origin:?}]\n")
}

#[test]
fn verify_health_is_a_no_op_for_a_healthy_endpoint() {
    let h = Harness::new();
    let (origin, server) = serve(vec![Reply::Status(
        200,
        "{\"db\":\"up\",\"last_patient\":\"PATIENT-4711\"}",
    )]);
    let url = format!("{origin}/health");
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": url, "expect_body_contains": "\"db\":\"up\""}),
        false,
    );
    assert_status(&inv, Status::NoOp);
    assert_eq!(server.join().unwrap(), ["GET /health HTTP/1.1"]);
    let attempts = inv.outcome.details["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(attempts[0]["body_ok"], true);
    let sends = calls(&inv, "http", "send");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].args["method"], "GET");
    assert_eq!(sends[0].args["url"], url);
    assert_eq!(sends[0].result["status"], 200);
    assert!(
        inv.outcome.summary.contains("is healthy"),
        "{}",
        inv.outcome.summary
    );
    assert!(
        !pretty(&inv).contains("PATIENT-4711"),
        "bodies are never copied into the outcome or the trace"
    );
}

#[test]
fn verify_health_retries_until_the_endpoint_recovers() {
    let h = Harness::new();
    let (origin, server) = serve(vec![
        Reply::Status(503, "starting"),
        Reply::Status(502, "bad gateway"),
        Reply::Status(200, "ok"),
    ]);
    let url = format!("{origin}/");
    let started = Instant::now();
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": url, "attempts": 5}),
        true,
    );
    assert_status(&inv, Status::NoOp);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "two pauses between three attempts"
    );
    assert_eq!(
        server.join().unwrap().len(),
        3,
        "a GET is real even in a dry run"
    );
    let statuses: Vec<&Value> = inv.outcome.details["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(503), &json!(502), &json!(200)]);
    assert_eq!(calls(&inv, "http", "send").len(), 3);
    assert!(
        inv.outcome.summary.contains("attempt 3 of 5"),
        "{}",
        inv.outcome.summary
    );
}

#[test]
fn verify_health_fails_on_wrong_status_body_or_no_answer() {
    let h = Harness::new();
    let (origin, server) = serve(vec![Reply::Status(500, "err"), Reply::Status(500, "err")]);
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": format!("{origin}/health"), "attempts": 2}),
        false,
    );
    assert_status(&inv, Status::Failed);
    assert_eq!(server.join().unwrap().len(), 2);
    assert!(
        inv.outcome
            .summary
            .contains("unhealthy after 2 attempt(s): status 500, expected 200"),
        "{}",
        inv.outcome.summary
    );
    assert_eq!(inv.outcome.details["attempts"].as_array().unwrap().len(), 2);

    let (origin, _server) = serve(vec![Reply::Status(200, "maintenance mode")]);
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": format!("{origin}/"), "attempts": 1, "expect_body_contains": "ready"}),
        false,
    );
    assert_status(&inv, Status::Failed);
    assert_eq!(inv.outcome.details["attempts"][0]["status_ok"], true);
    assert_eq!(inv.outcome.details["attempts"][0]["body_ok"], false);
    assert!(
        inv.outcome
            .summary
            .contains("body does not contain \"ready\""),
        "{}",
        inv.outcome.summary
    );

    let (origin, _server) = serve(vec![Reply::Status(204, "")]);
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": format!("{origin}/"), "attempts": 1, "expect_status": 204}),
        false,
    );
    assert_status(&inv, Status::NoOp);

    // Accepts and never answers: each attempt times out.
    let (origin, _server) = serve(vec![Reply::Hang]);
    let started = Instant::now();
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": format!("{origin}/"), "attempts": 1, "timeout_ms": 300}),
        false,
    );
    assert_status(&inv, Status::Failed);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        inv.outcome.details["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{}",
        pretty(&inv)
    );

    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = format!("http://127.0.0.1:{port}");
    let inv = h.run(
        "verify-health",
        &http_policy(&origin),
        json!({"url": format!("{origin}/"), "attempts": 2}),
        false,
    );
    assert_status(&inv, Status::Failed);
    assert!(
        inv.outcome.details["attempts"][1]["error"].is_string(),
        "{}",
        pretty(&inv)
    );
}

#[test]
fn verify_health_is_refused_for_an_origin_not_granted_and_rejects_bad_params() {
    let h = Harness::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let inv = h.run(
        "verify-health",
        &http_policy("http://127.0.0.1:1"),
        json!({"url": format!("{origin}/health")}),
        false,
    );
    assert_refused(&inv, &format!("http {origin}/health"));
    listener.set_nonblocking(true).unwrap();
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock),
        "nothing may connect"
    );

    let policy = http_policy(&origin);
    let url = format!("{origin}/");
    assert_rejected(
        &h,
        "verify-health",
        &policy,
        &[
            json!({}),
            json!({"url": "ftp://127.0.0.1/"}),
            json!({"url": "127.0.0.1:80/health"}),
            json!({"url": url, "attempts": 0}),
            json!({"url": url, "attempts": 11}),
            json!({"url": url, "expect_status": 99}),
            json!({"url": url, "expect_status": 600}),
            json!({"url": url, "timeout_ms": 10}),
            json!({"url": url, "expect_body_contains": ""}),
            json!({"url": url, "method": "POST"}),
        ],
    );
}

// ----- disk-cleanup ------------------------------------------------------------------

/// A small tmpfs mounted for one test, unmounted on drop. `None` when this host cannot
/// mount (not root, or no CAP_SYS_ADMIN in the container).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, bytes: u64) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

const MIB: usize = 1 << 20;

fn cleanup_params(dir: &Path, target: f64) -> Value {
    json!({"dir": s(dir), "target_free_percent": target, "min_age_hours": 24})
}

fn removed_paths(inv: &Invocation) -> Vec<String> {
    inv.outcome.details["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn disk_cleanup_deletes_largest_old_files_until_the_target_is_reached() {
    let h = Harness::new();
    let at = h.path("fs");
    let Some(_mnt) = Tmpfs::mount(at.clone(), 8 * MIB as u64) else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the real-disk tests below still run"
        );
        return;
    };
    // 8 MiB filesystem, 7 MiB used: 12.5% free.
    file(&at.join("backups/big.tar"), 3 * MIB, 48);
    file(&at.join("backups/mid.tar"), 2 * MIB, 72);
    file(&at.join("small.log"), MIB / 2, 100);
    file(&at.join("fresh.tar"), MIB + MIB / 2, 1);
    let policy = write_policy(&[&at], true);

    let dry = h.run("disk-cleanup", &policy, cleanup_params(&at, 60.0), true);
    assert_eq!(
        dry.outcome.status,
        Status::Failed,
        "a dry run frees nothing: {}",
        pretty(&dry)
    );
    assert!(
        dry.outcome.summary.contains("dry run"),
        "{}",
        dry.outcome.summary
    );
    assert_eq!(
        removed_paths(&dry),
        [
            s(&at.join("backups/big.tar")),
            s(&at.join("backups/mid.tar"))
        ]
    );
    assert!(at.join("backups/big.tar").exists() && at.join("backups/mid.tar").exists());
    assert_all_simulated(&dry);

    let inv = h.run("disk-cleanup", &policy, cleanup_params(&at, 60.0), false);
    assert_status(&inv, Status::Healed);
    // Largest first (big before mid), stopping once 60% would be free: small.log and the young file stay.
    assert_eq!(
        removed_paths(&inv),
        [
            s(&at.join("backups/big.tar")),
            s(&at.join("backups/mid.tar"))
        ]
    );
    assert!(!at.join("backups/big.tar").exists() && !at.join("backups/mid.tar").exists());
    assert!(at.join("small.log").exists() && at.join("fresh.tar").exists());
    assert!(at.join("backups").is_dir(), "directories stay");
    let d = &inv.outcome.details;
    assert_eq!(d["files_removed"], 2);
    assert_eq!(d["freed_bytes"], 5 * MIB);
    assert_eq!(d["too_young"], 1);
    let (before, after) = (
        d["before"]["free_percent"].as_f64().unwrap(),
        d["after"]["free_percent"].as_f64().unwrap(),
    );
    assert!(before < 15.0 && after >= 60.0, "{before} → {after}");
    let probes = calls(&inv, "probe", "disk-usage");
    assert_eq!(probes.len(), 2, "measured before and after");
    assert_eq!(probes[0].args["path"], s(&at));

    // Now above target: nothing to do.
    let again = h.run("disk-cleanup", &policy, cleanup_params(&at, 60.0), false);
    assert_status(&again, Status::NoOp);
    assert!(calls(&again, "filesystem", "unlink-file-at").is_empty());
}

#[test]
fn disk_cleanup_respects_the_pattern_and_reports_an_unreachable_target() {
    let h = Harness::new();
    let dir = h.path("srv");
    file(&dir.join("a.log.gz"), 3000, 48);
    file(&dir.join("nested/b.log.gz"), 5000, 48);
    file(&dir.join("c.log.gz"), 1000, 48);
    file(&dir.join("young.log.gz"), 9000, 2);
    file(&dir.join("database.sqlite"), 20000, 480);
    let before = snapshot(&dir);
    let params = json!({"dir": s(&dir), "target_free_percent": 99, "pattern": "*.gz"});
    let policy = write_policy(&[&dir], true);

    let dry = h.run("disk-cleanup", &policy, params.clone(), true);
    assert_eq!(snapshot(&dir), before, "a dry run deletes nothing");
    assert_eq!(dry.outcome.details["files_removed"], 3, "{}", pretty(&dry));

    // No real disk is 99% free: every eligible file goes, largest first, and the run
    // says the target was not reached.
    let inv = h.run("disk-cleanup", &policy, params, false);
    assert_status(&inv, Status::Failed);
    assert_eq!(
        removed_paths(&inv),
        [
            s(&dir.join("nested/b.log.gz")),
            s(&dir.join("a.log.gz")),
            s(&dir.join("c.log.gz"))
        ]
    );
    assert!(
        dir.join("young.log.gz").exists(),
        "younger than min_age_hours (default 24)"
    );
    assert!(
        dir.join("database.sqlite").exists(),
        "does not match the pattern"
    );
    assert_eq!(inv.outcome.details["freed_bytes"], 9000);
    assert!(
        inv.outcome.summary.contains("every eligible file is gone"),
        "{}",
        inv.outcome.summary
    );
    let mut unlinked = mutated(&inv, "unlink-file-at");
    unlinked.sort();
    assert_eq!(unlinked.len(), 3);

    // Nothing left to delete: failed, saying so.
    let inv = h.run(
        "disk-cleanup",
        &policy,
        json!({"dir": s(&dir), "target_free_percent": 99, "pattern": "*.gz"}),
        false,
    );
    assert_status(&inv, Status::Failed);
    assert!(
        inv.outcome
            .summary
            .contains("no file older than 24 h matching *.gz"),
        "{}",
        inv.outcome.summary
    );
}

#[test]
fn disk_cleanup_is_a_no_op_above_target_and_keeps_to_its_grant() {
    let h = Harness::new();
    let dir = h.path("srv");
    file(&dir.join("old.bin"), 1000, 100);
    let before = snapshot(&dir);
    let inv = h.run(
        "disk-cleanup",
        &write_policy(&[&dir], true),
        json!({"dir": s(&dir), "target_free_percent": 0.01}),
        false,
    );
    assert_status(&inv, Status::NoOp);
    assert_eq!(snapshot(&dir), before);
    assert_eq!(calls(&inv, "probe", "disk-usage").len(), 1);
    assert!(
        inv.outcome.details["before"]["free_percent"]
            .as_f64()
            .unwrap()
            > 0.01
    );

    // Probe not granted, or the directory not granted: refused.
    let inv = h.run(
        "disk-cleanup",
        &write_policy(&[&dir], false),
        cleanup_params(&dir, 99.0),
        false,
    );
    assert_refused(&inv, "probe");
    let other = h.path("other");
    let inv = h.run(
        "disk-cleanup",
        &write_policy(&[&other], true),
        cleanup_params(&dir, 99.0),
        false,
    );
    assert_refused(&inv, &format!("write-dir {}", s(&dir)));
    assert_eq!(snapshot(&dir), before);

    let d = s(&dir);
    assert_rejected(
        &h,
        "disk-cleanup",
        &write_policy(&[&dir], true),
        &[
            json!({"dir": d}),
            json!({"dir": d, "target_free_percent": 0}),
            json!({"dir": d, "target_free_percent": 100}),
            json!({"dir": d, "target_free_percent": "50"}),
            json!({"dir": d, "target_free_percent": 50, "min_age_hours": -1}),
            json!({"dir": d, "target_free_percent": 50, "pattern": "a/b"}),
            json!({"dir": d, "target_free_percent": 50, "dirs": [d]}),
        ],
    );
}
