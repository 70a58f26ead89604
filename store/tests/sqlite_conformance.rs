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
