//! The checkpointer: a thread with its own connection that copies the WAL back into the
//! database file when the writer has written enough, so the writer never stalls a commit on
//! a checkpoint (page copies plus an fsync of the database file).

use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::schema;
use crate::StoreError;

/// Bytes the writer commits between two nudges of the checkpointer: 16 MiB of events is
/// about 4,000 WAL pages, large enough to amortise the checkpoint's fsync, small enough to
/// keep the WAL (which every reader searches) short.
pub const CHECKPOINT_EVERY_BYTES: usize = 16 << 20;

/// Commits between two nudges of the checkpointer, whatever their bytes. A commit writes
/// about six WAL pages (the events' pages and their indexes, the stream row, the log head)
/// however small its events, so the WAL grew ~37 times faster than the event bytes: small
/// events never reached [`CHECKPOINT_EVERY_BYTES`], the writer's own 256 MiB autocheckpoint
/// came first, and until then `pop.db` stayed empty beside a `pop.db-wal` of 220 MB
/// (ops3am5). 1,000 commits is some 6,000 pages, about 24 MiB of WAL copied back. The file
/// itself restarts only when a checkpoint finds no reader in it; under a steady load with
/// readers always in the log it still grows to the writer's 256 MiB autocheckpoint before it
/// is cut back to 64 MiB (ops3am53: 268 MB; README's disk sizing says so).
pub const CHECKPOINT_EVERY_COMMITS: usize = 1_000;

pub(crate) struct Checkpointer {
    /// Capacity 1: a nudge while a checkpoint is pending or running folds into it.
    wake: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::backend("opening the checkpointer connection", e))?;
        schema::configure_checkpointer(&conn)?;
        let (wake, nudges) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("pop-store-checkpoint".to_owned())
            .spawn(move || {
                // Ends when the writer drops `wake`.
                let mut failing = crate::repeats::Repeats::default();
                while nudges.recv().is_ok() {
                    // PASSIVE: copy what no reader still needs, never wait for anyone.
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((wal_pages, copied)) => {
                            if let Some(unsaid) = failing.ended() {
                                tracing::info!(
                                    failed_since_last_said = unsaid,
                                    "WAL checkpoints work again"
                                );
                            }
                            tracing::debug!(wal_pages, copied, "WAL checkpoint")
                        }
                        Err(error) => {
                            if let Some(unsaid) = failing.say(std::time::Instant::now()) {
                                tracing::warn!(
                                    %error,
                                    failed_since_last_said = unsaid,
                                    "WAL checkpoint failed (said once per 10 s while it goes on)"
                                )
                            }
                        }
                    }
                }
                if let Err((_, error)) = conn.close() {
                    tracing::warn!(%error, "closing the checkpointer connection failed");
                }
            })
            .map_err(|e| StoreError::backend("starting the checkpointer thread", e))?;
        Ok(Checkpointer { wake, thread })
    }

    /// Asks for a checkpoint; never blocks the writer.
    pub(crate) fn nudge(&self) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!("the checkpointer stopped; the writer's autocheckpoint takes over");
            }
        }
    }

    /// Stops the thread after the checkpoint in progress, if any.
    pub(crate) fn stop(self) {
        drop(self.wake);
        if self.thread.join().is_err() {
            tracing::warn!("the checkpointer thread panicked");
        }
    }
}
