//! `Delegate`: any agent hands a piece of work to any other, by name or by the best match
//! for a description. The child works in the same workspace as a child task with its own
//! record (and journal) in the store, spends from what its parent has left, and answers with
//! its final words. A depth limit (default 8) and a cycle guard keep delegation finite. The
//! child's session comes from the same [builder](super::build) as every other, so it has
//! exactly the tools its own declaration grants.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};

use super::{AgentError, Finished, Place};
use crate::spec::{Priority, Spec};
use crate::store::{NewTask, Store, TaskId};
use crate::tools::{Effect, Halt, StepOf, Tool, ToolContext, ToolError, ToolOutput};

/// How deep delegation may nest unless the company says otherwise.
pub const DEFAULT_DEPTH: usize = 8;
/// The tool's name (Claude Code's `Task`).
pub const DELEGATE_TOOL: &str = "Delegate";

/// What runs a delegated agent's session. The session builder gives it to the tool, so
/// delegation starts a child without reaching back into how sessions are made.
#[async_trait]
pub trait Spawner: Send + Sync {
    async fn run(&self, child: Child<'_>) -> Result<Finished, AgentError>;
}

/// One delegated piece of work, as the spawner is given it.
pub struct Child<'a> {
    /// Where the parent works, and its task (the child's record is under it).
    pub place: Place<'a>,
    /// The child's own task record.
    pub task: TaskId,
    /// From the task's owner down to `agent`.
    pub chain: Vec<String>,
    pub agent: &'a str,
    pub from: &'a str,
    pub description: &'a str,
    pub prompt: &'a str,
}

/// The `Delegate` tool of one session: who may be asked, how their sessions are started,
/// and who is in the chain so far (from the task's owner down to the session's agent).
pub struct DelegateTool {
    pub spec: Arc<Spec>,
    pub spawner: Arc<dyn Spawner>,
    pub chain: Vec<String>,
    pub max_depth: usize,
    /// The task's key and product, for the children's records.
    pub task_key: String,
    pub product: String,
}

#[async_trait]
impl Tool for DelegateTool {
    fn name(&self) -> &str {
        DELEGATE_TOOL
    }

    fn description(&self) -> &str {
        "Hand a piece of work to another agent of the company (by name, or the best match for the \
         description). It works in the same workspace and reports back."
    }

    fn input_schema(&self) -> Value {
        schema()
    }

    // Another agent's work reaches wherever its tools do.
    fn effect(&self) -> Effect {
        Effect::Outside
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let Some(step) = ctx.step else {
            return Ok(ToolOutput::error("delegation is not available here"));
        };
        match self.work(ctx, step, input).await {
            Ok(report) => Ok(ToolOutput::ok(report)),
            Err(Refusal::Told(reason)) => Ok(ToolOutput::error(reason)),
            Err(Refusal::Stop(halt)) => Err(ToolError::Halt(halt)),
        }
    }
}

/// The tool's input schema (as Claude Code's Task tool: a description and a prompt).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "agent": { "type": "string", "description": "The agent to delegate to, by name; omit to pick the best match for the description." },
            "description": { "type": "string", "description": "A short description of the work (3-10 words)." },
            "prompt": { "type": "string", "description": "The task for the other agent, with everything it needs to know." }
        },
        "required": ["description", "prompt"],
        "additionalProperties": false
    })
}

/// The agent whose description best matches `text` (shared words, weighted by rarity is
/// overkill here: the descriptions are written to be routed by).
pub fn best_match<'a>(spec: &'a Spec, text: &str, exclude: &[String]) -> Option<&'a str> {
    let words = |s: &str| -> std::collections::BTreeSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .map(str::to_lowercase)
            .collect()
    };
    let wanted = words(text);
    spec.agents
        .iter()
        .filter(|a| !exclude.iter().any(|e| e == a.name()))
        .map(|a| {
            (
                words(&format!("{} {}", a.spec.title, a.spec.description))
                    .intersection(&wanted)
                    .count(),
                a.name(),
            )
        })
        .filter(|(score, _)| *score > 0)
        .max_by_key(|(score, name)| (*score, std::cmp::Reverse(*name)))
        .map(|(_, name)| name)
}

/// Why delegated work did not come back as a report.
enum Refusal {
    /// The delegating model is told (and may try otherwise): a bad request, a cycle, a child
    /// that failed at its work.
    Told(String),
    /// The whole task stops: cancellation, a spent budget, an action waiting for approval, a
    /// broken store, a provider out. A child cannot decide these for its parent.
    Stop(Halt),
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::Told(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::Told(reason.to_string())
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Stop(Halt::Store(e))
    }
}

/// What the delegating session makes of a child's error (see [`Refusal`]).
fn refusal(target: &str, e: AgentError) -> Refusal {
    match e {
        AgentError::Cancelled => Refusal::Stop(Halt::Cancelled),
        AgentError::Model(e) if e.is_outage() => Refusal::Stop(Halt::ProviderUnavailable(e)),
        AgentError::Store(e) => Refusal::Stop(Halt::Store(e)),
        AgentError::Budget(e) => Refusal::Stop(Halt::Budget(e)),
        AgentError::NeedsApproval { action, reason } => Refusal::Stop(Halt::NeedsApproval(
            format!("{action} (asked by {target}): {reason}"),
        )),
        e => Refusal::Told(format!("{target} could not finish: {e}")),
    }
}

impl DelegateTool {
    /// Runs the delegated work: the child's report, or why there is none.
    async fn work(
        &self,
        ctx: &ToolContext<'_>,
        step: StepOf<'_>,
        input: &Value,
    ) -> Result<String, Refusal> {
        let text = |k: &str| {
            input
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (description, prompt) = (text("description"), text("prompt"));
        if prompt.trim().is_empty() {
            return Err("prompt: the task for the other agent is empty".into());
        }
        let spec = &self.spec;
        let target = match input.get("agent").and_then(Value::as_str) {
            Some(name) => name.to_string(),
            None => best_match(spec, &format!("{description} {prompt}"), &self.chain)
                .ok_or("no agent's description matches; name one with `agent`")?
                .to_string(),
        };
        let Some(agent) = spec.agent(&target) else {
            return Err(format!("no agent named {target}").into());
        };
        if self.chain.contains(&target) {
            return Err(
                format!("delegation cycle: {} -> {target}", self.chain.join(" -> ")).into(),
            );
        }
        if self.chain.len() >= self.max_depth {
            return Err(format!(
                "delegation deeper than {} levels: {}",
                self.max_depth,
                self.chain.join(" -> ")
            )
            .into());
        }
        let child = self.child_task(ctx, step, &target)?;
        let mut chain = self.chain.clone();
        chain.push(target.clone());
        let result = self
            .spawner
            .run(Child {
                place: Place {
                    store: step.store,
                    task: step.task,
                    goal: step.goal,
                    computer: ctx.computer,
                    workspace: ctx.workspace,
                    author: step.controller,
                    cancel: ctx.cancel,
                },
                task: child,
                chain,
                agent: agent.name(),
                from: ctx.agent,
                description: &description,
                prompt: &prompt,
            })
            .await;
        record_end(step.store, child, &target, &result);
        match result {
            Ok(done) => Ok(format!("{target} reports: {}", done.text)),
            Err(e) => Err(refusal(&target, e)),
        }
    }

    /// The child's record: a task of its own under the parent's, found again after a restart
    /// by its key.
    fn child_task(
        &self,
        ctx: &ToolContext<'_>,
        step: StepOf<'_>,
        target: &str,
    ) -> Result<TaskId, Refusal> {
        let key = format!("{}/{}:{target}", self.task_key, step.number);
        let store = step.store;
        let now = Utc::now();
        let queued = store.enqueue(
            &NewTask {
                key: key.clone(),
                goal: step.goal.to_string(),
                product: self.product.clone(),
                owner: target.to_string(),
                priority: Priority::High,
                max_attempts: 1,
                revision: String::new(),
                parent: Some(step.task),
            },
            now,
        )?;
        if let Some(id) = queued {
            store.start(id, ctx.computer.name(), now)?;
            return Ok(id);
        }
        // Resumed after a restart: the child exists, queued again by the recovery.
        let found = store
            .tasks()?
            .into_iter()
            .find(|t| t.key == key && t.parent == Some(step.task))
            .ok_or("the child task vanished")?;
        if found.state == crate::plan::TaskState::Queued {
            store.start(found.id, ctx.computer.name(), now)?;
        }
        Ok(found.id)
    }
}

/// Records how the child's session ended. Stopped from outside (a shutdown) or by a
/// provider outage, the child's work is not over: it goes back to the queue with its
/// journal, and the parent's resumed Delegate step continues it.
fn record_end(store: &Store, child: TaskId, target: &str, result: &Result<Finished, AgentError>) {
    let now = Utc::now();
    let recorded = match result {
        Err(e) if matches!(e, AgentError::Cancelled) || e.is_outage() => {
            store.interrupt(child, now).map(|_| ())
        }
        // A child's work is delivered with its root task's, not on its own.
        Ok(done) => {
            let outcome = crate::store::AttemptOutcome::Succeeded {
                detail: done.text.clone(),
                delivered: None,
            };
            store.finish(child, &outcome, now, now).map(|_| ())
        }
        Err(e) => store
            .finish(child, &super::outcome_of(target, e), now, now)
            .map(|_| ()),
    };
    if let Err(e) = recorded {
        tracing::warn!(task = child, "cannot record the delegated work's end: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MemTree, load_and_validate};

    #[test]
    fn the_best_match_is_the_agent_whose_description_fits() {
        let mut tree = MemTree::new("t");
        tree.insert(
            "all.yaml",
            "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: c}\nspec: {mission: m, ceo: ceo}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, description: Runs the company., prompt: p}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, description: Writes greetings and release notes., prompt: p}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: tester}\nspec: {title: Tester, reportsTo: ceo, description: Writes and runs automated tests., prompt: p}\n",
        );
        let (spec, _) = load_and_validate(&tree).unwrap();
        assert_eq!(
            best_match(&spec, "draft the release notes", &[]),
            Some("writer")
        );
        assert_eq!(
            best_match(&spec, "the automated tests fail", &[]),
            Some("tester")
        );
        assert_eq!(
            best_match(&spec, "release notes", &["writer".to_string()]),
            None
        );
        assert_eq!(best_match(&spec, "zzz", &[]), None);
    }
}
