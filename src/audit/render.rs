//! How `proto audit` prints records for a person: a table row each, with a one-line
//! summary of the input and outcome, or a long form followed by the record's diff (as
//! `git log -p` shows a commit and its patch).

use serde_json::Value;

use crate::output;
use crate::store::AuditRecord;

/// The table's columns.
pub const HEADER: [&str; 7] = ["TIME", "AGENT", "GOAL", "TASK", "ACTION", "DIFF", "SUMMARY"];

/// The longest summary a table row shows.
const SUMMARY_CHARS: usize = 100;

/// The longest single value a summary shows.
const VALUE_CHARS: usize = 40;

fn time(record: &AuditRecord) -> String {
    record
        .time
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn task(record: &AuditRecord) -> String {
    record.task.map_or_else(|| "-".into(), |t| t.to_string())
}

/// The table `proto audit` prints by default.
pub fn table(records: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                time(r),
                r.agent.clone(),
                r.goal.clone().unwrap_or_else(|| "-".into()),
                task(r),
                r.action.clone(),
                diff_size(r.diff.as_deref()),
                summary(r),
            ]
        })
        .collect();
    output::table(&HEADER, &rows)
}

/// `+added/-removed` lines of a diff, or `-` for none.
fn diff_size(diff: Option<&str>) -> String {
    let Some(diff) = diff.filter(|d| !d.is_empty()) else {
        return "-".into();
    };
    let count = |sign: char, header: &str| {
        diff.lines()
            .filter(|l| l.starts_with(sign) && !l.starts_with(header))
            .count()
    };
    format!("+{}/-{}", count('+', "+++"), count('-', "---"))
}

/// `input → outcome` on one line, cut to fit a table.
pub fn summary(record: &AuditRecord) -> String {
    let text = format!("{} → {}", brief(&record.input), brief(&record.outcome));
    cut(&text, SUMMARY_CHARS)
}

/// A value in a few words: an object's scalar fields as `key=value`, nested ones as `{…}`
/// or `[n]`; a string as itself.
fn brief(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => "-".into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => scalar(other),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => cut(s, VALUE_CHARS),
        Value::Object(_) => "{…}".into(),
        Value::Array(items) => format!("[{}]", items.len()),
        other => other.to_string(),
    }
}

/// The first line's worth of `text`: control characters as spaces, at most `max` chars.
fn cut(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        flat.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    }
}

/// Each record as a header line, its input and outcome as compact JSON, and its diff when
/// it has one; records separated by a blank line.
pub fn long(records: &[AuditRecord]) -> String {
    let mut out = String::new();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{} {} goal={} task={} action={} id={}\n",
            time(r),
            r.agent,
            r.goal.as_deref().unwrap_or("-"),
            task(r),
            r.action,
            r.id
        ));
        out.push_str(&format!("  input:   {}\n", r.input));
        out.push_str(&format!("  outcome: {}\n", r.outcome));
        if let Some(diff) = r.diff.as_deref().filter(|d| !d.is_empty()) {
            out.push_str(diff);
            if !diff.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn write() -> AuditRecord {
        AuditRecord {
            id: 9,
            time: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            agent: "ceo".into(),
            goal: Some("g".into()),
            task: Some(4),
            action: "Write".into(),
            input: serde_json::json!({"file_path": "a.txt", "content": "line one\nline two"}),
            outcome: serde_json::json!({"ok": true}),
            diff: Some("--- a/a.txt\n+++ b/a.txt\n@@ -0,0 +1,2 @@\n+line one\n+line two\n".into()),
        }
    }

    #[test]
    fn a_row_summarises_on_one_line() {
        let text = table(&[write()]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("2026-01-02T03:04:05Z   ceo"), "{text}");
        assert!(row.contains("+2/-0"), "{text}");
        assert!(row.contains("file_path=a.txt"), "{text}");
        assert!(row.contains("content=line one line two"), "{text}");
        assert!(row.ends_with("→ ok=true"), "{text}");
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn a_long_value_is_cut() {
        let mut r = write();
        r.input =
            serde_json::json!({"command": "x".repeat(500), "nested": {"a": 1}, "list": [1, 2]});
        let s = summary(&r);
        assert!(s.chars().count() <= SUMMARY_CHARS, "{s}");
        assert!(s.contains('…'), "{s}");
        r.input = serde_json::json!({"nested": {"a": 1}, "list": [1, 2]});
        assert_eq!(summary(&r), "list=[2] nested={…} → ok=true");
    }

    #[test]
    fn the_long_form_carries_the_diff() {
        let text = long(&[write(), write()]);
        assert!(text.contains("action=Write id=9\n"), "{text}");
        assert!(
            text.contains("+++ b/a.txt\n@@ -0,0 +1,2 @@\n+line one\n"),
            "{text}"
        );
        assert!(text.contains("+line two\n\n2026"), "{text}");
    }
}
