//! HTTP routes of the agent runtime: sending messages (SSE or JSON), history,
//! run status and cancellation, and log pages. Every error goes through
//! [`crate::http::errors::ApiError`]; [`crate::agent::RunError`] maps to it in
//! one place (`From`). They are mounted by the route table
//! ([`crate::http::routes`]).

pub(crate) mod messages;
pub(crate) mod runs;

use crate::store::{ListParams, Page, Pagination};

fn empty_page<T>(params: &ListParams) -> Page<T> {
    Page {
        data: Vec::new(),
        pagination: Pagination {
            total: 0,
            limit: params.limit,
            offset: params.offset,
            next_cursor: None,
        },
    }
}
