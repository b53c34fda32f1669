//! Diagnostics: every problem found in a declaration, with where it is and how to fix it.
//!
//! Rendered as `file:line:col: Kind/name: field.path: message (hint)`, the shape compilers
//! use, so editors and terminals can jump to the spot. Validation collects them all rather
//! than stopping at the first.
//!
//! Every text a diagnostic holds passes through [`super::echo`] as the diagnostic is built,
//! and its file name as it is rendered: user text is never echoed raw (see there).

use std::fmt;
use std::path::{Path, PathBuf};

use super::echo::{clean, clean_path};

/// A position in a file; 1-based. `line == 0` means "the whole file".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Self {
        Pos { line, col }
    }
}

/// How serious a diagnostic is. Errors fail validation; warnings are reported only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a declaration.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Pos,
    pub severity: Severity,
    /// `Kind/name` of the resource, when known.
    pub resource: Option<String>,
    /// Dotted field path, e.g. `spec.check.command.run`.
    pub field: Option<String>,
    pub message: String,
    /// A suggestion, e.g. `did you mean "owner"?`.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            pos,
            severity: Severity::Error,
            resource: None,
            field: None,
            message: clean(&message.into()),
            hint: None,
        }
    }

    pub fn warning(file: impl Into<PathBuf>, pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, pos, message)
        }
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(clean(&resource.into()));
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !field.is_empty() {
            self.field = Some(clean(&field));
        }
        self
    }

    pub fn hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint.map(|h| clean(&h));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", display_path(&self.file))?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.col)?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Paths print with forward slashes whatever the platform, so messages are stable in tests;
/// control characters and bytes that are not UTF-8 print escaped (see [`super::echo`]).
pub fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    // Only Windows separates with `\`; elsewhere it is part of a name (or of an escape).
    if cfg!(windows) {
        clean_path(&text.replace('\\', "/"))
    } else {
        clean_path(&text)
    }
}

/// `did you mean "x"?` for the closest candidate within a small edit distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean \"{c}\"?"))
}

/// Words longer than this are not typos of a name: no suggestion is looked for, which also
/// keeps the cost of a suggestion bounded whatever the size of the input.
pub const MAX_SUGGESTED_CHARS: usize = 64;

/// The candidate closest to `word`, if one is close enough to be a typo of it. Candidates
/// whose length differs from `word`'s by more than the allowed edits are not compared (no
/// alignment could be close enough), so the cost is at most candidates × 64².
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = word.chars().count();
    if len > MAX_SUGGESTED_CHARS {
        return None;
    }
    let limit = (len / 3).clamp(1, 3);
    let word = lowercase(word);
    candidates
        .into_iter()
        .filter(|c| c.len() <= 4 * (len + limit) && c.chars().count().abs_diff(len) <= limit)
        .filter_map(|c| {
            let other = lowercase(c);
            distance_within(&word, &other, limit).map(|d| (d, c))
        })
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// The characters of `text`, lower-cased (a fast path for ASCII, the usual case for names).
fn lowercase(text: &str) -> Vec<char> {
    if text.is_ascii() {
        text.bytes()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect()
    } else {
        text.chars().flat_map(char::to_lowercase).collect()
    }
}

/// Edit distance counting an insertion, deletion, substitution or swap of two neighbours as
/// one edit (optimal string alignment), case-insensitive: `Gaol` is one edit from `Goal`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (lowercase(a), lowercase(b));
    distance_within(&a, &b, usize::MAX).unwrap_or(usize::MAX)
}

/// The optimal-string-alignment distance of `a` and `b` if it is at most `limit`. Three
/// rolling rows; stops as soon as a whole row exceeds `limit`, since no later row can come
/// back under it: a name far from every candidate costs a few rows, not the whole table.
fn distance_within(a: &[char], b: &[char], limit: usize) -> Option<usize> {
    let width = b.len() + 1;
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut row: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        row[0] = i;
        let mut lowest = row[0];
        for j in 1..width {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(row[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
            lowest = lowest.min(best);
        }
        if lowest > limit {
            return None;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut row);
    }
    let d = previous[width - 1];
    (d <= limit).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_closest_name() {
        assert_eq!(
            did_you_mean("ownr", ["owner", "product", "priority"]),
            Some("did you mean \"owner\"?".into())
        );
        assert_eq!(did_you_mean("zzzzzz", ["owner", "product"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("Gaol", "Goal"), 1);
        assert_eq!(
            did_you_mean("Grpe", ["Grep", "Glob"]),
            Some("did you mean \"Grep\"?".into())
        );
    }

    #[test]
    fn suggestions_cost_little_on_huge_words() {
        let huge = "o".repeat(400_000);
        let started = std::time::Instant::now();
        assert_eq!(closest(&huge, ["owner", "product"]), None);
        assert_eq!(
            closest("ownr", ["o".repeat(400_000).as_str(), "owner"]),
            Some("owner")
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn user_text_cannot_forge_a_line_or_drive_the_terminal() {
        let d = Diagnostic::error(
            "x\nfake.yaml:1:1: all good\u{1b}[2J",
            Pos::new(1, 1),
            format!("unknown owner \"{}\u{7}\"", "a".repeat(5000)),
        )
        .field("spec.\rowner");
        let shown = d.to_string();
        assert!(!shown.contains(['\n', '\r', '\u{1b}', '\u{7}']), "{shown}");
        assert!(shown.starts_with("x\\nfake.yaml:1:1: all good\\u{1b}[2J:1:1: spec.\\rowner: "));
        assert!(shown.len() < 300, "{shown}");
    }

    #[test]
    fn renders_like_a_compiler() {
        let d = Diagnostic::error("goals/a.yaml", Pos::new(7, 3), "unknown field")
            .resource("Goal/a")
            .field("spec.ownr")
            .hint(Some("did you mean \"owner\"?".into()));
        assert_eq!(
            d.to_string(),
            "goals/a.yaml:7:3: Goal/a: spec.ownr: unknown field (did you mean \"owner\"?)"
        );
    }
}
