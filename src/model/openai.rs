//! OpenAI-compatible chat completions (`POST {base_url}/v1/chat/completions`; a base URL
//! written with `/v1` works as well, see [`super::endpoint`]), streaming,
//! for local servers such as llama.cpp, Ollama or vLLM and for hosted OpenAI-style APIs.
//!
//! The neutral types are Anthropic-shaped, so this module translates both ways: system blocks
//! become one `system` message, tool results become `role: tool` messages (their images, which
//! a tool message cannot carry, a `user` message of `image_url` parts after them), tool uses become
//! the assistant's `tool_calls`; thinking blocks have no counterpart and are dropped. In the
//! stream, `tool_calls` deltas are assembled by their `index` (a call's id and name come in
//! its first delta, its arguments in fragments), and the usage arrives in a last chunk
//! because we ask for `stream_options.include_usage`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::{
    ApiKey, ContentBlock, Model, ModelError, Request, Response, Role, StopReason, StreamEvent,
    Usage, emit, http_client, stream_events,
};
use crate::spec::{Provider, ProviderKind};

/// A client for an OpenAI-compatible server. Its `Debug` redacts the key.
#[derive(Debug, Clone)]
pub struct OpenAi {
    name: String,
    /// The chat-completions URL the base URL stands for.
    endpoint: reqwest::Url,
    /// Local servers usually need none.
    key: Option<ApiKey>,
    client: reqwest::Client,
}

impl OpenAi {
    /// A client for the server at `base_url`, with or without `/v1`.
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        key: Option<ApiKey>,
    ) -> Result<Self, ModelError> {
        let name = name.into();
        let endpoint = super::endpoint::openai_chat(&base_url.into())
            .map_err(|e| ModelError::Config(format!("provider {name}: baseUrl {e}")))?;
        Ok(OpenAi {
            name,
            endpoint,
            key,
            client: http_client()?,
        })
    }

    /// A client for a provider declared in the Company spec. A named `apiKeyEnv` must hold a
    /// key; without one the server is called unauthenticated. `baseUrl` is required, since
    /// there is no one obvious server.
    pub fn from_provider(provider: &Provider) -> Result<Self, ModelError> {
        if provider.kind != ProviderKind::Openai {
            return Err(ModelError::Config(format!(
                "provider {} is not of type openai",
                provider.name
            )));
        }
        let base = provider.base_url.as_deref().ok_or_else(|| {
            ModelError::Config(format!("provider {} needs a baseUrl", provider.name))
        })?;
        let key = match &provider.api_key_env {
            Some(var) => Some(ApiKey::from_env(var)?),
            None => None,
        };
        Self::new(provider.name.clone(), base, key)
    }
}

/// The chat-completions body for `request`, streaming on.
pub fn request_body(request: &Request) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        let system: Vec<&str> = request.system.iter().map(|b| b.text.as_str()).collect();
        messages.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    for msg in &request.messages {
        match msg.role {
            Role::User => {
                // Tool results answer the previous assistant message's calls, so they come
                // first, before any text the user added. A tool message carries text only:
                // the images of the results follow in one user message, each introduced by
                // the call it came from.
                let mut images = Vec::new();
                for block in &msg.content {
                    if let ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                        ..
                    } = block
                    {
                        let text = if *is_error {
                            format!("Error: {}", content.text)
                        } else {
                            content.text.clone()
                        };
                        messages.push(
                            json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}),
                        );
                        if !content.images.is_empty() {
                            images.push(json!({"type": "text", "text": format!("The image(s) of tool call {tool_use_id}:")}));
                        }
                        for image in &content.images {
                            images.push(
                                json!({"type": "image_url", "image_url": {"url": image.data_url()}}),
                            );
                        }
                    }
                }
                let text = msg.text();
                if !images.is_empty() {
                    if !text.is_empty() {
                        images.push(json!({"type": "text", "text": text}));
                    }
                    messages.push(json!({"role": "user", "content": images}));
                } else if !text.is_empty() {
                    messages.push(json!({"role": "user", "content": text}));
                }
            }
            Role::Assistant => {
                let calls: Vec<Value> = msg
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        ContentBlock::ToolUse {
                            id, name, input, ..
                        } => Some(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        })),
                        _ => None,
                    })
                    .collect();
                let text = msg.text();
                let mut m = json!({"role": "assistant"});
                m["content"] = if text.is_empty() {
                    Value::Null
                } else {
                    json!(text)
                };
                if !calls.is_empty() {
                    m["tool_calls"] = json!(calls);
                }
                messages.push(m);
            }
        }
    }
    // `max_tokens` counts the thinking budget, as in the Anthropic API; this route sends no
    // thinking, so the budget is not granted as answer tokens (a CPU-served model would
    // otherwise be allowed turns of 8,000 + the whole budget).
    let max_tokens = match request.thinking {
        Some(budget) if budget < request.max_tokens => request.max_tokens - budget,
        _ => request.max_tokens,
    };
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                })
            })
            .collect();
        body["tools"] = json!(tools);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(super::temperature_json(t));
    }
    body
}

#[async_trait]
impl Model for OpenAi {
    async fn complete(
        &self,
        request: &Request,
        events: Option<UnboundedSender<StreamEvent>>,
    ) -> Result<Response, ModelError> {
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .json(&request_body(request));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose());
        }
        let mut assembler = ChunkAssembler::default();
        let answer = stream_events(req, &self.endpoint, |ev| {
            for out in assembler.handle(&ev.data)? {
                emit(&events, out);
            }
            Ok(assembler.done)
        })
        .await?;
        if let super::Answer::Whole(completion) = answer {
            for out in assembler.handle(&as_chunk(&completion).to_string())? {
                emit(&events, out);
            }
        }
        let (response, tail) = assembler.finish()?;
        for out in tail {
            emit(&events, out);
        }
        Ok(response)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A block being streamed, at its neutral index.
#[derive(Debug)]
struct Partial {
    block: ContentBlock,
    arguments: String,
}

/// Assembles chat-completion chunks into neutral [`StreamEvent`]s and a [`Response`].
#[derive(Debug, Default)]
pub struct ChunkAssembler {
    id: String,
    model: String,
    started: bool,
    done: bool,
    finish_reason: Option<String>,
    usage: Usage,
    /// Neutral index of the text block, once text arrived.
    text_index: Option<usize>,
    /// Neutral index of each tool call, by the call's `index` in the deltas.
    call_index: BTreeMap<u64, usize>,
    blocks: BTreeMap<usize, Partial>,
    /// An error chunk ends the stream with this error.
    error: Option<ModelError>,
}

impl ChunkAssembler {
    /// Handles one `data:` payload.
    pub fn handle(&mut self, data: &str) -> Result<Vec<StreamEvent>, ModelError> {
        let mut out = Vec::new();
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(out);
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ModelError::Decode(format!("chunk is not JSON: {e}")))?;
        if let Some(e) = v.get("error") {
            let kind = e
                .get("type")
                .or_else(|| e.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("error");
            let message = e.get("message").and_then(Value::as_str).unwrap_or_default();
            out.push(StreamEvent::Error {
                kind: kind.to_string(),
                message: message.to_string(),
            });
            self.error = Some(ModelError::from_api(kind, message, None));
            self.done = true;
            return Ok(out);
        }
        if !self.started {
            self.started = true;
            self.id = str_of(&v, "id").to_string();
            self.model = str_of(&v, "model").to_string();
            out.push(StreamEvent::MessageStart {
                id: self.id.clone(),
                model: self.model.clone(),
                usage: Usage::default(),
            });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let cached = u
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            // OpenAI counts cached tokens inside prompt_tokens; ours keeps them apart.
            self.usage = Usage {
                input_tokens: n("prompt_tokens").saturating_sub(cached),
                output_tokens: n("completion_tokens"),
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: cached,
            };
        }
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(r.to_string());
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && !text.is_empty()
            {
                let index = match self.text_index {
                    Some(i) => i,
                    None => {
                        let i = self.blocks.len();
                        self.text_index = Some(i);
                        self.blocks.insert(
                            i,
                            Partial {
                                block: ContentBlock::text(""),
                                arguments: String::new(),
                            },
                        );
                        out.push(StreamEvent::ContentBlockStart {
                            index: i,
                            block: ContentBlock::text(""),
                        });
                        i
                    }
                };
                if let Some(Partial {
                    block: ContentBlock::Text { text: t, .. },
                    ..
                }) = self.blocks.get_mut(&index)
                {
                    t.push_str(text);
                }
                out.push(StreamEvent::TextDelta {
                    index,
                    text: text.to_string(),
                });
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let call_idx = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let function = call.get("function");
                let index = match self.call_index.get(&call_idx) {
                    Some(&i) => i,
                    None => {
                        let i = self.blocks.len();
                        self.call_index.insert(call_idx, i);
                        let block = ContentBlock::tool_use(
                            str_of(call, "id"),
                            function.map(|f| str_of(f, "name")).unwrap_or_default(),
                            json!({}),
                        );
                        self.blocks.insert(
                            i,
                            Partial {
                                block: block.clone(),
                                arguments: String::new(),
                            },
                        );
                        out.push(StreamEvent::ContentBlockStart { index: i, block });
                        i
                    }
                };
                if let Some(args) = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                    && let Some(p) = self.blocks.get_mut(&index)
                {
                    p.arguments.push_str(args);
                    out.push(StreamEvent::InputJsonDelta {
                        index,
                        partial_json: args.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The response, and the closing events (block stops, message delta, message stop).
    pub fn finish(self) -> Result<(Response, Vec<StreamEvent>), ModelError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.started {
            return Err(ModelError::Transport(
                "stream ended before the first chunk".to_string(),
            ));
        }
        if !self.done && self.finish_reason.is_none() {
            return Err(ModelError::Transport(
                "stream ended before finish_reason".to_string(),
            ));
        }
        let stop_reason = self.finish_reason.map(|r| match r.as_str() {
            "stop" => StopReason::EndTurn,
            "tool_calls" | "function_call" => StopReason::ToolUse,
            "length" => StopReason::MaxTokens,
            "content_filter" => StopReason::Refusal,
            _ => StopReason::Other(r),
        });
        let cut_off = stop_reason == Some(StopReason::MaxTokens);
        let mut events = Vec::new();
        let mut content = Vec::new();
        for (index, p) in self.blocks {
            let mut block = p.block;
            events.push(StreamEvent::ContentBlockStop { index });
            if let ContentBlock::ToolUse { input, name, .. } = &mut block
                && !p.arguments.trim().is_empty()
            {
                match serde_json::from_str(&p.arguments) {
                    Ok(parsed) => *input = parsed,
                    // Cut off by the length limit: half a call never runs (see anthropic).
                    Err(_) if cut_off => continue,
                    Err(e) => {
                        return Err(ModelError::Decode(format!(
                            "arguments of tool call {name} are not JSON: {e}"
                        )));
                    }
                }
            }
            content.push(block);
        }
        events.push(StreamEvent::MessageDelta {
            stop_reason: stop_reason.clone(),
            usage: self.usage,
        });
        events.push(StreamEvent::MessageStop);
        Ok((
            Response {
                id: self.id,
                model: self.model,
                content,
                stop_reason,
                usage: self.usage,
            },
            events,
        ))
    }
}

/// A whole (non-streamed) chat completion as the one chunk that carries all of it: each
/// choice's `message` becomes its `delta`, and tool calls get the `index` deltas carry.
fn as_chunk(completion: &Value) -> Value {
    let mut chunk = completion.clone();
    if let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) {
        for choice in choices {
            let Some(obj) = choice.as_object_mut() else {
                continue;
            };
            let Some(mut message) = obj.remove("message") else {
                continue;
            };
            if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for (i, call) in calls.iter_mut().enumerate() {
                    call["index"] = json!(i);
                }
            }
            obj.insert("delta".into(), message);
        }
    }
    chunk
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
