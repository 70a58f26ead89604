//! The work counters of an `Insight` (`queueDepth`, `waiting`, `executing`,
//! `waitingByCustomer`), computed by the application layer ([`pop_app::App::insight_counts`],
//! [`pop_app::App::waiting_by_customer`]) when a query asks for them.

use async_graphql::{ComplexObject, Context, SimpleObject};

use crate::error::GqlResult;
use crate::graphql::context;
use crate::graphql::types::InsightGql;

pub use pop_app::reads::{MAX_WAITING_CUSTOMERS, MAX_WAITING_PAGES};

/// How many WAITING agendas of an insight one customer has.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(name = "CustomerCount")]
pub struct CustomerCountGql {
    pub customer_id: String,
    pub count: i64,
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[ComplexObject]
impl InsightGql {
    /// The insight's queue depth: its agendas in phase `queued` (processingState WAITING,
    /// message `queued`), of every customer.
    async fn queue_depth(&self, ctx: &Context<'_>) -> GqlResult<i64> {
        let (app, _) = context(ctx)?;
        Ok(count(app.insight_counts(&self.id).queue_depth))
    }

    /// The insight's agendas whose processingState is WAITING, of every customer: phases
    /// `added` (waiting for the scheduler), `queued`, `scheduled` (handed out, not yet
    /// started), `pending` (reset by a rerun) and any other WAITING message.
    async fn waiting(&self, ctx: &Context<'_>) -> GqlResult<i64> {
        let (app, _) = context(ctx)?;
        Ok(count(app.insight_counts(&self.id).waiting))
    }

    /// The insight's agendas whose processingState is EXECUTING, of every customer.
    async fn executing(&self, ctx: &Context<'_>) -> GqlResult<i64> {
        let (app, _) = context(ctx)?;
        Ok(count(app.insight_counts(&self.id).executing))
    }

    /// The WAITING agendas (as in `waiting`) per customer, only for customers the caller may
    /// see (every customer for `*`); customers with none are left out. Most waiting first
    /// (then by customer id), at most 100 entries. Counts at most 10,000 agendas, shared
    /// among the phases and the customers (every customer with waiting agendas is counted),
    /// so on a larger backlog the counts are lower bounds.
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    async fn waiting_by_customer(&self, ctx: &Context<'_>) -> GqlResult<Vec<CustomerCountGql>> {
        let (app, caller) = context(ctx)?;
        Ok(app
            .waiting_by_customer(caller, &self.id)
            .into_iter()
            .map(|(customer_id, n)| CustomerCountGql { customer_id, count: count(n) })
            .collect())
    }
}
