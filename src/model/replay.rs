//! Recorded exchanges played back in order, for tests and demos that must run offline.
//!
//! A replay file is either a JSON array or JSON Lines, one [`Exchange`] per entry:
//!
//! ```json
//! {"match": "fix the failing test", "response": {"content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn"}}
//! ```
//!
//! `match`, when given, must occur in the newest user message's text (or its tool results'
//! content): a replay that drifted from the conversation it was recorded for fails loudly
//! instead of answering the wrong question. Likewise a recorded tool call the request does
//! not offer is an error, as a real model can only call the tools it is given. Responses
//! come back in file order, and an exhausted file is an error, never a silent repeat.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::{Model, ModelError, Request, Response, StreamEvent, emit, last_user_content};

/// One recorded exchange.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// A substring the request's newest user content must contain.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_key: Option<String>,
    pub response: Response,
}

/// A [`Model`] that answers from recorded exchanges.
#[derive(Debug)]
pub struct Replay {
    name: String,
    /// Where the exchanges came from, for error messages.
    source: String,
    exchanges: Vec<Exchange>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: usize,
    requests: Vec<Request>,
}

impl Replay {
    /// A replay of `exchanges`; `source` names them in errors.
    pub fn new(
        name: impl Into<String>,
        source: impl Into<String>,
        exchanges: Vec<Exchange>,
    ) -> Self {
        Replay {
            name: name.into(),
            source: source.into(),
            exchanges,
            state: Mutex::new(State::default()),
        }
    }

    /// Reads exchanges from a JSON array or JSON Lines file.
    pub fn from_file(name: impl Into<String>, path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Config(format!("replay file {}: {e}", path.display())))?;
        let exchanges = parse_exchanges(&text)
            .map_err(|e| ModelError::Config(format!("replay file {}: {e}", path.display())))?;
        Ok(Self::new(name, path.display().to_string(), exchanges))
    }

    /// How many exchanges were served.
    pub fn served(&self) -> usize {
        self.lock().next
    }

    /// Every request received, in order (the recorded ones and the one that failed).
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent: recover it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses a JSON array of exchanges, or JSON Lines (blank lines skipped).
pub fn parse_exchanges(text: &str) -> Result<Vec<Exchange>, String> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[async_trait]
impl Model for Replay {
    async fn complete(
        &self,
        request: &Request,
        events: Option<UnboundedSender<StreamEvent>>,
    ) -> Result<Response, ModelError> {
        let response = {
            let mut state = self.lock();
            state.requests.push(request.clone());
            let index = state.next;
            let Some(exchange) = self.exchanges.get(index) else {
                return Err(ModelError::ReplayExhausted {
                    file: self.source.clone(),
                    served: index,
                });
            };
            if let Some(key) = &exchange.match_key
                && !last_user_content(request).contains(key.as_str())
            {
                return Err(ModelError::ReplayMismatch {
                    file: self.source.clone(),
                    index,
                    expected: key.clone(),
                });
            }
            if let Some((_, tool, _)) = exchange
                .response
                .tool_uses()
                .into_iter()
                .find(|(_, name, _)| !request.tools.iter().any(|t| t.name == *name))
            {
                return Err(ModelError::ReplayToolNotOffered {
                    file: self.source.clone(),
                    index,
                    tool: tool.to_string(),
                    offered: request
                        .tools
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            state.next += 1;
            let mut response = exchange.response.clone();
            // Recordings may leave the model out; report the one asked for.
            if response.model.is_empty() {
                response.model = request.model.clone();
            }
            response
        };
        for ev in response.to_events() {
            emit(&events, ev);
        }
        Ok(response)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
