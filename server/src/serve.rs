//! `pop serve`: opens the embedded store and runs until SIGINT/SIGTERM, then closes the store
//! after the appends already queued, so nothing acknowledged is lost on a graceful stop.

use anyhow::{Context, Result};
use pop_store::{Durability, EventStore, SqliteOptions, SqliteStore};

use crate::cli::{DurabilityArg, ServeArgs};

pub async fn run(args: ServeArgs) -> Result<()> {
    let path = args.store.db_path();
    let durability = match args.durability {
        DurabilityArg::Full => Durability::Full,
        DurabilityArg::Normal => Durability::Normal,
    };
    let store = SqliteStore::open(&path, SqliteOptions { durability, ..SqliteOptions::default() })
        .await
        .with_context(|| format!("opening the embedded store at {}", path.display()))?;
    let head = store.head().await.context("reading the log head")?;
    tracing::info!(
        store = %path.display(),
        head = %head,
        ?durability,
        "pop is serving its event store; the GraphQL API, projections and scheduler are not \
         built yet (issue 3 onwards), so there is no network listener"
    );

    shutdown_signal().await;
    tracing::info!("shutting down: finishing queued appends");
    store.close().await.context("closing the store")?;
    tracing::info!("store closed");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
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
}
