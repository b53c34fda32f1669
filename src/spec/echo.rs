//! How user text is echoed in diagnostics: never raw.
//!
//! Values, keys and file names come from the repository, and a diagnostic is printed to a
//! terminal, a log or a status condition. So every piece of text that goes into a
//! [`super::Diagnostic`] passes through [`clean`]: control characters (ESC, BEL, NUL, CR,
//! LF...) and the bidirectional overrides that reorder what a reader sees are shown as
//! escapes, so a value can neither drive the terminal nor forge a line such as
//! `fake.yaml:1:1: all good`; and long values are cut with an ellipsis, so a 4 MB value
//! costs a line, not a screenful.
//!
//! ```
//! use proto::spec::echo::clean;
//! assert_eq!(clean("bad\u{1b}[31m \"x\nfake.yaml:1:1: ok\""), "bad\\u{1b}[31m \"x\\nfake.yaml:1:1: ok\"");
//! ```

use std::borrow::Cow;

/// A quoted value is cut after this many characters.
pub const MAX_VALUE_CHARS: usize = 80;
/// An unquoted word (a field path, a file name) is cut after this many characters; longer
/// than a value, since paths in messages are legitimately long.
pub const MAX_WORD_CHARS: usize = 160;
/// A whole message is cut after this many characters, whatever its words.
pub const MAX_TEXT_CHARS: usize = 1000;

const ELLIPSIS: char = '…';

/// Whether `c` must not reach a terminal as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
        || c == '\u{2028}'
        || c == '\u{2029}'
}

/// `text` with every unsafe character written as an escape (`\n`, `\t`, `\0`, `\u{1b}`).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` escaped, with each quoted value longer than [`MAX_VALUE_CHARS`], each word longer
/// than [`MAX_WORD_CHARS`] and the whole beyond [`MAX_TEXT_CHARS`] cut with an ellipsis.
/// Linear in the length of `text`.
pub fn clean(text: &str) -> String {
    let escaped = escape(text);
    // No run of a text this short can be over a limit: nothing to cut (the usual case).
    if escaped.len() <= MAX_VALUE_CHARS {
        return escaped.into_owned();
    }
    let mut out = String::with_capacity(escaped.len().min(4 * MAX_TEXT_CHARS));
    let mut quoted = false;
    // Characters kept of the current value or word, and whether some were dropped.
    let mut run = 0usize;
    let mut dropped = false;
    let mut total = 0usize;
    for c in escaped.chars() {
        let ends_run = c == '"' || (!quoted && c == ' ');
        if ends_run {
            if dropped {
                out.push(ELLIPSIS);
            }
            if c == '"' {
                quoted = !quoted;
            }
            run = 0;
            dropped = false;
        } else {
            let limit = if quoted {
                MAX_VALUE_CHARS
            } else {
                MAX_WORD_CHARS
            };
            if run >= limit {
                dropped = true;
                continue;
            }
            run += 1;
        }
        if total >= MAX_TEXT_CHARS {
            out.push(ELLIPSIS);
            return out;
        }
        out.push(c);
        total += 1;
    }
    if dropped {
        out.push(ELLIPSIS);
    }
    out
}

/// A file name for a diagnostic: escaped, and cut in the middle when very long, so both its
/// folder and its file name stay readable.
pub fn clean_path(path: &str) -> String {
    let escaped = escape(path);
    let count = escaped.chars().count();
    if count <= 2 * MAX_WORD_CHARS {
        return escaped.into_owned();
    }
    let head: String = escaped.chars().take(MAX_WORD_CHARS).collect();
    let tail: String = escaped.chars().skip(count - MAX_WORD_CHARS).collect();
    format!("{head}{ELLIPSIS}{tail}")
}

/// A file name that is not UTF-8, readable: its valid parts as they are, each invalid byte
/// as `\xFF`, so two such names stay apart and the user can find the file.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_show_their_bytes() {
        assert_eq!(name_from_bytes(b"bad\xff.yaml"), "bad\\xFF.yaml");
        assert_eq!(name_from_bytes("ok-é".as_bytes()), "ok-é");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("a\u{1b}[2J\u{7}\0b\r\nc\td\u{202e}"),
            "a\\u{1b}[2J\\u{7}\\0b\\r\\nc\\td\\u{202e}"
        );
    }

    #[test]
    fn long_values_are_cut_with_an_ellipsis() {
        let value = "x".repeat(10_000);
        let message = clean(&format!("unknown owner \"{value}\" here"));
        assert_eq!(
            message,
            format!("unknown owner \"{}…\" here", "x".repeat(MAX_VALUE_CHARS))
        );
        let word = clean(&"y".repeat(10_000));
        assert_eq!(word.chars().count(), MAX_WORD_CHARS + 1);
        let spaced = clean(&"a ".repeat(10_000));
        assert!(spaced.chars().count() <= MAX_TEXT_CHARS + 1);
        assert!(spaced.ends_with(ELLIPSIS));
    }

    #[test]
    fn short_text_is_unchanged() {
        let text = "a \"quoted\" value, spec.owner: did you mean \"owner\"?";
        assert_eq!(clean(text), text);
    }

    #[test]
    fn long_paths_keep_both_ends() {
        let path = format!("goals/{}/goal.yaml", "d".repeat(1000));
        let shown = clean_path(&path);
        assert!(shown.starts_with("goals/ddd"));
        assert!(shown.ends_with("ddd/goal.yaml"));
        assert!(shown.chars().count() <= 2 * MAX_WORD_CHARS + 1);
    }
}
