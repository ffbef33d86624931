//! How the REST resource routes answer for one record, so every route maps
//! a missing record the same way: `404` with the resource's own code
//! (`agent_not_found`, `tool_not_found`, …), never a generic one.

use axum::{http::StatusCode, Json};

use super::errors::ApiError;
use crate::{domain::ErrorCode, store::StoreResult};

/// The record as JSON, or `not_found_code` (404) when the store has no such
/// record in the caller's account.
pub fn found<T>(result: StoreResult<T>, not_found_code: ErrorCode) -> Result<Json<T>, ApiError> {
    result
        .map(Json)
        .map_err(|e| ApiError::from_store(e, not_found_code))
}

/// `204 No Content` once the record is gone, or `not_found_code` (404) when
/// there was no such record in the caller's account.
pub fn deleted(result: StoreResult<()>, not_found_code: ErrorCode) -> Result<StatusCode, ApiError> {
    result
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| ApiError::from_store(e, not_found_code))
}
