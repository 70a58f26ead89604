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
