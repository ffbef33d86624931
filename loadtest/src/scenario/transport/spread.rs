//! Fan-out per transport mode: `subscribers` SSE streams on one agent's
//! channel (HTTP/1.1: a connection each; HTTP/2: `streams_per_conn` per
//! connection) while echo runs publish `rate` events/s for `secs`, as the
//! `fanout` scenario offers them. Deliveries/s, publish-to-delivery
//! latency, and the gateway's CPU per delivery: what framing every event
//! for HTTP/2 (and encrypting it) costs against HTTP/1.1 chunks.

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{start_gateway, Opts, Streams};
use crate::{
    gateway::Launch,
    report::{ms, thousands, Report, Table},
    scenario::{create_agent, publish::Publisher},
    sys,
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
            "{} subscribers per mode, {} events/s offered, {} s",
            thousands(o.subscribers as f64),
            o.rate,
            o.secs
        ),
        &[
            "mode",
            "connections",
            "deliveries/s",
            "p50",
            "p99",
            "p99.9",
            "gateway CPU",
            "CPU/delivery",
        ],
    );
    let mut rows = Vec::new();
    for &mode in &o.modes {
        let gw = start_gateway(launch, extra, pki, mode, o, &[]).await?;
        let agent = create_agent(&gw, o.delay_ms).await?;
        let s = Streams::open(
            mode,
            &gw,
            &agent,
            o.subscribers,
            o.streams_per_conn,
            o.concurrency,
            0,
        )
        .await?;
        let calibrated = Publisher::calibrate(&gw.url, &gw.key, &agent, o.words).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let del0 = s.stats.deliveries.load(Relaxed);
        s.stats.latency.snapshot();
        let cpu0 = gw.own_pid().map(sys::cpu_secs);
        let started = Instant::now();
        let publisher = calibrated.start(o.rate, Duration::from_secs(o.secs));
        tokio::time::sleep(Duration::from_secs(o.secs)).await;
        let secs = started.elapsed().as_secs_f64();
        let deliveries = s.stats.deliveries.load(Relaxed) - del0;
        let cpu = cpu0
            .zip(gw.own_pid())
            .map(|(c0, pid)| sys::cpu_secs(pid) - c0);
        let publisher_json = publisher.json();
        publisher.stop().await;
        let latency = s.stats.latency.snapshot();
        let errors = s.stats.errors.load(Relaxed);
        let per_s = deliveries as f64 / secs;
        let cpu_us = cpu.map(|c| c * 1e6 / deliveries.max(1) as f64);
        t.row(vec![
            mode.name().into(),
            thousands(s.conns as f64),
            thousands(per_s),
            ms(latency.quantile_ms(0.5)),
            ms(latency.quantile_ms(0.99)),
            ms(latency.quantile_ms(0.999)),
            cpu.map_or("-".into(), |c| format!("{:.0} %", c / secs * 100.0)),
            cpu_us.map_or("-".into(), |us| format!("{us:.2} µs")),
        ]);
        report.check(
            format!(
                "fanout {}: every subscriber opened, events delivered, no stream errors",
                mode.name()
            ),
            s.opened == o.subscribers as u64 && deliveries > 0 && errors == 0,
        );
        report.check(
            format!(
                "fanout {}: every run the publisher started ended well",
                mode.name()
            ),
            publisher_json["run_errors"] == 0,
        );
        rows.push(json!({
            "mode": mode.name(), "subscribers": s.opened, "connections": s.conns,
            "deliveries": deliveries, "secs": secs, "deliveries_per_s": per_s,
            "latency": latency.summary(), "gateway_cpu_secs": cpu, "cpu_us_per_delivery": cpu_us,
            "errors": errors, "first_error": s.stats.first_error(), "publisher": publisher_json,
            "load_average": sys::loadavg(),
        }));
        s.close().await;
    }
    report.tables.push(t);
    Ok(Value::Array(rows))
}
