//! [`AppState`]: what the router's handlers share — the schema (which holds the store, the
//! command executor and the projections handle), the known tokens, and the metrics handle.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use pop_projections::Projections;
use pop_store::{EventStore, Executor};

use crate::auth::{Principal, Tokens};
use crate::config::ApiConfig;
use crate::graphql::{PopSchema, Services, build_schema};
use crate::metrics;

/// The API's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    services: Arc<Services>,
    schema: PopSchema,
    tokens: Tokens,
    metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.services.config)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The API over `store`, executing commands with `executor` (share the server's one: it
    /// caches aggregate states) and reading `projections` (whose runner the server drives).
    /// Installs the process's Prometheus recorder if none is installed yet.
    pub fn new(
        store: Arc<dyn EventStore>,
        executor: Arc<Executor>,
        projections: Projections,
        tokens: Tokens,
        config: ApiConfig,
    ) -> AppState {
        let services =
            Arc::new(Services { store, executor, projections, config: config.bounded() });
        let schema = build_schema(Arc::clone(&services));
        AppState {
            inner: Arc::new(Inner {
                services,
                schema,
                tokens,
                metrics: metrics::prometheus_handle(),
            }),
        }
    }

    pub fn schema(&self) -> &PopSchema {
        &self.inner.schema
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.services.config
    }

    pub fn projections(&self) -> &Projections {
        &self.inner.services.projections
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.services.store
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.inner.tokens.lookup(token).cloned()
    }

    pub(crate) fn metrics_handle(&self) -> Option<&PrometheusHandle> {
        self.inner.metrics.as_ref()
    }
}
