//! The runner through a store outage: it keeps resubscribing for as long as the store is
//! unavailable (saying so in `trouble`), a read waiting for a position it cannot reach ends at
//! once with that trouble, and once the store is back the runner carries on by itself.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use pop_projections::runner::MAX_STORE_RETRIES;
use pop_projections::{Runner, RunnerConfig};
use pop_store::{
    AppendResult, Direction, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreError,
};
use support::*;
use tokio::sync::{oneshot, watch};

/// Far longer than any outage below: the tests never assert on time.
const PATIENCE: Duration = Duration::from_secs(60);

/// A real store behind a switch: while `down` is true every read fails as a database that
/// refuses connections does (an IO error, so [`StoreError::is_unavailable`]), and an open
/// subscription fails the moment it turns true.
struct Switched {
    inner: Arc<dyn EventStore>,
    down: watch::Sender<bool>,
    /// Subscriptions asked for: the runner's attempts to read the log.
    subscriptions: AtomicU32,
    /// Whether the head reads [`Position::START`], as a log restored from an old backup would.
    head_gone_back: AtomicBool,
}

impl Switched {
    fn over(log: &Log) -> Arc<Switched> {
        Arc::new(Switched {
            inner: log.dyn_store(),
            down: watch::Sender::new(false),
            subscriptions: AtomicU32::new(0),
            head_gone_back: AtomicBool::new(false),
        })
    }
}

/// Short waits between the runner's attempts, so many of them fit in a test.
fn quick_retries() -> RunnerConfig {
    RunnerConfig {
        retry_backoff: Duration::from_millis(5),
        max_retry_backoff: Duration::from_millis(20),
        ..RunnerConfig::default()
    }
}

fn refused() -> StoreError {
    StoreError::backend(
        "getting a connection",
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
    )
}

impl Switched {
    fn check(&self) -> Result<(), StoreError> {
        if *self.down.borrow() { Err(refused()) } else { Ok(()) }
    }
}

#[async_trait]
impl EventStore for Switched {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.check()?;
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        s: &str,
        from: u64,
        max: usize,
        d: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check()?;
        self.inner.read_stream(s, from, max, d).await
    }
    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check()?;
        self.inner.read_all(after, max).await
    }
    fn subscribe_all(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.check() {
            return stream::once(async move { Err(e) }).boxed();
        }
        let inner = self.inner.subscribe_all(after);
        let down = self.down.subscribe();
        stream::unfold(Some((inner, down)), |state| async move {
            let (mut inner, mut down) = state?;
            let next = tokio::select! {
                item = inner.next() => Some(item),
                _ = down.wait_for(|d| *d) => None,
            };
            match next {
                Some(item) => item.map(|i| (i, Some((inner, down)))),
                None => Some((Err(refused()), None)),
            }
        })
        .boxed()
    }
    async fn delete_stream(&self, s: &str, e: ExpectedVersion) -> Result<(), StoreError> {
        self.check()?;
        self.inner.delete_stream(s, e).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.check()?;
        if self.head_gone_back.load(Ordering::SeqCst) {
            return Ok(Position::START);
        }
        self.inner.head().await
    }
}

/// A head that goes back behind what the runner applied (a database restored under it) stops
/// the runner: it would skip the positions new events reuse (ops3am11). A commit readable
/// before its head is published cannot look like one: the subscription hands out nothing
/// past the head it read (`pop_store::subscribe`'s own test).
#[tokio::test]
async fn a_head_gone_back_behind_what_was_applied_stops_the_runner() {
    let log = Log::open().await.unwrap();
    let first =
        log.agenda("a", submit(agenda("a", "acme", None, &["x"]), "insight-1", 0)).await.unwrap();
    let store = Switched::over(&log);
    let (runner, handle) = Runner::start(store.clone(), quick_retries()).await;
    let task = tokio::spawn(runner.run(std::future::pending()));
    handle.wait_for(first, PATIENCE).await.unwrap();
    store.head_gone_back.store(true, Ordering::SeqCst);
    let stopped = tokio::time::timeout(PATIENCE, task).await.expect("the runner stops").unwrap();
    let why = format!("{}", stopped.unwrap_err());
    assert!(why.contains("went back"), "{why}");
    // A read waiting for a later write is told at once that this replica stopped for good.
    let later = Position::new(first.commit() + 1_000, 0);
    let err = handle.wait_for(later, PATIENCE).await.unwrap_err();
    assert!(err.stopped && handle.has_stopped(), "{err:?}");
}

#[tokio::test]
async fn an_outage_longer_than_the_retries_is_waited_out_and_reads_answer_with_the_trouble() {
    let log = Log::open().await.unwrap();
    let first =
        log.agenda("a", submit(agenda("a", "acme", None, &["x"]), "insight-1", 0)).await.unwrap();
    let store = Switched::over(&log);
    let (runner, handle) = Runner::start(store.clone(), quick_retries()).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    handle.wait_for(first, PATIENCE).await.unwrap();
    assert_eq!(handle.trouble(), None);

    // The store goes away; a write this replica cannot see yet (made through the inner store,
    // as another replica would) is what a read then has to wait for.
    store.down.send_replace(true);
    let mut trouble = handle.subscribe_trouble();
    trouble.wait_for(Option::is_some).await.unwrap();
    let second =
        log.agenda("b", submit(agenda("b", "acme", None, &["x"]), "insight-1", 1)).await.unwrap();
    let err = handle.wait_for(second, PATIENCE).await.unwrap_err();
    let why = err.trouble.clone().expect("the wait names the trouble");
    assert!(why.contains("connection refused"), "{why}");
    assert_eq!(err.applied, first, "{err:?}");
    assert!(!err.stopped && !handle.has_stopped(), "an outage is no stop: {err:?}");

    // Well past the retries a failing store used to get before the runner gave up for good.
    let attempts = store.subscriptions.load(Ordering::SeqCst) + MAX_STORE_RETRIES + 3;
    while store.subscriptions.load(Ordering::SeqCst) < attempts {
        assert!(!task.is_finished(), "the runner gave up on an unavailable store");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!task.is_finished(), "the runner gave up on an unavailable store");
    assert!(handle.trouble().is_some());

    // Back: the runner resubscribes by itself, applies what it missed and the trouble clears.
    // (Until the trouble clears, a wait still ends at once: the runner has not seen the
    // store come back.)
    store.down.send_replace(false);
    trouble.wait_for(Option::is_none).await.unwrap();
    handle.wait_for(second, PATIENCE).await.unwrap();
    assert!(handle.read().agenda_entry("b").is_some());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_quiet_log_clears_the_trouble_once_the_store_answers_again() {
    let log = Log::open().await.unwrap();
    log.agenda("a", submit(agenda("a", "acme", None, &["x"]), "insight-1", 0)).await.unwrap();
    let store = Switched::over(&log);
    let (runner, handle) = Runner::start(store.clone(), quick_retries()).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    handle.watch_caught_up().wait_for(|r| *r).await.unwrap();
    let mut trouble = handle.subscribe_trouble();
    store.down.send_replace(true);
    trouble.wait_for(Option::is_some).await.unwrap();
    // Nothing is written meanwhile, so no batch will say the store is back.
    store.down.send_replace(false);
    tokio::time::timeout(PATIENCE, trouble.wait_for(Option::is_none)).await.unwrap().unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// A store that fails before the runner read anything (a corrupt file, a database gone at
/// start) stops it as a failure later does: /readyz must name why, not say "catching up" for
/// ever (an operator drill found it did).
#[tokio::test]
async fn a_store_failing_at_start_stops_the_runner_with_the_reason() {
    let log = Log::open().await.unwrap();
    log.agenda("a", submit(agenda("a", "acme", None, &["x"]), "insight-1", 0)).await.unwrap();
    let store = Switched::over(&log);
    let (runner, handle) = Runner::start(store.clone(), quick_retries()).await;
    store.down.send_replace(true);
    let stopped = tokio::time::timeout(PATIENCE, runner.run(std::future::pending())).await;
    assert!(stopped.expect("the runner stops").is_err());
    let why = handle.trouble().expect("the reason is kept for /readyz");
    assert!(why.contains("stopped") && why.contains("connection refused"), "{why}");
    assert!(!handle.caught_up());
}
