//! HTTP/2 beyond plain requests, with hyper's own HTTP/2 client (reqwest
//! cannot send extended CONNECT, nor show a GOAWAY): a WebSocket opened
//! with extended CONNECT (RFC 8441) speaks weir's WebSocket protocol, and a
//! draining gateway sends GOAWAY (new streams refused) while a run's stream
//! in flight on the same connection finishes with `done`.

use std::{path::Path, sync::Arc, time::Duration};

use axum::body::Body;
use futures::{SinkExt, StreamExt};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{protocol::Role, Message},
    WebSocketStream,
};

use super::spawn_tls_gateway;
use crate::common::Api;

const WAIT: Duration = Duration::from_secs(10);

/// A TLS connection to `addr` trusting `ca`, offering `alpn` only.
pub async fn tls_stream(
    addr: std::net::SocketAddr,
    ca: &Path,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// An HTTP/2 connection over TLS (ALPN `h2`) to `addr`, trusting `ca`.
async fn h2_over_tls(addr: std::net::SocketAddr, ca: &Path) -> SendRequest<Body> {
    let tls = tls_stream(addr, ca, b"h2").await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

fn request(
    method: http::Method,
    addr: std::net::SocketAddr,
    path: &str,
    body: Body,
) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://{addr}{path}"))
        .body(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_h2_extended_connect() {
    let t = spawn_tls_gateway(|_| {}).await;
    let gw = &t.gw;
    let agent = gw.create_agent("ws-h2").await;
    let mut send = h2_over_tls(gw.addr, &t.pki.ca()).await;
    // One round trip first: the server's SETTINGS (ENABLE_CONNECT_PROTOCOL)
    // have arrived by the time its answer has.
    let r = send
        .send_request(request(
            http::Method::GET,
            gw.addr,
            "/healthz",
            Body::empty(),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut req = request(
        http::Method::CONNECT,
        gw.addr,
        &format!("/v1/ws?api_key={}", gw.key),
        Body::empty(),
    );
    req.headers_mut().insert(
        "sec-websocket-version",
        http::HeaderValue::from_static("13"),
    );
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = send.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.status(), 200, "RFC 8441: 200, not 101");
    let upgraded = hyper::upgrade::on(resp).await.expect("the stream upgraded");
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    ws.send(Message::text(
        json!({"type": "ping", "request_id": "p"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "pong", "request_id": "p"})
    );
    let msg =
        json!({"type": "user_message", "agent_id": agent, "message": "over h2", "request_id": 1});
    ws.send(Message::text(msg.to_string())).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let v = next_json(&mut ws).await;
        seen.push(v["message_type"].as_str().unwrap_or_default().to_owned());
        if v["message_type"] == "done" {
            break;
        }
    }
    assert!(seen.contains(&"assistant_message".to_owned()), "{seen:?}");
    // The same connection still serves requests beside the WebSocket.
    let r = send
        .send_request(request(
            http::Method::GET,
            gw.addr,
            "/healthz",
            Body::empty(),
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_goaway_and_lets_the_stream_in_flight_finish() {
    let mut t = spawn_tls_gateway(|_| {}).await;
    let addr = t.gw.addr;
    let key = t.gw.key.clone();
    let r =
        t.gw.post(
            "/v1/agents",
            json!({"name": "slow", "metadata": {"echo_delay_ms": 50}}),
        )
        .await;
    let agent = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut send = h2_over_tls(addr, &t.pki.ca()).await;
    let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    let body = json!({"message": words.join(" "), "stream": true, "stream_tokens": true});
    let mut req = request(
        http::Method::POST,
        addr,
        &format!("/v1/agents/{agent}/messages"),
        Body::from(body.to_string()),
    );
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    req.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = Body::new(resp.into_body()).into_data_stream();
    let mut text = String::new();
    while !text.contains("assistant_delta") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let refused_then_done = async {
        // GOAWAY: the connection takes no new stream...
        let mut refused = false;
        for _ in 0..100 {
            let req = request(http::Method::GET, addr, "/healthz", Body::empty());
            if send.send_request(req).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ...while the run's stream on it goes on to `done`.
        while let Some(chunk) = tokio::time::timeout(WAIT, body.next()).await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        refused
    };
    let ((), refused) = tokio::join!(t.gw.shutdown(), refused_then_done);
    assert!(refused, "new streams refused after GOAWAY");
    assert!(text.contains("event: done"), "the run finished: {text}");
    assert!(text.contains("w29"), "every token came: {text}");
}

/// Flow control (src/http/serve/h2.rs): a client that stops reading one
/// SSE stream (its window shut) stalls that stream only. The other stream
/// on the same connection gets every event of a long run, and the stalled
/// one, once read again, ends with `lagged` (its subscription fell behind
/// instead of weir buffering for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_h2_stream_does_not_stall_the_others_and_ends_lagged() {
    let t = spawn_tls_gateway(|c| c.edge.stream_buffer = 32).await;
    let gw = &t.gw;
    let r = gw
        .post(
            "/v1/agents",
            json!({"name": "long", "metadata": {"echo_delay_ms": 5}}),
        )
        .await;
    let agent = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tls = tls_stream(gw.addr, &t.pki.ca(), b"h2").await;
    // A 1 KiB window per stream: an unread stream shuts quickly.
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1024)
        .initial_connection_window_size(16 * 1024 * 1024)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let path = format!("/v1/agents/{agent}/events");
    let mut open = || {
        let mut req = request(http::Method::GET, gw.addr, &path, Body::empty());
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", gw.key).parse().unwrap(),
        );
        send.send_request(req)
    };
    let stalled = open().await.unwrap();
    let live = open().await.unwrap();
    assert_eq!(
        (stalled.status().as_u16(), live.status().as_u16()),
        (200, 200)
    );
    let words: Vec<String> = (0..600).map(|i| format!("word{i}")).collect();
    let body = json!({"message": words.join(" "), "stream_tokens": true});
    let run = gw
        .req(
            reqwest::Method::POST,
            &format!("/v1/agents/{agent}/messages"),
        )
        .json(&body)
        .send();
    let run = tokio::spawn(run);
    let mut live = Body::new(live.into_body()).into_data_stream();
    let mut text = String::new();
    while !text.contains("event: done") {
        let chunk = tokio::time::timeout(WAIT, live.next())
            .await
            .expect("the live stream keeps flowing")
            .unwrap_or_else(|| panic!("the live stream ended: {text}"))
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        run.await.unwrap().unwrap().status(),
        200,
        "the run finished"
    );
    assert!(text.contains("word599"), "every token on the live stream");
    assert!(!text.contains("lagged"), "the live stream did not lag");
    let mut stalled = Body::new(stalled.into_body()).into_data_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, stalled.next()).await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        text.contains("lagged"),
        "the stalled stream ended lagged: {text}"
    );
}
