//! The Anthropic Messages API seen through OpenAI's chat completions.
//!
//! A provider of kind `anthropic` speaks `POST /v1/messages`, not
//! `/v1/chat/completions`; this module translates both ways so that a caller
//! of the OpenAI route gets ordinary `chat.completion`s and
//! `chat.completion.chunk`s, tool calls and usage included:
//! - [`request_from_openai`] turns the caller's request into a Messages
//!   request ([`request`]);
//! - [`StreamTranslator`] turns the Messages SSE events, one at a time, into
//!   OpenAI chunks ([`stream`]);
//! - [`response_to_openai`] turns a non-streamed Message into a
//!   `chat.completion` ([`response`]).
//!
//! It does no I/O: the relay owns the connection, the timeouts and the
//! cancellation, and feeds this module parsed SSE events. The shapes follow
//! Anthropic's published Messages and streaming documentation
//! (`anthropic-version: 2023-06-01`); nothing here was recorded from a live
//! server, and the unit tests replay event sequences written from those docs.

pub mod relay;
pub mod request;
pub mod response;
pub mod stream;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

pub use request::{request_from_openai, DEFAULT_MAX_TOKENS};
pub use response::response_to_openai;
pub use stream::StreamTranslator;

/// Where a Messages request goes, under the provider's base URL.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// The API version this translation was written against.
pub const API_VERSION: &str = "2023-06-01";

/// A request or response that cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The caller's request has something Anthropic cannot take (or that is
    /// malformed): a 400 about `param`.
    #[error("{message}")]
    Invalid { param: String, message: String },
    /// The provider answered something that is not a Message: a 502.
    #[error("unexpected answer from the provider: {0}")]
    Upstream(String),
}

impl TranslateError {
    pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// A failure reported by, or read from, an Anthropic stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnthropicError {
    /// An `error` event (or error body): Anthropic's `error.type` and
    /// `error.message`, e.g. `overloaded_error` after a 200.
    #[error("{kind}: {message}")]
    Upstream { kind: String, message: String },
    /// An event whose data is not the JSON the docs describe.
    #[error("malformed Anthropic stream: {0}")]
    Malformed(String),
}

impl AnthropicError {
    /// Reads Anthropic's error body, `{"type":"error","error":{"type","message"}}`
    /// (the data of an `error` event and the body of a non-2xx answer).
    pub fn from_body(body: &Value) -> Self {
        let Some(err) = body.get("error").filter(|e| e.is_object()) else {
            return Self::Malformed(format!("an error without an `error` object: {body}"));
        };
        let text = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_owned);
        match text("type") {
            Some(kind) => Self::Upstream {
                kind,
                message: text("message").unwrap_or_default(),
            },
            None => Self::Malformed(format!("an error without a type: {body}")),
        }
    }

    /// The HTTP status this error stands for ([`error_status`]).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Upstream { kind, .. } => error_status(kind),
            Self::Malformed(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The HTTP status Anthropic documents for each `error.type`; an unknown type
/// is a 500 (the caller should treat it as the provider's failure).
pub fn error_status(kind: &str) -> StatusCode {
    match kind {
        "invalid_request_error" => StatusCode::BAD_REQUEST,
        "authentication_error" => StatusCode::UNAUTHORIZED,
        "billing_error" => StatusCode::PAYMENT_REQUIRED,
        "permission_error" => StatusCode::FORBIDDEN,
        "not_found_error" => StatusCode::NOT_FOUND,
        "request_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "rate_limit_error" => StatusCode::TOO_MANY_REQUESTS,
        "timeout_error" => StatusCode::GATEWAY_TIMEOUT,
        // 529: Anthropic's own "overloaded" status, not a standard one.
        "overloaded_error" => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The two headers every Messages request carries besides the JSON content
/// type. The key is marked sensitive so it never shows in debug output.
pub fn headers(
    api_key: &str,
) -> Result<[(HeaderName, HeaderValue); 2], axum::http::header::InvalidHeaderValue> {
    let mut key = HeaderValue::from_str(api_key)?;
    key.set_sensitive(true);
    Ok([
        (HeaderName::from_static("x-api-key"), key),
        (
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        ),
    ])
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`. `pause_turn` (a
/// server tool paused a long turn) ends this completion as a plain stop;
/// `refusal` is OpenAI's `content_filter`.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `prompt_tokens` from an Anthropic `usage`: Anthropic counts the
/// cached parts of the prompt apart (`cache_creation_input_tokens`,
/// `cache_read_input_tokens`), OpenAI counts them in.
fn prompt_tokens(usage: &Value) -> Option<u64> {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64);
    let input = n("input_tokens")?;
    Some(
        input
            + n("cache_creation_input_tokens").unwrap_or(0)
            + n("cache_read_input_tokens").unwrap_or(0),
    )
}

/// OpenAI's `usage` object.
fn usage_json(prompt: u64, completion: u64) -> Value {
    serde_json::json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn error_types_map_to_documented_statuses() {
        let table = [
            ("invalid_request_error", 400),
            ("authentication_error", 401),
            ("billing_error", 402),
            ("permission_error", 403),
            ("not_found_error", 404),
            ("request_too_large", 413),
            ("rate_limit_error", 429),
            ("api_error", 500),
            ("timeout_error", 504),
            ("overloaded_error", 529),
            ("something_new", 500),
        ];
        for (kind, status) in table {
            assert_eq!(error_status(kind).as_u16(), status, "{kind}");
        }
    }

    #[test]
    fn error_body_is_read() {
        let body = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let e = AnthropicError::from_body(&body);
        assert_eq!(
            e,
            AnthropicError::Upstream {
                kind: "overloaded_error".into(),
                message: "Overloaded".into()
            }
        );
        assert_eq!(e.status().as_u16(), 529);
        let odd = AnthropicError::from_body(&json!({"nope": 1}));
        assert!(matches!(odd, AnthropicError::Malformed(_)));
        assert_eq!(odd.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        let table = [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("pause_turn"), "stop"),
            (Some("refusal"), "content_filter"),
            (None, "stop"),
        ];
        for (stop, finish) in table {
            assert_eq!(finish_reason(stop), finish, "{stop:?}");
        }
    }

    #[test]
    fn headers_carry_key_and_version() {
        let [(k, v), (vk, vv)] = headers("sk-ant-test").unwrap();
        assert_eq!(k.as_str(), "x-api-key");
        assert_eq!(v.to_str().unwrap(), "sk-ant-test");
        assert!(v.is_sensitive());
        assert_eq!(vk.as_str(), "anthropic-version");
        assert_eq!(vv.to_str().unwrap(), "2023-06-01");
        assert!(headers("bad\nkey").is_err());
    }

    #[test]
    fn prompt_tokens_count_the_cache() {
        let u = json!({"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2});
        assert_eq!(prompt_tokens(&u), Some(17));
        assert_eq!(prompt_tokens(&json!({"output_tokens": 3})), None);
    }
}
