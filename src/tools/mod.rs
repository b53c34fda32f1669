//! The tool suite of the agent runtime: what a model may ask to be done, each tool in a file
//! of its own. Every tool reaches the task's computer only through [`Computer`] and its
//! [`Workspace`] (so paths are resolved, and escapes refused, in one place). `act()`, the
//! policy path, is to be the only caller of [`Tool::run`]: the model never reaches a tool
//! directly.
//!
//! Input schemas follow Claude Code's tool shapes (`Read {file_path, offset, limit}`,
//! `Edit {file_path, old_string, new_string, replace_all}`, …), so models trained on them
//! call these tools well and permission rules written for Claude Code read the same.

mod bash;
mod edit;
mod git;
mod glob;
mod grep;
mod planning;
mod python;
mod read;
mod write;

use std::path::Path;

use async_trait::async_trait;
use serde_json::{Map, Value};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::computer::workspace::{in_git_dir, normalize};
use crate::computer::{Computer, ComputerError, Workspace};
use crate::gitops::Identity;

pub use bash::Bash;
pub use edit::Edit;
pub use git::Git;
pub use glob::Glob;
pub use grep::Grep;
pub use planning::{DEFAULT_PLANNING_FILE, Planning};
pub use python::Python;
pub(crate) use python::TMP_DIR;
pub use read::Read;
pub use write::Write;

/// Where a tool runs and on whose behalf.
pub struct ToolContext<'a> {
    pub computer: &'a dyn Computer,
    pub workspace: &'a Workspace,
    pub cancel: &'a CancellationToken,
    /// The agent's name (for temporary file names and messages).
    pub agent: &'a str,
    /// Who commits made through the `Git` tool are by.
    pub author: &'a Identity,
    /// The product's `tasks.json`, relative to the workspace root; `None` for
    /// [`DEFAULT_PLANNING_FILE`].
    pub planning_file: Option<String>,
}

/// One file a tool changed, for the audit record's diff. `None` means "did not exist".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the workspace root.
    pub path: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What a tool returns to the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolOutput {
    /// What the model sees.
    pub content: String,
    /// The tool ran but what it was asked could not be done (a command that failed, an
    /// edit that did not match): the model is told so and may try again.
    pub is_error: bool,
    pub changed_files: Vec<FileChange>,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            ..ToolOutput::default()
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: true,
            ..ToolOutput::default()
        }
    }
}

/// Why a tool could not run at all.
#[derive(Debug, Error)]
pub enum ToolError {
    #[error("invalid input: `{field}`: {reason}")]
    InvalidInput { field: String, reason: String },
    #[error("`{field}`: {path}: outside the workspace")]
    OutsideWorkspace { field: String, path: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Computer(#[from] ComputerError),
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        ToolError::InvalidInput {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Something a model can ask to be done.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model calls it by (`Read`, `Bash`, …).
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// The JSON schema of its input.
    fn input_schema(&self) -> Value;
    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError>;
}

/// A tool as a model is told about it: `{name, description, input_schema}`, the shape of
/// the Anthropic Messages API's `tools` entries.
pub fn definition(tool: &dyn Tool) -> Value {
    serde_json::json!({
        "name": tool.name(),
        "description": tool.description(),
        "input_schema": tool.input_schema(),
    })
}

/// The names of every built-in tool.
pub const TOOL_NAMES: [&str; 9] = [
    "Read", "Write", "Edit", "Glob", "Grep", "Bash", "Git", "Python", "Planning",
];

/// The built-in tool called `name`, if there is one.
pub fn tool(name: &str) -> Option<Box<dyn Tool>> {
    let tool: Box<dyn Tool> = match name {
        "Read" => Box::new(Read),
        "Write" => Box::new(Write),
        "Edit" => Box::new(Edit),
        "Glob" => Box::new(Glob),
        "Grep" => Box::new(Grep),
        "Bash" => Box::new(Bash),
        "Git" => Box::new(Git),
        "Python" => Box::new(Python),
        "Planning" => Box::new(Planning),
        _ => return None,
    };
    Some(tool)
}

/// The tools an agent's `tools` list names, in its order, each once. A rule's narrowing
/// (`Bash(git *)`) is the policy path's business: here it only names the tool. Names that
/// are not built-in (MCP tools, `Delegate`) are left to whoever provides them.
pub fn tools_for(names: &[String]) -> Vec<Box<dyn Tool>> {
    let mut seen: Vec<&str> = Vec::new();
    let mut tools = Vec::new();
    for name in names {
        let base = name.split('(').next().unwrap_or_default().trim();
        if seen.contains(&base) {
            continue;
        }
        if let Some(tool) = tool(base) {
            seen.push(base);
            tools.push(tool);
        }
    }
    tools
}

/// A tool's input object, read field by field so that errors name the field.
pub(crate) struct Input<'a> {
    fields: &'a Map<String, Value>,
}

impl<'a> Input<'a> {
    /// The input as an object whose fields are all among `known`: a misspelt field is an
    /// error rather than silently ignored.
    pub(crate) fn new(input: &'a Value, known: &[&str]) -> Result<Self, ToolError> {
        let fields = input
            .as_object()
            .ok_or_else(|| ToolError::invalid("input", "must be a JSON object"))?;
        if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ToolError::invalid(
                unknown,
                format!("unknown field; expected one of {}", known.join(", ")),
            ));
        }
        Ok(Input { fields })
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, field: &str) -> Result<&'a str, ToolError> {
        self.opt_str(field)?
            .ok_or_else(|| ToolError::invalid(field, "required"))
    }

    pub(crate) fn opt_str(&self, field: &str) -> Result<Option<&'a str>, ToolError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ToolError::invalid(field, "must be a string")),
        }
    }

    pub(crate) fn opt_u64(&self, field: &str) -> Result<Option<u64>, ToolError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| ToolError::invalid(field, "must be a non-negative integer")),
        }
    }

    pub(crate) fn bool_or(&self, field: &str, default: bool) -> Result<bool, ToolError> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ToolError::invalid(field, "must be true or false")),
        }
    }

    pub(crate) fn opt_strings(&self, field: &str) -> Result<Option<Vec<String>>, ToolError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ToolError::invalid(field, "must be an array of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ToolError::invalid(field, "must be an array of strings")),
        }
    }
}

/// The workspace-relative form of a path a model gave: relative paths are taken from the
/// workspace root, and absolute ones (Claude Code's tools ask for absolute paths) must lie
/// under it. The result is [normalized](crate::computer::workspace::normalize) (no `.`, no
/// `..`) and has been through [`Workspace::resolve`], so it does not escape and every later
/// check judges the path that is actually used; `""` names the root itself.
pub(crate) fn relative_path(
    workspace: &Workspace,
    field: &str,
    raw: &str,
) -> Result<String, ToolError> {
    let outside = || ToolError::OutsideWorkspace {
        field: field.to_string(),
        path: raw.to_string(),
    };
    let path = Path::new(raw);
    let relative = if path.is_absolute() {
        let canonical = std::fs::canonicalize(workspace.root()).ok();
        let stripped = path.strip_prefix(workspace.root()).ok().or_else(|| {
            canonical
                .as_deref()
                .and_then(|root| path.strip_prefix(root).ok())
        });
        stripped.ok_or_else(outside)?.to_string_lossy().into_owned()
    } else {
        raw.to_string()
    };
    let relative = normalize(&relative)
        .ok_or_else(outside)?
        .to_string_lossy()
        .into_owned();
    if relative.is_empty() {
        return Ok(relative);
    }
    match workspace.resolve(&relative) {
        Ok(_) => Ok(relative),
        Err(ComputerError::OutsideWorkspace { .. }) => Err(outside()),
        Err(e) => Err(e.into()),
    }
}

/// Refuses writing into a `.git`, the workspace's or a nested repository's: a planted hook
/// would run with the next `git` command. `relative` comes from [`relative_path`], so it is
/// normalized and `./.git` or `x/../.git` cannot slip past. The computer refuses such
/// writes too (and those through links); this says so before anything is read.
pub(crate) fn refuse_git_dir(field: &str, relative: &str) -> Result<(), ToolError> {
    if in_git_dir(Path::new(relative)) {
        return Err(ToolError::Refused(format!(
            "`{field}`: {relative}: files under .git are not edited directly"
        )));
    }
    Ok(())
}

/// Text of a file, refusing what is not UTF-8 (the edit tools would corrupt it).
pub(crate) fn text(path: &str, bytes: Vec<u8>) -> Result<String, ToolError> {
    String::from_utf8(bytes)
        .map_err(|_| ToolError::Failed(format!("{path}: not a UTF-8 text file")))
}

/// `text` cut to `max` characters, saying how much was left off (Claude Code's shape).
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => {
            let rest = &text[cut..];
            let lines = rest.split('\n').count();
            format!("{}\n\n... [{lines} lines truncated] ...", &text[..cut])
        }
    }
}

/// Quotes `arg` for `sh`, so a model's argument is never read as shell syntax.
pub(crate) fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
