//! An operation's params are bounded once a report's are merged in (`--max-params-bytes`),
//! and only against growth: POP's executor echoes an operation's params with every report, so
//! params already past the bound (grown before it was checked, or kept under a lower limit
//! after a restart) must not lock the agenda out (popclient28: every echo was refused, even
//! the COMPLETE reports, and the agenda stalled until its lease ran out).

#![allow(clippy::unwrap_used)]

mod support;

use pop_app::AppConfig;
use serde_json::{Value, json};
use support::{acme_world, sqlite, submit_queued, worker};

#[tokio::test]
async fn params_past_a_lowered_bound_are_echoed_but_do_not_grow() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    submit_queued(&w, "a1", json!({})).await;
    let (before, worker) = (&w.app, worker());
    let claimed = before.get_agenda(&worker, "work", 1, None).await.unwrap();
    let lease = claimed[0].lease().unwrap().lease_id.clone();
    let report = |state: &str, params: Value| {
        json!({"id": "a1", "processingState": "EXECUTING", "operationProgress": [
            {"operation": "only", "processingState": state,
             "processingStateMessage": if state == "COMPLETE" { json!("succeeded") } else { Value::Null },
             "params": params}]})
    };
    let big = json!({"log": "p".repeat(150_000)});
    before.report(&worker, report("EXECUTING", big.clone()), Some(&lease), None).await.unwrap();

    // The limit lowered under the params the operation has.
    let after = w.app_with(AppConfig { max_params_bytes: 100_000, ..AppConfig::default() });
    // The echo is taken; a report that grows them is refused, naming the field.
    after.report(&worker, report("EXECUTING", big.clone()), Some(&lease), None).await.unwrap();
    // A change that leaves them smaller than they are, though still past the bound, too.
    let smaller = json!({"log": "p".repeat(140_000)});
    after.report(&worker, report("EXECUTING", smaller.clone()), Some(&lease), None).await.unwrap();
    // Sent again as they were before, they would grow: refused as growth is.
    let again = after.report(&worker, report("EXECUTING", big), Some(&lease), None).await;
    assert_eq!(again.unwrap_err().code, pop_app::Code::Validation);
    let mut grown = smaller.clone();
    grown["more"] = json!("x");
    let refused =
        after.report(&worker, report("EXECUTING", grown), Some(&lease), None).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Validation, "{}", refused.message);
    assert!(refused.message.contains("operationProgress[0].params"), "{}", refused.message);
    assert!(refused.message.contains("at most 100000"), "{}", refused.message);
    // The completion with the echo is taken: the agenda ends.
    let done =
        after.report(&worker, report("COMPLETE", smaller), Some(&lease), None).await.unwrap();
    assert_eq!(done.progress().processing_state_message.as_deref(), Some("succeeded"));
}

/// The AgendaProgress's own params in a report are kept, merged into the agenda progress's
/// (popclient53: a report's `params: {"apParam": "x"}` answered 200 and the progress kept
/// `{}`); the agenda's definition keeps its own, and past the bound they are refused naming
/// `agendaProgress.params`.
#[tokio::test]
async fn an_agenda_progress_params_in_a_report_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    submit_queued(&w, "a1", json!({"params": {"externalId": "movie-42"}})).await;
    let worker = worker();
    let claimed = w.app.get_agenda(&worker, "work", 1, None).await.unwrap();
    let lease = claimed[0].lease().unwrap().lease_id.clone();
    let report = |params: Value| {
        json!({"id": "a1", "processingState": "EXECUTING", "params": params,
            "operationProgress": [{"operation": "only", "processingState": "EXECUTING"}]})
    };
    let done =
        w.app.report(&worker, report(json!({"apParam": "x"})), Some(&lease), None).await.unwrap();
    let kept = serde_json::to_value(&done.progress().params).unwrap();
    assert_eq!(kept, json!({"apParam": "x", "externalId": "movie-42"}));
    let agenda = done.agenda().unwrap();
    assert_eq!(serde_json::to_value(&agenda.params).unwrap(), json!({"externalId": "movie-42"}));
    // Read back, it is there too.
    w.app.settle(None).await.unwrap();
    let read = {
        let models = w.projections.read();
        let entry = models.agenda_entry(&pop_domain::agenda::key("acme", "a1")).unwrap();
        entry.progress().unwrap().params
    };
    assert_eq!(serde_json::to_value(read).unwrap(), kept);

    let strict = w.app_with(AppConfig { max_params_bytes: 1_000, ..AppConfig::default() });
    let big = report(json!({"log": "p".repeat(2_000)}));
    let refused = strict.report(&worker, big, Some(&lease), None).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Validation, "{}", refused.message);
    assert!(refused.message.contains("agendaProgress.params"), "{}", refused.message);
}

/// A null entry in a report's operations is skipped wherever it stands, as POP's server
/// skipped it, and what is said of an entry names its place as sent (review54 H1: a leading
/// null made the next entry's state read as missing).
#[tokio::test]
async fn null_operations_in_a_report_are_skipped_and_entries_keep_their_places() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    submit_queued(&w, "n1", json!({})).await;
    let worker = worker();
    let claimed = w.app.get_agenda(&worker, "work", 1, None).await.unwrap();
    let lease = claimed[0].lease().unwrap().lease_id.clone();
    let report =
        |ops: Value| json!({"id": "n1", "processingState": "EXECUTING", "operationProgress": ops});
    let only = json!({"operation": "only", "processingState": "EXECUTING", "percentComplete": 40});
    let taken = w
        .app
        .report(&worker, report(json!([null, only.clone(), null])), Some(&lease), None)
        .await
        .unwrap();
    let op = &taken.progress().operation_progress[0];
    assert_eq!(op.percent_complete, Some(40.0), "{op:?}");
    let stateless = json!({"operation": "only"});
    let refused = w
        .app
        .report(&worker, report(json!([only.clone(), null, stateless])), Some(&lease), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Validation, "{}", refused.message);
    let fields: Vec<&str> = refused.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["agendaProgress.operationProgress[2].processingState"],
        "{}",
        refused.message
    );
    // So does what the decoder and the domain say of it (reprobe54 M1: they named the place
    // in the list with the nulls taken out).
    let refusals = [
        (json!([null, 1, only.clone()]), "agendaProgress.operationProgress[1]"),
        (
            json!([null, {"operation": "only", "processingState": "EXECUTING",
                "percentComplete": "x"}]),
            "agendaProgress.operationProgress[1].percentComplete",
        ),
        (
            json!([null, {"operation": "only", "processingState": "COMPLETE",
                "processingStateMessage": "bogus"}]),
            "agendaProgress.operationProgress[1].processingStateMessage",
        ),
        (json!([only.clone(), null, only]), "agendaProgress.operationProgress[2]"),
    ];
    for (ops, want) in refusals {
        let refused =
            w.app.report(&worker, report(ops.clone()), Some(&lease), None).await.unwrap_err();
        let said: Vec<&str> = refused.problems.iter().map(|p| p.field.as_str()).collect();
        let named = said.iter().any(|f| f.starts_with(want)) || refused.message.contains(want);
        assert!(named, "{ops}: want {want} in {said:?}: {}", refused.message);
        assert!(!refused.message.contains("operationProgress[0]"), "{ops}: {}", refused.message);
    }
}

/// A report refused for an operation's state names the entry at fault in `problems`, under
/// `agendaProgress` (popclient59 L2: a CONFLICT without problems, the entry said only in words).
#[tokio::test]
async fn a_report_refused_for_an_operations_state_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let w = acme_world(sqlite(dir.path()).await).await;
    submit_queued(&w, "a1", json!({})).await;
    let worker = worker();
    let claimed = w.app.get_agenda(&worker, "work", 1, None).await.unwrap();
    let lease = claimed[0].lease().unwrap().lease_id.clone();
    let report = |state: &str| {
        json!({"id": "a1", "processingState": "EXECUTING", "operationProgress": [
            {"operation": "only", "processingState": state, "percentComplete": 10}]})
    };
    w.app.report(&worker, report("EXECUTING"), Some(&lease), None).await.unwrap();
    let refused = w.app.report(&worker, report("WAITING"), Some(&lease), None).await.unwrap_err();
    assert_eq!(refused.code, pop_app::Code::Conflict, "{}", refused.message);
    let fields: Vec<&str> = refused.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["agendaProgress.operationProgress[0].processingState"], "{refused:?}");
    assert!(refused.problems[0].message.contains("cannot go from EXECUTING to WAITING"));
}
