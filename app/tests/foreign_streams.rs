//! Naming another customer's agenda (its id and `customerId`) is answered NOT_FOUND without
//! its stream being read (hostile53 M1: the answer was right, but came 5–16 ms later per 50
//! aliases when the agenda existed, the more the larger it was, as its stream was folded
//! first: a tenant learned which ids another used, and roughly how large their agendas were).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

mod support;

use async_trait::async_trait;
use futures::stream::BoxStream;
use pop_app::resolve::Named;
use pop_app::{App, AppConfig, AppResult, Caller, Principal, Role};
use pop_store::{
    AppendResult, Commands, Direction, EventStore, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StoreError,
};
use serde_json::json;
use support::{acme_world, sqlite};

/// The embedded store, noting the streams read one by one.
struct Noting {
    inner: Arc<dyn EventStore>,
    read: Mutex<Vec<String>>,
}

#[async_trait]
impl EventStore for Noting {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        s: &str,
        from: u64,
        max: usize,
        d: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read.lock().unwrap().push(s.to_string());
        self.inner.read_stream(s, from, max, d).await
    }
    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, max).await
    }
    fn subscribe_all(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        self.inner.subscribe_all(after)
    }
    async fn delete_stream(&self, s: &str, e: ExpectedVersion) -> Result<(), StoreError> {
        self.inner.delete_stream(s, e).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }
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
    let store = Arc::new(Noting { inner: sqlite(dir.path()).await, read: Mutex::new(Vec::new()) });
    let w = acme_world(Arc::clone(&store) as Arc<dyn EventStore>).await;
    support::submit_queued(&w, "secret", json!({})).await;
    // A replica whose command cache has never held it.
    let fresh = || {
        App::new(
            Arc::clone(&w.store),
            Arc::new(Commands::new(Arc::clone(&w.store))),
            w.projections.clone(),
            AppConfig::default(),
        )
    };
    let (app, stream) = (fresh(), "agenda-acme/secret");
    for (name, role) in
        [("evil-user", Role::User), ("evil-svc", Role::Service), ("evil-admin", Role::Admin)]
    {
        let evil = Caller::new(Principal::new(name, role, &["evil"]), "test");
        store.read.lock().unwrap().clear();
        let existing = name_it(&app, &evil, "secret").await;
        let read = store.read.lock().unwrap().clone();
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
    store.read.lock().unwrap().clear();
    let fresh_app = fresh();
    fresh_app.cancel(&acme, Named::of("secret", Some("acme")), None, None).await.unwrap();
    assert!(store.read.lock().unwrap().iter().any(|s| s == stream));
}
