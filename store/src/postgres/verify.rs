//! Verification of a PostgreSQL store ([`verify`]): reads the rows in a read-only
//! repeatable-read transaction (one snapshot, so it may run beside live writers: each group
//! writes its events and stream rows in one transaction) and feeds them to the one rule
//! ([`crate::verify::Walker`]) and to the walk over the signed checkpoints
//! ([`crate::commitment::LogWalker`]). The log head is the highest position any stream row
//! records (tombstones keep theirs).
//!
//! First one pass over the log in its global order feeds both walks (each stream's events
//! come in version order there when the log is intact); the rows' digests are computed on a
//! thread per core while the next rows are fetched. An intact log gives the same report in
//! any order, so that pass answers it. When it finds anything else (a break or an error), the
//! report comes from the reference walks, in the same snapshot: every event in (stream,
//! version) order then every stream row, and, on a second connection that joins the snapshot,
//! every entry in log order to the checkpoints' walk — so the break reported is the first by
//! (stream, version), then the checkpoints', exactly as a walk in that order finds it.

use std::time::Duration;

use futures::{StreamExt, pin_mut};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::schema::PG_SCHEMA_VERSION;
use super::{PgOptions, pg_config};
use crate::commitment::LogWalker;
use crate::digest::{DigestInput, Hash, data_hash, event_digest};
use crate::verify::{Break, CheckpointReport, EventRow, StreamRow, Verification, Walker};
use crate::{Position, StoreError};

/// Feeds the log walk one entry of a row laid out as `seal::ENTRIES_SQL` (tx_id, seq, stream,
/// version, link), the stream borrowed from the row as `seal::entry_from` reads it; whether the
/// walk goes on.
fn log_entry(log: &mut LogWalker, r: &Row) -> Result<bool, StoreError> {
    let version: i64 = r.try_get(3).map_err(fail)?;
    let link: Option<&[u8]> = r.try_get(4).map_err(fail)?;
    Ok(log.entry_parts(
        position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?),
        r.try_get(2).map_err(fail)?,
        u64::try_from(version).unwrap_or(u64::MAX),
        link.and_then(|l| Hash::try_from(l).ok()),
    ))
}

fn fail(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend("verifying the PostgreSQL log", e)
}

fn position(tx_id: i64, seq: i64) -> Position {
    match (u64::try_from(tx_id), u64::try_from(seq)) {
        (Ok(tx), Ok(seq)) => Position::new(tx, seq),
        // Out of order with any real event: the walker reports it.
        _ => Position::START,
    }
}

/// Verifies the store in the database at `url` (a URL as `pop serve --store` takes it). Opens
/// connections of its own, writes nothing, migrates nothing: a database whose schema is
/// not this build's is an error, not a break.
pub async fn verify(url: &str) -> Result<Verification, StoreError> {
    verify_with(url, None).await
}

/// [`verify`], and every signed checkpoint against `key` ([`crate::commitment`]; without a
/// key their signatures are not checked).
///
/// One pass in log order answers an intact log (see the module). Anything else is answered by
/// the reference walks in the same snapshot: two connections read it
/// (`pg_export_snapshot` / `SET TRANSACTION SNAPSHOT`) and run the two walks at once, each on
/// its own task: the walk in (stream, version) order on the first, the walk over the
/// checkpoints in log order on the second. The report is the one the walks give one after
/// the other: the per-stream walk's break first, and the checkpoints' report only when the
/// streams held.
pub async fn verify_with(
    url: &str,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    // A whole-log read may take longer than the store's per-statement bound: none here.
    let options = PgOptions { statement_timeout: Duration::ZERO, ..PgOptions::default() };
    let config = pg_config(url, &options)?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(fail)?;
    let connection = tokio::spawn(connection);
    let result = run(&mut client, &config, key).await;
    drop(client);
    let _ = connection.await;
    result
}

async fn run(
    client: &mut tokio_postgres::Client,
    config: &tokio_postgres::Config,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    let tx = super::snapshot_transaction(client).await.map_err(fail)?;
    let schema = tx
        .query_opt(
            "SELECT version FROM pop_schema WHERE to_regclass('pop_schema') IS NOT NULL",
            &[],
        )
        .await;
    let found: Option<i32> = match schema {
        Ok(row) => row.map(|r| r.try_get(0)).transpose().map_err(fail)?,
        Err(_) => None,
    };
    if found != Some(PG_SCHEMA_VERSION as i32) {
        return Err(StoreError::Corrupt(format!(
            "the database's pop schema is {} and this build verifies version {PG_SCHEMA_VERSION}; \
             start `pop serve` of this build on it once to migrate",
            found.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )));
    }
    // Every read here walks a whole table in an index's order: sorting it instead spills the
    // log to disk (work_mem) and costs several times the index scan. No JIT: the costs of a
    // whole-log read would turn it on, for ~0.2 s of compiling.
    tx.batch_execute("SET LOCAL enable_sort = off; SET LOCAL jit = off").await.map_err(fail)?;
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(fail)?;
    // A snapshot id is hex digits and dashes (`SET` takes no parameters).
    if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(StoreError::Corrupt(format!("an unexpected snapshot id {snapshot:?}")));
    }
    if let Ok(report) = one_pass(&tx, config, &snapshot, key).await
        && report.is_intact()
    {
        return Ok(report);
    }
    let (mut second, second_connection) = config.connect(NoTls).await.map_err(fail)?;
    let second_connection = tokio::spawn(second_connection);
    // The walk over the checkpoints, on the second connection in the same snapshot; `joined`
    // says when it took the snapshot (this transaction must stay open until then).
    let (joined, on_snapshot) = tokio::sync::oneshot::channel::<()>();
    let checkpoints = tokio::spawn(async move {
        let tx = join_snapshot(&mut second, &snapshot).await?;
        let _ = joined.send(());
        log_walk(&tx, key).await
    });
    // Until the second connection took the snapshot, this transaction is what keeps it.
    let _ = on_snapshot.await;
    let report = stream_walk(&tx).await;
    let log = checkpoints.await.map_err(|e| StoreError::backend("the checkpoint walk", e));
    let _ = second_connection.await;
    let report = report?;
    if !report.is_intact() {
        return Ok(report);
    }
    Ok(report.with_checkpoints(log??))
}

/// A read-only transaction on `client` in the exported `snapshot` (checked to be an id).
async fn join_snapshot<'c>(
    client: &'c mut tokio_postgres::Client,
    snapshot: &str,
) -> Result<tokio_postgres::Transaction<'c>, StoreError> {
    let tx = super::snapshot_transaction(client).await.map_err(fail)?;
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT '{snapshot}'; SET LOCAL enable_sort = off; SET LOCAL jit = off"
    ))
    .await
    .map_err(fail)?;
    Ok(tx)
}

/// Every stream row (in name order) and the log head they record.
async fn stream_rows(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<(Vec<StreamRow>, Position), StoreError> {
    let mut streams = Vec::new();
    let mut log_head = Position::START;
    for r in tx
        .query(
            "SELECT name, version, deleted_at IS NOT NULL, head_hash, last_tx, last_seq \
             FROM pop_streams ORDER BY name",
            &[],
        )
        .await
        .map_err(fail)?
    {
        let last: (Option<i64>, Option<i64>) =
            (r.try_get(4).map_err(fail)?, r.try_get(5).map_err(fail)?);
        if let (Some(tx_id), Some(seq)) = last {
            log_head = log_head.max(position(tx_id, seq));
        }
        streams.push(StreamRow {
            name: r.try_get(0).map_err(fail)?,
            version: r.try_get(1).map_err(fail)?,
            deleted: r.try_get(2).map_err(fail)?,
            head: r.try_get(3).map_err(fail)?,
        });
    }
    Ok((streams, log_head))
}

/// Every stream row, then every event in (stream, version) order, through the [`Walker`].
async fn stream_walk(tx: &tokio_postgres::Transaction<'_>) -> Result<Verification, StoreError> {
    let (streams, log_head) = stream_rows(tx).await?;
    let mut walker = Walker::new(Some(log_head));
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let rows = tx
        .query_raw(
            "SELECT tx_id, seq, stream, version, event_type, schema_version, data, metadata, \
             recorded_at, chain FROM pop_events ORDER BY stream, version",
            no_params,
        )
        .await
        .map_err(fail)?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        let r = r.map_err(fail)?;
        let schema_version: i64 = r.try_get(5).map_err(fail)?;
        let row = EventRow {
            stream: r.try_get(2).map_err(fail)?,
            version: r.try_get(3).map_err(fail)?,
            position: position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?),
            event_type: r.try_get(4).map_err(fail)?,
            // Out of range: recomputes to another digest, so the walker reports it.
            schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
            recorded_at: r.try_get(8).map_err(fail)?,
            metadata: r.try_get(7).map_err(fail)?,
            data: r.try_get(6).map_err(fail)?,
            chain: r.try_get(9).map_err(fail)?,
        };
        if !walker.event(&row) {
            break;
        }
    }
    Ok(walker.finish(&streams))
}

/// The entries of the log with a transaction id in `[$1, $2)` (or from `$1` on, in the last
/// chunk) in global order: the events with their columns, and the hash rows of deleted
/// streams (`pruned`, their event columns NULL). The bounds stay outside the `UNION ALL`:
/// the planner pushes them into both scans and still merges the two primary keys in order
/// (written inside each branch, it sorts instead).
fn log_chunk_sql(last: bool) -> String {
    let upper = if last { "" } else { " AND tx_id < $2" };
    format!(
        "SELECT tx_id, seq, stream, version, chain, event_type, schema_version, data, metadata,
                recorded_at, pruned FROM (
             SELECT tx_id, seq, stream, version, chain, event_type, schema_version, data,
                    metadata, recorded_at, false AS pruned
             FROM pop_events
             UNION ALL
             SELECT tx_id, seq, stream, version, chain, NULL, NULL, NULL, NULL, NULL, true
             FROM pop_pruned
         ) e WHERE tx_id >= $1{upper} ORDER BY tx_id, seq"
    )
}

/// Rows fetched per batch handed to a digest thread.
const BATCH: usize = 2048;

/// About how many entries one chunk of the log holds (one query of one reader).
const CHUNK_ENTRIES: f64 = 16_384.0;

/// The log cut into chunks by transaction id, in order: each `[from, to)` (`to` is `None` on
/// the last). Cut evenly over the ids in use, about [`CHUNK_ENTRIES`] each by the planner's
/// count of events (or one per id without one); at least one per reader, so they all work.
async fn chunks(
    tx: &tokio_postgres::Transaction<'_>,
    readers: usize,
) -> Result<Vec<(i64, Option<i64>)>, StoreError> {
    let r = tx
        .query_one(
            "SELECT least((SELECT min(tx_id) FROM pop_events), (SELECT min(tx_id) FROM pop_pruned)),
                    greatest((SELECT max(tx_id) FROM pop_events),
                             (SELECT max(tx_id) FROM pop_pruned)),
                    (SELECT reltuples::float8 FROM pg_class WHERE oid = 'pop_events'::regclass)",
            &[],
        )
        .await
        .map_err(fail)?;
    let (min, max): (Option<i64>, Option<i64>) =
        (r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?);
    let counted: Option<f64> = r.try_get(2).map_err(fail)?;
    let (Some(min), Some(max)) = (min, max) else { return Ok(vec![(i64::MIN, None)]) };
    let ids = i128::from(max) - i128::from(min) + 1;
    let entries = counted.filter(|n| *n > 0.0).unwrap_or(ids as f64);
    let n = ((entries / CHUNK_ENTRIES).ceil() as i128).clamp(readers as i128, 4096).min(ids);
    let mut cuts = vec![(i64::MIN, None)];
    for i in 1..n {
        let at = i64::try_from(i128::from(min) + ids * i / n).unwrap_or(max);
        if let Some(last) = cuts.last_mut() {
            last.1 = Some(at);
        }
        cuts.push((at, None));
    }
    Ok(cuts)
}

/// What a reader hands on: a batch of rows, or the end of its chunk.
enum Piece<T> {
    Rows(T),
    End,
}

/// Reads `mine` (chunks, in order) on `tx` and hands each in batches to `out`, each chunk
/// followed by its end. The rows handed on; stops early when `out` is closed (the walk
/// stopped).
async fn read_chunks(
    tx: &tokio_postgres::Transaction<'_>,
    mine: Vec<(i64, Option<i64>)>,
    out: tokio::sync::mpsc::Sender<Piece<Vec<Row>>>,
) -> Result<u64, StoreError> {
    let (bounded, last) = (log_chunk_sql(false), log_chunk_sql(true));
    let mut sent = 0u64;
    for (from, to) in mine {
        let rows = match to {
            Some(to) => {
                let bounds: [&(dyn ToSql + Sync); 2] = [&from, &to];
                tx.query_raw(bounded.as_str(), bounds).await
            }
            None => {
                let bound: [&(dyn ToSql + Sync); 1] = [&from];
                tx.query_raw(last.as_str(), bound).await
            }
        }
        .map_err(fail)?;
        pin_mut!(rows);
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(r) = rows.next().await {
            batch.push(r.map_err(fail)?);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if out.send(Piece::Rows(full)).await.is_err() {
                    return Ok(sent);
                }
                sent += BATCH as u64;
            }
        }
        let left = batch.len() as u64;
        if left > 0 {
            if out.send(Piece::Rows(batch)).await.is_err() {
                return Ok(sent);
            }
            sent += left;
        }
        if out.send(Piece::End).await.is_err() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

/// One event of a log row, borrowed from it (`None`: a deleted stream's hash row).
fn event_of(r: &Row) -> Result<Option<EventRow<'_>>, tokio_postgres::Error> {
    if r.try_get::<_, bool>(10)? {
        return Ok(None);
    }
    let schema_version: i64 = r.try_get(6)?;
    Ok(Some(EventRow {
        stream: r.try_get(2)?,
        version: r.try_get(3)?,
        position: position(r.try_get(0)?, r.try_get(1)?),
        event_type: r.try_get(5)?,
        // Out of range: recomputes to another digest, so the walker reports it.
        schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
        recorded_at: r.try_get(9)?,
        metadata: r.try_get(8)?,
        data: r.try_get(7)?,
        chain: r.try_get(4)?,
    }))
}

/// The digest of a log row's event, as [`crate::verify::step`] computes it for the version
/// the row says (`None`: not an event, or a version the walk rejects before any digest).
fn digest_of(r: &Row) -> Option<Hash> {
    let e = event_of(r).ok()??;
    let version = u64::try_from(e.version).ok()?;
    Some(event_digest(&DigestInput {
        stream: e.stream,
        version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        recorded_at_micros: e.recorded_at,
        metadata: e.metadata,
        data_hash: &data_hash(e.data),
    }))
}

/// Both walks over one read of the log in global order: every event to the [`Walker`]
/// (each stream's events in position order, which is version order in an intact log), every
/// entry to the [`LogWalker`]. For an intact log this is the report of the reference walks
/// (the same checks pass in either order, and what they count does not depend on it); for
/// anything else the caller asks the reference walks.
///
/// The log is read in chunks of transaction ids, in turn by one reader per core (`tx`, and
/// connections of their own that join its exported `snapshot`), so the server reads and sends
/// on each core; each reader's rows get their digests on a thread of its own and go on to the
/// one thread that walks, which takes the chunks in order.
async fn one_pass(
    tx: &tokio_postgres::Transaction<'_>,
    config: &tokio_postgres::Config,
    snapshot: &str,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let (streams, log_head) = stream_rows(tx).await?;
    let checkpoints = checkpoints(tx).await?;
    let chunks = chunks(tx, readers).await?;
    let mut clients = Vec::with_capacity(readers - 1);
    let mut connections = Vec::with_capacity(readers - 1);
    for _ in 1..readers {
        let (client, connection) = config.connect(NoTls).await.map_err(fail)?;
        clients.push(client);
        connections.push(tokio::spawn(connection));
    }
    let mut joined = Vec::with_capacity(readers - 1);
    for client in &mut clients {
        joined.push(join_snapshot(client, snapshot).await?);
    }
    let mut fetches = Vec::with_capacity(readers);
    let mut digested = Vec::with_capacity(readers);
    // Room for a whole chunk: the next reader reads its chunk while the walk takes this one.
    let room = (CHUNK_ENTRIES as usize).div_ceil(BATCH) + 2;
    for (k, reader) in std::iter::once(tx).chain(joined.iter()).enumerate() {
        let (send, mut rows) = tokio::sync::mpsc::channel::<Piece<Vec<Row>>>(room);
        let (done, recv) = std::sync::mpsc::sync_channel::<Piece<(Vec<Row>, Vec<Option<Hash>>)>>(4);
        digested.push(recv);
        tokio::task::spawn_blocking(move || {
            while let Some(piece) = rows.blocking_recv() {
                let piece = match piece {
                    Piece::Rows(batch) => {
                        let digests = batch.iter().map(digest_of).collect();
                        Piece::Rows((batch, digests))
                    }
                    Piece::End => Piece::End,
                };
                if done.send(piece).is_err() {
                    return;
                }
            }
        });
        let mine = chunks.iter().skip(k).step_by(readers).copied().collect();
        fetches.push(read_chunks(reader, mine, send));
    }
    let count = chunks.len();
    let walk = tokio::task::spawn_blocking(move || {
        let mut walker = Walker::new(Some(log_head));
        let mut log = LogWalker::new(checkpoints, key);
        let mut walked = 0u64;
        'chunks: for chunk in 0..count {
            let from = &digested[chunk % digested.len()];
            loop {
                let (batch, digests) = match from.recv() {
                    Ok(Piece::Rows(rows)) => rows,
                    Ok(Piece::End) => break,
                    // Its reader or digest thread ended early (`walked` tells).
                    Err(_) => break 'chunks,
                };
                walked += batch.len() as u64;
                for (r, digest) in batch.iter().zip(&digests) {
                    if let Some(e) = event_of(r).map_err(fail)?
                        && !walker.event_digested(&e, digest.as_ref())
                    {
                        break 'chunks;
                    }
                    if !log_entry(&mut log, r)? {
                        break 'chunks;
                    }
                }
            }
        }
        Ok::<_, StoreError>((walker.finish(&streams).with_checkpoints(log.finish()), walked))
    });
    let fetched = futures::future::join_all(fetches).await;
    let (report, walked) =
        walk.await.map_err(|e| StoreError::backend("the verifying walk", e))??;
    drop(joined);
    drop(clients);
    for connection in connections {
        let _ = connection.await;
    }
    let mut sent = 0;
    for f in fetched {
        sent += f?;
    }
    // Every row read was walked (a reader or digest thread that ended early would end the
    // walk early).
    if report.is_intact() && walked != sent {
        return Err(StoreError::Corrupt(format!(
            "the verifying walk saw {walked} of {sent} entries"
        )));
    }
    Ok(report)
}

/// The signed checkpoints, in order.
async fn checkpoints(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Vec<crate::commitment::SignedCheckpoint>, StoreError> {
    tx.query("SELECT seq, body, signature FROM pop_checkpoints ORDER BY seq", &[])
        .await
        .map_err(fail)?
        .iter()
        .map(super::seal::checkpoint_from)
        .collect()
}

/// The signed checkpoints and every entry in log order, through the [`LogWalker`].
async fn log_walk(
    tx: &tokio_postgres::Transaction<'_>,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<(CheckpointReport, Option<Break>), StoreError> {
    let mut log = LogWalker::new(checkpoints(tx).await?, key);
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let rows = tx.query_raw(super::seal::ENTRIES_SQL, no_params).await.map_err(fail)?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        let r = r.map_err(fail)?;
        if !log_entry(&mut log, &r)? {
            break;
        }
    }
    Ok(log.finish())
}
