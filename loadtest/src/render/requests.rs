//! Renderers of the request scenarios: `proxy` (one run or several of the
//! same command), `peer`, `runs`, `rest`, and the limiter's `edge`.

use serde_json::Value;

use super::{opt, verdict, Bound, RateRatio, RenderError, Results};
use crate::{report::Table, units};

/// The target of issue 4: what weir adds to p99 at 2,000 req/s, ms.
const ADDED_P99_MS: f64 = 0.25;

fn steps<'a>(rep: &'a Value, pointer: &str) -> &'a [Value] {
    rep.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// One row per step of `steps`, under `name`.
fn step_rows(t: &mut Table, name: &str, steps: &[Value], first_event: bool) {
    let m = |s: &Value, p: &str| opt(s, p).map_or("-".into(), units::ms);
    for s in steps {
        let mut row = vec![
            name.to_owned(),
            opt(s, "/rate").map_or("-".into(), units::per_s),
            opt(s, "/achieved").map_or("-".into(), units::per_s),
            opt(s, "/errors").map_or("-".into(), units::thousands),
        ];
        if first_event {
            row.extend([m(s, "/first_event/p50_ms"), m(s, "/first_event/p99_ms")]);
        }
        row.extend([
            m(s, "/ttft/p50_ms"),
            m(s, "/ttft/p99_ms"),
            m(s, "/total/p50_ms"),
            m(s, "/total/p99_ms"),
        ]);
        row.push(opt(s, "/cpu_us_per_request").map_or("-".into(), units::us));
        row.push(
            if s["sustained"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
        );
        t.row(row);
    }
}

fn steps_table(first_event: bool) -> Table {
    let mut h = vec!["target", "rate", "done", "errors"];
    if first_event {
        h.extend(["first event p50", "first event p99"]);
    }
    h.extend([
        "TTFT p50",
        "TTFT p99",
        "total p50",
        "total p99",
        "CPU/request",
        "sustained",
    ]);
    Table::new("", &h)
}

/// `rate`'s entry of an `added` array.
fn added_at(rep: &Value, key: &str, rate: f64) -> Option<f64> {
    steps(rep, &format!("/data/{key}"))
        .iter()
        .find(|a| a["rate"].as_f64() == Some(rate))
        .and_then(|a| a["total_p99_ms"].as_f64())
}

pub fn proxy(r: &Results) -> Result<String, RenderError> {
    let rep = &r.reports[0];
    let mut t = steps_table(false);
    let mut bounds = String::new();
    for name in ["direct", "weir", "nginx"] {
        let s = steps(rep, &format!("/data/{name}"));
        if !s.is_empty() {
            step_rows(&mut t, name, s, false);
            bounds.push_str(&format!(
                "* {name}'s highest sustainable rate: {}.\n",
                Bound::from_steps(s).describe()
            ));
        }
    }
    let mut added = Table::new(
        "",
        &[
            "rate",
            "weir adds p50",
            "weir adds p99",
            "nginx adds p50",
            "nginx adds p99",
        ],
    );
    let nginx = steps(rep, "/data/nginx_added");
    for a in steps(rep, "/data/added") {
        let n = nginx.iter().find(|n| n["rate"] == a["rate"]);
        let f = |v: Option<&Value>, k: &str| {
            v.and_then(|v| v[k].as_f64()).map_or("-".into(), units::ms)
        };
        added.row(vec![
            opt(a, "/rate").map_or("-".into(), units::per_s),
            f(Some(a), "total_p50_ms"),
            f(Some(a), "total_p99_ms"),
            f(n, "total_p50_ms"),
            f(n, "total_p99_ms"),
        ]);
    }
    let v = match added_at(rep, "added", 2000.0) {
        Some(a) => verdict(
            &format!("weir adds ≤ {} p99 at 2,000 req/s", units::ms(ADDED_P99_MS)),
            a <= ADDED_P99_MS,
            &units::ms(a),
        ),
        None => String::new(),
    };
    let tls = if rep.pointer("/data/tls").and_then(Value::as_bool) == Some(true) {
        "\nClients reach weir and nginx over TLS (each terminates it with the same ECDSA P-256 certificate; HTTP/1.1 keep-alive from the client, plain HTTP to the provider); direct is plain HTTP.\n"
    } else {
        ""
    };
    Ok(format!(
        "{tls}\n{}\nWhat each proxy adds over calling the provider directly (its total latency minus direct's, same run):\n\n{}\n{bounds}{v}",
        t.markdown(),
        added.markdown()
    ))
}

/// `median (min–max)` of `xs`, formatted with `f`.
pub(super) fn spread(mut xs: Vec<f64>, f: fn(f64) -> String) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    xs.sort_by(f64::total_cmp);
    format!(
        "{} ({}–{})",
        f(xs[(xs.len() - 1) / 2]),
        f(xs[0]),
        f(xs[xs.len() - 1])
    )
}

pub fn proxy_repeat(r: &Results) -> Result<String, RenderError> {
    let rate = r.num("/0/data/weir/0/rate")?;
    let at = |rep: &Value, target: &str, p: &str| {
        steps(rep, &format!("/data/{target}"))
            .iter()
            .find(|s| s["rate"].as_f64() == Some(rate))
            .and_then(|s| opt(s, p))
    };
    let all = |target: &str, p: &str| {
        r.reports
            .iter()
            .filter_map(|rep| at(rep, target, p))
            .collect::<Vec<_>>()
    };
    let added = |key: &str| {
        r.reports
            .iter()
            .filter_map(|rep| added_at(rep, key, rate))
            .collect::<Vec<_>>()
    };
    let mut t = Table::new(
        "",
        &[
            "target",
            "total p50",
            "total p99",
            "adds p99",
            "CPU/request",
        ],
    );
    for (name, key) in [("direct", ""), ("weir", "added"), ("nginx", "nginx_added")] {
        t.row(vec![
            name.into(),
            spread(all(name, "/total/p50_ms"), units::ms),
            spread(all(name, "/total/p99_ms"), units::ms),
            if key.is_empty() {
                "-".into()
            } else {
                spread(added(key), units::ms)
            },
            spread(all(name, "/cpu_us_per_request"), units::us),
        ]);
    }
    let mut weir_added = added("added");
    weir_added.sort_by(f64::total_cmp);
    let v = match weir_added.get(weir_added.len().saturating_sub(1) / 2) {
        Some(&m) => verdict(
            &format!(
                "weir adds ≤ {} p99 at {}",
                units::ms(ADDED_P99_MS),
                units::per_s(rate)
            ),
            m <= ADDED_P99_MS,
            &format!("median of {} runs: {}", weir_added.len(), units::ms(m)),
        ),
        None => String::new(),
    };
    Ok(format!(
        "\n{} runs at {}; medians, with the range over the runs in brackets; \"adds\" is the target's total p99 \
         minus direct's in the same run:\n\n{}\n{v}",
        r.reports.len(),
        units::per_s(rate),
        t.markdown()
    ))
}

pub fn peer(r: &Results) -> Result<String, RenderError> {
    let rep = &r.reports[0];
    let name = rep
        .pointer("/data/peer")
        .and_then(Value::as_str)
        .unwrap_or("peer")
        .to_owned();
    let mut t = steps_table(false);
    step_rows(&mut t, "direct", steps(rep, "/data/direct"), false);
    step_rows(&mut t, "weir", steps(rep, "/data/weir"), false);
    step_rows(&mut t, &name, steps(rep, "/data/peer_steps"), false);
    let weir = Bound::from_steps(steps(rep, "/data/weir"));
    let peer = Bound::from_steps(steps(rep, "/data/peer_steps"));
    let ratio = RateRatio::of(weir, peer);
    let mut out = format!(
        "\n{}\n* weir's highest sustainable rate: {}.\n* {name}'s: {}.\n* Ratio: {}.\n",
        t.markdown(),
        weir.describe(),
        peer.describe(),
        ratio.describe("weir", &name)
    );
    let lower = ratio
        .lower
        .map_or("no lower bound".into(), |l| format!("lower bound {l:.0}×"));
    out.push_str(&match ratio.at_least(20.0) {
        Some(met) => verdict(&format!("≥ 20× {name}'s sustainable rate at equal p99"), met, &lower),
        None => format!("* Target ≥ 20× {name}'s sustainable rate at equal p99: **not decided by these ramps** ({lower}).\n"),
    });
    if let Some(a) = added_at(rep, "added", 2000.0) {
        out.push_str(&verdict(
            &format!("weir adds ≤ {} p99 at 2,000 req/s", units::ms(ADDED_P99_MS)),
            a <= ADDED_P99_MS,
            &units::ms(a),
        ));
    }
    Ok(out)
}

pub fn runs(r: &Results) -> Result<String, RenderError> {
    let rep = &r.reports[0];
    let deps = rep
        .pointer("/data/deployments")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // Format 1 timed TTFT to the agent route's bare role chunk: not shown.
    let v2 = deps
        .values()
        .any(|d| d.pointer("/steps/0/first_event").is_some());
    let mut t = if v2 {
        steps_table(true)
    } else {
        Table::new(
            "",
            &[
                "target",
                "rate",
                "done",
                "errors",
                "total p50",
                "total p99",
                "sustained",
            ],
        )
    };
    let mut bounds = String::new();
    for name in ["gateway", "queue", "workers"] {
        let Some(d) = deps.get(name) else { continue };
        let s = steps(d, "/steps");
        if v2 {
            step_rows(&mut t, name, s, true);
        } else {
            for st in s {
                t.row(vec![
                    name.into(),
                    opt(st, "/rate").map_or("-".into(), units::per_s),
                    opt(st, "/achieved").map_or("-".into(), units::per_s),
                    opt(st, "/errors").map_or("-".into(), units::thousands),
                    opt(st, "/total/p50_ms").map_or("-".into(), units::ms),
                    opt(st, "/total/p99_ms").map_or("-".into(), units::ms),
                    if st["sustained"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                ]);
            }
        }
        bounds.push_str(&format!(
            "* {name}: highest sustainable run rate {}.\n",
            Bound::from_steps(s).describe()
        ));
    }
    let note = if v2 {
        ""
    } else {
        "\nA format 1 file: its TTFT stopped at the agent route's bare role chunk (issue 15), so no TTFT is shown.\n"
    };
    Ok(format!("\n{}{note}\n{bounds}", t.markdown()))
}

pub fn rest(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new(
        "",
        &["case", "requests/s by round", "median", "p50", "p90", "p99"],
    );
    let mut v = String::new();
    for (k, c) in r
        .at("/0/data/cases")?
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = |p: &str| r.num(&format!("/0/data/cases/{k}/median/{p}"));
        let rounds: Vec<String> = steps(c, "/rounds")
            .iter()
            .filter_map(|w| opt(w, "/requests_per_s"))
            .map(units::thousands)
            .collect();
        let case = c["case"].as_str().unwrap_or("?");
        let rps = n("requests_per_s")?;
        t.row(vec![
            case.into(),
            rounds.join(", "),
            units::per_s(rps),
            units::ms(n("p50_ms")?),
            units::ms(n("p90_ms")?),
            units::ms(n("p99_ms")?),
        ]);
        if case == "embedded" {
            v = verdict(
                "embedded store ≥ 20,000 req/s",
                rps >= 20_000.0,
                &units::per_s(rps),
            );
        }
    }
    Ok(format!("\n{}\n{v}", t.markdown()))
}

pub fn edge(r: &Results) -> Result<String, RenderError> {
    let mut t = Table::new("", &["limiter", "checks", "p50", "p99", "p99.9", "mean"]);
    let mut v = String::new();
    // The per-chunk charge has the run-start checks' local target; the
    // usage count per request has none of its own in the results (no check).
    let cases = [
        ("local", "local", Some(5.0)),
        ("redis", "redis", Some(300.0)),
        ("local_run_start", "local run start", Some(5.0)),
        ("redis_run_start", "redis run start", Some(300.0)),
        ("token_chunk", "token charge per chunk", Some(5.0)),
        ("usage_request", "usage count per request", None),
    ];
    for (field, name, target) in cases {
        // Results written before run starts and the token meter were
        // measured lack those rows.
        if !matches!(field, "local" | "redis") && r.num(&format!("/0/data/{field}/checks")).is_err()
        {
            continue;
        }
        let n = |p: &str| r.num(&format!("/0/data/{field}/{p}"));
        let p99 = n("p99_us")?;
        t.row(vec![
            name.into(),
            units::thousands(n("checks")?),
            units::us(n("p50_us")?),
            units::us(p99),
            units::us(n("p999_us")?),
            units::us(n("mean_us")?),
        ]);
        if let Some(target) = target {
            v.push_str(&verdict(
                &format!("{name} check p99 ≤ {}", units::us(target)),
                p99 <= target,
                &units::us(p99),
            ));
        }
    }
    Ok(format!("\n{}\n{v}", t.markdown()))
}
