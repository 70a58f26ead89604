//! As-of reads (issue 15): an agenda's life — submit, queue, claim, reports at known commit
//! times, completion, a rerun, a cancel — is recorded as the projections showed it after each
//! step; afterwards every as-of read (by position and by time, also between steps) must equal
//! what was shown at that moment. A property test checks that as-of at the head equals the
//! live read models for random lifecycles, and tenancy holds as for live reads.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};
use pop_app::asof::AsOf;
use pop_app::configs::ConfigOp;
use pop_app::resolve::Named;
use pop_app::{App, AppConfig, Caller, Code, Principal, Role};
use pop_domain::agenda::{AgendaCommand, AgendaState, key};
use pop_domain::model::{
    Agenda, AgendaProgress, Customer, Insight, OperationProgress, ProgressSummary, ResourcePool,
};
use pop_projections::{Runner, RunnerConfig};
use pop_store::{
    Clock, Commands, Durability, EventMetadata, EventStore, Position, SqliteOptions, SqliteStore,
};
use proptest::prelude::*;
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

struct World {
    app: App,
    commands: Arc<Commands>,
    store: Arc<dyn EventStore>,
    /// The store's clock, in epoch milliseconds: commit times are what the test sets.
    now: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

impl World {
    fn set_time(&self, t: DateTime<Utc>) {
        self.now.store(t.timestamp_millis(), Ordering::SeqCst);
    }
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0).unwrap() + Duration::minutes(minutes)
}

fn user(tenant: &str) -> Caller {
    Caller::new(Principal::new(&format!("{tenant}-user"), Role::User, &[tenant]), "test")
}

fn worker(tenant: &str) -> Caller {
    Caller::new(Principal::new(&format!("{tenant}-worker"), Role::Service, &[tenant]), "test")
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0 - 60_000));
    let clock_now = Arc::clone(&now);
    let clock: Clock = Arc::new(move || {
        DateTime::from_timestamp_millis(clock_now.load(Ordering::SeqCst)).unwrap_or_default()
    });
    let options = SqliteOptions {
        durability: Durability::Normal,
        clock,
        min_free_bytes: 0,
        chain_unchained: false,
        accept_wal_damage: false,
    };
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(dir.path().join("pop.db"), options).await.unwrap());
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move { runner.run(std::future::pending()).await.unwrap() });
    let commands = Arc::new(Commands::new(Arc::clone(&store)));
    let app =
        App::new(Arc::clone(&store), Arc::clone(&commands), projections, AppConfig::default());
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    let pool = json!({"id": "pool", "customerId": "ops", "title": "pool"});
    app.configure::<ResourcePool>(&admin, ConfigOp::Create(pool), None, None).await.unwrap();
    for tenant in ["acme", "globex"] {
        let customer = json!({"id": tenant, "title": tenant, "resourcePoolId": "pool"});
        app.configure::<Customer>(&admin, ConfigOp::Create(customer), None, None).await.unwrap();
        let insight = json!({"id": format!("{tenant}-work"), "customerId": tenant, "title": tenant,
            "resourcePoolId": "pool", "queueSize": 10, "isGlobal": false,
            "mappers": {"operationType": ["work"]}});
        app.configure::<Insight>(&admin, ConfigOp::Create(insight), None, None).await.unwrap();
    }
    World { app, commands, store, now, _dir: dir }
}

fn agenda_json(tenant: &str, id: &str, ops: &[&str]) -> serde_json::Value {
    let ops: Vec<serde_json::Value> =
        ops.iter().map(|n| json!({"name": n, "type": "work", "payload": {}})).collect();
    json!({"id": id, "customerId": tenant, "linkId": "batch", "operations": ops})
}

async fn queue(w: &World, tenant: &str, id: &str) {
    let metadata = EventMetadata { customer_id: Some(tenant.into()), ..EventMetadata::default() };
    let command = AgendaCommand::Queue { now: Utc::now() };
    // Refused when not queueable: the lifecycle goes on either way.
    let _ = w.commands.execute::<AgendaState>(&key(tenant, id), &metadata, &command).await;
}

async fn report(w: &World, tenant: &str, id: &str, op: &str, state: &str, percent: f64) {
    let report = json!({"id": id, "processingState": "EXECUTING",
        "operationProgress": [{"operation": op, "processingState": state,
            "processingStateMessage": "succeeded", "percentComplete": percent}]});
    // Refused when the agenda is not leased to the worker: fine for random lifecycles.
    let _ = w.app.report(&worker(tenant), report, None, None).await;
}

/// What the read models show of the acme agenda `a` and the `batch` link at one moment.
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    agenda: Option<Agenda>,
    progress: Option<AgendaProgress>,
    operation: Option<OperationProgress>,
    summary: ProgressSummary,
}

async fn shown_live(w: &World, caller: &Caller) -> Shown {
    let app = &w.app;
    app.settle(None).await.unwrap();
    Shown {
        agenda: app.agenda(caller, "a", None, None).await.unwrap(),
        progress: app.agenda_progress(caller, "a", None, None).await.unwrap(),
        operation: app.operation_progress(caller, "a-x", None, None).await.unwrap(),
        summary: app.progress_summary(caller, "batch", None, None).await.unwrap(),
    }
}

async fn shown_as_of(w: &World, caller: &Caller, bound: AsOf) -> Shown {
    let app = &w.app;
    Shown {
        agenda: app.agenda_as_of(caller, "a", None, bound).await.unwrap(),
        progress: app.agenda_progress_as_of(caller, "a", None, bound).await.unwrap(),
        operation: app.operation_progress_as_of(caller, "a-x", None, bound).await.unwrap(),
        summary: app.progress_summary_as_of(caller, "batch", None, bound).await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_each_moment_equals_what_the_projections_showed_then() {
    let w = world().await;
    let acme = user("acme");
    let before = shown_live(&w, &acme).await;
    let start = w.store.head().await.unwrap();
    let mut moments: Vec<(Position, DateTime<Utc>, Shown)> = Vec::new();
    let script = [
        "submit a", "submit b", "queue a", "claim", "x half", "x done", "y done", "rerun a",
        "cancel b",
    ];
    for (i, what) in script.iter().enumerate() {
        let minute = 10 * (i as i64 + 1);
        w.set_time(at(minute));
        act(&w, what).await;
        let shown = shown_live(&w, &acme).await;
        moments.push((w.store.head().await.unwrap(), at(minute), shown));
    }
    // The script really moved: a completed, then was rerun; b was cancelled.
    let states: Vec<String> = moments
        .iter()
        .map(|(_, _, s)| {
            s.progress.as_ref().map_or("none".into(), |p| {
                format!("{:?}/{:?}", p.processing_state, p.percent_complete)
            })
        })
        .collect();
    assert!(states[6].starts_with("Complete"), "{states:?}");
    assert!(states[7].starts_with("Waiting"), "{states:?}");
    assert_eq!(moments[5].2.operation.as_ref().unwrap().percent_complete, Some(100.0));
    assert_eq!(moments[4].2.operation.as_ref().unwrap().percent_complete, Some(50.0));

    // The store's clock past the last moment and the minutes after it (a time to come is
    // refused, below).
    w.set_time(at(100));
    // Before anything: nothing.
    assert_eq!(shown_as_of(&w, &acme, AsOf::Position(start)).await, before);
    assert_eq!(shown_as_of(&w, &acme, AsOf::Time(at(5))).await, before);
    for (i, (position, time, shown)) in moments.iter().enumerate() {
        let by_position = shown_as_of(&w, &acme, AsOf::Position(*position)).await;
        assert_eq!(&by_position, shown, "moment {i} by position {position}");
        let by_time = shown_as_of(&w, &acme, AsOf::Time(*time)).await;
        assert_eq!(&by_time, shown, "moment {i} by time {time}");
        // Any time until the next step's commit shows the same.
        let between = *time + Duration::minutes(5);
        assert_eq!(&shown_as_of(&w, &acme, AsOf::Time(between)).await, shown, "moment {i} + 5 min");
    }

    // Tenancy: another customer's user sees nothing as of any moment, exactly as live.
    let globex = user("globex");
    let (position, time, _) = moments.last().unwrap();
    for bound in [AsOf::Position(*position), AsOf::Time(*time)] {
        let seen = shown_as_of(&w, &globex, bound).await;
        assert_eq!(seen, shown_live(&w, &globex).await);
        assert!(seen.agenda.is_none() && seen.progress.is_none() && seen.operation.is_none());
        assert!(seen.summary.progress_list.is_empty());
    }
    // A position beyond the head is refused, naming the field.
    let beyond = Position::from_sequence(position.sequence().unwrap() + 100);
    let e = w.app.agenda_as_of(&acme, "a", None, AsOf::Position(beyond)).await.unwrap_err();
    assert_eq!((e.code, e.problems[0].field.as_str()), (Code::Validation, "asOf"));
    assert_eq!(e.cid.as_deref(), Some("test"));
    // So is a time later than the store's clock: it could still gain events (auditor32: the
    // same "as of" a time ahead answered queued, then scheduled). Its own moment is history.
    let e = w.app.agenda_as_of(&acme, "a", None, AsOf::Time(at(101))).await.unwrap_err();
    assert_eq!((e.code, e.problems[0].field.as_str()), (Code::Validation, "asOf"));
    assert!(e.message.contains("later than the store's time"), "{}", e.message);
    // So is one within the last second (a change may commit up to a second after its time);
    // a second back is history.
    let recent = at(100) - Duration::milliseconds(500);
    let e = w.app.agenda_as_of(&acme, "a", None, AsOf::Time(recent)).await.unwrap_err();
    assert!(e.message.contains("within a second of the store's time"), "{}", e.message);
    let settled = at(100) - Duration::seconds(1);
    assert!(w.app.agenda_as_of(&acme, "a", None, AsOf::Time(settled)).await.is_ok());
}

async fn act(w: &World, what: &str) {
    let acme = user("acme");
    match what {
        "submit a" => {
            w.app.submit(&acme, agenda_json("acme", "a", &["x", "y"]), None, None).await.unwrap();
        }
        "submit b" => {
            w.app.submit(&acme, agenda_json("acme", "b", &["z"]), None, None).await.unwrap();
        }
        "queue a" => queue(w, "acme", "a").await,
        "claim" => {
            let got = w.app.get_agenda(&worker("acme"), "acme-work", 1, None).await.unwrap();
            assert_eq!(got.len(), 1);
        }
        "x half" => report(w, "acme", "a", "x", "EXECUTING", 50.0).await,
        "x done" => report(w, "acme", "a", "x", "COMPLETE", 100.0).await,
        "y done" => report(w, "acme", "a", "y", "COMPLETE", 100.0).await,
        "rerun a" => {
            w.app.rerun(&acme, Named::id("a"), Vec::new(), None).await.unwrap();
        }
        "cancel b" => {
            w.app.cancel(&acme, Named::id("b"), None, None).await.unwrap();
        }
        other => unreachable!("{other}"),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Submit(usize),
    Queue(usize),
    Claim,
    Report { agenda: usize, op: usize, done: bool },
    Rerun(usize),
    Cancel(usize),
}

const AGENDAS: [&str; 2] = ["a", "b"];
const OPS: [&str; 2] = ["x", "y"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..2usize).prop_map(Step::Submit),
        2 => (0..2usize).prop_map(Step::Queue),
        2 => Just(Step::Claim),
        4 => (0..2usize, 0..2usize, any::<bool>()).prop_map(|(agenda, op, done)| Step::Report { agenda, op, done }),
        1 => (0..2usize).prop_map(Step::Rerun),
        1 => (0..2usize).prop_map(Step::Cancel),
    ]
}

async fn lifecycle(steps: &[Step]) -> Result<(), TestCaseError> {
    let w = world().await;
    let acme = user("acme");
    for (i, s) in steps.iter().enumerate() {
        w.set_time(at(i as i64));
        match s {
            Step::Submit(a) => {
                let _ =
                    w.app.submit(&acme, agenda_json("acme", AGENDAS[*a], &OPS), None, None).await;
            }
            Step::Queue(a) => queue(&w, "acme", AGENDAS[*a]).await,
            Step::Claim => {
                let _ = w.app.get_agenda(&worker("acme"), "acme-work", 1, None).await;
            }
            Step::Report { agenda, op, done } => {
                let (state, percent) =
                    if *done { ("COMPLETE", 100.0) } else { ("EXECUTING", 40.0) };
                report(&w, "acme", AGENDAS[*agenda], OPS[*op], state, percent).await;
            }
            Step::Rerun(a) => {
                let _ = w.app.rerun(&acme, Named::id(AGENDAS[*a]), Vec::new(), None).await;
            }
            Step::Cancel(a) => {
                let _ = w.app.cancel(&acme, Named::id(AGENDAS[*a]), None, None).await;
            }
        }
    }
    w.app.settle(None).await.unwrap();
    let head = w.store.head().await.unwrap();
    let later = at(steps.len() as i64 + 1);
    w.set_time(later + Duration::seconds(1));
    for bound in [AsOf::Position(head), AsOf::Time(later)] {
        for id in AGENDAS {
            prop_assert_eq!(
                w.app.agenda_progress_as_of(&acme, id, None, bound).await.unwrap(),
                w.app.agenda_progress(&acme, id, None, None).await.unwrap(),
                "progress of {} as of {:?}",
                id,
                bound
            );
            prop_assert_eq!(
                w.app.agenda_as_of(&acme, id, None, bound).await.unwrap(),
                w.app.agenda(&acme, id, None, None).await.unwrap()
            );
            for op in OPS {
                let op_id = format!("{id}-{op}");
                prop_assert_eq!(
                    w.app.operation_progress_as_of(&acme, &op_id, None, bound).await.unwrap(),
                    w.app.operation_progress(&acme, &op_id, None, None).await.unwrap()
                );
            }
        }
        prop_assert_eq!(
            w.app.progress_summary_as_of(&acme, "batch", None, bound).await.unwrap(),
            w.app.progress_summary(&acme, "batch", None, None).await.unwrap()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn as_of_the_head_equals_the_live_read_models(steps in proptest::collection::vec(step(), 1..14)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(lifecycle(&steps))?;
    }
}

/// A time pop shows (`updatedTime`: the command's clock, read before the commit) reads the
/// state it labels, though its commit landed later (auditor15 measured 1–18 ms; as of its own
/// `addedTime` a submission read as absent); a millisecond before it, not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_a_shown_time_reads_the_change_it_labels() {
    // The world's setup was committed at T0 (2027), ahead of the wall clock: as after a clock
    // stepped back, commits run on from that time, and so do the times commands show, so
    // as of a shown time is still the state it labels (review-s36b: with the commits held and
    // the shown times not, a change read as absent as of its own time).
    let w = world().await;
    let acme = user("acme");
    // The store stamps the commit 900 ms after the command's clock read its time (a margin
    // no loaded machine eats up between these two lines, within the second a change's own
    // time may precede its commit).
    w.set_time(Utc::now() + Duration::milliseconds(900));
    act(&w, "submit a").await;
    let live = shown_live(&w, &acme).await;
    let progress = live.progress.clone().expect("submitted");
    let shown = progress.updated_time.expect("a shown time");
    // Read once the time is settled history (a second on).
    w.set_time(shown + Duration::seconds(2));
    let as_of = shown_as_of(&w, &acme, AsOf::Time(shown)).await;
    assert_eq!(as_of.progress, Some(progress));
    assert_eq!(as_of.agenda, live.agenda);
    // A millisecond before it, the agenda did not exist yet.
    let before = shown_as_of(&w, &acme, AsOf::Time(shown - Duration::milliseconds(1))).await;
    assert!(before.progress.is_none(), "{before:?}");
}

/// Each entry of an agenda's history is shown at the time it took effect for an as-of read:
/// as of that time the agenda reads as the entry says, and a microsecond before it as the
/// entry before it says (auditor61 M1: the commit time was shown, and a microsecond before a
/// row the agenda already read as after it). Its commit is `committed_time`, never earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_history_entry_is_shown_when_an_as_of_read_first_shows_it() {
    let w = world().await;
    let acme = user("acme");
    // Commits stamped 900 ms after the commands' own times, as a loaded writer may.
    w.set_time(Utc::now() + Duration::milliseconds(900));
    for step in ["submit a", "queue a", "claim", "x half", "x done", "y done"] {
        act(&w, step).await;
        // Each step on models that have the one before (a claim reads the queue there).
        w.app.settle(None).await.unwrap();
        w.set_time(Utc::now() + Duration::milliseconds(900));
    }
    let history = w.app.agenda_history(&acme, Named::id("a"), None, None).await.unwrap().unwrap();
    assert!(history.entries.len() >= 6, "{:?}", history.entries.len());
    let last = history.entries.last().unwrap().committed_time;
    w.set_time(last + Duration::seconds(2));
    let state = |p: &Option<AgendaProgress>| {
        p.as_ref()
            .map(|p| (p.processing_state, p.processing_state_message.clone(), p.percent_complete))
    };
    // The events of one command take effect together: as of their time, the last one's state.
    let as_of =
        |t: DateTime<Utc>| {
            history.entries.iter().rev().find(|e| e.time <= t).map(|e| {
                (e.processing_state, e.processing_state_message.clone(), e.percent_complete)
            })
        };
    for entry in &history.entries {
        assert!(entry.time <= entry.committed_time, "{entry:?}");
        let at = shown_as_of(&w, &acme, AsOf::Time(entry.time)).await.progress;
        assert_eq!(state(&at), as_of(entry.time), "as of {} ({})", entry.time, entry.event_type);
        let just_before = entry.time - Duration::microseconds(1);
        let earlier = shown_as_of(&w, &acme, AsOf::Time(just_before)).await.progress;
        assert_eq!(
            state(&earlier),
            as_of(just_before),
            "as of {just_before}, before {}",
            entry.event_type
        );
    }
}
