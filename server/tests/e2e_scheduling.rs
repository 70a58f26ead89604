//! End-to-end scheduling through the real `pop` binary with the scheduler on: an agenda is
//! submitted, the scheduler queues it, `getAgenda` by a service token hands it out once under a
//! lease, `updateAgendaProgress` reports its operations executing and then complete, and the
//! agenda ends COMPLETE/succeeded — or COMPLETE/failed when an operation fails. Each test starts
//! `pop serve` as a child process on a temp data dir and `127.0.0.1:0`; a guard kills it on drop.
//! Every wait is bounded ([`WAIT`]) and fails with a message and the server's log; nothing
//! asserts on timing.

// Test helpers panic on purpose: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Longest any test waits for one expected thing before failing.
const WAIT: Duration = Duration::from_secs(20);
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

/// A running `pop serve` (scheduler on) with its temp dir; killed and reaped on drop.
struct Pop {
    child: Child,
    addr: String,
    admin: String,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Pop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Pop {
    fn start() -> Pop {
        let dir = tempfile::tempdir().expect("a temp dir");
        let tokens = json!([
            {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
            {"token": ACME_SERVICE, "name": "acme-worker", "role": "service", "customers": ["acme"]},
            {"token": ACME_SERVICE_2, "name": "acme-worker-2", "role": "service", "customers": ["acme"]},
        ]);
        let token_file = dir.path().join("tokens.json");
        std::fs::write(&token_file, tokens.to_string()).unwrap();
        let data_dir = dir.path().join("data");
        let log = dir.path().join("pop.log");
        let log_file = std::fs::File::create(&log).expect("the log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pop"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("POP_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info")
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind", "127.0.0.1:0", "--scheduler", "true"])
            .arg("--token-file")
            .arg(&token_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawning pop serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("pop: listening on http://") {
                        break rest.trim_end_matches("/graphql").to_string();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("pop serve did not print its address ({e})\nlog:\n{}", log_tail(&log));
                }
            }
        };
        let admin = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("the generated admin token")
            .trim()
            .to_string();
        Pop {
            child,
            addr,
            admin,
            log,
            http: reqwest::Client::builder().timeout(WAIT).build().expect("an HTTP client"),
            _dir: dir,
        }
    }

    async fn post(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self
            .http
            .post(format!("http://{}/graphql", self.addr))
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql failed: {e}\nlog:\n{}", log_tail(&self.log)));
        let text = response.text().await.expect("a response body");
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    /// Runs a query or mutation and returns `data`, failing on any error.
    async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.post(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}\nquery: {query}");
        body["data"].clone()
    }

    /// Pool, customer `acme` and a global insight taking `ffmpeg` operations; the last
    /// position.
    async fn seed(&self) -> String {
        self.ok(
            &self.admin,
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await;
        self.ok(
            &self.admin,
            "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
            json!({"c": {"id": "acme", "title": "acme", "resourcePoolId": "pool-1"}}),
        )
        .await;
        let data = self
            .ok(
                &self.admin,
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": "transcode", "customerId": "ops", "title": "Transcode",
                    "resourcePoolId": "pool-1", "queueSize": 5, "isGlobal": true,
                    "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await;
        data["createInsight"]["position"].as_str().unwrap().to_string()
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
async fn submitted_and_claimed(pop: &Pop) -> String {
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
    let pop = Pop::start();
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
    let pop = Pop::start();
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
