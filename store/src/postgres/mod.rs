//! The shared backend: PostgreSQL, for several `pop` replicas on one database
//! (tokio-postgres + deadpool-postgres: no compile-time database, no `links` clash with
//! rusqlite's bundled SQLite as sqlx 0.9 has, and direct access to LISTEN/NOTIFY messages on a
//! raw connection).
//!
//! - **Writes.** A few writer tasks (4) share one bounded queue; each takes up to 256 appends
//!   / 32 MiB (while another group is committing it keeps gathering until that one lands,
//!   ≤ 20 ms; then, or with nothing in flight, ≤ 200 µs more for the appenders the landings
//!   answered) and commits them in one transaction ([`writer`]). When the writers know the
//!   state of every stream of the group (this store committed it last, or the append wants
//!   a new stream), the group is decided from that and sent in **one round trip**: BEGIN,
//!   the locks, one statement that writes the events and streams only if every stream is
//!   as known (checked under the locks), COMMIT. Otherwise, or when that knowledge was
//!   stale (another replica wrote), in **two round trips**: sorted
//!   `pg_advisory_xact_lock` per stream (replicas never deadlock), then the transaction id,
//!   the streams' versions and chain heads and the event ids; each append is judged by the
//!   store's one [`append rule`](crate::append_rule) against those and its batch-mates;
//!   accepted events are linked into their stream's hash chain ([`crate::digest`]: SHA-256 in
//!   Rust, under the stream's lock) and go in with one `unnest` insert, streams are upserted
//!   with their new head hash, commit, then `pg_notify` as its own
//!   transaction right behind the COMMIT. Unique indexes on `event_id` and `(stream, version)`
//!   back the locks up: a unique violation from another replica rolls the group back and
//!   redoes it (≤ 3 times). Durability is the server's `synchronous_commit`.
//! - **Log order and the late-commit trap.** Each event row has `tx_id` (the writing
//!   transaction's `pg_current_xact_id()`) and `seq` (its number within that transaction); the
//!   global order is `(tx_id, seq)`, exposed as `Position::new(tx_id, seq)`. `read_all` returns
//!   only rows with `tx_id < pg_snapshot_xmin(pg_current_snapshot())`: every transaction below
//!   that horizon has ended, and every one that could still commit is at or above it, so
//!   nothing can ever appear below a position a reader has passed, and the checkpoint makes
//!   duplicates impossible. A sequence-number log would skip (Marten's trap). The writer takes
//!   its streams' locks *before* it takes its transaction id, so within a stream log order is
//!   version order. Cost: a transaction left open anywhere on the server (even in another
//!   database) holds the horizon and delays readers — never skips; `read_all` and `head` wait
//!   (≤ 2 s) while committed events sit above the horizon, so a caller sees its own appends.
//! - **Why not a locked counter.** A counter row updated in every append transaction
//!   serialises all commits of all replicas on one row lock held across the commit's fsync;
//!   the horizon rule costs nothing on the write path.
//! - **Why NOTIFY after COMMIT.** A NOTIFY inside the append transaction takes PostgreSQL's
//!   global notification lock at commit and holds it across the WAL flush: that serialised
//!   every commit of every replica (measured: all writers waiting on `Lock:object` in COMMIT).
//!   A notification lost to a crash between the two costs other replicas ≤ 1 s.
//! - **Why `SET LOCAL plan_cache_mode = force_generic_plan` and `enable_seqscan = off`.** A
//!   generic plan cached while `pop_events` was empty made the duplicate-id check a sequential
//!   scan of the whole log on every commit until the first ANALYZE (BENCHMARKS.md); planning
//!   every statement for its parameters cured that but cost about half of the server's time
//!   per one-event commit. Every writer lookup is by a unique key, so the writers plan once
//!   per connection with sequential scans off. Scoped to the writers' transactions: readers
//!   keep the defaults.
//! - **Live tailing.** One task per store LISTENs on its own connection, reads the safe head
//!   on every notification, local commit, or 1 s tick (missed notifications, reconnects) and
//!   publishes it on the head `watch` of the shared subscription code; while events wait above
//!   the horizon it looks again after 1–20 ms. It idles while the store has no subscriber.
//! - **Tables.** `pop_streams(name PK, version, last_tx, last_seq, deleted_at, head_hash)`
//!   (the last position and the head hash survive a delete, so the head never moves back and a
//!   deleted stream stays accounted for), `pop_events(tx_id, seq PK, stream, version,
//!   event_id UNIQUE, …, chain)`, `pop_schema(version)`; migrations run in one
//!   transaction under an advisory lock, so replicas starting together migrate once.
//!   `statement_timeout` 30 s and `idle_in_transaction_session_timeout` 5 s per session (a
//!   replica frozen mid-commit held every replica's reads back for as long as it lived); pooled connections that died (a database restart)
//!   are replaced, so appends fail with a backend error while the database is down and work
//!   again after.
//! - **Verification** ([`verify()`]): one read-only repeatable-read transaction, every event
//!   in (stream, version) order through the rule both backends share ([`crate::verify`]), then
//!   every entry in global order against the signed checkpoints ([`crate::commitment`]).
//! - **Checkpoints** (`seal.rs`): sealed only below the gap-free horizon; the hash rows of
//!   deleted streams stay in `pop_pruned`, the signed checkpoints are in `pop_checkpoints`.
//! - **Reading the log** (`reader.rs`, `ahead.rs`): a `read_all` is one prepared statement;
//!   once one came back whole, a stream on a thread and connection of its own reads the next
//!   batches ahead of the caller as binary `COPY` parsed in place (an event's data and
//!   metadata are slices of the message), and hands out only what a fresh read would return
//!   (never a batch that came back short, never across a delete by this store, never older
//!   than 0.5 s: another replica's delete may be seen that late).
//! - **Leader locks** ([`PgLeadership`]): a session-level advisory lock on a connection of its
//!   own held by the guard; the guard reports `lost` when that connection ends (a heartbeat
//!   query every 2 s finds silent deaths), and dropping it closes the connection.

mod ahead;
mod copy;
mod leader;
mod reader;
mod schema;
mod seal;
mod tail;
pub mod transfer;
mod verify;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::FutureExt;
use futures::stream::BoxStream;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_postgres::NoTls;
use tracing::Instrument;

use crate::limits::{check_append, check_read_max, check_stream_name};
use crate::subscribe::{ReadAfter, subscribe_by_polling};
use crate::{
    AppendResult, Clock, Direction, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreError, system_clock,
};

pub use leader::PgLeadership;
pub use schema::PG_SCHEMA_VERSION;
pub use verify::{verify, verify_trusting, verify_with};
pub use writer::{PG_MAX_GROUP_REQUESTS, PG_WRITER_QUEUE_CAPACITY};

/// The advisory-lock class (first key of the two-int key space) of everything pop locks:
/// "pop" in ASCII. Stream locks use the one-bigint key space, which PostgreSQL keeps apart.
pub(crate) const LOCK_CLASS: i32 = 0x706f70;

/// The channel appends NOTIFY on commit (scoped to the database by PostgreSQL).
pub(crate) const CHANNEL: &str = "pop_log";

/// How long a read or head query waits for transactions that hold the gap-free horizon back
/// (see [`reader::settled`]) before it answers with what is safe. Covers ordinary commits of
/// other writers; only a transaction left open for longer makes a read return short.
pub const PG_SETTLE_WAIT: Duration = Duration::from_secs(2);

/// How often a store that follows the database's clock ([`PgOptions::database_clock`])
/// measures it again.
pub const PG_CLOCK_CHECK_EVERY: Duration = Duration::from_secs(30);

/// An offset from the database's clock above this is logged as a warning.
const CLOCK_WARN_MICROS: i64 = 1_000_000;

/// The longest round trip a measure of the database's clock is taken from: the measure is
/// off by up to half of it (ops3am22: one query that waited out a 35 s stall of the database
/// gave an offset 7–17 s wrong, kept for 30 s: commits and leases stamped in the future, a
/// live worker's lease timed out early, the log blaming NTP).
pub const PG_CLOCK_MAX_ROUND_TRIP: Duration = Duration::from_millis(250);

/// Measures of the database's clock one reading takes at most, keeping the one of the
/// shortest round trip (as NTP trusts the sample of the smallest delay).
const CLOCK_SAMPLES: usize = 3;

/// The database server's time minus `clock`'s, in microseconds, with the server's time and
/// when it was read: queries bracketed by two readings of `clock`, whose midpoint is taken
/// (off by at most half the round trip); of up to [`CLOCK_SAMPLES`], the one of the shortest
/// round trip, the first within [`PG_CLOCK_MAX_ROUND_TRIP`]. With `precise`, a reading whose
/// best round trip is longer is refused (the last offset is kept).
async fn database_offset(
    client: &tokio_postgres::Client,
    clock: &Clock,
    precise: bool,
) -> Result<(i64, i64, std::time::Instant), StoreError> {
    let mut best: Option<(Duration, (i64, i64, std::time::Instant))> = None;
    for _ in 0..CLOCK_SAMPLES {
        let started = std::time::Instant::now();
        let before = clock().timestamp_micros();
        let row = client
            .query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", &[])
            .await
            .map_err(|e| StoreError::backend("reading the database server's clock", e))?;
        let after = clock().timestamp_micros();
        let round_trip = started.elapsed();
        let midpoint = started + round_trip / 2;
        let server: i64 = row.get(0);
        let sample = (server - (before / 2 + after / 2), server, midpoint);
        if best.as_ref().is_none_or(|(shortest, _)| round_trip < *shortest) {
            best = Some((round_trip, sample));
        }
        if round_trip <= PG_CLOCK_MAX_ROUND_TRIP {
            break;
        }
    }
    match best {
        Some((round_trip, _)) if precise && round_trip > PG_CLOCK_MAX_ROUND_TRIP => {
            Err(StoreError::Unusable(format!(
                "the database server's clock was read in no less than {round_trip:?}, too slow \
                 to measure it within {PG_CLOCK_MAX_ROUND_TRIP:?}; the last offset is kept"
            )))
        }
        Some((_, sample)) => Ok(sample),
        None => Err(StoreError::Unusable("no reading of the database server's clock".into())),
    }
}

/// Takes a measured offset, and says so when this replica's clock is more than a second off
/// (first seen, or moved by more than a second since).
fn note_offset(
    offset: &crate::clock::ClockOffset,
    (micros, server, at): (i64, i64, std::time::Instant),
) {
    offset.anchor(server, at);
    let before = offset.set(micros);
    if micros.abs() > CLOCK_WARN_MICROS
        && (before.abs() <= CLOCK_WARN_MICROS || (micros - before).abs() > CLOCK_WARN_MICROS)
    {
        tracing::warn!(
            offset_ms = micros / 1_000,
            "this replica's clock is off the PostgreSQL server's by more than a second \
             (offset_ms: the server's time minus this replica's): pop stamps commands, leases \
             and commits with the server's time, so replicas still agree; set the clocks right \
             (NTP) all the same"
        );
    } else if micros.abs() <= CLOCK_WARN_MICROS && before.abs() > CLOCK_WARN_MICROS {
        tracing::info!(
            offset_ms = micros / 1_000,
            "this replica's clock agrees with the PostgreSQL server's again"
        );
    }
}

/// Measures the database's clock every [`PG_CLOCK_CHECK_EVERY`] until the store closes; a
/// failed measure keeps the last offset.
async fn follow_database_clock(
    pool: Pool,
    offset: crate::clock::ClockOffset,
    clock: Clock,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PG_CLOCK_CHECK_EVERY) => {}
            _ = closing.changed() => return,
        }
        let measured = match pool.get().await {
            Ok(client) => database_offset(&client, &clock, true).await,
            Err(e) => Err(pool_error(e)),
        };
        match measured {
            Ok(micros) => note_offset(&offset, micros),
            Err(e) => tracing::debug!(error = %e, "could not read the database server's clock"),
        }
    }
}

/// Why a PostgreSQL group's outcome is not known ([`StoreError::OutcomeUnknown`]).
pub(crate) const CONNECTION_CLOSED_IN_COMMIT: &str =
    "the database connection closed before the commit was answered";

/// Called by a writer after it wrote a group and before it commits, with the transaction
/// still open: tests use it to hold transactions open for random times.
pub type CommitHook = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// How to connect to a PostgreSQL store.
#[derive(Clone)]
pub struct PgOptions {
    /// Stamps `recorded_at` (moved to the database server's time with [`Self::database_clock`]).
    pub clock: Clock,
    /// Follow the PostgreSQL server's clock: the offset between it and `clock` is measured at
    /// connect and every [`PG_CLOCK_CHECK_EVERY`], and both the commit times and the commands'
    /// time ([`EventStore::wall_clock`]) read `clock` moved by it. Replicas whose own clocks
    /// disagree then still agree on time: a lease one hands out is not already expired by
    /// another's reclaimer (auditor19: a replica 30 s behind gave leases that another replica
    /// timed out at once, and an agenda with one attempt failed unrun). On by default; off
    /// where a test pins `clock`.
    pub database_clock: bool,
    /// Connections in the pool (writers and readers share it; the tailing task, each
    /// leader lock and each stream of `read_all` read ahead — at most 4, and 2 idle — have
    /// their own). 16 keeps a few groups and reads in flight per replica
    /// without crowding `max_connections` (100 by default) when several replicas share it.
    pub pool_size: usize,
    /// Writer tasks, each committing one group at a time on its own connection.
    pub writers: usize,
    /// Any single statement running longer than this is cancelled by the server: a stuck
    /// query fails rather than holding a connection (and the gap-free horizon) forever.
    pub statement_timeout: Duration,
    /// How long the server keeps a session of this store whose transaction says nothing
    /// (`idle_in_transaction_session_timeout`); zero for none. A writer's transaction holds
    /// the gap-free horizon of every replica's reads until it ends, and a replica frozen
    /// mid-commit (`kill -STOP`, a hung node, a paused VM) held it for as long as the process
    /// lived: no read model anywhere moved past it. pop's own transactions never wait on
    /// anything but the server, so a healthy replica is never cut off by it; the frozen one
    /// finds its connection gone and its commit undone when it wakes.
    pub idle_transaction_timeout: Duration,
    /// How long to wait for a new connection or a free one from the pool.
    pub connect_timeout: Duration,
    /// Test hook; `None` in production.
    pub before_commit: Option<CommitHook>,
    /// Link every event into its stream's hash chain ([`crate::digest`]). Always on; off only
    /// for the append benchmark's baseline, which measures what hashing costs (a log written
    /// without it does not verify).
    pub hash_chain: bool,
    /// Open for reading only (`pop log` beside the servers): no schema migration, which takes
    /// a lock and writes (ops3am4: `pop log --store` made pop's tables in a wrong database and
    /// failed for a read-only role); the database must hold this build's schema.
    pub read_only: bool,
    /// Chain (and so sign) the events of a database whose schema predates the hash chain:
    /// only for an older pop's store trusted as it is (`pop serve --chain-unchained-history`).
    pub chain_unchained: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            clock: system_clock(),
            database_clock: true,
            pool_size: 16,
            writers: 4,
            statement_timeout: Duration::from_secs(30),
            idle_transaction_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            before_commit: None,
            hash_chain: true,
            read_only: false,
            chain_unchained: false,
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .field("writers", &self.writers)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_transaction_timeout", &self.idle_transaction_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds the connection settings from a URL (`postgres://user@host:port/db?...`) plus pop's
/// session settings.
pub(crate) fn pg_config(
    url: &str,
    options: &PgOptions,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse().map_err(|e| StoreError::backend("parsing the PostgreSQL connection URL", e))?;
    let mut session = config.get_options().unwrap_or("").to_owned();
    session.push_str(&format!(" -c statement_timeout={}", options.statement_timeout.as_millis()));
    session.push_str(&format!(
        " -c idle_in_transaction_session_timeout={}",
        options.idle_transaction_timeout.as_millis()
    ));
    config.options(session.trim());
    if config.get_application_name().is_none() {
        config.application_name("pop");
    }
    config.connect_timeout(options.connect_timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    Ok(config)
}

/// State shared by the store's handle, its writers and its readers.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) clock: Clock,
    /// [`EventStore::wall_clock`]: `clock` before it is made monotonic, or this process's
    /// wall clock when the store does not follow the database's.
    pub(crate) wall: Clock,
    /// The measured offset to the database's clock ([`PgOptions::database_clock`]).
    pub(crate) offset: Option<crate::clock::ClockOffset>,
    /// The latest time `clock` gave ([`EventStore::commit_floor`]).
    pub(crate) floor: crate::clock::CommitFloor,
    pub(crate) before_commit: Option<CommitHook>,
    /// See [`PgOptions::hash_chain`].
    pub(crate) hash_chain: bool,
    /// Wakes the tailing task after a local commit, without waiting for the notification.
    pub(crate) committed: Arc<Notify>,
    /// The batches of `read_all` read ahead ([`ahead`]).
    pub(crate) ahead: ahead::ReadAhead,
    /// What the writers last committed to each stream (the one-round-trip commit).
    pub(crate) known: writer::KnownStreams,
    /// The highest transaction id of the log's head this process read.
    pub(crate) high_water: std::sync::atomic::AtomicI64,
    /// Set once a head read came before `high_water` ([`EventStore::log_went_back`]).
    pub(crate) went_back: std::sync::OnceLock<String>,
    /// Whether the last look at the head found committed events held above the horizon (a
    /// transaction open elsewhere): what [`EventStore::slow_head_hint`] names.
    pub(crate) horizon_held: std::sync::atomic::AtomicBool,
    /// Failed group commits, logged once per [`crate::repeats::EVERY`] while they go on.
    pub(crate) failing: crate::repeats::SharedRepeats,
    /// Group commits of this handle's writers ([`EventStore::group_commits`]).
    pub(crate) commits: crate::GroupCommits,
}

impl Shared {
    /// Notes the transaction id of the log's head (`what`): one below the highest head seen so
    /// far when the read was sent (`before`) means the database went back under this process —
    /// restored from a backup (ops3am10, ops3am11: running replicas acknowledged writes at
    /// positions their read models had passed, and never showed or ran them). The head is read
    /// below the horizon (nothing below it can still commit), so a read sent after another
    /// ended never reads lower otherwise; reads sent at once may end in any order. Commits are
    /// not noted: one of an older transaction may end after a newer one (auditor24: two
    /// replicas under concurrent writes both latched).
    pub(crate) fn note_tx(&self, tx: i64, before: i64, what: &str) {
        self.high_water.fetch_max(tx, std::sync::atomic::Ordering::SeqCst);
        let highest = before;
        if tx < highest && self.went_back.get().is_none() {
            let why = format!(
                "{what} in PostgreSQL transaction {tx}, before transaction {highest} this process \
                 saw in the log earlier: the database was restored from a backup or replaced \
                 under it; restart it (it rebuilds its read models from the log)"
            );
            tracing::error!(error = %why, "the log went back under this process");
            let _ = self.went_back.set(why);
        }
    }
}

/// Refuses a log whose positions are ahead of the cluster's transaction ids. A position is the
/// PostgreSQL transaction id that committed the event (and its sequence in it), so a log
/// restored from a logical dump (`pg_dump`) into another cluster, whose counter starts low,
/// would get new events at positions inside its old history: readers already past them never
/// see them, `pop rebuild` stops short, and verify then reports tampering (ops3am4). Checked
/// with the cluster's next transaction id (`pg_current_snapshot`), which assigns none.
async fn check_transaction_ids(client: &deadpool_postgres::Object) -> Result<(), StoreError> {
    let row = client
        .query_one(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
             GREATEST((SELECT tx_id FROM pop_events ORDER BY tx_id DESC LIMIT 1), \
                      (SELECT tx_id FROM pop_pruned ORDER BY tx_id DESC LIMIT 1))",
            &[],
        )
        .await
        .map_err(|e| StoreError::backend("reading the cluster's transaction ids", e))?;
    let next: i64 = row.get(0);
    let newest: Option<i64> = row.get(1);
    match newest {
        Some(newest) if newest >= next => Err(StoreError::Unusable(format!(
            "the log's newest position is in PostgreSQL transaction {newest}, but this \
             cluster's transaction ids are only at {next} (it has not reached {newest}): the \
             database was restored from a logical \
             dump (pg_dump) into another cluster, and pop's positions are transaction ids, so \
             new events would land inside the old history. Restore with a physical backup \
             (pg_basebackup, or your provider's snapshots), move the log with `pop export` and \
             `pop import`, or, on this cluster while it is stopped, advance its transaction ids \
             past {newest} (`pg_resetwal -x`)"
        ))),
        _ => Ok(()),
    }
}

/// The PostgreSQL event store. Cheap to share behind an `Arc`; several processes (replicas)
/// may open the same database at once.
pub struct PgStore {
    shared: Arc<Shared>,
    requests: mpsc::Sender<writer::Request>,
    head: watch::Receiver<Position>,
    tail: tokio::task::JoinHandle<()>,
    closing: watch::Sender<bool>,
    writers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Measures the database's clock ([`PgOptions::database_clock`]).
    clock_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url`, migrates the schema and starts the writers and the
    /// tailing task.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let config = pg_config(url, &options)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::backend("creating the PostgreSQL pool", e))?;
        // Commit times never go back, across a wall clock stepped back and across restarts
        // (this replica's own commits; replicas' clocks differ by their skew).
        let offset = crate::clock::ClockOffset::default();
        let last_commit: i64 = {
            let mut client = pool.get().await.map_err(pool_error)?;
            if options.read_only {
                schema::check(&client).await?;
            } else {
                schema::migrate(&mut client, options.chain_unchained).await?;
            }
            check_transaction_ids(&client).await?;
            let last_commit = client
                .query_opt(
                    "SELECT recorded_at FROM pop_events ORDER BY tx_id DESC, seq DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(|e| StoreError::backend("reading the last commit time", e))?
                .map_or(i64::MIN, |row| row.get(0));
            if options.database_clock {
                // At start any measure beats none; a slow one is bettered within 30 s.
                note_offset(&offset, database_offset(&client, &options.clock, false).await?);
            }
            last_commit
        };
        let floor = crate::clock::CommitFloor::new(last_commit);
        let head = reader::head_once(&pool).await?.0;
        let committed = Arc::new(Notify::new());
        let ahead = ahead::ReadAhead::new(config.clone());
        let wall = match options.database_clock {
            true => crate::clock::offset(options.clock.clone(), offset.clone()),
            false => Arc::new(chrono::Utc::now),
        };
        let stamp = crate::clock::offset(options.clock.clone(), offset.clone());
        let shared = Arc::new(Shared {
            pool,
            clock: crate::clock::monotonic(stamp, floor.clone()),
            wall,
            offset: options.database_clock.then(|| offset.clone()),
            floor,
            before_commit: options.before_commit.clone(),
            hash_chain: options.hash_chain,
            committed: Arc::clone(&committed),
            ahead,
            known: writer::KnownStreams::default(),
            high_water: std::sync::atomic::AtomicI64::new(0),
            went_back: std::sync::OnceLock::new(),
            horizon_held: std::sync::atomic::AtomicBool::new(false),
            failing: crate::repeats::SharedRepeats::default(),
            commits: crate::GroupCommits::default(),
        });
        let (head_tx, head_rx) = watch::channel(head);
        let tail = tokio::spawn(tail::run(config, Arc::clone(&shared), head_tx));
        let (requests, rx) = mpsc::channel(PG_WRITER_QUEUE_CAPACITY);
        let (closing, closing_rx) = watch::channel(false);
        let clock_task = options.database_clock.then(|| {
            tokio::spawn(follow_database_clock(
                shared.pool.clone(),
                offset.clone(),
                options.clock.clone(),
                closing_rx.clone(),
            ))
        });
        let queue = Arc::new(Mutex::new(writer::Queue::new(rx, closing_rx)));
        let writers = (0..options.writers.max(1))
            .map(|_| tokio::spawn(writer::run(Arc::clone(&shared), Arc::clone(&queue))))
            .collect();
        tracing::info!(%head, "PostgreSQL event store opened");
        Ok(PgStore {
            shared,
            requests,
            head: head_rx,
            tail,
            closing,
            writers: std::sync::Mutex::new(writers),
            clock_task,
        })
    }

    /// Commits the appends already queued, stops the writers and the tailing task, and
    /// closes the pool. Later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.closing.send_replace(true);
        let writers = match self.writers.lock() {
            Ok(mut writers) => std::mem::take(&mut *writers),
            Err(_) => Vec::new(),
        };
        for writer in writers {
            // A writer that panicked has nothing left to commit.
            let _ = writer.await;
        }
        self.tail.abort();
        if let Some(task) = &self.clock_task {
            task.abort();
        }
        self.shared.ahead.stop();
        self.shared.pool.close();
    }

    fn read_after(&self) -> ReadAfter {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |after, max| {
            let shared = Arc::clone(&shared);
            async move {
                if let Some(batch) = shared.ahead.take(after, max).await {
                    return Ok(batch);
                }
                let batch = reader::read_all(&shared.pool, after, max).await?;
                shared.ahead.follow(&batch, max);
                Ok(batch)
            }
            .boxed()
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.tail.abort();
        if let Some(task) = &self.clock_task {
            task.abort();
        }
        self.shared.ahead.stop();
        // Writers stop by themselves once the request sender (this handle's) is gone and the
        // queue is drained.
    }
}

#[async_trait]
impl crate::commitment::LogCommitment for PgStore {
    async fn last_checkpoint(
        &self,
    ) -> Result<Option<crate::commitment::SignedCheckpoint>, StoreError> {
        seal::last_checkpoint(&self.shared.pool).await
    }

    async fn checkpoint(
        &self,
        seq: u64,
    ) -> Result<Option<crate::commitment::SignedCheckpoint>, StoreError> {
        seal::checkpoint(&self.shared.pool, seq).await
    }

    async fn sealable_entries(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<crate::commitment::LogEntry>, StoreError> {
        // As `read_all`: wait (≤ PG_SETTLE_WAIT) while committed entries sit above the
        // horizon, so a seal right after an append covers it.
        let pool = &self.shared.pool;
        reader::settled(pool, || seal::sealable_entries(pool, after, max), |v| v.len() >= max).await
    }

    async fn add_checkpoint(
        &self,
        checkpoint: &crate::commitment::SignedCheckpoint,
    ) -> Result<bool, StoreError> {
        seal::add_checkpoint(&self.shared.pool, checkpoint).await
    }
}

/// A read-only transaction on one snapshot of the log (REPEATABLE READ): what verification
/// and export read in.
pub(crate) async fn snapshot_transaction(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        deadpool_postgres::PoolError::Backend(inner) if too_many_clients(&inner) => {
            StoreError::backend(TOO_MANY_CLIENTS, inner)
        }
        // PostgreSQL's own words, not the pool's "Error occurred while creating a new object"
        // (ops3am16: said with "error connecting to server" twice, and no word that pop
        // reconnects by itself).
        // (Not "pop connects again": said at start-up too, where the process then exits:
        // ops3am17.)
        deadpool_postgres::PoolError::Backend(inner) => {
            StoreError::backend("connecting to PostgreSQL", inner)
        }
        e => StoreError::backend("getting a PostgreSQL connection", e),
    }
}

/// How a connection opened outside the pool (live tailing, a leader lock) failed, `context`
/// naming what it was for: a refusal for want of slots says so as the pool's does (ops3am14).
pub(crate) fn connect_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| match too_many_clients(&e) {
        true => StoreError::backend(TOO_MANY_CLIENTS, e),
        false => StoreError::backend(context, e),
    }
}

/// What a refused connection for want of slots means for pop (ops3am13: replicas over
/// `max_connections` logged only PostgreSQL's "sorry, too many clients already").
const TOO_MANY_CLIENTS: &str = "connecting to PostgreSQL: the server has no connection \
    slot left (max_connections); each pop replica opens up to its --pg-pool-size (default 16) \
    pooled connections and up to about 14 more (live tailing, one per leader lock, reading \
    ahead while it catches up): about 30 each by default; raise max_connections, lower \
    --pg-pool-size or run fewer replicas";

/// SQLSTATE 53300 `too_many_connections`.
fn too_many_clients(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| *db.code() == tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS)
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let span = tracing::info_span!("append", store = "postgres", stream, events = events.len());
        let bytes = check_append(stream, &events)?;
        let (reply, result) = tokio::sync::oneshot::channel();
        let request = writer::Request { stream: stream.to_owned(), expected, events, bytes, reply };
        async {
            self.requests.send(request).await.map_err(|_| StoreError::Closed)?;
            result.await.map_err(|_| StoreError::Closed)?
        }
        .instrument(span)
        .await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_stream_name(stream)?;
        check_read_max(max)?;
        reader::read_stream(&self.shared.pool, stream, from_version, max, direction).await
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_read_max(max)?;
        if let Some(batch) = self.shared.ahead.take(after, max).await {
            return Ok(batch);
        }
        let pool = &self.shared.pool;
        let batch = reader::settled(
            pool,
            || reader::read_all(pool, after, max),
            |events| events.len() >= max,
        )
        .await?;
        self.shared.ahead.follow(&batch, max);
        Ok(batch)
    }

    fn subscribe_all(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let subscription = subscribe_by_polling(self.read_after(), self.head.clone(), after);
        // The tailing task idles while nobody subscribes: have it read the head now.
        self.shared.committed.notify_one();
        subscription
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<(), StoreError> {
        check_stream_name(stream)?;
        let now = (self.shared.clock)().timestamp_micros();
        // Batches read ahead across a delete are not handed out ([`ahead`]).
        self.shared.ahead.deleting();
        let deleted = writer::delete(&self.shared, stream, expected, now).await;
        self.shared.ahead.deleting();
        deleted
    }

    async fn head(&self) -> Result<Position, StoreError> {
        // Head reads run at once (the projections, readiness, read-your-writes): one whose
        // snapshot came before another's may end after it, lower (ops3am20: a replica latched
        // "restored from a backup" after a database restart). Only a head noted before this
        // read was sent — so read on an earlier snapshot — may not be passed by it.
        let before = self.shared.high_water.load(std::sync::atomic::Ordering::SeqCst);
        let head = reader::head(&self.shared.pool, &self.shared.horizon_held).await?;
        if let Ok(tx) = i64::try_from(head.commit())
            && tx > 0
        {
            self.shared.note_tx(tx, before, "the log's head is");
        }
        Ok(head)
    }

    fn log_went_back(&self) -> Option<String> {
        self.shared.went_back.get().cloned()
    }

    /// (ops3am14: a `BEGIN` left open in another database made every replica unready with
    /// "did not answer within 800ms" while PostgreSQL answered at once.)
    /// Only when the head read found events held above the horizon (review-s40b: a stalled
    /// or unreachable database would have been blamed on an open transaction too).
    fn slow_head_hint(&self) -> Option<&'static str> {
        self.shared.horizon_held.load(std::sync::atomic::Ordering::Relaxed).then_some(
            "committed events wait behind a transaction left open on the PostgreSQL server, in \
             any of its databases, which holds back every replica's reads of the log until it \
             ends: look for 'idle in transaction' in pg_stat_activity, end it, and set \
             idle_in_transaction_session_timeout",
        )
    }

    fn commit_floor(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.shared.floor.time()
    }

    fn give_time(&self, wall: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        self.shared.floor.give_time(wall)
    }

    fn wall_clock(&self) -> chrono::DateTime<chrono::Utc> {
        (self.shared.wall)()
    }

    fn clock_offset(&self) -> Option<chrono::TimeDelta> {
        self.shared.offset.as_ref().map(crate::clock::ClockOffset::delta)
    }

    fn group_commits(&self) -> Option<crate::CommitCounts> {
        Some(self.shared.commits.counts())
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    /// A reading of the database's clock whose query waited out a stall of the server is not
    /// taken: another, quick one is (ops3am22: one slow query set the offset 7–17 s wrong).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reading_slowed_by_a_stall_is_not_the_one_taken() {
        let Some(cluster) = crate::test_cluster::TestCluster::shared("clock_reading_stall") else {
            return;
        };
        let url = cluster.create_database().await.expect("a database");
        let config = pg_config(&url, &PgOptions::default()).expect("config");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0);
        let signal = |which: &str| {
            let sent = std::process::Command::new("kill").args([which, &pid.to_string()]).status();
            assert!(sent.expect("kill").success(), "kill {which} {pid}");
        };
        // The server's process of this connection freezes for 800 ms as the reading begins.
        signal("-STOP");
        let thaw = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status()
                .expect("kill -CONT")
        });
        let clock = crate::clock::system_clock();
        let (micros, _, _) = database_offset(&client, &clock, true).await.expect("a reading");
        assert!(thaw.await.expect("thaw").success());
        // One clock on one machine: the quick reading is off by its round trip at most; the
        // stalled one alone read about +400 ms.
        assert!(micros.abs() < 150_000, "offset {micros} µs");
    }
}
