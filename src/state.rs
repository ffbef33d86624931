//! [`AppState`]: what every handler shares, behind one `Arc`.

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{agent::Runtime, bus::Bus, config::ServeConfig, keys::KeyCache, store::Store};

/// Shared state of one gateway process: one reference count to clone.
///
/// axum clones the state for every extractor and `from_fn` layer that asks
/// for it, several times per request; as a struct of thirteen `Arc`s that
/// was some 2.5 % of the relay's CPU (clone plus drop, in the profile of
/// issue 22). Fields are reached through `Deref` (`state.config`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub config: Arc<ServeConfig>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub keys: Arc<KeyCache>,
    pub runtime: Arc<Runtime>,
    /// Cancelled when the gateway stops accepting connections (after
    /// `--drain-delay-secs`); background loops watch it. Idle streams end
    /// through [`Self::drain`] instead.
    pub shutdown: CancellationToken,
    /// The drain of idle streams, spread over `--drain-spread-secs`.
    pub drain: Arc<crate::stream::drain::Drain>,
    /// Channels recently checked against the store (a reconnect burst
    /// replays from the bus without a store round trip per stream).
    pub checks: Arc<crate::stream::checks::ChannelChecks>,
    /// Every background task is spawned here so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Limits at the edge: rate limits, stream caps (src/edge/).
    pub edge: Arc<crate::edge::Edge>,
    /// The audit log: handlers queue rows, its writer stores them (src/audit/).
    pub audit: Arc<crate::audit::AuditLog>,
    /// What the edge metered, waiting for the store (src/usage/).
    pub usage: Arc<crate::usage::UsageMeter>,
    /// Outbound webhooks: the notifier and the key secrets are sealed with
    /// (src/webhooks/).
    pub webhooks: crate::webhooks::Hub,
}
