//! Queries: every object by id (null when it does not exist *or* the caller may not see it —
//! the application layer makes the two indistinguishable), filtered cursor-paginated lists,
//! progress summaries, and the event history for audits. Every query takes `atLeastPosition`
//! for read-your-writes. Resolvers translate arguments and shape results; the rules are
//! [`pop_app::App`]'s.

use async_graphql::{Context, Enum, InputObject, Object, OneofObject};
use chrono::{DateTime, Utc};

use pop_app::asof::AsOf;
use pop_app::configs::{ConfigFilter, ConfigKind};
use pop_app::reads::{self, PageRequest};
use pop_app::resolve::Named;
use pop_domain::model::{AgendaTemplate, Customer, Insight, ResourcePool};
use pop_projections::Phase;

use crate::error::GqlResult;
use crate::graphql::types::*;
use crate::graphql::{context, cost};

/// The order of an agenda list.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgendaListOrder {
    /// By `(addedTime, id)`: stable, an agenda never moves.
    #[default]
    AddedTime,
    /// By `(updatedTime, id)`: recently changed last; an agenda moves when it changes.
    UpdatedTime,
}

/// A point of the log to read as of (exactly one of the two). Reads with `asOf` fold the
/// agenda streams up to that point with the same rules the read models use.
#[derive(OneofObject, Debug, Clone)]
pub enum AsOfInput {
    /// Every event at or below this log position (`"42"`, `"7/3"`).
    Position(String),
    /// Every event committed at or before this time: per stream, the longest prefix of its
    /// events whose commit time is at or before it.
    Time(DateTime<Utc>),
}

impl AsOfInput {
    fn bound(self, caller: &pop_app::Caller) -> Result<AsOf, pop_app::AppError> {
        match self {
            AsOfInput::Position(p) => reads::parse_position("asOf.position", &p)
                .map(AsOf::Position)
                .map_err(|e| e.with_cid(&caller.cid)),
            AsOfInput::Time(t) => Ok(AsOf::Time(t)),
        }
    }
}

/// How a COMPLETE agenda ended.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgendaOutcome {
    Succeeded,
    Failed,
    Cancelled,
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
    /// Only COMPLETE agendas that ended so (their `processingStateMessage`).
    pub outcome: Option<AgendaOutcome>,
    /// Only agendas whose order time (`addedTime` or `updatedTime`, per `order`) is at or
    /// after this.
    pub from: Option<DateTime<Utc>>,
    /// Only agendas whose order time is before this.
    pub until: Option<DateTime<Utc>>,
    pub order: Option<AgendaListOrder>,
    /// Walk `order` backwards: the newest (or, by `UPDATED_TIME`, the most recently changed)
    /// agendas first; `endCursor` then continues with older ones. Default false.
    pub newest_first: Option<bool>,
}

impl From<AgendaFilter> for reads::AgendaFilter {
    fn from(f: AgendaFilter) -> reads::AgendaFilter {
        reads::AgendaFilter {
            customer_id: f.customer_id,
            link_id: f.link_id,
            insight_id: f.insight_id,
            processing_state: f.processing_state.map(Into::into),
            outcome: f.outcome.map(|o| match o {
                AgendaOutcome::Succeeded => Phase::Succeeded,
                AgendaOutcome::Failed => Phase::Failed,
                AgendaOutcome::Cancelled => Phase::Cancelled,
            }),
            from: f.from,
            until: f.until,
            order: match f.order.unwrap_or_default() {
                AgendaListOrder::AddedTime => reads::AgendaListOrder::AddedTime,
                AgendaListOrder::UpdatedTime => reads::AgendaListOrder::UpdatedTime,
            },
            newest_first: f.newest_first.unwrap_or(false),
            ..reads::AgendaFilter::default()
        }
    }
}

fn page_request(first: Option<i32>, after: Option<String>) -> PageRequest {
    PageRequest { first: first.map(i64::from), after }
}

pub struct QueryRoot;

/// A config object by id, mapped to its GraphQL shape.
async fn config_by_id<T, G>(
    ctx: &Context<'_>,
    id: &str,
    at_least: Option<&str>,
) -> GqlResult<Option<G>>
where
    T: ConfigKind,
    G: for<'a> From<&'a T>,
{
    let (app, caller) = context(ctx)?;
    Ok(app.config_by_id::<T>(caller, id, at_least).await?.as_ref().map(G::from))
}

/// A page of the visible config objects of one kind, mapped to their GraphQL shape.
async fn configs<T, G>(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<String>,
    at_least: Option<&str>,
) -> GqlResult<Page<G>>
where
    T: ConfigKind,
    G: async_graphql::OutputType + for<'a> From<&'a T>,
{
    let (app, caller) = context(ctx)?;
    let page = app
        .configs::<T>(caller, &ConfigFilter::default(), &page_request(first, after), at_least)
        .await?;
    Ok(Page::from_app(page, |o| G::from(&o)))
}

#[Object]
impl QueryRoot {
    /// The caller as the API sees it (name, role, customers).
    async fn me(&self, ctx: &Context<'_>) -> GqlResult<PrincipalGql> {
        let (app, caller) = context(ctx)?;
        Ok(PrincipalGql::from(&app.me(caller)?))
    }

    /// An agenda by id; null when there is none the caller may see. Ids are chosen per
    /// customer: a caller who sees several customers using the id names one (`customerId`).
    /// With `asOf`, the agenda as it was then (null if it did not exist yet).
    #[graphql(complexity = "cost::as_of(as_of.is_some(), child_complexity)")]
    async fn agenda(
        &self,
        ctx: &Context<'_>,
        id: String,
        customer_id: Option<String>,
        at_least_position: Option<String>,
        as_of: Option<AsOfInput>,
    ) -> GqlResult<Option<AgendaGql>> {
        let (app, caller) = context(ctx)?;
        let customer = customer_id.as_deref();
        let found = match as_of {
            Some(a) => app.agenda_as_of(caller, &id, customer, a.bound(caller)?).await?,
            None => app.agenda(caller, &id, customer, at_least_position.as_deref()).await?,
        };
        Ok(found.as_ref().map(AgendaGql::from))
    }

    /// Agendas the caller may see, filtered, oldest first (or by `order`).
    #[graphql(complexity = "cost::list_scan(first, child_complexity)")]
    async fn agendas(
        &self,
        ctx: &Context<'_>,
        filter: Option<AgendaFilter>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Page<AgendaGql>> {
        let (app, caller) = context(ctx)?;
        let filter = filter.unwrap_or_default().into();
        let page = app
            .agendas(caller, &filter, &page_request(first, after), at_least_position.as_deref())
            .await?;
        Ok(Page::from_app(page, |a| AgendaGql::from(&a)))
    }

    /// An AgendaProgress by id (the agenda's `progressId`); null when not visible. With
    /// `asOf`, the progress as it was then.
    #[graphql(complexity = "cost::as_of(as_of.is_some(), child_complexity)")]
    async fn agenda_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        customer_id: Option<String>,
        at_least_position: Option<String>,
        as_of: Option<AsOfInput>,
    ) -> GqlResult<Option<AgendaProgressGql>> {
        let (app, caller) = context(ctx)?;
        let customer = customer_id.as_deref();
        let found = match as_of {
            Some(a) => app.agenda_progress_as_of(caller, &id, customer, a.bound(caller)?).await?,
            None => {
                app.agenda_progress(caller, &id, customer, at_least_position.as_deref()).await?
            }
        };
        Ok(found.as_ref().map(AgendaProgressGql::from))
    }

    /// Who holds agenda progress `id`'s lease (the id `agendaProgress` takes) and until when:
    /// `null` when no worker holds it (waiting, complete) or it is not visible. A lease that
    /// ended without a report reaching the server: the holder is gone, or cannot report (the
    /// store unavailable); the reclaimer requeues the agenda once the store serves.
    async fn agenda_holding(
        &self,
        ctx: &Context<'_>,
        id: String,
        customer_id: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Option<HoldingGql>> {
        let (app, caller) = context(ctx)?;
        let found = app
            .agenda_holding(caller, &id, customer_id.as_deref(), at_least_position.as_deref())
            .await?;
        let now = app.now();
        Ok(found.map(|h| HoldingGql {
            holder: h.holder,
            expires: h.expires,
            expires_in_ms: (h.expires - now).num_milliseconds().max(0),
        }))
    }

    /// AgendaProgress of the agendas the caller may see, filtered like `agendas`.
    #[graphql(complexity = "cost::list_scan(first, child_complexity)")]
    async fn agenda_progress_list(
        &self,
        ctx: &Context<'_>,
        filter: Option<AgendaFilter>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Page<AgendaProgressGql>> {
        let (app, caller) = context(ctx)?;
        let filter = filter.unwrap_or_default().into();
        let page = app
            .agenda_progress_list(
                caller,
                &filter,
                &page_request(first, after),
                at_least_position.as_deref(),
            )
            .await?;
        Ok(Page::from_app(page, |p| AgendaProgressGql::from(&p)))
    }

    /// An OperationProgress by id (`<agendaProgressId>-<operation name>`). With `asOf`, as
    /// it was then.
    #[graphql(complexity = "cost::as_of(as_of.is_some(), child_complexity)")]
    async fn operation_progress(
        &self,
        ctx: &Context<'_>,
        id: String,
        customer_id: Option<String>,
        at_least_position: Option<String>,
        as_of: Option<AsOfInput>,
    ) -> GqlResult<Option<OperationProgressGql>> {
        let (app, caller) = context(ctx)?;
        let customer = customer_id.as_deref();
        let found = match as_of {
            Some(a) => {
                app.operation_progress_as_of(caller, &id, customer, a.bound(caller)?).await?
            }
            None => {
                app.operation_progress(caller, &id, customer, at_least_position.as_deref()).await?
            }
        };
        Ok(found.as_ref().map(OperationProgressGql::from))
    }

    /// DOMAIN.md §4.3 over the agendas with this linkId that the caller may see (a caller
    /// who sees none gets an empty, COMPLETE summary); with `customerId`, only that customer's
    /// (linkIds are chosen per customer: a caller that sees several customers names the one
    /// whose batch it means). With `asOf`, each of those agendas as it was then (those that
    /// did not exist yet are left out).
    #[graphql(complexity = "cost::summary(as_of.is_some(), child_complexity)")]
    async fn progress_summary(
        &self,
        ctx: &Context<'_>,
        link_id: String,
        customer_id: Option<String>,
        at_least_position: Option<String>,
        as_of: Option<AsOfInput>,
    ) -> GqlResult<ProgressSummaryGql> {
        let (app, caller) = context(ctx)?;
        let customer = customer_id.as_deref();
        let summary = match as_of {
            Some(a) => {
                app.progress_summary_as_of(caller, &link_id, customer, a.bound(caller)?).await?
            }
            None => {
                app.progress_summary(caller, &link_id, customer, at_least_position.as_deref())
                    .await?
            }
        };
        Ok(match ctx.look_ahead().field("progressList").exists() {
            true => ProgressSummaryGql::from(&summary),
            false => ProgressSummaryGql::unlisted(&summary),
        })
    }

    /// How many agendas the caller may see are in each state, and completions per minute over
    /// the last `minutes` (default 60, at most 1,440), optionally of one customer (a customer
    /// the caller may not see counts nothing). For dashboards: constant time per visible
    /// customer, plus the agendas completed in the window. Priced as a scan.
    // (hostile17: at 2 points, 1,700 aliases walked the completions for 8 s.)
    #[graphql(complexity = "cost::scan_of(child_complexity)")]
    async fn agenda_stats(
        &self,
        ctx: &Context<'_>,
        customer_id: Option<String>,
        minutes: Option<i32>,
        at_least_position: Option<String>,
    ) -> GqlResult<crate::graphql::agenda_stats::AgendaStatsGql> {
        let (app, caller) = context(ctx)?;
        let stats = app
            .agenda_stats(
                caller,
                customer_id.as_deref(),
                minutes.map(i64::from),
                at_least_position.as_deref(),
            )
            .await?;
        Ok((&stats).into())
    }

    /// The events of one agenda's stream, oldest first (`after`: a stream version from a
    /// previous page's `endCursor`); null when the agenda does not exist or is not visible.
    #[graphql(complexity = "cost::page(first, child_complexity)")]
    async fn agenda_events(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        customer_id: Option<String>,
        after: Option<String>,
        first: Option<i32>,
    ) -> GqlResult<Option<Page<EventGql>>> {
        let (app, caller) = context(ctx)?;
        let agenda = Named::of(&agenda_id, customer_id.as_deref());
        let page =
            app.agenda_events(caller, agenda, after.as_deref(), first.map(i64::from)).await?;
        Ok(page.map(Page::from_events))
    }

    /// An agenda's history as a timeline, oldest first: each event with its time, actor,
    /// cid, command, and the agenda's state, percent and new diagnostics right after it
    /// (`after`: a stream version from a previous page's `endCursor`); null when the agenda
    /// does not exist or is not visible. Priced as an as-of read: every page folds the
    /// agenda's stream from its start.
    // (review-s37: priced as a page, sixty aliases escaped the as-of pricing.)
    #[graphql(complexity = "cost::folded_page(first, child_complexity)")]
    async fn agenda_history(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        customer_id: Option<String>,
        after: Option<String>,
        first: Option<i32>,
    ) -> GqlResult<Option<crate::graphql::audit::HistoryPageGql>> {
        let (app, caller) = context(ctx)?;
        let agenda = Named::of(&agenda_id, customer_id.as_deref());
        let history =
            app.agenda_history(caller, agenda, after.as_deref(), first.map(i64::from)).await?;
        Ok(history.map(Into::into))
    }

    /// The global event log after a position (admins only: it spans every customer).
    #[graphql(complexity = "cost::page(first, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> GqlResult<Page<EventGql>> {
        let (app, caller) = context(ctx)?;
        let page = app.events(caller, after.as_deref(), first.map(i64::from)).await?;
        Ok(Page::from_events(page))
    }

    async fn customer(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> GqlResult<Option<CustomerGql>> {
        config_by_id::<Customer, _>(ctx, &id, at_least_position.as_deref()).await
    }

    #[graphql(complexity = "cost::list_scan(first, child_complexity)")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Page<CustomerGql>> {
        configs::<Customer, _>(ctx, first, after, at_least_position.as_deref()).await
    }

    async fn resource_pool(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> GqlResult<Option<ResourcePoolGql>> {
        config_by_id::<ResourcePool, _>(ctx, &id, at_least_position.as_deref()).await
    }

    #[graphql(complexity = "cost::list_scan(first, child_complexity)")]
    async fn resource_pools(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Page<ResourcePoolGql>> {
        configs::<ResourcePool, _>(ctx, first, after, at_least_position.as_deref()).await
    }

    /// An insight the caller owns, or that is global or shared with one of its customers.
    async fn insight(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> GqlResult<Option<InsightGql>> {
        config_by_id::<Insight, _>(ctx, &id, at_least_position.as_deref()).await
    }

    #[graphql(complexity = "cost::list_scan(first, child_complexity)")]
    async fn insights(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Page<InsightGql>> {
        configs::<Insight, _>(ctx, first, after, at_least_position.as_deref()).await
    }

    /// A template the caller owns, or that is global or shared with one of its customers.
    async fn template(
        &self,
        ctx: &Context<'_>,
        id: String,
        at_least_position: Option<String>,
    ) -> GqlResult<Option<AgendaTemplateGql>> {
        config_by_id::<AgendaTemplate, _>(ctx, &id, at_least_position.as_deref()).await
    }

    #[graphql(complexity = "cost::list_scan(first, child_complexity)")]
    async fn templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<Page<AgendaTemplateGql>> {
        configs::<AgendaTemplate, _>(ctx, first, after, at_least_position.as_deref()).await
    }
}
