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
//! - [`gateway`]: [`Gateway::bind`] / [`Gateway::run`]: builds the state (nothing
//!   runs in the background before `run`), serves, drains.
//! - [`cores`]: `--runtime per-core`: a single-threaded runtime, listener and
//!   provider pool per core.
//! - [`state`]: [`AppState`], the one cloneable bag of `Arc`s handlers share.
//! - [`keys`]: key secrets: minting, hashing, parsing, constant-time checks, the
//!   key cache and the control messages it acts on (revocations).
//! - [`http`]: the route table and router (layer order, unauthenticated allowlist),
//!   auth, [`http::errors::ApiError`] and every domain error's mapping to it, the
//!   edge's middleware, the handlers of every REST, SSE and WebSocket route, OpenAPI
//!   and `/docs`.
//! - [`store`]: the [`store::Store`] trait, its SQLite and PostgreSQL implementations,
//!   the store's own small HTTP API (`weir store`) and the client gateways use to reach it.
//! - [`audit`]: the audit log's write side: a bounded queue, the batch
//!   writer, retention; the client's address behind `--trusted-proxies`.
//! - [`bus`]: fan-out with per-channel history and `seq` numbering; it carries
//!   control messages and leaves acting on them to their owners.
//! - [`agent`]: the runtime: runs, models (`echo`, upstream), tools, logs. Where
//!   runs execute is an [`agent::RunMode`] chosen at start-up: in this process
//!   ([`agent::Local`]) or queued for workers ([`work::Queued`]).
//! - [`work`]: with Redis, the runtime's queued mode, the run queue and its workers
//!   (`weir worker`): runs scale apart from connections; a dead worker's runs are
//!   reclaimed.
//! - [`stream`]: what SSE and WebSocket streams deliver (feeds, resume), SSE
//!   framing, the WebSocket protocol core.
//! - [`openai`]: `/v1/chat/completions` and `/v1/models`, OpenAI-shaped (an HTTP
//!   module of its own).
//! - [`providers`]: named upstream providers and routes: retries and fallback
//!   before the first byte, `mid_stream` after it, circuit breaking.
//! - [`protocol`]: protocol/schemas/, generated from the types' utoipa schemas.
//! - [`edge`]: limits at the edge: per-key rate limits (local and Redis), stream caps,
//!   head and JSON-depth limits.
//! - [`shutdown`]: SIGINT/SIGTERM handling (second signal exits at once).
//! - [`cli`]: `weir keys create` and other commands that work on the data directly.
//! - [`telemetry`]: tracing setup.
//! - [`tls`]: rustls at the edge: certificate loading, ALPN, reload on change or SIGHUP.
//! - [`metrics`]: Prometheus metrics at `/metrics`.
//! - [`web`]: the browser chat page at `/`, `/llms.txt`, CORS.
//! - [`usage`]: usage metering's record side (requests, runs, tokens per key,
//!   day, model, agent, provider), summed in memory and written to the store.
//! - [`util`]: ids and timestamps.
//! - [`webhooks`]: outbound event webhooks: the notifier runs and handlers
//!   call, the durable delivery loop, signatures and sealed secrets.
//!
//! Layers point one way: `agent`, `audit`, `edge`, `stream`, `bus`, `work`,
//! `keys`, `store`, `domain`, `webhooks` and `providers` never import [`http`]. They return their own
//! errors, which say the code and message a client is shown, and only `http` turns
//! them into `ApiError`; `agent`, `work`, `bus` and `keys` import each other
//! without a cycle (`work` → `agent` → `bus` ← `keys`). tests/api/layering.rs
//! checks both.

pub mod agent;
pub mod audit;
pub mod bus;
pub mod cli;
pub mod config;
pub mod cores;
pub mod domain;
pub mod edge;
pub mod gateway;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod openai;
pub mod protocol;
pub mod providers;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod usage;
pub mod util;
pub mod web;
pub mod webhooks;
pub mod work;

pub use gateway::Gateway;
pub use state::AppState;
