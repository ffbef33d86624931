//! Every error code the gateway sends, in REST envelopes, WebSocket `error`
//! frames, SSE `error` frames, run `error` events and OpenAI-shaped errors
//! (protocol/errors.md lists them). A code is a value of [`ErrorCode`], so a
//! misspelt one does not compile, and the HTTP status that goes with it is
//! written here once ([`ErrorCode::status`]).

use http::StatusCode;

use super::wire::wire_enum;

wire_enum! {
    /// A stable, machine-readable error code.
    pub enum ErrorCode("error code") {
        /// 400: malformed JSON, a wrong field, a bad parameter.
        ValidationError = "validation_error",
        /// 401: no key, or an unknown, malformed or revoked one.
        Unauthorized = "unauthorized",
        /// 401: the key's `expires_at` has passed.
        KeyExpired = "key_expired",
        /// 403: the key lacks the route's scope.
        Forbidden = "forbidden",
        /// 404: no such route.
        NotFound = "not_found",
        /// 404: the agent does not exist (in this account).
        AgentNotFound = "agent_not_found",
        /// 404: the tool does not exist (in this account).
        ToolNotFound = "tool_not_found",
        /// 404: the key does not exist (in this account).
        KeyNotFound = "key_not_found",
        /// 404: the session does not exist (on this agent).
        SessionNotFound = "session_not_found",
        /// 404: the run does not exist (in this account).
        RunNotFound = "run_not_found",
        /// 405: the path exists, the method does not.
        MethodNotAllowed = "method_not_allowed",
        /// 408: a CRUD route took longer than the request timeout.
        Timeout = "timeout",
        /// 409: a uniqueness rule of the store.
        Conflict = "conflict",
        /// 409: a message to a stopped agent.
        AgentStopped = "agent_stopped",
        /// 410: a resume cursor older than the kept history.
        HistoryExpired = "history_expired",
        /// 413: a request body over the limit.
        PayloadTooLarge = "payload_too_large",
        /// 429: the key spent its requests per minute.
        RateLimitExceeded = "rate_limit_exceeded",
        /// 429: the key holds its limit of open streams.
        TooManyConnections = "too_many_connections",
        /// 429: a WebSocket holds its limit of channels.
        TooManySubscriptions = "too_many_subscriptions",
        /// 429: the key has its limit of runs going (`max_runs`).
        TooManyRuns = "too_many_runs",
        /// 429: the key's or its account's token budget (`tpm`,
        /// `daily_tokens`) is spent; also ends a run that crossed it.
        TokenBudgetExceeded = "token_budget_exceeded",
        /// 431: the request line and headers are too large.
        HeadersTooLarge = "headers_too_large",
        /// 500: a bug; also a run that crashed.
        InternalError = "internal_error",
        /// 503: the store or the bus cannot be reached, the gateway is
        /// shutting down or holds its limit of streams.
        Unavailable = "unavailable",
        /// WebSocket: a frame of a type the server does not know.
        UnknownType = "unknown_type",
        /// SSE and WebSocket: the client fell too far behind.
        Lagged = "lagged",
        /// Run error: the agent's model cannot be used.
        ModelUnavailable = "model_unavailable",
        /// Run error: the model stopped without an answer.
        ModelError = "model_error",
        /// Run error and OpenAI relay (502): the provider answered an error status.
        UpstreamError = "upstream_error",
        /// Run error and OpenAI relay (502): the provider could not be reached.
        UpstreamUnavailable = "upstream_unavailable",
        /// Run error and OpenAI relay (504): the provider was silent too long.
        UpstreamTimeout = "upstream_timeout",
        /// Run error and OpenAI relay (502): the provider's stream broke.
        UpstreamStreamError = "upstream_stream_error",
        /// Run error: the gateway running the run stopped.
        Interrupted = "interrupted",
        /// Run error: the worker running the run died.
        WorkerLost = "worker_lost",
        /// OpenAI (404): the model names no agent the caller can use.
        ModelNotFound = "model_not_found",
        /// OpenAI (400): the body is not JSON.
        InvalidJson = "invalid_json",
        /// OpenAI (503): the agent's run was cancelled.
        Cancelled = "cancelled",
    }
}

impl ErrorCode {
    /// The HTTP status of an answer with this code, or `None` for codes that
    /// only travel inside streams (run `error` events, WebSocket and SSE
    /// frames), never as a response status.
    pub const fn status(self) -> Option<StatusCode> {
        use ErrorCode::*;
        Some(match self {
            ValidationError | InvalidJson => StatusCode::BAD_REQUEST,
            Unauthorized | KeyExpired => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound | AgentNotFound | ToolNotFound | KeyNotFound | SessionNotFound
            | RunNotFound | ModelNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            Conflict | AgentStopped => StatusCode::CONFLICT,
            HistoryExpired => StatusCode::GONE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimitExceeded | TooManyConnections | TooManySubscriptions | TooManyRuns
            | TokenBudgetExceeded => StatusCode::TOO_MANY_REQUESTS,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable | Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError | UpstreamUnavailable | UpstreamStreamError => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            UnknownType | Lagged | ModelUnavailable | ModelError | Interrupted | WorkerLost => {
                return None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::wire::assert_round_trips;

    #[test]
    fn every_code_round_trips() {
        assert_round_trips(ErrorCode::ALL);
        assert_eq!(ErrorCode::AgentNotFound.as_str(), "agent_not_found");
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}: protocol/schemas/event.json wants ^[a-z][a-z_]*$"
            );
        }
    }

    #[test]
    fn statuses_follow_protocol_errors_md() {
        let status = |c: ErrorCode| c.status().map(|s| s.as_u16());
        let table = [
            (ErrorCode::ValidationError, Some(400)),
            (ErrorCode::Unauthorized, Some(401)),
            (ErrorCode::KeyExpired, Some(401)),
            (ErrorCode::Forbidden, Some(403)),
            (ErrorCode::NotFound, Some(404)),
            (ErrorCode::RunNotFound, Some(404)),
            (ErrorCode::MethodNotAllowed, Some(405)),
            (ErrorCode::Timeout, Some(408)),
            (ErrorCode::AgentStopped, Some(409)),
            (ErrorCode::HistoryExpired, Some(410)),
            (ErrorCode::PayloadTooLarge, Some(413)),
            (ErrorCode::TooManyConnections, Some(429)),
            (ErrorCode::TooManyRuns, Some(429)),
            (ErrorCode::TokenBudgetExceeded, Some(429)),
            (ErrorCode::HeadersTooLarge, Some(431)),
            (ErrorCode::InternalError, Some(500)),
            (ErrorCode::Unavailable, Some(503)),
            (ErrorCode::UpstreamTimeout, Some(504)),
            (ErrorCode::Lagged, None),
            (ErrorCode::WorkerLost, None),
        ];
        for (code, want) in table {
            assert_eq!(status(code), want, "{code}");
        }
    }
}
