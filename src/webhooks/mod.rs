//! Outbound event webhooks: accounts subscribe URLs to events (a run that
//! ended, an approval asked for or given, an agent created, changed or
//! deleted) and weir POSTs each event to them, signed, at least once
//! (protocol/webhooks.md).
//!
//! # Layout
//!
//! - [`events`]: the event types a subscription may name, and the payload.
//! - [`notifier`]: [`Notifier`], what the engine and the HTTP handlers call;
//!   it only queues (a bounded channel), so a run or a stream never waits
//!   for a receiver. A background task writes each event to the store as one
//!   delivery per matching subscription.
//! - [`dispatch`]: the delivery loop each gateway runs: it claims due
//!   deliveries from the store (safely when several gateways share a
//!   PostgreSQL store), sends them through the egress guard and records
//!   each attempt, with exponential backoff and jitter until the retry
//!   window closes.
//! - [`retention`]: deletes finished deliveries older than
//!   `--webhook-retention-secs` (7 days by default).
//! - [`sign`]: Standard Webhooks signatures (`webhook-signature: v1,…`).
//! - [`secret`]: signing secrets (`whsec_…`) and the server key that seals
//!   them in the store.
//! - [`config`]: the settings (`--webhook-secret-key`, the retry window,
//!   `--egress-allow`).
//!
//! The subscription and delivery records are the store's
//! ([`crate::store::webhooks`]); the routes are `src/http/webhooks.rs`.

pub mod config;
pub mod dispatch;
pub mod events;
pub mod notifier;
pub mod retention;
pub mod secret;
pub mod sign;

pub use config::WebhookConfig;
pub use events::WebhookEvent;
pub use notifier::Notifier;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{agent::tools::egress, config::ServeConfig, store::Store};

/// A process's webhooks: its notifier and, in a gateway with an embedded
/// store, the server key and the delivery loop's wake-up.
#[derive(Clone, Debug)]
pub struct Hub {
    pub notifier: Notifier,
    /// `None`: webhooks are off (the store is remote, `--store-url`).
    pub key: Option<secret::ServerKey>,
    wake: Arc<Notify>,
}

impl Hub {
    /// Loads (or makes) the server key and starts the notifier's writer.
    /// Behind a remote store (`--store-url`) the store's own HTTP API
    /// carries the subscriptions and the delivery queue too.
    pub fn open(cfg: &ServeConfig, store: &Arc<dyn Store>) -> anyhow::Result<Self> {
        let wake = Arc::new(Notify::new());
        let configured = cfg.webhooks.webhook_secret_key.as_deref();
        let shared = cfg.data.db.is_some() || cfg.data.store_url.is_some();
        if configured.is_none() && shared {
            tracing::warn!(
                "WEIR_WEBHOOK_SECRET_KEY is unset with a shared store (PostgreSQL or \
                 --store-url): gateways sharing the store must share one key, or they \
                 cannot sign each other's webhooks"
            );
        }
        let key = secret::ServerKey::load(configured, &cfg.data.data_dir)?;
        let notifier = Notifier::start(store.clone(), wake.clone(), cfg.webhooks.retry_window());
        Ok(Self {
            notifier,
            key: Some(key),
            wake,
        })
    }

    /// For a worker: it queues the events of the runs it ends, and never
    /// seals, opens or sends (gateways do), so it needs no server key.
    pub fn notifier_only(cfg: &ServeConfig, store: &Arc<dyn Store>) -> Self {
        let wake = Arc::new(Notify::new());
        Self {
            notifier: Notifier::start(store.clone(), wake.clone(), cfg.webhooks.retry_window()),
            key: None,
            wake,
        }
    }

    /// Webhooks off: events are dropped, subscriptions refused.
    pub fn disabled() -> Self {
        Self {
            notifier: Notifier::disabled(),
            key: None,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes this process's delivery loop (a delivery was queued by hand).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts the delivery loop (when webhooks are on), until `stop`.
    pub fn start_delivery(
        &self,
        cfg: &ServeConfig,
        store: Arc<dyn Store>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) {
        let Some(key) = self.key.clone() else {
            return;
        };
        let dispatcher = dispatch::Dispatcher {
            store,
            key,
            http: egress::Webhooks::new(cfg.webhook_allow_private, &cfg.webhooks.egress_allow),
            retry_base: cfg.webhooks.retry_base(),
            name: crate::util::new_id("gw"),
            wake: self.wake.clone(),
        };
        if let Some(keep) = cfg.webhooks.retention() {
            tracker.spawn(retention::run(dispatcher.store.clone(), keep, stop.clone()));
        }
        tracker.spawn(dispatcher.run(stop));
    }
}
