//! The work counters of an `Insight` (issue 4, item 5), computed from the read models when
//! asked: `queueDepth`, `waiting`, `executing` and `waitingByCustomer`. The totals come from
//! the agenda model's per-insight, per-phase indexes (constant time); the per-customer counts
//! scan the insight's WAITING phase indexes with the caller's visibility, within
//! [`MAX_WAITING_PAGES`] pages.

use std::collections::HashMap;

use async_graphql::{ComplexObject, Context, Result, SimpleObject};
use pop_projections::{AgendaQuery, Cursor, MAX_PAGE_SIZE, Phase, Visibility};

use crate::graphql::types::InsightGql;
use crate::graphql::{caller, services};
use crate::metrics::WAITING_PHASES;

/// Most entries `waitingByCustomer` returns (the customers with the most waiting agendas).
pub const MAX_WAITING_CUSTOMERS: usize = 100;

/// Most read-model pages (of up to 1,000 agendas each, and at most 20,000 index entries
/// examined each) one `waitingByCustomer` reads: at most 10,000 waiting agendas are counted,
/// the oldest first in each phase (added, queued, scheduled, pending, other WAITING).
pub const MAX_WAITING_PAGES: usize = 10;

/// How many WAITING agendas of an insight one customer has.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(name = "CustomerCount")]
pub struct CustomerCountGql {
    pub customer_id: String,
    pub count: i64,
}

#[ComplexObject]
impl InsightGql {
    /// The insight's queue depth: its agendas in phase `queued` (processingState WAITING,
    /// message `queued`), of every customer.
    async fn queue_depth(&self, ctx: &Context<'_>) -> Result<i64> {
        let services = services(ctx)?;
        let models = services.projections.read();
        Ok(count(models.agendas().count_in(&self.id, Phase::Queued)))
    }

    /// The insight's agendas whose processingState is WAITING, of every customer: phases
    /// `added` (waiting for the scheduler), `queued`, `scheduled` (handed out, not yet
    /// started), `pending` (reset by a rerun) and any other WAITING message.
    async fn waiting(&self, ctx: &Context<'_>) -> Result<i64> {
        let services = services(ctx)?;
        let models = services.projections.read();
        let agendas = models.agendas();
        Ok(count(WAITING_PHASES.iter().map(|p| agendas.count_in(&self.id, *p)).sum()))
    }

    /// The insight's agendas whose processingState is EXECUTING, of every customer.
    async fn executing(&self, ctx: &Context<'_>) -> Result<i64> {
        let services = services(ctx)?;
        let models = services.projections.read();
        Ok(count(models.agendas().count_in(&self.id, Phase::Executing)))
    }

    /// The WAITING agendas (as in `waiting`) per customer, only for customers the caller may
    /// see (every customer for `*`); customers with none are left out. Most waiting first
    /// (then by customer id), at most 100 entries. Counts at most 10,000 agendas (the oldest
    /// of each phase first), so on a larger backlog the counts are lower bounds.
    async fn waiting_by_customer(&self, ctx: &Context<'_>) -> Result<Vec<CustomerCountGql>> {
        let caller = caller(ctx)?;
        let services = services(ctx)?;
        let models = services.projections.read();
        let counts = waiting_by_customer(&models, &caller.principal.customers, &self.id);
        Ok(counts)
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn waiting_by_customer(
    models: &pop_projections::ReadModels,
    visibility: &Visibility,
    insight_id: &str,
) -> Vec<CustomerCountGql> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut pages = 0;
    'phases: for phase in WAITING_PHASES {
        let mut after: Option<Cursor> = None;
        loop {
            if pages >= MAX_WAITING_PAGES {
                break 'phases;
            }
            pages += 1;
            let mut query = AgendaQuery::new(visibility);
            query.insight_id = Some(insight_id);
            query.phase = Some(phase);
            query.limit = MAX_PAGE_SIZE;
            query.after = after.as_ref();
            let page = models.select_agendas(&query);
            for entry in &page.items {
                *counts.entry(entry.customer_id().to_string()).or_default() += 1;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let mut list: Vec<CustomerCountGql> = counts
        .into_iter()
        .map(|(customer_id, n)| CustomerCountGql { customer_id, count: count(n) })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.customer_id.cmp(&b.customer_id)));
    list.truncate(MAX_WAITING_CUSTOMERS);
    list
}
