//! Waiting for something to happen: poll for the condition under a deadline
//! instead of sleeping a fixed time, so a test is as fast as the thing it
//! waits for and says what it waited for when it gives up.

use std::{future::Future, time::Duration};

/// How long [`eventually`] waits.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Calls `check` until it gives `Some`, pausing between tries (10 ms at
/// first, growing to 250 ms); `None` once `limit` has passed. The Redis
/// topologies' own (they are shared with weir-load).
pub use super::topology::poll;

/// Whether `check` holds within `limit`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(limit, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Whether `check` holds within [`PATIENCE`].
pub async fn eventually<F, Fut>(check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(PATIENCE, check).await
}
