//! A local HTTP server speaking the Anthropic Messages SSE format whose `usage` is computed
//! honestly from each request it receives, with prompt caching simulated the way the API
//! documents it. What the model *says* is scripted by the caller; what it *costs* is not.
//!
//! Token estimate: every prompt block (a tool definition, a system block, a message content
//! block, serialized as JSON without its `cache_control`) counts `ceil(bytes / 4)` tokens, the
//! usual rule of thumb for English and code. The real tokenizer differs by perhaps ±25 %, but
//! the same way for every configuration compared.
//!
//! Caching, per model (the cache is not shared between models):
//! - a cache entry is the exact prefix of blocks up to a `cache_control` breakpoint (tools,
//!   then system, then messages; the thinking setting is part of the messages' prefix, as
//!   changing it invalidates cached messages);
//! - a request reads the longest cached prefix that ends at one of its breakpoints or at most
//!   20 blocks before one (the API's lookback);
//! - it writes every breakpoint prefix that is not cached yet and is at least the model's
//!   cache minimum (from the price table); a shorter prefix is never cached;
//! - `input_tokens` is what is neither read nor written; the cache never expires (a benchmark
//!   runs well within the 5-minute TTL, which each hit refreshes).
//!
//! Extended thinking: when the request enables it and its last message starts a new assistant
//! turn (user text, not tool results; without the interleaved-thinking beta the model thinks
//! only at the start of its turn), the reply opens with a thinking block of
//! `min(wanted, budget)` tokens, billed as output and sent back as input like any block. The
//! API's rules are enforced: a budget of at least 1,024 and below `max_tokens`, else HTTP 400.
#![allow(dead_code)]

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use proto::model::{PriceTable, Usage};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The API's cache lookback, in blocks before a breakpoint.
const LOOKBACK: usize = 20;

/// What the scripted model answers to one request.
pub struct Scripted {
    /// Content blocks (text, tool_use) in the Anthropic shape; thinking is added by the sim.
    pub content: Vec<Value>,
    pub stop_reason: &'static str,
    /// Tokens the model would think at the start of its turn, before the budget caps it.
    pub thinking: u64,
    /// Groups requests for reporting (a session, or a classifier call).
    pub tag: String,
}

/// One answered request.
#[derive(Clone, Debug)]
pub struct Call {
    pub tag: String,
    pub model: String,
    pub usage: Usage,
    /// Of `usage.output_tokens`, those the model spent thinking.
    pub thinking: u64,
}

type Script = dyn Fn(&Value) -> Scripted + Send + Sync;

struct State {
    script: Box<Script>,
    prices: PriceTable,
    /// (model, prefix hash) of every cached prefix.
    cache: Mutex<HashSet<(String, u64)>>,
    log: Mutex<Vec<Call>>,
}

/// The running server; it stops with its runtime.
pub struct Sim {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Sim {
    pub async fn start(
        prices: PriceTable,
        script: impl Fn(&Value) -> Scripted + Send + Sync + 'static,
    ) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            script: Box::new(script),
            prices,
            cache: Mutex::new(HashSet::new()),
            log: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, state).await;
                });
            }
        });
        Sim { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.log.lock().expect("lock").clone()
    }
}

fn tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

/// A block as the cache sees it: its JSON without the breakpoint marker.
fn canonical(block: &Value) -> (String, bool) {
    let mut b = block.clone();
    let marked = b
        .as_object_mut()
        .and_then(|o| o.remove("cache_control"))
        .is_some();
    (b.to_string(), marked)
}

/// The usage of `body` on `model`, updating the cache.
fn usage(state: &State, body: &Value, model: &str) -> Usage {
    // (tokens, breakpoint, cumulative hash) per block, in the order the API renders them.
    let mut blocks: Vec<(u64, bool, u64)> = Vec::new();
    let mut hasher = DefaultHasher::new();
    model.hash(&mut hasher);
    let mut push = |text: String, marked: bool, hasher: &mut DefaultHasher| {
        text.hash(hasher);
        blocks.push((tokens(text.len()), marked, hasher.finish()));
    };
    for tool in body["tools"].as_array().into_iter().flatten() {
        let (text, marked) = canonical(tool);
        push(text, marked, &mut hasher);
    }
    match &body["system"] {
        Value::String(s) => push(s.clone(), false, &mut hasher),
        Value::Array(items) => {
            for block in items {
                let (text, marked) = canonical(block);
                push(text, marked, &mut hasher);
            }
        }
        _ => {}
    }
    body["thinking"].to_string().hash(&mut hasher);
    for message in body["messages"].as_array().into_iter().flatten() {
        let role = message["role"].as_str().unwrap_or_default();
        match &message["content"] {
            Value::String(s) => push(format!("{role}:{s}"), false, &mut hasher),
            Value::Array(items) => {
                for block in items {
                    let (text, marked) = canonical(block);
                    push(format!("{role}:{text}"), marked, &mut hasher);
                }
            }
            _ => {}
        }
    }
    let mut prefix = Vec::with_capacity(blocks.len());
    let mut total = 0u64;
    for (t, _, _) in &blocks {
        total += t;
        prefix.push(total);
    }
    let minimum = state.prices.cache_min_tokens(model).unwrap_or(u64::MAX);
    let breakpoints: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].1).collect();
    let mut cache = state.cache.lock().expect("lock");
    let key = |i: usize| (model.to_string(), blocks[i].2);
    let hit = breakpoints
        .iter()
        .flat_map(|&b| (b.saturating_sub(LOOKBACK)..=b).rev())
        .filter(|&i| cache.contains(&key(i)))
        .max();
    let read = hit.map_or(0, |i| prefix[i]);
    let mut written = read;
    for &b in &breakpoints {
        if prefix[b] >= minimum && hit.is_none_or(|h| b > h) {
            cache.insert(key(b));
            written = written.max(prefix[b]);
        }
    }
    Usage {
        input_tokens: total - written,
        output_tokens: 0,
        cache_creation_input_tokens: written - read,
        cache_read_input_tokens: read,
    }
}

/// Whether the request's last message starts an assistant turn (text from the user, not
/// tool results).
fn starts_a_turn(body: &Value) -> bool {
    let Some(last) = body["messages"].as_array().and_then(|m| m.last()) else {
        return false;
    };
    match &last["content"] {
        Value::String(_) => true,
        Value::Array(items) => items.iter().any(|b| b["type"] == "text"),
        _ => false,
    }
}

fn filler(tokens: u64) -> String {
    const WORDS: &str = "consider the change, the callers it affects, the tests that cover it, and what could break ";
    WORDS.repeat((tokens as usize * 4).div_ceil(WORDS.len()))[..tokens as usize * 4].to_string()
}

/// The HTTP response for one request body.
fn answer(state: &State, body: &Value) -> (u16, String) {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(0);
    let budget = body["thinking"]["budget_tokens"].as_u64();
    if let Some(b) = budget
        && (b < 1024 || b >= max_tokens)
    {
        let error = json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": format!("thinking.budget_tokens {b} must be >= 1024 and < max_tokens {max_tokens}")}});
        return (400, error.to_string());
    }
    let scripted = (state.script)(body);
    let mut usage = usage(state, body, &model);
    let mut content = Vec::new();
    let mut thinking = 0;
    if let Some(b) = budget
        && starts_a_turn(body)
        && scripted.thinking > 0
    {
        let thought = scripted.thinking.min(b);
        content.push(json!({"type": "thinking", "thinking": filler(thought), "signature": format!("sig-{thought}")}));
        usage.output_tokens += thought;
        thinking = thought;
    }
    for block in &scripted.content {
        usage.output_tokens += tokens(block.to_string().len());
        content.push(block.clone());
    }
    state.log.lock().expect("lock").push(Call {
        tag: scripted.tag,
        model: model.clone(),
        usage,
        thinking,
    });
    (200, stream(&model, &content, scripted.stop_reason, &usage))
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The SSE stream the API would send for `content`.
fn stream(model: &str, content: &[Value], stop_reason: &str, usage: &Usage) -> String {
    let mut out = event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_sim", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                      "cache_read_input_tokens": usage.cache_read_input_tokens}}}),
    );
    for (index, block) in content.iter().enumerate() {
        let (start, deltas) = match block["type"].as_str().unwrap_or_default() {
            "thinking" => (
                json!({"type": "thinking", "thinking": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": block["thinking"]}),
                    json!({"type": "signature_delta", "signature": block["signature"]}),
                ],
            ),
            "tool_use" => (
                json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
                vec![
                    json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
                ],
            ),
            _ => (
                json!({"type": "text", "text": ""}),
                vec![json!({"type": "text_delta", "text": block["text"]})],
            ),
        };
        out.push_str(&event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            out.push_str(&event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        out.push_str(&event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push_str(&event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": usage.output_tokens}}),
    ));
    out.push_str(&event("message_stop", json!({"type": "message_stop"})));
    out
}

async fn serve(mut sock: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, text) = answer(&state, &body);
    let kind = if status == 200 {
        "text/event-stream"
    } else {
        "application/json"
    };
    let reply = format!(
        "HTTP/1.1 {status} Sim\r\nconnection: close\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{text}",
        text.len()
    );
    sock.write_all(reply.as_bytes()).await?;
    sock.flush().await?;
    sock.shutdown().await?;
    Ok(())
}
