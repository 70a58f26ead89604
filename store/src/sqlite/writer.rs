//! The one writer: a dedicated OS thread that owns the write connection and group-commits.
//!
//! It takes every append and delete waiting in its queue (bounded by count and bytes), applies
//! them in arrival order inside one transaction, commits once (one fsync for the whole group),
//! publishes the new head, then answers each request. Each request is checked against the
//! database plus the requests before it in the same group, so a refused request (conflict,
//! deleted stream) never fails its batch-mates. Those checks happen before any write; the one
//! refusal found only by writing (a reused event id hitting the unique index) makes the
//! writer roll the group back and redo it with a savepoint per request, which is slower but
//! isolates the offender. Only an engine failure (IO, disk full) fails a whole group.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::{CHECKPOINT_EVERY_BYTES, CHECKPOINT_EVERY_COMMITS, Checkpointer};
use crate::append_rule::{self, Placement, Replay, StreamState, Verdict};
use crate::cache::GenerationalCache;
use crate::digest::{DigestInput, GENESIS, Hash, chain, data_hash, event_digest};
use crate::limits::MAX_APPEND_BYTES;
use crate::{ActualVersion, AppendResult, Clock, ExpectedVersion, NewEvent, Position, StoreError};

/// Requests one group commit takes at most. Bounds the latency an append waits behind its
/// batch-mates and the size of one transaction; 512 is twice the benchmark's largest number
/// of concurrent appenders, so a full queue drains in about one group.
pub const MAX_GROUP_REQUESTS: usize = 512;

/// Bytes one group commit takes at most (data + metadata + type names). Equal to the largest
/// single append, so every valid append fits a group on its own.
pub const MAX_GROUP_BYTES: usize = MAX_APPEND_BYTES;

/// Requests waiting for the writer. Callers beyond this wait in `send` (back-pressure) rather
/// than piling up memory; two full groups keeps the writer busy while the next group queues.
pub const WRITER_QUEUE_CAPACITY: usize = 2 * MAX_GROUP_REQUESTS;

/// How long after their answers a group waits for the appenders its predecessor answered to
/// come back ([`Writer::next_request`]); a one-event commit is about 150 µs here.
const MAX_RETURN: std::time::Duration = std::time::Duration::from_micros(150);

/// Streams whose id and version the writer remembers, to avoid a SELECT per append. 64k
/// streams cost a few MiB and cover every stream active in a busy minute.
pub const STREAM_CACHE_CAPACITY: usize = 64 * 1024;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer is asked to do.
pub(crate) enum Request {
    Append {
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        /// Size as counted by `limits::check_append`.
        bytes: usize,
        reply: Reply<AppendResult>,
    },
    Delete {
        stream: String,
        expected: ExpectedVersion,
        reply: Reply<()>,
    },
    /// Store a signed checkpoint (`crate::commitment`); `false`: its sequence number is taken.
    Seal {
        checkpoint: crate::commitment::SignedCheckpoint,
        reply: Reply<bool>,
    },
    /// Finish the current group, close the connection, then answer.
    Close {
        reply: oneshot::Sender<()>,
    },
}

impl Request {
    fn bytes(&self) -> usize {
        match self {
            Request::Append { bytes, .. } => *bytes,
            Request::Seal { checkpoint, .. } => checkpoint.body.len(),
            Request::Delete { .. } | Request::Close { .. } => 0,
        }
    }
}

/// What the writer knows about a stream.
#[derive(Debug, Clone, Copy)]
struct StreamEntry {
    id: i64,
    /// The version of the last event; `None` before the first.
    version: Option<u64>,
    deleted: bool,
    /// The stream's hash chain after its last event ([`crate::digest`]).
    head: Hash,
}

/// Whether a group waits for the appenders its predecessor answered ([`Writer::next_request`]).
/// That wait spins: where the callers do not come straight back (request handlers with IO
/// between their appends), it would cost up to [`MAX_RETURN`] of a core on every commit. So
/// after a wait that ran out, that many groups go without waiting (1, 2, 4 … 64 after runs
/// in a row); a group that got all its appenders back starts it again from none.
#[derive(Debug, Default)]
struct Patience {
    /// Groups still to go without waiting, after this one.
    skip: u32,
    /// This group goes without waiting.
    skipping: bool,
    /// This group has waited (spun) for its appenders.
    waited: bool,
    /// What the last run-out set `skip` to (the next doubles it); a kept wait clears it.
    backoff: u32,
}

impl Patience {
    const MAX_SKIP: u32 = 64;

    fn waits(&self) -> bool {
        !self.skipping
    }

    /// The group spins once more for its appenders.
    fn wait(&mut self) {
        self.waited = true;
    }

    /// The group stops waiting without all its appenders: said only of a group that waited
    /// (a first request long after the last commit is no sign that waits run out).
    fn ran_out(&mut self) {
        if self.waited {
            self.backoff = (self.backoff * 2).clamp(1, Self::MAX_SKIP);
            self.skip = self.backoff;
        }
    }

    /// The group has all its appenders: said only of a group that waited for them (one
    /// formed from requests already queued says nothing of the wait).
    fn kept(&mut self) {
        if self.waited {
            self.backoff = 0;
        }
    }

    /// A group begins.
    fn next_group(&mut self) {
        self.skipping = self.skip > 0;
        self.skip = self.skip.saturating_sub(1);
        self.waited = false;
    }
}

/// What a request of a committed group is answered with.
enum Answer {
    Appended(Result<AppendResult, StoreError>),
    Deleted(Result<(), StoreError>),
    Sealed(Result<bool, StoreError>),
    /// For a request that needs no answer from the transaction.
    Nothing,
}

/// Why a group did not commit.
enum GroupError {
    /// An engine failure: the whole group is rolled back and every request gets this error.
    Fatal(StoreError),
    /// A request broke a schema constraint (a reused event id). Without savepoints that would
    /// take its batch-mates down, so the group is redone with a savepoint per request.
    NeedSavepoints,
}

impl From<StoreError> for GroupError {
    fn from(e: StoreError) -> Self {
        GroupError::Fatal(e)
    }
}

/// A group applied inside its (not yet committed) transaction.
struct Applied {
    head: u64,
    /// The streams the group changed, as they will be once it commits.
    overlay: HashMap<String, StreamEntry>,
    answers: Vec<Answer>,
}

pub(crate) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Request>,
    head_tx: watch::Sender<Position>,
    checkpointer: Option<Checkpointer>,
    /// Bytes committed since the checkpointer was last nudged.
    unchecked_bytes: usize,
    /// Commits since the checkpointer was last nudged.
    unchecked_commits: usize,
    state: State,
    /// Failed group commits, logged once per [`crate::repeats::EVERY`] while they go on.
    failing: crate::repeats::Repeats,
    /// How many requests the last group answered, and when.
    answered: Option<(usize, std::time::Instant)>,
    patience: Patience,
    /// Groups committed and the requests they answered, for the store's handle.
    commits: Option<std::sync::Arc<crate::GroupCommits>>,
    /// Set once another process was found writing to the store ([`Writer::watching`]).
    changed_under: Option<std::sync::Arc<std::sync::OnceLock<String>>>,
    /// Set once a commit failed on the file's own damage ([`Writer::watching`]).
    damaged: Option<std::sync::Arc<std::sync::OnceLock<String>>>,
}

struct State {
    /// The last position assigned by a committed transaction.
    head: u64,
    /// Committed state of recently used streams.
    streams: GenerationalCache<String, StreamEntry>,
    clock: Clock,
    /// A request taken from the queue that did not fit the previous group.
    carry: Option<Request>,
    /// The head another process left, when a group found one (see `apply_group`).
    foreign_head: Option<(u64, u64)>,
}

/// A failed COMMIT. An IO error (SQLITE_IOERR: writing the WAL's frames or syncing them
/// failed) may come after the commit frame reached the file, so whether the group is stored is
/// not known (ops3am25: groups answered "nothing was done" on an fsync that failed were in the
/// log after a restart; a resent submit was then refused as existing). Anything else (a full
/// disk: the WAL could not grow) left the log as it was.
fn commit_failed(e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::SystemIoFailure) {
        return StoreError::OutcomeUnknown {
            why: "the disk failed while the commit was written or synced (it may be stored)",
            source: std::sync::Arc::new(e),
        };
    }
    fatal("committing a group")(e)
}

/// Says in `cell`, once (and in the log), that `error` came of the file's own damage, if it
/// did: a commit's or a read's ([`crate::EventStore::damaged`]).
pub(crate) fn note_damage(cell: &std::sync::OnceLock<String>, error: &StoreError) {
    if error.is_damaged_file() && cell.get().is_none() {
        let why = damaged_file(error);
        if cell.set(why.clone()).is_ok() {
            tracing::error!("{why}");
        }
    }
}

/// What readiness and the log say of a commit or a read that failed on the file's damage.
fn damaged_file(error: &StoreError) -> String {
    format!(
        "the event store's file is damaged ({}): no write can be stored until it is repaired; \
         reads of the damaged part fail too. Not ready again until restarted on a sound file: \
         stop the server, keep a copy of the data directory, run `pop verify` on it (it names \
         what it finds), then restore the data directory from a backup, or `pop export` what \
         still reads and `pop import` it into a new one",
        pop_domain::error::ErrorChain(error)
    )
}

fn fatal(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is out of range")))
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

/// The commit time of the log's last event (`i64::MIN` for an empty log).
pub(crate) fn last_commit_micros(conn: &Connection) -> Result<i64, StoreError> {
    use rusqlite::OptionalExtension as _;
    conn.prepare_cached("SELECT recorded_at FROM events ORDER BY position DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
        .map(|last| last.unwrap_or(i64::MIN))
        .map_err(fatal("reading the last commit time"))
}

/// Reads the log head as committed in the database.
pub(crate) fn stored_head(conn: &Connection) -> Result<u64, StoreError> {
    let head: i64 = conn
        .prepare_cached("SELECT head FROM log WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(fatal("reading the log head"))?;
    to_u64(head, "log head")
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Request>,
        head_tx: watch::Sender<Position>,
        head: u64,
        clock: Clock,
        checkpointer: Option<Checkpointer>,
    ) -> Writer {
        let state = State {
            head,
            streams: GenerationalCache::new(STREAM_CACHE_CAPACITY),
            clock,
            carry: None,
            foreign_head: None,
        };
        Writer {
            conn,
            rx,
            head_tx,
            checkpointer,
            unchecked_bytes: 0,
            unchecked_commits: 0,
            state,
            failing: crate::repeats::Repeats::default(),
            answered: None,
            patience: Patience::default(),
            commits: None,
            changed_under: None,
            damaged: None,
        }
    }

    /// Says in `changed_under`, once, that another process wrote to the store (or its file
    /// went back): this process's leadership, leases and caches assumed it was the only writer;
    /// and in `damaged`, once, that a commit failed on the file's own damage (SQLite: "database
    /// disk image is malformed"): no write will succeed until it is repaired.
    pub(crate) fn watching(
        mut self,
        changed_under: std::sync::Arc<std::sync::OnceLock<String>>,
        damaged: std::sync::Arc<std::sync::OnceLock<String>>,
    ) -> Writer {
        self.changed_under = Some(changed_under);
        self.damaged = Some(damaged);
        self
    }

    /// Counts the groups this writer commits into `commits`.
    pub(crate) fn counting(mut self, commits: std::sync::Arc<crate::GroupCommits>) -> Writer {
        self.commits = Some(commits);
        self
    }

    /// The writer thread's body: runs until the store is closed or dropped.
    pub(crate) fn run(mut self) {
        let mut close_reply = None;
        while close_reply.is_none() {
            let first = match self.state.carry.take() {
                Some(r) => r,
                None => match self.rx.blocking_recv() {
                    Some(r) => r,
                    // Every sender is gone: the store was dropped.
                    None => break,
                },
            };
            let mut group = Vec::new();
            let mut bytes = 0usize;
            self.patience.next_group();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                if let Request::Close { reply } = request {
                    close_reply = Some(reply);
                    break;
                }
                let size = request.bytes();
                if !group.is_empty() && bytes.saturating_add(size) > MAX_GROUP_BYTES {
                    self.state.carry = Some(request);
                    break;
                }
                bytes = bytes.saturating_add(size);
                group.push(request);
                if group.len() >= MAX_GROUP_REQUESTS {
                    break;
                }
                next = self.next_request(group.len());
            }
            if !group.is_empty() {
                let answered = group.len();
                self.commit_group(group, bytes);
                self.answered = Some((answered, std::time::Instant::now()));
            }
        }
        // Requests still queued are dropped with the receiver: their callers see `Closed`.
        drop(self.rx);
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the event store's write connection failed");
        }
        if let Some(reply) = close_reply {
            // The closer may have stopped waiting; nothing to do then.
            let _ = reply.send(());
        }
    }

    /// The next queued request for a group of `taken`, or `None` to commit it. The appenders
    /// the last group answered come straight back with their next appends: while fewer than
    /// they have come, give them the CPU (bounded by [`MAX_RETURN`] after their answers)
    /// instead of committing the first alone and the rest behind it (4 appenders went in
    /// groups of 1 and 3 by turns, 2 a commit, one fsync each). The wait spins (yields the
    /// thread), so when it runs out, the next groups do not wait ([`Patience`]).
    fn next_request(&mut self, taken: usize) -> Option<Request> {
        loop {
            match self.rx.try_recv() {
                Ok(request) => {
                    if self.answered.is_some_and(|(answered, _)| taken + 1 == answered) {
                        self.patience.kept();
                    }
                    return Some(request);
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    let (answered, at) = self.answered?;
                    if taken >= answered || !self.patience.waits() {
                        return None;
                    }
                    if at.elapsed() >= MAX_RETURN {
                        self.patience.ran_out();
                        return None;
                    }
                    self.patience.wait();
                    std::thread::yield_now();
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Request>, bytes: usize) {
        // One timestamp per commit, truncated to what the schema stores, so the value an
        // appender could observe equals what readers get back.
        let now_micros = (self.state.clock)().timestamp_micros();
        let mut result = apply_group(&mut self.conn, &mut self.state, &group, now_micros, false);
        if matches!(result, Err(GroupError::NeedSavepoints)) {
            result = apply_group(&mut self.conn, &mut self.state, &group, now_micros, true);
        }
        // Said once: with two servers on one file every group of each finds the other's
        // commits, and an ERROR a group would flood the log.
        if let Some((stored, ours)) = self.state.foreign_head.take()
            && self.changed_under.as_ref().is_none_or(|c| c.get().is_none())
        {
            let why = if stored > ours {
                format!(
                    "another process wrote to this event store (its head was {stored} where \
                     this server's last commit left {ours}): two servers share the data \
                     directory, most likely after its pop.lock was removed, and each runs the \
                     scheduler, leases, timed processes and checkpoint sealing as if it were the \
                     only one. Not ready again until restarted: stop every other process using \
                     the data directory, then restart this one"
                )
            } else {
                format!(
                    "the event store's file went back under this server (its head was {stored} \
                     where this server's last commit left {ours}): restored or replaced while \
                     the server ran. Not ready again until restarted: stop it, check the file \
                     (pop verify), then start it again"
                )
            };
            tracing::error!(stored, ours, "{why}");
            if let Some(changed) = &self.changed_under {
                let _ = changed.set(why);
            }
        }
        let answers = match result {
            Ok(Applied { head, overlay, answers }) => {
                for (name, entry) in overlay {
                    self.state.streams.insert(name, entry);
                }
                if head != self.state.head {
                    self.state.head = head;
                    // Publish before answering: once an append returns, `head()` and every
                    // subscriber can see its events.
                    self.head_tx.send_replace(Position::from_sequence(head));
                }
                self.after_commit(bytes);
                if let Some(commits) = &self.commits {
                    commits.record(group.len());
                }
                if let Some(unsaid) = self.failing.ended() {
                    tracing::info!(
                        failed_since_last_said = unsaid,
                        "event store group commits work again"
                    );
                }
                answers
            }
            Err(failure) => {
                let error = match failure {
                    GroupError::Fatal(e) => e,
                    GroupError::NeedSavepoints => {
                        StoreError::Corrupt("a constraint failed even with savepoints".to_owned())
                    }
                };
                if let Some(unsaid) = self.failing.say(std::time::Instant::now()) {
                    tracing::error!(
                        error = %pop_domain::error::ErrorChain(&error),
                        requests = group.len(),
                        failed_since_last_said = unsaid,
                        "event store group commit failed (said once per 10 s while it goes on)"
                    );
                }
                // The file itself is damaged: said once, with what to do, and to readiness
                // (newcomer55 H2: writes failed INTERNAL while /readyz answered 200).
                if let Some(damaged) = &self.damaged {
                    note_damage(damaged, &error);
                }
                // The cache holds only committed state, but after an engine failure start
                // afresh from the database.
                self.state.streams.clear();
                // A write refused for room (a full disk, `ulimit -f`) may fit once the WAL is
                // copied back and begins again: ask for that now, not after 1,000 more
                // commits that cannot happen (ops3am6: under a 3 MB file-size limit the WAL
                // filled it and every write failed until a restart).
                if let Some(checkpointer) = &self.checkpointer {
                    checkpointer.nudge();
                    self.unchecked_bytes = 0;
                    self.unchecked_commits = 0;
                }
                group
                    .iter()
                    .map(|r| match r {
                        Request::Delete { .. } => Answer::Deleted(Err(error.clone())),
                        Request::Seal { .. } => Answer::Sealed(Err(error.clone())),
                        _ => Answer::Appended(Err(error.clone())),
                    })
                    .collect()
            }
        };
        for (request, answer) in group.into_iter().zip(answers) {
            // A caller that stopped waiting is not an error: its events are committed.
            match (request, answer) {
                (Request::Append { reply, .. }, Answer::Appended(result)) => {
                    let _ = reply.send(result);
                }
                (Request::Delete { reply, .. }, Answer::Deleted(result)) => {
                    let _ = reply.send(result);
                }
                (Request::Seal { reply, .. }, Answer::Sealed(result)) => {
                    let _ = reply.send(result);
                }
                // `apply_group` answers each request with its own kind.
                (Request::Close { reply }, _) => {
                    let _ = reply.send(());
                }
                _ => {}
            }
        }
    }

    /// Hands WAL checkpointing to the checkpointer thread once enough was written, so the
    /// writer never spends a commit copying pages and fsyncing the database file.
    fn after_commit(&mut self, bytes: usize) {
        self.unchecked_bytes = self.unchecked_bytes.saturating_add(bytes);
        self.unchecked_commits += 1;
        if (self.unchecked_bytes >= CHECKPOINT_EVERY_BYTES
            || self.unchecked_commits >= CHECKPOINT_EVERY_COMMITS)
            && let Some(checkpointer) = &self.checkpointer
        {
            checkpointer.nudge();
            self.unchecked_bytes = 0;
            self.unchecked_commits = 0;
        }
    }
}

/// Applies a group in one transaction and commits it.
fn apply_group(
    conn: &mut Connection,
    state: &mut State,
    group: &[Request],
    now_micros: i64,
    savepoints: bool,
) -> Result<Applied, GroupError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fatal("starting a group commit"))?;
    let stored = stored_head(&tx)?;
    if stored != state.head {
        // Another process wrote to this file since our last commit: our cached versions and
        // head are stale. Start over from the database (we hold the write lock now).
        // Said by the writer once the group is done (`Writer::commit_group`).
        state.foreign_head = Some((stored, state.head));
        state.streams.clear();
        state.head = stored;
    }
    let mut head = state.head;
    let mut overlay = HashMap::new();
    let mut answers = Vec::with_capacity(group.len());
    for request in group {
        let answer = match request {
            Request::Append { stream, expected, events, .. } => {
                let mut group = Group { tx: &tx, state: &mut *state, overlay: &mut overlay };
                Answer::Appended(
                    group.append(&mut head, now_micros, stream, *expected, events, savepoints)?,
                )
            }
            Request::Delete { stream, expected, .. } => {
                let mut group = Group { tx: &tx, state: &mut *state, overlay: &mut overlay };
                Answer::Deleted(group.delete(now_micros, stream, *expected)?)
            }
            Request::Seal { checkpoint, .. } => Answer::Sealed(seal(&tx, checkpoint)?),
            // `run` never puts a Close into a group; answered in `commit_group` if it did.
            Request::Close { .. } => Answer::Nothing,
        };
        answers.push(answer);
    }
    if head != state.head {
        let head_sql = to_i64(head, "log head")?;
        tx.prepare_cached("UPDATE log SET head = ?1 WHERE id = 1")
            .and_then(|mut s| s.execute([head_sql]))
            .map_err(fatal("advancing the log head"))?;
    }
    tx.commit().map_err(commit_failed)?;
    Ok(Applied { head, overlay, answers })
}

/// A group in progress: its transaction, the writer's state, and the streams it changed.
struct Group<'a, 't> {
    tx: &'a Transaction<'t>,
    state: &'a mut State,
    overlay: &'a mut HashMap<String, StreamEntry>,
}

impl Group<'_, '_> {
    /// The stream as this group sees it: earlier requests of the group, then the cache of
    /// committed state, then the database.
    fn resolve(&mut self, stream: &str) -> Result<Option<StreamEntry>, StoreError> {
        if let Some(entry) = self.overlay.get(stream) {
            return Ok(Some(*entry));
        }
        if let Some(entry) = self.state.streams.get(stream) {
            return Ok(Some(entry));
        }
        type Row = (i64, Option<i64>, Option<i64>, Option<Vec<u8>>);
        let row: Option<Row> = self
            .tx
            .prepare_cached(
                "SELECT id, version, deleted_at, head_hash FROM streams WHERE name = ?1",
            )
            .and_then(|mut s| {
                s.query_row([stream], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()
            })
            .map_err(fatal("looking up a stream"))?;
        let Some((id, version, deleted_at, head_hash)) = row else {
            return Ok(None);
        };
        let version = version.map(|v| to_u64(v, "stream version")).transpose()?;
        let head = match (version, head_hash) {
            (None, _) => GENESIS,
            (Some(_), Some(h)) => h.try_into().map_err(|_| {
                StoreError::Corrupt(format!("stream {stream:?} has a head hash of the wrong size"))
            })?,
            (Some(_), None) => {
                return Err(StoreError::Corrupt(format!("stream {stream:?} has no head hash")));
            }
        };
        let entry = StreamEntry { id, version, deleted: deleted_at.is_some(), head };
        // Not touched by this group (it is not in the overlay), so this is committed state.
        self.state.streams.insert(stream.to_owned(), entry);
        Ok(Some(entry))
    }

    /// One append. `Ok(Err(_))`: this request is refused, the group goes on.
    fn append(
        &mut self,
        head: &mut u64,
        now_micros: i64,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        savepoints: bool,
    ) -> Result<Result<AppendResult, StoreError>, GroupError> {
        let entry = self.resolve(stream)?;
        let current = entry.and_then(|e| e.version);
        let state = StreamState { version: current, deleted: entry.is_some_and(|e| e.deleted) };
        let tx = self.tx;
        match append_rule::judge(stream, state, expected, events, || {
            replay(tx, entry, expected, events)
        })? {
            Verdict::Refused(e) => return Ok(Err(e)),
            Verdict::Resent(result) => return Ok(Ok(result)),
            // The ids are checked by the unique index during the insert (the common case pays
            // no lookup); a duplicate is judged below.
            Verdict::Write { .. } => {}
        }

        if savepoints {
            savepoint(self.tx, "SAVEPOINT append")?;
        }
        let first_position = *head;
        match insert(self.tx, entry, stream, current, events, head, now_micros) {
            Ok((id, version, chain_head)) => {
                if savepoints {
                    savepoint(self.tx, "RELEASE append")?;
                }
                let entry =
                    StreamEntry { id, version: Some(version), deleted: false, head: chain_head };
                self.overlay.insert(stream.to_owned(), entry);
                Ok(Ok(AppendResult { version, position: Position::from_sequence(*head) }))
            }
            Err(InsertError::Constraint(_)) if !savepoints => Err(GroupError::NeedSavepoints),
            Err(InsertError::Constraint(source)) => {
                savepoint(self.tx, "ROLLBACK TO append")?;
                savepoint(self.tx, "RELEASE append")?;
                *head = first_position;
                // The only constraint a valid append can break is the unique event id.
                match append_rule::resend(stream, replay(self.tx, entry, expected, events)?) {
                    Some(answer) => Ok(answer),
                    None => Err(StoreError::backend("appending events", source).into()),
                }
            }
            Err(InsertError::Fatal(e)) => Err(e.into()),
        }
    }

    /// One delete: the events go, a tombstone stays.
    fn delete(
        &mut self,
        now_micros: i64,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<Result<(), StoreError>, GroupError> {
        let entry = self.resolve(stream)?;
        if entry.is_some_and(|e| e.deleted) {
            return Ok(Err(StoreError::StreamDeleted { stream: stream.to_owned() }));
        }
        let current = entry.and_then(|e| e.version);
        if !expected.admits(current) {
            return Ok(Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                actual: ActualVersion::from_current(current),
            }));
        }
        let tx = self.tx;
        let id = match entry {
            Some(e) => {
                // The hash rows stay (`crate::commitment`): the log hash still recomputes.
                tx.prepare_cached(
                    "INSERT INTO pruned (position, stream_id, version, chain) \
                     SELECT position, stream_id, version, chain FROM events WHERE stream_id = ?1",
                )
                .and_then(|mut s| s.execute([e.id]))
                .map_err(fatal("keeping a stream's hash rows"))?;
                tx.prepare_cached("DELETE FROM events WHERE stream_id = ?1")
                    .and_then(|mut s| s.execute([e.id]))
                    .map_err(fatal("deleting a stream's events"))?;
                tx.prepare_cached("UPDATE streams SET deleted_at = ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute([e.id, now_micros]))
                    .map_err(fatal("marking a stream deleted"))?;
                e.id
            }
            None => {
                tx.prepare_cached("INSERT INTO streams (name, deleted_at) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![stream, now_micros]))
                    .map_err(fatal("creating a tombstone"))?;
                tx.last_insert_rowid()
            }
        };
        // The tombstone keeps the stream's head hash (`streams.head_hash` is not cleared), so
        // verification can still account for the deleted events.
        let head = entry.map_or(GENESIS, |e| e.head);
        self.overlay
            .insert(stream.to_owned(), StreamEntry { id, version: current, deleted: true, head });
        Ok(Ok(()))
    }
}

/// Stores a signed checkpoint unless its sequence number is taken or its predecessor missing.
fn seal(
    tx: &Transaction<'_>,
    checkpoint: &crate::commitment::SignedCheckpoint,
) -> Result<Result<bool, StoreError>, GroupError> {
    let seq = to_i64(checkpoint.seq, "checkpoint number")?;
    let written = tx
        .prepare_cached(
            // Only after its predecessor: a checkpoint deleted while the next was being
            // sealed leaves the chain without a new link past the hole (the sealer's witness
            // then finds the hole instead of moving past it).
            "INSERT INTO log_checkpoints (seq, body, signature) SELECT ?1, ?2, ?3 \
             WHERE ?1 = 1 OR EXISTS (SELECT 1 FROM log_checkpoints WHERE seq = ?1 - 1) \
             ON CONFLICT (seq) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![seq, checkpoint.body, checkpoint.signature]))
        .map_err(fatal("storing a checkpoint"))?;
    Ok(Ok(written == 1))
}

fn savepoint(tx: &Transaction<'_>, sql: &'static str) -> Result<(), StoreError> {
    tx.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ()).map_err(fatal("savepoint"))
}

enum InsertError {
    /// A constraint of the schema refused a row: decided by the caller.
    Constraint(rusqlite::Error),
    Fatal(StoreError),
}

impl From<StoreError> for InsertError {
    fn from(e: StoreError) -> Self {
        InsertError::Fatal(e)
    }
}

fn classify(context: &'static str) -> impl Fn(rusqlite::Error) -> InsertError {
    move |e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => InsertError::Constraint(e),
        _ => InsertError::Fatal(StoreError::backend(context, e)),
    }
}

/// Writes the stream row and the events, each with its link of the stream's hash chain
/// ([`crate::digest`]); returns the stream id, its new version and its new chain head.
fn insert(
    tx: &Transaction<'_>,
    entry: Option<StreamEntry>,
    stream: &str,
    current: Option<u64>,
    events: &[NewEvent],
    head: &mut u64,
    now_micros: i64,
) -> Result<(i64, u64, Hash), InsertError> {
    let first_version = current.map_or(Some(0), |v| v.checked_add(1));
    let count = events.len() as u64;
    let last_version = first_version
        .and_then(|f| f.checked_add(count - 1))
        .ok_or_else(|| StoreError::Corrupt(format!("stream {stream:?} version overflows")))?;
    let first_version = last_version + 1 - count;
    let last_version_sql = to_i64(last_version, "stream version")?;
    // The chain first (pure computation), so the stream row is written once with its head.
    let mut chain_head = entry.filter(|e| e.version.is_some()).map_or(GENESIS, |e| e.head);
    let mut chains = Vec::with_capacity(events.len());
    for (offset, event) in (0u64..).zip(events) {
        let hash = data_hash(&event.data);
        let digest = event_digest(&DigestInput {
            stream,
            version: first_version + offset,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            recorded_at_micros: now_micros,
            metadata: &event.metadata,
            data_hash: &hash,
        });
        chain_head = chain(&chain_head, &digest);
        chains.push(chain_head);
    }
    let id = match entry {
        Some(e) => {
            tx.prepare_cached("UPDATE streams SET version = ?2, head_hash = ?3 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![e.id, last_version_sql, chain_head.as_slice()]))
                .map_err(classify("updating a stream"))?;
            e.id
        }
        None => {
            tx.prepare_cached("INSERT INTO streams (name, version, head_hash) VALUES (?1, ?2, ?3)")
                .and_then(|mut s| {
                    s.execute(params![stream, last_version_sql, chain_head.as_slice()])
                })
                .map_err(classify("creating a stream"))?;
            tx.last_insert_rowid()
        }
    };
    let mut statement = tx
        .prepare_cached(
            "INSERT INTO events (position, stream_id, version, event_id, event_type, \
             schema_version, data, metadata, recorded_at, chain) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(classify("preparing the event insert"))?;
    for ((offset, event), link) in (0u64..).zip(events).zip(&chains) {
        let position = head
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("the log position overflows".to_owned()))?;
        statement
            .execute(params![
                to_i64(position, "log position")?,
                id,
                to_i64(first_version + offset, "stream version")?,
                event.event_id.as_bytes(),
                event.event_type,
                event.schema_version,
                event.data,
                event.metadata,
                now_micros,
                link.as_slice(),
            ])
            .map_err(classify("appending an event"))?;
        *head = position;
    }
    Ok((id, last_version, chain_head))
}

/// Where `events` already sit in the log, judged by the append rule.
fn replay(
    tx: &Transaction<'_>,
    entry: Option<StreamEntry>,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Replay, StoreError> {
    let mut statement = tx
        .prepare_cached("SELECT position, stream_id, version FROM events WHERE event_id = ?1")
        .map_err(fatal("looking up event ids"))?;
    append_rule::replay(expected, events, |event_id| {
        let found: Option<(i64, i64, i64)> = statement
            .query_row([event_id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(fatal("looking up event ids"))?;
        found
            .map(|(position, stream_id, version)| {
                Ok(Placement {
                    same_stream: entry.is_some_and(|e| e.id == stream_id),
                    version: to_u64(version, "stream version")?,
                    position: Position::from_sequence(to_u64(position, "log position")?),
                })
            })
            .transpose()
    })
}

/// The time a commit stamps, as the schema stores it.
pub(crate) fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("recorded time {micros} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::Patience;

    /// A COMMIT that failed on an IO error (an fsync that failed: SQLITE_IOERR_FSYNC, 1034;
    /// a write: SQLITE_IOERR_WRITE, 778) may be stored: said "outcome unknown", never "nothing
    /// was done"; a full disk (SQLITE_FULL, 13) left the log as it was.
    #[test]
    fn a_commit_failed_on_io_is_an_unknown_outcome() {
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        for io in [1034, 778, 10] {
            let e = super::commit_failed(failure(io));
            assert!(e.outcome_unknown(), "{io}: {e}");
            assert!(e.is_unavailable(), "{io}: the store's condition, retried later");
            assert!(e.to_string().contains("it may be stored"), "{e}");
        }
        let full = super::commit_failed(failure(13));
        assert!(!full.outcome_unknown() && full.is_unavailable(), "{full}");
    }

    /// Which of the next `n` groups wait, each waiting when it may and running out unless
    /// `kept`.
    fn waiting(patience: &mut Patience, n: usize, kept: impl Fn(usize) -> bool) -> Vec<bool> {
        (0..n)
            .map(|i| {
                patience.next_group();
                let waits = patience.waits();
                if waits {
                    patience.wait();
                    if kept(i) { patience.kept() } else { patience.ran_out() }
                }
                waits
            })
            .collect()
    }

    #[test]
    fn a_wait_that_runs_out_skips_groups_doubling_up_to_64() {
        let mut patience = Patience::default();
        let seen = waiting(&mut patience, 12, |_| false);
        // Waits, skips 1, waits, skips 2, waits, skips 4, waits.
        let expected = [true, false, true, false, false, true, false, false, false, false, true];
        assert_eq!(seen[..11], expected);
        patience.wait();
        for _ in 0..10 {
            patience.ran_out();
        }
        patience.next_group();
        let skipped = std::iter::from_fn(|| {
            let waits = patience.waits();
            patience.next_group();
            Some(waits)
        })
        .take_while(|waits| !waits)
        .count();
        assert_eq!(skipped, Patience::MAX_SKIP as usize);
    }

    #[test]
    fn a_kept_wait_starts_the_backoff_again() {
        let mut patience = Patience::default();
        // Runs out twice (skipping 1, then 2), then the third wait and those after are kept.
        let seen = waiting(&mut patience, 8, |i| i >= 5);
        assert_eq!(seen, [true, false, true, false, false, true, true, true]);
        patience.wait();
        patience.ran_out();
        let seen = waiting(&mut patience, 3, |_| true);
        assert_eq!(seen, [false, true, true], "one group skipped, not four");
    }

    #[test]
    fn only_a_group_that_waited_moves_the_backoff() {
        let mut patience = Patience::default();
        patience.next_group();
        patience.wait();
        patience.ran_out();
        // Groups that did not wait: one formed from queued requests, one whose first
        // request came long after the last commit.
        for _ in 0..3 {
            patience.next_group();
            patience.kept();
            patience.ran_out();
        }
        assert_eq!((patience.skip, patience.backoff), (0, 1), "neither cleared nor doubled");
        patience.next_group();
        assert!(patience.waits());
    }
}
