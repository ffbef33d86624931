//! Human approval mid-run: an agent whose `get_time` needs approval asks
//! for it (`approval_request`), this client decides, and the run goes on.
//!
//! ```sh
//! WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... cargo run --example approval_flow -- "what time is it?"
//! ```
//!
//! `WEIR_DECISION=approve|deny` decides without asking; otherwise the
//! request is shown and the decision read from stdin (`y` approves). The
//! decision goes to `POST /v1/runs/{id}/approvals/{approval_id}`; the same
//! stream then carries `approval_response`, the call's `function_message`
//! (status `denied` if it was denied: the tool did not run) and the rest of
//! the run. A request nobody decides expires (`--approval-timeout-secs`).

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

#[allow(
    dead_code,
    reason = "this example makes its own agent (approval_required), not a plain echo one"
)]
mod common;
use common::Setup;

#[tokio::main]
#[allow(
    clippy::print_stdout,
    reason = "an example client: what it receives is its output"
)]
async fn main() -> anyhow::Result<()> {
    let setup = Setup::from_env()?;
    let (base, key) = (&setup.base, &setup.key);
    let client = reqwest::Client::new();
    // `get_time` needs a person's approval each time the model calls it.
    let body = json!({"name": "approval-example", "model": "echo", "tools": ["get_time"],
                      "approval_required": ["get_time"]});
    let agent = setup.create_agent(&client, body).await?;
    let resp = client
        .post(format!("{base}/v1/agents/{agent}/messages"))
        .bearer_auth(key)
        .json(&json!({"message": setup.prompt, "stream": true}))
        .send()
        .await?
        .error_for_status()?;
    let mut events = resp.bytes_stream().eventsource();
    while let Some(frame) = events.next().await {
        let ev: Value = serde_json::from_str(&frame?.data)?;
        let kind = ev["message_type"].as_str().unwrap_or("?");
        match kind {
            "approval_request" => {
                println!(
                    "[approval_request] {}({}) expires {}",
                    ev["tool"].as_str().unwrap_or("?"),
                    ev["arguments"],
                    ev["expires_at"].as_str().unwrap_or("?")
                );
                decide(&client, &setup, &ev).await?;
            }
            "approval_response" => println!(
                "[approval_response] {} by {}",
                ev["decision"].as_str().unwrap_or("?"),
                ev["key_id"].as_str().unwrap_or("nobody (expired)")
            ),
            "function_message" => {
                let m = &ev["message"];
                println!(
                    "[function_message] {}({}) {} -> {}",
                    m["function"].as_str().unwrap_or("?"),
                    m["args"],
                    m["status"].as_str().unwrap_or("?"),
                    m["result"]
                );
            }
            "assistant_message" | "internal_monologue" => {
                println!("[{kind}] {}", ev["message"].as_str().unwrap_or(""))
            }
            "done" => {
                println!("[done] {}", ev["stop_reason"].as_str().unwrap_or("?"));
                return Ok(());
            }
            _ => {}
        }
    }
    bail!("the stream ended before `done`")
}

/// `WEIR_DECISION`, else asked on stdin; posted for the request `ev`.
#[allow(clippy::print_stdout, reason = "the prompt is the example's output")]
async fn decide(client: &reqwest::Client, setup: &Setup, ev: &Value) -> anyhow::Result<()> {
    let decision = match std::env::var("WEIR_DECISION") {
        Ok(d) => d,
        Err(_) => {
            print!("approve? [y/N] ");
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            match line.trim() {
                "y" | "Y" | "yes" => "approve".to_owned(),
                _ => "deny".to_owned(),
            }
        }
    };
    let (run, approval) = (
        ev["run_id"].as_str().context("run_id")?,
        ev["approval_id"].as_str().context("approval_id")?,
    );
    let r = client
        .post(format!("{}/v1/runs/{run}/approvals/{approval}", setup.base))
        .bearer_auth(&setup.key)
        .json(&json!({"decision": decision, "reason": "decided by the approval_flow example"}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("deciding failed: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}
