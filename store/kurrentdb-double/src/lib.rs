//! A protocol double of KurrentDB for pop's tests: an in-process gRPC server that speaks the
//! KurrentDB protocol, generated at build time from the `.proto` files shipped inside the
//! `kurrentdb` client crate (see `build.rs`), and implements exactly what pop uses:
//! `ServerFeatures.GetSupportedMethods` (the client asks it on connecting), and
//! `Streams.Append`, `Streams.Read` (one stream, `$all`, filtered `$all`, catch-up
//! subscriptions to `$all`) and `Streams.Tombstone`. Everything else answers UNIMPLEMENTED.
//!
//! **What it proves**: pop's mapping code and the client's wire behaviour (requests, answers,
//! errors as the client decodes them). **What it does not**: KurrentDB's semantics. Where the
//! double had to guess what the server does, the code says `GUESS` with the source; they
//! are:
//! - idempotent re-sends (`log::Log::append`): exact/`NoStream` re-sends to a stream past the
//!   expected revision succeed when the ids match from the expected place; a stream exactly
//!   at the expected revision takes the events whatever their ids; `Any` re-sends succeed
//!   when the first id is found (the server's bounded cache, unbounded here); a partial
//!   match is a wrong expected version (EventStoreDB docs, *Optimistic concurrency and
//!   idempotence*; KurrentDB .NET client docs, *Appending events*; EventStore forum,
//!   *Idempotency confirmation*);
//! - positions: a one-event write answers with the event's own position, commit = prepare
//!   (the client's test `test_read_stream_populates_log_position`); the events of one write
//!   share a commit position and have growing prepare positions; no event sits at (0, 0);
//! - tombstones (`log::Log::tombstone`): a missing stream can be tombstoned; the tombstone
//!   is a `$streamDeleted` record in the deleted stream; reading a tombstoned stream fails
//!   with `stream-deleted` (the client's test `test_tombstone_stream`); the deleted events
//!   stay in `$all` (EventStoreDB docs, *Deleting streams and events*: "The $all stream
//!   bypasses the index … events that have been deleted are still readable until a
//!   scavenge");
//! - `$all` reads include the record at their start position forwards and start before it
//!   backwards; subscriptions start after their position; a backwards stream read from past
//!   the end starts at the last event (KurrentDB docs, *Reading events* and *Catch-up
//!   subscriptions*; pop copes with either answer where the docs are silent);
//! - errors: the status codes and `exception` metadata keys (`stream-deleted`,
//!   `wrong-expected-version`, `maximum-append-size-exceeded`) the official clients decode
//!   (their `Constants.Exceptions` tables);
//! - "fell behind" / "caught up" / filter checkpoints are sent at thresholds of the double's
//!   own choosing; only the messages matter to a client;
//! - credentials are not checked and there is no TLS (`?tls=false` URLs).

mod log;
mod proto;
mod service;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use proto::event_store::client::streams::streams_server::StreamsServer;
use service::{Service, State};

/// The version the double reports (a KurrentDB release whose protocol the client's `.proto`
/// files describe).
pub const SERVER_VERSION: &str = "25.0.0";

/// The append cap the double enforces by default: 16 MiB, as the `docker run` line in
/// pop's README configures the real server (whose own default, 1 MiB, refuses pop's largest
/// events).
pub const DEFAULT_MAX_APPEND_SIZE: usize = 16 << 20;

/// gRPC messages the double accepts: an append of pop's largest size plus framing.
const MAX_MESSAGE: usize = 64 << 20;

/// How a double behaves.
#[derive(Debug, Clone, Copy)]
pub struct DoubleOptions {
    /// The server's `MaxAppendSize`.
    pub max_append_size: usize,
}

impl Default for DoubleOptions {
    fn default() -> Self {
        DoubleOptions { max_append_size: DEFAULT_MAX_APPEND_SIZE }
    }
}

/// A running double on a loopback port. Dropping it stops the server.
pub struct KurrentDouble {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for KurrentDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentDouble").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl KurrentDouble {
    /// Starts a double on `127.0.0.1` and an ephemeral port, with a few system records in
    /// its log (as a fresh server has), so clients meet `$`-streams in `$all`.
    pub async fn start(options: DoubleOptions) -> std::io::Result<KurrentDouble> {
        let mut log = log::Log::new(options.max_append_size);
        log.system_record("$epoch-information", "$epoch-information", 0);
        log.system_record("$scavenges", "$scavengeIndexInitialized", 0);
        let records = log.records().len();
        let state = Arc::new(State {
            log: Mutex::new(log),
            written: watch::channel(records).0,
            cut: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let service = Service(Arc::clone(&state));
        let router = tonic::transport::Server::builder()
            .add_service(
                StreamsServer::new(service.clone())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(ServerFeaturesServer::new(service));
        // No Nagle delay, as the real server (Kestrel) answers: a client-streaming append
        // would otherwise wait for a delayed ACK on every call.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(KurrentDouble { addr, state, stop: Some(stop), server })
    }

    /// The connection string of this double.
    pub fn url(&self) -> String {
        format!("kurrentdb://{}?tls=false", self.addr)
    }

    /// Cuts every open subscription, as a dropped connection or a restarted node would
    /// (each gets UNAVAILABLE); new requests are served as before.
    pub fn cut_subscriptions(&self) {
        self.state.cut.send_modify(|generation| *generation += 1);
    }

    /// Records in `$all`, system records and tombstones included.
    pub fn records(&self) -> usize {
        self.state.log.lock().map_or(0, |log| log.records().len())
    }
}

impl Drop for KurrentDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}
