//! The hand-out desk (issue 18): a submission handed straight to a `getAgenda` that waits for
//! work on this replica, in the submission's own write.
//!
//! The ordinary path from a submit to a waiting worker is three durable writes and two trips
//! through the projections: the submit's append; the projections apply it and the change feed
//! wakes the scheduler, which appends `Queue`; the projections apply that and the feed wakes
//! the waiting `getAgenda`, which appends `Claim`. When a worker already waits for the insight
//! and the insight has nothing else to give out, none of that chooses anything: the new
//! agenda is the only one the scheduler could queue and the only one the waiter could claim.
//! So the submission appends the three commands as one chain
//! ([`pop_store::Commands::execute_chain`]): `Submit` (the submitter's metadata), `Queue`
//! (actor [`ACTOR`]) and `Claim` (the waiter's principal, under a fresh lease), decided one
//! after the other by the domain's own `decide` — added → queued → scheduled, the transitions
//! DOMAIN.md §3 allows, each its own event — in one write and one fsync. If a step is refused
//! the steps after it are not run, and the agenda stays where the last step left it for the
//! scheduler and the ordinary path.
//!
//! When it applies (checked on the read models, after they have applied every write this
//! replica acknowledged, so they include its own recent submissions):
//! - the agenda is not `doNotRun`;
//! - a `getAgenda` of this replica waits on the insight ([`Desk`]: the longest-waiting
//!   first) and may still take from it;
//! - the insight's queue holds no `queued` agenda and the insight has no `added` agenda in
//!   its queue order. The queue then has room (`queueSize` ≥ 1 and none queued), and the new
//!   agenda is the only candidate, so `FirstInFirstOut`, `RoundRobin` and `Priority` all
//!   pick it (DOMAIN.md §7); it never occupies a queue slot, so no queue passes its size.
//!   An insight with any backlog goes through the scheduler as before.
//!
//! What it does not see: a submission of the same insight that another replica (PostgreSQL)
//! is committing at the same moment — concurrent requests, ordered by the log — which the
//! scheduler then queues as usual.
//!
//! A waiter leaves the desk when it is woken by the feed, times out, the server stops, or its
//! request goes away; a waiter taken by a submission waits for that submission's answer. An
//! agenda claimed for a waiter that went away meanwhile is handed back at once, as
//! `releaseAgenda` does (the `getAgenda` wait's own rule).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use pop_domain::agenda::{AgendaCommand, AgendaError, AgendaState};
use pop_projections::Phase;
use pop_store::{EventMetadata, ExecuteError, Executed};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::work::{serves_several, takes_from};
use crate::{AgendaOutcome, App, Caller, metrics};

/// The actor recorded on the `Queue` event of a hand-out: the scheduler's rule applied at
/// submission.
pub const ACTOR: &str = "system:handout";

/// The `getAgenda` calls of this replica that wait for work, per insight, longest-waiting
/// first.
#[derive(Default)]
pub(crate) struct Desk {
    inner: Mutex<Seats>,
}

#[derive(Default)]
struct Seats {
    next: u64,
    by_insight: HashMap<Arc<str>, VecDeque<Waiter>>,
}

/// A waiting `getAgenda` taken off the desk by a submission, which owes it an answer.
pub(crate) struct Waiter {
    id: u64,
    pub(crate) caller: Caller,
    /// Whether it waits as a pool's worker of the insight (`work::operates`): it is shown the
    /// agenda under the pool's progress id ([`AgendaOutcome::shown_to_pool`]).
    pub(crate) pool_worker: bool,
    /// Dropped without a send: the waiter looks at the queue again.
    pub(crate) deliver: oneshot::Sender<AgendaOutcome>,
}

/// A place on the desk, held by the waiting `getAgenda`; dropping it leaves the desk.
pub(crate) struct Seat<'d> {
    desk: &'d Desk,
    insight: Arc<str>,
    id: u64,
    handed: oneshot::Receiver<AgendaOutcome>,
}

impl Desk {
    /// Seats a `getAgenda` of `caller` waiting on `insight`.
    pub(crate) fn sit(&self, insight: &str, caller: &Caller) -> Seat<'_> {
        let insight: Arc<str> = Arc::from(insight);
        let (deliver, handed) = oneshot::channel();
        let mut seats = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        seats.next += 1;
        let id = seats.next;
        seats.by_insight.entry(Arc::clone(&insight)).or_default().push_back(Waiter {
            id,
            caller: caller.clone(),
            pool_worker: false,
            deliver,
        });
        Seat { desk: self, insight, id, handed }
    }

    /// Whether some `getAgenda` waits on `insight` (a cheap look before the real checks).
    pub(crate) fn has_waiter(&self, insight: &str) -> bool {
        let seats = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        seats.by_insight.get(insight).is_some_and(|w| !w.is_empty())
    }

    /// Takes the longest-waiting `getAgenda` on `insight` for which `fits` holds (those that
    /// no longer fit stay seated).
    pub(crate) fn take(&self, insight: &str, fits: impl Fn(&Caller) -> bool) -> Option<Waiter> {
        let mut seats = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = seats.by_insight.get_mut(insight)?;
        let index = waiting.iter().position(|w| !w.deliver.is_closed() && fits(&w.caller))?;
        let waiter = waiting.remove(index);
        if waiting.is_empty() {
            seats.by_insight.remove(insight);
        }
        waiter
    }

    /// Removes seat `id` of `insight`; false when it was no longer there (a submission took it).
    fn leave(&self, insight: &str, id: u64) -> bool {
        let mut seats = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(waiting) = seats.by_insight.get_mut(insight) else { return false };
        let Some(index) = waiting.iter().position(|w| w.id == id) else { return false };
        waiting.remove(index);
        if waiting.is_empty() {
            seats.by_insight.remove(insight);
        }
        true
    }

    /// How many `getAgenda` calls wait on the desk (for tests).
    pub(crate) fn seated(&self) -> usize {
        let seats = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        seats.by_insight.values().map(VecDeque::len).sum()
    }
}

impl Seat<'_> {
    /// The agenda a submission handed over (`Err`: the submission could not; look again).
    pub(crate) fn handed(&mut self) -> &mut oneshot::Receiver<AgendaOutcome> {
        &mut self.handed
    }

    /// Leaves the desk; when a submission took this seat first, waits for its answer and
    /// returns the agenda it handed over, if it could.
    pub(crate) async fn stand(mut self) -> Option<AgendaOutcome> {
        if self.desk.leave(&self.insight, self.id) {
            return None;
        }
        (&mut self.handed).await.ok()
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.desk.leave(&self.insight, self.id);
    }
}

/// Longest a submission waits for the read models to apply this replica's acknowledged writes
/// before it decides on a hand-out; past it, the submission takes the ordinary path.
pub const APPLY_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl App {
    /// The waiting `getAgenda` a submission to `insight_id` may hand its agenda to, taken off
    /// the desk: only when one waits that takes `customer`'s agendas from it, and the insight
    /// has nothing queued and nothing `added` (see the module doc).
    pub(crate) async fn handout_waiter(&self, insight_id: &str, customer: &str) -> Option<Waiter> {
        if !self.desk().has_waiter(insight_id) {
            return None;
        }
        // Read models that hold every write this replica acknowledged (its own submissions).
        let written = self.commands().written();
        self.projections().wait_for(written, APPLY_WAIT).await.ok()?;
        let models = self.projections().read();
        let insight = models.insight(insight_id)?;
        if insight.queue_size < 1 || models.agendas().count_in(insight_id, Phase::Queued) > 0 {
            return None;
        }
        // Asked of the queue itself: a page of its per-customer groups merged cost a seek per
        // customer on every submission (review-s43b).
        if models.agendas().waits_to_be_queued(insight_id) {
            return None;
        }
        // Only a waiter that takes this customer's agendas from the insight; one that serves
        // several customers is shown the agenda under the pool's progress id.
        let mut waiter = self.desk().take(insight_id, |caller| {
            takes_from(caller, insight, &models).is_some_and(|v| v.sees(customer))
        })?;
        waiter.pool_worker = takes_from(&waiter.caller, insight, &models)
            .is_some_and(|takes| serves_several(&takes));
        Some(waiter)
    }

    /// Appends `submit` (on `stream_key`, with `metadata`) together with the agenda's `Queue`
    /// and its `Claim` for `waiter` in one write, hands the claimed agenda to the waiter (back
    /// to the queue at once if the waiter went away), and answers the submission's own result.
    /// Runs detached from the request, so that a submitter going away cannot strand a claim.
    pub(crate) async fn submit_handing_out(
        &self,
        stream_key: String,
        insight_id: String,
        metadata: EventMetadata,
        submit: AgendaCommand,
        waiter: Waiter,
    ) -> Result<Executed<AgendaState>, ExecuteError<AgendaError>> {
        let now = submit.now();
        let holder = waiter.caller.principal.name.clone();
        let customer = metadata.customer_id.clone().unwrap_or_default();
        let queue_metadata = EventMetadata {
            causation_id: Some(Uuid::now_v7()),
            actor: Some(ACTOR.to_string()),
            command: Some("queue".to_string()),
            traceparent: None,
            ..metadata.clone()
        };
        // As `getAgenda` claims: no traceparent (the work joins the submission's trace).
        let claim_metadata = EventMetadata {
            traceparent: None,
            ..crate::metadata(&waiter.caller, &customer, "getAgenda")
        };
        let claim = AgendaCommand::Claim {
            holder: holder.clone(),
            lease_id: Uuid::now_v7().to_string(),
            lease_expires: now + self.config().lease,
            now,
        };
        let steps = vec![
            (metadata, submit),
            (queue_metadata, AgendaCommand::Queue { now }),
            (claim_metadata, claim),
        ];
        let (answer, answered) = oneshot::channel();
        let app = self.clone();
        tokio::spawn(async move {
            let mut answers =
                app.commands().execute_chain::<AgendaState>(&stream_key, &steps).await.into_iter();
            let submitted = answers.next().unwrap_or(Err(ExecuteError::ChainBroken));
            let claimed = answers.nth(1);
            if let Some(claimed) = &claimed {
                metrics::command("getAgenda", claimed);
            }
            match claimed {
                Some(Ok(executed)) => {
                    app.claims().claimed(&stream_key, executed.position);
                    metrics::claimed(
                        &insight_id,
                        std::time::Duration::ZERO,
                        app.config().metrics_insight_labels,
                    );
                    tracing::info!(target: "pop::agendas::flow", agenda = &*stream_key, insight = &*insight_id, by = &*holder, cid = &*waiter.caller.cid, "claimed (handed out at submission)");
                    let outcome = AgendaOutcome::of(&executed, &waiter.caller);
                    let outcome =
                        if waiter.pool_worker { outcome.shown_to_pool() } else { outcome };
                    if let Err(orphan) = waiter.deliver.send(outcome) {
                        app.hand_back(&waiter.caller, &orphan).await;
                    }
                }
                // Not claimed: the waiter looks at the queue again (its sender drops here).
                Some(Err(_)) | None => drop(waiter),
            }
            let _ = answer.send(submitted);
        });
        answered.await.unwrap_or(Err(ExecuteError::Interrupted { stream: String::new() }))
    }
}
