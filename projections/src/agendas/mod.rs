//! The agenda read model: one [`AgendaState`] per agenda, folded by the domain's own `evolve`
//! (so progress rules live in one place), plus the indexes the API, the scheduler and the
//! reapers query: by customer, linkId, processing state, insight queue and time.
//!
//! **Memory.** An agenda that is still moving is held as a live `AgendaState`, because every
//! report changes it. A COMPLETE agenda rarely changes again, and finished agendas are most of
//! what a long-running read model holds, so it is *settled*: kept as its canonical JSON (the
//! same text the snapshot and the determinism hash use), LZ4-compressed, and decoded on read.
//! A live agenda of five operations costs about 4 KiB (payloads and results are held as
//! compact JSON text, params as a sorted array; the rest is mostly the operation structs);
//! its JSON is about 3.4 KiB and compresses about fivefold against a dictionary of the
//! state's schema ([`dictionary`]). The price is a decompression and a JSON decode per read of
//! a settled agenda (microseconds), and one encode when an agenda completes. An event for a
//! settled agenda (a rerun) decodes it, applies the event and settles it again if it is still
//! complete.
//!
//! **Order.** Every index is a `BTreeSet` of `(time in ms, stream key)`, so lists come out in a
//! stable order with cursors that name a place even among equal times. The stream key is a
//! thin shared string (`entry::Name`, one pointer) held by the entry and all its index keys;
//! customer, link and insight ids are interned through the index maps, so one customer id is
//! stored once however many agendas it owns. The agenda id and AgendaProgress id are stored
//! only where the key does not already say them. Entries sit in numbered slots found through
//! hash tables of slot numbers (`slots`): by key, agenda id and AgendaProgress id.
//!
//! Map: [`entry`] (one agenda: its keys and its live or settled body), `slots` (where entries
//! live and the tables that find them), `indexes` (keeping the ordered indexes in step with
//! the entries), [`select`] (filtered, ordered, paginated lists and the per-insight counts),
//! `stored` (an agenda's record in a snapshot).

mod dictionary;
mod entry;
mod indexes;
pub mod select;
mod slots;
mod stored;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pop_domain::agenda::{AgendaEvent, AgendaState};
use pop_domain::{Aggregate, OperationProgress, Timestamp};

use crate::change::{Change, ChangeKind};
use crate::phase::Phase;

/// The longest progress id in bytes: [`pop_domain::validate::MAX_ID_LENGTH`] characters of
/// up to 4 bytes.
const MAX_PREFIX_BYTES: usize = 4 * pop_domain::validate::MAX_ID_LENGTH;

pub(crate) use dictionary::dictionary_fingerprint;
pub use entry::{AgendaEntry, CorruptEntry, DetachedProgress};
pub use select::AgendaQuery;
pub(crate) use stored::{LoadBuffers, Loaded, StoredError, decode_chunk, encode as encode_stored};

use entry::{Body, Keys, Name, SettleBuffers, finished_bytes, id_in_key, settle};
use indexes::Partition;
use slots::IdKind;

/// Every agenda, by id, with its indexes.
#[derive(Debug, Default)]
pub struct AgendaModel {
    /// The entries and the tables that find them by key, agenda id and AgendaProgress id
    /// ([`slots`]): each entry in a numbered slot, the tables holding slot numbers.
    entries: slots::Entries,
    all: Partition,
    by_customer: HashMap<Arc<str>, Partition>,
    /// By customer, then in `addedTime` order ([`indexes::Grouped`]).
    by_link: HashMap<Name, indexes::Grouped>,
    /// Per insight and phase, by customer, then in `addedTime` order: listing and counting
    /// by insight.
    by_insight: HashMap<Name, BTreeMap<Phase, indexes::Grouped>>,
    /// Per insight, its queue in queue order (the time each agenda entered it, see
    /// [`AgendaEntry::entered_ms`]): the `added` agendas the scheduler may queue (never the
    /// `doNotRun` ones, so a backlog of records cannot fill its window) and the `queued` ones
    /// `getAgenda` hands out. Read through [`crate::query::AgendaOrder::Queue`].
    queues: HashMap<Name, indexes::Queue>,
    /// While set (a rebuild or a snapshot load, before anyone queries), the indexes above are
    /// not maintained per event: [`AgendaModel::build_indexes`] builds them once from the
    /// entries' keys at the end. An agenda changes ~14 times in its life, and each change
    /// would otherwise move it in four `updatedTime` sets.
    deferred: bool,
    /// Scratch space for settling, reused so that each settle allocates only its result.
    buffers: SettleBuffers,
    /// The degraded mode ([`AgendaModel::compact_live`]): live agendas are held compressed too.
    compact: bool,
}

fn ms(t: Option<Timestamp>) -> i64 {
    t.map_or(0, |t| t.timestamp_millis())
}

/// Reuses `old` when it already holds `new`, else interns `new` through `pool`'s keys.
fn intern<K, V>(pool: &HashMap<K, V>, old: Option<&K>, new: &str) -> K
where
    K: Clone + Eq + std::hash::Hash + std::borrow::Borrow<str> + for<'a> From<&'a str>,
{
    if let Some(old) = old.filter(|o| (*o).borrow() == new) {
        return old.clone();
    }
    match pool.get_key_value(new) {
        Some((k, _)) => k.clone(),
        None => K::from(new),
    }
}

impl AgendaModel {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// By stream key ([`AgendaEntry::key`]).
    pub fn get(&self, key: &str) -> Option<&AgendaEntry> {
        self.entries.get(key)
    }

    /// The agendas with this id, one per customer using it (visible or not: callers filter),
    /// in key order.
    pub fn with_id<'m>(&'m self, id: &str) -> impl Iterator<Item = &'m AgendaEntry> + 'm {
        self.entries.with(IdKind::Agenda, id).into_iter()
    }

    /// The agendas whose AgendaProgress has this id, one per customer using it, in key order.
    pub fn with_progress_id<'m>(
        &'m self,
        progress_id: &str,
    ) -> impl Iterator<Item = &'m AgendaEntry> + 'm {
        self.entries.with(IdKind::Progress, progress_id).into_iter()
    }

    /// The agendas an OperationProgress id (`<agendaProgressId>-<operation name>`, both parts may
    /// hold `-`) names, each with the operation's name: every split at a `-`, over the entries
    /// `keep` admits.
    pub fn operation_candidates<'m, 'i>(
        &'m self,
        id: &'i str,
        keep: impl Fn(&AgendaEntry) -> bool,
    ) -> Vec<(&'m AgendaEntry, &'i str)> {
        let mut found = Vec::new();
        // No progress id is longer than MAX_PREFIX_BYTES: splits further right cannot name an
        // agenda, and trying each hashes its prefix (hostile21: an id of 64,000 dashes took
        // 10 s of a runtime thread, quadratic in its length).
        // Only the id's first bytes are searched (hostile22: walking every '-' of a 2 MB id
        // still cost 68 ms).
        let mut end = id.len().min(MAX_PREFIX_BYTES + 1);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        for (i, _) in id[..end].rmatch_indices('-') {
            let (progress_id, name) = (&id[..i], &id[i + 1..]);
            found.extend(self.with_progress_id(progress_id).filter(|e| keep(e)).map(|e| (e, name)));
        }
        found
    }

    /// The OperationProgress entries an id `<progressId>-<operation name>` can name, among the
    /// agendas `keep` admits (the caller's visibility: filtered before any match is chosen, so
    /// another customer's agenda can never shadow one the caller sees). Both parts may contain
    /// `-`, so every split is tried; more than one match means the id is ambiguous for this
    /// caller.
    pub fn operation_progress(
        &self,
        id: &str,
        keep: impl Fn(&AgendaEntry) -> bool,
    ) -> Result<Vec<OperationProgress>, CorruptEntry> {
        let mut found = Vec::new();
        for (entry, name) in self.operation_candidates(id, keep) {
            found.extend(entry.operation(name)?);
        }
        Ok(found)
    }

    /// Every entry in id order (for snapshots and the determinism hash).
    pub fn entries_by_id(&self) -> Vec<&AgendaEntry> {
        let mut all: Vec<&AgendaEntry> = self.entries.values().collect();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Whether any agenda of `insight_id` waits to be queued (schedulable `added`: never a
    /// `doNotRun` record). Constant time, whatever the customers: the hand-out asks on every
    /// submission.
    pub fn waits_to_be_queued(&self, insight_id: &str) -> bool {
        self.queues.get(insight_id).is_some_and(|q| !q.waiting.is_empty())
    }

    /// How many agendas of `insight_id` are in `phase` (e.g. the queue's fill level).
    pub fn count_in(&self, insight_id: &str, phase: Phase) -> usize {
        // The queued ones are the insight's queue (the hand-out asks on every submission).
        if phase == Phase::Queued {
            return self.queues.get(insight_id).map_or(0, |q| q.queued.len());
        }
        self.by_insight.get(insight_id).and_then(|p| p.get(&phase)).map_or(0, |g| g.len())
    }

    /// The agendas bound to `insight_id` in a phase `keep` takes, whoever's (for a check that
    /// walks them once: an insight's delete).
    pub fn bound_to(
        &self,
        insight_id: &str,
        keep: impl Fn(Phase) -> bool + 'static,
    ) -> impl Iterator<Item = &AgendaEntry> + '_ {
        self.by_insight
            .get(insight_id)
            .into_iter()
            .flat_map(|phases| phases.iter())
            .filter(move |(p, _)| keep(**p))
            .flat_map(|(_, grouped)| grouped.keys())
            .filter_map(|(_, id)| self.get(id))
    }

    /// Every agenda of any insight that is in `phase`, each insight's by customer, then in
    /// `addedTime` order (insights in no particular order). Only bound agendas can be `queued`, `scheduled` or
    /// EXECUTING (they got there through an insight's queue), so for those phases this is all
    /// of them — the reclaimer's candidates.
    pub fn in_phase(&self, phase: Phase) -> impl Iterator<Item = &AgendaEntry> + '_ {
        self.by_insight
            .values()
            .filter_map(move |phases| phases.get(&phase))
            .flat_map(indexes::Grouped::keys)
            .filter_map(|(_, id)| self.get(id))
    }

    /// Applies one event of stream `agenda-<key>`. Keyed by the stream key: the log names the
    /// agenda (its customer and id; see `pop_domain::agenda::key`).
    /// `stored`: what the event takes in the log ([`Keys::log`]).
    pub(crate) fn apply(
        &mut self,
        id: &str,
        event: &AgendaEvent,
        stored: u32,
        change: Option<&mut Change>,
    ) -> Result<bool, CorruptEntry> {
        if let Some(slot) = self.entries.slot_of(id)
            && let Some(entry) = self.entries.at_mut(slot)
            && let Body::Live(state) = &mut entry.body
        {
            // The common case: fold a live agenda where it lies, without moving its state.
            let before = kept_touched(state, event);
            state.evolve(event);
            let kept = Kept::of(event, before, state);
            let mut keys = keys_of(
                &self.by_customer,
                &self.by_link,
                &self.by_insight,
                state,
                &entry.key,
                Some(&entry.keys),
                Measure { now: !self.deferred, kept },
            );
            keys.log = keys.log.saturating_add(stored);
            let old = std::mem::replace(&mut entry.keys, keys);
            if state.is_complete() {
                let body = std::mem::replace(&mut entry.body, Body::Settled(Box::default()));
                if let Body::Live(state) = body {
                    entry.body = settle(&mut self.buffers, state, self.compact);
                }
            }
            if !entry.keys.phase.is_live() && !self.deferred {
                entry.keys.bytes = finished_bytes(&entry.body);
            }
            let id = entry.key.clone();
            let keys = entry.keys.clone();
            self.reindex(&id, slot, Some(&old), Some(&keys));
            if let Some(change) = change {
                describe(change, &id, &keys);
            }
            return Ok(true);
        }
        let mut state = match self.entries.get_mut(id) {
            Some(entry) => entry.take_state()?,
            None => AgendaState::default(),
        };
        let before = kept_touched(&state, event);
        state.evolve(event);
        if !state.exists() && !self.entries.contains_key(id) {
            // An event before the submission: evolve absorbed it and there is nothing to show.
            return Ok(false);
        }
        let kept = Kept::of(event, before, &state);
        self.put_measured(id, state, change, kept, stored);
        Ok(true)
    }

    /// Inserts or replaces the entry `id` with `state` and re-indexes it.
    pub(crate) fn put(&mut self, id: &str, state: AgendaState, change: Option<&mut Change>) {
        self.put_measured(id, state, change, Kept::Unknown, 0);
    }

    /// [`AgendaModel::put`], told how what the agenda keeps changed (the degraded mode folds
    /// every event through here: a heartbeat measures nothing).
    fn put_measured(
        &mut self,
        id: &str,
        state: AgendaState,
        change: Option<&mut Change>,
        kept: Kept,
        stored: u32,
    ) {
        let old = self.entries.get(id).map(|e| (e.key.clone(), e.keys.clone()));
        let id = match &old {
            Some((id, _)) => id.clone(),
            None => Name::new(id),
        };
        let mut keys = keys_of(
            &self.by_customer,
            &self.by_link,
            &self.by_insight,
            &state,
            &id,
            old.as_ref().map(|(_, k)| k),
            Measure { now: !self.deferred, kept },
        );
        keys.log = keys.log.saturating_add(stored);
        if let Some(change) = change {
            describe(change, &id, &keys);
        }
        let body = settle(&mut self.buffers, Box::new(state), self.compact);
        if !keys.phase.is_live() && !self.deferred {
            keys.bytes = finished_bytes(&body);
        }
        let entry = AgendaEntry { key: id.clone(), keys: keys.clone(), body };
        // In its slot first: the id tables find an entry's ids through its slot.
        let (slot, _) = self.entries.insert(entry);
        self.reindex(&id, slot, old.as_ref().map(|(_, k)| k), Some(&keys));
    }

    /// The degraded mode, for a process past its memory budget: every live agenda is held
    /// compressed from now on, as finished ones are (a fraction of the memory: LZ4 on JSON,
    /// against a decoded state at about eight times its JSON size), at the cost of decoding
    /// and encoding an agenda for each of its events and reads. Returns how many were
    /// compressed now. It lasts until the process restarts.
    pub(crate) fn compact_live(&mut self) -> usize {
        self.compact = true;
        let mut compacted = 0;
        for entry in self.entries.values_mut() {
            if let Body::Live(_) = &entry.body {
                let body = std::mem::replace(&mut entry.body, Body::Settled(Box::default()));
                if let Body::Live(state) = body {
                    entry.body = settle(&mut self.buffers, state, true);
                    compacted += 1;
                }
            }
        }
        compacted
    }

    /// Whether [`AgendaModel::compact_live`] was called.
    pub fn is_compact(&self) -> bool {
        self.compact
    }

    /// Stops maintaining the indexes per event until [`AgendaModel::build_indexes`]: for a
    /// rebuild or a snapshot load, where nobody queries before the end.
    pub(crate) fn defer_indexes(&mut self) {
        self.deferred = true;
    }

    /// Drops an agenda and its index entries (the hook for streams deleted by a reaper).
    pub(crate) fn remove(&mut self, id: &str) -> Option<AgendaEntry> {
        let slot = self.entries.slot_of(id)?;
        let (key, keys) = self.entries.get(id).map(|e| (e.key.clone(), e.keys.clone()))?;
        self.reindex(&key, slot, Some(&keys), None);
        let (_, entry) = self.entries.remove(id)?;
        Some(entry)
    }
}

/// The keys of `state`, reusing `old`'s strings where unchanged and interning customer, link
/// and insight ids through the index maps.
fn keys_of<C, L, I>(
    by_customer: &HashMap<Arc<str>, C>,
    by_link: &HashMap<Name, L>,
    by_insight: &HashMap<Name, I>,
    state: &AgendaState,
    key: &str,
    old: Option<&Keys>,
    measure: Measure,
) -> Keys {
    let p = state.progress();
    // Stored only where the key does not hold them (never, for agendas pop submitted).
    let agenda_id = match old {
        _ if id_in_key(key) == p.agenda_id => None,
        Some(k) if k.own_agenda_id().map(|a| &**a) == Some(p.agenda_id.as_str()) => {
            k.agenda_id.clone()
        }
        _ => Some(Box::new(Arc::from(p.agenda_id.as_str()))),
    };
    let progress_id = match old {
        _ if p.id == p.agenda_id => None,
        Some(k) if k.progress_id.as_deref() == Some(p.id.as_str()) => k.progress_id.clone(),
        _ => Some(Arc::from(p.id.as_str())),
    };
    let customer = intern(by_customer, old.map(|k| &k.customer), &p.customer_id);
    let link = p.link_id.as_deref().map(|l| intern(by_link, old.and_then(|k| k.link.as_ref()), l));
    let insight = p
        .agenda_insight
        .as_ref()
        .map(|i| intern(by_insight, old.and_then(|k| k.insight.as_ref()), &i.insight_id));
    let added = ms(p.added_time.or(state.agenda().and_then(|a| a.added_time)));
    let entered = state.entered_time().map_or(added, |t| t.timestamp_millis());
    let phase = Phase::of(p.processing_state, p.processing_state_message.as_deref().unwrap_or(""));
    // Measured whole when the agenda is first seen live (a rerun of a finished agenda measures
    // it again) and after the rare events that may change much of what it keeps; a report
    // changes it by what the operations it names keep ([`Kept`]). Not while the indexes are
    // deferred (a rebuild): most agendas finish before its end, and `build_indexes` measures
    // the ones still live.
    // A finished agenda's bytes are its settled body's ([`finished_bytes`], set once settled),
    // never a live measure to build on: a rerun measures the agenda whole.
    let measured = old.filter(|k| k.phase.is_live() && k.bytes > 0);
    let bytes = match (measured, measure.kept) {
        _ if !phase.is_live() => 0,
        (Some(k), Kept::Same) => k.bytes,
        (Some(k), Kept::Changed { before, after }) if measure.now => {
            let bytes = (k.bytes as usize + after).saturating_sub(before);
            u32::try_from(bytes).unwrap_or(u32::MAX)
        }
        _ if measure.now => live_bytes(state),
        _ => 0,
    };
    Keys {
        agenda_id,
        progress_id,
        customer,
        link,
        insight,
        state: p.processing_state,
        phase,
        added,
        updated: ms(p.updated_time).max(added),
        entered,
        held: state.is_do_not_run(),
        retry: p.processing_state == pop_domain::ProcessingState::Complete && p.retry_due(),
        bytes,
        // What the stream takes in the log: the entry's so far, the caller adds its event's.
        log: old.map_or(0, |k| k.log),
    }
}

/// When [`keys_of`] measures what an agenda holds ([`Keys::bytes`]).
#[derive(Debug, Clone, Copy)]
struct Measure {
    /// The indexes are kept per event (not deferred).
    now: bool,
    /// How the event changed what the agenda keeps of its reports.
    kept: Kept,
}

/// How an event changed what an agenda keeps of its reports ([`AgendaState::kept_bytes`]).
#[derive(Debug, Clone, Copy)]
enum Kept {
    /// Not at all: the queue's events.
    Same,
    /// A report: what the operations it names and the agenda itself keep, before and after
    /// (review-s49: measuring the whole agenda after each report cost a 1,000-operation agenda
    /// reporting one result at a time gigabytes of serialising over its life).
    Changed { before: usize, after: usize },
    /// Anything else: measured whole.
    Unknown,
}

impl Kept {
    fn of(event: &AgendaEvent, before: Option<usize>, state: &AgendaState) -> Kept {
        match (event, before) {
            (
                AgendaEvent::Queued(_)
                | AgendaEvent::Claimed(_)
                | AgendaEvent::Readded(_)
                | AgendaEvent::Requeued(_)
                | AgendaEvent::RetryDecided(_)
                | AgendaEvent::ProgressIdTaken(_),
                _,
            ) => Kept::Same,
            (_, Some(before)) => {
                Kept::Changed { before, after: kept_touched(state, event).unwrap_or(0) }
            }
            _ => Kept::Unknown,
        }
    }
}

/// Above this many (changes × operations) pairs [`kept_touched`] finds the changed operations
/// in one pass over the agenda instead of one search per change.
const SCAN_PAIRS: usize = 4_096;

/// What the parts of `state` a report event touches keep (the operations it names and the
/// agenda's own diagnostics), or `None` for any other event.
fn kept_touched(state: &AgendaState, event: &AgendaEvent) -> Option<usize> {
    let AgendaEvent::ProgressReported(e) = event else { return None };
    let all = &state.progress().operation_progress;
    let operations: usize = if e.operations.len().saturating_mul(all.len()) <= SCAN_PAIRS {
        e.operations
            .iter()
            .filter_map(|o| state.operation(&o.operation))
            .map(pop_domain::agenda::operation_kept_bytes)
            .sum()
    } else {
        // One pass over the agenda, not one per change (a report completing most of a
        // 1,000-operation agenda named a million pairs, measured twice).
        let named: std::collections::HashSet<String> =
            e.operations.iter().map(|o| pop_domain::text::fold_case(&o.operation)).collect();
        all.iter()
            .filter(|p| named.contains(&pop_domain::text::fold_case(&p.operation)))
            .map(pop_domain::agenda::operation_kept_bytes)
            .sum()
    };
    // The agenda's own diagnostics and params only when the report changes them (a heartbeat
    // measures none).
    let agenda =
        if e.diagnostics.is_empty() && e.params.is_none() { 0 } else { state.agenda_kept_bytes() };
    Some(operations + agenda)
}

/// What a live agenda holds as compact JSON ([`Keys::bytes`]): its definition, and what it
/// keeps of its reports ([`AgendaState::kept_bytes`]: results, params, diagnostics; hostile40
/// M2: one customer's results grew the server by 360 MB past a quota that counted definitions
/// only).
fn live_bytes(state: &AgendaState) -> u32 {
    let definition = state.agenda().map_or(0, pop_domain::validate::json_bytes);
    u32::try_from(definition + state.kept_bytes()).unwrap_or(u32::MAX)
}

/// What a change of the agenda keyed `key` with `keys` tells subscribers.
fn describe(change: &mut Change, key: &str, keys: &Keys) {
    change.kind = ChangeKind::Agenda;
    change.id = Arc::from(key);
    let agenda_id = keys.own_agenda_id().cloned().unwrap_or_else(|| Arc::from(keys.agenda_id(key)));
    change.progress_id =
        Some(keys.own_progress_id().cloned().unwrap_or_else(|| Arc::clone(&agenda_id)));
    change.agenda_id = Some(agenda_id);
    change.customer_id = Arc::clone(&keys.customer);
    change.link_id = keys.link.as_deref().map(Arc::from);
    change.insight_id = keys.insight.as_deref().map(Arc::from);
    change.processing_state = Some(keys.state);
    change.phase = Some(keys.phase);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use pop_domain::agenda::AgendaCommand;
    use pop_domain::{Agenda, AgendaInsight, Operation};

    use crate::query::{AgendaOrder, Visibility};

    fn t(secs: i64) -> Timestamp {
        Utc.timestamp_millis_opt(1_736_935_200_000 + secs * 1000).single().unwrap_or_default()
    }

    /// An entry's keys are no larger for what its stream takes in the log (`log`): the rare
    /// agenda id of its own went out of line for it. Every agenda is one entry, and a finished
    /// one's whole budget is 1 KiB (issue 18; 1,022 B measured before `log`, with 96 B of keys).
    #[test]
    fn an_entrys_keys_stay_within_what_they_took_before_the_log_count() {
        assert!(std::mem::size_of::<Keys>() <= 96, "{} B", std::mem::size_of::<Keys>());
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
        // Every seventh is a record (`doNotRun`): only submitted, never queued.
        let record = i % 7 == 6;
        let mut agenda = agenda;
        if record {
            agenda.params.insert("doNotRun", "true");
        }
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
        commands.extend(steps.into_iter().take(if record { 0 } else { (i % 5) as usize }));
        decided(&commands)
    }

    /// What `commands` decide, each on the state the ones before made.
    /// Agenda `a` of customer `c` with operations `names`, submitted, queued and claimed by
    /// `w` (lease `l`).
    fn claimed(names: &[impl AsRef<str>]) -> Vec<AgendaCommand> {
        let agenda = Agenda {
            id: "a".to_string(),
            customer_id: "c".to_string(),
            progress_id: Some("a".to_string()),
            operations: names
                .iter()
                .map(|n| Operation { name: n.as_ref().to_string(), ..Operation::default() })
                .collect(),
            ..Agenda::default()
        };
        let insight =
            AgendaInsight { resource_pool_id: "pool".to_string(), insight_id: "i".to_string() };
        vec![
            AgendaCommand::Submit { agenda, insight, now: t(0) },
            AgendaCommand::Queue { now: t(1) },
            AgendaCommand::Claim {
                holder: "w".to_string(),
                lease_id: "l".to_string(),
                lease_expires: t(100),
                now: t(2),
            },
        ]
    }

    fn decided(commands: &[AgendaCommand]) -> Vec<AgendaEvent> {
        let mut state = AgendaState::default();
        let mut events = Vec::new();
        for command in commands {
            for e in state.decide(command).expect("decides") {
                state.evolve(&e);
                events.push(e);
            }
        }
        events
    }

    /// The live bytes kept per event (a report measures only what it touches) equal a whole
    /// measure of the agenda after every event: reports of results, params, diagnostics (past
    /// the ten kept), messages and operations they add, a late outcome, a rerun, in the
    /// normal and the degraded (compressed) mode (review-s49b).
    #[test]
    fn live_bytes_kept_per_report_equal_a_whole_measure() {
        use pop_domain::agenda::{OperationReport, ProgressReport};
        use pop_domain::{DiagnosticEvent, ProcessingState};
        let report = |k: i64, report: ProgressReport| AgendaCommand::ReportProgress {
            holder: "w".to_string(),
            lease_id: None,
            lease_expires: t(k + 100),
            report,
            now: t(k),
        };
        let op = |name: &str, k: usize| OperationReport {
            name: name.to_string(),
            state: ProcessingState::Executing,
            message: Some(format!("step {k} {}", "m".repeat(k * 40))),
            diagnostics: (0..k % 4)
                .map(|d| DiagnosticEvent {
                    message: format!("{name} {k} {d} {}", "d".repeat(k * 30)),
                    ..DiagnosticEvent::default()
                })
                .collect(),
            result_payload: k
                .is_multiple_of(3)
                .then(|| serde_json::json!({"out": "r".repeat(k * 50)})),
            params: serde_json::from_value(serde_json::json!({format!("p{}", k % 5): k})).unwrap(),
            ..OperationReport::default()
        };
        let mut commands = claimed(&["x", "y", "z"]);
        for k in 0..24usize {
            let name = ["x", "y", "z", "g1"][k % 4];
            let mut sent = ProgressReport {
                operations: vec![op(name, k)],
                diagnostics: (0..k % 3)
                    .map(|d| DiagnosticEvent {
                        message: format!("agenda {k} {d}"),
                        ..DiagnosticEvent::default()
                    })
                    .collect(),
                ..ProgressReport::default()
            };
            if k % 5 == 4 {
                sent.operations.clear(); // a heartbeat
            }
            commands.push(report(3 + k as i64, sent));
        }
        commands.push(AgendaCommand::Cancel { reason: Some("enough".into()), now: t(40) });
        commands.push(AgendaCommand::Rerun { flags: Default::default(), now: t(41) });
        // Run again, failed by its executor, whose outcome report after that adds diagnostics
        // to the finished agenda; then run once more.
        commands.push(AgendaCommand::Queue { now: t(42) });
        commands.push(AgendaCommand::Claim {
            holder: "w".to_string(),
            lease_id: "l2".to_string(),
            lease_expires: t(142),
            now: t(43),
        });
        let outcome = |k: usize| ProgressReport {
            state: Some(ProcessingState::Complete),
            message: Some("failed".into()),
            diagnostics: vec![DiagnosticEvent {
                message: format!("outcome {k} {}", "l".repeat(2_000)),
                ..DiagnosticEvent::default()
            }],
            ..ProgressReport::default()
        };
        commands.push(report(44, outcome(1)));
        commands.push(report(45, outcome(2)));
        commands.push(AgendaCommand::Rerun { flags: Default::default(), now: t(46) });
        let events = decided(&commands);
        assert!(events.iter().any(|e| matches!(e, AgendaEvent::DiagnosticsAdded(_))));
        for compact in [false, true] {
            let mut model = AgendaModel::default();
            if compact {
                model.compact_live();
            }
            let mut folded = AgendaState::default();
            // What the stream takes in the log adds up event by event, whatever the agenda
            // holds in memory (live, compressed or settled).
            let mut logged = 0u64;
            for (i, e) in events.iter().enumerate() {
                let stored = 100 + i as u32;
                model.apply("c/a", e, stored, None).expect("applies");
                logged += u64::from(stored);
                assert_eq!(model.log_bytes(&Visibility::All), logged, "after {e:?}");
                folded.evolve(e);
                let whole = if folded.is_complete() { 0 } else { u64::from(live_bytes(&folded)) };
                assert_eq!(model.live_bytes(&Visibility::All), whole, "after {e:?}");
                // Finished, what it holds is its settled body and its entry; live again (the
                // rerun), nothing of that stays counted as either.
                let body = model.get("c/a").map_or(0, AgendaEntry::settled_bytes) as u64;
                let retained = if folded.is_complete() {
                    body + u64::from(entry::FINISHED_ENTRY_BYTES)
                } else {
                    0
                };
                assert_eq!(model.retained_bytes(&Visibility::All), retained, "after {e:?}");
            }
            assert!(folded.kept_bytes() > 0 || folded.is_complete());
        }
    }

    /// A snapshot's agendas, stored and loaded, hold the same bytes live and retained.
    #[test]
    fn stored_agendas_load_with_the_bytes_they_held() {
        let mut model = AgendaModel::default();
        for (i, h) in (0..30).map(history).enumerate() {
            for e in &h {
                model.apply(&format!("c{}/a{i}", i % 3), e, 13, None).expect("applies");
            }
        }
        let mut out = Vec::new();
        for entry in model.entries.values() {
            stored::encode(entry, &mut out).expect("encodes");
        }
        let n = model.entries.len();
        let mut loaded = Vec::new();
        let count = u32::try_from(n).expect("a few");
        stored::decode_chunk(&out, count, &mut stored::LoadBuffers::default(), &mut loaded)
            .expect("decodes");
        let back = AgendaModel::from_loaded(vec![loaded], n).expect("loads");
        let all = Visibility::All;
        assert!(model.retained_bytes(&all) > 0 && model.live_bytes(&all) > 0);
        assert_eq!(back.retained_bytes(&all), model.retained_bytes(&all));
        assert_eq!(back.live_bytes(&all), model.live_bytes(&all));
        // What their streams take in the log, which no fold gives back, is stored with them.
        assert!(model.log_bytes(&all) > 0);
        assert_eq!(back.log_bytes(&all), model.log_bytes(&all));
        for c in ["c0", "c1", "c2"] {
            let only = Visibility::from_ids([c]);
            assert_eq!(back.log_bytes(&only), model.log_bytes(&only), "{c}");
        }
        assert_eq!(indexes(&back), indexes(&model));
    }

    /// A report that changes many operations of a large agenda is measured in one pass, to
    /// the same figure as a whole measure.
    #[test]
    fn a_report_of_many_operations_is_measured_as_a_whole_measure() {
        use pop_domain::ProcessingState;
        use pop_domain::agenda::{OperationReport, ProgressReport};
        let names: Vec<String> = (0..100).map(|i| format!("Op{i}")).collect();
        // Named in another case than submitted, as executors may.
        let operations = names[..60]
            .iter()
            .map(|n| OperationReport {
                name: n.to_lowercase(),
                state: ProcessingState::Executing,
                result_payload: Some(serde_json::json!({"out": n})),
                ..OperationReport::default()
            })
            .collect();
        let mut commands = claimed(&names);
        commands.push(AgendaCommand::ReportProgress {
            holder: "w".to_string(),
            lease_id: None,
            lease_expires: t(100),
            report: ProgressReport { operations, ..ProgressReport::default() },
            now: t(3),
        });
        let events = decided(&commands);
        assert!(
            matches!(events.last(), Some(AgendaEvent::ProgressReported(e)) if e.operations.len() == 60)
        );
        let mut model = AgendaModel::default();
        let mut folded = AgendaState::default();
        for e in &events {
            model.apply("c/a", e, 0, None).expect("applies");
            folded.evolve(e);
        }
        assert!(folded.result_bytes() > 0);
        assert_eq!(model.live_bytes(&Visibility::All), u64::from(live_bytes(&folded)));
    }

    /// Every index, in a deterministic order.
    fn indexes(m: &AgendaModel) -> String {
        let customers: BTreeMap<_, _> =
            m.by_customer.iter().map(|(k, v)| (k, format!("{v:?}"))).collect();
        let links: BTreeMap<_, _> = m.by_link.iter().collect();
        let insights: BTreeMap<_, _> = m.by_insight.iter().collect();
        let queues: BTreeMap<_, _> = m.queues.iter().collect();
        let progress = (m.entries.id_pairs(IdKind::Agenda), m.entries.id_pairs(IdKind::Progress));
        format!("{:?} {customers:?} {links:?} {insights:?} {queues:?} {progress:?}", m.all)
    }

    /// hostile32: one customer's 10,000 waiting agendas hid another's from the scheduler.
    #[test]
    fn the_scheduler_sees_each_customers_oldest_whatever_another_has_waiting() {
        let mut m = AgendaModel::default();
        let mut submit = |customer: &str, id: &str, secs: i64, do_not_run: bool| {
            let mut agenda = Agenda {
                id: id.to_string(),
                customer_id: customer.to_string(),
                progress_id: Some(id.to_string()),
                operations: vec![Operation { name: "op".to_string(), ..Operation::default() }],
                ..Agenda::default()
            };
            if do_not_run {
                agenda.params.insert("doNotRun", "true");
            }
            let insight = AgendaInsight {
                resource_pool_id: "pool".to_string(),
                insight_id: "i0".to_string(),
            };
            let mut commands = vec![AgendaCommand::Submit { agenda, insight, now: t(secs) }];
            // The first runnable one is cancelled and rerun: it enters the queue again last.
            if id == "a200" {
                commands.push(AgendaCommand::Cancel { reason: None, now: t(400) });
                commands.push(AgendaCommand::Rerun { flags: Default::default(), now: t(401) });
            }
            let key = pop_domain::agenda::key(customer, id);
            let mut state = AgendaState::default();
            for command in &commands {
                for e in state.decide(command).expect("decides") {
                    state.evolve(&e);
                    m.apply(&key, &e, 0, None).expect("applies");
                }
            }
        };
        // acme: 200 records (never scheduled), then 40 waiting, the first of them re-entered
        // last; globex: one, the youngest (review-s43: past 4 × its share + 64 records a
        // customer's work was never reached, and its order was the order added, not entered).
        for i in 0..240 {
            submit("acme", &format!("a{i:03}"), i, i < 200);
        }
        submit("globex", "g0", 300, false);
        let ids = |lists: Vec<Vec<&AgendaEntry>>| -> Vec<Vec<String>> {
            lists.iter().map(|l| l.iter().map(|e| e.id().to_string()).collect()).collect()
        };
        // A budget of 10 shared by two customers: acme's five oldest that may run, and globex's.
        assert_eq!(
            ids(m.added_per_customer("i0", 10, 100)),
            [vec!["a201", "a202", "a203", "a204", "a205"], vec!["g0"]]
        );
        // At least one each, however small the budget; at most `most_each` each.
        assert_eq!(ids(m.added_per_customer("i0", 1, 100)), [vec!["a201"], vec!["g0"]]);
        assert_eq!(ids(m.added_per_customer("i0", 1000, 2)), [vec!["a201", "a202"], vec!["g0"]]);
        let all_of_acme = ids(m.added_per_customer("i0", 1000, 1000)).remove(0);
        assert_eq!((all_of_acme.len(), all_of_acme.last().map(String::as_str)), (40, Some("a200")));
        assert!(m.added_per_customer("i1", 10, 10).is_empty());
        // Counting per customer lists the starved customer too, each count within its share
        // (a lower bound past it), and only customers the caller sees.
        let all = Visibility::All;
        let count = |budget, v: &Visibility| m.count_per_customer("i0", Phase::Added, v, budget);
        assert_eq!(count(100_000, &all), [("acme".to_string(), 240), ("globex".to_string(), 1)]);
        assert_eq!(count(9, &all), [("acme".to_string(), 3), ("globex".to_string(), 1)]);
        let globex = Visibility::from_ids(["globex"]);
        assert_eq!(count(100_000, &globex), [("globex".to_string(), 1)]);
        assert!(m.count_per_customer("i0", Phase::Queued, &all, 10).is_empty());
    }

    #[test]
    fn the_queue_order_is_by_entry_and_holds_no_do_not_run_agendas() {
        // a0..a13 on insights i0 (even) and i1 (odd); a6 and a13 are records (`doNotRun`); a4
        // and a9 were cancelled and rerun at t(i + 4), so they entered the queue again then.
        let mut m = AgendaModel::default();
        for i in 0..14 {
            for e in history(i) {
                m.apply(&format!("a{i}"), &e, 0, None).expect("applies");
            }
        }
        let all = Visibility::All;
        let page = |insight, phase, order| {
            let mut q = AgendaQuery::new(&all);
            q.insight_id = Some(insight);
            q.phase = Some(phase);
            q.order = order;
            m.select(&q).items.iter().map(|e| (e.id().to_string(), e.entered_ms())).collect()
        };
        let at = |id: &str, secs| (id.to_string(), t(secs).timestamp_millis());
        let queue: Vec<(String, i64)> = page("i0", Phase::Added, AgendaOrder::Queue);
        assert_eq!(queue, [at("a0", 0), at("a4", 8), at("a10", 10)], "no record, a4 by its rerun");
        let queue: Vec<(String, i64)> = page("i1", Phase::Added, AgendaOrder::Queue);
        assert_eq!(queue, [at("a5", 5), at("a9", 13)]);
        let queued: Vec<(String, i64)> = page("i1", Phase::Queued, AgendaOrder::Queue);
        assert_eq!(queued, [at("a1", 1), at("a11", 11)]);
        // Other phases are no part of the queue.
        let none: Vec<(String, i64)> = page("i0", Phase::Scheduled, AgendaOrder::Queue);
        assert!(none.is_empty());
        // In addedTime order the insight still lists every agenda, records included.
        let listed: Vec<(String, i64)> = page("i0", Phase::Added, AgendaOrder::AddedTime);
        let ids: Vec<_> = listed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a0", "a4", "a6", "a10"]);
    }

    /// An agenda whose JSON is over the scratch buffers' kept size (1 MiB) settles whole: it
    /// reads back, and later events apply to it. (Its settled form was its size alone — the
    /// block was freed before it was copied out — and the next event stopped the projections.)
    #[test]
    fn a_huge_agenda_settles_and_reads_back() {
        let big = serde_json::json!({"blob": "x".repeat(600 * 1024)});
        let agenda = Agenda {
            id: "huge".to_string(),
            progress_id: Some("huge".to_string()),
            customer_id: "c".to_string(),
            operations: ["a", "b"]
                .iter()
                .map(|n| Operation {
                    name: n.to_string(),
                    payload: serde_json::from_value(big.clone()).expect("a payload"),
                    ..Operation::default()
                })
                .collect(),
            ..Agenda::default()
        };
        let insight =
            AgendaInsight { resource_pool_id: "pool".to_string(), insight_id: "i".to_string() };
        let commands = [
            AgendaCommand::Submit { agenda, insight, now: t(0) },
            AgendaCommand::Cancel { reason: None, now: t(1) },
            AgendaCommand::Rerun { flags: Default::default(), now: t(2) },
            AgendaCommand::Cancel { reason: None, now: t(3) },
        ];
        let (mut m, mut state) = (AgendaModel::default(), AgendaState::default());
        for (step, command) in commands.iter().enumerate() {
            for e in state.decide(command).expect("decides") {
                state.evolve(&e);
                m.apply("huge", &e, 0, None).expect("applies to the settled agenda");
            }
            let entry = m.entries.values().next().expect("the entry");
            let read = entry.state().expect("reads back after step {step}");
            assert_eq!(read.progress(), state.progress(), "after step {step}");
        }
    }

    /// Every entry's canonical JSON, by key.
    fn states(m: &AgendaModel) -> BTreeMap<String, Vec<u8>> {
        m.entries
            .values()
            .map(|e| (e.key().to_string(), e.canonical_json().expect("decodes")))
            .collect()
    }

    #[test]
    fn the_degraded_mode_holds_live_agendas_compressed_and_folds_them_the_same() {
        let (mut normal, mut degraded) = (AgendaModel::default(), AgendaModel::default());
        let histories: Vec<_> = (0..40).map(history).collect();
        let apply = |step: usize, models: &mut [&mut AgendaModel]| {
            for (i, h) in histories.iter().enumerate() {
                if let Some(e) = h.get(step) {
                    for m in models.iter_mut() {
                        m.apply(&format!("a{i}"), e, 0, None).expect("applies");
                    }
                }
            }
        };
        for step in 0..2 {
            apply(step, &mut [&mut normal, &mut degraded]);
        }
        let live = degraded.entries.values().filter(|e| !e.is_settled()).count();
        assert!(live > 0);
        assert_eq!(degraded.compact_live(), live);
        assert!(degraded.is_compact());
        assert!(degraded.entries.values().all(|e| e.is_settled()));
        assert!(degraded.entries.values().any(|e| e.is_live()));
        assert_eq!(states(&degraded), states(&normal));
        assert_eq!(indexes(&degraded), indexes(&normal));
        // Later events fold into the compressed agendas exactly as into live ones, and new
        // agendas are held compressed from the start.
        for step in 2..10 {
            apply(step, &mut [&mut normal, &mut degraded]);
        }
        for i in 40..44 {
            for e in history(i) {
                normal.apply(&format!("a{i}"), &e, 0, None).expect("applies");
                degraded.apply(&format!("a{i}"), &e, 0, None).expect("applies");
            }
        }
        assert!(degraded.entries.values().all(|e| e.is_settled()));
        assert_eq!(states(&degraded), states(&normal));
        assert_eq!(indexes(&degraded), indexes(&normal));
        assert_eq!(degraded.live_bytes(&Visibility::All), normal.live_bytes(&Visibility::All));
    }

    #[test]
    fn a_removed_agendas_slot_is_reused_and_its_ids_are_forgotten() {
        let applied = |m: &mut AgendaModel, key: &str, i: i64| {
            for e in history(i) {
                m.apply(key, &e, 0, None).expect("applies");
            }
        };
        let keys = |found: Vec<&AgendaEntry>| -> Vec<String> {
            found.into_iter().map(|e| e.key().to_string()).collect()
        };
        let mut m = AgendaModel::default();
        for i in 0..6 {
            applied(&mut m, &format!("a{i}"), i);
        }
        assert_eq!(m.entries.slot_count(), 6);
        // a4's progress id is p4 (every fourth has its own); the data reaper forgets it.
        assert_eq!(keys(m.with_progress_id("p4").collect()), ["a4"]);
        assert!(m.remove("a4").is_some());
        assert!(m.get("a4").is_none());
        assert!(m.with_id("a4").next().is_none());
        assert!(m.with_progress_id("p4").next().is_none());
        assert!(m.remove("a4").is_none());
        // The next new agenda takes the freed slot, and is found by its key and ids.
        applied(&mut m, "a8", 8);
        assert_eq!(m.entries.slot_count(), 6);
        assert_eq!(m.get("a8").map(AgendaEntry::id), Some("a8"));
        assert_eq!(keys(m.with_id("a8").collect()), ["a8"]);
        assert_eq!(keys(m.with_progress_id("p8").collect()), ["a8"]);
        assert!(m.with_id("a4").next().is_none());
        // The same as a model that never held a4.
        let mut fresh = AgendaModel::default();
        for i in [0, 1, 2, 3, 5, 8] {
            applied(&mut fresh, &format!("a{i}"), i);
        }
        assert_eq!(indexes(&m), indexes(&fresh));
        assert_eq!(states(&m), states(&fresh));
        // Two customers' agendas with one id (keys `<customer>/<id>`): both found, in key
        // order, whichever was added first; forgetting one leaves the other.
        applied(&mut m, "z/a3", 3);
        applied(&mut m, "b/a3", 3);
        assert_eq!(keys(m.with_id("a3").collect()), ["a3", "b/a3", "z/a3"]);
        assert_eq!(keys(m.with_progress_id("a3").collect()), ["a3", "b/a3", "z/a3"]);
        assert!(m.remove("b/a3").is_some());
        assert_eq!(keys(m.with_id("a3").collect()), ["a3", "z/a3"]);
        applied(&mut m, "c/a3", 3);
        assert_eq!(m.entries.slot_count(), 8);
        assert_eq!(keys(m.with_progress_id("a3").collect()), ["a3", "c/a3", "z/a3"]);
        // Built at once from the entries, the id tables hold the same.
        let before = indexes(&m);
        m.defer_indexes();
        m.build_indexes();
        assert_eq!(indexes(&m), before);
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
                    live.apply(&id, e, 0, None).expect("applies");
                    deferred.apply(&id, e, 0, None).expect("applies");
                }
            }
        }
        assert!(live.entries.values().any(|e| e.is_settled()));
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
        // The live bytes are the live agendas' definitions and what they keep of reports,
        // summed per customer and in all.
        let live_bytes: u64 = live
            .entries
            .values()
            .filter(|e| !e.is_settled())
            .map(|e| {
                let state = e.state().expect("a live agenda");
                let definition =
                    pop_domain::validate::json_bytes(state.agenda().expect("submitted"));
                (definition + state.kept_bytes()) as u64
            })
            .sum();
        assert!(live_bytes > 0);
        assert_eq!(live.live_bytes(&Visibility::All), live_bytes);
        let per_customer: u64 = (0..3)
            .map(|c| live.live_bytes(&Visibility::from_ids([format!("c{c}").as_str()])))
            .sum();
        assert_eq!(per_customer, live_bytes);
        // The retained bytes are the finished agendas' settled bodies and entries, per
        // customer and in all; a reaped one frees its share.
        let retained = |m: &AgendaModel, customer: &str| {
            m.entries
                .values()
                .filter(|e| !e.is_live() && (customer.is_empty() || e.customer_id() == customer))
                .map(|e| (e.settled_bytes() + entry::FINISHED_ENTRY_BYTES as usize) as u64)
                .sum::<u64>()
        };
        assert!(retained(&live, "") > 0);
        assert_eq!(live.retained_bytes(&Visibility::All), retained(&live, ""));
        for c in ["c0", "c1", "c2"] {
            assert_eq!(live.retained_bytes(&Visibility::from_ids([c])), retained(&live, c), "{c}");
        }
        let finished = live.entries.values().find(|e| !e.is_live()).map(|e| e.key().to_string());
        live.remove(&finished.expect("a finished agenda"));
        assert_eq!(live.retained_bytes(&Visibility::All), retained(&live, ""));
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
