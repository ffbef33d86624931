//! `peer`: the proxy scenario against LiteLLM's proxy too, side by side in
//! one invocation: the same fake provider behind weir and behind LiteLLM,
//! the same open-loop ramps and the same p99 bound; reports each one's
//! highest sustained rate, the ratio, and a PNG of latency vs load.
//!
//! LiteLLM is started with `loadtest/litellm.sh` (it makes a virtualenv and
//! `pip install`s `litellm[proxy]` on first use). With `--fake-peer` the
//! "peer" is the fake provider itself, for the smoke test.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::json;

use super::proxy::{self, added_at, max_sustained, ramp, ramp_together, steps_json, steps_table};
use crate::{
    client::{
        openloop::{self, Target},
        timing::Route,
    },
    gateway::{free_port, ChildGuard, Launch},
    plot,
    report::{thousands, Report},
};

/// The master key `litellm.sh` starts LiteLLM with.
const LITELLM_KEY: &str = "sk-weir-load-0123456789abcdef";

/// Options of the `peer` scenario (its own group id: the flattened
/// `proxy::Opts` already takes `Opts`, which clap's debug build refuses).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "peer_opts")]
pub struct Opts {
    #[command(flatten)]
    pub proxy: proxy::Opts,
    /// Rates for LiteLLM (requests/s); it saturates far below weir.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,400,800")]
    pub peer_rates: Vec<f64>,
    /// Use the fake provider as the "peer" instead of LiteLLM (smoke test).
    #[arg(long)]
    pub fake_peer: bool,
    /// LiteLLM worker processes.
    #[arg(long, default_value_t = 1)]
    pub litellm_workers: u32,
    /// Where to write the latency-vs-load plot.
    #[arg(long, default_value = "loadtest/plots/peer_latency.png")]
    pub plot: PathBuf,
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("peer");
    let p = &o.proxy;
    anyhow::ensure!(
        !p.nginx,
        "--nginx is a `proxy` option: run `weir-load proxy --nginx`"
    );
    let s = proxy::setup(launch, extra, p).await?;
    let (_litellm, peer) = if o.fake_peer {
        (
            None,
            Target {
                name: "peer (fake)".into(),
                ..proxy::direct(&s.fake)
            },
        )
    } else {
        let (guard, base) = start_litellm(&s.fake.base, o.litellm_workers).await?;
        (
            Some(guard),
            Target {
                name: "litellm".into(),
                base,
                key: Some(LITELLM_KEY.into()),
                model: "fake".into(),
                route: Route::OpenAi,
                sessions: Vec::new(),
            },
        )
    };
    let targets = [
        (proxy::direct(&s.fake), vec![]),
        (
            proxy::through_weir(&s.weir),
            s.weir.own_pid().into_iter().collect(),
        ),
    ];
    let mut ramps =
        ramp_together(&targets, &p.rates, p.step_secs, p.slo_p99_ms, p.slice_secs).await;
    let weir_steps = ramps.pop().unwrap_or_default();
    let direct_steps = ramps.pop().unwrap_or_default();
    let peer_steps = ramp(&peer, &o.peer_rates, p.step_secs, p.slo_p99_ms).await;
    let (w, l) = (
        max_sustained(&weir_steps, p.slo_p99_ms),
        max_sustained(&peer_steps, p.slo_p99_ms),
    );
    let ratio = if l > 0.0 { w / l } else { f64::INFINITY };
    report.tables.push(steps_table(
        &format!(
            "weir vs {} (same fake provider, {} chunks, p99 bound {} ms)",
            peer.name, p.chunks, p.slo_p99_ms
        ),
        &[
            ("direct", &direct_steps),
            ("weir", &weir_steps),
            (&peer.name, &peer_steps),
        ],
        p.slo_p99_ms,
        false,
    ));
    report
        .tables
        .push(proxy::added_table(&direct_steps, &weir_steps, "weir"));
    let mut t = crate::report::Table::new("highest sustained rate", &["weir", &peer.name, "ratio"]);
    t.row(vec![
        format!("{}/s", thousands(w)),
        format!("{}/s", thousands(l)),
        format!("{ratio:.1}x"),
    ]);
    report.tables.push(t);
    let series = [("weir", &weir_steps), (peer.name.as_str(), &peer_steps)];
    match plot::latency_vs_load(&o.plot, &series) {
        Ok(()) => report.check(format!("plot written to {}", o.plot.display()), true),
        Err(e) => report.check(format!("plot: {e:#}"), false),
    }
    report.data = json!({
        "options": format!("{o:?}"), "peer": peer.name,
        "direct": steps_json(&direct_steps, p.slo_p99_ms),
        "weir": steps_json(&weir_steps, p.slo_p99_ms),
        "peer_steps": steps_json(&peer_steps, p.slo_p99_ms),
        "max_sustained": {"weir": w, "peer": l}, "ratio": ratio,
        "added": proxy::added_json(&direct_steps, &weir_steps),
    });
    report.check(
        "both answered",
        weir_steps.first().is_some_and(|s| s.ok > 0)
            && peer_steps.first().is_some_and(|s| s.ok > 0),
    );
    report.check(
        "target: >= 20x the peer's sustained rate at equal p99",
        ratio >= 20.0,
    );
    if let Some(a) = added_at(&direct_steps, &weir_steps, 2000.0) {
        report.check("target: weir adds <= 0.25 ms p99 at 2k req/s", a <= 0.25);
    }
    Ok(report.finish())
}

/// Starts LiteLLM's proxy on a free port in front of `provider`.
async fn start_litellm(provider: &str, workers: u32) -> anyhow::Result<(ChildGuard, String)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("litellm.sh");
    let port = free_port()?;
    let log = std::fs::File::create(std::env::temp_dir().join("weir-load-litellm.log"))?;
    let child = Command::new("bash")
        .arg(&script)
        .args(["run", &port.to_string(), provider])
        .env("LITELLM_WORKERS", workers.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let mut guard = ChildGuard(child);
    let base = format!("http://127.0.0.1:{port}/v1");
    let target = Target {
        name: "litellm".into(),
        base: base.clone(),
        key: Some(LITELLM_KEY.into()),
        model: "fake".into(),
        route: Route::OpenAi,
        sessions: Vec::new(),
    };
    let client = openloop::client();
    // The first run installs LiteLLM (minutes); later starts take seconds.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let step = openloop::run_step(&client, &target, 1.0, 1.0).await;
        if step.ok == 1 {
            return Ok((guard, base));
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            anyhow::bail!(
                "LiteLLM exited ({status}); see {}",
                std::env::temp_dir().join("weir-load-litellm.log").display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "LiteLLM did not answer (see {}): {:?}",
                std::env::temp_dir().join("weir-load-litellm.log").display(),
                step.first_error
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
