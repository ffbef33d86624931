//! Followers for the `drain` scenario: SSE and WebSocket subscribers of
//! agent channels (follower `i` of agent [`agent_of`]`(i, N)`) that start
//! on gateway A and, when A drains, come back on B with their cursor after
//! the server's hint (SSE `retry:`, the WebSocket close reason `draining;
//! retry in N ms`), or at once when A gave none. Each checks its own seqs
//! (a gap or a repeat is counted) and records when A closed it and when B
//! took it back.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::agent_of;
use crate::client::{
    connect_from,
    event::{find, find_u64, Stats},
    sse, Kind,
};

/// What every follower shares.
pub struct Flock {
    /// Follower `i` follows `agents[agent_of(i, len)]`.
    pub agents: Vec<String>,
    pub key: String,
    pub a: SocketAddr,
    pub b: SocketAddr,
    /// Deliveries (and their latency) on B, after the move.
    pub on_b: Stats,
    pub opened: AtomicU64,
    pub back: AtomicU64,
    pub gaps: AtomicU64,
    pub repeats: AtomicU64,
    pub errors: Stats,
    /// When A's SIGTERM was sent.
    pub signalled: Mutex<Option<Instant>>,
    /// Seconds after the signal: A closed a follower / B took one back.
    pub closes: Mutex<Vec<f64>>,
    pub returns: Mutex<Vec<f64>>,
    pub stop: CancellationToken,
}

impl Flock {
    pub fn new(agents: Vec<String>, key: String, a: SocketAddr, b: SocketAddr) -> Arc<Self> {
        assert!(!agents.is_empty(), "a flock follows at least one agent");
        Arc::new(Self {
            agents,
            key,
            a,
            b,
            on_b: Stats::default(),
            opened: AtomicU64::new(0),
            back: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            repeats: AtomicU64::new(0),
            errors: Stats::default(),
            signalled: Mutex::new(None),
            closes: Mutex::default(),
            returns: Mutex::default(),
            stop: CancellationToken::new(),
        })
    }

    fn agent(&self, i: usize) -> &str {
        &self.agents[agent_of(i, self.agents.len())]
    }

    fn since_signal(&self) -> f64 {
        let at = *self.signalled.lock().unwrap_or_else(|e| e.into_inner());
        at.map_or(-1.0, |t| t.elapsed().as_secs_f64())
    }

    fn note(&self, list: &Mutex<Vec<f64>>) {
        let t = self.since_signal();
        list.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }

    /// Checks `seq` against the follower's last one.
    fn seq(&self, last: &mut u64, seq: u64) {
        if *last != 0 && seq > *last + 1 {
            self.gaps.fetch_add(1, Relaxed);
        } else if *last != 0 && seq <= *last {
            self.repeats.fetch_add(1, Relaxed);
            return;
        }
        *last = seq;
    }
}

/// Runs follower `i` (its source address number) until the flock stops;
/// `permit` (a handshake slot) is given back once it is open on A.
pub async fn follow(i: usize, kind: Kind, flock: Arc<Flock>, permit: OwnedSemaphorePermit) {
    let mut permit = Some(permit);
    let result = match kind {
        Kind::Sse => follow_sse(i, &flock, &mut permit).await,
        Kind::Ws => follow_ws(i, &flock, &mut permit).await,
    };
    if let Err(e) = result {
        if !flock.stop.is_cancelled() {
            flock.errors.error(format!("{}: {e:#}", kind.name()));
        }
    }
}

async fn follow_sse(i: usize, f: &Flock, permit: &mut Option<Permit>) -> anyhow::Result<()> {
    let path = format!("/v1/agents/{}/events", f.agent(i));
    let mut conn = sse::open(i, f.a, &path, &f.key).await?;
    f.opened.fetch_add(1, Relaxed);
    permit.take();
    let mut last = 0;
    let mut hint = None;
    loop {
        let frame = tokio::select! {
            _ = f.stop.cancelled() => return Ok(()),
            r = conn.next_frame() => r,
        };
        match frame {
            Ok(frame) => {
                if let Some(at) = find(&frame, b"retry: ") {
                    hint = find_u64(&frame[at..], b"retry: ");
                }
                if let Some(seq) = find_u64(&frame, b"id: ") {
                    f.seq(&mut last, seq);
                }
            }
            Err(sse::SseError::Ended) => break,
            Err(e) => return Err(e.into()),
        }
    }
    f.note(&f.closes);
    tokio::time::sleep(Duration::from_millis(hint.unwrap_or(0))).await;
    let path = format!("{path}?after={last}");
    let mut conn = sse::open(i, f.b, &path, &f.key).await?;
    f.back.fetch_add(1, Relaxed);
    f.note(&f.returns);
    loop {
        let frame = tokio::select! {
            _ = f.stop.cancelled() => return Ok(()),
            r = conn.next_frame() => r?,
        };
        if let Some(seq) = find_u64(&frame, b"id: ") {
            f.seq(&mut last, seq);
            if let Some(at) = find(&frame, b"data: ") {
                f.on_b.event(&frame[at + 6..]);
            }
        }
    }
}

type Permit = OwnedSemaphorePermit;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open_ws(
    i: usize,
    to: SocketAddr,
    f: &Flock,
    after: Option<u64>,
) -> anyhow::Result<Socket> {
    let tcp = connect_from(i, to).await?;
    let url = format!("ws://{to}/v1/ws?api_key={}", f.key);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let after = after.map_or(String::new(), |a| format!(r#","after":{a}"#));
    let sub = format!(
        r#"{{"type":"subscribe","channel":"agent:{}"{after}}}"#,
        f.agent(i)
    );
    ws.send(Message::text(sub)).await?;
    Ok(ws)
}

async fn follow_ws(i: usize, f: &Flock, permit: &mut Option<Permit>) -> anyhow::Result<()> {
    let mut ws = open_ws(i, f.a, f, None).await?;
    f.opened.fetch_add(1, Relaxed);
    permit.take();
    let mut last = 0;
    let hint = loop {
        let msg = tokio::select! {
            _ = f.stop.cancelled() => return Ok(()),
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if let Some(seq) = find_u64(t.as_bytes(), b"\"seq\":") {
                    f.seq(&mut last, seq);
                }
            }
            Some(Ok(Message::Close(c))) => {
                let reason = c.map(|c| c.reason.to_string()).unwrap_or_default();
                break find_u64(reason.as_bytes(), b"retry in ");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => break None,
        }
    };
    f.note(&f.closes);
    tokio::time::sleep(Duration::from_millis(hint.unwrap_or(0))).await;
    let mut ws = open_ws(i, f.b, f, Some(last)).await?;
    f.back.fetch_add(1, Relaxed);
    f.note(&f.returns);
    loop {
        let msg = tokio::select! {
            _ = f.stop.cancelled() => return Ok(()),
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if let Some(seq) = find_u64(t.as_bytes(), b"\"seq\":") {
                    f.seq(&mut last, seq);
                    f.on_b.event(t.as_bytes());
                }
            }
            Some(Ok(Message::Close(c))) => anyhow::bail!("B closed the socket: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("B ended the socket"),
        }
    }
}
