//! `connections`: N idle subscribers (SSE and WebSocket, mixed) on one
//! gateway, each from its own 127.0.0.0/8 source address. Reports the
//! gateway's RSS per connection (VmRSS before and after), the connect rate,
//! and that every connection still gets a ping once all are open.

use std::time::Duration;

use serde_json::json;

use super::{create_agent, rss, wait_for, Crowd};
use crate::{
    gateway::{self, Data, Launch},
    report::{thousands, Report, Table},
    sys,
};

/// Options of the `connections` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Connections to open.
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// Share of WebSockets, in percent (the rest are SSE).
    #[arg(long, default_value_t = 50)]
    pub ws_percent: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// The gateway's SSE ping interval (`--sse-ping-secs`).
    #[arg(long, default_value_t = 15)]
    pub sse_ping_secs: u64,
    /// The gateway's WebSocket ping interval (`--ws-ping-secs`).
    #[arg(long, default_value_t = 30)]
    pub ws_ping_secs: u64,
    /// RSS target per connection, KiB.
    #[arg(long, default_value_t = 8.0)]
    pub target_kib: f64,
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("connections");
    let (soft, hard) = sys::raise_nofile(o.connections as u64 * 2 + 4096)?;
    let mut args = vec![
        "--sse-ping-secs".to_owned(),
        o.sse_ping_secs.to_string(),
        "--ws-ping-secs".to_owned(),
        o.ws_ping_secs.to_string(),
    ];
    args.extend(extra.iter().cloned());
    let gw = gateway::start(launch, &Data::Embedded, &args).await?;
    let agent = create_agent(&gw, 0).await?;
    // One of each first, so lazily built state (key cache, pools, the
    // channel) is in the baseline and not charged to the connections.
    let warm = Crowd::open(gw.addr, &gw.key, &agent, 2, 50, 2, 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(gw.pid)?;
    let crowd = Crowd::open(
        gw.addr,
        &gw.key,
        &agent,
        o.connections,
        o.ws_percent,
        o.concurrency,
        2,
    )
    .await;
    let connect_rate = crowd.opened as f64 / crowd.open_secs.max(1e-9);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_open = rss(gw.pid)?;
    let fds = sys::fd_count(gw.pid);
    // Pings: every open connection must get one after all are open.
    crowd.stats.start_ping_check();
    let interval = o.sse_ping_secs.max(o.ws_ping_secs);
    let stats = crowd.stats.clone();
    let open_now = || stats.open.load(std::sync::atomic::Ordering::Relaxed).max(0) as u64;
    wait_for(Duration::from_secs(interval * 2 + 10), || {
        stats.pinged() >= open_now()
    })
    .await;
    let pinged = stats.pinged();
    let still_open = open_now();
    let after_ping = rss(gw.pid)?;
    let loader_rss = sys::rss_kib(std::process::id()).unwrap_or(0);
    let per_conn = (after_ping.saturating_sub(before)) as f64 / crowd.opened.max(1) as f64;
    let errors = crowd
        .stats
        .errors
        .load(std::sync::atomic::Ordering::Relaxed);
    let first_error = crowd.stats.first_error();
    let (opened, failed, open_secs) = (crowd.opened, crowd.failed, crowd.open_secs);
    crowd.close().await;
    warm.close().await;

    let mut t = Table::new(
        format!(
            "{} idle connections ({} % WebSocket) to one gateway",
            thousands(o.connections as f64),
            o.ws_percent
        ),
        &["figure", "value"],
    );
    let kib = |v: u64| format!("{} KiB", thousands(v as f64));
    t.row(vec![
        "opened / failed".into(),
        format!("{} / {}", thousands(opened as f64), failed),
    ]);
    t.row(vec![
        "connect rate".into(),
        format!("{}/s ({:.1} s)", thousands(connect_rate), open_secs),
    ]);
    t.row(vec!["gateway RSS before".into(), kib(before)]);
    t.row(vec!["gateway RSS, all open".into(), kib(after_open)]);
    t.row(vec!["gateway RSS, after pings".into(), kib(after_ping)]);
    t.row(vec![
        "RSS per connection".into(),
        format!("{per_conn:.2} KiB (target <= {} KiB)", o.target_kib),
    ]);
    t.row(vec![
        "pinged after all were open".into(),
        format!(
            "{} of {}",
            thousands(pinged as f64),
            thousands(still_open as f64)
        ),
    ]);
    t.row(vec!["gateway open fds".into(), thousands(fds as f64)]);
    t.row(vec![
        "errors (first)".into(),
        format!("{errors} ({})", first_error.as_deref().unwrap_or("-")),
    ]);
    t.row(vec!["load generator RSS".into(), kib(loader_rss)]);
    t.row(vec![
        "fd limit (soft/hard)".into(),
        format!("{soft}/{hard}"),
    ]);
    report.tables.push(t);
    report.data = json!({
        "connections": o.connections, "ws_percent": o.ws_percent, "opened": opened, "failed": failed,
        "connect_rate_per_s": connect_rate, "open_secs": open_secs,
        "rss_before_kib": before, "rss_open_kib": after_open, "rss_after_ping_kib": after_ping,
        "rss_per_conn_kib": per_conn, "pinged": pinged, "still_open": still_open, "gateway_fds": fds,
        "errors": errors, "first_error": first_error, "loader_rss_kib": loader_rss,
        "gateway": launch.describe(),
    });
    report.check(
        "every connection opened",
        failed == 0 && opened == o.connections as u64,
    );
    report.check(
        "every connection still open and pinged",
        still_open == opened && pinged >= still_open,
    );
    report.check(
        format!("target: <= {} KiB RSS per connection", o.target_kib),
        per_conn <= o.target_kib,
    );
    Ok(report.finish())
}
