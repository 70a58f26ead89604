//! The conformance suite run against the SQLite backend, on real files in a temp directory.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pop_store::conformance::Harness;
use pop_store::{Clock, EventStore, SqliteOptions, SqliteStore, StoreError};

struct SqliteHarness {
    /// Deleted (with the store file) when the harness is dropped.
    _dir: tempfile::TempDir,
    path: PathBuf,
    options: SqliteOptions,
    store: Arc<SqliteStore>,
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn empty(clock: Clock) -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("temp dir", e))?;
        // A nested path also checks that `open` creates parent directories.
        let path = dir.path().join("data").join("pop.db");
        let options = SqliteOptions { clock, ..SqliteOptions::default() };
        let store = Arc::new(SqliteStore::open(&path, options.clone()).await?);
        Ok(SqliteHarness { _dir: dir, path, options, store })
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) -> Result<bool, StoreError> {
        self.store.close().await?;
        self.store = Arc::new(SqliteStore::open(&self.path, self.options.clone()).await?);
        Ok(true)
    }
}

pop_store::conformance_suite!(SqliteHarness);

/// Small commits reach the database file, not only its write-ahead log: every commit writes
/// some six WAL pages however small its events, and nudging the checkpointer by event bytes
/// alone left `pop.db` empty beside a `pop.db-wal` of 220 MB (ops3am5; a copy of `pop.db`
/// then lacked every agenda).
#[tokio::test]
async fn small_commits_are_checkpointed_into_the_file() {
    use pop_store::{ExpectedVersion, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pop.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    for i in 0..1_100 {
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "Noted".into(),
            schema_version: 1,
            data: b"{}".to_vec(),
            metadata: b"{}".to_vec(),
        };
        store.append(&format!("s{i}"), ExpectedVersion::NoStream, vec![event]).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let len = std::fs::metadata(&path).unwrap().len();
        if len > 64 << 10 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pop.db is still {len} bytes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    store.close().await.unwrap();
}

/// A second process writing to the same file (two servers on one data directory, after its
/// `pop.lock` was removed) is said by the writer that finds its commits, for good: that
/// process's read models never see the other's events, so it must restart (newcomer54: only
/// a WARN said so, and both servers stayed ready with diverging read models).
#[tokio::test]
async fn a_store_written_by_another_process_says_so_for_good() {
    use pop_store::{ExpectedVersion, NewEvent};
    let event = || NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Noted".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pop.db");
    let ours = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    ours.append("a", ExpectedVersion::NoStream, vec![event()]).await.unwrap();
    assert_eq!(ours.changed_under(), None, "its own commits are not another's");
    // Another writer on the same file, as a second process would be.
    let other = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    other.append("b", ExpectedVersion::NoStream, vec![event()]).await.unwrap();
    assert_eq!(other.changed_under(), None, "it opened after our commit");
    assert_eq!(ours.changed_under(), None, "nothing found yet");
    // Our next commit finds the other's: the append itself still lands, in order.
    let appended = ours.append("c", ExpectedVersion::NoStream, vec![event()]).await.unwrap();
    assert_eq!(appended.position.sequence(), Some(3), "{appended:?}");
    let why = ours.changed_under().expect("the other process's commits are said");
    assert!(why.contains("another process wrote to this event store"), "{why}");
    assert!(why.contains("pop.lock"), "{why}");
    ours.append("d", ExpectedVersion::NoStream, vec![event()]).await.unwrap();
    assert_eq!(ours.changed_under().as_deref(), Some(why.as_str()), "for good");
    // Not a log that went back: the read models go on following the file.
    assert_eq!(ours.log_went_back(), None);
}
