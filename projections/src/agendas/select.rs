//! Selecting agendas: a filtered, ordered, paginated list ([`AgendaQuery`]) driven by the
//! most selective index, and the ProgressSummary of a linkId.

use std::cmp::Ordering;
use std::collections::btree_set;
use std::collections::{BTreeSet, BinaryHeap};
use std::iter::Rev;
use std::ops::Bound;
use std::slice;
use std::sync::Arc;

use pop_domain::rollup::progress_summary;
use pop_domain::{ProcessingState, ProgressSummary};

use super::entry::Name;
use super::indexes::{
    ByCustomer, Grouped, Key, Partition, group_of, group_of_customer, group_range, groups_in,
    live_slot, state_slot,
};
use super::{AgendaEntry, AgendaModel, CorruptEntry, DetachedProgress};
use crate::phase::Phase;
use crate::query::{AgendaOrder, Cursor, MAX_PAGE_SIZE, MAX_SCANNED_PER_PAGE, Page, Visibility};

/// A filtered, ordered, paginated agenda list. Filters are ANDed.
#[derive(Debug, Clone)]
pub struct AgendaQuery<'a> {
    pub visibility: &'a Visibility,
    pub link_id: Option<&'a str>,
    pub insight_id: Option<&'a str>,
    pub processing_state: Option<ProcessingState>,
    pub phase: Option<Phase>,
    pub order: AgendaOrder,
    /// Walk the order backwards: newest first (for [`AgendaOrder::AddedTime`]), most recently
    /// changed first (for [`AgendaOrder::UpdatedTime`]). `after` then starts the page before
    /// the cursor.
    pub descending: bool,
    /// Start after this cursor (exclusive, in the walk's direction); `None` for the first page.
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
            descending: false,
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

impl AgendaModel {
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

    /// The scheduler's candidates on `insight` customer by customer: for each customer with
    /// agendas waiting to be queued there (the insight's queue, grouped by customer: never a
    /// `doNotRun` one), its first in queue order, `budget` shared evenly among the customers
    /// (at least one each, at most `most_each`); older builds' agendas whose keys name no
    /// customer come as one more list. Unlike one walk of the queue order, a customer's deep
    /// backlog cannot hide the others' work (hostile32: 10,000 agendas of one customer on a
    /// shared insight kept a `RoundRobin` and a `Priority` insight from seeing another's).
    pub fn added_per_customer<'m>(
        &'m self,
        insight: &str,
        budget: usize,
        most_each: usize,
    ) -> Vec<Vec<&'m AgendaEntry>> {
        let Some(set) = self.queues.get(insight).map(|queue| &queue.waiting) else {
            return Vec::new();
        };
        let groups = groups_in(&set.grouped);
        let lists = groups.len() + usize::from(!set.odd.is_empty());
        let each = (budget / lists.max(1)).clamp(1, most_each.max(1));
        let take = |keys: &mut dyn Iterator<Item = &'m Key>| -> Vec<&'m AgendaEntry> {
            keys.filter_map(|key| self.get(&key.1)).take(each).collect()
        };
        let mut found: Vec<Vec<&AgendaEntry>> =
            groups.iter().map(|group| take(&mut group_range(&set.grouped, group))).collect();
        if !set.odd.is_empty() {
            found.push(take(&mut set.odd.iter()));
        }
        found.retain(|list| !list.is_empty());
        found
    }

    /// How many agendas in `phase` on `insight` each customer `visibility` sees has, `budget`
    /// of them counted, shared evenly among the customers (at least one each): every customer
    /// with such agendas is listed, and a count that reached its share is a lower bound
    /// (hostile32: one walk of the oldest counted one customer's backlog only and left out the
    /// customer it starved).
    pub fn count_per_customer(
        &self,
        insight: &str,
        phase: Phase,
        visibility: &Visibility,
        budget: usize,
    ) -> Vec<(String, usize)> {
        let Some(set) = self.by_insight.get(insight).and_then(|phases| phases.get(&phase)) else {
            return Vec::new();
        };
        let groups = groups_seen(&set.grouped, visibility);
        let each = (budget / (groups.len() + 1)).max(1);
        let mut counts: Vec<(String, usize)> = Vec::new();
        for group in &groups {
            let mut keys = group_range(&set.grouped, group).take(each);
            // The group is the customer's escaped id: the first entry names the customer.
            let Some(customer) =
                keys.next().and_then(|k| self.get(&k.1)).map(|e| e.customer_id().to_string())
            else {
                continue;
            };
            counts.push((customer, 1 + keys.count()));
        }
        // Older builds' keys that name no customer: each entry's own customer, as everywhere.
        for entry in set.odd.iter().take(each).filter_map(|k| self.get(&k.1)) {
            if visibility.sees(entry.customer_id()) {
                match counts.iter_mut().find(|(c, _)| c == entry.customer_id()) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((entry.customer_id().to_string(), 1)),
                }
            }
        }
        counts
    }

    fn select_paged<'m>(
        &'m self,
        q: &AgendaQuery<'_>,
        keep: impl Fn(&AgendaEntry) -> bool,
        exact_next: bool,
    ) -> Page<&'m AgendaEntry> {
        let mut sources: Vec<Source<'m>> = Vec::new();
        let by_added = q.order == AgendaOrder::AddedTime;
        // The link and insight indexes are walked in the groups of the caller's customers
        // only ([`ByCustomer`]).
        let grouped = |sets: &mut dyn Iterator<Item = &'m Grouped>| {
            let mut sources = Vec::new();
            for set in sets {
                for group in groups_seen(&set.grouped, q.visibility) {
                    sources.push(Source::Group(&set.grouped, group));
                }
                // An older build's keys that do not read as their customer's: each entry's
                // customer is checked, as everywhere.
                if !set.odd.is_empty() {
                    sources.push(Source::Set(&set.odd));
                }
            }
            sources
        };
        if q.order == AgendaOrder::Queue {
            if let (Some(insight), Some(phase)) = (q.insight_id, q.phase)
                && let Some(queue) = self.queues.get(insight)
            {
                match phase {
                    Phase::Added => sources = grouped(&mut std::iter::once(&queue.waiting)),
                    Phase::Queued => sources.push(Source::Set(&queue.queued)),
                    _ => {}
                }
            }
        } else if let (true, Some(link)) = (by_added, q.link_id) {
            sources = grouped(&mut self.by_link.get(link).into_iter());
        } else if let (true, Some(insight)) = (by_added, q.insight_id) {
            if let Some(phases) = self.by_insight.get(insight) {
                sources = match q.phase {
                    Some(phase) => grouped(&mut phases.get(&phase).into_iter()),
                    None => grouped(&mut phases.values()),
                };
            }
        } else {
            // In `updatedTime` order across states, the three per-state sets are merged.
            let pick = |p: &'m Partition| -> &'m [BTreeSet<Key>] {
                match (q.order, q.processing_state) {
                    (AgendaOrder::AddedTime, Some(s)) => match live_slot(s) {
                        Some(live) => slice::from_ref(&p.live_added[live]),
                        None => slice::from_ref(&p.added),
                    },
                    (AgendaOrder::AddedTime | AgendaOrder::Queue, _) => slice::from_ref(&p.added),
                    (AgendaOrder::UpdatedTime, None) => &p.by_state,
                    (AgendaOrder::UpdatedTime, Some(s)) => {
                        slice::from_ref(&p.by_state[state_slot(s)])
                    }
                }
            };
            match q.visibility {
                Visibility::All => sources.extend(pick(&self.all).iter().map(Source::Set)),
                Visibility::Customers(ids) => sources.extend(
                    ids.iter()
                        .filter_map(|c| self.by_customer.get(c.as_str()))
                        .flat_map(pick)
                        .map(Source::Set),
                ),
            }
        }
        let after = q.after.map(|c| (c.time, Name::new(&c.id)));
        merge_page(&sources, after, q.descending, q.limit, exact_next, |key| {
            self.get(&key.1).filter(|e| q.admits(e) && keep(e))
        })
    }

    /// How many agendas `visibility` sees are in each phase (by [`Phase::index`]): constant
    /// time per visible customer, whatever the number of agendas.
    pub fn phase_counts(&self, visibility: &Visibility) -> [usize; Phase::COUNT] {
        match visibility {
            Visibility::All => self.all.phases,
            Visibility::Customers(ids) => {
                let mut sum = [0; Phase::COUNT];
                for part in ids.iter().filter_map(|c| self.by_customer.get(c.as_str())) {
                    for (total, n) in sum.iter_mut().zip(part.phases) {
                        *total += n;
                    }
                }
                sum
            }
        }
    }

    /// What the live agendas `visibility` sees hold (see [`Phase::is_live`]): their
    /// definitions and what they keep of reports, as compact JSON; constant time per visible
    /// customer.
    pub fn live_bytes(&self, visibility: &Visibility) -> u64 {
        self.held(visibility).live
    }

    /// What the finished (COMPLETE) agendas `visibility` sees hold in memory: their settled
    /// (compressed) bodies and about 512 B each for their entries and index keys; constant time
    /// per visible customer. Counted for `--max-retained-bytes-per-customer` (hostile42 H2).
    pub fn retained_bytes(&self, visibility: &Visibility) -> u64 {
        self.held(visibility).retained
    }

    /// What the agendas `visibility` sees take in the log, live and finished: their events'
    /// data and metadata, until the data reaper deletes their streams; constant time per
    /// visible customer. Counted for `--max-log-bytes-per-customer` (hostile57 H2).
    pub fn log_bytes(&self, visibility: &Visibility) -> u64 {
        self.held(visibility).log
    }

    /// How many failed agendas `visibility` sees have a retry to come
    /// ([`crate::AgendaEntry::retry_due`]); constant time per visible customer.
    pub fn retries_to_come(&self, visibility: &Visibility) -> u64 {
        self.held(visibility).retries
    }

    fn held(&self, visibility: &Visibility) -> super::indexes::Held {
        match visibility {
            Visibility::All => self.all.bytes,
            Visibility::Customers(ids) => {
                let mut held = super::indexes::Held::default();
                for part in ids.iter().filter_map(|c| self.by_customer.get(c.as_str())) {
                    held.add(part.bytes);
                }
                held
            }
        }
    }

    /// The COMPLETE agendas `visibility` sees that were last updated (completed, for nearly
    /// all of them) at or after `since_ms`, as `(updated ms, phase)`, at most `max` of them
    /// (the newest are the ones left out; `true` then). Read from the per-state
    /// `updatedTime` index, so the cost is the number of agendas in the window.
    pub fn completed_since(
        &self,
        visibility: &Visibility,
        since_ms: i64,
        max: usize,
    ) -> (Vec<(i64, Phase)>, bool) {
        let slot = state_slot(ProcessingState::Complete);
        let parts: Vec<&Partition> = match visibility {
            Visibility::All => vec![&self.all],
            Visibility::Customers(ids) => {
                ids.iter().filter_map(|c| self.by_customer.get(c.as_str())).collect()
            }
        };
        let from: Key = (since_ms, Name::new(""));
        let mut out = Vec::new();
        for part in parts {
            for (time, id) in part.by_state[slot].range(&from..) {
                if out.len() == max {
                    return (out, true);
                }
                if let Some(e) = self.entries.get(id) {
                    out.push((*time, e.keys.phase));
                }
            }
        }
        (out, false)
    }

    /// DOMAIN.md §4.3 over the agendas with `link_id` that `visibility` sees.
    pub fn progress_summary(
        &self,
        link_id: &str,
        visibility: &Visibility,
    ) -> Result<ProgressSummary, CorruptEntry> {
        let list = self.progress_summary_parts(link_id, visibility);
        let list = list.into_iter().map(DetachedProgress::progress).collect::<Result<_, _>>()?;
        Ok(progress_summary(link_id, list))
    }

    /// The progress of every agenda with `link_id` that `visibility` sees, in `addedTime`
    /// order, taken out to be decoded and summed up ([`pop_domain::rollup::progress_summary`])
    /// once the read lock is released.
    pub fn progress_summary_parts(
        &self,
        link_id: &str,
        visibility: &Visibility,
    ) -> Vec<DetachedProgress> {
        self.progress_summary_parts_within(link_id, visibility, usize::MAX).unwrap_or_default()
    }

    /// [`AgendaModel::progress_summary_parts`] when the batch may hold at most `max` agendas
    /// (counting the keys it walks, before any is copied); `None` past it.
    pub fn progress_summary_parts_within(
        &self,
        link_id: &str,
        visibility: &Visibility,
        max: usize,
    ) -> Option<Vec<DetachedProgress>> {
        let mut keys: Vec<&Key> = Vec::new();
        let mut parts = 0;
        // One past `max` is enough to say no: a large batch is not walked whole under the lock
        // only to be refused (review of 2026-12-07).
        let room = |keys: &Vec<&Key>| max.saturating_add(1).saturating_sub(keys.len());
        if let Some(set) = self.by_link.get(link_id) {
            for group in groups_seen(&set.grouped, visibility) {
                let before = keys.len();
                keys.extend(group_range(&set.grouped, &group).take(room(&keys)));
                parts += usize::from(keys.len() > before);
            }
            parts += usize::from(!set.odd.is_empty());
            keys.extend(set.odd.iter().take(room(&keys)));
        }
        if keys.len() > max {
            return None;
        }
        // In `addedTime` order across the customers' groups (each one already is).
        if parts > 1 {
            keys.sort_unstable();
        }
        let mut list = Vec::with_capacity(keys.len());
        for (_, id) in keys {
            if let Some(entry) = self.entries.get(id).filter(|e| visibility.sees(e.customer_id())) {
                list.push(entry.detached_progress());
            }
        }
        Some(list)
    }
}

/// The groups of `set` ([`ByCustomer::group`]) that `visibility` may see agendas in: every
/// group for `*`; else its customers' groups (from the smaller side: a caller of thousands of
/// customers and a linkId of one).
fn groups_seen(set: &BTreeSet<ByCustomer>, visibility: &Visibility) -> Vec<String> {
    match visibility {
        Visibility::All => groups_in(set),
        Visibility::Customers(ids) if ids.len() > GROUPS_LOOKED_UP => {
            let wanted: std::collections::BTreeSet<String> =
                ids.iter().map(|c| group_of_customer(c)).collect();
            groups_in(set).into_iter().filter(|g| wanted.contains(g)).collect()
        }
        Visibility::Customers(ids) => ids.iter().map(|c| group_of_customer(c)).collect(),
    }
}

/// Most customers of a caller whose groups are looked up one by one; past it, the set's groups
/// are listed and the caller's kept.
const GROUPS_LOOKED_UP: usize = 64;

/// Where a page's keys come from.
enum Source<'m> {
    /// A set in [`Key`] order.
    Set(&'m BTreeSet<Key>),
    /// One group of a set in [`ByCustomer`] order.
    Group(&'m BTreeSet<ByCustomer>, String),
}

impl<'m> Source<'m> {
    /// The keys after `after` (before it, `descending`), in the walk's direction.
    fn walk(&self, after: Option<&Key>, descending: bool) -> Walk<'m> {
        let from = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        match (self, descending) {
            (Source::Set(set), false) => Walk::Up(set.range::<Key, _>((from, Bound::Unbounded))),
            (Source::Set(set), true) => {
                Walk::Down(set.range::<Key, _>((Bound::Unbounded, from)).rev())
            }
            (Source::Group(set, group), descending) => {
                let lower = Bound::Included(ByCustomer::floor(group, i64::MIN));
                let upper = Bound::Excluded(ByCustomer::past(group));
                let range = match (after, descending) {
                    (None, _) => set.range((lower, upper)),
                    (Some(k), false) => set.range((group_bound(group, k, false), upper)),
                    (Some(k), true) => set.range((lower, group_bound(group, k, true))),
                };
                match descending {
                    false => Walk::GroupUp(range),
                    true => Walk::GroupDown(range.rev()),
                }
            }
        }
    }
}

/// Where cursor `k` cuts `group`'s range: after it (`descending`: before it), exactly, so no
/// key is passed over one by one. A key of the group is a bound itself; any other key falls
/// before or after all of the group's keys of its own time, since those all begin `group/`
/// (and those of other times fall by their time).
fn group_bound(group: &str, k: &Key, descending: bool) -> Bound<ByCustomer> {
    if group_of(&k.1) == group {
        return Bound::Excluded(ByCustomer(k.clone()));
    }
    // Whether the group's keys of the cursor's time come after it.
    let group_after = k.1.bytes().lt(group.bytes().chain(std::iter::once(b'/')));
    // The first time whose keys are all on the far side of the cursor, walking up.
    let first_after = if group_after { Some(k.0) } else { k.0.checked_add(1) };
    match (first_after, descending) {
        (Some(t), false) => Bound::Included(ByCustomer::floor(group, t)),
        (Some(t), true) => Bound::Excluded(ByCustomer::floor(group, t)),
        // Past the last time: nothing after it, everything before it.
        (None, false) => Bound::Included(ByCustomer::past(group)),
        (None, true) => Bound::Excluded(ByCustomer::past(group)),
    }
}

/// Merges the ordered `sources` (disjoint) from after `after` (before it, walking
/// `descending`), keeping entries `pick` admits, up to `limit` of them and at most
/// [`MAX_SCANNED_PER_PAGE`] examined. With `exact_next`, a full page looks ahead for one more
/// admitted entry and gives `next` only if there is one (or if the scan bound stopped the
/// look-ahead). Either direction costs the same: a B-tree range walked from its start or end.
fn merge_page<'m, T>(
    sources: &[Source<'m>],
    after: Option<Key>,
    descending: bool,
    limit: usize,
    exact_next: bool,
    mut pick: impl FnMut(&'m Key) -> Option<T>,
) -> Page<T> {
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    let mut iters: Vec<Walk<'m>> =
        sources.iter().map(|s| s.walk(after.as_ref(), descending)).collect();
    let mut heap: BinaryHeap<Next<'m>> = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(key) = it.next() {
            heap.push(Next { key, source: i, descending });
        }
    }
    let cursor = |key: &Key| Cursor { time: key.0, id: Arc::from(&*key.1) };
    let mut items = Vec::new();
    let mut scanned = 0;
    // The key of the page's last item, once the page is full and looking ahead.
    let mut full_at: Option<&'m Key> = None;
    while let Some(Next { key, source: i, .. }) = heap.pop() {
        if let Some(k) = iters[i].next() {
            heap.push(Next { key: k, source: i, descending });
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

/// One source's walk through its index, forwards or backwards.
enum Walk<'m> {
    Up(btree_set::Range<'m, Key>),
    Down(Rev<btree_set::Range<'m, Key>>),
    GroupUp(btree_set::Range<'m, ByCustomer>),
    GroupDown(Rev<btree_set::Range<'m, ByCustomer>>),
}

impl<'m> Iterator for Walk<'m> {
    type Item = &'m Key;

    fn next(&mut self) -> Option<&'m Key> {
        match self {
            Walk::Up(range) => range.next(),
            Walk::Down(range) => range.next(),
            Walk::GroupUp(range) => range.next().map(|k| &k.0),
            Walk::GroupDown(range) => range.next().map(|k| &k.0),
        }
    }
}

/// A source's next key in the merge; the heap pops the one that comes first in the walk's
/// direction (the smallest walking up, the largest walking down).
struct Next<'m> {
    key: &'m Key,
    source: usize,
    descending: bool,
}

impl Ord for Next<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_key = match self.descending {
            true => self.key.cmp(other.key),
            false => other.key.cmp(self.key),
        };
        by_key.then_with(|| other.source.cmp(&self.source))
    }
}

impl PartialOrd for Next<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Next<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Next<'_> {}
