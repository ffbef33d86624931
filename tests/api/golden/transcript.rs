//! The transcript a golden scenario writes, and the real clients that fill
//! it: reqwest for HTTP and SSE (the raw body kept byte for byte),
//! tokio-tungstenite for WebSocket frames and close codes.
//!
//! Layout of a transcript (readable as text, compared as text):
//!
//! ```text
//! ## a section title
//! > POST /v1/agents [key main]
//! > {"name":"x"}
//! < 201 Created
//! < content-type: application/json
//! ~~~
//! {"created_at":"<date>",…}
//! ~~~
//! ws> {"type":"ping"}
//! ws< {"type":"pong"}
//! ```
//!
//! (`ws>`/`ws<` lines come from [`super::socket`].)
//!
//! A body is printed verbatim between `~~~` lines with one newline added,
//! so a body that ends in a newline shows as a blank line before the fence.
//! SSE bodies keep their exact lines; only `: ping` comments after the first
//! are dropped (they come after 15 s of quiet, so whether one shows is
//! timing). Of the headers, those clients depend on are kept, in a fixed
//! order; `X-RateLimit-Remaining` is `<n>` (the bucket refills with time)
//! except on a 429, where it is 0.

use std::time::Duration;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use reqwest::{Method, Response};
use serde_json::Value;

use crate::common::{Api, TestGateway};

/// How long any read may wait for the next bytes or frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// Response headers recorded, in this order, when present.
const HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "x-accel-buffering",
    "retry-after",
    "allow",
    "www-authenticate",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
];

/// What one scenario sent and received, in order.
pub struct Transcript {
    text: String,
}

impl Transcript {
    pub fn new(title: &str) -> Self {
        Self {
            text: format!(
                "# weir golden transcript: {title}\n\
                 # Recorded from a real gateway by tests/api/golden; do not edit by hand.\n\
                 # Re-record: WEIR_GOLDEN=record cargo test --test api golden\n"
            ),
        }
    }

    pub fn into_text(self) -> String {
        self.text
    }

    pub fn section(&mut self, title: &str) {
        self.text.push_str(&format!("\n## {title}\n"));
    }

    /// A comment line (`# …`).
    pub fn note(&mut self, text: &str) {
        self.text.push_str(&format!("# {text}\n"));
    }

    pub fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// Sends `req`, reads the whole body and writes the exchange.
    pub async fn http(&mut self, gw: &TestGateway, req: Req) -> Captured {
        let shown = req.shown();
        let resp = req.send(gw).await;
        let head = head(&resp);
        let status = resp.status().as_u16();
        let sse = is_sse(&resp);
        let body = tokio::time::timeout(WAIT, resp.bytes())
            .await
            .expect("a whole body in time")
            .expect("a readable body")
            .to_vec();
        self.text.push_str(&shown);
        self.text.push_str(&head);
        let printed = if sse { sse_body(&body) } else { body.clone() };
        self.body(&printed);
        Captured { status, body }
    }

    /// Writes an opened stream as read so far: request, head, body.
    pub fn stream(&mut self, open: &Open) {
        self.text.push_str(&open.shown);
        self.text.push_str(&open.head);
        self.body(&sse_body(&open.raw));
    }

    /// A response's status line and recorded headers.
    pub fn head(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.text.push_str(&head_of(status, headers));
    }

    /// A body between fences (see the module docs).
    pub fn body(&mut self, body: &[u8]) {
        if body.is_empty() {
            self.text.push_str("(empty body)\n");
            return;
        }
        self.text.push_str("~~~\n");
        self.text.push_str(&String::from_utf8_lossy(body));
        self.text.push_str("\n~~~\n");
    }
}

/// A key as the transcript names it.
#[derive(Clone)]
pub struct Key {
    pub label: &'static str,
    pub secret: String,
}

/// A request to send and show.
pub struct Req {
    method: Method,
    path: String,
    key: Option<Key>,
    /// Name, value, and what the transcript shows of it.
    headers: Vec<(String, String, String)>,
    body: Option<Vec<u8>>,
    shown_body: Option<String>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            key: None,
            headers: Vec::new(),
            body: None,
            shown_body: None,
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A POST of `body` as compact JSON.
    pub fn post(path: impl Into<String>, body: &Value) -> Self {
        Self::new(Method::POST, path).body(body.to_string())
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Shows `text` instead of a body too big to print.
    pub fn shown_as(mut self, text: &str) -> Self {
        self.shown_body = Some(text.to_owned());
        self
    }

    pub fn key(mut self, key: &Key) -> Self {
        self.key = Some(key.clone());
        self
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_shown_as(name, value, value)
    }

    /// A header too long to print, shown as `shown`.
    pub fn header_shown_as(mut self, name: &str, value: &str, shown: &str) -> Self {
        self.headers
            .push((name.to_owned(), value.to_owned(), shown.to_owned()));
        self
    }

    fn shown(&self) -> String {
        let who = match &self.key {
            Some(k) => format!("key {}", k.label),
            None => "no key".to_owned(),
        };
        let mut out = format!("> {} {} [{who}]\n", self.method, self.path);
        for (n, _, shown) in &self.headers {
            out.push_str(&format!("> {n}: {shown}\n"));
        }
        match (&self.shown_body, &self.body) {
            (Some(s), _) => out.push_str(&format!("> {s}\n")),
            (None, Some(b)) => out.push_str(&format!("> {}\n", String::from_utf8_lossy(b))),
            (None, None) => {}
        }
        out
    }

    async fn send(self, gw: &TestGateway) -> Response {
        let mut rb = gw.client.request(self.method, gw.url(&self.path));
        if let Some(k) = &self.key {
            rb = rb.bearer_auth(&k.secret);
        }
        for (n, v, _) in &self.headers {
            rb = rb.header(n.as_str(), v.as_str());
        }
        if let Some(b) = self.body {
            rb = rb.body(b);
        }
        tokio::time::timeout(WAIT, rb.send())
            .await
            .expect("response head in time")
            .expect("request sent")
    }
}

/// A whole response, for the scenario's own assertions.
pub struct Captured {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `field` of the JSON body as a string.
    pub fn str(&self, field: &str) -> String {
        self.json()[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {}", self.text()))
            .to_owned()
    }
}

/// An SSE response being read, kept whole.
pub struct Open {
    shown: String,
    head: String,
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    pub raw: Vec<u8>,
}

impl Open {
    /// Sends `req` and keeps the response open (it must be a 200 SSE stream).
    pub async fn new(gw: &TestGateway, req: Req) -> Self {
        let shown = req.shown();
        let resp = req.send(gw).await;
        assert_eq!(resp.status(), 200, "stream {shown}");
        assert!(is_sse(&resp), "an SSE stream: {shown}");
        Self {
            shown,
            head: head(&resp),
            body: resp.bytes_stream().boxed(),
            raw: Vec::new(),
        }
    }

    /// Reads until `done(text so far)` holds at a frame boundary.
    pub async fn until(&mut self, done: impl Fn(&str) -> bool) {
        loop {
            let text = String::from_utf8_lossy(&self.raw);
            if text.ends_with("\n\n") && done(&text) {
                return;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("stream stalled: {}\n{text}", self.shown))
                .unwrap_or_else(|| panic!("stream ended early: {}\n{text}", self.shown))
                .expect("stream body");
            self.raw.extend_from_slice(&chunk);
        }
    }

    /// Reads until the server ends the body.
    pub async fn read_to_end(&mut self) {
        while let Some(chunk) = tokio::time::timeout(WAIT, self.body.next())
            .await
            .expect("stream ends in time")
        {
            self.raw.extend_from_slice(&chunk.expect("stream body"));
        }
    }

    /// The frames read so far, `: ping` comments left out.
    pub fn frames(&self) -> Vec<String> {
        frames(&self.raw)
    }
}

/// The frames of a raw SSE body (without their blank line), pings left out.
pub fn frames(raw: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .split("\n\n")
        .filter(|f| !f.is_empty() && *f != ": ping")
        .map(str::to_owned)
        .collect()
}

/// The `data:` line's value of a frame.
pub fn data(frame: &str) -> &str {
    frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data line in {frame:?}"))
}

/// The raw body without the `: ping` comments after the first frame (which
/// must be one: pings are the first bytes of every weir SSE response).
fn sse_body(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.is_empty() || text.starts_with(": ping\n\n"),
        "an SSE body starts with `: ping`: {text:?}"
    );
    let mut out = String::new();
    for (i, frame) in text.split_inclusive("\n\n").enumerate() {
        if i == 0 || frame != ": ping\n\n" {
            out.push_str(frame);
        }
    }
    out.into_bytes()
}

fn is_sse(resp: &Response) -> bool {
    resp.headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Status line and the recorded headers.
fn head(resp: &Response) -> String {
    head_of(resp.status(), resp.headers())
}

fn head_of(status: http::StatusCode, headers: &http::HeaderMap) -> String {
    let mut out = format!(
        "< {} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for name in HEADERS {
        for v in headers.get_all(*name) {
            let v = String::from_utf8_lossy(v.as_bytes());
            // What is left of the rate limit depends on when the requests
            // came (it refills by the millisecond), so it is kept only where
            // it is the point: a 429 for the rate itself says 0. A 429 for a
            // connection cap said 99999 or 99998 by the timing of the
            // handshakes before it.
            let v = match *name {
                "x-ratelimit-remaining" if status != 429 || v != "0" => "<n>".into(),
                _ => v,
            };
            out.push_str(&format!("< {name}: {v}\n"));
        }
    }
    out
}
