//! A claim whose commit failed past the point where it may be stored (the store's outcome
//! unknown: an fsync that failed, a connection closed in the COMMIT) and was stored after all:
//! nobody was answered its lease, so the agenda would wait the lease out and then lose an
//! attempt to the reclaimer (ops3am25). The replica hands it back once the store answers.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::stream::BoxStream;
use pop_app::configs::ConfigOp;
use pop_app::{App, AppConfig, Caller, Principal, Role};
use pop_domain::agenda::{AgendaCommand, AgendaState, key};
use pop_domain::model::{Customer, Insight, ResourcePool};
use pop_projections::{Runner, RunnerConfig};
use pop_store::{
    AppendResult, Commands, Direction, Durability, EventMetadata, EventStore, ExpectedVersion,
    NewEvent, Position, RecordedEvent, SqliteOptions, SqliteStore, StoreError,
};
use serde_json::json;

/// Bound on every wait of the test for something that should happen (never a timing figure).
const BOUND: Duration = Duration::from_secs(10);

/// The embedded store, except that the first append of a claim is stored and then answered
/// "outcome unknown", as a commit whose fsync failed after its frames reached the file.
struct StoredButUnknown {
    inner: Arc<dyn EventStore>,
    failed_once: AtomicBool,
}

#[async_trait]
impl EventStore for StoredButUnknown {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let claim = events.iter().any(|e| e.event_type == "AgendaClaimed");
        let result = self.inner.append(stream, expected, events).await?;
        if claim && !self.failed_once.swap(true, Ordering::SeqCst) {
            let io = std::io::Error::other("fsync failed");
            return Err(StoreError::OutcomeUnknown { why: "a test's", source: Arc::new(io) });
        }
        Ok(result)
    }
    async fn read_stream(
        &self,
        s: &str,
        from: u64,
        max: usize,
        d: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
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

#[tokio::test]
async fn a_claim_stored_though_its_commit_failed_is_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions { durability: Durability::Normal, ..SqliteOptions::default() };
    let sqlite: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(dir.path().join("pop.db"), options).await.unwrap());
    let store: Arc<dyn EventStore> =
        Arc::new(StoredButUnknown { inner: sqlite, failed_once: AtomicBool::new(false) });
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move { runner.run(std::future::pending()).await.unwrap() });
    let commands = Arc::new(Commands::new(Arc::clone(&store)));
    let app =
        App::new(Arc::clone(&store), Arc::clone(&commands), projections, AppConfig::default());
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    let pool = json!({"id": "pool", "customerId": "ops", "title": "pool"});
    app.configure::<ResourcePool>(&admin, ConfigOp::Create(pool), None, None).await.unwrap();
    let customer = json!({"id": "acme", "title": "acme", "resourcePoolId": "pool"});
    app.configure::<Customer>(&admin, ConfigOp::Create(customer), None, None).await.unwrap();
    let insight = json!({"id": "work", "customerId": "acme", "title": "work",
        "resourcePoolId": "pool", "queueSize": 10, "mappers": {"operationType": ["work"]}});
    app.configure::<Insight>(&admin, ConfigOp::Create(insight), None, None).await.unwrap();
    let user = Caller::new(Principal::new("acme-user", Role::User, &["acme"]), "test");
    let agenda = json!({"id": "a1", "customerId": "acme", "maximumAttempts": 1,
        "operations": [{"name": "only", "type": "work", "payload": {}}]});
    app.submit(&user, agenda, None, None).await.unwrap();
    let metadata = EventMetadata { customer_id: Some("acme".into()), ..EventMetadata::default() };
    let queue = AgendaCommand::Queue { now: Utc::now() };
    commands.execute::<AgendaState>(&key("acme", "a1"), &metadata, &queue).await.unwrap();
    app.settle(None).await.unwrap();

    let worker = Caller::new(Principal::new("w1", Role::Service, &["acme"]), "test");
    let refused = app.get_agenda(&worker, "work", 1, None).await.unwrap_err();
    assert!(refused.message.contains("is not known"), "{}", refused.message);
    // The claim is in the log under a lease nobody was told of ...
    let (state, _) = commands.load::<AgendaState>(&key("acme", "a1")).await.unwrap();
    assert!(state.lease().is_some(), "the claim was stored");
    // ... and is handed back (to `added`, where the scheduler queues it again), no attempt
    // lost.
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let (state, _) = commands.load::<AgendaState>(&key("acme", "a1")).await.unwrap();
        if state.lease().is_none() {
            assert_eq!(state.message(), "added", "handed back");
            assert_eq!(state.progress().attempts_completed, 0, "no attempt lost");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not handed back within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queue = AgendaCommand::Queue { now: Utc::now() };
    commands.execute::<AgendaState>(&key("acme", "a1"), &metadata, &queue).await.unwrap();
    app.settle(None).await.unwrap();
    let claimed = app.get_agenda(&worker, "work", 1, None).await.unwrap();
    assert_eq!(claimed[0].agenda().map(|a| a.id.as_str()), Some("a1"), "claimable again");
}
