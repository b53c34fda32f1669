//! What the controller writes down: goal status (Kubernetes-style conditions), the product
//! plans (`.proto/planning/<product>/tasks.json`), the audit trail
//! (`.proto/audit/<date>.jsonl`) and `.proto/status.yaml`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::{Action, TaskState, WaitReason, goal_key};
use crate::spec::Spec;
use crate::spec::status::{Condition, READY, RECONCILING, STALLED};
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
    pub suspended: bool,
    pub goals: Vec<GoalStatus>,
}

impl StatusReport {
    pub fn goal(&self, name: &str) -> Option<&GoalStatus> {
        self.goals.iter().find(|g| g.name == name)
    }

    /// Goals that will not be met without a person: attempts exhausted, or work that could
    /// not be delivered.
    pub fn stalled(&self) -> Vec<&GoalStatus> {
        self.goals
            .iter()
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
    /// The revision running.
    pub revision: &'a str,
    pub revisions: &'a Revisions,
    pub tasks: &'a [Task],
    /// Each goal's last check, with the goal key it ran against.
    pub checks: &'a BTreeMap<String, (LastCheck, String)>,
    /// The last plan (its wait actions explain goals that are not worked).
    pub plan: &'a [Action],
}

/// Builds the status of every goal from what was seen; `previous` keeps transition times.
pub fn status(seen: &Seen<'_>, previous: &StatusReport, now: DateTime<Utc>) -> StatusReport {
    let Seen {
        spec,
        revision,
        revisions,
        tasks,
        checks,
        plan,
    } = *seen;
    let company = spec.company();
    let suspended = company.is_some_and(|c| c.spec.suspend);
    let mut goals = Vec::new();
    for goal in &spec.goals {
        let name = goal.name();
        let key = goal_key(goal);
        let prev = previous.goal(name);
        let task = tasks
            .iter()
            .filter(|t| t.goal == name && t.key == key)
            .max_by_key(|t| t.id);
        let check = checks
            .get(name)
            .filter(|(_, k)| *k == key)
            .map(|(c, _)| c.clone());
        let wait = plan.iter().find_map(|a| match a {
            Action::Wait { goal, reason, .. } if goal == name => Some(reason.clone()),
            _ => None,
        });
        let (ready, reconciling, stalled, reason, message): (
            Option<bool>,
            bool,
            bool,
            String,
            String,
        ) = match (&check, task.map(|t| t.state), &wait) {
            _ if suspended => (
                None,
                false,
                false,
                "Suspended".into(),
                "the company is suspended".into(),
            ),
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
        goals.push(GoalStatus {
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
            revision: revision.to_string(),
        });
    }
    StatusReport {
        company: company.map(|c| c.name().to_string()).unwrap_or_default(),
        source: spec.source.clone(),
        last_applied_revision: revisions.last_applied.clone(),
        last_attempted_revision: revisions.last_attempted.clone(),
        errors: revisions.errors.clone(),
        suspended,
        goals,
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

/// `.proto/planning/<product>/tasks.json`: one entry per goal of the product, with the state
/// of its newest task.
pub fn product_plan(spec: &Spec, product: &str, status: &StatusReport) -> serde_json::Value {
    let tasks: Vec<PlannedTask> = spec
        .goals
        .iter()
        .filter(|g| g.spec.product == product)
        .map(|g| {
            let s = status.goal(g.name());
            PlannedTask {
                id: g.name().to_string(),
                title: g.spec.description.clone(),
                status: match s.map(|s| s.reason.as_str()) {
                    Some("CheckPassed") => "done",
                    Some("Working") => "in_progress",
                    Some("AttemptsExhausted" | "DeliveryFailed") => "blocked",
                    Some(
                        "DependenciesNotMet" | "NoModel" | "Suspended" | "WaitingApproval"
                        | "BudgetExhausted",
                    ) => "waiting",
                    _ => "todo",
                }
                .to_string(),
                assignee: g.spec.owner.clone(),
                dependencies: g.spec.depends_on.clone(),
                notes: s.map(|s| s.message.clone()).unwrap_or_default(),
                subtasks: Vec::new(),
            }
        })
        .collect();
    serde_json::json!({ "product": product, "tasks": tasks })
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

/// The ids already present in an audit file (so a record is never written twice, even when
/// the process died between committing it and noting that it did).
pub fn audit_ids(file: &str) -> std::collections::BTreeSet<i64> {
    file.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("id").and_then(serde_json::Value::as_i64))
        .collect()
}
