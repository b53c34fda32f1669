//! The five kinds of `proto.dev/v1alpha1`: `Company`, `Product`, `Computer`, `Agent`, `Goal`.
//!
//! One set of Rust types serves both YAML files in git and Kubernetes custom resources:
//! `#[derive(CustomResource)]` generates the root types (`Goal`, `Agent`, ...) with `metadata`
//! and `status`, the `*Spec` structs are what users write. Field names follow `RESOURCES.md`.
//! Every struct denies unknown fields, so a typo is an error rather than a silent default.
//!
//! "Exactly one of" rules (check kinds, connection kinds, playbook step kinds) are plain
//! optional fields here and enforced by `validate`, which gives a clearer message than an
//! untagged enum's "data did not match any variant".

// kube's `printcolumn(...)` attributes repeat `type_ = "string"`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::{GoalStatus, ResourceStatus};

/// The API group and version every kind belongs to.
pub const API_GROUP: &str = "proto.dev";
pub const API_VERSION: &str = "proto.dev/v1alpha1";

// ---------------------------------------------------------------------------------------------
// Company
// ---------------------------------------------------------------------------------------------

/// The company: its mission, its CEO, how it uses models, what it may spend, and how it records
/// its work in git. Exactly one per repository.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "proto.dev",
    version = "v1alpha1",
    kind = "Company",
    namespaced,
    status = "ResourceStatus",
    shortname = "co",
    category = "proto",
    doc = "A company declared for Proto: mission, CEO, model policy, budgets, approvals and writeback.",
    printcolumn(name = "CEO", type_ = "string", json_path = ".spec.ceo"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.observedRevision",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompanySpec {
    /// What the company is for, in one sentence.
    pub mission: String,
    /// The Agent at the root of the org chart.
    pub ceo: String,
    /// `true` stops all work and holds it until set back to `false` (the kill switch).
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Model policy: default model, tiers, providers and prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Models>,
    /// Spending limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    /// Rate limits on agent actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Which actions need a person's approval, and who may give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
    /// How the controller records its work in this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writeback: Option<Writeback>,
    /// How the company learns from its own work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<Learning>,
}

/// How the company learns from its own work (see `crate::learning`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Learning {
    /// How often the miner looks for failures that keep coming back and proposes goals for
    /// them (a duration, default `100s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miner_interval: Option<String>,
    /// After a goal a model met, a cheap-tier model call (paid for and budgeted like any
    /// turn) writes down what the task taught as a knowledge entry. Off unless `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summaries: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Model policy of a company.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Models {
    /// `auto` (smart selection), a tier (`haiku`, `sonnet`, `opus`) or a model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The model id each tier stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Tiers>,
    /// Providers, tried in order for a model they serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<Provider>,
    /// Prices in USD per million tokens; defaults ship for current models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<Price>,
    /// The longest one model turn may take (a duration such as `10m`, the default): a turn
    /// past it is ended and its attempt fails, to be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_timeout: Option<String>,
}

impl Models {
    /// `turnTimeout`, or its default of 10 minutes (validation has refused a bad one).
    pub fn turn_timeout(&self) -> std::time::Duration {
        self.turn_timeout
            .as_deref()
            .and_then(|t| super::duration::parse_duration(t).ok())
            .unwrap_or(crate::model::limit::DEFAULT_TURN_TIMEOUT)
    }
}

/// The model id behind each tier name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tiers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haiku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sonnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opus: Option<String>,
}

/// A model provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// Defaulted per type (`https://api.anthropic.com` for `anthropic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable holding the API key. The key itself is never written anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// For `replay`: the file of recorded exchanges, relative to the company repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The wire protocol a provider speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Anthropic,
    Openai,
    Replay,
}

/// Price of a model in USD per million tokens, with the limits that go with the model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    pub model: String,
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// The context window in tokens (defaults ship for current models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// The shortest prompt prefix, in tokens, the provider caches; a cache breakpoint on a
    /// shorter prefix is wasted (defaults ship for current models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_min_tokens: Option<u64>,
}

/// Spending limits of a company.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_goal: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_task: Option<u64>,
}

/// Rate limits on agent actions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_per_minute_per_agent: Option<u32>,
}

/// Approval policy: gated action patterns, who may approve, and how long a request waits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Approvals {
    /// Action patterns (`*` wildcards) that need approval, e.g. `publish_*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gated: Vec<String>,
    /// Who may approve: git author emails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Unanswered requests are denied after this long, e.g. `72h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Whether the approving merge commit must carry a signature `git verify-commit`
    /// accepts (GPG, or SSH with `gpg.ssh.allowedSignersFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signed_merges: Option<bool>,
    /// A forge on which requests are also opened as pull requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<Forge>,
}

/// A forge (`github` or `gitea`) and the company repository on it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Forge {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `owner/name` of the company repository on the forge.
    pub repo: String,
    /// The environment variable holding the forge's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

/// How the controller commits its records.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Writeback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<bool>,
    /// Kubernetes mode: the git repository (path or URL) the records are committed to;
    /// without it the controller keeps them in its store only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

/// A git identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Author {
    pub name: String,
    pub email: String,
}

// ---------------------------------------------------------------------------------------------
// Product
// ---------------------------------------------------------------------------------------------

/// A product the company builds and runs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "proto.dev",
    version = "v1alpha1",
    kind = "Product",
    namespaced,
    status = "ResourceStatus",
    shortname = "prod",
    category = "proto",
    doc = "A product: what it is, its lead agent, its code repository and the computers it may use.",
    printcolumn(name = "Lead", type_ = "string", json_path = ".spec.lead"),
    printcolumn(name = "Repo", type_ = "string", json_path = ".spec.repo.url"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductSpec {
    pub description: String,
    /// The product's "local CEO" Agent.
    pub lead: String,
    /// The product's code repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<Repo>,
    /// Which computers the product's work may run on; default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computers: Option<ComputerSelector>,
}

/// A git repository and branch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Repo {
    /// A path (relative to the company repository) or a URL.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// Selects computers by label or by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputerSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Computer
// ---------------------------------------------------------------------------------------------

/// A computer that work runs on.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "proto.dev",
    version = "v1alpha1",
    kind = "Computer",
    namespaced,
    status = "ResourceStatus",
    shortname = "comp",
    category = "proto",
    doc = "A computer work runs on: this host, an SSH host, a Kubernetes pod, or a desktop.",
    printcolumn(name = "Capacity", type_ = "integer", json_path = ".spec.capacity"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConnection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConnection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesConnection>,
    /// Tasks at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// The X display, for `gui`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Where task workspaces are created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// What agent commands (`Bash`, `Python`, playbook `run:` steps) may touch (default
    /// `workspace-write`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    /// Whether sandboxed agent commands may use the network (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
}

/// How agent commands on a computer are confined (Codex's three modes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Everything readable but the controller's secrets; nothing writable.
    ReadOnly,
    /// As `read-only`, and the workspace writable.
    #[default]
    WorkspaceWrite,
    /// No sandbox: commands run with the controller's rights.
    Off,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::ReadOnly => "read-only",
            SandboxMode::WorkspaceWrite => "workspace-write",
            SandboxMode::Off => "off",
        }
    }
}

/// This host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConnection {}

/// An SSH host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshConnection {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
}

/// Pods in a Kubernetes namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConnection {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// What a computer can do.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Shell,
    Gui,
    Browser,
}

// ---------------------------------------------------------------------------------------------
// Agent
// ---------------------------------------------------------------------------------------------

/// A role in the company, worked by a model or by playbooks.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "proto.dev",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    status = "ResourceStatus",
    shortname = "ag",
    category = "proto",
    doc = "An agent: a role in the company with its prompt, model, tools and skills.",
    printcolumn(name = "Title", type_ = "string", json_path = ".spec.title"),
    printcolumn(name = "Department", type_ = "string", json_path = ".spec.department"),
    printcolumn(name = "Reports-To", type_ = "string", json_path = ".spec.reportsTo"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// The Agent this one reports to; only the CEO has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports_to: Option<String>,
    /// What to call this agent for; used to route delegation.
    pub description: String,
    /// `auto`, a tier (`haiku`, `sonnet`, `opus`) or a model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Thinking budget in tokens; 0 turns thinking off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<u32>,
    /// Allowed tools: `Bash`, `Read`, `Write`, `Edit`, `Glob`, `Grep`, `Git`, `Python`,
    /// `Planning`, `Delegate`, `Computer`, or `mcp__<server>__<tool>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Skills from `.claude/skills/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// The system prompt.
    pub prompt: String,
}

// ---------------------------------------------------------------------------------------------
// Goal
// ---------------------------------------------------------------------------------------------

/// Something that must hold, with the check that tells whether it does.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "proto.dev",
    version = "v1alpha1",
    kind = "Goal",
    namespaced,
    status = "GoalStatus",
    shortname = "gl",
    category = "proto",
    doc = "A goal the company must reach, with the check that tells whether it holds.",
    printcolumn(name = "Product", type_ = "string", json_path = ".spec.product"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoalSpec {
    pub product: String,
    /// The Agent responsible for meeting the goal.
    pub owner: String,
    #[serde(default)]
    pub priority: Priority,
    pub description: String,
    pub check: Check,
    /// Deterministic steps, run before any model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub playbook: Vec<Step>,
    /// Re-check on a 5-field cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// An action name that needs approval before the goal's work is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<GoalBudget>,
}

/// How urgent a goal is. Work is dispatched critical first.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Medium,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

/// How to tell whether a goal holds: exactly one of the four kinds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeCheck>,
}

/// Passes when the command exits 0 in the product's workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandCheck {
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Passes when the URL answers with the status (default 200) and, if given, a matching body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A regular expression the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Passes when the file exists in the workspace and, if given, its content matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileCheck {
    pub path: String,
    /// A regular expression the content must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// Passes when a model grades the workspace as meeting the rubric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeCheck {
    pub rubric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One deterministic playbook step: exactly one of the kinds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// A shell command run in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitStep>,
}

/// Write a whole file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteStep {
    pub path: String,
    pub content: String,
}

/// Replace one exact occurrence of `old` with `new`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditStep {
    pub path: String,
    pub old: String,
    pub new: String,
}

/// Commit the workspace's changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitStep {
    pub message: String,
}

/// What a goal may spend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoalBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// Attempts before the goal is Stalled (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl Check {
    /// The kinds that are set, by their YAML names.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.command.is_some() {
            kinds.push("command");
        }
        if self.http.is_some() {
            kinds.push("http");
        }
        if self.file.is_some() {
            kinds.push("file");
        }
        if self.judge.is_some() {
            kinds.push("judge");
        }
        kinds
    }

    /// Whether this check needs a model to run.
    pub fn needs_model(&self) -> bool {
        self.judge.is_some()
    }
}

impl Step {
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.run.is_some() {
            kinds.push("run");
        }
        if self.write.is_some() {
            kinds.push("write");
        }
        if self.edit.is_some() {
            kinds.push("edit");
        }
        if self.commit.is_some() {
            kinds.push("commit");
        }
        kinds
    }
}

impl ComputerSpec {
    pub fn connection_kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.local.is_some() {
            kinds.push("local");
        }
        if self.ssh.is_some() {
            kinds.push("ssh");
        }
        if self.kubernetes.is_some() {
            kinds.push("kubernetes");
        }
        kinds
    }
}
