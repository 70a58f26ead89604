//! The audit shapes: an agenda's history as a timeline (`agendaHistory`), each event with who
//! caused it and the state it left. Built by `pop_app::App::agenda_history`.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};

use pop_app::history::{History, HistoryEntry, OperationStep};

use crate::graphql::types::{DiagnosticEventGql, ProcessingStateGql};

/// One event of an agenda's history and the agenda's state right after it.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "HistoryEntry")]
pub struct HistoryEntryGql {
    /// The global log position.
    pub position: String,
    /// The event's version within the agenda's stream.
    pub version: u64,
    /// When it took effect: the earliest time an as-of read by time shows it (the command's
    /// own time, read before the append, when the store committed it within a second; else
    /// the commit). A read as of a moment before it shows the state before it.
    pub time: DateTime<Utc>,
    /// When the store committed it.
    pub committed_time: DateTime<Utc>,
    /// The event type (`AgendaSubmitted`, `AgendaProgressReported`, …).
    #[graphql(name = "type")]
    pub event_type: String,
    /// Who caused it: `<role>:<principal>`, or `system:<process>` for the timed processes.
    pub actor: Option<String>,
    /// The correlation id of the request (or of the timed process's action).
    pub cid: Option<String>,
    /// The id of the command that appended it (shared by all events of one command).
    pub causation_id: Option<String>,
    /// The use case or command (`submitAgenda`, `updateAgendaProgress`, `queue`, …).
    pub command: Option<String>,
    pub processing_state: ProcessingStateGql,
    pub processing_state_message: Option<String>,
    pub percent_complete: Option<f64>,
    /// The agenda's attempts completed after the event (a report belongs to attempt
    /// `attemptsCompleted + 1` until the agenda completes, which counts it).
    pub attempts_completed: u32,
    /// The most attempts the agenda gets (`params.maximumAttempts`, 1..=20).
    pub maximum_attempts: u32,
    /// The diagnostics this event added to the agenda.
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub diagnostics: Vec<DiagnosticEventGql>,
    /// The operations whose state, message or diagnostics this event changed (not those it
    /// added), with their state after it and the diagnostics it added to them.
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub operations: Vec<OperationStepGql>,
    /// The operations this event added (a submission's, an expansion's), by name.
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub added_operations: Vec<String>,
    /// The operations this event removed (a rerun drops the operations generators added), by
    /// name.
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub removed_operations: Vec<String>,
}

/// What one event did to one operation.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "OperationStep")]
pub struct OperationStepGql {
    /// The operation's name.
    pub operation: String,
    pub processing_state: ProcessingStateGql,
    pub processing_state_message: Option<String>,
    /// The diagnostics this event added to the operation (a failure's reason).
    #[graphql(complexity = "crate::graphql::cost::nested(child_complexity)")]
    pub diagnostics: Vec<DiagnosticEventGql>,
}

impl From<&OperationStep> for OperationStepGql {
    fn from(o: &OperationStep) -> Self {
        OperationStepGql {
            operation: o.operation.clone(),
            processing_state: o.processing_state.into(),
            processing_state_message: o.processing_state_message.clone(),
            diagnostics: o.diagnostics.iter().map(DiagnosticEventGql::from).collect(),
        }
    }
}

impl From<&HistoryEntry> for HistoryEntryGql {
    fn from(e: &HistoryEntry) -> Self {
        HistoryEntryGql {
            position: e.position.to_string(),
            version: e.version,
            time: e.time,
            committed_time: e.committed_time,
            event_type: e.event_type.clone(),
            actor: e.actor.clone(),
            cid: e.cid.clone(),
            causation_id: e.causation_id.map(|c| c.to_string()),
            command: e.command.clone(),
            processing_state: e.processing_state.into(),
            processing_state_message: e.processing_state_message.clone(),
            percent_complete: e.percent_complete,
            attempts_completed: e.attempts_completed,
            maximum_attempts: e.maximum_attempts,
            diagnostics: e.diagnostics.iter().map(DiagnosticEventGql::from).collect(),
            operations: e.operations.iter().map(OperationStepGql::from).collect(),
            added_operations: e.added_operations.clone(),
            removed_operations: e.removed_operations.clone(),
        }
    }
}

/// A page of an agenda's history; `endCursor` goes into `after` for the next page.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(name = "HistoryPage")]
pub struct HistoryPageGql {
    pub items: Vec<HistoryEntryGql>,
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

impl From<History> for HistoryPageGql {
    fn from(h: History) -> Self {
        HistoryPageGql {
            items: h.entries.iter().map(HistoryEntryGql::from).collect(),
            end_cursor: h.end_cursor,
            has_next_page: h.more,
        }
    }
}
