//! The writers: a few tasks, each taking every append waiting in the shared queue (bounded by
//! count and bytes) and committing them in one transaction on its own pooled connection.
//!
//! A group: lock each stream it touches with a transaction-scoped advisory lock (sorted, so
//! groups of different writers or replicas never deadlock), only then take the transaction's
//! id (its events' log position), read the streams' versions and chain heads and look up the
//! event ids, decide each append in arrival order against the database plus the appends before
//! it in the group (so a refused append never fails its batch-mates), link each accepted event
//! into its stream's hash chain (`crate::digest`; the stream is locked, so its head is stable),
//! write the accepted events and streams (the new head kept on the stream row),
//! commit, NOTIFY (after the commit: see `announce`). Taking the id after the locks keeps a
//! stream's events in log order: whoever wrote the stream before us committed before we got
//! its lock, hence before our id existed. A unique-index violation (a concurrent writer
//! elsewhere used the same event id, or a version raced despite the locks) rolls the group
//! back and redoes it, bounded. A group lands (counted off, the gatherer woken) before its
//! appenders are answered, and the next group waits a moment for them ([`Queue::next_group`]).
//!
//! That is the two-round-trip path. A group whose streams this store knows goes first in one
//! round trip, decided without reading and checked under the locks ([`known`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Mutex, Notify, mpsc, oneshot, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

mod known;

pub(crate) use known::KnownStreams;

use super::reader::position;
use super::{CHANNEL, Shared, pool_error};
use crate::append_rule::{self, Placement, StreamState, Verdict};
use crate::digest::{DigestInput, GENESIS, Hash, chain, data_hash, event_digest};
use crate::limits::MAX_APPEND_BYTES;
use crate::{ActualVersion, AppendResult, ExpectedVersion, NewEvent, Position, StoreError};

/// Appends one group commit takes at most. Bounds the advisory locks one transaction holds
/// (PostgreSQL's lock table has 64 slots per connection by default, shared) and the latency
/// an append waits behind its batch-mates; 256 matches the benchmark's largest number of
/// concurrent appenders.
pub const PG_MAX_GROUP_REQUESTS: usize = 256;

/// Bytes one group takes at most: the largest single append, so every valid append fits.
const MAX_GROUP_BYTES: usize = MAX_APPEND_BYTES;

/// Appends waiting for a writer; callers beyond this wait in `send` (back-pressure).
pub const PG_WRITER_QUEUE_CAPACITY: usize = 2 * PG_MAX_GROUP_REQUESTS;

/// Times a group is redone after a unique violation, deadlock or serialisation failure. Each
/// retry sees the other writer's committed events, so one retry normally settles it.
const MAX_ATTEMPTS: usize = 3;

pub(crate) struct Request {
    pub(crate) stream: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    /// Size as counted by `limits::check_append`.
    pub(crate) bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// The longest a writer holds a group back waiting for a commit in flight to land (see
/// [`Queue::next_group`]). A commit is about one WAL fsync; past this, send anyway.
const MAX_GATHER: Duration = Duration::from_millis(20);

/// Scheduler turns (at most) a gathering writer gives the appenders that groups which landed
/// answered, to come back with their next appends ([`Queue::next_group`]).
const GATHER_TURNS: usize = 16;

/// How long after their group landed (just before they were answered) those appenders are
/// waited for: one that does not come straight back (a sporadic append, a caller gone) must
/// not hold the group, and on a runtime busy with other work one turn can be long. A
/// one-event commit is ~250 µs here.
const MAX_RETURN: Duration = Duration::from_micros(200);

/// Groups between "taken from the queue" and "committed", and a wake-up when one lands.
#[derive(Default)]
pub(crate) struct Flight {
    count: AtomicUsize,
    landed: Notify,
    /// Groups landed so far: a gatherer that compares it misses no landing, where a
    /// `Notify` wake-up is lost between two polls.
    landings: AtomicUsize,
    /// How many appends the groups that landed since a gatherer last took it answered, and
    /// when the last of them landed: their appenders come straight back.
    answered: std::sync::Mutex<Option<(usize, std::time::Instant)>>,
}

impl Flight {
    /// Takes what [`Flight::answered`] holds, unless it is older than [`MAX_RETURN`]: those
    /// appenders came back or are not coming.
    fn take_answered(&self) -> Option<(usize, std::time::Instant)> {
        let taken = self.answered.lock().ok().and_then(|mut a| a.take());
        taken.filter(|(_, at)| at.elapsed() < MAX_RETURN)
    }
}

/// A group in flight: counted when taken, landed (counted off, the gatherer woken) when
/// dropped, so a writer whose commit panicked does not leave it counted for good (every later
/// group would wait for a landing that never comes, up to [`MAX_GATHER`]).
struct InFlight {
    flight: Arc<Flight>,
    answered: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut last) = self.flight.answered.lock() {
            // Landings no gatherer took add up, while their appenders may still come.
            let before = last.filter(|(_, at)| at.elapsed() < MAX_RETURN).map_or(0, |(n, _)| n);
            *last = Some((before.saturating_add(self.answered), std::time::Instant::now()));
        }
        self.flight.landings.fetch_add(1, Ordering::AcqRel);
        self.flight.count.fetch_sub(1, Ordering::AcqRel);
        self.flight.landed.notify_waiters();
    }
}

/// The queue the writers share; whoever holds the lock is gathering the next group.
pub(crate) struct Queue {
    rx: mpsc::Receiver<Request>,
    /// A request that did not fit the previous group.
    carry: Option<Request>,
    /// Turns true when the store closes: take what is queued, then stop.
    closing: watch::Receiver<bool>,
    flight: Arc<Flight>,
}

impl Queue {
    pub(crate) fn new(rx: mpsc::Receiver<Request>, closing: watch::Receiver<bool>) -> Queue {
        Queue { rx, carry: None, closing, flight: Arc::default() }
    }

    /// Takes every queued request that fits; `false` once the group is full.
    fn drain(&mut self, group: &mut Vec<Request>, bytes: &mut usize) -> bool {
        while group.len() < PG_MAX_GROUP_REQUESTS && self.carry.is_none() {
            let Ok(request) = self.rx.try_recv() else { return true };
            self.add(group, bytes, request);
        }
        false
    }

    fn add(&mut self, group: &mut Vec<Request>, bytes: &mut usize, request: Request) {
        if bytes.saturating_add(request.bytes) > MAX_GROUP_BYTES {
            self.carry = Some(request);
        } else {
            *bytes += request.bytes;
            group.push(request);
        }
    }

    /// The next group; `None` once the store is gone or closed and the queue is drained.
    async fn next_group(&mut self) -> Option<Vec<Request>> {
        let first = match self.carry.take() {
            Some(r) => r,
            None => tokio::select! {
                r = self.rx.recv() => r?,
                () = self.closing.wait_for(|c| *c).map(|_| ()) => {
                    // Refuse new appends; what is already queued still commits.
                    self.rx.close();
                    self.rx.recv().await?
                }
            },
        };
        let mut bytes = first.bytes;
        let mut group = vec![first];
        // While another group is committing (about one fsync), the appenders it answers come
        // straight back: gather until it lands (bounded) instead of sending a group of one
        // and leaving everyone else for the next flush. Once nothing is in flight, or a group
        // landed, wait a moment more for the appenders the groups that landed answered, then
        // go (without that, 4 appenders went in groups of 1 and 4 by turns, 2.5 a commit: the
        // first one back was sent alone).
        let deadline = tokio::time::Instant::now() + MAX_GATHER;
        let flight = Arc::clone(&self.flight);
        // The appenders this group waits for: those the landings before it answered (taken
        // now, so a later landing's are added to them, not counted with them twice), and
        // when the last of those landings was.
        let landings = flight.landings.load(Ordering::Acquire);
        let mut expected = flight.take_answered();
        loop {
            if !self.drain(&mut group, &mut bytes) || *self.closing.borrow() {
                break;
            }
            let landed = flight.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if flight.landings.load(Ordering::Acquire) != landings
                || flight.count.load(Ordering::Acquire) == 0
            {
                if let Some((more, at)) = flight.take_answered() {
                    let before = expected.map_or(0, |(n, _)| n);
                    expected = Some((before.saturating_add(more), at));
                }
                let (expected, at) = expected.unwrap_or_else(|| (0, std::time::Instant::now()));
                let mut turns = 0;
                while group.len() < expected && turns < GATHER_TURNS && at.elapsed() < MAX_RETURN {
                    tokio::task::yield_now().await;
                    turns += 1;
                    if !self.drain(&mut group, &mut bytes) {
                        break;
                    }
                }
                break;
            }
            tokio::select! {
                // A landing first (the counter above sees it either way).
                biased;
                () = &mut landed => {}
                request = self.rx.recv() => match request {
                    Some(request) => self.add(&mut group, &mut bytes, request),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.flight.count.fetch_add(1, Ordering::AcqRel);
        Some(group)
    }
}

/// A writer task's body: runs until the store is dropped.
pub(crate) async fn run(shared: Arc<Shared>, queue: Arc<Mutex<Queue>>) {
    loop {
        let (group, flight) = {
            let mut queue = queue.lock().await;
            (queue.next_group().await, Arc::clone(&queue.flight))
        };
        let Some(group) = group else { return };
        let in_flight = InFlight { flight, answered: group.len() };
        let replies = commit_group(&shared, group).await;
        // Landed before anyone is answered: an appender that comes straight back finds this
        // group landed, not still counted (with one appender it then waited for the landing's
        // wake-up and four scheduler turns on every commit).
        drop(in_flight);
        for (reply, answer) in replies {
            // A caller that stopped waiting is not an error: its events are committed.
            let _ = reply.send(answer);
        }
    }
}

/// Why a group did not commit.
enum GroupError {
    /// Worth redoing: a concurrent writer got in the way.
    Retry(StoreError),
    Fatal(StoreError),
}

fn classify(context: &'static str) -> impl Fn(tokio_postgres::Error) -> GroupError {
    move |e| {
        let retry = matches!(
            e.code(),
            Some(c) if *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        );
        let error = StoreError::backend(context, e);
        if retry { GroupError::Retry(error) } else { GroupError::Fatal(error) }
    }
}

impl From<StoreError> for GroupError {
    fn from(e: StoreError) -> Self {
        GroupError::Fatal(e)
    }
}

/// A group's failure on a connection that closed: the COMMIT may have been on its way, and
/// whether it committed is not known (ops3am21: `pg_ctl -m immediate` mid-commit; the groups
/// were stored and answered "nothing was done"). Said so, never as nothing done.
fn outcome_unknown_if_closed(e: StoreError) -> StoreError {
    let StoreError::Backend { source, .. } = &e else { return e };
    // A connection that was never made (refused, no such socket) sent nothing: that outcome is
    // known (the reread's typed error showed a refused connect was said "not known").
    let never_connected = |io: &std::io::Error| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NotFound
        )
    };
    let closed = source.downcast_ref::<tokio_postgres::Error>().is_some_and(|pg| {
        pg.is_closed()
            || std::error::Error::source(pg)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| !never_connected(io))
    });
    if !closed {
        return e;
    }
    StoreError::OutcomeUnknown {
        why: super::CONNECTION_CLOSED_IN_COMMIT,
        source: Arc::clone(source),
    }
}

/// Commits a group; its answers, each with where it goes.
async fn commit_group(
    shared: &Shared,
    group: Vec<Request>,
) -> Vec<(oneshot::Sender<Result<AppendResult, StoreError>>, Result<AppendResult, StoreError>)> {
    // One timestamp per commit, truncated to what the schema stores.
    let now = (shared.clock)().timestamp_micros();
    let mut attempt = 0;
    let answers = loop {
        attempt += 1;
        match try_group(shared, &group, now).await {
            Ok(answers) => {
                shared.committed.notify_one();
                shared.commits.record(group.len());
                if let Some(unsaid) = shared.failing.ended() {
                    tracing::info!(failed_since_last_said = unsaid, "group commits work again");
                }
                break answers;
            }
            Err(GroupError::Retry(e)) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "group commit redone");
            }
            Err(GroupError::Retry(e) | GroupError::Fatal(e)) => {
                let e = outcome_unknown_if_closed(e);
                if let Some(unsaid) = shared.failing.say_now() {
                    tracing::error!(
                        error = %pop_domain::error::ErrorChain(&e),
                        requests = group.len(),
                        failed_since_last_said = unsaid,
                        "group commit failed (said once per 10 s while it goes on)"
                    );
                }
                break group.iter().map(|_| Err(e.clone())).collect();
            }
        }
    };
    group.into_iter().map(|request| request.reply).zip(answers).collect()
}

/// A 64-bit advisory-lock key per stream name (FNV-1a: stable across builds and replicas).
/// Two names sharing a key only serialise each other's appends.
fn stream_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The advisory-lock keys of a group's streams, sorted (so groups of different writers or
/// replicas never deadlock) and without repeats.
fn lock_keys(group: &[Request]) -> Vec<i64> {
    let mut keys: Vec<i64> = group.iter().map(|r| stream_key(&r.stream)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Where an event id already sits in the log (or earlier in this group).
#[derive(Debug, Clone)]
struct Placed {
    stream: String,
    version: u64,
    position: Position,
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is out of range")))
}

/// The accepted events of a group, as columns for one `unnest` insert.
#[derive(Default)]
struct Columns<'a> {
    seq: Vec<i64>,
    stream: Vec<&'a str>,
    version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i64>,
    data: Vec<&'a [u8]>,
    metadata: Vec<&'a [u8]>,
    /// Each event's link of its stream's hash chain (`None` when hashing is off).
    chain: Vec<Option<Hash>>,
}

const INSERT_EVENTS: &str = "
    INSERT INTO pop_events (tx_id, seq, stream, version, event_id, event_type, schema_version,
                            data, metadata, recorded_at, chain)
    SELECT $1, t.seq, t.stream, t.version, t.event_id, t.event_type, t.schema_version,
           t.data, t.metadata, $2, t.chain
    FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::uuid[], $7::text[], $8::bigint[],
                $9::bytea[], $10::bytea[], $11::bytea[])
         AS t(seq, stream, version, event_id, event_type, schema_version, data, metadata, chain)";

const UPSERT_STREAMS: &str = "
    INSERT INTO pop_streams (name, version, last_tx, last_seq, head_hash)
    SELECT t.name, t.version, $1, t.last_seq, t.head_hash
    FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bytea[])
         AS t(name, version, last_seq, head_hash)
    ON CONFLICT (name) DO UPDATE
    SET version = EXCLUDED.version, last_tx = EXCLUDED.last_tx, last_seq = EXCLUDED.last_seq,
        head_hash = EXCLUDED.head_hash";

/// Logs a failed NOTIFY. The NOTIFY goes out after the COMMIT, as its own transaction: a
/// NOTIFY inside the append transaction takes PostgreSQL's global notification-queue lock at
/// commit and holds it across the WAL flush, which serialises every commit of every replica
/// (one fsync per group, measured). Outside, it needs no WAL flush. A lost notification (the
/// process dies between the two) costs other replicas at most the tailing task's 1 s poll.
fn announce(result: Result<u64, tokio_postgres::Error>) {
    if let Err(error) = result {
        tracing::warn!(%error, "notifying subscribers of a commit failed; they poll");
    }
}

/// Opens a group's transaction. Plans each statement once per connection, with index scans
/// (SET LOCAL: this transaction only). Every lookup here is by a unique key, so an index scan
/// is always right; but a generic plan made while `pop_events` was still small (a new
/// database, before autovacuum analyzed it) was a sequential scan, kept until the next
/// ANALYZE, and the duplicate-id check then scanned the whole log on every group commit
/// (seen in pg_stat_activity during the append benchmark). Planning every statement for its
/// parameters instead (`force_custom_plan`, the earlier cure) cost ~80 µs of the server's
/// ~155 µs per one-event commit (pg_stat_statements, BENCHMARKS.md). With sequential scans
/// disabled, the generic plan is the index scan from the first execution, and it is re-made
/// the same way after an ANALYZE invalidates it: the writers' statements only ever run
/// inside this transaction.
const BEGIN_GROUP: &str =
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// Answers of a group, one per request.
type Answers = Vec<Result<AppendResult, StoreError>>;

async fn try_group(shared: &Shared, group: &[Request], now: i64) -> Result<Answers, GroupError> {
    let client = shared.pool.get().await.map_err(pool_error)?;
    let result = group_on(shared, &client, group, now).await;
    if result.is_err() {
        // The transaction may still be open (a refused statement, a dropped pipeline); never
        // hand a connection in a transaction back to the pool. A connection that cannot even
        // roll back is broken: detach it so the pool makes a new one.
        if client.batch_execute("ROLLBACK").await.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
    result
}

/// One group on one connection. When the writers know every stream of the group, in one
/// round trip ([`known`]); otherwise, or when what they knew was stale, in two: BEGIN, the
/// locks, the transaction id and the reads go out pipelined ([`read_group`]); each append is
/// judged in Rust against what was read and its batch-mates ([`decide_group`]); then the
/// writes, NOTIFY and COMMIT ([`write_group`]; a COMMIT after a failed statement only rolls
/// back, so pipelining it is safe).
async fn group_on(
    shared: &Shared,
    tx: &deadpool_postgres::Client,
    group: &[Request],
    now: i64,
) -> Result<Answers, GroupError> {
    let statements = futures::try_join!(
        tx.prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"),
        tx.prepare_cached("SELECT pg_current_xact_id()::text::bigint"),
        tx.prepare_cached(
            "SELECT s.name, s.version, s.deleted_at IS NOT NULL, s.head_hash, e.recorded_at \
             FROM pop_streams s \
             LEFT JOIN pop_events e ON e.stream = s.name AND e.version = s.version \
             WHERE s.name = ANY($1)"
        ),
        tx.prepare_cached(
            "SELECT event_id, stream, version, tx_id, seq FROM pop_events \
             WHERE event_id = ANY($1)"
        ),
        tx.prepare_cached(INSERT_EVENTS),
        tx.prepare_cached(UPSERT_STREAMS),
        tx.prepare_cached("SELECT pg_notify($1, '')"),
        tx.prepare_cached(known::GUARDED_WRITE),
    )
    .map_err(classify("preparing a group commit"))?;
    let (lock, xid, streams, found, insert, upsert, notify, guarded) = statements;
    if let Some(mut predicted) = shared.known.predict(group) {
        let now = after_streams(shared, now, &predicted.read);
        let decided = decide_group(group, &mut predicted.read, now, shared.hash_chain)?;
        // Only a group whose every append is accepted goes in one round trip. The check
        // under the locks proves the streams' versions and heads, not that a refused
        // append is not a re-send of one already in the log (its ids are not read here): a
        // refusal is answered from reads.
        if !decided.touched.is_empty() && decided.answers.iter().all(Result::is_ok) {
            let statements = [&lock, &guarded, &notify];
            match known::commit(shared, tx, group, &decided, &predicted, now, statements).await {
                Ok(Some(tx_id)) => {
                    shared.known.learn(&decided.touched, now);
                    return Ok(known::with_tx_id(decided.answers, tx_id));
                }
                // Stale: nothing was written and the transaction is over.
                Ok(None) => {}
                // An event id already in the log (its insert failed), or a race: the reads
                // below settle it.
                Err(GroupError::Retry(e)) => {
                    tracing::debug!(error = %e, "one-round-trip group redone with reads");
                    tx.batch_execute("ROLLBACK").await.map_err(classify("rolling back"))?;
                }
                Err(fatal) => return Err(fatal),
            }
        }
    }
    let mut read = read_group(tx, group, [&lock, &xid, &streams, &found]).await?;
    let now = after_streams(shared, now, &read);
    let decided = decide_group(group, &mut read, now, shared.hash_chain)?;
    if decided.touched.is_empty() {
        tx.batch_execute("COMMIT").await.map_err(classify("committing a group"))?;
    } else {
        write_group(shared, tx, &decided, read.tx_id, now, [&insert, &upsert, &notify]).await?;
        shared.known.learn(&decided.touched, now);
    }
    Ok(decided.answers)
}

/// What a group read before deciding: its transaction id, its streams (with their chain
/// heads and their last events' commit times), and where its event ids already sit.
struct GroupRead {
    tx_id: i64,
    state: HashMap<String, StreamState>,
    heads: HashMap<String, Hash>,
    /// The latest commit time of the group's streams' last events, in microseconds (`None`:
    /// no stream has one); the group is stamped no earlier ([`after_streams`]).
    latest: Option<i64>,
    placed: HashMap<Uuid, Placed>,
}

/// The group's commit time: `now`, or the latest commit time of its streams when that is
/// later, so a stream's times never go back. Replicas' clocks differ by their skew, and a
/// commit that waited for another replica's lock on a stream was stamped before the wait: one
/// stream's events came out of time order, and an as-of read by time then cut the stream
/// short of events committed before the time asked (ops3am4). The replica's clock is raised
/// to the time taken, so what it stamps next (and the commands' clock) does not go back
/// either.
fn after_streams(shared: &Shared, now: i64, read: &GroupRead) -> i64 {
    let Some(latest) = read.latest.filter(|l| *l > now) else { return now };
    shared.floor.raise(latest);
    latest
}

/// Opens the group's transaction and reads, pipelined: the streams' advisory locks (sorted,
/// so replicas never deadlock), then (holding them) the transaction id, the streams' versions
/// and the event ids.
async fn read_group(
    tx: &deadpool_postgres::Client,
    group: &[Request],
    [lock, xid, streams, found]: [&tokio_postgres::Statement; 4],
) -> Result<GroupRead, GroupError> {
    let keys = lock_keys(group);
    let mut names: Vec<&str> = group.iter().map(|r| r.stream.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let ids: Vec<Uuid> = group.iter().flat_map(|r| r.events.iter().map(|e| e.event_id)).collect();
    let (p_keys, p_names, p_ids): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1], _) =
        ([&keys], [&names], [&ids as &(dyn ToSql + Sync)]);
    let begin = tx.batch_execute(BEGIN_GROUP);
    let locked = tx.query(lock, &p_keys);
    let xid = tx.query_one(xid, &[]);
    let streams = tx.query(streams, &p_names);
    let found = tx.query(found, &p_ids);
    let (_, _, xid, streams, found) = futures::try_join!(begin, locked, xid, streams, found)
        .map_err(classify("reading the group's streams"))?;
    let read = |e| StoreError::backend("reading the group's streams", e);
    let tx_id: i64 = xid.try_get(0).map_err(read)?;
    let mut state: HashMap<String, StreamState> = HashMap::with_capacity(streams.len());
    let mut heads: HashMap<String, Hash> = HashMap::with_capacity(streams.len());
    let mut latest: Option<i64> = None;
    for row in &streams {
        let name: String = row.try_get(0).map_err(read)?;
        let version: Option<i64> = row.try_get(1).map_err(read)?;
        let version = version
            .map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("version {v}"))))
            .transpose()?;
        let head: Option<&[u8]> = row.try_get(3).map_err(read)?;
        if let Some(head) = head.and_then(|h| Hash::try_from(h).ok()) {
            heads.insert(name.clone(), head);
        }
        if let Some(at) = row.try_get::<_, Option<i64>>(4).map_err(read)? {
            latest = latest.max(Some(at));
        }
        state.insert(name, StreamState { version, deleted: row.try_get(2).map_err(read)? });
    }
    let mut placed: HashMap<Uuid, Placed> = HashMap::with_capacity(found.len());
    for row in &found {
        let version: i64 = row.try_get(2).map_err(read)?;
        placed.insert(
            row.try_get(0).map_err(read)?,
            Placed {
                stream: row.try_get(1).map_err(read)?,
                version: u64::try_from(version)
                    .map_err(|_| StoreError::Corrupt(format!("version {version}")))?,
                position: position(row.try_get(3).map_err(read)?, row.try_get(4).map_err(read)?)?,
            },
        );
    }
    Ok(GroupRead { tx_id, state, heads, latest, placed })
}

/// A touched stream's new version, last sequence number and chain head.
type Touched = (i64, i64, Option<Hash>);

/// The group's answers, and the accepted events as columns with each touched stream's new
/// version, last sequence number and chain head.
struct Decided<'a> {
    answers: Answers,
    columns: Columns<'a>,
    touched: HashMap<&'a str, Touched>,
}

/// Judges every append of the group in order (each sees its batch-mates' effects), without
/// IO.
fn decide_group<'a>(
    group: &'a [Request],
    read: &mut GroupRead,
    now: i64,
    hashing: bool,
) -> Result<Decided<'a>, GroupError> {
    let mut columns = Columns::default();
    let mut touched: HashMap<&str, Touched> = HashMap::new();
    let mut seq = 0i64;
    let mut answers = Vec::with_capacity(group.len());
    for request in group {
        let before = columns.seq.len();
        let answer =
            decide(request, read.tx_id, &mut seq, &mut read.state, &mut read.placed, &mut columns);
        if let Ok(result) = &answer
            && columns.seq.len() > before
        {
            let head =
                hashing.then(|| chain_events(request, result.version, now, read, &mut columns));
            touched.insert(&request.stream, (to_i64(result.version, "stream version")?, seq, head));
        }
        // Hashing off (the benchmark's baseline): no links.
        columns.chain.resize(columns.seq.len(), None);
        answers.push(answer);
    }
    Ok(Decided { answers, columns, touched })
}

/// Links the events `request` just added to `columns` (its last at `last_version`) into their
/// stream's hash chain ([`crate::digest`]), from the head read under the stream's lock (or
/// left by a batch-mate); answers the new head.
fn chain_events(
    request: &Request,
    last_version: u64,
    now: i64,
    read: &mut GroupRead,
    columns: &mut Columns<'_>,
) -> Hash {
    let first_version = last_version + 1 - request.events.len() as u64;
    let mut head = if first_version == 0 {
        GENESIS
    } else {
        read.heads.get(&request.stream).copied().unwrap_or(GENESIS)
    };
    for (offset, event) in (0u64..).zip(&request.events) {
        let hash = data_hash(&event.data);
        let digest = event_digest(&DigestInput {
            stream: &request.stream,
            version: first_version + offset,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            recorded_at_micros: now,
            metadata: &event.metadata,
            data_hash: &hash,
        });
        head = chain(&head, &digest);
        columns.chain.push(Some(head));
    }
    read.heads.insert(request.stream.clone(), head);
    head
}

/// The touched streams as the upserts' columns: names, versions, last sequence numbers, heads.
type StreamColumns<'a> = (Vec<&'a str>, Vec<i64>, Vec<i64>, Vec<Option<&'a [u8]>>);

fn stream_columns<'a>(touched: &'a HashMap<&'a str, Touched>) -> StreamColumns<'a> {
    let mut columns: StreamColumns<'a> = (
        Vec::with_capacity(touched.len()),
        Vec::with_capacity(touched.len()),
        Vec::with_capacity(touched.len()),
        Vec::with_capacity(touched.len()),
    );
    for (name, (version, last_seq, head)) in touched {
        columns.0.push(*name);
        columns.1.push(*version);
        columns.2.push(*last_seq);
        columns.3.push(head.as_ref().map(|h| h.as_slice()));
    }
    columns
}

/// The accepted events' columns in the order both inserts take them (`INSERT_EVENTS` from
/// `$3`, `known::GUARDED_WRITE` from `$2`).
fn event_params<'a>(
    c: &'a Columns<'_>,
    chains: &'a (dyn ToSql + Sync),
) -> [&'a (dyn ToSql + Sync); 9] {
    [
        &c.seq,
        &c.stream,
        &c.version,
        &c.event_id,
        &c.event_type,
        &c.schema_version,
        &c.data,
        &c.metadata,
        chains,
    ]
}

/// The events' chain links as a column.
fn chain_column<'a>(c: &'a Columns<'_>) -> Vec<Option<&'a [u8]>> {
    c.chain.iter().map(|h| h.as_ref().map(|h| h.as_slice())).collect()
}

/// Writes the accepted events and the streams' new versions, commits, and notifies the
/// tailing replicas.
async fn write_group(
    shared: &Shared,
    tx: &deadpool_postgres::Client,
    decided: &Decided<'_>,
    tx_id: i64,
    now: i64,
    [insert, upsert, notify]: [&tokio_postgres::Statement; 3],
) -> Result<(), GroupError> {
    let (names, versions, last, heads) = stream_columns(&decided.touched);
    let c = &decided.columns;
    let chains = chain_column(c);
    let mut insert_params: Vec<&(dyn ToSql + Sync)> = vec![&tx_id, &now];
    insert_params.extend(event_params(c, &chains));
    let upsert_params: [&(dyn ToSql + Sync); 5] = [&tx_id, &names, &versions, &last, &heads];
    let notify_params: [&(dyn ToSql + Sync); 1] = [&CHANNEL];
    let insert = tx.execute(insert, &insert_params);
    let upsert = tx.execute(upsert, &upsert_params);
    if let Some(hook) = &shared.before_commit {
        futures::try_join!(insert, upsert).map_err(classify("writing a group"))?;
        hook().await;
        tx.batch_execute("COMMIT").await.map_err(classify("committing a group"))?;
        announce(tx.execute(notify, &notify_params).await);
    } else {
        let commit = tx.batch_execute("COMMIT");
        let written = futures::future::try_join3(insert, upsert, commit);
        // Sent right behind the COMMIT, as a transaction of its own (see `announce`).
        let (written, notified) = futures::join!(written, tx.execute(notify, &notify_params));
        written.map_err(classify("writing a group"))?;
        announce(notified);
    }
    Ok(())
}

/// One append of the group: refused, answered from an identical earlier append, or accepted
/// (its events added to `columns` at the next positions of this transaction).
fn decide<'a>(
    request: &'a Request,
    tx_id: i64,
    seq: &mut i64,
    state: &mut HashMap<String, StreamState>,
    placed: &mut HashMap<Uuid, Placed>,
    columns: &mut Columns<'a>,
) -> Result<AppendResult, StoreError> {
    let Request { stream, expected, events, .. } = request;
    let current = state.get(stream).copied().unwrap_or_default();
    // The group read every id it appends up front: the rule gets them from that map.
    let replayed = match append_rule::replay(*expected, events, |id| {
        Ok::<_, Infallible>(placed.get(id).map(|p| Placement {
            same_stream: p.stream == *stream,
            version: p.version,
            position: p.position,
        }))
    }) {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let verdict = match append_rule::judge(stream, current, *expected, events, || {
        Ok::<_, Infallible>(replayed.clone())
    }) {
        Ok(v) => v,
        Err(never) => match never {},
    };
    let (first_version, last_version) = match verdict {
        Verdict::Refused(e) => return Err(e),
        Verdict::Resent(result) => return Ok(result),
        Verdict::Write { first_version, last_version } => (first_version, last_version),
    };
    if let Some(answer) = append_rule::resend(stream, replayed) {
        return answer;
    }
    for (offset, event) in (0u64..).zip(events) {
        *seq += 1;
        let version = first_version + offset;
        columns.seq.push(*seq);
        columns.stream.push(stream);
        columns.version.push(version as i64);
        columns.event_id.push(event.event_id);
        columns.event_type.push(&event.event_type);
        columns.schema_version.push(i64::from(event.schema_version));
        columns.data.push(&event.data);
        columns.metadata.push(&event.metadata);
        placed.insert(
            event.event_id,
            Placed {
                stream: stream.clone(),
                version,
                position: Position::new(tx_id as u64, *seq as u64),
            },
        );
    }
    state.insert(stream.clone(), StreamState { version: Some(last_version), deleted: false });
    Ok(AppendResult { version: last_version, position: Position::new(tx_id as u64, *seq as u64) })
}

/// Deletes a stream in its own transaction, under the stream's advisory lock: the events go,
/// a tombstone stays (with the position of the last event, so the head never moves back).
pub(crate) async fn delete(
    shared: &Shared,
    stream: &str,
    expected: ExpectedVersion,
    now: i64,
) -> Result<(), StoreError> {
    let fail = |context| move |e| StoreError::backend(context, e);
    let mut client = shared.pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(fail("starting a delete"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&stream_key(stream)])
        .await
        .map_err(fail("locking a stream"))?;
    let row = tx
        .query_opt(
            "SELECT version, deleted_at IS NOT NULL FROM pop_streams WHERE name = $1",
            &[&stream],
        )
        .await
        .map_err(fail("looking up a stream"))?;
    let (current, deleted) = match row {
        Some(row) => {
            let version: Option<i64> = row.try_get(0).map_err(fail("looking up a stream"))?;
            let version = version
                .map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("version {v}"))))
                .transpose()?;
            (version, row.try_get::<_, bool>(1).map_err(fail("looking up a stream"))?)
        }
        None => (None, false),
    };
    if deleted {
        return Err(StoreError::StreamDeleted { stream: stream.to_owned() });
    }
    if !expected.admits(current) {
        return Err(StoreError::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual: ActualVersion::from_current(current),
        });
    }
    // The hash rows stay (`crate::commitment`): the log hash still recomputes.
    tx.execute(
        "INSERT INTO pop_pruned (tx_id, seq, stream, version, chain) \
         SELECT tx_id, seq, stream, version, chain FROM pop_events WHERE stream = $1",
        &[&stream],
    )
    .await
    .map_err(fail("keeping a stream's hash rows"))?;
    tx.execute("DELETE FROM pop_events WHERE stream = $1", &[&stream])
        .await
        .map_err(fail("deleting a stream's events"))?;
    tx.execute(
        "INSERT INTO pop_streams (name, deleted_at) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET deleted_at = EXCLUDED.deleted_at",
        &[&stream, &now],
    )
    .await
    .map_err(fail("marking a stream deleted"))?;
    tx.commit().await.map_err(fail("committing a delete"))?;
    shared.known.forget(stream);
    Ok(())
}
