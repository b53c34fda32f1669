//! The durable store against real SQLite files: the queue's semantics, the act() journal
//! and audit, migrations on open, refusal of a newer database, recovery after a crash, and
//! use from several threads and connections at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use proto::computer::Kind;
use proto::computer::health::Health;
use proto::plan::{GoalObservation, TaskState};
use proto::spec::Priority;
use proto::store::{
    AttemptOutcome, AuditRecord, ComputerRecord, EventKind, NewTask, Store, StoreError, TaskId,
};
use serde_json::json;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00.000000001Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(seconds)
}

fn new_task(goal: &str, priority: Priority) -> NewTask {
    NewTask {
        key: format!("{goal}@000000000001"),
        goal: goal.to_string(),
        product: "shop".into(),
        owner: "ceo".into(),
        priority,
        max_attempts: 3,
        revision: "abc123".into(),
        parent: None,
    }
}

fn failed(error: &str) -> AttemptOutcome {
    AttemptOutcome::Failed {
        error: error.into(),
    }
}

fn succeeded() -> AttemptOutcome {
    AttemptOutcome::Succeeded {
        detail: "check passed".into(),
        delivered: Some("0123456789abcdef0123456789abcdef01234567".into()),
    }
}

fn audit_record(action: &str, task: Option<TaskId>) -> AuditRecord {
    AuditRecord {
        id: 0,
        time: at(1),
        agent: "ceo".into(),
        goal: Some("a".into()),
        task,
        action: action.into(),
        input: json!({ "command": "ls" }),
        outcome: json!({ "exit": 0 }),
        diff: None,
    }
}

fn kinds(store: &Store, task: TaskId) -> Vec<EventKind> {
    store
        .events(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.task == Some(task))
        .map(|e| e.kind)
        .collect()
}

fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("proto.db")).unwrap()
}

#[test]
fn enqueue_is_idempotent_while_a_task_is_live_or_stalled() {
    let store = Store::in_memory().unwrap();
    let task = new_task("a", Priority::High);
    let id = store.enqueue(&task, at(0)).unwrap().unwrap();
    assert_eq!(store.enqueue(&task, at(1)).unwrap(), None, "queued blocks");

    let stored = store.task(id).unwrap();
    assert_eq!(stored.key, task.key);
    assert_eq!(stored.state, TaskState::Queued);
    assert_eq!(stored.priority, Priority::High);
    assert_eq!((stored.attempts, stored.max_attempts), (0, 3));
    assert_eq!(stored.created_at, at(0), "times round-trip exactly");
    assert_eq!(stored.not_before, at(0));
    assert_eq!(stored.revision, "abc123");
    assert_eq!((stored.computer, stored.last_error), (None, None));

    store.start(id, "local", at(2)).unwrap();
    assert_eq!(store.enqueue(&task, at(3)).unwrap(), None, "running blocks");
    store.finish(id, &succeeded(), at(9), at(4)).unwrap();
    let second = store.enqueue(&task, at(5)).unwrap().unwrap();
    assert_ne!(second, id, "succeeded does not block");

    store.cancel(second, "the goal changed", at(6)).unwrap();
    let third = store.enqueue(&task, at(7)).unwrap().unwrap();

    // Fail it out, then stall it: stalled blocks until retried.
    for i in 0..3 {
        store.start(third, "local", at(10 + i)).unwrap();
        store
            .finish(third, &failed("still red"), at(10 + i), at(10 + i))
            .unwrap();
    }
    assert_eq!(store.task(third).unwrap().state, TaskState::Failed);
    let fourth = store.enqueue(&task, at(20)).unwrap().unwrap();
    assert_eq!(store.enqueue(&task, at(20)).unwrap(), None);
    store.cancel(fourth, "dropped", at(21)).unwrap();
    store
        .stall(third, "3 of 3 attempts failed", at(22))
        .unwrap();
    assert_eq!(
        store.enqueue(&task, at(23)).unwrap(),
        None,
        "stalled blocks"
    );

    // Another key is another task.
    let mut edited = task.clone();
    edited.key = "a@000000000002".into();
    assert!(store.enqueue(&edited, at(24)).unwrap().is_some());
    assert_eq!(store.tasks().unwrap().len(), 5);
    assert_eq!(
        store
            .tasks()
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
            .first(),
        Some(&store.tasks().unwrap().iter().map(|t| t.id).max().unwrap()),
        "newest first"
    );
}

#[test]
fn ready_orders_by_priority_then_creation_and_respects_not_before() {
    let store = Store::in_memory().unwrap();
    let low = store
        .enqueue(&new_task("low", Priority::Low), at(0))
        .unwrap()
        .unwrap();
    let crit1 = store
        .enqueue(&new_task("crit1", Priority::Critical), at(1))
        .unwrap()
        .unwrap();
    let med = store
        .enqueue(&new_task("med", Priority::Medium), at(2))
        .unwrap()
        .unwrap();
    let high = store
        .enqueue(&new_task("high", Priority::High), at(3))
        .unwrap()
        .unwrap();
    let crit2 = store
        .enqueue(&new_task("crit2", Priority::Critical), at(4))
        .unwrap()
        .unwrap();
    // Created later than crit2, in the same instant as others: order is creation, not time.
    let high2 = store
        .enqueue(&new_task("high2", Priority::High), at(0))
        .unwrap()
        .unwrap();

    let ids = |now| {
        store
            .ready(now)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(at(10)), [crit1, crit2, high, high2, med, low]);
    assert_eq!(
        ids(at(2)),
        [crit1, high2, med, low],
        "not yet created is not ready"
    );

    // A failed attempt puts crit1 back with a not-before time; running ones are not ready.
    store.start(crit1, "local", at(10)).unwrap();
    store.start(high, "local", at(10)).unwrap();
    assert_eq!(ids(at(10)), [crit2, high2, med, low]);
    let task = store.finish(crit1, &failed("red"), at(60), at(11)).unwrap();
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(task.not_before, at(60));
    assert_eq!(ids(at(59)), [crit2, high2, med, low]);
    assert_eq!(
        ids(at(60)),
        [crit1, crit2, high2, med, low],
        "not_before <= now"
    );
}

#[test]
fn failures_retry_with_backoff_until_attempts_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();

    store.start(id, "box-1", at(1)).unwrap();
    let running = store.task(id).unwrap();
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.computer.as_deref(), Some("box-1"));
    assert_eq!(running.attempts, 0, "an attempt counts once finished");

    let task = store.finish(id, &failed("first"), at(30), at(2)).unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Queued, 1));
    assert_eq!(task.not_before, at(30));
    assert_eq!(task.last_error.as_deref(), Some("first"));
    assert!(store.ready(at(29)).unwrap().is_empty());

    store.start(id, "box-2", at(30)).unwrap();
    let task = store.finish(id, &failed("second"), at(90), at(31)).unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Queued, 2));

    store.start(id, "box-1", at(90)).unwrap();
    let task = store.finish(id, &failed("third"), at(200), at(91)).unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Failed, 3));
    assert_eq!(task.last_error.as_deref(), Some("third"));
    assert!(store.ready(at(1000)).unwrap().is_empty());

    let err = store
        .finish(id, &failed("again"), at(0), at(92))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::State {
                state: TaskState::Failed,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        kinds(&store, id),
        [
            EventKind::TaskQueued,
            EventKind::TaskStarted,
            EventKind::TaskRetrying,
            EventKind::TaskStarted,
            EventKind::TaskRetrying,
            EventKind::TaskStarted,
            EventKind::TaskFailed
        ]
    );
    let retrying = &store.events(0, 100).unwrap()[2];
    assert_eq!(retrying.data["attempt"], 1);
    assert_eq!(retrying.data["error"], "first");
    assert_eq!(retrying.goal.as_deref(), Some("a"));

    let attempts: Vec<(i64, String, String)> = raw(dir.path())
        .prepare("SELECT number, computer, outcome FROM attempts WHERE task = ?1 ORDER BY id")
        .unwrap()
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        attempts,
        [
            (1, "box-1".into(), "failed".into()),
            (2, "box-2".into(), "failed".into()),
            (3, "box-1".into(), "failed".into()),
        ]
    );

    let planned = store.observed().unwrap();
    assert_eq!(planned.tasks.len(), 1);
    assert_eq!(planned.tasks[0].state, TaskState::Failed);
    assert_eq!(planned.tasks[0].attempts, 3);
}

#[test]
fn success_ends_the_task() {
    let store = Store::in_memory().unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    store.start(id, "local", at(1)).unwrap();
    let task = store.finish(id, &succeeded(), at(99), at(2)).unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Succeeded, 1));
    assert_eq!(task.updated_at, at(2));
    assert_eq!(task.not_before, at(0));
    assert_eq!(kinds(&store, id).last().unwrap(), &EventKind::TaskSucceeded);
    let err = store.start(id, "local", at(3)).unwrap_err();
    assert!(matches!(err, StoreError::State { .. }), "{err}");
    assert!(matches!(store.task(999), Err(StoreError::NoTask(999))));
    assert!(matches!(
        store.start(999, "local", at(0)),
        Err(StoreError::NoTask(999))
    ));
}

#[test]
fn interrupted_attempts_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    let b = store
        .enqueue(&new_task("b", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    let c = store
        .enqueue(&new_task("c", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    store.start(a, "local", at(1)).unwrap();
    store.finish(a, &failed("red"), at(2), at(2)).unwrap();
    store.start(a, "local", at(3)).unwrap();
    store.start(b, "local", at(3)).unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.recover_interrupted(at(10)).unwrap(), [a, b]);
    assert_eq!(
        store.recover_interrupted(at(11)).unwrap(),
        Vec::<TaskId>::new()
    );
    let task = store.task(a).unwrap();
    assert_eq!((task.state, task.attempts), (TaskState::Queued, 1));
    assert_eq!(store.task(b).unwrap().attempts, 0);
    assert_eq!(store.task(c).unwrap().state, TaskState::Queued);
    assert_eq!(
        kinds(&store, b),
        [
            EventKind::TaskQueued,
            EventKind::TaskStarted,
            EventKind::TaskInterrupted
        ]
    );

    // The interrupted attempt's number is used again by the next start.
    store.start(a, "local", at(12)).unwrap();
    let attempts: Vec<(i64, String)> = raw(dir.path())
        .prepare("SELECT number, outcome FROM attempts WHERE task = ?1 ORDER BY id")
        .unwrap()
        .query_map([a], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        attempts,
        [
            (1, "failed".into()),
            (2, "interrupted".into()),
            (2, "running".into())
        ]
    );
}

#[test]
fn cancel_stall_and_retry() {
    let store = Store::in_memory().unwrap();
    let a = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    store.start(a, "local", at(1)).unwrap();
    store.cancel(a, "the goal was removed", at(2)).unwrap();
    assert_eq!(store.task(a).unwrap().state, TaskState::Cancelled);
    store.cancel(a, "again", at(3)).unwrap();
    assert_eq!(
        kinds(&store, a),
        [
            EventKind::TaskQueued,
            EventKind::TaskStarted,
            EventKind::TaskCancelled
        ],
        "cancelling twice is one transition"
    );
    // The worker that was running it learns it was cancelled.
    let err = store.finish(a, &succeeded(), at(4), at(4)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::State {
                state: TaskState::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(
        store.retry("a", at(5)).unwrap(),
        None,
        "cancelled is not retried"
    );

    // Fail b out and stall it.
    let mut task = new_task("b", Priority::Medium);
    task.max_attempts = 1;
    let b = store.enqueue(&task, at(0)).unwrap().unwrap();
    store.start(b, "local", at(1)).unwrap();
    store.finish(b, &failed("boom"), at(2), at(2)).unwrap();
    store
        .stall(b, "1 of 1 attempts failed; last error: boom", at(3))
        .unwrap();
    let stalled = store.task(b).unwrap();
    assert_eq!(stalled.state, TaskState::Stalled);
    assert_eq!(
        stalled.last_error.as_deref(),
        Some("1 of 1 attempts failed; last error: boom")
    );
    assert_eq!(store.enqueue(&task, at(4)).unwrap(), None);

    assert_eq!(store.retry("b", at(5)).unwrap(), Some(b));
    let retried = store.task(b).unwrap();
    assert_eq!((retried.state, retried.attempts), (TaskState::Queued, 0));
    assert_eq!(retried.not_before, at(5));
    assert_eq!(store.ready(at(5)).unwrap()[0].id, b);
    assert_eq!(
        store.retry("b", at(6)).unwrap(),
        None,
        "live: nothing to retry"
    );
    assert_eq!(store.retry("nope", at(6)).unwrap(), None);

    // The newest dead task of the goal is the one requeued.
    store.start(b, "local", at(7)).unwrap();
    store.finish(b, &failed("boom"), at(8), at(8)).unwrap();
    let newer = store.enqueue(&task, at(9)).unwrap().unwrap();
    store.start(newer, "local", at(9)).unwrap();
    store
        .finish(newer, &failed("boom"), at(10), at(10))
        .unwrap();
    assert_eq!(store.retry("b", at(11)).unwrap(), Some(newer));
    assert_eq!(store.task(b).unwrap().state, TaskState::Failed);

    let err = store.stall(a, "no", at(12)).unwrap_err();
    assert!(matches!(err, StoreError::State { .. }), "{err}");
    let c = store
        .enqueue(&new_task("c", Priority::Low), at(0))
        .unwrap()
        .unwrap();
    store.start(c, "local", at(1)).unwrap();
    store.finish(c, &succeeded(), at(2), at(2)).unwrap();
    let err = store.cancel(c, "too late", at(3)).unwrap_err();
    assert!(matches!(err, StoreError::State { .. }), "{err}");
}

#[test]
fn the_journal_and_its_audit_records() {
    let store = Store::in_memory().unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    assert_eq!(store.action(id, 0).unwrap(), None);

    let standalone = store.audit(&audit_record("check", None)).unwrap();
    let first = store
        .action_started(id, 0, "Bash", &json!({ "command": "make" }), at(1))
        .unwrap();
    let entry = store.action(id, 0).unwrap().unwrap();
    assert_eq!((entry.id, entry.task, entry.step), (first, id, 0));
    assert_eq!(entry.tool, "Bash");
    assert_eq!(entry.input, json!({ "command": "make" }));
    assert_eq!(entry.started_at, at(1));
    assert_eq!((entry.finished_at, entry.outcome), (None, None));

    // A restart journals the unfinished step again: the entry is replaced.
    let second = store
        .action_started(id, 0, "Bash", &json!({ "command": "make all" }), at(2))
        .unwrap();
    assert_ne!(second, first);
    assert_eq!(
        store.action(id, 0).unwrap().unwrap().input["command"],
        "make all"
    );
    assert!(matches!(
        store.action_finished(first, &json!({}), &audit_record("Bash", Some(id)), at(3)),
        Err(StoreError::NoAction(n)) if n == first
    ));

    store
        .action_finished(
            second,
            &json!({ "exit": 0 }),
            &audit_record("Bash", Some(id)),
            at(3),
        )
        .unwrap();
    let entry = store.action(id, 0).unwrap().unwrap();
    assert_eq!(entry.finished_at, Some(at(3)));
    assert_eq!(entry.outcome, Some(json!({ "exit": 0 })));
    // Finishing again queues nothing more.
    store
        .action_finished(
            second,
            &json!({ "exit": 1 }),
            &audit_record("Bash", Some(id)),
            at(4),
        )
        .unwrap();
    assert_eq!(
        store.action(id, 0).unwrap().unwrap().outcome,
        Some(json!({ "exit": 0 }))
    );

    let pending = store.pending_audit().unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].id, standalone);
    assert_eq!(pending[0].action, "check");
    assert_eq!(pending[1].action, "Bash");
    assert_eq!(pending[1].task, Some(id));
    assert_eq!(pending[1].input, json!({ "command": "ls" }));
    assert_eq!(pending[1].time, at(1));
    assert!(pending[0].id < pending[1].id);

    store.audit_written(&[pending[0].id], "c0ffee").unwrap();
    assert_eq!(store.pending_audit().unwrap().len(), 1);
    let later = store.audit(&audit_record("commit", None)).unwrap();
    assert!(later > pending[1].id, "ids keep increasing");
    store
        .audit_written(&[pending[1].id, later], "decade")
        .unwrap();
    assert!(store.pending_audit().unwrap().is_empty());

    store
        .action_started(id, 1, "Read", &json!({}), at(5))
        .unwrap();
    store.clear_actions(id).unwrap();
    assert_eq!(store.action(id, 0).unwrap(), None);
    assert_eq!(store.action(id, 1).unwrap(), None);
    assert!(matches!(
        store.action_started(999, 0, "Bash", &json!({}), at(6)),
        Err(StoreError::NoTask(999))
    ));
}

#[test]
fn a_step_recorded_whole_in_one_transaction() {
    use proto::store::activity::Activity;
    use proto::store::{Cost, Entry, StepRecord};
    let store = Store::in_memory().unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    let activity = Activity::Tool {
        agent: "ceo".into(),
        call: "Bash(make)".into(),
        step: 0,
        ok: true,
        error: None,
    };
    let audit = audit_record("Bash", Some(id));
    let input = json!({ "command": "make" });
    let outcome = json!({ "exit": 0 });
    let cost = Cost {
        agent: "ceo",
        model: "haiku",
        input_tokens: 10,
        output_tokens: 2,
        usd: 0.5,
    };
    let record = |entry, cost| StepRecord {
        task: id,
        goal: "a",
        entry,
        cost,
        audit: Some(&audit),
        activity: Some(&activity),
    };
    let events = |store: &Store| store.events(0, 100).unwrap().len();
    let (writes, logged) = (store.write_count(), events(&store));

    // Opened before an effect, finished with everything else in one transaction.
    let open = store.action_started(id, 0, "Bash", &input, at(1)).unwrap();
    let finish = Entry::Finish {
        action: open,
        outcome: &outcome,
    };
    assert_eq!(
        store
            .record(&record(finish.clone(), Some(cost.clone())), at(2))
            .unwrap(),
        Some(open)
    );
    assert_eq!(store.write_count() - writes, 2);
    let entry = store.action(id, 0).unwrap().unwrap();
    assert_eq!((entry.started_at, entry.finished_at), (at(1), Some(at(2))));
    assert_eq!(entry.outcome, Some(outcome.clone()));
    assert_eq!(store.spend_by_task().unwrap()[&id].calls, 1);
    assert_eq!(store.pending_audit().unwrap().len(), 1);
    assert_eq!(events(&store) - logged, 1);

    // Finishing it again writes nothing more: no second audit, spend or activity.
    store
        .record(&record(finish, Some(cost.clone())), at(3))
        .unwrap();
    assert_eq!(store.spend_by_task().unwrap()[&id].calls, 1);
    assert_eq!(store.pending_audit().unwrap().len(), 1);
    assert_eq!(events(&store) - logged, 1);
    assert_eq!(
        store.action(id, 0).unwrap().unwrap().finished_at,
        Some(at(2))
    );

    // A whole entry replaces an unfinished one of the same step, under a new id.
    let stale = store.action_started(id, 1, "Model", &input, at(4)).unwrap();
    let whole = Entry::Whole {
        step: 1,
        tool: "Model",
        input: &input,
        outcome: &outcome,
        started_at: at(4),
    };
    let fresh = store.record(&record(whole, None), at(5)).unwrap().unwrap();
    assert_ne!(fresh, stale);
    let entry = store.action(id, 1).unwrap().unwrap();
    assert_eq!((entry.id, entry.finished_at), (fresh, Some(at(5))));
    assert!(matches!(
        store.record(
            &record(Entry::Finish { action: stale, outcome: &outcome }, None),
            at(6)
        ),
        Err(StoreError::NoAction(n)) if n == stale
    ));

    // A record that fails leaves nothing behind: the spend of an unknown task is refused.
    let (audited, logged) = (store.pending_audit().unwrap().len(), events(&store));
    let orphan = StepRecord {
        task: 999,
        ..record(Entry::None, Some(cost))
    };
    assert!(matches!(
        store.record(&orphan, at(7)),
        Err(StoreError::NoTask(999))
    ));
    assert_eq!(store.pending_audit().unwrap().len(), audited);
    assert_eq!(events(&store), logged);
}

#[test]
fn observations_events_revisions_computers_and_spend() {
    let store = Store::in_memory().unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::Medium), at(0))
        .unwrap()
        .unwrap();
    let seen = GoalObservation {
        passed: false,
        checked_at: at(1),
        key: "a@000000000001".into(),
    };
    store.observe("a", &seen, "exit 1").unwrap();
    let passed = GoalObservation {
        passed: true,
        checked_at: at(2),
        ..seen.clone()
    };
    store.observe("a", &passed, "exit 0").unwrap();
    store.observe("b", &seen, "exit 1").unwrap();
    let observed = store.observed().unwrap();
    assert_eq!(observed.goals.len(), 2);
    assert_eq!(observed.goals["a"], passed);
    assert_eq!(observed.goals["b"], seen);
    assert_eq!(observed.tasks.len(), 1);
    assert_eq!(observed.tasks[0].key, "a@000000000001");
    assert!(!observed.model_available);

    let first = store.events(0, 10).unwrap();
    assert_eq!(first.len(), 1);
    let e1 = store
        .event(
            Some(id),
            Some("a"),
            EventKind::RevisionApplied,
            &json!({ "n": 1 }),
            at(3),
        )
        .unwrap();
    let e2 = store
        .event(
            None,
            None,
            EventKind::RevisionApplied,
            &json!({ "n": 2 }),
            at(4),
        )
        .unwrap();
    assert!(e2 > e1 && e1 > first[0].id);
    let after = store.events(first[0].id, 1).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].id, after[0].time), (e1, at(3)));
    assert_eq!(after[0].data, json!({ "n": 1 }));
    assert_eq!(store.events(e1, 10).unwrap()[0].task, None);
    assert!(store.events(e2, 10).unwrap().is_empty());

    assert_eq!(store.revisions().unwrap(), Default::default());
    store.record_revision("r1", &[], at(5)).unwrap();
    store
        .record_revision("r2", &["goals/a.yaml:3: bad".into()], at(6))
        .unwrap();
    let revisions = store.revisions().unwrap();
    assert_eq!(revisions.last_attempted.as_deref(), Some("r2"));
    assert_eq!(revisions.last_applied.as_deref(), Some("r1"));
    assert_eq!(revisions.errors, ["goals/a.yaml:3: bad"]);
    store.record_revision("r1", &[], at(7)).unwrap();
    let revisions = store.revisions().unwrap();
    assert_eq!(revisions.last_attempted.as_deref(), Some("r1"));
    assert!(revisions.errors.is_empty());

    let mut health = Health::default();
    health.beat(Ok(()), at(1));
    let web = ComputerRecord::new("web", Kind::Ssh, &health, 1, 2);
    store.record_computer(&web).unwrap();
    store
        .record_computer(&ComputerRecord::new(
            "db",
            Kind::Local,
            &Health::default(),
            0,
            1,
        ))
        .unwrap();
    health.lost("the connection dropped".into(), at(2));
    let lost = ComputerRecord::new("web", Kind::Ssh, &health, 0, 2);
    store.record_computer(&lost).unwrap();
    let db = ComputerRecord::new("db", Kind::Local, &Health::default(), 0, 1);
    assert_eq!(store.computers().unwrap(), [db.clone(), lost]);
    assert_eq!(
        (db.last_seen, web.last_seen, web.healthy),
        (None, Some(at(1)), true)
    );
    store.forget_computers(&["db"]).unwrap();
    assert_eq!(store.computers().unwrap(), [db]);

    assert_eq!(store.spent_on_goal("a").unwrap(), 0.0);
    store
        .spend(id, "ceo", "haiku", 100, 20, 0.25, at(1))
        .unwrap();
    store
        .spend(id, "cto", "opus", u64::MAX, 0, 1.5, at(2))
        .unwrap();
    let other = store
        .enqueue(&new_task("z", Priority::Low), at(0))
        .unwrap()
        .unwrap();
    store
        .spend(other, "ceo", "haiku", 1, 1, 10.0, at(1))
        .unwrap();
    assert_eq!(store.spent_on_goal("a").unwrap(), 1.75);
    assert_eq!(store.spent_on_goal("nothing").unwrap(), 0.0);
    assert!(matches!(
        store.spend(999, "ceo", "haiku", 1, 1, 1.0, at(1)),
        Err(StoreError::NoTask(999))
    ));
}

#[test]
fn reopening_keeps_data_and_does_not_migrate_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nested/state");
    let store = Store::open(&state).unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::High), at(0))
        .unwrap()
        .unwrap();
    store.record_revision("r1", &[], at(0)).unwrap();
    let version: i64 = raw(&state)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(version >= 1);
    drop(store);

    let store = Store::open(&state).unwrap();
    assert_eq!(store.task(id).unwrap().priority, Priority::High);
    assert_eq!(
        store
            .enqueue(&new_task("a", Priority::High), at(1))
            .unwrap(),
        None
    );
    assert_eq!(
        store.revisions().unwrap().last_applied.as_deref(),
        Some("r1")
    );
    let again: i64 = raw(&state)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(again, version);
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    raw(dir.path())
        .pragma_update(None, "user_version", 1000)
        .unwrap();
    match Store::open(dir.path()) {
        Err(StoreError::TooNew { found, known }) => {
            assert_eq!(found, 1000);
            assert!(known < 1000);
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer database was opened"),
    }
}

#[test]
fn an_unusable_state_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = Store::open(&file.join("state")).err().unwrap();
    assert!(matches!(err, StoreError::Dir { .. }), "{err}");
}

const CRASH_DIR: &str = "PROTO_STORE_CRASH_DIR";

/// Run by `committed_data_survives_a_crash` in a child process: commits some work, leaves a
/// transaction open, and aborts without closing anything. Does nothing when run directly.
#[test]
fn crash_child_commits_then_aborts() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = Store::open(dir).unwrap();
    let id = store
        .enqueue(&new_task("a", Priority::Critical), at(0))
        .unwrap()
        .unwrap();
    store.start(id, "local", at(1)).unwrap();
    let step = store
        .action_started(id, 0, "Write", &json!({ "path": "x" }), at(2))
        .unwrap();
    store
        .action_finished(
            step,
            &json!({ "ok": true }),
            &audit_record("Write", Some(id)),
            at(3),
        )
        .unwrap();
    store
        .action_started(id, 1, "Bash", &json!({ "command": "deploy" }), at(4))
        .unwrap();
    store
        .observe(
            "a",
            &GoalObservation {
                passed: false,
                checked_at: at(5),
                key: "a@000000000001".into(),
            },
            "exit 1",
        )
        .unwrap();

    let other = raw(dir);
    other
        .execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO events (time, kind, data) VALUES ('2026-01-01T00:00:00.000000000Z', 'uncommitted', '{}');",
        )
        .unwrap();
    std::process::abort();
}

#[test]
fn committed_data_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_commits_then_aborts",
            "--exact",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let wal = std::fs::metadata(dir.path().join("proto.db-wal")).unwrap();
    assert!(wal.len() > 0, "the commits were still only in the WAL");

    let store = Store::open(dir.path()).unwrap();
    let tasks = store.tasks().unwrap();
    assert_eq!(tasks.len(), 1);
    let id = tasks[0].id;
    assert_eq!(tasks[0].state, TaskState::Running);
    assert_eq!(store.recover_interrupted(at(10)).unwrap(), [id]);
    assert_eq!(store.task(id).unwrap().attempts, 0);

    let done = store.action(id, 0).unwrap().unwrap();
    assert_eq!(done.outcome, Some(json!({ "ok": true })));
    let open = store.action(id, 1).unwrap().unwrap();
    assert_eq!(
        open.finished_at, None,
        "the restart knows step 1 may have happened"
    );
    assert_eq!(store.pending_audit().unwrap().len(), 1);
    assert!(!store.observed().unwrap().goals["a"].passed);
    let kinds: Vec<EventKind> = store
        .events(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::TaskQueued,
            EventKind::TaskStarted,
            EventKind::TaskInterrupted
        ]
    );
}

#[test]
fn one_store_shared_by_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let created: Vec<usize> = (0..2)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .filter(|i| {
                        store
                            .enqueue(&new_task(&format!("g{i}"), Priority::Medium), at(0))
                            .unwrap()
                            .is_some()
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(created.iter().sum::<usize>(), 50);
    assert_eq!(store.tasks().unwrap().len(), 50);
}

#[test]
fn two_connections_in_two_threads_never_double_book() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    // Both enqueue before either dispatches: a succeeded task would not block a new one.
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let dir = dir.path().to_path_buf();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let enqueue = || -> Result<usize, StoreError> {
                    let store = Store::open(&dir)?;
                    let mut created = 0;
                    let keys: Vec<usize> = if worker == 0 {
                        (0..40).collect()
                    } else {
                        (0..40).rev().collect()
                    };
                    for i in keys {
                        let task = new_task(&format!("g{i}"), Priority::Medium);
                        if store.enqueue(&task, at(0))?.is_some() {
                            created += 1;
                        }
                        store.event(
                            None,
                            None,
                            EventKind::RevisionApplied,
                            &json!({ "worker": worker }),
                            at(0),
                        )?;
                    }
                    Ok(created)
                };
                // Reach the barrier even on failure, so the other thread is not left waiting.
                let created = enqueue();
                barrier.wait();
                let created = created.unwrap();
                let store = Store::open(&dir).unwrap();
                // Both dispatch from the same queue: each task is started by exactly one.
                let mut started = Vec::new();
                loop {
                    let ready = store.ready(at(1)).unwrap();
                    if ready.is_empty() {
                        break;
                    }
                    for task in ready {
                        match store.start(task.id, &format!("w{worker}"), at(1)) {
                            Ok(()) => {
                                started.push(task.id);
                                store.finish(task.id, &succeeded(), at(2), at(2)).unwrap();
                            }
                            Err(StoreError::State { .. }) => {}
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                (created, started)
            })
        })
        .collect();
    let mut created = 0;
    let mut started = Vec::new();
    for worker in workers {
        let (c, s) = worker.join().unwrap();
        created += c;
        started.extend(s);
    }
    assert_eq!(created, 40);
    assert_eq!(started.len(), 40);
    assert_eq!(started.iter().collect::<BTreeSet<_>>().len(), 40);

    let store = Store::open(dir.path()).unwrap();
    let tasks = store.tasks().unwrap();
    assert_eq!(tasks.len(), 40);
    assert!(
        tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded && t.attempts == 1)
    );
    let ticks = store
        .events(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::RevisionApplied)
        .count();
    assert_eq!(ticks, 80);
}

#[test]
fn delegated_children_are_cancelled_with_their_parent_and_never_retried_in_its_place() {
    let store = Store::in_memory().unwrap();
    let root = store
        .enqueue(&new_task("g", Priority::High), at(0))
        .unwrap()
        .unwrap();
    store.start(root, "here", at(1)).unwrap();
    let child_of = |parent: TaskId, key: &str| {
        let id = store
            .enqueue(
                &NewTask {
                    key: key.into(),
                    parent: Some(parent),
                    max_attempts: 1,
                    ..new_task("g", Priority::High)
                },
                at(2),
            )
            .unwrap()
            .unwrap();
        store.start(id, "here", at(2)).unwrap();
        id
    };
    let child = child_of(root, "g@000000000001/3:writer");
    let grandchild = child_of(child, "g@000000000001/3:writer/1:tester");
    // The child fails; the root fails for good. `retry` takes the root, not the child.
    store
        .finish(grandchild, &failed("no"), at(3), at(3))
        .unwrap();
    let root_task = store.finish(root, &failed("check"), at(4), at(4)).unwrap();
    assert_eq!(root_task.state, TaskState::Queued);
    store.start(root, "here", at(5)).unwrap();
    store.finish(root, &failed("check"), at(6), at(6)).unwrap();
    store.start(root, "here", at(7)).unwrap();
    store.finish(root, &failed("check"), at(8), at(8)).unwrap();
    assert_eq!(store.task(root).unwrap().state, TaskState::Failed);
    assert_eq!(store.retry("g", at(9)).unwrap(), Some(root));
    // Cancelling the root ends the live delegated work under it, at any depth.
    store.cancel(root, "the goal changed", at(10)).unwrap();
    assert_eq!(store.task(child).unwrap().state, TaskState::Cancelled);
    assert_eq!(
        store.task(grandchild).unwrap().state,
        TaskState::Failed,
        "finished work keeps its end"
    );
}
