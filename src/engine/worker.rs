//! One attempt at one task: prepare the workspace, check the goal (it may already hold),
//! run the playbook step by step through `act()`, check again, and push the work to the
//! product's branch when the check passes.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::check::{CheckResult, run_check};
use crate::computer::{Computer, WorkspaceSpec};
use crate::gitops::Identity;
use crate::plan::GoalObservation;
use crate::policy::{Actor, ToolCall, act};
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
    pub settings: Option<crate::spec::Settings>,
    /// The company's action rate limits, shared by every worker.
    pub limits: Arc<crate::policy::limits::RateLimits>,
    /// The company's MCP servers (`.mcp.json`), started for the agent's session.
    pub mcp_servers: Vec<crate::spec::McpServer>,
    /// The declaration the task was planned at (delegation picks other agents from it).
    pub spec: Arc<crate::spec::Spec>,
    /// The company's knowledge at that revision, ranked into each session's context.
    pub knowledge: Arc<crate::knowledge::Knowledge>,
}

/// How the attempt ended, and the last check.
pub struct Done {
    pub task: i64,
    pub outcome: AttemptOutcome,
    pub check: Option<LastCheck>,
    pub cancelled: bool,
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
/// attempt left running are stopped; a succeeded attempt's workspace is removed (a failed
/// one keeps it for the next attempt to resume in).
pub async fn run(work: Work) -> Done {
    let done = attempt(&work).await;
    match work.computer.release().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            task = work.task.id,
            "stopped {n} process(es) the attempt left running"
        ),
        Err(e) => tracing::warn!(task = work.task.id, "cannot stop left-over processes: {e}"),
    }
    if matches!(done.outcome, AttemptOutcome::Succeeded { .. })
        && let Some(repo) = &work.repo
    {
        let spec = WorkspaceSpec {
            repo: repo.clone(),
            branch: work.branch.clone(),
            task: work.task.key.clone(),
        };
        if let Err(e) = work.computer.discard(&spec).await {
            tracing::warn!(task = work.task.id, "cannot remove the workspace: {e}");
        }
    }
    done
}

async fn attempt(work: &Work) -> Done {
    let id = work.task.id;
    let failed = |error: String, check: Option<LastCheck>, cancelled: bool| Done {
        task: id,
        outcome: AttemptOutcome::Failed { error },
        check,
        cancelled,
    };
    let Some(repo) = work.repo.clone() else {
        return failed(
            format!(
                "Product/{} declares no repository to work in",
                work.task.product
            ),
            None,
            false,
        );
    };
    if !work.resume
        && let Err(e) = work.store.clear_actions(id)
    {
        return failed(e.to_string(), None, false);
    }
    let spec = WorkspaceSpec {
        repo,
        branch: work.branch.clone(),
        task: work.task.key.clone(),
    };
    let workspace = match work.computer.workspace(&spec).await {
        Ok(w) => w,
        Err(e) => return failed(format!("cannot prepare the workspace: {e}"), None, false),
    };
    let before = match evaluate(work, &workspace, JUDGE_BEFORE_STEP).await {
        Ok(result) => result,
        Err(e) => return stopped(work, &e, None),
    };
    let mut check = Some(observe(work, &before));
    if matches!(before, CheckResult::NeedsModel) {
        return failed("the check needs a model (NoModel)".into(), check, false);
    }
    let tools: Vec<String> = work
        .agent_spec
        .as_ref()
        .map(crate::agent::effective_tools)
        .unwrap_or_default();
    let actor = Actor {
        store: &work.store,
        task: id,
        goal: &work.task.goal,
        agent: &work.agent,
        tools: &tools,
        computer: work.computer.as_ref(),
        workspace: &workspace,
        author: &work.author,
        cancel: &work.cancel,
        settings: work.settings.as_ref(),
        limits: Some(&work.limits),
        mcp: None,
        delegation: None,
    };
    if before.passed() {
        // Met in the workspace: still make sure it is on the product's branch (an earlier
        // attempt may have done the work and then failed to push).
        let already = CheckResult::Passed {
            detail: format!("already met: {}", before.detail()),
        };
        return deliver(work, &actor, ALREADY_MET_STEP, None, &already, check).await;
    }
    let calls = playbook_calls(&work.goal.playbook);
    if calls.is_empty() {
        return agent_work(work, &actor, &before, check).await;
    }
    for (step, call) in calls.iter().enumerate() {
        let step = u32::try_from(step).unwrap_or(u32::MAX);
        tracing::info!(goal = %work.task.goal, step, action = call.action(), "step");
        if let Err(e) = act(&actor, step, call).await {
            if let crate::policy::ActError::NeedsApproval(reason) = e {
                return Done {
                    task: id,
                    outcome: AttemptOutcome::WaitingApproval {
                        action: call.summary(),
                        reason,
                    },
                    check,
                    cancelled: false,
                };
            }
            let cancelled = work.cancel.is_cancelled();
            return failed(
                format!("step {} ({}): {e}", step + 1, call.action()),
                check,
                cancelled,
            );
        }
    }
    let after = match evaluate(work, &workspace, JUDGE_AFTER_STEP).await {
        Ok(result) => result,
        Err(e) => return stopped(work, &e, check),
    };
    check = Some(observe(work, &after));
    if !after.passed() {
        return failed(
            format!("the check still fails: {}", after.detail()),
            check,
            work.cancel.is_cancelled(),
        );
    }
    let step = u32::try_from(calls.len()).unwrap_or(u32::MAX);
    deliver(work, &actor, step, None, &after, check).await
}

/// The check passed: commit what is left (when `commit` says how) and push the work to the
/// product's branch, both through `act()` as steps `step` and `step + 1`.
async fn deliver(
    work: &Work,
    actor: &Actor<'_>,
    step: u32,
    commit: Option<String>,
    after: &CheckResult,
    check: Option<LastCheck>,
) -> Done {
    let failed = |error: String, check: Option<LastCheck>| Done {
        task: work.task.id,
        outcome: AttemptOutcome::Failed { error },
        check,
        cancelled: work.cancel.is_cancelled(),
    };
    if let Some(message) = commit
        && let Err(e) = act(actor, step, &ToolCall::Commit { message }).await
    {
        return failed(format!("commit: {e}"), check);
    }
    // An empty repository has nothing to deliver.
    let has_commits =
        crate::gitops::workspace::state(actor.workspace.root()).is_ok_and(|s| s.head.is_some());
    let push = ToolCall::Push {
        branch: work.branch.clone(),
    };
    if has_commits && let Err(e) = act(actor, step.saturating_add(1), &push).await {
        return failed(format!("push to {}: {e}", work.branch), check);
    }
    Done {
        task: work.task.id,
        outcome: AttemptOutcome::Succeeded {
            detail: after.detail().to_string(),
        },
        check,
        cancelled: false,
    }
}

/// The push step of a goal found already met in its workspace.
const ALREADY_MET_STEP: u32 = 7_000_000;

/// Steps of the controller's own commit and push after an agent's work, beyond any step
/// number a conversation uses.
const AGENT_COMMIT_STEP: u32 = 9_000_000;

/// No playbook: the owner agent works the goal with its model, then the check decides, and
/// the controller commits and pushes what the agent changed.
async fn agent_work(
    work: &Work,
    actor: &Actor<'_>,
    before: &CheckResult,
    check: Option<LastCheck>,
) -> Done {
    let id = work.task.id;
    let failed = |error: String, check: Option<LastCheck>, cancelled: bool| Done {
        task: id,
        outcome: AttemptOutcome::Failed { error },
        check,
        cancelled,
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
    // MCP servers run in the workspace for this session only, and stop with it.
    let pool = (!work.mcp_servers.is_empty()).then(|| {
        crate::mcp::McpPool::new(
            work.mcp_servers.clone(),
            actor.workspace.root(),
            std::time::Duration::from_secs(60),
        )
    });
    let mut tools = crate::agent::tool_defs(agent);
    if let Some(pool) = &pool {
        tools.extend(crate::agent::mcp_tool_defs(pool, &agent.tools).await);
    }
    let delegation = crate::agent::delegate::Delegation {
        spec: work.spec.clone(),
        model: model.clone(),
        prices: work.prices.clone(),
        chain: vec![work.agent.clone()],
        max_depth: crate::agent::delegate::DEFAULT_DEPTH,
        budget: work.budget,
        task_key: work.task.key.clone(),
        product: work.task.product.clone(),
        knowledge: work.knowledge.clone(),
    };
    let task = crate::agent::task_prompt(&work.task.goal, &work.goal)
        + &crate::agent::lessons(work.task.attempts, work.task.last_error.as_deref());
    let sources = crate::agent::context::Sources {
        spec: &work.spec,
        agent_name: &work.agent,
        goal: &work.task.goal,
        knowledge: &work.knowledge,
        product: &work.task.product,
        computer: actor.computer,
        workspace: actor.workspace,
    };
    let about = format!(
        "{} {} {}",
        work.task.goal,
        work.goal.description,
        serde_json::to_string(&work.goal.check).unwrap_or_default()
    );
    let selector = crate::agent::select::Selector {
        store: &work.store,
        task: id,
        goal: &work.task.goal,
        agent: &work.agent,
        model: Some(model.as_ref()),
        prices: &work.prices,
        cancel: &work.cancel,
        budget: work.budget,
    };
    let facts = crate::agent::select::Facts::of_goal(
        &work.task.goal,
        &work.goal,
        agent,
        work.task.attempts,
        work.task.last_error.as_deref(),
    );
    let selection = match selector.select(&work.spec, agent, &facts).await {
        Ok(s) => s,
        Err(e) => {
            return Done {
                task: id,
                outcome: crate::agent::outcome_of(&work.agent, &e),
                check,
                cancelled: matches!(e, crate::agent::AgentError::Cancelled),
            };
        }
    };
    let (task, scoped_rules) = match crate::agent::context::session_start(
        &sources,
        agent,
        &about,
        &task,
        (&work.store, id),
    )
    .await
    {
        Ok(start) => start,
        Err(e) => return failed(format!("agent {}: {e}", work.agent), check, false),
    };
    let session = crate::agent::Session {
        actor: Actor {
            mcp: pool.as_ref(),
            delegation: Some(&delegation),
            ..actor.clone()
        },
        model: model.as_ref(),
        model_id: selection.model_id,
        system: work.system.clone(),
        scoped_rules,
        task,
        tools,
        max_turns: agent.max_turns.unwrap_or(40),
        // The API wants room for the answer beyond the thinking budget.
        max_tokens: 8192u32.saturating_add(selection.thinking.unwrap_or(0)),
        thinking: selection.thinking,
        budget: work.budget,
        prices: work.prices.clone(),
        step_base: 0,
    };
    if let Err(e) = session.run().await {
        return stopped(work, &e, check);
    }
    let after = match evaluate(work, actor.workspace, JUDGE_AFTER_STEP).await {
        Ok(result) => result,
        Err(e) => return stopped(work, &e, check),
    };
    let check = Some(observe(work, &after));
    if !after.passed() {
        return failed(
            format!(
                "the check still fails after {}'s work: {}",
                work.agent,
                after.detail()
            ),
            check,
            work.cancel.is_cancelled(),
        );
    }
    // The controller commits and pushes on the agent's behalf, through the same path.
    let git = vec!["Git".to_string()];
    let committer = Actor {
        tools: &git,
        ..actor.clone()
    };
    let message = format!("{}: work by {}", work.task.goal, work.agent);
    deliver(
        work,
        &committer,
        AGENT_COMMIT_STEP,
        Some(message),
        &after,
        check,
    )
    .await
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
    let tools: Vec<String> = ["Read", "Glob", "Grep"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    let spec = AgentSpec {
        title: "Judge".into(),
        description: "Grades a workspace against a rubric.".into(),
        tools: tools.clone(),
        prompt: crate::agent::JUDGE_SYSTEM.into(),
        ..AgentSpec::default()
    };
    let actor = Actor {
        store: &work.store,
        task: work.task.id,
        goal: &work.task.goal,
        agent: "judge",
        tools: &tools,
        computer: work.computer.as_ref(),
        workspace,
        author: &work.author,
        cancel: &work.cancel,
        settings: None,
        limits: Some(&work.limits),
        mcp: None,
        delegation: None,
    };
    // The judge's own `model`, else the company's haiku tier: grading is reading, not writing.
    let model_id =
        crate::agent::resolve_model(&work.spec, judge.model.as_deref().unwrap_or("haiku"));
    let session = crate::agent::Session {
        actor,
        model: model.as_ref(),
        model_id,
        system: vec![crate::model::SystemBlock::text(crate::agent::JUDGE_SYSTEM)],
        scoped_rules: Vec::new(),
        task: format!(
            "Rubric: {}\n\nGrade the workspace against it.",
            judge.rubric
        ),
        tools: crate::agent::tool_defs(&spec),
        max_turns: 12,
        max_tokens: 2048,
        thinking: None,
        budget: work.budget,
        prices: work.prices.clone(),
        step_base,
    };
    use crate::agent::AgentError;
    match session.run().await {
        Ok(done) => Ok(match crate::agent::parse_verdict(&done.text) {
            Some(v) if v.pass => CheckResult::Passed {
                detail: format!("judge: {}", v.reason),
            },
            Some(v) => CheckResult::Failed {
                detail: format!("judge: {}", v.reason),
            },
            None => CheckResult::Failed {
                detail: "the judge answered without a valid JSON verdict".into(),
            },
        }),
        Err(
            e @ (AgentError::Cancelled
            | AgentError::Budget(_)
            | AgentError::NeedsApproval { .. }
            | AgentError::Store(_)),
        ) => Err(e),
        Err(e) => Ok(CheckResult::Failed {
            detail: format!("judge: {e}"),
        }),
    }
}
