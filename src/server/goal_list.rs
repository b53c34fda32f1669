//! The list of every goal (`GET /api/v1/goals`), rebuilt from what changed since the last
//! one. At 10,000 goals the list is megabytes, rebuilt several times a second while tasks
//! run: built from every goal's stored status each time, each rebuild read all of them
//! (a map of megabytes) and serialized every goal again, for the handful that changed.
//!
//! So the list keeps what each goal's item was made from: its declaration (the same
//! allocation while the declaration is unchanged: revisions share the resources of files
//! that did not change), its spend and its task ids, and the store's count of status
//! changes it is current to. A rebuild reads only the statuses written since that count;
//! a goal whose status, declaration, spend and tasks are all as they were keeps its item's
//! bytes, copied from the last list.

use std::collections::HashMap;
use std::sync::Arc;

use super::api::{ApiError, GoalView};
use super::listing::Listing;
use crate::spec::{Declared, GoalSpec, Spec};
use crate::store::{Store, TaskId};

/// The list, and what each of its items was made from.
pub struct GoalList {
    pub listing: Listing,
    /// The store's count of goal-status changes the list is current to.
    change: i64,
    parts: HashMap<String, Part>,
}

/// What one goal's item was made from.
struct Part {
    /// Held, so that a declaration at the same address is this one.
    goal: Declared<GoalSpec>,
    spent: f64,
    tasks: Vec<TaskId>,
}

impl Part {
    fn is(&self, goal: &Declared<GoalSpec>, spent: f64, tasks: &[TaskId]) -> bool {
        Arc::ptr_eq(&self.goal, goal)
            && self.spent.to_bits() == spent.to_bits()
            && self.tasks == tasks
    }
}

/// Every goal of `spec` in its order, with its status, spend and task ids, reusing the items
/// of `last` that nothing changed.
pub fn build(spec: &Spec, last: Option<&GoalList>, store: &Store) -> Result<GoalList, ApiError> {
    let (change, mut changed) = store.goal_statuses_since(last.map(|l| l.change))?;
    let usd = store.usd_by_goal()?;
    let mut tasks = store.task_ids_by_goal()?;
    let mut builder = Listing::builder(last.map(|l| &l.listing));
    let mut parts = HashMap::with_capacity(spec.goals.len());
    for goal in &spec.goals {
        let name = goal.name();
        let ids = tasks.remove(name).unwrap_or_default();
        let spent = usd.get(name).copied().unwrap_or(0.0);
        let status = changed.remove(name);
        let kept = match (last, &status) {
            (Some(last), None) => last
                .parts
                .get(name)
                .filter(|part| part.is(goal, spent, &ids))
                .and_then(|_| last.listing.item(name)),
            _ => None,
        };
        match kept {
            Some(bytes) => builder.raw(name.to_string(), bytes),
            None => {
                // A goal whose status is unchanged but whose item is not (a new task, a
                // changed declaration) embeds its status as stored.
                let status = match status {
                    Some(status) => Some(status),
                    None => store.goal_status(name)?,
                };
                let view = GoalView::of(goal, status, spent, &ids);
                builder
                    .item(name.to_string(), &view)
                    .map_err(ApiError::internal)?;
            }
        }
        let part = Part {
            goal: goal.clone(),
            spent,
            tasks: ids,
        };
        parts.insert(name.to_string(), part);
    }
    Ok(GoalList {
        listing: builder.finish(),
        change,
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{goal, spec};
    use crate::spec::Priority;
    use crate::store::NewTask;
    use chrono::Utc;

    fn items(list: &GoalList) -> Vec<serde_json::Value> {
        let page = list.listing.page(None, None).unwrap();
        serde_json::from_slice(&page.body).unwrap()
    }

    fn save(store: &Store, goals: &[(&str, usize, &str)], removed: &[&str]) {
        let rows: Vec<(String, usize, String)> = goals
            .iter()
            .map(|(name, at, phase)| {
                let body = serde_json::json!({ "name": name, "phase": phase });
                (name.to_string(), *at, body.to_string())
            })
            .collect();
        let removed: Vec<String> = removed.iter().map(|r| r.to_string()).collect();
        store
            .save_status("{}", &rows, &[], &removed, Utc::now())
            .unwrap();
    }

    fn same_bytes(a: &GoalList, b: &GoalList, name: &str) -> bool {
        a.listing.item(name).unwrap() == b.listing.item(name).unwrap()
    }

    #[test]
    fn a_rebuild_changes_exactly_the_goals_whose_status_tasks_or_declaration_changed() {
        let store = Store::in_memory().unwrap();
        let goals = ["a", "b", "c"].map(|n| goal(n, "medium", ""));
        let first_spec = spec(false, &goals);
        save(&store, &[("a", 0, "Pending"), ("b", 1, "Pending")], &[]);
        let first = build(&first_spec, None, &store).unwrap();
        let all = items(&first);
        let names: Vec<&str> = all.iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(all[0]["status"]["phase"], "Pending");
        assert!(all[2]["status"].is_null(), "c has no status yet");

        // Nothing changed: the same bytes.
        let again = build(&first_spec, Some(&first), &store).unwrap();
        assert_eq!(
            again.listing.page(None, None).unwrap().body,
            first.listing.page(None, None).unwrap().body
        );

        // a's status changes, b gets a task; c is untouched.
        save(&store, &[("a", 0, "Met")], &[]);
        let task = store
            .enqueue(
                &NewTask {
                    key: "b-key".into(),
                    goal: "b".into(),
                    product: "app".into(),
                    owner: "ceo".into(),
                    priority: Priority::Medium,
                    max_attempts: 3,
                    revision: "r1".into(),
                    parent: None,
                },
                Utc::now(),
            )
            .unwrap()
            .unwrap();
        let second = build(&first_spec, Some(&again), &store).unwrap();
        let all = items(&second);
        assert_eq!(all[0]["status"]["phase"], "Met");
        assert_eq!(all[1]["tasks"], serde_json::json!([task]));
        assert_eq!(all[1]["status"]["phase"], "Pending", "b's status as stored");
        assert!(same_bytes(&again, &second, "c"));

        // A new revision: c's declaration changes, a and b are the same files' resources.
        let mut next_spec = first_spec.clone();
        next_spec.goals[2] = Arc::new((*spec(false, &[goal("c", "high", "")]).goals[0]).clone());
        let third = build(&next_spec, Some(&second), &store).unwrap();
        assert_eq!(items(&third)[2]["priority"], "high");
        assert!(same_bytes(&second, &third, "a") && same_bytes(&second, &third, "b"));

        // A status removed and written again later is seen again: the change count never
        // goes back, though the removed row held the largest mark.
        save(&store, &[], &["a"]);
        save(&store, &[("a", 0, "Failing")], &[]);
        let fourth = build(&next_spec, Some(&third), &store).unwrap();
        assert_eq!(items(&fourth)[0]["status"]["phase"], "Failing");
        assert!(same_bytes(&third, &fourth, "b") && same_bytes(&third, &fourth, "c"));
    }
}
