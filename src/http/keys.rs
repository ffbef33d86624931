//! `/v1/keys`: mint (the secret is shown once), list, revoke.
//!
//! A key can only mint keys with scopes it holds itself (unless it has `*`),
//! so a `keys`-only key cannot mint its way to `*`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    audit::AuditTarget,
    auth::Auth,
    errors::{ApiError, ApiJson},
    params::ListQuery,
};
use crate::{
    domain::ErrorCode,
    keys,
    state::AppState,
    store::{KeyRecord, Page, SCOPES},
};

/// Default requests per minute of a new key.
pub const DEFAULT_RPM: u32 = 120;

/// Body of `POST /v1/keys`. Unknown fields are refused (400). Every scope
/// must be held by the calling key (`*` only by a `*` key), else 403
/// forbidden.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Scopes to grant (a subset of the caller's, else 403).
    #[schema(schema_with = super::openapi::schemas::scopes)]
    pub scopes: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 200, default = "")]
    pub label: String,
    /// Requests per minute (default 120).
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "integral")]
    pub rpm: Option<u32>,
}

/// A JSON integer, also when written with a zero fraction (`1503.0`): JSON
/// Schema's `integer` (what the document says) is a number without a
/// fractional part, however it is spelled.
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "invalid value: {n}, expected an integer from 0 to {}",
                u32::MAX
            ))
        })
}

/// A minted key: the record plus the secret, which is never shown again.
#[derive(Debug, Serialize)]
pub struct MintedKey {
    #[serde(flatten)]
    pub key: KeyRecord,
    pub secret: String,
}

/// [`KeyRecord`]'s schema with `secret`, and the times a new key cannot
/// have yet: a flattened record is one object, which utoipa's derive would
/// spell as `allOf` of two closed ones that no object can match.
impl utoipa::PartialSchema for MintedKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut s = serde_json::to_value(<KeyRecord as utoipa::PartialSchema>::schema())
            .expect("a schema is JSON");
        crate::domain::schema::lift(&mut s);
        s["description"] = "201 answer of POST /v1/keys.".into();
        s["required"]
            .as_array_mut()
            .expect("required")
            .push("secret".into());
        let props = s["properties"].as_object_mut().expect("properties");
        props.insert("secret".into(), serde_json::json!({
            "description": "`wk_<id>_<32 letters and digits>`, where `key-<id>` is the key's id. Shown once; only its SHA-256 is stored.",
            "type": "string",
            "pattern": "^wk_[A-Za-z0-9]{1,64}_[A-Za-z0-9]+$",
        }));
        props.insert("last_used_at".into(), serde_json::json!({"type": "null"}));
        props.insert("revoked_at".into(), serde_json::json!({"type": "null"}));
        crate::domain::schema::schema_json(s)
    }
}

impl ToSchema for MintedKey {
    fn schemas(
        out: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        KeyRecord::schemas(out);
    }
}

/// Checks requested scopes: known, non-empty, and held by the caller.
pub fn check_scopes(requested: &[String], caller: Option<&KeyRecord>) -> Result<(), ApiError> {
    if requested.is_empty() {
        return Err(ApiError::validation(
            "scopes: at least one scope is required",
        ));
    }
    for (i, s) in requested.iter().enumerate() {
        if !SCOPES.contains(&s.as_str()) {
            return Err(ApiError::validation(format!(
                "scopes[{i}]: unknown scope `{s}` (known: {})",
                SCOPES.join(", ")
            )));
        }
        if let Some(caller) = caller {
            let held = if s == "*" {
                caller.scopes.iter().any(|c| c == "*")
            } else {
                caller.has_scope(s)
            };
            if !held {
                return Err(ApiError::forbidden(s));
            }
        }
    }
    Ok(())
}

/// Mint a key in the caller's account.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = MintedKey)))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, AuditTarget, Json<MintedKey>), ApiError> {
    check_scopes(&body.scopes, Some(&auth.key))?;
    let rpm = body.rpm.unwrap_or(DEFAULT_RPM);
    if rpm == 0 || rpm > 1_000_000 {
        return Err(ApiError::validation("rpm: must be from 1 to 1000000"));
    }
    if body.label.chars().count() > 200 {
        return Err(ApiError::validation("label: at most 200 characters"));
    }
    let minted = keys::mint(auth.account(), &body.label, body.scopes, rpm, None);
    let record = state.store.create_key(minted.new_key).await?;
    tracing::info!(key_id = %record.id, "key minted");
    Ok((
        StatusCode::CREATED,
        // The id, never the secret: the audit row names the new key only.
        AuditTarget(record.id.to_string()),
        Json(MintedKey {
            key: record.public(),
            secret: minted.secret,
        }),
    ))
}

/// List the account's keys (no secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(super::openapi::schemas::PageParams),
    responses((status = 200, body = Page<KeyRecord>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    ListQuery(params): ListQuery,
) -> Result<Json<Page<KeyRecord>>, ApiError> {
    let page = state.store.list_keys(auth.account(), params).await?;
    Ok(Json(page.map(KeyRecord::public)))
}

/// Revoke a key; it is refused from the next request on.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "key_not_found")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let revoked = state.store.revoke_key(auth.account(), &id).await;
    revoked.map_err(|e| ApiError::from_store(e, ErrorCode::KeyNotFound))?;
    state.keys.evict(&id);
    // Every other gateway evicts it too (the store already refuses it; this
    // only shortens their key caches' TTL to the bus's latency).
    let revoked = crate::bus::Control::KeyRevoked {
        key_id: id.as_str().into(),
    };
    if let Err(e) = state.bus.publish_control(revoked).await {
        tracing::warn!(key_id = %id, error = %e, "revocation not broadcast: other gateways may accept the key until their key cache expires");
    }
    tracing::info!(key_id = %id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}
