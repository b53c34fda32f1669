//! A whole step in one write transaction: its journal entry, what the model call cost, its
//! audit record and the activity line `proto logs` shows. Before, a model turn took four
//! transactions (started, spend, finished with the audit, activity) and a tool call three;
//! each is a WAL append and a lock hand-off between the workers, and what a company pays in
//! store time grew with every step of every agent.
//!
//! Folding them together loses nothing a restart relies on. A journal entry written whole
//! after its effect never says "started": only [`Store::action_started`] does, and `act()`
//! opens one before an effect that reaches past the workspace (commands, git, delivery, MCP,
//! delegation), so the journal still shows what was in flight at a kill -9. A model turn
//! interrupted mid-call has no entry and is asked again, as an unfinished entry was before;
//! a read, a search or a file change of an interrupted session is made again in the fresh
//! clone the resumed attempt works in, where its effect cannot already be.
//!
//! ```no_run
//! # use proto::store::{Entry, StepRecord, Store};
//! # fn f(store: &Store, task: i64) -> Result<(), proto::store::StoreError> {
//! let now = chrono::Utc::now();
//! let input = serde_json::json!({ "file_path": "README.md" });
//! let outcome = serde_json::json!({ "content": "# Shop", "isError": false });
//! store.record(&StepRecord {
//!     task,
//!     goal: "readme",
//!     entry: Entry::Whole { step: 1, tool: "Read", input: &input, outcome: &outcome, started_at: now },
//!     cost: None,
//!     audit: None,
//!     activity: None,
//! }, now)?;
//! # Ok(()) }
//! ```

use super::Cached as _;
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde_json::Value;

use super::activity::Activity;
use super::{
    AuditRecord, Store, StoreError, TaskId, append_event, ensure_task, finish_entry, insert_audit,
    time_text,
};

/// What one model call cost, recorded with its turn so a budget never sees the turn without
/// its spend or the spend without its turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost<'a> {
    pub agent: &'a str,
    pub model: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub usd: f64,
}

/// How [`Store::record`] writes the step's journal entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry<'a> {
    /// No entry: the call never ran (denied or refused), or it stopped the task and runs
    /// again when the task does.
    None,
    /// The whole entry at once, after the effect: a model turn, a call whose effect stays in
    /// the workspace or is nothing at all, a hook's answer. Replaces any entry of the step,
    /// as [`Store::action_started`] does.
    Whole {
        step: u32,
        tool: &'a str,
        input: &'a Value,
        outcome: &'a Value,
        /// When the step began (the entry's `started_at`); it finishes at `now`.
        started_at: DateTime<Utc>,
    },
    /// Finishes the entry [`Store::action_started`] opened before the effect. An entry
    /// already finished is left alone and nothing else of the record is written, so a
    /// repeated call queues no second audit record and logs no second line.
    Finish { action: i64, outcome: &'a Value },
}

/// Everything one step leaves in the store; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord<'a> {
    pub task: TaskId,
    /// The task's goal, which the activity event is logged under.
    pub goal: &'a str,
    pub entry: Entry<'a>,
    pub cost: Option<Cost<'a>>,
    /// Queued for writeback; its `id` is ignored, the store assigns it.
    pub audit: Option<&'a AuditRecord>,
    pub activity: Option<&'a Activity>,
}

impl Store {
    /// Writes `record` in one transaction (see [`StepRecord`]). Returns the journal entry's
    /// id, when it has one.
    pub fn record(
        &self,
        record: &StepRecord<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        // Encoded before the transaction takes the write lock: other workers wait less.
        let activity = record
            .activity
            .map(|a| Ok::<_, StoreError>((a.kind(), serde_json::to_value(a)?)))
            .transpose()?;
        let spent = record.cost.as_ref().map(|cost| super::spending::Spent {
            task: record.task,
            usd: cost.usd,
        });
        self.write_and(
            |tx| {
            let entry = match &record.entry {
                Entry::None => None,
                Entry::Whole {
                    step,
                    tool,
                    input,
                    outcome,
                    started_at,
                } => {
                    ensure_task(tx, record.task)?;
                    tx.execute_cached(
                        "DELETE FROM actions WHERE task = ?1 AND step = ?2",
                        params![record.task, step],
                    )?;
                    tx.execute_cached(
                        "INSERT INTO actions (task, step, tool, input, started_at, finished_at, outcome)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            record.task,
                            step,
                            tool,
                            serde_json::to_string(input)?,
                            time_text(*started_at),
                            time_text(now),
                            serde_json::to_string(outcome)?
                        ],
                    )?;
                    Some(tx.last_insert_rowid())
                }
                Entry::Finish { action, outcome } => {
                    if !finish_entry(tx, *action, outcome, now)? {
                        return Ok(Some(*action));
                    }
                    Some(*action)
                }
            };
            if let Some(cost) = &record.cost {
                if entry.is_none() {
                    ensure_task(tx, record.task)?;
                }
                tx.execute_cached(
                    "INSERT INTO spend (task, agent, model, input_tokens, output_tokens, usd, time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        record.task,
                        cost.agent,
                        cost.model,
                        i64::try_from(cost.input_tokens).unwrap_or(i64::MAX),
                        i64::try_from(cost.output_tokens).unwrap_or(i64::MAX),
                        cost.usd,
                        time_text(now)
                    ],
                )?;
            }
            if let Some(audit) = record.audit {
                insert_audit(tx, audit)?;
            }
            if let Some((kind, data)) = &activity {
                append_event(tx, Some(record.task), Some(record.goal), *kind, data, now)?;
            }
            Ok(entry)
        },
            |conn, _| {
                if let Some(spent) = &spent {
                    self.note_spent(conn, spent, now);
                }
            },
        )
    }
}
