//! The event types a subscription may name and the body every delivery
//! carries (`{"type", "timestamp", "data"}`, as Standard Webhooks suggests).

use serde_json::{json, Value};

/// An event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    RunCompleted,
    RunFailed,
    RunCancelled,
    ApprovalRequested,
    ApprovalResolved,
    AgentCreated,
    AgentUpdated,
    AgentDeleted,
}

impl WebhookEvent {
    /// Every event type, in the documented order.
    pub const ALL: [Self; 8] = [
        Self::RunCompleted,
        Self::RunFailed,
        Self::RunCancelled,
        Self::ApprovalRequested,
        Self::ApprovalResolved,
        Self::AgentCreated,
        Self::AgentUpdated,
        Self::AgentDeleted,
    ];

    /// The name on the wire, e.g. `run.completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunCompleted => "run.completed",
            Self::RunFailed => "run.failed",
            Self::RunCancelled => "run.cancelled",
            Self::ApprovalRequested => "approval.requested",
            Self::ApprovalResolved => "approval.resolved",
            Self::AgentCreated => "agent.created",
            Self::AgentUpdated => "agent.updated",
            Self::AgentDeleted => "agent.deleted",
        }
    }

    /// The event called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event a run that ended with `status` emits (none while running).
    pub fn run_ended(status: crate::domain::RunStatus) -> Option<Self> {
        use crate::domain::RunStatus::*;
        match status {
            Completed => Some(Self::RunCompleted),
            Failed => Some(Self::RunFailed),
            Cancelled => Some(Self::RunCancelled),
            Running | WaitingApproval => None,
        }
    }
}

/// The `data` of a `run.*` event: the run's ids, status and how it ended.
pub fn run_data(run: &crate::store::Run) -> Value {
    json!({
        "run_id": run.id,
        "agent_id": run.agent_id,
        "session_id": run.session_id,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "error": run.error,
        "error_code": run.error_code,
    })
}

/// The JSON body of a delivery.
pub fn payload(event: WebhookEvent, timestamp: &str, data: Value) -> Value {
    json!({"type": event.as_str(), "timestamp": timestamp, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(WebhookEvent::parse("run.started"), None);
        assert_eq!(WebhookEvent::parse("Run.Completed"), None);
    }
}
