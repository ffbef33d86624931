//! `weir_store_up` and `weir_bus_up{backend}`: set by every `/readyz` and by
//! a periodic check, so a scrape shows a dead Redis even when nothing polls
//! readiness. The same loop runs the exporter's upkeep.

use std::time::Duration;

use crate::state::AppState;

/// How often the store and the bus are pinged for the gauges.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

fn up(ok: bool) -> f64 {
    if ok {
        1.0
    } else {
        0.0
    }
}

/// Records the store's last check.
pub fn set_store(ok: bool) {
    super::init();
    ::metrics::gauge!("weir_store_up").set(up(ok));
}

/// Records the bus's last check; the backend follows from the config.
/// (Only the backend in use is exported: no `redis` series on a single node.)
pub fn set_bus(state: &AppState, ok: bool) {
    super::init();
    let backend = if state.config.uses_redis() {
        "redis"
    } else {
        "memory"
    };
    ::metrics::gauge!("weir_bus_up", "backend" => backend).set(up(ok));
}

/// Pings the store and the bus, records both, and returns the errors.
pub async fn check(state: &AppState) -> (Result<(), String>, Result<(), String>) {
    let store = state.store.ping().await.map_err(|e| e.to_string());
    set_store(store.is_ok());
    let bus = state.bus.ping().await.map_err(|e| e.to_string());
    set_bus(state, bus.is_ok());
    (store, bus)
}

/// Background loop: a check every [`CHECK_EVERY`] until shutdown.
pub async fn run(state: AppState) {
    loop {
        let _ = check(&state).await;
        // Histogram samples wait in buffers until drained: without a
        // scraper they would pile up, so drain them here too.
        super::upkeep();
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}
