//! The finalizer on Goals: a Goal is not gone from the API until its work is. The
//! controller adds `proto.dev/cancel-work` to every Goal it sees; a Goal being deleted is
//! left out of the declaration (see [`super::source`]), so the engine cancels its task as it
//! does for a goal removed from git (`plan`'s Cancel); once the running revision and the
//! status both show it gone, the finalizer is removed and the API server deletes it.

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::source::KubeSource;
use crate::engine::AppliedRevision;
use crate::engine::records::StatusReport;
use crate::spec::kinds::Goal;

/// The finalizer's name, in the API group's domain.
pub const FINALIZER: &str = "proto.dev/cancel-work";

/// Adds the finalizer where it is missing, and removes it from Goals being deleted whose
/// work the engine has cancelled: not in the running revision, not in the status.
pub async fn reconcile(
    client: &Client,
    source: &KubeSource,
    applied: Option<&AppliedRevision>,
    report: &StatusReport,
) {
    let api: Api<Goal> = Api::namespaced(client.clone(), source.namespace());
    for goal in source.stores().goals.state() {
        let meta = &goal.metadata;
        let Some(name) = meta.name.as_deref() else {
            continue;
        };
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        let has = finalizers.iter().any(|f| f == FINALIZER);
        let wanted = if meta.deletion_timestamp.is_none() {
            if has {
                continue;
            }
            let mut with = finalizers.clone();
            with.push(FINALIZER.to_string());
            with
        } else {
            let running = applied.is_none_or(|a| a.spec.goal(name).is_some());
            if !has || running || report.goal(name).is_some() {
                continue;
            }
            finalizers.into_iter().filter(|f| f != FINALIZER).collect()
        };
        // Guarded by the resourceVersion seen: a concurrent change is not overwritten; the
        // next pass sees it and tries again.
        let patch = json!({
            "metadata": {
                "finalizers": wanted,
                "resourceVersion": meta.resource_version,
            }
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                if meta.deletion_timestamp.is_some() {
                    tracing::info!(goal = %name, "its work is cancelled; the Goal may go");
                }
            }
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => {}
            Err(e) => tracing::warn!(goal = %name, "cannot update the finalizer: {e}"),
        }
    }
}
