//! Webhook subscriptions and the delivery queue on PostgreSQL; SQLite's
//! rules ([`crate::store::sqlite`]'s `webhooks.rs`). Several gateways share
//! this store, so a claim is one statement whose row lock skips rows
//! another claimer holds (`FOR UPDATE SKIP LOCKED`) and whose lease
//! (`claimed_until`) hands a crashed claimer's rows to the others.

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use super::{
    col, db_err, execute, json_col, not_found, paging, query_opt, snapshot, to_json, write_err,
};
use crate::store::{
    webhooks::{
        append_history, events_pattern, AttemptOutcome, DeliveryRecord, DeliveryStatus,
        DueDelivery, NewWebhookEvent, WebhookPatch, WebhookRecord,
    },
    ListParams, Order, Page, StoreError, StoreResult,
};

macro_rules! hook_cols {
    () => {
        "pk, id, account_id, url, events, agent_id, description, secret, created_at, updated_at,
         status"
    };
}

macro_rules! delivery_cols {
    () => {
        "d.pk, d.id, d.webhook_id, d.message_id, d.event_type, d.status, d.attempts,
         d.next_attempt_at, d.expires_at, d.history, d.payload, d.created_at, d.updated_at"
    };
}

fn hook_row(r: &Row) -> StoreResult<(i64, WebhookRecord)> {
    Ok((
        col(r, 0)?,
        WebhookRecord {
            id: col(r, 1)?,
            account_id: col(r, 2)?,
            url: col(r, 3)?,
            events: json_col(r, 4)?,
            agent_id: col(r, 5)?,
            description: col(r, 6)?,
            sealed_secret: col(r, 7)?,
            created_at: col(r, 8)?,
            updated_at: col(r, 9)?,
            status: col(r, 10)?,
        },
    ))
}

fn delivery_row(r: &Row) -> StoreResult<(i64, DeliveryRecord)> {
    let attempts: i64 = col(r, 6)?;
    Ok((
        col(r, 0)?,
        DeliveryRecord {
            id: col(r, 1)?,
            webhook_id: col(r, 2)?,
            message_id: col(r, 3)?,
            event_type: col(r, 4)?,
            status: DeliveryStatus::parse(col(r, 5)?),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_attempt_ms: col(r, 7)?,
            expires_ms: col(r, 8)?,
            history: json_col(r, 9)?,
            payload: col(r, 10)?,
            created_at: col(r, 11)?,
            updated_at: col(r, 12)?,
        },
    ))
}

pub(super) async fn create(
    c: &impl GenericClient,
    hook: WebhookRecord,
) -> StoreResult<WebhookRecord> {
    execute(
        c,
        "WITH account AS (
             INSERT INTO accounts (id, created_at) VALUES ($2, $8) ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO webhooks (id, account_id, url, events, agent_id, description, secret,
                               created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &hook.id,
            &hook.account_id,
            &hook.url,
            &to_json(&hook.events),
            &hook.agent_id,
            &hook.description,
            &hook.sealed_secret,
            &hook.created_at,
            &hook.updated_at,
        ],
        |e| write_err(e, StoreError::Conflict),
    )
    .await?;
    Ok(hook)
}

pub(super) async fn get(
    c: &impl GenericClient,
    account: &str,
    id: &str,
) -> StoreResult<WebhookRecord> {
    let sql = concat!(
        "SELECT ",
        hook_cols!(),
        " FROM webhooks WHERE id = $1 AND account_id = $2"
    );
    match query_opt(c, sql, &[&id, &account]).await? {
        Some(r) => hook_row(&r).map(|(_, h)| h),
        None => Err(not_found("webhook")),
    }
}

pub(super) async fn list(
    c: &mut Object,
    account: &str,
    params: &ListParams,
) -> StoreResult<Page<WebhookRecord>> {
    let tx = snapshot(c).await?;
    let page = paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM webhooks WHERE account_id = $1",
            concat!(
                "SELECT ",
                hook_cols!(),
                " FROM webhooks WHERE account_id = $1"
            ),
        ],
        ("pk", Order::Asc),
        &[&account],
        params,
        hook_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

pub(super) async fn update(
    c: &mut Object,
    account: &str,
    id: &str,
    patch: WebhookPatch,
) -> StoreResult<WebhookRecord> {
    let tx = c.transaction().await.map_err(db_err)?;
    let sql = concat!(
        "SELECT ",
        hook_cols!(),
        " FROM webhooks WHERE id = $1 AND account_id = $2 FOR UPDATE"
    );
    let mut hook = match query_opt(&tx, sql, &[&id, &account]).await? {
        Some(r) => hook_row(&r)?.1,
        None => return Err(not_found("webhook")),
    };
    patch.apply(&mut hook, &crate::util::now());
    execute(
        &tx,
        "UPDATE webhooks SET url = $1, events = $2, agent_id = $3, description = $4,
                             updated_at = $5 WHERE id = $6 AND account_id = $7",
        &[
            &hook.url,
            &to_json(&hook.events),
            &hook.agent_id,
            &hook.description,
            &hook.updated_at,
            &id,
            &account,
        ],
        db_err,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(hook)
}

pub(super) async fn delete(c: &impl GenericClient, account: &str, id: &str) -> StoreResult<()> {
    let sql = "DELETE FROM webhooks WHERE id = $1 AND account_id = $2";
    match execute(c, sql, &[&id, &account], db_err).await? {
        0 => Err(not_found("webhook")),
        _ => Ok(()),
    }
}

/// Every event in one transaction (one commit, not one per event).
pub(super) async fn enqueue_all(c: &mut Object, events: &[NewWebhookEvent]) -> StoreResult<u64> {
    let tx = c.transaction().await.map_err(db_err)?;
    let mut n = 0;
    for e in events {
        n += enqueue(&tx, e).await?;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(n)
}

/// One `INSERT … SELECT`, as in SQLite.
async fn enqueue(c: &impl GenericClient, e: &NewWebhookEvent) -> StoreResult<u64> {
    let tail = crate::util::new_id("d");
    let tail = &tail[2..];
    execute(
        c,
        "INSERT INTO webhook_deliveries (id, account_id, webhook_id, message_id, event_type,
             payload, status, attempts, next_attempt_at, expires_at, history,
             created_at, updated_at)
         SELECT 'dlv-' || $1::TEXT || w.pk::TEXT, w.account_id, w.id, $2, $3, $4, 'pending', 0,
                $5, $6, '[]', $7, $7
         FROM webhooks w
         WHERE w.account_id = $8 AND w.events LIKE $9 AND w.status = 'enabled'
           AND (w.agent_id IS NULL OR w.agent_id = $10)",
        &[
            &tail,
            &e.message_id,
            &e.event_type,
            &e.payload,
            &e.now_ms,
            &e.expires_ms,
            &crate::util::now(),
            &e.account_id,
            &events_pattern(&e.event_type),
            &e.agent_id,
        ],
        db_err,
    )
    .await
}

pub(super) async fn claim(
    c: &impl GenericClient,
    claimer: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> StoreResult<Vec<DueDelivery>> {
    let sql = concat!(
        "WITH claimed AS (
             UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2
             WHERE pk IN (
                 SELECT pk FROM webhook_deliveries
                 WHERE next_attempt_at <= $3 AND status = 'pending'
                   AND (claimed_until IS NULL OR claimed_until < $3)
                 ORDER BY next_attempt_at LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING *)
         SELECT ",
        delivery_cols!(),
        ", w.url, w.secret FROM claimed d JOIN webhooks w ON w.id = d.webhook_id"
    );
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    let until = now_ms + lease_ms;
    let rows = c
        .query(&st, &[&claimer, &until, &now_ms, &i64::from(limit)])
        .await
        .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            Ok(DueDelivery {
                delivery: delivery_row(r)?.1,
                url: col(r, 13)?,
                sealed_secret: col(r, 14)?,
            })
        })
        .collect()
}

pub(super) async fn record(c: &mut Object, o: AttemptOutcome) -> StoreResult<()> {
    let tx = c.transaction().await.map_err(db_err)?;
    let sql = "SELECT history FROM webhook_deliveries WHERE id = $1 AND claimed_by = $2 FOR UPDATE";
    // Claimed by another since (the lease ran out): its attempt counts.
    let Some(row) = query_opt(&tx, sql, &[&o.delivery_id, &o.claimed_by]).await? else {
        return Ok(());
    };
    let history: &str = col(&row, 0)?;
    let history = append_history(serde_json::from_str(history).unwrap_or_default(), o.attempt);
    execute(
        &tx,
        "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1,
             next_attempt_at = $2, claimed_by = NULL, claimed_until = NULL, history = $3,
             updated_at = $4 WHERE id = $5",
        &[
            &o.status.as_str(),
            &o.next_attempt_ms,
            &to_json(&history),
            &crate::util::now(),
            &o.delivery_id,
        ],
        db_err,
    )
    .await?;
    if o.gone {
        let now = crate::util::now();
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&o.delivery_id, &now];
        execute(&tx, GONE, &args, db_err).await?;
        execute(&tx, GONE_DELIVERIES, &args, db_err).await?;
    }
    tx.commit().await.map_err(db_err)
}

/// SQLite's, in this dialect.
const GONE: &str = "UPDATE webhooks SET status = 'disabled', updated_at = $2
     WHERE id = (SELECT webhook_id FROM webhook_deliveries WHERE id = $1)";
const GONE_DELIVERIES: &str = "UPDATE webhook_deliveries SET status = 'failed',
         next_attempt_at = NULL, claimed_by = NULL, claimed_until = NULL, updated_at = $2
     WHERE status = 'pending'
       AND webhook_id = (SELECT webhook_id FROM webhook_deliveries WHERE id = $1)";

pub(super) async fn list_deliveries(
    c: &mut Object,
    account: &str,
    webhook_id: &str,
    params: &ListParams,
) -> StoreResult<Page<DeliveryRecord>> {
    let tx = snapshot(c).await?;
    get(&tx, account, webhook_id).await?;
    let page = paging::page(
        &tx,
        [
            "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1",
            concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM webhook_deliveries d WHERE d.webhook_id = $1"
            ),
        ],
        ("d.pk", Order::Asc),
        &[&webhook_id],
        params,
        delivery_row,
    )
    .await?;
    tx.commit().await.map_err(db_err)?;
    Ok(page)
}

/// Queues the delivery again, due now, with a fresh retry window.
pub(super) async fn retry(
    c: &impl GenericClient,
    account: &str,
    webhook_id: &str,
    id: &str,
    now_ms: i64,
    expires_ms: i64,
) -> StoreResult<DeliveryRecord> {
    let sql = concat!(
        "UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = $1,
             expires_at = $2, updated_at = $3
         WHERE d.id = $4 AND d.webhook_id = $5 AND d.account_id = $6
         RETURNING ",
        delivery_cols!()
    );
    let now = crate::util::now();
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&now_ms, &expires_ms, &now, &id, &webhook_id, &account];
    match query_opt(c, sql, &args).await? {
        Some(r) => delivery_row(&r).map(|(_, d)| d),
        None => Err(not_found("delivery")),
    }
}

/// SQLite's `prune`, in this dialect.
pub(super) async fn prune(c: &impl GenericClient, before: &str, limit: u32) -> StoreResult<u64> {
    execute(
        c,
        "DELETE FROM webhook_deliveries WHERE pk IN (
             SELECT pk FROM webhook_deliveries
             WHERE next_attempt_at IS NULL AND updated_at < $1
             ORDER BY updated_at LIMIT $2)",
        &[&before, &i64::from(limit)],
        db_err,
    )
    .await
}
