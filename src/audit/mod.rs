//! The audit log's write side: who changed what, recorded off the request
//! path. The HTTP layer builds one [`AuditRecord`] per change a key made
//! and hands it to [`AuditLog::record`], which only queues it (a bounded
//! channel, no await); one task ([`writer`]) appends what is queued to the
//! store in batches, and another ([`prune`]) deletes rows past retention.
//! Which requests are recorded, and how their action and target are named,
//! is the HTTP layer's business (`crate::http::audit`).
//!
//! [`client`] tells the client's address: the socket peer, or behind
//! `--trusted-proxies` the forwarded one.
//!
//! A row is readable one store write after its request answered. When the
//! store cannot keep up (or is down) for [`QUEUE`] rows, further rows are
//! dropped with an error in the log rather than holding up requests whose
//! change is already made.

pub mod client;
pub mod prune;
pub mod writer;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use client::{Peer, ProxyNet, TrustedProxies};

use crate::{
    config::AuditConfig,
    store::{AuditRecord, Store},
};

/// Rows that may wait for the writer.
pub const QUEUE: usize = 4096;

/// The gateway's audit log (one per process, in the app state).
pub struct AuditLog {
    tx: mpsc::Sender<AuditRecord>,
    /// Taken by [`AuditLog::start`]: nothing runs before the gateway does.
    rx: Mutex<Option<mpsc::Receiver<AuditRecord>>>,
    /// Cancelled by [`AuditLog::close`]: the writer empties the queue and ends.
    closed: CancellationToken,
    proxies: TrustedProxies,
    retention: Duration,
}

impl AuditLog {
    pub fn new(cfg: &AuditConfig) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            closed: CancellationToken::new(),
            proxies: TrustedProxies::new(&cfg.trusted_proxies),
            retention: Duration::from_secs(cfg.audit_retention_days.saturating_mul(86_400)),
        }
    }

    /// Queues `row` for the writer; never waits (module doc).
    pub fn record(&self, row: AuditRecord) {
        match self.tx.try_send(row) {
            Ok(()) => {}
            Err(TrySendError::Full(row)) => tracing::error!(
                action = %row.action, request_id = %row.request_id,
                "audit row dropped: {QUEUE} rows wait for the store"
            ),
            Err(TrySendError::Closed(row)) => tracing::warn!(
                action = %row.action, request_id = %row.request_id,
                "audit row dropped: the gateway has stopped recording"
            ),
        }
    }

    /// The client address of a request from `peer` (see [`client`]).
    pub fn client_addr(&self, peer: Option<Peer>, headers: &http::HeaderMap) -> Option<IpAddr> {
        self.proxies.client(peer, headers)
    }

    /// Starts the writer and the prune on `tracker`; the prune ends on
    /// `shutdown`, the writer on [`AuditLog::close`]. A second call does
    /// nothing.
    pub fn start(
        &self,
        store: Arc<dyn Store>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let Some(rx) = self.rx.lock().ok().and_then(|mut rx| rx.take()) else {
            return;
        };
        tracker.spawn(writer::run(store.clone(), rx, self.closed.clone()));
        tracker.spawn(prune::run(
            store,
            self.retention,
            prune::EVERY,
            time::OffsetDateTime::now_utc,
            shutdown.clone(),
        ));
    }

    /// Once no request can record any more (the listener has drained): the
    /// writer writes what is queued and ends.
    pub fn close(&self) {
        self.closed.cancel();
    }
}
