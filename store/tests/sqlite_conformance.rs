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

/// Commit times never go back: not when the wall clock steps back while the store is open,
/// nor when it is reopened behind its last commit (ops3am3: an NTP step back stamped later
/// commits earlier, and as-of reads by time then hid a finished agenda).
#[tokio::test]
async fn commit_times_never_go_back() {
    use pop_store::{Direction, ExpectedVersion, NewEvent};
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pop.db");
    let wall = Arc::new(AtomicI64::new(1_800_000_000_000_000));
    let read = Arc::clone(&wall);
    let clock: Clock = Arc::new(move || {
        chrono::DateTime::from_timestamp_micros(read.load(Ordering::SeqCst)).unwrap()
    });
    let options = SqliteOptions { clock, ..SqliteOptions::default() };
    let event = || NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Noted".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
    };
    let store = SqliteStore::open(&path, options.clone()).await.unwrap();
    store.append("s", ExpectedVersion::Any, vec![event()]).await.unwrap();
    wall.fetch_sub(3_600_000_000, Ordering::SeqCst); // stepped back an hour
    store.append("s", ExpectedVersion::Any, vec![event()]).await.unwrap();
    store.close().await.unwrap();
    let store = SqliteStore::open(&path, options).await.unwrap();
    store.append("s", ExpectedVersion::Any, vec![event()]).await.unwrap();
    let times: Vec<i64> = store
        .read_stream("s", 0, 10, Direction::Forwards)
        .await
        .unwrap()
        .iter()
        .map(|e| e.recorded_at.timestamp_micros())
        .collect();
    assert_eq!(times, vec![1_800_000_000_000_000; 3], "{times:?}");
    store.close().await.unwrap();
}
