//! `runwarden report monthly` on what `runwarden up` did: the figures a clinic owner reads,
//! signed with the checkpoint they were taken at, as HTML and PDF.

use super::up::{DiskFull, cli, disk_full, start};
use super::{runwarden, stderr};
use serde_json::Value;
use std::process::Command;

/// `YYYY-MM` moved by `by` months.
fn month_shift(month: &str, by: i32) -> String {
    let (y, m) = month.split_once('-').unwrap();
    let n = y.parse::<i32>().unwrap() * 12 + m.parse::<i32>().unwrap() - 1 + by;
    format!("{:04}-{:02}", n.div_euclid(12), n.rem_euclid(12) + 1)
}

fn this_month() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    runwarden_evidence::rfc3339_ms(ms)[..7].to_string()
}

#[test]
fn the_monthly_report_counts_what_up_did_and_signs_its_figures() {
    let d = tempfile::tempdir().unwrap();
    let DiskFull {
        data,
        policy,
        incident,
        stale,
    } = disk_full(d.path());
    // Two days old: clear-tmp deletes it, and the incident is healed.
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600))
        .unwrap();
    let up = start(&data, &policy);
    let inc = incident.to_str().unwrap();
    // Healed at L1, then the repeat escalates and a human denies it in time.
    let o = cli(&data, &up, &["incident", "submit", inc, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (first["tier"].as_str(), first["status"].as_str()),
        (Some("L1"), Some("healed")),
        "{first}"
    );
    let o = cli(&data, &up, &["incident", "submit", inc]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let esc = text
        .split("escalation ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no escalation in {text}"))
        .to_string();
    let o = cli(
        &data,
        &up,
        &["escalation", "deny", &esc, "--note", "known glitch"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(up);

    // `report monthly` of `month` into DIR/`dir`: its figures and its PDF.
    let monthly = |dir: &str, month: &str| {
        let out = d.path().join(dir);
        let o = runwarden(
            &data,
            &[
                "report",
                "monthly",
                "--tenant",
                "local",
                "--month",
                month,
                "--out",
                out.to_str().unwrap(),
                "--time-zone",
                "UTC",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let figures: Value =
            serde_json::from_slice(&std::fs::read(out.join("figures.json")).unwrap()).unwrap();
        (figures, std::fs::read(out.join("report.pdf")).unwrap())
    };
    let out = d.path().join("report");
    let month = this_month();
    let (figures, _) = monthly("report", &month);
    assert_eq!(figures["tenant"], "local");
    assert_eq!(figures["month"], month.as_str());
    assert_eq!(figures["incidents"], 2);
    assert_eq!(figures["healed_automatically"], 1);
    assert_eq!(figures["escalations"], 1);
    assert_eq!(figures["escalations_in_sla"], 1);
    assert!(
        figures["mean_time_to_heal_s"].as_f64().is_some(),
        "{figures}"
    );
    let l1 = figures["by_tier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "L1")
        .unwrap();
    assert_eq!(
        (l1["incidents"].clone(), l1["healed"].clone()),
        (1.into(), 1.into())
    );
    assert!(figures["checkpoint"]["tree_size"].as_u64().unwrap() >= 1);

    // The figures are signed by the log's key, together with the checkpoint.
    let signed = std::fs::read_to_string(out.join("figures.dsse.json")).unwrap();
    let env = runwarden_evidence::Envelope::from_json(&signed).unwrap();
    let key = runwarden_evidence::read_verifying_key(&data.join("signing-keys/clinic-demo-01.pub"))
        .unwrap();
    env.verify(&[key]).unwrap();
    assert_eq!(
        env.payload().unwrap(),
        std::fs::read(out.join("figures.json")).unwrap()
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("local") && html.contains(&month),
        "the page names tenant and month"
    );
    let pdf = std::fs::read(out.join("report.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    // What a reader of the PDF sees.
    let text = Command::new("pdftotext")
        .arg(out.join("report.pdf"))
        .arg("-")
        .output()
        .expect("pdftotext (Debian poppler-utils, installed by scripts/setup) runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("local") && text.contains(&month), "{text}");
    // The month is not over: its figures say they may still change.
    assert_eq!(figures["provisional"], true, "{figures}");
    assert!(text.contains("(provisional:"), "{text}");

    // A month whose runs are all in is final: taken as of the end of the week after it,
    // not when the report is made, so the same log gives the same PDF byte for byte.
    let (old, after) = (month_shift(&month, -2), month_shift(&month, -1));
    let (first, pdf_a) = monthly("closed-a", &old);
    let (second, pdf_b) = monthly("closed-b", &old);
    assert_eq!(first["as_of"], format!("{after}-08 00:00 UTC"), "{first}");
    assert_eq!(first["provisional"], false, "{first}");
    assert_eq!(first, second);
    assert!(pdf_a == pdf_b, "two reports of a closed month differ");

    // The auditor's bundle of the same log counts the escalation as handed to a person,
    // and verifies.
    let bundle = d.path().join("bundle.tar");
    let o = runwarden(
        &data,
        &[
            "evidence",
            "export",
            "-o",
            bundle.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // --json: one object on stdout, nothing else anywhere.
    let exported: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(exported["complete"], true, "{exported}");
    assert_eq!(exported["records"], exported["tree_size"], "{exported}");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    let key_file = data.join("signing-keys/clinic-demo-01.pub");
    let o = runwarden(
        &data,
        &[
            "evidence",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
            "--require-complete",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut a = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let mut page = String::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("report.html") {
            std::io::Read::read_to_string(&mut e, &mut page).unwrap();
        }
    }
    assert!(page.contains("<th>to a person</th>"), "{page}");
    assert!(
        page.contains("<td class=\"text\">to a person</td>"),
        "{page}"
    );
    // … and the person's decision as within its SLA, from the signed records alone: the
    // record that opened the escalation names it and its deadline, the denial names when
    // it was decided.
    assert!(
        page.contains("Escalations a person decided in these records: 1, within their SLA: 1 (100.0%), late: 0."),
        "{page}"
    );
    assert!(
        page.contains("<th>decided in SLA</th><th>decided late</th>"),
        "{page}"
    );
    let statements: Vec<Value> = records_of(&bundle);
    let opened = statements
        .iter()
        .find(|s| s["predicate"]["outcome"]["details"]["escalation"]["id"] == esc.as_str())
        .unwrap_or_else(|| panic!("no record opens {esc}"));
    assert_eq!(opened["predicate"]["outcome"]["status"], "escalated");
    let deadline = opened["predicate"]["outcome"]["details"]["escalation"]["sla_deadline"]
        .as_str()
        .unwrap();
    let denied = statements
        .iter()
        .find(|s| s["predicate"]["outcome"]["status"] == "declined")
        .expect("the denial is recorded as the person's");
    let verdict = denied["predicate"]["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["guardrail"] == "approval")
        .unwrap();
    assert_eq!(verdict["escalation"]["id"], esc.as_str());
    assert_eq!(verdict["escalation"]["sla_deadline"], deadline);
    assert!(verdict["escalation"]["decided_at"].as_str().unwrap() <= deadline);

    // Bad input: named, nothing written.
    for (args, expect) in [
        (vec!["--month", "2026-13"], "2026-13"),
        (
            vec!["--month", &month, "--time-zone", "Mars/Olympus_Mons"],
            "Mars/Olympus_Mons",
        ),
        (
            vec!["--month", &month, "--time-zone", "../../etc/passwd"],
            "time zone",
        ),
    ] {
        let bad = d.path().join("bad");
        let mut full = vec![
            "report",
            "monthly",
            "--tenant",
            "local",
            "--out",
            bad.to_str().unwrap(),
        ];
        full.extend(args);
        let o = runwarden(&data, &full);
        assert_eq!(o.status.code(), Some(2), "{full:?}");
        assert!(stderr(&o).contains(expect), "{full:?}: {}", stderr(&o));
        assert!(!bad.exists(), "nothing written for {full:?}");
    }
}

/// The statements of every record in a bundle of format 4 (signatures not checked here:
/// `evidence verify` did).
pub(super) fn records_of(bundle: &std::path::Path) -> Vec<Value> {
    let mut a = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if !e.path().unwrap().starts_with("records") {
            continue;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        for line in text.lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            let env = r.get("envelope").unwrap_or(&r);
            let env = runwarden_evidence::Envelope::from_json(&env.to_string()).unwrap();
            out.push(serde_json::from_slice(&env.payload().unwrap()).unwrap());
        }
    }
    out
}
