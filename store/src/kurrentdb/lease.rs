//! Leader leases on KurrentDB, which has no locks: one lock stream per name
//! (`pop.lease-<name>`), written only with expected-revision appends.
//!
//! **Records.** Each event of the lock stream is a [`LeaseRecord`]: who holds the name, the
//! fencing token of the tenure, the lease duration, and whether it was released. A holder
//! *renews* by appending a record with the revision it last wrote as the expected revision,
//! so a renewal succeeds only if nobody wrote in between.
//!
//! **Acquiring.** A name is free when its stream is empty, its last record is a release or
//! one of this replica's own past tenures, or this replica has watched the *same* last
//! revision for a whole lease duration on its own monotonic clock. Acquiring appends with that revision expected: of several contenders,
//! exactly one append succeeds. No wall clocks are compared between replicas.
//!
//! **Fencing token.** The token of a tenure is the revision of the record that acquired it:
//! every new tenure has a larger one. The guard carries it
//! ([`LeaderGuard::fencing_token`]); [`KurrentLeadership::admits`] refuses any token but the
//! current tenure's.
//!
//! **Why it is safe.** A holder counts its lease from *before* it sent the renewal that
//! succeeded, and gives the lease up ([`LeaderGuard::lost`]) at
//! `duration - margin` after that, renewal or not. A contender counts from when it *first
//! saw* that renewal's revision, which is after the renewal was written, and takes over only
//! `duration` later. So the holder has stopped before anyone else starts, as long as the two
//! clocks' rates differ by less than `margin / duration` (20 %; real clocks drift by parts
//! per million). A holder that was paused (GC, swap, a stopped VM) past that point does not
//! know it: its next renewal is refused (the revision moved) and its token no longer admits
//! it. Pop's writes stay safe even then, because every command is an expected-version append
//! (a stale leader's command conflicts instead of overwriting); the lease keeps two replicas
//! from doing the same timed work at once, and the loop that runs every timed process
//! (`pop_reapers::process`) checks the token through [`Leadership::admits`] before each cycle,
//! so a holder that was paused past its lease starts no cycle once another replica took over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kurrentdb::{AppendToStreamOptions, EventData, StreamState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::codec::{LEASE_TYPE, Names, map_error};
use super::read::last_event;
use super::{Inner, KurrentStore};
use crate::{LeaderGuard, Leadership, StoreError};

/// Default lease duration. Short enough that a dead leader's timed work resumes elsewhere
/// within seconds (the scheduler and reapers run every 10–30 s), long enough that a renewal
/// (every third of it) survives a slow request or two.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Most lease names a replica keeps observations for: pop leads a handful of names (the
/// scheduler, each reaper); this only bounds a misuse.
const MAX_NAMES: usize = 1024;

/// How a replica takes and keeps leases.
#[derive(Debug, Clone, Copy)]
pub struct LeaseOptions {
    /// How long a lease lasts without a renewal.
    pub duration: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions { duration: DEFAULT_LEASE }
    }
}

impl LeaseOptions {
    /// How often the holder renews.
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How long before the lease's end the holder gives it up (see the module doc).
    fn margin(&self) -> Duration {
        self.duration / 5
    }
}

/// One event of a lock stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The replica (one id per process).
    pub holder: Uuid,
    /// The tenure's fencing token: the revision of the record that acquired it.
    pub token: u64,
    /// The lease duration the holder renews within, in milliseconds.
    pub duration_ms: u64,
    /// The holder gave the name up.
    pub released: bool,
}

/// What leases need of a log: the last record of a stream, and a conditional append.
#[async_trait]
pub trait LockLog: Send + Sync + 'static {
    /// The stream's last revision and record (`None`: no record yet).
    async fn last(&self, stream: &str) -> Result<Option<(u64, LeaseRecord)>, StoreError>;

    /// Appends `record` if the stream's last revision is `expected` (`None`: no stream).
    /// `Ok(Some(revision))` of the new record, `Ok(None)` when the stream has moved.
    async fn append(
        &self,
        stream: &str,
        expected: Option<u64>,
        record: &LeaseRecord,
    ) -> Result<Option<u64>, StoreError>;
}

#[async_trait]
impl LockLog for Arc<Inner> {
    async fn last(&self, stream: &str) -> Result<Option<(u64, LeaseRecord)>, StoreError> {
        let Some(event) = last_event(self, stream).await? else {
            return Ok(None);
        };
        let revision = event.revision;
        let record = serde_json::from_slice(&event.data).map_err(|e| {
            StoreError::Corrupt(format!("lease record {revision} of {stream:?}: {e}"))
        })?;
        Ok(Some((revision, record)))
    }

    async fn append(
        &self,
        stream: &str,
        expected: Option<u64>,
        record: &LeaseRecord,
    ) -> Result<Option<u64>, StoreError> {
        let state = expected.map_or(StreamState::NoStream, StreamState::StreamRevision);
        let data = serde_json::to_vec(record)
            .map_err(|e| StoreError::backend("encoding a lease record", e))?;
        let event = EventData::binary(LEASE_TYPE, data.into());
        let options = AppendToStreamOptions::default().stream_state(state);
        match self.client.append_to_stream(stream, &options, event).await {
            Ok(written) => Ok(Some(written.next_expected_version)),
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => Ok(None),
            Err(e) => Err(map_error("writing a lease", stream, e)),
        }
    }
}

/// What a replica saw of a name it does not hold.
#[derive(Debug, Clone, Copy)]
struct Seen {
    revision: u64,
    since: Instant,
}

/// Leader leases among all replicas sharing one KurrentDB.
pub struct KurrentLeadership {
    log: Arc<dyn LockLog>,
    names: Names,
    holder: Uuid,
    options: LeaseOptions,
    seen: Mutex<HashMap<String, Seen>>,
    /// Names this replica holds now (a second `try_lead` for one of them gets `None`).
    held: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for KurrentLeadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentLeadership").field("holder", &self.holder).finish_non_exhaustive()
    }
}

impl KurrentLeadership {
    /// Leases on the server `store` is connected to.
    pub fn new(store: &KurrentStore, options: LeaseOptions) -> KurrentLeadership {
        let inner = Arc::clone(store.inner());
        let names = inner.names.clone();
        KurrentLeadership { names, ..KurrentLeadership::on(Arc::new(inner), options) }
    }

    /// Leases on any [`LockLog`] (tests use an in-memory one).
    pub fn on(log: Arc<dyn LockLog>, options: LeaseOptions) -> KurrentLeadership {
        KurrentLeadership {
            log,
            names: Names::default(),
            holder: Uuid::new_v4(),
            options,
            seen: Mutex::new(HashMap::new()),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether `token` is the fencing token of `name`'s current tenure (not released). A
    /// command of a timed process checks its guard's token here before acting; a stale
    /// holder's token is refused.
    pub async fn admits(&self, name: &str, token: u64) -> Result<bool, StoreError> {
        Ok(match self.log.last(&self.names.lease_stream(name)).await? {
            Some((_, record)) => record.token == token && !record.released,
            None => false,
        })
    }

    /// Whether the name is free to take now, and the revision to expect when taking it.
    fn free(&self, name: &str, last: Option<(u64, &LeaseRecord)>) -> Option<Option<u64>> {
        let Some((revision, record)) = last else {
            return Some(None);
        };
        // Released, or left by an earlier tenure of this very replica (its release record
        // was never written: the append failed, or the runtime stopped first). This replica
        // holds nothing under the name now (`try_lead` checked), so nobody does.
        if record.released || record.holder == self.holder {
            return Some(Some(revision));
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().ok()?;
        if seen.len() >= MAX_NAMES && !seen.contains_key(name) {
            seen.clear();
        }
        let entry = seen.entry(name.to_owned()).or_insert(Seen { revision, since: now });
        if entry.revision != revision {
            *entry = Seen { revision, since: now };
        }
        let duration = Duration::from_millis(record.duration_ms);
        (now.duration_since(entry.since) >= duration).then_some(Some(revision))
    }
}

/// What a guard holds: dropping it stops the renewals and releases the name.
struct Tenure {
    renew: tokio::task::JoinHandle<()>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Tenure {
    fn drop(&mut self) {
        // The renewal task writes the release record and ends; if it has ended already
        // (the lease was lost), there is nothing to release.
        let told = self.release.take().is_some_and(|release| release.send(()).is_ok());
        if !told {
            self.renew.abort();
        }
    }
}

#[async_trait]
impl Leadership for KurrentLeadership {
    async fn admits(&self, name: &str, token: u64) -> Result<bool, StoreError> {
        KurrentLeadership::admits(self, name, token).await
    }

    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>, StoreError> {
        if self.held.lock().map_err(|_| StoreError::Closed)?.contains_key(name) {
            return Ok(None);
        }
        let stream = self.names.lease_stream(name);
        let last = self.log.last(&stream).await?;
        let Some(expected) = self.free(name, last.as_ref().map(|(r, rec)| (*r, rec))) else {
            return Ok(None);
        };
        let token = expected.map_or(0, |r| r + 1);
        let record = LeaseRecord {
            holder: self.holder,
            token,
            duration_ms: u64::try_from(self.options.duration.as_millis()).unwrap_or(u64::MAX),
            released: false,
        };
        // The lease counts from before the request that took it.
        let sent = Instant::now();
        let Some(revision) = self.log.append(&stream, expected, &record).await? else {
            return Ok(None);
        };
        {
            let mut held = self.held.lock().map_err(|_| StoreError::Closed)?;
            if held.contains_key(name) {
                // Another task of this replica took it in the meantime: cannot happen through
                // the conditional append, but never hand one name out twice.
                return Ok(None);
            }
            held.insert(name.to_owned(), token);
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        let renew = tokio::spawn(keep(
            Arc::clone(&self.log),
            stream,
            name.to_owned(),
            Arc::clone(&self.held),
            self.options,
            record,
            revision,
            sent,
            lost_tx,
            release_rx,
        ));
        tracing::debug!(name, token, "lease taken");
        let tenure = Tenure { renew, release: Some(release_tx) };
        Ok(Some(LeaderGuard::new(name, lost_rx, Box::new(tenure)).with_fencing_token(token)))
    }
}

/// The holder's side of a tenure: renews until released or lost.
#[allow(clippy::too_many_arguments)]
async fn keep(
    log: Arc<dyn LockLog>,
    stream: String,
    name: String,
    held: Arc<Mutex<HashMap<String, u64>>>,
    options: LeaseOptions,
    record: LeaseRecord,
    mut revision: u64,
    mut confirmed: Instant,
    lost: watch::Sender<bool>,
    mut release: tokio::sync::oneshot::Receiver<()>,
) {
    let forget = |held: &Mutex<HashMap<String, u64>>| {
        if let Ok(mut held) = held.lock() {
            held.remove(&name);
        }
    };
    loop {
        let deadline = confirmed + options.duration - options.margin();
        let next = (Instant::now() + options.renew_every()).min(deadline);
        tokio::select! {
            _ = &mut release => {
                let _ = log.append(&stream, Some(revision), &LeaseRecord { released: true, ..record.clone() }).await;
                forget(&held);
                return;
            }
            () = tokio::time::sleep_until(next) => {}
        }
        if Instant::now() >= deadline {
            tracing::warn!(name, "lease not renewed in time; giving it up");
            break;
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(deadline, log.append(&stream, Some(revision), &record)).await
        {
            Ok(Ok(Some(r))) => {
                revision = r;
                confirmed = sent;
            }
            Ok(Ok(None)) => {
                tracing::warn!(name, "lease taken over by another replica");
                break;
            }
            // Not confirmed: try again until the deadline.
            Ok(Err(error)) => tracing::warn!(name, %error, "renewing a lease failed"),
            Err(_) => {}
        }
    }
    forget(&held);
    let _ = lost.send(true);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// An in-memory lock log, shared by the "replicas" of a test.
    #[derive(Default)]
    struct Memory {
        streams: Mutex<HashMap<String, Vec<LeaseRecord>>>,
    }

    #[async_trait]
    impl LockLog for Memory {
        async fn last(&self, stream: &str) -> Result<Option<(u64, LeaseRecord)>, StoreError> {
            let streams = self.streams.lock().map_err(|_| StoreError::Closed)?;
            Ok(streams
                .get(stream)
                .and_then(|records| records.last().map(|r| (records.len() as u64 - 1, r.clone()))))
        }

        async fn append(
            &self,
            stream: &str,
            expected: Option<u64>,
            record: &LeaseRecord,
        ) -> Result<Option<u64>, StoreError> {
            let mut streams = self.streams.lock().map_err(|_| StoreError::Closed)?;
            let records = streams.entry(stream.to_owned()).or_default();
            if records.len().checked_sub(1).map(|v| v as u64) != expected {
                return Ok(None);
            }
            records.push(record.clone());
            Ok(Some(records.len() as u64 - 1))
        }
    }

    /// One replica's view of the log; `cut` makes its requests fail (a partition, a pause).
    struct Replica {
        log: Arc<Memory>,
        cut: AtomicBool,
    }

    #[async_trait]
    impl LockLog for Replica {
        async fn last(&self, stream: &str) -> Result<Option<(u64, LeaseRecord)>, StoreError> {
            if self.cut.load(Ordering::SeqCst) {
                return Err(StoreError::Closed);
            }
            self.log.last(stream).await
        }

        async fn append(
            &self,
            stream: &str,
            expected: Option<u64>,
            record: &LeaseRecord,
        ) -> Result<Option<u64>, StoreError> {
            if self.cut.load(Ordering::SeqCst) {
                return Err(StoreError::Closed);
            }
            self.log.append(stream, expected, record).await
        }
    }

    const LEASE: Duration = Duration::from_secs(10);

    fn replica(log: &Arc<Memory>) -> (Arc<Replica>, KurrentLeadership) {
        let view = Arc::new(Replica { log: Arc::clone(log), cut: AtomicBool::new(false) });
        let leadership = KurrentLeadership::on(view.clone(), LeaseOptions { duration: LEASE });
        (view, leadership)
    }

    async fn lead(l: &KurrentLeadership) -> Option<LeaderGuard> {
        l.try_lead("scheduler").await.expect("the log answers")
    }

    #[tokio::test(start_paused = true)]
    async fn one_holder_while_it_renews() {
        let log = Arc::new(Memory::default());
        let (_, a) = replica(&log);
        let (_, b) = replica(&log);
        let guard = lead(&a).await.expect("a free name is taken");
        assert_eq!(guard.fencing_token(), Some(0));
        assert!(lead(&a).await.is_none(), "one replica does not lead a name twice");
        for _ in 0..12 {
            tokio::time::sleep(LEASE / 2).await;
            assert!(lead(&b).await.is_none(), "taken over while renewed");
            assert!(guard.is_held());
        }
        assert!(a.admits("scheduler", 0).await.expect("asks"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_name_is_taken_at_once_with_a_new_token() {
        let log = Arc::new(Memory::default());
        let (_, a) = replica(&log);
        let (_, b) = replica(&log);
        let first = lead(&a).await.expect("taken");
        drop(first);
        // Let the renewal task write the release.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = lead(&b).await.expect("a released name is free");
        assert!(second.fencing_token() > Some(0), "a new tenure has a larger token");
        assert!(!b.admits("scheduler", 0).await.expect("asks"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_holders_token_is_refused_and_it_stops_before_the_takeover() {
        let log = Arc::new(Memory::default());
        let (a_view, a) = replica(&log);
        let (_, b) = replica(&log);
        let mut a_guard = lead(&a).await.expect("taken");
        let a_token = a_guard.fencing_token().expect("a token");

        // A is cut off (paused, partitioned): it can no longer renew.
        a_view.cut.store(true, Ordering::SeqCst);
        let cut_at = Instant::now();
        let a_lost = tokio::spawn(async move {
            a_guard.lost().await;
            Instant::now()
        });

        // B keeps asking, as the led loop does every 2 s, until it leads.
        let (b_guard, b_took) = loop {
            if let Some(g) = lead(&b).await {
                break (g, Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let a_lost = a_lost.await.expect("the watcher ran");
        assert!(a_lost < b_took, "A must give up ({a_lost:?}) before B takes over ({b_took:?})");
        assert!(b_took.duration_since(cut_at) >= LEASE, "B waited a whole lease");

        // Fencing: the stale token is refused, the new one admitted.
        let b_token = b_guard.fencing_token().expect("a token");
        assert!(b_token > a_token);
        assert!(!b.admits("scheduler", a_token).await.expect("asks"), "stale token admitted");
        assert!(b.admits("scheduler", b_token).await.expect("asks"));

        // A comes back: its renewal (expecting the revision it last wrote) is refused.
        a_view.cut.store(false, Ordering::SeqCst);
        let stale = LeaseRecord {
            holder: Uuid::new_v4(),
            token: a_token,
            duration_ms: 10_000,
            released: false,
        };
        let stream = Names::default().lease_stream("scheduler");
        assert_eq!(a_view.append(&stream, Some(a_token), &stale).await.expect("asks"), None);
        assert!(lead(&a).await.is_none(), "A cannot take it back while B renews");
    }

    #[tokio::test(start_paused = true)]
    async fn contenders_race_and_exactly_one_wins() {
        let log = Arc::new(Memory::default());
        let replicas: Vec<_> = (0..8).map(|_| replica(&log).1).collect();
        let mut tasks = Vec::new();
        for r in replicas {
            tasks.push(tokio::spawn(async move { lead(&r).await.map(|g| (r, g)) }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(w) = t.await.expect("ran") {
                winners.push(w);
            }
        }
        assert_eq!(winners.len(), 1);
    }
}
