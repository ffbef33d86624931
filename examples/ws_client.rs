//! Chat with a weir agent over the WebSocket `/v1/ws`.
//!
//! ```sh
//! WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... cargo run --example ws_client -- "what time is it?"
//! ```
//!
//! Connects with `?api_key=` (as a browser would: it cannot set headers on a
//! WebSocket), subscribes to the agent's channel, sends a `user_message`, and
//! prints every `agent_response` of that run until its `done`.
//! `WEIR_AGENT=agent-…` talks to an existing agent; otherwise one named
//! `ws-example` (model `echo`) is created over REST first.

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::Setup;

#[tokio::main]
#[allow(
    clippy::print_stdout,
    reason = "an example client: what it receives is its output"
)]
async fn main() -> anyhow::Result<()> {
    let setup = Setup::from_env()?;
    let (base, key, message) = (&setup.base, &setup.key, &setup.prompt);
    let agent = match std::env::var("WEIR_AGENT") {
        Ok(id) => id,
        Err(_) => {
            let client = reqwest::Client::new();
            setup.create_echo_agent(&client, "ws-example").await?
        }
    };

    let ws_url = format!("{}/v1/ws?api_key={key}", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
    let channel = format!("agent:{agent}");
    ws.send(Message::text(
        json!({"type": "subscribe", "channel": channel}).to_string(),
    ))
    .await?;
    ws.send(Message::text(
        json!({"type": "user_message", "agent_id": agent, "message": message, "request_id": "r1"})
            .to_string(),
    ))
    .await?;

    let mut run_id: Option<String> = None;
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t,
            Message::Close(frame) => bail!("closed by the server: {frame:?}"),
            _ => continue,
        };
        let frame: Value = serde_json::from_str(&text)?;
        match frame["type"].as_str() {
            Some("subscribed") => println!("[subscribed] {}", frame["channel"]),
            Some("run_started") => {
                run_id = frame["run_id"].as_str().map(str::to_owned);
                println!("[run_started] {}", frame["run_id"]);
            }
            Some("agent_response") if frame["run_id"].as_str() == run_id.as_deref() => {
                let kind = frame["message_type"].as_str().unwrap_or("");
                match kind {
                    "internal_monologue" | "assistant_message" => {
                        println!("[{kind}] {}", frame["message"].as_str().unwrap_or(""))
                    }
                    "function_message" => println!("[function_message] {}", frame["message"]),
                    "done" => {
                        println!("[done] {}", frame["stop_reason"].as_str().unwrap_or(""));
                        ws.close(None).await?;
                        return Ok(());
                    }
                    _ => {}
                }
            }
            Some("error") => bail!("error frame: {frame}"),
            _ => {}
        }
    }
    bail!("the socket closed before the run finished")
}
