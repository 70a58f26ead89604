//! Why the agenda aggregate refused a command. Each refusal maps to one DOMAIN.md §11 code:
//! NOT_FOUND for a missing agenda, CONFLICT for a transition the current state forbids or a
//! lease the caller does not hold, VALIDATION for bad input.

use crate::error::{ErrorCode, ValidationErrors};
use crate::model::{ProcessingState, Timestamp};

/// A refused agenda command. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgendaError {
    #[error("agenda not found")]
    NotFound,
    #[error("agenda {agenda_id:?} already exists")]
    AlreadyExists { agenda_id: String },
    /// The id is taken, within the customer, as the progress id of another agenda.
    /// `id` is empty when the caller names the progress id itself (a progress id's own stream).
    #[error("{}is already the progress id of agenda {agenda_id:?}", named(id))]
    ProgressIdTaken { id: String, agenda_id: String },
    #[error("invalid agenda request: {0}")]
    Invalid(#[from] ValidationErrors),
    /// The command is not an allowed transition from the agenda's state (DOMAIN.md §3).
    #[error("cannot {command} an agenda that is {}/{message}", state.as_str())]
    IllegalTransition { command: &'static str, state: ProcessingState, message: String },
    /// A rerun of an agenda that waits to run or runs: it must be cancelled first.
    #[error(
        "cannot rerun an agenda that is {}/{message}: it is queued or running; cancel it first \
         (cancelAgenda, `pop cancel`), then rerun it",
        state.as_str()
    )]
    RerunWhileLive { state: ProcessingState, message: String },
    /// A report from a holder whose lease is gone: reclaimed, or the agenda was rerun.
    #[error(
        "holder {holder:?} no longer holds the agenda's lease (the agenda is {}/{message})",
        state.as_str()
    )]
    LeaseLost { holder: String, state: ProcessingState, message: String },
    /// A report under a lease that another claim replaced, or from a holder that never held
    /// the current lease.
    #[error("{}", superseded(holder, lease_id.as_deref(), current_holder))]
    LeaseSuperseded {
        holder: String,
        lease_id: Option<String>,
        current_holder: String,
        /// For the server's own logs (`Debug`); never in the text a caller gets.
        current_lease_id: String,
    },
    #[error("agenda is already COMPLETE/{message}")]
    AgendaComplete { message: String },
    #[error("agenda was cancelled")]
    AgendaCancelled,
    /// The reclaimer may only end a lease that has expired.
    #[error("the lease of holder {holder:?} runs until {}; it has not expired", expires.to_rfc3339())]
    LeaseNotExpired { holder: String, expires: Timestamp },
    /// `doNotRun` agendas are kept for record and never queued.
    #[error("agenda has params.doNotRun and is never queued")]
    DoNotRun,
    /// An operation may only move WAITING → EXECUTING → COMPLETE.
    #[error(
        "operation {operation:?} cannot go from {}{} to {}{}",
        from.as_str(),
        from_message.as_ref().map(|m| format!("/{m}")).unwrap_or_default(),
        to.as_str(),
        to_message.as_ref().map(|m| format!("/{m}")).unwrap_or_default()
    )]
    OperationTransition {
        operation: String,
        from: ProcessingState,
        from_message: Option<String>,
        to: ProcessingState,
        /// The outcome a COMPLETE report gave (popclient21: a late `failed` of a succeeded
        /// operation read "cannot go from COMPLETE/succeeded to COMPLETE").
        to_message: Option<String>,
        /// Where the report lists the operation (its `operationProgress` index): the field the
        /// refusal names ([`AgendaError::field`]).
        at: Option<usize>,
    },
    /// The automatic retry found no attempts left.
    #[error(
        "no attempts left: {attempts_completed} of at most {maximum_attempts} attempts completed"
    )]
    NoAttemptsLeft { attempts_completed: u32, maximum_attempts: u32 },
    /// The automatic retry found the failure marked not retryable by its executor.
    #[error("the executor marked the failure not retryable; rerun it after fixing the cause")]
    NotRetryable,
    /// The agenda was reaped: its stream is about to be deleted and takes no more commands.
    #[error("agenda was reaped")]
    Reaped,
    /// The data reaper only reaps agendas last updated at or before its cutoff.
    #[error("agenda was updated at {} , after the reap cutoff {}", updated.map(|u| u.to_rfc3339()).unwrap_or_default(), cutoff.to_rfc3339())]
    NotOldEnough { updated: Option<Timestamp>, cutoff: Timestamp },
}

/// The text of [`AgendaError::LeaseSuperseded`]. Another principal than the holder is told who
/// holds the agenda — most often a POP executor reporting with its own token (POP's Agenda has
/// no lease to pass on) — and what to do; the holder whose lease was replaced is told that.
/// Neither is told the current lease's id: it is the holder's.
fn superseded(holder: &str, lease_id: Option<&str>, current_holder: &str) -> String {
    if holder != current_holder {
        return format!(
            "the agenda is leased to holder {current_holder:?}, not to {holder:?}: report with \
             the token that claimed it (a POP executor reports with its puller's token)"
        );
    }
    // Not said to be an earlier lease of the agenda: the state does not keep those
    // (popclient21: a lease id made up, or another agenda's of the same claim, was said to
    // have been superseded by a reclaim that never happened).
    format!(
        "the lease of holder {holder:?}{} is not the agenda's current lease: it was superseded \
         (the agenda was reclaimed, or cancelled or rerun by a user, and claimed again) or it \
         is not this agenda's (another agenda's of the same getAgenda answer, say): use the \
         lease the last getAgenda answered for this agenda",
        lease_id.map(|l| format!(" (lease {l:?})")).unwrap_or_default()
    )
}

impl AgendaError {
    /// The machine-readable code (DOMAIN.md §11).
    pub fn code(&self) -> ErrorCode {
        match self {
            AgendaError::NotFound | AgendaError::Reaped => ErrorCode::NotFound,
            AgendaError::Invalid(_) => ErrorCode::Validation,
            AgendaError::AlreadyExists { .. }
            | AgendaError::ProgressIdTaken { .. }
            | AgendaError::IllegalTransition { .. }
            | AgendaError::RerunWhileLive { .. }
            | AgendaError::LeaseLost { .. }
            | AgendaError::LeaseSuperseded { .. }
            | AgendaError::AgendaComplete { .. }
            | AgendaError::AgendaCancelled
            | AgendaError::LeaseNotExpired { .. }
            | AgendaError::DoNotRun
            | AgendaError::OperationTransition { .. }
            | AgendaError::NoAttemptsLeft { .. }
            | AgendaError::NotRetryable
            | AgendaError::NotOldEnough { .. } => ErrorCode::Conflict,
        }
    }

    /// The field of the command a refusal that is not a validation names, when it names one
    /// (popclient59 L2: a report refused for an operation's state had no `problems`, so a
    /// client could not tell which of its entries was at fault but by reading the message).
    pub fn field(&self) -> Option<String> {
        match self {
            AgendaError::OperationTransition { at: Some(at), .. } => {
                Some(format!("operationProgress[{at}].processingState"))
            }
            _ => None,
        }
    }

    /// The refusal said of the report's `operationProgress[at]` (see [`AgendaError::field`]).
    pub(super) fn at_item(self, at: usize) -> Self {
        match self {
            AgendaError::OperationTransition {
                operation,
                from,
                from_message,
                to,
                to_message,
                ..
            } => AgendaError::OperationTransition {
                operation,
                from,
                from_message,
                to,
                to_message,
                at: Some(at),
            },
            other => other,
        }
    }

    /// One validation problem as an error.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = ValidationErrors::new();
        errors.push(field, message);
        AgendaError::Invalid(errors)
    }
}

/// `"id" `, or nothing for an id the message's reader is already given.
fn named(id: &str) -> String {
    if id.is_empty() { String::new() } else { format!("{id:?} ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A progress id's own stream refuses a second agenda without an empty `""` where the id
    /// would go (the caller prefixes the progress id); a submission names its agenda id.
    #[test]
    fn a_taken_progress_id_reads_without_an_empty_id() {
        let own = AgendaError::ProgressIdTaken { id: String::new(), agenda_id: "dupA".into() };
        assert_eq!(own.to_string(), "is already the progress id of agenda \"dupA\"");
        let named = AgendaError::ProgressIdTaken { id: "dupB".into(), agenda_id: "dupA".into() };
        assert_eq!(named.to_string(), "\"dupB\" is already the progress id of agenda \"dupA\"");
    }

    #[test]
    fn a_report_from_another_holder_says_who_holds_the_agenda_and_what_to_do() {
        let other = AgendaError::LeaseSuperseded {
            holder: "executor".into(),
            lease_id: None,
            current_holder: "puller".into(),
            current_lease_id: "L2".into(),
        };
        let text = other.to_string();
        assert!(text.starts_with("the agenda is leased to holder \"puller\""), "{text}");
        assert!(text.contains("report with the token that claimed it"), "{text}");
        let stale = AgendaError::LeaseSuperseded {
            holder: "puller".into(),
            lease_id: Some("L1".into()),
            current_holder: "puller".into(),
            current_lease_id: "L2".into(),
        };
        let text = stale.to_string();
        assert!(
            text.starts_with("the lease of holder \"puller\" (lease \"L1\") is not the agenda's current lease: it was superseded"),
            "{text}"
        );
        assert!(text.contains("or it is not this agenda's"), "{text}");
        assert!(!text.contains("L2"), "the current lease is the holder's: {text}");
        assert!(!other.to_string().contains("L2"), "{other}");
    }
}
