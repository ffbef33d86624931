//! Renderers of the streaming scenarios: `connections`, `fanout`, `soak`
//! and the bus-only `bus`.

use serde_json::Value;

use super::{opt, verdict, RenderError, Results};
use crate::{report::Table, units};

/// Per-connection RSS target (issue 3), KiB.
const CONN_TARGET_KIB: f64 = 8.0;

pub fn connections(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &[
            "connections",
            "WebSocket share",
            "RSS per connection",
            "gateway RSS before → after",
            "connect rate",
            "pinged",
            "load avg",
        ],
    );
    let mut out = String::new();
    for (i, rep) in r.reports.iter().enumerate() {
        let p = |k: &str| r.num(&format!("/{i}/data/{k}"));
        let per = p("rss_per_conn_kib")?;
        t.row(vec![
            units::thousands(p("opened")?),
            format!("{:.0} %", p("ws_percent")?),
            units::kib(per),
            format!(
                "{} → {}",
                units::mib_of_kib(p("rss_before_kib")?),
                units::mib_of_kib(p("rss_after_ping_kib")?)
            ),
            units::per_s(p("connect_rate_per_s")?),
            format!(
                "{} of {}",
                units::thousands(p("pinged")?),
                units::thousands(p("still_open")?)
            ),
            load_span(rep),
        ]);
        out.push_str(&verdict(
            &format!(
                "≤ {} per connection at {} connections",
                units::kib(CONN_TARGET_KIB),
                units::thousands(p("opened")?)
            ),
            per <= CONN_TARGET_KIB,
            &units::kib(per),
        ));
    }
    Ok(format!("\n{}\n{out}", t.markdown()))
}

fn load_span(rep: &Value) -> String {
    match (
        opt(rep, "/load_average/start"),
        opt(rep, "/load_average/end"),
    ) {
        (Some(s), Some(e)) => format!("{} → {}", units::load(s), units::load(e)),
        _ => "-".into(),
    }
}

pub fn fanout(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &[
            "bus",
            "subscribers",
            "events/s offered",
            "events/s published",
            "deliveries/s",
            "delivered",
            "p50",
            "p99",
            "p99.9",
            "gateway CPU",
            "load avg",
        ],
    );
    let mut verdicts = String::new();
    let mut v1 = false;
    for (i, rep) in r.reports.iter().enumerate() {
        let deps = rep
            .pointer("/data/deployments")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for d in 0..deps {
            let p = |k: &str| r.num(&format!("/{i}/data/deployments/{d}/{k}"));
            let bus = r
                .at(&format!("/{i}/data/deployments/{d}/bus"))?
                .as_str()
                .unwrap_or("?")
                .to_owned();
            let offered = opt(rep, &format!("/data/deployments/{d}/offered_events_per_s"));
            v1 |= offered.is_none();
            let (rate, p99, subs) = (
                p("deliveries_per_s")?,
                p("latency/p99_ms")?,
                p("subscribers")?,
            );
            t.row(vec![
                bus.clone(),
                units::thousands(subs),
                offered.map_or("not controlled ¹".into(), units::per_s),
                units::per_s(p("published_per_s")?),
                units::per_s(rate),
                units::percent(p("delivered_share")?),
                units::ms(p("latency/p50_ms")?),
                units::ms(p99),
                units::ms(p("latency/p999_ms")?),
                units::cores(p("gateway_cpu_cores")?),
                units::load(p("load_average")?),
            ]);
            let target = if bus == "memory" {
                1_000_000.0
            } else {
                300_000.0
            };
            verdicts.push_str(&verdict(
                &format!("{bus}: ≥ {} deliveries/s", units::thousands(target)),
                rate >= target,
                &units::per_s(rate),
            ));
            if subs >= 10_000.0 {
                verdicts.push_str(&verdict(
                    &format!("{bus}: p99 ≤ 20 ms at 10,000 subscribers"),
                    p99 <= 20.0,
                    &units::ms(p99),
                ));
            }
        }
    }
    let note = if v1 {
        "\n¹ A format 1 file: `--rate` had no effect then (issue 15); one closed-loop echo run at a time \
         published, whatever the rate asked.\n"
    } else {
        ""
    };
    Ok(format!("\n{}{note}\n{verdicts}", t.markdown()))
}

pub fn soak(r: &Results) -> Result<String, RenderError> {
    let samples: Vec<(f64, f64)> = r
        .at("/0/data/rss_samples")?
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some((s[0].as_f64()?, s[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let secs = r.num("/0/data/secs")?;
    let mut marks = vec![0.0, 10.0];
    marks.extend((1..=(secs / 60.0) as u32).map(|m| f64::from(m) * 60.0));
    let mut picked: Vec<(f64, f64)> = Vec::new();
    for m in marks {
        let near = samples
            .iter()
            .min_by(|a, b| (a.0 - m).abs().total_cmp(&(b.0 - m).abs()));
        if let Some(&s) = near {
            if picked.last() != Some(&s) {
                picked.push(s);
            }
        }
    }
    let mut header = vec!["t (s)".to_owned()];
    header.extend(picked.iter().map(|s| format!("{:.0}", s.0)));
    let mut t = Table::new("", &header.iter().map(String::as_str).collect::<Vec<_>>());
    let mut row = vec!["gateway RSS (MiB)".to_owned()];
    row.extend(picked.iter().map(|s| format!("{:.1}", s.1 / 1024.0)));
    t.row(row);
    // The pass rule's own figures: the trend over the samples after the
    // warm-up (the first fifth), against their mean.
    let kept = &samples[samples.len() / 5..];
    let mean = kept.iter().map(|s| s.1).sum::<f64>() / kept.len().max(1) as f64;
    let growth = r.num("/0/data/trend_growth_kib")?;
    let flat = r.at("/0/data/flat")?.as_bool() == Some(true);
    let deliveries = r.num("/0/data/deliveries")?;
    let offered = match opt(&r.reports[0], "/data/publisher/runs_per_s") {
        Some(_) => format!("{} offered", units::per_s(r.num("/0/data/rate")?)),
        None => {
            "events offered not controlled (a format 1 file: `--rate` had no effect then, issue 15)"
                .into()
        }
    };
    let p = |k: &str| r.num(&format!("/0/data/{k}"));
    let summary = format!(
        "{} streams for {:.0} s; {offered}; {} deliveries ({}); {} streams churned; \
         streams still open at the end: {} of {}; stream errors: {}; latency p50 {}, p99 {}.\n",
        units::thousands(p("streams")?),
        secs,
        units::thousands(deliveries),
        units::per_s(deliveries / secs),
        units::thousands(p("churned")?),
        units::thousands(p("still_open")?),
        units::thousands(p("opened")?),
        units::thousands(p("errors")?),
        units::ms(p("latency/p50_ms")?),
        units::ms(p("latency/p99_ms")?),
    );
    let rule = verdict(
        "RSS flat: trend after the warm-up ≤ max(2 %, 4 MiB)",
        flat,
        &format!(
            "{} over a mean of {} after the warm-up, {}",
            units::delta_kib(growth),
            units::mib_of_kib(mean),
            units::percent(growth / mean)
        ),
    );
    Ok(format!("\n{}\n{summary}\n{rule}", t.markdown()))
}

pub fn bus(r: &Results) -> Result<String, RenderError> {
    let mut publish = Table::new(
        "",
        &[
            "publishers",
            "events/s",
            "Redis CPU per publish",
            "Redis time per script call",
        ],
    );
    for (k, p) in r
        .at("/0/data/publish")?
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = |f: &str| r.num(&format!("/0/data/publish/{k}/{f}"));
        publish.row(vec![
            units::thousands(n("publishers")?),
            units::per_s(n("events_per_s")?),
            units::us(n("redis_cpu_us_per_publish")?),
            p["redis_us_per_call"]
                .as_f64()
                .map_or("-".into(), units::us),
        ]);
    }
    let mut fan = Table::new(
        "",
        &[
            "bus",
            "subscribers",
            "events/s offered",
            "events/s published",
            "deliveries/s",
            "lagged",
            "p50",
            "p99",
            "p99.9",
        ],
    );
    for (k, f) in r
        .at("/0/data/fanout")?
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = |x: &str| r.num(&format!("/0/data/fanout/{k}/{x}"));
        fan.row(vec![
            f["bus"].as_str().unwrap_or("?").to_owned(),
            units::thousands(n("subscribers")?),
            units::per_s(n("offered_events_per_s")?),
            units::per_s(n("published_per_s")?),
            units::per_s(n("deliveries_per_s")?),
            units::thousands(n("lagged")?),
            units::ms(n("latency/p50_ms")?),
            units::ms(n("latency/p99_ms")?),
            units::ms(n("latency/p999_ms")?),
        ]);
    }
    Ok(format!(
        "\nPublish throughput (one channel per publisher):\n\n{}\nFan-out, one publisher:\n\n{}",
        publish.markdown(),
        fan.markdown()
    ))
}
