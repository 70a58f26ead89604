//! The agenda read model: one [`AgendaState`] per agenda, folded by the domain's own `evolve`
//! (so progress rules live in one place), plus the indexes the API, the scheduler and the
//! reapers query: by customer, linkId, processing state, insight queue and time.
//!
//! **Memory.** An agenda that is still moving is held as a live `AgendaState`, because every
//! report changes it. A COMPLETE agenda rarely changes again, and finished agendas are most of
//! what a long-running read model holds, so it is *settled*: kept as its canonical JSON (the
//! same text the snapshot and the determinism hash use), LZ4-compressed, and decoded on read.
//! A live `AgendaState` of five operations costs about 11 KiB, mostly `BTreeMap` nodes of JSON
//! payloads and params (each non-empty map allocates a whole node); its JSON is about 3 KiB
//! and compresses about threefold. The price is a decompression and a JSON decode per read of
//! a settled agenda (microseconds), and one encode when an agenda completes. An event for a
//! settled agenda (a rerun) decodes it, applies the event and settles it again if it is still
//! complete.
//!
//! **Order.** Every index is a `BTreeSet` of `(time in ms, agenda id)`, so lists come out in a
//! stable order with cursors that name a place even among equal times. Strings are `Arc<str>`
//! shared between the entry and its index keys; customer, link and insight ids are interned
//! through the index maps, so one customer id is stored once however many agendas it owns.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::btree_set;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use pop_domain::agenda::{AgendaEvent, AgendaState};
use pop_domain::model::message;
use pop_domain::rollup::progress_summary;
use pop_domain::{
    Agenda, AgendaProgress, Aggregate, OperationProgress, ProcessingState, ProgressSummary,
    Timestamp,
};
use serde::Deserialize;

use crate::change::{Change, ChangeKind};
use crate::query::{AgendaOrder, Cursor, MAX_PAGE_SIZE, MAX_SCANNED_PER_PAGE, Page, Visibility};

/// An index key: `(time in epoch ms, agenda id)`.
type Key = (i64, Arc<str>);

/// Where an agenda is in its life, finer than `processingState`: the scheduler wants the
/// `added` ones of an insight, `getAgenda` the `queued` ones, the reclaimer the `scheduled`
/// and executing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// WAITING/added: bound to an insight, waiting for the scheduler.
    Added,
    /// WAITING/queued: in its insight's queue.
    Queued,
    /// WAITING/scheduled: handed out under a lease.
    Scheduled,
    /// WAITING/pending: reset by a rerun, not re-added.
    Pending,
    /// WAITING with any other message.
    Waiting,
    Executing,
    Succeeded,
    Failed,
    Cancelled,
    /// COMPLETE with any other message.
    Complete,
}

impl Phase {
    /// The phase of an agenda in `state` with `message` (compared case-insensitively).
    pub fn of(state: ProcessingState, msg: &str) -> Phase {
        let is = |m: &str| msg.eq_ignore_ascii_case(m);
        match state {
            ProcessingState::Waiting if is(message::ADDED) => Phase::Added,
            ProcessingState::Waiting if is(message::QUEUED) => Phase::Queued,
            ProcessingState::Waiting if is(message::SCHEDULED) => Phase::Scheduled,
            ProcessingState::Waiting if is(message::PENDING) => Phase::Pending,
            ProcessingState::Waiting => Phase::Waiting,
            ProcessingState::Executing => Phase::Executing,
            ProcessingState::Complete if message::is_succeeded(msg) => Phase::Succeeded,
            ProcessingState::Complete if message::is_failed(msg) => Phase::Failed,
            ProcessingState::Complete if message::is_cancelled(msg) => Phase::Cancelled,
            ProcessingState::Complete => Phase::Complete,
        }
    }
}

/// A settled agenda did not decode. It was written by this process from a valid state, so
/// this is a bug (or memory corruption); a rebuild from the log repairs it.
#[derive(Debug, thiserror::Error)]
#[error("the read model of agenda {id:?} does not decode; rebuild the projections")]
pub struct CorruptEntry {
    pub id: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The fields an agenda is indexed by, kept beside its state so that index maintenance and
/// list filtering never decode a settled agenda.
#[derive(Debug, Clone, PartialEq)]
struct Keys {
    progress_id: Arc<str>,
    customer: Arc<str>,
    link: Option<Arc<str>>,
    insight: Option<Arc<str>>,
    state: ProcessingState,
    phase: Phase,
    added: i64,
    updated: i64,
}

#[derive(Debug, Clone)]
enum Body {
    Live(Box<AgendaState>),
    /// The canonical JSON of a COMPLETE agenda's state, LZ4-compressed (size prepended).
    Settled(Box<[u8]>),
}

/// One agenda in the read model.
#[derive(Debug, Clone)]
pub struct AgendaEntry {
    id: Arc<str>,
    keys: Keys,
    body: Body,
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
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn progress_id(&self) -> &str {
        &self.keys.progress_id
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
    /// `updatedTime` in epoch milliseconds.
    pub fn updated_ms(&self) -> i64 {
        self.keys.updated
    }

    /// The whole folded state (decoded when settled).
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

    /// The agenda as submitted and expanded.
    pub fn agenda(&self) -> Result<Option<Agenda>, CorruptEntry> {
        match &self.body {
            Body::Live(state) => Ok(state.agenda().cloned()),
            Body::Settled(_) => self.decode_settled::<AgendaOnly>().map(|a| a.agenda),
        }
    }

    /// Decodes (part of) a settled state.
    fn decode_settled<T: serde::de::DeserializeOwned>(&self) -> Result<T, CorruptEntry> {
        let json = self.settled_json()?;
        serde_json::from_slice(&json).map_err(|e| self.corrupt(e))
    }

    fn settled_json(&self) -> Result<Cow<'_, [u8]>, CorruptEntry> {
        match &self.body {
            Body::Settled(compressed) => lz4_flex::block::decompress_size_prepended(compressed)
                .map(Cow::Owned)
                .map_err(|e| self.corrupt(e)),
            Body::Live(_) => Ok(Cow::Borrowed(&[])),
        }
    }

    /// Whether the entry is held as JSON (COMPLETE) rather than as a live state.
    pub fn is_settled(&self) -> bool {
        matches!(self.body, Body::Settled(_))
    }

    /// The canonical JSON of the state: what snapshots store and the determinism hash reads.
    pub fn canonical_json(&self) -> Result<Vec<u8>, CorruptEntry> {
        match &self.body {
            Body::Live(state) => serde_json::to_vec(state.as_ref()).map_err(|e| self.corrupt(e)),
            Body::Settled(_) => self.settled_json().map(Cow::into_owned),
        }
    }

    fn corrupt(&self, source: impl std::error::Error + Send + Sync + 'static) -> CorruptEntry {
        CorruptEntry { id: self.id.to_string(), source: Box::new(source) }
    }

    fn take_state(&mut self) -> Result<AgendaState, CorruptEntry> {
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

/// The indexes of one set of agendas (all of them, or one customer's).
#[derive(Debug, Default)]
struct Partition {
    added: BTreeSet<Key>,
    updated: BTreeSet<Key>,
    /// Per processing state, in `updatedTime` order (what reapers ask: "COMPLETE and not
    /// updated for 3 days", "EXECUTING and silent for 5 minutes").
    by_state: [BTreeSet<Key>; 3],
}

impl Partition {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
    }
}

fn state_slot(state: ProcessingState) -> usize {
    match state {
        ProcessingState::Waiting => 0,
        ProcessingState::Executing => 1,
        ProcessingState::Complete => 2,
    }
}

/// Every agenda, by id, with its indexes.
#[derive(Debug, Default)]
pub struct AgendaModel {
    entries: HashMap<Arc<str>, AgendaEntry>,
    /// AgendaProgress id → agenda id, only where they differ (lookups check the agenda map
    /// second, so the common `progressId == id` case costs nothing).
    progress_ids: HashMap<Arc<str>, Arc<str>>,
    all: Partition,
    by_customer: HashMap<Arc<str>, Partition>,
    /// In `addedTime` order.
    by_link: HashMap<Arc<str>, BTreeSet<Key>>,
    /// Per insight and phase, in `addedTime` order: the scheduler's and `getAgenda`'s queues.
    by_insight: HashMap<Arc<str>, BTreeMap<Phase, BTreeSet<Key>>>,
    /// While set (a rebuild or a snapshot load, before anyone queries), the indexes above are
    /// not maintained per event: [`AgendaModel::build_indexes`] builds them once from the
    /// entries' keys at the end. An agenda changes ~14 times in its life, and each change
    /// would otherwise move it in four `updatedTime` sets.
    deferred: bool,
    /// Scratch space for settling, reused so that each settle allocates only its result.
    buffers: SettleBuffers,
}

/// What [`settle`] reuses from one agenda to the next: the JSON text, the LZ4 output and the
/// compressor's hash table (fresh ones cost a zeroed 8 KiB table and buffer growth each time).
#[derive(Default)]
struct SettleBuffers {
    json: Vec<u8>,
    compressed: Vec<u8>,
    table: lz4_flex::block::CompressTable,
}

impl std::fmt::Debug for SettleBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleBuffers").finish_non_exhaustive()
    }
}

/// A filtered, ordered, paginated agenda list. Filters are ANDed.
#[derive(Debug, Clone)]
pub struct AgendaQuery<'a> {
    pub visibility: &'a Visibility,
    pub link_id: Option<&'a str>,
    pub insight_id: Option<&'a str>,
    pub processing_state: Option<ProcessingState>,
    pub phase: Option<Phase>,
    pub order: AgendaOrder,
    /// Start after this cursor (exclusive); `None` for the first page.
    pub after: Option<&'a Cursor>,
    /// Clamped to `1..=MAX_PAGE_SIZE`.
    pub limit: usize,
}

impl<'a> AgendaQuery<'a> {
    /// Every agenda `visibility` sees, oldest first, one full page.
    pub fn new(visibility: &'a Visibility) -> AgendaQuery<'a> {
        AgendaQuery {
            visibility,
            link_id: None,
            insight_id: None,
            processing_state: None,
            phase: None,
            order: AgendaOrder::AddedTime,
            after: None,
            limit: MAX_PAGE_SIZE,
        }
    }

    fn admits(&self, e: &AgendaEntry) -> bool {
        self.visibility.sees(&e.keys.customer)
            && self.link_id.is_none_or(|l| e.keys.link.as_deref() == Some(l))
            && self.insight_id.is_none_or(|i| e.keys.insight.as_deref() == Some(i))
            && self.processing_state.is_none_or(|s| e.keys.state == s)
            && self.phase.is_none_or(|p| e.keys.phase == p)
    }
}

fn ms(t: Option<Timestamp>) -> i64 {
    t.map_or(0, |t| t.timestamp_millis())
}

/// Reuses `old` when it already holds `new`, else interns `new` through `pool`'s keys.
fn intern<V>(pool: &HashMap<Arc<str>, V>, old: Option<&Arc<str>>, new: &str) -> Arc<str> {
    if let Some(old) = old.filter(|o| o.as_ref() == new) {
        return Arc::clone(old);
    }
    match pool.get_key_value(new) {
        Some((k, _)) => Arc::clone(k),
        None => Arc::from(new),
    }
}

impl AgendaModel {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// By agenda id.
    pub fn get(&self, id: &str) -> Option<&AgendaEntry> {
        self.entries.get(id)
    }

    /// By AgendaProgress id.
    pub fn by_progress_id(&self, progress_id: &str) -> Option<&AgendaEntry> {
        if let Some(agenda_id) = self.progress_ids.get(progress_id) {
            return self.entries.get(agenda_id);
        }
        self.entries.get(progress_id).filter(|e| e.progress_id() == progress_id)
    }

    /// By OperationProgress id, `<progressId>-<operation name>`. Both parts may contain `-`,
    /// so every split is tried, the longest progress id first.
    pub fn operation_progress(&self, id: &str) -> Result<Option<OperationProgress>, CorruptEntry> {
        for (i, _) in id.rmatch_indices('-') {
            let (progress_id, name) = (&id[..i], &id[i + 1..]);
            let Some(entry) = self.by_progress_id(progress_id) else { continue };
            let found = match &entry.body {
                Body::Live(state) => state
                    .progress()
                    .operation_progress
                    .iter()
                    .find(|p| p.operation == name)
                    .cloned(),
                Body::Settled(_) => {
                    entry.progress()?.operation_progress.into_iter().find(|p| p.operation == name)
                }
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Every entry in id order (for snapshots and the determinism hash).
    pub fn entries_by_id(&self) -> Vec<&AgendaEntry> {
        let mut all: Vec<&AgendaEntry> = self.entries.values().collect();
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// How many agendas of `insight_id` are in `phase` (e.g. the queue's fill level).
    pub fn count_in(&self, insight_id: &str, phase: Phase) -> usize {
        self.by_insight.get(insight_id).and_then(|p| p.get(&phase)).map_or(0, BTreeSet::len)
    }

    /// Every agenda of any insight that is in `phase`, each insight's in `addedTime` order
    /// (insights in no particular order). Only bound agendas can be `queued`, `scheduled` or
    /// EXECUTING (they got there through an insight's queue), so for those phases this is all
    /// of them — the reclaimer's candidates.
    pub fn in_phase(&self, phase: Phase) -> impl Iterator<Item = &AgendaEntry> + '_ {
        self.by_insight
            .values()
            .filter_map(move |phases| phases.get(&phase))
            .flatten()
            .filter_map(|(_, id)| self.entries.get(id))
    }

    /// Applies one event of stream `agenda-<id>`. Keyed by the stream id: the log names the
    /// agenda, and `decide` made the submitted agenda's id equal to it.
    pub(crate) fn apply(
        &mut self,
        id: &str,
        event: &AgendaEvent,
        change: Option<&mut Change>,
    ) -> Result<bool, CorruptEntry> {
        if let Some(entry) = self.entries.get_mut(id)
            && let Body::Live(state) = &mut entry.body
        {
            // The common case: fold a live agenda where it lies, without moving its state.
            state.evolve(event);
            let keys = keys_of(
                &self.by_customer,
                &self.by_link,
                &self.by_insight,
                state,
                Some(&entry.keys),
            );
            let old = std::mem::replace(&mut entry.keys, keys);
            if state.is_complete() {
                let body = std::mem::replace(&mut entry.body, Body::Settled(Box::default()));
                if let Body::Live(state) = body {
                    entry.body = settle(&mut self.buffers, state);
                }
            }
            let id = Arc::clone(&entry.id);
            let keys = entry.keys.clone();
            self.reindex(&id, Some(&old), Some(&keys));
            if let Some(change) = change {
                describe(change, &id, &keys);
            }
            return Ok(true);
        }
        let mut state = match self.entries.get_mut(id) {
            Some(entry) => entry.take_state()?,
            None => AgendaState::default(),
        };
        state.evolve(event);
        if !state.exists() && !self.entries.contains_key(id) {
            // An event before the submission: evolve absorbed it and there is nothing to show.
            return Ok(false);
        }
        self.put(id, state, change);
        Ok(true)
    }

    /// Inserts or replaces the entry `id` with `state` and re-indexes it.
    pub(crate) fn put(&mut self, id: &str, state: AgendaState, change: Option<&mut Change>) {
        let old = self.entries.get(id).map(|e| (Arc::clone(&e.id), e.keys.clone()));
        let keys = keys_of(
            &self.by_customer,
            &self.by_link,
            &self.by_insight,
            &state,
            old.as_ref().map(|(_, k)| k),
        );
        let id: Arc<str> = match &old {
            Some((id, _)) => Arc::clone(id),
            None => Arc::from(id),
        };
        self.reindex(&id, old.as_ref().map(|(_, k)| k), Some(&keys));
        if let Some(change) = change {
            describe(change, &id, &keys);
        }
        let body = settle(&mut self.buffers, Box::new(state));
        self.entries.insert(Arc::clone(&id), AgendaEntry { id, keys, body });
    }

    /// Stops maintaining the indexes per event until [`AgendaModel::build_indexes`]: for a
    /// rebuild or a snapshot load, where nobody queries before the end.
    pub(crate) fn defer_indexes(&mut self) {
        self.deferred = true;
    }

    /// Builds every index from the entries' keys (after [`AgendaModel::defer_indexes`]),
    /// interning customer, link and insight ids again so each is stored once.
    pub(crate) fn build_indexes(&mut self) {
        if !self.deferred {
            return;
        }
        self.deferred = false;
        self.progress_ids.clear();
        self.all = Partition::default();
        self.by_customer.clear();
        self.by_link.clear();
        self.by_insight.clear();
        let mut entries = std::mem::take(&mut self.entries);
        for entry in entries.values_mut() {
            let k = &mut entry.keys;
            k.customer = intern(&self.by_customer, None, &k.customer);
            if let Some(link) = k.link.as_mut() {
                *link = intern(&self.by_link, None, link);
            }
            if let Some(insight) = k.insight.as_mut() {
                *insight = intern(&self.by_insight, None, insight);
            }
            self.reindex(&entry.id, None, Some(&entry.keys));
        }
        self.entries = entries;
    }

    /// Drops an agenda and its index entries (the hook for streams deleted by a reaper).
    pub(crate) fn remove(&mut self, id: &str) -> Option<AgendaEntry> {
        let entry = self.entries.remove(id)?;
        self.reindex(&entry.id, Some(&entry.keys), None);
        Some(entry)
    }

    /// Moves an agenda's index entries from `old` keys to `new` ones, touching only the
    /// indexes whose key changed (most events change only the updated time).
    fn reindex(&mut self, id: &Arc<str>, old: Option<&Keys>, new: Option<&Keys>) {
        if self.deferred {
            return;
        }
        let added_key = |k: &Keys| (k.added, Arc::clone(id));
        let updated_key = |k: &Keys| (k.updated, Arc::clone(id));

        // Progress id map.
        let progress =
            |k: &Keys| (k.progress_id.as_ref() != id.as_ref()).then(|| Arc::clone(&k.progress_id));
        let (old_p, new_p) = (old.and_then(progress), new.and_then(progress));
        if old_p != new_p {
            if let Some(p) = old_p {
                self.progress_ids.remove(&p);
            }
            if let Some(p) = new_p {
                self.progress_ids.insert(p, Arc::clone(id));
            }
        }

        // Added-time order: all, customer, link.
        let same_added = |a: &Keys, b: &Keys| a.added == b.added && a.customer == b.customer;
        if !matches!((old, new), (Some(a), Some(b)) if same_added(a, b)) {
            if let Some(k) = old {
                self.all.added.remove(&added_key(k));
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.added.remove(&added_key(k));
                }
            }
            if let Some(k) = new {
                self.all.added.insert(added_key(k));
                self.by_customer
                    .entry(Arc::clone(&k.customer))
                    .or_default()
                    .added
                    .insert(added_key(k));
            }
        }
        let same_link = |a: &Keys, b: &Keys| a.added == b.added && a.link == b.link;
        if !matches!((old, new), (Some(a), Some(b)) if same_link(a, b)) {
            if let Some(k) = old
                && let Some(link) = &k.link
                && let Some(set) = self.by_link.get_mut(link)
            {
                set.remove(&added_key(k));
                if set.is_empty() {
                    self.by_link.remove(link);
                }
            }
            if let Some(k) = new
                && let Some(link) = &k.link
            {
                self.by_link.entry(Arc::clone(link)).or_default().insert(added_key(k));
            }
        }

        // Updated-time order: all, customer, per state.
        let same_updated = |a: &Keys, b: &Keys| {
            a.updated == b.updated && a.state == b.state && a.customer == b.customer
        };
        if !matches!((old, new), (Some(a), Some(b)) if same_updated(a, b)) {
            if let Some(k) = old {
                let key = updated_key(k);
                self.all.updated.remove(&key);
                self.all.by_state[state_slot(k.state)].remove(&key);
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.updated.remove(&key);
                    part.by_state[state_slot(k.state)].remove(&key);
                }
            }
            if let Some(k) = new {
                let key = updated_key(k);
                self.all.updated.insert(key.clone());
                self.all.by_state[state_slot(k.state)].insert(key.clone());
                let part = self.by_customer.entry(Arc::clone(&k.customer)).or_default();
                part.updated.insert(key.clone());
                part.by_state[state_slot(k.state)].insert(key);
            }
        }
        if let Some(k) = old
            && new.is_none_or(|n| n.customer != k.customer)
            && self.by_customer.get(&k.customer).is_some_and(Partition::is_empty)
        {
            self.by_customer.remove(&k.customer);
        }

        // Insight queues: per insight and phase, added-time order.
        let same_queue =
            |a: &Keys, b: &Keys| a.added == b.added && a.insight == b.insight && a.phase == b.phase;
        if !matches!((old, new), (Some(a), Some(b)) if same_queue(a, b)) {
            if let Some(k) = old
                && let Some(insight) = &k.insight
                && let Some(phases) = self.by_insight.get_mut(insight)
            {
                if let Some(set) = phases.get_mut(&k.phase) {
                    set.remove(&added_key(k));
                    if set.is_empty() {
                        phases.remove(&k.phase);
                    }
                }
                if phases.is_empty() {
                    self.by_insight.remove(insight);
                }
            }
            if let Some(k) = new
                && let Some(insight) = &k.insight
            {
                self.by_insight
                    .entry(Arc::clone(insight))
                    .or_default()
                    .entry(k.phase)
                    .or_default()
                    .insert(added_key(k));
            }
        }
    }

    /// One page of the agendas `q` selects, as entries (cheap: no decoding). The driving index
    /// is the most selective one that has the requested order: the link group, the insight's
    /// queues, or the visible customers' partitions (all agendas for `*`); the other filters
    /// are checked per entry, and at most [`MAX_SCANNED_PER_PAGE`] entries are examined.
    pub fn select<'m>(&'m self, q: &AgendaQuery<'_>) -> Page<&'m AgendaEntry> {
        self.select_paged(q, |_| true, false)
    }

    /// [`Self::select`] with one more filter, `keep`, checked per entry *before* the page is
    /// cut: a page holds up to `limit` entries that pass it. `next` is exact: given only when
    /// another entry after the page passes (or when the [`MAX_SCANNED_PER_PAGE`] bound, which
    /// covers the look-ahead too, stopped the scan first).
    pub fn select_where<'m>(
        &'m self,
        q: &AgendaQuery<'_>,
        keep: impl Fn(&AgendaEntry) -> bool,
    ) -> Page<&'m AgendaEntry> {
        self.select_paged(q, keep, true)
    }

    fn select_paged<'m>(
        &'m self,
        q: &AgendaQuery<'_>,
        keep: impl Fn(&AgendaEntry) -> bool,
        exact_next: bool,
    ) -> Page<&'m AgendaEntry> {
        let mut sources: Vec<&'m BTreeSet<Key>> = Vec::new();
        let by_added = q.order == AgendaOrder::AddedTime;
        if let (true, Some(link)) = (by_added, q.link_id) {
            sources.extend(self.by_link.get(link));
        } else if let (true, Some(insight)) = (by_added, q.insight_id) {
            if let Some(phases) = self.by_insight.get(insight) {
                match q.phase {
                    Some(phase) => sources.extend(phases.get(&phase)),
                    None => sources.extend(phases.values()),
                }
            }
        } else {
            let pick = |p: &'m Partition| match (q.order, q.processing_state) {
                (AgendaOrder::AddedTime, _) => &p.added,
                (AgendaOrder::UpdatedTime, None) => &p.updated,
                (AgendaOrder::UpdatedTime, Some(s)) => &p.by_state[state_slot(s)],
            };
            match q.visibility {
                Visibility::All => sources.push(pick(&self.all)),
                Visibility::Customers(ids) => sources
                    .extend(ids.iter().filter_map(|c| self.by_customer.get(c.as_str())).map(pick)),
            }
        }
        let after = q.after.map(|c| (c.time, Arc::clone(&c.id)));
        merge_page(&sources, after, q.limit, exact_next, |key| {
            self.entries.get(&key.1).filter(|e| q.admits(e) && keep(e))
        })
    }

    /// DOMAIN.md §4.3 over the agendas with `link_id` that `visibility` sees.
    pub fn progress_summary(
        &self,
        link_id: &str,
        visibility: &Visibility,
    ) -> Result<ProgressSummary, CorruptEntry> {
        let mut list = Vec::new();
        for (_, id) in self.by_link.get(link_id).into_iter().flatten() {
            if let Some(entry) = self.entries.get(id).filter(|e| visibility.sees(e.customer_id())) {
                list.push(entry.progress()?);
            }
        }
        Ok(progress_summary(link_id, list))
    }
}

/// The keys of `state`, reusing `old`'s strings where unchanged and interning customer, link
/// and insight ids through the index maps.
fn keys_of<C, L, I>(
    by_customer: &HashMap<Arc<str>, C>,
    by_link: &HashMap<Arc<str>, L>,
    by_insight: &HashMap<Arc<str>, I>,
    state: &AgendaState,
    old: Option<&Keys>,
) -> Keys {
    let p = state.progress();
    let progress_id = match old {
        Some(k) if k.progress_id.as_ref() == p.id => Arc::clone(&k.progress_id),
        _ => Arc::from(p.id.as_str()),
    };
    let customer = intern(by_customer, old.map(|k| &k.customer), &p.customer_id);
    let link = p.link_id.as_deref().map(|l| intern(by_link, old.and_then(|k| k.link.as_ref()), l));
    let insight = p
        .agenda_insight
        .as_ref()
        .map(|i| intern(by_insight, old.and_then(|k| k.insight.as_ref()), &i.insight_id));
    let added = ms(p.added_time.or(state.agenda().and_then(|a| a.added_time)));
    Keys {
        progress_id,
        customer,
        link,
        insight,
        state: p.processing_state,
        phase: Phase::of(p.processing_state, p.processing_state_message.as_deref().unwrap_or("")),
        added,
        updated: ms(p.updated_time).max(added),
    }
}

/// What a change of agenda `id` with `keys` tells subscribers.
fn describe(change: &mut Change, id: &Arc<str>, keys: &Keys) {
    change.kind = ChangeKind::Agenda;
    change.id = Arc::clone(id);
    change.customer_id = Arc::clone(&keys.customer);
    change.progress_id = Some(Arc::clone(&keys.progress_id));
    change.link_id = keys.link.clone();
    change.insight_id = keys.insight.clone();
    change.processing_state = Some(keys.state);
    change.phase = Some(keys.phase);
}

/// Scratch buffers larger than this are freed after use.
const SCRATCH_KEPT: usize = 1 << 20;

/// Holds COMPLETE agendas as JSON (see the module docs); the rest live. The settled form is
/// what `lz4_flex::block::compress_prepend_size` makes (the size as a little-endian `u32`, then
/// the block), built in `buffers`.
fn settle(buffers: &mut SettleBuffers, state: Box<AgendaState>) -> Body {
    if !state.is_complete() {
        return Body::Live(state);
    }
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
    match lz4_flex::block::compress_into_with_table(
        &buffers.json,
        &mut buffers.compressed,
        &mut buffers.table,
    ) {
        Ok(n) => {
            if buffers.json.capacity() > SCRATCH_KEPT {
                // A huge agenda: do not hold its size of scratch space forever.
                buffers.json = Vec::new();
                buffers.compressed = Vec::new();
            }
            let mut settled = Vec::with_capacity(4 + n);
            settled.extend_from_slice(&size.to_le_bytes());
            settled.extend_from_slice(buffers.compressed.get(..n).unwrap_or_default());
            Body::Settled(settled.into_boxed_slice())
        }
        Err(_) => Body::Live(state),
    }
}

/// Merges the ordered `sources` (disjoint sets) from after `after`, keeping entries `pick`
/// admits, up to `limit` of them and at most [`MAX_SCANNED_PER_PAGE`] examined. With
/// `exact_next`, a full page looks ahead for one more admitted entry and gives `next` only if
/// there is one (or if the scan bound stopped the look-ahead).
fn merge_page<'m, T>(
    sources: &[&'m BTreeSet<Key>],
    after: Option<Key>,
    limit: usize,
    exact_next: bool,
    mut pick: impl FnMut(&'m Key) -> Option<T>,
) -> Page<T> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let start = match &after {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    };
    let mut iters: Vec<btree_set::Range<'m, Key>> =
        sources.iter().map(|s| s.range::<Key, _>((start, Bound::Unbounded))).collect();
    let mut heap: BinaryHeap<Reverse<(&'m Key, usize)>> = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(k) = it.next() {
            heap.push(Reverse((k, i)));
        }
    }
    let cursor = |key: &Key| Cursor { time: key.0, id: Arc::clone(&key.1) };
    let mut items = Vec::new();
    let mut scanned = 0;
    // The key of the page's last item, once the page is full and looking ahead.
    let mut full_at: Option<&'m Key> = None;
    while let Some(Reverse((key, i))) = heap.pop() {
        if let Some(k) = iters[i].next() {
            heap.push(Reverse((k, i)));
        }
        scanned += 1;
        match full_at {
            Some(last) => {
                if pick(key).is_some() {
                    return Page { items, next: Some(cursor(last)) };
                }
            }
            None => {
                if let Some(item) = pick(key) {
                    items.push(item);
                }
                if items.len() == limit {
                    if !exact_next {
                        return Page { items, next: (!heap.is_empty()).then(|| cursor(key)) };
                    }
                    full_at = Some(key);
                }
            }
        }
        if scanned == MAX_SCANNED_PER_PAGE {
            return Page { items, next: (!heap.is_empty()).then(|| cursor(key)) };
        }
    }
    Page { items, next: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use pop_domain::agenda::AgendaCommand;
    use pop_domain::{AgendaInsight, Operation};

    fn t(secs: i64) -> Timestamp {
        Utc.timestamp_millis_opt(1_736_935_200_000 + secs * 1000).single().unwrap_or_default()
    }

    /// Agenda `i`'s events: submitted, then (by `i`) queued, claimed, cancelled, rerun.
    fn history(i: i64) -> Vec<AgendaEvent> {
        let agenda = Agenda {
            id: format!("a{i}"),
            customer_id: format!("c{}", i % 3),
            progress_id: Some(if i % 4 == 0 { format!("p{i}") } else { format!("a{i}") }),
            link_id: (i % 2 == 0).then(|| format!("l{}", i % 5)),
            operations: vec![Operation { name: "op".to_string(), ..Operation::default() }],
            ..Agenda::default()
        };
        let insight = AgendaInsight {
            resource_pool_id: "pool".to_string(),
            insight_id: format!("i{}", i % 2),
        };
        let mut commands = vec![AgendaCommand::Submit { agenda, insight, now: t(i) }];
        let steps = [
            AgendaCommand::Queue { now: t(i + 1) },
            AgendaCommand::Claim {
                holder: "w".to_string(),
                lease_id: "l".to_string(),
                lease_expires: t(i + 100),
                now: t(i + 2),
            },
            AgendaCommand::Cancel { reason: None, now: t(i + 3) },
            AgendaCommand::Rerun { flags: Default::default(), now: t(i + 4) },
        ];
        commands.extend(steps.into_iter().take((i % 5) as usize));
        let mut state = AgendaState::default();
        let mut events = Vec::new();
        for command in &commands {
            for e in state.decide(command).expect("decides") {
                state.evolve(&e);
                events.push(e);
            }
        }
        events
    }

    /// Every index, in a deterministic order.
    fn indexes(m: &AgendaModel) -> String {
        let customers: BTreeMap<_, _> =
            m.by_customer.iter().map(|(k, v)| (k, format!("{v:?}"))).collect();
        let links: BTreeMap<_, _> = m.by_link.iter().collect();
        let insights: BTreeMap<_, _> = m.by_insight.iter().collect();
        let progress: BTreeMap<_, _> = m.progress_ids.iter().collect();
        format!("{:?} {customers:?} {links:?} {insights:?} {progress:?}", m.all)
    }

    #[test]
    fn indexes_built_at_the_end_equal_indexes_kept_per_event() {
        let (mut live, mut deferred) = (AgendaModel::default(), AgendaModel::default());
        deferred.defer_indexes();
        // Interleaved like a log: every agenda's first event, then every second one…
        let histories: Vec<_> = (0..40).map(history).collect();
        for step in 0..10 {
            for (i, h) in histories.iter().enumerate() {
                if let Some(e) = h.get(step) {
                    let id = format!("a{i}");
                    live.apply(&id, e, None).expect("applies");
                    deferred.apply(&id, e, None).expect("applies");
                }
            }
        }
        assert!(live.entries.values().any(AgendaEntry::is_settled));
        assert!(live.entries.values().any(|e| !e.is_settled()));
        for e in live.entries.values().filter(|e| e.is_settled()) {
            let state = e.state().expect("a settled agenda decodes");
            assert!(state.is_complete());
            assert_eq!(
                e.canonical_json().expect("json"),
                serde_json::to_vec(state.as_ref()).expect("json")
            );
        }
        assert_eq!(indexes(&deferred), indexes(&AgendaModel::default()));
        deferred.build_indexes();
        assert_eq!(indexes(&live), indexes(&deferred));
        assert!(!indexes(&live).is_empty());
        // Customer ids are interned again: one allocation per customer.
        let c0: Vec<_> = deferred
            .entries
            .values()
            .filter(|e| e.customer_id() == "c0")
            .map(|e| &e.keys.customer)
            .collect();
        assert!(c0.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
    }
}
