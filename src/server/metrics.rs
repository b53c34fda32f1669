//! Prometheus metrics at `/metrics` (OpenMetrics text, from `prometheus-client`). Counters
//! and histograms are fed as things happen: reconcile passes by the engine's pass observer,
//! model calls, tool calls and dispatches by the event tail ([`super::sse::Tail`]), webhook
//! deliveries by the hooks. Gauges of state (goals, tasks, approvals waiting, computer
//! health) are read from the store at each scrape, so they are never stale. Label values
//! come from typed enums wherever the set is closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::App;
use super::hooks::{Delivery, Forge};
use crate::engine::records::StatusReport;
use crate::plan::TaskState;
use crate::store::activity::Activity;
use crate::store::{Event, EventKind, Store};

impl EncodeLabelValue for TaskState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&crate::store::state_name(*self), encoder)
    }
}

impl EncodeLabelValue for EventKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The `Ready` condition's status of a goal.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

impl Readiness {
    fn of(status: &str) -> Readiness {
        match status {
            "True" => Readiness::True,
            "False" => Readiness::False,
            _ => Readiness::Unknown,
        }
    }
}

/// How a tool call through `act()` ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ToolDecision {
    /// Allowed and done.
    Done,
    /// Refused by the policy, or failed.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GoalLabels {
    ready: Readiness,
    /// The `Ready` condition's reason (`CheckPassed`, `NoModel`, ...): an open set.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    state: TaskState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    agent: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Direction {
    Input,
    Output,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    agent: String,
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    decision: ToolDecision,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComputerLabels {
    computer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    forge: Forge,
    result: Delivery,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: EventKind,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    reconcile: Histogram,
    dispatch: Histogram,
    goals: Family<GoalLabels, Gauge>,
    tasks: Family<TaskLabels, Gauge>,
    tokens: Family<TokenLabels, Counter>,
    usd: Family<ModelLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    tools: Family<ToolLabels, Counter>,
    approvals: Gauge,
    computers: Family<ComputerLabels, Gauge>,
    hooks: Family<HookLabels, Counter>,
    events: Family<EventLabels, Counter>,
    /// One scrape at a time rebuilds the gauges of state.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("proto");
        // 1 ms to ~65 s.
        let reconcile = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let dispatch = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let metrics = Metrics {
            reconcile,
            dispatch,
            goals: Family::default(),
            tasks: Family::default(),
            tokens: Family::default(),
            usd: Family::default(),
            tools: Family::default(),
            approvals: Gauge::default(),
            computers: Family::default(),
            hooks: Family::default(),
            events: Family::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile pass took",
            metrics.reconcile.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "Time from a task being due to its start on a computer",
            metrics.dispatch.clone(),
        );
        registry.register(
            "goals",
            "Goals by their Ready condition",
            metrics.goals.clone(),
        );
        registry.register("tasks", "Tasks by state", metrics.tasks.clone());
        registry.register(
            "model_tokens",
            "Model tokens by model, agent and direction",
            metrics.tokens.clone(),
        );
        registry.register(
            "model_usd",
            "Model spend in US dollars by model and agent",
            metrics.usd.clone(),
        );
        registry.register(
            "tool_calls",
            "Tool calls through act() by tool and decision",
            metrics.tools.clone(),
        );
        registry.register(
            "approvals_waiting",
            "Approval requests waiting for an answer",
            metrics.approvals.clone(),
        );
        registry.register(
            "computer_healthy",
            "1 when the computer answered its last health check",
            metrics.computers.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by forge and result",
            metrics.hooks.clone(),
        );
        registry.register(
            "events",
            "Events recorded in the store by kind",
            metrics.events.clone(),
        );
        // Every delivery result of every forge, at 0 until it happens: a rate over a series
        // that appears only with its first delivery would miss that one.
        for forge in [Forge::Github, Forge::Gitea, Forge::Gitlab] {
            for result in [
                Delivery::Refreshed,
                Delivery::Ignored,
                Delivery::Unauthorized,
                Delivery::Malformed,
            ] {
                let _ = metrics.hooks.get_or_create(&HookLabels { forge, result });
            }
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// One reconcile pass took `took`.
    pub fn observe_pass(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    /// A webhook delivery was answered.
    pub fn observe_delivery(&self, forge: Forge, result: Delivery) {
        self.hooks
            .get_or_create(&HookLabels { forge, result })
            .inc();
    }

    /// What a new event of the log counts for.
    pub fn observe_event(&self, event: &Event, store: &Store) {
        self.events
            .get_or_create(&EventLabels { kind: event.kind })
            .inc();
        match Activity::from_event(event) {
            Some(Activity::Model {
                agent,
                model,
                input_tokens,
                output_tokens,
                usd,
                ..
            }) => {
                for (direction, count) in [
                    (Direction::Input, input_tokens),
                    (Direction::Output, output_tokens),
                ] {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            model: model.clone(),
                            agent: agent.clone(),
                            direction,
                        })
                        .inc_by(count);
                }
                self.usd
                    .get_or_create(&ModelLabels { model, agent })
                    .inc_by(usd);
            }
            Some(Activity::Tool { call, ok, .. }) => {
                // `Write(hello.txt)`: the tool is the name before the argument.
                let tool = call.split('(').next().unwrap_or(&call).to_string();
                let decision = if ok {
                    ToolDecision::Done
                } else {
                    ToolDecision::Failed
                };
                self.tools
                    .get_or_create(&ToolLabels { tool, decision })
                    .inc();
            }
            None if event.kind == EventKind::TaskStarted => {
                if let Some(task) = event.task.and_then(|id| store.task(id).ok()) {
                    let due = task.not_before.max(task.created_at);
                    let waited = (event.time - due).to_std().unwrap_or_default();
                    self.dispatch.observe(waited.as_secs_f64());
                }
            }
            None => {}
        }
    }

    /// The gauges of state, read from the store now, then everything as text.
    fn render(&self, store: &Store) -> Result<String, String> {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = store
            .status()
            .map_err(|e| e.to_string())?
            .and_then(|text| serde_json::from_str::<StatusReport>(&text).ok())
            .unwrap_or_default();
        self.goals.clear();
        for goal in &status.goals {
            self.goals
                .get_or_create(&GoalLabels {
                    ready: Readiness::of(&goal.ready),
                    reason: goal.reason.clone(),
                })
                .inc();
        }
        self.tasks.clear();
        for (state, count) in store.task_counts().map_err(|e| e.to_string())? {
            self.tasks.get_or_create(&TaskLabels { state }).set(count);
        }
        let waiting = store.pending_approvals().map_err(|e| e.to_string())?.len();
        self.approvals
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.computers.clear();
        for record in store.computers().map_err(|e| e.to_string())? {
            self.computers
                .get_or_create(&ComputerLabels {
                    computer: record.name,
                })
                .set(i64::from(record.healthy));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| e.to_string())?;
        Ok(text)
    }
}

/// `GET /metrics`.
pub async fn scrape(State(app): State<Arc<App>>) -> Response {
    let store = app.store.clone();
    let metrics = app.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render(&store)).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
