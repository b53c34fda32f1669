//! Scheduling, pure: which computer each ready task runs on. Like `plan()`, it reads what it
//! is given and decides; the engine gathers the inputs (declared computers, what runs on
//! them, their health) and acts on the answer.
//!
//! A task may go to a computer that its product selects (`matchLabels`, else `names`, else
//! any), that has every capability the work needs, that is healthy and whose kind this
//! controller can drive, and that has room. Among those it goes to the least loaded (the
//! lowest share of its capacity in use), ties broken by name so the answer is stable.

use std::collections::{BTreeMap, BTreeSet};

use crate::spec::{Capability, ComputerSelector};

/// A computer as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Tasks running there now.
    pub running: u32,
    /// What it offers; none declared means a shell.
    pub capabilities: BTreeSet<Capability>,
    /// Whether it answers (and its breaker is closed).
    pub healthy: bool,
    /// Whether this controller can drive its kind (`local` today).
    pub usable: bool,
}

/// What one ready task asks of a computer.
#[derive(Clone, Debug, Default)]
pub struct Want<'a> {
    pub selector: Option<&'a ComputerSelector>,
    pub needs: BTreeSet<Capability>,
}

/// The computers of one pass, filling up as tasks are placed.
#[derive(Clone, Debug)]
pub struct Placer {
    slots: Vec<Slot>,
}

impl Placer {
    pub fn new(mut slots: Vec<Slot>) -> Placer {
        for slot in &mut slots {
            if slot.capabilities.is_empty() {
                slot.capabilities.insert(Capability::Shell);
            }
        }
        Placer { slots }
    }

    /// Tasks that can still start somewhere.
    pub fn room(&self) -> u32 {
        self.slots
            .iter()
            .filter(|s| s.usable && s.healthy)
            .map(|s| s.capacity.saturating_sub(s.running))
            .sum()
    }

    /// Whether any computer could ever take `want` (room aside): a task that none can is
    /// not worth waking up for.
    pub fn could_take(&self, want: &Want<'_>) -> bool {
        self.slots.iter().any(|s| eligible(s, want))
    }

    /// The computer `want` runs on, counted as busier by one; `None` when none has room.
    pub fn place(&mut self, want: &Want<'_>) -> Option<String> {
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| eligible(s, want) && s.running < s.capacity)
            .min_by(|a, b| {
                // running/capacity compared without division: a.r * b.c vs b.r * a.c.
                let left = u64::from(a.running) * u64::from(b.capacity);
                let right = u64::from(b.running) * u64::from(a.capacity);
                left.cmp(&right).then_with(|| a.name.cmp(&b.name))
            })?;
        slot.running += 1;
        Some(slot.name.clone())
    }
}

fn eligible(slot: &Slot, want: &Want<'_>) -> bool {
    slot.usable
        && slot.healthy
        && slot.capacity > 0
        && want.needs.is_subset(&slot.capabilities)
        && selects(want.selector, slot)
}

/// Whether a product's selector admits the computer.
fn selects(selector: Option<&ComputerSelector>, slot: &Slot) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    match (&selector.match_labels, &selector.names) {
        (Some(labels), _) => labels.iter().all(|(k, v)| slot.labels.get(k) == Some(v)),
        (None, Some(names)) => names.contains(&slot.name),
        (None, None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, capacity: u32, running: u32) -> Slot {
        Slot {
            name: name.into(),
            labels: BTreeMap::new(),
            capacity,
            running,
            capabilities: BTreeSet::new(),
            healthy: true,
            usable: true,
        }
    }

    fn labelled(name: &str, key: &str, value: &str) -> Slot {
        let mut s = slot(name, 2, 0);
        s.labels.insert(key.into(), value.into());
        s
    }

    fn want(selector: Option<&ComputerSelector>, needs: &[Capability]) -> Want<'static> {
        // The selector's lifetime is the test's: leaked, as tables are small.
        Want {
            selector: selector.map(|s| &*Box::leak(Box::new(s.clone()))),
            needs: needs.iter().copied().collect(),
        }
    }

    #[test]
    fn each_task_goes_to_the_least_loaded_computer_that_may_take_it() {
        let by_label = ComputerSelector {
            match_labels: Some([("gpu".to_string(), "yes".to_string())].into()),
            names: None,
        };
        let by_name = ComputerSelector {
            match_labels: None,
            names: Some(vec!["b".into()]),
        };
        let mut desktop = slot("desk", 1, 0);
        desktop.capabilities = [Capability::Gui, Capability::Shell].into();
        let mut sick = slot("sick", 4, 0);
        sick.healthy = false;
        let mut remote = slot("remote", 4, 0);
        remote.usable = false;
        type Case = (
            &'static str,
            Vec<Slot>,
            Vec<Want<'static>>,
            Vec<Option<&'static str>>,
        );
        let cases: Vec<Case> = vec![
            (
                "least loaded first, then by name",
                vec![slot("a", 2, 1), slot("b", 2, 0), slot("c", 4, 1)],
                vec![want(None, &[]), want(None, &[]), want(None, &[])],
                vec![Some("b"), Some("c"), Some("a")],
            ),
            (
                "full computers take nothing",
                vec![slot("a", 1, 1)],
                vec![want(None, &[])],
                vec![None],
            ),
            (
                "labels select",
                vec![slot("a", 2, 0), labelled("g", "gpu", "yes")],
                vec![want(Some(&by_label), &[]), want(Some(&by_label), &[])],
                vec![Some("g"), Some("g")],
            ),
            (
                "names select",
                vec![slot("a", 2, 0), slot("b", 1, 0)],
                vec![want(Some(&by_name), &[]), want(Some(&by_name), &[])],
                vec![Some("b"), None],
            ),
            (
                "capabilities: GUI work only on a desktop; a shell is implied",
                vec![slot("a", 4, 0), desktop.clone()],
                vec![
                    want(None, &[Capability::Gui]),
                    want(None, &[Capability::Shell]),
                ],
                vec![Some("desk"), Some("a")],
            ),
            (
                "unhealthy and undrivable computers take nothing",
                vec![sick.clone(), remote.clone(), slot("a", 1, 0)],
                vec![want(None, &[]), want(None, &[])],
                vec![Some("a"), None],
            ),
            (
                "zero capacity is no computer",
                vec![slot("a", 0, 0)],
                vec![want(None, &[])],
                vec![None],
            ),
        ];
        for (name, slots, wants, expected) in cases {
            let mut placer = Placer::new(slots);
            let got: Vec<Option<String>> = wants.iter().map(|w| placer.place(w)).collect();
            let expected: Vec<Option<String>> =
                expected.into_iter().map(|e| e.map(String::from)).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn room_counts_only_computers_that_can_run_work() {
        let mut sick = slot("sick", 4, 0);
        sick.healthy = false;
        let placer = Placer::new(vec![slot("a", 3, 1), sick, slot("b", 1, 1)]);
        assert_eq!(placer.room(), 2);
        assert!(placer.could_take(&want(None, &[])));
        assert!(!placer.could_take(&want(None, &[Capability::Browser])));
    }
}
