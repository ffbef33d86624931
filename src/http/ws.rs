//! `GET /v1/ws`: the WebSocket endpoint's HTTP side. [`upgrade`] checks the
//! key, takes its WebSocket slot and hands the socket to
//! [`session::serve`], the protocol core ([`crate::stream::ws`]), which
//! knows nothing of HTTP.

use axum::{
    extract::{ws::rejection::WebSocketUpgradeRejection, State, WebSocketUpgrade},
    response::Response,
    routing::{on, MethodFilter, MethodRouter},
};
use futures::{FutureExt, StreamExt};

pub use crate::stream::ws::WsSettings;

use super::{auth::Auth, errors::ApiError};
use crate::{state::AppState, stream::ws::session};

/// tungstenite's read buffer. Its default (128 KiB) is allocated per socket
/// and zero-filled on the first read, so it was most of an idle socket's
/// memory. Client frames (`subscribe`, `ping`, a pong, a short
/// `user_message`) are mostly under 256 bytes; a bigger one grows the buffer
/// to its size (tungstenite reserves a frame's length once its header is
/// read) and is read in 256-byte steps, more reads for a rare frame against
/// 0.75 KiB less for every socket (issue 22; BENCHMARKS.md, connections).
/// 128 bytes saved nothing more: tungstenite reserves the whole frame on
/// top of what it has read, so the load test's `subscribe` grew it to 256
/// anyway (heaptrack, 1,000 idle sockets).
const READ_BUFFER: usize = 256;
/// Bytes tungstenite gathers before writing to the socket (the writer still
/// flushes when its queue is empty). The buffer keeps the capacity it grew
/// to, so the default (128 KiB) would stay with a socket after one burst.
const WRITE_BUFFER: usize = 8 * 1024;

/// The `GET /v1/ws` route (mounted for `filter`) with the given settings;
/// also `CONNECT`, the HTTP/2 form of the same upgrade (extended CONNECT,
/// RFC 8441), which axum's `WebSocketUpgrade` accepts on an HTTP/2 request
/// (over HTTP/1.1 it refuses a CONNECT).
pub fn route(filter: MethodFilter, settings: WsSettings) -> MethodRouter<AppState> {
    // Shared: every socket's task holds a pointer, not a copy.
    let settings = std::sync::Arc::new(settings);
    on(
        filter.or(MethodFilter::CONNECT),
        move |State(state): State<AppState>,
              auth: Auth,
              ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
            let settings = settings.clone();
            async move { upgrade(state, auth, ws, settings).await }
        },
    )
}

/// `GET /v1/ws` (scope `chat`; the key may come as `?api_key=`, since
/// browsers cannot set headers on a WebSocket). The scope is checked before
/// the handshake, so a key without `chat` gets 403 whatever it sent; then
/// the key's WebSocket slot is taken (429 `too_many_connections` before the
/// upgrade) and held until the socket ends.
///
/// JSON text frames (protocol/websocket.md). The key may be sent as `?api_key=`.
#[utoipa::path(get, path = "/v1/ws", tag = "streams",
    responses((status = 101, description = "switching protocols"), (status = 400, description = "not a WebSocket upgrade")))]
pub async fn upgrade(
    state: AppState,
    auth: Auth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    settings: std::sync::Arc<WsSettings>,
) -> Result<Response, ApiError> {
    auth.require("chat")?;
    let ws = ws.map_err(|rej| {
        ApiError::rejected(
            rej.status(),
            format!("not a WebSocket handshake: {}", rej.body_text()),
        )
    })?;
    // protocol/limits.md: frames over the body limit (1 MiB) close the socket with 1009.
    let limit = state.config.max_body_bytes;
    let ws = ws
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER);
    let slot = state
        .edge
        .open_stream(&auth.key, crate::edge::StreamKind::WebSocket)
        .await?;
    // The socket outlives the request, but its log lines keep the request's
    // span (request_id, key_id).
    let span = tracing::Span::current();
    Ok(ws.on_upgrade(move |socket| {
        // Split before the task: a socket moved into an async block would
        // keep its (then empty) ~0.4 KiB slot for the socket's whole life
        // (BENCHMARKS.md, connections).
        let (sink, stream) = socket.split();
        let tracker = state.tracker.clone();
        let session = session::serve(state, auth.key, settings, sink, stream);
        // A struct around the session, not an async block: a block would
        // hold a second copy of what it passes to `serve`.
        let open = crate::metrics::ConnGuard::open(crate::metrics::Conn::Ws);
        let session = session.map(move |()| drop((slot, open)));
        // The session runs in a task of its own, so axum's upgrade task
        // (which keeps the moved-out socket's slot, its config and this
        // closure's captures next to the session for as long as it runs)
        // ends here. Tracked, so a draining gateway waits for the 1001
        // close to be sent.
        tracker.spawn(tracing::Instrument::instrument(session, span));
        std::future::ready(())
    }))
}

/// `GET /ws`: an alias of `GET /v1/ws` (the same handler, scope and
/// limits), for clients that expect the socket there.
#[utoipa::path(get, path = "/ws", tag = "streams",
    responses((status = 101, description = "switching protocols"), (status = 400, description = "not a WebSocket upgrade")))]
#[allow(dead_code)] // documentation only: the route mounts [`route`]
fn upgrade_alias() {}
