//! # weir
//!
//! A streaming chat and agent gateway: it holds chat sessions, live log tails
//! and agent events as SSE and WebSocket streams, answers OpenAI-compatible
//! `/v1/chat/completions`, forwards CRUD to an internal store and enforces
//! per-key scopes and limits at the edge. `../protocol/` is the wire contract.
//!
//! # Layout
//!
//! - [`config`]: clap flags, `WEIR_*` env twins, `--config` TOML.
//! - [`domain`]: typed ids, events, channels, statuses and error codes.
//! - [`gateway`]: [`Gateway::bind`] / [`Gateway::run`]: builds the state, serves, drains.
//! - [`state`]: [`AppState`], the one cloneable bag of `Arc`s handlers share.
//! - [`keys`]: key secrets: minting, hashing, parsing, constant-time checks, the key cache.
//! - [`http`]: the router (layer order, unauthenticated allowlist), auth, [`http::errors::ApiError`],
//!   REST routes per resource, OpenAPI and `/docs`.
//! - [`store`]: the [`store::Store`] trait, its SQLite implementation, the
//!   store's own HTTP router (`weir store`) and the client gateways use to reach it.
//! - [`bus`]: fan-out with per-channel history and `seq` numbering.
//! - [`agent`]: the runtime: runs, models (`echo`, upstream), tools, logs.
//! - [`work`]: with Redis, the run queue and its workers (`weir worker`): runs
//!   scale apart from connections; a dead worker's runs are reclaimed.
//! - [`stream`]: SSE and WebSocket delivery, resume cursors.
//! - [`openai`]: `/v1/chat/completions` and `/v1/models`.
//! - [`protocol`]: protocol/schemas/, generated from the types' utoipa schemas.
//! - [`edge`]: limits at the edge: per-key rate limits (local and Redis), stream caps, head and JSON-depth limits.
//! - [`shutdown`]: SIGINT/SIGTERM handling (second signal exits at once).
//! - [`cli`]: `weir keys create` and other commands that work on the data directly.
//! - [`telemetry`]: tracing setup.
//! - [`tls`]: rustls at the edge: certificate loading, ALPN, reload on change or SIGHUP.
//! - [`metrics`]: Prometheus metrics at `/metrics`.
//! - [`web`]: the browser chat page at `/`, `/llms.txt`, CORS.
//! - [`util`]: ids and timestamps.

pub mod agent;
pub mod bus;
pub mod cli;
pub mod config;
pub mod domain;
pub mod edge;
pub mod gateway;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod openai;
pub mod protocol;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod util;
pub mod web;
pub mod work;

pub use gateway::Gateway;
pub use state::AppState;
