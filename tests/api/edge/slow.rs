//! A stalled reader among 1,000 fast ones, on a real `weir serve` process:
//! the fast readers' latency does not move, the stalled one is closed with a
//! final `lagged` error carrying the last seq it was sent, the publisher is
//! never held back, and the gateway's memory stays bounded.
//!
//! Every reader tails the same agent's `/events`. The kernel buffers a lot
//! for a socket nobody reads (MBs on loopback), so first a few bulky runs
//! fill the stalled socket's buffers, before the fast readers join (they
//! would only pay for bytes that test nothing). Then, with 1,000 fast readers
//! on the channel, a run of ~10 small token events pushes the stalled stream
//! past `--stream-buffer 16`: it lags while the others are measured. A last
//! run, after the stalled stream is gone, is the baseline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::json;
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, sync::Barrier};

use crate::common::{Api, WeirProcess};

/// Fast readers (`EDGE_SLOW_READERS` overrides, for experiments).
fn reader_count() -> usize {
    std::env::var("EDGE_SLOW_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Milliseconds since the epoch of an event's `date` (RFC 3339, ms).
fn date_ms(frame: &str) -> Option<i128> {
    let at = frame.find("\"date\":\"")? + 8;
    let text = frame.get(at..at + 24)?;
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() / 1_000_000)
}

fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

/// A fast reader: per run (until `runs` `done`s), the delivery latency (ms)
/// of every `assistant_delta`.
async fn fast_reader(resp: reqwest::Response, runs: usize, start: Arc<Barrier>) -> Vec<Vec<i128>> {
    let mut body = resp.bytes_stream();
    let (mut buf, mut scanned) = (Vec::<u8>::new(), 0usize);
    let mut lat = vec![Vec::new()];
    start.wait().await;
    while lat.len() <= runs {
        let Some(Ok(chunk)) = body.next().await else {
            break;
        };
        buf.extend_from_slice(&chunk);
        // Only the new bytes are scanned for frame ends.
        while let Some(end) = buf[scanned.saturating_sub(1)..]
            .windows(2)
            .position(|w| w == b"\n\n")
        {
            let end = scanned.saturating_sub(1) + end;
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            scanned = 0;
            let frame = String::from_utf8_lossy(&frame);
            if frame.contains("event: assistant_delta") {
                if let (Some(d), Some(cur)) = (date_ms(&frame), lat.last_mut()) {
                    cur.push(now_ms() - d);
                }
            } else if frame.contains("event: done") {
                lat.push(Vec::new());
            }
        }
        scanned = buf.len();
    }
    lat.pop();
    assert_eq!(lat.len(), runs, "a fast reader saw every run end");
    lat
}

fn p99(mut v: Vec<i128>) -> i128 {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Runs the agent once (JSON answer: returns when the run ended).
async fn run_once(
    c: &reqwest::Client,
    base: &str,
    key: &str,
    agent: &str,
    words: usize,
    len: usize,
    tokens: bool,
) {
    let message = vec!["x".repeat(len); words].join(" ");
    let r = c
        .post(format!("{base}/v1/agents/{agent}/messages"))
        .bearer_auth(key)
        .json(&json!({"message": message, "stream_tokens": tokens}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Reads until the response head has arrived (the server subscribes the
/// stream before it answers): the bytes read so far.
async fn read_head(sock: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 512];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .expect("the response head in time")
            .expect("read");
        assert!(n > 0, "the stream was closed before its head");
        raw.extend_from_slice(&chunk[..n]);
    }
    raw
}

/// The stalled reader's raw HTTP bytes (`raw`: what was read before),
/// de-chunked, once it reads again.
async fn drain_raw(sock: &mut tokio::net::TcpStream, mut raw: Vec<u8>) -> String {
    let mut chunk = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_secs(2), sock.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!("read: {e}"),
        }
        if raw.ends_with(b"\r\n0\r\n\r\n") {
            break; // the end of the chunked body: the server ended the stream
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_as_lagged_without_slowing_1000_others() {
    let args = [
        "--stream-buffer",
        "16",
        "--max-sse-per-key",
        "5000",
        "--max-streams",
        "5000",
    ];
    let p = WeirProcess::serve().args(&args).spawn().await;
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let key = p
        .create_key(json!({"scopes": ["*"], "rpm": 1_000_000}))
        .await;
    let agent = p
        .create_agent_as(&key, json!({"metadata": {"echo_delay_ms": 10}}))
        .await;
    let events = format!("{}/v1/agents/{agent}/events", p.base);
    let rss_start = rss_kib(p.pid());

    // The stalled reader: it sends its request, then never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(p.host().parse().unwrap()).await.unwrap();
    let req = format!(
        "GET /v1/agents/{agent}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    stalled.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut stalled).await;
    // Fill its socket buffers (they took ~3.2 MB here): 3 runs of ~1.9 MB
    // in ~6 events each; what the socket does not take (fewer events than
    // --stream-buffer) waits in its subscription: it cannot lag yet.
    for _ in 0..3 {
        run_once(&c, &p.base, &key, &agent, 8, 120_000, false).await;
    }

    // 1,000 fast readers, connected in batches.
    let n = reader_count();
    let start = Arc::new(Barrier::new(n + 1));
    let mut readers = Vec::new();
    while readers.len() < n {
        let batch = (n - readers.len()).min(100);
        let opened =
            futures::future::join_all((0..batch).map(|_| c.get(&events).bearer_auth(&key).send()))
                .await;
        for r in opened {
            let r = r.expect("a fast reader connects");
            assert_eq!(r.status(), 200);
            readers.push(tokio::spawn(fast_reader(r, 2, start.clone())));
        }
    }
    start.wait().await;
    let rss_before = rss_kib(p.pid());

    // Run A: ~10 token events of ~350 bytes; the stalled stream lags here.
    let t0 = Instant::now();
    run_once(&c, &p.base, &key, &agent, 8, 8, true).await;
    let run_a = t0.elapsed();
    let rss_after = rss_kib(p.pid());

    // The stalled reader reads again: what it was sent, then one `lagged`
    // error naming the last seq it got, then the end of its stream.
    let text = drain_raw(&mut stalled, head).await;
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    let err_at = text
        .find("event: error\ndata: ")
        .expect("a final error frame");
    let data = text[err_at + 19..].lines().next().unwrap();
    let err: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(err["code"], "lagged", "{err}");
    assert_eq!(
        err["last_seq"].as_u64(),
        ids.last().copied(),
        "last_seq is the last event it was sent"
    );
    assert!(
        !text[err_at..].contains("\nid: "),
        "nothing after the error frame"
    );

    // Run B: the same, with no stalled reader at all: the baseline.
    let t1 = Instant::now();
    run_once(&c, &p.base, &key, &agent, 8, 8, true).await;
    let run_b = t1.elapsed();
    let (mut with, mut without, mut tokens) = (Vec::new(), Vec::new(), None);
    for r in readers {
        let lat = r.await.unwrap();
        // Every fast reader got every token of both runs (the echo reply
        // has a few more words than the 8 sent).
        let per_run = *tokens.get_or_insert(lat[0].len());
        assert!(
            per_run >= 8 && lat[0].len() == per_run && lat[1].len() == per_run,
            "{per_run} {} {}",
            lat[0].len(),
            lat[1].len()
        );
        with.extend_from_slice(&lat[0]);
        without.extend_from_slice(&lat[1]);
    }
    let (p99_with, p99_without) = (p99(with), p99(without));
    eprintln!(
        "slow consumer: {n} fast readers x {tokens:?} tokens; fast p99 {p99_with} ms with the stalled reader, {p99_without} ms without; run {run_a:?} vs {run_b:?}; stalled got {} events ({} bytes) then `lagged` at seq {:?}; gateway RSS {rss_start} KiB at start, {rss_before} KiB after the fill and 1000 connections, {rss_after} KiB after the lagging run",
        ids.len(),
        text.len(),
        err["last_seq"]
    );
    // Generous bounds (CI shares 2 cores with other tests): a stalled
    // reader that held anyone back would stop them, not slow them by 3x.
    assert!(
        p99_with <= 3 * p99_without + 250,
        "the fast readers' p99 moved: {p99_without} ms -> {p99_with} ms"
    );
    assert!(
        run_a < run_b * 3 + Duration::from_secs(2),
        "the publisher was not held back: {run_b:?} -> {run_a:?}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory bounded: {rss_before} KiB -> {rss_after} KiB"
    );
}
