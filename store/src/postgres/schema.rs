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
];

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock (two-int key space: class, id) held while migrating.
const MIGRATION_LOCK: (i32, i32) = (super::LOCK_CLASS, 0);

fn fail(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend("migrating the PostgreSQL schema", e)
}

/// Brings the schema up to [`PG_SCHEMA_VERSION`] in one transaction.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1])
        .await
        .map_err(fail)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS pop_schema (version integer NOT NULL)")
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
        let version = (done + 1) as i32;
        tx.execute("UPDATE pop_schema SET version = $1", &[&version]).await.map_err(fail)?;
        tracing::info!(schema_version = version, "PostgreSQL event store schema migrated");
    }
    tx.commit().await.map_err(fail)
}
