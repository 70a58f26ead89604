//! The timed processes end to end through the real `pop` binary, with short leases, intervals
//! and ages given as `pop serve` flags: a worker that claims an agenda and dies is reclaimed,
//! the agenda's failure is retried, and the third attempt succeeds; a retry that runs out of
//! `maximumAttempts` ends failed and stays failed; an old finished agenda is reaped from the
//! queries and the store while its reap record stays readable in the event log; and
//! `pop reap <name> --once` runs one cycle on a stopped server's store. Every wait is bounded
//! ([`WAIT`]) and fails with the server's log; nothing asserts on timing.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Pop, WAIT, log_tail, pop_command};

const POLL: Duration = Duration::from_millis(50);
const ACME: &str = "tok_e2e_acme_user_000000000000000";
const WORKER: &str = "tok_e2e_acme_service_000000000000";

const GET_AGENDA: &str = "mutation($n: Int!) { getAgenda(insightId: \"transcode\", count: $n) \
    { agenda { id } position } }";
const UPDATE: &str =
    "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { position } }";
const PROGRESS: &str = "query($id: String!, $after: String) { agendaProgress(id: $id, \
    atLeastPosition: $after) { id processingState processingStateMessage attemptsCompleted maximumAttempts \
    completedTime retryDue retryDueTime diagnosticEvents { message } } }";
const HISTORY: &str = "query($id: String!) { agendaEvents(agendaId: $id, first: 200) \
    { items { type } } }";

struct Server {
    pop: Pop,
    dir: tempfile::TempDir,
    /// The position of this test's latest acknowledged write (submit, claim, report). Every
    /// progress read waits until the read models reached it: without that, a read right after
    /// a report could still show the agenda `queued` from *before* the claim, and the test
    /// would take that stale state for the next attempt's (the server's claim then rightly
    /// finds nothing queued).
    written: std::sync::Mutex<Option<String>>,
}

impl std::ops::Deref for Server {
    type Target = Pop;
    fn deref(&self) -> &Pop {
        &self.pop
    }
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let tokens = json!([
            {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
            {"token": WORKER, "name": "acme-worker", "role": "service", "customers": ["acme"]},
        ]);
        let token_file = dir.path().join("tokens.json");
        std::fs::write(&token_file, tokens.to_string()).unwrap();
        let pop = Pop::start_with(
            &dir.path().join("data"),
            Some(&token_file),
            &dir.path().join("pop.log"),
            true,
            extra,
        );
        Server { pop, dir, written: std::sync::Mutex::new(None) }
    }

    /// Remembers the position a write was acknowledged at.
    fn wrote(&self, answer: &Value) {
        let position =
            answer["position"].as_str().unwrap_or_else(|| panic!("no position: {answer:#}"));
        *self.written.lock().unwrap() = Some(position.to_string());
    }

    async fn seed(&self) -> String {
        self.pop.seed_transcode(&self.admin, 5).await
    }

    async fn submit(&self, after: &str, maximum_attempts: u32) -> String {
        let data = self
            .ok(
                ACME,
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
                 { agenda { id } position } }",
                json!({"p": after, "a": {
                    "customerId": "acme", "title": "transcode",
                    "params": {"maximumAttempts": maximum_attempts},
                    "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]
                }}),
            )
            .await;
        self.wrote(&data["submitAgenda"]);
        data["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string()
    }

    /// The agenda's progress as of this test's latest write or later.
    async fn progress(&self, id: &str) -> Value {
        let after = self.written.lock().unwrap().clone();
        self.ok(ACME, PROGRESS, json!({"id": id, "after": after})).await["agendaProgress"].clone()
    }

    /// Waits (bounded) until `check(progress)` holds; the progress.
    async fn wait_for(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.progress(id).await;
            if check(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "agenda {id}: not {what} within {WAIT:?}: {p:#}\nlog:\n{}",
                log_tail(&self.log)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_state(&self, id: &str, state: &str, message: &str) -> Value {
        self.wait_for(id, &format!("{state}/{message}"), |p| {
            p["processingState"] == state && p["processingStateMessage"] == message
        })
        .await
    }

    /// Waits until the scheduler queued `id`, then claims it as the worker.
    async fn claim(&self, id: &str) {
        self.wait_state(id, "WAITING", "queued").await;
        let data = self.ok(WORKER, GET_AGENDA, json!({"n": 1})).await;
        let got = data["getAgenda"].as_array().unwrap();
        assert_eq!(got.len(), 1, "{data:#}\nlog:\n{}", log_tail(&self.log));
        assert_eq!(got[0]["agenda"]["id"], id);
        self.wrote(&got[0]);
    }

    async fn finish(&self, id: &str, outcome: &str) {
        let data = self
            .ok(
            WORKER,
            UPDATE,
            json!({"p": {"id": id, "operationProgress": [
                {"operation": "probe", "processingState": "COMPLETE", "processingStateMessage": outcome}
            ]}}),
        )
        .await;
        self.wrote(&data["updateAgendaProgress"]);
    }

    async fn history(&self, id: &str) -> Vec<String> {
        let data = self.ok(ACME, HISTORY, json!({"id": id})).await;
        data["agendaEvents"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no history: {data:#}"))
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Leases of 2 s, reclaim and retry every second, no retry backoff, no data reaping.
const FAST: &[&str] = &[
    "--lease",
    "2",
    "--reclaim-interval",
    "1",
    "--retry-interval",
    "1",
    "--retry-backoff",
    "0",
    "--retry-jitter-percent",
    "0",
    "--data-reap-interval",
    "0",
];

#[tokio::test]
async fn a_dead_worker_is_reclaimed_the_failure_retried_and_the_agenda_succeeds() {
    let pop = Server::start(FAST);
    let seeded = pop.seed().await;
    let id = pop.submit(&seeded, 3).await;

    // Attempt 1: the worker claims the agenda and dies (never reports).
    pop.claim(&id).await;
    let p = pop.wait_for(&id, "reclaimed", |p| p["attemptsCompleted"] == 1).await;
    assert!(
        p["diagnosticEvents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["message"] == "AgendaProgress timed out."),
        "{p:#}"
    );
    // Attempt 2: it fails; the retry reruns it (continue) and the scheduler queues it again.
    pop.claim(&id).await;
    pop.finish(&id, "failed").await;
    // Attempt 3 succeeds.
    pop.claim(&id).await;
    pop.finish(&id, "succeeded").await;
    let p = pop.wait_state(&id, "COMPLETE", "succeeded").await;
    assert_eq!(p["attemptsCompleted"], 3, "{p:#}");

    let history = pop.history(&id).await;
    for expected in ["AgendaTimedOut", "AgendaRequeued", "AgendaRetryDecided", "AgendaRerun"] {
        assert!(history.iter().any(|t| t == expected), "{expected} missing from {history:?}");
    }

    // What the processes did is on /metrics.
    let metrics = pop.metrics().await;
    for expected in [
        r#"pop_process_actions_total{process="reclaimer",outcome="requeued"} 1"#,
        r#"pop_process_actions_total{process="retry",outcome="retried"} 1"#,
        r#"pop_process_cycles_total{process="retry",dry_run="false"}"#,
    ] {
        assert!(metrics.contains(expected), "{expected} not in /metrics:\n{metrics}");
    }
}

#[tokio::test]
async fn a_retry_that_exhausts_maximum_attempts_ends_failed() {
    let pop = Server::start(FAST);
    let seeded = pop.seed().await;
    let id = pop.submit(&seeded, 2).await;

    pop.claim(&id).await;
    pop.finish(&id, "failed").await;
    // Retried once (attempt 2), which fails too: no attempts left.
    pop.claim(&id).await;
    pop.finish(&id, "failed").await;
    let p = pop
        .wait_for(&id, "failed twice", |p| {
            p["attemptsCompleted"] == 2 && p["processingStateMessage"] == "failed"
        })
        .await;
    assert_eq!(
        (p["maximumAttempts"].as_i64(), p["processingState"].as_str()),
        (Some(2), Some("COMPLETE"))
    );
    // Several retry cycles later it is still failed, retried exactly once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pop.progress(&id).await;
    assert_eq!(
        (p["processingState"].as_str(), p["processingStateMessage"].as_str()),
        (Some("COMPLETE"), Some("failed")),
        "{p:#}"
    );
    let retries = pop.history(&id).await.iter().filter(|t| *t == "AgendaRetryDecided").count();
    assert_eq!(retries, 1);
    // The log says which failure is retried and which is not, and /metrics counts the
    // agendas out of attempts (ops3am13: neither said an agenda failed for good).
    let log = std::fs::read_to_string(&pop.log).unwrap_or_default();
    assert!(log.contains("completed failed: a retry follows after the backoff"), "{log}");
    assert!(log.contains("completed failed: no attempt left, not retried"), "{log}");
    let metrics = pop.metrics().await;
    let out = "pop_retry_agendas_out_of_attempts 1";
    assert!(metrics.contains(out), "{out} not in /metrics:\n{metrics}");
}

/// pop: a failed agenda whose retry is still to come is cancelled, which withdraws the retry
/// (ops3am13: CONFLICT, and the retry ran 5 s later).
#[tokio::test]
async fn cancelling_a_failed_agenda_withdraws_its_retry() {
    let mut flags = FAST.to_vec();
    // A backoff long enough for the cancel to come first.
    let backoff = flags.iter().position(|f| *f == "--retry-backoff").unwrap() + 1;
    flags[backoff] = "3";
    let pop = Server::start(&flags);
    let seeded = pop.seed().await;
    let id = pop.submit(&seeded, 3).await;
    pop.claim(&id).await;
    pop.finish(&id, "failed").await;
    // When the retry is due: the backoff (3 s, no jitter) after the failure (dash58 L2: a
    // failed agenda said that a retry follows, never when).
    let due = pop.progress(&id).await;
    let p = &due;
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(p[field].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{field}: {e}: {due:#}"))
    };
    assert_eq!(p["retryDue"], json!(true), "{due:#}");
    assert_eq!((at("retryDueTime") - at("completedTime")).num_milliseconds(), 3_000, "{due:#}");
    // A reason with a line break writes no line of its own into the server's log
    // (review-s40b: it printed a made-up "completed succeeded" line).
    let reason = "storm\n2026-12-05T20:55:00Z  INFO pop::agendas: FORGED completed succeeded";
    let data = pop
        .ok(
            ACME,
            "mutation($a: String!, $r: String, $c: String) { cancelAgenda(agendaId: $a, reason: $r, \
             cid: $c) { progress { processingState processingStateMessage attemptsCompleted \
             retryDue } } }",
            json!({"a": id, "r": reason, "c": "ticket-42 agenda=globex/gf1 by=admin"}),
        )
        .await;
    let p = &data["cancelAgenda"]["progress"];
    assert_eq!(
        (&p["processingState"], &p["processingStateMessage"], &p["attemptsCompleted"]),
        (&json!("COMPLETE"), &json!("cancelled"), &json!(1)),
        "{data:#}"
    );
    assert_eq!(p["retryDue"], json!(false), "{data:#}");
    let log = std::fs::read_to_string(&pop.log).unwrap_or_default();
    assert!(log.contains("cancelled: it runs no more"), "{log}");
    assert!(log.lines().all(|l| !l.starts_with("2026-12-05T20:55:00Z")), "{log}");
    // Nor does a correlation id with spaces add fields to the line (hostile27: the cid
    // `ticket-42 agenda=globex/gf1 by=admin` named globex's agenda and an admin on acme's cancel).
    let line = log.lines().find(|l| l.contains("cancelled: it runs no more")).unwrap_or_default();
    assert!(line.contains(r#"cid="ticket-42 agenda=globex/gf1 by=admin""#), "{line}");
    // Past the backoff, over several retry cycles: still cancelled, never retried.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = pop.progress(&id).await;
    assert_eq!(p["processingStateMessage"], json!("cancelled"), "{p:#}");
    let history = pop.history(&id).await;
    assert!(!history.iter().any(|t| t == "AgendaRetryDecided"), "{history:?}");

    // POP's executor sends the agenda's outcome after the report that completed it; when that
    // says NOT_RETRYABLE, the log says the retry its first line promised is dropped
    // (popclient20).
    // An agenda run to `outcome`, then the executor's own outcome report calling it
    // NOT_RETRYABLE; the server's log after it.
    let run = async |outcome: &str| {
        let id = pop.submit(&seeded, 3).await;
        pop.claim(&id).await;
        pop.finish(&id, outcome).await;
        let report = json!({"p": {"id": id, "processingState": "COMPLETE",
            "processingStateMessage": outcome, "diagnosticEvents": [
                {"message": "Unknown operation type found: sample", "statusCode": "NOT_RETRYABLE"}]}});
        let data = pop.ok(WORKER, UPDATE, report).await;
        pop.wrote(&data["updateAgendaProgress"]);
        (id, std::fs::read_to_string(&pop.log).unwrap_or_default())
    };
    let (second, log) = run("failed").await;
    let said =
        |what: &str| log.lines().any(|l| l.contains(what) && l.contains(&format!("acme/{second}")));
    assert!(said("completed failed: a retry follows after the backoff"), "{log}");
    assert!(said("failed: not retried after all (its executor's outcome report said so)"), "{log}");
    // Only where a retry was promised (review-s41c: a success's outcome report said so too).
    let (third, log) = run("succeeded").await;
    assert!(
        !log.lines()
            .any(|l| l.contains("not retried after all") && l.contains(&format!("acme/{third}"))),
        "{log}"
    );
}

#[tokio::test]
async fn an_old_finished_agenda_is_reaped_from_queries_and_store_with_a_record_kept() {
    let pop = Server::start(&[
        "--retry-interval",
        "0",
        "--data-reap-interval",
        "1",
        "--agenda-reap-age",
        "1s",
    ]);
    let seeded = pop.seed().await;
    let id = pop.submit(&seeded, 3).await;
    pop.claim(&id).await;
    pop.finish(&id, "succeeded").await;
    // One with a progress id of its own, never run, cancelled: reaped as well.
    let parked = json!({"id": "parked-1", "progressId": "parked-progress", "customerId": "acme",
        "params": {"doNotRun": true},
        "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]});
    let submitted = pop
        .ok(
            ACME,
            "mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }",
            json!({"a": parked}),
        )
        .await;
    pop.wrote(&submitted["submitAgenda"]);
    let cancelled = pop
        .ok(ACME, "mutation { cancelAgenda(agendaId: \"parked-1\") { position } }", json!({}))
        .await;
    pop.wrote(&cancelled["cancelAgenda"]);

    // A second after it finished, the reaper removes it: queries no longer return it.
    let deadline = Instant::now() + WAIT;
    while !pop.progress(&id).await.is_null() {
        assert!(
            Instant::now() < deadline,
            "not reaped within {WAIT:?}\nlog:\n{}",
            log_tail(&pop.log)
        );
        tokio::time::sleep(POLL).await;
    }
    let data =
        pop.ok(ACME, "query($id: String!) { agenda(id: $id) { id } }", json!({"id": id})).await;
    assert!(data["agenda"].is_null(), "{data:#}");
    let data = pop.ok(ACME, HISTORY, json!({"id": id})).await;
    assert!(data["agendaEvents"].is_null(), "{data:#}");

    // The record stays in the log: what, whose, when and why.
    let data = pop
        .ok(&pop.admin, "{ events(first: 200) { items { stream type data metadata } } }", json!({}))
        .await;
    let items = data["events"]["items"].as_array().unwrap();
    let stream = format!("agenda-{}", pop_domain::agenda::key("acme", &id));
    assert!(items.iter().all(|e| e["stream"] != stream.as_str()), "the agenda's events are gone");
    let record = items
        .iter()
        .find(|e| e["type"] == "StreamReaped" && e["data"]["stream"] == stream.as_str())
        .unwrap_or_else(|| panic!("no reap record for {stream} in {data:#}"));
    assert!(record["stream"].as_str().unwrap().starts_with("reaps-"), "{record:#}");
    assert_eq!(record["data"]["kind"], "agenda");
    assert_eq!(record["data"]["customerId"], "acme");
    assert!(record["data"]["reason"].as_str().unwrap().contains("reapAge"), "{record:#}");
    assert_eq!(record["metadata"]["actor"], "system:data-reaper", "{record:#}");

    // Its id stays used: submitted again it is a CONFLICT that says why, not "not found".
    let again = json!({"id": id, "customerId": "acme", "title": "again",
        "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]});
    let (status, body) = pop
        .post(
            Some(ACME),
            "mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }",
            json!({"a": again}),
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "CONFLICT", "{body:#}");
    assert!(error["message"].as_str().unwrap().contains("never used twice"), "{body:#}");
    // So does the progress id of a reaped agenda, taken again as a progress id or as an
    // agenda's id (hostile14: "is already the progress id of agenda …", an agenda long gone).
    let deadline = Instant::now() + WAIT;
    while !pop.progress("parked-progress").await.is_null() {
        assert!(Instant::now() < deadline, "parked-1 not reaped\nlog:\n{}", log_tail(&pop.log));
        tokio::time::sleep(POLL).await;
    }
    for (agenda_id, progress_id) in
        [("fresh-1", Some("parked-progress")), ("parked-progress", None)]
    {
        let mut again = json!({"id": agenda_id, "customerId": "acme",
            "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]});
        if let Some(p) = progress_id {
            again["progressId"] = json!(p);
        }
        let (_, body) = pop
            .post(
                Some(ACME),
                "mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }",
                json!({"a": again}),
            )
            .await;
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "CONFLICT", "{agenda_id}: {body:#}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("since deleted (reaped)") && message.contains("never used twice"),
            "{agenda_id}: {body:#}"
        );
    }

    // On the stopped server's store, `pop log` still shows the record, and the store-based
    // processes run once from the CLI.
    let data_dir = pop.data_dir.clone();
    let Server { pop, dir, .. } = pop;
    let log_path = dir.path().join("reap-cli.log");
    drop(pop);
    let log = pop_command()
        .args(["log", "--stream"])
        .arg(record["stream"].as_str().unwrap())
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(log.status.success(), "{}", String::from_utf8_lossy(&log.stderr));
    assert!(String::from_utf8_lossy(&log.stdout).contains(&stream));
    for name in ["reclaimer", "retry", "data"] {
        let out = pop_command()
            .args(["reap", name, "--once", "--dry-run", "--data-dir"])
            .arg(&data_dir)
            .stderr(std::fs::File::create(&log_path).unwrap())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "pop reap {name}: {stdout}\n{}", log_tail(&log_path));
        assert!(
            stdout.contains("pop reap (dry run: nothing was changed): planned=0"),
            "pop reap {name}: {stdout}"
        );
    }

    // Looping, a process takes its interval from its own setting (here `POP_RETRY_INTERVAL`)
    // and SIGTERM stops it cleanly: exit 0 with the store closed.
    let loop_log = dir.path().join("reap-loop.log");
    let mut child = pop_command()
        .args(["reap", "retry", "--dry-run", "--data-dir"])
        .arg(&data_dir)
        .env("POP_RETRY_INTERVAL", "17")
        .stderr(std::fs::File::create(&loop_log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let looping = loop {
        let text = std::fs::read_to_string(&loop_log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("looping until")) {
            break line.to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pop reap retry did not start looping\n{}", log_tail(&loop_log));
        }
        std::thread::sleep(POLL);
    };
    // (Field and value apart: the text log may colour the `=`.)
    assert!(looping.contains("interval_secs") && looping.contains("17"), "{looping}");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pop reap retry ignored SIGTERM\n{}", log_tail(&loop_log));
        }
        std::thread::sleep(POLL);
    };
    assert!(status.success(), "exit {status:?} after SIGTERM\n{}", log_tail(&loop_log));
    assert!(
        std::fs::read_to_string(&loop_log).unwrap_or_default().contains("store closed"),
        "{}",
        log_tail(&loop_log)
    );
}

/// ops3am7: a server down for longer than a lease. The worker holding an agenda still runs it
/// and could not report meanwhile: when the server is back, the lease gets its length again
/// before the reclaimer may time it out, so the worker's next report is taken (it was
/// refused, the agenda was handed out again, and the work ran twice). A lease its holder
/// then lets run out is reclaimed as ever.
#[tokio::test]
async fn a_lease_that_ran_out_while_the_server_was_down_gets_its_length_again() {
    let args = [
        "--lease",
        "3",
        "--reclaim-interval",
        "1",
        "--retry-interval",
        "0",
        "--data-reap-interval",
        "0",
    ];
    let mut pop = Server::start(&args);
    let seeded = pop.seed().await;
    let id = pop.submit(&seeded, 3).await;
    pop.claim(&id).await;
    pop.pop.child.kill().unwrap();
    pop.pop.child.wait().unwrap();
    // Down for longer than the lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted = Pop::start_with(
        &pop.dir.path().join("data"),
        Some(&pop.dir.path().join("tokens.json")),
        &pop.dir.path().join("pop.log"),
        true,
        &args,
    );
    pop.pop = restarted;
    // A reclaim cycle or two run (every second) before the worker's report comes through.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let beat = json!({"p": {"id": id, "operationProgress": [
        {"operation": "probe", "processingState": "EXECUTING", "percentComplete": 40.0}
    ]}});
    let (_, body) = pop.post(Some(WORKER), UPDATE, beat).await;
    assert!(
        body["errors"].is_null(),
        "the holder's report after the restart: {body:#}\nlog:\n{}",
        log_tail(&pop.log)
    );
    pop.wrote(&body["data"]["updateAgendaProgress"]);
    assert!(!pop.history(&id).await.iter().any(|t| t == "AgendaTimedOut"));
    // No more reports: the renewed lease runs out and is reclaimed.
    let p = pop.wait_for(&id, "reclaimed", |p| p["attemptsCompleted"] == 1).await;
    assert_eq!(p["processingState"], "WAITING", "{p:#}");
}
