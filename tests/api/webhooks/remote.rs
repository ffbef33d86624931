//! Webhooks through a remote store: the gateway forwards to a `weir
//! store` process (`--store-url`), which keeps the subscriptions and the
//! delivery queue; a delivery still arrives, signed, once.

use std::time::Duration;

use super::{deliveries_until, subscribe, verify, Receiver};
use crate::common::{Api, StoreMode, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_work_behind_weir_store() {
    let gw = TestGateway::builder()
        .store(StoreMode::Remote)
        .config(|c| {
            c.webhooks.egress_allow = vec!["127.0.0.1/32".parse().unwrap()];
            c.webhooks.webhook_retry_base_ms = 300;
        })
        .spawn()
        .await;
    let rx = Receiver::start_failing(1).await;
    let created = subscribe(&gw, &rx.url, &["agent.created"]).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let hook = created["id"].as_str().unwrap().to_owned();
    let read: serde_json::Value = gw
        .get(&format!("/v1/webhooks/{hook}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "enabled", "{read}");
    gw.create_agent("remote").await;
    let rows = deliveries_until(&gw, &hook, |d| {
        d.len() == 1 && d[0]["status"] == "delivered"
    })
    .await;
    assert_eq!(
        rows[0]["attempts"], 2,
        "failed once, then delivered: {rows:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    verify(&secret, &got[1]);
}
