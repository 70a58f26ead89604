//! Who is calling (DOMAIN.md §10): a [`Principal`] (name, [`Role`], the customers it may see)
//! and the correlation id its errors and events carry — together a [`Caller`]. How a transport
//! learned the principal (a bearer token, a WebSocket's `connection_init`) is the transport's
//! business; what the principal may do is decided here, once.

use pop_projections::Visibility;
use serde::Deserialize;

use crate::error::{AppError, AppResult};
use crate::limits::MAX_CID_LENGTH;

/// What a principal may do (DOMAIN.md §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits, reads, reruns and cancels its customers' agendas.
    User,
    /// A resource pool's puller/executor: `getAgenda`, `updateAgendaProgress`, `expand`.
    Service,
    /// Everything, including customers, pools, insights and templates.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may perform `action` at all (tenancy is checked separately).
    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::Submit | Action::Rerun | Action::Cancel => {
                matches!(self, Role::User | Role::Admin)
            }
            Action::Expand | Action::Work => matches!(self, Role::Service | Role::Admin),
            Action::Configure | Action::ReadLog => self == Role::Admin,
        }
    }
}

/// The kinds of things a caller asks for, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Any query or subscription on visible objects.
    Read,
    /// `submitAgenda`, `runTemplate`.
    Submit,
    Rerun,
    Cancel,
    /// `expandAgenda`.
    Expand,
    /// `getAgenda`, `updateAgendaProgress`, `releaseAgenda`.
    Work,
    /// Create/update/delete customers, pools, insights, templates.
    Configure,
    /// The global event log (`events`), which spans every customer.
    ReadLog,
}

impl Action {
    /// Every action, in the order [`Principal::allowed`] lists them.
    pub const ALL: [Action; 8] = [
        Action::Read,
        Action::Submit,
        Action::Rerun,
        Action::Cancel,
        Action::Expand,
        Action::Work,
        Action::Configure,
        Action::ReadLog,
    ];

    /// The action's short name, for clients that offer only what a caller may do (the
    /// dashboard).
    pub fn name(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Submit => "submit",
            Action::Rerun => "rerun",
            Action::Cancel => "cancel",
            Action::Expand => "expand",
            Action::Work => "work",
            Action::Configure => "configure",
            Action::ReadLog => "readLog",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Submit => "submit agendas",
            Action::Rerun => "rerun agendas",
            Action::Cancel => "cancel agendas",
            Action::Expand => "expand agendas",
            Action::Work => "take and report work",
            Action::Configure => "change customers, resource pools, insights or templates",
            Action::ReadLog => "read the global event log",
        }
    }
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Which customers' objects it sees and touches.
    pub customers: Visibility,
}

impl Principal {
    /// A principal from customer ids (`"*"` = every customer).
    pub fn new(name: &str, role: Role, customers: &[&str]) -> Principal {
        Principal {
            name: name.to_string(),
            role,
            customers: Visibility::from_ids(customers.iter().copied()),
        }
    }

    /// The actions this principal's role allows (tenancy still decides per object).
    pub fn allowed(&self) -> impl Iterator<Item = Action> + '_ {
        Action::ALL.into_iter().filter(|a| self.may(*a))
    }

    /// Whether this principal may perform `action` at all: its role allows it, and the global
    /// event log, which spans every customer, only to a principal that sees every customer.
    pub fn may(&self, action: Action) -> bool {
        self.role.allows(action) && (action != Action::ReadLog || self.customers == Visibility::All)
    }

    /// Whether objects owned by `customer_id` are visible to this principal.
    pub fn sees(&self, customer_id: &str) -> bool {
        self.customers.sees(customer_id)
    }

    /// The one customer this principal acts for, when it has exactly one (used when a
    /// submission leaves `customerId` out).
    pub fn only_customer(&self) -> Option<&str> {
        match &self.customers {
            Visibility::Customers(ids) if ids.len() == 1 => ids.iter().next().map(String::as_str),
            _ => None,
        }
    }

    /// The actor recorded in event metadata.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.name)
    }
}

/// The caller of one request (HTTP) or connection (WebSocket): its principal, the
/// correlation id its errors and events carry, and the W3C `traceparent` its events carry.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub cid: String,
    /// A well-formed version-00 `traceparent` ([`pop_store::event::valid_traceparent`]) or
    /// none: stored in the metadata of the events the caller's commands append.
    traceparent: Option<String>,
    /// The `tracestate` that came with it ([`pop_store::event::valid_tracestate`]), only
    /// beside a traceparent.
    tracestate: Option<String>,
}

impl Caller {
    pub fn new(principal: Principal, cid: impl Into<String>) -> Caller {
        Caller { principal, cid: cid.into(), traceparent: None, tracestate: None }
    }

    /// The caller with the request's W3C `traceparent`; a malformed one is dropped (no trace
    /// context, as the W3C recommendation says), never an error.
    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Caller {
        self.traceparent = traceparent.and_then(pop_store::valid_traceparent).map(str::to_string);
        self.tracestate = self.tracestate.filter(|_| self.traceparent.is_some());
        self
    }

    /// The caller with the request's W3C `tracestate`, kept only beside a well-formed
    /// traceparent (call it after [`Caller::with_traceparent`]); a malformed or oversized one
    /// is dropped whole.
    pub fn with_tracestate(mut self, tracestate: Option<&str>) -> Caller {
        self.tracestate = tracestate
            .filter(|_| self.traceparent.is_some())
            .and_then(pop_store::valid_tracestate)
            .map(str::to_string);
        self
    }

    /// The request's `traceparent`, if it sent a well-formed one.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The request's `tracestate`, if it sent a well-formed one beside its traceparent.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The caller of a mutation that may name its own correlation id: the one the client gave
    /// (at most [`MAX_CID_LENGTH`] printable characters), else the request's. Blank means
    /// "not given".
    pub fn with_cid(&self, given: Option<&str>) -> AppResult<Caller> {
        match given.map(str::trim).filter(|c| !c.is_empty()) {
            None => Ok(self.clone()),
            Some(c) if c.chars().count() > MAX_CID_LENGTH || c.chars().any(char::is_control) => {
                Err(AppError::invalid(
                    "cid",
                    format!("a cid is at most {MAX_CID_LENGTH} printable characters"),
                )
                .with_cid(&self.cid))
            }
            Some(c) => Ok(Caller { cid: c.to_string(), ..self.clone() }),
        }
    }

    /// FORBIDDEN unless the caller's role allows `action` (a role check reveals nothing about
    /// any object, so it may come first).
    pub fn authorize(&self, action: Action) -> AppResult<()> {
        if !self.principal.may(action) {
            let limited = if self.principal.role.allows(action) {
                " (it sees only some customers; the global event log spans every customer)"
            } else {
                ""
            };
            return Err(AppError::forbidden(format!(
                "principal {:?} has role {} and may not {}{limited}",
                self.principal.name,
                self.principal.role.as_str(),
                action.as_str()
            ))
            .with_cid(&self.cid));
        }
        Ok(())
    }

    /// Runs one use case for this caller: the role check, then `work` for the caller with the
    /// correlation id the request named (`cid`, checked by [`Caller::with_cid`]), every error
    /// of which carries that cid. Each use case goes through here, so no transport adds
    /// authorisation or cids by hand.
    pub(crate) async fn run<T>(
        &self,
        action: Action,
        cid: Option<&str>,
        work: impl AsyncFnOnce(&Caller) -> AppResult<T>,
    ) -> AppResult<T> {
        self.authorize(action)?;
        let caller = self.with_cid(cid)?;
        let cid = caller.cid.clone();
        let reads = matches!(action, Action::Read | Action::ReadLog);
        let actor = reads.then(|| caller.principal.actor());
        let work = crate::error::SERVING_ACTOR.scope(actor, work(&caller));
        crate::error::SERVING.scope(cid, work).await.map_err(|e| e.with_cid(&caller.cid))
    }

    /// [`Caller::run`] for a read that does not wait.
    pub(crate) fn read_now<T>(&self, work: impl FnOnce() -> AppResult<T>) -> AppResult<T> {
        self.authorize(Action::Read)?;
        let actor = Some(self.principal.actor());
        let work = || crate::error::SERVING_ACTOR.sync_scope(actor, work);
        crate::error::SERVING.sync_scope(self.cid.clone(), work).map_err(|e| e.with_cid(&self.cid))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn role_matrix() {
        use Action::*;
        assert!(
            Role::User.allows(Submit) && Role::User.allows(Cancel) && !Role::User.allows(Expand)
        );
        assert!(Role::Service.allows(Expand) && !Role::Service.allows(Submit));
        assert!(!Role::Service.allows(Configure) && Role::Admin.allows(Configure));
        assert!(Role::Admin.allows(Work) && Role::Admin.allows(ReadLog));
        // The global log spans every customer: an admin of some customers may not read it.
        let limited = Principal::new("adminb", Role::Admin, &["custb"]);
        assert!(!limited.may(ReadLog) && limited.may(Configure));
        assert!(!limited.allowed().any(|a| a == ReadLog));
        let err = Caller::new(limited, "c-1").authorize(ReadLog).expect_err("refused");
        assert_eq!(err.code, crate::error::Code::Forbidden, "{err:?}");
        assert!(Principal::new("root", Role::Admin, &["*"]).may(ReadLog));
    }

    #[test]
    fn a_mutation_may_name_its_cid_within_bounds() {
        let caller = Caller::new(Principal::new("u", Role::User, &["acme"]), "req-1");
        assert_eq!(caller.with_cid(None).unwrap().cid, "req-1");
        assert_eq!(caller.with_cid(Some("  ")).unwrap().cid, "req-1");
        assert_eq!(caller.with_cid(Some(" mine ")).unwrap().cid, "mine");
        let e = caller.with_cid(Some("a\nb")).unwrap_err();
        assert_eq!((e.code.as_str(), e.cid.as_deref()), ("VALIDATION", Some("req-1")));
    }

    #[test]
    fn forbidden_carries_the_cid() {
        let caller = Caller::new(Principal::new("w", Role::Service, &["acme"]), "c9");
        let e = caller.authorize(Action::Submit).unwrap_err();
        assert_eq!((e.code.as_str(), e.cid.as_deref()), ("FORBIDDEN", Some("c9")));
    }

    #[tokio::test]
    async fn log_lines_written_during_a_use_case_name_its_cid() {
        let caller = Caller::new(Principal::new("u", Role::User, &["acme"]), "req-7");
        assert_eq!(crate::error::serving_cid(), "-", "no use case runs here");
        let seen = caller
            .run(Action::Submit, Some("mine"), async |_| Ok(crate::error::serving_cid()))
            .await;
        assert_eq!(seen.unwrap(), "mine", "the cid the mutation named");
        let seen = caller.run(Action::Read, None, async |_| Ok(crate::error::serving_cid())).await;
        assert_eq!(seen.unwrap(), "req-7", "the request's cid");
        assert_eq!(caller.read_now(|| Ok(crate::error::serving_cid())).unwrap(), "req-7");
        assert_eq!(crate::error::serving_cid(), "-", "and none after it");
    }
}
