//! Clients weir did not write, on Node (`tests/node_clients/`, versions
//! pinned in its lock file): the official `openai` Node SDK (over HTTP and
//! over HTTPS), the Vercel AI SDK through `@ai-sdk/openai-compatible`, and
//! `wscat`, each against a real gateway. The scripts assert with the SDKs'
//! own types and error classes and print `[pass]`; wscat's output is checked
//! here, frame by frame.
//!
//! Without Node these tests print why and pass, unless `CI` is set: there
//! they fail (`.ci/run` installs nodejs and npm and the packages).

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

use super::{browser::ensure_node_modules, crate_dir, in_ci};
use crate::common::{spawn_gateway, Api};

/// `tests/node_clients`, its packages installed; `None` without Node (the
/// test is skipped; CI fails instead).
async fn clients_dir(test: &str) -> Option<PathBuf> {
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !has_node {
        assert!(
            !in_ci(),
            "CI is set but node is missing: `.ci/run` installs nodejs"
        );
        eprintln!("SKIPPED {test}: node not found (apt-get install nodejs npm; CI runs it)");
        return None;
    }
    let dir = crate_dir().join("tests/node_clients");
    ensure_node_modules(&dir, "wscat").await;
    Some(dir)
}

/// Runs `tests/node_clients/<script>` with `env` (90 s at most) and checks
/// that it exited 0 after printing `[pass]`.
#[allow(clippy::print_stdout)] // the script's log, shown with --nocapture
async fn run_script(test: &str, script: &str, env: &[(&str, &str)]) {
    let Some(dir) = clients_dir(test).await else {
        return;
    };
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the script finished within 90 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("[pass]"),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script` against a fresh gateway and an `echo` agent of its key.
async fn run_on_echo_agent(test: &str, script: &str) {
    let gw = spawn_gateway().await;
    let agent = gw.create_agent(test).await;
    let env = [
        ("WEIR_URL", gw.base.as_str()),
        ("WEIR_KEY", gw.key.as_str()),
        ("WEIR_AGENT", agent.as_str()),
    ];
    run_script(test, script, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_node_sdk_talks_to_weir() {
    run_on_echo_agent("openai_node_sdk_talks_to_weir", "openai_sdk.mjs").await;
}

/// The same over HTTPS: Node trusts the test CA through
/// `NODE_EXTRA_CA_CERTS`, as a deployment behind a private CA would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_node_sdk_streams_over_https() {
    let t = crate::transport::spawn_tls_gateway(|_| {}).await;
    assert!(t.gw.base.starts_with("https://"));
    let agent = t.gw.create_agent("node-sdk-tls").await;
    let ca = t.pki.ca();
    let env = [
        ("WEIR_URL", t.gw.base.as_str()),
        ("WEIR_KEY", t.gw.key.as_str()),
        ("WEIR_AGENT", agent.as_str()),
        ("NODE_EXTRA_CA_CERTS", ca.to_str().unwrap()),
    ];
    run_script("openai_node_sdk_streams_over_https", "openai_sdk.mjs", &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_sdk_talks_to_weir() {
    run_on_echo_agent("vercel_ai_sdk_talks_to_weir", "vercel_ai.mjs").await;
}

/// wscat sends a ping, a frame that is not JSON, a subscribe and a
/// `user_message` (its `-x` frames, in that order, on one socket). The bad
/// frame gets an error frame and the socket lives on: the frames after it are
/// answered and the run's events arrive in seq order, ending with `done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wscat_chats_and_survives_a_bad_frame() {
    let Some(dir) = clients_dir("wscat_chats_and_survives_a_bad_frame").await else {
        return;
    };
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("wscat").await;
    let subscribe =
        format!(r#"{{"type":"subscribe","channel":"agent:{agent}","request_id":"s1"}}"#);
    let chat = format!(
        r#"{{"type":"user_message","agent_id":"{agent}","message":"hello from wscat","request_id":"r1"}}"#
    );
    let mut child = Command::new(dir.join("node_modules/.bin/wscat"))
        .args(["-c", &gw.ws_url(&gw.key), "-w", "30"])
        .args(["-x", r#"{"type":"ping"}"#, "-x", "not json"])
        .args(["-x", &subscribe, "-x", &chat])
        // wscat ends when its stdin does: keep a pipe open while it runs.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wscat starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut frames: Vec<Value> = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("wscat's output") {
            let frame: Value =
                serde_json::from_str(&line).expect("every line wscat prints is a frame");
            let done = frame["message_type"] == "done";
            frames.push(frame);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the run's done within 30 s");
    let _ = child.kill().await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..4],
        ["pong", "error", "subscribed", "run_started"],
        "{frames:?}"
    );
    assert_eq!(frames[1]["code"], "validation_error");
    assert_eq!(frames[2]["request_id"], "s1");
    assert_eq!(frames[3]["request_id"], "r1");
    let events = &frames[4..];
    assert!(
        events.iter().all(|f| f["type"] == "agent_response"),
        "{frames:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gap, no repeat: {seqs:?}"
    );
    assert_eq!(events[0]["message_type"], "user_message");
    assert_eq!(events[0]["message"], "hello from wscat");
    assert!(
        events
            .iter()
            .any(|f| f["message_type"] == "assistant_message"
                && f["message"] == "You said: \"hello from wscat\""),
        "{frames:?}"
    );
}
