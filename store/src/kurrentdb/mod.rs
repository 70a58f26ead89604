//! The KurrentDB (EventStoreDB) backend: pop's event log on a KurrentDB server or cluster,
//! through the official gRPC client (`kurrentdb`, the successor of the `eventstore` crate).
//! Built with the cargo feature `kurrentdb`.
//!
//! What maps directly: streams are KurrentDB streams of the same name, versions are stream
//! revisions, positions are KurrentDB's (commit, prepare) log positions, expected versions are
//! the same four cases (pop took them from EventStoreDB), deletes are tombstones (hard
//! deletes: a reaped stream can never be written again).
//!
//! What pop adds on top, because KurrentDB does not do it and pop's contract needs it:
//! - **Event-id uniqueness across the log** ([`append`]): KurrentDB only checks ids for
//!   idempotent re-sends to the same place of the same stream. Pop binds every event id to
//!   the place it is written, with a one-event *claim stream* per id (`pop.id-<uuid>`)
//!   written before the events, so a reused id is refused as on the other backends.
//! - **`recorded_at` from the injected clock and the schema version**: an envelope in the
//!   event's custom metadata ([`codec`]), which also carries the caller's metadata.
//! - **Deleted streams vanish from `$all`**: KurrentDB keeps a tombstoned stream's events in
//!   `$all` until a scavenge; pop drops them from `read_all` and `subscribe_all` ([`read`]).
//! - **Leader leases** ([`lease`]): KurrentDB has no locks, so a lease on a lock stream with
//!   a fencing token.
//!
//! Verification: the conformance suite runs in CI against a protocol double
//! (`store/kurrentdb-double`, an in-process gRPC server built from the client's `.proto`
//! files). That proves this mapping and the client's wire behaviour, not KurrentDB's
//! semantics; with `POP_KURRENTDB_URL` set the same suite runs against a real server.

mod append;
pub mod codec;
pub mod lease;
mod read;
mod subscribe;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use kurrentdb::{Client, ClientSettings};
use tracing::Instrument;

use crate::{
    AppendResult, Clock, Direction, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StoreError, system_clock,
};

pub use lease::{KurrentLeadership, LeaseOptions};

/// Most streams remembered as deleted, to skip their events in `$all` without asking the
/// server again. A tombstone is permanent, so an entry never goes stale; the set is only
/// bounded (cleared when full) so a log with millions of reaped streams cannot grow it
/// without limit.
pub const DELETED_CACHE: usize = 100_000;

/// How the store behaves beyond what the URL says.
#[derive(Clone)]
pub struct KurrentOptions {
    /// Stamps `recorded_at` (tests inject a fixed clock).
    pub clock: Clock,
    /// `""` (the default): pop's streams are the server's streams of the same names. Else
    /// pop writes and sees only streams named `<namespace>:<stream>`, so several pop
    /// installations, or test runs, can share one server (1–64 ASCII letters, digits, `-`,
    /// `_`).
    pub namespace: String,
}

impl std::fmt::Debug for KurrentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentOptions").finish_non_exhaustive()
    }
}

impl Default for KurrentOptions {
    fn default() -> Self {
        KurrentOptions { clock: system_clock(), namespace: String::new() }
    }
}

/// Pop's event store on KurrentDB. Cheap to clone: clones share the client (one gRPC channel
/// per node) and the cache of deleted streams.
#[derive(Clone)]
pub struct KurrentStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KurrentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentStore").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    /// How pop's stream names map to the server's.
    pub(crate) names: codec::Names,
    /// `KurrentOptions::clock`, never earlier than the log's last commit when connected nor
    /// than what it gave before ([`crate::clock::monotonic`]).
    pub(crate) clock: Clock,
    /// The latest time `clock` gave ([`EventStore::commit_floor`]).
    pub(crate) floor: crate::clock::CommitFloor,
    /// Streams known to be tombstoned ([`DELETED_CACHE`]).
    pub(crate) deleted: Mutex<HashSet<Arc<str>>>,
}

/// Whether `url` names a KurrentDB server for [`KurrentStore::connect`]: every scheme the
/// client accepts (`kurrentdb://`, `kurrent://`, `kdb://`, `esdb://`, and each with
/// `+discover` for a cluster found through DNS/gossip).
pub fn is_kurrentdb_url(url: &str) -> bool {
    let Some((scheme, _)) = url.split_once("://") else {
        return false;
    };
    let base = scheme.strip_suffix("+discover").unwrap_or(scheme);
    matches!(base.to_ascii_lowercase().as_str(), "kurrentdb" | "kurrent" | "kdb" | "esdb")
}

/// The client settings for `url`. Connection settings, TLS and credentials all come from the
/// URL, as in every KurrentDB client: e.g.
/// `kurrentdb://admin:changeit@localhost:2113?tls=true&tlsVerifyCert=false` or
/// `kurrentdb://localhost:2113?tls=false` for an insecure dev server.
pub fn client_settings(url: &str) -> Result<ClientSettings, StoreError> {
    url.parse::<ClientSettings>()
        .map_err(|e| StoreError::backend("reading the KurrentDB connection string", e))
}

/// The URL parameter that names pop's namespace (`KurrentOptions::namespace`), e.g.
/// `kurrentdb://host:2113?tls=false&popNamespace=staging`. Pop removes it before the client
/// reads the URL.
pub const NAMESPACE_PARAM: &str = "popNamespace";

/// `url` without pop's own parameter, and that parameter's value.
pub fn split_namespace(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut namespace = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key.eq_ignore_ascii_case(NAMESPACE_PARAM) {
                namespace = Some(value.to_owned());
                false
            } else {
                true
            }
        })
        .collect();
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    (url, namespace)
}

impl KurrentStore {
    /// Connects to the server(s) at `url` and checks that one answers. A `popNamespace`
    /// parameter in the URL sets the namespace when `options` has none.
    pub async fn connect(url: &str, options: KurrentOptions) -> Result<KurrentStore, StoreError> {
        let (url, from_url) = split_namespace(url);
        let namespace = match (options.namespace.as_str(), from_url) {
            ("", Some(ns)) => ns,
            (ns, _) => ns.to_owned(),
        };
        let names = codec::Names::new(&namespace)?;
        let client = Client::new(client_settings(&url)?).map_err(|e| StoreError::Backend {
            context: "creating the KurrentDB client",
            source: Arc::new(EyreError(e.to_string())),
        })?;
        // Fail at start-up, not at the first request, when no node answers.
        client
            .server_info()
            .await
            .map_err(|e| StoreError::backend("connecting to KurrentDB", e))?;
        let mut inner = Inner {
            client,
            names,
            clock: options.clock,
            floor: crate::clock::CommitFloor::new(i64::MIN),
            deleted: Mutex::new(HashSet::new()),
        };
        // Commit times never go back, across a wall clock stepped back and across restarts
        // (this process's own commits; other processes' clocks differ by their skew).
        inner.floor = crate::clock::CommitFloor::new(read::last_commit(&inner).await?);
        inner.clock = crate::clock::monotonic(inner.clock.clone(), inner.floor.clone());
        Ok(KurrentStore { inner: Arc::new(inner) })
    }

    /// The client, shared with the [`KurrentLeadership`] of the same server.
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

/// The client's start-up error (an `eyre::Report`, which is not a `std::error::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EyreError(String);

#[async_trait]
impl EventStore for KurrentStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let span =
            tracing::info_span!("append", store = "kurrentdb", stream, events = events.len());
        append::append(&self.inner, stream, expected, events).instrument(span).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(&self.inner, stream, from_version, max, direction).await
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_all(&self.inner, after, max).await
    }

    fn subscribe_all(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        subscribe::subscribe_all(Arc::clone(&self.inner), after)
    }

    async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<(), StoreError> {
        append::delete_stream(&self.inner, stream, expected).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        read::head(&self.inner).await
    }

    fn commit_floor(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.inner.floor.time()
    }

    fn give_time(&self, wall: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        self.inner.floor.give_time(wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_client_scheme_select_kurrentdb() {
        for url in [
            "kurrentdb://localhost:2113?tls=false",
            "kurrentdb+discover://cluster.example:2113",
            "esdb://admin:changeit@localhost:2113",
            "esdb+discover://a:1,b:2",
            "kurrent://h",
            "kdb://h",
        ] {
            assert!(is_kurrentdb_url(url), "{url}");
        }
        for url in ["postgres://db/pop", "sqlite:pop.db", "kurrentdb", "http://h:2113"] {
            assert!(!is_kurrentdb_url(url), "{url}");
        }
    }

    #[test]
    fn the_namespace_parameter_is_pops_and_leaves_the_rest_to_the_client() {
        assert_eq!(split_namespace("kurrentdb://h:2113"), ("kurrentdb://h:2113".into(), None));
        assert_eq!(
            split_namespace("kurrentdb://h:2113?popNamespace=a"),
            ("kurrentdb://h:2113".into(), Some("a".into()))
        );
        assert_eq!(
            split_namespace("kurrentdb://h?tls=false&popnamespace=b&tlsVerifyCert=false"),
            ("kurrentdb://h?tls=false&tlsVerifyCert=false".into(), Some("b".into()))
        );
        assert!(client_settings("kurrentdb://h:2113?tls=false").is_ok());
        assert!(client_settings("not a url").is_err());
    }
}
