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

use serde::Deserialize;

use super::diag::{Diagnostic, Pos, did_you_mean};
use super::kinds::AgentSpec;
use super::schema::{Kind, Metadata};
use super::tree::FileTree;
use super::yaml::{self, Node, Value};
use super::{Origin, Resource, Spec};

/// Tools Proto provides, by the names agents list them with.
pub const TOOLS: [&str; 11] = [
    "Bash", "Read", "Write", "Edit", "Glob", "Grep", "Git", "Python", "Planning", "Delegate",
    "Computer",
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

/// Imports in memory files are followed this many hops deep.
pub const MAX_IMPORT_HOPS: usize = 4;

/// The Claude Code files of a company.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaudeFiles {
    pub skills: Vec<Skill>,
    pub rules: Vec<Rule>,
    pub settings: Option<Settings>,
    pub mcp_servers: Vec<McpServer>,
    pub memory: Vec<Memory>,
    /// Files skipped because they could not be read, each reported with a warning.
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
    /// The agent the file would have declared, when its name could be read.
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
                spec.agents.push(agent);
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

/// Splits `---\n<yaml>\n---\n<body>`; the frontmatter's positions are made file-relative.
fn frontmatter(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<(Node, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        diags.push(
            Diagnostic::error(path, Pos::new(1, 1), "missing frontmatter").hint(Some(
                "start the file with a --- line, then name: and description:, then ---".into(),
            )),
        );
        return None;
    };
    let mut offset = 0;
    let mut end = None;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            end = Some((offset, offset + line.len()));
            break;
        }
        offset += line.len();
    }
    let Some((fm_end, body_start)) = end else {
        diags.push(Diagnostic::error(
            path,
            Pos::new(1, 1),
            "frontmatter is not closed by a --- line",
        ));
        return None;
    };
    let parsed = match yaml::parse_one(&rest[..fm_end]) {
        Ok(node) => Ok(node),
        Err(e) => match quote_colon_values(&rest[..fm_end]).map(|t| yaml::parse_one(&t)) {
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
            shift_lines(&mut node, 1);
            if !matches!(node.value, Value::Map(_)) {
                diags.push(Diagnostic::error(
                    path,
                    node.pos,
                    format!("frontmatter must be a mapping, found {}", node.type_name()),
                ));
                return None;
            }
            Some((
                node,
                rest[body_start..]
                    .trim_start_matches(['\r', '\n'])
                    .to_string(),
            ))
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

/// Claude Code reads `description: Use it when: ...` although the second `: ` makes it
/// invalid YAML, by quoting such values and parsing again; this does the same. Each line
/// `key: value` at the top level whose value holds `: ` and is not already quoted, a block
/// or a flow collection gets its value double-quoted. `None` when no line needed it.
fn quote_colon_values(yaml: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.split_inclusive('\n') {
        let text = line.trim_end_matches(['\n', '\r']);
        let ending = &line[text.len()..];
        if let Some((key, value)) = text.split_once(": ") {
            let plain_key = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            // A ` #` ends a plain value in YAML: the comment stays a comment.
            let value = value.split(" #").next().unwrap_or(value).trim();
            let special = value.starts_with(['"', '\'', '|', '>', '[', '{', '&', '*', '!']);
            if plain_key && value.contains(": ") && !special {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                out.push_str(&format!("{key}: \"{escaped}\"{ending}"));
                changed = true;
                continue;
            }
        }
        out.push_str(line);
    }
    changed.then_some(out)
}

fn shift_lines(node: &mut Node, by: u32) {
    if node.pos.line > 0 {
        node.pos.line += by;
    }
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift_lines(n, by)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift_lines(k, by);
            shift_lines(v, by);
        }),
        _ => {}
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

/// The annotation that keeps a subagent's display `color`: Proto draws no terminal of its
/// own, but the choice is kept with the agent rather than dropped.
pub const COLOR: &str = "proto.dev/color";

/// The annotation that keeps a Claude Code agent's own name when Proto had to derive a DNS
/// label from it, so references by the original name still resolve.
pub const ORIGINAL_NAME: &str = "proto.dev/claude-code-name";

/// A DNS label for a name Claude Code accepts but Kubernetes does not (`CSharpExpert`,
/// `microsoft_learn_contributor`): lower case; `_`, spaces and every other character
/// outside `[a-z0-9]` become `-`, runs of `-` collapse, ends are trimmed. A label longer than
/// 63 characters is cut and given a hash of the whole name, so two long names stay apart.
/// Deterministic: the same name always gives the same label.
pub fn dns_label(name: &str) -> String {
    let mut label = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            label.push(c);
        } else if !label.ends_with('-') {
            label.push('-');
        }
    }
    let label = label.trim_matches('-');
    let hash = || format!("{:08x}", super::fnv1a(name.as_bytes()) & 0xffff_ffff);
    if label.is_empty() {
        return format!("agent-{}", hash());
    }
    if label.len() <= 63 {
        return label.to_string();
    }
    // ASCII only by now, so any byte index is a character boundary.
    format!("{}-{}", label[..54].trim_end_matches('-'), hash())
}

/// Why a tool named in a Claude Code file is left out. Claude Code itself drops the tools it
/// does not have, so these are warnings, never errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// A Claude Code tool Proto has no equivalent for.
    NotInProto,
    /// A name neither Proto nor Claude Code knows: another editor's tool, or a typo.
    Unknown,
}

/// How a tools string separates its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ToolsFormat {
    /// A subagent's `tools`: Claude Code splits at commas only, so `Read Grep` is one
    /// (unknown) name there, and here.
    Commas,
    /// A skill's `allowed-tools`: the Agent Skills specification separates with spaces,
    /// Claude Code's documentation with commas; both are read.
    CommasOrSpaces,
}

/// Splits a tools line into entries: commas or whitespace separate them (the Agent Skills
/// format is space-separated, Claude Code's comma-separated), except inside parentheses,
/// where `Bash(git status:*)` keeps its space.
pub fn split_tools(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                current.push(c);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits a comma-separated list, except at commas inside braces, brackets or parentheses:
/// `src/**/*.{ts,tsx}, docs/**` is two globs.
pub fn split_commas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Normalizes the tool names of a Claude Code file: aliases become Proto's names, `*` every
/// Proto tool, `mcp__server__*` the whole server (`mcp__server`); tools Proto lacks are
/// dropped and reported through `drop`, as Claude Code drops the tools it lacks. MCP tools
/// are kept: whether their server is declared is known only once `.mcp.json` is read.
pub fn normalize_tools(tools: Vec<String>, drop: &mut dyn FnMut(&str, Dropped)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let keep = |name: String, out: &mut Vec<String>| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    for tool in tools {
        let tool = tool.trim();
        if tool == "*" {
            for t in TOOLS {
                keep(t.to_string(), &mut out);
            }
            continue;
        }
        if tool.starts_with("mcp__") {
            let whole = tool.strip_suffix("__*").unwrap_or(tool);
            keep(whole.to_string(), &mut out);
            continue;
        }
        // `Task(code-reviewer)` limits a tool to some uses; the limit is kept.
        let (base, limit) = match tool.find('(') {
            Some(open) => (&tool[..open], &tool[open..]),
            None => (tool, ""),
        };
        let base = TOOL_ALIASES
            .iter()
            .find(|(alias, _)| *alias == base)
            .map_or(base, |(_, proto)| proto);
        if TOOLS.contains(&base) || base == SKILL_TOOL {
            keep(format!("{base}{limit}"), &mut out);
        } else if UNSUPPORTED_TOOLS.contains(&base) {
            drop(base, Dropped::NotInProto);
        } else {
            drop(tool, Dropped::Unknown);
        }
    }
    out
}

/// Tool names of other editors' agent files (VS Code's custom agents, mostly) with the Proto
/// tool that does the same. Claude Code does not grant them, so neither does Proto: the
/// equivalent is only suggested, for whoever wants the agent to have it.
const EDITOR_TOOLS: [(&str, &str); 12] = [
    ("codebase", "Grep"),
    ("search", "Grep"),
    ("usages", "Grep"),
    ("read", "Read"),
    ("readFile", "Read"),
    ("edit", "Edit"),
    ("editFiles", "Edit"),
    ("createFile", "Write"),
    ("runCommands", "Bash"),
    ("runInTerminal", "Bash"),
    ("terminal", "Bash"),
    ("changes", "Git"),
];

fn editor_equivalent(tool: &str) -> Option<String> {
    EDITOR_TOOLS
        .iter()
        .find(|(name, _)| *name == tool)
        .map(|(_, proto)| {
            format!("another editor's name; Proto's {proto} does this: write {proto} to grant it")
        })
}

/// The warning for a tool [`normalize_tools`] dropped.
fn dropped_tool(
    path: &str,
    pos: Pos,
    resource: &str,
    field: &str,
    tool: &str,
    why: Dropped,
) -> Diagnostic {
    let (message, hint) = match why {
        Dropped::NotInProto => (
            format!("tool \"{tool}\" is a Claude Code tool Proto does not have; dropped"),
            None,
        ),
        Dropped::Unknown => (
            format!("unknown tool \"{tool}\"; dropped"),
            editor_equivalent(tool)
                .or_else(|| {
                    tool.contains(char::is_whitespace)
                        .then(|| "separate tools with commas".to_string())
                })
                .or_else(|| {
                    did_you_mean(
                        tool,
                        TOOLS
                            .iter()
                            .copied()
                            .chain(TOOL_ALIASES.iter().map(|(a, _)| *a)),
                    )
                    .or_else(|| Some(format!("tools are {}", TOOLS.join(", "))))
                }),
        ),
    };
    Diagnostic::warning(path, pos, message)
        .resource(resource)
        .field(field)
        .hint(hint)
}

/// Removes what `disallowed` names from `tools` (Claude Code's `disallowedTools`): a tool
/// named bare or with a limit (`Bash(rm:*)`) is removed whole, since an allow list cannot
/// say "all but these uses", and giving less than the file allows is the safe side.
/// `mcp__server` removes every tool of that server.
pub fn subtract_tools(tools: Vec<String>, disallowed: &[String]) -> Vec<String> {
    let base = |t: &str| t.split('(').next().unwrap_or(t).to_string();
    tools
        .into_iter()
        .filter(|tool| {
            let b = base(tool);
            !disallowed.iter().any(|d| {
                let d = base(d);
                b == d || (d.starts_with("mcp__") && b.starts_with(&format!("{d}__")))
            })
        })
        .collect()
}

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
        for limited in disallowed.iter().filter(|d| d.contains('(')) {
            let base = limited.split('(').next().unwrap_or(limited);
            if tools.iter().any(|t| t.split('(').next() == Some(base)) {
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
            node: std::sync::Arc::new(node),
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

/// The Agent Skills rule for a skill's name: lower-case letters, digits and hyphens, at
/// most 64 characters, no leading, trailing or doubled hyphen.
pub fn is_skill_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The first paragraph of a body, which Claude Code uses as a skill's description when the
/// frontmatter has none.
fn first_paragraph(body: &str) -> Option<String> {
    let paragraph: Vec<&str> = body
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty() || l.starts_with('#'))
        .take_while(|l| !l.is_empty())
        .collect();
    (!paragraph.is_empty()).then(|| paragraph.join(" "))
}

fn load_skill(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Skill> {
    let (node, body) = frontmatter(path, text, diags)?;
    let folder = path.split('/').nth(2).unwrap_or_default().to_string();
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
    let needle = format!("\"{key}\"");
    text.find(&needle)
        .map_or(Pos::new(1, 1), |at| pos_at(text, at))
}

fn pos_at(text: &str, byte: usize) -> Pos {
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
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

/// The name Claude Code gives a server in tool names (`mcp__<server>__<tool>`): every
/// character other than an ASCII letter, digit, `_` or `-` becomes `_`, so `claude.ai Slack`
/// is `claude_ai_Slack`.
pub fn mcp_server_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

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
    for (name, entry) in servers {
        let field = format!("mcpServers.{name}");
        let pos = json_pos(text, name);
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
                    Diagnostic::warning(path, json_pos(text, key), "unknown field; ignored")
                        .field(format!("{field}.{key}"))
                        .hint(
                            did_you_mean(key, MCP_KEYS).or_else(|| {
                                Some(format!("expected one of {}", MCP_KEYS.join(", ")))
                            }),
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
                    json_pos(text, kind),
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
        if out.iter().any(|s| s.name == normalized) {
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
// Across files
// ---------------------------------------------------------------------------------------------

/// What can only be settled once every file is read, for the Claude Code files: a subagent
/// whose name another agent already has is skipped (Proto's own YAML agents win); references
/// to a subagent by the name it was written with resolve to the label it was loaded as; MCP
/// tools of servers `.mcp.json` does not declare, and skills no file declares, are dropped
/// from subagents and skills with a warning, as Claude Code runs without them.
pub fn settle(spec: &mut Spec, diags: &mut Vec<Diagnostic>) {
    let warn = |res: &Resource<AgentSpec>, field: &str, message: String| {
        Diagnostic::warning(res.origin.file.clone(), res.origin.pos_of(field), message)
            .resource(res.id())
            .field(res.origin.display_field(field))
    };
    // Names: YAML agents first, then subagents in file order.
    let mut taken: std::collections::HashMap<String, String> = spec
        .agents
        .iter()
        .filter(|a| !a.origin.flat)
        .map(|a| (a.name().to_string(), a.origin.file.clone()))
        .collect();
    let mut kept = Vec::with_capacity(spec.agents.len());
    for agent in std::mem::take(&mut spec.agents) {
        if !agent.origin.flat {
            kept.push(agent);
            continue;
        }
        if let Some(first) = taken.get(agent.name()) {
            let written = agent
                .metadata
                .annotations
                .get(ORIGINAL_NAME)
                .map_or(String::new(), |w| format!(" (written \"{w}\")"));
            diags.push(warn(
                &agent,
                "metadata.name",
                format!(
                    "agent \"{}\"{written} is already declared in {first}; file skipped",
                    agent.name()
                ),
            ));
            spec.claude.skipped.push(Skipped {
                file: agent.origin.file.clone(),
                role: Role::Agent,
                name: None,
            });
            continue;
        }
        taken.insert(agent.name().to_string(), agent.origin.file.clone());
        kept.push(agent);
    }
    spec.agents = kept;

    // References by the written name.
    let aliases: std::collections::HashMap<String, String> = spec
        .agents
        .iter()
        .filter_map(|a| {
            let written = a.metadata.annotations.get(ORIGINAL_NAME)?;
            (!taken.contains_key(written)).then(|| (written.clone(), a.name().to_string()))
        })
        .collect();
    if !aliases.is_empty() {
        let resolve = |name: &mut String| {
            if let Some(label) = aliases.get(name.as_str()) {
                name.clone_from(label);
            }
        };
        spec.companies
            .iter_mut()
            .for_each(|c| resolve(&mut c.spec.ceo));
        spec.products
            .iter_mut()
            .for_each(|p| resolve(&mut p.spec.lead));
        spec.goals
            .iter_mut()
            .for_each(|g| resolve(&mut g.spec.owner));
        for agent in &mut spec.agents {
            if let Some(boss) = &mut agent.spec.reports_to {
                resolve(boss);
            }
            // `Task(code_reviewer)` limits delegation to an agent by the name it was written
            // with; the delegate is asked for by its label.
            for tool in &mut agent.spec.tools {
                let inner = tool
                    .strip_prefix("Delegate(")
                    .and_then(|rest| rest.strip_suffix(')'));
                if let Some(label) = inner.and_then(|inner| aliases.get(inner)) {
                    *tool = format!("Delegate({label})");
                }
            }
        }
    }

    // Two skills under one name: the first (in path order) is the one references reach.
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut skills = Vec::with_capacity(spec.claude.skills.len());
    for skill in std::mem::take(&mut spec.claude.skills) {
        if let Some(first) = seen.get(&skill.name) {
            diags.push(
                Diagnostic::warning(
                    skill.file.clone(),
                    skill.name_pos,
                    format!(
                        "skill \"{}\" is already declared in {first}; file skipped",
                        skill.name
                    ),
                )
                .resource(format!("Skill/{}", skill.name))
                .field("name"),
            );
            spec.claude.skipped.push(Skipped {
                file: skill.file.clone(),
                role: Role::Skill,
                name: None,
            });
            continue;
        }
        seen.insert(skill.name.clone(), skill.file.clone());
        skills.push(skill);
    }
    spec.claude.skills = skills;

    // MCP tools and skills that are not there.
    let servers: std::collections::HashSet<String> = spec
        .claude
        .mcp_servers
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let missing_server = |tool: &str| -> Option<String> {
        let server = tool
            .strip_prefix("mcp__")?
            .split("__")
            .next()
            .unwrap_or_default();
        (!servers.contains(server)).then(|| server.to_string())
    };
    let skill_names: Vec<(String, String)> = spec
        .claude
        .skills
        .iter()
        .map(|s| (s.name.clone(), s.folder().to_string()))
        .collect();
    for agent in spec.agents.iter_mut().filter(|a| a.origin.flat) {
        let mut dropped = Vec::new();
        agent.spec.tools.retain(|tool| match missing_server(tool) {
            Some(server) => {
                dropped.push((tool.clone(), server));
                false
            }
            None => true,
        });
        for (tool, server) in dropped {
            diags.push(
                warn(
                    agent,
                    "spec.tools",
                    format!("MCP server \"{server}\" of \"{tool}\" is not in .mcp.json; dropped"),
                )
                .hint(did_you_mean(&server, servers.iter().map(String::as_str))),
            );
        }
        let mut unknown = Vec::new();
        agent.spec.skills.retain(|skill| {
            let known = skill_names.iter().any(|(n, f)| n == skill || f == skill);
            if !known {
                unknown.push(skill.clone());
            }
            known
        });
        for skill in unknown {
            diags.push(
                warn(
                    agent,
                    "spec.skills",
                    format!("skill \"{skill}\" is not in .claude/skills/; dropped"),
                )
                .hint(did_you_mean(
                    &skill,
                    skill_names.iter().map(|(n, _)| n.as_str()),
                )),
            );
        }
    }
    for skill in &mut spec.claude.skills {
        let (file, pos) = (skill.file.clone(), skill.tools_pos);
        let resource = format!("Skill/{}", skill.name);
        skill
            .allowed_tools
            .retain(|tool| match missing_server(tool) {
                Some(server) => {
                    diags.push(
                        Diagnostic::warning(
                            file.clone(),
                            pos,
                            format!(
                                "MCP server \"{server}\" of \"{tool}\" is not in .mcp.json; dropped"
                            ),
                        )
                        .resource(resource.clone())
                        .field("allowed-tools"),
                    );
                    false
                }
                None => true,
            });
    }
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
                    let col = u32::try_from(line[..byte].chars().count() + 1).unwrap_or(u32::MAX);
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
    for (pos, target) in find_imports(text) {
        let Some(resolved) = resolve(file, &target) else {
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
        // Mentions such as `@ceo` that name no file are ordinary text, as in Claude Code.
        if tree.size(&resolved).is_err() {
            continue;
        }
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
        let Some(content) = super::load::read_text(tree, &resolved, diags) else {
            continue;
        };
        if imports.contains(&resolved) {
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
    fn tools_lines_split_on_commas_or_spaces_outside_parentheses() {
        assert_eq!(
            split_tools("Bash(git status:*) Bash(jq:*)  Read,Grep, mcp__gh__*"),
            vec![
                "Bash(git status:*)",
                "Bash(jq:*)",
                "Read",
                "Grep",
                "mcp__gh__*"
            ]
        );
        assert!(split_tools(" , ").is_empty());
    }

    #[test]
    fn comma_lists_keep_brace_globs_whole() {
        assert_eq!(
            split_commas("src/**/*.{ts,tsx}, docs/** ,"),
            vec!["src/**/*.{ts,tsx}", "docs/**"]
        );
    }

    #[test]
    fn tools_proto_lacks_are_dropped_and_aliases_mapped() {
        let mut dropped = Vec::new();
        let tools = normalize_tools(
            split_tools(
                "Read, TodoRead, NotebookRead, KillShell, codebase, Task(reviewer), mcp__gh__*, Skill",
            ),
            &mut |t, why| dropped.push((t.to_string(), why)),
        );
        assert_eq!(
            tools,
            vec!["Read", "Planning", "Delegate(reviewer)", "mcp__gh", "Skill"]
        );
        assert_eq!(
            dropped,
            vec![
                ("KillShell".to_string(), Dropped::NotInProto),
                ("codebase".to_string(), Dropped::Unknown)
            ]
        );
        let all = normalize_tools(vec!["*".into()], &mut |_, _| {});
        assert_eq!(all.len(), TOOLS.len());
    }

    #[test]
    fn disallowed_tools_are_taken_away_whole() {
        let tools: Vec<String> = ["Read", "Bash(git *)", "Write", "mcp__gh__issues", "mcp__db"]
            .map(String::from)
            .to_vec();
        let out = subtract_tools(
            tools,
            &["Bash(rm:*)".into(), "Write".into(), "mcp__gh".into()],
        );
        assert_eq!(out, vec!["Read", "mcp__db"]);
    }

    #[test]
    fn dns_labels_are_derived_deterministically() {
        assert_eq!(dns_label("CSharpExpert"), "csharpexpert");
        assert_eq!(
            dns_label("microsoft_learn_contributor"),
            "microsoft-learn-contributor"
        );
        assert_eq!(dns_label("  My  Agent!! "), "my-agent");
        assert_eq!(dns_label("code-reviewer"), "code-reviewer");
        let long = "a".repeat(70);
        let label = dns_label(&long);
        assert_eq!(label.len(), 63);
        assert_eq!(label, dns_label(&long));
        assert_ne!(label, dns_label(&"a".repeat(71)));
        assert!(super::super::validate::is_dns_label(&label));
        assert!(dns_label("日本").starts_with("agent-"));
    }

    #[test]
    fn colon_values_are_quoted_as_claude_code_does() {
        let fixed = quote_colon_values("name: a\ndescription: Use it: now \"x\"\ntools: Read\n");
        assert_eq!(
            fixed.as_deref(),
            Some("name: a\ndescription: \"Use it: now \\\"x\\\"\"\ntools: Read\n")
        );
        assert_eq!(quote_colon_values("description: \"a: b\"\n"), None);
        assert_eq!(
            quote_colon_values("model: a: b # note: c\n").as_deref(),
            Some("model: \"a: b\"\n")
        );
        assert_eq!(quote_colon_values("  nested: a: b\n"), None);
    }

    #[test]
    fn mcp_server_names_are_normalized_like_claude_code() {
        assert_eq!(mcp_server_name("claude.ai Slack"), "claude_ai_Slack");
        assert_eq!(mcp_server_name("@acme/docs"), "_acme_docs");
        assert_eq!(mcp_server_name("my-server_2"), "my-server_2");
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
