//! `/v1/webhooks`: subscriptions to outbound event webhooks, and their
//! deliveries (protocol/webhooks.md). The sending side is
//! [`crate::webhooks`]; this module checks bodies, seals the secret and
//! shows records.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};

use super::{
    audit::AuditTarget,
    auth::Auth,
    errors::{ApiError, ApiJson},
    params::{ListQuery, Paged},
    record,
    webhook_body::{
        check_agent, check_description, check_events, check_url, CreateWebhook, CreatedWebhook,
        Delivery, UpdateWebhook, Webhook,
    },
};
use crate::{
    domain::ErrorCode,
    state::AppState,
    store::{Page, WebhookPatch, WebhookRecord},
    webhooks::{notifier::unix_ms, secret},
};

/// The code of a missing (or another account's) subscription or delivery.
const NOT_FOUND: ErrorCode = ErrorCode::NotFound;

/// Subscribe a URL to events.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, description = "validation_error"),
        (status = 503, description = "unavailable: webhooks need an embedded store")))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, AuditTarget, Json<CreatedWebhook>), ApiError> {
    check_url(&body.url)?;
    check_events(&body.events)?;
    check_description(&body.description)?;
    check_agent(body.agent_id.as_deref())?;
    let Some(key) = &state.webhooks.key else {
        return Err(ApiError::unavailable(
            "webhooks are not available on this process (no server key)",
        ));
    };
    let id = crate::util::new_id("wh");
    let plain = secret::new_secret();
    let now = crate::util::now();
    let hook = WebhookRecord {
        sealed_secret: key.seal(&id, &plain),
        id,
        account_id: auth.account().to_owned(),
        url: body.url,
        events: body.events,
        agent_id: body.agent_id,
        description: body.description,
        created_at: now.clone(),
        updated_at: now,
        status: crate::store::webhooks::ENABLED.to_owned(),
    };
    let hook = state.store.create_webhook(hook).await?;
    let target = AuditTarget(hook.id.clone());
    let created = CreatedWebhook::new(hook, plain);
    Ok((StatusCode::CREATED, target, Json(created)))
}

/// List the account's subscriptions, oldest first (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    params(super::openapi::schemas::PageParams),
    responses((status = 200, body = Page<Webhook>)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
    ListQuery(params): ListQuery,
) -> Result<Paged<Webhook>, ApiError> {
    let page = state.store.list_webhooks(auth.account(), params).await?;
    Ok(Paged(page.map(Webhook::from)))
}

/// Read one subscription (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 404, description = "not_found")))]
pub async fn get_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    let hook = state.store.get_webhook(auth.account(), &id).await;
    record::found(hook.map(Webhook::from), NOT_FOUND)
}

/// Change a subscription's URL, events, agent filter or description.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    request_body = UpdateWebhook,
    responses((status = 200, body = Webhook), (status = 400, description = "validation_error"),
        (status = 404, description = "not_found")))]
pub async fn update_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<Json<Webhook>, ApiError> {
    if let Some(url) = &body.url {
        check_url(url)?;
    }
    if let Some(events) = &body.events {
        check_events(events)?;
    }
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    if let Some(agent) = &body.agent_id {
        check_agent(agent.as_deref())?;
    }
    let patch = WebhookPatch {
        url: body.url,
        events: body.events,
        agent_id: body.agent_id,
        description: body.description,
    };
    let hook = state.store.update_webhook(auth.account(), &id, patch).await;
    record::found(hook.map(Webhook::from), NOT_FOUND)
}

/// Delete a subscription with its deliveries (queued ones are not sent).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "not_found")))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let gone = state.store.delete_webhook(auth.account(), &id).await;
    record::deleted(gone, NOT_FOUND)
}

/// A subscription's deliveries, oldest first, with their attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path), super::openapi::schemas::PageParams),
    responses((status = 200, body = Page<Delivery>), (status = 404, description = "not_found")))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ListQuery(params): ListQuery,
) -> Result<Paged<Delivery>, ApiError> {
    let page = state
        .store
        .list_webhook_deliveries(auth.account(), &id, params)
        .await
        .map_err(|e| ApiError::from_store(e, NOT_FOUND))?;
    Ok(Paged(page.map(Delivery::from)))
}

/// Send a delivery again now (whatever its status), with a fresh retry window.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = Delivery), (status = 404, description = "not_found")))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, AuditTarget, Json<Delivery>), ApiError> {
    let now = unix_ms(time::OffsetDateTime::now_utc());
    let window = state.config.webhooks.retry_window().as_millis();
    let until = now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX));
    let d = state
        .store
        .retry_webhook_delivery(auth.account(), &id, &delivery_id, now, until)
        .await
        .map_err(|e| ApiError::from_store(e, NOT_FOUND))?;
    state.webhooks.wake();
    Ok((
        StatusCode::ACCEPTED,
        AuditTarget(d.id.clone()),
        Json(d.into()),
    ))
}
