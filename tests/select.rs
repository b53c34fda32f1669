//! Smart selection against a live Anthropic-format server: a valid classifier answer picks the
//! tier, anything else (unparsable, a provider error, no model) falls back to the rules, a
//! declared model is used as declared, and a restart never asks the classifier again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/mock_llm.rs"]
mod mock_llm;

use mock_llm::{MockLlm, Reply, text_stream};
use proto::agent::select::{
    CLASSIFIER_SYSTEM, Facts, SELECT_STEP, Selection, Selector, Source, Tier,
};
use proto::model::{Anthropic, ApiKey, Model, PriceTable};
use proto::spec::{AgentSpec, Priority, Spec};
use proto::store::{NewTask, Store, TaskId};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn task(store: &Store) -> TaskId {
    store
        .enqueue(
            &NewTask {
                key: "add-health#1".into(),
                goal: "add-health".into(),
                product: "app".into(),
                owner: "backend".into(),
                priority: Priority::Medium,
                max_attempts: 3,
                revision: String::new(),
                parent: None,
            },
            chrono::Utc::now(),
        )
        .unwrap()
        .unwrap()
}

fn backend() -> AgentSpec {
    AgentSpec {
        title: "Backend Developer".into(),
        description: "Builds APIs.".into(),
        prompt: "Build it.".into(),
        thinking: Some(6_000),
        ..AgentSpec::default()
    }
}

/// Ordinary engineering work: the rules say sonnet.
fn facts() -> Facts {
    Facts {
        goal: "add-health".into(),
        description: "GET /health answers 200 with the build version.".into(),
        check_kind: "command".into(),
        check: "pytest tests/test_health.py".into(),
        agent_title: "Backend Developer".into(),
        ..Facts::default()
    }
}

async fn select(
    store: &Store,
    task: TaskId,
    model: Option<&dyn Model>,
    agent: &AgentSpec,
    facts: &Facts,
) -> Selection {
    let prices = PriceTable::default();
    let cancel = CancellationToken::new();
    Selector {
        store,
        task,
        goal: "add-health",
        agent: "backend",
        model,
        prices: &prices,
        cancel: &cancel,
        budget: Default::default(),
    }
    .select(&Spec::default(), agent, facts)
    .await
    .unwrap()
}

fn client(server: &MockLlm) -> Anthropic {
    Anthropic::new("mock", server.base_url(), ApiKey::new("sk-test")).unwrap()
}

fn audited(store: &Store, action: &str) -> Vec<serde_json::Value> {
    store
        .pending_audit()
        .unwrap()
        .into_iter()
        .filter(|r| r.action == action)
        .map(|r| r.outcome)
        .collect()
}

#[tokio::test]
async fn a_valid_classifier_answer_picks_the_tier_and_is_paid_for_and_audited() {
    let server = MockLlm::start(vec![Reply::sse(text_stream(
        "c1",
        "{\"tier\": \"opus\", \"thinking\": 12000, \"reason\": \"version plumbing touches the release path\"}",
        "end_turn",
    ))])
    .await;
    let model = client(&server);
    let store = Store::in_memory().unwrap();
    let id = task(&store);
    let s = select(&store, id, Some(&model), &backend(), &facts()).await;
    assert_eq!(s.source, Source::Classifier);
    assert_eq!(s.tier, Some(Tier::Opus));
    assert_eq!(s.model_id, "claude-opus-4-5");
    // The agent declares thinking 6000: the ceiling of what is selected.
    assert_eq!(s.thinking, Some(6_000));
    assert!(s.reason.contains("release path"), "{}", s.reason);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(body["model"], json!("claude-haiku-4-5"));
    assert_eq!(body["system"][0]["text"], json!(CLASSIFIER_SYSTEM));
    assert!(body.get("tools").is_none() && body.get("thinking").is_none());
    let asked = body["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(
        asked.contains("GET /health") && asked.contains("Backend Developer"),
        "{asked}"
    );

    // Its tokens and dollars are recorded against the task.
    assert!(store.spent_on_goal("add-health").unwrap() > 0.0);
    let selections = audited(&store, "select");
    assert_eq!(selections.len(), 1);
    assert_eq!(selections[0]["source"], json!("classifier"));
    assert_eq!(selections[0]["modelId"], json!("claude-opus-4-5"));
    assert_eq!(audited(&store, "model").len(), 1);
}

#[tokio::test]
async fn an_invalid_answer_or_a_broken_provider_falls_back_to_the_rules() {
    let server = MockLlm::start(vec![
        Reply::sse(text_stream("c1", "I would use a strong model.", "end_turn")),
        Reply::sse(text_stream(
            "c2",
            "{\"tier\": \"gpt-5\", \"thinking\": 0, \"reason\": \"x\"}",
            "end_turn",
        )),
        Reply::error(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}),
        ),
    ])
    .await;
    let model = client(&server);
    for expected_call in 1..=3 {
        let store = Store::in_memory().unwrap();
        let id = task(&store);
        let s = select(&store, id, Some(&model), &backend(), &facts()).await;
        assert_eq!(s.source, Source::Rule, "{}", s.reason);
        assert_eq!(s.tier, Some(Tier::Sonnet), "{}", s.reason);
        assert_eq!(s.model_id, "claude-sonnet-4-5");
        assert_eq!(s.thinking, Some(4_000));
        assert_eq!(server.requests().len(), expected_call);
        assert_eq!(audited(&store, "select")[0]["source"], json!("rule"));
    }
}

#[tokio::test]
async fn without_a_model_the_rules_decide_and_attempts_escalate_from_there() {
    let store = Store::in_memory().unwrap();
    let id = task(&store);
    let docs = Facts {
        description: "Fix the typo in the README's install section.".into(),
        check_kind: "file".into(),
        check: "README.md matches pip install".into(),
        ..facts()
    };
    let s = select(&store, id, None, &backend(), &docs).await;
    assert_eq!(
        (s.source, s.tier, s.thinking),
        (Source::Rule, Some(Tier::Haiku), None)
    );
    // Typo work checked in a document: the rules are certain, no model is even needed.
    assert!(s.reason.contains("no classifier call"), "{}", s.reason);
    let other = Store::in_memory().unwrap();
    let s = select(&other, task(&other), None, &backend(), &facts()).await;
    assert_eq!((s.source, s.tier), (Source::Rule, Some(Tier::Sonnet)));
    assert!(s.reason.contains("no model"), "{}", s.reason);

    // A second attempt (the worker clears the journal for it) escalates and thinks.
    store.clear_actions(id).unwrap();
    let retry = Facts {
        attempt: 1,
        last_error: Some("the check still fails".into()),
        ..docs
    };
    let s = select(&store, id, None, &backend(), &retry).await;
    assert_eq!(
        (s.tier, s.model_id.as_str(), s.thinking),
        (Some(Tier::Sonnet), "claude-sonnet-4-5", Some(4_000))
    );
}

#[tokio::test]
async fn a_declared_model_is_used_as_declared_without_a_classifier_call() {
    let server = MockLlm::start(vec![]).await;
    let model = client(&server);
    let store = Store::in_memory().unwrap();
    let id = task(&store);
    let agent = AgentSpec {
        model: Some("haiku".into()),
        ..backend()
    };
    let s = select(&store, id, Some(&model), &agent, &facts()).await;
    assert_eq!(
        (s.source, s.model_id.as_str(), s.thinking),
        (Source::Declared, "claude-haiku-4-5", Some(6_000))
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_restart_does_not_repeat_the_classifier_call() {
    let server = MockLlm::start(vec![Reply::sse(text_stream(
        "c1",
        "{\"tier\": \"haiku\", \"thinking\": 0, \"reason\": \"a one-line handler\"}",
        "end_turn",
    ))])
    .await;
    let model = client(&server);
    let dir = tempfile::tempdir().unwrap();
    let (id, first) = {
        let store = Store::open(dir.path()).unwrap();
        let id = task(&store);
        (
            id,
            select(&store, id, Some(&model), &backend(), &facts()).await,
        )
    };
    // A new process: the same store, the same attempt.
    let store = Store::open(dir.path()).unwrap();
    let again = select(&store, id, Some(&model), &backend(), &facts()).await;
    assert_eq!(again, first);
    assert_eq!(first.source, Source::Classifier);
    assert_eq!(server.requests().len(), 1, "the classifier was asked again");

    // Killed after the classifier answered but before the selection was journaled: the
    // recorded answer is used, not a new call.
    store.clear_actions(id).unwrap();
    let recorded = json!({
        "id": "c0", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "{\"tier\": \"sonnet\", \"thinking\": 2000, \"reason\": \"recorded\"}"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 300, "output_tokens": 20}
    });
    let step = store
        .action_started(id, SELECT_STEP, "Model", &json!({}), chrono::Utc::now())
        .unwrap();
    let audit = proto::store::AuditRecord {
        id: 0,
        time: chrono::Utc::now(),
        agent: "backend".into(),
        goal: None,
        task: Some(id),
        action: "model".into(),
        input: json!({}),
        outcome: json!({}),
        diff: None,
    };
    store
        .action_finished(step, &recorded, &audit, chrono::Utc::now())
        .unwrap();
    let resumed = select(&store, id, Some(&model), &backend(), &facts()).await;
    assert_eq!(
        (resumed.source, resumed.tier, resumed.thinking),
        (Source::Classifier, Some(Tier::Sonnet), Some(2_000))
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn certain_rules_decide_without_a_classifier_call() {
    let server = MockLlm::start(vec![]).await;
    let model = client(&server);
    let store = Store::in_memory().unwrap();
    let id = task(&store);
    let writer = AgentSpec {
        title: "Technical Writer".into(),
        ..backend()
    };
    let docs = Facts {
        description: "Fix the typos in the README's install section.".into(),
        check_kind: "file".into(),
        check: "README.md matches ## Install".into(),
        agent_title: "Technical Writer".into(),
        ..facts()
    };
    let s = select(&store, id, Some(&model), &writer, &docs).await;
    assert_eq!(
        (s.source, s.tier, s.thinking),
        (Source::Rule, Some(Tier::Haiku), None)
    );
    assert!(server.requests().is_empty(), "the classifier was asked");
    assert_eq!(store.spent_on_goal("add-health").unwrap(), 0.0);
    // Recorded as decided by the rules.
    let selections = audited(&store, "select");
    assert_eq!(selections.len(), 1);
    assert_eq!(selections[0]["source"], json!("rule"));
    assert!(
        selections[0]["reason"]
            .as_str()
            .unwrap()
            .contains("the rules are certain"),
        "{}",
        selections[0]
    );
}

#[tokio::test]
async fn a_retry_starts_from_the_tier_that_failed_without_asking_again() {
    let server = MockLlm::start(vec![Reply::sse(text_stream(
        "c1",
        "{\"tier\": \"sonnet\", \"thinking\": 2000, \"reason\": \"a handler and a test\"}",
        "end_turn",
    ))])
    .await;
    let model = client(&server);
    let store = Store::in_memory().unwrap();
    let id = task(&store);
    let first = select(&store, id, Some(&model), &backend(), &facts()).await;
    assert_eq!(
        (first.source, first.tier, first.thinking),
        (Source::Classifier, Some(Tier::Sonnet), Some(2_000))
    );

    // The check still fails: one tier up from sonnet, thinking doubled, no second call.
    store.clear_actions(id).unwrap();
    let fell_short = Facts {
        attempt: 1,
        last_error: Some("the check still fails after backend's work: exit 1".into()),
        ..facts()
    };
    let second = select(&store, id, Some(&model), &backend(), &fell_short).await;
    assert_eq!(
        (
            second.source,
            second.tier,
            second.model_id.as_str(),
            second.thinking
        ),
        (
            Source::Rule,
            Some(Tier::Opus),
            "claude-opus-4-5",
            Some(4_000)
        )
    );
    assert!(
        second.reason.contains("fell short on sonnet"),
        "{}",
        second.reason
    );

    // The same attempt selected again (its journal lost): what it had, not a new step up.
    store.clear_actions(id).unwrap();
    let again = select(&store, id, Some(&model), &backend(), &fell_short).await;
    assert_eq!(again, second);

    // A conflict with what others delivered is not the work's fault: the same tier again.
    store.clear_actions(id).unwrap();
    let conflict = Facts {
        attempt: 2,
        last_error: Some(
            "the work conflicts with main as it is now, and the goal is not met there".into(),
        ),
        ..facts()
    };
    let third = select(&store, id, Some(&model), &backend(), &conflict).await;
    assert_eq!(
        (third.tier, third.thinking),
        (Some(Tier::Opus), Some(4_000))
    );
    assert_eq!(server.requests().len(), 1, "the classifier was asked again");
}
