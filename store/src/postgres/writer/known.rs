//! The one-round-trip group commit. When the writers already know the state of every stream
//! a group touches (this store committed it last, or the append says the stream must not
//! exist yet), they decide the group from that knowledge and send BEGIN, the locks, the
//! writes and the COMMIT in one pipeline. Under the locks, the write first checks that
//! knowledge against `pop_streams` and writes nothing if any of it is stale (another replica
//! wrote or deleted the stream); the group then commits an empty transaction and takes the
//! two-round-trip path, which reads before it decides. An event id already in the log fails
//! the insert on its unique index: that group too takes the two-round-trip path. A group in
//! which the knowledge refuses any append is not sent this way at all: the check proves the
//! streams, not that the refused append is not a re-send of one already committed, which
//! only the reads of event ids can tell.
//!
//! Why: on this 2-core VM one round trip through tokio-postgres costs ~120–190 µs of a
//! ~640 µs one-event commit, more than the server's whole work for it (BENCHMARKS.md,
//! "PostgreSQL appends: one round trip").
//!
//! The rules of the two-round-trip path hold: the locks are taken before the transaction
//! id exists (the write assigns it, after the lock statement), each append is judged by the
//! one append rule against the known state and its batch-mates, and the hash chain continues
//! from the known head, which the check compares with the stored one.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::types::ToSql;

use super::{
    Answers, Columns, Decided, GroupError, GroupRead, Request, Touched, chain_column, classify,
    event_params, lock_keys, stream_columns,
};
use crate::ExpectedVersion;
use crate::append_rule::StreamState;
use crate::digest::Hash;
use crate::{AppendResult, Position};

/// Streams remembered at most; past it the memory starts again empty (a miss only costs the
/// two-round-trip path once per stream).
const MAX_KNOWN: usize = 65_536;

/// The transaction id a group is decided with before the insert assigns the real one; no
/// transaction has id 0, so [`with_tx_id`] can tell the positions to fill in.
const UNKNOWN_TX: i64 = 0;

/// A stream as this store last committed it.
#[derive(Debug, Clone, Copy)]
struct Known {
    version: u64,
    head: Option<Hash>,
    /// That commit's time, in microseconds.
    at: i64,
}

/// What the writers of one store last committed to each stream.
#[derive(Default)]
pub(crate) struct KnownStreams(Mutex<HashMap<String, Known>>);

/// A group's read, predicted; and the knowledge the insert checks, one row per stream (the
/// names borrowed from the group's requests, the heads kept as hashes: nothing is copied
/// per stream but the read's own keys).
pub(super) struct Prediction<'g> {
    pub(super) read: GroupRead,
    names: Vec<&'g str>,
    versions: Vec<Option<i64>>,
    heads: Vec<Option<Hash>>,
}

impl Prediction<'_> {
    /// The heads as the statement's `bytea[]` column.
    fn head_column(&self) -> Vec<Option<&[u8]>> {
        self.heads.iter().map(|h| h.as_ref().map(|h| h.as_slice())).collect()
    }
}

impl KnownStreams {
    /// The group's read as this store knows it; `None` when a stream is unknown and its
    /// append does not say it must not exist.
    pub(super) fn predict<'g>(&self, group: &'g [Request]) -> Option<Prediction<'g>> {
        let known = self.0.lock().ok()?;
        let mut read = GroupRead {
            tx_id: UNKNOWN_TX,
            state: HashMap::with_capacity(group.len()),
            heads: HashMap::new(),
            latest: None,
            placed: HashMap::new(),
        };
        let (mut names, mut versions, mut heads) = (Vec::new(), Vec::new(), Vec::new());
        for request in group {
            if read.state.contains_key(&request.stream) {
                continue;
            }
            let stream = match (known.get(&request.stream), request.expected) {
                (Some(k), _) => Some(*k),
                (None, ExpectedVersion::NoStream) => None,
                (None, _) => return None,
            };
            let version = stream.map(|k| k.version);
            let head = stream.and_then(|k| k.head);
            read.state.insert(request.stream.clone(), StreamState { version, deleted: false });
            if let Some(head) = head {
                read.heads.insert(request.stream.clone(), head);
            }
            if let Some(k) = stream {
                read.latest = read.latest.max(Some(k.at));
            }
            names.push(request.stream.as_str());
            versions.push(version.and_then(|v| i64::try_from(v).ok()));
            heads.push(head);
        }
        Some(Prediction { read, names, versions, heads })
    }

    /// Remembers the streams a committed group wrote, at commit time `at`.
    pub(super) fn learn(&self, touched: &HashMap<&str, Touched>, at: i64) {
        let Ok(mut known) = self.0.lock() else { return };
        if known.len() + touched.len() > MAX_KNOWN {
            known.clear();
        }
        for (name, (version, _, head)) in touched {
            let Ok(version) = u64::try_from(*version) else { continue };
            let learnt = Known { version, head: *head, at };
            match known.get_mut(*name) {
                // Two writers may learn out of order: keep the later version.
                Some(entry) if version >= entry.version => *entry = learnt,
                Some(_) => {}
                // A name is copied only the first time (not on every commit).
                None => {
                    known.insert((*name).to_owned(), learnt);
                }
            }
        }
    }

    /// Forgets a stream (this store deleted it).
    pub(crate) fn forget(&self, stream: &str) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(stream);
        }
    }
}

/// The events and the streams' new versions and heads, in one statement, written only if
/// every stream is as predicted (all or nothing); answers the transaction id and the number of
/// events written. Its parts share one snapshot, taken after the lock statement before it.
pub(super) const GUARDED_WRITE: &str = "
    WITH stale AS MATERIALIZED (
        SELECT count(*) AS n
        FROM unnest($11::text[], $12::bigint[], $13::bytea[]) AS p(name, version, head)
        LEFT JOIN pop_streams s ON s.name = p.name
        WHERE CASE WHEN s.name IS NULL THEN p.version IS NOT NULL OR p.head IS NOT NULL
                   ELSE s.deleted_at IS NOT NULL OR s.version IS DISTINCT FROM p.version
                        OR s.head_hash IS DISTINCT FROM p.head END
    ), written AS (
        INSERT INTO pop_events (tx_id, seq, stream, version, event_id, event_type,
                                schema_version, data, metadata, recorded_at, chain)
        SELECT pg_current_xact_id()::text::bigint, t.seq, t.stream, t.version, t.event_id,
               t.event_type, t.schema_version, t.data, t.metadata, $1, t.chain
        FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::uuid[], $6::text[],
                    $7::bigint[], $8::bytea[], $9::bytea[], $10::bytea[])
             AS t(seq, stream, version, event_id, event_type, schema_version, data, metadata,
                  chain)
        WHERE (SELECT n FROM stale) = 0
        RETURNING tx_id
    ), streams AS (
        INSERT INTO pop_streams (name, version, last_tx, last_seq, head_hash)
        SELECT t.name, t.version, pg_current_xact_id()::text::bigint, t.last_seq, t.head_hash
        FROM unnest($14::text[], $15::bigint[], $16::bigint[], $17::bytea[])
             AS t(name, version, last_seq, head_hash)
        WHERE (SELECT n FROM stale) = 0
        ON CONFLICT (name) DO UPDATE
        SET version = EXCLUDED.version, last_tx = EXCLUDED.last_tx,
            last_seq = EXCLUDED.last_seq, head_hash = EXCLUDED.head_hash
    )
    SELECT min(tx_id), count(*) FROM written";

/// Sends the group decided from `predicted` in one pipeline. `Ok(Some(tx_id))`: committed;
/// `Ok(None)`: the prediction was stale and nothing was written (the transaction is over).
pub(super) async fn commit(
    shared: &super::Shared,
    tx: &deadpool_postgres::Client,
    group: &[Request],
    decided: &Decided<'_>,
    predicted: &Prediction<'_>,
    now: i64,
    [lock, write, notify]: [&tokio_postgres::Statement; 3],
) -> Result<Option<i64>, GroupError> {
    let keys = lock_keys(group);
    let c: &Columns<'_> = &decided.columns;
    let chains = chain_column(c);
    let (names, versions, last, heads) = stream_columns(&decided.touched);
    let known_heads = predicted.head_column();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&now];
    params.extend(event_params(c, &chains));
    let known: [&(dyn ToSql + Sync); 7] =
        [&predicted.names, &predicted.versions, &known_heads, &names, &versions, &last, &heads];
    params.extend(known);
    let notify_params: [&(dyn ToSql + Sync); 1] = [&super::CHANNEL];
    let begin = tx.batch_execute(super::BEGIN_GROUP);
    let lock_params: [&(dyn ToSql + Sync); 1] = [&keys];
    let locked = tx.query(lock, &lock_params);
    let written = tx.query_one(write, &params);
    let row = if let Some(hook) = &shared.before_commit {
        let (_, _, row) =
            futures::try_join!(begin, locked, written).map_err(classify("writing a group"))?;
        hook().await;
        tx.batch_execute("COMMIT").await.map_err(classify("committing a group"))?;
        super::announce(tx.execute(notify, &notify_params).await);
        row
    } else {
        let commit = tx.batch_execute("COMMIT");
        let written = futures::future::try_join4(begin, locked, written, commit);
        // Sent right behind the COMMIT, as a transaction of its own (see `announce`); a
        // notification after a stale prediction wrote nothing only costs a look at the head.
        let (written, notified) = futures::join!(written, tx.execute(notify, &notify_params));
        let (_, _, row, ()) = written.map_err(classify("writing a group"))?;
        super::announce(notified);
        row
    };
    let read = |e| GroupError::Fatal(crate::StoreError::backend("writing a group", e));
    let written: i64 = row.try_get(1).map_err(read)?;
    if written == 0 {
        return Ok(None);
    }
    if written != c.seq.len() as i64 {
        return Err(GroupError::Fatal(crate::StoreError::Corrupt(format!(
            "a group wrote {written} of its {} events",
            c.seq.len()
        ))));
    }
    let tx_id: Option<i64> = row.try_get(0).map_err(read)?;
    tx_id.map(Some).ok_or_else(|| {
        GroupError::Fatal(crate::StoreError::Corrupt(
            "a written group has no transaction id".into(),
        ))
    })
}

/// The answers of a group decided before its transaction id existed, with it filled in.
pub(super) fn with_tx_id(answers: Answers, tx_id: i64) -> Answers {
    let Ok(tx_id) = u64::try_from(tx_id) else { return answers };
    answers
        .into_iter()
        .map(|answer| {
            answer.map(|r| match r.position.commit() {
                0 => AppendResult {
                    version: r.version,
                    position: Position::new(tx_id, r.position.prepare()),
                },
                _ => r,
            })
        })
        .collect()
}
