//! Queries: every object by id (null when it does not exist *or* the caller may not see it —
//! the two are indistinguishable on purpose), filtered cursor-paginated lists, progress
//! summaries, and the event history for audits. Every query takes `atLeastPosition` and
//! first waits (bounded) for the read models to reach it. Read-model access happens in
//! synchronous blocks: the read guard cannot be held across an `.await`.

use async_graphql::{Context, Enum, InputObject, Object, Result};
use chrono::{DateTime, Utc};
use pop_domain::agenda::CATEGORY as AGENDA_CATEGORY;
use pop_domain::aggregate::stream_name;
use pop_projections::{
    AgendaEntry, AgendaOrder, AgendaQuery, CorruptEntry, Cursor, ReadModels, Visibility,
};
use pop_store::{Direction, Position};

use crate::auth::{Action, Principal};
use crate::config::MAX_EVENT_PAGE_SIZE;
use crate::error::{ApiError, ApiResult};
use crate::graphql::types::*;
use crate::graphql::{
    Services, authorize, page_size, parse_cursor, parse_position, services, wait_for,
};

/// The order of an agenda list.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgendaListOrder {
    /// By `(addedTime, id)`: stable, an agenda never moves.
    #[default]
    AddedTime,
    /// By `(updatedTime, id)`: recently changed last; an agenda moves when it changes.
    UpdatedTime,
}

/// Filters of agenda and agenda-progress lists (ANDed).
#[derive(InputObject, Debug, Clone, Default)]
pub struct AgendaFilter {
    /// Only this customer's agendas (empty when the caller may not see that customer).
    pub customer_id: Option<String>,
    pub link_id: Option<String>,
    /// `agendaInsight.insightId`.
    pub insight_id: Option<String>,
    pub processing_state: Option<ProcessingStateGql>,
    /// Only agendas whose order time (`addedTime` or `updatedTime`, per `order`) is at or
    /// after this.
    pub from: Option<DateTime<Utc>>,
    /// Only agendas whose order time is before this.
    pub until: Option<DateTime<Utc>>,
    pub order: Option<AgendaListOrder>,
}

pub struct QueryRoot;

/// One page of agenda read-model entries, mapped, with the cursor of the next page (`None`
/// at the end) and the read models' position. Shared by GraphQL's lists and the REST surface.
pub(crate) struct AgendaSlice<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
    pub position: String,
}

/// Pages of read-model entries, filtered for the caller, mapped by `map`.
fn agenda_page<T: async_graphql::OutputType>(
    models: &ReadModels,
    principal: &Principal,
    filter: &AgendaFilter,
    after: Option<Cursor>,
    limit: usize,
    map: impl Fn(&AgendaEntry) -> Result<Option<T>, CorruptEntry>,
) -> ApiResult<Page<T>> {
    let slice = agenda_slice(models, principal, filter, after, limit, None, map)?;
    Ok(Page {
        items: slice.items,
        has_next_page: slice.next.is_some(),
        end_cursor: slice.next.map(|c| c.to_string()),
        position: slice.position,
    })
}

/// The agendas the caller may see that pass `filter` (and `keep`, when given), from `after`,
/// at most `limit`, mapped by `map` (which may skip an entry by answering `None`). `keep` is
/// checked while the page is selected, before it is cut: a page holds up to `limit` entries
/// that pass it, and `next` is given only when another does (REST's lists; see
/// [`ReadModels::select_agendas_where`]), within the read models' bound on entries examined
/// per page ([`pop_projections::MAX_SCANNED_PER_PAGE`], after which the page ends early with
/// `next`). Without `keep` the page is GraphQL's: `next` whenever the scan did not reach the
/// end.
pub(crate) fn agenda_slice<T>(
    models: &ReadModels,
    principal: &Principal,
    filter: &AgendaFilter,
    after: Option<Cursor>,
    limit: usize,
    keep: Option<&dyn Fn(&AgendaEntry) -> bool>,
    map: impl Fn(&AgendaEntry) -> Result<Option<T>, CorruptEntry>,
) -> ApiResult<AgendaSlice<T>> {
    let position = models.position().to_string();
    let empty = || AgendaSlice { items: Vec::new(), next: None, position: position.clone() };
    let visibility = match &filter.customer_id {
        Some(c) if principal.sees(c) => Visibility::Customers([c.clone()].into()),
        Some(_) => return Ok(empty()),
        None => principal.customers.clone(),
    };
    let order = match filter.order.unwrap_or_default() {
        AgendaListOrder::AddedTime => AgendaOrder::AddedTime,
        AgendaListOrder::UpdatedTime => AgendaOrder::UpdatedTime,
    };
    let order_ms = |e: &AgendaEntry| match order {
        AgendaOrder::AddedTime => e.added_ms(),
        AgendaOrder::UpdatedTime => e.updated_ms(),
    };
    // `from` as a cursor: (from, "") sorts before every agenda at that time (ids are never
    // empty), so the page starts at the first agenda at or after `from`.
    let from = filter.from.map(|t| Cursor::new(t.timestamp_millis(), ""));
    let start = match (after, from) {
        (Some(a), Some(f)) => Some(a.max(f)),
        (a, f) => a.or(f),
    };
    let until = filter.until.map(|t| t.timestamp_millis());
    let query = AgendaQuery {
        visibility: &visibility,
        link_id: filter.link_id.as_deref(),
        insight_id: filter.insight_id.as_deref(),
        processing_state: filter.processing_state.map(Into::into),
        phase: None,
        order,
        after: start.as_ref(),
        limit,
    };
    let page = match keep {
        Some(keep) => models.select_agendas_where(&query, keep),
        None => models.select_agendas(&query),
    };
    let mut items = Vec::with_capacity(page.items.len());
    let mut cut = false;
    for entry in &page.items {
        if until.is_some_and(|u| order_ms(entry) >= u) {
            cut = true;
            break;
        }
        let item = map(entry)
            .map_err(|e| ApiError::internal("reading an agenda from the read models", &e))?;
        items.extend(item);
    }
    let next = if cut { None } else { page.next };
    Ok(AgendaSlice { items, next, position })
}

/// The shape every by-id config resolver shares: read access, read-your-writes, then `find`
/// on the read models for the caller.
async fn config_by_id<T>(
    ctx: &Context<'_>,
    at_least_position: Option<&str>,
    find: impl FnOnce(&ReadModels, &Principal) -> Option<T>,
) -> Result<Option<T>> {
    let caller = authorize(ctx, Action::Read)?;
    let services = services(ctx)?;
    wait_for(services, at_least_position).await?;
    let models = services.projections.read();
    Ok(find(&models, &caller.principal))
}

/// The shape every config list resolver shares: read access, a bounded page size, a cursor,
/// read-your-writes, then `list` of what the caller's customers see, mapped with `map`.
async fn config_list<O, T: async_graphql::OutputType>(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<String>,
    at_least_position: Option<&str>,
    list: impl for<'m> FnOnce(
        &'m ReadModels,
        &Visibility,
        Option<&Cursor>,
        usize,
    ) -> pop_projections::Page<&'m O>,
    map: impl Fn(&O) -> T,
) -> Result<Page<T>> {
    let caller = authorize(ctx, Action::Read)?;
    let services = services(ctx)?;
    let limit = page_size(first, services.config.max_page_size)?;
    let after = parse_cursor(after.as_deref())?;
    wait_for(services, at_least_position).await?;
    let models = services.projections.read();
    let page = list(&models, &caller.principal.customers, after.as_ref(), limit);
    Ok(config_page(&models, page, map))
}

fn config_page<'m, O, T: async_graphql::OutputType>(
    models: &'m ReadModels,
    page: pop_projections::Page<&'m O>,
    map: impl Fn(&O) -> T,
) -> Page<T> {
    Page {
        items: page.items.into_iter().map(map).collect(),
        has_next_page: page.next.is_some(),
        end_cursor: page.next.map(|c| c.to_string()),
        position: models.position().to_string(),
    }
}

pub(crate) fn corrupt(e: CorruptEntry) -> ApiError {
    ApiError::internal("reading an agenda from the read models", &e)
}

/// Whether the caller may see the agenda of `entry`.
fn sees_entry(principal: &Principal, entry: &AgendaEntry) -> bool {
    principal.sees(entry.customer_id())
}

// What each reader may see by id: one rule per object kind, shared by the GraphQL resolvers
// and the REST surface. `None` both when the object does not exist and when it is invisible.

/// The agenda entry with this id, if visible.
pub(crate) fn visible_agenda<'m>(
    models: &'m ReadModels,
    principal: &Principal,
    id: &str,
) -> Option<&'m AgendaEntry> {
    models.agenda_entry(id).filter(|e| sees_entry(principal, e))
}

/// The agenda entry whose AgendaProgress has this id, if visible.
pub(crate) fn visible_progress<'m>(
    models: &'m ReadModels,
    principal: &Principal,
    progress_id: &str,
) -> Option<&'m AgendaEntry> {
    models.agendas().by_progress_id(progress_id).filter(|e| sees_entry(principal, e))
}

/// The OperationProgress with this id, if visible.
pub(crate) fn visible_operation_progress(
    models: &ReadModels,
    principal: &Principal,
    id: &str,
) -> ApiResult<Option<pop_domain::model::OperationProgress>> {
    let found = models.operation_progress(id).map_err(corrupt)?;
    Ok(found.filter(|p| principal.sees(&p.customer_id)))
}

pub(crate) fn visible_customer<'m>(
    models: &'m ReadModels,
    principal: &Principal,
    id: &str,
) -> Option<&'m pop_domain::model::Customer> {
    models.customer(id).filter(|c| principal.sees(&c.customer_id))
}

pub(crate) fn visible_resource_pool<'m>(
    models: &'m ReadModels,
    principal: &Principal,
    id: &str,
) -> Option<&'m pop_domain::model::ResourcePool> {
    models.resource_pool(id).filter(|p| principal.sees(&p.customer_id))
}

/// An insight the caller owns, or that is global or shared with one of its customers.
pub(crate) fn visible_insight<'m>(
    models: &'m ReadModels,
    principal: &Principal,
    id: &str,
) -> Option<&'m pop_domain::model::Insight> {
    let v = &principal.customers;
    models
        .insight(id)
        .filter(|i| v.sees_shared(&i.customer_id, i.is_global, &i.allowed_customer_ids))
}

/// A template the caller owns, or that is global or shared with one of its customers.
pub(crate) fn visible_template<'m>(
    models: &'m ReadModels,
    principal: &Principal,
    id: &str,
) -> Option<&'m pop_domain::model::AgendaTemplate> {
    let v = &principal.customers;
    models
        .template(id)
        .filter(|t| v.sees_shared(&t.customer_id, t.is_global, &t.allowed_customer_ids))
}

/// DOMAIN.md §4.3 over the agendas with this linkId that the caller may see.
pub(crate) fn progress_summary(
    models: &ReadModels,
    principal: &Principal,
    link_id: &str,
) -> ApiResult<pop_domain::model::ProgressSummary> {
    models.progress_summary(link_id, &principal.customers).map_err(corrupt)
}

/// A page of a stream or of the log: reads `first` events, then one more to tell whether
/// there are more (a read may return fewer than asked before the end, so a short page alone
/// does not mean the end).
async fn event_page(
    services: &Services,
    stream: Option<&str>,
    after: Option<&str>,
    first: usize,
) -> ApiResult<Page<EventGql>> {
    let store = &services.store;
    let subject = stream.unwrap_or("the event log");
    let fail = |e: pop_store::StoreError| crate::error::store(subject, &e);
    let (events, more) = match stream {
        Some(stream) => {
            let from = match after {
                None => 0,
                Some(a) => a
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| {
                        ApiError::invalid("after", format!("{a:?} is not a stream version"))
                    })?
                    .saturating_add(1),
            };
            let events =
                store.read_stream(stream, from, first, Direction::Forwards).await.map_err(fail)?;
            let next = events.last().map_or(from, |e| e.version.saturating_add(1));
            let more = !events.is_empty()
                && !store
                    .read_stream(stream, next, 1, Direction::Forwards)
                    .await
                    .map_err(fail)?
                    .is_empty();
            (events, more)
        }
        None => {
            let from = match after {
                None => Position::START,
                Some(a) => parse_position("after", a)?,
            };
            let events = store.read_all(from, first).await.map_err(fail)?;
            let next = events.last().map_or(from, |e| e.position);
            let more =
                !events.is_empty() && !store.read_all(next, 1).await.map_err(fail)?.is_empty();
            (events, more)
        }
    };
    let end_cursor = events.last().map(|e| match stream {
        Some(_) => e.version.to_string(),
        None => e.position.to_string(),
    });
    Ok(Page {
        items: events.iter().map(EventGql::from).collect(),
        end_cursor,
        has_next_page: more,
        position: services.projections.applied().to_string(),
    })
}

#[Object]
impl QueryRoot {
    /// The caller as the API sees it (name, role, customers).
    async fn me(&self, ctx: &Context<'_>) -> Result<PrincipalGql> {
        let caller = authorize(ctx, Action::Read)?;
        Ok(PrincipalGql::from(&caller.principal))
    }

    /// An agenda by id; null when there is none the caller may see.
    async fn agenda(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<AgendaGql>> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        wait_for(services, at_least_position.as_deref()).await?;
        let models = services.projections.read();
        let Some(entry) = visible_agenda(&models, &caller.principal, &id) else {
            return Ok(None);
        };
        Ok(entry.agenda().map_err(corrupt)?.as_ref().map(AgendaGql::from))
    }

    /// Agendas the caller may see, filtered, oldest first (or by `order`).
    async fn agendas(
        &self,
        ctx: &Context<'_>,
        filter: Option<AgendaFilter>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> Result<Page<AgendaGql>> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        let limit = page_size(first, services.config.max_page_size)?;
        let after = parse_cursor(after.as_deref())?;
        wait_for(services, at_least_position.as_deref()).await?;
        let models = services.projections.read();
        let filter = filter.unwrap_or_default();
        Ok(agenda_page(&models, &caller.principal, &filter, after, limit, |e| {
            Ok(e.agenda()?.as_ref().map(AgendaGql::from))
        })?)
    }

    /// An AgendaProgress by id (the agenda's `progressId`); null when not visible.
    async fn agenda_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<AgendaProgressGql>> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        wait_for(services, at_least_position.as_deref()).await?;
        let models = services.projections.read();
        let Some(entry) = visible_progress(&models, &caller.principal, &id) else {
            return Ok(None);
        };
        Ok(Some(AgendaProgressGql::from(&entry.progress().map_err(corrupt)?)))
    }

    /// AgendaProgress of the agendas the caller may see, filtered like `agendas`.
    async fn agenda_progress_list(
        &self,
        ctx: &Context<'_>,
        filter: Option<AgendaFilter>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> Result<Page<AgendaProgressGql>> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        let limit = page_size(first, services.config.max_page_size)?;
        let after = parse_cursor(after.as_deref())?;
        wait_for(services, at_least_position.as_deref()).await?;
        let models = services.projections.read();
        let filter = filter.unwrap_or_default();
        Ok(agenda_page(&models, &caller.principal, &filter, after, limit, |e| {
            Ok(Some(AgendaProgressGql::from(&e.progress()?)))
        })?)
    }

    /// An OperationProgress by id (`<agendaProgressId>-<operation name>`).
    async fn operation_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<OperationProgressGql>> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        wait_for(services, at_least_position.as_deref()).await?;
        let models = services.projections.read();
        let found = visible_operation_progress(&models, &caller.principal, &id)?;
        Ok(found.as_ref().map(OperationProgressGql::from))
    }

    /// DOMAIN.md §4.3 over the agendas with this linkId that the caller may see (a caller
    /// who sees none gets an empty, COMPLETE summary).
    async fn progress_summary(
        &self,
        ctx: &Context<'_>,
        link_id: String,
        at_least_position: Option<String>,
    ) -> Result<ProgressSummaryGql> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        wait_for(services, at_least_position.as_deref()).await?;
        let models = services.projections.read();
        let summary = progress_summary(&models, &caller.principal, &link_id)?;
        Ok(ProgressSummaryGql::from(&summary))
    }

    /// The events of one agenda's stream, oldest first (`after`: a stream version from a
    /// previous page's `endCursor`); null when the agenda does not exist or is not visible.
    async fn agenda_events(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        after: Option<String>,
        first: Option<i32>,
    ) -> Result<Option<Page<EventGql>>> {
        let caller = authorize(ctx, Action::Read)?;
        let services = services(ctx)?;
        let first = page_size(first, MAX_EVENT_PAGE_SIZE)?;
        // Visibility from the write side (the stream itself), so a just-submitted agenda's
        // history is readable before the projections have it.
        let visible = match services
            .commands
            .load::<pop_domain::agenda::AgendaState>(&agenda_id)
            .await
        {
            Ok((state, _)) => state.agenda().is_some_and(|a| caller.principal.sees(&a.customer_id)),
            Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted {
                ..
            })) => false,
            Err(e) => return Err(crate::error::execute(&format!("agenda {agenda_id:?}"), e).into()),
        };
        if !visible {
            return Ok(None);
        }
        let stream = stream_name(AGENDA_CATEGORY, &agenda_id);
        Ok(Some(event_page(services, Some(&stream), after.as_deref(), first).await?))
    }

    /// The global event log after a position (admins only: it spans every customer).
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> Result<Page<EventGql>> {
        authorize(ctx, Action::ReadLog)?;
        let services = services(ctx)?;
        let first = page_size(first, MAX_EVENT_PAGE_SIZE)?;
        Ok(event_page(services, None, after.as_deref(), first).await?)
    }

    async fn customer(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<CustomerGql>> {
        config_by_id(ctx, at_least_position.as_deref(), |models, principal| {
            visible_customer(models, principal, &id).map(CustomerGql::from)
        })
        .await
    }

    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> Result<Page<CustomerGql>> {
        config_list(
            ctx,
            first,
            after,
            at_least_position.as_deref(),
            |m, v, a, l| m.customers(v, a, l),
            |o| CustomerGql::from(o),
        )
        .await
    }

    async fn resource_pool(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<ResourcePoolGql>> {
        config_by_id(ctx, at_least_position.as_deref(), |models, principal| {
            visible_resource_pool(models, principal, &id).map(ResourcePoolGql::from)
        })
        .await
    }

    async fn resource_pools(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> Result<Page<ResourcePoolGql>> {
        config_list(
            ctx,
            first,
            after,
            at_least_position.as_deref(),
            |m, v, a, l| m.resource_pools(v, a, l),
            |o| ResourcePoolGql::from(o),
        )
        .await
    }

    /// An insight the caller owns, or that is global or shared with one of its customers.
    async fn insight(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<InsightGql>> {
        config_by_id(ctx, at_least_position.as_deref(), |models, principal| {
            visible_insight(models, principal, &id).map(InsightGql::from)
        })
        .await
    }

    async fn insights(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> Result<Page<InsightGql>> {
        config_list(
            ctx,
            first,
            after,
            at_least_position.as_deref(),
            |m, v, a, l| m.insights(v, a, l),
            |o| InsightGql::from(o),
        )
        .await
    }

    /// A template the caller owns, or that is global or shared with one of its customers.
    async fn template(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> Result<Option<AgendaTemplateGql>> {
        config_by_id(ctx, at_least_position.as_deref(), |models, principal| {
            visible_template(models, principal, &id).map(AgendaTemplateGql::from)
        })
        .await
    }

    async fn templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> Result<Page<AgendaTemplateGql>> {
        config_list(
            ctx,
            first,
            after,
            at_least_position.as_deref(),
            |m, v, a, l| m.templates(v, a, l),
            |o| AgendaTemplateGql::from(o),
        )
        .await
    }
}
