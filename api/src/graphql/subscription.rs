//! Subscriptions (graphql-transport-ws): agenda progress by id, by customer and by linkId,
//! and the operation progress of one agenda. They are fed from the projections' change feed —
//! never from the mutation path — so they announce only what is durable and applied, and see
//! the writes of every replica sharing the log.
//!
//! On each relevant change the subscription reads the object's *current* state from the read
//! models and sends it, tagged with the change's position. Each subscriber has a bounded
//! buffer ([`crate::feed`]); when it falls behind it receives one item with `lagged: true`
//! and then the current state of everything it may have missed (`resync: true`): for one
//! agenda that is the agenda; for a customer or a linkId it is every agenda the log says
//! changed since the last position delivered (bounded by [`MAX_RESYNC_SCAN`] events and
//! [`MAX_RESYNC_ITEMS`] agendas, else `truncated`). `afterPosition` resumes the same way.
//!
//! Tenancy: changes are filtered by the caller's customers before they enter the buffer, and
//! every re-read checks visibility again.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use async_graphql::futures_util::Stream;
use async_graphql::{Context, Result, Subscription};
use futures::StreamExt;
use pop_domain::agenda::CATEGORY as AGENDA_CATEGORY;
use pop_projections::{AgendaEntry, Change, ChangeKind, ReadModels};
use pop_store::{Position, StoreError};

use crate::auth::{Action, Principal};
use crate::config::{MAX_RESYNC_ITEMS, MAX_RESYNC_SCAN};
use crate::error::ApiError;
use crate::feed::{FeedItem, FeedReceiver, Key};
use crate::graphql::types::*;
use crate::graphql::{Services, authorize, parse_position, services, wait_for};
use crate::metrics;

/// Events read per log query while looking for changed agendas.
const RESYNC_READ_BATCH: usize = 1_000;

pub struct SubscriptionRoot;

/// What a subscription follows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// One AgendaProgress, by its id.
    Progress(String),
    Customer(String),
    Link(String),
    /// The operation progress of one agenda, by agenda id.
    Operations(String),
}

impl Target {
    fn admits(&self, c: &Change, principal: &Principal) -> bool {
        c.kind == ChangeKind::Agenda
            && principal.sees(&c.customer_id)
            && match self {
                Target::Progress(id) => c.progress_id.as_deref() == Some(id.as_str()),
                Target::Customer(customer) => c.customer_id.as_ref() == customer.as_str(),
                Target::Link(link) => c.link_id.as_deref() == Some(link.as_str()),
                Target::Operations(agenda) => c.id.as_ref() == agenda.as_str(),
            }
    }

    fn admits_entry(&self, e: &AgendaEntry, principal: &Principal) -> bool {
        principal.sees(e.customer_id())
            && match self {
                Target::Progress(id) => e.progress_id() == id,
                Target::Customer(customer) => e.customer_id() == customer,
                Target::Link(link) => e.link_id() == Some(link.as_str()),
                Target::Operations(agenda) => e.id() == agenda,
            }
    }

    /// The one key of a change this target follows: the dispatcher routes by it, and
    /// [`Target::admits`] still decides (kind and visibility included).
    fn key(&self) -> Key {
        match self {
            Target::Progress(id) => Key::Progress(Arc::from(id.as_str())),
            Target::Customer(customer) => Key::Customer(Arc::from(customer.as_str())),
            Target::Link(link) => Key::Link(Arc::from(link.as_str())),
            Target::Operations(agenda) => Key::Agenda(Arc::from(agenda.as_str())),
        }
    }

    /// Whether finding what changed needs the log (groups) or just the one object.
    fn is_group(&self) -> bool {
        matches!(self, Target::Customer(_) | Target::Link(_))
    }
}

/// An item before it is given its GraphQL type.
enum Out {
    Progress(Box<AgendaProgressUpdate>),
    Operations(OperationProgressUpdate),
}

fn progress_update(position: Position, progress: Option<AgendaProgressGql>, resync: bool) -> Out {
    Out::Progress(Box::new(AgendaProgressUpdate {
        position: position.to_string(),
        removed: progress.is_none(),
        progress,
        lagged: false,
        missed: 0,
        resync,
        truncated: false,
    }))
}

/// Counts the subscription in the active-subscriptions gauge while it lives.
struct ActiveGuard;

impl ActiveGuard {
    fn new() -> ActiveGuard {
        metrics::subscription_started();
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::subscription_ended();
    }
}

struct Sub {
    services: Arc<Services>,
    principal: Principal,
    target: Target,
    feed: FeedReceiver,
    pending: VecDeque<Out>,
    /// Everything up to here has been reflected in what was sent.
    delivered: Position,
    _active: ActiveGuard,
}

impl Sub {
    async fn next(&mut self) -> Option<Out> {
        loop {
            if let Some(out) = self.pending.pop_front() {
                return Some(out);
            }
            match self.feed.recv().await? {
                FeedItem::Change(change) => {
                    // Already covered by the state sent at start or at a resync.
                    if change.position <= self.delivered {
                        continue;
                    }
                    self.delivered = change.position;
                    let models = self.services.projections.read();
                    let out = self.render(&models, &change);
                    self.pending.extend(out);
                }
                FeedItem::Lagged { missed } => self.resync(Some(missed)).await,
            }
        }
    }

    /// The current state behind one change.
    fn render(&self, models: &ReadModels, change: &Change) -> Option<Out> {
        let entry = models
            .agenda_entry(&change.id)
            .filter(|e| self.target.admits_entry(e, &self.principal));
        match &self.target {
            Target::Operations(agenda) => {
                let progress = entry.and_then(|e| e.progress().ok());
                let mut found = Vec::new();
                let mut removed = Vec::new();
                for name in &change.operations {
                    match progress
                        .as_ref()
                        .and_then(|p| p.operation_progress.iter().find(|o| &o.operation == name))
                    {
                        Some(op) => found.push(OperationProgressGql::from(op)),
                        None => removed.push(name.clone()),
                    }
                }
                if found.is_empty() && removed.is_empty() && progress.is_some() {
                    // A change of the agenda alone (queued, claimed): nothing for this stream.
                    return None;
                }
                Some(Out::Operations(OperationProgressUpdate {
                    position: change.position.to_string(),
                    agenda_id: agenda.clone(),
                    operation_progress: found,
                    removed_operations: removed,
                    lagged: false,
                    missed: 0,
                    resync: false,
                }))
            }
            _ => {
                let progress = match entry.map(AgendaEntry::progress) {
                    Some(Ok(p)) => Some(AgendaProgressGql::from(&p)),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "a subscription could not read an agenda");
                        None
                    }
                    None => None,
                };
                Some(progress_update(change.position, progress, false))
            }
        }
    }

    /// Queues the current state of everything that may have changed after `self.delivered`:
    /// after a lag (`missed` is `Some`) behind a lagged item, or at start.
    async fn resync(&mut self, missed: Option<u64>) {
        let now = self.services.projections.applied();
        let mut truncated = false;
        let group_ids = if self.target.is_group() {
            match changed_agendas(&self.services, self.delivered, now).await {
                Ok((ids, cut)) => {
                    truncated = cut;
                    ids
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a subscription could not read the log to resync");
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
            let models = self.services.projections.read();
            position = models.position();
            match &self.target {
                Target::Progress(id) => {
                    let entry = models
                        .agendas()
                        .by_progress_id(id)
                        .filter(|e| self.target.admits_entry(e, &self.principal));
                    if let Some(Ok(p)) = entry.map(AgendaEntry::progress) {
                        items.push(progress_update(
                            position,
                            Some(AgendaProgressGql::from(&p)),
                            true,
                        ));
                    }
                }
                Target::Operations(agenda) => {
                    let entry = models
                        .agenda_entry(agenda)
                        .filter(|e| self.target.admits_entry(e, &self.principal));
                    if let Some(Ok(p)) = entry.map(AgendaEntry::progress) {
                        items.push(Out::Operations(OperationProgressUpdate {
                            position: position.to_string(),
                            agenda_id: agenda.clone(),
                            operation_progress: p
                                .operation_progress
                                .iter()
                                .map(OperationProgressGql::from)
                                .collect(),
                            removed_operations: Vec::new(),
                            lagged: false,
                            missed: 0,
                            resync: true,
                        }));
                    }
                }
                Target::Customer(_) | Target::Link(_) => {
                    for id in &group_ids {
                        let entry = models
                            .agenda_entry(id)
                            .filter(|e| self.target.admits_entry(e, &self.principal));
                        if let Some(Ok(p)) = entry.map(AgendaEntry::progress) {
                            items.push(progress_update(
                                position,
                                Some(AgendaProgressGql::from(&p)),
                                true,
                            ));
                        }
                    }
                }
            }
        }
        if let Some(missed) = missed {
            let lagged = match &self.target {
                Target::Operations(agenda) => Out::Operations(OperationProgressUpdate {
                    position: position.to_string(),
                    agenda_id: agenda.clone(),
                    operation_progress: Vec::new(),
                    removed_operations: Vec::new(),
                    lagged: true,
                    missed,
                    resync: false,
                }),
                _ => Out::Progress(Box::new(AgendaProgressUpdate {
                    position: position.to_string(),
                    progress: None,
                    removed: false,
                    lagged: true,
                    missed,
                    resync: false,
                    truncated,
                })),
            };
            self.pending.push_back(lagged);
        }
        self.pending.extend(items);
        self.delivered = self.delivered.max(position);
    }
}

/// The agendas with events in the log after `after` up to `upto`, in order of first change;
/// `true` when the scan stopped at a bound before `upto`.
async fn changed_agendas(
    services: &Services,
    after: Position,
    upto: Position,
) -> std::result::Result<(Vec<String>, bool), StoreError> {
    let prefix = format!("{AGENDA_CATEGORY}-");
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut from = after;
    let mut scanned = 0usize;
    while from < upto {
        if scanned >= MAX_RESYNC_SCAN || ids.len() >= MAX_RESYNC_ITEMS {
            return Ok((ids, true));
        }
        let batch = services.store.read_all(from, RESYNC_READ_BATCH).await?;
        let Some(last) = batch.last() else { break };
        from = last.position;
        for event in batch.iter().filter(|e| e.position <= upto) {
            scanned += 1;
            if let Some(id) = event.stream.strip_prefix(&prefix)
                && ids.len() < MAX_RESYNC_ITEMS
                && seen.insert(id.to_string())
            {
                ids.push(id.to_string());
            }
        }
    }
    Ok((ids, false))
}

/// Starts a subscription: joins the feed first (so nothing between the initial read and the
/// first change is lost), waits for `after_position`, then queues the starting state.
async fn start(
    ctx: &Context<'_>,
    target: Target,
    after_position: Option<String>,
) -> Result<impl Stream<Item = Out> + use<>> {
    let caller = authorize(ctx, Action::Read)?;
    let services = Arc::clone(services(ctx)?);
    let principal = caller.principal.clone();
    let filter_target = target.clone();
    let filter_principal = principal.clone();
    let feed = services
        .feed
        .register(target.key(), move |c| filter_target.admits(c, &filter_principal))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{e}; close other subscriptions or try again later (it is a server-wide bound)"
            ))
        })?;
    wait_for(&services, after_position.as_deref()).await?;
    let delivered = match after_position.as_deref() {
        Some(p) => parse_position("afterPosition", p)?,
        None => services.projections.applied(),
    };
    let mut sub = Sub {
        services,
        principal,
        target,
        feed,
        pending: VecDeque::new(),
        delivered,
        _active: ActiveGuard::new(),
    };
    // Single objects start with their current state; groups only when resuming.
    if !sub.target.is_group() || after_position.is_some() {
        sub.resync(None).await;
    }
    Ok(futures::stream::unfold(sub, |mut sub| async move {
        let out = sub.next().await?;
        Some((out, sub))
    }))
}

fn progress_only(stream: impl Stream<Item = Out>) -> impl Stream<Item = AgendaProgressUpdate> {
    stream.filter_map(|out| async move {
        match out {
            Out::Progress(p) => Some(*p),
            Out::Operations(_) => None,
        }
    })
}

fn check_id(field: &str, id: &str) -> Result<()> {
    if id.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty").into());
    }
    Ok(())
}

#[Subscription]
impl SubscriptionRoot {
    /// One AgendaProgress (by its id): its current state first, then after every change.
    async fn agenda_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        check_id("id", &id)?;
        Ok(progress_only(start(ctx, Target::Progress(id), after_position).await?))
    }

    /// Every change of a customer's agendas. A customer outside the caller's set is
    /// FORBIDDEN (decided by the token alone, so it reveals nothing about the customer). With
    /// `afterPosition`, first the agendas changed since then.
    async fn agenda_progress_by_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        check_id("customerId", &customer_id)?;
        let caller = authorize(ctx, Action::Read)?;
        if !caller.principal.sees(&customer_id) {
            return Err(ApiError::forbidden(format!(
                "principal {:?} may not follow customer {customer_id:?}",
                caller.principal.name
            ))
            .into());
        }
        Ok(progress_only(start(ctx, Target::Customer(customer_id), after_position).await?))
    }

    /// Every change of the visible agendas sharing a linkId.
    async fn agenda_progress_by_link_id(
        &self,
        ctx: &Context<'_>,
        link_id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = AgendaProgressUpdate>> {
        check_id("linkId", &link_id)?;
        Ok(progress_only(start(ctx, Target::Link(link_id), after_position).await?))
    }

    /// The operation progress of one agenda: all of it first, then the entries each change
    /// touched.
    async fn operation_progress(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        after_position: Option<String>,
    ) -> Result<impl Stream<Item = OperationProgressUpdate>> {
        check_id("agendaId", &agenda_id)?;
        let stream = start(ctx, Target::Operations(agenda_id), after_position).await?;
        Ok(stream.filter_map(|out| async move {
            match out {
                Out::Operations(o) => Some(o),
                Out::Progress(_) => None,
            }
        }))
    }
}
