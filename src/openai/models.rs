//! `GET /v1/models`: the account's agents (each usable as `model`), the
//! configured routes by name (`owned_by: "weir"`), plus the `default`
//! provider's models as `upstream/<id>` when `--provider-url` is set and it
//! answers within a few seconds (if it does not, the list still answers,
//! without them). A key limited to some models (its `models`) sees only
//! what it may use: the upstream models on its list and the agents whose
//! model is.

use std::time::Duration;

use axum::{extract::State, Json};
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::OpenAiError;
use crate::{http::auth::Auth, state::AppState, store::ListParams};

/// How long the provider's model list may take.
const PROVIDER_LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most agents listed (pages of 1000).
const MAX_PAGES: usize = 10;

/// OpenAI-compatible model list: the account's agents (and upstream models).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "OpenAI list of models", body = super::schema::ModelList)))]
pub(crate) async fn list_models(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Value>, OpenAiError> {
    auth.require("chat")?;
    let account = auth.account();
    let mut data = Vec::new();
    let mut params = ListParams {
        limit: 1000,
        offset: 0,
        after: None,
        ..Default::default()
    };
    for _ in 0..MAX_PAGES {
        let page = state
            .store
            .list_agents(account, Default::default(), params.clone())
            .await
            .map_err(crate::http::errors::ApiError::from)?;
        for a in page.data.iter().filter(|a| auth.key.allows_model(&a.model)) {
            data.push(json!({"id": a.id, "object": "model", "created": unix(&a.created_at), "owned_by": account}));
        }
        match page.pagination.next_cursor {
            Some(c) if !page.data.is_empty() => params.after = Some(c),
            _ => break,
        }
    }
    let allowed = |m: &Value| auth.key.allows_model(m["id"].as_str().unwrap_or_default());
    for name in state.runtime.providers().route_names() {
        let route = json!({"id": name, "object": "model", "created": 0, "owned_by": "weir"});
        if allowed(&route) {
            data.push(route);
        }
    }
    data.extend(upstream_models(&state).await.into_iter().filter(allowed));
    Ok(Json(json!({"object": "list", "data": data})))
}

fn unix(rfc3339: &str) -> i64 {
    OffsetDateTime::parse(rfc3339, &Rfc3339).map_or(0, |t| t.unix_timestamp())
}

async fn upstream_models(state: &AppState) -> Vec<Value> {
    let Some(provider) = state.runtime.providers().default_provider() else {
        return Vec::new();
    };
    let fetch = async {
        let resp = provider.models_request().send().await?.error_for_status()?;
        resp.json::<Value>().await
    };
    let list = match tokio::time::timeout(PROVIDER_LIST_TIMEOUT, fetch).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e.without_url(), "provider model list failed");
            return Vec::new();
        }
        Err(_) => {
            tracing::warn!("provider model list timed out");
            return Vec::new();
        }
    };
    list.get("data")
        .and_then(Value::as_array)
        .map(|models| {
            models
                .iter()
                .filter_map(|m| {
                    let id = m.get("id")?.as_str()?;
                    Some(json!({
                        "id": format!("upstream/{id}"),
                        "object": "model",
                        "created": m.get("created").and_then(Value::as_i64).unwrap_or(0),
                        "owned_by": m.get("owned_by").and_then(Value::as_str).unwrap_or("upstream"),
                    }))
                })
                .collect()
        })
        .unwrap_or_default()
}
