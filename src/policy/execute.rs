//! What an action does once `act()` has admitted it: a model's tool call is handed to the
//! session's tool [`Registry`](crate::tools::Registry); the controller's own actions (the
//! steps of a playbook, declared in git, and the delivery of a goal's work) are carried out
//! here. Also what a resumed attempt does with a call its journal says was made.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use similar::TextDiff;

use super::{ActError, Actor, ToolCall};
use crate::computer::{Origin, RunRequest};
use crate::gitops::Identity;
use crate::model::Image;
use crate::tools::{Effect, Halt, ToolContext, ToolError};

/// Where a tool runs and on whose behalf; `step` when the call is a step of the task (a
/// tool that starts work of its own records it there).
fn context<'a>(actor: &'a Actor<'_>, author: &'a Identity, step: Option<u32>) -> ToolContext<'a> {
    ToolContext {
        computer: actor.computer,
        workspace: actor.workspace,
        cancel: actor.cancel,
        agent: actor.agent,
        author,
        planning_file: None,
        step: step.map(|number| crate::tools::StepOf {
            store: actor.store,
            task: actor.task,
            goal: actor.goal,
            number,
            controller: actor.author,
        }),
    }
}

/// A tool's error as the action's: what stops the whole task keeps its kind (a computer
/// that cannot be reached too), anything else is the model's to read.
fn from_tool(e: ToolError) -> ActError {
    match e {
        ToolError::Halt(Halt::Cancelled) => ActError::Cancelled,
        ToolError::Halt(Halt::ProviderUnavailable(e)) => ActError::ProviderUnavailable(e),
        ToolError::Halt(Halt::Budget(e)) => ActError::Budget(e),
        ToolError::Halt(Halt::NeedsApproval(reason)) => ActError::NeedsApproval(reason),
        ToolError::Halt(Halt::Store(e)) => ActError::Store(e),
        ToolError::Secrets(refused) => ActError::Delivery(refused.into()),
        // An unreachable computer stops the task (see `ActError::is_transport`).
        ToolError::Computer(e) if e.is_transport() => ActError::Computer(e),
        e => ActError::Failed(e.to_string()),
    }
}

pub(super) async fn read_text(actor: &Actor<'_>, path: &str) -> Result<Option<String>, ActError> {
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
pub(super) async fn replay(actor: &Actor<'_>, step: u32, call: &ToolCall, outcome: Option<&Value>) {
    let changes_files = match call {
        ToolCall::Write { .. } | ToolCall::Edit { .. } => true,
        ToolCall::Tool { name, .. } => actor
            .tools
            .get(name)
            .is_some_and(|t| t.effect() == Effect::Workspace),
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
pub(super) async fn already_done(actor: &Actor<'_>, call: &ToolCall) -> Result<bool, ActError> {
    Ok(match call {
        ToolCall::Write { path, content } => {
            read_text(actor, path).await?.as_deref() == Some(content.as_str())
        }
        ToolCall::Edit { path, old, new } => read_text(actor, path)
            .await?
            .is_some_and(|text| text.contains(new.as_str()) && !text.contains(old.as_str())),
        // The product's branch says whether work was delivered (see `is_delivery`).
        ToolCall::Commit { .. } | ToolCall::Push { .. } => false,
        // Reads and searches have no effect, commands cannot be inspected (they run again);
        // a tool that changes workspace files knows whether its change is there.
        ToolCall::Tool { name, input } => match actor.tools.get(name) {
            Some(tool) if tool.effect() == Effect::Workspace => {
                let author = Identity::agent(actor.agent, actor.author);
                tool.already_done(input, &context(actor, &author, None))
                    .await
            }
            _ => false,
        },
        // A command's effects cannot be inspected: it runs again (playbook commands should
        // be idempotent, as `cargo fmt` or `npm ci` are).
        ToolCall::Bash { .. } => false,
    })
}

pub(super) fn unified_diff(path: &str, before: &str, after: &str) -> Option<String> {
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

/// What an action did: the outcome journaled and audited, the diff of the files it changed,
/// and the images it gave the model (kept out of the outcome, which records only their
/// [summaries](Image::summary)).
pub(super) struct Executed {
    pub outcome: Value,
    pub diff: Option<String>,
    pub images: Vec<Image>,
}

impl Executed {
    fn new(outcome: Value, diff: Option<String>) -> Self {
        Executed {
            outcome,
            diff,
            images: Vec::new(),
        }
    }
}

pub(super) async fn execute(
    actor: &Actor<'_>,
    step: u32,
    call: &ToolCall,
) -> Result<Executed, ActError> {
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
                origin: Origin::Agent,
                stdin: None,
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
            Ok(Executed::new(outcome, None))
        }
        ToolCall::Write { path, content } => {
            let before = read_text(actor, path).await?.unwrap_or_default();
            actor
                .computer
                .write(actor.workspace, path, content.as_bytes())
                .await?;
            Ok(Executed::new(
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
            Ok(Executed::new(
                json!({ "replaced": 1 }),
                unified_diff(path, &before, &after),
            ))
        }
        ToolCall::Commit { message } => {
            let author = Identity::agent(actor.agent, actor.author);
            let commit = git(actor)
                .commit_all(message, &author, actor.author)
                .await?;
            Ok(Executed::new(json!({ "commit": commit }), None))
        }
        ToolCall::Tool { name, input } => {
            let Some(tool) = actor.tools.get(name) else {
                return Err(ActError::Failed(format!(
                    "{name}: no such tool in this session (its tools are {})",
                    actor.tools.names().collect::<Vec<_>>().join(", ")
                )));
            };
            // The agent's own commits (the `Git` tool) are authored as the agent.
            let author = Identity::agent(actor.agent, actor.author);
            let out = tool
                .run(input, &context(actor, &author, Some(step)))
                .await
                .map_err(from_tool)?;
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
            let mut outcome = json!({ "content": out.content, "isError": out.is_error });
            if !out.images.is_empty() {
                // What identifies each image, never its pixels: journals and the audit stay
                // small, and a resumed session says the image is gone (see `agent`).
                outcome["images"] = out.images.iter().map(Image::summary).collect();
            }
            Ok(Executed {
                outcome,
                diff,
                images: out.images,
            })
        }
        ToolCall::Push { branch, from } => {
            let pushed = git(actor).push(branch, from.as_deref()).await?;
            Ok(Executed::new(
                json!({ "pushed": pushed, "branch": branch }),
                None,
            ))
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
