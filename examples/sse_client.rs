//! Chat with a weir agent over Server-Sent Events, with token streaming and
//! resume after a dropped connection.
//!
//! ```sh
//! WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... cargo run --example sse_client -- "what time is it?"
//! ```
//!
//! `WEIR_AGENT=agent-…` talks to an existing agent; otherwise one named
//! `sse-example` (model `echo`) is created. The reply's tokens are printed as
//! they arrive; monologue and function calls on their own lines. If the
//! connection drops before `done`, the run is picked up again from
//! `GET /v1/runs/{id}/stream` with `Last-Event-ID` = the last seq seen, so
//! nothing is lost or printed twice. Reconnects wait the server's `retry:`
//! when it sent one (a draining gateway does, randomised), else a jittered
//! backoff, so clients of one gateway do not all come back at once.

use std::{io::Write, time::Duration};

use anyhow::{bail, Context};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

mod common;
use common::{backoff, hint_of, Setup};

/// Where the stream got to.
#[derive(Default)]
struct Progress {
    run_id: Option<String>,
    last_seq: u64,
    done: bool,
    /// The server's last `retry:` (how long to wait before reconnecting).
    retry: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let setup = Setup::from_env()?;
    let (base, key, message) = (&setup.base, &setup.key, &setup.prompt);
    let client = reqwest::Client::new();
    let agent = match std::env::var("WEIR_AGENT") {
        Ok(id) => id,
        Err(_) => setup.create_echo_agent(&client, "sse-example").await?,
    };

    // `background: true`: if this client drops, the run goes on and we resume it.
    let resp = client
        .post(format!("{base}/v1/agents/{agent}/messages"))
        .bearer_auth(key)
        .json(
            &json!({"message": message, "stream": true, "stream_tokens": true, "background": true}),
        )
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("{}: {}", resp.status(), resp.text().await?);
    }
    let mut progress = Progress::default();
    let mut resp = Some(resp);
    for attempt in 1..=10u32 {
        if let Some(r) = resp.take() {
            if let Err(e) = read_events(r, &mut progress).await {
                eprintln!("\n[stream broke: {e}; resuming]");
            }
        }
        if progress.done {
            return Ok(());
        }
        let run = progress
            .run_id
            .clone()
            .context("the stream broke before the run started")?;
        tokio::time::sleep(backoff(attempt, progress.retry.take())).await;
        let r = client
            .get(format!("{base}/v1/runs/{run}/stream"))
            .bearer_auth(key)
            .header("Last-Event-ID", progress.last_seq.to_string())
            .send()
            .await;
        resp = r.ok().filter(|r| r.status().is_success());
    }
    bail!("gave up resuming the run")
}

/// Prints one run's events until `done` or the end of the response.
#[allow(
    clippy::print_stdout,
    reason = "an example client: what it receives is its output"
)]
async fn read_events(resp: reqwest::Response, progress: &mut Progress) -> anyhow::Result<()> {
    // `retry:` comes in a block of its own, which EventSource parsers drop
    // (no data): picked from the bytes before they are parsed.
    let retry = std::cell::Cell::new(None);
    let bytes = resp.bytes_stream().inspect(|chunk| {
        if let Ok(chunk) = chunk {
            let text = String::from_utf8_lossy(chunk);
            retry.set(text.lines().filter_map(hint_of).next_back().or(retry.get()));
        }
    });
    let mut events = bytes.eventsource();
    let mut out = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event?;
        let data: Value = serde_json::from_str(&event.data)?;
        if event.event == "error" && data.get("message_type").is_none() {
            // A stream-level error (`lagged`, …): resume from where we are.
            bail!("server ended the stream: {}", data["code"]);
        }
        if let Some(seq) = data["seq"].as_u64() {
            if seq <= progress.last_seq {
                continue;
            }
            progress.last_seq = seq;
        }
        if progress.run_id.is_none() {
            progress.run_id = data["run_id"].as_str().map(str::to_owned);
        }
        match event.event.as_str() {
            "assistant_delta" => {
                print!("{}", data["delta"].as_str().unwrap_or(""));
                out.flush()?;
            }
            "assistant_message" => println!(),
            "internal_monologue" => println!(
                "[internal_monologue] {}",
                data["message"].as_str().unwrap_or("")
            ),
            "function_message" => {
                let m = &data["message"];
                println!(
                    "[function_message] {}({}) -> {} ({})",
                    m["function"].as_str().unwrap_or("?"),
                    m["args"],
                    m["result"],
                    m["status"].as_str().unwrap_or("")
                );
            }
            "usage" => println!("[usage] {} tokens", data["total_tokens"]),
            "error" => println!("[error] {}: {}", data["code"], data["message"]),
            "done" => {
                println!("[done] {}", data["stop_reason"].as_str().unwrap_or(""));
                progress.done = true;
                return Ok(());
            }
            _ => {}
        }
    }
    drop(events);
    progress.retry = retry.get();
    Ok(())
}
