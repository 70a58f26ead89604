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

/// A [`Key`] ordered by its customer first: `(customer part of the stream key, time, stream
/// key)`. The link and insight indexes hold the agendas of every customer that uses a linkId
/// or an insight (both are named, not owned, by one customer); in this order each customer's
/// are one range (a *group*), so a caller walks its own customers' groups only and another
/// tenant's agendas are never examined: their number made the caller's pages slow and short,
/// and a page cut by the scan bound named one of them in its cursor (hostile13). The same
/// 16 B as a [`Key`]: the customer is read from the stream key, not stored again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ByCustomer(pub(super) Key);

impl ByCustomer {
    /// The group: the customer part of the stream key ([`pop_domain::agenda::key`]: escaped,
    /// it ends at the first `/`); `""` for a key without one (written by older builds).
    pub(super) fn group(&self) -> &str {
        group_of(&self.0.1)
    }

    /// Before every key of `group` (with `time`: before every one of that time or later).
    pub(super) fn floor(group: &str, time: i64) -> ByCustomer {
        let name = if group.is_empty() { String::new() } else { format!("{group}/") };
        ByCustomer((time, Name::new(&name)))
    }

    /// After every key of `group`: the floor of the least group above it.
    pub(super) fn past(group: &str) -> ByCustomer {
        ByCustomer((i64::MIN, Name::new(&format!("{group}\0/"))))
    }
}

/// The group of a stream key ([`ByCustomer::group`]).
pub(super) fn group_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(customer, _)| customer)
}

/// The group of customer `customer_id`'s agendas ([`ByCustomer::group`]).
pub(super) fn group_of_customer(customer_id: &str) -> String {
    let mut key = pop_domain::agenda::key(customer_id, "");
    key.pop();
    key
}

/// Every group of `set`, in order: one range seek each.
pub(super) fn groups_in(set: &BTreeSet<ByCustomer>) -> Vec<String> {
    let mut groups = Vec::new();
    let mut next = set.first();
    while let Some(key) = next {
        let group = key.group().to_owned();
        next = set.range(ByCustomer::past(&group)..).next();
        groups.push(group);
    }
    groups
}

/// The keys of `group` in `set`, in [`Key`] order.
pub(super) fn group_range<'m>(
    set: &'m BTreeSet<ByCustomer>,
    group: &str,
) -> impl DoubleEndedIterator<Item = &'m Key> + 'm {
    set.range(ByCustomer::floor(group, i64::MIN)..ByCustomer::past(group)).map(|k| &k.0)
}

/// Whether stream key `key` reads as customer `customer_id`'s ([`group_of_customer`]): every
/// key pop writes does; an older build's key (the agenda id alone) may not, or may read as
/// another customer's.
pub(super) fn in_own_group(key: &str, customer_id: &str) -> bool {
    // Compared as escaped ([`pop_domain::agenda::key`]) without building the escaped text:
    // this runs on every insert and removal of the link and insight indexes.
    let Some((group, _)) = key.split_once('/') else { return false };
    let mut rest = group.as_bytes();
    let mut buf = [0u8; 4];
    for c in customer_id.chars() {
        let escaped: &[u8] = match c {
            '%' => b"%25",
            '/' => b"%2F",
            c => c.encode_utf8(&mut buf).as_bytes(),
        };
        match rest.strip_prefix(escaped) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// The keys of one linkId, or of one insight's phase. Those in their customer's group
/// ([`ByCustomer`], which costs nothing over a plain key: the customer is read from the key);
/// an older build's keys that do not read as their customer's are kept apart (`odd`, walked
/// for every caller and filtered by customer as before; empty unless such keys exist), so an
/// agenda is found by its own customer either way (review-s36: grouping by the key's text
/// alone put those in no customer's group or another's). A set per customer instead cost a
/// B-tree node per customer and linkId: 250 B more per finished agenda when each batch spans
/// customers (the rebuild bench).
#[derive(Debug, Default)]
pub(super) struct Grouped {
    pub(super) grouped: BTreeSet<ByCustomer>,
    pub(super) odd: BTreeSet<Key>,
}

impl Grouped {
    pub(super) fn insert(&mut self, customer: &str, key: Key) {
        if in_own_group(&key.1, customer) {
            self.grouped.insert(ByCustomer(key));
        } else {
            self.odd.insert(key);
        }
    }

    /// Removes `key` of `customer`'s agenda; `true` when nothing is left.
    pub(super) fn remove(&mut self, customer: &str, key: &Key) -> bool {
        if in_own_group(&key.1, customer) {
            self.grouped.remove(&ByCustomer(key.clone()));
        } else {
            self.odd.remove(key);
        }
        self.is_empty()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.grouped.is_empty() && self.odd.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.grouped.len() + self.odd.len()
    }

    /// Every key, grouped ones first (in no useful order across groups).
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.grouped.iter().map(|k| &k.0).chain(self.odd.iter())
    }

    /// Built from `(customer, key)` pairs (sorted and built bottom-up, [`sorted_set`]).
    fn built(keys: Vec<(Arc<str>, Key)>) -> Grouped {
        let (own, odd): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|(customer, key)| in_own_group(&key.1, customer));
        Grouped {
            grouped: sorted_set(own.into_iter().map(|(_, k)| ByCustomer(k)).collect()),
            odd: sorted_set(odd.into_iter().map(|(_, k)| k).collect()),
        }
    }
}

impl Ord for ByCustomer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.group().cmp(other.group()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for ByCustomer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
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
    /// What the agendas hold in memory ([`super::entry::Keys::bytes`]).
    pub(super) bytes: Held,
}

impl Partition {
    pub(super) fn is_empty(&self) -> bool {
        self.added.is_empty()
    }
}

/// What a set of agendas holds in memory, by [`super::entry::Keys::bytes`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    /// The live agendas: definitions and what they keep of reports.
    pub(super) live: u64,
    /// The finished (COMPLETE) agendas: settled bodies and entries.
    pub(super) retained: u64,
    /// What all of them take in the log ([`Keys::log`]), live or finished.
    pub(super) log: u64,
    /// How many are failed with a retry to come ([`Keys::retry`]): counted with the rest so a
    /// customer's delete asks it in constant time.
    pub(super) retries: u64,
}

impl Held {
    /// What the agenda with keys `k` holds.
    fn of(k: &Keys) -> Held {
        let n = u64::from(k.bytes);
        let log = u64::from(k.log);
        let retries = u64::from(k.retry);
        if k.phase.is_live() {
            Held { live: n, retained: 0, log, retries }
        } else {
            Held { live: 0, retained: n, log, retries }
        }
    }

    pub(super) fn add(&mut self, other: Held) {
        self.live += other.live;
        self.retained += other.retained;
        self.log += other.log;
        self.retries += other.retries;
    }

    fn sub(&mut self, other: Held) {
        debug_assert!(
            self.live >= other.live
                && self.retained >= other.retained
                && self.log >= other.log
                && self.retries >= other.retries,
            "{self:?} - {other:?}"
        );
        self.live = self.live.saturating_sub(other.live);
        self.retained = self.retained.saturating_sub(other.retained);
        self.log = self.log.saturating_sub(other.log);
        self.retries = self.retries.saturating_sub(other.retries);
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

    fn into_partition(self, phases: [usize; Phase::COUNT], bytes: Held) -> Partition {
        let [waiting, executing, complete] = self.by_state;
        let [waiting_added, executing_added] = self.live_added;
        Partition {
            added: sorted_set(self.added),
            by_state: [sorted_set(waiting), sorted_set(executing), sorted_set(complete)],
            live_added: [sorted_set(waiting_added), sorted_set(executing_added)],
            phases,
            bytes,
        }
    }
}

/// The set of `keys`, built bottom-up from sorted keys: every node but the last on each
/// level is full (inserted one by one in hash order, nodes end up about two-thirds full;
/// later inserts split full nodes in two, so this lasts until the indexes churn).
fn sorted_set<T: Ord>(mut keys: Vec<T>) -> BTreeSet<T> {
    keys.sort_unstable();
    // `from_iter` sorts again (a stable sort, linear on sorted keys), then builds in bulk.
    keys.into_iter().collect()
}

/// One insight's queue, in queue order (`(entered ms, agenda id)`): the agendas waiting to be
/// queued, grouped by customer (so `RoundRobin` and `Priority` take each customer's oldest in
/// queue order, and one customer's backlog hides no other's: hostile32, review-s43), and the
/// queued ones.
#[derive(Debug, Default)]
pub(super) struct Queue {
    /// WAITING/added and not `doNotRun`: the scheduler's candidates.
    pub(super) waiting: Grouped,
    /// WAITING/queued: what `getAgenda` hands out.
    pub(super) queued: BTreeSet<Key>,
}

impl Queue {
    fn insert(&mut self, phase: Phase, customer: &str, key: Key) {
        match phase {
            Phase::Added => self.waiting.insert(customer, key),
            Phase::Queued => {
                self.queued.insert(key);
            }
            _ => {}
        }
    }

    fn remove(&mut self, phase: Phase, customer: &str, key: &Key) {
        match phase {
            Phase::Added => {
                self.waiting.remove(customer, key);
            }
            Phase::Queued => {
                self.queued.remove(key);
            }
            _ => {}
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
        let mut all_bytes = Held::default();
        let mut customers: HashMap<Arc<str>, (Keys3, [usize; Phase::COUNT], Held)> = HashMap::new();
        type Pairs = Vec<(Arc<str>, Key)>;
        let mut links: HashMap<Name, Pairs> = HashMap::new();
        let mut insights: HashMap<Name, BTreeMap<Phase, Pairs>> = HashMap::new();
        let mut queues: HashMap<Name, (Pairs, Vec<Key>)> = HashMap::new();
        for entry in self.entries.values_mut() {
            if !entry.keys.phase.is_live() {
                entry.keys.bytes = super::finished_bytes(&entry.body);
            } else if entry.keys.bytes == 0 {
                entry.keys.bytes = match &entry.body {
                    Body::Live(state) => super::live_bytes(state),
                    // Held compressed (the degraded mode).
                    Body::Settled(_) => entry.state().map_or(0, |s| super::live_bytes(&s)),
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
            let held = Held::of(k);
            let (part, phases, bytes) = customers.entry(Arc::clone(&k.customer)).or_default();
            part.added.push(added.clone());
            part.by_state[slot].push(updated.clone());
            if let Some(live) = live_slot(k.state) {
                part.live_added[live].push(added.clone());
                all.live_added[live].push(added.clone());
            }
            phases[k.phase.index()] += 1;
            bytes.add(held);
            all.added.push(added.clone());
            all.by_state[slot].push(updated);
            all_phases[k.phase.index()] += 1;
            all_bytes.add(held);
            if let Some(link) = &k.link {
                let pair = (Arc::clone(&k.customer), added.clone());
                links.entry(link.clone()).or_default().push(pair);
            }
            if let Some(insight) = &k.insight {
                let queue = queue_phase(k);
                insights
                    .entry(insight.clone())
                    .or_default()
                    .entry(k.phase)
                    .or_default()
                    .push((Arc::clone(&k.customer), added));
                if let Some(phase) = queue {
                    let (waiting, queued) = queues.entry(insight.clone()).or_default();
                    let key = (k.entered, id.clone());
                    match phase {
                        Phase::Queued => queued.push(key),
                        _ => waiting.push((Arc::clone(&k.customer), key)),
                    }
                }
            }
        }
        let (all, rest) = std::thread::scope(|scope| {
            let all = scope.spawn(move || all.into_partition(all_phases, all_bytes));
            let by_customer: HashMap<Arc<str>, Partition> = customers
                .into_iter()
                .map(|(c, (keys, phases, bytes))| (c, keys.into_partition(phases, bytes)))
                .collect();
            let by_link: HashMap<Name, Grouped> =
                links.into_iter().map(|(l, keys)| (l, Grouped::built(keys))).collect();
            let by_insight: HashMap<Name, BTreeMap<Phase, Grouped>> = insights
                .into_iter()
                .map(|(i, phases)| {
                    (i, phases.into_iter().map(|(p, keys)| (p, Grouped::built(keys))).collect())
                })
                .collect();
            let queues: HashMap<Name, Queue> = queues
                .into_iter()
                .map(|(i, (waiting, queued))| {
                    (i, Queue { waiting: Grouped::built(waiting), queued: sorted_set(queued) })
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
        let same_link = |a: &Keys, b: &Keys| a.added == b.added && a.link == b.link;
        if !matches!((old, new), (Some(a), Some(b)) if same_link(a, b)) {
            if let Some(k) = old
                && let Some(link) = &k.link
                && let Some(set) = self.by_link.get_mut(link)
                && set.remove(&k.customer, &added_key(k))
            {
                self.by_link.remove(link);
            }
            if let Some(k) = new
                && let Some(link) = &k.link
            {
                self.by_link.entry(link.clone()).or_default().insert(&k.customer, added_key(k));
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
        // Bytes held, live and finished: all, customer.
        let same_bytes =
            |a: &Keys, b: &Keys| Held::of(a) == Held::of(b) && a.customer == b.customer;
        if !matches!((old, new), (Some(a), Some(b)) if same_bytes(a, b)) {
            if let Some(k) = old {
                self.all.bytes.sub(Held::of(k));
                if let Some(part) = self.by_customer.get_mut(&k.customer) {
                    part.bytes.sub(Held::of(k));
                }
            }
            if let Some(k) = new {
                self.all.bytes.add(Held::of(k));
                self.by_customer.entry(Arc::clone(&k.customer)).or_default().bytes.add(Held::of(k));
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
                if let Some(set) = phases.get_mut(&k.phase)
                    && set.remove(&k.customer, &added_key(k))
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
                self.by_insight
                    .entry(insight.clone())
                    .or_default()
                    .entry(k.phase)
                    .or_default()
                    .insert(&k.customer, added_key(k));
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
                queue.remove(phase, &k.customer, &queue_key(k));
                if queue.is_empty() {
                    self.queues.remove(insight);
                }
            }
            if let Some(k) = new
                && let (Some(insight), Some(phase)) = (&k.insight, queue_phase(k))
            {
                self.queues.entry(insight.clone()).or_default().insert(
                    phase,
                    &k.customer,
                    queue_key(k),
                );
            }
        }
    }
}

#[cfg(test)]
mod own_group_tests {
    use super::*;

    /// The streamed comparison agrees with building the customer's group.
    #[test]
    fn a_key_is_in_its_own_group_as_the_escaped_text_says() {
        for customer in ["acme", "a/b", "100%", "ünï/%x", ""] {
            for id in ["x", "a/b"] {
                let key = pop_domain::agenda::key(customer, id);
                assert!(in_own_group(&key, customer), "{key} {customer}");
                assert_eq!(group_of(&key), group_of_customer(customer));
            }
        }
        assert!(!in_own_group("acme/x", "acm"));
        assert!(!in_own_group("acme/x", "acmee"));
        assert!(!in_own_group("a%2Fb/x", "a%2Fb"), "the '%' of a customer id is escaped");
        assert!(!in_own_group("job-1", "acme"), "an older build's key");
        assert!(!in_own_group("globex/1", "acme"));
    }
}
