//! The tool suite of the agent runtime: what a model may ask to be done, each tool in a file
//! of its own. Every tool reaches the task's computer only through [`Computer`] and its
//! [`Workspace`] (so paths are resolved, and escapes refused, in one place). A session's
//! tools are one [`Registry`]; `act()`, the policy path, is the only caller of
//! [`Tool::run`]: the model never reaches a tool directly.
//!
//! Input schemas follow Claude Code's tool shapes (`Read {file_path, offset, limit}`,
//! `Edit {file_path, old_string, new_string, replace_all}`, …), so models trained on them
//! call these tools well and permission rules written for Claude Code read the same.

mod bash;
mod computer_use;
mod edit;
mod git;
mod glob;
mod grep;
mod planning;
mod python;
mod read;
mod registry;
mod remember;
mod write;

use std::path::Path;

use async_trait::async_trait;
use serde_json::{Map, Value};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::computer::workspace::{in_git_dir, normalize};
use crate::computer::{Computer, ComputerError, Workspace};
use crate::gitops::Identity;
use crate::store::{Store, StoreError, TaskId};

pub use bash::Bash;
pub use computer_use::{COMPUTER_TOOL, ComputerUse};
pub use edit::Edit;
pub use git::Git;
pub use glob::Glob;
pub use grep::Grep;
pub use planning::{DEFAULT_PLANNING_FILE, Planning};
pub use python::Python;
pub(crate) use python::TMP_DIR;
pub use read::Read;
pub use registry::{Registry, allows, builtin, builtins};
pub use remember::{REMEMBER_TOOL, Remember};
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
    /// The task step this call is, for a tool that starts work of its own (`Delegate`
    /// records a child task under it); `None` outside a task (a tool tried on its own).
    pub step: Option<StepOf<'a>>,
}

/// The task step a tool call is, and where its task is recorded.
#[derive(Clone, Copy)]
pub struct StepOf<'a> {
    pub store: &'a Store,
    pub task: TaskId,
    pub goal: &'a str,
    pub number: u32,
    /// The controller's own identity, from which every agent's is made.
    pub controller: &'a Identity,
}

/// What a tool's effect reaches, which decides how `act()` journals it and what a resumed
/// attempt (in a fresh workspace) does with a call its journal says was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads and searches: nothing to redo.
    Inspects,
    /// Changes files of the workspace only: made again in a resumed attempt's fresh
    /// workspace unless [`Tool::already_done`] finds it there.
    Workspace,
    /// May reach past the workspace (a command, git, another server, another agent), or
    /// cannot be looked at afterwards: journaled as started before it runs, so after a
    /// kill -9 the call is known to be in doubt.
    Outside,
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
    /// Images the model sees with the text (a screenshot). Journals and the audit keep only
    /// what identifies them ([`crate::model::Image::summary`]), never their pixels.
    pub images: Vec<crate::model::Image>,
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
    /// A commit that would add secrets, undone.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::Refused),
    #[error(transparent)]
    Computer(#[from] ComputerError),
    #[error("{0}")]
    Failed(String),
    /// Not the model's to handle: the whole task stops (see [`Halt`]).
    #[error(transparent)]
    Halt(#[from] Halt),
}

/// Why a call stops its whole task instead of being answered to the model. A tool that
/// starts work of its own (`Delegate`) meets these in that work; a child cannot decide them
/// for its parent.
#[derive(Debug, Error)]
pub enum Halt {
    #[error("cancelled")]
    Cancelled,
    /// The task waits for a model provider (the work resumes from its journal).
    #[error("model: {0}")]
    ProviderUnavailable(crate::model::ModelError),
    #[error("{0}")]
    Budget(#[from] crate::policy::limits::BudgetExceeded),
    #[error("needs a person's approval first: {0}")]
    NeedsApproval(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The name the model calls it by (`Read`, `Bash`, `mcp__fs__read_file`, …).
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// The JSON schema of its input.
    fn input_schema(&self) -> Value;
    /// What its effect reaches; the cautious answer unless a tool knows better.
    fn effect(&self) -> Effect {
        Effect::Outside
    }
    /// Whether the call's effect is already in the workspace (for [`Effect::Workspace`]
    /// tools, after a restart): if so it is not made again.
    async fn already_done(&self, _input: &Value, _ctx: &ToolContext<'_>) -> bool {
        false
    }
    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError>;
}

/// A tool as a model is told about it: `{name, description, input_schema}`, the shape of
/// the Anthropic Messages API's `tools` entries.
pub fn definition(tool: &dyn Tool) -> crate::model::ToolDef {
    crate::model::ToolDef {
        name: tool.name().to_string(),
        description: tool.description().to_string(),
        input_schema: tool.input_schema(),
        cache_control: None,
    }
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

/// The text of the file a call's `file_path` names, as it is in the workspace now (`None`
/// when it is absent, unreadable or outside): what [`Tool::already_done`] looks at.
pub(crate) async fn current_text(input: &Value, ctx: &ToolContext<'_>) -> Option<String> {
    let raw = input.get("file_path")?.as_str()?;
    let path = relative_path(ctx.workspace, "file_path", raw).ok()?;
    let bytes = ctx.computer.read(ctx.workspace, &path).await.ok()??;
    String::from_utf8(bytes).ok()
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
