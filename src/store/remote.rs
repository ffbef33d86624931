//! [`RemoteStore`]: the [`Store`] of a gateway started with `--store-url`,
//! which forwards every call to a `weir store` process over HTTP.
//!
//! Each method is one [`StoreRequest`] posted to the server's `/rpc`; the
//! answer decodes straight into the method's `Result`, so store errors
//! (NotFound, Conflict, …) arrive exactly as the server's store raised them.
//! One pooled client keeps connections alive: a warm call costs one
//! request/response on an open socket.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::{server::StoreRequest as R, *};
use crate::domain::MessageType;

/// A store reached over HTTP.
pub struct RemoteStore {
    client: reqwest::Client,
    rpc_url: reqwest::Url,
    auth: Option<header::HeaderValue>,
}

impl RemoteStore {
    /// `base_url` is the store's root (e.g. `http://10.0.0.5:8081`); `token`
    /// is sent as `Authorization: Bearer …`. Fails only on a malformed URL
    /// or token; nothing is contacted until the first call.
    pub fn new(base_url: &str, token: Option<String>) -> StoreResult<Self> {
        let rpc_url = reqwest::Url::parse(&format!("{}/rpc", base_url.trim_end_matches('/')))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                StoreError::Invalid(format!("store url: `{base_url}` is not an http(s) URL"))
            })?;
        let auth = token
            .map(|t| {
                let mut v = header::HeaderValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    StoreError::Invalid("store token: not a valid header value".into())
                })?;
                v.set_sensitive(true);
                Ok::<_, StoreError>(v)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            // The store is an internal service: never route it through an
            // HTTP(S)_PROXY meant for the provider or the outside world.
            .no_proxy()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the store client: {e}")))?;
        Ok(Self {
            client,
            rpc_url,
            auth,
        })
    }

    /// Posts one request and decodes the `Result` it answers.
    async fn call<T: DeserializeOwned>(&self, req: R) -> StoreResult<T> {
        let body = serde_json::to_vec(&req)
            .map_err(|e| StoreError::Invalid(format!("cannot encode store request: {e}")))?;
        crate::metrics::store_request(method_of(&body));
        let mut builder = self
            .client
            .post(self.rpc_url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        let resp = builder.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        match status {
            StatusCode::OK => serde_json::from_slice::<StoreResult<T>>(&bytes).map_err(|e| {
                StoreError::Unavailable(format!("undecodable answer from the store: {e}"))
            })?,
            StatusCode::UNAUTHORIZED => {
                Err(StoreError::Unavailable("store rejected the token".into()))
            }
            other => Err(StoreError::Unavailable(format!(
                "store answered {other}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ))),
        }
    }
}

impl RemoteStore {
    /// [`Store::session_history`] through `list_events`: a counted page of
    /// the session's user and assistant messages, then its tail.
    async fn history_by_pages(
        &self,
        account: &str,
        agent_id: &str,
        session_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let filter = EventFilter {
            session_id: Some(session_id.into()),
            run_id: None,
            message_types: Some(vec![
                MessageType::UserMessage,
                MessageType::AssistantMessage,
            ]),
        };
        // A page holds at most `MAX_LIMIT`: the tail is that many, so the
        // newest messages are never the ones left out.
        let size = limit.min(super::paging::MAX_LIMIT);
        let mut params = ListParams {
            limit: size,
            ..Default::default()
        };
        let mut page = self
            .list_events(account, agent_id, filter.clone(), params.clone())
            .await?;
        if page.pagination.total > u64::from(size) {
            params.offset = page.pagination.total - u64::from(size);
            page = self.list_events(account, agent_id, filter, params).await?;
        }
        Ok(page.data)
    }
}

/// The method name of an encoded request: `{"method":"get_key",…}`.
fn method_of(body: &[u8]) -> &str {
    let rest = body.strip_prefix(br#"{"method":""#).unwrap_or_default();
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(0);
    std::str::from_utf8(&rest[..end]).unwrap_or_default()
}

/// A request that never got an answer (refused, timed out, reset).
fn transport(e: reqwest::Error) -> StoreError {
    // reqwest's Display hides the cause ("error sending request"); the
    // source chain says what actually happened.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::Unavailable(msg)
}

fn own(s: &str) -> String {
    s.to_owned()
}

#[async_trait]
impl Store for RemoteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.call(R::Ping).await
    }

    async fn ensure_account(&self, account: &str) -> StoreResult<Account> {
        self.call(R::EnsureAccount {
            account: own(account),
        })
        .await
    }

    async fn get_account(&self, account: &str) -> StoreResult<Account> {
        self.call(R::GetAccount {
            account: own(account),
        })
        .await
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<KeyRecord> {
        self.call(R::CreateKey { key }).await
    }

    async fn get_key(&self, key_id: &str) -> StoreResult<KeyRecord> {
        self.call(R::GetKey {
            key_id: own(key_id),
        })
        .await
    }

    async fn list_keys(&self, account: &str, params: ListParams) -> StoreResult<Page<KeyRecord>> {
        self.call(R::ListKeys {
            account: own(account),
            params,
        })
        .await
    }

    async fn revoke_key(&self, account: &str, key_id: &str) -> StoreResult<()> {
        self.call(R::RevokeKey {
            account: own(account),
            key_id: own(key_id),
        })
        .await
    }

    async fn update_key(
        &self,
        account: &str,
        key_id: &str,
        settings: KeySettings,
    ) -> StoreResult<KeyRecord> {
        self.call(R::UpdateKey {
            account: own(account),
            key_id: own(key_id),
            settings,
        })
        .await
    }

    async fn rotate_key(
        &self,
        account: &str,
        key_id: &str,
        rotation: KeyRotation,
    ) -> StoreResult<KeyRecord> {
        self.call(R::RotateKey {
            account: own(account),
            key_id: own(key_id),
            rotation,
        })
        .await
    }

    async fn set_account_limits(
        &self,
        account: &str,
        limits: AccountLimits,
    ) -> StoreResult<Account> {
        self.call(R::SetAccountLimits {
            account: own(account),
            limits,
        })
        .await
    }

    async fn touch_keys(&self, used: Vec<(String, String)>) -> StoreResult<()> {
        self.call(R::TouchKeys { used }).await
    }

    async fn create_agent(&self, account: &str, agent: NewAgent) -> StoreResult<Agent> {
        self.call(R::CreateAgent {
            account: own(account),
            agent,
        })
        .await
    }

    async fn get_agent(&self, account: &str, id: &str) -> StoreResult<Agent> {
        self.call(R::GetAgent {
            account: own(account),
            id: own(id),
        })
        .await
    }

    async fn list_agents(
        &self,
        account: &str,
        filter: AgentFilter,
        params: ListParams,
    ) -> StoreResult<Page<Agent>> {
        self.call(R::ListAgents {
            account: own(account),
            filter,
            params,
        })
        .await
    }

    async fn update_agent(&self, account: &str, id: &str, patch: AgentPatch) -> StoreResult<Agent> {
        self.call(R::UpdateAgent {
            account: own(account),
            id: own(id),
            patch,
        })
        .await
    }

    async fn delete_agent(&self, account: &str, id: &str) -> StoreResult<()> {
        self.call(R::DeleteAgent {
            account: own(account),
            id: own(id),
        })
        .await
    }

    async fn create_tool(&self, account: &str, tool: NewTool) -> StoreResult<Tool> {
        self.call(R::CreateTool {
            account: own(account),
            tool,
        })
        .await
    }

    async fn get_tool(&self, account: &str, id: &str) -> StoreResult<Tool> {
        self.call(R::GetTool {
            account: own(account),
            id: own(id),
        })
        .await
    }

    async fn list_tools(&self, account: &str, params: ListParams) -> StoreResult<Page<Tool>> {
        self.call(R::ListTools {
            account: own(account),
            params,
        })
        .await
    }

    async fn delete_tool(&self, account: &str, id: &str) -> StoreResult<()> {
        self.call(R::DeleteTool {
            account: own(account),
            id: own(id),
        })
        .await
    }

    async fn create_session(
        &self,
        account: &str,
        agent_id: &str,
        name: &str,
    ) -> StoreResult<Session> {
        self.call(R::CreateSession {
            account: own(account),
            agent_id: own(agent_id),
            name: own(name),
        })
        .await
    }

    async fn get_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<Session> {
        self.call(R::GetSession {
            account: own(account),
            agent_id: own(agent_id),
            id: own(id),
        })
        .await
    }

    async fn list_sessions(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<Session>> {
        self.call(R::ListSessions {
            account: own(account),
            agent_id: own(agent_id),
            params,
        })
        .await
    }

    async fn delete_session(&self, account: &str, agent_id: &str, id: &str) -> StoreResult<()> {
        self.call(R::DeleteSession {
            account: own(account),
            agent_id: own(agent_id),
            id: own(id),
        })
        .await
    }

    async fn create_run(&self, account: &str, run: Run) -> StoreResult<Run> {
        self.call(R::CreateRun {
            account: own(account),
            run,
        })
        .await
    }

    async fn get_run(&self, account: &str, id: &str) -> StoreResult<Run> {
        self.call(R::GetRun {
            account: own(account),
            id: own(id),
        })
        .await
    }

    async fn finish_run(&self, account: &str, run: Run) -> StoreResult<Run> {
        self.call(R::FinishRun {
            account: own(account),
            run,
        })
        .await
    }

    async fn append_events(&self, account: &str, events: Vec<EventRecord>) -> StoreResult<()> {
        self.call(R::AppendEvents {
            account: own(account),
            events,
        })
        .await
    }

    async fn last_event_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64> {
        self.call(R::LastEventSeq {
            account: own(account),
            agent_id: own(agent_id),
        })
        .await
    }

    async fn list_runs(
        &self,
        account: &str,
        agent_id: &str,
        filter: RunFilter,
        params: ListParams,
    ) -> StoreResult<Page<Run>> {
        self.call(R::ListRuns {
            account: own(account),
            agent_id: own(agent_id),
            filter,
            params,
        })
        .await
    }

    async fn list_events(
        &self,
        account: &str,
        agent_id: &str,
        filter: EventFilter,
        params: ListParams,
    ) -> StoreResult<Page<EventRecord>> {
        self.call(R::ListEvents {
            account: own(account),
            agent_id: own(agent_id),
            filter,
            params,
        })
        .await
    }

    async fn session_history(
        &self,
        account: &str,
        agent_id: &str,
        session_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let asked = self
            .call(R::SessionHistory {
                account: own(account),
                agent_id: own(agent_id),
                session_id: own(session_id),
                limit,
            })
            .await;
        match asked {
            // A `weir store` older than this gateway (a rolling upgrade):
            // the same messages through the list it has always served.
            Err(StoreError::Unavailable(m)) if m.contains("unknown variant `session_history`") => {
                self.history_by_pages(account, agent_id, session_id, limit)
                    .await
            }
            other => other,
        }
    }

    async fn append_logs(&self, account: &str, logs: Vec<LogRecord>) -> StoreResult<()> {
        self.call(R::AppendLogs {
            account: own(account),
            logs,
        })
        .await
    }

    async fn last_log_seq(&self, account: &str, agent_id: &str) -> StoreResult<u64> {
        self.call(R::LastLogSeq {
            account: own(account),
            agent_id: own(agent_id),
        })
        .await
    }

    async fn list_logs(
        &self,
        account: &str,
        agent_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<LogRecord>> {
        self.call(R::ListLogs {
            account: own(account),
            agent_id: own(agent_id),
            params,
        })
        .await
    }

    async fn append_audit(&self, rows: Vec<AuditRecord>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.call(R::AppendAudit { rows }).await
    }

    async fn list_audit(
        &self,
        account: &str,
        filter: AuditFilter,
        params: ListParams,
    ) -> StoreResult<Page<AuditRecord>> {
        self.call(R::ListAudit {
            account: own(account),
            filter,
            params,
        })
        .await
    }

    async fn prune_audit(&self, before: &str) -> StoreResult<u64> {
        self.call(R::PruneAudit {
            before: own(before),
        })
        .await
    }

    async fn add_usage(&self, rows: Vec<UsageRow>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.call(R::AddUsage { rows }).await
    }

    async fn list_usage(
        &self,
        account: &str,
        query: UsageQuery,
        params: ListParams,
    ) -> StoreResult<Page<UsageRecord>> {
        self.call(R::ListUsage {
            account: own(account),
            query,
            params,
        })
        .await
    }

    async fn park_run(&self, approval: Approval) -> StoreResult<Approval> {
        self.call(R::ParkRun { approval }).await
    }

    async fn get_approval(&self, account: &str, id: &str) -> StoreResult<Approval> {
        self.call(R::GetApproval {
            account: own(account),
            id: own(id),
        })
        .await
    }

    async fn decide_approval(
        &self,
        account: &str,
        id: &str,
        verdict: ApprovalVerdict,
    ) -> StoreResult<Option<Approval>> {
        self.call(R::DecideApproval {
            account: own(account),
            id: own(id),
            verdict,
        })
        .await
    }

    async fn due_approvals(&self, before: &str, limit: u32) -> StoreResult<Vec<Approval>> {
        self.call(R::DueApprovals {
            before: own(before),
            limit,
        })
        .await
    }

    async fn stalled_approvals(
        &self,
        decided_before: &str,
        limit: u32,
    ) -> StoreResult<Vec<Approval>> {
        self.call(R::StalledApprovals {
            decided_before: own(decided_before),
            limit,
        })
        .await
    }

    async fn create_webhook(&self, hook: WebhookRecord) -> StoreResult<WebhookRecord> {
        self.call(R::CreateWebhook { hook }).await
    }

    async fn get_webhook(&self, account: &str, id: &str) -> StoreResult<WebhookRecord> {
        let (account, id) = (own(account), own(id));
        self.call(R::GetWebhook { account, id }).await
    }

    async fn list_webhooks(
        &self,
        account: &str,
        params: ListParams,
    ) -> StoreResult<Page<WebhookRecord>> {
        let account = own(account);
        self.call(R::ListWebhooks { account, params }).await
    }

    async fn update_webhook(
        &self,
        account: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> StoreResult<WebhookRecord> {
        let (account, id) = (own(account), own(id));
        self.call(R::UpdateWebhook { account, id, patch }).await
    }

    async fn delete_webhook(&self, account: &str, id: &str) -> StoreResult<()> {
        let (account, id) = (own(account), own(id));
        self.call(R::DeleteWebhook { account, id }).await
    }

    async fn enqueue_webhook_events(&self, events: Vec<NewWebhookEvent>) -> StoreResult<u64> {
        self.call(R::EnqueueWebhookEvents { events }).await
    }

    async fn claim_webhook_deliveries(
        &self,
        claimer: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let claimer = own(claimer);
        self.call(R::ClaimWebhookDeliveries {
            claimer,
            now_ms,
            lease_ms,
            limit,
        })
        .await
    }

    async fn record_webhook_attempt(&self, outcome: AttemptOutcome) -> StoreResult<()> {
        self.call(R::RecordWebhookAttempt { outcome }).await
    }

    async fn prune_webhook_deliveries(&self, before: &str, limit: u32) -> StoreResult<u64> {
        let before = own(before);
        self.call(R::PruneWebhookDeliveries { before, limit }).await
    }

    async fn list_webhook_deliveries(
        &self,
        account: &str,
        webhook_id: &str,
        params: ListParams,
    ) -> StoreResult<Page<DeliveryRecord>> {
        let (account, webhook_id) = (own(account), own(webhook_id));
        self.call(R::ListWebhookDeliveries {
            account,
            webhook_id,
            params,
        })
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
        self.call(R::RetryWebhookDelivery {
            account: own(account),
            webhook_id: own(webhook_id),
            delivery_id: own(delivery_id),
            now_ms,
            expires_ms,
        })
        .await
    }
}
