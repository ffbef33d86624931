//! `/v1/tools`: tools agents may call (built-in, or webhooks weir POSTs to).

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{
    audit::AuditTarget,
    auth::Auth,
    errors::{ApiError, ApiJson},
    params::{ListQuery, Paged},
    record,
};
use crate::{
    domain::ErrorCode,
    state::AppState,
    store::{NewTool, Page, Tool},
};

/// Body of `POST /v1/tools`. Its schema is written by hand: a builtin or
/// a webhook ([`super::openapi::schemas::create_tool`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTool {
    /// Function name the model calls: 1–64 of `a-z A-Z 0-9 _ -`, unique per account.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments (an object). Default: no arguments.
    pub json_schema: Option<Value>,
    /// `webhook` (default when `url` is given) or `builtin`.
    pub kind: Option<String>,
    /// For webhooks: the http(s) URL the arguments are POSTed to.
    pub url: Option<String>,
    /// Every call waits for a person's approval. Default false.
    pub requires_approval: Option<bool>,
}

impl utoipa::PartialSchema for CreateTool {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::openapi::schemas::create_tool()
    }
}

impl ToSchema for CreateTool {}

fn validate(body: CreateTool) -> Result<NewTool, ApiError> {
    let name_ok = !body.name.is_empty()
        && body.name.len() <= 64
        && body
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(ApiError::validation(
            "name: must be 1 to 64 of a-z, A-Z, 0-9, `_` and `-`",
        ));
    }
    // Characters, not bytes: what a JSON Schema `maxLength` can say.
    if body.description.chars().count() > 4096 {
        return Err(ApiError::validation("description: at most 4096 characters"));
    }
    let json_schema = body
        .json_schema
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !json_schema.is_object() {
        return Err(ApiError::validation("json_schema: must be a JSON object"));
    }
    let kind = body.kind.unwrap_or_else(|| {
        if body.url.is_some() {
            "webhook"
        } else {
            "builtin"
        }
        .to_owned()
    });
    match (kind.as_str(), &body.url) {
        ("webhook", Some(url)) => {
            let parsed =
                reqwest::Url::parse(url).map_err(|e| ApiError::validation(format!("url: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ApiError::validation("url: must be an http or https URL"));
            }
        }
        ("webhook", None) => return Err(ApiError::validation("url: required for a webhook tool")),
        ("builtin", None) => {}
        ("builtin", Some(_)) => {
            return Err(ApiError::validation("url: only webhook tools have a url"))
        }
        (other, _) => {
            return Err(ApiError::validation(format!(
                "kind: must be `builtin` or `webhook`, got `{other}`"
            )))
        }
    }
    Ok(NewTool {
        name: body.name,
        description: body.description,
        json_schema,
        kind,
        url: body.url,
        requires_approval: body.requires_approval.unwrap_or(false),
    })
}

/// Register a tool.
#[utoipa::path(post, path = "/v1/tools", tag = "tools", request_body = CreateTool,
    responses((status = 201, body = Tool), (status = 409, description = "conflict: name taken")))]
pub async fn create_tool(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateTool>,
) -> Result<(StatusCode, AuditTarget, Json<Tool>), ApiError> {
    let tool = state
        .store
        .create_tool(auth.account(), validate(body)?)
        .await?;
    let target = AuditTarget(tool.id.to_string());
    Ok((StatusCode::CREATED, target, Json(public(tool))))
}

/// List the account's tools.
#[utoipa::path(get, path = "/v1/tools", tag = "tools",
    params(super::openapi::schemas::PageParams),
    responses((status = 200, body = Page<Tool>)))]
pub async fn list_tools(
    State(state): State<AppState>,
    auth: Auth,
    ListQuery(params): ListQuery,
) -> Result<Paged<Tool>, ApiError> {
    let page = state.store.list_tools(auth.account(), params).await?;
    Ok(Paged(page.map(public)))
}

/// Read one tool.
#[utoipa::path(get, path = "/v1/tools/{id}", tag = "tools", params(("id" = String, Path)),
    responses((status = 200, body = Tool), (status = 404, description = "tool_not_found")))]
pub async fn get_tool(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Tool>, ApiError> {
    let tool = state.store.get_tool(auth.account(), &id).await;
    record::found(tool.map(public), ErrorCode::ToolNotFound)
}

/// Delete a tool.
#[utoipa::path(delete, path = "/v1/tools/{id}", tag = "tools", params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "tool_not_found")))]
pub async fn delete_tool(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let gone = state.store.delete_tool(auth.account(), &id).await;
    record::deleted(gone, ErrorCode::ToolNotFound)
}

fn public(mut tool: Tool) -> Tool {
    tool.account_id.clear();
    tool
}
