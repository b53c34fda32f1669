//! Retention: what keeps the store from growing with every step the company ever took.
//!
//! The event log (task transitions, model turns, tool calls) is for people watching (`proto
//! logs`, `describe`); the act() journal is for resuming a task's conversation; the audit
//! rows wait for writeback. Once a task is over, its journal is never read again, and once
//! an audit record is written back, git holds it for good. So the store keeps, per
//! [`Retention`], the events of the last N days and at most the newest N events of each goal
//! (an event goes when either limit says so), the same of finished tasks' journals, and the
//! written-back audit rows of the last N days. Never pruned: anything of a task that is
//! queued, running or waiting for approval, or of any task delegated under one (a resumed
//! conversation replays its journal; `describe` shows its events); the tasks, attempts and
//! spend themselves (budgets sum the spend, the planner reads the tasks).
//!
//! The event log stays append-only for everything else: its triggers refuse an UPDATE
//! always and a DELETE unless the `pruning` guard row exists, which only [`Store::prune`]
//! inserts and deletes again inside its own transactions (so no other connection ever sees
//! it, and a crash rolls it back with the rest).
//!
//! Deletion goes in batches of short transactions, so a first pruning of a large store does
//! not hold the workers' journal writes behind it; freed pages are returned to the file
//! system with `PRAGMA incremental_vacuum` where the store was created with incremental
//! auto-vacuum, and reused by SQLite otherwise. There is never a VACUUM (which rewrites the
//! whole file and needs as much free disk again).
//!
//! ```no_run
//! # use proto::store::{Retention, Store};
//! # fn f(store: &Store) -> Result<(), proto::store::StoreError> {
//! let pruned = store.prune(&Retention::default(), chrono::Utc::now())?;
//! println!("{} events, {} journal entries removed", pruned.events, pruned.actions);
//! # Ok(()) }
//! ```

use super::Cached as _;
use chrono::{DateTime, Duration, Utc};
use rusqlite::params;

use super::{Store, StoreError, time_text};

/// How much the store keeps. `None` lifts a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Events and finished tasks' journal entries older than this go, and so do audit rows
    /// written back longer ago.
    pub max_age: Option<Duration>,
    /// Each goal keeps at most this many of its newest events (and as many journal
    /// entries of its finished tasks).
    pub per_goal: Option<u32>,
}

impl Default for Retention {
    /// 30 days, and 1,000 events per goal: weeks of history to look back on, and a goal
    /// worked around the clock cannot fill the disk.
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::days(30)),
            per_goal: Some(1_000),
        }
    }
}

/// How often [`Store::prune_if_due`] prunes.
pub const PRUNE_EVERY: Duration = Duration::hours(1);

/// What one pruning removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub actions: u64,
    pub audit: u64,
}

/// Rows deleted per transaction: small enough that a worker's journal write waits a few
/// milliseconds at most.
const BATCH: usize = 2_000;

/// Tasks whose events and journal stay whatever their age: the live ones and everything
/// delegated under them.
const PROTECTED: &str = "WITH RECURSIVE protected (id) AS (
         SELECT id FROM tasks WHERE state IN ('queued', 'running', 'waitingApproval')
         UNION SELECT tasks.id FROM tasks JOIN protected ON tasks.parent = protected.id
     )";

impl Store {
    /// Prunes per `policy` as of `now`; see the module docs.
    pub fn prune(&self, policy: &Retention, now: DateTime<Utc>) -> Result<Pruned, StoreError> {
        let cutoff = policy.max_age.map(|age| time_text(now - age));
        let cap = policy.per_goal.map_or(i64::MAX, i64::from);
        // Chosen in one snapshot, deleted in batches; each batch checks protection again,
        // so a task queued again in between (`proto retry`) keeps what it has.
        let (events, actions, audit) = self.read(|tx| {
            let ids = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<Vec<i64>, StoreError> {
                let mut stmt = tx.prepare(sql)?;
                let rows = stmt.query_map(params, |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            };
            Ok((
                ids(&format!(
                    "{PROTECTED}
                     SELECT id FROM events
                     WHERE (task IS NULL OR task NOT IN protected)
                       AND (time < ?1 OR id IN (
                           SELECT id FROM (
                               SELECT id, ROW_NUMBER() OVER (PARTITION BY goal ORDER BY id DESC) AS n
                               FROM events WHERE goal IS NOT NULL
                           ) WHERE n > ?2))
                     ORDER BY id"
                ), params![cutoff, cap])?,
                ids(&format!(
                    "{PROTECTED}
                     SELECT actions.id FROM actions
                     WHERE actions.task NOT IN protected
                       AND (actions.started_at < ?1 OR actions.id IN (
                           SELECT id FROM (
                               SELECT actions.id, ROW_NUMBER() OVER (
                                   PARTITION BY tasks.goal ORDER BY actions.id DESC) AS n
                               FROM actions JOIN tasks ON tasks.id = actions.task
                           ) WHERE n > ?2))
                     ORDER BY actions.id"
                ), params![cutoff, cap])?,
                ids(
                    "SELECT id FROM audit WHERE \"commit\" IS NOT NULL AND time < ?1 ORDER BY id",
                    params![cutoff],
                )?,
            ))
        })?;
        let pruned = Pruned {
            events: self.delete_in_batches(
                &events,
                &format!(
                    "{PROTECTED}
                     DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))
                     AND (task IS NULL OR task NOT IN protected)"
                ),
            )?,
            actions: self.delete_in_batches(
                &actions,
                &format!(
                    "{PROTECTED}
                     DELETE FROM actions WHERE id IN (SELECT value FROM json_each(?1))
                     AND task NOT IN protected"
                ),
            )?,
            audit: self.delete_in_batches(
                &audit,
                "DELETE FROM audit WHERE id IN (SELECT value FROM json_each(?1))
                 AND \"commit\" IS NOT NULL",
            )?,
        };
        if pruned != Pruned::default() {
            self.give_back_free_pages()?;
        }
        Ok(pruned)
    }

    /// [`Store::prune`], when this handle has not pruned in the last [`PRUNE_EVERY`]: what
    /// the engine calls on every pass. `None` when it was not due.
    pub fn prune_if_due(
        &self,
        policy: &Retention,
        now: DateTime<Utc>,
    ) -> Result<Option<Pruned>, StoreError> {
        {
            let mut last = self
                .pruned_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now < at + PRUNE_EVERY) {
                return Ok(None);
            }
            // Set before pruning: a pruning that fails is tried again in an hour, not on
            // every pass.
            *last = Some(now);
        }
        let pruned = self.prune(policy, now)?;
        if pruned != Pruned::default() {
            tracing::info!(
                events = pruned.events,
                actions = pruned.actions,
                audit = pruned.audit,
                "retention: pruned"
            );
        }
        Ok(Some(pruned))
    }

    /// Deletes `ids` with `sql` (which binds the batch as a JSON array), `BATCH` rows per
    /// transaction, with the guard that lets a DELETE through the event log's trigger.
    fn delete_in_batches(&self, ids: &[i64], sql: &str) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for batch in ids.chunks(BATCH) {
            let batch = serde_json::to_string(batch)?;
            deleted += self.write(|tx| {
                tx.execute_cached("INSERT INTO pruning (id) VALUES (1)", [])?;
                let n = tx.execute_cached(sql, [&batch])?;
                tx.execute_cached("DELETE FROM pruning", [])?;
                Ok(u64::try_from(n).unwrap_or(0))
            })?;
        }
        Ok(deleted)
    }

    /// Returns the pages pruning freed to the file system, where the store allows it
    /// without rewriting the file (incremental auto-vacuum, set when it was created).
    fn give_back_free_pages(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
        if mode == 2 {
            // The pragma frees one page per step: run it to the end.
            let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        Ok(())
    }
}
