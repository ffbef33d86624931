//! The small vocabularies of an event: its type, why a run stopped, how a
//! tool call went, how severe a log line is.

use super::wire::wire_enum;

wire_enum! {
    /// An event's `message_type` (protocol/events.md, "Types").
    pub enum MessageType("message type") {
        /// A message the user sent to the run (kept as history).
        UserMessage = "user_message",
        /// The agent thinking out loud.
        InternalMonologue = "internal_monologue",
        /// One tool call and its result.
        FunctionMessage = "function_message",
        /// A piece of the reply (`stream_tokens: true`).
        AssistantDelta = "assistant_delta",
        /// The whole reply.
        AssistantMessage = "assistant_message",
        /// Token counts of the run.
        Usage = "usage",
        /// Why the run failed; followed by `done`.
        Error = "error",
        /// The last event of every run.
        Done = "done",
        /// A log line of `logs:<agent id>`.
        Log = "log",
        /// The run waits for a person to approve a tool call.
        ApprovalRequest = "approval_request",
        /// A tool call's approval was decided (or expired).
        ApprovalResponse = "approval_response",
    }
}

wire_enum! {
    /// Why a run ended: `done`'s `stop_reason`, and a run's.
    pub enum StopReason("stop reason") {
        /// The agent answered.
        EndTurn = "end_turn",
        /// The run was cancelled (by a client, or the gateway shut down).
        Cancelled = "cancelled",
        /// The run failed (after an `error` event).
        Error = "error",
        /// The run made `max_steps` model calls without a final answer.
        MaxSteps = "max_steps",
    }
}

wire_enum! {
    /// How a tool call went (`function_message`'s `status`).
    pub enum FunctionStatus("function status") {
        Success = "success",
        Error = "error",
        /// The call needed approval and was denied (or the request expired):
        /// the tool did not run.
        Denied = "denied",
    }
}

wire_enum! {
    /// How a tool call's approval was decided (`approval_response`'s `decision`).
    pub enum ApprovalDecision("approval decision") {
        /// The tool runs.
        Approve = "approve",
        /// The tool does not run (`function_message` status `denied`).
        Deny = "deny",
        /// Nobody decided in time: as `deny`.
        Expired = "expired",
    }
}

wire_enum! {
    /// The severity of a log line.
    pub enum LogLevel("log level") {
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

impl FunctionStatus {
    /// `Success` when the call went well.
    pub fn of(ok: bool) -> Self {
        match ok {
            true => Self::Success,
            false => Self::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wire::assert_round_trips;

    #[test]
    fn every_value_round_trips() {
        assert_round_trips(MessageType::ALL);
        assert_round_trips(StopReason::ALL);
        assert_round_trips(FunctionStatus::ALL);
        assert_round_trips(LogLevel::ALL);
        assert_eq!(MessageType::ALL.len(), 11);
        assert_round_trips(ApprovalDecision::ALL);
        assert_eq!(MessageType::AssistantDelta.as_str(), "assistant_delta");
        assert_eq!(StopReason::MaxSteps.to_string(), "max_steps");
        let e = "nope".parse::<LogLevel>().unwrap_err();
        assert_eq!(e.to_string(), "unknown log level `nope`");
    }
}
