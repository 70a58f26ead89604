//! What happened to an agenda, and how it is stored. Each event is its own struct whose JSON
//! names are spelled out field by field (`rename`), so renaming a Rust field can never change
//! the stored shape; golden fixtures in `domain/tests/fixtures/events/` pin every type.
//!
//! Events carry results, not instructions: the attempt count after a completion, the
//! operations a failure cancelled, the resulting operation progress. `evolve` only applies them,
//! so a rule changed in `decide` later never rewrites history on replay. Times are epoch
//! milliseconds like every POP time; `decide` truncates times to milliseconds so a decoded
//! event equals the one that was decided.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{CodecError, EventCodec};
use crate::model::{Agenda, DiagnosticEvent, Operation, ProcessingState, Timestamp, epoch_ms};
use crate::params::Params;

use super::rerun::RerunFlags;

/// The persisted type names and the schema version this build writes for each. Type names are
/// never renamed; a changed shape gets a new version and an upcaster in [`AgendaEvent::decode`].
pub const EVENT_TYPES: &[(&str, u32)] = &[
    (type_name::SUBMITTED, 1),
    (type_name::QUEUED, 1),
    (type_name::CLAIMED, 1),
    // v2: `diagnosticEvents[].statusCode` is a string (POP's type); v1 wrote numbers.
    (type_name::PROGRESS_REPORTED, 2),
    (type_name::COMPLETED, 1),
    (type_name::OPERATIONS_EXPANDED, 1),
    (type_name::RERUN, 1),
    (type_name::READDED, 1),
    (type_name::RETRY_DECIDED, 1),
    (type_name::CANCELLED, 1),
    (type_name::TIMED_OUT, 1),
    (type_name::REQUEUED, 1),
    (type_name::REAPED, 1),
    (type_name::RELEASED, 1),
    (type_name::PROGRESS_ID_TAKEN, 1),
    (type_name::DIAGNOSTICS_ADDED, 1),
];

/// Older schema versions this build still reads, each upcast to the current shape on decode;
/// every one keeps its golden fixture.
///
/// - `AgendaProgressReported` v1: `statusCode` was a number. The v2 reader takes a number as
///   its text (see [`DiagnosticEvent`]), so the upcast is the reader itself.
pub const OLDER_EVENT_VERSIONS: &[(&str, u32)] = &[(type_name::PROGRESS_REPORTED, 1)];

/// The persisted event type names.
pub mod type_name {
    pub const SUBMITTED: &str = "AgendaSubmitted";
    pub const QUEUED: &str = "AgendaQueued";
    pub const CLAIMED: &str = "AgendaClaimed";
    pub const PROGRESS_REPORTED: &str = "AgendaProgressReported";
    pub const COMPLETED: &str = "AgendaCompleted";
    pub const OPERATIONS_EXPANDED: &str = "OperationsExpanded";
    pub const RERUN: &str = "AgendaRerun";
    pub const READDED: &str = "AgendaReadded";
    pub const RETRY_DECIDED: &str = "AgendaRetryDecided";
    pub const CANCELLED: &str = "AgendaCancelled";
    pub const TIMED_OUT: &str = "AgendaTimedOut";
    pub const REQUEUED: &str = "AgendaRequeued";
    pub const REAPED: &str = "AgendaReaped";
    pub const RELEASED: &str = "AgendaReleased";
    pub const PROGRESS_ID_TAKEN: &str = "ProgressIdTaken";
    pub const DIAGNOSTICS_ADDED: &str = "AgendaDiagnosticsAdded";
}

/// Every event of an agenda stream.
#[derive(Debug, Clone, PartialEq)]
pub enum AgendaEvent {
    Submitted(AgendaSubmitted),
    Queued(AgendaQueued),
    Claimed(AgendaClaimed),
    ProgressReported(AgendaProgressReported),
    Completed(AgendaCompleted),
    OperationsExpanded(OperationsExpanded),
    Rerun(AgendaRerun),
    Readded(AgendaReadded),
    RetryDecided(AgendaRetryDecided),
    Cancelled(AgendaCancelled),
    TimedOut(AgendaTimedOut),
    Requeued(AgendaRequeued),
    Reaped(AgendaReaped),
    Released(AgendaReleased),
    ProgressIdTaken(ProgressIdTaken),
    DiagnosticsAdded(AgendaDiagnosticsAdded),
}

/// An agenda was accepted and bound to an insight: WAITING/added, every operation WAITING.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaSubmitted {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    /// The agenda as stored: ids, `customerId`, `agendaInsight` and `addedTime` set.
    #[serde(rename = "agenda")]
    pub agenda: Agenda,
    /// From `params.maximumAttempts`, default 3, clamped to 1..=20.
    #[serde(rename = "maximumAttempts")]
    pub maximum_attempts: u32,
}

/// The scheduler put the agenda into its insight's queue: WAITING/queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaQueued {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
}

/// `getAgenda` handed the agenda to `holder`: WAITING/scheduled under a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaClaimed {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "holder")]
    pub holder: String,
    #[serde(rename = "leaseId")]
    pub lease_id: String,
    #[serde(rename = "leaseExpires", with = "epoch_ms")]
    pub lease_expires: Timestamp,
}

/// The lease holder reported progress: the agenda is EXECUTING and the lease renewed. A
/// report that finishes the agenda is followed by [`AgendaCompleted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaProgressReported {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "holder")]
    pub holder: String,
    #[serde(rename = "leaseExpires", with = "epoch_ms")]
    pub lease_expires: Timestamp,
    /// The agenda's `processingStateMessage` while EXECUTING.
    #[serde(rename = "processingStateMessage")]
    pub message: String,
    /// Set on the first report of an attempt.
    #[serde(
        rename = "startedTime",
        default,
        with = "epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_time: Option<Timestamp>,
    /// Agenda diagnostics new in this report.
    #[serde(rename = "diagnosticEvents", default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<DiagnosticEvent>,
    /// Operations this report changed, each with its resulting progress.
    #[serde(rename = "operationProgress", default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationProgressChanged>,
    /// The agenda progress's params after the report merged its own into them, when it
    /// changed them (absent in logs written before reports kept them).
    #[serde(rename = "params", default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
}

/// One operation's progress after a report. Values are the results (attempt count already
/// incremented, `succeeded` already at 100 %), not the executor's raw claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationProgressChanged {
    #[serde(rename = "operation")]
    pub operation: String,
    #[serde(rename = "processingState")]
    pub state: ProcessingState,
    #[serde(rename = "processingStateMessage", default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "percentComplete", default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Diagnostics new in this report (appended).
    #[serde(rename = "diagnosticEvents", default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<DiagnosticEvent>,
    /// The operation's output; null leaves the recorded one in place.
    #[serde(rename = "resultPayload", default, skip_serializing_if = "Value::is_null")]
    pub result_payload: Value,
    #[serde(rename = "attemptCount")]
    pub attempt_count: u32,
    #[serde(
        rename = "attemptTime",
        default,
        with = "epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempt_time: Option<Timestamp>,
    #[serde(
        rename = "startedTime",
        default,
        with = "epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_time: Option<Timestamp>,
    #[serde(
        rename = "completedTime",
        default,
        with = "epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_time: Option<Timestamp>,
    /// The operation progress's params after the report merged the executor's into them;
    /// absent when the report did not change them (events before reported params existed).
    #[serde(rename = "params", default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Params>,
}

/// The agenda finished: COMPLETE/succeeded or COMPLETE/failed; the lease ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaCompleted {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    /// `succeeded` or `failed`.
    #[serde(rename = "processingStateMessage")]
    pub message: String,
    #[serde(rename = "completedTime", with = "epoch_ms")]
    pub completed_time: Timestamp,
    /// The agenda's `attemptsCompleted` after this completion.
    #[serde(rename = "attemptsCompleted")]
    pub attempts_completed: u32,
    /// Operations that had not finished and never will in this attempt: COMPLETE/cancelled.
    #[serde(rename = "cancelledOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled_operations: Vec<String>,
}

/// Operations were appended (a generator's output or `updateAgenda`) and params merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationsExpanded {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "operations")]
    pub operations: Vec<Operation>,
    /// Merged into the agenda's params, these winning.
    #[serde(rename = "params", default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
    /// The agenda's `maximumAttempts` after the merge.
    #[serde(rename = "maximumAttempts")]
    pub maximum_attempts: u32,
}

/// A COMPLETE agenda was reset for another run: WAITING/pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaRerun {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "flags")]
    pub flags: RerunFlags,
    /// Back to WAITING/pending with result and diagnostics cleared.
    #[serde(rename = "resetOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub reset_operations: Vec<String>,
    /// Unfinished operations back to WAITING/pending, diagnostics kept.
    #[serde(rename = "resumedOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub resumed_operations: Vec<String>,
    /// Generated by a reset generator: removed from the agenda.
    #[serde(rename = "removedOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub removed_operations: Vec<String>,
}

/// A rerun agenda was added again for scheduling: WAITING/added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaReadded {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
}

/// The automatic retry chose to run a failed agenda again; followed by a `continue`
/// [`AgendaRerun`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaRetryDecided {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    /// The number of the attempt about to start (`attemptsCompleted + 1`).
    #[serde(rename = "attempt")]
    pub attempt: u32,
    #[serde(rename = "maximumAttempts")]
    pub maximum_attempts: u32,
}

/// The agenda was cancelled: COMPLETE/cancelled; the lease, if any, ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaCancelled {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "reason", default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agenda's `attemptsCompleted` after this completion.
    #[serde(rename = "attemptsCompleted")]
    pub attempts_completed: u32,
    #[serde(rename = "cancelledOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled_operations: Vec<String>,
    /// **pop:** the agenda had failed with its automatic retry still to come, and this cancel
    /// withdrew that retry (auditor26 A3: the record looked like any other cancel).
    #[serde(rename = "withdrewRetry", default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrew_retry: bool,
}

/// The lease expired without a report: the attempt ended, diagnostic "AgendaProgress timed
/// out." recorded. Followed by [`AgendaRequeued`] or a failed [`AgendaCompleted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaTimedOut {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "holder")]
    pub holder: String,
    #[serde(rename = "leaseId")]
    pub lease_id: String,
    #[serde(rename = "leaseExpires", with = "epoch_ms")]
    pub lease_expires: Timestamp,
    /// The agenda's `attemptsCompleted` after this attempt ended.
    #[serde(rename = "attemptsCompleted")]
    pub attempts_completed: u32,
    /// Operations that were EXECUTING under the dead lease: back to WAITING/pending.
    #[serde(rename = "interruptedOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted_operations: Vec<String>,
}

/// After a timeout with attempts left, the agenda goes back to be scheduled: WAITING/added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaRequeued {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
}

/// The lease holder handed the agenda back before its lease expired: WAITING/added again
/// (a new entry at the back of its insight's queue), the lease ended, no attempt consumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaReleased {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "holder")]
    pub holder: String,
    #[serde(rename = "leaseId")]
    pub lease_id: String,
    /// Operations that were EXECUTING under the released lease: back to WAITING/pending, so
    /// the next executor starts them again (succeeded ones keep their results).
    #[serde(rename = "interruptedOperations", default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted_operations: Vec<String>,
}

/// A report that reached the agenda after its operations' reports had completed it, and
/// agreed with the outcome, carried agenda diagnostics: they are added, nothing else changes.
/// (POP's executor reports the operations, then the agenda's own outcome — a failure's reason
/// and stack trace — in a report of its own.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaDiagnosticsAdded {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "diagnosticEvents")]
    pub diagnostics: Vec<DiagnosticEvent>,
    /// **pop:** the agenda had failed with its automatic retry due, and these diagnostics —
    /// its executor's outcome report, after the report that completed it — called the failure
    /// NOT_RETRYABLE: the retry is off (popclient20: the server's log had promised it).
    #[serde(rename = "withdrewRetry", default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrew_retry: bool,
}

/// The stream's name (an id of its customer) was taken as the progress id of agenda
/// `agendaId` of the same customer: no agenda and no other progress may use it. The only event
/// of such a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressIdTaken {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    #[serde(rename = "agendaId")]
    pub agenda_id: String,
}

/// The data reaper closed the finished agenda for good; its stream is deleted next and the
/// audit record (`StreamReaped` in a `reaps-<day>` stream) makes the read models forget it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaReaped {
    #[serde(rename = "time", with = "epoch_ms")]
    pub time: Timestamp,
    /// Why, in words (the age rule that selected it).
    #[serde(rename = "reason")]
    pub reason: String,
    /// The agenda's `updatedTime` when it was reaped.
    #[serde(
        rename = "updatedTime",
        default,
        with = "epoch_ms::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_time: Option<Timestamp>,
}

impl AgendaEvent {
    /// When it happened.
    pub fn time(&self) -> Timestamp {
        match self {
            AgendaEvent::Submitted(e) => e.time,
            AgendaEvent::Queued(e) => e.time,
            AgendaEvent::Claimed(e) => e.time,
            AgendaEvent::ProgressReported(e) => e.time,
            AgendaEvent::Completed(e) => e.time,
            AgendaEvent::OperationsExpanded(e) => e.time,
            AgendaEvent::Rerun(e) => e.time,
            AgendaEvent::Readded(e) => e.time,
            AgendaEvent::RetryDecided(e) => e.time,
            AgendaEvent::Cancelled(e) => e.time,
            AgendaEvent::TimedOut(e) => e.time,
            AgendaEvent::Requeued(e) => e.time,
            AgendaEvent::Reaped(e) => e.time,
            AgendaEvent::Released(e) => e.time,
            AgendaEvent::DiagnosticsAdded(e) => e.time,
            AgendaEvent::ProgressIdTaken(e) => e.time,
        }
    }

    fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            AgendaEvent::Submitted(e) => serde_json::to_vec(e),
            AgendaEvent::Queued(e) => serde_json::to_vec(e),
            AgendaEvent::Claimed(e) => serde_json::to_vec(e),
            AgendaEvent::ProgressReported(e) => serde_json::to_vec(e),
            AgendaEvent::Completed(e) => serde_json::to_vec(e),
            AgendaEvent::OperationsExpanded(e) => serde_json::to_vec(e),
            AgendaEvent::Rerun(e) => serde_json::to_vec(e),
            AgendaEvent::Readded(e) => serde_json::to_vec(e),
            AgendaEvent::RetryDecided(e) => serde_json::to_vec(e),
            AgendaEvent::Cancelled(e) => serde_json::to_vec(e),
            AgendaEvent::TimedOut(e) => serde_json::to_vec(e),
            AgendaEvent::Requeued(e) => serde_json::to_vec(e),
            AgendaEvent::Reaped(e) => serde_json::to_vec(e),
            AgendaEvent::Released(e) => serde_json::to_vec(e),
            AgendaEvent::DiagnosticsAdded(e) => serde_json::to_vec(e),
            AgendaEvent::ProgressIdTaken(e) => serde_json::to_vec(e),
        }
    }
}

impl EventCodec for AgendaEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AgendaEvent::Submitted(_) => type_name::SUBMITTED,
            AgendaEvent::Queued(_) => type_name::QUEUED,
            AgendaEvent::Claimed(_) => type_name::CLAIMED,
            AgendaEvent::ProgressReported(_) => type_name::PROGRESS_REPORTED,
            AgendaEvent::Completed(_) => type_name::COMPLETED,
            AgendaEvent::OperationsExpanded(_) => type_name::OPERATIONS_EXPANDED,
            AgendaEvent::Rerun(_) => type_name::RERUN,
            AgendaEvent::Readded(_) => type_name::READDED,
            AgendaEvent::RetryDecided(_) => type_name::RETRY_DECIDED,
            AgendaEvent::Cancelled(_) => type_name::CANCELLED,
            AgendaEvent::TimedOut(_) => type_name::TIMED_OUT,
            AgendaEvent::Requeued(_) => type_name::REQUEUED,
            AgendaEvent::Reaped(_) => type_name::REAPED,
            AgendaEvent::Released(_) => type_name::RELEASED,
            AgendaEvent::DiagnosticsAdded(_) => type_name::DIAGNOSTICS_ADDED,
            AgendaEvent::ProgressIdTaken(_) => type_name::PROGRESS_ID_TAKEN,
        }
    }

    fn schema_version(&self) -> u32 {
        let name = self.event_type();
        EVENT_TYPES.iter().find(|(n, _)| *n == name).map_or(1, |(_, version)| *version)
    }

    fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.to_json().map_err(CodecError::Encode)
    }

    fn decode(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, CodecError> {
        let known = EVENT_TYPES
            .iter()
            .find(|(name, _)| *name == event_type)
            .ok_or_else(|| CodecError::UnknownType { event_type: event_type.to_string() })?;
        let readable =
            schema_version == known.1 || OLDER_EVENT_VERSIONS.contains(&(known.0, schema_version));
        if !readable {
            return Err(CodecError::UnknownVersion {
                event_type: known.0.to_string(),
                version: schema_version,
            });
        }
        let malformed = |source| CodecError::Malformed {
            event_type: known.0.to_string(),
            version: schema_version,
            source,
        };
        let event = match known.0 {
            type_name::SUBMITTED => AgendaEvent::Submitted(from(data).map_err(malformed)?),
            type_name::QUEUED => AgendaEvent::Queued(from(data).map_err(malformed)?),
            type_name::CLAIMED => AgendaEvent::Claimed(from(data).map_err(malformed)?),
            type_name::PROGRESS_REPORTED => {
                AgendaEvent::ProgressReported(from(data).map_err(malformed)?)
            }
            type_name::COMPLETED => AgendaEvent::Completed(from(data).map_err(malformed)?),
            type_name::OPERATIONS_EXPANDED => {
                AgendaEvent::OperationsExpanded(from(data).map_err(malformed)?)
            }
            type_name::RERUN => AgendaEvent::Rerun(from(data).map_err(malformed)?),
            type_name::READDED => AgendaEvent::Readded(from(data).map_err(malformed)?),
            type_name::RETRY_DECIDED => AgendaEvent::RetryDecided(from(data).map_err(malformed)?),
            type_name::CANCELLED => AgendaEvent::Cancelled(from(data).map_err(malformed)?),
            type_name::TIMED_OUT => AgendaEvent::TimedOut(from(data).map_err(malformed)?),
            type_name::REQUEUED => AgendaEvent::Requeued(from(data).map_err(malformed)?),
            type_name::REAPED => AgendaEvent::Reaped(from(data).map_err(malformed)?),
            type_name::RELEASED => AgendaEvent::Released(from(data).map_err(malformed)?),
            type_name::DIAGNOSTICS_ADDED => {
                AgendaEvent::DiagnosticsAdded(from(data).map_err(malformed)?)
            }
            type_name::PROGRESS_ID_TAKEN => {
                AgendaEvent::ProgressIdTaken(from(data).map_err(malformed)?)
            }
            other => return Err(CodecError::UnknownType { event_type: other.to_string() }),
        };
        Ok(event)
    }
}

/// Decodes JSON data ([`crate::codec::from_json`]: UTF-8 checked once, as a whole).
fn from<'a, T: Deserialize<'a>>(data: &'a [u8]) -> serde_json::Result<T> {
    crate::codec::from_json(data)
}
