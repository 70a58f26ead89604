//! The PodReaper against a scripted mock of the Kubernetes API (`tower-test`; no API server can
//! run here): the plan picks only pop's finished pods at or past the age bound (abnormal exits by
//! start time), the list is label-selected and paged, every delete carries the listed UID as a
//! precondition, 404 counts as gone, 409 (a re-created pod) as refused, an error mid-batch does
//! not stop the rest, a failed list deletes nothing, a dry run only lists, and each delete is a
//! span in its cycle's `pass` span.

#![cfg(feature = "kube")]
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use pop_domain::Timestamp;
use pop_reapers::pods::{PodReaper, PodReaperConfig, PodReport, labels, plan};
use pop_reapers::process;
use serde_json::{Value, json};

fn t(rfc3339: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

struct PodSpec<'a> {
    name: &'a str,
    phase: &'a str,
    finished: Option<&'a str>,
    started: Option<&'a str>,
    pops: bool,
}

fn pod_json(p: &PodSpec<'_>) -> Value {
    let labels = if p.pops {
        json!({ labels::MANAGED_BY: "pop", labels::AGENDA_ID: format!("agenda-{}", p.name), labels::OPERATION_NAME: "probe" })
    } else {
        json!({ "app": "other" })
    };
    let mut status = json!({ "phase": p.phase });
    if let Some(s) = p.started {
        status["startTime"] = json!(s);
    }
    if let Some(f) = p.finished {
        status["containerStatuses"] = json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 0, "finishedAt": f, "startedAt": "2026-01-01T00:00:00Z" } }
        }]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": "work",
            "uid": format!("uid-{}", p.name),
            "labels": labels,
            "creationTimestamp": "2026-01-01T00:00:00Z"
        },
        "status": status
    })
}

fn pod(p: PodSpec<'_>) -> Pod {
    serde_json::from_value(pod_json(&p)).unwrap()
}

fn done<'a>(name: &'a str, finished: &'a str) -> PodSpec<'a> {
    PodSpec { name, phase: "Succeeded", finished: Some(finished), started: None, pops: true }
}

fn config(hours: u64) -> PodReaperConfig {
    PodReaperConfig { reap_age: Duration::from_secs(hours * 3600), ..PodReaperConfig::default() }
}

fn names(actions: &[pop_reapers::pods::PodAction]) -> Vec<&str> {
    actions.iter().map(|a| a.name.as_str()).collect()
}

#[test]
fn plan_takes_only_pops_finished_pods_at_or_past_the_age() {
    let pods = vec![
        done("at-bound", "2026-01-02T00:00:00Z"),
        done("newer", "2026-01-02T00:00:01Z"),
        done("older", "2026-01-01T12:00:00Z"),
        PodSpec { phase: "Failed", ..done("failed", "2026-01-01T13:00:00Z") },
        PodSpec { phase: "Running", ..done("running", "2026-01-01T00:00:00Z") },
        PodSpec { pops: false, ..done("not-ours", "2026-01-01T00:00:00Z") },
        // Evicted before any container finished: judged by its start time.
        PodSpec {
            name: "evicted",
            phase: "Failed",
            finished: None,
            started: Some("2026-01-01T18:00:00Z"),
            pops: true,
        },
    ]
    .into_iter()
    .map(pod)
    .collect::<Vec<_>>();
    let now = t("2026-01-03T00:00:00Z");
    let actions = plan(now, &pods, &config(24));
    assert_eq!(names(&actions), ["older", "failed", "evicted", "at-bound"]);
    assert_eq!(actions[0].uid, "uid-older");
    assert_eq!(actions[0].agenda_id, "agenda-older");
    let batch = {
        let mut c = config(24);
        c.cadence.batch_size = 2;
        c
    };
    assert_eq!(names(&plan(now, &pods, &batch)), ["older", "failed"]);
    assert_eq!(plan(now, &pods, &config(24)), actions, "pure");
}

/// One request the mock saw.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    body: Value,
}

/// Serves the API from `respond(method, path, query) -> (status, body)` and records requests.
fn mock_api(
    respond: impl Fn(&Method, &str, &str) -> (u16, Value) + Send + 'static,
) -> (Api<Pod>, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push(Seen {
                method: method.clone(),
                uri: format!("{path}?{query}"),
                body,
            });
            let (status, body) = respond(&method, &path, &query);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    let client = Client::new(service, "work");
    (Api::namespaced(client, "work"), seen)
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("scripted {reason}"), "reason": reason, "code": code })
}

fn list(items: Vec<Value>, next: Option<&str>) -> Value {
    json!({ "apiVersion": "v1", "kind": "PodList",
            "metadata": { "continue": next.unwrap_or("") }, "items": items })
}

const PODS: &str = "/api/v1/namespaces/work/pods";

/// One pod reaper cycle at `now` (list, plan, then delete unless a dry run).
async fn run_once(api: &Api<Pod>, now: Timestamp, config: &PodReaperConfig) -> PodReport {
    process::cycle(&mut PodReaper::new(api.clone(), config.clone()), now).await
}

#[tokio::test]
async fn a_cycle_deletes_with_uid_preconditions_and_survives_404_409_and_errors() {
    let (api, seen) = mock_api(|method, path, query| {
        let old = "2026-01-01T00:00:00Z";
        match (method.as_str(), path) {
            ("GET", PODS) if !query.contains("continue=") => (
                200,
                list(
                    vec![pod_json(&done("a-deleted", old)), pod_json(&done("b-gone", old))],
                    Some("page-2"),
                ),
            ),
            ("GET", PODS) => (
                200,
                list(
                    vec![
                        pod_json(&done("c-recreated", old)),
                        pod_json(&done("d-error", old)),
                        pod_json(&done("e-deleted", old)),
                        // The server ignored the selector: the re-check must skip it.
                        pod_json(&PodSpec { pops: false, ..done("x-not-ours", old) }),
                    ],
                    None,
                ),
            ),
            ("DELETE", p) if p.ends_with("/b-gone") => (404, status(404, "NotFound")),
            ("DELETE", p) if p.ends_with("/c-recreated") => (409, status(409, "Conflict")),
            ("DELETE", p) if p.ends_with("/d-error") => (500, status(500, "InternalError")),
            ("DELETE", p) => {
                let name = p.rsplit('/').next().unwrap();
                (200, pod_json(&done(name, old)))
            }
            _ => (400, status(400, "BadRequest")),
        }
    });
    let report = run_once(&api, t("2026-01-03T00:00:00Z"), &config(24)).await;
    assert_eq!(
        (report.planned, report.deleted, report.gone, report.refused, report.errors.len()),
        (5, 2, 1, 1, 1),
        "{:?}",
        report.errors
    );
    assert!(report.errors[0].to_string().contains("d-error"));

    let seen = seen.lock().unwrap().clone();
    let lists: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::GET).collect();
    assert_eq!(lists.len(), 2, "two pages");
    for l in &lists {
        assert!(
            l.uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dpop%2Cpop.agendaId"),
            "{}",
            l.uri
        );
    }
    assert!(lists[1].uri.contains("continue=page-2"), "{}", lists[1].uri);
    let mut deletes: Vec<(String, Value)> = seen
        .iter()
        .filter(|s| s.method == Method::DELETE)
        .map(|s| (s.uri.clone(), s.body.clone()))
        .collect();
    deletes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(deletes.len(), 5, "{deletes:?}");
    for (uri, body) in &deletes {
        let name = uri.split('?').next().unwrap().rsplit('/').next().unwrap();
        assert_ne!(name, "x-not-ours");
        assert_eq!(body["preconditions"]["uid"], format!("uid-{name}"), "{uri}: {body}");
    }
}

#[tokio::test]
async fn a_failed_list_deletes_nothing() {
    let (api, seen) = mock_api(|_, _, _| (503, status(503, "ServiceUnavailable")));
    let report = run_once(&api, t("2026-01-03T00:00:00Z"), &config(24)).await;
    assert_eq!((report.planned, report.errors.len()), (0, 1));
    assert!(seen.lock().unwrap().iter().all(|s| s.method == Method::GET));
}

#[tokio::test]
async fn a_dry_run_only_lists() {
    let (api, seen) = mock_api(|method, _, _| match method.as_str() {
        "GET" => (200, list(vec![pod_json(&done("a", "2026-01-01T00:00:00Z"))], None)),
        _ => (400, status(400, "BadRequest")),
    });
    let dry = {
        let mut c = config(24);
        c.cadence.dry_run = true;
        c
    };
    let report = run_once(&api, t("2026-01-03T00:00:00Z"), &dry).await;
    assert_eq!((report.planned, report.skipped, report.deleted), (1, 1, 0));
    assert!(seen.lock().unwrap().iter().all(|s| s.method == Method::GET));
}

/// A span as [`SpanLog`] saw it begin: its name, its parent's name, and its `pod` field.
type Begun = (String, Option<String>, Option<String>);

/// Records each new span.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<Begun>>>);

struct PodField(Option<String>);

impl tracing::field::Visit for PodField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "pod" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let span = ctx.span(id).expect("a new span is registered");
        let parent = span.parent().map(|p| p.name().to_string());
        let mut pod = PodField(None);
        attrs.record(&mut pod);
        self.0.lock().expect("span log").push((span.name().to_string(), parent, pod.0));
    }
}

/// Two old finished pods, each deleted with a 200.
fn two_old_pods_api() -> Api<Pod> {
    let (api, _) = mock_api(|method, path, _| {
        let old = "2026-01-01T00:00:00Z";
        match (method.as_str(), path) {
            ("GET", PODS) => (
                200,
                list(vec![pod_json(&done("a-old", old)), pod_json(&done("b-old", old))], None),
            ),
            ("DELETE", p) => {
                let name = p.rsplit('/').next().unwrap_or_default();
                (200, pod_json(&done(name, old)))
            }
            _ => (400, status(400, "BadRequest")),
        }
    });
    api
}

#[tokio::test]
async fn each_delete_is_a_span_in_its_cycles_pass() {
    use tracing_subscriber::layer::SubscriberExt;
    // tracing caches each callsite's interest process-wide, computed by the first thread that
    // hits it: a sibling test with no subscriber would cache `pod_delete` as "never", and this
    // test would then see no delete spans (CI saw exactly that once). A global registry with
    // no layers makes every thread's answer "always"; the spans still reach only this test's
    // thread-local default below.
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry())
            .expect("no other global subscriber in this test binary");
    });
    let log = SpanLog::default();
    // This test's runtime has one thread: the spawned deletes see this default too.
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(log.clone()));
    // The hazard, made certain rather than left to the scheduler: a thread without a
    // subscriber runs a cycle first, so it is the one that registers the callsites.
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the sibling thread");
        runtime.block_on(async {
            let report =
                run_once(&two_old_pods_api(), t("2026-01-03T00:00:00Z"), &config(24)).await;
            assert_eq!(report.deleted, 2, "{:?}", report.errors);
        });
    })
    .join()
    .expect("the sibling cycle");
    assert!(log.0.lock().unwrap().is_empty(), "the sibling's spans are not this test's");

    let api = two_old_pods_api();
    let report = run_once(&api, t("2026-01-03T00:00:00Z"), &config(24)).await;
    assert_eq!(report.deleted, 2, "{:?}", report.errors);

    let spans = log.0.lock().unwrap().clone();
    let mut deletes: Vec<(Option<String>, Option<String>)> = spans
        .iter()
        .filter(|(name, _, _)| name == "pod_delete")
        .map(|(_, parent, pod)| (parent.clone(), pod.clone()))
        .collect();
    deletes.sort();
    let pass = Some("pass".to_string());
    assert_eq!(
        deletes,
        vec![(pass.clone(), Some("a-old".to_string())), (pass, Some("b-old".to_string()))],
        "{spans:?}"
    );
}
