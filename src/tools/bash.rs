//! `Bash`: a shell command in the workspace, through `Computer::run` (its own process group,
//! a plain environment, killed on timeout or cancellation). The model sees stdout and stderr
//! as they interleaved, cut to 30000 characters as Claude Code does, and the exit code; a
//! failing command is an error *output* (the model reads why), not a [`ToolError`].
//!
//! Each call is a fresh `sh -c` at the workspace root: unlike Claude Code's shell, a `cd`
//! or an `export` does not carry over to the next call.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Input, Tool, ToolContext, ToolError, ToolOutput};
use crate::computer::{Origin, Output, RunRequest};

/// The default timeout, in milliseconds (Claude Code's: two minutes).
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// The longest timeout a model may ask for (ten minutes).
pub(crate) const MAX_TIMEOUT_MS: u64 = 600_000;
/// The most output the model is shown, in characters.
pub(crate) const MAX_OUTPUT_CHARS: usize = 30_000;

pub struct Bash;

#[async_trait]
impl Tool for Bash {
    fn name(&self) -> &str {
        "Bash"
    }

    fn description(&self) -> &str {
        "Runs a shell command (sh -c) at the workspace root and returns its output (stdout \
         and stderr, at most 30000 characters) and exit code. timeout is in milliseconds \
         (default 120000, at most 600000). Each call starts afresh at the workspace root. \
         Prefer Read, Edit, Glob and Grep for files."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to execute"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "description": "Optional timeout in milliseconds (max 600000)"},
                "description": {"type": "string", "description": "Clear, concise description of what this command does in 5-10 words"}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["command", "timeout", "description"])?;
        let command = input.str("command")?;
        if command.trim().is_empty() {
            return Err(ToolError::invalid("command", "is empty"));
        }
        let _ = input.opt_str("description")?;
        let timeout = timeout(&input)?;
        run_shell(ctx, command, timeout, BTreeMap::new()).await
    }
}

/// The `timeout` field (milliseconds), checked against [`MAX_TIMEOUT_MS`].
pub(crate) fn timeout(input: &Input<'_>) -> Result<Duration, ToolError> {
    match input.opt_u64("timeout")? {
        None => Ok(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
        Some(0) => Err(ToolError::invalid("timeout", "must be at least 1 ms")),
        Some(ms) if ms > MAX_TIMEOUT_MS => Err(ToolError::invalid(
            "timeout",
            format!("{ms} ms is over the maximum of {MAX_TIMEOUT_MS} ms"),
        )),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

/// Runs `command` in the workspace and renders the outcome for the model.
pub(crate) async fn run_shell(
    ctx: &ToolContext<'_>,
    command: &str,
    timeout: Duration,
    env: BTreeMap<String, String>,
) -> Result<ToolOutput, ToolError> {
    let request = RunRequest {
        command: command.to_string(),
        cwd: String::new(),
        env,
        timeout,
        origin: Origin::Agent,
        stdin: None,
    };
    let (sender, receiver) = mpsc::unbounded_channel();
    // Collected while the command runs, so a flood of output is cut as it comes instead of
    // piling up in the channel.
    let (outcome, combined) = tokio::join!(
        ctx.computer
            .run(ctx.workspace, &request, Some(sender), ctx.cancel),
        collect(receiver),
    );
    let outcome = outcome?;
    let mut content = combined;
    if content.is_empty() && !(outcome.stdout.is_empty() && outcome.stderr.is_empty()) {
        // A computer that does not stream still returns the tails of both streams.
        content = super::truncate(
            &format!("{}{}", outcome.stdout, outcome.stderr),
            MAX_OUTPUT_CHARS,
        );
    }
    let status = if outcome.timed_out {
        Some(format!(
            "Command timed out after {} ms and was killed",
            timeout.as_millis()
        ))
    } else if outcome.cancelled {
        Some("Command was cancelled".to_string())
    } else {
        match outcome.code {
            Some(0) => None,
            Some(code) => Some(format!("Exit code: {code}")),
            None => Some("Command was killed by a signal".to_string()),
        }
    };
    if let Some(status) = &status {
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(status);
    } else if content.is_empty() {
        content.push_str("(no output)");
    }
    Ok(ToolOutput {
        content,
        is_error: status.is_some(),
        changed_files: Vec::new(),
    })
}

/// Stdout and stderr in the order they arrived, cut at [`MAX_OUTPUT_CHARS`] with a note of
/// how many lines were left off.
async fn collect(mut receiver: mpsc::UnboundedReceiver<Output>) -> String {
    let mut kept = String::new();
    let mut kept_chars = 0usize;
    let mut dropped_lines = 0usize;
    let mut dropping = false;
    while let Some(chunk) = receiver.recv().await {
        let (Output::Stdout(text) | Output::Stderr(text)) = chunk;
        if dropping {
            dropped_lines += text.matches('\n').count();
            continue;
        }
        let chars = text.chars().count();
        if kept_chars + chars <= MAX_OUTPUT_CHARS {
            kept.push_str(&text);
            kept_chars += chars;
            continue;
        }
        let room = MAX_OUTPUT_CHARS - kept_chars;
        let cut = text.char_indices().nth(room).map_or(text.len(), |(i, _)| i);
        kept.push_str(&text[..cut]);
        dropped_lines += text[cut..].matches('\n').count().max(1);
        dropping = true;
    }
    if dropping {
        kept.push_str(&format!("\n\n... [{dropped_lines} lines truncated] ...\n"));
    }
    kept
}
