//! The change feed's item: what one applied event changed, with the keys a subscription
//! filters on (customer, link, insight, agenda). It says *what* changed, not the new values:
//! a subscriber re-reads the read model, which is at least at `position` by the time the
//! change is published (see the runner's contract in [`crate::runner`]).

use std::sync::Arc;

use pop_domain::ProcessingState;
use pop_domain::agenda::AgendaEvent;
use pop_store::Position;

use crate::phase::Phase;

/// Which read model an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// An agenda and its AgendaProgress (one stream, one change).
    Agenda,
    Customer,
    ResourcePool,
    Insight,
    Template,
}

/// One change, published after the event at `position` is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub position: Position,
    pub kind: ChangeKind,
    /// The object's id (for agendas, the stream key: customer-scoped; see
    /// `pop_domain::agenda::key`).
    pub id: Arc<str>,
    /// Agendas only: the agenda's own id (as its customer chose it).
    pub agenda_id: Option<Arc<str>>,
    pub customer_id: Arc<str>,
    /// Agendas only: the AgendaProgress id.
    pub progress_id: Option<Arc<str>>,
    /// Agendas only.
    pub link_id: Option<Arc<str>>,
    /// Agendas only: `agendaInsight.insightId`.
    pub insight_id: Option<Arc<str>>,
    /// Agendas only: the state after the event.
    pub processing_state: Option<ProcessingState>,
    pub phase: Option<Phase>,
    /// Agendas only: the operations whose progress the event touched (added, reported,
    /// cancelled, reset, removed), for "operation progress of an agenda" subscriptions.
    pub operations: Vec<String>,
    /// The object left the read model (a config object was deleted).
    pub removed: bool,
    /// The stored event type that caused the change.
    pub event_type: &'static str,
}

impl Change {
    /// A change with only the position, kind and cause set; the model fills in the rest.
    pub(crate) fn empty(position: Position, kind: ChangeKind, event_type: &'static str) -> Change {
        Change {
            position,
            kind,
            id: Arc::from(""),
            agenda_id: None,
            customer_id: Arc::from(""),
            progress_id: None,
            link_id: None,
            insight_id: None,
            processing_state: None,
            phase: None,
            operations: Vec::new(),
            removed: false,
            event_type,
        }
    }
}

/// The operations whose progress an agenda event touches.
pub fn operations_touched(event: &AgendaEvent) -> Vec<String> {
    match event {
        AgendaEvent::Submitted(e) => e.agenda.operations.iter().map(|o| o.name.clone()).collect(),
        AgendaEvent::ProgressReported(e) => {
            e.operations.iter().map(|o| o.operation.clone()).collect()
        }
        AgendaEvent::Completed(e) => e.cancelled_operations.clone(),
        AgendaEvent::Cancelled(e) => e.cancelled_operations.clone(),
        AgendaEvent::OperationsExpanded(e) => e.operations.iter().map(|o| o.name.clone()).collect(),
        AgendaEvent::Rerun(e) => {
            let mut names = e.reset_operations.clone();
            names.extend(e.resumed_operations.iter().cloned());
            names.extend(e.removed_operations.iter().cloned());
            names
        }
        AgendaEvent::TimedOut(e) => e.interrupted_operations.clone(),
        AgendaEvent::Released(e) => e.interrupted_operations.clone(),
        AgendaEvent::Queued(_)
        | AgendaEvent::Claimed(_)
        | AgendaEvent::Readded(_)
        | AgendaEvent::RetryDecided(_)
        | AgendaEvent::Requeued(_)
        | AgendaEvent::Reaped(_)
        | AgendaEvent::ProgressIdTaken(_)
        | AgendaEvent::DiagnosticsAdded(_) => Vec::new(),
    }
}
