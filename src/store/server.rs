//! The store's own HTTP API: any [`Store`] served to other processes, which
//! reach it through [`super::remote::RemoteStore`].
//!
//! It is RPC, not REST: every trait method is one [`StoreRequest`] variant
//! posted to `POST /rpc`, and the answer is the JSON of the method's
//! `Result<T, StoreError>`. One [`dispatch`] table maps the enum onto the
//! trait, so a new store method costs one variant and one match arm here and
//! one call in the client, and no CRUD logic exists twice. Store errors
//! travel in-band (HTTP 200); non-200 answers mean the call never reached
//! the store (401 bad token, 400 undecodable request, 5xx failures).

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::webhooks::AttemptOutcome;
use super::{
    AccountLimits, AgentFilter, AgentPatch, Approval, ApprovalVerdict, AuditFilter, AuditRecord,
    EventFilter, EventRecord, KeyRotation, KeySettings, ListParams, LogRecord, NewAgent, NewKey,
    NewTool, NewWebhookEvent, Run, RunFilter, Store, StoreResult, UsageQuery, UsageRow,
    WebhookPatch, WebhookRecord,
};
use crate::{config::StoreConfig, domain::ErrorCode};

/// Largest RPC body: event and log batches can be big, but not unbounded.
const RPC_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// One call of a [`Store`] method, with its arguments, as sent on the wire:
/// `{"method":"get_agent","args":{"account":"…","id":"…"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", content = "args", rename_all = "snake_case")]
pub enum StoreRequest {
    Ping,
    EnsureAccount {
        account: String,
    },
    GetAccount {
        account: String,
    },
    CreateKey {
        key: NewKey,
    },
    GetKey {
        key_id: String,
    },
    ListKeys {
        account: String,
        params: ListParams,
    },
    RevokeKey {
        account: String,
        key_id: String,
    },
    TouchKeys {
        used: Vec<(String, String)>,
    },
    UpdateKey {
        account: String,
        key_id: String,
        settings: KeySettings,
    },
    RotateKey {
        account: String,
        key_id: String,
        rotation: KeyRotation,
    },
    SetAccountLimits {
        account: String,
        limits: AccountLimits,
    },
    CreateAgent {
        account: String,
        agent: NewAgent,
    },
    GetAgent {
        account: String,
        id: String,
    },
    ListAgents {
        account: String,
        #[serde(default)]
        filter: AgentFilter,
        params: ListParams,
    },
    UpdateAgent {
        account: String,
        id: String,
        patch: AgentPatch,
    },
    DeleteAgent {
        account: String,
        id: String,
    },
    CreateTool {
        account: String,
        tool: NewTool,
    },
    GetTool {
        account: String,
        id: String,
    },
    ListTools {
        account: String,
        params: ListParams,
    },
    DeleteTool {
        account: String,
        id: String,
    },
    CreateSession {
        account: String,
        agent_id: String,
        name: String,
    },
    GetSession {
        account: String,
        agent_id: String,
        id: String,
    },
    ListSessions {
        account: String,
        agent_id: String,
        params: ListParams,
    },
    DeleteSession {
        account: String,
        agent_id: String,
        id: String,
    },
    CreateRun {
        account: String,
        run: Run,
    },
    GetRun {
        account: String,
        id: String,
    },
    FinishRun {
        account: String,
        run: Run,
    },
    AppendEvents {
        account: String,
        events: Vec<EventRecord>,
    },
    LastEventSeq {
        account: String,
        agent_id: String,
    },
    ListRuns {
        account: String,
        agent_id: String,
        filter: RunFilter,
        params: ListParams,
    },
    ListEvents {
        account: String,
        agent_id: String,
        filter: EventFilter,
        params: ListParams,
    },
    SessionHistory {
        account: String,
        agent_id: String,
        session_id: String,
        limit: u32,
    },
    AppendLogs {
        account: String,
        logs: Vec<LogRecord>,
    },
    LastLogSeq {
        account: String,
        agent_id: String,
    },
    ListLogs {
        account: String,
        agent_id: String,
        params: ListParams,
    },
    AppendAudit {
        rows: Vec<AuditRecord>,
    },
    ListAudit {
        account: String,
        filter: AuditFilter,
        params: ListParams,
    },
    PruneAudit {
        before: String,
    },
    AddUsage {
        rows: Vec<UsageRow>,
    },
    ListUsage {
        account: String,
        query: UsageQuery,
        params: ListParams,
    },
    ParkRun {
        approval: Approval,
    },
    GetApproval {
        account: String,
        id: String,
    },
    DecideApproval {
        account: String,
        id: String,
        verdict: ApprovalVerdict,
    },
    DueApprovals {
        before: String,
        limit: u32,
    },
    StalledApprovals {
        decided_before: String,
        limit: u32,
    },
    CreateWebhook {
        hook: WebhookRecord,
    },
    GetWebhook {
        account: String,
        id: String,
    },
    ListWebhooks {
        account: String,
        params: ListParams,
    },
    UpdateWebhook {
        account: String,
        id: String,
        patch: WebhookPatch,
    },
    DeleteWebhook {
        account: String,
        id: String,
    },
    EnqueueWebhookEvents {
        events: Vec<NewWebhookEvent>,
    },
    ClaimWebhookDeliveries {
        claimer: String,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    },
    RecordWebhookAttempt {
        outcome: AttemptOutcome,
    },
    PruneWebhookDeliveries {
        before: String,
        limit: u32,
    },
    ListWebhookDeliveries {
        account: String,
        webhook_id: String,
        params: ListParams,
    },
    RetryWebhookDelivery {
        account: String,
        webhook_id: String,
        delivery_id: String,
        now_ms: i64,
        expires_ms: i64,
    },
}

/// The JSON of a method's result, as [`dispatch`] answers it.
fn reply<T: Serialize>(result: StoreResult<T>) -> Vec<u8> {
    serde_json::to_vec(&result).unwrap_or_else(|e| {
        let err: StoreResult<()> = Err(super::StoreError::Unavailable(format!(
            "cannot encode answer: {e}"
        )));
        serde_json::to_vec(&err).unwrap_or_default()
    })
}

/// Runs one request against `store` and encodes its `Result`. A flat table
/// on purpose: one line per trait method, nothing else.
pub async fn dispatch(store: &dyn Store, req: StoreRequest) -> Vec<u8> {
    use StoreRequest as R;
    match req {
        R::Ping => reply(store.ping().await),
        R::EnsureAccount { account } => reply(store.ensure_account(&account).await),
        R::GetAccount { account } => reply(store.get_account(&account).await),
        R::CreateKey { key } => reply(store.create_key(key).await),
        R::GetKey { key_id } => reply(store.get_key(&key_id).await),
        R::ListKeys { account, params } => reply(store.list_keys(&account, params).await),
        R::RevokeKey { account, key_id } => reply(store.revoke_key(&account, &key_id).await),
        R::TouchKeys { used } => reply(store.touch_keys(used).await),
        R::UpdateKey {
            account,
            key_id,
            settings,
        } => reply(store.update_key(&account, &key_id, settings).await),
        R::RotateKey {
            account,
            key_id,
            rotation,
        } => reply(store.rotate_key(&account, &key_id, rotation).await),
        R::SetAccountLimits { account, limits } => {
            reply(store.set_account_limits(&account, limits).await)
        }
        R::CreateAgent { account, agent } => reply(store.create_agent(&account, agent).await),
        R::GetAgent { account, id } => reply(store.get_agent(&account, &id).await),
        R::ListAgents {
            account,
            filter,
            params,
        } => reply(store.list_agents(&account, filter, params).await),
        R::UpdateAgent { account, id, patch } => {
            reply(store.update_agent(&account, &id, patch).await)
        }
        R::DeleteAgent { account, id } => reply(store.delete_agent(&account, &id).await),
        R::CreateTool { account, tool } => reply(store.create_tool(&account, tool).await),
        R::GetTool { account, id } => reply(store.get_tool(&account, &id).await),
        R::ListTools { account, params } => reply(store.list_tools(&account, params).await),
        R::DeleteTool { account, id } => reply(store.delete_tool(&account, &id).await),
        R::CreateSession {
            account,
            agent_id,
            name,
        } => reply(store.create_session(&account, &agent_id, &name).await),
        R::GetSession {
            account,
            agent_id,
            id,
        } => reply(store.get_session(&account, &agent_id, &id).await),
        R::ListSessions {
            account,
            agent_id,
            params,
        } => reply(store.list_sessions(&account, &agent_id, params).await),
        R::DeleteSession {
            account,
            agent_id,
            id,
        } => reply(store.delete_session(&account, &agent_id, &id).await),
        R::CreateRun { account, run } => reply(store.create_run(&account, run).await),
        R::GetRun { account, id } => reply(store.get_run(&account, &id).await),
        R::FinishRun { account, run } => reply(store.finish_run(&account, run).await),
        R::AppendEvents { account, events } => reply(store.append_events(&account, events).await),
        R::LastEventSeq { account, agent_id } => {
            reply(store.last_event_seq(&account, &agent_id).await)
        }
        R::ListRuns {
            account,
            agent_id,
            filter,
            params,
        } => reply(store.list_runs(&account, &agent_id, filter, params).await),
        R::ListEvents {
            account,
            agent_id,
            filter,
            params,
        } => reply(store.list_events(&account, &agent_id, filter, params).await),
        R::SessionHistory {
            account,
            agent_id,
            session_id,
            limit,
        } => reply(
            store
                .session_history(&account, &agent_id, &session_id, limit)
                .await,
        ),
        R::AppendLogs { account, logs } => reply(store.append_logs(&account, logs).await),
        R::LastLogSeq { account, agent_id } => reply(store.last_log_seq(&account, &agent_id).await),
        R::ListLogs {
            account,
            agent_id,
            params,
        } => reply(store.list_logs(&account, &agent_id, params).await),
        R::AppendAudit { rows } => reply(store.append_audit(rows).await),
        R::ListAudit {
            account,
            filter,
            params,
        } => reply(store.list_audit(&account, filter, params).await),
        R::PruneAudit { before } => reply(store.prune_audit(&before).await),
        R::AddUsage { rows } => reply(store.add_usage(rows).await),
        R::ListUsage {
            account,
            query,
            params,
        } => reply(store.list_usage(&account, query, params).await),
        R::ParkRun { approval } => reply(store.park_run(approval).await),
        R::GetApproval { account, id } => reply(store.get_approval(&account, &id).await),
        R::DecideApproval {
            account,
            id,
            verdict,
        } => reply(store.decide_approval(&account, &id, verdict).await),
        R::DueApprovals { before, limit } => reply(store.due_approvals(&before, limit).await),
        R::StalledApprovals {
            decided_before,
            limit,
        } => reply(store.stalled_approvals(&decided_before, limit).await),
        R::CreateWebhook { hook } => reply(store.create_webhook(hook).await),
        R::GetWebhook { account, id } => reply(store.get_webhook(&account, &id).await),
        R::ListWebhooks { account, params } => reply(store.list_webhooks(&account, params).await),
        R::UpdateWebhook { account, id, patch } => {
            reply(store.update_webhook(&account, &id, patch).await)
        }
        R::DeleteWebhook { account, id } => reply(store.delete_webhook(&account, &id).await),
        R::EnqueueWebhookEvents { events } => reply(store.enqueue_webhook_events(events).await),
        R::ClaimWebhookDeliveries {
            claimer,
            now_ms,
            lease_ms,
            limit,
        } => reply(
            store
                .claim_webhook_deliveries(&claimer, now_ms, lease_ms, limit)
                .await,
        ),
        R::RecordWebhookAttempt { outcome } => reply(store.record_webhook_attempt(outcome).await),
        R::PruneWebhookDeliveries { before, limit } => {
            reply(store.prune_webhook_deliveries(&before, limit).await)
        }
        R::ListWebhookDeliveries {
            account,
            webhook_id,
            params,
        } => reply(
            store
                .list_webhook_deliveries(&account, &webhook_id, params)
                .await,
        ),
        R::RetryWebhookDelivery {
            account,
            webhook_id,
            delivery_id,
            now_ms,
            expires_ms,
        } => reply(
            store
                .retry_webhook_delivery(&account, &webhook_id, &delivery_id, now_ms, expires_ms)
                .await,
        ),
    }
}

#[derive(Clone)]
struct ServerState {
    store: Arc<dyn Store>,
    /// SHA-256 of the token, so the comparison is constant-time and does
    /// not even leak the token's length. `None` (empty token) admits nobody.
    token_hash: Option<[u8; 32]>,
}

/// The store's router: `POST /rpc` behind `Authorization: Bearer <token>`,
/// and unauthenticated `GET /healthz` and `GET /readyz`. An empty token
/// rejects every RPC.
pub fn store_router(store: Arc<dyn Store>, token: String) -> Router {
    let state = ServerState {
        store,
        token_hash: (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into()),
    };
    let rpc = Router::new()
        .route("/rpc", post(handle_rpc))
        .layer(DefaultBodyLimit::max(RPC_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(rpc)
        .fallback(|| async { refuse(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            refuse(ErrorCode::MethodNotAllowed, "method not allowed")
        })
        .with_state(state)
}

/// A call refused before it reached the store, in the gateway's envelope
/// shape (`{"error":{"code","message"}}`) with the code's status. This is
/// the store's own small HTTP API, not the gateway's: it has no request ids
/// nor the gateway's error type.
pub(super) fn refuse(code: ErrorCode, message: &str) -> Response {
    let status = code
        .status()
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn token_ok(headers: &HeaderMap, expected: Option<&[u8; 32]>) -> bool {
    let Some(expected) = expected else {
        return false;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) => Sha256::digest(token.as_bytes())
            .as_slice()
            .ct_eq(expected)
            .into(),
        None => false,
    }
}

async fn require_token(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    if token_ok(req.headers(), state.token_hash.as_ref()) {
        next.run(req).await
    } else {
        refuse(ErrorCode::Unauthorized, "missing or wrong store token")
    }
}

async fn handle_rpc(State(state): State<ServerState>, body: Bytes) -> Response {
    let req: StoreRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => {
            let message = format!("invalid store request: {e}");
            return refuse(ErrorCode::ValidationError, &message);
        }
    };
    let answer = dispatch(&*state.store, req).await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer,
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<ServerState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            refuse(ErrorCode::Unavailable, "store unavailable")
        }
    }
}

/// A store server bound to its address but not yet serving, so callers
/// (tests, `weir store`) can learn the port before they run it.
pub struct StoreServer {
    listener: tokio::net::TcpListener,
    router: Router,
    local_addr: SocketAddr,
}

impl StoreServer {
    /// Opens the store (PostgreSQL at `cfg.db`, else SQLite in
    /// `cfg.data_dir`) and binds `cfg.listen`.
    /// Refuses to start without a token: the store holds every tenant's data.
    pub async fn bind(cfg: &StoreConfig) -> anyhow::Result<Self> {
        let token = match cfg.store_token.as_deref() {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => anyhow::bail!(
                "weir store needs a token: set WEIR_STORE_TOKEN or pass --store-token"
            ),
        };
        let store = super::open_local(&cfg.data_dir, cfg.db.as_deref()).await?;
        let server = Self::bind_with(store, token, cfg.listen).await?;
        match cfg.db.as_deref().filter(|d| !d.is_empty()) {
            Some(_) => tracing::info!(addr = %server.local_addr, "store listening (postgres)"),
            None => {
                tracing::info!(addr = %server.local_addr, data_dir = %cfg.data_dir.display(), "store listening")
            }
        }
        Ok(server)
    }

    /// Serves any `store` on `listen` (port 0 picks a free port).
    pub async fn bind_with(
        store: Arc<dyn Store>,
        token: String,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            router: store_router(store, token),
            local_addr,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight calls finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use axum::serve::ListenerExt;
        // Small request/response pairs on kept-alive connections: Nagle
        // would only add latency.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!(addr = %self.local_addr, "store stopped");
        Ok(())
    }
}

/// `weir store`: opens the store (`cfg.db` or `cfg.data_dir`), serves it on
/// `cfg.listen` until `shutdown` resolves.
pub async fn run_store(
    cfg: StoreConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    StoreServer::bind(&cfg).await?.run(shutdown).await
}

#[cfg(test)]
#[path = "tests/mod.rs"]
mod tests;
