//! `transport`: what TLS and HTTP/2 cost and buy (issue 17), in three
//! parts, each against fresh gateways:
//!
//! - `handshake` ([`handshake`]): TLS handshakes per second on one gateway,
//!   full and resumed, with the gateway's CPU per handshake.
//! - `idle` ([`idle`]): the gateway's RSS per idle SSE stream, and per
//!   connection, for each transport mode: HTTP/1.1 (one stream per
//!   connection, the direct path), over TLS, and HTTP/2 (h2c and over TLS)
//!   with `--streams-per-conn` streams on each connection (100 by default,
//!   the per-connection limit browsers meet).
//! - `fanout` ([`spread`]): S subscribers on one agent channel while echo
//!   runs publish, per mode: deliveries/s, latency p50/p99 from each event's
//!   `date`, and the gateway's CPU per delivery.
//!
//! Modes: `h1` (plain HTTP/1.1), `h1-tls`, `h2c` (prior knowledge), `h2-tls`
//! (ALPN). The certificate is a throwaway ECDSA P-256 one ([`crate::tls`]).

mod handshake;
mod idle;
mod spread;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use serde_json::json;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    client::{event::Stats, h2, sse},
    gateway::{self, Data, Gateway, Launch},
    report::Report,
    tls::Pki,
};

/// How subscribers reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    H1,
    H1Tls,
    H2c,
    H2Tls,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::H1 => "HTTP/1.1",
            Self::H1Tls => "HTTP/1.1 + TLS",
            Self::H2c => "HTTP/2 (h2c)",
            Self::H2Tls => "HTTP/2 + TLS",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Self::H1Tls | Self::H2Tls)
    }

    fn h2(self) -> bool {
        matches!(self, Self::H2c | Self::H2Tls)
    }
}

/// Options of the `transport` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Parts to run: handshake, idle, fanout (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "handshake,idle,fanout")]
    pub parts: Vec<String>,
    /// Transport modes for `idle` and `fanout`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "h1,h1-tls,h2c,h2-tls"
    )]
    pub modes: Vec<Mode>,
    /// Seconds of handshakes measured (each of full and resumed).
    #[arg(long, default_value_t = 10.0)]
    pub handshake_secs: f64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 32)]
    pub handshake_concurrency: usize,
    /// Idle SSE streams per mode.
    #[arg(long, default_value_t = 10_000)]
    pub idle_streams: usize,
    /// Streams per HTTP/2 connection (`idle` and `fanout`).
    #[arg(long, default_value_t = 100)]
    pub streams_per_conn: usize,
    /// The gateway's SSE ping interval while idle streams are measured.
    #[arg(long, default_value_t = 5)]
    pub sse_ping_secs: u64,
    /// Subscribers of the fan-out part.
    #[arg(long, default_value_t = 9_000)]
    pub subscribers: usize,
    /// Events offered per second in the fan-out part.
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Seconds of publishing measured per mode.
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Gap between an echo run's tokens.
    #[arg(long, default_value_t = 10)]
    pub delay_ms: u64,
    /// Words per run message.
    #[arg(long, default_value_t = 50)]
    pub words: usize,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("transport");
    crate::sys::raise_nofile((o.idle_streams.max(o.subscribers) as u64) * 2 + 4096)?;
    let pki = Pki::make()?;
    let mut data = json!({"options": format!("{o:?}")});
    for part in &o.parts {
        let figures = match part.as_str() {
            "handshake" => handshake::run(launch, extra, &pki, o, &mut report).await?,
            "idle" => idle::run(launch, extra, &pki, o, &mut report).await?,
            "fanout" => spread::run(launch, extra, &pki, o, &mut report).await?,
            other => anyhow::bail!("unknown part `{other}` (handshake, idle, fanout)"),
        };
        data[part.as_str()] = figures;
    }
    report.data = data;
    Ok(report.finish())
}

/// A gateway for `mode`: TLS flags when it has TLS, room for the streams
/// per connection, and `args`.
pub async fn start_gateway(
    launch: &Launch,
    extra: &[String],
    pki: &Pki,
    mode: Mode,
    o: &Opts,
    args: &[String],
) -> anyhow::Result<Gateway> {
    let mut all = extra.to_vec();
    if mode.tls() {
        all.extend(pki.gateway_args());
    }
    all.push(format!(
        "--http2-max-streams={}",
        o.streams_per_conn.max(100)
    ));
    all.extend(args.iter().cloned());
    gateway::start(launch, &Data::Embedded, &all).await
}

/// Open SSE subscribers of one agent, in one mode, counted into one
/// [`Stats`].
pub struct Streams {
    pub stats: Arc<Stats>,
    pub opened: u64,
    pub failed: u64,
    /// Connections they use.
    pub conns: usize,
    pub open_secs: f64,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Streams {
    /// Opens `n` streams to `agent` on `gw` as `mode` says (HTTP/2:
    /// `per_conn` per connection), `concurrency` at a time; `first` numbers
    /// their source addresses.
    pub async fn open(
        mode: Mode,
        gw: &Gateway,
        agent: &str,
        n: usize,
        per_conn: usize,
        concurrency: usize,
        first: usize,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let path: Arc<str> = format!("/v1/agents/{agent}/events").into();
        let key: Arc<str> = gw.key.as_str().into();
        let authority: Arc<str> = gw.addr.to_string().into();
        let tls = mode.tls().then(|| {
            let alpn: &[u8] = if mode.h2() { b"h2" } else { b"http/1.1" };
            crate::tls::connector(&[alpn], true)
        });
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        let per_conn = if mode.h2() { per_conn.max(1) } else { 1 };
        let conns = n.div_ceil(per_conn);
        for c in 0..conns {
            let h2 = match mode.h2() {
                true => Some(h2::connect(first + c, gw.addr, tls.as_ref()).await?),
                false => None,
            };
            for s in 0..per_conn.min(n - c * per_conn) {
                let permit = gate.clone().acquire_owned().await?;
                let counts = counts.clone();
                let ready = move |opened: bool| {
                    let c = if opened { &counts.0 } else { &counts.1 };
                    c.fetch_add(1, Ordering::SeqCst);
                    drop(permit);
                };
                let (stats, stop, path, key) =
                    (stats.clone(), stop.clone(), path.clone(), key.clone());
                match &h2 {
                    Some(h) => tasks.spawn(h2::subscribe(
                        h.clone(),
                        authority.clone(),
                        path,
                        key,
                        stats,
                        stop,
                        ready,
                    )),
                    None => tasks.spawn(sse::subscribe_over(
                        first + c + s,
                        gw.addr,
                        tls.clone(),
                        path,
                        key,
                        stats,
                        stop,
                        ready,
                    )),
                };
            }
        }
        let _all = gate.acquire_many(concurrency.max(1) as u32).await?;
        Ok(Self {
            stats,
            opened: counts.0.load(Ordering::SeqCst),
            failed: counts.1.load(Ordering::SeqCst),
            conns,
            open_secs: started.elapsed().as_secs_f64(),
            stop,
            tasks,
        })
    }

    /// Closes every stream and waits for them.
    pub async fn close(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
