//! The endpoints of the REST surface. Each reads POP's request shape leniently (string-typed
//! numbers and booleans accepted), hands it to the application layer's use case — the same
//! one the GraphQL resolver calls, which checks the role, tenancy and every rule — and writes
//! POP's response shape (`{all: [...], count}` for data objects).

use axum::http::Method;
use serde::Serialize;
use serde_json::{Map, Value, json};

use pop_app::asof::AsOf;
use pop_app::configs::{ConfigFilter, ConfigKind, ConfigOp};
use pop_app::reads::{AgendaFilter, PageRequest};
use pop_app::resolve::Named;
use pop_app::{AgendaOutcome, App, AppError, Code};
use pop_domain::model::{AgendaTemplate, Customer, Insight, OperationProgress, ResourcePool};
use pop_domain::validate::json_bytes;
use pop_projections::Cursor;

use super::params::*;
use super::{Call, Endpoint, Kind, Reply, RestResult};

impl Call<'_> {
    fn app(&self) -> &App {
        self.state.app()
    }

    fn param(&self, lower: &str) -> Option<&str> {
        self.params.iter().find(|p| p.name == lower).map(|p| p.value.as_str())
    }

    /// Refuses parameters the route does not know, so a typo never widens a list.
    fn allow_params(&self, allowed: &[&str]) -> RestResult<()> {
        if let Some(unknown) = self.params.iter().find(|p| !allowed.contains(&p.name.as_str())) {
            let known: Vec<&str> = allowed.iter().map(|p| param_spelling(p)).collect();
            return Err(AppError::bad_request(format!(
                "unknown query parameter {:?} here; this route takes {}",
                unknown.given,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
            .into());
        }
        Ok(())
    }

    /// `atLeastPosition`, for read-your-writes.
    fn at_least(&self) -> Option<&str> {
        self.param(AT_LEAST_POSITION)
    }

    /// The JSON object body.
    fn object(&self, what: &str) -> RestResult<&Map<String, Value>> {
        match &self.body {
            None => Err(AppError::bad_request(format!("a JSON body ({what}) is required")).into()),
            Some(Value::Object(o)) => Ok(o),
            Some(_) => Err(AppError::invalid(what, "must be a JSON object").into()),
        }
    }

    /// The page a list asks for: `limit` (POP lists everything by default, so the largest
    /// page) and the `after` cursor. POP's `byLimit` above the largest page gets the largest
    /// page (POP took any limit; a page with `next` is a valid answer to it), pop's `limit` a
    /// refusal that says the bound.
    fn page(&self) -> RestResult<PageRequest> {
        let max = self.app().config().max_page_size;
        // Both spellings naming different sizes: neither is guessed to be the one meant.
        if let (Some(limit), Some(by_limit)) = (self.param(LIMIT), self.param(BY_LIMIT))
            && limit.trim() != by_limit.trim()
        {
            return Err(AppError::invalid(
                "limit",
                format!("{limit:?} differs from byLimit {by_limit:?}: name the page size once"),
            )
            .into());
        }
        let pops = self.param(LIMIT).is_none();
        let named = if pops { "byLimit" } else { "limit" };
        let first = match self.param(LIMIT).or(self.param(BY_LIMIT)) {
            None => i64::try_from(max).unwrap_or(i64::MAX),
            // Checked here, so the answer names REST's parameter (`limit`), not GraphQL's.
            Some(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .map(|n| if pops { n.min(i64::try_from(max).unwrap_or(i64::MAX)) } else { n })
                .filter(|n| *n >= 1 && usize::try_from(*n).is_ok_and(|n| n <= max))
                .ok_or_else(|| {
                    AppError::invalid(named, format!("{text:?} is not an integer in 1..={max}"))
                })?,
        };
        Ok(PageRequest { first: Some(first), after: self.param(AFTER).map(str::to_string) })
    }

    /// The one object a GET names: the path's id, else `byId`.
    fn named_id(&self) -> Option<&str> {
        self.id.as_deref().or(self.param(BY_ID))
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
        Some(_) => Err(AppError::invalid(field, "must be a string").into()),
    }
}

fn required_text(object: &Map<String, Value>, field: &str) -> RestResult<String> {
    text(object, field)?.ok_or_else(|| AppError::invalid(field, "is required").into())
}

/// A field as an integer: a JSON integer or a numeric string, either also written with a
/// zero fraction (`2.0`, `"2.0"`), as Jackson reads them into an `Integer` and pop's other
/// integer fields take them (popclient23: getAgenda's `count` refused them).
fn integer(object: &Map<String, Value>, field: &str) -> RestResult<Option<i64>> {
    let bad = || AppError::invalid(field, "must be an integer (a number or a numeric string)");
    let whole = |f: f64| {
        // Beyond ±2^53 a float is no exact integer any more.
        (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
    };
    let read = |text: &str| {
        let text = text.trim();
        text.parse::<i64>().ok().or_else(|| text.parse::<f64>().ok().and_then(whole))
    };
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().or_else(|| n.as_f64().and_then(whole)).map(Some).ok_or_else(|| bad().into())
        }
        Some(Value::String(s)) => read(s).map(Some).ok_or_else(|| bad().into()),
        Some(_) => Err(bad().into()),
    }
}

/// A domain value as POP JSON (its serde form is POP's JSON: camelCase, epoch milliseconds),
/// with every operation's `resultPayload` as POP types it ([`results_as_text`]).
fn to_json<T: Serialize>(value: &T) -> RestResult<Value> {
    let mut value =
        serde_json::to_value(value).map_err(|e| AppError::internal("writing POP JSON", &e))?;
    results_as_text(&mut value);
    Ok(value)
}

/// POP's `OperationProgress.resultPayload` is a `String` holding JSON text, and its Jackson
/// clients fail to read a whole answer whose `resultPayload` is an object. pop keeps the result
/// as JSON (GraphQL answers it so, and `pop worker` reports objects); on the POP surface a
/// result that is not a string is written as its JSON text: in an OperationProgress (it names
/// an `agendaProgressId`), in an AgendaProgress's `operationProgress`, and in the AgendaProgress
/// objects of a ProgressSummary's `progressList`. Nothing else is looked into (payloads and
/// params are the client's own JSON).
fn results_as_text(value: &mut Value) {
    fn as_text(result: Option<&mut Value>) {
        if let Some(result) = result
            && !result.is_null()
            && !result.is_string()
        {
            *result = Value::String(result.to_string());
        }
    }
    let Value::Object(map) = value else { return };
    if map.contains_key("agendaProgressId") {
        as_text(map.get_mut("resultPayload"));
    }
    if let Some(Value::Array(operations)) = map.get_mut("operationProgress") {
        operations.iter_mut().for_each(|o| as_text(o.get_mut("resultPayload")));
    }
    if let Some(Value::Array(progresses)) = map.get_mut("progressList") {
        progresses.iter_mut().for_each(results_as_text);
    }
}

fn values<T: Serialize>(items: &[T]) -> RestResult<Vec<Value>> {
    items.iter().map(to_json).collect()
}

impl Call<'_> {
    /// The items a read lists, as POP JSON with only the `byFields` asked for, refused with
    /// RESPONSE_TOO_LARGE once their text passes the response budget of `POST /graphql`
    /// (`max_response_bytes`): counted item by item as they are converted and cut, so no
    /// answer larger than the budget and one item is built. (The replies of writes are not
    /// budgeted: the write is done, and the request limits bound them.)
    fn listed<T: Serialize>(&self, items: &[T]) -> RestResult<Vec<Value>> {
        self.listed_as(items, |_| {})
    }

    /// [`Self::listed`], each item's JSON first made as clients read it (`tidy`): `byFields`
    /// picks from what the client would read whole (popclient16: `popSchedulingAlgorithm`
    /// picked nothing, and `schedulingAlgorithm` answered `Priority`, which POP's Jackson
    /// cannot read).
    fn listed_as<T: Serialize>(&self, items: &[T], tidy: fn(&mut Value)) -> RestResult<Vec<Value>> {
        let fields = self.param(BY_FIELDS).map(wanted_fields).transpose()?;
        values_within(items, self.state.config().max_response_bytes, fields.as_deref(), tidy)
    }
}

/// `byFields=id,title`: the fields named.
fn wanted_fields(text: &str) -> RestResult<Vec<&str>> {
    let wanted: Vec<&str> = text.split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    if wanted.is_empty() {
        return Err(
            AppError::invalid("byFields", "name at least one field: byFields=id,title").into()
        );
    }
    Ok(wanted)
}

/// An object with only the `wanted` fields, named in any case as POP matched them
/// (`byfields=processingstate`), anything else as it is.
fn cut(value: Value, wanted: &[&str]) -> Value {
    match value {
        Value::Object(mut map) => {
            map.retain(|key, _| wanted.iter().any(|w| w.eq_ignore_ascii_case(key)));
            Value::Object(map)
        }
        other => other,
    }
}

fn values_within<T: Serialize>(
    items: &[T],
    max_bytes: usize,
    fields: Option<&[&str]>,
    tidy: fn(&mut Value),
) -> RestResult<Vec<Value>> {
    let mut out = Vec::with_capacity(items.len());
    let mut bytes = 0usize;
    for item in items {
        let mut value = to_json(item)?;
        tidy(&mut value);
        if let Some(wanted) = fields {
            value = cut(value, wanted);
        }
        bytes = bytes.saturating_add(json_bytes(&value));
        if bytes > max_bytes {
            return Err(AppError::new(
                Code::ResponseTooLarge,
                format!(
                    "response: the {} items asked for are larger than the limit of {max_bytes} \
                     bytes; ask for fewer (`limit`) or fewer fields (`byFields`), and page \
                     through the rest (`after`)",
                    items.len()
                ),
            )
            .into());
        }
        out.push(value);
    }
    Ok(out)
}

/// `{all: [...], count}` (and `next`, the cursor of the following page, when there is one).
fn feed(all: Vec<Value>, next: Option<Cursor>) -> Reply {
    let mut body = json!({"count": all.len(), "all": all});
    if let (Some(next), Value::Object(o)) = (next, &mut body) {
        o.insert("next".into(), Value::String(next.to_string()));
    }
    Reply::json(body)
}

/// Agenda command results as POP JSON: `{all: [agendas], agendaProgresses, count}`, with the
/// position of the last write. An agenda held under a lease carries it as an extra field,
/// `lease: {id, expires}` (POP's clients ignore unknown fields; pop-aware executors send the
/// id back as `leaseId` with their reports).
fn agenda_reply(results: &[AgendaOutcome]) -> RestResult<Reply> {
    let mut agendas = Vec::with_capacity(results.len());
    for r in results {
        let Some(agenda) = r.agenda() else { continue };
        let mut value = to_json(agenda)?;
        if let (Some(lease), Value::Object(fields)) = (r.lease(), &mut value) {
            fields.insert(
                "lease".into(),
                json!({"id": lease.lease_id, "expires": lease.expires.timestamp_millis()}),
            );
        }
        agendas.push(value);
    }
    let progress: Vec<&pop_domain::AgendaProgress> = results.iter().map(|r| r.progress()).collect();
    let body = json!({
        "count": agendas.len(),
        "all": agendas,
        "agendaProgresses": values(&progress)?,
    });
    let position = results.iter().rev().find_map(|r| r.position.map(|p| p.to_string()));
    Ok(Reply::written(body, position))
}

pub(super) async fn handle(endpoint: Endpoint, call: Call<'_>) -> RestResult<Reply> {
    let mut reply = answer(endpoint, &call).await?;
    // The writes that run under a cid their body names (`body_cid`) answer with it.
    let own = match endpoint {
        Endpoint::Run
        | Endpoint::Rerun
        | Endpoint::UpdateAgendaProgress
        | Endpoint::UpdateAgendaProgresses
        | Endpoint::UpdateAgenda
        | Endpoint::ReleaseAgenda
        | Endpoint::CreateAgenda => true,
        Endpoint::Collection(Kind::Agenda) | Endpoint::Item(Kind::Agenda) => {
            call.method == Method::POST
        }
        _ => false,
    };
    if own {
        let cid_of = if endpoint == Endpoint::UpdateAgendaProgress { report_cid } else { body_cid };
        reply.own_cid =
            call.body.as_ref().and_then(Value::as_object).and_then(cid_of).map(str::to_owned);
    }
    Ok(reply)
}

async fn answer(endpoint: Endpoint, call: &Call<'_>) -> RestResult<Reply> {
    match endpoint {
        Endpoint::OpenApi => Ok(Reply::document(super::openapi::document())),
        Endpoint::Collection(kind) | Endpoint::Item(kind) => match call.method {
            Method::GET => get(kind, call).await,
            Method::POST => create(kind, call).await,
            Method::PUT => configure(kind, call, Write::Update).await,
            _ => configure(kind, call, Write::Delete).await,
        },
        Endpoint::Run => run(call).await,
        Endpoint::Rerun => rerun(call).await,
        Endpoint::GetAgenda => get_agenda(call).await,
        Endpoint::UpdateAgendaProgress => update_progress(call).await,
        Endpoint::UpdateAgendaProgresses => update_progresses(call).await,
        Endpoint::UpdateAgenda => update_agenda(call).await,
        Endpoint::ReleaseAgenda => release_agenda(call).await,
        Endpoint::CreateAgenda => create_agenda(call).await,
        Endpoint::Summary => summary(call).await,
    }
}

// ---- reads -------------------------------------------------------------------------------

/// The principal's expensive permit an as-of read holds while it runs, as on GraphQL.
fn as_of_permit(call: &Call<'_>) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
    let name = &call.caller.principal.name;
    let max = call.state.config().max_expensive_per_principal;
    crate::graphql::cost::rest_permit(call.state.running(), name, max, "asOf")
        .map_err(|e| e.with_cid(&call.caller.cid))
}

async fn get(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(list_params(kind, call.id.is_some()))?;
    let counting = match call.param(BY_COUNT).map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if matches!(v.as_str(), "true" | "1" | "") => true,
        Some(v) if matches!(v.as_str(), "false" | "0") => false,
        Some(v) => {
            return Err(AppError::invalid("byCount", format!("{v:?} is not true or false")).into());
        }
    };
    if counting {
        return count(kind, call).await;
    }
    if let (Some(as_of), Some(id)) = (call.param(AS_OF), &call.id) {
        return get_as_of(kind, call, id, as_of).await;
    }
    let (all, next) = match kind {
        Kind::Agenda | Kind::AgendaProgress => agenda_list(kind, call).await?,
        Kind::OperationProgress => operation_list(call).await?,
        Kind::Customer => config_list::<Customer>(call).await?,
        Kind::ResourcePool => config_list::<ResourcePool>(call).await?,
        Kind::Insight => config_list::<Insight>(call).await?,
        Kind::AgendaTemplate => config_list::<AgendaTemplate>(call).await?,
    };
    // POP answered an id that matches nothing with an empty list, not an error (popclient58
    // L1: its clients tell "gone" from "failed" by it): so does `--pop-errors-in-body`, the
    // mode for unchanged POP clients.
    if let (Some(id), true, false) =
        (&call.id, all.is_empty(), call.state.config().pop_errors_in_body)
    {
        return Err(AppError::not_found(kind.name(), id).into());
    }
    // `byFields` was applied as the items were listed (`Call::listed`).
    Ok(feed(all, next))
}

/// One agenda, AgendaProgress or OperationProgress as it was at `?asOf=` (a log position or an
/// RFC 3339 time), folded from the log; NOT_FOUND when it did not exist then.
async fn get_as_of(kind: Kind, call: &Call<'_>, id: &str, as_of: &str) -> RestResult<Reply> {
    let app = call.app();
    let caller = &call.caller;
    let bound = AsOf::parse("asOf", as_of).map_err(|e| e.with_cid(&caller.cid))?;
    let _permit = as_of_permit(call)?;
    let customer = call.param(BY_CUSTOMER_ID);
    let found = match kind {
        Kind::Agenda => app.agenda_as_of(caller, id, customer, bound).await?.map(|a| to_json(&a)),
        Kind::AgendaProgress => {
            app.agenda_progress_as_of(caller, id, customer, bound).await?.map(|p| to_json(&p))
        }
        Kind::OperationProgress => {
            app.operation_progress_as_of(caller, id, customer, bound).await?.map(|p| to_json(&p))
        }
        // `list_params` takes asOf only on the three routes above.
        _ => None,
    };
    let all = match found {
        Some(value) => vec![value?],
        None => return Err(AppError::not_found(kind.name(), id).with_cid(&caller.cid).into()),
    };
    let all = match call.param(BY_FIELDS) {
        Some(fields) => only_fields(all, fields)?,
        None => all,
    };
    Ok(feed(all, None))
}

/// POP's `byFields=a,b`: each object keeps only the named top-level fields.
fn only_fields(all: Vec<Value>, fields: &str) -> RestResult<Vec<Value>> {
    let wanted = wanted_fields(fields)?;
    Ok(all.into_iter().map(|object| cut(object, &wanted)).collect())
}

/// POP's `byCount`: how many objects the list's filters select, without them.
async fn count(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    let app = call.app();
    let caller = &call.caller;
    let counted = match kind {
        Kind::Agenda | Kind::AgendaProgress => {
            app.count_agendas(caller, &agenda_filter(kind, call), call.at_least()).await?
        }
        Kind::OperationProgress => {
            let n = operation_items(call).await?.len();
            pop_app::reads::Count { count: n, capped: false }
        }
        Kind::Customer => config_count::<Customer>(call).await?,
        Kind::ResourcePool => config_count::<ResourcePool>(call).await?,
        Kind::Insight => config_count::<Insight>(call).await?,
        Kind::AgendaTemplate => config_count::<AgendaTemplate>(call).await?,
    };
    let mut body = json!({"count": counted.count, "all": []});
    if counted.capped
        && let Value::Object(o) = &mut body
    {
        o.insert("countCapped".into(), Value::Bool(true));
    }
    Ok(Reply::json(body))
}

/// The agenda filter a GET's query parameters name.
fn agenda_filter(kind: Kind, call: &Call<'_>) -> AgendaFilter {
    let (agenda_id, progress_id) = match kind {
        Kind::Agenda => {
            (call.named_id().or(call.param(BY_AGENDA_ID)), call.param(BY_AGENDA_PROGRESS_ID))
        }
        _ => (call.param(BY_AGENDA_ID), call.named_id()),
    };
    AgendaFilter {
        agenda_id: agenda_id.map(str::to_string),
        progress_id: progress_id.map(str::to_string),
        customer_id: call.param(BY_CUSTOMER_ID).map(str::to_string),
        link_id: call.param(BY_LINK_ID).map(str::to_string),
        insight_id: call.param(BY_INSIGHT_ID).map(str::to_string),
        resource_pool_id: call.param(BY_RESOURCE_POOL_ID).map(str::to_string),
        title: call.param(BY_TITLE).map(str::to_string),
        cid: call.param(BY_CID).map(str::to_string),
        one: call.id.is_some(),
        ..AgendaFilter::default()
    }
}

/// The config filter a GET's query parameters name.
fn config_filter(call: &Call<'_>) -> ConfigFilter {
    ConfigFilter {
        customer_id: call.param(BY_CUSTOMER_ID).map(str::to_string),
        title: call.param(BY_TITLE).map(str::to_string),
        resource_pool_id: call.param(BY_RESOURCE_POOL_ID).map(str::to_string),
        cid: call.param(BY_CID).map(str::to_string),
    }
}

/// Agendas or their progress: one by id (or progress id / agenda id), else a page of the
/// agendas the caller sees, filtered.
async fn agenda_list(kind: Kind, call: &Call<'_>) -> RestResult<(Vec<Value>, Option<Cursor>)> {
    let filter = agenda_filter(kind, call);
    let page = call.page()?;
    let app = call.app();
    let caller = &call.caller;
    if kind == Kind::Agenda {
        let found = app.agendas(caller, &filter, &page, call.at_least()).await?;
        Ok((call.listed(&found.items)?, found.next))
    } else {
        let found = app.agenda_progress_list(caller, &filter, &page, call.at_least()).await?;
        Ok((call.listed(&found.items)?, found.next))
    }
}

/// Operation progress, listed: paged when the request names a page (see below).
async fn operation_list(call: &Call<'_>) -> RestResult<(Vec<Value>, Option<Cursor>)> {
    let found = operation_items(call).await?;
    // Pages only when asked for (`limit`, `byLimit`, `after`): an agenda's operations are
    // listed whole otherwise (at most 1,000), as before. The cursor is the index of the next
    // operation and the name of the last one listed.
    if [LIMIT, BY_LIMIT, AFTER].iter().all(|p| call.param(p).is_none()) {
        return Ok((call.listed(&found)?, None));
    }
    let page = call.page()?;
    let start = match page.after.as_deref() {
        None => 0,
        Some(text) => text
            .trim()
            .parse::<Cursor>()
            .ok()
            .and_then(|c| usize::try_from(c.time).ok())
            .ok_or_else(|| {
                AppError::invalid("after", format!("{text:?} is not a page cursor of this list"))
            })?
            .min(found.len()),
    };
    let first = page.first.and_then(|n| usize::try_from(n).ok()).unwrap_or(found.len()).max(1);
    let end = start.saturating_add(first).min(found.len());
    let next = (end < found.len())
        .then(|| found.get(end - 1).map(|op| Cursor::new(end as i64, op.operation.as_ref())))
        .flatten();
    Ok((call.listed(&found[start..end])?, next))
}

/// Operation progress of one agenda (by its progress id or agenda id), or one by id.
async fn operation_items(call: &Call<'_>) -> RestResult<Vec<OperationProgress>> {
    let app = call.app();
    if let Some(id) = call.named_id() {
        let customer = call.param(BY_CUSTOMER_ID);
        let found = app.operation_progress(&call.caller, id, customer, call.at_least()).await?;
        return Ok(found.into_iter().collect());
    }
    Ok(app
        .operation_progress_of(
            &call.caller,
            call.param(BY_AGENDA_PROGRESS_ID),
            call.param(BY_AGENDA_ID),
            call.param(BY_CUSTOMER_ID),
            call.at_least(),
        )
        .await?)
}

/// A config object by id, or a page of the visible ones, filtered by customer id, title and
/// resource pool id.
async fn config_list<T: ConfigKind + Serialize>(
    call: &Call<'_>,
) -> RestResult<(Vec<Value>, Option<Cursor>)> {
    let filter = config_filter(call);
    if let Some(found) = configs_by_id::<T>(call, &filter).await? {
        return Ok((call.listed_as(&found, T::tidy_json)?, None));
    }
    let app = call.app();
    let page = app.configs::<T>(&call.caller, &filter, &call.page()?, call.at_least()).await?;
    Ok((call.listed_as(&page.items, T::tidy_json)?, page.next))
}

/// The config objects of the id the request names (in the path or `byId`) that the other
/// filters admit; `None` when it names none.
async fn configs_by_id<T: ConfigKind>(
    call: &Call<'_>,
    filter: &ConfigFilter,
) -> RestResult<Option<Vec<T>>> {
    let Some(id) = call.named_id() else { return Ok(None) };
    let found = call.app().config_by_id::<T>(&call.caller, id, call.at_least()).await?;
    Ok(Some(found.into_iter().filter(|o| filter.admits(o)).collect()))
}

/// POP's `byCount` of config objects: of the id named, if any, as listed (popclient12:
/// `byId` was ignored, and `customer?byid=nosuch&bycount=true` answered every customer the
/// caller sees — "does customer X exist?" was yes for any X).
async fn config_count<T: ConfigKind>(call: &Call<'_>) -> RestResult<pop_app::reads::Count> {
    let filter = config_filter(call);
    if let Some(found) = configs_by_id::<T>(call, &filter).await? {
        return Ok(pop_app::reads::Count { count: found.len(), capped: false });
    }
    Ok(call.app().count_configs::<T>(&call.caller, &filter, call.at_least()).await?)
}

/// Config objects' JSON as clients read it ([`ConfigKind::tidy_json`]).
fn tidied<T: ConfigKind>(mut values: Vec<Value>) -> Vec<Value> {
    values.iter_mut().for_each(T::tidy_json);
    values
}

// ---- data-object writes --------------------------------------------------------------------

async fn create(kind: Kind, call: &Call<'_>) -> RestResult<Reply> {
    match kind {
        Kind::Agenda => {
            call.allow_params(&[AT_LEAST_POSITION])?;
            let object = call.object("agenda")?;
            let done = call
                .app()
                .submit(&call.caller, Value::Object(object.clone()), None, call.at_least())
                .await?;
            agenda_reply(std::slice::from_ref(&done))
        }
        _ => configure(kind, call, Write::Create).await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Update,
    Delete,
}

/// Create, update or delete a customer, pool, insight or template.
async fn configure(kind: Kind, call: &Call<'_>, write: Write) -> RestResult<Reply> {
    match write {
        Write::Delete => call.allow_params(&[BY_ID, AT_LEAST_POSITION])?,
        _ => call.allow_params(&[AT_LEAST_POSITION])?,
    }
    let op = match write {
        Write::Delete => {
            let id = call.named_id().ok_or_else(|| {
                AppError::invalid("byId", "name the object to delete in the path or byId")
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
                        return Err(AppError::invalid(
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
    let done = match kind {
        Kind::Customer => configured::<Customer>(call, op).await,
        Kind::ResourcePool => configured::<ResourcePool>(call, op).await,
        Kind::Insight => configured::<Insight>(call, op).await,
        Kind::AgendaTemplate => configured::<AgendaTemplate>(call, op).await,
        // The route table answers 405 before a write on these reaches here.
        Kind::Agenda | Kind::AgendaProgress | Kind::OperationProgress => {
            Err(AppError::bad_request(format!("{} cannot be changed here", kind.name())).into())
        }
    };
    // POP deleted an id it did not have without an error (popclient58 L1: a delete run twice
    // failed the second time): so does `--pop-errors-in-body`, the mode for unchanged POP
    // clients. Another customer's id answers alike, as everywhere.
    match done {
        Err(e)
            if write == Write::Delete
                && e.error.code == Code::NotFound
                && call.state.config().pop_errors_in_body =>
        {
            Ok(feed(Vec::new(), None))
        }
        done => done,
    }
}

async fn configured<T: ConfigKind + Serialize>(call: &Call<'_>, op: ConfigOp) -> RestResult<Reply> {
    let done = call.app().configure::<T>(&call.caller, op, None, call.at_least()).await?;
    let mut reply = feed(tidied::<T>(vec![to_json(&done.object)?]), None);
    reply.position = done.position.map(|p| p.to_string());
    Ok(reply)
}

// ---- services ------------------------------------------------------------------------------

/// The body's `cid` (a write may name its own correlation id, as on GraphQL); a blank one
/// (Jackson's `""` for an unset field) names none (popclient23: it blanked the answer's cid
/// and both correlation headers while the write ran under the header's).
fn body_cid(object: &Map<String, Value>) -> Option<&str> {
    // Trimmed, as the events record it (hostile35: the answer echoed "  sp8  ", byCid found
    // nothing by it).
    object.get("cid").and_then(Value::as_str).map(str::trim).filter(|cid| !cid.is_empty())
}

/// The cid a report runs under: the request's, else the one inside the AgendaProgress POP's
/// `UpdateAgendaProgressRequest` wraps (popclient55 M1: used when the progress was the whole
/// body, ignored inside the wrapper its reporter sends).
fn report_cid(object: &Map<String, Value>) -> Option<&str> {
    body_cid(object)
        .or_else(|| object.get("agendaProgress").and_then(Value::as_object).and_then(body_cid))
}

/// `agenda/service/run {payload: <JSON text>, agendaTemplateId, customerId?}`.
async fn run(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[AT_LEAST_POSITION])?;
    let object = call.object("run request")?;
    let template_id = required_text(object, "agendaTemplateId")?;
    let payload = match object.get("payload") {
        None => Value::Null,
        // POP sends the payload as JSON text, whose integers beyond 64 bits are refused as in
        // any body (popclient59 M1: the body's check saw them inside a string, and they were
        // kept rounded).
        Some(Value::String(text)) => {
            if let Some((path, wide)) = crate::request::wide_integer(text.as_bytes()) {
                let field = if path.is_empty() {
                    "payload".to_string()
                } else if path.starts_with('[') {
                    format!("payload{path}")
                } else {
                    format!("payload.{path}")
                };
                return Err(crate::request::wide_integer_error(&field, &wide).into());
            }
            serde_json::from_str(text).map_err(|e| {
                AppError::invalid("payload", format!("the payload text is not JSON: {e}"))
            })?
        }
        Some(other) => other.clone(),
    };
    let customer_id = text(object, "customerId")?;
    let done = call
        .app()
        .run_template(
            &call.caller,
            &template_id,
            payload,
            customer_id,
            body_cid(object),
            call.at_least(),
        )
        .await?;
    agenda_reply(std::slice::from_ref(&done))
}

/// `agenda/service/rerun {agendaId, params: [...]}`.
async fn rerun(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[])?;
    let object = call.object("rerun request")?;
    let agenda_id = required_text(object, "agendaId")?;
    let params = match object.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(list)) => {
            // Every entry that is no string named, not only the first (popclient61 L2).
            let mut refused = pop_domain::error::ValidationErrors::new();
            for (i, _) in list.iter().enumerate().filter(|(_, p)| !p.is_string()) {
                refused.push(format!("params[{i}]"), "must be a string");
            }
            if !refused.is_empty() {
                return Err(AppError::validation("the rerun request", refused).into());
            }
            list.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(_) => return Err(AppError::invalid("params", "must be a list of strings").into()),
    };
    let customer = text(object, "customerId")?;
    let agenda = Named::of(&agenda_id, customer.as_deref());
    let done = call.app().rerun(&call.caller, agenda, params, body_cid(object)).await?;
    agenda_reply(std::slice::from_ref(&done))
}

/// `resourcepool/service/getAgenda {insightId, count, waitSeconds?}` → `{all, agendaProgresses,
/// count}`.
async fn get_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[])?;
    let object = call.object("getAgenda request")?;
    let insight_id = required_text(object, "insightId")?;
    let count =
        integer(object, "count")?.ok_or_else(|| AppError::invalid("count", "is required"))?;
    let wait = integer(object, "waitSeconds")?;
    let claimed =
        call.app().get_agenda_waiting(&call.caller, &insight_id, count, wait, None).await?;
    agenda_reply(&claimed)
}

/// `resourcepool/service/updateAgendaProgress {agendaProgress}` (or the AgendaProgress as the
/// whole body) → `{all: [agendaProgress], count}`.
async fn update_progress(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[])?;
    let object = call.object("updateAgendaProgress request")?;
    let progress = match object.get("agendaProgress") {
        Some(p) => p.clone(),
        None => Value::Object(object.clone()),
    };
    // A pop-aware executor names its lease beside the report (or inside it, `leaseId`).
    let lease_id = object.get("leaseId").and_then(Value::as_str);
    let done = call.app().report(&call.caller, progress, lease_id, report_cid(object)).await?;
    let mut reply = feed(vec![to_json(done.progress())?], None);
    reply.position = done.position.map(|p| p.to_string());
    Ok(reply)
}

/// `resourcepool/service/updateAgendaProgresses {reports: [{agendaProgress, leaseId?}], cid?}`
/// → `{results: [{index, agendaProgress, position} | {index, error}], count, failed}`: each
/// report answered on its own (200 as long as the request itself is valid).
async fn update_progresses(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[])?;
    let object = call.object("updateAgendaProgresses request")?;
    let Some(Value::Array(reports)) = object.get("reports") else {
        return Err(AppError::invalid("reports", "a list of {agendaProgress, leaseId?}").into());
    };
    let mut items =
        Vec::with_capacity(reports.len().min(pop_app::limits::MAX_REPORTS_PER_REQUEST + 1));
    for report in reports {
        // An entry that is no object (a Jackson `null`) is answered on its own, as one without
        // `agendaProgress` is: the others are taken (popclient61 L1: the batch was refused
        // whole, naming only the first).
        let Some(report) = report.as_object() else {
            items.push(pop_app::work::ReportItem { agenda_progress: Value::Null, lease_id: None });
            continue;
        };
        let progress = report.get("agendaProgress").cloned().unwrap_or(Value::Null);
        let lease_id = report.get("leaseId").and_then(Value::as_str).map(str::to_string);
        items.push(pop_app::work::ReportItem { agenda_progress: progress, lease_id });
    }
    let answered = call.app().report_many(&call.caller, items, body_cid(object)).await?;
    let mut position = None;
    let mut failed = 0usize;
    let mut results = Vec::with_capacity(answered.len());
    // The answer's byte budget, as every read's: past it a report is answered with its
    // agenda's state alone (hostile42 H1: 60 heartbeats of one large agenda were answered with
    // 60 copies of it, 281 MB).
    let mut budget = call.state.config().max_response_bytes;
    for (index, answer) in answered.into_iter().enumerate() {
        match answer {
            Ok(done) => {
                if let Some(p) = done.position {
                    position = Some(p.to_string());
                }
                let position = done.position.map(|p| p.to_string());
                let progress = to_json(done.progress())?;
                let bytes = pop_domain::validate::json_bytes(&progress);
                if bytes <= budget {
                    budget -= bytes;
                    results.push(json!({"index": index, "agendaProgress": progress,
                        "position": position}));
                } else {
                    budget = 0;
                    let p = done.progress();
                    results.push(json!({"index": index, "position": position,
                        "agendaProgressOmitted": {"id": p.id, "agendaId": p.agenda_id,
                            "processingState": p.processing_state,
                            "processingStateMessage": p.processing_state_message,
                            "percentComplete": p.percent_complete,
                            "reason": format!(
                                "this answer's byte budget ({} bytes) is spent: GET the \
                                 agenda's progress",
                                call.state.config().max_response_bytes)}}));
                }
            }
            Err(e) => {
                failed += 1;
                let problems: Vec<Value> = e
                    .problems
                    .iter()
                    .map(|p| json!({"field": p.field, "message": p.message}))
                    .collect();
                results.push(json!({"index": index, "error": {"code": e.code.as_str(),
                    "message": e.message, "problems": problems, "cid": e.cid}}));
            }
        }
    }
    let body = json!({"count": results.len(), "failed": failed, "results": results});
    Ok(Reply::written(body, position))
}

/// `resourcepool/service/updateAgenda {agendaId, operations, params?}`: the expand.
async fn update_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[])?;
    let object = call.object("updateAgenda request")?;
    let agenda_id = required_text(object, "agendaId")?;
    // Jackson writes an unset `List<Operation>` as null: a params-only expansion (popclient55
    // L2: refused in serde's words). Absent is still asked for.
    let operations = match object.get("operations") {
        Some(Value::Null) => Value::Array(Vec::new()),
        Some(ops) => ops.clone(),
        None => {
            return Err(AppError::invalid(
                "operations",
                "is required: the operations to add (null or [] for none, to merge params only)",
            )
            .into());
        }
    };
    let params = object.get("params").cloned();
    let customer = text(object, "customerId")?;
    let agenda = Named::of(&agenda_id, customer.as_deref());
    let done =
        call.app().expand(&call.caller, agenda, operations, params, body_cid(object)).await?;
    let mut reply = agenda_reply(std::slice::from_ref(&done))?;
    // POP's UpdateAgendaResponse names the agenda `agenda`: its Java client reads that field.
    if let Value::Object(fields) = &mut reply.body {
        let agenda = fields.get("all").and_then(|all| all.get(0)).cloned();
        fields.insert("agenda".into(), agenda.unwrap_or(Value::Null));
    }
    Ok(reply)
}

/// `resourcepool/service/releaseAgenda {agendaId, leaseId}` (pop only): the hand-back.
async fn release_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[])?;
    let object = call.object("releaseAgenda request")?;
    let agenda_id = required_text(object, "agendaId")?;
    let lease_id = required_text(object, "leaseId")?;
    let customer = text(object, "customerId")?;
    let agenda = Named::of(&agenda_id, customer.as_deref());
    let done = call.app().release(&call.caller, agenda, &lease_id, body_cid(object)).await?;
    agenda_reply(std::slice::from_ref(&done))
}

/// `resourcepool/service/createAgenda {agenda}` (or the agenda as the whole body): a
/// submission, with the same rights as `POST agenda`.
async fn create_agenda(call: &Call<'_>) -> RestResult<Reply> {
    call.allow_params(&[AT_LEAST_POSITION])?;
    let object = call.object("createAgenda request")?;
    let app = call.app();
    match object.get("agendas") {
        // POP's CreateAgendaRequest.
        Some(Value::Array(agendas)) => {
            let done = app
                .submit_many(&call.caller, agendas.clone(), body_cid(object), call.at_least())
                .await?;
            agenda_reply(&done)
        }
        Some(_) => Err(AppError::invalid("agendas", "must be a list of agendas").into()),
        None => {
            let agenda = match object.get("agenda") {
                Some(a) => a.clone(),
                None => Value::Object(object.clone()),
            };
            let done = app.submit(&call.caller, agenda, body_cid(object), call.at_least()).await?;
            agenda_reply(std::slice::from_ref(&done))
        }
    }
}

/// `progress/agenda/service {linkId}` (POST body, or `?linkId=` on GET) → the
/// ProgressSummary `{linkId, processingState, processingPercent, progressList}`.
async fn summary(call: &Call<'_>) -> RestResult<Reply> {
    let (link_id, customer) = if call.method == Method::GET {
        call.allow_params(&[LINK_ID, BY_LINK_ID, BY_CUSTOMER_ID, AT_LEAST_POSITION, AS_OF])?;
        let link_id = call.param(LINK_ID).or(call.param(BY_LINK_ID)).map(str::to_string);
        (link_id, call.param(BY_CUSTOMER_ID).map(str::to_string))
    } else {
        call.allow_params(&[BY_CUSTOMER_ID, AT_LEAST_POSITION, AS_OF])?;
        let object = call.object("summary request")?;
        let customer = match (text(object, "customerId")?, call.param(BY_CUSTOMER_ID)) {
            (Some(body), Some(query)) if body != query.trim() => {
                return Err(AppError::invalid(
                    "customerId",
                    format!(
                        "the body names customer {body:?} and byCustomerId {query:?}: name one"
                    ),
                )
                .into());
            }
            (body, query) => body.or(query.map(str::to_string)),
        };
        (text(object, "linkId")?, customer)
    };
    let (link_id, customer) = (link_id.unwrap_or_default(), customer.as_deref());
    let app = call.app();
    let max = call.state.config().max_response_bytes;
    let summary = match call.param(AS_OF) {
        Some(as_of) => {
            let bound = AsOf::parse("asOf", as_of).map_err(|e| e.with_cid(&call.caller.cid))?;
            let _permit = as_of_permit(call)?;
            app.progress_summary_as_of(&call.caller, &link_id, customer, bound).await?
        }
        // One object holding every agenda of the batch: the same budget as a list, measured
        // as it is summed up.
        None => {
            let at_least = call.at_least();
            app.progress_summary_within(&call.caller, &link_id, customer, at_least, Some(max))
                .await?
        }
    };
    let mut body = values_within(std::slice::from_ref(&summary), max, None, |_| {})?;
    Ok(Reply::json(body.pop().unwrap_or(Value::Null)))
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn an_integer_field_takes_a_zero_fraction_and_refuses_any_other() {
        let read = |v: Value| integer(json!({"count": v}).as_object().unwrap(), "count").ok();
        for whole in [json!(2), json!("2"), json!(2.0), json!("2.0"), json!(" 2 ")] {
            assert_eq!(read(whole.clone()), Some(Some(2)), "{whole}");
        }
        for bad in [json!(2.5), json!("2.5"), json!("two"), json!(true), json!("NaN"), json!(1e300)]
        {
            assert_eq!(read(bad.clone()), None, "{bad}");
        }
        assert_eq!(read(Value::Null), Some(None));
    }

    #[test]
    fn results_are_json_text_as_pops_string_and_client_json_is_left_alone() {
        let mut progress = json!({
        "id": "p", "agendaProgressId": "", "params": {"resultPayload": {"mine": 1}},
        "operationProgress": [
            {"agendaProgressId": "p", "operation": "a", "resultPayload": {"w": 640}},
            {"agendaProgressId": "p", "operation": "b", "resultPayload": "{\"k\": 1}"},
            {"agendaProgressId": "p", "operation": "c", "resultPayload": null},
            {"agendaProgressId": "p", "operation": "d", "resultPayload": 7}
        ]});
        results_as_text(&mut progress);
        let ops = &progress["operationProgress"];
        assert_eq!(ops[0]["resultPayload"], json!("{\"w\":640}"));
        assert_eq!(ops[1]["resultPayload"], json!("{\"k\": 1}"), "a string stays as sent");
        assert_eq!(ops[2]["resultPayload"], Value::Null);
        assert_eq!(ops[3]["resultPayload"], json!("7"));
        assert_eq!(progress["params"], json!({"resultPayload": {"mine": 1}}), "params untouched");
        // An agenda's operation payloads are the client's: never rewritten.
        let mut agenda = json!({"operations": [{"payload": {"resultPayload": {"x": 1}}}]});
        results_as_text(&mut agenda);
        assert_eq!(agenda["operations"][0]["payload"]["resultPayload"], json!({"x": 1}));
        // An OperationProgress alone, and the AgendaProgresses of a ProgressSummary.
        let mut operation = json!({"agendaProgressId": "p", "resultPayload": [1, 2]});
        results_as_text(&mut operation);
        assert_eq!(operation["resultPayload"], json!("[1,2]"));
        let mut summary = json!({"linkId": "l", "progressList": [{"id": "p", "agendaProgressId": "",
            "operationProgress": [{"agendaProgressId": "p", "resultPayload": {"w": 1}}]}]});
        results_as_text(&mut summary);
        assert_eq!(
            summary["progressList"][0]["operationProgress"][0]["resultPayload"],
            json!("{\"w\":1}")
        );
    }

    #[test]
    fn a_list_past_the_byte_budget_is_refused_as_too_large() {
        let items: Vec<Value> = (0..10).map(|i| json!({"id": i, "pad": "x".repeat(100)})).collect();
        let one = json_bytes(&items[0]);
        assert_eq!(one, serde_json::to_string(&items[0]).unwrap().len());
        assert_eq!(values_within(&items, 10 * one, None, |_| {}).map(|v| v.len()).ok(), Some(10));
        let refused =
            values_within(&items, 10 * one - 1, None, |_| {}).expect_err("over the budget");
        assert!(format!("{refused:?}").contains("ResponseTooLarge"), "{refused:?}");
        // Counted after `byFields`: the ids alone fit where the whole items do not.
        let ids = values_within(&items, 10 * one - 1, Some(&["id"]), |_| {}).expect("fits");
        assert_eq!(ids[3], json!({"id": 3}));
        // Field names in any case, as POP matched them.
        let ids = values_within(&items, 10 * one - 1, Some(&["ID"]), |_| {}).expect("fits");
        assert_eq!(ids[3], json!({"id": 3}));
    }
}
