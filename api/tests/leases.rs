//! Lease identity (issue 12, item 4): `getAgenda` answers each agenda's lease (id and expiry,
//! GraphQL and REST), and a report that names a superseded lease is refused with CONFLICT even
//! when it comes from the same service token as the new holder — executors sharing one token
//! no longer count as one holder. Time moves by passing `now` to the reclaimer; nothing sleeps.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::Utc;
use pop_api::ApiConfig;
use pop_projections::Phase;
use pop_reapers::ReclaimerConfig;
use pop_reapers::reclaimer::{execute, plan};
use pop_reapers::scheduler::{Memory, pass};
use serde_json::{Value, json};
use support::*;

const CLAIM: &str = "mutation { getAgenda(insightId: \"transcode\", count: 1) \
    { agenda { id } lease { id expires } } }";

const REPORT: &str = "mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) \
    { progress { processingState processingStateMessage } lease { id } } }";

fn failed(id: &str) -> Value {
    json!({"id": id, "processingState": "COMPLETE", "processingStateMessage": "failed",
           "operationProgress": [{"operation": "probe", "processingState": "COMPLETE",
                                  "processingStateMessage": "failed"}]})
}

/// Runs a scheduler pass once the read models have `position`, and waits until they show the
/// agenda queued.
async fn queue(s: &TestServer, id: &str, position: &str) {
    let projections = s.state.projections();
    projections.wait_for(position.parse().unwrap(), WAIT).await.unwrap();
    let moved = pass(&s.commands, projections, &mut Memory::default()).await.unwrap();
    projections.wait_for(moved, WAIT).await.unwrap();
    let models = projections.read();
    assert_eq!(models.agendas().with_id(id).next().unwrap().phase(), Phase::Queued);
}

#[tokio::test]
async fn a_report_under_a_superseded_lease_is_refused_even_from_the_same_token() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let (id, position) = s.submit(ACME, "acme", "lease", &after).await;
    queue(&s, &id, &position).await;

    // The first executor of the pool's token claims it and learns its lease.
    let first = s.ok(ACME_SERVICE, CLAIM, json!({})).await;
    let claimed = &first["getAgenda"][0];
    assert_eq!(claimed["agenda"]["id"], json!(id));
    let stale_lease = claimed["lease"]["id"].as_str().unwrap().to_string();
    let expires: chrono::DateTime<Utc> =
        claimed["lease"]["expires"].as_str().unwrap().parse().unwrap();
    let lease = chrono::Duration::from_std(s.state.config().lease).unwrap();
    assert!(expires > Utc::now() && expires <= Utc::now() + lease, "{expires}");

    // It goes silent; the lease expires and the reclaimer requeues the agenda (planning from
    // read models that have the claim).
    s.state.projections().wait_for(s.commands.written(), WAIT).await.unwrap();
    let later = expires + chrono::Duration::seconds(1);
    let actions = plan(later, &s.state.projections().read(), &ReclaimerConfig::default());
    assert_eq!(actions.len(), 1);
    let report = execute(&s.commands, later, &actions, None).await;
    assert_eq!(report.requeued, 1, "{report:?}");
    let head = s.commands.written().to_string();
    queue(&s, &id, &head).await;

    // A second executor with the same token claims it under a new lease.
    let second = s.ok(ACME_SERVICE, CLAIM, json!({})).await;
    let fresh_lease = second["getAgenda"][0]["lease"]["id"].as_str().unwrap().to_string();
    assert_ne!(fresh_lease, stale_lease);

    // The first executor wakes up and reports failure under its old lease: refused.
    let e = s.err(ACME_SERVICE, REPORT, json!({"p": failed(&id), "l": stale_lease})).await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");
    // The same report inside the AgendaProgress (`leaseId`) is refused the same way.
    let mut inside = failed(&id);
    inside["leaseId"] = json!(stale_lease);
    let e = s.err(ACME_SERVICE, REPORT, json!({"p": inside})).await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");

    // The current holder's report goes through and renews its lease.
    let executing = json!({"id": id, "processingState": "EXECUTING",
        "operationProgress": [{"operation": "probe", "processingState": "EXECUTING", "percentComplete": 10}]});
    let ok = s.ok(ACME_SERVICE, REPORT, json!({"p": executing, "l": fresh_lease})).await;
    let result = &ok["updateAgendaProgress"];
    assert_eq!(result["progress"]["processingState"], json!("EXECUTING"));
    assert_eq!(result["lease"]["id"], json!(fresh_lease));
}

#[tokio::test]
async fn rest_get_agenda_answers_the_lease_as_an_extra_field() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let (id, position) = s.submit(ACME, "acme", "rest-lease", &after).await;
    queue(&s, &id, &position).await;
    let response = s
        .http
        .post(format!("{}/pop/resourcepool/service/getAgenda", s.base))
        .bearer_auth(ACME_SERVICE)
        .json(&json!({"insightId": "transcode", "count": "1"}))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let agenda = &body["all"][0];
    assert_eq!(agenda["id"], json!(id));
    assert!(agenda["lease"]["id"].as_str().is_some_and(|l| !l.is_empty()), "{body:#}");
    assert!(agenda["lease"]["expires"].as_i64().is_some_and(|ms| ms > 0), "{body:#}");
}

const RELEASE: &str = "mutation($a: String!, $l: String!) { releaseAgenda(agendaId: $a, leaseId: $l) \
    { progress { processingState processingStateMessage attemptsCompleted } lease { id } } }";

#[tokio::test]
async fn release_hands_the_agenda_back_at_once_under_its_lease_only() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let (id, position) = s.submit(ACME, "acme", "release", &after).await;
    queue(&s, &id, &position).await;
    let claimed = s.ok(ACME_SERVICE, CLAIM, json!({})).await;
    let lease = claimed["getAgenda"][0]["lease"]["id"].as_str().unwrap().to_string();

    // Another token, or a wrong lease, cannot hand it back.
    let e = s.err(ACME_SERVICE_2, RELEASE, json!({"a": id, "l": lease})).await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");
    let e = s.err(ACME_SERVICE, RELEASE, json!({"a": id, "l": "not-the-lease"})).await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");

    // The holder can: back to `added` at once, no attempt consumed, no lease.
    let done = s.ok(ACME_SERVICE, RELEASE, json!({"a": id, "l": lease})).await;
    let result = &done["releaseAgenda"];
    assert_eq!(result["progress"]["processingStateMessage"], json!("added"));
    assert_eq!(result["progress"]["attemptsCompleted"], json!(0));
    assert_eq!(result["lease"], Value::Null);
    // The scheduler queues it again and it can be claimed under a new lease.
    let head = s.commands.written().to_string();
    queue(&s, &id, &head).await;
    let again = s.ok(ACME_SERVICE_2, CLAIM, json!({})).await;
    assert_eq!(again["getAgenda"][0]["agenda"]["id"], json!(id));
}
