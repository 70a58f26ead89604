//! What some of the application's tests share: an App over a store of the test's choosing
//! (the embedded one, or a wrapper of it), with acme's pool, customer and insight `work`, and
//! an agenda of acme's submitted and queued on it.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use pop_app::configs::ConfigOp;
use pop_app::{App, AppConfig, Caller, Principal, Role};
use pop_domain::agenda::{AgendaCommand, AgendaState, key};
use pop_domain::model::{Customer, Insight, ResourcePool};
use pop_projections::{Projections, Runner, RunnerConfig};
use pop_store::{Commands, Durability, EventMetadata, EventStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};

pub struct World {
    pub store: Arc<dyn EventStore>,
    pub commands: Arc<Commands>,
    pub projections: Projections,
    pub app: App,
}

impl World {
    /// Another App over the same store and read models, configured as `config` (a server
    /// restarted with other limits).
    pub fn app_with(&self, config: AppConfig) -> App {
        App::new(
            Arc::clone(&self.store),
            Arc::clone(&self.commands),
            self.projections.clone(),
            config,
        )
    }
}

/// The embedded store in `dir`, without a sync per commit.
pub async fn sqlite(dir: &Path) -> Arc<dyn EventStore> {
    let options = SqliteOptions { durability: Durability::Normal, ..SqliteOptions::default() };
    Arc::new(SqliteStore::open(dir.join("pop.db"), options).await.unwrap())
}

/// An App over `store` (its projections running) with acme's pool `pool`, customer `acme` and
/// insight `work` (operations of type `work`).
pub async fn acme_world(store: Arc<dyn EventStore>) -> World {
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move { runner.run(std::future::pending()).await.unwrap() });
    let commands = Arc::new(Commands::new(Arc::clone(&store)));
    let app = App::new(
        Arc::clone(&store),
        Arc::clone(&commands),
        projections.clone(),
        AppConfig::default(),
    );
    let admin = Caller::new(Principal::new("admin", Role::Admin, &["*"]), "test");
    let pool = json!({"id": "pool", "customerId": "ops", "title": "pool"});
    app.configure::<ResourcePool>(&admin, ConfigOp::Create(pool), None, None).await.unwrap();
    let customer = json!({"id": "acme", "title": "acme", "resourcePoolId": "pool"});
    app.configure::<Customer>(&admin, ConfigOp::Create(customer), None, None).await.unwrap();
    let insight = json!({"id": "work", "customerId": "acme", "title": "work",
        "resourcePoolId": "pool", "queueSize": 10, "mappers": {"operationType": ["work"]}});
    app.configure::<Insight>(&admin, ConfigOp::Create(insight), None, None).await.unwrap();
    World { store, commands, projections, app }
}

/// acme's worker `w1`.
pub fn worker() -> Caller {
    Caller::new(Principal::new("w1", Role::Service, &["acme"]), "test")
}

/// Submits acme's agenda `id` (one operation `only` of type `work`, and the fields of `extra`)
/// and queues it, as the scheduler would.
pub async fn submit_queued(w: &World, id: &str, extra: Value) {
    let user = Caller::new(Principal::new("acme-user", Role::User, &["acme"]), "test");
    let mut agenda = json!({"id": id, "customerId": "acme",
        "operations": [{"name": "only", "type": "work", "payload": {}}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        agenda[k] = v.clone();
    }
    w.app.submit(&user, agenda, None, None).await.unwrap();
    queue(w, id).await;
}

/// Queues acme's agenda `id`, as the scheduler does.
pub async fn queue(w: &World, id: &str) {
    let metadata = EventMetadata { customer_id: Some("acme".into()), ..EventMetadata::default() };
    let command = AgendaCommand::Queue { now: Utc::now() };
    w.commands.execute::<AgendaState>(&key("acme", id), &metadata, &command).await.unwrap();
    w.app.settle(None).await.unwrap();
}

/// What a test does to a store's calls ([`Hooked`]): each append's answer, each stream read.
pub trait Hooks: Send + Sync + 'static {
    /// The answer to an append to `stream` of events of `types`, given the inner store's.
    fn appended(
        &self,
        _stream: &str,
        _types: &[String],
        answer: Result<pop_store::AppendResult, pop_store::StoreError>,
    ) -> Result<pop_store::AppendResult, pop_store::StoreError> {
        answer
    }
    /// `stream` is about to be read.
    fn reading(&self, _stream: &str) {}
    /// A switch that, while on, makes the log unreadable (`read_all`, `subscribe_all`,
    /// `head` answer the store unavailable), as a database gone after it acknowledged appends.
    fn down(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        None
    }
    /// A switch that, while on, cuts `subscribe_all` alone (the read models' tail fails, the
    /// head and appends still answer).
    fn tail_down(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        None
    }
    /// The head `head()` answers, given the inner store's (a PostgreSQL head held below an
    /// open transaction answers less than what was committed).
    fn head(&self, head: pop_store::Position) -> pop_store::Position {
        head
    }
}

/// The store unavailable, as [`Hooks::down`] answers.
fn down_error() -> pop_store::StoreError {
    pop_store::StoreError::backend("a test's outage", std::io::Error::other("the database is down"))
}

fn is_down<H: Hooks>(hooks: &H) -> bool {
    hooks.down().is_some_and(|d| d.load(std::sync::atomic::Ordering::SeqCst))
}

/// The store `inner` with a test's `hooks` on its appends and stream reads; every other call
/// forwarded as it is.
pub struct Hooked<H> {
    pub inner: Arc<dyn EventStore>,
    pub hooks: H,
}

#[async_trait::async_trait]
impl<H: Hooks> EventStore for Hooked<H> {
    async fn append(
        &self,
        stream: &str,
        expected: pop_store::ExpectedVersion,
        events: Vec<pop_store::NewEvent>,
    ) -> Result<pop_store::AppendResult, pop_store::StoreError> {
        let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
        let answer = self.inner.append(stream, expected, events).await;
        self.hooks.appended(stream, &types, answer)
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
        direction: pop_store::Direction,
    ) -> Result<Vec<pop_store::RecordedEvent>, pop_store::StoreError> {
        self.hooks.reading(stream);
        self.inner.read_stream(stream, from, max, direction).await
    }
    async fn read_all(
        &self,
        after: pop_store::Position,
        max: usize,
    ) -> Result<Vec<pop_store::RecordedEvent>, pop_store::StoreError> {
        if is_down(&self.hooks) {
            return Err(down_error());
        }
        self.inner.read_all(after, max).await
    }
    fn subscribe_all(
        &self,
        after: pop_store::Position,
    ) -> futures::stream::BoxStream<'static, Result<pop_store::RecordedEvent, pop_store::StoreError>>
    {
        use futures::StreamExt;
        let events = self.inner.subscribe_all(after);
        match self.hooks.down().or_else(|| self.hooks.tail_down()) {
            None => events,
            Some(down) => events
                .map(move |e| match down.load(std::sync::atomic::Ordering::SeqCst) {
                    true => Err(down_error()),
                    false => e,
                })
                .boxed(),
        }
    }
    async fn delete_stream(
        &self,
        stream: &str,
        expected: pop_store::ExpectedVersion,
    ) -> Result<(), pop_store::StoreError> {
        self.inner.delete_stream(stream, expected).await
    }
    async fn head(&self) -> Result<pop_store::Position, pop_store::StoreError> {
        if is_down(&self.hooks) {
            return Err(down_error());
        }
        Ok(self.hooks.head(self.inner.head().await?))
    }
}
