//! OpenAI-shaped errors: `{"error":{"message","type","param","code"}}`, the
//! body the official SDKs parse (they read `error.message`, `type`, `param`
//! and `code`, and pick the exception class from the HTTP status), and a JSON
//! extractor whose rejection is such an error, so bad JSON gets one too.

use axum::{
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{domain::ErrorCode, http::errors::ApiError};

/// An error as an OpenAI client expects it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// `type`: `invalid_request_error`, `authentication_error`, `server_error`, …
    pub kind: &'static str,
    pub code: Option<ErrorCode>,
    pub param: Option<String>,
    pub retry_after: Option<u64>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, message: impl Into<String>, code: Option<ErrorCode>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: kind_for(status),
            code,
            param: None,
            retry_after: None,
        }
    }

    /// A 400 about one request field.
    pub fn invalid(message: impl Into<String>, param: &str) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, message, None);
        e.param = Some(param.to_owned());
        e
    }

    /// The 404 OpenAI gives for a model the caller cannot use.
    pub fn model_not_found(model: &str) -> Self {
        let mut e = Self::new(
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist or you do not have access to it."),
            Some(ErrorCode::ModelNotFound),
        );
        e.param = Some("model".into());
        e
    }

    /// With a `Retry-After` of `after` (rounded up to whole seconds), if any.
    pub fn retry_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.retry_after = after.map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1));
        self
    }

    /// The `{"error":{…}}` object (also what a mid-stream failure sends).
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// OpenAI's `type` for a status.
fn kind_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let (status, code) = (e.status(), e.code());
        let mut out = Self::new(status, e.message, Some(code));
        out.retry_after = e.retry_after;
        out
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "openai route error");
        }
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}

/// `Json<T>` whose rejection is an OpenAI-shaped 400 (`param` names the
/// field when serde says which).
pub struct OpenAiJson<T>(pub T);

impl<S, T> FromRequest<S> for OpenAiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rej| OpenAiError::from(crate::http::errors::bytes_rejection(rej)))?;
        parse(&bytes).map(Self)
    }
}

/// Parses a JSON body (any Content-Type, as the REST routes do); a type
/// error names the field in `param` by its path (`messages[0].role`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, OpenAiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let invalid_json = |e: &dyn std::fmt::Display| {
        let mut err = OpenAiError::new(
            StatusCode::BAD_REQUEST,
            format!("We could not parse the JSON body of your request: {e}"),
            Some(ErrorCode::InvalidJson),
        );
        err.param = None;
        err
    };
    crate::edge::limits::check_json_depth(bytes).map_err(|e| invalid_json(&e))?;
    // Plain serde first: tracking the path costs an allocation per key
    // (a relayed request's profile showed it), and only an error needs it.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        Ok(v) => de.end().map(|()| v).map_err(|e| invalid_json(&e)),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    Err(invalid_json(&inner))
                }
                _ => {
                    let param = if path == "." {
                        field_of(&inner.to_string())
                    } else {
                        Some(path.clone())
                    };
                    let message = if path == "." {
                        inner.to_string()
                    } else {
                        format!("{path}: {inner}")
                    };
                    let mut err = OpenAiError::new(StatusCode::BAD_REQUEST, message, None);
                    err.param = param;
                    Err(err)
                }
            }
        }
    }
}

/// The field serde named in "missing field `x`" / "unknown field `x`".
pub fn field_of(message: &str) -> Option<String> {
    let rest = message.split("field `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_four_fields() {
        let b = OpenAiError::invalid("`messages` is required", "messages").body();
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["param"], "messages");
        assert!(b["error"]["code"].is_null());
        assert_eq!(b["error"]["message"], "`messages` is required");
        let e: OpenAiError = ApiError::unauthorized("no key").into();
        assert_eq!(e.body()["error"]["type"], "authentication_error");
        assert_eq!(e.body()["error"]["code"], "unauthorized");
    }

    #[test]
    fn bad_json_and_bad_fields_are_named() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Req {
            model: String,
            stream: Option<bool>,
        }
        let e = parse::<Req>(b"{nope").unwrap_err();
        assert_eq!(e.code, Some(ErrorCode::InvalidJson));
        let e = parse::<Req>(br#"{"model":"m","stream":"yes"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream"));
        let e = parse::<Req>(br#"{}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("model"));
        assert!(parse::<Req>(br#"{"model":"m"} x"#).is_err());
    }

    #[test]
    fn finds_the_field_serde_names() {
        assert_eq!(
            field_of("invalid body: missing field `model` at line 1").as_deref(),
            Some("model")
        );
        assert_eq!(field_of("malformed JSON: EOF"), None);
    }
}
