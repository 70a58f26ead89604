//! End-to-end scheduling through the real `pop` binary with the scheduler on: an agenda is
//! submitted, the scheduler queues it, `getAgenda` by a service token hands it out once under a
//! lease, `updateAgendaProgress` reports its operations executing and then complete, and the
//! agenda ends COMPLETE/succeeded — or COMPLETE/failed when an operation fails. Each test starts
//! `pop serve` as a child process on a temp data dir and `127.0.0.1:0`; a guard kills it on drop.
//! Every wait is bounded ([`WAIT`]) and fails with a message and the server's log; nothing
//! asserts on timing.

// Test helpers panic on purpose: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Pop, WAIT, log_tail};

/// Pause between polls.
const POLL: Duration = Duration::from_millis(25);

/// A user of customer `acme`.
const ACME: &str = "tok_e2e_acme_user_000000000000000";
/// A resource pool's worker acting for `acme`.
const ACME_SERVICE: &str = "tok_e2e_acme_service_000000000000";
/// A second worker of the same pool.
const ACME_SERVICE_2: &str = "tok_e2e_acme_service_2_0000000000";

const GET_AGENDA: &str = "mutation($i: String!, $n: Int!) { getAgenda(insightId: $i, count: $n) \
    { agenda { id } progress { id processingState processingStateMessage \
    operationProgress { operation processingState } } position } }";

const UPDATE: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { progress \
    { id processingState processingStateMessage percentComplete \
    operationProgress { operation processingState processingStateMessage } } position } }";

const PROGRESS: &str = "query($id: String!, $p: String) { agendaProgress(id: $id, \
    atLeastPosition: $p) { id processingState processingStateMessage percentComplete \
    operationProgress { operation processingState processingStateMessage } } }";

/// A running `pop serve` with the scheduler on, and the temp dir holding its data, tokens and
/// log (dropped after the server, so the log outlives it).
struct Sched {
    pop: Pop,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Sched {
    type Target = Pop;
    fn deref(&self) -> &Pop {
        &self.pop
    }
}

impl Sched {
    fn start() -> Sched {
        let dir = tempfile::tempdir().expect("a temp dir");
        let tokens = json!([
            {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
            {"token": ACME_SERVICE, "name": "acme-worker", "role": "service", "customers": ["acme"]},
            {"token": ACME_SERVICE_2, "name": "acme-worker-2", "role": "service", "customers": ["acme"]},
        ]);
        let token_file = dir.path().join("tokens.json");
        std::fs::write(&token_file, tokens.to_string()).unwrap();
        let pop = Pop::start(
            &dir.path().join("data"),
            Some(&token_file),
            &dir.path().join("pop.log"),
            true,
        );
        Sched { pop, _dir: dir }
    }

    /// Pool, customer `acme` and a global insight taking `ffmpeg` operations; the last
    /// position.
    async fn seed(&self) -> String {
        self.pop.seed_transcode(&self.pop.admin, 5).await
    }

    /// Submits a two-operation agenda as the `acme` user; its id.
    async fn submit(&self, after: &str) -> String {
        let data = self
            .ok(
                ACME,
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
                 { agenda { id agendaInsight { insightId } } } }",
                json!({"p": after, "a": {
                    "customerId": "acme", "linkId": "e2e", "title": "transcode",
                    "operations": [
                        {"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}},
                        {"name": "encode", "type": "ffmpeg", "payload": "@<probe.out::/streams>"}
                    ]
                }}),
            )
            .await;
        let agenda = &data["submitAgenda"]["agenda"];
        assert_eq!(agenda["agendaInsight"]["insightId"], "transcode", "bound: {agenda:#}");
        agenda["id"].as_str().unwrap().to_string()
    }

    async fn progress(&self, id: &str, at: Option<&str>) -> Value {
        let data = self.ok(ACME, PROGRESS, json!({"id": id, "p": at})).await;
        data["agendaProgress"].clone()
    }

    /// Waits (bounded) until the scheduler has queued agenda `id`.
    async fn wait_queued(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.progress(id, None).await;
            if state(&p) == ("WAITING", "queued") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agenda {id} not queued within {WAIT:?}: {p:#}\nlog:\n{}",
                log_tail(&self.log)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn get_agenda(&self, token: &str, count: i32) -> Vec<Value> {
        let data = self.ok(token, GET_AGENDA, json!({"i": "transcode", "n": count})).await;
        data["getAgenda"].as_array().cloned().unwrap_or_else(|| panic!("not a list: {data:#}"))
    }

    /// One progress report as `token`; the resulting progress and position.
    async fn report(&self, token: &str, report: Value) -> (Value, String) {
        let data = self.ok(token, UPDATE, json!({"p": report})).await;
        let r = &data["updateAgendaProgress"];
        (r["progress"].clone(), r["position"].as_str().unwrap().to_string())
    }
}

fn state(p: &Value) -> (&str, &str) {
    (
        p["processingState"].as_str().unwrap_or_default(),
        p["processingStateMessage"].as_str().unwrap_or_default(),
    )
}

/// Submits one agenda, waits until it is queued and claims it as [`ACME_SERVICE`].
async fn submitted_and_claimed(pop: &Sched) -> String {
    let seeded = pop.seed().await;
    let id = pop.submit(&seeded).await;
    pop.wait_queued(&id).await;

    let got = pop.get_agenda(ACME_SERVICE, 5).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["agenda"]["id"], id.as_str());
    assert_eq!(state(&got[0]["progress"]), ("WAITING", "scheduled"), "{got:#?}");
    // Handed out once: nobody else gets it while the lease holds.
    assert!(pop.get_agenda(ACME_SERVICE_2, 5).await.is_empty(), "handed out twice");
    assert!(pop.get_agenda(ACME_SERVICE, 5).await.is_empty(), "handed out twice");
    id
}

#[tokio::test]
async fn submit_queue_get_agenda_report_and_succeed() {
    let pop = Sched::start();
    let id = submitted_and_claimed(&pop).await;

    let (p, _) = pop
        .report(
            ACME_SERVICE,
            json!({"id": id, "processingState": "EXECUTING", "processingStateMessage": "Running Operations",
                "operationProgress": [
                    {"operation": "probe", "processingState": "EXECUTING", "percentComplete": 50},
                    {"operation": "encode", "processingState": "EXECUTING", "percentComplete": 10}
                ]}),
        )
        .await;
    assert_eq!(state(&p), ("EXECUTING", "Running Operations"), "{p:#}");
    for op in p["operationProgress"].as_array().unwrap() {
        assert_eq!(op["processingState"], "EXECUTING", "{p:#}");
    }

    let (p, at) = pop
        .report(
            ACME_SERVICE,
            json!({"id": id, "processingState": "COMPLETE", "processingStateMessage": "succeeded",
                "operationProgress": [
                    {"operation": "probe", "processingState": "COMPLETE", "processingStateMessage": "succeeded"},
                    {"operation": "encode", "processingState": "COMPLETE", "processingStateMessage": "succeeded"}
                ]}),
        )
        .await;
    assert_eq!(state(&p), ("COMPLETE", "succeeded"), "{p:#}");
    assert_eq!(p["percentComplete"], 100.0, "{p:#}");

    // The read side agrees once it reached the report's position.
    let p = pop.progress(&id, Some(&at)).await;
    assert_eq!(state(&p), ("COMPLETE", "succeeded"), "{p:#}");
    for op in p["operationProgress"].as_array().unwrap() {
        assert_eq!(state(op), ("COMPLETE", "succeeded"), "{p:#}");
    }
}

#[tokio::test]
async fn a_failed_operation_fails_the_agenda() {
    let pop = Sched::start();
    let id = submitted_and_claimed(&pop).await;

    let (p, _) = pop
        .report(
            ACME_SERVICE,
            json!({"id": id, "processingState": "EXECUTING",
                "operationProgress": [{"operation": "probe", "processingState": "EXECUTING"}]}),
        )
        .await;
    assert_eq!(p["processingState"], "EXECUTING", "{p:#}");

    let (p, at) = pop
        .report(
            ACME_SERVICE,
            json!({"id": id, "operationProgress": [
                {"operation": "probe", "processingState": "COMPLETE", "processingStateMessage": "failed",
                 "diagnosticEvents": [{"message": "no such file", "statusCode": 2}]}
            ]}),
        )
        .await;
    assert_eq!(state(&p), ("COMPLETE", "failed"), "{p:#}");

    let p = pop.progress(&id, Some(&at)).await;
    assert_eq!(state(&p), ("COMPLETE", "failed"), "{p:#}");
    let probe = p["operationProgress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["operation"] == "probe")
        .cloned()
        .unwrap_or_else(|| panic!("no probe progress: {p:#}"));
    assert_eq!(state(&probe), ("COMPLETE", "failed"), "{p:#}");
}

const GET_AGENDA_WAITING: &str = "mutation($i: String!, $n: Int!, $w: Int) { getAgenda(insightId: \
    $i, count: $n, waitSeconds: $w) { agenda { id } lease { id } } }";

/// Idle-worker hand-out (issue 18): a `getAgenda` that asks to wait (GraphQL and the POP REST
/// surface alike) is still open when an agenda is submitted after it, and answers with that
/// agenda: the submission wakes it through the scheduler's queueing, with no poll in between.
/// A call that does not ask to wait answers an empty queue at once, as POP clients expect.
#[tokio::test]
async fn a_waiting_get_agenda_hands_out_an_agenda_submitted_after_it_started() {
    let pop = Sched::start();
    let at = pop.seed().await;
    let http = reqwest::Client::new();
    for transport in ["graphql", "rest"] {
        // Today's behaviour without waitSeconds: an empty queue is an empty list.
        assert!(pop.get_agenda(ACME_SERVICE, 1).await.is_empty(), "{transport}: queue not empty");
        let request = match transport {
            "graphql" => http
                .post(format!("{}/graphql", pop.base()))
                .bearer_auth(ACME_SERVICE)
                .json(&json!({"query": GET_AGENDA_WAITING,
                    "variables": {"i": "transcode", "n": 1, "w": 20}})),
            _ => http
                .post(format!("{}/pop/resourcepool/service/getAgenda", pop.base()))
                .bearer_auth(ACME_SERVICE)
                .json(&json!({"insightId": "transcode", "count": 1, "waitSeconds": 20})),
        };
        let waiting = tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        });
        // Give the request time to reach the server and start waiting; it must still be open
        // (an empty queue does not answer a waiting call).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "{transport}: the waiting getAgenda answered before any work"
        );
        let id = pop.submit(&at).await;
        let (status, body) = tokio::time::timeout(WAIT, waiting)
            .await
            .unwrap_or_else(|_| panic!("{transport}: no answer\nlog:\n{}", log_tail(&pop.log)))
            .unwrap();
        assert_eq!(status, 200, "{transport}: {body:#}");
        let handed: Vec<String> = match transport {
            "graphql" => body["data"]["getAgenda"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["agenda"]["id"].as_str().unwrap().to_string())
                .collect(),
            _ => body["all"]
                .as_array()
                .unwrap_or_else(|| panic!("{body:#}"))
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string())
                .collect(),
        };
        assert_eq!(handed, vec![id.clone()], "{transport}: {body:#}");
        // The claim is real: the agenda is leased (scheduled), and a second call finds nothing.
        assert!(
            pop.get_agenda(ACME_SERVICE_2, 1).await.is_empty(),
            "{transport}: handed out twice"
        );
        let deadline = Instant::now() + WAIT;
        loop {
            let progress = pop.progress(&id, None).await;
            if state(&progress) == ("WAITING", "scheduled") {
                break;
            }
            assert!(Instant::now() < deadline, "{transport}: not leased: {progress:#}");
            tokio::time::sleep(POLL).await;
        }
    }
    // A wait beyond the bound is refused, naming the field.
    let (_, body) = pop
        .post(Some(ACME_SERVICE), GET_AGENDA_WAITING, json!({"i": "transcode", "n": 1, "w": 31}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION", "{body:#}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("waitSeconds"), "{body:#}");
}
