//! The pure core: `plan(spec, observed, now) -> Vec<Action>`.
//!
//! Given what is declared and what has been observed, it returns the actions that move the
//! company toward its declaration: enqueue work for unmet goals (critical first), make goals
//! wait on their dependencies or on a model, cancel work whose goal changed or vanished,
//! re-check met goals whose schedule fired, and stall goals whose attempts ran out.
//! No I/O, no clock (time is an argument), no randomness: the same inputs give the same plan,
//! so `proto plan` can show it and tests need no mocks.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod incremental;

pub use incremental::{Changes, Conditions, GoalChange, Planner};

use crate::spec::validate::check_cron;
use crate::spec::{GoalSpec, Priority, Resource, Spec};

/// Attempts a goal gets when its budget does not say.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// What the controller has seen. Filled from the store by the engine; plain data here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The last check of each goal, by goal name.
    #[serde(default)]
    pub goals: BTreeMap<String, GoalObservation>,
    /// Tasks that exist, live or finished.
    #[serde(default)]
    pub tasks: Vec<TaskObservation>,
    /// Whether any model provider can be reached (an API key is set, a replay file exists).
    #[serde(default)]
    pub model_available: bool,
    /// Whether `judge` checks can be graded (they need the judge of the agent runtime).
    #[serde(default)]
    pub judge_available: bool,
    /// Dollars spent so far, for the dollar budgets.
    #[serde(default)]
    pub spending: Spending,
    /// Why a person stopped the controller (`proto stop`), while the stop holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Dollars spent, as the planner weighs them against the budgets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spending {
    /// The company's dollars on the current UTC day.
    #[serde(default)]
    pub day_usd: f64,
    /// Dollars by goal, over all its tasks.
    #[serde(default)]
    pub by_goal: BTreeMap<String, f64>,
}

/// The last check of a goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoalObservation {
    pub passed: bool,
    pub checked_at: DateTime<Utc>,
    /// The goal key (see [`goal_key`]) the check ran against.
    pub key: String,
}

/// A task as the store holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskObservation {
    pub key: String,
    pub goal: String,
    pub state: TaskState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskState {
    Queued,
    Running,
    WaitingApproval,
    Succeeded,
    Failed,
    Stalled,
    Cancelled,
}

impl TaskState {
    /// Every state, in the order of their lives.
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::WaitingApproval,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Stalled,
        TaskState::Cancelled,
    ];

    /// Live tasks hold the goal's one slot.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            TaskState::Queued | TaskState::Running | TaskState::WaitingApproval
        )
    }
}

/// How a task will be worked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Work {
    /// Deterministic steps, no model.
    Playbook { steps: usize },
    /// The owner agent, driven by a model.
    Agent { agent: String },
}

/// Why a goal waits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum WaitReason {
    /// Goals it depends on are not met yet.
    DependsOn { goals: Vec<String> },
    /// Its work or its check needs a model and none is reachable.
    NoModel,
    /// Its work needs a model and a dollar budget is spent: the company's for today (it
    /// waits for the next UTC day) or the goal's own (it waits for a larger budget in git).
    Budget { message: String },
}

/// One step toward the declaration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// The company is suspended: nothing is planned.
    Suspended { company: String, message: String },
    /// Queue a task for an unmet goal.
    Enqueue {
        goal: String,
        key: String,
        product: String,
        owner: String,
        priority: Priority,
        work: Work,
    },
    /// The goal cannot be worked yet.
    Wait {
        goal: String,
        priority: Priority,
        #[serde(flatten)]
        reason: WaitReason,
    },
    /// Cancel a live task whose goal changed or was removed.
    Cancel {
        goal: String,
        key: String,
        message: String,
    },
    /// Run the check of a met goal again: its schedule fired.
    Recheck { goal: String, priority: Priority },
    /// Attempts are exhausted: the goal is Stalled until a new revision or `proto retry`.
    Stall {
        goal: String,
        key: String,
        message: String,
    },
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Suspended { .. } => "suspended",
            Action::Enqueue { .. } => "enqueue",
            Action::Wait { .. } => "wait",
            Action::Cancel { .. } => "cancel",
            Action::Recheck { .. } => "recheck",
            Action::Stall { .. } => "stall",
        }
    }

    /// The goal acted on, if any.
    pub fn goal(&self) -> Option<&str> {
        match self {
            Action::Suspended { .. } => None,
            Action::Enqueue { goal, .. }
            | Action::Wait { goal, .. }
            | Action::Cancel { goal, .. }
            | Action::Recheck { goal, .. }
            | Action::Stall { goal, .. } => Some(goal),
        }
    }

    /// A sentence saying what and why.
    pub fn detail(&self) -> String {
        match self {
            Action::Suspended { message, .. } => message.clone(),
            Action::Enqueue {
                work: Work::Playbook { steps },
                owner,
                ..
            } => {
                format!(
                    "playbook of {steps} step{} as {owner}",
                    if *steps == 1 { "" } else { "s" }
                )
            }
            Action::Enqueue {
                work: Work::Agent { agent },
                ..
            } => format!("agent {agent} works it with a model"),
            Action::Wait {
                reason: WaitReason::DependsOn { goals },
                ..
            } => format!("waits for {}", goals.join(", ")),
            Action::Wait {
                reason: WaitReason::NoModel,
                ..
            } => "needs a model and no provider is reachable (NoModel)".to_string(),
            Action::Wait {
                reason: WaitReason::Budget { message },
                ..
            } => message.clone(),
            Action::Cancel { message, .. } | Action::Stall { message, .. } => message.clone(),
            Action::Recheck { .. } => "schedule fired; check again".to_string(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.goal() {
            Some(goal) => write!(f, "{} {}: {}", self.verb(), goal, self.detail()),
            None => write!(f, "{}: {}", self.verb(), self.detail()),
        }
    }
}

/// The idempotency key of a goal's work: its name and a hash of its spec, so that one
/// revision of a goal gets exactly one live task and an edit gets a fresh one. A loaded
/// [`Spec`] carries every goal's key already ([`Spec::key_of`]).
pub fn goal_key(goal: &Resource<GoalSpec>) -> String {
    crate::spec::goal_key(goal)
}

/// Whether working `goal` needs a model: no playbook to run, or a check only a model can judge.
pub fn needs_model(goal: &GoalSpec) -> bool {
    goal.playbook.is_empty() || goal.check.needs_model()
}

/// Why a goal whose work needs a model may not start: a dollar budget already used up.
fn budget_spent(spec: &Spec, goal: &Resource<GoalSpec>, spending: &Spending) -> Option<String> {
    let budgets = spec.company().and_then(|c| c.spec.budgets.as_ref());
    if let Some(limit) = budgets.and_then(|b| b.usd_per_day)
        && spending.day_usd >= limit
    {
        return Some(format!(
            "the company's daily budget is spent (${:.4} of ${limit:.2}, spec.budgets.usdPerDay); work resumes on the next UTC day",
            spending.day_usd
        ));
    }
    let own = goal.spec.budget.as_ref().and_then(|b| b.usd);
    let (limit, field) = match (own, budgets.and_then(|b| b.usd_per_goal)) {
        (Some(limit), _) => (limit, "the goal's spec.budget.usd"),
        (None, Some(limit)) => (limit, "the company's spec.budgets.usdPerGoal"),
        (None, None) => return None,
    };
    let spent = spending.by_goal.get(goal.name()).copied().unwrap_or(0.0);
    (spent >= limit).then(|| {
        format!(
            "the goal's budget is spent (${spent:.4} of ${limit:.2}, {field}); raise it to continue"
        )
    })
}

/// The plan: actions in the order they should be taken.
pub fn plan(spec: &Spec, observed: &Observed, now: DateTime<Utc>) -> Vec<Action> {
    if let Some(suspended) = suspended(spec, observed.stopped.as_deref()) {
        return vec![suspended];
    }
    let keys: HashMap<&str, Cow<'_, str>> = spec
        .goals
        .iter()
        .map(|g| (g.name(), spec.key_of(g)))
        .collect();
    // Every task of each goal, in the order observed: looked up once per goal below.
    let mut tasks_of: HashMap<&str, Vec<&TaskObservation>> = HashMap::new();
    for task in &observed.tasks {
        tasks_of.entry(task.goal.as_str()).or_default().push(task);
    }
    // Work for goals that no longer exist goes first: it frees capacity.
    let mut actions = orphans(
        tasks_of
            .iter()
            .filter(|(goal, _)| !keys.contains_key(*goal))
            .filter_map(|(_, tasks)| live_of(tasks.iter().copied())),
    );
    let met = |name: &str| {
        observed
            .goals
            .get(name)
            .is_some_and(|o| keys.get(name).is_some_and(|k| met_at(Some(o), k)))
    };
    let world = World {
        spec,
        model_available: observed.model_available,
        judge_available: observed.judge_available,
        spending: &observed.spending,
        now,
    };
    for goal in in_order(spec) {
        let name = goal.name();
        let tasks = tasks_of.get(name).map_or(&[][..], Vec::as_slice);
        world.goal_actions(
            goal,
            &keys[name],
            tasks,
            observed.goals.get(name),
            &met,
            &mut actions,
        );
    }
    actions
}

/// The one action of a stopped controller (`proto stop`) or a suspended company, if either.
fn suspended(spec: &Spec, stopped: Option<&str>) -> Option<Action> {
    if let Some(message) = stopped {
        return Some(Action::Suspended {
            company: spec
                .company()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
            message: message.to_string(),
        });
    }
    let company = spec.company().filter(|c| c.spec.suspend)?;
    Some(Action::Suspended {
        company: company.name().to_string(),
        message: format!(
            "Company/{} has spec.suspend: true; no work is planned until it is set to false",
            company.name()
        ),
    })
}

/// The goals in the order they are planned: by priority, then as declared.
fn in_order(spec: &Spec) -> impl Iterator<Item = &Resource<GoalSpec>> {
    let mut order: Vec<(usize, &Resource<GoalSpec>)> =
        spec.goals.iter().map(|g| &**g).enumerate().collect();
    order.sort_by_key(|(i, g)| (g.spec.priority, *i));
    order.into_iter().map(|(_, g)| g)
}

/// The live task of a goal (the last observed holds its slot), if any.
fn live_of<'t>(tasks: impl Iterator<Item = &'t TaskObservation>) -> Option<&'t TaskObservation> {
    tasks.filter(|t| t.state.is_live()).last()
}

/// Whether a goal's last check passed against its current `key`.
fn met_at(observation: Option<&GoalObservation>, key: &str) -> bool {
    observation.is_some_and(|o| o.passed && o.key == key)
}

/// The cancellations of live work whose goal was removed, in the order of their keys.
fn orphans<'t>(live: impl Iterator<Item = &'t TaskObservation>) -> Vec<Action> {
    let mut orphans: Vec<&TaskObservation> = live.collect();
    orphans.sort_by(|a, b| a.key.cmp(&b.key));
    orphans
        .into_iter()
        .map(|task| Action::Cancel {
            goal: task.goal.clone(),
            key: task.key.clone(),
            message: "the goal was removed from the declaration".into(),
        })
        .collect()
}

/// What every goal's plan reads beside its own inputs.
struct World<'a> {
    spec: &'a Spec,
    model_available: bool,
    judge_available: bool,
    spending: &'a Spending,
    now: DateTime<Utc>,
}

impl World<'_> {
    /// Adds to `out` what one goal needs, from its `key`, its tasks (in the order observed),
    /// its last check and whether other goals are met: the whole of a goal's plan, so the
    /// full plan and the incremental one ([`Planner`]) never differ in a rule.
    fn goal_actions(
        &self,
        goal: &Resource<GoalSpec>,
        key: &str,
        tasks: &[&TaskObservation],
        observation: Option<&GoalObservation>,
        met: &dyn Fn(&str) -> bool,
        out: &mut Vec<Action>,
    ) {
        let name = goal.name();
        let priority = goal.spec.priority;
        if let Some(task) = live_of(tasks.iter().copied()) {
            if task.key == key {
                return; // already being worked
            }
            out.push(Action::Cancel {
                goal: name.to_string(),
                key: task.key.clone(),
                message: "the goal changed; its work starts again at the new revision".into(),
            });
        }
        if met_at(observation, key) {
            if let (Some(schedule), Some(obs)) = (&goal.spec.schedule, observation) {
                let due = check_cron(schedule)
                    .ok()
                    .and_then(|cron| cron.find_next_occurrence(&obs.checked_at, false).ok())
                    .is_some_and(|next| next <= self.now);
                if due {
                    out.push(Action::Recheck {
                        goal: name.to_string(),
                        priority,
                    });
                }
            }
            return;
        }
        let finished = || tasks.iter().filter(|t| t.key == key);
        if finished().any(|t| t.state == TaskState::Stalled) {
            return; // a dead letter until a new revision or `proto retry`
        }
        let max_attempts = goal
            .spec
            .budget
            .as_ref()
            .and_then(|b| b.attempts)
            .unwrap_or(DEFAULT_ATTEMPTS);
        if let Some(failed) =
            finished().find(|t| t.state == TaskState::Failed && t.attempts >= max_attempts)
        {
            out.push(Action::Stall {
                goal: name.to_string(),
                key: key.to_string(),
                message: format!(
                    "{} of {max_attempts} attempts failed; last error: {}",
                    failed.attempts,
                    failed
                        .last_error
                        .as_deref()
                        .unwrap_or("the check still fails")
                ),
            });
            return;
        }
        let unmet: Vec<String> = goal
            .spec
            .depends_on
            .iter()
            .filter(|d| !met(d))
            .cloned()
            .collect();
        if !unmet.is_empty() {
            out.push(Action::Wait {
                goal: name.to_string(),
                priority,
                reason: WaitReason::DependsOn { goals: unmet },
            });
            return;
        }
        let judge_missing = goal.spec.check.needs_model() && !self.judge_available;
        if (needs_model(&goal.spec) && !self.model_available) || judge_missing {
            out.push(Action::Wait {
                goal: name.to_string(),
                priority,
                reason: WaitReason::NoModel,
            });
            return;
        }
        if needs_model(&goal.spec)
            && let Some(message) = budget_spent(self.spec, goal, self.spending)
        {
            out.push(Action::Wait {
                goal: name.to_string(),
                priority,
                reason: WaitReason::Budget { message },
            });
            return;
        }
        let work = if goal.spec.playbook.is_empty() {
            Work::Agent {
                agent: goal.spec.owner.clone(),
            }
        } else {
            Work::Playbook {
                steps: goal.spec.playbook.len(),
            }
        };
        out.push(Action::Enqueue {
            goal: name.to_string(),
            key: key.to_string(),
            product: goal.spec.product.clone(),
            owner: goal.spec.owner.clone(),
            priority,
            work,
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::{MemTree, load_and_validate};
    use chrono::TimeZone;

    const COMPANY: &str = "apiVersion: proto.dev/v1alpha1
kind: Company
metadata: {name: t}
spec: {mission: m, ceo: ceo, suspend: SUSPEND}
---
apiVersion: proto.dev/v1alpha1
kind: Agent
metadata: {name: ceo}
spec: {title: CEO, description: d, prompt: p}
---
apiVersion: proto.dev/v1alpha1
kind: Product
metadata: {name: app}
spec: {description: d, lead: ceo}
";

    /// A goal document; `extra` is spliced into its spec.
    pub(crate) fn goal(name: &str, priority: &str, extra: &str) -> String {
        format!(
            "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  priority: {priority}\n  description: d\n  check: {{file: {{path: f}}}}\n  playbook: [{{run: 'true'}}]\n{extra}"
        )
    }

    pub(crate) fn spec(suspend: bool, goals: &[String]) -> Spec {
        let mut text = COMPANY.replace("SUSPEND", if suspend { "true" } else { "false" });
        for g in goals {
            text.push_str(g);
        }
        let mut tree = MemTree::new("test");
        tree.insert("all.yaml", text);
        match load_and_validate(&tree) {
            Ok((spec, _)) => spec,
            Err(d) => panic!("{d:#?}"),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn summary(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| format!("{} {}", a.verb(), a.goal().unwrap_or("-")))
            .collect()
    }

    fn met(spec: &Spec, name: &str, at: DateTime<Utc>) -> (String, GoalObservation) {
        let g = spec.goal(name).unwrap();
        (
            name.to_string(),
            GoalObservation {
                passed: true,
                checked_at: at,
                key: goal_key(g),
            },
        )
    }

    fn task(spec: &Spec, name: &str, state: TaskState, attempts: u32) -> TaskObservation {
        TaskObservation {
            key: goal_key(spec.goal(name).unwrap()),
            goal: name.into(),
            state,
            attempts,
            last_error: Some("exit status 1".into()),
        }
    }

    #[test]
    fn table_of_cases() {
        struct Case {
            name: &'static str,
            suspend: bool,
            goals: Vec<String>,
            observe: fn(&Spec) -> Observed,
            want: Vec<&'static str>,
        }
        let fresh = |_: &Spec| Observed::default();
        let cases = vec![
            Case {
                name: "fresh goals are enqueued in priority order, declaration order within one",
                suspend: false,
                goals: vec![
                    goal("c", "low", ""),
                    goal("a", "high", ""),
                    goal("b", "critical", ""),
                    goal("d", "high", ""),
                ],
                observe: fresh,
                want: vec!["enqueue b", "enqueue a", "enqueue d", "enqueue c"],
            },
            Case {
                name: "a suspended company plans nothing and says why",
                suspend: true,
                goals: vec![goal("a", "high", "")],
                observe: fresh,
                want: vec!["suspended -"],
            },
            Case {
                name: "a stop plans nothing, whatever the declaration says",
                suspend: false,
                goals: vec![goal("a", "high", "")],
                observe: |_| Observed {
                    stopped: Some("stopped by ada: drill".into()),
                    ..Observed::default()
                },
                want: vec!["suspended -"],
            },
            Case {
                name: "goals wait on unmet dependencies",
                suspend: false,
                goals: vec![
                    goal("a", "high", "  dependsOn: [b]\n"),
                    goal("b", "low", ""),
                ],
                observe: fresh,
                want: vec!["wait a", "enqueue b"],
            },
            Case {
                name: "a met dependency releases the goal",
                suspend: false,
                goals: vec![
                    goal("a", "high", "  dependsOn: [b]\n"),
                    goal("b", "low", ""),
                ],
                observe: |s| Observed {
                    goals: [met(s, "b", now())].into(),
                    ..Observed::default()
                },
                want: vec!["enqueue a"],
            },
            Case {
                name: "met goals and goals being worked need nothing",
                suspend: false,
                goals: vec![goal("a", "high", ""), goal("b", "high", "")],
                observe: |s| Observed {
                    goals: [met(s, "a", now())].into(),
                    tasks: vec![task(s, "b", TaskState::Running, 1)],
                    ..Observed::default()
                },
                want: vec![],
            },
            Case {
                name: "a goal with no playbook waits for a model when none is reachable",
                suspend: false,
                goals: vec![goal("a", "high", "").replace("  playbook: [{run: 'true'}]\n", "")],
                observe: fresh,
                want: vec!["wait a"],
            },
            Case {
                name: "a goal with no playbook is given to its agent when a model is reachable",
                suspend: false,
                goals: vec![goal("a", "high", "").replace("  playbook: [{run: 'true'}]\n", "")],
                observe: |_| Observed {
                    model_available: true,
                    ..Observed::default()
                },
                want: vec!["enqueue a"],
            },
            Case {
                name: "a judge check needs a model even with a playbook",
                suspend: false,
                goals: vec![
                    goal("a", "high", "").replace("{file: {path: f}}", "{judge: {rubric: r}}"),
                ],
                observe: fresh,
                want: vec!["wait a"],
            },
            Case {
                name: "exhausted attempts stall the goal",
                suspend: false,
                goals: vec![goal("a", "high", "  budget: {attempts: 2}\n")],
                observe: |s| Observed {
                    tasks: vec![task(s, "a", TaskState::Failed, 2)],
                    ..Observed::default()
                },
                want: vec!["stall a"],
            },
            Case {
                name: "a stalled goal stays a dead letter at the same revision",
                suspend: false,
                goals: vec![goal("a", "high", "")],
                observe: |s| Observed {
                    tasks: vec![task(s, "a", TaskState::Stalled, 3)],
                    ..Observed::default()
                },
                want: vec![],
            },
            Case {
                name: "a changed goal cancels its old task and enqueues anew",
                suspend: false,
                goals: vec![goal("a", "high", "")],
                observe: |_| Observed {
                    tasks: vec![TaskObservation {
                        key: "a@000000000000".into(),
                        goal: "a".into(),
                        state: TaskState::Queued,
                        attempts: 0,
                        last_error: None,
                    }],
                    ..Observed::default()
                },
                want: vec!["cancel a", "enqueue a"],
            },
            Case {
                name: "a removed goal's live task is cancelled",
                suspend: false,
                goals: vec![],
                observe: |_| Observed {
                    tasks: vec![TaskObservation {
                        key: "gone@1".into(),
                        goal: "gone".into(),
                        state: TaskState::Running,
                        attempts: 1,
                        last_error: None,
                    }],
                    ..Observed::default()
                },
                want: vec!["cancel gone"],
            },
            Case {
                name: "a met goal whose schedule fired is re-checked",
                suspend: false,
                goals: vec![goal("a", "high", "  schedule: '0 * * * *'\n")],
                observe: |s| Observed {
                    goals: [met(s, "a", now() - chrono::Duration::minutes(90))].into(),
                    ..Observed::default()
                },
                want: vec!["recheck a"],
            },
            Case {
                name: "a met goal whose schedule has not fired is left alone",
                suspend: false,
                goals: vec![goal("a", "high", "  schedule: '0 0 1 1 *'\n")],
                observe: |s| Observed {
                    goals: [met(s, "a", now() - chrono::Duration::minutes(90))].into(),
                    ..Observed::default()
                },
                want: vec![],
            },
            Case {
                name: "a check that passed at an older revision does not count",
                suspend: false,
                goals: vec![goal("a", "high", "")],
                observe: |_| Observed {
                    goals: [(
                        "a".to_string(),
                        GoalObservation {
                            passed: true,
                            checked_at: now(),
                            key: "a@old".into(),
                        },
                    )]
                    .into(),
                    ..Observed::default()
                },
                want: vec!["enqueue a"],
            },
        ];
        for case in cases {
            let spec = spec(case.suspend, &case.goals);
            let observed = (case.observe)(&spec);
            let got = summary(&plan(&spec, &observed, now()));
            assert_eq!(got, case.want, "case: {}", case.name);
        }
    }

    #[test]
    fn planning_is_deterministic_and_keys_are_stable() {
        let s = spec(false, &[goal("a", "high", ""), goal("b", "low", "")]);
        let first = plan(&s, &Observed::default(), now());
        assert_eq!(first, plan(&s, &Observed::default(), now()));
        let key = goal_key(s.goal("a").unwrap());
        assert!(key.starts_with("a@") && key.len() == 14, "{key}");
        let changed = spec(false, &[goal("a", "low", "")]);
        assert_ne!(key, goal_key(changed.goal("a").unwrap()));
    }
}
