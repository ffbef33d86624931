//! History, logs, restarts and crash recovery of runs.

use std::time::Duration;

use serde_json::{json, Value};
use weir::store::Run;

use super::{get_json, of_type, run_sse, send, types};
use crate::{
    common::{expect_error, poll, spawn_gateway, Api},
    protocol::assert_valid,
};

#[tokio::test]
async fn history_is_paginated_per_session() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let path = format!("/v1/agents/{agent}/messages");
    // Nothing yet: an empty page, and no default session made by reading.
    let empty = get_json(&gw, &path).await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(empty["pagination"]["total"], 0);
    for text in ["first", "second", "third"] {
        assert_eq!(gw.post(&path, json!({"message": text})).await.status(), 200);
    }
    let all_events = get_json(&gw, &format!("{path}?limit=1000")).await;
    let evs = all_events["data"].as_array().unwrap().clone();
    assert_eq!(all_events["pagination"]["total"], evs.len());
    assert_eq!(evs.len(), 3 * 5, "user_message + 4 events per run");
    let users: Vec<&str> = of_type(&evs, "user_message")
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["first", "second", "third"], "oldest first");
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    for e in &evs {
        assert_valid("event.json", e);
    }
    // Page by cursor: 4 at a time, no gap, no duplicate.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&after={c}"));
        let page = get_json(&gw, &format!("{path}?limit=4{q}")).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 4);
        paged.extend(data.iter().cloned());
        match page["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, evs);
    let page = get_json(&gw, &format!("{path}?limit=2&offset=2")).await;
    assert_eq!(page["data"].as_array().unwrap()[..], evs[2..4]);
    expect_error(
        gw.get(&format!("{path}?limit=0")).await,
        400,
        "validation_error",
    )
    .await;

    // A named session keeps its own history.
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/sessions"),
            json!({"name": "side"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let sid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out: Value = gw
        .post(&path, json!({"message": "aside", "session_id": sid}))
        .await
        .json()
        .await
        .unwrap();
    assert!(out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["session_id"] == sid.as_str()));
    let side = get_json(&gw, &format!("{path}?session_id={sid}")).await;
    assert_eq!(side["pagination"]["total"], 5);
    assert_eq!(side["data"][0]["message"], "aside");
    let default = get_json(&gw, &format!("{path}?limit=1000")).await;
    assert_eq!(
        default["data"].as_array().unwrap().len(),
        15,
        "the default session is unchanged"
    );
    expect_error(
        gw.get(&format!("{path}?session_id=ses-nope")).await,
        404,
        "session_not_found",
    )
    .await;
}

#[tokio::test]
async fn logs_are_written_per_run() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let out: Value = send(&gw, &agent, json!({"message": "what time is it"}))
        .await
        .json()
        .await
        .unwrap();
    let run_id = out["run_id"].as_str().unwrap();
    // The last line is written after the run's final status: poll briefly.
    let logs = || async {
        get_json(&gw, &format!("/v1/agents/{agent}/logs")).await["data"]
            .as_array()
            .unwrap()
            .clone()
    };
    let ended = poll(Duration::from_secs(1), || async {
        let lines = logs().await;
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().starts_with("run ended"))
            .then_some(lines)
    })
    .await;
    let lines = match ended {
        Some(lines) => lines,
        None => logs().await,
    };
    let msgs: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(msgs[0].starts_with("run started: model echo"), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("model echo called (step 1): ") && m.ends_with(" ms")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("tool get_time called: success")),
        "{msgs:?}"
    );
    assert!(
        msgs.last()
            .unwrap()
            .starts_with("run ended: completed (end_turn)"),
        "{msgs:?}"
    );
    let mut last = 0;
    for l in &lines {
        assert_valid("event.json", l);
        assert_eq!(l["message_type"], "log");
        assert_eq!(l["run_id"], run_id);
        assert_eq!(l["level"], "info");
        let seq = l["seq"].as_u64().unwrap();
        assert!(seq > last);
        last = seq;
    }
    let page = get_json(&gw, &format!("/v1/agents/{agent}/logs?limit=2")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["pagination"]["next_cursor"].is_string());
}

#[tokio::test]
async fn restart_keeps_runs_history_and_seq() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let path = format!("/v1/agents/{agent}/messages");
    let out: Value = gw
        .post(&path, json!({"message": "before"}))
        .await
        .json()
        .await
        .unwrap();
    let run_id = out["run_id"].as_str().unwrap().to_owned();
    let before = get_json(&gw, &path).await;
    let last_seq = before["data"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let logs_before = get_json(&gw, &format!("/v1/agents/{agent}/logs?limit=1000")).await["data"]
        .as_array()
        .unwrap()
        .len();

    let gw = gw.restart().await;
    let run = get_json(&gw, &format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(get_json(&gw, &path).await, before, "history survives");
    let evs = run_sse(&gw, &agent, json!({"message": "after", "stream": true})).await;
    assert!(
        evs[0]["seq"].as_u64().unwrap() > last_seq + 1,
        "seq continues after the user_message"
    );
    assert_eq!(
        evs[0]["session_id"], before["data"][0]["session_id"],
        "same default session"
    );
    let logs = get_json(&gw, &format!("/v1/agents/{agent}/logs?limit=1000")).await["data"]
        .as_array()
        .unwrap()
        .clone();
    assert!(logs.len() > logs_before);
    let seqs: Vec<u64> = logs.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "log seq continues too: {seqs:?}"
    );
}

#[tokio::test]
async fn a_run_left_running_by_a_dead_gateway_is_settled_as_failed() {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("echo").await;
    let out: Value = send(&gw, &agent, json!({"message": "x"}))
        .await
        .json()
        .await
        .unwrap();
    let session = out["messages"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let orphan = Run {
        id: "run-orphanAAAAAAAAAAAAAAAA".into(),
        agent_id: agent.clone().into(),
        session_id: session.into(),
        status: weir::domain::RunStatus::Running,
        stop_reason: None,
        error: None,
        error_code: None,
        created_at: "2020-01-01T00:00:00.000Z".into(),
        updated_at: "2020-01-01T00:00:00.000Z".into(),
    };
    gw.store
        .create_run("default", orphan.clone())
        .await
        .unwrap();
    let run = get_json(&gw, &format!("/v1/runs/{}", orphan.id)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "error");
    assert!(run["error"].as_str().unwrap().contains("interrupted"));
    assert_eq!(run["error_code"], "interrupted", "{run}");
    let history = get_json(&gw, &format!("/v1/agents/{agent}/messages?limit=1000")).await;
    let ends: Vec<&Value> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["run_id"] == orphan.id.as_str())
        .collect();
    assert_eq!(
        types(&ends.into_iter().cloned().collect::<Vec<_>>()),
        ["error", "done"]
    );
}
