//! pop's event store: the [`EventStore`] contract every backend keeps, the embedded SQLite
//! backend, the shared PostgreSQL backend ([`postgres`]), the KurrentDB backend (`kurrentdb`,
//! behind the cargo feature of that name), the one conformance suite every
//! backend must pass, and command execution ([`commands`]) that turns a pure `decide` into an
//! optimistic-concurrency append.
//!
//! The log is the only truth in pop. This crate must never:
//! - change, reorder or re-serialise an event once `append` has returned (data and metadata
//!   come back byte for byte);
//! - acknowledge an append before it is durable to the degree the operator chose
//!   ([`sqlite::Durability`]);
//! - let a reader see a global position before every position below it is readable (a
//!   subscriber that passes a position never gets an event at a lower one later);
//! - read a clock other than the injected [`Clock`] for anything it stores as time (the only
//!   other reading is the time prefix of the UUID v7 event ids [`commands`] mints), or panic on
//!   bad input: every limit and conflict is a typed [`StoreError`];
//! - know about the domain beyond the `Aggregate`/`EventCodec` traits used by [`commands`].

pub mod append_rule;
mod cache;
pub mod clock;
pub mod commands;
pub mod commitment;
pub mod conformance;
pub mod digest;
mod error;
mod event;
#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;
pub mod leader;
pub mod limits;
mod position;
pub mod postgres;
pub mod repeats;
pub mod sqlite;
mod subscribe;
#[cfg(feature = "test-cluster")]
pub mod test_cluster;
pub mod trace;
pub mod transfer;
pub mod verify;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// The type of [`RecordedEvent::data`] and [`RecordedEvent::metadata`]: cheap to clone and to
/// slice, derefs to `&[u8]`.
pub use bytes::Bytes;
pub use clock::{Clock, ClockOffset, CommitFloor, fixed_clock, system_clock};
pub use commands::{Commands, ExecuteError, Executed, Unavailable};
pub use error::{Limit, StoreError};
pub use event::{
    ActualVersion, AppendResult, Direction, EventMetadata, ExpectedVersion, NewEvent,
    RecordedEvent, TRACEPARENT_MAX_BYTES, TRACESTATE_MAX_BYTES, TRACESTATE_MAX_MEMBERS,
    valid_traceparent, valid_tracestate,
};
#[cfg(feature = "kurrentdb")]
pub use kurrentdb::{KurrentLeadership, KurrentOptions, KurrentStore, LeaseOptions};
pub use leader::{LeaderGuard, Leadership, ProcessLeadership};
pub use position::{Position, PositionParseError};
pub use postgres::{PgLeadership, PgOptions, PgStore};
pub use sqlite::{Durability, SqliteLogFile, SqliteOptions, SqliteStore};
pub use subscribe::{ReadAfter, SUBSCRIPTION_BATCH, subscribe_by_polling};

/// The refusal to chain a store of `events` events whose schema (version `found`) predates
/// the hash chain without `chain_unchained` (`pop serve --chain-unchained-history`): chained,
/// whatever it holds now is signed, an edit made before included (auditor54).
pub(crate) fn unchained_refused(found: u32, events: u64) -> StoreError {
    StoreError::Unusable(format!(
        "its schema is version {found}, from before pop chained its events, and it holds \
         {events} events: chaining them now would sign whatever they hold, edits outside pop \
         included, and nothing can check them first. If this is an older pop's store you trust \
         as it is, start `pop serve --chain-unchained-history` once; if it was pop's own, its \
         chain was dropped outside pop: restore it from a backup or a `pop export`"
    ))
}

/// The contract every backend keeps (DESIGN.md, "The store contract"). Object safe, so the
/// server holds an `Arc<dyn EventStore>` and picks the backend at runtime.
///
/// Versions: the first event of a stream has version 0; a stream's version is the version of
/// its last event. Positions: global, opaque, strictly increasing in commit order.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    ///
    /// Returns the stream's new version and the global position of the last event. A
    /// mismatch is [`StoreError::WrongExpectedVersion`]; a deleted stream is
    /// [`StoreError::StreamDeleted`]. Re-sending an append whose event ids were already
    /// written to this stream at the places this append would give them returns the original
    /// result and writes nothing; event ids reused any other way are
    /// [`StoreError::DuplicateEventId`]. An empty `events` is [`StoreError::EmptyAppend`].
    ///
    /// An append whose caller stops waiting (a dropped future, a timeout) may still commit;
    /// re-sending it with the same event ids tells which.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads up to `max` events of `stream` starting at version `from_version` (inclusive),
    /// in `direction`. Backwards from `u64::MAX` reads the latest events.
    ///
    /// A stream that never existed reads as an empty list (not an error); a deleted stream is
    /// [`StoreError::StreamDeleted`]. The result may hold fewer than `max` events before the
    /// end (a byte cap, [`limits::MAX_READ_BATCH_BYTES`]); only an empty result means the end.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `max` events of the global log after `after` (exclusive) in global order.
    /// Events of deleted streams are gone. As with `read_stream`, only an empty result means
    /// nothing more is committed yet.
    async fn read_all(&self, after: Position, max: usize)
    -> Result<Vec<RecordedEvent>, StoreError>;

    /// Every event after `after`, first those already committed (catch-up), then each new one
    /// as it commits (live), in global order, each exactly once. The stream ends after an
    /// `Err` (e.g. [`StoreError::Closed`]); resume from the last position seen.
    fn subscribe_all(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>>;

    /// Deletes `stream` if it is at `expected`: its events leave the log for good and a
    /// tombstone stays, so the stream reads as deleted and can never be appended to again.
    /// Deleting a stream that never existed (with `Any` or `NoStream`) leaves a tombstone too.
    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<(), StoreError>;

    /// The position of the last committed event ([`Position::START`] for an empty log). May
    /// be the position of an event since deleted.
    async fn head(&self) -> Result<Position, StoreError>;

    /// Whether every position of this log is a single sequence number (`"<n>"`, made with
    /// [`Position::from_sequence`]), so a two-part `"<commit>/<prepare>"` position cannot be
    /// one of its own (the embedded store). `false` by default: the backends with two-part
    /// positions also print some as `"<n>"`.
    fn sequence_positions(&self) -> bool {
        false
    }

    /// The time this store's floor stands at (at least every commit time it stamped or found
    /// at open, and every time it gave a command: its times never go back,
    /// [`clock::monotonic`]); `None` when the backend keeps none (KurrentDB stamps its own).
    fn commit_floor(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        None
    }

    /// The time to give a command now, `wall` being the store's wall clock: the later of it and
    /// the floor run on ([`clock::CommitFloor::give`]), which becomes the floor, so the times
    /// given never go back, whatever the wall clock does between two commits.
    fn give_time(&self, wall: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        wall
    }

    /// The time now as the store's replicas agree on it: this process's wall clock, except on
    /// PostgreSQL, where it follows the database server's clock ([`Self::clock_offset`]), so
    /// that replicas whose clocks differ still stamp commands (leases among them) alike.
    fn wall_clock(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    /// How far [`Self::wall_clock`] is from this process's own clock (`None`: it is this
    /// process's clock).
    fn clock_offset(&self) -> Option<chrono::TimeDelta> {
        None
    }

    /// Why this process knows the log went back under it, if it does: a head read at a
    /// position before one it read earlier (a database restored from a backup while the
    /// process ran). For good: the read models of such a process would skip the positions the
    /// new events reuse, so it must restart.
    fn log_went_back(&self) -> Option<String> {
        None
    }

    /// Why this process is not the only writer it assumed it was, if it knows (the embedded
    /// store: its writer found another process's commits in the file, or the file went back):
    /// its leadership, leases and caches are not to be trusted, so it stays not ready until
    /// restarted. Readiness alone asks it; the read models still follow the file.
    fn changed_under(&self) -> Option<String> {
        None
    }

    /// Why no append can succeed because the store's own file is damaged, if this backend can
    /// tell (the embedded store: a commit failed with SQLite's "database disk image is
    /// malformed"): not ready until restarted on a sound file. Readiness alone asks it.
    fn damaged(&self) -> Option<String> {
        None
    }

    /// Why appends may soon fail for want of disk, if this backend can tell (the embedded
    /// store: free space under a floor where its file lives; a database server's disk is its
    /// own to watch). `/readyz` answers it.
    fn disk_trouble(&self) -> Option<String> {
        None
    }

    /// What most often makes [`EventStore::head`] slow on this backend while the database
    /// itself answers, for the operator (`None`: nothing to say).
    fn slow_head_hint(&self) -> Option<&'static str> {
        None
    }

    /// The group commits this handle's writers made since it opened, and the requests they
    /// answered (`None`: this backend does not group its commits).
    fn group_commits(&self) -> Option<CommitCounts> {
        None
    }
}

/// What [`EventStore::group_commits`] counts: their ratio is how many requests one
/// transaction carries on average (with the default durability, one fsync each; a group whose
/// every request was refused writes nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitCounts {
    /// Group commits that committed.
    pub groups: u64,
    /// Requests those groups answered, refused ones among them: appends, and on the embedded
    /// store also deletes and checkpoint seals.
    pub requests: u64,
}

/// The counters behind [`CommitCounts`], shared by a store's handle and its writers.
#[derive(Debug, Default)]
pub(crate) struct GroupCommits {
    groups: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicU64,
}

impl GroupCommits {
    /// A group of `requests` committed. Its requests are counted before the group, and
    /// [`GroupCommits::counts`] reads the groups first, so a reader never sees more groups
    /// than the requests they carried.
    pub(crate) fn record(&self, requests: usize) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        self.requests.fetch_add(u64::try_from(requests).unwrap_or(u64::MAX), Relaxed);
        self.groups.fetch_add(1, Release);
    }

    pub(crate) fn counts(&self) -> CommitCounts {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let groups = self.groups.load(Acquire);
        CommitCounts { groups, requests: self.requests.load(Relaxed) }
    }
}
