//! Accounts and API keys. Keys hold only the SHA-256 of their secret.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{db_err, json_col, not_found, paging, to_json, unique_violation};
use crate::store::{
    Account, AccountLimits, KeyRecord, KeyRotation, KeySettings, ListParams, NewKey, Order, Page,
    StoreError, StoreResult,
};

pub(super) fn get_account(conn: &Connection, id: &str) -> StoreResult<Option<Account>> {
    conn.prepare_cached("SELECT id, created_at, tpm, daily_tokens FROM accounts WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok(Account {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                    tpm: unsigned(r.get(2)?),
                    daily_tokens: unsigned(r.get(3)?),
                })
            })
            .optional()
        })
        .map_err(db_err)
}

/// A limit column (INTEGER) as the unsigned number it was written from.
fn unsigned<T: TryFrom<i64>>(v: Option<i64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

/// An unsigned limit as an INTEGER (limits are far below `i64::MAX`).
fn signed<T: Into<u64>>(v: Option<T>) -> Option<i64> {
    v.map(|v| i64::try_from(v.into()).unwrap_or(i64::MAX))
}

/// Sets the account's token budgets, creating the account if missing.
pub(super) fn set_account_limits(
    conn: &mut Connection,
    id: &str,
    limits: AccountLimits,
) -> StoreResult<Account> {
    let tx = conn.transaction().map_err(db_err)?;
    ensure_account(&tx, id)?;
    tx.prepare_cached("UPDATE accounts SET tpm = ?2, daily_tokens = ?3 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, signed(limits.tpm), signed(limits.daily_tokens)]))
        .map_err(db_err)?;
    let account = get_account(&tx, id)?.ok_or_else(|| not_found("account"))?;
    tx.commit().map_err(db_err)?;
    Ok(account)
}

/// Creates the account row if it is missing (every create calls this, so a
/// record can never point at an account that does not exist).
pub(super) fn ensure_account(conn: &Connection, id: &str) -> StoreResult<Account> {
    conn.prepare_cached("INSERT OR IGNORE INTO accounts (id, created_at) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![id, crate::util::now()]))
        .map_err(db_err)?;
    get_account(conn, id)?.ok_or_else(|| not_found("account"))
}

macro_rules! key_cols {
    () => {
        "pk, id, account_id, label, scopes, rpm, hash, created_at, last_used_at, revoked_at, \
         tpm, daily_tokens, max_runs, max_websockets, max_sse_streams, expires_at, prev_hash, \
         prev_until, models"
    };
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<(i64, KeyRecord)> {
    Ok((
        r.get(0)?,
        KeyRecord {
            id: r.get(1)?,
            account_id: r.get(2)?,
            label: r.get(3)?,
            scopes: json_col(r, 4)?,
            rpm: r.get(5)?,
            hash: r.get(6)?,
            created_at: r.get(7)?,
            last_used_at: r.get(8)?,
            revoked_at: r.get(9)?,
            tpm: unsigned(r.get(10)?),
            daily_tokens: unsigned(r.get(11)?),
            max_runs: unsigned(r.get(12)?),
            max_websockets: unsigned(r.get(13)?),
            max_sse_streams: unsigned(r.get(14)?),
            expires_at: r.get(15)?,
            prev_hash: r.get(16)?,
            prev_until: r.get(17)?,
            models: models_col(r, 18)?,
        },
    ))
}

/// `models`: a JSON array of names, or NULL for any model.
fn models_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Vec<String>>> {
    match r.get_ref(i)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => json_col(r, i).map(Some),
    }
}

pub(super) fn create_key(conn: &mut Connection, key: NewKey) -> StoreResult<KeyRecord> {
    let tx = conn.transaction().map_err(db_err)?;
    ensure_account(&tx, &key.account_id)?;
    let created_at = crate::util::now();
    tx.prepare_cached(
        "INSERT INTO keys (id, account_id, label, scopes, rpm, hash, created_at, tpm,
             daily_tokens, max_runs, max_websockets, max_sse_streams, expires_at, models)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.id,
            key.account_id,
            key.label,
            to_json(&key.scopes),
            key.rpm,
            key.hash,
            created_at,
            signed(key.tpm),
            signed(key.daily_tokens),
            signed(key.max_runs),
            signed(key.max_websockets),
            signed(key.max_sse_streams),
            key.expires_at,
            key.models.as_ref().map(to_json),
        ])
    })
    .map_err(|e| match unique_violation(&e) {
        true => StoreError::Conflict(format!("key {} already exists", key.id)),
        false => db_err(e),
    })?;
    tx.commit().map_err(db_err)?;
    Ok(KeyRecord::created(key, created_at))
}

pub(super) fn get_key(conn: &Connection, id: &str) -> StoreResult<KeyRecord> {
    conn.prepare_cached(concat!("SELECT ", key_cols!(), " FROM keys WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], key_row).optional())
        .map_err(db_err)?
        .map(|(_, k)| k)
        .ok_or_else(|| not_found("key"))
}

pub(super) fn list_keys(
    conn: &Connection,
    account: &str,
    params: &ListParams,
) -> StoreResult<Page<KeyRecord>> {
    paging::page(
        conn,
        [
            "SELECT COUNT(*) FROM keys WHERE account_id = ?1",
            concat!("SELECT ", key_cols!(), " FROM keys WHERE account_id = ?1"),
        ],
        ("pk", Order::Asc),
        &[&account],
        params,
        key_row,
    )
}

pub(super) fn revoke_key(conn: &Connection, account: &str, id: &str) -> StoreResult<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE keys SET revoked_at = COALESCE(revoked_at, ?3)
             WHERE id = ?1 AND account_id = ?2",
        )
        .and_then(|mut s| s.execute(params![id, account, crate::util::now()]))
        .map_err(db_err)?;
    match changed {
        0 => Err(not_found("key")),
        _ => Ok(()),
    }
}

/// Replaces the key's label and limits; NotFound if it is not this account's.
pub(super) fn update_key(
    conn: &Connection,
    account: &str,
    id: &str,
    s: &KeySettings,
) -> StoreResult<KeyRecord> {
    let changed = conn
        .prepare_cached(
            "UPDATE keys SET label = ?3, rpm = ?4, tpm = ?5, daily_tokens = ?6, max_runs = ?7,
                 max_websockets = ?8, max_sse_streams = ?9, models = ?10
             WHERE id = ?1 AND account_id = ?2",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                account,
                s.label,
                s.rpm,
                signed(s.tpm),
                signed(s.daily_tokens),
                signed(s.max_runs),
                signed(s.max_websockets),
                signed(s.max_sse_streams),
                s.models.as_ref().map(to_json),
            ])
        })
        .map_err(db_err)?;
    match changed {
        0 => Err(not_found("key")),
        _ => get_key(conn, id),
    }
}

/// Gives the key a new hash, keeping the current one as `prev_hash` until
/// `prev_until` (or dropping it when there is no grace). A revoked key is
/// not rotated (Conflict).
pub(super) fn rotate_key(
    conn: &mut Connection,
    account: &str,
    id: &str,
    rot: &KeyRotation,
) -> StoreResult<KeyRecord> {
    let tx = conn.transaction().map_err(db_err)?;
    let current = get_key(&tx, id)?;
    if current.account_id != account {
        return Err(not_found("key"));
    }
    if current.revoked_at.is_some() {
        return Err(StoreError::Conflict("the key is revoked".into()));
    }
    let prev_hash = rot.prev_until.as_ref().map(|_| current.hash.clone());
    tx.prepare_cached("UPDATE keys SET hash = ?2, prev_hash = ?3, prev_until = ?4 WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id, rot.hash, prev_hash, rot.prev_until]))
        .map_err(db_err)?;
    let record = get_key(&tx, id)?;
    tx.commit().map_err(db_err)?;
    Ok(record)
}

/// One transaction for the whole batch: one fsync-free WAL commit instead
/// of one per key. Unknown ids are skipped (the key may have been deleted).
pub(super) fn touch_keys(conn: &mut Connection, used: &[(String, String)]) -> StoreResult<()> {
    let tx = conn.transaction().map_err(db_err)?;
    {
        let mut stmt = tx
            .prepare_cached("UPDATE keys SET last_used_at = ?2 WHERE id = ?1")
            .map_err(db_err)?;
        for (id, at) in used {
            stmt.execute(params![id, at]).map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}
