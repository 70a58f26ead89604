//! The POP-compatible REST surface over real HTTP: POP-shaped fixtures
//! (`tests/fixtures/pop/`) round-trip through CRUD; a whole lifecycle runs through `/pop`
//! alone (submit → getAgenda → updateAgendaProgress → summary → rerun); every error path
//! answers POP's envelope with an honest status and pop's code; the served OpenAPI document
//! is the checked-in one and names every route.

// The helpers panic on a broken fixture or transport on purpose: the test should fail loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pop_api::ApiConfig;
use pop_projections::Phase;
use serde_json::{Value, json};
use support::*;

/// A REST answer: status, JSON body and the headers that matter.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    position: Option<String>,
    cid: Option<String>,
    allow: Option<String>,
    challenge: Option<String>,
}

async fn call_with(
    s: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.http.request(method, format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (position, cid, allow) =
        (header("x-pop-position"), header("x-correlation-id"), header("allow"));
    let challenge = header("www-authenticate");
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    Answer { status, body, position, cid, allow, challenge }
}

async fn call(
    s: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let text = body.map(|b| b.to_string());
    call_with(s, Some(token), method, path, text.as_deref(), &[]).await
}

/// Expects success and returns the answer.
async fn ok(s: &TestServer, token: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    let a = call(s, token, method, path, body).await;
    assert_eq!(a.status, 200, "{method} {path}: {:#}", a.body);
    a
}

/// Asserts POP's envelope with `status` and pop's `code`; returns the inner errorResponse.
fn envelope(a: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(a.status, status, "{:#}", a.body);
    let e = &a.body["errorResponse"];
    assert!(e.is_object(), "no errorResponse: {:#}", a.body);
    assert_eq!(e["responseCode"], status, "{e:#}");
    assert_eq!(e["code"], code, "{e:#}");
    assert!(!e["title"].as_str().unwrap_or_default().is_empty(), "{e:#}");
    assert!(!e["description"].as_str().unwrap_or_default().is_empty(), "{e:#}");
    let cid = e["correlationId"].as_str().unwrap_or_default();
    assert!(!cid.is_empty(), "{e:#}");
    assert_eq!(a.cid.as_deref(), Some(cid), "the header and the envelope carry one cid");
    e.clone()
}

fn fixture(name: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pop").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Creates the fixtures' pool, customer `acme`, insight and template as the admin; returns
/// the position of the last write.
async fn seed_fixtures(s: &TestServer) -> String {
    let mut last = String::new();
    for (path, file) in [
        ("/pop/resourcepool", "resourcepool.json"),
        ("/pop/customer", "customer.json"),
        ("/pop/insight", "insight.json"),
        ("/pop/agendatemplate", "agendatemplate.json"),
    ] {
        let a = ok(s, ADMIN, "POST", path, Some(fixture(file))).await;
        assert_eq!(a.body["count"], 1, "{:#}", a.body);
        last = a.position.expect("a write answers its position");
    }
    // globex shares the pool, for tenancy checks.
    let a = ok(
        s,
        ADMIN,
        "POST",
        "/pop/customer",
        Some(json!({"id": "globex", "title": "Globex", "resourcePoolId": "pool-east"})),
    )
    .await;
    let _ = last;
    a.position.unwrap()
}

/// Every field of `expected` (an object) is in `actual` with the same value.
fn contains(actual: &Value, expected: &Value) {
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&actual[k], v, "field {k} of {actual:#}");
    }
}

#[tokio::test]
async fn config_fixtures_round_trip_through_crud() {
    let s = start(ApiConfig::default()).await;
    let at = seed_fixtures(&s).await;

    // Customer: by path id, byId, lower-case byresourcepoolid, byTitle.
    let a = ok(&s, ACME, "GET", &format!("/pop/customer/acme?atLeastPosition={at}"), None).await;
    assert_eq!(a.body["count"], 1);
    contains(&a.body["all"][0], &fixture("customer.json"));
    let added = &a.body["all"][0]["addedTime"];
    assert!(added.as_i64().is_some_and(|t| t > 1_600_000_000_000), "epoch ms: {added}");
    let a = ok(&s, ADMIN, "GET", "/pop/customer?byresourcepoolid=pool-east", None).await;
    assert_eq!(a.body["count"], 2, "{:#}", a.body);
    let a = ok(&s, ADMIN, "GET", "/pop/customer?BYTITLE=Acme%20Media", None).await;
    assert_eq!(a.body["all"][0]["id"], "acme", "{:#}", a.body);
    // A user sees only its own customer.
    let a = ok(&s, ACME, "GET", "/pop/customer", None).await;
    assert_eq!(a.body["count"], 1, "{:#}", a.body);

    // Insight: string-typed numbers and booleans read as POP did.
    let a = ok(&s, ACME, "GET", "/pop/insight?byId=insight-transcode", None).await;
    let insight = &a.body["all"][0];
    assert_eq!(insight["queueSize"], 5);
    assert_eq!(insight["isGlobal"], true);
    assert_eq!(insight["mappers"], fixture("insight.json")["mappers"]);
    assert_eq!(insight["schedulingAlgorithm"], "RoundRobin");
    let a =
        ok(&s, ACME, "GET", "/pop/insight?byResourcePoolId=pool-east&byCustomerId=ops", None).await;
    assert_eq!(a.body["count"], 1, "{:#}", a.body);

    // Resource pool: insightIds computed.
    let a = ok(&s, ADMIN, "GET", "/pop/resourcepool/pool-east", None).await;
    contains(&a.body["all"][0], &fixture("resourcepool.json"));
    assert_eq!(a.body["all"][0]["insightIds"], json!(["insight-transcode"]));

    // Template.
    let a = ok(&s, ACME, "GET", "/pop/agendatemplate?bytitle=Transcode%20template", None).await;
    let t = &a.body["all"][0];
    assert_eq!(t["id"], "template-transcode");
    assert_eq!(t["agenda"]["operations"], fixture("agendatemplate.json")["agenda"]["operations"]);
    assert_eq!(t["isGlobal"], true);

    // PUT by path id (the body's id filled in), then DELETE.
    let mut changed = fixture("customer.json");
    changed.as_object_mut().unwrap().remove("id");
    changed["billingCode"] = json!("ACME-0043");
    let a = ok(&s, ADMIN, "PUT", "/pop/customer/acme", Some(changed)).await;
    assert_eq!(a.body["all"][0]["billingCode"], "ACME-0043");
    let pos = a.position.unwrap();
    let a = ok(&s, ACME, "GET", &format!("/pop/customer/acme?atLeastPosition={pos}"), None).await;
    assert_eq!(a.body["all"][0]["billingCode"], "ACME-0043");
    let a =
        ok(&s, ADMIN, "POST", "/pop/resourcepool", Some(json!({"id": "tmp", "customerId": "ops"})))
            .await;
    let pos = a.position.unwrap();
    let a =
        ok(&s, ADMIN, "DELETE", &format!("/pop/resourcepool?byId=tmp&atLeastPosition={pos}"), None)
            .await;
    assert_eq!(a.body["all"][0]["id"], "tmp");
    let pos = a.position.unwrap();
    let a =
        call(&s, ADMIN, "GET", &format!("/pop/resourcepool/tmp?atLeastPosition={pos}"), None).await;
    envelope(&a, 404, "NOT_FOUND");
}

/// Starts a server with the fixtures and the scheduler.
async fn scheduled() -> (TestServer, String) {
    let s = start(ApiConfig::default()).await;
    let at = seed_fixtures(&s).await;
    pop_reapers::scheduler::spawn(
        Arc::clone(&s.commands),
        s.state.projections().clone(),
        std::future::pending(),
    );
    (s, at)
}

async fn wait_queued(s: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = s.state.projections().read().agendas().count_in("insight-transcode", Phase::Queued);
        if q == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{q} queued, want {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_whole_lifecycle_through_the_rest_surface() {
    let (s, at) = scheduled().await;

    // Submit the agenda fixture (references, dependsOn, string-typed params).
    let a = ok(
        &s,
        ACME,
        "POST",
        &format!("/pop/agenda?atLeastPosition={at}"),
        Some(fixture("agenda.json")),
    )
    .await;
    let agenda = &a.body["all"][0];
    contains(
        agenda,
        &json!({"id": "agenda-refs-1", "customerId": "acme", "linkId": "http://my.data.link.id/job-77",
                "progressId": "agenda-refs-1",
                "agendaInsight": {"resourcePoolId": "pool-east", "insightId": "insight-transcode"}}),
    );
    assert_eq!(agenda["operations"], fixture("agenda.json")["operations"]);
    assert!(agenda["addedTime"].is_i64(), "{agenda:#}");
    assert_eq!(a.body["agendaProgresses"][0]["processingState"], "WAITING");
    assert_eq!(a.body["agendaProgresses"][0]["maximumAttempts"], 2);

    // Run the template with a payload given as JSON text.
    let a = ok(&s, ACME, "POST", "/pop/agenda/service/run", Some(fixture("run.json"))).await;
    let run = &a.body["all"][0];
    assert_eq!(run["params"]["externalId"], 42, "{run:#}");
    assert_eq!(
        run["operations"][0]["payload"],
        json!({"url": "http://media.example/in.mp4", "preset": {"crf": 23}, "where": "s3://us-east/42"})
    );
    let run_id = run["id"].as_str().unwrap().to_string();

    // The scheduler queues both; a puller takes them (count as a string, as POP sends it).
    wait_queued(&s, 2).await;
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": "5"})),
    )
    .await;
    assert_eq!(a.body["count"], 2, "{:#}", a.body);
    let ids: Vec<&str> =
        a.body["all"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"agenda-refs-1") && ids.contains(&run_id.as_str()), "{ids:?}");
    let progresses = a.body["agendaProgresses"].as_array().unwrap();
    assert_eq!(progresses.len(), 2);
    assert!(
        progresses.iter().all(|p| p["processingStateMessage"] == "scheduled"),
        "{progresses:#?}"
    );
    // Nothing left for anyone.
    let a = ok(
        &s,
        ACME_SERVICE_2,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": 5})),
    )
    .await;
    let cid = a.body["cid"].clone();
    assert!(cid.is_string(), "POP's responses carry the cid: {:#}", a.body);
    assert_eq!(a.body, json!({"all": [], "agendaProgresses": [], "count": 0, "cid": cid}));

    // Report: the wrapper form, then the bare AgendaProgress form POP executors also send.
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(json!({"agendaProgress": {"id": "agenda-refs-1", "processingState": "EXECUTING",
            "processingStateMessage": "Running Operations", "startedTime": "1700000000000",
            "cid": "inner-cid-1",
            "operationProgress": [{"operation": "sample.1", "processingState": "EXECUTING", "percentComplete": "50"}]}})),
    )
    .await;
    // The cid inside the wrapper is the report's (popclient55 M1: a generated one answered).
    assert_eq!(a.cid.as_deref(), Some("inner-cid-1"), "{:#}", a.body);
    let p = &a.body["all"][0];
    assert_eq!(
        (p["processingState"].as_str(), p["percentComplete"].as_f64()),
        (Some("EXECUTING"), Some(25.0)),
        "{p:#}"
    );
    assert_eq!(p["startedTime"], 1_700_000_000_000_i64);
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(json!({"id": "agenda-refs-1", "processingState": "COMPLETE", "processingStateMessage": "succeeded",
            "operationProgress": [
                {"operation": "sample.1", "processingState": "COMPLETE", "processingStateMessage": "succeeded",
                 "resultPayload": {"actionData": "s3://out/a.mp4", "width": 640, "height": 360}},
                {"operation": "encode.1", "processingState": "COMPLETE", "processingStateMessage": "succeeded"}]})),
    )
    .await;
    assert_eq!(a.body["all"][0]["processingStateMessage"], "succeeded");
    let done = a.position.unwrap();

    // The run agenda fails.
    ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(json!({"agendaProgress": {"id": run_id, "operationProgress": [
            {"operation": "sample", "processingState": "COMPLETE", "processingStateMessage": "failed",
             "diagnosticEvents": [{"message": "no such file", "statusCode": "2"}]}]}})),
    )
    .await;

    // Progress reads.
    let a = ok(
        &s,
        ACME,
        "GET",
        &format!("/pop/progress/agenda/agenda-refs-1?atLeastPosition={done}"),
        None,
    )
    .await;
    assert_eq!(a.body["all"][0]["percentComplete"], 100.0);
    let a =
        ok(&s, ACME, "GET", "/pop/progress/operation?byAgendaProgressId=agenda-refs-1", None).await;
    assert_eq!(a.body["count"], 2, "{:#}", a.body);
    let sample =
        a.body["all"].as_array().unwrap().iter().find(|o| o["operation"] == "sample.1").unwrap();
    assert_eq!(sample["id"], "agenda-refs-1-sample.1");
    // POP's resultPayload is a String of JSON text (its Jackson clients read nothing else).
    let result: Value = serde_json::from_str(sample["resultPayload"].as_str().unwrap()).unwrap();
    assert_eq!(result["width"], 640);
    let a = ok(&s, ACME, "GET", "/pop/progress/operation/agenda-refs-1-encode.1", None).await;
    assert_eq!(a.body["all"][0]["processingStateMessage"], "succeeded");
    let a = ok(&s, ACME, "GET", "/pop/agenda?bylinkId=http%3A%2F%2Fmy.data.link.id%2Fjob-77", None)
        .await;
    assert_eq!(a.body["count"], 1, "{:#}", a.body);
    let a = ok(&s, ACME, "GET", "/pop/agenda?byagendaid=agenda-refs-1", None).await;
    assert_eq!(a.body["count"], 1, "{:#}", a.body);
    let a = ok(&s, ACME, "GET", "/pop/progress/agenda?byAgendaId=agenda-refs-1", None).await;
    assert_eq!(a.body["all"][0]["id"], "agenda-refs-1");
    let a = ok(&s, ACME, "GET", "/pop/agenda?byResourcePoolId=pool-east&limit=10", None).await;
    assert_eq!(a.body["count"], 2, "{:#}", a.body);
    let a = ok(&s, ACME, "GET", "/pop/agenda?byTitle=Transcode%20from%20template", None).await;
    assert_eq!(a.body["all"][0]["id"], run_id.as_str(), "{:#}", a.body);

    // Summary by linkId, POST and GET.
    let link = "http://my.data.link.id/job-77";
    let a =
        ok(&s, ACME, "POST", "/pop/progress/agenda/service", Some(json!({"linkId": link}))).await;
    assert_eq!(a.body["processingState"], "COMPLETE", "{:#}", a.body);
    assert_eq!(a.body["processingPercent"], 100.0);
    assert_eq!(a.body["progressList"].as_array().unwrap().len(), 1);
    let a = ok(
        &s,
        GLOBEX,
        "GET",
        "/pop/progress/agenda/service?linkId=http%3A%2F%2Fmy.data.link.id%2Fjob-77",
        None,
    )
    .await;
    assert_eq!(a.body["progressList"], json!([]), "globex sees none of acme's agendas");

    // Rerun the failed one with POP's params; it goes back to WAITING/pending and re-added.
    let a = ok(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/rerun",
        Some(json!({"agendaId": run_id, "params": ["operationsToReset=sample"]})),
    )
    .await;
    let p = &a.body["agendaProgresses"][0];
    assert_eq!(p["processingState"], "WAITING", "{p:#}");

    // Expand the running... the rerun agenda through updateAgenda (a service's call).
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgenda",
        Some(json!({"agendaId": run_id, "operations": [{"name": "extra", "type": "ffmpeg", "payload": {}}],
                    "params": {"expanded": "true"}})),
    )
    .await;
    let ops = a.body["all"][0]["operations"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["name"] == "extra"), "{ops:#?}");
    // POP's UpdateAgendaResponse has the agenda as `agenda`.
    assert_eq!(a.body["agenda"], a.body["all"][0], "{:#}", a.body);
    // A params-only expansion as Jackson writes it: `operations` null (popclient55 L2).
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgenda",
        Some(json!({"agendaId": run_id, "operations": null, "params": {"onlyParams": "1"}})),
    )
    .await;
    assert_eq!(a.body["agenda"]["params"]["onlyParams"], "1", "{:#}", a.body);
    assert_eq!(a.body["agenda"]["operations"].as_array().map(Vec::len), Some(ops.len()));

    // createAgenda: a submission wrapped in {agenda}.
    let mut second = fixture("agenda.json");
    second["id"] = json!("agenda-refs-2");
    let a = ok(
        &s,
        ACME,
        "POST",
        "/pop/resourcepool/service/createAgenda",
        Some(json!({"agenda": second})),
    )
    .await;
    assert_eq!(a.body["all"][0]["id"], "agenda-refs-2");
}

#[tokio::test]
async fn every_error_answers_the_envelope_with_an_honest_status() {
    let (s, at) = scheduled().await;
    ok(
        &s,
        ACME,
        "POST",
        &format!("/pop/agenda?atLeastPosition={at}"),
        Some(fixture("agenda.json")),
    )
    .await;

    // 401: no token, a bad token; the client's correlation id comes back.
    let a =
        call_with(&s, None, "GET", "/pop/agenda", None, &[("x-correlation-id", "my-cid-1")]).await;
    let e = envelope(&a, 401, "UNAUTHENTICATED");
    assert_eq!(e["correlationId"], "my-cid-1");
    // It says how to authenticate (RFC 6750).
    assert_eq!(a.challenge.as_deref(), Some("Bearer realm=\"pop\""), "{a:?}");
    let a =
        call_with(&s, Some("tok_nobody_000000000000000000000"), "GET", "/pop/customer", None, &[])
            .await;
    envelope(&a, 401, "UNAUTHENTICATED");
    // A write that names its own cid in the body reports that one, as on GraphQL.
    let a = call_with(
        &s,
        Some(ACME),
        "POST",
        "/pop/agenda/service/rerun",
        Some(r#"{"agendaId": "no-such", "cid": "body-cid-7"}"#),
        &[("x-correlation-id", "header-cid")],
    )
    .await;
    assert_eq!(envelope(&a, 404, "NOT_FOUND")["correlationId"], "body-cid-7");
    // And a report's, inside POP's UpdateAgendaProgressRequest wrapper.
    let a = call_with(
        &s,
        Some(ACME_SERVICE),
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(r#"{"agendaProgress": {"id": "no-such", "cid": "inner-cid-8", "operationProgress": []}}"#),
        &[],
    )
    .await;
    assert_eq!(envelope(&a, 404, "NOT_FOUND")["correlationId"], "inner-cid-8");

    // 403: the role does not allow it.
    let a = call(&s, ACME, "POST", "/pop/customer", Some(json!({"id": "x", "title": "x"}))).await;
    envelope(&a, 403, "FORBIDDEN");
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": 1})),
    )
    .await;
    envelope(&a, 403, "FORBIDDEN");
    let a = call(&s, ACME_SERVICE, "POST", "/pop/agenda", Some(fixture("agenda.json"))).await;
    envelope(&a, 403, "FORBIDDEN");
    // Naming a customer outside the caller's set.
    let mut other = fixture("agenda.json");
    other["customerId"] = json!("globex");
    other["id"] = json!("other");
    let a = call(&s, ACME, "POST", "/pop/agenda", Some(other)).await;
    envelope(&a, 403, "FORBIDDEN");

    // 404: unknown route, missing object, an object the caller may not see (read and write).
    let a = call(&s, ACME, "GET", "/pop/nothing/here", None).await;
    envelope(&a, 404, "NOT_FOUND");
    let a = call(&s, ACME, "GET", "/pop/agenda/no-such", None).await;
    envelope(&a, 404, "NOT_FOUND");
    let a = call(&s, GLOBEX, "GET", "/pop/agenda/agenda-refs-1", None).await;
    let invisible = envelope(&a, 404, "NOT_FOUND");
    let a = call(&s, GLOBEX, "GET", "/pop/agenda/no-such-either", None).await;
    let missing = envelope(&a, 404, "NOT_FOUND");
    assert_eq!(
        invisible["description"].as_str().unwrap().replace("agenda-refs-1", "X"),
        missing["description"].as_str().unwrap().replace("no-such-either", "X"),
        "invisible and missing read alike"
    );
    let a = call(
        &s,
        GLOBEX,
        "POST",
        "/pop/agenda/service/rerun",
        Some(json!({"agendaId": "agenda-refs-1"})),
    )
    .await;
    envelope(&a, 404, "NOT_FOUND");
    let a = call(&s, ACME_ADMIN, "DELETE", "/pop/customer/globex", None).await;
    envelope(&a, 404, "NOT_FOUND");
    let a = call(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "nope", "count": 1})),
    )
    .await;
    envelope(&a, 404, "NOT_FOUND");
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/run",
        Some(json!({"agendaTemplateId": "nope", "payload": "{}"})),
    )
    .await;
    envelope(&a, 404, "NOT_FOUND");

    // 405 with Allow: verbs that make no sense in pop's model.
    for (method, path) in [
        ("PUT", "/pop/agenda"),
        ("DELETE", "/pop/agenda/agenda-refs-1"),
        ("POST", "/pop/progress/agenda"),
        ("PUT", "/pop/progress/operation/x"),
        ("GET", "/pop/resourcepool/service/getAgenda"),
        ("PATCH", "/pop/customer"),
    ] {
        let a = call(&s, ADMIN, method, path, Some(json!({}))).await;
        envelope(&a, 405, "METHOD_NOT_ALLOWED");
        assert!(a.allow.is_some(), "{method} {path}: no Allow header");
    }

    // 400: not JSON, no body, not an object, unknown query parameter, bad limit, bad cursor.
    let a = call_with(&s, Some(ACME), "POST", "/pop/agenda", Some("{not json"), &[]).await;
    envelope(&a, 400, "BAD_REQUEST");
    let a = call(&s, ACME, "POST", "/pop/agenda", None).await;
    envelope(&a, 400, "BAD_REQUEST");
    let a = call(&s, ACME, "POST", "/pop/agenda", Some(json!([1, 2]))).await;
    envelope(&a, 400, "VALIDATION");
    let a = call(&s, ACME, "GET", "/pop/agenda?byLnkId=x", None).await;
    let e = envelope(&a, 400, "BAD_REQUEST");
    // The unknown name as the request spelled it (it was said lower-cased: "bylnkid").
    let said = e["description"].as_str().unwrap();
    assert!(said.contains("\"byLnkId\"") && said.contains("byLinkId"), "{said}");
    // A page size out of range names REST's parameter.
    for limit in ["0", "100000", "x"] {
        let a = call(&s, ACME, "GET", &format!("/pop/agenda?limit={limit}"), None).await;
        let e = envelope(&a, 400, "VALIDATION");
        assert_eq!(e["problems"][0]["field"], json!("limit"), "{e:#}");
    }
    let a = call(&s, ACME, "GET", "/pop/customer?after=garbage", None).await;
    envelope(&a, 400, "VALIDATION");
    let a = call(&s, ACME, "GET", "/pop/progress/operation", None).await;
    envelope(&a, 400, "BAD_REQUEST");
    let a = call(&s, ACME, "GET", "/pop/agenda?atLeastPosition=99999999", None).await;
    envelope(&a, 400, "VALIDATION");

    // 400 VALIDATION listing every problem: a dependsOn typo and a duplicate name.
    let mut bad = fixture("agenda.json");
    bad["id"] = json!("bad");
    bad["operations"][1]["params"]["dependsOn"] = json!("smaple.1");
    bad["operations"][1]["name"] = json!("SAMPLE.1");
    let a = call(&s, ACME, "POST", "/pop/agenda", Some(bad)).await;
    let e = envelope(&a, 400, "VALIDATION");
    assert!(e["problems"].as_array().unwrap().len() >= 2, "{e:#}");
    // An id no agenda can have is the client's mistake (400), on both surfaces, never a 500.
    for path in ["/pop/agenda/service/rerun", "/pop/resourcepool/service/updateAgenda"] {
        let a =
            call(&s, ADMIN, "POST", path, Some(json!({"agendaId": "a\u{1}b", "operations": []})))
                .await;
        envelope(&a, 400, "VALIDATION");
    }
    let a = call(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(json!({"id": ">\u{18}"})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    // An id of the wrong type is refused for its type, naming the field (it was told the id
    // is required).
    let report = |id: Value| {
        call(
            &s,
            ACME_SERVICE,
            "POST",
            "/pop/resourcepool/service/updateAgendaProgress",
            Some(json!({"id": id, "processingState": "EXECUTING"})),
        )
    };
    for id in [json!(123), json!({"x": 1})] {
        let e = envelope(&report(id).await, 400, "VALIDATION");
        assert_eq!(e["problems"][0]["field"], json!("agendaProgress.id"), "{e:#}");
        assert!(!e["description"].as_str().unwrap().contains("required"), "{e:#}");
    }
    let e = s
        .err(
            ADMIN,
            "mutation($id: String!) { rerunAgenda(agendaId: $id) { position } }",
            json!({"id": "a\u{1}b"}),
        )
        .await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    // Service field checks.
    let a = call(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": "lots"})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    let a = call(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": 0})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");

    let a = call(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"count": 1})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    let a = call(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(json!({"agendaProgress": {"processingState": "EXECUTING"}})),
    )
    .await;
    let e = envelope(&a, 400, "VALIDATION");
    assert_eq!(e["problems"][0]["field"], "agendaProgress.id", "{e:#}");
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/rerun",
        Some(json!({"agendaId": "agenda-refs-1", "params": ["sideways"]})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/rerun",
        Some(json!({"agendaId": "agenda-refs-1", "params": vec!["continue"; 65]})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/run",
        Some(json!({"agendaTemplateId": "template-transcode", "payload": "{oops"})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    // An integer beyond 64 bits inside the payload's JSON text is refused, naming where, as in
    // any body (popclient59 M1: it was kept rounded).
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/run",
        Some(json!({"agendaTemplateId": "template-transcode",
            "payload": "{\"url\": \"u\", \"n\": [1, 123456789012345678901234]}"})),
    )
    .await;
    let e = envelope(&a, 400, "VALIDATION");
    assert_eq!(e["problems"][0]["field"], json!("payload.n[1]"), "{e:#}");
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/run",
        Some(json!({"agendaTemplateId": "template-transcode", "payload": {"url": "u"}})),
    )
    .await;
    envelope(&a, 400, "VALIDATION");
    let a = call(&s, ACME, "POST", "/pop/progress/agenda/service", Some(json!({}))).await;
    envelope(&a, 400, "VALIDATION");
    let a =
        call(&s, ADMIN, "PUT", "/pop/customer/acme", Some(json!({"id": "globex", "title": "x"})))
            .await;
    envelope(&a, 400, "VALIDATION");
    let a = call(&s, ADMIN, "POST", "/pop/insight", Some(json!({"id": "q0", "customerId": "ops", "title": "Q", "resourcePoolId": "pool-east", "queueSize": "0"}))).await;
    envelope(&a, 400, "VALIDATION");

    // 409: a duplicate create; a report from a worker that does not hold the agenda.
    let a = call(&s, ADMIN, "POST", "/pop/customer", Some(fixture("customer.json"))).await;
    envelope(&a, 409, "CONFLICT");
    wait_queued(&s, 1).await;
    // A count past what one call hands out (100) is at most that many, as POP took any count.
    let claimed = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": 500})),
    )
    .await;
    assert_eq!(claimed.body["count"], 1, "{:#}", claimed.body);
    let a = call(
        &s,
        ACME_SERVICE_2,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(json!({"id": "agenda-refs-1", "processingState": "EXECUTING"})),
    )
    .await;
    envelope(&a, 409, "CONFLICT");
    // Rerun of an agenda that is not complete.
    let a = call(
        &s,
        ACME,
        "POST",
        "/pop/agenda/service/rerun",
        Some(json!({"agendaId": "agenda-refs-1"})),
    )
    .await;
    envelope(&a, 409, "CONFLICT");
}

/// The ids of a list answer's `all`.
fn all_ids(a: &Answer) -> Vec<String> {
    a.body["all"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_filters_apply_before_paging() {
    // Pages of 2: the matches sit beyond the first page of unfiltered items.
    let s = start(ApiConfig { max_page_size: 2, ..ApiConfig::default() }).await;
    seed_fixtures(&s).await;
    // Customers in id order: acme, c-1 … c-6, globex.
    let mut at = String::new();
    for i in 1..=6 {
        let title = if i >= 5 { "Target" } else { "Plain" };
        let body = json!({"id": format!("c-{i}"), "title": title, "resourcePoolId": "pool-east"});
        at = ok(&s, ADMIN, "POST", "/pop/customer", Some(body)).await.position.unwrap();
    }
    // Read the writes (later reads see at least as much).
    let a = ok(&s, ADMIN, "GET", &format!("/pop/customer?atLeastPosition={at}"), None).await;
    assert_eq!(all_ids(&a), ["acme", "c-1"]);
    assert!(a.body["next"].is_string(), "{:#}", a.body);

    // Both matches, on one page, and no `next`: globex follows but does not match.
    let a = ok(&s, ADMIN, "GET", "/pop/customer?byTitle=Target", None).await;
    assert_eq!(all_ids(&a), ["c-5", "c-6"], "{:#}", a.body);
    assert_eq!(a.body["count"], 2);
    assert!(a.body.get("next").is_none(), "{:#}", a.body);
    // Four matches: two pages, `next` on the first only.
    let a = ok(&s, ADMIN, "GET", "/pop/customer?byTitle=Plain", None).await;
    assert_eq!((all_ids(&a), &a.body["count"]), (vec!["c-1".into(), "c-2".into()], &json!(2)));
    let next = a.body["next"].as_str().expect("more match").to_string();
    let a = ok(&s, ADMIN, "GET", &format!("/pop/customer?byTitle=Plain&after={next}"), None).await;
    assert_eq!(all_ids(&a), ["c-3", "c-4"], "{:#}", a.body);
    assert!(a.body.get("next").is_none(), "{:#}", a.body);
    // A filter nothing passes: empty, no `next`.
    let a = ok(&s, ADMIN, "GET", "/pop/customer?byTitle=Nobody", None).await;
    assert_eq!((a.body["count"].clone(), a.body.get("next")), (json!(0), None));
    // The same path serves pools, insights and templates.
    let a = ok(&s, ADMIN, "GET", "/pop/insight?byResourcePoolId=pool-east", None).await;
    assert_eq!(a.body["count"], 1, "{:#}", a.body);
    assert!(a.body.get("next").is_none(), "{:#}", a.body);

    // Agendas in added order: a-1 … a-3 ("Other"), then a-4, a-5 ("Target").
    for i in 1..=5 {
        let mut agenda = fixture("agenda.json");
        agenda["id"] = json!(format!("a-{i}"));
        agenda["linkId"] = json!(format!("link-{i}"));
        agenda["title"] = json!(if i >= 4 { "Target" } else { "Other" });
        at = ok(&s, ACME, "POST", "/pop/agenda", Some(agenda)).await.position.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    ok(&s, ACME, "GET", &format!("/pop/agenda?atLeastPosition={at}"), None).await;
    for path in ["/pop/agenda", "/pop/progress/agenda"] {
        let a = ok(&s, ACME, "GET", &format!("{path}?byTitle=Target"), None).await;
        assert_eq!(all_ids(&a).len(), 2, "{path}: {:#}", a.body);
        assert_eq!(a.body["count"], 2, "{path}: {:#}", a.body);
        assert!(a.body.get("next").is_none(), "{path}: {:#}", a.body);
        let titles: Vec<&str> = a.body["all"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["Target", "Target"], "{path}");
        let a = ok(&s, ACME, "GET", &format!("{path}?byTitle=Other"), None).await;
        assert_eq!(a.body["count"], 2, "{path}: {:#}", a.body);
        let next = a.body["next"].as_str().expect("a third match").to_string();
        let a = ok(&s, ACME, "GET", &format!("{path}?byTitle=Other&after={next}"), None).await;
        assert_eq!(a.body["count"], 1, "{path}: {:#}", a.body);
        assert!(a.body.get("next").is_none(), "{path}: {:#}", a.body);
        // byResourcePoolId: every agenda matches pool-east, none another pool.
        let a = ok(&s, ACME, "GET", &format!("{path}?byResourcePoolId=pool-west"), None).await;
        assert_eq!((a.body["count"].clone(), a.body.get("next")), (json!(0), None));
        let a = ok(&s, ACME, "GET", &format!("{path}?byResourcePoolId=pool-east"), None).await;
        assert_eq!(a.body["count"], 2, "{path}: {:#}", a.body);
        assert!(a.body["next"].is_string(), "{path}: {:#}", a.body);
    }
    let a = ok(&s, ACME, "GET", "/pop/agenda?byTitle=Target", None).await;
    assert_eq!(all_ids(&a), ["a-4", "a-5"]);
}

#[tokio::test]
async fn limits_apply_as_on_graphql() {
    let s = start(ApiConfig { max_body_bytes: 1_000, ..ApiConfig::default() }).await;
    let big = json!({"id": "c", "title": "x".repeat(2_000)});
    let a = call(&s, ADMIN, "POST", "/pop/customer", Some(big)).await;
    envelope(&a, 413, "BAD_REQUEST");
    let many: String = (0..20).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&");
    let a = call(&s, ADMIN, "GET", &format!("/pop/customer?{many}"), None).await;
    envelope(&a, 400, "BAD_REQUEST");
    let a = call(&s, ADMIN, "GET", "/pop/customer?byId=a&BYID=b", None).await;
    envelope(&a, 400, "VALIDATION");
    let a =
        call(&s, ADMIN, "GET", &format!("/pop/agenda?byLinkId={}", "l".repeat(4_097)), None).await;
    envelope(&a, 400, "VALIDATION");
}

/// Lists and a batch's ProgressSummary stop at the response budget of `POST /graphql`
/// (`max_response_bytes`) with RESPONSE_TOO_LARGE; `byFields` shrinks what is counted.
#[tokio::test]
async fn answers_past_the_response_budget_are_refused_as_too_large() {
    let s = start(ApiConfig { max_response_bytes: 1_200, ..ApiConfig::default() }).await;
    let after = s.seed().await;
    for _ in 0..4 {
        s.submit(ACME, "acme", "budget", &after).await;
    }
    let position = s.submit(ACME, "acme", "budget", &after).await.1;
    let wait = format!("atLeastPosition={position}");
    for path in [
        format!("/pop/agenda?byLinkId=budget&{wait}"),
        format!("/pop/progress/agenda?byLinkId=budget&{wait}"),
        format!("/pop/progress/agenda/service?linkId=budget&{wait}"),
    ] {
        let a = call(&s, ACME, "GET", &path, None).await;
        envelope(&a, 422, "RESPONSE_TOO_LARGE");
    }
    let a =
        ok(&s, ACME, "GET", &format!("/pop/agenda?byLinkId=budget&byFields=id&{wait}"), None).await;
    assert_eq!(a.body["count"], json!(5), "{:#}", a.body);
}

/// Sends `head` and `body` over a raw connection, closes the sending half (the upload breaks
/// off) and returns the status and body of the answer.
async fn raw_request(s: &TestServer, head: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("{head}\r\nhost: {addr}\r\n\r\n{body}").as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let json = answer.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(json).unwrap_or_else(|_| panic!("not JSON: {answer}")))
}

#[tokio::test]
async fn a_broken_body_is_a_400_and_only_an_oversized_one_a_413() {
    let s = start(ApiConfig { max_body_bytes: 1_000, ..ApiConfig::default() }).await;
    let auth = format!("authorization: Bearer {ADMIN}\r\ncontent-type: application/json");
    // 100 bytes declared, 12 sent, then the upload stops.
    let head = format!("POST /pop/customer HTTP/1.1\r\n{auth}\r\ncontent-length: 100");
    let (status, body) = raw_request(&s, &head, r#"{"id": "c", "#).await;
    assert_eq!(status, 400, "{body:#}");
    let e = &body["errorResponse"];
    assert_eq!((e["code"].as_str(), &e["responseCode"]), (Some("BAD_REQUEST"), &json!(400)));
    let text = e["description"].as_str().unwrap();
    assert!(text.contains("could not be read"), "{text}");
    // A chunked body that breaks off mid-chunk: the same.
    let head = format!("POST /pop/customer HTTP/1.1\r\n{auth}\r\ntransfer-encoding: chunked");
    let (status, body) = raw_request(&s, &head, "20\r\n{\"id\": \"c\"").await;
    assert_eq!(status, 400, "{body:#}");
    // A chunked body over the limit is a 413, as is a declared one.
    let chunk = "x".repeat(1_500);
    let (status, body) =
        raw_request(&s, &head, &format!("{:x}\r\n{chunk}\r\n0\r\n\r\n", chunk.len())).await;
    assert_eq!(status, 413, "{body:#}");
    assert_eq!(body["errorResponse"]["code"], "BAD_REQUEST");
    // GraphQL answers the same statuses.
    let head = format!("POST /graphql HTTP/1.1\r\n{auth}\r\ncontent-length: 100");
    let (status, body) = raw_request(&s, &head, r#"{"query": "#).await;
    assert_eq!(status, 400, "{body:#}");
}

/// A POP executor's report of five results of 450 KB each (JSON text, as POP sends it), at
/// the default limits: every result is within what an agenda keeps, so the report is taken
/// whole (popclient57 M1: a 2 MiB body limit refused it 413, and the executor sent it again
/// until the agenda timed out).
#[tokio::test]
async fn a_report_of_results_an_agenda_keeps_is_never_too_large_a_body() {
    let (s, _) = scheduled().await;
    // As long a linkId as a client may choose (a URL, popclient57 M2), found by it.
    let link = format!("https://in.example/a.mp4/{}", "X-Amz-Signature-0a1b2c.".repeat(177));
    assert_eq!(link.chars().count(), pop_domain::validate::MAX_KEY_LENGTH, "{}", link.len());
    let names: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
    let operations: Vec<Value> =
        names.iter().map(|n| json!({"name": n, "type": "ffmpeg", "payload": {}})).collect();
    ok(
        &s,
        ACME,
        "POST",
        "/pop/agenda",
        Some(json!({"id": "big-results", "customerId": "acme", "operations": operations,
            "linkId": link})),
    )
    .await;
    wait_queued(&s, 1).await;
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/getAgenda",
        Some(json!({"insightId": "insight-transcode", "count": 1})),
    )
    .await;
    assert_eq!(a.body["count"], 1, "{:#}", a.body);
    let result = |i: usize| json!({"data": format!("{i}{}", "x".repeat(450_000))}).to_string();
    let report = json!({"agendaProgress": {"id": "big-results", "processingState": "EXECUTING",
        "operationProgress": names.iter().enumerate().map(|(i, n)| json!({
            "operation": n, "processingState": "COMPLETE", "processingStateMessage": "succeeded",
            "resultPayload": result(i)})).collect::<Vec<_>>()}});
    assert!(report.to_string().len() > 2 << 20, "more than the old limit");
    let a = ok(
        &s,
        ACME_SERVICE,
        "POST",
        "/pop/resourcepool/service/updateAgendaProgress",
        Some(report),
    )
    .await;
    assert_eq!(a.body["all"][0]["percentComplete"], 100.0, "{}", a.body["all"][0]);
    let at = a.position.clone().unwrap();
    for (i, n) in names.iter().enumerate() {
        let path = format!("/pop/progress/operation/big-results-{n}?atLeastPosition={at}");
        let op = ok(&s, ACME, "GET", &path, None).await;
        let kept = &op.body["all"][0];
        assert_eq!(kept["processingStateMessage"], "succeeded", "{n}");
        assert_eq!(kept["resultPayload"].as_str(), Some(result(i).as_str()), "{n}");
    }
    let path = format!("/pop/progress/agenda?bylinkId={link}&atLeastPosition={at}");
    let found = ok(&s, ACME, "GET", &path, None).await;
    assert_eq!(found.body["all"][0]["agendaId"], "big-results", "{:#}", found.body);
}

#[tokio::test]
async fn the_openapi_document_is_checked_in_and_names_every_route() {
    let s = start(ApiConfig::default()).await;
    // Served without a token: it describes the API, not any data.
    let a = call_with(&s, None, "GET", "/pop/openapi.json", None, &[]).await;
    assert_eq!(a.status, 200);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated =
        format!("{}\n", serde_json::to_string_pretty(&pop_api::rest::openapi::document()).unwrap());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "api/openapi.json is out of date; run `UPDATE_OPENAPI=1 cargo test -p pop-api --test pop_rest openapi` and review the diff"
    );
    assert_eq!(
        a.body,
        serde_json::from_str::<Value>(&checked_in).unwrap(),
        "the served document is the checked-in one"
    );
    assert_eq!(a.body["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    // Every code an error body may carry is in the contract (popclient17: QUOTA_EXCEEDED,
    // BUSY, UNAVAILABLE and RESPONSE_TOO_LARGE, which /pop answers, were not).
    let codes = &a.body["components"]["schemas"]["ErrorResponse"]["properties"]["errorResponse"]["properties"]
        ["code"]["enum"];
    for code in pop_app::Code::ALL.iter().map(|c| c.as_str()).chain(["METHOD_NOT_ALLOWED"]) {
        assert!(codes.as_array().is_some_and(|c| c.contains(&json!(code))), "{code}: {codes}");
    }

    // Every route and each of its methods (answered or refused) is documented, and nothing else.
    let paths = a.body["paths"].as_object().unwrap();
    let mut documented = 0;
    for route in pop_api::rest::ROUTES {
        let doc =
            &paths.get(route.path).unwrap_or_else(|| panic!("{} is not documented", route.path));
        for m in route.methods.iter().chain(route.refused.iter().map(|(m, _)| m)) {
            let op = &doc[m.to_ascii_lowercase()];
            assert!(op.is_object(), "{m} {} is not documented", route.path);
            documented += 1;
        }
        for (m, _) in route.refused {
            assert!(
                doc[m.to_ascii_lowercase()]["responses"]["405"].is_object(),
                "{m} {} must document its 405",
                route.path
            );
        }
        // And the route is really served: an anonymous call is never a routing 404.
        let a = call_with(
            &s,
            None,
            route.methods[0],
            &route.path.replace("{id}", "x"),
            Some("{}"),
            &[],
        )
        .await;
        assert_ne!(a.status, 404, "{} is not routed", route.path);
    }
    let operations: usize = paths
        .values()
        .map(|p| p.as_object().unwrap().keys().filter(|k| *k != "parameters").count())
        .sum();
    assert_eq!(operations, documented, "the document has operations the router does not serve");
    assert_eq!(paths.len(), pop_api::rest::ROUTES.len());

    // Counted by route template and status in /metrics.
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|l| l.starts_with("pop_api_rest_requests_total")
            && l.contains("route=\"/pop/openapi.json\"")
            && l.contains("status=\"200\"")),
        "{text}"
    );
}

/// An admin of two customers that both use the id `job-1` names the customer with
/// `byCustomerId` on the item routes (also with `asOf`) and on operation progress.
#[tokio::test]
async fn an_admin_names_the_customer_of_an_id_two_customers_use() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    for customer in ["acme", "globex"] {
        let mut agenda = agenda(customer, &format!("link-{customer}"));
        agenda["id"] = json!("job-1");
        let path = format!("/pop/agenda?atLeastPosition={after}");
        ok(&s, ADMIN, "POST", &path, Some(agenda)).await;
    }
    for (customer, link) in [("acme", "link-acme"), ("globex", "link-globex")] {
        let a =
            ok(&s, ADMIN, "GET", &format!("/pop/agenda/job-1?byCustomerId={customer}"), None).await;
        assert_eq!(a.body["count"], json!(1), "{:#}", a.body);
        assert_eq!(a.body["all"][0]["linkId"], json!(link), "{:#}", a.body);
        let path = format!("/pop/agenda/job-1?asOf=999999&byCustomerId={customer}");
        let a = call(&s, ADMIN, "GET", &path, None).await;
        // Past the end of the log is refused as such, not for a missing customer.
        assert!(!a.body.to_string().contains("name the customer"), "{:#}", a.body);
        let path = format!("/pop/progress/operation?byAgendaId=job-1&byCustomerId={customer}");
        let a = ok(&s, ADMIN, "GET", &path, None).await;
        assert_eq!(a.body["count"], json!(2), "two operations of {customer}'s job-1: {:#}", a.body);
    }
    let path = "/pop/progress/operation?byAgendaId=job-1";
    let a = call(&s, ADMIN, "GET", path, None).await;
    assert!(a.body.to_string().contains("name the customer"), "{:#}", a.body);
}

/// `pop serve --pop-errors-in-body`: POP's Java clients read no body on a 4xx or 5xx (they log
/// "Server returned HTTP response code: 400"), as POP's own endpoints answered service errors
/// with 200 and the envelope. With the switch every error under `/pop` is a 200 carrying the
/// envelope, its `responseCode` the honest status, with the code, the field and the cid; off
/// (the default), the status is honest.
#[tokio::test]
async fn pop_errors_in_body_answers_the_envelope_with_200() {
    for (errors_in_body, status) in [(true, 200), (false, 400)] {
        let s =
            start(ApiConfig { pop_errors_in_body: errors_in_body, ..ApiConfig::default() }).await;
        s.seed().await;
        let report = json!({"agendaProgress": {"processingState": "EXECUTING"}});
        let path = "/pop/resourcepool/service/updateAgendaProgress";
        let a = call(&s, ADMIN, "POST", path, Some(report)).await;
        assert_eq!(a.status, status, "{:#}", a.body);
        let error = &a.body["errorResponse"];
        assert_eq!(error["code"], "VALIDATION", "{:#}", a.body);
        assert_eq!(error["responseCode"], 400, "{:#}", a.body);
        assert_eq!(error["problems"][0]["field"], "agendaProgress.id", "{:#}", a.body);
        assert_eq!(a.body["error"], true);
        assert_eq!(a.body["cid"].as_str(), a.cid.as_deref(), "{:#}", a.body);
        // An id that matches nothing: POP answered an empty list, not an error, and its
        // clients tell "gone" from "failed" by it (popclient58 L1); a delete of one was no
        // error either, so a delete run twice passes. Another customer's id answers alike.
        let other = json!({"id": "globex-only", "customerId": "globex", "title": "g",
            "resourcePoolId": "pool-1", "queueSize": 1, "mappers": {"operationType": ["x"]}});
        ok(&s, ADMIN, "POST", "/pop/insight", Some(other)).await;
        for path in
            ["/pop/agenda/nobody-uses-this", "/pop/insight/nobody", "/pop/insight/globex-only"]
        {
            let missing = call(&s, ACME, "GET", path, None).await;
            if errors_in_body {
                assert_eq!(missing.status, 200, "{path}: {:#}", missing.body);
                assert_eq!(missing.body["count"], 0, "{path}: {:#}", missing.body);
                assert_eq!(missing.body["all"], json!([]), "{path}: {:#}", missing.body);
                assert!(missing.body.get("errorResponse").is_none(), "{:#}", missing.body);
            } else {
                assert_eq!(missing.status, 404, "{path}: {:#}", missing.body);
                assert_eq!(
                    missing.body["errorResponse"]["code"], "NOT_FOUND",
                    "{:#}",
                    missing.body
                );
            }
        }
        for path in ["/pop/insight/nobody", "/pop/insight/globex-only"] {
            let deleted = call(&s, ACME_ADMIN, "DELETE", path, None).await;
            let want = if errors_in_body { 200 } else { 404 };
            assert_eq!(deleted.status, want, "{path}: {:#}", deleted.body);
            assert_eq!(
                deleted.body.get("errorResponse").is_none(),
                errors_in_body,
                "{:#}",
                deleted.body
            );
        }
        // Still there for its own customer.
        ok(&s, ADMIN, "GET", "/pop/insight/globex-only", None).await;
    }
}

/// An agenda's operation progress pages like every other list when asked to (`byLimit`,
/// `limit`, `after`): a POP query with a limit was refused (400) on this route alone; without
/// one, the whole agenda's operations as before.
#[tokio::test]
async fn operation_progress_lists_page_when_asked() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let mut agenda = agenda("acme", "paged");
    agenda["id"] = json!("paged-1");
    ok(&s, ADMIN, "POST", &format!("/pop/agenda?atLeastPosition={after}"), Some(agenda)).await;
    let all = ok(&s, ACME, "GET", "/pop/progress/operation?byAgendaId=paged-1", None).await;
    assert_eq!(all.body["count"], json!(2), "{:#}", all.body);
    assert!(all.body.get("next").is_none(), "{:#}", all.body);
    let first =
        ok(&s, ACME, "GET", "/pop/progress/operation?byAgendaId=paged-1&byLimit=1", None).await;
    assert_eq!(first.body["count"], json!(1), "{:#}", first.body);
    let next = first.body["next"].as_str().unwrap().to_string();
    let path = format!("/pop/progress/operation?byAgendaId=paged-1&limit=1&after={next}");
    let second = ok(&s, ACME, "GET", &path, None).await;
    assert_eq!(second.body["count"], json!(1), "{:#}", second.body);
    assert!(second.body.get("next").is_none(), "{:#}", second.body);
    let names: Vec<&Value> =
        [&first, &second].iter().map(|a| &a.body["all"][0]["operation"]).collect();
    assert_eq!(
        names,
        all.body["all"].as_array().unwrap().iter().map(|o| &o["operation"]).collect::<Vec<_>>()
    );
    let bad =
        call(&s, ACME, "GET", "/pop/progress/operation?byAgendaId=paged-1&after=soon", None).await;
    assert_eq!(bad.status, 400, "{:#}", bad.body);
    assert_eq!(bad.body["errorResponse"]["problems"][0]["field"], "after", "{:#}", bad.body);
    // Both spellings of the page size, disagreeing: refused, not one of them silently taken.
    let both = "/pop/progress/operation?byAgendaId=paged-1&limit=1&byLimit=2";
    let both = call(&s, ACME, "GET", both, None).await;
    assert_eq!(both.status, 400, "{:#}", both.body);
    assert_eq!(both.body["errorResponse"]["problems"][0]["field"], "limit", "{:#}", both.body);
    let same = ok(&s, ACME, "GET", "/pop/agenda?limit=1&byLimit=1", None).await;
    assert_eq!(same.body["count"], json!(1), "{:#}", same.body);
}
