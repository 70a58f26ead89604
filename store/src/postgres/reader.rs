//! Reads: the global log (gap-safe), streams, and the log head, each one statement on a
//! pooled connection; and the log as one binary `COPY` parsed in place, for the read-ahead.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Pool;
use futures::{StreamExt, pin_mut};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::copy::{self, CopyParser, Fields};
use super::{PG_SETTLE_WAIT, pool_error};
use crate::limits::MAX_READ_BATCH_BYTES;
use crate::{Direction, Position, RecordedEvent, StoreError};

/// The gap-free horizon: every transaction below it has ended, and every transaction that
/// may still commit (or has not started) is at or above it. One value per statement.
const HORIZON: &str = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)";

/// The longest pause between two looks at a horizon held back by an open transaction.
const SETTLE_STEP_MAX: Duration = Duration::from_millis(20);

fn read_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("stored {what} {value} is negative")))
}

pub(crate) fn position(tx_id: i64, seq: i64) -> Result<Position, StoreError> {
    Ok(Position::new(unsigned(tx_id, "transaction id")?, unsigned(seq, "sequence")?))
}

/// Shares stream and type names between the events of one read.
#[derive(Default)]
struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(name.to_owned(), Arc::clone(&shared));
        shared
    }
}

/// Columns from `first`: tx_id, seq, stream, version, event_id, event_type, schema_version,
/// data, metadata, recorded_at.
fn event_from_row(row: &Row, first: usize, names: &mut Names) -> Result<RecordedEvent, StoreError> {
    let read = read_error("reading an event row");
    let stream: &str = row.try_get(first + 2).map_err(&read)?;
    let event_type: &str = row.try_get(first + 5).map_err(&read)?;
    let schema_version: i64 = row.try_get(first + 6).map_err(&read)?;
    let recorded_at: i64 = row.try_get(first + 9).map_err(&read)?;
    Ok(RecordedEvent {
        position: position(
            row.try_get(first).map_err(&read)?,
            row.try_get(first + 1).map_err(&read)?,
        )?,
        stream: names.get(stream),
        version: unsigned(row.try_get(first + 3).map_err(&read)?, "version")?,
        event_id: row.try_get::<_, Uuid>(first + 4).map_err(&read)?,
        event_type: names.get(event_type),
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {schema_version}")))?,
        data: row.try_get::<_, Vec<u8>>(first + 7).map_err(&read)?.into(),
        metadata: row.try_get::<_, Vec<u8>>(first + 8).map_err(&read)?.into(),
        recorded_at: chrono::DateTime::from_timestamp_micros(recorded_at).ok_or_else(|| {
            StoreError::Corrupt(format!("recorded time {recorded_at} is out of range"))
        })?,
    })
}

/// Runs `sql` and collects events until `max` rows or the byte cap, whichever comes first;
/// rows past the cap are never decoded. `skip`: rows whose event columns are NULL (a stream
/// without events) are left out.
async fn collect(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    first: usize,
    on_row: impl Fn(&Row) -> Result<bool, StoreError>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(sql).await.map_err(read_error("preparing a read"))?;
    let rows = client
        .query_raw(&statement, params.iter().copied())
        .await
        .map_err(read_error("reading events"))?;
    pin_mut!(rows);
    let mut names = Names::default();
    let mut events = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().await {
        let row = row.map_err(read_error("reading events"))?;
        if !on_row(&row)? {
            continue;
        }
        let event = event_from_row(&row, first, &mut names)?;
        bytes += event.data.len() + event.metadata.len();
        events.push(event);
        if bytes >= MAX_READ_BATCH_BYTES {
            break;
        }
    }
    Ok(events)
}

const EVENT_COLUMNS: &str = "tx_id, seq, stream, version, event_id, event_type, schema_version, data, metadata, recorded_at";

/// The columns of [`EVENT_COLUMNS`].
const EVENT_FIELDS: usize = 10;

/// The event of one tuple of a binary COPY of [`EVENT_COLUMNS`]: its data and metadata are
/// slices of the tuple's bytes (no copy), its stream and type shared through `names`.
fn event_from_tuple(
    raw: &Bytes,
    f: &Fields<EVENT_FIELDS>,
    names: &mut Names,
) -> Result<RecordedEvent, StoreError> {
    let int8 = |i: usize, what: &str| {
        copy::int8(raw, f[i]).ok_or_else(|| copy::malformed(&format!("the {what} column")))
    };
    let bytea = |i: usize| {
        f[i].map(|s| raw.slice(s.range())).ok_or_else(|| copy::malformed("a NULL bytea column"))
    };
    let schema_version = int8(6, "schema version")?;
    let recorded_at = int8(9, "recorded time")?;
    let event_id = f[4]
        .and_then(|s| <[u8; 16]>::try_from(&raw[s.range()]).ok())
        .ok_or_else(|| copy::malformed("the event id column"))?;
    Ok(RecordedEvent {
        position: position(int8(0, "transaction id")?, int8(1, "sequence")?)?,
        stream: names.get(copy::text(raw, f[2])?),
        version: unsigned(int8(3, "version")?, "version")?,
        event_id: Uuid::from_bytes(event_id),
        event_type: names.get(copy::text(raw, f[5])?),
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {schema_version}")))?,
        data: bytea(7)?,
        metadata: bytea(8)?,
        recorded_at: chrono::DateTime::from_timestamp_micros(recorded_at).ok_or_else(|| {
            StoreError::Corrupt(format!("recorded time {recorded_at} is out of range"))
        })?,
    })
}

/// The binary COPY of up to `max` events after `after`, only below the gap-free horizon.
/// `COPY` takes no parameters: the bounds are typed literals (compared as `int8`, on the
/// primary key).
fn read_all_sql(after: Position, max: usize) -> String {
    let (tx, seq, limit) = (clamp(after.commit()), clamp(after.prepare()), clamp(max as u64));
    format!(
        "COPY (SELECT {EVENT_COLUMNS} FROM pop_events \
         WHERE (tx_id, seq) > ('{tx}'::int8, '{seq}'::int8) AND tx_id < {HORIZON} \
         ORDER BY tx_id, seq LIMIT {limit}) TO STDOUT (FORMAT binary)"
    )
}

/// Up to `max` events after `after`, only below the gap-free horizon: one prepared statement
/// on a pooled connection (planned once per connection: a tailing reader reads often, and
/// little each time). The batches read ahead come from [`read_all_each`].
pub(crate) async fn read_all(
    pool: &Pool,
    after: Position,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM pop_events WHERE (tx_id, seq) > ($1, $2) \
         AND tx_id < {HORIZON} ORDER BY tx_id, seq LIMIT $3"
    );
    let (tx, seq, limit) = (clamp(after.commit()), clamp(after.prepare()), clamp(max as u64));
    collect(pool, &sql, &[&tx, &seq, &limit], 0, |_| Ok(true)).await
}

/// What [`read_all`] returns, as one binary `COPY` on `client` parsed in place (see [`copy`]),
/// each event handed to `each` as soon as it is parsed: what the read-ahead reads with. Its
/// data and metadata are slices of the message (no row objects, no copy per event), and a
/// statement of several batches is planned once for all of them.
pub(crate) async fn read_all_each(
    client: &tokio_postgres::Client,
    after: Position,
    max: usize,
    mut each: impl FnMut(RecordedEvent),
) -> Result<(), StoreError> {
    let fail = read_error("reading events");
    let copy = client.copy_out(read_all_sql(after, max).as_str()).await.map_err(&fail)?;
    pin_mut!(copy);
    let mut parser = CopyParser::default();
    let mut names = Names::default();
    let mut bytes = 0usize;
    while let Some(message) = copy.next().await {
        parser.feed::<EVENT_FIELDS>(message.map_err(&fail)?, |raw, fields| {
            if bytes >= MAX_READ_BATCH_BYTES {
                return Ok(());
            }
            let event = event_from_tuple(&raw, fields, &mut names)?;
            bytes += event.data.len() + event.metadata.len();
            each(event);
            Ok(())
        })?;
        if bytes >= MAX_READ_BATCH_BYTES {
            // The rest of the COPY is read and dropped by the connection.
            return Ok(());
        }
    }
    parser.finish()
}

pub(crate) async fn read_stream(
    pool: &Pool,
    stream: &str,
    from_version: u64,
    max: usize,
    direction: Direction,
) -> Result<Vec<RecordedEvent>, StoreError> {
    // One statement, so the tombstone and the events are read in one snapshot: a concurrent
    // delete cannot make a deleted stream read as empty.
    let (compare, order) = match direction {
        Direction::Forwards => (">=", "ASC"),
        Direction::Backwards => ("<=", "DESC"),
    };
    let sql = format!(
        "SELECT s.deleted_at IS NOT NULL, e.* FROM pop_streams s LEFT JOIN LATERAL ( \
         SELECT {EVENT_COLUMNS} FROM pop_events WHERE stream = s.name AND version {compare} $2 \
         ORDER BY version {order} LIMIT $3) e ON true WHERE s.name = $1"
    );
    let (from, limit) = (clamp(from_version), clamp(max as u64));
    collect(pool, &sql, &[&stream, &from, &limit], 1, |row| {
        let deleted: bool = row.try_get(0).map_err(read_error("reading a stream"))?;
        if deleted {
            return Err(StoreError::StreamDeleted { stream: stream.to_owned() });
        }
        let tx: Option<i64> = row.try_get(1).map_err(read_error("reading a stream"))?;
        Ok(tx.is_some())
    })
    .await
}

/// The highest position below the horizon, counting the last events of deleted streams (a
/// delete never moves the head back), and whether committed events wait above the horizon
/// (the newest visible event, or the newest deleted stream's last event, is at or above it:
/// without the latter, a head taken while another database's transaction held the horizon
/// below a just-deleted stream answered short at once, without waiting; CI saw
/// `reopen_keeps_everything` take a head before reopening that missed the deleted stream).
/// Every part is a short walk of an index from its end, written as `ORDER BY … LIMIT 1` so the planner takes the index even before the
/// table has statistics (an `EXISTS` was planned as a sequential scan of the whole log).
const HEAD_SQL: &str = "
    WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x),
    top AS (
        (SELECT tx_id, seq FROM pop_events WHERE tx_id < (SELECT x FROM h)
         ORDER BY tx_id DESC, seq DESC LIMIT 1)
        UNION ALL
        (SELECT last_tx, last_seq FROM pop_streams
         WHERE deleted_at IS NOT NULL AND last_tx < (SELECT x FROM h)
         ORDER BY last_tx DESC, last_seq DESC LIMIT 1)
    ),
    best AS (SELECT tx_id, seq FROM top ORDER BY tx_id DESC, seq DESC LIMIT 1)
    SELECT (SELECT tx_id FROM best), (SELECT seq FROM best),
           COALESCE(GREATEST(
               (SELECT tx_id FROM pop_events ORDER BY tx_id DESC, seq DESC LIMIT 1),
               (SELECT last_tx FROM pop_streams WHERE deleted_at IS NOT NULL
                ORDER BY last_tx DESC, last_seq DESC LIMIT 1)
           ) >= (SELECT x FROM h), false)";

/// The safe head and whether committed events wait above the horizon.
pub(crate) async fn head_once(pool: &Pool) -> Result<(Position, bool), StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement =
        client.prepare_cached(HEAD_SQL).await.map_err(read_error("reading the log head"))?;
    head_on(&client, &statement).await
}

/// Prepares the head query on a connection outside the pool.
pub(crate) async fn prepare_head(
    client: &tokio_postgres::Client,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare(HEAD_SQL).await.map_err(read_error("reading the log head"))
}

pub(crate) async fn head_on(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
) -> Result<(Position, bool), StoreError> {
    let fail = read_error("reading the log head");
    let row = client.query_one(statement, &[]).await.map_err(&fail)?;
    let tx: Option<i64> = row.try_get(0).map_err(&fail)?;
    let seq: Option<i64> = row.try_get(1).map_err(&fail)?;
    let pending: bool = row.try_get(2).map_err(&fail)?;
    let head = match (tx, seq) {
        (Some(tx), Some(seq)) => position(tx, seq)?,
        _ => Position::START,
    };
    Ok((head, pending))
}

/// The head, waiting (at most [`PG_SETTLE_WAIT`]) for commits held back by an open
/// transaction below them, so a caller that just appended sees its own position.
/// `held` says meanwhile whether the last look found committed events held above the horizon.
pub(crate) async fn head(
    pool: &Pool,
    held: &std::sync::atomic::AtomicBool,
) -> Result<Position, StoreError> {
    let start = Instant::now();
    let mut step = Duration::from_millis(1);
    loop {
        let (head, pending) = head_once(pool).await?;
        held.store(pending, std::sync::atomic::Ordering::Relaxed);
        if !pending || start.elapsed() >= PG_SETTLE_WAIT {
            return Ok(head);
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(SETTLE_STEP_MAX);
    }
}

/// Whether committed events wait above the horizon (another transaction, maybe of another
/// database on the same server, is still open below them).
async fn pending(pool: &Pool) -> Result<bool, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let sql = format!(
        "SELECT COALESCE((SELECT tx_id FROM pop_events ORDER BY tx_id DESC, seq DESC LIMIT 1) \
         >= {HORIZON}, false)"
    );
    let fail = read_error("reading the horizon");
    let statement = client.prepare_cached(&sql).await.map_err(&fail)?;
    let row = client.query_one(&statement, &[]).await.map_err(&fail)?;
    row.try_get(0).map_err(read_error("reading the horizon"))
}

/// Runs `read` until it is `complete` or nothing committed waits above the horizon (then once
/// more, since the horizon may have moved between the two looks), for at most
/// [`PG_SETTLE_WAIT`]: a caller that just appended then reads its own events even while
/// another writer's transaction is still open. Past the wait it returns what is safe.
pub(crate) async fn settled<T, F, Fut>(
    pool: &Pool,
    mut read: F,
    complete: impl Fn(&T) -> bool,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let start = Instant::now();
    let mut step = Duration::from_millis(1);
    loop {
        let result = read().await?;
        if complete(&result) || start.elapsed() >= PG_SETTLE_WAIT {
            return Ok(result);
        }
        if !pending(pool).await? {
            return read().await;
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(SETTLE_STEP_MAX);
    }
}
