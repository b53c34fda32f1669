//! The schema, as an ordered list of SQL scripts. Script `n` (counting from 1) takes a
//! database from `PRAGMA user_version = n - 1` to `n`; each runs in its own transaction
//! together with the version bump, so a crash mid-migration leaves the previous version
//! intact. Scripts are append-only once released: a change to the schema is a new script.
//!
//! Conventions: times are RFC 3339 text in UTC with nine fractional digits (fixed width, so
//! text order is time order); `Priority` and `TaskState` are their serde names; JSON values
//! are text. Tables are STRICT so a wrong type is an error, not a silent conversion.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The migrations this build knows, oldest first.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11];

/// The schema version this build writes.
pub(super) fn known(migrations: &[&str]) -> i64 {
    i64::try_from(migrations.len()).unwrap_or(i64::MAX)
}

/// The database's schema version.
pub(super) fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the database up to the last of `migrations`, refusing one that is newer.
pub(super) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let known = known(migrations);
    loop {
        // The version is read inside the write transaction, so two processes opening the
        // same new file cannot both apply a script.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = version(&tx)?;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        if found == known {
            return Ok(());
        }
        let script = usize::try_from(found)
            .ok()
            .and_then(|n| migrations.get(n))
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(0, found))?;
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}

const V1: &str = r#"
CREATE TABLE tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT NOT NULL,
    goal         TEXT NOT NULL,
    product      TEXT NOT NULL,
    owner        TEXT NOT NULL,
    priority     TEXT NOT NULL CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'waitingApproval',
                                                'succeeded', 'failed', 'stalled', 'cancelled')),
    attempts     INTEGER NOT NULL CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 0),
    not_before   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    revision     TEXT NOT NULL,
    computer     TEXT,
    last_error   TEXT
) STRICT;
CREATE INDEX tasks_key ON tasks (key, state);
CREATE INDEX tasks_goal ON tasks (goal, state);
CREATE INDEX tasks_queued ON tasks (not_before) WHERE state = 'queued';

-- One row per start; a task's attempt numbers repeat after an interruption (which does not
-- count) and after `proto retry` (which resets the count).
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    task        INTEGER NOT NULL REFERENCES tasks (id),
    number      INTEGER NOT NULL,
    computer    TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted',
                                   'cancelled', 'stalled')),
    detail      TEXT
) STRICT;
CREATE INDEX attempts_task ON attempts (task);
CREATE UNIQUE INDEX attempts_open ON attempts (task) WHERE finished_at IS NULL;

-- The act() journal. AUTOINCREMENT so a replaced entry's id is never handed out again: a
-- stale id from before a restart cannot finish the entry that replaced it.
CREATE TABLE actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task        INTEGER NOT NULL REFERENCES tasks (id),
    step        INTEGER NOT NULL CHECK (step >= 0),
    tool        TEXT NOT NULL,
    input       TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    UNIQUE (task, step)
) STRICT;

-- No foreign key on task: the log records what it is told.
CREATE TABLE events (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    task INTEGER,
    goal TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
) STRICT;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;

CREATE TABLE observations (
    goal       TEXT PRIMARY KEY,
    passed     INTEGER NOT NULL CHECK (passed IN (0, 1)),
    checked_at TEXT NOT NULL,
    key        TEXT NOT NULL,
    detail     TEXT NOT NULL
) STRICT;

-- One row per revision, re-inserted on each attempt so the highest id is the last attempt.
CREATE TABLE revisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    revision     TEXT NOT NULL UNIQUE,
    errors       TEXT NOT NULL,
    attempted_at TEXT NOT NULL
) STRICT;

CREATE TABLE computers (
    name      TEXT PRIMARY KEY,
    healthy   INTEGER NOT NULL CHECK (healthy IN (0, 1)),
    last_seen TEXT NOT NULL
) STRICT;

CREATE TABLE spend (
    id            INTEGER PRIMARY KEY,
    task          INTEGER NOT NULL REFERENCES tasks (id),
    agent         TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    usd           REAL NOT NULL,
    time          TEXT NOT NULL
) STRICT;
CREATE INDEX spend_task ON spend (task);

-- Writeback skips records already in the file by id, so ids must never be reused:
-- AUTOINCREMENT. "commit" is null until the record is written back.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    agent    TEXT NOT NULL,
    goal     TEXT,
    task     INTEGER,
    action   TEXT NOT NULL,
    input    TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    diff     TEXT,
    "commit" TEXT
) STRICT;
CREATE INDEX audit_pending ON audit (id) WHERE "commit" IS NULL;
"#;

/// Delegated work gets a `parent` (it was told apart by a `/` in its key before), attempts
/// may end waiting for a person's approval or over budget, spend is summed by time for daily
/// budgets, and a goal's events are found without a scan.
const V2: &str = r#"
ALTER TABLE tasks ADD COLUMN parent INTEGER REFERENCES tasks (id);
-- Children were keyed `<parent key>/<step>:<agent>`: the parent is the task whose key is
-- everything before the last `/`.
-- (Compared with substr, not LIKE: keys may hold `_` and `%`; the parent came first.)
UPDATE tasks SET parent = (
    SELECT MAX(p.id) FROM tasks p
    WHERE p.id < tasks.id
      AND substr(tasks.key, 1, length(p.key) + 1) = p.key || '/'
      AND instr(substr(tasks.key, length(p.key) + 2), '/') = 0
) WHERE instr(key, '/') > 0;
CREATE INDEX tasks_parent ON tasks (parent) WHERE parent IS NOT NULL;

CREATE TABLE attempts_v2 (
    id          INTEGER PRIMARY KEY,
    task        INTEGER NOT NULL REFERENCES tasks (id),
    number      INTEGER NOT NULL,
    computer    TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted',
                                   'cancelled', 'stalled', 'waitingApproval', 'overBudget')),
    detail      TEXT
) STRICT;
INSERT INTO attempts_v2 SELECT id, task, number, computer, started_at, finished_at, outcome, detail
    FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v2 RENAME TO attempts;
CREATE INDEX attempts_task ON attempts (task);
CREATE UNIQUE INDEX attempts_open ON attempts (task) WHERE finished_at IS NULL;

CREATE INDEX spend_time ON spend (time);
CREATE INDEX events_goal ON events (goal, id);
"#;

/// Delivery: a succeeded task records the commit its work reached the product's branch as,
/// a failed attempt whether the work or its delivery failed, and the company's status lives
/// in the store (one row) instead of a file beside it that could disagree.
const V3: &str = r#"
ALTER TABLE tasks ADD COLUMN delivered TEXT;
ALTER TABLE tasks ADD COLUMN failure TEXT CHECK (failure IN ('work', 'delivery'));
CREATE TABLE status (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    report     TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
"#;

/// Retention (see `retention.rs`): the event log's DELETE trigger lets rows go while the
/// `pruning` guard row exists, which only the store's pruning inserts, and deletes again,
/// inside its own transactions; an UPDATE is still refused always. No index is added for
/// it: pruning scans once an hour, while an index would cost every append.
const V4: &str = r#"
CREATE TABLE pruning (
    id INTEGER PRIMARY KEY CHECK (id = 1)
) STRICT;
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM pruning)
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: only retention removes events'); END;
"#;

/// Goal status one row per goal: a finished task rewrites its goal's row, not the whole
/// company's report. The `status` row keeps the company's part (with no goals).
const V5: &str = r#"
CREATE TABLE goal_status (
    goal       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    body       TEXT NOT NULL
) STRICT;
"#;

/// Provider outages: a task whose attempt stopped because no model provider could answer
/// keeps the cause here while it waits (the attempt is not counted, and `last_error` keeps
/// the last real failure, whose lesson the next attempt is told).
const V6: &str = r#"
ALTER TABLE tasks ADD COLUMN outage TEXT;
"#;

/// The kill switch (`proto stop` / `proto resume`, see `control.rs`): one row, its columns
/// NULL while no stop holds.
const V7: &str = r#"
CREATE TABLE control (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    stopped_at TEXT,
    stopped_by TEXT,
    reason     TEXT
) STRICT;
"#;

/// Approval requests (see `approvals.rs`): one per gated step of a task's attempt, with the
/// commit that published it to the company repository and the person's answer.
const V8: &str = r#"
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    task         INTEGER NOT NULL REFERENCES tasks (id),
    attempt      INTEGER NOT NULL,
    step         INTEGER NOT NULL,
    goal         TEXT NOT NULL,
    agent        TEXT NOT NULL,
    action       TEXT NOT NULL,
    input        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    diff         TEXT,
    reviewed     TEXT,
    requested_at TEXT NOT NULL,
    expires_at   TEXT,
    published    TEXT,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied')),
    decided_by   TEXT,
    decided_at   TEXT,
    answer       TEXT,
    UNIQUE (task, attempt, step)
) STRICT;
CREATE INDEX approvals_state ON approvals (state);
"#;

/// The registry of computers (see `computers.rs`): kind, the reason a computer is unhealthy,
/// missed beats, load and capacity, the circuit breaker; `last_seen` is the last probe that
/// answered, so a computer never answering has none. Its rows are rewritten by the running
/// controller, so the old ones are not carried over.
const V9: &str = r#"
DROP TABLE computers;
CREATE TABLE computers (
    name       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('local', 'ssh', 'kubernetes')),
    healthy    INTEGER NOT NULL CHECK (healthy IN (0, 1)),
    reason     TEXT,
    missed     INTEGER NOT NULL,
    running    INTEGER NOT NULL,
    capacity   INTEGER NOT NULL,
    breaker    TEXT NOT NULL CHECK (breaker IN ('closed', 'open', 'half-open')),
    failures   INTEGER NOT NULL,
    open_until TEXT,
    last_seen  TEXT,
    checked_at TEXT
) STRICT;
"#;

/// What the company learns (see `knowledge.rs`): every capture of a lesson, kept until the
/// record commit writes it into its entry (`commit` set then), and the improvement goals
/// the miner proposed, one row per proposal branch.
const V10: &str = r#"
CREATE TABLE knowledge (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    task     INTEGER,
    goal     TEXT,
    kind     TEXT NOT NULL,
    slug     TEXT NOT NULL,
    body     TEXT NOT NULL,
    "commit" TEXT
) STRICT;
CREATE INDEX knowledge_pending ON knowledge ("commit");
CREATE TABLE proposals (
    slug      TEXT PRIMARY KEY,
    goal      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    evidence  TEXT NOT NULL,
    branch    TEXT NOT NULL,
    "commit"  TEXT,
    proposed  TEXT NOT NULL
) STRICT;
"#;

/// Which goal statuses changed since a reader last looked: every `save_status` takes the
/// next number of `status.goals_changed` and marks the rows it writes with it, so a list of
/// every goal is rebuilt from the rows marked after the one it was built from, not from all
/// of them. A counter of its own rather than the largest mark: marks leave with the rows of
/// removed goals, and a number must never be handed out twice.
const V11: &str = r#"
ALTER TABLE status ADD COLUMN goals_changed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE goal_status ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX goal_status_changed ON goal_status (changed);
"#;
