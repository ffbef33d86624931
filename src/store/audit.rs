//! Audit rows as the store keeps them and `GET /v1/audit` answers them:
//! one row per change a key made (protocol/rest.md, "Audit log").
//!
//! A row holds who (`actor_key_id`, from where: `client_addr`), what
//! (`action`, `target`, `method`, `path`), when and under which request
//! id; never a request body, so no secret can reach it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{KeyId, Timestamp};

/// One recorded change. Newest first in a list; `account_id` stays off the
/// wire (tenancy is implied by the key, as for every record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// `audit-` and 20 letters and digits.
    #[schema(pattern = "^audit-[A-Za-z0-9]+$")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub account_id: String,
    /// `<resource>.<verb>`, e.g. `keys.create`, `agents.update`,
    /// `sessions.delete`, `runs.cancel` (protocol/rest.md lists them).
    #[schema(pattern = r"^[a-z_]+\.[a-z_]+$")]
    pub action: String,
    /// The id of the record the change was made to (for a create, the new
    /// record's), or null when there is none.
    #[schema(required = true)]
    pub target: Option<String>,
    /// The key that made the change.
    pub actor_key_id: KeyId,
    /// The request's `X-Request-Id` (the client's own, or the gateway's).
    pub request_id: String,
    /// The client's IP address: the socket peer, or behind a proxy of
    /// `--trusted-proxies` the right-most untrusted `X-Forwarded-For`
    /// address; null when the gateway could not tell.
    #[schema(required = true)]
    pub client_addr: Option<String>,
    /// The request's method.
    #[schema(pattern = "^(POST|PATCH|PUT|DELETE)$")]
    pub method: String,
    /// The request's path, never its query string.
    pub path: String,
    /// When the gateway answered the request.
    #[schema(value_type = Timestamp)]
    pub created_at: String,
}

/// Narrows [`crate::store::Store::list_audit`]; `None` matches every row.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target: Option<String>,
}

/// The most rows one [`crate::store::Store::prune_audit`] call deletes, so
/// that a prune never holds the writer (SQLite) or a long lock for long.
pub const PRUNE_BATCH: u32 = 5_000;
