//! The model providers against local servers that behave as the real ones do (llama.cpp,
//! Ollama, vLLM, the Anthropic API): base URLs written with or without `/v1`, servers that
//! are down, tool calls whatever the stop reason, and turns cut short by `max_tokens`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/mock_llm.rs"]
mod mock_llm;

use mock_llm::{MockLlm, Reply, openai_stream, text_stream};
use proto::model::{
    Anthropic, ApiKey, ErrorClass, Message, Model, ModelError, OpenAi, Request, Router,
};
use serde_json::{Value, json};

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
