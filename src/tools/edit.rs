//! `Edit`: exact string replacement in a file of the workspace. The string must match
//! exactly once (unless `replace_all`), so an edit never lands somewhere the model did not
//! mean; zero or several matches are errors that say how many.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Effect, FileChange, Input, Tool, ToolContext, ToolError, ToolOutput, current_text,
    refuse_git_dir, relative_path, text,
};

pub struct Edit;

#[async_trait]
impl Tool for Edit {
    fn name(&self) -> &str {
        "Edit"
    }

    fn description(&self) -> &str {
        "Replaces old_string with new_string in a file of the workspace. old_string must \
         match exactly (whitespace included) and only once, unless replace_all is true; \
         include enough surrounding lines to make it unique. An empty old_string creates a \
         file that does not exist yet."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The path of the file to modify (absolute, or relative to the workspace root)"},
                "old_string": {"type": "string", "description": "The text to replace"},
                "new_string": {"type": "string", "description": "The text to replace it with (must be different from old_string)"},
                "replace_all": {"type": "boolean", "default": false, "description": "Replace all occurrences of old_string"}
            },
            "required": ["file_path", "old_string", "new_string"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Workspace
    }

    /// The new text is there and the old is not (an edit that created a file: the file
    /// holds exactly the new text).
    async fn already_done(&self, input: &Value, ctx: &ToolContext<'_>) -> bool {
        let text = |k: &str| input.get(k).and_then(Value::as_str);
        let (Some(old), Some(new)) = (text("old_string"), text("new_string")) else {
            return false;
        };
        match current_text(input, ctx).await {
            Some(now) if old.is_empty() => now == new,
            Some(now) => now.contains(new) && !now.contains(old),
            None => false,
        }
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(
            input,
            &["file_path", "old_string", "new_string", "replace_all"],
        )?;
        let raw = input.str("file_path")?;
        let old = input.str("old_string")?;
        let new = input.str("new_string")?;
        let replace_all = input.bool_or("replace_all", false)?;
        if old == new {
            return Err(ToolError::invalid(
                "new_string",
                "is the same as old_string; nothing would change",
            ));
        }
        let path = relative_path(ctx.workspace, "file_path", raw)?;
        if path.is_empty() {
            return Err(ToolError::invalid("file_path", "names the workspace root"));
        }
        refuse_git_dir("file_path", &path)?;

        let before = match ctx.computer.read(ctx.workspace, &path).await? {
            Some(bytes) => Some(text(raw, bytes)?),
            None => None,
        };
        let after = match (&before, old.is_empty()) {
            // Claude Code's way of creating a file through Edit.
            (None, true) => new.to_string(),
            (None, false) => {
                return Ok(ToolOutput::error(format!("File does not exist: {raw}")));
            }
            (Some(current), true) if !current.is_empty() => {
                return Ok(ToolOutput::error(format!(
                    "{raw} already exists; an empty old_string only creates new files"
                )));
            }
            (Some(_), true) => new.to_string(),
            (Some(current), false) => {
                let count = current.matches(old).count();
                if count == 0 {
                    return Ok(ToolOutput::error(format!(
                        "String to replace not found in {raw} (0 matches). It must match \
                         exactly, whitespace and indentation included; Read the file first."
                    )));
                }
                if count > 1 && !replace_all {
                    return Ok(ToolOutput::error(format!(
                        "Found {count} matches of the string to replace in {raw}, but \
                         replace_all is false. Include more surrounding context to make it \
                         unique, or set replace_all to replace every one."
                    )));
                }
                if replace_all {
                    current.replace(old, new)
                } else {
                    current.replacen(old, new, 1)
                }
            }
        };
        ctx.computer
            .write(ctx.workspace, &path, after.as_bytes())
            .await?;
        let replaced = match &before {
            Some(current) if !old.is_empty() => current.matches(old).count(),
            _ => 0,
        };
        let message = if before.is_none() {
            format!("File created successfully at: {raw}")
        } else if replaced > 1 {
            format!("The file {raw} has been updated: {replaced} occurrences replaced.")
        } else {
            format!("The file {raw} has been updated.")
        };
        Ok(ToolOutput {
            content: message,
            is_error: false,
            changed_files: vec![FileChange {
                path,
                before,
                after: Some(after),
            }],
            images: Vec::new(),
        })
    }
}
