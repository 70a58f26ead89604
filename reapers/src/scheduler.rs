//! The scheduler (DOMAIN.md §7): keeps each insight's queue topped up to its `queueSize` by
//! moving the oldest schedulable `added` agendas of that insight to `queued`, each move an
//! `AgendaCommand::Queue` executed through the [`Commands`] (so every move is an event, and
//! two schedulers racing on one agenda cannot both win: the loser is refused and skips it).
//!
//! It is a [`TimedProcess`] like the reapers, run by the same loop under the `scheduler` leader
//! lock (one replica schedules). It lives here, with the other timed processes, because it has
//! their shape — a pure plan over the read models and idempotent domain commands — and needs
//! nothing of a transport. What sets it apart is its wake-up: the projections' change feed (a
//! submission, a claim, a completion or an insight's new `queueSize` wakes it), with bursts
//! coalesced into one pass, and a pass every [`SAFETY_PASS_INTERVAL`] as a safety net. A pass
//! reads the read models, so after issuing commands it waits (bounded) until the projections
//! have applied them before the next pass, which keeps it from counting a queue short and
//! overfilling it.
//!
//! Which agendas move is decided per insight by its `schedulingAlgorithm` through the pure
//! planner [`pop_domain::scheduling::plan`]: `FirstInFirstOut` (oldest `added` first),
//! `RoundRobin` (one per customer per round, in a remembered customer order) and `Priority`
//! (higher `params.priority` first, FIFO within, with aging), where "oldest" and aging go by
//! the time an agenda entered the queue: a rerun, retried, reclaimed or released agenda is
//! behind the ones that waited before it. The candidates of `FirstInFirstOut` are the
//! schedulable `added` agendas among the first [`MAX_SCAN_PAGES`] full pages' worth of the
//! insight's queue order (read in pages sized to the room left); those of `RoundRobin` and
//! `Priority` are each customer's oldest-added, as many pages'
//! worth shared evenly among the customers with work there (at least one each), so a
//! customer's backlog deeper than that never hides another customer's agendas (hostile32),
//! and within one customer's deep backlog they choose among its oldest part.
//!
//! A submission that `pop_app::handout` hands straight to a waiting `getAgenda` (the insight
//! had nothing queued and nothing `added`, so this scheduler had nothing to choose) is queued
//! and claimed in the submission's own write: it never waits here in `added`.
//!
//! The remembered `RoundRobin` customer order of each insight lives in this scheduler's
//! memory ([`Memory`]), not in the store: it only sharpens fairness between passes. A restart
//! (or a second replica) starts from a fresh order, which is acceptable: the next pass serves
//! every customer with work once per round again, customers first by their oldest work.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaState};
use pop_domain::scheduling::{self, Candidate, CustomerOrder};
use pop_domain::{SchedulingAlgorithm, Timestamp};
use pop_projections::{
    AgendaEntry, AgendaOrder, AgendaQuery, Change, ChangeKind, Cursor, MAX_PAGE_SIZE, Phase,
    Projections, Visibility,
};
use pop_store::{Commands, EventMetadata, ExecuteError, Position, ProcessLeadership};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::process::{self, Cadence, CycleReport, ProcessName, TimedProcess};

/// How often a pass runs even when the change feed is quiet: a safety net for a missed or
/// lagged wake-up, not the main trigger.
pub const SAFETY_PASS_INTERVAL: Duration = Duration::from_secs(5);

/// Largest queue the scheduler keeps for one insight, whatever its `queueSize` says: bounds
/// the commands of one pass per insight.
pub const MAX_QUEUE_SIZE: usize = 10_000;

/// How many full pages' worth of an insight's queue one pass looks through at most (`doNotRun`
/// agendas are never among them: the projections keep them out of the queue order).
pub const MAX_SCAN_PAGES: usize = 10;

/// Most changes drained from the feed into one pass (the rest wake the next pass).
pub const MAX_COALESCED_CHANGES: usize = 16_384;

/// Longest a pass waits for the projections to apply its own moves before the next pass.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Most `Queue` commands in flight at once (they share the store's group commit).
pub const MAX_CONCURRENT_MOVES: usize = 256;

/// The actor recorded in the metadata of the scheduler's events.
pub const ACTOR: &str = "system:scheduler";

/// Whether a change can make room in a queue or give it work: an insight changed (its
/// `queueSize`), an agenda became `added`, or one left the queue (claimed or cancelled).
/// Executors' progress reports do not wake the scheduler.
fn wakes(change: &Change) -> bool {
    match change.kind {
        ChangeKind::Insight => true,
        ChangeKind::Agenda => {
            change.removed
                || matches!(change.phase, Some(Phase::Added | Phase::Scheduled | Phase::Cancelled))
        }
        ChangeKind::Customer | ChangeKind::ResourcePool | ChangeKind::Template => false,
    }
}

/// What the scheduler carries from one pass to the next: the remembered `RoundRobin`
/// customer order per insight id. In memory only (see the module doc: a restart starting
/// fresh is acceptable).
#[derive(Debug, Default)]
pub struct Memory {
    customer_orders: HashMap<String, CustomerOrder>,
}

/// One pass over every insight, planned and executed at once (no leader lock, no wait for
/// the projections): what the tests and benchmarks drive by hand. Returns the position of the
/// last move it made, if any.
pub async fn pass(
    commands: &Arc<Commands>,
    projections: &Projections,
    memory: &mut Memory,
) -> Option<Position> {
    let moves = plan(projections, memory, Utc::now().timestamp_millis());
    queue_all(commands, moves).await.last
}

/// Queues every move, at most [`MAX_CONCURRENT_MOVES`] at once.
async fn queue_all(commands: &Arc<Commands>, moves: Vec<(String, String)>) -> SchedulerReport {
    let mut report = SchedulerReport { planned: moves.len(), ..SchedulerReport::default() };
    let mut tasks: JoinSet<Option<Position>> = JoinSet::new();
    for (id, customer) in moves {
        while tasks.len() >= MAX_CONCURRENT_MOVES {
            if let Some(done) = tasks.join_next().await {
                report.count(done);
            }
        }
        let commands = Arc::clone(commands);
        // In the pass's span: each move's own span links to it (`crate::trace`).
        tasks.spawn(async move { queue(&commands, &id, &customer).await }.in_current_span());
    }
    while let Some(done) = tasks.join_next().await {
        report.count(done);
    }
    report
}

/// The agendas to queue now: for each insight, as many of its schedulable `added` agendas as
/// its queue has room for, chosen by its scheduling algorithm. Returns (agenda id, customer
/// id) pairs. `now_ms` (epoch ms) is the clock reading used for `Priority` aging.
fn plan(projections: &Projections, memory: &mut Memory, now_ms: i64) -> Vec<(String, String)> {
    let models = projections.read();
    let all = Visibility::All;
    let mut moves = Vec::new();
    let mut round_robin_insights: HashSet<&str> = HashSet::new();
    for insight in models.all_insights() {
        let algorithm = insight.scheduling_algorithm;
        if algorithm == SchedulingAlgorithm::RoundRobin {
            round_robin_insights.insert(&insight.id);
        }
        let size = usize::try_from(insight.queue_size.max(0)).unwrap_or(0).min(MAX_QUEUE_SIZE);
        let queued = models.agendas().count_in(&insight.id, Phase::Queued);
        let room = size.saturating_sub(queued);
        if room == 0 {
            continue;
        }
        let candidate = |entry: &AgendaEntry| -> Option<Candidate> {
            let state = entry.state().ok()?;
            if !state.is_schedulable() {
                return None;
            }
            let priority = match algorithm {
                SchedulingAlgorithm::Priority => {
                    state.agenda().map_or(0, |a| Candidate::priority_of(&a.params))
                }
                SchedulingAlgorithm::FirstInFirstOut | SchedulingAlgorithm::RoundRobin => 0,
            };
            Some(Candidate {
                id: entry.key().to_string(),
                customer_id: entry.customer_id().to_string(),
                entered_ms: entry.entered_ms(),
                priority,
            })
        };
        let candidates: Vec<Candidate> = match algorithm {
            // The oldest `room` in queue order.
            SchedulingAlgorithm::FirstInFirstOut => {
                let mut candidates = Vec::new();
                let mut after: Option<Cursor> = None;
                // Pages sized to the room (doubling while entries that cannot run fill them),
                // so a pass with room for a few reads a few entries of a long backlog, not a
                // thousand; at most as many entries in all as `MAX_SCAN_PAGES` full pages.
                let mut left = MAX_SCAN_PAGES * MAX_PAGE_SIZE;
                let mut limit = room.saturating_mul(2).clamp(16, MAX_PAGE_SIZE);
                'pages: while left > 0 {
                    let mut query = AgendaQuery::new(&all);
                    query.insight_id = Some(&insight.id);
                    query.phase = Some(Phase::Added);
                    query.order = AgendaOrder::Queue;
                    query.after = after.as_ref();
                    query.limit = limit.min(left);
                    left -= query.limit;
                    let page = models.select_agendas(&query);
                    for entry in &page.items {
                        if candidates.len() >= room {
                            break 'pages;
                        }
                        candidates.extend(candidate(entry));
                    }
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                    limit = limit.saturating_mul(2).min(MAX_PAGE_SIZE);
                }
                candidates
            }
            // Each customer's oldest, the scan shared among the customers with work: one
            // customer's backlog never hides another's agendas (hostile32). Round robin takes
            // at most `room` of one customer; priority looks at all of its share.
            SchedulingAlgorithm::RoundRobin | SchedulingAlgorithm::Priority => {
                let budget = MAX_SCAN_PAGES * MAX_PAGE_SIZE;
                let most_each =
                    if algorithm == SchedulingAlgorithm::RoundRobin { room } else { budget };
                models
                    .agendas()
                    .added_per_customer(&insight.id, budget, most_each)
                    .into_iter()
                    .flatten()
                    .filter_map(candidate)
                    .collect()
            }
        };
        let remembered = memory.customer_orders.get(&insight.id).cloned().unwrap_or_default();
        let planned = scheduling::plan(algorithm, room, &candidates, &remembered, now_ms);
        if algorithm == SchedulingAlgorithm::RoundRobin {
            memory.customer_orders.insert(insight.id.clone(), planned.customer_order);
        }
        for index in planned.picks {
            if let Some(c) = candidates.get(index) {
                moves.push((c.id.clone(), c.customer_id.clone()));
            }
        }
    }
    // Forget the orders of insights that are gone or no longer round robin.
    memory.customer_orders.retain(|id, _| round_robin_insights.contains(&id.as_str()));
    moves
}

/// Queues one agenda; `None` when it was not moved (another scheduler won, it changed, or the
/// store failed — the next pass sees it again).
async fn queue(commands: &Commands, id: &str, customer: &str) -> Option<Position> {
    let metadata = EventMetadata {
        customer_id: Some(customer.to_string()),
        cid: Some(uuid::Uuid::new_v4().to_string()),
        causation_id: Some(uuid::Uuid::new_v4()),
        actor: Some(ACTOR.to_string()),
        command: Some("queue".to_string()),
        traceparent: None,
        tracestate: None,
    };
    let command =
        AgendaCommand::Queue { now: pop_store::clock::now_for(commands.store().as_ref()) };
    let execute = commands.execute::<AgendaState>(id, &metadata, &command);
    let executed = crate::trace::on_agenda(commands, id, "queue", execute).await;
    match executed {
        Ok(executed) => executed.position,
        Err(ExecuteError::Refused(
            AgendaError::IllegalTransition { .. } | AgendaError::DoNotRun | AgendaError::NotFound,
        ))
        | Err(ExecuteError::Conflict { .. }) => None,
        Err(e) => {
            tracing::warn!(agenda = id, error = %e, "scheduler: cannot queue agenda");
            None
        }
    }
}

/// What one scheduler cycle did.
#[derive(Debug, Default)]
pub struct SchedulerReport {
    /// Agendas the plan chose to queue.
    pub planned: usize,
    /// Agendas moved to `queued`.
    pub queued: usize,
    /// Not moved: another scheduler won, the agenda changed, or the store failed (the next
    /// pass sees it again; failures are logged where they happen).
    pub not_moved: usize,
    /// The position of the last move.
    pub last: Option<Position>,
    /// Tasks that panicked.
    pub errors: Vec<String>,
}

impl SchedulerReport {
    fn count(&mut self, done: Result<Option<Position>, tokio::task::JoinError>) {
        match done {
            Ok(Some(position)) => {
                self.queued += 1;
                if self.last.as_ref().is_none_or(|l| position > *l) {
                    self.last = Some(position);
                }
            }
            Ok(None) => self.not_moved += 1,
            Err(e) => self.errors.push(format!("a queue task failed: {e}")),
        }
    }
}

impl CycleReport for SchedulerReport {
    fn planned(&self) -> usize {
        self.planned
    }
    fn outcomes(&self) -> Vec<(&'static str, usize)> {
        vec![("queued", self.queued), ("not_moved", self.not_moved)]
    }
    fn errors(&self) -> Vec<String> {
        self.errors.clone()
    }
}

/// The scheduler as a [`TimedProcess`] (see the module docs).
pub struct Scheduler {
    commands: Arc<Commands>,
    projections: Projections,
    memory: Memory,
    changes: broadcast::Receiver<Change>,
    feed_open: bool,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("memory", &self.memory).finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(commands: Arc<Commands>, projections: Projections) -> Scheduler {
        let changes = projections.subscribe_changes();
        Scheduler { commands, projections, memory: Memory::default(), changes, feed_open: true }
    }
}

#[async_trait::async_trait]
impl TimedProcess for Scheduler {
    type Action = (String, String);
    type Report = SchedulerReport;

    fn name(&self) -> ProcessName {
        ProcessName::Scheduler
    }

    fn cadence(&self) -> Cadence {
        Cadence {
            interval: SAFETY_PASS_INTERVAL,
            batch_size: MAX_QUEUE_SIZE,
            max_run_time: APPLY_WAIT,
            dry_run: false,
        }
    }

    fn ready(&self) -> bool {
        self.projections.following()
    }

    async fn plan(&mut self, now: Timestamp) -> Result<Vec<(String, String)>, SchedulerReport> {
        Ok(plan(&self.projections, &mut self.memory, now.timestamp_millis()))
    }

    /// Queues the moves, then waits (bounded) until the projections have applied them, so
    /// the next pass does not count a queue short and overfill it.
    async fn execute(
        &mut self,
        _now: Timestamp,
        moves: Vec<(String, String)>,
        _deadline: Instant,
    ) -> SchedulerReport {
        let report = queue_all(&self.commands, moves).await;
        if let Some(position) = report.last
            && self.projections.wait_for(position, APPLY_WAIT).await.is_err()
        {
            tracing::warn!(%position, "scheduler: projections did not apply its moves in time");
        }
        report
    }

    fn dry_run(&self, moves: &[(String, String)]) -> SchedulerReport {
        SchedulerReport {
            planned: moves.len(),
            not_moved: moves.len(),
            ..SchedulerReport::default()
        }
    }

    /// A change that can make room in a queue or give it work wakes the scheduler; a burst of
    /// changes is coalesced into the one pass that follows.
    async fn woken(&mut self) {
        loop {
            if !self.feed_open {
                std::future::pending::<()>().await;
            }
            let woke = match self.changes.recv().await {
                Ok(change) => wakes(&change),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => {
                    self.feed_open = false;
                    false
                }
            };
            if woke {
                for _ in 0..MAX_COALESCED_CHANGES {
                    match self.changes.try_recv() {
                        Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => {
                            self.feed_open = false;
                            break;
                        }
                    }
                }
                return;
            }
        }
    }

    fn quiet(&self) -> bool {
        true
    }
}

/// Runs the scheduler on the current runtime with a process-local leader lock, until `stop`
/// resolves: for tests and single-process tools (`pop serve` spawns it with the backend's
/// leadership through [`process::spawn`]).
pub fn spawn(
    commands: Arc<Commands>,
    projections: Projections,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    process::spawn(
        Scheduler::new(commands, projections),
        Arc::new(ProcessLeadership::default()),
        Utc::now,
        stop,
    )
}
