//! `Remember`: an agent writes down what it learned for the agents after it — a decision,
//! a pattern, a pitfall — as a knowledge entry of the company repository
//! (`.proto/knowledge/<kind>/<slug>.md`). The entry is kept in the store and committed by
//! the controller with the task's record (secrets taken out there, as from every record
//! file); the call itself is audited by `act()` like any other. The same title remembered
//! again adds evidence to the entry instead of a second file.

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};

use super::{Input, Tool, ToolContext, ToolError, ToolOutput};
use crate::knowledge::KnowledgeKind;
use crate::knowledge::capture::remembered;

/// The tool's name, as agents are granted it.
pub const REMEMBER_TOOL: &str = "Remember";
/// The longest title and body accepted.
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 8 * 1024;

pub struct Remember;

#[async_trait]
impl Tool for Remember {
    fn name(&self) -> &str {
        REMEMBER_TOOL
    }

    fn description(&self) -> &str {
        "Writes down something the company should know from now on (a decision and why, a \
         pattern that worked, a best practice, a lesson from a mistake) as a knowledge entry \
         that later agents receive when their work bears on it. Keep it short and specific; \
         never include secrets."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": KnowledgeKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(), "description": "What sort of knowledge it is"},
                "title": {"type": "string", "description": "One line saying what the entry is about"},
                "body": {"type": "string", "description": "The knowledge itself, in markdown"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Words to find it by"}
            },
            "required": ["kind", "title", "body"],
            "additionalProperties": false
        })
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["kind", "title", "body", "tags"])?;
        let kind_name = input.str("kind")?;
        let kind = KnowledgeKind::from_folder(kind_name).ok_or_else(|| {
            let kinds: Vec<&str> = KnowledgeKind::ALL.iter().map(|k| k.as_str()).collect();
            ToolError::invalid(
                "kind",
                format!("{kind_name:?}: expected one of {}", kinds.join(", ")),
            )
        })?;
        let title = input.str("title")?.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE {
            return Err(ToolError::invalid(
                "title",
                format!("must be 1 to {MAX_TITLE} characters"),
            ));
        }
        let body = input.str("body")?;
        if body.trim().is_empty() || body.len() > MAX_BODY {
            return Err(ToolError::invalid(
                "body",
                format!("must be 1 to {MAX_BODY} bytes"),
            ));
        }
        let tags = input.opt_strings("tags")?.unwrap_or_default();
        let Some(step) = ctx.step else {
            return Err(ToolError::Refused(
                "Remember writes the company's knowledge and needs a task to do it for".into(),
            ));
        };
        let product = step.store.task(step.task).ok().map(|t| t.product);
        let now = Utc::now();
        let capture = remembered(
            kind,
            title,
            body,
            tags,
            (
                ctx.agent,
                step.goal,
                product.as_deref(),
                step.task,
                step.number,
            ),
            now,
        );
        let path = capture.path();
        step.store
            .capture(Some(step.task), &capture, now)
            .map_err(super::Halt::from)?;
        Ok(ToolOutput::ok(format!(
            "Remembered as {path}; it is committed with the task's record."
        )))
    }
}
