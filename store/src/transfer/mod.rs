//! Export and import of the log: a portable, verifiable copy of the history as JSON Lines, and
//! the way from one store to another (the embedded store to PostgreSQL).
//!
//! The file, one JSON object per line:
//! 1. a manifest (`"kind":"manifest"`): format version, the source store's kind, the pop
//!    version that wrote it, the position it starts after (`since`), how many events, pruned
//!    hash rows and tombstones follow, the first and last position, and the public key (and
//!    its id) that signs the last line;
//! 2. the log's entries in global order: each event as a CloudEvents 1.0 object in its JSON
//!    format (`specversion`, `id` = the event id, `source`, `subject` = the stream, `type`,
//!    `time` = the commit time to the microsecond, `datacontenttype`, `data` = the event's
//!    exact JSON bytes, or `data_base64` when they are not one line of JSON), with pop's
//!    extension attributes (CloudEvents names are lower-case alphanumerics): `popposition`,
//!    `popversion` (in the stream), `popschemaversion`, `popmetadata` (the exact metadata
//!    JSON as a string), `popdigest` and `popchain` ([`crate::digest`]), `popactor`; and the
//!    hash row of each event of a stream deleted on purpose (`"kind":"pruned"`: position,
//!    stream, version, chain link), so the log hash still recomputes;
//! 3. the tombstones (`"kind":"tombstone"`: stream, last version, kept head hash, deletion
//!    time), so a reaped stream still verifies after import;
//! 4. a signed checkpoint (`"kind":"checkpoint"`, [`crate::commitment::Checkpoint`]) over
//!    exactly the entries exported: count, log hash, where each stream ended, signed with the
//!    source's checkpoint key.
//!
//! Export reads one snapshot and checks each event's digest and chain as it writes (a log that
//! does not verify is not exported). [`ExportReader`] checks a file by the same rules
//! `pop verify` applies to a store ([`crate::verify::Walker`],
//! [`crate::commitment::LogWalker`]): every digest, chain, version and stream head, every
//! reaped stream's recorded head, and the checkpoint's signature, count, log hash and stream
//! list; the first problem is reported with its line number. [`ExportReader::read_parallel`]
//! does the same with each line's parsing, decoding and digest (which depend on the line alone)
//! on one thread per core and the checks that depend on the lines before it on one thread, in
//! file order, so it reports the same first problem. A backend's import writes what
//! the reader hands out and makes it the store only after the reader reached the end without
//! a problem (PostgreSQL: one transaction, committed then; the embedded store: a staging
//! file, renamed into place then): a bad file leaves the store as it was (empty). Events keep
//! their commit
//! time (the digest covers it), stream, version, id and bytes, so the chains recompute
//! identically; positions are the target store's own.
//!
//! The code: `json.rs` the raw-JSON check of an event's data, `text.rs` how times, numbers and
//! hashes are written and read, `export.rs` the [`Exporter`], `import.rs` the [`ExportReader`]
//! and its checks, `line.rs` how a line is parsed (serde, and a fast path for the event lines
//! pop writes, which reads them exactly as serde does or not at all), `parallel.rs` the
//! reading of a file on every core ([`ExportReader::read_parallel`]).

mod export;
mod import;
mod json;
mod line;
mod parallel;
mod text;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Position;
use crate::commitment::{Checkpoint, LogEntry, key_id};
use crate::digest::{Hash, data_hash, hex};
use crate::verify::Break;

pub use export::Exporter;
pub use import::{ExportReader, ImportSummary, KeySource};

/// The version of the file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The CloudEvents `source` of every exported event.
pub const SOURCE: &str = "urn:pop:log";

/// Bytes one line may have at most when read (an event is at most a few MiB by the append
/// limits; a checkpoint's stream list a few MiB): a longer line is refused, not buffered.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// What went wrong exporting or importing; `line`: the line of the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("line {line}: {message}")]
    Invalid { line: u64, message: String },
    #[error("the file {0}")]
    File(String),
    /// The file's last line is not the checkpoint its lines end with, or its signature does
    /// not hold: cut, edited or forged, as a line that does not verify is (reaudit59 L4: said
    /// as a file that could not be read).
    #[error("the file does not end with its checkpoint: {0}")]
    Unsigned(String),
    #[error("the target store is not empty ({0}): import only into an empty store")]
    NotEmpty(String),
    #[error("the source log does not verify, not exported: {0} (run `pop verify`)")]
    SourceBroken(Break),
    /// The source's events past its newest checkpoint were written over longer than the
    /// export allows ([`Exporter::refusing_unsealed_over`]): NOT VERIFIED, as
    /// `pop verify` says of them.
    #[error(
        "the source log is not verified, not exported: the {entries} entries from position {} \
         on, written over {} s, are covered by no signed checkpoint (run `pop verify`)",
        unsealed.from,
        unsealed.span().num_seconds()
    )]
    Unsealed { entries: u64, unsealed: crate::verify::Unsealed },
    /// An export's start that names no position of this log (auditor30: a two-part position
    /// on the embedded store was read as 0 and reported as a broken log; one past the end gave
    /// an empty export, exit 0).
    #[error("the export's start (--since) {0}")]
    Since(String),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl TransferError {
    /// An import's insert refused by the store's unique index of event ids said as what it
    /// is: two lines of the file carry one event id, which the digests do not cover (auditor30:
    /// the storage engine's own error, with no word of the file).
    pub(crate) fn named_duplicate_id(self) -> TransferError {
        let TransferError::Store(crate::StoreError::Backend { source, .. }) = &self else {
            return self;
        };
        let mut text = String::new();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(e) = cause {
            text.push_str(&e.to_string());
            cause = e.source();
        }
        if !(text.contains("events.event_id") || text.contains("pop_events_by_id")) {
            return self;
        }
        let id = text.split("(event_id)=(").nth(1).and_then(|rest| rest.split(')').next());
        TransferError::File(format!(
            "holds one event id on two lines{}: an event's \"id\" is not covered by its digest, \
             so an edited or copied one shows only here",
            id.map(|id| format!(" ({id})")).unwrap_or_default()
        ))
    }

    /// The line of the file the problem is on, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            TransferError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always `"manifest"`.
    pub kind: String,
    pub format_version: u32,
    /// `sqlite` or `postgres`.
    pub store: String,
    pub pop_version: String,
    /// The export holds the entries after this position ([`Position::START`]: the whole log).
    pub since: Position,
    pub events: u64,
    pub pruned: u64,
    pub tombstones: u64,
    pub first_position: Option<Position>,
    pub last_position: Option<Position>,
    /// [`key_id`] of `public_key`.
    pub key_id: String,
    /// Hex of the Ed25519 public key that signs the checkpoint on the last line.
    pub public_key: String,
}

impl Manifest {
    /// A manifest for an export of `store` after `since`; counts and positions are the
    /// backend's, read in the same snapshot as the entries.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &str,
        since: Position,
        events: u64,
        pruned: u64,
        tombstones: u64,
        first_position: Option<Position>,
        last_position: Option<Position>,
        key: &VerifyingKey,
    ) -> Manifest {
        Manifest {
            kind: "manifest".into(),
            format_version: FORMAT_VERSION,
            store: store.into(),
            pop_version: env!("CARGO_PKG_VERSION").into(),
            since,
            events,
            pruned,
            tombstones,
            first_position,
            last_position,
            key_id: key_id(key),
            public_key: hex(key.as_bytes()),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub manifest: Manifest,
    pub checkpoint: Checkpoint,
}

/// One event as exported and imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEvent {
    pub position: Position,
    pub stream: String,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// The commit time, microseconds since the epoch.
    pub recorded_at: i64,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
    /// The stream's chain link after the event, as stored.
    pub chain: Option<Hash>,
}

impl ExportEvent {
    /// The event borrowed, as [`Exporter::event`] takes it.
    pub fn view(&self) -> EventRef<'_> {
        EventRef {
            position: self.position,
            version: self.version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            data: &self.data,
            metadata: &self.metadata,
            chain: self.chain,
        }
    }
}

/// One event to export, borrowed from wherever the backend read it (its stream is the
/// [`StreamSlot`] given beside it): [`ExportEvent`] without a copy of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub position: Position,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    /// The commit time, microseconds since the epoch.
    pub recorded_at: i64,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
    /// The stream's chain link after the event, as stored.
    pub chain: Option<Hash>,
}

/// What depends on an event's data alone: its SHA-256 and whether it is written as it is
/// ([`json::raw_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataChecks {
    pub(crate) hash: Hash,
    pub(crate) raw: bool,
}

impl DataChecks {
    pub(crate) fn of(data: &[u8]) -> DataChecks {
        DataChecks { hash: data_hash(data), raw: json::raw_json(data) }
    }
}

/// A stream the exporter has met ([`Exporter::stream`]): its name is looked up once, not for
/// every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSlot(pub(super) usize);

/// A stream deleted on purpose: its last version and the head hash it kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub stream: String,
    pub version: Option<u64>,
    pub head: Option<Hash>,
    /// Microseconds since the epoch.
    pub deleted_at: i64,
}

/// One entry of the log in global order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Event(ExportEvent),
    /// The hash row of an event of a deleted stream.
    Pruned(LogEntry),
}

impl Entry {
    pub fn position(&self) -> Position {
        match self {
            Entry::Event(e) => e.position,
            Entry::Pruned(p) => p.position,
        }
    }
}

/// What an import's reading thread hands its writer ([`ExportReader::read_to_writer`]): items
/// in file order; `Ok(None)` once the whole file verified; the reading's error.
pub(crate) type ImportBatch = Result<Option<Vec<Item>>, TransferError>;

/// What an import hands a backend, in file order: entries, then tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Entry(Entry),
    Tombstone(Tombstone),
}
