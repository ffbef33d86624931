//! The writer of one socket: the only owner of the sink. It drains the
//! bounded outbox queue, sends the pings the keep-alive asks for (before
//! anything queued), and on close writes the last frames (the `lagged`
//! error with where each channel got to, the close frame with its code),
//! all bounded in time.

use std::{collections::HashMap, fmt::Display, sync::Arc};

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures::{Sink, SinkExt};
use serde_json::{Map, Value};

use super::{
    outbox::{CloseReason, Closer, Out, Outbox},
    protocol,
    queue::Recv,
    WsSettings,
};

/// The writer: the bounded queue and pings out, then the closing frames.
pub async fn write<Tx>(sink: &mut Tx, outbox: &Outbox, closer: &Closer, settings: &WsSettings)
where
    Tx: Sink<Message> + Unpin,
    Tx::Error: Display,
{
    // Last seq written per channel: what a lagged client resumes from.
    let mut delivered: HashMap<Arc<str>, u64> = HashMap::new();
    // A client that stops reading blocks a write; the closer still gets
    // through (a lagged feed or the idle timer fires it).
    tokio::select! {
        biased;
        _ = closer.closed() => {}
        Err(e) = send_all(sink, outbox, &mut delivered) => {
            tracing::debug!(error = %e, "websocket write failed");
            closer.close(CloseReason::Gone);
        }
    }
    // Boxed: it runs once, at the end, and inline its timer and frames
    // would size every idle socket's task.
    Box::pin(goodbye(sink, closer.reason(), &delivered, settings)).await;
}

/// Writes what the outbox gives until a write fails.
async fn send_all<Tx>(
    sink: &mut Tx,
    outbox: &Outbox,
    delivered: &mut HashMap<Arc<str>, u64>,
) -> Result<(), Tx::Error>
where
    Tx: Sink<Message> + Unpin,
{
    loop {
        let mut mark = None;
        let msg = match outbox.recv().await {
            // A ping comes before the queue (`queue::Recv`).
            Recv::Ping => {
                // An idle socket keeps no queue between pings.
                outbox.release();
                Message::Ping(Bytes::new())
            }
            Recv::Item(Out::Event { channel, seq, text }) => {
                mark = Some((channel, seq));
                Message::Text(text)
            }
            Recv::Item(Out::Reply(text)) => Message::Text(text),
        };
        sink.feed(msg).await?;
        // Handed to the sink: it leaves before any later frame, even if
        // the flush below is cut short, so the client will have it.
        if let Some((channel, seq)) = mark {
            delivered.insert(channel, seq);
        }
        // One flush for a burst: write out when nothing else is queued.
        if outbox.is_empty() {
            sink.flush().await?;
        }
    }
}

/// The last frames for `reason`, then the close, bounded in time.
async fn goodbye<Tx>(
    sink: &mut Tx,
    reason: Option<CloseReason>,
    delivered: &HashMap<Arc<str>, u64>,
    settings: &WsSettings,
) where
    Tx: Sink<Message> + Unpin,
    Tx::Error: Display,
{
    let last = closing_frames(reason, delivered);
    let frames = async {
        for msg in last {
            sink.send(msg).await?;
        }
        sink.close().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(settings.close_timeout, frames).await {
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
