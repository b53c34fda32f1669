//! Internals: the migration runner, the stored names and the time encoding. The store's
//! behaviour through its public interface is tested in `tests/store.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use super::*;

const CREATE: &str = "CREATE TABLE one (x INTEGER NOT NULL)";
const INSERT: &str = "INSERT INTO one (x) VALUES (1)";

fn file(dir: &std::path::Path) -> Connection {
    Connection::open(dir.join(DB_FILE)).unwrap()
}

fn rows(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM one", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn migrations_apply_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file(dir.path());
    migrations::migrate(&mut conn, &[CREATE]).unwrap();
    assert_eq!(migrations::version(&conn).unwrap(), 1);

    // A newer build brings one more script; only that one runs.
    migrations::migrate(&mut conn, &[CREATE, INSERT]).unwrap();
    assert_eq!(migrations::version(&conn).unwrap(), 2);
    assert_eq!(rows(&conn), 1);

    // Nothing runs again, whether on the same connection or a new one.
    migrations::migrate(&mut conn, &[CREATE, INSERT]).unwrap();
    drop(conn);
    let mut conn = file(dir.path());
    migrations::migrate(&mut conn, &[CREATE, INSERT]).unwrap();
    assert_eq!(rows(&conn), 1);
}

#[test]
fn a_failing_migration_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file(dir.path());
    let broken = "CREATE TABLE two (y INTEGER); INSERT INTO nowhere VALUES (1)";
    let err = migrations::migrate(&mut conn, &[CREATE, broken]).unwrap_err();
    assert!(matches!(err, StoreError::Sql(_)), "{err}");
    assert_eq!(migrations::version(&conn).unwrap(), 1);
    let two: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'two'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(two, 0, "the half-applied script was rolled back");
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let conn = file(dir.path());
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let err = Store::setup(file(dir.path()), &[CREATE]).err().unwrap();
    assert!(
        matches!(err, StoreError::TooNew { found: 7, known: 1 }),
        "{err}"
    );
    let conn = file(dir.path());
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the refused file was not switched to WAL");
}

#[test]
fn the_real_schema_applies_and_the_file_is_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let conn = store.lock();
    assert_eq!(
        migrations::version(&conn).unwrap(),
        migrations::known(migrations::MIGRATIONS)
    );
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1, "NORMAL");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "actions",
            "approvals",
            "attempts",
            "audit",
            "computers",
            "control",
            "events",
            "goal_status",
            "knowledge",
            "observations",
            "proposals",
            "pruning",
            "revisions",
            "spend",
            "status",
            "tasks"
        ]
    );
}

#[test]
fn stored_names_are_the_serde_names() {
    for state in TaskState::ALL {
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            json!(state_name(state))
        );
        assert_eq!(state_from_name(state_name(state)), Some(state));
    }
    for priority in [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ] {
        assert_eq!(
            serde_json::to_value(priority).unwrap(),
            json!(priority.as_str())
        );
        assert_eq!(priority_from_name(priority.as_str()), Some(priority));
    }
    assert_eq!(state_from_name("Queued"), None);
}

#[test]
fn times_round_trip_exactly_and_sort_as_text() {
    let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456789Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(time_text(t), "2026-03-04T05:06:07.123456789Z");
    assert_eq!(parse_time(0, &time_text(t)).unwrap(), t);
    let whole = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(time_text(whole), "2026-03-04T05:06:07.000000000Z");

    let times = [
        DateTime::<Utc>::MIN_UTC,
        DateTime::from_timestamp(0, 0).unwrap(),
        whole,
        t,
        DateTime::from_timestamp(253_402_300_799, 0).unwrap(),
        DateTime::<Utc>::MAX_UTC,
    ];
    for pair in times.windows(2) {
        assert!(time_text(pair[0]) <= time_text(pair[1]), "{pair:?}");
    }
    assert_eq!(
        time_text(DateTime::<Utc>::MAX_UTC).len(),
        time_text(t).len()
    );
    assert_eq!(
        time_text(DateTime::<Utc>::MIN_UTC).len(),
        time_text(t).len()
    );
}

#[test]
fn the_event_log_is_append_only() {
    let store = Store::in_memory().unwrap();
    let now = Utc::now();
    store
        .event(
            None,
            None,
            super::EventKind::RevisionApplied,
            &json!({}),
            now,
        )
        .unwrap();
    let conn = store.lock();
    assert!(conn.execute("UPDATE events SET kind = 'x'", []).is_err());
    assert!(conn.execute("DELETE FROM events", []).is_err());
}

#[test]
fn a_poisoned_lock_still_serves() {
    let store = std::sync::Arc::new(Store::in_memory().unwrap());
    let held = store.clone();
    let _ = std::thread::spawn(move || {
        let _conn = held.lock();
        panic!("poison the lock");
    })
    .join();
    assert!(store.conn.is_poisoned());
    assert!(store.tasks().unwrap().is_empty());
}

#[test]
fn version_2_finds_the_parents_of_delegated_tasks_by_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file(dir.path());
    migrations::migrate(&mut conn, &migrations::MIGRATIONS[..1]).unwrap();
    for key in ["g@1", "g@1/3:writer", "g@1/3:writer/1:tester", "h@2"] {
        conn.execute(
            "INSERT INTO tasks (key, goal, product, owner, priority, state, attempts,
                 max_attempts, not_before, created_at, updated_at, revision)
             VALUES (?1, 'g', 'p', 'ceo', 'high', 'succeeded', 1, 1, 't', 't', 't', 'r')",
            [key],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO attempts (task, number, computer, started_at, finished_at, outcome)
         VALUES (1, 1, 'here', 't', 't', 'succeeded')",
        [],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(dir.path()).unwrap();
    let conn = store.lock();
    let parents: Vec<(String, Option<i64>)> = conn
        .prepare("SELECT key, parent FROM tasks ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        parents,
        vec![
            ("g@1".to_string(), None),
            ("g@1/3:writer".to_string(), Some(1)),
            ("g@1/3:writer/1:tester".to_string(), Some(2)),
            ("h@2".to_string(), None),
        ]
    );
    let attempts: i64 = conn
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 1, "attempts survive the table's rebuild");
}

use crate::test_rng::Rng;

fn new_task(key: &str, parent: Option<TaskId>) -> NewTask {
    let goal = key.split('@').next().unwrap_or(key).to_string();
    NewTask {
        key: key.into(),
        goal,
        product: "app".into(),
        owner: "ceo".into(),
        priority: Priority::Medium,
        max_attempts: 3,
        revision: "r1".into(),
        parent,
    }
}

/// What a reader of [`Store::observed_since`] holds: each goal's check and tasks, as the
/// changes it took in say.
#[derive(Default)]
struct Replica {
    cursor: Option<ObservedCursor>,
    goals: BTreeMap<String, (Option<GoalObservation>, Vec<TaskObservation>)>,
    rebuilt: usize,
}

impl Replica {
    fn catch_up(&mut self, store: &Store) {
        let (cursor, changes) = store.observed_since(self.cursor).unwrap();
        self.cursor = Some(cursor);
        match changes {
            crate::plan::Changes::All(observed) => {
                self.rebuilt += 1;
                *self = Replica {
                    cursor: self.cursor,
                    rebuilt: self.rebuilt,
                    ..Replica::from(&observed)
                };
            }
            crate::plan::Changes::Goals(goals) => {
                for change in goals {
                    self.goals
                        .insert(change.goal, (change.observation, change.tasks));
                }
            }
        }
        self.goals
            .retain(|_, (o, tasks)| o.is_some() || !tasks.is_empty());
    }

    fn from(observed: &Observed) -> Replica {
        let mut replica = Replica::default();
        for (goal, o) in &observed.goals {
            replica.goals.entry(goal.clone()).or_default().0 = Some(o.clone());
        }
        for task in &observed.tasks {
            replica
                .goals
                .entry(task.goal.clone())
                .or_default()
                .1
                .push(task.clone());
        }
        replica
    }
}

/// The view a store keeps as it goes, against one built from the tables afresh.
fn assert_view_matches_tables(store: &Store, dir: &std::path::Path, step: usize) {
    let kept = store.observed().unwrap();
    let fresh = Store::open(dir).unwrap().observed().unwrap();
    assert_eq!(kept, fresh, "step {step}");
    let open: Vec<TaskId> = store.open_tasks().unwrap().iter().map(|t| t.id).collect();
    let mut expected: Vec<TaskId> = Store::open(dir)
        .unwrap()
        .tasks()
        .unwrap()
        .into_iter()
        .filter(|t| t.parent.is_none() && t.state.is_live())
        .map(|t| t.id)
        .collect();
    expected.sort_unstable();
    assert_eq!(open, expected, "step {step}");
}

/// The view's index of the queue answers what a walk of the queued top-level tasks would.
fn assert_queue_matches_tables(store: &Store, now: DateTime<Utc>, step: usize) {
    let queued: Vec<Task> = store
        .tasks()
        .unwrap()
        .into_iter()
        .filter(|t| t.parent.is_none() && t.state == TaskState::Queued)
        .collect();
    for at in [-90, 0, 1, 90].map(|s| now + chrono::Duration::seconds(s)) {
        let products = queued.iter().map(|t| t.product.clone()).collect();
        let next = queued
            .iter()
            .map(|t| t.not_before)
            .filter(|&t| t > at)
            .min();
        assert_eq!(
            store.queue_shape(at).unwrap(),
            (products, next),
            "the queue at step {step}"
        );
        let mut ready: Vec<&Task> = queued.iter().filter(|t| t.not_before <= at).collect();
        ready.sort_by_key(|t| (t.priority, t.id));
        let ready: Vec<TaskId> = ready.iter().map(|t| t.id).collect();
        let ours: Vec<TaskId> = store.ready(at).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ours, ready, "the ready tasks at step {step}");
    }
}

#[test]
fn the_kept_view_equals_the_tables_through_random_transitions() {
    for seed in [1_u64, 7, 42, 1234, 98_765] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Built first, so every later change must reach it by the transitions themselves.
        store.observed().unwrap();
        // A reader of the changes only, as the incremental planner is.
        let mut replica = Replica::default();
        replica.catch_up(&store);
        let mut rng = Rng(seed);
        let keys = ["a@1", "a@2", "b@1", "c@1", "c@9"];
        let mut now = Utc::now();
        for step in 0..300 {
            now += chrono::Duration::seconds(1);
            let key = keys[rng.below(keys.len())];
            let ids: Vec<TaskId> = store.tasks().unwrap().iter().map(|t| t.id).collect();
            let pick = |rng: &mut Rng| ids.get(rng.below(ids.len().max(1))).copied();
            // Transitions that do not apply to the task's state fail; the view must still hold.
            match rng.below(10) {
                0 | 1 => {
                    // Any priority: the ready tasks are read in dispatch order.
                    let priorities = [Priority::Low, Priority::Critical, Priority::Medium];
                    let task = NewTask {
                        priority: priorities[rng.below(priorities.len())],
                        ..new_task(key, None)
                    };
                    store.enqueue(&task, now).unwrap();
                }
                2 => {
                    let parent = pick(&mut rng);
                    store.enqueue(&new_task(key, parent), now).unwrap();
                }
                3 => {
                    if let Some(id) = pick(&mut rng) {
                        let _ = store.start(id, "here", now);
                    }
                }
                4 | 5 => {
                    if let Some(id) = pick(&mut rng) {
                        let outcome = if rng.below(2) == 0 {
                            AttemptOutcome::Succeeded {
                                detail: "ok".into(),
                                delivered: None,
                            }
                        } else {
                            AttemptOutcome::Failed { error: "no".into() }
                        };
                        let _ = store.finish(id, &outcome, now, now);
                    }
                }
                6 => {
                    if let Some(id) = pick(&mut rng) {
                        let _ = store.cancel(id, "gone", now);
                    }
                }
                7 => {
                    if let Some(id) = pick(&mut rng) {
                        let _ = store.stall(id, "stuck", now);
                    }
                }
                8 => {
                    let _ = store.retry(key.split('@').next().unwrap(), now);
                    if let Some(id) = pick(&mut rng) {
                        let _ = store.interrupt(id, now);
                    }
                }
                _ => {
                    let observation = GoalObservation {
                        passed: rng.below(2) == 0,
                        checked_at: now,
                        key: key.into(),
                    };
                    store
                        .observe(key.split('@').next().unwrap(), &observation, "d")
                        .unwrap();
                }
            }
            if step % 10 == 0 {
                store.recover_interrupted(now).unwrap();
            }
            assert_view_matches_tables(&store, dir.path(), step);
            assert_queue_matches_tables(&store, now, step);
            replica.catch_up(&store);
            let fresh = Replica::from(&Store::open(dir.path()).unwrap().observed().unwrap());
            assert_eq!(replica.goals, fresh.goals, "changes at step {step}");
        }
        assert_eq!(
            replica.rebuilt, 1,
            "one connection: the changes alone, after the first"
        );
    }
}

#[test]
fn a_reader_of_changes_gets_everything_again_after_another_process_commits() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Store::open(dir.path()).unwrap();
    let (cursor, _) = controller.observed_since(None).unwrap();
    let now = Utc::now();
    controller.enqueue(&new_task("a@1", None), now).unwrap();
    let (cursor, changes) = controller.observed_since(Some(cursor)).unwrap();
    match changes {
        crate::plan::Changes::Goals(goals) => {
            let names: Vec<&str> = goals.iter().map(|g| g.goal.as_str()).collect();
            assert_eq!(names, ["a"]);
        }
        all => panic!("{all:?}"),
    }
    Store::open(dir.path())
        .unwrap()
        .enqueue(&new_task("z@1", None), now)
        .unwrap();
    let (_, changes) = controller.observed_since(Some(cursor)).unwrap();
    assert!(
        matches!(changes, crate::plan::Changes::All(_)),
        "{changes:?}"
    );
}

#[test]
fn a_change_another_process_commits_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    let id = controller
        .enqueue(&new_task("a@1", None), now)
        .unwrap()
        .unwrap();
    controller.start(id, "here", now).unwrap();
    controller
        .finish(id, &AttemptOutcome::Failed { error: "no".into() }, now, now)
        .unwrap();
    controller.stall(id, "stuck", now).unwrap();
    assert_eq!(controller.open_tasks().unwrap().len(), 0);
    // `proto retry a` from another process, on its own connection.
    let cli = Store::open(dir.path()).unwrap();
    assert_eq!(cli.retry("a", now).unwrap(), Some(id));
    let open = controller.open_tasks().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, TaskState::Queued);
    // What the loop sleeps on: the product waits, and nothing comes due later than now.
    let (products, due) = controller.queue_shape(now).unwrap();
    assert_eq!(products.into_iter().collect::<Vec<_>>(), ["app"]);
    assert_eq!(due, None);
    let (_, due) = controller
        .queue_shape(now - chrono::Duration::seconds(5))
        .unwrap();
    assert_eq!(due, Some(open[0].not_before));
    assert_view_matches_tables(&controller, dir.path(), 0);
}

#[test]
fn version_4_lets_only_pruning_delete_from_an_older_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = file(dir.path());
    migrations::migrate(&mut conn, &migrations::MIGRATIONS[..3]).unwrap();
    conn.execute(
        "INSERT INTO events (time, kind, data) VALUES ('2026-01-01T00:00:00.000000000Z', 'old', '{}')",
        [],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(dir.path()).unwrap();
    {
        let conn = store.lock();
        assert!(conn.execute("DELETE FROM events", []).is_err());
        let auto_vacuum: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(auto_vacuum, 0, "an existing file keeps its mode");
    }
    let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let pruned = store.prune(&Retention::default(), now).unwrap();
    assert_eq!(pruned.events, 1);
    assert!(store.events(0, 10).unwrap().is_empty());
}

#[test]
fn kept_spending_equals_the_tables_through_random_spends() {
    for seed in [3_u64, 11, 2024] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day = Utc::now()
            .date_naive()
            .and_hms_opt(20, 0, 0)
            .unwrap()
            .and_utc();
        let mut tasks = Vec::new();
        for key in ["a@1", "b@1", "c@1"] {
            tasks.push(store.enqueue(&new_task(key, None), day).unwrap().unwrap());
        }
        let mut rng = Rng(seed);
        let mut now = day;
        for step in 0..200 {
            // Across midnight: the day's sum starts again.
            now += chrono::Duration::minutes(2);
            let task = tasks[rng.below(tasks.len())];
            // Quarters add up exactly, in any order.
            let usd = rng.below(4) as f64 * 0.25;
            match rng.below(4) {
                0 => store.spend(task, "ceo", "m", 1, 1, usd, now).unwrap(),
                1 => {
                    let cost = Cost {
                        agent: "ceo",
                        model: "m",
                        input_tokens: 1,
                        output_tokens: 1,
                        usd,
                    };
                    store
                        .record(
                            &StepRecord {
                                task,
                                goal: "ignored: the task's own goal counts",
                                entry: Entry::None,
                                cost: Some(cost),
                                audit: None,
                                activity: None,
                            },
                            now,
                        )
                        .unwrap();
                }
                // Another process spends: the next read goes back to the tables.
                2 => Store::open(dir.path())
                    .unwrap()
                    .spend(task, "ceo", "m", 1, 1, usd, now)
                    .unwrap(),
                _ => {}
            }
            let at = now + chrono::Duration::minutes(rng.below(3) as i64);
            let fresh = Store::open(dir.path()).unwrap().spending(at).unwrap();
            assert_eq!(
                store.spending(at).unwrap(),
                fresh,
                "seed {seed}, step {step}"
            );
        }
    }
}
