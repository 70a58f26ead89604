//! Catch-up-then-live subscriptions built from two things any backend has: "read the log
//! after P" and a watch of the committed head. The wake-up carries no events, only "the head
//! moved"; each subscriber re-reads from its own checkpoint, so an event can be neither lost
//! (the read sees everything committed) nor delivered twice (the checkpoint only moves
//! forwards, past events actually delivered).

use std::collections::VecDeque;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::{Position, RecordedEvent, StoreError};

/// Events a subscriber reads per query. Large enough that catching up a long log costs few
/// queries, small enough that one subscriber holds little memory (it buffers one batch).
pub const SUBSCRIPTION_BATCH: usize = 1_000;

/// How a subscription reads the log: `read(after, max)` with `read_all` semantics.
pub type ReadAfter = Arc<
    dyn Fn(Position, usize) -> BoxFuture<'static, Result<Vec<RecordedEvent>, StoreError>>
        + Send
        + Sync,
>;

/// A subscription over `read` that wakes up when `head` changes.
///
/// The backend must only publish a head once every event at or below it is committed and
/// readable (trivial with one writer; PostgreSQL must publish the gap-free head). When the
/// head's sender is dropped (the store closed), the stream yields [`StoreError::Closed`] and
/// ends.
pub fn subscribe_by_polling(
    read: ReadAfter,
    head: watch::Receiver<Position>,
    after: Position,
) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
    let state =
        Subscription { read, head, checkpoint: after, buffer: VecDeque::new(), done: false };
    stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })
    .boxed()
}

struct Subscription {
    read: ReadAfter,
    head: watch::Receiver<Position>,
    /// The position of the last event handed out (or the starting point).
    checkpoint: Position,
    buffer: VecDeque<RecordedEvent>,
    /// Set after an error: the stream has ended.
    done: bool,
}

impl Subscription {
    async fn next(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.checkpoint = event.position;
                return Some(Ok(event));
            }
            // Mark the current head as seen *before* reading, so a commit that lands during
            // the read wakes us up again rather than being slept through.
            let head = *self.head.borrow_and_update();
            if self.checkpoint < head {
                match (self.read)(self.checkpoint, SUBSCRIPTION_BATCH).await {
                    // Not past the head read: a commit is readable a moment before its store
                    // publishes it, and a subscriber ahead of the head took it for a log gone
                    // back (review-s42b). What it leaves is read once the head is published.
                    Ok(mut batch) if batch.first().is_some_and(|e| e.position <= head) => {
                        batch.retain(|e| e.position <= head);
                        self.buffer.extend(batch);
                        continue;
                    }
                    // Nothing readable up to the head: the events there were deleted. Wait
                    // for the next commit.
                    Ok(_) => {}
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.head.changed().await.is_err() {
                self.done = true;
                return Some(Err(StoreError::Closed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A commit is readable a moment before its store publishes the head: the subscription
    /// hands out nothing past the head it read, and the rest once the head is published
    /// (bench/compare.sh: the read models got two positions ahead of the head, took that for
    /// a log gone back under them and stopped for good).
    #[tokio::test]
    async fn nothing_past_the_head_read_is_handed_out() {
        let event = |n: u64| RecordedEvent {
            position: Position::from_sequence(n),
            ..RecordedEvent::default()
        };
        // The log holds 1..=4; the head published says 2.
        let read: ReadAfter = Arc::new(move |after: Position, max: usize| {
            let events: Vec<RecordedEvent> =
                (1..=4).map(event).filter(|e| e.position > after).take(max).collect();
            Box::pin(async move { Ok(events) })
        });
        let (head, watching) = watch::channel(Position::from_sequence(2));
        let mut subscription = subscribe_by_polling(read, watching, Position::START);
        for n in [1, 2] {
            let got = subscription.next().await.unwrap().unwrap();
            assert_eq!(got.position, Position::from_sequence(n));
        }
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(100), subscription.next());
        assert!(early.await.is_err(), "an event past the head was handed out");
        head.send_replace(Position::from_sequence(4));
        for n in [3, 4] {
            let got = subscription.next().await.unwrap().unwrap();
            assert_eq!(got.position, Position::from_sequence(n));
        }
    }
}
