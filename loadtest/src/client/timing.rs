//! What a streamed answer's events say about its timing: the time to the
//! first *content* (TTFT), the time to the first event the run or the
//! provider produced, and the end.
//!
//! Issue 15: the agent route of `/v1/chat/completions` sends
//! `{"role":"assistant","content":""}` as soon as the run is started (with
//! the Redis queue: right after enqueueing, before any worker claimed it),
//! and TTFT used to stop at the first chunk containing `"content"`, i.e.
//! there. Here the role chunk counts as nothing; TTFT is the first chunk
//! whose content is not empty. The same rules read a recorded byte sequence
//! in the unit tests, so what is measured is tested, not assumed.

use std::borrow::Cow;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;

/// Which kind of stream a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/chat/completions`, `chat.completion.chunk`s then `[DONE]`.
    OpenAi,
    /// `POST /v1/agents/{id}/messages` with `stream`: the run's own events
    /// (protocol/events.md) until `done`; no event of it is sent before the
    /// run produced it (the user's `user_message` is not repeated there).
    Agent,
}

/// Microseconds from the request's intended send time to each milestone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// First event the run (agent route) or the provider (OpenAI route)
    /// produced: on the OpenAI route the first chunk that is not the bare
    /// role chunk; on the agent route the first event of any type.
    pub first_event_us: u64,
    /// First non-empty content: a content delta, or a whole reply.
    pub ttft_us: u64,
    /// The end: `[DONE]`, or the run's `done`.
    pub total_us: u64,
    /// Non-empty content pieces received.
    pub chunks: u64,
}

/// What the reader has seen so far of one stream.
#[derive(Debug, Default)]
struct Seen {
    first_event: Option<u64>,
    ttft: Option<u64>,
    chunks: u64,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    message_type: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    /// A string on `assistant_message`; other types carry other shapes.
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

impl Seen {
    /// Takes one SSE `data` field that arrived `at` µs after the intended
    /// send time; `Ok(Some(timing))` once the stream is complete.
    fn observe(&mut self, route: Route, data: &str, at: u64) -> Result<Option<Timing>, String> {
        match route {
            Route::OpenAi => self.openai(data, at),
            Route::Agent => self.agent(data, at),
        }
    }

    fn openai(&mut self, data: &str, at: u64) -> Result<Option<Timing>, String> {
        if data == "[DONE]" {
            return self.finish(at).map(Some);
        }
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| format!("chunk: {e}"))?;
        if chunk.error.is_some() && chunk.choices.is_empty() {
            return Err(format!("error chunk: {data}"));
        }
        let delta = chunk.choices.first().and_then(|c| c.delta.as_ref());
        let content = delta.and_then(|d| d.content.as_deref()).unwrap_or("");
        if !content.is_empty() {
            self.content(at);
        } else if delta.is_some_and(|d| d.role.is_none()) || delta.is_none() {
            // A finish or usage chunk: produced by the answer, not content.
            self.first_event.get_or_insert(at);
        }
        // Else the bare role chunk: the gateway's, sent before any work.
        Ok(None)
    }

    fn agent(&mut self, data: &str, at: u64) -> Result<Option<Timing>, String> {
        let ev: Event<'_> = serde_json::from_str(data).map_err(|e| format!("event: {e}"))?;
        self.first_event.get_or_insert(at);
        match ev.message_type.as_ref() {
            "assistant_delta" if ev.delta.as_deref().is_some_and(|d| !d.is_empty()) => {
                self.content(at)
            }
            // A reply that came without deltas counts whole.
            "assistant_message"
                if self.chunks == 0
                    && ev
                        .message
                        .as_ref()
                        .and_then(|m| m.as_str())
                        .is_some_and(|m| !m.is_empty()) =>
            {
                self.content(at)
            }
            "error" => {
                return Err(format!("run error: {}", ev.code.as_deref().unwrap_or("?")));
            }
            "done" => {
                return match ev.stop_reason.as_deref() {
                    Some("end_turn") => self.finish(at).map(Some),
                    other => Err(format!("run done with stop_reason {other:?}")),
                };
            }
            _ => {}
        }
        Ok(None)
    }

    fn content(&mut self, at: u64) {
        self.chunks += 1;
        self.ttft.get_or_insert(at);
        self.first_event.get_or_insert(at);
    }

    fn finish(&self, at: u64) -> Result<Timing, String> {
        let ttft = self.ttft.ok_or("the stream ended before any content")?;
        Ok(Timing {
            first_event_us: self.first_event.unwrap_or(ttft),
            ttft_us: ttft,
            total_us: at,
            chunks: self.chunks,
        })
    }
}

/// Reads an SSE body to its end. `now_us` says how long after the intended
/// send time it is (called when each event is complete), so a test can
/// replay a recorded stream on its own clock.
pub async fn read<S, E>(
    route: Route,
    body: S,
    mut now_us: impl FnMut() -> u64,
) -> Result<Timing, String>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut events = eventsource_stream::EventStream::new(body);
    let mut seen = Seen::default();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| format!("stream: {e}"))?;
        if let Some(t) = seen.observe(route, &ev.data, now_us())? {
            return Ok(t);
        }
    }
    Err("the stream ended without its end marker".into())
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, rc::Rc};

    use super::*;

    /// Replays `(arrival ms, bytes)` through [`read`], each event stamped
    /// with the arrival time of the bytes that completed it.
    fn replay(route: Route, recorded: &[(u64, &str)]) -> Result<Timing, String> {
        let clock = Rc::new(Cell::new(0u64));
        let feed = clock.clone();
        let chunks: Vec<(u64, Bytes)> = recorded
            .iter()
            .map(|(ms, b)| (*ms, Bytes::from(b.to_string())))
            .collect();
        let body = futures::stream::iter(chunks).map(move |(ms, b)| {
            feed.set(ms * 1000);
            Ok::<_, std::convert::Infallible>(b)
        });
        futures::executor::block_on(read(route, body, || clock.get()))
    }

    fn chunk(delta: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n"
        )
    }

    /// The agent route's chunks as weir sends them with the Redis queue:
    /// the role chunk right after enqueueing (2 ms), the first token once
    /// a worker ran the model (9 ms). TTFT is 9 ms, not 2.
    #[test]
    fn openai_ttft_is_the_first_non_empty_content_not_the_role_chunk() {
        let role = chunk(r#"{"role":"assistant","content":""}"#);
        let a = chunk(r#"{"content":"Hel"}"#);
        let b = chunk(r#"{"content":"lo"}"#);
        let finish =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        // The first content event split over two reads: it completes at 9.
        let (a1, a2) = a.split_at(20);
        let t = replay(
            Route::OpenAi,
            &[
                (2, &role),
                (8, a1),
                (9, a2),
                (10, &b),
                (11, finish),
                (12, "data: [DONE]\n\n"),
            ],
        )
        .unwrap();
        assert_eq!(
            t,
            Timing {
                first_event_us: 9_000,
                ttft_us: 9_000,
                total_us: 12_000,
                chunks: 2
            }
        );
        // An empty content delta after the role chunk is not content either.
        let empty = chunk(r#"{"content":""}"#);
        let t = replay(
            Route::OpenAi,
            &[(1, &role), (3, &empty), (5, &b), (6, "data: [DONE]\n\n")],
        )
        .unwrap();
        assert_eq!((t.first_event_us, t.ttft_us, t.chunks), (3_000, 5_000, 1));
    }

    /// A provider's first chunk may carry the role and content together
    /// (the fake provider's does): that is content.
    #[test]
    fn openai_role_with_content_is_content() {
        let first = chunk(r#"{"role":"assistant","content":"tok0 "}"#);
        let t = replay(Route::OpenAi, &[(4, &first), (5, "data: [DONE]\n\n")]).unwrap();
        assert_eq!((t.first_event_us, t.ttft_us, t.chunks), (4_000, 4_000, 1));
    }

    #[test]
    fn openai_errors_and_early_ends_are_errors() {
        let role = chunk(r#"{"role":"assistant","content":""}"#);
        let err = "data: {\"error\":{\"message\":\"lost the run's event stream\"}}\n\n";
        assert!(replay(Route::OpenAi, &[(1, &role), (2, err)])
            .unwrap_err()
            .contains("error chunk"));
        assert!(
            replay(Route::OpenAi, &[(1, &role), (2, "data: [DONE]\n\n")])
                .unwrap_err()
                .contains("before any content")
        );
        assert!(replay(Route::OpenAi, &[(1, &role)])
            .unwrap_err()
            .contains("end marker"));
    }

    /// The agent route as the echo model runs: a monologue (the run's first
    /// event), deltas, the whole message, usage, done. Pings are comments.
    #[test]
    fn agent_route_first_event_ttft_and_done() {
        let ev = |seq: u32, body: &str| {
            format!("id: {seq}\nevent: message\ndata: {{\"seq\":{seq},\"run_id\":\"run-1\",{body}}}\n\n")
        };
        let mono = ev(
            1,
            r#""message_type":"internal_monologue","message":"I will answer.""#,
        );
        let empty = ev(2, r#""message_type":"assistant_delta","delta":"""#);
        let d1 = ev(3, r#""message_type":"assistant_delta","delta":"Say ""#);
        let d2 = ev(
            4,
            r#""message_type":"assistant_delta","delta":"something.""#,
        );
        let whole = ev(
            5,
            r#""message_type":"assistant_message","message":"Say something.""#,
        );
        let done = ev(6, r#""message_type":"done","stop_reason":"end_turn""#);
        let t = replay(
            Route::Agent,
            &[
                (4, &mono),
                (5, ": ping\n\n"),
                (6, &empty),
                (7, &d1),
                (8, &d2),
                (9, &whole),
                (10, &done),
            ],
        )
        .unwrap();
        assert_eq!(
            t,
            Timing {
                first_event_us: 4_000,
                ttft_us: 7_000,
                total_us: 10_000,
                chunks: 2
            }
        );
        // A run that failed is an error, whatever came before.
        let err = ev(
            3,
            r#""message_type":"error","code":"worker_lost","message":"x""#,
        );
        assert!(replay(Route::Agent, &[(4, &mono), (5, &err)])
            .unwrap_err()
            .contains("worker_lost"));
        let cancelled = ev(3, r#""message_type":"done","stop_reason":"cancelled""#);
        assert!(replay(Route::Agent, &[(4, &d1), (5, &cancelled)]).is_err());
    }
}
