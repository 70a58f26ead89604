//! What can go wrong in the store, as data: conflicts carry what was expected and what was
//! found, limits carry the limit and the size.

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use crate::{ActualVersion, ExpectedVersion};

/// A store failure. `Clone` because one failed group commit answers many appends with the
/// same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not where the append or delete expected it.
    #[error("stream {stream:?} was expected at {expected} but is at {actual}")]
    WrongExpectedVersion { stream: String, expected: ExpectedVersion, actual: ActualVersion },

    /// The stream was deleted: it cannot be read or appended to again.
    #[error("stream {stream:?} is deleted")]
    StreamDeleted { stream: String },

    /// An event id is already in the log, not as part of an identical earlier append to this
    /// stream (or it appears twice in one append).
    #[error("event id {event_id} is already used (append to stream {stream:?})")]
    DuplicateEventId { stream: String, event_id: Uuid },

    /// A request is larger than the store accepts.
    #[error("{limit} is {actual}, more than the limit of {max}")]
    LimitExceeded { limit: Limit, actual: usize, max: usize },

    /// The stream name is not usable.
    #[error("stream name {stream:?} is invalid: {reason}")]
    InvalidStreamName { stream: String, reason: &'static str },

    /// An event is malformed (nil id, empty type, data that is not JSON…).
    #[error("event {event_id} is invalid: {reason}")]
    InvalidEvent { event_id: Uuid, reason: String },

    /// A position this backend did not make (e.g. a two-part position given to a sequence
    /// backend).
    #[error("position {position} does not belong to this store")]
    InvalidPosition { position: String },

    /// An append without events.
    #[error("an append to stream {stream:?} has no events")]
    EmptyAppend { stream: String },

    /// The storage was written by a newer pop whose schema this build does not know.
    #[error("the store has schema version {found}; this build supports up to {supported}")]
    UnsupportedSchema { found: u32, supported: u32 },

    /// The store was closed, or its writer stopped.
    #[error("the event store is closed")]
    Closed,

    /// What the backend holds cannot be read back as events (a value out of range, a bad
    /// uuid…). Never caused by the caller.
    #[error("stored events are corrupt: {0}")]
    Corrupt(String),

    /// The storage engine failed (IO, disk full, a lock held by another process…).
    #[error("the storage engine failed: {context}")]
    Backend {
        context: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps an engine error with what the store was doing.
    pub fn backend(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Backend { context, source: Arc::new(source) }
    }

    /// Whether re-reading the stream and deciding again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::WrongExpectedVersion { .. })
    }
}

/// Which limit of [`crate::limits`] a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`crate::limits::MAX_EVENT_DATA_BYTES`]
    EventDataBytes,
    /// [`crate::limits::MAX_EVENT_METADATA_BYTES`]
    EventMetadataBytes,
    /// [`crate::limits::MAX_EVENT_TYPE_BYTES`]
    EventTypeBytes,
    /// [`crate::limits::MAX_EVENTS_PER_APPEND`]
    EventsPerAppend,
    /// [`crate::limits::MAX_APPEND_BYTES`]
    AppendBytes,
    /// [`crate::limits::MAX_STREAM_NAME_BYTES`]
    StreamNameBytes,
    /// [`crate::limits::MAX_READ_BATCH`]
    ReadBatch,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::EventDataBytes => "event data size in bytes",
            Limit::EventMetadataBytes => "event metadata size in bytes",
            Limit::EventTypeBytes => "event type name length in bytes",
            Limit::EventsPerAppend => "number of events in one append",
            Limit::AppendBytes => "size of one append in bytes",
            Limit::StreamNameBytes => "stream name length in bytes",
            Limit::ReadBatch => "number of events asked for in one read",
        })
    }
}
