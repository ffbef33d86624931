//! One upstream provider: where it is, how to authenticate, its timeouts
//! and its [`Health`]. Shared by agent runs and the `/v1/chat/completions`
//! relay. A plain-`http://` provider's chat requests go through its own
//! pool of the lean client ([`super::lean`]); everything else through
//! reqwest, one connection pool per serving loop for all providers.

use std::time::Duration;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue},
    StatusCode,
};
use serde_json::Value;

use super::{
    breaker::Health,
    config::{Kind, ProviderSpec, BREAKER_COOLDOWN_SECS, BREAKER_FAILURES},
    lean::Lean,
};
use crate::{config::ServeConfig, metrics::provider::ProviderMetrics};

/// Most of an error body we read to report it.
const ERROR_BODY_LIMIT: usize = 4096;

/// The name of the provider built from `--provider-url`.
pub const DEFAULT: &str = "default";

/// A configured provider.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: Kind,
    /// One per serving loop ([`crate::cores`]): a loop's requests use
    /// connections its own runtime drives.
    client: Clients,
    base: String,
    /// `{base}/chat/completions` (`{base}/v1/messages` for Anthropic), parsed once: reqwest parses a `&str` URL
    /// on every request (with IDNA mapping of the host), which the relay's
    /// profile showed at ~2 % of the gateway's CPU. `None` when `base` does
    /// not parse; each request then fails as it did, naming the provider
    /// unreachable.
    chat_url: Option<reqwest::Url>,
    /// The chat endpoint on the lean client ([`super::lean`]), for a
    /// plain-`http://` provider; `None` uses `client`.
    lean: Option<Lean>,
    /// `Authorization: Bearer <key>` and the configured extra headers, built
    /// once and marked sensitive (kept out of any header dump).
    headers: HeaderMap,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub health: Health,
    /// Its handles for what every request records.
    pub metrics: ProviderMetrics,
}

/// A provider's answer: its head, and its body as it arrives.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

/// An answer's body.
pub type BodyStream = BoxStream<'static, Result<Bytes, BodyError>>;

/// Why reading an answer's body failed (never with the provider's URL).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

impl From<reqwest::Error> for BodyError {
    fn from(e: reqwest::Error) -> Self {
        Self(e.without_url().to_string())
    }
}

impl From<hyper::Error> for BodyError {
    /// Said as reqwest says it, so a caller reads the same whichever client
    /// reached the provider; the cause goes to the debug log.
    fn from(e: hyper::Error) -> Self {
        tracing::debug!(error = %super::lean::describe(&e), "reading a provider's answer failed");
        Self("error decoding response body".to_owned())
    }
}

impl Answer {
    /// As a reqwest response, for the paths that read an error answer.
    pub fn into_reqwest(self) -> reqwest::Response {
        let mut out = http::Response::new(reqwest::Body::wrap_stream(self.body));
        *out.status_mut() = self.status;
        *out.headers_mut() = self.headers;
        reqwest::Response::from(out)
    }
}

/// The HTTP clients of a provider: one per serving loop.
pub type Clients = crate::cores::PerCore<reqwest::Client>;

fn sensitive(v: String) -> Option<HeaderValue> {
    let mut v = HeaderValue::try_from(v).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl Provider {
    /// The `default` provider from `--provider-url`, or `None` when none is
    /// configured.
    pub fn from_flags(cfg: &ServeConfig, client: impl Into<Clients>) -> Option<Self> {
        let base = cfg.provider_url.as_deref()?.trim().trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        let mut headers = HeaderMap::new();
        if let Some(k) = cfg.provider_key.as_deref().filter(|k| !k.is_empty()) {
            match sensitive(format!("Bearer {k}")) {
                Some(v) => {
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                None => {
                    tracing::warn!("--provider-key is not a valid header value; sent without it")
                }
            }
        }
        Some(Self::build(
            DEFAULT,
            Kind::Openai,
            base,
            headers,
            client,
            (cfg.first_token_timeout_secs, cfg.idle_timeout_secs),
            (BREAKER_FAILURES, BREAKER_COOLDOWN_SECS),
        ))
    }

    /// A provider of the config file's `[[providers]]`.
    pub fn from_spec(spec: &ProviderSpec, client: impl Into<Clients>) -> Self {
        let mut headers = HeaderMap::new();
        let key = spec.api_key.as_ref().filter(|k| !k.expose().is_empty());
        match (spec.kind, key) {
            (Kind::Openai, Some(k)) => {
                if let Some(v) = sensitive(format!("Bearer {}", k.expose())) {
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
            }
            (Kind::Anthropic, key) => {
                let key = key.map_or("", |k| k.expose());
                if let Ok(pairs) = super::anthropic::headers(key) {
                    headers.extend(pairs);
                }
            }
            (Kind::Openai, None) => {}
        }
        for (name, value) in &spec.headers {
            let name = HeaderName::try_from(name.as_str());
            match (name, sensitive(value.expose().to_owned())) {
                (Ok(n), Some(v)) => {
                    headers.insert(n, v);
                }
                _ => {
                    tracing::warn!(provider = %spec.name, "an extra header is not valid; sent without it")
                }
            }
        }
        Self::build(
            &spec.name,
            spec.kind,
            spec.base_url.trim().trim_end_matches('/'),
            headers,
            client,
            (spec.first_token_timeout_secs, spec.idle_timeout_secs),
            (spec.breaker_failures, spec.breaker_cooldown_secs),
        )
    }

    fn build(
        name: &str,
        kind: Kind,
        base: &str,
        headers: HeaderMap,
        client: impl Into<Clients>,
        (first, idle): (u64, u64),
        (failures, cooldown): (u32, u64),
    ) -> Self {
        let chat = match kind {
            Kind::Openai => format!("{base}/chat/completions"),
            Kind::Anthropic => format!("{base}{}", super::anthropic::MESSAGES_PATH),
        };
        let client: Clients = client.into();
        let chat_url = reqwest::Url::parse(&chat).ok();
        Self {
            name: name.to_owned(),
            kind,
            lean: chat_url
                .as_ref()
                .and_then(|u| Lean::for_url(u, client.loops())),
            client,
            base: base.to_owned(),
            chat_url,
            headers,
            first_token_timeout: Duration::from_secs(first.max(1)),
            idle_timeout: Duration::from_secs(idle.max(1)),
            health: Health::new(failures, Duration::from_secs(cooldown)),
            metrics: ProviderMetrics::default(),
        }
    }

    /// The base URL (never with a key: keys go in headers).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.headers.is_empty() {
            true => req,
            false => req.headers(self.headers.clone()),
        }
    }

    /// `POST {provider}/chat/completions` (Anthropic: `/v1/messages`) with
    /// `body` (JSON bytes, already in the provider's shape).
    pub fn chat_request(&self, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        let req = match &self.chat_url {
            Some(url) => self.client.get().post(url.clone()),
            // Fails at send, naming the provider unreachable.
            None => self
                .client
                .get()
                .post(format!("{}/chat/completions", self.base)),
        };
        let req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.authorize(req)
    }

    /// Sends a chat request (`body`: JSON bytes, in the provider's shape):
    /// on the lean client for a plain-`http://` provider, else on reqwest.
    /// `Err` says why no answer came.
    pub async fn send_chat(&self, body: Vec<u8>) -> Result<Answer, String> {
        if let Some(lean) = &self.lean {
            // Said as reqwest says it: the caller may see this, and the
            // cause names the provider's address, which is for the log.
            let sent = lean.post(&self.headers, Bytes::from(body)).await;
            let (head, body) = sent
                .map_err(|e| {
                    tracing::debug!(provider = %self.name, error = %e, "sending to a provider failed");
                    "error sending request".to_owned()
                })?
                .into_parts();
            return Ok(Answer {
                status: head.status,
                headers: head.headers,
                body: body.map_err(BodyError::from).boxed(),
            });
        }
        let mut resp = self
            .chat_request(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        Ok(Answer {
            status: resp.status(),
            headers: std::mem::take(resp.headers_mut()),
            body: resp.bytes_stream().map_err(BodyError::from).boxed(),
        })
    }

    /// `GET {provider}/models`.
    pub fn models_request(&self) -> reqwest::RequestBuilder {
        self.authorize(self.client.get().get(format!("{}/models", self.base)))
    }
}

/// The message of an upstream error response: `error.message` when the body
/// is OpenAI-shaped, else the start of the body.
pub async fn error_message(resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_LIMIT {
            body.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
            return m.to_owned();
        }
    }
    let text = String::from_utf8_lossy(&body);
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(url: &str, key: Option<&str>) -> Provider {
        let mut cfg = ServeConfig::for_data_dir("/nonexistent");
        cfg.provider_url = Some(url.into());
        cfg.provider_key = key.map(str::to_owned);
        Provider::from_flags(&cfg, reqwest::Client::new()).expect("a provider")
    }

    #[test]
    fn the_chat_url_is_parsed_once_and_the_key_never_printed() {
        let p = provider("http://127.0.0.1:9/v1/", Some("sk-secret-123"));
        assert_eq!(p.name, DEFAULT);
        let req = p.chat_request("{}").build().unwrap();
        assert_eq!(req.url().as_str(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer sk-secret-123");
        assert!(req.headers()["authorization"].is_sensitive());
        assert!(!format!("{p:?}").contains("sk-secret"), "{p:?}");
    }

    #[test]
    fn an_unparsable_url_fails_per_request_and_no_key_sends_no_header() {
        let p = provider("not a url", None);
        assert!(p.chat_request("{}").build().is_err());
        let p = provider("http://127.0.0.1:9/v1", Some(""));
        let req = p.chat_request("{}").build().unwrap();
        assert!(req.headers().get("authorization").is_none());
    }

    #[test]
    fn extra_headers_go_with_every_request_and_stay_hidden() {
        let cfg = super::super::ProvidersConfig::from_toml(
            "[[providers]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"sk-x-secret\"\nheaders = { \"x-org\" = \"org-7\" }\n",
        )
        .unwrap();
        let p = Provider::from_spec(&cfg.providers[0], reqwest::Client::new());
        let req = p.chat_request("{}").build().unwrap();
        assert_eq!(req.headers()["x-org"], "org-7");
        assert_eq!(req.headers()["authorization"], "Bearer sk-x-secret");
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("sk-x-secret") && !debug.contains("org-7"),
            "{debug}"
        );
    }
}
