//! The read models and their indexes, folded from a real SQLite log written by domain
//! commands: lookups by id, lists by customer / link / state / insight / time, pagination,
//! visibility, the progress summary, and the config models.
// Helpers outside `#[test]` functions unwrap too: in a test binary a failing fixture is a
// test bug, and the panic names it.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use pop_domain::ProcessingState;
use pop_domain::agenda::AgendaState;
use pop_projections::{
    AgendaOrder, AgendaQuery, Cursor, Phase, ReadModels, Visibility, decode, rebuild,
};
use pop_store::{EventStore, Position};
use support::*;

async fn fold(log: &Log) -> ReadModels {
    rebuild(log.dyn_store(), |_| {}).await.unwrap()
}

fn only(ids: &[&str]) -> Visibility {
    Visibility::from_ids(ids.iter().copied())
}

fn ids<'a>(entries: impl IntoIterator<Item = &'a pop_projections::AgendaEntry>) -> Vec<String> {
    entries.into_iter().map(|e| e.id().to_string()).collect()
}

/// Three customers' agendas in various states:
/// - a1 (acme, link L, insight-1): succeeded
/// - a2 (acme, link L, insight-1): executing
/// - b1 (beta, link L, insight-2): queued
/// - b2 (beta, no link, insight-1): added
/// - c1 (gamma, link M, insight-1): cancelled
async fn scenario() -> Log {
    let log = Log::open().await.unwrap();
    let names = ["x", "y"];
    log.agenda("a1", submit(agenda("a1", "acme", Some("L"), &names), "insight-1", 10))
        .await
        .unwrap();
    log.agenda("a2", submit(agenda("a2", "acme", Some("L"), &names), "insight-1", 20))
        .await
        .unwrap();
    log.agenda("b1", submit(agenda("b1", "beta", Some("L"), &names), "insight-2", 30))
        .await
        .unwrap();
    log.agenda("b2", submit(agenda("b2", "beta", None, &names), "insight-1", 40)).await.unwrap();
    log.agenda("c1", submit(agenda("c1", "gamma", Some("M"), &names), "insight-1", 50))
        .await
        .unwrap();
    for command in lifecycle(&names, 100) {
        log.agenda("a1", command).await.unwrap();
    }
    for command in [queue(200), claim("w", 201), report("w", 202, vec![executing("x", 40.0)])] {
        log.agenda("a2", command).await.unwrap();
    }
    log.agenda("b1", queue(300)).await.unwrap();
    log.agenda("c1", cancel(400)).await.unwrap();
    log
}

#[tokio::test]
async fn agendas_progress_and_operations_by_id() {
    let log = scenario().await;
    let m = fold(&log).await;
    assert_eq!(m.agendas().len(), 5);

    let a1 = m.agenda_entry("a1").unwrap();
    assert!(a1.is_settled(), "a COMPLETE agenda is held settled");
    assert_eq!(a1.phase(), Phase::Succeeded);
    assert_eq!(a1.progress_id(), "pa1");
    let progress = m.agenda_progress("pa1", &Visibility::All).unwrap().unwrap();
    assert_eq!(progress.processing_state, ProcessingState::Complete);
    assert_eq!(progress.percent_complete, Some(100.0));
    assert_eq!(progress.operation_progress.len(), 2);
    assert_eq!(m.agenda("a1").unwrap().unwrap().operations.len(), 2);
    // The agenda id is not a progress id.
    assert!(m.agenda_progress("a1", &Visibility::All).unwrap().is_none());

    let a2 = m.agenda_progress("pa2", &Visibility::All).unwrap().unwrap();
    assert_eq!(a2.processing_state, ProcessingState::Executing);
    assert_eq!(a2.percent_complete, Some(20.0));
    assert!(!m.agenda_entry("a2").unwrap().is_settled());

    let x = m.operation_progress("pa2-x", &Visibility::All).unwrap().unwrap();
    assert_eq!((x.processing_state, x.percent_complete), (ProcessingState::Executing, Some(40.0)));
    let y = m.operation_progress("pa1-y", &Visibility::All).unwrap().unwrap();
    assert_eq!(
        y.result_payload.to_value()["out"],
        "y done",
        "settled agendas keep operation results"
    );
    assert!(m.operation_progress("pa1-z", &Visibility::All).unwrap().is_none());
    assert!(m.operation_progress("nothing", &Visibility::All).unwrap().is_none());
}

#[tokio::test]
async fn the_read_model_state_is_the_domain_fold() {
    let log = scenario().await;
    let m = fold(&log).await;
    // Replaying a1's stream with the domain's own evolve gives the same state.
    let stream =
        log.store.read_stream("agenda-a1", 0, 100, pop_store::Direction::Forwards).await.unwrap();
    let mut expected = AgendaState::default();
    for e in &stream {
        if let pop_projections::Decoded::Event {
            event: pop_projections::DomainEvent::Agenda(e),
            ..
        } = decode(e).unwrap()
        {
            pop_domain::Aggregate::evolve(&mut expected, &e);
        }
    }
    // Except the finisher (who may send a late report), which only the write side keeps.
    assert_eq!(expected.finished_by(), Some("worker-1"));
    expected.forget_finisher();
    assert_eq!(m.agenda_state("a1").unwrap().unwrap(), expected);
}

#[tokio::test]
async fn operation_progress_ids_with_dashes_resolve() {
    let log = Log::open().await.unwrap();
    let mut a = agenda("x-1", "acme", None, &["get-data", "b"]);
    a.progress_id = Some("p-1".to_string());
    log.agenda("x-1", submit(a, "insight-1", 0)).await.unwrap();
    let m = fold(&log).await;
    assert_eq!(
        &*m.operation_progress("p-1-get-data", &Visibility::All).unwrap().unwrap().operation,
        "get-data"
    );
    assert_eq!(&*m.operation_progress("p-1-b", &Visibility::All).unwrap().unwrap().operation, "b");
}

/// The longest progress id (200 characters of 4 bytes, with dashes) still resolves; an id of
/// 200,000 dashes is looked up over the splits where a progress id can end only (hostile21:
/// every split hashed its prefix, quadratic in the id's length: 64,000 dashes held a runtime
/// thread 10 s; this one, about 20 billion bytes hashed, would run for minutes).
#[tokio::test]
async fn an_operation_progress_id_is_looked_up_only_where_a_progress_id_can_end() {
    let log = Log::open().await.unwrap();
    let longest: String = "\u{1F600}-".repeat(100);
    assert_eq!(longest.chars().count(), pop_domain::validate::MAX_ID_LENGTH);
    let mut a = agenda("x-1", "acme", None, &["get-data"]);
    a.progress_id = Some(longest.clone());
    log.agenda("x-1", submit(a, "insight-1", 0)).await.unwrap();
    let m = fold(&log).await;
    let id = format!("{longest}-get-data");
    assert_eq!(
        &*m.operation_progress(&id, &Visibility::All).unwrap().unwrap().operation,
        "get-data"
    );
    let dashes = "-".repeat(200_000);
    assert!(m.operation_progress(&dashes, &Visibility::All).unwrap().is_none());
}

#[tokio::test]
async fn lists_by_customer_respect_visibility() {
    let log = scenario().await;
    let m = fold(&log).await;
    let all = Visibility::All;
    assert_eq!(
        ids(m.select_agendas(&AgendaQuery::new(&all)).items),
        ["a1", "a2", "b1", "b2", "c1"]
    );
    let acme_gamma = only(&["acme", "gamma"]);
    assert_eq!(ids(m.select_agendas(&AgendaQuery::new(&acme_gamma)).items), ["a1", "a2", "c1"]);
    let nobody = only(&["zeta"]);
    assert!(m.select_agendas(&AgendaQuery::new(&nobody)).items.is_empty());
    assert_eq!(Visibility::from_ids(["acme", "*"]), Visibility::All);
}

#[tokio::test]
async fn lists_by_link_state_phase_and_insight() {
    let log = scenario().await;
    let m = fold(&log).await;
    let all = Visibility::All;
    let q = |f: &dyn Fn(&mut AgendaQuery)| {
        let mut q = AgendaQuery::new(&all);
        f(&mut q);
        ids(m.select_agendas(&q).items)
    };
    assert_eq!(q(&|q| q.link_id = Some("L")), ["a1", "a2", "b1"]);
    assert_eq!(q(&|q| q.processing_state = Some(ProcessingState::Complete)), ["a1", "c1"]);
    assert_eq!(q(&|q| q.phase = Some(Phase::Queued)), ["b1"]);
    assert_eq!(q(&|q| q.insight_id = Some("insight-1")), ["a1", "a2", "b2", "c1"]);
    assert_eq!(
        q(&|q| {
            q.insight_id = Some("insight-1");
            q.phase = Some(Phase::Added);
        }),
        ["b2"]
    );
    assert_eq!(m.agendas().count_in("insight-2", Phase::Queued), 1);
    assert_eq!(m.agendas().count_in("insight-1", Phase::Queued), 0);
    // By state in updated order: c1 was cancelled (t=400) after a1 completed (t≈107).
    assert_eq!(
        q(&|q| {
            q.processing_state = Some(ProcessingState::Complete);
            q.order = AgendaOrder::UpdatedTime;
        }),
        ["a1", "c1"]
    );
    // Most recently updated last: b2 untouched since t=40; c1 changed last.
    assert_eq!(q(&|q| q.order = AgendaOrder::UpdatedTime), ["b2", "a1", "a2", "b1", "c1"]);
    // Walked backwards: most recently updated first, newest first.
    let backwards = |f: &dyn Fn(&mut AgendaQuery)| {
        q(&|q| {
            q.descending = true;
            f(q)
        })
    };
    assert_eq!(backwards(&|q| q.order = AgendaOrder::UpdatedTime), ["c1", "b1", "a2", "a1", "b2"]);
    let oldest_first = q(&|_| {});
    let mut newest_first = oldest_first.clone();
    newest_first.reverse();
    assert_eq!(backwards(&|_| {}), newest_first);
    assert_eq!(backwards(&|q| q.link_id = Some("L")), ["b1", "a2", "a1"]);
    assert_eq!(backwards(&|q| q.insight_id = Some("insight-1")), ["c1", "b2", "a2", "a1"]);
    // A filter combined with visibility.
    let beta = only(&["beta"]);
    let mut query = AgendaQuery::new(&beta);
    query.link_id = Some("L");
    assert_eq!(ids(m.select_agendas(&query).items), ["b1"]);
}

/// The models folded event by event, as the runner keeps them (indexes updated per event),
/// where [`fold`] rebuilds them (indexes built once at the end).
async fn fold_incrementally(log: &Log) -> ReadModels {
    let mut m = ReadModels::new();
    let events = log.store.read_all(Position::START, 10_000).await.unwrap();
    for e in &events {
        m.apply(e.position, &decode(e).unwrap(), None).unwrap();
    }
    m
}

/// A state filter in added order (the dashboard's "running agendas, newest first") gives the
/// agendas of that state in exactly the order and pages of the unfiltered list, whichever
/// index drives it (the live states have their own added-order sets), for rebuilt and
/// incrementally kept models, every visibility, both directions.
#[tokio::test]
async fn a_state_filter_in_added_order_is_the_filtered_full_list() {
    let log = scenario().await;
    // More of each kind, so pages of 2 cut through them: d* complete, e* executing.
    let mut running_ids = vec!["a2".to_owned()];
    for i in 0..6 {
        let (d, e) = (format!("d{i}"), format!("e{i}"));
        let at = 1_000 + 100 * i;
        log.agenda(&d, submit(agenda(&d, "acme", None, &["x"]), "insight-1", at)).await.unwrap();
        log.agenda(&e, submit(agenda(&e, "acme", None, &["x"]), "insight-1", at + 5))
            .await
            .unwrap();
        for command in lifecycle(&["x"], at + 10) {
            log.agenda(&d, command).await.unwrap();
        }
        for command in
            [queue(at + 20), claim("w", at + 21), report("w", at + 22, vec![executing("x", 50.0)])]
        {
            log.agenda(&e, command).await.unwrap();
        }
        running_ids.push(e);
    }
    running_ids.sort();
    for m in [fold(&log).await, fold_incrementally(&log).await] {
        for visibility in [Visibility::All, only(&["acme"]), only(&["acme", "beta"])] {
            for descending in [false, true] {
                let mut base = AgendaQuery::new(&visibility);
                base.descending = descending;
                let full: Vec<&pop_projections::AgendaEntry> = m.select_agendas(&base).items;
                for state in [
                    ProcessingState::Waiting,
                    ProcessingState::Executing,
                    ProcessingState::Complete,
                ] {
                    let expected: Vec<String> = full
                        .iter()
                        .filter(|e| e.progress().unwrap().processing_state == state)
                        .map(|e| e.id().to_string())
                        .collect();
                    let mut paged = Vec::new();
                    let mut after: Option<Cursor> = None;
                    loop {
                        let mut q = base.clone();
                        q.processing_state = Some(state);
                        q.limit = 2;
                        q.after = after.as_ref();
                        let page = m.select_agendas(&q);
                        paged.extend(ids(page.items));
                        match page.next {
                            Some(c) => after = Some(c),
                            None => break,
                        }
                    }
                    assert_eq!(paged, expected, "{visibility:?} {state:?} descending={descending}");
                }
            }
        }
        let mut q = AgendaQuery::new(&Visibility::All);
        q.processing_state = Some(ProcessingState::Executing);
        let mut running = ids(m.select_agendas(&q).items);
        running.sort();
        assert_eq!(running, running_ids);
    }
}

#[tokio::test]
async fn pages_are_stable_and_cover_everything_once() {
    let log = Log::open().await.unwrap();
    // Equal added times: the id breaks the tie.
    for i in 0..23 {
        let id = format!("n{:02}", 22 - i);
        let customer = if i % 3 == 0 { "acme" } else { "beta" };
        log.agenda(&id, submit(agenda(&id, customer, None, &["x"]), "insight-1", i / 5))
            .await
            .unwrap();
    }
    let m = fold(&log).await;
    for visibility in [Visibility::All, only(&["acme", "beta"]), only(&["beta"])] {
        let full = ids(m.select_agendas(&AgendaQuery::new(&visibility)).items);
        let mut paged = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let mut q = AgendaQuery::new(&visibility);
            q.limit = 4;
            q.after = after.as_ref();
            let page = m.select_agendas(&q);
            assert!(page.items.len() <= 4);
            paged.extend(ids(page.items));
            match page.next {
                // Cursors survive their text form.
                Some(c) => after = Some(c.to_string().parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(paged, full, "{visibility:?}");
        let unique: BTreeSet<_> = paged.iter().collect();
        assert_eq!(unique.len(), paged.len());
        // In (addedTime, id) order.
        let keys: Vec<_> =
            paged.iter().map(|id| (m.agenda_entry(id).unwrap().added_ms(), id.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);

        // Newest first, page by page: the same agendas in exactly the reverse order.
        let mut backwards = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let mut q = AgendaQuery::new(&visibility);
            q.descending = true;
            q.limit = 4;
            q.after = after.as_ref();
            let page = m.select_agendas(&q);
            assert!(page.items.len() <= 4);
            backwards.extend(ids(page.items));
            match page.next {
                Some(c) => after = Some(c.to_string().parse().unwrap()),
                None => break,
            }
        }
        let mut reversed = full.clone();
        reversed.reverse();
        assert_eq!(backwards, reversed, "{visibility:?}");
    }
}

#[tokio::test]
async fn progress_summary_through_the_read_model() {
    let log = scenario().await;
    let m = fold(&log).await;
    // L: a1 COMPLETE 100, a2 EXECUTING 20, b1 WAITING 0 → EXECUTING, 40.
    let summary = m.progress_summary("L", &Visibility::All).unwrap();
    assert_eq!(summary.processing_state, ProcessingState::Executing);
    assert_eq!(summary.processing_percent, Some(40.0));
    assert_eq!(summary.progress_list.len(), 3);
    // beta sees only b1: all waiting.
    let summary = m.progress_summary("L", &only(&["beta"])).unwrap();
    assert_eq!(summary.processing_state, ProcessingState::Waiting);
    assert_eq!(summary.progress_list.len(), 1);
    // Nobody visible: empty, COMPLETE at 0.
    let summary = m.progress_summary("L", &only(&["zeta"])).unwrap();
    assert!(summary.progress_list.is_empty());
    assert_eq!(summary.processing_state, ProcessingState::Complete);
    // M holds only the cancelled one.
    let summary = m.progress_summary("M", &Visibility::All).unwrap();
    assert_eq!(summary.processing_state, ProcessingState::Complete);

    // Taken out under the lock to be decoded after it (hostile57 H1): a finished agenda as its
    // compressed bytes, a live one ready; decoded, each is the entry's own progress, in order.
    let parts = m.agendas().progress_summary_parts("L", &Visibility::All);
    assert_eq!(parts.iter().map(|p| p.is_compressed()).collect::<Vec<_>>(), [true, false, false]);
    let decoded: Vec<_> = parts.into_iter().map(|p| p.progress().unwrap()).collect();
    let whole = m.progress_summary("L", &Visibility::All).unwrap();
    assert_eq!(decoded, whole.progress_list);
    for p in &decoded {
        assert_eq!(*p, m.agenda_entry(&p.agenda_id).unwrap().progress().unwrap());
    }
}

#[tokio::test]
async fn a_failure_fails_the_summary() {
    let log = Log::open().await.unwrap();
    for id in ["f1", "f2"] {
        log.agenda(id, submit(agenda(id, "acme", Some("F"), &["x"]), "insight-1", 0))
            .await
            .unwrap();
        log.agenda(id, queue(1)).await.unwrap();
        log.agenda(id, claim("w", 2)).await.unwrap();
    }
    log.agenda("f1", report("w", 3, vec![failed("x")])).await.unwrap();
    let m = fold(&log).await;
    let summary = m.progress_summary("F", &Visibility::All).unwrap();
    assert_eq!(
        (summary.processing_state, summary.processing_percent),
        (ProcessingState::Complete, None)
    );
    assert_eq!(m.agenda_entry("f1").unwrap().phase(), Phase::Failed);
}

#[tokio::test]
async fn indexes_follow_an_agenda_through_rerun() {
    let log = Log::open().await.unwrap();
    log.agenda("r", submit(agenda("r", "acme", Some("R"), &["x"]), "insight-1", 0)).await.unwrap();
    for command in lifecycle(&["x"], 0) {
        log.agenda("r", command).await.unwrap();
    }
    let m = fold(&log).await;
    assert!(m.agenda_entry("r").unwrap().is_settled());
    log.agenda("r", rerun(50)).await.unwrap();
    let m = fold(&log).await;
    let r = m.agenda_entry("r").unwrap();
    assert!(!r.is_settled(), "a rerun brings the agenda back to life");
    assert_eq!(r.phase(), Phase::Added);
    let all = Visibility::All;
    let mut q = AgendaQuery::new(&all);
    q.processing_state = Some(ProcessingState::Complete);
    assert!(m.select_agendas(&q).items.is_empty(), "no stale index entry");
    q.processing_state = Some(ProcessingState::Waiting);
    assert_eq!(ids(m.select_agendas(&q).items), ["r"]);
    assert_eq!(m.agendas().count_in("insight-1", Phase::Succeeded), 0);
    assert_eq!(m.agendas().count_in("insight-1", Phase::Added), 1);
}

#[tokio::test]
async fn config_models_with_computed_insight_ids_and_deletions() {
    let log = Log::open().await.unwrap();
    log.config(create(customer("acme"), 0)).await.unwrap();
    log.config(create(customer("beta"), 1)).await.unwrap();
    // An insight may name its pool before the pool exists.
    log.config(create(insight("i2", "acme", "pool-1"), 2)).await.unwrap();
    log.config(create(pool("pool-1", "acme"), 3)).await.unwrap();
    log.config(create(pool("pool-2", "acme"), 4)).await.unwrap();
    log.config(create(insight("i1", "acme", "pool-1"), 5)).await.unwrap();
    let mut shared = insight("i3", "beta", "pool-2");
    shared.allowed_customer_ids = vec!["ACME".to_string()];
    log.config(create(shared, 6)).await.unwrap();
    let m = fold(&log).await;
    assert_eq!(m.resource_pool("pool-1").unwrap().insight_ids, ["i1", "i2"]);
    assert_eq!(m.resource_pool("pool-2").unwrap().insight_ids, ["i3"]);

    // Moving an insight updates both pools; deleting one removes it.
    log.config(update(insight("i2", "acme", "pool-2"), 7)).await.unwrap();
    log.config(delete::<pop_domain::Insight>("i3", 8)).await.unwrap();
    log.config(delete::<pop_domain::Customer>("beta", 9)).await.unwrap();
    let m = fold(&log).await;
    assert_eq!(m.resource_pool("pool-1").unwrap().insight_ids, ["i1"]);
    assert_eq!(m.resource_pool("pool-2").unwrap().insight_ids, ["i2"]);
    assert!(m.insight("i3").is_none());
    assert!(m.customer("beta").is_none());
    let customers: Vec<_> = m
        .customers(&Visibility::All, None, 10, |_| true)
        .items
        .into_iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(customers, ["acme"]);
    assert_eq!(m.customer("acme").unwrap().title, "Customer acme");
}

#[tokio::test]
async fn shared_and_global_insights_are_visible() {
    let log = Log::open().await.unwrap();
    let mut shared = insight("shared", "beta", "pool-1");
    shared.allowed_customer_ids = vec!["ACME".to_string()];
    let mut global = insight("global", "gamma", "pool-1");
    global.is_global = true;
    for i in [insight("own", "acme", "pool-1"), shared, global, insight("other", "beta", "pool-1")]
    {
        log.config(create(i, 0)).await.unwrap();
    }
    let m = fold(&log).await;
    let seen: Vec<_> = m
        .insights(&only(&["acme"]), None, 10, |_| true)
        .items
        .into_iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(seen, ["global", "own", "shared"]);
    // Config lists paginate by id.
    let first = m.insights(&Visibility::All, None, 2, |_| true);
    assert_eq!(first.items.len(), 2);
    let second = m.insights(&Visibility::All, first.next.as_ref(), 2, |_| true);
    let all: Vec<_> = first.items.iter().chain(&second.items).map(|i| i.id.clone()).collect();
    assert_eq!(all, ["global", "other", "own", "shared"]);
    assert!(second.next.is_none());
}

#[tokio::test]
async fn unknown_events_move_the_position_and_change_nothing() {
    let log = scenario().await;
    let before_models = fold(&log).await;
    let before = before_models.fingerprint().unwrap();
    let before_content = before_models.content_fingerprint().unwrap();
    log.raw("reaper-1", "ObjectsReaped", 1, b"{}").await.unwrap();
    log.raw("agenda-a1", "AgendaTeleported", 1, b"{}").await.unwrap();
    let last = log.raw("agenda-a1", "AgendaQueued", 9, b"{}").await.unwrap();
    let m = fold(&log).await;
    assert_eq!(m.position(), last);
    assert_ne!(m.position(), Position::START);
    // Same models apart from the position.
    let mut again = fold(&log).await;
    assert_eq!(m.fingerprint().unwrap(), again.fingerprint().unwrap());
    again = ReadModels::from_canonical(&canonical(&again)).unwrap();
    assert_eq!(m.fingerprint().unwrap(), again.fingerprint().unwrap());
    assert_ne!(before, m.fingerprint().unwrap(), "the position is part of the models");
    // The objects are the same: the fingerprint without the position says so.
    assert_eq!(before_content, m.content_fingerprint().unwrap(), "no object changed");
    assert_eq!(m.content_fingerprint().unwrap(), again.content_fingerprint().unwrap());
}

fn canonical(m: &ReadModels) -> Vec<u8> {
    let mut out = Vec::new();
    m.write_canonical(&mut out).unwrap();
    out
}

#[tokio::test]
async fn forgetting_a_deleted_stream_clears_every_index() {
    let log = scenario().await;
    let mut m = fold(&log).await;
    let change = m.forget_stream(Position::from_sequence(10_000), "agenda-a2").unwrap();
    assert!(change.removed);
    assert_eq!(change.customer_id.as_ref(), "acme");
    assert!(m.agenda_entry("a2").is_none());
    assert!(m.agenda_progress("pa2", &Visibility::All).unwrap().is_none());
    let all = Visibility::All;
    let mut q = AgendaQuery::new(&all);
    q.link_id = Some("L");
    assert_eq!(ids(m.select_agendas(&q).items), ["a1", "b1"]);
    assert!(m.forget_stream(Position::from_sequence(10_001), "agenda-a2").is_none());
}

/// The lists and lookups the snapshot-load tests compare.
fn lists(m: &ReadModels) -> Vec<Vec<String>> {
    let all = Visibility::All;
    let mut out = Vec::new();
    for state in [None, Some(ProcessingState::Complete), Some(ProcessingState::Executing)] {
        for customer in [None, Some("customer-1"), Some("acme")] {
            let visibility = customer.map_or(Visibility::All, |c| only(&[c]));
            let mut q = AgendaQuery::new(&visibility);
            q.processing_state = state;
            q.limit = 7;
            out.push(ids(m.select_agendas(&q).items));
        }
    }
    let mut q = AgendaQuery::new(&all);
    q.link_id = Some("L");
    out.push(ids(m.select_agendas(&q).items));
    for progress_id in ["p00000007", "pa1", "pa2", "nothing"] {
        let found = m.agenda_progress(progress_id, &all).unwrap();
        out.push(found.map(|p| p.agenda_id).into_iter().collect());
    }
    out
}

/// The canonical JSON reads back to the saved models (same fingerprint, so the same entries,
/// states and config objects), which answer the same lists and lookups; a corrupt agenda in it
/// is an error. (Snapshots have their own format, loaded on several threads: the next test.)
#[tokio::test]
async fn the_canonical_json_reads_back_to_the_same_models() {
    let log = scenario().await;
    // Finished agendas of several customers beside the scenario's live and finished ones.
    write_agendas(&log, 60, 4, 8, true).await.unwrap();
    let saved = fold(&log).await;
    let json = canonical(&saved);
    let loaded = ReadModels::from_canonical(&json).unwrap();
    assert_eq!(loaded.fingerprint().unwrap(), saved.fingerprint().unwrap());
    assert_eq!(lists(&loaded), lists(&saved));
    assert_eq!(loaded.agendas().len(), saved.agendas().len());
    let text = String::from_utf8(json).unwrap();
    let broken = text.replacen("\"processingState\":\"COMPLETE\"", "\"processingState\":7", 1);
    assert_ne!(broken, text);
    assert!(ReadModels::from_canonical(broken.as_bytes()).is_err());
}

/// The snapshot file (format 3): finished agendas stored in their settled bytes, in chunks
/// checked and decoded on several threads. Whatever the split and the chunk size, the loaded
/// models are the saved ones (same fingerprint: the same canonical JSON of every settled
/// agenda), answer the same lists and lookups, and hold the same agendas settled; a byte
/// flipped inside a chunk, or a chunk cut short, is unusable on any split.
#[tokio::test]
async fn a_snapshot_file_loads_to_the_same_models_on_any_number_of_threads() {
    use pop_projections::{Unusable, snapshot};
    let log = scenario().await;
    write_agendas(&log, 60, 4, 8, true).await.unwrap();
    let saved = fold(&log).await;
    let settled = |m: &ReadModels| {
        m.agendas()
            .entries_by_id()
            .into_iter()
            .map(|e| (e.key().to_string(), e.is_settled()))
            .collect::<Vec<_>>()
    };
    assert!(settled(&saved).iter().filter(|(_, s)| *s).count() >= 60);
    assert!(settled(&saved).iter().any(|(_, s)| !*s), "live agendas too");
    let expected = lists(&saved);
    let dir = tempfile::tempdir().unwrap();
    for chunk_bytes in [1, 2_000, snapshot::CHUNK_BYTES] {
        snapshot::save_in_chunks(dir.path(), &saved, chunk_bytes).unwrap();
        for threads in [1, 2, 3, 7, 64, 1_000] {
            let loaded = snapshot::load_on(dir.path(), Some(threads)).unwrap();
            let at = format!("{threads} threads, chunks of {chunk_bytes} B");
            assert_eq!(loaded.fingerprint().unwrap(), saved.fingerprint().unwrap(), "{at}");
            assert_eq!(lists(&loaded), expected, "{at}");
            assert_eq!(settled(&loaded), settled(&saved), "{at}");
            for entry in saved.agendas().entries_by_id() {
                let again = loaded.agenda_entry(entry.key()).unwrap();
                assert_eq!(
                    again.canonical_json().unwrap(),
                    entry.canonical_json().unwrap(),
                    "{at}"
                );
                assert_eq!(
                    (again.phase(), again.added_ms(), again.updated_ms(), again.entered_ms()),
                    (entry.phase(), entry.added_ms(), entry.updated_ms(), entry.entered_ms()),
                );
            }
        }
    }
    let path = snapshot::path_in(dir.path());
    snapshot::save_in_chunks(dir.path(), &saved, 2_000).unwrap();
    let good = std::fs::read(&path).unwrap();
    // A byte in the middle of the file is inside some chunk's records.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    // A chunk cut short, with the trailer's length made to match: the framing no longer adds
    // up.
    let mut cut = good[..good.len() / 2].to_vec();
    cut.extend_from_slice(&good[good.len() / 2 + 100..]);
    let body_len = (cut.len() - 12 - 16) as u64;
    let at = cut.len() - 16;
    cut[at..at + 8].copy_from_slice(&body_len.to_le_bytes());
    for (bytes, what) in [(flipped, "flipped"), (cut, "cut")] {
        std::fs::write(&path, &bytes).unwrap();
        for threads in [1, 2, 5] {
            let why = snapshot::load_on(dir.path(), Some(threads)).unwrap_err();
            assert!(
                matches!(why, Unusable::Checksum { .. } | Unusable::Malformed { .. }),
                "{what}, {threads} threads: {why}"
            );
            if what == "flipped" {
                assert!(matches!(why, Unusable::Checksum { .. }), "{why}");
            }
        }
    }
}

/// Every page of `visibility`'s list by linkId (`(id, true)`) or insight (`(id, false)`),
/// `limit` a page: the agenda ids in order, and every cursor given.
fn walk_pages(
    m: &ReadModels,
    visibility: &Visibility,
    (name, by_link): (&str, bool),
    descending: bool,
    limit: usize,
) -> (Vec<String>, Vec<Cursor>) {
    let (mut seen, mut cursors) = (Vec::new(), Vec::new());
    let mut after: Option<Cursor> = None;
    loop {
        let mut q = AgendaQuery::new(visibility);
        if by_link {
            q.link_id = Some(name);
        } else {
            q.insight_id = Some(name);
        }
        q.descending = descending;
        q.limit = limit;
        q.after = after.as_ref();
        let page = m.select_agendas(&q);
        seen.extend(ids(page.items));
        match page.next {
            Some(next) => {
                cursors.push(next.clone());
                after = Some(next);
            }
            None => return (seen, cursors),
        }
    }
}

/// The link and insight indexes hold every customer's agendas of a linkId or insight; a
/// customer's list walks its own customers' agendas only (hostile13). With another tenant's
/// agendas past the scan bound ahead of its own, the list used to come back empty, with a
/// cursor naming the other tenant's agenda (customer, client-chosen id and time) and more
/// pages promised. Now the customer's own agendas fill the page, every cursor names one of
/// them, and a view of every customer still merges all in `addedTime` order.
#[tokio::test]
async fn a_customer_list_by_link_or_insight_walks_its_own_agendas_only() {
    use pop_domain::agenda::key;
    let log = Log::open().await.unwrap();
    let other = pop_projections::MAX_SCANNED_PER_PAGE + 5;
    for i in 0..other {
        let id = format!("g{i}");
        let command = submit(agenda(&id, "globex", Some("L"), &["x"]), "insight-1", i as i64);
        log.agenda(&key("globex", &id), command).await.unwrap();
    }
    let late = other as i64;
    for (i, id) in ["a1", "a2", "a3"].into_iter().enumerate() {
        let command = submit(agenda(id, "acme", Some("L"), &["x"]), "insight-1", late + i as i64);
        log.agenda(&key("acme", id), command).await.unwrap();
    }
    // Older builds keyed a stream by the agenda id alone, which may hold a '/': it is acme's
    // by its data, whatever its key reads like.
    let command = submit(agenda("globex/a4", "acme", Some("L"), &["x"]), "insight-1", late + 3);
    log.agenda("globex/a4", command).await.unwrap();
    let m = fold(&log).await;
    let acme = only(&["acme"]);
    for descending in [false, true] {
        for by_link in [true, false] {
            let filter = if by_link { ("L", true) } else { ("insight-1", false) };
            let (seen, cursors) = walk_pages(&m, &acme, filter, descending, 2);
            for next in cursors {
                assert!(
                    next.id.starts_with("acme/") || &*next.id == "globex/a4",
                    "a cursor names {next:?}"
                );
            }
            let mut want = vec!["a1", "a2", "a3", "globex/a4"];
            if descending {
                want.reverse();
            }
            assert_eq!(seen, want, "by link: {by_link}, descending: {descending}");
        }
    }
    // Every customer's, merged in addedTime order: globex's first, acme's last.
    let all = Visibility::All;
    let mut q = AgendaQuery::new(&all);
    q.insight_id = Some("insight-1");
    q.descending = true;
    q.limit = 5;
    let globex_last = format!("g{}", other - 1);
    assert_eq!(
        ids(m.select_agendas(&q).items),
        ["globex/a4", "a3", "a2", "a1", globex_last.as_str()]
    );
    let summary = m.agendas().progress_summary("L", &acme).unwrap();
    assert_eq!(summary.progress_list.len(), 4, "{summary:?}");
    // globex's own list never shows acme's agenda keyed like one of its own.
    let globex = only(&["globex"]);
    let mut q = AgendaQuery::new(&globex);
    q.link_id = Some("L");
    q.descending = true;
    q.limit = 1;
    assert_eq!(ids(m.select_agendas(&q).items), [globex_last]);
}

/// Pages cut between agendas of one millisecond, of several customers, pick up exactly after
/// (before) the cursor in every customer's range: none repeated, none skipped.
#[tokio::test]
async fn pages_cut_inside_one_millisecond_across_customers_lose_and_repeat_nothing() {
    use pop_domain::agenda::key;
    let log = Log::open().await.unwrap();
    let made = [("acme", "a1"), ("acme", "a2"), ("globex", "g1"), ("globex", "g2"), ("zeta", "z1")];
    for (customer, id) in made {
        let command = submit(agenda(id, customer, Some("S"), &["x"]), "insight-1", 5);
        log.agenda(&key(customer, id), command).await.unwrap();
    }
    let m = fold(&log).await;
    let all = Visibility::All;
    let two = only(&["acme", "zeta"]);
    for (visibility, want) in
        [(&all, vec!["a1", "a2", "g1", "g2", "z1"]), (&two, vec!["a1", "a2", "z1"])]
    {
        for by_link in [true, false] {
            for descending in [false, true] {
                let filter = if by_link { ("S", true) } else { ("insight-1", false) };
                let (seen, _) = walk_pages(&m, visibility, filter, descending, 1);
                let mut want = want.clone();
                if descending {
                    want.reverse();
                }
                assert_eq!(seen, want, "link {by_link}, descending {descending}");
            }
        }
    }
}

/// What each customer's agendas take in the log is what their streams' events take (data and
/// metadata), finished agendas included; the same after a snapshot is saved and loaded, and a
/// reaped stream frees its share (hostile57 H2: a quota on it, `--max-log-bytes-per-customer`).
#[tokio::test]
async fn each_customers_log_bytes_are_its_agendas_streams() {
    let log = scenario().await;
    let mut m = fold(&log).await;
    let mut expected = std::collections::BTreeMap::<&str, u64>::new();
    let mut a1 = 0;
    for (id, customer) in
        [("a1", "acme"), ("a2", "acme"), ("b1", "beta"), ("b2", "beta"), ("c1", "gamma")]
    {
        let stream = format!("agenda-{id}");
        let events =
            log.store.read_stream(&stream, 0, 1_000, pop_store::Direction::Forwards).await.unwrap();
        let bytes: u64 = events.iter().map(|e| (e.data.len() + e.metadata.len()) as u64).sum();
        assert!(bytes > 0, "{id}");
        *expected.entry(customer).or_default() += bytes;
        if id == "a1" {
            a1 = bytes;
        }
    }
    let per_customer = |m: &ReadModels| -> Vec<(String, u64)> {
        ["acme", "beta", "gamma"]
            .iter()
            .map(|c| (c.to_string(), m.agendas().log_bytes(&only(&[c]))))
            .collect()
    };
    let want: Vec<(String, u64)> = expected.iter().map(|(c, b)| (c.to_string(), *b)).collect();
    assert_eq!(per_customer(&m), want);
    assert_eq!(m.agendas().log_bytes(&Visibility::All), expected.values().sum::<u64>());
    // A snapshot keeps it: no fold of a state gives it back.
    let dir = tempfile::tempdir().unwrap();
    pop_projections::snapshot::save(dir.path(), &m).unwrap();
    let loaded = pop_projections::snapshot::load(dir.path()).unwrap();
    assert_eq!(per_customer(&loaded), want);
    // a1 (acme, finished) reaped: its share is freed.
    let record = pop_domain::reap::StreamReaped {
        time: chrono::Utc::now(),
        stream: "agenda-a1".to_string(),
        kind: "agenda".to_string(),
        object_id: "a1".to_string(),
        customer_id: "acme".to_string(),
        last_version: None,
        updated_time: None,
        reason: "old".to_string(),
        head_hash: None,
    };
    let reaped = pop_projections::Decoded::Event {
        id: "x".to_string(),
        event: pop_projections::DomainEvent::Reap(pop_domain::reap::ReapEvent::StreamReaped(
            record,
        )),
        stored: 100,
    };
    let next = Position::from_sequence(m.position().commit() + 1);
    m.apply(next, &reaped, None).unwrap();
    assert!(m.agenda_entry("a1").is_none());
    assert_eq!(m.agendas().log_bytes(&only(&["acme"])), expected["acme"] - a1);
}

/// Whether a failed agenda's retry is to come is kept in its entry, through a snapshot, and
/// read without decoding it (hostile60b M1: an insight's delete decoded each failed agenda
/// bound to it under the read models' lock); it follows a cancel that withdraws the retry.
#[tokio::test]
async fn a_failed_agendas_retry_to_come_is_read_without_decoding_and_survives_a_snapshot() {
    use pop_projections::snapshot;
    let log = Log::open().await.unwrap();
    for (id, at) in [("retries", 0), ("ends", 100)] {
        let mut definition = agenda(id, "acme", None, &["x"]);
        if id == "ends" {
            definition.params = params(serde_json::json!({"maximumAttempts": 1}));
        }
        log.agenda(id, submit(definition, "insight-1", at)).await.unwrap();
        log.agenda(id, queue(at + 1)).await.unwrap();
        log.agenda(id, claim("w", at + 2)).await.unwrap();
        log.agenda(id, report("w", at + 3, vec![failed("x")])).await.unwrap();
    }
    let saved = fold(&log).await;
    let due = |m: &ReadModels, id: &str| {
        let entry = m.agenda_entry(id).unwrap();
        assert!(entry.is_settled(), "{id}: finished, settled");
        (entry.retry_due(), entry.progress().unwrap().retry_due())
    };
    assert_eq!(due(&saved, "retries"), (true, true));
    assert_eq!(due(&saved, "ends"), (false, false));
    let dir = tempfile::tempdir().unwrap();
    snapshot::save_in_chunks(dir.path(), &saved, snapshot::CHUNK_BYTES).unwrap();
    let loaded = snapshot::load_on(dir.path(), Some(2)).unwrap();
    assert_eq!(due(&loaded, "retries"), (true, true), "through the snapshot");
    assert_eq!(due(&loaded, "ends"), (false, false));
    // A cancel withdraws the retry.
    log.agenda("retries", cancel(300)).await.unwrap();
    let after = fold(&log).await;
    assert_eq!(due(&after, "retries"), (false, false));
}
