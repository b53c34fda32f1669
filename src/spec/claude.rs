//! The files people already have from Claude Code, read as they are: subagents
//! (`.claude/agents/**/*.md`), skills (`.claude/skills/*/SKILL.md`), rules
//! (`.claude/rules/**/*.md`), settings (`.claude/settings.json`: hooks and permission rules),
//! MCP servers (`.mcp.json`) and memory (`CLAUDE.md` with `@path` imports).
//!
//! Claude Code is lenient with these files, and so is Proto, with Claude Code's behaviour as
//! the reference: a file it would skip is skipped (see [`load_file`]), tools it lacks are
//! dropped, names Kubernetes would refuse get a derived label, unknown keys are ignored. Each
//! leniency is a located warning, never silence, and none grants more than the file says:
//! `disallowedTools` and `permissionMode: plan` are honoured, and `settings.json`, which
//! holds the deny rules and hooks, stays as strict as Proto's own YAML kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::diag::{Diagnostic, Pos, did_you_mean};
use super::kinds::AgentSpec;
use super::schema::{Kind, Metadata};
use super::tree::FileTree;
use super::yaml::{self, Node, Value};
use super::{Origin, Resource, Spec};

mod names;
mod recover;
mod settle;
mod tools;

pub use names::{COLOR, ORIGINAL_NAME, dns_label, is_skill_name, mcp_server_name};
use recover::{first_paragraph, quote_colon_values};
pub use settle::settle;
pub use tools::{Dropped, normalize_tools, split_commas, split_tools, subtract_tools};
use tools::{ToolsFormat, dropped_tool};

/// Tools Proto provides, by the names agents list them with.
pub const TOOLS: [&str; 12] = [
    "Bash", "Read", "Write", "Edit", "Glob", "Grep", "Git", "Python", "Planning", "Delegate",
    "Computer", "Remember",
];

/// Claude Code tool names that map onto a Proto tool.
pub const TOOL_ALIASES: [(&str, &str); 12] = [
    ("Task", "Delegate"),
    ("Agent", "Delegate"),
    ("TodoWrite", "Planning"),
    ("TodoRead", "Planning"),
    // Claude Code's task list, which replaced TodoWrite, is what Planning keeps.
    ("TaskCreate", "Planning"),
    ("TaskUpdate", "Planning"),
    ("TaskList", "Planning"),
    ("TaskGet", "Planning"),
    ("MultiEdit", "Edit"),
    ("NotebookEdit", "Edit"),
    ("NotebookRead", "Read"),
    ("LS", "Glob"),
];

/// Claude Code tools Proto does not offer; agents listing them still load, without them.
pub const UNSUPPORTED_TOOLS: [&str; 19] = [
    "WebFetch",
    "WebSearch",
    "BashOutput",
    "KillShell",
    "KillBash",
    "TaskOutput",
    "TaskStop",
    "AskUserQuestion",
    "ExitPlanMode",
    "EnterPlanMode",
    "EnterWorktree",
    "SendMessage",
    "TeamCreate",
    "TeamDelete",
    "SlashCommand",
    "ToolSearch",
    "LSP",
    "ListMcpResourcesTool",
    "ReadMcpResourceTool",
];

/// The tool that loads a skill's instructions; an agent may name it, and holds it anyway
/// when it holds skills.
pub const SKILL_TOOL: &str = "Skill";

/// Hook events, with Claude Code's names.
pub const HOOK_EVENTS: [&str; 18] = [
    "Setup",
    "InstructionsLoaded",
    "TaskCompleted",
    "TeammateIdle",
    "ConfigChange",
    "WorktreeCreate",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "PermissionRequest",
    "Notification",
    "UserPromptSubmit",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "SessionStart",
    "SessionEnd",
];

/// Imports in memory files are followed this many hops deep: Claude Code's documented limit
/// ("imported files can recursively import additional files, with a maximum depth of 5 hops").
pub const MAX_IMPORT_HOPS: usize = 5;

/// The Claude Code files of a company.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaudeFiles {
    pub skills: Vec<Skill>,
    pub rules: Vec<Rule>,
    pub settings: Option<Settings>,
    pub mcp_servers: Vec<McpServer>,
    pub memory: Vec<Memory>,
    /// Files skipped, each reported with a warning: unreadable ones, and subagents or
    /// skills declaring a name an earlier file has.
    pub skipped: Vec<Skipped>,
}

impl ClaudeFiles {
    /// The memory that applies everywhere (the root `CLAUDE.md`, `.claude/CLAUDE.md`).
    pub fn global_memory(&self) -> impl Iterator<Item = &Memory> {
        self.memory.iter().filter(|m| m.scope.is_empty())
    }

    /// The memory for work on `path` (a file or folder of the company repository): the
    /// global memory and every nested `CLAUDE.md` of a folder holding `path`, outermost
    /// first, as Claude Code loads a subtree's `CLAUDE.md` when it works there.
    pub fn memory_for<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Memory> {
        let mut scoped: Vec<&Memory> = self
            .memory
            .iter()
            .filter(|m| {
                m.scope.is_empty()
                    || path == m.scope
                    || path
                        .strip_prefix(m.scope.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .collect();
        scoped.sort_by_key(|m| m.scope.matches('/').count() + usize::from(!m.scope.is_empty()));
        scoped.into_iter()
    }
}

/// A Claude Code file Proto skipped, as Claude Code skips a file it cannot read.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    pub file: String,
    pub role: Role,
    /// The agent the file would have declared (its file's stem when even the name could
    /// not be read), to explain a reference to it.
    pub name: Option<String>,
}

/// A skill: instructions an agent activates when its description matches the task.
#[derive(Clone, Debug, PartialEq)]
pub struct Skill {
    pub name: String,
    pub description: String,
    pub allowed_tools: Vec<String>,
    pub body: String,
    pub file: String,
    /// Where `name` and `allowed-tools` are written (or the frontmatter, without them), for
    /// what is found once every file is read.
    pub name_pos: Pos,
    pub tools_pos: Pos,
}

impl Skill {
    /// The folder the skill lives in (`.claude/skills/<folder>/SKILL.md`).
    pub fn folder(&self) -> &str {
        self.file.split('/').nth(2).unwrap_or_default()
    }

    /// Whether a reference (an agent's `skills` entry) names this skill: by its name, or by
    /// its folder when the two differ.
    pub fn answers_to(&self, reference: &str) -> bool {
        self.name == reference || self.folder() == reference
    }
}

/// A rule: standing instructions, optionally limited to some paths.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub paths: Vec<String>,
    pub body: String,
    pub file: String,
}

/// `.claude/settings.json`: the parts Proto acts on.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub hooks: BTreeMap<String, Vec<HookMatcher>>,
    #[serde(skip)]
    pub file: String,
}

/// Permission rules in Claude Code syntax: `Tool` or `Tool(specifier)`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub ask: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub default_mode: Option<String>,
}

/// Hooks that run for tool names matching `matcher` (a regex; empty or `*` for all).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookMatcher {
    #[serde(default)]
    pub matcher: Option<String>,
    pub hooks: Vec<Hook>,
}

/// One hook command.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Proto's addition: a hook that crashes or times out blocks instead of allowing.
    #[serde(default)]
    pub fail_closed: bool,
}

/// An MCP server from `.mcp.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServer {
    pub name: String,
    pub transport: McpTransport,
    pub file: String,
}

/// How to reach an MCP server.
#[derive(Clone, Debug, PartialEq)]
pub enum McpTransport {
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

/// A memory file with its imports followed.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    pub file: String,
    /// The file's own text.
    pub text: String,
    /// Files imported, directly or transitively, in the order they are read.
    pub imports: Vec<String>,
    /// The text with every import appended, as an agent's context receives it.
    pub expanded: String,
    /// The folder it applies to: `""` for the root `CLAUDE.md` (everywhere), else the
    /// folder holding a nested one, which is memory only for work under that folder.
    pub scope: String,
}

/// The folder a memory file applies to (see [`Memory::scope`]): `""` for `CLAUDE.md` and
/// `.claude/CLAUDE.md` at the root.
pub fn memory_scope(path: &str) -> String {
    let folder = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    if folder == ".claude" { "" } else { folder }.to_string()
}

/// What a path is to the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Agent,
    Skill,
    Rule,
    Settings,
    Mcp,
    Memory,
}

/// Which Claude Code file `path` is, if any.
pub fn role_of(path: &str) -> Option<Role> {
    let file = path.rsplit('/').next().unwrap_or(path);
    if let Some(rest) = path.strip_prefix(".claude/") {
        if rest.starts_with("agents/") && rest.ends_with(".md") {
            return Some(Role::Agent);
        }
        if rest.starts_with("skills/")
            && rest.ends_with("/SKILL.md")
            && rest.matches('/').count() == 2
        {
            return Some(Role::Skill);
        }
        if rest.starts_with("rules/") && rest.ends_with(".md") {
            return Some(Role::Rule);
        }
        if rest == "settings.json" {
            return Some(Role::Settings);
        }
    }
    if path == ".mcp.json" {
        return Some(Role::Mcp);
    }
    (file == "CLAUDE.md").then_some(Role::Memory)
}

/// Loads one Claude Code file into `spec`. A subagent, skill, rule or `.mcp.json` that
/// cannot be read is skipped, as Claude Code skips it: its problems are reported as warnings
/// and the rest of the company loads. `settings.json` stays strict: it holds the deny rules
/// and hooks that restrain agents, and loading without it would allow more than it says.
pub fn load_file(
    role: Role,
    path: &str,
    text: &str,
    tree: &dyn FileTree,
    spec: &mut Spec,
    diags: &mut Vec<Diagnostic>,
) {
    let mut found = Vec::new();
    let loaded = match role {
        Role::Settings => {
            spec.claude.settings = load_settings(path, text, diags);
            return;
        }
        Role::Memory => {
            spec.claude
                .memory
                .push(load_memory(path, text, tree, diags));
            return;
        }
        Role::Agent => match load_agent(path, text, &mut found) {
            Ok(agent) => {
                spec.agents.push(Arc::new(agent));
                Ok(())
            }
            Err(name) => Err(name),
        },
        Role::Skill => match load_skill(path, text, &mut found) {
            Some(skill) => {
                spec.claude.skills.push(skill);
                Ok(())
            }
            None => Err(None),
        },
        Role::Rule => match load_rule(path, text, &mut found) {
            Some(rule) => {
                spec.claude.rules.push(rule);
                Ok(())
            }
            None => Err(None),
        },
        Role::Mcp => match load_mcp(path, text, &mut found) {
            Some(servers) => {
                spec.claude.mcp_servers.extend(servers);
                Ok(())
            }
            None => Err(None),
        },
    };
    let skipped = loaded.is_err();
    for mut d in found {
        if d.is_error() {
            // Claude Code does not refuse a company over one of its files; neither does Proto.
            d.severity = super::diag::Severity::Warning;
            if skipped {
                d.message.push_str("; file skipped");
            } else {
                d.message.push_str("; ignored");
            }
        }
        diags.push(d);
    }
    if let Err(name) = loaded {
        if !diags
            .iter()
            .any(|d| d.file.as_path() == std::path::Path::new(path))
        {
            diags.push(Diagnostic::warning(path, Pos::default(), "file skipped"));
        }
        spec.claude.skipped.push(Skipped {
            file: path.to_string(),
            role,
            name,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Frontmatter
// ---------------------------------------------------------------------------------------------

/// Splits `---\n<yaml>\n---\n<body>` into the YAML and the body (a byte-order mark
/// first is skipped; the opening `---` may be followed by spaces, as Claude Code's
/// `^---\s*\n` allows); the message says what is missing.
fn split_frontmatter(text: &str) -> Result<(&str, &str), &'static str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let opening = text.find('\n').map(|end| text.split_at(end + 1));
    let rest = match opening {
        Some((first, rest)) if first.trim_end() == "---" => rest,
        _ => return Err("missing frontmatter"),
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Ok((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    Err("frontmatter is not closed by a --- line")
}

/// The frontmatter as the YAML it was read from (quoted as [`frontmatter`] quoted it), for
/// diagnostics that point at its fields later.
fn frontmatter_source(text: &str) -> std::sync::Arc<super::Source> {
    let yaml_text = split_frontmatter(text).map_or("", |(y, _)| y);
    match yaml::parse_one(yaml_text) {
        Err(_) => match quote_colon_values(yaml_text) {
            Some(quoted) => super::Source::new(&quoted, 1),
            None => super::Source::new(yaml_text, 1),
        },
        Ok(_) => super::Source::new(yaml_text, 1),
    }
}

/// Splits `---\n<yaml>\n---\n<body>`; the frontmatter's positions are made file-relative.
fn frontmatter(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<(Node, String)> {
    let (yaml_text, body) = match split_frontmatter(text) {
        Ok(parts) => parts,
        Err(message) => {
            let diag = Diagnostic::error(path, Pos::new(1, 1), message);
            diags.push(if message == "missing frontmatter" {
                diag.hint(Some(
                    "start the file with a --- line, then name: and description:, then ---".into(),
                ))
            } else {
                diag
            });
            return None;
        }
    };
    let parsed = match yaml::parse_one(yaml_text) {
        Ok(node) => Ok(node),
        Err(e) => match quote_colon_values(yaml_text).map(|t| yaml::parse_one(&t)) {
            Some(Ok(node)) => {
                diags.push(
                    Diagnostic::warning(
                        path,
                        Pos::new(e.pos.line + 1, e.pos.col),
                        format!(
                            "invalid YAML: {}; read with the value quoted, as Claude Code reads it",
                            e.message
                        ),
                    )
                    .hint(Some("put the value in double quotes".into())),
                );
                Ok(node)
            }
            _ => Err(e),
        },
    };
    match parsed {
        Ok(mut node) => {
            node.shift_lines(1);
            if !matches!(node.value, Value::Map(_)) {
                diags.push(Diagnostic::error(
                    path,
                    node.pos,
                    format!("frontmatter must be a mapping, found {}", node.type_name()),
                ));
                return None;
            }
            Some((node, body.trim_start_matches(['\r', '\n']).to_string()))
        }
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                Pos::new(e.pos.line + 1, e.pos.col),
                format!("invalid YAML: {}", e.message),
            ));
            None
        }
    }
}

/// Typed access to frontmatter fields, reporting problems as it goes.
struct Fields<'a> {
    path: &'a str,
    node: &'a Node,
    resource: String,
    diags: &'a mut Vec<Diagnostic>,
}

impl Fields<'_> {
    fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        self.diags.push(
            Diagnostic::error(self.path, pos, message)
                .resource(self.resource.clone())
                .field(field),
        );
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.node.get(key) {
            None
            | Some(Node {
                value: Value::Null, ..
            }) => {
                if required {
                    let pos = self.node.pos;
                    self.error(pos, key, "missing required field");
                }
                None
            }
            Some(Node {
                value: Value::Str(s),
                ..
            }) => Some(s.clone()),
            Some(
                n @ Node {
                    value: Value::Number(_) | Value::Bool(_),
                    ..
                },
            ) => Some(n.scalar_text()),
            Some(n) => {
                let (pos, found) = (n.pos, n.type_name());
                self.error(pos, key, format!("expected a string, found {found}"));
                None
            }
        }
    }

    fn number(&mut self, key: &str) -> Option<u32> {
        let n = self.node.get(key)?;
        let pos = n.pos;
        match &n.value {
            Value::Number(text) if yaml::is_integer_text(text) => {
                match n.as_i64().and_then(|i| u32::try_from(i).ok()) {
                    Some(v) => Some(v),
                    None => {
                        self.error(pos, key, format!("{text} is out of range 0..={}", u32::MAX));
                        None
                    }
                }
            }
            _ => {
                let found = n.type_name();
                self.error(pos, key, format!("expected an integer, found {found}"));
                None
            }
        }
    }

    /// A list written either as YAML or as Claude Code's comma-separated string.
    fn list(&mut self, key: &str) -> Option<Vec<String>> {
        match self.node.get(key) {
            None
            | Some(Node {
                value: Value::Null, ..
            }) => None,
            Some(Node {
                value: Value::Str(s),
                ..
            }) => Some(split_commas(s)),
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => {
                            let (pos, found) = (item.pos, item.type_name());
                            self.error(pos, key, format!("expected a string, found {found}"));
                        }
                    }
                }
                Some(out)
            }
            Some(n) => {
                let (pos, found) = (n.pos, n.type_name());
                self.error(
                    pos,
                    key,
                    format!("expected a comma-separated string or a list, found {found}"),
                );
                None
            }
        }
    }

    /// A tools list: a YAML list, or a string of entries separated as `format` says. `Err` when the field is there but unreadable: the caller must not
    /// fall back to "every tool" then.
    fn tool_list(&mut self, key: &str, format: ToolsFormat) -> Result<Option<Vec<String>>, ()> {
        let split = |s: &str| match format {
            ToolsFormat::Commas => split_commas(s),
            ToolsFormat::CommasOrSpaces => split_tools(s),
        };
        match self.node.get(key) {
            None
            | Some(Node {
                value: Value::Null, ..
            }) => Ok(None),
            Some(Node {
                value: Value::Str(s),
                ..
            }) => Ok(Some(split(s))),
            Some(Node {
                value: Value::Seq(items),
                ..
            }) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(s) => out.extend(split(s)),
                        None => {
                            let (pos, found) = (item.pos, item.type_name());
                            self.error(pos, key, format!("expected a string, found {found}"));
                            return Err(());
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(n) => {
                let (pos, found) = (n.pos, n.type_name());
                self.error(
                    pos,
                    key,
                    format!("expected a list of tools or a string of them, found {found}"),
                );
                Err(())
            }
        }
    }

    /// Warns about Claude Code keys Proto has no use for, so that nothing is ignored silently.
    fn warn_unsupported(&mut self, keys: &[(&str, &str)]) {
        for (key, why) in keys {
            if let Some(k) = self.node.key(key) {
                self.diags.push(
                    Diagnostic::warning(self.path, k.pos, "not supported by Proto; ignored")
                        .resource(self.resource.clone())
                        .field(*key)
                        .hint(Some(why.to_string())),
                );
            }
        }
    }

    /// Warns about keys neither Proto nor Claude Code knows.
    fn warn_unknown(&mut self, known: &[&str]) {
        if let Value::Map(entries) = &self.node.value {
            for (key, _) in entries {
                let name = key.scalar_text();
                if !known.contains(&name.as_str()) {
                    self.diags.push(
                        Diagnostic::warning(self.path, key.pos, "unknown frontmatter key; ignored")
                            .resource(self.resource.clone())
                            .field(name.clone())
                            .hint(did_you_mean(&name, known.iter().copied())),
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

const AGENT_KEYS: [&str; 19] = [
    "name",
    "description",
    "tools",
    "model",
    "color",
    "disallowedTools",
    "permissionMode",
    "skills",
    "hooks",
    "mcpServers",
    "memory",
    "background",
    "isolation",
    "effort",
    "title",
    "department",
    "reportsTo",
    "thinking",
    "maxTurns",
];

/// Claude Code subagent keys Proto does not act on, with what the user should know.
const AGENT_UNSUPPORTED: [(&str, &str); 6] = [
    (
        "hooks",
        "hooks scoped to one subagent; put them in .claude/settings.json to have them run",
    ),
    (
        "mcpServers",
        "servers scoped to one subagent; declare them in .mcp.json and list mcp__<server> in tools",
    ),
    (
        "memory",
        "Proto keeps what agents learn in .proto/knowledge",
    ),
    ("background", "Proto runs every task in the background"),
    ("isolation", "every task already works in its own workspace"),
    ("effort", "use thinking: <tokens> for a thinking budget"),
];

/// Read-only tools: what `permissionMode: plan` leaves an agent.
const PLAN_MODE_TOOLS: [&str; 4] = ["Read", "Glob", "Grep", "Planning"];

/// The agent, or `Err` with the name it would have had (if known) when the file is broken.
fn load_agent(
    path: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Resource<AgentSpec>, Option<String>> {
    let stem = path
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".md");
    let Some((node, body)) = frontmatter(path, text, diags) else {
        // Its name is unknown; the file's stem is usually it, and serves to explain a
        // reference to the agent.
        return Err(Some(stem.to_string()));
    };
    let written = node.get("name").and_then(Node::as_str).map(str::to_string);
    let name_guess = written
        .as_deref()
        .map_or_else(|| stem.to_string(), dns_label);
    let mut f = Fields {
        path,
        node: &node,
        resource: format!("Agent/{name_guess}"),
        diags,
    };
    f.warn_unknown(&AGENT_KEYS);
    f.warn_unsupported(&AGENT_UNSUPPORTED);
    let name = f.string("name", true);
    let description = f.string("description", true);
    let tools = f.tool_list("tools", ToolsFormat::Commas);
    let disallowed = f.tool_list("disallowedTools", ToolsFormat::Commas);
    let model = f.string("model", false).filter(|m| m != "inherit");
    let permission_mode = f.string("permissionMode", false);
    let color = f.string("color", false);
    let skills = f.list("skills").unwrap_or_default();
    let title = f.string("title", false);
    let department = f.string("department", false);
    let reports_to = f.string("reportsTo", false);
    let thinking = f.number("thinking");
    let max_turns = f.number("maxTurns");
    let (Some(written), Some(description)) = (name, description) else {
        return Err(Some(name_guess));
    };
    // An unreadable tools line must not turn into "every tool".
    let (Ok(tools), Ok(disallowed)) = (tools, disallowed) else {
        return Err(Some(name_guess));
    };
    let name = dns_label(&written);
    let title = title.unwrap_or_else(|| title_case(&written));
    let resource = format!("Agent/{name}");
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(color) = color {
        annotations.insert(COLOR.to_string(), color);
    }
    if name != written {
        let pos = node.get("name").map_or(node.pos, |n| n.pos);
        diags.push(
            Diagnostic::warning(
                path,
                pos,
                format!(
                    "\"{written}\" is not a DNS label (lower-case letters, digits and '-', at most 63 characters), which Proto's names must be; loaded as \"{name}\""
                ),
            )
            .resource(resource.clone())
            .field("name")
            .hint(Some(format!(
                "write name: {name}; references to \"{written}\" still resolve"
            ))),
        );
        annotations.insert(ORIGINAL_NAME.to_string(), written);
    }
    let tools_pos = node.get("tools").map_or(node.pos, |n| n.pos);
    // Claude Code gives a subagent with no `tools` line every tool.
    let tools = tools.unwrap_or_else(|| TOOLS.iter().map(|t| t.to_string()).collect());
    let mut tools = normalize_tools(tools, &mut |t, why| {
        diags.push(dropped_tool(path, tools_pos, &resource, "tools", t, why));
    });
    if let Some(disallowed) = disallowed {
        let pos = node.get("disallowedTools").map_or(node.pos, |n| n.pos);
        let disallowed = normalize_tools(disallowed, &mut |t, why| {
            if why == Dropped::Unknown {
                diags.push(dropped_tool(
                    path,
                    pos,
                    &resource,
                    "disallowedTools",
                    t,
                    why,
                ));
            }
        });
        // Each tool taken away whole is said once, whatever the number of limits naming it.
        let mut held: std::collections::HashSet<&str> = tools
            .iter()
            .map(|t| t.split('(').next().unwrap_or(t))
            .collect();
        for limited in disallowed.iter().filter(|d| d.contains('(')) {
            let base = limited.split('(').next().unwrap_or(limited);
            if held.remove(base) {
                diags.push(
                    Diagnostic::warning(
                        path,
                        pos,
                        format!(
                            "\"{limited}\" takes away all of {base}: a tools list cannot grant a tool but some of its uses"
                        ),
                    )
                    .resource(resource.clone())
                    .field("disallowedTools")
                    .hint(Some(format!(
                        "to allow {base} but not these uses, keep it in tools and put the rule in .claude/settings.json permissions.deny"
                    ))),
                );
            }
        }
        tools = subtract_tools(tools, &disallowed);
    }
    match permission_mode.as_deref() {
        None => {}
        Some("plan") => {
            // Plan mode only reads and plans; ignoring it would grant more than the file does.
            tools.retain(|t| {
                let base = t.split('(').next().unwrap_or(t);
                PLAN_MODE_TOOLS.contains(&base)
            });
            let pos = node.get("permissionMode").map_or(node.pos, |n| n.pos);
            diags.push(
                Diagnostic::warning(
                    path,
                    pos,
                    "plan mode: the agent keeps only its read-only tools (Read, Glob, Grep, Planning)",
                )
                .resource(resource.clone())
                .field("permissionMode"),
            );
        }
        Some(mode) => {
            let pos = node.get("permissionMode").map_or(node.pos, |n| n.pos);
            diags.push(
                Diagnostic::warning(
                    path,
                    pos,
                    format!("permission mode \"{mode}\" is not supported by Proto; ignored"),
                )
                .resource(resource.clone())
                .field("permissionMode")
                .hint(Some(
                    "every action follows .claude/settings.json and the approval gates".into(),
                )),
            );
        }
    }
    Ok(Resource {
        kind: Kind::Agent,
        metadata: Metadata {
            name,
            annotations,
            ..Metadata::default()
        },
        spec: AgentSpec {
            title,
            department,
            reports_to,
            description,
            model,
            thinking,
            tools,
            skills,
            max_turns,
            prompt: body,
        },
        origin: Origin {
            file: path.to_string(),
            pos: node.pos,
            source: frontmatter_source(text),
            doc: 0,
            flat: true,
        },
    })
}

/// `code-reviewer` → `Code Reviewer`.
fn title_case(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|first| first.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Skills and rules
// ---------------------------------------------------------------------------------------------

/// Skill keys of the Agent Skills specification and of Claude Code.
const SKILL_KEYS: [&str; 13] = [
    "name",
    "description",
    "allowed-tools",
    "license",
    "compatibility",
    "metadata",
    "model",
    "argument-hint",
    "disable-model-invocation",
    "user-invocable",
    "context",
    "agent",
    "hooks",
];

/// Claude Code skill keys Proto does not act on (`license`, `compatibility` and `metadata`
/// are descriptive, and need nothing).
const SKILL_UNSUPPORTED: [(&str, &str); 7] = [
    (
        "model",
        "a skill runs on the model of the agent that uses it",
    ),
    ("argument-hint", "for Claude Code's slash-command menu"),
    (
        "disable-model-invocation",
        "Proto has no one to start a skill by hand; agents activate skills by their description",
    ),
    ("user-invocable", "for Claude Code's slash-command menu"),
    (
        "context",
        "a skill runs in the session of the agent that uses it",
    ),
    (
        "agent",
        "a skill runs in the session of the agent that uses it",
    ),
    (
        "hooks",
        "hooks scoped to one skill; put them in .claude/settings.json to have them run",
    ),
];

fn load_skill(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Skill> {
    let folder = path.split('/').nth(2).unwrap_or_default().to_string();
    // Claude Code loads a SKILL.md without frontmatter too: named after its folder, described
    // by its first paragraph. (A subagent without one is skipped, there as here.)
    let (node, body) = match split_frontmatter(text) {
        Err("missing frontmatter") => {
            diags.push(
                Diagnostic::warning(
                    path,
                    Pos::new(1, 1),
                    format!(
                        "no frontmatter; loaded as skill \"{folder}\", as Claude Code loads it"
                    ),
                )
                .resource(format!("Skill/{folder}"))
                .hint(Some(format!(
                    "start the file with a --- line, then name: {folder} and description:, then ---"
                ))),
            );
            let node = yaml::parse_one("{}").ok()?;
            let body = text.strip_prefix('\u{feff}').unwrap_or(text);
            (node, body.to_string())
        }
        _ => frontmatter(path, text, diags)?,
    };
    let mut f = Fields {
        path,
        node: &node,
        resource: format!("Skill/{folder}"),
        diags,
    };
    f.warn_unknown(&SKILL_KEYS);
    f.warn_unsupported(&SKILL_UNSUPPORTED);
    // Claude Code names a skill after its folder when the frontmatter does not.
    let name = f.string("name", false).unwrap_or_else(|| folder.clone());
    let description = f.string("description", false);
    let allowed_tools = f.tool_list("allowed-tools", ToolsFormat::CommasOrSpaces);
    let resource = format!("Skill/{name}");
    let name_pos = node.get("name").map_or(node.pos, |n| n.pos);
    let description = match description {
        Some(d) => d,
        None => {
            let Some(d) = first_paragraph(&body) else {
                diags.push(
                    Diagnostic::error(
                        path,
                        node.pos,
                        "no description, and no paragraph in the body to take it from",
                    )
                    .resource(resource)
                    .field("description"),
                );
                return None;
            };
            diags.push(
                Diagnostic::warning(
                    path,
                    node.pos,
                    "no description; the first paragraph of the body is used, as Claude Code does",
                )
                .resource(resource.clone())
                .field("description"),
            );
            d
        }
    };
    // Claude Code loads these; the Agent Skills specification asks for a name that is the
    // folder's and lower-case. Agents refer to the skill by its name (its folder works too).
    if !is_skill_name(&name) {
        let label = dns_label(&name);
        diags.push(
            Diagnostic::warning(
                path,
                name_pos,
                format!(
                    "name \"{name}\" is not lower-case letters, digits and hyphens (the Agent Skills rule); loaded as written"
                ),
            )
            .resource(resource.clone())
            .field("name")
            .hint(Some(format!("write name: {label} and name the folder {label}"))),
        );
    } else if name != folder {
        diags.push(
            Diagnostic::warning(
                path,
                name_pos,
                format!(
                    "name \"{name}\" differs from its folder \"{folder}\"; loaded as \"{name}\""
                ),
            )
            .resource(resource.clone())
            .field("name")
            .hint(Some(format!(
                "rename the folder to {name}, or write name: {folder}"
            ))),
        );
    }
    // An unreadable allowed-tools line must not be read as "no restriction".
    let allowed_tools = allowed_tools.ok()?.unwrap_or_default();
    let tools_pos = node.key("allowed-tools").map_or(node.pos, |n| n.pos);
    let allowed_tools = normalize_tools(allowed_tools, &mut |t, why| {
        diags.push(dropped_tool(
            path,
            tools_pos,
            &resource,
            "allowed-tools",
            t,
            why,
        ));
    });
    Some(Skill {
        name,
        description,
        allowed_tools,
        body,
        file: path.to_string(),
        name_pos,
        tools_pos,
    })
}

/// A rule file (`.claude/rules/<name>.md`, optional frontmatter with `paths`).
pub fn load_rule(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Rule> {
    let name = path
        .strip_prefix(".claude/rules/")
        .unwrap_or(path)
        .trim_end_matches(".md")
        .to_string();
    let has_frontmatter = text.starts_with("---\n") || text.starts_with("---\r\n");
    let (paths, body) = if has_frontmatter {
        let (node, body) = frontmatter(path, text, diags)?;
        let mut f = Fields {
            path,
            node: &node,
            resource: format!("Rule/{name}"),
            diags,
        };
        f.warn_unknown(&["paths", "description"]);
        let written = node
            .get("paths")
            .is_some_and(|n| !matches!(n.value, Value::Null));
        // Unreadable paths must not make a scoped rule apply everywhere.
        let paths = match f.list("paths") {
            Some(paths) => paths,
            None if written => return None,
            None => Vec::new(),
        };
        (paths, body)
    } else {
        (Vec::new(), text.to_string())
    };
    Some(Rule {
        name,
        paths,
        body,
        file: path.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// settings.json and .mcp.json
// ---------------------------------------------------------------------------------------------

/// Position of the first occurrence of `"key"` in a JSON text: serde_json keeps no positions
/// after parsing, and pointing near the problem beats pointing at line 1.
fn json_pos(text: &str, key: &str) -> Pos {
    // One pass over the text for all the look-ups of a file (see `json_pos`).
    super::json_pos::locate(text, key)
}

/// Where `key` first appears after `after`: a field of the object that starts there.
fn json_pos_after(text: &str, key: &str, after: Pos) -> Pos {
    super::json_pos::locate_after(text, key, after)
}

fn json_error(path: &str, e: &serde_json::Error) -> Diagnostic {
    let pos = Pos::new(
        u32::try_from(e.line()).unwrap_or(u32::MAX),
        u32::try_from(e.column().max(1)).unwrap_or(u32::MAX),
    );
    let message = e.to_string();
    let message = message
        .find(" at line ")
        .map_or(message.as_str(), |i| &message[..i]);
    let message = if message.starts_with("EOF while parsing") {
        "unexpected end of file (a bracket or brace is not closed)"
    } else {
        message
    };
    Diagnostic::error(path, pos, format!("invalid JSON: {message}"))
}

/// `Tool` or `Tool(specifier)`.
pub fn parse_permission_rule(rule: &str) -> Result<(&str, Option<&str>), String> {
    let (tool, spec) = match rule.find('(') {
        Some(open) => {
            let Some(inner) = rule[open + 1..].strip_suffix(')') else {
                return Err("unbalanced parenthesis; expected Tool(specifier)".into());
            };
            (&rule[..open], Some(inner))
        }
        None => (rule, None),
    };
    // MCP server names may hold hyphens (`mcp__computer-use__click`) and rules may end in a
    // wildcard (`mcp__github__*`); other tool names hold neither.
    let mcp = tool.starts_with("mcp__");
    if tool.is_empty()
        || !tool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (mcp && (c == '-' || c == '*')))
    {
        return Err("expected a tool name such as Bash or Bash(git push *)".into());
    }
    Ok((tool, spec))
}

/// Whether a tool name is one an agent or a rule may name.
pub fn is_known_tool(tool: &str) -> bool {
    TOOLS.contains(&tool)
        || tool == SKILL_TOOL
        || TOOL_ALIASES.iter().any(|(a, _)| *a == tool)
        || UNSUPPORTED_TOOLS.contains(&tool)
        || tool.starts_with("mcp__")
}

fn load_settings(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Settings> {
    let mut settings: Settings = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            diags.push(json_error(path, &e));
            return None;
        }
    };
    settings.file = path.to_string();
    for (list, rules) in [
        ("allow", &settings.permissions.allow),
        ("ask", &settings.permissions.ask),
        ("deny", &settings.permissions.deny),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            let field = format!("permissions.{list}[{i}]");
            match parse_permission_rule(rule) {
                Err(message) => {
                    diags.push(Diagnostic::error(path, json_pos(text, rule), message).field(field))
                }
                // Claude Code matches a rule against the tools it has: a rule for another
                // tool never matches anything, there as here.
                Ok((tool, _)) if !is_known_tool(tool) => diags.push(
                    Diagnostic::warning(
                        path,
                        json_pos(text, rule),
                        format!("unknown tool \"{tool}\"; the rule never matches"),
                    )
                    .field(field)
                    .hint(did_you_mean(tool, TOOLS)),
                ),
                Ok(_) => {}
            }
        }
    }
    for (event, matchers) in &settings.hooks {
        if !HOOK_EVENTS.contains(&event.as_str()) {
            // Claude Code adds events over time: an unknown one is noted, never fatal.
            diags.push(
                Diagnostic::warning(
                    path,
                    json_pos(text, event),
                    format!("unknown hook event \"{event}\"; its hooks never run"),
                )
                .field(format!("hooks.{event}"))
                .hint(did_you_mean(event, HOOK_EVENTS)),
            );
        }
        for (i, matcher) in matchers.iter().enumerate() {
            for (j, hook) in matcher.hooks.iter().enumerate() {
                let field = format!("hooks.{event}[{i}].hooks[{j}]");
                let filled =
                    |v: &Option<String>| v.as_deref().is_some_and(|c| !c.trim().is_empty());
                let needs = match hook.kind.as_str() {
                    "command" => (!filled(&hook.command)).then_some("command"),
                    "prompt" | "agent" => (!filled(&hook.prompt)).then_some("prompt"),
                    "http" => (!hook
                        .url
                        .as_deref()
                        .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://")))
                    .then_some("url"),
                    other => {
                        diags.push(
                            Diagnostic::error(
                                path,
                                json_pos(text, other),
                                format!("unknown hook type \"{other}\""),
                            )
                            .field(format!("{field}.type"))
                            .hint(Some("expected command, prompt, agent or http".into())),
                        );
                        None
                    }
                };
                if let Some(missing) = needs {
                    diags.push(
                        Diagnostic::error(
                            path,
                            json_pos(text, event),
                            format!("a \"{}\" hook needs a non-empty \"{missing}\"", hook.kind),
                        )
                        .field(field),
                    );
                }
            }
        }
    }
    Some(settings)
}

const MCP_KEYS: [&str; 7] = ["type", "command", "args", "env", "url", "headers", "cwd"];

/// The servers of a `.mcp.json`; `None` when the file cannot be read at all. A server entry
/// Proto cannot use is skipped with a warning, as Claude Code starts the others.
fn load_mcp(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Vec<McpServer>> {
    use serde_json::Value as J;
    let file: J = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            diags.push(json_error(path, &e));
            return None;
        }
    };
    let Some(servers) = file.get("mcpServers") else {
        return Some(Vec::new());
    };
    let Some(servers) = servers.as_object() else {
        diags.push(
            Diagnostic::error(
                path,
                json_pos(text, "mcpServers"),
                "expected an object of servers",
            )
            .field("mcpServers"),
        );
        return None;
    };
    let mut out: Vec<McpServer> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (name, entry) in servers {
        let field = format!("mcpServers.{name}");
        let pos = json_pos_after(text, name, json_pos(text, "mcpServers"));
        let skip = |diags: &mut Vec<Diagnostic>,
                    pos: Pos,
                    field: String,
                    message: String,
                    hint: Option<String>| {
            diags.push(
                Diagnostic::warning(path, pos, format!("{message}; server skipped"))
                    .field(field)
                    .hint(hint),
            );
        };
        let Some(obj) = entry.as_object() else {
            skip(
                diags,
                pos,
                field,
                "expected an object with command or url".into(),
                None,
            );
            continue;
        };
        for key in obj.keys() {
            if !MCP_KEYS.contains(&key.as_str()) {
                // Claude Code ignores keys it does not use (`description`, `enabled`, ...).
                diags.push(
                    Diagnostic::warning(
                        path,
                        json_pos_after(text, key, pos),
                        "unknown field; ignored",
                    )
                    .field(format!("{field}.{key}"))
                    .hint(
                        did_you_mean(key, MCP_KEYS)
                            .or_else(|| Some(format!("expected one of {}", MCP_KEYS.join(", ")))),
                    ),
                );
            }
        }
        let string = |key: &str| obj.get(key).and_then(J::as_str).map(String::from);
        let strings = |key: &str| -> Option<Vec<String>> {
            match obj.get(key) {
                None => Some(Vec::new()),
                Some(J::Array(items)) => {
                    items.iter().map(|i| i.as_str().map(String::from)).collect()
                }
                Some(_) => None,
            }
        };
        let map = |key: &str| -> Option<BTreeMap<String, String>> {
            match obj.get(key) {
                None => Some(BTreeMap::new()),
                Some(J::Object(m)) => m
                    .iter()
                    .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect(),
                Some(_) => None,
            }
        };
        let (Some(args), Some(env), Some(headers)) = (strings("args"), map("env"), map("headers"))
        else {
            skip(
                diags,
                pos,
                field,
                "args must be a list of strings; env and headers objects of strings".into(),
                None,
            );
            continue;
        };
        let kind = string("type");
        let transport = match (kind.as_deref(), string("command"), string("url")) {
            (None | Some("stdio"), Some(command), None) => {
                McpTransport::Stdio { command, args, env }
            }
            (None | Some("http") | Some("sse") | Some("streamable-http"), None, Some(url)) => {
                McpTransport::Http { url, headers }
            }
            (Some(kind), _, _) if !["stdio", "http", "sse", "streamable-http"].contains(&kind) => {
                skip(
                    diags,
                    json_pos_after(text, kind, pos),
                    format!("{field}.type"),
                    format!("unknown transport type \"{kind}\""),
                    Some("expected stdio, http or sse".into()),
                );
                continue;
            }
            _ => {
                skip(
                    diags,
                    pos,
                    field,
                    "exactly one of \"command\" (stdio) or \"url\" (http) is required".into(),
                    None,
                );
                continue;
            }
        };
        let normalized = mcp_server_name(name);
        if normalized.is_empty() {
            skip(diags, pos, field, "the server has no name".into(), None);
            continue;
        }
        if normalized != *name {
            diags.push(
                Diagnostic::warning(
                    path,
                    pos,
                    format!(
                        "server name \"{name}\" is used as \"{normalized}\" in tool names (mcp__{normalized}__<tool>), as Claude Code does"
                    ),
                )
                .field(field.clone()),
            );
        }
        // Hashed: a file of 40,000 servers must not cost 40,000² compares.
        if !names.insert(normalized.clone()) {
            skip(
                diags,
                pos,
                field,
                format!("another server is also named \"{normalized}\" in tool names"),
                None,
            );
            continue;
        }
        out.push(McpServer {
            name: normalized,
            transport,
            file: path.to_string(),
        });
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// `@path` imports in a memory text, with their positions: outside code (fenced blocks,
/// indented blocks and code spans, by CommonMark's rules), at the start of a line or after
/// whitespace (so e-mail addresses are not imports).
pub fn find_imports(text: &str) -> Vec<(Pos, String)> {
    let mut out = Vec::new();
    // An open fence: its character and length; it closes on a run at least as long.
    let mut fence: Option<(char, usize)> = None;
    // An open code span: the length of its backtick run. Spans may continue across lines
    // of a paragraph and end at a blank line.
    let mut span: Option<usize> = None;
    let mut previous_blank = true;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let blank = trimmed.trim().is_empty();
        let run = |c: char| trimmed.chars().take_while(|x| *x == c).count();
        if let Some((c, len)) = fence {
            if indent < 4 && run(c) >= len && trimmed[run(c) * c.len_utf8()..].trim().is_empty() {
                fence = None;
            }
            previous_blank = blank;
            continue;
        }
        if indent < 4 && span.is_none() {
            for c in ['`', '~'] {
                if run(c) >= 3 {
                    fence = Some((c, run(c)));
                }
            }
            if fence.is_some() {
                previous_blank = false;
                continue;
            }
        }
        if blank {
            span = None;
            previous_blank = true;
            continue;
        }
        if (indent >= 4 || line.starts_with('\t')) && previous_blank && span.is_none() {
            // An indented code block: stays "blank-preceded" for its following lines.
            continue;
        }
        previous_blank = false;
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        let mut k = 0;
        while k < chars.len() {
            let (byte, c) = chars[k];
            if c == '`' {
                let len = chars[k..].iter().take_while(|(_, x)| *x == '`').count();
                span = match span {
                    None => Some(len),
                    Some(open) if open == len => None,
                    other => other,
                };
                k += len;
                continue;
            }
            let after_space = k == 0 || chars[k - 1].1.is_whitespace();
            if c == '@' && span.is_none() && after_space {
                let rest = &line[byte + 1..];
                let end = rest
                    .find(|ch: char| ch.is_whitespace() || ch == '`')
                    .unwrap_or(rest.len());
                let target = rest[..end].trim_end_matches([',', ';', ':', ')', '.']);
                if !target.is_empty() {
                    // `k` counts characters already: no recount from the line's start.
                    let col = u32::try_from(k + 1).unwrap_or(u32::MAX);
                    let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    out.push((Pos::new(line_no, col), target.to_string()));
                }
            }
            k += 1;
        }
    }
    out
}

/// Resolves `target` relative to the folder of `from`; `None` when it leaves the tree.
pub fn resolve(from: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.starts_with('~') {
        return None;
    }
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// A memory file with its imports (relative to it, inside `tree`) followed; also used for
/// the memory of a product's repository.
pub fn load_memory(
    path: &str,
    text: &str,
    tree: &dyn FileTree,
    diags: &mut Vec<Diagnostic>,
) -> Memory {
    let mut imports = Vec::new();
    let mut expanded = text.to_string();
    let mut chain = vec![path.to_string()];
    expand(
        path,
        text,
        tree,
        &mut chain,
        &mut imports,
        &mut expanded,
        diags,
    );
    Memory {
        file: path.to_string(),
        text: text.to_string(),
        imports,
        expanded,
        scope: memory_scope(path),
    }
}

fn expand(
    file: &str,
    text: &str,
    tree: &dyn FileTree,
    chain: &mut Vec<String>,
    imports: &mut Vec<String>,
    out: &mut String,
    diags: &mut Vec<Diagnostic>,
) {
    // Each distinct target is looked up once per file, and at most so many of them: a file
    // of a million `@mentions` costs a bounded number of look-ups, not a million.
    let mut tried = std::collections::HashSet::new();
    for (pos, target) in find_imports(text) {
        if !tried.contains(&target) && tried.len() == super::import::MAX_TARGETS_PER_FILE {
            diags.push(
                Diagnostic::warning(
                    file,
                    pos,
                    format!(
                        "more than {} distinct @paths in one file; the rest are read as text",
                        super::import::MAX_TARGETS_PER_FILE
                    ),
                )
                .field(format!("@{target}")),
            );
            break;
        }
        if !tried.insert(target.clone()) {
            continue;
        }
        let Some(resolved) = resolve(file, &target) else {
            diags.extend(super::import::outside(file, pos, &target));
            continue;
        };
        if chain.contains(&resolved) {
            let mut cycle = chain.clone();
            cycle.push(resolved);
            diags.push(
                Diagnostic::warning(
                    file,
                    pos,
                    format!("import loop {}; not followed", cycle.join(" -> ")),
                )
                .field(format!("@{target}")),
            );
            continue;
        }
        if imports.contains(&resolved) {
            continue;
        }
        // Mentions such as `@ceo` that name no file are ordinary text, as in Claude Code;
        // only regular files inside the tree are read, bounded (see `import`).
        let at = (file, pos, target.as_str());
        let Some(content) = super::import::read(tree, at, &resolved, out.len(), diags) else {
            continue;
        };
        if chain.len() > MAX_IMPORT_HOPS {
            diags.push(
                Diagnostic::warning(
                    file,
                    pos,
                    format!("imports nest deeper than {MAX_IMPORT_HOPS} hops; not followed"),
                )
                .field(format!("@{target}")),
            );
            continue;
        }
        imports.push(resolved.clone());
        out.push_str(&format!("\n\n<!-- imported from {resolved} -->\n"));
        out.push_str(&content);
        chain.push(resolved.clone());
        expand(&resolved, &content, tree, chain, imports, out, diags);
        chain.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontmatter_opens_as_claude_code_opens_it() {
        // Claude Code's `^---\s*\n`: spaces after the opening dashes are allowed.
        assert_eq!(
            split_frontmatter("--- \nname: a\n---\nBody\n"),
            Ok(("name: a\n", "Body\n"))
        );
        assert_eq!(
            split_frontmatter("\u{feff}---\r\nname: a\r\n---\r\n"),
            Ok(("name: a\r\n", ""))
        );
        assert_eq!(
            split_frontmatter("---name: a\n---\n"),
            Err("missing frontmatter")
        );
        assert_eq!(split_frontmatter("---"), Err("missing frontmatter"));
        assert_eq!(split_frontmatter("# Title\n"), Err("missing frontmatter"));
    }

    #[test]
    fn imports_skip_code_and_addresses() {
        let text =
            "See @docs/a.md and mail me@example.com.\n`@not/this` @b.md\n```\n@c.md\n```\n@d.md\n";
        let found: Vec<String> = find_imports(text).into_iter().map(|(_, t)| t).collect();
        assert_eq!(found, vec!["docs/a.md", "b.md", "d.md"]);
    }

    #[test]
    fn imports_follow_commonmark_code_rules() {
        let names = |text: &str| -> Vec<String> {
            find_imports(text).into_iter().map(|(_, t)| t).collect()
        };
        assert!(
            names("Use `` @x.md `` literally.\n").is_empty(),
            "double-backtick span"
        );
        assert_eq!(
            names("````\n```\n@x.md\n````\n@y.md\n"),
            vec!["y.md"],
            "fence length"
        );
        assert!(
            names("Example:\n\n    @x.md\n").is_empty(),
            "indented code block"
        );
        assert!(
            names("text `span\n@x.md` more\n").is_empty(),
            "span across lines"
        );
        assert_eq!(
            names("  @a.md\n"),
            vec!["a.md"],
            "a slightly indented import still counts"
        );
    }

    #[test]
    fn relative_resolution_stays_inside_the_tree() {
        assert_eq!(resolve("a/CLAUDE.md", "../b.md").as_deref(), Some("b.md"));
        assert_eq!(resolve("CLAUDE.md", "../b.md"), None);
        assert_eq!(
            resolve("x/CLAUDE.md", "./y/z.md").as_deref(),
            Some("x/y/z.md")
        );
    }

    #[test]
    fn nested_memory_is_scoped_to_its_folder() {
        let memory = |file: &str| Memory {
            file: file.into(),
            text: String::new(),
            imports: Vec::new(),
            expanded: String::new(),
            scope: memory_scope(file),
        };
        let files = ClaudeFiles {
            memory: vec![
                memory("CLAUDE.md"),
                memory("products/api/CLAUDE.md"),
                memory(".claude/CLAUDE.md"),
                memory(".claude/skills/pdf/CLAUDE.md"),
            ],
            ..ClaudeFiles::default()
        };
        let global: Vec<&str> = files.global_memory().map(|m| m.file.as_str()).collect();
        assert_eq!(global, vec!["CLAUDE.md", ".claude/CLAUDE.md"]);
        let api: Vec<&str> = files
            .memory_for("products/api/src/main.rs")
            .map(|m| m.file.as_str())
            .collect();
        assert_eq!(
            api,
            vec!["CLAUDE.md", ".claude/CLAUDE.md", "products/api/CLAUDE.md"]
        );
        assert_eq!(files.memory_for("products/apiary").count(), 2);
    }

    #[test]
    fn permission_rules_parse() {
        assert_eq!(
            parse_permission_rule("mcp__computer-use__*"),
            Ok(("mcp__computer-use__*", None))
        );
        assert_eq!(
            parse_permission_rule("mcp__my-server__tool"),
            Ok(("mcp__my-server__tool", None))
        );
        assert!(parse_permission_rule("Web-Fetch").is_err());
        assert_eq!(
            parse_permission_rule("Bash(git push *)"),
            Ok(("Bash", Some("git push *")))
        );
        assert_eq!(parse_permission_rule("Read"), Ok(("Read", None)));
        assert!(parse_permission_rule("Bash(git").is_err());
    }
}
