//! `soak`: S open streams with steady traffic and a little churn for a
//! configurable time; the gateway's RSS is sampled every interval and the
//! run passes only if RSS is flat: after the warm-up (the first fifth), the
//! least-squares trend over the run may add at most max(2 %, 4 MiB).

use std::{
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{create_agent, publish::Publisher, rss, Crowd};
use crate::{
    gateway::{self, Data, Launch},
    report::{ms, thousands, Report, Table},
    sys,
};

/// Options of the `soak` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Open streams (SSE and WebSocket).
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    #[arg(long, default_value_t = 50)]
    pub ws_percent: u32,
    /// Events offered per second while soaking (as `fanout --rate`).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Streams closed and reopened per second (0: none).
    #[arg(long, default_value_t = 10)]
    pub churn: usize,
    /// How long to soak, seconds.
    #[arg(long, default_value_t = 600)]
    pub secs: u64,
    /// RSS sampling interval, seconds.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
}

/// Whether `samples` (seconds, KiB) are flat after the warm-up; returns the
/// verdict and the trend's growth over the measured part in KiB.
pub fn flat(samples: &[(f64, u64)]) -> (bool, f64) {
    let skip = samples.len() / 5;
    let s = &samples[skip..];
    if s.len() < 2 {
        return (true, 0.0);
    }
    let n = s.len() as f64;
    let mx = s.iter().map(|p| p.0).sum::<f64>() / n;
    let my = s.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let cov: f64 = s.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    let var: f64 = s.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    let growth = slope * (s[s.len() - 1].0 - s[0].0);
    (growth <= (my * 0.02).max(4096.0), growth)
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("soak");
    sys::raise_nofile(o.streams as u64 * 2 + 4096)?;
    let delay_ms = 10;
    let gw = gateway::start(launch, &Data::Embedded, extra).await?;
    let agent = create_agent(&gw, delay_ms).await?;
    let crowd = Crowd::open(gw.addr, &gw.key, &agent, o.streams, o.ws_percent, 256, 0).await;
    let publisher = Publisher::calibrate(&gw.url, &gw.key, &agent, 50)
        .await?
        .start(o.rate, Duration::from_secs(o.secs));
    let started = Instant::now();
    let mut samples = vec![(0.0, rss(gw.pid)?)];
    let mut next_sample = Duration::from_secs(o.sample_secs);
    let mut churned = 0usize;
    let mut churn_failed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(o.secs) {
        tick.tick().await;
        if o.churn > 0 {
            // Short-lived extra streams: open, receive a little, close.
            let c = Crowd::open(
                gw.addr,
                &gw.key,
                &agent,
                o.churn,
                o.ws_percent,
                o.churn,
                o.streams + churned,
            )
            .await;
            churn_failed += c.failed;
            churned += o.churn;
            c.close().await;
        }
        if started.elapsed() >= next_sample {
            samples.push((started.elapsed().as_secs_f64(), rss(gw.pid)?));
            next_sample += Duration::from_secs(o.sample_secs);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let publisher_json = publisher.json();
    publisher.stop().await;
    let deliveries = crowd.stats.deliveries.load(Relaxed);
    let still_open = crowd.stats.open.load(Relaxed).max(0) as u64;
    let errors = crowd.stats.errors.load(Relaxed);
    let latency = crowd.stats.latency.snapshot();
    let first_error = crowd.stats.first_error();
    let (opened, failed) = (crowd.opened, crowd.failed);
    crowd.close().await;
    let (ok, growth) = flat(&samples);

    let mut t = Table::new(
        format!(
            "{} streams for {secs:.0} s, {} events/s, {} streams/s churn",
            thousands(o.streams as f64),
            o.rate,
            o.churn
        ),
        &["t (s)", "gateway RSS"],
    );
    for (at, kib) in &samples {
        t.row(vec![
            format!("{at:.0}"),
            format!("{} KiB", thousands(*kib as f64)),
        ]);
    }
    report.tables.push(t);
    let mut s = Table::new("soak summary", &["figure", "value"]);
    s.row(vec![
        "trend after warm-up".into(),
        format!("{:+.0} KiB over the run", growth),
    ]);
    s.row(vec![
        "deliveries".into(),
        format!(
            "{} ({}/s)",
            thousands(deliveries as f64),
            thousands(deliveries as f64 / secs)
        ),
    ]);
    s.row(vec![
        "latency p50 / p99".into(),
        format!(
            "{} / {}",
            ms(latency.quantile_ms(0.5)),
            ms(latency.quantile_ms(0.99))
        ),
    ]);
    s.row(vec![
        "streams still open".into(),
        format!("{} of {}", thousands(still_open as f64), opened),
    ]);
    s.row(vec![
        "churned (failed)".into(),
        format!("{churned} ({churn_failed})"),
    ]);
    s.row(vec![
        "errors (first)".into(),
        format!("{errors} ({})", first_error.as_deref().unwrap_or("-")),
    ]);
    report.tables.push(s);
    report.data = json!({
        "streams": o.streams, "opened": opened, "secs": secs, "rate": o.rate, "churn": o.churn,
        "rss_samples": samples.iter().map(|(t, k)| json!([t, k])).collect::<Vec<_>>(),
        "trend_growth_kib": growth, "flat": ok, "deliveries": deliveries, "still_open": still_open,
        "latency": latency.summary(), "errors": errors, "first_error": first_error, "churned": churned,
        "churn_failed": churn_failed, "publisher": publisher_json,
    });
    report.check(
        "every stream opened and stayed open",
        failed == 0 && still_open == opened && errors == 0,
    );
    report.check("events delivered", deliveries > 0);
    report.check("RSS is flat (trend <= max(2 %, 4 MiB))", ok);
    Ok(report.finish())
}

#[cfg(test)]
mod tests {
    use super::flat;

    #[test]
    fn a_rising_rss_is_not_flat() {
        let flat_run: Vec<(f64, u64)> = (0..20)
            .map(|i| (i as f64 * 10.0, 100_000 + (i % 3) * 500))
            .collect();
        assert!(flat(&flat_run).0);
        let leak: Vec<(f64, u64)> = (0..20)
            .map(|i| (i as f64 * 10.0, 100_000 + i * 2_000))
            .collect();
        assert!(!flat(&leak).0);
    }
}
