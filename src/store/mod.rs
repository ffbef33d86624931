//! The internal store: every CRUD record weir keeps, behind one [`Store`] trait.
//!
//! Two implementations hold data: [`sqlite::SqliteStore`] (the default, a
//! file in the data dir) and [`postgres::PostgresStore`] (`--db postgres://…`,
//! which several processes can share); [`open_local`] picks one. There is one
//! router that serves any `Store` over HTTP to other processes
//! ([`server::store_router`], run by `weir store`), and one client that speaks
//! to that router ([`remote::RemoteStore`]). The gateway only ever sees
//! `Arc<dyn Store>`, so embedded and remote deployments run the same code.
//!
//! Every method that reads or changes tenant data takes the `account` id and
//! must treat a record of another account exactly like a missing one: this is
//! where "one account never sees another's data" is enforced.

pub mod audit;
mod columns;
mod migrate;
pub mod model;
pub(crate) mod paging;
pub mod postgres;
mod records;
pub mod remote;
pub mod schemas;
pub mod server;
pub mod sqlite;
pub mod usage;
pub mod webhooks;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::ErrorCode;

pub use audit::{AuditFilter, AuditRecord};
pub use model::*;
pub use usage::{UsageGroup, UsageQuery, UsageRecord, UsageRow};
pub use webhooks::{
    AttemptOutcome, DeliveryRecord, DueDelivery, NewWebhookEvent, WebhookPatch, WebhookRecord,
};

/// Why a store call failed. Serialisable so the remote store can carry it
/// across the wire unchanged.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum StoreError {
    /// The record does not exist (or belongs to another account).
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule or state rule was broken (message says which).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller sent something the store cannot use (e.g. a bad cursor).
    #[error("invalid {0}")]
    Invalid(String),
    /// The store could not be reached or failed internally.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The code a client is shown, whatever the transport.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Invalid(_) => ErrorCode::ValidationError,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }

    /// What a client is told: backend details stay in the logs.
    pub fn client_message(&self) -> String {
        match self {
            Self::NotFound(what) => format!("{what} not found"),
            Self::Conflict(msg) | Self::Invalid(msg) => msg.clone(),
            Self::Unavailable(_) => "store unavailable".into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The embedded store (SQLite, or PostgreSQL with WEIR_DB), or a client of
/// a remote `weir store` (WEIR_STORE_URL wins over WEIR_DB).
pub async fn open(data: &crate::config::DataConfig) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context;
    Ok(match &data.store_url {
        Some(url) => {
            let store = remote::RemoteStore::new(url, data.store_token.clone())
                .context("WEIR_STORE_URL")?;
            std::sync::Arc::new(store)
        }
        // PostgreSQL (WEIR_DB) or SQLite in the data dir.
        None => open_local(&data.data_dir, data.db.as_deref()).await?,
    })
}

/// Opens the store that holds the data in this process: PostgreSQL when
/// `db` is a `postgres://` or `postgresql://` URL, else SQLite in
/// `data_dir`. Runs pending migrations either way.
pub async fn open_local(
    data_dir: &std::path::Path,
    db: Option<&str>,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context;
    match db.filter(|u| !u.is_empty()) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = postgres::PostgresStore::connect(url)
                .await
                .context("opening the PostgreSQL store (WEIR_DB)")?;
            tracing::info!(db = %store.target(), "store on postgres");
            Ok(std::sync::Arc::new(store))
        }
        Some(_) => anyhow::bail!(
            "WEIR_DB/--db must be a postgres:// or postgresql:// URL \
             (leave it unset for SQLite in WEIR_DATA_DIR)"
        ),
        None => {
            let dir = data_dir.to_owned();
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&dir))
                .await?
                .with_context(|| {
                    format!(
                        "opening the store in {} (WEIR_DATA_DIR)",
                        data_dir.display()
                    )
                })?;
            Ok(std::sync::Arc::new(store))
        }
    }
}

/// Everything the gateway and the runtime read or write.
///
/// Lists are ordered by creation (oldest first unless a method says
/// otherwise) and page both ways with [`ListParams`] ([`paging`]);
/// `next_cursor` is `Some` only when more rows follow.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    // --- accounts and keys -------------------------------------------------
    /// Returns the account, creating it if missing.
    async fn ensure_account(&self, account: &str) -> StoreResult<Account>;
    async fn get_account(&self, account: &str) -> StoreResult<Account>;
    async fn create_key(&self, key: NewKey) -> StoreResult<KeyRecord>;
    /// Looks a key up by id across all accounts (auth does this before it
    /// knows the account). Revoked keys are returned with `revoked_at` set.
    async fn get_key(&self, key_id: &str) -> StoreResult<KeyRecord>;
    async fn list_keys(&self, account: &str, params: ListParams) -> StoreResult<Page<KeyRecord>>;
    /// Marks the key revoked; NotFound if it is not this account's.
    async fn revoke_key(&self, account: &str, key_id: &str) -> StoreResult<()>;
    /// Replaces the key's label and limits; NotFound if it is not this account's.
    async fn update_key(
        &self,
        account: &str,
        key_id: &str,
        settings: KeySettings,
    ) -> StoreResult<KeyRecord>;
    /// Gives the key a new secret hash; the current one keeps working
    /// until `rotation.prev_until` (not at all when `None`). NotFound if
    /// it is not this account's, Conflict if it is revoked.
    async fn rotate_key(
        &self,
        account: &str,
        key_id: &str,
        rotation: KeyRotation,
    ) -> StoreResult<KeyRecord>;
    /// Sets the account-wide token budgets (the operator's; `None` clears
    /// one), creating the account if missing.
    async fn set_account_limits(
        &self,
        account: &str,
        limits: AccountLimits,
    ) -> StoreResult<Account>;
    /// Records `last_used_at` for many keys at once (the gateway batches these).
    async fn touch_keys(&self, used: Vec<(String, String)>) -> StoreResult<()>;

    // --- agents ------------------------------------------------------------
    async fn create_agent(&self, account: &str, agent: NewAgent) -> StoreResult<Agent>;
    async fn get_agent(&self, account: &str, id: &str) -> StoreResult<Agent>;
    async fn list_agents(
        &self,
        account: &str,
        filter: AgentFilter,
        params: ListParams,
    ) -> StoreResult<Page<Agent>>;
    async fn update_agent(&self, account: &str, id: &str, patch: AgentPatch) -> StoreResult<Agent>;
    /// Deletes the agent with its sessions, runs, events and logs.
    async fn delete_agent(&self, account: &str, id: &str) -> StoreResult<()>;

    // --- tools -------------------------------------------------------------
    async fn create_tool(&self, account: &str, tool: NewTool) -> StoreResult<Tool>;
    async fn get_tool(&self, account: &str, id: &str) -> StoreResult<Tool>;
    async fn list_tools(&self, account: &str, params: ListParams) -> StoreResult<Page<Tool>>;
    async fn delete_tool(&self, account: &str, id: &str) -> StoreResult<()>;

    // --- sessions ----------------------------------------------------------
    async fn create_session(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> StoreResult<Session>;
    async fn get_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<Session>;
    async fn list_sessions(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<Session>>;
    async fn delete_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<()>;

    // --- runs, events and logs (written by the agent runtime) ---------------
    async fn create_run(&self, account: &str, run: Run) -> StoreResult<Run>;
    async fn get_run(&self, account: &str, id: &str) -> StoreResult<Run>;
    /// An agent's runs, newest first by default; the cursor is the last
    /// run seen. NotFound("agent") if the agent is not the account's.
    async fn list_runs(
        &self,
        account: &str,
        agent_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> StoreResult<Page<Run>>;
    /// Sets status, stop reason and error of a run; NotFound if missing.
    async fn finish_run(&self, account: &str, run: Run) -> StoreResult<Run>;
    /// Appends events; `seq` is already assigned (by the bus) and unique per agent.
    async fn append_events(&self, account: &str, events: Vec<EventRecord>) -> StoreResult<()>;
    /// Highest event `seq` stored for the agent (0 if none).
    async fn last_event_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64>;
    /// An agent's events oldest first, optionally only one session's or one
    /// run's; the cursor is the last `seq` seen.
    async fn list_events(
        &self,
        account: &str,
        agent_id: &str,
        filter: EventFilter,
        params: ListParams,
    ) -> StoreResult<Page<EventRecord>>;
    /// A session's last `limit` user and assistant messages, oldest first:
    /// a run's conversation. Read from the session's end, so its cost does
    /// not grow with the session (a counted page did, issue 22).
    async fn session_history(
        &self,
        account: &str,
        agent_id: &str,
        session_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>>;
    async fn append_logs(&self, account: &str, logs: Vec<LogRecord>) -> StoreResult<()>;
    async fn last_log_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64>;
    async fn list_logs(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<LogRecord>>;

    // --- audit log -----------------------------------------------------------
    /// Appends audit rows of any accounts (the gateway's writer batches them).
    async fn append_audit(&self, rows: Vec<AuditRecord>) -> StoreResult<()>;
    /// An account's audit rows, **newest first**; the cursor is the last
    /// row seen, and the next page holds the older rows after it.
    async fn list_audit(
        &self,
        account: &str,
        filter: AuditFilter,
        params: ListParams,
    ) -> StoreResult<Page<AuditRecord>>;
    /// Deletes up to [`audit::PRUNE_BATCH`] rows (of every account) created
    /// before `before` (a timestamp as [`crate::util::now`] writes them);
    /// how many it deleted.
    async fn prune_audit(&self, before: &str) -> StoreResult<u64>;

    // --- usage -----------------------------------------------------------------
    /// Adds each row's counters to the stored row of the same account,
    /// key, day, model, agent and provider (creating it at zero): an
    /// upsert that adds, so writers sharing the store sum.
    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()>;
    /// An account's usage over `query`'s days, summed by its group, in
    /// the order of the group's value; the cursor is the last value seen.
    async fn list_usage(
        &self,
        account: &str,
        query: UsageQuery,
        params: ListParams,
    ) -> StoreResult<Page<UsageRecord>>;

    // --- approvals ---------------------------------------------------------
    /// Parks a run: stores the new pending `approval` and marks its run
    /// `waiting_approval`, in one transaction, so no crash leaves a waiting
    /// run without the approval that resumes it. NotFound("run") if the
    /// run is not the approval's account's.
    async fn park_run(&self, approval: Approval) -> StoreResult<Approval>;
    async fn get_approval(&self, account: &str, id: &str) -> StoreResult<Approval>;
    /// Records `verdict` on the approval if it is still `pending` and
    /// returns it; `None` when it was decided already (one decider wins).
    async fn decide_approval(
        &self,
        account: &str,
        id: &str,
        verdict: ApprovalVerdict,
    ) -> StoreResult<Option<Approval>>;
    /// Up to `limit` pending approvals (of every account) that expired
    /// before `before`, oldest first.
    async fn due_approvals(&self, before: &str, limit: u32) -> StoreResult<Vec<Approval>>;
    /// Up to `limit` approvals decided before `decided_before` whose run
    /// still waits (its resume was lost: a crash or a failed re-queue
    /// between the decision and the run going on), oldest decision first.
    async fn stalled_approvals(
        &self,
        decided_before: &str,
        limit: u32,
    ) -> StoreResult<Vec<Approval>>;

    // --- webhooks (src/store/webhooks.rs) ----------------------------------------
    // Every store implements these (the remote one through `weir store`'s
    // RPC); the defaults answer `Unavailable` for a store that does not.
    async fn create_webhook(&self, hook: WebhookRecord) -> StoreResult<WebhookRecord> {
        let _ = hook;
        Err(no_webhooks())
    }
    async fn get_webhook(&self, account: &str, id: &str) -> StoreResult<WebhookRecord> {
        let _ = (account, id);
        Err(no_webhooks())
    }
    async fn list_webhooks(
        &self,
        account: &str,
        params: ListParams,
    ) -> StoreResult<Page<WebhookRecord>> {
        let _ = (account, params);
        Err(no_webhooks())
    }
    /// Applies the patch; NotFound if it is not this account's.
    async fn update_webhook(
        &self,
        account: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> StoreResult<WebhookRecord> {
        let _ = (account, id, patch);
        Err(no_webhooks())
    }
    /// Deletes the subscription with its deliveries.
    async fn delete_webhook(&self, account: &str, id: &str) -> StoreResult<()> {
        let _ = (account, id);
        Err(no_webhooks())
    }
    /// Queues one delivery of each event per matching subscription of its
    /// account (type subscribed, agent filter met), in one transaction;
    /// how many deliveries.
    async fn enqueue_webhook_events(&self, events: Vec<NewWebhookEvent>) -> StoreResult<u64> {
        let _ = events;
        Err(no_webhooks())
    }
    /// Claims up to `limit` pending deliveries due at `now_ms` that nobody
    /// holds, for `lease_ms`: two claimers never get the same row.
    async fn claim_webhook_deliveries(
        &self,
        claimer: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let _ = (claimer, now_ms, lease_ms, limit);
        Err(no_webhooks())
    }
    /// Records an attempt and releases the claim (ignored when the claim
    /// is no longer `outcome.claimed_by`'s).
    async fn record_webhook_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        let _ = outcome;
        Err(no_webhooks())
    }
    /// Deletes up to `limit` finished deliveries (delivered or failed, of
    /// every account) last written before `before` (a stored timestamp);
    /// how many.
    async fn prune_webhook_deliveries(&self, before: &str, limit: u32) -> StoreResult<u64> {
        let _ = (before, limit);
        Err(no_webhooks())
    }
    /// A subscription's deliveries, oldest first; NotFound("webhook").
    async fn list_webhook_deliveries(
        &self,
        account: &str,
        webhook_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let _ = (account, webhook_id, params);
        Err(no_webhooks())
    }
    /// Queues a delivery again, due at `now_ms`, window until `expires_ms`.
    async fn retry_webhook_delivery(
        &self,
        account: &str,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<DeliveryRecord> {
        let _ = (account, webhook_id, delivery_id, now_ms, expires_ms);
        Err(no_webhooks())
    }
}

fn no_webhooks() -> StoreError {
    StoreError::Unavailable("this store does not keep webhooks".into())
}
