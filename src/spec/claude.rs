//! The files people already have from Claude Code, read as they are: subagents
//! (`.claude/agents/**/*.md`), skills (`.claude/skills/*/SKILL.md`), rules
//! (`.claude/rules/**/*.md`), settings (`.claude/settings.json`: hooks and permission rules),
//! MCP servers (`.mcp.json`) and memory (`CLAUDE.md` with `@path` imports).
//!
//! Claude Code ignores frontmatter keys it does not know, so we warn rather than fail on
//! them; everything Proto acts on (tools, hook events, permission rules, references) is
//! checked as strictly as the YAML kinds.

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
pub const TOOL_ALIASES: [(&str, &str); 6] = [
    ("Task", "Delegate"),
    ("Agent", "Delegate"),
    ("TodoWrite", "Planning"),
    ("MultiEdit", "Edit"),
    ("NotebookEdit", "Edit"),
    ("LS", "Glob"),
];

/// Claude Code tools Proto does not offer yet; agents listing them still load.
pub const UNSUPPORTED_TOOLS: [&str; 3] = ["WebFetch", "WebSearch", "BashOutput"];

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
}

/// A skill: instructions an agent activates when its description matches the task.
#[derive(Clone, Debug, PartialEq)]
pub struct Skill {
    pub name: String,
    pub description: String,
    pub allowed_tools: Vec<String>,
    pub body: String,
    pub file: String,
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

/// Loads one Claude Code file into `spec`.
pub fn load_file(
    role: Role,
    path: &str,
    text: &str,
    tree: &dyn FileTree,
    spec: &mut Spec,
    diags: &mut Vec<Diagnostic>,
) {
    match role {
        Role::Agent => match load_agent(path, text, diags) {
            Ok(agent) => spec.agents.push(agent),
            Err(Some(name)) => spec.broken.push((Kind::Agent, name)),
            Err(None) => {}
        },
        Role::Skill => {
            if let Some(skill) = load_skill(path, text, diags) {
                spec.claude.skills.push(skill);
            }
        }
        Role::Rule => {
            if let Some(rule) = load_rule(path, text, diags) {
                spec.claude.rules.push(rule);
            }
        }
        Role::Settings => spec.claude.settings = load_settings(path, text, diags),
        Role::Mcp => spec.claude.mcp_servers.extend(load_mcp(path, text, diags)),
        Role::Memory => spec
            .claude
            .memory
            .push(load_memory(path, text, tree, diags)),
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
    match yaml::parse_one(&rest[..fm_end]) {
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
            }) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect(),
            ),
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

const AGENT_KEYS: [&str; 16] = [
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
    "title",
    "department",
    "reportsTo",
    "thinking",
    "maxTurns",
];

/// Normalizes tool names: Claude Code aliases become Proto's, unsupported ones are dropped
/// with a warning. Unknown names are left for validation to report with a suggestion.
pub fn normalize_tools(tools: Vec<String>, warn: &mut dyn FnMut(&str)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for tool in tools {
        // `Task(code-reviewer)` limits a tool to some uses; the limit is kept.
        let (base, limit) = match tool.find('(') {
            Some(open) => (&tool[..open], &tool[open..]),
            None => (tool.as_str(), ""),
        };
        let base = TOOL_ALIASES
            .iter()
            .find(|(alias, _)| *alias == base)
            .map_or(base, |(_, proto)| proto);
        if UNSUPPORTED_TOOLS.contains(&base) {
            warn(base);
            continue;
        }
        let name = format!("{base}{limit}");
        // A set beside the list: a list of 100,000 tools must not cost 100,000² compares.
        if seen.insert(name.clone()) {
            out.push(name);
        }
    }
    out
}

/// The agent, or the name it would have had (if known) when it is broken.
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
        return Err(Some(stem.to_string()));
    };
    let name_guess = node
        .get("name")
        .and_then(Node::as_str)
        .unwrap_or(stem)
        .to_string();
    let mut f = Fields {
        path,
        node: &node,
        resource: format!("Agent/{name_guess}"),
        diags,
    };
    f.warn_unknown(&AGENT_KEYS);
    let name = f.string("name", true);
    let description = f.string("description", true);
    let tools = f.list("tools");
    let model = f.string("model", false).filter(|m| m != "inherit");
    let skills = f.list("skills").unwrap_or_default();
    let title = f.string("title", false);
    let department = f.string("department", false);
    let reports_to = f.string("reportsTo", false);
    let thinking = f.number("thinking");
    let max_turns = f.number("maxTurns");
    let (Some(name), Some(description)) = (name, description) else {
        return Err(Some(name_guess));
    };
    let tools_pos = node.get("tools").map_or(node.pos, |n| n.pos);
    // Claude Code gives a subagent with no `tools` line every tool.
    let tools = tools.unwrap_or_else(|| TOOLS.iter().map(|t| t.to_string()).collect());
    let tools = normalize_tools(tools, &mut |t| {
        diags.push(
            Diagnostic::warning(
                path,
                tools_pos,
                format!("tool \"{t}\" is not available in Proto yet; ignored"),
            )
            .resource(format!("Agent/{name}"))
            .field("tools"),
        );
    });
    let title = title.unwrap_or_else(|| title_case(&name));
    Ok(Resource {
        kind: Kind::Agent,
        metadata: Metadata {
            name,
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

fn load_skill(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Option<Skill> {
    let (node, body) = frontmatter(path, text, diags)?;
    let folder = path.split('/').nth(2).unwrap_or_default().to_string();
    let mut f = Fields {
        path,
        node: &node,
        resource: format!("Skill/{folder}"),
        diags,
    };
    f.warn_unknown(&[
        "name",
        "description",
        "allowed-tools",
        "license",
        "metadata",
        "model",
    ]);
    let name = f.string("name", true);
    let description = f.string("description", true);
    let allowed_tools = f.list("allowed-tools").unwrap_or_default();
    let (name, description) = (name?, description?);
    if name != folder {
        let pos = node.get("name").map_or(node.pos, |n| n.pos);
        diags.push(
            Diagnostic::error(
                path,
                pos,
                format!("name \"{name}\" differs from its folder \"{folder}\""),
            )
            .resource(format!("Skill/{folder}"))
            .field("name"),
        );
    }
    let allowed_tools = normalize_tools(allowed_tools, &mut |_| {});
    let tools_pos = node.key("allowed-tools").map_or(node.pos, |n| n.pos);
    for tool in &allowed_tools {
        let base = tool.split('(').next().unwrap_or(tool);
        if !is_known_tool(base) {
            diags.push(
                Diagnostic::error(path, tools_pos, format!("unknown tool \"{base}\""))
                    .resource(format!("Skill/{folder}"))
                    .field("allowed-tools")
                    .hint(did_you_mean(base, TOOLS)),
            );
        }
    }
    Some(Skill {
        name,
        description,
        allowed_tools,
        body,
        file: path.to_string(),
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
        (f.list("paths").unwrap_or_default(), body)
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
    if tool.is_empty() || !tool.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("expected a tool name such as Bash or Bash(git push *)".into());
    }
    Ok((tool, spec))
}

/// Whether a tool name is one an agent or a rule may name.
pub fn is_known_tool(tool: &str) -> bool {
    TOOLS.contains(&tool)
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
                Ok((tool, _)) if !is_known_tool(tool) => diags.push(
                    Diagnostic::error(
                        path,
                        json_pos(text, rule),
                        format!("unknown tool \"{tool}\""),
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

fn load_mcp(path: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Vec<McpServer> {
    use serde_json::Value as J;
    let file: J = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            diags.push(json_error(path, &e));
            return Vec::new();
        }
    };
    let Some(servers) = file.get("mcpServers") else {
        return Vec::new();
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
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, entry) in servers {
        let field = format!("mcpServers.{name}");
        let pos = json_pos(text, name);
        let Some(obj) = entry.as_object() else {
            diags.push(
                Diagnostic::error(path, pos, "expected an object with command or url").field(field),
            );
            continue;
        };
        let mut ok = true;
        for key in obj.keys() {
            if !MCP_KEYS.contains(&key.as_str()) {
                ok = false;
                diags.push(
                    Diagnostic::error(path, json_pos(text, key), "unknown field")
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
            diags.push(
                Diagnostic::error(
                    path,
                    pos,
                    "args must be a list of strings; env and headers objects of strings",
                )
                .field(field),
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
                diags.push(
                    Diagnostic::error(
                        path,
                        json_pos(text, kind),
                        format!("unknown transport type \"{kind}\""),
                    )
                    .field(format!("{field}.type"))
                    .hint(Some("expected stdio, http or sse".into())),
                );
                continue;
            }
            _ => {
                diags.push(
                    Diagnostic::error(
                        path,
                        pos,
                        "exactly one of \"command\" (stdio) or \"url\" (http) is required",
                    )
                    .field(field),
                );
                continue;
            }
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            diags.push(
                Diagnostic::error(
                    path,
                    pos,
                    "server names may hold only letters, digits, - and _ (tools are named mcp__<server>__<tool>)",
                )
                .field(field),
            );
            continue;
        }
        if ok {
            out.push(McpServer {
                name: name.clone(),
                transport,
                file: path.to_string(),
            });
        }
    }
    out
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
    fn permission_rules_parse() {
        assert_eq!(
            parse_permission_rule("Bash(git push *)"),
            Ok(("Bash", Some("git push *")))
        );
        assert_eq!(parse_permission_rule("Read"), Ok(("Read", None)));
        assert!(parse_permission_rule("Bash(git").is_err());
    }
}
