//! Conformance parts about what a caller may see: tenancy and paging.

use super::fixtures::{acct, event, log, new_agent, new_tool, nf, params, run};
use crate::store::*;

/// Another account's records behave exactly like missing ones.
pub(super) async fn tenancy(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let agent = store
        .create_agent(&a, new_agent("mine"))
        .await
        .expect("agent");
    let id = agent.id.as_str();
    assert_eq!(store.get_agent(&b, id).await, Err(nf("agent")));
    assert_eq!(
        store.update_agent(&b, id, AgentPatch::default()).await,
        Err(nf("agent"))
    );
    assert_eq!(store.delete_agent(&b, id).await, Err(nf("agent")));
    let theirs = store
        .list_agents(&b, AgentFilter::default(), ListParams::default())
        .await
        .expect("list");
    assert_eq!(theirs.pagination.total, 0);
    assert!(theirs.data.is_empty());
    assert_eq!(
        store.get_agent(&a, id).await,
        Ok(agent.clone()),
        "untouched by b's attempts"
    );

    let tool = store.create_tool(&a, new_tool("t")).await.expect("tool");
    assert_eq!(store.get_tool(&b, tool.id.as_str()).await, Err(nf("tool")));
    assert_eq!(
        store.delete_tool(&b, tool.id.as_str()).await,
        Err(nf("tool"))
    );
    assert_eq!(
        store
            .list_tools(&b, ListParams::default())
            .await
            .expect("list")
            .pagination
            .total,
        0
    );

    let sess = store.create_session(&a, id, "s").await.expect("session");
    assert_eq!(store.create_session(&b, id, "s").await, Err(nf("agent")));
    assert_eq!(
        store.get_session(&b, id, sess.id.as_str()).await,
        Err(nf("agent"))
    );
    assert_eq!(
        store.delete_session(&b, id, sess.id.as_str()).await,
        Err(nf("agent"))
    );
    assert_eq!(
        store.list_sessions(&b, id, ListParams::default()).await,
        Err(nf("agent"))
    );

    let r = store
        .create_run(&a, run(id, sess.id.as_str()))
        .await
        .expect("run");
    assert_eq!(
        store.create_run(&b, run(id, sess.id.as_str())).await,
        Err(nf("agent"))
    );
    assert_eq!(store.get_run(&b, r.id.as_str()).await, Err(nf("run")));
    assert_eq!(store.finish_run(&b, r.clone()).await, Err(nf("run")));

    let ev = vec![event(id, 1, r.id.as_str(), sess.id.as_str())];
    assert_eq!(store.append_events(&b, ev.clone()).await, Err(nf("agent")));
    store.append_events(&a, ev).await.expect("events");
    assert_eq!(store.last_event_seq(&b, id).await, Err(nf("agent")));
    let listed = store.list_events(&b, id, EventFilter::default(), ListParams::default());
    assert_eq!(listed.await, Err(nf("agent")));
    assert_eq!(
        store.append_logs(&b, vec![log(id, 1)]).await,
        Err(nf("agent"))
    );
    assert_eq!(store.last_log_seq(&b, id).await, Err(nf("agent")));
    assert_eq!(
        store.list_logs(&b, id, ListParams::default()).await,
        Err(nf("agent"))
    );
    assert_eq!(store.last_event_seq(&a, id).await, Ok(1));
}

/// 25 agents walked 10 at a time, by offset and by cursor.
pub(super) async fn pagination(store: &dyn Store) {
    let a = acct();
    let mut names = Vec::new();
    for i in 0..25 {
        let name = format!("a{i:02}");
        store
            .create_agent(&a, new_agent(&name))
            .await
            .expect("agent");
        names.push(name);
    }
    // Rows of another account never count.
    store
        .create_agent(&acct(), new_agent("other"))
        .await
        .expect("agent");

    let mut by_offset = Vec::new();
    for (offset, len) in [(0, 10), (10, 10), (20, 5)] {
        let page = store
            .list_agents(&a, AgentFilter::default(), params(10, offset, None))
            .await
            .expect("page");
        assert_eq!(page.data.len(), len, "offset {offset}");
        assert_eq!(
            (
                page.pagination.total,
                page.pagination.limit,
                page.pagination.offset
            ),
            (25, 10, offset)
        );
        assert_eq!(
            page.pagination.next_cursor.is_some(),
            offset < 20,
            "offset {offset}"
        );
        by_offset.extend(page.data.into_iter().map(|ag| ag.name));
    }
    assert_eq!(by_offset, names);

    let (mut by_cursor, mut after, mut pages) = (Vec::new(), None::<String>, 0);
    let mut first_cursor = None;
    loop {
        let page = store
            .list_agents(&a, AgentFilter::default(), params(10, 0, after.as_deref()))
            .await
            .expect("page");
        pages += 1;
        assert_eq!(page.pagination.total, 25, "total ignores the cursor");
        by_cursor.extend(page.data.into_iter().map(|ag| ag.name));
        first_cursor = first_cursor.or(page.pagination.next_cursor.clone());
        match page.pagination.next_cursor {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "cursor walk does not end");
    }
    assert_eq!((pages, by_cursor), (3, names.clone()));

    let skip = store
        .list_agents(
            &a,
            AgentFilter::default(),
            params(10, 5, first_cursor.as_deref()),
        )
        .await
        .expect("page");
    assert_eq!(
        skip.data.first().map(|ag| ag.name.as_str()),
        Some("a15"),
        "offset applies after the cursor"
    );
    assert_eq!(skip.pagination.next_cursor, None);
    limits(store, &a).await;
    event_cursor_walk(store).await;
}

/// Limits clamp to 1..=1000; a full last page has no next cursor; bad cursors are refused.
async fn limits(store: &dyn Store, a: &str) {
    let one = store
        .list_agents(a, AgentFilter::default(), params(0, 0, None))
        .await
        .expect("page");
    assert_eq!((one.data.len(), one.pagination.limit), (1, 1));
    let big = store
        .list_agents(a, AgentFilter::default(), params(5000, 0, None))
        .await
        .expect("page");
    assert_eq!((big.data.len(), big.pagination.limit), (25, 1000));
    let exact = store
        .list_agents(a, AgentFilter::default(), params(25, 0, None))
        .await
        .expect("page");
    assert_eq!((exact.data.len(), exact.pagination.next_cursor), (25, None));
    let short = store
        .list_agents(a, AgentFilter::default(), params(24, 0, None))
        .await
        .expect("page");
    assert!(short.pagination.next_cursor.is_some());
    let past = store
        .list_agents(a, AgentFilter::default(), params(10, 100, None))
        .await
        .expect("page");
    assert_eq!(
        (
            past.data.len(),
            past.pagination.total,
            past.pagination.next_cursor
        ),
        (0, 25, None)
    );
    for bad in ["abc", "-5", "1e3", ""] {
        let invalid = StoreError::Invalid("after: not a valid cursor".into());
        let agents = store
            .list_agents(a, AgentFilter::default(), params(10, 0, Some(bad)))
            .await;
        assert_eq!(agents.map(|_| ()), Err(invalid.clone()), "{bad:?}");
        let keys = store.list_keys(a, params(10, 0, Some(bad))).await;
        assert_eq!(keys.map(|_| ()), Err(invalid), "{bad:?}");
    }
}

async fn event_cursor_walk(store: &dyn Store) {
    let a = acct();
    let agent = store
        .create_agent(&a, new_agent("ev"))
        .await
        .expect("agent");
    let batch: Vec<_> = (1..=25)
        .map(|s| event(agent.id.as_str(), s, "run-1", "sess-1"))
        .collect();
    store.append_events(&a, batch).await.expect("append");
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    for _ in 0..3 {
        let page = store
            .list_events(
                &a,
                agent.id.as_str(),
                EventFilter::default(),
                params(10, 0, after.as_deref()),
            )
            .await
            .expect("page");
        seen.extend(page.data.iter().map(|e| e.seq));
        after = page.pagination.next_cursor;
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    assert_eq!(after, None);
    let bad = store.list_events(
        &a,
        agent.id.as_str(),
        EventFilter::default(),
        params(10, 0, Some("x")),
    );
    assert_eq!(
        bad.await,
        Err(StoreError::Invalid("after: not a valid cursor".into()))
    );
}
