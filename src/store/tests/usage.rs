//! Conformance part of usage: the upsert adds (also across calls, as
//! writers sharing a store do), negative corrections net out, the list
//! sums by each dimension over a day range, pages by cursor and offset,
//! and an account sees only its own rows.

use super::fixtures::{acct, params};
use crate::store::*;

/// Counts of one row: `n` requests, 2n runs, 10n prompt and 100n
/// completion tokens.
fn row(account: &str, key: &str, day: &str, model: &str, n: i64) -> UsageRow {
    UsageRow {
        account_id: account.to_owned(),
        key_id: key.to_owned(),
        day: day.to_owned(),
        model: model.to_owned(),
        agent_id: if model.is_empty() { "" } else { "agent-1" }.to_owned(),
        provider: if model.is_empty() { "" } else { "echo" }.to_owned(),
        requests: n,
        runs: 2 * n,
        prompt_tokens: 10 * n,
        completion_tokens: 100 * n,
    }
}

fn query(from: &str, to: &str, group_by: UsageGroup) -> UsageQuery {
    UsageQuery {
        from: from.into(),
        to: to.into(),
        group_by,
    }
}

/// `(value, requests)` of each line.
fn lines(page: &Page<UsageRecord>) -> Vec<(Option<&str>, i64)> {
    page.data
        .iter()
        .map(|r| (r.value.as_deref(), r.requests))
        .collect()
}

pub(super) async fn usage(store: &dyn Store) {
    let (a, b) = (acct(), acct());
    let (d1, d2, d3) = ("2026-12-01", "2026-12-02", "2026-12-03");
    store
        .add_usage(vec![
            row(&a, "key-1", d1, "", 1),
            row(&a, "key-1", d1, "", 2), // the same row twice in one batch
            row(&a, "key-2", d2, "echo", 4),
            row(&b, "key-b", d2, "", 1000),
        ])
        .await
        .expect("add");
    // A second writer adds to the same rows; a correction goes negative.
    let mut fix = row(&a, "key-2", d2, "echo", 0);
    fix.completion_tokens = -50;
    store
        .add_usage(vec![
            row(&a, "key-1", d1, "", 5),
            fix,
            row(&a, "key-1", d3, "", 16),
        ])
        .await
        .expect("add again");
    store.add_usage(Vec::new()).await.expect("empty batch");

    let all = |g| query(d1, d3, g);
    let by_key = store
        .list_usage(&a, all(UsageGroup::Key), ListParams::default())
        .await
        .expect("by key");
    assert_eq!(lines(&by_key), [(Some("key-1"), 24), (Some("key-2"), 4)]);
    assert_eq!(by_key.pagination.total, 2);
    let k2 = &by_key.data[1];
    assert_eq!(k2.group, UsageGroup::Key);
    assert_eq!(
        (
            k2.runs,
            k2.prompt_tokens,
            k2.completion_tokens,
            k2.total_tokens
        ),
        (8, 40, 350, 390),
        "the correction netted out"
    );

    let by_day = store
        .list_usage(&a, all(UsageGroup::Day), ListParams::default())
        .await
        .expect("by day");
    assert_eq!(
        lines(&by_day),
        [(Some(d1), 8), (Some(d2), 4), (Some(d3), 16)]
    );
    let by_model = store
        .list_usage(&a, all(UsageGroup::Model), ListParams::default())
        .await
        .expect("by model");
    assert_eq!(
        lines(&by_model),
        [(None, 24), (Some("echo"), 4)],
        "none first"
    );
    for (g, want) in [
        (UsageGroup::Agent, "agent-1"),
        (UsageGroup::Provider, "echo"),
    ] {
        let page = store
            .list_usage(&a, all(g), ListParams::default())
            .await
            .expect("by dimension");
        assert_eq!(lines(&page), [(None, 24), (Some(want), 4)], "{g:?}");
    }

    // The range is inclusive at both ends and leaves the rest out.
    let middle = store
        .list_usage(&a, query(d2, d2, UsageGroup::Key), ListParams::default())
        .await
        .expect("one day");
    assert_eq!(lines(&middle), [(Some("key-2"), 4)]);
    let none = store
        .list_usage(
            &a,
            query("2027-01-01", "2027-12-31", UsageGroup::Key),
            ListParams::default(),
        )
        .await
        .expect("no days");
    assert!(none.data.is_empty() && none.pagination.total == 0);

    // Pages: by cursor (the empty value too), then by offset.
    let first = store
        .list_usage(&a, all(UsageGroup::Model), params(1, 0, None))
        .await
        .expect("page 1");
    assert_eq!(lines(&first), [(None, 24)]);
    let cursor = first.pagination.next_cursor.clone().expect("more");
    let second = store
        .list_usage(&a, all(UsageGroup::Model), params(1, 0, Some(&cursor)))
        .await
        .expect("page 2");
    assert_eq!(lines(&second), [(Some("echo"), 4)]);
    assert_eq!(second.pagination.next_cursor, None);
    assert_eq!(second.pagination.total, 2);
    let skipped = store
        .list_usage(&a, all(UsageGroup::Day), params(10, 2, None))
        .await
        .expect("offset");
    assert_eq!(lines(&skipped), [(Some(d3), 16)]);
    assert!(matches!(
        store
            .list_usage(&a, all(UsageGroup::Key), params(10, 0, Some("17")))
            .await,
        Err(StoreError::Invalid(_))
    ));

    // Tenancy: each account its own rows only.
    let theirs = store
        .list_usage(&b, all(UsageGroup::Key), ListParams::default())
        .await
        .expect("other account");
    assert_eq!(lines(&theirs), [(Some("key-b"), 1000)]);
    let nobody = store
        .list_usage(&acct(), all(UsageGroup::Key), ListParams::default())
        .await
        .expect("empty account");
    assert!(nobody.data.is_empty());
}
