//! Key lifetimes on one gateway: expiry (`ttl_secs`, `expires_at`) and
//! rotation with and without a grace period.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{account_status, create, send_as};
use crate::common::{expect_error, poll, Api, TestGateway};

#[tokio::test]
async fn an_expired_key_gets_401_key_expired() {
    let gw = TestGateway::builder().spawn().await;
    let minted = create(&gw, json!({"scopes": ["*"], "ttl_secs": 1})).await;
    let key = minted["secret"].as_str().unwrap();
    assert!(minted["expires_at"].is_string(), "{minted}");
    // Seconds are whole: the key lives until the next second boundary at most 1 s away.
    let expired = poll(Duration::from_secs(5), || async {
        let (status, code) = account_status(&gw, key).await;
        (status == 401).then_some(code)
    })
    .await;
    assert_eq!(expired.as_deref(), Some("key_expired"));
    let r = gw
        .req_as(key, Method::GET, "/v1/agents")
        .send()
        .await
        .unwrap();
    let body = expect_error(r, 401, "key_expired").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired at"));
    // A wrong secret of that key is still just unauthorized.
    // (Another last character: `x` for a key that does not end in one.)
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    assert_eq!(
        account_status(&gw, &wrong).await,
        (401, "unauthorized".into())
    );
    // A past expires_at makes a key expired from the start (the schema
    // cannot say "in the future", and what it allows is not refused).
    let past = create(
        &gw,
        json!({"scopes": ["chat"], "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(past["expires_at"], "2001-01-01T00:00:00Z");
    let (status, code) = account_status(&gw, past["secret"].as_str().unwrap()).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"));
    // expires_at in the future is kept as given, normalised to seconds.
    let in_a_year = weir::util::format_unix(weir::util::unix_now() + 365 * 86_400);
    let given = in_a_year.replace('Z', ".250Z");
    let later = create(&gw, json!({"scopes": ["chat"], "expires_at": given})).await;
    assert_eq!(later["expires_at"], in_a_year.as_str());
    let (status, _) = account_status(&gw, later["secret"].as_str().unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rotation_keeps_the_key_and_the_old_secret_works_only_for_the_grace() {
    let gw = TestGateway::builder().spawn().await;
    let minted = create(&gw, json!({"scopes": ["*"], "rpm": 1000, "max_runs": 3})).await;
    let (id, old) = (
        minted["id"].as_str().unwrap(),
        minted["secret"].as_str().unwrap(),
    );
    assert_eq!(account_status(&gw, old).await.0, 200, "warm in the cache");
    let path = format!("/v1/keys/{id}/rotate");
    let r = send_as(&gw, gw.key(), Method::POST, &path, json!({"grace_secs": 2})).await;
    assert_eq!(r.status(), 200);
    let start = Instant::now();
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(
        (rotated["id"].as_str(), rotated["max_runs"].clone()),
        (Some(id), json!(3))
    );
    assert!(rotated.get("prev_hash").is_none() && rotated.get("prev_until").is_none());
    assert_eq!(account_status(&gw, new).await.0, 200);
    assert_eq!(account_status(&gw, old).await.0, 200, "in the grace period");
    let stopped = poll(Duration::from_secs(5), || async {
        (account_status(&gw, old).await.0 == 401).then(|| start.elapsed())
    })
    .await
    .expect("the old secret stops after its grace");
    assert!(
        stopped >= Duration::from_millis(900),
        "stopped after {stopped:?}"
    );
    assert_eq!(account_status(&gw, new).await.0, 200);
    // Without a grace (and without a body) the replaced secret stops at once.
    let r = gw.req(Method::POST, &path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let newer: Value = r.json().await.unwrap();
    assert_eq!(account_status(&gw, new).await, (401, "unauthorized".into()));
    assert_eq!(
        account_status(&gw, newer["secret"].as_str().unwrap())
            .await
            .0,
        200
    );
    // Not another account's key, not a revoked one.
    let r = send_as(
        &gw,
        gw.key(),
        Method::POST,
        "/v1/keys/key-nope/rotate",
        json!({}),
    )
    .await;
    expect_error(r, 404, "key_not_found").await;
    assert_eq!(
        gw.req(Method::DELETE, &format!("/v1/keys/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let r = send_as(&gw, gw.key(), Method::POST, &path, json!({})).await;
    expect_error(r, 409, "conflict").await;
}
