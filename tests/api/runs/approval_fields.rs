//! The agent field `approval_required`: built-in tool names only (a 400
//! names every unknown one), kept through create, read and update.

use reqwest::Method;
use serde_json::{json, Value};

use super::get_json;
use crate::common::{expect_error, spawn_gateway, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_required_is_an_agent_field_of_built_in_names() {
    let gw = spawn_gateway().await;
    let bad = gw
        .post(
            "/v1/agents",
            json!({"name": "a", "approval_required": ["get_time", "rm_rf", "tool-x"]}),
        )
        .await;
    let err = expect_error(bad, 400, "validation_error").await;
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("approval_required"), "{message}");
    assert!(
        message.contains("`rm_rf`") && message.contains("`tool-x`"),
        "{message}"
    );
    assert!(!message.contains("`get_time`"), "{message}");

    let created: Value = gw
        .post(
            "/v1/agents",
            json!({"name": "a", "tools": ["get_time"], "approval_required": ["get_time", "get_time"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(created["approval_required"], json!(["get_time"]));
    let id = created["id"].as_str().unwrap();
    let read = get_json(&gw, &format!("/v1/agents/{id}")).await;
    assert_eq!(read["approval_required"], json!(["get_time"]));

    let patch = |body: Value| {
        gw.req(Method::PATCH, &format!("/v1/agents/{id}"))
            .json(&body)
            .send()
    };
    let bad = patch(json!({"approval_required": ["nope"]})).await.unwrap();
    let err = expect_error(bad, 400, "validation_error").await;
    assert!(err["error"]["message"].as_str().unwrap().contains("`nope`"));
    let changed: Value = patch(json!({"approval_required": ["calculator"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changed["approval_required"], json!(["calculator"]));
    // A patch without the field leaves it alone.
    let renamed: Value = patch(json!({"name": "b"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["approval_required"], json!(["calculator"]));
    let plain = gw.create_agent("plain").await;
    let plain = get_json(&gw, &format!("/v1/agents/{plain}")).await;
    assert_eq!(plain["approval_required"], json!([]));
}
