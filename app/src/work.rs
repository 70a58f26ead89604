//! The resource pool's side of the API (DOMAIN.md §7): `getAgenda` hands queued agendas out
//! under leases, `updateAgendaProgress` takes an executor's POP AgendaProgress report. Both
//! are domain commands (`Claim`, `ReportProgress`) executed through the `Commands`, so a claim
//! goes through the agenda stream's expected version and two callers can never both win it.

use std::sync::Arc;

use futures::future::join_all;
use serde_json::Value;
use uuid::Uuid;

use pop_domain::agenda::{AgendaCommand, AgendaState, OperationReport, ProgressReport};
use pop_domain::model::{AgendaProgress, Insight};
use pop_domain::validate::check_id;
use pop_projections::{AgendaOrder, AgendaQuery, ChangeKind, Phase, ReadModels, Visibility};
use pop_store::{EventMetadata, ExecuteError};

use crate::agendas::from_json;
use crate::caller::{Action, Caller};
use crate::error::{self, AppError, AppResult};
use crate::feed::Key;
use crate::limits::{
    GET_AGENDA_CANDIDATES_PER_ITEM, MAX_GET_AGENDA_COUNT, MAX_GET_AGENDA_WAIT_SECONDS,
    MAX_REPORTS_PER_REQUEST, MAX_WAITING_GET_AGENDA_PER_PRINCIPAL,
};
use crate::outcome::AgendaOutcome;
use crate::resolve::{Named, ambiguous_work, candidates_of, may_take_from, named_one, runs};
use crate::{App, metadata, metrics};
use pop_domain::text::log_field;

/// Whose queued agendas the caller takes from `insight` (`None`: it may not take from it).
/// The workers of whoever runs the insight — a caller that sees the insight's owner or the
/// owner of its resource pool — serve every customer of a shared or global insight, as POP's
/// pullers did. A caller that may only *use* the insight (a customer it is shared with, or any
/// customer of a global one) takes only its own customers' agendas from it: being allowed to
/// submit to a provider's queue must not hand it, under a lease, the other customers' work,
/// their params and payloads, and the right to report their results (DOMAIN.md §10 says
/// "insights it may use"; read literally, every tenant of a global insight could drain and
/// falsify every other tenant's agendas).
pub(crate) fn takes_from(
    caller: &Caller,
    insight: &Insight,
    models: &ReadModels,
) -> Option<Visibility> {
    if !may_take_from(caller, insight) {
        return None;
    }
    Some(if runs(caller, insight, models) {
        Visibility::All
    } else {
        caller.principal.customers.clone()
    })
}

/// Whether a worker that takes `takes`' agendas serves several customers: it is shown each
/// agenda under the pool's progress id, which names the customer
/// ([`crate::AgendaOutcome::shown_to_pool`]), so that its executors' reports by that id alone
/// say whose run they are about. (A worker of one customer knows its agendas by their own ids:
/// they are unique within the customer.)
pub(crate) fn serves_several(takes: &Visibility) -> bool {
    match takes {
        Visibility::All => true,
        Visibility::Customers(ids) => ids.len() > 1,
    }
}

/// How many `getAgenda` calls of each principal wait for work on this replica
/// ([`MAX_WAITING_GET_AGENDA_PER_PRINCIPAL`]).
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    by_principal: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One waiting `getAgenda` counted in [`Waiting`]; dropping it counts it out.
pub(crate) struct WaitTicket<'w> {
    waiting: &'w Waiting,
    principal: String,
}

impl Waiting {
    /// Counts a wait of `principal` in, or refuses it (BUSY) when it has as many as it may.
    fn enter(&self, principal: &str) -> AppResult<WaitTicket<'_>> {
        let mut counts =
            self.by_principal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(principal.to_string()).or_default();
        if *count >= MAX_WAITING_GET_AGENDA_PER_PRINCIPAL {
            return Err(AppError::new(
                error::Code::Busy,
                format!(
                    "waitSeconds: this token already has {MAX_WAITING_GET_AGENDA_PER_PRINCIPAL} getAgenda calls waiting for work, as many as it may; ask with a larger count, or wait for one to answer"
                ),
            ));
        }
        *count += 1;
        Ok(WaitTicket { waiting: self, principal: principal.to_string() })
    }
}

impl Drop for WaitTicket<'_> {
    fn drop(&mut self) {
        let mut counts =
            self.waiting.by_principal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.principal);
            }
        }
    }
}

/// One report of an `updateAgendaProgresses` batch: the POP AgendaProgress JSON and the lease
/// it is sent under (else the report's own `leaseId`, else none: the token is the holder).
#[derive(Debug, Clone)]
pub struct ReportItem {
    pub agenda_progress: Value,
    pub lease_id: Option<String>,
}

impl ReportItem {
    /// The agenda the report names (its `agendaId`, else its AgendaProgress `id`), for keeping
    /// reports on one agenda in order; empty when it names none.
    fn agenda_named(&self) -> String {
        let field = |name: &str| {
            self.agenda_progress.get(name).and_then(Value::as_str).map(str::trim).unwrap_or("")
        };
        let customer = field("customerId");
        match field("agendaId") {
            "" => format!("{customer}\u{0}progress\u{0}{}", field("id")),
            agenda => format!("{customer}\u{0}agenda\u{0}{agenda}"),
        }
    }
}

/// A task ended without an answer (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("a task ended without an answer")]
struct TaskGone;

/// Most agendas a [`ClaimBook`] remembers; past it, finished claims are forgotten early.
const MAX_CLAIM_BOOK_ENTRIES: usize = 65_536;

/// This replica's book of agendas being claimed or just claimed, so concurrent `getAgenda`
/// calls on one replica do not all race for the same oldest queued agendas. An agenda is in
/// the book while its claim is in flight, and after a successful claim until the read models
/// have applied it (from then on they no longer list it as queued). The book only spares
/// wasted attempts: correctness comes from the claim's expected version, which also settles
/// races between replicas.
#[derive(Debug, Default)]
pub struct ClaimBook {
    /// Agenda id → `None` while its claim is in flight, the claim's position once claimed.
    entries: std::sync::Mutex<std::collections::HashMap<String, Option<pop_store::Position>>>,
}

impl ClaimBook {
    /// Takes up to `wanted` candidates from `candidates` that are not in the book and puts
    /// them in it (in flight). Forgets claims the read models have applied (`applied`).
    fn reserve<T>(
        &self,
        candidates: &mut impl Iterator<Item = (String, String, T)>,
        wanted: usize,
        applied: &pop_store::Position,
    ) -> Vec<(String, String, T)> {
        let Ok(mut entries) = self.entries.lock() else {
            // A poisoned book only loses the optimisation.
            return candidates.take(wanted).collect();
        };
        entries.retain(|_, position| position.as_ref().is_none_or(|p| p > applied));
        if entries.len() >= MAX_CLAIM_BOOK_ENTRIES {
            // The read models are far behind: forget the finished claims (they only spare
            // wasted attempts); claims in flight stay, and they are bounded by the callers.
            entries.retain(|_, position| position.is_none());
        }
        let mut round = Vec::with_capacity(wanted);
        for candidate in candidates.by_ref() {
            if round.len() >= wanted {
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) =
                entries.entry(candidate.0.clone())
            {
                slot.insert(None);
                round.push(candidate);
            }
        }
        round
    }

    /// Forgets the claims of `ids` still in flight: the claiming call went away (its request
    /// was dropped) between reserving them and learning how their claims ended. Left in the
    /// book, such an agenda would be skipped by every later call of this replica for good.
    fn abandon(&self, ids: &[String]) {
        if let Ok(mut entries) = self.entries.lock() {
            for id in ids {
                if entries.get(id).is_some_and(Option::is_none) {
                    entries.remove(id);
                }
            }
        }
    }

    pub(crate) fn claimed(&self, id: &str, position: Option<pop_store::Position>) {
        if let Ok(mut entries) = self.entries.lock() {
            match position {
                Some(position) => {
                    entries.insert(id.to_string(), Some(position));
                }
                None => {
                    entries.remove(id);
                }
            }
        }
    }

    fn release(&self, id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(id);
        }
    }
}

/// One round's reservations in a [`ClaimBook`]: whatever is still in flight when the round is
/// dropped (settled or not) is forgotten, so a cancelled `getAgenda` leaves nothing behind.
struct Reservation<'a> {
    book: &'a ClaimBook,
    ids: Vec<String>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.book.abandon(&self.ids);
    }
}

impl App {
    /// `getAgenda`: claims up to `count` of the oldest queued agendas of `insight_id` that the
    /// caller sees, for the caller, under a lease of the configured length. Agendas another caller
    /// claimed first are skipped.
    pub async fn get_agenda(
        &self,
        caller: &Caller,
        insight_id: &str,
        count: i64,
        cid: Option<&str>,
    ) -> AppResult<Vec<AgendaOutcome>> {
        self.get_agenda_waiting(caller, insight_id, count, None, cid).await
    }

    /// `getAgenda` with `waitSeconds`: when nothing can be claimed at once, waits up to
    /// `wait_seconds` (0..=[`MAX_GET_AGENDA_WAIT_SECONDS`]) for an agenda of the insight to be
    /// queued and claims it then. `None` or 0 answers at once, as POP's clients expect.
    ///
    /// The wait is woken by the change feed (an agenda of the insight entering `queued`, which
    /// the scheduler does as soon as a submission is applied), never by polling: the waiter
    /// registers before its first look at the queue, so an agenda queued after that look
    /// always wakes it. It answers early, with what it has, when the server stops
    /// ([`App::end_waits`]) or when the feed has no room for another follower. A claim made
    /// while waiting runs detached from the request: if the requester goes away before the
    /// answer is sent, the agendas are handed back at once (as `releaseAgenda` does) rather
    /// than waiting out a lease nobody will renew.
    pub async fn get_agenda_waiting(
        &self,
        caller: &Caller,
        insight_id: &str,
        count: i64,
        wait_seconds: Option<i64>,
        cid: Option<&str>,
    ) -> AppResult<Vec<AgendaOutcome>> {
        caller
            .run(Action::Work, cid, async |caller| {
                let wait = match wait_seconds.unwrap_or(0) {
                    0 => None,
                    s @ 1..=MAX_GET_AGENDA_WAIT_SECONDS => {
                        Some(std::time::Duration::from_secs(s.unsigned_abs()))
                            .map(|w| w.min(self.config().max_wait))
                            .filter(|w| !w.is_zero())
                    }
                    _ => {
                        return Err(AppError::invalid(
                            "waitSeconds",
                            format!("waitSeconds must be within 0..={MAX_GET_AGENDA_WAIT_SECONDS}"),
                        ));
                    }
                };
                match wait {
                    None => self.claim(caller, insight_id, count).await,
                    Some(wait) => self.claim_waiting(caller, insight_id, count, wait).await,
                }
            })
            .await
    }

    async fn claim_waiting(
        &self,
        caller: &Caller,
        insight_id: &str,
        count: i64,
        wait: std::time::Duration,
    ) -> AppResult<Vec<AgendaOutcome>> {
        let deadline = tokio::time::Instant::now() + wait;
        // Counted against the caller's waits once it has to wait (nothing to claim at once).
        let mut ticket = None;
        let mut ended = self.waits_ended();
        // Woken only by agendas it may take: another customer's agenda entering a shared
        // insight's queue does not wake a tenant's waits (a tenant's idle waits all ran a claim
        // for every agenda of the insight). Unknown yet (not applied): woken by any.
        let takes = {
            let models = self.projections().read();
            models.insight(insight_id).and_then(|i| takes_from(caller, i, &models))
        };
        // Joined before the first look at the queue (see the doc above).
        let queued = self.feed().register(Key::Insight(Arc::from(insight_id)), move |change| {
            change.kind == ChangeKind::Agenda
                && change.phase == Some(Phase::Queued)
                && takes.as_ref().is_none_or(|t| t.sees(&change.customer_id))
        });
        let mut queued = match queued {
            Ok(receiver) => Some(receiver),
            Err(e) => {
                tracing::warn!(
                    error = &*e.to_string(),
                    cid = &*caller.cid,
                    "getAgenda: cannot wait for work; answering at once"
                );
                None
            }
        };
        /// What ended one wait.
        enum Woken {
            Handed(Result<AgendaOutcome, tokio::sync::oneshot::error::RecvError>),
            Queued(bool),
            Over,
        }
        loop {
            let claimed = self.claim_detached(caller, insight_id, count).await?;
            if !claimed.is_empty() || *ended.borrow_and_update() {
                return Ok(claimed);
            }
            let Some(receiver) = queued.as_mut() else { return Ok(claimed) };
            if ticket.is_none() {
                ticket = Some(self.waiting().enter(&caller.principal.name)?);
            }
            // Seated at the hand-out desk after an empty look: a submission of this insight
            // may hand its agenda over directly (`crate::handout`).
            let mut seat = self.desk().sit(insight_id, caller);
            let waiting_since = std::time::Instant::now();
            let woken = tokio::select! {
                handed = seat.handed() => Woken::Handed(handed),
                item = receiver.recv() => Woken::Queued(item.is_some()),
                () = tokio::time::sleep_until(deadline) => Woken::Over,
                _ = ended.changed() => Woken::Over,
            };
            crate::waited(waiting_since.elapsed());
            // (what a submission handed over, whether to look at the queue again)
            let (handed, again) = match woken {
                // Could not hand it over (`Err`): look at the queue again.
                Woken::Handed(handed) => (handed.ok(), true),
                // `false`: the feed is over (the projections stopped): nothing will wake us.
                Woken::Queued(open) => (seat.stand().await, open),
                Woken::Over => (seat.stand().await, false),
            };
            if let Some(outcome) = handed {
                return Ok(vec![outcome]);
            }
            if !again {
                return Ok(claimed);
            }
            // Every queued change so far is covered by the next look at the queue.
            receiver.skip_queued();
        }
    }

    /// [`Self::claim`] in a task of its own, so that the request going away (its future
    /// dropped) cannot interrupt it halfway; what it claimed for a requester that is gone is
    /// handed back.
    async fn claim_detached(
        &self,
        caller: &Caller,
        insight_id: &str,
        count: i64,
    ) -> AppResult<Vec<AgendaOutcome>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (app, caller, insight) = (self.clone(), caller.clone(), insight_id.to_string());
        // The request's cid goes with it: what the claim logs names it (ops3am25: a failed
        // claim's cause was logged with `cid="-"`).
        let cid = caller.cid.clone();
        tokio::spawn(crate::error::SERVING.scope(cid, async move {
            let claimed = app.claim(&caller, &insight, count).await;
            if let Err(Ok(orphans)) = answer.send(claimed) {
                for orphan in orphans {
                    app.hand_back(&caller, &orphan).await;
                }
            }
        }));
        answered.await.unwrap_or_else(|_| Err(AppError::internal("claiming agendas", &TaskGone)))
    }

    /// Releases an agenda claimed for a requester that went away before the answer.
    pub(crate) async fn hand_back(&self, caller: &Caller, claimed: &AgendaOutcome) {
        let Some(lease) = claimed.lease() else { return };
        let agenda_id = claimed.progress().agenda_id.as_str();
        let named = Named {
            id: agenda_id,
            customer: Some(claimed.progress().customer_id.as_str()),
            lease: Some(&lease.lease_id),
            work: true,
        };
        let command = AgendaCommand::Release {
            holder: caller.principal.name.clone(),
            lease_id: lease.lease_id.clone(),
            now: self.now(),
        };
        match self.on_agenda(caller, "releaseAgenda", named, command).await {
            Ok(_) => {
                tracing::info!(target: "pop::agendas::flow", agenda = agenda_id, by = &*caller.principal.name, cid = &*caller.cid, "handed back: the waiting getAgenda went away")
            }
            Err(e) => {
                tracing::warn!(
                    agenda = agenda_id,
                    error = &*e.message,
                    cid = &*caller.cid,
                    "cannot hand back an agenda claimed for a getAgenda that went away"
                )
            }
        }
    }

    /// A claim whose commit failed past the point where it may be stored (the store's outcome
    /// unknown): nobody was answered its lease, so if it was stored its agenda would wait the
    /// lease out and then lose an attempt to the reclaimer (ops3am25). Once the store answers
    /// again, that lease is released if the agenda holds it; a claim that was not stored is
    /// refused as not the current lease, and nothing is done. Tried once a second for up to a
    /// minute.
    fn hand_back_if_stored(&self, caller: &Caller, key: &str, customer: &str, lease_id: &str) {
        let (app, caller) = (self.clone(), caller.clone());
        let (key, customer, lease_id) =
            (key.to_string(), customer.to_string(), lease_id.to_string());
        tokio::spawn(async move {
            for _ in 0..60 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let command = AgendaCommand::Release {
                    holder: caller.principal.name.clone(),
                    lease_id: lease_id.clone(),
                    now: app.now(),
                };
                let metadata = metadata(&caller, &customer, "releaseAgenda");
                match app.commands().execute::<AgendaState>(&key, &metadata, &command).await {
                    Ok(_) => {
                        tracing::warn!(
                            agenda = &*key,
                            cid = &*caller.cid,
                            "a claim whose commit had failed was stored after all: handed back"
                        );
                        return;
                    }
                    Err(ExecuteError::Store(s)) if s.is_unavailable() => continue,
                    // Not its lease (the claim was not stored), or anything else: nothing of
                    // ours to hand back.
                    Err(_) => return,
                }
            }
        });
    }

    async fn claim(
        &self,
        caller: &Caller,
        insight_id: &str,
        count: i64,
    ) -> AppResult<Vec<AgendaOutcome>> {
        let services = self;
        // At most MAX_GET_AGENDA_COUNT per call: a larger count gets that many (POP took any
        // count, and fewer than asked is always a valid answer), not a refusal and no work.
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c >= 1)
            .map(|c| c.min(MAX_GET_AGENDA_COUNT))
            .ok_or_else(|| {
                AppError::invalid(
                    "count",
                    format!("count must be at least 1 (at most {MAX_GET_AGENDA_COUNT} are handed out per call)"),
                )
            })?;
        // An insight this replica has just written may not be applied yet: on a miss, read
        // it again once the read models hold every write this replica acknowledged
        // (read-your-writes, paid only by a miss; the hot path reads the models as they are).
        let known = {
            let models = services.projections().read();
            models.insight(insight_id).is_some_and(|i| may_take_from(caller, i))
        };
        if !known {
            services.settle(None).await?;
        }
        // (agenda id, customer id, updatedTime in ms: the time it was queued).
        let (candidates, pool_worker): (Vec<(String, String, i64)>, bool) = {
            let models = services.projections().read();
            let (insight, takes) = models
                .insight(insight_id)
                .and_then(|i| Some((i, takes_from(caller, i, &models)?)))
                .ok_or_else(|| AppError::not_found("insight", insight_id))?;
            let pool_worker = serves_several(&takes);
            // The insight's workers serve every customer of it; a customer it is only shared
            // with takes its own agendas ([`takes_from`]).
            let wanted = count.saturating_mul(GET_AGENDA_CANDIDATES_PER_ITEM);
            let mut query = AgendaQuery::new(&takes);
            query.insight_id = Some(&insight.id);
            query.phase = Some(Phase::Queued);
            query.order = AgendaOrder::Queue;
            query.limit = wanted;
            // POP's pullers and executors know an agenda by its progress id alone, and two
            // customers may use one: a worker that serves several customers is shown each
            // agenda under the pool's progress id, which names the customer (`shown_to_pool`).
            let candidates = models
                .select_agendas(&query)
                .items
                .iter()
                .map(|e| (e.key().to_string(), e.customer_id().to_string(), e.updated_ms()))
                .collect();
            (candidates, pool_worker)
        };
        let holder = caller.principal.name.clone();
        let mut claimed = Vec::with_capacity(count);
        let mut remaining = candidates.into_iter();
        // Claim in rounds: reserve as many candidates as are still wanted (skipping those another
        // call of this replica is claiming or has just claimed), claim them concurrently (their
        // appends share one group commit), and go on with the next candidates for the ones lost.
        while claimed.len() < count {
            let wanted = count - claimed.len();
            let round: Vec<(String, String, i64)> = {
                let applied = services.projections().applied();
                services.claims().reserve(&mut remaining, wanted, &applied)
            };
            if round.is_empty() {
                break;
            }
            let _reserved = Reservation {
                book: services.claims(),
                ids: round.iter().map(|(id, _, _)| id.clone()).collect(),
            };
            let attempts = round.iter().map(|(id, customer, _)| {
                let now = self.now();
                let lease_id = Uuid::now_v7().to_string();
                let command = AgendaCommand::Claim {
                    holder: holder.clone(),
                    lease_id: lease_id.clone(),
                    lease_expires: now + services.config().lease,
                    now,
                };
                async move {
                    // A claim carries no traceparent: the agenda's work joins the trace of
                    // the request that (re)started it (`AgendaOutcome::traceparent`), not the
                    // trace of whichever poll happened to claim it.
                    let metadata = EventMetadata {
                        traceparent: None,
                        tracestate: None,
                        ..metadata(caller, customer, "getAgenda")
                    };
                    let executed =
                        services.commands().execute::<AgendaState>(id, &metadata, &command).await;
                    (now, lease_id, executed)
                }
            });
            let results = join_all(attempts).await;
            let mut failure = None;
            for ((id, customer, queued_ms), (now, lease_id, executed)) in
                round.into_iter().zip(results)
            {
                metrics::command("getAgenda", &executed);
                match executed {
                    Ok(executed) => {
                        services.claims().claimed(&id, executed.position);
                        let waited = (now.timestamp_millis() - queued_ms).max(0);
                        let waited = std::time::Duration::from_millis(waited.unsigned_abs());
                        metrics::claimed(
                            insight_id,
                            waited,
                            services.config().metrics_insight_labels,
                        );
                        tracing::info!(target: "pop::agendas::flow", agenda = &*id, insight = insight_id, by = &*holder, cid = &*caller.cid, "claimed");
                        let outcome = AgendaOutcome::of(&executed, caller);
                        claimed.push(if pool_worker { outcome.shown_to_pool() } else { outcome });
                    }
                    // Someone else claimed it first (or it changed since the read): not ours.
                    Err(ExecuteError::Refused(_)) | Err(ExecuteError::Conflict { .. }) => {
                        services.claims().release(&id);
                    }
                    // Said once, with its cause and the cid, where the error is answered
                    // (`error::execute`; ops3am25: a line here without the cause, and one there
                    // without the cid).
                    Err(e) => {
                        services.claims().release(&id);
                        if let ExecuteError::Store(s) = &e
                            && s.outcome_unknown()
                        {
                            self.hand_back_if_stored(caller, &id, &customer, &lease_id);
                        }
                        tracing::debug!(
                            agenda = &*id,
                            error = %pop_domain::error::ErrorChain(&e),
                            cid = &*caller.cid,
                            "getAgenda: claim failed"
                        );
                        failure.get_or_insert((id, e));
                    }
                }
            }
            if let Some((id, e)) = failure {
                if claimed.is_empty() {
                    if let ExecuteError::Store(s) = &e
                        && s.outcome_unknown()
                    {
                        // Not "send it again with the same ids" (review-s47b): a claim that
                        // may be stored is handed back by this replica (`hand_back_if_stored`).
                        tracing::warn!(
                            agenda = &*id,
                            error = %pop_domain::error::ErrorChain(s),
                            cid = &*caller.cid,
                            "getAgenda: whether the claim was stored is not known; it is \
                             handed back once the store answers"
                        );
                        return Err(AppError::new(
                            error::Code::Unavailable,
                            format!(
                                "the event store failed while claiming agenda {id:?}, past the \
                                 point where the claim may be stored: whether it was is not \
                                 known; this server hands it back once the store answers, so \
                                 call getAgenda again (retry in {} s)",
                                error::RETRY_AFTER_UNAVAILABLE_SECS
                            ),
                        ));
                    }
                    return Err(error::execute(&format!("agenda {id:?}"), e));
                }
                tracing::warn!(
                    agenda = &*id,
                    error = %pop_domain::error::ErrorChain(&e),
                    cid = &*caller.cid,
                    "getAgenda: a claim failed; handing out the {} claimed before it",
                    claimed.len()
                );
                // Hand out what was claimed; the leases of the rest are not ours anyway.
                break;
            }
        }
        Ok(claimed)
    }

    /// `updateAgendaProgress`: reads the POP AgendaProgress JSON into a [`ProgressReport`] and runs
    /// `ReportProgress` for the caller as the lease holder, renewing the lease. With a lease id
    /// (`lease_id`, or the report's own `leaseId`) the report must come under that lease, the
    /// current one: a report under a superseded lease (the agenda was reclaimed and claimed
    /// again) is refused with CONFLICT even when the same token holds the new lease. Without
    /// one (POP's clients) the token's identity is the holder.
    pub async fn report(
        &self,
        caller: &Caller,
        value: Value,
        lease_id: Option<&str>,
        cid: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        caller
            .run(Action::Work, cid, async |caller| {
                self.report_progress(caller, value, lease_id).await
            })
            .await
    }

    /// `updateAgendaProgresses`: up to [`MAX_REPORTS_PER_REQUEST`] executor reports in one
    /// request (a puller reporting for many agendas at once). Each report is exactly what
    /// [`App::report`] runs — one `ReportProgress` command on its agenda — and is answered on
    /// its own, in request order: its outcome, or its error (field paths prefixed with
    /// `reports[i]`, the request's cid). Reports on different agendas run concurrently, so
    /// their appends share the store's group commits; reports naming the same agenda
    /// (`agendaId`, else the AgendaProgress `id`) run one after another in request order. The
    /// request as a whole fails only when the caller may not report at all or the list is
    /// empty or too long.
    pub async fn report_many(
        &self,
        caller: &Caller,
        reports: Vec<ReportItem>,
        cid: Option<&str>,
    ) -> AppResult<Vec<AppResult<AgendaOutcome>>> {
        caller
            .run(Action::Work, cid, async |caller| {
                if reports.is_empty() || reports.len() > MAX_REPORTS_PER_REQUEST {
                    return Err(AppError::invalid(
                        "reports",
                        format!("send 1..={MAX_REPORTS_PER_REQUEST} reports"),
                    ));
                }
                let total = reports.len();
                // Chains of reports on one agenda, in request order.
                let mut chains: Vec<(String, Vec<(usize, ReportItem)>)> = Vec::new();
                for (index, item) in reports.into_iter().enumerate() {
                    let agenda = item.agenda_named();
                    match chains.iter_mut().find(|(a, _)| !agenda.is_empty() && *a == agenda) {
                        Some((_, chain)) => chain.push((index, item)),
                        None => chains.push((agenda, vec![(index, item)])),
                    }
                }
                let runs = chains.into_iter().map(|(_, chain)| async move {
                    let mut answered = Vec::with_capacity(chain.len());
                    for (index, item) in chain {
                        let path = format!("reports[{index}]");
                        let result = self
                            .report_progress(caller, item.agenda_progress, item.lease_id.as_deref())
                            .await
                            .map_err(|e| e.within(&path).with_cid(&caller.cid));
                        answered.push((index, result));
                    }
                    answered
                });
                let mut results: Vec<Option<AppResult<AgendaOutcome>>> =
                    (0..total).map(|_| None).collect();
                for (index, result) in join_all(runs).await.into_iter().flatten() {
                    if let Some(slot) = results.get_mut(index) {
                        *slot = Some(result);
                    }
                }
                Ok(results
                    .into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| {
                            Err(AppError::internal("reporting a batch", &TaskGone)
                                .with_cid(&caller.cid))
                        })
                    })
                    .collect())
            })
            .await
    }

    async fn report_progress(
        &self,
        caller: &Caller,
        mut value: Value,
        lease_id: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        // A null entry of the operations is skipped, as POP's server skipped it (popclient54
        // M2); taken out here, before anything counts them (review54 H1: the check of each
        // entry's state read the entry before it). What is then said of an entry, by any
        // check, names its place in the list as sent (reprobe54 M1).
        let mut sent_at: Vec<usize> = Vec::new();
        if let Some(Value::Array(ops)) = value.get_mut("operationProgress")
            && ops.iter().any(Value::is_null)
        {
            sent_at = (0..ops.len()).filter(|&i| !ops[i].is_null()).collect();
            ops.retain(|o| !o.is_null());
        }
        let reported = self.report_progress_of(caller, value, lease_id).await;
        match sent_at.is_empty() {
            true => reported,
            false => reported.map_err(|e| e.renumbered("operationProgress", &sent_at)),
        }
    }

    /// [`Self::report_progress`] with no null operations left in `value`.
    async fn report_progress_of(
        &self,
        caller: &Caller,
        value: Value,
        lease_id: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        let services = self;
        let Some(object) = value.as_object() else {
            return Err(AppError::invalid(
                "agendaProgress",
                "the agendaProgress must be a JSON object",
            ));
        };
        let lease_id = match lease_id.or_else(|| object.get("leaseId").and_then(Value::as_str)) {
            Some(l) if !l.trim().is_empty() => {
                check_id("leaseId", l.trim())?;
                Some(l.trim().to_string())
            }
            _ => None,
        };
        let id = match object.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(AppError::invalid(
                    "agendaProgress.id",
                    "the AgendaProgress id is required",
                ));
            }
            Some(other) => {
                let kind = match other {
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    Value::Array(_) => "an array",
                    _ => "an object",
                };
                return Err(AppError::invalid(
                    "agendaProgress.id",
                    format!("the AgendaProgress id is a string, not {kind}"),
                ));
            }
        };
        // A pool's worker reports under the progress id it was handed, which names the
        // customer (`pool_progress_id`); its answer shows that id again. Not found is said of
        // the id as sent whatever it routed to (hostile30: the bare id, said only when the
        // tagged one named an agenda of the caller's insights, told an insight's operator
        // which ids another customer uses on it).
        // Every answer before the caller is known to act on the agenda depends on the id as sent
        // alone (hostile31: a too-long id, or params over the limit, were said of the bare id
        // when the pool form named an agenda of the caller's insights).
        let sent_id = id.clone();
        let checked = pop_domain::agenda::split_pool_progress_id(&sent_id)
            .map_or(sent_id.as_str(), |(bare, _)| bare);
        check_id("agendaProgress.id", checked)?;
        let (id, pool_customer) = match self.pool_named(caller, &id).await? {
            Some((progress_id, customer)) => (progress_id, Some(customer)),
            None => (id, None),
        };
        let shown_to_pool = pool_customer.is_some();
        let state_given = object.get("processingState").is_some_and(|s| !s.is_null());
        let given_ops: Vec<bool> = object
            .get("operationProgress")
            .and_then(Value::as_array)
            .map(|ops| {
                ops.iter().map(|o| o.get("processingState").is_some_and(|s| !s.is_null())).collect()
            })
            .unwrap_or_default();
        let mut value = value;
        numbers_from_strings(&mut value);
        let progress: AgendaProgress = from_json("agendaProgress", value)?;
        let now = self.now();
        let mut operations = Vec::with_capacity(progress.operation_progress.len());
        for (index, op) in progress.operation_progress.into_iter().enumerate() {
            if op.operation.trim().is_empty() {
                return Err(AppError::invalid(
                    &format!("agendaProgress.operationProgress[{index}].operation"),
                    "the operation name is required",
                ));
            }
            if !given_ops.get(index).copied().unwrap_or(false) {
                return Err(AppError::invalid(
                    &format!("agendaProgress.operationProgress[{index}].processingState"),
                    "the operation's processingState is required",
                ));
            }
            // A report's params are bounded once merged into the operation's, by the domain
            // (`ProgressReport::params_bytes`): checked here on their own, an echo of params
            // already past the bound (POP's executor sends them with every report) was refused
            // before the domain could take it (popclient28).
            operations.push(OperationReport {
                name: op.operation.into(),
                state: op.processing_state,
                message: op.processing_state_message.map(String::from),
                percent: op.percent_complete.and_then(reported_percent),
                diagnostics: op.diagnostic_events,
                result_payload: Some(op.result_payload.to_value()).filter(|p| !p.is_null()),
                started: op.started_time,
                completed: op.completed_time,
                params: op.params,
            });
        }
        // Results past a bound are not kept and diagnostics are cut by the domain
        // (`AgendaState::fit_report`, `diagnostic_text_bytes`), which knows the agenda.
        let limits = self.config().size_limits();
        let mut report = ProgressReport {
            state: state_given.then_some(progress.processing_state),
            message: progress.processing_state_message,
            diagnostics: progress.diagnostic_events,
            started: progress.started_time,
            completed: progress.completed_time,
            operations,
            params: progress.params,
            params_bytes: Some(limits.params_bytes),
            payload_bytes: Some(limits.payload_bytes),
            over_quota: None,
            log_quota_passed: false,
        };
        // Routed by the report's `agendaId` (with its `customerId`, and the lease, to tell
        // customers apart); without one, by the AgendaProgress id among the agendas the caller
        // may act on. Either way the AgendaProgress id must be that agenda's.
        let customer = Some(progress.customer_id.trim()).filter(|c| !c.is_empty());
        let customer = match (customer, pool_customer.as_deref()) {
            // The report names another customer than the id it was handed: nothing of the
            // caller's is meant.
            (Some(named), Some(handed)) if named != handed => {
                return Err(AppError::not_found("agenda progress", &sent_id));
            }
            (named, handed) => named.or(handed),
        };
        let named_agenda = Some(progress.agenda_id.trim()).filter(|a| !a.is_empty());
        let (agenda_id, key) = match named_agenda {
            Some(agenda_id) => {
                let named =
                    Named { id: agenda_id, customer, lease: lease_id.as_deref(), work: true };
                (agenda_id.to_string(), self.resolve(caller, named).await?)
            }
            None => self
                .resolve_progress(caller, &id, customer, lease_id.as_deref())
                .await
                .map_err(|e| match e.code {
                    error::Code::NotFound => AppError::not_found("agenda progress", &sent_id),
                    _ => e,
                })?,
        };
        // Not read for a caller that may not act on it (`App::reachable`): NOT_FOUND as the
        // command would answer, in the same time whether it exists or not (hostile53 M1).
        if !self.reachable(caller, &key, true).await? {
            return Err(match named_agenda {
                Some(_) => AppError::not_found("agenda", &agenda_id),
                None => AppError::not_found("agenda progress", &sent_id),
            });
        }
        let owns = |state: &AgendaState| state.agenda().is_none() || state.progress().id == id;
        let belongs = match self.commands().peek::<AgendaState, _>(&key, owns) {
            Some(belongs) => belongs,
            None => self.commands().load::<AgendaState>(&key).await.map_or(true, |(s, _)| owns(&s)),
        };
        if !belongs {
            // Only to a caller that may act on the agenda: to anyone else it does not exist
            // (a tenant naming another customer's agenda learned from this that it exists).
            self.authorized_customer_for(caller, &agenda_id, &key, true).await?;
            return Err(AppError::invalid(
                "agendaProgress.id",
                format!("{id:?} is not the progress id of agenda {agenda_id:?}"),
            ));
        }
        if let Some((customer, _)) = pop_domain::agenda::key::split(&key) {
            (report.over_quota, report.log_quota_passed) = self.report_quotas(&customer);
        }
        let command = AgendaCommand::ReportProgress {
            holder: caller.principal.name.clone(),
            lease_id,
            lease_expires: now + services.config().lease,
            report,
            now,
        };
        let outcome = services
            .on_key(caller, "updateAgendaProgress", &agenda_id, &key, command, "agendaProgress")
            .await
            .map_err(|e| match e.code {
                // Found by its progress id among the agendas of the caller's insights, but not
                // one it may act on: said of the id it sent, as for an absent one (hostile16:
                // a pool's worker was told "agenda \"acme-merger-with-initech\" not found" of
                // another customer's progress id it never held).
                error::Code::NotFound if named_agenda.is_none() => {
                    AppError::not_found("agenda progress", &sent_id)
                }
                _ => e,
            })?;
        let outcome = if shown_to_pool { outcome.shown_to_pool() } else { outcome };
        // Only the report that ends the agenda says so in the log (popclient18: POP's executor
        // reports the agenda's outcome after its operations', and each failure was logged
        // twice).
        if outcome.completed {
            let progress = outcome.progress();
            let message = progress.processing_state_message.as_deref().unwrap_or("");
            // Whether a failure is retried, so the log says when an agenda fails for good
            // (ops3am13: the last line of an agenda out of attempts was "completed failed").
            let then = match () {
                _ if !pop_domain::message::is_failed(message) => "",
                _ if progress.retry_due() && services.config().retries => {
                    ": a retry follows after the backoff"
                }
                _ if progress.retry_due() => {
                    ": attempts left; this server runs no retry process (--retry-interval 0), so \
                     it is retried only where another replica or `pop reap retry` runs one"
                }
                _ if progress.not_retryable() => ": not retried (its executor said so)",
                _ => ": no attempt left, not retried",
            };
            let (attempt, maximum) = (progress.attempts_completed, progress.maximum_attempts);
            tracing::info!(target: "pop::agendas", agenda = &*key, by = &*caller.principal.name, cid = &*caller.cid, attempt, maximum, "completed {}{then}", log_field(message));
        } else if outcome.withdrew_retry {
            // The executor's outcome report came after the report that completed the agenda,
            // whose line said a retry follows, and said NOT_RETRYABLE (popclient20: no line said
            // the retry was dropped; review-s41c, review-s41d: only then; the domain says so in
            // the event, `AgendaDiagnosticsAdded.withdrewRetry`).
            let progress = outcome.progress();
            let (attempt, maximum) = (progress.attempts_completed, progress.maximum_attempts);
            tracing::info!(target: "pop::agendas", agenda = &*key, by = &*caller.principal.name, cid = &*caller.cid, attempt, maximum, "failed: not retried after all (its executor's outcome report said so)");
        }
        Ok(outcome)
    }

    /// The customer's own progress id and the customer that `id` names, when it is the pool's
    /// progress id ([`pop_domain::agenda::pool_progress_id`]) of an agenda the caller may name
    /// ([`candidates_of`]); `None` for any other id. Customers cannot choose ids of that shape (`check_own_id`); one stored by an older
    /// build that the caller may name makes the id ambiguous, refused (VALIDATION `customerId`).
    pub(crate) async fn pool_named(
        &self,
        caller: &Caller,
        id: &str,
    ) -> AppResult<Option<(String, String)>> {
        let Some((progress_id, tag)) = pop_domain::agenda::split_pool_progress_id(id) else {
            return Ok(None);
        };
        self.settle(None).await?;
        let models = self.projections().read();
        let (tagged, _) =
            candidates_of(&models, caller, true, models.agendas().with_progress_id(progress_id));
        // Read as the pool id whether or not the caller would be shown pool ids today (an
        // insight made private, a token reloaded with fewer customers after the hand-out): it
        // reaches no agenda the caller could not name by the bare id and its customer.
        let mut tagged = tagged
            .into_iter()
            .filter(|e| pop_domain::agenda::key::customer_tag(e.customer_id()) == tag);
        let tagged = match (tagged.next(), tagged.next()) {
            (None, _) => return Ok(None),
            (Some(one), None) => one,
            // Two customers of one tag (60 bits: chosen ids, not chance): refused, not guessed.
            (Some(_), Some(_)) => return Err(ambiguous_work(id, 2)),
        };
        // The id is also an agenda's own id or progress id (stored by an older build, which
        // did not refuse such ids): refused rather than guessed at.
        let own = models.agendas().with_progress_id(id).chain(models.agendas().with_id(id));
        let (own, _) = candidates_of(&models, caller, true, own);
        if !own.is_empty() {
            return Err(ambiguous_work(id, 2));
        }
        Ok(Some((progress_id.to_string(), tagged.customer_id().to_string())))
    }

    /// The agenda (id and stream key) whose AgendaProgress has id `progress_id`, among those
    /// the caller may name ([`candidates_of`], [`named_one`]), for a report that names no
    /// agenda. A pool's worker reaches the agendas of its insights by the id alone (its
    /// executor's own outcome report comes after the lease is gone; the write side decides
    /// whether it is taken), but only while one customer uses the id.
    async fn resolve_progress(
        &self,
        caller: &Caller,
        progress_id: &str,
        customer: Option<&str>,
        lease: Option<&str>,
    ) -> AppResult<(String, String)> {
        self.settle(None).await?;
        let found = {
            let models = self.projections().read();
            let entries = models
                .agendas()
                .with_progress_id(progress_id)
                .filter(|e| customer.is_none_or(|c| e.customer_id() == c));
            named_one(progress_id, lease, true, candidates_of(&models, caller, true, entries))?
                .map(|e| (e.id().to_string(), e.key().to_string()))
        };
        found.ok_or_else(|| AppError::not_found("agenda progress", progress_id))
    }

    /// Hands an agenda the caller holds back at once (a worker stopping gracefully): it goes
    /// back to `added` at the back of its queue, no attempt is consumed, and operation progress
    /// stays so the next executor resumes. Only under the current lease (`lease_id`, as
    /// getAgenda answered it); anyone else's release is refused like a report.
    pub async fn release(
        &self,
        caller: &Caller,
        agenda: Named<'_>,
        lease_id: &str,
        cid: Option<&str>,
    ) -> AppResult<AgendaOutcome> {
        caller
            .run(Action::Work, cid, async |caller| {
                check_id("leaseId", lease_id.trim())?;
                if lease_id.trim().is_empty() {
                    return Err(AppError::invalid(
                        "leaseId",
                        "the lease id getAgenda answered is required",
                    ));
                }
                let named = Named { lease: Some(lease_id.trim()), ..agenda }.for_work();
                let command = AgendaCommand::Release {
                    holder: caller.principal.name.clone(),
                    lease_id: lease_id.trim().to_string(),
                    now: self.now(),
                };
                let outcome = self.on_agenda(caller, "releaseAgenda", named, command).await?;
                // (ops3am15: a stopping worker's hand-back left no line between two claims.)
                if outcome.position.is_some() {
                    let p = outcome.progress();
                    tracing::info!(target: "pop::agendas::flow", agenda = &*pop_domain::agenda::key::key(&p.customer_id, &p.agenda_id), by = &*caller.principal.name, cid = &*caller.cid, "handed back by its worker: queued again, no attempt counted");
                }
                Ok(outcome)
            })
            .await
    }
}

/// Fields of an executor's report that POP clients send as numeric strings (`"50"`): the
/// domain reads them as numbers, so they are converted here, at the POP wire, wherever they
/// occur in the report (agenda, operation progress, diagnostic events). A string that is not
/// a number is left alone for the domain to refuse with the field named. (`statusCode` is a
/// string, as in POP: `"0137"` must stay as sent.)
const NUMERIC_FIELDS: &[&str] =
    &["percentComplete", "attemptsCompleted", "maximumAttempts", "attemptCount"];

/// Most nesting [`numbers_from_strings`] walks (a report is three levels deep; payloads inside
/// it are not touched past this).
const MAX_NUMERIC_DEPTH: usize = 4;

fn numbers_from_strings(value: &mut Value) {
    fn walk(value: &mut Value, depth: usize) {
        if depth > MAX_NUMERIC_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if let Value::String(text) = v
                        && NUMERIC_FIELDS.contains(&key.as_str())
                    {
                        let text = text.trim();
                        if let Ok(n) = text.parse::<i64>() {
                            *v = Value::from(n);
                        } else if let Some(n) =
                            text.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
                        {
                            *v = Value::Number(n);
                        }
                    } else if matches!(key.as_str(), "operationProgress" | "diagnosticEvents") {
                        walk(v, depth + 1);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, depth + 1)),
            _ => {}
        }
    }
    walk(value, 0);
}

/// The percent an executor reported, as the operation's percent. A ratio an executor computes
/// may overshoot (POP's executors report 100.0000001, or bytes done over an estimate): more
/// than 100 is 100. One with nothing to divide by is `NaN` or `Infinity` (POP's JsonHelper
/// writes them as strings) and a negative one means nothing either: those are no percent, as
/// if none was sent, and the rest of the report is taken; refused whole, the executor's
/// heartbeat was lost and its lease ran out while it still worked (popclient11).
fn reported_percent(percent: f64) -> Option<f64> {
    (percent.is_finite() && percent >= 0.0).then_some(percent.min(100.0))
}

// A report's event is cut into parts under what the store takes in one event.
const _: () =
    assert!(pop_domain::agenda::REPORT_PART_BYTES < pop_store::limits::MAX_EVENT_DATA_BYTES);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The domain cuts a report's event into parts under the store's limit on one event,
    /// with room for a part's largest operation change: a result at the limit on results.
    #[test]
    fn a_reports_parts_fit_the_stores_events() {
        let limits = crate::limits::AppConfig::default().size_limits();
        assert!(
            pop_domain::agenda::REPORT_PART_BYTES + limits.payload_bytes
                <= pop_store::limits::MAX_EVENT_DATA_BYTES + (256 << 10)
        );
    }

    fn candidates(ids: &[&str]) -> impl Iterator<Item = (String, String, i64)> {
        ids.iter().map(|id| (id.to_string(), "c".to_string(), 0)).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn a_round_dropped_in_flight_leaves_nothing_in_the_book() {
        let book = ClaimBook::default();
        let applied = pop_store::Position::START;
        let round = book.reserve(&mut candidates(&["a", "b"]), 2, &applied);
        let reserved =
            Reservation { book: &book, ids: round.iter().map(|(id, _, _)| id.clone()).collect() };
        // In flight: another call skips both.
        assert!(book.reserve(&mut candidates(&["a", "b"]), 2, &applied).is_empty());
        // `a` is claimed, `b` never settles: the request went away mid-claim.
        book.claimed("a", Some(pop_store::Position::from_sequence(7)));
        drop(reserved);
        let next = book.reserve(&mut candidates(&["a", "b"]), 2, &applied);
        let ids: Vec<&str> = next.iter().map(|(id, _, _)| id.as_str()).collect();
        // `a` stays until the read models apply its claim; `b` is free again.
        assert_eq!(ids, ["b"]);
        let later = pop_store::Position::from_sequence(7);
        book.release("b");
        let next = book.reserve(&mut candidates(&["a", "b"]), 2, &later);
        assert_eq!(next.len(), 2);
    }
}
