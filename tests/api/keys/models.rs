//! Per-key model access (issue 19, item 6): a key's `models` set on create
//! (REST and `weir keys create`), shown, changed with PATCH, bounded by the
//! granting key, and in force for the relay, `/v1/models`, agents and their
//! runs (REST, OpenAI and WebSocket): another model is 404
//! `model_not_found`, as OpenAI answers.

use std::process::Command;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::{create, send_as};
use crate::{
    both_stores,
    common::{expect_error, weir_bin, Api, TestGateway},
    fake_provider::FakeProvider,
    runs::with_provider,
};

both_stores!(models_are_stored_shown_and_patched, |mode| async move {
    let gw = TestGateway::builder().store(mode).spawn().await;
    let minted = create(
        &gw,
        json!({"scopes": ["chat"], "models": ["upstream/a", "echo", "upstream/a"]}),
    )
    .await;
    assert_eq!(
        minted["models"],
        json!(["upstream/a", "echo"]),
        "repeats dropped"
    );
    let id = minted["id"].as_str().unwrap();
    let unlimited = create(&gw, json!({"scopes": ["chat"]})).await;
    assert_eq!(
        unlimited["models"],
        Value::Null,
        "the operator's default: any model"
    );
    let list: Value = gw.get("/v1/keys").await.json().await.unwrap();
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert_eq!(listed["models"], json!(["upstream/a", "echo"]));
    let path = format!("/v1/keys/{id}");
    for (patch, want) in [
        (json!({"models": ["b"]}), json!(["b"])),
        (json!({"label": "kept"}), json!(["b"])),
        (json!({"models": []}), json!([])),
        (json!({"models": null}), Value::Null),
    ] {
        let r = send_as(&gw, gw.key(), Method::PATCH, &path, patch.clone()).await;
        assert_eq!(r.status(), 200, "{patch}");
        assert_eq!(r.json::<Value>().await.unwrap()["models"], want, "{patch}");
    }
});

#[tokio::test]
async fn malformed_model_lists_are_refused() {
    let gw = TestGateway::builder().spawn().await;
    let long = "m".repeat(201);
    let many: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    let table = [json!(""), json!("   "), json!(long)];
    for name in table {
        let r = send_as(
            &gw,
            gw.key(),
            Method::POST,
            "/v1/keys",
            json!({"scopes": ["chat"], "models": [name]}),
        )
        .await;
        expect_error(r, 400, "validation_error").await;
    }
    for models in [json!(many), json!("echo"), json!([1])] {
        let r = send_as(
            &gw,
            gw.key(),
            Method::POST,
            "/v1/keys",
            json!({"scopes": ["chat"], "models": models}),
        )
        .await;
        expect_error(r, 400, "validation_error").await;
        let id = create(&gw, json!({"scopes": ["chat"]})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = send_as(
            &gw,
            gw.key(),
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            json!({"models": models}),
        )
        .await;
        expect_error(r, 400, "validation_error").await;
    }
}

#[tokio::test]
async fn a_limited_key_grants_no_more_models() {
    let gw = TestGateway::builder().spawn().await;
    let limited = create(
        &gw,
        json!({"scopes": ["*"], "models": ["upstream/a", "echo"]}),
    )
    .await;
    let secret = limited["secret"].as_str().unwrap();
    // (body, status, models of the new key)
    let table = [
        (
            json!({"scopes": ["chat"]}),
            201,
            json!(["upstream/a", "echo"]),
        ),
        (
            json!({"scopes": ["chat"], "models": null}),
            201,
            json!(["upstream/a", "echo"]),
        ),
        (
            json!({"scopes": ["chat"], "models": ["a"]}),
            201,
            json!(["a"]),
        ),
        (
            json!({"scopes": ["chat"], "models": ["upstream/b"]}),
            403,
            Value::Null,
        ),
    ];
    for (body, status, models) in table {
        let r = send_as(&gw, secret, Method::POST, "/v1/keys", body.clone()).await;
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        match status {
            201 => assert_eq!(v["models"], models, "{body}"),
            _ => assert_eq!(v["error"]["code"], "forbidden", "{body}: {v}"),
        }
    }
    let child = create(&gw, json!({"scopes": ["chat"]})).await;
    let path = format!("/v1/keys/{}", child["id"].as_str().unwrap());
    for (patch, status) in [
        (json!({"models": ["echo"]}), 200),
        (json!({"models": null}), 403),
        (json!({"models": ["upstream/b"]}), 403),
        (json!({"label": "no models named"}), 200),
    ] {
        let r = send_as(&gw, secret, Method::PATCH, &path, patch.clone()).await;
        assert_eq!(r.status(), status, "{patch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_keys_create_takes_models() {
    let gw = TestGateway::builder().spawn().await;
    let out = Command::new(weir_bin())
        .args([
            "keys",
            "create",
            "--scopes",
            "chat",
            "--models",
            "upstream/a,echo",
        ])
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .output()
        .expect("weir keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let id = weir::keys::key_id_of(&secret);
    let list: Value = gw.get("/v1/keys").await.json().await.unwrap();
    let key = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned();
    assert_eq!(
        key.expect("listed")["models"],
        json!(["upstream/a", "echo"])
    );
    let out = Command::new(weir_bin())
        .args(["keys", "create", "--scopes", "chat", "--models", "a,,b"])
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--models"));
}

/// One gateway with a provider; a key limited to `fake-text` (the bare
/// name: `upstream/fake-text` is the same model) and `echo`; an agent on
/// each side of the list, made by the operator.
async fn limited_setup() -> (FakeProvider, TestGateway, String, String, String) {
    let fp = FakeProvider::start().await;
    let gw = with_provider(&fp).await;
    let key = create(
        &gw,
        json!({"scopes": ["*"], "models": ["fake-text", "echo"]}),
    )
    .await;
    let key = key["secret"].as_str().unwrap().to_owned();
    let echo = gw.create_agent_as(gw.key(), json!({"model": "echo"})).await;
    let tools = gw
        .create_agent_as(gw.key(), json!({"model": "upstream/fake-tools"}))
        .await;
    (fp, gw, key, echo, tools)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_to_the_keys_models() {
    let (_fp, gw, key, echo, tools) = limited_setup().await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let message = json!({"message": "hi"});
    // (method, path, body, status, code when refused)
    let table = [
        (
            Method::POST,
            "/v1/chat/completions".to_owned(),
            chat("upstream/fake-text"),
            200,
            None,
        ),
        (
            Method::POST,
            "/v1/chat/completions".to_owned(),
            chat("upstream/fake-tools"),
            404,
            Some("model_not_found"),
        ),
        (
            Method::POST,
            "/v1/chat/completions".to_owned(),
            chat(&echo),
            200,
            None,
        ),
        (
            Method::POST,
            "/v1/chat/completions".to_owned(),
            chat(&tools),
            404,
            Some("model_not_found"),
        ),
        (
            Method::POST,
            "/v1/agents".to_owned(),
            json!({"name": "ok", "model": "upstream/fake-text"}),
            201,
            None,
        ),
        (
            Method::POST,
            "/v1/agents".to_owned(),
            json!({"name": "no", "model": "upstream/fake-tools"}),
            404,
            Some("model_not_found"),
        ),
        (
            Method::PATCH,
            format!("/v1/agents/{echo}"),
            json!({"model": "upstream/other"}),
            404,
            Some("model_not_found"),
        ),
        (
            Method::PATCH,
            format!("/v1/agents/{echo}"),
            json!({"name": "renamed"}),
            200,
            None,
        ),
        (
            Method::POST,
            format!("/v1/agents/{echo}/messages"),
            message.clone(),
            200,
            None,
        ),
        (
            Method::POST,
            format!("/v1/agents/{tools}/messages"),
            message,
            404,
            Some("model_not_found"),
        ),
    ];
    for (method, path, body, status, code) in table {
        let r = send_as(&gw, &key, method.clone(), &path, body.clone()).await;
        let what = format!("{method} {path} {body}");
        assert_eq!(r.status(), status, "{what}");
        if let Some(code) = code {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{what}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains("does not exist or you do not have access"),
                "{what}: {v}"
            );
        }
    }
    // The agent on another model is untouched by the refused PATCH.
    let agent: Value = gw
        .get(&format!("/v1/agents/{echo}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agent["model"], "echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refusal_is_openai_shaped_and_models_are_filtered() {
    let (_fp, gw, key, echo, tools) = limited_setup().await;
    let body = json!({"model": "upstream/fake-tools", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = send_as(&gw, &key, Method::POST, "/v1/chat/completions", body).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "model");
    let ids = |v: Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let limited = ids(gw
        .req_as(&key, Method::GET, "/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap());
    assert!(
        limited.contains(&echo) && limited.contains(&"upstream/fake-text".to_owned()),
        "{limited:?}"
    );
    assert!(
        !limited.contains(&tools) && !limited.contains(&"upstream/fake-tools".to_owned()),
        "{limited:?}"
    );
    let all = ids(gw.get("/v1/models").await.json().await.unwrap());
    assert!(
        all.contains(&tools) && all.contains(&"upstream/fake-tools".to_owned()),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_run_keeps_to_the_keys_models() {
    let (_fp, gw, key, echo, tools) = limited_setup().await;
    let (mut ws, _) = connect_async(gw.ws_url(&key)).await.expect("handshake");
    for (agent, want) in [(&tools, "error"), (&echo, "run_started")] {
        let frame =
            json!({"type": "user_message", "agent_id": agent, "message": "hi", "request_id": "r"});
        ws.send(Message::text(frame.to_string())).await.unwrap();
        let reply = loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
            match next
                .expect("a frame in time")
                .expect("open")
                .expect("frame")
            {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["request_id"] == "r" {
                        break v;
                    }
                }
                _ => continue,
            }
        };
        assert_eq!(reply["type"], want, "{agent}: {reply}");
        if want == "error" {
            assert_eq!(reply["code"], "model_not_found", "{reply}");
        }
    }
}
