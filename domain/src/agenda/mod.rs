//! The agenda aggregate: one stream per agenda (`agenda-<customer>/<id>`, see [`key`]) holding
//! every state change of
//! DOMAIN.md §3 — submission, scheduling, leases, executor reports, expansion, rerun, retry,
//! cancellation and reclaim — decided by pure rules and folded into POP's AgendaProgress.
//!
//! Decisions where DOMAIN.md is silent (also stated where each rule lives):
//! - **Attempts.** `attemptsCompleted` counts attempts that ended: a completion (succeeded,
//!   failed or cancelled) or a lease timeout. A timed-out attempt is requeued only while
//!   `attemptsCompleted < min(20, maximumAttempts)`, else the agenda fails with that same
//!   count, so a worker that always dies causes at most `maximumAttempts` attempts. Reruns do
//!   not reset the count: automatic retries are bounded over the agenda's life, and only a
//!   person's rerun goes beyond it. An operation's `attemptCount` grows each time it starts
//!   (first reported EXECUTING or COMPLETE after WAITING).
//! - **Failure cancels.** When an agenda completes without success (or is cancelled), its
//!   operations that had not finished become COMPLETE/cancelled, so no progress entry looks
//!   runnable on a finished agenda. §4.1's `completed` counts operations that ran to an end
//!   (succeeded or failed); cancelled ones count as not done, so the percent shows the work
//!   that actually happened.
//! - **Rerun makes unfinished work runnable.** Reset operations are cleared; every other
//!   operation that did not succeed (failed, cancelled, interrupted) goes back to
//!   WAITING/pending keeping its diagnostics ("resumed"). Otherwise a stale failure from the
//!   last attempt would fail the next attempt at its first report (§4.2). `continue` resets
//!   nothing and resumes the rest.
//! - **Release.** The lease holder may hand its agenda back before the lease expires (an
//!   executor shutting down): WAITING/added at once, no attempt counted (nothing failed),
//!   EXECUTING operations back to WAITING/pending, succeeded ones kept for the next executor.
//!   It is checked like a report, and needs the lease id: a release under a superseded lease
//!   is refused.
//! - **Re-entry.** Submission, and every return to WAITING/added (rerun, retry, reclaim,
//!   release), records when the agenda entered its insight's waiting line
//!   ([`AgendaState::entered_time`]): the scheduler orders and ages by it, so a re-added agenda
//!   goes to the back of the queue, as POP's new ReadyAgenda did. `addedTime` stays the
//!   creation time on the wire.
//! - **Timeouts interrupt.** Operations EXECUTING under an expired lease go back to
//!   WAITING/pending; the next executor starts them again.
//! - **Rerun from any COMPLETE** (succeeded too); retry only from COMPLETE/failed.
//! - **Late reports.** A report under a lease that expired but was not yet reclaimed is
//!   accepted: it is still the current lease.
//! - **Operation times.** `startedTime` is the first start of the operation over its life
//!   (the seed's meaning): retries, reruns and timeouts keep it. `attemptTime` is the start of
//!   the current attempt.
//! - **Operation params.** Each OperationProgress starts with a copy of its operation's params
//!   (at submission and expansion, as POP did). Params an executor reports for an operation
//!   are merged in, reported keys winning, and kept across reruns; a report that changes only
//!   params is still recorded.
//! - **Executor claims.** The agenda's percent and state are derived from its operations; an
//!   executor reporting `succeeded` while an operation has not succeeded is refused, and any
//!   other COMPLETE report is a failure. Executors must expand a generator's output before
//!   reporting the generator succeeded, or the agenda may already be complete.

mod bounds;
mod command;
mod decide;
mod error;
mod event;
mod evolve;
pub mod key;
pub use key::{key, pool_progress_id, split_pool_progress_id};
mod rerun;
mod state;

pub use bounds::{
    DIAGNOSTIC_BYTES_PER_AGENDA, MAX_DEFINITION_BYTES_PER_AGENDA, MAX_MESSAGE_BYTES,
    MAX_PARAMS_BYTES_PER_AGENDA, MAX_RESULT_BYTES_PER_AGENDA, MIN_DIAGNOSTIC_TEXT_BYTES,
    operation_kept_bytes,
};
pub use command::{AgendaCommand, OperationReport, ProgressReport};
pub use decide::REPORT_PART_BYTES;
pub use error::AgendaError;
pub use event::{
    AgendaCancelled, AgendaClaimed, AgendaCompleted, AgendaDiagnosticsAdded, AgendaEvent,
    AgendaProgressReported, AgendaQueued, AgendaReadded, AgendaReaped, AgendaReleased,
    AgendaRequeued, AgendaRerun, AgendaRetryDecided, AgendaSubmitted, AgendaTimedOut, EVENT_TYPES,
    OLDER_EVENT_VERSIONS, OperationProgressChanged, OperationsExpanded, ProgressIdTaken, type_name,
};
pub use rerun::{RerunFlags, RerunPlan, RerunReset, flag, plan_rerun, reset_closure};
pub use state::{
    AgendaState, DEFAULT_MAXIMUM_ATTEMPTS, Lease, MAX_DIAGNOSTICS, MAXIMUM_ATTEMPTS_LIMIT,
    RUNNING_MESSAGE, maximum_attempts, percent_complete, percent_from_counts, round_percent,
};

/// The stream category: agenda streams are named `agenda-<key>` ([`key::key`]).
pub const CATEGORY: &str = "agenda";

impl crate::Aggregate for AgendaState {
    type Command = AgendaCommand;
    type Event = AgendaEvent;
    type Error = AgendaError;

    const CATEGORY: &'static str = CATEGORY;

    fn decide(&self, command: &AgendaCommand) -> Result<Vec<AgendaEvent>, AgendaError> {
        self.decide_command(command)
    }

    fn evolve(&mut self, event: &AgendaEvent) {
        self.apply(event);
    }

    fn creates(command: &AgendaCommand) -> bool {
        matches!(command, AgendaCommand::Submit { .. } | AgendaCommand::TakeProgressId { .. })
    }
}
