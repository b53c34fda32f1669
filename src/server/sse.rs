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

/// Events the tail keeps in memory for the streams, as the tail read them.
const RECENT: usize = 4096;

/// The events the tail read last, each already serialized, so a stream that is caught up
/// (every live client, most of the time) reads them here rather than the store: two
/// hundred clients then cost one store read per batch, not two hundred. A client further
/// behind reads the store, as before; the events here are the store's, read by the tail, so
/// there is still one path for events.
pub struct Recent {
    /// The cursor just before the first event held: a client whose cursor is at or after
    /// it finds every later event here, in order.
    covers_after: i64,
    events: std::collections::VecDeque<Arc<Streamed>>,
}

/// One event as a stream sends it.
pub struct Streamed {
    id: i64,
    kind: &'static str,
    goal: Option<String>,
    json: String,
}

impl Recent {
    fn new(after: i64) -> Recent {
        Recent {
            covers_after: after,
            events: std::collections::VecDeque::new(),
        }
    }

    fn push(&mut self, batch: &[Event]) {
        for event in batch {
            let Ok(json) = serde_json::to_string(event) else {
                continue;
            };
            self.events.push_back(Arc::new(Streamed {
                id: event.id,
                kind: event.kind.as_str(),
                goal: event.goal.clone(),
                json,
            }));
        }
        while self.events.len() > RECENT {
            if let Some(gone) = self.events.pop_front() {
                self.covers_after = gone.id;
            }
        }
    }

    /// The events after `from`, at most `limit`; `None` when some of them are no longer
    /// (or not yet) held here and the store must be read.
    fn after(&self, from: i64, limit: usize) -> Option<Vec<Arc<Streamed>>> {
        if from < self.covers_after {
            return None;
        }
        let start = self.events.partition_point(|e| e.id <= from);
        Some(self.events.range(start..).take(limit).cloned().collect())
    }
}

pub type RecentEvents = Arc<std::sync::RwLock<Recent>>;

/// The one follower of the event log.
pub struct Tail {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    newest: watch::Sender<i64>,
    doing: DoingMap,
    recent: RecentEvents,
    after: i64,
}

impl Tail {
    /// Starts at the log's current end: metrics count what happens from now on.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<(Tail, watch::Receiver<i64>, DoingMap, RecentEvents), StoreError> {
        let after = store.last_event_id()?;
        let (newest, receiver) = watch::channel(after);
        let doing = DoingMap::default();
        let recent = Arc::new(std::sync::RwLock::new(Recent::new(after)));
        Ok((
            Tail {
                store,
                metrics,
                newest,
                doing: doing.clone(),
                recent: recent.clone(),
                after,
            },
            receiver,
            doing,
            recent,
        ))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let Tail {
            store,
            metrics,
            newest,
            doing,
            recent,
            mut after,
        } = self;
        loop {
            // The read and what each event counts for (a dispatch's latency reads its task)
            // run off the async threads.
            let (store, metrics, doing) = (store.clone(), metrics.clone(), doing.clone());
            let from = after;
            let kept = recent.clone();
            let batch = tokio::task::spawn_blocking(move || {
                let events = store.events(from, BATCH)?;
                for event in &events {
                    take(event, &store, &metrics, &doing);
                }
                // Held before the newest id is announced: a client woken by it finds them.
                kept.write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(&events);
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
        let held = app
            .recent
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .after(after, BATCH);
        let batch = match held {
            Some(batch) => batch,
            None => match read_store(&app, after).await {
                Some(batch) => batch,
                None => return,
            },
        };
        let full = batch.len() == BATCH;
        for event in batch {
            after = event.id;
            if goal.is_some() && event.goal != goal {
                continue;
            }
            let message = SseEvent::default()
                .id(event.id.to_string())
                .event(event.kind)
                .data(event.json.as_str());
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

/// The events after `from` from the store, for a client further behind than the tail's
/// memory; `None` when the store cannot be read (the stream ends, and the client resumes).
async fn read_store(app: &App, from: i64) -> Option<Vec<Arc<Streamed>>> {
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.events(from, BATCH)).await {
        Ok(Ok(batch)) => {
            let mut recent = Recent::new(from);
            recent.push(&batch);
            Some(recent.events.into_iter().collect())
        }
        Ok(Err(e)) => {
            tracing::warn!("an event stream cannot read the store: {e}");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    fn event(id: i64) -> Event {
        Event {
            id,
            time: Utc::now(),
            task: None,
            goal: Some(format!("g{id}")),
            kind: EventKind::TaskStarted,
            data: serde_json::Value::Null,
        }
    }

    fn ids(held: Option<Vec<Arc<Streamed>>>) -> Option<Vec<i64>> {
        held.map(|events| events.iter().map(|e| e.id).collect())
    }

    /// A cursor the memory covers gets every later event in order; one before it (events
    /// since dropped, or from before the tail started) must read the store.
    #[test]
    fn recent_events_serve_only_the_cursors_they_cover() {
        let mut recent = Recent::new(10);
        recent.push(&(11..=15).map(event).collect::<Vec<_>>());
        assert_eq!(ids(recent.after(10, 100)), Some(vec![11, 12, 13, 14, 15]));
        assert_eq!(ids(recent.after(13, 100)), Some(vec![14, 15]));
        assert_eq!(ids(recent.after(13, 1)), Some(vec![14]));
        assert_eq!(ids(recent.after(15, 100)), Some(vec![]));
        assert_eq!(ids(recent.after(20, 100)), Some(vec![]));
        assert_eq!(ids(recent.after(9, 100)), None);
        recent.push(&(16..=(15 + RECENT as i64)).map(event).collect::<Vec<_>>());
        // Five were dropped from the front: 15 is now the first cursor covered.
        assert_eq!(ids(recent.after(14, 1)), None);
        assert_eq!(ids(recent.after(15, 1)), Some(vec![16]));
    }
}
