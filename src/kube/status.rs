//! Status written back on every resource's `status` subresource, by server-side apply
//! (field manager `proto`), whole each time from what was seen, and only when it changed:
//! a Goal's conditions are the engine's own ([`crate::engine::records::GoalStatus`]); the
//! other kinds are `Ready` when their revision runs; a resource the loader refused is
//! `Ready=False` (and `Stalled`) with the loader's located messages.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};

use super::declared::{Declared, Key};
use super::source::{KubeSource, Snapshot};
use crate::engine::records::StatusReport;
use crate::spec::kinds::{API_VERSION, Agent, Company, Computer, Goal, Product};
use crate::spec::schema::Kind;
use crate::spec::status::{Condition, GoalStatus, READY, RECONCILING, ResourceStatus, STALLED};

/// The field manager of everything the controller applies.
pub const FIELD_MANAGER: &str = "proto";

/// Why a resource other than a Goal is (or is not) ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Its revision is the one that runs.
    Applied,
    /// The loader refused it; the message says where and why.
    Invalid,
    /// The company is suspended (`spec.suspend`, or deleted).
    Suspended,
    /// A person stopped everything (`proto stop`).
    Stopped,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Applied => "Applied",
            Reason::Invalid => "Invalid",
            Reason::Suspended => "Suspended",
            Reason::Stopped => "Stopped",
        }
    }
}

/// Writes statuses; remembers what it wrote, so an unchanged status is not written again.
pub struct StatusWriter {
    client: Client,
    source: Arc<KubeSource>,
    written: HashMap<Key, Value>,
}

impl StatusWriter {
    pub fn new(client: Client, source: Arc<KubeSource>) -> StatusWriter {
        StatusWriter {
            client,
            source,
            written: HashMap::new(),
        }
    }

    /// Brings every resource's status up to date with `report` and the newest revision.
    pub async fn write(&mut self, report: &StatusReport) {
        let Some(latest) = self.source.latest() else {
            return;
        };
        let applied = report
            .last_applied_revision
            .as_deref()
            .and_then(|r| self.source.snapshot(r));
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        for (key, seen) in &latest.seen {
            // A stand-in (a deleted Company) has no resource to write to; one being
            // deleted is on its way out.
            if seen.uid.is_none() || seen.deleting {
                continue;
            }
            let existing = self.existing(key);
            let desired = desired(
                key,
                &latest,
                applied.as_deref(),
                report,
                existing.as_ref(),
                &now,
            );
            let Some(mut desired) = desired else {
                continue;
            };
            no_empty_messages(&mut desired);
            if self.written.get(key) == Some(&desired) || existing.as_ref() == Some(&desired) {
                self.written.insert(key.clone(), desired);
                continue;
            }
            match self.apply(key, &desired).await {
                Ok(()) => {
                    self.written.insert(key.clone(), desired);
                }
                Err(e) => tracing::warn!(
                    resource = %format!("{}/{}", key.0.as_str(), key.1),
                    "cannot write the status: {e}"
                ),
            }
        }
        self.written.retain(|key, _| latest.seen.contains_key(key));
    }

    /// The status the resource has now, as the reflector last saw it.
    fn existing(&self, key: &Key) -> Option<Value> {
        fn of<K: Declared + HasStatus>(
            store: &Store<K>,
            namespace: &str,
            name: &str,
        ) -> Option<Value> {
            let object = store.get(&ObjectRef::new(name).within(namespace))?;
            object.status_json()
        }
        let stores = self.source.stores();
        let ns = self.source.namespace();
        match key.0 {
            Kind::Company => of(&stores.companies, ns, &key.1),
            Kind::Product => of(&stores.products, ns, &key.1),
            Kind::Computer => of(&stores.computers, ns, &key.1),
            Kind::Agent => of(&stores.agents, ns, &key.1),
            Kind::Goal => of(&stores.goals, ns, &key.1),
        }
    }

    async fn apply(&self, key: &Key, status: &Value) -> Result<(), kube::Error> {
        async fn patch<K: Declared>(
            client: &Client,
            namespace: &str,
            name: &str,
            status: &Value,
        ) -> Result<(), kube::Error> {
            let api: Api<K> = Api::namespaced(client.clone(), namespace);
            let body = json!({
                "apiVersion": API_VERSION,
                "kind": K::kind(&()),
                "status": status,
            });
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch_status(name, &params, &Patch::Apply(&body))
                .await?;
            Ok(())
        }
        let (client, ns, name) = (&self.client, self.source.namespace(), key.1.as_str());
        match key.0 {
            Kind::Company => patch::<Company>(client, ns, name, status).await,
            Kind::Product => patch::<Product>(client, ns, name, status).await,
            Kind::Computer => patch::<Computer>(client, ns, name, status).await,
            Kind::Agent => patch::<Agent>(client, ns, name, status).await,
            Kind::Goal => patch::<Goal>(client, ns, name, status).await,
        }
    }
}

/// A kind's status, as JSON.
trait HasStatus {
    fn status_json(&self) -> Option<Value>;
}

macro_rules! has_status {
    ($($ty:ident),*) => {$(
        impl HasStatus for $ty {
            fn status_json(&self) -> Option<Value> {
                self.status.as_ref().and_then(|s| serde_json::to_value(s).ok())
            }
        }
    )*};
}

has_status!(Company, Product, Computer, Agent, Goal);

/// What the resource's status should be; `None` while there is nothing to say yet (a Goal
/// the engine has not planned).
fn desired(
    key: &Key,
    latest: &Snapshot,
    applied: Option<&Snapshot>,
    report: &StatusReport,
    existing: Option<&Value>,
    now: &str,
) -> Option<Value> {
    let seen = latest.seen.get(key)?;
    // The declaration's digest: the revision itself moves with every status written.
    let revision = Some(applied.unwrap_or(latest).content.clone());
    let condition = |type_: &str, status: bool, reason: Reason, message: String| {
        let status = if status { "True" } else { "False" };
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.as_str().to_string(),
            message,
            last_transition_time: transition(existing, type_, status, now),
            observed_generation: seen.generation,
        }
    };
    if let Some(messages) = latest.invalid.get(key) {
        let message = messages.join("\n");
        let conditions = vec![
            condition(READY, false, Reason::Invalid, message.clone()),
            condition(RECONCILING, false, Reason::Invalid, String::new()),
            condition(STALLED, true, Reason::Invalid, message),
        ];
        return serde_json::to_value(ResourceStatus {
            conditions,
            observed_generation: seen.generation,
            observed_revision: revision,
        })
        .ok();
    }
    // The generation the running revision holds.
    let generation = applied
        .and_then(|a| a.seen.get(key))
        .map_or(seen.generation, |s| s.generation);
    if key.0 == Kind::Goal {
        let goal = report.goal(&key.1)?;
        let conditions = goal
            .conditions
            .iter()
            .map(|c| Condition {
                observed_generation: generation,
                ..c.clone()
            })
            .collect();
        return serde_json::to_value(GoalStatus {
            conditions,
            observed_generation: generation,
            observed_revision: revision,
            last_check_time: goal
                .last_check
                .as_ref()
                .map(|c| c.time.to_rfc3339_opts(SecondsFormat::Secs, true)),
            last_check_passed: goal.last_check.as_ref().map(|c| c.passed),
            attempts: Some(goal.attempts),
        })
        .ok();
    }
    let held = match (&report.stopped, report.suspended) {
        (Some(stop), _) => Some((Reason::Stopped, stop.message())),
        (None, true) => Some((Reason::Suspended, "the company is suspended".to_string())),
        (None, false) => None,
    };
    let (ready, reason, message) = match held {
        Some((reason, message)) if key.0 == Kind::Company => (false, reason, message),
        _ => (true, Reason::Applied, "declared and running".to_string()),
    };
    let conditions = vec![
        condition(READY, ready, reason, message),
        condition(RECONCILING, false, reason, String::new()),
        condition(STALLED, false, reason, String::new()),
    ];
    serde_json::to_value(ResourceStatus {
        conditions,
        observed_generation: generation,
        observed_revision: revision,
    })
    .ok()
}

/// API servers before 1.21 take an empty string applied to a status as null, which the
/// schema refuses: a condition with nothing more to say repeats its reason.
fn no_empty_messages(status: &mut Value) {
    let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for condition in conditions {
        let reason = condition.get("reason").cloned();
        if condition.get("message").and_then(Value::as_str) == Some("")
            && let Some(reason) = reason
        {
            condition["message"] = reason;
        }
    }
}

/// The condition's last transition time: kept while its status stays, `now` when it moves.
fn transition(existing: Option<&Value>, type_: &str, status: &str, now: &str) -> String {
    existing
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|conditions| {
            conditions.iter().find(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some(status)
            })
        })
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .map_or_else(|| now.to_string(), str::to_string)
}
