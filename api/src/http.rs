//! The axum router: `POST /graphql` (queries and mutations, bearer auth, body size limit),
//! `GET /graphql` (GraphiQL, offline: [`crate::dashboard`]; a WebSocket upgrade there is
//! graphql-transport-ws), `GET /graphql/ws` (the same WebSocket server: subscriptions, queries and mutations over
//! graphql-transport-ws only — see [`crate::ws`] — authenticated by the `connection_init`
//! payload or the upgrade's `Authorization` header), `/healthz`, `/readyz`, `/metrics`, and
//! everything under `/pop` to the POP-compatible REST surface ([`crate::rest`]); the dashboard
//! at `/` with its files under `/dashboard/` ([`crate::dashboard`]).

use std::sync::Arc;

use async_graphql::{BatchRequest, BatchResponse, Value};
use axum::Router;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pop_app::Caller;

use crate::dashboard;
use crate::error::{AppError, Code};
use crate::graphql::cost::{Budget, HeldEarly, Unfit, deadline_error, early_permit};
use crate::metrics;
use crate::request::{
    header_principal, read_body_of, request_cid, request_traceparent, request_tracestate,
    set_cid_headers,
};
use crate::state::AppState;
use crate::ws::{self, WsLimits};

/// Most operations in one batched POST: each runs as its own request, so a batch multiplies
/// the work one body can ask for.
pub const MAX_BATCH_REQUESTS: usize = 16;

/// The GraphQL endpoint: `POST` for queries and mutations, `GET` for GraphiQL, and a
/// WebSocket upgrade to graphql-transport-ws (as GraphQL servers usually serve both on one
/// path; the reference client's default).
pub const GRAPHQL_PATH: &str = "/graphql";

/// The WebSocket path of subscriptions (the same server as an upgrade on [`GRAPHQL_PATH`]).
pub const WS_PATH: &str = "/graphql/ws";

/// The router of the API.
pub fn router(state: AppState) -> Router {
    router_with(state, WsLimits::default())
}

/// The router with other WebSocket connection limits (tests shorten them).
pub fn router_with(state: AppState, ws_limits: WsLimits) -> Router {
    Router::new()
        .route(
            GRAPHQL_PATH,
            get(
                move |state: State<AppState>,
                      headers: HeaderMap,
                      upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                    graphql_get(state, headers, upgrade, ws_limits)
                },
            )
            .post(graphql_post),
        )
        .route(
            WS_PATH,
            get(move |state: State<AppState>, headers: HeaderMap, upgrade: WebSocketUpgrade| {
                graphql_ws(state, headers, upgrade, ws_limits)
            }),
        )
        .route("/", get(dashboard::index))
        .route(&format!("{}/{{*path}}", dashboard::PREFIX), get(dashboard::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(crate::rest::BASE, axum::routing::any(crate::rest::dispatch))
        .route(&format!("{}/", crate::rest::BASE), axum::routing::any(crate::rest::dispatch))
        .route(
            &format!("{}/{{*path}}", crate::rest::BASE),
            axum::routing::any(crate::rest::dispatch),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

/// What the server serves, for a request that found nothing.
const ROUTES: &str = "/graphql (GraphQL over HTTP, and graphql-transport-ws), /pop (POP's \
                      REST), /healthz, /readyz, /metrics, and the dashboard at /";

/// 404 for a path nothing serves: an error with its code and cid, like every other.
async fn no_route(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let error = AppError::new(
        pop_app::Code::NotFound,
        format!("nothing is served at {method} {:?}; this server serves {ROUTES}", shown(&uri)),
    );
    error_response(StatusCode::NOT_FOUND, error, &request_cid(&headers))
}

/// 405 for a method a path does not take (PUT /graphql, POST /graphql/ws …).
async fn wrong_method(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let error = AppError::bad_request(format!(
        "{:?} does not take {method}: /graphql takes POST (and GET for GraphiQL or a WebSocket \
         upgrade), /graphql/ws a WebSocket upgrade",
        shown(&uri)
    ));
    error_response(StatusCode::METHOD_NOT_ALLOWED, error, &request_cid(&headers))
}

/// A request's path as an error message shows it (bounded).
fn shown(uri: &axum::http::Uri) -> String {
    uri.path().chars().take(200).collect()
}

/// A GraphQL-shaped error response (`{"errors": [...]}`) for failures before execution.
fn error_response(status: StatusCode, error: AppError, cid: &str) -> Response {
    let error = error.with_cid(cid);
    metrics::error(error.code.as_str());
    let mut extensions = serde_json::json!({ "code": error.code.as_str(), "cid": cid });
    // As a resolver's error says it (`crate::error::into_graphql`): a client (pop's worker
    // among them) sends the same request again after the pause, rather than giving up.
    let retry = crate::error::retry_after(error.code);
    if let Some(seconds) = retry {
        extensions[crate::error::ext::RETRYABLE] = true.into();
        extensions[crate::error::ext::RETRY_AFTER] = seconds.into();
    }
    let body = serde_json::json!({
        "errors": [{ "message": error.message, "extensions": extensions }]
    });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    set_cid_headers(response.headers_mut(), cid);
    crate::request::challenge(&mut response);
    response
}

async fn graphql_post(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let cid = request_cid(&headers);
    // Authenticate before reading the body: an anonymous caller costs no parsing.
    let Some(principal) = header_principal(&state, &headers) else {
        return error_response(StatusCode::UNAUTHORIZED, AppError::unauthenticated(), &cid);
    };
    let arrived = match read_body_of(&state, &principal, &headers, body).await {
        Ok(b) => b,
        Err(e) => return error_response(e.status, e.error, &cid),
    };
    let bytes = &arrived.bytes;
    let mut batch: BatchRequest = match arrived.parse(&state).await {
        Ok(b) => b,
        Err(e) => {
            let error = crate::request::too_deep(bytes).unwrap_or_else(|| {
                AppError::bad_request(
                    crate::request::not_text(&headers, bytes)
                        .unwrap_or_else(|| format!("the body is not a GraphQL request: {e}")),
                )
            });
            return error_response(StatusCode::BAD_REQUEST, error, &cid);
        }
    };
    if let Err(error) = crate::request::refuse_wide_integer(bytes) {
        return error_response(StatusCode::BAD_REQUEST, error, &cid);
    }
    let queries: Vec<&str> = match &batch {
        BatchRequest::Single(r) => vec![r.query.as_str()],
        BatchRequest::Batch(rs) => rs.iter().map(|r| r.query.as_str()).collect(),
    };
    if let Some(text) = queries.into_iter().find_map(crate::request::wide_integer_in_query) {
        let error = crate::request::wide_integer_error("query", &text);
        return error_response(StatusCode::BAD_REQUEST, error, &cid);
    }
    // serde reads `[]` (and `{}`) as one request with every field defaulted (hostile30: an
    // empty batch was answered 200 with the parser's text about an empty document).
    let empty_batch = matches!(&batch, BatchRequest::Single(r) if r.query.trim().is_empty())
        && bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    // Parsed: no longer one of the token's bodies arriving (a long-poll must not hold it).
    drop(arrived);
    let operations = match &batch {
        BatchRequest::Batch(requests) => Some(requests.len()),
        BatchRequest::Single(_) if empty_batch => Some(0),
        BatchRequest::Single(_) => None,
    };
    if let Some(n) = operations
        && (n > MAX_BATCH_REQUESTS || n == 0)
    {
        let error = AppError::bad_request(format!(
            "a batch holds 1 to {MAX_BATCH_REQUESTS} operations, not {n}"
        ));
        return error_response(StatusCode::BAD_REQUEST, error, &cid);
    }
    let without_query = match &batch {
        BatchRequest::Single(request) => request.query.trim().is_empty().then(|| "query".into()),
        BatchRequest::Batch(requests) => {
            requests.iter().position(|r| r.query.trim().is_empty()).map(|i| format!("[{i}].query"))
        }
    };
    if let Some(field) = without_query {
        let error =
            AppError::invalid(&field, "a GraphQL request needs a query (the document to run)");
        return error_response(StatusCode::BAD_REQUEST, error, &cid);
    }
    // One budget for the whole body: a batch's operations add up their cost and bytes.
    let config = state.config();
    // A large body's documents are parsed and validated only with one of its principal's
    // expensive permits, held until it is answered (hostile57 H3: refused only after that
    // work, a flood of them still took the cores).
    let written: usize = batch.iter().map(|r| r.query.len()).sum();
    let max = config.max_expensive_per_principal;
    // Held till the body is answered (dropped at the end of this function).
    let early = match early_permit(state.running(), &principal.name, max, written) {
        Ok(early) => early,
        Err(error) => return error_response(StatusCode::TOO_MANY_REQUESTS, error, &cid),
    };
    if early.is_some() {
        for request in batch.iter_mut() {
            request.data.insert(HeldEarly);
        }
    }
    let mut requests: Vec<&mut async_graphql::Request> = batch.iter_mut().collect();
    match crate::graphql::cost::unfit(&mut requests, config.max_complexity, |r| {
        state.parse_cached(&principal.name, r)
    }) {
        Some(Unfit::TooLong(error)) => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, error, &cid);
        }
        Some(Unfit::Refused(error)) => return error_response(StatusCode::BAD_REQUEST, error, &cid),
        None => {}
    }
    // What the operations that run are (the one `operationName` picks, or the only one; each
    // of a batch): a body that reads anything takes a read's ticket, checked against its
    // customer's share before it resolves anything; an answer that says what a mutation did
    // is held past the share rather than refused. (reprobe59b H1: a read with a mutation
    // beside it that never ran, in its document or its batch, passed as a write.)
    let (mut reads, mut writes) = (false, false);
    // Which entries of the body read (in order).
    let mut reading: Vec<bool> = Vec::new();
    for request in batch.iter_mut() {
        let name = request.operation_name.clone();
        let Ok(document) = request.parsed_query() else {
            reads = true;
            reading.push(true);
            continue;
        };
        let mut operations = document.operations.iter();
        let picked = match (&name, operations.len()) {
            (Some(name), _) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
            (None, 1) => operations.next(),
            (None, _) => None,
        };
        let mutation = matches!(
            picked.map(|(_, op)| op.node.ty),
            Some(async_graphql::parser::types::OperationType::Mutation)
        );
        writes |= mutation;
        reads |= !mutation;
        reading.push(!mutation);
    }
    // A read of a customer whose answers in flight take its whole share is refused before it
    // resolves anything; the ticket is held (dropped on every early return) until the answer
    // is built.
    let owner = crate::answers::owner(&principal);
    let ticket = match state.answers().start(&owner, !reads).await {
        Ok(ticket) => ticket,
        Err(error) => return error_response(StatusCode::TOO_MANY_REQUESTS, error, &cid),
    };
    let deadline = config.request_deadline;
    let budget = Arc::new(
        Budget::new(config.max_complexity, config.max_response_bytes).with_deadline(deadline),
    );
    let traceparent = request_traceparent(&headers);
    let tracestate = request_tracestate(&headers);
    for request in batch.iter_mut() {
        let caller = Caller::new(principal.clone(), cid.clone())
            .with_traceparent(traceparent)
            .with_tracestate(tracestate);
        request.data.insert(caller);
        request.data.insert(Arc::clone(&budget));
    }
    // The budget stops a request that resolves fields past its deadline; this stops one
    // that waits past it (with a second's grace, so the budget's own answer wins). A batch's
    // operations are each stopped at that time (their answers before it kept), and this one
    // has a second more.
    let until = tokio::time::Instant::now() + deadline + crate::config::DEADLINE_GRACE;
    let Ok(response) = tokio::time::timeout_at(
        until + crate::config::DEADLINE_GRACE,
        execute_in_order(state.schema(), batch, until, deadline, &cid),
    )
    .await
    else {
        // Said in the log under the cid the client printed (ops3am19: a write stuck on a slow
        // disk was answered this with no line to find).
        tracing::warn!(
            cid = &*cid,
            deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            "a request was not answered within its deadline (the store slow, or the request large)"
        );
        let mut response =
            error_response(StatusCode::SERVICE_UNAVAILABLE, deadline_error(deadline), &cid);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let responses = match &response {
        BatchResponse::Single(r) => std::slice::from_ref(r),
        BatchResponse::Batch(rs) => rs.as_slice(),
    };
    // BUSY and UNAVAILABLE answers carry `Retry-After` (the GraphQL status stays 200).
    let retried = [Code::Busy, Code::Unavailable].map(|c| Value::from(c.as_str()));
    let mut retry = responses.iter().flat_map(|r| &r.errors).any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get(crate::error::ext::CODE))
            .is_some_and(|code| retried.contains(code))
    });
    let bytes = match serde_json::to_vec(&response) {
        Ok(bytes) => bytes,
        Err(e) => {
            let error = AppError::new(Code::Internal, format!("the answer did not serialise: {e}"));
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, error, &cid);
        }
    };
    // A large answer holds its bytes against the customer's share while it is sent. A body of
    // mutations only is held past the share; one that reads is refused past it, and when it
    // also wrote (a batch of both), its reads are answered BUSY and its writes as they were
    // (reprobe59c: a mutation beside a large read in a batch kept 60 unread answers of 15 MB
    // past the share).
    let (bytes, held) = match ticket.hold(bytes.len(), writes && !reads) {
        Ok(held) => (bytes, held),
        Err(error) if writes => {
            let BatchResponse::Batch(entries) = response else {
                return error_response(StatusCode::TOO_MANY_REQUESTS, error, &cid);
            };
            let busy = error.with_cid(&cid);
            retry = true;
            let entries: Vec<async_graphql::Response> = entries
                .into_iter()
                .zip(reading.iter().copied().chain(std::iter::repeat(true)))
                .map(|(entry, read)| {
                    if !read {
                        return entry;
                    }
                    let e = crate::error::into_graphql(busy.clone())
                        .into_server_error(async_graphql::Pos::default());
                    async_graphql::Response::from_errors(vec![e])
                })
                .collect();
            let bytes = serde_json::to_vec(&BatchResponse::Batch(entries)).unwrap_or_default();
            let held = state.answers().hold_written(&owner, bytes.len());
            (bytes, held)
        }
        Err(error) => return error_response(StatusCode::TOO_MANY_REQUESTS, error, &cid),
    };
    let mut response = crate::answers::json(StatusCode::OK, bytes, held);
    set_cid_headers(response.headers_mut(), &cid);
    if retry {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Runs a batch's operations one after another, in the order sent, as separate requests would
/// be if each waited for the one before (async-graphql's `execute_batch` runs them at once).
/// A batch of writes then means what it says (a create before the update that follows it),
/// and each sees what the ones before it wrote: hostile36 got 16 submits of one batch past a
/// customer's live-agenda quota of 12, each counted against the same unchanged read models,
/// where the same 16 as aliases of one mutation (which run in turn) stopped at 12.
///
/// Their times add up under the request's one deadline: an operation still running at `until`
/// is answered DEADLINE_EXCEEDED (what it did is not known), those after it are not run and
/// say so, and the answers before it are kept (review-s45: the whole batch's answers were lost,
/// those of writes that had committed too).
async fn execute_in_order(
    schema: &crate::graphql::PopSchema,
    batch: BatchRequest,
    until: tokio::time::Instant,
    deadline: std::time::Duration,
    cid: &str,
) -> BatchResponse {
    let requests = match batch {
        BatchRequest::Single(request) => {
            return BatchResponse::Single(schema.execute(request).await);
        }
        BatchRequest::Batch(requests) => requests,
    };
    let refused = |error: AppError| {
        let error = AppError { cid: Some(cid.to_owned()), ..error };
        let error = crate::error::into_graphql(error).into_server_error(Default::default());
        async_graphql::Response::from_errors(vec![error])
    };
    let mut responses = Vec::with_capacity(requests.len());
    let mut late = false;
    for request in requests {
        if !late {
            match tokio::time::timeout_at(until, schema.execute(request)).await {
                Ok(response) => responses.push(response),
                Err(_) => {
                    late = true;
                    // Said in the log under the request's cid, as a whole request past its
                    // deadline is (review-s45b).
                    tracing::warn!(
                        cid,
                        operation = responses.len(),
                        deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                        "an operation of a batch was not answered within the deadline; the \
                         ones after it were not run"
                    );
                    responses.push(refused(deadline_error(deadline)));
                }
            }
            continue;
        }
        let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        responses.push(refused(AppError::new(
            Code::DeadlineExceeded,
            format!(
                "request: not run: the batch's deadline of {ms} ms passed before its turn, so \
                 nothing of it was done; send it again"
            ),
        )));
    }
    BatchResponse::Batch(responses)
}

/// Upgrades to graphql-transport-ws (selected when the client offers it; [`ws::serve`]
/// closes with 4406 otherwise). Frames and messages are limited to the POST body limit; the
/// socket buffers are sized in [`ws::READ_BUFFER_BYTES`] and [`ws::WRITE_BUFFER_BYTES`].
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
    limits: WsLimits,
) -> Response {
    let header_principal = header_principal(&state, &headers);
    let cid = request_cid(&headers);
    let traceparent = request_traceparent(&headers).map(str::to_string);
    let tracestate = request_tracestate(&headers).map(str::to_string);
    let limit = state.config().max_body_bytes.min(ws::MAX_MESSAGE_BYTES);
    upgrade
        .protocols([ws::PROTOCOL])
        .read_buffer_size(ws::READ_BUFFER_BYTES)
        .write_buffer_size(ws::WRITE_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let upgrade =
                ws::Upgrade { state, header_principal, cid, traceparent, tracestate, limits };
            ws::serve(socket, upgrade)
        })
}

/// `GET /graphql`: a WebSocket upgrade goes to graphql-transport-ws, anything else gets
/// GraphiQL. An upgrade that asks for a WebSocket but is malformed gets axum's refusal (400,
/// 426), not the page.
async fn graphql_get(
    state: State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    limits: WsLimits,
) -> Response {
    let asks_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    match upgrade {
        Ok(upgrade) => graphql_ws(state, headers, upgrade, limits).await,
        Err(rejection) if asks_websocket => rejection.into_response(),
        Err(_) => graphiql(state, headers).await,
    }
}

/// The process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the projections have caught up with the log (see the runner's readiness), and
/// while the store can serve requests ([`pop_app::App::store_trouble`]) and the projections
/// can follow it ([`pop_projections::Projections::trouble`]: a runner that stopped keeps
/// this replica unready for good, so it is taken out of service rather than serving stale
/// read models).
async fn readyz(State(state): State<AppState>) -> Response {
    let head = state.app().probe_head().await;
    match readiness(&state, &head) {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
    }
}

/// `/readyz`'s answer, given the store's answer to a read of its head: ready (and at which
/// position), or why not. `/metrics`' `pop_projection_ready` is the same decision.
fn readiness(
    state: &AppState,
    head: &Result<pop_store::Position, String>,
) -> Result<String, String> {
    let projections = state.projections();
    if let Some(trouble) = state.app().store_trouble_at(head) {
        return Err(format!("{trouble}\n"));
    }
    if let Some(trouble) = projections.trouble() {
        return Err(format!("{trouble}\n"));
    }
    if projections.caught_up() {
        // Degraded is still ready: serving slower beats being restarted into the same state.
        let degraded =
            projections.degraded().map(|why| format!(" (DEGRADED: {why})")).unwrap_or_default();
        Ok(format!("ready at position {}{degraded}\n", projections.applied()))
    } else {
        Err(format!("projections catching up (applied position {})\n", projections.applied()))
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let projections = state.projections();
    // One bounded read of the head for the gauges and the readiness decision.
    let head = state.app().probe_head().await;
    if let Err(why) = &head {
        tracing::warn!(error = %why, "metrics: cannot read the log head");
    }
    metrics::projection_gauges(
        head.as_ref().ok().copied(),
        projections.applied(),
        readiness(&state, &head).is_ok(),
        projections.skipped_events(),
        projections.degraded().is_some(),
    );
    metrics::clock_gauge(state.app().store().clock_offset());
    metrics::group_commit_counters(state.app().store().group_commits());
    {
        let models = projections.read();
        metrics::insight_gauges(&models, state.config().metrics_insight_labels);
        metrics::agenda_bytes_gauges(&models);
    }
    let Some(handle) = state.metrics_handle() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder is installed\n")
            .into_response();
    };
    handle.run_upkeep();
    let mut response = metrics::in_name_order(&handle.render()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn graphiql(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.config().graphiql {
        return StatusCode::NOT_FOUND.into_response();
    }
    dashboard::graphiql(headers).await
}
