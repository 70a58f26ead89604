//! The runner: tails the global log from its checkpoint into the read models, and tells the
//! rest of the server what it has applied.
//!
//! **Pipeline.** A reader task follows `subscribe_all(checkpoint)` and decodes events in
//! batches of at most [`MAX_APPLY_BATCH`] (decoding is most of the cost and needs no lock);
//! the runner applies each batch under the write lock, then publishes the new position and
//! the batch's changes. Reading, decoding and applying overlap, bounded by
//! [`READ_AHEAD_BATCHES`].
//!
//! **Locking.** Readers take a `std::sync::RwLock` read lock, answer from the models and let
//! go; the runner holds the write lock for one batch at a time, so a query waits at most one
//! batch (about a millisecond, see [`MAX_APPLY_BATCH`]). A lookup by id under an uncontended read lock costs well
//! under a microsecond plus the clone or decode of the answer, which leaves room for far more
//! than 20,000 `agendaProgress(id)` queries a second. A snapshot-swap (an `Arc` of immutable
//! models replaced per batch) would need persistent maps to be cheap; the lock needs nothing.
//! Guards are not `Send`, so no one can hold one across an `.await`.
//!
//! **Read your writes.** [`Projections::applied`] is the position of the last applied event,
//! also as a `watch` channel; [`Projections::wait_for`] waits (bounded) until it reaches a
//! position a mutation returned.
//!
//! **Readiness.** [`Projections::caught_up`] turns true once the runner has applied the head
//! the store had when the runner started (or found nothing left to read), and stays true:
//! `/readyz` reports whether this replica has ever been current, not a momentary lag.
//!
//! **Change feed contract.** After a batch is applied, one [`Change`] per applied event that
//! changed a read model is sent, in log order, on a `tokio::sync::broadcast` channel of
//! [`CHANGE_FEED_CAPACITY`]. When a change at position P is received, the read models (and
//! [`Projections::applied`]) are already at P or later, so a subscriber can re-read what it
//! shows. A subscriber that falls more than the capacity behind gets
//! `RecvError::Lagged(n)`: it has missed `n` changes and must resynchronise by re-reading the
//! read models it shows (they hold every effect of the missed changes) and then continue with
//! the next change it receives. Nothing is lost silently. Changes are not replayed for
//! subscribers that connect later: a subscription starts from a read of the current models.
//!
//! **Snapshots.** Every [`RunnerConfig::snapshot_every_events`] events (at least
//! [`RunnerConfig::snapshot_events_per_agenda`] per agenda held) or
//! [`RunnerConfig::snapshot_interval`], and at shutdown, the models are written to
//! [`crate::snapshot`]; the runner does not apply events meanwhile (readers are not blocked).
//!
//! **No clock.** The read models never see a time other than the events' own. The tokio timer
//! decides only *when* to snapshot and how long `wait_for` waits; rebuild progress reports
//! elapsed time for people, not for the models.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use pop_domain::error::ErrorChain;
use pop_store::trace::Traces;
use pop_store::{EventStore, Position, RecordedEvent, StoreError, limits::MAX_READ_BATCH};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::agendas::CorruptEntry;
use crate::change::Change;
use crate::decode::{DecodeError, Decoded, decode};
use crate::models::ReadModels;
use crate::snapshot::{self, SnapshotInfo, Unusable};

/// Events applied per write-lock hold. The write lock stalls queries, so it is held for one
/// bounded batch: folding costs a few microseconds per event, so 256 events keep a query's
/// wait around a millisecond, while the lock and notification costs per batch stay negligible.
pub const MAX_APPLY_BATCH: usize = 256;

/// Decoded batches waiting between the reader and the applier: enough that reading and
/// decoding the next batch overlaps applying this one, and bounds the memory to a few
/// thousand events.
pub const READ_AHEAD_BATCHES: usize = 4;

/// Changes a feed subscriber may fall behind before it is told it lagged. A few seconds of
/// peak write traffic, so a momentarily slow websocket client does not have to resynchronise,
/// at a bounded cost (changes are a few hundred bytes; the channel holds one copy each).
pub const CHANGE_FEED_CAPACITY: usize = 16_384;

/// Events per read when rebuilding: the most the store serves in one read.
pub const REBUILD_BATCH: usize = MAX_READ_BATCH;

/// Consecutive failed resubscriptions before the runner gives up on an error that does not
/// say the store is unavailable (a bug or corrupt data should surface, not loop). A store
/// that is unavailable (a database restarting, a full disk: [`StoreError::is_unavailable`])
/// is waited for as long as it takes, with [`Projections::trouble`] saying so meanwhile:
/// giving up there would leave the replica serving ever staler read models after the store
/// came back.
pub const MAX_STORE_RETRIES: u32 = 5;

/// The first wait before resubscribing; doubles per consecutive failure.
pub const STORE_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between resubscriptions while the store is unavailable.
pub const MAX_STORE_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// The longest `wait_for` waits, whatever the caller asks: a request should fail visibly
/// rather than hang when this replica cannot catch up.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Distinct kinds of skipped events logged at `warn`; later ones of an already-seen kind are
/// only counted, so a newer replica writing many unknown events cannot flood the log.
pub const MAX_WARNED_SKIP_KINDS: usize = 64;

/// When snapshots are taken.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Where the snapshot lives; `None` disables snapshots (every start rebuilds).
    pub snapshot_dir: Option<PathBuf>,
    /// Snapshot after this many applied events (or [`Self::snapshot_events_per_agenda`] per
    /// agenda held, when that is more).
    pub snapshot_every_events: u64,
    /// Snapshot by count only after at least this many applied events per agenda held: a
    /// snapshot's cost grows with the models (about 2 µs and 660 B per agenda in format 3,
    /// 10 µs and 3.4 KB before it; the runner applies nothing meanwhile), so a fixed count
    /// would have a large model snapshotting most of the time (at a million agendas, with the
    /// JSON snapshots, a 10 s snapshot every 100,000 events; a catch-up from position 0 wrote
    /// ~140 ever larger snapshots). With 4, the time spent
    /// snapshotting stays under about half of the time applying, and the events a restart
    /// after a crash replays cost about one snapshot's time. 0: the fixed count alone.
    pub snapshot_events_per_agenda: u64,
    /// Snapshot after this long with any applied event.
    pub snapshot_interval: Duration,
    /// The change feed's capacity (see [`CHANGE_FEED_CAPACITY`]).
    pub change_feed_capacity: usize,
    /// The first wait before resubscribing after a failed read of the log, doubled per
    /// consecutive failure up to `max_retry_backoff` ([`STORE_RETRY_BACKOFF`],
    /// [`MAX_STORE_RETRY_BACKOFF`]).
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// The process's resident memory past which the runner turns degraded
    /// ([`Projections::degraded`]): it holds live agendas compressed from then on, logs an
    /// error and carries on. `None`: no budget. A replay that would not fit starts anyway,
    /// slower, instead of being OOM-killed again at every restart.
    pub memory_budget: Option<u64>,
}

impl RunnerConfig {
    /// The applied events after which a snapshot is taken by count, with `agendas` agendas
    /// held: [`Self::snapshot_every_events`], or [`Self::snapshot_events_per_agenda`] per
    /// agenda when that is more.
    pub fn snapshot_threshold(&self, agendas: usize) -> u64 {
        let per_agenda = self.snapshot_events_per_agenda.saturating_mul(agendas as u64);
        self.snapshot_every_events.max(per_agenda)
    }
}

/// How often the runner compares the process's resident memory with its budget.
pub const MEMORY_CHECK_EVERY: Duration = Duration::from_millis(500);

impl Default for RunnerConfig {
    /// A restart replays at most about 100,000 events (well under a second) or five minutes
    /// of traffic, while snapshots of large models stay infrequent.
    fn default() -> Self {
        RunnerConfig {
            snapshot_dir: None,
            snapshot_every_events: 100_000,
            snapshot_events_per_agenda: 4,
            snapshot_interval: Duration::from_secs(300),
            change_feed_capacity: CHANGE_FEED_CAPACITY,
            retry_backoff: STORE_RETRY_BACKOFF,
            max_retry_backoff: MAX_STORE_RETRY_BACKOFF,
            memory_budget: None,
        }
    }
}

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A known event type that does not decode: a bug or a corrupt log. Folding past it would
    /// serve wrong read models, so the runner stops.
    #[error("the projections stopped at a bad event")]
    Decode(#[from] DecodeError),
    #[error("the projections stopped at a corrupt read model")]
    Corrupt(#[from] CorruptEntry),
    #[error("the projections cannot read the log")]
    Store(#[from] StoreError),
    /// The store's log ends before what the models applied: the database was restored from a
    /// backup or replaced under this replica, whose models would skip the positions it reuses.
    #[error(
        "the store's log went back under this replica (its head at {head}, these read models \
         at {applied}): the database was restored from a backup or replaced under it, and the \
         models would skip the positions its new events reuse; restart it (it rebuilds its read \
         models from the log)"
    )]
    LogWentBack { head: Position, applied: Position },
}

/// How often the runner checks that the log's head is not behind what it applied.
const HEAD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// `wait_for` gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the read models did not reach position {wanted} within {waited:?} (they are at {applied}){}",
    trouble.as_ref().map(|t| format!(": {t}")).unwrap_or_default()
)]
pub struct Timeout {
    pub wanted: Position,
    pub applied: Position,
    pub waited: Duration,
    /// Why they cannot get there now ([`Projections::trouble`]), when that is why the wait
    /// ended: the store is unavailable or the runner stopped. `None`: they were only slow.
    pub trouble: Option<String>,
    /// Whether that trouble is the runner's stop for good ([`Projections::has_stopped`]):
    /// another replica may answer, this one will not until restarted.
    pub stopped: bool,
}

struct Shared {
    models: RwLock<ReadModels>,
    applied: watch::Sender<Position>,
    ready: watch::Sender<bool>,
    /// Why the runner cannot read the log right now (or stopped), `None` while it can.
    trouble: watch::Sender<Option<String>>,
    /// Whether the runner stopped for good (its trouble then says why).
    stopped: AtomicBool,
    /// Why the models are degraded (the memory budget), `None` while they are not.
    degraded: RwLock<Option<String>>,
    changes: broadcast::Sender<Change>,
    skipped: AtomicU64,
}

/// The handle the API, the scheduler and the reapers hold: cheap to clone.
#[derive(Clone)]
pub struct Projections {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projections")
            .field("applied", &self.applied())
            .field("caught_up", &self.caught_up())
            .finish_non_exhaustive()
    }
}

impl Projections {
    /// A handle over fixed models with no runner (tests of the layers above).
    pub fn with_models(models: ReadModels) -> Projections {
        Projections::new(models, CHANGE_FEED_CAPACITY)
    }

    fn new(models: ReadModels, change_feed_capacity: usize) -> Projections {
        let position = models.position();
        // broadcast refuses a zero capacity; one is the smallest feed that works.
        let (changes, _) = broadcast::channel(change_feed_capacity.max(1));
        Projections {
            shared: Arc::new(Shared {
                models: RwLock::new(models),
                applied: watch::Sender::new(position),
                ready: watch::Sender::new(false),
                trouble: watch::Sender::new(None),
                stopped: AtomicBool::new(false),
                degraded: RwLock::new(None),
                changes,
                skipped: AtomicU64::new(0),
            }),
        }
    }

    /// Read access to the models. Keep it short: the runner waits for readers to finish
    /// before it applies the next batch.
    pub fn read(&self) -> RwLockReadGuard<'_, ReadModels> {
        // The runner never panics while holding the lock; if anything ever did, the models
        // are still a consistent fold up to some event, so keep serving them.
        self.shared.models.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, ReadModels> {
        self.shared.models.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The position of the last applied event.
    pub fn applied(&self) -> Position {
        *self.shared.applied.borrow()
    }

    /// The applied position as it moves.
    pub fn watch_applied(&self) -> watch::Receiver<Position> {
        self.shared.applied.subscribe()
    }

    /// Waits until the models are at `position` or later, at most `timeout` (capped at
    /// [`MAX_WAIT`]). Returns at once if they already are. Gives up early, with the
    /// [`Timeout::trouble`] that says why, when the runner cannot read the log (the store is
    /// unavailable, or the runner stopped): waiting out the timeout would only hold the
    /// caller, whom the trouble lets answer "unavailable, retry" at once.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), Timeout> {
        let waited = timeout.min(MAX_WAIT);
        let mut applied = self.shared.applied.subscribe();
        let mut trouble = self.shared.trouble.subscribe();
        let reached = async {
            tokio::select! {
                // The senders live in `Shared`, which this handle keeps alive: neither closes.
                r = applied.wait_for(|p| *p >= position) => r.is_ok(),
                _ = trouble.wait_for(Option::is_some) => false,
            }
        };
        match tokio::time::timeout(waited, reached).await {
            Ok(true) => Ok(()),
            // Applied while the trouble began: the wait is over all the same.
            _ if self.applied() >= position => Ok(()),
            Ok(false) | Err(_) => Err(Timeout {
                wanted: position,
                applied: self.applied(),
                waited,
                trouble: self.trouble(),
                stopped: self.has_stopped(),
            }),
        }
    }

    /// Why the runner cannot follow the log right now: the store is unavailable (it retries
    /// until the store is back, then this is `None` again), or it stopped for good. Readiness
    /// is false while this is `Some`.
    pub fn trouble(&self) -> Option<String> {
        self.shared.trouble.borrow().clone()
    }

    /// Whether the runner stopped for good (a bad event, a corrupt read model, a log gone
    /// back): unlike an unavailable store, this replica's models will not move again until it
    /// is restarted.
    pub fn has_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Why the read models are degraded, if they are: the process passed its memory budget
    /// ([`RunnerConfig::memory_budget`]) and live agendas are held compressed (slower, not
    /// wrong). An alarm for operators (`/readyz`'s text, `/metrics`), not a reason to stop.
    pub fn degraded(&self) -> Option<String> {
        self.shared.degraded.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// [`Projections::trouble`] as it changes.
    pub fn subscribe_trouble(&self) -> watch::Receiver<Option<String>> {
        self.shared.trouble.subscribe()
    }

    fn set_trouble(&self, trouble: Option<String>) {
        self.shared.trouble.send_if_modified(|now| {
            let changed = *now != trouble;
            *now = trouble;
            changed
        });
    }

    /// Whether the runner has been current with the log at least once since it started.
    pub fn caught_up(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Whether the read models may be acted on now: caught up once, and following the log
    /// (no [`Projections::trouble`]). The timed processes lead and act only while this holds
    /// (ops3am20: a replica whose projections had stopped kept its leader locks and reclaimed
    /// from frozen read models, agendas of live workers among them).
    pub fn following(&self) -> bool {
        self.caught_up() && self.shared.trouble.borrow().is_none()
    }

    /// Declares read models that no runner follows caught up (built whole elsewhere: a tool's
    /// or a test's), so what waits for readiness proceeds.
    pub fn mark_caught_up(&self) {
        self.shared.ready.send_replace(true);
    }

    /// Readiness as it changes (false until caught up, then true for good).
    pub fn watch_caught_up(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }

    /// A new change-feed subscription (see the module docs for the contract).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// Events skipped since start (unknown category, type or schema version).
    pub fn skipped_events(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }
}

/// The task that applies the log. Made by [`Runner::start`], driven by [`Runner::run`].
pub struct Runner {
    store: Arc<dyn EventStore>,
    config: RunnerConfig,
    handle: Projections,
    warned: HashSet<String>,
    memory_checked: Option<Instant>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The loaded models, unless they are past the log's head: a store restored from an older
/// backup (or replaced) under a newer snapshot. Applying from there would skip the next
/// events the store takes — acknowledged writes that no read model would ever show — and
/// keep showing agendas the log no longer holds; so the snapshot is dropped and the models
/// are rebuilt from the log. The snapshot file is moved aside at once (`<file>.past-the-head`,
/// kept for a look): a crash before the next snapshot must not load it again. (A store that
/// cannot be asked keeps them: `run` fails on it.)
async fn past_the_head(
    models: ReadModels,
    store: &dyn EventStore,
    dir: Option<&std::path::Path>,
) -> ReadModels {
    let position = models.position();
    let aside = |extension: &str| {
        if let Some(dir) = dir {
            let path = snapshot::path_in(dir);
            let aside = path.with_extension(extension);
            if let Err(e) = std::fs::rename(&path, &aside) {
                tracing::warn!(path = %path.display(), error = %e, "cannot move the unusable snapshot aside; remove it before the next start");
            }
        }
    };
    match store.head().await {
        Ok(head) if position > head => {
            tracing::warn!(snapshot = %position, head = %head, "the projections snapshot is past the end of the log (was the store restored from a backup?); rebuilding from the log");
            aside("past-the-head");
            ReadModels::new()
        }
        Ok(_) => match foreign_agenda(&models, store).await {
            Some(stream) => {
                tracing::warn!(snapshot = %position, stream = &*stream, "the projections snapshot holds an agenda this log never had (another store's snapshot, copied or restored into this data directory?); rebuilding from the log");
                aside("foreign");
                ReadModels::new()
            }
            None => models,
        },
        Err(_) => models,
    }
}

/// Agendas of a snapshot checked against the log at start ([`foreign_agenda`]).
const SNAPSHOT_AGENDAS_CHECKED: usize = 8;

/// The stream of one of the snapshot's most recently added agendas that the log never had, if
/// any: the snapshot is another store's (ops3am4: one copied into a data directory was loaded
/// and served, and the scheduler queued its agendas into this log within a second). An agenda
/// the log deleted since (reaped) had its stream, and is no evidence. A few reads at start.
async fn foreign_agenda(models: &ReadModels, store: &dyn EventStore) -> Option<String> {
    let all = crate::query::Visibility::All;
    let mut query = crate::AgendaQuery::new(&all);
    query.descending = true;
    query.limit = SNAPSHOT_AGENDAS_CHECKED;
    let streams: Vec<String> =
        models.select_agendas(&query).items.iter().map(|e| format!("agenda-{}", e.key())).collect();
    for stream in streams {
        if let Ok(events) = store.read_stream(&stream, 0, 1, pop_store::Direction::Forwards).await
            && events.is_empty()
        {
            return Some(stream);
        }
    }
    None
}

impl Runner {
    /// Loads the snapshot when there is a usable one (else logs why and starts from position
    /// 0) and returns the runner with the handle to its models.
    pub async fn start(store: Arc<dyn EventStore>, config: RunnerConfig) -> (Runner, Projections) {
        let models = match config.snapshot_dir.clone() {
            None => ReadModels::new(),
            Some(dir) => match tokio::task::spawn_blocking(move || snapshot::load(&dir)).await {
                Ok(Ok(models)) => {
                    tracing::info!(position = %models.position(), "projections snapshot loaded");
                    models
                }
                Ok(Err(Unusable::Missing(path))) => {
                    tracing::info!(path = %path.display(), "no projections snapshot; rebuilding from the log");
                    ReadModels::new()
                }
                Ok(Err(why)) => {
                    tracing::warn!(error = %why, "projections snapshot not used; rebuilding from the log");
                    ReadModels::new()
                }
                Err(join) => {
                    tracing::warn!(error = %join, "loading the projections snapshot failed; rebuilding from the log");
                    ReadModels::new()
                }
            },
        };
        let models = past_the_head(models, store.as_ref(), config.snapshot_dir.as_deref()).await;
        let handle = Projections::new(models, config.change_feed_capacity);
        let runner = Runner {
            store,
            config,
            handle: handle.clone(),
            warned: HashSet::new(),
            memory_checked: None,
        };
        (runner, handle)
    }

    /// Applies the log until `shutdown` completes (then snapshots and returns `Ok`) or an
    /// error stops it.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectionError> {
        // A snapshot that loaded past the budget turns degraded before anything else.
        self.check_memory();
        let mut applied = self.handle.applied();
        // A store that fails before the first batch (a corrupt file, say) stops the runner as
        // a failure later would: logged, and /readyz says why (not "catching up" for ever).
        let start_head = match self.store.head().await {
            Ok(head) => head,
            Err(e) => return Err(self.stopped(e.into(), applied)),
        };
        if let Err(e) = self.check_caught_up(applied, start_head).await {
            return Err(self.stopped(e, applied));
        }

        let (tx, mut rx) = mpsc::channel(READ_AHEAD_BATCHES);
        let backoff = (self.config.retry_backoff, self.config.max_retry_backoff);
        let reader = tokio::spawn(read_log(
            Arc::clone(&self.store),
            applied,
            tx,
            self.handle.clone(),
            backoff,
        ));
        let _abort_reader = AbortOnDrop(reader);

        let mut since_snapshot: u64 = 0;
        let mut ticker = tokio::time::interval(self.config.snapshot_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
        let mut head_check = tokio::time::interval(HEAD_CHECK_EVERY);
        head_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);

        let result = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                batch = rx.recv() => {
                    let batch = match batch {
                        Some(Ok(batch)) => batch,
                        Some(Err(e)) => break Err(ProjectionError::Store(e)),
                        None => break Err(ProjectionError::Store(StoreError::Closed)),
                    };
                    let n = batch.0.len() as u64;
                    match self.apply_batch(batch) {
                        Ok(position) => {
                            applied = position;
                            self.check_memory();
                        }
                        Err(e) => break Err(e),
                    }
                    since_snapshot += n;
                    if let Err(e) = self.check_caught_up(applied, start_head).await {
                        break Err(e);
                    }
                    if self.snapshot_due(since_snapshot) {
                        self.snapshot().await;
                        since_snapshot = 0;
                    }
                }
                _ = ticker.tick() => {
                    if since_snapshot > 0 {
                        self.snapshot().await;
                        since_snapshot = 0;
                    }
                }
                // A restore under a running replica puts the head back: new events then land
                // at positions these models passed, and were never shown or run (ops3am10,
                // ops3am11: /readyz went back to ready once new writes passed the old
                // position). Stopping keeps the replica unready for good, until a restart.
                _ = head_check.tick() => {
                    // The subscription hands out nothing past the head it read
                    // (`pop_store::subscribe`), so a head behind what was applied went back.
                    if let Ok(head) = self.store.head().await
                        && (head < applied || self.store.log_went_back().is_some())
                    {
                        break Err(ProjectionError::LogWentBack { head, applied });
                    }
                }
            }
        };
        if let Err(ProjectionError::LogWentBack { .. }) = &result {
            // Its snapshot is past what the log now holds at those positions: the next start
            // must rebuild, not load it (once new writes pass it, it no longer looks past the
            // head).
            self.set_snapshot_aside("log-went-back");
        } else if since_snapshot > 0 {
            self.snapshot().await;
        }
        result.map_err(|e| self.stopped(e, applied))
    }

    /// Moves the snapshot file aside (`<file>.<extension>`), so the next start rebuilds.
    fn set_snapshot_aside(&self, extension: &str) {
        let Some(dir) = &self.config.snapshot_dir else { return };
        let path = snapshot::path_in(dir);
        if path.exists()
            && let Err(e) = std::fs::rename(&path, path.with_extension(extension))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot move the snapshot aside; remove it before the next start");
        }
    }

    /// Logs why the runner stops for good and keeps the replica unready with the reason.
    fn stopped(&self, e: ProjectionError, applied: Position) -> ProjectionError {
        tracing::error!(error = %ErrorChain(&e), position = %applied, "projections stopped");
        self.handle.shared.stopped.store(true, Ordering::SeqCst);
        self.handle.set_trouble(Some(format!(
            "the projections stopped at position {applied}: {} (the replica stays unready; \
             check the store — `pop verify` — and restart)",
            ErrorChain(&e)
        )));
        e
    }

    /// Turns the models degraded the first time the process's resident memory is past the
    /// budget (checked at most every [`MEMORY_CHECK_EVERY`]).
    fn check_memory(&mut self) {
        let Some(budget) = self.config.memory_budget else { return };
        if self.memory_checked.is_some_and(|at| at.elapsed() < MEMORY_CHECK_EVERY)
            || self.handle.degraded().is_some()
        {
            return;
        }
        self.memory_checked = Some(Instant::now());
        let Some(resident) = resident_bytes() else { return };
        if resident <= budget {
            return;
        }
        let compacted = self.handle.write().compact_live();
        let after = resident_bytes().unwrap_or(0);
        let why = format!(
            "the process held {} MiB, past its memory budget of {} MiB: live agendas are held compressed from now on (reads and reports are slower); raise the budget (pop serve --memory-budget, POP_MEMORY_BUDGET, in bytes; by default 80 % of the container's memory limit) or the memory limit, or lower the customers' quotas, then restart",
            resident >> 20,
            budget >> 20
        );
        tracing::error!(
            resident_mib = resident >> 20,
            budget_mib = budget >> 20,
            compacted,
            after_mib = after >> 20,
            "MEMORY BUDGET EXCEEDED: the read models run degraded"
        );
        *self.handle.shared.degraded.write().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    /// Applies one decoded batch: everything up to the first bad event, then the error.
    fn apply_batch(
        &mut self,
        (batch, traces): (DecodedBatch, Option<Traces>),
    ) -> Result<Position, ProjectionError> {
        // A span per batch (a root: one batch folds the events of many requests), linked to
        // the traces of the requests whose events it applies (at most `MAX_LINKS_PER_SPAN`).
        let span = tracing::info_span!(
            parent: None,
            "projection_batch",
            events = batch.len(),
            position = tracing::field::Empty,
            links_dropped = tracing::field::Empty,
        );
        if let (Some(p), Some(traces)) = (pop_store::trace::propagation(), traces) {
            for traceparent in &traces.traceparents {
                p.link(&span, traceparent);
            }
            if traces.dropped > 0 {
                span.record("links_dropped", traces.dropped);
            }
        }
        let _entered = span.enter();
        let mut changes = Vec::new();
        let mut failure = None;
        let position = {
            let mut models = self.handle.write();
            for (position, decoded) in batch {
                let decoded = match decoded {
                    Ok(d) => d,
                    Err(e) => {
                        failure = Some(ProjectionError::Decode(e));
                        break;
                    }
                };
                if let Decoded::Skipped(skip) = &decoded {
                    self.handle.shared.skipped.fetch_add(1, Ordering::Relaxed);
                    let kind = skip_kind(skip);
                    if self.warned.len() < MAX_WARNED_SKIP_KINDS && self.warned.insert(kind) {
                        tracing::warn!(%position, reason = %skip, "skipping events this build does not know (a newer replica may write them); counted in skipped_events");
                    }
                }
                if let Err(e) = models.apply(position, &decoded, Some(&mut changes)) {
                    failure = Some(ProjectionError::Corrupt(e));
                    break;
                }
            }
            models.position()
        };
        span.record("position", tracing::field::display(position));
        // Position first, then the changes: whoever receives a change can already read it.
        self.handle.shared.applied.send_replace(position);
        for change in changes {
            // No subscriber is not an error: the feed is for whoever listens now.
            let _ = self.handle.shared.changes.send(change);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(position),
        }
    }

    /// Marks the models ready once they reach the start head, or once nothing is left to
    /// read after them (the events up to the head may have been deleted since).
    async fn check_caught_up(
        &self,
        applied: Position,
        start_head: Position,
    ) -> Result<(), ProjectionError> {
        if self.handle.caught_up() {
            return Ok(());
        }
        if applied >= start_head || self.store.read_all(applied, 1).await?.is_empty() {
            tracing::info!(position = %applied, "projections caught up with the log");
            self.handle.shared.ready.send_replace(true);
        }
        Ok(())
    }

    /// Whether `since` applied events call for a snapshot by count: the configured count, or
    /// the events per agenda times the agendas held when that is more. The models' lock is
    /// taken (to count the agendas) only once the configured count is reached, not after
    /// every applied batch.
    fn snapshot_due(&self, since: u64) -> bool {
        if since < self.config.snapshot_every_events {
            return false;
        }
        let agendas = match self.config.snapshot_events_per_agenda {
            0 => 0,
            _ => self.handle.read().agendas().len(),
        };
        since >= self.config.snapshot_threshold(agendas)
    }

    async fn snapshot(&self) {
        let Some(dir) = self.config.snapshot_dir.clone() else { return };
        let shared = Arc::clone(&self.handle.shared);
        let saved = tokio::task::spawn_blocking(move || {
            let models = shared.models.read().unwrap_or_else(PoisonError::into_inner);
            snapshot::save(&dir, &models)
        })
        .await;
        match saved {
            Ok(Ok(SnapshotInfo { position, bytes, .. })) => {
                tracing::info!(%position, bytes, "projections snapshot written");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %ErrorChain(&e), "projections snapshot not written")
            }
            Err(e) => tracing::warn!(error = %e, "projections snapshot task failed"),
        }
    }
}

type DecodedBatch = Vec<(Position, Result<Decoded, DecodeError>)>;

fn skip_kind(skip: &crate::decode::Skip) -> String {
    use crate::decode::Skip;
    match skip {
        Skip::UnknownCategory { stream } => {
            format!("category {}", stream.split_once('-').map_or(stream.as_str(), |(c, _)| c))
        }
        Skip::UnknownType { event_type, .. } => format!("type {event_type}"),
        Skip::UnknownVersion { event_type, version, .. } => format!("type {event_type} v{version}"),
    }
}

fn decode_batch(events: &[RecordedEvent]) -> DecodedBatch {
    events.iter().map(|e| (e.position, decode(e))).collect()
}

/// The distinct traceparents of a batch's events, for its span's links: only while traces
/// are exported (else `None`, at the cost of one check per batch).
fn batch_traces(events: &[RecordedEvent]) -> Option<Traces> {
    pop_store::trace::propagation()?;
    let mut traces = Traces::default();
    for e in events {
        traces.note(&e.metadata);
    }
    Some(traces)
}

/// Follows the log after `after`, decoding it in batches, resubscribing after transient
/// errors (for as long as the store is unavailable, telling `handle`'s trouble meanwhile).
/// Ends when the receiver is gone or after forwarding a lasting error.
async fn read_log(
    store: Arc<dyn EventStore>,
    mut after: Position,
    tx: mpsc::Sender<Result<(DecodedBatch, Option<Traces>), StoreError>>,
    handle: Projections,
    (first_backoff, max_backoff): (Duration, Duration),
) {
    let mut failures = 0u32;
    loop {
        let mut events = store.subscribe_all(after);
        let error = loop {
            let Some(first) = events.next().await else { break StoreError::Closed };
            let first = match first {
                Ok(e) => e,
                Err(e) => break e,
            };
            let mut batch = vec![first];
            let mut pending_error = None;
            // Take whatever is ready without waiting: a busy log fills the batch, a quiet one
            // sends each event as it comes.
            while batch.len() < MAX_APPLY_BATCH {
                match events.next().now_or_never() {
                    Some(Some(Ok(e))) => batch.push(e),
                    Some(Some(Err(e))) => {
                        pending_error = Some(e);
                        break;
                    }
                    Some(None) => {
                        pending_error = Some(StoreError::Closed);
                        break;
                    }
                    None => break,
                }
            }
            failures = 0;
            handle.set_trouble(None);
            after = batch.last().map_or(after, |e| e.position);
            if tx.send(Ok((decode_batch(&batch), batch_traces(&batch)))).await.is_err() {
                return;
            }
            if let Some(e) = pending_error {
                break e;
            }
        };
        let unavailable = error.is_unavailable() && !matches!(error, StoreError::Closed);
        if matches!(error, StoreError::Closed) || (!unavailable && failures >= MAX_STORE_RETRIES) {
            let _ = tx.send(Err(error)).await;
            return;
        }
        tracing::warn!(error = %ErrorChain(&error), %after, "reading the log failed; resubscribing");
        if unavailable {
            handle.set_trouble(Some(format!(
                "the projections cannot read the log after position {after}: {}",
                ErrorChain(&error)
            )));
        }
        let backoff = first_backoff.saturating_mul(2u32.saturating_pow(failures.min(16)));
        tokio::time::sleep(backoff.min(max_backoff)).await;
        failures = failures.saturating_add(1);
        // A quiet log sends no batch to say the store is back: its answering says so.
        if unavailable && store.head().await.is_ok() {
            handle.set_trouble(None);
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Folds `events` (in log order, after the models' position) into `models`, as the runner
/// does, without change records: for a caller that reads the log itself (`pop verify`
/// catching a snapshot up through a read-only file).
pub fn fold_events(
    models: &mut ReadModels,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    for e in events {
        models.apply(e.position, &decode(e)?, None)?;
    }
    Ok(())
}

/// How far a rebuild has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildProgress {
    pub events: u64,
    pub position: Position,
    /// The store's head when the rebuild started (for a progress bar's total).
    pub head: Position,
    pub elapsed: Duration,
    pub events_per_sec: f64,
}

/// Replays the whole log from position 0 into fresh read models, calling `on_progress`
/// after every batch. Publishes nothing: the caller decides what to do with the result
/// (write it as a snapshot, compare its fingerprint, serve it).
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    mut on_progress: impl FnMut(RebuildProgress),
) -> Result<ReadModels, ProjectionError> {
    let head = store.head().await?;
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel(READ_AHEAD_BATCHES);
    let reader = tokio::spawn(async move {
        let mut after = Position::START;
        loop {
            let batch = match store.read_all(after, REBUILD_BATCH).await {
                Ok(batch) if batch.is_empty() => return,
                Ok(batch) => batch,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            after = batch.last().map_or(after, |e| e.position);
            // Decoding is as heavy as folding: each batch is decoded on the blocking pool, so
            // reading the next batches, decoding and folding share both cores instead of
            // one task doing all the reading and decoding. The fold takes them in order.
            let decoding = tokio::task::spawn_blocking(move || decode_batch(&batch));
            if tx.send(Ok(decoding)).await.is_err() {
                return;
            }
        }
    });
    let _abort_reader = AbortOnDrop(reader);
    let mut models = ReadModels::new();
    // Nothing queries the models until they are returned: index them once at the end.
    models.defer_indexes();
    let mut events = 0u64;
    while let Some(decoding) = rx.recv().await {
        let batch = match decoding?.await {
            Ok(batch) => batch,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the runtime shut down during a rebuild"),
        };
        for (position, decoded) in batch {
            models.apply(position, &decoded?, None)?;
            events += 1;
        }
        let elapsed = started.elapsed();
        let secs = elapsed.as_secs_f64();
        on_progress(RebuildProgress {
            events,
            position: models.position(),
            head,
            elapsed,
            events_per_sec: if secs > 0.0 { events as f64 / secs } else { 0.0 },
        });
    }
    models.build_indexes();
    Ok(models)
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`), `None` where there is no
/// such file.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
