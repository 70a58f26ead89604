//! What use cases answer: domain values with the global position of the last event a write
//! appended (pass it as `atLeastPosition` to read the write from any replica) and the cid the
//! write carried. Transports turn these into their own shapes; nothing here knows them.

use std::sync::Arc;

use pop_domain::agenda::{AgendaEvent, AgendaState, Lease};
use pop_domain::{Agenda, AgendaProgress};
use pop_projections::Cursor;
use pop_store::{Executed, Position};

use crate::Caller;

/// An agenda after a command, or as `getAgenda` handed it out. Holds the command's state as
/// the write left it, shared with the command cache (no copy of the agenda per answer); a
/// transport converts only the parts its client asked for.
#[derive(Debug, Clone)]
pub struct AgendaOutcome {
    state: Arc<AgendaState>,
    /// The position of the last event appended (`None`: the command changed nothing).
    pub position: Option<Position>,
    pub cid: String,
    /// The W3C `traceparent` of the latest traced request that changed the agenda (its
    /// submission, a rerun, a worker's report; never a claim): a worker that claims it joins
    /// that trace.
    pub traceparent: Option<Arc<str>>,
    /// The `tracestate` that came with [`Self::traceparent`], if any.
    pub tracestate: Option<Arc<str>>,
    /// Whether the caller holds the agenda's lease (see [`Self::lease`]).
    holds_lease: bool,
    /// Whether this command's own events ended the agenda (an `AgendaCompleted` among them):
    /// known from what it wrote, on any replica and when writes are grouped (review-s40c F7:
    /// a look at this process's cache before the command logged a completion twice when
    /// another replica had taken the earlier report).
    pub(crate) completed: bool,
    /// Whether this command's own events took away a due retry after the agenda completed (an
    /// executor's outcome report calling the failure NOT_RETRYABLE: POP's comes after its
    /// operations' reports, popclient20).
    pub(crate) withdrew_retry: bool,
}

impl AgendaOutcome {
    pub(crate) fn of(executed: &Executed<AgendaState>, caller: &Caller) -> AgendaOutcome {
        AgendaOutcome {
            state: Arc::clone(&executed.state),
            position: executed.position,
            cid: caller.cid.clone(),
            traceparent: executed.traceparent.clone(),
            tracestate: executed.tracestate.clone(),
            holds_lease: crate::resolve::holds_lease(&caller.principal, &executed.state),
            completed: executed.events.iter().any(|e| matches!(e, AgendaEvent::Completed(_))),
            withdrew_retry: executed
                .events
                .iter()
                .any(|e| matches!(e, AgendaEvent::DiagnosticsAdded(d) if d.withdrew_retry)),
        }
    }

    /// The outcome as a resource pool's worker is shown it: under the progress id it is
    /// handed ([`pop_domain::agenda::pool_progress_id`]), which names the customer too, so that
    /// its executor's reports by that id alone reach this agenda and no other customer's.
    pub(crate) fn shown_to_pool(mut self) -> AgendaOutcome {
        if let Some(agenda) = self.state.agenda() {
            let id = pop_domain::agenda::pool_progress_id(
                &agenda.customer_id,
                &self.state.progress().id,
            );
            self.state = Arc::new(self.state.shown_as(&id));
        }
        self
    }

    /// The agenda (`None` only for a stream without one, which no use case answers).
    pub fn agenda(&self) -> Option<&Agenda> {
        self.state.agenda()
    }

    /// The agenda's progress.
    pub fn progress(&self) -> &AgendaProgress {
        self.state.progress()
    }

    /// The lease the agenda is held under (`scheduled` or EXECUTING), when the caller holds
    /// it: a submission handed straight to a waiting worker ([`crate::handout`]) must not answer
    /// the submitter that worker's lease.
    pub fn lease(&self) -> Option<&Lease> {
        self.state.lease().filter(|_| self.holds_lease)
    }
}

/// What a config command did: the object as it is now (for a delete: as it was deleted).
#[derive(Debug, Clone)]
pub struct Configured<T> {
    pub object: T,
    pub deleted: bool,
    pub position: Option<Position>,
    pub cid: String,
}

/// One page of a list: the items, the cursor of the next page (`None` at the end), and the
/// read models' position the page was read at.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
    pub position: Position,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
            position: self.position,
        }
    }
}

/// Who holds an agenda's lease and until when: what an operator asks of an agenda that runs
/// (ops3am16: a dead worker's agenda looked like a slow one until the reclaimer's log said
/// otherwise). The lease id is not part of it: it is the holder's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The principal that claimed it (a worker's name).
    pub holder: String,
    /// When the lease ends unless the holder reports or renews it.
    pub expires: pop_domain::Timestamp,
}
