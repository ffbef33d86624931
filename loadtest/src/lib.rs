//! weir-load: the load generator and benchmark harness of weir.
//!
//! # Layout
//! - [`cli`]: the command line (one subcommand per scenario).
//! - [`scenario`]: the scenarios (`connections`, `fanout`, `proxy`, `peer`,
//!   `soak`, `smoke`), each returning a [`report::Report`].
//! - [`gateway`]: starts weir gateways (the release binary, or in-process for
//!   the smoke test), a `weir store`, a private `redis-server`, LiteLLM.
//! - [`client`]: lean SSE and WebSocket clients that bind each socket to its
//!   own 127.0.0.0/8 source address, and the open-loop HTTP driver.
//! - [`fake_provider`]: a fast OpenAI-compatible provider streaming K chunks.
//! - [`hist`]: a lock-free log-linear latency histogram.
//! - [`report`]: summary tables and JSON output; [`plot`]: PNG plots.
//! - [`sys`]: fd limits, RSS from /proc, load average.
//! - [`tls`]: a test CA and certificate, the clients that trust it.
//! - [`topology`]: Redis Sentinel and Redis Cluster on loopback (shared
//!   with weir's API tests).

pub mod cli;
pub mod client;
pub mod fake_provider;
pub mod gateway;
pub mod hist;
pub mod plot;
pub mod render;
pub mod report;
pub mod scenario;
pub mod sys;
pub mod tls;
pub mod topology;
pub mod units;
