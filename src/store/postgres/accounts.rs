//! Accounts and API keys. Keys hold only the SHA-256 of their secret.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::{types::ToSql, Row};

use super::{col, db_err, execute, json_col, not_found, paging, query_opt, snapshot, to_json};
use crate::store::{
    Account, AccountLimits, KeyRecord, KeyRotation, KeySettings, ListParams, NewKey, Order, Page,
    StoreError, StoreResult,
};

pub(super) async fn get_account(c: &impl GenericClient, id: &str) -> StoreResult<Option<Account>> {
    let row = query_opt(
        c,
        "SELECT id, created_at, tpm, daily_tokens FROM accounts WHERE id = $1",
        &[&id],
    )
    .await?;
    row.map(|r| account_row(&r)).transpose()
}

fn account_row(r: &Row) -> StoreResult<Account> {
    Ok(Account {
        id: col(r, 0)?,
        created_at: col(r, 1)?,
        tpm: unsigned(col(r, 2)?),
        daily_tokens: unsigned(col(r, 3)?),
    })
}

/// A BIGINT limit column as the unsigned number it was written from.
fn unsigned<T: TryFrom<i64>>(v: Option<i64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

/// An unsigned limit as a BIGINT (limits are far below `i64::MAX`).
fn signed<T: Into<u64>>(v: Option<T>) -> Option<i64> {
    v.map(|v| i64::try_from(v.into()).unwrap_or(i64::MAX))
}

/// Sets the account's token budgets, creating the account if missing: one
/// upsert.
pub(super) async fn set_account_limits(
    c: &impl GenericClient,
    id: &str,
    limits: AccountLimits,
) -> StoreResult<Account> {
    let row = query_opt(
        c,
        "INSERT INTO accounts (id, created_at, tpm, daily_tokens) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET tpm = EXCLUDED.tpm, daily_tokens = EXCLUDED.daily_tokens
         RETURNING id, created_at, tpm, daily_tokens",
        &[
            &id,
            &crate::util::now(),
            &signed(limits.tpm),
            &signed(limits.daily_tokens),
        ],
    )
    .await?;
    account_row(&row.ok_or_else(|| not_found("account"))?)
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
        "pk, id, account_id, label, scopes, rpm, hash, created_at, last_used_at, revoked_at, \
         tpm, daily_tokens, max_runs, max_websockets, max_sse_streams, expires_at, prev_hash, \
         prev_until, models"
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
            tpm: unsigned(col(r, 10)?),
            daily_tokens: unsigned(col(r, 11)?),
            max_runs: unsigned(col(r, 12)?),
            max_websockets: unsigned(col(r, 13)?),
            max_sse_streams: unsigned(col(r, 14)?),
            expires_at: col(r, 15)?,
            prev_hash: col(r, 16)?,
            prev_until: col(r, 17)?,
            models: models_col(r, 18)?,
        },
    ))
}

/// `models`: a JSON array of names, or NULL for any model.
fn models_col(r: &Row, i: usize) -> StoreResult<Option<Vec<String>>> {
    match col::<Option<&str>>(r, i)? {
        None => Ok(None),
        Some(_) => json_col(r, i).map(Some),
    }
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
         INSERT INTO keys (id, account_id, label, scopes, rpm, hash, created_at, tpm,
             daily_tokens, max_runs, max_websockets, max_sse_streams, expires_at, models)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &key.id,
            &key.account_id,
            &key.label,
            &to_json(&key.scopes),
            &i64::from(key.rpm),
            &key.hash,
            &created_at,
            &signed(key.tpm),
            &signed(key.daily_tokens),
            &signed(key.max_runs),
            &signed(key.max_websockets),
            &signed(key.max_sse_streams),
            &key.expires_at,
            &key.models.as_ref().map(to_json),
        ],
        |e| {
            super::write_err(e, |_| {
                StoreError::Conflict(format!("key {} already exists", key.id))
            })
        },
    )
    .await?;
    Ok(KeyRecord::created(key, created_at))
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
        [
            "SELECT COUNT(*) FROM keys WHERE account_id = $1",
            concat!("SELECT ", key_cols!(), " FROM keys WHERE account_id = $1"),
        ],
        ("pk", Order::Asc),
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

/// Replaces the key's label and limits in one `UPDATE … RETURNING`.
pub(super) async fn update_key(
    c: &impl GenericClient,
    account: &str,
    id: &str,
    s: KeySettings,
) -> StoreResult<KeyRecord> {
    let sql = concat!(
        "UPDATE keys SET label = $3, rpm = $4, tpm = $5, daily_tokens = $6, max_runs = $7,
             max_websockets = $8, max_sse_streams = $9, models = $10
         WHERE id = $1 AND account_id = $2 RETURNING ",
        key_cols!()
    );
    let models = s.models.as_ref().map(to_json);
    let args: [&(dyn ToSql + Sync); 10] = [
        &id,
        &account,
        &s.label,
        &i64::from(s.rpm),
        &signed(s.tpm),
        &signed(s.daily_tokens),
        &signed(s.max_runs),
        &signed(s.max_websockets),
        &signed(s.max_sse_streams),
        &models,
    ];
    match query_opt(c, sql, &args).await? {
        Some(r) => key_row(&r).map(|(_, k)| k),
        None => Err(not_found("key")),
    }
}

/// One `UPDATE … RETURNING`: the old `hash` becomes `prev_hash` (the
/// right-hand sides read the row as it was). No row: missing (NotFound) or
/// revoked (Conflict), told apart by a second read.
pub(super) async fn rotate_key(
    c: &impl GenericClient,
    account: &str,
    id: &str,
    rot: KeyRotation,
) -> StoreResult<KeyRecord> {
    let sql = concat!(
        "UPDATE keys SET hash = $3, prev_until = $4::TEXT,
             prev_hash = CASE WHEN $4::TEXT IS NULL THEN NULL ELSE hash END
         WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL RETURNING ",
        key_cols!()
    );
    if let Some(r) = query_opt(c, sql, &[&id, &account, &rot.hash, &rot.prev_until]).await? {
        return key_row(&r).map(|(_, k)| k);
    }
    match get_key(c, id).await {
        Ok(k) if k.account_id == account => Err(StoreError::Conflict("the key is revoked".into())),
        Ok(_) => Err(not_found("key")),
        Err(e) => Err(e),
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
