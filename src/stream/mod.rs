//! Delivery of bus events to clients over SSE and WebSocket, resumable from
//! a cursor (`Last-Event-ID`, `?after=`, WS `after`). The HTTP side (the
//! SSE routes, the cursor extractor, the WebSocket upgrade) is the HTTP
//! layer's (`http::streams`, `http::cursor`, `http::ws`); this module
//! knows nothing of it.
//!
//! - [`feed`]: what a stream delivers (`agent:`, `logs:`, `run:` targets),
//!   checked against the caller's account; shared by SSE and WebSocket.
//! - [`sse`]: SSE framing and the streaming response (pings, drain).
//! - [`ws`]: the WebSocket protocol core and outbound queue.
//! - [`checks`]: the store checks of opening a channel, remembered briefly.
//! - [`drain`]: idle streams closed spread over a window when the gateway drains.

pub mod checks;
pub mod drain;
pub mod feed;
pub mod sse;
pub mod ws;
