//! Text a plugin returns, made safe for logs and terminals.
//!
//! A plugin's reason, its captured stdout/stderr and the messages of its
//! failures reach the operator log (a text format: one event a line) and,
//! through 403 bodies, the CLI's terminal. A newline in them would start a
//! forged log line, an escape sequence would drive the terminal. The host
//! therefore escapes such characters in everything it passes on from a
//! plugin, and refuses reason codes that contain any (they are identifiers).

use std::borrow::Cow;

/// Whether `c` must not reach a log line or a terminal as it is: the
/// control characters (C0, DEL, C1), the Unicode line and paragraph
/// separators (log viewers break lines there), and the bidirectional
/// overrides and isolates (they reorder what a reader sees).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `s` holds any character [`is_unsafe_char`] names.
pub fn has_unsafe_chars(s: &str) -> bool {
    // Printable ASCII (what reason codes and most reasons are) is safe
    // byte by byte; anything else is decoded and checked per character.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return false;
    }
    s.chars().any(is_unsafe_char)
}

/// `s` with every character [`is_unsafe_char`] names written as an escape:
/// `\n`, `\r`, `\t`, or `\u{XXXX}` (the code point in hex). Everything else,
/// backslashes included, stays as it was; text without such characters is
/// returned unchanged (borrowed).
pub fn escape_unsafe(s: &str) -> Cow<'_, str> {
    if !has_unsafe_chars(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line_or_drive_a_terminal() {
        assert_eq!(escape_unsafe("plain text \\n"), "plain text \\n");
        assert!(matches!(escape_unsafe("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_unsafe("a\nINFO forged\r\t\u{1b}[31m\u{7}\u{7f}\u{9b}"),
            "a\\nINFO forged\\r\\t\\u{001b}[31m\\u{0007}\\u{007f}\\u{009b}"
        );
        assert_eq!(
            escape_unsafe("x\u{202e}y\u{2028}z\u{2066}"),
            "x\\u{202e}y\\u{2028}z\\u{2066}"
        );
        // Non-ASCII text that is not a control stays readable.
        assert_eq!(escape_unsafe("Größe ≤ 5 — ok"), "Größe ≤ 5 — ok");
        assert!(has_unsafe_chars("a\u{0}"));
        // The printable-ASCII shortcut agrees with the per-character rule.
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let s = format!("ok {c} ok");
            assert_eq!(has_unsafe_chars(&s), is_unsafe_char(c), "{:04x}", c as u32);
        }
        assert!(!has_unsafe_chars("sensitivity-environment.denied"));
    }
}
