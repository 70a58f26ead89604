//! Command execution over the SQLite store (and, for the batching of one stream's queued
//! commands, PostgreSQL too), with a tiny counter aggregate defined here.

// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use pop_domain::{Aggregate, CodecError, EventCodec};
use pop_store::commands::MAX_EXECUTE_ATTEMPTS;
use pop_store::test_cluster::TestCluster;
use pop_store::{
    ActualVersion, AppendResult, Commands, Direction, EventMetadata, EventStore, ExecuteError,
    ExpectedVersion, NewEvent, PgOptions, PgStore, Position, RecordedEvent, SqliteOptions,
    SqliteStore, StoreError,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq)]
struct Counter {
    value: i64,
    closed: bool,
    opened: bool,
}

#[derive(Debug, Clone)]
enum CounterCommand {
    Add(i64),
    Close,
    Reopen,
    /// Always refused.
    Reject,
    /// An event larger than the store takes.
    Huge,
    /// Starts the counter ([`Aggregate::creates`]); refused once it was.
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { by: i64 },
    Closed,
    Reopened,
    Blob(String),
    Opened,
}

#[derive(Debug, thiserror::Error, PartialEq)]
enum CounterError {
    #[error("the counter is closed")]
    Closed,
    #[error("rejected")]
    Rejected,
    #[error("already open")]
    AlreadyOpen,
}

impl EventCodec for CounterEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CounterEvent::Added { .. } => "CounterAdded",
            CounterEvent::Closed => "CounterClosed",
            CounterEvent::Reopened => "CounterReopened",
            CounterEvent::Blob(_) => "CounterBlob",
            CounterEvent::Opened => "CounterOpened",
        }
    }
    fn schema_version(&self) -> u32 {
        1
    }
    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(self).map_err(CodecError::Encode)
    }
    fn decode(event_type: &str, version: u32, data: &[u8]) -> Result<Self, CodecError> {
        if !matches!(
            event_type,
            "CounterAdded" | "CounterClosed" | "CounterReopened" | "CounterBlob" | "CounterOpened"
        ) {
            return Err(CodecError::UnknownType { event_type: event_type.to_owned() });
        }
        serde_json::from_slice(data).map_err(|source| CodecError::Malformed {
            event_type: event_type.to_owned(),
            version,
            source,
        })
    }
}

impl Aggregate for Counter {
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    const CATEGORY: &'static str = "counter";

    fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        match command {
            CounterCommand::Reject => Err(CounterError::Rejected),
            CounterCommand::Open if self.opened => Err(CounterError::AlreadyOpen),
            CounterCommand::Open => Ok(vec![CounterEvent::Opened]),
            CounterCommand::Huge => Ok(vec![CounterEvent::Blob("x".repeat(1 << 20))]),
            CounterCommand::Reopen if self.closed => Ok(vec![CounterEvent::Reopened]),
            CounterCommand::Reopen => Ok(vec![]),
            _ if self.closed => Err(CounterError::Closed),
            CounterCommand::Add(0) => Ok(vec![]),
            CounterCommand::Add(by) => Ok(vec![CounterEvent::Added { by: *by }]),
            CounterCommand::Close => Ok(vec![CounterEvent::Closed]),
        }
    }

    fn evolve(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Added { by } => self.value = self.value.saturating_add(*by),
            CounterEvent::Closed => self.closed = true,
            CounterEvent::Reopened => self.closed = false,
            CounterEvent::Blob(_) => {}
            CounterEvent::Opened => self.opened = true,
        }
    }

    fn creates(command: &CounterCommand) -> bool {
        matches!(command, CounterCommand::Open)
    }
}

async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("execute.db"), SqliteOptions::default()).await;
    (dir, Arc::new(store.unwrap()))
}

fn meta() -> EventMetadata {
    EventMetadata {
        customer_id: Some("c1".into()),
        actor: Some("test".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn executes_commands_and_appends_their_events() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    let first = commands.execute::<Counter>("a", &meta(), &CounterCommand::Add(2)).await.unwrap();
    assert_eq!(first.events, vec![CounterEvent::Added { by: 2 }]);
    assert_eq!(first.version, Some(0));
    assert_eq!(first.state.value, 2);
    let second = commands.execute::<Counter>("a", &meta(), &CounterCommand::Add(3)).await.unwrap();
    assert_eq!(second.version, Some(1));
    assert_eq!(second.state.value, 5);
    assert!(second.position > first.position);

    let stored = store.read_stream("counter-a", 0, 10, Direction::Forwards).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].position, second.position.unwrap());
    assert_eq!(&*stored[1].event_type, "CounterAdded");
    assert_eq!(EventMetadata::from_json(&stored[1].metadata).unwrap(), meta());
    assert_eq!(stored[0].event_id.get_version_num(), 7, "event ids are UUID v7");
    // A fresh executor (no cache) folds the same state from the stream.
    let (state, version) = Commands::new(store.clone()).load::<Counter>("a").await.unwrap();
    assert_eq!((state.value, version), (5, Some(1)));
}

/// `load_with` answers from the cached state when nothing is past it, and folds what is: a
/// write by another executor on the same store (another replica) is seen.
#[tokio::test]
async fn load_with_sees_the_cached_state_and_what_came_after_it() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    let value = |c: &Counter| c.value;
    assert_eq!(commands.load_with::<Counter, _>("a", value).await.unwrap(), 0, "no stream");
    commands.execute::<Counter>("a", &meta(), &CounterCommand::Add(2)).await.unwrap();
    assert_eq!(commands.load_with::<Counter, _>("a", value).await.unwrap(), 2, "cached");
    let other = Commands::new(store.clone());
    other.execute::<Counter>("a", &meta(), &CounterCommand::Add(3)).await.unwrap();
    assert_eq!(commands.load_with::<Counter, _>("a", value).await.unwrap(), 5, "caught up");
    assert_eq!(commands.load::<Counter>("a").await.unwrap().0.value, 5);
}

#[tokio::test]
async fn the_latest_traceparent_a_stream_carries_is_answered_cached_or_read_back() {
    const FIRST: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const SECOND: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let traced = |t: &str| EventMetadata { traceparent: Some(t.into()), ..meta() };
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    let untraced = commands.execute::<Counter>("t", &meta(), &CounterCommand::Add(1)).await;
    assert_eq!(untraced.unwrap().traceparent, None);
    let first = commands.execute::<Counter>("t", &traced(FIRST), &CounterCommand::Add(1)).await;
    assert_eq!(first.unwrap().traceparent.as_deref(), Some(FIRST));
    // A command without one keeps the stream's; a refused or no-op one changes nothing.
    let kept = commands.execute::<Counter>("t", &meta(), &CounterCommand::Add(1)).await.unwrap();
    assert_eq!(kept.traceparent.as_deref(), Some(FIRST));
    let noop = commands.execute::<Counter>("t", &traced(SECOND), &CounterCommand::Add(0)).await;
    assert_eq!(noop.unwrap().traceparent.as_deref(), Some(FIRST));
    let second = commands.execute::<Counter>("t", &traced(SECOND), &CounterCommand::Add(1)).await;
    assert_eq!(second.unwrap().traceparent.as_deref(), Some(SECOND));
    commands.execute::<Counter>("t", &meta(), &CounterCommand::Add(1)).await.unwrap();
    // A process without the cache reads it back from the events' metadata.
    let cold = Commands::new(store.clone());
    let read = cold.execute::<Counter>("t", &meta(), &CounterCommand::Add(1)).await.unwrap();
    assert_eq!(read.traceparent.as_deref(), Some(SECOND));
    assert_eq!(read.state.value, 6);
}

#[tokio::test]
async fn the_tracestate_goes_with_its_traceparent_cached_or_read_back() {
    const FIRST: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const SECOND: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let traced = |t: &str, s: Option<&str>| EventMetadata {
        traceparent: Some(t.into()),
        tracestate: s.map(str::to_string),
        ..meta()
    };
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    let first = commands
        .execute::<Counter>("ts", &traced(FIRST, Some("a=1")), &CounterCommand::Add(1))
        .await
        .unwrap();
    assert_eq!(
        (first.traceparent.as_deref(), first.tracestate.as_deref()),
        (Some(FIRST), Some("a=1"))
    );
    // An untraced command keeps both.
    let kept = commands.execute::<Counter>("ts", &meta(), &CounterCommand::Add(1)).await.unwrap();
    assert_eq!(kept.tracestate.as_deref(), Some("a=1"));
    let cold = Commands::new(store.clone());
    let read = cold.execute::<Counter>("ts", &meta(), &CounterCommand::Add(1)).await.unwrap();
    assert_eq!(read.tracestate.as_deref(), Some("a=1"));
    // A later traceparent without a tracestate replaces both: the older tracestate belongs to
    // the older trace.
    let second =
        commands.execute::<Counter>("ts", &traced(SECOND, None), &CounterCommand::Add(1)).await;
    let second = second.unwrap();
    assert_eq!((second.traceparent.as_deref(), second.tracestate), (Some(SECOND), None));
    let cold = Commands::new(store.clone());
    let read = cold.execute::<Counter>("ts", &meta(), &CounterCommand::Add(1)).await.unwrap();
    assert_eq!((read.traceparent.as_deref(), read.tracestate), (Some(SECOND), None));
}

#[tokio::test]
async fn a_refusal_appends_nothing_and_a_no_op_returns_no_position() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    commands.execute::<Counter>("b", &meta(), &CounterCommand::Close).await.unwrap();
    let head = store.head().await.unwrap();
    let refused = commands.execute::<Counter>("b", &meta(), &CounterCommand::Add(1)).await;
    assert!(matches!(refused, Err(ExecuteError::Refused(CounterError::Closed))), "{refused:?}");
    assert_eq!(store.head().await.unwrap(), head);

    let noop = commands.execute::<Counter>("c", &meta(), &CounterCommand::Add(0)).await.unwrap();
    assert!(noop.events.is_empty());
    assert_eq!((noop.version, noop.position), (None, None));
}

#[tokio::test]
async fn sees_events_written_by_others_despite_its_cache() {
    let (_dir, store) = store().await;
    let one = Commands::new(store.clone());
    let other = Commands::new(store.clone());
    one.execute::<Counter>("d", &meta(), &CounterCommand::Add(1)).await.unwrap();
    other.execute::<Counter>("d", &meta(), &CounterCommand::Add(10)).await.unwrap();
    let r = one.execute::<Counter>("d", &meta(), &CounterCommand::Add(100)).await.unwrap();
    assert_eq!((r.state.value, r.version), (111, Some(2)));
}

#[tokio::test]
async fn a_refusal_judged_on_a_stale_cache_is_checked_against_the_stream() {
    let (_dir, store) = store().await;
    let one = Commands::new(store.clone());
    let other = Commands::new(store.clone());
    one.execute::<Counter>("s", &meta(), &CounterCommand::Close).await.unwrap();
    // `one` caches "closed"; `other` reopens behind its back.
    other.execute::<Counter>("s", &meta(), &CounterCommand::Reopen).await.unwrap();
    let r = one.execute::<Counter>("s", &meta(), &CounterCommand::Add(5)).await.unwrap();
    assert_eq!((r.state.value, r.state.closed, r.version), (5, false, Some(2)));
    // And the reverse: a no-op on the stale cache ("already open") is re-checked too.
    other.execute::<Counter>("s", &meta(), &CounterCommand::Close).await.unwrap();
    let r = one.execute::<Counter>("s", &meta(), &CounterCommand::Reopen).await.unwrap();
    assert_eq!((r.events, r.version), (vec![CounterEvent::Reopened], Some(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_stream_all_land() {
    let (_dir, store) = store().await;
    let commands = Arc::new(Commands::new(store.clone()));
    // A writer loses at most once per other writer's success, so this many always succeed.
    let writers = MAX_EXECUTE_ATTEMPTS as i64;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            commands.execute::<Counter>("e", &meta(), &CounterCommand::Add(1)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (state, version) = commands.load::<Counter>("e").await.unwrap();
    assert_eq!((state.value, version), (writers, Some(writers as u64 - 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_contention_in_one_process_queues_and_loses_nothing() {
    let (_dir, store) = store().await;
    let commands = Arc::new(Commands::new(store.clone()));
    // Far more writers than attempts: in one process they queue for the stream instead of
    // racing, so every one of them lands (none gives up with CONFLICT).
    let writers = 200;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let commands = commands.clone();
        tasks.push(tokio::spawn(async move {
            commands.execute::<Counter>("f", &meta(), &CounterCommand::Add(1)).await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().unwrap().version.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (0..writers as u64).collect::<Vec<_>>(), "one append each, in turn");
    let (state, _) = commands.load::<Counter>("f").await.unwrap();
    assert_eq!(state.value, writers);
    assert_eq!(commands.streams_in_use(), 0, "a stream's turn is dropped once nobody waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_stream_still_race_and_retry() {
    let (_dir, store) = store().await;
    // Two command executors over one store stand for two replicas: they do not queue for
    // each other, so the expected version and the bounded retries still decide.
    let one = Arc::new(Commands::new(store.clone()));
    let two = Arc::new(Commands::new(store.clone()));
    let mut tasks = Vec::new();
    for i in 0..2 * MAX_EXECUTE_ATTEMPTS {
        let commands = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            commands.execute::<Counter>("h", &meta(), &CounterCommand::Add(1)).await
        }));
    }
    let mut succeeded = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(ExecuteError::Conflict { attempts, .. }) => {
                assert_eq!(attempts, MAX_EXECUTE_ATTEMPTS)
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let (state, _) = one.load::<Counter>("h").await.unwrap();
    assert_eq!(state.value, succeeded, "every success is in the stream, nothing else is");
}

/// A store whose appends always conflict.
struct AlwaysConflicting(Arc<SqliteStore>);

#[async_trait]
impl EventStore for AlwaysConflicting {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        _: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        Err(StoreError::WrongExpectedVersion {
            stream: stream.into(),
            expected,
            actual: ActualVersion::Version(99),
        })
    }
    async fn read_stream(
        &self,
        s: &str,
        from: u64,
        max: usize,
        d: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_stream(s, from, max, d).await
    }
    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_all(after, max).await
    }
    fn subscribe_all(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        self.0.subscribe_all(after)
    }
    async fn delete_stream(&self, s: &str, e: ExpectedVersion) -> Result<(), StoreError> {
        self.0.delete_stream(s, e).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.0.head().await
    }
}

#[tokio::test]
async fn retries_are_bounded() {
    let (_dir, store) = store().await;
    let commands = Commands::new(Arc::new(AlwaysConflicting(store)));
    let r = commands.execute::<Counter>("g", &meta(), &CounterCommand::Add(1)).await;
    match r {
        Err(ExecuteError::Conflict { stream, attempts }) => {
            assert_eq!((stream.as_str(), attempts), ("counter-g", MAX_EXECUTE_ATTEMPTS));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn undecodable_events_and_deleted_streams_are_typed_errors() {
    let (_dir, store) = store().await;
    let foreign = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "SomethingElse".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: vec![],
    };
    store.append("counter-h", ExpectedVersion::NoStream, vec![foreign]).await.unwrap();
    let commands = Commands::new(store.clone());
    let r = commands.execute::<Counter>("h", &meta(), &CounterCommand::Add(1)).await;
    assert!(matches!(r, Err(ExecuteError::Codec(CodecError::UnknownType { .. }))), "{r:?}");

    commands.execute::<Counter>("i", &meta(), &CounterCommand::Add(1)).await.unwrap();
    store.delete_stream("counter-i", ExpectedVersion::Any).await.unwrap();
    let r = commands.execute::<Counter>("i", &meta(), &CounterCommand::Add(1)).await;
    assert!(matches!(r, Err(ExecuteError::Store(StoreError::StreamDeleted { .. }))), "{r:?}");
}

/// A creating command on a stream this process has not seen is decided without reading it;
/// where the stream exists after all (another replica made it, or it was deleted), the
/// append's "no stream" expectation catches it and the outcome is what reading first gives.
#[tokio::test]
async fn a_creating_command_is_decided_unread_and_checked_by_the_append() {
    let (_dir, store) = store().await;
    let gated = Gated::new(store.clone(), None);
    let one = Commands::new(gated.clone());
    let opened = one.execute::<Counter>("new", &meta(), &CounterCommand::Open).await.unwrap();
    assert_eq!((opened.version, opened.state.opened), (Some(0), true));
    assert_eq!(gated.reads.load(Ordering::SeqCst), 0, "a new stream is not read first");
    // Other commands on an unseen stream are still decided on what it holds.
    let two = Commands::new(gated.clone());
    let added = two.execute::<Counter>("new", &meta(), &CounterCommand::Add(2)).await.unwrap();
    assert!(gated.reads.load(Ordering::SeqCst) > 0, "an add on an unseen stream reads it");
    assert_eq!((added.version, added.state.opened), (Some(1), true));

    // Another replica (its own cache) opening the same counter: refused, nothing appended.
    let three = Commands::new(gated.clone());
    let again = three.execute::<Counter>("new", &meta(), &CounterCommand::Open).await;
    assert!(matches!(again, Err(ExecuteError::Refused(CounterError::AlreadyOpen))), "{again:?}");
    let stored = store.read_stream("counter-new", 0, 10, Direction::Forwards).await.unwrap();
    assert_eq!(stored.len(), 2, "the refused open appended nothing");
    assert_eq!(three.load::<Counter>("new").await.unwrap().0.value, 2);

    // A deleted stream: the same typed error as when it is read first.
    one.execute::<Counter>("gone", &meta(), &CounterCommand::Open).await.unwrap();
    store.delete_stream("counter-gone", ExpectedVersion::Any).await.unwrap();
    let four = Commands::new(gated.clone());
    let r = four.execute::<Counter>("gone", &meta(), &CounterCommand::Open).await;
    assert!(matches!(r, Err(ExecuteError::Store(StoreError::StreamDeleted { .. }))), "{r:?}");
}

/// A store whose appends wait at a gate the test holds closed (a write lock), counted, and
/// of which one (`fail_at`, counted from 1) fails as a broken disk would.
struct Gated {
    inner: Arc<dyn EventStore>,
    gate: tokio::sync::RwLock<()>,
    waiting: AtomicUsize,
    appends: AtomicUsize,
    reads: AtomicUsize,
    fail_at: Option<usize>,
}

impl Gated {
    fn new(inner: Arc<dyn EventStore>, fail_at: Option<usize>) -> Arc<Gated> {
        Arc::new(Gated {
            inner,
            gate: tokio::sync::RwLock::new(()),
            waiting: AtomicUsize::new(0),
            appends: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            fail_at,
        })
    }
}

#[async_trait]
impl EventStore for Gated {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.read().await;
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at == Some(n) {
            return Err(StoreError::Closed);
        }
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        s: &str,
        from: u64,
        max: usize,
        d: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
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

/// Polls `done` until it holds (a task reaching a point the test waits for); fails after 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

type Answer = Result<pop_store::Executed<Counter>, ExecuteError<CounterError>>;

fn run(commands: &Arc<Commands>, id: &str, command: CounterCommand) -> JoinHandle<Answer> {
    let (commands, id) = (commands.clone(), id.to_owned());
    tokio::spawn(async move { commands.execute::<Counter>(&id, &meta(), &command).await })
}

/// One command writes alone while the gate holds its append; 99 more (adds, refusals and one
/// too large to store) queue meanwhile from concurrent tasks and must go out together in the
/// second write: each acknowledged one at its own version, the failing ones failing alone.
async fn queued_commands_go_out_in_one_write(store: Arc<dyn EventStore>) {
    let gated = Gated::new(store.clone(), None);
    let commands = Arc::new(Commands::new(gated.clone()));
    let closed = gated.gate.write().await;
    let first = run(&commands, "q", CounterCommand::Add(1000));
    until("the first write", || gated.waiting.load(Ordering::SeqCst) == 1).await;
    let queued: Vec<(i64, CounterCommand, JoinHandle<Answer>)> = (1..100)
        .map(|i| {
            let command = match i {
                50 => CounterCommand::Huge,
                i if i % 10 == 5 => CounterCommand::Reject,
                i => CounterCommand::Add(i),
            };
            (i, command.clone(), run(&commands, "q", command))
        })
        .collect();
    until("99 queued commands", || commands.queued() == 99).await;
    // Nobody is answered before the write that holds its events.
    assert!(!first.is_finished());
    assert!(queued.iter().all(|(_, _, t)| !t.is_finished()));
    drop(closed);

    let first = first.await.unwrap().unwrap();
    assert_eq!((first.version, first.state.value >= 1000), (Some(0), true));
    let mut acknowledged = vec![(0u64, 1000i64)];
    let mut positions = std::collections::BTreeSet::new();
    for (i, command, task) in queued {
        let answer = task.await.unwrap();
        match command {
            CounterCommand::Add(by) => {
                let done = answer.unwrap();
                assert_eq!(done.events, vec![CounterEvent::Added { by }]);
                acknowledged.push((done.version.unwrap(), by));
                positions.insert(done.position.unwrap());
            }
            CounterCommand::Reject => {
                assert!(matches!(answer, Err(ExecuteError::Refused(CounterError::Rejected))))
            }
            _ => assert!(
                matches!(answer, Err(ExecuteError::Store(StoreError::LimitExceeded { .. }))),
                "{i}: {answer:?}"
            ),
        }
    }
    assert_eq!(gated.appends.load(Ordering::SeqCst), 2, "the 99 queued commands: one write");
    assert_eq!(positions.len(), 1, "one write, one position for read-your-writes");
    assert!(positions.first().unwrap() > &first.position.unwrap());

    // The stream holds exactly the acknowledged commands, each at the version it was told.
    acknowledged.sort_unstable();
    let stored = store.read_stream("counter-q", 0, 1000, Direction::Forwards).await.unwrap();
    assert_eq!(stored.len(), acknowledged.len());
    for ((version, by), recorded) in acknowledged.iter().zip(&stored) {
        assert_eq!(recorded.version, *version);
        let event = CounterEvent::decode(&recorded.event_type, 1, &recorded.data).unwrap();
        assert_eq!(event, CounterEvent::Added { by: *by });
    }
    let sum: i64 = acknowledged.iter().map(|(_, by)| by).sum();
    let (state, version) = Commands::new(store).load::<Counter>("q").await.unwrap();
    assert_eq!((state.value, version), (sum, Some(stored.len() as u64 - 1)));
    assert_eq!(commands.streams_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_commands_go_out_in_one_write_on_sqlite() {
    let (_dir, store) = store().await;
    queued_commands_go_out_in_one_write(store.clone()).await;
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "the stream's hash chain over batched writes: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_commands_go_out_in_one_write_on_postgres() {
    let Some(cluster) = TestCluster::shared("queued_commands_go_out_in_one_write_on_postgres")
    else {
        return;
    };
    let url = cluster.create_database().await.unwrap();
    let store = Arc::new(PgStore::connect(&url, PgOptions::default()).await.unwrap());
    queued_commands_go_out_in_one_write(store.clone()).await;
    store.close().await;
    let report = pop_store::postgres::verify(&url).await.unwrap();
    assert!(report.is_intact(), "the stream's hash chain over batched writes: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_write_fails_its_commands_and_the_others_are_decided_again() {
    let (_dir, store) = store().await;
    let gated = Gated::new(store.clone(), Some(2));
    let commands = Arc::new(Commands::new(gated.clone()));
    let closed = gated.gate.write().await;
    let first = run(&commands, "w", CounterCommand::Add(1));
    until("the first write", || gated.waiting.load(Ordering::SeqCst) == 1).await;
    // The second write (all of these) fails.
    let mut tasks = Vec::new();
    for command in [
        CounterCommand::Reject,
        CounterCommand::Add(2),
        CounterCommand::Reject,
        CounterCommand::Add(0),
        CounterCommand::Add(3),
    ] {
        tasks.push(run(&commands, "w", command));
        let n = tasks.len();
        until("the commands queued in order", || commands.queued() == n).await;
    }
    drop(closed);
    assert_eq!(first.await.unwrap().unwrap().version, Some(0));
    let answers: Vec<Answer> =
        futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    // Refusals stand (the one after the failed events was decided again); the commands whose
    // events were in the failed write fail with it; the no-op is decided again on the stream.
    assert!(matches!(answers[0], Err(ExecuteError::Refused(CounterError::Rejected))));
    assert!(matches!(answers[1], Err(ExecuteError::Store(StoreError::Closed))), "{:?}", answers[1]);
    assert!(matches!(answers[2], Err(ExecuteError::Refused(CounterError::Rejected))));
    let noop = answers[3].as_ref().unwrap();
    assert_eq!((noop.events.len(), noop.version, noop.state.value), (0, Some(0), 1));
    assert!(matches!(answers[4], Err(ExecuteError::Store(StoreError::Closed))), "{:?}", answers[4]);
    let stored = store.read_stream("counter-w", 0, 100, Direction::Forwards).await.unwrap();
    assert_eq!(stored.len(), 1, "only the first write is in the stream");
    // The stream goes on from there.
    let next = commands.execute::<Counter>("w", &meta(), &CounterCommand::Add(4)).await.unwrap();
    assert_eq!((next.version, next.state.value), (Some(1), 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_whose_caller_went_away_before_its_write_is_not_run() {
    let (_dir, store) = store().await;
    let gated = Gated::new(store.clone(), None);
    let commands = Arc::new(Commands::new(gated.clone()));
    let closed = gated.gate.write().await;
    let first = run(&commands, "x", CounterCommand::Add(1));
    until("the first write", || gated.waiting.load(Ordering::SeqCst) == 1).await;
    let gone = run(&commands, "x", CounterCommand::Add(7));
    until("the second command queued", || commands.queued() == 1).await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    drop(closed);
    first.await.unwrap().unwrap();
    let next = commands.execute::<Counter>("x", &meta(), &CounterCommand::Add(2)).await.unwrap();
    assert_eq!((next.version, next.state.value), (Some(1), 3), "the abandoned Add(7) never ran");
}

/// `execute_chain`: every step in one write (one position, consecutive versions), each with
/// its own metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_goes_out_in_one_write_each_step_with_its_metadata() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    let by = |actor: &str| EventMetadata { actor: Some(actor.into()), ..meta() };
    let steps = vec![
        (by("first"), CounterCommand::Add(1)),
        (by("second"), CounterCommand::Add(2)),
        (by("third"), CounterCommand::Close),
    ];
    let answers = commands.execute_chain::<Counter>("chain", &steps).await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().map(|a| a.version).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
    assert!(answers.iter().all(|a| a.position == answers[0].position), "one write: {answers:?}");
    assert_eq!(answers[2].state.value, 3);
    assert!(answers[2].state.closed);
    let stored = store.read_stream("counter-chain", 0, 10, Direction::Forwards).await.unwrap();
    let actors: Vec<_> = stored
        .iter()
        .map(|r| EventMetadata::from_json(&r.metadata).unwrap().actor.unwrap())
        .collect();
    assert_eq!(actors, ["first", "second", "third"]);
    assert_eq!(stored[2].position, answers[2].position.unwrap());
}

/// A step that appends nothing breaks the chain: the steps after it are not run; the steps
/// before it are appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_or_no_op_step_breaks_the_chain_after_it() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    // The first step refused: nothing at all is appended.
    commands.execute::<Counter>("shut", &meta(), &CounterCommand::Close).await.unwrap();
    let head = store.head().await.unwrap();
    let steps = vec![(meta(), CounterCommand::Add(1)), (meta(), CounterCommand::Reopen)];
    let answers = commands.execute_chain::<Counter>("shut", &steps).await;
    assert!(matches!(answers[0], Err(ExecuteError::Refused(CounterError::Closed))), "{answers:?}");
    assert!(matches!(answers[1], Err(ExecuteError::ChainBroken)), "{answers:?}");
    assert_eq!(store.head().await.unwrap(), head, "a reopen after a refusal is not run");

    // A refusal in the middle: the first step is appended, the third is not run.
    let steps = vec![
        (meta(), CounterCommand::Add(5)),
        (meta(), CounterCommand::Reject),
        (meta(), CounterCommand::Add(7)),
    ];
    let answers = commands.execute_chain::<Counter>("mid", &steps).await;
    assert_eq!(answers[0].as_ref().unwrap().version, Some(0));
    assert!(matches!(answers[1], Err(ExecuteError::Refused(CounterError::Rejected))));
    assert!(matches!(answers[2], Err(ExecuteError::ChainBroken)), "{answers:?}");
    // A no-op breaks it too.
    let steps = vec![(meta(), CounterCommand::Add(0)), (meta(), CounterCommand::Add(9))];
    let answers = commands.execute_chain::<Counter>("mid", &steps).await;
    assert!(answers[0].as_ref().unwrap().events.is_empty());
    assert!(matches!(answers[1], Err(ExecuteError::ChainBroken)), "{answers:?}");
    let (state, version) = Commands::new(store.clone()).load::<Counter>("mid").await.unwrap();
    assert_eq!((state.value, version), (5, Some(0)));
}

/// A write made beside the commands (the checkpoint sealer's) counts for their unavailability,
/// as their own appends do: a server whose only writes were its seals, on a full disk,
/// answered ready (ops3am3). A write that lands clears it; other failures do not count.
#[tokio::test]
async fn a_write_beside_the_commands_counts_for_their_unavailability() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    assert!(commands.unavailable().is_none());
    commands.note_write(Err(&StoreError::Closed));
    let first = commands.unavailable().expect("unavailable after a failed seal");
    assert!(first.why.contains("closed"), "{first:?}");
    // Held until a write lands, not for a while: seals come seconds apart; its age is its
    // own (ops3am16: it read 0.0 s on every look).
    assert!(first.held, "{first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let later = commands.unavailable().expect("still unavailable");
    assert!(later.ago >= first.ago + std::time::Duration::from_millis(30), "{later:?}");
    commands.note_write(Ok(()));
    assert!(commands.unavailable().is_none(), "a write that landed clears it");
    commands.note_write(Err(&StoreError::Corrupt("a bug".into())));
    assert!(commands.unavailable().is_none(), "not the store's condition");
}

/// How long the store has served since its latest outage ended (failures for its condition
/// for at least a second, then a success), or since the commands were made: what the
/// reclaimer gives leases again (ops3am7). A failure answered again at once (a busy store) is
/// no outage, so a trickle of them never holds reclaims back (review-s38); other failures do
/// not count.
#[tokio::test]
async fn the_time_served_counts_from_the_end_of_the_last_outage() {
    let (_dir, store) = store().await;
    let commands = Commands::new(store.clone());
    assert_eq!(commands.serving_for(false), None, "no outage seen");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let since_start = commands.serving_for(true).unwrap();
    assert!(since_start >= std::time::Duration::from_millis(300), "{since_start:?}");
    // A blip: no outage.
    commands.note_write(Err(&StoreError::Closed));
    commands.note_write(Ok(()));
    commands.note_write(Err(&StoreError::Corrupt("a bug".into())));
    assert_eq!(commands.serving_for(false), None, "a blip is no outage");
    // Failures a second and more apart: an outage, zero served while it lasts, then counted
    // from the success (a probe's read counts as the writes do).
    commands.note_probe(Err(&StoreError::Closed));
    tokio::time::sleep(pop_store::commands::MIN_OUTAGE).await;
    commands.note_write(Err(&StoreError::Closed));
    assert_eq!(commands.serving_for(false), Some(std::time::Duration::ZERO));
    commands.note_probe(Ok(()));
    let served = commands.serving_for(false).expect("an outage was seen");
    assert!(served < std::time::Duration::from_millis(300), "{served:?}");
    assert!(commands.serving_for(true).unwrap() < since_start, "the shorter of the two");
    // A failed read of the head is an outage alone: nothing contends with it (a probe every
    // 30 s sees a 28 s outage once).
    let commands = Commands::new(store.clone());
    commands.note_probe(Err(&StoreError::Closed));
    assert_eq!(commands.serving_for(false), Some(std::time::Duration::ZERO));
    commands.note_probe(Ok(()));
    assert!(commands.serving_for(false).is_some_and(|s| s < std::time::Duration::from_secs(1)));
}
