//! The one harness of the integration tests: gateways in this process
//! ([`TestGateway`], started by [`TestGateway::builder`] or
//! [`spawn_gateway`]), `weir` child processes ([`WeirProcess`]: `serve`,
//! `worker`, `store`), two gateways sharing a private redis-server and a
//! store ([`Cluster`], [`WorkerCluster`]), and what a test does with any of
//! them through [`Api`]: requests with a key, agents, keys, readiness. Tests
//! wait with [`poll`] under a deadline, not a fixed sleep. Logs (ours and
//! the child processes') are printed only when `TEST_LOG` is set.
//!
//! - `anthropic`: [`FakeAnthropic`], a real local Anthropic Messages server.
//! - `api`: the [`Api`] trait; [`mint`] for keys made straight in a store.
//! - `gateway`: [`TestGateway`] and its builder.
//! - `process`: [`WeirProcess`] and its builder.
//! - `store`: [`StoreMode`], [`StoreProcess`], PostgreSQL availability.
//! - `cluster`: [`Cluster`] and [`WorkerCluster`].
//! - `wait`: [`poll`], [`within`], [`eventually`].
//! - `sse`: events as an EventSource client reads them.
//! - `topology`: Redis Sentinel and a Redis Cluster on loopback, weir-load's
//!   own (loadtest/src/topology/), included through `#[path]`.

pub mod anthropic;
mod api;
mod cluster;
mod gateway;
mod process;
pub mod sse;
mod store;
#[path = "../../../loadtest/src/topology/mod.rs"]
#[allow(dead_code, reason = "shared with weir-load, which uses more of it")]
pub mod topology;
mod wait;

use std::time::Duration;

use reqwest::Response;
use serde_json::Value;

pub use crate::redis_support::RedisServer;
pub use anthropic::FakeAnthropic;
pub use api::{mint, Api};
pub use cluster::{Cluster, WorkerCluster};
pub use gateway::{spawn_gateway, TestGateway};
pub use process::{signal, ProcessBuilder, WeirProcess};
pub use store::{
    postgres_available, spawn_pg_store_process, spawn_store_process, store_requests, StoreMode,
    StoreProcess, STORE_TOKEN,
};
pub use wait::{eventually, poll, within};

/// The bootstrap key every test gateway and process starts with.
pub const BOOTSTRAP_KEY: &str = "wk_bootstrap_0123456789abcdefghijklmnopqrstuv";

/// A free loopback port (bound then released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of the `weir` binary cargo built for these tests.
pub fn weir_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

/// Prints this process's logs when `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        weir::telemetry::init("text");
    }
}

/// Polls `GET {base}/healthz` until it answers 200 (10 s at most).
pub async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    let url = format!("{base}/healthz");
    let healthy = within(Duration::from_secs(10), || async {
        let r = client.get(&url).send().await;
        r.is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(healthy, "{base} did not become healthy");
}

/// The `name` of every item in a list answer's `data`, in order.
pub fn names(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .expect("a list answer")
        .iter()
        .map(|item| item["name"].as_str().expect("a name"))
        .collect()
}

/// Asserts the error envelope and returns the body.
pub async fn expect_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status for {code}");
    let rid = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("X-Request-Id on every response");
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    assert_eq!(
        body["error"]["request_id"],
        rid.as_str(),
        "request_id matches header: {body}"
    );
    body
}

/// Runs a test body once with the embedded store, once through a separate
/// `weir store` process and once through `weir store --db postgres://…`:
/// all must give the same answers. The PostgreSQL run skips (with a printed
/// line) when no server is reachable and CI is not set.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                ($body)($crate::common::StoreMode::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remote() {
                ($body)($crate::common::StoreMode::Remote).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn remote_postgres() {
                if !$crate::common::postgres_available().await {
                    return;
                }
                ($body)($crate::common::StoreMode::RemotePostgres).await
            }
        }
    };
}
