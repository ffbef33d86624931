//! `/v1/chat/completions` on an agent whose tool call waits for approval:
//! the stream stays open with `: ping` comments until the request is
//! decided or expires, then the answer comes (protocol/openai.md).

use std::time::Duration;

use serde_json::json;

use crate::common::{Api, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_completion_pings_while_the_run_waits_then_answers() {
    let gw = TestGateway::builder()
        .config(|c| {
            c.approval_timeout_secs = 2;
            c.sse_ping_secs = 1;
        })
        .spawn()
        .await;
    let fields = json!({"tools": ["get_time"], "approval_required": ["get_time"]});
    let agent = gw.create_agent_as(&gw.key, fields).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            json!({"model": agent, "stream": true,
                   "messages": [{"role": "user", "content": "what time is it?"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(15), r.text())
        .await
        .expect("the stream ends once the request expired")
        .unwrap();
    let pings = body.matches(": ping").count();
    assert!(pings >= 2, "pings while the run waits ({pings}): {body}");
    let text: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        text.contains("denied: the approval request expired"),
        "the answer came after expiry: {text}"
    );
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
}
