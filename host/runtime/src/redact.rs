//! Scrubbing secret values out of everything an invocation records or returns.
//!
//! A secret can reach text in many spellings: as is, percent-encoded by a URL library
//! (fully, partly, `%2f` or `%2F`, a space as `%20` or `+`), JSON- or Debug-escaped
//! (`\"`, `\\`, `\/`, `\u0022`), or base64 (standard or URL-safe alphabet, padded or not,
//! and at any of the three byte alignments inside a longer base64 string, e.g. a Basic
//! `user:password` header). Each secret becomes one regular expression matching all of
//! them: per character of the value, the raw character or any of its escapes, so mixed
//! spellings match too; then the base64 forms as literals. Matching is linear in the text.
//!
//! A cut (an output limit, a trace string bound, an abandoned run) can split a secret and
//! leave its first bytes at the end of the text: [`Redactor::redact_cut`] also drops a
//! trailing piece of at least [`MIN_TAIL`] bytes that could begin a secret.

use base64::Engine;
use regex::Regex;

/// Values shorter than this are not scrubbed: they would scrub unrelated text.
pub(crate) const MIN_SECRET: usize = 3;
/// The shortest trailing piece of a secret that a cut may not leave behind.
pub(crate) const MIN_TAIL: usize = 4;
/// Base64 forms at a shifted alignment are only scrubbed when at least this long, since
/// their first and last characters are not determined by the secret alone.
const MIN_SHIFTED_B64: usize = 8;

struct Secret {
    name: String,
    /// Per character of the value: every spelling of it.
    units: Vec<Vec<String>>,
    /// Base64 spellings, as literals.
    literals: Vec<String>,
    /// All of the above in one expression; `None` if it could not be compiled (then the
    /// raw value and its whole-value spellings are replaced literally).
    re: Option<Regex>,
    /// Longest text one spelling of the value can take, in bytes.
    longest: usize,
}

/// The secrets revealed so far in one invocation.
#[derive(Default)]
pub(crate) struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    /// Remember `value` (the secret `name`) so it is scrubbed from now on.
    pub fn add(&mut self, name: &str, value: &str) {
        if value.len() < MIN_SECRET || self.secrets.iter().any(|s| s.name == name) {
            return;
        }
        let units: Vec<Vec<String>> = value.chars().map(spellings).collect();
        let literals = base64_forms(value.as_bytes());
        let mut pattern = String::new();
        for alts in &units {
            pattern.push_str("(?:");
            pattern.push_str(
                &alts
                    .iter()
                    .map(|a| regex::escape(a))
                    .collect::<Vec<_>>()
                    .join("|"),
            );
            pattern.push(')');
        }
        for l in &literals {
            pattern.push('|');
            pattern.push_str(&regex::escape(l));
        }
        let re = regex::RegexBuilder::new(&pattern)
            .size_limit(64 << 20)
            .build()
            .ok();
        let longest = units
            .iter()
            .map(|a| a.iter().map(String::len).max().unwrap_or(0))
            .sum::<usize>()
            .max(literals.iter().map(String::len).max().unwrap_or(0));
        self.secrets.push(Secret {
            name: name.to_string(),
            units,
            literals,
            re,
            longest,
        });
        // Longer values first, so a secret containing another keeps its own name.
        self.secrets
            .sort_by_key(|s| std::cmp::Reverse(s.units.len()));
    }

    /// Is there nothing to scrub?
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every spelling of every secret replaced by `[secret:NAME]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            let mark = format!("[secret:{}]", s.name);
            match &s.re {
                Some(re) => {
                    if re.is_match(&out) {
                        out = re.replace_all(&out, regex::NoExpand(&mark)).into_owned();
                    }
                }
                None => {
                    let whole: String = s.units.iter().map(|a| a[0].as_str()).collect();
                    for form in std::iter::once(&whole).chain(&s.literals) {
                        out = out.replace(form.as_str(), &mark);
                    }
                }
            }
        }
        out
    }

    /// [`redact`](Self::redact), then drop a trailing piece of at least [`MIN_TAIL`]
    /// bytes that could be the start of a secret: for text that was (or will be) cut.
    pub fn redact_cut(&self, text: &str) -> String {
        let mut out = self.redact(text);
        for s in &self.secrets {
            if let Some(at) = s.tail_start(&out) {
                out.truncate(at);
                out.push_str(&format!("[secret:{}]", s.name));
            }
        }
        out
    }

    /// `text` cut to at most `max` bytes (plus a marker) without leaving any part of a
    /// secret: scrubbed first, then cut, then any secret's first bytes at the cut dropped.
    pub fn redact_and_cut(&self, text: &str, max: usize) -> String {
        let out = self.redact(text);
        if out.len() <= max {
            return out;
        }
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        let mut kept = self.redact_cut(&out[..end]);
        kept.push_str(&format!("…[{} bytes]", out.len()));
        kept
    }
}

impl Secret {
    /// Where a trailing piece of `text` that could begin this secret starts, if any.
    fn tail_start(&self, text: &str) -> Option<usize> {
        let from = text.len().saturating_sub(self.longest);
        let mut at = from;
        while at + MIN_TAIL <= text.len() {
            if text.is_char_boundary(at) {
                let rest = &text[at..];
                if prefix_of_units(rest, &self.units)
                    || self
                        .literals
                        .iter()
                        .any(|l| l.len() > rest.len() && l.starts_with(rest))
                {
                    return Some(at);
                }
            }
            at += 1;
        }
        None
    }
}

/// Is `rest`, all of it, a beginning of some spelling of `units`?
fn prefix_of_units(rest: &str, units: &[Vec<String>]) -> bool {
    if rest.is_empty() {
        return true;
    }
    let Some((alts, more)) = units.split_first() else {
        return false;
    };
    alts.iter().any(|a| {
        if rest.len() >= a.len() {
            rest.starts_with(a.as_str()) && prefix_of_units(&rest[a.len()..], more)
        } else {
            a.starts_with(rest)
        }
    })
}

/// Every spelling of one character: itself, percent-encoded (upper- and lower-case hex,
/// `+` for a space), and JSON/Debug-escaped.
fn spellings(c: char) -> Vec<String> {
    let mut v = vec![c.to_string()];
    let mut buf = [0u8; 4];
    let bytes = c.encode_utf8(&mut buf).as_bytes();
    v.push(bytes.iter().map(|b| format!("%{b:02X}")).collect());
    v.push(bytes.iter().map(|b| format!("%{b:02x}")).collect());
    if c == ' ' {
        v.push("+".into());
    }
    match c {
        '"' => v.push("\\\"".into()),
        '\\' => v.push("\\\\".into()),
        '/' => v.push("\\/".into()),
        '\n' => v.push("\\n".into()),
        '\r' => v.push("\\r".into()),
        '\t' => v.push("\\t".into()),
        '\u{8}' => v.push("\\b".into()),
        '\u{c}' => v.push("\\f".into()),
        '\'' => v.push("\\'".into()),
        _ => {}
    }
    let mut units = [0u16; 2];
    let units = c.encode_utf16(&mut units);
    v.push(units.iter().map(|u| format!("\\u{u:04x}")).collect());
    v.push(units.iter().map(|u| format!("\\u{u:04X}")).collect());
    v.sort();
    v.dedup();
    // Longest first, so an escape wins over the bare character it starts with.
    v.sort_by_key(|a| std::cmp::Reverse(a.len()));
    v
}

/// The value's base64 spellings: the whole value (padded and not, both alphabets), and
/// the characters determined by the value alone when it starts 1 or 2 bytes into a
/// 3-byte group of a longer encoded string.
fn base64_forms(value: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(value));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(value);
            let enc = engine.encode(&shifted);
            // Characters mixing prefix bits: 0, 2 or 3 at the start.
            let skip = [0, 2, 3][shift];
            // At the end, a partial group's last character mixes in the next byte.
            let total = shifted.len();
            let keep = total / 3 * 4 + [0, 1, 2][total % 3];
            if keep > skip {
                let core = enc[skip..keep].to_string();
                if shift == 0 || core.len() >= MIN_SHIFTED_B64 {
                    forms.push(core);
                }
            }
        }
    }
    forms.retain(|f| f.len() >= MIN_SECRET);
    forms.sort();
    forms.dedup();
    // Longest first: alternatives match first-come, and a padded form must win over the
    // same form without its padding.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = r#"p@ss w/rd+%&"\"#;

    fn r() -> Redactor {
        let mut r = Redactor::default();
        r.add("db", NASTY);
        r
    }

    #[test]
    fn every_spelling_of_a_secret_is_scrubbed() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let r = r();
        let json = serde_json::to_string(NASTY).unwrap();
        let debug = format!("{NASTY:?}");
        let strict: String = NASTY.bytes().map(|b| format!("%{b:02X}")).collect();
        let lower: String = NASTY.bytes().map(|b| format!("%{b:02x}")).collect();
        let url_lib = "p@ss%20w/rd+%&%22\\"; // how the url crate writes it in a query
        let form = "p%40ss+w%2Frd%2B%25%26%22%5C";
        let basic = STANDARD.encode(format!("admin:{NASTY}"));
        for (what, text) in [
            ("raw", NASTY.to_string()),
            ("json", json),
            ("debug", debug),
            ("percent", strict),
            ("percent lower", lower),
            ("url crate", url_lib.into()),
            ("form", form.into()),
            ("base64", STANDARD.encode(NASTY)),
            ("base64url", URL_SAFE_NO_PAD.encode(NASTY)),
            ("basic auth", basic.clone()),
            ("basic auth 1", STANDARD.encode(format!(":{NASTY}"))),
            ("basic auth 2", STANDARD.encode(format!("a:{NASTY}"))),
        ] {
            let text = format!("before {text} after");
            let out = r.redact(&text);
            assert!(out.contains("[secret:db]"), "{what}: {out}");
            assert!(
                !out.contains("w/rd") && !out.contains("w%2") && !out.contains("rd+"),
                "{what}: {out}"
            );
        }
    }

    #[test]
    fn a_cut_leaves_no_first_bytes_of_a_secret() {
        let r = r();
        // Cut after "p@ss w": the first 6 bytes must go.
        let text = format!("log: {}", &NASTY[..6]);
        assert_eq!(r.redact_cut(&text), "log: [secret:db]");
        // Percent-encoded and cut in the middle of an escape.
        assert_eq!(r.redact_cut("u=p%40ss%2"), "u=[secret:db]");
        // Three bytes are not enough to say.
        assert_eq!(r.redact_cut("x p@s"), "x p@s");
        let long = format!("{}{NASTY} tail", "a".repeat(20));
        let cut = r.redact_and_cut(&long, 24);
        assert!(!cut.contains("p@ss"), "{cut}");
        assert!(cut.starts_with("aaaa"), "{cut}");
    }

    #[test]
    fn short_and_unrelated_text_is_left_alone() {
        let mut r = Redactor::default();
        r.add("pin", "12");
        r.add("tok", "hunter22");
        assert_eq!(r.redact("12 hunter2 ok"), "12 hunter2 ok");
        assert_eq!(r.redact("x hunter22"), "x [secret:tok]");
    }
}
