//! The built-in handlers, always registered unless the configuration gives the type another:
//! - `log`: logs the payload (a `message` field, or the whole payload) and returns the payload;
//! - `sample`: POP's sample handler; `payload.action` is `log` (log `actionData`),
//!   `exception` (fail with `actionData` as message) or `externalExecute` (run the command
//!   array in `actionData.command`, failing on a non-zero exit); the output is
//!   `payload.resultPayload` (or `null`). `externalExecute` runs whatever a submitter writes
//!   into a payload on the worker's host, so the `sample` registered by default refuses it;
//!   a registry that wants it maps a type to the built-in `sampleWithExternalExecute`;
//! - `agendaUpdate`: the generator helper: returns its payload, so an operation with
//!   `params["agenda.operation.generator"] = {"operationsJsonPointer": "/operations"}` adds
//!   the operations listed in its payload.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::handler::{Failure, Handler, OperationContext, Progress, ProgressSink, Registry};

pub const LOG: &str = "log";
pub const SAMPLE: &str = "sample";

impl Registry {
    /// A registry with only the built-in handlers (`log`, `sample`, `agendaUpdate`).
    pub fn with_builtins() -> Registry {
        let mut registry = Registry::default();
        register(&mut registry);
        registry
    }
}

/// The sample handler with `externalExecute` allowed (only by name in the registry file).
pub const SAMPLE_WITH_EXTERNAL_EXECUTE: &str = "sampleWithExternalExecute";
pub const AGENDA_UPDATE: &str = "agendaUpdate";

/// Whether every worker has a handler for `op_type` without a handlers file entry.
pub fn is_builtin(op_type: &str) -> bool {
    [LOG, SAMPLE, AGENDA_UPDATE].contains(&op_type)
}

/// Most stdout/stderr bytes of an `externalExecute` kept in its output or diagnostic.
const MAX_CAPTURE: usize = 16 * 1024;

pub fn register(registry: &mut Registry) {
    registry.insert(LOG, Arc::new(LogHandler));
    registry.insert(SAMPLE, Arc::new(SampleHandler { external_execute: false }));
    registry.insert(AGENDA_UPDATE, Arc::new(AgendaUpdateHandler));
}

#[derive(Debug)]
pub struct LogHandler;

#[async_trait]
impl Handler for LogHandler {
    async fn run(&self, ctx: OperationContext, _progress: ProgressSink) -> Result<Value, Failure> {
        let text = match ctx.payload.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => ctx.payload.to_string(),
        };
        tracing::info!(agenda = %ctx.agenda_id, operation = %ctx.operation_name, "{text}");
        Ok(ctx.payload)
    }
}

#[derive(Debug)]
pub struct SampleHandler {
    /// Whether the `externalExecute` action may run commands.
    pub external_execute: bool,
}

#[async_trait]
impl Handler for SampleHandler {
    async fn run(&self, ctx: OperationContext, progress: ProgressSink) -> Result<Value, Failure> {
        let action = ctx.payload.get("action").and_then(Value::as_str).unwrap_or("log");
        let data = ctx.payload.get("actionData").cloned().unwrap_or(Value::Null);
        let result = ctx.payload.get("resultPayload").cloned().unwrap_or(Value::Null);
        match action {
            "log" => {
                tracing::info!(agenda = %ctx.agenda_id, operation = %ctx.operation_name, data = %data, "sample: log");
                Ok(result)
            }
            "exception" => Err(Failure::with_payload(
                data.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("sample exception: {data}")),
                data,
            )),
            "externalExecute" if !self.external_execute => Err(Failure::new(format!(
                "sample: externalExecute is disabled on this worker (map the type to the built-in \
                 {SAMPLE_WITH_EXTERNAL_EXECUTE:?} to allow it)"
            ))),
            "externalExecute" => {
                let command: Vec<String> = data
                    .get("command")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let Some((program, args)) = command.split_first() else {
                    return Err(Failure::new(
                        "externalExecute needs actionData.command: [program, args…]",
                    ));
                };
                progress(Progress {
                    percent: Some(0.0),
                    message: Some(format!("running {program}")),
                });
                let mark = uuid::Uuid::new_v4().simple().to_string();
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .env(crate::local::RUN_MARK, &mark)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| Failure::new(format!("starting {program}: {e}")))?;
                // Dropped before `child` (a cancel): the program's own children die with it
                // (review-s43: a cancelled `sh -c 'sleep 61'` left the sleep running).
                let mut descendants = crate::local::KillDescendants(child.id(), Some(mark));
                let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
                // Reaped, its pid may name another process: from then on only what carries
                // the run's mark is looked for (review-s43b: a cancel while an orphan held the
                // output stopped whatever process had taken the pid).
                let waited = async {
                    let status = child.wait().await;
                    descendants.reaped();
                    status
                };
                let (status, stdout, stderr) =
                    tokio::join!(waited, read_tail(stdout), read_tail(stderr));
                let status =
                    status.map_err(|e| Failure::new(format!("waiting for {program}: {e}")))?;
                descendants.disarm();
                let out = std::process::Output { status, stdout, stderr };
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let captured = json!({"exitCode": out.status.code(), "stdout": text(&out.stdout), "stderr": text(&out.stderr)});
                if out.status.success() {
                    Ok(if result.is_null() { captured } else { result })
                } else {
                    Err(Failure::with_payload(
                        format!("{program} exited with {}", out.status),
                        captured,
                    ))
                }
            }
            other => Err(Failure::new(format!(
                "sample: unknown action {other:?} (log, exception, externalExecute)"
            ))),
        }
    }
}

/// The last [`MAX_CAPTURE`] bytes `stream` gives until it ends (nothing for no stream; what
/// came before an error): a program printing hundreds of megabytes held them all
/// (review-s43b: 300 MB of output took the worker to 877 MB).
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut stream) = stream else { return kept };
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > 2 * MAX_CAPTURE {
            kept.drain(..kept.len() - MAX_CAPTURE);
        }
    }
    let start = kept.len().saturating_sub(MAX_CAPTURE);
    kept.split_off(start)
}

#[derive(Debug)]
pub struct AgendaUpdateHandler;

#[async_trait]
impl Handler for AgendaUpdateHandler {
    async fn run(&self, ctx: OperationContext, _progress: ProgressSink) -> Result<Value, Failure> {
        Ok(ctx.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(payload: Value) -> OperationContext {
        OperationContext {
            agenda_id: "a".into(),
            customer_id: "c".into(),
            insight_id: "i".into(),
            resource_pool_id: "p".into(),
            operation_name: "o".into(),
            operation_type: "sample".into(),
            payload,
            params: Default::default(),
        }
    }

    fn sink() -> ProgressSink {
        Arc::new(|_| {})
    }

    #[tokio::test]
    async fn sample_actions_behave_like_pops_sample_handler() {
        let refused = SampleHandler { external_execute: false }
            .run(
                ctx(json!({"action": "externalExecute", "actionData": {"command": ["true"]}})),
                sink(),
            )
            .await
            .unwrap_err();
        assert!(refused.message.contains("disabled"), "{}", refused.message);
        let ok = SampleHandler { external_execute: true }
            .run(
                ctx(json!({"action": "log", "actionData": "hi", "resultPayload": {"x": 1}})),
                sink(),
            )
            .await;
        assert_eq!(ok, Ok(json!({"x": 1})));
        let err = SampleHandler { external_execute: true }
            .run(ctx(json!({"action": "exception", "actionData": "boom"})), sink())
            .await;
        assert_eq!(err.unwrap_err().message, "boom");
        let ran = SampleHandler { external_execute: true }
            .run(ctx(json!({"action": "externalExecute", "actionData": {"command": ["sh", "-c", "echo out"]}})), sink())
            .await
            .unwrap();
        assert_eq!(ran["stdout"], "out\n");
        let failed = SampleHandler { external_execute: true }
            .run(ctx(json!({"action": "externalExecute", "actionData": {"command": ["sh", "-c", "echo bad >&2; exit 3"]}})), sink())
            .await
            .unwrap_err();
        assert_eq!(failed.payload["exitCode"], 3);
        assert_eq!(failed.payload["stderr"], "bad\n");
    }

    #[tokio::test]
    async fn agenda_update_returns_its_payload() {
        let p = json!({"operations": [{"name": "x"}]});
        assert_eq!(AgendaUpdateHandler.run(ctx(p.clone()), sink()).await, Ok(p));
    }
}

#[cfg(test)]
mod capture_tests {
    use super::{MAX_CAPTURE, read_tail};

    /// A program's output is kept by its tail only, however much it prints (review-s43b: 300 MB
    /// of output were all held).
    #[tokio::test]
    async fn only_the_tail_of_a_programs_output_is_kept() {
        let output: Vec<u8> = (0..5 * MAX_CAPTURE + 7).map(|i| (i % 251) as u8).collect();
        let kept = read_tail(Some(output.as_slice())).await;
        assert_eq!(kept, output[output.len() - MAX_CAPTURE..]);
        assert_eq!(read_tail(Some(&b"short"[..])).await, b"short");
        assert!(read_tail(None::<&[u8]>).await.is_empty());
    }
}
