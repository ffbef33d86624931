//! Approvals in every store: one decider wins, the sweeper sees only the
//! pending ones past their expiry, and an account sees only its own.

use serde_json::json;

use super::fixtures::{acct, nf};
use crate::{
    domain::ApprovalDecision,
    store::{Approval, ApprovalVerdict, Store},
};

fn approval(account: &str, expires_at: &str) -> Approval {
    Approval {
        id: crate::util::new_id("appr"),
        account_id: account.to_owned(),
        run_id: "run-a".into(),
        agent_id: "agent-a".into(),
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
    let past = approval(&a, "2000-01-01T00:00:00.000Z");
    let future = approval(&a, "2999-01-01T00:00:00.000Z");
    for x in [&past, &future] {
        assert_eq!(&store.create_approval(x.clone()).await.unwrap(), x);
    }
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
    let missing = store.decide_approval(&a, "appr-nope", verdict(ApprovalDecision::Deny, None));
    assert_eq!(missing.await.unwrap_err(), nf("approval"));
}
