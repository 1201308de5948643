//! What the CLI prints never carries a server's control characters to the
//! terminal: a deny reason comes from a policy plugin, and any text a
//! server (or someone who wrote its bucket) hands back could hold escape
//! sequences that retitle, recolour or rewrite the user's terminal.
//!
//! Every `println!`, `print!`, `eprintln!` and `eprint!` of this crate goes
//! through [`clean_output`] (the macros in `main.rs` shadow std's), so
//! nothing has to remember to call it. Error lines built from an API answer
//! also go through [`clean_line`], which keeps them one line.

use std::borrow::Cow;

/// Characters that must not reach a terminal as they are: the control
/// characters (C0, DEL, C1), the Unicode line and paragraph separators and
/// the bidirectional overrides and isolates.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if keep(c) || !is_unsafe(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // The JSON escape: printed JSON stays valid JSON of the same
            // value (serde_json escapes C0 itself, but not DEL, C1 or the
            // bidi controls).
            c => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Text for the terminal: every unsafe character escaped except newlines
/// and tabs, which multi-line output needs.
pub fn clean_output(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// One line for the terminal: every unsafe character escaped, newlines
/// included.
pub fn clean_line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(clean_output("a\nb\tc"), "a\nb\tc");
        assert_eq!(
            clean_output("x\u{1b}]0;t\u{7}\u{1b}[31m\r\u{9b}\u{7f}\u{202e}"),
            "x\\u001b]0;t\\u0007\\u001b[31m\\r\\u009b\\u007f\\u202e"
        );
        assert_eq!(clean_line("a\nb\tc"), "a\\nb\\tc");
        assert!(matches!(clean_line("plain ≤ text"), Cow::Borrowed(_)));
        // JSON stays JSON of the same value.
        let json = serde_json::to_string(&serde_json::json!({"k": "a\u{9b}\u{7f}\u{202e}\u{1b}"}))
            .unwrap();
        let cleaned = clean_output(&json);
        assert!(!cleaned.chars().any(is_unsafe));
        let back: serde_json::Value = serde_json::from_str(&cleaned).unwrap();
        assert_eq!(back["k"], "a\u{9b}\u{7f}\u{202e}\u{1b}");
    }
}
