//! `act()`: the one path every agent action takes. It decides — the agent may use the tool,
//! permission rules, hooks, rate limits — then hands the call over (a model's tool call to
//! the session's tool registry, see [`execute`]), and journals it with an audit record carrying the
//! unified diff of any file it changed and the activity line of the event log, all in one
//! transaction. A call whose effect may reach past the workspace (see [`opens_entry`]) is
//! also journaled as started before its effect, so that after a crash a step found started
//! but not finished is known to be in doubt and re-examined — is the file already written,
//! the commit already made, the push already there? — rather than blindly redone.
//! Permission rules from settings, hooks, approvals, rate limits and budgets join this same
//! path; no tool reaches a computer any other way. The hooks around a whole session
//! (`SessionStart`, `Stop`, `SubagentStop`) are in [`lifecycle`].

mod execute;
pub mod gates;
pub mod hooks;
pub mod lifecycle;
pub mod limits;
pub mod permissions;

pub use lifecycle::{MAX_STOP_CONTINUATIONS, session_start, stop};

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use execute::{already_done, execute, replay};

use crate::computer::{Computer, ComputerError, Workspace};
use crate::gitops::Identity;
use crate::gitops::delivery::DeliveryError;
use crate::store::{ApprovalState, AuditRecord, Entry, StepRecord, Store, StoreError, TaskId};
pub use crate::tools::allows;
use crate::tools::{Effect, Registry};

#[derive(Debug, Error)]
pub enum ActError {
    #[error("refused by the permission rules: {0}")]
    Forbidden(String),
    #[error("needs a person's approval first: {0}")]
    NeedsApproval(String),
    #[error("blocked by a PreToolUse hook: {0}")]
    Blocked(String),
    #[error("{agent} may not use {tool} (its tools are {allowed})")]
    Denied {
        agent: String,
        tool: String,
        allowed: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Computer(#[from] ComputerError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("edit of {path}: the text to replace {found}")]
    EditMismatch { path: String, found: String },
    #[error("{0}")]
    Failed(String),
    /// A delegated agent found a budget spent: the whole task stops, not just the child.
    #[error("{0}")]
    Budget(#[from] limits::BudgetExceeded),
    #[error("cancelled")]
    Cancelled,
    /// A delegated agent's model provider is out: the whole task waits for it (the child
    /// resumes from its journal), rather than the parent being told its helper failed.
    #[error("model: {0}")]
    ProviderUnavailable(crate::model::ModelError),
}

impl ActError {
    /// Whether the action failed because its computer could not be reached (see
    /// [`ComputerError::is_transport`]): the task stops rather than the model being told,
    /// and the step is not journaled as done, so it runs again where the task goes next.
    pub fn is_transport(&self) -> bool {
        match self {
            ActError::Computer(e) | ActError::Delivery(DeliveryError::Computer(e)) => {
                e.is_transport()
            }
            _ => false,
        }
    }
}

/// One action an agent (or a playbook acting as it) takes.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolCall {
    Bash {
        command: String,
        timeout: Duration,
    },
    Write {
        path: String,
        content: String,
    },
    Edit {
        path: String,
        old: String,
        new: String,
    },
    /// Delivery: commit everything in the workspace, authored as the agent.
    Commit {
        message: String,
    },
    /// Delivery: push HEAD to the product's `branch` if the branch is still at `from`
    /// (`None`: it does not exist yet). See [`crate::gitops::delivery`].
    Push {
        branch: String,
        from: Option<String>,
    },
    /// A call an agent's model made to one of its tools (`Read`, `Grep`, `Bash`, ...).
    Tool {
        name: String,
        input: Value,
    },
}

impl ToolCall {
    /// The tool an agent must hold to make this call.
    pub fn tool(&self) -> &str {
        match self {
            ToolCall::Tool { name, .. } => name,
            ToolCall::Bash { .. } => "Bash",
            ToolCall::Write { .. } => "Write",
            ToolCall::Edit { .. } => "Edit",
            ToolCall::Commit { .. } | ToolCall::Push { .. } => "Git",
        }
    }

    /// The action's name in the audit log.
    pub fn action(&self) -> &str {
        match self {
            ToolCall::Tool { name, .. } => name,
            ToolCall::Bash { .. } => "run",
            ToolCall::Write { .. } => "write",
            ToolCall::Edit { .. } => "edit",
            ToolCall::Commit { .. } => "commit",
            ToolCall::Push { .. } => "push",
        }
    }

    pub fn input(&self) -> Value {
        match self {
            ToolCall::Bash { command, timeout } => {
                json!({ "command": command, "timeoutSeconds": timeout.as_secs() })
            }
            ToolCall::Write { path, content } => json!({ "path": path, "bytes": content.len() }),
            ToolCall::Edit { path, old, new } => json!({ "path": path, "old": old, "new": new }),
            ToolCall::Commit { message } => json!({ "message": message }),
            ToolCall::Push { branch, from } => json!({ "branch": branch, "from": from }),
            ToolCall::Tool { input, .. } => input.clone(),
        }
    }

    /// The input an approval is given for: a push is approved for its branch, whatever tip
    /// the branch has moved to by the time it runs.
    pub fn approval_input(&self) -> Value {
        match self {
            ToolCall::Push { branch, .. } => json!({ "branch": branch }),
            _ => self.input(),
        }
    }

    /// Delivering a goal's work is the controller's act on the agent's behalf: it needs no
    /// tool of the agent's (permission rules, hooks and the audit still apply), and whether
    /// it happened is read from the product's branch, never from the journal.
    pub fn is_delivery(&self) -> bool {
        matches!(self, ToolCall::Commit { .. } | ToolCall::Push { .. })
    }
}

/// What an action did.
#[derive(Clone, Debug, PartialEq)]
pub struct Acted {
    pub outcome: Value,
    /// The step was found done (journaled, or re-examined after a crash) and not redone.
    pub skipped: bool,
    /// Images the tool gave the model (a screenshot). Only for a call made now: the journal
    /// keeps what identified them (the outcome's `images`), not the pixels.
    pub images: Vec<crate::model::Image>,
}

/// Everything `act()` needs about who acts, where, and for which task.
#[derive(Clone)]
pub struct Actor<'a> {
    pub store: &'a Store,
    pub task: TaskId,
    pub goal: &'a str,
    pub agent: &'a str,
    /// The agent's tools: what it was granted (`Bash`, `Bash(git *)`, ...) and what runs
    /// each call. Built by the session builder; a playbook's actor holds the built-ins.
    pub tools: Arc<Registry>,
    pub computer: &'a dyn Computer,
    pub workspace: &'a Workspace,
    pub author: &'a Identity,
    pub cancel: &'a CancellationToken,
    /// The company's `.claude/settings.json`: permission rules and hooks.
    pub settings: Option<&'a crate::spec::Settings>,
    /// Actions per minute, per company and per agent.
    pub limits: Option<&'a limits::RateLimits>,
    /// A delegated child working for another agent, not the task's own agent (its session
    /// ends with `SubagentStop` hooks).
    pub delegated: bool,
    /// Which actions wait for a person's approval (the Company's and the goal's gates).
    pub gates: Option<&'a gates::Gates>,
}

impl ToolCall {
    /// The input as permission rules and hooks see it, in Claude Code's shapes.
    pub fn rules_input(&self) -> Value {
        match self {
            ToolCall::Bash { command, .. } => json!({ "command": command }),
            ToolCall::Write { path, content } => json!({ "file_path": path, "content": content }),
            ToolCall::Edit { path, old, new } => {
                json!({ "file_path": path, "old_string": old, "new_string": new })
            }
            ToolCall::Commit { message } => json!({ "args": ["commit", "-m", message] }),
            ToolCall::Push { branch, .. } => json!({ "args": ["push", "origin", branch] }),
            ToolCall::Tool { input, .. } => input.clone(),
        }
    }
}

impl ToolCall {
    /// The call in permission-rule form (`Bash(git push origin main)`, `Write(src/a.rs)`),
    /// short enough for a status message.
    pub fn summary(&self) -> String {
        let input = self.rules_input();
        // The screen's calls are told apart by their action (`Computer(left_click)`), as
        // permission rules tell them apart.
        let keys: &[&str] = if self.tool() == crate::tools::COMPUTER_TOOL {
            &["action"]
        } else {
            &["command", "file_path", "path", "url", "pattern", "skill"]
        };
        let argument = keys
            .iter()
            .find_map(|k| input.get(k).and_then(Value::as_str).map(str::to_string))
            .or_else(|| {
                input.get("args").and_then(Value::as_array).map(|args| {
                    args.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            });
        match argument {
            Some(a) => {
                let short: String = a.chars().take(120).collect();
                format!("{}({short})", self.tool())
            }
            None => self.tool().to_string(),
        }
    }
}

/// Where the conversation of the actor's task is written for hooks to read (Claude Code's
/// `transcript_path`), relative to the workspace: under `.proto-tmp/`, which git ignores.
pub fn transcript_path(actor: &Actor<'_>) -> String {
    format!(
        "{}/transcript-task-{}.jsonl",
        crate::tools::TMP_DIR,
        actor.task
    )
}

/// Hooks run on the actor's computer, in its workspace.
fn hook_site<'a>(actor: &'a Actor<'_>) -> hooks::Site<'a> {
    hooks::Site {
        computer: actor.computer,
        workspace: actor.workspace,
        cancel: actor.cancel,
    }
}

fn hook_session(actor: &Actor<'_>) -> hooks::Session {
    hooks::Session {
        session_id: format!("task-{}", actor.task),
        transcript_path: actor.workspace.root().join(transcript_path(actor)),
        cwd: actor.workspace.root().to_path_buf(),
    }
}

/// Waits while the company's or the agent's action rate is spent (throttling, not failing:
/// the work is still wanted, just not this fast).
async fn throttle(actor: &Actor<'_>) -> Result<(), ActError> {
    let Some(limits) = actor.limits else {
        return Ok(());
    };
    while let Err(limited) = limits.check(actor.agent) {
        let wait = limited.retry_after.min(Duration::from_secs(60));
        tracing::info!(
            agent = actor.agent,
            "rate limited ({limited}); waiting {wait:?}"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = actor.cancel.cancelled() => return Err(ActError::Cancelled),
        }
    }
    Ok(())
}

/// Permission rules, then PreToolUse hooks: `Ok` with the input to use (a hook may rewrite
/// a model's tool input), or why the call may not run.
async fn admit(actor: &Actor<'_>, call: &ToolCall) -> Result<Option<Value>, ActError> {
    let Some(settings) = actor.settings else {
        return Ok(None);
    };
    let input = call.rules_input();
    match permissions::decide(
        call.tool(),
        &input,
        &settings.permissions,
        ceiling(actor, call),
        actor.workspace.root(),
    ) {
        permissions::Decision::Deny { reason, .. } => return Err(ActError::Forbidden(reason)),
        permissions::Decision::Ask { reason, .. } => return Err(ActError::NeedsApproval(reason)),
        permissions::Decision::Allow { .. } => {}
    }
    let outcome = hooks::run_hooks(
        &hook_site(actor),
        &settings.hooks,
        &hooks::HookInput::pre_tool_use(&hook_session(actor), call.tool(), &input),
    )
    .await;
    for error in &outcome.errors {
        tracing::warn!(tool = call.tool(), "hook failed (not blocking): {error}");
    }
    match outcome.decision {
        hooks::HookDecision::Block { reason } => Err(ActError::Blocked(reason)),
        hooks::HookDecision::Ask { reason } => Err(ActError::NeedsApproval(reason)),
        _ => Ok(outcome.updated_input),
    }
}

/// PostToolUse / PostToolUseFailure hooks: feedback only, the effect has happened.
async fn after(actor: &Actor<'_>, call: &ToolCall, result: Result<&Value, &str>) {
    let Some(settings) = actor.settings else {
        return;
    };
    let session = hook_session(actor);
    let input = call.rules_input();
    let event = match result {
        Ok(response) => hooks::HookInput::post_tool_use(&session, call.tool(), &input, response),
        Err(error) => hooks::HookInput::post_tool_use_failure(&session, call.tool(), &input, error),
    };
    let outcome = hooks::run_hooks(&hook_site(actor), &settings.hooks, &event).await;
    if let hooks::HookDecision::Block { reason } = outcome.decision {
        tracing::info!(tool = call.tool(), "post-tool hook feedback: {reason}");
    }
}

/// The tools a call is held to: the agent's own, except for delivery, which is the
/// controller's act on the agent's behalf and holds `Git` whatever the agent holds (deny and
/// ask rules still stand between it and the product).
fn ceiling<'a>(actor: &'a Actor<'_>, call: &ToolCall) -> &'a [String] {
    static DELIVERY: std::sync::LazyLock<[String; 1]> =
        std::sync::LazyLock::new(|| [String::from("Git")]);
    if call.is_delivery() {
        &DELIVERY[..]
    } else {
        actor.tools.grants()
    }
}

/// Whether a call is journaled as started before its effect, in a transaction of its own,
/// and finished after it. Only calls whose effect may reach past the workspace, or cannot be
/// looked at afterwards, are: a command, git, delivery, an MCP server, delegated work. After
/// a kill -9 their entry says the effect may have happened. Every other call (a read, a
/// search, a skill, a change to a workspace file) is journaled whole after its effect, with
/// its audit record and activity line, in one transaction: a resumed attempt works in a fresh
/// clone where an interrupted one of these cannot have left anything, so it is simply made
/// again, as it was when its entry said "started".
pub fn opens_entry(actor: &Actor<'_>, call: &ToolCall) -> bool {
    match call {
        ToolCall::Write { .. } | ToolCall::Edit { .. } => false,
        ToolCall::Bash { .. } | ToolCall::Commit { .. } | ToolCall::Push { .. } => true,
        ToolCall::Tool { name, .. } => actor
            .tools
            .get(name)
            .is_none_or(|t| t.effect() == Effect::Outside),
    }
}

/// Takes one action, step `step` of the actor's task. See the module docs.
pub async fn act(actor: &Actor<'_>, step: u32, call: &ToolCall) -> Result<Acted, ActError> {
    let now = Utc::now();
    if !allows(ceiling(actor, call), call.tool()) {
        let err = ActError::Denied {
            agent: actor.agent.to_string(),
            tool: call.tool().to_string(),
            allowed: actor.tools.grants().join(", "),
        };
        let audit = audit(actor, call, json!({ "denied": err.to_string() }), None);
        record(
            actor,
            step,
            call,
            Entry::None,
            Some(&audit),
            Err(&err.to_string()),
        )?;
        return Err(err);
    }
    let input = call.input();
    if !call.is_delivery()
        && let Some(previous) = actor.store.action(actor.task, step)?
    {
        if previous.finished_at.is_some() && previous.tool == call.tool() && previous.input == input
        {
            replay(actor, step, call, previous.outcome.as_ref()).await;
            return Ok(Acted {
                outcome: previous.outcome.unwrap_or(Value::Null),
                skipped: true,
                images: Vec::new(),
            });
        }
        if previous.finished_at.is_none() && already_done(actor, call).await? {
            let outcome = json!({ "recovered": "found done after a restart; not repeated" });
            actor.store.action_finished(
                previous.id,
                &outcome,
                &audit(actor, call, outcome.clone(), None),
                Utc::now(),
            )?;
            return Ok(Acted {
                outcome,
                skipped: true,
                images: Vec::new(),
            });
        }
    }
    throttle(actor).await?;
    let rewritten;
    let (admitted, asked) = match admit(actor, call).await {
        Err(ActError::NeedsApproval(reason)) => {
            (Ok(None), Some((call.action().to_string(), reason)))
        }
        other => (other, None),
    };
    let call = match admitted {
        Ok(Some(updated)) => match call {
            ToolCall::Tool { name, .. } => {
                rewritten = ToolCall::Tool {
                    name: name.clone(),
                    input: updated,
                };
                &rewritten
            }
            // Playbook steps are declared in git; hooks may refuse them, not rewrite them.
            _ => call,
        },
        Ok(None) => call,
        Err(refusal) => return Err(refused(actor, step, call, refusal)?),
    };
    let gated = asked.or_else(|| {
        actor
            .gates
            .and_then(|g| g.gate(call))
            .map(|g| (g.action, g.reason))
    });
    if let Some((action, reason)) = gated {
        approval(actor, step, call, &action, &reason)?;
    }
    let started = opens_entry(actor, call)
        .then(|| {
            actor
                .store
                .action_started(actor.task, step, call.tool(), &input, now)
        })
        .transpose()?;
    // The entry as it ends: the started one finished, or the whole of it at once.
    let entry = |outcome| match started {
        Some(action) => Entry::Finish { action, outcome },
        None => Entry::Whole {
            step,
            tool: call.tool(),
            input: &input,
            outcome,
            started_at: now,
        },
    };
    let execute::Executed {
        outcome,
        diff,
        images,
    } = match execute(actor, step, call).await {
        Ok(done) => {
            after(actor, call, Ok(&done.outcome)).await;
            done
        }
        Err(e) => {
            after(actor, call, Err(&e.to_string())).await;
            // A model's call that failed is over: the model reads the error and goes on. It
            // is journaled as finished so a resumed conversation reads the same error instead
            // of running the call again. (Errors that stop the task are not: the step runs
            // again when the task does.)
            let over = matches!(
                e,
                ActError::Computer(_)
                    | ActError::Delivery(_)
                    | ActError::EditMismatch { .. }
                    | ActError::Failed(_)
            ) && !e.is_transport();
            if over && matches!(call, ToolCall::Tool { .. }) {
                let outcome = json!({ "content": e.to_string(), "isError": true });
                let audit = audit(actor, call, outcome.clone(), None);
                record(
                    actor,
                    step,
                    call,
                    entry(&outcome),
                    Some(&audit),
                    Err(&e.to_string()),
                )?;
            } else {
                // A refused commit (a playbook's or delivery's) is audited as the model's
                // failed calls are: what was refused and why. The step is not over: it runs
                // again when the task does.
                let refused = secrets_refused(&e)
                    .map(|_| audit(actor, call, json!({ "refused": e.to_string() }), None));
                if let Err(lost) = record(
                    actor,
                    step,
                    call,
                    Entry::None,
                    refused.as_ref(),
                    Err(&e.to_string()),
                ) {
                    // Only the activity line: the error that stops the task matters more.
                    tracing::warn!(task = actor.task, "cannot record the activity: {lost}");
                }
            }
            if let Some(refused) = secrets_refused(&e) {
                let data = json!({
                    "agent": actor.agent,
                    "call": call.summary(),
                    "findings": refused.findings,
                });
                if let Err(lost) = actor.store.event(
                    Some(actor.task),
                    Some(actor.goal),
                    crate::store::EventKind::SecretBlocked,
                    &data,
                    Utc::now(),
                ) {
                    tracing::warn!(
                        task = actor.task,
                        "cannot record the refused commit: {lost}"
                    );
                }
            }
            return Err(e);
        }
    };
    let failed = outcome
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let content = outcome
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let audit = audit(actor, call, outcome.clone(), diff);
    record(
        actor,
        step,
        call,
        entry(&outcome),
        Some(&audit),
        if failed { Err(content) } else { Ok(()) },
    )?;
    Ok(Acted {
        outcome,
        skipped: false,
        images,
    })
}

/// A gated step runs only once a person approved it (for this attempt of the task, with
/// this input): otherwise the request is made (or found waiting) and the task waits, or a
/// denial refuses it.
fn approval(
    actor: &Actor<'_>,
    step: u32,
    call: &ToolCall,
    action: &str,
    reason: &str,
) -> Result<(), ActError> {
    let input = call.approval_input();
    let asked = actor.store.ask_approval(
        &crate::store::Ask {
            task: actor.task,
            step,
            agent: actor.agent,
            action,
            input: &input,
            reason,
            diff: None,
            reviewed: None,
            timeout: actor.gates.and_then(|g| g.timeout),
        },
        Utc::now(),
    )?;
    let refusal = match asked.state {
        ApprovalState::Approved => return Ok(()),
        ApprovalState::Pending => ActError::NeedsApproval(format!(
            "{reason} (approval request {}: `proto approve {}` or merge its branch proto/approvals/{})",
            asked.id, asked.id, asked.id
        )),
        ApprovalState::Denied => ActError::Forbidden(format!(
            "{action} was denied by {}: {}",
            asked.decided_by.unwrap_or_default(),
            asked.answer.unwrap_or_default()
        )),
    };
    Err(refused(actor, step, call, refusal)?)
}

/// Audits a call that may not run (nothing is journaled: it runs, or is asked again, when
/// the step comes again) and hands back the refusal.
fn refused(
    actor: &Actor<'_>,
    step: u32,
    call: &ToolCall,
    refusal: ActError,
) -> Result<ActError, StoreError> {
    let audit = audit(actor, call, json!({ "refused": refusal.to_string() }), None);
    record(
        actor,
        step,
        call,
        Entry::None,
        Some(&audit),
        Err(&refusal.to_string()),
    )?;
    Ok(refusal)
}

/// Writes what the step leaves in the store (its journal entry, its audit record, and the
/// activity line the event log shows) in one transaction.
fn record(
    actor: &Actor<'_>,
    step: u32,
    call: &ToolCall,
    entry: Entry<'_>,
    audit: Option<&AuditRecord>,
    result: Result<(), &str>,
) -> Result<(), StoreError> {
    let activity = crate::store::activity::Activity::Tool {
        agent: actor.agent.to_string(),
        call: call.summary(),
        step,
        ok: result.is_ok(),
        error: result.err().map(|e| e.chars().take(300).collect()),
    };
    actor.store.record(
        &StepRecord {
            task: actor.task,
            goal: actor.goal,
            entry,
            cost: None,
            audit,
            activity: Some(&activity),
        },
        Utc::now(),
    )?;
    Ok(())
}

/// The refusal, when `e` is a commit refused for the secrets it would add.
fn secrets_refused(e: &ActError) -> Option<&crate::secrets::Refused> {
    match e {
        ActError::Delivery(DeliveryError::Secrets(refused)) => Some(refused),
        _ => None,
    }
}

fn audit(actor: &Actor<'_>, call: &ToolCall, outcome: Value, diff: Option<String>) -> AuditRecord {
    AuditRecord {
        id: 0,
        time: Utc::now(),
        agent: actor.agent.to_string(),
        goal: Some(actor.goal.to_string()),
        task: Some(actor.task),
        action: call.action().to_string(),
        input: call.input(),
        outcome,
        diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_are_unified() {
        let diff = execute::unified_diff("a.txt", "one\ntwo\n", "one\nthree\n").unwrap();
        assert!(
            diff.contains("--- a/a.txt") && diff.contains("-two") && diff.contains("+three"),
            "{diff}"
        );
        assert_eq!(execute::unified_diff("a.txt", "x", "x"), None);
    }
}
