//! Batched work calls (issue 18): a puller claims many agendas in one `getAgenda` and reports
//! on many in one `updateAgendaProgresses` (GraphQL) or `POST
//! /pop/resourcepool/service/updateAgendaProgresses` (REST). Each report is still one command
//! on its agenda and is answered on its own: results in request order, an item's error with
//! its code, the field path inside the request and the request's cid, without failing the
//! others; reports on one agenda are taken in request order. The list's bounds and the role
//! are checked for the request as a whole.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pop_api::ApiConfig;
use pop_projections::Phase;
use serde_json::{Value, json};
use support::*;

const GET_AGENDA: &str = "mutation($n: Int!) { getAgenda(insightId: \"transcode\", count: $n) \
    { agenda { id } lease { id } } }";
const REPORTS: &str = "mutation($r: [ReportInput!]!, $cid: String) { updateAgendaProgresses(\
    reports: $r, cid: $cid) { index result { progress { id processingState \
    processingStateMessage } position } error { code message problems { field message } cid } } }";

/// Three acme agendas submitted, queued by the scheduler and claimed in one `getAgenda`;
/// (agenda id, lease id) in claim order.
async fn three_claimed(s: &TestServer) -> Vec<(String, String)> {
    let at = s.seed().await;
    pop_reapers::scheduler::spawn(
        Arc::clone(&s.commands),
        s.state.projections().clone(),
        std::future::pending(),
    );
    for link in ["l1", "l2", "l3"] {
        s.submit(ACME, "acme", link, &at).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.state.projections().read().agendas().count_in("transcode", Phase::Queued) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Claim many in one request: one Claim command per agenda.
    let data = s.ok(ACME_SERVICE, GET_AGENDA, json!({"n": 3})).await;
    let claimed: Vec<(String, String)> = data["getAgenda"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["agenda"]["id"].as_str().unwrap().into(), c["lease"]["id"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(claimed.len(), 3, "{data:#}");
    claimed
}

fn report(id: &str, state: &str, ops: &[(&str, &str)]) -> Value {
    let ops: Vec<Value> = ops
        .iter()
        .map(|(op, st)| {
            let percent = if *st == "COMPLETE" { 100 } else { 50 };
            let message = if *st == "COMPLETE" { "succeeded" } else { "running" };
            json!({"operation": op, "processingState": st, "processingStateMessage": message,
                "percentComplete": percent})
        })
        .collect();
    let message = if state == "COMPLETE" { "succeeded" } else { "Running Operations" };
    json!({"id": id, "processingState": state, "processingStateMessage": message,
        "operationProgress": ops})
}

#[tokio::test]
async fn many_reports_in_one_graphql_request_are_answered_item_by_item() {
    let s = start(ApiConfig::default()).await;
    let claimed = three_claimed(&s).await;
    let (a1, l1) = &claimed[0];
    let (a2, _) = &claimed[1];
    let reports = json!([
        // Two reports on one agenda: taken in request order, so it ends COMPLETE.
        {"agendaProgress": report(a1, "EXECUTING", &[("probe", "EXECUTING")]), "leaseId": l1},
        {"agendaProgress": report(a1, "COMPLETE", &[("probe", "COMPLETE"), ("encode", "COMPLETE")]),
            "leaseId": l1},
        // Under a lease that is not the agenda's: refused, the others still go through.
        {"agendaProgress": report(a2, "EXECUTING", &[("probe", "EXECUTING")]),
            "leaseId": "not-the-lease"},
        // No AgendaProgress id: VALIDATION naming the field inside the request.
        {"agendaProgress": {"processingState": "EXECUTING"}},
    ]);
    let data = s.ok(ACME_SERVICE, REPORTS, json!({"r": reports, "cid": "batch-1"})).await;
    let items = data["updateAgendaProgresses"].as_array().unwrap();
    let indexes: Vec<i64> = items.iter().map(|i| i["index"].as_i64().unwrap()).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3], "{data:#}");
    assert_eq!(items[0]["result"]["progress"]["processingState"], "EXECUTING", "{data:#}");
    assert_eq!(items[1]["result"]["progress"]["processingState"], "COMPLETE", "{data:#}");
    assert_eq!(items[1]["result"]["progress"]["processingStateMessage"], "succeeded");
    assert!(items[0]["error"].is_null() && items[1]["error"].is_null(), "{data:#}");
    assert!(items[2]["result"].is_null(), "{data:#}");
    assert_eq!(items[2]["error"]["code"], "CONFLICT", "{data:#}");
    assert_eq!(items[2]["error"]["cid"], "batch-1");
    assert!(items[3]["result"].is_null(), "{data:#}");
    assert_eq!(items[3]["error"]["code"], "VALIDATION", "{data:#}");
    assert_eq!(items[3]["error"]["problems"][0]["field"], "reports[3].agendaProgress.id");
    assert_eq!(items[3]["error"]["cid"], "batch-1");
}

#[tokio::test]
async fn many_reports_through_the_rest_surface_and_the_bounds_of_a_batch() {
    let s = start(ApiConfig::default()).await;
    let claimed = three_claimed(&s).await;
    let (a2, l2) = &claimed[1];
    let (a3, l3) = &claimed[2];
    let url = format!("{}/pop/resourcepool/service/updateAgendaProgresses", s.base);
    let body = json!({"cid": "rest-batch", "reports": [
        {"agendaProgress": report(a2, "EXECUTING", &[("probe", "EXECUTING")]), "leaseId": l2},
        {"agendaProgress": report("no-such-agenda", "EXECUTING", &[("probe", "EXECUTING")])},
        {"agendaProgress": report(a3, "EXECUTING", &[("probe", "EXECUTING")]), "leaseId": l3},
    ]});
    let response = s.http.post(&url).bearer_auth(ACME_SERVICE).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!((answer["count"].as_u64(), answer["failed"].as_u64()), (Some(3), Some(1)));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["agendaProgress"]["processingState"], "EXECUTING", "{answer:#}");
    assert!(results[0]["position"].is_string(), "{answer:#}");
    assert_eq!(results[1]["error"]["code"], "NOT_FOUND", "{answer:#}");
    assert_eq!(results[1]["error"]["cid"], "rest-batch");
    assert_eq!(results[2]["agendaProgress"]["processingState"], "EXECUTING", "{answer:#}");

    // Bounds and roles apply to the request as a whole.
    let one = json!({"agendaProgress": report(a2, "EXECUTING", &[])});
    for (reports, why) in [(json!([]), "empty"), (json!(vec![one.clone(); 101]), "too many")] {
        let e = s.err(ACME_SERVICE, REPORTS, json!({"r": reports})).await;
        assert_eq!(code(&e), "VALIDATION", "{why}: {e:#}");
        assert!(e["message"].as_str().unwrap().contains("reports"), "{why}: {e:#}");
    }
    let e = s.err(ACME, REPORTS, json!({"r": [one]})).await;
    assert_eq!(code(&e), "FORBIDDEN", "{e:#}");
    let response = s
        .http
        .post(&url)
        .bearer_auth(ACME_SERVICE)
        .json(&json!({"reports": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

/// A REST batch's answer keeps the response byte budget: once it is spent, a report is
/// answered with its agenda's state alone and a note (hostile42 H1: 60 heartbeats of one
/// large agenda were answered with 60 whole copies of it, 281 MB).
#[tokio::test]
async fn a_rest_batchs_answer_keeps_the_byte_budget() {
    let s = start(ApiConfig { max_response_bytes: 1_500, ..ApiConfig::default() }).await;
    let claimed = three_claimed(&s).await;
    let (a2, l2) = &claimed[1];
    let url = format!("{}/pop/resourcepool/service/updateAgendaProgresses", s.base);
    let one = json!({"agendaProgress": report(a2, "EXECUTING", &[("probe", "EXECUTING")]),
        "leaseId": l2});
    let body = json!({"reports": vec![one; 6]});
    let response = s.http.post(&url).bearer_auth(ACME_SERVICE).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let answer: Value = serde_json::from_str(&text).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{answer:#}");
    assert!(results[0]["agendaProgress"]["operationProgress"].is_array(), "{answer:#}");
    let last = &results[5];
    assert!(last.get("agendaProgress").is_none(), "{answer:#}");
    let omitted = &last["agendaProgressOmitted"];
    assert_eq!(omitted["processingState"], "EXECUTING", "{answer:#}");
    assert_eq!(omitted["agendaId"], a2.as_str(), "{answer:#}");
    assert!(omitted["reason"].as_str().unwrap().contains("1500 bytes"), "{answer:#}");
    assert!(text.len() < 1_500 + 6 * 400, "{}", text.len());
}
