//! What the reconcile loop asks of the store on every pass, kept in memory so a pass costs
//! what the company is, not what its history is: each goal's last check, and the tasks the
//! planner decides on (the live ones and the newest of each goal key, never delegated
//! children). Finished tasks are not rescanned: the store's own transitions update the view
//! task by task, and a change another process committed (a `proto retry` beside a running
//! controller) is seen through SQLite's `data_version`, which rebuilds the view once.

use super::Cached as _;
use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension};

use super::{StoreError, TASK_COLUMNS, Task, TaskId, query_tasks, task_row, time_column};
use crate::plan::GoalObservation;

/// The view, as of the connection's `data_version`.
#[derive(Debug, Default)]
pub(super) struct View {
    /// SQLite's counter of other connections' commits when the view was built.
    version: i64,
    pub(super) goals: BTreeMap<String, GoalObservation>,
    /// Live top-level tasks and the newest top-level task of each key, by id.
    pub(super) tasks: BTreeMap<TaskId, Task>,
    /// The newest top-level task of each key.
    newest: HashMap<String, TaskId>,
}

fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "data_version", |row| row.get(0))?)
}

impl View {
    /// The view, rebuilt from the tables when there is none yet or another connection
    /// committed since it was built.
    pub(super) fn current<'v>(
        slot: &'v mut Option<View>,
        conn: &Connection,
    ) -> Result<&'v mut View, StoreError> {
        let version = data_version(conn)?;
        if slot.as_ref().is_none_or(|v| v.version != version) {
            *slot = Some(View::build(conn, version)?);
        }
        Ok(slot.get_or_insert_with(View::default))
    }

    fn build(conn: &Connection, version: i64) -> Result<View, StoreError> {
        let mut view = View {
            version,
            ..View::default()
        };
        let mut stmt = conn.prepare("SELECT goal, passed, checked_at, key FROM observations")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                GoalObservation {
                    passed: row.get(1)?,
                    checked_at: time_column(row, 2)?,
                    key: row.get(3)?,
                },
            ))
        })?;
        view.goals = rows.collect::<Result<_, _>>()?;
        let tasks = query_tasks(
            conn,
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE parent IS NULL
                 AND (state IN ('queued', 'running', 'waitingApproval')
                      OR id IN (SELECT MAX(id) FROM tasks WHERE parent IS NULL GROUP BY key))
                 ORDER BY id"
            ),
            [],
        )?;
        for task in tasks {
            view.put(task);
        }
        Ok(view)
    }

    /// Takes in the task `id` as the tables now hold it (after a transition committed).
    pub(super) fn note_task(&mut self, conn: &Connection, id: TaskId) -> Result<(), StoreError> {
        let task = conn
            .query_row_cached(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                task_row,
            )
            .optional()?;
        match task {
            Some(task) if task.parent.is_none() => self.put(task),
            _ => {}
        }
        Ok(())
    }

    /// Takes in a goal's check as the tables now hold it.
    pub(super) fn note_goal(&mut self, conn: &Connection, goal: &str) -> Result<(), StoreError> {
        let observation = conn
            .query_row_cached(
                "SELECT passed, checked_at, key FROM observations WHERE goal = ?1",
                [goal],
                |row| {
                    Ok(GoalObservation {
                        passed: row.get(0)?,
                        checked_at: time_column(row, 1)?,
                        key: row.get(2)?,
                    })
                },
            )
            .optional()?;
        match observation {
            Some(o) => self.goals.insert(goal.to_string(), o),
            None => self.goals.remove(goal),
        };
        Ok(())
    }

    fn put(&mut self, task: Task) {
        let id = task.id;
        let newest = self.newest.entry(task.key.clone()).or_insert(id);
        if *newest < id {
            // The key's previous newest task is no longer the planner's unless it is live.
            let previous = std::mem::replace(newest, id);
            if self
                .tasks
                .get(&previous)
                .is_some_and(|t| !t.state.is_live())
            {
                self.tasks.remove(&previous);
            }
        }
        let keep = task.state.is_live() || self.newest.get(&task.key) == Some(&id);
        if keep {
            self.tasks.insert(id, task);
        } else {
            self.tasks.remove(&id);
        }
    }

    /// The newest top-level task of `key`, if the view holds one.
    pub(super) fn newest(&self, key: &str) -> Option<&Task> {
        self.newest.get(key).and_then(|id| self.tasks.get(id))
    }
}
