//! Which agenda a request names. Agenda ids are chosen per customer (the stream is keyed by
//! customer and id, `pop_domain::agenda::key`), so an id alone names one agenda *for a caller
//! who sees one customer using it*. The rules, once for every use case:
//!
//! - Only agendas the caller may act on are candidates: those of its customers, the ones it
//!   holds the lease of, and — for a worker's request (report, expand, release) of a resource
//!   pool's worker — those of the insights it runs (POP's pullers serve every customer of their
//!   pool) ([`candidates_of`]). Candidates are
//!   chosen before any match, so another customer's agenda can never shadow or reveal itself.
//! - A `customerId` from the request picks the customer; a lease id picks the agenda it was
//!   handed out under ([`named_one`]). A worker's request may also name the agenda by the
//!   progress id a pool's worker was handed (`<progressId>~<customer tag>`), as its reports do.
//! - None left: NOT_FOUND, exactly as for an id nobody uses. Candidates of several customers
//!   and no lease to tell them apart (an admin seeing two customers that both use the id, a
//!   pool's worker serving both): VALIDATION naming `customerId`, which only lists what the
//!   caller may act on anyway. Holding one of them does not decide: a late or stale request
//!   of the other's run would land on it.

use pop_domain::agenda::{AgendaState, key};
use pop_domain::binding::may_use_insight;
use pop_domain::model::Insight;
use pop_domain::validate::check_id;
use pop_projections::{AgendaEntry, ReadModels, Visibility};

use crate::App;
use crate::caller::{Caller, Principal, Role};
use crate::error::{self, AppError, AppResult};

/// An agenda as a request names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Named<'a> {
    pub id: &'a str,
    /// The customer the request says the agenda belongs to.
    pub customer: Option<&'a str>,
    /// The lease the request says it holds the agenda under.
    pub lease: Option<&'a str>,
    /// A worker's request (a report, an expansion, a release): a pool's worker may name any
    /// agenda of the insights it runs ([`candidates_of`]). Reads, cancels and reruns name only
    /// what the caller may act on.
    pub work: bool,
}

impl<'a> Named<'a> {
    pub fn id(id: &'a str) -> Named<'a> {
        Named { id, customer: None, lease: None, work: false }
    }

    pub fn of(id: &'a str, customer: Option<&'a str>) -> Named<'a> {
        Named { id, customer: customer.filter(|c| !c.trim().is_empty()), lease: None, work: false }
    }

    /// The same agenda, named by a worker's request ([`Named::work`]).
    pub fn for_work(self) -> Named<'a> {
        Named { work: true, ..self }
    }
}

/// Whether `principal` holds the lease of an agenda in `state` (a worker may act on the agendas
/// it was handed, whatever their customer).
pub(crate) fn holds_lease(principal: &Principal, state: &AgendaState) -> bool {
    principal.role != Role::User && state.lease().is_some_and(|l| l.holder == principal.name)
}

/// Whether the caller may take work from `insight`: one of its customers may use it (`*` may
/// use every insight).
pub(crate) fn may_take_from(caller: &Caller, insight: &Insight) -> bool {
    match &caller.principal.customers {
        Visibility::All => true,
        Visibility::Customers(ids) => ids.iter().any(|c| may_use_insight(insight, c)),
    }
}

/// Whether `caller` sees the insight's owner, or its pool's owner where that customer may use
/// the insight: the insight's operator, whose workers take every customer's agendas of it
/// (`work::takes_from`). Per customer, as an update's check of who runs an insight counts
/// them (`configs::operators`; review58: a token of the pool's owner and of a customer the
/// insight was then shared with was handed every customer's agendas, the pool's owner
/// itself never allowed, and the update's check saw no new operator).
pub(crate) fn runs(caller: &Caller, insight: &Insight, models: &ReadModels) -> bool {
    let principal = &caller.principal;
    principal.sees(&insight.customer_id)
        || models.resource_pool(&insight.resource_pool_id).is_some_and(|pool| {
            principal.sees(&pool.customer_id) && may_use_insight(insight, &pool.customer_id)
        })
}

/// Whether `caller` is a worker of the pool that runs `insight` (`work::takes_from`
/// answers `All`): it is handed every customer's agendas of it, each under the pool's progress id
/// ([`pop_domain::agenda::pool_progress_id`], see [`crate::AgendaOutcome::shown_to_pool`]).
pub(crate) fn operates(caller: &Caller, insight: &Insight, models: &ReadModels) -> bool {
    may_take_from(caller, insight) && runs(caller, insight, models)
}

/// Whether `caller` is a worker of the pool that runs the insight of `entry`'s agenda.
pub(crate) fn operates_agenda(models: &ReadModels, caller: &Caller, entry: &AgendaEntry) -> bool {
    entry.insight_id().and_then(|i| models.insight(i)).is_some_and(|i| operates(caller, i, models))
}

/// Whether `principal` may see and act on the agenda of `entry`.
pub(crate) fn may_touch(principal: &Principal, entry: &AgendaEntry) -> bool {
    principal.sees(entry.customer_id())
        || (entry.is_live() && entry.state().is_ok_and(|s| holds_lease(principal, &s)))
}

/// Whether the agenda of `entry` is held under `lease` (false when no lease is named).
pub(crate) fn under_lease(entry: &AgendaEntry, lease: Option<&str>) -> bool {
    lease.is_some_and(|lease| {
        entry.state().is_ok_and(|s| s.lease().is_some_and(|l| l.lease_id == lease))
    })
}

/// The agendas among `entries` (all of one id) that a request of `caller` may name: those it
/// may act on, and — for a worker's request (`work`: a report, expansion or release of a
/// service or admin token) of a pool's worker — every agenda of the insights it runs (it may
/// have been handed any of them; the write side decides whether it may act on it now); and how
/// many customers they belong to. A read, cancel or rerun names only what the caller may act
/// on: the pool's owner naming its own `nightly` is not refused because a tenant of its global
/// insight also uses the id (a hostile probe of 4c1e29a: that blocked the owner's calls and
/// told its users other customers' ids).
pub(crate) fn candidates_of<'m>(
    models: &'m ReadModels,
    caller: &Caller,
    work: bool,
    entries: impl Iterator<Item = &'m AgendaEntry>,
) -> (Vec<&'m AgendaEntry>, usize) {
    let worker = work && caller.principal.role != Role::User;
    let candidates: Vec<&AgendaEntry> = entries
        .filter(|e| {
            may_touch(&caller.principal, e) || (worker && operates_agenda(models, caller, e))
        })
        .collect();
    let mut customers: Vec<&str> = candidates.iter().map(|e| e.customer_id()).collect();
    customers.sort_unstable();
    customers.dedup();
    (candidates, customers.len())
}

/// The one agenda a request names among its candidates ([`candidates_of`]), `None` when there is
/// none. Candidates of several customers are told apart only by the lease the request names;
/// otherwise the request is refused (VALIDATION `customerId`), never guessed at. POP's
/// executors name an agenda by its id alone, and a pool's worker serves every customer that
/// uses the id: a late or stale request of one customer's run (after it completed, was
/// cancelled or lost its lease) must never land on another customer's agenda the worker holds
/// now. Within one customer an id names at most one agenda.
pub(crate) fn named_one<'m>(
    id: &str,
    lease: Option<&str>,
    work: bool,
    (candidates, customers): (Vec<&'m AgendaEntry>, usize),
) -> AppResult<Option<&'m AgendaEntry>> {
    if customers > 1 {
        let mut leased = candidates.into_iter().filter(|e| under_lease(e, lease));
        return match (leased.next(), leased.next()) {
            (Some(one), None) => Ok(Some(one)),
            _ if work => Err(ambiguous_work(id, customers)),
            _ => Err(ambiguous(id, customers)),
        };
    }
    Ok(candidates.into_iter().next())
}

/// The error for an id that names several agendas the caller may see.
pub(crate) fn ambiguous(id: &str, customers: usize) -> AppError {
    AppError::invalid(
        "customerId",
        format!("{id:?} is used by {customers} customers this caller may see; name the customerId"),
    )
}

/// [`ambiguous`] for a worker's request ([`Named::work`]), which may also tell them apart by
/// its lease or, for a report, by the progress id it was handed.
pub(crate) fn ambiguous_work(id: &str, customers: usize) -> AppError {
    AppError::invalid(
        "customerId",
        format!(
            "{id:?} is used by {customers} customers this caller may act on or serves; name the customerId or the leaseId, or the progressId getAgenda handed out"
        ),
    )
}

impl App {
    /// The stream key of the agenda `named` names for `caller` (see the module docs). The
    /// write side confirms the caller may act on it ([`App::authorized_customer`]).
    pub(crate) async fn resolve(&self, caller: &Caller, named: Named<'_>) -> AppResult<String> {
        check_id("agendaId", named.id)?;
        // A worker's expansion or release by the progress id it was handed, as its reports
        // name the agenda ([`App::pool_named`]; no agenda id has that shape: an unchanged POP
        // executor of a pool serving two customers of one id has no other way, popclient59 L1),
        // with or without the `customerId` a Jackson client sends (repopclient61 F4).
        if named.work
            && let Some((progress_id, customer)) = self.pool_named(caller, named.id).await?
            && named.customer.is_none_or(|c| c == customer)
        {
            let models = self.projections().read();
            let mut handed = models.agendas().with_progress_id(&progress_id);
            if let Some(entry) = handed.find(|e| e.customer_id() == customer) {
                return Ok(entry.key().to_string());
            }
        }
        if let Some(customer) = named.customer {
            check_id("customerId", customer)?;
            return Ok(key(customer, named.id));
        }
        // Every write this replica acknowledged is in the read models first.
        self.settle(None).await?;
        let found = {
            let models = self.projections().read();
            let candidates =
                candidates_of(&models, caller, named.work, models.agendas().with_id(named.id));
            named_one(named.id, named.lease, named.work, candidates)?.map(|e| e.key().to_string())
        };
        match found {
            Some(key) => Ok(key),
            None => match caller.principal.only_customer() {
                // Written through another replica and not yet here: the caller's one customer
                // names it (the write side decides whether it exists).
                Some(customer) => Ok(key(customer, named.id)),
                None => Err(AppError::not_found("agenda", named.id)),
            },
        }
    }

    /// The customer of the agenda keyed `key`, when `caller` may act on it: one of its
    /// customers, or it holds the agenda's lease; NOT_FOUND otherwise, exactly as for an agenda
    /// that does not exist. Read from the write side, so a just-submitted agenda is found
    /// before the projections have it.
    pub(crate) async fn authorized_customer(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> AppResult<String> {
        self.authorized_customer_for(caller, id, key, false).await
    }

    /// Whether `caller` sees the customer of the agenda keyed `key` (named `id`): the reads of
    /// its whole record (its events, its history) are its customer's alone. A lease holder of
    /// another customer reads the agenda's progress while it holds it, not what earlier runs
    /// reported, nor who did what (hostile54 M1: a pool worker of another customer read an
    /// earlier attempt's results and the customer's principals and cids).
    pub(crate) async fn sees_agenda_of(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
    ) -> AppResult<bool> {
        // The key names its customer: nothing is read for a caller who does not see it.
        if let Some((customer, _)) = pop_domain::agenda::key::split(key)
            && !caller.principal.sees(&customer)
        {
            return Ok(false);
        }
        match self.authorized_customer(caller, id, key).await {
            Ok(customer) => Ok(caller.principal.sees(&customer)),
            Err(e) if e.code == crate::Code::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`Self::authorized_customer`]; with `late_report`, a service principal also reaches the
    /// agenda it last held the lease of, once the agenda completed under it
    /// ([`AgendaState::finished_by`]): its executor's own outcome report comes after the
    /// operations' reports completed the agenda (the domain decides whether it agrees).
    pub(crate) async fn authorized_customer_for(
        &self,
        caller: &Caller,
        id: &str,
        key: &str,
        late_report: bool,
    ) -> AppResult<String> {
        let subject = format!("agenda {id:?}");
        let finished_it = |state: &AgendaState| {
            late_report
                && caller.principal.role == Role::Service
                && state.finished_by() == Some(caller.principal.name.as_str())
        };
        let may = |state: &AgendaState| {
            state.agenda().map(|a| a.customer_id.clone()).filter(|customer| {
                caller.principal.sees(customer)
                    || holds_lease(&caller.principal, state)
                    || finished_it(state)
            })
        };
        // A cached state answers for an agenda of the caller's own customers (its customer
        // never changes); a lease holder's claim is checked on the stream.
        let cached = self
            .commands()
            .peek::<AgendaState, _>(key, |state| {
                state.agenda().map(|a| a.customer_id.clone()).filter(|c| caller.principal.sees(c))
            })
            .flatten();
        if let Some(customer) = cached {
            return Ok(customer);
        }
        if !self.reachable(caller, key, late_report).await? {
            return Err(AppError::not_found("agenda", id));
        }
        let customer = match self.commands().load_with::<AgendaState, _>(key, may).await {
            Ok(customer) => customer,
            Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted {
                ..
            })) => None,
            Err(e) => return Err(error::execute(&subject, e)),
        };
        customer.ok_or_else(|| AppError::not_found("agenda", id))
    }

    /// Whether `caller` may be the one to act on the agenda keyed `key`, decided before its
    /// stream is read: a caller of its customer; else (not a `user`) its lease holder, as this
    /// replica's command cache or the read models' live state has it (both borrowed, not read
    /// or copied; a live agenda kept compressed in degraded mode is not decoded: the operator
    /// of its insight then), or — for a `late_report` on a finished agenda, whose finisher is
    /// read from its stream — a service of a pool that runs its insight. Anyone else
    /// is answered NOT_FOUND without the stream being read, in the same time whether the agenda
    /// exists or not (hostile53 M1: naming another customer's agenda answered NOT_FOUND 5–16 ms
    /// later per 50 aliases when it existed, the more the larger it was, as its stream was
    /// folded first). The read models are asked again at the log's head, which costs the same
    /// either way, when they do not show the caller holding it (a claim through another
    /// replica a moment ago). The lease decides, not the insight as it is configured now
    /// (review-s51 H1: a holder whose insight moved to another pool was refused after a
    /// restart).
    pub(crate) async fn reachable(
        &self,
        caller: &Caller,
        key: &str,
        late_report: bool,
    ) -> AppResult<bool> {
        let principal = &caller.principal;
        // A stream keyed by the agenda id alone (written by hand or an older build) names no
        // customer: its stream decides, as before.
        let Some((customer, _)) = pop_domain::agenda::key::split(key) else { return Ok(true) };
        if principal.sees(&customer) {
            return Ok(true);
        }
        if principal.role == Role::User {
            return Ok(false);
        }
        let held = self.commands().peek::<AgendaState, _>(key, |state| {
            holds_lease(principal, state) || state.finished_by() == Some(principal.name.as_str())
        });
        if held == Some(true) {
            return Ok(true);
        }
        let holds = |models: &ReadModels| {
            models.agenda_entry(key).is_some_and(|e| match (e.is_live(), e.live_state()) {
                (true, Some(state)) => holds_lease(principal, state),
                // Degraded mode keeps it compressed (review-s51b M2: decoding it made the
                // answer slower for an existing agenda, the more the larger).
                (true, None) => operates_agenda(models, caller, e),
                (false, _) => {
                    late_report
                        && principal.role == Role::Service
                        && operates_agenda(models, caller, e)
                }
            })
        };
        if holds(&self.projections().read()) {
            return Ok(true);
        }
        self.settle_to_head().await?;
        Ok(holds(&self.projections().read()))
    }
}
