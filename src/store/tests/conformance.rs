//! The one behaviour suite every [`Store`] must pass, run against the SQLite
//! store directly and against the remote client over real HTTP.
//!
//! Each part works in accounts of its own (random ids), so the parts do not
//! depend on each other or on what the store held before.

use serde_json::json;

use super::fixtures::{acct, event, log, new_agent, new_tool, nf, params, run};
use super::isolation;
use crate::store::*;

/// Runs every part of the suite against `store`.
pub(super) async fn conformance(store: &dyn Store) {
    store.ping().await.expect("ping");
    accounts(store).await;
    keys(store).await;
    agents(store).await;
    tools(store).await;
    sessions(store).await;
    runs(store).await;
    events(store).await;
    logs(store).await;
    cascade(store).await;
    isolation::tenancy(store).await;
    isolation::pagination(store).await;
}

async fn accounts(store: &dyn Store) {
    let a = acct();
    assert_eq!(store.get_account(&a).await, Err(nf("account")));
    let first = store.ensure_account(&a).await.expect("ensure");
    assert_eq!(first.id, a);
    let again = store.ensure_account(&a).await.expect("ensure again");
    assert_eq!(again, first, "ensure_account is idempotent");
    assert_eq!(store.get_account(&a).await, Ok(first));
}

fn new_key(account: &str, label: &str) -> NewKey {
    NewKey {
        id: crate::util::new_id("key"),
        account_id: account.to_owned(),
        label: label.to_owned(),
        scopes: vec!["agents:read".into(), "chat".into()],
        rpm: 60,
        hash: "ab".repeat(32),
    }
}

async fn keys(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let k1 = store.create_key(new_key(&a, "one")).await.expect("create key");
    let k2 = store.create_key(new_key(&a, "two")).await.expect("create key");
    assert_eq!((k1.account_id.as_str(), k1.label.as_str(), k1.rpm), (a.as_str(), "one", 60));
    assert_eq!((k1.last_used_at.clone(), k1.revoked_at.clone()), (None, None));
    assert_eq!(store.get_key(&k1.id).await, Ok(k1.clone()), "hash and account kept");
    let mut dup = new_key(&a, "dup");
    dup.id = k1.id.clone();
    assert!(matches!(store.create_key(dup).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get_key("key-missing").await, Err(nf("key")));

    let page = store.list_keys(&a, ListParams::default()).await.expect("list");
    let ids: Vec<_> = page.data.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, [k1.id.as_str(), k2.id.as_str()]);
    assert_eq!(page.pagination.total, 2);
    assert_eq!(store.list_keys(&b, ListParams::default()).await.expect("list").pagination.total, 0);

    assert_eq!(store.revoke_key(&b, &k1.id).await, Err(nf("key")), "other account");
    assert_eq!(store.get_key(&k1.id).await.expect("get").revoked_at, None);
    store.revoke_key(&a, &k1.id).await.expect("revoke");
    let revoked = store.get_key(&k1.id).await.expect("revoked keys are returned");
    assert!(revoked.revoked_at.is_some());
    store.revoke_key(&a, &k1.id).await.expect("revoking twice is fine");
    assert_eq!(store.get_key(&k1.id).await.expect("get").revoked_at, revoked.revoked_at);
    assert_eq!(store.revoke_key(&a, "key-missing").await, Err(nf("key")));

    let used = vec![
        (k1.id.clone(), "2030-01-01T00:00:00.000Z".to_owned()),
        (k2.id.clone(), "2030-01-02T00:00:00.000Z".to_owned()),
        ("key-unknown".to_owned(), "2030-01-03T00:00:00.000Z".to_owned()),
    ];
    store.touch_keys(used).await.expect("touch");
    store.touch_keys(Vec::new()).await.expect("empty touch");
    let got = store.get_key(&k2.id).await.expect("get").last_used_at;
    assert_eq!(got.as_deref(), Some("2030-01-02T00:00:00.000Z"));
    let got = store.get_key(&k1.id).await.expect("get").last_used_at;
    assert_eq!(got.as_deref(), Some("2030-01-01T00:00:00.000Z"));
}

async fn agents(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("first")).await.expect("create");
    assert!(agent.id.starts_with("agent-"), "{}", agent.id);
    assert_eq!((agent.account_id.as_str(), agent.status.as_str()), (a.as_str(), AGENT_RUNNING));
    assert_eq!((agent.model.as_str(), agent.system.as_str()), ("echo", "be brief"));
    assert_eq!(agent.metadata, json!({"team": "core", "n": 1}));
    assert_eq!(agent.created_at, agent.updated_at);
    assert_eq!(store.get_agent(&a, &agent.id).await, Ok(agent.clone()));

    let patch = AgentPatch { name: Some("renamed".into()), ..AgentPatch::default() };
    let renamed = store.update_agent(&a, &agent.id, patch).await.expect("patch name");
    assert_eq!((renamed.name.as_str(), renamed.model.as_str()), ("renamed", "echo"));
    assert_eq!((renamed.tags.clone(), renamed.created_at.clone()), (agent.tags, agent.created_at));
    assert!(renamed.updated_at >= agent.updated_at);
    let patch = AgentPatch {
        status: Some(AGENT_STOPPED.into()),
        tools: Some(vec!["tool-x".into()]),
        metadata: Some(json!({"v": [1, 2]})),
        ..AgentPatch::default()
    };
    let stopped = store.update_agent(&a, &agent.id, patch).await.expect("patch status");
    assert_eq!((stopped.name.as_str(), stopped.status.as_str()), ("renamed", AGENT_STOPPED));
    assert_eq!((stopped.tools.clone(), stopped.metadata.clone()), (vec!["tool-x".into()], json!({"v": [1, 2]})));
    assert_eq!(store.get_agent(&a, &agent.id).await, Ok(stopped));
    let missing = store.update_agent(&a, "agent-missing", AgentPatch::default()).await;
    assert_eq!(missing, Err(nf("agent")));

    store.delete_agent(&a, &agent.id).await.expect("delete");
    assert_eq!(store.get_agent(&a, &agent.id).await, Err(nf("agent")));
    assert_eq!(store.delete_agent(&a, &agent.id).await, Err(nf("agent")));
}

async fn tools(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let tool = store.create_tool(&a, new_tool("search")).await.expect("create");
    assert!(tool.id.starts_with("tool-"), "{}", tool.id);
    assert_eq!((tool.name.as_str(), tool.kind.as_str()), ("search", "webhook"));
    assert_eq!(tool.json_schema, json!({"type": "object", "properties": {"q": {"type": "string"}}}));
    assert_eq!(store.get_tool(&a, &tool.id).await, Ok(tool.clone()));
    assert!(matches!(store.create_tool(&a, new_tool("search")).await, Err(StoreError::Conflict(_))));
    store.create_tool(&b, new_tool("search")).await.expect("same name, other account");
    let other = store.create_tool(&a, new_tool("fetch")).await.expect("second");
    let page = store.list_tools(&a, ListParams::default()).await.expect("list");
    let ids: Vec<_> = page.data.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, [tool.id.clone(), other.id]);
    store.delete_tool(&a, &tool.id).await.expect("delete");
    assert_eq!(store.get_tool(&a, &tool.id).await, Err(nf("tool")));
    assert_eq!(store.delete_tool(&a, &tool.id).await, Err(nf("tool")));
    store.create_tool(&a, new_tool("search")).await.expect("name free again after delete");
}

async fn sessions(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("s")).await.expect("agent");
    let sibling = store.create_agent(&a, new_agent("sibling")).await.expect("agent");
    let s1 = store.create_session(&a, &agent.id, "one").await.expect("session");
    let s2 = store.create_session(&a, &agent.id, "two").await.expect("session");
    assert!(s1.id.starts_with("sess-"), "{}", s1.id);
    assert_eq!((s1.agent_id.as_str(), s1.name.as_str()), (agent.id.as_str(), "one"));
    assert_eq!(store.get_session(&a, &agent.id, &s1.id).await, Ok(s1.clone()));
    assert_eq!(store.get_session(&a, &sibling.id, &s1.id).await, Err(nf("session")));
    assert_eq!(store.get_session(&a, "agent-missing", &s1.id).await, Err(nf("agent")));
    assert_eq!(store.create_session(&a, "agent-missing", "x").await, Err(nf("agent")));
    let page = store.list_sessions(&a, &agent.id, ListParams::default()).await.expect("list");
    assert_eq!(page.data, [s1.clone(), s2.clone()]);
    assert_eq!(page.pagination.total, 2);
    let none = store.list_sessions(&a, &sibling.id, ListParams::default()).await.expect("list");
    assert_eq!(none.pagination.total, 0);
    assert_eq!(store.delete_session(&a, &sibling.id, &s1.id).await, Err(nf("session")));
    store.delete_session(&a, &agent.id, &s1.id).await.expect("delete");
    assert_eq!(store.get_session(&a, &agent.id, &s1.id).await, Err(nf("session")));
    assert_eq!(store.delete_session(&a, &agent.id, &s1.id).await, Err(nf("session")));
    assert_eq!(store.get_session(&a, &agent.id, &s2.id).await, Ok(s2));
}

async fn runs(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("r")).await.expect("agent");
    let r = run(&agent.id, "sess-1");
    let created = store.create_run(&a, r.clone()).await.expect("create run");
    assert_eq!((created.id.as_str(), created.status.as_str()), (r.id.as_str(), RUN_RUNNING));
    assert_eq!(store.get_run(&a, &r.id).await, Ok(created.clone()));
    assert!(matches!(store.create_run(&a, r.clone()).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.create_run(&a, run("agent-missing", "s")).await, Err(nf("agent")));
    assert_eq!(store.get_run(&a, "run-missing").await, Err(nf("run")));

    let mut done = created.clone();
    done.status = RUN_FAILED.into();
    done.stop_reason = Some("error".into());
    done.error = Some("model timed out".into());
    let finished = store.finish_run(&a, done).await.expect("finish");
    assert_eq!((finished.status.as_str(), finished.error.as_deref()), (RUN_FAILED, Some("model timed out")));
    assert_eq!(finished.stop_reason.as_deref(), Some("error"));
    assert_eq!(finished.created_at, created.created_at);
    assert!(finished.updated_at >= created.updated_at);
    assert_eq!(store.get_run(&a, &r.id).await, Ok(finished));
    assert_eq!(store.finish_run(&a, run(&agent.id, "s")).await, Err(nf("run")));
}

async fn events(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("e")).await.expect("agent");
    assert_eq!(store.last_event_seq(&a, &agent.id).await, Ok(0));
    let mut batch: Vec<_> = (1..=5).map(|s| event(&agent.id, s, "run-1", "sess-1")).collect();
    batch.extend((6..=8).map(|s| event(&agent.id, s, "run-2", "sess-2")));
    store.append_events(&a, batch.clone()).await.expect("append");
    store.append_events(&a, Vec::new()).await.expect("empty append");
    assert_eq!(store.last_event_seq(&a, &agent.id).await, Ok(8));

    let dup = vec![event(&agent.id, 9, "run-2", "sess-2"), event(&agent.id, 3, "run-1", "sess-1")];
    assert!(matches!(store.append_events(&a, dup).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.last_event_seq(&a, &agent.id).await, Ok(8), "a failed batch writes nothing");

    let all = store.list_events(&a, &agent.id, EventFilter::default(), ListParams::default()).await;
    let all = all.expect("list");
    assert_eq!(all.data, batch, "events come back exactly as stored, oldest first");
    assert_eq!(all.pagination.total, 8);
    let seqs = |p: &Page<EventRecord>| p.data.iter().map(|e| e.seq).collect::<Vec<_>>();
    let by_session = EventFilter { session_id: Some("sess-2".into()), run_id: None };
    let page = store.list_events(&a, &agent.id, by_session, ListParams::default()).await.expect("list");
    assert_eq!((seqs(&page), page.pagination.total), (vec![6, 7, 8], 3));
    let by_run = EventFilter { session_id: None, run_id: Some("run-1".into()) };
    let page = store.list_events(&a, &agent.id, by_run, params(2, 0, Some("2"))).await.expect("list");
    assert_eq!((seqs(&page), page.pagination.total), (vec![3, 4], 5));
    assert_eq!(page.pagination.next_cursor.as_deref(), Some("4"), "the cursor is the seq");
    let neither = EventFilter { session_id: Some("sess-1".into()), run_id: Some("run-2".into()) };
    let page = store.list_events(&a, &agent.id, neither, ListParams::default()).await.expect("list");
    assert_eq!((page.data.len(), page.pagination.total), (0, 0));
    let missing = store.list_events(&a, "agent-missing", EventFilter::default(), ListParams::default());
    assert_eq!(missing.await, Err(nf("agent")));
    assert_eq!(store.last_event_seq(&a, "agent-missing").await, Err(nf("agent")));
}

async fn logs(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("l")).await.expect("agent");
    assert_eq!(store.last_log_seq(&a, &agent.id).await, Ok(0));
    let lines: Vec<_> = (1..=4).map(|s| log(&agent.id, s)).collect();
    store.append_logs(&a, lines.clone()).await.expect("append");
    assert_eq!(store.last_log_seq(&a, &agent.id).await, Ok(4));
    assert!(matches!(store.append_logs(&a, vec![log(&agent.id, 2)]).await, Err(StoreError::Conflict(_))));
    let page = store.list_logs(&a, &agent.id, ListParams::default()).await.expect("list");
    assert_eq!((page.data, page.pagination.total), (lines.clone(), 4));
    let page = store.list_logs(&a, &agent.id, params(10, 0, Some("2"))).await.expect("list");
    assert_eq!(page.data, lines[2..]);
    assert_eq!(page.pagination.next_cursor, None);
    assert_eq!(store.append_logs(&a, vec![log("agent-missing", 1)]).await, Err(nf("agent")));
}

/// Deleting an agent takes its sessions, runs, events and logs with it.
async fn cascade(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("c")).await.expect("agent");
    let keep = store.create_agent(&a, new_agent("keep")).await.expect("agent");
    let sess = store.create_session(&a, &agent.id, "s").await.expect("session");
    let r = store.create_run(&a, run(&agent.id, &sess.id)).await.expect("run");
    let kept_run = store.create_run(&a, run(&keep.id, "s")).await.expect("run");
    store.append_events(&a, vec![event(&agent.id, 1, &r.id, &sess.id)]).await.expect("events");
    store.append_logs(&a, vec![log(&agent.id, 1)]).await.expect("logs");
    store.delete_agent(&a, &agent.id).await.expect("delete");
    assert_eq!(store.get_run(&a, &r.id).await, Err(nf("run")));
    assert_eq!(store.get_session(&a, &agent.id, &sess.id).await, Err(nf("agent")));
    assert_eq!(store.get_run(&a, &kept_run.id).await, Ok(kept_run), "other agents untouched");
    assert_eq!(store.last_event_seq(&a, &agent.id).await, Err(nf("agent")));
}
