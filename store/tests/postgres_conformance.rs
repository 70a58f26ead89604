//! The conformance suite run against the PostgreSQL backend: one throwaway cluster for this
//! test binary, a fresh database per check.

use std::sync::Arc;

use async_trait::async_trait;
use pop_store::conformance::Harness;
use pop_store::test_cluster::TestCluster;
use pop_store::{Clock, EventStore, PgOptions, PgStore, StoreError};

struct PgHarness {
    url: String,
    options: PgOptions,
    store: Arc<PgStore>,
}

#[async_trait]
impl Harness for PgHarness {
    async fn empty(clock: Clock) -> Result<Self, StoreError> {
        let cluster =
            TestCluster::shared("the PostgreSQL conformance suite").ok_or(StoreError::Closed)?;
        let url = cluster.create_database().await?;
        let options = PgOptions { clock, database_clock: false, ..PgOptions::default() };
        let store = Arc::new(PgStore::connect(&url, options.clone()).await?);
        Ok(PgHarness { url, options, store })
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) -> Result<bool, StoreError> {
        self.store.close().await;
        self.store = Arc::new(PgStore::connect(&self.url, self.options.clone()).await?);
        Ok(true)
    }

    fn available() -> bool {
        TestCluster::shared("the PostgreSQL conformance suite").is_some()
    }
}

pop_store::conformance_suite!(PgHarness);
