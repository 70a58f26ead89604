//! POP's JSON for what the shared command functions answer. Those functions return the GraphQL
//! result shapes (built from the domain values the command left); this turns them back into
//! the domain values, whose serde form *is* POP's JSON (camelCase, epoch milliseconds), so the
//! REST surface has no serializer of its own.

use serde_json::Value;

use pop_domain::model;
use pop_domain::params::Params;

use crate::error::{ApiError, ApiResult};
use crate::graphql::types::{
    AgendaGql, AgendaInsightGql, AgendaProgressGql, DiagnosticEventGql, OperationGql,
    OperationProgressGql,
};

fn params(value: &Value) -> Params {
    // Built from `Params` by `types::params`, so it always reads back.
    serde_json::from_value(value.clone()).unwrap_or_default()
}

fn insight(i: &AgendaInsightGql) -> model::AgendaInsight {
    model::AgendaInsight {
        resource_pool_id: i.resource_pool_id.clone(),
        insight_id: i.insight_id.clone(),
    }
}

fn operation(o: &OperationGql) -> model::Operation {
    model::Operation {
        name: o.name.clone(),
        op_type: o.op_type.clone(),
        id: o.id.clone(),
        payload: o.payload.0.clone(),
        params: params(&o.params.0),
    }
}

pub(crate) fn agenda(a: &AgendaGql) -> model::Agenda {
    model::Agenda {
        id: a.id.clone(),
        cid: a.cid.clone(),
        customer_id: a.customer_id.clone(),
        title: a.title.clone(),
        added_time: a.added_time,
        updated_time: a.updated_time,
        operations: a.operations.iter().map(operation).collect(),
        params: params(&a.params.0),
        link_id: a.link_id.clone(),
        job_id: a.job_id.clone(),
        progress_id: a.progress_id.clone(),
        agenda_insight: a.agenda_insight.as_ref().map(insight),
    }
}

fn diagnostic(d: &DiagnosticEventGql) -> model::DiagnosticEvent {
    model::DiagnosticEvent {
        message: d.message.clone(),
        status_code: d.status_code,
        time: d.time,
        stack_trace: d.stack_trace.clone(),
        payload: d.payload.0.clone(),
    }
}

fn operation_progress(p: &OperationProgressGql) -> model::OperationProgress {
    model::OperationProgress {
        id: p.id.clone(),
        customer_id: p.customer_id.clone(),
        agenda_progress_id: p.agenda_progress_id.clone(),
        operation: p.operation.clone(),
        processing_state: p.processing_state.into(),
        processing_state_message: p.processing_state_message.clone(),
        percent_complete: p.percent_complete,
        diagnostic_events: p.diagnostic_events.iter().map(diagnostic).collect(),
        attempt_count: p.attempt_count,
        attempt_time: p.attempt_time,
        started_time: p.started_time,
        completed_time: p.completed_time,
        result_payload: p.result_payload.0.clone(),
        params: params(&p.params.0),
        added_time: p.added_time,
        updated_time: p.updated_time,
    }
}

pub(crate) fn progress(p: &AgendaProgressGql) -> model::AgendaProgress {
    model::AgendaProgress {
        id: p.id.clone(),
        cid: p.cid.clone(),
        customer_id: p.customer_id.clone(),
        title: p.title.clone(),
        agenda_id: p.agenda_id.clone(),
        link_id: p.link_id.clone(),
        external_id: p.external_id.clone(),
        processing_state: p.processing_state.into(),
        processing_state_message: p.processing_state_message.clone(),
        percent_complete: p.percent_complete,
        operation_progress: p.operation_progress.iter().map(operation_progress).collect(),
        diagnostic_events: p.diagnostic_events.iter().map(diagnostic).collect(),
        attempts_completed: p.attempts_completed,
        maximum_attempts: p.maximum_attempts,
        started_time: p.started_time,
        completed_time: p.completed_time,
        params: params(&p.params.0),
        agenda_insight: p.agenda_insight.as_ref().map(insight),
        added_time: p.added_time,
        updated_time: p.updated_time,
    }
}

/// Fields of an executor's report that POP clients send as numeric strings (`"50"`): the
/// domain reads them as numbers, so they are converted here, at the POP wire, wherever they
/// occur in the report (agenda, operation progress, diagnostic events). A string that is not
/// a number is left alone for the domain to refuse with the field named.
const NUMERIC_FIELDS: &[&str] =
    &["percentComplete", "statusCode", "attemptsCompleted", "maximumAttempts", "attemptCount"];

/// Most nesting [`numbers_from_strings`] walks (a report is three levels deep; payloads inside
/// it are not touched past this).
const MAX_NUMERIC_DEPTH: usize = 4;

pub(crate) fn numbers_from_strings(value: &mut Value) {
    fn walk(value: &mut Value, depth: usize) {
        if depth > MAX_NUMERIC_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if let Value::String(text) = v
                        && NUMERIC_FIELDS.contains(&key.as_str())
                    {
                        let text = text.trim();
                        if let Ok(n) = text.parse::<i64>() {
                            *v = Value::from(n);
                        } else if let Some(n) =
                            text.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
                        {
                            *v = Value::Number(n);
                        }
                    } else if matches!(key.as_str(), "operationProgress" | "diagnosticEvents") {
                        walk(v, depth + 1);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, depth + 1)),
            _ => {}
        }
    }
    walk(value, 0);
}

/// A domain value as POP JSON.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> ApiResult<Value> {
    serde_json::to_value(value).map_err(|e| ApiError::internal("writing POP JSON", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_strings_become_numbers_in_reports_only() {
        let mut report = json!({"percentComplete": " 50 ", "resultPayload": {"percentComplete": "7"},
            "operationProgress": [{"percentComplete": "12.5", "attemptCount": "x",
                "diagnosticEvents": [{"statusCode": "2"}]}]});
        numbers_from_strings(&mut report);
        assert_eq!(
            report,
            json!({"percentComplete": 50, "resultPayload": {"percentComplete": "7"},
            "operationProgress": [{"percentComplete": 12.5, "attemptCount": "x",
                "diagnosticEvents": [{"statusCode": 2}]}]})
        );
    }

    #[test]
    fn progress_survives_the_graphql_shape() {
        let original: model::AgendaProgress = serde_json::from_value(json!({
            "id": "p1", "customerId": "acme", "agendaId": "a1", "linkId": "l",
            "processingState": "EXECUTING", "processingStateMessage": "Running",
            "percentComplete": 55.0, "attemptsCompleted": 1, "maximumAttempts": 3,
            "startedTime": 1_700_000_000_000_i64, "params": {"externalId": "x"},
            "agendaInsight": {"resourcePoolId": "pool", "insightId": "i"},
            "diagnosticEvents": [{"message": "m", "statusCode": 2, "time": 1_700_000_000_001_i64, "payload": {"log": ["a"]}}],
            "operationProgress": [{"id": "p1-op", "customerId": "acme", "agendaProgressId": "p1",
                "operation": "op", "processingState": "COMPLETE", "processingStateMessage": "succeeded",
                "percentComplete": 100.0, "resultPayload": {"out": 1}, "attemptCount": 1}]
        }))
        .unwrap();
        let back = progress(&AgendaProgressGql::from(&original));
        assert_eq!(back, original);
        let agenda_in: model::Agenda = serde_json::from_value(json!({
            "id": "a1", "customerId": "acme", "title": "t", "linkId": "l", "jobId": "j",
            "progressId": "p1", "addedTime": 1_700_000_000_000_i64, "params": {"doNotRun": "true"},
            "operations": [{"name": "op", "type": "ffmpeg", "id": "o", "payload": {"a": [1]}, "params": {"dependsOn": ""}}],
            "agendaInsight": {"resourcePoolId": "pool", "insightId": "i"}
        }))
        .unwrap();
        assert_eq!(agenda(&AgendaGql::from(&agenda_in)), agenda_in);
    }
}
