//! OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`.
//!
//! `model` is either an agent id (the agent answers; its history lives in the
//! session named by `user`, made on first use, or in the agent's default
//! session, so only the last user message of `messages` is new input) or
//! `upstream/<model>` or a route's name (a relay to the route's providers,
//! [`relay`]: its stream is forwarded chunk by chunk as it arrives). Every error on
//! these routes is OpenAI-shaped ([`error`]).
//!
//! This module is HTTP through and through, beside [`crate::http`] rather
//! than below it: it is the handlers of two routes (mounted by the route
//! table) and their own error shape, built from the gateway's
//! ([`crate::http::errors::ApiError`] converts into [`OpenAiError`]). So it
//! uses `http` (auth, errors) as any handler there does; nothing below the
//! HTTP layer imports it.

pub mod agent;
pub mod error;
mod metered;
pub mod models;
pub mod relay;
pub mod schema;

use axum::{extract::State, response::Response, Extension};
use serde_json::Value;

pub use error::{OpenAiError, OpenAiJson};

use crate::{
    edge::StreamKind,
    http::{
        auth::Auth,
        errors::ApiError,
        limits::{self, Metered},
    },
    state::AppState,
};

/// OpenAI-compatible chat completion: `model` is an agent id or
/// `upstream/<model>`. Dispatches on it: `upstream/…` is relayed, anything
/// else is an agent.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = agent::CompletionRequest, description = "OpenAI chat completion request; other OpenAI fields are accepted and ignored (for an agent) or passed on (upstream)"),
    responses((status = 200, description = "A chat.completion, or (`stream`) chat.completion.chunk SSE ending with `data: [DONE]`",
            content((schema::Completion = "application/json"), (crate::http::openapi::schemas::SseEvent = "text/event-stream"))),
        (status = 404, description = "model_not_found: no such agent, no provider for `upstream/…`, or a model the key may not use (its `models`)"),
        (status = 429, description = "rate_limit_exceeded; too_many_connections for a stream; too_many_runs (an agent): the key has its limit of runs going"),
        (status = 409, description = "agent_stopped; conflict: the agent's upstream model has no provider here"),
        (status = 502, description = "the run or the provider failed"),
        (status = 503, description = "the run was cancelled, the gateway is draining, or (a relay) it holds its limit of relays in flight (`Retry-After`)"),
        (status = 504, description = "the provider did not answer in time")))]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    auth: Auth,
    Extension(metered): Extension<Metered>,
    OpenAiJson(body): OpenAiJson<Value>,
) -> Result<Response, OpenAiError> {
    auth.require("chat")?;
    if !body.is_object() {
        return Err(OpenAiError::invalid(
            "the body must be a JSON object",
            "body",
        ));
    }
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(OpenAiError::invalid(
                "`model` must be a non-empty string",
                "model",
            ))
        }
        None => {
            return Err(OpenAiError::invalid(
                "you must provide a model parameter",
                "model",
            ))
        }
    };
    // An agent's completion is a run start (the key's rate and a `max_runs`
    // slot); a relay (`upstream/…` or a route's name) is a plain request,
    // on a model the key may use (an agent's model is checked when its run
    // starts).
    let providers = state.runtime.providers();
    let relay = model.starts_with("upstream/") || providers.is_alias(&model);
    if model == "upstream/" {
        return Err(OpenAiError::invalid(
            "`model` must name a provider model after `upstream/`",
            "model",
        ));
    }
    if relay && !auth.key.allows_model(&model) {
        return Err(OpenAiError::model_not_found(&model));
    }
    let route = match relay {
        true => Some(
            providers
                .resolve(&model)
                .ok_or_else(|| OpenAiError::model_not_found(&model))?,
        ),
        false => None,
    };
    // Past this process's bound of relays in flight, refused at once
    // rather than queued (edge::shed); held until the answer's body ends.
    let permit = match relay {
        true => Some(state.edge.relays.admit().map_err(|e| {
            OpenAiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                Some(crate::domain::ErrorCode::Unavailable),
            )
            .retry_after(Some(crate::edge::shed::RETRY_AFTER))
        })?),
        false => None,
    };
    let (run_slot, meter) = match relay {
        true => {
            limits::check_rate(&state, &auth, &metered).await?;
            (
                None,
                Some(limits::relay_meter(&state, &auth, &model).await?),
            )
        }
        false => (
            Some(limits::start_run(&state, &auth, &metered).await?),
            None,
        ),
    };
    // A stream takes the key's SSE slot before anything starts (429
    // `too_many_connections` otherwise) and holds it until the body ends.
    let slot = match body.get("stream").and_then(Value::as_bool) {
        Some(true) => Some(
            state
                .edge
                .open_stream(&auth.key, StreamKind::Sse)
                .await
                .map_err(ApiError::from)?,
        ),
        _ => None,
    };
    if let (Some(meter), Some(route)) = (meter, route) {
        return relay::relay(&state, body, meter, route)
            .await
            .map(|r| crate::edge::shed::hold(crate::edge::hold_response(r, slot), permit));
    }
    let req = serde_path_to_error::deserialize(&body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let param = if path == "." {
            error::field_of(&inner).unwrap_or_default()
        } else {
            path.clone()
        };
        OpenAiError::invalid(
            if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            },
            &param,
        )
    })?;
    agent::complete(
        &state,
        auth.account(),
        auth.key.models.clone(),
        req,
        run_slot,
    )
    .await
    .map(|r| crate::edge::hold_response(r, slot))
}
