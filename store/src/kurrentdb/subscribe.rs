//! `subscribe_all` on a KurrentDB catch-up subscription to `$all`, filtered server-side to
//! pop's streams.
//!
//! Two tasks per subscriber. The *reader* holds the gRPC subscription and forwards raw events
//! in order; when the connection breaks (a node restart, a leader change, a network cut) it
//! subscribes again from the last position it forwarded, with a bounded backoff. The
//! *checker* takes what is ready in batches, drops the events of tombstoned streams
//! (KurrentDB keeps them in `$all` until a scavenge) and of bookkeeping streams, and hands
//! the rest on; it also drops anything at or before the last position it delivered, so a
//! resubscription can neither repeat nor skip an event.
//!
//! The server's "fell behind" and "caught up" notices need nothing from pop: when a live
//! subscriber falls behind, the server goes back to reading the log for it and returns to
//! live delivery by itself, all on the same gRPC stream and in log order.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kurrentdb::{SubscribeToAllOptions, SubscriptionEvent};
use tokio::sync::mpsc;

use super::Inner;
use super::codec::{decode, from_position};
use super::read::{all_from, drop_deleted, pop_filter};
use crate::{Position, RecordedEvent, SUBSCRIPTION_BATCH, StoreError};

/// Resubscriptions in a row (with no event delivered in between) before the subscription
/// gives up and ends with the error: a server that stays unreachable for the whole backoff
/// (about a minute) is an outage for the caller to see, not one to hide.
pub const MAX_RESUBSCRIBES: u32 = 16;

/// First wait before resubscribing; doubles up to [`RESUBSCRIBE_MAX_DELAY`].
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);

/// Raw events buffered between the reader and the checker: a batch and a half, so the reader
/// keeps reading while the checker works on a batch.
const RAW_BUFFER: usize = SUBSCRIPTION_BATCH * 3 / 2;

/// Whether a failed subscription is worth subscribing again.
fn is_transient(e: &kurrentdb::Error) -> bool {
    matches!(
        e,
        kurrentdb::Error::ServerError(_)
            | kurrentdb::Error::ConnectionClosed
            | kurrentdb::Error::GrpcConnectionError(_)
            | kurrentdb::Error::DeadlineExceeded
            | kurrentdb::Error::NotLeaderException(_)
    ) || matches!(
        e,
        kurrentdb::Error::Grpc { code: tonic::Code::Unavailable | tonic::Code::Cancelled, .. }
    )
}

pub(crate) fn subscribe_all(
    inner: Arc<Inner>,
    after: Position,
) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
    let (raw_tx, raw_rx) = mpsc::channel(RAW_BUFFER);
    let (out_tx, out_rx) = mpsc::channel(SUBSCRIPTION_BATCH);
    tokio::spawn(read(Arc::clone(&inner), after, raw_tx));
    tokio::spawn(check(inner, after, raw_rx, out_tx));
    tokio_stream_of(out_rx)
}

fn tokio_stream_of<T: Send + 'static>(rx: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
        .boxed()
}

/// The reader task: ends when the checker is gone or after a permanent failure.
async fn read(
    inner: Arc<Inner>,
    after: Position,
    tx: mpsc::Sender<Result<kurrentdb::RecordedEvent, StoreError>>,
) {
    let mut from = after;
    let mut failures = 0u32;
    let mut delay = RESUBSCRIBE_DELAY;
    loop {
        // No retry inside the client: pop resubscribes itself, from what it forwarded.
        let options =
            SubscribeToAllOptions::default().position(all_from(from)).filter(pop_filter(&inner));
        let mut subscription = inner.client.subscribe_to_all(&options).await;
        let error = loop {
            match subscription.next_subscription_event().await {
                Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                    let Some(event) = resolved.event else { continue };
                    let position = from_position(event.position);
                    if position <= from {
                        continue;
                    }
                    from = position;
                    failures = 0;
                    delay = RESUBSCRIBE_DELAY;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                // Confirmation, checkpoints of the filter, caught up, fell behind: nothing to
                // deliver (see the module doc).
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        failures += 1;
        if !is_transient(&error) || failures > MAX_RESUBSCRIBES {
            let _ = tx.send(Err(StoreError::backend("subscribing to $all", error))).await;
            return;
        }
        tracing::warn!(%error, after = %from, attempt = failures, "KurrentDB subscription dropped; subscribing again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
        if tx.is_closed() {
            return;
        }
    }
}

/// The checker task: ends when the subscriber is gone or after the first error.
async fn check(
    inner: Arc<Inner>,
    after: Position,
    mut rx: mpsc::Receiver<Result<kurrentdb::RecordedEvent, StoreError>>,
    tx: mpsc::Sender<Result<RecordedEvent, StoreError>>,
) {
    let mut delivered = after;
    let mut batch = Vec::with_capacity(SUBSCRIPTION_BATCH);
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut failure = None;
        for item in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match item {
                Ok(event) => {
                    if from_position(event.position) > delivered
                        && inner.names.is_pop_event(event.stream_id(), &event.event_type)
                    {
                        batch.push(event);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if batch.len() >= SUBSCRIPTION_BATCH {
                break;
            }
        }
        let kept = match drop_deleted(&inner, std::mem::take(&mut batch)).await {
            Ok(kept) => kept,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for event in &kept {
            let decoded = decode(&inner.names, event);
            if let Ok(e) = &decoded {
                delivered = e.position;
            }
            let stop = decoded.is_err();
            if tx.send(decoded).await.is_err() || stop {
                return;
            }
        }
        if let Some(e) = failure {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}
