//! The endpoints of the REST surface. Each reads POP's request shape leniently (string-typed
//! numbers and booleans accepted), checks the caller's role exactly as the GraphQL resolver
//! does, calls the resolver's own command or query function, and writes POP's response shape
//! (`{all: [...], count}` for data objects).

use axum::http::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use pop_domain::model::{self, AgendaTemplate, Customer, Insight, ResourcePool};
use pop_projections::{AgendaEntry, CorruptEntry, Cursor};

use super::pop_json::{self, to_json};
use super::{Call, Endpoint, Kind, Reply, RestResult};
use crate::auth::Action;
use crate::error::ApiError;
use crate::graphql::mutation::{
    ConfigNames, ConfigOp, configure_with, expand, rerun, run_template_for, submit_json,
};
use crate::graphql::query::{
    AgendaFilter, agenda_slice, corrupt, progress_summary, visible_agenda, visible_customer,
    visible_insight, visible_operation_progress, visible_progress, visible_resource_pool,
    visible_template,
};
use crate::graphql::types::AgendaResultGql;
use crate::graphql::{
    Services, authorize_caller, mutation_cid, page_size, parse_cursor, wait_for, work,
};

// Query parameter names, lower-cased (matched case-insensitively).
const BY_ID: &str = "byid";
const BY_CUSTOMER_ID: &str = "bycustomerid";
const BY_LINK_ID: &str = "bylinkid";
const BY_AGENDA_ID: &str = "byagendaid";
const BY_AGENDA_PROGRESS_ID: &str = "byagendaprogressid";
const BY_RESOURCE_POOL_ID: &str = "byresourcepoolid";
const BY_INSIGHT_ID: &str = "byinsightid";
const BY_TITLE: &str = "bytitle";
const LIMIT: &str = "limit";
const AFTER: &str = "after";
const AT_LEAST_POSITION: &str = "atleastposition";
const LINK_ID: &str = "linkid";

/// The query parameters each GET accepts, as documented in the OpenAPI document.
pub(crate) fn list_params(kind: Kind, item: bool) -> &'static [&'static str] {
    const AGENDA: &[&str] = &[
        BY_ID,
        BY_AGENDA_ID,
        BY_CUSTOMER_ID,
        BY_LINK_ID,
        BY_AGENDA_PROGRESS_ID,
        BY_RESOURCE_POOL_ID,
        BY_INSIGHT_ID,
        BY_TITLE,
        LIMIT,
        AFTER,
        AT_LEAST_POSITION,
    ];
    const PROGRESS: &[&str] = &[
        BY_ID,
        BY_AGENDA_ID,
        BY_CUSTOMER_ID,
        BY_LINK_ID,
        BY_RESOURCE_POOL_ID,
        BY_INSIGHT_ID,
        BY_TITLE,
        LIMIT,
        AFTER,
        AT_LEAST_POSITION,
    ];
    const OPERATION: &[&str] = &[BY_ID, BY_AGENDA_PROGRESS_ID, BY_AGENDA_ID, AT_LEAST_POSITION];
    const POOLED: &[&str] =
        &[BY_ID, BY_CUSTOMER_ID, BY_TITLE, BY_RESOURCE_POOL_ID, LIMIT, AFTER, AT_LEAST_POSITION];
    const OWNED: &[&str] = &[BY_ID, BY_CUSTOMER_ID, BY_TITLE, LIMIT, AFTER, AT_LEAST_POSITION];
    if item {
        return &[AT_LEAST_POSITION];
    }
    match kind {
        Kind::Agenda => AGENDA,
        Kind::AgendaProgress => PROGRESS,
        Kind::OperationProgress => OPERATION,
        Kind::Customer | Kind::Insight => POOLED,
        Kind::ResourcePool | Kind::AgendaTemplate => OWNED,
    }
}

/// The spelling of a parameter in the documentation and in messages.
pub(crate) fn param_spelling(lower: &str) -> &'static str {
    match lower {
        BY_ID => "byId",
        BY_CUSTOMER_ID => "byCustomerId",
        BY_LINK_ID => "byLinkId",
        BY_AGENDA_ID => "byAgendaId",
        BY_AGENDA_PROGRESS_ID => "byAgendaProgressId",
        BY_RESOURCE_POOL_ID => "byResourcePoolId",
        BY_INSIGHT_ID => "byInsightId",
        BY_TITLE => "byTitle",
        LIMIT => "limit",
        AFTER => "after",
        AT_LEAST_POSITION => "atLeastPosition",
        LINK_ID => "linkId",
        _ => "?",
    }
}

impl Call<'_> {
    fn services(&self) -> &Services {
        self.state.services()
    }

    fn authorize(&self, action: Action) -> RestResult<()> {
        authorize_caller(&self.caller, action)?;
        Ok(())
    }

    fn param(&self, lower: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == lower).map(|(_, v)| v.as_str())
    }

    /// Refuses parameters the route does not know, so a typo never widens a list.
    fn allow_params(&self, allowed: &[&str]) -> RestResult<()> {
        if let Some((name, _)) = self.params.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
            let known: Vec<&str> = allowed.iter().map(|p| param_spelling(p)).collect();
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {name:?} here; this route takes {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
            .into());
        }
        Ok(())
    }

    /// Read-your-writes: waits for `atLeastPosition` like every GraphQL query.
    async fn wait(&self) -> RestResult<()> {
        wait_for(self.services(), self.param(AT_LEAST_POSITION)).await?;
        Ok(())
    }

    /// The JSON object body.
    fn object(&self, what: &str) -> RestResult<&Map<String, Value>> {
        match &self.body {
            None => Err(ApiError::bad_request(format!("a JSON body ({what}) is required")).into()),
            Some(Value::Object(o)) => Ok(o),
            Some(_) => Err(ApiError::invalid(what, "must be a JSON object").into()),
        }
    }

    /// The cid of a write: the body's `cid` when given (checked like GraphQL's), else the
    /// request's.
    fn write_cid(&self, given: Option<&Value>) -> RestResult<String> {
        let given = given.and_then(Value::as_str).map(str::to_string);
        Ok(mutation_cid(&self.caller, given)?)
    }

    fn limit(&self) -> RestResult<usize> {
        let max = self.services().config.max_page_size;
        let first = match self.param(LIMIT) {
            None => i32::try_from(max).unwrap_or(i32::MAX),
            Some(text) => text.trim().parse::<i32>().map_err(|_| {
                ApiError::invalid("limit", format!("{text:?} is not an integer in 1..={max}"))
            })?,
        };
        Ok(page_size(Some(first), max)?)
    }

    fn after(&self) -> RestResult<Option<Cursor>> {
        Ok(parse_cursor(self.param(AFTER))?)
    }
}

/// A field as text: strings as they are, numbers and booleans written out (POP clients send
/// ids and counts either way); objects and arrays are a validation error.
fn text(object: &Map<String, Value>, field: &str) -> RestResult<Option<String>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(_) => Err(ApiError::invalid(field, "must be a string").into()),
    }
}

fn required_text(object: &Map<String, Value>, field: &str) -> RestResult<String> {
    text(object, field)?.ok_or_else(|| ApiError::invalid(field, "is required").into())
}

/// A field as an integer: a JSON integer or a numeric string.
fn integer(object: &Map<String, Value>, field: &str) -> RestResult<Option<i64>> {
    let bad = || ApiError::invalid(field, "must be an integer (a number or a numeric string)");
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad().into()),
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| bad().into()),
        Some(_) => Err(bad().into()),
    }
}

/// `{all: [...], count}` (and `next`, the cursor of the following page, when there is one).
fn feed(all: Vec<Value>, next: Option<Cursor>) -> Reply {
    let mut body = json!({"count": all.len(), "all": all});
    if let (Some(next), Value::Object(o)) = (next, &mut body) {
        o.insert("next".into(), Value::String(next.to_string()));
    }
    Reply::json(body)
}

fn values<T: Serialize>(items: &[T]) -> RestResult<Vec<Value>> {
    Ok(items.iter().map(to_json).collect::<Result<_, _>>()?)
}

/// The agendas of agenda command results as POP JSON: `{all: [agendas], agendaProgresses,
/// count}`, with the position of the last write.
fn agenda_reply(results: &[AgendaResultGql]) -> RestResult<Reply> {
    let agendas: Vec<model::Agenda> =
        results.iter().filter_map(|r| r.agenda.as_ref()).map(pop_json::agenda).collect();
    let progress: Vec<model::AgendaProgress> =
        results.iter().map(|r| pop_json::progress(&r.progress)).collect();
    let body = json!({
        "count": agendas.len(),
        "all": values(&agendas)?,
        "agendaProgresses": values(&progress)?,
    });
    let position = results.iter().rev().find_map(|r| r.position.clone());
    Ok(Reply { body, position })
}

pub(super) async fn handle(endpoint: Endpoint, call: Call<'_>) -> RestResult<Reply> {
    match endpoint {
        Endpoint::OpenApi => Ok(Reply::json(super::openapi::document())),
        Endpoint::Collection(kind) | Endpoint::Item(kind) => match call.method {
            Method::GET => get(kind, &call).await,
            Method::POST => create(kind, &call).await,
            Method::PUT => update(kind, &call).await,
            _ => delete(kind, &call).await,
        },
        Endpoint::Run => run(&call).await,
        Endpoint::Rerun => rerun_agenda(&call).await,
        Endpoint::GetAgenda => get_agenda(&call).await,
        Endpoint::UpdateAgendaProgress => update_progress(&call).await,
        Endpoint::UpdateAgenda => update_agenda(&call).await,
        Endpoint::CreateAgenda => create_agenda(&call).await,
        Endpoint::Summary => summary(&call).await,
    }
}

// ---- reads -------------------------------------------------------------------------------

async fn get(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Read)?;
    call.allow_params(list_params(kind, call.id.is_some()))?;
    call.wait().await?;
    let (all, next) = match kind {
        Kind::Agenda | Kind::AgendaProgress => agenda_list(kind, call)?,
        Kind::OperationProgress => (operation_list(call)?, None),
        Kind::Customer => config_list::<Customer>(
            call,
            |m, p, id| visible_customer(m, p, id).cloned(),
            |m, v, a, l, k| m.customers_where(v, a, l, k).map(Clone::clone),
            |c| (c.customer_id.as_str(), Some(c.title.as_str()), c.resource_pool_id.as_deref()),
        )?,
        Kind::ResourcePool => config_list::<ResourcePool>(
            call,
            |m, p, id| visible_resource_pool(m, p, id).cloned(),
            |m, v, a, l, k| m.resource_pools_where(v, a, l, k).map(Clone::clone),
            |r| (r.customer_id.as_str(), r.title.as_deref(), None),
        )?,
        Kind::Insight => config_list::<Insight>(
            call,
            |m, p, id| visible_insight(m, p, id).cloned(),
            |m, v, a, l, k| m.insights_where(v, a, l, k).map(Clone::clone),
            |i| (i.customer_id.as_str(), Some(i.title.as_str()), Some(i.resource_pool_id.as_str())),
        )?,
        Kind::AgendaTemplate => config_list::<AgendaTemplate>(
            call,
            |m, p, id| visible_template(m, p, id).cloned(),
            |m, v, a, l, k| m.templates_where(v, a, l, k).map(Clone::clone),
            |t| (t.customer_id.as_str(), t.title.as_deref(), None),
        )?,
    };
    if let (Some(id), true) = (&call.id, all.is_empty()) {
        return Err(ApiError::not_found(kind.name(), id).into());
    }
    Ok(feed(all, next))
}

/// Agendas or their progress: by id (or progress id / agenda id) from the read models' own
/// indexes, else a page of the agendas the caller sees, filtered.
fn agenda_list(kind: Kind, call: &Call<'_>) -> RestResult<(Vec<Value>, Option<Cursor>)> {
    let principal = &call.caller.principal;
    let filter = AgendaFilter {
        customer_id: call.param(BY_CUSTOMER_ID).map(str::to_string),
        link_id: call.param(BY_LINK_ID).map(str::to_string),
        insight_id: call.param(BY_INSIGHT_ID).map(str::to_string),
        ..AgendaFilter::default()
    };
    let pool = call.param(BY_RESOURCE_POOL_ID);
    let title = call.param(BY_TITLE);
    let pool_matches = |i: Option<&model::AgendaInsight>| {
        pool.is_none_or(|p| i.is_some_and(|i| i.resource_pool_id == p))
    };
    let title_matches = |t: Option<&String>| title.is_none_or(|w| t.is_some_and(|t| t == w));
    let indexed = |e: &AgendaEntry| {
        filter.customer_id.as_deref().is_none_or(|c| e.customer_id() == c)
            && filter.link_id.as_deref().is_none_or(|l| e.link_id() == Some(l))
            && filter.insight_id.as_deref().is_none_or(|i| e.insight_id() == Some(i))
    };
    let models = call.services().projections.read();
    // One agenda named by id: the path's, `byId`, or (for the other object) its progress or
    // agenda id.
    let single: Option<Option<&AgendaEntry>> = match kind {
        Kind::Agenda => {
            match (
                call.id.as_deref().or(call.param(BY_ID)).or(call.param(BY_AGENDA_ID)),
                call.param(BY_AGENDA_PROGRESS_ID),
            ) {
                (Some(id), _) => Some(visible_agenda(&models, principal, id)),
                (None, Some(p)) => Some(visible_progress(&models, principal, p)),
                (None, None) => None,
            }
        }
        _ => match (call.id.as_deref().or(call.param(BY_ID)), call.param(BY_AGENDA_ID)) {
            (Some(id), _) => Some(visible_progress(&models, principal, id)),
            (None, Some(a)) => Some(visible_agenda(&models, principal, a)),
            (None, None) => None,
        },
    };
    // `byTitle` / `byResourcePoolId` are not indexed: they are checked on the decoded agenda
    // (or progress) while the page is selected, so the page holds `limit` matching items and
    // `next` only follows when more may match (or when the read models' bound on entries
    // examined per page, `MAX_SCANNED_PER_PAGE`, ended the scan early). A corrupt entry is
    // kept here so that decoding it below reports the corruption instead of hiding it.
    let fields_match = |e: &AgendaEntry| -> bool {
        if pool.is_none() && title.is_none() {
            return true;
        }
        let agenda_matches = |a: Option<&model::Agenda>| {
            a.is_some_and(|a| {
                pool_matches(a.agenda_insight.as_ref()) && title_matches(a.title.as_ref())
            })
        };
        let progress_matches = |p: &model::AgendaProgress| {
            pool_matches(p.agenda_insight.as_ref()) && title_matches(p.title.as_ref())
        };
        // A live entry is read in place; a settled one decodes only the part needed.
        let matched = match (kind, e.is_settled()) {
            (Kind::Agenda, false) => e.state().map(|s| agenda_matches(s.agenda())),
            (Kind::Agenda, true) => e.agenda().map(|a| agenda_matches(a.as_ref())),
            (_, false) => e.state().map(|s| progress_matches(s.progress())),
            (_, true) => e.progress().map(|p| progress_matches(&p)),
        };
        matched.unwrap_or(true)
    };
    let entries: Vec<&AgendaEntry>;
    let mut next = None;
    let decode_all = |list: Vec<&AgendaEntry>| -> RestResult<Vec<Value>> {
        let mut out = Vec::with_capacity(list.len());
        for e in list {
            if kind == Kind::Agenda {
                if let Some(a) = e.agenda().map_err(corrupt)? {
                    out.push(to_json(&a)?);
                }
            } else {
                out.push(to_json(&e.progress().map_err(corrupt)?)?);
            }
        }
        Ok(out)
    };
    match single {
        Some(found) => {
            entries = found.into_iter().filter(|e| indexed(e) && fields_match(e)).collect();
        }
        None => {
            let after = call.after()?;
            let limit = call.limit()?;
            let slice = agenda_slice(
                &models,
                principal,
                &filter,
                after,
                limit,
                Some(&fields_match),
                |e| Ok::<_, CorruptEntry>(Some(e.id().to_string())),
            )?;
            next = slice.next;
            entries = slice.items.iter().filter_map(|id| models.agenda_entry(id)).collect();
        }
    }
    Ok((decode_all(entries)?, next))
}

/// Operation progress of one agenda (by its progress id or agenda id), or one by id.
fn operation_list(call: &Call<'_>) -> RestResult<Vec<Value>> {
    let principal = &call.caller.principal;
    let models = call.services().projections.read();
    if let Some(id) = call.id.as_deref().or(call.param(BY_ID)) {
        let found = visible_operation_progress(&models, principal, id)?;
        return values(&found.into_iter().collect::<Vec<_>>());
    }
    let entry = match (call.param(BY_AGENDA_PROGRESS_ID), call.param(BY_AGENDA_ID)) {
        (Some(p), _) => visible_progress(&models, principal, p),
        (None, Some(a)) => visible_agenda(&models, principal, a),
        (None, None) => {
            return Err(ApiError::bad_request(
                "operation progress is listed per agenda: give byId, byAgendaProgressId or byAgendaId",
            )
            .into());
        }
    };
    match entry {
        None => Ok(Vec::new()),
        Some(e) => values(&e.progress().map_err(corrupt)?.operation_progress),
    }
}

type Page<T> = pop_projections::Page<T>;

/// The filter a config list applies while its page is selected.
type Keep<'k, T> = &'k dyn Fn(&T) -> bool;

/// A config object by id, or a page of the visible ones, filtered by `fields` (customer id,
/// title, resource pool id). The filter is applied while the page is selected (not to a page
/// already cut), so the page holds up to `limit` matching objects and `next` only follows when
/// more may match — or when the read models' bound on objects examined per page
/// (`MAX_SCANNED_PER_PAGE`) ended the scan early, in which case the page may hold fewer.
fn config_list<T: Serialize + Clone>(
    call: &Call<'_>,
    by_id: impl Fn(&pop_projections::ReadModels, &crate::auth::Principal, &str) -> Option<T>,
    page: impl Fn(
        &pop_projections::ReadModels,
        &pop_projections::Visibility,
        Option<&Cursor>,
        usize,
        Keep<'_, T>,
    ) -> Page<T>,
    fields: impl Fn(&T) -> (&str, Option<&str>, Option<&str>),
) -> RestResult<(Vec<Value>, Option<Cursor>)> {
    let principal = &call.caller.principal;
    let keep = |o: &T| {
        let (customer, title, pool) = fields(o);
        call.param(BY_CUSTOMER_ID).is_none_or(|c| c == customer)
            && call.param(BY_TITLE).is_none_or(|t| title == Some(t))
            && call.param(BY_RESOURCE_POOL_ID).is_none_or(|p| pool == Some(p))
    };
    let models = call.services().projections.read();
    if let Some(id) = call.id.as_deref().or(call.param(BY_ID)) {
        let found: Vec<T> = by_id(&models, principal, id).into_iter().filter(|o| keep(o)).collect();
        return Ok((values(&found)?, None));
    }
    let after = call.after()?;
    let limit = call.limit()?;
    let page = page(&models, &principal.customers, after.as_ref(), limit, &keep);
    Ok((values(&page.items)?, page.next))
}

// ---- data-object writes --------------------------------------------------------------------

async fn create(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[AT_LEAST_POSITION])?;
    match kind {
        Kind::Agenda => {
            call.authorize(Action::Submit)?;
            let object = call.object("agenda")?;
            let cid = call.write_cid(object.get("cid"))?;
            call.wait().await?;
            let result =
                submit_json(call.services(), &call.caller, Value::Object(object.clone()), cid)
                    .await?;
            agenda_reply(std::slice::from_ref(&result))
        }
        _ => configure(kind, call, Write::Create).await,
    }
}

async fn update(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[AT_LEAST_POSITION])?;
    configure(kind, call, Write::Update).await
}

async fn delete(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[BY_ID, AT_LEAST_POSITION])?;
    configure(kind, call, Write::Delete).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Update,
    Delete,
}

/// Create, update or delete a customer, pool, insight or template through the GraphQL
/// mutations' own function.
async fn configure(kind: Kind, call: &Call<'_>, write: Write) -> RestResult<Reply> {
    call.authorize(Action::Configure)?;
    let op = match write {
        Write::Delete => {
            let id = call.id.as_deref().or(call.param(BY_ID)).ok_or_else(|| {
                ApiError::invalid("byId", "name the object to delete in the path or byId")
            })?;
            ConfigOp::Delete(id.to_string())
        }
        _ => {
            let mut object = call.object(kind.name())?.clone();
            if let Some(path_id) = &call.id {
                match object.get("id") {
                    None | Some(Value::Null) => {
                        object.insert("id".into(), Value::String(path_id.clone()));
                    }
                    Some(Value::String(s)) if s.trim().is_empty() => {
                        object.insert("id".into(), Value::String(path_id.clone()));
                    }
                    Some(Value::String(s)) if s == path_id => {}
                    Some(_) => {
                        return Err(ApiError::invalid(
                            "id",
                            format!("the body's id differs from the path's {path_id:?}"),
                        )
                        .into());
                    }
                }
            }
            if write == Write::Create {
                ConfigOp::Create(Value::Object(object))
            } else {
                ConfigOp::Update(Value::Object(object))
            }
        }
    };
    call.wait().await?;
    let cid = call.caller.cid.clone();
    let services = call.services();
    let caller = &call.caller;
    match kind {
        Kind::Customer => configured::<Customer>(services, caller, op, cid).await,
        Kind::ResourcePool => configured::<ResourcePool>(services, caller, op, cid).await,
        Kind::Insight => configured::<Insight>(services, caller, op, cid).await,
        Kind::AgendaTemplate => configured::<AgendaTemplate>(services, caller, op, cid).await,
        // The route table answers 405 before a write on these reaches here.
        Kind::Agenda | Kind::AgendaProgress | Kind::OperationProgress => {
            Err(ApiError::bad_request(format!("{} cannot be changed here", kind.name())).into())
        }
    }
}

async fn configured<T: ConfigNames>(
    services: &Services,
    caller: &crate::graphql::Caller,
    op: ConfigOp,
    cid: String,
) -> RestResult<Reply> {
    let done = configure_with::<T>(services, caller, op, cid).await?;
    let mut reply = feed(vec![to_json(&done.object)?], None);
    reply.position = done.position;
    Ok(reply)
}

// ---- services ------------------------------------------------------------------------------

/// `agenda/service/run {payload: <JSON text>, agendaTemplateId, customerId?}`.
async fn run(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Submit)?;
    call.allow_params(&[AT_LEAST_POSITION])?;
    let object = call.object("run request")?;
    let template_id = required_text(object, "agendaTemplateId")?;
    let payload = match object.get("payload") {
        None => Value::Null,
        // POP sends the payload as JSON text.
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| {
            ApiError::invalid("payload", format!("the payload text is not JSON: {e}"))
        })?,
        Some(other) => other.clone(),
    };
    let customer_id = text(object, "customerId")?;
    let cid = call.write_cid(object.get("cid"))?;
    call.wait().await?;
    let result =
        run_template_for(call.services(), &call.caller, &template_id, payload, customer_id, cid)
            .await?;
    agenda_reply(std::slice::from_ref(&result))
}

/// `agenda/service/rerun {agendaId, params: [...]}`.
async fn rerun_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Rerun)?;
    call.allow_params(&[])?;
    let object = call.object("rerun request")?;
    let agenda_id = required_text(object, "agendaId")?;
    let params = match object.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid(&format!("params[{i}]"), "must be a string").into()
                })
            })
            .collect::<RestResult<Vec<String>>>()?,
        Some(_) => return Err(ApiError::invalid("params", "must be a list of strings").into()),
    };
    let cid = call.write_cid(object.get("cid"))?;
    let result = rerun(call.services(), &call.caller, &agenda_id, params, &cid).await?;
    agenda_reply(std::slice::from_ref(&result))
}

/// `resourcepool/service/getAgenda {insightId, count}` → `{all, agendaProgresses, count}`.
async fn get_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Work)?;
    call.allow_params(&[])?;
    let object = call.object("getAgenda request")?;
    let insight_id = required_text(object, "insightId")?;
    let count =
        integer(object, "count")?.ok_or_else(|| ApiError::invalid("count", "is required"))?;
    // Out of range either way: the shared function names the bounds.
    let count = i32::try_from(count).unwrap_or(0);
    let results =
        work::get_agenda(call.services(), &call.caller, &insight_id, count, &call.caller.cid)
            .await?;
    agenda_reply(&results)
}

/// `resourcepool/service/updateAgendaProgress {agendaProgress}` (or the AgendaProgress as the
/// whole body) → `{all: [agendaProgress], count}`.
async fn update_progress(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Work)?;
    call.allow_params(&[])?;
    let object = call.object("updateAgendaProgress request")?;
    let mut progress = match object.get("agendaProgress") {
        Some(p) => p.clone(),
        None => Value::Object(object.clone()),
    };
    pop_json::numbers_from_strings(&mut progress);
    let cid = call.write_cid(object.get("cid"))?;
    let result =
        work::update_agenda_progress(call.services(), &call.caller, progress, &cid).await?;
    let mut reply = feed(vec![to_json(&pop_json::progress(&result.progress))?], None);
    reply.position = result.position;
    Ok(reply)
}

/// `resourcepool/service/updateAgenda {agendaId, operations, params?}`: the expand.
async fn update_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Expand)?;
    call.allow_params(&[])?;
    let object = call.object("updateAgenda request")?;
    let agenda_id = required_text(object, "agendaId")?;
    let operations = object
        .get("operations")
        .cloned()
        .ok_or_else(|| ApiError::invalid("operations", "is required"))?;
    let params = object.get("params").filter(|p| !p.is_null()).cloned();
    let cid = call.write_cid(object.get("cid"))?;
    let result =
        expand(call.services(), &call.caller, &agenda_id, operations, params, &cid).await?;
    agenda_reply(std::slice::from_ref(&result))
}

/// `resourcepool/service/createAgenda {agenda}` (or the agenda as the whole body): a
/// submission, with the same rights as `POST agenda`.
async fn create_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Submit)?;
    call.allow_params(&[AT_LEAST_POSITION])?;
    let object = call.object("createAgenda request")?;
    let agenda = match object.get("agenda") {
        Some(a) => a.clone(),
        None => Value::Object(object.clone()),
    };
    let cid = call.write_cid(agenda.get("cid").or(object.get("cid")))?;
    call.wait().await?;
    let result = submit_json(call.services(), &call.caller, agenda, cid).await?;
    agenda_reply(std::slice::from_ref(&result))
}

/// `progress/agenda/service {linkId}` (POST body, or `?linkId=` on GET) → the
/// ProgressSummary `{linkId, processingState, processingPercent, progressList}`.
async fn summary(call: &Call<'_>) -> RestResult<Reply> {
    call.authorize(Action::Read)?;
    let link_id = if call.method == Method::GET {
        call.allow_params(&[LINK_ID, BY_LINK_ID, AT_LEAST_POSITION])?;
        call.param(LINK_ID).or(call.param(BY_LINK_ID)).map(str::to_string)
    } else {
        call.allow_params(&[AT_LEAST_POSITION])?;
        text(call.object("summary request")?, "linkId")?
    }
    .filter(|l| !l.trim().is_empty())
    .ok_or_else(|| ApiError::invalid("linkId", "is required"))?;
    call.wait().await?;
    let summary = {
        let models = call.services().projections.read();
        progress_summary(&models, &call.caller.principal, &link_id)?
    };
    Ok(Reply::json(to_json(&summary)?))
}
