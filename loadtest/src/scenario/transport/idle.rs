//! Idle SSE streams per transport mode: the gateway's RSS before and after
//! opening `idle_streams` streams (and after each got a ping, so every
//! stream has written), per stream and per connection. Over HTTP/1.1 each
//! stream is a connection (the direct path); over HTTP/2 there are
//! `streams_per_conn` streams on each.

use std::time::Duration;

use serde_json::{json, Value};

use super::{start_gateway, Mode, Opts, Streams};
use crate::{
    gateway::Launch,
    report::{thousands, Report, Table},
    scenario::{create_agent, rss, wait_for},
    tls::Pki,
};

pub async fn run(
    launch: &Launch,
    extra: &[String],
    pki: &Pki,
    o: &Opts,
    report: &mut Report,
) -> anyhow::Result<Value> {
    let mut t = Table::new(
        format!(
            "{} idle SSE streams per mode ({} per HTTP/2 connection)",
            thousands(o.idle_streams as f64),
            o.streams_per_conn
        ),
        &[
            "mode",
            "connections",
            "RSS before",
            "RSS after",
            "per stream",
            "per connection",
            "pinged",
        ],
    );
    let mut rows = Vec::new();
    for &mode in &o.modes {
        let ping = format!("--sse-ping-secs={}", o.sse_ping_secs);
        let gw = start_gateway(launch, extra, pki, mode, o, &[ping]).await?;
        let agent = create_agent(&gw, 0).await?;
        // Lazily built state (key cache, the channel, TLS session state)
        // goes in the baseline.
        let warm = Streams::open(mode, &gw, &agent, 2, 2, 2, 0).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss(gw.pid)?;
        let s = Streams::open(
            mode,
            &gw,
            &agent,
            o.idle_streams,
            o.streams_per_conn,
            o.concurrency,
            2,
        )
        .await?;
        s.stats.start_ping_check();
        let stats = s.stats.clone();
        let opened = s.opened;
        wait_for(Duration::from_secs(o.sse_ping_secs * 2 + 10), || {
            stats.pinged() >= opened
        })
        .await;
        let after = rss(gw.pid)?;
        let delta = after.saturating_sub(before) as f64;
        let per_stream = delta / s.opened.max(1) as f64;
        let per_conn = delta / s.conns.max(1) as f64;
        let pinged = s.stats.pinged();
        t.row(vec![
            mode.name().into(),
            thousands(s.conns as f64),
            format!("{} KiB", thousands(before as f64)),
            format!("{} KiB", thousands(after as f64)),
            format!("{per_stream:.2} KiB"),
            format!("{per_conn:.2} KiB"),
            format!(
                "{} of {}",
                thousands(pinged as f64),
                thousands(s.opened as f64)
            ),
        ]);
        report.check(
            format!("idle {}: every stream opened and pinged", mode.name()),
            s.failed == 0 && s.opened == o.idle_streams as u64 && pinged >= s.opened,
        );
        rows.push(json!({
            "mode": mode.name(), "streams": s.opened, "failed": s.failed, "connections": s.conns,
            "streams_per_conn": if matches!(mode, Mode::H2c | Mode::H2Tls) { o.streams_per_conn } else { 1 },
            "rss_before_kib": before, "rss_after_kib": after,
            "per_stream_kib": per_stream, "per_conn_kib": per_conn, "pinged": pinged,
            "open_secs": s.open_secs, "first_error": s.stats.first_error(),
        }));
        s.close().await;
        warm.close().await;
    }
    report.tables.push(t);
    Ok(Value::Array(rows))
}
