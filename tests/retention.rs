//! Retention against real SQLite files: old events and journals of finished tasks go, by
//! age and by the per-goal cap; nothing of a queued, running or waiting task (or of work
//! delegated under one) ever does; written-back audit rows go, pending ones stay; and the
//! event log still refuses every UPDATE and every DELETE that is not the store's pruning.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use proto::spec::Priority;
use proto::store::{
    AttemptOutcome, AuditRecord, Entry, EventKind, NewTask, Pruned, Retention, StepRecord, Store,
    TaskId,
};
use serde_json::json;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn day(n: i64) -> DateTime<Utc> {
    t0() + Duration::days(n)
}

fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("proto.db")).unwrap()
}

fn task(store: &Store, goal: &str, parent: Option<TaskId>, at: DateTime<Utc>) -> TaskId {
    store
        .enqueue(
            &NewTask {
                key: format!("{goal}@{}", parent.map_or(String::new(), |p| p.to_string())),
                goal: goal.into(),
                product: "shop".into(),
                owner: "ceo".into(),
                priority: Priority::Medium,
                max_attempts: 1,
                revision: "r1".into(),
                parent,
            },
            at,
        )
        .unwrap()
        .unwrap()
}

/// Journals step `step` of `task` whole at `at`, with an activity event under `goal`.
fn step(store: &Store, task: TaskId, goal: &str, step: u32, at: DateTime<Utc>) {
    let input = json!({ "file_path": "README.md" });
    let outcome = json!({ "content": "# Shop" });
    let activity = proto::store::activity::Activity::Tool {
        agent: "ceo".into(),
        call: "Read(README.md)".into(),
        step,
        ok: true,
        error: None,
    };
    store
        .record(
            &StepRecord {
                task,
                goal,
                entry: Entry::Whole {
                    step,
                    tool: "Read",
                    input: &input,
                    outcome: &outcome,
                    started_at: at,
                },
                cost: None,
                audit: None,
                activity: Some(&activity),
            },
            at,
        )
        .unwrap();
}

fn succeed(store: &Store, task: TaskId, at: DateTime<Utc>) {
    store
        .finish(
            task,
            &AttemptOutcome::Succeeded {
                detail: "check passed".into(),
                delivered: None,
            },
            at,
            at,
        )
        .unwrap();
}

fn events_of(store: &Store, task: TaskId) -> usize {
    store
        .events(0, 100_000)
        .unwrap()
        .iter()
        .filter(|e| e.task == Some(task))
        .count()
}

fn journal_of(store: &Store, task: TaskId, steps: u32) -> usize {
    (0..steps)
        .filter(|s| store.action(task, *s).unwrap().is_some())
        .count()
}

fn by_age(days: i64) -> Retention {
    Retention {
        max_age: Some(Duration::days(days)),
        per_goal: None,
    }
}

#[test]
fn old_events_and_journals_of_finished_tasks_go_and_a_running_tasks_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Worked and finished long ago.
    let done = task(&store, "old", None, day(0));
    store.start(done, "local", day(0)).unwrap();
    for s in 0..5 {
        step(&store, done, "old", s, day(1));
    }
    succeed(&store, done, day(2));
    // Started as long ago, still running, with work delegated under it; and one queued.
    let running = task(&store, "long", None, day(0));
    store.start(running, "local", day(0)).unwrap();
    for s in 0..5 {
        step(&store, running, "long", s, day(1));
    }
    let child = task(&store, "long", Some(running), day(1));
    store.start(child, "local", day(1)).unwrap();
    step(&store, child, "long", 0, day(1));
    succeed(&store, child, day(1));
    let queued = task(&store, "later", None, day(0));
    // Goal-less events (a revision applied) age like the rest.
    store
        .event(None, None, EventKind::RevisionApplied, &json!({}), day(1))
        .unwrap();
    store
        .event(None, None, EventKind::RevisionApplied, &json!({}), day(99))
        .unwrap();
    let before = (events_of(&store, running), events_of(&store, child));

    let pruned = store.prune(&by_age(30), day(100)).unwrap();

    assert_eq!(events_of(&store, done), 0, "the finished task's events");
    assert_eq!(
        journal_of(&store, done, 5),
        0,
        "the finished task's journal"
    );
    assert_eq!(
        (events_of(&store, running), events_of(&store, child)),
        before
    );
    assert_eq!(
        journal_of(&store, running, 5),
        5,
        "the running task's journal"
    );
    assert_eq!(
        journal_of(&store, child, 1),
        1,
        "its delegated child's journal"
    );
    assert_eq!(events_of(&store, queued), 1, "the queued task's");
    let revisions: Vec<DateTime<Utc>> = store
        .events(0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::RevisionApplied)
        .map(|e| e.time)
        .collect();
    assert_eq!(revisions, [day(99)]);
    // queued + started + 5 steps + succeeded, and one revision.
    assert_eq!(
        pruned,
        Pruned {
            events: 9,
            actions: 5,
            audit: 0
        }
    );
    // The tasks and their spend are never pruned.
    assert_eq!(store.tasks().unwrap().len(), 4);

    // Once the task is over, its history ages like any other.
    succeed(&store, running, day(100));
    store.prune(&by_age(30), day(200)).unwrap();
    assert_eq!(events_of(&store, running), 0);
    assert_eq!(journal_of(&store, running, 5), 0);
    assert_eq!(journal_of(&store, child, 1), 0);
}

#[test]
fn each_goal_keeps_its_newest_events_up_to_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let busy = task(&store, "busy", None, day(0));
    store.start(busy, "local", day(0)).unwrap();
    for s in 0..20 {
        step(&store, busy, "busy", s, day(1));
    }
    succeed(&store, busy, day(1));
    let quiet = task(&store, "quiet", None, day(0));
    store.start(quiet, "local", day(0)).unwrap();
    step(&store, quiet, "quiet", 0, day(1));
    succeed(&store, quiet, day(1));
    let cap = Retention {
        max_age: None,
        per_goal: Some(5),
    };

    store.prune(&cap, day(2)).unwrap();

    let kinds = |goal: &str| -> Vec<EventKind> {
        store
            .recent_events(goal, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    };
    let busy_kinds = kinds("busy");
    assert_eq!(busy_kinds.len(), 5);
    assert_eq!(
        busy_kinds.last().unwrap(),
        &EventKind::TaskSucceeded,
        "the newest stay"
    );
    assert_eq!(kinds("quiet").len(), 4, "a goal under the cap keeps all");
    assert_eq!(
        journal_of(&store, busy, 20),
        5,
        "and as many journal entries"
    );
    assert!(store.action(busy, 19).unwrap().is_some());

    // A live task keeps everything over the cap too.
    let live = task(&store, "live", None, day(3));
    store.start(live, "local", day(3)).unwrap();
    for s in 0..20 {
        step(&store, live, "live", s, day(3));
    }
    store.prune(&cap, day(4)).unwrap();
    assert_eq!(events_of(&store, live), 22);
    assert_eq!(journal_of(&store, live, 20), 20);
}

#[test]
fn written_back_audit_rows_age_out_and_pending_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let record = |time| AuditRecord {
        id: 0,
        time,
        agent: "ceo".into(),
        goal: Some("g".into()),
        task: None,
        action: "run".into(),
        input: json!({}),
        outcome: json!({}),
        diff: None,
    };
    let written = store.audit(&record(day(0))).unwrap();
    let pending = store.audit(&record(day(0))).unwrap();
    let recent = store.audit(&record(day(90))).unwrap();
    store.audit_written(&[written, recent], "abc123").unwrap();

    assert_eq!(store.prune(&by_age(30), day(100)).unwrap().audit, 1);

    let conn = raw(dir.path());
    let left: Vec<i64> = conn
        .prepare("SELECT id FROM audit ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, [pending, recent]);
    // Ids are never handed out again: writeback tells records apart by id.
    assert!(store.audit(&record(day(100))).unwrap() > recent);
}

#[test]
fn the_event_log_refuses_changes_outside_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .event(None, None, EventKind::RevisionApplied, &json!({}), day(0))
        .unwrap();
    store
        .event(None, None, EventKind::RevisionApplied, &json!({}), day(50))
        .unwrap();
    let conn = raw(dir.path());
    let refused = |conn: &rusqlite::Connection| {
        for sql in [
            "UPDATE events SET kind = 'forged'",
            "DELETE FROM events",
            "DELETE FROM events WHERE kind = 'RevisionApplied'",
        ] {
            let err = conn.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
    };
    refused(&conn);

    assert_eq!(store.prune(&by_age(30), day(51)).unwrap().events, 1);

    // The guard was only ever set inside the pruning's own transactions.
    let guards: i64 = conn
        .query_row("SELECT COUNT(*) FROM pruning", [], |r| r.get(0))
        .unwrap();
    assert_eq!(guards, 0);
    refused(&conn);
    assert_eq!(store.events(0, 10).unwrap().len(), 1);
}

#[test]
fn pruning_runs_at_most_once_an_hour() {
    let store = Store::in_memory().unwrap();
    let policy = Retention::default();
    assert_eq!(
        policy,
        Retention {
            max_age: Some(Duration::days(30)),
            per_goal: Some(1_000)
        }
    );
    assert!(store.prune_if_due(&policy, day(0)).unwrap().is_some());
    let writes = store.write_count();
    assert!(
        store
            .prune_if_due(&policy, day(0) + Duration::minutes(59))
            .unwrap()
            .is_none()
    );
    assert_eq!(store.write_count(), writes, "not due: nothing written");
    store
        .event(None, None, EventKind::RevisionApplied, &json!({}), day(0))
        .unwrap();
    let pruned = store
        .prune_if_due(&policy, day(31) + Duration::hours(1))
        .unwrap();
    assert_eq!(pruned.map(|p| p.events), Some(1));
}

#[test]
fn a_new_store_gives_pruned_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = json!({ "text": "x".repeat(4_000) });
    for _ in 0..500 {
        store
            .event(None, None, EventKind::RevisionApplied, &data, day(0))
            .unwrap();
    }
    let pages = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap()
    };
    let conn = raw(dir.path());
    let auto_vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
    let full = pages(&conn);
    assert_eq!(store.prune(&by_age(30), day(31)).unwrap().events, 500);
    let after = pages(&conn);
    assert!(after * 4 < full, "{full} pages before, {after} after");
}
