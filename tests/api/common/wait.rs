//! Waiting for something to happen: poll for the condition under a deadline
//! instead of sleeping a fixed time, so a test is as fast as the thing it
//! waits for and says what it waited for when it gives up.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// How long [`eventually`] waits.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Calls `check` until it gives `Some`, pausing between tries (10 ms at
/// first, growing to 250 ms); `None` once `limit` has passed.
pub async fn poll<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

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
