//! The query of `proto audit`, pure: exact `--goal`, `--agent` and `--task`, a glob for
//! `--action` and a lower time bound for `--since`, combined with AND.

use chrono::{DateTime, Utc};

pub use crate::pattern::Glob;
use crate::store::{AuditRecord, TaskId};

/// The time `ago` before `now` (`--since`); an age past the calendar's start is all time.
pub fn cutoff(now: DateTime<Utc>, ago: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| now.checked_sub_signed(ago))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Which records `proto audit` prints; `None` fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub goal: Option<String>,
    pub agent: Option<String>,
    pub task: Option<TaskId>,
    pub action: Option<Glob>,
    /// Records at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl Filter {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        self.goal
            .as_ref()
            .is_none_or(|g| record.goal.as_ref() == Some(g))
            && self.agent.as_ref().is_none_or(|a| &record.agent == a)
            && self.task.is_none_or(|t| record.task == Some(t))
            && self
                .action
                .as_ref()
                .is_none_or(|g| g.matches(&record.action))
            && self.since.is_none_or(|s| record.time >= s)
    }

    /// The records that match, in time order (ties in id order, which is the order they
    /// were recorded).
    pub fn apply(&self, records: Vec<AuditRecord>) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = records.into_iter().filter(|r| self.matches(r)).collect();
        out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(
        id: i64,
        hour: u32,
        agent: &str,
        goal: Option<&str>,
        task: Option<i64>,
        action: &str,
    ) -> AuditRecord {
        AuditRecord {
            id,
            time: Utc.with_ymd_and_hms(2026, 1, 2, hour, 0, 0).unwrap(),
            agent: agent.into(),
            goal: goal.map(String::from),
            task,
            action: action.into(),
            input: serde_json::json!({}),
            outcome: serde_json::json!({}),
            diff: None,
        }
    }

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("mcp__*", "mcp__echo__say", true),
            ("mcp__*", "Bash", false),
            ("push", "push", true),
            ("push", "pushed", false),
            ("Bash", "bash", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("W?ite", "Write", true),
            ("*ite", "Write", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*__say", "mcp__echo__say", true),
            ("**", "anything", true),
        ] {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn filters_combine_with_and() {
        let records = vec![
            record(1, 1, "ceo", Some("a"), Some(1), "Write"),
            record(2, 2, "cto", Some("a"), Some(2), "Bash"),
            record(3, 3, "ceo", Some("b"), Some(3), "mcp__echo__say"),
            record(4, 4, "proto", None, None, "push"),
            record(5, 5, "ceo", Some("a"), Some(1), "model"),
        ];
        let since = |hour| Some(Utc.with_ymd_and_hms(2026, 1, 2, hour, 0, 0).unwrap());
        let ids =
            |f: Filter| -> Vec<i64> { f.apply(records.clone()).iter().map(|r| r.id).collect() };
        let cases: Vec<(Filter, Vec<i64>)> = vec![
            (Filter::default(), vec![1, 2, 3, 4, 5]),
            (
                Filter {
                    agent: Some("ceo".into()),
                    ..Filter::default()
                },
                vec![1, 3, 5],
            ),
            (
                Filter {
                    goal: Some("a".into()),
                    ..Filter::default()
                },
                vec![1, 2, 5],
            ),
            (
                Filter {
                    task: Some(1),
                    ..Filter::default()
                },
                vec![1, 5],
            ),
            (
                Filter {
                    action: Some(Glob::new("mcp__*")),
                    ..Filter::default()
                },
                vec![3],
            ),
            (
                Filter {
                    action: Some(Glob::new("push")),
                    ..Filter::default()
                },
                vec![4],
            ),
            (
                Filter {
                    since: since(3),
                    ..Filter::default()
                },
                vec![3, 4, 5],
            ),
            (
                Filter {
                    agent: Some("ceo".into()),
                    goal: Some("a".into()),
                    since: since(2),
                    ..Filter::default()
                },
                vec![5],
            ),
            (
                Filter {
                    agent: Some("nobody".into()),
                    ..Filter::default()
                },
                vec![],
            ),
            (
                Filter {
                    goal: Some("a".into()),
                    action: Some(Glob::new("Bash")),
                    agent: Some("ceo".into()),
                    ..Filter::default()
                },
                vec![],
            ),
        ];
        for (filter, expected) in cases {
            assert_eq!(ids(filter.clone()), expected, "{filter:?}");
        }
    }

    #[test]
    fn since_is_a_time_before_now() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap();
        let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
        assert_eq!(
            cutoff(now, hours(2)),
            Utc.with_ymd_and_hms(2026, 1, 2, 1, 0, 0).unwrap()
        );
        assert_eq!(
            cutoff(now, hours(48)),
            Utc.with_ymd_and_hms(2025, 12, 31, 3, 0, 0).unwrap()
        );
        assert_eq!(
            cutoff(now, std::time::Duration::MAX),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[test]
    fn records_come_out_in_time_order() {
        let mut late = record(1, 9, "ceo", None, None, "x");
        late.id = 1;
        let early = record(7, 1, "ceo", None, None, "x");
        let same_time = record(3, 1, "ceo", None, None, "x");
        let out = Filter::default().apply(vec![late, early, same_time]);
        assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3, 7, 1]);
    }
}
