//! `getAgenda` that waits for work (issue 18, `waitSeconds`): a waiting call is woken by an
//! agenda of its insight entering the queue and claims it; several waiters share one agenda
//! without a double hand-out; a call that does not ask to wait answers at once; the server's
//! stop ends every wait; a wait out of bounds is refused naming the field. The queueing is the
//! scheduler's domain command, issued here by hand (the app does not run the scheduler). The
//! submissions go through a second `App` on the same store, as another replica's would: its
//! hand-out desk has no waiter, so the path tested here is the queue and the feed (the
//! hand-out at submission is `handout.rs`).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pop_app::{App, AppConfig, Caller, Code, Principal, Role};
use pop_domain::agenda::{AgendaCommand, AgendaState, key};
use pop_store::{Commands, EventMetadata};
use serde_json::json;

/// Bound on every wait of the test for something that should happen (never a timing figure).
const BOUND: Duration = Duration::from_secs(10);

struct World {
    app: App,
    /// Where the submissions come in (see the module doc).
    other: App,
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
    let other = w.app_with(AppConfig::default());
    World { app: w.app, other, commands: w.commands, _dir: dir }
}

/// Submits agenda `id` and queues it (what the scheduler does on the submission's change).
async fn submit_and_queue(w: &World, id: &str) {
    let agenda = json!({"id": id, "customerId": "acme",
        "operations": [{"name": "only", "type": "work", "payload": {}}]});
    w.other.submit(&user(), agenda, None, None).await.unwrap();
    let metadata = EventMetadata { customer_id: Some("acme".into()), ..EventMetadata::default() };
    let command = AgendaCommand::Queue { now: Utc::now() };
    w.commands.execute::<AgendaState>(&key("acme", id), &metadata, &command).await.unwrap();
}

type Waiting = tokio::task::JoinHandle<Vec<String>>;

/// Starts a `getAgenda` of `count` that waits up to `seconds`; its answer's agenda ids.
fn wait_for_work(w: &World, name: &str, seconds: i64) -> Waiting {
    let (app, caller) = (w.app.clone(), worker(name));
    tokio::spawn(async move {
        let claimed =
            app.get_agenda_waiting(&caller, "work", 1, Some(seconds), None).await.unwrap();
        claimed.into_iter().filter_map(|c| c.agenda().map(|a| a.id.clone())).collect()
    })
}

/// Lets spawned waiters reach their wait (they must still be open afterwards: asserted).
async fn let_them_wait(waiting: &[&Waiting]) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    for w in waiting {
        assert!(!w.is_finished(), "a waiting getAgenda answered an empty queue");
    }
}

#[tokio::test]
async fn a_waiting_get_agenda_claims_an_agenda_queued_after_it_started() {
    let w = world().await;
    // Without waitSeconds (and with 0) an empty queue answers at once, as before.
    assert!(w.app.get_agenda(&worker("w1"), "work", 1, None).await.unwrap().is_empty());
    let w1 = worker("w1");
    let at_once = w.app.get_agenda_waiting(&w1, "work", 1, Some(0), None);
    assert!(tokio::time::timeout(BOUND, at_once).await.unwrap().unwrap().is_empty());

    let waiting = wait_for_work(&w, "w1", 30);
    let_them_wait(&[&waiting]).await;
    submit_and_queue(&w, "a1").await;
    let got = tokio::time::timeout(BOUND, waiting).await.expect("the waiter was not woken");
    assert_eq!(got.unwrap(), vec!["a1".to_string()]);
    w.app.settle(None).await.unwrap();
    let progress = w.app.agenda_progress(&user(), "a1", None, None).await.unwrap().unwrap();
    assert_eq!(progress.processing_state_message.as_deref(), Some("scheduled"));
}

#[tokio::test]
async fn two_waiters_share_one_agenda_once_and_the_other_keeps_waiting_until_the_stop() {
    let w = world().await;
    let first = wait_for_work(&w, "w1", 30);
    let second = wait_for_work(&w, "w2", 30);
    let_them_wait(&[&first, &second]).await;
    submit_and_queue(&w, "a1").await;
    // Exactly one of them answers, with the agenda; the other is still waiting.
    let deadline = tokio::time::Instant::now() + BOUND;
    while !first.is_finished() && !second.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "nobody claimed the queued agenda");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (done, open) = if first.is_finished() { (first, second) } else { (second, first) };
    assert_eq!(done.await.unwrap(), vec!["a1".to_string()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!open.is_finished(), "the loser stopped waiting with nothing to claim");
    // The server stops: the remaining wait answers at once, empty (and later waits too).
    w.app.end_waits();
    let rest = tokio::time::timeout(BOUND, open).await.expect("end_waits did not end the wait");
    assert!(rest.unwrap().is_empty());
    let w3 = worker("w3");
    let later = w.app.get_agenda_waiting(&w3, "work", 1, Some(30), None);
    assert!(tokio::time::timeout(BOUND, later).await.unwrap().unwrap().is_empty());
}

#[tokio::test]
async fn a_wait_out_of_bounds_is_refused_naming_the_field_and_an_unknown_insight_at_once() {
    let w = world().await;
    for bad in [-1, 31, 3_600] {
        let e = w.app.get_agenda_waiting(&worker("w1"), "work", 1, Some(bad), None).await;
        let e = e.unwrap_err();
        assert_eq!(e.code, Code::Validation, "{bad}: {e:?}");
        assert_eq!(e.problems[0].field, "waitSeconds", "{bad}: {e:?}");
        assert_eq!(e.cid.as_deref(), Some("test"));
    }
    // The insight is checked before any wait.
    let w1 = worker("w1");
    let e = w.app.get_agenda_waiting(&w1, "nope", 1, Some(30), None);
    let e = tokio::time::timeout(BOUND, e).await.unwrap().unwrap_err();
    assert_eq!(e.code, Code::NotFound, "{e:?}");
}

/// The time a getAgenda spent waiting for work is measured apart, so the transports leave it
/// out of their request latencies (newcomer55 M2: an idle worker's 20 s polls made a quiet
/// farm's p50 read 5 s); a call that does not wait measured none.
#[tokio::test]
async fn a_getagendas_wait_for_work_is_measured_apart_from_its_work() {
    let w = world().await;
    let w1 = worker("w1");
    let (claimed, waited) =
        pop_app::measuring_waits(w.app.get_agenda_waiting(&w1, "work", 1, Some(1), None)).await;
    assert!(claimed.unwrap().is_empty());
    assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    let (claimed, waited) =
        pop_app::measuring_waits(w.app.get_agenda_waiting(&w1, "work", 1, Some(0), None)).await;
    assert!(claimed.unwrap().is_empty());
    assert_eq!(waited, Duration::ZERO);
}
