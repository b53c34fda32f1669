//! Self-improvement: the miner's edges. [`mine`] reads the failures the store recorded (failed
//! attempts, and calls refused again and again) and the spend of each agent's tasks, asks the pure [`miner`] which keep coming
//! back, and proposes a Goal for each on its own branch of the company repository,
//! `proto/proposals/<slug>`, through the same [`Writeback`] the controller records with —
//! never on the watched branch: a proposal takes effect only when a person merges it, after
//! the review any change gets. A problem already proposed, or whose goal is declared, is not
//! proposed again.
//!
//! The controller mines every `learning.minerInterval` (default [`DEFAULT_MINER_INTERVAL`]);
//! `proto mine` does it once, now. [`distill`] is the pure half of playbook distillation.

pub mod distill;
pub mod miner;

use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::gitops::{FileChange, GitopsError, Identity, Writeback};
use crate::source::GitSource;
use crate::spec::Spec;
use crate::store::{AttemptOutcome, EventKind, Proposal, Store, StoreError};

/// How often the controller mines when the Company does not say.
pub const DEFAULT_MINER_INTERVAL: Duration = Duration::from_secs(100);
/// Events read per page.
const PAGE: usize = 1000;

#[derive(Debug, Error)]
pub enum LearningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("proposal {slug}: {source}")]
    Publish {
        slug: String,
        #[source]
        source: GitopsError,
    },
}

/// The branch a proposal lives on.
pub fn proposal_branch(slug: &str) -> String {
    format!("proto/proposals/{slug}")
}

/// The proposed goal's file, relative to the declaration folder.
pub fn proposal_file(slug: &str) -> String {
    format!("goals/proposals/{slug}.yaml")
}

/// The Company's `learning.minerInterval`, else the default.
pub fn miner_interval(spec: &Spec) -> Duration {
    spec.company()
        .and_then(|c| c.spec.learning.as_ref())
        .and_then(|l| l.miner_interval.as_deref())
        .and_then(|t| crate::spec::duration::parse_duration(t).ok())
        .unwrap_or(DEFAULT_MINER_INTERVAL)
}

/// Every failed attempt the store's event log holds of a goal `spec` declares.
pub fn failures(store: &Store, spec: &Spec) -> Result<Vec<miner::Failure>, StoreError> {
    Ok(history(store, spec)?.0)
}

/// The failures (failed attempts and refused calls) and every met or failed attempt's
/// outcome, of the goals `spec` declares.
fn history(
    store: &Store,
    spec: &Spec,
) -> Result<(Vec<miner::Failure>, Vec<miner::Outcome>), StoreError> {
    let mut out = Vec::new();
    let mut outcomes = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events(after, PAGE)?;
        let Some(last) = page.last().map(|e| e.id) else {
            break;
        };
        after = last;
        for event in page {
            if event.kind != EventKind::AttemptFinished {
                continue;
            }
            let (Some(task), Some(goal)) = (event.task, event.goal.as_deref()) else {
                continue;
            };
            let Ok(outcome) =
                serde_json::from_value::<AttemptOutcome>(event.data["outcome"].clone())
            else {
                continue;
            };
            let Some(declared) = spec.goal(goal) else {
                continue;
            };
            let error = match outcome {
                AttemptOutcome::Failed { error } | AttemptOutcome::Undelivered { error } => error,
                AttemptOutcome::Succeeded { .. } => {
                    outcomes.push(miner::Outcome {
                        task,
                        goal: goal.to_string(),
                        product: declared.spec.product.clone(),
                        owner: declared.spec.owner.clone(),
                        met: true,
                        time: event.time,
                    });
                    continue;
                }
                _ => continue,
            };
            outcomes.push(miner::Outcome {
                task,
                goal: goal.to_string(),
                product: declared.spec.product.clone(),
                owner: declared.spec.owner.clone(),
                met: false,
                time: event.time,
            });
            let check = &declared.spec.check;
            let kind = if check.command.is_some() {
                "command"
            } else if check.http.is_some() {
                "http"
            } else if check.file.is_some() {
                "file"
            } else {
                "judge"
            };
            out.push(miner::Failure {
                task,
                goal: goal.to_string(),
                product: declared.spec.product.clone(),
                owner: declared.spec.owner.clone(),
                check: kind.to_string(),
                error,
                time: event.time,
                tool: None,
            });
        }
    }
    // A call refused again and again is a failure too: of the agent's grants or its
    // instructions.
    for record in store.refusals()? {
        let (Some(task), Some(goal)) = (record.task, record.goal.as_deref()) else {
            continue;
        };
        let Some(declared) = spec.goal(goal) else {
            continue;
        };
        let why = record
            .outcome
            .get("denied")
            .or_else(|| record.outcome.get("refused"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        out.push(miner::Failure {
            task,
            goal: goal.to_string(),
            product: declared.spec.product.clone(),
            owner: declared.spec.owner.clone(),
            check: miner::REFUSED.to_string(),
            error: format!("{} was refused {}: {why}", record.agent, record.action),
            time: record.time,
            tool: Some(record.action.clone()),
        });
    }
    Ok((out, outcomes))
}

/// Mines the store's failures and proposes a goal for each new recurring one, each on its
/// own branch of `company` (committed as `author`, pushed when `push`). Returns the
/// proposals made now.
pub fn mine(
    store: &Store,
    spec: &Spec,
    company: &GitSource,
    author: &Identity,
    push: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Proposal>, LearningError> {
    let (failures, outcomes) = history(store, spec)?;
    // A published proposal, or a declared goal, is taken; an unpublished one is published
    // again (its commit failed last time).
    let published: std::collections::BTreeSet<String> = store
        .proposals()?
        .into_iter()
        .filter(|p| p.commit.is_some())
        .map(|p| p.slug)
        .collect();
    let taken = |name: &str| published.contains(name) || spec.goal(name).is_some();
    let mut made = Vec::new();
    let met: std::collections::HashSet<i64> =
        outcomes.iter().filter(|o| o.met).map(|o| o.task).collect();
    let spends: Vec<miner::Spend> = store
        .spend_by_agent_and_task()?
        .into_iter()
        .filter(|s| spec.goal(&s.goal).is_some())
        .map(|s| miner::Spend {
            met: met.contains(&s.task),
            task: s.task,
            goal: s.goal,
            product: s.product,
            agent: s.agent,
            usd: s.usd,
        })
        .collect();
    let found = miner::mine(&failures, miner::THRESHOLD, &taken)
        .into_iter()
        .chain(miner::flapping(&outcomes, miner::FLIPS, &taken))
        .chain(miner::costly(
            &spends,
            miner::OUTLIER,
            miner::MIN_MET,
            &taken,
        ));
    for found in found {
        let slug = found.name.clone();
        let branch = proposal_branch(&slug);
        let mut proposal = Proposal {
            slug: slug.clone(),
            goal: found.name.clone(),
            reason: match found.key.check.as_str() {
                miner::REFUSED => "refused",
                miner::FLAPPING => "flapping",
                miner::COSTLY => "costly",
                _ => "failure",
            }
            .into(),
            evidence: found.evidence.clone(),
            branch: branch.clone(),
            commit: None,
            proposed: now,
        };
        store.propose(&proposal)?;
        let publish = |e| LearningError::Publish {
            slug: slug.clone(),
            source: e,
        };
        let writer =
            Writeback::new(company, Some(&branch), author.clone(), push).map_err(publish)?;
        let change = FileChange::Write {
            path: proposal_file(&slug),
            content: miner::goal_yaml(&found).into_bytes(),
        };
        let message = format!(
            "Propose goal {slug}: a failure seen {} times in {} tasks\n\n{}\n",
            found.failures,
            found.tasks,
            found
                .evidence
                .iter()
                .map(|l| format!("- {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let commit = writer
            .commit(&[change], &message)
            .map_err(publish)?
            // Nothing new: the branch already holds this very proposal.
            .unwrap_or_else(|| "unchanged".into());
        store.proposal_published(&slug, &commit)?;
        tracing::warn!(goal = %slug, branch = %branch, "proposed an improvement goal: merge {branch} to adopt it");
        proposal.commit = Some(commit);
        made.push(proposal);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MemTree;
    use crate::store::{AuditRecord, NewTask};

    #[test]
    fn calls_refused_in_five_tasks_are_one_problem_and_approvals_are_not_refusals() {
        let mut tree = MemTree::new("test");
        tree.insert(
            "goals.yaml",
            "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: ship}\nspec:\n  product: p\n  owner: a\n  description: d\n  check:\n    command: {run: 'true'}\n".to_string(),
        );
        let spec = crate::spec::load(&tree).0;
        let store = Store::in_memory().unwrap();
        let now = Utc::now();
        for i in 0..6 {
            let task = store
                .enqueue(
                    &NewTask {
                        key: format!("ship-{i}"),
                        goal: "ship".into(),
                        product: "p".into(),
                        owner: "a".into(),
                        priority: crate::spec::Priority::Medium,
                        max_attempts: 1,
                        revision: "r".into(),
                        parent: None,
                    },
                    now,
                )
                .unwrap()
                .unwrap();
            let record = |outcome: serde_json::Value| AuditRecord {
                id: 0,
                time: now,
                agent: "a".into(),
                goal: Some("ship".into()),
                task: Some(task),
                action: "run".into(),
                input: serde_json::json!({"command": format!("npm publish --tag {i}")}),
                outcome,
                diff: None,
            };
            store
                .audit(&record(serde_json::json!({"refused": format!("refused by the permission rules: deny Bash(npm publish:*) at rule {i}")})))
                .unwrap();
            store
                .audit(&record(
                    serde_json::json!({"refused": "needs a person's approval first: gated"}),
                ))
                .unwrap();
        }
        assert_eq!(store.refusals().unwrap().len(), 6);
        let failures = failures(&store, &spec).unwrap();
        let found = miner::mine(&failures, miner::THRESHOLD, &|_| false);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].key.tool, "run");
        assert_eq!(found[0].key.check, miner::REFUSED);
        assert!(miner::goal_yaml(&found[0]).contains("keeps being refused"));
    }
}
