//! One agenda in the read model: the keys it is indexed by and its body, live (an
//! `AgendaState` folded in place) or settled (a COMPLETE agenda's canonical JSON,
//! LZ4-compressed against [`super::dictionary::DICTIONARY`], decoded on read; see the module
//! docs of [`crate::agendas`]).

use std::borrow::{Borrow, Cow};
use std::ops::Deref;
use std::sync::Arc;

use pop_domain::agenda::AgendaState;
use pop_domain::{Agenda, AgendaProgress, OperationProgress, ProcessingState};
use serde::Deserialize;

use crate::phase::Phase;

use super::dictionary::DICTIONARY;

/// A settled agenda did not decode. It was written by this process from a valid state, so
/// this is a bug (or memory corruption); a rebuild from the log repairs it.
#[derive(Debug, thiserror::Error)]
#[error("the read model of agenda {id:?} does not decode; rebuild the projections")]
pub struct CorruptEntry {
    pub id: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// An agenda's stream key as the read model shares it between its entry and its index keys:
/// one pointer (an `Arc` of a `Box<str>`) where an `Arc<str>` is two words, so an index key
/// `(time, Name)` is 16 B instead of 24 (a B-tree leaf of eleven keys 192 B instead of 280 B;
/// a finished agenda has six index keys, a live one up to eight). The price is one more
/// allocation per agenda (16 B). Compares, hashes and borrows as its text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
// The point is the thin pointer: `Arc<str>` is what it replaces.
#[allow(clippy::redundant_allocation)]
pub(super) struct Name(Arc<Box<str>>);

impl Name {
    pub(super) fn new(text: &str) -> Name {
        Name(Arc::new(Box::from(text)))
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::new(text)
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self.0, f)
    }
}

/// The agenda id in a stream key: what follows the first `/` of `agenda::key(customer, id)`
/// (a customer id's own `/` is escaped there), or the whole key for streams keyed by the id
/// alone. An entry stores its agenda id only where this is not it.
pub(super) fn id_in_key(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, id)| id)
}

/// The fields an agenda is indexed by, kept beside its state so that index maintenance and
/// list filtering never decode a settled agenda.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Keys {
    /// The agenda's own id (the id its customer chose), where the stream key does not hold
    /// it ([`id_in_key`]; `None` for every agenda pop submitted): the entry is keyed by its
    /// stream, which scopes the id by customer. Read with [`Keys::agenda_id`]. Out of line
    /// (8 B here, not 16): it is there only for streams keyed by another id, and the room pays
    /// for [`Keys::log`] (issue 18: at most 1 KiB per finished agenda, 1,022 B measured before).
    pub(super) agenda_id: Option<Box<Arc<str>>>,
    /// The AgendaProgress id where it is not the agenda id (POP's clients often choose one).
    /// Read with [`Keys::progress_id`].
    pub(super) progress_id: Option<Arc<str>>,
    pub(super) customer: Arc<str>,
    /// Interned through the index maps, like the insight ([`Name`]: 8 B here).
    pub(super) link: Option<Name>,
    pub(super) insight: Option<Name>,
    pub(super) state: ProcessingState,
    pub(super) phase: Phase,
    pub(super) added: i64,
    pub(super) updated: i64,
    /// When the agenda last entered its insight's queue (`AgendaState::entered_time`): its
    /// place in the queue order.
    pub(super) entered: i64,
    /// `params.doNotRun`: kept for record, never a scheduler candidate.
    pub(super) held: bool,
    /// A failed agenda whose automatic retry is to come (`AgendaProgress::retry_due`), known
    /// without decoding its settled body: what holds an insight's delete is asked of every
    /// failed agenda bound to it, and decoding each under the read models' lock (~140 µs) let
    /// a tenant's looping refused deletes hold every write (hostile60b M1).
    pub(super) retry: bool,
    /// What the agenda holds in memory, counted per customer for its quotas.
    /// - Live: its definition (operations, payloads, params) and what it keeps of its reports
    ///   (results, params, diagnostics) as compact JSON, for the live-bytes quota. Measured
    ///   when the agenda is first seen live and after each event that changes what it keeps.
    /// - COMPLETE: its settled body (compressed) and [`FINISHED_ENTRY_BYTES`] for its entry
    ///   and index keys, for the retained-bytes quota ([`finished_bytes`]; hostile42 H2:
    ///   finished agendas grew the server by 77 MB in 65 s, counted by no quota).
    ///
    /// A `u32` (saturating): an agenda is bounded far below 4 GiB, and it keeps the entry 8 B
    /// smaller.
    pub(super) bytes: u32,
    /// What the agenda's stream takes in the log (its events' data and metadata), counted per
    /// customer for `--max-log-bytes-per-customer` until the data reaper deletes the stream
    /// (hostile57 H2: one token wrote 139 MB of log in 21 s, with agendas of compressible
    /// payloads cancelled at once, counted by no quota). Saturating.
    pub(super) log: u32,
}

impl Keys {
    /// The agenda's own id where the key does not hold it.
    pub(super) fn own_agenda_id(&self) -> Option<&Arc<str>> {
        self.agenda_id.as_deref()
    }

    /// The AgendaProgress id where it is not the agenda id.
    pub(super) fn own_progress_id(&self) -> Option<&Arc<str>> {
        self.progress_id.as_ref()
    }

    /// The agenda id of the entry keyed `key` with these keys.
    pub(super) fn agenda_id<'a>(&'a self, key: &'a str) -> &'a str {
        self.own_agenda_id().map_or_else(|| id_in_key(key), |id| &**id)
    }

    /// The AgendaProgress id of the entry keyed `key` with these keys.
    pub(super) fn progress_id<'a>(&'a self, key: &'a str) -> &'a str {
        self.own_progress_id().map_or_else(|| self.agenda_id(key), |id| &**id)
    }
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    Live(Box<AgendaState>),
    /// The canonical JSON of a COMPLETE agenda's state, LZ4-compressed with the dictionary
    /// (size prepended).
    Settled(Box<[u8]>),
}

/// One agenda in the read model.
#[derive(Debug, Clone)]
pub struct AgendaEntry {
    /// The stream key (`agenda-<key>`): the customer-scoped identity of the agenda.
    pub(super) key: Name,
    pub(super) keys: Keys,
    pub(super) body: Body,
}

fn corrupt(key: &Name, source: impl std::error::Error + Send + Sync + 'static) -> CorruptEntry {
    CorruptEntry { id: key.to_string(), source: Box::new(source) }
}

/// A settled body's canonical JSON.
fn decompress(key: &Name, compressed: &[u8]) -> Result<Vec<u8>, CorruptEntry> {
    lz4_flex::block::decompress_size_prepended_with_dict(compressed, DICTIONARY)
        .map_err(|e| corrupt(key, e))
}

/// An agenda's progress taken out of the read model under its lock ([`AgendaEntry::detached_progress`]),
/// to be decoded after: a batch of thousands of finished agendas takes a second to decode, and
/// decoded under the lock it held every reader, the projections and the health probe behind
/// it (hostile57 H1).
pub struct DetachedProgress(Detached);

enum Detached {
    Ready(Box<AgendaProgress>),
    Settled { key: Name, compressed: Box<[u8]> },
}

impl DetachedProgress {
    /// The AgendaProgress, decoded when it was held compressed.
    pub fn progress(self) -> Result<AgendaProgress, CorruptEntry> {
        match self.0 {
            Detached::Ready(progress) => Ok(*progress),
            Detached::Settled { key, compressed } => {
                let json = decompress(&key, &compressed)?;
                serde_json::from_slice::<ProgressOnly>(&json)
                    .map(|p| p.progress)
                    .map_err(|e| corrupt(&key, e))
            }
        }
    }

    /// Whether decoding it is more than a move (it was held compressed).
    pub fn is_compressed(&self) -> bool {
        matches!(self.0, Detached::Settled { .. })
    }
}

#[derive(Deserialize)]
struct ProgressOnly {
    #[serde(rename = "progress", default)]
    progress: AgendaProgress,
}

#[derive(Deserialize)]
struct AgendaOnly {
    #[serde(rename = "agenda", default)]
    agenda: Option<Agenda>,
}

impl AgendaEntry {
    /// The stream key, `agenda::key(customer, id)` for agendas pop submitted: what commands
    /// and the read model address the agenda by.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The agenda's id, as its customer chose it (unique within that customer only).
    pub fn id(&self) -> &str {
        self.keys.agenda_id(&self.key)
    }
    pub fn progress_id(&self) -> &str {
        self.keys.progress_id(&self.key)
    }
    pub fn customer_id(&self) -> &str {
        &self.keys.customer
    }
    pub fn link_id(&self) -> Option<&str> {
        self.keys.link.as_deref()
    }
    /// `agendaInsight.insightId`.
    pub fn insight_id(&self) -> Option<&str> {
        self.keys.insight.as_deref()
    }
    pub fn processing_state(&self) -> ProcessingState {
        self.keys.state
    }
    pub fn phase(&self) -> Phase {
        self.keys.phase
    }
    /// `addedTime` in epoch milliseconds.
    pub fn added_ms(&self) -> i64 {
        self.keys.added
    }
    /// When the agenda last entered its insight's queue (submission, or re-entry after a
    /// rerun, retry, reclaim or release), in epoch milliseconds: the scheduler's "oldest".
    pub fn entered_ms(&self) -> i64 {
        self.keys.entered
    }
    /// `params.doNotRun`: kept for record, never scheduled.
    pub fn is_do_not_run(&self) -> bool {
        self.keys.held
    }
    /// A failed agenda whose automatic retry is to come (`AgendaProgress::retry_due`), read
    /// without decoding it.
    pub fn retry_due(&self) -> bool {
        self.keys.retry
    }
    /// `updatedTime` in epoch milliseconds.
    pub fn updated_ms(&self) -> i64 {
        self.keys.updated
    }

    /// The whole folded state (decoded when settled).
    /// The state of a live agenda held whole in memory, borrowed; `None` for a settled one,
    /// or a live one kept compressed (degraded mode): nothing is decoded.
    pub fn live_state(&self) -> Option<&AgendaState> {
        match &self.body {
            Body::Live(state) => Some(state),
            Body::Settled(_) => None,
        }
    }

    pub fn state(&self) -> Result<Cow<'_, AgendaState>, CorruptEntry> {
        match &self.body {
            Body::Live(state) => Ok(Cow::Borrowed(state)),
            Body::Settled(_) => self.decode_settled().map(Cow::Owned),
        }
    }

    /// The AgendaProgress with its OperationProgress list.
    pub fn progress(&self) -> Result<AgendaProgress, CorruptEntry> {
        match &self.body {
            Body::Live(state) => Ok(state.progress().clone()),
            Body::Settled(_) => self.decode_settled::<ProgressOnly>().map(|p| p.progress),
        }
    }

    /// The OperationProgress of the operation `name`, when the agenda has one.
    pub fn operation(&self, name: &str) -> Result<Option<OperationProgress>, CorruptEntry> {
        Ok(match &self.body {
            Body::Live(state) => {
                state.progress().operation_progress.iter().find(|p| &*p.operation == name).cloned()
            }
            Body::Settled(_) => {
                self.progress()?.operation_progress.into_iter().find(|p| &*p.operation == name)
            }
        })
    }

    /// The agenda as submitted and expanded.
    pub fn agenda(&self) -> Result<Option<Agenda>, CorruptEntry> {
        match &self.body {
            Body::Live(state) => Ok(state.agenda().cloned()),
            Body::Settled(_) => self.decode_settled::<AgendaOnly>().map(|a| a.agenda),
        }
    }

    /// The AgendaProgress, taken out at the cost of a copy (a live agenda's progress cloned, a
    /// settled one's compressed bytes copied) and decoded later, by
    /// [`DetachedProgress::progress`], once the read lock is released.
    pub fn detached_progress(&self) -> DetachedProgress {
        DetachedProgress(match &self.body {
            Body::Live(state) => Detached::Ready(Box::new(state.progress().clone())),
            Body::Settled(compressed) => {
                Detached::Settled { key: self.key.clone(), compressed: compressed.clone() }
            }
        })
    }

    /// Decodes (part of) a settled state.
    fn decode_settled<T: serde::de::DeserializeOwned>(&self) -> Result<T, CorruptEntry> {
        let json = self.settled_json()?;
        serde_json::from_slice(&json).map_err(|e| self.corrupt(e))
    }

    fn settled_json(&self) -> Result<Cow<'_, [u8]>, CorruptEntry> {
        match &self.body {
            Body::Settled(compressed) => decompress(&self.key, compressed).map(Cow::Owned),
            Body::Live(_) => Ok(Cow::Borrowed(&[])),
        }
    }

    /// Whether the agenda is live (not COMPLETE), however it is held.
    pub fn is_live(&self) -> bool {
        self.keys.phase.is_live()
    }

    /// Whether the entry is held as compressed JSON (COMPLETE, or any agenda in the degraded
    /// mode) rather than as a state.
    pub fn is_settled(&self) -> bool {
        matches!(self.body, Body::Settled(_))
    }

    /// The bytes of the compressed body of a settled entry (0 for a live one): what the
    /// rebuild bench reports as a finished agenda's body.
    pub fn settled_bytes(&self) -> usize {
        match &self.body {
            Body::Settled(bytes) => bytes.len(),
            Body::Live(_) => 0,
        }
    }

    /// The canonical JSON of the state: what snapshots store and the determinism hash reads.
    pub fn canonical_json(&self) -> Result<Vec<u8>, CorruptEntry> {
        match &self.body {
            Body::Live(state) => serde_json::to_vec(state.as_ref()).map_err(|e| self.corrupt(e)),
            Body::Settled(_) => self.settled_json().map(Cow::into_owned),
        }
    }

    fn corrupt(&self, source: impl std::error::Error + Send + Sync + 'static) -> CorruptEntry {
        corrupt(&self.key, source)
    }

    pub(super) fn take_state(&mut self) -> Result<AgendaState, CorruptEntry> {
        if let Body::Settled(_) = &self.body {
            // On failure the entry stays as it was.
            return self.decode_settled();
        }
        match std::mem::replace(&mut self.body, Body::Settled(Box::default())) {
            Body::Live(state) => Ok(*state),
            Body::Settled(_) => Ok(AgendaState::default()),
        }
    }
}

/// About what a finished agenda's entry, keys and index keys take besides its body: ~349 B
/// (BENCHMARKS.md, "where a finished agenda's 1,005 B go") and the text of its ids, rounded
/// up. Counted with each finished agenda so that many small ones count too.
pub(super) const FINISHED_ENTRY_BYTES: u32 = 512;

/// What a finished (COMPLETE) agenda with `body` holds in memory, as its [`Keys::bytes`]: its
/// body as held (compressed when settled) and [`FINISHED_ENTRY_BYTES`].
pub(super) fn finished_bytes(body: &Body) -> u32 {
    let held = match body {
        Body::Settled(bytes) => bytes.len(),
        // A settle that failed (never seen): held as a state, several times its JSON.
        Body::Live(state) => super::live_bytes(state) as usize,
    };
    u32::try_from(held).unwrap_or(u32::MAX).saturating_add(FINISHED_ENTRY_BYTES)
}

/// What [`settle`] reuses from one agenda to the next: the JSON text and the LZ4 output
/// (fresh ones cost buffer growth each time). The compressor's hash table cannot be reused
/// with a dictionary: lz4_flex fills a fresh one from the dictionary per call.
#[derive(Default)]
pub(super) struct SettleBuffers {
    json: Vec<u8>,
    compressed: Vec<u8>,
}

impl std::fmt::Debug for SettleBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleBuffers").finish_non_exhaustive()
    }
}

/// Scratch buffers larger than this are freed after use.
const SCRATCH_KEPT: usize = 1 << 20;

/// Holds COMPLETE agendas as JSON (see the module docs); the rest live. The settled form is
/// what `lz4_flex::block::compress_prepend_size_with_dict` makes with [`DICTIONARY`] (the size
/// as a little-endian `u32`, then the block), built in `buffers`.
///
/// With `compact` (the degraded mode of [`super::AgendaModel::compact_live`]) live agendas are
/// held the same way: every event then decodes and encodes its agenda, for a fraction of the
/// memory.
pub(super) fn settle(
    buffers: &mut SettleBuffers,
    mut state: Box<AgendaState>,
    compact: bool,
) -> Body {
    if !state.is_complete() && !compact {
        return Body::Live(state);
    }
    // The finisher is the write side's (late reports), not a read model's.
    state.forget_finisher();
    buffers.json.clear();
    // Encoding a state cannot fail (string keys, finite numbers), nor can compressing into a
    // buffer of the maximum output size; if either ever did, the entry would simply stay live.
    if serde_json::to_writer(&mut buffers.json, state.as_ref()).is_err() {
        return Body::Live(state);
    }
    let Ok(size) = u32::try_from(buffers.json.len()) else { return Body::Live(state) };
    let max = lz4_flex::block::get_maximum_output_size(buffers.json.len());
    if buffers.compressed.len() < max {
        buffers.compressed.resize(max, 0);
    }
    match lz4_flex::block::compress_into_with_dict(
        &buffers.json,
        &mut buffers.compressed,
        DICTIONARY,
    ) {
        Ok(n) => {
            let mut settled = Vec::with_capacity(4 + n);
            settled.extend_from_slice(&size.to_le_bytes());
            settled.extend_from_slice(buffers.compressed.get(..n).unwrap_or_default());
            // Only once the block is copied out: a huge agenda does not hold its size of
            // scratch space forever. (Freed before the copy, a settled agenda over 1 MiB of
            // JSON was its size alone: unreadable, and every later event on it stopped the
            // projections.)
            if buffers.json.capacity() > SCRATCH_KEPT {
                buffers.json = Vec::new();
                buffers.compressed = Vec::new();
            }
            Body::Settled(settled.into_boxed_slice())
        }
        Err(_) => Body::Live(state),
    }
}
