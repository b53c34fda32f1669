//! The kinds of the event log's lines, as one typed enum. The store appends every event
//! under one of these; `proto logs`, the progress line, the HTTP API and its Server-Sent
//! Events, the dashboard and the metrics' labels all read the same type back, so no module
//! compares event kinds as strings. Each kind's name (its serde form, and the `kind` column
//! of the events table) is the dotted string the store has always written, so stored rows
//! and `proto logs -o json` read the same as before.

use serde::{Deserialize, Serialize};

/// What one line of the event log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A task was created (or found already queued) for an unmet goal.
    #[serde(rename = "task.queued")]
    TaskQueued,
    /// The store's half of a start: the attempt is open.
    #[serde(rename = "task.started")]
    TaskStarted,
    #[serde(rename = "task.succeeded")]
    TaskSucceeded,
    /// A failed attempt with attempts left: queued again for `retryAt`.
    #[serde(rename = "task.retrying")]
    TaskRetrying,
    /// A failed attempt with none left.
    #[serde(rename = "task.failed")]
    TaskFailed,
    #[serde(rename = "task.interrupted")]
    TaskInterrupted,
    #[serde(rename = "task.cancelled")]
    TaskCancelled,
    #[serde(rename = "task.stalled")]
    TaskStalled,
    /// `proto retry`: a fresh attempt budget.
    #[serde(rename = "task.retried")]
    TaskRetried,
    #[serde(rename = "task.waitingApproval")]
    TaskWaitingApproval,
    #[serde(rename = "task.overBudget")]
    TaskOverBudget,
    /// An attempt stopped by a provider outage: queued again, the attempt not counted.
    #[serde(rename = "task.providerUnavailable")]
    TaskProviderUnavailable,
    /// A commit refused because it would add secrets (appended by `act()`; its data names
    /// the files, lines and rules, never the secrets).
    #[serde(rename = "secret.blocked")]
    SecretBlocked,
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.approved")]
    ApprovalApproved,
    #[serde(rename = "approval.denied")]
    ApprovalDenied,
    /// An approving commit made by someone who may not approve.
    #[serde(rename = "approval.refused")]
    ApprovalRefused,
    /// The kill switch was thrown.
    #[serde(rename = "control.stopped")]
    ControlStopped,
    #[serde(rename = "control.resumed")]
    ControlResumed,
    /// A model answered one turn ([`super::activity::Activity::Model`]).
    #[serde(rename = "agent.model")]
    AgentModel,
    /// A tool call went through `act()` ([`super::activity::Activity::Tool`]).
    #[serde(rename = "agent.tool")]
    AgentTool,
    /// The engine's side of a start: which computer took the task.
    #[serde(rename = "TaskStarted")]
    Dispatched,
    /// The engine's side of an attempt's end, with its outcome.
    #[serde(rename = "TaskFinished")]
    AttemptFinished,
    /// An attempt lost its computer (its connection failed, or its heartbeat stopped): the
    /// task is interrupted and moves, its data naming the computer and the reason.
    #[serde(rename = "ComputerLost")]
    ComputerLost,
    /// A new company revision was loaded, valid, and now runs.
    #[serde(rename = "RevisionApplied")]
    RevisionApplied,
    /// A new company revision is invalid; the last good one keeps running.
    #[serde(rename = "RevisionFailed")]
    RevisionFailed,
}

impl EventKind {
    /// Every kind, in declaration order (for metrics and the dashboard's filters).
    pub const ALL: [EventKind; 26] = [
        EventKind::TaskQueued,
        EventKind::TaskStarted,
        EventKind::TaskSucceeded,
        EventKind::TaskRetrying,
        EventKind::TaskFailed,
        EventKind::TaskInterrupted,
        EventKind::TaskCancelled,
        EventKind::TaskStalled,
        EventKind::TaskRetried,
        EventKind::TaskWaitingApproval,
        EventKind::TaskOverBudget,
        EventKind::TaskProviderUnavailable,
        EventKind::SecretBlocked,
        EventKind::ApprovalRequested,
        EventKind::ApprovalApproved,
        EventKind::ApprovalDenied,
        EventKind::ApprovalRefused,
        EventKind::ControlStopped,
        EventKind::ControlResumed,
        EventKind::AgentModel,
        EventKind::AgentTool,
        EventKind::Dispatched,
        EventKind::AttemptFinished,
        EventKind::ComputerLost,
        EventKind::RevisionApplied,
        EventKind::RevisionFailed,
    ];

    /// The stored name (the `kind` column, and the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskQueued => "task.queued",
            EventKind::TaskStarted => "task.started",
            EventKind::TaskSucceeded => "task.succeeded",
            EventKind::TaskRetrying => "task.retrying",
            EventKind::TaskFailed => "task.failed",
            EventKind::TaskInterrupted => "task.interrupted",
            EventKind::TaskCancelled => "task.cancelled",
            EventKind::TaskStalled => "task.stalled",
            EventKind::TaskRetried => "task.retried",
            EventKind::TaskWaitingApproval => "task.waitingApproval",
            EventKind::TaskOverBudget => "task.overBudget",
            EventKind::TaskProviderUnavailable => "task.providerUnavailable",
            EventKind::SecretBlocked => "secret.blocked",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::ApprovalApproved => "approval.approved",
            EventKind::ApprovalDenied => "approval.denied",
            EventKind::ApprovalRefused => "approval.refused",
            EventKind::ControlStopped => "control.stopped",
            EventKind::ControlResumed => "control.resumed",
            EventKind::AgentModel => "agent.model",
            EventKind::AgentTool => "agent.tool",
            EventKind::Dispatched => "TaskStarted",
            EventKind::AttemptFinished => "TaskFinished",
            EventKind::ComputerLost => "ComputerLost",
            EventKind::RevisionApplied => "RevisionApplied",
            EventKind::RevisionFailed => "RevisionFailed",
        }
    }

    /// The kind stored under `name`, if this build knows it.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn serde_names_are_the_stored_names() {
        for kind in EventKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::from(kind.as_str()));
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), kind);
        }
        assert_eq!(EventKind::parse("no.such"), None);
    }
}
