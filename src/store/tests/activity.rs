//! Conformance parts for what agents accumulate: sessions, runs, events,
//! log lines, and the cascade when the agent goes.

use super::fixtures::{acct, agent_with_activity, event, log, new_agent, nf, params, run, ts};
use crate::{
    domain::{ErrorCode, MessageType, RunStatus, StopReason},
    store::*,
};

pub(super) async fn sessions(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("s")).await.expect("agent");
    let sibling = store
        .create_agent(&a, new_agent("sibling"))
        .await
        .expect("agent");
    let s1 = store
        .create_session(&a, agent.id.as_str(), "one")
        .await
        .expect("session");
    let s2 = store
        .create_session(&a, agent.id.as_str(), "two")
        .await
        .expect("session");
    assert!(s1.id.as_str().starts_with("sess-"), "{}", s1.id);
    assert_eq!(
        (s1.agent_id.as_str(), s1.name.as_str()),
        (agent.id.as_str(), "one")
    );
    assert_eq!(
        store
            .get_session(&a, agent.id.as_str(), s1.id.as_str())
            .await,
        Ok(s1.clone())
    );
    assert_eq!(
        store
            .get_session(&a, sibling.id.as_str(), s1.id.as_str())
            .await,
        Err(nf("session"))
    );
    assert_eq!(
        store.get_session(&a, "agent-missing", s1.id.as_str()).await,
        Err(nf("agent"))
    );
    assert_eq!(
        store.create_session(&a, "agent-missing", "x").await,
        Err(nf("agent"))
    );
    let page = store
        .list_sessions(&a, agent.id.as_str(), ListParams::default())
        .await
        .expect("list");
    assert_eq!(page.data, [s1.clone(), s2.clone()]);
    assert_eq!(page.pagination.total, 2);
    let none = store
        .list_sessions(&a, sibling.id.as_str(), ListParams::default())
        .await
        .expect("list");
    assert_eq!(none.pagination.total, 0);
    assert_eq!(
        store
            .delete_session(&a, sibling.id.as_str(), s1.id.as_str())
            .await,
        Err(nf("session"))
    );
    store
        .delete_session(&a, agent.id.as_str(), s1.id.as_str())
        .await
        .expect("delete");
    assert_eq!(
        store
            .get_session(&a, agent.id.as_str(), s1.id.as_str())
            .await,
        Err(nf("session"))
    );
    assert_eq!(
        store
            .delete_session(&a, agent.id.as_str(), s1.id.as_str())
            .await,
        Err(nf("session"))
    );
    assert_eq!(
        store
            .get_session(&a, agent.id.as_str(), s2.id.as_str())
            .await,
        Ok(s2)
    );
}

pub(super) async fn runs(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("r")).await.expect("agent");
    let r = run(agent.id.as_str(), "sess-1");
    let created = store.create_run(&a, r.clone()).await.expect("create run");
    assert_eq!(
        (created.id.as_str(), created.status),
        (r.id.as_str(), RunStatus::Running)
    );
    assert_eq!(store.get_run(&a, r.id.as_str()).await, Ok(created.clone()));
    assert!(matches!(
        store.create_run(&a, r.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.create_run(&a, run("agent-missing", "s")).await,
        Err(nf("agent"))
    );
    assert_eq!(store.get_run(&a, "run-missing").await, Err(nf("run")));

    assert_eq!(created.error_code, None);
    let mut done = created.clone();
    done.status = RunStatus::Failed;
    done.stop_reason = Some(StopReason::Error);
    done.error = Some("model timed out".into());
    done.error_code = Some(ErrorCode::UpstreamTimeout);
    let finished = store.finish_run(&a, done).await.expect("finish");
    assert_eq!(
        (finished.status, finished.error.as_deref()),
        (RunStatus::Failed, Some("model timed out"))
    );
    assert_eq!(finished.stop_reason, Some(StopReason::Error));
    assert_eq!(finished.error_code, Some(ErrorCode::UpstreamTimeout));
    assert_eq!(finished.created_at, created.created_at);
    assert!(ts(&finished.updated_at) >= ts(&created.updated_at));
    assert_eq!(store.get_run(&a, r.id.as_str()).await, Ok(finished.clone()));
    // A code given at creation is kept too, and the list reads the codes
    // back as `get_run` does.
    let mut coded = run(agent.id.as_str(), "sess-1");
    coded.error_code = Some(ErrorCode::TokenBudgetExceeded);
    let coded = store.create_run(&a, coded).await.expect("create coded run");
    assert_eq!(
        store.get_run(&a, coded.id.as_str()).await,
        Ok(coded.clone())
    );
    let listed = store
        .list_runs(
            &a,
            agent.id.as_str(),
            RunFilter::default(),
            params(10, 0, None),
        )
        .await
        .expect("list runs");
    assert_eq!(listed.data, vec![coded, finished]);
    assert_eq!(
        store.finish_run(&a, run(agent.id.as_str(), "s")).await,
        Err(nf("run"))
    );
}

pub(super) async fn events(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("e")).await.expect("agent");
    assert_eq!(store.last_event_seq(&a, agent.id.as_str()).await, Ok(0));
    let mut batch: Vec<_> = (1..=5)
        .map(|s| event(agent.id.as_str(), s, "run-1", "sess-1"))
        .collect();
    batch.extend((6..=8).map(|s| event(agent.id.as_str(), s, "run-2", "sess-2")));
    batch[1].message_type = MessageType::UserMessage;
    batch[3].message_type = MessageType::AssistantDelta;
    store
        .append_events(&a, batch.clone())
        .await
        .expect("append");
    store
        .append_events(&a, Vec::new())
        .await
        .expect("empty append");
    assert_eq!(store.last_event_seq(&a, agent.id.as_str()).await, Ok(8));

    let dup = vec![
        event(agent.id.as_str(), 9, "run-2", "sess-2"),
        event(agent.id.as_str(), 3, "run-1", "sess-1"),
    ];
    assert!(matches!(
        store.append_events(&a, dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.last_event_seq(&a, agent.id.as_str()).await,
        Ok(8),
        "a failed batch writes nothing"
    );

    let all = store
        .list_events(
            &a,
            agent.id.as_str(),
            EventFilter::default(),
            ListParams::default(),
        )
        .await;
    let all = all.expect("list");
    assert_eq!(
        all.data, batch,
        "events come back exactly as stored, oldest first"
    );
    assert_eq!(all.pagination.total, 8);
    let seqs = |p: &Page<EventRecord>| p.data.iter().map(|e| e.seq).collect::<Vec<_>>();
    let by_session = EventFilter {
        session_id: Some("sess-2".into()),
        run_id: None,
        message_types: None,
    };
    let page = store
        .list_events(&a, agent.id.as_str(), by_session, ListParams::default())
        .await
        .expect("list");
    assert_eq!((seqs(&page), page.pagination.total), (vec![6, 7, 8], 3));
    let by_run = EventFilter {
        session_id: None,
        run_id: Some("run-1".into()),
        message_types: None,
    };
    let page = store
        .list_events(&a, agent.id.as_str(), by_run, params(2, 0, Some("2")))
        .await
        .expect("list");
    assert_eq!((seqs(&page), page.pagination.total), (vec![3, 4], 5));
    assert_eq!(
        page.pagination.next_cursor.as_deref(),
        Some("4"),
        "the cursor is the seq"
    );
    let neither = EventFilter {
        session_id: Some("sess-1".into()),
        run_id: Some("run-2".into()),
        message_types: None,
    };
    let page = store
        .list_events(&a, agent.id.as_str(), neither, ListParams::default())
        .await
        .expect("list");
    assert_eq!((page.data.len(), page.pagination.total), (0, 0));
    let types = |t: &[MessageType]| Some(t.to_vec());
    let messages = EventFilter {
        session_id: Some("sess-1".into()),
        run_id: None,
        message_types: types(&[MessageType::UserMessage, MessageType::AssistantMessage]),
    };
    let page = store
        .list_events(&a, agent.id.as_str(), messages, params(2, 1, None))
        .await
        .expect("list");
    assert_eq!(
        (seqs(&page), page.pagination.total),
        (vec![2, 3], 4),
        "the delta (seq 4) is neither listed nor counted"
    );
    for (run_id, wanted) in [(None, vec![2]), (Some("run-2".into()), vec![])] {
        let users = EventFilter {
            session_id: None,
            run_id,
            message_types: types(&[MessageType::UserMessage]),
        };
        let page = store
            .list_events(&a, agent.id.as_str(), users, ListParams::default())
            .await
            .expect("list");
        assert_eq!(seqs(&page), wanted);
    }
    session_history(store, &a, agent.id.as_str()).await;
    let missing = store.list_events(
        &a,
        "agent-missing",
        EventFilter::default(),
        ListParams::default(),
    );
    assert_eq!(missing.await, Err(nf("agent")));
    assert_eq!(
        store.last_event_seq(&a, "agent-missing").await,
        Err(nf("agent"))
    );
}

/// A run's conversation, read from the session's end: the events of
/// [`events`] (session 1: user and assistant messages at 1, 2, 3 and 5, a
/// delta at 4; session 2: 6 to 8).
async fn session_history(store: &dyn Store, a: &str, agent: &str) {
    let history = |session: &'static str, limit| async move {
        let got = store.session_history(a, agent, session, limit).await;
        got.map(|r| r.iter().map(|e| e.seq).collect::<Vec<_>>())
    };
    assert_eq!(
        history("sess-1", 10).await,
        Ok(vec![1, 2, 3, 5]),
        "no delta"
    );
    assert_eq!(
        history("sess-1", 2).await,
        Ok(vec![3, 5]),
        "the last `limit` messages, oldest first"
    );
    assert_eq!(history("sess-2", 10).await, Ok(vec![6, 7, 8]));
    assert_eq!(history("sess-none", 10).await, Ok(vec![]));
    let whole = store.session_history(a, agent, "sess-1", 10).await;
    assert_eq!(
        whole.expect("history")[1].message_type,
        MessageType::UserMessage
    );
    assert_eq!(
        store
            .session_history(a, "agent-missing", "sess-1", 10)
            .await,
        Err(nf("agent"))
    );
    let other = acct();
    assert_eq!(
        store.session_history(&other, agent, "sess-1", 10).await,
        Err(nf("agent")),
        "another account's agent is not found"
    );
}

pub(super) async fn logs(store: &dyn Store) {
    let a = acct();
    let agent = store.create_agent(&a, new_agent("l")).await.expect("agent");
    assert_eq!(store.last_log_seq(&a, agent.id.as_str()).await, Ok(0));
    let lines: Vec<_> = (1..=4).map(|s| log(agent.id.as_str(), s)).collect();
    store.append_logs(&a, lines.clone()).await.expect("append");
    assert_eq!(store.last_log_seq(&a, agent.id.as_str()).await, Ok(4));
    assert!(matches!(
        store.append_logs(&a, vec![log(agent.id.as_str(), 2)]).await,
        Err(StoreError::Conflict(_))
    ));
    let page = store
        .list_logs(&a, agent.id.as_str(), ListParams::default())
        .await
        .expect("list");
    assert_eq!((page.data, page.pagination.total), (lines.clone(), 4));
    let page = store
        .list_logs(&a, agent.id.as_str(), params(10, 0, Some("2")))
        .await
        .expect("list");
    assert_eq!(page.data, lines[2..]);
    assert_eq!(page.pagination.next_cursor, None);
    assert_eq!(
        store.append_logs(&a, vec![log("agent-missing", 1)]).await,
        Err(nf("agent"))
    );
}

/// Deleting an agent takes its sessions, runs, events and logs with it.
pub(super) async fn cascade(store: &dyn Store) {
    let a = acct();
    let (agent, sess, r) = agent_with_activity(store, &a, "c").await;
    let keep = store
        .create_agent(&a, new_agent("keep"))
        .await
        .expect("agent");
    let kept_run = store
        .create_run(&a, run(keep.id.as_str(), "s"))
        .await
        .expect("run");
    store
        .delete_agent(&a, agent.id.as_str())
        .await
        .expect("delete");
    assert_eq!(store.get_run(&a, r.id.as_str()).await, Err(nf("run")));
    assert_eq!(
        store
            .get_session(&a, agent.id.as_str(), sess.id.as_str())
            .await,
        Err(nf("agent"))
    );
    assert_eq!(
        store.get_run(&a, kept_run.id.as_str()).await,
        Ok(kept_run),
        "other agents untouched"
    );
    assert_eq!(
        store.last_event_seq(&a, agent.id.as_str()).await,
        Err(nf("agent"))
    );
}
