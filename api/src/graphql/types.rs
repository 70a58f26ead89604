//! The GraphQL shapes of DOMAIN.md's objects. Field names are POP's camelCase names; times are
//! ISO-8601 (`DateTime`), free-form JSON (payloads, params, mappers) is the `JSON` scalar. Each
//! type is built from its domain value, never the other way round: inputs arrive as POP JSON
//! and are read by the domain's own serde rules.

use async_graphql::{ComplexObject, Context, Enum, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use pop_domain::model;
use pop_domain::params::Params;

use pop_app::live::{OperationsUpdate, ProgressUpdate};
use pop_app::reads::EventPage;
use pop_app::{AgendaOutcome, Configured, Principal};

use crate::auth::customer_ids;

fn json<T: serde::Serialize>(value: &T) -> Json<Value> {
    // Params and payloads are JSON already; serialising them cannot fail.
    Json(serde_json::to_value(value).unwrap_or(Value::Null))
}

fn params(p: &Params) -> Json<Value> {
    json(p)
}

/// `processingState` (DOMAIN.md §3).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ProcessingState")]
pub enum ProcessingStateGql {
    Waiting,
    Executing,
    Complete,
}

impl From<model::ProcessingState> for ProcessingStateGql {
    fn from(s: model::ProcessingState) -> Self {
        match s {
            model::ProcessingState::Waiting => ProcessingStateGql::Waiting,
            model::ProcessingState::Executing => ProcessingStateGql::Executing,
            model::ProcessingState::Complete => ProcessingStateGql::Complete,
        }
    }
}

impl From<ProcessingStateGql> for model::ProcessingState {
    fn from(s: ProcessingStateGql) -> Self {
        match s {
            ProcessingStateGql::Waiting => model::ProcessingState::Waiting,
            ProcessingStateGql::Executing => model::ProcessingState::Executing,
            ProcessingStateGql::Complete => model::ProcessingState::Complete,
        }
    }
}

/// How an insight's queue is filled (DOMAIN.md §7), spelled as in POP's JSON.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "SchedulingAlgorithm", rename_items = "PascalCase")]
pub enum SchedulingAlgorithmGql {
    FirstInFirstOut,
    RoundRobin,
    Priority,
}

impl From<model::SchedulingAlgorithm> for SchedulingAlgorithmGql {
    fn from(s: model::SchedulingAlgorithm) -> Self {
        match s {
            model::SchedulingAlgorithm::FirstInFirstOut => SchedulingAlgorithmGql::FirstInFirstOut,
            model::SchedulingAlgorithm::RoundRobin => SchedulingAlgorithmGql::RoundRobin,
            model::SchedulingAlgorithm::Priority => SchedulingAlgorithmGql::Priority,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "AgendaInsight")]
pub struct AgendaInsightGql {
    pub resource_pool_id: String,
    pub insight_id: String,
}

impl From<&model::AgendaInsight> for AgendaInsightGql {
    fn from(i: &model::AgendaInsight) -> Self {
        AgendaInsightGql {
            resource_pool_id: i.resource_pool_id.clone(),
            insight_id: i.insight_id.clone(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Operation")]
pub struct OperationGql {
    pub name: String,
    #[graphql(name = "type")]
    pub op_type: String,
    pub id: Option<String>,
    pub payload: Json<Value>,
    pub params: Json<Value>,
    /// The operations this one waits for: every operation its payload references and every
    /// name in `params.dependsOn` (the domain's rule, so clients draw the same DAG the
    /// engine runs).
    pub depends_on: Vec<String>,
    /// The generator that added this operation (`params.generatedOperationParent`).
    pub generated_by: Option<String>,
}

impl From<&model::Operation> for OperationGql {
    fn from(o: &model::Operation) -> Self {
        OperationGql {
            name: o.name.clone(),
            op_type: o.op_type.clone(),
            id: o.id.clone(),
            payload: Json(o.payload.to_value()),
            params: params(&o.params),
            depends_on: pop_domain::references::dependencies(o).into_iter().collect(),
            generated_by: o.generated_by().map(str::to_string),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Agenda")]
pub struct AgendaGql {
    pub id: String,
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: Option<String>,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub operations: Vec<OperationGql>,
    pub params: Json<Value>,
    pub link_id: Option<String>,
    pub job_id: Option<String>,
    pub progress_id: Option<String>,
    pub agenda_insight: Option<AgendaInsightGql>,
}

impl From<&model::Agenda> for AgendaGql {
    fn from(a: &model::Agenda) -> Self {
        AgendaGql {
            id: a.id.clone(),
            cid: a.cid.clone(),
            customer_id: a.customer_id.clone(),
            title: a.title.clone(),
            added_time: a.added_time,
            updated_time: a.updated_time,
            operations: a.operations.iter().map(OperationGql::from).collect(),
            params: params(&a.params),
            link_id: a.link_id.clone(),
            job_id: a.job_id.clone(),
            progress_id: a.progress_id.clone(),
            agenda_insight: a.agenda_insight.as_ref().map(AgendaInsightGql::from),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "DiagnosticEvent")]
pub struct DiagnosticEventGql {
    pub message: String,
    /// A string, as in POP (e.g. `ENOENT`, `137`).
    pub status_code: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub stack_trace: Option<String>,
    pub payload: Json<Value>,
}

impl From<&model::DiagnosticEvent> for DiagnosticEventGql {
    fn from(d: &model::DiagnosticEvent) -> Self {
        DiagnosticEventGql {
            message: d.message.clone(),
            status_code: d.status_code.clone(),
            time: d.time,
            stack_trace: d.stack_trace.clone(),
            payload: Json(d.payload.clone()),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "OperationProgress")]
pub struct OperationProgressGql {
    pub id: String,
    /// The agenda's correlation id.
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: Option<String>,
    pub agenda_progress_id: String,
    /// The operation's name.
    pub operation: String,
    pub processing_state: ProcessingStateGql,
    pub processing_state_message: Option<String>,
    pub percent_complete: Option<f64>,
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub diagnostic_events: Vec<DiagnosticEventGql>,
    pub attempt_count: u32,
    pub attempt_time: Option<DateTime<Utc>>,
    pub started_time: Option<DateTime<Utc>>,
    pub completed_time: Option<DateTime<Utc>>,
    pub result_payload: Json<Value>,
    pub params: Json<Value>,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
}

impl From<&model::OperationProgress> for OperationProgressGql {
    fn from(p: &model::OperationProgress) -> Self {
        OperationProgressGql {
            id: p.id.to_string(),
            cid: p.cid.as_deref().map(str::to_string),
            customer_id: p.customer_id.to_string(),
            title: p.title.as_deref().map(str::to_string),
            agenda_progress_id: p.agenda_progress_id.to_string(),
            operation: p.operation.to_string(),
            processing_state: p.processing_state.into(),
            processing_state_message: p.processing_state_message.as_deref().map(str::to_string),
            percent_complete: p.percent_complete,
            diagnostic_events: p.diagnostic_events.iter().map(DiagnosticEventGql::from).collect(),
            attempt_count: p.attempt_count,
            attempt_time: p.attempt_time,
            started_time: p.started_time,
            completed_time: p.completed_time,
            result_payload: Json(p.result_payload.to_value()),
            params: params(&p.params),
            added_time: p.added_time,
            updated_time: p.updated_time,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "AgendaProgress", complex)]
pub struct AgendaProgressGql {
    pub id: String,
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: Option<String>,
    pub agenda_id: String,
    pub link_id: Option<String>,
    pub external_id: Option<String>,
    pub processing_state: ProcessingStateGql,
    pub processing_state_message: Option<String>,
    pub percent_complete: Option<f64>,
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub operation_progress: Vec<OperationProgressGql>,
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub diagnostic_events: Vec<DiagnosticEventGql>,
    pub attempts_completed: u32,
    pub maximum_attempts: u32,
    /// COMPLETE/failed with attempts left and not called deterministic by its executor
    /// (`NOT_RETRYABLE`): where a retry process runs (`--retry-interval` above 0 on a replica,
    /// or `pop reap retry`) it reruns the agenda after its backoff, and `cancelAgenda`
    /// withdraws that retry.
    pub retry_due: bool,
    /// Whether this agenda makes its batch's `progressSummary` a failure (COMPLETE,
    /// `processingPercent` null): it failed, or it was cancelled after an operation failed
    /// (a pop extension: a cancel that withdrew a failed agenda's retry keeps the failure).
    pub fails_batch: bool,
    pub started_time: Option<DateTime<Utc>>,
    pub completed_time: Option<DateTime<Utc>>,
    pub params: Json<Value>,
    pub agenda_insight: Option<AgendaInsightGql>,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
}

impl From<&model::AgendaProgress> for AgendaProgressGql {
    fn from(p: &model::AgendaProgress) -> Self {
        AgendaProgressGql {
            id: p.id.clone(),
            cid: p.cid.clone(),
            customer_id: p.customer_id.clone(),
            title: p.title.clone(),
            agenda_id: p.agenda_id.clone(),
            link_id: p.link_id.clone(),
            external_id: p.external_id.clone(),
            processing_state: p.processing_state.into(),
            processing_state_message: p.processing_state_message.clone(),
            percent_complete: p.percent_complete,
            operation_progress: p
                .operation_progress
                .iter()
                .map(OperationProgressGql::from)
                .collect(),
            diagnostic_events: p.diagnostic_events.iter().map(DiagnosticEventGql::from).collect(),
            attempts_completed: p.attempts_completed,
            maximum_attempts: p.maximum_attempts,
            retry_due: p.retry_due(),
            fails_batch: p.fails_batch(),
            started_time: p.started_time,
            completed_time: p.completed_time,
            params: params(&p.params),
            agenda_insight: p.agenda_insight.as_ref().map(AgendaInsightGql::from),
            added_time: p.added_time,
            updated_time: p.updated_time,
        }
    }
}

#[ComplexObject]
impl AgendaProgressGql {
    /// When the backoff after the failed attempt ends and this server's retry process reruns
    /// the agenda (at its next cycle after this time, `--retry-interval`; a customer at a
    /// memory quota waits longer), from `completedTime` and this server's `--retry-backoff`,
    /// `--retry-backoff-multiplier`, `--retry-backoff-max` and `--retry-jitter-percent`. Null
    /// unless `retryDue`, and where this server runs no retry process (`--retry-interval 0`).
    async fn retry_due_time(&self, ctx: &Context<'_>) -> Option<DateTime<Utc>> {
        if !self.retry_due {
            return None;
        }
        let config = ctx.data::<pop_app::App>().ok()?.config();
        if !config.retries {
            return None;
        }
        let ended = self.completed_time.or(self.updated_time)?;
        let key = pop_domain::agenda::key::key(&self.customer_id, &self.agenda_id);
        Some(config.retry_backoff.due_after(&key, ended, self.attempts_completed))
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ProgressSummary")]
pub struct ProgressSummaryGql {
    pub link_id: String,
    pub processing_state: ProcessingStateGql,
    pub processing_percent: Option<f64>,
    #[graphql(complexity = "crate::graphql::cost::unpaged(child_complexity)")]
    pub progress_list: Vec<AgendaProgressGql>,
}

impl From<&model::ProgressSummary> for ProgressSummaryGql {
    fn from(s: &model::ProgressSummary) -> Self {
        ProgressSummaryGql {
            link_id: s.link_id.clone(),
            processing_state: s.processing_state.into(),
            processing_percent: s.processing_percent,
            progress_list: s.progress_list.iter().map(AgendaProgressGql::from).collect(),
        }
    }
}

impl ProgressSummaryGql {
    /// The summary without its `progressList`, for a query that does not select it: a batch
    /// of 10,000 agendas was converted whole for its `processingState` (hostile57 H1).
    pub fn unlisted(s: &model::ProgressSummary) -> Self {
        ProgressSummaryGql {
            link_id: s.link_id.clone(),
            processing_state: s.processing_state.into(),
            processing_percent: s.processing_percent,
            progress_list: Vec::new(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Customer")]
pub struct CustomerGql {
    pub id: String,
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: String,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
    pub billing_code: Option<String>,
    pub resource_pool_id: Option<String>,
}

impl From<&model::Customer> for CustomerGql {
    fn from(c: &model::Customer) -> Self {
        CustomerGql {
            id: c.id.clone(),
            cid: c.cid.clone(),
            customer_id: c.customer_id.clone(),
            title: c.title.clone(),
            added_time: c.added_time,
            updated_time: c.updated_time,
            billing_code: c.billing_code.clone(),
            resource_pool_id: c.resource_pool_id.clone(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ResourcePool")]
pub struct ResourcePoolGql {
    pub id: String,
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: Option<String>,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
    /// The insights whose `resourcePoolId` is this pool (computed by the read side).
    pub insight_ids: Vec<String>,
}

impl From<&model::ResourcePool> for ResourcePoolGql {
    fn from(p: &model::ResourcePool) -> Self {
        ResourcePoolGql {
            id: p.id.clone(),
            cid: p.cid.clone(),
            customer_id: p.customer_id.clone(),
            title: p.title.clone(),
            added_time: p.added_time,
            updated_time: p.updated_time,
            insight_ids: p.insight_ids.clone(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Insight", complex)]
pub struct InsightGql {
    pub id: String,
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: String,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
    pub resource_pool_id: String,
    pub queue_name: Option<String>,
    pub queue_size: i64,
    pub scheduling_algorithm: SchedulingAlgorithmGql,
    /// Mapper name → list of values.
    pub mappers: Json<Value>,
    pub is_global: bool,
    pub allowed_customer_ids: Vec<String>,
}

impl From<&model::Insight> for InsightGql {
    fn from(i: &model::Insight) -> Self {
        InsightGql {
            id: i.id.clone(),
            cid: i.cid.clone(),
            customer_id: i.customer_id.clone(),
            title: i.title.clone(),
            added_time: i.added_time,
            updated_time: i.updated_time,
            resource_pool_id: i.resource_pool_id.clone(),
            queue_name: i.queue_name.clone(),
            queue_size: i.queue_size,
            scheduling_algorithm: i.scheduling_algorithm.into(),
            mappers: json(&i.mappers),
            is_global: i.is_global,
            allowed_customer_ids: i.allowed_customer_ids.clone(),
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "AgendaTemplate")]
pub struct AgendaTemplateGql {
    pub id: String,
    pub cid: Option<String>,
    pub customer_id: String,
    pub title: Option<String>,
    pub added_time: Option<DateTime<Utc>>,
    pub updated_time: Option<DateTime<Utc>>,
    /// The agenda body (POP JSON, references unresolved).
    pub agenda: Json<Value>,
    pub static_parameters: Json<Value>,
    pub params: Json<Value>,
    pub is_global: bool,
    pub allowed_customer_ids: Vec<String>,
    pub is_default_template: bool,
}

impl From<&model::AgendaTemplate> for AgendaTemplateGql {
    fn from(t: &model::AgendaTemplate) -> Self {
        AgendaTemplateGql {
            id: t.id.clone(),
            cid: t.cid.clone(),
            customer_id: t.customer_id.clone(),
            title: t.title.clone(),
            added_time: t.added_time,
            updated_time: t.updated_time,
            agenda: {
                let mut agenda = json(&t.agenda);
                model::template_agenda_json(&mut agenda.0);
                agenda
            },
            static_parameters: params(&t.static_parameters),
            params: params(&t.params),
            is_global: t.is_global,
            allowed_customer_ids: t.allowed_customer_ids.clone(),
            is_default_template: t.is_default_template,
        }
    }
}

/// One stored event, for audits.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Event")]
pub struct EventGql {
    pub event_id: String,
    pub stream: String,
    #[graphql(name = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// The event's version within its stream (from 0).
    pub version: u64,
    /// The global log position.
    pub position: String,
    /// When the store committed it.
    pub time: DateTime<Utc>,
    pub data: Json<Value>,
    pub metadata: Json<Value>,
}

impl From<&pop_store::RecordedEvent> for EventGql {
    fn from(e: &pop_store::RecordedEvent) -> Self {
        // Stored data and metadata are JSON (the store checks on append); an empty metadata
        // reads as null.
        let parse = |bytes: &[u8]| serde_json::from_slice(bytes).unwrap_or(Value::Null);
        EventGql {
            event_id: e.event_id.to_string(),
            stream: e.stream.to_string(),
            event_type: e.event_type.to_string(),
            schema_version: e.schema_version,
            version: e.version,
            position: e.position.to_string(),
            time: e.recorded_at,
            data: Json(parse(&e.data)),
            metadata: Json(parse(&e.metadata)),
        }
    }
}

/// One page of a list. `endCursor` goes into `after` for the next page; `position` is the
/// log position the read models were at when the page was read (for `atLeastPosition` and a
/// subscription's `afterPosition`).
#[derive(SimpleObject, Debug, Clone)]
#[graphql(concrete(name = "AgendaPage", params(AgendaGql)))]
#[graphql(concrete(name = "AgendaProgressPage", params(AgendaProgressGql)))]
#[graphql(concrete(name = "CustomerPage", params(CustomerGql)))]
#[graphql(concrete(name = "ResourcePoolPage", params(ResourcePoolGql)))]
#[graphql(concrete(name = "InsightPage", params(InsightGql)))]
#[graphql(concrete(name = "AgendaTemplatePage", params(AgendaTemplateGql)))]
#[graphql(concrete(name = "EventPage", params(EventGql)))]
pub struct Page<T: async_graphql::OutputType> {
    pub items: Vec<T>,
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
    pub position: String,
}

impl<T: async_graphql::OutputType> Page<T> {
    /// An application page in this shape, each item mapped by `map`.
    pub fn from_app<U>(page: pop_app::Page<U>, map: impl FnMut(U) -> T) -> Page<T> {
        Page {
            has_next_page: page.next.is_some(),
            end_cursor: page.next.map(|c| c.to_string()),
            position: page.position.to_string(),
            items: page.items.into_iter().map(map).collect(),
        }
    }
}

impl Page<EventGql> {
    /// A page of events in this shape.
    pub fn from_events(page: EventPage) -> Page<EventGql> {
        Page {
            items: page.events.iter().map(EventGql::from).collect(),
            end_cursor: page.end_cursor,
            has_next_page: page.more,
            position: page.position.to_string(),
        }
    }
}

/// The lease an agenda is held under (`scheduled` or EXECUTING): an executor sends its `id`
/// with every report (`leaseId`) so that a report from an executor whose lease was
/// superseded (reclaimed and claimed again) is refused, and renews it before `expires`.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Lease")]
pub struct LeaseGql {
    pub id: String,
    pub expires: DateTime<Utc>,
    /// Milliseconds from this answer to `expires`, by the server's clock (0 once past): a
    /// worker sizes its heartbeat from this, whatever its own clock says.
    pub expires_in_ms: Option<i64>,
}

/// Who holds a running agenda's lease and until when. Its lease id is not here: the agenda's
/// events show it to its readers, but only the holder may report or release with it.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "AgendaHolding")]
pub struct HoldingGql {
    /// The principal that claimed it: a worker's name.
    pub holder: String,
    /// When the lease ends unless the holder reports or renews it; past it the reclaimer
    /// requeues the agenda (an attempt counted).
    pub expires: DateTime<Utc>,
    /// Milliseconds from this answer to `expires`, by the server's clock (0 once past).
    pub expires_in_ms: i64,
}

/// An agenda mutation's answer, each field converted only when the request selects it: a
/// worker's report asks for `position` alone, and converting a 500-operation agenda it never
/// reads took a third of the server's time per report.
#[derive(Debug, Clone)]
pub struct AgendaResultGql(AgendaOutcome);

/// What an agenda mutation did: the agenda and its progress as the write that held the
/// command left them, the lease it is held under (after `getAgenda` and reports), and the
/// global position of that write's last event (`null` when the command changed nothing).
/// Commands on one agenda that arrive together (a burst of reports) are decided one after
/// another and appended in one write, so they share its position and the state after it.
#[Object(name = "AgendaResult")]
impl AgendaResultGql {
    async fn agenda(&self) -> Option<AgendaGql> {
        self.0.agenda().map(AgendaGql::from)
    }

    async fn progress(&self) -> AgendaProgressGql {
        AgendaProgressGql::from(self.0.progress())
    }

    async fn lease(&self, ctx: &Context<'_>) -> Option<LeaseGql> {
        let now = ctx.data_opt::<pop_app::App>().map(pop_app::App::now);
        self.0.lease().map(|l| LeaseGql {
            id: l.lease_id.clone(),
            expires: l.expires,
            expires_in_ms: now.map(|now| (l.expires - now).num_milliseconds().max(0)),
        })
    }

    async fn position(&self) -> Option<String> {
        self.0.position.map(|p| p.to_string())
    }

    async fn cid(&self) -> &str {
        &self.0.cid
    }

    /// The W3C `traceparent` of the latest traced request that changed the agenda (its
    /// submission, a rerun, a worker's report; never a claim; the request span's when the server exports
    /// traces, else the client's header), `null` when none carried one. An executor sends it
    /// (or a child of it) as the `traceparent` header of its reports, so its work joins the
    /// agenda's trace.
    async fn traceparent(&self) -> Option<&str> {
        self.0.traceparent.as_deref()
    }

    /// The W3C `tracestate` that came with `traceparent` (vendors' trace data, at most 512
    /// characters), `null` when none did. An executor sends it back with the traceparent.
    async fn tracestate(&self) -> Option<&str> {
        self.0.tracestate.as_deref()
    }
}

impl From<AgendaOutcome> for AgendaResultGql {
    fn from(o: AgendaOutcome) -> Self {
        AgendaResultGql(o)
    }
}

/// One report of `updateAgendaProgresses`: the AgendaProgress JSON (as for
/// `updateAgendaProgress`) and, optionally, the lease it is sent under.
#[derive(async_graphql::InputObject, Debug, Clone)]
#[graphql(name = "ReportInput")]
pub struct ReportInputGql {
    pub agenda_progress: Json<Value>,
    pub lease_id: Option<String>,
}

/// One problem of an item's VALIDATION error: the field at fault and why.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "FieldProblem")]
pub struct FieldProblemGql {
    pub field: String,
    pub message: String,
}

/// Why one item of a batch failed: pop's code, the message, the validation problems (field
/// paths inside the request, e.g. `reports[2].agendaProgress.id`) and the request's cid.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ItemError")]
pub struct ItemErrorGql {
    pub code: String,
    pub message: String,
    pub problems: Vec<FieldProblemGql>,
    pub cid: Option<String>,
}

impl From<pop_app::AppError> for ItemErrorGql {
    fn from(e: pop_app::AppError) -> Self {
        ItemErrorGql {
            code: e.code.as_str().to_string(),
            message: e.message,
            problems: e
                .problems
                .into_iter()
                .map(|p| FieldProblemGql { field: p.field, message: p.message })
                .collect(),
            cid: e.cid,
        }
    }
}

/// The answer to one report of a batch, at its `index` in the request: `result` when it was
/// taken, else `error`.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "ReportItemResult")]
pub struct ReportItemResultGql {
    pub index: i32,
    pub result: Option<AgendaResultGql>,
    pub error: Option<ItemErrorGql>,
}

/// What a config mutation did (for a delete: the object as it was deleted).
#[derive(SimpleObject, Debug, Clone)]
#[graphql(concrete(name = "CustomerResult", params(CustomerGql)))]
#[graphql(concrete(name = "ResourcePoolResult", params(ResourcePoolGql)))]
#[graphql(concrete(name = "InsightResult", params(InsightGql)))]
#[graphql(concrete(name = "AgendaTemplateResult", params(AgendaTemplateGql)))]
pub struct ConfigResult<T: async_graphql::OutputType> {
    pub object: T,
    pub deleted: bool,
    pub position: Option<String>,
    pub cid: String,
}

impl<G: async_graphql::OutputType> ConfigResult<G> {
    pub fn from_configured<T>(done: Configured<T>) -> ConfigResult<G>
    where
        G: for<'a> From<&'a T>,
    {
        ConfigResult {
            object: G::from(&done.object),
            deleted: done.deleted,
            position: done.position.map(|p| p.to_string()),
            cid: done.cid,
        }
    }
}

/// The caller, as the API sees it.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "Principal")]
pub struct PrincipalGql {
    pub name: String,
    pub role: String,
    /// The customer ids it may see; `["*"]` for every customer.
    pub customers: Vec<String>,
    /// What its role allows (`read`, `submit`, `rerun`, `cancel`, `expand`, `work`,
    /// `configure`, `readLog`); each object's customer is still checked. Clients offer only
    /// these actions.
    pub allowed: Vec<String>,
}

impl From<&Principal> for PrincipalGql {
    fn from(p: &Principal) -> Self {
        PrincipalGql {
            name: p.name.clone(),
            role: p.role.as_str().to_string(),
            customers: match customer_ids(&p.customers) {
                None => vec!["*".to_string()],
                Some(ids) => ids.iter().cloned().collect(),
            },
            allowed: p.allowed().map(|a| a.name().to_string()).collect(),
        }
    }
}

/// One item of an agenda progress subscription. Normally `progress` is the agenda's current
/// progress after the change at `position`. When the subscriber fell behind, one item has
/// `lagged: true` (`missed` changes may have been dropped, `progress` null) and the items
/// after it re-send the current state (`resync: true`); `truncated` on the lagged item says
/// the re-sent state was capped and the client should re-list with `atLeastPosition`. A
/// follow resumed from `afterPosition` re-sends the same way, and when that was capped it
/// starts with such a lagged item (`missed` 0, `truncated` true).
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "AgendaProgressUpdate")]
pub struct AgendaProgressUpdate {
    pub position: String,
    pub progress: Option<AgendaProgressGql>,
    /// The agenda left the read model (its stream was deleted).
    pub removed: bool,
    pub lagged: bool,
    pub missed: u64,
    pub resync: bool,
    pub truncated: bool,
    /// The follow's turn, held until the item is shaped into its message.
    #[graphql(skip)]
    pub turn: pop_app::live::Turn,
}

/// One item of an operation progress subscription: the operation progress entries the change
/// touched (all of them on the first item and after a lag), with the same lag signalling as
/// [`AgendaProgressUpdate`].
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "OperationProgressUpdate")]
pub struct OperationProgressUpdate {
    pub position: String,
    pub agenda_id: String,
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub operation_progress: Vec<OperationProgressGql>,
    /// Names of operations the change removed (a rerun drops generated operations).
    pub removed_operations: Vec<String>,
    pub lagged: bool,
    pub missed: u64,
    pub resync: bool,
    /// The follow's turn, held until the item is shaped into its message.
    #[graphql(skip)]
    pub turn: pop_app::live::Turn,
}

impl From<ProgressUpdate> for AgendaProgressUpdate {
    fn from(u: ProgressUpdate) -> Self {
        AgendaProgressUpdate {
            position: u.position.to_string(),
            progress: u.progress.as_ref().map(AgendaProgressGql::from),
            removed: u.removed,
            lagged: u.lagged,
            missed: u.missed,
            resync: u.resync,
            truncated: u.truncated,
            turn: u.turn,
        }
    }
}

impl From<OperationsUpdate> for OperationProgressUpdate {
    fn from(u: OperationsUpdate) -> Self {
        OperationProgressUpdate {
            position: u.position.to_string(),
            agenda_id: u.agenda_id,
            operation_progress: u
                .operation_progress
                .iter()
                .map(OperationProgressGql::from)
                .collect(),
            removed_operations: u.removed_operations,
            lagged: u.lagged,
            missed: u.missed,
            resync: u.resync,
            turn: u.turn,
        }
    }
}
