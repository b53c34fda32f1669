//! The agent runtime's turn loop: assemble the context, call the model, run every tool call
//! it makes through `act()`, feed the results back, until the model ends its turn, the
//! agent's `maxTurns`, the token budget, or cancellation.
//!
//! Every model response and every tool call is journaled in the store before the next step
//! starts (model turn `t` is step `t * 100`, its tool calls `t * 100 + 1 ..`). After a crash
//! the conversation is rebuilt from the journal: recorded responses are reused (no tokens
//! spent twice) and finished tool calls are not repeated.

pub mod delegate;
pub mod select;

use chrono::Utc;
use serde_json::json;
use thiserror::Error;

use crate::model::{
    ContentBlock, Message, Model, ModelError, PriceTable, Request, Response, StopReason,
    SystemBlock, ToolDef, Usage, with_retries,
};
use crate::policy::{ActError, Actor, ToolCall, act};
use crate::spec::{AgentSpec, GoalSpec, Spec};
use crate::store::StoreError;

/// Steps of one model turn: the response, then up to 99 tool calls.
const STEP_STRIDE: u32 = 100;
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
    #[error("the task's token budget of {budget} is spent ({used} used)")]
    Budget { budget: u64, used: u64 },
    #[error("{0} turns without finishing (maxTurns)")]
    MaxTurns(u32),
    #[error("cancelled")]
    Cancelled,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub turns: u32,
    pub usage: Usage,
    pub usd: f64,
    /// The model's last words.
    pub text: String,
}

/// One agent working one task.
pub struct Session<'a> {
    pub actor: Actor<'a>,
    pub model: &'a dyn Model,
    /// The concrete model id (`claude-sonnet-4-5`).
    pub model_id: String,
    pub system: Vec<SystemBlock>,
    /// The task as the first user message.
    pub task: String,
    pub tools: Vec<ToolDef>,
    pub max_turns: u32,
    pub max_tokens: u32,
    pub thinking: Option<u32>,
    pub token_budget: Option<u64>,
    pub prices: PriceTable,
    /// Where this session's journal steps start, so that several sessions of one task (the
    /// agent's work, the judge before and after it) never share a step.
    pub step_base: u32,
}

/// The system prompt: the agent's own prompt, then the company's memory, rules and the
/// skills it may activate (descriptions only; the body comes when the task matches).
pub fn system_prompt(spec: &Spec, agent_name: &str, agent: &AgentSpec) -> Vec<SystemBlock> {
    let mut text = format!(
        "You are {agent_name}, {} of the company.\n\n{}\n",
        agent.title,
        agent.prompt.trim()
    );
    for memory in &spec.claude.memory {
        text.push_str(&format!(
            "\n<memory file=\"{}\">\n{}\n</memory>\n",
            memory.file,
            memory.expanded.trim()
        ));
    }
    for rule in &spec.claude.rules {
        text.push_str(&format!(
            "\n<rule name=\"{}\">\n{}\n</rule>\n",
            rule.name,
            rule.body.trim()
        ));
    }
    let skills: Vec<_> = spec
        .claude
        .skills
        .iter()
        .filter(|s| agent.skills.contains(&s.name))
        .collect();
    if !skills.is_empty() {
        text.push_str("\nSkills you may use (say which you apply):\n");
        for skill in skills {
            text.push_str(&format!("- {}: {}\n", skill.name, skill.description));
        }
    }
    vec![SystemBlock::text(text)]
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
    let models = spec.company().and_then(|c| c.spec.models.as_ref());
    let wanted = agent
        .model
        .clone()
        .or_else(|| models.and_then(|m| m.default.clone()))
        .unwrap_or_else(|| "auto".into());
    let tiers = models.and_then(|m| m.tiers.clone()).unwrap_or_default();
    match wanted.as_str() {
        "haiku" => tiers.haiku.unwrap_or_else(|| "claude-haiku-4-5".into()),
        "sonnet" | "auto" => tiers.sonnet.unwrap_or_else(|| "claude-sonnet-4-5".into()),
        "opus" => tiers.opus.unwrap_or_else(|| "claude-opus-4-5".into()),
        id => id.to_string(),
    }
}

/// Definitions of the MCP tools an agent may use (`mcp__server` grants a whole server).
/// A server that cannot be reached is skipped with a warning; its tools are simply absent.
pub async fn mcp_tool_defs(pool: &crate::mcp::McpPool, allowed: &[String]) -> Vec<ToolDef> {
    let (tools, errors) = pool.tools().await;
    for e in errors {
        tracing::warn!("MCP server unavailable: {e}");
    }
    tools
        .into_iter()
        .filter(|t| crate::policy::allows(allowed, &t.qualified_name))
        .map(|t| ToolDef {
            name: t.qualified_name,
            description: t.description,
            input_schema: t.input_schema,
            cache_control: None,
        })
        .collect()
}

/// The model for attempt `attempt` (0 = first): each failed attempt escalates one tier
/// (haiku → sonnet → opus), so a cheap model tries first and a strong one finishes.
pub fn escalate(spec: &Spec, model_id: &str, attempt: u32) -> String {
    let tiers = spec
        .company()
        .and_then(|c| c.spec.models.as_ref())
        .and_then(|m| m.tiers.clone())
        .unwrap_or_default();
    let ladder = [
        tiers.haiku.unwrap_or_else(|| model_id_for("haiku")),
        tiers.sonnet.unwrap_or_else(|| model_id_for("sonnet")),
        tiers.opus.unwrap_or_else(|| model_id_for("opus")),
    ];
    match ladder.iter().position(|m| m == model_id) {
        Some(at) => ladder[(at + attempt as usize).min(ladder.len() - 1)].clone(),
        // A model outside the ladder (a local model, say) is used as declared.
        None => model_id.to_string(),
    }
}

/// The lessons of failed attempts, for the next one's prompt.
pub fn lessons(attempts: u32, last_error: Option<&str>) -> String {
    match (attempts, last_error) {
        (0, _) | (_, None) => String::new(),
        (n, Some(error)) => format!(
            "\n\n{n} earlier attempt(s) failed. The last one ended with: {error}\nFind out why before you act, and do not repeat what failed."
        ),
    }
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

/// The model-facing definitions of the agent's built-in tools.
pub fn tool_defs(agent: &AgentSpec) -> Vec<ToolDef> {
    let mut defs: Vec<ToolDef> = crate::tools::tools_for(&agent.tools)
        .iter()
        .map(|t| ToolDef {
            name: t.name().to_string(),
            description: t.description().to_string(),
            input_schema: t.input_schema(),
            cache_control: None,
        })
        .collect();
    if crate::policy::allows(&agent.tools, "Delegate") {
        defs.push(ToolDef {
            name: "Delegate".into(),
            description: "Hand a piece of work to another agent of the company (by name, or the best match for the \
                          description). It works in the same workspace and reports back."
                .into(),
            input_schema: delegate::schema(),
            cache_control: None,
        });
    }
    defs
}

fn step(base: u32, turn: u32, offset: u32) -> u32 {
    base.saturating_add(turn.saturating_mul(STEP_STRIDE))
        .saturating_add(offset)
}

impl Session<'_> {
    /// Runs the session to its end, resuming from the journal where one exists.
    pub async fn run(&self) -> Result<Finished, AgentError> {
        let mut messages = vec![Message::user(self.task.clone())];
        let mut usage = Usage::default();
        let mut usd = 0.0;
        for turn in 0..self.max_turns {
            if self.actor.cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            let response = self.turn(turn, &messages, &mut usage, &mut usd).await?;
            messages.push(response.to_message());
            let calls: Vec<(String, String, serde_json::Value)> = response
                .tool_uses()
                .into_iter()
                .map(|(id, name, input)| (id.to_string(), name.to_string(), input.clone()))
                .collect();
            if calls.is_empty() || response.stop_reason != Some(StopReason::ToolUse) {
                return Ok(Finished {
                    turns: turn + 1,
                    usage,
                    usd,
                    text: response.text(),
                });
            }
            let mut results = Vec::new();
            for (i, (id, name, input)) in calls.into_iter().enumerate() {
                let offset = u32::try_from(i + 1)
                    .unwrap_or(STEP_STRIDE - 1)
                    .min(STEP_STRIDE - 1);
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
                        if is_error {
                            ContentBlock::tool_error(id, content)
                        } else {
                            ContentBlock::tool_result(id, content)
                        }
                    }
                    Err(ActError::Cancelled) => return Err(AgentError::Cancelled),
                    Err(ActError::Store(e)) => return Err(AgentError::Store(e)),
                    Err(e) => ContentBlock::tool_error(id, e.to_string()),
                };
                results.push(block);
            }
            messages.push(Message {
                role: crate::model::Role::User,
                content: results,
            });
        }
        Err(AgentError::MaxTurns(self.max_turns))
    }

    /// One model call, or its recorded response when the journal has it.
    async fn turn(
        &self,
        turn: u32,
        messages: &[Message],
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
        if let Some(budget) = self.token_budget {
            let used = usage.total_input() + usage.output_tokens;
            if used >= budget {
                return Err(AgentError::Budget { budget, used });
            }
        }
        let request = Request {
            model: self.model_id.clone(),
            system: self.system.clone(),
            messages: messages.to_vec(),
            tools: self.tools.clone(),
            max_tokens: self.max_tokens,
            thinking: self.thinking.filter(|t| *t > 0),
            temperature: None,
        };
        let input = json!({ "model": self.model_id, "turn": turn, "messages": messages.len() });
        let id = store.action_started(self.actor.task, at, "Model", &input, Utc::now())?;
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
        store.spend(
            self.actor.task,
            self.actor.agent,
            &self.model_id,
            response.usage.total_input(),
            response.usage.output_tokens,
            cost,
            Utc::now(),
        )?;
        let outcome = serde_json::to_value(&response).unwrap_or_default();
        let audit = crate::store::AuditRecord {
            id: 0,
            time: Utc::now(),
            agent: self.actor.agent.to_string(),
            goal: Some(self.actor.goal.to_string()),
            task: Some(self.actor.task),
            action: "model".into(),
            input,
            outcome: json!({ "stopReason": response.stop_reason.as_ref().map(|s| s.as_str().to_string()), "usage": response.usage, "usd": cost, "text": response.text() }),
            diff: None,
        };
        store.action_finished(id, &outcome, &audit, Utc::now())?;
        Ok(response)
    }
}

/// The judge's verdict, as it must answer.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub reason: String,
}

/// The first JSON object in `text` that is a valid verdict.
pub fn parse_verdict(text: &str) -> Option<Verdict> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (start < end)
        .then(|| serde_json::from_str(&text[start..=end]).ok())
        .flatten()
}

/// The judge's instructions: inspect with read-only tools, answer with a JSON verdict.
pub const JUDGE_SYSTEM: &str = "You are a strict, fair reviewer. Inspect the workspace with the Read, Glob and Grep \
tools and grade it against the rubric you are given. Do not guess: read the files the rubric is about. When you \
have decided, answer with one JSON object and nothing else: {\"pass\": true or false, \"reason\": \"one or two sentences\"}.";

#[cfg(test)]
mod tests {
    use super::*;

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
    fn verdicts_are_validated() {
        assert_eq!(
            parse_verdict("Looks good.\n{\"pass\": true, \"reason\": \"all there\"}"),
            Some(Verdict {
                pass: true,
                reason: "all there".into()
            })
        );
        assert_eq!(parse_verdict("{\"pass\": \"yes\"}"), None);
        assert_eq!(parse_verdict("no json"), None);
    }
}
