//! The model providers against a scripted local server that speaks the Anthropic and OpenAI
//! streaming wire formats, plus replay and prices.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/mock_llm.rs"]
mod mock_llm;

use std::time::{Duration, Instant};

use mock_llm::{MockLlm, Reply, anthropic_stream, message_start, openai_stream, text_stream};
use proto::model::anthropic::{count_cache_breakpoints, place_cache_breakpoints};
use proto::model::{
    Anthropic, ApiKey, ContentBlock, Exchange, Message, Model, ModelError, OpenAi, PriceTable,
    Replay, Request, Response, Role, StopReason, StreamEvent, SystemBlock, ToolDef, Usage, cost,
    default_prices, with_retries,
};
use proto::spec::{Price, Provider, ProviderKind};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const KEY: &str = "sk-ant-test-secret-key";

fn anthropic(server: &MockLlm) -> Anthropic {
    Anthropic::new("anthropic", server.base_url(), ApiKey::new(KEY)).expect("client")
}

fn request(text: &str) -> Request {
    Request {
        model: "claude-sonnet-4-5".into(),
        messages: vec![Message::user(text)],
        max_tokens: 1024,
        ..Default::default()
    }
}

fn tool(name: &str) -> ToolDef {
    ToolDef {
        name: name.into(),
        description: format!("The {name} tool"),
        input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        cache_control: None,
    }
}

/// Runs `model` and collects the streamed events.
async fn complete_collect(
    model: &dyn Model,
    req: &Request,
) -> (Result<Response, ModelError>, Vec<StreamEvent>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = model.complete(req, Some(tx)).await;
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    (result, events)
}

fn delta(index: usize, delta: Value) -> (&'static str, Value) {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn start(index: usize, block: Value) -> (&'static str, Value) {
    (
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn stop(index: usize) -> (&'static str, Value) {
    (
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    )
}

fn message_delta(stop_reason: &str, usage: Value) -> (&'static str, Value) {
    (
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": usage}),
    )
}

fn message_stop() -> (&'static str, Value) {
    ("message_stop", json!({"type": "message_stop"}))
}

fn ping() -> (&'static str, Value) {
    ("ping", json!({"type": "ping"}))
}

/// A response with text, then a tool call whose input arrives in fragments.
fn tool_use_stream() -> String {
    anthropic_stream(&[
        message_start(
            "msg_tool",
            "claude-sonnet-4-5",
            json!({"input_tokens": 50, "output_tokens": 1}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        delta(
            0,
            json!({"type": "text_delta", "text": "Let me read ünïcode "}),
        ),
        delta(0, json!({"type": "text_delta", "text": "the file."})),
        stop(0),
        start(
            1,
            json!({"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {}}),
        ),
        delta(1, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"path\": \"src/"}),
        ),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "main.rs\"}"}),
        ),
        stop(1),
        message_delta("tool_use", json!({"output_tokens": 30})),
        message_stop(),
    ])
}

#[tokio::test]
async fn plain_text_streams_events_and_sends_the_right_request() {
    let body = anthropic_stream(&[
        message_start(
            "msg_1",
            "claude-sonnet-4-5",
            json!({"input_tokens": 25, "output_tokens": 1}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        ping(),
        delta(0, json!({"type": "text_delta", "text": "Hello"})),
        delta(0, json!({"type": "text_delta", "text": ", world"})),
        stop(0),
        message_delta("end_turn", json!({"output_tokens": 15})),
        message_stop(),
    ]);
    let server = MockLlm::start(vec![Reply::sse(body)]).await;
    let model = anthropic(&server);
    let mut req = request("Say hello");
    req.system = vec![SystemBlock::text("You are terse.")];
    req.temperature = Some(0.5);
    let (result, events) = complete_collect(&model, &req).await;
    let response = result.expect("response");
    assert_eq!(response.id, "msg_1");
    assert_eq!(response.model, "claude-sonnet-4-5");
    assert_eq!(response.text(), "Hello, world");
    assert_eq!(response.stop_reason, Some(StopReason::EndTurn));
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 25,
            output_tokens: 15,
            ..Usage::default()
        }
    );
    assert_eq!(
        events,
        vec![
            StreamEvent::MessageStart {
                id: "msg_1".into(),
                model: "claude-sonnet-4-5".into(),
                usage: Usage {
                    input_tokens: 25,
                    output_tokens: 1,
                    ..Usage::default()
                }
            },
            StreamEvent::ContentBlockStart {
                index: 0,
                block: ContentBlock::text("")
            },
            StreamEvent::Ping,
            StreamEvent::TextDelta {
                index: 0,
                text: "Hello".into()
            },
            StreamEvent::TextDelta {
                index: 0,
                text: ", world".into()
            },
            StreamEvent::ContentBlockStop { index: 0 },
            StreamEvent::MessageDelta {
                stop_reason: Some(StopReason::EndTurn),
                usage: response.usage
            },
            StreamEvent::MessageStop,
        ]
    );

    let recorded = server.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body["stream"], json!(true));
    assert_eq!(r.body["model"], json!("claude-sonnet-4-5"));
    assert_eq!(r.body["max_tokens"], json!(1024));
    assert_eq!(r.body["temperature"], json!(0.5));
    // No cache breakpoint: the prompt is far below Sonnet's 1,024-token cache minimum.
    assert_eq!(
        r.body["system"],
        json!([{"type": "text", "text": "You are terse."}])
    );
    assert!(r.body.get("thinking").is_none());
    assert!(r.body.get("tools").is_none());
}

#[tokio::test]
async fn tool_round_trip() {
    let server = MockLlm::start(vec![
        Reply::sse(tool_use_stream()),
        Reply::sse(text_stream("msg_2", "It prints hello.", "end_turn")),
    ])
    .await;
    let model = anthropic(&server);
    let mut req = request("What does main.rs do?");
    req.tools = vec![tool("Read")];
    let (result, events) = complete_collect(&model, &req).await;
    let first = result.expect("first response");
    assert_eq!(first.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(first.text(), "Let me read ünïcode the file.");
    assert_eq!(
        first.content[1],
        ContentBlock::tool_use("toolu_01", "Read", json!({"path": "src/main.rs"}))
    );
    assert!(events.contains(&StreamEvent::InputJsonDelta {
        index: 1,
        partial_json: "main.rs\"}".into()
    }));

    req.messages.push(first.to_message());
    req.messages.push(Message {
        role: Role::User,
        content: vec![ContentBlock::tool_result(
            "toolu_01",
            "fn main() { println!(\"hello\") }",
        )],
    });
    let second = model.complete(&req, None).await.expect("second response");
    assert_eq!(second.text(), "It prints hello.");

    let recorded = server.requests();
    assert_eq!(recorded.len(), 2);
    let tools = &recorded[0].body["tools"];
    assert_eq!(tools[0]["name"], json!("Read"));
    assert_eq!(tools[0]["input_schema"]["type"], json!("object"));
    // The conversation is far below Sonnet's cache minimum, so it carries no breakpoints.
    let messages = &recorded[1].body["messages"];
    assert_eq!(messages.as_array().map(Vec::len), Some(3));
    assert_eq!(messages[1]["role"], json!("assistant"));
    assert_eq!(
        messages[1]["content"][1],
        json!({"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "src/main.rs"}})
    );
    assert_eq!(messages[2]["role"], json!("user"));
    assert_eq!(
        messages[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_01", "content": "fn main() { println!(\"hello\") }"})
    );
}

#[tokio::test]
async fn parallel_tool_calls_are_assembled_by_index() {
    // Fragments of two calls interleaved: each must land in its own block.
    let body = anthropic_stream(&[
        message_start(
            "msg_par",
            "claude-sonnet-4-5",
            json!({"input_tokens": 40, "output_tokens": 1}),
        ),
        start(
            0,
            json!({"type": "tool_use", "id": "toolu_a", "name": "Read", "input": {}}),
        ),
        start(
            1,
            json!({"type": "tool_use", "id": "toolu_b", "name": "Glob", "input": {}}),
        ),
        delta(
            0,
            json!({"type": "input_json_delta", "partial_json": "{\"path\":"}),
        ),
        delta(
            1,
            json!({"type": "input_json_delta", "partial_json": "{\"pattern\": \"**/*.rs\"}"}),
        ),
        delta(
            0,
            json!({"type": "input_json_delta", "partial_json": " \"README.md\"}"}),
        ),
        stop(1),
        stop(0),
        start(
            2,
            json!({"type": "tool_use", "id": "toolu_c", "name": "Bash", "input": {}}),
        ),
        stop(2),
        message_delta("tool_use", json!({"output_tokens": 60})),
        message_stop(),
    ]);
    let server = MockLlm::start(vec![Reply::sse(body)]).await;
    let response = anthropic(&server)
        .complete(&request("look around"), None)
        .await
        .expect("response");
    assert_eq!(
        response.tool_uses(),
        vec![
            ("toolu_a", "Read", &json!({"path": "README.md"})),
            ("toolu_b", "Glob", &json!({"pattern": "**/*.rs"})),
            // A call with no input deltas keeps the empty object it started with.
            ("toolu_c", "Bash", &json!({})),
        ]
    );
}

#[tokio::test]
async fn thinking_and_signature_round_trip_unchanged() {
    let body = anthropic_stream(&[
        message_start(
            "msg_think",
            "claude-opus-4-5",
            json!({"input_tokens": 30, "output_tokens": 1}),
        ),
        start(0, json!({"type": "thinking", "thinking": ""})),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "The user wants a file. "}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "I should read it."}),
        ),
        delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}),
        ),
        stop(0),
        start(
            1,
            json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}),
        ),
        stop(1),
        start(
            2,
            json!({"type": "tool_use", "id": "toolu_t", "name": "Read", "input": {}}),
        ),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"path\": \"a.txt\"}"}),
        ),
        stop(2),
        message_delta("tool_use", json!({"output_tokens": 80})),
        message_stop(),
    ]);
    let server = MockLlm::start(vec![
        Reply::sse(body),
        Reply::sse(text_stream("msg_after", "done", "end_turn")),
    ])
    .await;
    let model = anthropic(&server);
    let mut req = request("read a.txt");
    req.model = "claude-opus-4-5".into();
    req.max_tokens = 16000;
    req.thinking = Some(8000);
    req.tools = vec![tool("Read")];
    let (result, events) = complete_collect(&model, &req).await;
    let first = result.expect("response");
    let thinking = ContentBlock::Thinking {
        thinking: "The user wants a file. I should read it.".into(),
        signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into(),
    };
    assert_eq!(first.content[0], thinking);
    assert_eq!(
        first.content[1],
        ContentBlock::RedactedThinking {
            data: "EmwKAhgBEgy3va3pzix".into()
        }
    );
    assert!(events.contains(&StreamEvent::SignatureDelta {
        index: 0,
        signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into()
    }));
    assert!(events.contains(&StreamEvent::ThinkingDelta {
        index: 0,
        thinking: "I should read it.".into()
    }));

    req.messages.push(first.to_message());
    req.messages.push(Message {
        role: Role::User,
        content: vec![ContentBlock::tool_result("toolu_t", "contents")],
    });
    model.complete(&req, None).await.expect("second");
    let recorded = server.requests();
    assert_eq!(
        recorded[0].body["thinking"],
        json!({"type": "enabled", "budget_tokens": 8000})
    );
    let sent = &recorded[1].body["messages"][1]["content"];
    assert_eq!(
        sent[0],
        json!({"type": "thinking", "thinking": "The user wants a file. I should read it.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"})
    );
    assert_eq!(
        sent[1],
        json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"})
    );
}

/// A conversation several turns deep with tools and a two-block system prompt.
fn long_conversation() -> Request {
    Request {
        model: "claude-sonnet-4-5".into(),
        system: vec![
            SystemBlock::text("You are an engineer."),
            SystemBlock::text("Repository rules: …"),
        ],
        tools: vec![tool("Read"), tool("Bash")],
        messages: vec![
            Message::user("Fix the build"),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::Thinking {
                        thinking: "hm".into(),
                        signature: "sig".into(),
                    },
                    ContentBlock::tool_use("t1", "Bash", json!({"command": "cargo build"})),
                ],
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::tool_result("t1", "error[E0425]")],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::text("Reading the file."),
                    ContentBlock::tool_use("t2", "Read", json!({"path": "src/lib.rs"})),
                    ContentBlock::Thinking {
                        thinking: "trailing".into(),
                        signature: "sig2".into(),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    ContentBlock::tool_result("t2", "pub fn x() {}"),
                    ContentBlock::text("Also run the tests."),
                ],
            },
        ],
        max_tokens: 4096,
        ..Default::default()
    }
}

#[tokio::test]
async fn cache_breakpoints_sit_on_tools_system_and_conversation_prefix() {
    let server = MockLlm::start(vec![Reply::sse(text_stream("m", "ok", "end_turn"))]).await;
    let mut req = long_conversation();
    // A model without a known cache minimum, so no breakpoint is dropped as too short.
    req.model = "claude-unlisted".into();
    // Stale breakpoints from an earlier turn must not add up past the limit of 4.
    for m in &mut req.messages {
        for b in &mut m.content {
            if let Some(cc) = b.cache_control_mut() {
                *cc = Some(proto::model::CacheControl::ephemeral());
            }
        }
    }
    req.tools[0].cache_control = Some(proto::model::CacheControl::ephemeral());
    anthropic(&server)
        .complete(&req, None)
        .await
        .expect("response");
    let body = &server.requests()[0].body;
    let cc = json!({"type": "ephemeral"});

    // Every place that carries cache_control, as JSON pointers.
    let mut found = Vec::new();
    collect_cache_control(body, String::new(), &mut found);
    found.sort();
    let mut want = vec![
        "/tools/1".to_string(),
        "/system/1".to_string(),
        // The message before the newest user turn: its last block that may carry one
        // (thinking may not).
        "/messages/3/content/1".to_string(),
        "/messages/4/content/1".to_string(),
    ];
    want.sort();
    assert_eq!(found, want);
    assert_eq!(body["tools"][1]["cache_control"], cc);
    assert!(
        body["messages"][3]["content"][2]
            .get("cache_control")
            .is_none()
    );
}

fn collect_cache_control(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "cache_control" {
                    out.push(path.clone());
                } else {
                    collect_cache_control(child, format!("{path}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_cache_control(child, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn cache_breakpoints_never_exceed_four_as_a_conversation_grows() {
    let mut req = Request {
        model: "m".into(),
        system: vec![SystemBlock::text("s")],
        tools: vec![tool("Read")],
        messages: vec![Message::user("start")],
        max_tokens: 10,
        ..Default::default()
    };
    for turn in 0..10 {
        place_cache_breakpoints(&mut req);
        let n = count_cache_breakpoints(&req);
        assert!(n <= 4, "turn {turn}: {n} breakpoints");
        assert_eq!(n, if turn == 0 { 3 } else { 4 });
        // The newest user turn always carries one.
        let last = req.messages.last().expect("message");
        assert!(matches!(
            last.content.last(),
            Some(ContentBlock::Text {
                cache_control: Some(_),
                ..
            })
        ));
        req.messages
            .push(Message::assistant(format!("answer {turn}")));
        req.messages.push(Message::user(format!("question {turn}")));
    }
    // Without tools or system, only the conversation is marked.
    let mut bare = request("hi");
    place_cache_breakpoints(&mut bare);
    assert_eq!(count_cache_breakpoints(&bare), 1);
}

#[tokio::test]
async fn rate_limit_with_retry_after_then_success() {
    let server = MockLlm::start(vec![
        Reply::error(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}),
        )
        .header("retry-after", "1"),
        Reply::sse(text_stream("msg_ok", "finally", "end_turn")),
    ])
    .await;
    let model = anthropic(&server);
    let began = Instant::now();
    let response = with_retries(&model, &request("hi"), 2)
        .await
        .expect("success after retry");
    assert_eq!(response.text(), "finally");
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "retry-after was not honoured"
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn rate_limit_is_reported_to_the_caller_without_retries() {
    let server = MockLlm::start(vec![
        Reply::error(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )
        .header("retry-after", "17"),
    ])
    .await;
    let err = with_retries(&anthropic(&server), &request("hi"), 0)
        .await
        .expect_err("rate limited");
    match err {
        ModelError::RateLimited {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(17)));
            assert_eq!(message, "slow down");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn status_529_is_overloaded() {
    let server = MockLlm::start(vec![
        Reply::error(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )
        .header("retry-after", "3"),
    ])
    .await;
    let err = anthropic(&server)
        .complete(&request("hi"), None)
        .await
        .expect_err("overloaded");
    assert!(err.is_retryable());
    match err {
        ModelError::Overloaded {
            retry_after,
            message,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
            assert_eq!(message, "Overloaded");
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
}

#[tokio::test]
async fn other_statuses_keep_status_and_body() {
    let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too large"}});
    let server = MockLlm::start(vec![Reply::error(400, body.clone())]).await;
    let err = anthropic(&server)
        .complete(&request("hi"), None)
        .await
        .expect_err("bad request");
    assert!(!err.is_retryable());
    match err {
        ModelError::Http { status, body: b } => {
            assert_eq!(status, 400);
            assert_eq!(serde_json::from_str::<Value>(&b).expect("json"), body);
        }
        other => panic!("expected Http, got {other:?}"),
    }
}

#[tokio::test]
async fn error_event_mid_stream() {
    let overloaded = anthropic_stream(&[
        message_start(
            "msg_e",
            "claude-sonnet-4-5",
            json!({"input_tokens": 5, "output_tokens": 1}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Partial"})),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    let api_error = anthropic_stream(&[
        message_start(
            "msg_f",
            "claude-sonnet-4-5",
            json!({"input_tokens": 5, "output_tokens": 1}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        ),
    ]);
    let server = MockLlm::start(vec![Reply::sse(overloaded), Reply::sse(api_error)]).await;
    let model = anthropic(&server);
    let (result, events) = complete_collect(&model, &request("hi")).await;
    assert!(
        matches!(result, Err(ModelError::Overloaded { .. })),
        "{result:?}"
    );
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Error {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        })
    );
    match model.complete(&request("hi"), None).await {
        Err(ModelError::Api { kind, message }) => {
            assert_eq!(kind, "api_error");
            assert_eq!(message, "Internal server error");
        }
        other => panic!("expected Api, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_cut_off_before_message_stop_is_an_error() {
    let cut = anthropic_stream(&[
        message_start(
            "msg_cut",
            "claude-sonnet-4-5",
            json!({"input_tokens": 5, "output_tokens": 1}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Half"})),
    ]);
    let server = MockLlm::start(vec![Reply::sse(cut)]).await;
    let err = anthropic(&server)
        .complete(&request("hi"), None)
        .await
        .expect_err("cut off");
    assert!(matches!(err, ModelError::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn sse_split_at_awkward_chunk_boundaries() {
    // CRLF line endings, a comment, and chunks of 1 to 7 bytes: splits fall between `\r` and
    // `\n`, inside field names, inside JSON strings and inside multi-byte characters.
    let wire = format!(
        ": keep-alive\r\n\r\n{}",
        tool_use_stream().replace('\n', "\r\n")
    );
    let bytes = wire.as_bytes();
    let mut chunks = Vec::new();
    let mut i = 0;
    let mut size = 1;
    while i < bytes.len() {
        let end = (i + size).min(bytes.len());
        chunks.push(bytes[i..end].to_vec());
        i = end;
        size = size % 7 + 1;
    }
    let mut reply = Reply::sse_chunks(chunks);
    reply.delay = Duration::from_micros(200);
    let whole = MockLlm::start(vec![Reply::sse(tool_use_stream())]).await;
    let split = MockLlm::start(vec![reply]).await;
    let expected = anthropic(&whole)
        .complete(&request("x"), None)
        .await
        .expect("whole");
    let got = anthropic(&split)
        .complete(&request("x"), None)
        .await
        .expect("split");
    assert_eq!(got, expected);
    assert_eq!(got.text(), "Let me read ünïcode the file.");
}

#[tokio::test]
async fn close_delimited_body_is_read_to_the_end() {
    let server = MockLlm::start(vec![
        Reply::sse(text_stream("msg_c", "closed", "end_turn")).close_delimited(),
    ])
    .await;
    let response = anthropic(&server)
        .complete(&request("hi"), None)
        .await
        .expect("response");
    assert_eq!(response.text(), "closed");
}

#[tokio::test]
async fn usage_includes_cache_reads_and_writes() {
    let body = anthropic_stream(&[
        message_start(
            "msg_u",
            "claude-sonnet-4-5-20250929",
            json!({"input_tokens": 12, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 30000, "output_tokens": 1}),
        ),
        start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "ok"})),
        stop(0),
        message_delta("max_tokens", json!({"output_tokens": 500})),
        message_stop(),
    ]);
    let server = MockLlm::start(vec![Reply::sse(body)]).await;
    let response = anthropic(&server)
        .complete(&request("hi"), None)
        .await
        .expect("response");
    let want = Usage {
        input_tokens: 12,
        output_tokens: 500,
        cache_creation_input_tokens: 2000,
        cache_read_input_tokens: 30000,
    };
    assert_eq!(response.usage, want);
    assert_eq!(response.usage.total_input(), 32012);
    assert_eq!(response.stop_reason, Some(StopReason::MaxTokens));
    // $3 in, $15 out, $3.75 cache write, $0.30 cache read per MTok.
    let dollars = PriceTable::default()
        .cost(&response.model, &response.usage)
        .expect("price for a dated sonnet id");
    let expected = (12.0 * 3.0 + 500.0 * 15.0 + 2000.0 * 3.75 + 30000.0 * 0.30) / 1e6;
    assert!(
        (dollars - expected).abs() < 1e-12,
        "{dollars} != {expected}"
    );
}

#[tokio::test]
async fn openai_streaming_tool_calls() {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen3",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let first = openai_stream(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Checking both."}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "Read", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\": "}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"a.txt\"}"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": ": \"ls\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen3", "choices": [],
               "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150, "prompt_tokens_details": {"cached_tokens": 100}}}),
    ]);
    let second = openai_stream(&[
        chunk(json!({"role": "assistant", "content": "All "}), Value::Null),
        chunk(json!({"content": "done."}), json!("stop")),
    ]);
    let server = MockLlm::start(vec![Reply::sse(first), Reply::sse(second)]).await;
    let model =
        OpenAi::new("local", server.base_url(), Some(ApiKey::new("sk-local"))).expect("client");
    let mut req = request("read a.txt and list files");
    req.model = "qwen3".into();
    req.system = vec![SystemBlock::text("Be brief.")];
    req.tools = vec![tool("Read"), tool("Bash")];
    let (result, events) = complete_collect(&model, &req).await;
    let response = result.expect("response");
    assert_eq!(response.text(), "Checking both.");
    assert_eq!(response.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(
        response.tool_uses(),
        vec![
            ("call_a", "Read", &json!({"path": "a.txt"})),
            ("call_b", "Bash", &json!({"command": "ls"})),
        ]
    );
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 20,
            output_tokens: 30,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 100,
        }
    );
    assert_eq!(events.last(), Some(&StreamEvent::MessageStop));
    assert!(events.contains(&StreamEvent::InputJsonDelta {
        index: 2,
        partial_json: ": \"ls\"}".into()
    }));

    req.messages.push(response.to_message());
    req.messages.push(Message {
        role: Role::User,
        content: vec![
            ContentBlock::tool_result("call_a", "hello"),
            ContentBlock::tool_error("call_b", "permission denied"),
        ],
    });
    let done = model.complete(&req, None).await.expect("second");
    assert_eq!(done.text(), "All done.");
    assert_eq!(done.stop_reason, Some(StopReason::EndTurn));

    let recorded = server.requests();
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].header("authorization"), Some("Bearer sk-local"));
    let body = &recorded[0].body;
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        body["tools"][0],
        json!({"type": "function", "function": {"name": "Read", "description": "The Read tool", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}})
    );
    let messages = &recorded[1].body["messages"];
    assert_eq!(
        messages,
        &json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "read a.txt and list files"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "Read", "arguments": "{\"path\":\"a.txt\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "hello"},
            {"role": "tool", "tool_call_id": "call_b", "content": "Error: permission denied"},
        ])
    );
}

#[tokio::test]
async fn openai_429_is_rate_limited() {
    let server = MockLlm::start(vec![
        Reply::error(
            429,
            json!({"error": {"message": "busy", "type": "rate_limit_exceeded"}}),
        )
        .header("retry-after", "2"),
    ])
    .await;
    let model = OpenAi::new("local", server.base_url(), None).expect("client");
    let err = model.complete(&request("hi"), None).await.expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert!(matches!(err, ModelError::RateLimited { .. }));
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn replay_answers_in_order_matches_and_errors_when_exhausted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("exchanges.jsonl");
    let lines = [
        json!({"match": "fix the build", "response": {"id": "r1", "content": [
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "cargo build"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 100, "output_tokens": 20}}}),
        json!({"match": "error[E0425]", "response": {"content": [{"type": "text", "text": "Fixed."}], "stop_reason": "end_turn"}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n\n")).collect();
    std::fs::write(&path, text).expect("write");
    let replay = Replay::from_file("replay", &path).expect("replay");

    // A recorded call of a tool the request does not offer is refused, as a real model
    // cannot make it; the exchange is not spent.
    let mut req = request("Please fix the build");
    let refused = replay
        .complete(&req, None)
        .await
        .expect_err("Bash is not offered");
    assert!(
        matches!(&refused, ModelError::ReplayToolNotOffered { tool, .. } if tool == "Bash"),
        "{refused}"
    );
    req.tools.push(proto::model::ToolDef {
        name: "Bash".into(),
        description: "Runs a command.".into(),
        input_schema: json!({"type": "object"}),
        cache_control: None,
    });
    let (first, events) = complete_collect(&replay, &req).await;
    let first = first.expect("first");
    assert_eq!(first.id, "r1");
    assert_eq!(first.model, "claude-sonnet-4-5");
    assert_eq!(first.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(first.usage.input_tokens, 100);
    assert_eq!(
        events.first().map(std::mem::discriminant),
        Some(std::mem::discriminant(&StreamEvent::MessageStart {
            id: String::new(),
            model: String::new(),
            usage: Usage::default()
        }))
    );
    assert_eq!(events.last(), Some(&StreamEvent::MessageStop));

    req.messages.push(first.to_message());
    req.messages.push(Message {
        role: Role::User,
        content: vec![ContentBlock::tool_result(
            "t1",
            "error[E0425]: cannot find value",
        )],
    });
    let second = replay.complete(&req, None).await.expect("second");
    assert_eq!(second.text(), "Fixed.");
    assert_eq!(replay.served(), 2);

    let err = replay.complete(&req, None).await.expect_err("exhausted");
    assert!(
        matches!(err, ModelError::ReplayExhausted { served: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("exhausted after 2"), "{err}");
    assert_eq!(
        replay.requests().len(),
        4,
        "the refused request is kept too"
    );

    // A drifted conversation fails loudly instead of answering the wrong question.
    let strict = Replay::new(
        "replay",
        "inline",
        vec![Exchange {
            match_key: Some("deploy".into()),
            response: Response {
                id: String::new(),
                model: String::new(),
                content: vec![ContentBlock::text("ok")],
                stop_reason: Some(StopReason::EndTurn),
                usage: Usage::default(),
            },
        }],
    );
    let err = strict
        .complete(&request("something else"), None)
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, ModelError::ReplayMismatch { index: 0, .. }),
        "{err:?}"
    );

    // A JSON array works too.
    let array = dir.path().join("exchanges.json");
    std::fs::write(
        &array,
        serde_json::to_string(&vec![&lines[1]]).expect("json"),
    )
    .expect("write");
    let replay = Replay::from_file("replay", &array).expect("array replay");
    assert_eq!(
        replay.complete(&req, None).await.expect("answer").text(),
        "Fixed."
    );
}

#[test]
fn prices_default_override_and_cost() {
    let defaults = default_prices();
    let haiku = defaults
        .iter()
        .find(|p| p.model == "claude-haiku-4-5")
        .expect("haiku");
    assert_eq!((haiku.input, haiku.output), (1.0, 5.0));
    assert_eq!(
        (haiku.cache_write, haiku.cache_read),
        (Some(1.25), Some(0.10))
    );
    let opus = PriceTable::default()
        .lookup("claude-opus-4-5")
        .cloned()
        .expect("opus");
    assert_eq!(
        (opus.input, opus.output, opus.cache_write, opus.cache_read),
        (5.0, 25.0, Some(6.25), Some(0.5))
    );

    let table = PriceTable::new(&[
        Price {
            model: "claude-opus-4-5".into(),
            input: 4.0,
            output: 20.0,
            cache_write: None,
            cache_read: None,
            context_window: None,
            cache_min_tokens: None,
        },
        Price {
            model: "qwen3".into(),
            input: 0.0,
            output: 0.0,
            cache_write: None,
            cache_read: None,
            context_window: Some(32_768),
            cache_min_tokens: None,
        },
    ]);
    // A declared price keeps the model's limits unless it sets them.
    assert_eq!(table.lookup("claude-opus-4-5").map(|p| p.input), Some(4.0));
    assert_eq!(table.context_window("claude-opus-4-5"), Some(200_000));
    assert_eq!(
        table.cache_min_tokens("claude-opus-4-5-20251101"),
        Some(4096)
    );
    assert_eq!(table.cache_min_tokens("claude-sonnet-4-5"), Some(1024));
    assert_eq!(table.context_window("qwen3"), Some(32_768));
    assert_eq!(table.cache_min_tokens("qwen3"), None);
    let usage = Usage {
        input_tokens: 1_000_000,
        output_tokens: 1_000_000,
        cache_creation_input_tokens: 1_000_000,
        cache_read_input_tokens: 1_000_000,
    };
    // Without cache rates, Anthropic's multipliers apply: 1.25× and 0.1× input.
    let c = table
        .cost("claude-opus-4-5-20251101", &usage)
        .expect("opus price");
    assert!((c - (4.0 + 20.0 + 5.0 + 0.4)).abs() < 1e-9, "{c}");
    assert_eq!(table.cost("qwen3", &usage), Some(0.0));
    assert_eq!(table.cost("unknown-model", &usage), None);
    let sonnet = table.lookup("claude-sonnet-4-5").expect("default kept");
    assert!((cost(&usage, sonnet) - (3.0 + 15.0 + 3.75 + 0.30)).abs() < 1e-9);
}

#[test]
fn keys_come_from_the_named_variable_and_never_show() {
    let var = "PROTO_TEST_MODEL_KEY_7F3A";
    // SAFETY: the variable name is unique to this test, so no other thread reads or writes it.
    unsafe { std::env::set_var(var, KEY) };
    let provider = Provider {
        name: "claude".into(),
        kind: ProviderKind::Anthropic,
        base_url: Some("http://127.0.0.1:9".into()),
        api_key_env: Some(var.into()),
        file: None,
    };
    let model = Anthropic::from_provider(&provider).expect("client");
    assert_eq!(model.name(), "claude");
    let debug = format!("{model:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");

    let missing = Provider {
        api_key_env: Some("PROTO_TEST_MODEL_KEY_UNSET_9C1D".into()),
        ..provider
    };
    let err = Anthropic::from_provider(&missing).expect_err("no key");
    assert!(matches!(err, ModelError::Config(_)));
    assert!(err.to_string().contains("PROTO_TEST_MODEL_KEY_UNSET_9C1D"));
}

#[test]
fn retry_after_parses_seconds_and_dates() {
    use proto::model::parse_retry_after;
    assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
    assert_eq!(
        parse_retry_after(" 1.5 "),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("soon"), None);
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
}

#[tokio::test]
async fn providers_from_the_company_spec() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("replays")).expect("mkdir");
    std::fs::write(
        dir.path().join("replays/demo.jsonl"),
        json!({"response": {"content": [{"type": "text", "text": "recorded"}], "stop_reason": "end_turn"}}).to_string(),
    )
    .expect("write");
    let replay = Provider {
        name: "demo".into(),
        kind: ProviderKind::Replay,
        base_url: None,
        api_key_env: None,
        file: Some("replays/demo.jsonl".into()),
    };
    let model = proto::model::from_provider(&replay, dir.path()).expect("replay provider");
    assert_eq!(model.name(), "demo");
    let response = model.complete(&request("hi"), None).await.expect("answer");
    assert_eq!(response.text(), "recorded");

    let no_file = Provider {
        file: None,
        ..replay.clone()
    };
    assert!(matches!(
        proto::model::from_provider(&no_file, dir.path()),
        Err(ModelError::Config(_))
    ));
    let no_base = Provider {
        kind: ProviderKind::Openai,
        file: None,
        ..replay
    };
    assert!(matches!(
        proto::model::from_provider(&no_base, dir.path()),
        Err(ModelError::Config(_))
    ));
}

#[tokio::test]
async fn temperature_is_sent_as_written() {
    let server = MockLlm::start(vec![Reply::sse(text_stream("m", "ok", "end_turn"))]).await;
    let mut req = request("hi");
    req.temperature = Some(0.7);
    anthropic(&server)
        .complete(&req, None)
        .await
        .expect("response");
    assert_eq!(server.requests()[0].body["temperature"], json!(0.7));
}

#[tokio::test]
async fn openai_error_chunk_mid_stream_and_comments() {
    let body = format!(
        ": ping\n\n{}data: {}\n\n",
        "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        json!({"error": {"message": "model overloaded", "type": "overloaded_error"}})
    );
    let server = MockLlm::start(vec![Reply::sse(body)]).await;
    let model = OpenAi::new("local", server.base_url(), None).expect("client");
    let (result, events) = complete_collect(&model, &request("hi")).await;
    assert!(
        matches!(result, Err(ModelError::Overloaded { .. })),
        "{result:?}"
    );
    assert!(events.contains(&StreamEvent::TextDelta {
        index: 0,
        text: "Hi".into()
    }));
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Error {
            kind: "overloaded_error".into(),
            message: "model overloaded".into()
        })
    );
}

#[tokio::test]
async fn overloaded_event_is_retried_by_the_policy_and_waits_are_capped() {
    use proto::model::{RetryPolicy, with_retry_policy};
    let overloaded = anthropic_stream(&[
        message_start(
            "msg_o",
            "claude-sonnet-4-5",
            json!({"input_tokens": 5, "output_tokens": 1}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    let server = MockLlm::start(vec![
        Reply::sse(overloaded),
        Reply::sse(text_stream("msg_ok", "second time lucky", "end_turn")),
    ])
    .await;
    let policy = RetryPolicy {
        max_retries: 1,
        max_wait: Duration::from_secs(60),
        base_wait: Duration::from_millis(10),
    };
    let response = with_retry_policy(&anthropic(&server), &request("hi"), &policy, None)
        .await
        .expect("retried");
    assert_eq!(response.text(), "second time lucky");
    assert_eq!(server.requests().len(), 2);

    // A huge retry-after is capped; without one, waits double from the base.
    let slow = ModelError::RateLimited {
        retry_after: Some(Duration::from_secs(3600)),
        message: String::new(),
    };
    assert_eq!(policy.wait(0, &slow), Duration::from_secs(60));
    let bare = ModelError::Overloaded {
        retry_after: None,
        message: String::new(),
    };
    assert_eq!(policy.wait(0, &bare), Duration::from_millis(10));
    assert_eq!(policy.wait(3, &bare), Duration::from_millis(80));
    // Errors that retrying cannot fix are not retried.
    assert!(
        !ModelError::Http {
            status: 400,
            body: String::new()
        }
        .is_retryable()
    );
}

#[test]
fn breakpoints_on_prefixes_shorter_than_the_cache_minimum_are_taken_off() {
    let long = "x".repeat(5000);
    let mut req = Request {
        model: "claude-opus-4-5".into(),
        system: vec![SystemBlock::text("short system prompt")],
        tools: vec![tool("Read")],
        messages: vec![
            Message::user("start"),
            Message::assistant(long),
            Message::user("next"),
        ],
        max_tokens: 10,
        ..Default::default()
    };
    place_cache_breakpoints(&mut req);
    assert_eq!(count_cache_breakpoints(&req), 4);
    proto::model::drop_short_breakpoints(&mut req, 4096);
    // Tools and system are far below 4,096 bytes, so certainly below 4,096 tokens; the
    // conversation prefix past the long answer may reach it and keeps its breakpoints.
    assert!(req.tools[0].cache_control.is_none());
    assert!(req.system[0].cache_control.is_none());
    assert_eq!(count_cache_breakpoints(&req), 2);
}

#[test]
fn images_in_tool_results_reach_each_provider_in_its_own_shape() {
    use proto::model::{Image, ToolContent};
    let image = Image::png(b"\x89PNG not really");
    let mut req = request("look at the screen");
    req.messages.push(Message {
        role: Role::Assistant,
        content: vec![
            ContentBlock::tool_use("shot", "Computer", json!({"action": "screenshot"})),
            ContentBlock::tool_use("ls", "Bash", json!({"command": "ls"})),
        ],
    });
    req.messages.push(Message {
        role: Role::User,
        content: vec![
            ContentBlock::tool_result_with_images("shot", "the screen", vec![image.clone()]),
            ContentBlock::tool_result("ls", "a.txt"),
        ],
    });

    // Anthropic: the image block first, then the text; a text-only result stays a string.
    let body = proto::model::anthropic::request_body(&req);
    let results = &body["messages"][2]["content"];
    assert_eq!(
        results[0]["content"],
        json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image.data}},
            {"type": "text", "text": "the screen"},
        ])
    );
    assert_eq!(results[1]["content"], json!("a.txt"));
    // What is recorded reads back the same (a replay file, a resumed journal).
    let block: ContentBlock = serde_json::from_value(results[0].clone()).unwrap();
    let ContentBlock::ToolResult { content, .. } = block else {
        panic!("not a tool result");
    };
    assert_eq!(
        content,
        ToolContent {
            text: "the screen".into(),
            images: vec![image.clone()]
        }
    );
    assert_eq!(image.bytes, b"\x89PNG not really".len());
    assert_eq!(image.sha256.len(), 64);

    // OpenAI-compatible: a tool message cannot carry an image, so the tool messages answer
    // the calls with text and one user message after them carries the image.
    let body = proto::model::openai::request_body(&req);
    assert_eq!(
        body["messages"].as_array().unwrap()[2..],
        [
            json!({"role": "tool", "tool_call_id": "shot", "content": "the screen"}),
            json!({"role": "tool", "tool_call_id": "ls", "content": "a.txt"}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "The image(s) of tool call shot:"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", image.data)}},
            ]}),
        ]
    );
}
