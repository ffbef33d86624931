//! Renderer of `transport` (TLS and HTTP/2): the handshake table, idle
//! stream memory per mode beside HTTP/1.1's, and fan-out per mode with the
//! gateway's CPU per delivery.

use serde_json::Value;

use super::{opt, RenderError, Results};
use crate::{report::Table, units};

fn rows<'a>(rep: &'a Value, part: &str) -> &'a [Value] {
    rep.pointer(&format!("/data/{part}"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn cell(v: &Value, pointer: &str, f: fn(f64) -> String) -> String {
    opt(v, pointer).map_or("-".into(), f)
}

fn handshake(rep: &Value) -> Option<String> {
    let mut t = Table::new(
        "",
        &[
            "handshake",
            "connections/s",
            "resumed",
            "handshake p50",
            "handshake p99",
            "gateway CPU/connection",
            "clients",
        ],
    );
    for h in rows(rep, "handshake") {
        t.row(vec![
            h["variant"].as_str().unwrap_or("-").to_owned(),
            cell(h, "/per_s", units::per_s),
            cell(h, "/resumptions", units::thousands),
            cell(h, "/latency/p50_ms", units::ms),
            cell(h, "/latency/p99_ms", units::ms),
            cell(h, "/cpu_us_per_handshake", units::us),
            cell(h, "/concurrency", units::thousands),
        ]);
    }
    (!rows(rep, "handshake").is_empty()).then(|| {
        format!(
            "TLS connections (ECDSA P-256, TLS 1.3; handshake, one `GET /healthz`, close):\n\n{}",
            t.markdown()
        )
    })
}

fn idle(rep: &Value) -> Option<String> {
    let mut t = Table::new(
        "",
        &[
            "mode",
            "streams",
            "connections",
            "RSS per stream",
            "RSS per connection",
            "gateway RSS before → after",
        ],
    );
    for m in rows(rep, "idle") {
        t.row(vec![
            m["mode"].as_str().unwrap_or("-").to_owned(),
            cell(m, "/streams", units::thousands),
            cell(m, "/connections", units::thousands),
            cell(m, "/per_stream_kib", units::kib),
            cell(m, "/per_conn_kib", units::kib),
            format!(
                "{} → {}",
                cell(m, "/rss_before_kib", units::mib_of_kib),
                cell(m, "/rss_after_kib", units::mib_of_kib)
            ),
        ]);
    }
    (!rows(rep, "idle").is_empty()).then(|| {
        format!(
            "Idle SSE streams, each pinged once all were open:\n\n{}",
            t.markdown()
        )
    })
}

fn fanout(rep: &Value) -> Option<String> {
    let mut t = Table::new(
        "",
        &[
            "mode",
            "subscribers",
            "connections",
            "deliveries/s",
            "p50",
            "p99",
            "p99.9",
            "gateway CPU/delivery",
        ],
    );
    for m in rows(rep, "fanout") {
        t.row(vec![
            m["mode"].as_str().unwrap_or("-").to_owned(),
            cell(m, "/subscribers", units::thousands),
            cell(m, "/connections", units::thousands),
            cell(m, "/deliveries_per_s", units::per_s),
            cell(m, "/latency/p50_ms", units::ms),
            cell(m, "/latency/p99_ms", units::ms),
            cell(m, "/latency/p999_ms", units::ms),
            cell(m, "/cpu_us_per_delivery", units::us),
        ]);
    }
    (!rows(rep, "fanout").is_empty()).then(|| {
        format!(
            "Fan-out to one agent's subscribers while echo runs publish:\n\n{}",
            t.markdown()
        )
    })
}

pub fn transport(r: &Results) -> Result<String, RenderError> {
    let mut out = String::new();
    for rep in &r.reports {
        for part in [handshake(rep), idle(rep), fanout(rep)]
            .into_iter()
            .flatten()
        {
            out.push('\n');
            out.push_str(&part);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Err(RenderError::Missing {
            file: r.name.clone(),
            pointer: "/0/data/{handshake,idle,fanout}".into(),
        });
    }
    Ok(out)
}
