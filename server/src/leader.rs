//! Leader-gated background tasks: with several replicas on one store, the scheduler and each
//! reaper run on one replica at a time. [`led`] keeps asking for a name's leader lock; while
//! it holds the lock it runs the task, whose stop future fires on shutdown or when the lock
//! is lost (then it goes back to asking).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use pop_store::Leadership;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How often a replica that does not lead asks again. Also the longest a name stays without
/// a leader after its leader died (plus the database noticing the dead connection).
pub const LEAD_RETRY: Duration = Duration::from_secs(2);

/// Runs `start(stop)` whenever this replica leads `name`, until `shutdown` turns true. The
/// task must end soon after `stop` resolves.
pub fn led<F>(
    leadership: Arc<dyn Leadership>,
    name: &'static str,
    shutdown: watch::Receiver<bool>,
    start: F,
) -> JoinHandle<()>
where
    F: Fn(BoxFuture<'static, ()>) -> JoinHandle<()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match leadership.try_lead(name).await {
                Ok(Some(mut guard)) => {
                    tracing::info!(name, "this replica leads");
                    let (lost_tx, lost_rx) = oneshot::channel::<()>();
                    let stop = {
                        let mut shutdown = shutdown.clone();
                        async move {
                            tokio::select! {
                                () = shutdown.wait_for(|s| *s).map(|_| ()) => {}
                                _ = lost_rx => {}
                            }
                        }
                        .boxed()
                    };
                    let mut task = start(stop);
                    let mut watching = shutdown.clone();
                    // `Some` when the task ended first: its handle must not be polled again.
                    let ended = tokio::select! {
                        () = guard.lost() => {
                            tracing::warn!(name, "leader lock lost; stopping the task");
                            let _ = lost_tx.send(());
                            None
                        }
                        () = watching.wait_for(|s| *s).map(|_| ()) => None,
                        joined = &mut task => {
                            if !*shutdown.borrow() {
                                tracing::warn!(name, "the led task ended by itself");
                            }
                            Some(joined)
                        }
                    };
                    let joined = match ended {
                        Some(joined) => joined,
                        None => task.await,
                    };
                    if let Err(e) = joined
                        && !e.is_cancelled()
                    {
                        tracing::error!(name, error = %e, "the led task failed");
                    }
                    // The lock is released only now, after the task has stopped.
                    drop(guard);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(name, error = %e, "cannot ask for the leader lock"),
            }
            let mut watching = shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(LEAD_RETRY) => {}
                () = watching.wait_for(|s| *s).map(|_| ()) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_by_itself_is_joined_once_and_asked_again() {
        let leadership: Arc<dyn Leadership> = Arc::new(pop_store::ProcessLeadership::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&starts);
        let handle = led(leadership, "test", shutdown_rx, move |_stop| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Ends at once, before any stop: the led loop must join it exactly once.
            tokio::spawn(async {})
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown_tx.send(true).expect("the loop listens");
        let joined = tokio::time::timeout(Duration::from_secs(5), handle).await.expect("stops");
        assert!(joined.is_ok(), "the led loop panicked: {joined:?}");
        assert!(starts.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }
}
