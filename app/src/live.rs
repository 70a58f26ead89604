//! Following agendas as they change (the dashboards' use case): one AgendaProgress by id,
//! every agenda of a customer or of a linkId, and the operation progress of one agenda. A
//! follow is fed from the projections' change feed — never from the command path — so it
//! announces only what is durable and applied, and sees the writes of every replica sharing
//! the log.
//!
//! On each relevant change the follow reads the object's *current* state from the read models
//! and yields it, tagged with the change's position. Each follower has a bounded buffer
//! ([`crate::feed`]); when it falls behind it yields one item with `lagged: true` and then the
//! current state of everything it may have missed (`resync: true`): for one agenda that is the
//! agenda; for a customer or a linkId it is every agenda the log says changed since the last
//! position delivered (bounded by [`MAX_RESYNC_SCAN`] events and [`MAX_RESYNC_ITEMS`] agendas,
//! else `truncated`). `after_position` resumes the same way.
//!
//! Tenancy: changes are filtered by the caller's customers before they enter the buffer, and
//! every re-read checks visibility again.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures::Stream;
use pop_domain::agenda::CATEGORY as AGENDA_CATEGORY;
use pop_domain::model::{AgendaProgress, OperationProgress};
use pop_projections::{AgendaEntry, Change, ChangeKind, ReadModels, Visibility};
use pop_store::{Position, StoreError};

use crate::App;
use crate::caller::{Action, Caller, Principal};
use crate::error::{AppError, AppResult, Code};
use crate::feed::{FeedError, FeedItem, FeedReceiver, Key, Scope};
use crate::limits::{MAX_BUFFERED_PER_ITEM, MAX_RESYNC_ITEMS, MAX_RESYNC_SCAN};
use crate::resolve::{ambiguous, may_touch};

/// Events read per log query while looking for changed agendas.
const RESYNC_READ_BATCH: usize = 1_000;

/// What a follow follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One AgendaProgress, by its id; of one customer when it names one (ids are chosen per
    /// customer), else of the one customer whose agenda of that id it shows (see [`Pin`]).
    Progress(String, Option<String>),
    /// Every agenda of a customer.
    Customer(String),
    /// Every visible agenda sharing a linkId; of one customer when it names one (linkIds are
    /// chosen per customer: another tenant's agendas under the same linkId are not the batch).
    Link(String, Option<String>),
    /// The operation progress of one agenda, by agenda id; of one customer as for `Progress`.
    Operations(String, Option<String>),
}

impl Target {
    fn admits(&self, c: &Change, principal: &Principal) -> bool {
        c.kind == ChangeKind::Agenda
            && principal.sees(&c.customer_id)
            && match self {
                Target::Progress(id, _) => c.progress_id.as_deref() == Some(id.as_str()),
                Target::Customer(customer) => c.customer_id.as_ref() == customer.as_str(),
                Target::Link(link, customer) => {
                    c.link_id.as_deref() == Some(link.as_str())
                        && customer.as_deref().is_none_or(|cu| c.customer_id.as_ref() == cu)
                }
                Target::Operations(agenda, _) => c.agenda_id.as_deref() == Some(agenda.as_str()),
            }
    }

    /// Like [`Target::admits`], of an agenda of the read models: the caller's customers' only
    /// (a lease holder of another customer's agenda reads it by id; a follow of it would get
    /// its starting state and then nothing, the changes being filtered by customer: hostile12).
    fn admits_entry(&self, e: &AgendaEntry, principal: &Principal) -> bool {
        principal.sees(e.customer_id())
            && match self {
                Target::Progress(id, _) => e.progress_id() == id,
                Target::Customer(customer) => e.customer_id() == customer,
                Target::Link(link, customer) => {
                    e.link_id() == Some(link.as_str())
                        && customer.as_deref().is_none_or(|cu| e.customer_id() == cu)
                }
                Target::Operations(agenda, _) => e.id() == agenda,
            }
    }

    /// The one key of a change this target follows: the dispatcher routes by it, and
    /// [`Target::admits`] still decides (kind and visibility included).
    fn key(&self) -> Key {
        match self {
            Target::Progress(id, _) => Key::Progress(Arc::from(id.as_str())),
            Target::Customer(customer) => Key::Customer(Arc::from(customer.as_str())),
            Target::Link(link, _) => Key::Link(Arc::from(link.as_str())),
            Target::Operations(agenda, _) => Key::Agenda(Arc::from(agenda.as_str())),
        }
    }

    /// The customers whose changes this target's follow by `principal` can admit: the one it
    /// names (none when the principal does not see it: hostile25 filed 10,000 follows naming
    /// another customer under that customer), else the principal's, else (an admin) any.
    fn scope(&self, principal: &Principal) -> Scope {
        /// Past this many customers a principal's follows share one set ([`Scope::Group`])
        /// instead of an entry per customer each.
        const MAX_LISTED_CUSTOMERS: usize = 16;
        let named = match self {
            Target::Customer(customer) => Some(customer.as_str()),
            _ => self.named_customer(),
        };
        match (named, &principal.customers) {
            (Some(customer), _) if principal.sees(customer) => {
                Scope::Customers(vec![Arc::from(customer)])
            }
            (Some(_), _) => Scope::Customers(Vec::new()),
            (None, Visibility::Customers(ids)) if ids.len() <= MAX_LISTED_CUSTOMERS => {
                Scope::Customers(ids.iter().map(|c| Arc::from(c.as_str())).collect())
            }
            (None, Visibility::Customers(ids)) => Scope::Group {
                group: Arc::from(principal.name.as_str()),
                customers: Arc::new(ids.clone()),
            },
            (None, Visibility::All) => Scope::Any,
        }
    }

    /// Whether finding what changed needs the log (groups) or just the one object.
    fn is_group(&self) -> bool {
        matches!(self, Target::Customer(_) | Target::Link(..))
    }

    /// The field naming what is followed, for errors.
    fn field(&self) -> &'static str {
        match self {
            Target::Progress(..) => "id",
            Target::Customer(_) => "customerId",
            Target::Link(..) => "linkId",
            Target::Operations(..) => "agendaId",
        }
    }

    fn id(&self) -> &str {
        match self {
            Target::Progress(s, _)
            | Target::Customer(s)
            | Target::Link(s, _)
            | Target::Operations(s, _) => s,
        }
    }

    /// The customer a follow of one object names.
    fn named_customer(&self) -> Option<&str> {
        match self {
            Target::Progress(_, c) | Target::Operations(_, c) | Target::Link(_, c) => c.as_deref(),
            Target::Customer(_) => None,
        }
    }
}

/// The one customer whose object a follow of one object (`Progress`, `Operations`) shows. Ids
/// are chosen per customer, so a caller that sees several customers (an admin, the dashboard)
/// following acme's `a1` got another tenant's `a1` mixed in: its changes, a cancel reason that
/// tenant chose, a dashboard header contradicting its own history. The customer is the one the
/// follow names, else the one whose agenda of that id exists when it starts (two: refused,
/// naming `customerId`), else the one whose agenda of that id appears first.
#[derive(Debug, Default)]
struct Pin {
    customer: std::sync::OnceLock<String>,
    /// Set once the follow has chosen at its start ([`Follow::pin_at_start`]): before, a change
    /// is let through unpinned (what is shown is decided when it is rendered).
    started: std::sync::atomic::AtomicBool,
}

impl Pin {
    fn of(customer: Option<&str>) -> Pin {
        let pin = Pin::default();
        if let Some(c) = customer {
            let _ = pin.customer.set(c.to_string());
        }
        pin
    }

    /// Whether a change of `customer`'s agenda is followed, pinning the follow to it when it
    /// has started with nothing pinned (the dispatcher's filter: it sees each change first).
    fn admits(&self, customer: &str) -> bool {
        if !self.started.load(std::sync::atomic::Ordering::Acquire) {
            return self.shows(customer);
        }
        self.takes(customer)
    }

    /// Whether `customer`'s agenda is what the follow shows (nothing pinned: any).
    fn shows(&self, customer: &str) -> bool {
        self.customer.get().is_none_or(|c| c == customer)
    }

    /// [`Pin::shows`], pinning to `customer` when nothing is pinned yet.
    fn takes(&self, customer: &str) -> bool {
        self.customer.get_or_init(|| customer.to_string()) == customer
    }
}

/// A turn at producing one follow item: its state read from the read models, then resolved by
/// the transport into its value (GraphQL), which drops the item (and the turn) when it has.
/// One customer's follows (every token of it together; a follow of several customers', its
/// principal's) hold at most [`crate::limits::MAX_DELIVERIES_PER_OWNER`] turns, so what they
/// produce at once is bounded by that, not by how many follows they are (hostile50 H2: 4,000 subscriptions of
/// one customer to 500 KB results built 2.8 GB at once, and another tenant's submit waited
/// 83 s). A follow waiting for its turn falls behind like a slow reader: it lags, then re-sends
/// the current state. Lag markers take no turn. Compares equal to any other (it is not part of
/// what an update says).
#[derive(Debug, Clone, Default)]
pub struct Turn {
    /// Held for its drop, which ends the turn.
    _permit: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl Turn {
    pub(crate) fn of(permit: Option<tokio::sync::OwnedSemaphorePermit>) -> Turn {
        Turn { _permit: permit.map(Arc::new) }
    }
}

impl PartialEq for Turn {
    fn eq(&self, _: &Turn) -> bool {
        true
    }
}

/// An AgendaProgress as it is now (progress follows).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    pub position: Position,
    /// `None` when the agenda is gone (reaped) or no longer visible, or on a lag marker.
    pub progress: Option<AgendaProgress>,
    pub removed: bool,
    /// This item only says that changes were missed (`missed` of them, at least); the current
    /// state of what they touched follows, marked `resync`.
    pub lagged: bool,
    pub missed: u64,
    pub resync: bool,
    /// The resync after a lag did not cover everything (bounds); re-list to be sure.
    pub truncated: bool,
    /// Held until the transport drops the update ([`Turn`]).
    pub turn: Turn,
}

/// The operation progress entries one change touched (operation follows).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationsUpdate {
    pub position: Position,
    pub agenda_id: String,
    pub operation_progress: Vec<OperationProgress>,
    /// Operations that no longer exist (removed by a rerun).
    pub removed_operations: Vec<String>,
    pub lagged: bool,
    pub missed: u64,
    pub resync: bool,
    /// Held until the transport drops the update ([`Turn`]).
    pub turn: Turn,
}

/// One item of a follow.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Progress(Box<ProgressUpdate>),
    Operations(OperationsUpdate),
}

impl Update {
    fn with_turn(mut self, turn: Turn) -> Update {
        match &mut self {
            Update::Progress(p) => p.turn = turn,
            Update::Operations(o) => o.turn = turn,
        }
        self
    }
}

fn progress_update(position: Position, progress: Option<AgendaProgress>, resync: bool) -> Update {
    Update::Progress(Box::new(ProgressUpdate {
        position,
        removed: progress.is_none(),
        progress,
        lagged: false,
        missed: 0,
        resync,
        truncated: false,
        turn: Turn::default(),
    }))
}

/// What a follow has to yield next: an item made already (a lag marker), or a state read when
/// its turn comes: the followed object's (its start, or its resync after a lag), or an agenda
/// of a group's resync (500 of them read at once, per lagging follow, was the memory of every
/// follow's share at once).
#[derive(Debug)]
enum Queued {
    Ready(Update),
    Current { position: Position },
    Resync { id: String, position: Position },
}

/// Counts the follow in the active-subscriptions gauge while it lives.
struct ActiveGuard;

/// Live follows being served (all transports).
pub const SUBSCRIPTIONS_ACTIVE: &str = "pop_api_subscriptions_active";

impl ActiveGuard {
    fn new() -> ActiveGuard {
        metrics::gauge!(SUBSCRIPTIONS_ACTIVE).increment(1.0);
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::gauge!(SUBSCRIPTIONS_ACTIVE).decrement(1.0);
    }
}

struct Follow {
    app: App,
    principal: Principal,
    target: Target,
    /// For a follow of one object: whose ([`Pin`]).
    pin: Arc<Pin>,
    feed: FeedReceiver,
    /// An item taken from the feed while gathering what was buffered behind a change
    /// ([`Follow::buffered`]) and not part of it: the next to handle.
    stashed: Option<FeedItem>,
    pending: VecDeque<Queued>,
    /// Whose turns its items and its resync scans take ([`App::delivery_turn`],
    /// [`App::resync_turn`]): its one customer's (every token of it together, as its share of
    /// the follows: hostile34), else its principal's.
    turn_key: String,
    /// Everything up to here has been reflected in what was yielded.
    delivered: Position,
    _active: ActiveGuard,
}

impl Follow {
    /// Whether `e` is of the customer this follow shows (groups: every one they admit).
    fn shows(&self, e: &AgendaEntry) -> bool {
        self.target.is_group() || self.pin.shows(e.customer_id())
    }

    /// [`Follow::shows`], pinning a follow of one object to `e`'s customer when none is yet.
    fn takes(&self, e: &AgendaEntry) -> bool {
        self.target.is_group() || self.pin.takes(e.customer_id())
    }

    /// Pins a follow of one object to the customer of the agenda it names as it starts, when
    /// neither the request nor a change since it joined the feed pinned one; two customers'
    /// agendas of the id are refused (VALIDATION `customerId`), as a read by the id is.
    fn pin_at_start(&self) -> AppResult<()> {
        let chosen = self.choose_at_start();
        self.pin.started.store(true, std::sync::atomic::Ordering::Release);
        chosen
    }

    fn choose_at_start(&self) -> AppResult<()> {
        if self.target.is_group() {
            return Ok(());
        }
        let models = self.app.projections().read();
        let named: Vec<&AgendaEntry> = match &self.target {
            Target::Progress(id, _) => models.agendas().with_progress_id(id).collect(),
            Target::Operations(agenda, _) => models.agendas().with_id(agenda).collect(),
            Target::Customer(_) | Target::Link(..) => Vec::new(),
        };
        let named: Vec<&AgendaEntry> =
            named.into_iter().filter(|e| self.pin.shows(e.customer_id())).collect();
        let mut customers: Vec<&str> = named
            .iter()
            .filter(|e| self.target.admits_entry(e, &self.principal))
            .map(|e| e.customer_id())
            .collect();
        if customers.is_empty() && named.iter().any(|e| may_touch(&self.principal, e)) {
            // Said only to whom may read it by id: it holds the agenda's lease.
            return Err(AppError::forbidden(format!(
                "a follow shows agendas of the caller's customers; {:?} holds {:?} under a \
                 lease but is not of its customer: read it by id (agendaProgress, \
                 operationProgress) while it holds it",
                self.principal.name,
                self.target.id()
            )));
        }
        if self.pin.customer.get().is_some() {
            return Ok(());
        }
        customers.sort_unstable();
        customers.dedup();
        match customers.as_slice() {
            [] => Ok(()),
            [one] => {
                let _ = self.pin.customer.set((*one).to_string());
                Ok(())
            }
            many => Err(ambiguous(self.target.id(), many.len())),
        }
    }

    async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(queued) = self.pending.pop_front() {
                match queued {
                    Queued::Ready(out) => return Some(out),
                    Queued::Current { position } => {
                        let turn = self.app.delivery_turn(&self.turn_key).await;
                        let mut items = {
                            let models = self.app.projections().read();
                            self.current(&models, position).into_iter()
                        };
                        if let Some(first) = items.next() {
                            // Two only when a pin-less follow saw two customers' (never, but
                            // the rest go next).
                            for (i, rest) in items.enumerate() {
                                self.pending.insert(i, Queued::Ready(rest));
                            }
                            return Some(first.with_turn(turn));
                        }
                    }
                    Queued::Resync { id, position } => {
                        let turn = self.app.delivery_turn(&self.turn_key).await;
                        let models = self.app.projections().read();
                        // Read now, so seen again now: one that left the read models or the
                        // caller's sight since the scan is not re-sent.
                        let entry = models
                            .agenda_entry(&id)
                            .filter(|e| self.target.admits_entry(e, &self.principal));
                        if let Some(Ok(p)) = entry.map(AgendaEntry::progress) {
                            return Some(progress_update(position, Some(p), true).with_turn(turn));
                        }
                    }
                }
                continue;
            }
            let item = match self.stashed.take() {
                Some(item) => item,
                None => self.feed.recv().await?,
            };
            match item {
                FeedItem::Change(change) => {
                    // Already covered by the state sent at start, at a resync, or by an
                    // item rendered after the change was applied.
                    if change.position <= self.delivered {
                        continue;
                    }
                    let (position, operations) = self.buffered(&change);
                    self.delivered = position;
                    if operations.is_empty() && self.shows_agenda_alone(&change) {
                        // A change of the agenda alone (queued, claimed): nothing for an
                        // operations follow, and no turn taken for it (review-s50b L2).
                        continue;
                    }
                    let turn = self.app.delivery_turn(&self.turn_key).await;
                    let models = self.app.projections().read();
                    if let Some(out) = self.render(&models, &change, position, &operations) {
                        return Some(out.with_turn(turn));
                    }
                }
                FeedItem::Lagged { missed } => self.resync(Some(missed)).await,
            }
        }
    }

    /// The current state of the object a follow of one object follows, at `position`: its
    /// start, or its resync after a lag. A follow of one object that has pinned no customer
    /// yet takes the first it shows (one appeared between the start's choice and this read):
    /// never two.
    fn current(&self, models: &ReadModels, position: Position) -> Vec<Update> {
        let visible =
            |e: &&AgendaEntry| self.target.admits_entry(e, &self.principal) && self.takes(e);
        let mut items = Vec::new();
        match &self.target {
            Target::Progress(id, _) => {
                for entry in models.agendas().with_progress_id(id).filter(visible) {
                    if let Ok(p) = entry.progress() {
                        items.push(progress_update(position, Some(p), true));
                    }
                }
            }
            Target::Operations(agenda, _) => {
                for entry in models.agendas().with_id(agenda).filter(visible) {
                    if let Ok(p) = entry.progress() {
                        items.push(Update::Operations(OperationsUpdate {
                            position,
                            agenda_id: agenda.clone(),
                            operation_progress: p.operation_progress,
                            removed_operations: Vec::new(),
                            lagged: false,
                            missed: 0,
                            resync: true,
                            turn: Turn::default(),
                        }));
                    }
                }
            }
            Target::Customer(_) | Target::Link(..) => {}
        }
        items
    }

    /// The position and the operations of `change` and of the changes of its agenda already
    /// buffered behind it: a follow of one agenda that has fallen behind renders them once, as
    /// one item at the last of their positions (its progress; an operations follow, the
    /// operations any of them touched), not once per change with a turn each, every item the
    /// same current state (review-s50b M3). Group follows take `change` alone.
    fn buffered(&mut self, change: &Change) -> (Position, Vec<String>) {
        let mut position = change.position;
        let mut operations = change.operations.clone();
        if self.target.is_group() {
            return (position, operations);
        }
        // Made only when a second change is buffered (most items are one change).
        let mut named: Option<HashSet<String>> = None;
        for _ in 0..MAX_BUFFERED_PER_ITEM {
            match self.feed.try_recv() {
                Some(FeedItem::Change(next)) if next.id == change.id => {
                    position = position.max(next.position);
                    let named = named.get_or_insert_with(|| operations.iter().cloned().collect());
                    for op in &next.operations {
                        if named.insert(op.clone()) {
                            operations.push(op.clone());
                        }
                    }
                }
                Some(other) => {
                    self.stashed = Some(other);
                    break;
                }
                None => break,
            }
        }
        (position, operations)
    }

    /// Whether an operations follow shows the agenda of `change` (a change that touched no
    /// operation then says nothing to it; one of an agenda gone or out of sight still does).
    fn shows_agenda_alone(&self, change: &Change) -> bool {
        if !matches!(self.target, Target::Operations(..)) {
            return false;
        }
        self.shown(&self.app.projections().read(), change).is_some()
    }

    /// The agenda behind `change` as this follow may show it, if it may.
    fn shown<'m>(&self, models: &'m ReadModels, change: &Change) -> Option<&'m AgendaEntry> {
        models
            .agenda_entry(&change.id)
            .filter(|e| self.target.admits_entry(e, &self.principal) && self.shows(e))
    }

    /// The current state behind one change (an operations follow: of the `operations` it and
    /// the changes buffered behind it touched, up to `position`).
    fn render(
        &self,
        models: &ReadModels,
        change: &Change,
        position: Position,
        operations: &[String],
    ) -> Option<Update> {
        let entry = self.shown(models, change);
        match &self.target {
            Target::Operations(agenda, _) => {
                let progress = entry.and_then(|e| e.progress().ok());
                let mut found = Vec::new();
                let mut removed = Vec::new();
                for name in operations {
                    match progress
                        .as_ref()
                        .and_then(|p| p.operation_progress.iter().find(|o| *o.operation == **name))
                    {
                        Some(op) => found.push(op.clone()),
                        None => removed.push(name.clone()),
                    }
                }
                if found.is_empty() && removed.is_empty() && progress.is_some() {
                    // A change of the agenda alone (queued, claimed): nothing for this follow.
                    return None;
                }
                Some(Update::Operations(OperationsUpdate {
                    position,
                    agenda_id: agenda.clone(),
                    operation_progress: found,
                    removed_operations: removed,
                    lagged: false,
                    missed: 0,
                    resync: false,
                    turn: Turn::default(),
                }))
            }
            _ => {
                let progress = match entry.map(AgendaEntry::progress) {
                    Some(Ok(p)) => Some(p),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "a follow could not read an agenda");
                        None
                    }
                    None => None,
                };
                Some(progress_update(position, progress, false))
            }
        }
    }

    /// Queues the current state of everything that may have changed after `self.delivered`:
    /// after a lag (`missed` is `Some`) behind a lagged item, or at start.
    async fn resync(&mut self, missed: Option<u64>) {
        let now = self.app.projections().applied();
        let mut truncated = false;
        let group_ids = if self.target.is_group() {
            // The customer's (all its tokens together), as its delivery turns (hostile52: 20
            // tokens of one customer ran 20 scans at once, +335 MB, another tenant's read 1.8 s).
            let _turn = self.app.resync_turn(&self.turn_key).await;
            match changed_agendas(&self.app, self.delivered, now).await {
                Ok((ids, cut)) => {
                    truncated = cut;
                    ids
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a follow could not read the log to resync");
                    truncated = true;
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let mut items = Vec::new();
        let position;
        {
            let models = self.app.projections().read();
            position = models.position();
            let visible = |e: &&AgendaEntry| self.target.admits_entry(e, &self.principal);
            match &self.target {
                // Read when its turn comes (Queued::Current).
                Target::Progress(..) | Target::Operations(..) => {
                    items.push(Queued::Current { position });
                }
                Target::Customer(_) | Target::Link(..) => {
                    // The caller's own first, then the bound: other customers' changes must
                    // not crowd them out (hostile18: 500 agendas of another customer changed
                    // since the resume point, and the resync was empty).
                    // Only the ids now: each state is read when its turn comes (Queued).
                    for id in group_ids {
                        if models.agenda_entry(&id).filter(visible).is_some() {
                            if items.len() == MAX_RESYNC_ITEMS {
                                truncated = true;
                                break;
                            }
                            items.push(Queued::Resync { id, position });
                        }
                    }
                }
            }
        }
        // A resume (no lag) cut short says so as a lag would: re-list to be sure.
        let missed = match missed {
            None if truncated => Some(0),
            missed => missed,
        };
        if let Some(missed) = missed {
            let lagged = match &self.target {
                Target::Operations(agenda, _) => Update::Operations(OperationsUpdate {
                    position,
                    agenda_id: agenda.clone(),
                    operation_progress: Vec::new(),
                    removed_operations: Vec::new(),
                    lagged: true,
                    missed,
                    resync: false,
                    turn: Turn::default(),
                }),
                _ => Update::Progress(Box::new(ProgressUpdate {
                    position,
                    progress: None,
                    removed: false,
                    lagged: true,
                    missed,
                    resync: false,
                    truncated,
                    turn: Turn::default(),
                })),
            };
            self.pending.push_back(Queued::Ready(lagged));
        }
        self.pending.extend(items);
        self.delivered = self.delivered.max(position);
    }
}

/// The agendas with events in the log after `after` up to `upto`, in order of first change,
/// every customer's (the caller filters, then bounds them by [`MAX_RESYNC_ITEMS`]); `true`
/// when the scan stopped at its bound before `upto`.
async fn changed_agendas(
    app: &App,
    after: Position,
    upto: Position,
) -> Result<(Vec<String>, bool), StoreError> {
    let prefix = format!("{AGENDA_CATEGORY}-");
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut from = after;
    let mut scanned = 0usize;
    while from < upto {
        if scanned >= MAX_RESYNC_SCAN {
            return Ok((ids, true));
        }
        let batch = app.store().read_all(from, RESYNC_READ_BATCH).await?;
        let Some(last) = batch.last() else { break };
        from = last.position;
        for event in batch.iter().filter(|e| e.position <= upto) {
            scanned += 1;
            if let Some(id) = event.stream.strip_prefix(&prefix)
                && seen.insert(id.to_string())
            {
                ids.push(id.to_string());
            }
        }
    }
    Ok((ids, false))
}

impl App {
    /// Starts following `target` for the caller: joins the feed first (so nothing between the
    /// initial read and the first change is lost), waits for `after_position`, then queues the
    /// starting state (single objects always; groups only when resuming). A customer outside
    /// the caller's set is FORBIDDEN (decided by the token alone, so it reveals nothing).
    pub async fn follow(
        &self,
        caller: &Caller,
        target: Target,
        after_position: Option<&str>,
    ) -> AppResult<impl Stream<Item = Update> + Send + use<>> {
        caller
            .run(Action::Read, None, async |caller| {
                if target.id().trim().is_empty() {
                    return Err(AppError::invalid(target.field(), "must not be empty"));
                }
                // What no object can be named is refused, not followed for ever.
                match target {
                    Target::Link(..) => pop_domain::validate::check_key("linkId", target.id())?,
                    _ => pop_domain::validate::check_id(target.field(), target.id())?,
                }
                if let Some(customer) = target.named_customer() {
                    pop_domain::validate::check_id("customerId", customer)?;
                }
                if let Target::Customer(customer) = &target
                    && !caller.principal.sees(customer)
                {
                    return Err(AppError::forbidden(format!(
                        "principal {:?} may not follow customer {customer:?}",
                        caller.principal.name
                    )));
                }
                let principal = caller.principal.clone();
                let filter_target = target.clone();
                let filter_principal = principal.clone();
                let pin = Arc::new(Pin::of(target.named_customer()));
                let filter_pin = Arc::clone(&pin);
                let group = target.is_group();
                let scope = target.scope(&principal);
                let owners = share_owners(&principal, &scope);
                let turn_key = match &scope {
                    Scope::Customers(ids) if ids.len() == 1 => format!("customer {:?}", ids[0]),
                    _ => format!("principal {:?}", principal.name),
                };
                let feed = self
                    .feed()
                    .register_for(&owners, target.key(), scope, move |c| {
                        filter_target.admits(c, &filter_principal)
                            && (group || filter_pin.admits(&c.customer_id))
                    })
                    .map_err(|e| match e {
                        // Busy, not the caller's mistake: others hold the server's follows.
                        FeedError::Full { .. } => AppError::new(
                            Code::Busy,
                            format!("{e}; try again later (it is a server-wide bound)"),
                        ),
                        FeedError::ShareFull { .. } => AppError::new(
                            Code::Busy,
                            format!("{e}; complete some before subscribing to more"),
                        ),
                    })?;
                self.settle_named("afterPosition", after_position).await?;
                let delivered = match after_position {
                    Some(p) => self.position("afterPosition", p)?,
                    None => self.projections().applied(),
                };
                let mut follow = Follow {
                    app: self.clone(),
                    principal,
                    target,
                    pin,
                    feed,
                    stashed: None,
                    pending: VecDeque::new(),
                    turn_key,
                    delivered,
                    _active: ActiveGuard::new(),
                };
                follow.pin_at_start()?;
                if !follow.target.is_group() || after_position.is_some() {
                    follow.resync(None).await;
                }
                Ok(futures::stream::unfold(follow, |mut follow| async move {
                    let out = follow.next().await?;
                    Some((out, follow))
                }))
            })
            .await
    }
}

/// Whose shares of the server's follows one of `principal`'s, of `scope`, counts against: the
/// principal's own, and each customer's whose changes it may deliver (every token of a
/// customer together), so a customer with many tokens still holds one share (hostile34: ten
/// tokens of one customer filled the whole server bound), and a token of several customers
/// following one of them leaves the others' shares alone (hostile35: it used up all of them
/// and locked their own users out). A follow of many customers' (`*`, or a token of more than
/// a few) counts against its principal's share only.
fn share_owners(principal: &Principal, scope: &Scope) -> Vec<String> {
    let mut owners = vec![format!("principal {:?}", principal.name)];
    if let Scope::Customers(ids) = scope {
        owners.extend(ids.iter().map(|id| format!("customer {id:?} (all its tokens together)")));
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Role;

    /// A follow counts against the shares of the customers it can deliver, not every customer
    /// of its token (hostile35: a token of acme and globex following acme used up globex's
    /// share and locked globex's own users out).
    #[test]
    fn a_follow_counts_against_the_customers_it_can_deliver() {
        let agency = Principal::new("agency", Role::User, &["acme", "globex"]);
        let acme = Target::Customer("acme".into()).scope(&agency);
        assert_eq!(
            share_owners(&agency, &acme),
            ["principal \"agency\"", "customer \"acme\" (all its tokens together)"]
        );
        let both = Target::Link("L".into(), None).scope(&agency);
        assert_eq!(share_owners(&agency, &both).len(), 3);
        let root = Principal::new("root", Role::Admin, &["*"]);
        let any = Target::Link("L".into(), None).scope(&root);
        assert_eq!(share_owners(&root, &any), ["principal \"root\""]);
    }

    /// A follow is filed by the customers whose changes it can admit: none for a customer its
    /// principal does not see (hostile25, review-s40: acme's follows naming globex were filed
    /// under globex), a shared set past a few customers (hostile25: a token of 65 was "any").
    #[test]
    fn a_follow_is_filed_by_what_it_can_admit() {
        let acme = Principal::new("acme-user", Role::User, &["acme"]);
        let link = |customer: Option<&str>| Target::Link("GL".into(), customer.map(str::to_string));
        assert_eq!(link(Some("globex")).scope(&acme), Scope::Customers(Vec::new()));
        assert_eq!(Target::Customer("globex".into()).scope(&acme), Scope::Customers(Vec::new()));
        assert_eq!(link(Some("acme")).scope(&acme), Scope::Customers(vec![Arc::from("acme")]));
        assert_eq!(link(None).scope(&acme), Scope::Customers(vec![Arc::from("acme")]));
        let names: Vec<String> = (0..65).map(|i| format!("c{i:02}")).collect();
        let many: Vec<&str> = names.iter().map(String::as_str).collect();
        let many = Principal::new("many-user", Role::User, &many);
        match link(None).scope(&many) {
            Scope::Group { group, customers } => {
                assert_eq!((&*group, customers.len()), ("many-user", 65));
            }
            other => panic!("{other:?}"),
        }
        let admin = Principal::new("admin", Role::Admin, &["*"]);
        assert_eq!(link(None).scope(&admin), Scope::Any);
        assert_eq!(link(Some("globex")).scope(&admin), Scope::Customers(vec![Arc::from("globex")]));
    }
}
