//! What the report says, in both formats: sections, wording, numbers and definitions,
//! built from [`Figures`] without any markup. Strings here are plain text; each renderer
//! escapes them for its format.

use crate::tz::{days_from_civil, parse_month};
use crate::{Day, Figures};

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Colour(pub u8, pub u8, pub u8);

impl Colour {
    pub(crate) fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

pub(crate) const L1: Colour = Colour(0x2f, 0x80, 0x6f);
pub(crate) const L2: Colour = Colour(0x4f, 0x7c, 0xb8);
pub(crate) const L3: Colour = Colour(0xd9, 0x8e, 0x3a);
pub(crate) const OTHER_TIER: Colour = Colour(0x9a, 0xa5, 0xb1);
pub(crate) const GOOD: Colour = Colour(0x4e, 0x9a, 0x5e);
pub(crate) const BAD: Colour = Colour(0xc6, 0x58, 0x4c);
pub(crate) const NEUTRAL: Colour = Colour(0xb4, 0xbc, 0xc6);

/// The whole report.
pub(crate) struct Report {
    pub title: String,
    pub tenant: String,
    /// `November 2026`.
    pub month: String,
    /// Time zone and when the report was made.
    pub meta: String,
    pub cards: Vec<Card>,
    pub sections: Vec<Section>,
    /// One line: what this document is.
    pub footer: String,
}

/// A headline number.
pub(crate) struct Card {
    pub label: String,
    pub value: String,
    pub note: String,
}

pub(crate) struct Section {
    /// A stable HTML id.
    pub id: &'static str,
    pub title: String,
    pub blocks: Vec<Block>,
}

pub(crate) enum Block {
    Para(String),
    /// What an empty section says instead.
    Empty(String),
    Daily(DailyChart),
    /// One bar, its segments adding up to the whole.
    Stacked(Vec<Segment>),
    Legend(Vec<(String, Colour)>),
    Table(Table),
    /// Term and value, one per line.
    Facts(Vec<(String, String)>),
    /// Text shown verbatim, line for line.
    Pre(String),
    Definitions(Vec<(String, String)>),
}

pub(crate) struct Segment {
    pub label: String,
    pub value: u64,
    pub colour: Colour,
}

pub(crate) struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

pub(crate) struct Column {
    pub title: &'static str,
    /// Right-aligned.
    pub numeric: bool,
    /// Share of a table's width in the PDF.
    pub weight: f64,
}

pub(crate) enum Cell {
    Text(String),
    /// A colour swatch, then text.
    Swatch(Colour, String),
    /// A horizontal bar, its full length standing for `max`.
    Bar {
        segments: Vec<Segment>,
        max: u64,
    },
}

pub(crate) struct DailyChart {
    pub days: Vec<DayBar>,
    /// Label and colour of each value, bottom first.
    pub series: [(&'static str, Colour); 3],
    /// One sentence for screen readers and under the chart.
    pub summary: String,
}

pub(crate) struct DayBar {
    /// Day of the month (`17`), or the date if it is not `YYYY-MM-DD`.
    pub label: String,
    pub tooltip: String,
    pub weekend: bool,
    pub values: [u64; 3],
}

impl DailyChart {
    pub(crate) fn max_total(&self) -> u64 {
        self.days.iter().map(|d| total(d.values)).max().unwrap_or(0)
    }

    pub(crate) fn legend(&self) -> Vec<(String, Colour)> {
        self.series
            .iter()
            .map(|(l, c)| ((*l).to_owned(), *c))
            .collect()
    }
}

fn total(v: [u64; 3]) -> u64 {
    v.iter().fold(0u64, |a, x| a.saturating_add(*x))
}

/// A round top for a chart's axis at or above `max`, and the gridline values.
pub(crate) fn axis(max: u64) -> (u64, Vec<u64>) {
    if max == 0 {
        return (1, vec![0, 1]);
    }
    // A step of 1, 2, 2.5 or 5 times a power of ten giving about five gridlines.
    let rough = max as f64 / 5.0;
    let pow = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * pow)
        .max(1.0)
        .round() as u64;
    let top = max.div_ceil(step).saturating_mul(step);
    (top, (0..=top / step).map(|i| i * step).collect())
}

/// `12,004`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `part` of `whole` as a percentage with one decimal; never rounds to a misleading
/// 0% or 100%. `None` when `whole` is zero.
pub(crate) fn percent(part: u64, whole: u64) -> Option<String> {
    if whole == 0 {
        return None;
    }
    if part == 0 {
        return Some("0%".to_owned());
    }
    if part == whole {
        return Some("100%".to_owned());
    }
    let p = part as f64 / whole as f64 * 100.0;
    Some(if p < 0.05 {
        "<0.1%".to_owned()
    } else if p > 99.95 && part < whole {
        ">99.9%".to_owned()
    } else {
        format!("{p:.1}%")
    })
}

/// `4 min 10 s`, `2 h 5 min`, `3 d 4 h`; `<1 s` below a second.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".to_owned();
    }
    if secs < 0.5 {
        return "<1 s".to_owned();
    }
    let s = secs.round().min(u64::MAX as f64) as u64;
    let two = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a} {ua}")
        } else {
            format!("{a} {ua} {b} {ub}")
        }
    };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => two(s / 60, "min", s % 60, "s"),
        3600..86_400 => two(s / 3600, "h", s % 3600 / 60, "min"),
        _ => two(s / 86_400, "d", s % 86_400 / 3600, "h"),
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// `2026-11` as `November 2026`; anything else as given.
fn month_title(month: &str) -> String {
    match parse_month(month) {
        Ok((y, m)) => format!("{} {y}", MONTHS[m as usize - 1]),
        Err(_) => month.to_owned(),
    }
}

/// `2026-11-17` as (weekday 0 = Sunday, day of month), if it is a real date.
fn parse_date(date: &str) -> Option<(usize, u32, u32)> {
    let b = date.as_bytes();
    if b.len() != 10 || b[7] != b'-' {
        return None;
    }
    let (y, m) = parse_month(&date[..7]).ok()?;
    let d: u32 = date.get(8..)?.parse().ok()?;
    if !date[8..].bytes().all(|c| c.is_ascii_digit())
        || d == 0
        || d > crate::tz::days_in_month(y, m)
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    Some(((days + 4).rem_euclid(7) as usize, m, d))
}

/// `Tuesday 17 November`, or the text as given.
fn long_date(date: &str) -> String {
    match parse_date(date) {
        Some((wd, m, d)) => format!("{} {d} {}", WEEKDAYS[wd], MONTHS[m as usize - 1]),
        None => date.to_owned(),
    }
}

/// Control characters and invisible direction overrides: never shown as they are.
pub(crate) fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

fn tier_colour(tier: &str) -> Colour {
    match tier {
        "L1" => L1,
        "L2" => L2,
        "L3" => L3,
        _ => OTHER_TIER,
    }
}

fn tier_meaning(tier: &str) -> &'static str {
    match tier {
        "L1" => "a known rule (automatic)",
        "L2" => "the planner (automatic)",
        "L3" => "a person",
        _ => "",
    }
}

const NOTHING: &str = "—";

/// Everything the report says about `f`.
pub(crate) fn build(f: &Figures) -> Report {
    let month = month_title(&f.month);
    let meta = format!(
        "All times are in {}. Figures as of {}{}.",
        if f.time_zone.is_empty() {
            "UTC"
        } else {
            &f.time_zone
        },
        if f.as_of.is_empty() {
            NOTHING
        } else {
            &f.as_of
        },
        if f.provisional {
            " (provisional: runs are counted until a week after the month)"
        } else {
            ""
        }
    );
    Report {
        title: "Monthly report".to_owned(),
        tenant: f.tenant.clone(),
        footer: format!(
            "runwarden monthly report for {}, {month}. Figures up to the evidence log's \
             checkpoint at {} records.",
            f.tenant,
            count(f.checkpoint.tree_size)
        ),
        month,
        meta,
        cards: cards(f),
        sections: vec![
            daily(f),
            tiers(f),
            escalations(f),
            approvals(f),
            recurring(f),
            hosts(f),
            rules(f),
            provenance(f),
            definitions(),
        ],
    }
}

fn cards(f: &Figures) -> Vec<Card> {
    let card = |label: &str, value: String, note: String| Card {
        label: label.to_owned(),
        value,
        note,
    };
    let healed_auto = match percent(f.healed_automatically, f.incidents) {
        Some(p) => card(
            "Healed automatically",
            p,
            format!(
                "{} of {} fixed with no one involved; {} fixed in all",
                count(f.healed_automatically),
                count(f.incidents),
                count(f.healed)
            ),
        ),
        None => card(
            "Healed automatically",
            NOTHING.to_owned(),
            "no incidents to heal".to_owned(),
        ),
    };
    let time = |label: &str, v: Option<f64>, note: &str| match v {
        Some(s) => card(label, duration(s), note.to_owned()),
        None => card(
            label,
            NOTHING.to_owned(),
            "nothing was healed this month".to_owned(),
        ),
    };
    let due = f.escalations_in_sla.saturating_add(f.escalations_breached);
    let escalations = if f.escalations == 0 {
        card(
            "Escalations to a person",
            "0".to_owned(),
            "nothing needed a person's decision".to_owned(),
        )
    } else {
        let sla = match percent(f.escalations_in_sla, due) {
            Some(p) => format!("SLA kept for {p}"),
            None => "none due yet".to_owned(),
        };
        card(
            "Escalations to a person",
            count(f.escalations),
            format!(
                "{sla}; {} breached, {} open",
                count(f.escalations_breached),
                count(f.escalations_open)
            ),
        )
    };
    vec![
        card(
            "Incidents",
            count(f.incidents),
            "problems detected and handled".to_owned(),
        ),
        healed_auto,
        time(
            "Time to heal, mean",
            f.mean_time_to_heal_s,
            "on average, from arrival to fixed",
        ),
        time(
            "Time to heal, median",
            f.median_time_to_heal_s,
            "half of all fixes were faster",
        ),
        escalations,
        card(
            "Dry runs (simulated)",
            count(f.dry_runs),
            "rehearsals that changed nothing; never counted as healed".to_owned(),
        ),
    ]
}

fn section(id: &'static str, title: &str, blocks: Vec<Block>) -> Section {
    Section {
        id,
        title: title.to_owned(),
        blocks,
    }
}

fn col(title: &'static str, numeric: bool, weight: f64) -> Column {
    Column {
        title,
        numeric,
        weight,
    }
}

fn text(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

fn para(s: &str) -> Block {
    Block::Para(s.to_owned())
}

/// `s`, or a dash when it is empty.
fn or_nothing(s: &str) -> String {
    if s.is_empty() {
        NOTHING.to_owned()
    } else {
        s.to_owned()
    }
}

/// `part` of `whole` as a percentage, or nothing when `whole` is zero.
fn share(part: u64, whole: u64) -> String {
    percent(part, whole).unwrap_or_default()
}

fn daily(f: &Figures) -> Section {
    let days: Vec<DayBar> = f.daily.iter().map(day_bar).collect();
    let sum = |d: &Day| total([d.l1, d.l2, d.l3]);
    let all: u64 = f.daily.iter().fold(0, |a, d| a.saturating_add(sum(d)));
    if all == 0 {
        return section(
            "daily",
            "Incidents per day",
            vec![Block::Empty("No incidents this month.".to_owned())],
        );
    }
    // The first busiest day.
    let busiest = f
        .daily
        .iter()
        .rev()
        .max_by_key(|d| sum(d))
        .expect("days are not empty");
    let summary = format!(
        "Busiest day: {}, with {} incidents. On average {} a day.",
        long_date(&busiest.date),
        count(sum(busiest)),
        per_day(all as f64 / f.daily.len() as f64)
    );
    let chart = DailyChart {
        days,
        series: [("L1 — rule", L1), ("L2 — planner", L2), ("L3 — person", L3)],
        summary: summary.clone(),
    };
    section(
        "daily",
        "Incidents per day",
        vec![
            para("Each bar is one day, split by who concluded the incidents. Weekends are shaded."),
            Block::Daily(chart),
            Block::Para(summary),
        ],
    )
}

fn day_bar(d: &Day) -> DayBar {
    let parsed = parse_date(&d.date);
    let values = [d.l1, d.l2, d.l3];
    DayBar {
        label: parsed.map_or_else(|| d.date.clone(), |(_, _, day)| day.to_string()),
        tooltip: format!(
            "{}: {} incidents (L1 {}, L2 {}, L3 {})",
            long_date(&d.date),
            count(total(values)),
            count(d.l1),
            count(d.l2),
            count(d.l3)
        ),
        weekend: matches!(parsed, Some((0 | 6, _, _))),
        values,
    }
}

fn tiers(f: &Figures) -> Section {
    let title = "Incidents by tier";
    let all: u64 = f
        .by_tier
        .iter()
        .fold(0, |a, t| a.saturating_add(t.incidents));
    if f.by_tier.is_empty() || all == 0 {
        return section(
            "tiers",
            title,
            vec![Block::Empty("No incidents this month.".to_owned())],
        );
    }
    let max = f.by_tier.iter().map(|t| t.incidents).max().unwrap_or(0);
    let rows = f
        .by_tier
        .iter()
        .map(|t| {
            let other = t
                .incidents
                .saturating_sub(t.healed.saturating_add(t.failed));
            vec![
                Cell::Swatch(tier_colour(&t.tier), t.tier.clone()),
                text(tier_meaning(&t.tier)),
                text(count(t.incidents)),
                text(share(t.incidents, all)),
                text(count(t.healed)),
                text(count(t.failed)),
                Cell::Bar {
                    segments: vec![
                        Segment {
                            label: "healed".to_owned(),
                            value: t.healed,
                            colour: GOOD,
                        },
                        Segment {
                            label: "failed".to_owned(),
                            value: t.failed,
                            colour: BAD,
                        },
                        Segment {
                            label: "other".to_owned(),
                            value: other,
                            colour: NEUTRAL,
                        },
                    ],
                    max,
                },
            ]
        })
        .collect();
    section(
        "tiers",
        title,
        vec![
            para(
                "Every incident is concluded at one of three tiers: L1, a known rule picks the \
                 fix; L2, the planner picks one from the approved runbooks; L3, a person decides.",
            ),
            Block::Stacked(
                f.by_tier
                    .iter()
                    .map(|t| Segment {
                        label: t.tier.clone(),
                        value: t.incidents,
                        colour: tier_colour(&t.tier),
                    })
                    .collect(),
            ),
            Block::Legend(
                f.by_tier
                    .iter()
                    .map(|t| {
                        (
                            format!("{} {}", t.tier, share(t.incidents, all)),
                            tier_colour(&t.tier),
                        )
                    })
                    .collect(),
            ),
            Block::Table(Table {
                columns: vec![
                    col("Tier", false, 0.8),
                    col("Concluded by", false, 2.2),
                    col("Incidents", true, 1.1),
                    col("Share", true, 0.9),
                    col("Healed", true, 1.0),
                    col("Failed", true, 0.9),
                    col("Healed / failed / other", false, 2.0),
                ],
                rows,
            }),
            Block::Legend(vec![
                ("healed".to_owned(), GOOD),
                ("failed".to_owned(), BAD),
                (
                    "other (dry run, not run, or still open)".to_owned(),
                    NEUTRAL,
                ),
            ]),
        ],
    )
}

fn escalations(f: &Figures) -> Section {
    let title = "Escalations and SLA";
    let intro = Block::Para(
        "When automation cannot or may not fix a problem, a person is asked to decide within \
         an agreed time (the SLA), which depends on how severe the problem is."
            .to_owned(),
    );
    if f.escalations == 0 {
        return section(
            "escalations",
            title,
            vec![intro, Block::Empty("No escalations this month.".to_owned())],
        );
    }
    let parts = [
        ("In SLA", "decided in time", f.escalations_in_sla, GOOD),
        (
            "Breached",
            "decided late, or overdue",
            f.escalations_breached,
            BAD,
        ),
        ("Open", "waiting, not yet due", f.escalations_open, NEUTRAL),
    ];
    let rows = parts
        .iter()
        .map(|(label, meaning, n, c)| {
            vec![
                Cell::Swatch(*c, (*label).to_owned()),
                text(*meaning),
                text(count(*n)),
                text(share(*n, f.escalations)),
            ]
        })
        .collect();
    let due = f.escalations_in_sla.saturating_add(f.escalations_breached);
    let kept = match percent(f.escalations_in_sla, due) {
        Some(p) => format!(
            "The SLA was kept for {p} of the {} escalations that were decided or due.",
            count(due)
        ),
        None => "No escalation was decided or due yet.".to_owned(),
    };
    section(
        "escalations",
        title,
        vec![
            intro,
            Block::Stacked(
                parts
                    .iter()
                    .map(|(l, _, n, c)| Segment {
                        label: (*l).to_owned(),
                        value: *n,
                        colour: *c,
                    })
                    .collect(),
            ),
            Block::Table(Table {
                columns: vec![
                    col("Outcome", false, 1.2),
                    col("Meaning", false, 2.6),
                    col("Escalations", true, 1.2),
                    col("Share", true, 1.0),
                ],
                rows,
            }),
            Block::Para(kept),
        ],
    )
}

fn approvals(f: &Figures) -> Section {
    let title = "Approvals by approver";
    let intro = Block::Para(
        "Some fixes may only run once a person approves them (high-risk actions, or a person's \
         decision on an escalation). Who approved how many:"
            .to_owned(),
    );
    if f.approvals.is_empty() {
        return section(
            "approvals",
            title,
            vec![intro, Block::Empty("No approvals this month.".to_owned())],
        );
    }
    let all: u64 = f.approvals.iter().fold(0, |a, x| a.saturating_add(x.count));
    let rows = f
        .approvals
        .iter()
        .map(|a| {
            vec![
                text(&a.name),
                text(count(a.count)),
                text(share(a.count, all)),
            ]
        })
        .collect();
    section(
        "approvals",
        title,
        vec![
            intro,
            Block::Table(Table {
                columns: vec![
                    col("Approver", false, 4.0),
                    col("Approvals", true, 1.2),
                    col("Share", true, 1.0),
                ],
                rows,
            }),
        ],
    )
}

fn recurring(f: &Figures) -> Section {
    let title = "Recurring problems";
    let intro = Block::Para(
        "Problems that came back three times or more. Each was handled, but fixing its cause \
         for good would save work."
            .to_owned(),
    );
    if f.recurring.is_empty() {
        return section(
            "recurring",
            title,
            vec![
                intro,
                Block::Empty("No problem came back three times or more this month.".to_owned()),
            ],
        );
    }
    let rows = f
        .recurring
        .iter()
        .map(|r| {
            vec![
                text(&r.host),
                text(&r.kind),
                text(if r.service.is_empty() {
                    NOTHING
                } else {
                    &r.service
                }),
                text(count(r.count)),
                text(count(r.healed)),
            ]
        })
        .collect();
    section(
        "recurring",
        title,
        vec![
            intro,
            Block::Table(Table {
                columns: vec![
                    col("Host", false, 2.2),
                    col("Problem", false, 2.0),
                    col("Service", false, 2.0),
                    col("Times", true, 0.9),
                    col("Healed", true, 0.9),
                ],
                rows,
            }),
        ],
    )
}

fn hosts(f: &Figures) -> Section {
    let title = "Hosts needing attention";
    let intro = Block::Para(
        "The computers with the most problems left unresolved: worth a closer look.".to_owned(),
    );
    if f.hosts_attention.is_empty() {
        return section(
            "hosts",
            title,
            vec![
                intro,
                Block::Empty("No host needs attention this month.".to_owned()),
            ],
        );
    }
    let rows = f
        .hosts_attention
        .iter()
        .map(|h| {
            vec![
                text(&h.host),
                text(count(h.incidents)),
                text(count(h.healed)),
                text(count(h.failed)),
                text(count(h.open_escalations)),
                text(count(h.breached)),
            ]
        })
        .collect();
    section(
        "hosts",
        title,
        vec![
            intro,
            Block::Table(Table {
                columns: vec![
                    col("Host", false, 2.6),
                    col("Incidents", true, 1.0),
                    col("Healed", true, 0.9),
                    col("Failed", true, 0.9),
                    col("Open escalations", true, 1.4),
                    col("SLA breached", true, 1.2),
                ],
                rows,
            }),
        ],
    )
}

fn rules(f: &Figures) -> Section {
    let title = "Rules learned this month";
    let intro = Block::Para(
        "When the planner (L2) fixed the same problem the same way often enough, and never \
         failed, a person confirmed it as a rule (L1): from then on it is fixed at once."
            .to_owned(),
    );
    if f.promoted_rules.is_empty() {
        return section(
            "rules",
            title,
            vec![
                intro,
                Block::Empty("No rules were learned this month.".to_owned()),
            ],
        );
    }
    let rows = f
        .promoted_rules
        .iter()
        .map(|p| vec![text(&p.rule), text(&p.at)])
        .collect();
    section(
        "rules",
        title,
        vec![
            intro,
            Block::Table(Table {
                columns: vec![col("Rule", false, 3.0), col("Promoted", false, 1.6)],
                rows,
            }),
        ],
    )
}

fn provenance(f: &Figures) -> Section {
    let c = &f.checkpoint;
    let mut blocks = vec![
        Block::Para(
            "Every action runwarden takes is signed and added to a tamper-evident log (a Merkle \
             tree): nothing in it can be changed or removed without it showing. These figures \
             are counted from runwarden's own account of the month's incidents, runs and \
             escalations, each of which it also signed into that log, which held this many \
             records at this signed checkpoint:"
                .to_owned(),
        ),
        Block::Facts(vec![
            ("Log".to_owned(), or_nothing(&c.origin)),
            ("Records".to_owned(), count(c.tree_size)),
            ("Root hash".to_owned(), or_nothing(&c.root)),
        ]),
    ];
    if c.note.is_empty() {
        blocks.push(Block::Empty(
            "No signed checkpoint was attached to this report.".to_owned(),
        ));
    } else {
        blocks.push(Block::Pre(c.note.clone()));
    }
    blocks.push(Block::Para(
        "To check it: save the note above as checkpoint.txt, export an evidence bundle of \
         this log, and run:"
            .to_owned(),
    ));
    blocks.push(Block::Pre(
        "runwarden evidence verify BUNDLE --key KEY.pub --since-checkpoint checkpoint.txt"
            .to_owned(),
    ));
    blocks.push(Block::Para(
        "It checks every signature and proves that the log still holds, unchanged, every \
         record up to the checkpoint; the bundle's own report counts the runs, their \
         outcomes and the escalations decided in time from those signed records alone."
            .to_owned(),
    ));
    section("evidence", "Where these figures come from", blocks)
}

fn definitions() -> Section {
    // Approvals, recurring problems and learned rules are explained where they are shown.
    let defs = [
        (
            "Incident",
            "A problem reported by a monitored computer (a host), such as a full disk or a stopped service.",
        ),
        (
            "Healed",
            "A runbook (a scripted fix) ran for real and fixed the problem. Dry runs never count.",
        ),
        (
            "Healed automatically",
            "Healed with no one involved: the fix was chosen by a rule (L1) or by the planner (L2). The percentage is of all incidents.",
        ),
        (
            "Time to heal",
            "From the incident's arrival to the end of the run that fixed it. The mean is the average; the median is the middle value, so half of all fixes were faster.",
        ),
        (
            "Tier",
            "Who concluded an incident. L1: a known rule. L2: the planner, which picks a fix from the approved runbooks. L3: a person.",
        ),
        ("Failed", "A runbook ran and the problem was not fixed."),
        (
            "Escalation",
            "An incident handed to a person to decide, with a deadline (the SLA) set by its severity.",
        ),
        (
            "SLA kept",
            "Escalations decided by their deadline, as a share of those decided or already past their deadline; open ones not yet due are not counted.",
        ),
        (
            "Breached",
            "An escalation decided after its deadline, or still undecided past it.",
        ),
        (
            "Dry run",
            "A simulated run: every step is rehearsed and recorded, but nothing on the host is changed. Never counted as healed.",
        ),
    ];
    section(
        "definitions",
        "What the figures mean",
        vec![Block::Definitions(
            defs.iter()
                .map(|(t, d)| ((*t).to_owned(), (*d).to_owned()))
                .collect(),
        )],
    )
}

/// An average per day: one decimal below 10 (0.2, 4.5), whole numbers above.
fn per_day(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.1}")
    } else {
        count(x.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_average_keeps_a_decimal_when_small() {
        assert_eq!(per_day(5.0 / 31.0), "0.2");
        assert_eq!(per_day(4.5), "4.5");
        assert_eq!(per_day(430.4), "430");
        assert_eq!(per_day(12_890.0), "12,890");
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(12_004), "12,004");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn percentages_never_mislead() {
        assert_eq!(percent(1, 0), None);
        assert_eq!(percent(0, 5).unwrap(), "0%");
        assert_eq!(percent(5, 5).unwrap(), "100%");
        assert_eq!(percent(9_398, 12_004).unwrap(), "78.3%");
        assert_eq!(percent(1, 100_000).unwrap(), "<0.1%");
        assert_eq!(percent(99_999, 100_000).unwrap(), ">99.9%");
        assert_eq!(percent(1, 2).unwrap(), "50.0%");
    }

    #[test]
    fn durations_in_human_units() {
        assert_eq!(duration(0.2), "<1 s");
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(250.0), "4 min 10 s");
        assert_eq!(duration(240.0), "4 min");
        assert_eq!(duration(59.6), "1 min");
        assert_eq!(duration(7500.0), "2 h 5 min");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3 d 4 h");
        assert_eq!(duration(f64::NAN), "—");
        assert_eq!(duration(-1.0), "—");
        assert_eq!(duration(f64::INFINITY), "—");
        assert!(duration(1e300).ends_with(" h"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(axis(0), (1, vec![0, 1]));
        assert_eq!(axis(3).0, 3);
        assert_eq!(axis(470), (500, vec![0, 100, 200, 300, 400, 500]));
        for max in [1, 7, 10, 99, 470, 612, 1001, 123_456] {
            let (top, ticks) = axis(max);
            assert!(top >= max, "{max}");
            assert!(ticks.len() >= 2 && ticks.len() <= 11, "{max}: {ticks:?}");
            assert_eq!(*ticks.last().unwrap(), top);
        }
    }

    #[test]
    fn dates_and_months_in_words() {
        assert_eq!(month_title("2026-11"), "November 2026");
        assert_eq!(month_title("soon"), "soon");
        assert_eq!(long_date("2026-11-17"), "Tuesday 17 November");
        assert_eq!(long_date("2026-11-31"), "2026-11-31");
        assert_eq!(long_date("2026-11-1x"), "2026-11-1x");
        assert!(
            day_bar(&Day {
                date: "2026-11-01".into(),
                ..Day::default()
            })
            .weekend
        );
        assert!(
            !day_bar(&Day {
                date: "2026-11-02".into(),
                ..Day::default()
            })
            .weekend
        );
    }
}
