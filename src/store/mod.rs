//! The durable store: SQLite (WAL) under the state directory. It is the work queue (tasks
//! with priority, state, attempt count, not-before time), the attempts, the act() journal
//! that makes crash recovery exact, the append-only event log, goal observations, computer
//! health, spend, applied/attempted revisions, and the audit records waiting to be written
//! back to git. Every state transition is one transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::plan::{GoalObservation, Observed, TaskObservation, TaskState};
use crate::spec::Priority;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot create the state directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state database is from a newer Proto (schema version {found}, this build knows {known})"
    )]
    TooNew { found: i64, known: i64 },
    #[error("no task {0}")]
    NoTask(i64),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

pub type TaskId = i64;

/// A task to be created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// Idempotency key: goal + hash of its spec (see `plan::goal_key`).
    pub key: String,
    pub goal: String,
    pub product: String,
    pub owner: String,
    pub priority: Priority,
    pub max_attempts: u32,
    /// The company revision (commit id) the task was planned at.
    pub revision: String,
}

/// A task as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub key: String,
    pub goal: String,
    pub product: String,
    pub owner: String,
    pub priority: Priority,
    pub state: TaskState,
    /// Attempts finished (failed or succeeded); an interrupted attempt does not count.
    pub attempts: u32,
    pub max_attempts: u32,
    pub not_before: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: String,
    pub computer: Option<String>,
    pub last_error: Option<String>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum AttemptOutcome {
    /// The check passed (before or after the work).
    Succeeded { detail: String },
    /// The check still fails, or a step failed.
    Failed { error: String },
}

/// One act() call's journal entry: recorded as started before the effect, and as finished
/// after it, so a restart can tell what may have happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: i64,
    pub task: TaskId,
    /// Position of the step in the task's work (stable across attempts and restarts).
    pub step: u32,
    pub tool: String,
    pub input: serde_json::Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<serde_json::Value>,
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub task: Option<TaskId>,
    pub goal: Option<String>,
    pub kind: String,
    pub data: serde_json::Value,
}

/// An audit record waiting to be committed to `.proto/audit/<date>.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique and stable: writeback skips records already present in the file.
    pub id: i64,
    pub time: DateTime<Utc>,
    pub agent: String,
    pub goal: Option<String>,
    pub task: Option<TaskId>,
    pub action: String,
    pub input: serde_json::Value,
    pub outcome: serde_json::Value,
    /// Unified diff of file changes the action made, if any.
    pub diff: Option<String>,
}

/// The last revision seen and the last one applied (valid), as Flux reports them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revisions {
    pub last_attempted: Option<String>,
    pub last_applied: Option<String>,
    /// Errors of the last attempted revision when it was not applied.
    pub errors: Vec<String>,
}

pub struct Store {
    conn: std::sync::Mutex<rusqlite::Connection>,
}

impl Store {
    /// Opens (creating if needed) `<dir>/proto.db` in WAL mode and migrates it.
    pub fn open(dir: &std::path::Path) -> Result<Store, StoreError> {
        let _ = dir;
        todo!()
    }

    /// A private in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        todo!()
    }

    /// Creates the task unless one with the same key is live (queued, running, waiting)
    /// or stalled. Returns the new task's id, or `None` when it already existed.
    pub fn enqueue(
        &self,
        task: &NewTask,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskId>, StoreError> {
        let _ = (task, now);
        todo!()
    }

    pub fn task(&self, id: TaskId) -> Result<Task, StoreError> {
        let _ = id;
        todo!()
    }

    /// Every task, newest first.
    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        todo!()
    }

    /// Queued tasks whose not-before time has come, in dispatch order: priority
    /// (critical first), then creation order.
    pub fn ready(&self, now: DateTime<Utc>) -> Result<Vec<Task>, StoreError> {
        let _ = now;
        todo!()
    }

    /// Marks a queued task running on `computer` and opens attempt number `attempts + 1`.
    pub fn start(&self, id: TaskId, computer: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _ = (id, computer, now);
        todo!()
    }

    /// Closes the running attempt. On success the task is `Succeeded`. On failure the attempt
    /// count rises; below `max_attempts` the task is queued again with `retry_at` as its
    /// not-before time, otherwise it is `Failed` (the planner then stalls it).
    pub fn finish(
        &self,
        id: TaskId,
        outcome: &AttemptOutcome,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Task, StoreError> {
        let _ = (id, outcome, retry_at, now);
        todo!()
    }

    /// A task left running by a process that died goes back to the queue; its interrupted
    /// attempt does not count. Returns the ids requeued.
    pub fn recover_interrupted(&self, now: DateTime<Utc>) -> Result<Vec<TaskId>, StoreError> {
        let _ = now;
        todo!()
    }

    pub fn cancel(&self, id: TaskId, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _ = (id, reason, now);
        todo!()
    }

    /// Marks a failed task Stalled (a dead letter) with the message.
    pub fn stall(&self, id: TaskId, message: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _ = (id, message, now);
        todo!()
    }

    /// `proto retry GOAL`: a stalled or failed task of the goal becomes queued again with a
    /// fresh attempt budget. Returns the task requeued, if any.
    pub fn retry(&self, goal: &str, now: DateTime<Utc>) -> Result<Option<TaskId>, StoreError> {
        let _ = (goal, now);
        todo!()
    }

    /// Records a goal's check result.
    pub fn observe(
        &self,
        goal: &str,
        observation: &GoalObservation,
        detail: &str,
    ) -> Result<(), StoreError> {
        let _ = (goal, observation, detail);
        todo!()
    }

    /// What the planner needs: goal observations and all tasks (as `TaskObservation`).
    /// `model_available` is left false; the engine fills it.
    pub fn observed(&self) -> Result<Observed, StoreError> {
        todo!()
    }

    /// The journal entry of `step` of `task`, if one was recorded.
    pub fn action(&self, task: TaskId, step: u32) -> Result<Option<ActionRecord>, StoreError> {
        let _ = (task, step);
        todo!()
    }

    /// Journals a step as started (before its effect). Replaces an unfinished entry.
    pub fn action_started(
        &self,
        task: TaskId,
        step: u32,
        tool: &str,
        input: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let _ = (task, step, tool, input, now);
        todo!()
    }

    /// Journals a step as finished, and in the same transaction queues its audit record.
    pub fn action_finished(
        &self,
        action: i64,
        outcome: &serde_json::Value,
        audit: &AuditRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (action, outcome, audit, now);
        todo!()
    }

    /// Forgets a task's journal (when a new attempt must start from scratch).
    pub fn clear_actions(&self, task: TaskId) -> Result<(), StoreError> {
        let _ = task;
        todo!()
    }

    /// Appends to the event log.
    pub fn event(
        &self,
        task: Option<TaskId>,
        goal: Option<&str>,
        kind: &str,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let _ = (task, goal, kind, data, now);
        todo!()
    }

    /// Events after `after` (an event id), oldest first, at most `limit`.
    pub fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let _ = (after, limit);
        todo!()
    }

    /// Queues an audit record not tied to a journaled step (a check run, a commit).
    pub fn audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        let _ = record;
        todo!()
    }

    /// Audit records not yet written back, oldest first.
    pub fn pending_audit(&self) -> Result<Vec<AuditRecord>, StoreError> {
        todo!()
    }

    /// Marks audit records as written back in `commit`.
    pub fn audit_written(&self, ids: &[i64], commit: &str) -> Result<(), StoreError> {
        let _ = (ids, commit);
        todo!()
    }

    pub fn revisions(&self) -> Result<Revisions, StoreError> {
        todo!()
    }

    /// Records an attempted revision; `errors` empty means it was applied.
    pub fn record_revision(
        &self,
        revision: &str,
        errors: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (revision, errors, now);
        todo!()
    }

    /// Records a computer's health as seen now.
    pub fn computer_seen(
        &self,
        name: &str,
        healthy: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (name, healthy, now);
        todo!()
    }

    /// `(name, healthy, last_seen)` of every computer seen.
    pub fn computers(&self) -> Result<Vec<(String, bool, DateTime<Utc>)>, StoreError> {
        todo!()
    }

    /// Records spend against a task (tokens and dollars; zero for playbooks).
    pub fn spend(
        &self,
        task: TaskId,
        agent: &str,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
        usd: f64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (task, agent, model, input_tokens, output_tokens, usd, now);
        todo!()
    }

    /// Dollars spent on a goal's tasks.
    pub fn spent_on_goal(&self, goal: &str) -> Result<f64, StoreError> {
        let _ = goal;
        todo!()
    }
}

/// Converts a stored task to what the planner sees.
pub fn task_observation(task: &Task) -> TaskObservation {
    TaskObservation {
        key: task.key.clone(),
        goal: task.goal.clone(),
        state: task.state,
        attempts: task.attempts,
        last_error: task.last_error.clone(),
    }
}
