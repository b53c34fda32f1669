//! The model providers against local servers that behave as the real ones do (llama.cpp,
//! Ollama, vLLM, the Anthropic API): base URLs written with or without `/v1`, servers that
//! are down, tool calls whatever the stop reason, and turns cut short by `max_tokens`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/mock_llm.rs"]
mod mock_llm;

use mock_llm::{MockLlm, Reply, openai_stream, text_stream};
use proto::model::{Anthropic, ApiKey, Message, Model, OpenAi, Request};
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
