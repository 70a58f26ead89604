//! pop's store conformance suite on KurrentDB: on the protocol double (always, in CI), and on
//! a real KurrentDB server when `POP_KURRENTDB_URL` is set (each test in a namespace of its
//! own, so one server serves the whole run; `POP_REQUIRE_KURRENTDB=1` makes a missing URL a
//! failure).

use std::sync::Arc;

use async_trait::async_trait;
use pop_kurrentdb_double::{DoubleOptions, KurrentDouble};
use pop_store::conformance::Harness;
use pop_store::{Clock, EventStore, KurrentOptions, KurrentStore, StoreError};
use uuid::Uuid;

/// A fresh double per test: an empty log, the default (un-namespaced) names.
struct OnDouble {
    double: KurrentDouble,
    clock: Clock,
    store: Arc<KurrentStore>,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::backend("starting the KurrentDB double", e)
}

#[async_trait]
impl Harness for OnDouble {
    async fn empty(clock: Clock) -> Result<Self, StoreError> {
        let double = KurrentDouble::start(DoubleOptions::default()).await.map_err(io)?;
        let options = KurrentOptions { clock: clock.clone(), ..KurrentOptions::default() };
        let store = Arc::new(KurrentStore::connect(&double.url(), options).await?);
        Ok(OnDouble { double, clock, store })
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) -> Result<bool, StoreError> {
        // A new client on the same server: nothing of the old one is reused.
        let options = KurrentOptions { clock: self.clock.clone(), ..KurrentOptions::default() };
        self.store = Arc::new(KurrentStore::connect(&self.double.url(), options).await?);
        Ok(true)
    }
}

/// A real server from `POP_KURRENTDB_URL`; each test in a namespace of its own.
struct OnServer {
    url: String,
    namespace: String,
    clock: Clock,
    store: Arc<KurrentStore>,
}

fn server_url() -> Option<String> {
    std::env::var("POP_KURRENTDB_URL").ok().filter(|u| !u.is_empty())
}

impl OnServer {
    async fn connect(url: &str, namespace: &str, clock: Clock) -> Result<KurrentStore, StoreError> {
        KurrentStore::connect(url, KurrentOptions { clock, namespace: namespace.to_owned() }).await
    }
}

#[async_trait]
impl Harness for OnServer {
    async fn empty(clock: Clock) -> Result<Self, StoreError> {
        let url = server_url().ok_or(StoreError::Closed)?;
        let namespace = format!("conformance-{}", Uuid::new_v4().simple());
        let store = Arc::new(OnServer::connect(&url, &namespace, clock.clone()).await?);
        Ok(OnServer { url, namespace, clock, store })
    }

    fn store(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    async fn reopen(&mut self) -> Result<bool, StoreError> {
        self.store =
            Arc::new(OnServer::connect(&self.url, &self.namespace, self.clock.clone()).await?);
        Ok(true)
    }

    fn available() -> bool {
        if server_url().is_some() {
            return true;
        }
        assert!(
            std::env::var("POP_REQUIRE_KURRENTDB").is_err(),
            "POP_REQUIRE_KURRENTDB is set but POP_KURRENTDB_URL is not"
        );
        eprintln!(
            "SKIP: POP_KURRENTDB_URL is not set; the KurrentDB conformance suite against a real \
             server did not run (the one on the protocol double did)"
        );
        false
    }
}

mod on_double {
    pop_store::conformance_suite!(super::OnDouble);
}

mod on_server {
    pop_store::conformance_suite!(super::OnServer);
}
