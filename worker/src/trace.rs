//! How a worker's work joins the trace of the agenda it runs. `getAgenda` answers each
//! agenda's `traceparent` (the W3C trace context of the request that last changed it: its
//! submission, a rerun, a report); the puller runs the agenda in an `agenda` span that is a
//! child of it, each operation in an `operation` span, and every API call in an `api` span
//! whose own `traceparent` goes out as the call's header, so the server's spans for the
//! worker's reports join the same trace.
//!
//! This crate only emits `tracing` spans. Giving a span a remote parent and reading a span's
//! trace context need the OpenTelemetry layer that the binary installs; it hands that ability
//! over as a [`Propagation`] ([`install`]). Without one (traces are not exported) no span is
//! recorded, and the calls made for an agenda send the agenda's stored `traceparent` as it
//! is, so the server's spans still join the agenda's trace.

use std::future::Future;
use std::sync::{Arc, OnceLock};

/// What the tracing layer of the process can do with trace context.
pub trait Propagation: Send + Sync + 'static {
    /// Makes `span` (new, not yet entered) a child of the remote span `traceparent`.
    fn join(&self, span: &tracing::Span, traceparent: &str);
    /// The W3C `traceparent` of `span`, `None` when it is not recorded.
    fn traceparent(&self, span: &tracing::Span) -> Option<String>;
}

static PROPAGATION: OnceLock<Box<dyn Propagation>> = OnceLock::new();

/// Installs the process's [`Propagation`] (once: later calls are ignored, like a second global
/// subscriber).
pub fn install(propagation: Box<dyn Propagation>) {
    let _ = PROPAGATION.set(propagation);
}

fn propagation() -> Option<&'static dyn Propagation> {
    PROPAGATION.get().map(|p| p.as_ref())
}

tokio::task_local! {
    /// The stored `traceparent` of the agenda the current task works for.
    static AGENDA: Option<Arc<str>>;
}

/// Runs `work` for an agenda whose stored trace context is `traceparent`: the calls it makes
/// send it when no span of theirs is recorded.
pub fn scope<F: Future>(
    traceparent: Option<Arc<str>>,
    work: F,
) -> tokio::task::futures::TaskLocalFuture<Option<Arc<str>>, F> {
    AGENDA.scope(traceparent, work)
}

/// The agenda trace context of the current task, to hand to a task it spawns ([`scope`]).
pub fn current_agenda() -> Option<Arc<str>> {
    AGENDA.try_with(Clone::clone).ok().flatten()
}

/// The `agenda` span of a claimed agenda: a child of its stored `traceparent` when the process
/// records spans, else a root (disabled when nothing records spans).
pub fn agenda_span(agenda_id: &str, insight: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "agenda", agenda.id = %agenda_id, insight);
    if let (Some(p), Some(traceparent)) = (propagation(), traceparent)
        && !span.is_disabled()
    {
        p.join(&span, traceparent);
    }
    span
}

/// The `traceparent` header of a call made now: the current span's (a child of the agenda's
/// trace) when spans are recorded, else the agenda's stored one.
pub fn outgoing() -> Option<String> {
    let current = tracing::Span::current();
    propagation()
        .filter(|_| !current.is_disabled())
        .and_then(|p| p.traceparent(&current))
        .or_else(|| current_agenda().map(|t| t.to_string()))
}
