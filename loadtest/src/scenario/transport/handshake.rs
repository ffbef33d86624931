//! TLS handshakes per second on one gateway: `concurrency` clients each
//! connect (from its own source address), handshake, send one
//! `GET /healthz` with `connection: close` and read the answer to its end,
//! over and over for `secs`; once with every handshake a full one, once
//! resuming (TLS 1.3 tickets, which the gateway issues after the handshake:
//! reading the answer is what delivers them to the client). The latency is
//! the handshake's alone; the rate and the gateway's CPU (from /proc when
//! it runs as its own process) are per connection, request included.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{start_gateway, Mode, Opts};
use crate::{
    gateway::Launch,
    hist::Hist,
    report::{ms, thousands, Report, Table},
    sys,
    tls::Pki,
};

/// One variant's figures.
struct Outcome {
    resumed: bool,
    handshakes: u64,
    /// Handshakes that did resume a session.
    resumptions: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    latency: Hist,
    cpu_secs: Option<f64>,
}

pub async fn run(
    launch: &Launch,
    extra: &[String],
    pki: &Pki,
    o: &Opts,
    report: &mut Report,
) -> anyhow::Result<Value> {
    let gw = start_gateway(launch, extra, pki, Mode::H1Tls, o, &[]).await?;
    let mut outcomes = Vec::new();
    for resumed in [false, true] {
        let cpu0 = gw.own_pid().map(sys::cpu_secs);
        let mut out = measure(gw.addr, resumed, o.handshake_concurrency, o.handshake_secs).await;
        out.cpu_secs = cpu0
            .zip(gw.own_pid())
            .map(|(c0, pid)| sys::cpu_secs(pid) - c0);
        outcomes.push(out);
    }
    let mut t = Table::new(
        format!(
            "TLS connections on one gateway (handshake, GET /healthz, close), {} clients at once, {} s each",
            o.handshake_concurrency, o.handshake_secs
        ),
        &["handshake", "connections/s", "resumed", "handshake p50", "handshake p99", "gateway CPU/connection", "errors"],
    );
    let mut rows = Vec::new();
    for out in &outcomes {
        let rate = out.handshakes as f64 / out.secs.max(1e-9);
        let cpu_us = out.cpu_secs.map(|c| c * 1e6 / out.handshakes.max(1) as f64);
        let name = if out.resumed { "resumed" } else { "full" };
        t.row(vec![
            name.into(),
            thousands(rate),
            thousands(out.resumptions as f64),
            ms(out.latency.quantile_ms(0.5)),
            ms(out.latency.quantile_ms(0.99)),
            cpu_us.map_or("-".into(), |us| format!("{us:.0} µs")),
            out.errors.to_string(),
        ]);
        report.check(
            format!("handshake ({name}): handshakes completed, none failed"),
            out.handshakes > 0 && out.errors == 0,
        );
        report.check(
            format!(
                "handshake ({name}): {} resumed",
                if out.resumed { "most" } else { "none" }
            ),
            if out.resumed {
                out.resumptions * 2 > out.handshakes
            } else {
                out.resumptions == 0
            },
        );
        rows.push(json!({
            "variant": name, "handshakes": out.handshakes, "resumptions": out.resumptions,
            "secs": out.secs, "per_s": rate,
            "latency": out.latency.summary(), "cpu_us_per_handshake": cpu_us,
            "errors": out.errors, "first_error": out.first_error,
            "concurrency": o.handshake_concurrency,
        }));
    }
    report.tables.push(t);
    Ok(Value::Array(rows))
}

async fn measure(
    to: std::net::SocketAddr,
    resumed: bool,
    concurrency: usize,
    secs: f64,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..concurrency.max(1) {
        // One connector per client: a resuming client keeps its tickets.
        let connector = crate::tls::connector(&[b"http/1.1"], resumed);
        tasks.spawn(async move {
            let mut c = Counts::default();
            let mut i = w;
            while Instant::now() < deadline {
                match one(&connector, i, to).await {
                    Ok((us, resumed)) => {
                        c.n += 1;
                        c.resumed += u64::from(resumed);
                        c.hist.record(us);
                    }
                    Err(e) => {
                        c.errors += 1;
                        c.first.get_or_insert(e.to_string());
                    }
                }
                i += concurrency;
            }
            c
        });
    }
    let mut out = Outcome {
        resumed,
        handshakes: 0,
        resumptions: 0,
        errors: 0,
        first_error: None,
        secs: 0.0,
        latency: Hist::default(),
        cpu_secs: None,
    };
    while let Some(Ok(c)) = tasks.join_next().await {
        out.handshakes += c.n;
        out.resumptions += c.resumed;
        out.errors += c.errors;
        out.first_error = out.first_error.or(c.first);
        out.latency.merge(&c.hist);
    }
    out.secs = started.elapsed().as_secs_f64();
    out
}

/// One client's tallies.
#[derive(Default)]
struct Counts {
    n: u64,
    resumed: u64,
    errors: u64,
    first: Option<String>,
    hist: Hist,
}

/// One connection: the handshake (its time in µs, and whether it resumed),
/// then `GET /healthz` read to the close.
async fn one(
    connector: &tokio_rustls::TlsConnector,
    i: usize,
    to: std::net::SocketAddr,
) -> std::io::Result<(u64, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t0 = Instant::now();
    let tcp = crate::client::connect_from(i, to).await?;
    let mut tls = connector.connect(crate::tls::server_name(), tcp).await?;
    let us = t0.elapsed().as_micros() as u64;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut sink = Vec::with_capacity(512);
    tls.read_to_end(&mut sink).await?;
    if !sink.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("GET /healthz did not answer 200"));
    }
    Ok((us, resumed))
}
