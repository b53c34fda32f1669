//! `Grep`: searches file contents with a regular expression (ripgrep syntax), in Claude
//! Code's shapes: `files_with_matches` (the default), `content` with line numbers and
//! context, or `count`. The search is the computer's
//! ([`Computer::search`](crate::computer::Computer::search), ripgrep's crates on this host,
//! the remote's own tools on another); this renders its typed answer.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::glob::{refusal, search_path};
use super::{Effect, Input, Tool, ToolContext, ToolError, ToolOutput, truncate};
use crate::computer::{FileHits, LineKind, SearchMode, SearchRequest};

/// The most output the model is shown, in characters (as for `Bash`).
const MAX_OUTPUT_CHARS: usize = 30_000;

pub struct Grep;

#[async_trait]
impl Tool for Grep {
    fn name(&self) -> &str {
        "Grep"
    }

    fn description(&self) -> &str {
        "Searches file contents with a regular expression (ripgrep syntax), honouring \
         .gitignore. output_mode \"files_with_matches\" (default) lists matching files, \
         newest first; \"content\" shows matching lines (with -n line numbers and -A/-B/-C \
         context); \"count\" shows matches per file. Filter files with glob (\"*.rs\") or \
         type (\"rust\"); head_limit keeps the first N lines or entries; multiline lets a \
         pattern span lines."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The regular expression to search for"},
                "path": {"type": "string", "description": "File or directory to search in; defaults to the workspace root"},
                "glob": {"type": "string", "description": "Glob to filter files (e.g. \"*.js\", \"*.{ts,tsx}\")"},
                "type": {"type": "string", "description": "File type to search (e.g. js, py, rust, go)"},
                "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"], "description": "What to show; defaults to files_with_matches"},
                "-i": {"type": "boolean", "description": "Case insensitive search"},
                "-n": {"type": "boolean", "description": "Show line numbers (content mode); defaults to true"},
                "-A": {"type": "integer", "minimum": 0, "description": "Lines to show after each match (content mode)"},
                "-B": {"type": "integer", "minimum": 0, "description": "Lines to show before each match (content mode)"},
                "-C": {"type": "integer", "minimum": 0, "description": "Lines to show before and after each match (content mode)"},
                "head_limit": {"type": "integer", "minimum": 1, "description": "Show only the first N lines or entries"},
                "multiline": {"type": "boolean", "description": "Let patterns span lines and `.` match newlines"}
            },
            "required": ["pattern"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Inspects
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(
            input,
            &[
                "pattern",
                "path",
                "glob",
                "type",
                "output_mode",
                "-i",
                "-n",
                "-A",
                "-B",
                "-C",
                "head_limit",
                "multiline",
            ],
        )?;
        let pattern = input.str("pattern")?;
        let mode = match input.opt_str("output_mode")? {
            None | Some("files_with_matches") => SearchMode::FilesWithMatches,
            Some("content") => SearchMode::Content,
            Some("count") => SearchMode::Count,
            Some(other) => {
                return Err(ToolError::invalid(
                    "output_mode",
                    format!("{other}: expected content, files_with_matches or count"),
                ));
            }
        };
        let lines = |field: &str| -> Result<Option<usize>, ToolError> {
            Ok(input
                .opt_u64(field)?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
        };
        let context = lines("-C")?;
        let request = SearchRequest {
            pattern: pattern.to_string(),
            path: search_path(ctx, input.opt_str("path")?)?,
            glob: input.opt_str("glob")?.map(str::to_owned),
            file_type: input.opt_str("type")?.map(str::to_owned),
            case_insensitive: input.bool_or("-i", false)?,
            multiline: input.bool_or("multiline", false)?,
            mode,
            before: lines("-B")?.or(context).unwrap_or(0),
            after: lines("-A")?.or(context).unwrap_or(0),
            limit: lines("head_limit")?.filter(|n| *n > 0),
        };
        let line_numbers = input.bool_or("-n", true)?;
        let hits = ctx
            .computer
            .search(ctx.workspace, &request, ctx.cancel)
            .await
            .map_err(refusal)?;
        if ctx.cancel.is_cancelled() {
            return Ok(ToolOutput::error("cancelled"));
        }
        Ok(ToolOutput::ok(render(&request, line_numbers, hits)))
    }
}

/// The answer in ripgrep's shapes: `path`, `path:count`, or `path:line:text` with
/// `path-line-text` context lines and `--` between groups.
fn render(request: &SearchRequest, line_numbers: bool, hits: Vec<FileHits>) -> String {
    let context = request.mode == SearchMode::Content && (request.before > 0 || request.after > 0);
    let mut entries: Vec<String> = Vec::new();
    let matched_files = hits.len();
    let total_matches: usize = hits.iter().map(|h| h.matches).sum();
    for (n, file) in hits.into_iter().enumerate() {
        match request.mode {
            SearchMode::FilesWithMatches => entries.push(file.path),
            SearchMode::Count => entries.push(format!("{}:{}", file.path, file.matches)),
            SearchMode::Content => {
                if n > 0 && context {
                    entries.push("--".to_string());
                }
                for line in file.lines {
                    let separator = match line.kind {
                        LineKind::Match => ':',
                        LineKind::Context => '-',
                        LineKind::Break => {
                            entries.push("--".to_string());
                            continue;
                        }
                    };
                    entries.push(if line_numbers {
                        format!(
                            "{}{separator}{}{separator}{}",
                            file.path, line.number, line.text
                        )
                    } else {
                        format!("{}{separator}{}", file.path, line.text)
                    });
                }
            }
        }
    }
    if matched_files == 0 {
        return match request.mode {
            SearchMode::FilesWithMatches => "No files found".to_string(),
            _ => "No matches found".to_string(),
        };
    }
    let shown_limit = request.limit.unwrap_or(usize::MAX);
    let cut = entries.len() > shown_limit;
    entries.truncate(shown_limit);
    let mut text = match request.mode {
        SearchMode::FilesWithMatches => format!(
            "Found {} {}\n{}",
            entries.len(),
            if entries.len() == 1 { "file" } else { "files" },
            entries.join("\n")
        ),
        // Totals only when every file was searched.
        SearchMode::Count if !cut => format!(
            "{}\n\nFound {total_matches} matching lines across {matched_files} files",
            entries.join("\n")
        ),
        SearchMode::Count | SearchMode::Content => entries.join("\n"),
    };
    if cut {
        text.push_str(&format!(
            "\n\n[Showing the first {shown_limit} entries (head_limit)]"
        ));
    }
    truncate(&text, MAX_OUTPUT_CHARS)
}
