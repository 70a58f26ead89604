//! OpenTelemetry traces through the real `pop` binaries, into an OTLP/gRPC collector that runs
//! in this test (the protocol's generated server types, recording every span it is sent).
//!
//! With `--otlp-endpoint`, a submission sent with a W3C `traceparent` continues that trace on
//! the server (request, async-graphql, command and append spans), the projections export a
//! span per batch, and a `pop worker` that claims the agenda runs it in the same trace (its
//! agenda, operation and API-call spans, and the server's spans for its reports). Without
//! configuration nothing connects to a collector, and the agenda still hands its
//! `traceparent` to the worker as the client sent it. Every wait is bounded ([`WAIT`]).

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::{Value, json};
use support::{Pop, WAIT, log_tail, pop_command};

const ACME: &str = "tok_trace_acme_user_0000000000000";
const WORKER: &str = "tok_trace_worker_000000000000000";

/// The client's trace: pop's spans for the submission continue it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")
}

/// The vendors' trace data the client sends beside its traceparent: it travels with the trace.
const TRACESTATE: &str = "pop=t61rcWkgMzE,vendor@sys=x";

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    trace_state: String,
    /// The (trace id, span id) of each span it links to.
    links: Vec<(String, String)>,
}

/// The in-process collector: records every span of every export.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    got.push(Got {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        trace_state: span.trace_state,
                        links: span
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Starts it on a free loopback port; the endpoint to give pop.
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until `check` holds for the spans received so far.
    async fn wait_for(
        &self,
        what: &str,
        logs: &[&std::path::Path],
        check: impl Fn(&[Got]) -> bool,
    ) {
        let deadline = Instant::now() + WAIT;
        loop {
            let spans = self.spans();
            if check(&spans) {
                return;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} trace={} parent={}",
                            s.service, s.name, s.trace_id, s.parent_span_id
                        )
                    })
                    .collect();
                let logs: Vec<String> =
                    logs.iter().map(|l| format!("{}:\n{}", l.display(), log_tail(l))).collect();
                panic!(
                    "no {what} within {WAIT:?}; spans:\n{}\n{}",
                    names.join("\n"),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running `pop worker`; killed and reaped on drop.
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

fn start_worker(pop: &Pop, dir: &std::path::Path, env: &[(&str, &str)], extra: &[&str]) -> Worker {
    let log = dir.join("worker.log");
    let mut cmd = pop_command();
    cmd.args(["worker", "--server", &pop.base(), "--token", WORKER, "--insight", "work"])
        .args(["--report-interval-ms", "50", "--max-idle-ms", "200"])
        .args(extra)
        .env("TMPDIR", dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    Worker { child: cmd.spawn().expect("spawning pop worker"), log }
}

/// A server with a pool, customer `acme` and insight `work` taking `log` operations (a
/// built-in of the worker); the position of the last config write.
async fn setup(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> (Pop, String) {
    let tokens = json!([
        {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
        {"token": WORKER, "name": "worker", "role": "service", "customers": ["acme"]},
    ]);
    let token_file = dir.join("tokens.json");
    std::fs::write(&token_file, tokens.to_string()).unwrap();
    let pop = Pop::start_with_env(
        &dir.join("data"),
        Some(&token_file),
        &dir.join("pop.log"),
        true,
        extra,
        env,
    );
    let position = pop.seed_work(&["log"]).await;
    (pop, position)
}

/// The POP JSON of a one-operation agenda of `acme` on insight `work`.
fn agenda_json(id: &str) -> Value {
    json!({"id": id, "customerId": "acme", "title": "traced",
        "operations": [{"name": "hello", "type": "log", "payload": {"message": "hi"}}]})
}

/// Submits a one-operation agenda with the client's `traceparent` and `tracestate` headers;
/// its id.
async fn submit(pop: &Pop, position: &str, id: &str) -> String {
    submit_agenda(pop, position, agenda_json(id)).await
}

/// Submits `agenda` as [`submit`] does; its id.
async fn submit_agenda(pop: &Pop, position: &str, agenda: Value) -> String {
    let response = pop
        .http
        .post(format!("{}/graphql", pop.base()))
        .bearer_auth(ACME)
        .header("traceparent", client_traceparent())
        .header("tracestate", TRACESTATE)
        .json(&json!({
            "query": "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, \
                      atLeastPosition: $p) { agenda { id } } }",
            "variables": {"a": agenda, "p": position},
        }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
    body["data"]["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string()
}

/// Waits (bounded) until the agenda is COMPLETE.
async fn wait_complete(pop: &Pop, id: &str, worker: &Worker) {
    let deadline = Instant::now() + WAIT;
    loop {
        let data = pop
            .ok(
                ACME,
                "query($id: String!) { agendaProgress(id: $id) { processingState } }",
                json!({"id": id}),
            )
            .await;
        if data["agendaProgress"]["processingState"] == "COMPLETE" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agenda {id} not COMPLETE within {WAIT:?}: {data}\nworker:\n{}\nserver:\n{}",
            log_tail(&worker.log),
            log_tail(&pop.log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a timed command's span `name` is in the agenda's trace (the client's), its store
/// command a child of it, and it links to the pass `pass` (a root of its own) that issued it.
fn in_agenda_trace(spans: &[Got], name: &str, pass: &str) -> bool {
    spans.iter().any(|s| {
        s.service == "pop"
            && s.name == name
            && s.trace_id == TRACE_ID
            && s.trace_state == TRACESTATE
            && spans.iter().any(|c| c.name == "command" && c.parent_span_id == s.span_id)
            && s.links.iter().any(|(trace, span)| {
                spans.iter().any(|p| {
                    p.name == pass
                        && p.parent_span_id.is_empty()
                        && p.trace_id == *trace
                        && p.span_id == *span
                })
            })
    })
}

fn named<'a>(spans: &'a [Got], service: &str, name: &str) -> Vec<&'a Got> {
    spans.iter().filter(|s| s.service == service && s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_and_the_workers_execution_share_one_trace() {
    let (collector, endpoint) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Export every 100 ms instead of every 5 s (the standard batch setting).
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let (pop, position) = setup(dir.path(), &["--otlp-endpoint", &endpoint], &env).await;
    let id = submit(&pop, &position, "traced-1").await;

    // The server: the request continues the client's trace, and the command and the append it
    // caused are in it; async-graphql's spans too.
    let logs = [pop.log.as_path()];
    collector
        .wait_for("server spans of the submission", &logs, |spans| {
            let in_trace: Vec<&Got> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
            let has = |name: &str| in_trace.iter().any(|s| s.service == "pop" && s.name == name);
            in_trace.iter().any(|s| s.name == "POST /graphql" && s.parent_span_id == CLIENT_SPAN)
                && has("command")
                && has("append")
                && has("parse")
                && has("execute")
        })
        .await;
    // The projections: a span per batch (a trace of its own: a batch folds many requests).
    collector
        .wait_for("a projection batch span", &logs, |spans| {
            !named(spans, "pop", "projection_batch").is_empty()
        })
        .await;

    let worker = start_worker(&pop, dir.path(), &env, &["--otlp-endpoint", &endpoint]);
    wait_complete(&pop, &id, &worker).await;
    let logs = [pop.log.as_path(), worker.log.as_path()];
    collector
        .wait_for("the worker's spans in the submission's trace", &logs, |spans| {
            let agenda = named(spans, "pop-worker", "agenda");
            let Some(agenda) = agenda.iter().find(|s| s.trace_id == TRACE_ID) else {
                return false;
            };
            let child_of = |parent: &str, name: &str| {
                spans
                    .iter()
                    .any(|s| s.trace_id == TRACE_ID && s.name == name && s.parent_span_id == parent)
            };
            // The agenda's operation and API calls are its children; the server's span for a
            // report is a child of the worker's call.
            let calls: Vec<&Got> = spans
                .iter()
                .filter(|s| {
                    s.service == "pop-worker"
                        && s.name == "api"
                        && s.trace_id == TRACE_ID
                        && s.parent_span_id == agenda.span_id
                })
                .collect();
            child_of(&agenda.span_id, "operation")
                && !calls.is_empty()
                && calls.iter().any(|call| {
                    spans.iter().any(|s| {
                        s.service == "pop"
                            && s.name == "POST /graphql"
                            && s.parent_span_id == call.span_id
                            && s.trace_id == TRACE_ID
                    })
                })
        })
        .await;
    // Nothing of the worker's execution left the trace, and the client's tracestate went
    // with it everywhere: the server's spans, the worker's (which got it from `getAgenda`),
    // and the server's spans for the worker's reports (which the worker sent it with).
    let spans = collector.spans();
    for name in ["agenda", "operation", "api"] {
        for span in named(&spans, "pop-worker", name) {
            assert_eq!(span.trace_id, TRACE_ID, "{span:?}");
            assert_eq!(span.trace_state, TRACESTATE, "{span:?}");
        }
    }
    let server: Vec<&Got> =
        spans.iter().filter(|s| s.service == "pop" && s.trace_id == TRACE_ID).collect();
    assert!(server.len() > 5, "{server:#?}");
    for span in server {
        assert_eq!(span.trace_state, TRACESTATE, "{span:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configuration_nothing_connects_and_the_traceparent_still_reaches_the_worker() {
    // The default OTLP/gRPC endpoint: an exporter started by mistake would send here.
    let mut listeners = Vec::new();
    for addr in ["127.0.0.1:4317", "[::1]:4317"] {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => listeners.push(l),
            Err(e) => eprintln!("note: cannot listen on {addr} ({e}); not watching it"),
        }
    }
    if listeners.is_empty() {
        eprintln!("SKIP: the default OTLP port 4317 is taken on this machine; cannot watch it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A short batch delay, so that an exporter would connect within the test; no endpoint.
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "50")];
    let (pop, position) = setup(dir.path(), &[], &env).await;
    let id = submit(&pop, &position, "untraced-1").await;
    let answer = pop
        .ok(
            WORKER,
            "mutation { getAgenda(insightId: \"work\", count: 1, waitSeconds: 5) \
             { agenda { id } traceparent tracestate } }",
            json!({}),
        )
        .await;
    let claimed = &answer["getAgenda"][0];
    assert_eq!(claimed["agenda"]["id"], id.as_str(), "{answer:#}");
    // No exporter: the agenda keeps the client's trace context as it was sent.
    assert_eq!(claimed["traceparent"], client_traceparent().as_str(), "{answer:#}");
    assert_eq!(claimed["tracestate"], TRACESTATE, "{answer:#}");
    let worker = start_worker(&pop, dir.path(), &env, &[]);
    // The claimed agenda goes back to the queue when its lease ends; a new one is enough.
    let other = submit(&pop, &position, "untraced-2").await;
    wait_complete(&pop, &other, &worker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for listener in &listeners {
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(
            accepted.is_err(),
            "something connected to {:?} without configuration\nserver:\n{}\nworker:\n{}",
            listener.local_addr(),
            log_tail(&pop.log),
            log_tail(&worker.log)
        );
    }
}

/// Claims one agenda of `work` with the worker's token: its id, traceparent and tracestate.
async fn claim(pop: &Pop) -> (String, Value, Value) {
    let answer = pop
        .ok(
            WORKER,
            "mutation { getAgenda(insightId: \"work\", count: 1, waitSeconds: 5) \
             { agenda { id } traceparent tracestate } }",
            json!({}),
        )
        .await;
    let claimed = &answer["getAgenda"][0];
    let id = claimed["agenda"]["id"].as_str().unwrap_or_else(|| panic!("{answer:#}"));
    (id.to_string(), claimed["traceparent"].clone(), claimed["tracestate"].clone())
}

/// Runs `pop submit` on a one-operation agenda `id` with `env` and `extra` flags; asserts
/// that it succeeded.
fn cli_submit(pop: &Pop, dir: &std::path::Path, id: &str, env: &[(&str, &str)], extra: &[&str]) {
    let file = dir.join(format!("{id}.json"));
    std::fs::write(&file, agenda_json(id).to_string()).unwrap();
    let out = pop_command()
        .args(["submit", "--server", &pop.base(), "--token", ACME])
        .args(extra)
        .arg(&file)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pop submit failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The CLI's output is for its user: nothing about its own traces.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("OTLP"), "{out:?}");
}

/// The trace id of a W3C traceparent.
fn trace_id_of(traceparent: &Value) -> String {
    let t = traceparent.as_str().unwrap_or_else(|| panic!("no traceparent: {traceparent}"));
    t.split('-').nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_submission_is_the_root_of_the_agendas_trace() {
    let (collector, endpoint) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let (pop, _) = setup(dir.path(), &["--otlp-endpoint", &endpoint], &env).await;

    // Exporting, with no trace in the environment: the CLI's `client` span is a root, and the
    // server's request span its child; the agenda hands out that trace.
    cli_submit(&pop, dir.path(), "cli-root", &env, &["--otlp-endpoint", &endpoint]);
    let (id, traceparent, tracestate) = claim(&pop).await;
    assert_eq!(id, "cli-root");
    assert_eq!(tracestate, Value::Null);
    let trace = trace_id_of(&traceparent);
    let logs = [pop.log.as_path()];
    collector
        .wait_for("the CLI's span as the root of the submission's trace", &logs, |spans| {
            let Some(client) = named(spans, "pop-cli", "POST /graphql")
                .into_iter()
                .find(|s| s.trace_id == trace && s.parent_span_id.is_empty())
            else {
                return false;
            };
            spans.iter().any(|s| {
                s.service == "pop"
                    && s.name == "POST /graphql"
                    && s.trace_id == trace
                    && s.parent_span_id == client.span_id
            })
        })
        .await;

    // A trace in the environment (`TRACEPARENT`, `TRACESTATE`, as other CLIs take it): the
    // CLI's span continues it, and carries the tracestate on.
    let with_trace = [
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("TRACEPARENT", &client_traceparent()),
        ("TRACESTATE", TRACESTATE),
    ];
    cli_submit(&pop, dir.path(), "cli-child", &with_trace, &["--otlp-endpoint", &endpoint]);
    let (id, traceparent, tracestate) = claim(&pop).await;
    assert_eq!(id, "cli-child");
    assert_eq!(trace_id_of(&traceparent), TRACE_ID);
    assert_eq!(tracestate, TRACESTATE);
    collector
        .wait_for("the CLI's span as a child of the environment's trace", &logs, |spans| {
            let Some(client) = named(spans, "pop-cli", "POST /graphql")
                .into_iter()
                .find(|s| s.trace_id == TRACE_ID && s.parent_span_id == CLIENT_SPAN)
            else {
                return false;
            };
            client.trace_state == TRACESTATE
                && spans.iter().any(|s| {
                    s.service == "pop"
                        && s.name == "POST /graphql"
                        && s.parent_span_id == client.span_id
                })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_the_cli_sends_the_environments_trace_context_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (pop, _) = setup(dir.path(), &[], &[]).await;
    let env = [("TRACEPARENT", client_traceparent()), ("TRACESTATE", TRACESTATE.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cli_submit(&pop, dir.path(), "cli-env", &env, &[]);
    let (id, traceparent, tracestate) = claim(&pop).await;
    assert_eq!(id, "cli-env");
    assert_eq!(traceparent, client_traceparent().as_str());
    assert_eq!(tracestate, TRACESTATE);

    // A malformed TRACEPARENT is no trace context (its tracestate goes with it); none set is
    // none sent.
    let bad = [("TRACEPARENT", "00-nonsense-01"), ("TRACESTATE", TRACESTATE)];
    cli_submit(&pop, dir.path(), "cli-bad", &bad, &[]);
    cli_submit(&pop, dir.path(), "cli-none", &[], &[]);
    for expected in ["cli-bad", "cli-none"] {
        let (id, traceparent, tracestate) = claim(&pop).await;
        assert_eq!(id, expected);
        assert_eq!((traceparent, tracestate), (Value::Null, Value::Null), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agendas_trace_shows_its_queueing_and_reclaiming_and_the_batches_that_applied_it() {
    let (collector, endpoint) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    // Leases of 2 s, reclaimed every second.
    let flags = ["--otlp-endpoint", &endpoint, "--lease", "2", "--reclaim-interval", "1"];
    let (pop, position) = setup(dir.path(), &flags, &env).await;
    let id = submit(&pop, &position, "scheduled-1").await;
    // Claimed and never reported on: the reclaimer takes it back when the lease ends.
    let (claimed, _, _) = claim(&pop).await;
    assert_eq!(claimed, id);

    let logs = [pop.log.as_path()];
    collector
        .wait_for("the scheduler's queue span in the agenda's trace", &logs, |spans| {
            in_agenda_trace(spans, "queue", "scheduler pass")
        })
        .await;
    collector
        .wait_for("the reclaimer's reclaim span in the agenda's trace", &logs, |spans| {
            in_agenda_trace(spans, "reclaim", "reclaimer pass")
        })
        .await;
    // The projections' batches link to the traces of the events they apply.
    collector
        .wait_for("a projection batch linked to the agenda's trace", &logs, |spans| {
            named(spans, "pop", "projection_batch")
                .iter()
                .any(|b| b.links.iter().any(|(trace, _)| trace == TRACE_ID))
        })
        .await;
    for batch in named(&collector.spans(), "pop", "projection_batch") {
        assert!(batch.links.len() <= 32, "{batch:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_reapers_reap_of_an_agenda_is_in_the_agendas_trace() {
    let (collector, endpoint) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    // A doNotRun agenda only waits; with an age of 0 the data reaper takes it on its next
    // cycle, every second.
    let flags =
        ["--otlp-endpoint", &endpoint, "--data-reap-interval", "1", "--agenda-reap-age", "0s"];
    let (pop, position) = setup(dir.path(), &flags, &env).await;
    let mut agenda = agenda_json("reaped-1");
    agenda["params"] = json!({"doNotRun": true});
    let id = submit_agenda(&pop, &position, agenda).await;
    assert_eq!(id, "reaped-1");

    let logs = [pop.log.as_path()];
    collector
        .wait_for("the data reaper's reap span in the agenda's trace", &logs, |spans| {
            in_agenda_trace(spans, "reap", "data pass")
        })
        .await;
}
