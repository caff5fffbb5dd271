//! A bundle's report as an auditor opens it: unpacked, in a real browser (Debian's
//! headless Chromium). The page renders its summaries and the records it lists, a record's
//! link opens the file of records that holds it, and a screenshot is left in
//! `target/screenshots/` for a person to look at. How fast it opens at 1.8M records is a
//! benchmark (`scripts/bench-report-browser`, BENCHMARKS.md), not a test.

use super::bundle::record_for;
use super::craft::members;
use runwarden_evidence::{
    BundleRecord, BundleWriter, Checkpoint, Manifest, MerkleTree, SigningKey, TimeZone, leaf_hash,
    rfc3339_ms, verify_bundle,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("chromium"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("chromium not found on PATH: install it (apt-get install -y chromium); CI installs it in scripts/setup")
        })
}

/// Run headless Chromium with `args` on `url`; its standard output. Killed after 90 s.
fn headless(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// A complete bundle of `n` records in the report layout of today, its report in Berlin
/// time: every third record failed, the rest healed, over three hosts.
fn bundle(n: u64) -> (Vec<u8>, SigningKey) {
    let key = SigningKey::generate("clinic-01").unwrap();
    let envelopes: Vec<String> = (0..n)
        .map(|i| {
            let host = format!("clinic-0{}", i % 3 + 1);
            let status = if i % 3 == 0 { "failed" } else { "healed" };
            record_for(
                i,
                &key,
                (&host, "clinic"),
                status,
                &format!("run {i} <b>not bold</b>"),
            )
        })
        .collect();
    let tree = MerkleTree::new(envelopes.iter().map(|e| leaf_hash(e.as_bytes())).collect());
    let cp = Checkpoint {
        origin: "runwarden/clinic-01".into(),
        size: n,
        root: tree.root(),
    };
    let manifest = Manifest {
        version: 4,
        origin: cp.origin.clone(),
        tree_size: n,
        record_count: n,
        complete: true,
        filter: serde_json::json!({}),
        created_at: rfc3339_ms(1_700_000_000_000),
        members: Default::default(),
        segment: None,
        time_zone: Some(TimeZone::load("Europe/Berlin").unwrap()),
        report: Some(2),
    };
    let mut w = BundleWriter::start(
        Vec::new(),
        &manifest,
        &cp.sign(&key).unwrap(),
        &[],
        &[key.verifying_key()],
    )
    .unwrap();
    for (i, envelope) in envelopes.into_iter().enumerate() {
        w.push(&BundleRecord {
            index: i as u64,
            envelope,
            proof: Vec::new(),
        })
        .unwrap();
    }
    (w.finish(&key).unwrap(), key)
}

#[test]
fn the_report_opens_in_a_browser_and_its_links_lead_to_the_records() {
    let n = 3 * 4096 + 100;
    let (bytes, key) = bundle(n);
    verify_bundle(bytes.as_slice(), &[key.verifying_key()], None).unwrap();
    // Unpacked, as the report tells the auditor to.
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in members(&bytes) {
        let path = dir.path().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let profile = dir.path().join("profile");
    let page = format!("file://{}/report.html", dir.path().display());

    let dom = headless(&profile, &["--dump-dom"], &page);
    assert!(dom.contains("<h1>Remediation evidence</h1>"), "{dom}");
    assert!(dom.contains("By month (Europe/Berlin)"), "{dom}");
    assert_eq!(dom.matches("<tr id=\"r").count(), 1000);
    // What a record says is shown as text, never as markup.
    assert!(!dom.contains("<b>not bold</b>") && dom.contains("&lt;b&gt;not bold&lt;/b&gt;"));
    // The latest failed record (n - 1 is 12387: 12387 % 3 == 0) and the way to it.
    let latest = (0..n).rev().find(|i| i % 3 == 0).unwrap();
    let chunk = format!("records/{:08}.jsonl", latest / 4096);
    let line = latest % 4096 + 1;
    assert!(
        dom.contains(&format!("<a href=\"{chunk}\">{chunk}</a> line {line}")),
        "{dom}"
    );
    assert!(dom.contains(&format!("<a href=\"#r{latest}\">record {latest}</a>")));

    // The link opens the file of records, and the line named is the record.
    let records = headless(
        &profile,
        &["--dump-dom"],
        &format!("file://{}/{chunk}", dir.path().display()),
    );
    let text = records
        .split_once("<pre")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("not a text page: {records}"));
    let at = text.lines().nth(line as usize - 1).unwrap();
    assert!(at.starts_with(&format!("{{\"index\":{latest},")), "{at}");

    // For a person to look at.
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("bundle-report.png");
    let _ = std::fs::remove_file(&png);
    headless(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2400",
        ],
        &page,
    );
    let image = std::fs::read(&png).unwrap();
    assert!(
        image.starts_with(b"\x89PNG\r\n\x1a\n") && image.len() > 20_000,
        "{} bytes",
        image.len()
    );
}
