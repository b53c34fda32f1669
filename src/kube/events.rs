//! Kubernetes Events (`events.k8s.io/v1`, through `kube::runtime::events::Recorder`) for
//! the task transitions the store records, regarding the task's Goal: what `kubectl
//! describe goal` and `kubectl get events` show. The store's event log is the one record
//! of what happened; this only forwards its task and approval entries, from where it
//! stood when the controller started leading.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use super::source::KubeSource;
use crate::spec::kinds::API_VERSION;
use crate::store::{EventKind, Store, StoreError};

/// The name Events give as their reporting controller.
pub const CONTROLLER: &str = "proto-controller";

/// A note is at most 1 kB.
const MAX_NOTE: usize = 1000;

/// How many store events one call forwards at most.
const BATCH: usize = 500;

pub struct Events {
    recorder: Recorder,
    store: Arc<Store>,
    source: Arc<KubeSource>,
    /// The last store event forwarded (or skipped).
    after: i64,
}

impl Events {
    /// Forwards what the store records from now on.
    pub fn new(
        client: Client,
        instance: &str,
        store: Arc<Store>,
        source: Arc<KubeSource>,
    ) -> Result<Events, StoreError> {
        let after = store.last_event_id()?;
        let reporter = Reporter {
            controller: CONTROLLER.into(),
            instance: Some(instance.to_string()),
        };
        Ok(Events {
            recorder: Recorder::new(client, reporter),
            store,
            source,
            after,
        })
    }

    /// Publishes the store's new task events.
    pub async fn forward(&mut self) {
        let events = match self.store.events(self.after, BATCH) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("cannot read the event log: {e}");
                return;
            }
        };
        for event in events {
            self.after = event.id;
            let (Some(goal), Some((type_, reason))) = (&event.goal, published(event.kind)) else {
                continue;
            };
            let note = note(&event.data);
            let published = Event {
                type_,
                reason: reason.to_string(),
                note: (!note.is_empty()).then_some(note),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = self
                .recorder
                .publish(&published, &self.regarding(goal))
                .await
            {
                tracing::warn!(goal = %goal, "cannot publish an Event: {e}");
            }
        }
    }

    fn regarding(&self, goal: &str) -> ObjectReference {
        let namespace = self.source.namespace();
        let uid = self
            .source
            .stores()
            .goals
            .get(&ObjectRef::new(goal).within(namespace))
            .and_then(|g| g.metadata.uid.clone());
        ObjectReference {
            api_version: Some(API_VERSION.into()),
            kind: Some("Goal".into()),
            name: Some(goal.to_string()),
            namespace: Some(namespace.to_string()),
            uid,
            ..ObjectReference::default()
        }
    }
}

/// Which store events become Kubernetes Events, with their type and reason.
fn published(kind: EventKind) -> Option<(EventType, &'static str)> {
    use EventType::{Normal, Warning};
    Some(match kind {
        EventKind::TaskQueued => (Normal, "TaskQueued"),
        EventKind::TaskStarted => (Normal, "TaskStarted"),
        EventKind::TaskSucceeded => (Normal, "TaskSucceeded"),
        EventKind::TaskRetrying => (Warning, "TaskRetrying"),
        EventKind::TaskFailed => (Warning, "TaskFailed"),
        EventKind::TaskInterrupted => (Normal, "TaskInterrupted"),
        EventKind::TaskCancelled => (Normal, "TaskCancelled"),
        EventKind::TaskStalled => (Warning, "TaskStalled"),
        EventKind::TaskRetried => (Normal, "TaskRetried"),
        EventKind::TaskWaitingApproval => (Normal, "TaskWaitingApproval"),
        EventKind::TaskOverBudget => (Warning, "TaskOverBudget"),
        EventKind::TaskProviderUnavailable => (Warning, "TaskProviderUnavailable"),
        EventKind::SecretBlocked => (Warning, "SecretBlocked"),
        EventKind::ApprovalRequested => (Normal, "ApprovalRequested"),
        EventKind::ApprovalApproved => (Normal, "ApprovalApproved"),
        EventKind::ApprovalDenied => (Warning, "ApprovalDenied"),
        EventKind::ComputerLost => (Warning, "ComputerLost"),
        _ => return None,
    })
}

/// The event's data as a short note.
fn note(data: &serde_json::Value) -> String {
    let text = match data {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut end = text.len().min(MAX_NOTE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
