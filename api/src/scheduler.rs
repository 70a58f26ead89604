//! The scheduler (DOMAIN.md §7): keeps each insight's queue topped up to its `queueSize` by
//! moving the oldest schedulable `added` agendas of that insight to `queued`, each move an
//! `AgendaCommand::Queue` executed through the [`Executor`] (so every move is an event, and
//! two schedulers racing on one agenda cannot both win: the loser is refused and skips it).
//!
//! It reacts to the projections' change feed (a submission, a claim, a completion or an
//! insight's new `queueSize` wakes it), coalescing bursts into one pass, and also runs a pass
//! every [`SAFETY_PASS_INTERVAL`] as a safety net. A pass reads the read models, so after
//! issuing commands it waits (bounded) until the projections have applied them before the
//! next pass, which keeps it from counting a queue short and overfilling it.
//!
//! First slice: every insight is scheduled `FirstInFirstOut` (oldest `added` first);
//! `RoundRobin` and `Priority` are still to come.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaState};
use pop_projections::{
    AgendaQuery, Change, ChangeKind, Cursor, MAX_PAGE_SIZE, Phase, Projections, Visibility,
};
use pop_store::{EventMetadata, ExecuteError, Executor, Position};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

use crate::metrics;

/// How often a pass runs even when the change feed is quiet: a safety net for a missed or
/// lagged wake-up, not the main trigger.
pub const SAFETY_PASS_INTERVAL: Duration = Duration::from_secs(5);

/// Largest queue the scheduler keeps for one insight, whatever its `queueSize` says: bounds
/// the commands of one pass per insight.
pub const MAX_QUEUE_SIZE: usize = 10_000;

/// Most pages of `added` agendas one insight's pass looks through to find schedulable ones
/// (pages of `doNotRun` agendas are skipped over).
pub const MAX_SCAN_PAGES: usize = 10;

/// Most changes drained from the feed into one pass (the rest wake the next pass).
pub const MAX_COALESCED_CHANGES: usize = 16_384;

/// Longest a pass waits for the projections to apply its own moves before the next pass.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Most `Queue` commands in flight at once (they share the store's group commit).
pub const MAX_CONCURRENT_MOVES: usize = 256;

/// The actor recorded in the metadata of the scheduler's events.
pub const ACTOR: &str = "system:scheduler";

/// Starts the scheduler on the current runtime; it stops when `stop` resolves.
pub fn spawn(
    executor: Arc<Executor>,
    projections: Projections,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(run(executor, projections, stop))
}

/// The scheduler loop (see the module doc).
pub async fn run(
    executor: Arc<Executor>,
    projections: Projections,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut changes = projections.subscribe_changes();
    let mut feed_open = true;
    tokio::pin!(stop);
    loop {
        if let Some(position) = pass(&executor, &projections).await
            && projections.wait_for(position, APPLY_WAIT).await.is_err()
        {
            tracing::warn!(%position, "scheduler: projections did not apply its moves in time");
        }
        let woke = tokio::select! {
            () = &mut stop => return,
            received = changes.recv(), if feed_open => match received {
                Ok(change) => wakes(&change),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => {
                    feed_open = false;
                    false
                }
            },
            () = tokio::time::sleep(SAFETY_PASS_INTERVAL) => false,
        };
        if woke {
            // Coalesce a burst of changes into the one pass that follows.
            for _ in 0..MAX_COALESCED_CHANGES {
                match changes.try_recv() {
                    Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        feed_open = false;
                        break;
                    }
                }
            }
        }
    }
}

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

/// One pass over every insight; returns the position of the last move it made, if any.
pub async fn pass(executor: &Executor, projections: &Projections) -> Option<Position> {
    let moves = plan(projections);
    let mut last: Option<Position> = None;
    for chunk in moves.chunks(MAX_CONCURRENT_MOVES) {
        let results =
            join_all(chunk.iter().map(|(id, customer)| queue(executor, id, customer))).await;
        for position in results.into_iter().flatten() {
            if last.as_ref().is_none_or(|l| position > *l) {
                last = Some(position);
            }
        }
    }
    last
}

/// The agendas to queue now: for each insight, its oldest schedulable `added` agendas, as
/// many as its queue has room for. Returns (agenda id, customer id) pairs.
fn plan(projections: &Projections) -> Vec<(String, String)> {
    let models = projections.read();
    let all = Visibility::All;
    let mut moves = Vec::new();
    for insight in models.all_insights() {
        let size = usize::try_from(insight.queue_size.max(0)).unwrap_or(0).min(MAX_QUEUE_SIZE);
        let queued = models.agendas().count_in(&insight.id, Phase::Queued);
        let mut room = size.saturating_sub(queued);
        let mut after: Option<Cursor> = None;
        for _ in 0..MAX_SCAN_PAGES {
            if room == 0 {
                break;
            }
            let mut query = AgendaQuery::new(&all);
            query.insight_id = Some(&insight.id);
            query.phase = Some(Phase::Added);
            query.after = after.as_ref();
            query.limit = MAX_PAGE_SIZE;
            let page = models.select_agendas(&query);
            for entry in &page.items {
                if room == 0 {
                    break;
                }
                if entry.state().is_ok_and(|s| s.is_schedulable()) {
                    moves.push((entry.id().to_string(), entry.customer_id().to_string()));
                    room -= 1;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    moves
}

/// Queues one agenda; `None` when it was not moved (another scheduler won, it changed, or the
/// store failed — the next pass sees it again).
async fn queue(executor: &Executor, id: &str, customer: &str) -> Option<Position> {
    let metadata = EventMetadata {
        customer_id: Some(customer.to_string()),
        cid: None,
        causation_id: None,
        actor: Some(ACTOR.to_string()),
    };
    let command = AgendaCommand::Queue { now: Utc::now() };
    let executed = executor.execute::<AgendaState>(id, &metadata, &command).await;
    metrics::command("scheduler.queue", executed.is_ok());
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
