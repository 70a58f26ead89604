//! [`AppState`]: what the router's handlers share — the application ([`pop_app::App`]), the
//! schema over it, the known tokens, the metrics handle, and the shutdown signal the WebSocket
//! connections watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::parser::types::ExecutableDocument;

use metrics_exporter_prometheus::PrometheusHandle;
use pop_app::App;
use pop_projections::Projections;
use pop_store::{Commands, EventStore};
use tokio::sync::watch;

use crate::auth::{Principal, Tokens};
use crate::config::{ApiConfig, SHUTDOWN_CLOSE_WAIT};
use crate::graphql::{PopSchema, build_schema};
use crate::metrics;

/// Queries longer than this are parsed every time (they are rarely repeated verbatim).
const MAX_CACHED_QUERY_BYTES: usize = 4 * 1024;
/// Distinct queries remembered for one principal; when full its own cache starts over. There is
/// no bound across principals (they come from the token file, so there are as many as it
/// lists): one emptied every principal's cache at once, which a tenant could time to count the
/// query texts the others had sent (hostile22).
const MAX_CACHED_QUERIES_PER_PRINCIPAL: usize = 64;

/// Parsed GraphQL documents by principal and query text. A full cache is cleared, not evicted
/// entry by entry: clients send a handful of distinct queries, so a clear is rare and cheap.
/// Each principal has its own, bounded on its own (hostile21: one shared cache answered a query
/// another tenant had sent faster than a new one, which told which ids that tenant had written
/// into its query text; and any tenant could empty it for everyone with 512 documents).
#[derive(Default)]
struct QueryCache {
    documents: std::sync::Mutex<QueryDocuments>,
}

#[derive(Default)]
struct QueryDocuments {
    by_principal: HashMap<String, HashMap<String, ExecutableDocument>>,
}

impl QueryCache {
    fn parse_into(&self, principal: &str, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_CACHED_QUERY_BYTES {
            return;
        }
        let cached = self.documents.lock().ok().and_then(|d| {
            d.by_principal.get(principal).and_then(|own| own.get(&request.query)).cloned()
        });
        if let Some(document) = cached {
            request.set_parsed_query(document);
            return;
        }
        // A query that does not parse is left to the schema, which reports the error.
        let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return };
        let Ok(mut documents) = self.documents.lock() else { return };
        let by_principal = &mut documents.by_principal;
        let own = match by_principal.get_mut(principal) {
            Some(own) => own,
            None => by_principal.entry(principal.to_owned()).or_default(),
        };
        if own.len() >= MAX_CACHED_QUERIES_PER_PRINCIPAL {
            own.clear();
        }
        own.insert(request.query.clone(), document.clone());
        request.set_parsed_query(document);
    }
}

/// The API's shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    app: App,
    config: ApiConfig,
    schema: PopSchema,
    tokens: Tokens,
    metrics: Option<PrometheusHandle>,
    /// Raised once by [`AppState::shutdown`]; every WebSocket connection watches it.
    going_away: watch::Sender<bool>,
    /// WebSocket connections being served, so shutdown can wait for their close frames.
    open_sockets: watch::Sender<usize>,
    /// Parsed documents of the queries clients keep sending.
    queries: QueryCache,
    /// What the WebSocket connections hold for their clients (`crate::ws`).
    queued: Arc<QueuedTotals>,
    /// Initialised WebSocket connections per principal name.
    connections: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Request bodies being received per principal name ([`AppState::upload_of`]).
    uploads: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Each principal's expensive GraphQL requests (the schema's limits share it).
    running: Arc<crate::graphql::cost::Running>,
    /// See [`AppState::large_body_turn`]: the server's, and each principal's.
    large_body_turn: Arc<tokio::sync::Semaphore>,
    large_body_turns: pop_app::Turns,
    /// Each principal's large answers in flight ([`crate::answers`]).
    answers: crate::answers::Answers,
    /// Each customer's (or admin's) pace of large request bodies ([`AppState::pace_upload`]).
    paces: std::sync::Mutex<HashMap<String, Pace>>,
}

/// How many owners' paces are kept before those back at their whole burst are forgotten.
const MAX_PACES: usize = 10_000;

/// What a principal may still send at once ([`AppState::pace_upload`]): a token bucket.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Bytes it may send now; below zero, what it sent ahead of its pace.
    credit: f64,
    at: std::time::Instant,
}

/// The process-wide sums of [`crate::ws`]'s per-connection byte bounds.
#[derive(Debug, Default)]
pub(crate) struct QueuedTotals {
    /// Bytes all connections hold for their clients now.
    pub held: AtomicUsize,
    /// The most they held at once since the start.
    pub peak: AtomicUsize,
    /// Connections closed because their client read too slowly.
    pub too_slow: AtomicUsize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Sets the parsed document of `request` from the cache of recently seen queries (parsing
    /// and remembering it on a miss), so a client repeating one query pays for parsing once.
    /// Depth and directive limits still run on every request.
    /// Each principal's queries are cached apart.
    pub(crate) fn parse_cached(&self, principal: &str, request: &mut async_graphql::Request) {
        self.inner.queries.parse_into(principal, request);
    }

    /// The API over `store`, executing commands with `commands` (share the server's one: it
    /// caches aggregate states) and reading `projections` (whose runner the server drives).
    /// Installs the process's Prometheus recorder if none is installed yet.
    pub fn new(
        store: Arc<dyn EventStore>,
        commands: Arc<Commands>,
        projections: Projections,
        tokens: Tokens,
        config: ApiConfig,
    ) -> AppState {
        let config = config.bounded();
        // The recorder first, so that the expiry counter registers with it.
        let metrics_handle = metrics::prometheus_handle();
        metrics::spawn_lease_expiry_counter(
            projections.subscribe_changes(),
            projections.watch_caught_up(),
        );
        let app = App::new(store, commands, projections, config.app());
        let running = Arc::<crate::graphql::cost::Running>::default();
        let schema = build_schema(app.clone(), &config, Arc::clone(&running));
        AppState {
            inner: Arc::new(Inner {
                app,
                config,
                schema,
                tokens,
                metrics: metrics_handle,
                going_away: watch::Sender::new(false),
                open_sockets: watch::Sender::new(0),
                queries: QueryCache::default(),
                queued: Arc::default(),
                connections: Arc::default(),
                uploads: Arc::default(),
                running,
                large_body_turn: Arc::new(tokio::sync::Semaphore::new(1)),
                large_body_turns: pop_app::Turns::default(),
                answers: crate::answers::Answers::default(),
                paces: std::sync::Mutex::default(),
            }),
        }
    }

    /// Each principal's large answers in flight.
    pub(crate) fn answers(&self) -> &crate::answers::Answers {
        &self.inner.answers
    }

    /// Each principal's expensive GraphQL requests running now.
    pub(crate) fn running(&self) -> &crate::graphql::cost::Running {
        &self.inner.running
    }

    /// The application every transport calls.
    pub fn app(&self) -> &App {
        &self.inner.app
    }

    pub fn schema(&self) -> &PopSchema {
        &self.inner.schema
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub fn projections(&self) -> &Projections {
        self.inner.app.projections()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.inner.app.store()
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.inner.tokens.lookup(token).cloned()
    }

    /// Tells every open WebSocket connection that the server is going away: each stops its
    /// operations and closes with 1001 "going away". Waits until they have all closed, for at
    /// most [`SHUTDOWN_CLOSE_WAIT`], so the process does not exit (resetting the sockets)
    /// before the clients got their close frame. Connections upgraded afterwards are closed
    /// the same way at once. Call it when the process is stopping, before waiting for the
    /// HTTP server to drain: upgraded connections are not part of that drain. Waiting
    /// `getAgenda` calls answer at once ([`App::end_waits`]), so they do not hold up the drain.
    pub async fn shutdown(&self) {
        self.inner.app.end_waits();
        self.inner.going_away.send_replace(true);
        let mut open = self.inner.open_sockets.subscribe();
        let closed = open.wait_for(|n| *n == 0);
        if tokio::time::timeout(SHUTDOWN_CLOSE_WAIT, closed).await.is_err() {
            let still_open = *self.inner.open_sockets.borrow();
            tracing::warn!(still_open, timeout = ?SHUTDOWN_CLOSE_WAIT, "WebSockets still open at shutdown");
        }
    }

    /// The shutdown flag, for a WebSocket connection to watch.
    pub(crate) fn going_away(&self) -> watch::Receiver<bool> {
        self.inner.going_away.subscribe()
    }

    /// Counts a WebSocket connection as open until the guard is dropped.
    pub(crate) fn socket_opened(&self) -> OpenSocket {
        self.inner.open_sockets.send_modify(|n| *n += 1);
        OpenSocket { open_sockets: self.inner.open_sockets.clone() }
    }

    /// The process-wide sums of what the WebSocket connections hold for their clients.
    pub(crate) fn queued_totals(&self) -> Arc<QueuedTotals> {
        Arc::clone(&self.inner.queued)
    }

    /// Bytes of messages all WebSocket connections hold for their clients right now (queued,
    /// waiting for the queue or being written), each connection at most
    /// [`crate::ws::MAX_QUEUED_BYTES`].
    pub fn websocket_queued_bytes(&self) -> usize {
        self.inner.queued.held.load(Ordering::Acquire)
    }

    /// The most bytes the WebSocket connections held for their clients at once.
    pub fn websocket_queued_bytes_peak(&self) -> usize {
        self.inner.queued.peak.load(Ordering::Acquire)
    }

    /// WebSocket connections closed (1013) because their client read too slowly.
    pub fn websockets_closed_too_slow(&self) -> usize {
        self.inner.queued.too_slow.load(Ordering::Acquire)
    }

    /// Counts a WebSocket connection of `principal` until the returned guard drops; `None`
    /// when the principal already has `max`.
    pub(crate) fn connection_of(&self, principal: &str, max: usize) -> Option<PrincipalConnection> {
        count_in(&self.inner.connections, principal, max)
    }

    /// `principal`'s turn at parsing a large request body ([`crate::request::LARGE_BODY_BYTES`]),
    /// one at a time each, then the server's, one at a time: one tenant's bodies queue behind
    /// each other, not in front of everyone's (review57 M1). `None` when the server stops.
    pub(crate) async fn large_body_turn(
        &self,
        principal: &str,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit)> {
        let own = self.inner.large_body_turns.turn(principal, 1).await?;
        let server = Arc::clone(&self.inner.large_body_turn).acquire_owned().await.ok()?;
        Some((own, server))
    }

    /// Paces the large request bodies of `owner` ([`crate::config::PACED_BODY_BYTES`] and up;
    /// [`crate::answers::owner`]: a customer's tokens share one pace, rehostile61b L1: six
    /// tokens of one tenant sent six times the pace) to
    /// [`ApiConfig::max_upload_bytes_per_second`] past a burst: a body ahead of its
    /// pace waits until the pace allows it (its connection held, no CPU spent), at most
    /// [`crate::config::MAX_UPLOAD_PACE_WAIT`]; one that would wait longer is refused BUSY,
    /// saying when to send it. Every byte of a large body costs the server's CPU whatever the
    /// answer, and the cores are shared by every tenant (hostile61 M1).
    pub(crate) async fn pace_upload(
        &self,
        owner: &str,
        bytes: usize,
    ) -> Result<(), pop_app::AppError> {
        if bytes < crate::config::PACED_BODY_BYTES {
            return Ok(());
        }
        let rate = self.inner.config.max_upload_bytes_per_second.max(1) as f64;
        let burst = (rate * crate::config::UPLOAD_BURST_SECONDS as f64)
            .max(self.inner.config.max_body_bytes as f64);
        let wait = {
            let mut paces = self.inner.paces.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if !paces.contains_key(owner) {
                // Forgotten once back at its whole burst (an owner sending no more), so the
                // map holds only those that sent within the last burst's worth of seconds.
                if paces.len() >= MAX_PACES {
                    paces.retain(|_, p| {
                        p.credit + now.saturating_duration_since(p.at).as_secs_f64() * rate < burst
                    });
                }
                paces.insert(owner.to_string(), Pace { credit: burst, at: now });
            }
            let Some(pace) = paces.get_mut(owner) else { return Ok(()) };
            let earned = now.saturating_duration_since(pace.at).as_secs_f64() * rate;
            pace.credit = (pace.credit + earned).min(burst);
            pace.at = now;
            let after = pace.credit - bytes as f64;
            let wait = if after >= 0.0 { 0.0 } else { -after / rate };
            if wait > crate::config::MAX_UPLOAD_PACE_WAIT.as_secs_f64() {
                return Err(pop_app::AppError::new(
                    pop_app::error::Code::Busy,
                    format!(
                        "this customer's tokens send large request bodies faster than the server's \
                         --max-upload-bytes-per-second ({} bytes/s): send this one ({bytes} \
                         bytes) again in {} s",
                        rate as u64,
                        wait.ceil() as u64
                    ),
                ));
            }
            pace.credit = after;
            wait
        };
        if wait > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
        }
        Ok(())
    }

    /// Counts a request body of `principal` being received until the returned guard drops;
    /// `None` when the principal already has `max` arriving.
    pub(crate) fn upload_of(&self, principal: &str, max: usize) -> Option<PrincipalConnection> {
        count_in(&self.inner.uploads, principal, max)
    }

    /// WebSocket connections being served right now.
    pub fn open_websockets(&self) -> usize {
        *self.inner.open_sockets.borrow()
    }

    pub(crate) fn metrics_handle(&self) -> Option<&PrometheusHandle> {
        self.inner.metrics.as_ref()
    }
}

/// One more for `principal` in `counts`, counted while the guard lives; `None` at `max`.
fn count_in(
    counts: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
    principal: &str,
    max: usize,
) -> Option<PrincipalConnection> {
    let mut map = counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A key is made only for a principal not counted yet (every request passes here).
    let count = match map.get_mut(principal) {
        Some(count) => count,
        None => map.entry(principal.to_string()).or_default(),
    };
    if *count >= max {
        return None;
    }
    *count += 1;
    Some(PrincipalConnection { connections: Arc::clone(counts), principal: principal.to_string() })
}

/// One initialised WebSocket connection (or request body being received) of a principal,
/// counted while it lives.
pub(crate) struct PrincipalConnection {
    connections: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    principal: String,
}

impl PrincipalConnection {
    /// The principal's name.
    pub(crate) fn principal(&self) -> &str {
        &self.principal
    }
}

impl Drop for PrincipalConnection {
    fn drop(&mut self) {
        let mut connections =
            self.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = connections.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                connections.remove(&self.principal);
            }
        }
    }
}

/// One open WebSocket connection, counted while it lives.
pub(crate) struct OpenSocket {
    open_sockets: watch::Sender<usize>,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.open_sockets.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(cache: &QueryCache, principal: &str, query: &str) -> bool {
        let documents = cache.documents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        documents.by_principal.get(principal).is_some_and(|own| own.contains_key(query))
    }

    /// One principal's queries never answer another's from the cache (hostile21: a shared
    /// cache timed which query texts another tenant had sent), and one principal filling its
    /// own cache does not empty the others'.
    #[test]
    fn each_principal_has_its_own_parsed_queries() {
        let cache = QueryCache::default();
        let mut request = async_graphql::Request::new("{ a }");
        cache.parse_into("acme", &mut request);
        assert!(cached(&cache, "acme", "{ a }"));
        assert!(!cached(&cache, "globex", "{ a }"));
        for n in 0..MAX_CACHED_QUERIES_PER_PRINCIPAL * 3 {
            cache.parse_into("globex", &mut async_graphql::Request::new(format!("{{ f{n} }}")));
        }
        // Many principals filling theirs (hostile22: a bound across them emptied every cache
        // at once, which a tenant could time) leave acme's alone.
        for p in 0..20 {
            for n in 0..MAX_CACHED_QUERIES_PER_PRINCIPAL {
                let principal = format!("p{p}");
                cache.parse_into(
                    &principal,
                    &mut async_graphql::Request::new(format!("{{ g{n} }}")),
                );
            }
        }
        assert!(cached(&cache, "acme", "{ a }"), "globex's queries emptied acme's cache");
        let documents = cache.documents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let globex = documents.by_principal.get("globex").map_or(0, HashMap::len);
        assert!(globex <= MAX_CACHED_QUERIES_PER_PRINCIPAL, "{globex}");
        let all: usize = documents.by_principal.values().map(HashMap::len).sum();
        assert_eq!(all, globex + 1 + 20 * MAX_CACHED_QUERIES_PER_PRINCIPAL);
    }
}
