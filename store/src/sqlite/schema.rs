//! The SQLite schema as ordered migration steps, and the connection settings (PRAGMAs) of the
//! writer and the readers, each with its reason.

use std::time::Duration;

use rusqlite::Connection;

use super::Durability;
use crate::StoreError;

/// Schema migrations, applied in order; `PRAGMA user_version` is the number applied. Never
/// edit a step that has shipped: add one.
const MIGRATIONS: &[&str] = &[
    // 1: streams, the event log, and the log head.
    "
    -- One row per stream that ever had an event or was deleted. `version` is the version of
    -- the last event (NULL: none); `deleted_at` (microseconds since the epoch) marks a
    -- tombstone. Foreign keys are not declared: the single writer keeps them, and SQLite would
    -- not check them without a per-connection PRAGMA anyway.
    CREATE TABLE streams (
        id          INTEGER PRIMARY KEY,
        name        TEXT    NOT NULL UNIQUE,
        version     INTEGER,
        deleted_at  INTEGER
    ) STRICT;

    -- The global log. `position` is the rowid, assigned by the writer in commit order and
    -- never reused (see `log.head`), so the table is stored in log order and `read_all` is a
    -- range scan. `event_id` is the 16 uuid bytes. `recorded_at`: microseconds since epoch.
    CREATE TABLE events (
        position        INTEGER PRIMARY KEY,
        stream_id       INTEGER NOT NULL,
        version         INTEGER NOT NULL,
        event_id        BLOB    NOT NULL UNIQUE,
        event_type      TEXT    NOT NULL,
        schema_version  INTEGER NOT NULL,
        data            BLOB    NOT NULL,
        metadata        BLOB    NOT NULL,
        recorded_at     INTEGER NOT NULL
    ) STRICT;

    -- Stream reads and the per-stream version rule (also what deleting a stream scans).
    CREATE UNIQUE INDEX events_by_stream ON events (stream_id, version);

    -- The last position ever assigned. Kept apart from max(events.position) because deleting
    -- a stream can remove the newest events, and a position must never be handed out twice
    -- (a subscriber past it would skip the new event).
    CREATE TABLE log (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        head  INTEGER NOT NULL
    ) STRICT;
    INSERT INTO log (id, head) VALUES (1, 0);
    ",
    // 2: tamper evidence (`crate::digest`). `events.chain` is the stream's hash chain after
    // the event; `streams.head_hash` the chain after the stream's last event, kept on the
    // tombstone when the stream is deleted. Events written before this step get theirs from
    // `backfill_chains`, in the same transaction.
    "
    ALTER TABLE events ADD COLUMN chain BLOB;
    ALTER TABLE streams ADD COLUMN head_hash BLOB;
    ",
    // 3: the global commitment (`crate::commitment`). `pruned` keeps the hash row of every
    // event of a deleted stream (written by the delete, in its transaction), so the log hash
    // still recomputes after retention; `log_checkpoints` holds the signed checkpoints, each
    // the exact JSON body and the Ed25519 signature over it.
    "
    CREATE TABLE pruned (
        position   INTEGER PRIMARY KEY,
        stream_id  INTEGER NOT NULL,
        version    INTEGER NOT NULL,
        chain      BLOB
    ) STRICT;
    CREATE TABLE log_checkpoints (
        seq        INTEGER PRIMARY KEY,
        body       BLOB    NOT NULL,
        signature  BLOB    NOT NULL
    ) STRICT;
    ",
    // 4: where a `pop import` ended (`log.imported_to`, NULL: none). The embedded store's own
    // writer stamps commit times that rise with positions, which verify checks across the
    // whole log; an imported log keeps its source's times (a PostgreSQL log's replicas commit
    // out of time order by their clock offsets and lock waits), so the check starts after it.
    "
    ALTER TABLE log ADD COLUMN imported_to INTEGER;
    ",
];

/// The step after which existing events get their chains computed.
pub(crate) const CHAIN_STEP: usize = 2;

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The tables the migrations make: `pop verify` reports a store missing one as broken.
pub(crate) const TABLES: &[&str] = &["streams", "events", "log", "pruned", "log_checkpoints"];

/// How long a connection waits for a lock held by another connection before failing. Only a
/// checkpoint or a second process can hold one; a writer blocked longer than this is better
/// reported than hung.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer, in KiB (negative `cache_size` is KiB): the stream index and the
/// tail of the log stay in memory.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Page cache of each reader, in KiB.
const READER_CACHE_KIB: i64 = 16 * 1024;

/// Bytes of the database file each reader maps into memory: reads of the log then copy from
/// the page cache of the OS without a read() per page.
const READER_MMAP_BYTES: i64 = 1 << 30;

/// WAL pages after which the writer itself checkpoints. Normally the checkpointer thread does
/// it long before (every `CHECKPOINT_EVERY_BYTES`); this is the safety net should it fall
/// behind or stop: 64k pages is 256 MiB of WAL.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 65_536;

/// Bytes the WAL file is truncated to after a checkpoint, so one burst does not leave a huge
/// file behind.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 << 20;

fn backend(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

/// Settings of the one writer connection.
pub(crate) fn configure_writer(
    conn: &Connection,
    durability: Durability,
) -> Result<(), StoreError> {
    let set = backend("configuring the writer connection");
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&set)?;
    // WAL: readers never block the writer nor the writer them, and a commit is one sequential
    // write (plus one fsync) to the WAL.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(&set)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!("the database refused WAL mode (got {mode:?})")));
    }
    // FULL: the WAL is fsync'd at every commit, so an acknowledged append survives a power
    // loss. NORMAL: fsync only at checkpoints; survives a crash of the process, not of the
    // machine. Group commit makes FULL affordable: one fsync per group, not per append.
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(&set)?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(&set)?;
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(&set)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).map_err(&set)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES).map_err(&set)?;
    // Every statement the writer runs is cached; a handful of SQL texts.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Settings of the checkpointer's connection.
pub(crate) fn configure_checkpointer(conn: &Connection) -> Result<(), StoreError> {
    let set = backend("configuring the checkpointer connection");
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&set)?;
    // Its own automatic checkpoints would be pointless: it only ever checkpoints.
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(&set)?;
    Ok(())
}

/// Settings of a reader connection.
pub(crate) fn configure_reader(conn: &Connection) -> Result<(), StoreError> {
    let set = backend("configuring a reader connection");
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&set)?;
    // A reader must never write: the single-writer design depends on it.
    conn.pragma_update(None, "query_only", "ON").map_err(&set)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB).map_err(&set)?;
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES).map_err(&set)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(())
}

/// Refuses the store file at `path` when its write-ahead log is damaged with commits after
/// the damage ([`super::wal::damage`]): SQLite would open it and drop them without a word
/// (auditor55 M2). Said as the file's damage ([`StoreError::is_damaged_file`]): `pop verify`
/// says NOT INTACT, and a server does not start on it.
pub(crate) fn refuse_damaged_wal(path: &std::path::Path) -> Result<(), StoreError> {
    let check = || {
        super::wal::damage(path).map_err(|e| StoreError::backend("reading the write-ahead log", e))
    };
    // Read again when damage shows: a log a running server restarted while it was read (a
    // tool beside it) can look so once (the new header, the old frames); twice at the same
    // frame of the same generation (checkpoint sequence and salts) it cannot.
    let found = match check()? {
        Some(first) => check()?.filter(|again| {
            (again.frame, again.offset, again.generation)
                == (first.frame, first.offset, first.generation)
        }),
        None => None,
    };
    let Some(found) = found else {
        return Ok(());
    };
    let wal = format!("{}-wal", path.display());
    let message = format!(
        "its write-ahead log {wal} is damaged at {} (byte {}), and {} acknowledged commits \
         after the damage still check: SQLite would open it and drop them without a word. \
         Nothing was opened or changed. Copy the data directory aside as it is first; then \
         restore it from a backup, or `pop import` an export taken before, or, to keep only \
         the commits before the damage as SQLite would, start `pop serve \
         --accept-wal-damage` once. (A store run with --durability normal is not synced at \
         each commit: a power cut may leave it so, and lose those commits by design; there \
         --accept-wal-damage is the way on.)",
        match found.frame {
            0 => "its header".to_owned(),
            n => format!("frame {n}"),
        },
        found.offset,
        found.lost_commits,
    );
    Err(StoreError::backend(
        "opening the store file",
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(message),
        ),
    ))
}

/// Opens the store file for a tool that only reads it (`pop verify`, `pop export`), as a
/// reader ([`configure_reader`]). A WAL database opened read-only still creates its
/// shared-memory file (`-shm`) beside it, which fails on a read-only mount, in a directory the
/// caller may not write, or for an auditor given the file alone ("unable to open database
/// file"). A store stopped cleanly has neither its write-ahead log nor its shared memory left
/// (its last connection checkpoints and removes both), so it is then opened immutable: nothing
/// is created beside it, and no server has it open to change it meanwhile. Either file still
/// there means a server has it open (an idle one keeps an empty log), or was killed with
/// commits in the log that the file lacks: it is read as any reader reads it, through them
/// (an error then says what the log needs).
pub(crate) fn open_read_only(path: &std::path::Path) -> Result<Connection, StoreError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let beside = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let wal = beside("-wal");
    if wal.exists() || beside("-shm").exists() {
        refuse_damaged_wal(path)?;
        let conn =
            Connection::open_with_flags(path, flags).map_err(backend("opening the store file"))?;
        configure_reader(&conn)?;
        return match conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
            Ok(()) => Ok(conn),
            Err(e) => Err(StoreError::backend(
                "opening the store file read-only",
                std::io::Error::other(format!(
                    "{e}; its write-ahead log ({}) holds commits the file does not, and reading \
                     them needs a shared-memory file beside it: run this where that directory \
                     may be written, or let a server open and stop the store cleanly first",
                    wal.display()
                )),
            )),
        };
    }
    // SQLite's URI: `%`, `?` and `#` would be read as escapes, the query or a fragment.
    let escaped =
        path.to_string_lossy().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
    let conn = Connection::open_with_flags(
        format!("file:{escaped}?immutable=1"),
        flags | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(backend("opening the store file"))?;
    configure_reader(&conn)?;
    Ok(conn)
}

/// Brings the schema up to [`SCHEMA_VERSION`], one transaction per step. A store with events
/// and no hash chain is chained only with `chain_unchained` ([`crate::unchained_refused`]).
pub(crate) fn migrate(conn: &mut Connection, chain_unchained: bool) -> Result<(), StoreError> {
    let fail = backend("migrating the schema");
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(&fail)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema { found, supported: SCHEMA_VERSION });
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&fail)?;
        tx.execute_batch(step).map_err(&fail)?;
        if done + 1 == CHAIN_STEP {
            let events: i64 =
                tx.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).map_err(&fail)?;
            if events > 0 && !chain_unchained {
                return Err(crate::unchained_refused(found, events as u64));
            }
            backfill_chains(&tx)?;
        }
        tx.pragma_update(None, "user_version", (done + 1) as i64).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        // A new store's steps are its creation, not migrations (newcomer55 L5: a first start
        // said "schema migrated" four times and "hash chains computed" of 0 events).
        if found > 0 {
            tracing::info!(schema_version = done + 1, "event store schema migrated");
        }
    }
    if found == 0 {
        tracing::info!(schema_version = SCHEMA_VERSION, "event store created");
    }
    Ok(())
}

/// Computes the hash chain of every event written before the chain existed, stream by
/// stream in version order, and each live stream's head (the migration path of data
/// directories from before step 2). Deleted streams have no events left to chain.
fn backfill_chains(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    use crate::digest::{DigestInput, GENESIS, chain, data_hash, event_digest};
    let fail = backend("computing the hash chains of existing events");
    let mut streams = tx.prepare("SELECT id, name FROM streams ORDER BY id").map_err(&fail)?;
    let list: Vec<(i64, String)> = streams
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(&fail)?
        .collect::<Result<_, _>>()
        .map_err(&fail)?;
    let mut events = tx
        .prepare(
            "SELECT position, version, event_type, schema_version, data, metadata, recorded_at \
             FROM events WHERE stream_id = ?1 ORDER BY version",
        )
        .map_err(&fail)?;
    let mut update =
        tx.prepare("UPDATE events SET chain = ?2 WHERE position = ?1").map_err(&fail)?;
    let mut head_update =
        tx.prepare("UPDATE streams SET head_hash = ?2 WHERE id = ?1").map_err(&fail)?;
    let mut count = 0u64;
    for (id, name) in list {
        let mut head = GENESIS;
        let mut any = false;
        let mut rows = events.query([id]).map_err(&fail)?;
        let mut chained = Vec::new();
        while let Some(r) = rows.next().map_err(&fail)? {
            let position: i64 = r.get(0).map_err(&fail)?;
            let version: i64 = r.get(1).map_err(&fail)?;
            let event_type: String = r.get(2).map_err(&fail)?;
            let schema_version: u32 = r.get(3).map_err(&fail)?;
            let data: Vec<u8> = r.get(4).map_err(&fail)?;
            let metadata: Vec<u8> = r.get(5).map_err(&fail)?;
            let recorded_at: i64 = r.get(6).map_err(&fail)?;
            let hash = data_hash(&data);
            let digest = event_digest(&DigestInput {
                stream: &name,
                version: version as u64,
                event_type: &event_type,
                schema_version,
                recorded_at_micros: recorded_at,
                metadata: &metadata,
                data_hash: &hash,
            });
            head = chain(&head, &digest);
            chained.push((position, head));
            any = true;
        }
        drop(rows);
        for (position, hash) in &chained {
            update.execute(rusqlite::params![position, hash.as_slice()]).map_err(&fail)?;
        }
        count += chained.len() as u64;
        if any {
            head_update.execute(rusqlite::params![id, head.as_slice()]).map_err(&fail)?;
        }
    }
    if count > 0 {
        tracing::info!(events = count, "hash chains computed for events written before them");
    }
    Ok(())
}
