//! The tailing task: one per store, on its own connection, LISTENing for commits. On each
//! notification (or a local commit, or every [`POLL_INTERVAL`] in case a notification was
//! missed) it reads the gap-free head and publishes it to the store's subscribers. While
//! committed events wait above the horizon (a transaction below them is still open) it looks
//! again soon, so a subscriber sees them as soon as they are safe.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use super::reader::{head_on, prepare_head};
use super::{CHANNEL, Shared};
use crate::Position;

/// How often the head is read without a notification: the bound on how late a subscriber
/// hears of a commit whose notification was lost (a reconnect, a restart of the database).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The first and the longest pause between looks while events wait above the horizon.
const PENDING_FIRST: Duration = Duration::from_millis(1);
const PENDING_MAX: Duration = Duration::from_millis(20);

/// The pause before reconnecting after the connection failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

pub(crate) async fn run(
    config: tokio_postgres::Config,
    shared: Arc<Shared>,
    head: watch::Sender<Position>,
) {
    let wake = Arc::clone(&shared.committed);
    // Only a weak interest in the store: the task ends when every receiver (the store and its
    // subscriptions) is gone.
    drop(shared);
    // A database that stays down fails every reconnect (two a second): said once per
    // `repeats::EVERY`, and once more when the tail listens again (ops3am19).
    let mut failing = crate::repeats::Repeats::default();
    loop {
        if let Err(error) = listen(&config, &wake, &head, &mut failing).await
            && let Some(unsaid) = failing.say(std::time::Instant::now())
        {
            tracing::warn!(
                error = %pop_domain::error::ErrorChain(&error),
                failed_since_last_said = unsaid,
                "event store tailing connection failed; reconnecting (said once per 10 s while \
                 it goes on)"
            );
        }
        if head.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
            _ = head.closed() => return,
        }
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    wake: &Arc<Notify>,
    head: &watch::Sender<Position>,
    failing: &mut crate::repeats::Repeats,
) -> Result<(), crate::StoreError> {
    let fail = super::connect_error("tailing the log");
    let (client, mut connection) = config.connect(NoTls).await.map_err(&fail)?;
    let notified = Arc::clone(wake);
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "tailing connection closed");
                    break;
                }
            }
        }
        // Wake the loop so it notices the dead connection at once.
        notified.notify_one();
    });
    let _abort = AbortOnDrop(driver);
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(fail)?;
    let statement = prepare_head(&client).await?;
    if let Some(unsaid) = failing.ended_always() {
        tracing::info!(failed_since_last_said = unsaid, "event store tailing listens again");
    }
    let mut pause = PENDING_FIRST;
    loop {
        if head.receiver_count() <= 1 {
            // Only the store's own handle listens: nobody to publish to. `subscribe_all`
            // wakes us when a subscriber arrives.
            tokio::select! {
                _ = wake.notified() => continue,
                _ = head.closed() => return Ok(()),
            }
        }
        let (safe, pending) = head_on(&client, &statement).await?;
        head.send_if_modified(|current| {
            if safe > *current {
                *current = safe;
                true
            } else {
                false
            }
        });
        let wait = if pending {
            let wait = pause;
            pause = (pause * 2).min(PENDING_MAX);
            wait
        } else {
            pause = PENDING_FIRST;
            POLL_INTERVAL
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = head.closed() => return Ok(()),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
