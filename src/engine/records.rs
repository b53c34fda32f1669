//! What the controller writes down: goal status (Kubernetes-style conditions), the product
//! plans (`.proto/planning/<product>/tasks.json`), the audit trail
//! (`.proto/audit/<date>.jsonl`) and `.proto/status.yaml`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::{TaskState, WaitReason};
use crate::spec::status::{Condition, READY, RECONCILING, STALLED};
use crate::spec::{GoalSpec, Resource, Spec};
use crate::store::{AuditRecord, Failure, Revisions, Task};

/// The last check of a goal, as status shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheck {
    pub time: DateTime<Utc>,
    pub passed: bool,
    pub detail: String,
}

/// One goal's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoalStatus {
    pub name: String,
    pub product: String,
    pub owner: String,
    pub priority: String,
    /// `True`, `False` or `Unknown` (the `Ready` condition's status).
    pub ready: String,
    pub reason: String,
    pub message: String,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<LastCheck>,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<i64>,
    /// The company revision this status was observed at.
    pub revision: String,
}

/// The whole company's status, as `.proto/status.yaml` and `proto get goals` show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub company: String,
    pub source: String,
    /// The last valid revision, which is what runs.
    pub last_applied_revision: Option<String>,
    /// The last revision seen, valid or not.
    pub last_attempted_revision: Option<String>,
    /// Why the last attempted revision was not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Claude Code files the running revision skipped (each reported with a warning when it
    /// was loaded): the company runs without them, as Claude Code would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    pub suspended: bool,
    /// A person's stop (`proto stop`), while it holds: nothing runs until `proto resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<crate::store::Stop>,
    /// The model providers and what their circuit breakers last saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderStatus>,
    /// Shared, so that a record commit can take the report as it is (a copy of the list,
    /// not of every goal's status) while the loop goes on updating it.
    pub goals: Vec<std::sync::Arc<GoalStatus>>,
    /// Where each goal is in `goals`, for keyed lookups; rebuilt whenever the list changes
    /// shape (see [`StatusReport::reindex`]).
    #[serde(skip)]
    index: std::collections::HashMap<String, usize>,
}

/// A model provider's state, as `proto get providers` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderState {
    /// Calls go through.
    Closed,
    /// Failing: calls are refused until the next trial.
    Open,
    /// The next call is the trial that decides.
    HalfOpen,
    /// Declared but not usable (no key in its variable, no replay file).
    NotConfigured,
}

impl From<crate::model::BreakerState> for ProviderState {
    fn from(s: crate::model::BreakerState) -> Self {
        use crate::model::BreakerState;
        match s {
            BreakerState::Closed => ProviderState::Closed,
            BreakerState::Open => ProviderState::Open,
            BreakerState::HalfOpen => ProviderState::HalfOpen,
        }
    }
}

/// One declared model provider and its health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: crate::spec::ProviderKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub state: ProviderState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
}

impl StatusReport {
    pub fn goal(&self, name: &str) -> Option<&GoalStatus> {
        match self.index.get(name) {
            Some(i) => self.goals.get(*i).map(|g| &**g).filter(|g| g.name == name),
            // A report read from JSON is not indexed until it is reindexed.
            None if self.index.is_empty() => {
                self.goals.iter().map(|g| &**g).find(|g| g.name == name)
            }
            None => None,
        }
    }

    /// Where goal `name` is in `goals`.
    pub fn position(&self, name: &str) -> Option<usize> {
        match self.index.get(name) {
            Some(i) => Some(*i),
            None if self.index.is_empty() => self.goals.iter().position(|g| g.name == name),
            None => None,
        }
    }

    /// The report without its goals.
    pub fn header(&self) -> StatusReport {
        StatusReport {
            company: self.company.clone(),
            source: self.source.clone(),
            last_applied_revision: self.last_applied_revision.clone(),
            last_attempted_revision: self.last_attempted_revision.clone(),
            errors: self.errors.clone(),
            skipped: self.skipped.clone(),
            suspended: self.suspended,
            stopped: self.stopped.clone(),
            providers: self.providers.clone(),
            goals: Vec::new(),
            index: std::collections::HashMap::new(),
        }
    }

    /// The report without its goals, as JSON: what the store keeps beside one row per goal.
    pub fn company_json(&self) -> String {
        serde_json::to_string(&self.header()).unwrap_or_default()
    }

    /// Indexes the goals by name (after reading a report, or changing its list).
    pub fn reindex(&mut self) {
        self.index = self
            .goals
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.clone(), i))
            .collect();
    }

    /// Goals that will not be met without a person: attempts exhausted, or work that could
    /// not be delivered.
    pub fn stalled(&self) -> Vec<&GoalStatus> {
        self.goals
            .iter()
            .map(|g| &**g)
            .filter(|g| matches!(g.reason.as_str(), "AttemptsExhausted" | "DeliveryFailed"))
            .collect()
    }
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
    previous: Option<&GoalStatus>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    // The transition time moves only when the status does, as Kubernetes conventions ask.
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_rfc3339());
    Condition {
        type_: kind.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: since,
        observed_generation: None,
    }
}

/// What a status is built from.
pub struct Seen<'a> {
    pub spec: &'a Spec,
    /// Each goal's key in `spec`, by goal name.
    pub keys: &'a HashMap<String, String>,
    /// The revision running.
    pub revision: &'a str,
    pub revisions: &'a Revisions,
    /// The newest top-level task of each goal key that has one.
    pub tasks: &'a BTreeMap<String, Task>,
    /// Each goal's last check, with the goal key it ran against.
    pub checks: &'a BTreeMap<String, (LastCheck, String)>,
    /// Why goals wait, from the last plan.
    pub waits: &'a HashMap<String, WaitReason>,
    /// A person's stop, while it holds.
    pub stopped: Option<&'a crate::store::Stop>,
}

/// Which goals' status to rebuild.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Dirty {
    /// None of them.
    #[default]
    None,
    /// These.
    Goals(HashSet<String>),
    /// The goal list changed (goals added, removed or moved): the list is laid out again in
    /// the declaration's order, these goals (new or changed) are rebuilt and every other goal
    /// keeps the status it has. A one-file commit to a company of thousands of goals costs
    /// the goals it touched, not all of them.
    Reshaped(HashSet<String>),
    /// Every goal (a company-wide change).
    All,
}

impl Dirty {
    pub fn goal(&mut self, name: &str) {
        match self {
            Dirty::None => *self = Dirty::Goals(HashSet::from([name.to_string()])),
            Dirty::Goals(goals) | Dirty::Reshaped(goals) => {
                goals.insert(name.to_string());
            }
            Dirty::All => {}
        }
    }

    /// The goal list itself changed shape: the list is laid out again.
    pub fn reshape(&mut self) {
        match std::mem::take(self) {
            Dirty::None => *self = Dirty::Reshaped(HashSet::new()),
            Dirty::Goals(goals) | Dirty::Reshaped(goals) => *self = Dirty::Reshaped(goals),
            Dirty::All => *self = Dirty::All,
        }
    }

    /// The list is laid out again (rows of goals no longer declared go, positions move).
    fn reshapes(&self) -> bool {
        matches!(self, Dirty::Reshaped(_) | Dirty::All)
    }

    fn contains(&self, name: &str) -> bool {
        match self {
            Dirty::None => false,
            Dirty::Goals(goals) | Dirty::Reshaped(goals) => goals.contains(name),
            Dirty::All => true,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Dirty::None
    }
}

/// What [`update`] changed in a report's goal list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Updated {
    /// The goals whose status was rebuilt.
    pub rebuilt: Vec<String>,
    /// Goals kept as they were that the list, laid out again, moved: each with its new
    /// position.
    pub moved: Vec<(String, usize)>,
    /// Goals the list, laid out again, no longer holds.
    pub removed: Vec<String>,
}

/// Brings `report` up to date: the company's part always, and the status of the `dirty`
/// goals (each keeps its transition times). With `Dirty::All` and `Dirty::Reshaped` the goal
/// list itself is laid out again in the declaration's order.
pub fn update(
    report: &mut StatusReport,
    seen: &Seen<'_>,
    dirty: &Dirty,
    now: DateTime<Utc>,
) -> Updated {
    update_company(report, seen);
    let held = Held::of(report);
    if report.index.len() != report.goals.len() || report.index.is_empty() {
        report.reindex();
    }
    if dirty.reshapes() {
        return lay_out(report, seen, dirty, held.as_ref(), now);
    }
    // The dirty goals in the declaration's order, found by name: a pass that touched one
    // goal of thousands does not look at the others.
    let mut positions: Vec<usize> = match dirty {
        Dirty::Goals(names) => names
            .iter()
            .filter_map(|n| seen.spec.goal_position(n))
            .collect(),
        _ => Vec::new(),
    };
    positions.sort_unstable();
    let mut rebuilt = Vec::new();
    for goal in positions.into_iter().filter_map(|i| seen.spec.goals.get(i)) {
        let name = goal.name();
        let status = std::sync::Arc::new(goal_status(
            seen,
            goal,
            held.as_ref(),
            report.goal(name),
            now,
        ));
        match report.index.get(name) {
            Some(i) => report.goals[*i] = status,
            None => {
                report.index.insert(name.to_string(), report.goals.len());
                report.goals.push(status);
            }
        }
        rebuilt.push(name.to_string());
    }
    Updated {
        rebuilt,
        ..Updated::default()
    }
}

/// The company's part of the report.
fn update_company(report: &mut StatusReport, seen: &Seen<'_>) {
    let company = seen.spec.company();
    report.company = company.map(|c| c.name().to_string()).unwrap_or_default();
    report.source = seen.spec.source.clone();
    report.last_applied_revision = seen.revisions.last_applied.clone();
    report.last_attempted_revision = seen.revisions.last_attempted.clone();
    report.errors = seen.revisions.errors.clone();
    report.skipped = seen
        .spec
        .claude
        .skipped
        .iter()
        .map(|s| s.file.clone())
        .collect();
    report.suspended = company.is_some_and(|c| c.spec.suspend);
    report.stopped = seen.stopped.cloned();
}

/// Lays the goal list out again in the declaration's order: goals no longer declared go,
/// the `dirty` goals and the new ones are rebuilt, every other goal keeps its status (shared,
/// not copied) at its new place.
fn lay_out(
    report: &mut StatusReport,
    seen: &Seen<'_>,
    dirty: &Dirty,
    held: Option<&Held>,
    now: DateTime<Utc>,
) -> Updated {
    let old = std::mem::take(&mut report.goals);
    let mut old_index = std::mem::take(&mut report.index);
    let mut updated = Updated::default();
    report.goals.reserve(seen.spec.goals.len());
    report.index.reserve(seen.spec.goals.len());
    for (position, goal) in seen.spec.goals.iter().enumerate() {
        let name = goal.name();
        // The old entry's name is reused as the new index's key.
        let (key, was) = match old_index.remove_entry(name) {
            Some((key, i)) => (key, old.get(i).map(|status| (i, status))),
            None => (name.to_string(), None),
        };
        let status = match was {
            Some((i, status)) if !dirty.contains(name) => {
                if i != position {
                    updated.moved.push((name.to_string(), position));
                }
                std::sync::Arc::clone(status)
            }
            _ => {
                updated.rebuilt.push(name.to_string());
                let prev = was.map(|(_, status)| &**status);
                std::sync::Arc::new(goal_status(seen, goal, held, prev, now))
            }
        };
        report.goals.push(status);
        report.index.insert(key, position);
    }
    updated.removed = old_index.into_keys().collect();
    updated
}

/// Why nothing runs for any goal: a person's stop, or the company suspended in git.
struct Held {
    reason: &'static str,
    message: String,
}

impl Held {
    fn of(report: &StatusReport) -> Option<Held> {
        match &report.stopped {
            Some(stop) => Some(Held {
                reason: "Stopped",
                message: stop.message(),
            }),
            None if report.suspended => Some(Held {
                reason: "Suspended",
                message: "the company is suspended".into(),
            }),
            None => None,
        }
    }
}

/// One goal's status from what was seen; `prev` keeps its transition times.
fn goal_status(
    seen: &Seen<'_>,
    goal: &Resource<GoalSpec>,
    held: Option<&Held>,
    prev: Option<&GoalStatus>,
    now: DateTime<Utc>,
) -> GoalStatus {
    let name = goal.name();
    let key = seen.keys.get(name).map_or("", String::as_str);
    let task = seen.tasks.get(key).filter(|t| t.goal == name);
    let check = seen
        .checks
        .get(name)
        .filter(|(_, k)| k == key)
        .map(|(c, _)| c.clone());
    let wait = seen.waits.get(name);
    {
        let (ready, reconciling, stalled, reason, message): (
            Option<bool>,
            bool,
            bool,
            String,
            String,
        ) = match (&check, task.map(|t| t.state), wait) {
            _ if held.is_some() => {
                let held = held.map_or(("", String::new()), |h| (h.reason, h.message.clone()));
                (None, false, false, held.0.into(), held.1)
            }
            (Some(c), _, _) if c.passed => (
                Some(true),
                false,
                false,
                "CheckPassed".into(),
                c.detail.clone(),
            ),
            (_, Some(TaskState::Stalled | TaskState::Failed), _) => (
                Some(false),
                false,
                true,
                match task.and_then(|t| t.failure) {
                    Some(Failure::Delivery) => "DeliveryFailed",
                    _ => "AttemptsExhausted",
                }
                .into(),
                task.and_then(|t| t.last_error.clone())
                    .unwrap_or_else(|| "the check still fails".into()),
            ),
            (_, Some(TaskState::WaitingApproval), _) => (
                Some(false),
                false,
                false,
                "WaitingApproval".into(),
                task.and_then(|t| t.last_error.clone())
                    .unwrap_or_else(|| "an action waits for a person's approval".into()),
            ),
            (_, _, Some(WaitReason::Budget { message })) => (
                Some(false),
                false,
                true,
                "BudgetExhausted".into(),
                message.clone(),
            ),
            (_, Some(TaskState::Running), _) => (
                Some(false),
                true,
                false,
                "Working".into(),
                "a task is working on it".into(),
            ),
            // Waiting out a provider outage: no attempt spent, the cause shown.
            (_, Some(TaskState::Queued), _) if task.is_some_and(|t| t.outage.is_some()) => (
                Some(false),
                true,
                false,
                "ProviderUnavailable".into(),
                task.map(|t| {
                    format!(
                        "waiting for the model provider: {}; trying again after {}",
                        t.outage.clone().unwrap_or_default(),
                        t.not_before.to_rfc3339()
                    )
                })
                .unwrap_or_default(),
            ),
            (_, Some(TaskState::Queued), _) => {
                let retry = task.is_some_and(|t| t.attempts > 0);
                let message = match task {
                    Some(t) if retry => format!(
                        "attempt {} failed ({}); retrying after {}",
                        t.attempts,
                        t.last_error.clone().unwrap_or_default(),
                        t.not_before.to_rfc3339()
                    ),
                    _ => "queued".to_string(),
                };
                (
                    Some(false),
                    true,
                    false,
                    if retry { "RetryScheduled" } else { "Queued" }.into(),
                    message,
                )
            }
            (_, _, Some(WaitReason::DependsOn { goals })) => (
                Some(false),
                false,
                false,
                "DependenciesNotMet".into(),
                format!("waits for {}", goals.join(", ")),
            ),
            (_, _, Some(WaitReason::NoModel)) => (
                Some(false),
                false,
                false,
                "NoModel".into(),
                "needs a model and no provider is configured and reachable".into(),
            ),
            (Some(c), _, _) => (
                Some(false),
                false,
                false,
                "CheckFailed".into(),
                c.detail.clone(),
            ),
            _ => (
                None,
                false,
                false,
                "NotChecked".into(),
                "not checked yet".into(),
            ),
        };
        let ready_text = match ready {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        };
        let mut ready_condition =
            condition(READY, ready == Some(true), &reason, &message, now, prev);
        ready_condition.status = ready_text.to_string();
        GoalStatus {
            name: name.to_string(),
            product: goal.spec.product.clone(),
            owner: goal.spec.owner.clone(),
            priority: goal.spec.priority.as_str().to_string(),
            ready: ready_text.to_string(),
            reason: reason.clone(),
            message: message.clone(),
            conditions: vec![
                ready_condition,
                condition(RECONCILING, reconciling, &reason, &message, now, prev),
                condition(STALLED, stalled, &reason, &message, now, prev),
            ],
            last_check: check,
            attempts: task.map_or(0, |t| t.attempts),
            task: task.map(|t| t.id),
            revision: seen.revision.to_string(),
        }
    }
}

/// One entry of a product plan, in the hierarchical shape the Planning tool edits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedTask {
    pub id: String,
    pub title: String,
    pub status: String,
    pub assignee: String,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    #[serde(default)]
    pub subtasks: Vec<PlannedTask>,
}

/// A goal's entry in its product's `.proto/planning/<product>/tasks.json`, with the state
/// of its newest task (`status`, the goal's status).
pub fn planned_task(goal: &Resource<GoalSpec>, status: Option<&GoalStatus>) -> PlannedTask {
    PlannedTask {
        id: goal.name().to_string(),
        title: goal.spec.description.clone(),
        status: match status.map(|s| s.reason.as_str()) {
            Some("CheckPassed") => "done",
            Some("Working") => "in_progress",
            Some("AttemptsExhausted" | "DeliveryFailed") => "blocked",
            Some(
                "DependenciesNotMet"
                | "NoModel"
                | "Suspended"
                | "WaitingApproval"
                | "BudgetExhausted"
                | "ProviderUnavailable",
            ) => "waiting",
            _ => "todo",
        }
        .to_string(),
        assignee: goal.spec.owner.clone(),
        dependencies: goal.spec.depends_on.clone(),
        notes: status.map(|s| s.message.clone()).unwrap_or_default(),
        subtasks: Vec::new(),
    }
}

/// One line of `.proto/audit/<date>.jsonl`.
pub fn audit_line(record: &AuditRecord) -> String {
    let line = serde_json::json!({
        "id": record.id,
        "time": record.time.to_rfc3339(),
        "agent": record.agent,
        "goal": record.goal,
        "task": record.task,
        "action": record.action,
        "input": record.input,
        "outcome": record.outcome,
        "diff": record.diff,
    });
    format!("{line}\n")
}

/// The highest record id an audit file holds (records are appended in id order), so a
/// record is never written twice, even when the process died between committing it and
/// noting that it did.
pub fn highest_audit_id(file: &str) -> i64 {
    #[derive(Deserialize)]
    struct Line {
        id: i64,
    }
    file.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .map(|l| l.id)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::Arc;

    /// A company declaring `goals` (name and priority) in this order.
    pub(crate) fn spec(goals: &[(&str, &str)]) -> Spec {
        let docs: Vec<String> = goals
            .iter()
            .map(|(name, priority)| crate::plan::tests::goal(name, priority, ""))
            .collect();
        crate::plan::tests::spec(false, &docs)
    }

    /// Updates `report` to `spec` as the engine does: the goals whose key changed and the
    /// new ones are dirty, and a changed list is laid out again.
    fn apply(
        report: &mut StatusReport,
        keys: &mut HashMap<String, String>,
        spec: &Spec,
        dirty: Dirty,
    ) -> Updated {
        let mut dirty = dirty;
        let new: HashMap<String, String> = spec
            .goals
            .iter()
            .map(|g| (g.name().to_string(), spec.key_of(g).into_owned()))
            .collect();
        for (name, key) in &new {
            if keys.get(name) != Some(key) {
                dirty.goal(name);
            }
        }
        let order: Vec<&str> = report.goals.iter().map(|g| g.name.as_str()).collect();
        let declared: Vec<&str> = spec.goals.iter().map(|g| g.name()).collect();
        if order != declared {
            dirty.reshape();
        }
        *keys = new;
        let revisions = Revisions::default();
        let seen = Seen {
            spec,
            keys,
            revision: "r",
            revisions: &revisions,
            tasks: &BTreeMap::new(),
            checks: &BTreeMap::new(),
            waits: &HashMap::new(),
            stopped: None,
        };
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        update(report, &seen, &dirty, now)
    }

    fn names(report: &StatusReport) -> Vec<&str> {
        report.goals.iter().map(|g| g.name.as_str()).collect()
    }

    #[test]
    fn a_changed_goal_list_rebuilds_only_the_goals_new_or_changed() {
        let mut report = StatusReport::default();
        let mut keys = HashMap::new();
        let first = apply(
            &mut report,
            &mut keys,
            &spec(&[("a", "medium"), ("b", "medium"), ("c", "medium")]),
            Dirty::All,
        );
        assert_eq!(first.rebuilt, ["a", "b", "c"]);
        let before: Vec<Arc<GoalStatus>> = report.goals.clone();

        // b removed, x added between a and c, c's priority changed.
        let next = apply(
            &mut report,
            &mut keys,
            &spec(&[("a", "medium"), ("x", "medium"), ("c", "high")]),
            Dirty::None,
        );
        assert_eq!(names(&report), ["a", "x", "c"]);
        let mut rebuilt = next.rebuilt.clone();
        rebuilt.sort();
        assert_eq!(rebuilt, ["c", "x"]);
        assert_eq!(next.removed, ["b"]);
        assert!(next.moved.is_empty(), "{:?}", next.moved);
        // The goal untouched keeps its status, shared rather than rebuilt.
        assert!(Arc::ptr_eq(&before[0], &report.goals[0]));
        assert_eq!(report.position("c"), Some(2));
        assert!(report.goal("b").is_none());

        // x removed: c moves up, unchanged.
        let kept = report.goals[2].clone();
        let last = apply(
            &mut report,
            &mut keys,
            &spec(&[("a", "medium"), ("c", "high")]),
            Dirty::None,
        );
        assert!(last.rebuilt.is_empty(), "{:?}", last.rebuilt);
        assert_eq!(last.moved, [("c".to_string(), 1)]);
        assert_eq!(last.removed, ["x"]);
        assert!(Arc::ptr_eq(&kept, &report.goals[1]));
        assert_eq!(report.goal("c").map(|g| g.name.as_str()), Some("c"));
    }

    #[test]
    fn a_goal_marked_dirty_is_rebuilt_when_the_list_is_laid_out_again() {
        let mut report = StatusReport::default();
        let mut keys = HashMap::new();
        apply(
            &mut report,
            &mut keys,
            &spec(&[("a", "medium"), ("b", "medium")]),
            Dirty::All,
        );
        let mut dirty = Dirty::None;
        dirty.goal("a");
        let next = apply(
            &mut report,
            &mut keys,
            &spec(&[("b", "medium"), ("a", "medium")]),
            dirty,
        );
        assert_eq!(names(&report), ["b", "a"]);
        assert_eq!(next.rebuilt, ["a"]);
        assert_eq!(next.moved, [("b".to_string(), 0)]);
        assert!(next.removed.is_empty());
    }

    #[test]
    fn every_goal_is_rebuilt_when_all_are_dirty() {
        let mut report = StatusReport::default();
        let mut keys = HashMap::new();
        let s = spec(&[("a", "medium"), ("b", "medium")]);
        apply(&mut report, &mut keys, &s, Dirty::All);
        let again = apply(&mut report, &mut keys, &s, Dirty::All);
        assert_eq!(again.rebuilt, ["a", "b"]);
        assert!(again.moved.is_empty() && again.removed.is_empty());
    }
}
