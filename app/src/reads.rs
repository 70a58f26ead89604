//! What a caller may read (DOMAIN.md §4, §10): objects by id (`None` when they do not exist
//! *or* the caller may not see them — the two are indistinguishable on purpose), filtered,
//! cursor-paginated lists, progress summaries, an agenda's event history and the global log,
//! and the insights' work counters. Every read first settles read-your-writes
//! ([`App::settle`]). Read-model access happens in synchronous blocks: the read guard cannot be
//! held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use chrono::{DateTime, Utc};

use pop_domain::ProcessingState;
use pop_domain::agenda::CATEGORY as AGENDA_CATEGORY;
use pop_domain::agenda::key::{POOL_TAG_LENGTH, POOL_TAG_SEPARATOR, customer_tag};
use pop_domain::agenda::split_pool_progress_id;
use pop_domain::aggregate::stream_name;
use pop_domain::model::{Agenda, AgendaProgress, OperationProgress, ProgressSummary};
use pop_projections::{
    AgendaEntry, AgendaOrder, AgendaQuery, CorruptEntry, Cursor, DetachedProgress, MAX_PAGE_SIZE,
    Phase, ReadModels, Visibility,
};
use pop_store::{Direction, Position, RecordedEvent};

use crate::App;
use crate::caller::{Action, Caller, Principal};
use crate::error::{self, AppError, AppResult, Code};
use crate::limits::{DEFAULT_PAGE_SIZE, MAX_COUNTED, MAX_EVENT_PAGE_SIZE};
use crate::outcome::Page;
use crate::resolve::{Named, ambiguous, may_touch};

/// The phases whose agendas are WAITING (DOMAIN.md §3), for the insights' counters.
pub const WAITING_PHASES: [Phase; 5] =
    [Phase::Added, Phase::Queued, Phase::Scheduled, Phase::Pending, Phase::Waiting];

/// Most entries `waiting_by_customer` returns (the customers with the most waiting agendas).
pub const MAX_WAITING_CUSTOMERS: usize = 100;

/// Pages' worth of agendas (1,000 each) one `waiting_by_customer` counts: at most 10,000
/// waiting agendas, shared evenly among the phases (added, queued, scheduled, pending, other
/// WAITING) and, within each, among the customers with agendas in it (at least one each).
pub const MAX_WAITING_PAGES: usize = 10;

/// Most agendas a batch's summary sums up on the request's own task; past it, on a blocking
/// thread, one such summary at a time (a finished agenda takes about 0.1 ms to decode).
pub(crate) const LARGE_SUMMARY: usize = 64;

/// Events read per log query while looking for a page's end.
const MORE_PROBE: usize = 1;

/// The last look at the store by the reads that wait for the read models.
#[derive(Debug, Default)]
pub(crate) struct StoreProbe {
    asked: Option<std::time::Instant>,
    failed: Option<(std::time::Instant, pop_store::StoreError)>,
}

impl StoreProbe {
    /// The failure a probe saw recently enough to go by at `now`, if any.
    fn failed_within(&self, now: std::time::Instant) -> Option<pop_store::StoreError> {
        self.failed
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < 2 * STORE_PROBE_AFTER)
            .map(|(_, e)| e.clone())
    }
}

/// How long a read-your-writes wait runs before it asks the store whether it is there.
const STORE_PROBE_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// Which page of a list: at most `first` items (default [`DEFAULT_PAGE_SIZE`], at most the
/// configured maximum) after the cursor `after` (a previous page's `next`).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub first: Option<i64>,
    pub after: Option<String>,
}

/// The order of an agenda list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgendaListOrder {
    /// By `(addedTime, id)`: stable, an agenda never moves.
    #[default]
    AddedTime,
    /// By `(updatedTime, id)`: recently changed last; an agenda moves when it changes.
    UpdatedTime,
}

/// Filters of agenda and agenda-progress lists (ANDed).
#[derive(Debug, Clone, Default)]
pub struct AgendaFilter {
    /// Only the agenda with this id.
    pub agenda_id: Option<String>,
    /// Only the agenda whose AgendaProgress has this id.
    pub progress_id: Option<String>,
    /// Only this customer's agendas (none when the caller may not see that customer).
    pub customer_id: Option<String>,
    pub link_id: Option<String>,
    /// `agendaInsight.insightId`.
    pub insight_id: Option<String>,
    /// `agendaInsight.resourcePoolId`.
    pub resource_pool_id: Option<String>,
    /// The agenda's title, exactly.
    pub title: Option<String>,
    /// The correlation id the agenda was submitted with (POP's `byCid`).
    pub cid: Option<String>,
    pub processing_state: Option<ProcessingState>,
    /// Only COMPLETE agendas that ended so: [`Phase::Succeeded`], [`Phase::Failed`] or
    /// [`Phase::Cancelled`] (dash10: the overview's "failed" card listed every COMPLETE one).
    pub outcome: Option<Phase>,
    /// Only agendas whose order time (`addedTime` or `updatedTime`, per `order`) is at or
    /// after this.
    pub from: Option<DateTime<Utc>>,
    /// Only agendas whose order time is before this.
    pub until: Option<DateTime<Utc>>,
    pub order: AgendaListOrder,
    /// Walk `order` backwards: the newest (or most recently changed) first. A page's cursor
    /// then continues with older agendas.
    pub newest_first: bool,
    /// The agenda (or progress) id names one object, as a REST path does (POP's `getObject`
    /// takes the first of what it is given): two customers' agendas of the id that the caller
    /// sees are refused (VALIDATION `customerId`), as GraphQL's `agenda(id)` refuses them,
    /// rather than both listed.
    pub one: bool,
}

impl AgendaFilter {
    /// Whether the filters that need the agenda's body (not indexed) are set.
    fn has_body_filters(&self) -> bool {
        self.title.is_some() || self.resource_pool_id.is_some() || self.cid.is_some()
    }

    /// The filters that the read model's entry keys answer.
    fn admits_keys(&self, e: &AgendaEntry) -> bool {
        self.customer_id.as_deref().is_none_or(|c| e.customer_id() == c)
            && self.link_id.as_deref().is_none_or(|l| e.link_id() == Some(l))
            && self.insight_id.as_deref().is_none_or(|i| e.insight_id() == Some(i))
            && self.processing_state.is_none_or(|s| e.processing_state() == s)
            && self.outcome.is_none_or(|p| e.phase() == p)
    }

    /// The title and resource pool filters, read from the agenda's progress (a live entry in
    /// place; a settled one decodes only its progress). A corrupt entry is admitted so that
    /// reading it reports the corruption instead of hiding it.
    fn admits_body(&self, e: &AgendaEntry) -> bool {
        if !self.has_body_filters() {
            return true;
        }
        let admits = |p: &AgendaProgress| {
            self.resource_pool_id.as_deref().is_none_or(|want| {
                p.agenda_insight.as_ref().is_some_and(|i| i.resource_pool_id == want)
            }) && self.title.as_deref().is_none_or(|t| p.title.as_deref() == Some(t))
                && self.cid.as_deref().is_none_or(|c| p.cid.as_deref() == Some(c))
        };
        match e.is_settled() {
            false => e.state().map(|s| admits(s.progress())),
            true => e.progress().map(|p| admits(&p)),
        }
        .unwrap_or(true)
    }
}

/// Counters of one insight's agendas, of every customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsightCounts {
    /// Agendas in phase `queued`.
    pub queue_depth: usize,
    /// Agendas whose processingState is WAITING.
    pub waiting: usize,
    /// Agendas whose processingState is EXECUTING.
    pub executing: usize,
}

/// How many objects a filtered list holds (POP's `byCount`), counted up to
/// [`MAX_COUNTED`]; `capped` when the count stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub count: usize,
    pub capped: bool,
}

impl Count {
    /// Counts page by page: `page(after)` answers one page's length and the cursor after it.
    /// Stops at [`MAX_COUNTED`] (then `capped`).
    pub(crate) fn by_pages<C>(
        mut page: impl FnMut(Option<C>) -> AppResult<(usize, Option<C>)>,
    ) -> AppResult<Count> {
        let mut count = 0;
        let mut after = None;
        loop {
            let (len, next) = page(after.take())?;
            count += len;
            match next {
                Some(next) if count < MAX_COUNTED => after = Some(next),
                Some(_) => return Ok(Count { count, capped: true }),
                None => return Ok(Count { count, capped: false }),
            }
        }
    }
}

/// A page of events of a stream or of the log.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts: the last event's stream version (a stream) or position
    /// (the log).
    pub end_cursor: Option<String>,
    pub more: bool,
    /// The read models' position when the page was read.
    pub position: Position,
}

pub(crate) fn corrupt(e: CorruptEntry) -> AppError {
    AppError::internal("reading an agenda from the read models", &e)
}

/// Parses a client's log position.
pub fn parse_position(field: &str, text: &str) -> AppResult<Position> {
    text.trim().parse().map_err(|e| AppError::invalid(field, format!("{e}")))
}

impl App {
    /// A position a client gave in `field`, in a form this server's log can have: the
    /// embedded store numbers its events 1, 2, 3…, so a two-part `"<commit>/<prepare>"`
    /// (a PostgreSQL or KurrentDB position, say from another deployment) is refused rather
    /// than compared as if it meant something here.
    pub fn position(&self, field: &str, text: &str) -> AppResult<Position> {
        let position = parse_position(field, text)?;
        self.position_of_this_log(field, position)?;
        Ok(position)
    }

    /// Refuses `position` (given in `field`) when this server's log cannot have it: a
    /// two-part one on the embedded store ([`Self::position`]).
    pub(crate) fn position_of_this_log(&self, field: &str, position: Position) -> AppResult<()> {
        if self.store().sequence_positions() && position.sequence().is_none() {
            return Err(AppError::invalid(
                field,
                format!(
                    "\"{position}\" is a two-part position (\"<commit>/<prepare>\", a PostgreSQL or KurrentDB log's); this server's log numbers its positions 1, 2, 3…"
                ),
            ));
        }
        Ok(())
    }
}

/// The agendas with id `id` the caller may see (of `customer` when the request names one).
fn visible_agendas<'m>(
    m: &'m ReadModels,
    p: &'m Principal,
    id: &str,
    customer: Option<&'m str>,
) -> impl Iterator<Item = &'m AgendaEntry> + 'm {
    m.agendas()
        .with_id(id)
        .filter(move |e| may_touch(p, e) && customer.is_none_or(|c| e.customer_id() == c))
}

/// The agendas whose AgendaProgress has id `id` the caller may see (of `customer` when named).
fn visible_progress<'m>(
    m: &'m ReadModels,
    p: &'m Principal,
    id: &str,
    customer: Option<&'m str>,
) -> impl Iterator<Item = &'m AgendaEntry> + 'm {
    m.agendas()
        .with_progress_id(id)
        .filter(move |e| may_touch(p, e) && customer.is_none_or(|c| e.customer_id() == c))
}

/// The agendas whose AgendaProgress `id` names for `p`: by their own progress id, and — when
/// `id` is the pool's progress id a worker of several customers was handed
/// (`<progressId>~<customer tag>`, [`pop_domain::agenda::pool_progress_id`]) — the one of that
/// progress id and customer (`true`: answer it under that id). Customers cannot choose ids of
/// that shape, so the two meet only for an id stored by an older build, refused as ambiguous.
/// The one agenda progress `id` names for `caller` (see [`progress_or_pool`]), and whether it
/// was named by its pool form; ambiguity refused. What `agendaProgress` and `agendaHolding`
/// look up, alike.
fn progress_named<'m>(
    models: &'m ReadModels,
    caller: &'m Caller,
    id: &str,
    customer: Option<&'m str>,
) -> AppResult<Option<(&'m AgendaEntry, bool)>> {
    one(id, progress_or_pool(models, &caller.principal, id, customer))
}

pub(crate) fn progress_or_pool<'m>(
    m: &'m ReadModels,
    p: &'m Principal,
    id: &str,
    customer: Option<&'m str>,
) -> Vec<(&'m AgendaEntry, bool)> {
    let pooled = split_pool_progress_id(id);
    // By its own id, an id of that shape names only agendas of the caller's customers (see
    // `operation_progress`): not one the caller reaches through a lease handed under the pool id.
    let mut found: Vec<(&AgendaEntry, bool)> = visible_progress(m, p, id, customer)
        .filter(|e| pooled.is_none() || p.sees(e.customer_id()))
        .map(|e| (e, false))
        .collect();
    if let Some((own, tag)) = pooled {
        found.extend(
            visible_progress(m, p, own, customer)
                .filter(|e| customer_tag(e.customer_id()) == tag)
                .map(|e| (e, true)),
        );
    }
    found
}

/// Whose agendas a ProgressSummary of `caller` rolls up: every customer it sees, or only
/// `customer` when it names one (nothing when it may not see it, as for a linkId nobody uses).
/// linkIds are chosen per customer, so a caller that sees several customers names one to get
/// that customer's batch alone: another tenant's agendas with the same linkId (a hostile probe
/// cancelled one under acme's linkId) then cannot change it.
pub(crate) fn summarised(caller: &Caller, customer: Option<&str>) -> Visibility {
    match customer.map(str::trim).filter(|c| !c.is_empty()) {
        None => caller.principal.customers.clone(),
        Some(c) if caller.principal.sees(c) => Visibility::Customers([c.to_string()].into()),
        Some(_) => Visibility::Customers(Default::default()),
    }
}

/// Whether `id` names the AgendaProgress of `e`: its own progress id, or the pool's progress id
/// of it ([`progress_or_pool`]).
fn names_progress(e: &AgendaEntry, id: &str) -> bool {
    e.progress_id() == id
        || split_pool_progress_id(id).is_some_and(|(own, tag)| {
            e.progress_id() == own && customer_tag(e.customer_id()) == tag
        })
}

/// The ways `id` splits into a pool's progress id and an operation name
/// (`<progressId>~<tag>-<operation>`): each `~` followed by a tag and a `-`.
fn pool_operation_ids(id: &str) -> impl Iterator<Item = (&str, &str)> {
    // Only separators where an agenda's own progress id can end (hostile21: every `~` of a long
    // id hashed the prefix before it, quadratic in the id's length).
    const MAX_OWN_BYTES: usize = 4 * pop_domain::validate::MAX_ID_LENGTH;
    id.match_indices(POOL_TAG_SEPARATOR).take_while(|(i, _)| *i <= MAX_OWN_BYTES).filter_map(
        |(i, _)| {
            let end = i + POOL_TAG_SEPARATOR.len_utf8() + POOL_TAG_LENGTH;
            let progress_id = id.get(..end)?;
            let operation = id.get(end..)?.strip_prefix('-')?;
            split_pool_progress_id(progress_id)?;
            Some((progress_id, operation))
        },
    )
}

/// The agendas an OperationProgress id names for `p`, each with the operation's name and, when
/// named by the pool's progress id a worker of several customers was handed
/// (`<progressId>~<tag>-<operation>`), that progress id to show the operation under. Only the
/// agendas the caller may act on are candidates, chosen before any match, so another customer's
/// agenda can never shadow one of the caller's. An id of a pool's shape names by its own ids
/// only agendas of the caller's customers, not one it reaches through a lease handed under the
/// pool's id (a hostile tenant's progress id `rap~<acme's tag>-encode` with an operation `720p`
/// answered a worker's read of acme's `rap~<tag>-encode-720p` once acme's ended). Live and
/// as-of reads both choose by this.
pub(crate) fn operation_named<'m, 'i>(
    m: &'m ReadModels,
    p: &Principal,
    id: &'i str,
    customer: Option<&str>,
) -> Vec<(&'m AgendaEntry, &'i str, Option<&'i str>)> {
    let keep = |e: &AgendaEntry| may_touch(p, e) && customer.is_none_or(|c| e.customer_id() == c);
    let pool_ids: Vec<(&str, &str)> = pool_operation_ids(id).collect();
    let literal = |e: &AgendaEntry| keep(e) && (pool_ids.is_empty() || p.sees(e.customer_id()));
    let mut found: Vec<(&AgendaEntry, &str, Option<&str>)> = m
        .agendas()
        .operation_candidates(id, literal)
        .into_iter()
        .map(|(e, name)| (e, name, None))
        .collect();
    for (progress_id, operation) in pool_ids {
        let Some((own, tag)) = split_pool_progress_id(progress_id) else { continue };
        found.extend(
            m.agendas()
                .with_progress_id(own)
                .filter(|e| keep(e) && customer_tag(e.customer_id()) == tag)
                .map(|e| (e, operation, Some(progress_id))),
        );
    }
    found
}

/// An operation named by the pool's progress id ([`operation_named`]), shown under that id.
pub(crate) fn shown(mut op: OperationProgress, pooled: Option<&str>) -> OperationProgress {
    if let Some(progress_id) = pooled {
        op.show_as(progress_id);
    }
    op
}

/// At most one of the operations an OperationProgress id named ([`operation_named`]), or the
/// refusal of an id that names several: live and as-of reads answer alike.
pub(crate) fn one_operation(
    id: &str,
    found: Vec<OperationProgress>,
) -> AppResult<Option<OperationProgress>> {
    match found.len() {
        0 | 1 => Ok(found.into_iter().next()),
        n => Err(AppError::invalid(
            "id",
            format!(
                "operation progress id {id:?} names {n} operations this caller may see; name \
                 the agenda progress and the operation apart"
            ),
        )),
    }
}

/// At most one of `found`, or the ambiguity error naming `id`.
fn one<T>(id: &str, found: Vec<T>) -> AppResult<Option<T>> {
    match found.len() {
        0 | 1 => Ok(found.into_iter().next()),
        n => Err(ambiguous(id, n)),
    }
}

impl App {
    /// Whether this process serves requests yet: once its read models have caught up with the
    /// log as it stood when the process started (at once after a clean stop, from the
    /// snapshot; after a `kill -9`, a crash or on a new replica they load the log first).
    /// Before, every answer would be read from models missing the newest writes — a customer
    /// that "does not exist", an insight "not found", a running agenda's report refused for
    /// good, which `pop worker` took as final and dropped the operation (ops3am). A request
    /// waits for them (bounded by `read_wait`; POP's REST by `pop_catch_up_wait`:
    /// [`App::serving_within`]), then is UNAVAILABLE, retryable: nothing was done; a server
    /// that stops meanwhile answers at once. Every transport asks this before a request's
    /// first use case.
    pub async fn serving(&self, cid: &str) -> AppResult<()> {
        self.serving_within(cid, self.config().read_wait).await
    }

    /// [`App::serving`], waiting up to `wait`: POP's REST clients never read `Retry-After` and
    /// some of their calls are never retried (a generator's expand: popclient9 lost an
    /// attempt to a 9–16 s catch-up), while they set no read timeout, so `/pop` waits out a
    /// catch-up for up to `pop_catch_up_wait` ([`crate::limits::POP_CATCH_UP_WAIT`]).
    pub async fn serving_within(&self, cid: &str, wait: std::time::Duration) -> AppResult<()> {
        let projections = self.projections();
        if projections.caught_up() {
            return Ok(());
        }
        let mut ready = projections.watch_caught_up();
        // A server that stops meanwhile answers at once rather than dropping the request at
        // the end of its drain (review-s35b); so do read models that stopped for good, which
        // will not load further until restarted (newcomer56 M1: every request waited its whole
        // wait, then said "still loading … retry").
        let mut ended = self.waits_ended();
        let mut trouble = projections.subscribe_trouble();
        let caught_up = tokio::select! {
            r = tokio::time::timeout(wait, ready.wait_for(|r| *r)) => matches!(r, Ok(Ok(_))),
            _ = ended.wait_for(|ended| *ended) => false,
            _ = trouble.wait_for(|_| projections.has_stopped()) => false,
        };
        if caught_up {
            return Ok(());
        }
        if projections.has_stopped() {
            return Err(AppError::new(
                Code::Unavailable,
                format!(
                    "this server's read models stopped and will not load further until it is \
                     restarted: {}; nothing was done (another replica may answer it)",
                    projections.trouble().unwrap_or_default()
                ),
            )
            .with_cid(cid));
        }
        tracing::info!(
            cid,
            applied = %projections.applied(),
            "a request was refused while the read models load the log (UNAVAILABLE)"
        );
        Err(AppError::new(
            Code::Unavailable,
            format!(
                "this server is still loading its read models from the event log (at position \
                 {}, {wait:?} waited); nothing was done: retry in {} s",
                projections.applied(),
                error::RETRY_AFTER_UNAVAILABLE_SECS
            ),
        )
        .with_cid(cid))
    }

    /// Read-your-writes: waits (bounded) until the read models reach every write this
    /// replica acknowledged before the request arrived, and `at_least` (a position a write
    /// answered, for writes made through other replicas). When they are there already — the
    /// common case — it costs one comparison. A position beyond the log's head can never be
    /// reached and is refused at once; one not reached in time is TIMEOUT.
    pub async fn settle(&self, at_least: Option<&str>) -> AppResult<()> {
        self.settle_named("atLeastPosition", at_least).await
    }

    /// [`App::settle`], the position named `field` in errors (a subscription's
    /// `afterPosition`).
    ///
    /// While the store cannot serve, a read waits for what it must see itself — `at_least` and
    /// its actor's own writes — not for every write this replica acknowledged: when the read
    /// models have those, it is served from them as they are (operator60 M2: under load a
    /// PostgreSQL outage left writes of others acknowledged and not yet read back, and every
    /// read of every principal was UNAVAILABLE for the whole outage, the dashboard dark).
    pub(crate) async fn settle_named(&self, field: &str, at_least: Option<&str>) -> AppResult<()> {
        let written = self.commands().written();
        let projections = self.projections();
        let mut required = Position::START;
        let wanted = match at_least {
            None => written,
            Some(text) => {
                let position = self.position(field, text)?;
                // One this replica acknowledged is in the log, whatever the head says: on
                // PostgreSQL the head stops below a transaction still open, so a write's own
                // position was refused as "beyond the end" (reprobe-op60: VALIDATION, which says
                // do not retry, for the position the write had just answered).
                if projections.applied() < position && position > written {
                    let head =
                        self.store().head().await.map_err(|e| error::store("the log head", &e))?;
                    if position > head {
                        return Err(AppError::invalid(
                            field,
                            format!(
                                "position {position} is beyond the end of the log (its head is {head})"
                            ),
                        ));
                    }
                }
                required = required.max(position);
                position.max(written)
            }
        };
        if projections.applied() >= wanted {
            return Ok(());
        }
        // Asked only when the read models lag (the common case costs nothing more): what of
        // its own writes a read must see; a write's checks, with no actor, see everything.
        let own = error::SERVING_ACTOR
            .try_with(|actor| actor.as_deref().map(|a| self.commands().written_by(a)))
            .ok()
            .flatten()
            .unwrap_or(written);
        let required = required.max(own);
        // Known to be down (a probe within the last moments): not waited for at all.
        if projections.applied() >= required && self.store_failing().is_some() {
            return Ok(());
        }
        match self.wait_applied(wanted).await {
            // The store down, not the read models stopped (those are not served stale).
            Err(e)
                if e.code == Code::Unavailable
                    && projections.applied() >= required
                    && self.probe_store().await.is_some() =>
            {
                tracing::debug!(applied = %projections.applied(), wanted = %wanted, required = %required, cid = &*error::serving_cid(), "the store is down: a read served from the read models as they are, its own writes in them");
                Ok(())
            }
            waited => waited,
        }
    }

    /// The store's failure a probe saw within the last moments ([`App::probe_store`]), without
    /// asking it again.
    fn store_failing(&self) -> Option<pop_store::StoreError> {
        let probe = self.inner.store_probe.lock().unwrap_or_else(PoisonError::into_inner);
        probe.failed_within(std::time::Instant::now())
    }

    /// Waits (bounded) until the read models reach the log's head as it is now, with every
    /// replica's writes committed before: a check that must see every object written so far
    /// (a create's case clash).
    pub(crate) async fn settle_to_head(&self) -> AppResult<()> {
        let head = self.store().head().await.map_err(|e| error::store("the log head", &e))?;
        self.wait_applied(head.max(self.commands().written())).await
    }

    /// Whether the store answers, asked at most once per [`STORE_PROBE_AFTER`] by all the
    /// reads that wait at once (review-s43: a head query per waiting read piled up when the
    /// read models lagged under load): the failure seen, if any, recent enough to go by.
    async fn probe_store(&self) -> Option<pop_store::StoreError> {
        let now = std::time::Instant::now();
        {
            let mut probe = self.inner.store_probe.lock().unwrap_or_else(PoisonError::into_inner);
            if probe.asked.is_some_and(|at| now.duration_since(at) < STORE_PROBE_AFTER) {
                return probe.failed_within(now);
            }
            probe.asked = Some(now);
        }
        let answer = self.store().head().await.err();
        let mut probe = self.inner.store_probe.lock().unwrap_or_else(PoisonError::into_inner);
        probe.failed = answer.clone().map(|e| (std::time::Instant::now(), e));
        answer
    }

    pub(crate) async fn wait_applied(&self, wanted: Position) -> AppResult<()> {
        let projections = self.projections();
        if projections.applied() >= wanted {
            return Ok(());
        }
        let waited = projections.wait_for(wanted, self.config().read_wait);
        // Read models that wait on the log's tail notice an outage only when they next read:
        // a wait still on after a moment asks the store once, and an unavailable store is
        // said at once (ops3am20: TIMEOUT after the whole wait, for the whole outage).
        let probe = async {
            loop {
                tokio::time::sleep(STORE_PROBE_AFTER).await;
                if let Some(e) = self.probe_store().await {
                    return e;
                }
            }
        };
        let waited = tokio::select! {
            waited = waited => waited,
            e = probe => {
                return Err(error::unavailable(
                    "reading the log the writes this read must see are in",
                    &e,
                ));
            }
        };
        waited.map_err(|t| match t.trouble {
            // They cannot get there while the store is down: the same retryable answer as a
            // write that cannot be stored, at once rather than after the whole wait.
            Some(trouble) => {
                // Within the budget every refusal for an unavailable store shares (ops3am53:
                // 60-70 lines a second, one per read, through a PostgreSQL outage).
                match error::say_unavailable() {
                    Some(unsaid) => tracing::warn!(%trouble, wanted = %t.wanted, applied = %t.applied, cid = &*error::serving_cid(), not_said_before = unsaid, "a read waits for projections that cannot read the log"),
                    None => tracing::debug!(%trouble, wanted = %t.wanted, applied = %t.applied, cid = &*error::serving_cid(), "a read waits for projections that cannot read the log"),
                }
                AppError::new(
                    Code::Unavailable,
                    format!(
                        "the read models are at position {} and cannot reach {} (the writes this read must see): {trouble}; nothing was done: retry in {} s{}",
                        t.applied,
                        t.wanted,
                        error::RETRY_AFTER_UNAVAILABLE_SECS,
                        // Said as it is (ops3am20: "the event store is unavailable" while the
                        // store was up and only this replica's read models had stopped).
                        if t.stopped {
                            " (another replica may answer it; this one will not until restarted)"
                        } else {
                            ""
                        }
                    ),
                )
            }
            None => AppError::timeout(format!(
                "the read models did not reach position {} (the writes this read must see) within {:?}; they are at {}; retry",
                t.wanted, t.waited, t.applied
            )),
        })
    }

    /// A read for the caller: the role check, read-your-writes (`at_least`), then `read` on
    /// the read models (under their read lock, which is never held across an `.await`); every
    /// error carries the caller's cid.
    pub(crate) async fn read<T>(
        &self,
        caller: &Caller,
        at_least: Option<&str>,
        read: impl FnOnce(&ReadModels) -> AppResult<T>,
    ) -> AppResult<T> {
        caller
            .run(Action::Read, None, async |_| {
                self.settle(at_least).await?;
                read(&self.projections().read())
            })
            .await
    }

    /// The page size and start of a list request (`first` within `1..=max`, else
    /// VALIDATION naming it; `after` a cursor, else VALIDATION).
    pub(crate) fn page_bounds(&self, page: &PageRequest) -> AppResult<(usize, Option<Cursor>)> {
        let max = self.config().max_page_size;
        let limit = match page.first {
            None => DEFAULT_PAGE_SIZE.min(max),
            Some(n) if n >= 1 && usize::try_from(n).is_ok_and(|n| n <= max) => n as usize,
            Some(n) => {
                return Err(AppError::invalid("first", format!("{n} is outside 1..={max}")));
            }
        };
        let after = page
            .after
            .as_deref()
            .map(|a| a.parse::<Cursor>().map_err(|e| AppError::invalid("after", e.to_string())))
            .transpose()?;
        Ok((limit, after))
    }

    /// The caller as pop sees it (name, role, customers).
    pub fn me(&self, caller: &Caller) -> AppResult<Principal> {
        caller.read_now(|| Ok(caller.principal.clone()))
    }

    /// An agenda by id (of `customer`, when the caller sees several customers using the id).
    pub async fn agenda(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Option<Agenda>> {
        self.read(caller, at_least, |models| {
            let found: Vec<&AgendaEntry> =
                visible_agendas(models, &caller.principal, id, customer).collect();
            match one(id, found)? {
                Some(entry) => entry.agenda().map_err(corrupt),
                None => Ok(None),
            }
        })
        .await
    }

    /// An AgendaProgress by id (the agenda's `progressId`; of `customer` when named).
    pub async fn agenda_progress(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Option<AgendaProgress>> {
        self.read(caller, at_least, |models| {
            let Some((entry, pooled)) = progress_named(models, caller, id, customer)? else {
                return Ok(None);
            };
            let mut progress = entry.progress().map_err(corrupt)?;
            if pooled {
                progress.show_as(id);
            }
            Ok(Some(progress))
        })
        .await
    }

    /// Who holds the lease of agenda progress `id` (named as [`Self::agenda_progress`] names
    /// it) and until when; `None` when it is not held (or not visible).
    pub async fn agenda_holding(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Option<crate::Holding>> {
        self.read(caller, at_least, |models| {
            let Some((entry, _)) = progress_named(models, caller, id, customer)? else {
                return Ok(None);
            };
            let state = entry.state().map_err(corrupt)?;
            Ok(state
                .lease()
                .map(|l| crate::Holding { holder: l.holder.clone(), expires: l.expires }))
        })
        .await
    }

    /// An OperationProgress by id (`<agendaProgressId>-<operation name>`; both parts may hold
    /// `-`). Only the caller's agendas are candidates, chosen before any match, so another
    /// customer's agenda can never shadow one of the caller's; an id that still names several
    /// operations the caller sees is refused as ambiguous.
    pub async fn operation_progress(
        &self,
        caller: &Caller,
        id: &str,
        customer: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Option<OperationProgress>> {
        self.read(caller, at_least, |models| {
            let mut found = Vec::new();
            for (entry, name, pooled) in operation_named(models, &caller.principal, id, customer) {
                found.extend(entry.operation(name).map_err(corrupt)?.map(|op| shown(op, pooled)));
            }
            one_operation(id, found)
        })
        .await
    }

    /// The operation progress of one agenda, named by its AgendaProgress id or its agenda id
    /// (empty when there is none the caller may see).
    pub async fn operation_progress_of(
        &self,
        caller: &Caller,
        progress_id: Option<&str>,
        agenda_id: Option<&str>,
        customer: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<Vec<OperationProgress>> {
        self.read(caller, at_least, |models| {
            let principal = &caller.principal;
            let (id, found): (&str, Vec<(&AgendaEntry, bool)>) = match (progress_id, agenda_id) {
                (Some(p), _) => (p, progress_or_pool(models, principal, p, customer)),
                (None, Some(a)) => (
                    a,
                    visible_agendas(models, principal, a, customer).map(|e| (e, false)).collect(),
                ),
                (None, None) => {
                    return Err(AppError::bad_request(
                        "operation progress is listed per agenda: name its progress id or agenda id",
                    ));
                }
            };
            match one(id, found)? {
                None => Ok(Vec::new()),
                Some((e, pooled)) => {
                    let mut progress = e.progress().map_err(corrupt)?;
                    if pooled {
                        progress.show_as(id);
                    }
                    Ok(progress.operation_progress)
                }
            }
        })
        .await
    }

    /// Agendas the caller may see that pass `filter`.
    pub async fn agendas(
        &self,
        caller: &Caller,
        filter: &AgendaFilter,
        page: &PageRequest,
        at_least: Option<&str>,
    ) -> AppResult<Page<Agenda>> {
        self.agenda_list(caller, filter, page, at_least, |e| e.agenda()).await
    }

    /// The AgendaProgress of the agendas the caller may see that pass `filter`.
    pub async fn agenda_progress_list(
        &self,
        caller: &Caller,
        filter: &AgendaFilter,
        page: &PageRequest,
        at_least: Option<&str>,
    ) -> AppResult<Page<AgendaProgress>> {
        // Named by the pool's progress id a worker was handed: answered under that id.
        let pool_id = filter.progress_id.as_deref().filter(|p| split_pool_progress_id(p).is_some());
        self.agenda_list(caller, filter, page, at_least, |e| {
            let mut progress = e.progress()?;
            if let Some(pool_id) = pool_id
                && e.progress_id() != pool_id
            {
                progress.show_as(pool_id);
            }
            Ok(Some(progress))
        })
        .await
    }

    async fn agenda_list<T>(
        &self,
        caller: &Caller,
        filter: &AgendaFilter,
        page: &PageRequest,
        at_least: Option<&str>,
        map: impl Fn(&AgendaEntry) -> Result<Option<T>, CorruptEntry>,
    ) -> AppResult<Page<T>> {
        let (limit, after) = self.page_bounds(page).map_err(|e| e.with_cid(&caller.cid))?;
        self.read(caller, at_least, |models| {
            select(models, &caller.principal, filter, after, limit, map)
        })
        .await
    }

    /// How many agendas the caller may see pass `filter`.
    pub async fn count_agendas(
        &self,
        caller: &Caller,
        filter: &AgendaFilter,
        at_least: Option<&str>,
    ) -> AppResult<Count> {
        self.read(caller, at_least, |models| {
            Count::by_pages(|after| {
                let page = select(models, &caller.principal, filter, after, MAX_PAGE_SIZE, |_| {
                    Ok(Some(()))
                })?;
                Ok((page.items.len(), page.next))
            })
        })
        .await
    }

    /// DOMAIN.md §4.3 over the agendas with this linkId that the caller may see (a caller
    /// who sees none gets an empty, COMPLETE summary).
    pub async fn progress_summary(
        &self,
        caller: &Caller,
        link_id: &str,
        customer: Option<&str>,
        at_least: Option<&str>,
    ) -> AppResult<ProgressSummary> {
        self.progress_summary_within(caller, link_id, customer, at_least, None).await
    }

    /// [`App::progress_summary`], refused RESPONSE_TOO_LARGE when its JSON would pass
    /// `max_bytes`: measured where it is summed up, and given up at the budget (hostile57 H1:
    /// REST made a batch of 10,000 agendas a JSON value of ~100 MB before it refused it).
    pub async fn progress_summary_within(
        &self,
        caller: &Caller,
        link_id: &str,
        customer: Option<&str>,
        at_least: Option<&str>,
        max_bytes: Option<usize>,
    ) -> AppResult<ProgressSummary> {
        if link_id.trim().is_empty() {
            return Err(AppError::invalid("linkId", "is required").with_cid(&caller.cid));
        }
        let visibility = summarised(caller, customer);
        let small = self
            .read(caller, at_least, |models| {
                Ok(models.progress_summary_parts_within(link_id, &visibility, LARGE_SUMMARY))
            })
            .await?;
        // Decoded after the read lock is released (hostile57 H1: a batch of 10,000 finished
        // agendas took a second under it, and every reader, the projections and the health
        // probe waited); a large one on a blocking thread, one at a time, so the async workers
        // stay free for every other request. A large one is taken out of the read models only
        // once it has its turn, first its principal's (one at a time each), then the server's
        // (reprobe57: taken out before the wait, each waiting request held its copy, 4.3 GB
        // for one tenant's flood; and with one queue for all, another tenant's summary waited
        // 11-27 s behind it).
        let summed = move |parts: Vec<DetachedProgress>, link_id: &str| {
            let agendas = parts.len();
            let list: Result<Vec<_>, _> =
                parts.into_iter().map(DetachedProgress::progress).collect();
            let summary = pop_domain::rollup::progress_summary(link_id, list.map_err(corrupt)?);
            if let Some(max) = max_bytes
                && pop_domain::validate::json_bytes_within(&summary, max).is_none()
            {
                return Err(AppError::new(
                    Code::ResponseTooLarge,
                    format!(
                        "response: the summary of {agendas} agendas is larger than the limit of \
                         {max} bytes; read the batch's agendas in pages instead"
                    ),
                ));
            }
            Ok(summary)
        };
        let summary = match small {
            Some(parts) => summed(parts, link_id),
            None => {
                // One place in the queue per set of customers summed up, not per token
                // (hostile59 L2: a customer's three tokens held three places, and another
                // customer's summary waited behind each); an admin of every customer has its own.
                let owner = match &visibility {
                    Visibility::Customers(ids) => {
                        ids.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
                    }
                    Visibility::All => format!("*\n{}", caller.principal.name),
                };
                let turn = self.inner.summary_turns.turn(&owner, 1).await;
                let server = Arc::clone(&self.inner.summary_turn).acquire_owned().await;
                let (Some(turn), Ok(server)) = (turn, server) else {
                    return Err(AppError::new(Code::Unavailable, "the server is stopping; retry")
                        .with_cid(&caller.cid));
                };
                // Settled already by the first read: no second wait while holding the turns.
                let parts = self.projections().read().progress_summary_parts(link_id, &visibility);
                let link_id = link_id.to_owned();
                // The turns go with the work: a request given up (its client gone, its
                // deadline) leaves the decode running, which must keep them till it ends
                // (review57 H1).
                tokio::task::spawn_blocking(move || {
                    let _turns = (turn, server);
                    summed(parts, &link_id)
                })
                .await
                .map_err(|e| AppError::internal("summing up a batch", &e))?
            }
        };
        summary.map_err(|e| e.with_cid(&caller.cid))
    }

    /// The events of one agenda's stream, oldest first (`after`: a stream version from a
    /// previous page's `end_cursor`); `None` when the agenda does not exist or is not visible.
    /// Visibility comes from the write side (the stream itself), so a just-submitted agenda's
    /// history is readable before the projections have it.
    pub async fn agenda_events(
        &self,
        caller: &Caller,
        agenda: Named<'_>,
        after: Option<&str>,
        first: Option<i64>,
    ) -> AppResult<Option<EventPage>> {
        caller
            .run(Action::Read, None, async |_| {
                let first = event_page_size(first)?;
                let key = match self.resolve(caller, agenda).await {
                    Ok(key) => key,
                    Err(e) if e.code == crate::Code::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                if !self.sees_agenda_of(caller, agenda.id, &key).await? {
                    return Ok(None);
                }
                let stream = stream_name(AGENDA_CATEGORY, &key);
                match self.event_page(Some(&stream), after, first).await {
                    // Reaped since (a cached state may still name its customer): gone.
                    Err(e) if e.code == crate::Code::NotFound => Ok(None),
                    page => page.map(Some),
                }
            })
            .await
    }

    /// The global event log after a position (admins only: it spans every customer).
    pub async fn events(
        &self,
        caller: &Caller,
        after: Option<&str>,
        first: Option<i64>,
    ) -> AppResult<EventPage> {
        caller
            .run(Action::ReadLog, None, async |_| {
                let first = event_page_size(first)?;
                self.event_page(None, after, first).await
            })
            .await
    }

    /// A page of a stream or of the log: reads `first` events, then one more to tell whether
    /// there are more (a read may return fewer than asked before the end, so a short page
    /// alone does not mean the end).
    async fn event_page(
        &self,
        stream: Option<&str>,
        after: Option<&str>,
        first: usize,
    ) -> AppResult<EventPage> {
        let store = self.store();
        let subject = stream.unwrap_or("the event log");
        let fail = |e: pop_store::StoreError| error::store(subject, &e);
        let (events, more) = match stream {
            Some(stream) => {
                let from = match after {
                    None => 0,
                    Some(a) => a
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| {
                            AppError::invalid("after", format!("{a:?} is not a stream version"))
                        })?
                        .saturating_add(1),
                };
                let events = store
                    .read_stream(stream, from, first, Direction::Forwards)
                    .await
                    .map_err(fail)?;
                let next = events.last().map_or(from, |e| e.version.saturating_add(1));
                let more = !events.is_empty()
                    && !store
                        .read_stream(stream, next, MORE_PROBE, Direction::Forwards)
                        .await
                        .map_err(fail)?
                        .is_empty();
                (events, more)
            }
            None => {
                let from = match after {
                    None => Position::START,
                    Some(a) => self.position("after", a)?,
                };
                let events = store.read_all(from, first).await.map_err(fail)?;
                let next = events.last().map_or(from, |e| e.position);
                let more = !events.is_empty()
                    && !store.read_all(next, MORE_PROBE).await.map_err(fail)?.is_empty();
                (events, more)
            }
        };
        let end_cursor = events.last().map(|e| match stream {
            Some(_) => e.version.to_string(),
            None => e.position.to_string(),
        });
        Ok(EventPage { events, end_cursor, more, position: self.projections().applied() })
    }

    /// The work counters of an insight (every customer's agendas: a resource pool's view).
    /// The totals come from the agenda model's per-insight, per-phase indexes (constant time).
    pub fn insight_counts(&self, insight_id: &str) -> InsightCounts {
        let models = self.projections().read();
        let agendas = models.agendas();
        InsightCounts {
            queue_depth: agendas.count_in(insight_id, Phase::Queued),
            waiting: WAITING_PHASES.iter().map(|p| agendas.count_in(insight_id, *p)).sum(),
            executing: agendas.count_in(insight_id, Phase::Executing),
        }
    }

    /// The WAITING agendas of an insight per customer, only for customers the caller may see
    /// (every customer for `*`); customers with none are left out. Most waiting first (then by
    /// customer id), at most [`MAX_WAITING_CUSTOMERS`] entries. Counts at most
    /// [`MAX_WAITING_PAGES`] pages' worth, shared among the phases and the customers (every
    /// customer with waiting agendas is listed), so on a larger backlog the counts are lower
    /// bounds.
    pub fn waiting_by_customer(&self, caller: &Caller, insight_id: &str) -> Vec<(String, usize)> {
        let models = self.projections().read();
        waiting_by_customer(&models, &caller.principal.customers, insight_id)
    }
}

fn event_page_size(first: Option<i64>) -> AppResult<usize> {
    match first {
        None => Ok(DEFAULT_PAGE_SIZE.min(MAX_EVENT_PAGE_SIZE)),
        Some(n) if n >= 1 && usize::try_from(n).is_ok_and(|n| n <= MAX_EVENT_PAGE_SIZE) => {
            Ok(n as usize)
        }
        Some(n) => {
            Err(AppError::invalid("first", format!("{n} is outside 1..={MAX_EVENT_PAGE_SIZE}")))
        }
    }
}

/// The agendas `principal` may see that pass `filter`, from `after`, at most `limit`, mapped
/// by `map` (which may skip an entry by answering `None`). One agenda named by id (or progress
/// id) is looked up directly; otherwise the page is selected from the indexes, with the body
/// filters (title, resource pool) checked while the page is selected, before it is cut: a page
/// holds up to `limit` entries that pass them, and `next` is given only when another does
/// (within the read models' bound on entries examined per page,
/// [`pop_projections::MAX_SCANNED_PER_PAGE`], after which the page ends early with `next`).
fn select<T>(
    models: &ReadModels,
    principal: &Principal,
    filter: &AgendaFilter,
    after: Option<Cursor>,
    limit: usize,
    map: impl Fn(&AgendaEntry) -> Result<Option<T>, CorruptEntry>,
) -> AppResult<Page<T>> {
    let position = models.position();
    let empty = || Page { items: Vec::new(), next: None, position };
    let order_ms = |e: &AgendaEntry| match filter.order {
        AgendaListOrder::AddedTime => e.added_ms(),
        AgendaListOrder::UpdatedTime => e.updated_ms(),
    };
    let in_window = |e: &AgendaEntry| {
        filter.from.is_none_or(|f| order_ms(e) >= f.timestamp_millis())
            && filter.until.is_none_or(|u| order_ms(e) < u.timestamp_millis())
    };
    // Agendas named by id (one per customer using it): from the read models' own indexes.
    let customer = filter.customer_id.as_deref();
    let single: Option<Vec<&AgendaEntry>> = match (&filter.agenda_id, &filter.progress_id) {
        (Some(id), _) => Some(visible_agendas(models, principal, id, customer).collect()),
        (None, Some(p)) => Some(
            progress_or_pool(models, principal, p, customer).into_iter().map(|(e, _)| e).collect(),
        ),
        (None, None) => None,
    };
    if let Some(found) = single {
        let found: Vec<&AgendaEntry> = found
            .into_iter()
            .filter(|e| {
                filter.agenda_id.as_deref().is_none_or(|id| e.id() == id)
                    && filter.progress_id.as_deref().is_none_or(|p| names_progress(e, p))
                    && filter.admits_keys(e)
                    && filter.admits_body(e)
                    && in_window(e)
            })
            .collect();
        if filter.one {
            let id = filter.agenda_id.as_deref().or(filter.progress_id.as_deref()).unwrap_or("");
            let mut customers: Vec<&str> = found.iter().map(|e| e.customer_id()).collect();
            customers.sort_unstable();
            customers.dedup();
            if customers.len() > 1 {
                return Err(ambiguous(id, customers.len()));
            }
        }
        let mut items = Vec::new();
        for e in found {
            items.extend(map(e).map_err(corrupt)?);
        }
        return Ok(Page { items, next: None, position });
    }
    let visibility = match &filter.customer_id {
        Some(c) if principal.sees(c) => Visibility::Customers([c.clone()].into()),
        Some(_) => return Ok(empty()),
        None => principal.customers.clone(),
    };
    let order = match filter.order {
        AgendaListOrder::AddedTime => AgendaOrder::AddedTime,
        AgendaListOrder::UpdatedTime => AgendaOrder::UpdatedTime,
    };
    // The window's bounds as cursors: (t, "") sorts before every agenda at time t (ids are
    // never empty). Oldest first, the page starts after (from, ""), at the first agenda at or
    // after `from`, and ends at `until`; newest first, it starts before (until, ""), at the
    // last agenda before `until`, and ends before `from`.
    let bound = |t: Option<DateTime<Utc>>| t.map(|t| Cursor::new(t.timestamp_millis(), ""));
    let (begin, end) = match filter.newest_first {
        false => (bound(filter.from), filter.until.map(|t| t.timestamp_millis())),
        true => (bound(filter.until), filter.from.map(|t| t.timestamp_millis())),
    };
    let start = match (after, begin) {
        (Some(a), Some(b)) if filter.newest_first => Some(a.min(b)),
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let past_end = |ms: i64| match filter.newest_first {
        false => end.is_some_and(|u| ms >= u),
        true => end.is_some_and(|f| ms < f),
    };
    let query = AgendaQuery {
        visibility: &visibility,
        link_id: filter.link_id.as_deref(),
        insight_id: filter.insight_id.as_deref(),
        processing_state: filter.processing_state,
        phase: filter.outcome,
        order,
        descending: filter.newest_first,
        after: start.as_ref(),
        limit: limit.min(MAX_PAGE_SIZE),
    };
    let page = if filter.has_body_filters() {
        models.select_agendas_where(&query, |e| filter.admits_body(e))
    } else {
        models.select_agendas(&query)
    };
    let mut items = Vec::with_capacity(page.items.len());
    let mut cut = false;
    for entry in &page.items {
        if past_end(order_ms(entry)) {
            cut = true;
            break;
        }
        items.extend(map(entry).map_err(corrupt)?);
    }
    let next = if cut { None } else { page.next };
    Ok(Page { items, next, position })
}

fn waiting_by_customer(
    models: &ReadModels,
    visibility: &Visibility,
    insight_id: &str,
) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let budget = MAX_WAITING_PAGES * MAX_PAGE_SIZE / WAITING_PHASES.len();
    for phase in WAITING_PHASES {
        for (customer, n) in
            models.agendas().count_per_customer(insight_id, phase, visibility, budget)
        {
            *counts.entry(customer).or_default() += n;
        }
    }
    let mut list: Vec<(String, usize)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(MAX_WAITING_CUSTOMERS);
    list
}
