//! `pop worker` through a storage outage, end to end: the worker talks to the real `pop serve`
//! through a small proxy in this test that answers its first `getAgenda`, its first two
//! `updateAgendaProgress` and its first five `expandAgenda` calls the way the server does
//! while its store cannot write (UNAVAILABLE with `retryable`, `retryAfterSeconds: 1` and
//! `Retry-After: 1`; nothing forwarded, so nothing was done), and forwards everything else.
//! The worker must send those calls again no sooner than the server asked, run the agenda —
//! a generator among its operations — to success, and count no failure. (Five refused
//! expansions outlast what the worker tried before it honoured the outage: five attempts
//! 0.1–0.8 s apart, after which the generator failed.) Every wait is bounded.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use support::{Pop, WAIT, log_tail, pop_command};

const ACME: &str = "tok_wout_acme_user_00000000000000";
const WORKER: &str = "tok_wout_worker_0000000000000000";

/// How many calls of each kind the proxy answers UNAVAILABLE before it forwards them.
const CLAIM_OUTAGES: usize = 1;
const REPORT_OUTAGES: usize = 2;
const EXPAND_OUTAGES: usize = 5;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    claims_refused: Arc<AtomicUsize>,
    reports_refused: Arc<AtomicUsize>,
    expansions_refused: Arc<AtomicUsize>,
    /// When each refused call arrived, by kind.
    refused_at: Arc<Mutex<Vec<(&'static str, Instant)>>>,
}

fn unavailable() -> Response {
    let body = json!({"errors": [{"message": "the event store cannot write: disk full",
        "extensions": {"code": "UNAVAILABLE", "retryable": true, "retryAfterSeconds": 1}}]});
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response.headers_mut().insert("retry-after", "1".parse().unwrap());
    response
}

async fn forward(State(proxy): State<Proxy>, headers: HeaderMap, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let outage = |counter: &AtomicUsize, limit: usize| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1))
            .is_ok()
    };
    let refuse = |kind: &'static str| {
        proxy.refused_at.lock().unwrap().push((kind, Instant::now()));
        unavailable()
    };
    if text.contains("getAgenda(") && outage(&proxy.claims_refused, CLAIM_OUTAGES) {
        return refuse("getAgenda");
    }
    if text.contains("updateAgendaProgress(") && outage(&proxy.reports_refused, REPORT_OUTAGES) {
        return refuse("updateAgendaProgress");
    }
    if text.contains("expandAgenda(") && outage(&proxy.expansions_refused, EXPAND_OUTAGES) {
        return refuse("expandAgenda");
    }
    let mut request = proxy.http.post(format!("{}/graphql", proxy.upstream)).body(body.to_vec());
    for name in ["authorization", "content-type", "traceparent"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn start_proxy(upstream: String) -> (Proxy, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_proxy_on(upstream, listener)
}

fn start_proxy_on(upstream: String, listener: tokio::net::TcpListener) -> (Proxy, String) {
    let proxy = Proxy {
        upstream,
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        claims_refused: Arc::default(),
        reports_refused: Arc::default(),
        expansions_refused: Arc::default(),
        refused_at: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/graphql", axum::routing::post(forward))
        .with_state(proxy.clone());
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (proxy, base)
}

/// The token file in `dir`: acme's user and its worker.
fn write_tokens(dir: &std::path::Path) -> std::path::PathBuf {
    let tokens = json!([
        {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
        {"token": WORKER, "name": "worker", "role": "service", "customers": ["acme"]},
    ]);
    let token_file = dir.join("tokens.json");
    std::fs::write(&token_file, tokens.to_string()).unwrap();
    token_file
}

struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_its_agenda_through_an_outage_and_counts_no_failure() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_tokens(dir.path());
    let pop =
        Pop::start(&dir.path().join("data"), Some(&token_file), &dir.path().join("pop.log"), true);
    let position = pop.seed_work(&["log", "agendaUpdate"]).await;
    let (proxy, proxy_base) = start_proxy(pop.base()).await;

    let agenda = json!({"id": "through-outage", "customerId": "acme", "title": "outage",
    "operations": [
        {"name": "one", "type": "log", "payload": {"message": "one"}},
        {"name": "two", "type": "log", "payload": {"message": "two"}},
        {"name": "more", "type": "agendaUpdate",
         "payload": {"operations": [{"name": "generated", "type": "log", "payload": {}}]},
         "params": {"agenda.operation.generator": {"operationsJsonPointer": "/operations"}}}
    ]});
    let data = pop
        .ok(
            ACME,
            "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
             { agenda { id } } }",
            json!({"a": agenda, "p": position}),
        )
        .await;
    let id = data["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string();

    let log = dir.path().join("worker.log");
    let mut cmd = pop_command();
    cmd.args(["worker", "--server", &proxy_base, "--token", WORKER, "--insight", "work"])
        .args(["--report-interval-ms", "50", "--max-idle-ms", "200"])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut worker = Worker { child: cmd.spawn().unwrap(), log };

    let deadline = Instant::now() + WAIT + Duration::from_secs(10);
    let progress = loop {
        let data = pop
            .ok(
                ACME,
                "query($id: String!) { agendaProgress(id: $id) { processingState \
                 processingStateMessage operationProgress { operation processingState } } }",
                json!({"id": id}),
            )
            .await;
        let p = data["agendaProgress"].clone();
        if p["processingState"] == "COMPLETE" {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "not COMPLETE in time: {p}\nworker:\n{}\nserver:\n{}",
            log_tail(&worker.log),
            log_tail(&pop.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The outage happened, and cost nothing: the agenda succeeded on its first attempt.
    assert_eq!(proxy.claims_refused.load(Ordering::SeqCst), CLAIM_OUTAGES);
    assert_eq!(proxy.reports_refused.load(Ordering::SeqCst), REPORT_OUTAGES);
    assert_eq!(proxy.expansions_refused.load(Ordering::SeqCst), EXPAND_OUTAGES);
    // No refused call was sent again sooner than the second the server asked for.
    let refused = proxy.refused_at.lock().unwrap().clone();
    for kind in ["updateAgendaProgress", "expandAgenda"] {
        let times: Vec<Instant> =
            refused.iter().filter(|(k, _)| *k == kind).map(|(_, at)| *at).collect();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(990), "{kind} sent again after {gap:?}");
        }
    }
    let ops = progress["operationProgress"].as_array().unwrap();
    let generated = ops.iter().find(|o| o["operation"] == "generated");
    assert!(
        generated.is_some_and(|o| o["processingState"] == "COMPLETE"),
        "the generated operation did not run: {progress}"
    );
    assert_eq!(progress["processingStateMessage"], "succeeded", "{progress}");

    // Stopped with SIGTERM, the worker counts one success and no failure.
    let pid = worker.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let stdout = worker.child.stdout.take().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut text).unwrap();
        text
    });
    let output = tokio::time::timeout(WAIT, output).await.expect("the worker stops").unwrap();
    let stopped =
        output.lines().find(|l| l.starts_with("pop: worker stopped")).unwrap_or_else(|| {
            panic!("no stop line in {output:?}\nworker:\n{}", log_tail(&worker.log))
        });
    assert!(
        stopped.contains("1 succeeded, 0 failed, 0 cancelled, 0 refused"),
        "{stopped}\nworker:\n{}",
        log_tail(&worker.log)
    );
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(
        log.contains("the server cannot serve right now; sending again"),
        "the worker never said it waited out the outage:\n{log}"
    );
}

/// A worker started before its server waits for it, saying so, and works once it answers
/// (newcomer61 L2: it gave up after 10 s, where a running worker waits through a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_its_server_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_tokens(dir.path());
    // An address nothing listens on yet.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let log = dir.path().join("worker.log");
    let mut cmd = pop_command();
    cmd.args(["worker", "--server", &format!("http://{address}"), "--token", WORKER])
        .args(["--insight", "work", "--report-interval-ms", "50", "--max-idle-ms", "200"])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut worker = Worker { child: cmd.spawn().unwrap(), log };
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&worker.log)
        .unwrap_or_default()
        .contains("waiting for it to start")
    {
        assert!(
            Instant::now() < deadline,
            "the worker never said it waits:\n{}",
            log_tail(&worker.log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the client's own 10 s of retries, it still waits.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker ended:\n{}",
        log_tail(&worker.log)
    );

    let pop =
        Pop::start(&dir.path().join("data"), Some(&token_file), &dir.path().join("pop.log"), true);
    let position = pop.seed_work(&["log"]).await;
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let _proxy = start_proxy_on(pop.base(), listener);
    let agenda = json!({"id": "after-start", "customerId": "acme", "title": "late server",
        "operations": [{"name": "one", "type": "log", "payload": {"message": "one"}}]});
    pop.ok(
        ACME,
        "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { agenda { id } } }",
        json!({"a": agenda, "p": position}),
    )
    .await;
    let deadline = Instant::now() + WAIT + Duration::from_secs(10);
    loop {
        let data = pop
            .ok(
                ACME,
                "query { agendaProgress(id: \"after-start\") { processingStateMessage } }",
                json!({}),
            )
            .await;
        if data["agendaProgress"]["processingStateMessage"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "not run: {data}\nworker:\n{}", log_tail(&worker.log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = worker.child.kill();
}
