//! Export and import ([`crate::transfer`]) on PostgreSQL. Export reads one read-only
//! repeatable-read snapshot, and only below the gap-free horizon (the readers' rule: nothing
//! can still commit there, so an export `--since` its predecessor's last position misses
//! nothing). Import takes its own connection, migrates the schema, locks the log's tables,
//! refuses a database with any row, and writes everything in one transaction (the events by
//! binary `COPY`) that commits only after the reader verified the whole file. The imported log
//! is that transaction's: positions (its id, 1, 2, 3…) in file order, events and pruned rows
//! alike.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use futures::{StreamExt, pin_mut};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::schema::PG_SCHEMA_VERSION;
use super::{PgOptions, pg_config};
use crate::commitment::LogEntry;
use crate::digest::Hash;
use crate::transfer::{
    Entry, ExportEvent, ExportReader, ExportSummary, Exporter, ImportSummary, Item, Manifest,
    Tombstone, TransferError,
};
use crate::{Position, StoreError};

fn fail(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

fn position(tx_id: i64, seq: i64) -> Position {
    match (u64::try_from(tx_id), u64::try_from(seq)) {
        (Ok(tx), Ok(seq)) => Position::new(tx, seq),
        _ => Position::START,
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn connect(url: &str) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
    // A whole-log read or write may take longer than the store's per-statement bound.
    let options = PgOptions {
        statement_timeout: Duration::ZERO,
        // An export writing to a slow pipe or an import reading one waits between statements.
        idle_transaction_timeout: Duration::ZERO,
        ..PgOptions::default()
    };
    let config = pg_config(url, &options)?;
    let (client, connection) =
        config.connect(NoTls).await.map_err(fail("connecting to PostgreSQL"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, driver))
}

const ENTRIES_SQL: &str = "
    WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x)
    SELECT tx_id, seq, stream, version, event_id, event_type, schema_version, data, metadata,
           recorded_at, chain, false AS pruned
      FROM pop_events WHERE (tx_id, seq) > ($1, $2) AND tx_id < (SELECT x FROM h)
    UNION ALL
    SELECT tx_id, seq, stream, version, NULL, NULL, NULL, NULL, NULL, NULL, chain, true
      FROM pop_pruned WHERE (tx_id, seq) > ($1, $2) AND tx_id < (SELECT x FROM h)
    ORDER BY tx_id, seq";

const COUNT_SQL: &str = "
    WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x),
    e AS (SELECT tx_id, seq, false AS pruned FROM pop_events
            WHERE (tx_id, seq) > ($1, $2) AND tx_id < (SELECT x FROM h)
          UNION ALL
          SELECT tx_id, seq, true FROM pop_pruned
            WHERE (tx_id, seq) > ($1, $2) AND tx_id < (SELECT x FROM h))
    SELECT count(*) FILTER (WHERE NOT pruned), count(*) FILTER (WHERE pruned),
           (SELECT ARRAY[tx_id, seq] FROM e ORDER BY tx_id, seq LIMIT 1),
           (SELECT ARRAY[tx_id, seq] FROM e ORDER BY tx_id DESC, seq DESC LIMIT 1)
    FROM e";

/// The log's last entry (event or a deleted stream's hash row), whatever the horizon.
const LAST_SQL: &str = "
    SELECT ARRAY[tx_id, seq] FROM (
        (SELECT tx_id, seq FROM pop_events ORDER BY tx_id DESC, seq DESC LIMIT 1)
        UNION ALL
        (SELECT tx_id, seq FROM pop_pruned ORDER BY tx_id DESC, seq DESC LIMIT 1)) e
    ORDER BY tx_id DESC, seq DESC LIMIT 1";

/// Exports the PostgreSQL store at `url`: the entries after `since` below the horizon, every
/// tombstone, and a checkpoint signed with `key`.
pub async fn export(
    url: &str,
    since: Position,
    key: &SigningKey,
    out: impl Write,
    now: DateTime<Utc>,
) -> Result<ExportSummary, TransferError> {
    export_trusting(url, since, key, None, None, out, now).await
}

/// [`export`], which also checks the store's signed checkpoints with `key`'s public half, and
/// that it still holds the `witness`ed one ([`crate::commitment::Trust`]): only a log that
/// verifies is signed.
pub async fn export_trusting(
    url: &str,
    since: Position,
    key: &SigningKey,
    witness: Option<crate::commitment::SignedCheckpoint>,
    max_unsealed_seconds: Option<u64>,
    out: impl Write,
    now: DateTime<Utc>,
) -> Result<ExportSummary, TransferError> {
    let read = fail("exporting the PostgreSQL store");
    let (mut client, driver) = connect(url).await?;
    let result = async {
        let tx = super::snapshot_transaction(&mut client).await.map_err(&read)?;
        let found: Option<i32> = tx
            .query_opt(
                "SELECT version FROM pop_schema WHERE to_regclass('pop_schema') IS NOT NULL",
                &[],
            )
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get(0).ok());
        if found != Some(PG_SCHEMA_VERSION as i32) {
            return Err(TransferError::Store(StoreError::Corrupt(format!(
                "the database's pop schema is {found:?}, this build exports version \
                 {PG_SCHEMA_VERSION}"
            ))));
        }
        // Signed only if its hash rows pass what `pop verify` checks of them beside the walk
        // (auditor21: export signed logs verify called tampered, and their import verified).
        let checked = super::verify::with_pruned_checked(&tx, Default::default()).await?;
        if let Some(found) = checked.first_break {
            return Err(TransferError::SourceBroken(found));
        }
        let (a, b) = (clamp(since.commit()), clamp(since.prepare()));
        if since != Position::START {
            let last: Option<Vec<i64>> = tx
                .query_opt(LAST_SQL, &[])
                .await
                .map_err(&read)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(&read)?;
            let last = last.and_then(|v| match v.as_slice() {
                [tx_id, seq] => Some((*tx_id, *seq)),
                _ => None,
            });
            if last.is_none_or(|last| (a, b) > last) {
                let end = last.map_or("the log is empty".to_string(), |(t, s)| {
                    format!("its last entry is at {}", position(t, s))
                });
                return Err(TransferError::Since(format!(
                    "{since} is beyond the end of the log ({end})"
                )));
            }
        }
        let row = tx.query_one(COUNT_SQL, &[&a, &b]).await.map_err(&read)?;
        let at = |i: usize| -> Result<Option<Position>, StoreError> {
            let v: Option<Vec<i64>> = row.try_get(i).map_err(&read)?;
            Ok(v.and_then(|v| match v.as_slice() {
                [tx_id, seq] => Some(position(*tx_id, *seq)),
                _ => None,
            }))
        };
        let (first, last) = (at(2)?, at(3)?);
        let events = u64::try_from(row.try_get::<_, i64>(0).map_err(&read)?).unwrap_or(0);
        let pruned = u64::try_from(row.try_get::<_, i64>(1).map_err(&read)?).unwrap_or(0);
        let mut tombstones = Vec::new();
        for r in tx
            .query(
                "SELECT name, version, deleted_at, head_hash FROM pop_streams \
                 WHERE deleted_at IS NOT NULL ORDER BY name",
                &[],
            )
            .await
            .map_err(&read)?
        {
            let version: Option<i64> = r.try_get(1).map_err(&read)?;
            let head: Option<Vec<u8>> = r.try_get(3).map_err(&read)?;
            tombstones.push(Tombstone {
                stream: r.try_get(0).map_err(&read)?,
                version: version.and_then(|v| u64::try_from(v).ok()),
                head: head.and_then(|h| Hash::try_from(h.as_slice()).ok()),
                deleted_at: r.try_get(2).map_err(&read)?,
            });
        }
        let manifest = Manifest::new(
            "postgres",
            since,
            events,
            pruned,
            tombstones.len() as u64,
            first,
            last,
            &key.verifying_key(),
        );
        let trust = crate::commitment::Trust { key: Some(key.verifying_key()), witness };
        let checkpoints = super::verify::checkpoints(&tx).await?;
        let mut exporter = Exporter::new(out, manifest.clone())?
            .checking(checkpoints, trust)
            .refusing_unsealed_over(max_unsealed_seconds);
        let params: [&(dyn ToSql + Sync); 2] = [&a, &b];
        let rows = tx.query_raw(ENTRIES_SQL, params).await.map_err(&read)?;
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r.map_err(&read)?;
            let pos = position(r.try_get(0).map_err(&read)?, r.try_get(1).map_err(&read)?);
            let stream: String = r.try_get(2).map_err(&read)?;
            let version = u64::try_from(r.try_get::<_, i64>(3).map_err(&read)?).unwrap_or(u64::MAX);
            let link: Option<&[u8]> = r.try_get(10).map_err(&read)?;
            let link = link.and_then(|l| Hash::try_from(l).ok());
            let entry = if r.try_get::<_, bool>(11).map_err(&read)? {
                Entry::Pruned(LogEntry { position: pos, stream, version, link })
            } else {
                let schema_version: i64 = r.try_get(6).map_err(&read)?;
                Entry::Event(ExportEvent {
                    position: pos,
                    stream,
                    version,
                    event_id: r.try_get(4).map_err(&read)?,
                    event_type: r.try_get(5).map_err(&read)?,
                    schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
                    data: r.try_get(7).map_err(&read)?,
                    metadata: r.try_get(8).map_err(&read)?,
                    recorded_at: r.try_get(9).map_err(&read)?,
                    chain: link,
                })
            };
            exporter.entry(&entry)?;
        }
        let checkpoint = exporter.finish(&tombstones, key, now)?;
        Ok(ExportSummary { manifest, checkpoint })
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// Imports a verified export into the PostgreSQL database at `url`, which must hold no pop
/// rows (its schema is created or migrated first). The file is read and verified on a blocking
/// thread while this task streams what it handed out into the transaction; nothing is
/// committed unless the whole file verified.
pub async fn import<R: BufRead + Send + 'static>(
    url: &str,
    reader: ExportReader<R>,
) -> Result<ImportSummary, TransferError> {
    let (mut client, driver) = connect(url).await?;
    // `Ok(None)`: the whole file verified (sent only then: the commit waits for it).
    let (batches, mut inbox) = tokio::sync::mpsc::channel::<Batch>(8);
    let read = tokio::task::spawn_blocking(move || {
        reader.read_to_writer(PARSERS, |batch| batches.blocking_send(batch).is_ok())
    });
    let written = import_on(&mut client, &mut inbox).await;
    drop(inbox);
    let summary = read.await.map_err(|_| TransferError::File("reading it failed".into()))?;
    drop(client);
    let _ = driver.await;
    written.map_err(TransferError::named_duplicate_id)?;
    summary.ok_or_else(|| TransferError::File("was not read to its end".into()))
}

type Batch = crate::transfer::ImportBatch;

/// Threads that parse the file's lines ([`ExportReader::read_parallel`]); the COPY's encoding
/// and the sequential checks share the cores with them.
const PARSERS: usize = 2;

/// The pruned hash rows to insert, as columns.
#[derive(Default)]
struct PrunedColumns {
    seq: Vec<i64>,
    stream: Vec<String>,
    version: Vec<i64>,
    chain: Vec<Option<Vec<u8>>>,
}

/// The stream rows to insert, as columns.
#[derive(Default)]
struct StreamColumns {
    name: Vec<String>,
    version: Vec<Option<i64>>,
    last_tx: Vec<Option<i64>>,
    last_seq: Vec<Option<i64>>,
}

async fn import_on(
    client: &mut Client,
    inbox: &mut tokio::sync::mpsc::Receiver<Batch>,
) -> Result<(), TransferError> {
    let write = fail("importing into PostgreSQL");
    // A store an import fills is empty (checked before): nothing unchained to chain.
    super::schema::migrate(client, false).await?;
    let tx = client.transaction().await.map_err(&write)?;
    tx.batch_execute(
        "LOCK TABLE pop_streams, pop_events, pop_pruned, pop_checkpoints IN EXCLUSIVE MODE",
    )
    .await
    .map_err(&write)?;
    let rows: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM pop_streams) + (SELECT count(*) FROM pop_events) + \
             (SELECT count(*) FROM pop_pruned) + (SELECT count(*) FROM pop_checkpoints)",
            &[],
        )
        .await
        .map_err(&write)?
        .try_get(0)
        .map_err(&write)?;
    if rows > 0 {
        return Err(TransferError::NotEmpty(format!("the database holds {rows} pop rows")));
    }
    let tx_id: i64 = tx
        .query_one("SELECT pg_current_xact_id()::text::bigint", &[])
        .await
        .map_err(&write)?
        .try_get(0)
        .map_err(&write)?;
    // Per stream: last version, last seq, head.
    let mut streams: HashMap<String, (Option<i64>, i64, Option<Hash>)> = HashMap::new();
    let mut pruned = PrunedColumns::default();
    let mut tombstones: Vec<Tombstone> = Vec::new();
    let mut seq: i64 = 0;
    {
        let sink = tx
            .copy_in(
                "COPY pop_events (tx_id, seq, stream, version, event_id, event_type, \
                 schema_version, data, metadata, recorded_at, chain) FROM STDIN BINARY",
            )
            .await
            .map_err(&write)?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT8,
                Type::INT8,
                Type::TEXT,
                Type::INT8,
                Type::UUID,
                Type::TEXT,
                Type::INT8,
                Type::BYTEA,
                Type::BYTEA,
                Type::INT8,
                Type::BYTEA,
            ],
        );
        pin_mut!(writer);
        let mut complete = false;
        while let Some(batch) = inbox.recv().await {
            let Some(batch) = batch? else {
                complete = true;
                break;
            };
            for item in batch {
                match item {
                    Item::Entry(Entry::Event(e)) => {
                        seq += 1;
                        let version = clamp(e.version);
                        let schema_version = i64::from(e.schema_version);
                        let chain: Option<&[u8]> = e.chain.as_ref().map(|c| c.as_slice());
                        writer
                            .as_mut()
                            .write(&[
                                &tx_id,
                                &seq,
                                &e.stream,
                                &version,
                                &e.event_id,
                                &e.event_type,
                                &schema_version,
                                &e.data,
                                &e.metadata,
                                &e.recorded_at,
                                &chain,
                            ])
                            .await
                            .map_err(&write)?;
                        streams.insert(e.stream, (Some(version), seq, e.chain));
                    }
                    Item::Entry(Entry::Pruned(p)) => {
                        seq += 1;
                        pruned.seq.push(seq);
                        pruned.stream.push(p.stream.clone());
                        pruned.version.push(clamp(p.version));
                        pruned.chain.push(p.link.map(|l| l.to_vec()));
                        streams.insert(p.stream, (Some(clamp(p.version)), seq, p.link));
                    }
                    Item::Tombstone(t) => tombstones.push(t),
                }
            }
        }
        if !complete {
            return Err(TransferError::File("was not read to its end".into()));
        }
        writer.finish().await.map_err(&write)?;
    }
    tx.execute(
        "INSERT INTO pop_pruned (tx_id, seq, stream, version, chain) \
         SELECT $1, t.seq, t.stream, t.version, t.chain \
         FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::bytea[]) AS t(seq, stream, version, chain)",
        &[&tx_id, &pruned.seq, &pruned.stream, &pruned.version, &pruned.chain],
    )
    .await
    .map_err(&write)?;
    let mut rows = StreamColumns::default();
    let mut heads: Vec<Option<Vec<u8>>> = Vec::new();
    let mut deleted: Vec<Option<i64>> = Vec::new();
    let dead: HashMap<&str, &Tombstone> =
        tombstones.iter().map(|t| (t.stream.as_str(), t)).collect();
    for (name, (version, last_seq, head)) in &streams {
        let t = dead.get(name.as_str());
        rows.name.push(name.clone());
        rows.version.push(t.map_or(*version, |t| t.version.map(clamp)));
        rows.last_tx.push(Some(tx_id));
        rows.last_seq.push(Some(*last_seq));
        heads.push(t.map_or(*head, |t| t.head).map(|h| h.to_vec()));
        deleted.push(t.map(|t| t.deleted_at));
    }
    for t in &tombstones {
        if !streams.contains_key(&t.stream) {
            rows.name.push(t.stream.clone());
            rows.version.push(t.version.map(clamp));
            rows.last_tx.push(None);
            rows.last_seq.push(None);
            heads.push(t.head.map(|h| h.to_vec()));
            deleted.push(Some(t.deleted_at));
        }
    }
    tx.execute(
        "INSERT INTO pop_streams (name, version, last_tx, last_seq, deleted_at, head_hash) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
         $6::bytea[])",
        &[&rows.name, &rows.version, &rows.last_tx, &rows.last_seq, &deleted, &heads],
    )
    .await
    .map_err(&write)?;
    tx.commit().await.map_err(&write)?;
    Ok(())
}
