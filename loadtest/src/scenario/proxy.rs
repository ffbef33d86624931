//! `proxy`: OpenAI-compatible streaming through weir (`upstream/<model>`)
//! against the same fake provider called directly, open-loop at fixed
//! request rates. Reports TTFT and total latency p50/p99 for both, what weir
//! adds, and the highest rate each sustains.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    client::{
        openloop::{self, Step, Target},
        timing::Route,
    },
    fake_provider::{self, FakeProvider},
    gateway::{self, Data, Gateway, Launch},
    report::{ms, thousands, Report, Table},
    sys,
};

/// Options shared by `proxy` and `peer`.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Request rates to step through (requests/s).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,1000,2000,3000,4000"
    )]
    pub rates: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 10.0)]
    pub step_secs: f64,
    /// Content chunks per answer from the fake provider.
    #[arg(long, default_value_t = 16)]
    pub chunks: usize,
    /// Microseconds between the fake provider's chunks (0: one write).
    #[arg(long, default_value_t = 0)]
    pub gap_us: u64,
    /// A rate is sustained when every request succeeds, at least 95 % of
    /// the rate completes per second, and p99 total latency is at most this.
    #[arg(long, default_value_t = 50.0)]
    pub slo_p99_ms: f64,
    /// Direct and weir take turns at each rate in slices this long, so
    /// both see the same machine (other work, CPU frequency, the page
    /// cache) and "what weir adds" is not the difference of two runs made
    /// minutes apart; 0 runs one whole ramp after the other.
    #[arg(long, default_value_t = 1.0)]
    pub slice_secs: f64,
    /// Also drive nginx (from PATH or /usr/sbin) in front of the same
    /// provider, in the same interleaved ramp: the reference for what any
    /// proxy adds on this machine.
    #[arg(long)]
    pub nginx: bool,
    /// Step every target through every rate even past the first it does
    /// not sustain: the saturation curve (goodput and p99 past capacity,
    /// e.g. with and without `--gateway-arg=--max-relays-in-flight=N`).
    #[arg(long)]
    pub past_saturation: bool,
    /// Clients reach weir (and nginx) over TLS: both terminate it with the
    /// same throwaway ECDSA P-256 certificate, HTTP/1.1 keep-alive from the
    /// client, plain HTTP to the provider; CPU per request then includes
    /// the record encryption (handshakes are amortised over keep-alive).
    #[arg(long)]
    pub tls: bool,
    /// Also drive the agent path in the same rotation: an agent whose
    /// model is `upstream/fake`, its runs streamed over the agent route
    /// (SSE), against the same fake provider; reports the TTFT it adds
    /// over the relay's ([`super::agent_path`]).
    #[arg(long)]
    pub agent: bool,
}

/// Whether a step counts as sustained under `slo_p99_ms`.
pub fn sustained(s: &Step, slo_p99_ms: f64) -> bool {
    s.errors == 0
        && s.ok == s.sent
        && s.achieved >= 0.95 * s.rate
        && s.total.quantile_ms(0.99) <= slo_p99_ms
}

/// Steps `target` through `rates`, stopping after the first rate it does
/// not sustain (higher ones would only queue).
pub async fn ramp(target: &Target, rates: &[f64], step_secs: f64, slo: f64) -> Vec<Step> {
    let client = openloop::client();
    // Warm the connection pool and both ends' lazily built state.
    let _ = openloop::run_step(&client, target, 50.0, 0.5).await;
    let mut steps = Vec::new();
    for &rate in rates {
        let step = openloop::run_step(&client, target, rate, step_secs).await;
        let ok = sustained(&step, slo);
        steps.push(step);
        if !ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    steps
}

/// Steps several targets through `rates` together: at each rate they take
/// turns in slices of `slice_secs` until each has had `step_secs`, and a
/// target leaves the ramp after the first rate it does not sustain. With
/// `slice_secs` 0 each target runs its whole [`ramp`] in turn.
pub async fn ramp_together(
    targets: &[(Target, Vec<u32>)],
    rates: &[f64],
    step_secs: f64,
    slo: f64,
    slice_secs: f64,
) -> Vec<Vec<Step>> {
    if slice_secs <= 0.0 {
        let mut all = Vec::new();
        for (t, _) in targets {
            all.push(ramp(t, rates, step_secs, slo).await);
        }
        return all;
    }
    let client = openloop::client();
    for (t, _) in targets {
        let _ = openloop::run_step(&client, t, 50.0, 0.5).await;
    }
    let slices = (step_secs / slice_secs).round().max(1.0) as usize;
    let mut all: Vec<Vec<Step>> = vec![Vec::new(); targets.len()];
    let mut live = vec![true; targets.len()];
    for &rate in rates {
        let mut merged: Vec<Option<Step>> = vec![None; targets.len()];
        for _ in 0..slices {
            for (i, (t, pids)) in targets.iter().enumerate().filter(|(i, _)| live[*i]) {
                let cpu = || pids.iter().map(|&p| sys::cpu_secs(p)).sum::<f64>();
                let before = cpu();
                let mut step =
                    openloop::run_step(&client, t, rate, step_secs / slices as f64).await;
                step.cpu_secs = (!pids.is_empty()).then(|| cpu() - before);
                match &mut merged[i] {
                    Some(m) => m.merge(step),
                    slot => *slot = Some(step),
                }
            }
        }
        for (i, step) in merged.into_iter().enumerate() {
            if let Some(step) = step {
                live[i] = sustained(&step, slo);
                all[i].push(step);
            }
        }
        if !live.contains(&true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    all
}

/// [`ramp_together`] through every rate, sustained or not: no target
/// leaves early (a saturation curve, or routes slow by design).
pub async fn every_rate(
    targets: &[(Target, Vec<u32>)],
    rates: &[f64],
    step_secs: f64,
    slo: f64,
    slice_secs: f64,
) -> Vec<Vec<Step>> {
    let mut all: Vec<Vec<Step>> = vec![Vec::new(); targets.len()];
    for &rate in rates {
        let one = ramp_together(targets, &[rate], step_secs, slo, slice_secs).await;
        for (steps, more) in all.iter_mut().zip(one) {
            steps.extend(more);
        }
    }
    all
}

/// The highest sustained rate of a ramp (0 if none).
pub fn max_sustained(steps: &[Step], slo: f64) -> f64 {
    steps
        .iter()
        .filter(|s| sustained(s, slo))
        .map(|s| s.rate)
        .fold(0.0, f64::max)
}

/// The fake provider, and weir in front of it.
pub struct Setup {
    pub fake: FakeProvider,
    pub weir: Gateway,
    /// The certificate weir (and nginx) serve, with `--tls`.
    pub pki: Option<crate::tls::Pki>,
}

pub async fn setup(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Setup> {
    sys::raise_nofile(65_536)?;
    let fake = fake_provider::start(fake_provider::Options {
        chunks: o.chunks,
        gap: Duration::from_micros(o.gap_us),
    })?;
    let mut args = vec!["--provider-url".to_owned(), fake.base.clone()];
    let pki = o.tls.then(crate::tls::Pki::make).transpose()?;
    args.extend(pki.iter().flat_map(crate::tls::Pki::gateway_args));
    args.extend(extra.iter().cloned());
    let weir = gateway::start(launch, &Data::Embedded, &args).await?;
    Ok(Setup { fake, weir, pki })
}

pub fn direct(fake: &FakeProvider) -> Target {
    Target {
        name: "direct".into(),
        base: fake.base.clone(),
        key: None,
        model: "fake".into(),
        route: Route::OpenAi,
        sessions: Vec::new(),
    }
}

pub fn through_weir(weir: &Gateway) -> Target {
    Target {
        name: "weir".into(),
        base: format!("{}/v1", weir.url),
        key: Some(weir.key.clone()),
        model: "upstream/fake".into(),
        route: Route::OpenAi,
        sessions: Vec::new(),
    }
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    // Made first: it notes the load average the run starts from.
    let report = Report::new("proxy");
    let s = setup(launch, extra, o).await?;
    let nginx = match o.nginx {
        true => Some(super::nginx::start(&s.fake.base, nginx_workers(), s.pki.as_ref()).await?),
        false => None,
    };
    // The fake provider shares the load generator's process: no CPU figure.
    let mut targets = vec![
        (direct(&s.fake), vec![]),
        (
            through_weir(&s.weir),
            s.weir.own_pid().into_iter().collect(),
        ),
    ];
    targets.extend(
        nginx
            .as_ref()
            .map(|n| (n.target.clone(), sys::with_children(n.pid))),
    );
    if o.agent {
        let pids = s.weir.own_pid().into_iter().collect();
        targets.push((super::agent_path::target(&s.weir).await?, pids));
    }
    let ramps = match o.past_saturation {
        true => every_rate(&targets, &o.rates, o.step_secs, o.slo_p99_ms, o.slice_secs).await,
        false => ramp_together(&targets, &o.rates, o.step_secs, o.slo_p99_ms, o.slice_secs).await,
    };
    let mut ramps = ramps.into_iter();
    let direct_steps = ramps.next().unwrap_or_default();
    let weir_steps = ramps.next().unwrap_or_default();
    let nginx_steps = if o.nginx { ramps.next() } else { None };
    let agent_steps = ramps.next();
    let mut report = fill(
        report,
        o,
        &direct_steps,
        &weir_steps,
        nginx_steps.as_deref(),
    );
    if let Some(a) = agent_steps {
        agent_report(&mut report, o, &weir_steps, &a);
    }
    Ok(report)
}

/// The agent path's rows, table, JSON and check (`--agent`).
fn agent_report(report: &mut Report, o: &Opts, relay: &[Step], agent: &[Step]) {
    use super::agent_path as ap;
    report.tables.push(steps_table(
        "the agent path (agent on upstream/fake, agent route, SSE)",
        &[("agent", agent)],
        o.slo_p99_ms,
        true,
    ));
    report.tables.push(ap::added_table(relay, agent));
    if let Some(obj) = report.data.as_object_mut() {
        obj.insert("agent".into(), steps_json(agent, o.slo_p99_ms));
        obj.insert("agent_added".into(), ap::added(relay, agent));
    }
    report.check(
        "agent runs completed, each with its reply streamed",
        agent
            .first()
            .is_some_and(|s| s.ok > 0 && s.chunks_per_req >= 1.0),
    );
    if let Some((rate, added)) = ap::added_ttft_p99(relay, agent) {
        report.check(
            format!(
                "target: the agent path adds <= {} ms p99 TTFT over the relay at {} req/s",
                ap::TARGET_ADDED_TTFT_P99_MS,
                thousands(rate),
            ),
            added <= ap::TARGET_ADDED_TTFT_P99_MS,
        );
    }
}

/// The proxy report's tables, JSON and checks from the ramps (nginx's when
/// it ran).
fn fill(
    mut report: Report,
    o: &Opts,
    direct_steps: &[Step],
    weir_steps: &[Step],
    nginx: Option<&[Step]>,
) -> Report {
    let mut runs = vec![("direct", direct_steps), ("weir", weir_steps)];
    runs.extend(nginx.map(|n| ("nginx", n)));
    report.tables.push(steps_table(
        if o.tls {
            "open-loop streaming, direct vs through weir, clients over TLS"
        } else {
            "open-loop streaming, direct vs through weir"
        },
        &runs,
        o.slo_p99_ms,
        false,
    ));
    report
        .tables
        .push(added_table(direct_steps, weir_steps, "weir"));
    if let Some(n) = nginx {
        report.tables.push(added_table(direct_steps, n, "nginx"));
    }
    let nginx = nginx.unwrap_or_default();
    report.data = json!({
        "options": format!("{o:?}"),
        "tls": o.tls,
        "direct": steps_json(direct_steps, o.slo_p99_ms),
        "weir": steps_json(weir_steps, o.slo_p99_ms),
        "max_sustained": {
            "direct": max_sustained(direct_steps, o.slo_p99_ms),
            "weir": max_sustained(weir_steps, o.slo_p99_ms),
        },
        "added": added_json(direct_steps, weir_steps),
        "nginx": steps_json(nginx, o.slo_p99_ms),
        "nginx_added": added_json(direct_steps, nginx),
    });
    report.check(
        "requests completed through weir",
        weir_steps.first().is_some_and(|s| s.ok > 0),
    );
    report.check(
        "weir relayed every chunk",
        weir_steps
            .iter()
            .all(|s| s.ok == 0 || s.chunks_per_req >= o.chunks as f64),
    );
    if let Some(a) = added_at(direct_steps, weir_steps, 2000.0) {
        report.check("target: weir adds <= 0.25 ms p99 at 2k req/s", a <= 0.25);
    }
    report.finish()
}

/// nginx's worker processes: one per core, as weir has one runtime worker
/// per core.
fn nginx_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// weir's p99 total minus direct's at `rate`, if both ran it.
pub fn added_at(direct: &[Step], via: &[Step], rate: f64) -> Option<f64> {
    let d = direct.iter().find(|s| s.rate == rate)?;
    let w = via.iter().find(|s| s.rate == rate)?;
    Some(w.total.quantile_ms(0.99) - d.total.quantile_ms(0.99))
}

/// The steps of every target; `first_event` adds the time to the first
/// event produced by the run (agent runs).
pub fn steps_table(title: &str, runs: &[(&str, &[Step])], slo: f64, first_event: bool) -> Table {
    let mut header = vec!["target", "rate/s", "done/s", "errors"];
    if first_event {
        header.extend(["first event p50", "first event p99"]);
    }
    header.extend([
        "TTFT p50",
        "TTFT p99",
        "total p50",
        "total p99",
        "total max",
        "CPU/req",
        "sustained",
    ]);
    let mut t = Table::new(title, &header);
    for (name, steps) in runs {
        for s in *steps {
            let mut row = vec![
                (*name).to_owned(),
                thousands(s.rate),
                thousands(s.achieved),
                s.errors.to_string(),
            ];
            if first_event {
                row.push(ms(s.first_event.quantile_ms(0.5)));
                row.push(ms(s.first_event.quantile_ms(0.99)));
            }
            row.extend([
                ms(s.ttft.quantile_ms(0.5)),
                ms(s.ttft.quantile_ms(0.99)),
                ms(s.total.quantile_ms(0.5)),
                ms(s.total.quantile_ms(0.99)),
                ms(s.total.max_ms()),
                s.cpu_us_per_request()
                    .map_or("-".into(), |us| format!("{us:.0} µs")),
                if sustained(s, slo) {
                    "yes".into()
                } else {
                    format!(
                        "no{}",
                        s.first_error
                            .as_deref()
                            .map(|e| format!(" ({})", e.chars().take(60).collect::<String>()))
                            .unwrap_or_default()
                    )
                },
            ]);
            t.row(row);
        }
    }
    t
}

pub fn added_table(direct: &[Step], via: &[Step], name: &str) -> Table {
    let mut t = Table::new(
        format!("latency {name} adds over calling the provider directly"),
        &["rate/s", "TTFT p50", "TTFT p99", "total p50", "total p99"],
    );
    for d in direct {
        if let Some(w) = via.iter().find(|w| w.rate == d.rate) {
            let diff = |q: f64, ttft: bool| {
                let (a, b) = if ttft {
                    (&w.ttft, &d.ttft)
                } else {
                    (&w.total, &d.total)
                };
                ms(a.quantile_ms(q) - b.quantile_ms(q))
            };
            t.row(vec![
                thousands(d.rate),
                diff(0.5, true),
                diff(0.99, true),
                diff(0.5, false),
                diff(0.99, false),
            ]);
        }
    }
    t
}

pub fn steps_json(steps: &[Step], slo: f64) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|s| {
                json!({
                    "rate": s.rate, "sent": s.sent, "ok": s.ok, "errors": s.errors, "achieved": s.achieved,
                    "ttft": s.ttft.summary(), "first_event": s.first_event.summary(), "total": s.total.summary(), "chunks_per_req": s.chunks_per_req,
                    "sustained": sustained(s, slo), "first_error": s.first_error, "load_average": s.load,
                    "cpu_us_per_request": s.cpu_us_per_request(),
                })
            })
            .collect(),
    )
}

pub fn added_json(direct: &[Step], via: &[Step]) -> Value {
    Value::Array(
        direct
            .iter()
            .filter_map(|d| {
                let w = via.iter().find(|w| w.rate == d.rate)?;
                Some(json!({
                    "rate": d.rate,
                    "ttft_p50_ms": w.ttft.quantile_ms(0.5) - d.ttft.quantile_ms(0.5),
                    "ttft_p99_ms": w.ttft.quantile_ms(0.99) - d.ttft.quantile_ms(0.99),
                    "total_p50_ms": w.total.quantile_ms(0.5) - d.total.quantile_ms(0.5),
                    "total_p99_ms": w.total.quantile_ms(0.99) - d.total.quantile_ms(0.99),
                }))
            })
            .collect(),
    )
}
