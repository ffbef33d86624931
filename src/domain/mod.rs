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
pub use kinds::{FunctionStatus, LogLevel, MessageType, StopReason};
pub use status::{AgentStatus, RunStatus};
pub use values::{Seq, Timestamp};
pub use wire::UnknownValue;
