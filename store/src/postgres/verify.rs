//! Verification of a PostgreSQL store ([`verify`]): reads the rows in read-only
//! repeatable-read transactions on two connections sharing one snapshot (exported by the
//! first, so it may run beside live writers: each group writes its events and stream rows in
//! one transaction) and feeds them to the one rule ([`crate::verify::Walker`]): every event in
//! (stream, version) order, then every stream row; at the same time, on the second connection,
//! every entry in log order to the walk over the signed checkpoints
//! ([`crate::commitment::LogWalker`]). The log head is the highest position any stream row
//! records (tombstones keep theirs).

use std::time::Duration;

use futures::{StreamExt, pin_mut};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::schema::PG_SCHEMA_VERSION;
use super::{PgOptions, pg_config};
use crate::commitment::LogWalker;
use crate::verify::{Break, CheckpointReport, EventRow, StreamRow, Verification, Walker};
use crate::{Position, StoreError};

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
/// one connection of its own, writes nothing, migrates nothing: a database whose schema is
/// not this build's is an error, not a break.
pub async fn verify(url: &str) -> Result<Verification, StoreError> {
    verify_with(url, None).await
}

/// [`verify`], and every signed checkpoint against `key` ([`crate::commitment`]; without a
/// key their signatures are not checked).
///
/// Two connections read one snapshot (`pg_export_snapshot` / `SET TRANSACTION SNAPSHOT`) and
/// run the two walks at once, each on its own task: the walk in (stream, version) order on
/// the first, the walk over the checkpoints in log order on the second. The report is the
/// one the walks give one after the other: the per-stream walk's break first, and the
/// checkpoints' report only when the streams held.
pub async fn verify_with(
    url: &str,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    // A whole-log read may take longer than the store's per-statement bound: none here.
    let options = PgOptions { statement_timeout: Duration::ZERO, ..PgOptions::default() };
    let config = pg_config(url, &options)?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(fail)?;
    let connection = tokio::spawn(connection);
    let (second, second_connection) = config.connect(NoTls).await.map_err(fail)?;
    let second_connection = tokio::spawn(second_connection);
    let result = run(&mut client, second, key).await;
    drop(client);
    let _ = connection.await;
    let _ = second_connection.await;
    result
}

async fn run(
    client: &mut tokio_postgres::Client,
    mut second: tokio_postgres::Client,
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
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(fail)?;
    // The walk over the checkpoints, on the second connection in the same snapshot; `joined`
    // says when it took the snapshot (this transaction must stay open until then).
    let (joined, on_snapshot) = tokio::sync::oneshot::channel::<()>();
    let checkpoints = tokio::spawn(async move {
        let tx = super::snapshot_transaction(&mut second).await.map_err(fail)?;
        // A snapshot id is hex digits and dashes (`SET` takes no parameters).
        if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(StoreError::Corrupt(format!("an unexpected snapshot id {snapshot:?}")));
        }
        tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'")).await.map_err(fail)?;
        let _ = joined.send(());
        log_walk(&tx, key).await
    });
    // Until the second connection took the snapshot, this transaction is what keeps it.
    let _ = on_snapshot.await;
    let report = stream_walk(&tx).await;
    let log = checkpoints.await.map_err(|e| StoreError::backend("the checkpoint walk", e));
    let report = report?;
    if !report.is_intact() {
        return Ok(report);
    }
    Ok(report.with_checkpoints(log??))
}

/// Every stream row, then every event in (stream, version) order, through the [`Walker`].
async fn stream_walk(tx: &tokio_postgres::Transaction<'_>) -> Result<Verification, StoreError> {
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

/// The signed checkpoints and every entry in log order, through the [`LogWalker`].
async fn log_walk(
    tx: &tokio_postgres::Transaction<'_>,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<(CheckpointReport, Option<Break>), StoreError> {
    let checkpoints = tx
        .query("SELECT seq, body, signature FROM pop_checkpoints ORDER BY seq", &[])
        .await
        .map_err(fail)?
        .iter()
        .map(super::seal::checkpoint_from)
        .collect::<Result<Vec<_>, _>>()?;
    let mut log = LogWalker::new(checkpoints, key);
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let rows = tx.query_raw(super::seal::ENTRIES_SQL, no_params).await.map_err(fail)?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        // As `seal::entry_from` reads an entry, the stream borrowed from the row.
        let r = r.map_err(fail)?;
        let version: i64 = r.try_get(3).map_err(fail)?;
        let link: Option<&[u8]> = r.try_get(4).map_err(fail)?;
        if !log.entry_parts(
            position(r.try_get(0).map_err(fail)?, r.try_get(1).map_err(fail)?),
            r.try_get(2).map_err(fail)?,
            u64::try_from(version).unwrap_or(u64::MAX),
            link.and_then(|l| crate::digest::Hash::try_from(l).ok()),
        ) {
            break;
        }
    }
    Ok(log.finish())
}
