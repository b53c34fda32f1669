//! Model providers behind one [`Model`] trait.
//!
//! The request and response types are provider-neutral but modelled on the Anthropic Messages
//! API, because that is the richest wire format we speak (thinking blocks with signatures,
//! prompt-cache breakpoints, parallel tool use): every other provider maps to and from it.
//! The types serialize exactly as the Anthropic API expects, so a recorded request or response
//! (the store, replay files) reads like the wire.
//!
//! - [`anthropic`]: the Messages API, always streaming.
//! - [`openai`]: OpenAI-compatible chat completions (llama.cpp, Ollama, vLLM, …).
//! - [`replay`]: recorded exchanges from a file, for tests and demos.
//! - [`limit`]: the wall-clock limit of one turn (`models.turnTimeout`).
//! - [`endpoint`]: base URLs read as the official SDKs read them.
//! - [`sse`]: the incremental server-sent-events parser both HTTP providers use.
//! - [`prices`]: default prices per model and the cost of a call.
//! - [`retry`]: waiting out 429/529 with `retry-after` honoured.

pub mod anthropic;
pub mod endpoint;
pub mod limit;
pub mod openai;
pub mod prices;
pub mod replay;
pub mod retry;
pub mod router;
pub mod sse;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

pub use anthropic::{Anthropic, drop_short_breakpoints, place_cache_breakpoints};
pub use openai::OpenAi;
pub use prices::{PriceTable, cost, default_prices};
pub use replay::{Exchange, Replay};
pub use retry::{RetryPolicy, with_retries, with_retry_policy};
pub use router::{BreakerState, ProviderHealth, Router};

/// A language model that completes a conversation.
///
/// Implementations stream when their wire protocol allows it; `events`, when given, receives
/// every [`StreamEvent`] as it arrives (for progress display), and the assembled [`Response`]
/// is returned at the end either way. A closed receiver is not an error.
#[async_trait]
pub trait Model: Send + Sync {
    /// Sends `request` and returns the complete response.
    async fn complete(
        &self,
        request: &Request,
        events: Option<UnboundedSender<StreamEvent>>,
    ) -> Result<Response, ModelError>;

    /// The provider's name, as the Company spec declares it.
    fn name(&self) -> &str;
}

/// One call to a model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Request {
    /// The model id, e.g. `claude-sonnet-4-5`.
    pub model: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<SystemBlock>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    pub max_tokens: u32,
    /// Extended thinking budget in tokens; `None` disables thinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// A block of the system prompt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename = "text")]
pub struct SystemBlock {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

impl SystemBlock {
    pub fn text(text: impl Into<String>) -> Self {
        SystemBlock {
            text: text.into(),
            cache_control: None,
        }
    }
}

/// A prompt-cache breakpoint: the prefix up to and including the marked block is cached.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CacheControl {
    /// Always `ephemeral` today.
    #[serde(rename = "type")]
    pub kind: String,
}

impl CacheControl {
    pub fn ephemeral() -> Self {
        CacheControl {
            kind: "ephemeral".to_string(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message holding one text block.
    pub fn user(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: vec![ContentBlock::text(text)],
        }
    }

    /// An assistant message holding one text block.
    pub fn assistant(text: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: vec![ContentBlock::text(text)],
        }
    }

    /// The concatenated text blocks of this message.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A block of message content, in the Anthropic wire shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// Extended thinking. The signature must come back unchanged in later requests.
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    /// Thinking the safety system encrypted; sent back unchanged like [`ContentBlock::Thinking`].
    RedactedThinking { data: String },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// What a tool call gave back: text, and images when the tool returned some (a
    /// screenshot). Text alone serializes as the plain string it always was.
    ToolResult {
        tool_use_id: String,
        content: ToolContent,
        #[serde(default, skip_serializing_if = "is_false")]
        is_error: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text {
            text: text.into(),
            cache_control: None,
        }
    }

    pub fn tool_use(id: impl Into<String>, name: impl Into<String>, input: Value) -> Self {
        ContentBlock::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
            cache_control: None,
        }
    }

    pub fn tool_result(tool_use_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self::tool_result_with_images(tool_use_id, content, Vec::new())
    }

    /// A tool result carrying images (a screenshot) before its text.
    pub fn tool_result_with_images(
        tool_use_id: impl Into<String>,
        content: impl Into<String>,
        images: Vec<Image>,
    ) -> Self {
        ContentBlock::ToolResult {
            tool_use_id: tool_use_id.into(),
            content: ToolContent {
                text: content.into(),
                images,
            },
            is_error: false,
            cache_control: None,
        }
    }

    pub fn tool_error(tool_use_id: impl Into<String>, content: impl Into<String>) -> Self {
        ContentBlock::ToolResult {
            tool_use_id: tool_use_id.into(),
            content: ToolContent::text(content),
            is_error: true,
            cache_control: None,
        }
    }

    /// The block's cache breakpoint slot, if the API allows one on this kind of block
    /// (thinking blocks cannot carry `cache_control`).
    pub fn cache_control_mut(&mut self) -> Option<&mut Option<CacheControl>> {
        match self {
            ContentBlock::Text { cache_control, .. }
            | ContentBlock::ToolUse { cache_control, .. }
            | ContentBlock::ToolResult { cache_control, .. } => Some(cache_control),
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => None,
        }
    }
}

/// The content of a tool result: its text, and the images it carries. On the wire (and in
/// anything that records messages) text alone is the plain string it always was; with
/// images it is the Messages API's list of blocks, the images first:
/// `[{"type":"image","source":{...}}, {"type":"text","text":...}]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolContent {
    pub text: String,
    pub images: Vec<Image>,
}

impl ToolContent {
    pub fn text(text: impl Into<String>) -> Self {
        ToolContent {
            text: text.into(),
            images: Vec::new(),
        }
    }
}

impl From<String> for ToolContent {
    fn from(text: String) -> Self {
        ToolContent::text(text)
    }
}

impl From<&str> for ToolContent {
    fn from(text: &str) -> Self {
        ToolContent::text(text)
    }
}

impl Serialize for ToolContent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if self.images.is_empty() {
            return serializer.serialize_str(&self.text);
        }
        let with_text = !self.text.is_empty();
        let mut seq = serializer.serialize_seq(Some(self.images.len() + usize::from(with_text)))?;
        for image in &self.images {
            seq.serialize_element(image)?;
        }
        if with_text {
            seq.serialize_element(&serde_json::json!({"type": "text", "text": self.text}))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ToolContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Blocks(Vec<Value>),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Text(text) => Ok(ToolContent::text(text)),
            Wire::Blocks(blocks) => {
                let mut content = ToolContent::default();
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => content
                            .text
                            .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
                        Some("image") => content
                            .images
                            .push(Image::deserialize(block).map_err(serde::de::Error::custom)?),
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "tool result content: unknown block type {other:?}"
                            )));
                        }
                    }
                }
                Ok(content)
            }
        }
    }
}

/// The kinds of image a tool result may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Png,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Png => "image/png",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "image/png" => Some(MediaType::Png),
            _ => None,
        }
    }
}

/// An image for the model (a screenshot): its bytes as base64, encoded once, with the
/// SHA-256 and size that journals and the audit keep instead of the pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub media_type: MediaType,
    /// The bytes, base64 (standard alphabet, padded), as the APIs take them.
    pub data: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Size of the bytes.
    pub bytes: usize,
}

impl Image {
    /// A PNG image.
    pub fn png(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        use sha2::Digest as _;
        Image {
            media_type: MediaType::Png,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            sha256: hex(&sha2::Sha256::digest(bytes)),
            bytes: bytes.len(),
        }
    }

    /// What identifies the image without its pixels: `{mediaType, sha256, bytes}`, for
    /// journals and the audit.
    pub fn summary(&self) -> Value {
        serde_json::json!({
            "mediaType": self.media_type.as_str(),
            "sha256": self.sha256,
            "bytes": self.bytes,
        })
    }

    /// `data:image/png;base64,...`, the form OpenAI-style APIs take.
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.media_type.as_str(), self.data)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Serialize for Image {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde_json::json!({
            "type": "image",
            "source": {"type": "base64", "media_type": self.media_type.as_str(), "data": self.data},
        })
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Image {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        use serde::de::Error as _;
        let block = Value::deserialize(deserializer)?;
        let source = &block["source"];
        let media = source["media_type"].as_str().unwrap_or_default();
        let media_type = MediaType::parse(media)
            .ok_or_else(|| D::Error::custom(format!("image: unsupported media type {media:?}")))?;
        let data = source["data"]
            .as_str()
            .ok_or_else(|| D::Error::custom("image: no base64 `source.data`"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| D::Error::custom(format!("image: {e}")))?;
        Ok(Image {
            media_type,
            ..Image::png(&bytes)
        })
    }
}

/// A tool the model may call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON Schema of the tool's input.
    pub input_schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

/// Why the model stopped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "String", into = "String")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    PauseTurn,
    Refusal,
    /// A reason this version does not know, kept verbatim.
    Other(String),
}

impl From<String> for StopReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "end_turn" => StopReason::EndTurn,
            "max_tokens" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" => StopReason::ToolUse,
            "pause_turn" => StopReason::PauseTurn,
            "refusal" => StopReason::Refusal,
            _ => StopReason::Other(s),
        }
    }
}

impl From<StopReason> for String {
    fn from(r: StopReason) -> Self {
        r.as_str().to_string()
    }
}

impl StopReason {
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::PauseTurn => "pause_turn",
            StopReason::Refusal => "refusal",
            StopReason::Other(s) => s,
        }
    }
}

/// The model's complete answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Response {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub stop_reason: Option<StopReason>,
    #[serde(default)]
    pub usage: Usage,
}

impl Response {
    /// The concatenated text blocks.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The tool calls, in order: `(id, name, input)`.
    pub fn tool_uses(&self) -> Vec<(&str, &str, &Value)> {
        self.content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::ToolUse {
                    id, name, input, ..
                } => Some((id.as_str(), name.as_str(), input)),
                _ => None,
            })
            .collect()
    }

    /// The response as the assistant message to append to the conversation. Thinking blocks
    /// stay, signatures and all, because the API requires them back unchanged.
    pub fn to_message(&self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.content.clone(),
        }
    }

    /// The events a streaming provider would have sent for this response; providers that do
    /// not stream (replay) use this so progress displays work the same.
    pub fn to_events(&self) -> Vec<StreamEvent> {
        let mut out = vec![StreamEvent::MessageStart {
            id: self.id.clone(),
            model: self.model.clone(),
            usage: Usage {
                output_tokens: 0,
                ..self.usage
            },
        }];
        for (index, block) in self.content.iter().enumerate() {
            let start = match block {
                ContentBlock::Text { .. } => ContentBlock::text(""),
                ContentBlock::Thinking { .. } => ContentBlock::Thinking {
                    thinking: String::new(),
                    signature: String::new(),
                },
                ContentBlock::ToolUse { id, name, .. } => ContentBlock::tool_use(
                    id.clone(),
                    name.clone(),
                    Value::Object(Default::default()),
                ),
                other => other.clone(),
            };
            out.push(StreamEvent::ContentBlockStart {
                index,
                block: start,
            });
            match block {
                ContentBlock::Text { text, .. } => out.push(StreamEvent::TextDelta {
                    index,
                    text: text.clone(),
                }),
                ContentBlock::Thinking {
                    thinking,
                    signature,
                } => {
                    out.push(StreamEvent::ThinkingDelta {
                        index,
                        thinking: thinking.clone(),
                    });
                    out.push(StreamEvent::SignatureDelta {
                        index,
                        signature: signature.clone(),
                    });
                }
                ContentBlock::ToolUse { input, .. } => out.push(StreamEvent::InputJsonDelta {
                    index,
                    partial_json: input.to_string(),
                }),
                _ => {}
            }
            out.push(StreamEvent::ContentBlockStop { index });
        }
        out.push(StreamEvent::MessageDelta {
            stop_reason: self.stop_reason.clone(),
            usage: self.usage,
        });
        out.push(StreamEvent::MessageStop);
        out
    }
}

/// Tokens used by one call. `input_tokens` excludes the tokens read from or written to the
/// cache, as in the Anthropic API, so the four fields add up to the whole prompt.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// All prompt tokens, cached or not.
    pub fn total_input(&self) -> u64 {
        self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
    }

    /// Adds another call's usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }
}

/// A typed streaming event, the same for every provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        id: String,
        model: String,
        usage: Usage,
    },
    /// A block begins; text and thinking start empty, tool use starts with an empty input.
    ContentBlockStart {
        index: usize,
        block: ContentBlock,
    },
    TextDelta {
        index: usize,
        text: String,
    },
    /// A fragment of a tool call's input JSON; only the concatenation parses.
    InputJsonDelta {
        index: usize,
        partial_json: String,
    },
    ThinkingDelta {
        index: usize,
        thinking: String,
    },
    SignatureDelta {
        index: usize,
        signature: String,
    },
    ContentBlockStop {
        index: usize,
    },
    /// Top-level changes: the stop reason and the usage so far (cumulative).
    MessageDelta {
        stop_reason: Option<StopReason>,
        usage: Usage,
    },
    MessageStop,
    Ping,
    Error {
        kind: String,
        message: String,
    },
}

/// Why a call failed. The variants say what the caller can do: wait and retry
/// ([`ModelError::RateLimited`], [`ModelError::Overloaded`]), fall back to another model, or
/// give up.
#[derive(thiserror::Error, Debug)]
pub enum ModelError {
    /// HTTP 429 or a `rate_limit_error`.
    #[error("rate limited{}: {message}", after(retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// HTTP 529 (or 503) or an `overloaded_error`.
    #[error("overloaded{}: {message}", after(retry_after))]
    Overloaded {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Any other unsuccessful HTTP status.
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    /// The connection failed or broke off; the message keeps the cause (`connection refused
    /// to 127.0.0.1:8080`), not just "error sending request".
    #[error("transport: {0}")]
    Transport(String),
    /// A turn ran longer than `models.turnTimeout`: a server stuck or a model generating
    /// without end. The attempt fails and is retried (it is no outage: the same turn would
    /// likely run away again, so it must not wait forever without spending attempts).
    #[error("the turn ran longer than its limit of {}s", .0.as_secs())]
    TurnTimeout(Duration),
    /// No provider may be called now: every circuit is open after repeated failures. The
    /// earliest breaker lets a trial call through after `retry_after`.
    #[error("every provider's circuit is open (last error: {last}); next trial in {}s", retry_after.as_secs())]
    CircuitOpen { retry_after: Duration, last: String },
    /// The provider sent something we cannot read.
    #[error("decode: {0}")]
    Decode(String),
    /// The provider reported an error inside a successful response (an SSE `error` event).
    #[error("{kind}: {message}")]
    Api { kind: String, message: String },
    /// The provider is misconfigured (no key in the named variable, no file, …).
    #[error("configuration: {0}")]
    Config(String),
    /// A replay file has no more recorded exchanges.
    #[error("replay {file}: exhausted after {served} exchanges")]
    ReplayExhausted { file: String, served: usize },
    /// A replay file's next exchange was recorded for a different request.
    #[error("replay {file}: exchange {index} expected a request containing {expected:?}")]
    ReplayMismatch {
        file: String,
        index: usize,
        expected: String,
    },
    /// A replay file's next exchange calls a tool the request did not offer: a real model
    /// can only call the tools it is given.
    #[error(
        "replay {file}: exchange {index} calls {tool}, which the request does not offer (it offers {offered})"
    )]
    ReplayToolNotOffered {
        file: String,
        index: usize,
        tool: String,
        offered: String,
    },
}

fn after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {}s)", d.as_secs_f64()),
        None => String::new(),
    }
}

/// What kind of failure a [`ModelError`] is, which decides what the engine does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The provider cannot answer now (down, unreachable, too slow, 5xx, 429, 529, circuit
    /// open): the work waits and tries again; no attempt is spent.
    Outage,
    /// The request or the declaration is wrong (400, 401, 403, 404, no key, a bad replay):
    /// trying again unchanged cannot help.
    Request,
    /// The provider answered with something we cannot read.
    Protocol,
    /// One of our limits ended the call (`models.turnTimeout`): the attempt fails and is
    /// retried, with backoff and escalation.
    Limit,
}

impl ModelError {
    /// Whether waiting and retrying the same call soon may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ModelError::RateLimited { .. } | ModelError::Overloaded { .. }
        )
    }

    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            ModelError::RateLimited { .. }
            | ModelError::Overloaded { .. }
            | ModelError::Transport(_)
            | ModelError::CircuitOpen { .. } => ErrorClass::Outage,
            ModelError::TurnTimeout(_) => ErrorClass::Limit,
            // 408 (request timeout) and 5xx are the server's trouble, not the request's.
            ModelError::Http { status, .. } if *status == 408 || *status >= 500 => {
                ErrorClass::Outage
            }
            ModelError::Api { kind, .. } if kind == "api_error" || kind == "timeout_error" => {
                ErrorClass::Outage
            }
            ModelError::Decode(_) => ErrorClass::Protocol,
            _ => ErrorClass::Request,
        }
    }

    /// Whether the provider is out for now: the caller waits rather than giving up.
    pub fn is_outage(&self) -> bool {
        self.class() == ErrorClass::Outage
    }

    /// The wait the provider (or the circuit breaker) asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::RateLimited { retry_after, .. }
            | ModelError::Overloaded { retry_after, .. } => *retry_after,
            ModelError::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Maps an API error type (`overloaded_error`, `rate_limit_error`, …) to an error.
    pub fn from_api(kind: &str, message: &str, retry_after: Option<Duration>) -> Self {
        match kind {
            "overloaded_error" => ModelError::Overloaded {
                retry_after,
                message: message.to_string(),
            },
            "rate_limit_error" => ModelError::RateLimited {
                retry_after,
                message: message.to_string(),
            },
            _ => ModelError::Api {
                kind: kind.to_string(),
                message: message.to_string(),
            },
        }
    }
}

/// An API key. Its `Debug` and `Display` never show it, so a key cannot leak through logs or
/// error messages by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Reads the key from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, ModelError> {
        match std::env::var(var) {
            Ok(k) if !k.trim().is_empty() => Ok(ApiKey(k.trim().to_string())),
            _ => Err(ModelError::Config(format!(
                "environment variable {var} holds no API key"
            ))),
        }
    }

    /// The key itself, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key as a header value marked sensitive, so HTTP-level debug output hides it too.
    pub fn header_value(&self) -> Result<reqwest::header::HeaderValue, ModelError> {
        let mut v = reqwest::header::HeaderValue::from_str(&self.0).map_err(|_| {
            ModelError::Config("the API key holds characters a header cannot carry".to_string())
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Parses a `retry-after` header value: delay seconds (integer or fractional) or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The model a provider declared in the Company spec stands for. A replay provider's `file`
/// is resolved against `repo_root`, the company repository.
pub fn from_provider(
    provider: &crate::spec::Provider,
    repo_root: &std::path::Path,
) -> Result<std::sync::Arc<dyn Model>, ModelError> {
    from_provider_priced(provider, repo_root, &PriceTable::default())
}

/// [`from_provider`] with the Company's price table, whose cache minimums decide which
/// prompt-cache breakpoints are worth placing.
pub fn from_provider_priced(
    provider: &crate::spec::Provider,
    repo_root: &std::path::Path,
    prices: &PriceTable,
) -> Result<std::sync::Arc<dyn Model>, ModelError> {
    use crate::spec::ProviderKind;
    Ok(match provider.kind {
        ProviderKind::Anthropic => {
            std::sync::Arc::new(Anthropic::from_provider(provider)?.with_prices(prices.clone()))
        }
        ProviderKind::Openai => std::sync::Arc::new(OpenAi::from_provider(provider)?),
        ProviderKind::Replay => {
            let file = provider.file.as_deref().ok_or_else(|| {
                ModelError::Config(format!("replay provider {} needs a file", provider.name))
            })?;
            std::sync::Arc::new(Replay::from_file(
                provider.name.clone(),
                &repo_root.join(file),
            )?)
        }
    })
}

/// Sends an event if someone listens; a dropped receiver only means nobody watches.
pub(crate) fn emit(events: &Option<UnboundedSender<StreamEvent>>, event: StreamEvent) {
    if let Some(tx) = events {
        let _ = tx.send(event);
    }
}

/// The text of the newest user message, or the content of its tool results when it has no
/// text (replay matches on this).
pub fn last_user_content(request: &Request) -> String {
    let Some(msg) = request.messages.iter().rev().find(|m| m.role == Role::User) else {
        return String::new();
    };
    let text = msg.text();
    if !text.is_empty() {
        return text;
    }
    msg.content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolResult { content, .. } => Some(content.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An `f32` temperature as the JSON number it was written as: widening `0.7f32` to `f64`
/// directly would send `0.699999988079071`.
pub(crate) fn temperature_json(t: f32) -> f64 {
    t.to_string().parse().unwrap_or(f64::from(t))
}

/// A `reqwest` client with the settings all HTTP providers share. No overall timeout, since a
/// long generation legitimately streams for minutes; instead the connection must open within
/// 30 s and no single read may wait longer than 10 minutes (Anthropic pings well within that;
/// a local server on a CPU may take minutes to evaluate a long prompt).
pub(crate) fn http_client() -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| ModelError::Transport(e.to_string()))
}

/// A transport failure as a message that keeps its cause: reqwest's own text is only the
/// outermost layer ("error sending request"), the reason a user can act on ("connection
/// refused", "dns error", "timed out") is further down the source chain.
pub fn transport_error(e: &reqwest::Error, endpoint: &reqwest::Url) -> ModelError {
    use std::error::Error as _;
    let target = match (endpoint.host_str(), endpoint.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => endpoint.to_string(),
    };
    let io = {
        let mut source = e.source();
        let mut found = None;
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                found = Some(io.kind());
            }
            source = s.source();
        }
        found
    };
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        // reqwest repeats the URL in its outermost message; the target is said once.
        let text = text
            .replace(&format!(" for url ({endpoint})"), "")
            .replace(&format!(" ({endpoint})"), "");
        if !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        source = s.source();
    }
    let detail = chain.join(": ");
    use std::io::ErrorKind;
    let cause = match io {
        Some(ErrorKind::ConnectionRefused) => format!("connection refused to {target}"),
        Some(ErrorKind::ConnectionReset) => format!("connection reset by {target}"),
        Some(ErrorKind::TimedOut) => format!("timed out talking to {target}"),
        _ if e.is_timeout() => format!("timed out talking to {target}"),
        _ if e.is_connect() => format!("cannot connect to {target}"),
        _ => format!("talking to {target}"),
    };
    ModelError::Transport(format!("{cause} ({detail})"))
}

/// How a server answered a request for a stream.
pub(crate) enum Answer {
    /// As a stream: its events went to the handler.
    Streamed,
    /// As one JSON document (some servers and proxies ignore `stream: true`): the body.
    Whole(Value),
}

/// Sends a streaming request to `endpoint` and hands each server-sent event of a successful
/// answer to `handle`, which says when the answer is complete; an event left unterminated
/// when the body ends is handed over too. A server that answers with one JSON document
/// instead of a stream has it returned whole. Transport failures and error statuses become
/// [`ModelError`]s.
pub(crate) async fn stream_events(
    request: reqwest::RequestBuilder,
    endpoint: &reqwest::Url,
    mut handle: impl FnMut(&sse::SseEvent) -> Result<bool, ModelError>,
) -> Result<Answer, ModelError> {
    use futures_util::StreamExt;
    let transport = |e: reqwest::Error| transport_error(&e, endpoint);
    let resp = request.send().await.map_err(transport)?;
    if !resp.status().is_success() {
        return Err(error_from_response(resp).await);
    }
    let json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if json {
        let body = resp.bytes().await.map_err(transport)?;
        let value = serde_json::from_slice(&body)
            .map_err(|e| ModelError::Decode(format!("the answer is not JSON: {e}")))?;
        return Ok(Answer::Whole(value));
    }
    let mut parser = sse::SseParser::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        for event in parser.push(&chunk.map_err(transport)?) {
            if handle(&event)? {
                return Ok(Answer::Streamed);
            }
        }
    }
    if let Some(event) = parser.finish() {
        handle(&event)?;
    }
    Ok(Answer::Streamed)
}

/// Turns an unsuccessful HTTP response into the matching error.
pub(crate) async fn error_from_response(resp: reqwest::Response) -> ModelError {
    let status = resp.status().as_u16();
    let url = resp.url().clone();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = resp.text().await.unwrap_or_default();
    // Both Anthropic (`{"type":"error","error":{…}}`) and OpenAI (`{"error":{…}}`) nest it.
    let parsed: Option<(String, String)> =
        serde_json::from_str::<Value>(&body).ok().and_then(|v| {
            let e = v.get("error")?;
            let kind = e
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some((kind, message))
        });
    let message = parsed
        .as_ref()
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| body.clone());
    let kind = parsed.map(|(k, _)| k).unwrap_or_default();
    match status {
        429 => ModelError::RateLimited {
            retry_after,
            message,
        },
        529 | 503 => ModelError::Overloaded {
            retry_after,
            message,
        },
        _ if kind == "overloaded_error" => ModelError::Overloaded {
            retry_after,
            message,
        },
        // No such route: almost always a base URL that does not fit the server, so say
        // where the request went.
        404 => ModelError::Http {
            status,
            body: format!("{body} (POST {url}: check the provider's baseUrl)"),
        },
        _ => ModelError::Http { status, body },
    }
}
