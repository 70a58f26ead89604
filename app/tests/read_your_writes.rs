//! Read-your-writes on one replica (issue 12, item 18): a read that arrives after a write this
//! replica acknowledged sees it without `atLeastPosition` — it waits (bounded) for the read
//! models to apply the write, and says TIMEOUT rather than answer without it. With the read
//! models caught up it answers at once.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pop_app::configs::ConfigOp;
use pop_app::{App, AppConfig, Caller, Code, Principal, Role};
use pop_domain::model::Customer;
use pop_projections::{Projections, ReadModels, Runner, RunnerConfig};
use pop_store::{Commands, EventStore, SqliteOptions, SqliteStore};
use serde_json::json;

async fn store(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    Arc::new(SqliteStore::open(dir.path().join("pop.db"), SqliteOptions::default()).await.unwrap())
}

fn admin() -> Caller {
    Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test")
}

fn customer(id: &str) -> ConfigOp {
    ConfigOp::Create(json!({"id": id, "title": id}))
}

#[tokio::test]
async fn a_read_after_a_write_waits_for_it_and_never_answers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    // Read models that never move: the write below is never applied.
    let projections = Projections::with_models(ReadModels::new());
    let config = AppConfig { read_wait: Duration::from_millis(200), ..AppConfig::default() };
    let app = App::new(Arc::clone(&store), Arc::new(Commands::new(store)), projections, config);
    let caller = admin();

    // Nothing written yet: the read answers at once.
    assert_eq!(app.config_by_id::<Customer>(&caller, "acme", None).await.unwrap(), None);

    app.configure::<Customer>(&caller, customer("acme"), None, None).await.unwrap();
    let started = Instant::now();
    let e = app.config_by_id::<Customer>(&caller, "acme", None).await.unwrap_err();
    assert_eq!(e.code, Code::Timeout, "{e:?}");
    assert_eq!(e.cid.as_deref(), Some("test"));
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited for the write");
}

#[tokio::test]
async fn a_read_right_after_a_write_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move { runner.run(std::future::pending()).await.unwrap() });
    let app = App::new(
        Arc::clone(&store),
        Arc::new(Commands::new(store)),
        projections,
        AppConfig::default(),
    );
    let caller = admin();
    for i in 0..50 {
        let id = format!("c{i}");
        app.configure::<Customer>(&caller, customer(&id), None, None).await.unwrap();
        let found = app.config_by_id::<Customer>(&caller, &id, None).await.unwrap();
        assert_eq!(found.map(|c| c.id), Some(id), "write {i} read back at once");
    }
}

/// Read models that stopped for good at a bad event answer every request at once, saying so:
/// they will not load further until the server restarts (newcomer56 M1: each request waited
/// its whole wait, then "this server is still loading its read models … retry").
#[tokio::test]
async fn read_models_stopped_for_good_are_said_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let bad = pop_store::NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "AgendaQueued".into(),
        schema_version: 1,
        data: b"{\"time\":\"soon\"}".to_vec(),
        metadata: b"{}".to_vec(),
    };
    store.append("agenda-a", pop_store::ExpectedVersion::Any, vec![bad]).await.unwrap();
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    let config = AppConfig { read_wait: Duration::from_secs(600), ..AppConfig::default() };
    let app = App::new(Arc::clone(&store), Arc::new(Commands::new(store)), projections, config);
    // Asked while the runner still runs, and after it stopped.
    let asked = tokio::spawn({
        let app = app.clone();
        async move { app.serving("early").await }
    });
    assert!(runner.run(std::future::pending()).await.is_err(), "the bad event stops the runner");
    for (cid, answer) in [
        ("early", tokio::time::timeout(Duration::from_secs(60), asked).await.unwrap().unwrap()),
        ("late", tokio::time::timeout(Duration::from_secs(60), app.serving("late")).await.unwrap()),
    ] {
        let e = answer.unwrap_err();
        assert_eq!(e.code, Code::Unavailable, "{e:?}");
        assert_eq!(e.cid.as_deref(), Some(cid));
        assert!(
            e.message.contains("stopped and will not load further until it is restarted"),
            "{e:?}"
        );
        assert!(e.message.contains("bad event"), "the cause is said: {e:?}");
    }
}
