//! `upstream/<model>`: any OpenAI-compatible provider (`--provider-url`,
//! `--provider-key`), always called with `stream: true` and
//! `stream_options.include_usage`, read with eventsource-stream.
//!
//! Two timeouts guard a step: the first chunk must arrive within
//! `first_token_timeout_secs` of sending (connecting included), and after it
//! the stream may not stay silent for more than `idle_timeout_secs`. An
//! upstream status >= 400, a transport error, an unparseable chunk or a
//! stream that ends before it finished becomes a [`ModelError`], which the
//! run turns into an `error` event and `done` with stop_reason `error`.

use std::{sync::Arc, time::Duration};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::{timeout, timeout_at, Instant};

use super::{
    assemble::{Assembler, Chunk},
    ModelError, ModelEvent, ModelRequest, ModelStream,
};
use crate::{
    config::ServeConfig,
    metrics::{upstream_answered, upstream_error, Upstream},
};

/// Most of an error body we read to report it.
const ERROR_BODY_LIMIT: usize = 4096;

/// The configured OpenAI-compatible provider, shared by agent runs and the
/// `/v1/chat/completions` relay (one connection pool).
#[derive(Debug)]
pub struct Provider {
    client: reqwest::Client,
    base: String,
    /// `{base}/chat/completions`, parsed once: reqwest parses a `&str` URL
    /// on every request (with IDNA mapping of the host), which the relay's
    /// profile showed at ~2 % of the gateway's CPU. `None` when `base` does
    /// not parse; each request then fails as it did, naming the provider
    /// unreachable.
    chat_url: Option<reqwest::Url>,
    /// `Bearer <key>`, built once and marked sensitive (kept out of any
    /// header dump).
    auth: Option<reqwest::header::HeaderValue>,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Provider {
    /// The provider from `--provider-url`, or `None` when none is configured.
    pub fn from_config(cfg: &ServeConfig, client: reqwest::Client) -> Option<Arc<Self>> {
        let base = cfg.provider_url.as_deref()?.trim().trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        let auth = cfg
            .provider_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .and_then(|k| {
                let v = reqwest::header::HeaderValue::try_from(format!("Bearer {k}"));
                if v.is_err() {
                    tracing::warn!("--provider-key is not a valid header value; sent without it");
                }
                v.ok()
            })
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Some(Arc::new(Self {
            client,
            base: base.to_owned(),
            chat_url: reqwest::Url::parse(&format!("{base}/chat/completions")).ok(),
            auth,
            first_token_timeout: Duration::from_secs(cfg.first_token_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs.max(1)),
        }))
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(auth) => req.header(reqwest::header::AUTHORIZATION, auth.clone()),
            None => req,
        }
    }

    /// `POST {provider}/chat/completions` with `body` (JSON bytes).
    pub fn chat_request(&self, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        let req = match &self.chat_url {
            Some(url) => self.client.post(url.clone()),
            None => self.client.post(format!("{}/chat/completions", self.base)),
        };
        let req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.authorize(req)
    }

    /// `GET {provider}/models`.
    pub fn models_request(&self) -> reqwest::RequestBuilder {
        self.authorize(self.client.get(format!("{}/models", self.base)))
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

/// One provider model.
#[derive(Debug, Clone)]
pub struct UpstreamModel {
    provider: Arc<Provider>,
    model: String,
}

impl UpstreamModel {
    pub fn new(provider: Arc<Provider>, model: &str) -> Self {
        Self {
            provider,
            model: model.to_owned(),
        }
    }

    fn body(&self, req: &ModelRequest) -> Vec<u8> {
        let mut body = json!({
            "model": self.model,
            "messages": req.turns.iter().map(|t| t.to_openai()).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !req.tools.is_empty() {
            body["tools"] = req.tools.iter().map(|t| t.to_openai()).collect();
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    pub fn step(&self, req: ModelRequest) -> ModelStream {
        let provider = self.provider.clone();
        let body = self.body(&req);
        Box::pin(async_stream::stream! {
            let first_secs = provider.first_token_timeout.as_secs();
            let idle = provider.idle_timeout;
            let sent = Instant::now();
            let deadline = sent + provider.first_token_timeout;
            let resp = match timeout_at(deadline, provider.chat_request(body).send()).await {
                Err(_) => { upstream_error(Upstream::Agent, "timeout"); yield Err(ModelError::FirstTokenTimeout(first_secs)); return; }
                Ok(Err(e)) => { upstream_error(Upstream::Agent, "connect"); yield Err(ModelError::Connect(e.without_url().to_string())); return; }
                Ok(Ok(resp)) => resp,
            };
            upstream_answered(Upstream::Agent, sent.into_std());
            if !resp.status().is_success() {
                upstream_error(Upstream::Agent, "status");
                let status = resp.status().as_u16();
                let message = error_message(resp).await;
                yield Err(ModelError::Status { status, message });
                return;
            }
            let mut events = resp.bytes_stream().eventsource();
            let mut asm = Assembler::default();
            let mut started = false;
            let mut saw_done = false;
            loop {
                let next = if started {
                    timeout(idle, events.next()).await
                } else {
                    timeout_at(deadline, events.next()).await
                };
                let event = match next {
                    Err(_) if started => { upstream_error(Upstream::Agent, "timeout"); yield Err(ModelError::IdleTimeout(idle.as_secs())); return; }
                    Err(_) => { upstream_error(Upstream::Agent, "timeout"); yield Err(ModelError::FirstTokenTimeout(first_secs)); return; }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => { upstream_error(Upstream::Agent, "broken"); yield Err(ModelError::Broken(e.to_string())); return; }
                    Ok(Some(Ok(event))) => event,
                };
                started = true;
                if event.data.trim() == "[DONE]" {
                    saw_done = true;
                    break;
                }
                let chunk: Chunk = match serde_json::from_str(&event.data) {
                    Ok(c) => c,
                    Err(e) => { yield Err(ModelError::Broken(format!("unparseable chunk: {e}"))); return; }
                };
                if let Some(err) = &chunk.error {
                    let message = err.get("message").and_then(Value::as_str).unwrap_or("provider error");
                    yield Err(ModelError::Broken(message.to_owned()));
                    return;
                }
                if let Some(delta) = asm.apply(chunk) {
                    yield Ok(ModelEvent::Delta(delta));
                }
            }
            if !saw_done && !asm.finished() {
                upstream_error(Upstream::Agent, "broken");
                yield Err(ModelError::Broken("the stream ended before the completion finished".into()));
                return;
            }
            yield Ok(ModelEvent::Done(asm.finish()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(url: &str, key: Option<&str>) -> Arc<Provider> {
        let mut cfg = ServeConfig::for_data_dir("/nonexistent");
        cfg.provider_url = Some(url.into());
        cfg.provider_key = key.map(str::to_owned);
        Provider::from_config(&cfg, reqwest::Client::new()).expect("a provider")
    }

    #[test]
    fn the_chat_url_is_parsed_once_and_the_key_never_printed() {
        let p = provider("http://127.0.0.1:9/v1/", Some("sk-secret-123"));
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
}
