//! `smoke`: every scenario at tiny scale, in seconds, so CI proves the
//! harness still works against the current gateway. The peer is faked (the
//! fake provider stands in for LiteLLM); the Redis deployments run when a
//! `redis-server` is installed, as do `bus` and `edge`; `rest` runs where
//! wrk is. Checks are about completing with sane numbers, never about
//! timing. `shards` and `failover` are left out: their Redis Cluster and
//! Sentinel topologies alone take longer to start than all of this.

use std::path::PathBuf;

use crate::{gateway::Launch, report::Report};

use super::{bus, connections, edge, fallback, fanout, peer, proxy, rest, runs, soak, transport};

/// The tiny versions of every scenario, in order.
pub async fn run(
    launch: &Launch,
    extra: &[String],
    plot_dir: PathBuf,
) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    let c = connections::Opts {
        connections: 40,
        ws_percent: 50,
        concurrency: 16,
        sse_ping_secs: 1,
        ws_ping_secs: 1,
        target_kib: 8.0,
    };
    reports.push(connections::run(launch, extra, &c).await?);
    let f = fanout::Opts {
        subscribers: 20,
        ws_percent: 50,
        rate: 100.0,
        delay_ms: 5,
        words: 10,
        secs: 1,
        buses: vec!["memory".into(), "redis".into(), "cluster".into()],
        concurrency: 16,
        nchan: false,
        rounds: 1,
    };
    reports.push(fanout::run(launch, extra, &f).await?);
    // Beside nginx + nchan, which is left out (with a note) when absent.
    let fr = fanout::Opts {
        nchan: true,
        buses: vec!["memory".into(), "redis".into()],
        rate: 50.0,
        ..f
    };
    reports.push(fanout::run(launch, extra, &fr).await?);
    let p = proxy::Opts {
        rates: vec![50.0, 100.0],
        step_secs: 1.0,
        chunks: 4,
        gap_us: 0,
        slo_p99_ms: 1000.0,
        // Two slices per step: the interleaved ramp is what runs.
        slice_secs: 0.5,
        nginx: super::nginx::available(),
        tls: false,
        agent: true,
        past_saturation: false,
    };
    reports.push(proxy::run(launch, extra, &p).await?);
    // The relay over TLS, nginx terminating TLS beside it.
    let pt = proxy::Opts {
        rates: vec![50.0],
        tls: true,
        agent: false,
        past_saturation: true,
        ..p.clone()
    };
    reports.push(proxy::run(launch, extra, &pt).await?);
    // One rate of each failing route, two slices (the stall costs its 1 s).
    let fb = fallback::Opts {
        rates: vec![20.0],
        step_secs: 1.0,
        chunks: 4,
        slice_secs: 0.5,
        stall_timeout_secs: 1,
    };
    reports.push(fallback::run(launch, extra, &fb).await?);
    let pe = peer::Opts {
        proxy: proxy::Opts {
            rates: vec![50.0],
            nginx: false,
            agent: false,
            ..p
        },
        peer_rates: vec![50.0],
        fake_peer: true,
        litellm_workers: 1,
        plot: plot_dir.join("smoke_peer.png"),
    };
    reports.push(peer::run(launch, extra, &pe).await?);
    let r = runs::Opts {
        rates: vec![20.0],
        step_secs: 1.0,
        sessions: 4,
        worker_procs: 1,
        route: "agent".into(),
        deployments: vec!["gateway".into(), "queue".into(), "workers".into()],
        slo_p99_ms: 5000.0,
    };
    reports.push(runs::run(launch, extra, &r).await?);
    // The OpenAI route too, where the bare role chunk must not count.
    let ro = runs::Opts {
        route: "openai".into(),
        deployments: vec!["queue".into()],
        ..r
    };
    reports.push(runs::run(launch, extra, &ro).await?);
    let s = soak::Opts {
        streams: 20,
        ws_percent: 50,
        rate: 50.0,
        churn: 2,
        secs: 2,
        sample_secs: 1,
    };
    reports.push(soak::run(launch, extra, &s).await?);
    reports.push(transport::run(launch, extra, &tiny_transport()).await?);
    reports.extend(benches(launch, extra).await?);
    Ok(reports)
}

/// `transport` at tiny scale: every part, every mode.
fn tiny_transport() -> transport::Opts {
    transport::Opts {
        parts: vec!["handshake".into(), "idle".into(), "fanout".into()],
        modes: vec![
            transport::Mode::H1,
            transport::Mode::H1Tls,
            transport::Mode::H2c,
            transport::Mode::H2Tls,
        ],
        handshake_secs: 0.5,
        handshake_concurrency: 2,
        idle_streams: 20,
        streams_per_conn: 10,
        sse_ping_secs: 1,
        subscribers: 20,
        rate: 50.0,
        secs: 1,
        delay_ms: 5,
        words: 10,
        concurrency: 16,
    }
}

/// The benchmarks that need a tool: `rest` where wrk is installed, `bus`
/// and `edge` where redis-server is.
async fn benches(launch: &Launch, extra: &[String]) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    if installed("wrk", "--version") {
        let o = rest::Opts {
            cases: vec!["embedded".into(), "limits-off".into()],
            secs: 1,
            connections: 4,
            rounds: 2,
            warmup_secs: 1,
            pg_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            wrk: "wrk".into(),
        };
        reports.push(rest::run(launch, extra, &o).await?);
    }
    if installed("redis-server", "--version") {
        let b = bus::Opts {
            publishers: vec![1, 2],
            publish_secs: 1,
            fanout: vec!["20x50".into()],
            secs: 1,
        };
        reports.push(bus::run(&b).await?);
        let e = edge::Opts {
            checks: 2_000,
            redis_checks: 200,
            keys: 10,
        };
        reports.push(edge::run(&e).await?);
    }
    Ok(reports)
}

/// Whether `cmd arg` runs here.
pub fn installed(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
