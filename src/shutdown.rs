//! Shutdown signals: the first SIGINT/SIGTERM starts a graceful drain, a
//! second one exits at once.

/// Resolves on the first SIGINT or SIGTERM; arms a watcher that exits the
/// process immediately on the next one.
pub async fn signal() {
    wait_one().await;
    tracing::info!("signal received; send it again to exit at once");
    tokio::spawn(async {
        wait_one().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_one() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
