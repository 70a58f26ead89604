//! End-to-end tests of `pop worker` against the real `pop serve`, with real local processes:
//! the example handlers in `examples/handlers/` (bash scripts) record the resolved payload
//! each operation received and count its runs in a temp directory, so the tests assert what
//! actually flowed, not what the worker says. Every wait is bounded ([`WAIT`]) and fails with
//! both logs; nothing asserts on timing.

// Test helpers panic on purpose: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Pop, WAIT, log_tail, pop_command};

const POLL: Duration = Duration::from_millis(50);
/// The state changes of these tests take a lease expiry and a reclaim on top of the runs.
const LONG_WAIT: Duration = Duration::from_secs(60);

const ACME: &str = "tok_e2e_acme_user_000000000000000";
const WORKER_1: &str = "tok_e2e_worker_1_0000000000000000";
const WORKER_2: &str = "tok_e2e_worker_2_0000000000000000";

const PROGRESS: &str = "query($id: String!) { agendaProgress(id: $id) { processingState \
    processingStateMessage attemptsCompleted diagnosticEvents { message payload } \
    operationProgress { operation processingState processingStateMessage resultPayload \
    diagnosticEvents { message payload } } } }";

/// A running `pop worker`; killed (SIGKILL) and reaped on drop.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    pop: Pop,
    dir: tempfile::TempDir,
    /// The position of the last config write, so submissions see the customer and insight.
    config_position: String,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

impl Setup {
    async fn start(serve_args: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let tokens = json!([
            {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
            {"token": WORKER_1, "name": "worker-1", "role": "service", "customers": ["acme"]},
            {"token": WORKER_2, "name": "worker-2", "role": "service", "customers": ["acme"]},
        ]);
        let token_file = dir.path().join("tokens.json");
        std::fs::write(&token_file, tokens.to_string()).unwrap();
        let pop = Pop::start_with(
            &dir.path().join("data"),
            Some(&token_file),
            &dir.path().join("pop.log"),
            true,
            serve_args,
        );
        let mut s = Setup { pop, dir, config_position: String::new() };
        s.config_position = s.pop.seed_work(&["step", "fanout", "flaky", "slow"]).await;
        s
    }

    fn record(&self) -> PathBuf {
        self.dir.path().join("record")
    }

    /// Writes a handler registry with the example scripts; `extra` adds TOML.
    fn handlers(&self, file: &str, extra: &str) -> PathBuf {
        let step = examples().join("handlers/step.sh");
        let fanout = examples().join("handlers/fanout.sh");
        let record = self.record();
        let text = format!(
            "[handlers.step]\nkind = \"local\"\ncommand = [{step:?}]\ntimeout_seconds = 30\n\
             env = {{ POP_RECORD_DIR = {record:?} }}\n\
             [handlers.fanout]\nkind = \"local\"\ncommand = [{fanout:?}]\ntimeout_seconds = 30\n\
             env = {{ POP_RECORD_DIR = {record:?} }}\n{extra}"
        );
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn worker(&self, token: &str, handlers: &Path, name: &str) -> Worker {
        self.worker_with(token, handlers, name, &["--heartbeat-ms", "300"])
    }

    /// A worker with `args` besides the fast report and idle-poll settings.
    fn worker_with(&self, token: &str, handlers: &Path, name: &str, args: &[&str]) -> Worker {
        let log = self.dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = pop_command();
        cmd.args(["worker", "--server", &self.pop.base(), "--token", token, "--insight", "work"])
            .arg("--handlers")
            .arg(handlers)
            .args(["--report-interval-ms", "50", "--max-idle-ms", "200"])
            .args(args)
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        Worker { child: cmd.spawn().expect("spawning pop worker"), log }
    }

    async fn submit(&self, agenda: Value) -> String {
        let data = self
            .pop
            .ok(
                ACME,
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
                 { agenda { id } } }",
                json!({"a": agenda, "p": self.config_position}),
            )
            .await;
        data["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string()
    }

    async fn progress(&self, id: &str) -> Value {
        self.pop.ok(ACME, PROGRESS, json!({"id": id})).await["agendaProgress"].clone()
    }

    /// Polls until `check` holds for the agenda's progress (bounded).
    async fn wait_for(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        workers: &[&Worker],
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let p = self.progress(id).await;
            // Null until the read model has the agenda (reads here do not wait for positions).
            if !p.is_null() && check(&p) {
                return p;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = workers
                    .iter()
                    .map(|w| format!("worker log {}:\n{}", w.log.display(), log_tail(&w.log)))
                    .collect();
                panic!(
                    "agenda {id}: not {what} within {limit:?}; progress: {p:#}\n{}\nserver log:\n{}",
                    logs.join("\n"),
                    log_tail(&self.pop.log)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn runs(&self, op: &str) -> usize {
        std::fs::read_to_string(self.record().join(format!("{op}.runs")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn payload(&self, op: &str) -> Value {
        let path = self.record().join(format!("{op}.payload.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{op} never ran ({}: {e})", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

fn complete(message: &'static str) -> impl Fn(&Value) -> bool {
    move |p| p["processingState"] == "COMPLETE" && p["processingStateMessage"] == message
}

fn op<'a>(progress: &'a Value, name: &str) -> &'a Value {
    progress["operationProgress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operation"] == name)
        .unwrap_or_else(|| panic!("no operation {name} in {progress:#}"))
}

/// Six operations, one of them a generator that adds four more: references with pointers,
/// fallbacks, text interpolation, tokens, `dependsOn`, and generated operations referring to
/// the generator and to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_with_references_and_a_generator_runs_to_success() {
    let s = Setup::start(&[]).await;
    let handlers = s.handlers("handlers.toml", "");
    let worker = s.worker(WORKER_1, &handlers, "worker");
    let id = s
        .submit(json!({
            "customerId": "acme", "title": "ten operations",
            "operations": [
                {"name": "ingest", "type": "step",
                 "payload": {"file": "in.mov", "agenda": "@<pop.agendaId>", "me": "@<pop.operationName>"}},
                {"name": "probe", "type": "step", "payload": {"src": "@<ingest.out::/input/file>"}},
                {"name": "split", "type": "fanout", "payload": {"parts": 3, "of": "@<probe.out::operation>"},
                 "params": {"agenda.operation.generator":
                     {"operationsJsonPointer": "/operations", "paramsJsonPointer": "/params"}}},
                {"name": "encode", "type": "step",
                 "payload": {"input": "@<probe.out::/input>", "label": "--@<probe.out::/input/src>--@<pop.agendaId>--"}},
                {"name": "thumb", "type": "step",
                 "payload": {"at": "@<probe.out::/duration?60>", "none": "@<probe.out::/missing?>"}},
                {"name": "package", "type": "step",
                 "payload": {"video": "@<encode.out::/input/input/src>", "poster": "@<thumb.out::/input/at>"},
                 "params": {"dependsOn": "split"}}
            ]
        }))
        .await;
    let p = s.wait_for(&id, "succeeded", LONG_WAIT, &[&worker], complete("succeeded")).await;

    // Ten operations, generated ones included, all succeeded.
    let ops = p["operationProgress"].as_array().unwrap();
    let names: Vec<&str> = ops.iter().map(|o| o["operation"].as_str().unwrap()).collect();
    assert_eq!(ops.len(), 10, "{names:?}");
    for o in ops {
        assert_eq!(o["processingStateMessage"], "succeeded", "{o:#}");
    }

    // What each process received, references resolved.
    assert_eq!(s.payload("ingest"), json!({"file": "in.mov", "agenda": id, "me": "ingest"}));
    assert_eq!(s.payload("probe"), json!({"src": "in.mov"}));
    assert_eq!(s.payload("split"), json!({"parts": 3, "of": "probe"}));
    assert_eq!(
        s.payload("encode"),
        json!({"input": {"src": "in.mov"}, "label": format!("--in.mov--{id}--")})
    );
    assert_eq!(s.payload("thumb"), json!({"at": "60", "none": null}));
    assert_eq!(s.payload("package"), json!({"video": "in.mov", "poster": "60"}));
    for i in 1..=3 {
        assert_eq!(s.payload(&format!("part-{i}")), json!({"part": i, "of": 3}));
    }
    assert_eq!(s.payload("join"), json!({"parts": [1, 2, 3]}));
    // Outputs are recorded as the operations' resultPayload.
    assert_eq!(op(&p, "join")["resultPayload"]["input"], json!({"parts": [1, 2, 3]}));
    // Every operation ran exactly once.
    for name in names {
        assert_eq!(s.runs(name), 1, "{name}");
    }
    // The audit trail: everything the worker did for this claim (its reports, the
    // generator's expand) carries one correlation id of its own, not one per request.
    let history = s
        .pop
        .ok(
            ACME,
            "query($id: String!) { agendaHistory(agendaId: $id, first: 200) { items { actor cid command } } }",
            json!({"id": id}),
        )
        .await;
    let items = history["agendaHistory"]["items"].as_array().unwrap();
    let by_worker: Vec<&Value> = items
        .iter()
        .filter(|e| e["command"] == "updateAgendaProgress" || e["command"] == "expandAgenda")
        .collect();
    assert!(by_worker.len() > 3, "{items:#?}");
    let cids: std::collections::BTreeSet<&str> =
        by_worker.iter().map(|e| e["cid"].as_str().unwrap()).collect();
    assert_eq!(cids.len(), 1, "one cid for the claim's work: {by_worker:#?}");
    let submitted = items.iter().find(|e| e["command"] == "submitAgenda").unwrap();
    assert!(!cids.contains(submitted["cid"].as_str().unwrap()), "{items:#?}");
}

/// A failing operation fails the agenda and stops its dependants; a `continue` rerun runs only
/// what did not succeed, feeding it the recorded outputs of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_fails_the_agenda_and_continue_resumes_without_rerunning() {
    let s = Setup::start(&[]).await;
    let allow = s.dir.path().join("allow-flaky");
    let handlers = s.handlers(
        "handlers.toml",
        &format!(
            "[handlers.flaky]\nkind = \"local\"\ncommand = [{:?}]\ntimeout_seconds = 30\n\
             env = {{ POP_RECORD_DIR = {:?}, STEP_FAIL_UNLESS = {allow:?} }}\n",
            examples().join("handlers/step.sh"),
            s.record()
        ),
    );
    let worker = s.worker(WORKER_1, &handlers, "worker");
    let id = s
        .submit(json!({
            "customerId": "acme", "title": "flaky", "params": {"maximumAttempts": 1},
            "operations": [
                {"name": "a", "type": "step", "payload": {"n": 1}},
                {"name": "b", "type": "flaky", "payload": {"from": "@<a.out::/input/n>"}},
                {"name": "c", "type": "step", "payload": {"b": "@<b.out::/input>", "a": "@<a.out::/input>"}}
            ]
        }))
        .await;
    let p = s.wait_for(&id, "failed", LONG_WAIT, &[&worker], complete("failed")).await;
    assert_eq!(op(&p, "a")["processingStateMessage"], "succeeded");
    assert_eq!(op(&p, "b")["processingStateMessage"], "failed");
    let diagnostic = &op(&p, "b")["diagnosticEvents"][0];
    assert!(diagnostic["message"].as_str().unwrap().contains("exit status: 3"), "{diagnostic:#}");
    let log = diagnostic["payload"]["log"].as_array().unwrap();
    assert!(
        log.iter().any(|l| l.as_str().unwrap().contains("does not exist; failing")),
        "the log tail is the diagnostic payload: {diagnostic:#}"
    );
    assert_ne!(op(&p, "c")["processingStateMessage"], "succeeded");
    assert_eq!((s.runs("a"), s.runs("b"), s.runs("c")), (1, 1, 0));

    std::fs::write(&allow, "").unwrap();
    s.pop
        .ok(
            ACME,
            "mutation($id: String!) { rerunAgenda(agendaId: $id, params: [\"continue\"]) { position } }",
            json!({"id": id}),
        )
        .await;
    let p = s.wait_for(&id, "succeeded", LONG_WAIT, &[&worker], complete("succeeded")).await;
    assert_eq!((s.runs("a"), s.runs("b"), s.runs("c")), (1, 2, 1), "a is not run again");
    assert_eq!(s.payload("c"), json!({"b": {"from": 1}, "a": {"n": 1}}));
    assert_eq!(op(&p, "c")["resultPayload"]["input"]["a"], json!({"n": 1}));
}

/// A worker killed with SIGKILL mid-run holds a lease nobody renews: the reclaimer requeues
/// the agenda and a second worker finishes it, without re-running what had succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_reclaimed_and_another_worker_finishes() {
    let s = Setup::start(&["--lease", "2", "--reclaim-interval", "1"]).await;
    let step = examples().join("handlers/step.sh");
    let slow = |sleep: &str| {
        format!(
            "[handlers.slow]\nkind = \"local\"\ncommand = [{step:?}]\ntimeout_seconds = 60\n\
             env = {{ POP_RECORD_DIR = {:?}, STEP_SLEEP = {sleep:?} }}\n",
            s.record()
        )
    };
    let first = s.handlers("first.toml", &slow("30"));
    let second = s.handlers("second.toml", &slow("0"));
    let mut worker = s.worker(WORKER_1, &first, "worker-1");
    let id = s
        .submit(json!({
            "customerId": "acme", "title": "killed",
            "operations": [
                {"name": "a", "type": "step", "payload": {"n": 1}},
                {"name": "b", "type": "slow", "payload": {"a": "@<a.out::/input/n>"}},
                {"name": "c", "type": "step", "payload": {"b": "@<b.out::/input/a>"}}
            ]
        }))
        .await;
    // Kill worker 1 once a's success is recorded and b is running.
    s.wait_for(&id, "running b", LONG_WAIT, &[&worker], |p| {
        op(p, "a")["processingStateMessage"] == "succeeded"
            && op(p, "b")["processingState"] == "EXECUTING"
    })
    .await;
    // The worker reports b EXECUTING as it starts the handler, which records its run a moment
    // later (on a loaded machine, later than the report is seen): wait for the record.
    let recorded = Instant::now();
    while s.runs("b") == 0 && recorded.elapsed() < LONG_WAIT {
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(s.runs("b"), 1);
    worker.child.kill().unwrap();
    worker.child.wait().unwrap();

    let worker_2 = s.worker(WORKER_2, &second, "worker-2");
    let p =
        s.wait_for(&id, "succeeded", LONG_WAIT, &[&worker, &worker_2], complete("succeeded")).await;
    assert!(
        p["diagnosticEvents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["message"] == "AgendaProgress timed out."),
        "the reclaim is on record: {p:#}"
    );
    assert_eq!((s.runs("a"), s.runs("b"), s.runs("c")), (1, 2, 1));
    assert_eq!(s.payload("c"), json!({"b": 1}));
}

/// An agenda whose pending operations can never become ready fails at once with a diagnostic
/// naming them. Submission rejects unknown names and cycles, so the dead end is made the only
/// way it can arise: an earlier executor reported `a` failed while `b` still ran and then
/// vanished; after the reclaim, `c` (which needs `a`) can never run in this attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlocked_agenda_fails_naming_the_blocked_operations() {
    let s = Setup::start(&["--lease", "1", "--reclaim-interval", "1"]).await;
    let handlers = s.handlers("handlers.toml", "");
    let id = s
        .submit(json!({
            "customerId": "acme", "title": "dead end",
            "operations": [
                {"name": "a", "type": "step", "payload": {}},
                {"name": "b", "type": "step", "payload": {}},
                {"name": "c", "type": "step", "payload": {"a": "@<a.out>"}, "params": {"dependsOn": "b"}}
            ]
        }))
        .await;
    // The vanished commands, played by hand.
    let deadline = Instant::now() + WAIT;
    loop {
        let data = s
            .pop
            .ok(
                WORKER_1,
                "mutation { getAgenda(insightId: \"work\", count: 1) { agenda { id } } }",
                json!({}),
            )
            .await;
        if data["getAgenda"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the agenda was never queued");
        tokio::time::sleep(POLL).await;
    }
    s.pop
        .ok(
            WORKER_1,
            "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { position } }",
            json!({"p": {"id": id, "processingState": "EXECUTING", "operationProgress": [
                {"operation": "a", "processingState": "COMPLETE", "processingStateMessage": "failed"},
                {"operation": "b", "processingState": "EXECUTING", "percentComplete": 10}
            ]}}),
        )
        .await;
    // Reclaimed (lease 1 s, reclaimer every second) and queued again before the worker starts.
    s.wait_for(&id, "reclaimed", LONG_WAIT, &[], |p| {
        p["diagnosticEvents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["message"] == "AgendaProgress timed out.")
    })
    .await;
    let worker = s.worker(WORKER_2, &handlers, "worker");
    let p = s.wait_for(&id, "failed", LONG_WAIT, &[&worker], complete("failed")).await;
    let messages: Vec<&str> = p["diagnosticEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["message"].as_str())
        .collect();
    let deadlock = messages
        .iter()
        .find(|m| m.starts_with("deadlock:"))
        .unwrap_or_else(|| panic!("no deadlock diagnostic in {messages:?}"));
    assert!(deadlock.starts_with("deadlock: operations c can never become ready"), "{deadlock}");
    assert!(
        deadlock.contains("\"a\" (it is COMPLETE/failed from an earlier attempt)"),
        "{deadlock}"
    );
    // Nothing ran: the dead end was known before anything started.
    assert_eq!((s.runs("a"), s.runs("b"), s.runs("c")), (0, 0, 0));
}

/// SIGTERM stops a worker gracefully: it claims nothing more, lets the running operation
/// finish within the grace period, reports it (the final report), releases the agenda under its
/// lease and exits 0. The agenda is back in its queue at once, although the lease lasts ten
/// minutes, and another worker resumes it without re-running what finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_running_operation_reports_it_and_releases_the_agenda() {
    let s = Setup::start(&["--lease", "600", "--reclaim-interval", "1"]).await;
    let slow = format!(
        "[handlers.slow]\nkind = \"local\"\ncommand = [{:?}]\ntimeout_seconds = 60\n\
         env = {{ POP_RECORD_DIR = {:?}, STEP_SLEEP = \"1\" }}\n",
        examples().join("handlers/step.sh"),
        s.record()
    );
    let handlers = s.handlers("handlers.toml", &slow);
    let mut worker = s.worker(WORKER_1, &handlers, "worker-1");
    let id = s
        .submit(json!({
            "customerId": "acme", "title": "stopped",
            "operations": [
                {"name": "a", "type": "slow", "payload": {"n": 1}},
                {"name": "b", "type": "step", "payload": {"a": "@<a.out::/input/n>"}}
            ]
        }))
        .await;
    s.wait_for(&id, "running a", LONG_WAIT, &[&worker], |p| {
        op(p, "a")["processingState"] == "EXECUTING"
    })
    .await;
    let pid = worker.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker did not stop\n{}", log_tail(&worker.log));
        tokio::time::sleep(POLL).await;
    };
    assert!(status.success(), "{status}\n{}", log_tail(&worker.log));
    let p = s.progress(&id).await;
    assert_eq!(op(&p, "a")["processingStateMessage"], "succeeded", "the final report: {p:#}");
    // Released: waiting in its queue again, not held under the ten-minute lease.
    assert_eq!(p["processingState"], "WAITING", "{p:#}\n{}", log_tail(&worker.log));
    assert_eq!((s.runs("a"), s.runs("b")), (1, 0), "b was not started after the signal");

    let worker_2 = s.worker(WORKER_2, &handlers, "worker-2");
    s.wait_for(&id, "succeeded", WAIT, &[&worker, &worker_2], complete("succeeded")).await;
    assert_eq!((s.runs("a"), s.runs("b")), (1, 1));
    assert_eq!(s.payload("b"), json!({"a": 1}));
}

/// The heartbeat is sized from the lease `getAgenda` answers: with the default heartbeat
/// (30 s) and a 2 s server lease, an operation that prints nothing for 5 s keeps its lease and
/// runs once, and the worker prints no lease warning, because the settings are safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_operation_keeps_a_short_lease_with_the_default_heartbeat() {
    let s = Setup::start(&["--lease", "2", "--reclaim-interval", "1"]).await;
    let quiet = format!(
        "[handlers.slow]\nkind = \"local\"\ncommand = [{:?}]\ntimeout_seconds = 60\n\
         env = {{ POP_RECORD_DIR = {:?}, STEP_SLEEP = \"5\" }}\n",
        examples().join("handlers/step.sh"),
        s.record()
    );
    let handlers = s.handlers("handlers.toml", &quiet);
    let worker = s.worker_with(WORKER_1, &handlers, "worker-1", &[]);
    let id = s
        .submit(json!({"customerId": "acme", "title": "quiet",
                       "operations": [{"name": "a", "type": "slow", "payload": {"n": 1}}]}))
        .await;
    let p = s.wait_for(&id, "succeeded", LONG_WAIT, &[&worker], complete("succeeded")).await;
    assert_eq!(s.runs("a"), 1, "reclaimed and run again: {p:#}\n{}", log_tail(&worker.log));
    assert!(p["diagnosticEvents"].as_array().unwrap().is_empty(), "no reclaim on record: {p:#}");
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(!log.contains("--lease"), "a lease warning with safe settings:\n{log}");
}

/// Two executors share one service token. The first claims an agenda and goes quiet; its
/// lease runs out, the reclaimer requeues the agenda, and the second claims it. The first
/// then wakes up and reports, and would fail the agenda (it has no handler for the type): the
/// report carries its superseded lease, so the server refuses it and the stale executor stops;
/// the agenda's fate is the second's to decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_executor_sharing_the_token_is_refused_by_its_lease() {
    use std::sync::Arc;

    use pop_worker::api::{GraphqlApi, WorkApi};
    use pop_worker::execute::{ExecConfig, ExecEnv, Outcome, execute};
    use pop_worker::handler::Registry;

    let s = Setup::start(&["--lease", "2", "--reclaim-interval", "1"]).await;
    let handlers = s.handlers("handlers.toml", "");
    let (registry, _) = pop_worker::config::load(&handlers).unwrap();
    let env = |api: GraphqlApi, registry: Registry| ExecEnv {
        api: Arc::new(api),
        registry: Arc::new(registry),
        config: ExecConfig::default(),
    };
    let stale = GraphqlApi::new(&s.pop.base(), WORKER_1).unwrap();
    let fresh = GraphqlApi::new(&s.pop.base(), WORKER_1).unwrap();
    let id = s
        .submit(json!({"customerId": "acme", "title": "shared token",
                       "operations": [{"name": "a", "type": "step", "payload": {"n": 1}}]}))
        .await;
    let claim = |api: GraphqlApi, what: &'static str| async move {
        let deadline = Instant::now() + LONG_WAIT;
        loop {
            let mut claimed = api.get_agenda("work", 1, Duration::ZERO).await.unwrap();
            if let Some(c) = claimed.pop() {
                return (api, c);
            }
            assert!(Instant::now() < deadline, "{what}: nothing to claim");
            tokio::time::sleep(POLL).await;
        }
    };
    let (stale, first) = claim(stale, "the first claim").await;
    assert_eq!(first.agenda.id, id);
    let first_lease = first.lease.clone().expect("getAgenda answers the lease");
    // The lease runs out and the agenda is requeued; the second executor claims it.
    let (fresh, second) = claim(fresh, "the claim after the reclaim").await;
    let second_lease = second.lease.clone().expect("getAgenda answers the lease");
    assert_ne!(first_lease.id, second_lease.id);

    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let outcome =
        execute(&env(stale, Registry::with_builtins()), first, None, shutdown.clone()).await;
    assert!(
        matches!(&outcome, Outcome::Refused(m) if m.starts_with("CONFLICT")),
        "the stale executor's report was not refused: {outcome:?}"
    );
    let outcome = execute(&env(fresh, registry), second, None, shutdown).await;
    assert_eq!(outcome, Outcome::Succeeded);
    s.wait_for(&id, "succeeded", WAIT, &[], complete("succeeded")).await;
    assert_eq!(s.runs("a"), 1);
}

/// Runs `pop <args>` from the repository root (where the README's commands run), bounded by
/// [`WAIT`]; returns its exit success and stdout.
fn pop_cli(args: &[&str]) -> (bool, String) {
    let mut child = pop_command()
        .args(args)
        .current_dir(examples().join(".."))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning pop");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pop {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(POLL);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        eprintln!("pop {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), stdout)
}

/// The README's five-minute tour as written: `pop serve --dev` (which sets up pool, customer
/// and insight; the commands are checked against README.md), a worker on the bundled
/// `examples/handlers.toml` with the example scripts, `pop submit` of `examples/encode.json` and `examples/fanout.json`, and `pop progress --json`: both agendas
/// succeed with the outputs the README and the scripts describe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // The tour's first command: `pop serve --dev` sets up pool, customer and insight itself.
    let readme = std::fs::read_to_string(examples().join("../README.md")).unwrap();
    let tour = &readme[readme.find("## A five-minute tour").expect("the tour section")..];
    let tour = &tour[..tour.find("\n## ").unwrap_or(tour.len())];
    for command in [
        "cargo run --release -- serve --dev",
        "pop worker --insight encode --handlers examples/handlers.toml",
        "pop submit --watch examples/encode.json",
    ] {
        assert!(tour.contains(command), "the tour runs {command:?}");
    }
    let pop = Pop::start_with(
        &dir.path().join("data"),
        None,
        &dir.path().join("pop.log"),
        true,
        &["--dev"],
    );
    let server = pop.base();
    let client = ["--server", server.as_str(), "--token", pop.admin.as_str()];
    // `--dev` sets up once serving; a person starts the worker after reading its lines.
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, out) = pop_cli(&[&["insights", "--json"][..], &client].concat());
        if ok && out.contains("\"encode\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "--dev created no insight: {out}\n{}",
            log_tail(&pop.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hint `--dev` prints names the server and the data directory it was started with, and
    // a client given just those finds the admin token (newcomer6: it named neither).
    let data = dir.path().join("data");
    let hint = format!("pop worker --server {server} --data-dir {}", data.display());
    loop {
        let said = pop.stdout();
        if said.contains("--dev: next") {
            assert!(said.contains(&hint), "no {hint:?} in\n{said}");
            break;
        }
        assert!(Instant::now() < deadline, "--dev printed no hint:\n{said}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let told = ["--server", server.as_str(), "--data-dir", data.to_str().unwrap()];
    let (ok, out) = pop_cli(&[&["insights", "--json"][..], &told].concat());
    assert!(ok && out.contains("\"encode\""), "{out}");

    // `pop worker --insight encode --handlers examples/handlers.toml` (shorter idle polls).
    let worker_log = dir.path().join("worker.log");
    let worker = Worker {
        child: pop_command()
            .arg("worker")
            .args(client)
            .args(["--insight", "encode", "--handlers", "examples/handlers.toml"])
            .args(["--max-idle-ms", "200"])
            .env("TMPDIR", dir.path())
            .current_dir(examples().join(".."))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&worker_log).unwrap()))
            .spawn()
            .expect("spawning pop worker"),
        log: worker_log,
    };

    // `pop submit FILE` prints `submitted agenda <id>`; retried while the insight `--dev`
    // creates is not yet there (a person typing is slower than the test).
    let submit = |file: &'static str| {
        let log = pop.log.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let (ok, out) = pop_cli(&[&["submit"][..], &client, &[file]].concat());
                if ok {
                    let id = out
                        .lines()
                        .find_map(|l| l.strip_prefix("submitted agenda "))
                        .unwrap_or_else(|| panic!("no agenda id in {out}"));
                    assert!(out.contains("insight      encode (pool farm)"), "{out}");
                    return id.trim().to_string();
                }
                assert!(Instant::now() < deadline, "pop submit {file} failed\n{}", log_tail(&log));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // `pop progress <id> --json` until the agenda is complete.
    let finished = |id: String| {
        let (pop_log, worker_log) = (pop.log.clone(), worker.log.clone());
        async move {
            let deadline = Instant::now() + LONG_WAIT;
            loop {
                let (ok, out) = pop_cli(&[&["progress"][..], &client, &[&id, "--json"]].concat());
                if ok {
                    let p: Value = serde_json::from_str(&out).unwrap();
                    if p["processingState"] == "COMPLETE" {
                        return p;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "agenda {id} did not complete: {out}\nworker log:\n{}\nserver log:\n{}",
                    log_tail(&worker_log),
                    log_tail(&pop_log)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let encode = submit("examples/encode.json").await;
    let fanout = submit("examples/fanout.json").await;

    let p = finished(encode.clone()).await;
    assert_eq!(p["processingStateMessage"], "succeeded", "{p:#}");
    let ops = p["operationProgress"].as_array().unwrap();
    assert_eq!(ops.len(), 4, "{p:#}");
    for o in ops {
        assert_eq!(o["processingStateMessage"], "succeeded", "{o:#}");
    }
    // `@<probe.out::/streams>` is the `streams` field of probe's output.
    let streams = json!([{"codec": "h264"}, {"codec": "aac"}]);
    assert_eq!(op(&p, "probe")["resultPayload"], json!({"streams": streams, "duration": 42}));
    assert_eq!(
        op(&p, "encode")["resultPayload"],
        json!({"file": "out/encode.bin",
               "input": {"input": streams, "preset": "slow", "agenda": encode}})
    );
    assert_eq!(
        op(&p, "thumbnail")["resultPayload"],
        json!({"file": "out/thumbnail.bin", "input": {"at": 42}})
    );
    assert_eq!(
        op(&p, "package")["resultPayload"]["input"],
        json!({"video": op(&p, "encode")["resultPayload"], "poster": "out/thumbnail.bin"})
    );

    // The generator: `split` outputs four `part-N` operations and a `join` collecting them.
    let p = finished(fanout.clone()).await;
    assert_eq!(p["processingStateMessage"], "succeeded", "{p:#}");
    let names: Vec<&str> = p["operationProgress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["operation"].as_str())
        .collect();
    assert_eq!(names.len(), 8, "probe, split, announce, part-1…4, join: {names:?}");
    for o in p["operationProgress"].as_array().unwrap() {
        assert_eq!(o["processingStateMessage"], "succeeded", "{o:#}");
    }
    assert_eq!(op(&p, "split")["resultPayload"]["parts"], 4);
    for i in 1..=4 {
        assert_eq!(
            op(&p, &format!("part-{i}"))["resultPayload"]["input"],
            json!({"part": i, "of": 4})
        );
    }
    assert_eq!(op(&p, "join")["resultPayload"]["input"], json!({"parts": [1, 2, 3, 4]}));
    // The default lease (5 min) and heartbeat (30 s) are safe: no lease warning.
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(!log.contains("--lease"), "{log}");
    drop(worker);
}
