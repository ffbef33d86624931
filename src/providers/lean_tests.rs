//! The lean client against a real HTTP/1 server on a loopback socket,
//! written by hand so that it can close connections when a test needs it.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

/// How the server treats a connection after answering.
#[derive(Clone, Copy, PartialEq)]
enum After {
    KeepOpen,
    /// Closes it without saying so (as a provider's idle timeout does).
    Close,
    /// Reads the request and closes the connection without answering
    /// (a provider that failed after it got the request).
    NoAnswer,
    /// Closes each connection as soon as it is accepted, unread.
    AtOnce,
}

/// A provider answering every `POST` with an SSE body of `events` events
/// and `[DONE]`, chunked; counts connections and requests.
struct Server {
    base: reqwest::Url,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn server(events: usize, after: After) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (conns.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            if after == After::AtOnce {
                continue;
            }
            let r = r.clone();
            tokio::spawn(async move {
                while read_request(&mut sock).await.is_some() {
                    r.fetch_add(1, Ordering::SeqCst);
                    if after == After::NoAnswer {
                        return;
                    }
                    let mut body = String::new();
                    for i in 0..events {
                        body.push_str(&format!("data: {{\"n\":{i}}}\n\n"));
                    }
                    body.push_str("data: [DONE]\n\n");
                    let out = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                        body.len()
                    );
                    if sock.write_all(out.as_bytes()).await.is_err() || after == After::Close {
                        return;
                    }
                }
            });
        }
    });
    Server {
        base: reqwest::Url::parse(&base).unwrap(),
        conns,
        requests,
    }
}

/// Reads one request (head and `content-length` body); `None` at EOF.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

async fn read_to_done(resp: Response<LeanBody>) -> String {
    let mut body = resp.into_body();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        // As the relay reads: it stops at `[DONE]`, not at the body's end.
        if text.ends_with("data: [DONE]\n\n") {
            break;
        }
    }
    text
}

async fn post(lean: &Lean) -> Result<Response<LeanBody>, String> {
    lean.post(&HeaderMap::new(), Bytes::from_static(b"{}"))
        .await
}

#[tokio::test]
async fn answers_stream_and_a_connection_serves_request_after_request() {
    let s = server(3, After::KeepOpen).await;
    let lean = Lean::for_url(&s.base, 1).expect("http is lean");
    for _ in 0..5 {
        let resp = post(&lean).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let text = read_to_done(resp).await;
        assert!(text.starts_with("data: {\"n\":0}\n\n"), "{text}");
        assert!(text.contains("data: {\"n\":2}\n\n"), "{text}");
    }
    assert_eq!(s.requests.load(Ordering::SeqCst), 5);
    assert_eq!(s.conns.load(Ordering::SeqCst), 1, "one pooled connection");
}

#[tokio::test]
async fn a_connection_the_provider_closed_is_not_used_again() {
    let s = server(1, After::Close).await;
    let lean = Lean::for_url(&s.base, 1).unwrap();
    for _ in 0..4 {
        let text = read_to_done(post(&lean).await.unwrap()).await;
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        // Let the close arrive before the next request takes the
        // connection from the pool.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.requests.load(Ordering::SeqCst), 4);
    assert_eq!(s.conns.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_request_the_provider_got_is_never_sent_again() {
    let s = server(1, After::NoAnswer).await;
    let lean = Lean::for_url(&s.base, 1).unwrap();
    let Err(err) = post(&lean).await else {
        panic!("an answer from a provider that sent none")
    };
    assert!(err.contains("closed before message completed"), "{err}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.requests.load(Ordering::SeqCst), 1, "sent once");
    assert_eq!(s.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_on_a_connection_closed_before_it_went_out_does_not_hang() {
    let s = server(1, After::AtOnce).await;
    let lean = Lean::for_url(&s.base, 1).unwrap();
    let mut idle = lean.connect().await.unwrap();
    // The provider's close arrives before the request is sent.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = idle
        .send
        .send_request(lean.request(&HeaderMap::new(), Bytes::from_static(b"{}")));
    let (out, closed) = tokio::time::timeout(Duration::from_secs(5), drive(&mut idle.conn, sent))
        .await
        .expect("the request ends when its connection does");
    assert!(closed);
    match out {
        None => {}
        Some(Err(e)) => assert!(e.is_canceled() || e.is_incomplete_message(), "{e}"),
        Some(Ok(_)) => panic!("an answer on a closed connection"),
    }
    // Through `post`, the closed connection is not the end of it: a new
    // one is tried (and closed too, which is then the error).
    let Err(err) = post(&lean).await else {
        panic!("an answer from a provider that closes every connection")
    };
    assert!(!err.is_empty());
    assert_eq!(s.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_answer_dropped_before_its_end_closes_its_connection() {
    let s = server(200_000, After::KeepOpen).await;
    let lean = Lean::for_url(&s.base, 1).unwrap();
    let mut body = post(&lean).await.unwrap().into_body();
    body.next().await.unwrap().unwrap();
    drop(body);
    let text = read_to_done(post(&lean).await.unwrap()).await;
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(s.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_provider_is_an_error_and_tls_is_not_lean() {
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = reqwest::Url::parse(&format!(
        "http://{}/v1/chat/completions",
        free.local_addr().unwrap()
    ))
    .unwrap();
    drop(free);
    let lean = Lean::for_url(&url, 1).unwrap();
    let Err(err) = post(&lean).await else {
        panic!("a closed port answered")
    };
    assert!(err.starts_with("cannot connect to 127.0.0.1:"), "{err}");
    let tls = reqwest::Url::parse("https://api.example.com/v1/chat/completions").unwrap();
    assert!(Lean::for_url(&tls, 1).is_none());
    let credentials = reqwest::Url::parse("http://u:p@127.0.0.1:9/v1/chat/completions").unwrap();
    assert!(
        Lean::for_url(&credentials, 1).is_none(),
        "reqwest sends them as basic auth"
    );
}

#[tokio::test]
async fn connections_idle_too_long_are_let_go_when_one_is_put_back() {
    let s = server(1, After::KeepOpen).await;
    let lean = Lean::for_url(&s.base, 1).unwrap();
    let pool = lean.pools.get().clone();
    pool.put(lean.connect().await.unwrap());
    pool.put(lean.connect().await.unwrap());
    if let Some(first) = pool.idle.lock().unwrap().first_mut() {
        first.since -= IDLE_FOR;
    }
    pool.put(lean.connect().await.unwrap());
    assert_eq!(pool.idle.lock().unwrap().len(), 2, "the oldest was let go");
    assert!(pool
        .idle
        .lock()
        .unwrap()
        .iter()
        .all(|i| i.since.elapsed() < IDLE_FOR));
}
