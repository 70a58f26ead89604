//! The work counters of issue 4 item 5: the `Insight` fields `queueDepth`, `waiting`,
//! `executing` and `waitingByCustomer` (per-customer counts filtered by the caller's
//! visibility), and the `/metrics` series `pop_insight_queue_depth`, `pop_insight_waiting`,
//! `pop_claims_total`, `pop_claim_latency_seconds` and `pop_lease_expiries_total`.
//!
//! One test function: the counters and histogram are process-wide, so a second test that
//! claims in this binary would change the values the first one checks.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pop_api::ApiConfig;
use pop_domain::agenda::{AgendaCommand, AgendaState};
use pop_projections::Phase;
use pop_store::EventMetadata;
use serde_json::{Value, json};
use support::*;

const GET_AGENDA: &str = "mutation($i: String!, $n: Int!) { getAgenda(insightId: $i, count: $n) { agenda { id customerId } position } }";

const UPDATE: &str =
    "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { position } }";

const INSIGHT: &str = "query($p: String) { insight(id: \"transcode\", atLeastPosition: $p) { queueDepth waiting executing waitingByCustomer { customerId count } } }";

/// Pause between polls.
const POLL: Duration = Duration::from_millis(20);

/// Waits (bounded) until insight `transcode` has `queued` queued agendas and none `added`.
async fn wait_settled(s: &TestServer, queued: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (q, a) = {
            let models = s.state.projections().read();
            let agendas = models.agendas();
            (
                agendas.count_in("transcode", Phase::Queued),
                agendas.count_in("transcode", Phase::Added),
            )
        };
        if q == queued && a == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{q} queued and {a} added, want {queued} and 0"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The value of the series `name` (exactly as rendered, labels included) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `/metrics` (bounded) until `name` has `want`.
async fn wait_metric(s: &TestServer, name: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text) = s.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        if sample(&text, name) == Some(want) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {:?}, want {want}:\n{text}",
            sample(&text, name)
        );
        tokio::time::sleep(POLL).await;
    }
}

fn insight(data: &Value) -> &Value {
    &data["insight"]
}

#[tokio::test]
async fn insight_work_counters_in_graphql_and_metrics() {
    let s = start(ApiConfig { metrics_insight_labels: true, ..ApiConfig::default() }).await;
    let seeded = s.seed().await;
    pop_reapers::scheduler::spawn(
        Arc::clone(&s.commands),
        s.state.projections().clone(),
        std::future::pending(),
    );

    // Three agendas of acme, three of globex; the queue holds five.
    for n in 0..3 {
        s.submit(ACME, "acme", &format!("a-{n}"), &seeded).await;
    }
    for n in 0..3 {
        s.submit(GLOBEX, "globex", &format!("g-{n}"), &seeded).await;
    }

    // acme's service claims two of acme's queued agendas and starts one of them.
    let got = s.ok(ACME_SERVICE, GET_AGENDA, json!({"i": "transcode", "n": 2})).await;
    let got = got["getAgenda"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got.iter().all(|g| g["agenda"]["customerId"] == "acme"), "{got:#?}");
    let started = got[0]["agenda"]["id"].as_str().unwrap().to_string();
    let leased = got[1]["agenda"]["id"].as_str().unwrap().to_string();
    let data = s
        .ok(ACME_SERVICE, UPDATE, json!({"p": {"id": started, "processingState": "EXECUTING"}}))
        .await;
    let position = data["updateAgendaProgress"]["position"].as_str().unwrap().to_string();

    // The scheduler queues the sixth: 4 queued (1 acme, 3 globex), 1 scheduled, 1 executing.
    wait_settled(&s, 4).await;

    let all = s.ok(ADMIN, INSIGHT, json!({"p": position})).await;
    let all = insight(&all);
    assert_eq!(all["queueDepth"], 4, "{all:#}");
    assert_eq!(all["waiting"], 5, "{all:#}");
    assert_eq!(all["executing"], 1, "{all:#}");
    assert_eq!(
        all["waitingByCustomer"],
        json!([{"customerId": "globex", "count": 3}, {"customerId": "acme", "count": 2}]),
        "{all:#}"
    );

    // A user of one customer sees the insight's totals but only its own customer's count.
    let acme = s.ok(ACME, INSIGHT, json!({"p": position})).await;
    let acme = insight(&acme);
    assert_eq!(acme["queueDepth"], 4, "{acme:#}");
    assert_eq!(acme["waitingByCustomer"], json!([{"customerId": "acme", "count": 2}]), "{acme:#}");
    let globex = s.ok(GLOBEX, INSIGHT, json!({"p": position})).await;
    assert_eq!(
        insight(&globex)["waitingByCustomer"],
        json!([{"customerId": "globex", "count": 3}]),
        "{globex:#}"
    );

    // /metrics: the gauges (at scrape time), the claims and their latencies.
    let text = wait_metric(&s, "pop_insight_queue_depth{insight=\"transcode\"}", 4.0).await;
    assert_eq!(sample(&text, "pop_insight_waiting{insight=\"transcode\"}"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "pop_claims_total{insight=\"transcode\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "pop_claim_latency_seconds_count"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "pop_lease_expiries_total"), Some(0.0), "{text}");
    // What the agendas hold, in all: six live ones, none finished.
    let live = sample(&text, "pop_read_model_agenda_bytes{kind=\"live\"}");
    assert!(live.is_some_and(|b| b > 600.0), "{text}");
    assert_eq!(sample(&text, "pop_read_model_agenda_bytes{kind=\"retained\"}"), Some(0.0));

    // The lease of the claimed-but-not-started agenda expires and it is reclaimed: one
    // expiry, and it is queued again.
    let reclaim = AgendaCommand::Reclaim { now: Utc::now() + chrono::Duration::days(2) };
    let metadata = EventMetadata { customer_id: Some("acme".into()), ..EventMetadata::default() };
    s.commands
        .execute::<AgendaState>(&pop_domain::agenda::key("acme", &leased), &metadata, &reclaim)
        .await
        .unwrap_or_else(|e| panic!("reclaim: {e}"));
    let text = wait_metric(&s, "pop_lease_expiries_total", 1.0).await;
    assert!(text.contains("pop_claim_latency_seconds_bucket"), "{text}");
    wait_settled(&s, 5).await;
    let text = wait_metric(&s, "pop_insight_queue_depth{insight=\"transcode\"}", 5.0).await;
    assert_eq!(sample(&text, "pop_insight_waiting{insight=\"transcode\"}"), Some(5.0), "{text}");
}
