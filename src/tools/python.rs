//! `Python`: runs a Python 3 program in the workspace. `RunRequest` has no stdin, so the code
//! is written to a file under `.proto-tmp/` (ignored by git, so it is never committed) and run
//! with `python3`, then removed (even after a timeout).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::bash::{MAX_TIMEOUT_MS, run_shell, timeout};
use super::{Input, Tool, ToolContext, ToolError, ToolOutput, shell_quote};
use crate::computer::{Origin, RunRequest};

/// The tools' scratch folder in the workspace.
pub(crate) const TMP_DIR: &str = crate::computer::workspace::SCRATCH;

/// How long removing the script may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinguishes scripts written in the same nanosecond by parallel calls.
static COUNTER: AtomicU64 = AtomicU64::new(0);

pub struct Python;

#[async_trait]
impl Tool for Python {
    fn name(&self) -> &str {
        "Python"
    }

    fn description(&self) -> &str {
        "Runs Python 3 code at the workspace root and returns what it prints (stdout and \
         stderr) and its exit code. timeout is in milliseconds (default 120000, at most \
         600000)."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "The Python program to run"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "description": "Optional timeout in milliseconds"}
            },
            "required": ["code"],
            "additionalProperties": false
        })
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["code", "timeout"])?;
        let code = input.str("code")?;
        let timeout = timeout(&input)?;
        ctx.computer
            .write(ctx.workspace, &format!("{TMP_DIR}/.gitignore"), b"*\n")
            .await?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let agent: String = ctx
            .agent
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let script = format!(
            "{TMP_DIR}/{agent}-{nanos}-{}.py",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ctx.computer
            .write(ctx.workspace, &script, code.as_bytes())
            .await?;
        let quoted = shell_quote(&script);
        let result = run_shell(ctx, &format!("python3 {quoted}"), timeout, BTreeMap::new()).await;
        // Removed in a run of its own: a timeout or cancellation kills the program's whole
        // process group, which would take an `rm` chained after it along.
        let cleanup = RunRequest {
            command: format!("rm -f {quoted}"),
            cwd: String::new(),
            env: BTreeMap::new(),
            timeout: CLEANUP_TIMEOUT,
            origin: Origin::Agent,
            stdin: None,
        };
        if let Err(e) = ctx
            .computer
            .run(ctx.workspace, &cleanup, None, &CancellationToken::new())
            .await
        {
            // Left behind it is only clutter, ignored by git; the result still stands.
            tracing::warn!(script = %script, error = %e, "could not remove a Python script");
        }
        result
    }
}
