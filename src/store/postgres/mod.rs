//! [`PostgresStore`]: the [`Store`] on PostgreSQL, for deployments where
//! several `weir store` processes (or gateways) share one database.
//!
//! Same records, same semantics as [`super::sqlite::SqliteStore`] (the
//! conformance suite in `store/tests` runs against both): another account's
//! rows read as missing, lists page by `pk`/`seq` with the same cursor rules
//! ([`super::sqlite::paging`]), agents cascade to sessions, runs, events and
//! logs, and `(agent_id, seq)` is unique for events and log lines.
//!
//! Driver: tokio-postgres with a deadpool-postgres pool, not sqlx. weir keeps
//! rusqlite for SQLite (see that module), so sqlx would not give "one API for
//! both"; it would add ~100 crates and proc-macros to a 2-core build to drive
//! one database. tokio-postgres is ~25 small crates, async natively (no
//! `spawn_blocking`), pipelines concurrent queries on one connection, and
//! deadpool adds a pool with a per-connection prepared-statement cache.
//!
//! Where the SQLite store opens a transaction to check-then-write, this one
//! mostly folds the check into a single statement (an `INSERT … SELECT …
//! WHERE EXISTS`, an `UPDATE … RETURNING`), which is atomic on its own under
//! READ COMMITTED and costs one round trip. Lists read their count and rows
//! in one REPEATABLE READ snapshot so `total` agrees with `data`.
//!
//! TLS to the database is not built in: connect over loopback or a private
//! network (`sslmode=disable` or the default `prefer`).

mod accounts;
mod agents;
mod approvals;
mod audit;
mod paging;
mod runs;
mod schema;
pub mod scratch;
mod sessions;
mod usage;
mod webhooks;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio_postgres::{
    error::SqlState,
    types::{FromSql, ToSql},
    NoTls, Row,
};

use super::*;

/// Connections per store process. A `weir store` serves many gateways
/// through these; Postgres' default `max_connections` (100) leaves room for
/// several store processes. Connections open lazily, on demand.
const POOL_SIZE: usize = 16;

/// How long a call waits for a connection (pool full, or server slow to
/// accept) before it fails as `Unavailable`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    target: String,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/dbname?…`) and runs the
    /// pending migrations. Fails fast if the server cannot be reached.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("database url: {e}")))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("weir");
        }
        let target = describe(&cfg);
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| pool_err(&target, e))?;
        schema::migrate(&mut client).await?;
        Ok(Self { pool, target })
    }

    /// `host:port/dbname`, without user or password, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(|e| pool_err(&self.target, e))
    }
}

/// Where a config points, for messages (never the password).
fn describe(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().or(cfg.get_user()).unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

fn pool_err(target: &str, e: PoolError) -> StoreError {
    let why = match &e {
        // The backend error's own chain; PoolError's Display repeats it.
        PoolError::Backend(inner) => with_causes(inner),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!("postgres {target}: {why}"))
}

/// An unexpected database failure, with the server's own message (the
/// `Display` of `tokio_postgres::Error` alone is just "db error").
fn db_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("postgres: {}: {}", db.code().code(), db)),
        None => StoreError::Unavailable(format!("postgres: {}", with_causes(&e))),
    }
}

/// An error with its chain of causes ("error connecting to server:
/// Connection refused"), since the outer messages alone rarely say why.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn not_found(kind: &str) -> StoreError {
    StoreError::NotFound(kind.to_owned())
}

/// Maps the errors a write can expect: a UNIQUE violation to `conflict`, a
/// foreign key violation (the agent was deleted under the write) to
/// NotFound("agent"), a NUL character (SQLite stores it, Postgres TEXT
/// cannot) to `Invalid`; anything else is `Unavailable`.
fn write_err(e: tokio_postgres::Error, conflict: impl FnOnce(String) -> StoreError) -> StoreError {
    let detail = e
        .as_db_error()
        .and_then(|d| d.detail())
        .unwrap_or_default()
        .to_owned();
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => conflict(detail),
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => not_found("agent"),
        Some(c) if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
            StoreError::Invalid("text: NUL characters are not allowed".into())
        }
        _ => db_err(e),
    }
}

/// One column, with a decode failure reported as `Unavailable`.
fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> StoreResult<T> {
    r.try_get(i).map_err(db_err)
}

/// JSON text of a value that always serialises (string lists, `Value`s).
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// Parses a JSON text column straight from the row's buffer.
fn json_col<T: DeserializeOwned>(r: &Row, i: usize) -> StoreResult<T> {
    let text: &str = col(r, i)?;
    serde_json::from_str(text)
        .map_err(|e| StoreError::Unavailable(format!("postgres: bad JSON in column {i}: {e}")))
}

/// A prepared (and per-connection cached) statement run once.
async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    c.query_opt(&st, args).await.map_err(db_err)
}

/// Like [`query_opt`] for statements that return no rows; errors go through
/// `map` so writes can name conflicts.
async fn execute(
    c: &impl GenericClient,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
    map: impl FnOnce(tokio_postgres::Error) -> StoreError,
) -> StoreResult<u64> {
    let st = c.prepare_cached(sql).await.map_err(db_err)?;
    c.execute(&st, args).await.map_err(map)
}

/// A REPEATABLE READ, READ ONLY transaction: a list's agent check, count and
/// rows see one snapshot, as they do in SQLite's single read transaction.
async fn snapshot(c: &mut Object) -> StoreResult<deadpool_postgres::Transaction<'_>> {
    c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_err)
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        let c = self.client().await?;
        query_opt(&c, "SELECT 1", &[]).await.map(drop)
    }

    async fn ensure_account(&self, account: &str) -> StoreResult<Account> {
        accounts::ensure_account(&self.client().await?, account).await
    }

    async fn get_account(&self, account: &str) -> StoreResult<Account> {
        accounts::get_account(&self.client().await?, account)
            .await?
            .ok_or_else(|| not_found("account"))
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<KeyRecord> {
        accounts::create_key(&self.client().await?, key).await
    }

    async fn get_key(&self, key_id: &str) -> StoreResult<KeyRecord> {
        accounts::get_key(&self.client().await?, key_id).await
    }

    async fn list_keys(&self, account: &str, params: ListParams) -> StoreResult<Page<KeyRecord>> {
        accounts::list_keys(&mut self.client().await?, account, &params).await
    }

    async fn revoke_key(&self, account: &str, key_id: &str) -> StoreResult<()> {
        accounts::revoke_key(&self.client().await?, account, key_id).await
    }

    async fn update_key(
        &self,
        account: &str,
        key_id: &str,
        settings: KeySettings,
    ) -> StoreResult<KeyRecord> {
        accounts::update_key(&self.client().await?, account, key_id, settings).await
    }

    async fn rotate_key(
        &self,
        account: &str,
        key_id: &str,
        rotation: KeyRotation,
    ) -> StoreResult<KeyRecord> {
        accounts::rotate_key(&self.client().await?, account, key_id, rotation).await
    }

    async fn set_account_limits(
        &self,
        account: &str,
        limits: AccountLimits,
    ) -> StoreResult<Account> {
        accounts::set_account_limits(&self.client().await?, account, limits).await
    }

    async fn touch_keys(&self, used: Vec<(String, String)>) -> StoreResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        accounts::touch_keys(&self.client().await?, used).await
    }

    async fn create_agent(&self, account: &str, agent: NewAgent) -> StoreResult<Agent> {
        agents::create_agent(&self.client().await?, account, agent).await
    }

    async fn get_agent(&self, account: &str, id: &str) -> StoreResult<Agent> {
        agents::get_agent(&self.client().await?, account, id).await
    }

    async fn list_agents(
        &self,
        account: &str,
        filter: AgentFilter,
        params: ListParams,
    ) -> StoreResult<Page<Agent>> {
        agents::list_agents(&mut self.client().await?, account, &filter, &params).await
    }

    async fn update_agent(&self, account: &str, id: &str, patch: AgentPatch) -> StoreResult<Agent> {
        agents::update_agent(&self.client().await?, account, id, patch).await
    }

    async fn delete_agent(&self, account: &str, id: &str) -> StoreResult<()> {
        agents::delete_agent(&self.client().await?, account, id).await
    }

    async fn create_tool(&self, account: &str, tool: NewTool) -> StoreResult<Tool> {
        agents::create_tool(&self.client().await?, account, tool).await
    }

    async fn get_tool(&self, account: &str, id: &str) -> StoreResult<Tool> {
        agents::get_tool(&self.client().await?, account, id).await
    }

    async fn list_tools(&self, account: &str, params: ListParams) -> StoreResult<Page<Tool>> {
        agents::list_tools(&mut self.client().await?, account, &params).await
    }

    async fn delete_tool(&self, account: &str, id: &str) -> StoreResult<()> {
        agents::delete_tool(&self.client().await?, account, id).await
    }

    async fn create_session(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> StoreResult<Session> {
        sessions::create_session(&self.client().await?, account, agent_id, name).await
    }

    async fn get_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<Session> {
        sessions::get_session(&self.client().await?, account, agent_id, id).await
    }

    async fn list_sessions(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<Session>> {
        sessions::list_sessions(&mut self.client().await?, account, agent_id, &params).await
    }

    async fn delete_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<()> {
        sessions::delete_session(&self.client().await?, account, agent_id, id).await
    }

    async fn create_run(&self, account: &str, run: Run) -> StoreResult<Run> {
        runs::create_run(&self.client().await?, account, run).await
    }

    async fn get_run(&self, account: &str, id: &str) -> StoreResult<Run> {
        runs::get_run(&self.client().await?, account, id).await
    }

    async fn finish_run(&self, account: &str, run: Run) -> StoreResult<Run> {
        runs::finish_run(&self.client().await?, account, &run).await
    }

    async fn append_events(&self, account: &str, events: Vec<EventRecord>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        runs::append_events(&self.client().await?, account, &events).await
    }

    async fn last_event_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64> {
        runs::last_seq(&self.client().await?, account, agent_id, false).await
    }

    async fn list_runs(
        &self,
        account: &str,
        agent_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> StoreResult<Page<Run>> {
        let mut c = self.client().await?;
        runs::list_runs(&mut c, account, agent_id, &filter, &params).await
    }

    async fn list_events(
        &self,
        account: &str,
        agent_id: &str,
        filter: EventFilter,
        params: ListParams,
    ) -> StoreResult<Page<EventRecord>> {
        let mut c = self.client().await?;
        runs::list_events(&mut c, account, agent_id, &filter, &params).await
    }

    async fn session_history(
        &self,
        account: &str,
        agent_id: &str,
        session_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let mut c = self.client().await?;
        runs::session_history(&mut c, account, agent_id, session_id, limit).await
    }

    async fn append_logs(&self, account: &str, logs: Vec<LogRecord>) -> StoreResult<()> {
        if logs.is_empty() {
            return Ok(());
        }
        runs::append_logs(&self.client().await?, account, &logs).await
    }

    async fn last_log_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64> {
        runs::last_seq(&self.client().await?, account, agent_id, true).await
    }

    async fn list_logs(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<LogRecord>> {
        runs::list_logs(&mut self.client().await?, account, agent_id, &params).await
    }

    async fn append_audit(&self, rows: Vec<AuditRecord>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        audit::append(&self.client().await?, &rows).await
    }

    async fn list_audit(
        &self,
        account: &str,
        filter: AuditFilter,
        params: ListParams,
    ) -> StoreResult<Page<AuditRecord>> {
        audit::list(&mut self.client().await?, account, &filter, &params).await
    }

    async fn prune_audit(&self, before: &str) -> StoreResult<u64> {
        audit::prune(&self.client().await?, before).await
    }

    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        usage::add(&self.client().await?, rows).await
    }

    async fn list_usage(
        &self,
        account: &str,
        query: UsageQuery,
        params: ListParams,
    ) -> StoreResult<Page<UsageRecord>> {
        usage::list(&mut self.client().await?, account, &query, &params).await
    }

    async fn park_run(&self, approval: Approval) -> StoreResult<Approval> {
        approvals::park(&mut self.client().await?, approval).await
    }

    async fn get_approval(&self, account: &str, id: &str) -> StoreResult<Approval> {
        approvals::get(&self.client().await?, account, id).await
    }

    async fn decide_approval(
        &self,
        account: &str,
        id: &str,
        verdict: ApprovalVerdict,
    ) -> StoreResult<Option<Approval>> {
        approvals::decide(&self.client().await?, account, id, &verdict).await
    }

    async fn due_approvals(&self, before: &str, limit: u32) -> StoreResult<Vec<Approval>> {
        approvals::due(&self.client().await?, before, limit).await
    }

    async fn stalled_approvals(
        &self,
        decided_before: &str,
        limit: u32,
    ) -> StoreResult<Vec<Approval>> {
        approvals::stalled(&self.client().await?, decided_before, limit).await
    }

    async fn create_webhook(&self, hook: WebhookRecord) -> StoreResult<WebhookRecord> {
        webhooks::create(&self.client().await?, hook).await
    }

    async fn get_webhook(&self, account: &str, id: &str) -> StoreResult<WebhookRecord> {
        webhooks::get(&self.client().await?, account, id).await
    }

    async fn list_webhooks(
        &self,
        account: &str,
        params: ListParams,
    ) -> StoreResult<Page<WebhookRecord>> {
        webhooks::list(&mut self.client().await?, account, &params).await
    }

    async fn update_webhook(
        &self,
        account: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> StoreResult<WebhookRecord> {
        webhooks::update(&mut self.client().await?, account, id, patch).await
    }

    async fn delete_webhook(&self, account: &str, id: &str) -> StoreResult<()> {
        webhooks::delete(&self.client().await?, account, id).await
    }

    async fn enqueue_webhook_events(&self, events: Vec<NewWebhookEvent>) -> StoreResult<u64> {
        webhooks::enqueue_all(&mut self.client().await?, &events).await
    }

    async fn claim_webhook_deliveries(
        &self,
        claimer: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        webhooks::claim(&self.client().await?, claimer, now_ms, lease_ms, limit).await
    }

    async fn record_webhook_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        webhooks::record(&mut self.client().await?, outcome).await
    }

    async fn prune_webhook_deliveries(&self, before: &str, limit: u32) -> StoreResult<u64> {
        webhooks::prune(&self.client().await?, before, limit).await
    }

    async fn list_webhook_deliveries(
        &self,
        account: &str,
        webhook_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<DeliveryRecord>> {
        webhooks::list_deliveries(&mut self.client().await?, account, webhook_id, &params).await
    }

    async fn retry_webhook_delivery(
        &self,
        account: &str,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<DeliveryRecord> {
        let c = self.client().await?;
        webhooks::retry(&c, account, webhook_id, delivery_id, now_ms, expires_ms).await
    }
}
