//! Mutations: each is one command executed through the store's `Commands` (never a direct
//! append, never a read-model update). This layer reads the clock (`Utc::now()`) and makes ids
//! (UUID v7), checks the caller's role and tenancy, and returns the command's resulting state
//! with the global position of its last event for read-your-writes.
//!
//! Tenancy on writes is checked against the write side (the aggregate loaded from its
//! stream), not the read models, so a just-written object is found even before the
//! projections have it; an object the caller may not see answers NOT_FOUND exactly like one
//! that does not exist.

use async_graphql::{Context, Json, Object, Result};
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use pop_domain::agenda::{AgendaCommand, AgendaState, RerunFlags};
use pop_domain::binding::bind_insight;
use pop_domain::config::{ConfigAggregate, ConfigCommand, ConfigObject};
use pop_domain::error::ErrorCode;
use pop_domain::model::{Agenda, AgendaTemplate, Customer, Insight, Operation, ResourcePool};
use pop_domain::params::Params;
use pop_domain::template::{may_use_template, run_template};
use pop_domain::validate::validate_agenda;
use pop_store::{EventMetadata, Executed};

use crate::auth::Action;
use crate::config::{MAX_REASON_LENGTH, MAX_RERUN_PARAMS};
use crate::error::{self, ApiError, ApiResult};
use crate::graphql::types::*;
use crate::graphql::{Caller, Services, authorize, mutation_cid, services, wait_for, work};
use crate::metrics;

pub struct MutationRoot;

pub(crate) fn metadata(caller: &Caller, customer_id: &str, cid: &str) -> EventMetadata {
    EventMetadata {
        customer_id: Some(customer_id.to_string()),
        cid: Some(cid.to_string()),
        causation_id: None,
        actor: Some(caller.principal.actor()),
    }
}

/// Reads a POP JSON input into a domain value; a shape error is VALIDATION on `field`.
fn from_json<T: serde::de::DeserializeOwned>(field: &str, value: Value) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(field, e.to_string()))
}

fn check_id(field: &str, id: &str) -> ApiResult<()> {
    pop_domain::validate::check_id(field, id).map_err(|e| ApiError::invalid(&e.field, e.message))
}

pub(crate) fn agenda_result(executed: &Executed<AgendaState>, cid: &str) -> AgendaResultGql {
    AgendaResultGql {
        agenda: executed.state.agenda().map(AgendaGql::from),
        progress: AgendaProgressGql::from(executed.state.progress()),
        position: executed.position.map(|p| p.to_string()),
        cid: cid.to_string(),
    }
}

fn agenda_subject(id: &str) -> String {
    format!("agenda {id:?}")
}

/// Submits `agenda` (already holding its customer): assigns ids, binds it to an insight from
/// the read models (DOMAIN.md §6) and executes `Submit`. Nothing is stored when validation or
/// binding fails.
async fn submit(
    services: &Services,
    caller: &Caller,
    mut agenda: Agenda,
    cid: String,
) -> ApiResult<AgendaResultGql> {
    let with_cid = |e: ApiError| e.with_cid(&cid);
    if agenda.customer_id.trim().is_empty()
        && let Some(only) = caller.principal.only_customer()
    {
        agenda.customer_id = only.to_string();
    }
    let customer_id = agenda.customer_id.clone();
    if !customer_id.trim().is_empty() && !caller.principal.sees(&customer_id) {
        return Err(with_cid(ApiError::forbidden(format!(
            "principal {:?} may not submit agendas for customer {customer_id:?}",
            caller.principal.name
        ))));
    }
    if agenda.id.trim().is_empty() {
        agenda.id = Uuid::now_v7().to_string();
    }
    check_id("id", &agenda.id).map_err(with_cid)?;
    if agenda.progress_id.as_deref().is_none_or(|p| p.trim().is_empty()) {
        // The common case: the read models key progress by agenda id at no extra cost.
        agenda.progress_id = Some(agenda.id.clone());
    }
    if let Some(p) = &agenda.progress_id {
        check_id("progressId", p).map_err(with_cid)?;
    }
    agenda.cid = Some(cid.clone());
    // Server-assigned: binding, and times (set by the domain from `now`).
    agenda.agenda_insight = None;
    agenda.added_time = None;
    agenda.updated_time = None;
    let subject = agenda_subject(&agenda.id);
    validate_agenda(&agenda).map_err(|e| with_cid(ApiError::validation(&subject, e)))?;

    let insight = {
        let models = services.projections.read();
        let customer = models.customer(&customer_id);
        let pool = customer.and_then(|c| c.resource_pool_id.clone()).unwrap_or_default();
        let insights: Vec<Insight> =
            models.all_insights().filter(|i| i.resource_pool_id == pool).cloned().collect();
        bind_insight(&agenda, customer, &insights)
    }
    .map_err(|e| with_cid(error::binding(&e)))?;

    let command = AgendaCommand::Submit { agenda: agenda.clone(), insight, now: Utc::now() };
    let executed = services
        .commands
        .execute::<AgendaState>(&agenda.id, &metadata(caller, &customer_id, &cid), &command)
        .await;
    metrics::command("submitAgenda", executed.is_ok());
    let executed = executed.map_err(|e| with_cid(error::execute(&subject, e)))?;
    Ok(agenda_result(&executed, &cid))
}

/// Submits a POP agenda given as JSON (`submitAgenda`, REST `POST agenda`): it must be an
/// object in POP's agenda shape.
pub(crate) async fn submit_json(
    services: &Services,
    caller: &Caller,
    agenda: Value,
    cid: String,
) -> ApiResult<AgendaResultGql> {
    if !agenda.is_object() {
        return Err(ApiError::invalid("agenda", "the agenda must be a JSON object").with_cid(&cid));
    }
    let agenda: Agenda = from_json("agenda", agenda).map_err(|e| e.with_cid(&cid))?;
    submit(services, caller, agenda, cid).await
}

/// Runs template `template_id` (one the customer may use) with `payload` for `customer_id`
/// (default: the caller's only customer) and submits the result.
pub(crate) async fn run_template_for(
    services: &Services,
    caller: &Caller,
    template_id: &str,
    payload: Value,
    customer_id: Option<String>,
    cid: String,
) -> ApiResult<AgendaResultGql> {
    let with_cid = |e: ApiError| e.with_cid(&cid);
    let customer = customer_id
        .or_else(|| caller.principal.only_customer().map(str::to_string))
        .ok_or_else(|| {
            with_cid(ApiError::invalid("customerId", "name the customer to run the template for"))
        })?;
    if !caller.principal.sees(&customer) {
        return Err(with_cid(ApiError::forbidden(format!(
            "principal {:?} may not submit agendas for customer {customer:?}",
            caller.principal.name
        ))));
    }
    let template = {
        let models = services.projections.read();
        models.template(template_id).filter(|t| may_use_template(t, &customer)).cloned()
    }
    .ok_or_else(|| with_cid(ApiError::not_found("agenda template", template_id)))?;
    let agenda = run_template(&template, &payload, &customer).map_err(|e| {
        with_cid(ApiError::validation(
            &format!("agenda template {template_id:?} run with this payload"),
            e,
        ))
    })?;
    submit(services, caller, agenda, cid).await
}

/// Reruns agenda `agenda_id` with POP's rerun params (DOMAIN.md §8).
pub(crate) async fn rerun(
    services: &Services,
    caller: &Caller,
    agenda_id: &str,
    params: Vec<String>,
    cid: &str,
) -> ApiResult<AgendaResultGql> {
    if params.len() > MAX_RERUN_PARAMS {
        return Err(ApiError::invalid(
            "params",
            format!("at most {MAX_RERUN_PARAMS} rerun params"),
        )
        .with_cid(cid));
    }
    let flags = RerunFlags::parse(&params).map_err(|e| {
        ApiError::validation(&format!("rerun of agenda {agenda_id:?}"), e).with_cid(cid)
    })?;
    let command = AgendaCommand::Rerun { flags, now: Utc::now() };
    on_agenda(services, caller, "rerunAgenda", agenda_id, command, cid).await
}

/// Appends `operations` (POP JSON) to agenda `agenda_id` and merges `params` into its params.
pub(crate) async fn expand(
    services: &Services,
    caller: &Caller,
    agenda_id: &str,
    operations: Value,
    params: Option<Value>,
    cid: &str,
) -> ApiResult<AgendaResultGql> {
    let operations: Vec<Operation> =
        from_json("operations", operations).map_err(|e| e.with_cid(cid))?;
    let params: Params = match params {
        None => Params::new(),
        Some(p) => from_json("params", p).map_err(|e| e.with_cid(cid))?,
    };
    let command = AgendaCommand::Expand { operations, params, now: Utc::now() };
    on_agenda(services, caller, "expandAgenda", agenda_id, command, cid).await
}

/// Runs `command` on agenda `id` if the caller may see it (NOT_FOUND otherwise).
pub(crate) async fn on_agenda(
    services: &Services,
    caller: &Caller,
    name: &'static str,
    id: &str,
    command: AgendaCommand,
    cid: &str,
) -> ApiResult<AgendaResultGql> {
    let subject = agenda_subject(id);
    let with_cid = |e: ApiError| e.with_cid(cid);
    // An id no agenda can have (control characters, too long) is the client's mistake, not a
    // store failure.
    check_id("agendaId", id).map_err(with_cid)?;
    // An agenda's customer never changes once it is submitted, so a cached state tells it
    // without a read.
    let cached = services
        .commands
        .peek::<AgendaState, _>(id, |state| state.agenda().map(|a| a.customer_id.clone()))
        .flatten();
    let loaded = match cached {
        Some(customer_id) => Ok(Some(customer_id)),
        None => services
            .commands
            .load::<AgendaState>(id)
            .await
            .map(|(state, _)| state.agenda().map(|a| a.customer_id.clone())),
    };
    let customer_id = match loaded {
        Ok(customer_id) => customer_id,
        Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted { .. })) => None,
        Err(e) => return Err(with_cid(error::execute(&subject, e))),
    };
    let Some(customer_id) = customer_id.filter(|c| caller.principal.sees(c)) else {
        return Err(with_cid(ApiError::not_found("agenda", id)));
    };
    let executed = services
        .commands
        .execute::<AgendaState>(id, &metadata(caller, &customer_id, cid), &command)
        .await;
    metrics::command(name, executed.is_ok());
    let executed = executed.map_err(|e| with_cid(error::execute(&subject, e)))?;
    Ok(agenda_result(&executed, cid))
}

/// The mutation names of one config kind, for metrics.
pub(crate) trait ConfigNames: ConfigObject {
    const CREATE: &'static str;
    const UPDATE: &'static str;
    const DELETE: &'static str;
    /// Sets the id when the client left it out (customers: from `customerId`).
    fn fill_id(&mut self);
}

impl ConfigNames for Customer {
    const CREATE: &'static str = "createCustomer";
    const UPDATE: &'static str = "updateCustomer";
    const DELETE: &'static str = "deleteCustomer";
    fn fill_id(&mut self) {
        // A customer's id is its customerId (DOMAIN.md §2): either names both.
        if self.id.trim().is_empty() {
            self.id = self.customer_id.clone();
        }
        if self.customer_id.trim().is_empty() {
            self.customer_id = self.id.clone();
        }
    }
}

impl ConfigNames for ResourcePool {
    const CREATE: &'static str = "createResourcePool";
    const UPDATE: &'static str = "updateResourcePool";
    const DELETE: &'static str = "deleteResourcePool";
    fn fill_id(&mut self) {
        if self.id.trim().is_empty() {
            self.id = Uuid::now_v7().to_string();
        }
    }
}

impl ConfigNames for Insight {
    const CREATE: &'static str = "createInsight";
    const UPDATE: &'static str = "updateInsight";
    const DELETE: &'static str = "deleteInsight";
    fn fill_id(&mut self) {
        if self.id.trim().is_empty() {
            self.id = Uuid::now_v7().to_string();
        }
    }
}

impl ConfigNames for AgendaTemplate {
    const CREATE: &'static str = "createTemplate";
    const UPDATE: &'static str = "updateTemplate";
    const DELETE: &'static str = "deleteTemplate";
    fn fill_id(&mut self) {
        if self.id.trim().is_empty() {
            self.id = Uuid::now_v7().to_string();
        }
    }
}

pub(crate) enum ConfigOp {
    Create(Value),
    Update(Value),
    Delete(String),
}

/// What a config command did: the object as it is now (for a delete: as it was deleted).
pub(crate) struct Configured<T> {
    pub object: T,
    pub deleted: bool,
    pub position: Option<String>,
    pub cid: String,
}

/// Create, update or delete one config object (admins, within their customers).
async fn configure<T, G>(
    ctx: &Context<'_>,
    op: ConfigOp,
    cid: Option<String>,
) -> ApiResult<ConfigResult<G>>
where
    T: ConfigNames,
    G: async_graphql::OutputType + for<'a> From<&'a T>,
{
    let caller = authorize(ctx, Action::Configure)?;
    let services = services(ctx)?;
    let cid = mutation_cid(caller, cid)?;
    let done = configure_with::<T>(services, caller, op, cid).await?;
    Ok(ConfigResult {
        object: G::from(&done.object),
        deleted: done.deleted,
        position: done.position,
        cid: done.cid,
    })
}

/// The command behind [`configure`] for a caller already allowed to configure (the REST
/// surface checks the role itself).
pub(crate) async fn configure_with<T: ConfigNames>(
    services: &Services,
    caller: &Caller,
    op: ConfigOp,
    cid: String,
) -> ApiResult<Configured<T>> {
    let with_cid = |e: ApiError| e.with_cid(&cid);
    let now = Utc::now();
    let (id, name, command) = match op {
        ConfigOp::Create(value) | ConfigOp::Update(value) if !value.is_object() => {
            return Err(with_cid(ApiError::invalid(
                T::DATA_FIELD,
                format!("the {} must be a JSON object", T::KIND),
            )));
        }
        ConfigOp::Create(value) => {
            let mut object: T = from_json(T::DATA_FIELD, value).map_err(with_cid)?;
            object.fill_id();
            check_id("id", object.id()).map_err(with_cid)?;
            (
                object.id().to_string(),
                T::CREATE,
                ConfigCommand::Create { object, now, cid: cid.clone() },
            )
        }
        ConfigOp::Update(value) => {
            let mut object: T = from_json(T::DATA_FIELD, value).map_err(with_cid)?;
            object.fill_id();
            check_id("id", object.id()).map_err(with_cid)?;
            (
                object.id().to_string(),
                T::UPDATE,
                ConfigCommand::Update { object, now, cid: cid.clone() },
            )
        }
        ConfigOp::Delete(id) => {
            check_id("id", &id).map_err(with_cid)?;
            (id.clone(), T::DELETE, ConfigCommand::Delete { id, now, cid: cid.clone() })
        }
    };
    let subject = format!("{} {id:?}", T::KIND);
    // Tenancy: the object as the write side has it must be visible (else NOT_FOUND), and the
    // object written must belong to a customer the caller may act for (else FORBIDDEN).
    let current = match services.commands.load::<ConfigAggregate<T>>(&id).await {
        Ok((state, _)) => state.live().cloned(),
        Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted { .. })) => None,
        Err(e) => return Err(with_cid(error::execute(&subject, e))),
    };
    let visible = current.as_ref().filter(|c| caller.principal.sees(c.customer_id()));
    // Exists but not for this caller: an update or delete must not touch it, and a create
    // must not reveal it (CONFLICT would) — all answer as if it did not exist.
    if visible.is_none() && (current.is_some() || !matches!(command, ConfigCommand::Create { .. }))
    {
        return Err(with_cid(ApiError::not_found(T::KIND, &id)));
    }
    if let ConfigCommand::Create { object, .. } | ConfigCommand::Update { object, .. } = &command {
        let customer = object.customer_id();
        if !customer.trim().is_empty() && !caller.principal.sees(customer) {
            return Err(with_cid(ApiError::forbidden(format!(
                "principal {:?} may not manage objects of customer {customer:?}",
                caller.principal.name
            ))));
        }
    }
    let customer = match &command {
        ConfigCommand::Create { object, .. } | ConfigCommand::Update { object, .. } => {
            object.customer_id().to_string()
        }
        ConfigCommand::Delete { .. } => {
            visible.map(|c| c.customer_id().to_string()).unwrap_or_default()
        }
    };
    let executed = services
        .commands
        .execute::<ConfigAggregate<T>>(&id, &metadata(caller, &customer, &cid), &command)
        .await;
    metrics::command(name, executed.is_ok());
    let executed = executed.map_err(|e| with_cid(error::execute(&subject, e)))?;
    let (object, deleted) = match &executed.state.lifecycle {
        pop_domain::config::Lifecycle::Live(o) => (o, false),
        pop_domain::config::Lifecycle::Deleted(o) => (o, true),
        pop_domain::config::Lifecycle::Absent => {
            return Err(with_cid(ApiError::new(
                ErrorCode::Internal,
                format!("{subject} vanished after the command"),
            )));
        }
    };
    Ok(Configured {
        object: object.clone(),
        deleted,
        position: executed.position.map(|p| p.to_string()),
        cid,
    })
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
    ) -> Result<AgendaResultGql> {
        let caller = authorize(ctx, Action::Submit)?;
        let services = services(ctx)?;
        let cid = mutation_cid(
            caller,
            cid.or_else(|| agenda.0.get("cid").and_then(Value::as_str).map(str::to_string)),
        )?;
        wait_for(services, at_least_position.as_deref()).await.map_err(|e| e.with_cid(&cid))?;
        Ok(submit_json(services, caller, agenda.0, cid).await?)
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
    ) -> Result<AgendaResultGql> {
        let caller = authorize(ctx, Action::Submit)?;
        let services = services(ctx)?;
        let cid = mutation_cid(caller, cid)?;
        wait_for(services, at_least_position.as_deref()).await.map_err(|e| e.with_cid(&cid))?;
        let payload = payload.map(|p| p.0).unwrap_or(Value::Null);
        Ok(run_template_for(services, caller, &template_id, payload, customer_id, cid).await?)
    }

    /// Reruns a COMPLETE agenda with POP's flags (`resetAll`, `continue`, `skipExecution`,
    /// `operationsToReset=a,b`; none means `resetAll`).
    async fn rerun_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        params: Option<Vec<String>>,
        cid: Option<String>,
    ) -> Result<AgendaResultGql> {
        let caller = authorize(ctx, Action::Rerun)?;
        let services = services(ctx)?;
        let cid = mutation_cid(caller, cid)?;
        Ok(rerun(services, caller, &agenda_id, params.unwrap_or_default(), &cid).await?)
    }

    /// Appends operations to an agenda (validated like a submission against the existing
    /// ones) and merges `params` into its params.
    async fn expand_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        operations: Json<Value>,
        params: Option<Json<Value>>,
        cid: Option<String>,
    ) -> Result<AgendaResultGql> {
        let caller = authorize(ctx, Action::Expand)?;
        let services = services(ctx)?;
        let cid = mutation_cid(caller, cid)?;
        Ok(expand(services, caller, &agenda_id, operations.0, params.map(|p| p.0), &cid).await?)
    }

    /// Cancels a non-complete agenda (COMPLETE/cancelled); executors' later reports are
    /// refused.
    async fn cancel_agenda(
        &self,
        ctx: &Context<'_>,
        agenda_id: String,
        reason: Option<String>,
        cid: Option<String>,
    ) -> Result<AgendaResultGql> {
        let caller = authorize(ctx, Action::Cancel)?;
        let services = services(ctx)?;
        let cid = mutation_cid(caller, cid)?;
        if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_LENGTH) {
            return Err(ApiError::invalid(
                "reason",
                format!("at most {MAX_REASON_LENGTH} characters"),
            )
            .with_cid(&cid)
            .into());
        }
        let command = AgendaCommand::Cancel { reason, now: Utc::now() };
        Ok(on_agenda(services, caller, "cancelAgenda", &agenda_id, command, &cid).await?)
    }

    /// Takes up to `count` (1..=100) of the oldest queued agendas of insight `insightId` for
    /// the caller (role `service` or `admin`, allowed to use the insight), each moved to
    /// `scheduled` under a lease held by the caller; returns them with their AgendaProgress.
    /// Agendas another caller claimed first are skipped; an empty queue is an empty list.
    async fn get_agenda(
        &self,
        ctx: &Context<'_>,
        insight_id: String,
        count: i32,
        cid: Option<String>,
    ) -> Result<Vec<AgendaResultGql>> {
        let caller = authorize(ctx, Action::Work)?;
        let services = services(ctx)?;
        let cid = mutation_cid(caller, cid)?;
        Ok(work::get_agenda(services, caller, &insight_id, count, &cid).await?)
    }

    /// An executor's report (POP AgendaProgress JSON; `id` required): state, message,
    /// diagnostics, started/completed times and the changed `operationProgress` entries (by
    /// `operation` name). Only the lease holder may report; each report renews the lease.
    async fn update_agenda_progress(
        &self,
        ctx: &Context<'_>,
        agenda_progress: Json<Value>,
        cid: Option<String>,
    ) -> Result<AgendaResultGql> {
        let caller = authorize(ctx, Action::Work)?;
        let services = services(ctx)?;
        let cid = mutation_cid(caller, cid)?;
        Ok(work::update_agenda_progress(services, caller, agenda_progress.0, &cid).await?)
    }

    /// Creates a customer (POP JSON; `id` and `customerId` are the same).
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        customer: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<CustomerGql>> {
        Ok(configure::<Customer, _>(ctx, ConfigOp::Create(customer.0), cid).await?)
    }

    /// Replaces a customer (its `addedTime` is kept).
    async fn update_customer(
        &self,
        ctx: &Context<'_>,
        customer: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<CustomerGql>> {
        Ok(configure::<Customer, _>(ctx, ConfigOp::Update(customer.0), cid).await?)
    }

    async fn delete_customer(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> Result<ConfigResult<CustomerGql>> {
        Ok(configure::<Customer, _>(ctx, ConfigOp::Delete(id), cid).await?)
    }

    async fn create_resource_pool(
        &self,
        ctx: &Context<'_>,
        resource_pool: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<ResourcePoolGql>> {
        Ok(configure::<ResourcePool, _>(ctx, ConfigOp::Create(resource_pool.0), cid).await?)
    }

    async fn update_resource_pool(
        &self,
        ctx: &Context<'_>,
        resource_pool: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<ResourcePoolGql>> {
        Ok(configure::<ResourcePool, _>(ctx, ConfigOp::Update(resource_pool.0), cid).await?)
    }

    async fn delete_resource_pool(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> Result<ConfigResult<ResourcePoolGql>> {
        Ok(configure::<ResourcePool, _>(ctx, ConfigOp::Delete(id), cid).await?)
    }

    async fn create_insight(
        &self,
        ctx: &Context<'_>,
        insight: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<InsightGql>> {
        Ok(configure::<Insight, _>(ctx, ConfigOp::Create(insight.0), cid).await?)
    }

    async fn update_insight(
        &self,
        ctx: &Context<'_>,
        insight: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<InsightGql>> {
        Ok(configure::<Insight, _>(ctx, ConfigOp::Update(insight.0), cid).await?)
    }

    async fn delete_insight(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> Result<ConfigResult<InsightGql>> {
        Ok(configure::<Insight, _>(ctx, ConfigOp::Delete(id), cid).await?)
    }

    async fn create_template(
        &self,
        ctx: &Context<'_>,
        template: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<AgendaTemplateGql>> {
        Ok(configure::<AgendaTemplate, _>(ctx, ConfigOp::Create(template.0), cid).await?)
    }

    async fn update_template(
        &self,
        ctx: &Context<'_>,
        template: Json<Value>,
        cid: Option<String>,
    ) -> Result<ConfigResult<AgendaTemplateGql>> {
        Ok(configure::<AgendaTemplate, _>(ctx, ConfigOp::Update(template.0), cid).await?)
    }

    async fn delete_template(
        &self,
        ctx: &Context<'_>,
        id: String,
        cid: Option<String>,
    ) -> Result<ConfigResult<AgendaTemplateGql>> {
        Ok(configure::<AgendaTemplate, _>(ctx, ConfigOp::Delete(id), cid).await?)
    }
}
