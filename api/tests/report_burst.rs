//! A burst of concurrent reports to one agenda over real HTTP (issue 14's live budget: 200
//! updates/s into one agenda page means 200 reports/s on one stream). Reports of one agenda
//! all append to one stream; in one process they queue for it (`Commands`), so every report
//! of the burst succeeds — none is refused with CONFLICT — and the agenda's progress shows
//! each of them.

#![allow(clippy::unwrap_used)]

mod support;

use futures::future::join_all;
use pop_api::ApiConfig;
use pop_projections::Phase;
use pop_reapers::scheduler::{Memory, pass};
use pop_store::Direction;
use serde_json::{Value, json};
use support::*;

const OPERATIONS: usize = 200;

const REPORT: &str = "mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, leaseId: $l) \
    { position } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reports_to_one_agenda_all_succeed_and_all_show() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let operations: Vec<Value> = (0..OPERATIONS)
        .map(|i| json!({"name": format!("op{i}"), "type": "ffmpeg", "payload": {"n": i}}))
        .collect();
    let data = s
        .ok(
            ACME,
            "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
             { agenda { id progressId } position } }",
            json!({"a": {"customerId": "acme", "title": "burst", "operations": operations}, "p": after}),
        )
        .await;
    let id = data["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string();
    let progress_id = data["submitAgenda"]["agenda"]["progressId"].as_str().unwrap().to_string();
    let position = data["submitAgenda"]["position"].as_str().unwrap();

    // Queue it (one scheduler pass) and claim it as the pool's worker.
    let projections = s.state.projections();
    projections.wait_for(position.parse().unwrap(), WAIT).await.unwrap();
    let moved = pass(&s.commands, projections, &mut Memory::default()).await.unwrap();
    projections.wait_for(moved, WAIT).await.unwrap();
    assert_eq!(projections.read().agendas().with_id(&id).next().unwrap().phase(), Phase::Queued);
    let claim = s
        .ok(
            ACME_SERVICE,
            "mutation { getAgenda(insightId: \"transcode\", count: 1) { agenda { id } lease { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(claim["getAgenda"][0]["agenda"]["id"], json!(id));
    let lease = claim["getAgenda"][0]["lease"]["id"].as_str().unwrap().to_string();

    // Every operation's report at once, each on its own HTTP request: one stream, 200 writers.
    let percent = |i: usize| (1 + i % 99) as f64;
    let reports = (0..OPERATIONS).map(|i| {
        let p = json!({"id": progress_id, "processingState": "EXECUTING",
            "operationProgress": [{"operation": format!("op{i}"), "processingState": "EXECUTING",
                                   "percentComplete": percent(i)}]});
        s.gql(ACME_SERVICE, REPORT, json!({"p": p, "l": lease}))
    });
    let answers = join_all(reports).await;
    let mut positions = Vec::new();
    for (i, body) in answers.iter().enumerate() {
        assert!(body.get("errors").is_none(), "report {i} failed: {body:#}");
        positions.push(body["data"]["updateAgendaProgress"]["position"].as_str().unwrap());
    }
    // Each report appended its own event. (Reports queued together go out in one write and
    // share its position, the position of the write's last event.)
    let stream = format!("agenda-{}", pop_domain::agenda::key("acme", &id));
    let events = s.commands.store().read_stream(&stream, 0, 10_000, Direction::Forwards).await;
    let reported = events
        .unwrap()
        .iter()
        .filter(|e| &*e.event_type == pop_domain::agenda::type_name::PROGRESS_REPORTED)
        .count();
    assert_eq!(reported, OPERATIONS, "each report appended its own event");

    // The progress shows every report (read once the read models hold the last of them).
    let last: pop_store::Position =
        positions.iter().map(|p| p.parse::<pop_store::Position>().unwrap()).max().unwrap();
    let read = s
        .ok(
            ACME,
            "query($id: String!, $p: String) { agendaProgress(id: $id, atLeastPosition: $p) \
             { processingState operationProgress { operation percentComplete } } }",
            json!({"id": progress_id, "p": last.to_string()}),
        )
        .await;
    let progress = &read["agendaProgress"];
    assert_eq!(progress["processingState"], json!("EXECUTING"));
    let ops = progress["operationProgress"].as_array().unwrap();
    assert_eq!(ops.len(), OPERATIONS);
    for op in ops {
        let name = op["operation"].as_str().unwrap();
        let i: usize = name.trim_start_matches("op").parse().unwrap();
        assert_eq!(op["percentComplete"], json!(percent(i)), "{name}: {op:#}");
    }
}
