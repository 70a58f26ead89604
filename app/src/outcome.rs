//! What use cases answer: domain values with the global position of the last event a write
//! appended (pass it as `atLeastPosition` to read the write from any replica) and the cid the
//! write carried. Transports turn these into their own shapes; nothing here knows them.

use pop_domain::agenda::{AgendaState, Lease};
use pop_domain::{Agenda, AgendaProgress};
use pop_projections::Cursor;
use pop_store::{Executed, Position};

use crate::Caller;

/// An agenda after a command, or as `getAgenda` handed it out.
#[derive(Debug, Clone)]
pub struct AgendaOutcome {
    pub agenda: Option<Agenda>,
    pub progress: AgendaProgress,
    /// The lease the agenda is held under (`scheduled` or EXECUTING), if any.
    pub lease: Option<Lease>,
    /// The position of the last event appended (`None`: the command changed nothing).
    pub position: Option<Position>,
    pub cid: String,
}

impl AgendaOutcome {
    pub(crate) fn of(executed: &Executed<AgendaState>, caller: &Caller) -> AgendaOutcome {
        AgendaOutcome {
            agenda: executed.state.agenda().cloned(),
            progress: executed.state.progress().clone(),
            lease: executed.state.lease().cloned(),
            position: executed.position,
            cid: caller.cid.clone(),
        }
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
