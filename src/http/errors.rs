//! The one error type at the HTTP boundary, and the JSON extractor whose
//! rejection is that error.
//!
//! Every failure on every route leaves as
//! `{"error":{"code":…,"message":…,"request_id":…}}`. 5xx details are logged,
//! never sent. The request id is filled in by the envelope
//! ([`super::layers::front`] calls [`super::router`]'s), which sees the
//! response after the handler, so handlers need not thread it through.

use axum::{
    extract::{rejection::BytesRejection, FromRequest, Request},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;

use crate::{
    agent::RunError, bus::BusError, domain::ErrorCode, keys::MissingScope, store::StoreError,
    stream::feed::OpenError,
};

/// An error as the client sees it. Its status is the code's
/// ([`ErrorCode::status`]), except for a request refused with a status of
/// its own (a layer's bare answer, an extractor's rejection): then the code
/// follows from the status ([`ApiError::for_status`], [`ApiError::rejected`]).
/// The two cannot be set apart, so they are read through [`Self::status`]
/// and [`Self::code`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` on 429/503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code`, answered with the code's status. A code that
    /// only travels inside streams has none: it is answered as a 500.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The error an answer with a bare error `status` (from a layer: the body
    /// limit, the timeout, axum's own rejections) stands for, keeping the
    /// status: `validation_error` for 4xx without a code of their own,
    /// `internal_error` for 5xx.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => (ErrorCode::NotFound, "not found"),
            StatusCode::METHOD_NOT_ALLOWED => (
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                (ErrorCode::PayloadTooLarge, "request body exceeds the limit")
            }
            StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "the request took too long"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (ErrorCode::ValidationError, "unsupported content type")
            }
            StatusCode::UNAUTHORIZED => (ErrorCode::Unauthorized, "unauthorized"),
            s if s.is_server_error() => (ErrorCode::InternalError, "internal error"),
            _ => (ErrorCode::ValidationError, "bad request"),
        };
        Self {
            status,
            ..Self::new(code, message)
        }
    }

    /// A request refused with `status` by what read it (axum's WebSocket
    /// upgrade rejections: 400, 405 for HEAD, 426): `validation_error` with
    /// that status (`internal_error` for a 5xx).
    pub fn rejected(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status.is_server_error() {
            true => ErrorCode::InternalError,
            false => ErrorCode::ValidationError,
        };
        Self {
            status,
            ..Self::new(code, message)
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(scope: &str) -> Self {
        MissingScope {
            scope: scope.to_owned(),
        }
        .into()
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal() -> Self {
        Self::new(ErrorCode::InternalError, "internal error")
    }
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A store NotFound for a resource kind: `agent_not_found`, `run_not_found`, …
    pub fn from_store(err: StoreError, not_found_code: ErrorCode) -> Self {
        match err {
            StoreError::NotFound(what) => Self::new(not_found_code, format!("{what} not found")),
            other => other.into(),
        }
    }

    /// The envelope body (request id left empty; the envelope fills it).
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        json!({"error": {"code": self.code, "message": self.message, "request_id": request_id}})
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if let StoreError::Unavailable(msg) = &err {
            tracing::warn!(error = %msg, "store unavailable");
        }
        Self::new(err.code(), err.client_message())
    }
}

impl From<BusError> for ApiError {
    fn from(err: BusError) -> Self {
        if err.code() == ErrorCode::Unavailable {
            tracing::warn!(error = %err, "bus error");
        }
        Self::new(err.code(), err.client_message())
    }
}

impl From<OpenError> for ApiError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Run(e) => e.into(),
            OpenError::Bus(e) => e.into(),
            OpenError::Store(e) => e.into(),
            other => Self::new(other.code(), other.client_message()),
        }
    }
}

impl From<MissingScope> for ApiError {
    fn from(e: MissingScope) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<&RunError> for ApiError {
    fn from(e: &RunError) -> Self {
        match e {
            RunError::Store(s) => s.clone().into(),
            RunError::Bus(b) => b.clone().into(),
            other => Self::new(other.code(), other.client_message()),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        (&e).into()
    }
}

/// Marker the envelope uses to recognise an error body it must
/// complete with the request id.
#[derive(Clone)]
pub struct ErrorMarker(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.code == ErrorCode::InternalError {
            tracing::error!(message = %self.message, "internal error");
        }
        let mut resp = (self.status, axum::Json(self.body(""))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(ErrorMarker(self));
        resp
    }
}

/// `Json<T>` whose rejection is a 400 `validation_error` envelope naming the
/// field, instead of axum's plain-text 415/422.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        parse_json(&bytes).map(Self)
    }
}

/// A body that could not be read: too large (413) or broken (400).
pub fn bytes_rejection(rej: BytesRejection) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "request body exceeds the limit")
    } else {
        ApiError::validation(format!("body: {}", rej.body_text()))
    }
}

/// Parses a JSON body; the error names the field by its path
/// (`tools[1]: invalid type: integer `3`, expected a string`), or says the
/// JSON itself is malformed. Content-Type is not required (curl -d sends a
/// form type), only that the body is JSON.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Deep nesting is refused before parsing, with a message that says so.
    crate::edge::limits::check_json_depth(bytes)
        .map_err(|e| ApiError::validation(format!("body: {e}")))?;
    // Every request body is an object, but serde's derived structs also
    // read a JSON array positionally (`[]` would be a session with every
    // field defaulted, `["x"]` an agent named x): refuse arrays by name.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::validation(
            "body: invalid type: array, expected a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize(&mut *de);
    match result {
        // Trailing garbage after the value is malformed JSON too.
        Ok(v) => de
            .end()
            .map(|()| v)
            .map_err(|e| ApiError::validation(format!("malformed JSON: {e}"))),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Err(match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    ApiError::validation(format!("malformed JSON: {inner}"))
                }
                _ if path == "." => ApiError::validation(format!("body: {inner}")),
                _ => ApiError::validation(format!("{path}: {inner}")),
            })
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
