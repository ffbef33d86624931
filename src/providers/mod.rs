//! Upstream providers and the routes between them (issue 19).
//!
//! - [`config`]: the `[[providers]]` and `[[routes]]` of the config file,
//!   checked at start-up; secrets never reach `Debug` or logs.
//! - [`lean`]: the relay's own HTTP/1 client for `http://` providers,
//!   driven by the request's task, with a pool per serving loop.
//! - [`provider`]: one provider (base URL, key, timeouts, [`breaker::Health`]);
//!   the `--provider-url` flags make the one named `default`.
//! - [`route`]: a model name's ordered, weighted targets.
//! - [`registry`]: every provider and route; model name → route.
//! - [`attempt`]: tries a route's targets until one sends its first byte
//!   (retries, fallback, `Retry-After`, first-token timeouts, deadline).
//! - [`breaker`]: per-provider circuit breaking and recent health.
//! - [`anthropic`]: `kind = "anthropic"`: the Anthropic Messages API
//!   translated to and from OpenAI's shapes, and read as OpenAI at the
//!   attempt ([`anthropic::relay`]).
//! - [`splice`]: after the first byte, a route's `mid_stream` policy:
//!   an error line, or continuing on the next target as one completion.
//! - [`sse`]: whole SSE events out of a byte stream cut anywhere.
//! - [`event`]: one read of a relayed chunk's JSON, shared by the splice
//!   and the token metering; [`scan`], its fast path.
//!
//! Below the HTTP layer: the relay and agent runs use it; it returns its
//! own [`attempt::Failure`]s and never imports `crate::http`.

pub mod anthropic;
pub mod attempt;
pub mod breaker;
pub mod config;
pub mod event;
pub mod lean;
pub mod provider;
pub mod registry;
pub mod route;
pub mod scan;
pub mod splice;
pub mod sse;

pub use config::{MidStream, ProvidersConfig, ProvidersError};
pub use provider::{error_message, Provider};
pub use registry::{check, Registry};
pub use route::{Route, Target};
