//! `Write`: writes a whole file of the workspace (creating its folders), keeping what it
//! replaced for the audit's diff.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Effect, FileChange, Input, Tool, ToolContext, ToolError, ToolOutput, current_text,
    refuse_git_dir, relative_path,
};

pub struct Write;

#[async_trait]
impl Tool for Write {
    fn name(&self) -> &str {
        "Write"
    }

    fn description(&self) -> &str {
        "Writes a file of the workspace, replacing it if it exists and creating missing \
         folders. Prefer Edit for changing part of an existing file."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The path of the file to write (absolute, or relative to the workspace root)"},
                "content": {"type": "string", "description": "The content to write to the file"}
            },
            "required": ["file_path", "content"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Workspace
    }

    async fn already_done(&self, input: &Value, ctx: &ToolContext<'_>) -> bool {
        let content = input.get("content").and_then(Value::as_str);
        content.is_some() && current_text(input, ctx).await.as_deref() == content
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["file_path", "content"])?;
        let raw = input.str("file_path")?;
        let content = input.str("content")?;
        let path = relative_path(ctx.workspace, "file_path", raw)?;
        if path.is_empty() {
            return Err(ToolError::invalid("file_path", "names the workspace root"));
        }
        refuse_git_dir("file_path", &path)?;
        let before = ctx
            .computer
            .read(ctx.workspace, &path)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        ctx.computer
            .write(ctx.workspace, &path, content.as_bytes())
            .await?;
        let message = if before.is_some() {
            format!("The file {raw} has been updated.")
        } else {
            format!("File created successfully at: {raw}")
        };
        Ok(ToolOutput {
            content: message,
            is_error: false,
            changed_files: vec![FileChange {
                path,
                before,
                after: Some(content.to_string()),
            }],
            images: Vec::new(),
        })
    }
}
