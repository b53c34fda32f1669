//! What journaling costs the store: write transactions per model turn and per tool call,
//! counted with `Store::write_count` on a real SQLite file, through the real turn loop
//! (`Session`, a replayed model) and the real `act()` on a real workspace. A model turn is
//! one transaction with its spend, audit record and activity line; a call whose effect stays
//! in the workspace is one; a call that may reach past it (a command) keeps its "started"
//! entry before the effect and is two.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use proto::agent::Session;
use proto::computer::{Local, Workspace};
use proto::gitops::Identity;
use proto::model::replay::{Exchange, Replay};
use proto::model::{ContentBlock, PriceTable, Response, StopReason, Usage};
use proto::policy::limits::TaskBudget;
use proto::policy::{Actor, ToolCall, act, opens_entry};
use proto::spec::Priority;
use proto::store::activity::Activity;
use proto::store::{AuditRecord, Cost, Entry, NewTask, StepRecord, Store, TaskId};
use proto::tools::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Bench {
    dir: tempfile::TempDir,
    store: Store,
    local: Local,
    workspace: Workspace,
    author: Identity,
    cancel: CancellationToken,
    task: TaskId,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("README.md"), "# Shop\n").unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let now = Utc::now();
        let task = store
            .enqueue(
                &NewTask {
                    key: "readme@1".into(),
                    goal: "readme".into(),
                    product: "shop".into(),
                    owner: "ceo".into(),
                    priority: Priority::Medium,
                    max_attempts: 1,
                    revision: "r1".into(),
                    parent: None,
                },
                now,
            )
            .unwrap()
            .unwrap();
        store.start(task, "local", now).unwrap();
        Bench {
            local: Local::new("local", dir.path().join("work")),
            workspace: Workspace::new(&root),
            dir,
            store,
            author: Identity {
                name: "Ada Agent".into(),
                email: "ada@example.com".into(),
            },
            cancel: CancellationToken::new(),
            task,
        }
    }

    fn actor<'a>(&'a self, tools: &'a [String]) -> Actor<'a> {
        Actor {
            store: &self.store,
            task: self.task,
            goal: "readme",
            agent: "ceo",
            tools: Arc::new(Registry::with_builtins(tools.to_vec())),
            computer: &self.local,
            workspace: &self.workspace,
            author: &self.author,
            cancel: &self.cancel,
            settings: None,
            limits: None,
            delegated: false,
            gates: None,
        }
    }

    fn root(&self) -> &Path {
        self.workspace.root()
    }
}

fn tools() -> Vec<String> {
    ["Read", "Write", "Bash"].map(String::from).to_vec()
}

fn tool(name: &str, input: Value) -> ToolCall {
    ToolCall::Tool {
        name: name.into(),
        input,
    }
}

fn answer(content: Vec<ContentBlock>, stop: StopReason) -> Exchange {
    Exchange {
        match_key: None,
        response: Response {
            id: String::new(),
            model: "claude-sonnet-4-5".into(),
            content,
            stop_reason: Some(stop),
            usage: Usage {
                input_tokens: 1_000,
                output_tokens: 50,
                ..Usage::default()
            },
        },
    }
}

fn tool_use(id: &str, name: &str, input: Value) -> ContentBlock {
    serde_json::from_value(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
        .unwrap()
}

/// Runs `call` as step `step` and returns the write transactions it took.
async fn writes_of(bench: &Bench, step: u32, call: &ToolCall) -> u64 {
    let tools = tools();
    let before = bench.store.write_count();
    let _ = act(&bench.actor(&tools), step, call).await;
    bench.store.write_count() - before
}

#[tokio::test]
async fn a_tool_call_is_one_write_and_a_command_two() {
    let bench = Bench::new();
    let read = tool("Read", json!({ "file_path": "README.md" }));
    let write = tool(
        "Write",
        json!({ "file_path": "hello.txt", "content": "hi\n" }),
    );
    let bash = tool("Bash", json!({ "command": "echo built > built.txt" }));
    let denied = tool("Grep", json!({ "pattern": "Shop" }));
    let tools = tools();
    let actor = bench.actor(&tools);
    assert!(!opens_entry(&actor, &read) && !opens_entry(&actor, &write));
    assert!(opens_entry(&actor, &bash));

    assert_eq!(writes_of(&bench, 1, &read).await, 1, "Read");
    assert_eq!(writes_of(&bench, 2, &write).await, 1, "Write");
    assert_eq!(
        writes_of(&bench, 3, &bash).await,
        2,
        "Bash: started, then finished"
    );
    assert_eq!(writes_of(&bench, 4, &denied).await, 1, "a denied call");
    // A finished step is not done again and costs no write at all.
    assert_eq!(writes_of(&bench, 1, &read).await, 0, "a replayed Read");
    assert_eq!(
        std::fs::read_to_string(bench.root().join("hello.txt")).unwrap(),
        "hi\n"
    );

    // What the one transaction left: the finished entry, its audit record, its activity.
    for step in 1..=3 {
        let entry = bench.store.action(bench.task, step).unwrap().unwrap();
        assert!(entry.finished_at.is_some(), "step {step}");
        assert!(entry.started_at <= entry.finished_at.unwrap());
    }
    assert_eq!(bench.store.action(bench.task, 4).unwrap(), None);
    let actions: Vec<String> = bench
        .store
        .pending_audit()
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["Read", "Write", "Bash", "Grep"]);
    let calls: Vec<(u32, bool)> = bench
        .store
        .events(0, 100)
        .unwrap()
        .iter()
        .filter_map(Activity::from_event)
        .filter_map(|a| match a {
            Activity::Tool { step, ok, .. } => Some((step, ok)),
            Activity::Model { .. } => None,
        })
        .collect();
    assert_eq!(calls, [(1, true), (2, true), (3, true), (4, false)]);
}

#[tokio::test]
async fn a_model_turn_is_one_write_with_its_spend_audit_and_activity() {
    let bench = Bench::new();
    let model = Replay::new(
        "replay",
        "inline",
        vec![
            answer(
                vec![
                    tool_use("t1", "Read", json!({ "file_path": "README.md" })),
                    tool_use(
                        "t2",
                        "Write",
                        json!({ "file_path": "hello.txt", "content": "hi\n" }),
                    ),
                ],
                StopReason::ToolUse,
            ),
            answer(vec![ContentBlock::text("Done.")], StopReason::EndTurn),
        ],
    );
    let tools = tools();
    let session = Session {
        actor: bench.actor(&tools),
        model: &model,
        model_id: "claude-sonnet-4-5".into(),
        system: Vec::new(),
        scoped_rules: Vec::new(),
        task: "Write hello.txt".into(),
        selected: None,
        max_turns: 4,
        max_tokens: 1_000,
        thinking: None,
        budget: TaskBudget::default(),
        prices: PriceTable::default(),
        step_base: 0,
    };
    let before = bench.store.write_count();
    let finished = session.run().await.unwrap();
    let writes = bench.store.write_count() - before;
    assert_eq!(finished.turns, 2);
    // Two turns and two workspace calls: one transaction each (it was 4 per turn and 3 per
    // call, 14 in all).
    assert_eq!(writes, 4);

    let spend = bench.store.spend_by_task().unwrap();
    assert_eq!(spend[&bench.task].calls, 2);
    assert_eq!(spend[&bench.task].input_tokens, 2_000);
    for turn_step in [0, 100] {
        let entry = bench.store.action(bench.task, turn_step).unwrap().unwrap();
        assert_eq!(entry.tool, "Model");
        assert!(entry.finished_at.is_some());
    }
    let turns = bench
        .store
        .events(0, 100)
        .unwrap()
        .iter()
        .filter_map(Activity::from_event)
        .filter(|a| matches!(a, Activity::Model { .. }))
        .count();
    assert_eq!(turns, 2);
    let audited = bench
        .store
        .pending_audit()
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "model")
        .count();
    assert_eq!(audited, 2);

    // A resumed session reads both turns from the journal: no model call, no write.
    let again = Replay::new("replay", "inline", Vec::new());
    let resumed = Session {
        model: &again,
        ..session
    };
    let before = bench.store.write_count();
    assert_eq!(resumed.run().await.unwrap().text, "Done.");
    assert_eq!(bench.store.write_count() - before, 0);
    assert_eq!(again.served(), 0);
    drop(bench.dir);
}

/// What a model turn's recording costs, the old way (started, spend, finished with the
/// audit, activity: four transactions) against `Store::record` (one), on a real file.
/// Prints the times; asserts only the counts.
#[test]
fn recording_a_turn_in_one_transaction_against_four() {
    const TURNS: u32 = 200;
    let bench = Bench::new();
    let (store, task) = (&bench.store, bench.task);
    let input = json!({ "model": "claude-sonnet-4-5", "turn": 0, "messages": 3 });
    let outcome = json!({ "content": [{ "type": "text", "text": "x".repeat(2_000) }] });
    let audit = AuditRecord {
        id: 0,
        time: Utc::now(),
        agent: "ceo".into(),
        goal: Some("readme".into()),
        task: Some(task),
        action: "model".into(),
        input: input.clone(),
        outcome: json!({ "stopReason": "tool_use", "usd": 0.01 }),
        diff: None,
    };
    let activity = Activity::Model {
        agent: "ceo".into(),
        model: "claude-sonnet-4-5".into(),
        turn: 0,
        input_tokens: 1_000,
        output_tokens: 50,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        usd: 0.01,
        stop_reason: Some("tool_use".into()),
    };

    let old_way = |turn: u32| {
        let now = Utc::now();
        let id = store
            .action_started(task, turn * 100, "Model", &input, now)
            .unwrap();
        store
            .spend(task, "ceo", "claude-sonnet-4-5", 1_000, 50, 0.01, now)
            .unwrap();
        store.action_finished(id, &outcome, &audit, now).unwrap();
        store.activity(task, "readme", &activity, now).unwrap();
    };
    let new_way = |turn: u32| {
        let now = Utc::now();
        store
            .record(
                &StepRecord {
                    task,
                    goal: "readme",
                    entry: Entry::Whole {
                        step: turn * 100,
                        tool: "Model",
                        input: &input,
                        outcome: &outcome,
                        started_at: now,
                    },
                    cost: Some(Cost {
                        agent: "ceo",
                        model: "claude-sonnet-4-5",
                        input_tokens: 1_000,
                        output_tokens: 50,
                        usd: 0.01,
                    }),
                    audit: Some(&audit),
                    activity: Some(&activity),
                },
                now,
            )
            .unwrap();
    };
    // One worker, then four recording at once (the engine's workers share the store).
    let timed = |first: u32, workers: u32, record: &(dyn Fn(u32) + Sync)| {
        let (writes, clock) = (store.write_count(), Instant::now());
        std::thread::scope(|scope| {
            for w in 0..workers {
                scope.spawn(move || {
                    for turn in 0..TURNS / workers {
                        record(first + w * TURNS + turn);
                    }
                });
            }
        });
        (store.write_count() - writes, clock.elapsed())
    };
    let (four, four_time) = timed(0, 1, &old_way);
    let (one, one_time) = timed(10 * TURNS, 1, &new_way);
    let (_, four_parallel) = timed(20 * TURNS, 4, &old_way);
    let (_, one_parallel) = timed(30 * TURNS, 4, &new_way);

    println!(
        "{TURNS} model turns recorded: {four} transactions in {four_time:?} ({:?}/turn) before, \
         {one} in {one_time:?} ({:?}/turn) with Store::record",
        four_time / TURNS,
        one_time / TURNS
    );
    println!(
        "{TURNS} model turns recorded by 4 workers at once: {four_parallel:?} before, \
         {one_parallel:?} with Store::record"
    );
    assert_eq!(four, 4 * u64::from(TURNS));
    assert_eq!(one, u64::from(TURNS));
    assert_eq!(
        store.spend_by_task().unwrap()[&task].calls,
        4 * u64::from(TURNS)
    );
}
