//! Mutations: each resolver hands its arguments to one use case of the application layer
//! ([`pop_app::App`]) and shapes the answer; the rules (roles, tenancy, validation, ids, the
//! clock) are all the application's.

use async_graphql::{Context, Json, Object};
use serde_json::Value;

use pop_app::configs::{ConfigKind, ConfigOp};
use pop_app::resolve::Named;
use pop_domain::model::{AgendaTemplate, Customer, Insight, ResourcePool};

use crate::error::GqlResult;
use crate::graphql::context;
use crate::graphql::types::*;

pub struct MutationRoot;

/// Create, update or delete one config object.
async fn configure<T, G>(
    ctx: &Context<'_>,
    op: ConfigOp,
    cid: Option<String>,
) -> GqlResult<ConfigResult<G>>
where
    T: ConfigKind,
    G: async_graphql::OutputType + for<'a> From<&'a T>,
{
    let (app, caller) = context(ctx)?;
    let done = app.configure::<T>(caller, op, cid.as_deref(), None).await?;
    Ok(ConfigResult::from_configured(done))
}

#[Object]
impl MutationRoot {
    /// Submits a POP agenda. The server assigns `id` (unless given), `progressId` (the id,
    /// unless given), `cid`, times and the insight binding; `customerId` defaults to the
    /// caller's only customer. `atLeastPosition` makes the binding see config written just
    /// before (a customer or insight created by the same client).
    async fn submit_agenda(
        &self,
        ctx: &Context<'_>,
        agenda: Json<Value>,
        cid: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let done =
            app.submit(caller, agenda.0, cid.as_deref(), at_least_position.as_deref()).await?;
        Ok(done.into())
    }

    /// Runs a template the customer may use with `payload` and submits the result.
    async fn run_template(
        &self,
        ctx: &Context<'_>,
        template_id: String,
        payload: Option<Json<Value>>,
        customer_id: Option<String>,
        cid: Option<String>,
        at_least_position: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let payload = payload.map(|p| p.0).unwrap_or(Value::Null);
        let done = app
            .run_template(
                caller,
                &template_id,
                payload,
                customer_id,
                cid.as_deref(),
                at_least_position.as_deref(),
            )
            .await?;
        Ok(done.into())
    }

    /// Reruns a COMPLETE agenda (or one a `skipExecution` rerun left WAITING/pending) with
    /// POP's flags (`resetAll`, `continue`, `skipExecution`, `operationsToReset=a,b`; none
    /// means `resetAll`).
    async fn rerun_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        params: Option<Vec<String>>,
        customer_id: Option<String>,
        cid: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let agenda = Named::of(&agenda_id, customer_id.as_deref());
        let done = app.rerun(caller, agenda, params.unwrap_or_default(), cid.as_deref()).await?;
        Ok(done.into())
    }

    /// Appends operations to an agenda (validated like a submission against the existing
    /// ones) and merges `params` into its params.
    async fn expand_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        operations: Json<Value>,
        params: Option<Json<Value>>,
        customer_id: Option<String>,
        cid: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let agenda = Named::of(&agenda_id, customer_id.as_deref());
        let done =
            app.expand(caller, agenda, operations.0, params.map(|p| p.0), cid.as_deref()).await?;
        Ok(done.into())
    }

    /// Cancels a non-complete agenda (COMPLETE/cancelled); executors' later reports are
    /// refused. A failed agenda whose automatic retry is still to come is cancelled too, which
    /// withdraws the retry.
    async fn cancel_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        reason: Option<String>,
        customer_id: Option<String>,
        cid: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let agenda = Named::of(&agenda_id, customer_id.as_deref());
        Ok(app.cancel(caller, agenda, reason, cid.as_deref()).await?.into())
    }

    /// Takes up to `count` (at least 1; a count over 100 takes at most 100, as POP's pullers
    /// may ask for more) of the oldest queued agendas of insight `insightId` for the caller
    /// (role `service` or `admin`, allowed to use the insight), each moved to
    /// `scheduled` under a lease held by the caller; returns them with their AgendaProgress.
    /// Agendas another caller claimed first are skipped; an empty queue is an empty list.
    /// With `waitSeconds` (0..=30) an empty queue is waited on: the call answers as soon as
    /// it has claimed an agenda queued meanwhile, or with an empty list when the time is up.
    #[graphql(complexity = "crate::graphql::cost::count(count, child_complexity)")]
    async fn get_agenda(
        &self,
        ctx: &Context<'_>,
        insight_id: String,
        count: i32,
        wait_seconds: Option<i32>,
        cid: Option<String>,
    ) -> GqlResult<Vec<AgendaResultGql>> {
        let (app, caller) = context(ctx)?;
        let wait = wait_seconds.map(|w| within_deadline(ctx, i64::from(w)));
        let claimed = app
            .get_agenda_waiting(caller, &insight_id, i64::from(count), wait, cid.as_deref())
            .await?;
        Ok(claimed.into_iter().map(AgendaResultGql::from).collect())
    }

    /// An executor's report (POP AgendaProgress JSON; `id` required): state, message,
    /// diagnostics, started/completed times and the changed `operationProgress` entries (by
    /// `operation` name). Only the lease holder may report; each report renews the lease.
    /// `leaseId` (the `lease.id` getAgenda answered) makes a report under a superseded lease
    /// fail with CONFLICT; without it the caller's token is the holder (POP's clients).
    async fn update_agenda_progress(
        &self,
        ctx: &Context<'_>,
        agenda_progress: Json<Value>,
        lease_id: Option<String>,
        cid: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let done =
            app.report(caller, agenda_progress.0, lease_id.as_deref(), cid.as_deref()).await?;
        Ok(done.into())
    }

    /// Many executor reports in one request (1..=100), each exactly one
    /// `updateAgendaProgress` (one command per agenda) and answered on its own, in request
    /// order: `result`, or `error` with its code, problems (`reports[i]…`) and cid. Reports on
    /// different agendas are taken concurrently; reports on the same agenda in request order.
    /// The whole request fails only for a caller that may not report or a list out of bounds.
    #[graphql(complexity = "crate::graphql::cost::count(reports.len() as i32, child_complexity)")]
    async fn update_agenda_progresses(
        &self,
        ctx: &Context<'_>,
        reports: Vec<ReportInputGql>,
        cid: Option<String>,
    ) -> GqlResult<Vec<ReportItemResultGql>> {
        let (app, caller) = context(ctx)?;
        let items = reports
            .into_iter()
            .map(|r| pop_app::work::ReportItem {
                agenda_progress: r.agenda_progress.0,
                lease_id: r.lease_id,
            })
            .collect();
        let answered = app.report_many(caller, items, cid.as_deref()).await?;
        Ok(answered
            .into_iter()
            .enumerate()
            .map(|(index, answer)| {
                let index = i32::try_from(index).unwrap_or(i32::MAX);
                match answer {
                    Ok(done) => {
                        ReportItemResultGql { index, result: Some(done.into()), error: None }
                    }
                    Err(e) => ReportItemResultGql { index, result: None, error: Some(e.into()) },
                }
            })
            .collect())
    }

    /// Hands an agenda the caller holds back at once, under its current lease (`leaseId`, as
    /// getAgenda answered it): back to `added`, at the back of its queue, no attempt consumed,
    /// finished operations kept (their results for the next executor), the ones it had running
    /// back to WAITING/pending to start over. For a worker that stops gracefully.
    async fn release_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        lease_id: String,
        customer_id: Option<String>,
        cid: Option<String>,
    ) -> GqlResult<AgendaResultGql> {
        let (app, caller) = context(ctx)?;
        let agenda = Named::of(&agenda_id, customer_id.as_deref());
        Ok(app.release(caller, agenda, &lease_id, cid.as_deref()).await?.into())
    }

    /// Creates a customer (POP JSON; `id` and `customerId` are the same).
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        customer: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<CustomerGql>> {
        configure::<Customer, _>(ctx, ConfigOp::Create(customer.0), cid).await
    }

    /// Replaces a customer (its `addedTime` is kept).
    async fn update_customer(
        &self,
        ctx: &Context<'_>,
        customer: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<CustomerGql>> {
        configure::<Customer, _>(ctx, ConfigOp::Update(customer.0), cid).await
    }

    async fn delete_customer(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<CustomerGql>> {
        configure::<Customer, _>(ctx, ConfigOp::Delete(id), cid).await
    }

    async fn create_resource_pool(
        &self,
        ctx: &Context<'_>,
        resource_pool: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<ResourcePoolGql>> {
        configure::<ResourcePool, _>(ctx, ConfigOp::Create(resource_pool.0), cid).await
    }

    async fn update_resource_pool(
        &self,
        ctx: &Context<'_>,
        resource_pool: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<ResourcePoolGql>> {
        configure::<ResourcePool, _>(ctx, ConfigOp::Update(resource_pool.0), cid).await
    }

    async fn delete_resource_pool(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<ResourcePoolGql>> {
        configure::<ResourcePool, _>(ctx, ConfigOp::Delete(id), cid).await
    }

    async fn create_insight(
        &self,
        ctx: &Context<'_>,
        insight: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<InsightGql>> {
        configure::<Insight, _>(ctx, ConfigOp::Create(insight.0), cid).await
    }

    async fn update_insight(
        &self,
        ctx: &Context<'_>,
        insight: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<InsightGql>> {
        configure::<Insight, _>(ctx, ConfigOp::Update(insight.0), cid).await
    }

    async fn delete_insight(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<InsightGql>> {
        configure::<Insight, _>(ctx, ConfigOp::Delete(id), cid).await
    }

    async fn create_template(
        &self,
        ctx: &Context<'_>,
        template: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<AgendaTemplateGql>> {
        configure::<AgendaTemplate, _>(ctx, ConfigOp::Create(template.0), cid).await
    }

    async fn update_template(
        &self,
        ctx: &Context<'_>,
        template: Json<Value>,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<AgendaTemplateGql>> {
        configure::<AgendaTemplate, _>(ctx, ConfigOp::Update(template.0), cid).await
    }

    async fn delete_template(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> GqlResult<ConfigResult<AgendaTemplateGql>> {
        configure::<AgendaTemplate, _>(ctx, ConfigOp::Delete(id), cid).await
    }
}

/// A `waitSeconds` the request's deadline leaves room for: a wait in range is shortened to end
/// a second before the deadline of its `POST /graphql` body (the answer, an empty list, still
/// comes in time; a worker that asked for longer simply asks again). Out-of-range values are
/// left for the application layer to refuse with their field named.
fn within_deadline(ctx: &Context<'_>, wait: i64) -> i64 {
    let room = ctx
        .data_opt::<std::sync::Arc<crate::graphql::cost::Budget>>()
        .and_then(|budget| budget.remaining())
        .map(|left| i64::try_from(left.as_secs()).unwrap_or(i64::MAX).saturating_sub(1).max(0));
    match room {
        Some(room) if (0..=pop_app::limits::MAX_GET_AGENDA_WAIT_SECONDS).contains(&wait) => {
            wait.min(room)
        }
        _ => wait,
    }
}
