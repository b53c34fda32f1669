//! What the reconcile loop asks of the store on every pass, kept in memory so a pass costs
//! what the company is, not what its history is: each goal's last check, and the tasks the
//! planner decides on (the live ones and the newest of each goal key, never delegated
//! children). Finished tasks are not rescanned: the store's own transitions update the view
//! task by task, and a change another process committed (a `proto retry` beside a running
//! controller) is seen through SQLite's `data_version`, which rebuilds the view once.

use super::Cached as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::{
    StoreError, TASK_COLUMNS, Task, TaskId, TaskState, query_tasks, task_row, time_column,
};
use crate::plan::{Changes, GoalChange, GoalObservation, Observed};
use crate::spec::Priority;

/// Where a reader of the view's changes got to (see [`View::changes_since`]): the view it
/// read and how far into its changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedCursor {
    view: u64,
    seq: u64,
}

/// Every view built in this process gets its own number: a cursor of a view since rebuilt
/// (another process committed) reads everything again.
static VIEWS: AtomicU64 = AtomicU64::new(1);

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
    /// The view's tasks of each goal.
    by_goal: HashMap<String, BTreeSet<TaskId>>,
    /// This view's number (see [`VIEWS`]).
    number: u64,
    /// Changes taken in since the view was built, and the last one that touched each goal.
    seq: u64,
    touched: HashMap<String, u64>,
    /// The view's queued tasks by when they may start, and how many each product has: what
    /// the loop asks before it sleeps, answered without a walk of the tasks.
    queued: BTreeSet<(DateTime<Utc>, TaskId)>,
    queued_by_product: BTreeMap<String, usize>,
    /// The same tasks in dispatch order: critical first, then oldest first.
    queued_in_order: BTreeSet<(Priority, TaskId)>,
}

pub(super) fn data_version(conn: &Connection) -> Result<i64, StoreError> {
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
            number: VIEWS.fetch_add(1, Ordering::Relaxed),
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
        self.touch(goal);
        Ok(())
    }

    fn put(&mut self, task: Task) {
        let id = task.id;
        self.touch(&task.goal);
        let newest = self.newest.entry(task.key.clone()).or_insert(id);
        if *newest < id {
            // The key's previous newest task is no longer the planner's unless it is live.
            let previous = std::mem::replace(newest, id);
            if self
                .tasks
                .get(&previous)
                .is_some_and(|t| !t.state.is_live())
            {
                self.forget(previous);
            }
        }
        let keep = task.state.is_live() || self.newest.get(&task.key) == Some(&id);
        if keep {
            self.by_goal
                .entry(task.goal.clone())
                .or_default()
                .insert(id);
            if let Some(old) = self.tasks.remove(&id) {
                self.count_queued(&old, false);
            }
            self.count_queued(&task, true);
            self.tasks.insert(id, task);
        } else {
            self.forget(id);
        }
    }

    fn forget(&mut self, id: TaskId) {
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        self.count_queued(&task, false);
        if let Some(ids) = self.by_goal.get_mut(&task.goal) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_goal.remove(&task.goal);
            }
        }
        self.touch(&task.goal);
    }

    /// Adds `task` to the queue's index (or takes it out), if it is queued.
    fn count_queued(&mut self, task: &Task, add: bool) {
        if task.state != TaskState::Queued {
            return;
        }
        if add {
            self.queued.insert((task.not_before, task.id));
            self.queued_in_order.insert((task.priority, task.id));
            *self
                .queued_by_product
                .entry(task.product.clone())
                .or_default() += 1;
            return;
        }
        self.queued.remove(&(task.not_before, task.id));
        self.queued_in_order.remove(&(task.priority, task.id));
        if let Some(count) = self.queued_by_product.get_mut(&task.product) {
            *count -= 1;
            if *count == 0 {
                self.queued_by_product.remove(&task.product);
            }
        }
    }

    /// Calls `take` with each queued task whose not-before time has come, in dispatch order,
    /// until it answers false: a dispatcher with room for one task reads one, where a walk
    /// of every queued task read and sorted them all at each dispatch.
    pub(super) fn ready_each(&self, now: DateTime<Utc>, mut take: impl FnMut(&Task) -> bool) {
        let ready = self
            .queued_in_order
            .iter()
            .filter_map(|(_, id)| self.tasks.get(id))
            .filter(|task| task.not_before <= now);
        for task in ready {
            if !take(task) {
                break;
            }
        }
    }

    /// The products with queued tasks, and the earliest time after `now` one of them may
    /// start (one that may start already is the dispatcher's to take).
    pub(super) fn queue_shape(
        &self,
        now: DateTime<Utc>,
    ) -> (BTreeSet<String>, Option<DateTime<Utc>>) {
        let products = self.queued_by_product.keys().cloned().collect();
        let next = self
            .queued
            .range((Bound::Excluded((now, TaskId::MAX)), Bound::Unbounded))
            .next()
            .map(|(at, _)| *at);
        (products, next)
    }

    fn touch(&mut self, goal: &str) {
        self.seq += 1;
        match self.touched.get_mut(goal) {
            Some(seq) => *seq = self.seq,
            None => {
                self.touched.insert(goal.to_string(), self.seq);
            }
        }
    }

    /// What changed since `cursor` (`None`: never read), and the cursor to read from next:
    /// the goals touched since, each as it is now, or everything when the cursor is of
    /// another view.
    pub(super) fn changes_since(
        &self,
        cursor: Option<ObservedCursor>,
    ) -> (ObservedCursor, Changes) {
        let now = ObservedCursor {
            view: self.number,
            seq: self.seq,
        };
        let changes = match cursor {
            Some(c) if c.view == self.number => Changes::Goals(
                self.touched
                    .iter()
                    .filter(|(_, seq)| **seq > c.seq)
                    .map(|(goal, _)| GoalChange {
                        goal: goal.clone(),
                        observation: self.goals.get(goal).cloned(),
                        tasks: self
                            .by_goal
                            .get(goal)
                            .into_iter()
                            .flatten()
                            .filter_map(|id| self.tasks.get(id))
                            .map(super::task_observation)
                            .collect(),
                    })
                    .collect(),
            ),
            _ => Changes::All(self.observed()),
        };
        (now, changes)
    }

    /// Every goal's check and every task of the view, as the planner reads them.
    pub(super) fn observed(&self) -> Observed {
        Observed {
            goals: self.goals.clone(),
            tasks: self.tasks.values().map(super::task_observation).collect(),
            ..Observed::default()
        }
    }

    /// The newest top-level task of `key`, if the view holds one.
    pub(super) fn newest(&self, key: &str) -> Option<&Task> {
        self.newest.get(key).and_then(|id| self.tasks.get(id))
    }
}
