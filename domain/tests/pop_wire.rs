//! The JSON POP's own Java clients send (Jackson): every domain input object must read it as
//! POP meant it. Issue #12 items 10 and 14.

// Fixtures that fail to build are test bugs; unwrapping them is the clearest failure.
#![allow(clippy::unwrap_used)]

use pop_domain::{AgendaProgress, DiagnosticEvent};
use serde_json::json;

#[test]
fn diagnostic_status_codes_are_strings_as_in_pop() {
    // POP's DiagnosticEvent.statusCode is a String; executors put errno names in it.
    let report: AgendaProgress = serde_json::from_value(json!({
        "id": "p1",
        "processingState": "EXECUTING",
        "diagnosticEvents": [{"message": "no such file", "statusCode": "ENOENT"}],
        "operationProgress": [{"operation": "probe", "processingState": "COMPLETE",
            "processingStateMessage": "failed",
            "diagnosticEvents": [{"message": "exit", "statusCode": "137"}]}]
    }))
    .expect("a POP report with string status codes decodes");
    let back = serde_json::to_value(&report).unwrap();
    assert_eq!(back["diagnosticEvents"][0]["statusCode"], json!("ENOENT"));
    assert_eq!(back["operationProgress"][0]["diagnosticEvents"][0]["statusCode"], json!("137"));
    // pop wrote numbers before: they still read, as their text.
    let old: DiagnosticEvent =
        serde_json::from_value(json!({"message": "m", "statusCode": 2})).unwrap();
    assert_eq!(serde_json::to_value(&old).unwrap()["statusCode"], json!("2"));
}

/// Decodes POP JSON into `T`, writes it back as pop's JSON and decodes that again: the two
/// values must be equal (nothing POP sent is lost or changed by a round trip).
fn round_trip<T>(what: &str, pop: serde_json::Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let first: T = serde_json::from_value(pop.clone())
        .unwrap_or_else(|e| panic!("{what}: POP's JSON does not decode: {e}\n{pop:#}"));
    let written = serde_json::to_value(&first).unwrap();
    let second: T = serde_json::from_value(written.clone())
        .unwrap_or_else(|e| panic!("{what}: pop's own JSON does not decode: {e}\n{written:#}"));
    assert_eq!(first, second, "{what}: the round trip changed the value");
    first
}

// The payloads below are what POP's Jackson ObjectMapper writes for its model classes
// (com.comcast.pop.api.*): every field of the class and its superclasses
// (DefaultEndpointDataObject: id, cid, customerId, title, updatedTime, addedTime;
// AllowedCustomerEndpointDataObject: allowedCustomerIds), unset ones as `null`, dates as epoch
// milliseconds; clients that build JSON by hand send numbers and booleans as strings.

#[test]
fn jackson_agendas_with_every_unset_field_null() {
    let agenda: pop_domain::Agenda = round_trip(
        "Agenda",
        json!({
            "id": null, "cid": null, "customerId": "acme", "title": null,
            "updatedTime": null, "addedTime": null,
            "operations": [
                {"payload": null, "type": "sample", "id": null, "name": "probe", "params": null},
                {"payload": {"in": "@<probe.out::/file>"}, "type": "ffmpeg", "id": null,
                    "name": "encode", "params": {"dependsOn": "probe"}}
            ],
            "params": null, "jobId": null, "linkId": null, "progressId": null,
            "agendaInsight": null
        }),
    );
    assert_eq!(agenda.id, "", "`\"id\": null` means the server generates one");
    assert!(agenda.params.is_empty() && agenda.operations[0].params.is_empty());
    assert_eq!(agenda.operations[1].params.get_str("dependsOn"), Some("probe"));
    assert_eq!((agenda.title.as_deref(), agenda.progress_id.as_deref()), (None, None));
    assert_eq!(pop_domain::validate::validate_agenda(&agenda), Ok(()));

    // An agenda POP read back from its store: everything set, insight fields too.
    let stored: pop_domain::Agenda = round_trip(
        "Agenda (stored)",
        json!({
            "id": "a1", "cid": "c1", "customerId": "acme", "title": "t",
            "updatedTime": 1_700_000_000_500_i64, "addedTime": "1700000000000",
            "operations": [{"payload": "x", "type": null, "id": "o1", "name": "probe",
                "params": {"maximumAttempts": "5"}}],
            "params": {"doNotRun": "true"}, "jobId": "j", "linkId": "l", "progressId": "p1",
            "agendaInsight": {"resourcePoolId": "pool", "insightId": null}
        }),
    );
    assert_eq!(stored.added_time.map(|t| t.timestamp_millis()), Some(1_700_000_000_000));
    assert_eq!(stored.operations[0].op_type, "");
    assert_eq!(stored.agenda_insight.map(|i| i.insight_id), Some(String::new()));
}

#[test]
fn jackson_configuration_objects_with_nulls_and_string_scalars() {
    let customer: pop_domain::Customer = round_trip(
        "Customer",
        json!({"id": null, "cid": null, "customerId": "acme", "title": "Acme",
            "updatedTime": null, "addedTime": null, "billingCode": null,
            "resourcePoolId": "pool-1"}),
    );
    assert_eq!((customer.id.as_str(), customer.billing_code), ("", None));

    let pool: pop_domain::ResourcePool = round_trip(
        "ResourcePool",
        json!({"id": null, "cid": null, "customerId": "acme", "title": null,
            "updatedTime": null, "addedTime": null, "insightIds": null}),
    );
    assert!(pool.insight_ids.is_empty());

    let insight: pop_domain::Insight = round_trip(
        "Insight",
        json!({"id": null, "cid": null, "customerId": "acme", "title": "Transcode",
            "updatedTime": null, "addedTime": null, "allowedCustomerIds": null,
            "resourcePoolId": "pool-1", "queueName": null, "queueSize": "10",
            "schedulingAlgorithm": null, "mappers": null, "isGlobal": "true"}),
    );
    assert_eq!((insight.queue_size, insight.is_global), (10, true));
    assert!(insight.allowed_customer_ids.is_empty() && insight.mappers.is_empty());
    assert_eq!(insight.scheduling_algorithm, pop_domain::SchedulingAlgorithm::FirstInFirstOut);
    let insight: pop_domain::Insight = round_trip(
        "Insight (mappers)",
        json!({"id": "i1", "customerId": "acme", "title": "T", "resourcePoolId": "p",
            "queueSize": 5, "schedulingAlgorithm": "RoundRobin", "isGlobal": null,
            "allowedCustomerIds": ["Globex"], "mappers": {"operationType": ["ffmpeg"],
            "paramMap": null}}),
    );
    assert!(!insight.is_global);
    assert_eq!(insight.mappers.get("paramMap").map(|m| m.len()), Some(0));

    let template: pop_domain::AgendaTemplate = round_trip(
        "AgendaTemplate",
        json!({"id": null, "cid": null, "customerId": "acme", "title": "Encode",
            "updatedTime": null, "addedTime": null, "allowedCustomerIds": null,
            "staticParameters": null, "params": null, "isDefaultTemplate": "false",
            "isGlobal": null,
            "agenda": {"id": null, "cid": null, "customerId": null, "title": null,
                "updatedTime": null, "addedTime": null, "params": null, "jobId": null,
                "linkId": null, "progressId": null, "agendaInsight": null,
                "operations": [{"payload": "@<pop.payload>", "type": "sample", "id": null,
                    "name": "probe", "params": null}]}}),
    );
    assert!(!template.is_global && !template.is_default_template);
    assert!(template.static_parameters.is_empty() && template.allowed_customer_ids.is_empty());
    assert_eq!(template.agenda.customer_id, "");
    let template: pop_domain::AgendaTemplate = round_trip(
        "AgendaTemplate (no body)",
        json!({"id": "t", "customerId": "acme", "agenda": null, "isGlobal": "TRUE"}),
    );
    assert!(template.is_global && template.agenda.operations.is_empty());
}

#[test]
fn jackson_progress_reports_with_nulls_and_string_numbers() {
    let report: AgendaProgress = round_trip(
        "AgendaProgress",
        json!({
            "id": "p1", "cid": null, "customerId": null, "title": null,
            "updatedTime": null, "addedTime": null,
            "agendaId": null, "linkId": null, "externalId": null,
            "processingState": "EXECUTING", "processingStateMessage": null,
            "operationProgress": [{
                "id": null, "cid": null, "customerId": null, "title": null,
                "updatedTime": null, "addedTime": null,
                "agendaProgressId": "p1", "processingState": "EXECUTING",
                "processingStateMessage": "encoding", "operation": "encode",
                "diagnosticEvents": null, "percentComplete": "45.5", "attemptCount": "2",
                "attemptTime": null, "startedTime": "1700000000000", "completedTime": null,
                "resultPayload": null, "params": null
            }, {
                "id": "p1-probe", "agendaProgressId": "p1", "processingState": "COMPLETE",
                "processingStateMessage": "succeeded", "operation": "probe",
                "diagnosticEvents": [{"message": "done", "statusCode": null,
                    "time": 1_700_000_000_000_i64, "stackTrace": null, "payload": null}],
                "percentComplete": 100, "attemptCount": null, "attemptTime": null,
                "startedTime": null, "completedTime": null,
                "resultPayload": "{\"file\":\"in.mp4\"}", "params": {"node": "gpu-3"}
            }],
            "diagnosticEvents": null, "attemptsCompleted": null, "maximumAttempts": "3",
            "startedTime": null, "completedTime": null, "percentComplete": "45.5",
            "params": null, "agendaInsight": null
        }),
    );
    assert_eq!(report.percent_complete, Some(45.5));
    assert_eq!((report.attempts_completed, report.maximum_attempts), (0, 3));
    assert!(report.diagnostic_events.is_empty() && report.params.is_empty());
    let encode = &report.operation_progress[0];
    assert_eq!((encode.percent_complete, encode.attempt_count), (Some(45.5), 2));
    assert_eq!(encode.started_time.map(|t| t.timestamp_millis()), Some(1_700_000_000_000));
    assert!(encode.diagnostic_events.is_empty() && encode.params.is_empty());
    let probe = &report.operation_progress[1];
    assert_eq!(probe.diagnostic_events[0].status_code, None);
    // POP typed resultPayload as a String holding JSON: it stays that string.
    assert_eq!(probe.result_payload, json!("{\"file\":\"in.mp4\"}"));

    let bare: AgendaProgress = round_trip(
        "AgendaProgress (heartbeat)",
        json!({"id": "p1", "processingState": null, "operationProgress": null,
            "diagnosticEvents": null, "percentComplete": null}),
    );
    assert!(bare.operation_progress.is_empty() && bare.percent_complete.is_none());

    // A null entry in a report's lists is skipped, as POP's server skipped it ("help the user a
    // slight bit"), not a reason to refuse the report (popclient54 M2).
    let holed: AgendaProgress = round_trip(
        "AgendaProgress (null entries)",
        json!({"id": "p1", "processingState": "EXECUTING",
            "operationProgress": [null, {"operation": "probe", "processingState": "EXECUTING",
                "percentComplete": 11, "diagnosticEvents": [null, {"message": "warm"}]}, null],
            "diagnosticEvents": [null]}),
    );
    assert_eq!(holed.operation_progress.len(), 1);
    assert_eq!(&*holed.operation_progress[0].operation, "probe");
    let said: Vec<&str> =
        holed.operation_progress[0].diagnostic_events.iter().map(|d| &*d.message).collect();
    assert_eq!(said, ["warm"]);
    assert!(holed.diagnostic_events.is_empty());
}

/// A null or missing operation name is the validator's to refuse, with the agenda's other
/// problems (popclient54 M1: serde's "invalid type: null" came alone).
#[test]
fn a_null_operation_name_is_refused_with_every_other_problem() {
    let agenda: pop_domain::Agenda = serde_json::from_value(json!({"customerId": null,
        "operations": [{"name": "a", "type": "x", "params": {"dependsOn": "nope"}},
            {"name": null, "type": "x"}, {"type": "x"}]}))
    .unwrap();
    let problems = pop_domain::validate::validate_agenda(&agenda).unwrap_err();
    let fields: Vec<&str> = problems.errors.iter().map(|p| p.field.as_str()).collect();
    for wanted in ["customerId", "operations[1].name", "operations[2].name"] {
        assert!(fields.contains(&wanted), "{wanted} not in {fields:?}");
    }
    assert!(fields.iter().any(|f| f.starts_with("operations[0]")), "{fields:?}");
}

#[test]
fn unknown_fields_stay_ignored() {
    let agenda: pop_domain::Agenda = round_trip(
        "Agenda",
        json!({"customerId": "acme", "somethingNew": {"x": 1}, "operations": [
            {"name": "a", "futureField": true}]}),
    );
    assert_eq!(agenda.operations[0].name, "a");
}
