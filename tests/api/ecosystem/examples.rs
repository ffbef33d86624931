//! The cargo examples (`examples/*.rs`), built by `cargo test` like every
//! target, run against a live gateway: they must keep working as the API
//! evolves. Their binaries are found next to the `weir` binary cargo built.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{json, Value};
use tokio::process::Command;

use super::in_ci;
use crate::common::{free_port, poll, spawn_gateway, Api, TestGateway};

/// `target/<profile>/examples/<name>`, or `None` (with a note) when this
/// test run did not build the examples (`cargo test --test api` does not;
/// `cargo test` does). In CI a missing example is a failure.
fn example(name: &str) -> Option<PathBuf> {
    let bin = PathBuf::from(crate::common::weir_bin());
    let path = bin.parent()?.join("examples").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(!in_ci(), "example {name} was not built: {}", path.display());
    eprintln!("SKIPPED: example {name} not built (run `cargo test` or `cargo build --examples`)");
    None
}

/// Runs an example against `gw` with `arg`; returns its stdout.
async fn run(gw: &TestGateway, path: PathBuf, arg: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(&path);
    cmd.arg(arg)
        .env("WEIR_URL", &gw.base)
        .env("WEIR_KEY", &gw.key)
        .env_remove("WEIR_AGENT")
        .env_remove("WEIR_MODEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} hung", path.display()))
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_streams_a_run_with_its_function_call() {
    let Some(bin) = example("sse_client") else {
        return;
    };
    let gw = spawn_gateway().await;
    let out = run(&gw, bin, "what time is it?", &[]).await;
    assert!(
        out.contains("[internal_monologue] The user asks for the time"),
        "{out}"
    );
    assert!(out.contains("[function_message] get_time({}) -> "), "{out}");
    assert!(
        out.contains("You said: \"what time is it?\". The current time is"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("[done] end_turn"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_client_chats_over_the_websocket() {
    let Some(bin) = example("ws_client") else {
        return;
    };
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("ws-existing").await;
    let out = run(&gw, bin, "hello socket", &[("WEIR_AGENT", &agent)]).await;
    assert!(
        out.contains(&format!("[subscribed] \"agent:{agent}\"")),
        "{out}"
    );
    assert!(out.contains("[run_started] \"run-"), "{out}");
    assert!(
        out.contains("[assistant_message] You said: \"hello socket\""),
        "{out}"
    );
    assert!(out.trim_end().ends_with("[done] end_turn"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_reads_chunks_until_done() {
    let Some(bin) = example("openai_stream") else {
        return;
    };
    let gw = spawn_gateway().await;
    let agent = gw.create_agent("openai-existing").await;
    let out = run(&gw, bin, "hi there", &[("WEIR_MODEL", &agent)]).await;
    assert!(out.starts_with(&format!("[model] {agent}")), "{out}");
    assert!(out.contains("You said: \"hi there\""), "{out}");
    assert!(out.contains("[finish_reason] stop"), "{out}");
    assert!(out.contains("[usage] "), "{out}");
    assert!(out.trim_end().ends_with("[done]"), "{out}");
}

/// The Python interpreter to run `examples/openai_sdk.py` with: `WEIR_PYTHON`
/// (`.ci/run` makes a venv with the `openai` package there), else `python3`
/// if it can import `openai`.
fn python_with_openai() -> Option<String> {
    let candidates = std::env::var("WEIR_PYTHON")
        .into_iter()
        .chain(["python3".to_owned()]);
    for py in candidates {
        let ok = std::process::Command::new(&py)
            .args(["-c", "import openai"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py);
        }
    }
    None
}

/// Python with the `openai` package, or `None` (skip; in CI only when
/// WEIR_PYTHON is not set).
pub(super) fn sdk_python(test: &str) -> Option<String> {
    let python = python_with_openai();
    if python.is_none() {
        assert!(
            !in_ci() || std::env::var_os("WEIR_PYTHON").is_none(),
            "WEIR_PYTHON is set but cannot import openai"
        );
        eprintln!("SKIPPED {test}: no Python with the `openai` package (pip install openai, or set WEIR_PYTHON)");
    }
    python
}

/// Runs `examples/openai_sdk.py` against `base` and checks what it printed.
async fn run_sdk_example(python: &str, base: &str, key: &str, env: &[(&str, &str)]) {
    let script = super::crate_dir().join("examples/openai_sdk.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg("what time is it?")
        .env("WEIR_URL", base)
        .env("WEIR_KEY", key)
        .env_remove("WEIR_MODEL")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the SDK example finished")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("[model] agent-"), "{stdout}");
    assert!(stdout.contains("The current time is"), "{stdout}");
    assert!(stdout.contains("[usage] "), "{stdout}");
    assert!(
        stdout.contains("[non-streaming] You said: \"and again, please\""),
        "{stdout}"
    );
    assert!(stdout.contains("[finish_reason] stop"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_py_talks_to_weir() {
    let Some(python) = sdk_python("openai_sdk_py_talks_to_weir") else {
        return;
    };
    let gw = spawn_gateway().await;
    run_sdk_example(&python, &gw.base, &gw.key, &[]).await;
}

/// The same over HTTPS, the test CA given to the SDK (httpx) and to
/// urllib through `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_py_streams_over_https() {
    let Some(python) = sdk_python("openai_sdk_py_streams_over_https") else {
        return;
    };
    let t = crate::transport::spawn_tls_gateway(|_| {}).await;
    assert!(t.gw.base.starts_with("https://"));
    let ca = t.pki.ca();
    let ca = ca.to_str().unwrap();
    run_sdk_example(&python, &t.gw.base, &t.gw.key, &[("SSL_CERT_FILE", ca)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_flow_denies_and_the_run_goes_on() {
    let Some(bin) = example("approval_flow") else {
        return;
    };
    let gw = spawn_gateway().await;
    let out = run(&gw, bin, "what time is it?", &[("WEIR_DECISION", "deny")]).await;
    assert!(
        out.contains("[approval_request] get_time({}) expires "),
        "{out}"
    );
    assert!(out.contains("[approval_response] deny by key-"), "{out}");
    assert!(
        out.contains("[function_message] get_time({}) denied -> \"denied: decided by the approval_flow example\""),
        "{out}"
    );
    assert!(out.trim_end().ends_with("[done] end_turn"), "{out}");
}

/// `examples/webhook_receiver.rs` subscribes itself, refuses deliveries
/// whose signature does not verify (sent here by hand), and prints the
/// first genuine event weir delivers, then deletes its subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_verifies_and_prints_a_signed_event() {
    let Some(bin) = example("webhook_receiver") else {
        return;
    };
    let gw = TestGateway::builder()
        .config(|c| {
            c.webhooks.egress_allow = vec!["127.0.0.1/32".parse().unwrap()];
            c.webhooks.webhook_retry_base_ms = 300;
        })
        .spawn()
        .await;
    let listen = format!("127.0.0.1:{}", free_port());
    let hook_url = format!("http://{listen}/hook");
    let child = Command::new(&bin)
        .env("WEIR_URL", &gw.base)
        .env("WEIR_KEY", &gw.key)
        .env("RECEIVER_LISTEN", &listen)
        .env("RECEIVER_EXIT_AFTER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example starts");
    let output = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await
    });
    let hook = poll(Duration::from_secs(15), || async {
        let page: Value = gw.get("/v1/webhooks").await.json().await.ok()?;
        page["data"]
            .as_array()?
            .iter()
            .find(|h| h["url"] == hook_url.as_str())
            .map(|h| h["id"].as_str().unwrap().to_owned())
    })
    .await
    .expect("the example subscribed itself");

    // Forgeries: a signature under another secret, and none at all. Both
    // are refused (400) and not printed.
    let client = reqwest::Client::new();
    let forged = json!({"type": "agent.created", "timestamp": "2026-01-01T00:00:00.000Z",
                        "data": {"agent_id": "agent-forged"}})
    .to_string();
    let now = weir::util::unix_now().to_string();
    let bad_sig = format!("v1,{}", "A".repeat(43) + "=");
    let r = client
        .post(&hook_url)
        .header("content-type", "application/json")
        .header("webhook-id", "msg-forged")
        .header("webhook-timestamp", &now)
        .header("webhook-signature", &bad_sig)
        .body(forged.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a bad signature is refused");
    let r = client
        .post(&hook_url)
        .header("content-type", "application/json")
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an unsigned delivery is refused");

    // A real event, delivered and signed by weir.
    let agent = gw.create_agent("announced").await;
    let out = output
        .await
        .unwrap()
        .expect("the example exits after one event")
        .expect("the example ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one event printed: {stdout}");
    let (kind, data) = lines[0].split_once(' ').expect("`<type> <data>`");
    assert_eq!(kind, "agent.created", "{stdout}");
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["agent_id"], agent.as_str(), "{stdout}");
    assert!(!stdout.contains("agent-forged"), "{stdout}");
    // It deleted its subscription on the way out.
    let r = gw.get(&format!("/v1/webhooks/{hook}")).await;
    assert_eq!(r.status(), 404);
}
