//! [`Refusal`]: a client's request the socket refused, as its `error`
//! frame will say it, from whichever layer refused it (the runtime, the
//! edge's run-start check, a feed, a missing scope).

use crate::{
    agent::RunError, domain::ErrorCode, edge::RunRefusal, keys::MissingScope,
    stream::feed::OpenError,
};

/// A request of the client's refused: what its `error` frame says.
pub(super) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds before a retry may succeed, when known (`retry_after`).
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
}

impl From<RunError> for Refusal {
    fn from(e: RunError) -> Self {
        Self::new(e.code(), e.client_message())
    }
}

impl From<RunRefusal> for Refusal {
    fn from(e: RunRefusal) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

impl From<OpenError> for Refusal {
    fn from(e: OpenError) -> Self {
        Self::new(e.code(), e.client_message())
    }
}

impl From<MissingScope> for Refusal {
    fn from(e: MissingScope) -> Self {
        Self::new(e.code(), e.to_string())
    }
}
