//! Webhook subscriptions and the delivery queue ([`crate::store::webhooks`]).
//! One process owns a SQLite file, so a claim is a plain read-then-mark in
//! one write transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{accounts, db_err, json_col, not_found, paging, to_json};
use crate::store::{
    webhooks::{
        append_history, events_pattern, AttemptOutcome, DeliveryRecord, DeliveryStatus,
        DueDelivery, NewWebhookEvent, WebhookPatch, WebhookRecord,
    },
    ListParams, Order, Page, StoreResult,
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

fn hook_row(r: &Row<'_>) -> rusqlite::Result<(i64, WebhookRecord)> {
    Ok((
        r.get(0)?,
        WebhookRecord {
            id: r.get(1)?,
            account_id: r.get(2)?,
            url: r.get(3)?,
            events: json_col(r, 4)?,
            agent_id: r.get(5)?,
            description: r.get(6)?,
            sealed_secret: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
            status: r.get(10)?,
        },
    ))
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<(i64, DeliveryRecord)> {
    Ok((
        r.get(0)?,
        DeliveryRecord {
            id: r.get(1)?,
            webhook_id: r.get(2)?,
            message_id: r.get(3)?,
            event_type: r.get(4)?,
            status: DeliveryStatus::parse(&r.get::<_, String>(5)?),
            attempts: r.get(6)?,
            next_attempt_ms: r.get(7)?,
            expires_ms: r.get(8)?,
            history: json_col(r, 9)?,
            payload: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
        },
    ))
}

pub(super) fn create(conn: &mut Connection, hook: WebhookRecord) -> StoreResult<WebhookRecord> {
    let tx = conn.transaction().map_err(db_err)?;
    accounts::ensure_account(&tx, &hook.account_id)?;
    tx.prepare_cached(
        "INSERT INTO webhooks (id, account_id, url, events, agent_id, description, secret,
                               created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            hook.id,
            hook.account_id,
            hook.url,
            to_json(&hook.events),
            hook.agent_id,
            hook.description,
            hook.sealed_secret,
            hook.created_at,
            hook.updated_at
        ])
    })
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(hook)
}

pub(super) fn get(conn: &Connection, account: &str, id: &str) -> StoreResult<WebhookRecord> {
    conn.prepare_cached(concat!(
        "SELECT ",
        hook_cols!(),
        " FROM webhooks WHERE id = ?1 AND account_id = ?2"
    ))
    .and_then(|mut s| s.query_row(params![id, account], hook_row).optional())
    .map_err(db_err)?
    .map(|(_, h)| h)
    .ok_or_else(|| not_found("webhook"))
}

pub(super) fn list(
    conn: &Connection,
    account: &str,
    params: &ListParams,
) -> StoreResult<Page<WebhookRecord>> {
    paging::page(
        conn,
        [
            "SELECT COUNT(*) FROM webhooks WHERE account_id = ?1",
            concat!(
                "SELECT ",
                hook_cols!(),
                " FROM webhooks WHERE account_id = ?1"
            ),
        ],
        ("pk", Order::Asc),
        &[&account],
        params,
        hook_row,
    )
}

pub(super) fn update(
    conn: &mut Connection,
    account: &str,
    id: &str,
    patch: WebhookPatch,
    now: &str,
) -> StoreResult<WebhookRecord> {
    let tx = conn.transaction().map_err(db_err)?;
    let mut hook = get(&tx, account, id)?;
    patch.apply(&mut hook, now);
    tx.prepare_cached(
        "UPDATE webhooks SET url = ?1, events = ?2, agent_id = ?3, description = ?4,
                             updated_at = ?5 WHERE id = ?6 AND account_id = ?7",
    )
    .and_then(|mut s| {
        s.execute(params![
            hook.url,
            to_json(&hook.events),
            hook.agent_id,
            hook.description,
            hook.updated_at,
            id,
            account
        ])
    })
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(hook)
}

pub(super) fn delete(conn: &Connection, account: &str, id: &str) -> StoreResult<()> {
    let n = conn
        .prepare_cached("DELETE FROM webhooks WHERE id = ?1 AND account_id = ?2")
        .and_then(|mut s| s.execute(params![id, account]))
        .map_err(db_err)?;
    match n {
        0 => Err(not_found("webhook")),
        _ => Ok(()),
    }
}

/// Every event in one transaction (one commit, not one per event).
pub(super) fn enqueue_all(conn: &mut Connection, events: &[NewWebhookEvent]) -> StoreResult<u64> {
    let tx = conn.transaction().map_err(db_err)?;
    let mut n = 0;
    for e in events {
        n += enqueue(&tx, e)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(n)
}

/// One `INSERT … SELECT`: a delivery per matching subscription, its id the
/// event's random tail and the subscription's row number.
fn enqueue(conn: &Connection, e: &NewWebhookEvent) -> StoreResult<u64> {
    let tail = crate::util::new_id("d");
    let n = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries (id, account_id, webhook_id, message_id, event_type,
                 payload, status, attempts, next_attempt_at, expires_at, history,
                 created_at, updated_at)
             SELECT 'dlv-' || ?1 || w.pk, w.account_id, w.id, ?2, ?3, ?4, 'pending', 0, ?5, ?6,
                    '[]', ?7, ?7
             FROM webhooks w
             WHERE w.account_id = ?8 AND w.events LIKE ?9 AND w.status = 'enabled'
               AND (w.agent_id IS NULL OR w.agent_id = ?10)",
        )
        .and_then(|mut s| {
            s.execute(params![
                &tail[2..],
                e.message_id,
                e.event_type,
                e.payload,
                e.now_ms,
                e.expires_ms,
                crate::util::now(),
                e.account_id,
                events_pattern(&e.event_type),
                e.agent_id
            ])
        })
        .map_err(db_err)?;
    Ok(n as u64)
}

pub(super) fn claim(
    conn: &mut Connection,
    claimer: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
) -> StoreResult<Vec<DueDelivery>> {
    let tx = conn.transaction().map_err(db_err)?;
    let due = {
        let mut stmt = tx
            .prepare_cached(concat!(
                "SELECT ",
                delivery_cols!(),
                ", w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                 WHERE d.next_attempt_at <= ?1 AND d.status = 'pending'
                   AND (d.claimed_until IS NULL OR d.claimed_until < ?1)
                 ORDER BY d.next_attempt_at LIMIT ?2"
            ))
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![now_ms, limit], |r| {
                Ok(DueDelivery {
                    delivery: delivery_row(r)?.1,
                    url: r.get(13)?,
                    sealed_secret: r.get(14)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?
    };
    for d in &due {
        tx.prepare_cached(
            "UPDATE webhook_deliveries SET claimed_by = ?1, claimed_until = ?2 WHERE id = ?3",
        )
        .and_then(|mut s| s.execute(params![claimer, now_ms + lease_ms, d.delivery.id]))
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(due)
}

pub(super) fn record(conn: &mut Connection, o: AttemptOutcome) -> StoreResult<()> {
    let tx = conn.transaction().map_err(db_err)?;
    let history: Option<String> = tx
        .prepare_cached("SELECT history FROM webhook_deliveries WHERE id = ?1 AND claimed_by = ?2")
        .and_then(|mut s| {
            s.query_row(params![o.delivery_id, o.claimed_by], |r| r.get(0))
                .optional()
        })
        .map_err(db_err)?;
    // Claimed by another since (the lease ran out): its attempt counts.
    let Some(history) = history else {
        return Ok(());
    };
    let history = append_history(
        serde_json::from_str(&history).unwrap_or_default(),
        o.attempt,
    );
    tx.prepare_cached(
        "UPDATE webhook_deliveries SET status = ?1, attempts = attempts + 1,
             next_attempt_at = ?2, claimed_by = NULL, claimed_until = NULL, history = ?3,
             updated_at = ?4 WHERE id = ?5",
    )
    .and_then(|mut s| {
        s.execute(params![
            o.status.as_str(),
            o.next_attempt_ms,
            to_json(&history),
            crate::util::now(),
            o.delivery_id
        ])
    })
    .map_err(db_err)?;
    if o.gone {
        for sql in [GONE, GONE_DELIVERIES] {
            tx.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![o.delivery_id, crate::util::now()]))
                .map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)
}

/// Disables the subscription of delivery `?1` (its receiver is gone).
const GONE: &str = "UPDATE webhooks SET status = 'disabled', updated_at = ?2
     WHERE id = (SELECT webhook_id FROM webhook_deliveries WHERE id = ?1)";
/// Fails the other pending deliveries of that subscription.
const GONE_DELIVERIES: &str = "UPDATE webhook_deliveries SET status = 'failed',
         next_attempt_at = NULL, claimed_by = NULL, claimed_until = NULL, updated_at = ?2
     WHERE status = 'pending'
       AND webhook_id = (SELECT webhook_id FROM webhook_deliveries WHERE id = ?1)";

pub(super) fn list_deliveries(
    conn: &Connection,
    account: &str,
    webhook_id: &str,
    params: &ListParams,
) -> StoreResult<Page<DeliveryRecord>> {
    get(conn, account, webhook_id)?;
    paging::page(
        conn,
        [
            "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = ?1",
            concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM webhook_deliveries d WHERE d.webhook_id = ?1"
            ),
        ],
        ("d.pk", Order::Asc),
        &[&webhook_id],
        params,
        delivery_row,
    )
}

pub(super) fn get_delivery(
    conn: &Connection,
    account: &str,
    webhook_id: &str,
    id: &str,
) -> StoreResult<DeliveryRecord> {
    conn.prepare_cached(concat!(
        "SELECT ",
        delivery_cols!(),
        " FROM webhook_deliveries d
          WHERE d.id = ?1 AND d.webhook_id = ?2 AND d.account_id = ?3"
    ))
    .and_then(|mut s| {
        s.query_row(params![id, webhook_id, account], delivery_row)
            .optional()
    })
    .map_err(db_err)?
    .map(|(_, d)| d)
    .ok_or_else(|| not_found("delivery"))
}

/// Queues the delivery again, due now, with a fresh retry window.
pub(super) fn retry(
    conn: &mut Connection,
    account: &str,
    webhook_id: &str,
    id: &str,
    now_ms: i64,
    expires_ms: i64,
) -> StoreResult<DeliveryRecord> {
    let tx = conn.transaction().map_err(db_err)?;
    get_delivery(&tx, account, webhook_id, id)?;
    tx.prepare_cached(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?1,
             expires_at = ?2, updated_at = ?3 WHERE id = ?4",
    )
    .and_then(|mut s| s.execute(params![now_ms, expires_ms, crate::util::now(), id]))
    .map_err(db_err)?;
    let d = get_delivery(&tx, account, webhook_id, id)?;
    tx.commit().map_err(db_err)?;
    Ok(d)
}

/// Finished deliveries (no next attempt) last written before `?1`, oldest
/// first, at most `?2` (partial index `webhook_deliveries_done`).
pub(super) fn prune(conn: &Connection, before: &str, limit: u32) -> StoreResult<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE pk IN (
                 SELECT pk FROM webhook_deliveries
                 WHERE next_attempt_at IS NULL AND updated_at < ?1
                 ORDER BY updated_at LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![before, limit]))
        .map_err(db_err)?;
    Ok(n as u64)
}
