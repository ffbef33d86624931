//! Runs executed by `weir worker` processes behind gateways that only queue
//! them (`--workers 0`), with the store on PostgreSQL: a run started through
//! gateway A and watched on gateway B ends even when the worker executing it
//! is SIGKILLed (with `error` `worker_lost`, then `done`), the other worker's
//! run is untouched, B's stream has no gap and no duplicate, and the store's
//! history holds every event B saw. A cancel through B reaches the worker.
//! Those tests skip, with a printed line, when no PostgreSQL is reachable
//! outside CI. On a Redis Cluster too (`--redis-cluster`, the queue's keys
//! hash-tagged to one slot), a worker takes a queued run and it streams to
//! the gateway's SSE stream.

use std::{collections::HashMap, time::Duration};

use eventsource_stream::Event;
use futures::{Stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::{answer, create_agent, events, open_sse, run_to_end, seqs, until_done};
use crate::common::{
    spawn_store_process, topology::cluster::RedisCluster, within, Api, ProcessBuilder, WeirProcess,
    WorkerCluster,
};

/// Milliseconds the echo model sleeps before each token piece: with
/// [`long_message`] a run streams for several seconds, long enough to kill
/// its worker in the middle.
const SLOW_MS: u64 = 150;

/// How long to wait for the next event. Generous: a dead worker's run ends
/// only after its claim lapses and another worker notices.
const PATIENCE: Duration = Duration::from_secs(60);

/// One worker's runs at a time and a short claim, so the scenario is short.
const WORKER_ENV: [(&str, &str); 2] = [("WEIR_WORKERS", "1"), ("WEIR_RUN_CLAIM_SECS", "2")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_worker_is_killed_still_ends_and_nothing_is_lost() {
    let Some(mut c) = WorkerCluster::start(2, &WORKER_ENV).await else {
        return;
    };
    let key = c.key().await;
    let (first, rest) = c.workers.split_at_mut(1);
    let kill = || first[0].kill();
    let others_alive = || rest.iter_mut().all(WeirProcess::alive);
    killed_worker_scenario(&c.a, &c.b, &key, kill, others_alive).await;
    assert!(c.a.alive() && c.b.alive(), "the gateways still run");
}

/// The acceptance scenario: two runs started through `a` and watched on `b`,
/// each held by one of two workers (one run at a time each); `kill` SIGKILLs
/// one worker while both stream. Both runs end (the killed worker's with
/// `worker_lost` then `done`), B's seqs have no gap or duplicate, A's answers
/// end as B saw, and the store's history holds every event B saw.
pub(crate) async fn killed_worker_scenario<N: Api>(
    a: &N,
    b: &N,
    key: &str,
    kill: impl FnOnce(),
    others_alive: impl FnOnce() -> bool,
) {
    let agent = slow_agent(a, key).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut on_b = events(open_sse(b, key, &path, None).await);
    let posts = [
        start_run(a, key, &agent, "first"),
        start_run(a, key, &agent, "second"),
    ];

    // Both runs are streaming tokens at once, so each worker (one run at a
    // time) holds one of them: kill one worker now.
    let mut seen = Vec::new();
    read_until(&mut on_b, &mut seen, |ev| streaming_runs(ev).len() == 2).await;
    let runs = streaming_runs(&seen);
    kill();
    read_until(&mut on_b, &mut seen, |ev| {
        runs.iter().all(|r| done_of(ev, r).is_some())
    })
    .await;

    // One run ended normally on the surviving worker; the killed worker's
    // run ended with worker_lost then done(error), never re-run.
    let mut outcomes: Vec<&str> = runs.iter().map(|r| outcome(&seen, r)).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, ["completed", "failed"], "events on B: {seen:#?}");
    for run in &runs {
        let want = outcome(&seen, run);
        for node in [a, b] {
            let status = get_json(node, key, &format!("/v1/runs/{run}")).await["status"].clone();
            assert_eq!(status, want, "run {run} on {}", node.base());
        }
    }

    let s = seqs(&seen);
    assert!(
        s.windows(2).all(|w| w[1] == w[0] + 1),
        "B's seqs have no gap and no duplicate: {s:?}"
    );

    // Gateway A's own (JSON) answers end the same way as B saw.
    for post in posts {
        let (status, body) = post.await.unwrap();
        assert_eq!(status, 200, "send message: {body}");
        let run = body["run_id"].as_str().unwrap();
        let last = body["messages"].as_array().unwrap().last().unwrap();
        assert_eq!(
            last,
            done_of(&seen, run).unwrap(),
            "A's answer ends with B's done"
        );
    }
    assert!(others_alive(), "the other worker still runs");

    // Last, as it is the strictest: what B saw live is what the store kept.
    // An event is stored just after it is published, so the last ones may
    // land a moment after B saw them: poll.
    let missing_now = || async {
        let history = history(a, key, &agent).await;
        seen.iter()
            .filter(|v| history.get(&v["seq"].as_u64().unwrap()) != Some(v))
            .map(|v| format!("{} {} of {}", v["seq"], v["message_type"], v["run_id"]))
            .collect::<Vec<String>>()
    };
    let stored = within(Duration::from_secs(5), || async {
        missing_now().await.is_empty()
    })
    .await;
    let missing = if stored {
        Vec::new()
    } else {
        missing_now().await
    };
    assert!(
        missing.is_empty(),
        "history lacks (or differs on) events B saw: {missing:#?}\noutcomes: {:?}",
        runs.iter()
            .map(|r| (r, outcome(&seen, r)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_another_gateway_reaches_the_worker() {
    let Some(c) = WorkerCluster::start(1, &WORKER_ENV).await else {
        return;
    };
    let key = c.key().await;
    let agent = slow_agent(&c.a, &key).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut on_b = events(open_sse(&c.b, &key, &path, None).await);
    let post = start_run(&c.a, &key, &agent, "cancel me");

    let mut seen = Vec::new();
    read_until(&mut on_b, &mut seen, |ev| !streaming_runs(ev).is_empty()).await;
    let run = streaming_runs(&seen).remove(0);
    let r =
        c.b.req_as(&key, Method::POST, &format!("/v1/runs/{run}/cancel"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200, "cancel on B");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["status"], "cancelled",
        "the run as stored after cancel: {body}"
    );

    read_until(&mut on_b, &mut seen, |ev| done_of(ev, &run).is_some()).await;
    assert_eq!(done_of(&seen, &run).unwrap()["stop_reason"], "cancelled");
    let on_a = get_json(&c.a, &key, &format!("/v1/runs/{run}")).await;
    assert_eq!(on_a["status"], "cancelled", "{on_a}");
    let (status, body) = post.await.unwrap();
    assert_eq!(status, 200, "send message: {body}");
    let last = body["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["stop_reason"], "cancelled", "A's answer: {body}");
}

/// A gateway that only queues runs (`--workers 0`) and one `weir worker`,
/// both on a Redis Cluster of three masters and one `weir store`: a run
/// started on the gateway is taken by the worker from the run queue (the
/// metrics of both say so) and its events reach the gateway's SSE stream,
/// numbered without a gap, ending as the run's own answer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_queued_runs_through_a_redis_cluster() {
    let rc = RedisCluster::start(0).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = spawn_store_process(&tmp.path().join("store")).await;
    let addrs = rc.addrs();
    let env = [("WEIR_REDIS_CLUSTER", addrs.as_str())];
    let node = |builder: ProcessBuilder, dir: &str| {
        builder
            .store(&store)
            .data_dir(tmp.path().join(dir))
            .envs(&env)
    };
    let gw = node(WeirProcess::serve(), "gw")
        .envs(&[("WEIR_WORKERS", "0")])
        .spawn()
        .await;
    let worker = node(WeirProcess::worker(), "worker")
        .envs(&WORKER_ENV)
        .spawn()
        .await;
    gw.wait_ready().await;
    worker.wait_ready().await;

    let key = gw.create_key(json!({"scopes": ["*"], "rpm": 10_000})).await;
    let agent = create_agent(&gw, &key).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut sse = events(open_sse(&gw, &key, &path, None).await);
    let body = run_to_end(&gw, &key, &agent, "through the cluster").await;
    let run = body["run_id"].as_str().unwrap();
    let seen = until_done(&mut sse, run).await;
    let s = seqs(&seen);
    assert!(
        s.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no duplicate: {s:?}"
    );
    assert_eq!(seen.last().unwrap()["stop_reason"], "end_turn", "{seen:#?}");
    assert_eq!(
        body["messages"].as_array().unwrap(),
        &answer(&seen),
        "the answer is what the stream showed"
    );
    for (proc, outcome) in [(&gw, "queued"), (&worker, "taken")] {
        let metrics = proc.get("/metrics").await.text().await.unwrap();
        let line = format!(r#"weir_queue_runs_total{{outcome="{outcome}"}} 1"#);
        assert!(
            metrics.lines().any(|l| l == line),
            "{} says `{line}`:\n{metrics}",
            proc.base()
        );
    }
}

/// An echo agent that streams slowly, created through `node`.
async fn slow_agent(node: &impl Api, key: &str) -> String {
    let body = json!({"name": "worked", "metadata": {"echo_delay_ms": SLOW_MS}});
    node.create_agent_as(key, body).await
}

/// Thirty-odd words: the echo model quotes them back one piece at a time.
fn long_message(tag: &str) -> String {
    let words = "the quick brown fox jumps over the lazy dog ".repeat(4);
    format!("{tag}: {}", words.trim_end())
}

/// Sends a message through `node` in the background (tokens streamed, the
/// run kept if the client goes): the task ends with the JSON answer.
fn start_run(node: &impl Api, key: &str, agent: &str, tag: &str) -> JoinHandle<(u16, Value)> {
    let req = node
        .req_as(key, Method::POST, &format!("/v1/agents/{agent}/messages"))
        .json(&json!({
            "message": long_message(tag),
            "stream_tokens": true,
            "background": true,
        }));
    tokio::spawn(async move {
        let r = req.send().await.expect("send message");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

/// Reads events into `seen` until `done(seen)` holds, checking that each
/// SSE id is the event's seq.
async fn read_until(
    s: &mut (impl Stream<Item = Event> + Unpin),
    seen: &mut Vec<Value>,
    done: impl Fn(&[Value]) -> bool,
) {
    while !done(seen) {
        let e = tokio::time::timeout(PATIENCE, s.next())
            .await
            .unwrap_or_else(|_| panic!("no event for {PATIENCE:?}; so far: {seen:#?}"))
            .expect("stream open");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["seq"].to_string(), e.id, "SSE id is the seq: {v}");
        seen.push(v);
    }
}

/// Runs that have streamed at least one token, in the order they started.
fn streaming_runs(seen: &[Value]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for v in seen {
        let run = v["run_id"].as_str().unwrap_or_default();
        if v["message_type"] == "assistant_delta" && !runs.iter().any(|r| r == run) {
            runs.push(run.to_owned());
        }
    }
    runs
}

/// The `done` event of `run`, if seen; panics if there are two.
fn done_of<'a>(seen: &'a [Value], run: &str) -> Option<&'a Value> {
    let mut done = seen
        .iter()
        .filter(|v| v["message_type"] == "done" && v["run_id"] == run);
    let first = done.next();
    assert!(done.next().is_none(), "run {run} has one done");
    first
}

/// `completed` for a run that ended normally, `failed` for one that ended
/// with `error` `worker_lost` right before its `done` (stop_reason `error`).
fn outcome(seen: &[Value], run: &str) -> &'static str {
    let own: Vec<&Value> = seen.iter().filter(|v| v["run_id"] == run).collect();
    let done = own.last().expect("events of the run");
    assert_eq!(done["message_type"], "done", "run {run} ends with done");
    match done["stop_reason"].as_str() {
        Some("end_turn") => "completed",
        Some("error") => {
            let error = own[own.len() - 2];
            assert_eq!(error["message_type"], "error", "{error}");
            assert_eq!(error["code"], "worker_lost", "{error}");
            "failed"
        }
        other => panic!("run {run} stopped with {other:?}"),
    }
}

async fn get_json(node: &impl Api, key: &str, path: &str) -> Value {
    let r = node.req_as(key, Method::GET, path).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path} on {}", node.base());
    r.json().await.unwrap()
}

/// The agent's default-session history from the store, by seq.
async fn history(node: &impl Api, key: &str, agent: &str) -> HashMap<u64, Value> {
    let mut out = HashMap::new();
    let mut after = None;
    loop {
        let mut path = format!("/v1/agents/{agent}/messages?limit=1000");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = get_json(node, key, &path).await;
        for v in page["data"].as_array().unwrap() {
            out.insert(v["seq"].as_u64().unwrap(), v.clone());
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return out,
        }
    }
}
