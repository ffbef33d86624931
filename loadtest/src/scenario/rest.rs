//! `rest`: the REST benchmark (was `loadtest/rest_bench.sh`): requests/s
//! and latency percentiles of `GET /v1/agents/{id}` with a warm key, driven
//! by wrk (closed loop, `-t1 -c<connections> --latency`), whose output is
//! parsed into the report so every figure lands in the JSON.
//!
//! Cases, all started side by side before any is measured, then measured
//! in turn for `--rounds` rounds so that background load hits every case
//! alike: `embedded` (embedded SQLite store, limits on), `limits-redis`
//! (the same with `--redis`: the cluster limiter), `limits-off`
//! (`--rate-limit false`), `remote` (a `weir store` process over HTTP),
//! `postgres` (a `weir store --db` on a fresh database of the PostgreSQL at
//! `--pg-url`, dropped afterwards; skipped when none answers).

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::create_agent;
use crate::{
    gateway::{self, Data, Gateway, Launch},
    report::{Report, Table},
    sys, units,
};

/// Options of the `rest` scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Cases: embedded, limits-redis, limits-off, remote, postgres.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "embedded,remote,postgres"
    )]
    pub cases: Vec<String>,
    /// Seconds of wrk per measurement.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// wrk connections (one wrk thread).
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Rounds: each round measures every case once, in turn.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Seconds of wrk warm-up per case (key cache, pools, page cache).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// The PostgreSQL server for `postgres` (a database is made and dropped).
    #[arg(
        long,
        env = "WEIR_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
    /// The wrk binary (apt-get install wrk).
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
}

/// One wrk measurement, as parsed from its output.
#[derive(Debug, Clone, PartialEq)]
pub struct Wrk {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

impl Wrk {
    fn json(&self) -> Value {
        json!({
            "requests": self.requests, "requests_per_s": self.requests_per_s,
            "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
            "non_2xx": self.non_2xx, "socket_errors": self.socket_errors,
        })
    }
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Result<Wrk, String> {
    let line = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let pct = |p: &str| {
        let v = line(p).ok_or(format!("no `{p}` line"))?;
        units::parse_duration_ms(v).ok_or(format!("`{p} {v}`"))
    };
    let rps = line("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or("no Requests/sec")?;
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or("no `N requests in` line")?;
    let non_2xx = line("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // `Socket errors: connect 0, read 0, write 0, timeout 0`
    let socket_errors = line("Socket errors:").map_or(0, |v| {
        v.split(',')
            .filter_map(|f| f.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    });
    Ok(Wrk {
        requests,
        requests_per_s: rps,
        p50_ms: pct("50%")?,
        p90_ms: pct("90%")?,
        p99_ms: pct("99%")?,
        non_2xx,
        socket_errors,
    })
}

/// A started case: its gateway and what it stands on.
struct Case {
    name: String,
    gateway: Gateway,
    url: String,
    _store: Option<gateway::Store>,
    _redis: Option<gateway::Redis>,
    _pg: Option<PgDatabase>,
}

pub async fn run(launch: &Launch, extra: &[String], o: &Opts) -> anyhow::Result<Report> {
    let mut report = Report::new("rest");
    sys::raise_nofile(65_536)?;
    which(&o.wrk)?;
    let mut cases = Vec::new();
    for name in &o.cases {
        match start_case(launch, extra, o, name).await {
            Ok(Some(c)) => cases.push(c),
            Ok(None) => report.check(
                format!("{name}: skipped (no Redis or PostgreSQL here)"),
                true,
            ),
            Err(e) => report.check(format!("{name}: {e:#}"), false),
        }
    }
    for c in &cases {
        wrk(o, &c.url, &c.gateway.key, o.warmup_secs, false).await?;
    }
    let mut rounds: Vec<Vec<Wrk>> = vec![Vec::new(); cases.len()];
    for _ in 0..o.rounds.max(1) {
        for (i, c) in cases.iter().enumerate() {
            rounds[i].push(wrk(o, &c.url, &c.gateway.key, o.secs, true).await?);
        }
    }
    fill(&mut report, o, &cases, &rounds);
    Ok(report.finish())
}

fn fill(report: &mut Report, o: &Opts, cases: &[Case], rounds: &[Vec<Wrk>]) {
    let mut t = Table::new(
        format!(
            "GET /v1/agents/{{id}}, wrk -t1 -c{} --latency, {} s x {} rounds",
            o.connections, o.secs, o.rounds
        ),
        &["case", "requests/s (median)", "p50", "p90", "p99"],
    );
    let mut data = Vec::new();
    for (c, runs) in cases.iter().zip(rounds) {
        let m = median_run(runs);
        t.row(vec![
            c.name.clone(),
            units::per_s(m.requests_per_s),
            units::ms(m.p50_ms),
            units::ms(m.p90_ms),
            units::ms(m.p99_ms),
        ]);
        data.push(json!({
            "case": c.name, "rounds": runs.iter().map(Wrk::json).collect::<Vec<_>>(),
            "median": m.json(),
        }));
        report.check(
            format!("{}: every response 200, no socket errors", c.name),
            runs.iter()
                .all(|w| w.non_2xx == 0 && w.socket_errors == 0 && w.requests > 0),
        );
    }
    report.tables.push(t);
    report.data = json!({
        "options": format!("{o:?}"), "secs": o.secs, "connections": o.connections,
        "rounds": o.rounds, "cases": data,
    });
}

/// The round with the median requests/s (the lower middle of an even count).
pub fn median_run(runs: &[Wrk]) -> Wrk {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
    sorted[(sorted.len().max(1) - 1) / 2].clone()
}

async fn start_case(
    launch: &Launch,
    extra: &[String],
    o: &Opts,
    name: &str,
) -> anyhow::Result<Option<Case>> {
    let mut args: Vec<String> = extra.to_vec();
    let (mut store, mut redis, mut pg) = (None, None, None);
    let data = match name {
        "embedded" => Data::Embedded,
        "limits-off" => {
            args.push("--rate-limit=false".into());
            Data::Embedded
        }
        "limits-redis" => {
            let Some(r) = gateway::redis_for(launch).await? else {
                return Ok(None);
            };
            args.extend(["--redis".to_owned(), r.url.clone()]);
            redis = Some(r);
            Data::Embedded
        }
        "remote" => {
            let s = gateway::start_store(launch, None).await?;
            let d = Data::Remote(s.url.clone());
            store = Some(s);
            d
        }
        "postgres" => {
            let Some(db) = PgDatabase::create(&o.pg_url).await? else {
                return Ok(None);
            };
            let s = gateway::start_store(launch, Some(&db.url)).await?;
            let d = Data::Remote(s.url.clone());
            (store, pg) = (Some(s), Some(db));
            d
        }
        _ => bail!("unknown case `{name}` (embedded, limits-redis, limits-off, remote, postgres)"),
    };
    let gw = gateway::start(launch, &data, &args).await?;
    let agent = create_agent(&gw, 0).await?;
    Ok(Some(Case {
        name: name.to_owned(),
        url: format!("{}/v1/agents/{agent}", gw.url),
        gateway: gw,
        _store: store,
        _redis: redis,
        _pg: pg,
    }))
}

fn which(wrk: &PathBuf) -> anyhow::Result<()> {
    std::process::Command::new(wrk)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("{} is required (apt-get install wrk)", wrk.display()))?;
    Ok(())
}

/// Runs wrk for `secs` against `url`; parses its output when `measure`.
async fn wrk(o: &Opts, url: &str, key: &str, secs: u64, measure: bool) -> anyhow::Result<Wrk> {
    let out = tokio::process::Command::new(&o.wrk)
        .args([
            "-t1",
            &format!("-c{}", o.connections),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .args(["-H", &format!("Authorization: Bearer {key}"), url])
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    match measure {
        true => parse_wrk(&text).map_err(|e| anyhow::anyhow!("wrk output ({e}): {text}")),
        false => Ok(Wrk {
            requests: 0,
            requests_per_s: 0.0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            non_2xx: 0,
            socket_errors: 0,
        }),
    }
}

/// A database made for one run on a PostgreSQL server, dropped on drop.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// `None` when psql is missing or the server does not answer.
    async fn create(admin: &str) -> anyhow::Result<Option<Self>> {
        let answers = psql(admin, "SELECT 1").await.unwrap_or(false);
        if !answers {
            return Ok(None);
        }
        let name = format!("weir_load_rest_{}", std::process::id());
        if !psql(admin, &format!("CREATE DATABASE {name}")).await? {
            bail!("CREATE DATABASE {name} failed on {admin}");
        }
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Ok(Some(Self {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-w",
                &self.admin,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn psql(url: &str, sql: &str) -> anyhow::Result<bool> {
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("psql")
            .args(["-w", url, "-Atqc", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status(),
    )
    .await
    .context("psql timed out")??;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wrk 4.2's output, recorded.
    const RECORDED: &str = "Running 10s test @ http://127.0.0.1:41234/v1/agents/agent-x
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.40ms    1.02ms  20.33ms   85.69%
    Req/Sec    27.41k     1.20k   29.43k    79.00%
  Latency Distribution
     50%    2.20ms
     75%    2.71ms
     90%  870.00us
     99%    1.02s
  272751 requests in 10.00s, 112.66MB read
  Non-2xx or 3xx responses: 5
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  27275.12
Transfer/sec:     11.27MB
";

    #[test]
    fn wrk_output_parses_with_its_units() {
        let w = parse_wrk(RECORDED).unwrap();
        assert_eq!(
            w,
            Wrk {
                requests: 272_751,
                requests_per_s: 27_275.12,
                p50_ms: 2.2,
                p90_ms: 0.87,
                p99_ms: 1020.0,
                non_2xx: 5,
                socket_errors: 3,
            }
        );
        assert!(parse_wrk("Running 10s test\n").is_err());
    }

    #[test]
    fn the_median_round_is_picked_by_rate() {
        let w = |rps: f64| Wrk {
            requests_per_s: rps,
            ..parse_wrk(RECORDED).unwrap()
        };
        assert_eq!(median_run(&[w(3.0), w(1.0), w(2.0)]).requests_per_s, 2.0);
        assert_eq!(median_run(&[w(4.0), w(1.0)]).requests_per_s, 1.0);
        assert_eq!(median_run(&[w(7.0)]).requests_per_s, 7.0);
    }
}
