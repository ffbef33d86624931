//! The domain's vocabulary as types: ids, events, channels, statuses and
//! error codes. A misspelt event kind, run status, channel or error code
//! does not compile, and each value's wire spelling is written once.
//!
//! Nothing here knows about HTTP routing, the bus or the store: those layers
//! use these types, never the other way round.
//!
//! # Layout
//!
//! - [`ids`]: [`AgentId`], [`RunId`], [`SessionId`], [`ToolId`], [`KeyId`], [`EventId`].
//! - [`event`]: [`AgentEvent`] and its [`EventBody`], encoded in sorted key order.
//! - [`kinds`]: [`MessageType`], [`StopReason`], [`FunctionStatus`], [`LogLevel`].
//! - [`channel`]: [`Channel`] (`agent:…`, `logs:…`, `run:…`).
//! - [`status`]: [`RunStatus`], [`AgentStatus`].
//! - [`error_code`]: [`ErrorCode`] and the HTTP status of each.
//! - [`schema`]: hand-written JSON Schema that utoipa's model cannot hold, kept whole.
//! - [`values`]: [`Timestamp`], [`Seq`]: schemas of values kept as plain text or numbers.

/// The version of the wire contract in `protocol/` (its README and
/// CHANGELOG say the same; a test checks): `info.version` of
/// `/v1/openapi.json`. Every change on the wire bumps the minor version.
pub const PROTOCOL_VERSION: &str = "1.3.0";

pub mod channel;
pub mod error_code;
pub mod event;
mod event_schema;
pub mod ids;
pub mod kinds;
pub mod schema;
pub mod status;
pub mod values;
pub(crate) mod wire;

pub use channel::{Channel, ChannelError};
pub use error_code::ErrorCode;
pub use event::{AgentEvent, EventBody, FunctionCall};
pub use event_schema::{ChannelEvent, EventFields, LogLine};
pub use ids::{AgentId, EventId, IdError, KeyId, RunId, SessionId, ToolId};
pub use kinds::{ApprovalDecision, FunctionStatus, LogLevel, MessageType, StopReason};
pub use status::{AgentStatus, RunStatus};
pub use values::{Seq, Timestamp};
pub use wire::UnknownValue;

/// Names of the built-in tools (an agent lists them in `tools` and
/// `approval_required`; the runtime implements them in `agent::tools`).
pub const BUILTIN_TOOLS: &[&str] = &["get_time", "calculator"];

#[cfg(test)]
mod tests {
    /// The contract's README and CHANGELOG name the version the code serves.
    #[test]
    fn protocol_docs_name_the_version_the_code_serves() {
        let v = super::PROTOCOL_VERSION;
        let readme = include_str!("../../protocol/README.md");
        assert!(
            readme.contains(&format!("**Protocol version: `{v}`")),
            "protocol/README.md does not say version {v}"
        );
        let changelog = include_str!("../../protocol/CHANGELOG.md");
        let first = changelog
            .lines()
            .find(|l| l.starts_with("## ") && !l.starts_with("## Unreleased"))
            .expect("a released version in protocol/CHANGELOG.md");
        assert!(
            first.starts_with(&format!("## {v} ")),
            "the newest release in protocol/CHANGELOG.md is `{first}`, the code serves {v}"
        );
    }
}
