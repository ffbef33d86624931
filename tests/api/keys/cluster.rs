//! Key changes on both gateways of a [`Cluster`] (shared store, Redis bus):
//! a PATCH, a rotation's grace and an expiry hold on the gateway that did
//! not make the change, as on the one that did.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{account_status, create, send_as};
use crate::common::{poll, Api, Cluster, WeirProcess};

/// `GET /v1/account` of `key` on `gw`, as JSON.
async fn account(gw: &WeirProcess, key: &str) -> Value {
    let r = gw
        .req_as(key, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_rotation_grace_and_expiry_hold_on_both_gateways() {
    let c = Cluster::start(&[]).await;
    let minted = create(&c.a, json!({"scopes": ["*"], "rpm": 1000})).await;
    let (id, old) = (
        minted["id"].as_str().unwrap(),
        minted["secret"].as_str().unwrap(),
    );
    // Both gateways cache the key.
    for gw in [&c.a, &c.b] {
        assert_eq!(account(gw, old).await["limits"]["max_runs"], 16);
    }
    // A PATCH on A is seen on B from the next request on (B dropped its copy).
    let r = send_as(
        &c.a,
        c.a.key(),
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        json!({"max_runs": 7}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let seen = poll(Duration::from_secs(2), || async {
        (account(&c.b, old).await["limits"]["max_runs"] == 7).then_some(())
    })
    .await;
    assert!(seen.is_some(), "B reads the changed key");

    // Rotate on A with a 2 s grace: the old secret works on both, then on neither.
    let path = format!("/v1/keys/{id}/rotate");
    let r = send_as(
        &c.a,
        c.a.key(),
        Method::POST,
        &path,
        json!({"grace_secs": 2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let start = Instant::now();
    let new = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for gw in [&c.a, &c.b] {
        assert_eq!(
            account_status(gw, old).await.0,
            200,
            "grace on {}",
            gw.base()
        );
        let ok = poll(Duration::from_secs(2), || async {
            (account_status(gw, &new).await.0 == 200).then_some(())
        })
        .await;
        assert!(ok.is_some(), "the new secret works on {}", gw.base());
    }
    for gw in [&c.a, &c.b] {
        let stopped = poll(Duration::from_secs(5), || async {
            (account_status(gw, old).await.0 == 401).then(|| start.elapsed())
        })
        .await
        .unwrap_or_else(|| panic!("the old secret still works on {}", gw.base()));
        assert!(
            stopped >= Duration::from_millis(900),
            "{stopped:?} on {}",
            gw.base()
        );
        assert_eq!(account_status(gw, &new).await.0, 200);
    }

    // A key minted on B that expires is refused on A too.
    let short = create(&c.b, json!({"scopes": ["*"], "ttl_secs": 1})).await;
    let short = short["secret"].as_str().unwrap();
    for gw in [&c.a, &c.b] {
        let code = poll(Duration::from_secs(5), || async {
            let (status, code) = account_status(gw, short).await;
            (status == 401).then_some(code)
        })
        .await;
        assert_eq!(code.as_deref(), Some("key_expired"), "on {}", gw.base());
    }
}
