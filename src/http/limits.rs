//! The edge's limits as HTTP: the rate-limit step (right after auth), the
//! run-start check of the routes that start runs, the head-size check, and
//! the edge's refusals as [`ApiError`]s. The edge ([`crate::edge`])
//! decides; this module answers. The steps are plain functions, called by
//! weir's two middlewares ([`super::layers`]: the head size by `front`,
//! the rate by `guard`).
//!
//! On a route that starts runs ([`super::route::Route::starts_runs`]) the
//! rate step does not check the rate itself: the handler checks the run
//! start ([`start_run`]: rate and `max_runs` slot in one Redis call) once it
//! knows the request starts one, or the plain rate ([`check_rate`]) when it
//! does not (an OpenAI relay), and leaves the decision in [`Metered`] for
//! the rate step to put in the headers. A request refused before the
//! handler got that far (a malformed body) is counted after the fact.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{auth::Auth, errors::ApiError};
use crate::{
    domain::ErrorCode,
    edge::{limits::HeadTooLarge, CapError, Decision, RunRefusal, RunSlot, TokenMeter},
    state::AppState,
    usage::UsageKey,
};

/// Where the handler of a route that starts runs leaves its rate decision
/// (a request extension the rate step sets; see the module doc).
#[derive(Clone, Default)]
pub struct Metered(Arc<OnceLock<Option<Decision>>>);

impl Metered {
    /// Whether the handler checked the request.
    fn checked(&self) -> bool {
        self.0.get().is_some()
    }

    fn decision(&self) -> Option<Decision> {
        self.0.get().copied().flatten()
    }

    fn set(&self, d: Option<Decision>) {
        let _ = self.0.set(d);
    }
}

/// The run-start check of the request (module doc): one request against
/// its key's rpm and one of its `max_runs` slots. The slot is the caller's
/// to hand to the run ([`crate::agent::StartRun::slot`]).
pub async fn start_run(
    state: &AppState,
    auth: &Auth,
    metered: &Metered,
) -> Result<RunSlot, ApiError> {
    let account = state
        .keys
        .account_limits(state.store.as_ref(), auth.account())
        .await;
    match state.edge.start_run(&auth.key, account).await {
        Ok((slot, rate)) => {
            metered.set(rate);
            Ok(slot)
        }
        Err(e) => {
            if let RunRefusal::Rate(d) = &e {
                metered.set(Some(*d));
            } else {
                metered.set(None);
            }
            Err(e.into())
        }
    }
}

/// The token meter of an OpenAI relay to `model`: the key's and account's
/// budgets, checked now (429 `token_budget_exceeded` when spent), and the
/// usage record.
pub async fn relay_meter(
    state: &AppState,
    auth: &Auth,
    model: &str,
) -> Result<TokenMeter, ApiError> {
    let account = (state.keys)
        .account_limits(state.store.as_ref(), auth.account())
        .await;
    let budgets = (state.edge)
        .check_tokens(&auth.key, account)
        .map_err(RunRefusal::Budget)?;
    let key = UsageKey {
        account: auth.account().into(),
        key_id: auth.key.id.as_str().into(),
        day: crate::usage::today(),
        model: model.into(),
        agent_id: "".into(),
        provider: "upstream".into(),
    };
    Ok(TokenMeter::new(budgets, Some((state.usage.clone(), key))))
}

/// Puts the `X-RateLimit-*-Tokens` headers on a response to `auth`'s key
/// when a token budget (its own or its account's) applies.
async fn token_headers(state: &AppState, auth: &Auth, resp: &mut Response) {
    let account = (state.keys)
        .account_limits(state.store.as_ref(), auth.account())
        .await;
    if let Some(room) = state.edge.token_room(&auth.key, account) {
        room.write_headers(resp.headers_mut());
    }
}

/// The plain rate check, for a request of a run-start route that starts no
/// run (an OpenAI relay).
pub async fn check_rate(state: &AppState, auth: &Auth, metered: &Metered) -> Result<(), ApiError> {
    let decision = state.edge.check_rate(&auth.key).await;
    metered.set(decision);
    match decision {
        Some(d) if !d.allowed => Err(RunRefusal::Rate(d).into()),
        _ => Ok(()),
    }
}

/// The rate step of the routes that start runs (module doc), after auth
/// ([`super::layers::guard`]): the handler checks; this writes the headers,
/// and counts a request the handler refused before its check. Every request
/// counts in the key's usage.
pub async fn run_start_rate(
    state: &AppState,
    auth: Auth,
    mut req: Request,
    next: Next,
) -> Response {
    state
        .usage
        .count_request(auth.account(), auth.key.id.as_str());
    let metered = Metered::default();
    req.extensions_mut().insert(metered.clone());
    let resp = next.run(req).await;
    let decision = match metered.checked() {
        true => metered.decision(),
        false => state.edge.check_rate(&auth.key).await,
    };
    with_headers(state, &auth, decision, resp).await
}

/// The rate step of every other authenticated route, right after auth
/// ([`super::layers::guard`]): counts the request against its key (its
/// rate and its usage, refused or not), refuses it with 429
/// `rate_limit_exceeded` (and `Retry-After`) when over, and puts the
/// `X-RateLimit-*` headers on every authenticated response.
pub async fn rate_limit(state: &AppState, auth: Auth, req: Request, next: Next) -> Response {
    state
        .usage
        .count_request(auth.account(), auth.key.id.as_str());
    let decision = state.edge.check_rate(&auth.key).await;
    let resp = match decision {
        Some(d) if !d.allowed => {
            let secs = d.retry_after_secs();
            ApiError::new(
                ErrorCode::RateLimitExceeded,
                format!(
                    "this key is limited to {} requests per minute; retry after {secs} s",
                    d.limit
                ),
            )
            .with_retry_after(secs)
            .into_response()
        }
        _ => next.run(req).await,
    };
    with_headers(state, &auth, decision, resp).await
}

/// `resp` with the key's `X-RateLimit-*` headers: its rate `decision`'s,
/// when it has one, and its token budgets'.
async fn with_headers(
    state: &AppState,
    auth: &Auth,
    decision: Option<Decision>,
    mut resp: Response,
) -> Response {
    if let Some(d) = decision {
        d.write_headers(resp.headers_mut());
    }
    token_headers(state, auth, &mut resp).await;
    resp
}

/// 431 `headers_too_large` when the request line and headers together
/// exceed `max` bytes ([`crate::edge::limits::check_head`]); checked first
/// by [`super::layers::front`].
pub fn check_headers(req: &Request, max: usize) -> Result<(), ApiError> {
    Ok(crate::edge::limits::check_head(
        req.uri(),
        req.headers(),
        max,
    )?)
}

impl From<CapError> for ApiError {
    fn from(e: CapError) -> Self {
        let err = ApiError::new(e.code(), e.to_string());
        match e.retry_after() {
            Some(secs) => err.with_retry_after(secs),
            None => err,
        }
    }
}

impl From<RunRefusal> for ApiError {
    fn from(e: RunRefusal) -> Self {
        let err = ApiError::new(e.code(), e.to_string());
        match e.retry_after() {
            Some(secs) => err.with_retry_after(secs),
            None => err,
        }
    }
}

impl From<HeadTooLarge> for ApiError {
    fn from(e: HeadTooLarge) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}
