//! Verification of a PostgreSQL store ([`verify`]): reads the rows in one read-only
//! repeatable-read transaction (one snapshot, so it may run beside live writers: each group
//! writes its events and stream rows in one transaction) and feeds them to the one rule
//! ([`crate::verify::Walker`]): every event in (stream, version) order, then every stream row.
//! The log head is the highest position any stream row records (tombstones keep theirs).

use std::time::Duration;

use futures::{StreamExt, pin_mut};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::schema::PG_SCHEMA_VERSION;
use super::{PgOptions, pg_config};
use crate::commitment::LogWalker;
use crate::verify::{EventRow, StreamRow, Verification, Walker};
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
pub async fn verify_with(
    url: &str,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    // A whole-log read may take longer than the store's per-statement bound: none here.
    let options = PgOptions { statement_timeout: Duration::ZERO, ..PgOptions::default() };
    let config = pg_config(url, &options)?;
    let (mut client, connection) = config.connect(NoTls).await.map_err(fail)?;
    let connection = tokio::spawn(connection);
    let result = run(&mut client, key).await;
    drop(client);
    let _ = connection.await;
    result
}

async fn run(
    client: &mut tokio_postgres::Client,
    key: Option<crate::commitment::CheckpointKey>,
) -> Result<Verification, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(fail)?;
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
    let report = walker.finish(&streams);
    if !report.is_intact() {
        return Ok(report);
    }
    let checkpoints = tx
        .query("SELECT seq, body, signature FROM pop_checkpoints ORDER BY seq", &[])
        .await
        .map_err(fail)?
        .iter()
        .map(super::seal::checkpoint_from)
        .collect::<Result<Vec<_>, _>>()?;
    let mut log = LogWalker::new(checkpoints, key);
    let rows = tx.query_raw(super::seal::ENTRIES_SQL, no_params).await.map_err(fail)?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        if !log.entry(super::seal::entry_from(&r.map_err(fail)?)?) {
            break;
        }
    }
    Ok(report.with_checkpoints(log.finish()))
}
