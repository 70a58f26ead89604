//! Naming another customer's agenda (its id and `customerId`) is answered NOT_FOUND without
//! its stream being read (hostile53 M1: the answer was right, but came 5–16 ms later per 50
//! aliases when the agenda existed, the more the larger it was, as its stream was folded
//! first: a tenant learned which ids another used, and roughly how large their agendas were).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

mod support;

use pop_app::configs::ConfigOp;
use pop_app::resolve::Named;
use pop_app::{App, AppConfig, AppResult, Caller, Principal, Role};
use pop_domain::model::{Insight, ResourcePool};
use pop_store::{Commands, EventStore};
use serde_json::json;
use support::{acme_world, sqlite, submit_queued};

/// The streams read one by one ([`support::Hooks`]).
#[derive(Default)]
struct Noting {
    read: Mutex<Vec<String>>,
}

impl support::Hooks for Noting {
    fn reading(&self, stream: &str) {
        self.read.lock().unwrap().push(stream.to_string());
    }
}

/// Another App over `w`'s store and read models, with a command cache of its own that has
/// held nothing (a restarted replica, or another one).
fn fresh_replica(w: &support::World) -> App {
    App::new(
        Arc::clone(&w.store),
        Arc::new(Commands::new(Arc::clone(&w.store))),
        w.projections.clone(),
        AppConfig::default(),
    )
}

/// What a request answered, as the caller sees it: the error's code and text.
fn answer<T: std::fmt::Debug>(result: AppResult<T>) -> String {
    match result {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("{:?} {}", e.code, e.message),
    }
}

/// Every agenda request of `caller` naming acme's agenda `id`, in order.
async fn name_it(app: &App, caller: &Caller, id: &str) -> Vec<String> {
    let named = Named::of(id, Some("acme"));
    let work = Named { work: true, ..named };
    let report = json!({"id": id, "agendaId": id, "customerId": "acme",
        "processingState": "EXECUTING", "operationProgress": []});
    let ops = json!([{"name": "more", "type": "work", "payload": {}}]);
    vec![
        answer(app.cancel(caller, named, None, None).await),
        answer(app.rerun(caller, named, Vec::new(), None).await),
        answer(app.expand(caller, work, ops, None, None).await),
        answer(app.release(caller, work, "lease", None).await),
        answer(app.report(caller, report, None, None).await),
        answer(app.agenda_history(caller, named, None, None).await.map(|h| h.is_some())),
        answer(app.agenda_events(caller, named, None, None).await.map(|e| e.is_some())),
    ]
}

#[tokio::test]
async fn another_customers_agenda_is_not_read_for_whom_may_not_act_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(support::Hooked { inner: sqlite(dir.path()).await, hooks: Noting::default() });
    let w = acme_world(Arc::clone(&store) as Arc<dyn EventStore>).await;
    submit_queued(&w, "secret", json!({})).await;
    // A replica whose command cache has never held it.
    let fresh = || fresh_replica(&w);
    let (app, stream) = (fresh(), "agenda-acme/secret");
    for (name, role) in
        [("evil-user", Role::User), ("evil-svc", Role::Service), ("evil-admin", Role::Admin)]
    {
        let evil = Caller::new(Principal::new(name, role, &["evil"]), "test");
        store.hooks.read.lock().unwrap().clear();
        let existing = name_it(&app, &evil, "secret").await;
        let read = store.hooks.read.lock().unwrap().clone();
        assert!(!read.iter().any(|s| s == stream), "{name} made the server read {stream}");
        // Word for word what an id nobody uses answers.
        let absent = name_it(&app, &evil, "nobody-uses-this").await;
        assert_eq!(
            existing,
            absent.iter().map(|a| a.replace("nobody-uses-this", "secret")).collect::<Vec<_>>(),
            "{name}"
        );
        // Refused (a role's refusal is the token's alone), or nothing found.
        assert!(
            existing.iter().all(|a| !a.starts_with("ok ") || a == "ok false"),
            "{name}: {existing:?}"
        );
    }
    // acme's own request reads it (the noting sees what it should).
    let acme = Caller::new(Principal::new("acme-user", Role::User, &["acme"]), "test");
    store.hooks.read.lock().unwrap().clear();
    let fresh_app = fresh();
    fresh_app.cancel(&acme, Named::of("secret", Some("acme")), None, None).await.unwrap();
    assert!(store.hooks.read.lock().unwrap().iter().any(|s| s == stream));
}

/// The lease decides who may report, not the insight as it is configured now: a pool's worker
/// holding another customer's agenda still reports on it through a replica whose command cache
/// never held it, after the insight moved to another pool (review-s51 H1: refused NOT_FOUND
/// after a restart).
#[tokio::test]
async fn a_lease_holder_of_another_customers_agenda_still_reports_on_a_fresh_replica() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    let global = |pool: &str| {
        json!({"id": "work", "customerId": "acme", "title": "work", "isGlobal": true,
            "resourcePoolId": pool, "queueSize": 10, "mappers": {"operationType": ["work"]}})
    };
    w.app.configure::<Insight>(&admin, ConfigOp::Update(global("pool")), None, None).await.unwrap();
    submit_queued(&w, "job", json!({})).await;
    // The pool's owner `ops` runs acme's global insight `work`: its worker takes acme's agenda.
    let ops = Caller::new(Principal::new("ops-worker", Role::Service, &["ops"]), "test");
    let claimed = w.app.get_agenda(&ops, "work", 1, None).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let handed = claimed[0].progress().id.clone();
    // The insight moves to acme's own pool: ops runs it no more.
    let pool = json!({"id": "acme-pool", "customerId": "acme", "title": "acme's"});
    w.app.configure::<ResourcePool>(&admin, ConfigOp::Create(pool), None, None).await.unwrap();
    w.app
        .configure::<Insight>(&admin, ConfigOp::Update(global("acme-pool")), None, None)
        .await
        .unwrap();
    w.app.settle(None).await.unwrap();

    let fresh = fresh_replica(&w);
    let report = json!({"id": handed, "processingState": "EXECUTING",
        "operationProgress": [{"operation": "only", "processingState": "EXECUTING",
            "percentComplete": 50.0}]});
    let done = fresh.report(&ops, report, None, None).await.unwrap();
    let only = &done.progress().operation_progress[0];
    assert_eq!(only.percent_complete, Some(50.0));
}

/// A stream keyed by the agenda id alone (written by hand or an older build) names no
/// customer in its key: its own customer's callers still reach it, as its stream decides.
#[tokio::test]
async fn an_agenda_keyed_by_its_id_alone_is_reached_by_its_customer() {
    use pop_domain::agenda::{AgendaCommand, AgendaState};
    use pop_domain::model::{Agenda, AgendaInsight, Operation};
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    let agenda = Agenda {
        id: "old".into(),
        customer_id: "acme".into(),
        progress_id: Some("old".into()),
        operations: vec![Operation {
            name: "only".into(),
            op_type: "work".into(),
            ..Operation::default()
        }],
        ..Agenda::default()
    };
    let insight = AgendaInsight { resource_pool_id: "pool".into(), insight_id: "work".into() };
    let submit = AgendaCommand::Submit { agenda, insight, now: chrono::Utc::now() };
    let metadata = pop_store::EventMetadata {
        customer_id: Some("acme".into()),
        ..pop_store::EventMetadata::default()
    };
    w.commands.execute::<AgendaState>("old", &metadata, &submit).await.unwrap();
    w.app.settle(None).await.unwrap();
    let fresh = fresh_replica(&w);
    let acme = Caller::new(Principal::new("acme-user", Role::User, &["acme"]), "test");
    let cancelled = fresh.cancel(&acme, Named::id("old"), None, None).await.unwrap();
    assert_eq!(cancelled.progress().processing_state_message.as_deref(), Some("cancelled"));
}
