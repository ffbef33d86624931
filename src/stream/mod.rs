//! Delivery of bus events to clients: SSE responses and the WebSocket
//! endpoint, with resume cursors (`Last-Event-ID`, `?after=`, WS `after`).
//!
//! - [`feed`]: what a stream delivers (`agent:`, `logs:`, `run:` targets),
//!   checked against the caller's account; shared by SSE and WebSocket.
//! - [`cursor`]: the resume cursor of an SSE request.
//! - [`handlers`]: the SSE routes (mounted by [`crate::http::routes`]).
//! - [`sse`]: SSE framing and the streaming response (pings, drain).
//! - [`ws`]: `GET /v1/ws`, its protocol core and outbound queue.

pub mod cursor;
pub mod feed;
pub mod handlers;
pub mod sse;
pub mod ws;
