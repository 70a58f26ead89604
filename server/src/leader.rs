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
                    tokio::select! {
                        () = guard.lost() => {
                            tracing::warn!(name, "leader lock lost; stopping the task");
                            let _ = lost_tx.send(());
                        }
                        () = watching.wait_for(|s| *s).map(|_| ()) => {}
                        _ = &mut task => {
                            tracing::warn!(name, "the led task ended by itself");
                        }
                    }
                    if let Err(e) = task.await
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
