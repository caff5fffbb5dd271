//! Text that came from outside, made safe to print on a terminal.
//!
//! Bundles, records, incident labels and model output are written by someone else; printed
//! raw, an escape sequence in them can move the cursor and erase a `FAILED` line so that a
//! failed check reads as passed, and a bidi override can make text read in another order.
//! [`escape_control`] is the one place the CLI turns such characters into visible escapes.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw: every C0 control (tab and newline included),
/// DEL, every C1 control, and the Unicode bidi controls (embeddings and overrides
/// U+202A–U+202E, isolates U+2066–U+2069, and the marks U+200E, U+200F, U+061C).
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{200e}' | '\u{200f}' | '\u{61c}')
}

/// `text` with every character [`is_unsafe_char`] names replaced by a visible escape:
/// `\x1b` for C0 controls and DEL, `\u{9b}` for C1 controls, `\u{202e}` for bidi controls.
/// Everything else, backslashes included, is kept as it is, so escaping twice changes
/// nothing. Borrowed when there is nothing to escape.
///
/// ```
/// use runwarden_evidence::escape_control;
/// assert_eq!(escape_control("ok\x1b[2K\u{202e}"), "ok\\x1b[2K\\u{202e}");
/// assert!(matches!(escape_control("plain"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape_control("a\tb\nc\rd\x00\x1b[1A\x7f\u{85}\u{9b}"),
            "a\\x09b\\x0ac\\x0dd\\x00\\x1b[1A\\x7f\\u{85}\\u{9b}"
        );
        for c in ['\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200f}'] {
            let out = escape_control(&format!("x{c}y")).into_owned();
            assert_eq!(out, format!("x\\u{{{:x}}}y", c as u32));
        }
        let kept = "naïve café — 日本語 \\x1b ✓ \u{a0}";
        assert_eq!(escape_control(kept), kept);
        let once = escape_control("\x1b\u{202e}").into_owned();
        assert_eq!(escape_control(&once), once, "escaping is idempotent");
    }
}
