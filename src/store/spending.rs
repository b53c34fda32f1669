//! The spending the planner weighs against the dollar budgets, kept between passes: the
//! loop asks for it on every pass, and summing every spend row ever recorded each time
//! costs what the company's history is. The sums are read from the tables once, then
//! moved by each spend this handle records; a commit by another process (SQLite's
//! `data_version` moves) or a new UTC day reads them again.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::Connection;

use super::{Cached as _, Store, StoreError, TaskId, day_usd, observed::data_version};
use crate::plan::Spending;

/// [`Spending`] as of the connection's `data_version` and a UTC day.
#[derive(Debug)]
pub(super) struct Kept {
    version: i64,
    day: NaiveDate,
    spending: Spending,
}

/// A spend row just committed: its task and dollars.
pub(super) struct Spent {
    pub task: TaskId,
    pub usd: f64,
}

impl Store {
    /// The kept sums, locked (always after the connection).
    fn kept_spending(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        // Every update of the sums is whole or not made: a panic leaves them consistent.
        self.spending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Dollars by goal (goals that spent nothing are left out), and the company's on the
    /// UTC day of `now`.
    pub fn spending(&self, now: DateTime<Utc>) -> Result<Spending, StoreError> {
        let mut conn = self.lock();
        let version = data_version(&conn)?;
        let day = now.date_naive();
        let mut kept = self.kept_spending();
        if let Some(k) = kept
            .as_ref()
            .filter(|k| k.version == version && k.day == day)
        {
            return Ok(k.spending.clone());
        }
        let tx = conn.transaction()?;
        let spending = read(&tx, now)?;
        tx.commit()?;
        *kept = Some(Kept {
            version,
            day,
            spending: spending.clone(),
        });
        Ok(spending)
    }

    /// Moves the kept sums by `spent`, which the caller committed and holds the connection
    /// since: no read of the tables comes between, so nothing is counted twice.
    pub(super) fn note_spent(&self, conn: &Connection, spent: &Spent, at: DateTime<Utc>) {
        if spent.usd == 0.0 {
            return;
        }
        let mut kept = self.kept_spending();
        let Some(k) = kept.as_mut() else {
            return;
        };
        let goal = conn.query_row_cached(
            "SELECT goal FROM tasks WHERE id = ?1",
            [spent.task],
            |row| row.get::<_, String>(0),
        );
        let Ok(goal) = goal else {
            // Read again from the tables when next asked: never left wrong.
            *kept = None;
            return;
        };
        *k.spending.by_goal.entry(goal).or_default() += spent.usd;
        if at.date_naive() == k.day {
            k.spending.day_usd += spent.usd;
        }
    }
}

/// The sums, from the tables.
fn read(conn: &Connection, now: DateTime<Utc>) -> Result<Spending, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT tasks.goal, SUM(spend.usd) FROM spend
         JOIN tasks ON tasks.id = spend.task GROUP BY tasks.goal HAVING SUM(spend.usd) != 0",
    )?;
    let by_goal = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Spending {
        day_usd: day_usd(conn, now)?,
        by_goal,
    })
}
