//! Accounts and API keys. Keys hold only the SHA-256 of their secret.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::{types::ToSql, Row};

use super::{col, db_err, execute, json_col, not_found, paging, query_opt, snapshot, to_json};
use crate::store::{Account, KeyRecord, ListParams, NewKey, Page, StoreError, StoreResult};

pub(super) async fn get_account(c: &impl GenericClient, id: &str) -> StoreResult<Option<Account>> {
    let row = query_opt(
        c,
        "SELECT id, created_at FROM accounts WHERE id = $1",
        &[&id],
    )
    .await?;
    row.map(|r| {
        Ok(Account {
            id: col(&r, 0)?,
            created_at: col(&r, 1)?,
        })
    })
    .transpose()
}

/// Almost always the account exists already: one read answers. Otherwise
/// insert-if-missing (a concurrent creator makes ours a no-op) and read again
/// in a new statement, which sees the winner's row.
pub(super) async fn ensure_account(c: &impl GenericClient, id: &str) -> StoreResult<Account> {
    if let Some(found) = get_account(c, id).await? {
        return Ok(found);
    }
    execute(
        c,
        "INSERT INTO accounts (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        &[&id, &crate::util::now()],
        db_err,
    )
    .await?;
    get_account(c, id)
        .await?
        .ok_or_else(|| not_found("account"))
}

macro_rules! key_cols {
    () => {
        "pk, id, account_id, label, scopes, rpm, hash, created_at, last_used_at, revoked_at"
    };
}

fn key_row(r: &Row) -> StoreResult<(i64, KeyRecord)> {
    let rpm: i64 = col(r, 5)?;
    Ok((
        col(r, 0)?,
        KeyRecord {
            id: col(r, 1)?,
            account_id: col(r, 2)?,
            label: col(r, 3)?,
            scopes: json_col(r, 4)?,
            rpm: u32::try_from(rpm).unwrap_or(u32::MAX),
            hash: col(r, 6)?,
            created_at: col(r, 7)?,
            last_used_at: col(r, 8)?,
            revoked_at: col(r, 9)?,
        },
    ))
}

/// One statement: the account is created if missing (a data-modifying CTE)
/// and the key inserted, atomically, in one round trip.
pub(super) async fn create_key(c: &impl GenericClient, key: NewKey) -> StoreResult<KeyRecord> {
    let created_at = crate::util::now();
    execute(
        c,
        "WITH account AS (
             INSERT INTO accounts (id, created_at) VALUES ($2, $7) ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO keys (id, account_id, label, scopes, rpm, hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &key.id,
            &key.account_id,
            &key.label,
            &to_json(&key.scopes),
            &i64::from(key.rpm),
            &key.hash,
            &created_at,
        ],
        |e| {
            super::write_err(e, |_| {
                StoreError::Conflict(format!("key {} already exists", key.id))
            })
        },
    )
    .await?;
    Ok(KeyRecord {
        id: key.id,
        account_id: key.account_id,
        label: key.label,
        scopes: key.scopes,
        rpm: key.rpm,
        hash: key.hash,
        created_at,
        last_used_at: None,
        revoked_at: None,
    })
}

pub(super) async fn get_key(c: &impl GenericClient, id: &str) -> StoreResult<KeyRecord> {
    let sql = concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1");
    match query_opt(c, sql, &[&id]).await? {
        Some(r) => key_row(&r).map(|(_, k)| k),
        None => Err(not_found("key")),
    }
}

pub(super) async fn list_keys(
    c: &mut Object,
    account: &str,
    params: &ListParams,
) -> StoreResult<Page<KeyRecord>> {
    let tx = snapshot(c).await?;
    let page = paging::page(
        &tx,
        "SELECT COUNT(*) FROM keys WHERE account_id = $1",
        concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys WHERE account_id = $1 AND pk > $2 ORDER BY pk LIMIT $3 OFFSET $4"
        ),
        &[&account],
        params,
        key_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

pub(super) async fn revoke_key(c: &impl GenericClient, account: &str, id: &str) -> StoreResult<()> {
    let changed = execute(
        c,
        "UPDATE keys SET revoked_at = COALESCE(revoked_at, $3)
         WHERE id = $1 AND account_id = $2",
        &[&id, &account, &crate::util::now()],
        db_err,
    )
    .await?;
    match changed {
        0 => Err(not_found("key")),
        _ => Ok(()),
    }
}

/// One autocommitted UPDATE per key, all pipelined on one connection: one
/// round trip, and no statement ever holds two key rows, so two store
/// processes flushing overlapping batches cannot deadlock. Unknown ids are
/// skipped; a key named twice keeps its last time, as in SQLite.
pub(super) async fn touch_keys(
    c: &impl GenericClient,
    used: Vec<(String, String)>,
) -> StoreResult<()> {
    let latest: BTreeMap<String, String> = used.into_iter().collect();
    let st = c
        .prepare_cached("UPDATE keys SET last_used_at = $2 WHERE id = $1")
        .await
        .map_err(db_err)?;
    let st = &st;
    let updates = latest.iter().map(|(id, at)| async move {
        let args: [&(dyn ToSql + Sync); 2] = [id, at];
        c.execute(st, &args).await
    });
    futures::future::try_join_all(updates)
        .await
        .map_err(db_err)?;
    Ok(())
}
