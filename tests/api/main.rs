//! All integration tests in one binary, so they link once. Each module drives
//! real gateways over real sockets; see `common` for the harness.

mod anthropic;
mod audit;
mod cli;
mod cluster;
mod common;
mod cores;
mod docs;
mod ecosystem;
mod edge;
mod envelopes;
mod fake_provider;
mod golden;
mod http1;
mod keys;
mod layering;
mod openai;
mod openapi;
mod paging;
mod postgres;
mod protocol;
mod queue;
mod redis_support;
mod rest;
pub mod routing;
mod routing_anthropic;
mod runs;
mod schemas;
mod scopes;
mod streams;
mod transport;
mod usage;
mod webhooks;
mod ws;
