//! Token budgets (issue 16, part 3) against real gateways and the real local
//! fake provider: a streaming run and a relay are cut by `tpm` with
//! `token_budget_exceeded`, a spent budget refuses starts on every
//! transport with `Retry-After`, an account's budget binds all its keys,
//! the token headers move, a client that hangs up is charged what was
//! streamed, and with Redis the budget holds across two gateways within the
//! bound protocol/limits.md states.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};
use weir::{config::ServeConfig, store::AccountLimits};

use crate::{
    common::{expect_error, poll, Api, Cluster, TestGateway, BOOTSTRAP_KEY},
    fake_provider::{FakeProvider, PART},
    runs::{sse, types},
};

async fn gateway(fp: &FakeProvider) -> TestGateway {
    let url = fp.url.clone();
    TestGateway::builder()
        .config(move |c: &mut ServeConfig| {
            c.provider_url = Some(url);
            c.first_token_timeout_secs = 5;
            c.idle_timeout_secs = 5;
        })
        .spawn()
        .await
}

/// Characters per estimated token (protocol/limits.md).
fn tokens_of(chars: usize) -> usize {
    chars.div_ceil(4)
}

/// The `data:` payloads of a relay stream until it ends: JSON values, and
/// `[DONE]` as a string.
async fn relay_lines(resp: Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(Ok(b)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&b));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the relay stream ends");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.to_owned())))
        .collect()
}

fn content_chars(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter_map(|l| l["choices"][0]["delta"]["content"].as_str())
        .map(|c| c.chars().count())
        .sum()
}

async fn relay(gw: &impl Api, key: &str, body: Value) -> Response {
    gw.req_as(key, Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `POST {path}` (an agent's messages) as `key` with `message`.
async fn message(gw: &TestGateway, key: &str, path: &str, message: &str) -> Response {
    gw.req_as(key, Method::POST, path)
        .json(&json!({ "message": message }))
        .send()
        .await
        .unwrap()
}

/// The whole seconds of a response's `Retry-After`.
fn retry_after(r: &Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn slow(stream_options: Option<Value>) -> Value {
    let mut body = json!({"model": "upstream/fake-slow", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    if let Some(o) = stream_options {
        body["stream_options"] = o;
    }
    body
}

#[tokio::test]
async fn a_streaming_run_is_cut_by_tpm_and_further_starts_are_refused() {
    let fp = FakeProvider::start().await;
    let gw = gateway(&fp).await;
    let key = gw.create_key(json!({"scopes": ["*"], "tpm": 30})).await;
    let agent = gw
        .create_agent_as(BOOTSTRAP_KEY, json!({"model": "upstream/fake-slow"}))
        .await;
    let path = format!("/v1/agents/{agent}/messages");
    let resp = gw
        .req_as(&key, Method::POST, &path)
        .json(&json!({"message": "hi", "stream": true, "stream_tokens": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut s = sse(resp);
    let mut evs = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(20), s.next())
        .await
        .expect("the run ends")
    {
        evs.push(ev.data);
    }
    let kinds = types(&evs);
    let n = kinds.len();
    assert_eq!(&kinds[n - 2..], ["error", "done"], "{kinds:?}");
    assert_eq!(
        evs[n - 2]["code"],
        "token_budget_exceeded",
        "{}",
        evs[n - 2]
    );
    assert_eq!(evs[n - 1]["stop_reason"], "error");
    // The deltas streamed add up to the budget (less the prompt's token),
    // and the piece that crossed it is the last one.
    let chars: usize = evs
        .iter()
        .filter_map(|e| e["delta"].as_str())
        .map(|d| d.chars().count())
        .sum();
    let streamed = tokens_of(chars) + tokens_of("hi".len());
    assert!((30..=31).contains(&streamed), "{streamed} tokens streamed");
    let run_id = evs[0]["run_id"].as_str().unwrap();
    let run: Value = gw
        .get(&format!("/v1/runs/{run_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["stop_reason"], "error", "{run}");
    // The run record keeps the failure's code and message; both are those
    // of the stored `error` event, replayed.
    assert_eq!(run["error_code"], "token_budget_exceeded", "{run}");
    let why = run["error"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("the token budget is spent (30 tokens per minute)"),
        "{run}"
    );
    let replay = gw
        .req_as(&key, Method::GET, &format!("/v1/runs/{run_id}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    let mut replay = sse(replay);
    let mut stored = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), replay.next())
        .await
        .expect("the replay ends at done")
    {
        stored.push(ev.data);
    }
    let n = stored.len();
    assert_eq!(&types(&stored)[n - 2..], ["error", "done"], "{stored:?}");
    assert_eq!(
        stored[n - 2]["code"],
        "token_budget_exceeded",
        "{}",
        stored[n - 2]
    );
    assert_eq!(stored[n - 2]["message"].as_str(), Some(why));
    assert!(
        fp.hung_up_within(Duration::from_secs(5)).await,
        "the provider's stream is dropped"
    );
    // Spent: the next start is refused before anything starts.
    let r = message(&gw, &key, &path, "again").await;
    let retry = retry_after(&r);
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    expect_error(r, 429, "token_budget_exceeded").await;
    // The headers say so, on any answer to the key.
    let r = gw
        .req_as(&key, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "30");
    assert_eq!(r.headers()["x-ratelimit-remaining-tokens"], "0");
    let reset: u64 = r.headers()["x-ratelimit-reset-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > weir::util::unix_now());
    // A WebSocket run start is refused the same way; the socket lives on.
    let url = format!("ws://{}/v1/ws?api_key={key}", gw.host());
    let (mut ws, _) = connect_async(url).await.unwrap();
    let frame =
        json!({"type": "user_message", "agent_id": agent, "message": "hi", "request_id": "m1"});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    ws.send(Message::text(r#"{"type":"ping","request_id":"p1"}"#))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("socket ended")
        };
        got.push(serde_json::from_str::<Value>(&t).unwrap());
    }
    assert_eq!(got[0]["code"], "token_budget_exceeded", "{}", got[0]);
    assert!(got[0]["retry_after"].as_u64().unwrap() >= 1);
    assert_eq!(got[1]["type"], "pong");
}

#[tokio::test]
async fn a_relay_is_cut_by_tpm_and_the_usage_chunk_goes_only_to_those_who_ask() {
    let fp = FakeProvider::start().await;
    let gw = gateway(&fp).await;
    let key = gw.create_key(json!({"scopes": ["*"], "tpm": 25})).await;
    let lines = relay_lines(relay(&gw, &key, slow(None)).await).await;
    let n = lines.len();
    assert_eq!(lines[n - 1], "[DONE]");
    assert_eq!(
        lines[n - 2]["error"]["code"],
        "token_budget_exceeded",
        "{}",
        lines[n - 2]
    );
    let streamed = tokens_of(content_chars(&lines)) + 1;
    assert!((25..=26).contains(&streamed), "{streamed} tokens relayed");
    assert_eq!(
        fp.requests()[0]["stream_options"]["include_usage"],
        true,
        "the relay asks for the provider's count"
    );
    expect_error(
        relay(&gw, &key, slow(None)).await,
        429,
        "token_budget_exceeded",
    )
    .await;
    // Without a budget, the usage chunk is the client's only if it asked.
    let text = |o: Option<Value>| {
        let mut b = slow(o);
        b["model"] = "upstream/fake-text".into();
        b
    };
    let usage_chunks = |lines: &[Value]| {
        lines
            .iter()
            .filter(|l| l["choices"] == json!([]) && l["usage"].is_object())
            .count()
    };
    let plain = relay_lines(relay(&gw, &gw.key, text(None)).await).await;
    assert_eq!(usage_chunks(&plain), 0, "{plain:?}");
    assert_eq!(content_chars(&plain), "Hello world".len());
    let asked = text(Some(json!({"include_usage": true})));
    let with = relay_lines(relay(&gw, &gw.key, asked).await).await;
    assert_eq!(usage_chunks(&with), 1, "{with:?}");
}

#[tokio::test]
async fn an_accounts_budget_binds_every_key_of_the_account() {
    let fp = FakeProvider::start().await;
    let gw = gateway(&fp).await;
    // Set before the gateway first reads the account (it keeps an
    // account's budgets for 10 s): the bootstrap key's account.
    let account = "default";
    let limits = AccountLimits {
        tpm: Some(20),
        daily_tokens: None,
    };
    gw.store.set_account_limits(account, limits).await.unwrap();
    let one = gw.create_key(json!({"scopes": ["*"]})).await;
    let two = gw.create_key(json!({"scopes": ["*"]})).await;
    let r = gw
        .req_as(&two, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-ratelimit-limit-tokens"],
        "20",
        "the account's budget applies"
    );
    let lines = relay_lines(relay(&gw, &one, slow(None)).await).await;
    assert_eq!(
        lines[lines.len() - 2]["error"]["code"],
        "token_budget_exceeded"
    );
    // The other key of the account is out of tokens too.
    expect_error(
        relay(&gw, &two, slow(None)).await,
        429,
        "token_budget_exceeded",
    )
    .await;
}

#[tokio::test]
async fn a_spent_daily_budget_waits_for_the_utc_day_to_end() {
    let gw = TestGateway::builder().spawn().await;
    let key = gw
        .create_key(json!({"scopes": ["*"], "daily_tokens": 5}))
        .await;
    let agent = gw.create_agent_as(BOOTSTRAP_KEY, json!({})).await;
    let path = format!("/v1/agents/{agent}/messages");
    let r = message(&gw, &key, &path, "one two three four five six seven").await;
    assert_eq!(r.status(), 200);
    let r = message(&gw, &key, &path, "again").await;
    let retry = retry_after(&r);
    let body = expect_error(r, 429, "token_budget_exceeded").await;
    let midnight = 86_400 - weir::util::unix_now() % 86_400;
    assert!(
        retry.abs_diff(midnight) <= 2,
        "{retry} vs {midnight}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_holds_across_gateways_within_one_flush_of_overshoot() {
    let fp = FakeProvider::start().await;
    let c = Cluster::start(&[("WEIR_PROVIDER_URL", fp.url.as_str())]).await;
    let tpm = 60;
    let key = c.a.create_key(json!({"scopes": ["*"], "tpm": tpm})).await;
    // One relay on each gateway at once, each about 20 tokens a second.
    let (ra, rb) = tokio::join!(relay(&c.a, &key, slow(None)), relay(&c.b, &key, slow(None)));
    let (la, lb) = tokio::join!(relay_lines(ra), relay_lines(rb));
    for lines in [&la, &lb] {
        let end = &lines[lines.len() - 2];
        assert_eq!(end["error"]["code"], "token_budget_exceeded", "{end}");
    }
    let spent = tokens_of(content_chars(&la)) + tokens_of(content_chars(&lb)) + 2;
    // The bound: each gateway sees the other's tokens within one flush
    // (500 ms) plus its round trip; at ~20 tokens/s that is ~10 tokens,
    // plus one crossing piece per stream. Allowed here: a whole second.
    assert!(spent >= tpm as usize, "the budget was reached: {spent}");
    assert!(
        spent <= tpm as usize + 20 + 2,
        "overshoot over the bound: {spent}"
    );
    // Spent on both: a run start on B is refused by Redis at once.
    let agent = c.b.create_agent_as(BOOTSTRAP_KEY, json!({})).await;
    let r =
        c.b.req_as(&key, Method::POST, &format!("/v1/agents/{agent}/messages"))
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap();
    expect_error(r, 429, "token_budget_exceeded").await;
}

#[tokio::test]
async fn usage_after_a_client_hangs_up_mid_stream_is_what_was_streamed() {
    let fp = FakeProvider::start().await;
    let gw = gateway(&fp).await;
    let key = gw
        .create_key(json!({"scopes": ["*"], "daily_tokens": 10_000}))
        .await;
    let mut body = slow(None);
    body["model"] = "upstream/fake-part".into();
    let resp = relay(&gw, &key, body).await;
    assert_eq!(resp.status(), 200);
    // Read until all the provider sent has arrived, then hang up.
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let want: String = PART.concat();
    let read = async {
        while let Some(Ok(b)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&b));
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect();
            if content_chars(&lines) == want.len() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the five pieces arrive");
    drop(stream);
    assert!(fp.hung_up_within(Duration::from_secs(5)).await);
    // Charged: the prompt's estimate and the completion's, with no usage
    // from the provider (it never finished).
    let (prompt, completion) = (tokens_of("hi".len()), tokens_of(want.len()));
    let found = poll(Duration::from_secs(10), || async {
        let page: Value = gw
            .req(Method::GET, "/v1/usage?group_by=model")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let line = page["data"]
            .as_array()?
            .iter()
            .find(|l| l["value"] == "upstream/fake-part")?
            .clone();
        (line["completion_tokens"].as_u64()? > 0).then_some(line)
    })
    .await
    .expect("the hung-up relay's usage is recorded");
    assert_eq!(found["completion_tokens"], completion as u64, "{found}");
    assert_eq!(found["prompt_tokens"], prompt as u64, "{found}");
    // And the key's daily budget was charged the same.
    let r = gw
        .req_as(&key, Method::GET, "/v1/account")
        .send()
        .await
        .unwrap();
    let left: usize = r.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(left, 10_000 - prompt - completion);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_gateway_still_enforces_the_budget_locally() {
    let fp = FakeProvider::start().await;
    let mut c = Cluster::start(&[("WEIR_PROVIDER_URL", fp.url.as_str())]).await;
    let key = c.a.create_key(json!({"scopes": ["*"], "tpm": 25})).await;
    c.redis.kill();
    // Never unlimited: the local counters cut the stream and refuse the next.
    let lines = relay_lines(relay(&c.a, &key, slow(None)).await).await;
    let end = &lines[lines.len() - 2];
    assert_eq!(end["error"]["code"], "token_budget_exceeded", "{end}");
    expect_error(
        relay(&c.a, &key, slow(None)).await,
        429,
        "token_budget_exceeded",
    )
    .await;
}
