//! After the first byte: a relayed stream read event by event, and what a
//! route's `mid_stream` policy does when its provider fails.
//!
//! Every event's `data` is checked (a malformed chunk or an `error` object
//! is a failure, as a transport error, an idle timeout or an end without
//! `[DONE]` are). Events pass as the same bytes (zero copy when a chunk
//! ends on an event boundary) until a switch. On a failure:
//!
//! - `mid_stream = "error"`: [`Piece::Failed`], which the relay sends as an
//!   error line and `[DONE]`: never a silent clean end.
//! - `mid_stream = "continue"`: the request goes to the route's next target
//!   with the text streamed so far appended as an assistant message (a
//!   prefill), and its events are rewritten to carry the first target's
//!   chunk `id`, `model` and `created`, so the client reads one completion.
//!   Not resumed: a tool call in flight, or a completion whose
//!   `finish_reason` was already sent; they fail as with `"error"`. A server
//!   that does not continue a trailing assistant message reads the partial
//!   text as context, and may repeat some of it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{stream, Stream, StreamExt};
use serde_json::Value;
use tokio::time::{timeout, Instant};

use super::event::{self, Event, Frames};
use super::sse::{data_of, events, take_frames};
use super::{
    attempt::{self, Opened},
    config::MidStream,
    provider::BodyError,
    route::Route,
};
use crate::metrics::{upstream_error, Upstream};

/// What the relay forwards.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// Whole SSE events, to send as they are, with what they say for
    /// metering (each event is parsed once, here).
    Frames(Frames),
    /// From here on, `provider` serves the stream.
    Switched(String),
    /// The stream failed for good: send an error line and `[DONE]`.
    Failed(String),
}

/// What the stream has said so far.
#[derive(Debug, Default)]
struct Seen {
    id: Option<String>,
    model: Option<String>,
    created: Option<i64>,
    /// The streamed text (kept with `mid_stream = "continue"` only).
    text: String,
    tool_calls: bool,
    finished: bool,
    /// Events now come from a later target, rewritten.
    switched: bool,
}

/// The relayed stream of `opened`, continuing on `route`'s next targets
/// when its policy says so. `body` is the request as sent.
pub fn pieces(
    route: std::sync::Arc<Route>,
    opened: Opened,
    body: Value,
) -> impl Stream<Item = Piece> + Send {
    async_stream::stream! {
        let keep_text = route.mid_stream == MidStream::Continue;
        let mut seen = Seen::default();
        let mut cur = opened;
        let mut switches = 0u32;
        loop {
            let provider = cur.target.provider.clone();
            let idle = provider.idle_timeout;
            let mut body_stream = stream::once(std::future::ready(Ok(cur.first.clone()))).chain(cur.rest);
            let mut pending = BytesMut::new();
            let (kind, message) = loop {
                let next = timeout(idle, body_stream.next()).await;
                let (out, end) = on_read(next, &mut pending, &mut seen, keep_text, idle);
                if let Some(out) = out {
                    yield Piece::Frames(out);
                }
                match end {
                    None => {}
                    Some(End::Done) => return,
                    Some(End::Failed(kind, message)) => break (kind, message),
                }
            };
            tracing::warn!(route = %route.name, provider = %provider.name, reason = %message, "relay stream failed after the first byte");
            upstream_error(Upstream::Relay, &provider.name, kind);
            provider.health.failure(std::time::Instant::now(), std::time::Duration::ZERO);
            let resumable = keep_text && !seen.tool_calls && !seen.finished && switches + 1 < route.attempts;
            if resumable {
                let n = (route.attempts - switches - 1) as usize;
                let plan: Vec<usize> = (1..=n).map(|i| (cur.index + i) % route.targets.len()).collect();
                let mut next = prefilled(&body, &seen.text);
                let deadline = Instant::now() + route.deadline;
                // Boxed: a switch is rare, and inline its future would
                // make every relayed stream's state (boxed per request as
                // the response body) several KiB larger.
                let open = Box::pin(attempt::open(&route, &plan, &mut next, Upstream::Relay, deadline));
                if let Ok(o) = open.await {
                    switches += 1;
                    seen.switched = true;
                    tracing::info!(route = %route.name, from = %provider.name, to = %o.target.provider.name, "stream continued on the next target");
                    yield Piece::Switched(o.target.provider.name.clone());
                    cur = o;
                    continue;
                }
            }
            yield Piece::Failed(message);
            return;
        }
    }
}

/// One provider's stream alone, with `mid_stream = "error"`: what
/// [`pieces`] does for a single target (its reading, for the fuzz tests).
pub fn single<S>(body: S, idle: Duration) -> impl Stream<Item = Piece> + Send
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
{
    async_stream::stream! {
        let mut body = std::pin::pin!(body);
        let (mut pending, mut seen) = (BytesMut::new(), Seen::default());
        loop {
            let next = timeout(idle, body.next()).await;
            let (out, end) = on_read(next, &mut pending, &mut seen, false, idle);
            if let Some(out) = out {
                yield Piece::Frames(out);
            }
            match end {
                None => {}
                Some(End::Done) => return,
                Some(End::Failed(_, message)) => { yield Piece::Failed(message); return; }
            }
        }
    }
}

/// How a read ended a target's stream.
enum End {
    Done,
    Failed(&'static str, String),
}

/// One read of a target's body: the whole events to forward, and the end
/// it reached, if any.
fn on_read(
    next: Result<Option<Result<Bytes, BodyError>>, tokio::time::error::Elapsed>,
    pending: &mut BytesMut,
    seen: &mut Seen,
    keep_text: bool,
    idle: Duration,
) -> (Option<Frames>, Option<End>) {
    match next {
        Ok(Some(Ok(chunk))) => {
            let Some(frames) = take_frames(pending, chunk) else {
                return (None, None);
            };
            let (out, failure, done) = inspect(frames, seen, keep_text);
            let end = match (failure, done) {
                (Some(f), _) => Some(End::Failed("malformed", f)),
                (None, true) => Some(End::Done),
                (None, false) => None,
            };
            ((!out.bytes.is_empty()).then_some(out), end)
        }
        Ok(None) => (
            None,
            Some(End::Failed(
                "broken",
                "the provider's stream ended before [DONE]".to_owned(),
            )),
        ),
        Ok(Some(Err(e))) => (
            None,
            Some(End::Failed(
                "broken",
                format!("the provider's stream broke: {e}"),
            )),
        ),
        Err(_) => (
            None,
            Some(End::Failed(
                "timeout",
                format!("the provider sent nothing for {} s", idle.as_secs()),
            )),
        ),
    }
}

/// `body` with the text streamed so far as a trailing assistant message.
fn prefilled(body: &Value, text: &str) -> Value {
    let mut next = body.clone();
    if !text.is_empty() {
        if let Some(m) = next.get_mut("messages").and_then(Value::as_array_mut) {
            m.push(serde_json::json!({"role": "assistant", "content": text}));
        }
    }
    next
}

/// Reads the events of `frames`: returns what to forward (with what its
/// events say, for metering), the failure (if an event is malformed or an
/// error) and whether `[DONE]` came.
fn inspect(frames: Bytes, seen: &mut Seen, keep_text: bool) -> (Frames, Option<String>, bool) {
    let mut rewritten: Option<BytesMut> = seen.switched.then(BytesMut::new);
    let mut out = Frames::default();
    for (a, b) in events(&frames) {
        let event = &frames[a..b];
        let data = data_of(event).map(<[u8]>::trim_ascii);
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            if let Some(w) = &mut rewritten {
                w.extend_from_slice(event);
            }
            continue;
        };
        if data == b"[DONE]" {
            out.bytes = match rewritten {
                Some(mut w) => {
                    w.extend_from_slice(event);
                    w.freeze()
                }
                None => frames.slice(..b),
            };
            return (out, None, true);
        }
        let e = match event::read(data, keep_text) {
            Ok(e) => e,
            Err(failure) => {
                out.bytes = match rewritten {
                    Some(w) => w.freeze(),
                    None => frames.slice(..a),
                };
                return (out, Some(failure), false);
            }
        };
        note(&e, seen, keep_text);
        match &mut rewritten {
            Some(w) => {
                let at = w.len();
                w.extend_from_slice(&rewrite(data, seen));
                out.count(&e, at, w.len());
            }
            None => out.count(&e, a, b),
        }
    }
    out.bytes = rewritten.map_or(frames, BytesMut::freeze);
    (out, None, false)
}

fn note(p: &Event<'_>, seen: &mut Seen, keep_text: bool) {
    if !seen.switched {
        if seen.id.is_none() {
            seen.id = p.id.as_deref().map(str::to_owned);
        }
        if seen.model.is_none() {
            seen.model = p.model.as_deref().map(str::to_owned);
        }
        seen.created = seen.created.or(p.created);
    }
    seen.finished |= p.finished;
    seen.tool_calls |= p.tool_calls;
    if keep_text {
        seen.text.push_str(&p.text);
    }
}

/// A later target's event as the first target's: its `id`, `model` and
/// `created`, and no second `role`.
fn rewrite(data: &[u8], seen: &Seen) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
        return Vec::new();
    };
    if let Some(id) = &seen.id {
        v["id"] = Value::from(id.as_str());
    }
    if let Some(model) = &seen.model {
        v["model"] = Value::from(model.as_str());
    }
    if let Some(created) = seen.created {
        v["created"] = Value::from(created);
    }
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            if let Some(d) = c.get_mut("delta").and_then(Value::as_object_mut) {
                d.remove("role");
            }
        }
    }
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"data: {\"id\":\"c1\",\"model\":\"m1\",\"created\":5,\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n";

    #[test]
    fn good_events_pass_untouched_and_a_malformed_one_stops_the_stream() {
        let mut seen = Seen::default();
        let frames = Bytes::from([A, b": ping\n\n"].concat());
        let (out, failure, done) = inspect(frames.clone(), &mut seen, true);
        assert_eq!(
            (out.bytes.as_ptr(), failure, done),
            (frames.as_ptr(), None, false)
        );
        assert_eq!(
            (seen.id.as_deref(), seen.text.as_str()),
            (Some("c1"), "Hel")
        );
        let bad = Bytes::from([A, b"data: {not json\n\n", b"data: [DONE]\n\n"].concat());
        let (out, failure, _) = inspect(bad, &mut seen, true);
        assert_eq!(&out.bytes[..], A);
        assert!(failure.unwrap().contains("malformed"));
        let err = Bytes::from_static(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        let (out, failure, _) = inspect(err, &mut seen, true);
        assert!(out.bytes.is_empty() && failure.unwrap().contains("overloaded"));
    }

    #[test]
    fn after_a_switch_events_carry_the_first_id_and_model() {
        let mut seen = Seen::default();
        inspect(Bytes::from_static(A), &mut seen, true);
        seen.switched = true;
        let b = b"data: {\"id\":\"other\",\"model\":\"m2\",\"created\":9,\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
        let (out, failure, done) = inspect(Bytes::from_static(b), &mut seen, true);
        assert!(failure.is_none() && done);
        let text = String::from_utf8(out.bytes.to_vec()).unwrap();
        let first: Value =
            serde_json::from_str(text.lines().next().unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(
            (
                first["id"].as_str(),
                first["model"].as_str(),
                first["created"].as_i64()
            ),
            (Some("c1"), Some("m1"), Some(5))
        );
        assert_eq!(
            first["choices"][0]["delta"],
            serde_json::json!({"content": "lo"})
        );
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(seen.text, "Hello");
    }

    #[test]
    fn the_prefill_is_a_trailing_assistant_message() {
        let body = serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});
        let next = prefilled(&body, "Hel");
        assert_eq!(
            next["messages"][1],
            serde_json::json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(prefilled(&body, ""), body);
    }
}
