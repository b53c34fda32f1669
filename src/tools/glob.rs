//! `Glob`: the files of the workspace whose path matches a glob, newest first (as Claude
//! Code's `Glob` sorts), honouring `.gitignore`.
//!
//! The [`Computer`](crate::computer::Computer) trait has no listing operation yet, so this
//! walks the workspace root on this host (as `Grep` does). A remote computer needs a `list`
//! (or a `find`/`rg` run through `Computer::run`) before these two work there.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use ignore::WalkBuilder;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Effect, Input, Tool, ToolContext, ToolError, ToolOutput, relative_path};

/// How many paths are listed at most.
const MAX_RESULTS: usize = 100;

/// Folders never searched: git's own and the tools' scratch space.
const SKIPPED: [&str; 2] = [".git", ".proto-tmp"];

pub struct Glob;

#[async_trait]
impl Tool for Glob {
    fn name(&self) -> &str {
        "Glob"
    }

    fn description(&self) -> &str {
        "Finds files by name with a glob pattern such as \"**/*.rs\" or \"src/**/*.ts\". \
         Returns matching paths (relative to the workspace root), most recently modified \
         first, at most 100. Files ignored by .gitignore are left out."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The glob pattern to match files against"},
                "path": {"type": "string", "description": "The directory to search in; defaults to the workspace root"}
            },
            "required": ["pattern"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Inspects
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["pattern", "path"])?;
        let pattern = input.str("pattern")?.to_string();
        if pattern.trim().is_empty() {
            return Err(ToolError::invalid("pattern", "is empty"));
        }
        let search = search_root(ctx, input.opt_str("path")?)?;
        let root = ctx.workspace.root().to_path_buf();
        let cancel = ctx.cancel.clone();
        let found = tokio::task::spawn_blocking(move || {
            let walker = walker(&search, Some(("pattern", &pattern)), None)?;
            collect_files(&root, walker, &cancel)
        })
        .await
        .map_err(|e| ToolError::Failed(format!("Glob: {e}")))??;
        if ctx.cancel.is_cancelled() {
            return Ok(ToolOutput::error("cancelled"));
        }
        if found.is_empty() {
            return Ok(ToolOutput::ok("No files found"));
        }
        let total = found.len();
        let mut listing: Vec<String> = found.into_iter().take(MAX_RESULTS).collect();
        if total > MAX_RESULTS {
            listing.push(format!(
                "(Results are truncated: {MAX_RESULTS} of {total} shown. Consider using a more specific path or pattern.)"
            ));
        }
        Ok(ToolOutput::ok(listing.join("\n")))
    }
}

/// The directory (or file) a search starts from, absolute, checked to be in the workspace.
pub(crate) fn search_root(ctx: &ToolContext<'_>, path: Option<&str>) -> Result<PathBuf, ToolError> {
    // The walk reads this host's disk; another computer's files are searched there.
    if !ctx.workspace.on_this_host() {
        return Err(ToolError::Failed(
            "this workspace is on another computer (SSH), which Grep and Glob cannot read: \
             search it with Bash (`grep -rn`, `find`)"
                .into(),
        ));
    }
    let relative = match path {
        None => String::new(),
        Some(raw) => relative_path(ctx.workspace, "path", raw)?,
    };
    let absolute = if relative.is_empty() {
        ctx.workspace.root().to_path_buf()
    } else {
        ctx.workspace.resolve(&relative)?
    };
    if !absolute.exists() {
        return Err(ToolError::invalid(
            "path",
            format!("{}: no such file or directory", path.unwrap_or_default()),
        ));
    }
    Ok(absolute)
}

/// The files under a search root that a walk will list.
pub(crate) struct Files {
    builder: WalkBuilder,
    /// Only paths matching this glob (gitignore syntax, relative to the search root).
    glob: Option<Gitignore>,
}

/// A walk of `search` honouring `.gitignore` (in a git repository or not), hidden files
/// included (`.github/` matters), `.git` skipped; limited to paths matching `glob` (given in
/// the input field named first) and files of ripgrep type `file_type` when given.
///
/// The glob only filters: unlike ripgrep's `--glob` (an override), it never brings back a
/// file `.gitignore` leaves out, so `*.log` does not list ignored logs.
pub(crate) fn walker(
    search: &Path,
    glob: Option<(&str, &str)>,
    file_type: Option<&str>,
) -> Result<Files, ToolError> {
    let mut builder = WalkBuilder::new(search);
    builder
        .hidden(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| !SKIPPED.iter().any(|s| entry.file_name() == *s));
    let glob = match glob {
        None => None,
        Some((field, pattern)) => {
            // A one-line ignore file is a glob matcher with gitignore's rules (`*.rs` at any
            // depth, `src/*.rs` anchored, `**`, `{a,b}`), without a direct `globset` use.
            let mut matcher = GitignoreBuilder::new(search);
            matcher
                .add_line(None, pattern)
                .map_err(|e| ToolError::invalid(field, format!("{pattern}: {e}")))?;
            Some(
                matcher
                    .build()
                    .map_err(|e| ToolError::invalid(field, format!("{pattern}: {e}")))?,
            )
        }
    };
    if let Some(name) = file_type {
        let mut types = ignore::types::TypesBuilder::new();
        types.add_defaults();
        types.select(name);
        let types = types
            .build()
            .map_err(|e| ToolError::invalid("type", format!("{name}: {e}")))?;
        if !types.definitions().iter().any(|d| d.name() == name) {
            return Err(ToolError::invalid(
                "type",
                format!("{name}: not a known file type (try rust, py, js, ts, go, md)"),
            ));
        }
        builder.types(types);
    }
    Ok(Files { builder, glob })
}

/// The files of a walk as paths relative to `root`, newest first (ties by path, so the
/// order is stable).
pub(crate) fn collect_files(
    root: &Path,
    files: Files,
    cancel: &CancellationToken,
) -> Result<Vec<String>, ToolError> {
    let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut found: Vec<(SystemTime, String)> = Vec::new();
    for entry in files.builder.build() {
        if cancel.is_cancelled() {
            break;
        }
        // An unreadable folder or a broken ignore file is skipped, as ripgrep does.
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        if let Some(glob) = &files.glob
            && !glob.matched(entry.path(), false).is_ignore()
        {
            continue;
        }
        let modified = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((modified, display_path(root, &canonical_root, entry.path())));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// `path` relative to the workspace root, for the model to pass back to the other tools.
pub(crate) fn display_path(root: &Path, canonical_root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .or_else(|_| path.strip_prefix(canonical_root))
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
