//! HTTP/1 on the wire, over raw sockets: the SSE GETs and the relayed
//! completions that weir writes to the socket itself (the direct path of
//! `src/http/serve`) and the hand-over to hyper around them. Exact framing,
//! the error envelope with keep-alive after it, a client that leaves
//! mid-stream, heads and bodies split across writes, pipelining.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    common::{eventually, spawn_gateway, Api, TestGateway, WeirProcess},
    fake_provider::FakeProvider,
    runs::{agent_with, get_json, wait_run, with_provider},
    streams::{run_to_end, setup},
};

const WAIT: Duration = Duration::from_secs(10);

/// One HTTP/1 client connection that reads exactly what the server wrote.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A response head: status and lower-cased header lines.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    async fn open(gw_addr: &str) -> Self {
        let tcp = TcpStream::connect(gw_addr).await.unwrap();
        Self {
            tcp,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.tcp.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads more into `buf`; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("bytes in time")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(end.len()).position(|w| w == end) {
                let out = self.buf[..i + end.len()].to_vec();
                self.buf.drain(..i + end.len());
                return out;
            }
            assert!(self.fill().await, "EOF before {end:?}");
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "EOF before {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    async fn head(&mut self) -> Head {
        let raw = String::from_utf8(self.take_until(b"\r\n\r\n").await).unwrap();
        let mut lines = raw.trim_end().split("\r\n");
        let status = lines.next().unwrap();
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
        Head {
            status: status[9..12].parse().unwrap(),
            headers: lines
                .map(|l| {
                    let (n, v) = l.split_once(": ").expect("name: value");
                    assert_eq!(n, n.to_ascii_lowercase(), "lower-case names");
                    (n.to_owned(), v.to_owned())
                })
                .collect(),
        }
    }

    /// One chunk's data; `None` for the last chunk (and its final CRLF).
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.take_until(b"\r\n").await;
        let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap();
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        let data = self.take(size).await;
        assert_eq!(self.take(2).await, b"\r\n", "CRLF after the chunk");
        (size > 0).then_some(data)
    }

    /// A content-length body.
    async fn body(&mut self, head: &Head) -> Vec<u8> {
        let n = head.get("content-length").expect("content-length");
        self.take(n.parse().unwrap()).await
    }

    /// Sends `request` and reads its answer: `status`, the connection kept
    /// (no `connection: close`); the answer's body.
    async fn kept(&mut self, request: &str, status: u16) -> Vec<u8> {
        self.send(request).await;
        let head = self.head().await;
        assert_eq!(head.status, status);
        assert_eq!(head.get("connection"), None);
        self.body(&head).await
    }

    /// A body of either framing (a relayed JSON answer is chunked: the
    /// provider's length is not passed on).
    async fn any_body(&mut self, head: &Head) -> Vec<u8> {
        if head.get("transfer-encoding") != Some("chunked") {
            return self.body(head).await;
        }
        let mut out = Vec::new();
        while let Some(data) = self.chunk().await {
            out.extend_from_slice(&data);
        }
        out
    }

    /// Whether the server closes the connection (EOF) with nothing more.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

fn sse_get(path: &str, key: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: weir\r\nauthorization: Bearer {key}\r\n{extra}\r\n")
}

fn addr(gw: &TestGateway) -> String {
    gw.addr.to_string()
}

/// A healthz on the same connection: hyper serves it after the direct path.
async fn healthz_on(conn: &mut Conn) {
    conn.send("GET /healthz HTTP/1.1\r\nhost: weir\r\n\r\n")
        .await;
    let head = conn.head().await;
    assert_eq!(head.status, 200);
    conn.body(&head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_get_gets_a_dated_chunked_stream_of_whole_frames() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.send(&sse_get(&format!("/v1/agents/{agent}/events"), &key, ""))
        .await;
    let head = conn.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    assert_eq!(head.get("cache-control"), Some("no-cache"));
    assert!(head.get("date").is_some_and(|d| d.ends_with(" GMT")));
    assert!(head.get("x-request-id").is_some());
    assert_eq!(head.get("content-length"), None);
    assert_eq!(conn.chunk().await.unwrap(), b": ping\n\n");
    let run = run_to_end(&gw, &key, &agent, json!({"message": "hi"})).await;
    let mut ids = Vec::new();
    loop {
        let data = String::from_utf8(conn.chunk().await.expect("stream open")).unwrap();
        // Each chunk is whole SSE frames (the writer never splits one).
        assert!(data.ends_with("\n\n"), "{data:?}");
        for frame in data.split_terminator("\n\n") {
            if let Some(id) = frame.strip_prefix("id: ") {
                ids.push(id.split('\n').next().unwrap().parse::<u64>().unwrap());
            }
        }
        if data.contains("event: done\n") && data.contains(&run) {
            break;
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_on_a_stream_path_gets_the_envelope_then_keep_alive() {
    let gw = spawn_gateway().await;
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.send(&sse_get("/v1/runs/run_x/stream", "wk_nope", ""))
        .await;
    let head = conn.head().await;
    assert_eq!(head.status, 401);
    assert_eq!(head.get("content-type"), Some("application/json"));
    assert_eq!(head.get("transfer-encoding"), None);
    assert!(head.get("date").is_some());
    let body: Value = serde_json::from_slice(&conn.body(&head).await).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        body["error"]["request_id"],
        head.get("x-request-id").unwrap()
    );
    healthz_on(&mut conn).await;
    healthz_on(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_stream_ends_and_the_connection_goes_on() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let run = run_to_end(&gw, &key, &agent, json!({"message": "hi"})).await;
    let path = format!("/v1/runs/{run}/stream");
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.send(&sse_get(&path, &key, "")).await;
    assert_eq!(conn.head().await.status, 200);
    let mut all = Vec::new();
    while let Some(data) = conn.chunk().await {
        all.extend(data);
    }
    assert!(String::from_utf8(all).unwrap().contains("event: done\n"));
    healthz_on(&mut conn).await;
    // `connection: close` from the client: said back, then the socket closes.
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.send(&sse_get(&path, &key, "connection: close\r\n"))
        .await;
    let head = conn.head().await;
    assert_eq!(head.get("connection"), Some("close"));
    while conn.chunk().await.is_some() {}
    assert!(conn.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_split_across_writes_work_on_both_paths() {
    let gw = spawn_gateway().await;
    let (key, agent) = setup(&gw, json!({})).await;
    let sse = sse_get(&format!("/v1/agents/{agent}/events"), &key, "");
    let rest = "GET /v1/agents HTTP/1.1\r\nhost: weir\r\nauthorization: Bearer ".to_owned()
        + &key
        + "\r\n\r\n";
    for (req, chunked) in [(sse, true), (rest, false)] {
        let mut conn = Conn::open(&addr(&gw)).await;
        let (a, b) = req.split_at(20);
        conn.send(a).await;
        // A real pause, on purpose: the server must see two reads.
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.send(b).await;
        let head = conn.head().await;
        assert_eq!(head.status, 200, "{req}");
        if chunked {
            assert_eq!(conn.chunk().await.unwrap(), b": ping\n\n");
        } else {
            let body: Value = serde_json::from_slice(&conn.body(&head).await).unwrap();
            assert!(body["data"].is_array(), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_no_longer_counted() {
    let proc = WeirProcess::serve().spawn().await;
    let client = reqwest::Client::new();
    let gauge = || async {
        let text = client
            .get(proc.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(r#"weir_connections_open{kind="sse"} "#))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or(0.0)
    };
    let agent = proc.create_agent("a").await;
    let mut conn = Conn::open(proc.host()).await;
    conn.send(&sse_get(
        &format!("/v1/agents/{agent}/events"),
        &proc.key,
        "",
    ))
    .await;
    assert_eq!(conn.head().await.status, 200);
    assert_eq!(conn.chunk().await.unwrap(), b": ping\n\n");
    assert_eq!(gauge().await, 1.0);
    drop(conn);
    if !eventually(|| async { gauge().await == 0.0 }).await {
        panic!("the SSE gauge stayed at {}", gauge().await);
    }
}

/// A POST head with `content-length: len` and the given extra header lines.
fn post_head(path: &str, key: &str, len: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: weir\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\n{extra}\r\n"
    )
}

impl Conn {
    /// Whether the server ends the connection, by EOF or by a reset (it
    /// resets when it closes with a body it did not read still arriving).
    async fn ends(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, self.tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => panic!("neither more bytes nor the end in time"),
        }
    }
}

/// A response sent before its request body was read (an edge rejection)
/// keeps the connection only if weir could read the rest of the body;
/// otherwise it says `connection: close`, or a pooling client's next
/// request races hyper's close (reqwest's `IncompleteMessage`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_left_unread_is_drained_or_the_response_says_close() {
    let gw = spawn_gateway().await;
    let body = json!({"name": "x"}).to_string();
    // Small and complete: drained, and the connection goes on.
    let mut conn = Conn::open(&addr(&gw)).await;
    for _ in 0..2 {
        conn.send(&(post_head("/v1/agents", "wk_nope", body.len(), "") + &body))
            .await;
        let head = conn.head().await;
        assert_eq!(head.status, 401);
        assert_eq!(head.get("connection"), None);
        conn.body(&head).await;
    }
    healthz_on(&mut conn).await;
    // Over the body limit: 413 at once, `connection: close`, then closed.
    let mut conn = Conn::open(&addr(&gw)).await;
    let len = 4 << 20;
    conn.send(&post_head("/v1/chat/completions", &gw.key, len, ""))
        .await;
    conn.send(&"x".repeat(1024)).await;
    let head = conn.head().await;
    assert_eq!(head.status, 413);
    assert_eq!(head.get("connection"), Some("close"));
    conn.body(&head).await;
    assert!(conn.ends().await);
    // Small but never finished: answered once the drain gives up.
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.send(&(post_head("/v1/agents", "wk_nope", 1000, "") + "{\"na"))
        .await;
    let head = conn.head().await;
    assert_eq!(head.status, 401);
    assert_eq!(head.get("connection"), Some("close"));
    conn.body(&head).await;
    assert!(conn.ends().await);
    // A client waiting for `100 Continue` is not asked for its body.
    let mut conn = Conn::open(&addr(&gw)).await;
    let expect = "expect: 100-continue\r\n";
    conn.send(&post_head("/v1/agents", "wk_nope", body.len(), expect))
        .await;
    let head = conn.head().await;
    assert_eq!(head.status, 401);
    assert_eq!(head.get("connection"), Some("close"));
    conn.body(&head).await;
    assert!(conn.ends().await);
    // A body the handler read keeps the connection (a 400 on bad JSON).
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.kept(&(post_head("/v1/agents", &gw.key, 5, "") + "{oops"), 400)
        .await;
    healthz_on(&mut conn).await;
}

/// An upload over the body limit gets its 413 and then a clean end: weir
/// reads and discards the rest instead of closing on unread bytes, which
/// would reset the connection under a client still sending (and a client
/// may lose an unread response to a reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_gets_its_413_then_a_clean_end() {
    let gw = spawn_gateway().await;
    let tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let len = 12 << 20;
    let head = post_head("/v1/chat/completions", &gw.key, len, "");
    // The whole upload, sent while the response is read; every write must
    // succeed (a reset would fail one).
    let upload = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..len / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    // Read late (a real wait, on purpose), as a client busy sending would:
    // a reset arriving first could cost the response.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, rd.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!("{e} after {:?}", String::from_utf8_lossy(&got)),
            Err(_) => panic!("no end in time"),
        }
    }
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("HTTP/1.1 413 "), "{got}");
    assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
    assert!(got.contains("payload_too_large"), "{got}");
    let _wr = upload
        .await
        .unwrap()
        .expect("the upload was read, not reset");
}

/// A streamed completion's request: head and JSON body.
fn completion(key: &str, stream: bool) -> (String, String) {
    let body = json!({"model": "upstream/fake-text", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    (post_head("/v1/chat/completions", key, body.len(), ""), body)
}

/// Reads a chunked SSE response to its last chunk; its text.
async fn streamed(conn: &mut Conn) -> String {
    let head = conn.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    assert!(head.get("date").is_some());
    let mut text = Vec::new();
    while let Some(data) = conn.chunk().await {
        text.extend_from_slice(&data);
    }
    String::from_utf8(text).unwrap()
}

/// One streamed completion on `conn`, relayed to its `[DONE]`.
async fn relay_one(conn: &mut Conn, key: &str) {
    let (head, body) = completion(key, true);
    conn.send(&(head + &body)).await;
    assert!(streamed(conn).await.ends_with("data: [DONE]\n\n"));
}

/// Relayed completions on one keep-alive connection (the streaming POSTs
/// weir serves itself, request after request): whole chunked streams, a
/// body that arrives in pieces, a JSON answer, an error
/// envelope that keeps the connection, then hyper's turn on the same
/// connection for a route of its own, and the relay still right there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_completions_keep_their_connection_request_after_request() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let mut conn = Conn::open(&addr(&gw)).await;
    for _ in 0..3 {
        let (head, body) = completion(&gw.key, true);
        conn.send(&(head + &body)).await;
        let text = streamed(&mut conn).await;
        assert!(text.contains("\"content\""), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    // The head, then the body in two writes with a pause between them.
    let (head, body) = completion(&gw.key, true);
    conn.send(&head).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.send(&body[..10]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.send(&body[10..]).await;
    assert!(streamed(&mut conn).await.ends_with("data: [DONE]\n\n"));
    // Not streamed: one JSON body.
    let (head, body) = completion(&gw.key, false);
    conn.send(&(head + &body)).await;
    let h = conn.head().await;
    assert_eq!(h.status, 200);
    let answer: Value = serde_json::from_slice(&conn.any_body(&h).await).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    // A bad key with a body larger than hyper drains (64 KiB): the
    // OpenAI-shaped envelope, and the connection goes on, which it does
    // only on the direct path (hyper's answer would say `close`).
    let body = json!({"model": "upstream/fake-text", "stream": true, "pad": "x".repeat(100 << 10),
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let head = post_head("/v1/chat/completions", "wk_nope", body.len(), "");
    let error: Value = serde_json::from_slice(&conn.kept(&(head + &body), 401).await).unwrap();
    assert!(error["error"]["message"].is_string(), "{error}");
    healthz_on(&mut conn).await;
    relay_one(&mut conn, &gw.key).await;
    // Six relayed to the provider (not the bad key's), none lost or repeated.
    assert_eq!(fp.requests().len(), 6);
}

/// A `connection: close` on a relayed completion is honoured after its
/// stream; two completions sent in one write (pipelined) are both
/// answered, in order; a client that leaves halfway through its body gets
/// nothing relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_completions_close_pipeline_and_stop_as_asked() {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let mut conn = Conn::open(&addr(&gw)).await;
    let (head, body) = completion(&gw.key, true);
    let head = head.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
    conn.send(&(head + &body)).await;
    let h = conn.head().await;
    assert_eq!(h.get("connection"), Some("close"));
    while conn.chunk().await.is_some() {}
    assert!(conn.closed().await);

    let mut conn = Conn::open(&addr(&gw)).await;
    let (head, body) = completion(&gw.key, true);
    let one = head.clone() + &body;
    let (head, body) = completion(&gw.key, false);
    conn.send(&(one + &head + &body)).await;
    assert!(streamed(&mut conn).await.ends_with("data: [DONE]\n\n"));
    let h = conn.head().await;
    assert_eq!(h.status, 200);
    conn.any_body(&h).await;
    assert_eq!(fp.requests().len(), 3);

    let mut conn = Conn::open(&addr(&gw)).await;
    let (head, body) = completion(&gw.key, true);
    conn.send(&(head + &body[..body.len() / 2])).await;
    drop(conn);
    // A completion after it is relayed; the half one never was.
    let mut conn = Conn::open(&addr(&gw)).await;
    relay_one(&mut conn, &gw.key).await;
    assert_eq!(fp.requests().len(), 4);
}

/// A relayed completion's body is read whole before routing, so an early
/// error keeps the connection whatever the body's size (hyper's path
/// closes past 64 KiB of unread body, `a_body_left_unread_…` above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_error_on_a_large_completion_keeps_the_connection() {
    let gw = spawn_gateway().await;
    let mut conn = Conn::open(&addr(&gw)).await;
    let body = format!(
        "{{\"model\":\"echo\",\"pad\":\"{}\"}}",
        "x".repeat(200 * 1024)
    );
    let request = post_head("/v1/chat/completions", "wk_nope", body.len(), "") + &body;
    conn.kept(&request, 401).await;
    healthz_on(&mut conn).await;
}

/// A client that leaves while its agent completion (not streamed: no byte
/// of the answer yet) is running cancels the run: the socket is watched
/// while the handler works, as hyper watches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_a_json_answer_cancels_the_run() {
    let gw = spawn_gateway().await;
    let agent = agent_with(&gw, json!({"metadata": {"echo_delay_ms": 100}})).await;
    let words = "a b c d e f g h i j k l m n o p q r s t";
    let body = json!({"model": agent, "messages": [{"role": "user", "content": words}]});
    let body = body.to_string();
    let mut conn = Conn::open(&addr(&gw)).await;
    conn.send(&(post_head("/v1/chat/completions", &gw.key, body.len(), "") + &body))
        .await;
    let runs = format!("/v1/agents/{agent}/runs");
    assert!(
        eventually(|| async { get_json(&gw, &runs).await["data"][0]["id"].is_string() }).await,
        "no run started"
    );
    drop(conn);
    let run_id = get_json(&gw, &runs).await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_run(&gw, &run_id).await["status"], "cancelled");
}
