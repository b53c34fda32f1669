//! The incremental plan equals the full plan, over random sequences of observations,
//! declarations, conditions and clocks.

use super::*;
use crate::plan::tests::spec;
use crate::plan::{TaskState, plan};
use chrono::TimeZone;
use std::collections::BTreeMap;

use crate::test_rng::Rng;

const NAMES: [&str; 12] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];

/// A declaration of some of the names, each goal depending only on goals before it (so it
/// validates), with schedules, model goals, attempts and dollar budgets here and there.
fn declaration(rng: &mut Rng) -> Arc<Spec> {
    let mut goals = Vec::new();
    let mut declared: Vec<&str> = Vec::new();
    for name in NAMES {
        if rng.chance(25) {
            continue;
        }
        let priority = ["critical", "high", "medium", "low"][rng.below(4)];
        let mut doc = format!(
            "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  priority: {priority}\n  description: d{}\n  check: {{file: {{path: f}}}}\n",
            rng.below(2)
        );
        if rng.chance(70) {
            doc.push_str("  playbook: [{run: 'true'}]\n");
        }
        let deps: Vec<&str> = declared
            .iter()
            .copied()
            .filter(|_| rng.chance(20))
            .collect();
        if !deps.is_empty() {
            doc.push_str(&format!("  dependsOn: [{}]\n", deps.join(", ")));
        }
        if rng.chance(20) {
            doc.push_str("  schedule: '*/10 * * * *'\n");
        }
        match rng.below(3) {
            0 => doc.push_str(&format!("  budget: {{attempts: {}}}\n", 1 + rng.below(3))),
            1 => doc.push_str("  budget: {usd: 1.0}\n"),
            _ => {}
        }
        goals.push(doc);
        declared.push(name);
    }
    Arc::new(spec(false, &goals))
}

/// The observations, as the store would hold them: each goal's check, and tasks by id.
#[derive(Default)]
struct Store {
    goals: BTreeMap<String, GoalObservation>,
    tasks: BTreeMap<u64, TaskObservation>,
    next: u64,
}

impl Store {
    fn observed(&self, conditions: &Conditions) -> Observed {
        Observed {
            goals: self.goals.clone(),
            tasks: self.tasks.values().cloned().collect(),
            model_available: conditions.model_available,
            judge_available: conditions.judge_available,
            spending: conditions.spending.clone(),
            stopped: conditions.stopped.clone(),
        }
    }

    fn change(&self, goal: &str) -> GoalChange {
        GoalChange {
            goal: goal.to_string(),
            observation: self.goals.get(goal).cloned(),
            tasks: self
                .tasks
                .values()
                .filter(|t| t.goal == goal)
                .cloned()
                .collect(),
        }
    }
}

/// The key a goal has in `spec`, or one it had before.
fn some_key(rng: &mut Rng, spec: &Spec, goal: &str) -> String {
    match spec.goal(goal) {
        Some(g) if rng.chance(70) => spec.key_of(g).into_owned(),
        _ => format!("{goal}-old{}", rng.below(2)),
    }
}

/// Changes one goal's observations; answers its name.
fn observe_one(rng: &mut Rng, store: &mut Store, spec: &Spec, now: DateTime<Utc>) -> String {
    let goal = NAMES[rng.below(NAMES.len())].to_string();
    let ids: Vec<u64> = store
        .tasks
        .iter()
        .filter(|(_, t)| t.goal == goal)
        .map(|(id, _)| *id)
        .collect();
    match rng.below(5) {
        0 => {
            store.next += 1;
            let task = TaskObservation {
                key: some_key(rng, spec, &goal),
                goal: goal.clone(),
                state: TaskState::ALL[rng.below(TaskState::ALL.len())],
                attempts: 1 + rng.below(3) as u32,
                last_error: rng.chance(50).then(|| "exit status 1".to_string()),
            };
            store.tasks.insert(store.next, task);
        }
        1 if !ids.is_empty() => {
            let id = ids[rng.below(ids.len())];
            if let Some(task) = store.tasks.get_mut(&id) {
                task.state = TaskState::ALL[rng.below(TaskState::ALL.len())];
                task.attempts = 1 + rng.below(3) as u32;
            }
        }
        2 if !ids.is_empty() => {
            store.tasks.remove(&ids[rng.below(ids.len())]);
        }
        3 => {
            let observation = GoalObservation {
                passed: rng.chance(60),
                checked_at: now - chrono::Duration::minutes(rng.below(30) as i64),
                key: some_key(rng, spec, &goal),
            };
            store.goals.insert(goal.clone(), observation);
        }
        _ => {
            store.goals.remove(&goal);
            store.tasks.retain(|_, t| t.goal != goal);
        }
    }
    goal
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let mut store = Store::default();
    let mut spec = declaration(&mut rng);
    let mut now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let mut conditions = Conditions {
        model_available: true,
        judge_available: true,
        ..Conditions::default()
    };
    let mut planner = Planner::new();
    planner.observe(Changes::All(store.observed(&conditions)));
    for step in 0..400 {
        let mut changed = Vec::new();
        for _ in 0..1 + rng.below(3) {
            changed.push(observe_one(&mut rng, &mut store, &spec, now));
        }
        match rng.below(20) {
            0 => spec = declaration(&mut rng),
            1 => conditions.model_available = !conditions.model_available,
            2 => conditions.judge_available = !conditions.judge_available,
            3 => conditions.spending.day_usd += 0.5,
            4 => {
                let goal = NAMES[rng.below(NAMES.len())].to_string();
                *conditions.spending.by_goal.entry(goal).or_default() += 0.6;
            }
            5 => conditions.stopped = Some("stopped".into()),
            6 | 7 => conditions.stopped = None,
            8 => now += chrono::Duration::minutes(rng.below(20) as i64),
            _ => {}
        }
        if rng.chance(5) {
            planner.observe(Changes::All(store.observed(&conditions)));
        } else {
            let goals = changed.iter().map(|g| store.change(g)).collect();
            planner.observe(Changes::Goals(goals));
        }
        let full = plan(&spec, &store.observed(&conditions), now);
        let incremental = planner.plan(&spec, &conditions, now);
        assert_eq!(incremental, full, "seed {seed}, step {step}");
    }
}

#[test]
fn the_incremental_plan_is_the_full_plan_of_the_same_observations() {
    for seed in 1_u64..=40 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
}

#[test]
fn a_goal_met_replans_the_goals_waiting_on_it_and_nothing_else_changes() {
    let spec = Arc::new(spec(
        false,
        &[
            crate::plan::tests::goal("a", "high", ""),
            crate::plan::tests::goal("b", "high", "  dependsOn: [a]\n"),
        ],
    ));
    let conditions = Conditions {
        model_available: true,
        judge_available: true,
        ..Conditions::default()
    };
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    let mut planner = Planner::new();
    planner.observe(Changes::All(Observed::default()));
    let verbs = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .map(|a| format!("{} {}", a.verb(), a.goal().unwrap_or("-")))
            .collect()
    };
    assert_eq!(
        verbs(&planner.plan(&spec, &conditions, now)),
        ["enqueue a", "wait b"]
    );
    let key = spec.key_of(spec.goal("a").unwrap()).into_owned();
    planner.observe(Changes::Goals(vec![GoalChange {
        goal: "a".into(),
        observation: Some(GoalObservation {
            passed: true,
            checked_at: now,
            key,
        }),
        tasks: Vec::new(),
    }]));
    assert_eq!(verbs(&planner.plan(&spec, &conditions, now)), ["enqueue b"]);
    // Nothing changed: the same plan, from what was kept.
    assert_eq!(verbs(&planner.plan(&spec, &conditions, now)), ["enqueue b"]);
}
