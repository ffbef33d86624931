//! Chat with a weir agent over the WebSocket `/v1/ws`.
//!
//! ```sh
//! WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... cargo run --example ws_client -- "what time is it?"
//! ```
//!
//! Connects with `?api_key=` (as a browser would: it cannot set headers on a
//! WebSocket), subscribes to the agent's channel, sends a `user_message`, and
//! prints every `agent_response` of that run until its `done`. If the
//! socket closes first (a gateway draining for a restart closes with 1001
//! and `draining; retry in N ms`), it reconnects after that hint (else a
//! jittered backoff) and subscribes again from the last seq seen.
//! `WEIR_AGENT=agent-…` talks to an existing agent; otherwise one named
//! `ws-example` (model `echo`) is created over REST first.

use std::time::Duration;

use anyhow::bail;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{backoff, hint_of, Setup};

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
    let channel = format!("agent:{agent}");
    let mut follow = Follow::default();
    for attempt in 1..=10u32 {
        let (mut ws, _) = match tokio_tungstenite::connect_async(ws_url.as_str()).await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("[connect failed: {e}; retrying]");
                tokio::time::sleep(backoff(attempt, None)).await;
                continue;
            }
        };
        // Again after a reconnect: from the last seq seen, so nothing is
        // lost or printed twice.
        let mut sub = json!({"type": "subscribe", "channel": channel});
        if let Some(after) = follow.last_seq {
            sub["after"] = after.into();
        }
        ws.send(Message::text(sub.to_string())).await?;
        if follow.run_id.is_none() {
            ws.send(Message::text(
                json!({"type": "user_message", "agent_id": agent, "message": message, "request_id": "r1"})
                    .to_string(),
            ))
            .await?;
        }
        match follow.read(&mut ws).await? {
            None => return Ok(()),
            // A draining gateway says when to come back (randomised, so its
            // clients spread out); otherwise a jittered backoff.
            Some(hint) => {
                eprintln!("[disconnected; reconnecting]");
                tokio::time::sleep(backoff(attempt, hint)).await;
            }
        }
    }
    bail!("gave up reconnecting")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where the conversation got to.
#[derive(Default)]
struct Follow {
    run_id: Option<String>,
    last_seq: Option<u64>,
}

impl Follow {
    /// Prints the run's frames: `None` after its `done`, else (the socket
    /// closed first) the server's reconnect hint, if it gave one.
    #[allow(
        clippy::print_stdout,
        reason = "an example client: what it receives is its output"
    )]
    async fn read(&mut self, ws: &mut Socket) -> anyhow::Result<Option<Option<Duration>>> {
        while let Some(msg) = ws.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(frame)) => {
                    return Ok(Some(frame.and_then(|f| hint_of(&f.reason))));
                }
                Ok(_) => continue,
                Err(_) => return Ok(Some(None)),
            };
            let frame: Value = serde_json::from_str(&text)?;
            if let Some(seq) = frame["seq"].as_u64() {
                if self.last_seq.is_some_and(|last| seq <= last) {
                    continue;
                }
                self.last_seq = Some(seq);
            }
            match frame["type"].as_str() {
                Some("subscribed") => println!("[subscribed] {}", frame["channel"]),
                Some("run_started") => {
                    self.run_id = frame["run_id"].as_str().map(str::to_owned);
                    println!("[run_started] {}", frame["run_id"]);
                }
                Some("agent_response") if frame["run_id"].as_str() == self.run_id.as_deref() => {
                    let kind = frame["message_type"].as_str().unwrap_or("");
                    match kind {
                        "internal_monologue" | "assistant_message" => {
                            println!("[{kind}] {}", frame["message"].as_str().unwrap_or(""))
                        }
                        "function_message" => println!("[function_message] {}", frame["message"]),
                        "done" => {
                            println!("[done] {}", frame["stop_reason"].as_str().unwrap_or(""));
                            ws.close(None).await?;
                            return Ok(None);
                        }
                        _ => {}
                    }
                }
                Some("error") => bail!("error frame: {frame}"),
                _ => {}
            }
        }
        Ok(Some(None))
    }
}
