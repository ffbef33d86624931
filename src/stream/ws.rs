//! The WebSocket protocol of `GET /v1/ws` (protocol/websocket.md), apart
//! from HTTP: the upgrade is the HTTP layer's (`http::ws`), which hands the
//! socket to [`session::serve`], the protocol core. It is generic over
//! `Sink`/`Stream` and is unit-tested without a socket ([`protocol`] is the
//! wire format, [`outbox`] the bounded, ordered outbound queue).

mod feeds;
pub mod outbox;
pub mod protocol;
pub mod queue;
mod refusal;
pub mod schema;
pub mod session;
#[cfg(test)]
mod tests;
pub mod writer;

use std::time::Duration;

/// Tunables of every socket. The defaults are protocol/websocket.md's; tests shorten them.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The server pings this often.
    pub ping_every: Duration,
    /// A socket that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Frames queued for one socket before it counts as lagged.
    pub queue: usize,
    /// Channels one socket may subscribe to at once.
    pub max_channels: usize,
    /// How long the last frames (error, close) may take to leave.
    pub close_timeout: Duration,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            ping_every: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            queue: 1024,
            max_channels: 64,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl WsSettings {
    /// The defaults with the ping interval of `--ws-ping-secs`; the idle
    /// timeout stays 90 s unless three intervals are longer.
    pub fn from_config(cfg: &crate::config::ServeConfig) -> Self {
        let ping = Duration::from_secs(cfg.ws_ping_secs.max(1));
        let d = Self::default();
        Self {
            ping_every: ping,
            idle_timeout: d.idle_timeout.max(ping * 3),
            ..d
        }
    }
}
