//! The kill switch's durable half: whether a person stopped the controller, who, why and
//! when. `proto stop` sets it (from another process, through the same database), the
//! running engine reads it every pass and within a fraction of a second when idle, and a
//! restarted controller stays stopped until `proto resume` clears it. Both are recorded in
//! the event log and queued for the git audit in the same transaction as the change.

use super::Cached as _;
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    AuditRecord, EventKind, Store, StoreError, append_event, insert_audit, optional_time_column,
    time_text,
};

/// A stop in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    pub at: DateTime<Utc>,
    /// Who stopped it (`Name <email>` from git, else the login name).
    pub by: String,
    pub reason: String,
}

impl Stop {
    /// What the status and the plan say while it holds.
    pub fn message(&self) -> String {
        format!(
            "stopped by {} at {}: {} (`proto resume` to continue)",
            self.by,
            self.at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.reason
        )
    }
}

impl Store {
    /// Stops everything: `Ok(false)` when a stop already held (it is kept, with its reason).
    pub fn stop(&self, by: &str, reason: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.write(|tx| {
            if current(tx)?.is_some() {
                return Ok(false);
            }
            tx.execute_cached(
                "INSERT INTO control (id, stopped_at, stopped_by, reason) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET stopped_at = ?1, stopped_by = ?2, reason = ?3",
                (time_text(now), by, reason),
            )?;
            let data = json!({ "by": by, "reason": reason });
            append_event(tx, None, None, EventKind::ControlStopped, &data, now)?;
            insert_audit(tx, &audit("stop", by, data, now))?;
            Ok(true)
        })
    }

    /// Lifts a stop: `Ok(false)` when none held.
    pub fn resume(&self, by: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.write(|tx| {
            let Some(stop) = current(tx)? else {
                return Ok(false);
            };
            tx.execute_cached(
                "UPDATE control SET stopped_at = NULL, stopped_by = NULL, reason = NULL WHERE id = 1",
                [],
            )?;
            let data = json!({ "by": by, "stopped": stop });
            append_event(tx, None, None, EventKind::ControlResumed, &data, now)?;
            insert_audit(tx, &audit("resume", by, data, now))?;
            Ok(true)
        })
    }

    /// The stop in force, if any.
    pub fn stopped(&self) -> Result<Option<Stop>, StoreError> {
        self.read(|tx| current(tx))
    }

    /// After a stop: waits until no task is marked running (the controller marks a task
    /// interrupted only once its processes are gone), at most `within`. Answers how many
    /// are still running then: 0 when the stop took effect. `proto stop` and the API's
    /// `POST /api/v1/stop` both confirm a stop with it.
    pub fn await_idle(&self, within: std::time::Duration) -> Result<i64, StoreError> {
        let deadline = std::time::Instant::now() + within;
        let mut running = self.running_now()?;
        while running > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            running = self.running_now()?;
        }
        Ok(running)
    }

    /// Tasks the tables say are running now, read afresh (not from this handle's view): what
    /// `proto stop` waits on, from another process than the controller's.
    pub fn running_now(&self) -> Result<i64, StoreError> {
        self.read(|tx| {
            Ok(tx.query_row_cached(
                "SELECT COUNT(*) FROM tasks WHERE state = 'running'",
                [],
                |row| row.get::<_, i64>(0),
            )?)
        })
    }
}

fn current(conn: &rusqlite::Connection) -> Result<Option<Stop>, StoreError> {
    let row = conn
        .query_row_cached(
            "SELECT stopped_at, stopped_by, reason FROM control WHERE id = 1",
            [],
            |row| {
                Ok((
                    optional_time_column(row, 0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            },
        )
        .optional()?;
    Ok(match row {
        Some((Some(at), by, reason)) => Some(Stop {
            at,
            by: by.unwrap_or_default(),
            reason: reason.unwrap_or_default(),
        }),
        _ => None,
    })
}

/// The audit line of a person's act on the whole company.
fn audit(action: &str, by: &str, input: serde_json::Value, now: DateTime<Utc>) -> AuditRecord {
    AuditRecord {
        id: 0,
        time: now,
        agent: by.to_string(),
        goal: None,
        task: None,
        action: action.to_string(),
        input,
        outcome: json!({ "ok": true }),
        diff: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_holds_once_with_its_first_reason_until_resumed() {
        let store = Store::in_memory().unwrap();
        let t0 = Utc::now();
        assert_eq!(store.stopped().unwrap(), None);
        assert!(!store.resume("ada", t0).unwrap(), "nothing to resume");
        assert!(
            store
                .stop("ada <ada@example.com>", "fire drill", t0)
                .unwrap()
        );
        assert!(
            !store.stop("bob", "again", t0).unwrap(),
            "a stop already holds"
        );
        let stop = store.stopped().unwrap().unwrap();
        assert_eq!(
            (stop.by.as_str(), stop.reason.as_str()),
            ("ada <ada@example.com>", "fire drill")
        );
        assert!(stop.message().contains("fire drill") && stop.message().contains("proto resume"));
        assert!(store.resume("bob", t0).unwrap());
        assert_eq!(store.stopped().unwrap(), None);
        // Both are in the audit, waiting to be committed to git, as the person who acted.
        let audit = store.pending_audit().unwrap();
        let acts: Vec<(&str, &str)> = audit
            .iter()
            .map(|r| (r.action.as_str(), r.agent.as_str()))
            .collect();
        assert_eq!(acts, [("stop", "ada <ada@example.com>"), ("resume", "bob")]);
    }
}
