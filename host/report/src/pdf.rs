//! The report as a PDF 1.4 file written by hand.
//!
//! A4 pages, the standard Helvetica and Helvetica-Bold (not embedded; every PDF reader
//! has them) in WinAnsiEncoding, a line-and-table layout with automatic page breaks, and
//! the charts drawn as vector rectangles. Nothing depends on the clock or on randomness:
//! the same [`Figures`] give the same bytes (the `/ID` is a hash of the file's body).
//!
//! Text is measured with the Adobe font metrics of the two fonts, so long names are cut
//! with "…" instead of running into the next column. Characters WinAnsi cannot show
//! become `?`; control characters and invisible direction overrides are dropped.

use std::fmt::Write as _;

use crate::Figures;
use crate::content::{self, Block, Cell, Colour, DailyChart, Report, Segment, Table};

/// The report as a PDF file: A4, Helvetica, one or more pages numbered "page N of M",
/// byte-identical for the same figures.
pub fn render(f: &Figures) -> Vec<u8> {
    let r = content::build(f);
    let mut doc = Layout::new();
    doc.report(&r);
    let title = format!("{} — {} — {}", r.title, r.tenant, r.month);
    write_file(doc.finish(&win(&title)), &title)
}

// ---------------------------------------------------------------------------------------
// Geometry (points; PDF's origin is the bottom left corner)

const PAGE_W: f64 = 595.0;
const PAGE_H: f64 = 842.0;
const LEFT: f64 = 50.0;
const RIGHT: f64 = PAGE_W - 50.0;
const WIDTH: f64 = RIGHT - LEFT;
const TOP: f64 = PAGE_H - 52.0;
/// Nothing but the footer goes below this.
const BOTTOM: f64 = 64.0;

const INK: Colour = Colour(0x1f, 0x29, 0x33);
const MUTED: Colour = Colour(0x5f, 0x6b, 0x7a);
const RULE: Colour = Colour(0xd9, 0xde, 0xe4);
const SOFT: Colour = Colour(0xf3, 0xf5, 0xf7);
const WEEKEND: Colour = Colour(0xf0, 0xf2, 0xf4);
const TRACK: Colour = Colour(0xe8, 0xeb, 0xef);

/// Body text size and line height.
const BODY: f64 = 9.5;
const BODY_LEAD: f64 = 13.5;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Font {
    Regular,
    Bold,
}

impl Font {
    fn resource(self) -> &'static str {
        match self {
            Font::Regular => "/F1",
            Font::Bold => "/F2",
        }
    }
}

/// Pages of content-stream operators, and where the next element goes.
struct Layout {
    pages: Vec<String>,
    /// The top of the next element.
    y: f64,
}

impl Layout {
    fn new() -> Layout {
        Layout {
            pages: vec![String::new()],
            y: TOP,
        }
    }

    fn ops(&mut self) -> &mut String {
        self.pages.last_mut().expect("there is always a page")
    }

    fn new_page(&mut self) {
        self.pages.push(String::new());
        self.y = TOP;
    }

    /// Starts a new page unless `h` points still fit on this one.
    fn need(&mut self, h: f64) {
        if self.y - h < BOTTOM && self.y < TOP {
            self.new_page();
        }
    }

    fn text(&mut self, x: f64, baseline: f64, font: Font, size: f64, c: Colour, s: &[u8]) {
        if s.is_empty() {
            return;
        }
        let op = format!(
            "BT {} {} Tf {} {} Td {} Tj ET\n",
            font.resource(),
            n(size),
            n(x),
            n(baseline),
            pdf_string(s)
        );
        let fill = fill(c);
        let o = self.ops();
        o.push_str(&fill);
        o.push_str(&op);
    }

    fn text_right(
        &mut self,
        right: f64,
        baseline: f64,
        font: Font,
        size: f64,
        c: Colour,
        s: &[u8],
    ) {
        let w = width(font, s, size);
        self.text(right - w, baseline, font, size, c, s);
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, c: Colour) {
        if w <= 0.0 || h <= 0.0 {
            return;
        }
        let op = format!("{}{} {} {} {} re f\n", fill(c), n(x), n(y), n(w), n(h));
        self.ops().push_str(&op);
    }

    fn hline(&mut self, x1: f64, x2: f64, y: f64, w: f64, c: Colour) {
        let op = format!(
            "{} {} {} RG {} w {} {} m {} {} l S\n",
            n(f64::from(c.0) / 255.0),
            n(f64::from(c.1) / 255.0),
            n(f64::from(c.2) / 255.0),
            n(w),
            n(x1),
            n(y),
            n(x2),
            n(y)
        );
        self.ops().push_str(&op);
    }

    /// Wrapped text across the full width.
    fn para(&mut self, s: &str, font: Font, size: f64, lead: f64, c: Colour) {
        for line in wrap(font, &win(s), size, WIDTH) {
            self.need(lead);
            self.text(LEFT, self.y - size, font, size, c, &line);
            self.y -= lead;
        }
    }

    fn report(&mut self, r: &Report) {
        // Header.
        self.text(
            LEFT,
            self.y - 9.0,
            Font::Regular,
            9.0,
            MUTED,
            &win("MONTHLY REPORT"),
        );
        self.y -= 14.0;
        // A long name takes two lines, then is cut.
        let mut tenant = wrap(Font::Bold, &win(&r.tenant), 22.0, WIDTH);
        if tenant.len() > 2 {
            let rest = tenant[1..].join(&b' ');
            tenant.truncate(1);
            tenant.push(fit_forced(Font::Bold, &rest, 22.0, WIDTH));
        }
        for line in tenant {
            self.text(
                LEFT,
                self.y - 21.0,
                Font::Bold,
                22.0,
                INK,
                &fit(Font::Bold, &line, 22.0, WIDTH),
            );
            self.y -= 27.0;
        }
        self.y -= 2.0;
        self.text(
            LEFT,
            self.y - 14.0,
            Font::Regular,
            14.0,
            INK,
            &win(&r.month),
        );
        self.y -= 21.0;
        self.para(&r.meta, Font::Regular, 8.5, 11.5, MUTED);
        self.y -= 5.0;
        self.hline(LEFT, RIGHT, self.y, 1.5, INK);
        self.y -= 18.0;

        self.cards(&r.cards);
        for s in &r.sections {
            // A title is never the last thing on a page.
            self.need(24.0 + 60.0);
            self.y -= 6.0;
            self.text(
                LEFT,
                self.y - 13.0,
                Font::Bold,
                13.0,
                INK,
                &fit(Font::Bold, &win(&s.title), 13.0, WIDTH),
            );
            self.y -= 18.0;
            self.hline(LEFT, RIGHT, self.y, 0.6, RULE);
            self.y -= 8.0;
            for b in &s.blocks {
                self.block(b);
            }
            self.y -= 6.0;
        }
    }

    fn cards(&mut self, cards: &[content::Card]) {
        const GAP: f64 = 10.0;
        const H: f64 = 74.0;
        const PAD: f64 = 10.0;
        let w = (WIDTH - 2.0 * GAP) / 3.0;
        for row in cards.chunks(3) {
            self.need(H + GAP);
            for (i, c) in row.iter().enumerate() {
                let x = LEFT + i as f64 * (w + GAP);
                let top = self.y;
                self.rect(x, top - H, w, H, SOFT);
                self.text(
                    x + PAD,
                    top - PAD - 8.0,
                    Font::Regular,
                    8.5,
                    MUTED,
                    &fit(Font::Regular, &win(&c.label), 8.5, w - 2.0 * PAD),
                );
                self.text(
                    x + PAD,
                    top - PAD - 31.0,
                    Font::Bold,
                    20.0,
                    INK,
                    &fit(Font::Bold, &win(&c.value), 20.0, w - 2.0 * PAD),
                );
                let mut lines = wrap(Font::Regular, &win(&c.note), 7.5, w - 2.0 * PAD);
                if lines.len() > 2 {
                    let rest: Vec<u8> = lines[1..].join(&b' ');
                    lines.truncate(1);
                    lines.push(fit_forced(Font::Regular, &rest, 7.5, w - 2.0 * PAD));
                }
                for (j, line) in lines.iter().enumerate() {
                    self.text(
                        x + PAD,
                        top - PAD - 45.0 - 9.5 * j as f64,
                        Font::Regular,
                        7.5,
                        MUTED,
                        line,
                    );
                }
            }
            self.y -= H + GAP;
        }
    }

    fn block(&mut self, b: &Block) {
        match b {
            Block::Para(t) => {
                self.para(t, Font::Regular, BODY, BODY_LEAD, INK);
                self.y -= 4.0;
            }
            Block::Empty(t) => {
                self.para(t, Font::Regular, BODY, BODY_LEAD, MUTED);
                self.y -= 4.0;
            }
            Block::Daily(c) => self.daily(c),
            Block::Stacked(segments) => {
                self.need(20.0);
                let total = segments.iter().fold(0u64, |a, s| a.saturating_add(s.value));
                self.bar(LEFT, self.y - 12.0, WIDTH, 12.0, segments, total);
                self.y -= 18.0;
            }
            Block::Legend(items) => self.legend(items),
            Block::Table(t) => self.table(t),
            Block::Facts(facts) => {
                const KEY: f64 = 80.0;
                for (k, v) in facts {
                    let lines = wrap(Font::Regular, &win(v), 9.0, WIDTH - KEY);
                    self.need(13.0 * lines.len() as f64);
                    self.text(
                        LEFT,
                        self.y - 9.0,
                        Font::Regular,
                        9.0,
                        MUTED,
                        &fit(Font::Regular, &win(k), 9.0, KEY - 6.0),
                    );
                    for line in lines {
                        self.text(LEFT + KEY, self.y - 9.0, Font::Regular, 9.0, INK, &line);
                        self.y -= 13.0;
                    }
                }
                self.y -= 6.0;
            }
            Block::Pre(t) => self.pre(t),
            Block::Definitions(defs) => {
                const TERM: f64 = 118.0;
                for (term, def) in defs {
                    let lines = wrap(Font::Regular, &win(def), 8.5, WIDTH - TERM);
                    self.need(11.5 * lines.len() as f64 + 3.0);
                    let term = fit(Font::Bold, &win(term), 8.5, TERM - 8.0);
                    self.text(LEFT, self.y - 8.5, Font::Bold, 8.5, INK, &term);
                    for line in lines {
                        self.text(LEFT + TERM, self.y - 8.5, Font::Regular, 8.5, INK, &line);
                        self.y -= 11.5;
                    }
                    self.y -= 3.0;
                }
            }
        }
    }

    /// Segments side by side on a track, `w` standing for `max`.
    fn bar(&mut self, x: f64, y: f64, w: f64, h: f64, segments: &[Segment], max: u64) {
        self.rect(x, y, w, h, TRACK);
        let mut at = x;
        for s in segments {
            let sw = if max == 0 {
                0.0
            } else {
                s.value as f64 / max as f64 * w
            };
            self.rect(at, y, sw, h, s.colour);
            at += sw;
        }
    }

    fn legend(&mut self, items: &[(String, Colour)]) {
        const SIZE: f64 = 8.0;
        self.need(14.0);
        let mut x = LEFT;
        for (label, c) in items {
            let label = fit(Font::Regular, &win(label), SIZE, WIDTH - 12.0);
            let w = 11.0 + width(Font::Regular, &label, SIZE) + 16.0;
            if x > LEFT && x + w > RIGHT {
                self.y -= 13.0;
                self.need(14.0);
                x = LEFT;
            }
            self.rect(x, self.y - 8.0, 7.0, 7.0, *c);
            self.text(x + 11.0, self.y - 7.5, Font::Regular, SIZE, MUTED, &label);
            x += w;
        }
        self.y -= 18.0;
    }

    fn daily(&mut self, c: &DailyChart) {
        const AXIS: f64 = 34.0;
        const PLOT_H: f64 = 140.0;
        const LABELS: f64 = 14.0;
        self.need(PLOT_H + LABELS + 8.0);
        let top = self.y - 4.0;
        let base = top - PLOT_H;
        let x0 = LEFT + AXIS;
        let plot_w = RIGHT - x0;
        let (max, ticks) = content::axis(c.max_total());
        let y_of = |v: u64| base + v as f64 / max as f64 * PLOT_H;
        let band = plot_w / c.days.len().max(1) as f64;
        for (i, d) in c.days.iter().enumerate() {
            if d.weekend {
                self.rect(x0 + band * i as f64, base, band, PLOT_H, WEEKEND);
            }
        }
        for t in &ticks {
            let y = y_of(*t);
            self.hline(x0, RIGHT, y, 0.4, RULE);
            self.text_right(
                x0 - 5.0,
                y - 2.5,
                Font::Regular,
                7.0,
                MUTED,
                &win(&content::count(*t)),
            );
        }
        let bar_w = band * 0.72;
        let label_size = if band < 9.0 { 5.0 } else { 6.5 };
        for (i, d) in c.days.iter().enumerate() {
            let x = x0 + band * i as f64 + (band - bar_w) / 2.0;
            let mut acc = 0u64;
            for (v, s) in d.values.iter().zip(&c.series) {
                let y1 = y_of(acc);
                acc = acc.saturating_add(*v);
                self.rect(x, y1, bar_w, y_of(acc) - y1, s.1);
            }
            let label = fit(Font::Regular, &win(&d.label), label_size, band + 4.0);
            let lw = width(Font::Regular, &label, label_size);
            self.text(
                x + bar_w / 2.0 - lw / 2.0,
                base - 9.0,
                Font::Regular,
                label_size,
                MUTED,
                &label,
            );
        }
        self.hline(x0, RIGHT, base, 0.8, MUTED);
        self.y = base - LABELS - 4.0;
        self.legend(&c.legend());
    }

    fn table(&mut self, t: &Table) {
        const SIZE: f64 = 8.5;
        const ROW: f64 = 14.0;
        const PAD: f64 = 4.0;
        let total: f64 = t.columns.iter().map(|c| c.weight).sum();
        let widths: Vec<f64> = t.columns.iter().map(|c| c.weight / total * WIDTH).collect();
        let header = |doc: &mut Layout| {
            let mut x = LEFT;
            for (c, w) in t.columns.iter().zip(&widths) {
                let title = fit(Font::Bold, &win(c.title), SIZE, w - 2.0 * PAD);
                if c.numeric {
                    doc.text_right(x + w - PAD, doc.y - 10.5, Font::Bold, SIZE, MUTED, &title);
                } else {
                    doc.text(x + PAD, doc.y - 10.5, Font::Bold, SIZE, MUTED, &title);
                }
                x += w;
            }
            doc.y -= ROW;
            doc.hline(LEFT, RIGHT, doc.y, 0.8, INK);
        };
        self.need(2.0 * ROW + 4.0);
        header(self);
        for (i, row) in t.rows.iter().enumerate() {
            if self.y - ROW < BOTTOM {
                self.new_page();
                header(self);
            }
            if i % 2 == 1 {
                self.rect(LEFT, self.y - ROW, WIDTH, ROW, SOFT);
            }
            let baseline = self.y - 10.0;
            let mut x = LEFT;
            for ((cell, col), w) in row.iter().zip(&t.columns).zip(&widths) {
                let inner = w - 2.0 * PAD;
                match cell {
                    Cell::Text(s) => {
                        let s = fit(Font::Regular, &win(s), SIZE, inner);
                        if col.numeric {
                            self.text_right(x + w - PAD, baseline, Font::Regular, SIZE, INK, &s);
                        } else {
                            self.text(x + PAD, baseline, Font::Regular, SIZE, INK, &s);
                        }
                    }
                    Cell::Swatch(c, s) => {
                        self.rect(x + PAD, baseline, 7.0, 7.0, *c);
                        let s = fit(Font::Regular, &win(s), SIZE, inner - 11.0);
                        self.text(x + PAD + 11.0, baseline, Font::Regular, SIZE, INK, &s);
                    }
                    Cell::Bar { segments, max } => {
                        self.bar(
                            x + PAD,
                            self.y - ROW / 2.0 - 3.5,
                            inner,
                            7.0,
                            segments,
                            *max,
                        );
                    }
                }
                x += w;
            }
            self.y -= ROW;
            self.hline(LEFT, RIGHT, self.y, 0.3, RULE);
        }
        self.y -= 8.0;
    }

    /// Verbatim lines on a shaded ground; a line too long for the page continues on the
    /// next, indented.
    fn pre(&mut self, t: &str) {
        const SIZE: f64 = 8.0;
        const LEAD: f64 = 11.0;
        const PAD: f64 = 8.0;
        let body = t.strip_suffix('\n').unwrap_or(t);
        let mut lines = Vec::new();
        for line in body.split('\n') {
            let mut parts =
                wrap_chars(Font::Regular, &win(line), SIZE, WIDTH - 2.0 * PAD - 10.0).into_iter();
            lines.push((0.0, parts.next().unwrap_or_default()));
            lines.extend(parts.map(|p| (10.0, p)));
        }
        self.need(LEAD * lines.len().min(6) as f64 + 2.0 * PAD);
        self.rect(LEFT, self.y - PAD / 2.0, WIDTH, PAD / 2.0, SOFT);
        self.y -= PAD / 2.0;
        for (indent, line) in lines {
            if self.y - LEAD < BOTTOM {
                self.new_page();
            }
            self.rect(LEFT, self.y - LEAD, WIDTH, LEAD, SOFT);
            self.text(
                LEFT + PAD + indent,
                self.y - SIZE - 1.0,
                Font::Regular,
                SIZE,
                INK,
                &line,
            );
            self.y -= LEAD;
        }
        self.rect(LEFT, self.y - PAD / 2.0, WIDTH, PAD / 2.0, SOFT);
        self.y -= PAD / 2.0 + 8.0;
    }

    /// The pages' content streams, each with its footer.
    fn finish(self, footer: &[u8]) -> Vec<String> {
        let count = self.pages.len();
        self.pages
            .into_iter()
            .enumerate()
            .map(|(i, mut ops)| {
                let mut page = Layout {
                    pages: vec![String::new()],
                    y: 0.0,
                };
                page.hline(LEFT, RIGHT, 44.0, 0.5, RULE);
                let number = win(&format!("page {} of {count}", i + 1));
                page.text(
                    LEFT,
                    32.0,
                    Font::Regular,
                    7.5,
                    MUTED,
                    &fit(Font::Regular, footer, 7.5, WIDTH - 80.0),
                );
                page.text_right(RIGHT, 32.0, Font::Regular, 7.5, MUTED, &number);
                ops.push_str(&page.pages[0]);
                ops
            })
            .collect()
    }
}

fn fill(c: Colour) -> String {
    format!(
        "{} {} {} rg ",
        n(f64::from(c.0) / 255.0),
        n(f64::from(c.1) / 255.0),
        n(f64::from(c.2) / 255.0)
    )
}

/// A number for a content stream: at most three decimals, no exponent, no `-0`.
fn n(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    if r == 0.0 || !r.is_finite() {
        "0".to_owned()
    } else {
        format!("{r}")
    }
}

// ---------------------------------------------------------------------------------------
// The file

/// The PDF file around the pages' content streams.
fn write_file(pages: Vec<String>, title: &str) -> Vec<u8> {
    // 1 catalog, 2 page tree, 3 and 4 fonts, 5 document info, then a page and its
    // contents for each page.
    let mut objects: Vec<Vec<u8>> = Vec::with_capacity(5 + 2 * pages.len());
    let kids: Vec<String> = (0..pages.len())
        .map(|i| format!("{} 0 R", 6 + 2 * i))
        .collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} /MediaBox [0 0 {} {}] >>",
            kids.join(" "),
            pages.len(),
            PAGE_W,
            PAGE_H
        )
        .into_bytes(),
    );
    for base in ["Helvetica", "Helvetica-Bold"] {
        objects.push(
            format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /{base} /Encoding /WinAnsiEncoding >>"
            )
            .into_bytes(),
        );
    }
    objects
        .push(format!("<< /Title {} /Producer (runwarden) >>", utf16_string(title)).into_bytes());
    for (i, ops) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
                7 + 2 * i
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", ops.len()).into_bytes();
        stream.extend_from_slice(ops.as_bytes());
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
    }

    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let id = format!(
        "{:016x}{:016x}",
        fnv1a(&out, 0xcbf2_9ce4_8422_2325),
        fnv1a(&out, 0x6c62_272e_07bb_0142)
    );
    let xref = out.len();
    let mut tail = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for off in offsets {
        // Each entry is exactly 20 bytes: the line ends in space and newline.
        let _ = writeln!(tail, "{off:010} 00000 n ");
    }
    let _ = write!(
        tail,
        "trailer\n<< /Size {} /Root 1 0 R /Info 5 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.extend_from_slice(tail.as_bytes());
    out
}

/// FNV-1a, 64 bits, from `seed`: enough to make a file identifier from its content.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A literal string: `\`, `(` and `)` escaped, bytes outside printable ASCII in octal.
fn pdf_string(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('(');
    for &b in bytes {
        match b {
            b'(' | b')' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\{b:03o}");
            }
        }
    }
    s.push(')');
    s
}

/// A text string for the document information: UTF-16BE with a byte-order mark, in hex.
fn utf16_string(s: &str) -> String {
    let mut out = String::from("<FEFF");
    for unit in s.chars().filter(|c| !content::is_hidden(*c)).flat_map(|c| {
        let mut buf = [0u16; 2];
        c.encode_utf16(&mut buf).to_vec()
    }) {
        let _ = write!(out, "{unit:04X}");
    }
    out.push('>');
    out
}

// ---------------------------------------------------------------------------------------
// Text: WinAnsi bytes and Helvetica metrics

/// `s` in WinAnsiEncoding: `?` for what it cannot show; control characters and
/// invisible direction overrides dropped.
fn win(s: &str) -> Vec<u8> {
    s.chars()
        .filter(|c| !content::is_hidden(*c))
        .map(|c| to_winansi(c).unwrap_or(b'?'))
        .collect()
}

fn to_winansi(c: char) -> Option<u8> {
    let u = c as u32;
    match u {
        0x20..=0x7e | 0xa0..=0xff => Some(u as u8),
        _ => Some(match c {
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8a,
            '‹' => 0x8b,
            'Œ' => 0x8c,
            'Ž' => 0x8e,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201C}' => 0x93,
            '\u{201D}' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9a,
            '›' => 0x9b,
            'œ' => 0x9c,
            'ž' => 0x9e,
            'Ÿ' => 0x9f,
            _ => return None,
        }),
    }
}

/// The width of `s` (WinAnsi bytes) in points.
fn width(font: Font, s: &[u8], size: f64) -> f64 {
    let units: u32 = s.iter().map(|&b| u32::from(glyph_width(font, b))).sum();
    f64::from(units) * size / 1000.0
}

/// A glyph's advance in thousandths of the font size (Adobe's AFM metrics).
fn glyph_width(font: Font, b: u8) -> u16 {
    let table = match font {
        Font::Regular => &HELVETICA,
        Font::Bold => &HELVETICA_BOLD,
    };
    match b {
        32..=126 => table[usize::from(b - 32)],
        0x85 | 0x97 | 0x89 => 1000, // ellipsis, em dash, per mille
        0x95 => 350,                // bullet
        0xa0 => 278,                // no-break space
        0xb7 => 278,                // middle dot
        _ => 556,
    }
}

/// `s` cut to fit `max` points, ending in "…" if it was cut.
fn fit(font: Font, s: &[u8], size: f64, max: f64) -> Vec<u8> {
    if width(font, s, size) <= max {
        return s.to_vec();
    }
    fit_forced(font, s, size, max)
}

/// `s` cut so that it and a "…" fit `max` points.
fn fit_forced(font: Font, s: &[u8], size: f64, max: f64) -> Vec<u8> {
    let budget = max - width(font, &[0x85], size);
    let mut used = 0.0;
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        let w = width(font, &[b], size);
        if used + w > budget {
            break;
        }
        used += w;
        out.push(b);
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    out.push(0x85);
    out
}

/// `s` broken into lines of at most `max` points, between words where possible.
fn wrap(font: Font, s: &[u8], size: f64, max: f64) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    for word in s.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        let candidate_w =
            width(font, &line, size) + width(font, b" ", size) + width(font, word, size);
        if !line.is_empty() && candidate_w <= max {
            line.push(b' ');
            line.extend_from_slice(word);
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if width(font, word, size) <= max {
            line = word.to_vec();
        } else {
            let mut parts = wrap_chars(font, word, size, max);
            line = parts.pop().unwrap_or_default();
            lines.extend(parts);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `s` broken into lines of at most `max` points anywhere, keeping every byte.
fn wrap_chars(font: Font, s: &[u8], size: f64, max: f64) -> Vec<Vec<u8>> {
    let mut lines = vec![Vec::new()];
    let mut used = 0.0;
    for &b in s {
        let w = width(font, &[b], size);
        let line = lines.last_mut().expect("never empty");
        if used + w > max && !line.is_empty() {
            lines.push(vec![b]);
            used = w;
        } else {
            line.push(b);
            used += w;
        }
    }
    lines
}

/// Helvetica, advance widths of ASCII 32 to 126 in WinAnsiEncoding (39 is quotesingle,
/// 96 is grave).
#[rustfmt::skip]
const HELVETICA: [u16; 95] = [
    // space ! " # $ % & ' ( ) * + , - . /
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    // 0-9
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556,
    // : ; < = > ? @
    278, 278, 584, 584, 584, 556, 1015,
    // A-Z
    667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611,
    // [ \ ] ^ _ `
    278, 278, 278, 469, 556, 333,
    // a-z
    556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833,
    556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500,
    // { | } ~
    334, 260, 334, 584,
];

/// Helvetica-Bold, advance widths of ASCII 32 to 126 in WinAnsiEncoding.
#[rustfmt::skip]
const HELVETICA_BOLD: [u16; 95] = [
    // space ! " # $ % & ' ( ) * + , - . /
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    // 0-9
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556,
    // : ; < = > ? @
    333, 333, 584, 584, 584, 611, 975,
    // A-Z
    722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611,
    // [ \ ] ^ _ `
    333, 278, 333, 584, 556, 333,
    // a-z
    556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889,
    611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500,
    // { | } ~
    389, 280, 389, 584,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_the_afm_files() {
        // Spot checks against Adobe's Helvetica.afm and Helvetica-Bold.afm.
        let w = |font, c: u8| glyph_width(font, c);
        assert_eq!(
            (
                w(Font::Regular, b' '),
                w(Font::Regular, b'a'),
                w(Font::Regular, b'W')
            ),
            (278, 556, 944)
        );
        assert_eq!(
            (
                w(Font::Regular, b'@'),
                w(Font::Regular, b'i'),
                w(Font::Regular, b'm')
            ),
            (1015, 222, 833)
        );
        assert_eq!(
            (
                w(Font::Regular, b'|'),
                w(Font::Regular, b'~'),
                w(Font::Regular, b'\'')
            ),
            (260, 584, 191)
        );
        assert_eq!(
            (
                w(Font::Bold, b'@'),
                w(Font::Bold, b'b'),
                w(Font::Bold, b'm')
            ),
            (975, 611, 889)
        );
        assert_eq!(
            (
                w(Font::Bold, b'\''),
                w(Font::Bold, b'z'),
                w(Font::Bold, b'|')
            ),
            (238, 500, 280)
        );
        assert_eq!(
            width(Font::Regular, b"Hello", 10.0),
            (722.0 + 556.0 + 222.0 + 222.0 + 556.0) / 100.0
        );
    }

    #[test]
    fn text_is_winansi_and_escaped() {
        assert_eq!(win("Zürich 東京"), b"Z\xfcrich ??".to_vec());
        assert_eq!(win("a\u{0}b\u{202E}c\nd\u{7f}"), b"abcd".to_vec());
        assert_eq!(win("€ — … “x”"), b"\x80 \x97 \x85 \x93x\x94".to_vec());
        assert_eq!(pdf_string(b"a(b)c\\d"), "(a\\(b\\)c\\\\d)");
        assert_eq!(pdf_string(b"\xfc\x85"), "(\\374\\205)");
        assert_eq!(utf16_string("Zü東\u{1F600}"), "<FEFF005A00FC6771D83DDE00>");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let long = win(&"verylonghostname-".repeat(10));
        let cut = fit(Font::Regular, &long, 8.5, 100.0);
        assert!(width(Font::Regular, &cut, 8.5) <= 100.0);
        assert_eq!(cut.last(), Some(&0x85));
        assert!(long.starts_with(&cut[..cut.len() - 1]));
        assert_eq!(fit(Font::Regular, b"short", 8.5, 100.0), b"short");
        // Wrapping keeps every word and respects the width.
        let text = win("the quick brown fox jumps over the lazy dog "
            .repeat(8)
            .trim_end());
        let lines = wrap(Font::Regular, &text, 9.5, 120.0);
        assert!(lines.len() > 3);
        assert!(lines.iter().all(|l| width(Font::Regular, l, 9.5) <= 120.0));
        assert_eq!(lines.join(&b' '), text);
        let long_word = wrap(Font::Regular, &[b'x'; 400], 9.5, 100.0);
        assert_eq!(long_word.concat(), vec![b'x'; 400]);
    }

    #[test]
    fn numbers_are_plain() {
        assert_eq!(n(0.0), "0");
        assert_eq!(n(-0.0001), "0");
        assert_eq!(n(12.5), "12.5");
        assert_eq!(n(1.0 / 3.0), "0.333");
        assert_eq!(n(595.0), "595");
        assert_eq!(n(1e-12), "0");
    }
}
