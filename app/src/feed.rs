//! The subscribers' view of the projections' change feed: one [`Dispatcher`] per process
//! receives each change once and routes it by key to the subscribers that follow that key,
//! each into a bounded buffer of its own, with an explicit [`FeedItem::Lagged`] whenever
//! something a subscriber cares about may have been dropped — never a silent loss.
//!
//! Routing: a subscriber registers under one [`Key`] (an AgendaProgress id, an agenda id, a
//! customer or a linkId) with a filter (the subscription's target and the caller's
//! visibility). For each change the dispatcher looks up the subscribers of the change's keys
//! only, applies each one's filter, and queues an `Arc` of the change: a change costs
//! O(its subscribers), not O(all subscribers), and is never deep-cloned per subscriber.
//!
//! Lag: two things can drop changes. A subscriber's buffer is full (it consumes more slowly
//! than changes arrive): the dispatcher never waits for it, it counts the change as missed.
//! Or the dispatcher itself fell behind the broadcast (`RecvError::Lagged`, which also counts
//! changes nobody follows: it cannot know, so every subscriber is told). Either way the
//! subscriber gets one `Lagged` item with the count, queued behind the changes it already
//! has; the subscription then re-reads the current state from the read models, which hold
//! every effect of the dropped changes (the runner's contract: a change is published after it
//! is applied). To always have room for that item, each buffer has one slot more than the
//! changes it may hold, and at most one lag marker is queued at a time; the count itself
//! lives beside the buffer, so changes dropped after the marker was queued are still counted
//! in it.
//!
//! Leaving: dropping a [`FeedReceiver`] (the subscription stream was dropped) unregisters it
//! at once; the dispatcher does no per-change liveness polling.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use pop_projections::Change;
use tokio::sync::{broadcast, mpsc};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    /// A change the subscriber's filter admitted, shared with every other subscriber of it.
    Change(Arc<Change>),
    /// At least `missed` changes (possibly of interest) were dropped since the last item.
    Lagged { missed: u64 },
}

/// What a subscriber follows: the one key of a change its subscription is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An AgendaProgress, by its id (`Change::progress_id`).
    Progress(Arc<str>),
    /// An agenda, by its own id (`Change::agenda_id`).
    Agenda(Arc<str>),
    /// Every change of a customer (`Change::customer_id`).
    Customer(Arc<str>),
    /// Every change of agendas sharing a linkId (`Change::link_id`).
    Link(Arc<str>),
    /// Every change of the agendas of one insight (`Change::insight_id`): what a waiting
    /// `getAgenda` follows.
    Insight(Arc<str>),
}

impl Key {
    /// The keys a change may be followed under: at most one of each kind.
    fn of(change: &Change) -> impl Iterator<Item = Key> {
        [
            change.progress_id.clone().map(Key::Progress),
            change.agenda_id.clone().map(Key::Agenda),
            Some(Key::Customer(Arc::clone(&change.customer_id))),
            change.link_id.clone().map(Key::Link),
            change.insight_id.clone().map(Key::Insight),
        ]
        .into_iter()
        .flatten()
    }
}

/// Whose changes a subscriber's filter can admit: the dispatcher visits it only for those
/// (hostile24: 10,000 follows of another customer's linkId, none admitting anything, were each
/// asked about every change of that customer's batch under the registry's lock, and its own
/// follow waited 24–58 ms per change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Any customer's (an admin's follow; a waiting `getAgenda` of a shared insight).
    Any,
    /// Only these customers' (exact ids, as [`pop_projections::Visibility::sees`] compares);
    /// none: the follow can receive nothing (it names a customer its principal does not see).
    Customers(Vec<Arc<str>>),
    /// Only the customers of a large set, shared by the follows of one `group` (a principal):
    /// the set is looked up once per change for the whole group, and only the follows of a
    /// group whose set holds the change's customer are asked (hostile25: a token of 65
    /// customers was filed as "any").
    Group { group: Arc<str>, customers: Arc<std::collections::BTreeSet<String>> },
}

/// Why a subscriber could not join the feed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("the server already follows {max} subscriptions, the most it may")]
    Full { max: usize },
    /// An owner (a principal, or a customer with all its principals together) already holds
    /// its share of the server's subscriptions; `owner` names it as the error says it.
    #[error("{owner} already has {max} subscriptions, its share of the server's")]
    ShareFull { owner: String, max: usize },
}

/// The process's one reader of the change feed. Cheap to share behind the API's services.
pub struct Dispatcher {
    registry: Arc<Mutex<Registry>>,
    /// Changes one subscriber may have queued (its buffer holds one more slot, for the lag
    /// marker).
    capacity: usize,
    max_subscribers: usize,
    /// Most subscribers one owner may have registered at once ([`Dispatcher::register_for`]).
    max_per_owner: usize,
    /// Joins the projections' broadcast; called once, when the first subscriber registers
    /// (inside the runtime), so no receiver sits unread before anyone listens.
    subscribe: Box<dyn Fn() -> broadcast::Receiver<Change> + Send + Sync>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("capacity", &self.capacity)
            .field("max_subscribers", &self.max_subscribers)
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over the broadcast `subscribe` joins, giving each subscriber a buffer of
    /// `capacity` changes (at least 1) and admitting at most `max_subscribers` at once.
    pub fn new<S>(capacity: usize, max_subscribers: usize, subscribe: S) -> Dispatcher
    where
        S: Fn() -> broadcast::Receiver<Change> + Send + Sync + 'static,
    {
        Dispatcher {
            registry: Arc::new(Mutex::new(Registry::default())),
            capacity: capacity.max(1),
            max_subscribers,
            max_per_owner: max_subscribers,
            subscribe: Box::new(subscribe),
        }
    }

    /// The dispatcher admitting at most `max_per_owner` subscribers of one owner at once
    /// (its share of `max_subscribers`), so one owner cannot fill the whole bound.
    pub fn with_share(mut self, max_per_owner: usize) -> Dispatcher {
        self.max_per_owner = max_per_owner.max(1);
        self
    }

    /// As [`Dispatcher::register`], counting the subscriber against the share of each of
    /// `owners` (refused if any holds its share already: a principal, and each customer it
    /// follows for, so many tokens of one customer share one customer's share), and
    /// visiting it only for changes of the customers `scope` names.
    pub fn register_for<F>(
        &self,
        owners: &[String],
        key: Key,
        scope: Scope,
        keep: F,
    ) -> Result<FeedReceiver, FeedError>
    where
        F: Fn(&Change) -> bool + Send + 'static,
    {
        self.join(owners, key, scope, keep)
    }

    /// Registers a subscriber of `key` whose filter is `keep`; from now on every change
    /// published with that key and admitted by `keep` is queued for it. Must be called inside
    /// a tokio runtime (the first call starts the dispatching task).
    pub fn register<F>(&self, key: Key, keep: F) -> Result<FeedReceiver, FeedError>
    where
        F: Fn(&Change) -> bool + Send + 'static,
    {
        self.join(&[], key, Scope::Any, keep)
    }

    fn join<F>(
        &self,
        owners: &[String],
        key: Key,
        scope: Scope,
        keep: F,
    ) -> Result<FeedReceiver, FeedError>
    where
        F: Fn(&Change) -> bool + Send + 'static,
    {
        let mut registry = lock(&self.registry);
        if registry.subscribers.len() >= self.max_subscribers {
            return Err(FeedError::Full { max: self.max_subscribers });
        }
        if let Some(full) = owners.iter().find(|owner| {
            registry.per_owner.get(owner.as_str()).copied().unwrap_or(0) >= self.max_per_owner
        }) {
            return Err(FeedError::ShareFull { owner: full.clone(), max: self.max_per_owner });
        }
        let owners: Vec<Arc<str>> = owners.iter().map(|o| Arc::from(o.as_str())).collect();
        // One slot more than the changes it may hold: room for the lag marker.
        let (tx, rx) = mpsc::channel(self.capacity.saturating_add(1));
        let missed = Arc::new(AtomicU64::new(0));
        let id = registry.next_id;
        registry.next_id += 1;
        let subscriber = Subscriber {
            owners,
            key,
            scope,
            keep: Box::new(keep),
            tx,
            missed: Arc::clone(&missed),
        };
        match registry.state {
            // The feed is over: the receiver ends at once, as the subscription should.
            Dispatch::Closed => drop(subscriber),
            Dispatch::Running => registry.insert(id, subscriber),
            Dispatch::NotStarted => {
                // Joined under the lock, before the first subscriber is in the maps: every
                // change published from here on reaches the dispatcher after this subscriber
                // is registered, so nothing between its initial read and its first change
                // is lost.
                let feed = (self.subscribe)();
                tokio::spawn(dispatch(feed, Arc::downgrade(&self.registry)));
                registry.state = Dispatch::Running;
                registry.insert(id, subscriber);
            }
        }
        Ok(FeedReceiver { id, rx, missed, registry: Arc::downgrade(&self.registry) })
    }

    /// How many subscribers are registered.
    pub fn subscribers(&self) -> usize {
        lock(&self.registry).subscribers.len()
    }
}

/// One subscriber's end of the feed. Dropping it unregisters the subscriber.
#[derive(Debug)]
pub struct FeedReceiver {
    id: u64,
    rx: mpsc::Receiver<Slot>,
    /// Changes dropped since the last lag marker was taken (shared with the dispatcher).
    missed: Arc<AtomicU64>,
    registry: Weak<Mutex<Registry>>,
}

impl FeedReceiver {
    /// The next item; `None` once the feed has closed.
    pub async fn recv(&mut self) -> Option<FeedItem> {
        let slot = self.rx.recv().await?;
        Some(self.item(slot))
    }

    /// What `slot` says; taking a lag marker's count re-arms it: the next drop queues a new one.
    fn item(&self, slot: Slot) -> FeedItem {
        match slot {
            Slot::Change(change) => FeedItem::Change(change),
            Slot::Lagged => {
                FeedItem::Lagged { missed: self.missed.swap(0, Ordering::AcqRel).max(1) }
            }
        }
    }
}

impl FeedReceiver {
    /// The next item if one is queued already, without waiting (a follow that has fallen
    /// behind takes what is buffered to render it once).
    pub fn try_recv(&mut self) -> Option<FeedItem> {
        let slot = self.rx.try_recv().ok()?;
        Some(self.item(slot))
    }

    /// Drops every item already queued (a waiter that re-reads the read models anyway needs
    /// only the latest wake-up, not each change).
    pub fn skip_queued(&mut self) {
        while let Ok(slot) = self.rx.try_recv() {
            if let Slot::Lagged = slot {
                // As `recv` does: taking the marker re-arms it.
                self.missed.swap(0, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for FeedReceiver {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            lock(&registry).remove(self.id);
        }
    }
}

/// What a subscriber's buffer holds.
#[derive(Debug)]
enum Slot {
    Change(Arc<Change>),
    /// Changes were dropped; how many is in the subscriber's `missed` counter.
    Lagged,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    #[default]
    NotStarted,
    Running,
    /// The broadcast closed (the projections are gone); nothing more will come.
    Closed,
}

/// Who follows what. Guarded by one mutex: the dispatcher holds it for one change's
/// deliveries (non-blocking `try_send`s), subscribers for one insert or remove.
#[derive(Default)]
struct Registry {
    state: Dispatch,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    by_key: HashMap<Key, Bucket>,
    /// Subscribers registered per owner (only owners with at least one).
    per_owner: HashMap<Arc<str>, usize>,
}

/// The subscribers of one key: those of any customer's changes, and those of only some
/// customers', by customer.
#[derive(Default)]
struct Bucket {
    any: HashSet<u64>,
    of: HashMap<Arc<str>, HashSet<u64>>,
    groups: HashMap<Arc<str>, Group>,
}

/// The follows of one [`Scope::Group`] under a key.
struct Group {
    customers: Arc<std::collections::BTreeSet<String>>,
    ids: HashSet<u64>,
}

impl Bucket {
    fn insert(&mut self, id: u64, scope: &Scope) {
        match scope {
            Scope::Any => {
                self.any.insert(id);
            }
            Scope::Customers(customers) => {
                for customer in customers {
                    self.of.entry(Arc::clone(customer)).or_default().insert(id);
                }
            }
            Scope::Group { group, customers } => {
                let group = self.groups.entry(Arc::clone(group)).or_insert_with(|| Group {
                    customers: Arc::clone(customers),
                    ids: HashSet::new(),
                });
                group.ids.insert(id);
            }
        }
    }

    fn remove(&mut self, id: u64, scope: &Scope) {
        match scope {
            Scope::Any => {
                self.any.remove(&id);
            }
            Scope::Customers(customers) => {
                for customer in customers {
                    if let Some(ids) = self.of.get_mut(customer) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.of.remove(customer);
                        }
                    }
                }
            }
            Scope::Group { group, .. } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.ids.remove(&id);
                    if g.ids.is_empty() {
                        self.groups.remove(group);
                    }
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.any.is_empty() && self.of.is_empty() && self.groups.is_empty()
    }

    /// The subscribers a change of `customer` may concern.
    fn of_customer<'b>(&'b self, customer: &'b str) -> impl Iterator<Item = &'b u64> {
        let grouped = self
            .groups
            .values()
            .filter(move |g| g.customers.contains(customer))
            .flat_map(|g| g.ids.iter());
        self.any.iter().chain(self.of.get(customer).into_iter().flatten()).chain(grouped)
    }
}

struct Subscriber {
    owners: Vec<Arc<str>>,
    key: Key,
    scope: Scope,
    keep: Box<dyn Fn(&Change) -> bool + Send>,
    tx: mpsc::Sender<Slot>,
    missed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("state", &self.state)
            .field("subscribers", &self.subscribers.len())
            .field("keys", &self.by_key.len())
            .finish()
    }
}

impl Registry {
    fn insert(&mut self, id: u64, subscriber: Subscriber) {
        self.by_key.entry(subscriber.key.clone()).or_default().insert(id, &subscriber.scope);
        for owner in &subscriber.owners {
            *self.per_owner.entry(Arc::clone(owner)).or_default() += 1;
        }
        self.subscribers.insert(id, subscriber);
    }

    fn remove(&mut self, id: u64) {
        let Some(subscriber) = self.subscribers.remove(&id) else { return };
        for owner in &subscriber.owners {
            if let Some(count) = self.per_owner.get_mut(owner) {
                *count -= 1;
                if *count == 0 {
                    self.per_owner.remove(owner);
                }
            }
        }
        if let Some(bucket) = self.by_key.get_mut(&subscriber.key) {
            bucket.remove(id, &subscriber.scope);
            if bucket.is_empty() {
                self.by_key.remove(&subscriber.key);
            }
        }
    }

    /// Queues `change` for every subscriber of its keys whose filter admits it.
    fn deliver(&mut self, change: Change) {
        let change = Arc::new(change);
        let mut gone = Vec::new();
        for key in Key::of(&change) {
            let Some(bucket) = self.by_key.get(&key) else { continue };
            for id in bucket.of_customer(&change.customer_id) {
                let Some(subscriber) = self.subscribers.get(id) else { continue };
                if !(subscriber.keep)(&change) {
                    continue;
                }
                if !subscriber.offer(&change) {
                    gone.push(*id);
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// The dispatcher missed `n` changes of the broadcast: every subscriber may have.
    fn lagged(&mut self, n: u64) {
        let gone: Vec<u64> =
            self.subscribers.iter().filter(|(_, s)| !s.dropped(n)).map(|(id, _)| *id).collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// The feed closed: drop every sender so each subscription ends.
    fn close(&mut self) {
        self.state = Dispatch::Closed;
        self.subscribers.clear();
        self.by_key.clear();
        self.per_owner.clear();
    }
}

impl Subscriber {
    /// Queues a change, or counts it missed when the buffer is full; `false` when the
    /// subscriber has gone.
    fn offer(&self, change: &Arc<Change>) -> bool {
        // Only the dispatcher sends, so the capacity seen here cannot shrink before the send.
        // A change never takes the last free slot: that one is kept for the lag marker.
        if self.tx.capacity() < 2 {
            return self.dropped(1);
        }
        match self.tx.try_send(Slot::Change(Arc::clone(change))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped(1),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Counts `n` missed changes and queues the lag marker unless one is already queued;
    /// `false` when the subscriber has gone.
    fn dropped(&self, n: u64) -> bool {
        if self.missed.fetch_add(n, Ordering::AcqRel) > 0 {
            // A marker is queued and not yet taken: it will report these too.
            return !self.tx.is_closed();
        }
        // The counter was zero, so no marker is queued, and changes always leave one slot
        // free: the marker fits.
        debug_assert!(self.tx.is_closed() || self.tx.capacity() >= 1, "no room for the marker");
        match self.tx.try_send(Slot::Lagged) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Unreachable by the slot reserved above; should it happen, the subscriber
                // would wait for a marker that never comes, so say so loudly.
                tracing::error!("a subscriber's lag marker did not fit its buffer");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The dispatching task: receives each change once and routes it. Ends when the broadcast
/// closes or the dispatcher (and every subscriber) is gone.
async fn dispatch(mut feed: broadcast::Receiver<Change>, weak: Weak<Mutex<Registry>>) {
    loop {
        let next = feed.recv().await;
        let Some(shared) = weak.upgrade() else { return };
        let mut registry = lock(&shared);
        match next {
            Ok(change) => registry.deliver(change),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "the subscription dispatcher lagged on the change feed");
                registry.lagged(n);
            }
            Err(broadcast::error::RecvError::Closed) => {
                registry.close();
                return;
            }
        }
    }
}

/// The registry, also after a panic elsewhere while it was held: every operation on it leaves
/// it consistent (maps are updated together, nothing runs user code between them but the
/// filters, which only read).
fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use pop_projections::ChangeKind;
    use pop_store::Position;

    use super::*;

    fn change(n: u64, customer: &str) -> Change {
        Change {
            position: Position::from_sequence(n),
            kind: ChangeKind::Agenda,
            id: Arc::from(format!("{customer}/a{n}")),
            agenda_id: Some(Arc::from(format!("a{n}"))),
            customer_id: Arc::from(customer),
            progress_id: None,
            link_id: None,
            insight_id: None,
            processing_state: None,
            phase: None,
            operations: Vec::new(),
            removed: false,
            event_type: "AgendaQueued",
        }
    }

    fn dispatcher(feed: &broadcast::Sender<Change>, capacity: usize) -> Dispatcher {
        let feed = feed.clone();
        Dispatcher::new(capacity, 16, move || feed.subscribe())
    }

    fn customer(name: &str) -> Key {
        Key::Customer(Arc::from(name))
    }

    fn describe(item: &FeedItem) -> String {
        match item {
            FeedItem::Change(c) => format!("change {}", c.position),
            FeedItem::Lagged { missed } => format!("lagged {missed}"),
        }
    }

    /// On the current-thread runtime the dispatcher runs only when the test awaits, so the
    /// interleaving is fixed: every send below happens before the dispatcher sees any of it.
    #[tokio::test]
    async fn a_full_buffer_becomes_one_lagged_item_then_changes_continue() {
        let (tx, _) = broadcast::channel(64);
        let feed = dispatcher(&tx, 2);
        let mut items = feed.register(customer("acme"), |_| true).expect("registered");
        for n in 1..=5 {
            tx.send(change(n, "acme")).unwrap();
            tx.send(change(100 + n, "other")).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(describe(&items.recv().await.expect("an item")));
        }
        assert_eq!(seen, ["change 1", "change 2", "lagged 3"]);
        tx.send(change(6, "acme")).unwrap();
        assert_eq!(describe(&items.recv().await.expect("an item")), "change 6");
    }

    /// A follow scoped to its customers is not asked about another customer's changes under
    /// its key (hostile24: every follow of a linkId was, whatever it could admit).
    #[tokio::test]
    async fn a_scoped_subscriber_is_asked_only_about_its_customers_changes() {
        let (tx, _) = broadcast::channel(64);
        let feed = dispatcher(&tx, 16);
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&asked);
        let link = Key::Link(Arc::from("l1"));
        let scope = Scope::Customers(vec![Arc::from("acme")]);
        let mut items = feed
            .register_for(&["acme-user".to_string()], link.clone(), scope, move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                true
            })
            .unwrap();
        let mut any = feed.register(link, |_| true).unwrap();
        for (n, customer) in [(1, "globex"), (2, "globex"), (3, "acme")] {
            let mut c = change(n, customer);
            c.link_id = Some(Arc::from("l1"));
            tx.send(c).unwrap();
        }
        assert_eq!(describe(&items.recv().await.expect("an item")), "change 3");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked about globex's changes");
        // An unscoped subscriber of the key still gets every customer's.
        for n in 1..=3 {
            assert_eq!(describe(&any.recv().await.expect("an item")), format!("change {n}"));
        }
        drop(items);
        drop(any);
        assert!(lock(&feed.registry).by_key.is_empty(), "an empty bucket stayed in the index");
    }

    /// The follows of a principal of many customers are asked about a change only when the
    /// change is of one of them (hostile25), and one of no customer never.
    #[tokio::test]
    async fn a_grouped_or_empty_scope_is_asked_only_about_its_customers_changes() {
        let (tx, _) = broadcast::channel(64);
        let feed = dispatcher(&tx, 16);
        let asked = Arc::new(AtomicUsize::new(0));
        let link = Key::Link(Arc::from("l1"));
        let customers: std::collections::BTreeSet<String> =
            (0..65).map(|i| format!("c{i:02}")).collect();
        let group = Scope::Group { group: Arc::from("many"), customers: Arc::new(customers) };
        let mut followed = Vec::new();
        for scope in [group.clone(), group, Scope::Customers(Vec::new())] {
            let counted = Arc::clone(&asked);
            followed.push(
                feed.register_for(&["many".to_string()], link.clone(), scope, move |_| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    true
                })
                .unwrap(),
            );
        }
        for (n, customer) in [(1, "globex"), (2, "c07")] {
            let mut c = change(n, customer);
            c.link_id = Some(Arc::from("l1"));
            tx.send(c).unwrap();
        }
        for items in &mut followed[..2] {
            assert_eq!(describe(&items.recv().await.expect("an item")), "change 2");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "asked about globex's change, or twice");
        drop(followed);
        assert!(lock(&feed.registry).by_key.is_empty(), "an empty group stayed in the index");
    }

    #[tokio::test]
    async fn a_lagged_broadcast_is_reported_not_swallowed() {
        let (tx, _) = broadcast::channel(2);
        let feed = dispatcher(&tx, 16);
        let mut items = feed.register(customer("acme"), |_| true).expect("registered");
        for n in 1..=5 {
            tx.send(change(n, "acme")).unwrap();
        }
        // The broadcast kept only the last two; the three before them are reported missed.
        assert_eq!(items.recv().await, Some(FeedItem::Lagged { missed: 3 }));
        for n in 4..=5 {
            assert_eq!(items.recv().await, Some(FeedItem::Change(Arc::new(change(n, "acme")))));
        }
    }

    #[tokio::test]
    async fn changes_go_only_to_the_subscribers_of_their_keys_and_filters() {
        let (tx, _) = broadcast::channel(64);
        let feed = dispatcher(&tx, 16);
        let mut by_progress = feed.register(Key::Progress(Arc::from("p1")), |_| true).unwrap();
        let mut by_agenda = feed.register(Key::Agenda(Arc::from("a2")), |_| true).unwrap();
        let mut by_link = feed.register(Key::Link(Arc::from("l1")), |_| true).unwrap();
        // Registered under the key, but its filter (the caller's visibility) says no.
        let mut hidden = feed.register(customer("acme"), |_| false).unwrap();
        let mut c1 = change(1, "acme");
        c1.progress_id = Some(Arc::from("p1"));
        c1.link_id = Some(Arc::from("l1"));
        tx.send(c1).unwrap();
        tx.send(change(2, "acme")).unwrap();
        tx.send(change(3, "globex")).unwrap();
        let mut c4 = change(4, "globex");
        c4.link_id = Some(Arc::from("l1"));
        tx.send(c4).unwrap();
        // A marker change every subscriber follows, so each can be read up to it.
        let mut last = change(9, "acme");
        last.id = Arc::from("acme/a2");
        last.agenda_id = Some(Arc::from("a2"));
        last.progress_id = Some(Arc::from("p1"));
        last.link_id = Some(Arc::from("l1"));
        tx.send(last).unwrap();
        // Bounded, so a change that never arrives fails the test instead of hanging it.
        async fn positions(items: &mut FeedReceiver) -> Vec<String> {
            tokio::time::timeout(std::time::Duration::from_secs(10), read_to_marker(items))
                .await
                .expect("the marker change arrived")
        }
        async fn read_to_marker(items: &mut FeedReceiver) -> Vec<String> {
            let mut seen = Vec::new();
            loop {
                let item = describe(&items.recv().await.expect("an item"));
                let done = item == "change 9";
                seen.push(item);
                if done {
                    return seen;
                }
            }
        }
        assert_eq!(positions(&mut by_progress).await, ["change 1", "change 9"]);
        assert_eq!(positions(&mut by_agenda).await, ["change 2", "change 9"]);
        assert_eq!(positions(&mut by_link).await, ["change 1", "change 4", "change 9"]);
        assert!(hidden.rx.try_recv().is_err(), "a filtered-out subscriber got something");
    }

    #[tokio::test]
    async fn a_dropped_subscriber_is_unregistered_at_once() {
        let (tx, _) = broadcast::channel(4);
        let feed = dispatcher(&tx, 1);
        let items = feed.register(customer("acme"), |_| true).expect("registered");
        assert_eq!(feed.subscribers(), 1);
        drop(items);
        assert_eq!(feed.subscribers(), 0);
        assert!(lock(&feed.registry).by_key.is_empty(), "an empty key stayed in the index");
    }

    #[tokio::test]
    async fn past_the_subscriber_limit_registration_is_refused() {
        let (tx, _) = broadcast::channel(4);
        let feed = tx.clone();
        let feed = Dispatcher::new(1, 2, move || feed.subscribe());
        let _a = feed.register(customer("acme"), |_| true).expect("first");
        let b = feed.register(customer("acme"), |_| true).expect("second");
        assert_eq!(
            feed.register(customer("acme"), |_| true).map(|_| ()),
            Err(FeedError::Full { max: 2 })
        );
        drop(b);
        assert!(feed.register(customer("acme"), |_| true).is_ok(), "room again after a leave");
    }

    #[tokio::test]
    async fn one_owner_holds_at_most_its_share() {
        let (tx, _) = broadcast::channel(4);
        let feed = tx.clone();
        let feed = Dispatcher::new(1, 10, move || feed.subscribe()).with_share(2);
        let owners = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mallory = owners(&["mallory", "customer globex"]);
        let join = |who: &[String]| {
            feed.register_for(who, customer("acme"), Scope::Any, |_| true).map(drop)
        };
        let a = feed.register_for(&mallory, customer("acme"), Scope::Any, |_| true).expect("1");
        let _b = feed.register_for(&mallory, customer("acme"), Scope::Any, |_| true).expect("2");
        assert_eq!(join(&mallory), Err(FeedError::ShareFull { owner: "mallory".into(), max: 2 }));
        // Another token of the same customer has the customer's share to itself no more
        // (hostile34: ten tokens of one customer filled the server's whole bound).
        assert_eq!(
            join(&owners(&["mallory-2", "customer globex"])),
            Err(FeedError::ShareFull { owner: "customer globex".into(), max: 2 })
        );
        // Another customer's principal, and a subscriber of no owner, still join.
        let _c = feed
            .register_for(
                &owners(&["alice", "customer acme"]),
                customer("acme"),
                Scope::Any,
                |_| true,
            )
            .expect("another owner");
        let _d = feed.register(customer("acme"), |_| true).expect("no owner");
        drop(a);
        assert!(
            feed.register_for(
                &owners(&["mallory-2", "customer globex"]),
                customer("acme"),
                Scope::Any,
                |_| true
            )
            .is_ok(),
            "room again"
        );
    }

    #[tokio::test]
    async fn a_closed_feed_ends_every_subscriber() {
        let (tx, _) = broadcast::channel(4);
        let feed = dispatcher(&tx, 4);
        let mut items = feed.register(customer("acme"), |_| true).expect("registered");
        drop(feed);
        // The dispatcher holds the registry weakly; with the Dispatcher gone it is kept
        // alive only by subscribers. Closing the broadcast ends the task either way.
        drop(tx);
        assert_eq!(items.recv().await, None);
    }
}
