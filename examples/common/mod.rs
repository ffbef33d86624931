//! What the example clients share: where weir is, which key to use, what to
//! say, and an `echo` agent to say it to when the user names none.
//!
//! Each example includes this with `mod common;`, so every one of them stays
//! runnable on its own with `cargo run --example NAME`.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// Where to connect and what to send, from `WEIR_URL`, `WEIR_KEY` and the
/// first command-line argument.
pub struct Setup {
    /// `WEIR_URL`, default `http://127.0.0.1:8080`.
    pub base: String,
    /// `WEIR_KEY`: an API key with the `chat` scope.
    pub key: String,
    /// The first argument, default "what time is it?".
    pub prompt: String,
}

impl Setup {
    pub fn from_env() -> anyhow::Result<Self> {
        let base = std::env::var("WEIR_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
        let key =
            std::env::var("WEIR_KEY").context("set WEIR_KEY to an API key with the chat scope")?;
        let prompt = std::env::args()
            .nth(1)
            .unwrap_or_else(|| "what time is it?".into());
        Ok(Self { base, key, prompt })
    }

    /// Creates an agent named `name` with the built-in `echo` model (no
    /// provider needed) and returns its id.
    pub async fn create_echo_agent(
        &self,
        client: &reqwest::Client,
        name: &str,
    ) -> anyhow::Result<String> {
        self.create_agent(client, json!({"name": name, "model": "echo"}))
            .await
    }

    /// Creates an agent from `body` (`POST /v1/agents`) and returns its id.
    pub async fn create_agent(
        &self,
        client: &reqwest::Client,
        body: Value,
    ) -> anyhow::Result<String> {
        let agent: Value = client
            .post(format!("{}/v1/agents", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(agent["id"].as_str().context("agent id")?.to_owned())
    }
}

/// The wait before reconnect `attempt` (1, 2, …): the server's hint when it
/// gave one (SSE `retry:`, a draining WebSocket's close reason), else "full
/// jitter": a random wait up to 250 ms doubling to 5 s, so clients that
/// lost the same gateway do not all come back at the same moment.
#[allow(dead_code, reason = "only the streaming examples reconnect")]
pub fn backoff(attempt: u32, hint: Option<Duration>) -> Duration {
    hint.unwrap_or_else(|| {
        let cap = (250u64 << attempt.saturating_sub(1).min(5)).min(5000);
        Duration::from_millis(rand::random_range(0..=cap))
    })
}

/// The reconnect hint of a draining gateway's WebSocket close reason
/// (`draining; retry in 1234 ms`), or of an SSE `retry: 1234` line.
#[allow(dead_code, reason = "only the streaming examples reconnect")]
pub fn hint_of(text: &str) -> Option<Duration> {
    let ms = text
        .strip_prefix("draining; retry in ")
        .and_then(|t| t.strip_suffix(" ms"))
        .or_else(|| text.strip_prefix("retry: "))?;
    ms.trim().parse().ok().map(Duration::from_millis)
}
