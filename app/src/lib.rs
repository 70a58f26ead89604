//! pop's application layer: every use case, once. GraphQL, the POP REST surface and the
//! dashboard (all in `pop-api`) are transports over it, and what the log-reading audit tools
//! need from the read side is here too, so a rule exists in one place whoever asks.
//!
//! One function per use case, each a method of [`App`] taking the [`Caller`]: it authorises
//! inside itself (role, then tenancy), decides through the domain, and answers domain values
//! ([`outcome`]) or an [`AppError`] whose [`Code`] the transports map to GraphQL extensions and
//! HTTP statuses. Every error carries the caller's cid.
//!
//! Map: [`caller`] (principals, roles, the caller), [`error`] (codes and what leaks),
//! [`limits`] (every bound, and [`AppConfig`]), [`agendas`] (submit, run a template, rerun,
//! expand, cancel), [`work`] (the resource pool's `getAgenda`, reports, release), [`handout`]
//! (a submission handed straight to a waiting `getAgenda`), [`configs`]
//! (customers, pools, insights, templates: CRUD and reads), [`reads`] (lookups, lists,
//! summaries, event pages, insight counters, read-your-writes), [`live`] (following progress
//! as it changes, over [`feed`]), [`stats`] (the dashboard's counts per state and per minute),
//! [`metrics`].
//!
//! This crate must never:
//! - depend on a transport (axum, async-graphql, HTTP types): a test in `tests/` reads
//!   Cargo.toml and fails if one appears;
//! - append events except through `Commands::execute` (or `execute_chain`, the hand-out's
//!   chain of commands) of a domain command (no raw appends, no deletes), so every write is
//!   decided by the domain against the stream's version;
//! - update a read model, or feed a follower from the command path: reads and follows come
//!   from the projections, which follow the log;
//! - reveal an object to a caller who may not see it: reads filter by the caller's customers,
//!   and writes to invisible objects answer NOT_FOUND exactly like missing ones;
//! - leak store or codec internals (they are logged; the caller gets INTERNAL), or answer an
//!   error without a code and the caller's cid;
//! - panic or `unwrap` on a request path, or accept unbounded input ([`limits`]).

pub mod agendas;
pub mod asof;
pub mod caller;
pub mod configs;
pub mod error;
pub mod feed;
pub mod handout;
pub mod history;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod outcome;
pub mod reads;
pub mod resolve;
pub mod stats;
pub mod work;

use std::sync::Arc;

use pop_projections::Projections;
use pop_store::{Commands, EventMetadata, EventStore, Position};

pub use caller::{Action, Caller, Principal, Role};
pub use error::{AppError, AppResult, Code};
pub use limits::AppConfig;
pub use outcome::{AgendaOutcome, Configured, Holding, Page};
pub use pop_projections::Visibility;

tokio::task_local! {
    /// How long the use cases run on this task waited for work to come ([`measuring_waits`]).
    static WAITED: std::cell::Cell<std::time::Duration>;
}

/// Runs `request`, returning what it returned and how long it waited for work to come (a
/// `getAgenda` long poll with nothing queued): the transports leave that wait out of their
/// request latencies, or an idle worker's polls read as slow requests (newcomer55 M2).
pub async fn measuring_waits<F: std::future::Future>(
    request: F,
) -> (F::Output, std::time::Duration) {
    WAITED
        .scope(std::cell::Cell::new(std::time::Duration::ZERO), async {
            let output = request.await;
            (output, WAITED.with(std::cell::Cell::get))
        })
        .await
}

/// Adds `d` to the waits of the request this task runs, if it is measured.
pub(crate) fn waited(d: std::time::Duration) {
    let _ = WAITED.try_with(|w| w.set(w.get().saturating_add(d)));
}

/// The application: what every use case works through. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    commands: Arc<Commands>,
    projections: Projections,
    config: AppConfig,
    /// Agendas this replica is claiming or has just claimed (`getAgenda`).
    claims: work::ClaimBook,
    /// The `getAgenda` calls of this replica waiting for work ([`handout`]).
    desk: handout::Desk,
    /// Routes the projections' changes to the followers (one reader of the feed).
    feed: feed::Dispatcher,
    /// Turns true when the server stops: waiting `getAgenda` calls answer at once.
    waits_ended: tokio::sync::watch::Sender<bool>,
    /// How many `getAgenda` calls of each principal wait for work now (`work::WaitTicket`).
    waiting: work::Waiting,
    /// Each customer's (or principal's) turns at a follow's resync scan
    /// ([`limits::MAX_RESYNC_SCANS_PER_OWNER`]).
    resync_turns: Turns,
    /// Per customer (or principal), its turns at producing follow items ([`live::Turn`]).
    delivery_turns: Turns,
    /// Held by a create whose id must differ from every other object's ignoring case
    /// ([`configs::ConfigKind::UNIQUE_IGNORING_CASE`]) from its check to its append.
    case_turn: tokio::sync::Mutex<()>,
    /// One large batch's summary decoded at a time ([`reads::LARGE_SUMMARY`]): the rest wait
    /// their turn, first come first served, and the other core stays for everything else.
    summary_turn: Arc<tokio::sync::Semaphore>,
    /// Each set of customers' turn at a large summary, before the server's
    /// ([`reads::LARGE_SUMMARY`]): one at a time each, so the server's queue holds at most one
    /// per customer (all its tokens together), and one per admin of every customer.
    summary_turns: Turns,
    /// The last look at the store by a read that waits for the read models
    /// ([`reads::StoreProbe`]): one a moment for all of them.
    store_probe: std::sync::Mutex<reads::StoreProbe>,
    /// Per insight id, the gate between its submissions (read: together) and an update that
    /// may hand its agendas to other workers (write: alone, from its check to its append;
    /// reprobe58 M1: an agenda submitted at the moment of the update was bound just before
    /// it, unseen by the check, 25 times in 30). In this process only: replicas of one
    /// PostgreSQL store do not share it. Ids are bounded by the insights ever submitted to.
    insight_gates:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl App {
    /// The application over `store`, executing commands with `commands` (share the server's
    /// one: it caches aggregate states) and reading `projections` (whose runner the server
    /// drives).
    pub fn new(
        store: Arc<dyn EventStore>,
        commands: Arc<Commands>,
        projections: Projections,
        config: AppConfig,
    ) -> App {
        let config = config.bounded();
        let changes = projections.clone();
        let feed =
            feed::Dispatcher::new(config.subscriber_buffer, limits::MAX_SUBSCRIBERS, move || {
                changes.subscribe_changes()
            })
            .with_share(config.max_subscriptions_per_principal);
        App {
            inner: Arc::new(Inner {
                store,
                commands,
                projections,
                config,
                claims: work::ClaimBook::default(),
                desk: handout::Desk::default(),
                feed,
                waits_ended: tokio::sync::watch::Sender::new(false),
                waiting: work::Waiting::default(),
                resync_turns: Turns::default(),
                delivery_turns: Turns::default(),
                case_turn: tokio::sync::Mutex::new(()),
                summary_turn: Arc::new(tokio::sync::Semaphore::new(1)),
                summary_turns: Turns::default(),
                store_probe: std::sync::Mutex::default(),
                insight_gates: std::sync::Mutex::default(),
            }),
        }
    }

    pub fn config(&self) -> &AppConfig {
        &self.inner.config
    }

    pub fn projections(&self) -> &Projections {
        &self.inner.projections
    }

    /// The gate of insight `id` ([`Inner::insight_gates`]): a submission reads it, an update
    /// that may hand the insight's agendas over writes it.
    pub(crate) fn insight_gate(&self, id: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut gates =
            self.inner.insight_gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Looked up before it is made: every submission asks, and an id is made once.
        if let Some(gate) = gates.get(id) {
            return Arc::clone(gate);
        }
        Arc::clone(gates.entry(id.to_string()).or_default())
    }

    /// One create of a kind whose ids are unique ignoring case at a time in this process.
    pub(crate) async fn case_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.case_turn.lock().await
    }

    /// The time commands are stamped with: the wall clock, or the store's last commit time
    /// when the wall clock is behind it (stepped back): the times pop shows (`addedTime`,
    /// `updatedTime`, `completedTime`) then never precede the commits that made them, and
    /// as-of by a shown time still reads the change it labels (review-s36b).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        pop_store::clock::now_for(self.store().as_ref())
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    pub fn commands(&self) -> &Arc<Commands> {
        &self.inner.commands
    }

    /// Why the store cannot serve requests now, if it cannot (what `/readyz` answers): it
    /// does not answer a read of its head within [`limits::STORE_PROBE_TIMEOUT`] (a database
    /// restarting or unreachable), or an append failed as unavailable (disk full) within the
    /// last [`limits::UNAVAILABLE_HOLD`] and none succeeded since. Readiness comes back by
    /// itself: once the store answers again, and a successful append or the hold's end (the
    /// next failing append drops it again) clears the failure.
    pub async fn store_trouble(&self) -> Option<String> {
        self.store_trouble_at(&self.probe_head().await)
    }

    /// The log head, read within [`limits::STORE_PROBE_TIMEOUT`]; else why it could not be.
    pub async fn probe_head(&self) -> Result<Position, String> {
        match tokio::time::timeout(limits::STORE_PROBE_TIMEOUT, self.store().head()).await {
            Err(_) => Err(format!(
                "the event store did not answer within {:?}{}",
                limits::STORE_PROBE_TIMEOUT,
                self.store().slow_head_hint().map(|h| format!(" ({h})")).unwrap_or_default()
            )),
            Ok(Err(e)) => Err(format!(
                "the event store cannot be read: {}",
                pop_domain::error::ErrorChain(&e)
            )),
            Ok(Ok(head)) => Ok(head),
        }
    }

    /// [`Self::store_trouble`] given a [`Self::probe_head`] already made (one read of the
    /// head serves a `/metrics` scrape and its readiness).
    pub fn store_trouble_at(&self, head: &Result<Position, String>) -> Option<String> {
        // For good: the log went back under this process (a restore), which needs a restart.
        if let Some(why) = self.store().log_went_back() {
            return Some(why);
        }
        if let Some(why) = self.store().changed_under() {
            return Some(why);
        }
        if let Some(why) = self.store().damaged() {
            return Some(why);
        }
        if let Some(why) = self.store().disk_trouble() {
            return Some(why);
        }
        if let Err(why) = head {
            return Some(why.clone());
        }
        match self.commands().unavailable() {
            Some(u) if u.held => Some(format!(
                "the checkpoint sealer's last write failed {:.1} s ago (a full disk, or the \
                 database read-only, restarting or unreachable: free space where the store \
                 lives, or check the database); ready again once a write lands (the sealer \
                 tries every few seconds): {}",
                u.ago.as_secs_f64(),
                u.why
            )),
            Some(u) if u.ago < limits::UNAVAILABLE_HOLD => Some(format!(
                "the event store's last write failed {:.1} s ago (a full disk, or the database \
                 read-only, restarting or unreachable: free space where the store lives, or \
                 check the database); ready again after a write succeeds, or {} s after the \
                 last failure whatever the disk (alert on pop_api_commands_total with \
                 outcome=\"unavailable\" too): {}",
                u.ago.as_secs_f64(),
                limits::UNAVAILABLE_HOLD.as_secs(),
                u.why
            )),
            _ => None,
        }
    }

    pub(crate) fn claims(&self) -> &work::ClaimBook {
        &self.inner.claims
    }

    pub(crate) fn desk(&self) -> &handout::Desk {
        &self.inner.desk
    }

    /// How many `getAgenda` calls wait at the hand-out desk (for tests).
    pub fn waiting_at_desk(&self) -> usize {
        self.inner.desk.seated()
    }

    pub(crate) fn feed(&self) -> &feed::Dispatcher {
        &self.inner.feed
    }

    /// Ends every wait for work (`getAgenda` with `waitSeconds`), now and from now on: each
    /// answers what it has claimed, usually nothing. The server calls it when it stops, so
    /// waiting requests do not hold up the drain.
    pub fn end_waits(&self) {
        self.inner.waits_ended.send_replace(true);
    }

    pub(crate) fn waits_ended(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.waits_ended.subscribe()
    }

    /// Waits for a turn of `owner` (a customer's follows, or a principal's) at a resync scan;
    /// the turn ends when the permit drops.
    pub(crate) async fn resync_turn(
        &self,
        owner: &str,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.resync_turns.turn(owner, limits::MAX_RESYNC_SCANS_PER_OWNER).await
    }

    /// Waits for a turn of `owner` (a customer's follows, or a principal's) at producing a
    /// follow item ([`live::Turn`]).
    pub(crate) async fn delivery_turn(&self, owner: &str) -> live::Turn {
        let permit = self.inner.delivery_turns.turn(owner, limits::MAX_DELIVERIES_PER_OWNER).await;
        live::Turn::of(permit)
    }

    pub(crate) fn waiting(&self) -> &work::Waiting {
        &self.inner.waiting
    }
}

/// Per owner (a customer, or a principal), its turns at something ([`Turns::turn`]); the API's
/// transports keep theirs in the same kind.
#[derive(Default)]
pub struct Turns(std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>);

impl Turns {
    /// One of `owner`'s `permits` turns (made on its first use; owners, customers and
    /// principals, are bounded by the config and the token file, so is the map); the turn
    /// ends when the permit drops. `None` only if the semaphore was closed.
    pub async fn turn(
        &self,
        owner: &str,
        permits: usize,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                map.entry(owner.to_string())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(permits))),
            )
        };
        semaphore.acquire_owned().await.ok()
    }
}

/// The metadata of the events a caller's command (`command`, the use case's name) causes: the
/// actor (role and principal), the caller's cid, and a fresh command id as their causation.
pub(crate) fn metadata(caller: &Caller, customer_id: &str, command: &str) -> EventMetadata {
    EventMetadata {
        customer_id: Some(customer_id.to_string()),
        cid: Some(caller.cid.clone()),
        causation_id: Some(uuid::Uuid::now_v7()),
        actor: Some(caller.principal.actor()),
        command: Some(command.to_string()),
        traceparent: caller.traceparent().map(str::to_string),
        tracestate: caller.tracestate().map(str::to_string),
    }
}
