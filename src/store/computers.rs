//! The registry of computers: one row per declared computer with what its heartbeat and
//! its attempts said (see [`crate::computer::health`]), its load and capacity. The engine
//! rewrites a computer's row whenever that changes; `proto get computers` and
//! `describe computer` read it, from another process too. Computers no longer declared
//! are forgotten.

use super::Cached as _;
use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, conversion_error, optional_time_column, time_text};
use crate::computer::Kind;
use crate::computer::health::{BreakerState, Health};

/// A computer as the registry records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerRecord {
    pub name: String,
    pub kind: Kind,
    pub healthy: bool,
    /// Why it is unhealthy, or why its last probe failed.
    pub reason: Option<String>,
    /// Probes failed in a row.
    pub missed: u32,
    /// Tasks running there.
    pub running: u32,
    pub capacity: u32,
    pub breaker: BreakerState,
    /// Attempts in a row that lost the computer.
    pub failures: u32,
    /// When an open breaker lets a trial through.
    pub open_until: Option<DateTime<Utc>>,
    /// When a probe last answered.
    pub last_seen: Option<DateTime<Utc>>,
    /// When it was last probed.
    pub checked_at: Option<DateTime<Utc>>,
}

impl ComputerRecord {
    pub fn new(name: &str, kind: Kind, health: &Health, running: u32, capacity: u32) -> Self {
        ComputerRecord {
            name: name.to_string(),
            kind,
            healthy: health.healthy,
            reason: health.reason.clone(),
            missed: health.missed,
            running,
            capacity,
            breaker: health.breaker,
            failures: health.failures,
            open_until: health.open_until,
            last_seen: health.last_seen,
            checked_at: health.checked_at,
        }
    }
}

impl Store {
    /// Writes a computer's row.
    pub fn record_computer(&self, record: &ComputerRecord) -> Result<(), StoreError> {
        let time = |t: Option<DateTime<Utc>>| t.map(time_text);
        self.write(|tx| {
            tx.execute_cached(
                "INSERT INTO computers (name, kind, healthy, reason, missed, running, capacity,
                     breaker, failures, open_until, last_seen, checked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (name) DO UPDATE SET kind = ?2, healthy = ?3, reason = ?4,
                     missed = ?5, running = ?6, capacity = ?7, breaker = ?8, failures = ?9,
                     open_until = ?10, last_seen = ?11, checked_at = ?12",
                params![
                    record.name,
                    record.kind.as_str(),
                    record.healthy,
                    record.reason,
                    record.missed,
                    record.running,
                    record.capacity,
                    record.breaker.as_str(),
                    record.failures,
                    time(record.open_until),
                    time(record.last_seen),
                    time(record.checked_at),
                ],
            )?;
            Ok(())
        })
    }

    /// Forgets the computers not in `declared`.
    pub fn forget_computers(&self, declared: &[&str]) -> Result<(), StoreError> {
        let declared = serde_json::to_string(declared)?;
        self.write(|tx| {
            tx.execute_cached(
                "DELETE FROM computers WHERE name NOT IN (SELECT value FROM json_each(?1))",
                params![declared],
            )?;
            Ok(())
        })
    }

    /// Every computer of the registry, by name.
    pub fn computers(&self) -> Result<Vec<ComputerRecord>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx.prepare(
                "SELECT name, kind, healthy, reason, missed, running, capacity, breaker,
                     failures, open_until, last_seen, checked_at
                 FROM computers ORDER BY name",
            )?;
            let rows = stmt.query_map([], |row| {
                let kind: String = row.get(1)?;
                let breaker: String = row.get(7)?;
                Ok(ComputerRecord {
                    name: row.get(0)?,
                    kind: Kind::parse(&kind)
                        .ok_or_else(|| conversion_error(1, unknown("kind", &kind)))?,
                    healthy: row.get(2)?,
                    reason: row.get(3)?,
                    missed: row.get(4)?,
                    running: row.get(5)?,
                    capacity: row.get(6)?,
                    breaker: BreakerState::parse(&breaker)
                        .ok_or_else(|| conversion_error(7, unknown("breaker", &breaker)))?,
                    failures: row.get(8)?,
                    open_until: optional_time_column(row, 9)?,
                    last_seen: optional_time_column(row, 10)?,
                    checked_at: optional_time_column(row, 11)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

fn unknown(what: &str, value: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unknown {what} {value:?}"),
    )
}
