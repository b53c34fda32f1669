//! What agents do, as typed events. The store appends them to its event log beside the task
//! transitions (kinds [`EventKind::AgentModel`] and [`EventKind::AgentTool`]), and `proto logs`, the progress line of `proto run` and
//! any later stream read them back as this same type.

use serde::{Deserialize, Serialize};

use super::{Event, EventKind};

/// One step of an agent's work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "activity")]
pub enum Activity {
    /// A model answered one turn.
    #[serde(rename_all = "camelCase")]
    Model {
        agent: String,
        model: String,
        turn: u32,
        input_tokens: u64,
        output_tokens: u64,
        cache_read_tokens: u64,
        cache_write_tokens: u64,
        usd: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
    },
    /// A tool call went through `act()`: done, refused or failed.
    #[serde(rename_all = "camelCase")]
    Tool {
        agent: String,
        /// The call in permission-rule form (`Write(hello.txt)`).
        call: String,
        step: u32,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Activity {
    /// The event kind it is stored as.
    pub fn kind(&self) -> EventKind {
        match self {
            Activity::Model { .. } => EventKind::AgentModel,
            Activity::Tool { .. } => EventKind::AgentTool,
        }
    }

    /// The activity an event records, if it records one.
    pub fn from_event(event: &Event) -> Option<Activity> {
        matches!(event.kind, EventKind::AgentModel | EventKind::AgentTool)
            .then(|| serde_json::from_value(event.data.clone()).ok())
            .flatten()
    }

    /// One line for a person.
    pub fn line(&self) -> String {
        match self {
            Activity::Model {
                agent,
                model,
                turn,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                usd,
                stop_reason,
                ..
            } => format!(
                "{agent}: {model} turn {} ({input_tokens} in, {cache_read_tokens} cached, {output_tokens} out, ${usd:.4}){}",
                turn + 1,
                // Said, so a session that kept going after a cut-off answer shows why.
                if stop_reason.as_deref() == Some("max_tokens") {
                    "; cut off at max_tokens, told to continue"
                } else {
                    ""
                }
            ),
            Activity::Tool {
                agent,
                call,
                ok: true,
                ..
            } => format!("{agent}: {call}"),
            Activity::Tool {
                agent, call, error, ..
            } => format!(
                "{agent}: {call} failed: {}",
                error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}
