//! Smart selection: the model tier and thinking budget an agent works one task with when its
//! model is `auto` (its own `model`, or else the company's `models.default`).
//!
//! When the rules are certain (below), they decide and no classifier call is made. Otherwise
//! one cheap classifier call, on the company's haiku tier, reads the task (the goal, its
//! check, priority, the agent's title, the attempt and the earlier failure) and must answer one
//! JSON object, `{"tier": "haiku"|"sonnet"|"opus", "thinking": 0..=32000, "reason": "..."}`.
//! Anything else (no reachable model, a provider error, an answer that is not exactly that
//! object) falls back to the rules below, so selection never stops work.
//!
//! The classifier call is a model call like any turn: journaled before and after (a restarted
//! controller reuses its answer instead of asking again), its tokens and dollars recorded
//! against the task and agent, audited as `model`. The selection is journaled too and audited
//! as `select`: tier, model id, thinking, source (`classifier` or `rule`) and reason.
//!
//! ```
//! use proto::agent::select::{Facts, Tier, rule};
//! let facts = Facts {
//!     description: "Fix the typo in the README's install section.".into(),
//!     ..Facts::default()
//! };
//! assert_eq!(rule(&facts).tier, Tier::Haiku);
//! ```
//!
//! # Rules
//! Over the goal's description and its check (command, path, URL or rubric), first match wins:
//! 1. security, authentication, vulnerabilities, architecture, migrations, incidents, outages,
//!    concurrency, data loss, payments → opus, thinking 16,000;
//! 2. a `judge` check (a rubric needs judgement to meet) → sonnet, thinking 4,000;
//! 3. docs, README, typos, copy, wording, formatting, lint, changelog, license, translation,
//!    version bumps → haiku, thinking off;
//! 4. the same two word lists over the agent's title (a Security Auditor's work is hard, a
//!    Technical Writer's routine);
//! 5. anything else → sonnet, thinking 4,000.
//!
//! A `critical` goal then goes one tier up, taking that tier's thinking.
//!
//! The rules are *certain* ([`certain`]), and the classifier is not asked, when two independent
//! signals agree: routine words in the work with a routine role or a check on a document
//! (haiku), or hard words in the work with a hard role or critical priority (opus). The
//! selection then says so in its reason, with source `rule`.
//!
//! # Attempts and thinking
//! A selection is for the work as a first attempt sees it. A retry starts from the evidence:
//! the selection the failed attempt worked with (read back from the audit log, as the journal
//! is cleared between attempts) and its error ([`Evidence`]). Work that fell short (its check
//! still fails, its turns ran out, or the error does not say) goes one tier up from the tier
//! that failed and doubles its thinking budget, from at least 4,000 tokens (so work that
//! looked routine and failed thinks on its retry), up to 32,000; work that was done but could
//! not land for a reason outside it (a conflict with what others delivered) is retried on the
//! same tier. Neither asks the classifier again. When the failed attempt's selection is not
//! on record, the choice is made as for a first attempt and escalated one tier per failed
//! attempt ([`super::escalate`]). The agent's declared `thinking` is the ceiling of whatever
//! is selected (`thinking: 0` keeps it off); a budget that is on is at least 1,024 tokens, the
//! API's minimum.
//!
//! A declared tier or model id is used as declared: no classifier call, the agent's thinking
//! as it is, one tier up per failed attempt as before.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::AgentError;
use crate::model::{Message, Model, PriceTable, Request, Response, SystemBlock, with_retries};
use crate::spec::{AgentSpec, Check, GoalSpec, Priority, Spec};
use crate::store::{AuditRecord, Cost, Entry, StepRecord, Store, TaskId};

/// Journal step of the classifier call; the selection is journaled at the next one. Beyond
/// the steps of a conversation, below the controller's own commit.
pub const SELECT_STEP: u32 = 8_000_000;
/// The largest thinking budget selection hands out.
pub const MAX_THINKING: u32 = 32_000;
/// The API's smallest thinking budget.
const MIN_THINKING: u32 = 1_024;
/// A failed attempt thinks at least this much on its retry.
const RETRY_THINKING: u32 = 4_000;
/// The classifier answers in one short JSON object.
const CLASSIFIER_MAX_TOKENS: u32 = 300;
/// Characters of the work's description the classifier sees; the gist is at the start.
const DESCRIPTION_LIMIT: usize = 2_000;

/// What the classifier is told.
pub const CLASSIFIER_SYSTEM: &str = "You choose the model for one piece of work in a software company staffed by AI \
agents. Tiers: haiku is fast and cheap, for routine edits such as docs, copy, typos, formatting and simple config \
changes; sonnet is capable, for most engineering such as features, tests, bug fixes and refactors; opus is the \
strongest and five times the price of haiku, for hard or risky work such as security, architecture, migrations, \
incidents and subtle concurrency. Thinking is an extended-thinking budget in tokens from 0 to 32000: 0 for routine \
work, a few thousand for moderate work, more for work that needs careful reasoning. Choose for the work as a first \
attempt sees it: a failed attempt is escalated one tier automatically, so use an earlier failure only to understand \
what the work involves. Prefer the cheapest tier that will do the work well. Answer with one JSON object and \
nothing else: {\"tier\": \"haiku\" | \"sonnet\" | \"opus\", \"thinking\": <integer>, \"reason\": \"one sentence\"}.";

/// A model tier, cheapest first.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Haiku,
    Sonnet,
    Opus,
}

impl Tier {
    pub const LADDER: [Tier; 3] = [Tier::Haiku, Tier::Sonnet, Tier::Opus];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Haiku => "haiku",
            Tier::Sonnet => "sonnet",
            Tier::Opus => "opus",
        }
    }

    /// `n` tiers up, stopping at opus.
    pub fn up(self, n: u32) -> Tier {
        let at = Tier::LADDER.iter().position(|t| *t == self).unwrap_or(0);
        Tier::LADDER[(at + n as usize).min(Tier::LADDER.len() - 1)]
    }

    /// The model id this tier stands for in the company (`models.tiers`, else the defaults).
    pub fn model_id(self, spec: &Spec) -> String {
        let tiers = spec
            .company()
            .and_then(|c| c.spec.models.as_ref())
            .and_then(|m| m.tiers.as_ref());
        let declared = match self {
            Tier::Haiku => tiers.and_then(|t| t.haiku.clone()),
            Tier::Sonnet => tiers.and_then(|t| t.sonnet.clone()),
            Tier::Opus => tiers.and_then(|t| t.opus.clone()),
        };
        declared.unwrap_or_else(|| super::model_id_for(self.as_str()))
    }

    /// The tier a model id stands for in the company, if it is on the ladder.
    pub fn of(spec: &Spec, model_id: &str) -> Option<Tier> {
        Tier::LADDER
            .into_iter()
            .find(|t| t.model_id(spec) == model_id)
    }
}

/// Who decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Classifier,
    Rule,
    /// The agent (or the company default) names a tier or a model id.
    Declared,
}

/// The model an attempt works with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// `None` for a declared model id outside the ladder (a local model, say).
    pub tier: Option<Tier>,
    pub model_id: String,
    /// Extended-thinking budget; `None` is off.
    pub thinking: Option<u32>,
    pub source: Source,
    pub reason: String,
}

/// A tier and thinking budget for the work as a first attempt sees it: the classifier's
/// answer, or a rule's.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub tier: Tier,
    pub thinking: u32,
    pub reason: String,
}

/// What selection knows about the work.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    pub goal: String,
    pub description: String,
    /// `command`, `http`, `file`, `judge`, or `none` (delegated work).
    pub check_kind: String,
    /// The command, URL, path or rubric.
    pub check: String,
    pub priority: Priority,
    pub agent_title: String,
    /// 0 for the first attempt.
    pub attempt: u32,
    pub last_error: Option<String>,
}

impl Facts {
    /// The facts of an attempt at a goal.
    pub fn of_goal(
        goal_name: &str,
        goal: &GoalSpec,
        agent: &AgentSpec,
        attempt: u32,
        last_error: Option<&str>,
    ) -> Facts {
        let (check_kind, check) = describe(&goal.check);
        Facts {
            goal: goal_name.to_string(),
            description: goal.description.clone(),
            check_kind: check_kind.to_string(),
            check,
            priority: goal.priority,
            agent_title: agent.title.clone(),
            attempt,
            last_error: last_error.map(str::to_string),
        }
    }

    /// The facts of work delegated under a goal: no check of its own, one attempt.
    pub fn of_delegation(
        goal_name: &str,
        priority: Priority,
        work: &str,
        agent: &AgentSpec,
    ) -> Facts {
        Facts {
            goal: goal_name.to_string(),
            description: work.to_string(),
            check_kind: "none".into(),
            check: "delegated work; the delegating agent reviews it".into(),
            priority,
            agent_title: agent.title.clone(),
            attempt: 0,
            last_error: None,
        }
    }
}

fn describe(check: &Check) -> (&'static str, String) {
    if let Some(c) = &check.command {
        ("command", c.run.clone())
    } else if let Some(h) = &check.http {
        ("http", h.url.clone())
    } else if let Some(f) = &check.file {
        match &f.matches {
            Some(m) => ("file", format!("{} matches {m}", f.path)),
            None => ("file", f.path.clone()),
        }
    } else if let Some(j) = &check.judge {
        ("judge", j.rubric.clone())
    } else {
        ("none", String::new())
    }
}

/// Word starts that mark hard or risky work.
const HARD: &[&str] = &[
    "secur",
    "vulnerab",
    "authenticat",
    "authoriz",
    "oauth",
    "password",
    "credential",
    "encrypt",
    "crypto",
    "exploit",
    "cve",
    "injection",
    "xss",
    "csrf",
    "architect",
    "redesign",
    "migrat",
    "incident",
    "outage",
    "postmortem",
    "concurren",
    "deadlock",
    "race",
    "corrupt",
    "payment",
    "billing",
    "compliance",
    "gdpr",
];

/// Word starts that mark routine work.
const ROUTINE: &[&str] = &[
    "doc",
    "readme",
    "typo",
    "spelling",
    "copy",
    "wording",
    "reword",
    "format",
    "lint",
    "changelog",
    "license",
    "translat",
    "locali",
    "comment",
    "bump",
    "badge",
    "faq",
    "headline",
    "tagline",
    "writer",
    "editor",
];

fn mentions(text: &str, starts: &[&str]) -> Option<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .find(|w| starts.iter().any(|s| w.starts_with(s)))
}

fn thinking_for(tier: Tier) -> u32 {
    match tier {
        Tier::Haiku => 0,
        Tier::Sonnet => 4_000,
        Tier::Opus => 16_000,
    }
}

/// The rule-based choice (see the module documentation).
pub fn rule(facts: &Facts) -> Choice {
    let work = format!("{} {}", facts.description, facts.check);
    let (tier, why) = if let Some(w) = mentions(&work, HARD) {
        (Tier::Opus, format!("hard or risky work (\"{w}\")"))
    } else if facts.check_kind == "judge" {
        (Tier::Sonnet, "a judge check needs judgement".to_string())
    } else if let Some(w) = mentions(&work, ROUTINE) {
        (Tier::Haiku, format!("routine work (\"{w}\")"))
    } else if let Some(w) = mentions(&facts.agent_title, HARD) {
        (Tier::Opus, format!("a hard role (\"{w}\")"))
    } else if let Some(w) = mentions(&facts.agent_title, ROUTINE) {
        (Tier::Haiku, format!("a routine role (\"{w}\")"))
    } else {
        (Tier::Sonnet, "ordinary engineering work".to_string())
    };
    let (tier, why) = if facts.priority == Priority::Critical && tier != Tier::Opus {
        (tier.up(1), format!("{why}, critical priority"))
    } else {
        (tier, why)
    };
    Choice {
        tier,
        thinking: thinking_for(tier),
        reason: why,
    }
}

/// Extensions of files that hold prose: a check that looks into one checks a document.
const DOCUMENTS: &[&str] = &["md", "markdown", "mdx", "txt", "rst", "adoc", "html", "htm"];

/// Whether the facts' check is a file check on a document (README.md, a page of copy).
fn checks_a_document(facts: &Facts) -> bool {
    if facts.check_kind != "file" {
        return false;
    }
    let path = facts
        .check
        .split_once(" matches ")
        .map_or(facts.check.as_str(), |(path, _)| path);
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| DOCUMENTS.iter().any(|d| d.eq_ignore_ascii_case(ext.trim())))
}

/// The rules' choice when two independent signals agree, so asking the classifier could
/// not change the answer enough to pay for itself:
/// - routine: the work names routine work and nothing hard, its check is not a `judge`, its
///   priority is not `critical`, the agent's role is not a hard one, and either the role is a
///   routine one (a writer, an editor) or the description itself names routine work and the
///   check looks into a document → haiku, no thinking;
/// - hard: the work names hard or risky work and nothing routine, and either the agent's role
///   is a hard one or the priority is `critical` → opus, thinking 16,000.
///
/// Anything else (mixed or no signals, a command check on routine words, which may be code)
/// is for the classifier.
pub fn certain(facts: &Facts) -> Option<Choice> {
    let work = format!("{} {}", facts.description, facts.check);
    let role_hard = mentions(&facts.agent_title, HARD);
    let critical = facts.priority == Priority::Critical;
    let (tier, why) = match (mentions(&work, HARD), mentions(&work, ROUTINE)) {
        (None, Some(w))
            if facts.check_kind != "judge"
                && !critical
                && role_hard.is_none()
                && (mentions(&facts.agent_title, ROUTINE).is_some()
                    || (checks_a_document(facts)
                        && mentions(&facts.description, ROUTINE).is_some())) =>
        {
            (
                Tier::Haiku,
                format!("routine work (\"{w}\") for a routine role or a document"),
            )
        }
        (Some(w), None) if role_hard.is_some() || critical => (
            Tier::Opus,
            format!("hard or risky work (\"{w}\") for a hard role or at critical priority"),
        ),
        _ => return None,
    };
    Some(Choice {
        tier,
        thinking: thinking_for(tier),
        reason: format!("{why}; the rules are certain, no classifier call"),
    })
}

/// What a failed attempt's error says about the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The work fell short (its check still fails, its turns ran out, or the error does not
    /// say): the next attempt works one tier up and thinks harder.
    FellShort,
    /// The work was done but could not land for a reason outside it (it conflicts with what
    /// others delivered meanwhile): the next attempt works on the same tier again.
    NotTheWork,
}

/// Error texts of attempts that failed for a reason outside the work.
const NOT_THE_WORK: &[&str] = &["the work conflicts with"];

impl Evidence {
    /// What `last_error` says; no error says nothing, so the work fell short.
    pub fn of(last_error: Option<&str>) -> Evidence {
        match last_error {
            Some(e) if NOT_THE_WORK.iter().any(|n| e.contains(n)) => Evidence::NotTheWork,
            _ => Evidence::FellShort,
        }
    }
}

/// The selection of a retry, from the selection the failed attempt worked with and the
/// evidence of its failure: one tier up from the tier that failed (not from a new guess),
/// thinking doubled from what it had (at least 4,000, at most 32,000, under the agent's
/// ceiling); or, when the failure was not the work's, the same tier and thinking again.
pub fn retry(
    spec: &Spec,
    agent: &AgentSpec,
    failed: &Selection,
    tier: Tier,
    evidence: Evidence,
    attempt: u32,
) -> Selection {
    let (next, thinking, why) = match evidence {
        Evidence::FellShort => (
            tier.up(1),
            thinking_for_attempt(failed.thinking.unwrap_or(0), 1, agent.thinking),
            "the work fell short",
        ),
        Evidence::NotTheWork => (tier, failed.thinking, "the failure was not the work's"),
    };
    Selection {
        tier: Some(next),
        model_id: next.model_id(spec),
        thinking,
        source: Source::Rule,
        reason: format!(
            "attempt {} after {why} on {}: {}",
            attempt + 1,
            tier.as_str(),
            next.as_str()
        ),
    }
}

/// The classifier's answer, validated: the first `{` to the last `}` must be exactly a
/// [`Choice`] with a thinking budget of at most 32,000 and a reason.
pub fn parse_choice(text: &str) -> Option<Choice> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    if start >= end {
        return None;
    }
    let choice: Choice = serde_json::from_str(&text[start..=end]).ok()?;
    (choice.thinking <= MAX_THINKING && !choice.reason.trim().is_empty()).then_some(choice)
}

/// What the agent asks for: its own `model`, else the company default, else `auto`.
pub fn declared(spec: &Spec, agent: &AgentSpec) -> String {
    agent
        .model
        .clone()
        .or_else(|| {
            spec.company()
                .and_then(|c| c.spec.models.as_ref())
                .and_then(|m| m.default.clone())
        })
        .unwrap_or_else(|| "auto".into())
}

/// The thinking budget of attempt `attempt` for a first-attempt budget of `thinking`, under
/// the agent's ceiling.
pub fn thinking_for_attempt(thinking: u32, attempt: u32, ceiling: Option<u32>) -> Option<u32> {
    let mut budget = thinking.min(MAX_THINKING);
    for _ in 0..attempt {
        budget = budget.saturating_mul(2).clamp(RETRY_THINKING, MAX_THINKING);
    }
    let budget = budget.min(ceiling.unwrap_or(MAX_THINKING));
    (budget > 0).then(|| budget.max(MIN_THINKING))
}

/// A choice made concrete for attempt `attempt`: escalated, thinking raised and capped.
pub fn compose(
    spec: &Spec,
    agent: &AgentSpec,
    choice: &Choice,
    source: Source,
    attempt: u32,
) -> Selection {
    let tier = choice.tier.up(attempt);
    let mut reason = choice.reason.trim().to_string();
    if attempt > 0 {
        reason.push_str(&format!(
            "; {attempt} failed attempt(s): {} escalated to {}",
            choice.tier.as_str(),
            tier.as_str()
        ));
    }
    Selection {
        tier: Some(tier),
        model_id: super::escalate(spec, &choice.tier.model_id(spec), attempt),
        thinking: thinking_for_attempt(choice.thinking, attempt, agent.thinking),
        source,
        reason,
    }
}

/// The request the classifier gets.
pub fn classifier_request(model_id: &str, facts: &Facts) -> Request {
    let description: String = facts.description.chars().take(DESCRIPTION_LIMIT).collect();
    let mut text = format!(
        "Goal: {}\nWork: {}\nCheck ({}): {}\nPriority: {}\nAgent: {}\nAttempt: {}",
        facts.goal,
        description.trim(),
        facts.check_kind,
        facts.check.trim(),
        facts.priority.as_str(),
        facts.agent_title,
        facts.attempt + 1,
    );
    if let Some(error) = &facts.last_error {
        let error: String = error.chars().take(DESCRIPTION_LIMIT).collect();
        text.push_str(&format!("\nThe last attempt failed with: {}", error.trim()));
    }
    Request {
        model: model_id.to_string(),
        system: vec![SystemBlock::text(CLASSIFIER_SYSTEM)],
        messages: vec![Message::user(text)],
        tools: Vec::new(),
        max_tokens: CLASSIFIER_MAX_TOKENS,
        thinking: None,
        temperature: Some(0.0),
    }
}

/// Where selection records what it does, and the model it may ask.
pub struct Selector<'a> {
    pub store: &'a Store,
    pub task: TaskId,
    pub goal: &'a str,
    /// The agent the selection is for (its spend and audit records carry this name).
    pub agent: &'a str,
    /// `None` when no model is reachable: the rules decide.
    pub model: Option<&'a dyn Model>,
    pub prices: &'a PriceTable,
    pub cancel: &'a CancellationToken,
    /// The task's budgets: a spent one refuses the classifier call like any model call.
    pub budget: crate::policy::limits::TaskBudget,
}

impl Selector<'_> {
    /// The model and thinking budget `agent` works this attempt with.
    pub async fn select(
        &self,
        spec: &Spec,
        agent: &AgentSpec,
        facts: &Facts,
    ) -> Result<Selection, AgentError> {
        let wanted = declared(spec, agent);
        if wanted != "auto" {
            let model_id = super::escalate(spec, &super::model_id(spec, agent), facts.attempt);
            return Ok(Selection {
                tier: Tier::of(spec, &model_id),
                model_id,
                thinking: agent.thinking.filter(|t| *t > 0),
                source: Source::Declared,
                reason: format!("declared `{wanted}`"),
            });
        }
        let at = SELECT_STEP + 1;
        if let Some(done) = self.store.action(self.task, at)?
            && done.finished_at.is_some()
            && let Some(selection) = done
                .outcome
                .and_then(|o| serde_json::from_value::<Selection>(o).ok())
        {
            return Ok(selection);
        }
        // A retry starts from the tier the failed attempt worked with; the same attempt
        // selected again (its journal lost, say) keeps what it had.
        let recorded = match facts.attempt {
            0 => None,
            _ => self.recorded_selection()?,
        };
        let selection = if let Some((attempt, recorded, _)) = &recorded
            && *attempt == facts.attempt
        {
            recorded.clone()
        } else if let Some((attempt, recorded, tier)) = &recorded
            && attempt + 1 == facts.attempt
        {
            let evidence = Evidence::of(facts.last_error.as_deref());
            retry(spec, agent, recorded, *tier, evidence, facts.attempt)
        } else if let Some(choice) = certain(facts) {
            compose(spec, agent, &choice, Source::Rule, facts.attempt)
        } else {
            match self.classify(spec, facts).await? {
                Ok(choice) => compose(spec, agent, &choice, Source::Classifier, facts.attempt),
                Err(why) => {
                    let mut s = compose(spec, agent, &rule(facts), Source::Rule, facts.attempt);
                    s.reason = format!("{} (rule; {why})", s.reason);
                    s
                }
            }
        };
        let input = serde_json::to_value(facts).unwrap_or_default();
        let outcome = serde_json::to_value(&selection).unwrap_or_default();
        let audit = self.audit("select", input, outcome.clone());
        self.journal(at, "Select", Utc::now(), &outcome, &audit, None)?;
        tracing::info!(
            goal = self.goal,
            agent = self.agent,
            tier = selection.tier.map(Tier::as_str).unwrap_or("-"),
            model = %selection.model_id,
            thinking = selection.thinking.unwrap_or(0),
            source = ?selection.source,
            "selected: {}",
            selection.reason
        );
        Ok(selection)
    }

    /// The newest selection recorded for this task (the journal is cleared between attempts,
    /// the audit log is not), with the attempt it was for and its tier: `None` when there is
    /// none (pruned, or recorded by an older version) or it named no tier (a declared model
    /// off the ladder).
    fn recorded_selection(&self) -> Result<Option<(u32, Selection, Tier)>, AgentError> {
        let Some((input, outcome)) = self.store.last_audit(self.task, "select")? else {
            return Ok(None);
        };
        let attempt = input
            .get("attempt")
            .and_then(serde_json::Value::as_u64)
            .and_then(|a| u32::try_from(a).ok());
        let selection = serde_json::from_value::<Selection>(outcome).ok();
        Ok(match (attempt, selection) {
            (Some(attempt), Some(s)) => s.tier.map(|t| (attempt, s, t)),
            _ => None,
        })
    }

    /// The classifier's choice, or why there is none. Only the store and cancellation are
    /// errors; everything about the model is a reason to use the rules.
    async fn classify(
        &self,
        spec: &Spec,
        facts: &Facts,
    ) -> Result<Result<Choice, String>, AgentError> {
        let Some(model) = self.model else {
            return Ok(Err("no model is reachable".into()));
        };
        let model_id = Tier::Haiku.model_id(spec);
        let response = match self.store.action(self.task, SELECT_STEP)? {
            Some(done) if done.finished_at.is_some() => {
                let outcome = done.outcome.unwrap_or_default();
                match serde_json::from_value::<Response>(outcome.clone()) {
                    Ok(response) => response,
                    Err(_) => {
                        let error = outcome.get("error").and_then(|e| e.as_str());
                        return Ok(Err(format!(
                            "the classifier call failed: {}",
                            error.unwrap_or("no answer recorded")
                        )));
                    }
                }
            }
            _ => {
                let now = Utc::now();
                let spent = self.store.spent(self.task, now)?;
                self.budget
                    .check(self.goal, &self.task.to_string(), &spent, now)?;
                match self.call(model, &model_id, facts).await? {
                    Ok(response) => response,
                    Err(why) => return Ok(Err(why)),
                }
            }
        };
        let text = response.text();
        Ok(parse_choice(&text).ok_or_else(|| {
            let said: String = text.chars().take(200).collect();
            format!("the classifier answered without a valid choice: {said:?}")
        }))
    }

    /// The classifier call itself, journaled and paid for like a model turn.
    async fn call(
        &self,
        model: &dyn Model,
        model_id: &str,
        facts: &Facts,
    ) -> Result<Result<Response, String>, AgentError> {
        let request = classifier_request(model_id, facts);
        let input = json!({ "model": model_id, "purpose": "select", "messages": 1 });
        // Recorded whole once answered, like a model turn: a call interrupted midway is
        // asked again.
        let started_at = Utc::now();
        let result = tokio::select! {
            r = with_retries(model, &request, 1) => r,
            _ = self.cancel.cancelled() => return Err(AgentError::Cancelled),
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                let outcome = json!({ "error": e.to_string() });
                let audit = self.audit("model", input, outcome.clone());
                self.journal(SELECT_STEP, "Model", started_at, &outcome, &audit, None)?;
                return Ok(Err(format!("the classifier call failed: {e}")));
            }
        };
        let cost = self.prices.cost(model_id, &response.usage).unwrap_or(0.0);
        let outcome = serde_json::to_value(&response).unwrap_or_default();
        let audit = self.audit(
            "model",
            input,
            json!({
                "stopReason": response.stop_reason.as_ref().map(|s| s.as_str().to_string()),
                "usage": response.usage,
                "usd": cost,
                "text": response.text(),
            }),
        );
        let cost = Cost {
            agent: self.agent,
            model: model_id,
            input_tokens: response.usage.total_input(),
            output_tokens: response.usage.output_tokens,
            usd: cost,
        };
        self.journal(
            SELECT_STEP,
            "Model",
            started_at,
            &outcome,
            &audit,
            Some(cost),
        )?;
        Ok(Ok(response))
    }

    /// Journals step `step` whole, with its audit record and what it cost: one transaction.
    fn journal(
        &self,
        step: u32,
        tool: &str,
        started_at: chrono::DateTime<Utc>,
        outcome: &serde_json::Value,
        audit: &AuditRecord,
        cost: Option<Cost<'_>>,
    ) -> Result<(), AgentError> {
        self.store.record(
            &StepRecord {
                task: self.task,
                goal: self.goal,
                entry: Entry::Whole {
                    step,
                    tool,
                    input: &audit.input,
                    outcome,
                    started_at,
                },
                cost,
                audit: Some(audit),
                activity: None,
            },
            Utc::now(),
        )?;
        Ok(())
    }

    fn audit(
        &self,
        action: &str,
        input: serde_json::Value,
        outcome: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            id: 0,
            time: Utc::now(),
            agent: self.agent.to_string(),
            goal: Some(self.goal.to_string()),
            task: Some(self.task),
            action: action.into(),
            input,
            outcome,
            diff: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(description: &str, check_kind: &str, title: &str) -> Facts {
        Facts {
            description: description.into(),
            check_kind: check_kind.into(),
            agent_title: title.into(),
            ..Facts::default()
        }
    }

    #[test]
    fn rules_send_risky_work_up_and_routine_work_down() {
        let cases = [
            (
                "Fix the SQL injection in the login form.",
                "command",
                "Backend Developer",
                Tier::Opus,
            ),
            (
                "Migrate the users table to the new schema.",
                "command",
                "Database Developer",
                Tier::Opus,
            ),
            (
                "Fix the typo in the README.",
                "file",
                "Backend Developer",
                Tier::Haiku,
            ),
            (
                "The README explains install and usage.",
                "judge",
                "Technical Writer",
                Tier::Sonnet,
            ),
            (
                "Add a /health endpoint with a test.",
                "command",
                "Backend Developer",
                Tier::Sonnet,
            ),
            (
                "Add a /health endpoint with a test.",
                "command",
                "Security Auditor",
                Tier::Opus,
            ),
            (
                "The landing page has a pricing section.",
                "file",
                "Copywriter",
                Tier::Haiku,
            ),
        ];
        for (description, kind, title, tier) in cases {
            let choice = rule(&facts(description, kind, title));
            assert_eq!(choice.tier, tier, "{description} by {title}");
            assert_eq!(choice.thinking == 0, tier == Tier::Haiku, "{description}");
        }
        // "author" is not "authorization".
        assert_eq!(
            rule(&facts("Fix the author's name in the docs.", "file", "")).tier,
            Tier::Haiku
        );
        let critical = Facts {
            priority: Priority::Critical,
            ..facts("Fix the typo in the README.", "file", "")
        };
        assert_eq!(rule(&critical).tier, Tier::Sonnet);
    }

    #[test]
    fn only_a_complete_valid_answer_is_a_choice() {
        assert_eq!(
            parse_choice(
                "Sure: {\"tier\": \"opus\", \"thinking\": 8000, \"reason\": \"auth code\"}"
            ),
            Some(Choice {
                tier: Tier::Opus,
                thinking: 8000,
                reason: "auth code".into()
            })
        );
        for bad in [
            "opus",
            "{\"tier\": \"gpt\", \"thinking\": 0, \"reason\": \"x\"}",
            "{\"tier\": \"haiku\", \"thinking\": 40000, \"reason\": \"x\"}",
            "{\"tier\": \"haiku\", \"thinking\": -1, \"reason\": \"x\"}",
            "{\"tier\": \"haiku\", \"thinking\": 0, \"reason\": \" \"}",
            "{\"tier\": \"haiku\", \"thinking\": 0}",
            "{\"tier\": \"haiku\", \"thinking\": 0, \"reason\": \"x\", \"model\": \"y\"}",
        ] {
            assert_eq!(parse_choice(bad), None, "{bad}");
        }
    }

    #[test]
    fn failed_attempts_escalate_from_the_choice_and_think_harder() {
        let spec = Spec::default();
        let agent = AgentSpec::default();
        let haiku = Choice {
            tier: Tier::Haiku,
            thinking: 0,
            reason: "docs".into(),
        };
        let first = compose(&spec, &agent, &haiku, Source::Classifier, 0);
        assert_eq!(
            (first.model_id.as_str(), first.thinking),
            ("claude-haiku-4-5", None)
        );
        let second = compose(&spec, &agent, &haiku, Source::Classifier, 1);
        assert_eq!(
            (second.model_id.as_str(), second.thinking),
            ("claude-sonnet-4-5", Some(4_000))
        );
        let third = compose(&spec, &agent, &haiku, Source::Classifier, 2);
        assert_eq!(
            (third.model_id.as_str(), third.thinking, third.tier),
            ("claude-opus-4-5", Some(8_000), Some(Tier::Opus))
        );
        assert_eq!(thinking_for_attempt(20_000, 1, None), Some(MAX_THINKING));
        // The agent's declared thinking is the ceiling; 0 keeps thinking off.
        assert_eq!(thinking_for_attempt(16_000, 0, Some(6_000)), Some(6_000));
        assert_eq!(thinking_for_attempt(16_000, 2, Some(0)), None);
        assert_eq!(thinking_for_attempt(500, 0, None), Some(MIN_THINKING));
    }

    #[test]
    fn the_rules_are_certain_only_when_two_signals_agree() {
        use Priority::{Critical, High, Medium};
        // (description, check kind, check, agent title, priority, certain tier)
        let cases = [
            // Routine words and a routine role, or a check on a document: haiku, no call.
            (
                "Fix the typos in the README's install section.",
                "file",
                "README.md matches ## Install",
                "Technical Writer",
                Medium,
                Some(Tier::Haiku),
            ),
            (
                "Tighten the wording of the pricing page FAQ.",
                "file",
                "web/pricing.html matches FAQ",
                "Backend Developer",
                Medium,
                Some(Tier::Haiku),
            ),
            (
                "Rewrite the landing page headline.",
                "file",
                "web/index.html matches <h1>",
                "Copywriter",
                High,
                Some(Tier::Haiku),
            ),
            (
                "Add the 1.4.0 entry to the changelog.",
                "command",
                "grep -q 1.4.0 CHANGELOG",
                "Technical Writer",
                Medium,
                Some(Tier::Haiku),
            ),
            // Only the check's path names a document; the description says nothing routine.
            (
                "Explain the new deployment steps.",
                "file",
                "README.md matches deploy",
                "Backend Developer",
                Medium,
                None,
            ),
            // Routine words, but the check runs code and the role is not a writer's: it may be
            // code ("email format" is validation logic), so the classifier is asked.
            (
                "Validate the checkout form: required fields, email format.",
                "command",
                "node --check web/app.js",
                "Frontend Developer",
                Medium,
                None,
            ),
            // A file check on configuration, not a document.
            (
                "Cache pip downloads in CI and run the lint step as its own job.",
                "file",
                ".github/workflows/ci.yml matches actions/cache",
                "CI/CD Engineer",
                Medium,
                None,
            ),
            // Mixed signals, a judge, critical priority or a hard role: not certain.
            (
                "Fix the typo in the security docs.",
                "file",
                "docs/security.md",
                "Technical Writer",
                Medium,
                None,
            ),
            (
                "The README explains install and usage.",
                "judge",
                "a newcomer can install it",
                "Technical Writer",
                Medium,
                None,
            ),
            (
                "Fix the typo in the README.",
                "file",
                "README.md",
                "Technical Writer",
                Critical,
                None,
            ),
            (
                "Update the docs of the login flow.",
                "file",
                "docs/login.md",
                "Security Auditor",
                Medium,
                None,
            ),
            // Hard words alone are not enough; with a hard role or critical priority they are.
            (
                "Migrate order amounts to integer cents.",
                "command",
                "pytest -q",
                "Database Developer",
                High,
                None,
            ),
            (
                "Migrate order amounts to integer cents.",
                "command",
                "pytest -q",
                "Database Developer",
                Critical,
                Some(Tier::Opus),
            ),
            (
                "Fix the XSS in the search page.",
                "command",
                "pytest -q",
                "Security Auditor",
                Medium,
                Some(Tier::Opus),
            ),
            // No signal at all: the classifier.
            (
                "Add GET /orders/{id}/status with a test.",
                "command",
                "pytest -q",
                "Backend Developer",
                Medium,
                None,
            ),
        ];
        for (description, kind, check, title, priority, tier) in cases {
            let facts = Facts {
                check: check.into(),
                priority,
                ..facts(description, kind, title)
            };
            let choice = certain(&facts);
            assert_eq!(
                choice.as_ref().map(|c| c.tier),
                tier,
                "{description} by {title}"
            );
            if let Some(choice) = choice {
                assert_eq!(choice.thinking, thinking_for(choice.tier), "{description}");
                assert!(
                    choice.reason.contains("no classifier call"),
                    "{}",
                    choice.reason
                );
                // Whatever is certain, the plain rules agree with.
                assert_eq!(rule(&facts).tier, choice.tier, "{description}");
            }
        }
    }

    #[test]
    fn evidence_of_a_failure_says_whether_the_work_fell_short() {
        let cases = [
            (None, Evidence::FellShort),
            (
                Some("the check still fails after backend's work: exit 1"),
                Evidence::FellShort,
            ),
            (
                Some("agent backend: 40 turns without finishing (maxTurns)"),
                Evidence::FellShort,
            ),
            (Some("judge: the rubric is not met"), Evidence::FellShort),
            (
                Some("the work conflicts with main as it is now, and the goal is not met there"),
                Evidence::NotTheWork,
            ),
        ];
        for (error, evidence) in cases {
            assert_eq!(Evidence::of(error), evidence, "{error:?}");
        }
    }

    #[test]
    fn a_retry_starts_from_the_tier_that_failed_and_the_evidence() {
        use Evidence::{FellShort, NotTheWork};
        let spec = Spec::default();
        // (failed tier, its thinking, evidence, agent's ceiling) -> (tier, thinking)
        let cases = [
            (
                Tier::Haiku,
                None,
                FellShort,
                None,
                Tier::Sonnet,
                Some(4_000),
            ),
            (
                Tier::Sonnet,
                Some(2_000),
                FellShort,
                None,
                Tier::Opus,
                Some(4_000),
            ),
            (
                Tier::Sonnet,
                Some(6_000),
                FellShort,
                None,
                Tier::Opus,
                Some(12_000),
            ),
            (
                Tier::Opus,
                Some(20_000),
                FellShort,
                None,
                Tier::Opus,
                Some(MAX_THINKING),
            ),
            (
                Tier::Opus,
                Some(16_000),
                FellShort,
                Some(6_000),
                Tier::Opus,
                Some(6_000),
            ),
            (Tier::Haiku, None, FellShort, Some(0), Tier::Sonnet, None),
            (
                Tier::Sonnet,
                Some(4_000),
                NotTheWork,
                None,
                Tier::Sonnet,
                Some(4_000),
            ),
            (Tier::Haiku, None, NotTheWork, None, Tier::Haiku, None),
        ];
        for (failed_tier, thinking, evidence, ceiling, tier, expected_thinking) in cases {
            let agent = AgentSpec {
                thinking: ceiling,
                ..AgentSpec::default()
            };
            let failed = Selection {
                tier: Some(failed_tier),
                model_id: failed_tier.model_id(&spec),
                thinking,
                source: Source::Classifier,
                reason: "earlier".into(),
            };
            let next = retry(&spec, &agent, &failed, failed_tier, evidence, 1);
            assert_eq!(
                (next.tier, next.model_id.clone(), next.thinking, next.source),
                (
                    Some(tier),
                    tier.model_id(&spec),
                    expected_thinking,
                    Source::Rule
                ),
                "{failed_tier:?}/{thinking:?} {evidence:?}"
            );
            assert!(
                next.reason.starts_with("attempt 2 after"),
                "{}",
                next.reason
            );
        }
    }
}
