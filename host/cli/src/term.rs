//! Printing text that came from outside: incidents, tokens' notes, guests, models, servers.
//!
//! A terminal obeys escape sequences in whatever it is given, so a label or a runbook
//! summary holding `ESC [1A ESC [2K` could erase the line above it — a FAILED verdict,
//! say. Everything the CLI prints for people goes through [`outln!`] / [`errln!`], which
//! escape every control character but the newlines of the line itself, and values from
//! outside go through [`clean`], which escapes newlines too (so a value cannot forge a
//! line of its own). JSON output goes through [`json_line`].

use std::borrow::Cow;

/// Characters a terminal may act on: C0 controls, DEL, C1 controls, and the Unicode
/// bidirectional overrides and isolates (which reorder what is shown).
fn dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| dangerous(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !dangerous(c) || keep(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// `s` with every control character (newlines included) and bidi override shown as a
/// visible escape (`\x1b`, `\n`, `\u{202e}`): safe to print on one line.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// A composed line (or lines): control characters escaped except its own newlines.
pub(crate) fn line(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n')
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
            "ok\\x1b[1A\\x1b[2K\\rverified\\n✓ all good\\x9b2J\\u{202e}txt\\x7f"
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
