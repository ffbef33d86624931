//! `upstream/<model>`: a route of OpenAI-compatible providers
//! ([`crate::providers`]), always called with `stream: true` and
//! `stream_options.include_usage`, read with eventsource-stream.
//!
//! Before the first byte the route's targets are tried in turn
//! ([`attempt::open`]: retries, fallback, per-target first-token timeout);
//! the target that answered is named first ([`ModelEvent::Served`]); after it, the stream may not stay silent for more than the serving
//! provider's `idle_timeout_secs`, and a failure is the step's (a run does
//! not splice two providers' answers into one step). An
//! upstream status >= 400, a transport error, an unparseable chunk or a
//! stream that ends before it finished becomes a [`ModelError`], which the
//! run turns into an `error` event and `done` with stop_reason `error`.

use std::sync::Arc;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};

use super::{
    assemble::{Assembler, Chunk},
    ModelError, ModelEvent, ModelRequest, ModelStream,
};
use crate::{
    metrics::{upstream_error, Upstream},
    providers::{
        attempt::{self, Failed, Failure},
        error_message, Route,
    },
};

/// A model behind a route (one or more provider targets).
#[derive(Debug, Clone)]
pub struct UpstreamModel {
    route: Arc<Route>,
}

impl UpstreamModel {
    pub fn new(route: Arc<Route>) -> Self {
        Self { route }
    }

    fn body(req: &ModelRequest) -> Value {
        let mut body = json!({
            "model": "",
            "messages": req.turns.iter().map(|t| t.to_openai()).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !req.tools.is_empty() {
            body["tools"] = req.tools.iter().map(|t| t.to_openai()).collect();
        }
        body
    }

    pub fn step(&self, req: ModelRequest) -> ModelStream {
        let route = self.route.clone();
        let mut body = Self::body(&req);
        Box::pin(async_stream::stream! {
            let deadline = Instant::now() + route.deadline;
            let opened = match attempt::open(&route, &route.plan(), &mut body, Upstream::Agent, deadline).await {
                Ok(o) => o,
                Err(failed) => { yield Err(model_error(&route, failed).await); return; }
            };
            let provider = opened.target.provider.clone();
            yield Ok(ModelEvent::Served(provider.name.clone()));
            let idle = provider.idle_timeout;
            let first = futures::stream::once(std::future::ready(Ok(opened.first)));
            let mut events = first.chain(opened.rest).eventsource();
            let mut asm = Assembler::default();
            let mut saw_done = false;
            loop {
                let event = match timeout(idle, events.next()).await {
                    Err(_) => { upstream_error(Upstream::Agent, &provider.name, "timeout"); yield Err(ModelError::IdleTimeout(idle.as_secs())); return; }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => { upstream_error(Upstream::Agent, &provider.name, "broken"); yield Err(ModelError::Broken(e.to_string())); return; }
                    Ok(Some(Ok(event))) => event,
                };
                if event.data.trim() == "[DONE]" {
                    saw_done = true;
                    break;
                }
                let chunk: Chunk = match serde_json::from_str(&event.data) {
                    Ok(c) => c,
                    Err(e) => { yield Err(ModelError::Broken(format!("unparseable chunk: {e}"))); return; }
                };
                if let Some(err) = &chunk.error {
                    let message = err.get("message").and_then(Value::as_str).unwrap_or("provider error");
                    yield Err(ModelError::Broken(message.to_owned()));
                    return;
                }
                if let Some(delta) = asm.apply(chunk) {
                    yield Ok(ModelEvent::Delta(delta));
                }
            }
            if !saw_done && !asm.finished() {
                upstream_error(Upstream::Agent, &provider.name, "broken");
                yield Err(ModelError::Broken("the stream ended before the completion finished".into()));
                return;
            }
            yield Ok(ModelEvent::Done(asm.finish()));
        })
    }
}

/// What a run is told when no target of `route` gave a stream.
async fn model_error(route: &Route, failed: Failed) -> ModelError {
    let failure = match failed {
        Failed::Answer(_, resp) => {
            let status = resp.status().as_u16();
            let message = error_message(resp).await;
            return ModelError::Status { status, message };
        }
        Failed::Exhausted(f) => f,
        Failed::Invalid { message, .. } => {
            return ModelError::Status {
                status: 400,
                message,
            }
        }
    };
    match failure {
        Failure::Connect(m) => ModelError::Connect(m),
        Failure::Timeout => ModelError::FirstTokenTimeout(
            route
                .targets
                .first()
                .map_or(0, |t| t.provider.first_token_timeout.as_secs()),
        ),
        Failure::Status { status, message } => ModelError::Status { status, message },
        Failure::RateLimited { message, .. } => ModelError::Status {
            status: 429,
            message,
        },
        Failure::Broken(m) => ModelError::Broken(m),
        Failure::NoTarget { .. } => ModelError::Connect(format!(
            "every provider of `{}` is cooling down or its circuit is open",
            route.name
        )),
    }
}
