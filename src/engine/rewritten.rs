//! The record files a commit rewrites whole: `.proto/status.yaml` and each product's
//! `.proto/planning/<product>/tasks.json`. A company of thousands of goals makes them
//! megabytes, written at every record commit. They are rendered entry by entry (a goal's
//! status, a goal's planned task), and only entries whose goal or status changed since the
//! last record commit are scanned for secrets (the others were scanned when they were
//! written), so a commit neither reads the files' last versions back to find what is new nor
//! scans megabytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::records::{self, GoalStatus, StatusReport};
use crate::gitops::FileChange;
use crate::spec::Spec;

/// Where the status is written, in the declaration folder.
pub const STATUS_PATH: &str = ".proto/status.yaml";

/// Where a product's plan is written.
pub fn plan_path(product: &str) -> String {
    format!(".proto/planning/{product}/tasks.json")
}

/// About what one goal's entry takes: a file is sized once, not grown by doubling.
const BYTES_PER_GOAL: usize = 512;

/// An entry, by the allocations it was made from: a goal's status (and, for a plan's
/// entry, the goal's declaration). Both are shared, not copied, until they change.
type Key = (usize, usize);

/// What a record commit wrote that was scanned clean of secrets.
#[derive(Clone, Default)]
pub struct Scanned {
    /// Held, so that each allocation `clean` names stays the one it was.
    _statuses: Vec<Arc<GoalStatus>>,
    _spec: Option<Arc<Spec>>,
    clean: HashSet<Key>,
    /// How long each file was: the next is sized from it.
    bytes: HashMap<String, usize>,
}

/// Where a shared value lives: the same for every `Arc` of it.
fn address<T>(value: &T) -> usize {
    value as *const T as usize
}

/// The status file and the plans of `products`, their secrets redacted; and what of them
/// was found clean, for the next commit (to keep only once this one is written).
pub fn render(
    spec: &Arc<Spec>,
    status: &StatusReport,
    products: &[String],
    last: &Scanned,
) -> (Vec<FileChange>, Scanned) {
    let mut next = Scanned {
        _statuses: status.goals.clone(),
        _spec: Some(spec.clone()),
        clean: HashSet::with_capacity(last.clean.len().max(status.goals.len())),
        bytes: HashMap::new(),
    };
    let mut changes = Vec::with_capacity(products.len() + 1);
    for product in products {
        let path = plan_path(product);
        let text = plan(spec, product, status, &path, last, &mut next);
        changes.push(scanned(path, text, &mut next));
    }
    let text = status_text(status, last, &mut next);
    changes.push(scanned(STATUS_PATH.to_string(), text, &mut next));
    (changes, next)
}

fn scanned(path: String, text: String, next: &mut Scanned) -> FileChange {
    next.bytes.insert(path.clone(), text.len());
    FileChange::Scanned {
        path,
        content: text.into_bytes(),
    }
}

/// A text sized from the last one written to `path`.
fn sized(path: &str, entries: usize, last: &Scanned) -> String {
    let guess = BYTES_PER_GOAL * (entries + 1);
    let before = last.bytes.get(path).copied().unwrap_or(0);
    String::with_capacity(guess.max(before + before / 8))
}

/// `piece`, scanned unless `key` was found clean at the last commit, and redacted if it
/// holds a secret.
fn checked(path: &str, key: Key, piece: String, last: &Scanned, next: &mut Scanned) -> String {
    if last.clean.contains(&key) || crate::secrets::scan(path, &piece).is_empty() {
        next.clean.insert(key);
        piece
    } else {
        redacted(path, piece)
    }
}

/// `.proto/status.yaml`: the report's own fields, then its goals.
fn status_text(report: &StatusReport, last: &Scanned, next: &mut Scanned) -> String {
    let mut out = sized(STATUS_PATH, report.goals.len(), last);
    out.push_str(&redacted(STATUS_PATH, header(report)));
    let mut piece = String::with_capacity(4 * BYTES_PER_GOAL);
    for goal in &report.goals {
        piece.clear();
        // One goal as a one-item list is exactly its entry in the whole report's `goals`.
        if serde_saphyr::to_fmt_writer(&mut piece, &[&**goal]).is_err() {
            continue;
        }
        let key = (address::<GoalStatus>(&**goal), 0);
        let text = checked(STATUS_PATH, key, std::mem::take(&mut piece), last, next);
        out.push_str(&text);
        piece = text;
    }
    out
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

/// A product's `tasks.json`: one entry per goal of the product, as
/// `serde_json::to_string_pretty` writes `{"product": .., "tasks": [..]}` (each task's
/// fields in [`records::PlannedTask`]'s order), and a newline.
fn plan(
    spec: &Spec,
    product: &str,
    status: &StatusReport,
    path: &str,
    last: &Scanned,
    next: &mut Scanned,
) -> String {
    let goals = spec.goals.iter().filter(|g| g.spec.product == product);
    let mut out = sized(path, 0, last);
    out.push_str("{\n  \"product\": ");
    out.push_str(&serde_json::to_string(product).unwrap_or_default());
    out.push_str(",\n  \"tasks\": [");
    let mut any = false;
    for goal in goals {
        let now = status.goal(goal.name());
        let task = records::planned_task(goal, now);
        let Ok(piece) = serde_json::to_string_pretty(&task) else {
            continue;
        };
        let key = (now.map_or(0, address), address(&**goal));
        let piece = checked(path, key, piece, last, next);
        out.push_str(if any { ",\n" } else { "\n" });
        any = true;
        // An entry of the list is indented two levels; strings hold no raw newline.
        for (i, line) in piece.lines().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str("    ");
            out.push_str(line);
        }
    }
    out.push_str(if any { "\n  ]\n}\n" } else { "]\n}\n" });
    out
}

/// `text` with any secret redacted, each one found logged (never the secret).
fn redacted(path: &str, text: String) -> String {
    let found = crate::secrets::scan(path, &text);
    if found.is_empty() {
        return text;
    }
    for finding in &found {
        tracing::warn!(%finding, "secret redacted from the company's records");
    }
    crate::secrets::redact(path, &text)
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

    /// The status file as `render` writes it with no plan.
    fn status_of(report: &StatusReport, last: &Scanned) -> (String, Scanned) {
        let (changes, next) = render(&Arc::new(Spec::default()), report, &[], last);
        let [FileChange::Scanned { path, content }] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!(path, STATUS_PATH);
        (String::from_utf8(content.clone()).unwrap(), next)
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
        let (text, _) = status_of(&report, &Scanned::default());
        assert_eq!(text, whole(&report));
        let parsed: StatusReport = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(parsed.goals.len(), details.len());
        assert_eq!(parsed.goals[1].message, details[1]);

        let empty = self::report(Vec::new());
        assert_eq!(status_of(&empty, &Scanned::default()).0, whole(&empty));
    }

    #[test]
    fn a_secret_in_a_goal_is_redacted_at_every_commit_and_clean_goals_are_scanned_once() {
        let secret = format!("the check printed {}", token());
        let report = report(vec![goal("clean", "fine"), goal("leaky", &secret)]);
        let (first, scanned) = status_of(&report, &Scanned::default());
        assert!(!first.contains(&token()), "{first}");
        assert!(first.contains(crate::secrets::MARKER), "{first}");
        assert!(first.contains("fine"));
        // The clean goal is known clean; the leaky one is not, so it is scanned again.
        assert_eq!(scanned.clean.len(), 1);
        assert!(
            scanned
                .clean
                .contains(&(address::<GoalStatus>(&report.goals[0]), 0))
        );
        let (second, again) = status_of(&report, &scanned);
        assert_eq!(second, first);
        assert_eq!(again.clean, scanned.clean);

        // A goal that changes is a new allocation, scanned on its own.
        let changed = self::report(vec![
            goal("clean", &format!("now {}", token())),
            report.goals[1].clone(),
        ]);
        let (third, _) = status_of(&changed, &scanned);
        assert!(!third.contains(&token()), "{third}");
    }

    /// The plan as the whole document serialized at once, as it was written before.
    fn whole_plan(spec: &Spec, product: &str, status: &StatusReport) -> String {
        let tasks: Vec<records::PlannedTask> = spec
            .goals
            .iter()
            .filter(|g| g.spec.product == product)
            .map(|g| records::planned_task(g, status.goal(g.name())))
            .collect();
        #[derive(serde::Serialize)]
        struct Plan<'a> {
            product: &'a str,
            tasks: Vec<records::PlannedTask>,
        }
        serde_json::to_string_pretty(&Plan { product, tasks }).unwrap() + "\n"
    }

    #[test]
    fn a_plan_entry_by_entry_is_the_whole_plan_as_one_document() {
        let spec = Arc::new(crate::engine::records::tests::spec(&[
            ("a", "medium"),
            ("b", "high"),
        ]));
        let mut report = report(vec![
            goal("a", "two\nlines"),
            goal("b", &format!("leak {}", token())),
        ]);
        report.reindex();
        let products = ["app".to_string(), "none".to_string()];
        let (changes, scanned) = render(&spec, &report, &products, &Scanned::default());
        let text = |path: &str| {
            changes
                .iter()
                .find(|c| c.path() == path)
                .map(|c| match c {
                    FileChange::Scanned { content, .. } => {
                        String::from_utf8(content.clone()).unwrap()
                    }
                    other => panic!("{other:?}"),
                })
                .unwrap()
        };
        let app = text(&plan_path("app"));
        let expected = redacted(&plan_path("app"), whole_plan(&spec, "app", &report));
        assert_eq!(app, expected);
        assert!(!app.contains(&token()), "{app}");
        assert_eq!(text(&plan_path("none")), whole_plan(&spec, "none", &report));
        assert_eq!(text(STATUS_PATH), redacted(STATUS_PATH, whole(&report)));
        // Both files of goal a are clean; goal b's hold the token, scanned again next time.
        assert_eq!(scanned.clean.len(), 2, "{:?}", scanned.clean);
        let (again, _) = render(&spec, &report, &products, &scanned);
        assert_eq!(again, changes);
    }
}
