//! Stream `/v1/chat/completions` from weir with plain reqwest, the way any
//! OpenAI client does: `data: {chunk}` lines, then `data: [DONE]`.
//!
//! ```sh
//! WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... cargo run --example openai_stream -- "what time is it?"
//! ```
//!
//! `model` is an agent id (`WEIR_MODEL=agent-…`; the agent answers, with its
//! tools) or `upstream/<model>` (relayed to the configured provider). Without
//! `WEIR_MODEL`, the first model `GET /v1/models` lists is used, or an `echo`
//! agent is created.

use std::io::Write;

use anyhow::bail;
use futures::StreamExt;
use serde_json::{json, Value};

mod common;
use common::Setup;

#[tokio::main]
#[allow(
    clippy::print_stdout,
    reason = "an example client: what it receives is its output"
)]
async fn main() -> anyhow::Result<()> {
    let setup = Setup::from_env()?;
    let (base, key, prompt) = (&setup.base, &setup.key, &setup.prompt);
    let client = reqwest::Client::new();
    let model = match std::env::var("WEIR_MODEL") {
        Ok(m) => m,
        Err(_) => pick_model(&client, &setup).await?,
    };

    let resp = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("{}: {}", resp.status(), resp.text().await?);
    }
    println!("[model] {model}");
    let mut body = resp.bytes_stream();
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk?);
        // Complete lines only; a chunk may end mid-line.
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                println!("\n[done]");
                return Ok(());
            }
            let chunk: Value = serde_json::from_str(data)?;
            if let Some(err) = chunk.get("error") {
                bail!("the stream failed: {err}");
            }
            if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
                print!("{delta}");
                out.flush()?;
            }
            if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
                print!("\n[finish_reason] {reason}");
            }
            if chunk["usage"].is_object() {
                print!("\n[usage] {} tokens", chunk["usage"]["total_tokens"]);
            }
        }
    }
    bail!("the stream ended without [DONE]")
}

/// The first model `GET /v1/models` lists, or a new `echo` agent.
async fn pick_model(client: &reqwest::Client, setup: &Setup) -> anyhow::Result<String> {
    let models: Value = client
        .get(format!("{}/v1/models", setup.base))
        .bearer_auth(&setup.key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(id) = models["data"][0]["id"].as_str() {
        return Ok(id.to_owned());
    }
    setup.create_echo_agent(client, "openai-example").await
}
