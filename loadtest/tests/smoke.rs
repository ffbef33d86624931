//! The smoke mode of weir-load against real in-process gateways: every
//! scenario at tiny scale must complete with sane numbers. Nothing here is a
//! timing threshold; the figures themselves come from release runs
//! (BENCHMARKS.md).

use serde_json::Value;
use weir_load::{gateway::Launch, scenario::smoke};

fn data<'a>(reports: &'a [weir_load::report::Report], name: &str) -> &'a Value {
    &reports
        .iter()
        .find(|r| r.scenario == name)
        .unwrap_or_else(|| panic!("no {name} report"))
        .data
}

/// Every answer's first event came no later than its first content, so
/// the quantiles over the same answers keep that order; each answer
/// recorded both.
fn first_event_before_content(what: &str, step: &Value) {
    let (fe, ttft) = (&step["first_event"], &step["ttft"]);
    assert_eq!(fe["count"], step["ok"], "{what}: {step}");
    assert_eq!(ttft["count"], step["ok"], "{what}: {step}");
    for q in ["p50_ms", "p99_ms"] {
        assert!(
            fe[q].as_f64().unwrap() <= ttft[q].as_f64().unwrap(),
            "{what} {q}: {step}"
        );
    }
}

#[test]
fn smoke_runs_every_scenario_with_sane_numbers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let plots = tempfile::tempdir().unwrap();
    let reports = rt
        .block_on(smoke::run(
            &Launch::InProcess,
            &[],
            plots.path().to_path_buf(),
        ))
        .unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    let mut wanted = vec![
        "connections",
        "fanout",
        "fanout-nchan",
        "proxy",
        "proxy",
        "fallback",
        "peer",
        "runs",
        "runs",
        "soak",
        "transport",
    ];
    if smoke::installed("wrk", "--version") {
        wanted.push("rest");
    }
    if smoke::installed("redis-server", "--version") {
        wanted.extend(["bus", "edge"]);
    }
    assert_eq!(names, wanted);
    for r in &reports {
        let failed: Vec<&String> = r
            .checks
            .iter()
            .filter(|(n, ok)| !ok && !n.starts_with("target:"))
            .map(|(n, _)| n)
            .collect();
        assert!(
            failed.is_empty(),
            "{}: failed checks {failed:?}",
            r.scenario
        );
    }

    let c = data(&reports, "connections");
    assert_eq!(c["opened"], 40);
    assert!(
        c["pinged"].as_u64().unwrap() >= 40,
        "every connection pinged: {c}"
    );
    assert!(c["connect_rate_per_s"].as_f64().unwrap() > 0.0);
    assert!(c["rss_after_ping_kib"].as_u64().unwrap() > 0);

    let f = data(&reports, "fanout");
    let memory = &f["deployments"][0];
    assert_eq!(memory["bus"], "memory");
    assert_eq!(memory["subscribers"], 20);
    assert!(memory["published"].as_u64().unwrap() > 0, "{memory}");
    // Every subscriber sees every event published while it listens.
    // The publisher started runs on its schedule (one run at least, however
    // short the window), each counted as it published.
    let publisher = &memory["publisher"];
    assert!(
        publisher["events_per_run"].as_f64().unwrap() > 10.0,
        "{memory}"
    );
    assert!(publisher["runs_started"].as_u64().unwrap() >= 1, "{memory}");
    assert_eq!(publisher["run_errors"], 0, "{memory}");
    assert_eq!(memory["offered_events_per_s"], 100.0);
    let share = memory["delivered_share"].as_f64().unwrap();
    assert!(share > 0.9, "delivered share {share}: {memory}");
    let lat = &memory["latency"];
    assert!(lat["count"].as_u64().unwrap() > 0);
    assert!(lat["p50_ms"].as_f64().unwrap() <= lat["p99_ms"].as_f64().unwrap());

    // Beside nginx + nchan (issue 22): weir's turn always, nchan's where
    // it is installed (.ci/run installs it); every subscriber saw a first
    // event of the stamped publishes.
    let fr = data(&reports, "fanout-nchan");
    let turns = fr["turns"].as_array().unwrap();
    let mut wanted = vec!["weir-memory"];
    if smoke::installed("redis-server", "--version") {
        wanted.push("weir-redis");
    }
    if weir_load::scenario::nchan::available() {
        wanted.push("nchan");
    }
    let names: Vec<&str> = turns
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(names, wanted, "{fr}");
    for t in turns {
        assert_eq!(t["subscribers"], 20, "{t}");
        assert!(t["deliveries"].as_u64().unwrap() > 0, "{t}");
        assert!(t["first_event"]["count"].as_u64().unwrap() >= 20, "{t}");
        assert!(t["cpu_per_delivery_us"].as_f64().unwrap() >= 0.0, "{t}");
    }

    let p = data(&reports, "proxy");
    for target in ["direct", "weir"] {
        let first = &p[target][0];
        assert_eq!(first["errors"], 0, "{target}: {first}");
        assert_eq!(first["ok"], first["sent"], "{target}: {first}");
        assert!(
            first["chunks_per_req"].as_f64().unwrap() >= 4.0,
            "{target}: {first}"
        );
        assert!(
            first["ttft"]["p50_ms"].as_f64().unwrap() <= first["total"]["p99_ms"].as_f64().unwrap()
        );
    }

    // Each target had its 1 s at 50/s as two interleaved half-second
    // slices, merged into one step.
    assert_eq!(p["weir"][0]["sent"], 50, "{}", p["weir"][0]);
    // nginx, the reference proxy, wherever it is installed (.ci/run
    // installs it): same requests, and its CPU per request is measured
    // from its own processes.
    if weir_load::scenario::nginx::available() {
        let first = &p["nginx"][0];
        assert_eq!(first["errors"], 0, "nginx: {first}");
        assert_eq!(first["ok"], first["sent"], "nginx: {first}");
        assert!(first["chunks_per_req"].as_f64().unwrap() >= 4.0, "{first}");
        // Present, not compared: at smoke scale the CPU is a tick or two
        // (/proc counts in 10 ms ticks).
        assert!(
            first["cpu_us_per_request"].as_f64().unwrap() >= 0.0,
            "{first}"
        );
        assert!(p["nginx_added"][0]["total_p99_ms"].is_number(), "{p}");
    }

    let peer = data(&reports, "peer");
    assert!(peer["ratio"].as_f64().unwrap() > 0.0, "{peer}");
    let png = std::fs::read(plots.path().join("smoke_peer.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    // Runs in the gateway always; through the Redis queue, taken by the
    // gateway and by a `weir worker`, wherever redis-server is installed.
    let r = data(&reports, "runs");
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    let wanted: &[&str] = if redis {
        &["gateway", "queue", "workers"]
    } else {
        &["gateway"]
    };
    for d in wanted {
        let first = &r["deployments"][d]["steps"][0];
        assert_eq!(first["errors"], 0, "{d}: {first}");
        assert_eq!(
            first["ok"], first["sent"],
            "{d}: every run answered: {first}"
        );
        assert!(
            first["chunks_per_req"].as_f64().unwrap() >= 1.0,
            "{d}: {first}"
        );
        first_event_before_content(d, first);
    }
    // The OpenAI route through the queue: the bare role chunk is not
    // content, so every answer still counted content pieces.
    let openai = reports
        .iter()
        .filter(|r| r.scenario == "runs")
        .nth(1)
        .unwrap();
    assert_eq!(openai.data["route"], "openai");
    if redis {
        let first = &openai.data["deployments"]["queue"]["steps"][0];
        assert_eq!(first["ok"], first["sent"], "{first}");
        assert!(first["chunks_per_req"].as_f64().unwrap() >= 1.0, "{first}");
        first_event_before_content("openai queue", first);
    }

    let s = data(&reports, "soak");
    assert!(s["rss_samples"].as_array().unwrap().len() >= 2, "{s}");
    assert!(s["deliveries"].as_u64().unwrap() > 0, "{s}");
    if names.contains(&"rest") {
        let rest = data(&reports, "rest");
        for case in rest["cases"].as_array().unwrap() {
            assert_eq!(case["rounds"].as_array().unwrap().len(), 2, "{case}");
            assert!(case["median"]["requests"].as_u64().unwrap() > 0, "{case}");
        }
    }
    if names.contains(&"bus") {
        let fan = &data(&reports, "bus")["fanout"];
        assert_eq!(fan.as_array().unwrap().len(), 3, "{fan}");
        assert!(fan[0]["deliveries_per_s"].as_f64().unwrap() > 0.0, "{fan}");
        assert!(data(&reports, "edge")["redis"]["checks"] == 200);
        assert!(data(&reports, "edge")["redis_run_start"]["checks"] == 200);
    }
    renders_every_kind(&reports);
}

/// The renderers of `weir-load report` read what the scenarios write:
/// every report of this run, written as a results file, renders as a
/// format 2 block (date recorded, the v2 columns present).
fn renders_every_kind(reports: &[weir_load::report::Report]) {
    use weir_load::{render::render, report::write_json};
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("r")).unwrap();
    let mut seen = std::collections::HashSet::new();
    for r in reports {
        // The first report of a scenario; the OpenAI runs have their own.
        let name = if seen.insert(r.scenario.clone()) {
            r.scenario.clone()
        } else {
            format!("{}_2", r.scenario)
        };
        let file = format!("r/{name}.json");
        write_json(
            &root.path().join(&file),
            std::slice::from_ref(r),
            "in-process",
        )
        .unwrap();
        let text =
            render(root.path(), &r.scenario, &[&file]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains("* Run 20"), "{name}: no date: {text}");
        assert!(!text.contains("format 1"), "{name}: {text}");
        let expect = match r.scenario.as_str() {
            "connections" => "| 40 ",
            "fanout" => "| 100/s ",
            "fanout-nchan" => "| weir-memory ",
            "proxy" => "weir adds p99",
            "fallback" => "added TTFT p50",
            "peer" => "highest sustainable rate",
            "runs" => "first event p50",
            "soak" => "gateway RSS (MiB)",
            "rest" => "| embedded ",
            "bus" => "events/s published",
            "edge" => "| local ",
            "transport" => "| HTTP/2 + TLS ",
            other => panic!("no expectation for {other}"),
        };
        assert!(text.contains(expect), "{name}: no `{expect}` in {text}");
    }
    // Several runs of one command in one file: the medians.
    let proxy: Vec<_> = reports
        .iter()
        .filter(|r| r.scenario == "proxy")
        .cloned()
        .collect();
    let twice = [proxy[0].clone(), proxy[0].clone()];
    write_json(&root.path().join("r/x2.json"), &twice, "in-process").unwrap();
    let text = render(root.path(), "proxy-repeat", &["r/x2.json"]).unwrap();
    assert!(text.contains("2 runs at 50/s"), "{text}");

    tls_figures(reports);
}

/// The TLS relay (the second `proxy` report) and every part of `transport`.
fn tls_figures(reports: &[weir_load::report::Report]) {
    let tls = &reports
        .iter()
        .filter(|r| r.scenario == "proxy")
        .nth(1)
        .expect("the proxy run over TLS")
        .data;
    assert_eq!(tls["tls"], true, "{tls}");
    let mut targets = vec!["weir"];
    if weir_load::scenario::nginx::available() {
        targets.push("nginx");
    }
    for target in targets {
        let first = &tls[target][0];
        assert_eq!(first["errors"], 0, "{target} over TLS: {first}");
        assert_eq!(first["ok"], first["sent"], "{target} over TLS: {first}");
    }
    let t = data(reports, "transport");
    let hs = t["handshake"].as_array().unwrap();
    assert_eq!(hs.len(), 2, "{t}");
    assert!(hs[0]["handshakes"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(hs[0]["resumptions"], 0, "full handshakes: {t}");
    assert!(hs[1]["resumptions"].as_u64().unwrap() > 0, "resumed: {t}");
    let idle = t["idle"].as_array().unwrap();
    assert_eq!(idle.len(), 4, "every mode: {t}");
    for m in idle {
        assert_eq!(m["streams"], 20, "{m}");
        assert!(m["pinged"].as_u64().unwrap() >= 20, "{m}");
    }
    // HTTP/2: ten streams on each of two connections.
    assert_eq!(idle[2]["connections"], 2, "{}", idle[2]);
    let fan = t["fanout"].as_array().unwrap();
    assert_eq!(fan.len(), 4, "{t}");
    for m in fan {
        assert_eq!(m["subscribers"], 20, "{m}");
        assert!(m["deliveries"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["errors"], 0, "{m}");
    }
}
