//! Lifecycle states of runs and agents. The store keeps them as the same
//! text they travel as (`running`, `completed`, …), so rows written before
//! these types existed read back unchanged.

use super::{kinds::StopReason, wire::wire_enum};

wire_enum! {
    /// Where a run is in its life (`GET /v1/runs/{id}`'s `status`).
    pub enum RunStatus("run status") {
        /// Started and not yet ended.
        Running = "running",
        /// Ended with `end_turn` or `max_steps`.
        Completed = "completed",
        /// Ended by a cancel (`stop_reason: cancelled`).
        Cancelled = "cancelled",
        /// Ended by an error (`stop_reason: error`).
        Failed = "failed",
        /// Paused on a tool call that needs a person's approval
        /// (`approval_request`): parked in the store, holding no worker and
        /// no `max_runs` slot, until it is decided or expires.
        WaitingApproval = "waiting_approval",
    }
}

impl RunStatus {
    /// The status a run that stopped for `reason` ends in.
    pub fn ended_by(reason: StopReason) -> Self {
        match reason {
            StopReason::EndTurn | StopReason::MaxSteps => Self::Completed,
            StopReason::Cancelled => Self::Cancelled,
            StopReason::Error => Self::Failed,
        }
    }

    /// Whether the run has ended.
    pub fn is_over(self) -> bool {
        !matches!(self, Self::Running | Self::WaitingApproval)
    }
}

wire_enum! {
    /// Whether an agent accepts messages.
    pub enum AgentStatus("agent status") {
        Running = "running",
        /// Messages to it are refused (`agent_stopped`).
        Stopped = "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wire::assert_round_trips;

    #[test]
    fn every_value_round_trips_with_the_stored_text() {
        assert_round_trips(RunStatus::ALL);
        assert_round_trips(AgentStatus::ALL);
        let stored: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            stored,
            [
                "running",
                "completed",
                "cancelled",
                "failed",
                "waiting_approval"
            ]
        );
        assert_eq!(AgentStatus::Stopped.as_str(), "stopped");
    }

    #[test]
    fn stop_reasons_end_in_their_status() {
        use StopReason::*;
        let ended: Vec<RunStatus> = [EndTurn, MaxSteps, Cancelled, Error]
            .into_iter()
            .map(RunStatus::ended_by)
            .collect();
        assert_eq!(
            ended,
            [
                RunStatus::Completed,
                RunStatus::Completed,
                RunStatus::Cancelled,
                RunStatus::Failed
            ]
        );
        assert!(!RunStatus::Running.is_over() && RunStatus::Failed.is_over());
    }
}
