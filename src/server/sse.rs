//! Live events: the store's event log, tailed by id. One task ([`Tail`]) follows the log
//! and announces the newest id; each Server-Sent Events client reads the log itself from
//! its own cursor, so none misses an event however slow it is, and a client that
//! reconnects with `Last-Event-ID` (or `?after=`) resumes exactly after the last one it
//! saw. The same tail feeds the metrics and what each agent is doing now; there is no
//! second path for events besides the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::App;
use super::metrics::Metrics;
use crate::store::activity::Activity;
use crate::store::{Event, Store, StoreError};

/// How often the tail looks for new events.
const TAIL_EVERY: Duration = Duration::from_millis(100);
/// Events read from the store at a time.
const BATCH: usize = 500;

/// What an agent is doing now, from its latest activity.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Doing {
    pub at: DateTime<Utc>,
    pub goal: Option<String>,
    pub task: Option<i64>,
    pub line: String,
}

type DoingMap = Arc<Mutex<HashMap<String, Doing>>>;

/// The one follower of the event log.
pub struct Tail {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    newest: watch::Sender<i64>,
    doing: DoingMap,
    after: i64,
}

impl Tail {
    /// Starts at the log's current end: metrics count what happens from now on.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<(Tail, watch::Receiver<i64>, DoingMap), StoreError> {
        let after = store.last_event_id()?;
        let (newest, receiver) = watch::channel(after);
        let doing = DoingMap::default();
        Ok((
            Tail {
                store,
                metrics,
                newest,
                doing: doing.clone(),
                after,
            },
            receiver,
            doing,
        ))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let Tail {
            store,
            metrics,
            newest,
            doing,
            mut after,
        } = self;
        loop {
            // The read and what each event counts for (a dispatch's latency reads its task)
            // run off the async threads.
            let (store, metrics, doing) = (store.clone(), metrics.clone(), doing.clone());
            let from = after;
            let batch = tokio::task::spawn_blocking(move || {
                let events = store.events(from, BATCH)?;
                for event in &events {
                    take(event, &store, &metrics, &doing);
                }
                Ok::<_, StoreError>((events.last().map(|e| e.id), events.len()))
            })
            .await;
            match batch {
                Ok(Ok((Some(last), read))) => {
                    after = last;
                    newest.send_replace(after);
                    if read == BATCH {
                        continue;
                    }
                }
                Ok(Ok((None, _))) => {}
                Ok(Err(e)) => tracing::warn!("the event stream cannot read the store: {e}"),
                Err(e) => tracing::warn!("the event stream's reader failed: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TAIL_EVERY) => {}
            }
        }
    }
}

/// What one new event of the log counts for: the metrics, and what its agent is doing.
fn take(event: &Event, store: &Store, metrics: &Metrics, doing: &DoingMap) {
    metrics.observe_event(event, store);
    if let Some(activity) = Activity::from_event(event) {
        let agent = match &activity {
            Activity::Model { agent, .. } | Activity::Tool { agent, .. } => agent.clone(),
        };
        let now = Doing {
            at: event.time,
            goal: event.goal.clone(),
            task: event.task,
            line: activity.line(),
        };
        doing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(agent, now);
    }
}

/// `?after=ID` (what a `Last-Event-ID` header says too) and `?goal=NAME`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    pub after: Option<i64>,
    pub goal: Option<String>,
}

/// `GET /api/v1/events/stream` (and `/api/v1/events?watch=true`): every event after the
/// cursor, then each new one as the store records it. Each SSE event's `id` is the store's
/// event id, its `event` the kind (`task.started`, `agent.tool`, ...), its data the event
/// as JSON.
pub async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resume.or(query.after).unwrap_or(0);
    events_after(app, after, query.goal)
}

pub(crate) fn events_after(
    app: Arc<App>,
    after: i64,
    goal: Option<String>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<SseEvent>(BATCH);
    tokio::spawn(follow(app, after, goal, sender));
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Feeds one client until it goes away or the server stops.
async fn follow(
    app: Arc<App>,
    mut after: i64,
    goal: Option<String>,
    sender: tokio::sync::mpsc::Sender<SseEvent>,
) {
    let mut newest = app.newest_event.clone();
    loop {
        let store = app.store.clone();
        let from = after;
        let batch = match tokio::task::spawn_blocking(move || store.events(from, BATCH)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!("an event stream cannot read the store: {e}");
                return;
            }
            Err(_) => return,
        };
        let full = batch.len() == BATCH;
        for event in batch {
            after = event.id;
            if goal.is_some() && event.goal != goal {
                continue;
            }
            let Ok(data) = serde_json::to_string(&event) else {
                continue;
            };
            let message = SseEvent::default()
                .id(event.id.to_string())
                .event(event.kind.as_str())
                .data(data);
            if sender.send(message).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        // Wait until the tail has seen something newer than this client's cursor.
        loop {
            if *newest.borrow_and_update() > after {
                break;
            }
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = sender.closed() => return,
                changed = newest.changed() => if changed.is_err() { return },
            }
        }
    }
}
