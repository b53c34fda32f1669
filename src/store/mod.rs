//! The durable store: SQLite (WAL) under the state directory. It is the work queue (tasks
//! with priority, state, attempt count, not-before time), the attempts, the act() journal
//! that makes crash recovery exact, the append-only event log, goal observations, computer
//! health, spend, applied/attempted revisions, and the audit records waiting to be written
//! back to git. Every state transition is one transaction, and so is every step an agent
//! takes ([`Store::record`]); pruning ([`Store::prune`]) is the only way rows leave the event
//! log.

pub mod activity;
mod approvals;
mod computers;
mod control;
mod event;
mod knowledge;
mod migrations;
mod observed;
mod reads;
mod record;
mod retention;
mod spending;

/// How many prepared statements a connection keeps: more than the store has.
const STATEMENTS: usize = 256;

/// `execute` and `query_row` through the connection's cache of prepared statements.
trait Cached {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

#[cfg(test)]
mod tests;

pub use computers::ComputerRecord;
pub use knowledge::{Proposal, StoredCapture};
pub use observed::ObservedCursor;
pub use reads::{AttemptRow, SpendReport, SpendSum};
pub use record::{Cost, Entry, StepRecord};
pub use retention::{Pruned, Retention};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

use std::collections::BTreeMap;

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
    /// The database file fails SQLite's `quick_check`, or is not a database at all.
    #[error(
        "{}: the state database is damaged ({detail}); move the state directory {} aside and \
         start `proto run` with a fresh one: observed state is rebuilt from git and the \
         product branches (each goal's check runs again on what its branch holds)",
        .path.display(),
        .path.parent().unwrap_or(.path).display()
    )]
    Corrupt {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("no task {0}")]
    NoTask(i64),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no journal entry {0}")]
    NoAction(i64),
    /// The transition does not apply to the task's current state.
    #[error("task {id} is {}; it cannot be {operation}", state_name(*.state))]
    State {
        id: TaskId,
        state: TaskState,
        operation: &'static str,
    },
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
    /// The task that delegated this one. Children run inside their parent's attempt: the
    /// planner and the dispatcher never see them.
    pub parent: Option<TaskId>,
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
    /// The task that delegated this one, if any.
    pub parent: Option<TaskId>,
    /// For a succeeded task: the commit of the product's branch that holds its work (its
    /// own delivery, or the tip found already meeting the goal). `None` when the product
    /// has no commits at all.
    pub delivered: Option<String>,
    /// For a task whose last attempt failed: whether the work or its delivery failed.
    pub failure: Option<Failure>,
    /// For a queued task whose last attempt stopped because no model provider could
    /// answer: the cause (`connection refused to 127.0.0.1:8080`). It waits for the provider
    /// without spending an attempt.
    pub outage: Option<String>,
}

/// What part of an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failure {
    /// The work: a step, the agent's session, or the check on the work.
    Work,
    /// Delivering it: the push was refused, the branch unreachable, the rebase conflicting.
    Delivery,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Work => "work",
            Failure::Delivery => "delivery",
        }
    }

    fn from_name(name: &str) -> Option<Failure> {
        match name {
            "work" => Some(Failure::Work),
            "delivery" => Some(Failure::Delivery),
            _ => None,
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum AttemptOutcome {
    /// The check passed on what the product's branch holds: the work was delivered as
    /// `delivered`, or the branch already met the goal at that commit.
    Succeeded {
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<String>,
    },
    /// The check still fails, or a step failed.
    Failed { error: String },
    /// The work passed its check but did not reach the product's branch (the push was
    /// refused, the rebase conflicted, the remote was unreachable). Counts as a failed
    /// attempt.
    Undelivered { error: String },
    /// An action needs a person's approval (an `ask` permission rule or hook): the task
    /// waits, its attempt not counted, until the approval flow resumes it.
    WaitingApproval { action: String, reason: String },
    /// A dollar budget (the company's daily one or the goal's) is spent: the task ends and
    /// the planner waits until the budget allows more.
    OverBudget { error: String },
    /// No model provider could answer (down, unreachable, 5xx, 429, 529, every circuit
    /// open): the task is queued again for `retry_at` without spending an attempt, and
    /// shows the cause while it waits.
    ProviderUnavailable { error: String },
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
    pub kind: EventKind,
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

/// What the budgets count for one model call; see [`Store::spent`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spent {
    /// Tokens of the current attempt of the root task, its delegated children included.
    pub attempt_tokens: u64,
    /// Dollars spent on the task's goal, over all its tasks.
    pub goal_usd: f64,
    /// Dollars the company spent on the UTC day.
    pub day_usd: f64,
}

/// One task's recorded spend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpend {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub usd: f64,
    /// Model calls.
    pub calls: u64,
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

/// The database file inside the state directory.
pub const DB_FILE: &str = "proto.db";

/// How long a write waits for another connection's write to finish before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub use approvals::{Approval, ApprovalState, Ask, approval_id};
pub use control::Stop;
pub use event::EventKind;

pub struct Store {
    conn: std::sync::Mutex<rusqlite::Connection>,
    /// The planner's view ([`observed::View`]), built on first use; always locked after
    /// `conn`, never before.
    view: std::sync::Mutex<Option<observed::View>>,
    /// Write transactions committed through this handle: what the cost of a step is
    /// measured in (see [`Store::write_count`]).
    writes: std::sync::atomic::AtomicU64,
    /// When this handle last ran retention (see [`Store::prune_if_due`]).
    pruned_at: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// The planner's spending, kept between passes (see [`spending`]); locked after `conn`.
    spending: std::sync::Mutex<Option<spending::Kept>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// How many problems a failed check reports; the first says enough to act on.
const CHECK_PROBLEMS: u32 = 3;

/// Refuses a database file that is damaged or not a database at all. `quick_check` reads
/// every page of every table and index and checks its structure; it does not cross-check
/// indexes against their tables as `integrity_check` does, which costs many times more on
/// every start for damage that `quick_check` catches the usual causes of (a torn or
/// overwritten page, a truncated file).
fn quick_check(conn: &Connection, path: &std::path::Path) -> Result<(), StoreError> {
    let damaged = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let answer = conn
        .prepare(&format!("PRAGMA quick_check({CHECK_PROBLEMS})"))
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<String>, _>>()
        });
    match answer {
        Ok(lines) if lines.iter().all(|line| line == "ok") => Ok(()),
        Ok(lines) => Err(damaged(lines.join("; "))),
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
            ) =>
        {
            Err(damaged(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/proto.db` in WAL mode and migrates it, refusing a
    /// damaged file (see [`StoreError::Corrupt`]).
    pub fn open(dir: &std::path::Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        // The check reads; it may have to wait for a writer like everything else.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Before anything else reads or changes the file: a damaged store would fail a task
        // midway, or worse, answer wrongly about what was done.
        quick_check(&conn, &path)?;
        Store::setup(conn, migrations::MIGRATIONS)
    }

    /// Another connection to a store that [`Store::open`] opened (checked and migrated) in
    /// this process, for reads only: long reads on it (a list of every task) do not hold up
    /// the short ones on the first handle. Under WAL neither waits for the engine's writes.
    pub fn open_reader(dir: &std::path::Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            dir.join(DB_FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Store::over(conn))
    }

    /// A private in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::setup(Connection::open_in_memory()?, migrations::MIGRATIONS)
    }

    fn setup(mut conn: Connection, migrations: &[&str]) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Refuse a newer database before changing anything about the file (journal mode is
        // persistent).
        let found = migrations::version(&conn)?;
        let known = migrations::known(migrations);
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        // Only a database without tables can take it: a new store frees the pages retention
        // empties a little at a time (`PRAGMA incremental_vacuum`), with no VACUUM ever
        // rewriting the file. Older stores reuse freed pages instead.
        if found == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        // An in-memory database answers "memory"; a file that cannot do WAL keeps its mode
        // and still works, only with less concurrency.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(mode, "the state database could not switch to WAL");
        }
        // NORMAL under WAL: a power loss may lose the last commits, never corrupt the file.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        if found < known {
            migrations::migrate(&mut conn, migrations)?;
        }
        Ok(Store::over(conn))
    }

    /// A handle over a connection that is ready for use.
    fn over(conn: Connection) -> Store {
        // Every statement the store runs is kept prepared (see [`Cached`]): a task runs a
        // few dozen, each parsed again otherwise.
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        Store {
            conn: std::sync::Mutex::new(conn),
            view: std::sync::Mutex::new(None),
            writes: std::sync::atomic::AtomicU64::new(0),
            pruned_at: std::sync::Mutex::new(None),
            spending: std::sync::Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction, which rolled it back, so
        // the connection is still consistent.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the planner's view up to date with what was just committed for `tasks` (and
    /// the check of `goal`). A view that cannot be updated is dropped, to be rebuilt from
    /// the tables when next asked: it is never left wrong.
    fn noted(&self, tasks: &[TaskId], goal: Option<&str>) {
        let conn = self.lock();
        let mut slot = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(view) = slot.as_mut() else {
            return;
        };
        let updated = tasks
            .iter()
            .try_for_each(|id| view.note_task(&conn, *id))
            .and_then(|()| goal.map_or(Ok(()), |g| view.note_goal(&conn, g)));
        if updated.is_err() {
            *slot = None;
        }
    }

    /// Runs `f` with the planner's view as of now.
    fn with_view<T>(&self, f: impl FnOnce(&observed::View) -> T) -> Result<T, StoreError> {
        let conn = self.lock();
        let mut slot = self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let view = observed::View::current(&mut slot, &conn)?;
        Ok(f(view))
    }

    /// Runs `f` in one write transaction. IMMEDIATE takes the write lock up front: a
    /// deferred transaction that reads and then writes fails outright (instead of waiting)
    /// when another connection wrote in between.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_and(f, |_, _| {})
    }

    /// [`Store::write`], then `after` with what it returned, still holding the connection:
    /// no other reader or writer of the tables comes between the commit and `after`.
    fn write_and<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
        after: impl FnOnce(&Connection, &T),
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        after(&conn, &value);
        Ok(value)
    }

    /// Write transactions committed through this handle since it was opened. Each one is a
    /// WAL append and, at `synchronous = NORMAL`, a share of the next checkpoint: the unit
    /// the cost of journaling a step is counted in.
    pub fn write_count(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` in one read transaction, so reads that span queries see one snapshot.
    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Creates the task unless one with the same key is live (queued, running, waiting)
    /// or stalled. Returns the new task's id, or `None` when it already existed.
    pub fn enqueue(
        &self,
        task: &NewTask,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskId>, StoreError> {
        let result = self.write(|tx| {
            let blocking: Option<TaskId> = tx
                .query_row_cached(
                    "SELECT id FROM tasks WHERE key = ?1
                     AND state IN ('queued', 'running', 'waitingApproval', 'stalled') LIMIT 1",
                    [&task.key],
                    |row| row.get(0),
                )
                .optional()?;
            if blocking.is_some() {
                return Ok(None);
            }
            let now_text = time_text(now);
            tx.execute_cached(
                "INSERT INTO tasks (key, goal, product, owner, priority, state, attempts,
                     max_attempts, not_before, created_at, updated_at, revision, parent)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', 0, ?6, ?7, ?7, ?7, ?8, ?9)",
                params![
                    task.key,
                    task.goal,
                    task.product,
                    task.owner,
                    task.priority.as_str(),
                    task.max_attempts,
                    now_text,
                    task.revision,
                    task.parent,
                ],
            )?;
            let id = tx.last_insert_rowid();
            append_event(
                tx,
                Some(id),
                Some(&task.goal),
                EventKind::TaskQueued,
                &json!({
                    "key": task.key,
                    "priority": task.priority.as_str(),
                    "revision": task.revision,
                }),
                now,
            )?;
            Ok(Some(id))
        });
        if let Ok(Some(id)) = &result {
            self.noted(&[*id], None);
        }
        result
    }

    pub fn task(&self, id: TaskId) -> Result<Task, StoreError> {
        self.read(|tx| load_task(tx, id))
    }

    /// Every task, newest first.
    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.read(|tx| {
            query_tasks(
                tx,
                &format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id DESC"),
                [],
            )
        })
    }

    /// The tasks of one goal (delegated ones included), newest first.
    pub fn tasks_of_goal(&self, goal: &str) -> Result<Vec<Task>, StoreError> {
        self.read(|tx| {
            query_tasks(
                tx,
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE goal = ?1 ORDER BY id DESC"),
                [goal],
            )
        })
    }

    /// Queued tasks whose not-before time has come, in dispatch order: priority
    /// (critical first), then creation order.
    pub fn ready(&self, now: DateTime<Utc>) -> Result<Vec<Task>, StoreError> {
        let mut ready = Vec::new();
        self.ready_each(now, |task| {
            ready.push(task.clone());
            true
        })?;
        Ok(ready)
    }

    /// Calls `take` with each ready task in dispatch order (see [`Store::ready`]) until it
    /// answers false: the loop stops reading when its computers are full, and reads from
    /// the planner's view, not the tables.
    pub fn ready_each(
        &self,
        now: DateTime<Utc>,
        take: impl FnMut(&Task) -> bool,
    ) -> Result<(), StoreError> {
        self.with_view(|view| view.ready_each(now, take))
    }

    /// Marks a queued task running on `computer` and opens attempt number `attempts + 1`.
    pub fn start(&self, id: TaskId, computer: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self.write(|tx| {
            let task = load_task(tx, id)?;
            if task.state != TaskState::Queued {
                return Err(StoreError::State {
                    id,
                    state: task.state,
                    operation: "started",
                });
            }
            let number = task.attempts.saturating_add(1);
            let now_text = time_text(now);
            tx.execute_cached(
                "UPDATE tasks SET state = 'running', computer = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, computer, now_text],
            )?;
            tx.execute_cached(
                "INSERT INTO attempts (task, number, computer, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, number, computer, now_text],
            )?;
            append_event(
                tx,
                Some(id),
                Some(&task.goal),
                EventKind::TaskStarted,
                &json!({ "attempt": number, "computer": computer }),
                now,
            )?;
            Ok(())
        });
        if result.is_ok() {
            self.noted(&[id], None);
        }
        result
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
        let result = self.write(|tx| {
            let task = load_task(tx, id)?;
            if task.state != TaskState::Running {
                return Err(StoreError::State {
                    id,
                    state: task.state,
                    operation: "finished",
                });
            }
            // Attempts counts finished attempts, successes included.
            let attempts = task.attempts.saturating_add(1);
            let now_text = time_text(now);
            // An outage is over once an attempt ends any other way.
            tx.execute_cached("UPDATE tasks SET outage = NULL WHERE id = ?1", params![id])?;
            match outcome {
                AttemptOutcome::ProviderUnavailable { error } => {
                    // Not a finished attempt: the work waits for the provider.
                    tx.execute_cached(
                        "UPDATE tasks SET state = 'queued', not_before = ?2, outage = ?3,
                             updated_at = ?4
                         WHERE id = ?1",
                        params![id, time_text(retry_at), error, now_text],
                    )?;
                    close_attempt(tx, id, "interrupted", error, now)?;
                    append_event(
                        tx,
                        Some(id),
                        Some(&task.goal),
                        EventKind::TaskProviderUnavailable,
                        &json!({ "attempt": attempts, "error": error, "retryAt": time_text(retry_at) }),
                        now,
                    )?;
                }
                AttemptOutcome::Succeeded { detail, delivered } => {
                    tx.execute_cached(
                        "UPDATE tasks SET state = 'succeeded', attempts = ?2, updated_at = ?3,
                             delivered = ?4, failure = NULL
                         WHERE id = ?1",
                        params![id, attempts, now_text, delivered],
                    )?;
                    close_attempt(tx, id, "succeeded", detail, now)?;
                    append_event(
                        tx,
                        Some(id),
                        Some(&task.goal),
                        EventKind::TaskSucceeded,
                        &json!({ "attempt": attempts, "detail": detail, "delivered": delivered }),
                        now,
                    )?;
                }
                AttemptOutcome::Failed { error } | AttemptOutcome::Undelivered { error } => {
                    let failure = match outcome {
                        AttemptOutcome::Undelivered { .. } => Failure::Delivery,
                        _ => Failure::Work,
                    };
                    let (state, not_before, kind) = if attempts < task.max_attempts {
                        (TaskState::Queued, retry_at, EventKind::TaskRetrying)
                    } else {
                        (TaskState::Failed, task.not_before, EventKind::TaskFailed)
                    };
                    tx.execute_cached(
                        "UPDATE tasks SET state = ?2, attempts = ?3, not_before = ?4,
                             last_error = ?5, updated_at = ?6, failure = ?7
                         WHERE id = ?1",
                        params![
                            id,
                            state_name(state),
                            attempts,
                            time_text(not_before),
                            error,
                            now_text,
                            failure.name()
                        ],
                    )?;
                    close_attempt(tx, id, "failed", error, now)?;
                    let mut data = json!({
                        "attempt": attempts,
                        "maxAttempts": task.max_attempts,
                        "error": error,
                        "failure": failure,
                    });
                    if state == TaskState::Queued {
                        data["retryAt"] = json!(time_text(retry_at));
                    }
                    append_event(tx, Some(id), Some(&task.goal), kind, &data, now)?;
                }
                AttemptOutcome::WaitingApproval { action, reason } => {
                    // Not a finished attempt: it resumes once a person has answered.
                    let message = format!("{action} needs approval: {reason}");
                    tx.execute_cached(
                        "UPDATE tasks SET state = 'waitingApproval', last_error = ?2,
                             updated_at = ?3
                         WHERE id = ?1",
                        params![id, message, now_text],
                    )?;
                    close_attempt(tx, id, "waitingApproval", &message, now)?;
                    append_event(
                        tx,
                        Some(id),
                        Some(&task.goal),
                        EventKind::TaskWaitingApproval,
                        &json!({ "action": action, "reason": reason }),
                        now,
                    )?;
                }
                AttemptOutcome::OverBudget { error } => {
                    tx.execute_cached(
                        "UPDATE tasks SET state = 'cancelled', attempts = ?2, last_error = ?3,
                             updated_at = ?4
                         WHERE id = ?1",
                        params![id, attempts, error, now_text],
                    )?;
                    close_attempt(tx, id, "overBudget", error, now)?;
                    append_event(
                        tx,
                        Some(id),
                        Some(&task.goal),
                        EventKind::TaskOverBudget,
                        &json!({ "attempt": attempts, "error": error }),
                        now,
                    )?;
                }
            }
            load_task(tx, id)
        });
        if result.is_ok() {
            self.noted(&[id], None);
        }
        result
    }

    /// A task left running by a process that died goes back to the queue; its interrupted
    /// attempt does not count. Returns the ids requeued.
    pub fn recover_interrupted(&self, now: DateTime<Utc>) -> Result<Vec<TaskId>, StoreError> {
        let result = self.write(|tx| {
            let running: Vec<(TaskId, String, u32)> = {
                let mut stmt = tx.prepare(
                    "SELECT id, goal, attempts FROM tasks WHERE state = 'running' ORDER BY id",
                )?;
                let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (id, goal, attempts) in &running {
                transition(
                    tx,
                    *id,
                    goal,
                    TaskState::Queued,
                    ("interrupted", "the controller stopped during the attempt"),
                    (
                        EventKind::TaskInterrupted,
                        json!({ "attempt": attempts.saturating_add(1) }),
                    ),
                    now,
                )?;
            }
            Ok(running
                .into_iter()
                .map(|(id, _, _)| id)
                .collect::<Vec<TaskId>>())
        });
        if let Ok(ids) = &result {
            self.noted(ids, None);
        }
        result
    }

    /// One running task goes back to the queue without counting its attempt: its work was
    /// stopped from outside (a shutdown, a suspended company), not failed. Returns whether it
    /// was running.
    pub fn interrupt(&self, id: TaskId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let result = self.write(|tx| {
            let task = load_task(tx, id)?;
            if task.state != TaskState::Running {
                return Ok(false);
            }
            transition(
                tx,
                id,
                &task.goal,
                TaskState::Queued,
                ("interrupted", "the work was stopped before it finished"),
                (
                    EventKind::TaskInterrupted,
                    json!({ "attempt": task.attempts.saturating_add(1) }),
                ),
                now,
            )?;
            Ok(true)
        });
        if result.is_ok() {
            self.noted(&[id], None);
        }
        result
    }

    /// Ends a task for good. Cancelling a cancelled task does nothing; a succeeded one cannot
    /// be cancelled. A running attempt is closed as cancelled.
    pub fn cancel(&self, id: TaskId, reason: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self.write(|tx| {
            let task = load_task(tx, id)?;
            match task.state {
                TaskState::Cancelled => return Ok(()),
                TaskState::Succeeded => {
                    return Err(StoreError::State {
                        id,
                        state: task.state,
                        operation: "cancelled",
                    });
                }
                _ => {}
            }
            transition(
                tx,
                id,
                &task.goal,
                TaskState::Cancelled,
                ("cancelled", reason),
                (
                    EventKind::TaskCancelled,
                    json!({ "from": state_name(task.state), "reason": reason }),
                ),
                now,
            )?;
            // Delegated work ends with the task it was delegated from.
            let live_children: Vec<(TaskId, String)> = {
                let mut stmt = tx.prepare(
                    "WITH RECURSIVE tree (id) AS (
                         SELECT id FROM tasks WHERE parent = ?1
                         UNION ALL SELECT tasks.id FROM tasks JOIN tree ON tasks.parent = tree.id
                     )
                     SELECT id, state FROM tasks WHERE id IN tree
                     AND state IN ('queued', 'running', 'waitingApproval')",
                )?;
                let rows = stmt.query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (child, from) in live_children {
                transition(
                    tx,
                    child,
                    &task.goal,
                    TaskState::Cancelled,
                    ("cancelled", reason),
                    (
                        EventKind::TaskCancelled,
                        json!({ "from": from, "reason": reason, "parent": id }),
                    ),
                    now,
                )?;
            }
            Ok(())
        });
        if result.is_ok() {
            self.noted(&[id], None);
        }
        result
    }

    /// Marks a failed task Stalled (a dead letter) with the message.
    ///
    /// The message becomes the task's `last_error` (the planner's message quotes the last
    /// error). A task that is not failed may be stalled too (its running attempt is closed),
    /// except a succeeded or cancelled one; stalling a stalled task only updates the message.
    pub fn stall(&self, id: TaskId, message: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self.write(|tx| {
            let task = load_task(tx, id)?;
            if matches!(task.state, TaskState::Succeeded | TaskState::Cancelled) {
                return Err(StoreError::State {
                    id,
                    state: task.state,
                    operation: "stalled",
                });
            }
            tx.execute_cached(
                "UPDATE tasks SET state = 'stalled', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, message, time_text(now)],
            )?;
            close_attempt(tx, id, "stalled", message, now)?;
            append_event(
                tx,
                Some(id),
                Some(&task.goal),
                EventKind::TaskStalled,
                &json!({ "from": state_name(task.state), "message": message }),
                now,
            )?;
            Ok(())
        });
        if result.is_ok() {
            self.noted(&[id], None);
        }
        result
    }

    /// `proto retry GOAL`: a stalled or failed task of the goal becomes queued again with a
    /// fresh attempt budget. Returns the task requeued, if any.
    ///
    /// The newest such task is the one requeued. Nothing is requeued while the goal has a
    /// live task: the goal has one slot, and it is taken.
    pub fn retry(&self, goal: &str, now: DateTime<Utc>) -> Result<Option<TaskId>, StoreError> {
        let result = self.write(|tx| {
            let live: Option<TaskId> = tx
                .query_row_cached(
                    "SELECT id FROM tasks WHERE goal = ?1 AND parent IS NULL
                     AND state IN ('queued', 'running', 'waitingApproval') LIMIT 1",
                    [goal],
                    |row| row.get(0),
                )
                .optional()?;
            if live.is_some() {
                return Ok(None);
            }
            let dead: Option<(TaskId, String, u32)> = tx
                .query_row_cached(
                    "SELECT id, state, attempts FROM tasks
                     WHERE goal = ?1 AND parent IS NULL AND state IN ('stalled', 'failed')
                     ORDER BY id DESC LIMIT 1",
                    [goal],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((id, state, attempts)) = dead else {
                return Ok(None);
            };
            let now_text = time_text(now);
            tx.execute_cached(
                "UPDATE tasks SET state = 'queued', attempts = 0, not_before = ?2, updated_at = ?2
                 WHERE id = ?1",
                params![id, now_text],
            )?;
            append_event(
                tx,
                Some(id),
                Some(goal),
                EventKind::TaskRetried,
                &json!({ "from": state, "attempts": attempts }),
                now,
            )?;
            Ok(Some(id))
        });
        if let Ok(Some(id)) = &result {
            self.noted(&[*id], None);
        }
        result
    }

    /// Records a goal's check result.
    pub fn observe(
        &self,
        goal: &str,
        observation: &GoalObservation,
        detail: &str,
    ) -> Result<(), StoreError> {
        let result = self.write(|tx| {
            tx.execute_cached(
                "INSERT INTO observations (goal, passed, checked_at, key, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (goal) DO UPDATE SET passed = excluded.passed,
                     checked_at = excluded.checked_at, key = excluded.key, detail = excluded.detail",
                params![
                    goal,
                    observation.passed,
                    time_text(observation.checked_at),
                    observation.key,
                    detail
                ],
            )?;
            Ok(())
        });
        if result.is_ok() {
            self.noted(&[], Some(goal));
        }
        result
    }

    /// What the planner needs: goal observations, and the live tasks and the newest task of
    /// each goal key (as `TaskObservation`); delegated children are never the planner's.
    /// `model_available` is left false; the engine fills it.
    ///
    /// Tasks come oldest first, so where the planner keys by goal the newest task wins.
    pub fn observed(&self) -> Result<Observed, StoreError> {
        self.with_view(observed::View::observed)
    }

    /// What changed in [`Store::observed`] since `cursor` (`None`: everything), and the
    /// cursor to ask from next: only the goals whose check or tasks changed, unless another
    /// process changed the store meanwhile. What the incremental planner takes in.
    pub fn observed_since(
        &self,
        cursor: Option<ObservedCursor>,
    ) -> Result<(ObservedCursor, crate::plan::Changes), StoreError> {
        self.with_view(|view| view.changes_since(cursor))
    }

    /// The live top-level tasks (queued, running, waiting for approval), oldest first:
    /// what the loop schedules and wakes for, without reading finished history.
    pub fn open_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.with_view(|view| {
            view.tasks
                .values()
                .filter(|t| t.state.is_live())
                .cloned()
                .collect()
        })
    }

    /// What the loop sleeps on, from the planner's view without copying it: the products of
    /// queued tasks, and the earliest time after `now` a queued task comes due.
    pub fn queue_shape(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(std::collections::BTreeSet<String>, Option<DateTime<Utc>>), StoreError> {
        self.with_view(|view| view.queue_shape(now))
    }

    /// The newest top-level task of each of `keys` that has one: what a goal's status
    /// shows.
    pub fn newest_tasks<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<BTreeMap<String, Task>, StoreError> {
        self.with_view(|view| {
            keys.into_iter()
                .filter_map(|k| view.newest(k).map(|t| (k.to_string(), t.clone())))
                .collect()
        })
    }

    /// The top-level tasks of one goal key, oldest first (an indexed read, not a scan).
    pub fn key_tasks(&self, key: &str) -> Result<Vec<Task>, StoreError> {
        self.read(|tx| {
            query_tasks(
                tx,
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE key = ?1 AND parent IS NULL ORDER BY id"
                ),
                [key],
            )
        })
    }

    /// The journal entry of `step` of `task`, if one was recorded.
    pub fn action(&self, task: TaskId, step: u32) -> Result<Option<ActionRecord>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row_cached(
                    "SELECT id, task, step, tool, input, started_at, finished_at, outcome
                     FROM actions WHERE task = ?1 AND step = ?2",
                    params![task, step],
                    |row| {
                        Ok(ActionRecord {
                            id: row.get(0)?,
                            task: row.get(1)?,
                            step: row.get(2)?,
                            tool: row.get(3)?,
                            input: json_column(row, 4)?,
                            started_at: time_column(row, 5)?,
                            finished_at: optional_time_column(row, 6)?,
                            outcome: optional_json_column(row, 7)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    /// Journals a step as started (before its effect). Replaces an unfinished entry.
    ///
    /// A finished entry is replaced too: the caller has decided to do the step again. The
    /// new entry gets a new id, so a handle to the old one cannot finish it.
    pub fn action_started(
        &self,
        task: TaskId,
        step: u32,
        tool: &str,
        input: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.write(|tx| {
            ensure_task(tx, task)?;
            tx.execute_cached(
                "DELETE FROM actions WHERE task = ?1 AND step = ?2",
                params![task, step],
            )?;
            tx.execute_cached(
                "INSERT INTO actions (task, step, tool, input, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![task, step, tool, serde_json::to_string(input)?, time_text(now)],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Journals a step as finished, and in the same transaction queues its audit record.
    ///
    /// Finishing an entry that is already finished does nothing, so a repeated call cannot
    /// queue the audit record twice. `audit.id` is ignored; the store assigns it.
    pub fn action_finished(
        &self,
        action: i64,
        outcome: &serde_json::Value,
        audit: &AuditRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if finish_entry(tx, action, outcome, now)? {
                insert_audit(tx, audit)?;
            }
            Ok(())
        })
    }

    /// Forgets a task's journal (when a new attempt must start from scratch).
    pub fn clear_actions(&self, task: TaskId) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute_cached("DELETE FROM actions WHERE task = ?1", [task])?;
            Ok(())
        })
    }

    /// Records the company's status (JSON written by the engine, read by the CLI) in one
    /// transaction: `company` is the report without its goals, `goals` the goals whose
    /// status changed (name, position in the list, JSON), `moved` goals kept whose position
    /// in the list changed, and `removed` the goals no longer in it.
    pub fn save_status(
        &self,
        company: &str,
        goals: &[(String, usize, String)],
        moved: &[(String, usize)],
        removed: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let change: i64 = tx.query_row_cached(
                "INSERT INTO status (id, report, updated_at, goals_changed) VALUES (1, ?1, ?2, 1)
                 ON CONFLICT (id) DO UPDATE SET report = excluded.report,
                     updated_at = excluded.updated_at, goals_changed = goals_changed + 1
                 RETURNING goals_changed",
                params![company, time_text(now)],
                |row| row.get(0),
            )?;
            let mut drop = tx.prepare_cached("DELETE FROM goal_status WHERE goal = ?1")?;
            for name in removed {
                drop.execute([name])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT INTO goal_status (goal, position, body, changed) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (goal) DO UPDATE SET position = excluded.position,
                     body = excluded.body, changed = excluded.changed",
            )?;
            for (name, position, body) in goals {
                put.execute(params![
                    name,
                    i64::try_from(*position).unwrap_or(i64::MAX),
                    body,
                    change
                ])?;
            }
            let mut shift =
                tx.prepare_cached("UPDATE goal_status SET position = ?2 WHERE goal = ?1")?;
            for (name, position) in moved {
                shift.execute(params![name, i64::try_from(*position).unwrap_or(i64::MAX)])?;
            }
            Ok(())
        })
    }

    /// The last status report the engine wrote, if any: the company's part with its goals
    /// in their order, as one JSON document.
    pub fn status(&self) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            let company: Option<String> = tx
                .query_row_cached("SELECT report FROM status WHERE id = 1", [], |row| {
                    row.get(0)
                })
                .optional()?;
            let Some(company) = company else {
                return Ok(None);
            };
            let mut report: serde_json::Value = serde_json::from_str(&company)?;
            let mut stmt = tx.prepare("SELECT body FROM goal_status ORDER BY position, goal")?;
            let goals = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .map(|body| Ok(serde_json::from_str::<serde_json::Value>(&body?)?))
                .collect::<Result<Vec<_>, StoreError>>()?;
            if let Some(object) = report.as_object_mut()
                && !goals.is_empty()
            {
                object.insert("goals".into(), serde_json::Value::Array(goals));
            }
            Ok(Some(report.to_string()))
        })
    }

    /// Appends to the event log.
    pub fn event(
        &self,
        task: Option<TaskId>,
        goal: Option<&str>,
        kind: EventKind,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.write(|tx| append_event(tx, task, goal, kind, data, now))
    }

    /// Events after `after` (an event id), oldest first, at most `limit`.
    /// Appends an agent's activity to the event log.
    pub fn activity(
        &self,
        task: TaskId,
        goal: &str,
        activity: &activity::Activity,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let data = serde_json::to_value(activity)?;
        self.write(|tx| append_event(tx, Some(task), Some(goal), activity.kind(), &data, now))
    }

    /// The newest `limit` events of a goal, oldest first.
    pub fn recent_events(&self, goal: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT id, time, task, goal, kind, data FROM (
                     SELECT * FROM events WHERE goal = ?1 ORDER BY id DESC LIMIT ?2
                 ) ORDER BY id",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![goal, limit], event_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT id, time, task, goal, kind, data FROM events
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![after, limit], event_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Queues an audit record not tied to a journaled step (a check run, a commit).
    /// `record.id` is ignored; the new id is returned.
    pub fn audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        self.write(|tx| insert_audit(tx, record))
    }

    /// Audit records not yet written back, oldest first.
    pub fn pending_audit(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE \"commit\" IS NULL ORDER BY id"
            ))?;
            let rows = stmt.query_map([], audit_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The input and outcome of the newest audit record of `action` on `task`, written back
    /// or not (retention may have pruned it: then `None`). Selection reads the model an
    /// earlier attempt worked with here, as the journal is cleared between attempts.
    pub fn last_audit(
        &self,
        task: TaskId,
        action: &str,
    ) -> Result<Option<(serde_json::Value, serde_json::Value)>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row_cached(
                    "SELECT input, outcome FROM audit WHERE task = ?1 AND action = ?2
                     ORDER BY id DESC LIMIT 1",
                    params![task, action],
                    |row| Ok((json_column(row, 0)?, json_column(row, 1)?)),
                )
                .optional()?)
        })
    }

    /// Marks audit records as written back in `commit`. A record keeps the first commit it
    /// was written in.
    pub fn audit_written(&self, ids: &[i64], commit: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut stmt = tx
                .prepare("UPDATE audit SET \"commit\" = ?2 WHERE id = ?1 AND \"commit\" IS NULL")?;
            for id in ids {
                stmt.execute(params![id, commit])?;
            }
            Ok(())
        })
    }

    pub fn revisions(&self) -> Result<Revisions, StoreError> {
        self.read(|tx| {
            let last: Option<(String, String)> = tx
                .query_row_cached(
                    "SELECT revision, errors FROM revisions ORDER BY id DESC LIMIT 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let last_applied: Option<String> = tx
                .query_row_cached(
                    "SELECT revision FROM revisions WHERE errors = '[]' ORDER BY id DESC LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()?;
            let (last_attempted, errors) = match last {
                Some((revision, errors)) => (Some(revision), serde_json::from_str(&errors)?),
                None => (None, Vec::new()),
            };
            Ok(Revisions {
                last_attempted,
                last_applied,
                errors,
            })
        })
    }

    /// Records an attempted revision; `errors` empty means it was applied.
    pub fn record_revision(
        &self,
        revision: &str,
        errors: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            // Re-inserting moves the revision to the newest id: it is the last attempted.
            tx.execute_cached("DELETE FROM revisions WHERE revision = ?1", [revision])?;
            tx.execute_cached(
                "INSERT INTO revisions (revision, errors, attempted_at) VALUES (?1, ?2, ?3)",
                params![revision, serde_json::to_string(errors)?, time_text(now)],
            )?;
            Ok(())
        })
    }

    /// Records spend against a task (tokens and dollars; zero for playbooks).
    #[allow(clippy::too_many_arguments)] // the signature is the engine's interface
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
        let spent = spending::Spent { task, usd };
        self.write_and(
            |tx| {
                ensure_task(tx, task)?;
                tx.execute_cached(
                    "INSERT INTO spend (task, agent, model, input_tokens, output_tokens, usd, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        task,
                        agent,
                        model,
                        i64::try_from(input_tokens).unwrap_or(i64::MAX),
                        i64::try_from(output_tokens).unwrap_or(i64::MAX),
                        usd,
                        time_text(now)
                    ],
                )?;
                Ok(())
            },
            |conn, ()| self.note_spent(conn, &spent, now),
        )
    }

    /// Dollars spent on a goal's tasks.
    pub fn spent_on_goal(&self, goal: &str) -> Result<f64, StoreError> {
        self.read(|tx| goal_usd(tx, goal))
    }

    /// What the budgets count for a model call of `task` at `now`: the tokens of the current
    /// attempt of its root task (delegated children spend from their parent's budget), the
    /// dollars of its goal, and the company's dollars of the UTC day.
    pub fn spent(&self, task: TaskId, now: DateTime<Utc>) -> Result<Spent, StoreError> {
        self.read(|tx| {
            let (root, goal): (TaskId, String) = tx.query_row_cached(
                "WITH RECURSIVE up (id, parent) AS (
                     SELECT id, parent FROM tasks WHERE id = ?1
                     UNION ALL SELECT tasks.id, tasks.parent FROM tasks JOIN up ON tasks.id = up.parent
                 )
                 SELECT tasks.id, tasks.goal FROM up JOIN tasks ON tasks.id = up.id
                 WHERE up.parent IS NULL",
                [task],
                |row| Ok((row.get(0)?, row.get(1)?)),
            ).optional()?.ok_or(StoreError::NoTask(task))?;
            // The attempt began with the first start after the last attempt that ended:
            // an interruption or a wait for approval continues the same attempt.
            let started: Option<String> = tx.query_row_cached(
                "SELECT MIN(started_at) FROM attempts WHERE task = ?1 AND id > COALESCE(
                     (SELECT MAX(id) FROM attempts WHERE task = ?1
                      AND outcome NOT IN ('running', 'interrupted', 'waitingApproval')), 0)",
                [root],
                |row| row.get(0),
            )?;
            let attempt_tokens: i64 = tx.query_row_cached(
                "WITH RECURSIVE tree (id) AS (
                     SELECT ?1 UNION ALL SELECT tasks.id FROM tasks JOIN tree ON tasks.parent = tree.id
                 )
                 SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM spend
                 WHERE task IN tree AND time >= ?2",
                params![root, started.unwrap_or_default()],
                |row| row.get(0),
            )?;
            Ok(Spent {
                attempt_tokens: u64::try_from(attempt_tokens).unwrap_or(0),
                goal_usd: goal_usd(tx, &goal)?,
                day_usd: day_usd(tx, now)?,
            })
        })
    }

    /// Tokens and dollars recorded against each task (its own calls; children have theirs).
    pub fn spend_by_task(&self) -> Result<BTreeMap<TaskId, TaskSpend>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT task, SUM(input_tokens), SUM(output_tokens), SUM(usd), COUNT(*)
                 FROM spend GROUP BY task",
            )?;
            let rows = stmt.query_map([], task_spend_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// A task's spend from a row of `task, SUM(input_tokens), SUM(output_tokens), SUM(usd),
/// COUNT(*)`.
fn task_spend_row(row: &Row<'_>) -> rusqlite::Result<(TaskId, TaskSpend)> {
    Ok((
        row.get::<_, TaskId>(0)?,
        TaskSpend {
            input_tokens: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            output_tokens: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            usd: row.get(3)?,
            calls: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        },
    ))
}

fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        time: time_column(row, 1)?,
        task: row.get(2)?,
        goal: row.get(3)?,
        kind: kind_column(row, 4)?,
        data: json_column(row, 5)?,
    })
}

/// An event's kind; a name this build does not know is a conversion error, as any other
/// malformed column is (a newer Proto's store is refused before it is read).
fn kind_column(row: &Row<'_>, index: usize) -> rusqlite::Result<EventKind> {
    let name: String = row.get(index)?;
    EventKind::parse(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown event kind {name:?}").into(),
        )
    })
}

fn goal_usd(conn: &Connection, goal: &str) -> Result<f64, StoreError> {
    Ok(conn.query_row_cached(
        "SELECT COALESCE(SUM(spend.usd), 0.0) FROM spend
         JOIN tasks ON tasks.id = spend.task WHERE tasks.goal = ?1",
        [goal],
        |row| row.get(0),
    )?)
}

/// Dollars spent on the UTC day of `now`.
fn day_usd(conn: &Connection, now: DateTime<Utc>) -> Result<f64, StoreError> {
    let start = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    Ok(conn.query_row_cached(
        "SELECT COALESCE(SUM(usd), 0.0) FROM spend WHERE time >= ?1 AND time < ?2",
        params![
            time_text(start),
            time_text(start + chrono::Duration::days(1))
        ],
        |row| row.get(0),
    )?)
}

const TASK_COLUMNS: &str = "id, key, goal, product, owner, priority, state, attempts, \
     max_attempts, not_before, created_at, updated_at, revision, computer, last_error, parent, \
     delivered, failure, outage";

fn task_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: row.get(0)?,
        key: row.get(1)?,
        goal: row.get(2)?,
        product: row.get(3)?,
        owner: row.get(4)?,
        priority: parse_column(row, 5, priority_from_name)?,
        state: parse_column(row, 6, state_from_name)?,
        attempts: row.get(7)?,
        max_attempts: row.get(8)?,
        not_before: time_column(row, 9)?,
        created_at: time_column(row, 10)?,
        updated_at: time_column(row, 11)?,
        revision: row.get(12)?,
        computer: row.get(13)?,
        last_error: row.get(14)?,
        parent: row.get(15)?,
        delivered: row.get(16)?,
        failure: row
            .get::<_, Option<String>>(17)?
            .map(|name| {
                Failure::from_name(&name).ok_or_else(|| conversion_error(17, UnknownName(name)))
            })
            .transpose()?,
        outage: row.get(18)?,
    })
}

fn query_tasks(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, task_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn load_task(conn: &Connection, id: TaskId) -> Result<Task, StoreError> {
    conn.query_row_cached(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
        [id],
        task_row,
    )
    .optional()?
    .ok_or(StoreError::NoTask(id))
}

/// Finishes the journal entry `action` with `outcome`; false when it was already finished
/// (a repeated call then writes nothing else either).
fn finish_entry(
    conn: &Connection,
    action: i64,
    outcome: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let finished: Option<Option<String>> = conn
        .query_row_cached(
            "SELECT finished_at FROM actions WHERE id = ?1",
            [action],
            |row| row.get(0),
        )
        .optional()?;
    match finished {
        None => Err(StoreError::NoAction(action)),
        Some(Some(_)) => Ok(false),
        Some(None) => {
            conn.execute_cached(
                "UPDATE actions SET finished_at = ?2, outcome = ?3 WHERE id = ?1",
                params![action, time_text(now), serde_json::to_string(outcome)?],
            )?;
            Ok(true)
        }
    }
}

fn ensure_task(conn: &Connection, id: TaskId) -> Result<(), StoreError> {
    let found: Option<i64> = conn
        .query_row_cached("SELECT id FROM tasks WHERE id = ?1", [id], |row| row.get(0))
        .optional()?;
    found.map(|_| ()).ok_or(StoreError::NoTask(id))
}

/// Moves a task to `state`, closes its open attempt as `attempt` (outcome, detail) and logs
/// `event` (kind, data): the whole of every transition that changes nothing but the state.
fn transition(
    conn: &Connection,
    id: TaskId,
    goal: &str,
    state: TaskState,
    attempt: (&str, &str),
    event: (EventKind, serde_json::Value),
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.execute_cached(
        "UPDATE tasks SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, state_name(state), time_text(now)],
    )?;
    close_attempt(conn, id, attempt.0, attempt.1, now)?;
    append_event(conn, Some(id), Some(goal), event.0, &event.1, now)?;
    Ok(())
}

/// Closes the task's open attempt, if it has one (a queued or waiting task has none).
fn close_attempt(
    conn: &Connection,
    task: TaskId,
    outcome: &str,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.execute_cached(
        "UPDATE attempts SET finished_at = ?2, outcome = ?3, detail = ?4
         WHERE task = ?1 AND finished_at IS NULL",
        params![task, time_text(now), outcome, detail],
    )?;
    Ok(())
}

fn append_event(
    conn: &Connection,
    task: Option<TaskId>,
    goal: Option<&str>,
    kind: EventKind,
    data: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    conn.execute_cached(
        "INSERT INTO events (time, task, goal, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            time_text(now),
            task,
            goal,
            kind.as_str(),
            serde_json::to_string(data)?
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

fn insert_audit(conn: &Connection, record: &AuditRecord) -> Result<i64, StoreError> {
    conn.execute_cached(
        "INSERT INTO audit (time, agent, goal, task, action, input, outcome, diff)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            time_text(record.time),
            record.agent,
            record.goal,
            record.task,
            record.action,
            serde_json::to_string(&record.input)?,
            serde_json::to_string(&record.outcome)?,
            record.diff,
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The serde name of a state, as stored.
pub(crate) fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Queued => "queued",
        TaskState::Running => "running",
        TaskState::WaitingApproval => "waitingApproval",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Stalled => "stalled",
        TaskState::Cancelled => "cancelled",
    }
}

fn state_from_name(name: &str) -> Option<TaskState> {
    TaskState::ALL.into_iter().find(|s| state_name(*s) == name)
}

fn priority_from_name(name: &str) -> Option<Priority> {
    [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ]
    .into_iter()
    .find(|p| p.as_str() == name)
}

/// RFC 3339 in UTC with nine fractional digits: exact, and fixed width so that comparing
/// the text compares the times. Fixed width holds for years 0 to 9999 only; times beyond
/// are clamped (they mean "never" or "always", and stay so).
fn time_text(time: DateTime<Utc>) -> String {
    let first = DateTime::<Utc>::from_timestamp(-62_167_219_200, 0); // 0000-01-01T00:00:00Z
    let last = DateTime::<Utc>::from_timestamp(253_402_300_799, 999_999_999); // 9999-12-31T23:59:59.999999999Z
    let clamped = match (first, last) {
        (Some(first), _) if time < first => first,
        (_, Some(last)) if time > last => last,
        _ => time,
    };
    clamped.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn conversion_error(
    idx: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(error))
}

fn parse_time(idx: usize, text: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| conversion_error(idx, e))
}

fn time_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    parse_time(idx, &row.get::<_, String>(idx)?)
}

fn optional_time_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    row.get::<_, Option<String>>(idx)?
        .map(|t| parse_time(idx, &t))
        .transpose()
}

fn json_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(&row.get::<_, String>(idx)?).map_err(|e| conversion_error(idx, e))
}

fn optional_json_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    row.get::<_, Option<String>>(idx)?
        .map(|t| serde_json::from_str(&t).map_err(|e| conversion_error(idx, e)))
        .transpose()
}

#[derive(Debug, Error)]
#[error("unknown name {0:?}")]
struct UnknownName(String);

fn parse_column<T>(row: &Row<'_>, idx: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| conversion_error(idx, UnknownName(text)))
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

/// The columns every audit read selects, in this order.
pub(crate) const AUDIT_COLUMNS: &str = "id, time, agent, goal, task, action, input, outcome, diff";

/// One audit row, as selected with [`AUDIT_COLUMNS`].
pub(crate) fn audit_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get(0)?,
        time: time_column(row, 1)?,
        agent: row.get(2)?,
        goal: row.get(3)?,
        task: row.get(4)?,
        action: row.get(5)?,
        input: json_column(row, 6)?,
        outcome: json_column(row, 7)?,
        diff: row.get(8)?,
    })
}
