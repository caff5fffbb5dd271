//! The report as one self-contained HTML page.
//!
//! Inline CSS and inline SVG only: no script, no external resource of any kind, and a
//! Content-Security-Policy that forbids them should a string ever slip through. Every
//! string from [`Figures`] comes from incidents, hosts and operators and is escaped.
//!
//! What the report says — its sections, wording, numbers and definitions — is built once
//! in `content` and drawn by both this module and [`crate::pdf`], so the two formats
//! cannot drift apart.

use std::fmt::Write as _;

use crate::Figures;
use crate::content::{self, Block, Cell, Colour, DailyChart, Segment, Table};

/// The report as one HTML page: self-contained (inline CSS and SVG, no script, no
/// external URL), with a strict Content-Security-Policy, printable on A4.
pub fn render(f: &Figures) -> String {
    let r = content::build(f);
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("{} — {} — {}", r.title, r.tenant, r.month);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    let _ = write!(
        h,
        "<header>\n<p class=\"kicker\">{}</p>\n<h1>{}</h1>\n<p class=\"month\">{}</p>\n<p class=\"meta\">{}</p>\n</header>\n",
        esc(&r.title),
        esc(&r.tenant),
        esc(&r.month),
        esc(&r.meta)
    );
    h.push_str("<section class=\"cards\" aria-label=\"Headline figures\">\n");
    for c in &r.cards {
        let _ = writeln!(
            h,
            "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div><div class=\"note\">{}</div></div>",
            esc(&c.label),
            esc(&c.value),
            esc(&c.note)
        );
    }
    h.push_str("</section>\n");
    for s in &r.sections {
        let _ = write!(h, "<section id=\"{}\">\n<h2>{}</h2>\n", s.id, esc(&s.title));
        for b in &s.blocks {
            block(&mut h, b);
        }
        h.push_str("</section>\n");
    }
    let _ = write!(
        h,
        "<footer>{}</footer>\n</main>\n</body>\n</html>\n",
        esc(&r.footer)
    );
    h
}

fn block(h: &mut String, b: &Block) {
    match b {
        Block::Para(t) => {
            let _ = writeln!(h, "<p>{}</p>", esc(t));
        }
        Block::Empty(t) => {
            let _ = writeln!(h, "<p class=\"empty\">{}</p>", esc(t));
        }
        Block::Daily(chart) => daily_chart(h, chart),
        Block::Stacked(segments) => stacked_bar(h, segments),
        Block::Legend(items) => legend(h, items),
        Block::Table(t) => table(h, t),
        Block::Facts(facts) => {
            h.push_str("<dl class=\"facts\">\n");
            for (k, v) in facts {
                let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
            }
            h.push_str("</dl>\n");
        }
        Block::Pre(t) => {
            let _ = writeln!(h, "<pre>{}</pre>", esc(t));
        }
        Block::Definitions(defs) => {
            h.push_str("<dl class=\"defs\">\n");
            for (term, def) in defs {
                let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(term), esc(def));
            }
            h.push_str("</dl>\n");
        }
    }
}

fn swatch(c: Colour) -> String {
    format!(
        "<svg class=\"sw\" width=\"10\" height=\"10\" viewBox=\"0 0 10 10\" aria-hidden=\"true\"><rect width=\"10\" height=\"10\" rx=\"2\" fill=\"{}\"/></svg>",
        c.hex()
    )
}

fn legend(h: &mut String, items: &[(String, Colour)]) {
    h.push_str("<p class=\"legend\">");
    for (label, c) in items {
        let _ = write!(h, "<span>{}{}</span>", swatch(*c), esc(label));
    }
    h.push_str("</p>\n");
}

fn table(h: &mut String, t: &Table) {
    h.push_str("<table>\n<thead><tr>");
    for c in &t.columns {
        let class = if c.numeric { " class=\"num\"" } else { "" };
        let _ = write!(h, "<th{class}>{}</th>", esc(c.title));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        h.push_str("<tr>");
        for (cell, col) in row.iter().zip(&t.columns) {
            match cell {
                Cell::Text(s) if col.numeric => {
                    let _ = write!(h, "<td class=\"num\">{}</td>", esc(s));
                }
                Cell::Text(s) => {
                    let _ = write!(h, "<td>{}</td>", esc(s));
                }
                Cell::Swatch(c, s) => {
                    let _ = write!(h, "<td class=\"key\">{}{}</td>", swatch(*c), esc(s));
                }
                Cell::Bar { segments, max } => {
                    h.push_str("<td class=\"barcell\">");
                    bar_svg(h, segments, *max, 160.0, 12.0);
                    h.push_str("</td>");
                }
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// A horizontal bar: `segments` side by side, the whole `width` standing for `max`.
fn bar_svg(h: &mut String, segments: &[Segment], max: u64, width: f64, height: f64) {
    let label = segments
        .iter()
        .map(|s| format!("{} {}", s.label, content::count(s.value)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        h,
        "<svg class=\"bar\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\"><title>{}</title><rect width=\"{width}\" height=\"{height}\" rx=\"2\" fill=\"#eef1f4\"/>",
        esc(&label),
        esc(&label)
    );
    let mut x = 0.0;
    for s in segments {
        let w = if max == 0 {
            0.0
        } else {
            s.value as f64 / max as f64 * width
        };
        if w > 0.0 {
            let _ = write!(
                h,
                "<rect x=\"{}\" width=\"{}\" height=\"{height}\" fill=\"{}\"/>",
                num(x),
                num(w),
                s.colour.hex()
            );
        }
        x += w;
    }
    h.push_str("</svg>");
}

fn stacked_bar(h: &mut String, segments: &[Segment]) {
    let total: u64 = segments.iter().fold(0, |a, s| a.saturating_add(s.value));
    h.push_str("<div class=\"stacked\">");
    bar_svg(h, segments, total, 600.0, 18.0);
    h.push_str("</div>\n");
}

fn daily_chart(h: &mut String, c: &DailyChart) {
    const W: f64 = 900.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 52.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 26.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let (top, ticks) = content::axis(c.max_total());
    let y_of = |v: f64| TOP + plot_h - v / top as f64 * plot_h;
    let _ = writeln!(
        h,
        "<figure class=\"chart\"><svg width=\"100%\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(&c.summary)
    );
    let band = plot_w / c.days.len().max(1) as f64;
    for (i, d) in c.days.iter().enumerate() {
        if d.weekend {
            let _ = writeln!(
                h,
                "<rect x=\"{}\" y=\"{TOP}\" width=\"{}\" height=\"{plot_h}\" fill=\"#f3f4f6\"/>",
                num(LEFT + band * i as f64),
                num(band)
            );
        }
    }
    for t in &ticks {
        let y = num(y_of(*t as f64));
        let _ = writeln!(
            h,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#d9dee4\" stroke-width=\"1\"/><text x=\"{}\" y=\"{y}\" dy=\"4\" text-anchor=\"end\" class=\"tick\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            content::count(*t)
        );
    }
    let bar_w = band * 0.72;
    for (i, d) in c.days.iter().enumerate() {
        let x = LEFT + band * i as f64 + (band - bar_w) / 2.0;
        let _ = write!(h, "<g><title>{}</title>", esc(&d.tooltip));
        let mut acc = 0u64;
        for (v, s) in d.values.iter().zip(&c.series) {
            if *v == 0 {
                continue;
            }
            let y1 = y_of(acc as f64);
            acc = acc.saturating_add(*v);
            let y2 = y_of(acc as f64);
            let _ = write!(
                h,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>",
                num(x),
                num(y2),
                num(bar_w),
                num(y1 - y2),
                s.1.hex()
            );
        }
        let _ = writeln!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text></g>",
            num(x + bar_w / 2.0),
            H - 8.0,
            esc(&d.label)
        );
    }
    let _ = writeln!(
        h,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#5f6b7a\" stroke-width=\"1\"/>",
        W - RIGHT,
        num(TOP + plot_h),
        num(TOP + plot_h)
    );
    h.push_str("</svg></figure>\n");
    legend(h, &c.legend());
}

/// A coordinate with at most two decimals, the same on every platform.
fn num(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    if r == 0.0 {
        "0".to_owned()
    } else {
        format!("{r}")
    }
}

/// Text made safe for HTML element content and quoted attribute values.
///
/// Control characters and the invisible bidirectional-override characters (which can
/// make a host name read backwards) are shown as U+FFFD instead.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(ch),
            c if content::is_hidden(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
:root{--ink:#1f2933;--muted:#5f6b7a;--line:#d9dee4;--soft:#f5f7f9}\
*{box-sizing:border-box}\
body{margin:0;background:#fff;color:var(--ink);font:15px/1.5 -apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif}\
main{max-width:960px;margin:0 auto;padding:32px 28px 48px}\
header{border-bottom:2px solid var(--ink);padding-bottom:14px;margin-bottom:24px}\
.kicker{margin:0;color:var(--muted);font-size:13px;letter-spacing:.06em;text-transform:uppercase}\
h1{font-size:28px;margin:2px 0 0;line-height:1.2;overflow-wrap:anywhere}\
.month{font-size:20px;margin:2px 0 6px}\
.meta{margin:0;color:var(--muted);font-size:13px}\
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}\
.card{border:1px solid var(--line);border-radius:8px;padding:14px 16px;background:var(--soft)}\
.card .label{font-size:13px;color:var(--muted)}\
.card .value{font-size:30px;font-weight:600;line-height:1.25;font-variant-numeric:tabular-nums}\
.card .note{font-size:13px;color:var(--muted)}\
section{margin-top:34px}\
h2{font-size:19px;margin:0 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}\
p{margin:8px 0}\
.empty{color:var(--muted);font-style:italic}\
table{border-collapse:collapse;width:100%;font-size:14px;margin:8px 0}\
th{text-align:left;color:var(--muted);font-weight:600;border-bottom:1px solid var(--ink)}\
td,th{padding:5px 8px;vertical-align:middle}\
td{border-bottom:1px solid var(--line);overflow-wrap:anywhere}\
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.barcell{width:172px}\
.key{white-space:nowrap}\
svg.sw{margin-right:6px;vertical-align:-1px}\
svg.bar{display:block}\
.stacked{margin:10px 0 4px}\
.stacked svg.bar{width:100%;max-width:600px}\
.legend{font-size:13px;color:var(--muted)}\
.legend span{margin-right:18px;white-space:nowrap}\
figure.chart{margin:8px 0 0}\
.tick{font-size:11px;fill:var(--muted)}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:14px}\
dl.facts dt{color:var(--muted)}\
dl.facts dd{margin:0;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}\
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:12px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}\
dl.defs dt{font-weight:600;margin-top:8px}\
dl.defs dd{margin:0;color:#33404d}\
footer{margin-top:40px;padding-top:10px;border-top:1px solid var(--line);color:var(--muted);font-size:12px}\
@media (max-width:700px){.cards{grid-template-columns:1fr 1fr}}\
@media print{\
@page{size:A4;margin:15mm}\
body{font-size:10.5pt}\
main{max-width:none;padding:0}\
.cards{grid-template-columns:repeat(3,1fr)}\
.card{background:none;break-inside:avoid}\
h2{break-after:avoid}\
tr,figure,pre,.stacked{break-inside:avoid}\
svg{print-color-adjust:exact;-webkit-print-color-adjust:exact}\
}\
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckpointRef, Day, HostRow, NameCount, Promotion, Recurring, TierRow};

    const EVIL: &str = "<script>alert(\"x\")</script>&amp;'\u{202E}\u{1}";

    /// Every string field set to `EVIL`.
    fn hostile() -> Figures {
        let s = || EVIL.to_owned();
        Figures {
            tenant: s(),
            month: s(),
            time_zone: s(),
            as_of: s(),
            provisional: true,
            incidents: 10,
            by_tier: vec![TierRow {
                tier: s(),
                incidents: 10,
                healed: 5,
                failed: 1,
            }],
            healed_automatically: 5,
            healed: 6,
            mean_time_to_heal_s: Some(10.0),
            median_time_to_heal_s: Some(5.0),
            dry_runs: 1,
            escalations: 2,
            escalations_in_sla: 1,
            escalations_breached: 1,
            escalations_open: 0,
            approvals: vec![NameCount {
                name: s(),
                count: 1,
            }],
            daily: vec![Day {
                date: s(),
                l1: 1,
                l2: 2,
                l3: 3,
            }],
            recurring: vec![Recurring {
                host: s(),
                kind: s(),
                service: s(),
                count: 3,
                healed: 1,
            }],
            hosts_attention: vec![HostRow {
                host: s(),
                incidents: 3,
                ..HostRow::default()
            }],
            promoted_rules: vec![Promotion { rule: s(), at: s() }],
            checkpoint: CheckpointRef {
                origin: s(),
                tree_size: 9,
                root: s(),
                note: s(),
            },
        }
    }

    #[test]
    fn every_string_is_escaped() {
        let html = render(&hostile());
        assert!(!html.contains("<script"), "raw <script> in the page");
        assert!(!html.contains("\"x\""));
        assert!(!html.contains("&amp;'"), "' or a second & left raw");
        assert!(!html.contains('\u{202E}') && !html.contains('\u{1}'));
        let escaped =
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;&#39;\u{FFFD}\u{FFFD}";
        // tenant (title, h1, footer), month (title, header, footer), time zone, generated at,
        // tier (bar, legend, table), approver, day (label, tooltip), host, kind, service,
        // host row, rule, rule time, origin, root, note.
        let n = html.matches(escaped).count();
        assert!(n >= 21, "only {n} escaped copies:\n{html}");
    }

    #[test]
    fn no_reference_leaves_the_page() {
        let html = render(&sample());
        for bad in [
            "http:", "https:", "src=", "href=", "url(", "@import", "<script", "<link", "<img",
            "<iframe", "<object",
        ] {
            assert!(!html.contains(bad), "{bad} in the page");
        }
        assert!(html.contains(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        ));
        assert!(html.contains("@media print"));
    }

    fn sample() -> Figures {
        Figures {
            tenant: "Lindenhof Dental".into(),
            month: "2026-11".into(),
            time_zone: "Europe/Berlin".into(),
            as_of: "2026-12-08 00:00 CET".into(),
            provisional: false,
            incidents: 12_004,
            by_tier: vec![
                TierRow {
                    tier: "L1".into(),
                    incidents: 9_600,
                    healed: 9_300,
                    failed: 120,
                },
                TierRow {
                    tier: "L2".into(),
                    incidents: 1_800,
                    healed: 1_500,
                    failed: 90,
                },
                TierRow {
                    tier: "L3".into(),
                    incidents: 604,
                    healed: 150,
                    failed: 4,
                },
            ],
            healed_automatically: 10_800,
            healed: 10_950,
            mean_time_to_heal_s: Some(250.0),
            median_time_to_heal_s: Some(65.0),
            dry_runs: 37,
            escalations: 604,
            escalations_in_sla: 570,
            escalations_breached: 24,
            escalations_open: 10,
            approvals: vec![NameCount {
                name: "anna@msp".into(),
                count: 120,
            }],
            daily: (1..=30)
                .map(|d| Day {
                    date: format!("2026-11-{d:02}"),
                    l1: 300 + d,
                    l2: 60,
                    l3: 20,
                })
                .collect(),
            recurring: vec![Recurring {
                host: "pc-01".into(),
                kind: "disk-full".into(),
                service: String::new(),
                count: 9,
                healed: 9,
            }],
            hosts_attention: vec![HostRow {
                host: "pc-02".into(),
                incidents: 40,
                healed: 30,
                failed: 5,
                open_escalations: 2,
                breached: 1,
            }],
            promoted_rules: vec![Promotion {
                rule: "fw-fe6f75bafb".into(),
                at: "2026-11-12 10:04 CET".into(),
            }],
            checkpoint: CheckpointRef {
                origin: "runwarden/lindenhof".into(),
                tree_size: 48_213,
                root: "9f2c".into(),
                note: "runwarden/lindenhof\n48213\nnyw=\n\n— runwarden/lindenhof abc=\n".into(),
            },
        }
    }

    #[test]
    fn sections_in_order() {
        let html = render(&sample());
        let order = [
            "<header>",
            "class=\"cards\"",
            "Incidents per day",
            "Incidents by tier",
            "Escalations and SLA",
            "Approvals by approver",
            "Recurring problems",
            "Hosts needing attention",
            "Rules learned this month",
            "Where these figures come from",
            "What the figures mean",
        ];
        let mut at = 0;
        for s in order {
            let i = html[at..]
                .find(s)
                .unwrap_or_else(|| panic!("{s} missing or out of order"));
            at += i + s.len();
        }
        for s in [
            "12,004",
            "90.0%",
            "4 min 10 s",
            "1 min 5 s",
            "604",
            "SLA kept for 96.0%",
            "Dry runs (simulated)",
            "November 2026",
            "Europe/Berlin",
            "runwarden evidence verify",
            "Time to heal</dt>",
        ] {
            assert!(html.contains(s), "{s} missing");
        }
        // The note verbatim in a <pre>.
        assert!(html.contains(
            "<pre>runwarden/lindenhof\n48213\nnyw=\n\n— runwarden/lindenhof abc=\n</pre>"
        ));
        // One stacked bar per day, one rect per non-zero tier.
        assert_eq!(html.matches("<g><title>").count(), 30);
    }

    #[test]
    fn empty_sections_say_so() {
        let html = render(&Figures {
            month: "2026-11".into(),
            ..Figures::default()
        });
        for s in [
            "No incidents this month.",
            "No escalations this month.",
            "No approvals this month.",
            "No problem came back three times or more this month.",
            "No host needs attention this month.",
            "No rules were learned this month.",
            "No signed checkpoint was attached to this report.",
        ] {
            assert!(
                html.contains(&format!("<p class=\"empty\">{s}</p>")),
                "{s} missing"
            );
        }
        assert!(!html.contains("<table>"));
        // Only the command to check the log; no checkpoint note.
        assert_eq!(html.matches("<pre>").count(), 1);
        assert!(!html.contains("NaN") && !html.contains("inf"));
    }
}
