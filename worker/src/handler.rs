//! Handlers run one operation each, chosen by operation type from a [`Registry`]. A handler
//! gets the resolved payload and a [`ProgressSink`], and answers with the operation's output
//! (what `@<name.out>` refers to) or a [`Failure`] carrying diagnostics.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use pop_domain::Params;

/// Everything a handler knows about the operation it runs.
#[derive(Debug, Clone)]
pub struct OperationContext {
    pub agenda_id: String,
    pub customer_id: String,
    pub insight_id: String,
    pub resource_pool_id: String,
    pub operation_name: String,
    pub operation_type: String,
    /// The payload with every reference resolved.
    pub payload: Value,
    pub params: Params,
}

/// Why an operation failed: a message and a diagnostic payload (e.g. the last log lines).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    pub payload: Value,
    /// The failure is deterministic (running it again gives the same): reported with the
    /// status code `NOT_RETRYABLE`, so the server's automatic retry leaves the agenda failed.
    pub not_retryable: bool,
    /// The handler was stopped from outside by a signal that asks processes to stop (SIGINT,
    /// SIGTERM, SIGHUP): the operation did not fail by itself. When the worker is stopping
    /// too (the same signal, sent to its whole process group or service), the agenda is
    /// handed back, not failed.
    pub interrupted: bool,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Failure {
        Failure::with_payload(message, Value::Null)
    }

    pub fn with_payload(message: impl Into<String>, payload: Value) -> Failure {
        Failure { message: message.into(), payload, not_retryable: false, interrupted: false }
    }

    /// This failure, marked as a stop from outside (see [`Failure::interrupted`]).
    pub fn interrupted(self) -> Failure {
        Failure { interrupted: true, ..self }
    }

    /// This failure, marked deterministic (see [`Failure::not_retryable`]).
    pub fn not_retryable(self) -> Failure {
        Failure { not_retryable: true, ..self }
    }
}

/// One progress update of a running operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    pub percent: Option<f64>,
    pub message: Option<String>,
}

/// Where a handler sends progress. Sending never blocks and never fails: the reporter keeps
/// only the latest update per operation (coalescing), so a chatty handler costs nothing.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Runs operations of one or more types.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, ctx: OperationContext, progress: ProgressSink) -> Result<Value, Failure>;
}

/// Handlers by operation type.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    pub fn insert(&mut self, op_type: impl Into<String>, handler: Arc<dyn Handler>) {
        self.handlers.insert(op_type.into(), handler);
    }

    pub fn get(&self, op_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(op_type).cloned()
    }

    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}
