//! The PostgreSQL schema as ordered migration steps, applied under an advisory lock so that
//! replicas starting together migrate once.

use tokio_postgres::Client;

use crate::StoreError;

/// Schema migrations, applied in order; `pop_schema.version` is the number applied. Never edit
/// a step that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: streams, the event log.
    "
    -- One row per stream that ever had an event, was deleted, or was named by an append.
    -- `version`: the version of the last event (NULL: none). `last_tx`/`last_seq`: the
    -- position of its last event, kept after a delete so the log head never moves back.
    -- `deleted_at` (microseconds since the epoch) marks a tombstone.
    CREATE TABLE pop_streams (
        name        text PRIMARY KEY,
        version     bigint,
        last_tx     bigint,
        last_seq    bigint,
        deleted_at  bigint
    );
    CREATE INDEX pop_streams_tombstones ON pop_streams (last_tx, last_seq)
        WHERE deleted_at IS NOT NULL;

    -- The global log, ordered by (tx_id, seq): the id of the transaction that wrote the event
    -- (pg_current_xact_id, assigned only after the writer holds its streams' locks) and the
    -- event's number within that transaction. Readers only return events whose transaction
    -- is below the oldest transaction still running, so no transaction can still commit below
    -- a position a reader has passed (see ARCHITECTURE.md, \"PostgreSQL\").
    CREATE TABLE pop_events (
        tx_id           bigint  NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        seq             bigint  NOT NULL,
        stream          text    NOT NULL,
        version         bigint  NOT NULL,
        event_id        uuid    NOT NULL,
        event_type      text    NOT NULL,
        schema_version  bigint  NOT NULL,
        data            bytea   NOT NULL,
        metadata        bytea   NOT NULL,
        recorded_at     bigint  NOT NULL,
        PRIMARY KEY (tx_id, seq)
    );
    -- Idempotent re-sends and the one-id-once rule.
    CREATE UNIQUE INDEX pop_events_by_id ON pop_events (event_id);
    -- Stream reads, and a second guard of the per-stream version rule.
    CREATE UNIQUE INDEX pop_events_by_stream ON pop_events (stream, version);
    ",
    // 2: tamper evidence (`crate::digest`). `pop_events.chain` is the stream's hash chain after
    // the event; `pop_streams.head_hash` the chain after the stream's last event, kept on the
    // tombstone when the stream is deleted. Events written before this step get theirs from
    // `backfill_chains`, in the same transaction.
    "
    ALTER TABLE pop_events ADD COLUMN chain bytea;
    ALTER TABLE pop_streams ADD COLUMN head_hash bytea;
    ",
    // 3: the global commitment (`crate::commitment`). `pop_pruned` keeps the hash row of every
    // event of a deleted stream (written by the delete, in its transaction), so the log hash
    // still recomputes after retention; `pop_checkpoints` holds the signed checkpoints, each
    // the exact JSON body and the Ed25519 signature over it.
    "
    CREATE TABLE pop_pruned (
        tx_id    bigint NOT NULL,
        seq      bigint NOT NULL,
        stream   text   NOT NULL,
        version  bigint NOT NULL,
        chain    bytea,
        PRIMARY KEY (tx_id, seq)
    );
    CREATE TABLE pop_checkpoints (
        seq        bigint PRIMARY KEY,
        body       bytea  NOT NULL,
        signature  bytea  NOT NULL
    );
    ",
];

/// The step after which existing events get their chains computed.
pub(crate) const CHAIN_STEP: usize = 2;

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The tables the migrations make: `pop verify` reports a store missing one as broken.
pub(crate) const TABLES: &[&str] =
    &["pop_schema", "pop_streams", "pop_events", "pop_pruned", "pop_checkpoints"];

/// The advisory lock (two-int key space: class, id) held while migrating.
const MIGRATION_LOCK: (i32, i32) = (super::LOCK_CLASS, 0);

fn fail(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend("migrating the PostgreSQL schema", e)
}

/// Brings the schema up to [`PG_SCHEMA_VERSION`] in one transaction.
/// Checks, without writing, that the database holds this build's schema (for a store opened
/// read-only).
pub(crate) async fn check(client: &Client) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pop_schema') IS NOT NULL", &[])
        .await
        .map_err(fail)?
        .try_get(0)
        .map_err(fail)?;
    if !exists {
        return Err(StoreError::Unusable(
            "this database holds no pop store (no pop_schema table): check the URL's database \
             name"
                .to_owned(),
        ));
    }
    let found: i32 = client
        .query_opt("SELECT version FROM pop_schema", &[])
        .await
        .map_err(fail)?
        .map_or(Ok(0), |row| row.try_get(0))
        .map_err(fail)?;
    let found = u32::try_from(found)
        .map_err(|_| StoreError::Corrupt(format!("schema version {found} is negative")))?;
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema { found, supported: PG_SCHEMA_VERSION });
    }
    if found < PG_SCHEMA_VERSION {
        return Err(StoreError::Unusable(format!(
            "the database's schema is version {found}, this pop reads version \
             {PG_SCHEMA_VERSION}: a server of this version migrates it when it starts"
        )));
    }
    Ok(())
}

pub(crate) async fn migrate(client: &mut Client, chain_unchained: bool) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1])
        .await
        .map_err(fail)?;
    // Without the server's NOTICE "relation already exists, skipping", which tokio-postgres
    // logs at INFO on every start of an existing store (ops3am3, newcomer12). Without the
    // sessions' idle-transaction bound: a migration that hashes a long stream's events here,
    // between statements, may sit idle longer (review-s44).
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         SET LOCAL idle_in_transaction_session_timeout = 0; \
         CREATE TABLE IF NOT EXISTS pop_schema (version integer NOT NULL)",
    )
    .await
    .map_err(fail)?;
    let found: i32 =
        match tx.query_opt("SELECT version FROM pop_schema", &[]).await.map_err(fail)? {
            Some(row) => row.try_get(0).map_err(fail)?,
            None => {
                tx.execute("INSERT INTO pop_schema (version) VALUES (0)", &[])
                    .await
                    .map_err(fail)?;
                0
            }
        };
    let found = u32::try_from(found)
        .map_err(|_| StoreError::Corrupt(format!("schema version {found} is negative")))?;
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema { found, supported: PG_SCHEMA_VERSION });
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(step).await.map_err(fail)?;
        if done + 1 == CHAIN_STEP {
            let events: i64 = tx
                .query_one("SELECT count(*) FROM pop_events", &[])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(fail)?;
            if events > 0 && !chain_unchained {
                return Err(crate::unchained_refused(found, events as u64));
            }
            backfill_chains(&tx).await?;
        }
        let version = (done + 1) as i32;
        tx.execute("UPDATE pop_schema SET version = $1", &[&version]).await.map_err(fail)?;
        // A new database's steps are its creation, not migrations (newcomer55 L5).
        if found > 0 {
            tracing::info!(schema_version = version, "PostgreSQL event store schema migrated");
        }
    }
    tx.commit().await.map_err(fail)?;
    if found == 0 {
        tracing::info!(schema_version = PG_SCHEMA_VERSION, "PostgreSQL event store created");
    }
    Ok(())
}

/// Computes the hash chain of every event written before the chain existed, stream by stream
/// in version order, and each live stream's head (the migration of databases from before step
/// 2; the migration lock keeps writers of this build out, and writers of the older build do
/// not know the columns). Deleted streams have no events left to chain.
async fn backfill_chains(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    use crate::digest::{DigestInput, GENESIS, chain, data_hash, event_digest};
    let streams = tx
        .query(
            "SELECT name FROM pop_streams WHERE version IS NOT NULL AND deleted_at IS NULL \
             ORDER BY name",
            &[],
        )
        .await
        .map_err(fail)?;
    let events = tx
        .prepare(
            "SELECT tx_id, seq, version, event_type, schema_version, data, metadata, recorded_at \
             FROM pop_events WHERE stream = $1 ORDER BY version",
        )
        .await
        .map_err(fail)?;
    let update = tx
        .prepare(
            "UPDATE pop_events AS e SET chain = t.chain \
             FROM unnest($1::bigint[], $2::bigint[], $3::bytea[]) AS t(tx_id, seq, chain) \
             WHERE e.tx_id = t.tx_id AND e.seq = t.seq",
        )
        .await
        .map_err(fail)?;
    let mut count = 0u64;
    for stream in &streams {
        let name: String = stream.try_get(0).map_err(fail)?;
        let rows = tx.query(&events, &[&name]).await.map_err(fail)?;
        let mut head = GENESIS;
        let (mut txs, mut seqs, mut links) = (Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            let version: i64 = r.try_get(2).map_err(fail)?;
            let event_type: &str = r.try_get(3).map_err(fail)?;
            let schema_version: i64 = r.try_get(4).map_err(fail)?;
            let data: &[u8] = r.try_get(5).map_err(fail)?;
            let metadata: &[u8] = r.try_get(6).map_err(fail)?;
            let recorded_at: i64 = r.try_get(7).map_err(fail)?;
            let hash = data_hash(data);
            let digest = event_digest(&DigestInput {
                stream: &name,
                version: u64::try_from(version).unwrap_or(u64::MAX),
                event_type,
                schema_version: u32::try_from(schema_version).unwrap_or(u32::MAX),
                recorded_at_micros: recorded_at,
                metadata,
                data_hash: &hash,
            });
            head = chain(&head, &digest);
            txs.push(r.try_get::<_, i64>(0).map_err(fail)?);
            seqs.push(r.try_get::<_, i64>(1).map_err(fail)?);
            links.push(head.to_vec());
        }
        count += links.len() as u64;
        tx.execute(&update, &[&txs, &seqs, &links]).await.map_err(fail)?;
        tx.execute(
            "UPDATE pop_streams SET head_hash = $2 WHERE name = $1",
            &[&name, &head.as_slice()],
        )
        .await
        .map_err(fail)?;
    }
    if count > 0 {
        tracing::info!(events = count, "hash chains computed for events written before them");
    }
    Ok(())
}
