//! A raw SSE reader for the protocol tests: it keeps the exact bytes and
//! the exact lines of each frame, so framing (`: ping` first, `id:` /
//! `event:` / `data:` in that order, no `id:` on stream errors) is checked,
//! not just what an EventSource client would make of it.

use std::time::Duration;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use reqwest::Response;

/// How long a test waits for the next frame of a live stream.
const WAIT: Duration = Duration::from_secs(10);

/// One SSE frame as sent: its `id:`, `event:` and `data:` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// The line prefixes in order (`id`, `event`, `data`).
    pub fields: Vec<String>,
}

/// Reads raw SSE frames off a response, keeping the exact bytes.
pub struct SseReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    /// Every byte received so far.
    pub raw: Vec<u8>,
}

impl SseReader {
    /// Checks the SSE headers of sse.md and wraps the body.
    pub fn new(resp: Response) -> Self {
        assert_eq!(resp.status(), 200, "{}", resp.url());
        let h = resp.headers();
        assert!(
            h["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "{h:?}"
        );
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-accel-buffering"], "no");
        assert!(h.contains_key("x-request-id"));
        Self {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// The next frame that is not a comment; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let text =
                    String::from_utf8(self.buf.drain(..end + 2).collect()).expect("UTF-8 frame");
                match parse(text.trim_end_matches('\n')) {
                    Some(frame) => return Some(frame),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("next SSE bytes in time")?;
            let chunk = chunk.expect("SSE body");
            self.raw.extend_from_slice(&chunk);
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Frames until the stream ends.
    pub async fn all(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = self.next().await {
            out.push(f);
        }
        out
    }
}

/// A frame's fields; `None` for a comment-only frame (`: ping`).
fn parse(text: &str) -> Option<Frame> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: String::new(),
        fields: Vec::new(),
    };
    for line in text.split('\n') {
        if line.starts_with(':') {
            assert_eq!(line, ": ping", "the only comment is `: ping`");
            continue;
        }
        let (name, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("SSE line `{line}`"));
        match name {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => frame.data = value.to_owned(),
            other => panic!("unexpected SSE field `{other}`"),
        }
        frame.fields.push(name.to_owned());
    }
    (!frame.fields.is_empty()).then_some(frame)
}
