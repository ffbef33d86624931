//! A receiver that answers 410 Gone: the delivery is not retried, the
//! subscription shows `status: "disabled"` and gets nothing more
//! (protocol/webhooks.md, "Retries").

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::{deliveries_until, gateway_allowing_loopback, subscribe, Receiver};
use crate::common::{poll, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_gone_disables_the_subscription() {
    let gw = gateway_allowing_loopback().await;
    let rx = Receiver::start_answering(StatusCode::GONE).await;
    let created = subscribe(&gw, &rx.url, &["agent.created"]).await;
    assert_eq!(created["status"], "enabled", "{created}");
    let hook = created["id"].as_str().unwrap().to_owned();
    gw.create_agent("first").await;
    let rows = deliveries_until(&gw, &hook, |d| d.len() == 1 && d[0]["status"] == "failed").await;
    assert_eq!(rows[0]["attempts"], 1, "not retried: {rows:?}");
    let path = format!("/v1/webhooks/{hook}");
    let read = poll(Duration::from_secs(10), || {
        let r = gw.get(&path);
        async {
            let v: Value = r.await.json().await.ok()?;
            (v["status"] == "disabled").then_some(v)
        }
    })
    .await
    .expect("the subscription is disabled");
    assert_eq!(read["id"], hook.as_str());
    // Nothing more is queued or sent to it.
    gw.create_agent("second").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let page: Value = gw
        .get(&format!("/v1/webhooks/{hook}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(rx.requests().len(), 1);
}
