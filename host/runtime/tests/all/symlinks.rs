//! Host programs steered out of the grants through links, and runs blocked on FIFOs
//! (`tests/guests/adv-links`). Granted commands and the service backend run with
//! runwarden's rights and follow links, so every test checks from the outside that a
//! file outside every grant (`victim.txt`) is untouched, and from the trace that each
//! refusal was recorded with `allowed = false` and a reason.
use super::*;
use runwarden_runtime::TraceEntry;
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;

const VICTIM: &str = "VICTIM-UNTOUCHED\n";

/// A temp tree: `granted/` (read grant), `w/` (write grant root), `victim.txt` outside
/// both, `elsewhere/` outside both, and programs in `bin/` (outside both): `tool` appends
/// to the file it is given, `stamp` too (the service backend's `restart`).
struct Setup {
    h: Harness,
    x: PathBuf,
    granted: PathBuf,
    w: PathBuf,
    victim: PathBuf,
    tool: PathBuf,
}

fn setup() -> Setup {
    let h = Harness::new();
    let x = h.path("x");
    let granted = h.path("x/granted");
    let w = h.path("x/w");
    h.path("x/w/sub");
    h.path("x/elsewhere");
    h.path("x/bin");
    fs::write(w.join("sub/file.txt"), "inside").unwrap();
    let victim = x.join("victim.txt");
    fs::write(&victim, VICTIM).unwrap();
    fs::write(x.join("elsewhere/victim.txt"), VICTIM).unwrap();
    let tool = x.join("bin/tool");
    for (name, text) in [
        ("tool", "#!/bin/sh\necho appended >> \"$1\"\necho ok\n"),
        ("stamp", "#!/bin/sh\necho restarted >> \"$1\"\n"),
    ] {
        let p = x.join("bin").join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Setup {
        h,
        x,
        granted,
        w,
        victim,
        tool,
    }
}

fn q(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

impl Setup {
    /// The policy: `granted` readable, `w` writable, `tool` with exactly `arg`, and
    /// `web.service` whose restart runs `stamp w/state/web.service`.
    fn policy(&self, arg: &str) -> String {
        format!(
            r#"host_id = "links"
[grants]
read_dirs = [{g}]
write_dirs = [{w}]
services = ["web.service"]
[[grants.exec]]
program = {tool}
args = [{arg:?}]
[services]
backend = "command"
status = ["/bin/true"]
start = ["/bin/true"]
stop = ["/bin/true"]
reload = ["/bin/true"]
restart = [{stamp}, "{state}/{{unit}}"]
"#,
            g = q(&self.granted),
            w = q(&self.w),
            tool = q(&self.tool),
            stamp = q(&self.x.join("bin/stamp")),
            state = self.w.join("state").display(),
        )
    }

    fn params(&self, writable: &std::path::Path, arg: &str, steps: Value) -> Value {
        json!({"granted": self.granted, "writable": writable, "program": self.tool,
               "arg": arg, "unit": "web.service", "steps": steps})
    }

    /// Run adv-links with `steps`, writable `w`, under [`Setup::policy`].
    fn run(&self, arg: &str, steps: Value) -> Invocation {
        self.h.run(
            "adv-links",
            &self.policy(arg),
            self.params(&self.w, arg, steps),
            false,
        )
    }

    fn p(&self, rel: &str) -> String {
        self.w.join(rel).display().to_string()
    }

    #[track_caller]
    fn assert_victims_untouched(&self) {
        assert_eq!(fs::read_to_string(&self.victim).unwrap(), VICTIM);
        assert_eq!(
            fs::read_to_string(self.x.join("elsewhere/victim.txt")).unwrap(),
            VICTIM
        );
        let mut names: Vec<_> = fs::read_dir(&self.x)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["bin", "elsewhere", "granted", "victim.txt", "w"]);
    }
}

fn step(name: &str, expect: &str, op: &str, a: &str, b: &str) -> Value {
    json!({"name": name, "expect": expect, "op": op, "a": a, "b": b})
}

fn pretty(inv: &Invocation) -> String {
    serde_json::to_string_pretty(inv).unwrap()
}

/// Every attack was refused and every control worked, as the guest saw it.
#[track_caller]
fn assert_guest_report(inv: &Invocation, attacks: usize, controls: usize) {
    assert_status(inv, Status::NoOp);
    let d = &inv.outcome.details;
    let a = d["attacks"].as_object().unwrap();
    let c = d["controls"].as_object().unwrap();
    assert_eq!((a.len(), c.len()), (attacks, controls), "{}", pretty(inv));
    for (name, v) in c {
        assert_eq!(v["ok"], json!(true), "control {name}: {}", pretty(inv));
    }
}

/// The trace entry of `function` whose `paths[0]` (or `path`) is `path`.
#[track_caller]
fn entry<'a>(inv: &'a Invocation, function: &str, path: &str) -> &'a TraceEntry {
    inv.trace
        .iter()
        .find(|e| {
            e.function == function
                && (e.args["paths"][0] == json!(path) || e.args["path"] == json!(path))
        })
        .unwrap_or_else(|| panic!("no {function} of {path}: {}", pretty(inv)))
}

/// `function` on `path` was refused and traced with a message containing `why`.
#[track_caller]
fn assert_refused(inv: &Invocation, function: &str, path: &str, why: &str) {
    let e = entry(inv, function, path);
    assert!(!e.allowed, "{function} {path} allowed: {}", pretty(inv));
    let msg = e.result["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(why),
        "{function} {path}: {msg:?} does not say {why:?}"
    );
}

#[test]
fn chained_absolute_and_outward_links_are_refused_and_fifos_never_opened() {
    let s = setup();
    // Planted by others inside the grants: an absolute link out of the write grant, a
    // FIFO and a socket in it, and a FIFO in the read grant.
    symlink(s.x.join("elsewhere"), s.w.join("out")).unwrap();
    for p in [s.w.join("fifo"), s.granted.join("fifo")] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
    }
    let _listener = std::os::unix::net::UnixListener::bind(s.w.join("sock")).unwrap();
    let victim = s.victim.display().to_string();
    let g_fifo = s.granted.join("fifo").display().to_string();
    let steps = json!([
        step("up", "attack", "symlink", &s.p("up"), ".."),
        step(
            "chained",
            "attack",
            "symlink",
            &s.p("x"),
            "up/../../victim.txt"
        ),
        step(
            "dotdot-inside",
            "attack",
            "symlink",
            &s.p("sub/y"),
            "../sub/file.txt"
        ),
        step("absolute", "attack", "symlink", &s.p("abs"), &victim),
        step(
            "through-planted",
            "attack",
            "symlink",
            &s.p("via"),
            "out/victim.txt"
        ),
        step(
            "write-through-planted",
            "attack",
            "write",
            &s.p("out/victim.txt"),
            "pwned"
        ),
        step("open-fifo", "attack", "open", &s.p("fifo"), ""),
        step("write-fifo", "attack", "write", &s.p("fifo"), "x"),
        step("open-socket", "attack", "open", &s.p("sock"), ""),
        step("open-read-grant-fifo", "attack", "open", &g_fifo, ""),
        step("down", "control", "symlink", &s.p("down"), "sub/file.txt"),
        step("read-down", "control", "read", &s.p("down"), ""),
        step(
            "dangling-down",
            "control",
            "symlink",
            &s.p("later"),
            "new/file"
        ),
        step("open-dir", "control", "open", &s.p("sub"), ""),
    ]);

    let inv = s.run("unused", steps);

    assert_guest_report(&inv, 10, 4);
    s.assert_victims_untouched();
    assert!(!s.w.join("up").exists() && fs::symlink_metadata(s.w.join("x")).is_err());
    assert_eq!(
        fs::read_link(s.w.join("down")).unwrap(),
        PathBuf::from("sub/file.txt")
    );
    // Each refusal is traced with its reason; an allowed link records its target.
    assert_refused(&inv, "symlink-at", &s.p("up"), "`..`");
    assert_refused(&inv, "symlink-at", &s.p("x"), "`..`");
    assert_refused(&inv, "symlink-at", &s.p("sub/y"), "`..`");
    assert_refused(&inv, "symlink-at", &s.p("abs"), "absolute");
    assert_refused(&inv, "symlink-at", &s.p("via"), "leaves the grant");
    assert_eq!(
        entry(&inv, "symlink-at", &s.p("x")).args["target"],
        "up/../../victim.txt"
    );
    let down = entry(&inv, "symlink-at", &s.p("down"));
    assert!(down.allowed);
    assert_eq!(down.args["target"], "sub/file.txt");
    assert_refused(&inv, "open-at", &s.p("fifo"), "FIFO");
    assert_refused(&inv, "open-at", &s.p("sock"), "socket");
    assert_refused(&inv, "open-at", &g_fifo, "FIFO");
}

#[test]
fn links_are_renamed_and_hard_linked_only_when_they_cannot_lead_out() {
    let s = setup();
    // Left in the write grant by someone else: a link out through `..`.
    symlink("../victim.txt", s.w.join("planted")).unwrap();
    h_path(&s, "w/sub2");
    let steps = json!([
        step("plain", "control", "symlink", &s.p("sub/plain"), "file.txt"),
        step(
            "move-plain",
            "control",
            "rename",
            &s.p("sub/plain"),
            &s.p("sub2/plain")
        ),
        step(
            "nested",
            "control",
            "symlink",
            &s.p("nested"),
            "sub/file.txt"
        ),
        step(
            "move-nested",
            "attack",
            "rename",
            &s.p("nested"),
            &s.p("sub/nested")
        ),
        step(
            "move-planted",
            "attack",
            "rename",
            &s.p("planted"),
            &s.p("sub/planted")
        ),
        step(
            "hardlink-planted",
            "attack",
            "hardlink",
            &s.p("planted"),
            &s.p("hard")
        ),
        step(
            "hardlink-link",
            "attack",
            "hardlink",
            &s.p("nested"),
            &s.p("hard2")
        ),
        step(
            "hardlink-dir",
            "attack",
            "hardlink",
            &s.p("sub"),
            &s.p("hard-dir")
        ),
        step(
            "hardlink-file",
            "control",
            "hardlink",
            &s.p("sub/file.txt"),
            &s.p("file-hard")
        ),
        step("move-dir", "control", "rename", &s.p("sub2"), &s.p("sub3")),
    ]);

    let inv = s.run("unused", steps);

    assert_guest_report(&inv, 5, 5);
    s.assert_victims_untouched();
    assert_eq!(
        fs::read_link(s.w.join("planted")).unwrap(),
        PathBuf::from("../victim.txt")
    );
    assert!(fs::symlink_metadata(s.w.join("sub/planted")).is_err());
    assert!(fs::symlink_metadata(s.w.join("sub/nested")).is_err());
    assert!(fs::symlink_metadata(s.w.join("hard")).is_err());
    assert_eq!(fs::read_to_string(s.w.join("file-hard")).unwrap(), "inside");
    assert_eq!(
        fs::read_link(s.w.join("sub3/plain")).unwrap(),
        PathBuf::from("file.txt")
    );
    assert_refused(&inv, "rename-at", &s.p("nested"), "plain name");
    assert_refused(&inv, "rename-at", &s.p("planted"), "plain name");
    for old in ["planted", "nested", "sub"] {
        let e = entry(&inv, "link-at", &s.p(old));
        assert!(!e.allowed, "hard link of {old}: {}", pretty(&inv));
    }
    assert_refused(&inv, "link-at", &s.p("sub"), "regular files");
}

fn h_path(s: &Setup, rel: &str) -> PathBuf {
    s.h.path(&format!("x/{rel}"))
}

#[test]
fn host_programs_are_handed_no_path_through_a_link() {
    let s = setup();
    h_path(&s, "w/out");
    h_path(&s, "w/state");
    let arg = s.p("out/log.txt");
    let steps = json!([
        step("exec-real-dir", "control", "exec", &arg, ""),
        step("restart-real-dir", "control", "restart", "web.service", ""),
        // The guest moves the directories away and puts links in their place. The links
        // point down (they are allowed), but the programs are then handed paths through
        // links, which a later swap could turn anywhere: refused.
        step(
            "move-out",
            "control",
            "rename",
            &s.p("out"),
            &s.p("real-out")
        ),
        step("link-out", "control", "symlink", &s.p("out"), "real-out"),
        step("exec-through-link", "attack", "exec", &arg, ""),
        step(
            "move-state",
            "control",
            "rename",
            &s.p("state"),
            &s.p("real-state")
        ),
        step(
            "link-state",
            "control",
            "symlink",
            &s.p("state"),
            "real-state"
        ),
        step(
            "restart-through-link",
            "attack",
            "restart",
            "web.service",
            ""
        ),
    ]);

    let inv = s.run(&arg, steps);

    assert_guest_report(&inv, 2, 6);
    s.assert_victims_untouched();
    // Each program ran once, before the links.
    assert_eq!(
        fs::read_to_string(s.w.join("real-out/log.txt")).unwrap(),
        "appended\n"
    );
    assert_eq!(
        fs::read_to_string(s.w.join("real-state/web.service")).unwrap(),
        "restarted\n"
    );
    let denied: Vec<_> = inv.trace.iter().filter(|e| !e.allowed).collect();
    assert_eq!(denied.len(), 2, "{}", pretty(&inv));
    for e in denied {
        let msg = e.result["message"].as_str().unwrap_or("");
        assert!(msg.contains("passes through a symlink"), "{msg}");
    }
}

/// The one `exec`/`run` call in the trace.
#[track_caller]
fn exec_call(inv: &Invocation) -> &TraceEntry {
    let runs: Vec<_> = inv.trace.iter().filter(|e| e.interface == "exec").collect();
    assert_eq!(runs.len(), 1, "{}", pretty(inv));
    runs[0]
}

/// Invoke adv-links under an already parsed policy (so the files can change after it
/// was checked).
fn run_with(s: &Setup, policy: &Arc<Policy>, params: Value) -> Invocation {
    let loaded =
        s.h.rt
            .load(&runwarden_test_artifacts::bytes("adv-links"))
            .unwrap();
    s.h.rt.invoke(
        &loaded,
        policy,
        RunOptions {
            params,
            dry_run: false,
            invocation_id: None,
        },
    )
}

#[test]
fn swapped_or_writable_programs_do_not_run() {
    let s = setup();
    let arg = s.victim.display().to_string();
    // Loading refuses a program inside a write grant, by name and through a link.
    let mut inside = s.policy(&arg).replace(&q(&s.tool), &q(&s.w.join("tool")));
    let err = Policy::parse(&inside).unwrap_err().to_string();
    assert!(
        err.contains("grants.exec") && err.contains("write_dirs"),
        "{err}"
    );
    fs::write(s.w.join("tool"), "#!/bin/sh\necho appended >> \"$1\"\n").unwrap();
    fs::set_permissions(s.w.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink(s.w.join("tool"), s.x.join("bin/alias")).unwrap();
    inside = s
        .policy(&arg)
        .replace(&q(&s.tool), &q(&s.x.join("bin/alias")));
    let err = Policy::parse(&inside).unwrap_err().to_string();
    assert!(err.contains("resolves to"), "{err}");
    fs::remove_file(s.x.join("bin/alias")).unwrap();

    // After loading, the granted program is swapped for a link into the write grant.
    let policy = Arc::new(Policy::parse(&s.policy(&arg)).unwrap());
    let steps = json!([step("exec", "attack", "exec", &arg, "")]);
    let real = s.x.join("bin/tool.real");
    fs::rename(&s.tool, &real).unwrap();
    symlink(s.w.join("tool"), &s.tool).unwrap();
    let inv = run_with(&s, &policy, s.params(&s.w, &arg, steps.clone()));
    assert_guest_report(&inv, 1, 0);
    let e = exec_call(&inv);
    assert!(!e.allowed, "{}", pretty(&inv));
    let msg = e.result["message"].as_str().unwrap_or("");
    assert!(msg.contains("inside write grant"), "{msg}");
    s.assert_victims_untouched();

    // Or left writable by others (so anyone could rewrite it).
    fs::remove_file(&s.tool).unwrap();
    fs::rename(&real, &s.tool).unwrap();
    fs::set_permissions(&s.tool, fs::Permissions::from_mode(0o757)).unwrap();
    let inv = run_with(&s, &policy, s.params(&s.w, &arg, steps));
    assert_guest_report(&inv, 1, 0);
    let msg = exec_call(&inv).result["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("writable by group or others"), "{msg}");
    s.assert_victims_untouched();
}

#[test]
fn granted_directories_from_params_resolve_beneath_the_policy() {
    let s = setup();
    h_path(&s, "w/tenant/real");
    // Planted inside the policy's write directory, pointing out of it.
    symlink(s.x.join("elsewhere"), s.w.join("evil")).unwrap();
    let policy = s.policy("unused");
    let write = |dir: &std::path::Path| {
        json!([step(
            "write",
            "control",
            "write",
            &dir.join("new.txt").display().to_string(),
            "written"
        )])
    };

    let evil = s.w.join("evil");
    let inv = s.h.run(
        "adv-links",
        &policy,
        s.params(&evil, "unused", write(&evil)),
        false,
    );
    assert_status(&inv, Status::Refused);
    assert!(
        inv.outcome.summary.contains("resolves outside")
            && inv.outcome.summary.contains(&evil.display().to_string()),
        "{}",
        inv.outcome.summary
    );
    assert!(!s.x.join("elsewhere/new.txt").exists());
    s.assert_victims_untouched();

    // A link a run made (it points down) may be granted by a later run: it stays inside.
    let tenant = s.w.join("tenant");
    let steps = json!([step(
        "alias",
        "control",
        "symlink",
        &tenant.join("alias").display().to_string(),
        "real"
    )]);
    let inv = s.h.run(
        "adv-links",
        &policy,
        s.params(&tenant, "unused", steps),
        false,
    );
    assert_guest_report(&inv, 0, 1);
    let alias = tenant.join("alias");
    let inv = s.h.run(
        "adv-links",
        &policy,
        s.params(&alias, "unused", write(&alias)),
        false,
    );
    assert_guest_report(&inv, 0, 1);
    assert_eq!(
        fs::read_to_string(tenant.join("real/new.txt")).unwrap(),
        "written"
    );
}
