//! `Delegate`: any agent hands a piece of work to any other, by name or by the best match
//! for a description. The child works in the same workspace as a child task with its own
//! record (and journal) in the store, spends from what its parent has left, and answers with
//! its final words. A depth limit (default 8) and a cycle guard keep delegation finite.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use super::AgentError;
use crate::model::{Model, PriceTable};
use crate::policy::{ActError, Actor};
use crate::spec::{Priority, Spec};
use crate::store::NewTask;

/// How deep delegation may nest unless the company says otherwise.
pub const DEFAULT_DEPTH: usize = 8;

/// What a delegating session carries: who is in the chain, and what the children may use.
#[derive(Clone)]
pub struct Delegation {
    pub spec: Arc<Spec>,
    pub model: Arc<dyn Model>,
    pub prices: PriceTable,
    /// Agents from the task's owner down to the current one.
    pub chain: Vec<String>,
    pub max_depth: usize,
    /// The budgets of the task; children spend from what the parent has left, because the
    /// store counts a child's spend against its root task.
    pub budget: crate::policy::limits::TaskBudget,
    /// The parent task's key; children are keyed under it.
    pub task_key: String,
    pub product: String,
    /// The company's knowledge, ranked into each child's context.
    pub knowledge: Arc<crate::knowledge::Knowledge>,
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
    /// broken store. A child cannot decide these for its parent.
    Stop(ActError),
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
        Refusal::Stop(ActError::Store(e))
    }
}

/// What the delegating session makes of a child's error (see [`Refusal`]).
fn refusal(target: &str, e: AgentError) -> Refusal {
    match e {
        AgentError::Cancelled => Refusal::Stop(ActError::Cancelled),
        AgentError::Model(e) if e.is_outage() => Refusal::Stop(ActError::ProviderUnavailable(e)),
        AgentError::Store(e) => Refusal::Stop(ActError::Store(e)),
        AgentError::Budget(e) => Refusal::Stop(ActError::Budget(e)),
        AgentError::NeedsApproval { action, reason } => Refusal::Stop(ActError::NeedsApproval(
            format!("{action} (asked by {target}): {reason}"),
        )),
        e => Refusal::Told(format!("{target} could not finish: {e}")),
    }
}

/// Runs the delegated work: `Ok` with the text the delegating model reads back (and whether
/// it is an error for the model to handle), or the error that stops the whole task.
pub async fn delegate(
    actor: &Actor<'_>,
    delegation: &Delegation,
    step: u32,
    input: &Value,
) -> Result<(String, bool), ActError> {
    match work(actor, delegation, step, input).await {
        Ok(report) => Ok((report, false)),
        Err(Refusal::Told(reason)) => Ok((reason, true)),
        Err(Refusal::Stop(e)) => Err(e),
    }
}

async fn work(
    actor: &Actor<'_>,
    delegation: &Delegation,
    step: u32,
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
        return Err(Refusal::Told(
            "prompt: the task for the other agent is empty".into(),
        ));
    }
    let target = match input.get("agent").and_then(Value::as_str) {
        Some(name) => name.to_string(),
        None => best_match(
            &delegation.spec,
            &format!("{description} {prompt}"),
            &delegation.chain,
        )
        .ok_or("no agent's description matches; name one with `agent`")?
        .to_string(),
    };
    let Some(agent) = delegation.spec.agent(&target) else {
        return Err(Refusal::Told(format!("no agent named {target}")));
    };
    if delegation.chain.contains(&target) {
        return Err(Refusal::Told(format!(
            "delegation cycle: {} -> {target}",
            delegation.chain.join(" -> ")
        )));
    }
    if delegation.chain.len() >= delegation.max_depth {
        return Err(Refusal::Told(format!(
            "delegation deeper than {} levels: {}",
            delegation.max_depth,
            delegation.chain.join(" -> ")
        )));
    }
    // The child's record: a task of its own, found again after a restart by its key.
    let key = format!("{}/{}:{target}", delegation.task_key, step);
    let store = actor.store;
    let now = Utc::now();
    let child = match store.enqueue(
        &NewTask {
            key: key.clone(),
            goal: actor.goal.to_string(),
            product: delegation.product.clone(),
            owner: target.clone(),
            priority: Priority::High,
            max_attempts: 1,
            revision: String::new(),
            parent: Some(actor.task),
        },
        now,
    ) {
        Ok(Some(id)) => {
            store.start(id, actor.computer.name(), now)?;
            id
        }
        Ok(None) => {
            // Resumed after a restart: the child exists, queued again by the recovery.
            let found = store
                .tasks()?
                .into_iter()
                .find(|t| t.key == key && t.parent == Some(actor.task))
                .ok_or("the child task vanished")?;
            if found.state == crate::plan::TaskState::Queued {
                store.start(found.id, actor.computer.name(), now)?;
            }
            found.id
        }
        Err(e) => return Err(e.into()),
    };
    let mut chain = delegation.chain.clone();
    chain.push(target.clone());
    let child_delegation = Delegation {
        chain,
        ..delegation.clone()
    };
    let child_tools = super::effective_tools(&agent.spec);
    let child_actor = Actor {
        task: child,
        agent: agent.name(),
        tools: &child_tools,
        delegation: Some(&child_delegation),
        ..actor.clone()
    };
    let sources = super::context::Sources {
        spec: &delegation.spec,
        agent_name: agent.name(),
        goal: actor.goal,
        knowledge: &delegation.knowledge,
        product: &delegation.product,
        computer: actor.computer,
        workspace: actor.workspace,
    };
    let task = format!(
        "{} delegates to you: {description}\n\n{prompt}",
        actor.agent
    );
    let about = format!("{description} {prompt}");
    let priority = delegation
        .spec
        .goal(actor.goal)
        .map(|g| g.spec.priority)
        .unwrap_or_default();
    let facts = super::select::Facts::of_delegation(
        actor.goal,
        priority,
        &format!("{description}\n\n{prompt}"),
        &agent.spec,
    );
    let selection = super::select::Selector {
        store,
        task: child,
        goal: actor.goal,
        agent: agent.name(),
        model: Some(delegation.model.as_ref()),
        prices: &delegation.prices,
        cancel: actor.cancel,
        budget: delegation.budget,
    }
    .select(&delegation.spec, &agent.spec, &facts)
    .await
    .map_err(|e| refusal(&target, e))?;
    let (task, scoped_rules) =
        super::context::session_start(&sources, &agent.spec, &about, &task, (store, child)).await?;
    let session = super::Session {
        actor: child_actor,
        model: delegation.model.as_ref(),
        model_id: selection.model_id,
        system: super::system_prompt(&delegation.spec, agent.name(), &agent.spec),
        scoped_rules,
        task,
        tools: super::tool_defs(&agent.spec),
        max_turns: agent.spec.max_turns.unwrap_or(40),
        max_tokens: 8192u32.saturating_add(selection.thinking.unwrap_or(0)),
        thinking: selection.thinking,
        budget: delegation.budget,
        prices: delegation.prices.clone(),
        step_base: 0,
    };
    let result = Box::pin(session.run()).await;
    let outcome = match &result {
        // A child's work is delivered with its root task's, not on its own.
        Ok(done) => crate::store::AttemptOutcome::Succeeded {
            detail: done.text.clone(),
            delivered: None,
        },
        Err(e) => super::outcome_of(&target, e),
    };
    // Stopped from outside (a shutdown), the child's work is not over: it goes back to the
    // queue with its journal, and the parent's resumed Delegate step continues it.
    // So is a child whose provider is out: the task waits for the provider, then resumes.
    let recorded = if matches!(&result, Err(e) if matches!(e, AgentError::Cancelled) || e.is_outage())
    {
        store.interrupt(child, Utc::now()).map(|_| ())
    } else {
        store
            .finish(child, &outcome, Utc::now(), Utc::now())
            .map(|_| ())
    };
    if let Err(e) = recorded {
        tracing::warn!(task = child, "cannot record the delegated work's end: {e}");
    }
    match result {
        Ok(done) => Ok(format!("{target} reports: {}", done.text)),
        Err(e) => Err(refusal(&target, e)),
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
