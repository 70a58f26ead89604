//! The Kubernetes pod handler against a scripted kube API (tower-test): no Kubernetes API
//! server can run where these tests run, so each test plays the API server's side request by
//! request — create, polls with annotations and phases, logs, delete — and checks what the
//! handler asked for and what it made of the answers.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use pop_worker::handler::{Handler, OperationContext, Progress, ProgressSink};
use pop_worker::pod::{self, KubePod};

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn pair(timeout: Duration) -> (KubePod, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let pod = KubePod {
        client,
        namespace: "farm".into(),
        image: "registry.example/encode:1".into(),
        command: vec!["/encode".into()],
        service_account: Some("pop-handler".into()),
        timeout,
        poll: Duration::from_millis(5),
    };
    (pod, handle)
}

fn ctx(payload: Value) -> OperationContext {
    OperationContext {
        agenda_id: "01a2-agenda".into(),
        customer_id: "acme".into(),
        insight_id: "encode".into(),
        resource_pool_id: "farm".into(),
        operation_name: "Encode Video #1".into(),
        operation_type: "encode".into(),
        payload,
        params: Default::default(),
    }
}

fn recorder() -> (ProgressSink, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (Arc::new(move |p| s.lock().unwrap().push(p)), seen)
}

/// A pod as the API server returns it.
fn pod_json(phase: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pop-encode-video-1-abcde", "namespace": "farm", "annotations": annotations},
        "status": {"phase": phase}
    })
}

fn respond(send: mock::SendResponse<Response<Body>>, status: u16, body: Vec<u8>) {
    send.send_response(Response::builder().status(status).body(Body::from(body)).unwrap());
}

/// Takes the next request, checks method and path, and returns its body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (Value, mock::SendResponse<Response<Body>>) {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert!(
        request.uri().to_string().starts_with(path),
        "{} does not start with {path}",
        request.uri()
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (body, send)
}

const PODS: &str = "/api/v1/namespaces/farm/pods";
const POD: &str = "/api/v1/namespaces/farm/pods/pop-encode-video-1-abcde";

fn env_of(created: &Value, name: &str) -> Option<String> {
    created["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap().to_string())
}

/// A handler image written for POP runs unchanged: it finds its payload, ids and own pod name
/// under POP's names (`PAYLOAD`, `AGENDA_ID`, `CUSTOMER_ID`, `OPERATION_NAME`, `MY_POD_NAME`
/// from the downward API), and the whole OperationProgress POP's `KubernetesReporter` writes
/// into `pop.report.progress` is read for its percent and message (newcomer7: no payload, no
/// pod name, and no progress shown).
#[tokio::test]
async fn a_handler_image_written_for_pop_finds_its_inputs_and_its_progress_is_read() {
    let (handler, mut handle) = pair(Duration::from_secs(30));
    let (sink, seen) = recorder();
    let run = tokio::spawn(async move { handler.run(ctx(json!({"src": "in.mov"})), sink).await });

    let (created, send) = expect(&mut handle, Method::POST, PODS).await;
    assert_eq!(env_of(&created, "PAYLOAD").unwrap(), r#"{"src":"in.mov"}"#);
    assert_eq!(env_of(&created, "AGENDA_ID").unwrap(), "01a2-agenda");
    assert_eq!(env_of(&created, "CUSTOMER_ID").unwrap(), "acme");
    assert_eq!(env_of(&created, "OPERATION_NAME").unwrap(), "Encode Video #1");
    for own in ["MY_POD_NAME", "POP_POD_NAME"] {
        let var = created["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == own)
            .unwrap_or_else(|| panic!("no {own}: {created:#}"))
            .clone();
        assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name", "{var:#}");
    }
    respond(send, 201, serde_json::to_vec(&pod_json("Pending", json!({}))).unwrap());

    let (_, send) = expect(&mut handle, Method::GET, POD).await;
    let progress = json!({"operation": "Encode Video #1", "processingState": "EXECUTING",
        "processingStateMessage": "encoding", "percentComplete": "45.5"});
    respond(
        send,
        200,
        serde_json::to_vec(&pod_json(
            "Running",
            json!({"pop.report.progress": progress.to_string()}),
        ))
        .unwrap(),
    );
    let (_, send) = expect(&mut handle, Method::GET, POD).await;
    let done = json!({"processingState": "COMPLETE", "processingStateMessage": "succeeded",
        "percent": null, "percentComplete": 100.0});
    respond(
        send,
        200,
        serde_json::to_vec(&pod_json(
            "Succeeded",
            json!({"pop.report.progress": done.to_string(), "pop.report.payload": "{\"ok\": true}"}),
        ))
        .unwrap(),
    );
    assert_eq!(run.await.unwrap().unwrap(), json!({"ok": true}));
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![
            Progress { percent: Some(45.5), message: Some("encoding".into()) },
            Progress { percent: Some(100.0), message: Some("succeeded".into()) },
        ]
    );
    drop(handle);
}

#[tokio::test]
async fn a_pod_is_created_with_pops_labels_followed_through_its_annotations_and_left_for_the_reaper()
 {
    let (handler, mut handle) = pair(Duration::from_secs(30));
    let (sink, seen) = recorder();
    let run = tokio::spawn(async move { handler.run(ctx(json!({"src": "in.mov"})), sink).await });

    let (created, send) = expect(&mut handle, Method::POST, PODS).await;
    let labels = &created["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "pop");
    assert_eq!(labels["pop.insightId"], "encode");
    assert_eq!(labels["pop.resourcePoolId"], "farm");
    assert_eq!(labels["pop.agendaId"], "01a2-agenda");
    assert_eq!(labels["pop.operationName"], "Encode_Video__1", "label values are sanitized");
    assert_eq!(created["metadata"]["annotations"]["pop.operationName"], "Encode Video #1");
    assert_eq!(created["metadata"]["generateName"], "pop-encode-video--1-");
    assert_eq!(created["spec"]["restartPolicy"], "Never");
    assert_eq!(created["spec"]["serviceAccountName"], "pop-handler");
    assert_eq!(created["spec"]["containers"][0]["image"], "registry.example/encode:1");
    assert_eq!(created["spec"]["containers"][0]["command"], json!(["/encode"]));
    assert_eq!(env_of(&created, "POP_PAYLOAD").unwrap(), r#"{"src":"in.mov"}"#);
    assert_eq!(env_of(&created, "POP_OPERATION_NAME").unwrap(), "Encode Video #1");
    respond(send, 201, serde_json::to_vec(&pod_json("Pending", json!({}))).unwrap());

    let (_, send) = expect(&mut handle, Method::GET, POD).await;
    respond(
        send,
        200,
        serde_json::to_vec(&pod_json(
            "Running",
            json!({
                "pop.report.progress": "{\"percent\": 40, \"message\": \"encoding\"}"
            }),
        ))
        .unwrap(),
    );
    let (_, send) = expect(&mut handle, Method::GET, POD).await;
    respond(
        send,
        200,
        serde_json::to_vec(&pod_json(
            "Succeeded",
            json!({
                "pop.report.progress": "{\"percent\": 100}",
                "pop.report.payload": "{\"file\": \"out.mp4\"}"
            }),
        ))
        .unwrap(),
    );

    let output = run.await.unwrap().unwrap();
    assert_eq!(output, json!({"file": "out.mp4"}));
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![
            Progress { percent: Some(40.0), message: Some("encoding".into()) },
            Progress { percent: Some(100.0), message: None },
        ]
    );
    // No delete: finished pods are the reaper's.
    drop(handle);
}

#[tokio::test]
async fn a_failed_pod_fails_the_operation_with_its_log_tail() {
    let (handler, mut handle) = pair(Duration::from_secs(30));
    let (sink, _) = recorder();
    let run = tokio::spawn(async move { handler.run(ctx(json!({})), sink).await });
    let (_, send) = expect(&mut handle, Method::POST, PODS).await;
    respond(send, 201, serde_json::to_vec(&pod_json("Pending", json!({}))).unwrap());
    let (_, send) = expect(&mut handle, Method::GET, POD).await;
    let mut failed = pod_json("Failed", json!({}));
    failed["status"]["containerStatuses"] = json!([{
        "name": "operation", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 2, "reason": "Error"}}
    }]);
    respond(send, 200, serde_json::to_vec(&failed).unwrap());
    let (_, send) = expect(&mut handle, Method::GET, &format!("{POD}/log?")).await;
    respond(send, 200, b"starting\ncodec not found\n".to_vec());

    let failure = run.await.unwrap().unwrap_err();
    assert_eq!(failure.message, "pod pop-encode-video-1-abcde failed");
    assert_eq!(failure.payload["log"], json!(["starting", "codec not found"]));
    assert_eq!(failure.payload["termination"]["exitCode"], 2);
    assert_eq!(failure.payload["termination"]["terminatedReason"], "Error");
}

#[tokio::test]
async fn a_pod_without_progress_is_deleted_and_fails_with_its_log_tail() {
    let (handler, mut handle) = pair(Duration::from_millis(50));
    let (sink, _) = recorder();
    let run = tokio::spawn(async move { handler.run(ctx(json!({})), sink).await });
    let (_, send) = expect(&mut handle, Method::POST, PODS).await;
    respond(send, 201, serde_json::to_vec(&pod_json("Pending", json!({}))).unwrap());
    // Polls until the timeout; then logs and delete.
    loop {
        let (request, send) = handle.next_request().await.expect("a request");
        let uri = request.uri().to_string();
        match *request.method() {
            Method::GET if uri.starts_with(&format!("{POD}/log")) => {
                respond(send, 200, b"waiting for input\n".to_vec());
            }
            Method::GET => {
                respond(send, 200, serde_json::to_vec(&pod_json("Running", json!({}))).unwrap());
            }
            Method::DELETE => {
                assert_eq!(uri.trim_end_matches('?'), POD);
                respond(send, 200, serde_json::to_vec(&pod_json("Running", json!({}))).unwrap());
                break;
            }
            ref m => panic!("unexpected {m} {uri}"),
        }
    }
    let failure = run.await.unwrap().unwrap_err();
    assert!(failure.message.contains("reported no progress"), "{}", failure.message);
    assert_eq!(failure.payload["log"], json!(["waiting for input"]));
}

#[tokio::test]
async fn a_large_payload_goes_gzip_and_base64() {
    let big = json!({"blob": "x".repeat(pod::INLINE_PAYLOAD_LIMIT + 1)});
    let (name, value) = pod::payload_env(&big).unwrap();
    assert_eq!(name, "POP_PAYLOAD_GZIP_BASE64");
    assert!(value.len() < 4096, "compressible payloads shrink: {}", value.len());
    let bytes = base64::engine::general_purpose::STANDARD.decode(value).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes.as_slice()).read_to_string(&mut text).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), big);
    assert_eq!(
        pod::payload_env(&json!({"a": 1})).unwrap(),
        ("POP_PAYLOAD", r#"{"a":1}"#.to_string())
    );
}

#[tokio::test]
async fn an_abandoned_operation_deletes_its_pod() {
    let (handler, mut handle) = pair(Duration::from_secs(30));
    let (sink, _) = recorder();
    let run = tokio::spawn(async move { handler.run(ctx(json!({})), sink).await });
    let (_, send) = expect(&mut handle, Method::POST, PODS).await;
    respond(send, 201, serde_json::to_vec(&pod_json("Pending", json!({}))).unwrap());
    let (_, send) = expect(&mut handle, Method::GET, POD).await;
    respond(send, 200, serde_json::to_vec(&pod_json("Running", json!({}))).unwrap());
    // The execution stops (shutdown past its grace, lease lost): the handler is dropped.
    run.abort();
    let _ = run.await;
    loop {
        let (request, send) = handle.next_request().await.expect("the delete");
        if request.method() == Method::DELETE {
            assert_eq!(request.uri().path(), POD);
            respond(send, 200, serde_json::to_vec(&pod_json("Running", json!({}))).unwrap());
            break;
        }
        // A poll that was already on its way.
        respond(send, 200, serde_json::to_vec(&pod_json("Running", json!({}))).unwrap());
    }
}

#[test]
fn label_values_are_what_kubernetes_accepts() {
    assert_eq!(pod::label_value("a b/c"), "a_b_c");
    assert_eq!(pod::label_value("-x-"), "x");
    assert_eq!(pod::label_value(&"y".repeat(100)).len(), 63);
}
