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

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::Position;
use crate::commitment::{Checkpoint, LogEntry, LogWalker, SignedCheckpoint, StreamMark, key_id};
use crate::digest::{DigestInput, GENESIS, Hash, chain, data_hash, event_digest, hex};
use crate::verify::{Break, EventRow, StreamRow, Walker};

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
    #[error("the target store is not empty ({0}): import only into an empty store")]
    NotEmpty(String),
    #[error("the source log does not verify, not exported: {0} (run `pop verify`)")]
    SourceBroken(Break),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl TransferError {
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
/// ([`raw_json`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataChecks {
    pub(crate) hash: Hash,
    pub(crate) raw: bool,
}

impl DataChecks {
    pub(crate) fn of(data: &[u8]) -> DataChecks {
        DataChecks { hash: data_hash(data), raw: raw_json(data) }
    }
}

/// A stream the exporter has met ([`Exporter::stream`]): its name is looked up once, not for
/// every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSlot(usize);

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

/// How deep arrays and objects may nest in data written as the `data` member as it is; deeper
/// data is written as `data_base64` (the check's stack is a bit per level).
const MAX_RAW_NESTING: u32 = 128;

/// Whether `data` can be written as the `data` member as it is: exactly one JSON value by
/// RFC 8259's grammar, in UTF-8 (a line of JSON must be: serde_json's `IgnoredAny`, which the
/// append's check uses, does not look inside strings, so data that passed it may not be), with
/// no whitespace around it and no line break in it (which would end the line), and not `null`
/// (which CloudEvents reads as no data). A check of the grammar in one pass that builds
/// nothing, so the line it goes into parses back ([`Line`]'s `data`) to the same bytes; data
/// it refuses goes as `data_base64`, which carries any bytes.
fn raw_json(data: &[u8]) -> bool {
    data != b"null" && std::str::from_utf8(data).is_ok() && json_grammar(data)
}

/// Spaces and tabs: the JSON whitespace that may stand inside a line (a line break may not).
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The end of the JSON string that starts at `i`, if one does.
fn json_string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match *b.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => match *b.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'u' => {
                    let hex = b.get(j + 2..j + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    j += 6;
                }
                _ => return None,
            },
            c if c < 0x20 => return None,
            _ => j += 1,
        }
    }
}

/// The end of the JSON number that starts at `i`, if one does.
fn json_number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| -> Option<usize> {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// An object's key at `i`, the colon after it and the blanks around: where its value starts.
fn json_key_end(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_blanks(b, json_string_end(b, i)?);
    (b.get(i) == Some(&b':')).then(|| skip_blanks(b, i + 1))
}

/// Whether `b` is exactly one JSON value from its first byte to its last, with spaces and
/// tabs only as whitespace, nested at most [`MAX_RAW_NESTING`] deep.
fn json_grammar(b: &[u8]) -> bool {
    // Bit `d` of `objects`: whether level `d` of the open arrays and objects is an object.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = 0;
    loop {
        // A value starts at `i`; `complete`: it was read whole (else a container was opened
        // and `i` is where its first value starts).
        let complete = match b.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                if depth == MAX_RAW_NESTING {
                    return false;
                }
                let object = open == b'{';
                i = skip_blanks(b, i + 1);
                if b.get(i) == Some(if object { &b'}' } else { &b']' }) {
                    i += 1;
                    true
                } else {
                    objects = if object { objects | (1 << depth) } else { objects & !(1 << depth) };
                    depth += 1;
                    if object {
                        match json_key_end(b, i) {
                            Some(j) => i = j,
                            None => return false,
                        }
                    }
                    false
                }
            }
            Some(b'"') => match json_string_end(b, i) {
                Some(j) => {
                    i = j;
                    true
                }
                None => return false,
            },
            Some(b'-' | b'0'..=b'9') => match json_number_end(b, i) {
                Some(j) => {
                    i = j;
                    true
                }
                None => return false,
            },
            Some(_) => {
                let rest = &b[i..];
                let Some(word) =
                    [&b"true"[..], b"false", b"null"].into_iter().find(|w| rest.starts_with(w))
                else {
                    return false;
                };
                i += word.len();
                true
            }
            None => return false,
        };
        if !complete {
            continue;
        }
        // A value ended at `i`: close what it ends, up to where the next value starts.
        loop {
            if depth == 0 {
                return i == b.len();
            }
            i = skip_blanks(b, i);
            let object = (objects >> (depth - 1)) & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    i = skip_blanks(b, i + 1);
                    if object {
                        match json_key_end(b, i) {
                            Some(j) => i = j,
                            None => return false,
                        }
                    }
                    break;
                }
                Some(b'}') if object => {
                    depth -= 1;
                    i += 1;
                }
                Some(b']') if !object => {
                    depth -= 1;
                    i += 1;
                }
                _ => return false,
            }
        }
    }
}

fn time_text(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// [`time_text`] appended to `out`: the digits written by hand for the years 0 to 9999 (every
/// commit time), the same text as chrono's (tested), else chrono's.
fn push_time(out: &mut Vec<u8>, micros: i64) {
    use chrono::{Datelike, Timelike};
    let t = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default();
    let year = t.year();
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        out.extend_from_slice(time_text(micros).as_bytes());
        return;
    }
    // Each part's digits, then what follows it.
    for (value, width, then) in [
        (year as u32, 4, b'-'),
        (t.month(), 2, b'-'),
        (t.day(), 2, b'T'),
        (t.hour(), 2, b':'),
        (t.minute(), 2, b':'),
        (t.second(), 2, b'.'),
        (t.nanosecond() / 1000, 6, b'Z'),
    ] {
        for i in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(i) % 10) as u8);
        }
        out.push(then);
    }
}

/// The decimal digits of `n` appended to `out` (as `Display` writes them).
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `position` appended to `out` as its `Display` writes it.
fn push_position(out: &mut Vec<u8>, position: Position) {
    match position.sequence() {
        Some(n) => push_u64(out, n),
        None => {
            push_u64(out, position.commit());
            out.push(b'/');
            push_u64(out, position.prepare());
        }
    }
}

/// The standard base64 of `bytes` appended to `out` (data that is not one line of JSON:
/// rare).
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
}

fn unknown_slot() -> TransferError {
    TransferError::File("was handed a stream slot of another export".into())
}

/// The hex of `hash` appended to `out` (as [`hex`] writes it).
fn push_hex(out: &mut Vec<u8>, hash: &Hash) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in hash {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// [`crate::EventMetadata`] as the export reads it for `popactor`: the same members with the
/// same types (so exactly the metadata `EventMetadata::from_json` reads yields an actor), the
/// strings borrowed from the bytes instead of copied.
// Only `actor` is used; the other members are read for their types.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataView<'a> {
    #[serde(borrow, default)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cid: Option<Cow<'a, str>>,
    #[serde(default)]
    causation_id: Option<Uuid>,
    #[serde(borrow, default)]
    actor: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    command: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tracestate: Option<Cow<'a, str>>,
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `&str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A stream the export has met: where its chain stands (checked against the source as it
/// is written) and where it ended so far (for the checkpoint, the rule of
/// [`crate::commitment::Sealer`]).
struct StreamState {
    name: String,
    /// The next version and the chain head, once an event of the stream was written.
    head: Option<(u64, Hash)>,
    /// Version, position and link of the stream's last entry so far.
    mark: Option<(u64, Position, Hash)>,
}

/// Writes an export: [`Exporter::new`] writes the manifest, [`Exporter::entry`] each entry in
/// global order, [`Exporter::finish`] the tombstones and the signed checkpoint.
pub struct Exporter<W: Write> {
    out: W,
    line: Vec<u8>,
    manifest: Manifest,
    /// Entries written and the log hash over them (the checkpoint's).
    count: u64,
    log_hash: Hash,
    /// Each stream met, in order of first appearance, and its index by name.
    streams: Vec<StreamState>,
    slots: HashMap<String, usize>,
    events: u64,
    pruned: u64,
    last: Option<Position>,
}

impl<W: Write> Exporter<W> {
    pub fn new(mut out: W, manifest: Manifest) -> Result<Exporter<W>, TransferError> {
        serde_json::to_writer(&mut out, &manifest).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(Exporter {
            out,
            line: Vec::with_capacity(4096),
            manifest,
            count: 0,
            log_hash: GENESIS,
            streams: Vec::new(),
            slots: HashMap::new(),
            events: 0,
            pruned: 0,
            last: None,
        })
    }

    /// The slot of the stream named `name` (one lookup of the name; a backend that knows its
    /// streams by number keeps the slot and passes it with each event).
    pub fn stream(&mut self, name: &str) -> StreamSlot {
        if let Some(&i) = self.slots.get(name) {
            return StreamSlot(i);
        }
        let i = self.streams.len();
        self.streams.push(StreamState { name: name.to_owned(), head: None, mark: None });
        self.slots.insert(name.to_owned(), i);
        StreamSlot(i)
    }

    /// The checks of an entry's position: after the previous entry's, and after `since`.
    fn place(&mut self, position: Position) -> Result<(), TransferError> {
        if self.last.is_some_and(|l| position <= l) || position <= self.manifest.since {
            return Err(TransferError::SourceBroken(Break {
                stream: String::new(),
                version: None,
                position: Some(position),
                reason: "the log handed out a position out of order".into(),
            }));
        }
        self.last = Some(position);
        Ok(())
    }

    /// Adds an entry to the checkpoint: the log hash, the count, where its stream ended.
    fn seal(&mut self, slot: StreamSlot, position: Position, version: u64, link: Option<&Hash>) {
        let stream = &mut self.streams[slot.0];
        self.log_hash =
            crate::commitment::fold_parts(&self.log_hash, position, &stream.name, version, link);
        self.count += 1;
        stream.mark = Some((version, position, *link.unwrap_or(&GENESIS)));
    }

    /// Writes one entry; the source's digest and chain are checked first (a stream whose
    /// first exported event is not its first event, in an export `--since`, is taken from
    /// its stored link on).
    pub fn entry(&mut self, entry: &Entry) -> Result<(), TransferError> {
        match entry {
            Entry::Event(e) => {
                let slot = self.stream(&e.stream);
                self.event(slot, &e.view())
            }
            Entry::Pruned(p) => {
                let slot = self.stream(&p.stream);
                self.pruned_entry(slot, p.position, p.version, p.link.as_ref())
            }
        }
    }

    /// Writes one event of the stream in `slot` ([`Exporter::stream`]), as [`Exporter::entry`].
    pub fn event(&mut self, slot: StreamSlot, e: &EventRef<'_>) -> Result<(), TransferError> {
        self.event_checked(slot, e, &DataChecks::of(e.data))
    }

    /// [`Exporter::event`] with the checks of the event's data already made (on another
    /// thread, say).
    pub(crate) fn event_checked(
        &mut self,
        slot: StreamSlot,
        e: &EventRef<'_>,
        checks: &DataChecks,
    ) -> Result<(), TransferError> {
        self.place(e.position)?;
        let since = self.manifest.since;
        let stream = self.streams.get_mut(slot.0).ok_or_else(unknown_slot)?;
        let hash = checks.hash;
        let digest = event_digest(&DigestInput {
            stream: &stream.name,
            version: e.version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            recorded_at_micros: e.recorded_at,
            metadata: e.metadata,
            data_hash: &hash,
        });
        let (intact, stored) = match stream.head {
            Some((next, head)) => {
                let link = chain(&head, &digest);
                (next == e.version && e.chain == Some(link), link)
            }
            None if e.version == 0 => {
                let link = chain(&GENESIS, &digest);
                (e.chain == Some(link), link)
            }
            // A stream begun before `since`: its stored link is taken from here on.
            None if since != Position::START => (e.chain.is_some(), e.chain.unwrap_or(GENESIS)),
            None => (false, GENESIS),
        };
        if !intact {
            return Err(TransferError::SourceBroken(Break {
                stream: stream.name.clone(),
                version: Some(e.version),
                position: Some(e.position),
                reason: "the event does not match its chain link, or a version is missing".into(),
            }));
        }
        stream.head = Some((e.version + 1, stored));
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
        line.extend_from_slice(
            e.event_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes(),
        );
        line.extend_from_slice(b"\",\"source\":\"");
        line.extend_from_slice(SOURCE.as_bytes());
        line.extend_from_slice(b"\",\"subject\":");
        json_str(line, &stream.name);
        line.extend_from_slice(b",\"type\":");
        json_str(line, e.event_type);
        line.extend_from_slice(b",\"time\":\"");
        push_time(line, e.recorded_at);
        line.extend_from_slice(b"\",\"datacontenttype\":\"application/json\",");
        if checks.raw {
            line.extend_from_slice(b"\"data\":");
            line.extend_from_slice(e.data);
        } else {
            line.extend_from_slice(b"\"data_base64\":\"");
            push_base64(line, e.data);
            line.push(b'"');
        }
        line.extend_from_slice(b",\"popposition\":\"");
        push_position(line, e.position);
        line.extend_from_slice(b"\",\"popversion\":");
        push_u64(line, e.version);
        line.extend_from_slice(b",\"popschemaversion\":");
        push_u64(line, u64::from(e.schema_version));
        match std::str::from_utf8(e.metadata) {
            Ok(text) => {
                line.extend_from_slice(b",\"popmetadata\":");
                json_str(line, text);
            }
            Err(_) => {
                line.extend_from_slice(b",\"popmetadatabase64\":\"");
                push_base64(line, e.metadata);
                line.push(b'"');
            }
        }
        line.extend_from_slice(b",\"popdigest\":\"");
        push_hex(line, &digest);
        line.extend_from_slice(b"\",\"popchain\":\"");
        push_hex(line, &stored);
        line.push(b'"');
        if let Ok(meta) = serde_json::from_slice::<MetadataView<'_>>(e.metadata)
            && let Some(actor) = meta.actor
        {
            line.extend_from_slice(b",\"popactor\":");
            json_str(line, &actor);
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)?;
        self.events += 1;
        self.seal(slot, e.position, e.version, Some(&stored));
        Ok(())
    }

    /// Writes the hash row of an event of a deleted stream (in `slot`), as [`Exporter::entry`].
    pub fn pruned_entry(
        &mut self,
        slot: StreamSlot,
        position: Position,
        version: u64,
        link: Option<&Hash>,
    ) -> Result<(), TransferError> {
        self.place(position)?;
        let stream = self.streams.get(slot.0).ok_or_else(unknown_slot)?;
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"kind\":\"pruned\",\"subject\":");
        json_str(line, &stream.name);
        line.extend_from_slice(b",\"popposition\":\"");
        push_position(line, position);
        line.extend_from_slice(b"\",\"popversion\":");
        push_u64(line, version);
        match link {
            Some(link) => {
                line.extend_from_slice(b",\"popchain\":\"");
                push_hex(line, link);
                line.extend_from_slice(b"\"}\n");
            }
            None => line.extend_from_slice(b",\"popchain\":null}\n"),
        }
        self.out.write_all(line)?;
        self.pruned += 1;
        self.seal(slot, position, version, link);
        Ok(())
    }

    /// Writes the tombstones and the checkpoint over every entry written, signed with `key`;
    /// answers the checkpoint. The counts must be the manifest's.
    pub fn finish(
        mut self,
        tombstones: &[Tombstone],
        key: &SigningKey,
        now: DateTime<Utc>,
    ) -> Result<Checkpoint, TransferError> {
        for t in tombstones {
            let line = &mut self.line;
            line.clear();
            line.extend_from_slice(b"{\"kind\":\"tombstone\",\"subject\":");
            json_str(line, &t.stream);
            line.extend_from_slice(b",\"popversion\":");
            match t.version {
                Some(v) => line.extend_from_slice(v.to_string().as_bytes()),
                None => line.extend_from_slice(b"null"),
            }
            line.extend_from_slice(b",\"pophead\":");
            match &t.head {
                Some(h) => {
                    line.push(b'"');
                    line.extend_from_slice(hex(h).as_bytes());
                    line.push(b'"');
                }
                None => line.extend_from_slice(b"null"),
            }
            line.extend_from_slice(b",\"time\":\"");
            push_time(line, t.deleted_at);
            line.extend_from_slice(b"\"}\n");
            self.out.write_all(line)?;
        }
        let m = &self.manifest;
        if (self.events, self.pruned, tombstones.len() as u64) != (m.events, m.pruned, m.tombstones)
        {
            return Err(TransferError::File(format!(
                "was not written whole: the manifest counted {} events, {} pruned, {} tombstones \
                 and {}, {}, {} were written",
                m.events,
                m.pruned,
                m.tombstones,
                self.events,
                self.pruned,
                tombstones.len()
            )));
        }
        // Where each stream ended, in position order.
        let mut streams: Vec<StreamMark> = std::mem::take(&mut self.streams)
            .into_iter()
            .filter_map(|s| {
                let (version, position, link) = s.mark?;
                Some(StreamMark { stream: s.name, version, position, link: hex(&link) })
            })
            .collect();
        streams.sort_by_key(|m| m.position);
        let checkpoint = Checkpoint {
            seq: 1,
            after: m.since,
            position: self.last.unwrap_or(m.since),
            events: self.count,
            log_hash: hex(&self.log_hash),
            previous: hex(&GENESIS),
            sealed_at: now,
            key_id: key_id(&key.verifying_key()),
            streams,
        };
        let signed = SignedCheckpoint::sign(&checkpoint, key)?;
        self.out.write_all(b"{\"kind\":\"checkpoint\",\"checkpoint\":")?;
        self.out.write_all(&signed.body)?;
        self.out.write_all(b",\"signature\":\"")?;
        self.out.write_all(hex_bytes(&signed.signature).as_bytes())?;
        self.out.write_all(b"\"}\n")?;
        self.out.flush()?;
        Ok(checkpoint)
    }
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

/// 64 hex digits into a hash, without an allocation (it runs twice per imported event).
fn parse_hash(text: &str) -> Option<Hash> {
    /// Each byte's value as a hex digit; 0xff: not one.
    const DIGITS: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    let bytes: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    // Any byte that is not a digit sets the high bit of `bad`: one test at the end.
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (DIGITS[usize::from(pair[0])], DIGITS[usize::from(pair[1])]);
        bad |= high | low;
        *byte = high << 4 | low;
    }
    (bad & 0x80 == 0).then_some(out)
}

/// One line as read: every member any kind of line has.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    specversion: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(borrow, default)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_base64: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popposition: Option<Cow<'a, str>>,
    #[serde(default)]
    popversion: Option<u64>,
    #[serde(default)]
    popschemaversion: Option<u32>,
    #[serde(borrow, default)]
    popmetadata: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popmetadatabase64: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popdigest: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    popchain: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pophead: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    checkpoint: Option<&'a RawValue>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
}

/// Reads the last line of a file (without reading the rest): chunks read backwards from the
/// end, each searched once for the newline before the line (the checkpoint's line holds every
/// stream's mark: megabytes for a large log).
fn last_line(file: &mut std::fs::File) -> Result<String, TransferError> {
    let size = file.seek(SeekFrom::End(0))?;
    let mut start = size;
    // The chunks read, the last one of the file first.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut read = 0usize;
    const STEP: u64 = 64 * 1024;
    let line = loop {
        let from = start.saturating_sub(STEP);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        start = from;
        read += chunk.len();
        // The newline that ends the file is not the one before the last line.
        if chunks.is_empty() && chunk.last() == Some(&b'\n') {
            chunk.pop();
        }
        let found = chunk.iter().rposition(|b| *b == b'\n');
        let whole = start == 0 || read > MAX_LINE_BYTES;
        if let Some(i) = found {
            chunk.drain(..=i);
        }
        chunks.push(chunk);
        if found.is_some() || whole {
            break chunks.into_iter().rev().collect::<Vec<_>>().concat();
        }
    };
    file.seek(SeekFrom::Start(0))?;
    String::from_utf8(line).map_err(|_| TransferError::File("is not UTF-8".into()))
}

/// Where the reader checking a file stands per stream.
struct Seen {
    version: u64,
    link: Hash,
    line: u64,
}

/// How the checkpoint's key was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The key the caller gave.
    Pinned,
    /// The key the manifest names (only shows the file is consistent with itself).
    Manifest,
}

/// What a file that was read to its end holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub manifest: Manifest,
    pub events: u64,
    pub pruned: u64,
    pub tombstones: u64,
    pub key_id: String,
    pub key_source: KeySource,
    /// The checkpoint on the last line.
    pub checkpoint: Checkpoint,
}

/// Reads and checks an export of the whole log, line by line ([`ExportReader::next_item`]):
/// an item is handed out only after its own checks passed; the checks that need the whole
/// file (stream heads, reaped streams, the checkpoint) run when the checkpoint line is
/// reached, and only then does `next_item` answer `None`. A caller commits nothing before it.
pub struct ExportReader<R: BufRead> {
    /// `None` once [`ExportReader::read_parallel`] took it.
    input: Option<R>,
    line_no: u64,
    buf: Vec<u8>,
    manifest: Manifest,
    key_id: String,
    key_source: KeySource,
    checkpoint: Checkpoint,
    walker: Option<Walker>,
    log: Option<LogWalker>,
    streams: HashMap<String, Seen>,
    tombstones: Vec<(Tombstone, u64)>,
    /// Each entry's position and line, in file order (to locate a break found at the end).
    lines: Vec<(Position, u64)>,
    events: u64,
    pruned: u64,
    done: bool,
}

impl ExportReader<std::io::BufReader<std::fs::File>> {
    /// Opens an export file: reads its manifest (line 1) and its signed checkpoint (the last
    /// line), checks the checkpoint's signature with `key` (else with the key the manifest
    /// names), and refuses an export `--since` (only a whole log can be imported).
    pub fn open(
        path: &std::path::Path,
        key: Option<VerifyingKey>,
    ) -> Result<ExportReader<std::io::BufReader<std::fs::File>>, TransferError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| TransferError::File(format!("{} cannot be read: {e}", path.display())))?;
        let last = last_line(&mut file)?;
        let mut reader = ExportReader::start(std::io::BufReader::with_capacity(1 << 20, file))?;
        reader.take_checkpoint(&last, key)?;
        Ok(reader)
    }
}

impl<R: BufRead> ExportReader<R> {
    fn invalid(&self, message: impl Into<String>) -> TransferError {
        TransferError::Invalid { line: self.line_no, message: message.into() }
    }

    /// Reads the next line into `buf`; `false` at the end of the input.
    fn read_line(&mut self) -> Result<bool, TransferError> {
        self.buf.clear();
        let Some(input) = self.input.as_mut() else { return Ok(false) };
        let n = input
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| TransferError::File(format!("cannot be read: {e}")))?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(self.invalid(format!("longer than {MAX_LINE_BYTES} bytes")));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        Ok(true)
    }

    fn start(input: R) -> Result<ExportReader<R>, TransferError> {
        let mut reader = ExportReader {
            input: Some(input),
            line_no: 0,
            buf: Vec::new(),
            manifest: Manifest::new(
                "",
                Position::START,
                0,
                0,
                0,
                None,
                None,
                &SigningKey::from_bytes(&[0; 32]).verifying_key(),
            ),
            key_id: String::new(),
            key_source: KeySource::Manifest,
            checkpoint: Checkpoint {
                seq: 0,
                after: Position::START,
                position: Position::START,
                events: 0,
                log_hash: String::new(),
                previous: String::new(),
                sealed_at: DateTime::<Utc>::default(),
                key_id: String::new(),
                streams: Vec::new(),
            },
            walker: None,
            log: None,
            streams: HashMap::new(),
            tombstones: Vec::new(),
            lines: Vec::new(),
            events: 0,
            pruned: 0,
            done: false,
        };
        if !reader.read_line()? {
            return Err(TransferError::File("is empty: an export starts with its manifest".into()));
        }
        let manifest: Manifest = serde_json::from_slice(&reader.buf)
            .map_err(|e| reader.invalid(format!("not the export's manifest: {e}")))?;
        if manifest.kind != "manifest" {
            return Err(reader.invalid("not the export's manifest (kind is not \"manifest\")"));
        }
        if manifest.format_version != FORMAT_VERSION {
            return Err(reader.invalid(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        if manifest.since != Position::START {
            return Err(reader.invalid(format!(
                "an export after position {} holds part of the log; only a whole log (an export \
                 without --since) can be imported",
                manifest.since
            )));
        }
        reader.manifest = manifest;
        Ok(reader)
    }

    /// Parses the checkpoint line and checks its signature.
    fn take_checkpoint(
        &mut self,
        line: &str,
        key: Option<VerifyingKey>,
    ) -> Result<(), TransferError> {
        let bad = |m: String| TransferError::File(format!("does not end with its checkpoint: {m}"));
        let parsed: Line<'_> =
            serde_json::from_str(line).map_err(|e| bad(format!("the last line: {e}")))?;
        let (Some("checkpoint"), Some(body), Some(signature)) =
            (parsed.kind.as_deref(), parsed.checkpoint, parsed.signature.as_deref())
        else {
            return Err(bad(
                "the last line is not a signed checkpoint (a cut file, or lines dropped at its \
                 end)"
                    .into(),
            ));
        };
        let signed = SignedCheckpoint {
            seq: 1,
            body: body.get().as_bytes().to_vec(),
            signature: parse_hex(signature).ok_or_else(|| bad("a malformed signature".into()))?,
        };
        let (key, source) = match key {
            Some(k) => (k, KeySource::Pinned),
            None => {
                let k = crate::commitment::parse_verifying_key(&self.manifest.public_key)
                    .map_err(|e| TransferError::Invalid { line: 1, message: e })?;
                (k, KeySource::Manifest)
            }
        };
        if key_id(&key) != self.manifest.key_id {
            return Err(TransferError::Invalid {
                line: 1,
                message: format!(
                    "the manifest names key {} but the file is checked with key {}",
                    self.manifest.key_id,
                    key_id(&key)
                ),
            });
        }
        signed.verify_signature(&key).map_err(bad)?;
        let checkpoint = signed.checkpoint().map_err(bad)?;
        self.checkpoint = checkpoint;
        self.key_id = key_id(&key);
        self.key_source = source;
        self.walker = Some(Walker::new(self.manifest.last_position));
        self.log = Some(LogWalker::new(vec![signed], Some(key)));
        Ok(())
    }

    /// The manifest (line 1).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next entry or tombstone, checked; `None` once the checkpoint line was reached and
    /// the whole file verified.
    pub fn next_item(&mut self) -> Result<Option<Item>, TransferError> {
        if self.done {
            return Ok(None);
        }
        if !self.read_line()? {
            return Err(ends_early());
        }
        let buf = std::mem::take(&mut self.buf);
        let result = self.item(&buf);
        self.buf = buf;
        match result? {
            Some(item) => Ok(Some(item)),
            None => {
                if self.read_line()? {
                    return Err(self.invalid("a line after the checkpoint"));
                }
                self.done = true;
                Ok(None)
            }
        }
    }

    /// The item on line `buf`; `None`: the checkpoint line, and the whole file verified up to
    /// it (whether a line follows is the caller's check).
    fn item(&mut self, buf: &[u8]) -> Result<Option<Item>, TransferError> {
        let line: Line<'_> = serde_json::from_slice(buf)
            .map_err(|e| self.invalid(format!("not a line of an export: {e}")))?;
        match line.kind.as_deref() {
            None => self.event(line).map(|e| Some(Item::Entry(Entry::Event(e)))),
            Some("pruned") => self.pruned(line).map(|p| Some(Item::Entry(Entry::Pruned(p)))),
            Some("tombstone") => self.tombstone(line).map(|t| Some(Item::Tombstone(t))),
            Some("checkpoint") => {
                self.finish()?;
                Ok(None)
            }
            Some(other) => Err(self.invalid(format!("unknown kind {other:?}"))),
        }
    }

    fn position(&mut self, text: Option<&str>) -> Result<Position, TransferError> {
        let p = parse_position(text).map_err(|m| self.invalid(m))?;
        self.place(p)
    }

    /// The order checks of an entry's position (already parsed): after the previous entry's,
    /// and no entry after a tombstone.
    fn place(&mut self, p: Position) -> Result<Position, TransferError> {
        if !self.tombstones.is_empty() {
            return Err(self.invalid("an entry after the tombstones"));
        }
        if self.lines.last().is_some_and(|(last, _)| p <= *last) || p == Position::START {
            return Err(self.invalid(format!(
                "position {p} is not after the previous entry's (lines moved or swapped)"
            )));
        }
        self.lines.push((p, self.line_no));
        Ok(p)
    }

    fn log_entry(&mut self, e: LogEntry) -> Result<(), TransferError> {
        let line = self.line_no;
        let log = self.log.as_mut().ok_or_else(|| TransferError::File("not opened".into()))?;
        if !log.entry(e) {
            return Err(self.located_log_break(Some(line)));
        }
        Ok(())
    }

    /// The break the walk over the checkpoint found, with its line.
    fn located_log_break(&mut self, line: Option<u64>) -> TransferError {
        let Some(log) = self.log.take() else { return TransferError::File("not opened".into()) };
        let (_, b) = log.finish();
        let b = b.unwrap_or_else(|| Break {
            stream: String::new(),
            version: None,
            position: None,
            reason: "the checkpoint does not match the entries".into(),
        });
        let line = line.unwrap_or_else(|| self.line_of(&b));
        TransferError::Invalid { line, message: b.to_string() }
    }

    /// The line a break names: its position's, else where an entry at that position would
    /// be, else the stream's last line, else the current one.
    fn line_of(&self, b: &Break) -> u64 {
        if let Some(p) = b.position {
            let i = self.lines.partition_point(|(q, _)| *q < p);
            match self.lines.get(i) {
                Some((_, line)) => return *line,
                // After the last entry: the line after it, where that entry would be.
                None if i > 0 => return self.lines[i - 1].1 + 1,
                None => {}
            }
        }
        if let Some(s) = self.streams.get(&b.stream) {
            return s.line;
        }
        if let Some((_, line)) = self.tombstones.iter().find(|(t, _)| t.stream == b.stream) {
            return *line;
        }
        self.line_no
    }

    fn event(&mut self, l: Line<'_>) -> Result<ExportEvent, TransferError> {
        self.accept_event(parse_event(l))
    }

    /// The checks of an event line that depend on what came before it, in the order
    /// [`parse_event`]'s outcomes are reported: CloudEvents version, position (parsed, then
    /// its order), the line's own members and digest, the stream's chain, the log walk.
    fn accept_event(&mut self, p: ParsedEvent) -> Result<ExportEvent, TransferError> {
        if !p.specversion_ok {
            return Err(self.invalid("not a CloudEvents 1.0 event (specversion)"));
        }
        let position = p.position.map_err(|m| self.invalid(m))?;
        self.place(position)?;
        let (mut e, digest) = p.rest.map_err(|m| self.invalid(m))?;
        e.position = position;
        let chain_link = e.chain.unwrap_or(GENESIS);
        let walker =
            self.walker.as_mut().ok_or_else(|| TransferError::File("not opened".into()))?;
        let ok = walker.event_digested(
            &EventRow {
                stream: &e.stream,
                version: i64::try_from(e.version).unwrap_or(-1),
                position,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                recorded_at: e.recorded_at,
                metadata: &e.metadata,
                data: &e.data,
                chain: Some(chain_link.as_slice()),
            },
            Some(&digest),
        );
        if !ok {
            let b = walker_break(self.walker.take());
            return Err(self.invalid(b));
        }
        let line = self.line_no;
        let log = self.log.as_mut().ok_or_else(|| TransferError::File("not opened".into()))?;
        if !log.entry_parts(position, &e.stream, e.version, Some(chain_link)) {
            return Err(self.located_log_break(Some(line)));
        }
        let seen = Seen { version: e.version, link: chain_link, line: self.line_no };
        match self.streams.get_mut(e.stream.as_str()) {
            Some(s) => *s = seen,
            None => {
                self.streams.insert(e.stream.clone(), seen);
            }
        }
        self.events += 1;
        Ok(e)
    }

    fn pruned(&mut self, l: Line<'_>) -> Result<LogEntry, TransferError> {
        let position = self.position(l.popposition.as_deref())?;
        let stream = l.subject.ok_or_else(|| self.invalid("no subject (the stream)"))?.into_owned();
        let version = l.popversion.ok_or_else(|| self.invalid("no popversion"))?;
        let link = match l.popchain.as_deref() {
            None => None,
            Some(text) => {
                Some(parse_hash(text).ok_or_else(|| self.invalid("popchain is not a SHA-256"))?)
            }
        };
        let entry = LogEntry { position, stream, version, link };
        self.log_entry(entry.clone())?;
        self.pruned += 1;
        Ok(entry)
    }

    fn tombstone(&mut self, l: Line<'_>) -> Result<Tombstone, TransferError> {
        let stream = l.subject.ok_or_else(|| self.invalid("no subject (the stream)"))?.into_owned();
        let head = match l.pophead.as_deref() {
            None => None,
            Some(text) => {
                Some(parse_hash(text).ok_or_else(|| self.invalid("pophead is not a SHA-256"))?)
            }
        };
        let time = l.time.ok_or_else(|| self.invalid("no time"))?;
        let deleted_at = DateTime::parse_from_rfc3339(&time)
            .map_err(|_| self.invalid("time is not an RFC 3339 time"))?
            .timestamp_micros();
        if self.tombstones.iter().any(|(t, _)| t.stream == stream) {
            return Err(self.invalid(format!("a second tombstone of stream {stream:?}")));
        }
        let t = Tombstone { stream, version: l.popversion, head, deleted_at };
        self.tombstones.push((t.clone(), self.line_no));
        Ok(t)
    }

    /// The manifest's counts and positions against what the file held.
    fn check_counts(&self) -> Result<(), TransferError> {
        let m = &self.manifest;
        let counts = (self.events, self.pruned, self.tombstones.len() as u64);
        if counts != (m.events, m.pruned, m.tombstones) {
            return Err(self.invalid(format!(
                "the manifest announces {} events, {} pruned entries and {} tombstones, the file \
                 holds {}, {} and {} (lines dropped or added)",
                m.events, m.pruned, m.tombstones, counts.0, counts.1, counts.2
            )));
        }
        let first = self.lines.first().map(|(p, _)| *p);
        let last = self.lines.last().map(|(p, _)| *p);
        if (first, last) != (m.first_position, m.last_position) {
            return Err(self.invalid(
                "the entries' first and last positions are not the manifest's (lines dropped)",
            ));
        }
        Ok(())
    }

    /// The checks over the whole file, at its checkpoint line.
    fn finish(&mut self) -> Result<(), TransferError> {
        let mut rows: Vec<StreamRow> = self
            .streams
            .iter()
            .map(|(name, s)| StreamRow {
                name: name.clone(),
                version: i64::try_from(s.version).ok(),
                deleted: false,
                head: Some(s.link.to_vec()),
            })
            .collect();
        for (t, _) in &self.tombstones {
            rows.push(StreamRow {
                name: t.stream.clone(),
                version: t.version.and_then(|v| i64::try_from(v).ok()),
                deleted: true,
                head: t.head.map(|h| h.to_vec()),
            });
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let walker = self.walker.take().ok_or_else(|| TransferError::File("not opened".into()))?;
        let report = walker.finish(&rows);
        if let Some(b) = report.first_break {
            let line = self.line_of(&b);
            return Err(TransferError::Invalid { line, message: b.to_string() });
        }
        if self.checkpoint.events == 0 && self.lines.is_empty() {
            // An empty log: nothing for the walk to close; the signature was checked.
            if self.checkpoint.log_hash != hex(&GENESIS) {
                return Err(self.invalid("the checkpoint of an empty export has a log hash"));
            }
            return self.check_counts();
        }
        let Some(log) = self.log.take() else {
            return Err(TransferError::File("not opened".into()));
        };
        let (report, b) = log.finish();
        if let Some(b) = b {
            let line = self.line_of(&b);
            return Err(TransferError::Invalid { line, message: b.to_string() });
        }
        self.check_counts()?;
        if report.checkpoints != 1 || report.sealed_entries != self.lines.len() as u64 {
            return Err(self.invalid("the checkpoint does not cover every entry of the file"));
        }
        Ok(())
    }

    /// What the file held, once [`ExportReader::next_item`] answered `None`.
    pub fn summary(&self) -> Option<ImportSummary> {
        self.done.then(|| ImportSummary {
            manifest: self.manifest.clone(),
            events: self.events,
            pruned: self.pruned,
            tombstones: self.tombstones.len() as u64,
            key_id: self.key_id.clone(),
            key_source: self.key_source,
            checkpoint: self.checkpoint.clone(),
        })
    }
}

/// The error of a file that ends before its checkpoint line.
fn ends_early() -> TransferError {
    TransferError::File("ends before its checkpoint (the last line was cut or edited)".into())
}

/// Lines in one batch of [`ExportReader::read_parallel`].
const PARSE_BATCH: usize = 256;

/// Batches in flight to and from each parsing thread.
const PARSE_AHEAD: usize = 2;

/// Bytes of lines after which a batch of [`ExportReader::read_parallel`] is handed on whatever
/// its count: lines may each be up to [`MAX_LINE_BYTES`], and without it a file of long lines
/// would hold `PARSE_BATCH` of them per batch, several batches per thread, in memory at once.
const PARSE_BATCH_BYTES: usize = 8 << 20;

/// Lines as read off the file: their bytes one after the other, each line's end and number,
/// and what stopped the reading after them (the end of the file, or a problem), if anything.
struct RawLines {
    bytes: Vec<u8>,
    lines: Vec<(usize, u64)>,
    end: Option<Result<(), TransferError>>,
}

/// A line as a parsing thread hands it back.
enum Parsed {
    Event(Box<ParsedEvent>),
    /// Any other line (pruned, tombstone, checkpoint, or one that does not parse): its bytes,
    /// read on the sequential thread the way [`ExportReader::next_item`] reads them.
    Other(Vec<u8>),
}

struct ParsedLines {
    lines: Vec<(u64, Parsed)>,
    end: Option<Result<(), TransferError>>,
}

/// Reads lines (from line `line_no + 1` on) in batches of `size`, handed to `outs` in turn; stops at
/// the end of the file, at a problem (both handed on with the last batch), or when a receiver
/// is gone.
fn read_lines<R: BufRead>(
    mut input: R,
    mut line_no: u64,
    size: usize,
    outs: &[std::sync::mpsc::SyncSender<RawLines>],
) {
    for out in outs.iter().cycle() {
        let mut batch = RawLines {
            bytes: Vec::with_capacity(size * 1024),
            lines: Vec::with_capacity(size),
            end: None,
        };
        while batch.lines.len() < size && batch.bytes.len() < PARSE_BATCH_BYTES {
            let start = batch.bytes.len();
            match (&mut input).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut batch.bytes) {
                Err(e) => {
                    batch.end = Some(Err(TransferError::File(format!("cannot be read: {e}"))));
                    break;
                }
                Ok(0) => {
                    batch.end = Some(Ok(()));
                    break;
                }
                Ok(_) => {
                    line_no += 1;
                    if batch.bytes.len() - start > MAX_LINE_BYTES {
                        batch.bytes.truncate(start);
                        batch.end = Some(Err(TransferError::Invalid {
                            line: line_no,
                            message: format!("longer than {MAX_LINE_BYTES} bytes"),
                        }));
                        break;
                    }
                    if batch.bytes.last() == Some(&b'\n') {
                        batch.bytes.pop();
                    }
                    batch.lines.push((batch.bytes.len(), line_no));
                }
            }
        }
        let last = batch.end.is_some();
        if out.send(batch).is_err() || last {
            return;
        }
    }
}

/// Parses each line of each batch from `inbox` (the event lines all the way to their digest)
/// and hands the batch on.
fn parse_lines(
    inbox: std::sync::mpsc::Receiver<RawLines>,
    out: std::sync::mpsc::SyncSender<ParsedLines>,
) {
    for batch in inbox {
        let mut lines = Vec::with_capacity(batch.lines.len());
        let mut start = 0;
        for &(end, line_no) in &batch.lines {
            let bytes = &batch.bytes[start..end];
            start = end;
            let parsed = match serde_json::from_slice::<Line<'_>>(bytes) {
                Ok(l) if l.kind.is_none() => Parsed::Event(Box::new(parse_event(l))),
                _ => Parsed::Other(bytes.to_vec()),
            };
            lines.push((line_no, parsed));
        }
        if out.send(ParsedLines { lines, end: batch.end }).is_err() {
            return;
        }
    }
}

impl<R: BufRead + Send> ExportReader<R> {
    /// Reads the rest of the file as [`ExportReader::next_item`] would, with each line's
    /// parsing, decoding and digest (which depend on the line alone) spread over `parsers`
    /// threads and the checks that depend on what came before (positions, chains, the log
    /// walk, the checkpoint) on the calling thread, in file order: the same items, the same
    /// first problem with the same line. `sink` gets the items in file order, in batches, on
    /// the calling thread; its error stops the reading and is answered. The summary once the
    /// whole file verified (as [`ExportReader::summary`]).
    pub fn read_parallel(
        self,
        parsers: usize,
        sink: impl FnMut(Vec<Item>) -> Result<(), TransferError>,
    ) -> Result<ImportSummary, TransferError> {
        self.read_in_batches(parsers, PARSE_BATCH, sink)
    }

    /// [`ExportReader::read_parallel`] as an import's reading thread runs it: every batch,
    /// then `Ok(None)` once the whole file verified, or the reading's error, each handed to
    /// `send` (for the writer, which commits only on `Ok(None)`). `send` answers `false` once
    /// the writer stopped; the reading stops then, and the writer's error is the one to report.
    /// The summary when the whole file verified.
    pub(crate) fn read_to_writer(
        self,
        parsers: usize,
        mut send: impl FnMut(ImportBatch) -> bool,
    ) -> Option<ImportSummary> {
        let read = self.read_parallel(parsers, |items| match send(Ok(Some(items))) {
            true => Ok(()),
            false => Err(TransferError::File("was not written (the writer stopped)".into())),
        });
        match read {
            Ok(summary) => {
                send(Ok(None));
                Some(summary)
            }
            Err(e) => {
                send(Err(e));
                None
            }
        }
    }

    /// [`ExportReader::read_parallel`] with `batch` lines per batch.
    fn read_in_batches(
        mut self,
        parsers: usize,
        batch: usize,
        mut sink: impl FnMut(Vec<Item>) -> Result<(), TransferError>,
    ) -> Result<ImportSummary, TransferError> {
        use std::sync::mpsc::sync_channel;
        let parsers = parsers.max(1);
        let input = self.input.take().ok_or_else(|| TransferError::File("was read".into()))?;
        let line_no = self.line_no;
        std::thread::scope(|scope| {
            let mut to_parsers = Vec::with_capacity(parsers);
            let mut from_parsers = Vec::with_capacity(parsers);
            for _ in 0..parsers {
                let (raw, raw_in) = sync_channel::<RawLines>(PARSE_AHEAD);
                let (parsed, parsed_in) = sync_channel::<ParsedLines>(PARSE_AHEAD);
                scope.spawn(move || parse_lines(raw_in, parsed));
                to_parsers.push(raw);
                from_parsers.push(parsed_in);
            }
            scope.spawn(move || read_lines(input, line_no, batch.max(1), &to_parsers));
            // Dropping the receivers on return (an error) stops the other threads.
            self.check_parsed(&from_parsers, &mut sink)
        })
    }

    /// The sequential half of [`ExportReader::read_parallel`].
    fn check_parsed(
        &mut self,
        from_parsers: &[std::sync::mpsc::Receiver<ParsedLines>],
        sink: &mut impl FnMut(Vec<Item>) -> Result<(), TransferError>,
    ) -> Result<ImportSummary, TransferError> {
        let mut checkpoint = false;
        for inbox in from_parsers.iter().cycle() {
            let batch =
                inbox.recv().map_err(|_| TransferError::File("reading it failed".into()))?;
            let mut items = Vec::with_capacity(batch.lines.len());
            for (line_no, parsed) in batch.lines {
                self.line_no = line_no;
                if checkpoint {
                    return Err(self.invalid("a line after the checkpoint"));
                }
                let item = match parsed {
                    Parsed::Event(p) => Some(Item::Entry(Entry::Event(self.accept_event(*p)?))),
                    Parsed::Other(bytes) => self.item(&bytes)?,
                };
                match item {
                    Some(item) => items.push(item),
                    None => checkpoint = true,
                }
            }
            if !items.is_empty() {
                sink(items)?;
            }
            match batch.end {
                None => {}
                Some(Err(e)) => return Err(e),
                Some(Ok(())) if !checkpoint => return Err(ends_early()),
                Some(Ok(())) => {
                    self.done = true;
                    return self.summary().ok_or_else(ends_early);
                }
            }
        }
        Err(TransferError::File("reading it failed".into()))
    }
}

fn walker_break(walker: Option<Walker>) -> String {
    walker
        .and_then(|w| w.finish(&[]).first_break)
        .map_or_else(|| "the event does not verify".into(), |b| b.to_string())
}

/// An RFC 3339 time in microseconds since the epoch, as chrono's `parse_from_rfc3339` reads it
/// (tested): the form the export writes (`2026-12-04T03:14:15.926535Z`) read digit by digit,
/// any other form by chrono.
fn time_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?
            .iter()
            .try_fold(0u32, |n, d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let written = b.len() == 27
        && [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (26, b'Z')]
            .iter()
            .all(|(i, c)| b[*i] == *c);
    let fast = || -> Option<i64> {
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::try_from(number(0, 4)?).ok()?,
            number(5, 7)?,
            number(8, 10)?,
        )?;
        let (second, micro) = (number(17, 19)?, number(20, 26)?);
        // A leap second (60) is chrono's to read.
        if second > 59 {
            return None;
        }
        Some(
            date.and_hms_micro_opt(number(11, 13)?, number(14, 16)?, second, micro)?
                .and_utc()
                .timestamp_micros(),
        )
    };
    match written.then(fast).flatten() {
        Some(micros) => Some(micros),
        None => DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_micros()),
    }
}

/// An entry's `popposition`, parsed.
fn parse_position(text: Option<&str>) -> Result<Position, &'static str> {
    text.ok_or("no popposition")?.parse().map_err(|_| "popposition is not a position")
}

/// An event line with everything computed that depends on the line alone (its members, the
/// data and metadata decoded, the digest recomputed and compared): the costly part of
/// checking a line, which may run on any thread. Each check's outcome is kept, not reported,
/// so [`ExportReader::accept_event`] reports the first problem in the order it checks them.
struct ParsedEvent {
    specversion_ok: bool,
    position: Result<Position, &'static str>,
    /// The event (its position still to be set) and its digest; or the first problem of the
    /// line's own members.
    rest: Result<(ExportEvent, Hash), String>,
}

fn parse_event(l: Line<'_>) -> ParsedEvent {
    let position = parse_position(l.popposition.as_deref());
    ParsedEvent {
        specversion_ok: l.specversion.as_deref() == Some("1.0"),
        rest: event_members(l, position.as_ref().copied().unwrap_or(Position::START)),
        position,
    }
}

/// The members of an event line after its position, checked in order, and its digest
/// recomputed and compared with `popdigest`.
fn event_members(l: Line<'_>, position: Position) -> Result<(ExportEvent, Hash), String> {
    let event_id = l.id.ok_or("no id (a UUID)")?;
    let stream = l.subject.ok_or("no subject (the stream)")?.into_owned();
    let event_type = l.event_type.ok_or("no type")?.into_owned();
    let version = l.popversion.ok_or("no popversion")?;
    let schema_version = l.popschemaversion.ok_or("no popschemaversion")?;
    let time = l.time.ok_or("no time")?;
    let recorded_at = time_micros(&time).ok_or("time is not an RFC 3339 time")?;
    let data = match (l.data, l.data_base64) {
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "data_base64 is not base64")?,
        _ => return Err("an event has exactly one of data and data_base64".into()),
    };
    let metadata = match (l.popmetadata, l.popmetadatabase64) {
        (Some(text), None) => text.into_owned().into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "popmetadatabase64 is not base64")?,
        _ => return Err("an event has exactly one of popmetadata and popmetadatabase64".into()),
    };
    let chain_link =
        l.popchain.as_deref().and_then(parse_hash).ok_or("popchain is not a SHA-256 in hex")?;
    let digest = event_digest(&DigestInput {
        stream: &stream,
        version,
        event_type: &event_type,
        schema_version,
        recorded_at_micros: recorded_at,
        metadata: &metadata,
        data_hash: &data_hash(&data),
    });
    if l.popdigest.as_deref().and_then(parse_hash) != Some(digest) {
        return Err(format!(
            "stream {stream:?} version {version} position {position}: the event does not \
             match its digest (popdigest)"
        ));
    }
    let event = ExportEvent {
        position,
        stream,
        version,
        event_id,
        event_type,
        schema_version,
        recorded_at,
        data,
        metadata,
        chain: Some(chain_link),
    };
    Ok((event, digest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        for micros in [
            0,
            1,
            999_999,
            1_000_000,
            1_800_000_000_123_456,
            -1,
            // 0001-01-01, 0000-01-01 and the microsecond before it, 9999-12-31T23:59:59.999999
            // and the microsecond after it.
            -62_135_596_800_000_000,
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            push_time(&mut out, micros);
            assert_eq!(String::from_utf8(out).unwrap(), time_text(micros), "{micros}");
        }
    }

    #[test]
    fn times_are_read_as_chrono_reads_them() {
        let chrono = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp_micros());
        let mut texts: Vec<String> = [
            0,
            1,
            999_999,
            1_800_000_000_123_456,
            -1,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            951_782_400_000_000, // 2000-02-29
        ]
        .into_iter()
        .map(time_text)
        .collect();
        texts.extend(
            [
                "2026-12-04T03:14:15.926535Z",
                "2026-12-04t03:14:15.926535z",
                "2026-12-04T03:14:15.926535+01:00",
                "2026-12-04T03:14:15Z",
                "2026-12-04 03:14:15.926535Z",
                "2026-12-31T23:59:60.000000Z",
                "2025-02-29T00:00:00.000000Z",
                "2026-13-01T00:00:00.000000Z",
                "2026-00-01T00:00:00.000000Z",
                "2026-12-32T00:00:00.000000Z",
                "2026-12-04T24:00:00.000000Z",
                "2026-12-04T23:60:00.000000Z",
                "2026-12-04T23:00:00.00000aZ",
                "+026-12-04T23:00:00.000000Z",
                "2026-12-04T23:00:00.000000",
                "",
            ]
            .map(str::to_owned),
        );
        for t in &texts {
            assert_eq!(time_micros(t), chrono(t), "{t}");
        }
    }

    #[test]
    fn the_last_line_is_found_whatever_its_length() {
        let long = |n: usize, c: char| c.to_string().repeat(n);
        let cases = [
            String::new(),
            "\n".into(),
            "one".into(),
            "one\n".into(),
            "one\ntwo".into(),
            "one\ntwo\n".into(),
            "one\n\n".into(),
            format!("a\n{}\n", long(64 * 1024, 'b')),
            format!("a\n{}\n", long(64 * 1024 - 1, 'b')),
            format!("a\n{}", long(64 * 1024 + 1, 'b')),
            format!("{}\n{}\n", long(100_000, 'a'), long(200_000, 'b')),
            format!("{}\n", long(300_000, 'c')),
        ];
        for text in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &text).unwrap();
            let body = text.strip_suffix('\n').unwrap_or(&text);
            let want = body.rsplit('\n').next().unwrap_or_default();
            let mut file = std::fs::File::open(&path).unwrap();
            assert_eq!(last_line(&mut file).unwrap(), want, "{}", text.len());
            assert_eq!(file.stream_position().unwrap(), 0);
        }
    }

    #[test]
    fn hashes_are_read_back_from_their_hex() {
        let hash: Hash = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(parse_hash(&hex(&hash)), Some(hash));
        assert_eq!(parse_hash(&hex(&hash).to_uppercase()), Some(hash));
        assert_eq!(parse_hash(&hex(&GENESIS)), Some(GENESIS));
        for bad in ["", "0", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64)] {
            assert_eq!(parse_hash(bad), None, "{bad}");
        }
        for (i, c) in [(0, 'x'), (63, ':'), (31, '/'), (10, 'G'), (5, ' '), (7, '\u{e9}')] {
            let mut text: Vec<char> = hex(&hash).chars().collect();
            text[i] = c;
            let text: String = text.into_iter().collect();
            assert_eq!(parse_hash(&text), None, "{text}");
        }
    }

    #[test]
    fn hashes_are_written_as_hex_writes_them() {
        let hash: Hash = std::array::from_fn(|i| (i * 37) as u8);
        let mut out = b"x".to_vec();
        push_hex(&mut out, &hash);
        assert_eq!(out, format!("x{}", hex(&hash)).into_bytes());
    }

    #[test]
    fn the_actor_is_read_exactly_when_event_metadata_reads_it() {
        let cases: [&[u8]; 9] = [
            br#"{"customerId":"c","cid":"x","causationId":"0190f3a2-7b1c-7d2e-9f00-1234567890ab","actor":"user:alice","command":"submitAgenda"}"#,
            br#"{"actor":"user:a\"b\u00e9"}"#,
            br#"{"actor":null}"#,
            br#"{"somethingNew":[1,2],"actor":"service:w"}"#,
            br#"{"actor":7}"#,
            br#"{"customerId":7,"actor":"user:alice"}"#,
            br#"{"causationId":"not a uuid","actor":"user:alice"}"#,
            br#"{"actor":"a","actor":"b"}"#,
            b"",
        ];
        for bytes in cases {
            let want = crate::EventMetadata::from_json(bytes).ok().and_then(|m| m.actor);
            let got = serde_json::from_slice::<MetadataView<'_>>(bytes)
                .ok()
                .and_then(|m| m.actor)
                .map(Cow::into_owned);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(bytes));
        }
    }

    /// Whether `data` parses back to the same bytes as the `data` member of a line.
    fn reads_back(data: &[u8]) -> bool {
        let mut line = b"{\"kind\":null,\"data\":".to_vec();
        line.extend_from_slice(data);
        line.push(b'}');
        serde_json::from_slice::<Line<'_>>(&line)
            .is_ok_and(|l| l.data.is_some_and(|d| d.get().as_bytes() == data))
    }

    #[test]
    fn data_goes_raw_only_when_its_line_reads_back() {
        let cases: &[(&[u8], bool)] = &[
            (b"{}", true),
            (b"[]", true),
            (b"0", true),
            (b"-0.5e+10", true),
            (b"12E-3", true),
            (b"true", true),
            (b"false", true),
            (b"\"a\\u00e9\\n\\\"\\/\"", true),
            ("\"\u{e9}\u{1f600}\"".as_bytes(), true),
            (br#"{"a":[1,2,{"b":null}],"c":"d","e":{}}"#, true),
            (b"{ \"a\" : 1 , \"b\" :\t[ ] }", true),
            (b"null", false),
            (b"", false),
            (b" {}", false),
            (b"{} ", false),
            (b"{\n}", false),
            (b"{\r}", false),
            (b"[\"a\nb\"]", false),
            (b"\"\xff\"", false),
            (b"\"\x01\"", false),
            (b"{\"a\"}", false),
            (b"[1,]", false),
            (b"{\"a\":1,}", false),
            (b"{\"a\":}", false),
            (b"{1:2}", false),
            (b"01", false),
            (b"1.", false),
            (b".5", false),
            (b"-", false),
            (b"1e", false),
            (b"\"\\x\"", false),
            (b"\"\\u12g4\"", false),
            (b"\"abc", false),
            (b"[1 2]", false),
            (b"{}{}", false),
            (b"tru", false),
            (b"truex", false),
            (b"[", false),
            (b"]", false),
            (b"[}", false),
            (b"{]", false),
        ];
        for (data, raw) in cases {
            let name = String::from_utf8_lossy(data);
            assert_eq!(raw_json(data), *raw, "{name}");
            if *raw {
                assert!(reads_back(data), "{name}");
            }
        }
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(raw_json(deep(128).as_bytes()));
        assert!(reads_back(deep(128).as_bytes()));
        assert!(!raw_json(deep(129).as_bytes()));
    }

    proptest::proptest! {
        /// On text with no line break, the check says "raw" exactly when serde_json reads the
        /// text as one value with nothing around it (what the append's check accepts), and
        /// whatever it passes reads back from a line.
        #[test]
        fn the_raw_check_agrees_with_serde_json(
            text in proptest::string::string_regex(
                "[\\[\\]{}\",:0-9a-z\\\\ \t.+\\-é]{0,24}"
            ).unwrap()
        ) {
            let data = text.as_bytes();
            let serde = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
                && !data.starts_with(b" ") && !data.starts_with(b"\t")
                && !data.ends_with(b" ") && !data.ends_with(b"\t")
                && data != b"null";
            proptest::prop_assert_eq!(raw_json(data), serde);
            if serde {
                proptest::prop_assert!(reads_back(data));
            }
        }

        #[test]
        fn json_values_go_raw(value in json_value()) {
            let data = serde_json::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(raw_json(&data), !value.is_null());
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Data the append accepts that is not UTF-8 inside a string (serde_json's `IgnoredAny`
    /// does not look): exported as `data_base64`, so the line is JSON and imports.
    #[test]
    fn data_with_bytes_that_are_not_utf8_exports_and_reads_back() {
        let data = b"{\"a\":\"\xff\xfe\"}".to_vec();
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok());
        let key = SigningKey::from_bytes(&[3; 32]);
        let manifest = Manifest::new(
            "sqlite",
            Position::START,
            1,
            0,
            0,
            Some(Position::from_sequence(1)),
            Some(Position::from_sequence(1)),
            &key.verifying_key(),
        );
        let mut out = Vec::new();
        let mut exporter = Exporter::new(&mut out, manifest).unwrap();
        let metadata = b"{}".to_vec();
        let digest = event_digest(&DigestInput {
            stream: "s",
            version: 0,
            event_type: "T",
            schema_version: 1,
            recorded_at_micros: 5,
            metadata: &metadata,
            data_hash: &data_hash(&data),
        });
        let event = ExportEvent {
            position: Position::from_sequence(1),
            stream: "s".into(),
            version: 0,
            event_id: Uuid::from_u128(1),
            event_type: "T".into(),
            schema_version: 1,
            recorded_at: 5,
            data: data.clone(),
            metadata,
            chain: Some(chain(&GENESIS, &digest)),
        };
        exporter.entry(&Entry::Event(event.clone())).unwrap();
        exporter.finish(&[], &key, DateTime::<Utc>::default()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"data_base64\":"), "{text}");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let (items, result) = sequential(&lines, lines.last().unwrap(), &key);
        assert_eq!(result, Ok(1));
        assert_eq!(items, vec![Item::Entry(Entry::Event(event))]);
    }

    /// An export of 30 events over three interleaved streams: its lines, and its key.
    fn export_lines() -> (Vec<String>, SigningKey) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let n = 30u64;
        let manifest = Manifest::new(
            "sqlite",
            Position::START,
            n,
            0,
            0,
            Some(Position::from_sequence(1)),
            Some(Position::from_sequence(n)),
            &key.verifying_key(),
        );
        let mut out = Vec::new();
        let mut exporter = Exporter::new(&mut out, manifest).unwrap();
        let mut heads: HashMap<String, Hash> = HashMap::new();
        for i in 0..n {
            let stream = ["a", "b", "c"][(i % 3) as usize].to_owned();
            let data = format!("{{\"n\":{i}}}").into_bytes();
            let metadata = br#"{"actor":"user:x"}"#.to_vec();
            let recorded_at = 1_800_000_000_000_000 + i as i64;
            let digest = event_digest(&DigestInput {
                stream: &stream,
                version: i / 3,
                event_type: "T",
                schema_version: 1,
                recorded_at_micros: recorded_at,
                metadata: &metadata,
                data_hash: &data_hash(&data),
            });
            let link = chain(heads.get(&stream).unwrap_or(&GENESIS), &digest);
            heads.insert(stream.clone(), link);
            exporter
                .entry(&Entry::Event(ExportEvent {
                    position: Position::from_sequence(i + 1),
                    stream,
                    version: i / 3,
                    event_id: Uuid::from_u128(u128::from(i) + 1),
                    event_type: "T".into(),
                    schema_version: 1,
                    recorded_at,
                    data,
                    metadata,
                    chain: Some(link),
                }))
                .unwrap();
        }
        exporter.finish(&[], &key, DateTime::<Utc>::default()).unwrap();
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(str::to_owned).collect(), key)
    }

    type Outcome = (Vec<Item>, Result<u64, (String, Option<u64>)>);

    /// A reader over `lines` with the checkpoint taken from `checkpoint` (not necessarily
    /// the last line, so a line after it can be tested).
    fn reader(lines: &[String], checkpoint: &str, key: &SigningKey) -> ExportReader<&'static [u8]> {
        let bytes: &'static [u8] = Box::leak((lines.join("\n") + "\n").into_bytes().into());
        let mut reader = ExportReader::start(bytes).unwrap();
        reader.take_checkpoint(checkpoint, Some(key.verifying_key())).unwrap();
        reader
    }

    fn outcome(result: Result<ImportSummary, TransferError>, items: Vec<Item>) -> Outcome {
        (items, result.map(|s| s.events).map_err(|e| (e.to_string(), e.line())))
    }

    fn sequential(lines: &[String], checkpoint: &str, key: &SigningKey) -> Outcome {
        let mut reader = reader(lines, checkpoint, key);
        let mut items = Vec::new();
        let result = loop {
            match reader.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break Ok(reader.summary().unwrap()),
                Err(e) => break Err(e),
            }
        };
        outcome(result, items)
    }

    #[test]
    fn the_parallel_read_finds_what_the_sequential_one_finds() {
        let (lines, key) = export_lines();
        let checkpoint = lines.last().unwrap().clone();
        let event = |i: usize| 1 + i;
        let mut cases: Vec<(&str, Vec<String>)> = vec![("intact", lines.clone())];
        let mut edited = lines.clone();
        edited[event(7)] = edited[event(7)].replacen("\"n\":7", "\"n\":8", 1);
        cases.push(("a byte of data", edited));
        let mut swapped = lines.clone();
        swapped.swap(event(4), event(5));
        cases.push(("two lines swapped", swapped));
        let mut dropped = lines.clone();
        dropped.remove(event(10));
        cases.push(("a line dropped", dropped));
        let mut garbage = lines.clone();
        garbage[event(12)] = "{not json".into();
        cases.push(("a line that is not JSON", garbage));
        let mut spec = lines.clone();
        spec[event(3)] =
            spec[event(3)].replacen("\"specversion\":\"1.0\"", "\"specversion\":\"2\"", 1);
        cases.push(("another specversion", spec));
        let mut no_id = lines.clone();
        no_id[event(9)] = no_id[event(9)]
            .replacen("\"popposition\":\"10\"", "\"popposition\":\"1\"", 1)
            .replacen("\"id\":", "\"idx\":", 1);
        cases.push(("no id and a position out of order", no_id));
        let mut after = lines.clone();
        after.push(lines[event(2)].clone());
        cases.push(("a line after the checkpoint", after));
        let mut cut = lines.clone();
        cut.truncate(event(20));
        cases.push(("cut before its checkpoint", cut));
        let mut tail = lines.clone();
        tail.truncate(event(29) + 1);
        cases.push(("cut right before its checkpoint", tail));
        for (name, case) in &cases {
            let want = sequential(case, &checkpoint, &key);
            if *name == "intact" {
                assert_eq!(want.1, Ok(30), "{name}");
            } else {
                assert!(want.1.is_err(), "{name}: {want:?}");
            }
            for parsers in [1, 2, 3] {
                for batch in [1, 2, 3, 7, 256] {
                    let reader = reader(case, &checkpoint, &key);
                    let mut items = Vec::new();
                    let result = reader.read_in_batches(parsers, batch, |b| {
                        items.extend(b);
                        Ok(())
                    });
                    let got = outcome(result, items);
                    let at = format!("{name}, {parsers} parsers, batches of {batch}");
                    assert_eq!(got.1, want.1, "{at}");
                    if want.1.is_ok() {
                        assert_eq!(got.0, want.0, "{at}");
                    }
                }
            }
        }
    }
}
