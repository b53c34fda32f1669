//! A scripted LLM server for tests: hand-written HTTP/1.1 on 127.0.0.1 port 0.
//!
//! Each test scripts the replies in order (status, headers, body chunks, chunked or
//! close-delimited) and afterwards inspects every request the server recorded. Written by
//! hand rather than with a web framework so the tests control the bytes on the wire exactly:
//! the point is to exercise our SSE parsing at awkward chunk boundaries.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Vec<u8>>,
    /// `Transfer-Encoding: chunked` (default) or a body delimited by closing the connection.
    pub chunked: bool,
    /// Pause between chunks so they reach the client as separate reads.
    pub delay: Duration,
}

impl Reply {
    /// A `text/event-stream` body sent as one chunk.
    pub fn sse(body: impl Into<String>) -> Reply {
        Reply::sse_chunks(vec![body.into().into_bytes()])
    }

    /// A `text/event-stream` body sent in the given pieces, each its own HTTP chunk.
    pub fn sse_chunks(chunks: Vec<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks,
            chunked: true,
            delay: Duration::from_millis(2),
        }
    }

    /// An error status with a JSON body.
    pub fn error(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![body.to_string().into_bytes()],
            chunked: false,
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn close_delimited(mut self) -> Reply {
        self.chunked = false;
        self
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The running server. It stops with the test's runtime.
pub struct MockLlm {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// An address on 127.0.0.1 where nothing listens (yet): a model server that is down.
/// [`MockLlm::start_on`] brings one up there later.
pub fn down_address() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr")
}

impl MockLlm {
    pub async fn start(replies: Vec<Reply>) -> MockLlm {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), replies).await
    }

    /// A server on `addr` (a [`down_address`] coming up, say).
    pub async fn start_on(addr: SocketAddr, replies: Vec<Reply>) -> MockLlm {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, recorded, replies).await;
                });
            }
        });
        MockLlm { addr, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn serve(
    mut sock: TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
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
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
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
    recorded.lock().expect("lock").push(Recorded {
        method,
        path,
        headers,
        body,
    });
    let reply = replies.lock().expect("lock").pop_front().unwrap_or_else(|| {
        Reply::error(
            500,
            serde_json::json!({"error": {"type": "api_error", "message": "mock: script exhausted"}}),
        )
    });
    let mut head = format!("HTTP/1.1 {} Mock\r\nconnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.flush().await?;
    for chunk in &reply.chunks {
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if chunk.is_empty() {
            continue; // an empty HTTP chunk would end the body
        }
        if reply.chunked {
            sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            sock.write_all(chunk).await?;
            sock.write_all(b"\r\n").await?;
        } else {
            sock.write_all(chunk).await?;
        }
        sock.flush().await?;
    }
    if reply.chunked {
        sock.write_all(b"0\r\n\r\n").await?;
    }
    sock.flush().await?;
    sock.shutdown().await?;
    Ok(())
}

/// One Anthropic SSE event: `event: <name>` and `data: <json>`, as the API sends them.
pub fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A whole Anthropic stream from `(event name, data)` pairs.
pub fn anthropic_stream(events: &[(&str, Value)]) -> String {
    events.iter().map(|(n, d)| event(n, d.clone())).collect()
}

/// The `message_start` event with the given usage.
pub fn message_start(id: &str, model: &str, usage: Value) -> (&'static str, Value) {
    (
        "message_start",
        serde_json::json!({
            "type": "message_start",
            "message": {
                "id": id, "type": "message", "role": "assistant", "content": [],
                "model": model, "stop_reason": null, "stop_sequence": null, "usage": usage,
            }
        }),
    )
}

/// A complete stream answering with one text block.
pub fn text_stream(id: &str, text: &str, stop_reason: &str) -> String {
    use serde_json::json;
    anthropic_stream(&[
        message_start(
            id,
            "claude-sonnet-4-5",
            json!({"input_tokens": 10, "output_tokens": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 5}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

/// One OpenAI chat-completions stream from chunk objects, ended by `data: [DONE]`.
pub fn openai_stream(chunks: &[Value]) -> String {
    let mut s: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    s.push_str("data: [DONE]\n\n");
    s
}

/// A streamed Anthropic answer that calls one tool (`toolu_<id>`) with `input`.
pub fn tool_use(id: &str, name: &str, input: Value) -> Reply {
    use serde_json::json;
    Reply::sse(anthropic_stream(&[
        message_start(
            id,
            "claude-sonnet-4-5",
            json!({"input_tokens": 50, "output_tokens": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 20}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]))
}
