//! Approvals in every store: one decider wins, the sweeper sees only the
//! pending ones past their expiry, and an account sees only its own.

use serde_json::json;

use super::fixtures::{acct, new_agent, nf, run};
use crate::{
    domain::{ApprovalDecision, RunStatus},
    store::{Approval, ApprovalVerdict, Store},
};

/// A new pending approval of a new running run of `account`.
async fn approval(store: &dyn Store, account: &str, expires_at: &str) -> Approval {
    let agent = store.create_agent(account, new_agent("p")).await.unwrap();
    let r = store
        .create_run(account, run(agent.id.as_str(), "s"))
        .await
        .unwrap();
    Approval {
        id: crate::util::new_id("appr"),
        account_id: account.to_owned(),
        run_id: r.id,
        agent_id: agent.id,
        tool: "get_time".into(),
        arguments: json!({"tz": "UTC"}),
        state: json!({"turns": [], "step": 1}),
        status: "pending".into(),
        expires_at: expires_at.to_owned(),
        decided_by: None,
        reason: None,
        created_at: crate::util::now(),
        decided_at: None,
    }
}

fn verdict(decision: ApprovalDecision, by: Option<&str>) -> ApprovalVerdict {
    ApprovalVerdict {
        decision,
        decided_by: by.map(str::to_owned),
        reason: by.map(|_| "ok".to_owned()),
    }
}

pub(super) async fn approvals(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let past = approval(store, &a, "2000-01-01T00:00:00.000Z").await;
    let future = approval(store, &a, "2999-01-01T00:00:00.000Z").await;
    for x in [&past, &future] {
        assert_eq!(&store.park_run(x.clone()).await.unwrap(), x);
        let parked = store.get_run(&a, x.run_id.as_str()).await.unwrap();
        assert_eq!(parked.status, RunStatus::WaitingApproval);
    }
    // Another account's run is not parked, and no approval is left behind.
    let mut stray = approval(store, &a, "2999-01-01T00:00:00.000Z").await;
    stray.account_id = b.clone();
    assert_eq!(store.park_run(stray.clone()).await.unwrap_err(), nf("run"));
    assert_eq!(
        store.get_approval(&b, &stray.id).await.unwrap_err(),
        nf("approval")
    );
    let untouched = store.get_run(&a, stray.run_id.as_str()).await.unwrap();
    assert_eq!(untouched.status, RunStatus::Running);
    assert_eq!(store.get_approval(&a, &past.id).await.unwrap(), past);
    assert_eq!(
        store.get_approval(&b, &past.id).await.unwrap_err(),
        nf("approval")
    );
    // Due: the expired pending one, not the future one.
    let due = store
        .due_approvals(&crate::util::now(), 1000)
        .await
        .unwrap();
    assert!(due.iter().any(|d| d.id == past.id));
    assert!(!due.iter().any(|d| d.id == future.id));
    // Another account cannot decide it; the first decider wins.
    let other = store.decide_approval(&b, &past.id, verdict(ApprovalDecision::Deny, Some("key-b")));
    assert_eq!(other.await.unwrap_err(), nf("approval"));
    let won = store
        .decide_approval(
            &a,
            &past.id,
            verdict(ApprovalDecision::Approve, Some("key-a")),
        )
        .await
        .unwrap()
        .expect("the first decision is recorded");
    assert_eq!(won.status, "approve");
    assert_eq!(won.decided_by.as_deref(), Some("key-a"));
    assert_eq!(won.reason.as_deref(), Some("ok"));
    assert!(won.decided_at.is_some());
    let late = store
        .decide_approval(&a, &past.id, verdict(ApprovalDecision::Expired, None))
        .await
        .unwrap();
    assert_eq!(late, None, "decided once only");
    assert_eq!(store.get_approval(&a, &past.id).await.unwrap(), won);
    let due = store
        .due_approvals(&crate::util::now(), 1000)
        .await
        .unwrap();
    assert!(!due.iter().any(|d| d.id == past.id), "decided: not due");
    // Decided while its run still waits: stalled (a lost resume), until
    // the run goes on; a pending one never is.
    let later = "2999-12-31T00:00:00.000Z";
    let stalled = store.stalled_approvals(later, 1000).await.unwrap();
    assert!(stalled.iter().any(|s| s.id == past.id), "{stalled:?}");
    assert!(!stalled.iter().any(|s| s.id == future.id));
    let early = store.stalled_approvals("2000-01-01T00:00:00.000Z", 1000);
    assert!(!early.await.unwrap().iter().any(|s| s.id == past.id));
    let mut run = store.get_run(&a, past.run_id.as_str()).await.unwrap();
    run.status = RunStatus::Running;
    store.finish_run(&a, run).await.unwrap();
    let stalled = store.stalled_approvals(later, 1000).await.unwrap();
    assert!(
        !stalled.iter().any(|s| s.id == past.id),
        "resumed: not stalled"
    );
    let missing = store.decide_approval(&a, "appr-nope", verdict(ApprovalDecision::Deny, None));
    assert_eq!(missing.await.unwrap_err(), nf("approval"));
}
