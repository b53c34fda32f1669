//! One attempt at one task: prepare the workspace, check the goal (it may already hold),
//! run the playbook step by step through `act()`, check again, and push the work to the
//! product's branch when the check passes.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::agent::{Builder, Place, Setup};
use crate::check::{CheckResult, run_check};
use crate::computer::{Computer, WorkspaceSpec};
use crate::gitops::Identity;
use crate::gitops::delivery::{DeliveryError, Git, Lost, review_branch};
use crate::plan::GoalObservation;
use crate::policy::{ActError, Actor, ToolCall, act};
use crate::spec::{AgentSpec, GoalSpec, Step};
use crate::store::{AttemptOutcome, Store, Task};

use super::records::LastCheck;

/// Timeout of a playbook `run` step (steps have none of their own yet).
pub const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// What a worker needs; owned, so it can run on its own tokio task.
pub struct Work {
    pub store: Arc<Store>,
    pub task: Task,
    pub goal: GoalSpec,
    pub goal_key: String,
    pub agent: String,
    pub agent_spec: Option<AgentSpec>,
    pub computer: Arc<dyn Computer>,
    pub repo: Option<String>,
    pub branch: String,
    pub author: Identity,
    pub cancel: CancellationToken,
    /// Continue an interrupted attempt (keep the journal) rather than start afresh.
    pub resume: bool,
    /// The model that works goals without a playbook, when one is reachable.
    pub model: Option<Arc<dyn crate::model::Model>>,
    pub system: Vec<crate::model::SystemBlock>,
    /// The task's budgets (company and goal).
    pub budget: crate::policy::limits::TaskBudget,
    pub prices: crate::model::PriceTable,
    /// Permission rules and hooks from `.claude/settings.json`.
    pub settings: Option<Arc<crate::spec::Settings>>,
    /// The company's action rate limits, shared by every worker.
    pub limits: Arc<crate::policy::limits::RateLimits>,
    /// The company's MCP servers (`.mcp.json`), started for the agent's session.
    pub mcp_servers: Vec<crate::spec::McpServer>,
    /// The declaration the task was planned at (delegation picks other agents from it).
    pub spec: Arc<crate::spec::Spec>,
    /// The company's knowledge at that revision, ranked into each session's context.
    pub knowledge: Arc<crate::knowledge::Knowledge>,
    /// Which of the task's actions wait for a person's approval.
    pub gates: Arc<crate::policy::gates::Gates>,
}

/// How the attempt ended, and the last check.
#[derive(Clone, Debug)]
pub struct Done {
    pub task: i64,
    pub outcome: AttemptOutcome,
    pub check: Option<LastCheck>,
    pub cancelled: bool,
    /// When the worker handed the attempt back (its workspace removed, its processes
    /// stopped): from here on, the time is the controller's.
    pub ended: Option<chrono::DateTime<chrono::Utc>>,
    /// For a provider outage: when the provider said (or its circuit breaker knows) it may
    /// answer again.
    pub retry_after: Option<Duration>,
    /// The attempt lost its computer (it failed, and the computer did not answer a probe
    /// right after): why. The task is interrupted and moves, rather than failed.
    pub lost: Option<String>,
    /// For a goal a model met: the playbook distilled from its journal, replayed in a fresh
    /// workspace from the goal's base commit and passing the check there (see
    /// [`distill`]), for the engine to propose.
    pub distilled: Option<Vec<Step>>,
}

/// Playbook steps as tool calls, in order.
pub fn playbook_calls(steps: &[Step]) -> Vec<ToolCall> {
    steps
        .iter()
        .filter_map(|s| {
            if let Some(command) = &s.run {
                Some(ToolCall::Bash {
                    command: command.clone(),
                    timeout: STEP_TIMEOUT,
                })
            } else if let Some(w) = &s.write {
                Some(ToolCall::Write {
                    path: w.path.clone(),
                    content: w.content.clone(),
                })
            } else if let Some(e) = &s.edit {
                Some(ToolCall::Edit {
                    path: e.path.clone(),
                    old: e.old.clone(),
                    new: e.new.clone(),
                })
            } else {
                s.commit.as_ref().map(|c| ToolCall::Commit {
                    message: c.message.clone(),
                })
            }
        })
        .collect()
}

fn observe(work: &Work, result: &CheckResult) -> LastCheck {
    let now = Utc::now();
    let check = LastCheck {
        time: now,
        passed: result.passed(),
        detail: result.detail().to_string(),
    };
    let observation = GoalObservation {
        passed: result.passed(),
        checked_at: now,
        key: work.goal_key.clone(),
    };
    if let Err(e) = work
        .store
        .observe(&work.task.goal, &observation, result.detail())
    {
        tracing::warn!(goal = %work.task.goal, error = %e, "cannot record the check");
    }
    check
}

/// Runs the attempt to its end; never panics, every failure is an outcome. Processes the
/// attempt left running are stopped; a succeeded attempt's workspace is handed back to its
/// computer (to make the next one from), a failed one is kept to look at until the next
/// attempt replaces it.
pub async fn run(work: Work) -> Done {
    let mut done = attempt(&work).await;
    if !done.cancelled
        && matches!(
            done.outcome,
            AttemptOutcome::Failed { .. } | AttemptOutcome::Undelivered { .. }
        )
        && let Err(e) = work.computer.healthy().await
    {
        // A failure whose computer is gone (its connection dropped, its disk or process
        // table full) says nothing of the work: the work moves to a computer that answers.
        tracing::warn!(
            task = work.task.id,
            computer = work.computer.name(),
            "the computer does not answer: {e}"
        );
        done.lost = Some(e.to_string());
    }
    let stopped = match work.computer.release().await {
        Ok(0) => true,
        Ok(n) => {
            tracing::info!(
                task = work.task.id,
                "stopped {n} process(es) the attempt left running"
            );
            true
        }
        Err(e) => {
            tracing::warn!(task = work.task.id, "cannot stop left-over processes: {e}");
            false
        }
    };
    if matches!(done.outcome, AttemptOutcome::Succeeded { .. })
        && let Some(spec) = workspace_spec(&work)
    {
        // A workspace some process of the attempt may still write into is never made the
        // next task's: it is removed instead.
        let handed = if stopped {
            work.computer.recycle(&spec).await
        } else {
            work.computer.discard(&spec).await
        };
        if let Err(e) = handed {
            tracing::warn!(task = work.task.id, "cannot hand back the workspace: {e}");
        }
    }
    done
}

fn workspace_spec(work: &Work) -> Option<WorkspaceSpec> {
    work.repo.as_ref().map(|repo| WorkspaceSpec {
        repo: repo.clone(),
        branch: work.branch.clone(),
        task: work.task.key.clone(),
    })
}

async fn attempt(work: &Work) -> Done {
    let id = work.task.id;
    let Some(spec) = workspace_spec(work) else {
        return failed(
            work,
            format!(
                "Product/{} declares no repository to work in",
                work.task.product
            ),
            None,
        );
    };
    // A playbook starts again from its first step (its steps are cheap and deterministic);
    // a model session keeps its journal, so a resumed one replays what it recorded.
    let playbook = !work.goal.playbook.is_empty();
    if (!work.resume || playbook)
        && let Err(e) = work.store.clear_actions(id)
    {
        return failed(work, e.to_string(), None);
    }
    // Every attempt starts from a fresh clone of the product's branch: a workspace that an
    // earlier attempt or a killed controller left (steps already applied, a rebase half
    // done, a lock file) is never worked in again.
    if let Err(e) = work.computer.discard(&spec).await {
        return failed(work, format!("cannot remove the old workspace: {e}"), None);
    }
    let workspace = match work.computer.workspace(&spec).await {
        Ok(w) => w,
        Err(e) => return failed(work, format!("cannot prepare the workspace: {e}"), None),
    };
    let git = Git {
        computer: work.computer.as_ref(),
        workspace: &workspace,
        cancel: &work.cancel,
    };
    // The fresh clone is the branch as it is: this check observes the product itself.
    let before = match evaluate(work, &workspace, JUDGE_BEFORE_STEP).await {
        Ok(result) => result,
        Err(e) => return stopped(work, &e, None),
    };
    let check = (!before.passed()).then(|| observe(work, &before));
    if matches!(before, CheckResult::NeedsModel) {
        return failed(work, "the check needs a model (NoModel)".into(), check);
    }
    // A playbook's steps are the controller's own actions; the owner's grants still bound
    // them (a `run` step needs `Bash`), and its built-in tools are what a model would use.
    let grants = work
        .agent_spec
        .as_ref()
        .map(crate::agent::grants)
        .unwrap_or_default();
    let actor = Actor {
        store: &work.store,
        task: id,
        goal: &work.task.goal,
        agent: &work.agent,
        tools: Arc::new(crate::tools::Registry::with_builtins(grants)),
        computer: work.computer.as_ref(),
        workspace: &workspace,
        author: &work.author,
        cancel: &work.cancel,
        settings: work.settings.as_deref(),
        limits: Some(&work.limits),
        delegated: false,
        gates: Some(&work.gates),
    };
    let delivery = Delivery {
        work,
        actor: &actor,
        git: &git,
    };
    if before.passed() {
        // The branch already meets the goal: nothing to do but make sure it is the branch
        // (a missing branch is created where the clone started).
        let cloned = match git.head().await {
            Ok(head) => head,
            Err(e) => return failed(work, format!("cannot read the workspace: {e}"), None),
        };
        return delivery
            .deliver(ALREADY_MET_STEP, false, cloned.map(|c| (c, before)))
            .await;
    }
    if let Some(done) = publish_reviewed(work, &git, &delivery).await {
        return done;
    }
    let calls = playbook_calls(&work.goal.playbook);
    if calls.is_empty() {
        return agent_work(work, &actor, &delivery, &before, check).await;
    }
    // With a model and an agent to fall back on, a playbook that no longer meets the goal
    // hands the goal to the agent, from the clone as it was.
    let fallback = match (&work.model, &work.agent_spec) {
        (Some(_), Some(_)) if work.goal.check.judge.is_none() => git.head().await.ok().flatten(),
        _ => None,
    };
    let fall_back = |why: String| {
        let (actor, delivery, before, check, head) = (
            &actor,
            &delivery,
            &before,
            check.clone(),
            fallback.as_deref(),
        );
        async move {
            tracing::info!(goal = %work.task.goal, "the playbook does not meet the goal ({why}); its agent works it");
            if let Err(e) = work.store.clear_actions(id) {
                return failed(work, e.to_string(), check);
            }
            if let Some(head) = head
                && let Err(e) = delivery.git.reset_to(head).await
            {
                return failed(work, e.to_string(), check);
            }
            agent_work(work, actor, delivery, before, check).await
        }
    };
    for (step, call) in calls.iter().enumerate() {
        let step = u32::try_from(step).unwrap_or(u32::MAX);
        tracing::info!(goal = %work.task.goal, step, action = call.action(), "step");
        if let Err(e) = act(&actor, step, call).await {
            if let Some(done) = parked(work, call, &e, check.clone()) {
                return done;
            }
            let error = format!("step {} ({}): {e}", step + 1, call.action());
            if fallback.is_some() && !matches!(e, ActError::Cancelled) {
                return fall_back(error).await;
            }
            return failed(work, error, check);
        }
    }
    if fallback.is_some() {
        let result = run_check(
            &work.goal.check,
            work.computer.as_ref(),
            &workspace,
            &work.cancel,
        )
        .await;
        if !result.passed() {
            return fall_back(result.detail().to_string()).await;
        }
    }
    let step = u32::try_from(calls.len()).unwrap_or(u32::MAX);
    // A last `commit` step staged and committed everything (`git add -A`).
    let committed = matches!(calls.last(), Some(ToolCall::Commit { .. }));
    delivery.deliver(step, !committed, None).await
}

/// A gated goal whose reviewed work a person approved: that commit, exactly, is published
/// (the work is not done again), through the same delivery as any other. `None` when there
/// is no such approval for this attempt.
async fn publish_reviewed(work: &Work, git: &Git<'_>, delivery: &Delivery<'_>) -> Option<Done> {
    // An approved task is dispatched to resume: any other attempt skips the store read.
    if !work.resume {
        return None;
    }
    let approved = match work.store.approved(work.task.id) {
        Ok(approved) => approved?,
        Err(e) => return Some(failed(work, e.to_string(), None)),
    };
    let reviewed = approved.reviewed?;
    let branch = review_branch(&work.task.goal);
    if let Err(e) = git.fetch_tip(&branch).await {
        return Some(delivery.undelivered(e.to_string()));
    }
    if let Err(e) = git.reset_to(&reviewed).await {
        return Some(delivery.undelivered(format!(
            "the approved work ({reviewed}) is no longer on {branch}: {e}"
        )));
    }
    tracing::info!(goal = %work.task.goal, approval = %approved.id, "publishing the approved work");
    Some(
        delivery
            .deliver(approved.step.saturating_sub(1), false, None)
            .await,
    )
}

/// A refusal that parks the task rather than failing it: an action waiting for approval.
fn parked(work: &Work, call: &ToolCall, e: &ActError, check: Option<LastCheck>) -> Option<Done> {
    match e {
        ActError::NeedsApproval(reason) => Some(Done {
            task: work.task.id,
            outcome: AttemptOutcome::WaitingApproval {
                action: call.summary(),
                reason: reason.clone(),
            },
            check,
            cancelled: false,
            ended: None,
            retry_after: None,
            lost: None,
            distilled: None,
        }),
        _ => None,
    }
}

/// A failed attempt (or an interrupted one, when the task was cancelled meanwhile).
fn failed(work: &Work, error: String, check: Option<LastCheck>) -> Done {
    Done {
        task: work.task.id,
        outcome: AttemptOutcome::Failed { error },
        check,
        cancelled: work.cancel.is_cancelled(),
        ended: None,
        retry_after: None,
        lost: None,
        distilled: None,
    }
}

/// How often one attempt rebuilds its work on a branch that moved under it before it gives
/// up (the next attempt starts over from a fresh clone).
const DELIVERY_ROUNDS: u32 = 8;

/// The end of every attempt whose work is done: publish it to the product's branch, and only
/// then call it done. See [`crate::gitops::delivery`] for the rules.
struct Delivery<'a> {
    work: &'a Work,
    actor: &'a Actor<'a>,
    git: &'a Git<'a>,
}

impl Delivery<'_> {
    /// Commits what is left (as the agent, step `step`), then rebases onto the branch's tip,
    /// checks the goal on a clean checkout of the result and pushes it if the branch has not
    /// moved (step `step + 1`), again and again while other deliveries win the race.
    /// `checked` is a commit the check already passed on, with that result.
    /// `commit` is false when nothing can be left to commit (a fresh clone, a playbook whose
    /// last step committed everything), which saves a process start per task.
    async fn deliver(
        &self,
        step: u32,
        commit: bool,
        mut checked: Option<(String, CheckResult)>,
    ) -> Done {
        let work = self.work;
        let call = ToolCall::Commit {
            message: commit_message(work),
        };
        if commit && let Err(e) = act(self.actor, step, &call).await {
            return self.not_delivered(&call, e);
        }
        let committer = &work.author;
        let mut pause = Duration::from_millis(25);
        let mut last = (String::new(), Lost::Lease);
        for round in 0..DELIVERY_ROUNDS {
            // The first round trusts the tip the clone saw (the push's lease checks it);
            // a lost race fetches the new one.
            let prepared = match self.git.prepare(&work.branch, committer, round > 0).await {
                Ok(p) => p,
                Err(DeliveryError::Conflict { tip, .. }) => {
                    return self.conflicted(&tip, round).await;
                }
                Err(e) => return self.undelivered(e.to_string()),
            };
            let result = match (&checked, &prepared.head) {
                (Some((commit, result)), Some(head)) if commit == head => result.clone(),
                _ => match evaluate(work, self.actor.workspace, judge_step(round)).await {
                    Ok(result) => result,
                    Err(e) => return stopped(work, &e, None),
                },
            };
            if !result.passed() {
                return failed(
                    work,
                    format!(
                        "the check still fails on the work as it would be delivered to {}: {}",
                        work.branch,
                        result.detail()
                    ),
                    None,
                );
            }
            checked = prepared.head.clone().map(|h| (h, result.clone()));
            if prepared.up_to_date() {
                return self.met(&result, prepared.head);
            }
            let push = ToolCall::Push {
                branch: work.branch.clone(),
                from: prepared.tip.clone(),
            };
            // Every commit being published is scanned, however it was made (an agent's
            // `git commit` through Bash is not scanned when it is made); those the
            // controller made or scanned in this attempt are not scanned twice.
            if !self.actor.workspace.scanned().all(&prepared.commits) {
                match self.git.secrets_since(prepared.tip.as_deref()).await {
                    Ok(findings) if findings.is_empty() => {}
                    Ok(findings) => {
                        return failed(
                            work,
                            crate::secrets::Refused { findings }.to_string(),
                            None,
                        );
                    }
                    Err(e) => return self.undelivered(e.to_string()),
                }
            }
            if let Err(done) = self
                .review(step.saturating_add(1), prepared.tip.as_deref())
                .await
            {
                return *done;
            }
            match act(self.actor, step.saturating_add(1), &push).await {
                Ok(_) => return self.met(&result, prepared.head),
                Err(e @ ActError::NeedsApproval(_)) => {
                    return parked(work, &push, &e, None)
                        .unwrap_or_else(|| self.not_delivered(&push, e));
                }
                Err(ActError::Delivery(DeliveryError::Stale { message, lost, .. })) => {
                    tracing::info!(goal = %work.task.goal, round, "{} moved; rebuilding on it", work.branch);
                    last = (message, lost);
                }
                Err(e) => return self.not_delivered(&push, e),
            }
            tokio::select! {
                () = tokio::time::sleep(jitter(pause)) => {}
                () = work.cancel.cancelled() => return failed(work, "cancelled".into(), None),
            }
            // A moved branch is others' progress: a longer wait only delays this delivery,
            // so the pause stays short. A lock that does not clear may be a busy server.
            let ceiling = match last.1 {
                Lost::Lease => Duration::from_millis(200),
                Lost::ServerLock => Duration::from_secs(2),
            };
            pause = (pause * 2).min(ceiling);
        }
        let (message, lost) = last;
        self.undelivered(match lost {
            Lost::Lease => format!(
                "{} kept moving: {DELIVERY_ROUNDS} pushes lost the race ({message})",
                work.branch
            ),
            Lost::ServerLock => format!(
                "the server could not update {} in {DELIVERY_ROUNDS} pushes: {message}",
                work.branch
            ),
        })
    }

    /// For a gated goal whose publishing is not approved yet: puts the work where a person
    /// can review it (the product's `proto/<goal>`, through `act()` like any push) and asks
    /// for approval with the diff it would publish onto `tip`. The push to the goal's branch
    /// that follows then waits for the answer. `Err` ends the attempt.
    async fn review(&self, push_step: u32, tip: Option<&str>) -> Result<(), Box<Done>> {
        let work = self.work;
        let publish = ToolCall::Push {
            branch: work.branch.clone(),
            from: None,
        };
        // Publishing is gated by the goal's `gate:` or a `push:<branch>` pattern.
        let Some(gate) = work.gates.gate(&publish) else {
            return Ok(());
        };
        let approved = work
            .store
            .approved(work.task.id)
            .map_err(|e| Box::new(failed(work, e.to_string(), None)))?;
        if approved.is_some_and(|a| a.step == push_step) {
            return Ok(());
        }
        let branch = review_branch(&work.task.goal);
        let fail = |e: String| Box::new(self.undelivered(e));
        let head = self
            .git
            .head()
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("nothing to review: the workspace has no commit".into()))?;
        let reviewed_tip = self
            .git
            .fetch_tip(&branch)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if reviewed_tip.as_deref() != Some(head.as_str()) {
            let call = ToolCall::Push {
                branch: branch.clone(),
                from: reviewed_tip,
            };
            // The step after the gated push's: delivery itself never uses it.
            act(self.actor, push_step.saturating_add(1), &call)
                .await
                .map_err(|e| Box::new(self.not_delivered(&call, e)))?;
        }
        let diff = self
            .git
            .diff(tip, &head)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let reason = format!(
            "{}; review {branch} of Product/{}",
            gate.reason, work.task.product
        );
        let input = serde_json::json!({ "branch": work.branch });
        work.store
            .ask_approval(
                &crate::store::Ask {
                    task: work.task.id,
                    step: push_step,
                    agent: &work.agent,
                    action: &gate.action,
                    input: &input,
                    reason: &reason,
                    diff: Some(&diff),
                    reviewed: Some(&head),
                    timeout: work.gates.timeout,
                },
                Utc::now(),
            )
            .map_err(|e| Box::new(failed(work, e.to_string(), None)))?;
        Ok(())
    }

    /// The work conflicts with what the branch holds now: the goal may still be met by what
    /// others delivered, so the check runs on the branch's tip before the attempt fails.
    async fn conflicted(&self, tip: &str, round: u32) -> Done {
        let work = self.work;
        if let Err(e) = self.git.reset_to(tip).await {
            return self.undelivered(e.to_string());
        }
        match evaluate(work, self.actor.workspace, judge_step(round + 1)).await {
            Ok(result) if result.passed() => self.met(&result, Some(tip.to_string())),
            Ok(_) => self.undelivered(format!(
                "the work conflicts with {} as it is now, and the goal is not met there",
                work.branch
            )),
            Err(e) => stopped(work, &e, None),
        }
    }

    /// The work is on the branch as `delivered`: the goal is met there.
    fn met(&self, result: &CheckResult, delivered: Option<String>) -> Done {
        let work = self.work;
        let detail = match &delivered {
            Some(commit) => format!(
                "{} (on {} at {})",
                result.detail(),
                work.branch,
                short(commit)
            ),
            None => result.detail().to_string(),
        };
        let passed = CheckResult::Passed {
            detail: detail.clone(),
        };
        Done {
            task: work.task.id,
            outcome: AttemptOutcome::Succeeded { detail, delivered },
            check: Some(observe(work, &passed)),
            cancelled: false,
            ended: None,
            retry_after: None,
            lost: None,
            distilled: None,
        }
    }

    /// A delivery action was refused or failed.
    fn not_delivered(&self, call: &ToolCall, e: ActError) -> Done {
        if let Some(done) = parked(self.work, call, &e, None) {
            return done;
        }
        if matches!(
            e,
            ActError::Cancelled | ActError::Delivery(DeliveryError::Cancelled)
        ) {
            return failed(self.work, "cancelled".into(), None);
        }
        self.undelivered(format!("{}: {e}", call.action()))
    }

    fn undelivered(&self, error: String) -> Done {
        Done {
            task: self.work.task.id,
            outcome: AttemptOutcome::Undelivered { error },
            check: None,
            cancelled: self.work.cancel.is_cancelled(),
            ended: None,
            retry_after: None,
            lost: None,
            distilled: None,
        }
    }
}

/// The message of the controller's commit of what the work left uncommitted.
fn commit_message(work: &Work) -> String {
    format!("{}: work by {}", work.task.goal, work.agent)
}

/// Journal steps of the judge grading round `round` of a delivery (each round may grade a
/// different commit, so none may reuse another's recorded verdict).
fn judge_step(round: u32) -> u32 {
    JUDGE_AFTER_STEP.saturating_add(round.saturating_mul(10_000))
}

/// `pause` plus up to half of it again, so racing workers do not retry in step.
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let half = pause.as_millis().max(2) as u64 / 2;
    pause + Duration::from_millis(u64::from(nanos) % half)
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The commit step of a goal found already met on its branch.
const ALREADY_MET_STEP: u32 = 7_000_000;

/// Steps of the controller's own commit and push after an agent's work, beyond any step
/// number a conversation uses.
const AGENT_COMMIT_STEP: u32 = 9_000_000;

/// No playbook: the owner agent works the goal with its model, then the check decides, and
/// the controller commits and pushes what the agent changed.
async fn agent_work(
    work: &Work,
    actor: &Actor<'_>,
    delivery: &Delivery<'_>,
    before: &CheckResult,
    check: Option<LastCheck>,
) -> Done {
    let id = work.task.id;
    let failed = |error: String, check: Option<LastCheck>, cancelled: bool| Done {
        task: id,
        outcome: AttemptOutcome::Failed { error },
        check,
        cancelled,
        ended: None,
        retry_after: None,
        lost: None,
        distilled: None,
    };
    let (Some(model), Some(agent)) = (work.model.as_ref(), work.agent_spec.as_ref()) else {
        return failed(
            format!(
                "the check fails ({}) and there is no playbook; an agent needs a model",
                before.detail()
            ),
            check,
            false,
        );
    };
    // Stdio MCP servers run on the task's computer, in its workspace, for this task's
    // sessions only, and stop with them.
    let pool = (!work.mcp_servers.is_empty()).then(|| {
        Arc::new(crate::mcp::McpPool::new(
            work.mcp_servers.clone(),
            work.computer.clone(),
            actor.workspace.clone(),
            std::time::Duration::from_secs(60),
        ))
    });
    let builder = Builder {
        setup: setup(work, model.clone(), pool),
        place: place(work, actor.workspace),
    };
    // Where the work starts from: a playbook distilled from it is replayed from here.
    let base = delivery.git.head().await.ok().flatten();
    let last = (work.task.attempts, work.task.last_error.as_deref());
    let session = match builder
        .owner(&work.agent, agent, &work.goal, last, work.system.clone())
        .await
    {
        Ok(session) => session,
        Err(e) => return stopped(work, &e, check),
    };
    if let Err(e) = session.run().await {
        return stopped(work, &e, check);
    }
    // The controller commits and pushes on the agent's behalf; the check decides on the
    // work as it would be delivered.
    let mut done = delivery.deliver(AGENT_COMMIT_STEP, true, None).await;
    if let (AttemptOutcome::Succeeded { .. }, Some(base)) = (&done.outcome, base) {
        done.distilled = distill(work, actor, &base).await;
    }
    if matches!(done.outcome, AttemptOutcome::Succeeded { .. }) {
        summarize(work, &builder).await;
    }
    done
}

/// Journal steps of the summary session.
const SUMMARY_STEP: u32 = 8_500_000;

/// With `learning.summaries: true`, a cheap-tier model writes down what the met task taught
/// (see [`Builder::summary`]); kept for the record commit like every capture. A summary
/// that fails or says nothing is logged and dropped: it never fails the task.
async fn summarize(work: &Work, builder: &Builder<'_>) {
    let wanted = work
        .spec
        .company()
        .and_then(|c| c.spec.learning.as_ref())
        .and_then(|l| l.summaries)
        .unwrap_or(false);
    if !wanted {
        return;
    }
    let steps: Vec<String> = work
        .store
        .journal(work.task.id)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !matches!(a.tool.as_str(), "Model" | "Context" | "Select"))
        .map(|a| {
            let input: String = a.input.to_string().chars().take(400).collect();
            format!("- {} {input}", a.tool)
        })
        .take(60)
        .collect();
    let digest = format!(
        "Goal {}: {}\n\nThe steps that met it:\n{}",
        work.task.goal,
        work.goal.description,
        steps.join("\n")
    );
    let answer = match builder.summary(&digest, SUMMARY_STEP).run().await {
        Ok(done) => done.text,
        Err(e) => {
            tracing::info!(goal = %work.task.goal, "no summary: {e}");
            return;
        }
    };
    let now = Utc::now();
    let Some(capture) = crate::knowledge::capture::summarized(
        &answer,
        (&work.task.goal, &work.task.product, work.task.id),
        now,
    ) else {
        tracing::info!(goal = %work.task.goal, "the summary kept nothing");
        return;
    };
    if let Err(e) = work.store.capture(Some(work.task.id), &capture, now) {
        tracing::warn!(goal = %work.task.goal, "cannot keep the summary: {e}");
    }
}

/// Journal steps of a distilled playbook's replay, beyond any a conversation uses.
const DISTILL_STEP: u32 = 8_000_000;

/// The playbook of the met attempt (see [`crate::learning::distill`]), if replaying it
/// through `act()` in a fresh workspace reset to `base` (the commit the attempt started
/// from) meets the goal's check there. A judge's check is not replayed: it needs a model,
/// and a playbook is what runs without one.
async fn distill(work: &Work, actor: &Actor<'_>, base: &str) -> Option<Vec<Step>> {
    if work.goal.check.judge.is_some() {
        return None;
    }
    let journal = work.store.journal(work.task.id).ok()?;
    let root = actor.workspace.root().to_string_lossy().into_owned();
    let steps = crate::learning::distill::playbook(&journal, &work.task.goal, &root);
    if steps.is_empty() {
        tracing::info!(goal = %work.task.goal, "no playbook distilled: the work has no steps a playbook can redo");
        return None;
    }
    let spec = WorkspaceSpec {
        repo: work.repo.clone()?,
        branch: work.branch.clone(),
        task: format!("{}-distill", work.task.key),
    };
    let computer = work.computer.as_ref();
    computer.discard(&spec).await.ok()?;
    let workspace = computer.workspace(&spec).await.ok()?;
    let replayed = async {
        let git = Git {
            computer,
            workspace: &workspace,
            cancel: &work.cancel,
        };
        git.reset_to(base).await.ok()?;
        let mut replay = actor.clone();
        replay.workspace = &workspace;
        for (i, call) in playbook_calls(&steps).iter().enumerate() {
            let step = DISTILL_STEP.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
            if let Err(e) = act(&replay, step, call).await {
                tracing::info!(goal = %work.task.goal, "the distilled playbook does not replay: {e}");
                return None;
            }
        }
        let result = run_check(&work.goal.check, computer, &workspace, &work.cancel).await;
        if !result.passed() {
            tracing::info!(goal = %work.task.goal, "the distilled playbook does not meet the goal: {}", result.detail());
            return None;
        }
        Some(steps)
    }
    .await;
    if let Err(e) = computer.discard(&spec).await {
        tracing::warn!(goal = %work.task.goal, "cannot remove the replay's workspace: {e}");
    }
    replayed
}

/// What every session of the task is built from.
fn setup(
    work: &Work,
    model: Arc<dyn crate::model::Model>,
    mcp: Option<Arc<crate::mcp::McpPool>>,
) -> Arc<Setup> {
    Arc::new(Setup {
        spec: work.spec.clone(),
        model,
        prices: work.prices.clone(),
        budget: work.budget,
        knowledge: work.knowledge.clone(),
        settings: work.settings.clone(),
        limits: Some(work.limits.clone()),
        mcp,
        product: work.task.product.clone(),
        task_key: work.task.key.clone(),
        max_depth: crate::agent::delegate::DEFAULT_DEPTH,
        gates: Some(work.gates.clone()),
    })
}

/// Where the task's sessions work.
fn place<'a>(work: &'a Work, workspace: &'a crate::computer::Workspace) -> Place<'a> {
    Place {
        store: &work.store,
        task: work.task.id,
        goal: &work.task.goal,
        computer: work.computer.as_ref(),
        workspace,
        author: &work.author,
        cancel: &work.cancel,
    }
}

/// Journal steps of the judge before and after the work.
const JUDGE_BEFORE_STEP: u32 = 5_000_000;
const JUDGE_AFTER_STEP: u32 = 6_000_000;

/// The attempt ends on a session's error (the agent's or the judge's): see
/// [`crate::agent::outcome_of`].
fn stopped(work: &Work, e: &crate::agent::AgentError, check: Option<LastCheck>) -> Done {
    Done {
        task: work.task.id,
        outcome: crate::agent::outcome_of(&work.agent, e),
        check,
        cancelled: matches!(e, crate::agent::AgentError::Cancelled),
        ended: None,
        retry_after: e.retry_after(),
        lost: None,
        distilled: None,
    }
}

/// Runs the goal's check; a `judge` check is graded by a model with read-only tools. A judge
/// that cannot grade because the task must stop (cancelled, a budget spent, an approval
/// needed, the store failing) is an `Err`, not a failed check: the attempt did not fail.
async fn evaluate(
    work: &Work,
    workspace: &crate::computer::Workspace,
    step_base: u32,
) -> Result<CheckResult, crate::agent::AgentError> {
    let result = run_check(
        &work.goal.check,
        work.computer.as_ref(),
        workspace,
        &work.cancel,
    )
    .await;
    if !matches!(result, CheckResult::NeedsModel) {
        return Ok(result);
    }
    let (Some(model), Some(judge)) = (work.model.as_ref(), work.goal.check.judge.as_ref()) else {
        return Ok(result);
    };
    let builder = Builder {
        setup: setup(work, model.clone(), None),
        place: place(work, workspace),
    };
    let session = builder.judge(judge, step_base);
    use crate::agent::AgentError;
    match session.run().await {
        // A pass stands only with evidence from the judge's own reading (see `verdict`).
        Ok(done) => Ok(
            match crate::agent::judged(&done.text, &done.calls, work.computer.as_ref(), workspace)
                .await
            {
                Ok(detail) => CheckResult::Passed { detail },
                Err(detail) => CheckResult::Failed { detail },
            },
        ),
        Err(
            e @ (AgentError::Cancelled
            | AgentError::Budget(_)
            | AgentError::NeedsApproval { .. }
            | AgentError::Store(_)),
        ) => Err(e),
        // A judge that cannot reach its model has not judged: the attempt waits for the
        // provider instead of failing the check.
        Err(e @ AgentError::Model(_)) if e.is_outage() => Err(e),
        Err(e) => Ok(CheckResult::Failed {
            detail: format!("judge: {e}"),
        }),
    }
}
