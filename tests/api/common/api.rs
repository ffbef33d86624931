//! What a test does with any gateway, wherever it runs (in this process, a
//! `weir` child process, or one a script started): requests with a key,
//! agents and keys made through the API, readiness. One trait, so that a
//! helper written for one kind of gateway works with all of them. Keys
//! minted straight in a store (no request) are [`mint`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use weir::{keys, store::Store};

use super::wait::poll;

/// A gateway a test talks to over HTTP, with a default key.
pub trait Api {
    /// Its base URL, its default key and the client to reach it with.
    fn endpoint(&self) -> (&str, &str, &reqwest::Client);

    /// `http://127.0.0.1:<port>`.
    fn base(&self) -> &str {
        self.endpoint().0
    }

    /// The key [`Api::req`] sends (the bootstrap key unless told otherwise).
    fn key(&self) -> &str {
        self.endpoint().1
    }

    fn client(&self) -> &reqwest::Client {
        self.endpoint().2
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// `127.0.0.1:<port>`.
    fn host(&self) -> &str {
        self.base().trim_start_matches("http://")
    }

    /// The WebSocket URL with `key` as `?api_key=`.
    fn ws_url(&self, key: &str) -> String {
        format!("ws://{}/v1/ws?api_key={key}", self.host())
    }

    /// A request with the default key.
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.req_as(self.key(), method, path)
    }

    /// A request with the given key.
    fn req_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.client()
            .request(method, self.url(path))
            .bearer_auth(key)
    }

    async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("request")
    }

    async fn post(&self, path: &str, body: Value) -> Response {
        self.req(Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Creates an echo agent named `name` with the default key; its id.
    async fn create_agent(&self, name: &str) -> String {
        self.create_agent_as(self.key(), json!({ "name": name }))
            .await
    }

    /// Creates an agent with `key` from `fields` (`name` defaults to
    /// `test`); its id.
    async fn create_agent_as(&self, key: &str, fields: Value) -> String {
        let mut body = json!({"name": "test"});
        let fields = fields.as_object().expect("agent fields are an object");
        body.as_object_mut()
            .expect("an object")
            .extend(fields.clone());
        let r = self
            .req_as(key, Method::POST, "/v1/agents")
            .json(&body)
            .send()
            .await
            .expect("create agent");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "create agent on {}: {v}", self.base());
        v["id"].as_str().expect("id").to_owned()
    }

    /// Mints a key through `POST /v1/keys` with the default key; its secret.
    async fn create_key(&self, body: Value) -> String {
        let r = self.post("/v1/keys", body).await;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "create key on {}: {v}", self.base());
        v["secret"].as_str().expect("secret").to_owned()
    }

    /// `/readyz` status and body (status 0 when nothing answers).
    async fn readyz(&self) -> (u16, String) {
        match self.client().get(self.url("/readyz")).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Polls `/readyz` until it answers `want` (10 s at most); the last answer.
    async fn wait_readyz(&self, want: u16) -> (u16, String) {
        let hit = poll(Duration::from_secs(10), || async {
            let r = self.readyz().await;
            (r.0 == want).then_some(r)
        })
        .await;
        match hit {
            Some(r) => r,
            None => self.readyz().await,
        }
    }

    /// Waits until `/readyz` answers 200 (for Redis-backed gateways: the
    /// link to Redis is up).
    async fn wait_ready(&self) {
        let last = self.wait_readyz(200).await;
        assert_eq!(last.0, 200, "{} not ready: {last:?}", self.base());
    }
}

/// Mints a key of `account` (created if missing) with `scopes` and `rpm`
/// straight in `store`: (key id, secret).
pub async fn mint(store: &dyn Store, account: &str, scopes: &[&str], rpm: u32) -> (String, String) {
    store.ensure_account(account).await.expect("account");
    let scopes = scopes.iter().map(|s| s.to_string()).collect();
    let m = keys::mint(account, "test", scopes, rpm, None);
    let id = m.new_key.id.clone();
    store.create_key(m.new_key).await.expect("key");
    (id, m.secret)
}
