//! A webhook receiver that verifies weir's signatures (Standard Webhooks:
//! protocol/webhooks.md), subscribes itself, and prints each event once.
//!
//! ```sh
//! weir serve --egress-allow 127.0.0.1/32 &      # let weir reach loopback
//! WEIR_URL=http://127.0.0.1:8080 WEIR_KEY=wk_... cargo run --example webhook_receiver
//! ```
//!
//! It listens on `RECEIVER_LISTEN` (default `127.0.0.1:8090`), subscribes
//! `http://<that>/hook` to every event type with `WEIR_KEY` (a key with the
//! `webhooks` scope) and keeps the secret the answer shows once. Each
//! delivery is checked: the HMAC-SHA256 of `id.timestamp.body` under the
//! secret, compared in constant time, and a timestamp within 5 minutes;
//! a bad one gets 400 (weir retries it, and a forger gets nothing). A
//! `webhook-id` seen before is acknowledged without printing it again:
//! delivery is at least once. `RECEIVER_EXIT_AFTER=n` exits after n
//! events (and deletes the subscription).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

/// Oldest (or newest) timestamp accepted, in seconds from now.
const TOLERANCE_SECS: u64 = 300;

#[derive(Clone)]
struct Receiver {
    key: Arc<Vec<u8>>,
    seen: Arc<Mutex<HashSet<String>>>,
    events: mpsc::Sender<Value>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("WEIR_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("WEIR_KEY").context("set WEIR_KEY to a key with the webhooks scope")?;
    let listen = std::env::var("RECEIVER_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let exit_after: usize = std::env::var("RECEIVER_EXIT_AFTER")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(
            &json!({"url": url, "events": ["run.completed", "run.failed", "run.cancelled",
            "approval.requested", "approval.resolved", "agent.created", "agent.updated",
            "agent.deleted"], "description": "examples/webhook_receiver.rs"}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let hook = created["id"].as_str().context("webhook id")?.to_owned();
    let secret = created["secret"].as_str().context("secret")?;
    let secret_key = STANDARD.decode(secret.trim_start_matches("whsec_"))?;
    let (tx, mut rx) = mpsc::channel(64);
    let state = Receiver {
        key: Arc::new(secret_key),
        seen: Arc::default(),
        events: tx,
    };
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!("subscribed {url} as {hook}; waiting for events");
    for _ in 0..exit_after {
        let Some(event) = rx.recv().await else { break };
        print(&event);
    }
    client
        .delete(format!("{base}/v1/webhooks/{hook}"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?;
    server.abort();
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the example shows what it receives")]
fn print(event: &Value) {
    println!(
        "{} {}",
        event["type"].as_str().unwrap_or("?"),
        event["data"]
    );
}

/// One delivery: 204 when it is genuine (printed the first time), 400 when not.
async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (id, ts, sigs) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    if !verify(&rx.key, id, ts, sigs, &body) {
        return StatusCode::BAD_REQUEST;
    }
    let first = rx.seen.lock().unwrap().insert(id.to_owned());
    if first {
        if let Ok(event) = serde_json::from_slice::<Value>(&body) {
            let _ = rx.events.send(event).await;
        }
    }
    StatusCode::NO_CONTENT
}

/// The Standard Webhooks check: a recent timestamp and one `v1,` signature
/// equal (in constant time) to the HMAC of `id.timestamp.body`.
fn verify(key: &[u8], id: &str, ts: &str, sigs: &str, body: &[u8]) -> bool {
    let Ok(sent) = ts.parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(sent) > TOLERANCE_SECS {
        return false;
    }
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    sigs.split(' ')
        .any(|s| bool::from(s.as_bytes().ct_eq(want.as_bytes())))
}
