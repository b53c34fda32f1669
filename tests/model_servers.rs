//! The model providers against local servers that behave as the real ones do (llama.cpp,
//! Ollama, vLLM, the Anthropic API): base URLs written with or without `/v1`, servers that
//! are down, tool calls whatever the stop reason, and turns cut short by `max_tokens`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/mock_llm.rs"]
mod mock_llm;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mock_llm::{MockLlm, Reply, anthropic_stream, message_start, openai_stream, text_stream};
use proto::agent::Session;
use proto::computer::{Local, Workspace};
use proto::gitops::Identity;
use proto::model::limit::TurnLimit;
use proto::model::{
    Anthropic, ApiKey, ErrorClass, Message, Model, ModelError, OpenAi, PriceTable, Request, Router,
};
use proto::policy::Actor;
use proto::policy::limits::TaskBudget;
use proto::spec::Priority;
use proto::store::activity::Activity;
use proto::store::{NewTask, Store, TaskId};
use proto::tools::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn request(text: &str) -> Request {
    Request {
        model: "qwen3".into(),
        messages: vec![Message::user(text)],
        max_tokens: 256,
        ..Default::default()
    }
}

fn openai_text(text: &str) -> String {
    openai_stream(&[
        json!({"id": "c", "object": "chat.completion.chunk", "model": "qwen3",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": Value::Null}]}),
        json!({"id": "c", "object": "chat.completion.chunk", "model": "qwen3",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    ])
}

#[tokio::test]
async fn base_urls_with_or_without_v1_post_to_the_one_route() {
    for suffix in ["", "/", "/v1", "/v1/"] {
        let server = MockLlm::start(vec![Reply::sse(openai_text("hi"))]).await;
        let model = OpenAi::new("local", format!("{}{suffix}", server.base_url()), None).unwrap();
        assert_eq!(
            model.complete(&request("hi"), None).await.unwrap().text(),
            "hi"
        );
        assert_eq!(
            server.requests()[0].path,
            "/v1/chat/completions",
            "{suffix:?}"
        );

        let server = MockLlm::start(vec![Reply::sse(text_stream("m", "hi", "end_turn"))]).await;
        let model = Anthropic::new(
            "anthropic",
            format!("{}{suffix}", server.base_url()),
            ApiKey::new("k"),
        )
        .unwrap();
        assert_eq!(
            model.complete(&request("hi"), None).await.unwrap().text(),
            "hi"
        );
        assert_eq!(server.requests()[0].path, "/v1/messages", "{suffix:?}");
    }
}

#[tokio::test]
async fn a_server_that_is_down_is_an_outage_that_names_its_cause() {
    let down = mock_llm::down_address();
    let model = OpenAi::new("local", format!("http://{down}/v1"), None).unwrap();
    let e = model.complete(&request("hi"), None).await.unwrap_err();
    assert!(e.is_outage(), "{e}");
    assert_eq!(e.class(), ErrorClass::Outage);
    assert!(
        e.to_string()
            .contains(&format!("connection refused to {down}")),
        "{e}"
    );
    // Behind the router, every circuit open is still an outage, with the cause.
    let router = Router::new(vec![std::sync::Arc::new(model)]);
    let mut last = None;
    for _ in 0..6 {
        last = Some(router.complete(&request("hi"), None).await.unwrap_err());
    }
    let e = last.unwrap();
    assert!(matches!(e, ModelError::CircuitOpen { .. }), "{e}");
    assert!(e.is_outage() && e.retry_after().is_some(), "{e}");
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert!(!e.to_string().contains("configuration"), "{e}");
}

#[tokio::test]
async fn server_errors_are_outages_and_request_errors_are_not() {
    for (status, outage) in [
        (500, true),
        (502, true),
        (503, true),
        (529, true),
        (429, true),
        (400, false),
        (401, false),
        (403, false),
        (404, false),
    ] {
        let server = MockLlm::start(vec![Reply::error(
            status,
            json!({"error": {"type": "x", "message": format!("status {status}")}}),
        )])
        .await;
        let model = Anthropic::new("a", server.base_url(), ApiKey::new("k")).unwrap();
        let e = model.complete(&request("hi"), None).await.unwrap_err();
        assert_eq!(e.is_outage(), outage, "{status}: {e}");
        if !outage {
            assert_eq!(e.class(), ErrorClass::Request, "{status}");
            assert!(e.to_string().contains(&format!("HTTP {status}")), "{e}");
        }
    }
}

/// A task in a real store, a real workspace, and a session's worth of everything else.
struct Bench {
    dir: tempfile::TempDir,
    store: Store,
    local: Local,
    workspace: Workspace,
    author: Identity,
    cancel: CancellationToken,
    task: TaskId,
    tools: Vec<String>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let now = Utc::now();
        let task = store
            .enqueue(
                &NewTask {
                    key: "hello@1".into(),
                    goal: "hello".into(),
                    product: "app".into(),
                    owner: "ceo".into(),
                    priority: Priority::Medium,
                    max_attempts: 1,
                    revision: "r1".into(),
                    parent: None,
                },
                now,
            )
            .unwrap()
            .unwrap();
        store.start(task, "local", now).unwrap();
        Bench {
            local: Local::new("local", dir.path().join("work")),
            workspace: Workspace::new(&root),
            dir,
            store,
            author: Identity {
                name: "Ada Agent".into(),
                email: "ada@example.com".into(),
            },
            cancel: CancellationToken::new(),
            task,
            tools: vec!["Read".into(), "Write".into()],
        }
    }

    fn session<'a>(&'a self, model: &'a dyn Model, model_id: &str) -> Session<'a> {
        Session {
            actor: Actor {
                store: &self.store,
                task: self.task,
                goal: "hello",
                agent: "ceo",
                tools: Arc::new(Registry::with_builtins(self.tools.clone())),
                computer: &self.local,
                workspace: &self.workspace,
                author: &self.author,
                cancel: &self.cancel,
                settings: None,
                limits: None,
                delegated: false,
                gates: None,
            },
            model,
            model_id: model_id.into(),
            system: Vec::new(),
            scoped_rules: Vec::new(),
            task: "Write hello.txt".into(),
            selected: None,
            max_turns: 6,
            max_tokens: 1_000,
            thinking: None,
            budget: TaskBudget::default(),
            prices: PriceTable::default(),
            step_base: 0,
        }
    }

    fn hello(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("ws/hello.txt")).ok()
    }
}

const WRITE_ARGS: &str = r#"{"file_path":"hello.txt","content":"hello\n"}"#;

/// An OpenAI-format turn calling Write, ending with `finish`: streamed as Ollama streams
/// it (the whole call in one delta, then the finish reason, then usage), or whole.
fn openai_tool_turn(finish: &str, streamed: bool) -> Reply {
    let call = json!({"id": "call_w", "index": 0, "type": "function", "function": {"name": "Write", "arguments": WRITE_ARGS}});
    let usage = json!({"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52});
    if streamed {
        Reply::sse(openai_stream(&[
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "qwen3", "system_fingerprint": "fp_ollama",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "tool_calls": [call]}, "finish_reason": Value::Null}]}),
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "qwen3", "system_fingerprint": "fp_ollama",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": finish}]}),
            json!({"id": "c1", "object": "chat.completion.chunk", "model": "qwen3", "choices": [], "usage": usage}),
        ]))
    } else {
        let mut call = call;
        call.as_object_mut().unwrap().remove("index");
        Reply::error(
            200,
            json!({"id": "c1", "object": "chat.completion", "model": "qwen3",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": Value::Null, "tool_calls": [call]}, "finish_reason": finish}],
                   "usage": usage}),
        )
    }
}

fn openai_text_turn(text: &str, streamed: bool) -> Reply {
    if streamed {
        Reply::sse(openai_text(text))
    } else {
        Reply::error(
            200,
            json!({"id": "c2", "object": "chat.completion", "model": "qwen3",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 60, "completion_tokens": 3, "total_tokens": 63}}),
        )
    }
}

/// An Anthropic-format turn calling Write, ending with `stop`, streamed or whole.
fn anthropic_tool_turn(stop: &str, streamed: bool) -> Reply {
    let input: Value = serde_json::from_str(WRITE_ARGS).unwrap();
    if streamed {
        Reply::sse(anthropic_stream(&[
            message_start(
                "m1",
                "claude-sonnet-4-5",
                json!({"input_tokens": 40, "output_tokens": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_w", "name": "Write", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": WRITE_ARGS}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": Value::Null}, "usage": {"output_tokens": 12}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]))
    } else {
        Reply::error(
            200,
            json!({"id": "m1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                   "content": [{"type": "tool_use", "id": "toolu_w", "name": "Write", "input": input}],
                   "stop_reason": stop, "stop_sequence": Value::Null,
                   "usage": {"input_tokens": 40, "output_tokens": 12}}),
        )
    }
}

fn anthropic_text_turn(text: &str, streamed: bool) -> Reply {
    if streamed {
        Reply::sse(text_stream("m2", text, "end_turn"))
    } else {
        Reply::error(
            200,
            json!({"id": "m2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                   "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": Value::Null,
                   "usage": {"input_tokens": 60, "output_tokens": 3}}),
        )
    }
}

/// The tool results the second request carried, in the wire format's own shape.
fn results_sent(body: &Value) -> String {
    body["messages"].to_string()
}

#[tokio::test]
async fn tool_calls_run_whatever_the_stop_reason_on_both_formats_streamed_or_not() {
    for streamed in [true, false] {
        for finish in ["tool_calls", "stop"] {
            let bench = Bench::new();
            let server = MockLlm::start(vec![
                openai_tool_turn(finish, streamed),
                openai_text_turn("Wrote it.", streamed),
            ])
            .await;
            let model = OpenAi::new("ollama", format!("{}/v1", server.base_url()), None).unwrap();
            let done = bench.session(&model, "qwen3").run().await.unwrap();
            let case = format!("openai, finish_reason {finish}, streamed {streamed}");
            assert_eq!(bench.hello().as_deref(), Some("hello\n"), "{case}");
            assert_eq!((done.turns, done.text.as_str()), (2, "Wrote it."), "{case}");
            let second = &server.requests()[1].body;
            assert!(
                results_sent(second).contains(r#""role":"tool","tool_call_id":"call_w""#),
                "{case}: {second:#}"
            );
        }
        for stop in ["tool_use", "end_turn"] {
            let bench = Bench::new();
            let server = MockLlm::start(vec![
                anthropic_tool_turn(stop, streamed),
                anthropic_text_turn("Wrote it.", streamed),
            ])
            .await;
            let model = Anthropic::new("a", server.base_url(), ApiKey::new("k")).unwrap();
            let done = bench
                .session(&model, "claude-sonnet-4-5")
                .run()
                .await
                .unwrap();
            let case = format!("anthropic, stop_reason {stop}, streamed {streamed}");
            assert_eq!(bench.hello().as_deref(), Some("hello\n"), "{case}");
            assert_eq!((done.turns, done.text.as_str()), (2, "Wrote it."), "{case}");
            let second = &server.requests()[1].body;
            assert!(
                results_sent(second).contains(r#""tool_use_id":"toolu_w""#),
                "{case}: {second:#}"
            );
        }
    }
}

#[tokio::test]
async fn a_max_tokens_stop_is_reported_to_the_model_and_the_session_goes_on() {
    let bench = Bench::new();
    let cut = anthropic_stream(&[
        message_start(
            "m1",
            "claude-sonnet-4-5",
            json!({"input_tokens": 40, "output_tokens": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "I will now write the fi"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": Value::Null}, "usage": {"output_tokens": 1000}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let server = MockLlm::start(vec![
        Reply::sse(cut),
        anthropic_tool_turn("tool_use", true),
        anthropic_text_turn("Wrote it.", true),
    ])
    .await;
    let model = Anthropic::new("a", server.base_url(), ApiKey::new("k")).unwrap();
    let done = bench
        .session(&model, "claude-sonnet-4-5")
        .run()
        .await
        .unwrap();
    assert_eq!(done.turns, 3);
    assert_eq!(bench.hello().as_deref(), Some("hello\n"));
    let second = server.requests()[1].body["messages"].clone();
    let told = second.as_array().unwrap().last().unwrap().to_string();
    assert!(
        told.contains("cut off") && told.contains("1000 output tokens"),
        "{second:#}"
    );
    // The activity log says why the session went on.
    let lines: Vec<String> = bench
        .store
        .events(0, 100)
        .unwrap()
        .iter()
        .filter_map(Activity::from_event)
        .map(|a| a.line())
        .collect();
    assert!(
        lines[0].contains("cut off at max_tokens, told to continue"),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_tool_call_cut_off_by_the_length_limit_is_dropped_and_the_model_told() {
    let bench = Bench::new();
    let half = openai_stream(&[
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "qwen3",
               "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_h", "type": "function", "function": {"name": "Write", "arguments": "{\"file_path\":\"hello.txt\",\"cont"}}]}, "finish_reason": Value::Null}]}),
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "qwen3",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
    ]);
    let server = MockLlm::start(vec![
        Reply::sse(half),
        openai_tool_turn("tool_calls", true),
        openai_text_turn("Wrote it.", true),
    ])
    .await;
    let model = OpenAi::new("llama", server.base_url(), None).unwrap();
    let done = bench.session(&model, "qwen3").run().await.unwrap();
    assert_eq!(done.turns, 3);
    assert_eq!(bench.hello().as_deref(), Some("hello\n"));
    let second = server.requests()[1].body["messages"].to_string();
    assert!(
        !second.contains("call_h"),
        "the half call is never sent back: {second}"
    );
    assert!(second.contains("cut off"), "{second}");
}

#[tokio::test]
async fn the_thinking_budget_is_not_granted_where_thinking_is_not_sent() {
    let server = MockLlm::start(vec![
        Reply::sse(openai_text("hi")),
        Reply::sse(text_stream("m", "hi", "end_turn")),
    ])
    .await;
    let mut req = request("hi");
    req.max_tokens = 8192 + 6000;
    req.thinking = Some(6000);
    let openai = OpenAi::new("local", server.base_url(), None).unwrap();
    openai.complete(&req, None).await.unwrap();
    let anthropic = Anthropic::new("a", server.base_url(), ApiKey::new("k")).unwrap();
    anthropic.complete(&req, None).await.unwrap();
    let sent = server.requests();
    assert_eq!(sent[0].body["max_tokens"], 8192, "{:#}", sent[0].body);
    assert!(sent[0].body.get("thinking").is_none());
    // Where thinking is sent, max_tokens holds the budget and the answer.
    assert_eq!(sent[1].body["max_tokens"], 8192 + 6000);
    assert_eq!(sent[1].body["thinking"]["budget_tokens"], 6000);
}

#[tokio::test]
async fn a_turn_past_its_wall_clock_limit_ends_as_a_retryable_error() {
    // A server that keeps streaming, slowly: every read succeeds, so only the turn's own
    // limit ends it.
    let slow = Reply {
        delay: Duration::from_millis(400),
        ..Reply::sse_chunks(
            (0..20)
                .map(|i| {
                    format!(
                        "data: {}\n\n",
                        json!({"id": "c", "model": "qwen3", "choices": [{"index": 0, "delta": {"content": format!("word{i} ")}, "finish_reason": Value::Null}]})
                    )
                    .into_bytes()
                })
                .collect(),
        )
    };
    let server = MockLlm::start(vec![slow]).await;
    let inner: std::sync::Arc<dyn Model> =
        std::sync::Arc::new(OpenAi::new("cpu", server.base_url(), None).unwrap());
    let limited = TurnLimit::new(inner, Duration::from_millis(600));
    let started = std::time::Instant::now();
    let e = limited
        .complete(&request("write a novel"), None)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, ModelError::TurnTimeout(_)), "{e}");
    assert_eq!(e.class(), ErrorClass::Limit);
    assert!(!e.is_outage(), "a runaway turn spends its attempt: {e}");
}

#[tokio::test]
async fn a_404_says_where_the_request_went_and_llama_cpps_context_error_is_the_requests() {
    let server = MockLlm::start(vec![
        Reply::error(404, json!({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})),
        // llama.cpp's answer to a prompt longer than its context (`-c`).
        Reply::error(400, json!({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 9000, "n_ctx": 8192}})),
    ])
    .await;
    let model = OpenAi::new("llama", format!("{}/llm", server.base_url()), None).unwrap();
    let e = model.complete(&request("hi"), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Request);
    let shown = e.to_string();
    assert!(
        shown.contains("HTTP 404")
            && shown.contains("/llm/v1/chat/completions")
            && shown.contains("check the provider's baseUrl"),
        "{shown}"
    );
    let e = model.complete(&request("hi"), None).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Request);
    assert!(
        e.to_string().contains("exceeds the available context size"),
        "{e}"
    );
}

#[tokio::test]
async fn a_local_server_on_the_anthropic_route_needs_no_key() {
    let server = MockLlm::start(vec![Reply::sse(text_stream("m", "hi", "end_turn"))]).await;
    // llama-server's Messages route, declared as its docs show it: no apiKeyEnv.
    let provider = proto::spec::Provider {
        name: "llama-messages".into(),
        kind: proto::spec::ProviderKind::Anthropic,
        base_url: Some(format!("{}/v1", server.base_url())),
        api_key_env: None,
        file: None,
    };
    let model = proto::model::from_provider(&provider, std::path::Path::new(".")).unwrap();
    assert_eq!(
        model.complete(&request("hi"), None).await.unwrap().text(),
        "hi"
    );
    let sent = server.requests();
    assert_eq!(sent[0].path, "/v1/messages");
    // Sent only if the environment has one (it is then the user's to give).
    let key = std::env::var("ANTHROPIC_API_KEY")
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    assert_eq!(sent[0].header("x-api-key").map(str::to_string), key);
    // A named variable stays required.
    let named = proto::spec::Provider {
        api_key_env: Some("PROTO_TEST_SURELY_UNSET_KEY".into()),
        ..provider
    };
    assert!(matches!(
        proto::model::from_provider(&named, std::path::Path::new(".")),
        Err(ModelError::Config(_))
    ));
}

#[tokio::test]
async fn llama_cpp_streams_its_usage_with_the_finish_reason_and_timings() {
    let base = json!({"created": 1, "id": "chatcmpl-l", "model": "qwen3-4b", "system_fingerprint": "b6000", "object": "chat.completion.chunk"});
    let chunk = |choice: Value, extra: Value| {
        let mut c = base.clone();
        c["choices"] = json!([choice]);
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let body = openai_stream(&[
        chunk(
            json!({"finish_reason": Value::Null, "index": 0, "delta": {"role": "assistant", "content": Value::Null}}),
            json!({}),
        ),
        chunk(
            json!({"finish_reason": Value::Null, "index": 0, "delta": {"tool_calls": [{"index": 0, "id": "k1", "type": "function", "function": {"name": "Write", "arguments": ""}}]}}),
            json!({}),
        ),
        chunk(
            json!({"finish_reason": Value::Null, "index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": WRITE_ARGS}}]}}),
            json!({}),
        ),
        chunk(
            json!({"finish_reason": "tool_calls", "index": 0, "delta": {}}),
            json!({"usage": {"completion_tokens": 20, "prompt_tokens": 100, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 80}},
                   "timings": {"cache_n": 80, "prompt_n": 20, "prompt_ms": 900.5, "predicted_n": 20, "predicted_ms": 2000.1}}),
        ),
    ]);
    let server = MockLlm::start(vec![Reply::sse(body)]).await;
    let model = OpenAi::new("llama", format!("{}/v1", server.base_url()), None).unwrap();
    let response = model.complete(&request("write"), None).await.unwrap();
    assert_eq!(response.tool_uses().len(), 1);
    assert_eq!(response.tool_uses()[0].1, "Write");
    assert_eq!(
        (
            response.usage.input_tokens,
            response.usage.cache_read_input_tokens,
            response.usage.output_tokens
        ),
        (20, 80, 20)
    );
}
