//! What the company learns, as the store keeps it until git does: every
//! [`Capture`] (a lesson drawn from an attempt, a denial, what an agent asked to
//! `Remember`) waits here for the controller's record commit, which writes it into its entry
//! and marks it written, exactly as audit records are; and the improvement goals the miner
//! proposed, so none is proposed twice.

use super::Cached as _;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, TaskId, time_column, time_text};
use crate::knowledge::capture::Capture;

/// One capture as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCapture {
    pub id: i64,
    pub capture: Capture,
    /// The record commit that wrote it, once one did.
    pub commit: Option<String>,
}

/// An improvement goal the miner proposed on a branch of the company repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub slug: String,
    /// The proposed Goal's name.
    pub goal: String,
    /// What was seen (`failure`, `flapping`, `refused`, `costly`).
    pub reason: String,
    /// The evidence, one line per occurrence.
    pub evidence: Vec<String>,
    pub branch: String,
    /// The commit on `branch`, once published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub proposed: DateTime<Utc>,
}

/// What one agent's calls for one task cost.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentTaskSpend {
    pub agent: String,
    pub task: TaskId,
    pub goal: String,
    pub product: String,
    pub usd: f64,
}

impl Store {
    /// Keeps `capture` (of `task`, if any) until a record commit writes it.
    pub fn capture(
        &self,
        task: Option<TaskId>,
        capture: &Capture,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.write(|tx| {
            tx.execute_cached(
                "INSERT INTO knowledge (time, task, goal, kind, slug, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    time_text(now),
                    task,
                    capture.goal,
                    capture.kind.as_str(),
                    capture.slug,
                    serde_json::to_string(capture)?
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Captures no record commit has written yet, oldest first.
    pub fn pending_knowledge(&self) -> Result<Vec<StoredCapture>, StoreError> {
        self.captures_where("\"commit\" IS NULL")
    }

    /// Every capture kept, written or not, oldest first.
    pub fn captures(&self) -> Result<Vec<StoredCapture>, StoreError> {
        self.captures_where("1")
    }

    fn captures_where(&self, filter: &str) -> Result<Vec<StoredCapture>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT id, body, \"commit\" FROM knowledge WHERE {filter} ORDER BY id"
            ))?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, body, commit) = row?;
                // A row this build cannot read (written by a newer one) is left alone.
                match serde_json::from_str::<Capture>(&body) {
                    Ok(capture) => out.push(StoredCapture {
                        id,
                        capture,
                        commit,
                    }),
                    Err(e) => tracing::warn!(capture = id, "unreadable capture skipped: {e}"),
                }
            }
            Ok(out)
        })
    }

    /// Marks captures as written in `commit`.
    pub fn knowledge_written(&self, ids: &[i64], commit: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare(
                "UPDATE knowledge SET \"commit\" = ?2 WHERE id = ?1 AND \"commit\" IS NULL",
            )?;
            for id in ids {
                stmt.execute(params![id, commit])?;
            }
            Ok(())
        })
    }

    /// Records a proposal; `false` when one with its slug exists (nothing changes).
    pub fn propose(&self, proposal: &Proposal) -> Result<bool, StoreError> {
        self.write(|tx| {
            let added = tx.execute_cached(
                "INSERT OR IGNORE INTO proposals (slug, goal, reason, evidence, branch, \"commit\", proposed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    proposal.slug,
                    proposal.goal,
                    proposal.reason,
                    serde_json::to_string(&proposal.evidence)?,
                    proposal.branch,
                    proposal.commit,
                    time_text(proposal.proposed)
                ],
            )?;
            Ok(added > 0)
        })
    }

    /// Notes the commit that published proposal `slug`.
    pub fn proposal_published(&self, slug: &str, commit: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute_cached(
                "UPDATE proposals SET \"commit\" = ?2 WHERE slug = ?1",
                params![slug, commit],
            )?;
            Ok(())
        })
    }

    /// One proposal, if it was made.
    pub fn proposal(&self, slug: &str) -> Result<Option<Proposal>, StoreError> {
        Ok(self.proposals()?.into_iter().find(|p| p.slug == slug))
    }

    /// Every proposal made, oldest first.
    pub fn proposals(&self) -> Result<Vec<Proposal>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT slug, goal, reason, evidence, branch, \"commit\", proposed
                 FROM proposals ORDER BY proposed, slug",
            )?;
            let rows = stmt.query_map([], |row| {
                let evidence: String = row.get(3)?;
                Ok(Proposal {
                    slug: row.get(0)?,
                    goal: row.get(1)?,
                    reason: row.get(2)?,
                    evidence: serde_json::from_str(&evidence).unwrap_or_default(),
                    branch: row.get(4)?,
                    commit: row.get(5)?,
                    proposed: time_column(row, 6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Every audited action that was refused (a tool the agent does not hold, a permission
    /// rule, a hook), oldest first; actions that waited for approval are not refusals.
    pub fn refusals(&self) -> Result<Vec<super::AuditRecord>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {} FROM audit
                 WHERE json_extract(outcome, '$.denied') IS NOT NULL
                    OR (json_extract(outcome, '$.refused') IS NOT NULL
                        AND json_extract(outcome, '$.refused') NOT LIKE 'needs a person''s approval%')
                 ORDER BY id",
                super::AUDIT_COLUMNS
            ))?;
            let rows = stmt.query_map([], super::audit_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Dollars each agent spent on each task.
    pub fn spend_by_agent_and_task(&self) -> Result<Vec<AgentTaskSpend>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT spend.agent, spend.task, tasks.goal, tasks.product, SUM(spend.usd)
                 FROM spend JOIN tasks ON tasks.id = spend.task
                 GROUP BY spend.agent, spend.task ORDER BY spend.task",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(AgentTaskSpend {
                    agent: row.get(0)?,
                    task: row.get(1)?,
                    goal: row.get(2)?,
                    product: row.get(3)?,
                    usd: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Whether a proposal with slug `slug` was made.
    pub fn proposed(&self, slug: &str) -> Result<bool, StoreError> {
        self.read(|tx| {
            Ok(tx
                .query_row_cached(
                    "SELECT 1 FROM proposals WHERE slug = ?1",
                    [slug],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }
}
