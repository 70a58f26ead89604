//! The objects of DOMAIN.md §2 with POP-compatible JSON: camelCase names, epoch-millisecond
//! times, lenient parameter values. These are value types; rules live in other modules.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
use chrono::TimeZone;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::params::Params;
use crate::payload::Payload;

/// A UTC instant. On POP's JSON wire it is epoch milliseconds (see [`epoch_ms`]).
pub type Timestamp = DateTime<Utc>;

/// Serde helpers for POP's epoch-millisecond times. Reading is lenient: a number, a numeric
/// string or an RFC 3339 string are all accepted, because POP clients send all three.
pub mod epoch_ms {
    use chrono::{DateTime, TimeZone, Utc};
    use serde::{Deserializer, Serializer, de::Error};
    use serde_json::Value;

    /// Parses one JSON value as a time; `None` for JSON null.
    pub fn from_value(v: &Value) -> Result<Option<DateTime<Utc>>, String> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(ms), _) => Utc
                    .timestamp_millis_opt(ms)
                    .single()
                    .map(Some)
                    .ok_or_else(|| format!("time {ms} is out of range")),
                (None, Some(f)) => from_decimal(f),
                (None, None) => Err(format!("time {n} is out of range")),
            },
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => {
                if let Ok(ms) = s.trim().parse::<i64>() {
                    return from_value(&Value::from(ms));
                }
                // A decimal as a string reads as the number would (popclient61 L4:
                // `"1796698000.5"` was refused where `1796698000.5` was taken).
                let decimal = s.trim();
                if decimal.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
                    && let Ok(f) = decimal.parse::<f64>()
                {
                    return from_decimal(f);
                }
                parse_text(s.trim()).map(Some).ok_or_else(|| {
                    format!(
                        "time {s:?} is neither epoch milliseconds nor an ISO 8601 time (e.g. \
                         2026-12-04T18:25:01.046Z)"
                    )
                })
            }
            other => Err(format!("time must be a number or a string, not {other}")),
        }
    }

    /// An ISO 8601 time as clients write it: RFC 3339 (`…Z`, `…+01:00`), Jackson's
    /// `StdDateFormat` (`…+0000`, its default for `java.util.Date` with timestamps off), and,
    /// read as UTC, a time without a zone (`2026-12-04T18:25:01.046`, `2026-12-04 18:25`,
    /// seconds optional) or a date alone. The one parser of text times: POP's JSON and the
    /// CLI's `--as-of` read through it.
    pub fn parse_text(s: &str) -> Option<DateTime<Utc>> {
        use chrono::{NaiveDate, NaiveDateTime};
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.with_timezone(&Utc));
        }
        if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
            return Some(t.with_timezone(&Utc));
        }
        const NAIVE: [&str; 4] =
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
        if let Some(t) = NAIVE.iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok()) {
            return Some(t.and_utc());
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    }

    /// Epoch seconds below this, written as a decimal, are Jackson's `Instant`
    /// (`seconds.nanoseconds`, its default with `WRITE_DATES_AS_TIMESTAMPS`); a decimal at or
    /// above it is milliseconds. 1e11 s is the year 5138, 1e11 ms March 1973: no time a client
    /// means is on the wrong side. Whole numbers are always milliseconds (`java.util.Date`).
    const DECIMAL_SECONDS_BELOW: f64 = 1e11;

    /// A time written as a decimal number ([`DECIMAL_SECONDS_BELOW`]).
    fn from_decimal(f: f64) -> Result<Option<DateTime<Utc>>, String> {
        if !f.is_finite() {
            return Err(format!("time {f} is not a number"));
        }
        let ms = if f.abs() < DECIMAL_SECONDS_BELOW { f * 1000.0 } else { f };
        // Whole milliseconds, as every time here (a rounding, never a panic: `as` saturates).
        let ms = ms.round() as i64;
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(Some)
            .ok_or_else(|| format!("time {f} is out of range"))
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.timestamp_millis())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_any(TimeVisitor)?.ok_or_else(|| D::Error::custom("time is null"))
    }

    fn from_millis<E: Error>(ms: i64) -> Result<Option<DateTime<Utc>>, E> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(Some)
            .ok_or_else(|| E::custom(format!("time {ms} is out of range")))
    }

    /// Reads a time straight from the deserializer, without building a `serde_json::Value`
    /// first: every event carries times, so this is on the replay hot path.
    struct TimeVisitor;

    impl<'de> serde::de::Visitor<'de> for TimeVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("epoch milliseconds (a number or numeric string) or an RFC 3339 string")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            from_millis(v)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            from_millis(
                i64::try_from(v).map_err(|_| E::custom(format!("time {v} is out of range")))?,
            )
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            from_decimal(v).map_err(E::custom)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            from_value(&Value::String(v.to_owned())).map_err(E::custom)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(TimeVisitor)
        }
    }

    /// The same for optional times.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&t.timestamp_millis()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            d.deserialize_any(super::TimeVisitor)
        }
    }
}

/// The coarse state of an agenda or operation (DOMAIN.md §3). Ordered as an operation moves,
/// WAITING < EXECUTING < COMPLETE: a report that would move one back is told by `<`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessingState {
    #[default]
    Waiting,
    Executing,
    Complete,
}

impl ProcessingState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingState::Waiting => "WAITING",
            ProcessingState::Executing => "EXECUTING",
            ProcessingState::Complete => "COMPLETE",
        }
    }
}

/// The well-known `processingStateMessage` values of DOMAIN.md §3.
/// `DiagnosticEvent.statusCode` values pop itself gives a meaning.
pub mod status_code {
    /// The executor says retrying cannot help (no handler for the operation type, a handler
    /// command that does not exist): the automatic retry leaves an agenda failed with this on
    /// a failed operation's last diagnostic, or on the agenda's own last one
    /// ([`super::AgendaProgress::not_retryable`]). A user's rerun still runs it.
    pub const NOT_RETRYABLE: &str = "NOT_RETRYABLE";
}

pub mod message {
    pub const ADDED: &str = "added";
    pub const QUEUED: &str = "queued";
    pub const SCHEDULED: &str = "scheduled";
    pub const PENDING: &str = "pending";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";
    /// The diagnostic the reclaimer records (POP's exact text).
    pub const TIMED_OUT: &str = "AgendaProgress timed out.";
    /// The diagnostic of a cancel that withdrew a failed agenda's retry (**pop**), followed by
    /// `: <reason>` when one was given.
    pub const CANCELLED_RETRY_WITHDRAWN: &str = "Agenda cancelled, its retry withdrawn";
    /// The diagnostic a rerun adds when the agenda's (or a resumed operation's) last one was an
    /// executor's NOT_RETRYABLE: that word was about the attempt before (**pop**).
    pub const RERUN_AFTER_NOT_RETRYABLE: &str =
        "Agenda rerun: the NOT_RETRYABLE above was said of the attempt before";

    /// Success is COMPLETE with message `succeeded`, compared case-insensitively.
    pub fn is_succeeded(m: &str) -> bool {
        m.eq_ignore_ascii_case(SUCCEEDED)
    }
    pub fn is_failed(m: &str) -> bool {
        m.eq_ignore_ascii_case(FAILED)
    }
    pub fn is_cancelled(m: &str) -> bool {
        m.eq_ignore_ascii_case(CANCELLED)
    }
}

/// Which insight (queue) of which resource pool an agenda is bound to (DOMAIN.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgendaInsight {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub resource_pool_id: String,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub insight_id: String,
}

/// One step of an agenda's DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Required: a missing or `null` one (Jackson's unset field) is the validator's to refuse,
    /// beside every other problem of the agenda (popclient54 M1: serde's "invalid type: null"
    /// alone hid the rest).
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub name: String,
    /// Selects the handler. Optional in POP JSON; an empty type is allowed.
    #[serde(rename = "type", default, deserialize_with = "crate::wire::or_default")]
    pub op_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Held as compact JSON text (see [`Payload`]).
    #[serde(default)]
    pub payload: Payload,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub params: Params,
}

impl Operation {
    /// The `generatedOperationParent` param: the generator that added this operation.
    pub fn generated_by(&self) -> Option<&str> {
        self.params.get_str(crate::params::keys::GENERATED_OPERATION_PARENT)
    }
}

/// An agenda: a workflow of operations that form a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Agenda {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub operations: Vec<Operation>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub params: Params,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agenda_insight: Option<AgendaInsight>,
}

/// A template's agenda as clients read it: an id, customer or progress id the template leaves
/// blank (the run fills them) is left out rather than shown as `""` — POP's Jackson clients read
/// `""` as an id, and submitting the agenda as read was refused (`id must not be empty`). The
/// stored event keeps its bytes (the golden fixtures hold `"id": ""`).
pub fn template_agenda_json(agenda: &mut serde_json::Value) {
    if let serde_json::Value::Object(fields) = agenda {
        for name in ["id", "customerId", "progressId"] {
            if fields
                .get(name)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|v| v.trim().is_empty())
            {
                fields.remove(name);
            }
        }
    }
}

/// A reusable agenda body run with a payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgendaTemplate {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub agenda: Agenda,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub static_parameters: Params,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub params: Params,
    #[serde(default, deserialize_with = "crate::params::lenient_bool")]
    pub is_global: bool,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub allowed_customer_ids: Vec<String>,
    #[serde(default, deserialize_with = "crate::params::lenient_bool")]
    pub is_default_template: bool,
}

/// A customer (tenant). Its `id` equals its `customerId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub title: String,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pool_id: Option<String>,
}

/// A farm of processing resources (typically a Kubernetes namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePool {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
    /// Computed by the read side (the insights whose `resourcePoolId` is this pool); ignored
    /// on input.
    #[serde(default, skip_deserializing)]
    pub insight_ids: Vec<String>,
}

/// How an insight's queue is filled (DOMAIN.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SchedulingAlgorithm {
    #[default]
    FirstInFirstOut,
    RoundRobin,
    Priority,
}

/// A queue definition of a resource pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Insight {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub title: String,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub resource_pool_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(default, deserialize_with = "crate::params::lenient_i64")]
    pub queue_size: i64,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub scheduling_algorithm: SchedulingAlgorithm,
    /// Mapper name (`operationType`, `operationName`, `paramMap`) → set of values.
    #[serde(default, deserialize_with = "crate::wire::mappers")]
    pub mappers: BTreeMap<String, BTreeSet<String>>,
    #[serde(default, deserialize_with = "crate::params::lenient_bool")]
    pub is_global: bool,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub allowed_customer_ids: Vec<String>,
}

/// Something that happened to an agenda or operation worth showing (errors, timeouts, logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticEvent {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub message: String,
    /// A string, as in POP (executors put errno names such as `ENOENT` in it). Numbers, which
    /// pop wrote before (`AgendaProgressReported` v1), read as their text.
    #[serde(
        default,
        deserialize_with = "crate::wire::text::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub status_code: Option<String>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub payload: Value,
}

/// The progress of one operation. Its id is `<agendaProgressId>-<operation name>`.
///
/// Its strings are `Box<str>` rather than `String` (16 bytes instead of 24, no spare
/// capacity): a live agenda holds one of these per operation, and they were the bulk of its
/// read model (issue 18).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OperationProgress {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: Box<str>,
    /// The agenda's correlation id (POP set it from the agenda too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<Box<str>>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: Box<str>,
    /// A common field of every POP object; pop sets none of its own (POP did not either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Box<str>>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub agenda_progress_id: Box<str>,
    /// The operation's name.
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub operation: Box<str>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub processing_state: ProcessingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_state_message: Option<Box<str>>,
    #[serde(
        default,
        deserialize_with = "crate::wire::number::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub percent_complete: Option<f64>,
    #[serde(default, deserialize_with = "crate::wire::skipping_nulls")]
    pub diagnostic_events: Vec<DiagnosticEvent>,
    #[serde(default, deserialize_with = "crate::wire::count::deserialize")]
    pub attempt_count: u32,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub attempt_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub started_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<Timestamp>,
    /// Held as compact JSON text (see [`Payload`]).
    #[serde(default, skip_serializing_if = "Payload::is_null")]
    pub result_payload: Payload,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub params: Params,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
}

impl OperationProgress {
    /// The id POP gives an operation's progress.
    pub fn id_for(agenda_progress_id: &str, operation: &str) -> String {
        format!("{agenda_progress_id}-{operation}")
    }
}

impl AgendaProgress {
    /// Shows this progress under `progress_id`: its own id and its operations' ids and
    /// AgendaProgress ids (how a worker of several customers is shown an agenda, under the
    /// pool's progress id, `agenda::pool_progress_id`).
    pub fn show_as(&mut self, progress_id: &str) {
        self.id = progress_id.to_string();
        for op in &mut self.operation_progress {
            op.show_as(progress_id);
        }
    }
}

impl OperationProgress {
    /// Shows this operation's progress as part of the AgendaProgress `progress_id`.
    pub fn show_as(&mut self, progress_id: &str) {
        self.id = OperationProgress::id_for(progress_id, &self.operation).into();
        self.agenda_progress_id = progress_id.into();
    }
}

/// The rolled-up progress of one agenda. Its id is the agenda's `progressId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AgendaProgress {
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub agenda_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub processing_state: ProcessingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_state_message: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::wire::number::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub percent_complete: Option<f64>,
    #[serde(default, deserialize_with = "crate::wire::skipping_nulls")]
    pub operation_progress: Vec<OperationProgress>,
    #[serde(default, deserialize_with = "crate::wire::skipping_nulls")]
    pub diagnostic_events: Vec<DiagnosticEvent>,
    #[serde(default, deserialize_with = "crate::wire::count::deserialize")]
    pub attempts_completed: u32,
    #[serde(default, deserialize_with = "crate::wire::count::deserialize")]
    pub maximum_attempts: u32,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub started_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "crate::wire::or_default")]
    pub params: Params,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agenda_insight: Option<AgendaInsight>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub added_time: Option<Timestamp>,
    #[serde(default, with = "epoch_ms::option", skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<Timestamp>,
}

/// No agenda is attempted more often than this, whatever its params say (DOMAIN.md §8).
pub const MAXIMUM_ATTEMPTS_LIMIT: u32 = 20;

impl AgendaProgress {
    /// COMPLETE/failed with attempts left (of `min(20, maximumAttempts)`) and not called
    /// deterministic by its executor: the retry process reruns it after its backoff, and a
    /// cancel withdraws that retry (**pop**; the one rule the domain, the retry process, the
    /// server's log, the API and the dashboard share).
    pub fn retry_due(&self) -> bool {
        self.processing_state == ProcessingState::Complete
            && self.processing_state_message.as_deref().is_some_and(message::is_failed)
            && self.attempts_completed < self.maximum_attempts.clamp(1, MAXIMUM_ATTEMPTS_LIMIT)
            && !self.not_retryable()
    }

    /// Whether this agenda counts as failed in its batch's ProgressSummary (DOMAIN.md §4.3:
    /// COMPLETE, `processingPercent` null): it failed, or (**pop**) it was cancelled with an
    /// operation that had failed — a failed agenda whose retry was withdrawn by a cancel
    /// (popclient18: the batch's failure signal went away with the cancel), or one cancelled
    /// while a failed operation waited for the rest to end.
    pub fn fails_batch(&self) -> bool {
        let is = |m: Option<&str>, rule: fn(&str) -> bool| m.is_some_and(rule);
        let message = self.processing_state_message.as_deref();
        is(message, message::is_failed)
            || (self.processing_state == ProcessingState::Complete
                && is(message, message::is_cancelled)
                && self.operation_progress.iter().any(|o| {
                    o.processing_state == ProcessingState::Complete
                        && is(o.processing_state_message.as_deref(), message::is_failed)
                }))
    }

    /// Whether the executor said this failure is deterministic: the last diagnostic of a
    /// failed operation, or the agenda's own last diagnostic, has the status code
    /// [`status_code::NOT_RETRYABLE`].
    /// A rerun after such a failure adds [`message::RERUN_AFTER_NOT_RETRYABLE`] to the agenda's
    /// diagnostics, so an earlier attempt's word no longer counts.
    pub fn not_retryable(&self) -> bool {
        let marked = |events: &[DiagnosticEvent]| events.last().is_some_and(marked_not_retryable);
        marked(&self.diagnostic_events)
            || self.operation_progress.iter().any(|o| {
                o.processing_state == ProcessingState::Complete
                    && o.processing_state_message.as_deref() == Some(message::FAILED)
                    && marked(&o.diagnostic_events)
            })
    }
}

/// Whether an executor marked this diagnostic's failure deterministic
/// ([`status_code::NOT_RETRYABLE`]).
pub fn marked_not_retryable(event: &DiagnosticEvent) -> bool {
    event.status_code.as_deref() == Some(status_code::NOT_RETRYABLE)
}

/// The progress of every agenda sharing a linkId (DOMAIN.md §4.3). Computed on read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProgressSummary {
    pub link_id: String,
    pub processing_state: ProcessingState,
    pub processing_percent: Option<f64>,
    pub progress_list: Vec<AgendaProgress>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_read_leniently() {
        let read = |v: Value| serde_json::from_value::<DiagnosticEvent>(json!({"time": v}));
        let ms = 1_700_000_000_123_i64;
        for v in [
            json!(ms),
            json!(ms.to_string()),
            json!("2023-11-14T22:13:20.123Z"),
            json!(1.700000000123e12),
            // Jackson's `Instant`: decimal epoch seconds with nanoseconds; as a string too
            // (popclient61 L4).
            json!(1_700_000_000.123_f64),
            json!("1700000000.123"),
            // Jackson's `StdDateFormat` (java.util.Date with timestamps off), and its UTC reads.
            json!("2023-11-14T22:13:20.123+0000"),
            json!("2023-11-14T23:13:20.123+0100"),
            json!("2023-11-14T22:13:20.123"),
        ] {
            let t = read(v.clone()).unwrap().time.unwrap();
            assert_eq!(t.timestamp_millis(), ms, "{v}");
        }
        // Through a `Value` (the lenient path of reports) the same.
        assert_eq!(
            epoch_ms::from_value(&json!(1_700_000_000.123_f64))
                .unwrap()
                .map(|t| t.timestamp_millis()),
            Some(ms)
        );
        // A whole number is milliseconds (`java.util.Date`), whatever its size.
        assert_eq!(
            read(json!(1_700_000_000_i64)).unwrap().time.unwrap().timestamp_millis(),
            1_700_000_000
        );
        assert_eq!(read(json!(null)).unwrap().time, None);
        assert_eq!(read(json!("")).unwrap().time, None);
        assert_eq!(
            read(json!("2023-11-14")).unwrap().time.unwrap().timestamp_millis(),
            1_699_920_000_000
        );
        let refused = read(json!("yesterday")).unwrap_err().to_string();
        assert!(refused.contains("ISO 8601"), "{refused}");
        assert!(read(json!(true)).is_err());
        // Written back as epoch milliseconds.
        let e = DiagnosticEvent {
            time: Some(Utc.timestamp_millis_opt(ms).unwrap()),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&e).unwrap()["time"], json!(ms));
    }
}
