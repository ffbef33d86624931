//! A receiver that never answers delays only its own deliveries: another
//! subscription's deliveries, queued after the hanging one, arrive while
//! the hanging attempt is still waiting for its answer (before, the
//! delivery loop waited for a whole batch, so they came only after the
//! hanging attempt's 10 s timeout).

use std::time::Duration;

use serde_json::Value;

use super::{gateway_allowing_loopback, subscribe, Receiver};
use crate::common::{poll, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_hold_back_another_subscriptions_deliveries() {
    let gw = gateway_allowing_loopback().await;
    let stuck = Receiver::start_hanging().await;
    let fine = Receiver::start_failing(0).await;
    let stuck_hook = subscribe(&gw, &stuck.url, &["agent.created"]).await;
    subscribe(&gw, &fine.url, &["agent.created"]).await;
    gw.create_agent("first").await;
    // The hanging receiver has its request (and holds it open).
    poll(Duration::from_secs(30), || async {
        (!stuck.requests().is_empty()).then_some(())
    })
    .await
    .expect("the hanging receiver got its request");
    for name in ["second", "third", "fourth"] {
        gw.create_agent(name).await;
    }
    poll(Duration::from_secs(30), || async {
        (fine.requests().len() == 4).then_some(())
    })
    .await
    .expect("the other receiver got all four events");
    // Ordering, not timing: the hanging attempts have not ended (none is
    // recorded) while the other subscription got everything.
    let hook = stuck_hook["id"].as_str().unwrap();
    let page: Value = gw
        .get(&format!("/v1/webhooks/{hook}/deliveries"))
        .await
        .json()
        .await
        .unwrap();
    let rows = page["data"].as_array().unwrap();
    assert!(!rows.is_empty(), "{page}");
    assert!(
        rows.iter()
            .all(|d| d["attempts"] == 0 && d["status"] == "pending"),
        "the hanging attempts are still open: {page}"
    );
}
