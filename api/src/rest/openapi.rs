//! The OpenAPI 3 document of the REST surface, built from [`super::ROUTES`] so that every
//! route, and every method a route refuses, is described. Checked in as `api/openapi.json`
//! (`UPDATE_OPENAPI=1 cargo test -p pop-api --test pop_rest openapi` rewrites it) and served
//! at `/pop/openapi.json`.

use serde_json::{Map, Value, json};

use super::params::{list_params, param_spelling};
use super::{Endpoint, Kind, ROUTES, Route};

/// The document served at `/pop/openapi.json` and checked in as `api/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        paths.insert(route.path.to_string(), path_item(route));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "pop — POP-compatible REST surface",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": Value::Object(paths),
        "components": components(),
    })
}

const DESCRIPTION: &str = "POP's REST/JSON API over pop's commands and read models, so that POP \
pullers, executors, handler images and scripts work unchanged. GraphQL (/graphql) is primary; \
every endpoint here calls the same command and query functions with the same rules.\n\n\
Auth: `Authorization: Bearer <token>` (the same tokens as GraphQL). Tenancy: reads return only \
objects of the caller's customers (plus global/shared insights and templates); an object the \
caller may not see answers 404 exactly like a missing one.\n\n\
JSON: POP's field names; times are epoch milliseconds (numbers, numeric strings and RFC 3339 \
are accepted on input); string-typed numbers and booleans (\"5\", \"true\") are accepted on \
input. Data-object responses are `{all: [...], count}` (plus `next`, a cursor for `after`, when \
a list has more). Writes answer the global log position of their last event in the \
`X-Pop-Position` header: pass it as `atLeastPosition` to read your write from any replica.\n\n\
Errors: always POP's envelope `{errorResponse: {title, description, responseCode, \
correlationId, code, problems?, omittedProblems?}}` with an honest HTTP status. `code` is pop's \
machine-readable code: VALIDATION (400, with `problems: [{field, message}]` listing every \
problem), BAD_REQUEST (400; also on 413, and 408 for a body that did not arrive in time), \
METHOD_NOT_ALLOWED (405, with an `Allow` header; \
REST only, GraphQL never answers it), UNAUTHENTICATED (401), FORBIDDEN (403: the \
role, or a customer outside the token's set), NOT_FOUND (404), CONFLICT (409: a state the \
object is not in, a lease held by another worker, a duplicate id), TIMEOUT (503: this replica \
has not reached `atLeastPosition` in time; retry), QUOTA_EXCEEDED (429: the customer's quota \
of live agendas; submit again when some finished), BUSY (429 with `Retry-After`: too many of \
this token's requests at once), UNAVAILABLE (503 with `Retry-After`: the store cannot serve \
right now, or the read models are still loading; nothing was done, retry), DEADLINE_EXCEEDED \
(503: the request ran past its deadline), RESPONSE_TOO_LARGE (422: ask for fewer objects or \
fields), INTERNAL (500). `correlationId` is the \
request's `X-Correlation-Id` header when given (at most 200 printable characters), else a \
generated id; it is also returned in that header and recorded in the events the request \
caused.";

/// Every `code` an error body may carry: the application's, and the one of the REST router.
fn error_codes() -> Vec<&'static str> {
    let mut codes: Vec<&str> = pop_app::Code::ALL.iter().map(|c| c.as_str()).collect();
    codes.push("METHOD_NOT_ALLOWED");
    codes
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn kind_schema(kind: Kind) -> &'static str {
    match kind {
        Kind::Agenda => "Agenda",
        Kind::AgendaTemplate => "AgendaTemplate",
        Kind::Customer => "Customer",
        Kind::Insight => "Insight",
        Kind::ResourcePool => "ResourcePool",
        Kind::AgendaProgress => "AgendaProgress",
        Kind::OperationProgress => "OperationProgress",
    }
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// A POP answer: `schema`, and the request's `cid` beside it at the top (every answer has
/// it, success or error; a write that named its own cid in the body answers with that one).
fn ok_response(description: &str, schema: Value) -> Value {
    document_response(description, json!({"allOf": [schema, schema_ref("Answered")]}))
}

fn document_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn feed_of(kind: Kind) -> Value {
    json!({
        "type": "object",
        "required": ["all", "count"],
        "properties": {
            "all": {"type": "array", "items": schema_ref(kind_schema(kind))},
            "count": {"type": "integer"},
            "countCapped": {"type": "boolean", "description": "With `byCount`: counting stopped at 10,000 matches."},
            "next": {"type": "string", "description": "Cursor of the next page (pass as `after`); absent on the last page."},
        },
    })
}

/// The error responses every operation may answer.
fn error_responses(responses: &mut Map<String, Value>, codes: &[&str]) {
    for code in codes {
        let description = match *code {
            "400" => "VALIDATION or BAD_REQUEST",
            "408" => "BAD_REQUEST: the body did not arrive whole in time",
            "401" => "UNAUTHENTICATED: no or unknown bearer token",
            "403" => "FORBIDDEN: the token's role or customers do not allow this",
            "404" => "NOT_FOUND: no such object, or one the caller may not see",
            "409" => "CONFLICT",
            "413" => "BAD_REQUEST: the body is larger than the limit",
            "422" => "RESPONSE_TOO_LARGE: ask for fewer objects or fewer fields",
            "429" => {
                "QUOTA_EXCEEDED (the customer's live agendas) or BUSY (too many of the token's requests at once; see Retry-After)"
            }
            "503" => {
                "UNAVAILABLE (the store cannot serve right now; see Retry-After), TIMEOUT (atLeastPosition not reached in time) or DEADLINE_EXCEEDED; retry"
            }
            _ => "INTERNAL",
        };
        responses.insert(code.to_string(), error_response(description));
    }
}

fn error_response(description: &str) -> Value {
    // The envelope names its `cid` itself.
    document_response(description, schema_ref("ErrorResponse"))
}

fn query_param(name: &str) -> Value {
    let description = match name {
        "byId" => "The object's id.",
        "byCustomerId" => "Only objects of this customer.",
        "byLinkId" => "Only agendas with this linkId.",
        "byAgendaId" => "The agenda with this id (on progress lists: its progress).",
        "byAgendaProgressId" => {
            "Only the agenda (or operation progress) of this AgendaProgress id."
        }
        "byResourcePoolId" => "Only objects bound to (or belonging to) this resource pool.",
        "byInsightId" => "Only agendas bound to this insight.",
        "byTitle" => "Only objects with exactly this title.",
        "limit" => "Most objects in one answer (1..=500; default 500).",
        "after" => "The `next` cursor of a previous answer.",
        "atLeastPosition" => {
            "Wait (bounded) until the read models reach this log position (from X-Pop-Position)."
        }
        "linkId" => "The linkId to summarise.",
        "byLimit" => "POP's spelling of `limit`.",
        "byFields" => "Comma-separated field names: each object answers only these fields.",
        "byCount" => {
            "`true`: answer only how many objects match (`count`, with `countCapped` when counting stopped at 10,000), with `all` empty."
        }
        "byCid" => "Only objects written with this correlation id.",
        "asOf" => {
            "pop only: the object as it was at a log position (`42`, `7/3`) or an RFC 3339 time (each stream's events committed at or before it), folded from the log."
        }
        _ => "",
    };
    json!({
        "name": name,
        "in": "query",
        "required": false,
        "description": format!("{description} Parameter names are case-insensitive (`bylinkId` works)."),
        "schema": {"type": "string"},
    })
}

fn params(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| query_param(n)).collect()
}

fn operation(
    summary: &str,
    parameters: Vec<Value>,
    body: Option<Value>,
    ok: Value,
    errors: &[&str],
) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    error_responses(&mut responses, errors);
    let mut op = Map::new();
    op.insert("summary".into(), json!(summary));
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = body {
        op.insert("requestBody".into(), body);
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn refused(why: &str) -> Value {
    json!({
        "summary": "Not supported in pop's model (405).",
        "description": why,
        "responses": {"405": error_response(&format!("METHOD_NOT_ALLOWED: {why}"))},
    })
}

const READ_ERRORS: &[&str] = &["400", "401", "404", "422", "429", "500", "503"];
const WRITE_ERRORS: &[&str] =
    &["400", "401", "403", "404", "408", "409", "413", "429", "500", "503"];

fn spelled(lower: &[&str]) -> Vec<&'static str> {
    lower.iter().map(|p| param_spelling(p)).collect()
}

fn path_item(route: &Route) -> Value {
    let mut item = Map::new();
    let id_param = json!({
        "name": "id", "in": "path", "required": true,
        "description": "The object's id (percent-encode `/` and other reserved characters).",
        "schema": {"type": "string"},
    });
    for method in route.methods {
        let op = match (route.endpoint, *method) {
            (Endpoint::OpenApi, _) => {
                let mut op = operation(
                    "This document (no token needed).",
                    Vec::new(),
                    None,
                    document_response("The OpenAPI document", json!({"type": "object"})),
                    &[],
                );
                if let Value::Object(o) = &mut op {
                    o.insert("security".into(), json!([]));
                }
                op
            }
            (Endpoint::Collection(kind), "GET") => operation(
                &format!(
                    "List {} objects the caller may see, filtered by the query parameters (ANDed).",
                    kind.name()
                ),
                params(&spelled(list_params(kind, false))),
                None,
                ok_response("The matching objects", feed_of(kind)),
                READ_ERRORS,
            ),
            (Endpoint::Item(kind), "GET") => operation(
                &format!("One {} by id.", kind.name()),
                params(&spelled(list_params(kind, true))),
                None,
                ok_response("The object (count 1)", feed_of(kind)),
                READ_ERRORS,
            ),
            (Endpoint::Collection(Kind::Agenda), "POST") => operation(
                "Submit an agenda (role user or admin). The server assigns id (unless given), progressId, cid, times and agendaInsight.",
                params(&["atLeastPosition"]),
                Some(json_body(schema_ref("Agenda"))),
                ok_response("The agenda and its progress", schema_ref("AgendaResult")),
                WRITE_ERRORS,
            ),
            (Endpoint::Collection(kind) | Endpoint::Item(kind), "POST" | "PUT") => operation(
                &format!(
                    "{} a {} (role admin, within its customers){}.",
                    if *method == "POST" { "Create" } else { "Replace" },
                    kind.name(),
                    if matches!(route.endpoint, Endpoint::Item(_)) {
                        "; the body's id defaults to the path's and must equal it"
                    } else {
                        ""
                    }
                ),
                params(&["atLeastPosition"]),
                Some(json_body(schema_ref(kind_schema(kind)))),
                ok_response("The object as stored (count 1)", feed_of(kind)),
                WRITE_ERRORS,
            ),
            (Endpoint::Collection(kind) | Endpoint::Item(kind), _) => operation(
                &format!(
                    "Delete a {} (role admin){}.",
                    kind.name(),
                    if matches!(route.endpoint, Endpoint::Item(_)) { "" } else { " named by byId" }
                ),
                params(if matches!(route.endpoint, Endpoint::Item(_)) {
                    &["atLeastPosition"]
                } else {
                    &["byId", "atLeastPosition"]
                }),
                None,
                ok_response("The object as deleted (count 1)", feed_of(kind)),
                WRITE_ERRORS,
            ),
            (Endpoint::Run, _) => operation(
                "Run an agenda template with a payload and submit the result (role user or admin).",
                params(&["atLeastPosition"]),
                Some(json_body(schema_ref("RunRequest"))),
                ok_response("The submitted agenda and its progress", schema_ref("AgendaResult")),
                WRITE_ERRORS,
            ),
            (Endpoint::Rerun, _) => operation(
                "Rerun a COMPLETE agenda, or one a skipExecution rerun left WAITING/pending, with POP's flags (role user or admin).",
                Vec::new(),
                Some(json_body(schema_ref("RerunRequest"))),
                ok_response("The agenda and its reset progress", schema_ref("AgendaResult")),
                WRITE_ERRORS,
            ),
            (Endpoint::GetAgenda, _) => operation(
                "Take up to `count` queued agendas of an insight under a lease held by the caller (role service or admin). An empty queue is an empty list, at once or, with `waitSeconds`, when no agenda was queued in that time.",
                Vec::new(),
                Some(json_body(schema_ref("GetAgendaRequest"))),
                ok_response(
                    "The agendas handed out and their progress",
                    schema_ref("AgendaResult"),
                ),
                WRITE_ERRORS,
            ),
            (Endpoint::UpdateAgendaProgress, _) => operation(
                "An executor's progress report (role service or admin; only the lease holder). `id` is required; each report renews the lease.",
                Vec::new(),
                Some(json_body(schema_ref("UpdateAgendaProgressRequest"))),
                ok_response(
                    "The AgendaProgress after the report (count 1)",
                    feed_of(Kind::AgendaProgress),
                ),
                WRITE_ERRORS,
            ),
            (Endpoint::UpdateAgendaProgresses, _) => operation(
                "pop only: many executor reports in one request (1..=100, role service or admin), each exactly one updateAgendaProgress, answered item by item in request order: the AgendaProgress after it, or its error (code, message, problems under `reports[i]`, cid). Reports on different agendas are taken concurrently, on one agenda in request order.",
                Vec::new(),
                Some(json_body(schema_ref("UpdateAgendaProgressesRequest"))),
                ok_response("One answer per report", schema_ref("ReportResults")),
                WRITE_ERRORS,
            ),
            (Endpoint::UpdateAgenda, _) => operation(
                "Expand an agenda: append operations (validated like a submission) and merge params (role service or admin).",
                Vec::new(),
                Some(json_body(schema_ref("UpdateAgendaRequest"))),
                ok_response("The expanded agenda and its progress", schema_ref("AgendaResult")),
                WRITE_ERRORS,
            ),
            (Endpoint::ReleaseAgenda, _) => operation(
                "pop only: hand an agenda the caller holds back at once, under its current lease (`leaseId`, from getAgenda's `lease.id`): back to `added`, no attempt consumed, progress kept (role service or admin).",
                Vec::new(),
                Some(json_body(schema_ref("ReleaseAgendaRequest"))),
                ok_response("The released agenda and its progress", schema_ref("AgendaResult")),
                WRITE_ERRORS,
            ),
            (Endpoint::CreateAgenda, _) => operation(
                "Submit agendas given as POP's `{agendas: [...]}` (up to 100: all are validated before any is written), as `{agenda}`, or one agenda as the whole body (same rights as POST /pop/agenda).",
                params(&["atLeastPosition"]),
                Some(json_body(schema_ref("CreateAgendaRequest"))),
                ok_response("The agendas and their progress", schema_ref("AgendaResult")),
                WRITE_ERRORS,
            ),
            (Endpoint::Summary, "GET") => operation(
                "The ProgressSummary of the agendas with a linkId that the caller may see.",
                params(&["linkId", "byLinkId", "byCustomerId", "atLeastPosition", "asOf"]),
                None,
                ok_response("The summary", schema_ref("ProgressSummary")),
                READ_ERRORS,
            ),
            (Endpoint::Summary, _) => operation(
                "The ProgressSummary of the agendas with a linkId that the caller may see.",
                params(&["byCustomerId", "atLeastPosition", "asOf"]),
                Some(json_body(schema_ref("SummaryRequest"))),
                ok_response("The summary", schema_ref("ProgressSummary")),
                READ_ERRORS,
            ),
        };
        item.insert(method.to_ascii_lowercase(), op);
    }
    for (method, why) in route.refused {
        item.insert(method.to_ascii_lowercase(), refused(why));
    }
    if route.path.contains("{id}") {
        item.insert("parameters".into(), json!([id_param]));
    }
    Value::Object(item)
}

fn time(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": format!("{description} Epoch milliseconds (server-set where the object says so).")})
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": true, "description": "Values are strings or typed JSON; read leniently (\"5\" and 5 are both 5)."})
}

fn common(extra: Value) -> Value {
    let mut properties = json!({
        "id": {"type": "string"},
        "cid": {"type": "string", "description": "Correlation id, server-set."},
        "customerId": {"type": "string"},
        "title": {"type": "string"},
        "addedTime": time("Server-set."),
        "updatedTime": time("Server-set."),
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut properties, extra) {
        p.extend(e);
    }
    json!({"type": "object", "properties": properties})
}

fn components() -> Value {
    let any = json!({"description": "Any JSON value."});
    let state = json!({"type": "string", "enum": ["WAITING", "EXECUTING", "COMPLETE"]});
    let diagnostics = json!({"type": "array", "items": schema_ref("DiagnosticEvent")});
    // Built apart: one `json!` for every schema would pass the macro's recursion limit.
    let reports_request = json!({"type": "object", "required": ["reports"], "properties": {
        "reports": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "object", "required": ["agendaProgress"], "properties": {
            "agendaProgress": schema_ref("AgendaProgress"),
            "leaseId": {"type": "string"},
        }}},
        "cid": {"type": "string"},
    }});
    let item_error = json!({"type": "object", "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        "cid": {"type": "string", "nullable": true},
    }});
    let report_results = json!({"type": "object", "required": ["results", "count", "failed"], "properties": {
        "results": {"type": "array", "items": {"type": "object", "required": ["index"], "properties": {
            "index": {"type": "integer"},
            "agendaProgress": schema_ref("AgendaProgress"),
            "agendaProgressOmitted": {"type": "object", "description": "In place of agendaProgress once the answer's byte budget is spent: the agenda's state, and why (GET its progress).", "properties": {
                "id": {"type": "string"},
                "agendaId": {"type": "string"},
                "processingState": {"type": "string"},
                "processingStateMessage": {"type": "string", "nullable": true},
                "percentComplete": {"type": "number", "nullable": true},
                "reason": {"type": "string"},
            }},
            "position": {"type": "string", "nullable": true},
            "error": item_error,
        }}},
        "count": {"type": "integer"},
        "failed": {"type": "integer"},
    }});
    json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Answered": {
                "type": "object",
                "description": "What every POP answer carries beside its own members.",
                "properties": {"cid": {"type": "string", "description": "The request's cid (a write's own, when its body named one)."}},
            },
            "ErrorResponse": {
                "type": "object",
                "required": ["errorResponse"],
                "properties": {
                  "error": {"type": "boolean", "description": "Always true on an error (POP's `isError`)."},
                  "cid": {"type": "string", "description": "The request's cid."},
                  "errorResponse": {
                    "type": "object",
                    "required": ["title", "description", "responseCode", "correlationId", "code"],
                    "properties": {
                        "title": {"type": "string", "description": "The HTTP reason phrase."},
                        "description": {"type": "string", "description": "What went wrong, naming the field or object at fault."},
                        "responseCode": {"type": "integer", "description": "The HTTP status."},
                        "correlationId": {"type": "string", "description": "The request's cid."},
                        "code": {"type": "string", "enum": error_codes(), "description": "pop's machine-readable code (an addition to POP's envelope)."},
                        "problems": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}, "description": "VALIDATION only: every problem found (capped)."},
                        "omittedProblems": {"type": "integer", "description": "Problems found beyond those listed."},
                    },
                }},
            },
            "AgendaInsight": {"type": "object", "properties": {"resourcePoolId": {"type": "string"}, "insightId": {"type": "string"}}},
            "Operation": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "description": "Unique within the agenda, case-insensitively."},
                    "type": {"type": "string", "description": "Selects the handler."},
                    "id": {"type": "string"},
                    "payload": {"description": "Any JSON; strings may hold references such as @<name.out::/pointer>."},
                    "params": string_map(),
                },
            },
            "Agenda": common(json!({
                "operations": {"type": "array", "items": schema_ref("Operation")},
                "params": string_map(),
                "linkId": {"type": "string"},
                "jobId": {"type": "string"},
                "progressId": {"type": "string"},
                "agendaInsight": schema_ref("AgendaInsight"),
            })),
            "AgendaTemplate": common(json!({
                "agenda": schema_ref("Agenda"),
                "staticParameters": string_map(),
                "params": string_map(),
                "isGlobal": {"type": "boolean"},
                "allowedCustomerIds": {"type": "array", "items": {"type": "string"}},
                "isDefaultTemplate": {"type": "boolean"},
            })),
            "Customer": common(json!({
                "billingCode": {"type": "string"},
                "resourcePoolId": {"type": "string"},
            })),
            "ResourcePool": common(json!({
                "insightIds": {"type": "array", "items": {"type": "string"}, "description": "Computed: the insights of this pool; ignored on input."},
            })),
            "Insight": common(json!({
                "resourcePoolId": {"type": "string"},
                "queueName": {"type": "string"},
                "queueSize": {"type": "integer", "minimum": 1},
                "schedulingAlgorithm": {"type": "string", "enum": ["FirstInFirstOut", "RoundRobin", "Priority"], "description": "POP's algorithms; an insight using pop's Priority is answered without it (POP's clients cannot read the value) and with popSchedulingAlgorithm instead. An update without it (or null) keeps the insight's algorithm."},
                "popSchedulingAlgorithm": {"type": "string", "enum": ["FirstInFirstOut", "RoundRobin", "Priority"], "description": "pop's own field: answered for a Priority insight in place of schedulingAlgorithm; read on input when schedulingAlgorithm is not given."},
                "mappers": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}, "description": "operationType, operationName, paramMap (key=value) → values."},
                "isGlobal": {"type": "boolean"},
                "allowedCustomerIds": {"type": "array", "items": {"type": "string"}},
            })),
            "DiagnosticEvent": {"type": "object", "properties": {
                "message": {"type": "string"},
                "statusCode": {"type": "string", "description": "As in POP, e.g. ENOENT; numbers are read as their text."},
                "time": time(""),
                "stackTrace": {"type": "string"},
                "payload": any,
            }},
            "OperationProgress": {"type": "object", "properties": {
                "id": {"type": "string", "description": "<agendaProgressId>-<operation name>"},
                "cid": {"type": "string"},
                "customerId": {"type": "string"},
                "title": {"type": "string"},
                "agendaProgressId": {"type": "string"},
                "operation": {"type": "string", "description": "The operation's name."},
                "processingState": state,
                "processingStateMessage": {"type": "string"},
                "percentComplete": {"type": "number"},
                "diagnosticEvents": diagnostics,
                "attemptCount": {"type": "integer"},
                "attemptTime": time(""),
                "startedTime": time(""),
                "completedTime": time(""),
                "resultPayload": any,
                "params": string_map(),
                "addedTime": time(""),
                "updatedTime": time(""),
            }},
            "AgendaProgress": common(json!({
                "agendaId": {"type": "string"},
                "linkId": {"type": "string"},
                "externalId": {"type": "string"},
                "processingState": state,
                "processingStateMessage": {"type": "string"},
                "percentComplete": {"type": "number"},
                "operationProgress": {"type": "array", "items": schema_ref("OperationProgress")},
                "diagnosticEvents": diagnostics,
                "attemptsCompleted": {"type": "integer"},
                "maximumAttempts": {"type": "integer"},
                "startedTime": time(""),
                "completedTime": time(""),
                "params": string_map(),
                "agendaInsight": schema_ref("AgendaInsight"),
            })),
            "ProgressSummary": {"type": "object", "properties": {
                "linkId": {"type": "string"},
                "processingState": state,
                "processingPercent": {"type": "number", "nullable": true, "description": "null when any agenda failed."},
                "progressList": {"type": "array", "items": schema_ref("AgendaProgress")},
            }},
            "AgendaResult": {
                "type": "object",
                "required": ["all", "agendaProgresses", "count"],
                "properties": {
                    "all": {"type": "array", "items": schema_ref("Agenda")},
                    "agendaProgresses": {"type": "array", "items": schema_ref("AgendaProgress")},
                    "count": {"type": "integer"},
                    "agenda": {"description": "updateAgenda only: the expanded agenda (POP's UpdateAgendaResponse)", "allOf": [schema_ref("Agenda")]},
                },
            },
            "RunRequest": {"type": "object", "required": ["agendaTemplateId"], "properties": {
                "agendaTemplateId": {"type": "string"},
                "payload": {"description": "The run payload (`@<pop.payload>`): JSON text in a string, as POP sends it, or JSON."},
                "customerId": {"type": "string", "description": "Default: the token's only customer."},
                "cid": {"type": "string"},
            }},
            "RerunRequest": {"type": "object", "required": ["agendaId"], "properties": {
                "agendaId": {"type": "string"},
                "params": {"type": "array", "maxItems": 64, "items": {"type": "string"}, "description": "resetAll (default), continue, skipExecution, operationsToReset=a,b"},
                "cid": {"type": "string"},
            }},
            "GetAgendaRequest": {"type": "object", "required": ["insightId", "count"], "properties": {
                "insightId": {"type": "string"},
                "count": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^\\s*[0-9]+(\\.0*)?\\s*$"}], "description": "A number or a numeric string; at most 100 are handed out per call (a larger count, as POP's pullers may send, gets at most 100)."},
                "waitSeconds": {"type": "integer", "minimum": 0, "maximum": 30, "description": "pop only: when nothing can be claimed at once, wait up to this many seconds for an agenda to be queued (absent or 0: answer at once)."},
            }},
            "UpdateAgendaProgressRequest": {"type": "object", "properties": {
                "agendaProgress": schema_ref("AgendaProgress"),
                "cid": {"type": "string"},
            }, "description": "`{agendaProgress}`, or the AgendaProgress itself as the whole body."},
            "UpdateAgendaProgressesRequest": reports_request,
            "ReportResults": report_results,
            "ReleaseAgendaRequest": {"type": "object", "required": ["agendaId", "leaseId"], "properties": {
                "agendaId": {"type": "string"},
                "leaseId": {"type": "string"},
                "cid": {"type": "string"},
            }},
            "UpdateAgendaRequest": {"type": "object", "required": ["agendaId", "operations"], "properties": {
                "agendaId": {"type": "string"},
                "operations": {"type": "array", "items": schema_ref("Operation")},
                "params": string_map(),
                "cid": {"type": "string"},
            }},
            "CreateAgendaRequest": {"type": "object", "properties": {
                "agendas": {"type": "array", "items": schema_ref("Agenda"), "maxItems": 100},
                "agenda": schema_ref("Agenda"),
            }, "description": "POP's `{agendas: [...]}`, `{agenda}`, or the agenda itself as the whole body."},
            "SummaryRequest": {"type": "object", "required": ["linkId"], "properties": {
                "linkId": {"type": "string"},
                "customerId": {"type": "string", "description": "Only this customer's agendas of the linkId."},
            }},
        },
    })
}
