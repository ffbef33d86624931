//! The ecosystem around the API: what browsers, people, LLMs, operators and
//! example programs use (issue 7).
//!
//! - [`web`]: the chat page at `/`, its assets, `/llms.txt`.
//! - [`cors`]: `--cors-origin`: preflights and real requests from another origin.
//! - [`metrics`]: `/metrics` in Prometheus text.
//! - [`logs`]: `weir serve --log-format json`: request id and key id on every line.
//! - [`config`]: `config/single.toml` and `config/cluster.toml`.
//! - [`examples`]: the cargo examples run against a live gateway.
//! - [`browser`]: the chat page driven in headless Chromium.
//! - [`node_clients`]: the openai Node SDK, the Vercel AI SDK and wscat.

mod browser;
mod config;
mod cors;
mod examples;
mod logs;
mod metrics;
mod node_clients;
mod sdk_routes;
mod web;

/// Whether this run is CI (`CI=true`): there, missing tools fail tests
/// instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

use std::path::Path;

/// This crate's directory (config/, protocol/, tests/browser/ are under it).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
