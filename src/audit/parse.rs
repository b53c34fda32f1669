//! The lines of one committed audit file, parsed. A line that is not a record is skipped
//! and reported with where it is (file, commit, line number) and why; the rest still count.

use std::fmt;

use crate::store::AuditRecord;

/// A line left out, located for a person to find it: `git show COMMIT:FILE`, line LINE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The path in the company repository.
    pub file: String,
    /// The commit the file was read at (abbreviated).
    pub commit: String,
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (commit {}): not an audit record, skipped: {}",
            self.file, self.line, self.commit, self.reason
        )
    }
}

/// The records of `text`, the content of `file` at `commit`, and the lines skipped. Blank
/// lines are not records and not errors (an editor's final newline).
pub fn parse_file(file: &str, commit: &str, text: &[u8]) -> (Vec<AuditRecord>, Vec<Skipped>) {
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<AuditRecord>(line) {
            Ok(record) => records.push(record),
            Err(e) => skipped.push(Skipped {
                file: file.to_owned(),
                commit: commit.to_owned(),
                line: i + 1,
                reason: e.to_string(),
            }),
        }
    }
    (records, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":1,"time":"2026-01-02T03:04:05+00:00","agent":"ceo","goal":"g","task":4,"action":"Write","input":{"file_path":"a"},"outcome":{"ok":true},"diff":"+a\n"}"#;

    #[test]
    fn a_bad_line_is_located_and_the_rest_still_count() {
        let text = format!(
            "{GOOD}\nnot json\n\n{{\"id\":2}}\n{}\n",
            GOOD.replace("\"id\":1", "\"id\":3")
        );
        let (records, skipped) =
            parse_file(".proto/audit/2026-01-02.jsonl", "abc123", text.as_bytes());
        assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(records[0].diff.as_deref(), Some("+a\n"));
        assert_eq!(
            skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![2, 4]
        );
        let shown = skipped[1].to_string();
        assert!(
            shown.starts_with(".proto/audit/2026-01-02.jsonl:4 (commit abc123): ")
                && shown.contains("missing field"),
            "{shown}"
        );
    }

    #[test]
    fn invalid_utf8_is_a_skipped_line() {
        let mut text = b"\xff\xfe\n".to_vec();
        text.extend_from_slice(GOOD.as_bytes());
        let (records, skipped) = parse_file("f", "c", &text);
        assert_eq!((records.len(), skipped.len(), skipped[0].line), (1, 1, 1));
    }
}
