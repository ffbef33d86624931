//! Saturation shedding (issue 22): past `--max-relays-in-flight` relays in
//! flight on the process, a relay is refused at once with 503 `unavailable`,
//! `Retry-After` and the OpenAI error envelope; the ones admitted finish as
//! usual and give their places back.

use serde_json::{json, Value};
use weir::providers::ProvidersConfig;

use crate::{
    common::{Api, TestGateway},
    fake_provider::FakeProvider,
    routing::{chunks, text_of},
};

fn ask() -> Value {
    json!({"model": "held", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_a_relay_gets_503_and_the_admitted_ones_complete() {
    let fake = FakeProvider::start().await;
    let toml = format!(
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [[routes]]\nname = \"held\"\ntargets = [{{ provider = \"a\", model = \"fake-pause\" }}]\n",
        fake.url
    );
    let lists = ProvidersConfig::from_toml(&toml).expect("valid lists");
    let gw = TestGateway::builder()
        .config(move |c| {
            c.providers = lists;
            c.edge.max_relays_in_flight = 2;
        })
        .spawn()
        .await;
    // Both answer their head once the provider's first bytes are in: from
    // then on they are in flight until their bodies end.
    let first = gw.post("/v1/chat/completions", ask()).await;
    let second = gw.post("/v1/chat/completions", ask()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = gw.post("/v1/chat/completions", ask()).await;
    assert_eq!(third.status(), 503);
    assert_eq!(
        third.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("relays in flight")),
        "{body}"
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "the refused one cost no provider request"
    );
    for r in [first, second] {
        assert_eq!(text_of(&chunks(r).await), "Hello world");
    }
    // Their places are back: the next relay is served.
    let again = gw.post("/v1/chat/completions", ask()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(text_of(&chunks(again).await), "Hello world");
}
