//! `act()`: the one path every agent action takes. It checks the agent may use the tool,
//! executes it on the task's computer, and journals it with an audit record carrying the
//! unified diff of any file it changed and the activity line of the event log, all in one
//! transaction. A call whose effect may reach past the workspace (see [`opens_entry`]) is
//! also journaled as started before its effect, so that after a crash a step found started
//! but not finished is known to be in doubt and re-examined — is the file already written,
//! the commit already made, the push already there? — rather than blindly redone.
//! Permission rules from settings, hooks, approvals, rate limits and budgets join this same
//! path; no tool reaches a computer any other way. The hooks around a whole session
//! (`SessionStart`, `Stop`, `SubagentStop`) are in [`lifecycle`].

pub mod hooks;
pub mod lifecycle;
pub mod limits;
pub mod permissions;

pub use lifecycle::{MAX_STOP_CONTINUATIONS, session_start, stop};

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use similar::TextDiff;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::computer::{Computer, ComputerError, RunRequest, Workspace};
use crate::gitops::Identity;
use crate::gitops::delivery::DeliveryError;
use crate::store::{AuditRecord, Entry, StepRecord, Store, StoreError, TaskId};

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
}

/// Everything `act()` needs about who acts, where, and for which task.
#[derive(Clone)]
pub struct Actor<'a> {
    pub store: &'a Store,
    pub task: TaskId,
    pub goal: &'a str,
    pub agent: &'a str,
    /// The agent's allowed tools (`Bash`, `Bash(git *)`, ...).
    pub tools: &'a [String],
    pub computer: &'a dyn Computer,
    pub workspace: &'a Workspace,
    pub author: &'a Identity,
    pub cancel: &'a CancellationToken,
    /// The company's `.claude/settings.json`: permission rules and hooks.
    pub settings: Option<&'a crate::spec::Settings>,
    /// Actions per minute, per company and per agent.
    pub limits: Option<&'a limits::RateLimits>,
    /// The company's MCP servers, for `mcp__<server>__<tool>` calls.
    pub mcp: Option<&'a crate::mcp::McpPool>,
    /// Set when the agent may hand work to others: the chain so far and what children use.
    pub delegation: Option<&'a crate::agent::delegate::Delegation>,
}

/// Whether `tools` allows `tool`. A narrowed entry (`Bash(npm test)`) counts as holding the
/// tool here; the argument-level rules are the permission layer's job.
pub fn allows(tools: &[String], tool: &str) -> bool {
    tools.iter().any(|t| {
        let base = t.split('(').next().unwrap_or(t);
        // `mcp__server` grants every tool of that server.
        base == tool || (base.starts_with("mcp__") && tool.starts_with(&format!("{base}__")))
    })
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
        let argument = ["command", "file_path", "path", "url", "pattern", "skill"]
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
    let outcome = hooks::run_hooks(&settings.hooks, &event).await;
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
        actor.tools
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
pub fn opens_entry(call: &ToolCall) -> bool {
    match call {
        ToolCall::Write { .. } | ToolCall::Edit { .. } => false,
        ToolCall::Bash { .. } | ToolCall::Commit { .. } | ToolCall::Push { .. } => true,
        ToolCall::Tool { name, .. } => !matches!(
            name.as_str(),
            "Read" | "Glob" | "Grep" | "Write" | "Edit" | "Planning" | SKILL_TOOL
        ),
    }
}

/// Takes one action, step `step` of the actor's task. See the module docs.
pub async fn act(actor: &Actor<'_>, step: u32, call: &ToolCall) -> Result<Acted, ActError> {
    let now = Utc::now();
    if !allows(ceiling(actor, call), call.tool()) {
        let err = ActError::Denied {
            agent: actor.agent.to_string(),
            tool: call.tool().to_string(),
            allowed: actor.tools.join(", "),
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
            });
        }
    }
    throttle(actor).await?;
    let rewritten;
    let call = match admit(actor, call).await {
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
        Err(refusal) => {
            let audit = audit(actor, call, json!({ "refused": refusal.to_string() }), None);
            record(
                actor,
                step,
                call,
                Entry::None,
                Some(&audit),
                Err(&refusal.to_string()),
            )?;
            return Err(refusal);
        }
    };
    let started = opens_entry(call)
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
    let (outcome, diff) = match execute(actor, step, call).await {
        Ok(done) => {
            after(actor, call, Ok(&done.0)).await;
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
            );
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
            } else if let Err(lost) =
                record(actor, step, call, Entry::None, None, Err(&e.to_string()))
            {
                // Only the activity line: the error that stops the task matters more.
                tracing::warn!(task = actor.task, "cannot record the activity: {lost}");
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
    })
}

/// The tool that loads a skill's instructions (Claude Code's `Skill`).
pub const SKILL_TOOL: &str = "Skill";

/// The body of a skill the acting agent holds, for `Skill {"skill": name}`.
fn load_skill(actor: &Actor<'_>, input: &Value) -> Result<String, String> {
    let name = input
        .get("skill")
        .and_then(Value::as_str)
        .ok_or("skill: the name of the skill to load is missing")?;
    let spec = actor
        .delegation
        .map(|d| &d.spec)
        .ok_or("skills are not available here")?;
    let skill = spec.claude.skills.iter().find(|s| s.answers_to(name));
    let held = spec.agent(actor.agent).is_some_and(|a| {
        a.spec
            .skills
            .iter()
            .any(|r| skill.is_some_and(|s| s.answers_to(r)))
    });
    match skill {
        Some(skill) if held => Ok(format!(
            "<skill name=\"{}\" file=\"{}\">\n{}\n</skill>",
            skill.name,
            skill.file,
            skill.body.trim()
        )),
        _ => Err(format!("{} holds no skill named {name}", actor.agent)),
    }
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

async fn read_text(actor: &Actor<'_>, path: &str) -> Result<Option<String>, ActError> {
    Ok(actor
        .computer
        .read(actor.workspace, path)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// A resumed session works in a fresh clone of the product's branch: the file changes its
/// journal says were made are made again there (a command is not run again: its recorded
/// output stands, and what it changed on disk is lost with the old workspace). Best effort:
/// the goal's check decides whether the work is whole.
async fn replay(actor: &Actor<'_>, step: u32, call: &ToolCall, outcome: Option<&Value>) {
    let changes_files = match call {
        ToolCall::Write { .. } | ToolCall::Edit { .. } => true,
        ToolCall::Tool { name, .. } => matches!(name.as_str(), "Write" | "Edit"),
        _ => false,
    };
    let failed = outcome
        .and_then(|o| o.get("isError"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !changes_files || failed || already_done(actor, call).await.unwrap_or(false) {
        return;
    }
    if let Err(e) = execute(actor, step, call).await {
        tracing::warn!(
            task = actor.task,
            step,
            "cannot replay {}: {e}",
            call.summary()
        );
    }
}

/// After a crash: has this call's effect already happened?
async fn already_done(actor: &Actor<'_>, call: &ToolCall) -> Result<bool, ActError> {
    Ok(match call {
        ToolCall::Write { path, content } => {
            read_text(actor, path).await?.as_deref() == Some(content.as_str())
        }
        ToolCall::Edit { path, old, new } => read_text(actor, path)
            .await?
            .is_some_and(|text| text.contains(new.as_str()) && !text.contains(old.as_str())),
        // The product's branch says whether work was delivered (see `is_delivery`).
        ToolCall::Commit { .. } | ToolCall::Push { .. } => false,
        ToolCall::Tool { name, input } => {
            let text = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
            match (name.as_str(), text("file_path")) {
                // A path the tool itself would resolve differently (absolute) reads as "not done".
                ("Write", Some(path)) => {
                    let now = read_text(actor, &path).await.ok().flatten();
                    now.is_some() && now == text("content")
                }
                ("Edit", Some(path)) => match (
                    text("old_string"),
                    text("new_string"),
                    read_text(actor, &path).await.ok().flatten(),
                ) {
                    (Some(old), Some(new), Some(now)) => now.contains(&new) && !now.contains(&old),
                    _ => false,
                },
                // Reads and searches have no effect; commands cannot be inspected: run again.
                _ => false,
            }
        }
        // A command's effects cannot be inspected: it runs again (playbook commands should
        // be idempotent, as `cargo fmt` or `npm ci` are).
        ToolCall::Bash { .. } => false,
    })
}

fn unified_diff(path: &str, before: &str, after: &str) -> Option<String> {
    if before == after {
        return None;
    }
    Some(
        TextDiff::from_lines(before, after)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{path}"), &format!("b/{path}"))
            .to_string(),
    )
}

async fn execute(
    actor: &Actor<'_>,
    step: u32,
    call: &ToolCall,
) -> Result<(Value, Option<String>), ActError> {
    if actor.cancel.is_cancelled() {
        return Err(ActError::Cancelled);
    }
    match call {
        ToolCall::Bash { command, timeout } => {
            let request = RunRequest {
                command: command.clone(),
                cwd: String::new(),
                env: BTreeMap::new(),
                timeout: *timeout,
            };
            let out = actor
                .computer
                .run(actor.workspace, &request, None, actor.cancel)
                .await?;
            if out.cancelled {
                return Err(ActError::Cancelled);
            }
            let outcome = json!({ "exitCode": out.code, "timedOut": out.timed_out, "stdoutTail": tail(&out.stdout), "stderrTail": tail(&out.stderr) });
            if !out.success() {
                return Err(ActError::Failed(format!("`{command}`: {}", out.summary())));
            }
            Ok((outcome, None))
        }
        ToolCall::Write { path, content } => {
            let before = read_text(actor, path).await?.unwrap_or_default();
            actor
                .computer
                .write(actor.workspace, path, content.as_bytes())
                .await?;
            Ok((
                json!({ "written": content.len() }),
                unified_diff(path, &before, content),
            ))
        }
        ToolCall::Edit { path, old, new } => {
            let before = read_text(actor, path)
                .await?
                .ok_or_else(|| ActError::EditMismatch {
                    path: path.clone(),
                    found: "cannot be found: the file does not exist".into(),
                })?;
            let count = before.matches(old.as_str()).count();
            if count != 1 {
                return Err(ActError::EditMismatch {
                    path: path.clone(),
                    found: if count == 0 {
                        "does not occur".into()
                    } else {
                        format!("occurs {count} times; it must occur once")
                    },
                });
            }
            let after = before.replacen(old.as_str(), new, 1);
            actor
                .computer
                .write(actor.workspace, path, after.as_bytes())
                .await?;
            Ok((
                json!({ "replaced": 1 }),
                unified_diff(path, &before, &after),
            ))
        }
        ToolCall::Commit { message } => {
            let author = Identity::agent(actor.agent, actor.author);
            let commit = git(actor)
                .commit_all(message, &author, actor.author)
                .await?;
            Ok((json!({ "commit": commit }), None))
        }
        ToolCall::Tool { name, input } if name == SKILL_TOOL => {
            let (content, is_error) = match load_skill(actor, input) {
                Ok(body) => (body, false),
                Err(reason) => (reason, true),
            };
            Ok((json!({ "content": content, "isError": is_error }), None))
        }
        ToolCall::Tool { name, input } if name == "Delegate" => {
            let Some(delegation) = actor.delegation else {
                return Err(ActError::Failed("delegation is not available here".into()));
            };
            let (content, is_error) =
                crate::agent::delegate::delegate(actor, delegation, step, input).await?;
            Ok((json!({ "content": content, "isError": is_error }), None))
        }
        ToolCall::Tool { name, input } if name.starts_with("mcp__") => {
            let Some(pool) = actor.mcp else {
                return Err(ActError::Failed(format!(
                    "{name}: no MCP servers are declared"
                )));
            };
            let result = pool
                .call(name, input.clone())
                .await
                .map_err(|e| ActError::Failed(e.to_string()))?;
            Ok((
                json!({ "content": result.content, "isError": result.is_error }),
                None,
            ))
        }
        ToolCall::Tool { name, input } => {
            let Some(tool) = crate::tools::tool(name) else {
                return Err(ActError::Failed(format!("no tool {name} on this computer")));
            };
            // The agent's own commits (the `Git` tool) are authored as the agent.
            let author = Identity::agent(actor.agent, actor.author);
            let ctx = crate::tools::ToolContext {
                computer: actor.computer,
                workspace: actor.workspace,
                cancel: actor.cancel,
                agent: actor.agent,
                author: &author,
                planning_file: None,
            };
            let out = tool
                .run(input, &ctx)
                .await
                .map_err(|e| ActError::Failed(e.to_string()))?;
            let diffs: Vec<String> = out
                .changed_files
                .iter()
                .filter_map(|c| {
                    unified_diff(
                        &c.path,
                        c.before.as_deref().unwrap_or_default(),
                        c.after.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            let diff = (!diffs.is_empty()).then(|| diffs.join(""));
            Ok((
                json!({ "content": out.content, "isError": out.is_error }),
                diff,
            ))
        }
        ToolCall::Push { branch, from } => {
            let pushed = git(actor).push(branch, from.as_deref()).await?;
            Ok((json!({ "pushed": pushed, "branch": branch }), None))
        }
    }
}

fn git<'a>(actor: &'a Actor<'_>) -> crate::gitops::delivery::Git<'a> {
    crate::gitops::delivery::Git {
        computer: actor.computer,
        workspace: actor.workspace,
        cancel: actor.cancel,
    }
}

/// The last lines of an output, for the audit log.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowed_tools_still_hold_the_tool() {
        let tools = vec!["Read".to_string(), "Bash(npm test)".to_string()];
        assert!(allows(&tools, "Bash"));
        assert!(allows(&tools, "Read"));
        assert!(!allows(&tools, "Write"));
        let mcp = vec!["mcp__fs".to_string(), "mcp__web__fetch".to_string()];
        assert!(allows(&mcp, "mcp__fs__read_file"));
        assert!(allows(&mcp, "mcp__web__fetch"));
        assert!(!allows(&mcp, "mcp__web__post"));
        assert!(!allows(&mcp, "mcp__fsx__read"));
    }

    #[test]
    fn diffs_are_unified() {
        let diff = unified_diff("a.txt", "one\ntwo\n", "one\nthree\n").unwrap();
        assert!(
            diff.contains("--- a/a.txt") && diff.contains("-two") && diff.contains("+three"),
            "{diff}"
        );
        assert_eq!(unified_diff("a.txt", "x", "x"), None);
    }
}
