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

    /// The backend holds a log pop must not write to as it stands (a PostgreSQL log restored
    /// into a cluster whose transaction ids are behind its positions); the message says why and
    /// what to do.
    #[error("the event store cannot be used: {0}")]
    Unusable(String),

    /// What the backend holds cannot be read back as events (a value out of range, a bad
    /// uuid…). Never caused by the caller.
    #[error("stored events are corrupt: {0}")]
    Corrupt(String),

    /// A write whose commit failed past the point where it may already be stored (a
    /// PostgreSQL connection closed with the group's COMMIT on its way; an IO error while
    /// SQLite wrote or synced the commit): whether it was stored is not known (ops3am21,
    /// ops3am25: such writes were stored, and answered "nothing was done"). `why` says which.
    #[error("the storage engine failed: committing a group of writes: {why}")]
    OutcomeUnknown {
        why: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

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

    /// Whether it is [`StoreError::OutcomeUnknown`]: a write that may or may not be stored.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::OutcomeUnknown { .. })
    }

    /// Whether the embedded store's file itself is damaged (SQLite: "database disk image is
    /// malformed", "file is not a database"): no retry helps; a backup or an export does.
    pub fn is_damaged_file(&self) -> bool {
        let source = match self {
            StoreError::Backend { source, .. } | StoreError::OutcomeUnknown { source, .. } => {
                source
            }
            _ => return false,
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(e) = cause {
            match e.downcast_ref::<rusqlite::Error>() {
                Some(rusqlite::Error::SqliteFailure(f, message)) => {
                    // A header whose schema format number (byte 47) SQLite does not know reads
                    // as a plain SQLITE_ERROR, "unsupported file format": pop only ever wrote
                    // format 4, so that is an edited or damaged file (auditor55 L1: exit 1).
                    return matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                    ) || message.as_deref() == Some("unsupported file format");
                }
                // A value of the wrong type where pop's schema has none (a NULL stream id):
                // a page overwritten in place reads so (auditor54: exit 1 for it).
                Some(
                    rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::FromSqlConversionFailure(..),
                ) => return true,
                _ => {}
            }
            cause = e.source();
        }
        false
    }

    /// Whether re-reading the stream and deciding again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::WrongExpectedVersion { .. })
    }

    /// Whether the failure is the storage's condition rather than the request's or the
    /// data's, so the same request may succeed later: the disk is full, the database restarts,
    /// is unreachable or read-only, its connections ran out, the store is closing. Clients are
    /// told to retry (UNAVAILABLE, HTTP 503 with `Retry-After`) and readiness drops while it
    /// lasts. A failure this does not recognise stays an internal error: retrying a bug only
    /// hides it.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Closed => true,
            StoreError::Backend { source, .. } | StoreError::OutcomeUnknown { source, .. } => {
                unavailable_chain(source.as_ref())
            }
            _ => false,
        }
    }
}

/// Whether the first error of `e`'s chain that tells says the storage is unavailable.
fn unavailable_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(verdict) = unavailable_cause(e) {
            return verdict;
        }
        cause = e.source();
    }
    false
}

/// Whether a PostgreSQL error of this SQLSTATE says the database cannot serve now (an outage,
/// retryable once the operator or the database mends it), not that pop asked for something
/// wrong. 08: connection exception; 53: insufficient resources (53100 disk full, 53300 too many
/// connections); 57P01-57P04: shutting down, restarting, not accepting connections yet, the
/// database dropped; 25006: a read-only transaction (a primary turned read-only or a standby);
/// 40001/40P01: serialization failure or deadlock; 28: the credentials refused (a password
/// rotated, a Secret wrong: operator60 M1, it was INTERNAL, so clients did not retry and the
/// `outcome="unavailable"` alert did not fire); 3D000: the database does not exist.
pub(crate) fn sqlstate_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("28")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P04" | "25006" | "40001" | "40P01" | "3D000"
        )
}

/// Whether one error of a backend failure's chain says the storage is unavailable (`None`:
/// this error does not tell; look at its source).
fn unavailable_cause(e: &(dyn std::error::Error + 'static)) -> Option<bool> {
    if e.is::<std::io::Error>() {
        return Some(true);
    }
    if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
        use rusqlite::ErrorCode as C;
        return Some(matches!(
            e.sqlite_error_code(),
            Some(
                C::DiskFull
                    | C::SystemIoFailure
                    | C::CannotOpen
                    | C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::ReadOnly
                    | C::OutOfMemory
            )
        ));
    }
    if let Some(e) = e.downcast_ref::<tokio_postgres::Error>() {
        if let Some(db) = e.as_db_error() {
            return Some(sqlstate_unavailable(db.code().code()));
        }
        if e.is_closed() {
            return Some(true);
        }
        // Connecting or IO: the source is an `io::Error`.
        return None;
    }
    if let Some(e) = e.downcast_ref::<deadpool_postgres::PoolError>() {
        return match e {
            deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed => {
                Some(true)
            }
            deadpool_postgres::PoolError::Backend(inner) => Some(unavailable_chain(inner)),
            _ => Some(false),
        };
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_file_is_damaged_a_full_disk_is_not() {
        let malformed = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        );
        assert!(StoreError::backend("reading events", malformed).is_damaged_file());
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        assert!(!StoreError::backend("appending events", full).is_damaged_file());
        assert!(!StoreError::Closed.is_damaged_file());
        let null =
            rusqlite::Error::InvalidColumnType(1, "stream_id".into(), rusqlite::types::Type::Null);
        assert!(StoreError::backend("verifying the log", null).is_damaged_file());
    }

    #[test]
    fn a_postgres_outage_or_refused_credentials_are_unavailable_a_bad_statement_is_not() {
        for outage in ["08006", "53300", "57P01", "57P04", "28P01", "28000", "3D000", "40001"] {
            assert!(super::sqlstate_unavailable(outage), "{outage}");
        }
        // Syntax, an undefined table or column, a unique violation: pop's own doing.
        for bug in ["42601", "42P01", "42703", "23505", "22P02"] {
            assert!(!super::sqlstate_unavailable(bug), "{bug}");
        }
    }

    #[test]
    fn a_full_disk_or_lost_io_is_unavailable_a_bug_is_not() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        assert!(StoreError::backend("appending events", full).is_unavailable());
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::backend("connecting", io).is_unavailable());
        assert!(StoreError::Closed.is_unavailable());
        let misuse = rusqlite::Error::InvalidColumnIndex(9);
        assert!(!StoreError::backend("reading events", misuse).is_unavailable());
        assert!(!StoreError::Corrupt("bad row".into()).is_unavailable());
        let conflict = StoreError::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::NoStream,
            actual: ActualVersion::NoStream,
        };
        assert!(!conflict.is_unavailable());
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;

    /// A write whose outcome is not known is told by its kind, not by its text.
    #[test]
    fn an_outcome_unknown_is_a_kind_of_its_own() {
        let closed = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "closed");
        let why = crate::postgres::CONNECTION_CLOSED_IN_COMMIT;
        let unknown = StoreError::OutcomeUnknown { why, source: Arc::new(closed()) };
        assert!(unknown.outcome_unknown());
        assert!(unknown.to_string().contains("before the commit was answered"), "{unknown}");
        assert!(!StoreError::backend("committing a group of writes", closed()).outcome_unknown());
    }
}
