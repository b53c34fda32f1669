//! `Read`: a file of the workspace as numbered lines (`cat -n` style), a window of it with
//! `offset`/`limit`, long lines cut, as Claude Code's `Read` shows files.

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::computer::ComputerError;

use super::{Effect, Input, Tool, ToolContext, ToolError, ToolOutput, relative_path};

/// How many lines are shown when no `limit` is given.
const DEFAULT_LIMIT: usize = 2000;
/// Longer lines are cut: one minified line must not fill the context.
const MAX_LINE_CHARS: usize = 2000;

pub struct Read;

#[async_trait]
impl Tool for Read {
    fn name(&self) -> &str {
        "Read"
    }

    fn description(&self) -> &str {
        "Reads a file of the workspace. Returns its lines numbered from 1 (cat -n format). \
         By default up to 2000 lines from the start; give offset (the line to start at) and \
         limit (how many lines) for long files. Lines longer than 2000 characters are cut."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The path of the file to read (absolute, or relative to the workspace root)"},
                "offset": {"type": "integer", "minimum": 1, "description": "The line number to start reading from"},
                "limit": {"type": "integer", "minimum": 1, "description": "The number of lines to read"}
            },
            "required": ["file_path"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Inspects
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["file_path", "offset", "limit"])?;
        let raw = input.str("file_path")?;
        let offset = input.opt_u64("offset")?.unwrap_or(1).max(1);
        let limit = match input.opt_u64("limit")? {
            Some(0) => return Err(ToolError::invalid("limit", "must be at least 1")),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => DEFAULT_LIMIT,
        };
        let path = relative_path(ctx.workspace, "file_path", raw)?;
        let directory = || {
            ToolOutput::error(format!(
                "{raw} is a directory, not a file. Use Glob or Bash `ls` to list it."
            ))
        };
        if path.is_empty() {
            return Ok(directory());
        }
        let bytes = match ctx.computer.read(ctx.workspace, &path).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(ToolOutput::error(format!("File does not exist: {raw}"))),
            // Asked of the computer rather than checked here: the file may live elsewhere.
            Err(ComputerError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::IsADirectory =>
            {
                return Ok(directory());
            }
            Err(e) => return Err(e.into()),
        };
        let content = String::from_utf8_lossy(&bytes);
        if content.is_empty() {
            return Ok(ToolOutput::ok(format!("{raw} exists but is empty.")));
        }
        let total = content.lines().count();
        let start = usize::try_from(offset - 1).unwrap_or(usize::MAX);
        if start >= total {
            return Ok(ToolOutput::error(format!(
                "offset {offset} is past the end of {raw}, which has {total} lines"
            )));
        }
        let mut shown = String::new();
        for (index, line) in content.lines().enumerate().skip(start).take(limit) {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let line = match line.char_indices().nth(MAX_LINE_CHARS) {
                Some((cut, _)) => format!("{}… [line cut]", &line[..cut]),
                None => line.to_string(),
            };
            shown.push_str(&format!("{:>6}\t{line}\n", index + 1));
        }
        let end = start.saturating_add(limit).min(total);
        if end < total {
            shown.push_str(&format!(
                "\n[Showing lines {}-{end} of {total}; read on with offset {}]\n",
                start + 1,
                end + 1
            ));
        }
        Ok(ToolOutput::ok(shown))
    }
}
