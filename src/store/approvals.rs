//! Approval requests, the store's half: one row per gated step of a task's attempt. `act()`
//! asks here before a gated action runs (and finds the answer when the task runs again);
//! the engine publishes each new request to the company repository and records the answer
//! it reads back from git. Answering moves the task in the same transaction: approved, it
//! is queued to resume at the step; denied, the attempt ends failed with the person's
//! reason, which the next attempt is told.

use super::Cached as _;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    AuditRecord, EventKind, Store, StoreError, TaskId, TaskState, append_event, close_attempt,
    insert_audit, json_column, load_task, optional_time_column, state_name, time_column, time_text,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
}

impl ApprovalState {
    fn name(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
        }
    }

    fn parse(text: &str) -> ApprovalState {
        match text {
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            _ => ApprovalState::Pending,
        }
    }
}

/// One request and, once given, its answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub id: String,
    pub task: TaskId,
    /// The attempt it was asked in: an answer holds for that attempt only.
    pub attempt: u32,
    pub step: u32,
    pub goal: String,
    pub agent: String,
    /// The gated action's name (`push:main`, `mcp__stripe__refund`, a goal's `gate`).
    pub action: String,
    /// The action's full input.
    pub input: Value,
    pub reason: String,
    /// What publishing would change, for a gated goal's work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The commit a reviewer sees (a gated goal's work on `proto/<goal>`): exactly what is
    /// published once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed: Option<String>,
    pub requested_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The company repository's commit that holds the request, once published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    pub state: ApprovalState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The person's reason (a denial's), or how the answer was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// A gated step asking to run.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    pub task: TaskId,
    pub step: u32,
    pub agent: &'a str,
    pub action: &'a str,
    pub input: &'a Value,
    pub reason: &'a str,
    pub diff: Option<&'a str>,
    pub reviewed: Option<&'a str>,
    /// How long the request waits for an answer before it is denied.
    pub timeout: Option<chrono::Duration>,
}

const COLUMNS: &str = "id, task, attempt, step, goal, agent, action, input, reason, diff, \
                       reviewed, requested_at, expires_at, published, state, decided_by, \
                       decided_at, answer";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: row.get(0)?,
        task: row.get(1)?,
        attempt: row.get(2)?,
        step: row.get(3)?,
        goal: row.get(4)?,
        agent: row.get(5)?,
        action: row.get(6)?,
        input: json_column(row, 7)?,
        reason: row.get(8)?,
        diff: row.get(9)?,
        reviewed: row.get(10)?,
        requested_at: time_column(row, 11)?,
        expires_at: optional_time_column(row, 12)?,
        published: row.get(13)?,
        state: ApprovalState::parse(&row.get::<_, String>(14)?),
        decided_by: row.get(15)?,
        decided_at: optional_time_column(row, 16)?,
        answer: row.get(17)?,
    })
}

/// The request's name: in its branch (`proto/approvals/<id>`), its file and the CLI.
pub fn approval_id(goal: &str, task: TaskId, attempt: u32, step: u32) -> String {
    format!("{goal}-{task}-{attempt}-{step}")
}

impl Store {
    /// The request for this step of the task's current attempt: the one already made (an
    /// answered one holds only for the same input), or a new pending one.
    pub fn ask_approval(&self, ask: &Ask<'_>, now: DateTime<Utc>) -> Result<Approval, StoreError> {
        self.write(|tx| {
            let task = load_task(tx, ask.task)?;
            let existing = tx
                .query_row_cached(
                    &format!(
                        "SELECT {COLUMNS} FROM approvals WHERE task = ?1 AND attempt = ?2 AND step = ?3"
                    ),
                    params![ask.task, task.attempts, ask.step],
                    from_row,
                )
                .optional()?;
            if let Some(existing) = existing {
                if existing.input == *ask.input && existing.action == ask.action {
                    return Ok(existing);
                }
                // Another action at the same step (a model that chose differently): the old
                // answer does not carry over.
                tx.execute_cached("DELETE FROM approvals WHERE id = ?1", [&existing.id])?;
            }
            let id = approval_id(&task.goal, task.id, task.attempts, ask.step);
            let expires = ask.timeout.map(|t| now + t);
            tx.execute_cached(
                "INSERT INTO approvals (id, task, attempt, step, goal, agent, action, input,
                     reason, diff, reviewed, requested_at, expires_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending')",
                params![
                    id,
                    task.id,
                    task.attempts,
                    ask.step,
                    task.goal,
                    ask.agent,
                    ask.action,
                    ask.input.to_string(),
                    ask.reason,
                    ask.diff,
                    ask.reviewed,
                    time_text(now),
                    expires.map(time_text),
                ],
            )?;
            let data = json!({ "id": id, "action": ask.action, "reason": ask.reason });
            append_event(tx, Some(task.id), Some(&task.goal), EventKind::ApprovalRequested, &data, now)?;
            Ok(tx.query_row_cached(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                [&id],
                from_row,
            )?)
        })
    }

    /// An approved request of the task's current attempt (or of an agent it delegated to),
    /// if there is one: the task resumes where it asked. A request with reviewed work comes
    /// first.
    pub fn approved(&self, task: TaskId) -> Result<Option<Approval>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row_cached(
                    // The task's own requests and those of the agents it delegated to.
                    &format!(
                        "WITH RECURSIVE tree(id) AS (
                             SELECT ?1 UNION ALL SELECT t.id FROM tasks t JOIN tree ON t.parent = tree.id)
                         SELECT {COLUMNS} FROM approvals a
                         WHERE task IN (SELECT id FROM tree) AND state = 'approved'
                           AND attempt = (SELECT attempts FROM tasks WHERE id = a.task)
                         ORDER BY (task <> ?1), (reviewed IS NULL), step LIMIT 1"
                    ),
                    [task],
                    from_row,
                )
                .optional()?)
        })
    }

    /// Every request, newest first.
    pub fn approvals(&self) -> Result<Vec<Approval>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM approvals ORDER BY requested_at DESC, id"
            ))?;
            let rows = statement.query_map([], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Requests waiting for an answer.
    pub fn pending_approvals(&self) -> Result<Vec<Approval>, StoreError> {
        self.read(|tx| {
            let mut statement = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE state = 'pending' ORDER BY requested_at, id"
            ))?;
            let rows = statement.query_map([], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The request was committed to the company repository as `commit`.
    pub fn approval_published(&self, id: &str, commit: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute_cached(
                "UPDATE approvals SET published = ?2 WHERE id = ?1",
                params![id, commit],
            )?;
            Ok(())
        })
    }

    /// Records (event and audit) that the commit which would approve a request was made by
    /// someone who may not approve it: the request keeps waiting.
    pub fn note_refused_answer(
        &self,
        approval: &Approval,
        by: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let data = json!({ "id": approval.id, "by": by, "refused": why });
            append_event(
                tx,
                Some(approval.task),
                Some(&approval.goal),
                EventKind::ApprovalRefused,
                &data,
                now,
            )?;
            insert_audit(
                tx,
                &AuditRecord {
                    id: 0,
                    time: now,
                    agent: by.to_string(),
                    goal: Some(approval.goal.clone()),
                    task: Some(approval.task),
                    action: "approve".into(),
                    input: json!({ "approval": approval.id, "action": approval.action }),
                    outcome: json!({ "refused": why }),
                    diff: None,
                },
            )?;
            Ok(())
        })
    }

    /// Records a person's answer and moves the task: approved, it is queued to resume;
    /// denied, its attempt ends failed with `answer` (queued for the next attempt, or
    /// failed when none is left). `Ok(false)` when the request was already answered.
    pub fn answer_approval(
        &self,
        id: &str,
        approved: bool,
        by: &str,
        answer: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let moved = self.write(|tx| {
            let Some(approval) = tx
                .query_row_cached(
                    &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                    [id],
                    from_row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            if approval.state != ApprovalState::Pending {
                return Ok(None);
            }
            let state = if approved {
                ApprovalState::Approved
            } else {
                ApprovalState::Denied
            };
            tx.execute_cached(
                "UPDATE approvals SET state = ?2, decided_by = ?3, decided_at = ?4, answer = ?5
                 WHERE id = ?1",
                params![id, state.name(), by, time_text(now), answer],
            )?;
            // A delegated agent's request parks the task that delegated to it: the answer
            // moves that root task, which delegates again and finds the answer.
            let mut task = load_task(tx, approval.task)?;
            let delegated = task.parent.is_some();
            while let Some(parent) = task.parent {
                task = load_task(tx, parent)?;
            }
            let data = json!({ "id": id, "action": approval.action, "by": by, "answer": answer });
            let event = if approved {
                EventKind::ApprovalApproved
            } else {
                EventKind::ApprovalDenied
            };
            append_event(tx, Some(task.id), Some(&task.goal), event, &data, now)?;
            insert_audit(
                tx,
                &AuditRecord {
                    id: 0,
                    time: now,
                    agent: by.to_string(),
                    goal: Some(task.goal.clone()),
                    task: Some(task.id),
                    action: if approved { "approve" } else { "deny" }.into(),
                    input: json!({ "approval": id, "action": approval.action }),
                    outcome: json!({ "answer": answer }),
                    diff: None,
                },
            )?;
            // A task no longer waiting (cancelled, its goal gone) keeps its state.
            if task.state != TaskState::WaitingApproval
                || (!delegated && task.attempts != approval.attempt)
            {
                return Ok(Some(None));
            }
            let now_text = time_text(now);
            if approved {
                tx.execute_cached(
                    "UPDATE tasks SET state = 'queued', not_before = ?2, updated_at = ?2
                     WHERE id = ?1",
                    params![task.id, now_text],
                )?;
                return Ok(Some(Some(task.id)));
            }
            let attempts = task.attempts.saturating_add(1);
            let error = format!("{} was denied by {by}: {answer}", approval.action);
            let state = if attempts < task.max_attempts {
                TaskState::Queued
            } else {
                TaskState::Failed
            };
            tx.execute_cached(
                "UPDATE tasks SET state = ?2, attempts = ?3, not_before = ?4, last_error = ?5,
                     updated_at = ?4, failure = 'work'
                 WHERE id = ?1",
                params![task.id, state_name(state), attempts, now_text, error],
            )?;
            close_attempt(tx, task.id, "denied", &error, now)?;
            Ok(Some(Some(task.id)))
        })?;
        // The planner's view follows the task it moved.
        if let Some(Some(task)) = moved {
            self.noted(&[task], None);
        }
        Ok(moved.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewTask, Priority};

    fn waiting(store: &Store) -> TaskId {
        let now = Utc::now();
        let id = store
            .enqueue(
                &NewTask {
                    key: "k".into(),
                    goal: "deploy".into(),
                    product: "app".into(),
                    owner: "ceo".into(),
                    priority: Priority::Medium,
                    max_attempts: 2,
                    revision: "r".into(),
                    parent: None,
                },
                now,
            )
            .unwrap()
            .unwrap();
        store.start(id, "here", now).unwrap();
        store
            .finish(
                id,
                &crate::store::AttemptOutcome::WaitingApproval {
                    action: "push:main".into(),
                    reason: "gated".into(),
                },
                now,
                now,
            )
            .unwrap();
        id
    }

    fn ask(task: TaskId, input: &Value) -> Ask<'_> {
        Ask {
            task,
            step: 3,
            agent: "ceo",
            action: "push:main",
            input,
            reason: "gated",
            diff: None,
            reviewed: None,
            timeout: None,
        }
    }

    #[test]
    fn a_request_is_made_once_and_its_answer_moves_the_task() {
        let store = Store::in_memory().unwrap();
        let task = waiting(&store);
        let input = json!({ "branch": "main" });
        let first = store.ask_approval(&ask(task, &input), Utc::now()).unwrap();
        let again = store.ask_approval(&ask(task, &input), Utc::now()).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.id, "deploy-1-0-3");
        assert_eq!(store.pending_approvals().unwrap().len(), 1);
        assert!(store.approved(task).unwrap().is_none());

        assert!(
            store
                .answer_approval(&first.id, true, "ann@example.com", "merged", Utc::now())
                .unwrap()
        );
        assert!(
            !store
                .answer_approval(&first.id, false, "bob@example.com", "late", Utc::now())
                .unwrap(),
            "an answer is final"
        );
        assert_eq!(store.task(task).unwrap().state, TaskState::Queued);
        let approved = store.ask_approval(&ask(task, &input), Utc::now()).unwrap();
        assert_eq!(approved.state, ApprovalState::Approved);
        assert_eq!(store.approved(task).unwrap().map(|a| a.id), Some(first.id));
        // Another input at the step is another question.
        let other = json!({ "branch": "release" });
        let asked = store.ask_approval(&ask(task, &other), Utc::now()).unwrap();
        assert_eq!(asked.state, ApprovalState::Pending);
    }

    #[test]
    fn a_denial_fails_the_attempt_with_the_persons_reason() {
        let store = Store::in_memory().unwrap();
        let task = waiting(&store);
        let input = json!({});
        let request = store.ask_approval(&ask(task, &input), Utc::now()).unwrap();
        store
            .answer_approval(
                &request.id,
                false,
                "ann@example.com",
                "not on a Friday",
                Utc::now(),
            )
            .unwrap();
        let task = store.task(task).unwrap();
        assert_eq!(task.state, TaskState::Queued);
        assert_eq!(task.attempts, 1);
        let error = task.last_error.unwrap_or_default();
        assert!(
            error.contains("not on a Friday") && error.contains("ann@example.com"),
            "{error}"
        );
        // The next attempt asks again.
        let next = store
            .ask_approval(&ask(task.id, &input), Utc::now())
            .unwrap();
        assert_eq!(next.state, ApprovalState::Pending);
        assert_ne!(next.id, request.id);
    }
}
