//! Status of every kind, following Kubernetes API conventions: a list of conditions
//! (`Ready`, `Reconciling`, `Stalled`), the generation and git revision they were observed at.
//!
//! Status is always rewritten whole from what was observed, never patched piecemeal, so it
//! cannot drift from the observations it summarises.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition types Proto sets.
pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// One observed condition, as in `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why, e.g. `CheckPassed`, `NoModel`, `AttemptsExhausted`.
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status shared by `Company`, `Product`, `Computer` and `Agent`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The git revision (commit id) the status was observed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_revision: Option<String>,
}

/// Status of a `Goal`: the shared fields plus the last check and attempt count.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoalStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_revision: Option<String>,
    /// RFC 3339 time the check last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<String>,
    /// Whether the last check passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_passed: Option<bool>,
    /// Attempts made at the current revision of the goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}
