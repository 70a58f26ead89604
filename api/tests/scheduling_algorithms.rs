//! The scheduler honours an insight's `schedulingAlgorithm` (DOMAIN.md §7) against a real
//! server: passes are driven by hand ([`pop_reapers::scheduler::pass`], no background
//! scheduler) so which agendas get queued is deterministic. `RoundRobin` gives each customer
//! a turn before anyone's second; `Priority` queues the highest `params.priority` first.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use pop_api::ApiConfig;
use pop_domain::SchedulingAlgorithm;
use pop_projections::{AgendaQuery, MAX_PAGE_SIZE, Phase, Visibility};
use pop_reapers::scheduler::{Memory, pass};
use serde_json::{Value, json};
use support::*;

/// Pause between polls of the read models.
const POLL: Duration = Duration::from_millis(20);

const SUBMIT: &str = "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { agenda { id } position } }";

/// Seeds, then sets insight `transcode` to `algorithm` with `queue_size`; returns the
/// position to submit after.
async fn with_algorithm(s: &TestServer, algorithm: &str, queue_size: i64) -> String {
    s.seed().await;
    let data = s
        .ok(
            ADMIN,
            "mutation($i: JSON!) { updateInsight(insight: $i) { position } }",
            json!({"i": {
                "id": "transcode", "customerId": "ops", "title": "Transcode",
                "resourcePoolId": "pool-1", "queueSize": queue_size, "isGlobal": true,
                "schedulingAlgorithm": algorithm,
                "mappers": {"operationType": ["ffmpeg"]}
            }}),
        )
        .await;
    data["updateInsight"]["position"].as_str().expect("position").to_string()
}

async fn submit(s: &TestServer, token: &str, agenda: Value, after: &str) -> String {
    let data = s.ok(token, SUBMIT, json!({"a": agenda, "p": after})).await;
    data["submitAgenda"]["agenda"]["id"].as_str().expect("agenda id").to_string()
}

/// Waits (bounded) until `check` holds on the read models.
async fn wait_until(s: &TestServer, what: &str, check: impl Fn(&TestServer) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(s) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn count(s: &TestServer, phase: Phase) -> usize {
    s.state.projections().read().agendas().count_in("transcode", phase)
}

fn algorithm_is(s: &TestServer, algorithm: SchedulingAlgorithm) -> bool {
    s.state
        .projections()
        .read()
        .all_insights()
        .any(|i| i.id == "transcode" && i.scheduling_algorithm == algorithm)
}

fn queued(s: &TestServer) -> BTreeSet<String> {
    let models = s.state.projections().read();
    let all = Visibility::All;
    let mut query = AgendaQuery::new(&all);
    query.insight_id = Some("transcode");
    query.phase = Some(Phase::Queued);
    query.limit = MAX_PAGE_SIZE;
    models.select_agendas(&query).items.iter().map(|e| e.id().to_string()).collect()
}

/// Runs one pass by hand and waits until its moves are applied.
async fn one_pass(s: &TestServer, memory: &mut Memory, expect_queued: usize) {
    pass(&s.commands, s.state.projections(), memory).await;
    wait_until(s, "the pass's moves", |s| count(s, Phase::Queued) == expect_queued).await;
}

#[tokio::test]
async fn round_robin_gives_every_customer_a_turn_first() {
    let s = start(ApiConfig::default()).await;
    let after = with_algorithm(&s, "RoundRobin", 2).await;
    wait_until(&s, "RoundRobin", |s| algorithm_is(s, SchedulingAlgorithm::RoundRobin)).await;
    let mut acme = Vec::new();
    for i in 0..3 {
        acme.push(submit(&s, ACME, agenda("acme", &format!("a-{i}")), &after).await);
    }
    let globex = submit(&s, GLOBEX, agenda("globex", "g-0"), &after).await;
    wait_until(&s, "4 added", |s| count(s, Phase::Added) == 4).await;

    let mut memory = Memory::default();
    one_pass(&s, &mut memory, 2).await;
    // FirstInFirstOut would have queued acme's two oldest.
    assert_eq!(queued(&s), BTreeSet::from([acme[0].clone(), globex]));
}

#[tokio::test]
async fn priority_queues_the_highest_first() {
    let s = start(ApiConfig::default()).await;
    let after = with_algorithm(&s, "Priority", 1).await;
    wait_until(&s, "Priority", |s| algorithm_is(s, SchedulingAlgorithm::Priority)).await;
    let with_priority = |link: &str, priority: Value| {
        let mut a = agenda("acme", link);
        a["params"] = json!({ "priority": priority });
        a
    };
    submit(&s, ACME, agenda("acme", "none"), &after).await;
    let urgent = submit(&s, ACME, with_priority("urgent", json!("5")), &after).await;
    let low = submit(&s, ACME, with_priority("low", json!(1)), &after).await;
    wait_until(&s, "3 added", |s| count(s, Phase::Added) == 3).await;

    let mut memory = Memory::default();
    one_pass(&s, &mut memory, 1).await;
    assert_eq!(queued(&s), BTreeSet::from([urgent.clone()]));

    // Room for one more: priority 1 beats the default 0 although it is younger.
    s.ok(
        ADMIN,
        "mutation($i: JSON!) { updateInsight(insight: $i) { position } }",
        json!({"i": {
            "id": "transcode", "customerId": "ops", "title": "Transcode",
            "resourcePoolId": "pool-1", "queueSize": 2, "isGlobal": true,
            "schedulingAlgorithm": "Priority",
            "mappers": {"operationType": ["ffmpeg"]}
        }}),
    )
    .await;
    wait_until(&s, "queueSize 2", |s| {
        s.state
            .projections()
            .read()
            .all_insights()
            .any(|i| i.id == "transcode" && i.queue_size == 2)
    })
    .await;
    one_pass(&s, &mut memory, 2).await;
    assert_eq!(queued(&s), BTreeSet::from([urgent, low]));
}

#[tokio::test]
async fn a_re_added_agenda_goes_to_the_back_of_the_queue() {
    let s = start(ApiConfig::default()).await;
    let after = with_algorithm(&s, "FirstInFirstOut", 1).await;
    wait_until(&s, "FirstInFirstOut", |s| algorithm_is(s, SchedulingAlgorithm::FirstInFirstOut))
        .await;
    let mut memory = Memory::default();
    let first = submit(&s, ACME, agenda("acme", "first"), &after).await;
    wait_until(&s, "1 added", |s| count(s, Phase::Added) == 1).await;
    one_pass(&s, &mut memory, 1).await;
    s.ok(
        ACME_SERVICE,
        "mutation { getAgenda(insightId: \"transcode\", count: 1) { agenda { id } } }",
        json!({}),
    )
    .await;
    wait_until(&s, "claimed", |s| count(s, Phase::Queued) == 0).await;
    // `second` waits; then `first` is cancelled and rerun: it enters the queue again now,
    // behind `second`, although it was added first.
    let second = submit(&s, ACME, agenda("acme", "second"), &after).await;
    s.cancel(ACME, &first).await;
    s.ok(
        ACME,
        "mutation($id: String!) { rerunAgenda(agendaId: $id) { position } }",
        json!({"id": first}),
    )
    .await;
    wait_until(&s, "2 added", |s| count(s, Phase::Added) == 2).await;
    one_pass(&s, &mut memory, 1).await;
    assert_eq!(queued(&s), BTreeSet::from([second]));
    // `first` keeps its addedTime on the wire: re-entry is its own field.
    let data = s
        .ok(ACME, "query($id: String!) { agenda(id: $id) { addedTime } }", json!({"id": first}))
        .await;
    assert!(data["agenda"]["addedTime"].is_string(), "{data:#}");
}

/// How many `doNotRun` agendas wait ahead of the normal one: every candidate page the
/// scheduler looks through (`MAX_SCAN_PAGES` pages of `MAX_PAGE_SIZE`) and more.
const DO_NOT_RUN_BACKLOG: usize = 10_000;

#[tokio::test]
async fn a_do_not_run_backlog_never_stalls_its_insight() {
    use pop_domain::agenda::{AgendaCommand, AgendaState};
    use pop_domain::{Agenda, AgendaInsight};

    let s = start(ApiConfig::default()).await;
    let after = with_algorithm(&s, "FirstInFirstOut", 1).await;
    wait_until(&s, "FirstInFirstOut", |s| algorithm_is(s, SchedulingAlgorithm::FirstInFirstOut))
        .await;
    // The backlog goes straight through the commands (bound as the API would bind it), many
    // at a time so the store commits them in groups.
    let insight =
        AgendaInsight { resource_pool_id: "pool-1".into(), insight_id: "transcode".into() };
    let metadata = pop_store::EventMetadata {
        customer_id: Some("acme".into()),
        cid: None,
        causation_id: None,
        actor: Some("test".into()),
        command: None,
        traceparent: None,
        tracestate: None,
    };
    let ids: Vec<String> = (0..DO_NOT_RUN_BACKLOG).map(|i| format!("record-{i:05}")).collect();
    for chunk in ids.chunks(500) {
        let submits = chunk.iter().map(|id| {
            let mut agenda: Agenda =
                serde_json::from_value(agenda("acme", "records")).expect("agenda");
            agenda.id = id.clone();
            agenda.progress_id = Some(id.clone());
            agenda.params.insert("doNotRun", "true");
            let command =
                AgendaCommand::Submit { agenda, insight: insight.clone(), now: chrono::Utc::now() };
            let (commands, metadata) = (&s.commands, &metadata);
            let key = pop_domain::agenda::key("acme", id);
            async move { commands.execute::<AgendaState>(&key, metadata, &command).await }
        });
        for result in futures::future::join_all(submits).await {
            result.expect("a doNotRun agenda is accepted");
        }
    }
    let normal = submit(&s, ACME, agenda("acme", "normal"), &after).await;
    wait_until(&s, "the backlog and the normal agenda", |s| {
        s.state.projections().read().agendas().with_id(&normal).next().is_some()
            && count(s, Phase::Added) == DO_NOT_RUN_BACKLOG + 1
    })
    .await;
    let mut memory = Memory::default();
    one_pass(&s, &mut memory, 1).await;
    assert_eq!(queued(&s), BTreeSet::from([normal]));
}
