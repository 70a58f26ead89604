//! The POP-compatible REST surface under [`BASE`] (`/pop`): POP's data-object CRUD and
//! service endpoints with POP's JSON shapes and error envelope, so POP's pullers, executors,
//! handler images and scripts work unchanged. GraphQL stays primary: every handler here calls
//! the same command and query functions the GraphQL resolvers call ([`crate::graphql`]), with
//! the same bearer auth, roles, tenancy and limits; nothing here decides a rule of its own.
//!
//! One table, [`ROUTES`], is the truth for what is served: [`dispatch`] matches requests
//! against it and [`openapi::document`] describes it, so a route cannot exist without being
//! documented. Every failure answers POP's envelope with an honest HTTP status:
//! `{"errorResponse": {title, description, responseCode, correlationId, code, problems?}}`,
//! where `code` is pop's machine-readable code (DOMAIN.md §11) and `correlationId` the
//! request's cid (from `X-Correlation-Id`, as on `/graphql`, else generated).

mod handlers;
pub mod openapi;
mod params;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use pop_app::Caller;

use crate::error::{AppError, Code};
use crate::metrics;
use crate::request::{
    header_principal, read_body_of, request_cid, request_traceparent, request_tracestate,
    set_cid_headers,
};
use crate::state::AppState;

/// The code of a REST call with a method its route does not answer (HTTP 405). REST-only: a
/// URL causes it, GraphQL has one endpoint and never answers it, so it is not one of
/// DOMAIN.md §11's codes; it tells a POP client "wrong verb for this path" apart from a
/// malformed request.
pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";

/// The path prefix of the REST surface.
pub const BASE: &str = "/pop";

/// The response header carrying the global log position of a write's last event: pass it as
/// `atLeastPosition` to read your own write from any replica.
pub const POSITION_HEADER: &str = "x-pop-position";

/// Most query parameters one request may carry (the widest route accepts ten).
pub const MAX_QUERY_PARAMS: usize = 16;

/// Longest query parameter value, in characters: ids are at most 200, but linkIds and jobIds
/// (and titles) are free text that POP clients often fill with URLs: as long as the longest
/// linkId, so every agenda can be found by its own.
pub const MAX_QUERY_VALUE_LENGTH: usize = pop_domain::validate::MAX_KEY_LENGTH;

/// What one route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The OpenAPI document of this surface (no token needed).
    OpenApi,
    /// A data-object collection: list by query parameters, create, update, delete.
    Collection(Kind),
    /// One data object by the id in the path.
    Item(Kind),
    Run,
    Rerun,
    GetAgenda,
    UpdateAgendaProgress,
    /// pop only: many reports in one request, answered item by item.
    UpdateAgendaProgresses,
    UpdateAgenda,
    ReleaseAgenda,
    CreateAgenda,
    Summary,
}

/// POP's data objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agenda,
    AgendaTemplate,
    Customer,
    Insight,
    ResourcePool,
    AgendaProgress,
    OperationProgress,
}

impl Kind {
    /// The object's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Agenda => "agenda",
            Kind::AgendaTemplate => "agenda template",
            Kind::Customer => "customer",
            Kind::Insight => "insight",
            Kind::ResourcePool => "resource pool",
            Kind::AgendaProgress => "agenda progress",
            Kind::OperationProgress => "operation progress",
        }
    }
}

/// One route: its path (OpenAPI syntax, `{id}` for the one path parameter), what it serves,
/// the methods it answers, and the methods that make no sense for it in pop's model, which
/// answer 405 with the reason (documented as such).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub methods: &'static [&'static str],
    pub refused: &'static [(&'static str, &'static str)],
}

const CRUD: &[&str] = &["GET", "POST", "PUT", "DELETE"];
const ITEM: &[&str] = &["GET", "PUT", "DELETE"];
const POST: &[&str] = &["POST"];

const AGENDA_PUT: &str = "an agenda is immutable once submitted: expand it with \
    resourcepool/service/updateAgenda, rerun it with agenda/service/rerun, or cancel it \
    (GraphQL cancelAgenda)";
const AGENDA_DELETE: &str = "agendas are not deleted on request: cancel a running one \
    (GraphQL cancelAgenda); finished agendas are removed by the DataObjectReaper";
const PROGRESS_WRITE: &str = "progress is created by submitting an agenda and changed only \
    by its executor through resourcepool/service/updateAgendaProgress";

/// Every route of the REST surface. Literal routes come before `{id}` routes, so
/// `progress/agenda/service` is the summary, not the progress with id `service`.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/pop/openapi.json",
        endpoint: Endpoint::OpenApi,
        methods: &["GET"],
        refused: &[],
    },
    Route { path: "/pop/agenda/service/run", endpoint: Endpoint::Run, methods: POST, refused: &[] },
    Route {
        path: "/pop/agenda/service/rerun",
        endpoint: Endpoint::Rerun,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/service/getAgenda",
        endpoint: Endpoint::GetAgenda,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/service/updateAgendaProgress",
        endpoint: Endpoint::UpdateAgendaProgress,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/service/updateAgendaProgresses",
        endpoint: Endpoint::UpdateAgendaProgresses,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/service/updateAgenda",
        endpoint: Endpoint::UpdateAgenda,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/service/releaseAgenda",
        endpoint: Endpoint::ReleaseAgenda,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/service/createAgenda",
        endpoint: Endpoint::CreateAgenda,
        methods: POST,
        refused: &[],
    },
    Route {
        path: "/pop/progress/agenda/service",
        endpoint: Endpoint::Summary,
        methods: &["GET", "POST"],
        refused: &[],
    },
    Route {
        path: "/pop/agenda",
        endpoint: Endpoint::Collection(Kind::Agenda),
        methods: &["GET", "POST"],
        refused: &[("PUT", AGENDA_PUT), ("DELETE", AGENDA_DELETE)],
    },
    Route {
        path: "/pop/agenda/{id}",
        endpoint: Endpoint::Item(Kind::Agenda),
        methods: &["GET"],
        refused: &[("PUT", AGENDA_PUT), ("DELETE", AGENDA_DELETE)],
    },
    Route {
        path: "/pop/agendatemplate",
        endpoint: Endpoint::Collection(Kind::AgendaTemplate),
        methods: CRUD,
        refused: &[],
    },
    Route {
        path: "/pop/agendatemplate/{id}",
        endpoint: Endpoint::Item(Kind::AgendaTemplate),
        methods: ITEM,
        refused: &[],
    },
    Route {
        path: "/pop/customer",
        endpoint: Endpoint::Collection(Kind::Customer),
        methods: CRUD,
        refused: &[],
    },
    Route {
        path: "/pop/customer/{id}",
        endpoint: Endpoint::Item(Kind::Customer),
        methods: ITEM,
        refused: &[],
    },
    Route {
        path: "/pop/insight",
        endpoint: Endpoint::Collection(Kind::Insight),
        methods: CRUD,
        refused: &[],
    },
    Route {
        path: "/pop/insight/{id}",
        endpoint: Endpoint::Item(Kind::Insight),
        methods: ITEM,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool",
        endpoint: Endpoint::Collection(Kind::ResourcePool),
        methods: CRUD,
        refused: &[],
    },
    Route {
        path: "/pop/resourcepool/{id}",
        endpoint: Endpoint::Item(Kind::ResourcePool),
        methods: ITEM,
        refused: &[],
    },
    Route {
        path: "/pop/progress/agenda",
        endpoint: Endpoint::Collection(Kind::AgendaProgress),
        methods: &["GET"],
        refused: &[("POST", PROGRESS_WRITE), ("PUT", PROGRESS_WRITE), ("DELETE", PROGRESS_WRITE)],
    },
    Route {
        path: "/pop/progress/agenda/{id}",
        endpoint: Endpoint::Item(Kind::AgendaProgress),
        methods: &["GET"],
        refused: &[("PUT", PROGRESS_WRITE), ("DELETE", PROGRESS_WRITE)],
    },
    Route {
        path: "/pop/progress/operation",
        endpoint: Endpoint::Collection(Kind::OperationProgress),
        methods: &["GET"],
        refused: &[("POST", PROGRESS_WRITE), ("PUT", PROGRESS_WRITE), ("DELETE", PROGRESS_WRITE)],
    },
    Route {
        path: "/pop/progress/operation/{id}",
        endpoint: Endpoint::Item(Kind::OperationProgress),
        methods: &["GET"],
        refused: &[("PUT", PROGRESS_WRITE), ("DELETE", PROGRESS_WRITE)],
    },
];

/// A failure of a REST request: the application's error, the HTTP status it is answered with,
/// and the code written into the envelope (the error's own, or [`METHOD_NOT_ALLOWED`]).
#[derive(Debug)]
pub(crate) struct RestError {
    status: StatusCode,
    /// Boxed: results carrying it stay small on the success path.
    error: Box<AppError>,
    code: &'static str,
    /// For 405: the methods the route does answer.
    allow: Option<String>,
}

impl From<AppError> for RestError {
    fn from(error: AppError) -> Self {
        RestError {
            status: status_of(error.code),
            code: error.code.as_str(),
            error: Box::new(error),
            allow: None,
        }
    }
}

impl RestError {
    fn with_status(status: StatusCode, error: AppError) -> RestError {
        RestError { status, code: error.code.as_str(), error: Box::new(error), allow: None }
    }
}

pub(crate) type RestResult<T> = Result<T, RestError>;

/// The HTTP status of an error code.
pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Validation | Code::BadRequest | Code::QueryTooCostly => StatusCode::BAD_REQUEST,
        // The request was fine; what it asked for is too much to answer at once.
        Code::ResponseTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
        Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        Code::Busy => StatusCode::TOO_MANY_REQUESTS,
        // A customer's quota of live agendas: again once some finished.
        Code::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        // The store cannot serve it right now (disk full, database restarting): retry.
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Forbidden => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Conflict => StatusCode::CONFLICT,
        // This replica's read models are behind the position asked for: retry.
        Code::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// POP's error envelope for `error`, with pop's code (and validation problems) inside.
fn envelope(failure: RestError, cid: &str) -> Response {
    let RestError { status, error, code, allow } = failure;
    metrics::error(code);
    let mut inner = serde_json::Map::new();
    inner.insert("title".into(), json!(status.canonical_reason().unwrap_or("Error")));
    inner.insert("description".into(), json!(error.message));
    inner.insert("responseCode".into(), json!(status.as_u16()));
    inner.insert("correlationId".into(), json!(cid));
    inner.insert("code".into(), json!(code));
    if !error.problems.is_empty() || error.code == Code::Validation {
        let problems: Vec<Value> = error
            .problems
            .iter()
            .map(|p| json!({"field": p.field, "message": p.message}))
            .collect();
        inner.insert("problems".into(), Value::Array(problems));
    }
    if error.omitted > 0 {
        inner.insert("omittedProblems".into(), json!(error.omitted));
    }
    // POP's envelope as its Jackson clients read it: `errorResponse`, `error` (isError) and
    // `cid`.
    let body = json!({"errorResponse": Value::Object(inner), "error": true, "cid": cid});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    if let Some(seconds) = crate::error::retry_after(error.code) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    crate::request::challenge(&mut response);
    response
}

/// A successful answer: the JSON body and, for writes, the position of the last event.
pub(crate) struct Reply {
    pub(super) body: Value,
    position: Option<String>,
    /// A document that is not a POP answer (the OpenAPI description): no `cid` added.
    document: bool,
    /// The cid a write named in its body and ran under, which the answer reports.
    own_cid: Option<String>,
}

impl Reply {
    fn json(body: Value) -> Reply {
        Reply { body, position: None, document: false, own_cid: None }
    }

    /// A write's answer, with the position of its last event.
    fn written(body: Value, position: Option<String>) -> Reply {
        Reply { body, position, document: false, own_cid: None }
    }

    fn document(body: Value) -> Reply {
        Reply { body, position: None, document: true, own_cid: None }
    }
}

/// One REST request after routing and authentication.
pub(crate) struct Call<'a> {
    state: &'a AppState,
    caller: Caller,
    method: Method,
    /// The decoded `{id}` of an item route.
    id: Option<String>,
    /// Query parameters, matched by their names lower-cased (POP clients spell them
    /// `byLinkId` and `bylinkId`).
    params: Vec<Param>,
    body: Option<Value>,
}

/// Splits a request path (below the host) into decoded segments.
fn segments(path: &str) -> RestResult<Vec<String>> {
    path.trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| {
            percent_decode(s).ok_or_else(|| {
                RestError::from(AppError::bad_request(format!(
                    "the path segment {s:?} is not valid percent-encoded UTF-8"
                )))
            })
        })
        .collect()
}

/// Decodes a path segment as POP did (`URLDecoder`, which POP's `HttpObjectClient` matches
/// with `URLEncoder`): `%XX` is a byte and `+` a space; a literal `+` is `%2B`.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route a path names and its `{id}`, if any.
fn find_route(segments: &[String]) -> Option<(&'static Route, Option<String>)> {
    ROUTES.iter().find_map(|route| {
        let template: Vec<&str> = route.path.split('/').skip(1).collect();
        if template.len() != segments.len() {
            return None;
        }
        let mut id = None;
        for (t, s) in template.iter().zip(segments) {
            if *t == "{id}" {
                if s.is_empty() {
                    return None;
                }
                id = Some(s.clone());
            } else if !t.eq_ignore_ascii_case(s) {
                return None;
            }
        }
        Some((route, id))
    })
}

/// One query parameter.
pub(crate) struct Param {
    /// The name lower-cased, as routes match it.
    name: String,
    /// The name as the request spelled it, for messages.
    given: String,
    value: String,
}

fn query_params(uri: &Uri) -> RestResult<Vec<Param>> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| {
            AppError::bad_request(format!("the query string is not valid: {}", e.body_text()))
        })?;
    if pairs.len() > MAX_QUERY_PARAMS {
        return Err(AppError::bad_request(format!(
            "at most {MAX_QUERY_PARAMS} query parameters, not {}",
            pairs.len()
        ))
        .into());
    }
    let mut params: Vec<Param> = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let lower = name.to_ascii_lowercase();
        if value.chars().count() > MAX_QUERY_VALUE_LENGTH {
            return Err(AppError::invalid(
                &name,
                format!("at most {MAX_QUERY_VALUE_LENGTH} characters"),
            )
            .into());
        }
        if params.iter().any(|p| p.name == lower) {
            return Err(AppError::invalid(&name, "given more than once").into());
        }
        params.push(Param { name: lower, given: name, value });
    }
    Ok(params)
}

/// Every request under [`BASE`]: route, authenticate, read the body, run the endpoint, and
/// answer POP JSON or POP's error envelope (with the cid in `X-Correlation-Id` either way).
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let mut cid = request_cid(&headers);
    let mut found = Found { route: "unrouted", ticket: None, write: false };
    let (served, waited) =
        pop_app::measuring_waits(serve(&state, method, &uri, &headers, body, &cid, &mut found))
            .await;
    let (route, ticket, writes) = (found.route, found.ticket, found.write);
    // A large answer holds its bytes against the principal's share while it is sent
    // (`crate::answers`); past it, BUSY instead.
    let served = served.and_then(|mut reply| {
        // A write that named its own cid in the body reports that one, as its errors do.
        if let Some(own) = reply.own_cid.take() {
            cid = own;
        }
        // POP's responses carry the request's `cid` at the top, as its errors do.
        if let (false, Value::Object(fields)) = (reply.document, &mut reply.body) {
            fields.entry("cid").or_insert_with(|| Value::String(cid.clone()));
        }
        let bytes = serde_json::to_vec(&reply.body).map_err(|e| {
            AppError::new(Code::Internal, format!("the answer did not serialise: {e}"))
        })?;
        let held = match ticket {
            Some(ticket) => ticket.hold(bytes.len(), writes)?,
            None => None,
        };
        Ok((reply, bytes, held))
    });
    let mut response = match served {
        Ok((reply, bytes, held)) => {
            let mut response = crate::answers::json(StatusCode::OK, bytes, held);
            if let Some(p) = reply.position.and_then(|p| HeaderValue::from_str(&p).ok()) {
                response.headers_mut().insert(POSITION_HEADER, p);
            }
            response
        }
        Err(e) => {
            // A write that named its own cid (the body's `cid`) reports that one, as on GraphQL.
            if let Some(own) = &e.error.cid {
                cid.clone_from(own);
            }
            let mut response = envelope(e, &cid);
            // POP's clients read an error's body only on a 2xx (`pop serve --pop-errors-in-body`).
            if state.config().pop_errors_in_body {
                *response.status_mut() = StatusCode::OK;
            }
            response
        }
    };
    set_cid_headers(response.headers_mut(), &cid);
    // A getAgenda's wait for work is not the server's latency (newcomer55 M2).
    metrics::rest_request(
        route,
        response.status().as_u16(),
        started.elapsed().saturating_sub(waited),
    );
    response
}

/// What [`serve`] found of a request, for its answer and metrics: the route's path (a
/// template, `unrouted` when none matched) and its place in its customer's share of answers
/// in flight ([`crate::answers`]).
struct Found {
    route: &'static str,
    ticket: Option<crate::answers::Ticket>,
    /// Whether the request writes (its answer is never refused for the share).
    write: bool,
}

async fn serve(
    state: &AppState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    cid: &str,
    found: &mut Found,
) -> RestResult<Reply> {
    // HEAD is GET without the body, which the HTTP server leaves out (RFC 9110 §9.3.2;
    // popclient23: every /pop route answered HEAD 405 while its Allow header said GET).
    let method = if method == Method::HEAD { Method::GET } else { method };
    let segments = segments(uri.path())?;
    let Some((route, id)) = find_route(&segments) else {
        return Err(AppError::new(
            Code::NotFound,
            format!("no POP endpoint at {:?}; see {BASE}/openapi.json", uri.path()),
        )
        .into());
    };
    found.route = route.path;
    if !route.methods.contains(&method.as_str()) {
        let why = route
            .refused
            .iter()
            .find(|(m, _)| *m == method.as_str())
            .map_or("this route does not answer that method", |(_, why)| why);
        return Err(RestError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: Box::new(AppError::bad_request(format!("{method} {}: {why}", route.path))),
            code: METHOD_NOT_ALLOWED,
            allow: Some(route.methods.join(", ")),
        });
    }
    if route.endpoint == Endpoint::OpenApi {
        return Ok(Reply::document(openapi::document()));
    }
    // Authenticate before reading the body: an anonymous caller costs no parsing.
    let Some(principal) = header_principal(state, headers) else {
        return Err(AppError::unauthenticated().into());
    };
    // Its customer's answers in flight take its whole share: refused before any work.
    // A write's answer says what was done: never refused for the share of large answers. The
    // summary, POSTed by POP's client, is a read (reprobe59b H2: 100 unread POSTs of an 8 MB
    // summary were all answered).
    found.write =
        !matches!(method, Method::GET | Method::HEAD) && route.endpoint != Endpoint::Summary;
    found.ticket =
        Some(state.answers().start(&crate::answers::owner(&principal), found.write).await?);
    let params = query_params(uri)?;
    let body = if method == Method::POST || method == Method::PUT {
        let arrived = read_body_of(state, &principal, headers, body)
            .await
            .map_err(|e| RestError::with_status(e.status, e.error))?;
        let bytes = &arrived.bytes;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let value = arrived.parse::<Value>(state).await.map_err(|e| {
                crate::request::too_deep(bytes).unwrap_or_else(|| {
                    AppError::bad_request(
                        crate::request::not_text(headers, bytes)
                            .unwrap_or_else(|| format!("the request body is not JSON: {e}")),
                    )
                })
            })?;
            crate::request::refuse_wide_integer(bytes)?;
            Some(value)
        }
    } else {
        None
    };
    state.app().serving_within(cid, state.app().config().pop_catch_up_wait).await?;
    let caller = Caller::new(principal, cid)
        .with_traceparent(request_traceparent(headers))
        .with_tracestate(request_tracestate(headers));
    let call = Call { state, caller, method, id, params, body };
    handlers::handle(route.endpoint, call).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<(Endpoint, Option<String>)> {
        let s = segments(path).ok()?;
        find_route(&s).map(|(r, id)| (r.endpoint, id))
    }

    #[test]
    fn literal_routes_win_and_ids_are_decoded() {
        assert_eq!(route("/pop/progress/agenda/service"), Some((Endpoint::Summary, None)));
        assert_eq!(
            route("/pop/progress/agenda/p1/"),
            Some((Endpoint::Item(Kind::AgendaProgress), Some("p1".into())))
        );
        assert_eq!(
            route("/pop/customer/http%3A%2F%2Fx%2FAccount%2F1"),
            Some((Endpoint::Item(Kind::Customer), Some("http://x/Account/1".into())))
        );
        assert_eq!(route("/pop/resourcepool/service/getagenda"), Some((Endpoint::GetAgenda, None)));
        assert_eq!(route("/pop/nothing"), None);
        assert_eq!(route("/pop/agenda//"), Some((Endpoint::Collection(Kind::Agenda), None)));
        assert!(segments("/pop/agenda/%ZZ").is_err());
        // As POP's URLDecoder: `+` is a space (POP's client writes "sp ace" as `sp+ace`), and
        // a literal `+` comes as `%2B`.
        assert_eq!(
            route("/pop/customer/sp+ace%2B1"),
            Some((Endpoint::Item(Kind::Customer), Some("sp ace+1".into())))
        );
    }

    #[test]
    fn statuses_are_honest() {
        assert_eq!(status_of(Code::Validation), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(Code::Conflict), StatusCode::CONFLICT);
        assert_eq!(status_of(Code::Timeout), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(Code::Internal), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
