//! The webhook part of the store, on SQLite and PostgreSQL (the remote
//! store does not carry webhooks): subscriptions are per account, an event
//! becomes one delivery per matching subscription (type and agent filter),
//! a claim hands each due delivery to one claimer until its lease ends, an
//! attempt is recorded only by its claimer, and a retry queues it again.

use super::fixtures::{acct, params};
use crate::store::{
    webhooks::{DeliveryAttempt, DeliveryStatus},
    *,
};

fn hook(account: &str, id: &str, events: &[&str], agent: Option<&str>) -> WebhookRecord {
    WebhookRecord {
        id: id.to_owned(),
        account_id: account.to_owned(),
        url: format!("https://hooks.example.com/{id}"),
        events: events.iter().map(|e| e.to_string()).collect(),
        agent_id: agent.map(str::to_owned),
        description: String::new(),
        sealed_secret: "v1:sealed".into(),
        created_at: crate::util::now(),
        updated_at: crate::util::now(),
        status: "enabled".into(),
    }
}

pub(super) fn event(
    account: &str,
    kind: &str,
    agent: Option<&str>,
    now_ms: i64,
) -> NewWebhookEvent {
    NewWebhookEvent {
        account_id: account.to_owned(),
        message_id: crate::util::new_id("msg"),
        event_type: kind.to_owned(),
        agent_id: agent.map(str::to_owned),
        payload: format!(r#"{{"type":"{kind}"}}"#),
        now_ms,
        expires_ms: now_ms + 60_000,
    }
}

fn attempt(code: u16) -> DeliveryAttempt {
    DeliveryAttempt {
        at: crate::util::now(),
        status_code: Some(code),
        response_excerpt: None,
        error: None,
        duration_ms: 1,
    }
}

/// The whole cycle on one store.
pub(super) async fn webhooks(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let (h1, h2, h3) = (
        crate::util::new_id("wh"),
        crate::util::new_id("wh"),
        crate::util::new_id("wh"),
    );
    store
        .create_webhook(hook(&a, &h1, &["run.completed"], None))
        .await
        .unwrap();
    store
        .create_webhook(hook(
            &a,
            &h2,
            &["run.completed", "agent.created"],
            Some("agent-x"),
        ))
        .await
        .unwrap();
    store
        .create_webhook(hook(&b, &h3, &["run.completed"], None))
        .await
        .unwrap();
    assert_eq!(
        store
            .list_webhooks(&a, params(10, 0, None))
            .await
            .unwrap()
            .data
            .len(),
        2
    );
    assert!(matches!(
        store.get_webhook(&b, &h1).await,
        Err(StoreError::NotFound(_))
    ));

    // run.completed of agent-y: h1 only (h2 filters on agent-x, h3 is b's).
    let n = store
        .enqueue_webhook_events(vec![event(&a, "run.completed", Some("agent-y"), 1_000)])
        .await;
    assert_eq!(n.unwrap(), 1);
    // run.completed of agent-x: h1 and h2.
    let n = store
        .enqueue_webhook_events(vec![event(&a, "run.completed", Some("agent-x"), 1_000)])
        .await;
    assert_eq!(n.unwrap(), 2);
    // Not subscribed by anyone.
    let n = store
        .enqueue_webhook_events(vec![event(&a, "agent.deleted", None, 1_000)])
        .await;
    assert_eq!(n.unwrap(), 0);

    // Not due yet; then due: three, each to one claimer.
    assert!(store
        .claim_webhook_deliveries("g1", 999, 500, 10)
        .await
        .unwrap()
        .is_empty());
    let got = store
        .claim_webhook_deliveries("g1", 1_000, 500, 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|d| d.url.starts_with("https://") && d.sealed_secret == "v1:sealed"));
    assert!(store
        .claim_webhook_deliveries("g2", 1_100, 500, 10)
        .await
        .unwrap()
        .is_empty());
    // The lease ran out: another claimer may take them.
    let again = store
        .claim_webhook_deliveries("g2", 1_600, 500, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 3);

    // The old claimer's record is ignored; the new one's counts.
    let first = &got[0].delivery;
    let record = |who: &str, code, status, next| AttemptOutcome {
        delivery_id: first.id.clone(),
        claimed_by: who.to_owned(),
        attempt: attempt(code),
        status,
        next_attempt_ms: next,
        gone: false,
    };
    store
        .record_webhook_attempt(record("g1", 200, DeliveryStatus::Delivered, None))
        .await
        .unwrap();
    store
        .record_webhook_attempt(record("g2", 500, DeliveryStatus::Pending, Some(5_000)))
        .await
        .unwrap();
    let list = store
        .list_webhook_deliveries(&a, &first.webhook_id, params(10, 0, None))
        .await
        .unwrap();
    let d = list.data.iter().find(|d| d.id == first.id).unwrap();
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_ms),
        (DeliveryStatus::Pending, 1, Some(5_000))
    );
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].status_code, Some(500));
    assert_eq!(d.message_id, first.message_id);

    // A retry makes it due at once; another account cannot.
    let retried = store
        .retry_webhook_delivery(&a, &first.webhook_id, &first.id, 2_000, 9_000)
        .await
        .unwrap();
    assert_eq!(
        (retried.next_attempt_ms, retried.expires_ms),
        (Some(2_000), 9_000)
    );
    let other = store
        .retry_webhook_delivery(&b, &first.webhook_id, &first.id, 2_000, 9_000)
        .await;
    assert!(matches!(other, Err(StoreError::NotFound(_))));

    // Patch, then delete with the deliveries.
    let patch = WebhookPatch {
        agent_id: Some(None),
        events: Some(vec!["agent.deleted".into()]),
        ..Default::default()
    };
    let patched = store.update_webhook(&a, &h2, patch).await.unwrap();
    assert_eq!(
        (patched.agent_id, patched.events),
        (None, vec!["agent.deleted".to_owned()])
    );
    store.delete_webhook(&a, &h1).await.unwrap();
    let gone = store
        .list_webhook_deliveries(&a, &h1, params(10, 0, None))
        .await;
    assert!(matches!(gone, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.delete_webhook(&a, &h1).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Retention and 410 Gone on one store: only finished deliveries older
/// than the cut are pruned; a `gone` attempt disables the subscription and
/// fails its other pending deliveries.
pub(super) async fn pruning_and_gone(store: &dyn Store) {
    let a = acct();
    let h = crate::util::new_id("wh");
    store
        .create_webhook(hook(&a, &h, &["run.completed"], None))
        .await
        .unwrap();
    let events = (0..3)
        .map(|_| event(&a, "run.completed", None, 1_000))
        .collect();
    assert_eq!(store.enqueue_webhook_events(events).await.unwrap(), 3);
    let got = store
        .claim_webhook_deliveries("g1", 1_000, 500, 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    let outcome = |i: usize, status, next, gone| AttemptOutcome {
        delivery_id: got[i].delivery.id.clone(),
        claimed_by: "g1".to_owned(),
        attempt: attempt(if gone { 410 } else { 200 }),
        status,
        next_attempt_ms: next,
        gone,
    };
    store
        .record_webhook_attempt(outcome(0, DeliveryStatus::Delivered, None, false))
        .await
        .unwrap();
    store
        .record_webhook_attempt(outcome(1, DeliveryStatus::Pending, Some(5_000), false))
        .await
        .unwrap();
    let cut = |at: &'static str| store.prune_webhook_deliveries(at, 10);
    assert_eq!(cut("2000-01-01T00:00:00.000Z").await.unwrap(), 0);
    // At least this store's one finished row (a shared database may hold more).
    assert!(cut("2999-01-01T00:00:00.000Z").await.unwrap() >= 1);
    let left = store
        .list_webhook_deliveries(&a, &h, params(10, 0, None))
        .await
        .unwrap();
    assert_eq!(left.data.len(), 2, "pending ones are kept");
    assert!(left.data.iter().all(|d| d.id != got[0].delivery.id));

    store
        .record_webhook_attempt(outcome(2, DeliveryStatus::Failed, None, true))
        .await
        .unwrap();
    assert_eq!(store.get_webhook(&a, &h).await.unwrap().status, "disabled");
    let left = store
        .list_webhook_deliveries(&a, &h, params(10, 0, None))
        .await
        .unwrap();
    assert!(left.data.iter().all(|d| d.status == DeliveryStatus::Failed));
    let more = vec![event(&a, "run.completed", None, 2_000)];
    assert_eq!(store.enqueue_webhook_events(more).await.unwrap(), 0);
}
