//! One subscriber's view of the projections' change feed: the changes it cares about, in a
//! bounded buffer of its own, and an explicit [`FeedItem::Lagged`] whenever something it
//! cares about may have been dropped — never a silent loss.
//!
//! A forwarder task per subscriber reads the shared `broadcast` feed, filters, and queues into
//! an `mpsc` of the configured capacity. Two things can drop changes: the subscriber's own
//! buffer is full (it consumes more slowly than changes arrive), or the forwarder itself fell
//! behind the broadcast (`RecvError::Lagged`, which also counts changes of other customers:
//! it cannot know, so it assumes the worst). Either way the forwarder counts what it dropped
//! and delivers one `Lagged` item as soon as the buffer has room; the subscription then
//! re-reads the current state from the read models, which hold every effect of the dropped
//! changes (the runner's contract: a change is published after it is applied).

use pop_projections::Change;
use tokio::sync::{broadcast, mpsc};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A change the subscriber's filter admitted.
    Change(Change),
    /// At least `missed` changes (possibly of interest) were dropped since the last item.
    Lagged { missed: u64 },
}

/// Starts the forwarder for one subscriber and returns its buffer. The forwarder ends when
/// the receiver is dropped or the feed closes.
pub fn forward<F>(
    mut feed: broadcast::Receiver<Change>,
    capacity: usize,
    keep: F,
) -> mpsc::Receiver<FeedItem>
where
    F: Fn(&Change) -> bool + Send + 'static,
{
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::spawn(async move {
        let mut missed: u64 = 0;
        loop {
            tokio::select! {
                // Biased: report a lag as soon as there is room, before taking more changes,
                // so the subscriber resynchronises as early as possible.
                biased;
                () = tx.closed() => return,
                permit = tx.reserve(), if missed > 0 => match permit {
                    Ok(permit) => {
                        permit.send(FeedItem::Lagged { missed });
                        missed = 0;
                    }
                    Err(_) => return,
                },
                next = feed.recv() => match next {
                    Ok(change) if keep(&change) => {
                        if missed > 0 {
                            // Still lagging: the resync after the Lagged item covers it.
                            missed = missed.saturating_add(1);
                            continue;
                        }
                        match tx.try_send(FeedItem::Change(change)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => missed = 1,
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        missed = missed.saturating_add(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pop_projections::ChangeKind;
    use pop_store::Position;

    use super::*;

    fn change(n: u64, customer: &str) -> Change {
        Change {
            position: Position::from_sequence(n),
            kind: ChangeKind::Agenda,
            id: Arc::from(format!("a{n}")),
            customer_id: Arc::from(customer),
            progress_id: None,
            link_id: None,
            insight_id: None,
            processing_state: None,
            phase: None,
            operations: Vec::new(),
            removed: false,
            event_type: "AgendaQueued",
        }
    }

    /// On the current-thread runtime the forwarder runs only when the test awaits, so the
    /// interleaving is fixed: every send below happens before the forwarder sees any of it.
    #[tokio::test]
    async fn a_full_buffer_becomes_one_lagged_item_then_changes_continue() {
        let (tx, rx) = broadcast::channel(64);
        let mut items = forward(rx, 2, |c| c.customer_id.as_ref() == "acme");
        for n in 1..=5 {
            tx.send(change(n, "acme")).unwrap();
            tx.send(change(100 + n, "other")).unwrap();
        }
        let positions = |item: &FeedItem| match item {
            FeedItem::Change(c) => format!("change {}", c.position),
            FeedItem::Lagged { missed } => format!("lagged {missed}"),
        };
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(positions(&items.recv().await.expect("an item")));
        }
        assert_eq!(seen, ["change 1", "change 2", "lagged 3"]);
        tx.send(change(6, "acme")).unwrap();
        assert_eq!(positions(&items.recv().await.expect("an item")), "change 6");
    }

    #[tokio::test]
    async fn a_lagged_broadcast_is_reported_not_swallowed() {
        let (tx, rx) = broadcast::channel(2);
        let mut items = forward(rx, 16, |_| true);
        for n in 1..=5 {
            tx.send(change(n, "acme")).unwrap();
        }
        // The broadcast kept only the last two; the three before them are reported missed.
        assert_eq!(items.recv().await, Some(FeedItem::Lagged { missed: 3 }));
        for n in 4..=5 {
            assert_eq!(items.recv().await, Some(FeedItem::Change(change(n, "acme"))));
        }
    }

    #[tokio::test]
    async fn the_forwarder_ends_with_its_subscriber() {
        let (tx, rx) = broadcast::channel(4);
        let items = forward(rx, 1, |_| true);
        drop(items);
        // The forwarder notices the closed buffer and drops its broadcast receiver.
        for _ in 0..100 {
            if tx.receiver_count() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the forwarder kept its feed receiver after the subscriber left");
    }
}
