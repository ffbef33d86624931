//! Keys as the edge governs them (issue 16, parts 4 and 5): per-key limits
//! set on create and changed with PATCH, the rule that a key grants at
//! most its own limits, what `GET /v1/account` shows, account budgets set
//! by the operator, expiry and rotation with a grace period, on one
//! gateway and on both gateways of a [`crate::common::Cluster`]; the
//! models a key may use (issue 19).

mod cluster;
mod lifetimes;
mod limits;
mod models;

use reqwest::{Method, Response};
use serde_json::Value;

use crate::common::Api;

/// `method path` with `key` and a JSON `body`.
pub(crate) async fn send_as(
    gw: &impl Api,
    key: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Response {
    gw.req_as(key, method, path)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// The status of `GET /v1/account` with `key`, and its error code if any.
pub(crate) async fn account_status(gw: &impl Api, key: &str) -> (u16, String) {
    let r = gw
        .req_as(key, Method::GET, "/v1/account")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

/// Mints a key through `POST /v1/keys` with the gateway's (bootstrap) key:
/// the whole answer (record and `secret`).
pub(crate) async fn create(gw: &impl Api, body: Value) -> Value {
    let r = send_as(gw, gw.key(), Method::POST, "/v1/keys", body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "create key: {v}");
    v
}
