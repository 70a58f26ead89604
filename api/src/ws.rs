//! The graphql-transport-ws server on `GET /graphql/ws`: the protocol of the `graphql-ws`
//! library (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>), written
//! here over axum's WebSocket because async-graphql's handler closes with other codes than
//! the reference client expects.
//!
//! One connection is one task owning the socket. It reads client messages in order, answers
//! the ones that need an answer (`connection_ack`, `pong`), and runs each `subscribe` as its
//! own task over `schema.execute_stream_with_session_data`, which sends `next`, `error` and
//! `complete` back through one bounded channel; the connection task writes them. Every
//! message an operation queues first reserves its bytes against the connection's bound
//! ([`MAX_QUEUED_BYTES`]); they are released once it is written or dropped. Because
//! `connection_init` is decided as soon as it is read, a `subscribe` sent right behind it
//! (without waiting for the ack) is handled after the ack.
//!
//! What the server does on each violation (the reference server's codes and reasons):
//!
//! | client does | server |
//! |---|---|
//! | offers no `graphql-transport-ws` subprotocol | accepts without one, closes 4406 `Subprotocol not acceptable` (a client that offered another protocol already fails its handshake: the answer names none) |
//! | no `connection_init` within [`CONNECTION_INIT_TIMEOUT`] | 4408 `Connection initialisation timeout` |
//! | a second `connection_init` | 4429 `Too many initialisation requests` |
//! | `connection_init` without a valid token (payload, else the upgrade's header) | 4403 `Forbidden` |
//! | `connection_init` of a principal that already has [`MAX_CONNECTIONS_PER_PRINCIPAL`] connections | 1013 `Try again later: principal … already has … connections` |
//! | `subscribe` before the ack | 4401 `Unauthorized` |
//! | not JSON, not an object, unknown `type`, missing `id`, a bad payload, a server-only type, an unreadable or oversized frame | 4400 `Invalid message received: <why>` |
//! | `subscribe` with the id of an active operation | 4409 `Subscriber for <id> already exists` |
//! | `subscribe` beyond [`MAX_OPERATIONS_PER_CONNECTION`] active ones | an `error` message for that id (BAD_REQUEST); the connection stays open |
//! | reads so slowly that its messages pass [`MAX_QUEUED_BYTES`] held for it | its operations stop, what they queued is dropped, then 1013 `Try again later: the client reads too slowly …` (a close frame queued behind what was already written) |
//!
//! Operation results: a request refused before it executes (syntax, validation, depth and
//! complexity limits, unknown operation) is one `error` message with the errors array and
//! no `complete`; anything that executed (queries and mutations: one result; subscriptions:
//! a stream, including a resolver's refusal such as FORBIDDEN) is `next` messages then
//! `complete`, as the reference server does. Every error carries pop's `extensions.code`
//! and `extensions.cid` (the schema's extension stamps them from the connection's caller).
//! A client's `complete` stops its operation at once and nothing more is sent for it.
//! `ping` is answered with `pong` echoing the payload, before or after the ack.
//!
//! The legacy `graphql-ws` subprotocol of Apollo's unmaintained subscriptions-transport-ws is
//! no longer served: only `graphql-transport-ws` (which, confusingly, is what the npm package
//! `graphql-ws` speaks).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Request, Response, ServerError};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{FutureExt, StreamExt};
use pop_domain::error::ErrorCode;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

use crate::auth::{Principal, token_from_init_payload};
use pop_app::Caller;

use crate::graphql::PopSchema;
use crate::graphql::cost::{Budget, Unfit};
use crate::metrics;
use crate::state::{AppState, PrincipalConnection, QueuedTotals};

/// The only subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// How long a client has after the upgrade to send `connection_init`. An open socket that
/// never authenticates costs a task and a file descriptor; 10 s is the reference server's
/// default and plenty for any client, which sends it right after connecting.
pub const CONNECTION_INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most operations one connection may run at once. Each holds a subscriber buffer and a
/// registration with the change-feed dispatcher; a dashboard follows a few agendas or customers, and a client with
/// more can open another connection. Past it a `subscribe` gets an `error`, not a close, so
/// the operations already running are not torn down by one too many.
pub const MAX_OPERATIONS_PER_CONNECTION: usize = 100;

/// Most WebSocket connections one principal may have open at once (default). Each costs a
/// task, a file descriptor and buffers; one user opened 505 to fill the server's subscription
/// bound. A dashboard tab holds one; 100 covers a team's tabs behind one token. Past it
/// `connection_init` is answered with a close, [`close::TRY_AGAIN_LATER`].
pub const MAX_CONNECTIONS_PER_PRINCIPAL: usize = 100;

/// Longest operation id, in bytes. The reference client uses UUIDs (36 bytes); the id is
/// kept for as long as its operation runs and echoed in every message and in a 4409 reason.
pub const MAX_OPERATION_ID_BYTES: usize = 128;

/// Messages the operations of one connection may have queued for the socket. When the
/// client reads slowly the operations wait here, and their subscriptions' own bounded
/// buffers tell them they lagged; nothing grows without bound.
pub const OUTBOUND_BUFFER: usize = 64;

/// Most bytes of encoded messages one connection may hold for its client: queued, waiting
/// for a place in the queue, or being written. A message of an agenda with large params is
/// up to about 1 MiB (the store's event limit), so 64 queued messages could hold 64 MiB per
/// stalled socket (30 of them OOM-killed a 2 GiB server); 4 MiB holds four of the largest
/// messages and hundreds of ordinary ones, so a client that reads at all keeps up, and 100
/// stalled sockets hold at most 400 MiB. Past it the connection is closed with
/// [`close::TRY_AGAIN_LATER`] (the reference client reconnects and can resume with
/// `afterPosition`). One message larger than the bound is still sent when nothing else is
/// held.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// A message at most this long (a `complete`, an `error`, a `pong`) is a control message:
/// it fits beside one message larger than [`MAX_QUEUED_BYTES`].
const CONTROL_BYTES: usize = 1024;

/// Longest one write to the socket may take. A client that stops reading would otherwise
/// hold its connection, its operations and their buffers forever.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the server pings an initialised connection (a WebSocket Ping frame, which
/// browsers and client libraries answer by themselves). A connection that has sent nothing
/// since the previous ping — no Pong, no message — is closed with 1013 ("try again later",
/// which graphql-ws clients retry; 1008 made the reference client give up): a client that stopped in
/// the middle of a message held its bytes, up to 2 MiB a connection, for as long as it liked
/// (hostile19), and one that stopped answering holds a socket for nothing.
pub const PING_EVERY: Duration = Duration::from_secs(30);

/// Largest message (and frame) a client may send over the WebSocket: a subscription's or a
/// query's document is at most 64 KiB (`MAX_QUERY_BYTES`), and its variables fit beside it; a
/// larger mutation (an agenda with big payloads) goes over `POST /graphql` (8 MiB). A client
/// may hold one message half-sent while it answers pings (RFC 6455 lets control frames come
/// between a message's fragments, and nothing above tungstenite sees the fragments): with the
/// HTTP body limit that held 2 MiB per connection, 370 MB per token, for as long as it liked
/// (hostile20); bounded here to a few MB per token.
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// Longest the server waits for the client to answer its close frame before dropping the
/// connection. Waiting at all lets the client read the close code before the TCP close.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::config::SHUTDOWN_CLOSE_WAIT;

/// Initial read buffer of one connection (tungstenite's default is 128 KiB, allocated and
/// zeroed per socket: 1.25 GiB for 10,000 subscribers). A client sends `connection_init`,
/// `subscribe`, `complete` and `pong`, all well under 1 KiB; a larger message (a mutation up
/// to the body limit) grows the buffer for the frame it needs.
pub const READ_BUFFER_BYTES: usize = 4 << 10;

/// How much tungstenite may collect before writing to the socket. Zero writes each message
/// at once: the connection task flushes after every message anyway, so a batching buffer
/// would only hold memory. The write buffer then never holds more than the one message being
/// written (the task writes one at a time, each bounded by [`SEND_TIMEOUT`]), which is why its
/// maximum (`max_write_buffer_size`) is left at tungstenite's default.
pub const WRITE_BUFFER_BYTES: usize = 0;

/// Longest close reason: a control frame carries at most 125 bytes, 2 of them the code.
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// The reason sent with [`close::GOING_AWAY`].
const GOING_AWAY_REASON: &str = "Going away: the server is shutting down";

/// The close codes of graphql-transport-ws.
pub mod close {
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    pub const CONNECTION_INITIALISATION_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_ALREADY_EXISTS: u16 = 4409;
    pub const TOO_MANY_INITIALISATION_REQUESTS: u16 = 4429;
    /// RFC 6455's "going away": the server is shutting down (not a graphql-transport-ws code;
    /// the reference client treats it as a reason to reconnect).
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455's "try again later": the client read too slowly and the connection held more
    /// than its bound of queued bytes ([`super::MAX_QUEUED_BYTES`]). The reference client
    /// treats it as a reason to reconnect.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The connection limits the router applies; the defaults are the constants above. Tests
/// shorten them to see a timeout or a limit without waiting for the real one.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    pub init_timeout: Duration,
    pub max_operations: usize,
    pub send_timeout: Duration,
    /// See [`MAX_QUEUED_BYTES`]; at least 1.
    pub max_queued_bytes: usize,
    /// See [`MAX_CONNECTIONS_PER_PRINCIPAL`]; at least 1.
    pub max_connections_per_principal: usize,
    /// See [`PING_EVERY`].
    pub ping_every: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            init_timeout: CONNECTION_INIT_TIMEOUT,
            max_operations: MAX_OPERATIONS_PER_CONNECTION,
            send_timeout: SEND_TIMEOUT,
            max_queued_bytes: MAX_QUEUED_BYTES,
            max_connections_per_principal: MAX_CONNECTIONS_PER_PRINCIPAL,
            ping_every: PING_EVERY,
        }
    }
}

/// The bytes one connection holds for its client ([`MAX_QUEUED_BYTES`]), shared by its
/// operations (which reserve before they queue) and its task (which is told when a
/// reservation did not fit). The process-wide sum is kept beside it for `/metrics` and tests.
struct QueuedBytes {
    held: AtomicUsize,
    limit: usize,
    /// The size of the one message held that is larger than the bound (sent because nothing
    /// else was held), 0 when none: the control messages after it still fit.
    oversized: AtomicUsize,
    process: Arc<QueuedTotals>,
    overflowed: AtomicBool,
    overflow: Notify,
}

impl QueuedBytes {
    fn new(limit: usize, process: Arc<QueuedTotals>) -> Arc<QueuedBytes> {
        Arc::new(QueuedBytes {
            held: AtomicUsize::new(0),
            limit: limit.max(1),
            oversized: AtomicUsize::new(0),
            process,
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
        })
    }

    /// Holds `bytes` until the returned guard drops; `None` (and the connection is told to
    /// close) when that would pass the bound while something else is held.
    fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reserved> {
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        // A control message (a `complete`, an `error`, a `pong`) fits beside one message
        // larger than the bound, and beside as many others as the queue holds (reprobe59 L2:
        // the `complete` after an answer over 4 MiB was refused, and the connection closed
        // 1013 for a client that read at full speed, every time it asked again).
        let limit = if bytes <= CONTROL_BYTES {
            self.limit.max(self.oversized.load(Ordering::Acquire)) + CONTROL_BYTES * OUTBOUND_BUFFER
        } else {
            self.limit
        };
        if before > 0 && before.saturating_add(bytes) > limit {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            self.overflowed.store(true, Ordering::Release);
            self.overflow.notify_one();
            return None;
        }
        let now = self.process.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.process.peak.fetch_max(now, Ordering::AcqRel);
        let oversized = before == 0 && bytes > self.limit;
        if oversized {
            self.oversized.store(bytes, Ordering::Release);
        }
        Some(Reserved { queue: Arc::clone(self), bytes, oversized })
    }

    /// Resolves once a reservation did not fit.
    async fn overflowed(&self) {
        loop {
            let notified = self.overflow.notified();
            if self.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Bytes of one message held for the client; released when the message is written or
/// dropped.
struct Reserved {
    queue: Arc<QueuedBytes>,
    bytes: usize,
    /// The one message larger than the bound ([`QueuedBytes::oversized`]).
    oversized: bool,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.oversized {
            self.queue.oversized.store(0, Ordering::Release);
        }
        self.queue.held.fetch_sub(self.bytes, Ordering::AcqRel);
        self.queue.process.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What the upgrade request tells about the connection.
pub(crate) struct Upgrade {
    pub state: AppState,
    /// The principal of the upgrade's `Authorization` header, used when the init payload
    /// carries no token (a browser cannot set headers on a WebSocket; other clients may).
    pub header_principal: Option<Principal>,
    /// The connection's correlation id: every error of its operations carries it.
    pub cid: String,
    /// The upgrade request's `traceparent`: the events of the connection's mutations carry
    /// it (as a POST's carry its own).
    pub traceparent: Option<String>,
    /// The upgrade request's `tracestate`, kept beside the traceparent.
    pub tracestate: Option<String>,
    pub limits: WsLimits,
}

/// Serves one upgraded connection until either side closes it.
pub(crate) async fn serve(mut socket: WebSocket, upgrade: Upgrade) {
    let _open = upgrade.state.socket_opened();
    let mut going_away = upgrade.state.going_away();
    let already_stopping = *going_away.borrow_and_update();
    if already_stopping {
        close_with(&mut socket, close::GOING_AWAY, GOING_AWAY_REASON, &upgrade).await;
        return;
    }
    if socket.protocol().is_none_or(|p| p.as_bytes() != PROTOCOL.as_bytes()) {
        let reason = "Subprotocol not acceptable";
        close_with(&mut socket, close::SUBPROTOCOL_NOT_ACCEPTABLE, reason, &upgrade).await;
        return;
    }
    let (outbound, mut queued) = mpsc::channel(OUTBOUND_BUFFER);
    let held = QueuedBytes::new(upgrade.limits.max_queued_bytes, upgrade.state.queued_totals());
    let mut connection = Connection {
        schema: upgrade.state.schema().clone(),
        session: None,
        init_received: false,
        operations: Operations::default(),
        generations: 0,
        outbound,
        held: Arc::clone(&held),
        slot: None,
        owner: None,
    };
    let too_slow = || {
        let reason = format!(
            "Try again later: the client reads too slowly (more than {} bytes queued)",
            held.limit
        );
        (close::TRY_AGAIN_LATER, reason)
    };
    let init_deadline = tokio::time::sleep(upgrade.limits.init_timeout);
    tokio::pin!(init_deadline);
    let every = upgrade.limits.ping_every.max(Duration::from_millis(10));
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // Whether a ping went out with nothing heard since.
    let mut unanswered = false;
    let (code, reason) = loop {
        let reply = tokio::select! {
            // The server is stopping (or its state is gone, which means the same).
            // (The flag's guard is dropped inside: it must not live across an await.)
            () = async { drop(going_away.wait_for(|stop| *stop).await) } => {
                Step::Close(close::GOING_AWAY, GOING_AWAY_REASON.into())
            }
            () = &mut init_deadline, if !connection.init_received => Step::Close(
                close::CONNECTION_INITIALISATION_TIMEOUT,
                "Connection initialisation timeout".into(),
            ),
            _ = pings.tick(), if connection.init_received => match unanswered {
                true => Step::Close(
                    close::TRY_AGAIN_LATER,
                    format!("Try again later: no answer to a ping within {every:?}"),
                ),
                false => {
                    unanswered = true;
                    Step::Ping
                }
            },
            incoming = socket.recv() => match incoming {
                None => return,
                // The client closes: tungstenite has queued the answer to its close frame,
                // and reading on sends it and ends the stream.
                Some(Ok(Message::Close(_))) => {
                    drop(connection);
                    drain(&mut socket).await;
                    return;
                }
                Some(Err(e)) => Step::Close(close::BAD_REQUEST, invalid(&e.to_string())),
                // Anything heard answers the ping: the client reads and writes.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    unanswered = false;
                    Step::Nothing
                }
                Some(Ok(Message::Text(text))) => {
                    unanswered = false;
                    match paced(&upgrade.state, &connection, text.len()).await {
                        Some(step) => step,
                        None => connection.receive(text.as_bytes(), &upgrade),
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    unanswered = false;
                    match paced(&upgrade.state, &connection, bytes.len()).await {
                        Some(step) => step,
                        None => connection.receive(&bytes, &upgrade),
                    }
                }
            },
            () = held.overflowed() => {
                let (code, reason) = too_slow();
                Step::Close(code, reason)
            }
            Some(out) = queued.recv() => match connection.operations.admit(&out) {
                true => Step::Queued(out),
                false => Step::Nothing,
            },
        };
        let (message, reserved) = match reply {
            Step::Nothing => continue,
            Step::Send(text) => (Message::Text(text.into()), None),
            Step::Queued(out) => (Message::Text(out.text.into()), Some(out.reserved)),
            Step::Ping => (Message::Ping(Default::default()), None),
            Step::Close(code, reason) => break (code, reason),
        };
        let send = tokio::time::timeout(upgrade.limits.send_timeout, socket.send(message));
        // A client that stopped reading holds the write; the operations meanwhile fill the
        // bound, which ends the wait (what was written stays in the socket's buffer, ahead
        // of the close frame).
        let sent = tokio::select! {
            sent = send => sent,
            () = held.overflowed() => break too_slow(),
        };
        drop(reserved);
        if !matches!(sent, Ok(Ok(()))) {
            tracing::debug!(cid = upgrade.cid, "WebSocket write failed or timed out");
            return;
        }
    };
    // Stop the operations and drop what they queued before the close handshake: nothing
    // more is sent for them, and a stalled client holds no more than the socket's buffer
    // while the close frame waits.
    drop(connection);
    drop(queued);
    if code == close::TRY_AGAIN_LATER && reason.contains("reads too slowly") {
        held.process.too_slow.fetch_add(1, Ordering::AcqRel);
        metrics::error(crate::error::Code::Busy.as_str());
        tracing::info!(
            cid = upgrade.cid,
            limit = held.limit,
            "closing a WebSocket whose client reads too slowly"
        );
    }
    close_with(&mut socket, code, &reason, &upgrade).await;
}

/// What the connection task does next.
enum Step {
    Nothing,
    /// A message of the connection itself (ack, pong, a refused subscribe).
    Send(String),
    /// A WebSocket Ping frame ([`PING_EVERY`]).
    Ping,
    /// A message of an operation, with its bytes held until it is written.
    Queued(Outbound),
    Close(u16, String),
}

/// Sends a close frame, then reads until the client answers it (bounded), so the client
/// sees the code before the TCP connection goes.
async fn close_with(socket: &mut WebSocket, code: u16, reason: &str, upgrade: &Upgrade) {
    tracing::debug!(cid = upgrade.cid, code, reason, "closing a WebSocket");
    let frame = CloseFrame { code, reason: truncate(reason, MAX_CLOSE_REASON_BYTES).into() };
    let limits = upgrade.limits;
    let sent =
        tokio::time::timeout(limits.send_timeout, socket.send(Message::Close(Some(frame)))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    drain(socket).await;
}

/// Reads (and drops) what the client still sends until the close handshake is over, for at
/// most [`CLOSE_HANDSHAKE_TIMEOUT`]: reading is what flushes tungstenite's queued answer to
/// the client's close frame.
async fn drain(socket: &mut WebSocket) {
    let drain = async { while let Some(Ok(_)) = socket.recv().await {} };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
}

/// Paces a large message of an initialised connection as a large request body is
/// ([`AppState::pace_upload`], charged to the same principal): a message ahead of its token's
/// pace waits before it is parsed, and one that would wait too long closes the connection
/// (1013, try again later): mutations of 240 KB over graphql-ws went around the HTTP pace and
/// held every tenant's reads at p99 0.3-0.5 s (rehostile61b M1).
async fn paced(state: &AppState, connection: &Connection, bytes: usize) -> Option<Step> {
    let owner = connection.owner.as_deref()?;
    match state.pace_upload(owner, bytes).await {
        Ok(()) => None,
        Err(_) => Some(Step::Close(
            close::TRY_AGAIN_LATER,
            "Try again later: large messages past --max-upload-bytes-per-second".into(),
        )),
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The 4400 reason for `why`.
fn invalid(why: &str) -> String {
    format!("Invalid message received: {why}")
}

/// One connection's protocol state.
struct Connection {
    schema: PopSchema,
    /// The data every operation runs with (the caller), once `connection_init` was accepted.
    session: Option<Arc<Data>>,
    init_received: bool,
    operations: Operations,
    /// Numbers operations, so messages of a stopped operation are never sent for a new one
    /// that reuses its id.
    generations: u64,
    outbound: mpsc::Sender<Outbound>,
    held: Arc<QueuedBytes>,
    /// This connection counted against its principal's connections, once initialised.
    slot: Option<PrincipalConnection>,
    /// Whose share of answers in flight its queries count against ([`crate::answers::owner`]).
    owner: Option<String>,
}

impl Connection {
    fn receive(&mut self, bytes: &[u8], upgrade: &Upgrade) -> Step {
        let message = match ClientMessage::parse(bytes) {
            Ok(m) => m,
            Err(why) => return Step::Close(close::BAD_REQUEST, invalid(&why)),
        };
        match message {
            ClientMessage::ConnectionInit { payload } => self.init(&payload, upgrade),
            ClientMessage::Ping { payload } => {
                Step::Send(encode(&ServerMessage::Pong { payload: payload.as_ref() }))
            }
            ClientMessage::Pong => Step::Nothing,
            ClientMessage::Subscribe { id, request } => self.subscribe(id, *request, upgrade),
            ClientMessage::Complete { id } => {
                // An id that is not running may have just completed on its own: not an error.
                self.operations.stop(&id);
                Step::Nothing
            }
        }
    }

    fn init(&mut self, payload: &Value, upgrade: &Upgrade) -> Step {
        if self.init_received {
            return Step::Close(
                close::TOO_MANY_INITIALISATION_REQUESTS,
                "Too many initialisation requests".into(),
            );
        }
        self.init_received = true;
        // The init payload's token wins over the upgrade's header.
        let principal = match token_from_init_payload(payload) {
            Some(token) => upgrade.state.authenticate(&token),
            None => upgrade.header_principal.clone(),
        };
        let Some(principal) = principal else {
            metrics::error(ErrorCode::Unauthenticated.as_str());
            tracing::info!(cid = upgrade.cid, "WebSocket connection_init without a valid token");
            return Step::Close(close::FORBIDDEN, "Forbidden".into());
        };
        let max = upgrade.limits.max_connections_per_principal.max(1);
        let Some(slot) = upgrade.state.connection_of(&principal.name, max) else {
            metrics::error(crate::error::Code::Busy.as_str());
            let reason = format!(
                "Try again later: principal {:?} already has {max} connections",
                principal.name
            );
            return Step::Close(close::TRY_AGAIN_LATER, reason);
        };
        self.slot = Some(slot);
        self.owner = Some(crate::answers::owner(&principal));
        let mut data = Data::default();
        let caller = Caller::new(principal, upgrade.cid.clone())
            .with_traceparent(upgrade.traceparent.as_deref())
            .with_tracestate(upgrade.tracestate.as_deref());
        data.insert(caller);
        self.session = Some(Arc::new(data));
        Step::Send(encode(&ServerMessage::ConnectionAck))
    }

    fn subscribe(&mut self, id: String, request: Request, upgrade: &Upgrade) -> Step {
        let Some(session) = &self.session else {
            return Step::Close(close::UNAUTHORIZED, "Unauthorized".into());
        };
        if self.operations.running.contains_key(&id) {
            return Step::Close(
                close::SUBSCRIBER_ALREADY_EXISTS,
                format!("Subscriber for {id} already exists"),
            );
        }
        let max = upgrade.limits.max_operations;
        // Refused before it runs: one `error` message (BAD_REQUEST, with the cid), no follow.
        let refuse = |error: pop_app::AppError| {
            metrics::error(error.code.as_str());
            let errors = json!([{
                "message": error.message,
                "extensions": {"code": error.code.as_str(), "cid": upgrade.cid},
            }]);
            Step::Send(encode(&ServerMessage::Error { id: &id, payload: Errors::Json(&errors) }))
        };
        if self.operations.running.len() >= max {
            return refuse(pop_app::AppError::bad_request(format!(
                "this connection already runs {max} operations, the most it may; complete one or open another connection"
            )));
        }
        let mut request = request;
        let max_cost = upgrade.state.config().max_complexity;
        let state = &upgrade.state;
        let principal = self.slot.as_ref().map_or("", |slot| slot.principal());
        // A large document is parsed and validated only with one of its principal's expensive
        // permits, as over `POST /graphql`, held until its first answer (validation is done by
        // then; a query's or mutation's one answer is its end) (reprobe57 M2: WebSocket
        // operations of 64 KiB documents went around that rule).
        let max = state.config().max_expensive_per_principal;
        let written = request.query.len();
        let early =
            match crate::graphql::cost::early_permit(state.running(), principal, max, written) {
                Ok(early) => early,
                Err(error) => return refuse(error),
            };
        if early.is_some() {
            request.data.insert(crate::graphql::cost::HeldEarly);
        }
        match crate::graphql::cost::unfit(&mut [&mut request], max_cost, |r| {
            state.parse_cached(principal, r)
        }) {
            Some(Unfit::TooLong(error) | Unfit::Refused(error)) => return refuse(error),
            None => {}
        }
        let operation_name = request.operation_name.clone();
        let kind = match request.parsed_query() {
            Ok(document) => match crate::graphql::subscription::single_root_field(
                document,
                operation_name.as_deref(),
            ) {
                Ok(kind) => kind,
                Err(why) => return refuse(pop_app::AppError::bad_request(why)),
            },
            // The schema reports what does not parse.
            Err(_) => None,
        };
        // The early permit is given back at the first answer, or for a subscription (which
        // may wait long for its first event) once it is validated (the schema's hook).
        let early = Arc::new(std::sync::Mutex::new(early));
        if matches!(kind, Some(OperationType::Subscription)) {
            request.data.insert(crate::graphql::cost::EarlyRelease(Arc::clone(&early)));
        }
        // A query or a mutation has an end: it gets a POST's bounds (the deadline, the byte
        // budget and its principal's expensive-request permits), not a subscription's
        // (hostile15: one ran 60 s, five of 6,000 points each at once).
        let bounds = match kind {
            Some(OperationType::Query | OperationType::Mutation) => {
                let config = upgrade.state.config();
                let budget = Arc::new(
                    Budget::new(config.max_complexity, config.max_response_bytes)
                        .with_deadline(config.request_deadline),
                );
                request.data.insert(Arc::clone(&budget));
                Some((budget, config.request_deadline))
            }
            _ => None,
        };
        self.generations += 1;
        let generation = self.generations;
        let operation = Operation {
            id: id.clone(),
            generation,
            outbound: self.outbound.clone(),
            held: Arc::clone(&self.held),
            cid: upgrade.cid.clone(),
            bounds,
            early,
            // A query or a mutation takes its customer's ticket for answers in flight, as over
            // HTTP: the estimate and the turn at a large build (reprobe59c M: a 15 MB query in
            // a loop over the WebSocket took no turn, and held another customer's reads at
            // 0.3-0.4 s).
            share: match (kind, &self.owner) {
                (Some(op @ (OperationType::Query | OperationType::Mutation)), Some(owner)) => {
                    Some((upgrade.state.clone(), owner.clone(), op == OperationType::Mutation))
                }
                _ => None,
            },
        };
        let stream = self.schema.execute_stream_with_session_data(request, Arc::clone(session));
        let task = tokio::spawn(operation.run(stream));
        self.operations.running.insert(id, Running { generation, task: task.abort_handle() });
        Step::Nothing
    }
}

/// The operations running on one connection. Dropping it (the connection ended) stops them.
#[derive(Default)]
struct Operations {
    running: HashMap<String, Running>,
}

struct Running {
    generation: u64,
    task: AbortHandle,
}

impl Operations {
    /// Stops the operation `id`, if it runs.
    fn stop(&mut self, id: &str) {
        if let Some(running) = self.running.remove(id) {
            running.task.abort();
        }
    }

    /// Whether `out` may be sent: its operation is still the one running under its id. The
    /// last message of an operation ends it.
    fn admit(&mut self, out: &Outbound) -> bool {
        let current = self.running.get(&out.id).is_some_and(|r| r.generation == out.generation);
        if current && out.last {
            self.running.remove(&out.id);
        }
        current
    }
}

impl Drop for Operations {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

/// A message of an operation, encoded, on its way to the socket.
struct Outbound {
    id: String,
    generation: u64,
    text: String,
    /// `complete` or `error`: the operation is over.
    last: bool,
    reserved: Reserved,
}

/// One running `subscribe`.
struct Operation {
    id: String,
    generation: u64,
    outbound: mpsc::Sender<Outbound>,
    held: Arc<QueuedBytes>,
    cid: String,
    /// A query's or mutation's budget and deadline (none for a subscription).
    bounds: Option<(Arc<Budget>, Duration)>,
    /// The principal's expensive permit a large document took before it was parsed, given
    /// back at the operation's first answer (a subscription's, once validated).
    early: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
    /// A query's or mutation's share of its customer's answers in flight: the state, the
    /// owner and whether it writes ([`crate::answers`]).
    share: Option<(AppState, String, bool)>,
}

impl Operation {
    /// Forwards the results; a panic below becomes an INTERNAL `error` for this operation
    /// instead of an id that stays taken until the connection ends. A query or mutation still
    /// running a second past its deadline (a resolver that waits) is stopped with
    /// DEADLINE_EXCEEDED, as over `POST /graphql`.
    async fn run(self, stream: futures::stream::BoxStream<'static, Response>) {
        let ticket = if let Some((state, owner, write)) = &self.share {
            match state.answers().start(owner, *write).await {
                Ok(ticket) => Some(ticket),
                Err(error) => {
                    metrics::error(error.code.as_str());
                    self.send_error(error.code.as_str(), &error.message).await;
                    return;
                }
            }
        } else {
            None
        };
        let forwarded = AssertUnwindSafe(self.forward(stream, ticket)).catch_unwind();
        let forwarded = match self.bounds.as_ref().map(|(_, deadline)| *deadline) {
            Some(deadline) => {
                match tokio::time::timeout(deadline + crate::config::DEADLINE_GRACE, forwarded)
                    .await
                {
                    Ok(done) => done,
                    Err(_) => {
                        let error = crate::graphql::cost::deadline_error(deadline);
                        self.send_error(error.code.as_str(), &error.message).await;
                        return;
                    }
                }
            }
            None => forwarded.await,
        };
        if forwarded.is_err() {
            tracing::error!(cid = self.cid, id = self.id, "a WebSocket operation panicked");
            let message = "internal error while running the operation; see the server log";
            self.send_error(ErrorCode::Internal.as_str(), message).await;
        }
    }

    /// Ends the operation with one `error` message of `code`, with the connection's cid.
    async fn send_error(&self, code: &str, message: &str) {
        let errors = json!([{ "message": message, "extensions": {"code": code, "cid": self.cid} }]);
        let text = encode(&ServerMessage::Error { id: &self.id, payload: Errors::Json(&errors) });
        self.send(text, true).await;
    }

    /// `ticket`: a query's or mutation's place in its customer's share of answers in flight,
    /// given up once its answer is built.
    async fn forward(
        &self,
        mut stream: futures::stream::BoxStream<'static, Response>,
        mut ticket: Option<crate::answers::Ticket>,
    ) {
        let mut first = true;
        while let Some(response) = stream.next().await {
            // A query's or mutation's answer, as a POST's: one error when it ran past its
            // budget (the schema's request hook, which says so over HTTP, is not run for an
            // operation streamed here), and a bounded list of errors.
            let response =
                crate::graphql::cost::finish(self.bounds.as_ref().map(|(b, _)| &**b), response);
            if first && refused_before_execution(&response) {
                let text = encode(&ServerMessage::Error {
                    id: &self.id,
                    payload: Errors::Schema(&response.errors),
                });
                self.send(text, true).await;
                return;
            }
            if first && let Ok(mut early) = self.early.lock() {
                early.take();
            }
            first = false;
            let text = encode(&ServerMessage::Next { id: &self.id, payload: &response });
            // Built: its size is the next estimate, and the turn is given back (the bytes are
            // bounded by the connection's own queue from here).
            if let (Some(ticket), Some((_, _, write))) = (ticket.take(), &self.share) {
                drop(ticket.hold(text.len(), *write));
            }
            // Not held while the message waits for room: the value is several times its text,
            // which alone counts against the connection's bound (review-s50b).
            drop(response);
            if !self.send(text, false).await {
                return;
            }
        }
        self.send(encode(&ServerMessage::Complete { id: &self.id }), true).await;
    }

    /// Queues one message; `false` when the connection is gone or closing because its
    /// client cannot take the message ([`MAX_QUEUED_BYTES`]).
    async fn send(&self, text: String, last: bool) -> bool {
        let Some(reserved) = self.held.reserve(text.len()) else { return false };
        let out =
            Outbound { id: self.id.clone(), generation: self.generation, text, last, reserved };
        self.outbound.send(out).await.is_ok()
    }
}

/// Whether a response is the refusal of a request that never executed: no data, and errors
/// that belong to no field (parse and validation errors, limits, an unknown operation).
/// Errors raised while executing — a resolver's refusal included — always have a path.
fn refused_before_execution(response: &Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e: &ServerError| e.path.is_empty())
}

/// A message from the server.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage<'a> {
    ConnectionAck,
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<&'a Value>,
    },
    Next {
        id: &'a str,
        payload: &'a Response,
    },
    Error {
        id: &'a str,
        payload: Errors<'a>,
    },
    Complete {
        id: &'a str,
    },
}

/// The errors array of an `error` message: the schema's, or one pop writes itself.
#[derive(Serialize)]
#[serde(untagged)]
enum Errors<'a> {
    Schema(&'a [ServerError]),
    Json(&'a Value),
}

fn encode(message: &ServerMessage<'_>) -> String {
    match serde_json::to_string(message) {
        Ok(text) => text,
        Err(e) => {
            // Values built by the schema always encode; should one not, the client hears of
            // it rather than waiting for a message that never comes.
            tracing::error!(error = %e, "cannot encode a WebSocket message");
            let id = match message {
                ServerMessage::Next { id, .. }
                | ServerMessage::Error { id, .. }
                | ServerMessage::Complete { id } => *id,
                _ => "",
            };
            json!({"id": id, "type": "error", "payload": [{
                "message": "internal error while encoding the result; see the server log",
                "extensions": {"code": ErrorCode::Internal.as_str()},
            }]})
            .to_string()
        }
    }
}

/// A message from the client, checked as the reference implementation checks it.
enum ClientMessage {
    ConnectionInit { payload: Value },
    Ping { payload: Option<Value> },
    Pong,
    Subscribe { id: String, request: Box<Request> },
    Complete { id: String },
}

impl ClientMessage {
    /// The message, or why it is invalid (the 4400 reason).
    fn parse(bytes: &[u8]) -> Result<ClientMessage, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
        let Value::Object(mut message) = value else {
            return Err("a message is a JSON object".into());
        };
        let kind = match message.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err("the 'type' property is not a string".into()),
            None => return Err("the 'type' property is missing".into()),
        };
        match kind.as_str() {
            "connection_init" => {
                Ok(ClientMessage::ConnectionInit { payload: optional_object(&message, &kind)? })
            }
            "ping" => {
                let payload = optional_object(&message, &kind)?;
                Ok(ClientMessage::Ping { payload: Some(payload).filter(|p| !p.is_null()) })
            }
            "pong" => {
                optional_object(&message, &kind)?;
                Ok(ClientMessage::Pong)
            }
            "subscribe" => {
                let id = operation_id(&message, &kind)?;
                let Some(Value::Object(payload)) = message.remove("payload") else {
                    return Err("\"subscribe\" needs a 'payload' object".into());
                };
                Ok(ClientMessage::Subscribe { id, request: Box::new(request(payload)?) })
            }
            "complete" => Ok(ClientMessage::Complete { id: operation_id(&message, &kind)? }),
            "connection_ack" | "next" | "error" => {
                Err(format!("\"{kind}\" is sent by the server, not the client"))
            }
            _ => Err(format!("unknown message type {:?}", truncate(&kind, 32))),
        }
    }
}

/// The `payload` of an init, ping or pong: an object, or null when absent.
fn optional_object(message: &Map<String, Value>, kind: &str) -> Result<Value, String> {
    match message.get("payload") {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(payload @ Value::Object(_)) => Ok(payload.clone()),
        Some(_) => Err(format!("the payload of \"{kind}\" is an object, null or absent")),
    }
}

fn operation_id(message: &Map<String, Value>, kind: &str) -> Result<String, String> {
    match message.get("id") {
        Some(Value::String(id)) if id.is_empty() => {
            Err(format!("\"{kind}\" needs a non-empty 'id'"))
        }
        Some(Value::String(id)) if id.len() > MAX_OPERATION_ID_BYTES => {
            Err(format!("an 'id' is at most {MAX_OPERATION_ID_BYTES} bytes"))
        }
        Some(Value::String(id)) => Ok(id.clone()),
        Some(_) => Err(format!("the 'id' of \"{kind}\" is not a string")),
        None => Err(format!("\"{kind}\" needs an 'id'")),
    }
}

/// The GraphQL request of a `subscribe` payload: `query` a string, `variables` and
/// `extensions` objects and `operationName` a string when present (null is absent).
fn request(mut payload: Map<String, Value>) -> Result<Request, String> {
    if !matches!(payload.get("query"), Some(Value::String(_))) {
        return Err("the payload's 'query' is not a string".into());
    }
    for (field, object) in [("variables", true), ("extensions", true), ("operationName", false)] {
        match payload.get(field) {
            Some(Value::Null) => {
                payload.remove(field);
            }
            Some(Value::Object(_)) if object => {}
            Some(Value::String(_)) if !object => {}
            None => {}
            Some(_) => {
                let shape = if object { "an object" } else { "a string" };
                return Err(format!("the payload's '{field}' is not {shape}"));
            }
        }
    }
    serde_json::from_value(Value::Object(payload))
        .map_err(|e| format!("the payload is not a GraphQL request ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_messages_after_one_message_over_the_bound_fit() {
        let held = QueuedBytes::new(10_000, Arc::default());
        let big = held.reserve(50_000).expect("one message over the bound, nothing else held");
        let complete = held.reserve(40).expect("its complete fits beside it");
        assert!(held.reserve(2_000).is_none(), "a data message does not");
        drop((big, complete));
        let ordinary = held.reserve(9_000).expect("within the bound");
        assert!(held.reserve(40).is_some(), "a control message fits within the bound");
        assert!(held.reserve(2_000).is_none(), "past the bound, a data message does not fit");
        drop(ordinary);
    }

    fn reason(text: &str) -> String {
        match ClientMessage::parse(text.as_bytes()) {
            Ok(_) => "ok".into(),
            Err(why) => why,
        }
    }

    #[test]
    fn messages_are_checked_like_the_reference_does() {
        for ok in [
            r#"{"type":"connection_init"}"#,
            r#"{"type":"connection_init","payload":null}"#,
            r#"{"type":"connection_init","payload":{"token":"x"}}"#,
            r#"{"type":"ping","payload":{"a":1}}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }"}}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":null,"operationName":null,"extensions":null}}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":{"x":1},"operationName":"A"}}"#,
            r#"{"type":"complete","id":"1"}"#,
        ] {
            assert_eq!(reason(ok), "ok", "{ok}");
        }
        for (bad, why) in [
            ("{", "not JSON"),
            ("[]", "JSON object"),
            (r#"{"id":"1"}"#, "'type' property is missing"),
            (r#"{"type":1}"#, "not a string"),
            (r#"{"type":"start","id":"1"}"#, "unknown message type"),
            (r#"{"type":"next","id":"1","payload":{}}"#, "sent by the server"),
            (r#"{"type":"connection_init","payload":"token"}"#, "is an object"),
            (r#"{"type":"subscribe","payload":{"query":"{ a }"}}"#, "needs an 'id'"),
            (r#"{"type":"subscribe","id":"","payload":{"query":"{ a }"}}"#, "non-empty"),
            (r#"{"type":"subscribe","id":1,"payload":{"query":"{ a }"}}"#, "not a string"),
            (r#"{"type":"subscribe","id":"1"}"#, "'payload' object"),
            (r#"{"type":"subscribe","id":"1","payload":{}}"#, "'query'"),
            (
                r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":[]}}"#,
                "'variables'",
            ),
            (
                r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }","operationName":1}}"#,
                "'operationName'",
            ),
            (r#"{"type":"complete"}"#, "needs an 'id'"),
        ] {
            let got = reason(bad);
            assert!(got.contains(why), "{bad}: {got:?} should mention {why:?}");
        }
        let long =
            format!(r#"{{"type":"complete","id":"{}"}}"#, "x".repeat(MAX_OPERATION_ID_BYTES + 1));
        assert!(reason(&long).contains("at most"));
    }

    #[test]
    fn close_reasons_fit_a_control_frame_at_a_character_boundary() {
        let reason = invalid(&"é".repeat(200));
        let cut = truncate(&reason, MAX_CLOSE_REASON_BYTES);
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES && reason.starts_with(cut));
        assert_eq!(truncate("short", MAX_CLOSE_REASON_BYTES), "short");
    }

    #[test]
    fn server_messages_have_the_protocol_shape() {
        assert_eq!(encode(&ServerMessage::ConnectionAck), r#"{"type":"connection_ack"}"#);
        let ping = json!({"at": 1});
        assert_eq!(
            encode(&ServerMessage::Pong { payload: Some(&ping) }),
            r#"{"type":"pong","payload":{"at":1}}"#
        );
        assert_eq!(encode(&ServerMessage::Pong { payload: None }), r#"{"type":"pong"}"#);
        assert_eq!(encode(&ServerMessage::Complete { id: "a" }), r#"{"type":"complete","id":"a"}"#);
    }
}
