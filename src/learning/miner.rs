//! The miner's pure core: from the failures the store recorded, the ones that keep coming
//! back. A failure's key is its normalized error ([`signature`]: numbers, hashes, paths and
//! times taken out), the tool whose step failed, and the kind of the goal's check; a key
//! seen in at least [`THRESHOLD`] different tasks is a problem worth a goal of its own. Each
//! is returned with its evidence and the Goal that would fix it, named from the key so the
//! same problem always makes the same proposal (and so is proposed once).
//!
//! Besides failures: a check that flaps ([`flapping`]) and an agent whose dollars per goal
//! met are far above its peers' ([`costly`]).
//!
//! No I/O here: [`super::mine`] reads the store, asks this, and writes the proposals.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};

use crate::knowledge::capture::{short_hash, signature, slug_of};

/// Different tasks a failure must be seen in before a goal is proposed for it.
pub const THRESHOLD: usize = 5;
/// The check kind of refused calls: a refusal is its own kind of failure.
pub const REFUSED: &str = "refused";
/// Evidence lines a proposal lists at most (the count says how many there were).
const EVIDENCE_LINES: usize = 20;

/// One failed attempt, as the miner reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub task: i64,
    pub goal: String,
    pub product: String,
    pub owner: String,
    /// The kind of the goal's check (`command`, `http`, `file`, `judge`).
    pub check: String,
    pub error: String,
    pub time: DateTime<Utc>,
    /// The tool, when it is known (a refused call); else read from the error.
    pub tool: Option<String>,
}

impl Failure {
    /// The tool whose step failed: a refused call's own, or as the error names it — a
    /// playbook step names its action (`step 2 (run): ...`), a failed check or delivery
    /// says so; anything else is the agent's own work.
    pub fn tool(&self) -> String {
        if let Some(tool) = &self.tool {
            return tool.clone();
        }
        let error = self.error.trim_start();
        if let Some(rest) = error.strip_prefix("step ")
            && let Some(open) = rest.find('(')
            && let Some(close) = rest[open..].find(')')
        {
            return rest[open + 1..open + close].to_string();
        }
        if error.starts_with("the check") {
            "check".into()
        } else if error.starts_with("push") || error.starts_with("commit") {
            "delivery".into()
        } else {
            "agent".into()
        }
    }

    /// What makes two failures the same problem.
    pub fn key(&self) -> Key {
        Key {
            signature: signature(&self.error),
            tool: self.tool(),
            check: self.check.clone(),
        }
    }
}

/// A failure's identity across runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub signature: String,
    pub tool: String,
    pub check: String,
}

impl Key {
    /// The proposed goal's name (a DNS label), which is also its proposal's slug.
    pub fn name(&self) -> String {
        let words: String = slug_of(&self.signature).chars().take(30).collect();
        let words = words.trim_end_matches('-');
        let hash = short_hash(&format!(
            "{}\n{}\n{}",
            self.signature, self.tool, self.check
        ));
        format!("fix-{words}-{hash}")
    }
}

/// A problem that keeps coming back, with the goal proposed for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub key: Key,
    /// The proposed goal's name and the proposal's slug.
    pub name: String,
    /// The goals it failed, most failed first.
    pub goals: Vec<String>,
    /// Where the proposed goal lives: the product and owner of the goal failed most.
    pub product: String,
    pub owner: String,
    /// How many failures, in how many tasks.
    pub failures: usize,
    pub tasks: usize,
    /// One line per failure (the most recent [`EVIDENCE_LINES`]).
    pub evidence: Vec<String>,
}

/// The problems among `failures` seen in at least `threshold` tasks that are not `taken`
/// (proposed already, or a declared goal of that name), in name order.
pub fn mine(failures: &[Failure], threshold: usize, taken: &dyn Fn(&str) -> bool) -> Vec<Found> {
    let mut groups: BTreeMap<Key, Vec<&Failure>> = BTreeMap::new();
    for failure in failures {
        groups.entry(failure.key()).or_default().push(failure);
    }
    let mut found: Vec<Found> = groups
        .into_iter()
        .filter_map(|(key, mut seen)| {
            let tasks: BTreeSet<i64> = seen.iter().map(|f| f.task).collect();
            if tasks.len() < threshold.max(1) {
                return None;
            }
            let name = key.name();
            if taken(&name) {
                return None;
            }
            seen.sort_by(|a, b| a.time.cmp(&b.time).then(a.task.cmp(&b.task)));
            let mut per_goal: BTreeMap<&str, (usize, &Failure)> = BTreeMap::new();
            for f in &seen {
                per_goal.entry(&f.goal).or_insert((0, f)).0 += 1;
            }
            let mut goals: Vec<(&str, usize, &Failure)> =
                per_goal.into_iter().map(|(g, (n, f))| (g, n, f)).collect();
            goals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let top = goals.first().map(|g| g.2)?;
            let evidence = seen
                .iter()
                .rev()
                .take(EVIDENCE_LINES)
                .rev()
                .map(|f| {
                    let line: String = f
                        .error
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect();
                    format!(
                        "{} task {} goal {}: {line}",
                        f.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                        f.task,
                        f.goal
                    )
                })
                .collect();
            Some(Found {
                name,
                goals: goals.iter().map(|g| g.0.to_string()).collect(),
                product: top.product.clone(),
                owner: top.owner.clone(),
                failures: seen.len(),
                tasks: tasks.len(),
                evidence,
                key,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The check kind of a flapping check's problem.
pub const FLAPPING: &str = "flapping";
/// Flips between met and failed a goal's attempts must show to be called flapping.
pub const FLIPS: usize = 4;

/// How one attempt of a goal ended, for [`flapping`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub task: i64,
    pub goal: String,
    pub product: String,
    pub owner: String,
    pub met: bool,
    pub time: DateTime<Utc>,
}

/// Goals whose tasks (each by how its last attempt ended) flip between met and failed at
/// least `flips` times in time order, not `taken`: a check (or a product) that does not say
/// the same thing twice.
pub fn flapping(outcomes: &[Outcome], flips: usize, taken: &dyn Fn(&str) -> bool) -> Vec<Found> {
    let mut by_goal: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        by_goal.entry(&o.goal).or_default().push(o);
    }
    by_goal
        .into_iter()
        .filter_map(|(goal, mut seen)| {
            seen.sort_by(|a, b| a.time.cmp(&b.time).then(a.task.cmp(&b.task)));
            // A task's retries before it met the goal are work, not flapping: each task
            // counts by how it ended.
            let mut ended: Vec<&Outcome> = Vec::new();
            for o in seen {
                match ended.last_mut() {
                    Some(last) if last.task == o.task => *last = o,
                    _ => ended.push(o),
                }
            }
            let seen = ended;
            let flipped: Vec<&Outcome> = seen
                .windows(2)
                .filter(|w| w[0].met != w[1].met)
                .map(|w| w[1])
                .collect();
            if flipped.len() < flips.max(1) {
                return None;
            }
            let key = Key {
                signature: format!("the check of {goal} flips between passing and failing"),
                tool: "check".into(),
                check: FLAPPING.into(),
            };
            let name = key.name();
            if taken(&name) {
                return None;
            }
            let tasks: BTreeSet<i64> = seen.iter().map(|o| o.task).collect();
            let first = seen.first()?;
            Some(Found {
                evidence: flipped
                    .iter()
                    .rev()
                    .take(EVIDENCE_LINES)
                    .rev()
                    .map(|o| {
                        format!(
                            "{} task {} goal {goal}: {}",
                            o.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                            o.task,
                            if o.met { "met" } else { "failed" }
                        )
                    })
                    .collect(),
                name,
                goals: vec![goal.to_string()],
                product: first.product.clone(),
                owner: first.owner.clone(),
                failures: flipped.len(),
                tasks: tasks.len(),
                key,
            })
        })
        .collect()
}

/// The check kind of an agent that spends far more than its peers per goal met.
pub const COSTLY: &str = "costly";
/// How many times the company's median dollars per met goal an agent must spend to be an
/// outlier.
pub const OUTLIER: f64 = 3.0;
/// Goals an agent must have met before its spend per goal is compared: a ratio over one or
/// two goals says nothing.
pub const MIN_MET: usize = 3;

/// One task's model spend, as the miner reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Spend {
    pub task: i64,
    pub goal: String,
    pub product: String,
    /// The agent that made the calls.
    pub agent: String,
    pub usd: f64,
    /// Whether the task met its goal.
    pub met: bool,
}

/// Agents whose dollars per goal met (every call of theirs, met or not, over the distinct
/// goals their tasks met) are at least `factor` times the median of the agents compared
/// (those with `min_met` goals met, at least three of them), not `taken`.
pub fn costly(
    spends: &[Spend],
    factor: f64,
    min_met: usize,
    taken: &dyn Fn(&str) -> bool,
) -> Vec<Found> {
    struct Tally<'a> {
        usd: f64,
        met: BTreeSet<&'a str>,
        tasks: BTreeSet<i64>,
        product: &'a str,
        per_goal: BTreeMap<&'a str, f64>,
    }
    let mut agents: BTreeMap<&str, Tally<'_>> = BTreeMap::new();
    for s in spends {
        let tally = agents.entry(&s.agent).or_insert_with(|| Tally {
            usd: 0.0,
            met: BTreeSet::new(),
            tasks: BTreeSet::new(),
            product: &s.product,
            per_goal: BTreeMap::new(),
        });
        tally.usd += s.usd;
        tally.tasks.insert(s.task);
        *tally.per_goal.entry(&s.goal).or_default() += s.usd;
        if s.met {
            tally.met.insert(&s.goal);
        }
    }
    let rates: Vec<(&str, f64)> = agents
        .iter()
        .filter(|(_, t)| t.met.len() >= min_met.max(1))
        .map(|(agent, t)| (*agent, t.usd / t.met.len() as f64))
        .collect();
    if rates.len() < 3 {
        return Vec::new();
    }
    let mut sorted: Vec<f64> = rates.iter().map(|r| r.1).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    if median <= 0.0 {
        return Vec::new();
    }
    rates
        .into_iter()
        .filter(|(_, rate)| *rate >= factor * median)
        .filter_map(|(agent, rate)| {
            let key = Key {
                signature: format!(
                    "{agent} spends ${rate:.2} per goal met, {:.1} times the company's median of ${median:.2}",
                    rate / median
                ),
                tool: agent.to_string(),
                check: COSTLY.into(),
            };
            // Named by the agent alone, so the same outlier is proposed once.
            let name = Key {
                signature: format!("{agent} spends more per goal than its peers"),
                tool: agent.to_string(),
                check: COSTLY.into(),
            }
            .name();
            if taken(&name) {
                return None;
            }
            let tally = agents.get(agent)?;
            let mut goals: Vec<(&str, f64)> =
                tally.per_goal.iter().map(|(g, usd)| (*g, *usd)).collect();
            goals.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            Some(Found {
                evidence: goals
                    .iter()
                    .take(EVIDENCE_LINES)
                    .map(|(goal, usd)| {
                        let met = if tally.met.contains(goal) { "met" } else { "not met" };
                        format!("goal {goal}: ${usd:.2} spent by {agent}, {met}")
                    })
                    .collect(),
                name,
                goals: goals.iter().map(|g| g.0.to_string()).collect(),
                product: tally.product.to_string(),
                owner: agent.to_string(),
                failures: tally.met.len(),
                tasks: tally.tasks.len(),
                key,
            })
        })
        .collect()
}

/// The proposed Goal as a file of the company repository: the evidence as comments a
/// reviewer reads first, then the Goal. Its check is a rubric a judge grades against the
/// product, since what fixes a recurring failure is for the work to find out.
pub fn goal_yaml(found: &Found) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "# Proposed by proto's miner: the same failure was seen {} times in {} tasks.\n\
         # Merge this branch to add the goal; delete the branch to decline it.\n\
         # Signature: {}\n# Tool: {}  Check kind: {}\n# Evidence:\n",
        found.failures, found.tasks, found.key.signature, found.key.tool, found.key.check
    );
    for line in &found.evidence {
        text.push_str(&format!("#   {}\n", line.replace('\n', " ")));
    }
    let description = if found.key.check == COSTLY {
        format!(
            "{}. Find why (a model above what the work needs, a prompt or skill that sends it round in circles, a tool it lacks) and bring its spend per goal near its peers'.",
            found.key.signature
        )
    } else if found.key.check == FLAPPING {
        format!(
            "The check of {} flips between passing and failing ({} flips in {} tasks): make the check deterministic, or the product stable.",
            found.goals.join(", "),
            found.failures,
            found.tasks
        )
    } else if found.key.check == REFUSED {
        format!(
            "Work on {} keeps being refused the same call ({} times in {} tasks): {}. Grant what the work needs, or change the agent's instructions so it stops asking.",
            found.goals.join(", "),
            found.failures,
            found.tasks,
            found.key.signature
        )
    } else {
        format!(
            "Find and remove the cause of a recurring failure of {} ({} failures in {} tasks): {}",
            found.goals.join(", "),
            found.failures,
            found.tasks,
            found.key.signature
        )
    };
    let rubric = if found.key.check == COSTLY {
        format!(
            "The reason {} spends more per goal than its peers is found, and its declaration changed so that it no longer does.",
            found.key.tool
        )
    } else {
        format!(
            "The cause of the failure \"{}\" is found and fixed in the product, with a test or check that would catch it again.",
            found.key.signature
        )
    };
    text.push_str(&format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata:\n  name: {}\nspec:\n  product: {}\n  owner: {}\n  priority: medium\n  description: {}\n  check:\n    judge:\n      rubric: {}\n",
        found.name,
        q(&found.product),
        q(&found.owner),
        q(&description),
        q(&rubric)
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(task: i64, goal: &str, agent: &str, usd: f64, met: bool) -> Spend {
        Spend {
            task,
            goal: goal.into(),
            product: "app".into(),
            agent: agent.into(),
            usd,
            met,
        }
    }

    #[test]
    fn an_agent_far_above_its_peers_per_goal_met_is_proposed_once() {
        let mut spends = Vec::new();
        let mut task = 0;
        for (agent, usd) in [
            ("dev", 0.10),
            ("qa", 0.12),
            ("docs", 0.08),
            ("lavish", 0.50),
        ] {
            for g in 0..3 {
                task += 1;
                spends.push(spend(task, &format!("{agent}-g{g}"), agent, usd, true));
            }
        }
        // A failed, costly attempt counts against the agent too.
        spends.push(spend(99, "lavish-g0", "lavish", 0.30, false));
        let found = costly(&spends, OUTLIER, MIN_MET, &|_| false);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].owner, "lavish");
        assert_eq!(found[0].key.check, COSTLY);
        assert_eq!(found[0].tasks, 4);
        assert!(
            found[0].key.signature.contains("per goal met"),
            "{:?}",
            found[0].key
        );
        assert!(goal_yaml(&found[0]).contains("owner: \"lavish\""));
        // Proposed already: not again, whatever the figures are now.
        let name = found[0].name.clone();
        assert!(costly(&spends, OUTLIER, MIN_MET, &|n| n == name).is_empty());
        // Too few goals met, or too few peers: nothing is compared.
        assert!(costly(&spends, OUTLIER, 4, &|_| false).is_empty());
        let two: Vec<Spend> = spends
            .iter()
            .filter(|s| s.agent == "dev" || s.agent == "lavish")
            .cloned()
            .collect();
        assert!(costly(&two, OUTLIER, MIN_MET, &|_| false).is_empty());
    }

    fn failure(task: i64, goal: &str, error: &str) -> Failure {
        Failure {
            task,
            goal: goal.into(),
            product: "app".into(),
            owner: "ceo".into(),
            check: "command".into(),
            error: error.into(),
            time: DateTime::from_timestamp(1_800_000_000 + task, 0).unwrap(),
            tool: None,
        }
    }

    #[test]
    fn a_failure_in_five_tasks_is_one_problem_and_fewer_are_none() {
        let failures: Vec<Failure> = (1..=6)
            .map(|t| {
                failure(
                    t,
                    if t % 2 == 0 { "a" } else { "b" },
                    &format!(
                        "step 1 (run): exit status 1: build failed at {t}:0{t}:00 in /tmp/w{t}"
                    ),
                )
            })
            .collect();
        let found = mine(&failures, THRESHOLD, &|_| false);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!((f.failures, f.tasks), (6, 6));
        assert_eq!(f.key.tool, "run");
        assert!(
            f.name.starts_with("fix-step-n-run-exit-status-n-build"),
            "{}",
            f.name
        );
        assert!(f.name.len() <= 63);
        assert_eq!(f.evidence.len(), 6);
        // The same failures again are the same proposal; a taken one is not proposed.
        assert_eq!(mine(&failures, THRESHOLD, &|_| false)[0].name, f.name);
        assert!(mine(&failures, THRESHOLD, &|n| n == f.name).is_empty());
        // Four tasks are not enough, however often each failed.
        let few: Vec<Failure> = failures.iter().take(4).cloned().collect();
        let twice: Vec<Failure> = few.iter().chain(few.iter()).cloned().collect();
        assert!(mine(&twice, THRESHOLD, &|_| false).is_empty());
        // Another tool or check kind is another problem.
        let mut other = failures.clone();
        for f in &mut other {
            f.check = "http".into();
        }
        assert_ne!(mine(&other, THRESHOLD, &|_| false)[0].name, f.name);
    }

    #[test]
    fn a_goal_flipping_between_met_and_failed_is_flapping() {
        let outcome = |task: i64, met: bool| Outcome {
            task,
            goal: "api".into(),
            product: "app".into(),
            owner: "ceo".into(),
            met,
            time: DateTime::from_timestamp(1_800_000_000 + task, 0).unwrap(),
        };
        let steady: Vec<Outcome> = [false, false, true, true, true]
            .iter()
            .enumerate()
            .map(|(i, m)| outcome(i as i64, *m))
            .collect();
        assert!(flapping(&steady, FLIPS, &|_| false).is_empty());
        let flaps: Vec<Outcome> = [true, false, true, false, true, true]
            .iter()
            .enumerate()
            .map(|(i, m)| outcome(i as i64, *m))
            .collect();
        // One task failing then met is one ending.
        let mut retried = outcome(1, false);
        retried.time = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(flapping(&[retried, outcome(1, true)], 1, &|_| false).is_empty());
        let found = flapping(&flaps, FLIPS, &|_| false);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].failures, 4);
        assert!(goal_yaml(&found[0]).contains("flips between passing and failing"));
    }

    #[test]
    fn the_proposed_goal_is_a_valid_declaration() {
        let failures: Vec<Failure> = (1..=5)
            .map(|t| failure(t, "a", "the check still fails: exit status 2"))
            .collect();
        let found = mine(&failures, THRESHOLD, &|_| false).remove(0);
        let yaml = goal_yaml(&found);
        assert!(yaml.contains("# Evidence:\n#   "), "{yaml}");
        let file = crate::spec::yaml::parse_one(
            &yaml
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap();
        assert_eq!(file.get("kind").unwrap().scalar_text(), "Goal");
    }
}
