//! The report as its readers get it: a realistic month rendered to HTML and PDF, the PDF
//! checked structurally by parsing it and, with poppler's `pdftotext` and `pdftoppm`, by
//! a real reader.
//!
//! The poppler tests fail (they do not skip) when the tools are missing: CI installs
//! `poppler-utils`. Set `RUNWARDEN_REPORT_SAMPLE_DIR=/some/dir` to keep the sample's HTML,
//! PDF and page images there for a look (and `long.pdf`, the pagination test's).

use std::path::{Path, PathBuf};
use std::process::Command;

use runwarden_report::tz::Zone;
use runwarden_report::{
    CheckpointRef, Day, Figures, HostRow, NameCount, Promotion, Recurring, TierRow, html, pdf,
};

/// A small deterministic generator (xorshift): the sample is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A 50-host clinic's November in Berlin: about 12,000 incidents, 80% concluded at L1,
/// 15% at L2, 5% at L3; some escalations breached; 3 approvers; 5 rules promoted.
fn sample() -> Figures {
    let zone = Zone::load("Europe/Berlin").unwrap();
    let (start, end) = zone.month_bounds("2026-11").unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut daily = Vec::new();
    for d in 1..=30u64 {
        // 2026-11-01 is a Sunday: weekends are quieter (the practice is closed).
        let weekend = matches!(d % 7, 0 | 1);
        let base = if weekend { 210 } else { 460 };
        let total = base + rng.below(90);
        let l3 = total * 5 / 100 + rng.below(5);
        let l2 = total * 15 / 100 + rng.below(9);
        daily.push(Day {
            date: format!("2026-11-{d:02}"),
            l1: total - l2 - l3,
            l2,
            l3,
        });
    }
    let sum = |f: fn(&Day) -> u64| daily.iter().map(f).sum::<u64>();
    let (l1, l2, l3) = (sum(|d| d.l1), sum(|d| d.l2), sum(|d| d.l3));
    let incidents = l1 + l2 + l3;
    let by_tier = vec![
        TierRow {
            tier: "L1".into(),
            incidents: l1,
            healed: l1 - 141,
            failed: 52,
        },
        TierRow {
            tier: "L2".into(),
            incidents: l2,
            healed: l2 - 188,
            failed: 61,
        },
        TierRow {
            tier: "L3".into(),
            incidents: l3,
            healed: 402,
            failed: 9,
        },
    ];
    let healed_automatically = by_tier[0].healed + by_tier[1].healed;
    let kinds = [
        ("disk-full", ""),
        ("service-down", "dicom-router.service"),
        ("cert-expiring", "nginx.service"),
        ("backup-failed", "veeam-agent.service"),
        ("high-memory", "pacs-viewer.service"),
        ("printer-offline", "cups.service"),
        ("http-502", "nginx.service"),
        ("time-drift", "chronyd.service"),
    ];
    let recurring = (0..10)
        .map(|i| {
            let (kind, service) = kinds[i % kinds.len()];
            let count = 41 - 3 * i as u64 - rng.below(3);
            Recurring {
                host: format!(
                    "{}-{:02}",
                    ["ws-reception", "ws-exam", "srv-pacs", "ws-xray"][i % 4],
                    1 + i * 3 % 17
                ),
                kind: kind.into(),
                service: service.into(),
                count,
                healed: count - rng.below(4),
            }
        })
        .collect();
    let hosts_attention = (0..10)
        .map(|i| {
            let incidents = 96 - 7 * i as u64;
            let failed = 9 - i as u64 / 2;
            HostRow {
                host: format!(
                    "{}-{:02}",
                    [
                        "srv-pacs",
                        "ws-exam",
                        "ws-reception",
                        "nas-backup",
                        "ws-lab"
                    ][i % 5],
                    1 + i
                ),
                incidents,
                healed: incidents - failed - 3,
                failed,
                open_escalations: (3 - i as u64 / 3).min(3),
                breached: u64::from(i % 3 == 0),
            }
        })
        .collect();
    let promoted_rules = (0..5)
        .map(|i: i64| Promotion {
            rule: [
                "fw-fe6f75bafb",
                "fw-1c90d2e4a7",
                "fw-83b5aa0c19",
                "fw-5d07e6f2b3",
                "fw-a4c1193e80",
            ][i as usize]
                .into(),
            at: zone.local(start + (3 + 6 * i) * 86_400_000 + (9 * 3600 + 1200 * i) * 1000),
        })
        .collect();
    let note = "runwarden/praxis-lindenhof\n184213\nP3m1Xn9bJ0q2V6kY8cEo4rT7uWfZaHsLdGiBjKxMeNQ=\n\n\
                — runwarden/praxis-lindenhof 0YbJ3Qm4nL8wZp2XcVt6rKs1uDh5GfA9eIoTyRjWqBkMvNxHaCiPSlU7zE0d+F/gy2ib3wQ==\n";
    Figures {
        tenant: "Praxis Lindenhof — Zahnärzte Dr. Müller & Partner".into(),
        month: "2026-11".into(),
        time_zone: "Europe/Berlin".into(),
        as_of: zone.local(end + 7 * 86_400_000),
        provisional: false,
        incidents,
        by_tier,
        healed_automatically,
        healed: healed_automatically + 402,
        mean_time_to_heal_s: Some(250.4),
        median_time_to_heal_s: Some(64.8),
        dry_runs: 37,
        escalations: 604,
        escalations_in_sla: 553,
        escalations_breached: 24,
        escalations_open: 27,
        approvals: vec![
            NameCount {
                name: "anna.schmidt@it-sued.example".into(),
                count: 214,
            },
            NameCount {
                name: "j.becker@it-sued.example".into(),
                count: 131,
            },
            NameCount {
                name: "Dr. Müller (practice owner)".into(),
                count: 12,
            },
        ],
        daily,
        recurring,
        hosts_attention,
        promoted_rules,
        checkpoint: CheckpointRef {
            origin: "runwarden/praxis-lindenhof".into(),
            tree_size: 184_213,
            root: "3f79b55f267c6f2a4d91ee0b8c7a51f2d8e03b6a94c1d7e2f50a8b3c6d9e1f04".into(),
            note: note.into(),
        },
    }
}

/// More rows than any real month (the CLI caps lists at 10): pagination and repeated
/// table headers.
fn long() -> Figures {
    let mut f = sample();
    f.recurring = (0..40)
        .map(|i| Recurring {
            host: format!(
                "host-{i:02}-with-a-rather-long-name-that-does-not-fit-its-column.clinic.example"
            ),
            kind: "service-down".into(),
            service: "a-service-with-an-unreasonably-long-unit-name.service".into(),
            count: 40 - i,
            healed: 30 - i / 2,
        })
        .collect();
    f.hosts_attention = (0..40)
        .map(|i| HostRow {
            host: format!("ws-{i:03}"),
            incidents: 100 - i,
            ..HostRow::default()
        })
        .collect();
    f.approvals = (0..60)
        .map(|i| NameCount {
            name: format!("approver-{i:02}@msp.example"),
            count: 60 - i,
        })
        .collect();
    f
}

fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH: install poppler-utils (apt-get install -y poppler-utils); CI installs it in scripts/setup")
        })
}

/// Checks the file's structure by parsing it: header, every xref entry pointing at its
/// object, the trailer, stream lengths. Returns the page count.
fn check_structure(pdf: &[u8]) -> usize {
    assert!(pdf.starts_with(b"%PDF-1.4\n"));
    assert!(pdf.ends_with(b"%%EOF\n"));
    assert!(
        pdf.is_ascii(),
        "the file is plain ASCII (binary text is escaped)"
    );
    let text = std::str::from_utf8(pdf).unwrap();
    let sx = text.rfind("startxref\n").expect("startxref");
    let xref: usize = text[sx + 10..].lines().next().unwrap().parse().unwrap();
    assert!(
        text[xref..].starts_with("xref\n0 "),
        "startxref points at the xref table"
    );
    let mut lines = text[xref + 5..].split_inclusive('\n');
    let size: usize = lines
        .next()
        .unwrap()
        .trim()
        .strip_prefix("0 ")
        .unwrap()
        .parse()
        .unwrap();
    let entries = &text[xref + 5 + format!("0 {size}\n").len()..];
    assert_eq!(&entries[..20], "0000000000 65535 f \n");
    for i in 1..size {
        let e = &entries[20 * i..20 * (i + 1)];
        assert!(e.ends_with(" 00000 n \n"), "entry {i}: {e:?}");
        let off: usize = e[..10].parse().unwrap();
        assert!(
            text[off..].starts_with(&format!("{i} 0 obj\n")),
            "object {i} is not at {off}"
        );
    }
    let trailer = &entries[20 * size..];
    assert!(trailer.starts_with("trailer\n<< "), "{trailer}");
    assert!(trailer.contains(&format!("/Size {size} ")) && trailer.contains("/Root 1 0 R"));
    // Every stream is as long as it says.
    let mut streams = 0;
    for (at, _) in text
        .match_indices("stream\n")
        .filter(|(at, _)| !text[..*at].ends_with("end"))
    {
        let dict_start = text[..at].rfind("<< /Length ").unwrap();
        let len: usize = text[dict_start + 11..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            text[at + 7 + len..].starts_with("\nendstream"),
            "stream at {at}: wrong /Length"
        );
        streams += 1;
    }
    let count: usize = text
        .split("/Count ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(streams, count, "one content stream per page");
    count
}

#[test]
fn pdf_is_byte_identical_and_well_formed() {
    let f = sample();
    let a = pdf::render(&f);
    let b = pdf::render(&f.clone());
    assert!(a == b, "two renders of the same figures differ");
    let pages = check_structure(&a);
    assert!(pages >= 2, "{pages} pages");
    let text = String::from_utf8_lossy(&a);
    assert!(text.contains(&format!("(page 1 of {pages})")));
    assert!(text.contains(&format!("(page {pages} of {pages})")));
    // Different figures, different bytes (and identifier).
    let mut g = f.clone();
    g.incidents += 1;
    assert_ne!(pdf::render(&g), a);
}

#[test]
fn long_figures_paginate() {
    let pdf = pdf::render(&long());
    if let Some(dir) = std::env::var_os("RUNWARDEN_REPORT_SAMPLE_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join("long.pdf"), &pdf).unwrap();
    }
    let pages = check_structure(&pdf);
    assert!(pages >= 5, "only {pages} pages for 140 table rows");
    let text = String::from_utf8_lossy(&pdf);
    for p in 1..=pages {
        assert!(text.contains(&format!("(page {p} of {pages})")), "page {p}");
    }
    // Long names are cut with an ellipsis (\205 in WinAnsi), never left whole.
    assert!(!text.contains("does-not-fit-its-column.clinic.example"));
    assert!(text.contains("\\205)"));
}

#[test]
fn hostile_text_does_not_break_the_file() {
    let mut f = sample();
    f.tenant = "Zürich 東京 (clinic) \\ back\u{0}slash\u{202E}".into();
    f.approvals[0].name = "))) ((( \\\\ 🙂".into();
    f.checkpoint.note = "line (1)\nline \\2\n\u{7}\n".into();
    let pdf = pdf::render(&f);
    check_structure(&pdf);
    let text = String::from_utf8_lossy(&pdf);
    assert!(
        text.contains("(Z\\374rich ?? \\(clinic\\) \\\\ backslash)"),
        "tenant as WinAnsi"
    );
    assert!(text.contains("(\\)\\)\\) \\(\\(\\( \\\\\\\\ ?)"));
}

#[test]
fn empty_figures_render() {
    let f = Figures::default();
    check_structure(&pdf::render(&f));
    let html = html::render(&f);
    assert!(html.contains("No incidents this month."));
}

#[test]
fn extreme_numbers_do_not_panic() {
    let mut f = sample();
    f.incidents = u64::MAX;
    f.healed_automatically = u64::MAX;
    f.healed = u64::MAX - 1;
    f.escalations = u64::MAX;
    f.escalations_in_sla = u64::MAX;
    f.escalations_breached = u64::MAX;
    f.mean_time_to_heal_s = Some(f64::MAX);
    f.median_time_to_heal_s = Some(f64::NAN);
    f.daily[3] = Day {
        date: "2026-11-04".into(),
        l1: u64::MAX,
        l2: u64::MAX,
        l3: 1,
    };
    f.by_tier[0].incidents = u64::MAX;
    f.by_tier[0].healed = u64::MAX;
    f.by_tier[0].failed = u64::MAX;
    f.approvals[0].count = u64::MAX;
    let html = html::render(&f);
    assert!(html.contains("18,446,744,073,709,551,615"));
    assert!(!html.contains("NaN") && !html.contains("inf"));
    check_structure(&pdf::render(&f));
}

#[test]
fn html_of_the_sample_is_complete() {
    let html = html::render(&sample());
    for s in [
        "Praxis Lindenhof — Zahnärzte Dr. Müller &amp; Partner",
        "November 2026",
        "Europe/Berlin",
        "Figures as of 2026-12-08 00:00 CET.",
        "4 min 10 s",
        "1 min 5 s",
        "SLA kept for 95.8%",
    ] {
        assert!(html.contains(s), "{s} missing");
    }
    assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("src="));
}

fn pdftotext(pdf: &Path) -> String {
    let out = Command::new(tool("pdftotext"))
        .arg("-layout")
        .arg(pdf)
        .arg("-")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pdftotext failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_pdf_reader_finds_the_tenant_and_the_numbers() {
    let f = sample();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.pdf");
    std::fs::write(&path, pdf::render(&f)).unwrap();
    let text = pdftotext(&path);
    let incidents = f.incidents.to_string();
    let incidents = format!(
        "{},{}",
        &incidents[..incidents.len() - 3],
        &incidents[incidents.len() - 3..]
    );
    for s in [
        "Praxis Lindenhof — Zahnärzte Dr. Müller & Partner",
        "November 2026",
        &incidents,
        "4 min 10 s",
        "1 min 5 s",
        "604",
        "SLA kept for 95.8%",
        "Dry runs (simulated)",
        "37",
        "anna.schmidt@it-sued.example",
        "fw-fe6f75bafb",
        "— runwarden/praxis-lindenhof 0YbJ3Qm4nL8wZp2X",
        "page 1 of",
    ] {
        assert!(text.contains(s), "pdftotext does not show {s:?}:\n{text}");
    }
    let auto = f.healed_automatically as f64 / f.incidents as f64 * 100.0;
    assert!(
        text.contains(&format!("{auto:.1}%")),
        "healed automatically {auto:.1}%"
    );
}

#[test]
fn a_pdf_reader_renders_page_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.pdf");
    std::fs::write(&path, pdf::render(&long())).unwrap();
    let out = Command::new(tool("pdftoppm"))
        .args(["-png", "-r", "50", "-f", "1", "-l", "1"])
        .arg(&path)
        .arg(dir.path().join("page"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "pdftoppm: {stderr}"
    );
    let png = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .expect("a PNG of page 1");
    let bytes = std::fs::read(png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    // 50 dpi A4: 595 x 842 pt is 414 x 585 pixels.
    let (w, h) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (414, 585));
}

/// The sample as a reader sees it: HTML, PDF and every page as PNG, in
/// `$RUNWARDEN_REPORT_SAMPLE_DIR` (kept) or a temporary directory.
#[test]
fn sample_renders_to_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("RUNWARDEN_REPORT_SAMPLE_DIR")
        .map_or_else(|| tmp.path().to_owned(), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("page-")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let f = sample();
    let pdf = pdf::render(&f);
    std::fs::write(dir.join("report.pdf"), &pdf).unwrap();
    std::fs::write(dir.join("report.html"), html::render(&f)).unwrap();
    std::fs::write(
        dir.join("figures.json"),
        serde_json::to_string_pretty(&f).unwrap(),
    )
    .unwrap();
    let out = Command::new(tool("pdftoppm"))
        .args(["-png", "-r", "80"])
        .arg(dir.join("report.pdf"))
        .arg(dir.join("page"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "pdftoppm: {stderr}"
    );
    let pngs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, check_structure(&pdf));
}
