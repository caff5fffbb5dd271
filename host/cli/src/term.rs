//! Printing text that came from outside: incidents, tokens' notes, guests, models, servers.
//!
//! A terminal obeys escape sequences in whatever it is given, so a label or a runbook
//! summary holding `ESC [1A ESC [2K` could erase the line above it — a FAILED verdict,
//! say. Everything the CLI prints for people goes through [`outln!`] / [`errln!`], which
//! escape every control character but the newlines of the line itself, and values from
//! outside go through [`clean`], which escapes newlines too (so a value cannot forge a
//! line of its own). JSON output goes through [`json_line`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

/// Characters a terminal may act on (C0, DEL, C1, bidi controls): one definition, in
/// `runwarden-evidence`, shared with `evidence verify`.
fn dangerous(c: char) -> bool {
    runwarden_evidence::is_unsafe_char(c)
}

/// `s` with every control character (newlines included) and bidi control shown as a
/// visible escape (`\x1b`, `\x0a`, `\u{202e}`): safe to print on one line.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    runwarden_evidence::escape_control(s)
}

/// A composed line (or lines): control characters escaped except its own newlines.
pub(crate) fn line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| dangerous(c) && c != '\n') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.split('\n').map(clean).collect::<Vec<_>>().join("\n"))
}

/// `v` as one line of JSON. serde_json escapes C0 controls but leaves DEL, C1 and the
/// bidi characters raw; those become `\uXXXX` here, which is still valid JSON.
pub(crate) fn json_line(v: &serde_json::Value) -> String {
    json_text(v.to_string())
}

/// JSON text from serde_json (compact or pretty): DEL, C1 and bidi characters inside its
/// strings as `\uXXXX`. serde_json never puts a raw newline inside a string, so the
/// newlines of pretty output are kept.
pub(crate) fn json_text(text: String) -> String {
    if !text.chars().any(|c| dangerous(c) && c != '\n') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if dangerous(c) && c != '\n' {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `println!` for people: the formatted text with control characters escaped.
macro_rules! outln {
    ($($arg:tt)*) => {
        println!("{}", $crate::term::line(&format!($($arg)*)))
    };
}

/// `eprintln!` for people: the formatted text with control characters escaped.
macro_rules! errln {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::term::line(&format!($($arg)*)))
    };
}

/// A progress line on standard error, only when it is a terminal: rewritten in place at
/// most every 200 ms, cleared when done. Nothing at all when output goes to a file or
/// another program, so logs and tests never see it. Shared freely between threads.
pub(crate) struct Progress {
    what: &'static str,
    total: AtomicU64,
    start: std::time::Instant,
    /// When it was last shown: milliseconds since `start`, plus one (0: never).
    shown: AtomicU64,
    on: bool,
}

impl Progress {
    /// Progress of `what` towards `total`.
    pub(crate) fn new(what: &'static str, total: u64) -> Progress {
        use std::io::IsTerminal as _;
        Progress {
            what,
            total: AtomicU64::new(total),
            start: std::time::Instant::now(),
            shown: AtomicU64::new(0),
            on: std::io::stderr().is_terminal(),
        }
    }

    /// Never show anything (machine-readable output was asked for).
    pub(crate) fn off(&mut self) {
        self.on = false;
    }

    /// `done` of `total` so far.
    pub(crate) fn at_of(&self, done: u64, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.at(done);
    }

    /// `done` of the total so far.
    pub(crate) fn at(&self, done: u64) {
        if !self.on {
            return;
        }
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.shown.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 200 {
            return;
        }
        self.shown.store(now, Ordering::Relaxed);
        let pct = (done.saturating_mul(100))
            .checked_div(self.total.load(Ordering::Relaxed))
            .unwrap_or(100)
            .min(100);
        let width = 30usize;
        let filled = (pct as usize * width) / 100;
        eprint!(
            "\r{}: [{}{}] {pct:>3}%",
            self.what,
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
    }

    /// Clear the line.
    pub(crate) fn done(&self) {
        if self.on && self.shown.load(Ordering::Relaxed) != 0 {
            eprint!("\r{}\r", " ".repeat(self.what.len() + 40));
        }
    }
}

/// Reads through to `inner`, telling `progress` how many bytes have been read.
pub(crate) struct Counting<'a, R> {
    pub(crate) inner: R,
    pub(crate) read: u64,
    pub(crate) progress: &'a Progress,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.at(self.read);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_forged_lines_are_shown_not_obeyed() {
        let attack = "ok\x1b[1A\x1b[2K\rverified\n✓ all good\u{9b}2J\u{202e}txt\x7f";
        let c = clean(attack);
        assert!(!c.chars().any(dangerous), "{c}");
        assert_eq!(
            c,
            "ok\\x1b[1A\\x1b[2K\\x0dverified\\x0a✓ all good\\u{9b}2J\\u{202e}txt\\x7f"
        );
        assert_eq!(line("a\nb\x1b"), "a\nb\\x1b");
        assert!(matches!(clean("plain ü text"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_valid_and_inert() {
        let v = serde_json::json!({"label": "a\u{9b}b\u{202e}c\x1b\x7f"});
        let text = json_line(&v);
        assert!(!text.chars().any(dangerous), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
