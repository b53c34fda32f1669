//! The plan kept up to date from what changed. [`Planner`] holds each goal's inputs (its
//! last check and its tasks) and the actions they gave, and re-plans only the goals whose
//! declaration, tasks or last check changed since its last plan, and those whose
//! dependencies became met or unmet; goals with a schedule are re-planned every time (the
//! clock is an input), goals that need a model whenever the spending moved, and every goal
//! when the declaration or a model's availability changed. Its plan is, action for action,
//! [`plan`](super::plan) of the same declaration and observations: both run one goal's
//! rules through [`World::goal_actions`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Action, GoalObservation, Observed, Spending, TaskObservation, World, in_order, live_of, met_at,
    needs_model, orphans, suspended,
};
use crate::spec::Spec;

/// What changed in the observations since the planner last took them in.
#[derive(Clone, Debug, PartialEq)]
pub enum Changes {
    /// Everything, as now (the first time, or after another process changed the store).
    All(Observed),
    /// The goals whose check or tasks changed, each as it is now.
    Goals(Vec<GoalChange>),
}

/// One goal's observations as they are now.
#[derive(Clone, Debug, PartialEq)]
pub struct GoalChange {
    pub goal: String,
    pub observation: Option<GoalObservation>,
    /// Its tasks in the order observed (as [`Observed::tasks`] holds them).
    pub tasks: Vec<TaskObservation>,
}

/// What the plan reads beside the declaration and each goal's observations (the fields of
/// [`Observed`] that are not per goal).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditions {
    pub model_available: bool,
    pub judge_available: bool,
    pub spending: Spending,
    pub stopped: Option<String>,
}

/// One goal's observations.
#[derive(Debug, Default)]
struct Inputs {
    observation: Option<GoalObservation>,
    tasks: Vec<TaskObservation>,
}

/// The incremental planner (see the module).
#[derive(Default)]
pub struct Planner {
    /// The declaration planned for; another one re-plans everything.
    spec: Option<Arc<Spec>>,
    keys: HashMap<String, String>,
    /// The goals that depend on each goal.
    dependents: HashMap<String, Vec<String>>,
    /// Declared goals in plan order.
    order: Vec<String>,
    scheduled: Vec<String>,
    model_goals: Vec<String>,
    inputs: HashMap<String, Inputs>,
    /// Goals with observations that are not declared (their live work is cancelled).
    undeclared: BTreeSet<String>,
    met: HashMap<String, bool>,
    actions: HashMap<String, Vec<Action>>,
    dirty: HashSet<String>,
    everything: bool,
    conditions: Option<(bool, bool, Spending)>,
}

impl Planner {
    pub fn new() -> Planner {
        Planner {
            everything: true,
            ..Planner::default()
        }
    }

    /// Takes in what changed.
    pub fn observe(&mut self, changes: Changes) {
        match changes {
            Changes::All(observed) => {
                self.inputs.clear();
                for (goal, observation) in observed.goals {
                    self.inputs.entry(goal).or_default().observation = Some(observation);
                }
                for task in observed.tasks {
                    self.inputs
                        .entry(task.goal.clone())
                        .or_default()
                        .tasks
                        .push(task);
                }
                self.note_undeclared();
                self.everything = true;
            }
            Changes::Goals(goals) => {
                for change in goals {
                    if change.observation.is_none() && change.tasks.is_empty() {
                        self.inputs.remove(&change.goal);
                        self.undeclared.remove(&change.goal);
                    } else {
                        if !self.keys.contains_key(&change.goal) {
                            self.undeclared.insert(change.goal.clone());
                        }
                        self.inputs.insert(
                            change.goal.clone(),
                            Inputs {
                                observation: change.observation,
                                tasks: change.tasks,
                            },
                        );
                    }
                    self.dirty.insert(change.goal);
                }
            }
        }
    }

    /// The plan of `spec` for what was observed, as [`super::plan`] makes it.
    pub fn plan(
        &mut self,
        spec: &Arc<Spec>,
        conditions: &Conditions,
        now: DateTime<Utc>,
    ) -> Vec<Action> {
        if let Some(suspended) = suspended(spec, conditions.stopped.as_deref()) {
            // Nothing is re-planned: what changed meanwhile stays marked for later.
            return vec![suspended];
        }
        if !self.spec.as_ref().is_some_and(|s| Arc::ptr_eq(s, spec)) {
            self.adopt(spec);
        }
        self.note_conditions(conditions);
        let replan = self.replanned();
        let world = World {
            spec,
            model_available: conditions.model_available,
            judge_available: conditions.judge_available,
            spending: &conditions.spending,
            now,
        };
        let met = |name: &str| self.met.get(name).copied().unwrap_or(false);
        let mut planned = Vec::with_capacity(replan.len());
        for name in &replan {
            let (Some(goal), Some(key)) = (spec.goal(name), self.keys.get(name)) else {
                continue;
            };
            let inputs = self.inputs.get(name);
            let tasks: Vec<&TaskObservation> =
                inputs.map(|i| i.tasks.iter().collect()).unwrap_or_default();
            let mut actions = Vec::new();
            world.goal_actions(
                goal,
                key,
                &tasks,
                inputs.and_then(|i| i.observation.as_ref()),
                &met,
                &mut actions,
            );
            planned.push((name.clone(), actions));
        }
        for (name, actions) in planned {
            if actions.is_empty() {
                self.actions.remove(&name);
            } else {
                self.actions.insert(name, actions);
            }
        }
        let mut all = orphans(
            self.undeclared
                .iter()
                .filter_map(|g| self.inputs.get(g))
                .filter_map(|i| live_of(i.tasks.iter())),
        );
        for name in &self.order {
            if let Some(actions) = self.actions.get(name) {
                all.extend(actions.iter().cloned());
            }
        }
        all
    }

    /// Takes `spec` as the declaration: everything is planned again.
    fn adopt(&mut self, spec: &Arc<Spec>) {
        self.spec = Some(spec.clone());
        self.keys = spec
            .goals
            .iter()
            .map(|g| (g.name().to_string(), spec.key_of(g).into_owned()))
            .collect();
        self.dependents.clear();
        for goal in &spec.goals {
            for dependency in &goal.spec.depends_on {
                self.dependents
                    .entry(dependency.clone())
                    .or_default()
                    .push(goal.name().to_string());
            }
        }
        self.order = in_order(spec).map(|g| g.name().to_string()).collect();
        self.scheduled = spec
            .goals
            .iter()
            .filter(|g| g.spec.schedule.is_some())
            .map(|g| g.name().to_string())
            .collect();
        self.model_goals = spec
            .goals
            .iter()
            .filter(|g| needs_model(&g.spec))
            .map(|g| g.name().to_string())
            .collect();
        self.note_undeclared();
        self.met.clear();
        self.actions.clear();
        self.everything = true;
    }

    /// The goals observed that the declaration does not hold.
    fn note_undeclared(&mut self) {
        self.undeclared = self
            .inputs
            .keys()
            .filter(|g| !self.keys.contains_key(*g))
            .cloned()
            .collect();
    }

    /// A model's availability changed: every goal; only the spending: the goals whose
    /// work needs a model.
    fn note_conditions(&mut self, conditions: &Conditions) {
        let flags = (conditions.model_available, conditions.judge_available);
        match &self.conditions {
            Some((model, judge, spending)) if (*model, *judge) == flags => {
                if *spending != conditions.spending {
                    self.dirty.extend(self.model_goals.iter().cloned());
                }
            }
            _ => self.everything = true,
        }
        self.conditions = Some((flags.0, flags.1, conditions.spending.clone()));
    }

    /// The declared goals to plan again (see the module), with whether each is met brought
    /// up to date first: a goal's plan reads its dependencies'.
    fn replanned(&mut self) -> Vec<String> {
        let mut replan: Vec<String> = if std::mem::take(&mut self.everything) {
            self.dirty.clear();
            self.order.clone()
        } else {
            let mut dirty: Vec<String> = self.dirty.drain().collect();
            dirty.extend(self.scheduled.iter().cloned());
            dirty
        };
        replan.retain(|g| self.keys.contains_key(g));
        let mut moved = Vec::new();
        for name in &replan {
            let met = met_at(
                self.inputs.get(name).and_then(|i| i.observation.as_ref()),
                &self.keys[name],
            );
            if self.met.insert(name.clone(), met) != Some(met) {
                moved.push(name.clone());
            }
        }
        let mut seen: HashSet<String> = replan.iter().cloned().collect();
        for name in moved {
            for dependent in self.dependents.get(&name).into_iter().flatten() {
                if seen.insert(dependent.clone()) {
                    replan.push(dependent.clone());
                }
            }
        }
        replan
    }
}

#[cfg(test)]
mod tests;
