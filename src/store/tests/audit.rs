//! Conformance part of the audit log: appends, newest-first paging,
//! filters, tenancy and the retention prune.

use super::fixtures::{acct, params};
use crate::store::*;

/// A row of `account` made at `created_at`.
pub(super) fn row(
    account: &str,
    action: &str,
    target: Option<&str>,
    created_at: &str,
) -> AuditRecord {
    AuditRecord {
        id: crate::util::new_id("audit"),
        account_id: account.to_owned(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        actor_key_id: "key-actor".into(),
        request_id: crate::util::new_id("req"),
        client_addr: Some("203.0.113.9".into()),
        method: "POST".into(),
        path: "/v1/keys".into(),
        created_at: created_at.to_owned(),
    }
}

fn actions(page: &Page<AuditRecord>) -> Vec<&str> {
    page.data.iter().map(|r| r.action.as_str()).collect()
}

pub(super) async fn audit(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let now = crate::util::now();
    let rows = vec![
        row(&a, "keys.create", Some("key-1"), &now),
        row(&b, "keys.create", Some("key-b"), &now),
        row(&a, "agents.create", Some("agent-1"), &now),
        row(&a, "agents.update", Some("agent-1"), &now),
        row(&a, "keys.delete", Some("key-1"), &now),
    ];
    store.append_audit(rows.clone()).await.expect("append");
    store.append_audit(Vec::new()).await.expect("empty batch");

    let all = store
        .list_audit(&a, AuditFilter::default(), ListParams::default())
        .await
        .expect("list");
    assert_eq!(
        actions(&all),
        [
            "keys.delete",
            "agents.update",
            "agents.create",
            "keys.create"
        ],
        "newest first"
    );
    assert_eq!(all.pagination.total, 4);
    assert_eq!(all.data[3], rows[0], "read back as written, account kept");

    // Pages walk from newest to oldest with the cursor, then end.
    let first = store
        .list_audit(&a, AuditFilter::default(), params(3, 0, None))
        .await
        .expect("page 1");
    assert_eq!(actions(&first).len(), 3);
    let cursor = first.pagination.next_cursor.clone().expect("more follow");
    let second = store
        .list_audit(&a, AuditFilter::default(), params(3, 0, Some(&cursor)))
        .await
        .expect("page 2");
    assert_eq!(actions(&second), ["keys.create"]);
    assert_eq!(second.pagination.next_cursor, None);
    assert_eq!(second.pagination.total, 4, "total counts the whole list");
    let skipped = store
        .list_audit(&a, AuditFilter::default(), params(2, 3, None))
        .await
        .expect("offset");
    assert_eq!(actions(&skipped), ["keys.create"]);
    assert!(matches!(
        store
            .list_audit(&a, AuditFilter::default(), params(3, 0, Some("x")))
            .await,
        Err(StoreError::Invalid(_))
    ));

    // Filters, alone and together.
    let by = |action: Option<&str>, target: Option<&str>| AuditFilter {
        action: action.map(str::to_owned),
        target: target.map(str::to_owned),
    };
    let list = |f: AuditFilter| store.list_audit(&a, f, ListParams::default());
    let keys = list(by(Some("keys.create"), None)).await.expect("action");
    assert_eq!(
        (actions(&keys), keys.pagination.total),
        (vec!["keys.create"], 1)
    );
    let agent = list(by(None, Some("agent-1"))).await.expect("target");
    assert_eq!(actions(&agent), ["agents.update", "agents.create"]);
    let both = list(by(Some("keys.delete"), Some("key-1")))
        .await
        .expect("both");
    assert_eq!(actions(&both), ["keys.delete"]);
    let none = list(by(Some("keys.delete"), Some("agent-1")))
        .await
        .expect("none");
    assert_eq!(none.pagination.total, 0);

    // One account never sees another's rows, filtered or not.
    let theirs = store
        .list_audit(&b, AuditFilter::default(), ListParams::default())
        .await
        .expect("b");
    assert_eq!(actions(&theirs), ["keys.create"]);
    assert_eq!(theirs.data[0].target.as_deref(), Some("key-b"));
    let other = list(by(None, Some("key-b"))).await.expect("a asks for b's");
    assert_eq!(other.pagination.total, 0);

    prune(store).await;
}

/// Rows older than the cut are deleted (in batches), newer ones kept.
async fn prune(store: &dyn Store) {
    let a = acct();
    let old = "2001-01-01T00:00:00.000Z";
    let mut rows: Vec<AuditRecord> = (0..3).map(|_| row(&a, "tools.delete", None, old)).collect();
    rows.push(row(&a, "tools.create", None, "2001-01-02T00:00:00.000Z"));
    store.append_audit(rows).await.expect("append");
    let deleted = store
        .prune_audit("2001-01-01T12:00:00.000Z")
        .await
        .expect("prune");
    assert_eq!(deleted, 3);
    let left = store
        .list_audit(&a, AuditFilter::default(), ListParams::default())
        .await
        .expect("list");
    assert_eq!(actions(&left), ["tools.create"]);
    assert_eq!(store.prune_audit("2001-01-01T12:00:00.000Z").await, Ok(0));
}
