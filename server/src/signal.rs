//! Stopping on a signal: the one place `pop serve`, `pop worker` and a looping `pop reap` learn
//! that they should stop (Ctrl-C, or the SIGTERM Kubernetes sends before killing a pod).

use tokio::sync::watch;

/// Resolves once the stop flag is set.
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means "stop".
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod) and raises the
/// stop flag for everything else. Shared by `pop serve`, `pop worker` and a looping `pop reap`.
pub(crate) async fn shutdown_signal(stop: watch::Sender<bool>, what: &str) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: {what}");
    let _ = stop.send(true);
}
