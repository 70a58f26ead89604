//! The agenda indexes: ordered sets of `(time in ms, agenda id)` per customer, linkId,
//! insight and phase, and per processing state, kept in step with the entries by
//! [`AgendaModel::reindex`] (or built once, after a rebuild, by
//! [`AgendaModel::build_indexes`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use pop_domain::ProcessingState;

use crate::phase::Phase;

use super::entry::{Body, Keys, Name};
use super::slots::IdKind;
use super::{AgendaModel, intern};

/// An index key: `(time in epoch ms, stream key)`, 16 B ([`Name`]).
pub(super) type Key = (i64, Name);

/// The keys of one linkId, or of one insight's phase, apart per customer (the agenda's own,
/// [`Keys::customer`]). linkIds and insights are named, not owned, by one customer, so one
/// holds the agendas of every customer that uses it; a caller walks its own customers' sets
/// only, and another tenant's agendas are never examined (hostile13: their number made the
/// caller's pages slow and short, and a page cut by the scan bound named one of them in its
/// cursor). Nearly every linkId is one customer's: that case is one set, 16 B more than it.
pub(super) enum PerCustomer {
    One(Arc<str>, BTreeSet<Key>),
    // Boxed: a map is 48 B inline, and the one-customer case, nearly every linkId, is what
    // sizes the enum (one per linkId in memory).
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Arc<str>, BTreeSet<Key>>>),
}

/// By customer, in order (two models holding the same keys print the same).
impl std::fmt::Debug for PerCustomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sorted: BTreeMap<&Arc<str>, &BTreeSet<Key>> = self.sets().collect();
        f.debug_map().entries(sorted).finish()
    }
}

impl PerCustomer {
    /// The keys of `customer`'s agenda `key` alone.
    pub(super) fn new(customer: &Arc<str>, key: Key) -> PerCustomer {
        PerCustomer::One(Arc::clone(customer), BTreeSet::from([key]))
    }

    /// Adds `key` of an agenda of `customer`.
    pub(super) fn insert(&mut self, customer: &Arc<str>, key: Key) {
        match self {
            PerCustomer::One(only, set) if only == customer => {
                set.insert(key);
            }
            PerCustomer::One(..) => {
                let PerCustomer::One(only, set) =
                    std::mem::replace(self, PerCustomer::Many(Box::default()))
                else {
                    return;
                };
                let mut many = HashMap::with_capacity(2);
                many.insert(only, set);
                many.entry(Arc::clone(customer)).or_insert_with(BTreeSet::new).insert(key);
                *self = PerCustomer::Many(Box::new(many));
            }
            PerCustomer::Many(many) => {
                many.entry(Arc::clone(customer)).or_default().insert(key);
            }
        }
    }

    /// Adds `key` of an agenda of `customer` to `name`'s entry of `map`.
    pub(super) fn insert_into<K: std::hash::Hash + Eq + Clone>(
        map: &mut HashMap<K, PerCustomer>,
        name: &K,
        customer: &Arc<str>,
        key: Key,
    ) {
        match map.get_mut(name) {
            Some(per) => per.insert(customer, key),
            None => {
                map.insert(name.clone(), PerCustomer::new(customer, key));
            }
        }
    }

    /// Removes `key` of an agenda of `customer`; `true` when nothing is left.
    pub(super) fn remove(&mut self, customer: &str, key: &Key) -> bool {
        match self {
            PerCustomer::One(only, set) => {
                if &**only == customer {
                    set.remove(key);
                }
                set.is_empty()
            }
            PerCustomer::Many(many) => {
                if let Some(set) = many.get_mut(customer) {
                    set.remove(key);
                    if set.is_empty() {
                        many.remove(customer);
                    }
                }
                many.is_empty()
            }
        }
    }

    /// Built from each customer's keys (sorted and built bottom-up, [`sorted_set`]).
    fn built(mut keys: HashMap<Arc<str>, Vec<Key>>) -> Option<PerCustomer> {
        if keys.len() <= 1 {
            let (customer, keys) = keys.drain().next()?;
            return Some(PerCustomer::One(customer, sorted_set(keys)));
        }
        let many = keys.into_iter().map(|(c, keys)| (c, sorted_set(keys))).collect();
        Some(PerCustomer::Many(Box::new(many)))
    }

    /// How many keys, of every customer.
    pub(super) fn len(&self) -> usize {
        self.sets().map(|(_, set)| set.len()).sum()
    }

    /// How many customers have keys here.
    pub(super) fn customers(&self) -> usize {
        match self {
            PerCustomer::One(..) => 1,
            PerCustomer::Many(many) => many.len(),
        }
    }

    /// Every customer's set.
    pub(super) fn sets(&self) -> Box<dyn Iterator<Item = (&Arc<str>, &BTreeSet<Key>)> + '_> {
        match self {
            PerCustomer::One(customer, set) => Box::new(std::iter::once((customer, set))),
            PerCustomer::Many(many) => Box::new(many.iter()),
        }
    }

    /// `customer`'s set.
    pub(super) fn of(&self, customer: &str) -> Option<&BTreeSet<Key>> {
        match self {
            PerCustomer::One(only, set) => (&**only == customer).then_some(set),
            PerCustomer::Many(many) => many.get(customer),
        }
    }

    /// The sets of the customers `visibility` sees, by whichever side is smaller (a caller of
    /// 10,000 customers and a linkId of one).
    pub(super) fn seen_by(&self, visibility: &crate::query::Visibility) -> Vec<&BTreeSet<Key>> {
        match visibility {
            crate::query::Visibility::All => self.sets().map(|(_, set)| set).collect(),
            crate::query::Visibility::Customers(ids) if ids.len() < self.customers() => {
                ids.iter().filter_map(|c| self.of(c)).collect()
            }
            crate::query::Visibility::Customers(_) => {
                self.sets().filter(|(c, _)| visibility.sees(c)).map(|(_, set)| set).collect()
            }
        }
    }
}

/// The indexes of one set of agendas (all of them, or one customer's).
#[derive(Debug, Default)]
pub(super) struct Partition {
    pub(super) added: BTreeSet<Key>,
    /// Per processing state, in `updatedTime` order (what reapers ask: "COMPLETE and not
    /// updated for 3 days", "EXECUTING and silent for 5 minutes"). The three together are the
    /// `updatedTime` order of all states, merged on read (no fourth set: every agenda's key in
    /// one more ordered set cost ~30 B an agenda).
    pub(super) by_state: [BTreeSet<Key>; 3],
    /// The live states (WAITING, EXECUTING; by [`state_slot`]) in `addedTime` order: the
    /// dashboard's "this customer's running agendas, newest first" is a range read instead of
    /// a walk past every newer finished agenda of the customer (p99 54.8 ms at a million
    /// agendas, growing with the customer's finished ones). Finished agendas are not in it:
    /// a COMPLETE filter walks `added`, where they are the great majority.
    pub(super) live_added: [BTreeSet<Key>; 2],
    /// How many agendas are in each phase (by [`Phase::index`]): the overview's counts in
    /// constant time per customer.
    pub(super) phases: [usize; Phase::COUNT],
    /// The definitions' bytes of the live agendas ([`super::entry::Keys::bytes`]).
    pub(super) live_bytes: u64,
}

impl Partition {
    pub(super) fn is_empty(&self) -> bool {
        self.added.is_empty()
    }
}

/// The keys of a [`Partition`]'s sets, collected before they are sorted and built.
#[derive(Default)]
struct Keys3 {
    added: Vec<Key>,
    by_state: [Vec<Key>; 3],
    live_added: [Vec<Key>; 2],
}

impl Keys3 {
    fn with_capacity(n: usize) -> Keys3 {
        Keys3 {
            added: Vec::with_capacity(n),
            by_state: Default::default(),
            live_added: Default::default(),
        }
    }

    fn into_partition(self, phases: [usize; Phase::COUNT], live_bytes: u64) -> Partition {
        let [waiting, executing, complete] = self.by_state;
        let [waiting_added, executing_added] = self.live_added;
        Partition {
            added: sorted_set(self.added),
            by_state: [sorted_set(waiting), sorted_set(executing), sorted_set(complete)],
            live_added: [sorted_set(waiting_added), sorted_set(executing_added)],
            phases,
            live_bytes,
        }
    }
}

/// The set of `keys`, built bottom-up from sorted keys: every node but the last on each
/// level is full (inserted one by one in hash order, nodes end up about two-thirds full;
/// later inserts split full nodes in two, so this lasts until the indexes churn).
fn sorted_set(mut keys: Vec<Key>) -> BTreeSet<Key> {
    keys.sort_unstable();
    // `from_iter` sorts again (a stable sort, linear on sorted keys), then builds in bulk.
    keys.into_iter().collect()
}

/// One insight's queue, in queue order (`(entered ms, agenda id)`): the agendas waiting to be
/// queued and the queued ones.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// WAITING/added and not `doNotRun`: the scheduler's candidates.
    pub(super) waiting: BTreeSet<Key>,
    /// WAITING/queued: what `getAgenda` hands out.
    pub(super) queued: BTreeSet<Key>,
}

impl Queue {
    pub(super) fn part(&self, phase: Phase) -> Option<&BTreeSet<Key>> {
        match phase {
            Phase::Added => Some(&self.waiting),
            Phase::Queued => Some(&self.queued),
            _ => None,
        }
    }

    fn part_mut(&mut self, phase: Phase) -> Option<&mut BTreeSet<Key>> {
        match phase {
            Phase::Added => Some(&mut self.waiting),
            Phase::Queued => Some(&mut self.queued),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.queued.is_empty()
    }
}

/// The part of its insight's queue an agenda with `k` is in, if any: `doNotRun` agendas are
/// never candidates.
fn queue_phase(k: &Keys) -> Option<Phase> {
    match k.phase {
        Phase::Added if !k.held => Some(Phase::Added),
        Phase::Queued => Some(Phase::Queued),
        _ => None,
    }
}

/// The slot of a live state in [`Partition::live_added`]; `None` for COMPLETE.
pub(super) fn live_slot(state: ProcessingState) -> Option<usize> {
    match state {
        ProcessingState::Complete => None,
        live => Some(state_slot(live)),
    }
}

pub(super) fn state_slot(state: ProcessingState) -> usize {
    match state {
        ProcessingState::Waiting => 0,
        ProcessingState::Executing => 1,
        ProcessingState::Complete => 2,
    }
}

impl AgendaModel {
    /// Builds every index from the entries' keys (after [`AgendaModel::defer_indexes`]),
    /// interning customer, link and insight ids again so each is stored once.
    ///
    /// Each index's keys are first collected in a `Vec`, then sorted and built into their
    /// set bottom-up (`BTreeSet::from_iter` of sorted keys fills every node): no insert into a
    /// tree of a million keys, one cache miss after another, and the nodes come out full.
    /// The sets of all agendas are sorted on a second thread while this one builds the
    /// per-customer, link, insight and queue sets.
    pub(crate) fn build_indexes(&mut self) {
        if !self.deferred {
            return;
        }
        self.deferred = false;
        let n = self.entries.len();
        self.entries.rebuild_ids();
        let mut all = Keys3::with_capacity(n);
        let mut all_phases = [0usize; Phase::COUNT];
        let mut all_live_bytes = 0u64;
        let mut customers: HashMap<Arc<str>, (Keys3, [usize; Phase::COUNT], u64)> = HashMap::new();
        type ByCustomer = HashMap<Arc<str>, Vec<Key>>;
        let mut links: HashMap<Name, ByCustomer> = HashMap::new();
        let mut insights: HashMap<Name, BTreeMap<Phase, ByCustomer>> = HashMap::new();
        let mut queues: HashMap<Name, [Vec<Key>; 2]> = HashMap::new();
        for entry in self.entries.values_mut() {
            if entry.keys.phase.is_live() && entry.keys.bytes == 0 {
                entry.keys.bytes = match &entry.body {
                    Body::Live(state) => super::definition_bytes(state),
                    // Held compressed (the degraded mode).
                    Body::Settled(_) => entry.state().map_or(0, |s| super::definition_bytes(&s)),
                };
            }
            let id = &entry.key;
            let k = &mut entry.keys;
            k.customer = intern(&customers, None, &k.customer);
            if let Some(link) = k.link.as_mut() {
                *link = intern(&links, None, link);
            }
            if let Some(insight) = k.insight.as_mut() {
                *insight = intern(&insights, None, insight);
            }
            let added = (k.added, id.clone());
            let updated = (k.updated, id.clone());
            let slot = state_slot(k.state);
            let live_bytes = if k.phase.is_live() { u64::from(k.bytes) } else { 0 };
            let (part, phases, bytes) = customers.entry(Arc::clone(&k.customer)).or_default();
            part.added.push(added.clone());
            part.by_state[slot].push(updated.clone());
            if let Some(live) = live_slot(k.state) {
                part.live_added[live].push(added.clone());
                all.live_added[live].push(added.clone());
            }
            phases[k.phase.index()] += 1;
            *bytes += live_bytes;
            all.added.push(added.clone());
            all.by_state[slot].push(updated);
            all_phases[k.phase.index()] += 1;
            all_live_bytes += live_bytes;
            if let Some(link) = &k.link {
                let customers = links.entry(link.clone()).or_default();
                customers.entry(Arc::clone(&k.customer)).or_default().push(added.clone());
            }
            if let Some(insight) = &k.insight {
                let queue = queue_phase(k);
                insights
                    .entry(insight.clone())
                    .or_default()
                    .entry(k.phase)
                    .or_default()
                    .entry(Arc::clone(&k.customer))
                    .or_default()
                    .push(added);
                if let Some(phase) = queue {
                    let part = usize::from(phase == Phase::Queued);
                    queues.entry(insight.clone()).or_default()[part].push((k.entered, id.clone()));
                }
            }
        }
        let (all, rest) = std::thread::scope(|scope| {
            let all = scope.spawn(move || all.into_partition(all_phases, all_live_bytes));
            let by_customer: HashMap<Arc<str>, Partition> = customers
                .into_iter()
                .map(|(c, (keys, phases, bytes))| (c, keys.into_partition(phases, bytes)))
                .collect();
            let by_link: HashMap<Name, PerCustomer> = links
                .into_iter()
                .filter_map(|(l, keys)| Some((l, PerCustomer::built(keys)?)))
                .collect();
            let by_insight: HashMap<Name, BTreeMap<Phase, PerCustomer>> = insights
                .into_iter()
                .map(|(i, phases)| {
                    let phases = phases
                        .into_iter()
                        .filter_map(|(p, keys)| Some((p, PerCustomer::built(keys)?)))
                        .collect();
                    (i, phases)
                })
                .collect();
            let queues: HashMap<Name, Queue> = queues
                .into_iter()
                .map(|(i, [waiting, queued])| {
                    (i, Queue { waiting: sorted_set(waiting), queued: sorted_set(queued) })
                })
                .collect();
            let all = all.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (all, (by_customer, by_link, by_insight, queues))
        });
        self.all = all;
        (self.by_customer, self.by_link, self.by_insight, self.queues) = rest;
    }

    /// Moves an agenda's index entries from `old` keys to `new` ones, touching only the
    /// indexes whose key changed (most events change only the updated time). `id` is its
    /// stream key and `slot` its slot ([`super::slots`]), which holds the entry with the `new`
    /// keys (or, for a removal, still holds it).
    pub(super) fn reindex(&mut self, id: &Name, slot: u32, old: Option<&Keys>, new: Option<&Keys>) {
        if self.deferred {
            return;
        }
        let added_key = |k: &Keys| (k.added, id.clone());
        let updated_key = |k: &Keys| (k.updated, id.clone());

        // The id tables (an agenda's ids never change, so this is once in its life, and once
        // when it is forgotten).
        for kind in [IdKind::Agenda, IdKind::Progress] {
            let (old_id, new_id) = (old.map(|k| kind.of(id, k)), new.map(|k| kind.of(id, k)));
            if old_id != new_id {
                self.entries.move_ids(kind, slot, old_id, new_id);
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
        // Added-time order per live state: all, customer.
        let same_live =
            |a: &Keys, b: &Keys| same_added(a, b) && live_slot(a.state) == live_slot(b.state);
        if !matches!((old, new), (Some(a), Some(b)) if same_live(a, b)) {
            if let Some(k) = old
                && let Some(live) = live_slot(k.state)
            {
                self.all.live_added[live].remove(&added_key(k));
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.live_added[live].remove(&added_key(k));
                }
            }
            if let Some(k) = new
                && let Some(live) = live_slot(k.state)
            {
                self.all.live_added[live].insert(added_key(k));
                let part = self.by_customer.entry(Arc::clone(&k.customer)).or_default();
                part.live_added[live].insert(added_key(k));
            }
        }
        let same_link =
            |a: &Keys, b: &Keys| a.added == b.added && a.link == b.link && a.customer == b.customer;
        if !matches!((old, new), (Some(a), Some(b)) if same_link(a, b)) {
            if let Some(k) = old
                && let Some(link) = &k.link
                && let Some(per) = self.by_link.get_mut(link)
                && per.remove(&k.customer, &added_key(k))
            {
                self.by_link.remove(link);
            }
            if let Some(k) = new
                && let Some(link) = &k.link
            {
                PerCustomer::insert_into(&mut self.by_link, link, &k.customer, added_key(k));
            }
        }

        // Updated-time order per state: all, customer.
        let same_updated = |a: &Keys, b: &Keys| {
            a.updated == b.updated && a.state == b.state && a.customer == b.customer
        };
        if !matches!((old, new), (Some(a), Some(b)) if same_updated(a, b)) {
            if let Some(k) = old {
                let key = updated_key(k);
                self.all.by_state[state_slot(k.state)].remove(&key);
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.by_state[state_slot(k.state)].remove(&key);
                }
            }
            if let Some(k) = new {
                let key = updated_key(k);
                self.all.by_state[state_slot(k.state)].insert(key.clone());
                let part = self.by_customer.entry(Arc::clone(&k.customer)).or_default();
                part.by_state[state_slot(k.state)].insert(key);
            }
        }
        // Phase counters: all, customer.
        let same_phase = |a: &Keys, b: &Keys| a.phase == b.phase && a.customer == b.customer;
        if !matches!((old, new), (Some(a), Some(b)) if same_phase(a, b)) {
            if let Some(k) = old {
                let slot = k.phase.index();
                self.all.phases[slot] = self.all.phases[slot].saturating_sub(1);
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.phases[slot] = part.phases[slot].saturating_sub(1);
                }
            }
            if let Some(k) = new {
                self.all.phases[k.phase.index()] += 1;
                self.by_customer.entry(Arc::clone(&k.customer)).or_default().phases
                    [k.phase.index()] += 1;
            }
        }
        // Live bytes: all, customer.
        let live_bytes = |k: &Keys| if k.phase.is_live() { u64::from(k.bytes) } else { 0 };
        let same_bytes =
            |a: &Keys, b: &Keys| live_bytes(a) == live_bytes(b) && a.customer == b.customer;
        if !matches!((old, new), (Some(a), Some(b)) if same_bytes(a, b)) {
            if let Some(k) = old {
                let n = live_bytes(k);
                self.all.live_bytes = self.all.live_bytes.saturating_sub(n);
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.live_bytes = part.live_bytes.saturating_sub(n);
                }
            }
            if let Some(k) = new {
                let n = live_bytes(k);
                self.all.live_bytes += n;
                self.by_customer.entry(Arc::clone(&k.customer)).or_default().live_bytes += n;
            }
        }
        if let Some(k) = old
            && new.is_none_or(|n| n.customer != k.customer)
            && self.by_customer.get(&k.customer).is_some_and(Partition::is_empty)
        {
            self.by_customer.remove(&k.customer);
        }

        // Insight queues: per insight and phase, added-time order.
        let same_queue = |a: &Keys, b: &Keys| {
            a.added == b.added
                && a.insight == b.insight
                && a.phase == b.phase
                && a.customer == b.customer
        };
        if !matches!((old, new), (Some(a), Some(b)) if same_queue(a, b)) {
            if let Some(k) = old
                && let Some(insight) = &k.insight
                && let Some(phases) = self.by_insight.get_mut(insight)
            {
                if let Some(per) = phases.get_mut(&k.phase)
                    && per.remove(&k.customer, &added_key(k))
                {
                    phases.remove(&k.phase);
                }
                if phases.is_empty() {
                    self.by_insight.remove(insight);
                }
            }
            if let Some(k) = new
                && let Some(insight) = &k.insight
            {
                let phases = self.by_insight.entry(insight.clone()).or_default();
                match phases.get_mut(&k.phase) {
                    Some(per) => per.insert(&k.customer, added_key(k)),
                    None => {
                        phases.insert(k.phase, PerCustomer::new(&k.customer, added_key(k)));
                    }
                }
            }
        }

        // Queue order: per insight, the waiting candidates and the queued ones.
        let queue_key = |k: &Keys| (k.entered, id.clone());
        let same_place = |a: &Keys, b: &Keys| {
            a.entered == b.entered && a.insight == b.insight && queue_phase(a) == queue_phase(b)
        };
        if !matches!((old, new), (Some(a), Some(b)) if same_place(a, b)) {
            if let Some(k) = old
                && let (Some(insight), Some(phase)) = (&k.insight, queue_phase(k))
                && let Some(queue) = self.queues.get_mut(insight)
            {
                if let Some(part) = queue.part_mut(phase) {
                    part.remove(&queue_key(k));
                }
                if queue.is_empty() {
                    self.queues.remove(insight);
                }
            }
            if let Some(k) = new
                && let (Some(insight), Some(phase)) = (&k.insight, queue_phase(k))
                && let Some(part) = self.queues.entry(insight.clone()).or_default().part_mut(phase)
            {
                part.insert(queue_key(k));
            }
        }
    }
}
