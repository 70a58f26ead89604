//! As-of reads over real HTTP (issue 15): GraphQL `asOf` on agendaProgress, agenda,
//! operationProgress and progressSummary, REST `?asOf=`, by position and by time, with
//! tenancy and bad input answered like every other read.

#![allow(clippy::unwrap_used)]

mod support;

use pop_api::ApiConfig;
use serde_json::{Value, json};
use support::*;

const PROGRESS: &str = "query($id: String!, $a: AsOfInput) { agendaProgress(id: $id, asOf: $a) { processingState processingStateMessage } agenda(id: $id, asOf: $a) { id } operationProgress(id: $op, asOf: $a) { processingState } }";

async fn rest(s: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let resp = s.http.get(format!("{}{path}", s.base)).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_reads_answer_the_past_over_graphql_and_rest() {
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    let (id, submitted) = s.submit(ACME, "acme", "batch-7", &seeded).await;
    let cancelled = s.cancel(ACME, &id).await;
    let query = PROGRESS.replace("$id: String!,", "$id: String!, $op: String!,");
    let op = format!("{id}-probe");
    let read = async |token: &str, a: Value| {
        s.ok(token, &query, json!({"id": id, "op": op, "a": a})).await
    };

    let live = read(ACME, Value::Null).await;
    assert_eq!(live["agendaProgress"]["processingState"], "COMPLETE");
    let then = read(ACME, json!({"position": submitted})).await;
    assert_eq!(then["agendaProgress"]["processingState"], "WAITING", "{then:#}");
    assert_eq!(then["agenda"]["id"], id);
    assert_eq!(then["operationProgress"]["processingState"], "WAITING");
    let now = read(ACME, json!({"position": cancelled})).await;
    assert_eq!(now["agendaProgress"], live["agendaProgress"]);
    assert_eq!(now["operationProgress"], live["operationProgress"]);

    // By commit time: the submission's own commit time shows the submitted agenda; a time
    // before it shows nothing; a time after the cancel shows the cancel.
    let events = s
        .ok(
            ACME,
            "query($id: String!) { agendaEvents(agendaId: $id) { items { time position } } }",
            json!({"id": id}),
        )
        .await;
    let items = events["agendaEvents"]["items"].as_array().unwrap();
    let first_time = items[0]["time"].as_str().unwrap().to_string();
    let last_time = items.last().unwrap()["time"].as_str().unwrap().to_string();
    // A time is settled history a second after it (a change may commit up to a second after
    // the time it shows): read once it is.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let at_submit = read(ACME, json!({"time": first_time})).await;
    assert!(at_submit["agendaProgress"]["processingState"].is_string(), "{at_submit:#}");
    let before = read(ACME, json!({"time": "2000-01-01T00:00:00Z"})).await;
    assert!(before["agendaProgress"].is_null() && before["agenda"].is_null(), "{before:#}");
    let after = read(ACME, json!({"time": last_time})).await;
    assert_eq!(after["agendaProgress"], live["agendaProgress"]);

    // The summary of the link, then and now.
    let summary = "query($a: AsOfInput) { progressSummary(linkId: \"batch-7\", asOf: $a) { processingState progressList { id } } }";
    let then = s.ok(ACME, summary, json!({"a": {"position": submitted}})).await;
    assert_eq!(then["progressSummary"]["processingState"], "WAITING", "{then:#}");
    let empty = s.ok(ACME, summary, json!({"a": {"time": "2000-01-01T00:00:00Z"}})).await;
    assert_eq!(empty["progressSummary"]["progressList"], json!([]));

    // Tenancy: another customer's user sees nothing as of any point.
    let other = read(GLOBEX, json!({"position": cancelled})).await;
    assert!(other["agendaProgress"].is_null() && other["agenda"].is_null(), "{other:#}");
    assert!(other["operationProgress"].is_null());
    let other = s.ok(GLOBEX, summary, json!({"a": {"position": submitted}})).await;
    assert_eq!(other["progressSummary"]["progressList"], json!([]));

    // Bad input: a position that is none, one beyond the head, both or neither given.
    let bad = s.gql(ACME, &query, json!({"id": id, "op": op, "a": {"position": "x"}})).await;
    let bad = &bad["errors"][0];
    assert_eq!(code(bad), "VALIDATION", "{bad:#}");
    assert_eq!(bad["extensions"]["problems"][0]["field"], "asOf.position", "{bad:#}");
    assert!(bad["extensions"]["cid"].is_string(), "{bad:#}");
    let beyond =
        s.gql(ACME, &query, json!({"id": id, "op": op, "a": {"position": "999999"}})).await;
    assert_eq!(code(&beyond["errors"][0]), "VALIDATION", "{beyond:#}");
    // It says where the log ends (auditor59 L4).
    let said = beyond["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(said.contains("beyond the end of the log (its head is "), "{beyond:#}");
    // A time that does not parse names the field and the format (auditor59 L4: "Failed to
    // parse \"DateTime\": premature end of input").
    let bad =
        s.gql(ACME, &query, json!({"id": id, "op": op, "a": {"time": "2026-12-07 20:31"}})).await;
    let bad = &bad["errors"][0];
    assert_eq!(bad["extensions"]["problems"][0]["field"], "asOf.time", "{bad:#}");
    assert!(bad["message"].as_str().unwrap_or_default().contains("RFC 3339"), "{bad:#}");
    assert!(bad["extensions"]["cid"].is_string(), "{bad:#}");
    // A two-part position (PostgreSQL's, say from before an import) names no point of the
    // embedded log: refused, not compared as the pair.
    let two = s.gql(ACME, &query, json!({"id": id, "op": op, "a": {"position": "3/1"}})).await;
    assert_eq!(code(&two["errors"][0]), "VALIDATION", "{two:#}");
    assert!(two["errors"][0]["message"].as_str().unwrap().contains("two-part"), "{two:#}");
    let (status, body) = rest(&s, ACME, &format!("/pop/progress/agenda/{id}?asOf=3/1")).await;
    assert_eq!(status, 400, "{body:#}");
    assert!(body.to_string().contains("two-part"), "{body:#}");
    let both = s
        .gql(
            ACME,
            &query,
            json!({"id": id, "op": op, "a": {"position": submitted, "time": last_time}}),
        )
        .await;
    assert!(both["errors"].is_array(), "{both:#}");

    // REST: the same reads through ?asOf=.
    let (status, body) =
        rest(&s, ACME, &format!("/pop/progress/agenda/{id}?asOf={submitted}")).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["all"][0]["processingState"], "WAITING");
    let (status, body) = rest(&s, ACME, &format!("/pop/agenda/{id}?asOf={submitted}")).await;
    assert_eq!((status, body["all"][0]["id"].as_str()), (200, Some(id.as_str())));
    let (status, body) =
        rest(&s, ACME, &format!("/pop/progress/operation/{op}?asOf={submitted}")).await;
    assert_eq!((status, &body["all"][0]["processingState"]), (200, &json!("WAITING")));
    let (status, body) =
        rest(&s, ACME, &format!("/pop/progress/agenda/service?linkId=batch-7&asOf={submitted}"))
            .await;
    assert_eq!((status, &body["processingState"]), (200, &json!("WAITING")), "{body:#}");
    let (status, _) =
        rest(&s, ACME, &format!("/pop/progress/agenda/{id}?asOf=2000-01-01T00:00:00Z")).await;
    assert_eq!(status, 404);
    let (status, _) =
        rest(&s, GLOBEX, &format!("/pop/progress/agenda/{id}?asOf={submitted}")).await;
    assert_eq!(status, 404);
    let (status, body) = rest(&s, ACME, &format!("/pop/progress/agenda/{id}?asOf=soon")).await;
    assert_eq!(status, 400, "{body:#}");
    assert!(body.to_string().contains("asOf"), "{body:#}");
    // A time to come (RFC 3339 or epoch ms), or one within the last second, is refused, not
    // answered with today's state as history (auditor32, auditor33).
    let recent = (chrono::Utc::now() - chrono::Duration::milliseconds(300)).to_rfc3339();
    let (status, body) =
        rest(&s, ACME, &format!("/pop/progress/agenda/{id}?asOf={}", recent.replace('+', "%2B")))
            .await;
    assert_eq!(status, 400, "{body:#}");
    assert!(body.to_string().contains("within a second of the store's time"), "{body:#}");
    for later in ["2100-01-01T00:00:00Z", "4102444800000"] {
        let (status, body) =
            rest(&s, ACME, &format!("/pop/progress/agenda/{id}?asOf={later}")).await;
        assert_eq!(status, 400, "{body:#}");
        assert!(body.to_string().contains("later than the store's time"), "{body:#}");
    }
    // Lists take no asOf: the parameter is refused, not ignored.
    let (status, _) = rest(&s, ACME, &format!("/pop/progress/agenda?asOf={submitted}")).await;
    assert_eq!(status, 400);
}

const HISTORY: &str = "query($id: String!) { agendaHistory(agendaId: $id) { items { position version time type actor cid causationId command processingState processingStateMessage percentComplete diagnostics { message } operations { operation processingState diagnostics { message } } addedOperations removedOperations } endCursor hasNextPage } }";

/// Who did what: every event of an agenda's life — the user's submit, the scheduler's queue,
/// the worker's claim and reports, the user's cancel — records its actor, cid, command and a
/// causation, and `agendaHistory` shows each with the state it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agenda_history_names_who_did_what_on_every_path() {
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    pop_reapers::scheduler::spawn(
        std::sync::Arc::clone(&s.commands),
        s.state.projections().clone(),
        std::future::pending(),
    );
    let (id, _) = s.submit(ACME, "acme", "batch-9", &seeded).await;
    // The scheduler queues it; the worker claims it (retrying until it is queued).
    let deadline = tokio::time::Instant::now() + WAIT;
    let lease = loop {
        let data = s
            .ok(
                ACME_SERVICE,
                "mutation { getAgenda(insightId: \"transcode\", count: 1, cid: \"claim-1\") { agenda { id } lease { id } } }",
                json!({}),
            )
            .await;
        if let Some(got) = data["getAgenda"].as_array().and_then(|a| a.first()) {
            break got["lease"]["id"].as_str().unwrap().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "never queued");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    s.ok(
        ACME_SERVICE,
        "mutation($r: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $r, leaseId: $l, cid: \"report-1\") { position } }",
        json!({"l": lease, "r": {"id": id, "processingState": "EXECUTING",
            "diagnosticEvents": [{"message": "probing in.mp4"}],
            "operationProgress": [{"operation": "probe", "processingState": "EXECUTING", "percentComplete": 50,
                "diagnosticEvents": [{"message": "ffprobe: slow disk"}]}]}}),
    )
    .await;
    s.ok(
        ACME_SERVICE,
        "mutation($id: String!) { expandAgenda(agendaId: $id, operations: [{name: \"thumb\", type: \"ffmpeg\", params: {generatedOperationParent: \"probe\"}}]) { position } }",
        json!({"id": id}),
    )
    .await;
    s.cancel(ACME, &id).await;

    let data = s.ok(ACME, HISTORY, json!({"id": id})).await;
    let items = data["agendaHistory"]["items"].as_array().unwrap().clone();
    let row = |e: &Value| {
        (
            e["type"].as_str().unwrap_or("").to_string(),
            e["actor"].as_str().unwrap_or("").to_string(),
            e["command"].as_str().unwrap_or("").to_string(),
        )
    };
    let rows: Vec<(String, String, String)> = items.iter().map(row).collect();
    let has = |ty: &str, actor: &str, command: &str| {
        rows.iter().any(|r| r == &(ty.to_string(), actor.to_string(), command.to_string()))
    };
    assert!(has("AgendaSubmitted", "user:acme-user", "submitAgenda"), "{rows:#?}");
    assert!(has("AgendaQueued", "system:scheduler", "queue"), "{rows:#?}");
    assert!(has("AgendaClaimed", "service:acme-worker", "getAgenda"), "{rows:#?}");
    assert!(
        has("AgendaProgressReported", "service:acme-worker", "updateAgendaProgress"),
        "{rows:#?}"
    );
    assert!(has("AgendaCancelled", "user:acme-user", "cancelAgenda"), "{rows:#?}");
    for e in &items {
        assert!(e["cid"].is_string() && e["causationId"].is_string(), "{e:#}");
    }
    let claim = items.iter().find(|e| e["type"] == "AgendaClaimed").unwrap();
    assert_eq!(claim["cid"], "claim-1");
    assert_eq!(claim["processingStateMessage"], "scheduled", "{claim:#}");
    let report = items.iter().find(|e| e["type"] == "AgendaProgressReported").unwrap();
    assert_eq!(report["cid"], "report-1");
    assert_eq!(report["processingState"], "EXECUTING");
    assert_eq!(report["diagnostics"][0]["message"], "probing in.mp4", "{report:#}");
    // What it did to the operation it changed, with the operation's own diagnostics.
    assert_eq!(
        report["operations"],
        json!([{"operation": "probe", "processingState": "EXECUTING",
            "diagnostics": [{"message": "ffprobe: slow disk"}]}]),
        "{report:#}"
    );
    let submitted = items.iter().find(|e| e["type"] == "AgendaSubmitted").unwrap();
    assert_eq!(submitted["operations"], json!([]), "operations it added are not listed");
    // ... as steps: they are named as added (an expansion's explain its fall in percent).
    let added = submitted["addedOperations"].as_array().unwrap();
    assert!(added.contains(&json!("probe")) && !added.contains(&json!("thumb")), "{submitted:#}");
    let expanded = items.iter().find(|e| e["type"] == "OperationsExpanded").unwrap();
    assert_eq!(expanded["addedOperations"], json!(["thumb"]), "{expanded:#}");
    let last = items.last().unwrap();
    assert_eq!(
        (last["processingState"].as_str(), last["type"].as_str()),
        (Some("COMPLETE"), Some("AgendaCancelled"))
    );
    // Versions are the stream's, in order, from 0.
    let versions: Vec<u64> = items.iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, (0..items.len() as u64).collect::<Vec<_>>());
    // A rerun drops what a generator's expansion added, and says so (auditor29: the history
    // showed the operations re-added later with no word of their removal).
    s.ok(
        ACME,
        "mutation($id: String!) { rerunAgenda(agendaId: $id) { position } }",
        json!({"id": id}),
    )
    .await;
    let data = s.ok(ACME, HISTORY, json!({"id": id})).await;
    let after: Vec<Value> = data["agendaHistory"]["items"].as_array().unwrap().clone();
    let rerun = after.iter().find(|e| e["type"] == "AgendaRerun").unwrap();
    assert_eq!(rerun["removedOperations"], json!(["thumb"]), "{rerun:#}");
    assert_eq!(rerun["addedOperations"], json!([]), "{rerun:#}");
    assert_eq!(submitted["removedOperations"], json!([]), "{submitted:#}");
    // Another customer sees no history; paging works.
    let other = s.ok(GLOBEX, HISTORY, json!({"id": id})).await;
    assert!(other["agendaHistory"].is_null());
    let paged = s
        .ok(
            ACME,
            "query($id: String!) { agendaHistory(agendaId: $id, first: 2, after: \"0\") { items { version } endCursor hasNextPage } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(paged["agendaHistory"]["items"], json!([{"version": 1}, {"version": 2}]));
    assert_eq!(paged["agendaHistory"]["hasNextPage"], true);
}
