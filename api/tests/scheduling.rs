//! Scheduling through the API over real HTTP: the scheduler tops the insight's queue up,
//! `getAgenda` hands each queued agenda out once under a lease, `updateAgendaProgress`
//! reports executing and completion (success and failure), only the lease holder may report,
//! and concurrent pullers never receive the same agenda. Waits are bounded (`support::WAIT`).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pop_api::ApiConfig;
use pop_projections::Phase;
use serde_json::{Value, json};
use support::*;

const GET_AGENDA: &str = "mutation($i: String!, $n: Int!) { getAgenda(insightId: $i, count: $n) { agenda { id } progress { id processingState processingStateMessage operationProgress { operation processingState } } position } }";

const UPDATE: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { progress { id processingState processingStateMessage percentComplete operationProgress { operation processingState processingStateMessage } } position } }";

/// Pause between polls of the read models.
const POLL: Duration = Duration::from_millis(20);

/// Agendas submitted for the concurrency test.
const AGENDAS: usize = 50;

/// Concurrent `getAgenda` callers in the concurrency test.
const PULLERS: usize = 8;

/// Most `getAgenda` calls one puller makes before giving up.
const MAX_PULLS: usize = 500;

/// Starts a seeded server with the scheduler running.
async fn scheduled_server() -> (TestServer, String) {
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    pop_reapers::scheduler::spawn(
        Arc::clone(&s.commands),
        s.state.projections().clone(),
        std::future::pending(),
    );
    (s, seeded)
}

/// Waits (bounded) until insight `transcode` has `n` queued agendas.
async fn wait_queued(s: &TestServer, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queued = s.state.projections().read().agendas().count_in("transcode", Phase::Queued);
        if queued == n {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{queued} queued, want {n}");
        tokio::time::sleep(POLL).await;
    }
}

fn state(p: &Value) -> (&str, &str) {
    (
        p["processingState"].as_str().unwrap_or_default(),
        p["processingStateMessage"].as_str().unwrap_or_default(),
    )
}

async fn get_agenda(s: &TestServer, token: &str, count: i32) -> Vec<Value> {
    let data = s.ok(token, GET_AGENDA, json!({"i": "transcode", "n": count})).await;
    data["getAgenda"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("getAgenda is not a list: {data:#}"))
}

#[tokio::test]
async fn submit_queue_get_agenda_report_and_succeed() {
    let (s, seeded) = scheduled_server().await;
    let (id, _) = s.submit(ACME, "acme", "batch-1", &seeded).await;
    wait_queued(&s, 1).await;

    let got = get_agenda(&s, ACME_SERVICE, 5).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["agenda"]["id"], id.as_str());
    assert_eq!(state(&got[0]["progress"]), ("WAITING", "scheduled"));
    assert_eq!(got[0]["progress"]["operationProgress"].as_array().unwrap().len(), 2);
    // Handed out once: a second caller (or the same) gets nothing while the lease holds.
    assert!(get_agenda(&s, ACME_SERVICE_2, 5).await.is_empty());
    assert!(get_agenda(&s, ACME_SERVICE, 5).await.is_empty());

    // `id` is required.
    let e = s.err(ACME_SERVICE, UPDATE, json!({"p": {"processingState": "EXECUTING"}})).await;
    assert_eq!(code(&e), "VALIDATION", "{e:#}");
    assert_eq!(e["extensions"]["problems"][0]["field"], "agendaProgress.id", "{e:#}");

    let data = s
        .ok(
            ACME_SERVICE,
            UPDATE,
            json!({"p": {"id": id, "processingState": "EXECUTING", "processingStateMessage": "Running Operations",
                "operationProgress": [{"operation": "probe", "processingState": "EXECUTING", "percentComplete": 50}]}}),
        )
        .await;
    let p = &data["updateAgendaProgress"]["progress"];
    assert_eq!(state(p), ("EXECUTING", "Running Operations"), "{p:#}");
    assert_eq!(p["operationProgress"][0]["processingState"], "EXECUTING");

    // Another worker is not the lease holder.
    let e = s
        .err(
            ACME_SERVICE_2,
            UPDATE,
            json!({"p": {"id": id, "processingState": "COMPLETE", "processingStateMessage": "failed"}}),
        )
        .await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");
    // A user may not report at all; an agenda the caller cannot see is NOT_FOUND.
    let e = s.err(ACME, UPDATE, json!({"p": {"id": id}})).await;
    assert_eq!(code(&e), "FORBIDDEN", "{e:#}");
    let e = s.err(ACME_SERVICE, UPDATE, json!({"p": {"id": "no-such-agenda"}})).await;
    assert_eq!(code(&e), "NOT_FOUND", "{e:#}");

    let data = s
        .ok(
            ACME_SERVICE,
            UPDATE,
            json!({"p": {"id": id, "processingState": "COMPLETE", "processingStateMessage": "succeeded",
                "operationProgress": [
                    {"operation": "probe", "processingState": "COMPLETE", "processingStateMessage": "succeeded"},
                    {"operation": "encode", "processingState": "COMPLETE", "processingStateMessage": "succeeded"}
                ]}}),
        )
        .await;
    let p = &data["updateAgendaProgress"]["progress"];
    assert_eq!(state(p), ("COMPLETE", "succeeded"), "{p:#}");
    assert_eq!(p["percentComplete"], 100.0, "{p:#}");
    // A late report after completion is refused.
    let e =
        s.err(ACME_SERVICE, UPDATE, json!({"p": {"id": id, "processingState": "EXECUTING"}})).await;
    assert_eq!(code(&e), "CONFLICT", "{e:#}");
}

#[tokio::test]
async fn a_failed_operation_fails_the_agenda() {
    let (s, seeded) = scheduled_server().await;
    let (id, _) = s.submit(ACME, "acme", "batch-1", &seeded).await;
    wait_queued(&s, 1).await;
    let got = get_agenda(&s, ACME_SERVICE, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let data = s
        .ok(
            ACME_SERVICE,
            UPDATE,
            json!({"p": {"id": id, "operationProgress": [
                {"operation": "probe", "processingState": "COMPLETE", "processingStateMessage": "failed",
                 "diagnosticEvents": [{"message": "no such file", "statusCode": 2}]}
            ]}}),
        )
        .await;
    let p = &data["updateAgendaProgress"]["progress"];
    assert_eq!(state(p), ("COMPLETE", "failed"), "{p:#}");
    assert_eq!(p["operationProgress"][0]["processingStateMessage"], "failed");
}

#[tokio::test]
async fn concurrent_pullers_never_receive_the_same_agenda() {
    let (s, seeded) = scheduled_server().await;
    // A bigger queue takes effect at the scheduler's next pass.
    s.ok(
        ADMIN,
        "mutation($i: JSON!) { updateInsight(insight: $i) { position } }",
        json!({"i": {
            "id": "transcode", "customerId": "ops", "title": "Transcode",
            "resourcePoolId": "pool-1", "queueSize": AGENDAS, "isGlobal": true,
            "mappers": {"operationType": ["ffmpeg"]}
        }}),
    )
    .await;
    let mut submitted = BTreeSet::new();
    for i in 0..AGENDAS {
        let (id, _) = s.submit(ACME, "acme", &format!("l-{i}"), &seeded).await;
        submitted.insert(id);
    }
    wait_queued(&s, AGENDAS).await;

    let s = Arc::new(s);
    let mut pullers = Vec::new();
    for n in 0..PULLERS {
        let s = Arc::clone(&s);
        let token = if n % 2 == 0 { ACME_SERVICE } else { ACME_SERVICE_2 };
        pullers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..MAX_PULLS {
                let got = get_agenda(&s, token, 3).await;
                if got.is_empty()
                    && s.state.projections().read().agendas().count_in("transcode", Phase::Queued)
                        == 0
                {
                    break;
                }
                mine.extend(got.iter().map(|g| g["agenda"]["id"].as_str().unwrap().to_string()));
            }
            mine
        }));
    }
    let mut handed = Vec::new();
    for p in pullers {
        handed.extend(p.await.unwrap());
    }
    let unique: BTreeSet<String> = handed.iter().cloned().collect();
    assert_eq!(unique.len(), handed.len(), "an agenda was handed out twice");
    assert_eq!(unique, submitted, "every agenda handed out");
}
