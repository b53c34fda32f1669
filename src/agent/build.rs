//! The one place an agent session is put together: for the goal's owner (the worker), for
//! an agent another hands work to (`Delegate`), and for a judge grading a check. Each gets
//! exactly the tools its declaration grants — built-ins, its skills, delegation, the tools
//! of the company's MCP servers — in one [`Registry`], with its context, model, limits and
//! budget. Built once, so a delegated agent cannot drift from an owner (it once lacked its
//! MCP tools because its session was assembled by a second copy of this code).

use std::sync::Arc;

use super::delegate::{Child, DELEGATE_TOOL, DelegateTool, Spawner};
use super::select::{Facts, Selector};
use super::skill::SkillTool;
use super::{
    AgentError, Finished, JUDGE_SYSTEM, Place, Session, resolve_model, retry_lessons as lessons,
    system_prompt, task_prompt,
};
use crate::knowledge::Knowledge;
use crate::mcp::{McpPool, ServerTool};
use crate::model::{Model, PriceTable, SystemBlock};
use crate::policy::Actor;
use crate::policy::limits::{RateLimits, TaskBudget};
use crate::spec::claude::SKILL_TOOL;
use crate::spec::{AgentSpec, GoalSpec, JudgeCheck, Settings, Spec};
use crate::store::TaskId;
use crate::tools::{COMPUTER_TOOL, ComputerUse, Registry};

/// Output tokens a turn may use for its answer, beyond any thinking budget.
pub const ANSWER_TOKENS: u32 = 8192;
/// Turns an agent may take unless it declares `maxTurns`.
pub const DEFAULT_MAX_TURNS: u32 = 40;
/// The judge reads and searches; it never changes what it grades.
pub const JUDGE_TOOLS: [&str; 3] = ["Read", "Glob", "Grep"];
const JUDGE_MAX_TURNS: u32 = 12;
/// The summary's answer: one short entry.
const SUMMARY_MAX_TOKENS: u32 = 1024;
/// Ranked lessons a retry's first message carries at most.
const RETRY_LESSONS: usize = 3;
const JUDGE_MAX_TOKENS: u32 = 2048;

/// What every session of one task is made from: the company at the task's revision.
pub struct Setup {
    pub spec: Arc<Spec>,
    pub model: Arc<dyn Model>,
    pub prices: PriceTable,
    /// The task's budgets; delegated children spend from what the task has left, because the
    /// store counts a child's spend against its root task.
    pub budget: TaskBudget,
    /// The company's knowledge, ranked into each session's context.
    pub knowledge: Arc<Knowledge>,
    /// Permission rules and hooks from `.claude/settings.json`.
    pub settings: Option<Arc<Settings>>,
    pub limits: Option<Arc<RateLimits>>,
    /// The company's MCP servers, started in the task's workspace for its sessions.
    pub mcp: Option<Arc<McpPool>>,
    pub product: String,
    /// The task's key; delegated children are keyed under it.
    pub task_key: String,
    /// How deep delegation may nest.
    pub max_depth: usize,
    /// Which actions wait for a person's approval, in every session of the task.
    pub gates: Option<Arc<crate::policy::gates::Gates>>,
}

/// Builds the sessions of one task.
pub struct Builder<'a> {
    pub setup: Arc<Setup>,
    pub place: Place<'a>,
}

/// What an agent is granted: its declared `tools`, and `Skill` when it holds skills (as
/// Claude Code offers its Skill tool wherever skills are; a call loads only a skill the
/// agent holds). The ceiling `act()` holds its calls to.
pub fn grants(agent: &AgentSpec) -> Vec<String> {
    let mut tools = agent.tools.clone();
    if !agent.skills.is_empty() && !crate::tools::allows(&tools, SKILL_TOOL) {
        tools.push(SKILL_TOOL.to_string());
    }
    tools
}

/// One agent session to build: whose, for which task record, and what it is told.
struct Request<'a> {
    task: TaskId,
    agent: &'a str,
    spec: &'a AgentSpec,
    /// Agents from the task's owner down to this one.
    chain: Vec<String>,
    facts: Facts,
    /// What the context is gathered for (goal, check, delegated prompt).
    about: String,
    message: String,
    system: Vec<SystemBlock>,
}

impl<'a> Builder<'a> {
    /// The goal owner's session for attempt `attempts` (0 = first), told what failed before.
    /// `system` is the agent's system prompt (the engine keeps one per agent and revision).
    pub async fn owner(
        &'a self,
        agent: &'a str,
        spec: &'a AgentSpec,
        goal: &GoalSpec,
        (attempts, last_error): (u32, Option<&str>),
        system: Vec<SystemBlock>,
    ) -> Result<Session<'a>, AgentError> {
        let name = self.place.goal;
        let lessons = self.retry_lessons(goal, attempts, last_error)?;
        self.agent_session(Request {
            task: self.place.task,
            agent,
            spec,
            chain: vec![agent.to_string()],
            facts: Facts::of_goal(name, goal, spec, attempts, last_error),
            about: format!(
                "{name} {} {}",
                goal.description,
                serde_json::to_string(&goal.check).unwrap_or_default()
            ),
            message: task_prompt(name, goal) + &lessons,
            system,
        })
        .await
    }

    /// What a retry of the task is told (nothing on a first attempt): its earlier
    /// attempts' errors and the ranked lessons of earlier failures, which the store keeps
    /// from the moment they are learned (before any record commit makes them knowledge).
    fn retry_lessons(
        &self,
        goal: &GoalSpec,
        attempts: u32,
        last_error: Option<&str>,
    ) -> Result<String, AgentError> {
        if attempts == 0 || last_error.is_none() {
            return Ok(String::new());
        }
        let store = self.place.store;
        let earlier: Vec<String> = store
            .attempts(self.place.task)?
            .into_iter()
            .filter(|a| a.outcome == "failed")
            .filter_map(|a| a.detail)
            .collect();
        let captures: Vec<_> = store.captures()?.into_iter().map(|c| c.capture).collect();
        let query = format!(
            "{} {} {}",
            self.place.goal,
            goal.description,
            last_error.unwrap_or_default()
        );
        let ranked = crate::knowledge::capture::ranked_lessons(
            &captures,
            &query,
            Some(&self.setup.product),
            RETRY_LESSONS,
        );
        Ok(lessons(attempts, last_error, &earlier, &ranked))
    }

    /// The session of `agent`, to whom `from` delegates `description`/`prompt`; it is the
    /// child task `child`, and `chain` ends with `agent`.
    pub async fn delegated(
        &'a self,
        child: TaskId,
        chain: Vec<String>,
        agent: &'a str,
        spec: &'a AgentSpec,
        (from, description, prompt): (&str, &str, &str),
    ) -> Result<Session<'a>, AgentError> {
        let priority = self
            .setup
            .spec
            .goal(self.place.goal)
            .map(|g| g.spec.priority)
            .unwrap_or_default();
        let work = format!("{description}\n\n{prompt}");
        self.agent_session(Request {
            task: child,
            agent,
            spec,
            chain,
            facts: Facts::of_delegation(self.place.goal, priority, &work, spec),
            about: format!("{description} {prompt}"),
            message: format!("{from} delegates to you: {work}"),
            system: system_prompt(&self.setup.spec, agent, spec),
        })
        .await
    }

    /// A judge grading the workspace against `judge`'s rubric with read-only tools; its
    /// journal steps start at `step_base`.
    pub fn judge(&'a self, judge: &JudgeCheck, step_base: u32) -> Session<'a> {
        let grants = JUDGE_TOOLS.iter().map(|t| t.to_string()).collect();
        let mut actor = self.actor(self.place.task, "judge", Registry::with_builtins(grants));
        // The company's hooks and rules govern its agents; the judge only reads.
        actor.settings = None;
        // The judge's own `model`, else the haiku tier: grading is reading, not writing.
        let wanted = judge.model.as_deref().unwrap_or("haiku");
        Session {
            actor,
            model: self.setup.model.as_ref(),
            model_id: resolve_model(&self.setup.spec, wanted),
            selected: None,
            system: vec![SystemBlock::text(JUDGE_SYSTEM)],
            scoped_rules: Vec::new(),
            task: format!(
                "Rubric: {}\n\nGrade the workspace against it.",
                judge.rubric
            ),
            max_turns: JUDGE_MAX_TURNS,
            max_tokens: JUDGE_MAX_TOKENS,
            thinking: None,
            budget: self.setup.budget,
            prices: self.setup.prices.clone(),
            step_base,
        }
    }

    /// A cheap-tier session, with no tools, that writes down what a met task taught (see
    /// [`crate::knowledge::capture::SUMMARY_SYSTEM`]); paid for and budgeted like any turn,
    /// its journal steps starting at `step_base`.
    pub fn summary(&'a self, digest: &str, step_base: u32) -> Session<'a> {
        let actor = self.actor(self.place.task, "summary", Registry::new(Vec::new()));
        Session {
            actor,
            model: self.setup.model.as_ref(),
            model_id: resolve_model(&self.setup.spec, "haiku"),
            selected: None,
            system: vec![SystemBlock::text(crate::knowledge::capture::SUMMARY_SYSTEM)],
            scoped_rules: Vec::new(),
            task: digest.to_string(),
            max_turns: 1,
            max_tokens: SUMMARY_MAX_TOKENS,
            thinking: None,
            budget: self.setup.budget,
            prices: self.setup.prices.clone(),
            step_base,
        }
    }

    async fn agent_session(&'a self, request: Request<'a>) -> Result<Session<'a>, AgentError> {
        let (place, setup) = (&self.place, &self.setup);
        let selection = Selector {
            store: place.store,
            task: request.task,
            goal: place.goal,
            agent: request.agent,
            model: Some(setup.model.as_ref()),
            prices: &setup.prices,
            cancel: place.cancel,
            budget: setup.budget,
        }
        .select(&setup.spec, request.spec, &request.facts)
        .await?;
        let sources = super::context::Sources {
            spec: &setup.spec,
            agent_name: request.agent,
            goal: place.goal,
            knowledge: &setup.knowledge,
            product: &setup.product,
            computer: place.computer,
            workspace: place.workspace,
        };
        let (message, scoped_rules) = super::context::session_start(
            &sources,
            request.spec,
            &request.about,
            &request.message,
            (place.store, request.task),
        )
        .await?;
        let tools = self
            .tools(request.agent, request.spec, request.chain.clone())
            .await;
        let mut actor = self.actor(request.task, request.agent, tools);
        actor.delegated = request.chain.len() > 1;
        Ok(Session {
            actor,
            model: setup.model.as_ref(),
            model_id: selection.model_id.clone(),
            system: request.system,
            scoped_rules,
            task: message,
            max_turns: request.spec.max_turns.unwrap_or(DEFAULT_MAX_TURNS),
            // The API wants room for the answer beyond the thinking budget.
            max_tokens: ANSWER_TOKENS.saturating_add(selection.thinking.unwrap_or(0)),
            thinking: selection.thinking,
            selected: Some(selection),
            budget: setup.budget,
            prices: setup.prices.clone(),
            step_base: 0,
        })
    }

    /// The agent's tools, in a stable order (built-ins as granted, then `Computer`, skills,
    /// delegation and MCP tools) so the cached prompt prefix stays the same from session to session.
    async fn tools(&self, agent: &str, spec: &AgentSpec, chain: Vec<String>) -> Registry {
        let mut registry = Registry::with_builtins(grants(spec));
        // The screen is offered only where there is one: a grant of `Computer` on a
        // computer without a display gives nothing to call.
        if registry.allows(COMPUTER_TOOL) && self.place.computer.has_display() {
            registry.add(Arc::new(ComputerUse));
        }
        if !spec.skills.is_empty() {
            registry.add(Arc::new(SkillTool::new(
                self.setup.spec.clone(),
                agent,
                spec,
            )));
        }
        if registry.allows(DELEGATE_TOOL) {
            registry.add(Arc::new(DelegateTool {
                spec: self.setup.spec.clone(),
                spawner: Arc::new(Spawn(self.setup.clone())),
                chain,
                max_depth: self.setup.max_depth,
                task_key: self.setup.task_key.clone(),
                product: self.setup.product.clone(),
            }));
        }
        let wants_mcp = registry.grants().iter().any(|g| g.starts_with("mcp__"));
        if let Some(pool) = self.setup.mcp.as_ref().filter(|_| wants_mcp) {
            for tool in ServerTool::all(pool).await {
                registry.add(Arc::new(tool));
            }
        }
        registry
    }

    fn actor(&'a self, task: TaskId, agent: &'a str, tools: Registry) -> Actor<'a> {
        let place = &self.place;
        Actor {
            store: place.store,
            task,
            goal: place.goal,
            agent,
            tools: Arc::new(tools),
            computer: place.computer,
            workspace: place.workspace,
            author: place.author,
            cancel: place.cancel,
            settings: self.setup.settings.as_deref(),
            limits: self.setup.limits.as_deref(),
            delegated: false,
            gates: self.setup.gates.as_deref(),
        }
    }
}

/// Starts delegated agents' sessions with the same builder, for the `Delegate` tool.
struct Spawn(Arc<Setup>);

#[async_trait::async_trait]
impl Spawner for Spawn {
    async fn run(&self, child: Child<'_>) -> Result<Finished, AgentError> {
        let Some(agent) = self.0.spec.agent(child.agent) else {
            return Err(AgentError::Act(crate::policy::ActError::Failed(format!(
                "no agent named {}",
                child.agent
            ))));
        };
        let builder = Builder {
            setup: self.0.clone(),
            place: child.place,
        };
        let asked = (child.from, child.description, child.prompt);
        let session = builder
            .delegated(child.task, child.chain, agent.name(), &agent.spec, asked)
            .await?;
        Box::pin(session.run()).await
    }
}
