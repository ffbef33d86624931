//! Runs that end without concluding by themselves (a parked run
//! cancelled, a run left behind by a dead process, `worker_lost`) are
//! settled by the engine; their `run.*` webhook goes out from there, once.

use std::time::Duration;

use serde_json::{json, Value};

use super::{gateway_allowing_loopback, subscribe, verify, Receiver};
use crate::common::{poll, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_cancelled_sends_run_cancelled_once() {
    let gw = gateway_allowing_loopback().await;
    let rx = Receiver::start_failing(0).await;
    let created = subscribe(&gw, &rx.url, &["approval.requested", "run.cancelled"]).await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let fields = json!({"tools": ["get_time"], "approval_required": ["get_time"]});
    let agent = gw.create_agent_as(&gw.key, fields).await;
    let r = gw
        .post(
            &format!("/v1/agents/{agent}/messages"),
            json!({"message": "what time is it?", "stream": true, "background": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    drop(r);
    let bodies = |rx: &Receiver| -> Vec<Value> {
        rx.requests()
            .iter()
            .map(|g| serde_json::from_slice::<Value>(&g.body).unwrap())
            .collect()
    };
    let requested = poll(Duration::from_secs(15), || {
        let got = bodies(&rx);
        async move { got.into_iter().find(|b| b["type"] == "approval.requested") }
    })
    .await
    .expect("approval.requested delivered");
    let run_id = requested["data"]["run_id"].as_str().unwrap().to_owned();
    let r = gw
        .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let got = poll(Duration::from_secs(15), || {
        let got = bodies(&rx);
        async move { got.into_iter().find(|b| b["type"] == "run.cancelled") }
    })
    .await
    .expect("run.cancelled delivered");
    assert_eq!(got["data"]["run_id"], run_id.as_str(), "{got}");
    // Give a duplicate the time to show up, then count.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let n = bodies(&rx)
        .iter()
        .filter(|b| b["type"] == "run.cancelled")
        .count();
    assert_eq!(n, 1, "one run.cancelled");
    for g in rx.requests() {
        verify(&secret, &g);
    }
}
