//! `Skill`: loads the full instructions of a skill the agent holds (listed by name and
//! description in its system prompt), as Claude Code's Skill tool does. Only a held skill
//! loads: a model cannot read another agent's instructions by guessing a name.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::spec::claude::SKILL_TOOL;
use crate::spec::{AgentSpec, Spec};
use crate::tools::{Effect, Tool, ToolContext, ToolError, ToolOutput};

pub struct SkillTool {
    spec: Arc<Spec>,
    agent: String,
    /// The agent's `skills` references, as declared.
    held: Vec<String>,
}

impl SkillTool {
    pub fn new(spec: Arc<Spec>, agent: &str, declared: &AgentSpec) -> Self {
        SkillTool {
            spec,
            agent: agent.to_string(),
            held: declared.skills.clone(),
        }
    }

    /// The instructions of the skill `name`, if the agent holds it.
    fn load(&self, name: &str) -> Option<String> {
        let skill = self
            .spec
            .claude
            .skills
            .iter()
            .find(|s| s.answers_to(name))?;
        let held = self.held.iter().any(|r| skill.answers_to(r));
        held.then(|| {
            format!(
                "<skill name=\"{}\" file=\"{}\">\n{}\n</skill>",
                skill.name,
                skill.file,
                skill.body.trim()
            )
        })
    }
}

#[async_trait]
impl Tool for SkillTool {
    fn name(&self) -> &str {
        SKILL_TOOL
    }

    fn description(&self) -> &str {
        "Load the full instructions of one of your skills (listed in your system prompt) when the work \
         calls for it; follow them once loaded."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "skill": { "type": "string", "enum": self.held, "description": "The skill's name." }
            },
            "required": ["skill"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Inspects
    }

    async fn run(&self, input: &Value, _ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let name = input.get("skill").and_then(Value::as_str).ok_or_else(|| {
            ToolError::invalid("skill", "the name of the skill to load is missing")
        })?;
        Ok(match self.load(name) {
            Some(body) => ToolOutput::ok(body),
            None => ToolOutput::error(format!("{} holds no skill named {name}", self.agent)),
        })
    }
}
