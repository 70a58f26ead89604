//! The hand-out at submission (issue 18, `pop_app::handout`): a submission to an insight on
//! which a `getAgenda` of this replica waits, and which has nothing queued and nothing
//! `added`, hands its agenda to the waiter in its own write — `AgendaSubmitted`,
//! `AgendaQueued` and `AgendaClaimed` in one append, each with its own actor — and in no other
//! case: a backlog of the insight goes first through the scheduler (DOMAIN.md §7), a
//! `doNotRun` agenda is never queued, and a waiter that left is not handed anything.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pop_app::configs::ConfigOp;
use pop_app::{App, Caller, Principal, Role};
use pop_domain::Aggregate;
use pop_domain::agenda::{AgendaCommand, AgendaState, key};
use pop_domain::aggregate::stream_name;
use pop_domain::model::{Customer, Insight};
use pop_store::{Commands, Direction, EventMetadata, EventStore};
use serde_json::json;

/// Bound on every wait of the test for something that should happen (never a timing figure).
const BOUND: Duration = Duration::from_secs(10);

struct World {
    app: App,
    store: Arc<dyn EventStore>,
    commands: Arc<Commands>,
    _dir: tempfile::TempDir,
}

fn user() -> Caller {
    Caller::new(Principal::new("acme-user", Role::User, &["acme"]), "test")
}

fn worker(name: &str) -> Caller {
    Caller::new(Principal::new(name, Role::Service, &["acme"]), "test")
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let w = support::acme_world(support::sqlite(dir.path()).await).await;
    w.app.settle(None).await.unwrap();
    World { app: w.app, store: w.store, commands: w.commands, _dir: dir }
}

/// Submits agenda `id` (with `params`); the state message the submission answered.
async fn submit(w: &World, id: &str, params: serde_json::Value) -> String {
    submitted(w, id, params).await.0
}

/// [`submit`], with the position the submission answered (its write's last event).
async fn submitted(w: &World, id: &str, params: serde_json::Value) -> (String, String) {
    let agenda = json!({"id": id, "customerId": "acme", "params": params,
        "operations": [{"name": "only", "type": "work", "payload": {}}]});
    let outcome = w.app.submit(&user(), agenda, None, None).await.unwrap();
    // A submission handed to a waiting worker never answers the submitter the worker's lease.
    assert!(outcome.lease().is_none(), "{:?}", outcome.lease());
    let message = outcome.progress().processing_state_message.clone().unwrap_or_default();
    (message, outcome.position.unwrap().to_string())
}

/// What the scheduler does: queues agenda `id`.
async fn queue(w: &World, id: &str) {
    let metadata = EventMetadata { customer_id: Some("acme".into()), ..EventMetadata::default() };
    let command = AgendaCommand::Queue { now: Utc::now() };
    w.commands.execute::<AgendaState>(&key("acme", id), &metadata, &command).await.unwrap();
}

type Waiting = tokio::task::JoinHandle<Vec<String>>;

/// Starts a `getAgenda` that waits up to `seconds`; its answer's agenda ids.
fn wait_for_work(w: &World, name: &str, seconds: i64) -> Waiting {
    let (app, caller) = (w.app.clone(), worker(name));
    tokio::spawn(async move {
        let claimed =
            app.get_agenda_waiting(&caller, "work", 1, Some(seconds), None).await.unwrap();
        assert!(claimed.iter().all(|c| c.lease().is_some()), "the worker gets its lease");
        claimed.into_iter().filter_map(|c| c.agenda().map(|a| a.id.clone())).collect()
    })
}

/// Waits until `n` calls sit at the desk (they reach it after their first, empty, look).
async fn seated(w: &World, n: usize) {
    let deadline = tokio::time::Instant::now() + BOUND;
    while w.app.waiting_at_desk() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} waiting, not {n}",
            w.app.waiting_at_desk()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The agenda's events: (type, position, actor).
async fn events(w: &World, id: &str) -> Vec<(String, String, String)> {
    let stream = stream_name(AgendaState::CATEGORY, &key("acme", id));
    let recorded = w.store.read_stream(&stream, 0, 100, Direction::Forwards).await.unwrap();
    recorded
        .iter()
        .map(|r| {
            let metadata = EventMetadata::from_json(&r.metadata).unwrap();
            (r.event_type.to_string(), r.position.to_string(), metadata.actor.unwrap_or_default())
        })
        .collect()
}

async fn message(w: &World, id: &str) -> String {
    w.app.settle(None).await.unwrap();
    let progress = w.app.agenda_progress(&user(), id, None, None).await.unwrap().unwrap();
    progress.processing_state_message.unwrap_or_default()
}

#[tokio::test]
async fn a_submission_is_handed_to_the_waiting_worker_in_its_own_write() {
    let w = world().await;
    let waiting = wait_for_work(&w, "w1", 30);
    seated(&w, 1).await;
    // Nobody queues it here (no scheduler): the submission itself hands it over.
    let (answered, position) = submitted(&w, "a1", json!({})).await;
    let got = tokio::time::timeout(BOUND, waiting).await.expect("the waiter was not handed it");
    assert_eq!(got.unwrap(), vec!["a1".to_string()]);
    assert_eq!(answered, "scheduled", "the submission answers the state its write left");
    assert_eq!(message(&w, "a1").await, "scheduled");
    let events = events(&w, "a1").await;
    let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["AgendaSubmitted", "AgendaQueued", "AgendaClaimed"], "{events:?}");
    // One write: the submission's answer is at the write's last event, the claim.
    assert_eq!(position, events[2].1, "{events:?}");
    let actors: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(actors[1], pop_app::handout::ACTOR);
    assert_ne!(actors[0], actors[2], "submitted by the user, claimed by the worker: {actors:?}");
    assert!(actors[2].contains("w1"), "{actors:?}");
    assert_eq!(w.app.waiting_at_desk(), 0);
}

#[tokio::test]
async fn a_backlog_of_the_insight_goes_first_through_the_queue() {
    let w = world().await;
    // `b0` waits in `added` (no scheduler has queued it yet).
    assert_eq!(submit(&w, "b0", json!({})).await, "added");
    let waiting = wait_for_work(&w, "w1", 30);
    seated(&w, 1).await;
    // A newer submission is not handed over past `b0`: it stays `added` too.
    assert_eq!(submit(&w, "a1", json!({})).await, "added");
    assert_eq!(message(&w, "a1").await, "added");
    assert!(!waiting.is_finished(), "the waiter took something past the backlog");
    // The scheduler queues the oldest; the waiter claims it.
    queue(&w, "b0").await;
    let got = tokio::time::timeout(BOUND, waiting).await.expect("the waiter was not woken");
    assert_eq!(got.unwrap(), vec!["b0".to_string()]);
    assert_eq!(message(&w, "a1").await, "added");
}

#[tokio::test]
async fn a_do_not_run_agenda_is_never_handed_over() {
    let w = world().await;
    let waiting = wait_for_work(&w, "w1", 30);
    seated(&w, 1).await;
    assert_eq!(submit(&w, "d1", json!({"doNotRun": "true"})).await, "added");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "a doNotRun agenda was handed out");
    assert_eq!(w.app.waiting_at_desk(), 1);
    w.app.end_waits();
    assert!(tokio::time::timeout(BOUND, waiting).await.unwrap().unwrap().is_empty());
    assert_eq!(w.app.waiting_at_desk(), 0);
}

#[tokio::test]
async fn a_waiter_that_left_is_handed_nothing_and_waiters_are_served_longest_waiting_first() {
    let w = world().await;
    // A request that goes away leaves the desk: the next submission stays `added`.
    let gone = wait_for_work(&w, "w0", 30);
    seated(&w, 1).await;
    gone.abort();
    seated(&w, 0).await;
    assert_eq!(submit(&w, "a0", json!({})).await, "added");
    queue(&w, "a0").await;
    w.app.settle(None).await.unwrap();
    let mine = w.app.get_agenda(&worker("w9"), "work", 1, None).await.unwrap();
    assert_eq!(mine.len(), 1, "a0 was not left for the queue");
    // Two waiters: the first submission goes to the one that waited longest.
    let first = wait_for_work(&w, "w1", 30);
    seated(&w, 1).await;
    let second = wait_for_work(&w, "w2", 30);
    seated(&w, 2).await;
    submit(&w, "a1", json!({})).await;
    let got = tokio::time::timeout(BOUND, first).await.unwrap();
    assert_eq!(got.unwrap(), vec!["a1".to_string()]);
    submit(&w, "a2", json!({})).await;
    let got = tokio::time::timeout(BOUND, second).await.unwrap();
    assert_eq!(got.unwrap(), vec!["a2".to_string()]);
    assert_eq!(w.app.waiting_at_desk(), 0);
}

/// Read-your-writes for `getAgenda`: an insight this replica has just created is found at
/// once (an empty queue), not NOT_FOUND because the read models have not applied it yet.
#[tokio::test]
async fn get_agenda_right_after_creating_the_insight_finds_it() {
    let w = world().await;
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    for n in 0..20 {
        let id = format!("fresh-{n}");
        let insight = json!({"id": id, "customerId": "acme", "title": id,
            "resourcePoolId": "pool", "queueSize": 1, "isGlobal": true,
            "mappers": {"operationType": ["fresh"]}});
        w.app.configure::<Insight>(&admin, ConfigOp::Create(insight), None, None).await.unwrap();
        let got = w.app.get_agenda(&worker("w1"), &id, 1, None).await;
        assert!(got.unwrap().is_empty(), "{id}");
    }
}

/// A customer the insight is only shared with waits on it for its own agendas: a submission of
/// the insight's owner is not handed to it (nor claimed by it from the queue afterwards).
#[tokio::test]
async fn a_submission_is_not_handed_to_a_waiter_of_another_customer_sharing_the_insight() {
    let w = world().await;
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    let customer = json!({"id": "globex", "title": "globex", "resourcePoolId": "pool"});
    w.app.configure::<Customer>(&admin, ConfigOp::Create(customer), None, None).await.unwrap();
    let insight = json!({"id": "work", "customerId": "acme", "title": "work",
        "resourcePoolId": "pool", "queueSize": 10, "allowedCustomerIds": ["globex"],
        "mappers": {"operationType": ["work"]}});
    w.app.configure::<Insight>(&admin, ConfigOp::Update(insight), None, None).await.unwrap();
    w.app.settle(None).await.unwrap();
    let app = w.app.clone();
    let globex = Caller::new(Principal::new("globex-worker", Role::Service, &["globex"]), "test");
    let waiting = tokio::spawn(async move {
        let claimed = app.get_agenda_waiting(&globex, "work", 1, Some(2), None).await.unwrap();
        claimed.into_iter().map(|c| c.progress().agenda_id.clone()).collect::<Vec<_>>()
    });
    seated(&w, 1).await;
    assert_eq!(submit(&w, "a1", json!({})).await, "added", "not handed to globex's worker");
    queue(&w, "a1").await;
    let got = tokio::time::timeout(BOUND, waiting).await.unwrap().unwrap();
    assert!(got.is_empty(), "globex's worker took acme's agenda: {got:?}");
    w.app.settle(None).await.unwrap();
    let mine = w.app.get_agenda(&worker("w1"), "work", 1, None).await.unwrap();
    assert_eq!(mine.len(), 1, "acme's own worker takes it");
}
