//! The one behaviour suite every [`Store`] must pass, run against the SQLite
//! store directly and against the remote client over real HTTP.
//!
//! Each part works in accounts of its own (random ids), so the parts do not
//! depend on each other or on what the store held before.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{acct, new_agent, new_tool, nf, ts};
use super::{activity, approvals, audit, isolation, usage};
use crate::{domain::AgentStatus, store::*};

/// Runs every part of the suite against `store`.
pub(super) async fn conformance(store: &dyn Store) {
    store.ping().await.expect("ping");
    accounts(store).await;
    keys(store).await;
    key_settings(store).await;
    agents(store).await;
    tools(store).await;
    activity::sessions(store).await;
    activity::runs(store).await;
    activity::events(store).await;
    activity::logs(store).await;
    activity::cascade(store).await;
    isolation::tenancy(store).await;
    isolation::pagination(store).await;
    audit::audit(store).await;
    usage::usage(store).await;
    approvals::approvals(store).await;
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
        id: crate::util::new_id("key").into(),
        account_id: account.to_owned(),
        label: label.to_owned(),
        scopes: vec!["agents:read".into(), "chat".into()],
        rpm: 60,
        hash: "ab".repeat(32),
        tpm: None,
        daily_tokens: None,
        max_runs: None,
        max_websockets: None,
        max_sse_streams: None,
        expires_at: None,
        models: None,
    }
}

async fn keys(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let k1 = store
        .create_key(new_key(&a, "one"))
        .await
        .expect("create key");
    let k2 = store
        .create_key(new_key(&a, "two"))
        .await
        .expect("create key");
    assert_eq!(
        (k1.account_id.as_str(), k1.label.as_str(), k1.rpm),
        (a.as_str(), "one", 60)
    );
    assert_eq!(
        (k1.last_used_at.clone(), k1.revoked_at.clone()),
        (None, None)
    );
    assert_eq!(
        store.get_key(k1.id.as_str()).await,
        Ok(k1.clone()),
        "hash and account kept"
    );
    let mut dup = new_key(&a, "dup");
    dup.id = k1.id.clone();
    assert!(matches!(
        store.create_key(dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_key("key-missing").await, Err(nf("key")));

    let page = store
        .list_keys(&a, ListParams::default())
        .await
        .expect("list");
    let ids: Vec<_> = page.data.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, [k1.id.as_str(), k2.id.as_str()]);
    assert_eq!(page.pagination.total, 2);
    assert_eq!(
        store
            .list_keys(&b, ListParams::default())
            .await
            .expect("list")
            .pagination
            .total,
        0
    );

    assert_eq!(
        store.revoke_key(&b, k1.id.as_str()).await,
        Err(nf("key")),
        "other account"
    );
    assert_eq!(
        store.get_key(k1.id.as_str()).await.expect("get").revoked_at,
        None
    );
    store.revoke_key(&a, k1.id.as_str()).await.expect("revoke");
    let revoked = store
        .get_key(k1.id.as_str())
        .await
        .expect("revoked keys are returned");
    assert!(revoked.revoked_at.is_some());
    store
        .revoke_key(&a, k1.id.as_str())
        .await
        .expect("revoking twice is fine");
    assert_eq!(
        store.get_key(k1.id.as_str()).await.expect("get").revoked_at,
        revoked.revoked_at
    );
    assert_eq!(store.revoke_key(&a, "key-missing").await, Err(nf("key")));

    let used = vec![
        (k1.id.to_string(), "2030-01-01T00:00:00.000Z".to_owned()),
        (k2.id.to_string(), "2030-01-02T00:00:00.000Z".to_owned()),
        (
            "key-unknown".to_owned(),
            "2030-01-03T00:00:00.000Z".to_owned(),
        ),
    ];
    store.touch_keys(used).await.expect("touch");
    store.touch_keys(Vec::new()).await.expect("empty touch");
    let got = store
        .get_key(k2.id.as_str())
        .await
        .expect("get")
        .last_used_at;
    assert_eq!(got.as_deref(), Some("2030-01-02T00:00:00.000Z"));
    let got = store
        .get_key(k1.id.as_str())
        .await
        .expect("get")
        .last_used_at;
    assert_eq!(got.as_deref(), Some("2030-01-01T00:00:00.000Z"));
}

/// Limits, expiry, PATCH, rotation and account budgets.
async fn key_settings(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let mut nk = new_key(&a, "lim");
    (nk.tpm, nk.daily_tokens, nk.max_runs) = (Some(5_000_000_000), Some(7), Some(3));
    nk.expires_at = Some("2099-01-01T00:00:00Z".into());
    nk.models = Some(vec!["upstream/fast".into(), "echo".into()]);
    let k = store.create_key(nk).await.expect("create");
    let got = store.get_key(k.id.as_str()).await.expect("get");
    assert_eq!(got, k, "read back as created");
    assert_eq!((got.tpm, got.max_websockets), (Some(5_000_000_000), None));
    assert_eq!(
        got.models.as_deref(),
        Some(&["upstream/fast".to_owned(), "echo".to_owned()][..])
    );
    let mut s = got.settings();
    (s.label, s.rpm, s.tpm, s.max_sse_streams) = ("new".into(), 9, None, Some(2));
    s.models = None;
    assert_eq!(
        store.update_key(&b, k.id.as_str(), s.clone()).await,
        Err(nf("key"))
    );
    let updated = store.update_key(&a, k.id.as_str(), s.clone()).await;
    let updated = updated.expect("update");
    assert_eq!(updated.settings(), s);
    assert_eq!(updated.models, None, "a list lifted is NULL again");
    assert_eq!(updated.expires_at, k.expires_at, "expiry is not a setting");
    s.models = Some(vec![]);
    let updated = store.update_key(&a, k.id.as_str(), s.clone()).await;
    assert_eq!(
        updated.expect("update").models,
        Some(vec![]),
        "an empty list is not NULL"
    );
    // Rotation: with a grace the old hash is kept, without one it is not.
    let rot = |hash: &str, until: Option<&str>| KeyRotation {
        hash: hash.repeat(32),
        prev_until: until.map(str::to_owned),
    };
    let bad = store.rotate_key(&b, k.id.as_str(), rot("cd", None)).await;
    assert_eq!(bad, Err(nf("key")));
    let until = "2030-01-01T00:00:00Z";
    let r = store
        .rotate_key(&a, k.id.as_str(), rot("cd", Some(until)))
        .await;
    let r = r.expect("rotate");
    assert_eq!(
        (r.hash.clone(), r.prev_hash.clone()),
        ("cd".repeat(32), Some("ab".repeat(32)))
    );
    assert_eq!(r.prev_until.as_deref(), Some(until));
    assert_eq!(store.get_key(k.id.as_str()).await.expect("get"), r);
    let r = store.rotate_key(&a, k.id.as_str(), rot("ef", None)).await;
    let r = r.expect("rotate");
    assert_eq!((r.prev_hash, r.prev_until), (None, None));
    store.revoke_key(&a, k.id.as_str()).await.expect("revoke");
    let revoked = store.rotate_key(&a, k.id.as_str(), rot("00", None)).await;
    assert!(
        matches!(revoked, Err(StoreError::Conflict(_))),
        "{revoked:?}"
    );
    // Account budgets: set (creating the account), read, cleared.
    let c = acct();
    let limits = AccountLimits {
        tpm: Some(100),
        daily_tokens: Some(2_000_000_000_000),
    };
    let set = store.set_account_limits(&c, limits).await.expect("set");
    assert_eq!(
        (set.tpm, set.daily_tokens),
        (limits.tpm, limits.daily_tokens)
    );
    assert_eq!(store.get_account(&c).await, Ok(set.clone()));
    let cleared = store.set_account_limits(&c, AccountLimits::default()).await;
    let cleared = cleared.expect("clear");
    assert_eq!(
        (cleared.tpm, cleared.daily_tokens, cleared.created_at),
        (None, None, set.created_at)
    );
}

async fn agents(store: &dyn Store) {
    let a = acct();
    let agent = store
        .create_agent(&a, new_agent("first"))
        .await
        .expect("create");
    assert!(agent.id.as_str().starts_with("agent-"), "{}", agent.id);
    assert_eq!(
        (agent.account_id.as_str(), agent.status),
        (a.as_str(), AgentStatus::Running)
    );
    assert_eq!(
        (agent.model.as_str(), agent.system.as_str()),
        ("echo", "be brief")
    );
    assert_eq!(agent.metadata, json!({"team": "core", "n": 1}));
    assert_eq!(agent.approval_required, vec!["get_time".to_owned()]);
    assert_eq!(agent.created_at, agent.updated_at);
    assert_eq!(
        store.get_agent(&a, agent.id.as_str()).await,
        Ok(agent.clone())
    );

    let patch = AgentPatch {
        name: Some("renamed".into()),
        ..AgentPatch::default()
    };
    let renamed = store
        .update_agent(&a, agent.id.as_str(), patch)
        .await
        .expect("patch name");
    assert_eq!(
        (renamed.name.as_str(), renamed.model.as_str()),
        ("renamed", "echo")
    );
    assert_eq!(
        (renamed.tags.clone(), renamed.created_at.clone()),
        (agent.tags, agent.created_at)
    );
    assert!(ts(&renamed.updated_at) >= ts(&agent.updated_at));
    let patch = AgentPatch {
        status: Some(AgentStatus::Stopped),
        tools: Some(vec!["tool-x".into()]),
        metadata: Some(json!({"v": [1, 2]})),
        approval_required: Some(vec!["calculator".into()]),
        ..AgentPatch::default()
    };
    let stopped = store
        .update_agent(&a, agent.id.as_str(), patch)
        .await
        .expect("patch status");
    assert_eq!(
        (stopped.name.as_str(), stopped.status),
        ("renamed", AgentStatus::Stopped)
    );
    assert_eq!(
        (stopped.tools.clone(), stopped.metadata.clone()),
        (vec!["tool-x".into()], json!({"v": [1, 2]}))
    );
    assert_eq!(stopped.approval_required, vec!["calculator".to_owned()]);
    assert_eq!(store.get_agent(&a, agent.id.as_str()).await, Ok(stopped));
    let missing = store
        .update_agent(&a, "agent-missing", AgentPatch::default())
        .await;
    assert_eq!(missing, Err(nf("agent")));

    store
        .delete_agent(&a, agent.id.as_str())
        .await
        .expect("delete");
    assert_eq!(
        store.get_agent(&a, agent.id.as_str()).await,
        Err(nf("agent"))
    );
    assert_eq!(
        store.delete_agent(&a, agent.id.as_str()).await,
        Err(nf("agent"))
    );
}

async fn tools(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let tool = store
        .create_tool(&a, new_tool("search"))
        .await
        .expect("create");
    assert!(tool.id.as_str().starts_with("tool-"), "{}", tool.id);
    assert_eq!(
        (tool.name.as_str(), tool.kind.as_str()),
        ("search", "webhook")
    );
    assert_eq!(
        tool.json_schema,
        json!({"type": "object", "properties": {"q": {"type": "string"}}})
    );
    assert_eq!(store.get_tool(&a, tool.id.as_str()).await, Ok(tool.clone()));
    assert!(matches!(
        store.create_tool(&a, new_tool("search")).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_tool(&b, new_tool("search"))
        .await
        .expect("same name, other account");
    let other = store
        .create_tool(&a, new_tool("fetch"))
        .await
        .expect("second");
    let page = store
        .list_tools(&a, ListParams::default())
        .await
        .expect("list");
    let ids: Vec<_> = page.data.iter().map(|t| t.id.clone()).collect();
    assert_eq!(ids, [tool.id.clone(), other.id]);
    store
        .delete_tool(&a, tool.id.as_str())
        .await
        .expect("delete");
    assert_eq!(store.get_tool(&a, tool.id.as_str()).await, Err(nf("tool")));
    assert_eq!(
        store.delete_tool(&a, tool.id.as_str()).await,
        Err(nf("tool"))
    );
    store
        .create_tool(&a, new_tool("search"))
        .await
        .expect("name free again after delete");
}

/// Many readers and writers at once on one store (run on a multi-threaded
/// runtime): nothing fails and every write is visible afterwards. `reads`
/// is how many reads each of the eight readers makes.
pub(super) async fn concurrent_reads_and_writes(store: Arc<dyn Store>, reads: usize) {
    let a = acct();
    let agent = store
        .create_agent(&a, new_agent("hot"))
        .await
        .expect("agent");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (store, a) = (store.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let name = format!("w{w}-{i}");
                store
                    .create_agent(&a, new_agent(&name))
                    .await
                    .expect("write");
            }
        }));
    }
    for _ in 0..8 {
        let (store, a, id) = (store.clone(), a.clone(), agent.id.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..reads {
                assert_eq!(store.get_agent(&a, id.as_str()).await.expect("read").id, id);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let page = store
        .list_agents(&a, AgentFilter::default(), ListParams::default())
        .await
        .expect("list");
    assert_eq!(page.pagination.total, 161);
}
