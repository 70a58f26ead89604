//! What callers may ask of an agenda (DOMAIN.md §3, §7, §8, §9). Every command carries `now`:
//! the domain reads no clock, and ids (agenda, progress, lease) are chosen by the caller.

use serde_json::Value;

use crate::model::{Agenda, AgendaInsight, DiagnosticEvent, Operation, ProcessingState, Timestamp};
use crate::params::Params;

use super::rerun::RerunFlags;

/// A request to the agenda aggregate of one stream (`agenda-<id>`).
#[derive(Debug, Clone, PartialEq)]
pub enum AgendaCommand {
    /// Records a new agenda: only on an empty stream. `agenda.id`, `progressId` and
    /// `customerId` are set by the caller, and `insight` is the binding the caller computed
    /// (DOMAIN.md §6). Ends WAITING/added, `doNotRun` agendas included.
    Submit { agenda: Agenda, insight: AgendaInsight, now: Timestamp },
    /// The scheduler moves an `added` agenda into its insight's queue.
    Queue { now: Timestamp },
    /// `getAgenda` hands a `queued` agenda to `holder` under a lease until `lease_expires`.
    Claim { holder: String, lease_id: String, lease_expires: Timestamp, now: Timestamp },
    /// `updateAgendaProgress` from the lease holder; renews the lease until `lease_expires`.
    /// `lease_id`, when given, must be the current lease (POP clients do not know it).
    ReportProgress {
        holder: String,
        lease_id: Option<String>,
        lease_expires: Timestamp,
        report: ProgressReport,
        now: Timestamp,
    },
    /// Appends operations (a generator's output, or `updateAgenda`) and merges params.
    Expand { operations: Vec<Operation>, params: Params, now: Timestamp },
    /// A manual rerun of a COMPLETE agenda, or of one a `skipExecution` rerun parked
    /// (DOMAIN.md §8).
    Rerun { flags: RerunFlags, now: Timestamp },
    /// The automatic retry of a COMPLETE/failed agenda with attempts left: a `continue` rerun.
    Retry { now: Timestamp },
    /// Ends any non-complete agenda as COMPLETE/cancelled.
    Cancel { reason: Option<String>, now: Timestamp },
    /// The reclaimer ends an expired lease of a `scheduled` or EXECUTING agenda.
    Reclaim { now: Timestamp },
    /// The lease holder hands a `scheduled` or EXECUTING agenda back at once (e.g. its
    /// executor shuts down), instead of letting the lease expire: WAITING/added again, at the
    /// back of the queue, no attempt consumed, operation progress kept so the next executor
    /// resumes. Checked like a report: only `holder` under its current lease `lease_id`.
    Release { holder: String, lease_id: String, now: Timestamp },
    /// Takes this stream's name (an id of the customer) as the progress id of the customer's
    /// agenda `agenda_id`, before that agenda is submitted with it. Again for the same agenda
    /// changes nothing (a re-sent submission); for any other, or where an agenda has the id, it
    /// is refused.
    TakeProgressId { agenda_id: String, now: Timestamp },
    /// The data reaper closes a COMPLETE agenda (or a `doNotRun` one that only waits) whose
    /// `updatedTime` is at or before `cutoff` for good, before deleting its stream: afterwards every other command is refused, so the
    /// stream's version is final. A repeat changes nothing.
    Reap { reason: String, cutoff: Timestamp, now: Timestamp },
}

impl AgendaCommand {
    /// The command's name in error messages ("cannot queue an agenda that is ...").
    pub fn verb(&self) -> &'static str {
        match self {
            AgendaCommand::Submit { .. } => "submit",
            AgendaCommand::Queue { .. } => "queue",
            AgendaCommand::Claim { .. } => "claim",
            AgendaCommand::ReportProgress { .. } => "report progress of",
            AgendaCommand::Expand { .. } => "expand",
            AgendaCommand::Rerun { .. } => "rerun",
            AgendaCommand::Retry { .. } => "retry",
            AgendaCommand::Cancel { .. } => "cancel",
            AgendaCommand::Reclaim { .. } => "reclaim",
            AgendaCommand::Release { .. } => "release",
            AgendaCommand::TakeProgressId { .. } => "take the progress id",
            AgendaCommand::Reap { .. } => "reap",
        }
    }

    /// The time the command was issued.
    pub fn now(&self) -> Timestamp {
        match self {
            AgendaCommand::Submit { now, .. }
            | AgendaCommand::Queue { now }
            | AgendaCommand::Claim { now, .. }
            | AgendaCommand::ReportProgress { now, .. }
            | AgendaCommand::Expand { now, .. }
            | AgendaCommand::Rerun { now, .. }
            | AgendaCommand::Retry { now }
            | AgendaCommand::Cancel { now, .. }
            | AgendaCommand::Reclaim { now }
            | AgendaCommand::Release { now, .. }
            | AgendaCommand::TakeProgressId { now, .. }
            | AgendaCommand::Reap { now, .. } => *now,
        }
    }
}

/// What an executor reports in one `updateAgendaProgress`, already lifted from POP's
/// AgendaProgress JSON by the API. The agenda's percent is deliberately absent: it is computed
/// from the operations (DOMAIN.md §4.1), never taken from the executor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProgressReport {
    /// The agenda state the executor claims. Only COMPLETE matters: `succeeded` is checked
    /// against the operations, anything else is an executor failure. EXECUTING means "still
    /// working"; WAITING is refused (it is the server's state for an unclaimed agenda).
    pub state: Option<ProcessingState>,
    /// Free text while EXECUTING (e.g. `Running Operations`); the outcome when COMPLETE.
    pub message: Option<String>,
    /// Diagnostics to add to the agenda; ones already recorded are not added twice, because
    /// POP executors resend their whole list with every report.
    pub diagnostics: Vec<DiagnosticEvent>,
    pub started: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    /// Operation progress entries; entries that change nothing are dropped.
    pub operations: Vec<OperationReport>,
    /// Params the executor reports for the agenda itself (POP's `AgendaProgress.params`):
    /// merged into the agenda progress's params, reported keys winning, as an operation's are
    /// into its own (popclient53: they were dropped without a word). Empty changes nothing;
    /// the agenda's definition keeps its own.
    pub params: Params,
    /// The most bytes (compact JSON) an operation's params may take once a report's are
    /// merged into them (the server's `--max-params-bytes`; `None`: not checked). Each
    /// report's own map is checked by the server; merged, params reported a piece at a time
    /// grew to the 1 MiB an event holds (popclient27).
    pub params_bytes: Option<usize>,
    /// The most bytes (compact JSON) one operation's result may take (the server's
    /// `--max-payload-bytes`; `None`: not checked). A larger one is not kept, with a
    /// diagnostic, and fails the operation it completes (`AgendaState::fit_results`).
    pub payload_bytes: Option<usize>,
    /// Set when the agenda's customer holds past a memory quota twice over (the server's
    /// `--max-live-bytes-per-customer` for its live agendas, `--max-retained-bytes-per-customer`
    /// for its finished ones): why, in words. Its results are then not
    /// kept (each with a diagnostic saying this, retryable) and its diagnostics keep the least
    /// of their texts ([`super::bounds::MIN_DIAGNOSTIC_TEXT_BYTES`]).
    pub over_quota: Option<String>,
    /// Set when the agenda's customer's agendas take more of the log than its quota (the
    /// server's `--max-log-bytes-per-customer`). A report that moves nothing (no operation or
    /// agenda changes state, none is added) is then not written while the lease was renewed
    /// in the last fifth of its length: what such a report alone carries (a percent, message,
    /// params or diagnostics) is kept only when a later written report sends it again, as a
    /// POP executor, which resends its whole progress, does (reprobe58 M2: reports to one live
    /// agenda wrote 4.5 MB in 10 s past the quota). What moves an agenda is always written, so
    /// it finishes.
    pub log_quota_passed: bool,
}

/// One operation's progress as the executor reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OperationReport {
    /// The operation's name (matched case-insensitively, like every operation name).
    pub name: String,
    pub state: ProcessingState,
    /// Free text while EXECUTING; when COMPLETE, `succeeded` or `failed` (any case).
    pub message: Option<String>,
    /// 0 or more; values above 100 are kept but count as 100 in the agenda's percent.
    pub percent: Option<f64>,
    pub diagnostics: Vec<DiagnosticEvent>,
    /// The operation's output; `None` or JSON null leaves the recorded one in place.
    pub result_payload: Option<Value>,
    pub started: Option<Timestamp>,
    pub completed: Option<Timestamp>,
    /// Params the executor reports for the operation (POP executors record what they used,
    /// e.g. the node or preset). Merged into the operation progress's params, reported keys
    /// winning; keys it does not send stay. Empty changes nothing.
    pub params: Params,
}
