//! Reads: one stream (forwards, backwards), `$all` after a position, the head, and the checks
//! the writer needs (a stream's current version, where an event sits).
//!
//! `$all` on KurrentDB still holds the events of a tombstoned stream until a scavenge
//! ("the $all stream bypasses the index … events that have been deleted are still readable
//! until a scavenge has removed them", KurrentDB docs, *Deleting streams and events*). Pop's
//! contract says a deleted stream's events are gone, so every page of `$all` is checked
//! against the streams' state ([`drop_deleted`]).

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kurrentdb::{ReadAllOptions, ReadStreamOptions, StreamPosition, SubscriptionFilter};

use super::Inner;
use super::codec::{self, decode, from_position, map_error};
use crate::limits::{MAX_READ_BATCH_BYTES, check_read_max, check_stream_name};
use crate::{Direction, Position, RecordedEvent, StoreError};

/// Streams checked at once when a page of `$all` names many: bounds the requests one read
/// puts on the server.
const DELETED_CHECKS_IN_FLIGHT: usize = 16;

/// A stream as one read found it.
pub(crate) enum StreamRead {
    /// It never had an event.
    Missing,
    /// It was tombstoned.
    Deleted,
    /// Its events in the range asked for (possibly none).
    Events(Vec<kurrentdb::RecordedEvent>),
}

/// Reads up to `count` raw events of `stream` from `from`, stopping early after the event
/// that crosses `byte_cap`.
pub(crate) async fn read_raw(
    inner: &Inner,
    stream: &str,
    from: StreamPosition<u64>,
    backwards: bool,
    count: usize,
    byte_cap: usize,
) -> Result<StreamRead, StoreError> {
    let options = ReadStreamOptions::default().position(from).max_count(count);
    let options = if backwards { options.backwards() } else { options.forwards() };
    let fail = |e| map_error("reading a stream", stream, e);
    let mut read = match inner.client.read_stream(stream, &options).await {
        Ok(read) => read,
        Err(kurrentdb::Error::ResourceNotFound) => return Ok(StreamRead::Missing),
        Err(kurrentdb::Error::ResourceDeleted) => return Ok(StreamRead::Deleted),
        Err(e) => return Err(fail(e)),
    };
    let mut events = Vec::new();
    let mut bytes = 0usize;
    while events.len() < count && bytes < byte_cap {
        match read.next().await {
            Ok(Some(resolved)) => {
                if let Some(event) = resolved.event {
                    bytes = bytes.saturating_add(event.data.len() + event.custom_metadata.len());
                    events.push(event);
                }
            }
            Ok(None) => break,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(StreamRead::Missing),
            Err(kurrentdb::Error::ResourceDeleted) => return Ok(StreamRead::Deleted),
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(StreamRead::Events(events))
}

/// The last event of `stream` (`None`: no events yet); `StreamDeleted` for a tombstoned
/// stream.
pub(crate) async fn last_event(
    inner: &Inner,
    stream: &str,
) -> Result<Option<kurrentdb::RecordedEvent>, StoreError> {
    match read_raw(inner, stream, StreamPosition::End, true, 1, usize::MAX).await? {
        StreamRead::Missing => Ok(None),
        StreamRead::Deleted => Err(StoreError::StreamDeleted { stream: stream.to_owned() }),
        StreamRead::Events(events) => Ok(events.into_iter().next()),
    }
}

/// The version of `stream`'s last event (`None`: no events yet); `StreamDeleted` for a
/// tombstoned stream.
pub(crate) async fn current(inner: &Inner, stream: &str) -> Result<Option<u64>, StoreError> {
    Ok(last_event(inner, stream).await?.map(|e| e.revision))
}

/// The raw events of `stream` at versions `from..from + count` (fewer at the stream's end;
/// none when it is missing or deleted).
pub(crate) async fn events_at(
    inner: &Inner,
    stream: &str,
    from: u64,
    count: usize,
) -> Result<Vec<kurrentdb::RecordedEvent>, StoreError> {
    match read_raw(inner, stream, StreamPosition::Position(from), false, count, usize::MAX).await? {
        StreamRead::Events(events) => {
            Ok(events.into_iter().filter(|e| e.revision >= from).take(count).collect())
        }
        StreamRead::Missing | StreamRead::Deleted => Ok(Vec::new()),
    }
}

pub(crate) async fn read_stream(
    inner: &Inner,
    stream: &str,
    from_version: u64,
    max: usize,
    direction: Direction,
) -> Result<Vec<RecordedEvent>, StoreError> {
    check_stream_name(stream)?;
    check_read_max(max)?;
    let deleted = || StoreError::StreamDeleted { stream: stream.to_owned() };
    if inner.names.pop(&inner.names.server(stream)).is_none() {
        // A system or bookkeeping stream: not one of pop's, so it reads as never written.
        return Ok(Vec::new());
    }
    let server = inner.names.server(stream);
    let stream = server.as_str();
    // `max` 0 still asks the server, so a deleted stream reads as deleted.
    let count = max.max(1);
    let read =
        |from, backwards| read_raw(inner, stream, from, backwards, count, MAX_READ_BATCH_BYTES);
    let events = match direction {
        Direction::Forwards => read(StreamPosition::Position(from_version), false).await?,
        Direction::Backwards if from_version == u64::MAX => read(StreamPosition::End, true).await?,
        Direction::Backwards => {
            // Backwards from past the end: whether the server clamps to the last event or
            // answers nothing is not documented, so an empty answer is read again from the
            // end and cut at `from_version` (versions are contiguous, so an existing stream
            // only reads empty backwards from past its end).
            match read(StreamPosition::Position(from_version), true).await? {
                StreamRead::Events(events) if events.is_empty() => {
                    match read(StreamPosition::End, true).await? {
                        StreamRead::Events(events) => StreamRead::Events(
                            events.into_iter().filter(|e| e.revision <= from_version).collect(),
                        ),
                        other => other,
                    }
                }
                other => other,
            }
        }
    };
    let events = match events {
        StreamRead::Missing => return Ok(Vec::new()),
        StreamRead::Deleted => return Err(deleted()),
        StreamRead::Events(events) => events,
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    let in_range = |e: &&kurrentdb::RecordedEvent| match direction {
        Direction::Forwards => e.revision >= from_version,
        Direction::Backwards => e.revision <= from_version,
    };
    events.iter().filter(in_range).take(max).map(|e| decode(&inner.names, e)).collect()
}

/// The filter every `$all` read and subscription sends: pop's streams only.
pub(crate) fn pop_filter(inner: &Inner) -> SubscriptionFilter {
    SubscriptionFilter::on_stream_name().regex(inner.names.filter_regex())
}

/// KurrentDB reads `$all` from a position inclusively; pop reads after it. `START` reads from
/// the start of the log (no event sits at (0, 0): a KurrentDB log opens with its epoch
/// record).
pub(crate) fn all_from(after: Position) -> StreamPosition<kurrentdb::Position> {
    if after == Position::START {
        StreamPosition::Start
    } else {
        StreamPosition::Position(codec::to_position(after))
    }
}

pub(crate) async fn read_all(
    inner: &Inner,
    after: Position,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    check_read_max(max)?;
    if max == 0 {
        return Ok(Vec::new());
    }
    let mut from = after;
    loop {
        // One more than asked for: the event at `from` itself comes back first.
        let options = ReadAllOptions::default()
            .forwards()
            .position(all_from(from))
            .max_count(max + 1)
            .filter(pop_filter(inner));
        let mut read = inner
            .client
            .read_all(&options)
            .await
            .map_err(|e| map_error("reading $all", "$all", e))?;
        let mut raw = Vec::new();
        let mut bytes = 0usize;
        let mut scanned_to = None;
        while raw.len() < max && bytes < MAX_READ_BATCH_BYTES {
            match read.next().await {
                Ok(Some(resolved)) => {
                    let Some(event) = resolved.event else { continue };
                    let position = from_position(event.position);
                    if position <= from {
                        continue;
                    }
                    scanned_to = Some(position);
                    if !inner.names.is_pop_event(event.stream_id(), &event.event_type) {
                        continue;
                    }
                    bytes = bytes.saturating_add(event.data.len() + event.custom_metadata.len());
                    raw.push(event);
                }
                Ok(None) => break,
                Err(e) => return Err(map_error("reading $all", "$all", e)),
            }
        }
        let Some(scanned_to) = scanned_to else {
            return Ok(Vec::new());
        };
        let kept = drop_deleted(inner, raw).await?;
        if !kept.is_empty() {
            return kept.iter().map(|e| decode(&inner.names, e)).collect();
        }
        // A page of nothing but deleted streams' events is not the end of the log.
        from = scanned_to;
    }
}

/// `events` without those of tombstoned streams, in order. Asks the server once per stream
/// not already known deleted (a tombstone is permanent; a live stream is asked again next
/// time, as it may be deleted since).
pub(crate) async fn drop_deleted(
    inner: &Inner,
    events: Vec<kurrentdb::RecordedEvent>,
) -> Result<Vec<kurrentdb::RecordedEvent>, StoreError> {
    let known: HashSet<Arc<str>> = {
        let deleted = inner.deleted.lock().map_err(|_| StoreError::Closed)?;
        events
            .iter()
            .filter(|e| deleted.contains(e.stream_id()))
            .map(|e| Arc::from(e.stream_id()))
            .collect()
    };
    let to_ask: HashSet<&str> =
        events.iter().map(|e| e.stream_id()).filter(|s| !known.contains(*s)).collect();
    // Boxed: the borrow checker cannot see through a lazily mapped stream of async blocks.
    let checks: Vec<BoxFuture<'_, Result<(&str, bool), StoreError>>> = to_ask
        .into_iter()
        .map(|stream| {
            async move {
                match read_raw(inner, stream, StreamPosition::End, true, 1, usize::MAX).await? {
                    StreamRead::Deleted => Ok((stream, true)),
                    StreamRead::Missing | StreamRead::Events(_) => Ok((stream, false)),
                }
            }
            .boxed()
        })
        .collect();
    let answers: Vec<Result<(&str, bool), StoreError>> =
        futures::stream::iter(checks).buffer_unordered(DELETED_CHECKS_IN_FLIGHT).collect().await;
    let mut gone: HashSet<Arc<str>> = known;
    for answer in answers {
        let (stream, deleted) = answer?;
        if deleted {
            gone.insert(Arc::from(stream));
        }
    }
    if gone.is_empty() {
        return Ok(events);
    }
    {
        let mut deleted = inner.deleted.lock().map_err(|_| StoreError::Closed)?;
        if deleted.len() + gone.len() > super::DELETED_CACHE {
            deleted.clear();
        }
        deleted.extend(gone.iter().cloned());
    }
    Ok(events.into_iter().filter(|e| !gone.contains(e.stream_id())).collect())
}

/// Records read per page when looking for the head backwards: the newest records passing
/// the stream filter are pop's events, but for tombstones of just-reaped streams.
const HEAD_PAGE: usize = 64;

/// The position of the last of pop's events in the log (those of deleted streams included,
/// as the contract allows), or `START`.
pub(crate) async fn head(inner: &Inner) -> Result<Position, StoreError> {
    Ok(last_in_log(inner).await?.map_or(Position::START, |e| from_position(e.position)))
}

/// The commit time of the last of pop's events in the log, in microseconds (`i64::MIN` for
/// none): where the store's clock starts ([`crate::clock::monotonic`]).
pub(crate) async fn last_commit(inner: &Inner) -> Result<i64, StoreError> {
    let Some(event) = last_in_log(inner).await? else { return Ok(i64::MIN) };
    match decode(&inner.names, &event) {
        Ok(decoded) => Ok(decoded.recorded_at.timestamp_micros()),
        // Not a reason to refuse to connect (reads of it fail on their own, saying why): the
        // clock then starts from the wall clock (review-s37).
        Err(error) => {
            tracing::warn!(%error, "the log's last event does not decode; its commit time is not the clock's floor");
            Ok(i64::MIN)
        }
    }
}

/// The last of pop's events in the log, walking `$all` backwards a page at a time.
async fn last_in_log(inner: &Inner) -> Result<Option<kurrentdb::RecordedEvent>, StoreError> {
    let fail = |e| map_error("reading the head of $all", "$all", e);
    let mut from = StreamPosition::End;
    let mut below: Option<Position> = None;
    loop {
        let options = ReadAllOptions::default()
            .backwards()
            .position(from)
            .max_count(HEAD_PAGE)
            .filter(pop_filter(inner));
        let mut read = inner.client.read_all(&options).await.map_err(fail)?;
        let mut oldest = None;
        while let Some(resolved) = read.next().await.map_err(fail)? {
            let Some(event) = resolved.event else { continue };
            let position = from_position(event.position);
            // Whether a backwards read includes its start is not documented: skip what the
            // previous page already looked at.
            if below.is_some_and(|b| position >= b) {
                continue;
            }
            if inner.names.is_pop_event(event.stream_id(), &event.event_type) {
                return Ok(Some(event));
            }
            oldest = Some(event.position);
        }
        match oldest {
            Some(p) => {
                below = Some(from_position(p));
                from = StreamPosition::Position(p);
            }
            None => return Ok(None),
        }
    }
}
