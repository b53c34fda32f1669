//! `Glob`: the files of the workspace whose path matches a glob, newest first (as Claude
//! Code's `Glob` sorts), honouring `.gitignore`. The listing is the computer's
//! ([`Computer::glob`](crate::computer::Computer::glob)), so it sees the files where the
//! workspace is, on this host or another.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Effect, Input, Tool, ToolContext, ToolError, ToolOutput, relative_path};
use crate::computer::{ComputerError, GlobRequest};

/// How many paths are listed at most.
const MAX_RESULTS: usize = 100;

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
        let request = GlobRequest {
            glob: pattern,
            path: search_path(ctx, input.opt_str("path")?)?,
        };
        let found = ctx
            .computer
            .glob(ctx.workspace, &request, ctx.cancel)
            .await
            .map_err(refusal)?;
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

/// Where a search starts, relative to the workspace root ("" for the root), checked to be
/// in the workspace as written; the computer checks where its links lead.
pub(crate) fn search_path(ctx: &ToolContext<'_>, path: Option<&str>) -> Result<String, ToolError> {
    match path {
        None => Ok(String::new()),
        Some(raw) => relative_path(ctx.workspace, "path", raw),
    }
}

/// A search the computer refused for its input, as the model's input error.
pub(crate) fn refusal(e: ComputerError) -> ToolError {
    match e {
        ComputerError::Search { field, reason } => ToolError::invalid(&field.to_string(), reason),
        ComputerError::OutsideWorkspace { path } => ToolError::OutsideWorkspace {
            field: "path".into(),
            path,
        },
        other => ToolError::Computer(other),
    }
}
