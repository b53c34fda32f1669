//! The Anthropic Messages API (`POST {base_url}/v1/messages`; a base URL written with `/v1`
//! works as well, see [`super::endpoint`]), always streaming.
//!
//! We always ask for a stream: long generations with large `max_tokens` would otherwise hit
//! HTTP timeouts, and the events drive the progress display. [`StreamAssembler`] turns the
//! typed events back into exactly the [`Response`] the non-streaming API would have returned.
//! [`place_cache_breakpoints`] puts the prompt-cache breakpoints where they pay off across the
//! turns of a conversation, and [`drop_short_breakpoints`] takes off those whose prefix is
//! certainly shorter than the model's cache minimum (from the price table).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::{
    ApiKey, CacheControl, ContentBlock, Model, ModelError, Request, Response, Role, StopReason,
    StreamEvent, Usage, emit, http_client, stream_events,
};
use crate::spec::{Provider, ProviderKind};

/// Where the API lives unless the provider says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version we speak.
pub const API_VERSION: &str = "2023-06-01";
/// The API accepts at most this many `cache_control` breakpoints per request.
pub const MAX_CACHE_BREAKPOINTS: usize = 4;

/// A client for the Anthropic Messages API. Its `Debug` redacts the key.
#[derive(Debug, Clone)]
pub struct Anthropic {
    name: String,
    /// The Messages URL the base URL stands for.
    endpoint: reqwest::Url,
    /// Anthropic's own API needs one; a local server speaking the format (llama.cpp) may not.
    key: Option<ApiKey>,
    client: reqwest::Client,
    /// Place cache breakpoints on every request (on by default).
    prompt_caching: bool,
    /// Where the cache minimum of each model comes from.
    prices: super::PriceTable,
}

impl Anthropic {
    /// A client for the server at `base_url` (with or without `/v1`) with the given key.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        key: ApiKey,
    ) -> Result<Self, ModelError> {
        Self::with_key(name, base_url, Some(key))
    }

    /// A client for a server that may need no key (a local server speaking the format).
    pub fn with_key(
        name: impl Into<String>,
        base_url: impl Into<String>,
        key: Option<ApiKey>,
    ) -> Result<Self, ModelError> {
        let name = name.into();
        let endpoint = super::endpoint::anthropic_messages(&base_url.into())
            .map_err(|e| ModelError::Config(format!("provider {name}: baseUrl {e}")))?;
        Ok(Anthropic {
            name,
            endpoint,
            key,
            client: http_client()?,
            prompt_caching: true,
            prices: super::PriceTable::default(),
        })
    }

    /// A client whose key is read now from the environment variable `key_env`.
    pub fn from_env(
        name: impl Into<String>,
        base_url: Option<&str>,
        key_env: &str,
    ) -> Result<Self, ModelError> {
        Self::new(
            name,
            base_url.unwrap_or(DEFAULT_BASE_URL),
            ApiKey::from_env(key_env)?,
        )
    }

    /// A client for a provider declared in the Company spec. A named `apiKeyEnv` must hold
    /// a key, and so must `ANTHROPIC_API_KEY` for Anthropic's own API; a server elsewhere
    /// (llama.cpp's Messages route, a gateway) declared without `apiKeyEnv` is called with
    /// `ANTHROPIC_API_KEY` when it is set and without a key when not, as local servers need
    /// none.
    pub fn from_provider(provider: &Provider) -> Result<Self, ModelError> {
        if provider.kind != ProviderKind::Anthropic {
            return Err(ModelError::Config(format!(
                "provider {} is not of type anthropic",
                provider.name
            )));
        }
        let base = provider.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let anthropic_itself = super::endpoint::check(base)
            .map(|u| u.host_str() == Some("api.anthropic.com"))
            .unwrap_or(true);
        let key = match provider.api_key_env.as_deref() {
            Some(var) => Some(ApiKey::from_env(var)?),
            None if anthropic_itself => Some(ApiKey::from_env("ANTHROPIC_API_KEY")?),
            None => ApiKey::from_env("ANTHROPIC_API_KEY").ok(),
        };
        Self::with_key(provider.name.clone(), base, key)
    }

    /// Turns automatic cache breakpoints on or off (a caller placing its own turns it off).
    pub fn with_prompt_caching(mut self, on: bool) -> Self {
        self.prompt_caching = on;
        self
    }

    /// The Company's price table, for each model's cache minimum.
    pub fn with_prices(mut self, prices: super::PriceTable) -> Self {
        self.prices = prices;
        self
    }
}

/// The JSON body for `request`, streaming on.
pub fn request_body(request: &Request) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": request.messages,
        "stream": true,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = json!(request.tools);
    }
    if let Some(budget) = request.thinking {
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(super::temperature_json(t));
    }
    body
}

/// Places prompt-cache breakpoints so consecutive turns of one conversation reuse the cache:
/// on the last tool definition (caches every tool), the last system block (tools + system),
/// the last message before the newest user turn and the newest user turn itself (the stable
/// conversation prefix: the first is what the previous turn wrote, the second what the next
/// turn will read). Breakpoints already present are removed first, so the request never
/// carries more than [`MAX_CACHE_BREAKPOINTS`].
pub fn place_cache_breakpoints(request: &mut Request) {
    for tool in &mut request.tools {
        tool.cache_control = None;
    }
    for block in &mut request.system {
        block.cache_control = None;
    }
    for msg in &mut request.messages {
        for block in &mut msg.content {
            if let Some(cc) = block.cache_control_mut() {
                *cc = None;
            }
        }
    }
    if let Some(tool) = request.tools.last_mut() {
        tool.cache_control = Some(CacheControl::ephemeral());
    }
    if let Some(block) = request.system.last_mut() {
        block.cache_control = Some(CacheControl::ephemeral());
    }
    let Some(newest_user) = request.messages.iter().rposition(|m| m.role == Role::User) else {
        return;
    };
    let mut targets = vec![newest_user];
    if newest_user > 0 {
        targets.push(newest_user - 1);
    }
    for i in targets {
        // The last block that may carry a breakpoint (thinking blocks may not).
        if let Some(cc) = request.messages[i]
            .content
            .iter_mut()
            .rev()
            .find_map(|b| b.cache_control_mut())
        {
            *cc = Some(CacheControl::ephemeral());
        }
    }
}

/// Removes the breakpoints whose prefix (tools, then system, then messages, up to and
/// including the marked block) is shorter than `min_tokens` for certain. A token is at least
/// one byte, so a prefix of fewer bytes than the minimum can never be cached; the bound is
/// deliberately loose (real prompts run 3-4 bytes a token) so that no breakpoint the API would
/// honour is ever taken off. A breakpoint on a too-short prefix costs nothing but a slot, so
/// this only keeps requests honest about what they cache.
pub fn drop_short_breakpoints(request: &mut Request, min_tokens: u64) {
    let size = |v: Result<Value, serde_json::Error>| -> u64 {
        v.map(|v| v.to_string().len() as u64).unwrap_or(0)
    };
    let mut bytes = 0u64;
    for tool in &mut request.tools {
        bytes += size(serde_json::to_value(&*tool));
        if bytes < min_tokens {
            tool.cache_control = None;
        }
    }
    for block in &mut request.system {
        bytes += size(serde_json::to_value(&*block));
        if bytes < min_tokens {
            block.cache_control = None;
        }
    }
    for msg in &mut request.messages {
        for block in &mut msg.content {
            bytes += size(serde_json::to_value(&*block));
            if bytes < min_tokens
                && let Some(cc) = block.cache_control_mut()
            {
                *cc = None;
            }
        }
    }
}

/// Counts the `cache_control` breakpoints in a request.
pub fn count_cache_breakpoints(request: &Request) -> usize {
    let tools = request
        .tools
        .iter()
        .filter(|t| t.cache_control.is_some())
        .count();
    let system = request
        .system
        .iter()
        .filter(|b| b.cache_control.is_some())
        .count();
    let messages = request
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter(|b| match b {
            ContentBlock::Text { cache_control, .. }
            | ContentBlock::ToolUse { cache_control, .. }
            | ContentBlock::ToolResult { cache_control, .. } => cache_control.is_some(),
            _ => false,
        })
        .count();
    tools + system + messages
}

#[async_trait]
impl Model for Anthropic {
    async fn complete(
        &self,
        request: &Request,
        events: Option<UnboundedSender<StreamEvent>>,
    ) -> Result<Response, ModelError> {
        let body = if self.prompt_caching {
            let mut r = request.clone();
            place_cache_breakpoints(&mut r);
            if let Some(min) = self.prices.cache_min_tokens(&r.model) {
                drop_short_breakpoints(&mut r, min);
            }
            request_body(&r)
        } else {
            request_body(request)
        };
        let request = self
            .client
            .post(self.endpoint.clone())
            .header("anthropic-version", API_VERSION)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .json(&body);
        let request = match &self.key {
            Some(key) => request.header("x-api-key", key.header_value()?),
            None => request,
        };
        let mut assembler = StreamAssembler::default();
        let answer = stream_events(request, &self.endpoint, |ev| {
            for out in assembler.handle(&ev.event, &ev.data)? {
                emit(&events, out);
            }
            Ok(assembler.is_done())
        })
        .await?;
        match answer {
            super::Answer::Streamed => assembler.finish(),
            super::Answer::Whole(message) => {
                // The non-streaming API's Message object is our Response, field for field.
                if let Some(e) = message.get("error").filter(|_| message["type"] == "error") {
                    return Err(ModelError::from_api(
                        e["type"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default(),
                        None,
                    ));
                }
                let response: Response = serde_json::from_value(message)
                    .map_err(|e| ModelError::Decode(format!("the message is not readable: {e}")))?;
                for out in response.to_events() {
                    emit(&events, out);
                }
                Ok(response)
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A content block being streamed.
#[derive(Debug)]
struct Partial {
    block: ContentBlock,
    /// The tool input's JSON fragments so far.
    json: String,
}

impl Partial {
    /// The finished block: a tool's input is parsed only now, since fragments are not JSON.
    fn finish(mut self) -> Result<ContentBlock, ModelError> {
        if let ContentBlock::ToolUse { input, name, .. } = &mut self.block
            && !self.json.trim().is_empty()
        {
            *input = serde_json::from_str(&self.json).map_err(|e| {
                ModelError::Decode(format!("input of tool call {name} is not JSON: {e}"))
            })?;
        }
        Ok(self.block)
    }
}

/// Assembles Anthropic stream events into typed [`StreamEvent`]s and the final [`Response`].
#[derive(Debug, Default)]
pub struct StreamAssembler {
    id: String,
    model: String,
    usage: Usage,
    stop_reason: Option<StopReason>,
    /// By index: parallel tool calls arrive as separate blocks, each with its own index.
    blocks: BTreeMap<usize, Partial>,
    done: bool,
    started: bool,
    /// An `error` event ends the stream with this error.
    error: Option<ModelError>,
}

fn get_index(v: &Value) -> Result<usize, ModelError> {
    v.get("index")
        .and_then(Value::as_u64)
        .map(|i| i as usize)
        .ok_or_else(|| ModelError::Decode(format!("event without index: {v}")))
}

fn get_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Overwrites the usage fields a `message_delta` carries; absent fields keep their value
/// (the counts are cumulative, not increments).
fn merge_usage(usage: &mut Usage, v: &Value) {
    let field = |k: &str| v.get(k).and_then(Value::as_u64);
    if let Some(n) = field("input_tokens") {
        usage.input_tokens = n;
    }
    if let Some(n) = field("output_tokens") {
        usage.output_tokens = n;
    }
    if let Some(n) = field("cache_creation_input_tokens") {
        usage.cache_creation_input_tokens = n;
    }
    if let Some(n) = field("cache_read_input_tokens") {
        usage.cache_read_input_tokens = n;
    }
}

impl StreamAssembler {
    /// Whether `message_stop` or an `error` event arrived.
    pub fn is_done(&self) -> bool {
        self.done || self.error.is_some()
    }

    /// Handles one SSE event (`event` name and `data` JSON) and returns the typed events it
    /// stands for. An `error` event yields [`StreamEvent::Error`] and makes [`Self::finish`]
    /// return the matching [`ModelError`].
    pub fn handle(&mut self, event: &str, data: &str) -> Result<Vec<StreamEvent>, ModelError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ModelError::Decode(format!("{event} event is not JSON: {e}")))?;
        // The data's `type` is authoritative; the SSE event name only fills in when absent.
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        let out = match kind {
            "message_start" => {
                let m = v.get("message").cloned().unwrap_or_default();
                self.id = get_str(&m, "id").to_string();
                self.model = get_str(&m, "model").to_string();
                if let Some(u) = m.get("usage") {
                    merge_usage(&mut self.usage, u);
                }
                self.started = true;
                vec![StreamEvent::MessageStart {
                    id: self.id.clone(),
                    model: self.model.clone(),
                    usage: self.usage,
                }]
            }
            "content_block_start" => {
                let index = get_index(&v)?;
                let raw = v.get("content_block").cloned().unwrap_or_default();
                let block: ContentBlock = serde_json::from_value(raw.clone()).map_err(|e| {
                    ModelError::Decode(format!("unsupported content block {raw}: {e}"))
                })?;
                self.blocks.insert(
                    index,
                    Partial {
                        block: block.clone(),
                        json: String::new(),
                    },
                );
                vec![StreamEvent::ContentBlockStart { index, block }]
            }
            "content_block_delta" => {
                let index = get_index(&v)?;
                let delta = v.get("delta").cloned().unwrap_or_default();
                let partial = self.blocks.get_mut(&index).ok_or_else(|| {
                    ModelError::Decode(format!("delta for block {index} that never started"))
                })?;
                match (get_str(&delta, "type"), &mut partial.block) {
                    ("text_delta", ContentBlock::Text { text, .. }) => {
                        let t = get_str(&delta, "text");
                        text.push_str(t);
                        vec![StreamEvent::TextDelta {
                            index,
                            text: t.to_string(),
                        }]
                    }
                    ("input_json_delta", ContentBlock::ToolUse { .. }) => {
                        let j = get_str(&delta, "partial_json");
                        partial.json.push_str(j);
                        vec![StreamEvent::InputJsonDelta {
                            index,
                            partial_json: j.to_string(),
                        }]
                    }
                    ("thinking_delta", ContentBlock::Thinking { thinking, .. }) => {
                        let t = get_str(&delta, "thinking");
                        thinking.push_str(t);
                        vec![StreamEvent::ThinkingDelta {
                            index,
                            thinking: t.to_string(),
                        }]
                    }
                    ("signature_delta", ContentBlock::Thinking { signature, .. }) => {
                        let s = get_str(&delta, "signature");
                        signature.push_str(s);
                        vec![StreamEvent::SignatureDelta {
                            index,
                            signature: s.to_string(),
                        }]
                    }
                    // Citations and future delta kinds carry nothing we keep.
                    _ => vec![],
                }
            }
            "content_block_stop" => vec![StreamEvent::ContentBlockStop {
                index: get_index(&v)?,
            }],
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(StopReason::from(r.to_string()));
                }
                if let Some(u) = v.get("usage") {
                    merge_usage(&mut self.usage, u);
                }
                vec![StreamEvent::MessageDelta {
                    stop_reason: self.stop_reason.clone(),
                    usage: self.usage,
                }]
            }
            "message_stop" => {
                self.done = true;
                vec![StreamEvent::MessageStop]
            }
            "ping" => vec![StreamEvent::Ping],
            "error" => {
                let e = v.get("error").cloned().unwrap_or_default();
                let kind = get_str(&e, "type");
                let message = get_str(&e, "message");
                self.error = Some(ModelError::from_api(kind, message, None));
                vec![StreamEvent::Error {
                    kind: kind.to_string(),
                    message: message.to_string(),
                }]
            }
            // New event types may appear (the API's versioning policy); ignore them.
            _ => vec![],
        };
        Ok(out)
    }

    /// The assembled response; an error when the stream broke off before `message_stop`.
    pub fn finish(self) -> Result<Response, ModelError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.done {
            return Err(ModelError::Transport(if self.started {
                "stream ended before message_stop".to_string()
            } else {
                "stream ended before message_start".to_string()
            }));
        }
        let cut_off = self.stop_reason == Some(StopReason::MaxTokens);
        let mut content = Vec::new();
        for partial in self.blocks.into_values() {
            match partial.finish() {
                Ok(block) => content.push(block),
                // A tool call cut off by max_tokens has half its input: it is dropped (a
                // call with made-up input must not run), and the session tells the model.
                Err(_) if cut_off => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Response {
            id: self.id,
            model: self.model,
            content,
            stop_reason: self.stop_reason,
            usage: self.usage,
        })
    }
}
