//! Two gateways as one: a run on either reaches streams on both (SSE and
//! WebSocket, same bytes, same seqs), a cursor from one resumes on the other,
//! and revocation and agent stop on one hold on the other at once.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::{
    answer, create_agent, events, next_event, open_sse, run_to_end, seqs, until_done, WAIT,
};
use crate::common::{poll, Api, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_one_gateway_reaches_sse_and_websocket_streams_on_the_other() {
    let c = Cluster::start(&[]).await;
    let key = c.key().await;
    let agent = create_agent(&c.a, &key).await;

    // SSE subscriber on B, run started on A.
    let mut on_b = events(open_sse(&c.b, &key, &format!("/v1/agents/{agent}/events"), None).await);
    let resp = run_to_end(&c.a, &key, &agent, "hello from A").await;
    let run_a = resp["run_id"].as_str().unwrap();
    let seen_b = until_done(&mut on_b, run_a).await;
    assert_eq!(seen_b[0]["message_type"], "user_message");
    assert_eq!(
        answer(&seen_b),
        resp["messages"].as_array().unwrap().clone(),
        "B streams exactly what A answered, seqs included"
    );

    // WebSocket subscriber on A, run started on B.
    let mut ws = connect_async(c.a.ws_url(&key))
        .await
        .expect("websocket on A")
        .0;
    let channel = format!("agent:{agent}");
    let sub = json!({"type": "subscribe", "channel": channel});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let resp = run_to_end(&c.b, &key, &agent, "hello from B").await;
    let run_b = resp["run_id"].as_str().unwrap().to_owned();
    let mut frames = Vec::new();
    loop {
        let mut v = recv(&mut ws).await;
        assert_eq!(v["type"], "agent_response", "{v}");
        v.as_object_mut().unwrap().remove("type");
        let done = v["message_type"] == "done" && v["run_id"] == run_b.as_str();
        frames.push(v);
        if done {
            break;
        }
    }
    assert_eq!(
        answer(&frames),
        resp["messages"].as_array().unwrap().clone()
    );
    // One numbering for the agent, whichever gateway ran it.
    let first_b = seqs(&frames)[0];
    assert_eq!(
        first_b,
        seqs(&seen_b).last().unwrap() + 1,
        "B continues A's seqs"
    );
    // And B's SSE stream saw B's own run too, in order.
    let more = until_done(&mut on_b, &run_b).await;
    assert_eq!(seqs(&more), seqs(&frames));
}

async fn recv(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("readable frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_taken_on_one_gateway_resumes_on_the_other() {
    let c = Cluster::start(&[]).await;
    let key = c.key().await;
    let agent = create_agent(&c.a, &key).await;
    let path = format!("/v1/agents/{agent}/events");
    let mut on_a = events(open_sse(&c.a, &key, &path, None).await);
    let first = run_to_end(&c.a, &key, &agent, "one").await;
    let seen_a = until_done(&mut on_a, first["run_id"].as_str().unwrap()).await;
    assert!(seen_a.len() >= 4, "{seen_a:?}");
    // The client drops A after two events and comes back on B.
    let cursor = seen_a[1]["seq"].as_u64().unwrap();
    drop(on_a);
    let mut on_b = events(open_sse(&c.b, &key, &path, Some(cursor)).await);
    let replayed = until_done(&mut on_b, first["run_id"].as_str().unwrap()).await;
    assert_eq!(
        replayed,
        seen_a[2..].to_vec(),
        "no gap, no duplicate, same events"
    );
    // Then live, on the same stream, a run made on A.
    let second = run_to_end(&c.a, &key, &agent, "two").await;
    let live = until_done(&mut on_b, second["run_id"].as_str().unwrap()).await;
    assert_eq!(seqs(&live)[0], cursor + replayed.len() as u64 + 1);
    // `?after=` on a run stream works across gateways as well.
    let run = first["run_id"].as_str().unwrap();
    let mut run_b = events(
        open_sse(
            &c.b,
            &key,
            &format!("/v1/runs/{run}/stream?after={cursor}"),
            None,
        )
        .await,
    );
    let tail = until_done(&mut run_b, run).await;
    assert_eq!(tail, answer(&seen_a[2..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_agent_stop_on_one_gateway_hold_on_the_other() {
    let c = Cluster::start(&[]).await;
    let admin = c.key().await;
    let (key_id, doomed) = c.mint(&["*"]).await;
    // B has the key in its cache (30 s TTL) before it is revoked on A.
    let ok =
        c.b.req_as(&doomed, Method::GET, "/v1/account")
            .send()
            .await
            .unwrap();
    assert_eq!(ok.status(), 200);
    let r =
        c.a.req_as(&admin, Method::DELETE, &format!("/v1/keys/{key_id}"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 204);
    let revoked_at = Instant::now();
    let refused = poll(Duration::from_secs(1), || async {
        let r =
            c.b.req_as(&doomed, Method::GET, "/v1/account")
                .send()
                .await
                .unwrap();
        (r.status() == 401).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "B still accepts a key revoked on A after {:?}",
        revoked_at.elapsed()
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(1));

    let agent = create_agent(&c.a, &admin).await;
    run_to_end(&c.b, &admin, &agent, "before the stop").await;
    let r =
        c.a.req_as(&admin, Method::POST, &format!("/v1/agents/{agent}/stop"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let refused =
        c.b.req_as(
            &admin,
            Method::POST,
            &format!("/v1/agents/{agent}/messages"),
        )
        .json(&json!({"message": "after the stop"}))
        .send()
        .await
        .unwrap();
    crate::common::expect_error(refused, 409, "agent_stopped").await;
    let r =
        c.a.req_as(&admin, Method::DELETE, &format!("/v1/agents/{agent}"))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 204);
    let gone =
        c.b.req_as(
            &admin,
            Method::POST,
            &format!("/v1/agents/{agent}/messages"),
        )
        .json(&json!({"message": "after the delete"}))
        .send()
        .await
        .unwrap();
    crate::common::expect_error(gone, 404, "agent_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_redis_history_gets_history_expired() {
    let c = Cluster::start(&[("WEIR_REDIS_HISTORY_LEN", "2")]).await;
    let key = c.key().await;
    let agent = create_agent(&c.a, &key).await;
    let resp = run_to_end(&c.a, &key, &agent, "fill the history").await;
    let last = seqs(resp["messages"].as_array().unwrap())
        .last()
        .copied()
        .unwrap();
    assert!(last >= 4, "a run has more events than the history keeps");
    // Two events kept: a cursor just below them still resumes...
    let mut ok = events(
        open_sse(
            &c.b,
            &key,
            &format!("/v1/agents/{agent}/events"),
            Some(last - 2),
        )
        .await,
    );
    assert_eq!(next_event(&mut ok).await.id, (last - 1).to_string());
    // ...an older one is told, on either gateway, instead of getting a gap.
    for node in [&c.a, &c.b] {
        let r = open_sse(
            node,
            &key,
            &format!("/v1/agents/{agent}/events?after=1"),
            None,
        )
        .await;
        let mut s = events(r);
        let e = next_event(&mut s).await;
        assert_eq!(e.event, "error");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(v["code"], "history_expired", "{v}");
    }
}
