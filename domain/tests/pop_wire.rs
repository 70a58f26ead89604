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
