//! The hooks around a whole agent session rather than one action: `SessionStart` when it
//! begins, `Stop` when the model ends its turn, `SubagentStop` when a delegated agent does.
//!
//! ```text
//! session_start(actor, step, rebuilt)  -> context for the first user message
//! ... turns ...
//! stop(actor, step, continued, words)  -> Some(reason): keep going; None: stop
//! ```
//!
//! What they say changes the conversation, and a conversation must be rebuilt exactly after
//! a restart (recorded model responses are reused as they are). So each outcome is journaled
//! in the store as a step of its own, like an action, and a journaled outcome is reused
//! instead of running the hooks again.
//!
//! Decisions, with Claude Code's semantics where it has them:
//!
//! - `SessionStart` cannot block. Plain stdout of exit-0 hooks and
//!   `hookSpecificOutput.additionalContext` become context. On a restart the recorded
//!   context is reused and the hooks run again with `source: "resume"`, for their side
//!   effects only: what they print is not added, because the rebuilt conversation must stay
//!   the one the recorded turns answered. Proto's one addition: a `failClosed` hook that
//!   fails refuses the session (a policy hook that cannot answer must not be skipped).
//! - `Stop` / `SubagentStop`: a block (exit 2 with stderr, `decision: "block"` with
//!   `reason`, or a `failClosed` hook that failed) keeps the agent going, the reason becoming
//!   its next user message; `stop_hook_active` is true once a hook has done so in this
//!   session. `continue: false` stops it whatever else was said. A session is kept going
//!   at most [`MAX_STOP_CONTINUATIONS`] times; past that a block is logged and ignored, the
//!   agent stops, and the goal's check decides as always. `maxTurns`, budgets and
//!   cancellation end a session that hooks keep going, as any other.
//! - A delegated child (a session whose delegation chain has more than one agent) fires
//!   `SubagentStop` instead of `Stop`, with `agent_type` (its agent's name, what matchers
//!   select on) and `agent_id` (its session), and no `SessionStart`, as in Claude Code.

use chrono::Utc;
use serde_json::{Value, json};

use super::hooks::{self, HookDecision, HookInput, HookOutcome};
use super::{ActError, Actor, hook_session, hook_site};
use crate::store::{AuditRecord, Entry, StepRecord};

/// Times Stop or SubagentStop hooks may keep one session going. A hook that wants more is
/// stuck rather than helping (it should look at `stop_hook_active`), and each continuation
/// costs a model turn.
pub const MAX_STOP_CONTINUATIONS: u32 = 5;

/// Whether the actor is a delegated child rather than the task's own agent.
fn is_subagent(actor: &Actor<'_>) -> bool {
    actor.delegated
}

fn declared(actor: &Actor<'_>, event: &str) -> bool {
    actor
        .settings
        .is_some_and(|s| s.hooks.get(event).is_some_and(|m| !m.is_empty()))
}

/// Runs an event's hooks, or gives up when the task is cancelled (the hooks are killed).
async fn run(actor: &Actor<'_>, input: &HookInput) -> Result<HookOutcome, ActError> {
    let empty = Default::default();
    let declared = actor.settings.map_or(&empty, |s| &s.hooks);
    let site = hook_site(actor);
    tokio::select! {
        outcome = hooks::run_hooks(&site, declared, input) => {
            for error in &outcome.errors {
                tracing::warn!(event = %input.event, "hook failed (not blocking): {error}");
            }
            Ok(outcome)
        }
        _ = actor.cancel.cancelled() => Err(ActError::Cancelled),
    }
}

/// The outcome journaled at `step` for `event`, when one was recorded and finished.
fn recorded(actor: &Actor<'_>, step: u32, event: &str) -> Result<Option<Value>, ActError> {
    Ok(actor
        .store
        .action(actor.task, step)?
        .filter(|r| r.finished_at.is_some() && r.tool == event)
        .and_then(|r| r.outcome))
}

/// Journals an event's outcome as step `step`, with its audit record.
fn journal(
    actor: &Actor<'_>,
    step: u32,
    event: &str,
    input: &Value,
    outcome: &Value,
) -> Result<(), ActError> {
    let now = Utc::now();
    let audit = AuditRecord {
        id: 0,
        time: now,
        agent: actor.agent.to_string(),
        goal: Some(actor.goal.to_string()),
        task: Some(actor.task),
        action: event.to_string(),
        input: input.clone(),
        outcome: outcome.clone(),
        diff: None,
    };
    // The hooks have answered; their answer is the entry, written whole.
    actor.store.record(
        &StepRecord {
            task: actor.task,
            goal: actor.goal,
            entry: Entry::Whole {
                step,
                tool: event,
                input,
                outcome,
                started_at: now,
            },
            cost: None,
            audit: Some(&audit),
            activity: None,
        },
        Utc::now(),
    )?;
    Ok(())
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A `failClosed` hook that could not answer (as opposed to one that blocked on purpose).
fn failed_closed(outcome: &HookOutcome) -> Option<String> {
    outcome
        .runs
        .iter()
        .find_map(|r| match (&r.error, &r.decision) {
            (Some(_), HookDecision::Block { reason }) => Some(reason.clone()),
            _ => None,
        })
}

/// SessionStart: the context its hooks give the session, journaled as step `step`.
/// `rebuilt` says the conversation already has recorded turns (a restart): then the
/// recorded context, if any, is reused and the hooks run with `source: "resume"` for their
/// side effects only. See the module docs.
pub async fn session_start(
    actor: &Actor<'_>,
    step: u32,
    rebuilt: bool,
    model: &str,
) -> Result<Vec<String>, ActError> {
    const EVENT: &str = "SessionStart";
    if is_subagent(actor) || !declared(actor, EVENT) {
        return Ok(Vec::new());
    }
    let kept = recorded(actor, step, EVENT)?;
    let source = if kept.is_some() || rebuilt {
        "resume"
    } else {
        "startup"
    };
    let input = HookInput::session_start(&hook_session(actor), source)
        .with("model", json!(model))
        .with("agent_type", json!(actor.agent));
    let outcome = run(actor, &input).await?;
    if let Some(reason) = failed_closed(&outcome) {
        return Err(ActError::Failed(format!(
            "SessionStart refused the session: {reason}"
        )));
    }
    if let HookDecision::Block { reason } = &outcome.decision {
        // Claude Code: SessionStart cannot block; stderr is only shown.
        tracing::info!(agent = actor.agent, "SessionStart hook said: {reason}");
    }
    if source == "resume" {
        if !outcome.additional_context.is_empty() {
            tracing::info!(
                agent = actor.agent,
                "SessionStart(resume) context not added: a rebuilt conversation keeps the one its recorded turns answered"
            );
        }
        return Ok(kept.map(|k| strings(k.get("context"))).unwrap_or_default());
    }
    let context = outcome.additional_context;
    journal(
        actor,
        step,
        EVENT,
        &json!({ "source": source }),
        &json!({ "context": context, "errors": outcome.errors }),
    )?;
    Ok(context)
}

/// Stop (or SubagentStop for a delegated child), when the model ended its turn: `Some`
/// with the instruction to continue when a hook keeps the agent going, `None` to let it
/// stop. `continued` is how many times hooks already kept this session going; the outcome
/// is journaled as step `step`. See the module docs.
pub async fn stop(
    actor: &Actor<'_>,
    step: u32,
    continued: u32,
    last_message: &str,
) -> Result<Option<String>, ActError> {
    let event = if is_subagent(actor) {
        "SubagentStop"
    } else {
        "Stop"
    };
    if !declared(actor, event) {
        return Ok(None);
    }
    if let Some(kept) = recorded(actor, step, event)? {
        return Ok(kept
            .get("continue")
            .and_then(Value::as_str)
            .map(str::to_string));
    }
    let session = hook_session(actor);
    let active = continued > 0;
    let input = if event == "SubagentStop" {
        HookInput::subagent_stop(&session, actor.agent, active)
            .with("agent_id", json!(session.session_id))
    } else {
        HookInput::stop(&session, active)
    }
    .with("last_assistant_message", json!(last_message));
    let outcome = run(actor, &input).await?;
    let blocked = match (&outcome.halt, &outcome.decision) {
        (Some(reason), _) => {
            tracing::info!(
                agent = actor.agent,
                "{event} hook stopped the agent: {reason}"
            );
            None
        }
        (None, HookDecision::Block { reason }) => Some(reason.clone()),
        _ => None,
    };
    let capped = blocked.is_some() && continued >= MAX_STOP_CONTINUATIONS;
    if capped {
        tracing::warn!(
            agent = actor.agent,
            "{event} hooks kept the session going {continued} times already; it stops now ({blocked:?} ignored)"
        );
    }
    let go_on = blocked.clone().filter(|_| !capped);
    journal(
        actor,
        step,
        event,
        &json!({ "stopHookActive": active }),
        &json!({
            "continue": go_on,
            "blocked": blocked,
            "capped": capped,
            "halted": outcome.halt,
            "errors": outcome.errors,
        }),
    )?;
    Ok(go_on)
}
