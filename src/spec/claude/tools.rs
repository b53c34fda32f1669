//! Tool names as Claude Code files write them: lists split the way each format splits them,
//! Claude Code's names mapped onto Proto's, the tools Proto lacks dropped (as Claude Code
//! drops the tools it lacks), and `disallowedTools` taken away.
//!
//! ```
//! use proto::spec::claude::{Dropped, normalize_tools, split_tools};
//! let mut dropped = Vec::new();
//! let tools = normalize_tools(split_tools("Read TodoWrite KillShell"), &mut |t, why| {
//!     dropped.push((t.to_string(), why))
//! });
//! assert_eq!(tools, ["Read", "Planning"]);
//! assert_eq!(dropped, [("KillShell".to_string(), Dropped::NotInProto)]);
//! ```

use std::collections::HashSet;

use super::super::diag::{Diagnostic, Pos, did_you_mean};
use super::{SKILL_TOOL, TOOL_ALIASES, TOOLS, UNSUPPORTED_TOOLS};

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
pub(super) enum ToolsFormat {
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
    // A set beside the list: a list of 100,000 tools must not cost 100,000² compares.
    let mut seen: HashSet<String> = HashSet::new();
    let mut keep = |name: String, out: &mut Vec<String>| {
        if seen.insert(name.clone()) {
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
pub(super) fn dropped_tool(
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
    // Hashed, so that long lists on both sides cost their lengths, not their product.
    let gone: HashSet<String> = disallowed.iter().map(|d| base(d)).collect();
    let server = |tool: &str| -> Option<String> {
        let rest = tool.strip_prefix("mcp__")?;
        Some(format!("mcp__{}", rest.split("__").next().unwrap_or(rest)))
    };
    tools
        .into_iter()
        .filter(|tool| {
            let b = base(tool);
            !(gone.contains(&b) || server(&b).is_some_and(|s| gone.contains(&s)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
