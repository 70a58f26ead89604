//! The Kubernetes pod handler: one pod per operation, created through kube in the resource
//! pool's namespace.
//!
//! Contract with the pod (POP's handler contract):
//! - the resolved payload is in the environment: `POP_PAYLOAD` (JSON), or, when its JSON is
//!   larger than [`INLINE_PAYLOAD_LIMIT`], `POP_PAYLOAD_GZIP_BASE64` (gzip, then base64);
//!   `POP_AGENDA_ID`, `POP_OPERATION_NAME`, `POP_OPERATION_TYPE` name the work;
//! - the pod reports by annotating itself: `pop.report.progress` holds `{"percent", "message"}`
//!   and `pop.report.payload` the operation's output (JSON; text that is not JSON is taken as a
//!   string);
//! - phase `Succeeded` is success, `Failed` a failure with the last log lines as the diagnostic
//!   payload; no change of `pop.report.progress` for `timeout` (from creation) fails the
//!   operation and deletes the pod.
//!
//! Pods carry pop's labels — `app.kubernetes.io/managed-by=pop`, `pop.insightId`,
//! `pop.resourcePoolId`, `pop.agendaId`, `pop.operationName` — so the pod reaper finds them
//! (it selects on `app.kubernetes.io/managed-by=pop` and a `pop.agendaId` label); the keys and
//! the value rule are [`pop_domain::pod_labels`], shared with the reaper. Every id is written
//! twice: as a label made valid by [`label_value`] (characters outside `[A-Za-z0-9._-]` become
//! `_`, cut to 63, non-alphanumerics trimmed from the ends — possibly empty, and then the
//! reaper leaves the pod alone) and as an annotation of the same key with the exact id.
//! Finished pods are left
//! for the reaper (their logs stay readable); a pod whose operation is abandoned (timeout, the
//! execution stopped) is deleted at once.
//!
//! The pod is followed by polling `get` every `poll` (a watch would save requests on a big
//! farm; polling keeps the handler simple to test and survives API server restarts).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::{Value, json};

use crate::handler::{Failure, Handler, OperationContext, Progress, ProgressSink};

pub use pop_domain::pod_labels::label_value;
use pop_domain::pod_labels::{
    AGENDA_ID, INSIGHT_ID, MANAGED_BY, MANAGED_BY_VALUE, OPERATION_NAME, RESOURCE_POOL_ID,
};
/// Annotation the pod writes its progress to.
pub const PROGRESS_ANNOTATION: &str = "pop.report.progress";
/// Annotation the pod writes its output to.
pub const PAYLOAD_ANNOTATION: &str = "pop.report.payload";

/// Payloads whose JSON is longer than this go gzip+base64 encoded.
pub const INLINE_PAYLOAD_LIMIT: usize = 32 * 1024;
/// Largest encoded payload put into a pod: Kubernetes objects are limited to about 1.5 MiB.
pub const MAX_ENCODED_PAYLOAD: usize = 1024 * 1024;
/// Log lines a failure carries.
pub const LOG_TAIL_LINES: i64 = 20;
/// Consecutive failed `get`s before the operation is given up.
const MAX_POLL_ERRORS: u32 = 10;

/// One operation type's pod.
#[derive(Clone)]
pub struct KubePod {
    pub client: kube::Client,
    pub namespace: String,
    pub image: String,
    /// The container's command; the image's entrypoint when empty.
    pub command: Vec<String>,
    /// The pods' service account; the namespace's `default` when `None`.
    pub service_account: Option<String>,
    /// No progress for this long fails the operation and deletes its pod.
    pub timeout: Duration,
    /// How often the pod is looked at.
    pub poll: Duration,
}

impl std::fmt::Debug for KubePod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePod")
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// A `generateName` prefix from an operation name: lowercase DNS label characters, short
/// enough for Kubernetes' random suffix.
fn name_prefix(operation: &str) -> String {
    let mut s: String = operation
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    s = s.trim_matches('-').to_string();
    if s.is_empty() { "pop-op-".to_string() } else { format!("pop-{s}-") }
}

/// The environment variable carrying the payload: name and value.
pub fn payload_env(payload: &Value) -> Result<(&'static str, String), Failure> {
    let text = payload.to_string();
    if text.len() <= INLINE_PAYLOAD_LIMIT {
        return Ok(("POP_PAYLOAD", text));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes())
        .and_then(|()| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|e| Failure::new(format!("compressing the payload: {e}")))
        .and_then(|encoded| {
            if encoded.len() > MAX_ENCODED_PAYLOAD {
                Err(Failure::new(format!(
                    "the payload is {} bytes even compressed; a pod takes at most {MAX_ENCODED_PAYLOAD}",
                    encoded.len()
                )))
            } else {
                Ok(("POP_PAYLOAD_GZIP_BASE64", encoded))
            }
        })
}

/// The pod's environment: pop's names, and the names POP's handler images read (POP's
/// `HandlerField`s and `MY_POD_NAME`, which its `KubernetesReporter` annotates), so an image
/// written for POP runs unchanged (newcomer7: it got no payload and could not find its pod).
/// The pod's own name comes from the downward API, under both conventions.
fn pod_env(ctx: &OperationContext, payload_var: &str, payload_value: &str) -> Vec<EnvVar> {
    let env = |name: &str, value: &str| EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    };
    let own_name = |name: &str| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut vars = vec![
        env(payload_var, payload_value),
        env("POP_AGENDA_ID", &ctx.agenda_id),
        env("POP_OPERATION_NAME", &ctx.operation_name),
        env("POP_OPERATION_TYPE", &ctx.operation_type),
        own_name("POP_POD_NAME"),
        env("AGENDA_ID", &ctx.agenda_id),
        env("CUSTOMER_ID", &ctx.customer_id),
        env("OPERATION_NAME", &ctx.operation_name),
        own_name("MY_POD_NAME"),
    ];
    // POP passed the payload as JSON text; one too large to pass inline is pop's alone.
    if payload_var == "POP_PAYLOAD" {
        vars.push(env("PAYLOAD", payload_value));
    }
    vars
}

/// What a pod's `pop.report.progress` annotation says: pop's `{"percent", "message"}`, or the
/// whole OperationProgress POP's `KubernetesReporter` writes (`percentComplete`, a number or a
/// numeric string, and `processingStateMessage`).
fn reported_progress(annotation: &Value) -> Progress {
    let field =
        |a: &str, b: &str| annotation.get(a).filter(|v| !v.is_null()).or_else(|| annotation.get(b));
    let percent = field("percent", "percentComplete");
    let percent = percent.and_then(|p| p.as_f64().or_else(|| p.as_str()?.trim().parse().ok()));
    let message = field("message", "processingStateMessage");
    Progress { percent, message: message.and_then(Value::as_str).map(str::to_string) }
}

impl KubePod {
    /// The pod for one operation (without a name: the server generates it).
    pub fn pod(&self, ctx: &OperationContext) -> Result<Pod, Failure> {
        let (payload_var, payload_value) = payload_env(&ctx.payload)?;
        let mut labels = BTreeMap::new();
        labels.insert(MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string());
        let mut annotations = BTreeMap::new();
        // Each id: a label made valid (`label_value`) and an annotation with the exact id.
        for (key, value) in [
            (INSIGHT_ID, &ctx.insight_id),
            (RESOURCE_POOL_ID, &ctx.resource_pool_id),
            (AGENDA_ID, &ctx.agenda_id),
            (OPERATION_NAME, &ctx.operation_name),
        ] {
            labels.insert(key.to_string(), label_value(value));
            annotations.insert(key.to_string(), value.clone());
        }
        Ok(Pod {
            metadata: ObjectMeta {
                generate_name: Some(name_prefix(&ctx.operation_name)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Never".to_string()),
                service_account_name: self.service_account.clone(),
                containers: vec![Container {
                    name: "operation".to_string(),
                    image: Some(self.image.clone()),
                    command: (!self.command.is_empty()).then(|| self.command.clone()),
                    env: Some(pod_env(ctx, payload_var, &payload_value)),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        })
    }
}

/// Deletes the pod when the operation is abandoned (the handler's future dropped) before it
/// finished; disarmed once the pod ended on its own.
struct DeleteOnDrop {
    api: Api<Pod>,
    name: String,
    armed: bool,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let api = self.api.clone();
        let name = std::mem::take(&mut self.name);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                    tracing::warn!(pod = %name, error = %e, "deleting an abandoned pod failed");
                }
            });
        }
    }
}

async fn log_tail(api: &Api<Pod>, name: &str) -> Vec<String> {
    let params = LogParams { tail_lines: Some(LOG_TAIL_LINES), ..LogParams::default() };
    match api.logs(name, &params).await {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(e) => vec![format!("(logs unavailable: {e})")],
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Why the pod's container ended, when it says.
fn termination(pod: &Pod) -> Value {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    json!({
        "reason": status.and_then(|s| s.reason.clone()),
        "message": status.and_then(|s| s.message.clone()),
        "exitCode": terminated.map(|t| t.exit_code),
        "terminatedReason": terminated.and_then(|t| t.reason.clone()),
    })
}

#[async_trait]
impl Handler for KubePod {
    async fn run(&self, ctx: OperationContext, progress: ProgressSink) -> Result<Value, Failure> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pod = self.pod(&ctx)?;
        let created = api
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| Failure::new(format!("creating the pod in {}: {e}", self.namespace)))?;
        let Some(name) = created.metadata.name.clone() else {
            return Err(Failure::new("the created pod has no name"));
        };
        tracing::info!(pod = %name, agenda = %ctx.agenda_id, operation = %ctx.operation_name, "pod created");
        let mut guard = DeleteOnDrop { api: api.clone(), name: name.clone(), armed: true };
        let mut last_progress: Option<String> = None;
        let mut progressed_at = tokio::time::Instant::now();
        let mut errors = 0u32;
        loop {
            tokio::time::sleep(self.poll).await;
            let pod = match api.get(&name).await {
                Ok(pod) => {
                    errors = 0;
                    pod
                }
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_POLL_ERRORS {
                        return Err(Failure::new(format!("reading pod {name}: {e}")));
                    }
                    tracing::warn!(pod = %name, error = %e, "reading the pod failed");
                    continue;
                }
            };
            if let Some(text) = annotation(&pod, PROGRESS_ANNOTATION)
                && last_progress.as_deref() != Some(text)
            {
                last_progress = Some(text.to_string());
                progressed_at = tokio::time::Instant::now();
                if let Ok(p) = serde_json::from_str::<Value>(text) {
                    progress(reported_progress(&p));
                }
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            match phase {
                "Succeeded" => {
                    guard.armed = false;
                    let output = match annotation(&pod, PAYLOAD_ANNOTATION) {
                        None => Value::Null,
                        Some(text) => serde_json::from_str(text)
                            .unwrap_or_else(|_| Value::String(text.to_string())),
                    };
                    return Ok(output);
                }
                "Failed" => {
                    guard.armed = false;
                    let log = log_tail(&api, &name).await;
                    return Err(Failure::with_payload(
                        format!("pod {name} failed"),
                        json!({"pod": name, "log": log, "termination": termination(&pod)}),
                    ));
                }
                _ if progressed_at.elapsed() >= self.timeout => {
                    let log = log_tail(&api, &name).await;
                    guard.armed = false;
                    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                        tracing::warn!(pod = %name, error = %e, "deleting a stuck pod failed");
                    }
                    return Err(Failure::with_payload(
                        format!(
                            "pod {name} reported no progress for {:?} ({phase}); deleted",
                            self.timeout
                        ),
                        json!({"pod": name, "log": log}),
                    ));
                }
                _ => {}
            }
        }
    }
}
