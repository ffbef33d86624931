//! The writer of one socket: the only owner of the sink. It drains the
//! bounded outbox queue, pings the client, and on close writes the last
//! frames (the `lagged` error with where each channel got to, the close
//! frame with its code), all bounded in time.

use std::{collections::HashMap, fmt::Display, sync::Arc};

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, SinkExt};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{
    outbox::{CloseReason, Closer, Out},
    protocol,
    queue::Receiver,
    WsSettings,
};

/// The writer: the bounded queue and pings out, then the closing frames.
pub async fn write<Tx>(mut sink: Tx, mut rx: Receiver<Out>, closer: &Closer, settings: &WsSettings)
where
    Tx: Sink<Message> + Unpin,
    Tx::Error: Display,
{
    // Last seq written per channel: what a lagged client resumes from.
    let mut delivered: HashMap<Arc<str>, u64> = HashMap::new();
    let start = Instant::now() + settings.ping_every;
    let mut ping = tokio::time::interval_at(start, settings.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (msg, mark) = tokio::select! {
            biased;
            _ = closer.token.cancelled() => break,
            // Before the queue: a socket that only receives a steady flow
            // must still be pinged, or its pongs (its only frames) would stop
            // and the idle timeout would close a healthy client.
            _ = ping.tick() => (Message::Ping(Bytes::new()), None),
            out = rx.recv() => match out {
                Some(Out::Event { channel, seq, text }) => (Message::Text(text), Some((channel, seq))),
                Some(Out::Reply(text)) => (Message::Text(text), None),
                None => break,
            },
        };
        // A client that stops reading blocks this write; the closer still
        // gets through (a lagged forwarder or the idle timer fires it).
        let written = async {
            sink.feed(msg).await?;
            // Handed to the sink: it leaves before any later frame, even if
            // the flush below is cut short, so the client will have it.
            if let Some((channel, seq)) = mark {
                delivered.insert(channel, seq);
            }
            // One flush for a burst: write out when nothing else is queued.
            if rx.is_empty() {
                sink.flush().await?;
            }
            Ok::<(), Tx::Error>(())
        };
        let written = tokio::select! {
            biased;
            _ = closer.token.cancelled() => break,
            written = written => written,
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "websocket write failed");
            closer.close(CloseReason::Gone);
            break;
        }
    }
    let last = closing_frames(closer.reason(), &delivered);
    let goodbye = async {
        for msg in last {
            sink.send(msg).await?;
        }
        sink.close().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(settings.close_timeout, goodbye).await {
        tracing::debug!(error = %e, "websocket close failed");
    }
}

fn closing_frames(reason: Option<CloseReason>, delivered: &HashMap<Arc<str>, u64>) -> Vec<Message> {
    let close = |code: u16, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    match reason {
        Some(CloseReason::Shutdown { retry }) => vec![close(1001, &drain_reason(retry))],
        Some(CloseReason::Idle) => vec![close(1000, "idle timeout")],
        Some(CloseReason::TooBig) => vec![close(1009, "message too big")],
        Some(CloseReason::Lagged { channel }) => {
            crate::metrics::lagged_close(crate::metrics::Conn::Ws);
            let positions: Map<String, Value> = delivered
                .iter()
                .map(|(c, s)| (c.to_string(), Value::from(*s)))
                .collect();
            let last_seq = channel.as_ref().and_then(|c| delivered.get(c).copied());
            vec![
                Message::Text(protocol::lagged(channel.as_deref(), last_seq, &positions)),
                close(1013, "lagged"),
            ]
        }
        Some(CloseReason::ClientClosed | CloseReason::Gone) | None => Vec::new(),
    }
}

/// The close reason of a draining gateway: `draining` and, with a spread,
/// when to come back (`draining; retry in 2345 ms`), which clients parse
/// like an SSE `retry:`.
pub fn drain_reason(retry: Option<std::time::Duration>) -> String {
    match retry {
        Some(r) => format!("draining; retry in {} ms", r.as_millis()),
        None => "draining".to_owned(),
    }
}
