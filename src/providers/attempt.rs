//! Attempts before the first byte: a route's targets are tried in plan
//! order until one answers 2xx and sends its first body bytes.
//!
//! Connect errors, 5xx, provider auth failures (401, 403), 429 and a first
//! byte later than the target's first-token timeout move on to the next
//! target, within the route's attempts and overall deadline; a 429's
//! `Retry-After` keeps its provider out of plans for that long. Other 4xx
//! are the caller's mistake, which no other target would answer
//! differently: they end the attempts and go back as they are. A provider
//! whose circuit is open, or that is cooling down after a 429, is skipped.

use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

use super::{
    anthropic,
    config::Kind,
    provider::{error_message, BodyStream},
    route::Route,
    route::Target,
};
use crate::{
    metrics::{provider_attempt, upstream_error, Upstream},
    providers::anthropic::TranslateError,
};

/// A target that answered and sent its first bytes.
pub struct Opened {
    pub target: Target,
    /// Its index in the route.
    pub index: usize,
    pub content_type: Option<reqwest::header::HeaderValue>,
    pub first: Bytes,
    pub rest: BodyStream,
}

/// Why a request got no stream.
#[derive(Debug)]
pub enum Failed {
    /// A client error (4xx but 429, 401, 403) from `target`, passed on.
    Answer(Target, reqwest::Response),
    /// Every attempt failed (or none could be made): the last failure.
    Exhausted(Failure),
    /// The request cannot be put in a target's shape (an Anthropic target
    /// and a field it cannot take): the caller's 400 about `param`.
    Invalid { param: String, message: String },
}

/// One attempt's failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Connect(String),
    /// No first byte within the target's first-token timeout (or the
    /// route's deadline).
    Timeout,
    Status {
        status: u16,
        message: String,
    },
    /// 429; `retry_after` as the provider said.
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    Broken(String),
    /// Every target was skipped (open circuit or a 429's cool-down); the
    /// soonest one is back after `retry_after`.
    NoTarget {
        retry_after: Option<Duration>,
    },
}

impl Failure {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout => "timeout",
            Failure::Status { .. } => "status",
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Broken(_) => "broken",
            Failure::NoTarget { .. } => "skipped",
        }
    }
}

/// Tries `plan` (indexes into `route.targets`) with `body`, whose `model`
/// is set to each target's, until `deadline`.
pub async fn open(
    route: &Route,
    plan: &[usize],
    body: &mut Value,
    caller: Upstream,
    deadline: Instant,
) -> Result<Opened, Failed> {
    let mut last = None;
    for &index in plan {
        let target = &route.targets[index];
        let provider = &target.provider;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if !provider.health.admit(now.into_std()) {
            tracing::debug!(route = %route.name, provider = %provider.name, "provider skipped (circuit open or cooling down)");
            continue;
        }
        body["model"] = Value::from(target.model.as_str());
        let bytes = match provider.kind {
            Kind::Openai => serde_json::to_vec(body).unwrap_or_default(),
            Kind::Anthropic => match anthropic::relay::request(body) {
                Ok(b) => b,
                Err(TranslateError::Invalid { param, message }) => {
                    return Err(Failed::Invalid { param, message })
                }
                Err(e) => return Err(Failed::Exhausted(Failure::Broken(e.to_string()))),
            },
        };
        let until = deadline.min(now + provider.first_token_timeout);
        let streamed = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        match one(target, bytes, streamed, caller, until).await {
            Ok((content_type, first, rest)) => {
                provider.health.success(now.elapsed());
                provider.metrics.attempt_ok(&provider.name);
                return Ok(Opened {
                    target: target.clone(),
                    index,
                    content_type,
                    first,
                    rest,
                });
            }
            Err(Err(resp)) => return Err(Failed::Answer(target.clone(), resp)),
            Err(Ok(failure)) => {
                let took = now.elapsed();
                let at = StdInstant::now();
                if let Failure::RateLimited { retry_after, .. } = &failure {
                    provider.health.rate_limited(at, *retry_after, took);
                } else if provider.health.failure(at, took) {
                    tracing::warn!(provider = %provider.name, "circuit opened");
                }
                upstream_error(caller, &provider.name, failure.kind());
                provider_attempt(
                    &provider.name,
                    failure.kind(),
                    provider.health.circuit(at).gauge(),
                );
                tracing::warn!(route = %route.name, provider = %provider.name, model = %target.model,
                    failure = ?failure, "attempt failed; trying the next target");
                last = Some(failure);
            }
        }
    }
    Err(Failed::Exhausted(last.unwrap_or_else(|| {
        Failure::NoTarget {
            retry_after: soonest_back(route),
        }
    })))
}

type Head = (Option<reqwest::header::HeaderValue>, Bytes, BodyStream);

/// One attempt: `Ok` with the first bytes; `Err(Ok(failure))` to move on;
/// `Err(Err(resp))` for an answer to pass on.
async fn one(
    target: &Target,
    body: Vec<u8>,
    streamed: bool,
    caller: Upstream,
    until: Instant,
) -> Result<Head, Result<Failure, reqwest::Response>> {
    let provider = &target.provider;
    let sent = Instant::now();
    let resp = match timeout_at(until, provider.send_chat(body)).await {
        Err(_) => return Err(Ok(Failure::Timeout)),
        Ok(Err(e)) => return Err(Ok(Failure::Connect(e))),
        Ok(Ok(r)) => r,
    };
    let since = sent.into_std();
    provider.metrics.answered(&provider.name, caller, since);
    let status = resp.status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = retry_after(&resp.headers);
        let message = timeout_at(until, error_message(resp.into_reqwest()))
            .await
            .unwrap_or_default();
        return Err(Ok(Failure::RateLimited {
            message,
            retry_after,
        }));
    }
    let retryable = status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN;
    if retryable {
        let message = timeout_at(until, error_message(resp.into_reqwest()))
            .await
            .unwrap_or_default();
        return Err(Ok(Failure::Status {
            status: status.as_u16(),
            message,
        }));
    }
    if !status.is_success() {
        return Err(Err(resp.into_reqwest()));
    }
    let content_type = resp.headers.get(reqwest::header::CONTENT_TYPE).cloned();
    let mut rest = resp.body;
    if provider.kind == Kind::Anthropic {
        let ids = anthropic::relay::Ids::new(&target.model);
        rest = match streamed {
            true => anthropic::relay::stream(rest, ids),
            false => anthropic::relay::whole(rest, ids),
        };
    }
    match timeout_at(until, rest.next()).await {
        Err(_) => Err(Ok(Failure::Timeout)),
        Ok(None) => Err(Ok(Failure::Broken(
            "the provider sent an empty body".into(),
        ))),
        Ok(Some(Err(e))) => Err(Ok(Failure::Broken(e.to_string()))),
        Ok(Some(Ok(first))) => Ok((content_type, first, rest)),
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// When the first skipped target of `route` takes requests again.
fn soonest_back(route: &Route) -> Option<Duration> {
    let now = StdInstant::now();
    route
        .targets
        .iter()
        .filter_map(|t| {
            let v = t.provider.health.view(now);
            v.retry_after_secs.or(v.open_for_secs)
        })
        .min()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(100);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(90) && d <= Duration::from_secs(100),
            "{d:?}"
        );
    }
}
