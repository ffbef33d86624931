//! Runs driven over the WebSocket core with the real runtime and the `echo`
//! model: `run_started` ordering, `run:` channels, cancel on close; and the
//! runtime's own start under them (a run's row written beside its start).

use std::time::Duration;

use serde_json::{json, Value};

use super::{agent, connect, test_state, Client, ALL};
use crate::{
    agent::{ChatMessage, RunFollower, StartRun},
    domain::{AgentId, RunId, RunStatus, SessionId, StopReason},
    state::AppState,
    store::Run,
    stream::ws::WsSettings,
};

/// Frames until (and including) the `done` of `run_id`.
async fn until_done(c: &mut Client, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = c.json().await;
        let done = v["message_type"] == "done" && v["run_id"] == run_id;
        out.push(v);
        if done {
            return out;
        }
    }
}

async fn wait_status(state: &AppState, run_id: &str, want: RunStatus) {
    for _ in 0..100 {
        // Through the runtime: a run's row is written beside its start.
        let run = state.runtime.get_run("acc", &run_id.into()).await.unwrap();
        if run.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_message_answers_run_started_before_the_runs_events() {
    let (state, _tmp) = test_state(1000).await;
    let id = agent(&state, "acc", json!({})).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 64);
    for round in 0..3 {
        // From the second round on the agent channel is already live: the
        // outbox must still put run_started first.
        let rid = format!("r{round}");
        c.send(
            json!({"type": "user_message", "agent_id": id, "message": "Hello", "request_id": rid}),
        )
        .await;
        let first = c.json().await;
        assert_eq!(first["type"], "run_started", "round {round}: {first}");
        assert_eq!(first["request_id"], rid.as_str());
        let run_id = first["run_id"].as_str().unwrap().to_owned();
        let frames = until_done(&mut c, &run_id).await;
        let kinds: Vec<&str> = frames
            .iter()
            .filter_map(|v| v["message_type"].as_str())
            .collect();
        assert!(kinds.contains(&"assistant_message"), "{kinds:?}");
        let seqs: Vec<u64> = frames.iter().filter_map(|v| v["seq"].as_u64()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "seq strictly increasing: {seqs:?}"
        );
        assert!(frames.iter().all(|v| v["type"] == "agent_response"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_channel_replays_a_finished_run_and_ends_at_done() {
    let (state, _tmp) = test_state(1000).await;
    let id = agent(&state, "acc", json!({})).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 64);
    c.send(json!({"type": "user_message", "agent_id": id, "message": "what time is it?"}))
        .await;
    let run_id = c.json().await["run_id"].as_str().unwrap().to_owned();
    let live = until_done(&mut c, &run_id).await;
    wait_status(&state, &run_id, RunStatus::Completed).await;
    c.send(json!({"type": "unsubscribe", "channel": format!("agent:{id}")}))
        .await;
    assert_eq!(c.json().await["type"], "unsubscribed");
    // The same run again over `run:`: the stored events, same bytes and seqs
    // as live (the run's input `user_message` excluded), ending at done.
    let expected: Vec<&Value> = live
        .iter()
        .filter(|v| v["message_type"] != "user_message")
        .collect();
    for _ in 0..2 {
        c.send(json!({"type": "subscribe", "channel": format!("run:{run_id}")}))
            .await;
        assert_eq!(c.json().await["type"], "subscribed");
        let replay = until_done(&mut c, &run_id).await;
        assert_eq!(replay.iter().collect::<Vec<_>>(), expected);
    }
    // Resuming the run channel after a seq gives only what follows it.
    let cut = expected[1]["seq"].as_u64().unwrap();
    c.send(json!({"type": "subscribe", "channel": format!("run:{run_id}"), "after": cut}))
        .await;
    assert_eq!(c.json().await["type"], "subscribed");
    let tail = until_done(&mut c, &run_id).await;
    assert_eq!(tail.iter().collect::<Vec<_>>(), expected[2..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_socket_cancels_its_runs_unless_background() {
    let (state, _tmp) = test_state(1000).await;
    let slow = agent(&state, "acc", json!({"echo_delay_ms": 200})).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 64);
    c.send(json!({"type": "user_message", "agent_id": slow, "message": "a long story please"}))
        .await;
    let fg = c.json().await["run_id"].as_str().unwrap().to_owned();
    c.send(json!({"type": "user_message", "agent_id": slow, "message": "another one", "background": true})).await;
    let bg = loop {
        let v = c.json().await;
        if v["type"] == "run_started" {
            break v["run_id"].as_str().unwrap().to_owned();
        }
    };
    drop(c); // the client goes away without a close frame
    wait_status(&state, &fg, RunStatus::Cancelled).await;
    assert_eq!(
        state
            .runtime
            .get_run("acc", &bg.as_str().into())
            .await
            .unwrap()
            .status,
        RunStatus::Running
    );
    state.runtime.cancel_run("acc", &bg.into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_frame_stops_a_run_and_errors_name_the_run() {
    let (state, _tmp) = test_state(1000).await;
    let slow = agent(&state, "acc", json!({"echo_delay_ms": 200})).await;
    let mut c = connect(&state, "acc", ALL, WsSettings::default(), 64);
    c.send(json!({"type": "user_message", "agent_id": slow, "message": "a long story please"}))
        .await;
    let run_id = c.json().await["run_id"].as_str().unwrap().to_owned();
    c.send(json!({"type": "cancel", "run_id": run_id})).await;
    let frames = until_done(&mut c, &run_id).await;
    assert_eq!(frames.last().unwrap()["stop_reason"], "cancelled");
    c.send(json!({"type": "cancel", "run_id": "run-nope", "request_id": "c1"}))
        .await;
    let e = c.json().await;
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("run_not_found"), Some("c1"))
    );
    c.send(json!({"type": "user_message", "agent_id": "agent-nope", "message": "x"}))
        .await;
    assert_eq!(c.json().await["code"], "agent_not_found");
}

/// A run as the runtime starts it for a test: `background`, no slot.
fn start(agent_id: &str, run_id: &RunId) -> StartRun {
    StartRun {
        run_id: Some(run_id.clone()),
        agent_id: agent_id.into(),
        agent: None,
        session: None::<SessionId>.into(),
        messages: vec![ChatMessage::user("Hello")],
        stream_tokens: false,
        background: true,
        slot: None,
        models: None,
    }
}

/// The run's events until its `done`, as a follower sees them.
async fn events_until_done(state: &AppState, agent_id: &str, run_id: &RunId) -> Vec<Value> {
    let agent_id = AgentId::from(agent_id);
    let mut follower = RunFollower::subscribe(state.bus.clone(), &agent_id, run_id)
        .await
        .unwrap();
    state
        .runtime
        .start_run("acc", start(agent_id.as_str(), run_id))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(ev) = follower.next().await {
        out.push(serde_json::to_value(ev.event().unwrap()).unwrap());
    }
    assert!(follower.finished(), "no done: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_found_by_id_as_soon_as_it_has_started() {
    // Its row is written beside its start (agent::row); a read by id
    // waits for it rather than answering run_not_found.
    let (state, _tmp) = test_state(1000).await;
    let id = agent(&state, "acc", json!({})).await;
    for _ in 0..20 {
        let run_id = RunId::generate();
        let run = state
            .runtime
            .start_run("acc", start(&id, &run_id))
            .await
            .unwrap();
        let read = state.runtime.get_run("acc", &run_id).await.unwrap();
        assert_eq!((read.id, read.agent_id.as_str()), (run.id, id.as_str()));
        assert!(state.runtime.get_run("other", &run_id).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_row_cannot_be_stored_fails_unavailable_and_is_not_kept() {
    let (state, _tmp) = test_state(1000).await;
    let id = agent(&state, "acc", json!({})).await;
    // A row of the run's id is there already: its own cannot be written.
    let run_id = RunId::generate();
    let now = crate::util::now();
    let there = Run {
        id: run_id.clone(),
        agent_id: id.as_str().into(),
        session_id: "ses-other".into(),
        status: RunStatus::Completed,
        stop_reason: Some(StopReason::EndTurn),
        error: None,
        error_code: None,
        created_at: now.clone(),
        updated_at: now,
    };
    state.store.create_run("acc", there.clone()).await.unwrap();
    let events = events_until_done(&state, &id, &run_id).await;
    let error = events
        .iter()
        .find(|e| e["message_type"] == "error")
        .unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert_eq!(error["code"], "unavailable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("could not be stored"),
        "{error}"
    );
    let done = events.last().unwrap();
    assert_eq!(
        (&done["message_type"], &done["stop_reason"]),
        (&json!("done"), &json!("error"))
    );
    // The run's end was published, not stored over the other row.
    let kept = state.store.get_run("acc", run_id.as_str()).await.unwrap();
    assert_eq!(
        (kept.status, kept.session_id),
        (there.status, there.session_id)
    );
}
