//! `/v1/keys`: mint (the secret is shown once), list, change, rotate, revoke.
//!
//! A key can only mint keys with scopes it holds itself (unless it has `*`),
//! so a `keys`-only key cannot mint its way to `*`, and with limits at most
//! its own ([`super::key_body`]), so it cannot mint its way past them
//! either. A change or a rotation is broadcast on the bus so every
//! gateway's key cache drops the old record.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    audit::AuditTarget,
    auth::Auth,
    errors::{parse_json, ApiError, ApiJson},
    key_body::{self, Grantor},
    params::{ListQuery, Paged},
};
use crate::{
    domain::ErrorCode,
    edge::KeyLimits,
    keys,
    state::AppState,
    store::{KeyRecord, KeyRotation, KeySettings, Page, OPERATOR_SCOPES, SCOPES},
};

pub use super::key_body::{CreateKey, CreateKeyBody, RotateKey, UpdateKey};

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
        s["description"] =
            "201 answer of POST /v1/keys; 200 answer of POST /v1/keys/{id}/rotate.".into();
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
        if caller.is_some() && OPERATOR_SCOPES.contains(&s.as_str()) {
            return Err(ApiError::validation(format!(
                "scopes[{i}]: `{s}` is an operator scope: only `weir keys create` grants it"
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

/// Who grants through `auth`: the operator's bootstrap key is bound by
/// nothing; any other key by its own limits.
fn grantor(state: &AppState, auth: &Auth) -> Grantor {
    let bootstrap = state.config.bootstrap_key.as_deref().map(keys::key_id_of);
    match bootstrap.as_deref() == Some(auth.key.id.as_str()) {
        true => None,
        false => Some(state.edge.limits(&auth.key)),
    }
}

/// Mint a key in the caller's account.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = super::key_body::CreateKeyBody,
    responses((status = 201, body = MintedKey)))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, AuditTarget, Json<MintedKey>), ApiError> {
    check_scopes(&body.scopes, Some(&auth.key))?;
    if body.label.chars().count() > 200 {
        return Err(ApiError::validation("label: at most 200 characters"));
    }
    let expires_at = key_body::expiry(&body, crate::util::unix_now())?;
    let cfg = state.edge.config();
    let resolve = |s: &KeySettings| KeyLimits::of_settings(s, cfg);
    let grantor = grantor(&state, &auth);
    let mut granted = key_body::new_settings(&body, cfg.rpm_per_key, resolve, grantor)?;
    let caller = grantor.is_some().then_some(&*auth.key);
    if granted.models.is_none() {
        // Left out: the caller's own list, so saying nothing grants no more.
        granted.models = caller.and_then(|c| c.models.clone());
    }
    key_body::grant_models(granted.models.as_deref(), caller)?;
    let mut minted = keys::mint(auth.account(), &body.label, body.scopes, granted.rpm, None);
    let k = &mut minted.new_key;
    (k.tpm, k.daily_tokens) = (granted.tpm, granted.daily_tokens);
    (k.max_runs, k.max_websockets) = (granted.max_runs, granted.max_websockets);
    (k.max_sse_streams, k.expires_at) = (granted.max_sse_streams, expires_at);
    k.models = granted.models;
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

/// Change a key's label and limits; it takes effect on every gateway at once.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    request_body = UpdateKey,
    responses((status = 200, body = KeyRecord), (status = 404, description = "key_not_found")))]
pub async fn update_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UpdateKey>,
) -> Result<Json<KeyRecord>, ApiError> {
    let not_found = |e| ApiError::from_store(e, ErrorCode::KeyNotFound);
    let current = state.store.get_key(&id).await.map_err(not_found)?;
    if current.account_id != auth.account() {
        return Err(ApiError::new(ErrorCode::KeyNotFound, "key not found"));
    }
    let cfg = state.edge.config();
    let (settings, named) = key_body::patched(&current, &patch, cfg.rpm_per_key)?;
    if let Some(held) = grantor(&state, &auth) {
        let asked = KeyLimits::of_settings(&settings, cfg);
        key_body::grant(&asked, &held, Some(&named))?;
        if patch.models.is_some() {
            key_body::grant_models(settings.models.as_deref(), Some(&auth.key))?;
        }
    }
    let record = state.store.update_key(auth.account(), &id, settings);
    let record = record.await.map_err(not_found)?;
    key_changed(&state, &id).await;
    tracing::info!(key_id = %id, "key changed");
    Ok(Json(record.public()))
}

/// Give a key a new secret; the current one keeps working for
/// `grace_secs`, then stops, on every gateway.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", params(("id" = String, Path)),
    request_body(content = Option<RotateKey>),
    responses((status = 200, body = MintedKey), (status = 404, description = "key_not_found"),
        (status = 409, description = "conflict: the key is revoked")))]
pub async fn rotate_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<MintedKey>, ApiError> {
    let body: RotateKey = match body.iter().all(u8::is_ascii_whitespace) {
        true => RotateKey::default(),
        false => parse_json(&body)?,
    };
    let (secret, hash) = keys::new_secret_for(&id);
    let prev_until = (body.grace_secs > 0)
        .then(|| crate::util::format_unix(crate::util::unix_now() + body.grace_secs));
    let rotation = KeyRotation { hash, prev_until };
    let rotated = state.store.rotate_key(auth.account(), &id, rotation).await;
    let record = rotated.map_err(|e| ApiError::from_store(e, ErrorCode::KeyNotFound))?;
    key_changed(&state, &id).await;
    tracing::info!(key_id = %id, grace_secs = body.grace_secs, "key rotated");
    Ok(Json(MintedKey {
        key: record.public(),
        secret,
    }))
}

/// Drops the key from this gateway's cache and tells every other gateway
/// to (the store already has the new record; this shortens their caches'
/// TTL to the bus's latency).
async fn key_changed(state: &AppState, id: &str) {
    state.keys.evict(id);
    let msg = crate::bus::Control::KeyChanged { key_id: id.into() };
    if let Err(e) = state.bus.publish_control(msg).await {
        tracing::warn!(key_id = %id, error = %e, "key change not broadcast: other gateways keep the old record until their key cache expires");
    }
}

/// List the account's keys (no secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(super::openapi::schemas::PageParams),
    responses((status = 200, body = Page<KeyRecord>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    ListQuery(params): ListQuery,
) -> Result<Paged<KeyRecord>, ApiError> {
    let page = state.store.list_keys(auth.account(), params).await?;
    Ok(Paged(page.map(KeyRecord::public)))
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
