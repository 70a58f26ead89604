//! Appends and deletes, with pop's event-id uniqueness on top of KurrentDB.
//!
//! **Claims.** KurrentDB checks event ids only to make an identical re-send to the same place
//! of the same stream idempotent; it accepts an id already used elsewhere. Pop's contract
//! refuses that ([`StoreError::DuplicateEventId`]), so before appending, every event id is
//! *bound* to the place it will take: one event in the id's claim stream (`pop.id-<uuid>`)
//! naming the stream, the version and the first version of the append. The claim is written
//! with KurrentDB's own optimistic concurrency (`NoStream`), so of two appends reusing an id
//! only one binds it, whatever replica they come from. Identical copies of one append write
//! identical claims (same KurrentDB event id, derived from the binding), which KurrentDB
//! answers idempotently, so racing re-sends still all succeed.
//!
//! **Exact places.** Pop appends every batch at an exact place: `Any` and `StreamExists` read
//! the stream's version first and append with that revision, retrying when another writer got
//! there first. So a binding always names where the event is, or where an append that can
//! still succeed would put it.
//!
//! **Orphans.** A binding whose append failed (a conflict after the claims were written, a
//! crash) is an orphan once its stream has moved past the append's first version without the
//! id in place: that append can never succeed any more. An orphaned id may be bound again
//! (compare-and-set on the claim stream's revision), so an id is never lost to a failed
//! attempt; a binding whose append may still succeed is respected.
//!
//! **Re-sends.** An append whose first id is bound to this stream, whose events sit there in
//! order from that place, and whose expectation allows that place, is answered with the
//! original result, as on the other backends.

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kurrentdb::{AppendToStreamOptions, EventData, StreamState, TombstoneStreamOptions};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Inner;
use super::codec::{
    self, CLAIM_TYPE, check_writable_stream, encode, encoded_size, exact_state, map_error,
};
use super::read::{current, events_at, last_event};
use crate::limits::check_append;
use crate::{ActualVersion, AppendResult, ExpectedVersion, NewEvent, Position, StoreError};

/// Claims written at once for one append: a 10,000-event append binds its ids in pages of
/// this many requests instead of 10,000 at a time.
pub const CLAIMS_IN_FLIGHT: usize = 64;

/// Times an append re-reads its stream after another writer moved it (only `Any` and
/// `StreamExists` retry; an exact expectation fails at once). Past it the append fails with
/// a backend error rather than spinning under contention.
pub const MAX_APPEND_ATTEMPTS: usize = 32;

/// Times one id's claim is re-read and re-bound when racing other binders.
const MAX_CLAIM_ATTEMPTS: usize = 8;

/// Where an event id is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Binding {
    pub stream: String,
    /// The version the event takes.
    pub version: u64,
    /// The first version of the append that bound it: that append expects the stream at
    /// `first - 1` (or no stream for 0).
    pub first: u64,
}

/// Namespace of the KurrentDB event ids of claim events (UUID v5 of the binding), so two
/// identical bindings are one idempotent write.
const CLAIM_NAMESPACE: Uuid = Uuid::from_u128(0x5c0f_6b52_8f7e_4d3a_9a51_0d1e_7b2c_4f60);

impl Binding {
    fn claim_event_id(&self, event_id: Uuid) -> Uuid {
        let key = format!("{event_id}\n{}\n{}\n{}", self.stream, self.version, self.first);
        Uuid::new_v5(&CLAIM_NAMESPACE, key.as_bytes())
    }

    fn to_event(&self, event_id: Uuid) -> Result<EventData, StoreError> {
        let data = serde_json::to_vec(self)
            .map_err(|e| StoreError::backend("encoding an event-id claim", e))?;
        Ok(EventData::binary(CLAIM_TYPE, data.into()).id(self.claim_event_id(event_id)))
    }
}

/// The binding of `event_id` and the claim stream's revision, if it has one.
async fn binding_of(inner: &Inner, event_id: Uuid) -> Result<Option<(u64, Binding)>, StoreError> {
    let stream = inner.names.claim_stream(event_id);
    let Some(event) = last_event(inner, &stream).await? else {
        return Ok(None);
    };
    let last = event.revision;
    let binding: Binding = serde_json::from_slice(&event.data).map_err(|e| {
        StoreError::Corrupt(format!("the claim of event id {event_id} is unreadable: {e}"))
    })?;
    Ok(Some((last, binding)))
}

/// Whether the append that made `binding` can no longer put `event_id` where it says.
async fn is_orphan(inner: &Inner, event_id: Uuid, binding: &Binding) -> Result<bool, StoreError> {
    let version = match current(inner, &binding.stream).await {
        // A deleted stream's events are gone; its ids are free again, as on the other
        // backends.
        Err(StoreError::StreamDeleted { .. }) => return Ok(true),
        other => other?,
    };
    // The binder expected the stream at `first - 1`; once it is at `first` or later that
    // append cannot succeed, so either it did (the id is in place) or it never will.
    if version.is_none_or(|v| v < binding.first) {
        return Ok(false);
    }
    let at = events_at(inner, &binding.stream, binding.version, 1).await?;
    Ok(at.first().is_none_or(|e| e.id != event_id))
}

/// How binding one id went.
enum Bound {
    Yes,
    /// The id is bound elsewhere, by an append that succeeded or still may.
    Elsewhere,
}

/// Binds `event_id` to `want`.
async fn bind(inner: &Inner, event_id: Uuid, want: &Binding) -> Result<Bound, StoreError> {
    let stream = inner.names.claim_stream(event_id);
    let mut state = StreamState::NoStream;
    for _ in 0..MAX_CLAIM_ATTEMPTS {
        let options = AppendToStreamOptions::default().stream_state(state);
        match inner
            .client
            .append_to_stream(stream.as_str(), &options, want.to_event(event_id)?)
            .await
        {
            Ok(_) => return Ok(Bound::Yes),
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => {}
            Err(e) => return Err(map_error("binding an event id", &stream, e)),
        }
        let Some((revision, found)) = binding_of(inner, event_id).await? else {
            // Bound a moment ago and unreadable now cannot happen (claim streams are never
            // deleted); try again from scratch.
            state = StreamState::NoStream;
            continue;
        };
        if found.stream == want.stream && found.version == want.version {
            return Ok(Bound::Yes);
        }
        if !is_orphan(inner, event_id, &found).await? {
            return Ok(Bound::Elsewhere);
        }
        state = StreamState::StreamRevision(revision);
    }
    Err(StoreError::backend(
        "binding an event id",
        Contention(format!("the claim of {event_id} kept changing")),
    ))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Contention(String);

/// Binds every event of an append starting at `first`; the first id bound elsewhere, if any.
async fn bind_all(
    inner: &Inner,
    stream: &str,
    first: u64,
    events: &[NewEvent],
) -> Result<Option<Uuid>, StoreError> {
    // Boxed: the borrow checker cannot see through a lazily mapped stream of async blocks.
    let bindings: Vec<BoxFuture<'_, Result<(Uuid, Bound), StoreError>>> = (0u64..)
        .zip(events)
        .map(|(offset, event)| {
            let want = Binding { stream: stream.to_owned(), version: first + offset, first };
            let event_id = event.event_id;
            async move { bind(inner, event_id, &want).await.map(|b| (event_id, b)) }.boxed()
        })
        .collect();
    let mut results = futures::stream::iter(bindings).buffer_unordered(CLAIMS_IN_FLIGHT);
    let mut clash = None;
    while let Some(result) = results.next().await {
        if let (event_id, Bound::Elsewhere) = result? {
            clash.get_or_insert(event_id);
        }
    }
    Ok(clash)
}

/// The original result of an identical earlier append, if `events` are one.
async fn replay(
    inner: &Inner,
    stream: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Option<AppendResult>, StoreError> {
    let Some(first) = events.first() else { return Ok(None) };
    let Some((_, binding)) = binding_of(inner, first.event_id).await? else {
        return Ok(None);
    };
    if binding.stream != stream {
        return Ok(None);
    }
    let place = binding.version;
    let placed_as_expected = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::StreamExists => place > 0,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(_) => {
            expected.first_new_version() == Some(place)
        }
    };
    if !placed_as_expected {
        return Ok(None);
    }
    let found = events_at(inner, stream, place, events.len()).await?;
    let same =
        found.len() == events.len() && found.iter().zip(events).all(|(f, e)| f.id == e.event_id);
    match found.last() {
        Some(last) if same => Ok(Some(AppendResult {
            version: last.revision,
            position: codec::from_position(last.position),
        })),
        _ => Ok(None),
    }
}

/// The position of the event at `version` of `stream` (just appended).
async fn position_at(inner: &Inner, stream: &str, version: u64) -> Result<Position, StoreError> {
    // The append's answer carries a position too, but which record of a multi-event write it
    // names is not documented; pop's result is the last event's position, exactly as
    // `read_all` reports it, so it is read back.
    match events_at(inner, stream, version, 1).await?.first() {
        Some(e) => Ok(codec::from_position(e.position)),
        None => Err(StoreError::Corrupt(format!(
            "stream {stream:?} has no event at version {version} right after appending it"
        ))),
    }
}

pub(crate) async fn append(
    inner: &Inner,
    stream: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendResult, StoreError> {
    check_append(stream, &events)?;
    check_writable_stream(stream)?;
    let server = inner.names.server(stream);
    // Errors name pop's stream, not the server's (namespaced) one.
    let named = |e: StoreError| match e {
        StoreError::StreamDeleted { .. } => StoreError::StreamDeleted { stream: stream.to_owned() },
        other => other,
    };
    let now = (inner.clock)();
    let encoded: Vec<EventData> =
        events.iter().map(|e| encode(e, now)).collect::<Result<_, _>>()?;
    let size: usize = events.iter().map(encoded_size).sum();
    let count = events.len() as u64;
    for _ in 0..MAX_APPEND_ATTEMPTS {
        let version = current(inner, &server).await.map_err(named)?;
        if !expected.admits(version) {
            // A re-send of an append that succeeded looks like a conflict.
            return match replay(inner, &server, expected, &events).await? {
                Some(result) => Ok(result),
                None => Err(StoreError::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    actual: ActualVersion::from_current(version),
                }),
            };
        }
        let first = version.map_or(0, |v| v + 1);
        if let Some(event_id) = bind_all(inner, &server, first, &events).await? {
            // An `Any` re-send lands here: its ids are bound where they already are.
            return match replay(inner, &server, expected, &events).await? {
                Some(result) => Ok(result),
                None => Err(StoreError::DuplicateEventId { stream: stream.to_owned(), event_id }),
            };
        }
        let options = AppendToStreamOptions::default().stream_state(exact_state(first));
        match inner.client.append_to_stream(server.as_str(), &options, encoded.clone()).await {
            // New, or KurrentDB's idempotent answer to an identical copy that won the race:
            // either way the events sit at `first..`.
            Ok(_) => {
                let last = first + count - 1;
                let position = position_at(inner, &server, last).await?;
                return Ok(AppendResult { version: last, position });
            }
            // Another writer moved the stream: decide again from its new version.
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => {
                return Err(match map_error("appending", stream, e) {
                    StoreError::LimitExceeded { limit, max, .. } => {
                        StoreError::LimitExceeded { limit, actual: size, max }
                    }
                    other => other,
                });
            }
        }
    }
    Err(StoreError::backend(
        "appending",
        Contention(format!(
            "stream {stream:?} moved under {MAX_APPEND_ATTEMPTS} attempts in a row"
        )),
    ))
}

pub(crate) async fn delete_stream(
    inner: &Inner,
    stream: &str,
    expected: ExpectedVersion,
) -> Result<(), StoreError> {
    crate::limits::check_stream_name(stream)?;
    check_writable_stream(stream)?;
    let server = inner.names.server(stream);
    let options = TombstoneStreamOptions::default().stream_state(codec::stream_state(expected));
    match inner.client.tombstone_stream(server.as_str(), &options).await {
        Ok(_) => {
            if let Ok(mut deleted) = inner.deleted.lock() {
                if deleted.len() >= super::DELETED_CACHE {
                    deleted.clear();
                }
                deleted.insert(server.as_str().into());
            }
            Ok(())
        }
        Err(kurrentdb::Error::ResourceDeleted) => {
            Err(StoreError::StreamDeleted { stream: stream.to_owned() })
        }
        Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
            Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                actual: codec::actual_version(current),
            })
        }
        // The server refuses a tombstone at the wrong version with a gRPC status the client
        // does not map (FAILED_PRECONDITION, "wrong-expected-version" in its metadata, which
        // the client drops): read where the stream is instead.
        Err(kurrentdb::Error::Grpc { code: tonic::Code::FailedPrecondition, .. }) => {
            let actual = match current(inner, &server).await {
                Ok(version) => ActualVersion::from_current(version),
                Err(StoreError::StreamDeleted { .. }) => {
                    return Err(StoreError::StreamDeleted { stream: stream.to_owned() });
                }
                Err(e) => return Err(e),
            };
            Err(StoreError::WrongExpectedVersion { stream: stream.to_owned(), expected, actual })
        }
        Err(e) => Err(map_error("deleting a stream", stream, e)),
    }
}
