//! Which agenda a request names. Agenda ids are chosen per customer (the stream is keyed by
//! customer and id, `pop_domain::agenda::key`), so an id alone names one agenda *for a caller
//! who sees one customer using it*. The rules, once for every use case:
//!
//! - Only agendas the caller may act on are candidates: those of its customers, and — for a
//!   resource pool's service principal — the ones it holds the lease of (POP's pullers serve
//!   every customer of their pool). Candidates are chosen before any match, so another
//!   customer's agenda can never shadow or reveal itself.
//! - A `customerId` from the request picks the customer; a lease id picks the agenda it was
//!   handed out under; without either, an agenda the caller itself holds (or, as a pool's
//!   worker, serves: `work::operates`) is the one it means ([`Match`]).
//! - None left: NOT_FOUND, exactly as for an id nobody uses. Several left (an admin seeing two
//!   customers that both use the id): VALIDATION naming `customerId`, which only lists what the
//!   caller sees anyway.

use pop_domain::agenda::{AgendaState, key};
use pop_domain::validate::check_id;
use pop_projections::AgendaEntry;

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
}

impl<'a> Named<'a> {
    pub fn id(id: &'a str) -> Named<'a> {
        Named { id, customer: None, lease: None }
    }

    pub fn of(id: &'a str, customer: Option<&'a str>) -> Named<'a> {
        Named { id, customer: customer.filter(|c| !c.trim().is_empty()), lease: None }
    }
}

/// Whether `principal` holds the lease of an agenda in `state` (a worker may act on the agendas
/// it was handed, whatever their customer).
pub(crate) fn holds_lease(principal: &Principal, state: &AgendaState) -> bool {
    principal.role != Role::User && state.lease().is_some_and(|l| l.holder == principal.name)
}

/// Whether `principal` holds the lease of a live agenda whose AgendaProgress id is
/// `progress_id`. POP's pullers and executors know an agenda by its progress id alone, and two
/// customers may use one id: a worker is never handed a second agenda of a progress id it
/// holds (nor two in one answer), so its reports by that id name one agenda.
pub(crate) fn holds_progress_id(
    models: &pop_projections::ReadModels,
    principal: &Principal,
    progress_id: &str,
) -> bool {
    principal.role != Role::User
        && models
            .agendas()
            .with_progress_id(progress_id)
            .any(|e| e.is_live() && e.state().is_ok_and(|s| holds_lease(principal, &s)))
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

/// How closely a candidate matches the request, for [`pick`]: held under the lease the request
/// names, else held (or served) by the caller itself, else neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Match {
    Visible,
    /// The caller's principal holds its lease, or serves it as a pool's worker
    /// (`work::operates`): POP's executors name neither the customer nor the lease, so when
    /// two customers use one id, the one the caller works on is the one it means.
    Held,
    UnderLease,
}

/// How `entry` matches a request naming `lease`, for `principal`.
pub(crate) fn match_of(principal: &Principal, entry: &AgendaEntry, lease: Option<&str>) -> Match {
    if under_lease(entry, lease) {
        Match::UnderLease
    } else if entry.is_live() && entry.state().is_ok_and(|s| holds_lease(principal, &s)) {
        Match::Held
    } else {
        Match::Visible
    }
}

/// The candidates a request names: all of them when there is at most one, else the ones that
/// match it best ([`Match`]). A lease only tells candidates apart; a stale lease on the one
/// candidate still reaches it, so the domain answers CONFLICT rather than this answering
/// NOT_FOUND.
pub(crate) fn pick<T>(candidates: Vec<(T, Match)>) -> Vec<T> {
    let best = candidates.iter().map(|(_, m)| *m).max().unwrap_or(Match::Visible);
    if candidates.len() > 1 && best > Match::Visible {
        candidates.into_iter().filter(|(_, m)| *m == best).map(|(c, _)| c).collect()
    } else {
        candidates.into_iter().map(|(c, _)| c).collect()
    }
}

/// The error for an id that names several agendas the caller may see.
pub(crate) fn ambiguous(id: &str, customers: usize) -> AppError {
    AppError::invalid(
        "customerId",
        format!(
            "agenda id {id:?} is used by {customers} customers this caller may see; name the customer"
        ),
    )
}

impl App {
    /// The stream key of the agenda `named` names for `caller` (see the module docs). The
    /// write side confirms the caller may act on it ([`App::authorized_customer`]).
    pub(crate) async fn resolve(&self, caller: &Caller, named: Named<'_>) -> AppResult<String> {
        check_id("agendaId", named.id)?;
        if let Some(customer) = named.customer {
            check_id("customerId", customer)?;
            return Ok(key(customer, named.id));
        }
        // Every write this replica acknowledged is in the read models first.
        self.settle(None).await?;
        let keys: Vec<(String, Match)> = {
            let models = self.projections().read();
            models
                .agendas()
                .with_id(named.id)
                .filter(|e| may_touch(&caller.principal, e))
                .map(|e| (e.key().to_string(), match_of(&caller.principal, e, named.lease)))
                .collect()
        };
        match pick(keys).as_slice() {
            [one] => Ok(one.clone()),
            [] => match caller.principal.only_customer() {
                // Written through another replica and not yet here: the caller's one customer
                // names it (the write side decides whether it exists).
                Some(customer) => Ok(key(customer, named.id)),
                None => Err(AppError::not_found("agenda", named.id)),
            },
            several => Err(ambiguous(named.id, several.len())),
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
        let customer = match self.commands().load::<AgendaState>(key).await {
            Ok((state, _)) => may(&state),
            Err(pop_store::ExecuteError::Store(pop_store::StoreError::StreamDeleted {
                ..
            })) => None,
            Err(e) => return Err(error::execute(&subject, e)),
        };
        customer.ok_or_else(|| AppError::not_found("agenda", id))
    }
}
