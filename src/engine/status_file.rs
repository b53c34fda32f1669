//! `.proto/status.yaml` as a record commit writes it. A company of thousands of goals has a
//! status of megabytes, written whole at every record commit. It is rendered goal by goal,
//! and only the goals whose status changed since the last record commit are scanned for
//! secrets (the others were scanned when they were written), so a commit neither reads the
//! file's last version back to find what is new nor scans megabytes.

use std::collections::HashSet;
use std::sync::Arc;

use super::records::{GoalStatus, StatusReport};

/// Where the status is written, in the declaration folder.
pub const STATUS_PATH: &str = ".proto/status.yaml";

/// About what one goal's entry takes: the text is sized once, not grown by doubling.
const BYTES_PER_GOAL: usize = 512;

/// The goals a record commit wrote whose text held no secret, known by their allocation:
/// a goal's status is shared, not copied, until it changes.
#[derive(Clone, Default)]
pub struct Scanned {
    /// Held, so that each allocation `clean` names stays the goal's it was.
    _held: Vec<Arc<GoalStatus>>,
    clean: HashSet<usize>,
    /// How long the text was: the next is sized from it.
    bytes: usize,
}

fn address(goal: &Arc<GoalStatus>) -> usize {
    Arc::as_ptr(goal) as usize
}

/// The status file of `report`, its secrets redacted; and what of it was found clean, for
/// the next commit (to keep only once this one is written).
pub fn render(report: &StatusReport, scanned: &Scanned) -> (String, Scanned) {
    let goals = &report.goals;
    // Sized once: grown by doubling, megabytes would pass through twice their size.
    let guess = BYTES_PER_GOAL * (goals.len() + 1);
    let mut out = String::with_capacity(guess.max(scanned.bytes + scanned.bytes / 8));
    out.push_str(&redacted(header(report)));
    let mut clean = HashSet::with_capacity(goals.len());
    let mut piece = String::with_capacity(4 * BYTES_PER_GOAL);
    for goal in goals {
        piece.clear();
        // One goal as a one-item list is exactly its entry in the whole report's `goals`.
        if serde_saphyr::to_fmt_writer(&mut piece, &[&**goal]).is_err() {
            continue;
        }
        let at = address(goal);
        if scanned.clean.contains(&at) || crate::secrets::scan(STATUS_PATH, &piece).is_empty() {
            clean.insert(at);
            out.push_str(&piece);
        } else {
            out.push_str(&redacted(std::mem::take(&mut piece)));
        }
    }
    let next = Scanned {
        _held: goals.clone(),
        clean,
        bytes: out.len(),
    };
    (out, next)
}

/// The report's own fields, and the key its goals follow.
fn header(report: &StatusReport) -> String {
    let mut text = String::new();
    if serde_saphyr::to_fmt_writer(&mut text, &report.header()).is_err() {
        return String::new();
    }
    // The goals are the report's last field: rendered empty, they are `goals: []`.
    if !report.goals.is_empty()
        && let Some(head) = text.strip_suffix("goals: []\n")
    {
        text = format!("{head}goals:\n");
    }
    text
}

/// `text` with any secret redacted, each one found logged (never the secret).
fn redacted(text: String) -> String {
    let found = crate::secrets::scan(STATUS_PATH, &text);
    if found.is_empty() {
        return text;
    }
    for finding in &found {
        tracing::warn!(%finding, "secret redacted from the company's status");
    }
    crate::secrets::redact(STATUS_PATH, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::records::LastCheck;
    use crate::spec::status::Condition;
    use chrono::TimeZone;

    fn goal(name: &str, detail: &str) -> Arc<GoalStatus> {
        let condition = |type_: &str| Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: "CheckFailed".into(),
            message: detail.into(),
            last_transition_time: "2026-12-06T12:00:00+00:00".into(),
            observed_generation: None,
        };
        Arc::new(GoalStatus {
            name: name.into(),
            product: "app".into(),
            owner: "ceo".into(),
            priority: "high".into(),
            ready: "False".into(),
            reason: "CheckFailed".into(),
            message: detail.into(),
            conditions: vec![condition("Ready"), condition("Stalled")],
            last_check: Some(LastCheck {
                time: chrono::Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap(),
                passed: false,
                detail: detail.into(),
            }),
            attempts: 2,
            task: Some(7),
            revision: "0123abcd".into(),
        })
    }

    fn report(goals: Vec<Arc<GoalStatus>>) -> StatusReport {
        let mut report = StatusReport::default();
        report.company = "acme".into();
        report.source = "git".into();
        report.errors = vec!["goals/x.yaml:3: bad: \"quoted\"".into()];
        report.goals = goals;
        report.reindex();
        report
    }

    fn whole(report: &StatusReport) -> String {
        let mut text = String::new();
        serde_saphyr::to_fmt_writer(&mut text, report).unwrap();
        text
    }

    fn token() -> String {
        ["ghp_", "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"].concat()
    }

    #[test]
    fn goal_by_goal_is_the_whole_report_as_one_document() {
        let details = [
            "plain",
            "two\nlines, the second: with a colon",
            "  leading spaces and a trailing one ",
            "quotes \" and ' and # and - [x] {y}",
            "ünïcödé and emoji 🚀",
            "",
            "null",
            "- looks like a list",
            "key: value",
        ];
        let goals = details
            .iter()
            .enumerate()
            .map(|(i, d)| goal(&format!("g{i}"), d))
            .collect();
        let report = report(goals);
        let (text, _) = render(&report, &Scanned::default());
        assert_eq!(text, whole(&report));
        let parsed: StatusReport = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(parsed.goals.len(), details.len());
        assert_eq!(parsed.goals[1].message, details[1]);

        let empty = self::report(Vec::new());
        assert_eq!(render(&empty, &Scanned::default()).0, whole(&empty));
    }

    #[test]
    fn a_secret_in_a_goal_is_redacted_at_every_commit_and_clean_goals_are_scanned_once() {
        let secret = format!("the check printed {}", token());
        let report = report(vec![goal("clean", "fine"), goal("leaky", &secret)]);
        let (first, scanned) = render(&report, &Scanned::default());
        assert!(!first.contains(&token()), "{first}");
        assert!(first.contains(crate::secrets::MARKER), "{first}");
        assert!(first.contains("fine"));
        // The clean goal is known clean; the leaky one is not, so it is scanned again.
        assert_eq!(scanned.clean.len(), 1);
        assert!(scanned.clean.contains(&address(&report.goals[0])));
        let (second, again) = render(&report, &scanned);
        assert_eq!(second, first);
        assert_eq!(again.clean, scanned.clean);

        // A goal that changes is a new allocation, scanned on its own.
        let changed = self::report(vec![
            goal("clean", &format!("now {}", token())),
            report.goals[1].clone(),
        ]);
        let (third, _) = render(&changed, &scanned);
        assert!(!third.contains(&token()), "{third}");
    }
}
