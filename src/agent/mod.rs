//! The agent runtime's turn loop: assemble the context, call the model, run every tool call
//! it makes through `act()`, feed the results back, until the model ends its turn, the
//! agent's `maxTurns`, the token budget, or cancellation.
//!
//! Every model response and every tool call is journaled in the store before the next step
//! starts (model turn `t` is step `t * 100`, its tool calls `t * 100 + 1 ..= t * 100 + 97`,
//! the outcome of the Stop hooks when the turn ends the session `t * 100 + 98`, and turn 0
//! has the SessionStart hooks' context at 99). After a crash the conversation is rebuilt from the
//! journal: recorded responses and hook outcomes are reused (no tokens spent twice, no hook
//! asked twice) and finished tool calls are not repeated.
//!
//! SessionStart context goes into the first user message, after the task, rather than into
//! the system prompt: the system prompt is the same for every session of an agent and is
//! cached as the prefix of all of them, while hook output is per session (a date, a git
//! status). In the first message it is still fixed for the whole conversation, so every
//! turn's cached prefix stays valid.

pub mod build;
pub mod compact;
pub mod context;
pub mod delegate;
pub mod select;
pub mod skill;
pub mod verdict;

pub use build::{Builder, Setup, grants};
pub use context::system_prompt;
pub use verdict::{JUDGE_SYSTEM, Verdict, judged, parse_verdict};

use chrono::Utc;
use serde_json::json;
use thiserror::Error;

use crate::model::{
    ContentBlock, Message, Model, ModelError, PriceTable, Request, Response, StopReason,
    SystemBlock, ToolDef, Usage, with_retries,
};
use crate::policy::{ActError, Actor, ToolCall, act};
use crate::spec::{AgentSpec, GoalSpec, Rule, Spec};
use crate::store::{Cost, Entry, StepRecord, StoreError};

/// Steps of one model turn: the response, then up to 97 tool calls, then the two hook steps.
const STEP_STRIDE: u32 = 100;
/// The step offset of a turn's last tool call; later calls of that turn share it.
const LAST_CALL_OFFSET: u32 = STEP_STRIDE - 3;
/// Where a turn that ends the session journals what its Stop hooks said.
const STOP_OFFSET: u32 = STEP_STRIDE - 2;
/// Where turn 0 journals the SessionStart hooks' context (it precedes the first call).
const SESSION_START_OFFSET: u32 = STEP_STRIDE - 1;
/// Retries of a rate-limited or overloaded call before giving up on the turn.
const MODEL_RETRIES: u32 = 3;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Act(#[from] ActError),
    #[error("{0}")]
    Budget(#[from] crate::policy::limits::BudgetExceeded),
    #[error("{action} needs a person's approval: {reason}")]
    NeedsApproval { action: String, reason: String },
    #[error("{0} turns without finishing (maxTurns)")]
    MaxTurns(u32),
    #[error("cancelled")]
    Cancelled,
}

impl AgentError {
    /// Whether the session stopped because no model provider could answer.
    pub fn is_outage(&self) -> bool {
        matches!(self, AgentError::Model(m) if m.is_outage())
    }

    /// When the provider may answer again, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AgentError::Model(m) if m.is_outage() => m.retry_after(),
            _ => None,
        }
    }
}

/// How an agent session that did not finish ends its task's attempt: a spent dollar budget
/// ends the task (the planner waits for budget), an action needing approval parks it, a
/// provider outage queues it again without counting the attempt, anything else (the attempt's token budget included) is a failed attempt, retried and
/// escalated.
pub fn outcome_of(agent: &str, e: &AgentError) -> crate::store::AttemptOutcome {
    use crate::policy::limits::BudgetExceeded;
    use crate::store::AttemptOutcome;
    match e {
        AgentError::Budget(spent @ BudgetExceeded::Usd { .. }) => AttemptOutcome::OverBudget {
            error: spent.to_string(),
        },
        AgentError::NeedsApproval { action, reason } => AttemptOutcome::WaitingApproval {
            action: action.clone(),
            reason: reason.clone(),
        },
        // The provider is out, not the work wrong: wait for it, no attempt spent.
        AgentError::Model(m) if m.is_outage() => AttemptOutcome::ProviderUnavailable {
            error: m.to_string(),
        },
        e => AttemptOutcome::Failed {
            error: format!("agent {agent}: {e}"),
        },
    }
}

/// Where the work happens, and for which task.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub store: &'a crate::store::Store,
    pub task: crate::store::TaskId,
    pub goal: &'a str,
    pub computer: &'a dyn crate::computer::Computer,
    pub workspace: &'a crate::computer::Workspace,
    /// The controller's identity, from which each agent's is made.
    pub author: &'a crate::gitops::Identity,
    pub cancel: &'a tokio_util::sync::CancellationToken,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub turns: u32,
    pub usage: Usage,
    pub usd: f64,
    /// The model's last words.
    pub text: String,
    /// The tool calls the session made, in order (those resumed from the journal too): what
    /// a judge's verdict may cite.
    pub calls: Vec<Called>,
}

/// One tool call a session made, and what came of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Called {
    pub tool: String,
    pub input: serde_json::Value,
    /// What the model was given back.
    pub output: String,
    pub ok: bool,
}

/// One agent working one task.
pub struct Session<'a> {
    pub actor: Actor<'a>,
    pub model: &'a dyn Model,
    /// The concrete model id (`claude-sonnet-4-5`).
    pub model_id: String,
    pub system: Vec<SystemBlock>,
    /// Rules with `paths`, given with the result of the first tool call touching a match.
    pub scoped_rules: Vec<Rule>,
    /// The task as the first user message.
    pub task: String,
    pub max_turns: u32,
    pub max_tokens: u32,
    pub thinking: Option<u32>,
    /// How the model and thinking were chosen, when a selection chose them (not for a judge).
    pub selected: Option<select::Selection>,
    /// The budgets every model call is checked against, with what the store says was spent.
    pub budget: crate::policy::limits::TaskBudget,
    pub prices: PriceTable,
    /// Where this session's journal steps start, so that several sessions of one task (the
    /// agent's work, the judge before and after it) never share a step.
    pub step_base: u32,
}

/// The first user message: the goal, its check, and how the work is judged.
pub fn task_prompt(goal_name: &str, goal: &GoalSpec) -> String {
    let check = serde_json::to_string(&goal.check).unwrap_or_default();
    format!(
        "Goal `{goal_name}` of product `{}`: {}\n\nIt is met when this check passes in your workspace: {check}\n\
         Work in the workspace with your tools until the check would pass, verify it yourself, then end your turn \
         with a short summary of what you changed.",
        goal.product, goal.description
    )
}

/// The model id an agent uses: its own `model` or the company default; tiers map through
/// the company's `tiers` (defaults: the current Claude models). `auto` stands for Sonnet
/// wherever [`select`] does not pick per task.
pub fn model_id(spec: &Spec, agent: &AgentSpec) -> String {
    resolve_model(spec, &select::declared(spec, agent))
}

/// The model id a tier name stands for in this company (`models.tiers`, else the current
/// Claude models; `auto` reads as sonnet), or a model id unchanged.
pub fn resolve_model(spec: &Spec, wanted: &str) -> String {
    let tier = match wanted {
        "haiku" => select::Tier::Haiku,
        "sonnet" | "auto" => select::Tier::Sonnet,
        "opus" => select::Tier::Opus,
        id => return id.to_string(),
    };
    tier.model_id(spec)
}

/// The model for attempt `attempt` (0 = first): each failed attempt escalates one tier
/// (haiku → sonnet → opus), so a cheap model tries first and a strong one finishes.
pub fn escalate(spec: &Spec, model_id: &str, attempt: u32) -> String {
    let ladder = select::Tier::LADDER.map(|t| t.model_id(spec));
    match ladder.iter().position(|m| m == model_id) {
        Some(at) => ladder[(at + attempt as usize).min(ladder.len() - 1)].clone(),
        // A model outside the ladder (a local model, say) is used as declared.
        None => model_id.to_string(),
    }
}

/// The lessons of failed attempts, for the next one's prompt.
pub fn lessons(attempts: u32, last_error: Option<&str>) -> String {
    retry_lessons(attempts, last_error, &[], &[])
}

/// How much of one ranked lesson a retry's first message quotes.
const LESSON_CHARS: usize = 1500;

/// What a retry is told: how many attempts failed and how the last ended, how the earlier
/// ones of the task ended (`earlier`, oldest first), and the lessons of earlier failures of
/// this goal and similar ones, ranked (see [`crate::knowledge::capture::ranked_lessons`]).
pub fn retry_lessons(
    attempts: u32,
    last_error: Option<&str>,
    earlier: &[String],
    ranked: &[crate::knowledge::Entry],
) -> String {
    let (n, error) = match (attempts, last_error) {
        (0, _) | (_, None) => return String::new(),
        (n, Some(error)) => (n, error),
    };
    let mut text = format!("\n\n{n} earlier attempt(s) failed. The last one ended with: {error}");
    if earlier.len() > 1 {
        text.push_str("\nEach earlier attempt ended with:");
        for (i, e) in earlier.iter().enumerate() {
            let line: String = e.lines().next().unwrap_or(e).chars().take(300).collect();
            text.push_str(&format!("\n- attempt {}: {line}", i + 1));
        }
    }
    if !ranked.is_empty() {
        text.push_str(
            "\n\nLessons from earlier failures of this goal and similar goals, best match first:",
        );
        for entry in ranked {
            let body: String = entry.body.chars().take(LESSON_CHARS).collect();
            text.push_str(&format!(
                "\n<lesson file=\"{}\" title=\"{}\">\n{}\n</lesson>",
                entry.path,
                entry.title.replace('"', "'"),
                body.trim()
            ));
        }
    }
    text.push_str("\nFind out why before you act, and do not repeat what failed.");
    text
}

/// The model id of a tier name (or a model id, unchanged), with the default tiers.
pub fn model_id_for(tier: &str) -> String {
    match tier {
        "haiku" => "claude-haiku-4-5".into(),
        "sonnet" | "auto" => "claude-sonnet-4-5".into(),
        "opus" => "claude-opus-4-5".into(),
        id => id.to_string(),
    }
}

/// What the model is told when its turn hit `max_tokens`.
fn truncated_note(max_tokens: u32) -> String {
    format!(
        "Your last answer was cut off: it reached the limit of {max_tokens} output tokens (stop reason max_tokens). \
         Continue from where it stopped; if a tool call was cut off, make it again, shorter. If you had finished, say so in one line."
    )
}

fn step(base: u32, turn: u32, offset: u32) -> u32 {
    base.saturating_add(turn.saturating_mul(STEP_STRIDE))
        .saturating_add(offset)
}

impl Session<'_> {
    /// Runs the session to its end, resuming from the journal where one exists.
    pub async fn run(&self) -> Result<Finished, AgentError> {
        let mut messages = vec![self.first_message().await?];
        // Times Stop hooks kept the session going (`stop_hook_active` once it is not zero).
        let mut continued = 0;
        let mut usage = Usage::default();
        let mut usd = 0.0;
        let mut rules_given = context::RulesGiven::default();
        let mut made = Vec::new();
        // The registry's tools as the model is told them, once: the same list every turn
        // keeps the cached prefix valid.
        let tools = self.actor.tools.definitions();
        for turn in 0..self.max_turns {
            if self.actor.cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            let response = self
                .turn(turn, &messages, &tools, &mut usage, &mut usd)
                .await?;
            messages.push(response.to_message());
            self.write_transcript(&messages).await;
            let calls: Vec<(String, String, serde_json::Value)> = response
                .tool_uses()
                .into_iter()
                .map(|(id, name, input)| (id.to_string(), name.to_string(), input.clone()))
                .collect();
            // A turn's tool calls run whatever its stop reason says: Ollama ends streamed
            // tool calls with `finish_reason: "stop"`, and some models `end_turn` with
            // tool_use blocks. Dropping them would lose work the model asked for.
            if calls.is_empty() && response.stop_reason == Some(StopReason::MaxTokens) {
                // Cut off mid-answer: the model is told so and may continue, rather than the
                // session ending on half a sentence. The turn's activity records the stop.
                tracing::info!(
                    task = self.actor.task,
                    turn,
                    max_tokens = self.max_tokens,
                    "the answer was cut off at max_tokens; asking the model to continue"
                );
                messages.push(Message::user(truncated_note(self.max_tokens)));
                continue;
            }
            if calls.is_empty() {
                if let Some(reason) = self.stop_hooks(turn, continued, &response).await? {
                    continued += 1;
                    messages.push(Message::user(format!("Stop hook feedback: {reason}")));
                    continue;
                }
                return Ok(Finished {
                    turns: turn + 1,
                    usage,
                    usd,
                    text: response.text(),
                    calls: made,
                });
            }
            let mut results = Vec::new();
            for (i, (id, name, input)) in calls.into_iter().enumerate() {
                // Each call needs a journal step of its own; past the turn's last one a call
                // is answered, not run, so no two calls ever share a step.
                let offset = match u32::try_from(i + 1) {
                    Ok(n) if n <= LAST_CALL_OFFSET => n,
                    _ => {
                        results.push(ContentBlock::tool_error(
                            id,
                            format!("not run: at most {LAST_CALL_OFFSET} tool calls per turn"),
                        ));
                        continue;
                    }
                };
                let call = ToolCall::Tool {
                    name: name.clone(),
                    input,
                };
                // A refused or failed call is the model's to handle: it sees the reason.
                let block = match act(&self.actor, step(self.step_base, turn, offset), &call).await
                {
                    Ok(acted) => {
                        let content = acted
                            .outcome
                            .get("content")
                            .and_then(|c| c.as_str())
                            .unwrap_or_default()
                            .to_string();
                        let is_error = acted
                            .outcome
                            .get("isError")
                            .and_then(|e| e.as_bool())
                            .unwrap_or(false);
                        made.push(Called {
                            tool: name.clone(),
                            input: call.input(),
                            output: content.clone(),
                            ok: !is_error,
                        });
                        if is_error {
                            ContentBlock::tool_error(id, content)
                        } else {
                            let root = self.actor.workspace.root();
                            let content =
                                rules_given.after_call(&self.scoped_rules, &call, root, content);
                            let content = content + &images_gone(&acted);
                            ContentBlock::tool_result_with_images(id, content, acted.images)
                        }
                    }
                    Err(ActError::Cancelled) => return Err(AgentError::Cancelled),
                    Err(ActError::ProviderUnavailable(e)) => return Err(AgentError::Model(e)),
                    Err(ActError::Store(e)) => return Err(AgentError::Store(e)),
                    Err(ActError::Budget(e)) => return Err(AgentError::Budget(e)),
                    // A computer that cannot be reached is not the model's to work around:
                    // the attempt stops, and the task moves to one that answers.
                    Err(e) if e.is_transport() => return Err(AgentError::Act(e)),
                    // An `ask` rule: the task waits for a person rather than the model
                    // working around the refusal.
                    Err(ActError::NeedsApproval(reason)) => {
                        return Err(AgentError::NeedsApproval {
                            action: call.summary(),
                            reason,
                        });
                    }
                    Err(e) => {
                        made.push(Called {
                            tool: name.clone(),
                            input: call.input(),
                            output: e.to_string(),
                            ok: false,
                        });
                        ContentBlock::tool_error(id, e.to_string())
                    }
                };
                results.push(block);
            }
            if response.stop_reason == Some(StopReason::MaxTokens) {
                // The calls that arrived whole ran; anything after them was cut off.
                results.push(ContentBlock::text(truncated_note(self.max_tokens)));
            }
            messages.push(Message {
                role: crate::model::Role::User,
                content: results,
            });
            let used = response.usage.total_input() + response.usage.output_tokens;
            if compact::over(used, self.prices.context_window(&self.model_id)) {
                let cleared =
                    compact::clear_old_tool_results(&mut messages, compact::KEEP_MESSAGES);
                tracing::info!(
                    task = self.actor.task,
                    used,
                    cleared,
                    "context nearly full; older tool output cleared"
                );
            }
        }
        Err(AgentError::MaxTurns(self.max_turns))
    }

    /// The task, with what SessionStart hooks add to it (see the module docs for why here).
    async fn first_message(&self) -> Result<Message, AgentError> {
        let first_turn = step(self.step_base, 0, 0);
        let rebuilt = self
            .actor
            .store
            .action(self.actor.task, first_turn)?
            .is_some();
        let context = crate::policy::session_start(
            &self.actor,
            step(self.step_base, 0, SESSION_START_OFFSET),
            rebuilt,
            &self.model_id,
        )
        .await
        .map_err(hook_error)?;
        let mut message = Message::user(self.task.clone());
        if !context.is_empty() {
            message.content.push(ContentBlock::text(format!(
                "\n\n<session-start-context>\n{}\n</session-start-context>",
                context.join("\n\n")
            )));
        }
        Ok(message)
    }

    /// Stop (or SubagentStop) hooks after turn `turn` ended without tool calls: the reason
    /// to keep going, when one keeps the agent going.
    async fn stop_hooks(
        &self,
        turn: u32,
        continued: u32,
        response: &Response,
    ) -> Result<Option<String>, AgentError> {
        crate::policy::stop(
            &self.actor,
            step(self.step_base, turn, STOP_OFFSET),
            continued,
            &response.text(),
        )
        .await
        .map_err(hook_error)
    }

    /// Writes the conversation so far where hooks are told to find it (`transcript_path`),
    /// one JSON line per message as Claude Code's transcripts have them. Best effort: hooks
    /// that read it are a convenience, the journal is the record.
    async fn write_transcript(&self, messages: &[Message]) {
        let mut lines = String::new();
        for message in messages {
            let role = match message.role {
                crate::model::Role::User => "user",
                crate::model::Role::Assistant => "assistant",
            };
            // Screenshots are named, not copied: the transcript is rewritten every turn.
            let message = without_images(message);
            lines.push_str(&json!({ "type": role, "message": message }).to_string());
            lines.push('\n');
        }
        let (computer, workspace) = (self.actor.computer, self.actor.workspace);
        let ignore = format!("{}/.gitignore", crate::tools::TMP_DIR);
        let path = crate::policy::transcript_path(&self.actor);
        let written = match computer.write(workspace, &ignore, b"*\n").await {
            Ok(()) => computer.write(workspace, &path, lines.as_bytes()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(task = self.actor.task, "cannot write the transcript: {e}");
        }
    }

    /// One model call, or its recorded response when the journal has it.
    async fn turn(
        &self,
        turn: u32,
        messages: &[Message],
        tools: &[ToolDef],
        usage: &mut Usage,
        usd: &mut f64,
    ) -> Result<Response, AgentError> {
        let store = self.actor.store;
        let at = step(self.step_base, turn, 0);
        if let Some(done) = store.action(self.actor.task, at)?
            && let Some(outcome) = done.outcome.filter(|_| done.finished_at.is_some())
            && let Ok(response) = serde_json::from_value::<Response>(outcome)
        {
            usage.add(&response.usage);
            return Ok(response);
        }
        let now = Utc::now();
        let spent = store.spent(self.actor.task, now)?;
        self.budget
            .check(self.actor.goal, &self.actor.task.to_string(), &spent, now)?;
        let request = Request {
            model: self.model_id.clone(),
            system: self.system.clone(),
            messages: messages.to_vec(),
            tools: tools.to_vec(),
            max_tokens: self.max_tokens,
            thinking: self.thinking.filter(|t| *t > 0),
            temperature: None,
        };
        let input = json!({ "model": self.model_id, "turn": turn, "messages": messages.len() });
        // No "started" entry before the call: a turn interrupted mid-call has nothing to
        // recover and is simply asked again. The whole turn is recorded in one transaction.
        let started_at = Utc::now();
        let response = tokio::select! {
            r = with_retries(self.model, &request, MODEL_RETRIES) => r?,
            _ = self.actor.cancel.cancelled() => return Err(AgentError::Cancelled),
        };
        usage.add(&response.usage);
        let cost = self
            .prices
            .cost(&self.model_id, &response.usage)
            .unwrap_or(0.0);
        *usd += cost;
        let outcome = serde_json::to_value(&response).unwrap_or_default();
        let stop_reason = response
            .stop_reason
            .as_ref()
            .map(|s| s.as_str().to_string());
        let now = Utc::now();
        let audit = crate::store::AuditRecord {
            id: 0,
            time: now,
            agent: self.actor.agent.to_string(),
            goal: Some(self.actor.goal.to_string()),
            task: Some(self.actor.task),
            action: "model".into(),
            input: input.clone(),
            outcome: json!({ "stopReason": stop_reason, "usage": response.usage, "usd": cost, "text": response.text() }),
            diff: None,
        };
        let activity = crate::store::activity::Activity::Model {
            agent: self.actor.agent.to_string(),
            model: self.model_id.clone(),
            turn,
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
            cache_read_tokens: response.usage.cache_read_input_tokens,
            cache_write_tokens: response.usage.cache_creation_input_tokens,
            usd: cost,
            stop_reason,
        };
        store.record(
            &StepRecord {
                task: self.actor.task,
                goal: self.actor.goal,
                entry: Entry::Whole {
                    step: at,
                    tool: "Model",
                    input: &input,
                    outcome: &outcome,
                    started_at,
                },
                cost: Some(Cost {
                    agent: self.actor.agent,
                    model: &self.model_id,
                    input_tokens: response.usage.total_input(),
                    output_tokens: response.usage.output_tokens,
                    usd: cost,
                }),
                audit: Some(&audit),
                activity: Some(&activity),
            },
            now,
        )?;
        Ok(response)
    }
}

/// `message` with the images of its tool results replaced by a line naming each (borrowed
/// as it is when it has none).
fn without_images(message: &Message) -> std::borrow::Cow<'_, Message> {
    let has_images = message.content.iter().any(
        |b| matches!(b, ContentBlock::ToolResult { content, .. } if !content.images.is_empty()),
    );
    if !has_images {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut message = message.clone();
    for block in &mut message.content {
        if let ContentBlock::ToolResult { content, .. } = block {
            for image in std::mem::take(&mut content.images) {
                content.text.push_str(&format!(
                    "\n[image {} ({} bytes, sha256 {})]",
                    image.media_type.as_str(),
                    image.bytes,
                    image.sha256
                ));
            }
        }
    }
    std::borrow::Cow::Owned(message)
}

/// What a result replayed from the journal says of the images the call gave: the journal
/// keeps what identified them, not their pixels (a screenshot a turn is megabytes over a long
/// session), so a resumed conversation is told each one is gone and how to see the screen
/// again. The conversation stays valid, and a screen from before a restart is stale anyway.
fn images_gone(acted: &crate::policy::Acted) -> String {
    if !acted.images.is_empty() {
        return String::new();
    }
    let Some(images) = acted.outcome.get("images").and_then(|i| i.as_array()) else {
        return String::new();
    };
    images
        .iter()
        .map(|image| {
            format!(
                "\n[image {} ({} bytes, sha256 {}) not kept across the restart; take a new screenshot to see the screen]",
                image["mediaType"].as_str().unwrap_or("image"),
                image["bytes"],
                image["sha256"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

/// A lifecycle hook's failure as the session's: cancellation and the store keep their kind.
fn hook_error(e: ActError) -> AgentError {
    match e {
        ActError::Cancelled => AgentError::Cancelled,
        ActError::Store(e) => AgentError::Store(e),
        other => AgentError::Act(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_screenshot_is_named_not_replayed() {
        let image = crate::model::Image::png(b"png bytes");
        let fresh = crate::policy::Acted {
            outcome: json!({"content": "the screen", "isError": false, "images": [image.summary()]}),
            skipped: false,
            images: vec![image.clone()],
        };
        assert_eq!(images_gone(&fresh), "");
        // From the journal: the summary is there, the pixels are not; the model is told.
        let resumed = crate::policy::Acted {
            skipped: true,
            images: Vec::new(),
            ..fresh
        };
        let note = images_gone(&resumed);
        assert!(note.contains(&image.sha256), "{note}");
        assert!(
            note.contains("9 bytes") && note.contains("take a new screenshot"),
            "{note}"
        );
        // A transcript names the image instead of copying it.
        let message = Message {
            role: crate::model::Role::User,
            content: vec![ContentBlock::tool_result_with_images(
                "t1",
                "the screen",
                vec![image.clone()],
            )],
        };
        let written = serde_json::to_string(&*without_images(&message)).unwrap();
        assert!(!written.contains(&image.data), "{written}");
        assert!(written.contains(&image.sha256), "{written}");
    }

    #[test]
    fn failed_attempts_escalate_and_carry_their_lessons() {
        let spec = Spec::default();
        assert_eq!(escalate(&spec, "claude-haiku-4-5", 0), "claude-haiku-4-5");
        assert_eq!(escalate(&spec, "claude-haiku-4-5", 1), "claude-sonnet-4-5");
        assert_eq!(escalate(&spec, "claude-sonnet-4-5", 5), "claude-opus-4-5");
        assert_eq!(escalate(&spec, "llama3", 2), "llama3");
        assert!(lessons(2, Some("exit status 1: test failed")).contains("test failed"));
        assert_eq!(lessons(0, None), "");
    }

    #[test]
    fn tier_names_resolve_through_the_company_tiers() {
        let mut tree = crate::spec::MemTree::new("t");
        tree.insert(
            "all.yaml",
            "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: c}\nspec: {mission: m, ceo: ceo, models: {tiers: {haiku: local-small}}}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, description: d, prompt: p}\n",
        );
        let (spec, _) = crate::spec::load_and_validate(&tree).unwrap();
        assert_eq!(resolve_model(&spec, "haiku"), "local-small");
        assert_eq!(resolve_model(&spec, "opus"), "claude-opus-4-5");
        assert_eq!(resolve_model(&spec, "auto"), "claude-sonnet-4-5");
        assert_eq!(resolve_model(&spec, "llama3"), "llama3");
    }
}
