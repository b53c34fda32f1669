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

/// Runs the attempt to its end; never panics, every failure is an outcome.
pub async fn run(work: Work) -> Done {
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
    let before = run_check(
        &work.goal.check,
        work.computer.as_ref(),
        &workspace,
        &work.cancel,
    )
    .await;
    let mut check = Some(observe(&work, &before));
    if before.passed() {
        return Done {
            task: id,
            outcome: AttemptOutcome::Succeeded {
                detail: format!("already met: {}", before.detail()),
            },
            check,
            cancelled: false,
        };
    }
    if matches!(before, CheckResult::NeedsModel) {
        return failed("the check needs a model (NoModel)".into(), check, false);
    }
    let tools: Vec<String> = work
        .agent_spec
        .as_ref()
        .map(|a| a.tools.clone())
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
    };
    let calls = playbook_calls(&work.goal.playbook);
    if calls.is_empty() {
        return failed(
            format!(
                "the check fails ({}) and there is no playbook; an agent needs a model",
                before.detail()
            ),
            check,
            false,
        );
    }
    for (step, call) in calls.iter().enumerate() {
        let step = u32::try_from(step).unwrap_or(u32::MAX);
        tracing::info!(goal = %work.task.goal, step, action = call.action(), "step");
        if let Err(e) = act(&actor, step, call).await {
            let cancelled = work.cancel.is_cancelled();
            return failed(
                format!("step {} ({}): {e}", step + 1, call.action()),
                check,
                cancelled,
            );
        }
    }
    let after = run_check(
        &work.goal.check,
        work.computer.as_ref(),
        &workspace,
        &work.cancel,
    )
    .await;
    check = Some(observe(&work, &after));
    if !after.passed() {
        return failed(
            format!("the check still fails: {}", after.detail()),
            check,
            work.cancel.is_cancelled(),
        );
    }
    let push = ToolCall::Push {
        branch: work.branch.clone(),
    };
    let step = u32::try_from(calls.len()).unwrap_or(u32::MAX);
    if let Err(e) = act(&actor, step, &push).await {
        return failed(
            format!("push to {}: {e}", work.branch),
            check,
            work.cancel.is_cancelled(),
        );
    }
    Done {
        task: id,
        outcome: AttemptOutcome::Succeeded {
            detail: after.detail().to_string(),
        },
        check,
        cancelled: false,
    }
}
