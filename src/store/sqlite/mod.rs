//! [`SqliteStore`]: the [`Store`] that holds the data, in `<data dir>/weir.db`.
//!
//! rusqlite rather than sqlx: rusqlite is ~10 crates against sqlx's ~118,
//! and its synchronous API maps directly onto `spawn_blocking`. PostgreSQL
//! has its own driver and module ([`super::postgres`]); the two share the
//! conformance suite, the migration numbering and the paging rules.
//!
//! One writer connection serialises writes (SQLite allows one writer
//! anyway, and a single in-process writer avoids `SQLITE_BUSY` retries);
//! a few reader connections serve reads in parallel beside it thanks to WAL,
//! and a thread checkpoints the WAL so that commits never wait for it
//! ([`checkpoint`]).
//! Statements are `prepare_cached`, so a hot read such as `get_agent` is a
//! cache lookup plus one indexed B-tree probe.

mod accounts;
mod agents;
mod approvals;
mod audit;
mod checkpoint;
pub(super) mod paging;
mod pool;
mod runs;
pub(super) mod schema;
mod usage;
mod webhooks;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{ffi, types::Type, Connection, Row};
use serde::{de::DeserializeOwned, Serialize};

use self::pool::Pool;
use super::*;

/// Reader connections: enough to keep 2–4 cores busy with reads without
/// holding many file handles and page caches.
const READERS: usize = 4;

/// The embedded store.
pub struct SqliteStore {
    writer: Pool,
    readers: Pool,
    path: PathBuf,
    /// Its thread stops when the store is dropped.
    checkpoint: checkpoint::Checkpointer,
}

impl SqliteStore {
    /// Creates `dir` if needed, opens (or creates) `<dir>/weir.db` and runs
    /// the migrations it has not seen yet. Blocks: call it at start-up.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("weir.db");
        let mut writer = connect(&path, false)?;
        schema::migrate(&mut writer)?;
        let checkpoint = checkpoint::Checkpointer::start(&path, &mut writer)?;
        let readers = (0..READERS)
            .map(|_| connect(&path, true))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            writer: Pool::new(vec![writer]),
            readers: Pool::new(readers),
            path,
            checkpoint,
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.run(f).await
    }

    /// A single-row lookup by key: inline when a reader is free (see
    /// [`pool`] for the measurements behind this).
    async fn lookup<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.readers.run_quick(f).await
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let after = self.checkpoint.after_write();
        self.writer
            .run(move |c| {
                let out = f(c);
                after(c);
                out
            })
            .await
    }
}

fn connect(path: &Path, reader: bool) -> StoreResult<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    schema::configure(&conn, reader)?;
    Ok(conn)
}

/// An unexpected database failure. The message is for logs; the gateway
/// turns `Unavailable` into a plain 503.
fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn not_found(kind: &str) -> StoreError {
    StoreError::NotFound(kind.to_owned())
}

/// True for UNIQUE and PRIMARY KEY violations (not foreign keys or CHECKs).
fn unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// JSON text of a value that always serialises (string lists, `Value`s).
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// Parses a JSON text column without copying it into a `String` first.
fn json_col<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let conv = |e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, Type::Text, e)
    };
    let text = r.get_ref(i)?.as_str().map_err(|e| conv(Box::new(e)))?;
    serde_json::from_str(text).map_err(|e| conv(Box::new(e)))
}

/// Owned copies of borrowed arguments, to move into a blocking task.
fn own(s: &str) -> String {
    s.to_owned()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.lookup(|c| {
            c.prepare_cached("SELECT 1")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map(drop)
                .map_err(db_err)
        })
        .await
    }

    async fn ensure_account(&self, account: &str) -> StoreResult<Account> {
        // Almost always the account exists already: answer from a reader
        // and only queue behind the writer when it must be created.
        let a = own(account);
        if let Some(found) = self.lookup(move |c| accounts::get_account(c, &a)).await? {
            return Ok(found);
        }
        let a = own(account);
        self.write(move |c| accounts::ensure_account(c, &a)).await
    }

    async fn get_account(&self, account: &str) -> StoreResult<Account> {
        let a = own(account);
        self.lookup(move |c| accounts::get_account(c, &a))
            .await?
            .ok_or_else(|| not_found("account"))
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<KeyRecord> {
        self.write(move |c| accounts::create_key(c, key)).await
    }

    async fn get_key(&self, key_id: &str) -> StoreResult<KeyRecord> {
        let id = own(key_id);
        self.lookup(move |c| accounts::get_key(c, &id)).await
    }

    async fn list_keys(&self, account: &str, params: ListParams) -> StoreResult<Page<KeyRecord>> {
        let a = own(account);
        self.read(move |c| accounts::list_keys(c, &a, &params))
            .await
    }

    async fn revoke_key(&self, account: &str, key_id: &str) -> StoreResult<()> {
        let (a, id) = (own(account), own(key_id));
        self.write(move |c| accounts::revoke_key(c, &a, &id)).await
    }

    async fn update_key(
        &self,
        account: &str,
        key_id: &str,
        settings: KeySettings,
    ) -> StoreResult<KeyRecord> {
        let (a, id) = (own(account), own(key_id));
        self.write(move |c| accounts::update_key(c, &a, &id, &settings))
            .await
    }

    async fn rotate_key(
        &self,
        account: &str,
        key_id: &str,
        rotation: KeyRotation,
    ) -> StoreResult<KeyRecord> {
        let (a, id) = (own(account), own(key_id));
        self.write(move |c| accounts::rotate_key(c, &a, &id, &rotation))
            .await
    }

    async fn set_account_limits(
        &self,
        account: &str,
        limits: AccountLimits,
    ) -> StoreResult<Account> {
        let a = own(account);
        self.write(move |c| accounts::set_account_limits(c, &a, limits))
            .await
    }

    async fn touch_keys(&self, used: Vec<(String, String)>) -> StoreResult<()> {
        if used.is_empty() {
            return Ok(());
        }
        self.write(move |c| accounts::touch_keys(c, &used)).await
    }

    async fn create_agent(&self, account: &str, agent: NewAgent) -> StoreResult<Agent> {
        let a = own(account);
        self.write(move |c| agents::create_agent(c, &a, agent))
            .await
    }

    async fn get_agent(&self, account: &str, id: &str) -> StoreResult<Agent> {
        let (a, id) = (own(account), own(id));
        self.lookup(move |c| agents::get_agent(c, &a, &id)).await
    }

    async fn list_agents(
        &self,
        account: &str,
        filter: AgentFilter,
        params: ListParams,
    ) -> StoreResult<Page<Agent>> {
        let a = own(account);
        self.read(move |c| agents::list_agents(c, &a, &filter, &params))
            .await
    }

    async fn update_agent(&self, account: &str, id: &str, patch: AgentPatch) -> StoreResult<Agent> {
        let (a, id) = (own(account), own(id));
        self.write(move |c| agents::update_agent(c, &a, &id, patch))
            .await
    }

    async fn delete_agent(&self, account: &str, id: &str) -> StoreResult<()> {
        let (a, id) = (own(account), own(id));
        self.write(move |c| agents::delete_agent(c, &a, &id)).await
    }

    async fn create_tool(&self, account: &str, tool: NewTool) -> StoreResult<Tool> {
        let a = own(account);
        self.write(move |c| agents::create_tool(c, &a, tool)).await
    }

    async fn get_tool(&self, account: &str, id: &str) -> StoreResult<Tool> {
        let (a, id) = (own(account), own(id));
        self.lookup(move |c| agents::get_tool(c, &a, &id)).await
    }

    async fn list_tools(&self, account: &str, params: ListParams) -> StoreResult<Page<Tool>> {
        let a = own(account);
        self.read(move |c| agents::list_tools(c, &a, &params)).await
    }

    async fn delete_tool(&self, account: &str, id: &str) -> StoreResult<()> {
        let (a, id) = (own(account), own(id));
        self.write(move |c| agents::delete_tool(c, &a, &id)).await
    }

    async fn create_session(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> StoreResult<Session> {
        let (a, ag, n) = (own(account), own(agent_id), own(name));
        self.write(move |c| agents::create_session(c, &a, &ag, &n))
            .await
    }

    async fn get_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<Session> {
        let (a, ag, id) = (own(account), own(agent_id), own(id));
        self.lookup(move |c| agents::get_session(c, &a, &ag, &id))
            .await
    }

    async fn list_sessions(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<Session>> {
        let (a, ag) = (own(account), own(agent_id));
        self.read(move |c| agents::list_sessions(c, &a, &ag, &params))
            .await
    }

    async fn delete_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<()> {
        let (a, ag, id) = (own(account), own(agent_id), own(id));
        self.write(move |c| agents::delete_session(c, &a, &ag, &id))
            .await
    }

    async fn create_run(&self, account: &str, run: Run) -> StoreResult<Run> {
        let a = own(account);
        self.write(move |c| runs::create_run(c, &a, run)).await
    }

    async fn get_run(&self, account: &str, id: &str) -> StoreResult<Run> {
        let (a, id) = (own(account), own(id));
        self.lookup(move |c| runs::get_run(c, &a, &id)).await
    }

    async fn finish_run(&self, account: &str, run: Run) -> StoreResult<Run> {
        let a = own(account);
        self.write(move |c| runs::finish_run(c, &a, &run)).await
    }

    async fn append_events(&self, account: &str, events: Vec<EventRecord>) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let a = own(account);
        self.write(move |c| runs::append_events(c, &a, &events))
            .await
    }

    async fn last_event_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64> {
        let (a, ag) = (own(account), own(agent_id));
        self.lookup(move |c| runs::last_seq(c, &a, &ag, false))
            .await
    }

    async fn list_runs(
        &self,
        account: &str,
        agent_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> StoreResult<Page<Run>> {
        let (a, ag) = (own(account), own(agent_id));
        self.read(move |c| runs::list_runs(c, &a, &ag, &filter, &params))
            .await
    }

    async fn list_events(
        &self,
        account: &str,
        agent_id: &str,
        filter: EventFilter,
        params: ListParams,
    ) -> StoreResult<Page<EventRecord>> {
        let (a, ag) = (own(account), own(agent_id));
        self.read(move |c| runs::list_events(c, &a, &ag, &filter, &params))
            .await
    }

    async fn session_history(
        &self,
        account: &str,
        agent_id: &str,
        session_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let (a, ag, se) = (own(account), own(agent_id), own(session_id));
        self.read(move |c| runs::session_history(c, &a, &ag, &se, limit))
            .await
    }

    async fn append_logs(&self, account: &str, logs: Vec<LogRecord>) -> StoreResult<()> {
        if logs.is_empty() {
            return Ok(());
        }
        let a = own(account);
        self.write(move |c| runs::append_logs(c, &a, &logs)).await
    }

    async fn last_log_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64> {
        let (a, ag) = (own(account), own(agent_id));
        self.lookup(move |c| runs::last_seq(c, &a, &ag, true)).await
    }

    async fn list_logs(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<LogRecord>> {
        let (a, ag) = (own(account), own(agent_id));
        self.read(move |c| runs::list_logs(c, &a, &ag, &params))
            .await
    }

    async fn append_audit(&self, rows: Vec<AuditRecord>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(move |c| audit::append(c, &rows)).await
    }

    async fn list_audit(
        &self,
        account: &str,
        filter: AuditFilter,
        params: ListParams,
    ) -> StoreResult<Page<AuditRecord>> {
        let a = own(account);
        self.read(move |c| audit::list(c, &a, &filter, &params))
            .await
    }

    async fn prune_audit(&self, before: &str) -> StoreResult<u64> {
        let before = own(before);
        self.write(move |c| audit::prune(c, &before)).await
    }

    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(move |c| usage::add(c, rows)).await
    }

    async fn list_usage(
        &self,
        account: &str,
        query: UsageQuery,
        params: ListParams,
    ) -> StoreResult<Page<UsageRecord>> {
        let a = own(account);
        self.read(move |c| usage::list(c, &a, &query, &params))
            .await
    }

    async fn park_run(&self, approval: Approval) -> StoreResult<Approval> {
        self.write(move |c| approvals::park(c, approval)).await
    }

    async fn get_approval(&self, account: &str, id: &str) -> StoreResult<Approval> {
        let (a, id) = (own(account), own(id));
        self.read(move |c| approvals::get(c, &a, &id)).await
    }

    async fn decide_approval(
        &self,
        account: &str,
        id: &str,
        verdict: ApprovalVerdict,
    ) -> StoreResult<Option<Approval>> {
        let (a, id) = (own(account), own(id));
        self.write(move |c| approvals::decide(c, &a, &id, &verdict))
            .await
    }

    async fn due_approvals(&self, before: &str, limit: u32) -> StoreResult<Vec<Approval>> {
        let before = own(before);
        self.read(move |c| approvals::due(c, &before, limit)).await
    }

    async fn stalled_approvals(
        &self,
        decided_before: &str,
        limit: u32,
    ) -> StoreResult<Vec<Approval>> {
        let before = own(decided_before);
        self.read(move |c| approvals::stalled(c, &before, limit))
            .await
    }

    async fn create_webhook(&self, hook: WebhookRecord) -> StoreResult<WebhookRecord> {
        self.write(move |c| webhooks::create(c, hook)).await
    }

    async fn get_webhook(&self, account: &str, id: &str) -> StoreResult<WebhookRecord> {
        let (a, id) = (own(account), own(id));
        self.lookup(move |c| webhooks::get(c, &a, &id)).await
    }

    async fn list_webhooks(
        &self,
        account: &str,
        params: ListParams,
    ) -> StoreResult<Page<WebhookRecord>> {
        let a = own(account);
        self.read(move |c| webhooks::list(c, &a, &params)).await
    }

    async fn update_webhook(
        &self,
        account: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> StoreResult<WebhookRecord> {
        let (a, id) = (own(account), own(id));
        let now = crate::util::now();
        self.write(move |c| webhooks::update(c, &a, &id, patch, &now))
            .await
    }

    async fn delete_webhook(&self, account: &str, id: &str) -> StoreResult<()> {
        let (a, id) = (own(account), own(id));
        self.write(move |c| webhooks::delete(c, &a, &id)).await
    }

    async fn enqueue_webhook_events(&self, events: Vec<NewWebhookEvent>) -> StoreResult<u64> {
        self.write(move |c| webhooks::enqueue_all(c, &events)).await
    }

    async fn claim_webhook_deliveries(
        &self,
        claimer: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let who = own(claimer);
        self.write(move |c| webhooks::claim(c, &who, now_ms, lease_ms, limit))
            .await
    }

    async fn record_webhook_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        self.write(move |c| webhooks::record(c, outcome)).await
    }

    async fn prune_webhook_deliveries(&self, before: &str, limit: u32) -> StoreResult<u64> {
        let before = own(before);
        self.write(move |c| webhooks::prune(c, &before, limit))
            .await
    }

    async fn list_webhook_deliveries(
        &self,
        account: &str,
        webhook_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let (a, w) = (own(account), own(webhook_id));
        self.read(move |c| webhooks::list_deliveries(c, &a, &w, &params))
            .await
    }

    async fn retry_webhook_delivery(
        &self,
        account: &str,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<DeliveryRecord> {
        let (a, w, d) = (own(account), own(webhook_id), own(delivery_id));
        self.write(move |c| webhooks::retry(c, &a, &w, &d, now_ms, expires_ms))
            .await
    }
}
