//! Per-key limits: set, read back, changed, bounded by the granting key,
//! refused when out of range, shown in `GET /v1/account`.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use super::{create, send_as};
use crate::{
    both_stores,
    common::{expect_error, weir_bin, Api, TestGateway},
    envelopes::validation_message,
};

both_stores!(
    limits_are_stored_read_back_and_in_force,
    |mode| async move {
        let gw = TestGateway::builder().store(mode).spawn().await;
        let body = json!({"scopes": ["*"], "label": "lim", "rpm": 50, "tpm": 1000,
        "daily_tokens": 50000, "max_runs": 4, "max_websockets": 2});
        let minted = create(&gw, body).await;
        let (id, secret) = (
            minted["id"].as_str().unwrap(),
            minted["secret"].as_str().unwrap(),
        );
        for (field, want) in [
            ("rpm", json!(50)),
            ("tpm", json!(1000)),
            ("daily_tokens", json!(50000)),
            ("max_runs", json!(4)),
            ("max_websockets", json!(2)),
            ("max_sse_streams", Value::Null),
            ("expires_at", Value::Null),
        ] {
            assert_eq!(minted[field], want, "{field} in {minted}");
        }
        let list: Value = gw.get("/v1/keys").await.json().await.unwrap();
        let listed = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap();
        assert_eq!(listed["tpm"], 1000);
        assert_eq!(listed["max_sse_streams"], Value::Null);
        assert!(listed.get("prev_hash").is_none() && listed.get("hash").is_none());
        let acct: Value = gw
            .req_as(secret, Method::GET, "/v1/account")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let limits = &acct["limits"];
        assert_eq!(limits["requests_per_minute"], 50);
        assert_eq!(limits["tpm"], 1000);
        assert_eq!(limits["daily_tokens"], 50000);
        assert_eq!(limits["max_runs"], 4);
        assert_eq!(limits["max_websockets"], 2);
        assert_eq!(
            limits["max_sse_streams"], 20,
            "the default where the key sets none"
        );
        assert_eq!(
            acct["account_limits"],
            json!({"tpm": null, "daily_tokens": null})
        );
        assert_eq!(acct["key"]["expires_at"], Value::Null);
        // PATCH, read back through the store.
        let path = format!("/v1/keys/{id}");
        let body = json!({"label": "renamed", "tpm": null, "max_runs": 8});
        let r = send_as(&gw, gw.key(), Method::PATCH, &path, body).await;
        assert_eq!(r.status(), 200);
        let patched: Value = r.json().await.unwrap();
        assert_eq!(
            (
                patched["label"].as_str(),
                patched["tpm"].clone(),
                patched["max_runs"].clone()
            ),
            (Some("renamed"), Value::Null, json!(8))
        );
        assert_eq!(patched["daily_tokens"], 50000, "fields left out stay");
        let acct: Value = gw
            .req_as(secret, Method::GET, "/v1/account")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            acct["limits"]["tpm"],
            Value::Null,
            "null: back to the default (unlimited)"
        );
        assert_eq!(acct["limits"]["max_runs"], 8);
        let r = send_as(&gw, gw.key(), Method::PATCH, "/v1/keys/key-nope", json!({})).await;
        expect_error(r, 404, "key_not_found").await;
    }
);

#[tokio::test]
async fn a_lowered_rpm_takes_effect_on_the_next_request() {
    let gw = TestGateway::builder().spawn().await;
    let minted = create(&gw, json!({"scopes": ["*"], "rpm": 100})).await;
    let (id, key) = (
        minted["id"].as_str().unwrap(),
        minted["secret"].as_str().unwrap(),
    );
    for _ in 0..5 {
        assert_eq!(
            gw.req_as(key, Method::GET, "/v1/agents")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let r = send_as(
        &gw,
        gw.key(),
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        json!({"rpm": 3}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = gw
            .req_as(key, Method::GET, "/v1/agents")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "3 per minute from the PATCH on"
    );
}

#[tokio::test]
async fn a_key_grants_at_most_its_own_limits() {
    let gw = TestGateway::builder().spawn().await;
    let parent = create(
        &gw,
        json!({"scopes": ["keys", "agents:read"], "rpm": 50,
        "tpm": 1000, "max_runs": 4}),
    )
    .await;
    let (pid, p) = (
        parent["id"].as_str().unwrap(),
        parent["secret"].as_str().unwrap(),
    );
    for (field, value) in [
        ("rpm", json!(51)),
        ("tpm", json!(1001)),
        ("max_runs", json!(5)),
        ("max_websockets", json!(11)),
    ] {
        let mut body = json!({"scopes": ["agents:read"]});
        body[field] = value;
        let r = send_as(&gw, p, Method::POST, "/v1/keys", body).await;
        let e = expect_error(r, 403, "forbidden").await;
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{field}: ")), "{msg}");
        assert!(msg.contains("at most its own limits"), "{msg}");
    }
    // Left out: lowered to the parent's own; equal is fine.
    let r = send_as(
        &gw,
        p,
        Method::POST,
        "/v1/keys",
        json!({"scopes": ["agents:read"], "max_runs": 4}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let child: Value = r.json().await.unwrap();
    assert_eq!(
        (
            child["rpm"].clone(),
            child["tpm"].clone(),
            child["max_runs"].clone()
        ),
        (json!(50), json!(1000), json!(4))
    );
    assert_eq!(
        child["max_websockets"],
        Value::Null,
        "the default is within the parent's"
    );
    // PATCH: not above its own, its own key included; lowering is fine.
    let own = format!("/v1/keys/{pid}");
    let r = send_as(&gw, p, Method::PATCH, &own, json!({"rpm": 60})).await;
    expect_error(r, 403, "forbidden").await;
    let r = send_as(&gw, p, Method::PATCH, &own, json!({"tpm": null})).await;
    let e = expect_error(r, 403, "forbidden").await;
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("tpm: unlimited is more"));
    let cpath = format!("/v1/keys/{}", child["id"].as_str().unwrap());
    let r = send_as(
        &gw,
        p,
        Method::PATCH,
        &cpath,
        json!({"rpm": 10, "label": "x"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The bootstrap key is the operator's: not bound.
    let big = create(
        &gw,
        json!({"scopes": ["*"], "rpm": 1_000_000, "tpm": 100_000_000,
        "max_runs": 10_000}),
    )
    .await;
    assert_eq!(big["max_runs"], 10_000);
}

#[tokio::test]
async fn bad_limits_and_lifetimes_are_400_naming_the_field() {
    let gw = TestGateway::builder().spawn().await;
    let cases = [
        ("rpm", json!(0)),
        ("tpm", json!(-5)),
        ("daily_tokens", json!(1.5)),
        ("max_runs", json!(10_001)),
        ("max_websockets", json!("ten")),
        ("max_sse_streams", json!(0)),
        ("tpm", json!(100_000_001)),
        ("ttl_secs", json!(0)),
        ("expires_at", json!("tomorrow")),
    ];
    for (field, value) in cases {
        let mut body = json!({"scopes": ["chat"]});
        body[field] = value.clone();
        let msg = validation_message(gw.post("/v1/keys", body).await).await;
        assert!(
            msg.starts_with(&format!("{field}: ")),
            "{field}={value}: {msg}"
        );
    }
    let both = json!({"scopes": ["chat"], "ttl_secs": 60, "expires_at": "2099-01-01T00:00:00Z"});
    let msg = validation_message(gw.post("/v1/keys", both).await).await;
    assert!(msg.contains("not both"), "{msg}");
    let minted = create(&gw, json!({"scopes": ["chat"]})).await;
    let path = format!("/v1/keys/{}", minted["id"].as_str().unwrap());
    let r = send_as(&gw, gw.key(), Method::PATCH, &path, json!({"max_runs": 0})).await;
    assert!(validation_message(r).await.starts_with("max_runs: "));
    let r = send_as(
        &gw,
        gw.key(),
        Method::PATCH,
        &path,
        json!({"scopes": ["*"]}),
    )
    .await;
    assert!(validation_message(r).await.contains("unknown field"));
    let r = send_as(
        &gw,
        gw.key(),
        Method::POST,
        &format!("{path}/rotate"),
        json!({"grace_secs": -1}),
    )
    .await;
    assert!(validation_message(r).await.starts_with("grace_secs: "));
}

#[tokio::test]
async fn the_websocket_cap_is_the_keys_own() {
    let gw = TestGateway::builder().spawn().await;
    let key = create(&gw, json!({"scopes": ["*"], "max_websockets": 1})).await;
    let url = gw.ws_url(key["secret"].as_str().unwrap());
    let first = tokio_tungstenite::connect_async(&url)
        .await
        .expect("first socket");
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429)
        }
        other => panic!("second socket: {:?}", other.map(|_| ())),
    }
    drop(first);
}

#[tokio::test]
async fn account_budgets_set_by_the_operator_show_in_account() {
    let gw = TestGateway::builder().spawn().await;
    let run = |args: &[&str]| {
        let out = Command::new(weir_bin())
            .args(["accounts", "set", "default"])
            .args(args)
            .arg("--data-dir")
            .arg(&gw.data_dir)
            .output()
            .expect("run weir accounts set");
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("the account as JSON")
    };
    let printed = run(&["--tpm", "5000", "--daily-tokens", "90000"]);
    assert_eq!(
        (printed["tpm"].clone(), printed["daily_tokens"].clone()),
        (json!(5000), json!(90000))
    );
    let acct: Value = gw.get("/v1/account").await.json().await.unwrap();
    assert_eq!(
        acct["account_limits"],
        json!({"tpm": 5000, "daily_tokens": 90000})
    );
    let printed = run(&["--tpm", "none"]);
    assert_eq!(
        (printed["tpm"].clone(), printed["daily_tokens"].clone()),
        (Value::Null, json!(90000))
    );
    let out = Command::new(weir_bin())
        .args(["accounts", "set", "default", "--tpm", "0"])
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tpm"));
}
