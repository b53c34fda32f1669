//! Reads that show a task's history and the company's spend in detail, for the HTTP API
//! and the dashboard: a task's attempts and journal, and spend grouped by day, goal, agent
//! and model. The CLI's lists read the same tables through [`Store::tasks`] and friends.

use super::Cached as _;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{
    ActionRecord, AuditRecord, Store, StoreError, TaskId, json_column, optional_time_column,
    state_from_name, time_column,
};

/// One attempt of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    pub number: u32,
    pub computer: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `succeeded`, `failed`, `interrupted`, `cancelled`, `stalled`, ...
    pub outcome: String,
    pub detail: Option<String>,
}

/// Dollars and tokens of one group of model calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendSum {
    pub usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub calls: u64,
}

/// Every recorded model call's spend, grouped four ways.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendReport {
    /// By UTC day (`YYYY-MM-DD`).
    pub by_day: BTreeMap<String, SpendSum>,
    pub by_goal: BTreeMap<String, SpendSum>,
    pub by_agent: BTreeMap<String, SpendSum>,
    pub by_model: BTreeMap<String, SpendSum>,
}

impl Store {
    /// A task's attempts, oldest first.
    pub fn attempts(&self, task: TaskId) -> Result<Vec<AttemptRow>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT number, computer, started_at, finished_at, outcome, detail
                 FROM attempts WHERE task = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![task], |row| {
                Ok(AttemptRow {
                    number: row.get(0)?,
                    computer: row.get(1)?,
                    started_at: time_column(row, 2)?,
                    finished_at: optional_time_column(row, 3)?,
                    outcome: row.get(4)?,
                    detail: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// A task's journal: every act() call of its current work, by step.
    pub fn journal(&self, task: TaskId) -> Result<Vec<ActionRecord>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT id, task, step, tool, input, started_at, finished_at, outcome
                 FROM actions WHERE task = ?1 ORDER BY step",
            )?;
            let rows = stmt.query_map(params![task], |row| {
                Ok(ActionRecord {
                    id: row.get(0)?,
                    task: row.get(1)?,
                    step: row.get(2)?,
                    tool: row.get(3)?,
                    input: json_column(row, 4)?,
                    started_at: time_column(row, 5)?,
                    finished_at: optional_time_column(row, 6)?,
                    outcome: row
                        .get::<_, Option<String>>(7)?
                        .map(|text| {
                            serde_json::from_str(&text).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    7,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })
                        })
                        .transpose()?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The audit records of a task still in the store (those written to git stay until
    /// retention prunes them), oldest first: its tool calls with their diffs.
    pub fn task_audit(&self, task: TaskId) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {} FROM audit WHERE task = ?1 ORDER BY id",
                super::AUDIT_COLUMNS
            ))?;
            let rows = stmt.query_map(params![task], super::audit_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Spend grouped by day, goal, agent and model.
    pub fn spend_report(&self) -> Result<SpendReport, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT substr(spend.time, 1, 10), tasks.goal, spend.agent, spend.model,
                        SUM(spend.usd), SUM(spend.input_tokens), SUM(spend.output_tokens),
                        COUNT(*)
                 FROM spend JOIN tasks ON tasks.id = spend.task
                 GROUP BY 1, 2, 3, 4",
            )?;
            let mut report = SpendReport::default();
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let sum = SpendSum {
                    usd: row.get(4)?,
                    input_tokens: row.get::<_, i64>(5)?.try_into().unwrap_or(0),
                    output_tokens: row.get::<_, i64>(6)?.try_into().unwrap_or(0),
                    calls: row.get::<_, i64>(7)?.try_into().unwrap_or(0),
                };
                for (map, key) in [
                    (&mut report.by_day, row.get::<_, String>(0)?),
                    (&mut report.by_goal, row.get(1)?),
                    (&mut report.by_agent, row.get(2)?),
                    (&mut report.by_model, row.get(3)?),
                ] {
                    let into = map.entry(key).or_default();
                    into.usd += sum.usd;
                    into.input_tokens += sum.input_tokens;
                    into.output_tokens += sum.output_tokens;
                    into.calls += sum.calls;
                }
            }
            Ok(report)
        })
    }

    /// The company's part of the engine's last status report (its goals are rows of their
    /// own), as the JSON the engine wrote.
    pub fn company_status(&self) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row_cached("SELECT report FROM status WHERE id = 1", [], |row| {
                    row.get(0)
                })
                .optional()?)
        })
    }

    /// One goal's last status, as the JSON the engine wrote.
    pub fn goal_status(&self, goal: &str) -> Result<Option<String>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row_cached(
                    "SELECT body FROM goal_status WHERE goal = ?1",
                    [goal],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }

    /// The goal statuses written after change `after` (`None`: every one) as the JSON the
    /// engine wrote, by goal, and the change they are current to: what a list of goals
    /// embeds without parsing it, asking next time only for what changed since.
    pub fn goal_statuses_since(
        &self,
        after: Option<i64>,
    ) -> Result<(i64, HashMap<String, String>), StoreError> {
        self.read(|tx| {
            let change: i64 = tx
                .query_row_cached("SELECT goals_changed FROM status WHERE id = 1", [], |row| {
                    row.get(0)
                })
                .optional()?
                .unwrap_or(0);
            let mut stmt = tx.prepare("SELECT goal, body FROM goal_status WHERE changed > ?1")?;
            // Rows written before changes were counted are marked 0.
            let rows =
                stmt.query_map([after.unwrap_or(-1)], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok((change, rows.collect::<Result<_, _>>()?))
        })
    }

    /// Each goal's task ids, newest first.
    pub fn task_ids_by_goal(&self) -> Result<HashMap<String, Vec<TaskId>>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT goal, id FROM tasks ORDER BY id DESC")?;
            let mut rows = stmt.query([])?;
            let mut by_goal: HashMap<String, Vec<TaskId>> = HashMap::new();
            while let Some(row) = rows.next()? {
                let goal: String = row.get(0)?;
                by_goal.entry(goal).or_default().push(row.get(1)?);
            }
            Ok(by_goal)
        })
    }

    /// Dollars spent on each goal (its tasks' model calls).
    pub fn usd_by_goal(&self) -> Result<HashMap<String, f64>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT tasks.goal, SUM(spend.usd) FROM spend JOIN tasks ON tasks.id = spend.task
                 GROUP BY tasks.goal",
            )?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Tokens and dollars recorded against each task of one goal.
    pub fn spend_of_goal_tasks(
        &self,
        goal: &str,
    ) -> Result<BTreeMap<TaskId, super::TaskSpend>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT spend.task, SUM(spend.input_tokens), SUM(spend.output_tokens),
                        SUM(spend.usd), COUNT(*)
                 FROM spend JOIN tasks ON tasks.id = spend.task
                 WHERE tasks.goal = ?1 GROUP BY spend.task",
            )?;
            let rows = stmt.query_map([goal], super::task_spend_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// How many tasks are in each state (states with none left out).
    pub fn task_counts(&self) -> Result<Vec<(crate::plan::TaskState, i64)>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare("SELECT state, COUNT(*) FROM tasks GROUP BY state")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut counts = Vec::new();
            for row in rows {
                let (name, count) = row?;
                if let Some(state) = state_from_name(&name) {
                    counts.push((state, count));
                }
            }
            Ok(counts)
        })
    }

    /// The newest event's id (0 when the log is empty): where a live reader starts.
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read(|tx| {
            Ok(
                tx.query_row_cached("SELECT COALESCE(MAX(id), 0) FROM events", [], |row| {
                    row.get(0)
                })?,
            )
        })
    }
}
