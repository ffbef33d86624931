//! `proxy --agent`: the agent path beside the relay. An agent whose model
//! is `upstream/<the fake's model>` answers over the agent route
//! (`POST /v1/agents/{id}/messages`, `stream`, `stream_tokens`), spread
//! over chat sessions, in the same interleaved ramp as the relay and in
//! front of the same fake provider; what it adds to the relay's TTFT
//! (run start, store writes, the bus between the run and the client's
//! stream) is the figure.

use anyhow::bail;
use serde_json::{json, Value};

use super::proxy::added_json;
use crate::{
    client::{
        openloop::{Step, Target},
        timing::Route,
    },
    gateway::Gateway,
    report::{ms, thousands, Table},
};

/// Chat sessions the agent's runs are spread over (one session's history
/// would grow with every run and be read by each).
const SESSIONS: u64 = 64;

/// The p99 TTFT the agent path may add over the relay (issue 22).
pub const TARGET_ADDED_TTFT_P99_MS: f64 = 0.5;

/// Makes the agent (model `upstream/fake`) and its sessions on `gw`.
pub async fn target(gw: &Gateway) -> anyhow::Result<Target> {
    let client = crate::tls::client_builder().build()?;
    let post = |path: String, body: Value| {
        client
            .post(format!("{}{path}", gw.url))
            .bearer_auth(&gw.key)
            .json(&body)
            .send()
    };
    let id = |v: &Value, what: &str| match v["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("creating {what}: {v}"),
    };
    let v: Value = post(
        "/v1/agents".into(),
        json!({"name": "load-upstream", "model": "upstream/fake", "system": "load test"}),
    )
    .await?
    .json()
    .await?;
    let agent = id(&v, "the agent")?;
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let body = json!({"name": format!("load-{i}")});
        let v: Value = post(format!("/v1/agents/{agent}/sessions"), body)
            .await?
            .json()
            .await?;
        sessions.push(id(&v, "a session")?);
    }
    Ok(Target {
        name: "agent".into(),
        base: format!("{}/v1", gw.url),
        key: Some(gw.key.clone()),
        model: agent,
        route: Route::Agent,
        sessions,
    })
}

/// TTFT (and the end) of the agent path minus the relay's, per rate.
pub fn added_table(relay: &[Step], agent: &[Step]) -> Table {
    let mut t = Table::new(
        "latency the agent path adds over the relay (same fake provider)",
        &["rate/s", "TTFT p50", "TTFT p99", "total p50", "total p99"],
    );
    for r in relay {
        if let Some(a) = agent.iter().find(|a| a.rate == r.rate) {
            let diff = |q: f64, ttft: bool| match ttft {
                true => ms(a.ttft.quantile_ms(q) - r.ttft.quantile_ms(q)),
                false => ms(a.total.quantile_ms(q) - r.total.quantile_ms(q)),
            };
            t.row(vec![
                thousands(r.rate),
                diff(0.5, true),
                diff(0.99, true),
                diff(0.5, false),
                diff(0.99, false),
            ]);
        }
    }
    t
}

/// What the agent path adds, as JSON (the relay in the place of direct).
pub fn added(relay: &[Step], agent: &[Step]) -> Value {
    added_json(relay, agent)
}

/// The agent's p99 TTFT minus the relay's at the highest rate both
/// sustained every request of, if any.
pub fn added_ttft_p99(relay: &[Step], agent: &[Step]) -> Option<(f64, f64)> {
    agent
        .iter()
        .filter(|a| a.ok > 0 && a.errors == 0)
        .filter_map(|a| {
            let r = relay.iter().find(|r| r.rate == a.rate)?;
            Some((a.rate, a.ttft.quantile_ms(0.99) - r.ttft.quantile_ms(0.99)))
        })
        .next_back()
}
