//! How a worker's work joins the trace of the agenda it runs. `getAgenda` answers each
//! agenda's `traceparent` (the W3C trace context of the request that last changed it: its
//! submission, a rerun, a report) and the `tracestate` that came with it; the puller runs the agenda in an `agenda` span that is a
//! child of it, each operation in an `operation` span, and every API call in an `api` span
//! whose own `traceparent` goes out as the call's header, so the server's spans for the
//! worker's reports join the same trace.
//!
//! This crate only emits `tracing` spans. Giving a span a remote parent and reading a span's
//! trace context need the OpenTelemetry layer that the binary installs; it hands that ability
//! over as a [`Propagation`] ([`install`]). Without one (traces are not exported) no span is
//! recorded, and the calls made for an agenda send the agenda's stored `traceparent` as it
//! is (with its `tracestate`), so the server's spans still join the agenda's trace.

use std::future::Future;
use std::sync::{Arc, OnceLock};

/// An agenda's stored W3C trace context, as `getAgenda` answers it: the `traceparent` and
/// the `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub traceparent: Arc<str>,
    pub tracestate: Option<Arc<str>>,
}

impl Context {
    /// The context of a traceparent (none: no context, whatever the tracestate).
    pub fn of(traceparent: Option<Arc<str>>, tracestate: Option<Arc<str>>) -> Option<Context> {
        traceparent.map(|traceparent| Context { traceparent, tracestate })
    }

    /// The headers that carry it: `traceparent`, and `tracestate` when there is one.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("traceparent", self.traceparent.to_string())];
        if let Some(tracestate) = &self.tracestate {
            headers.push(("tracestate", tracestate.to_string()));
        }
        headers
    }
}

/// What the tracing layer of the process can do with trace context.
pub trait Propagation: Send + Sync + 'static {
    /// Makes `span` (new, not yet entered) a child of the remote span `traceparent`, carrying
    /// its `tracestate` on.
    fn join(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>);
    /// The W3C `traceparent` of `span` and its `tracestate` (if not empty), `None` when the
    /// span is not recorded.
    fn context(&self, span: &tracing::Span) -> Option<(String, Option<String>)>;
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

/// What the calls of one claimed agenda's work carry: the agenda's stored trace context (sent
/// when no span of theirs is recorded) and the work's own correlation id (`X-Correlation-Id`,
/// so the events of one execution — its reports, expands, release — share one cid in the
/// audit trail instead of one per request).
#[derive(Debug, Clone, Default)]
pub struct Work {
    pub context: Option<Context>,
    pub cid: Option<Arc<str>>,
}

impl Work {
    /// The work of a claim just made: the agenda's context and a new correlation id.
    pub fn claimed(context: Option<Context>) -> Work {
        Work { context, cid: Some(Arc::from(uuid::Uuid::now_v7().to_string())) }
    }
}

tokio::task_local! {
    /// The claimed agenda's work the current task does ([`scope`]).
    static WORK: Work;
}

/// Runs `work` as part of a claimed agenda's [`Work`]: the calls it makes carry its trace
/// context and correlation id.
pub fn scope<F: Future>(work: Work, fut: F) -> tokio::task::futures::TaskLocalFuture<Work, F> {
    WORK.scope(work, fut)
}

/// The [`Work`] of the current task (empty outside one), to hand to a task it spawns.
pub fn current() -> Work {
    WORK.try_with(Clone::clone).unwrap_or_default()
}

/// The `agenda` span of a claimed agenda: a child of its stored `traceparent` when the process
/// records spans, else a root (disabled when nothing records spans).
pub fn agenda_span(agenda_id: &str, insight: &str, context: Option<&Context>) -> tracing::Span {
    let span = tracing::info_span!(parent: None, "agenda", agenda.id = %agenda_id, insight);
    if let (Some(p), Some(context)) = (propagation(), context)
        && !span.is_disabled()
    {
        p.join(&span, &context.traceparent, context.tracestate.as_deref());
    }
    span
}

/// The trace context headers of a call made now: the current span's (a child of the agenda's
/// trace, carrying its tracestate) when spans are recorded, else the agenda's stored ones;
/// and the work's correlation id ([`Work`]).
pub fn outgoing() -> Vec<(&'static str, String)> {
    let span = tracing::Span::current();
    let work = current();
    let mut headers = propagation()
        .filter(|_| !span.is_disabled())
        .and_then(|p| p.context(&span))
        .map(|(traceparent, tracestate)| Context {
            traceparent: traceparent.into(),
            tracestate: tracestate.map(Arc::from),
        })
        .or(work.context)
        .map(|c| c.headers())
        .unwrap_or_default();
    if let Some(cid) = work.cid {
        headers.push(("x-correlation-id", cid.to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn an_agendas_calls_carry_its_works_correlation_id() {
        let work = Work::claimed(None);
        let cid = work.cid.clone();
        let headers = scope(work.clone(), async { outgoing() }).await;
        assert_eq!(headers, [("x-correlation-id", cid.as_deref().unwrap_or("").to_string())]);
        assert!(outgoing().is_empty(), "outside an agenda's work: no header");
        // Handed on to the tasks the work spawns.
        let inner = scope(work, async {
            tokio::spawn(scope(current(), async { outgoing() })).await.unwrap()
        })
        .await;
        assert_eq!(inner, headers);
        // Each claim its own.
        assert_ne!(Work::claimed(None).cid, cid);
    }

    #[tokio::test]
    async fn without_a_layer_an_agendas_calls_send_its_stored_context_as_it_is() {
        // No `Propagation` is installed in this test binary: nothing records spans.
        let context = Context::of(Some(TP.into()), Some("rojo=1,congo=2".into()));
        let in_work = |context: Option<Context>| Work { context, cid: None };
        let headers = scope(in_work(context.clone()), async { outgoing() }).await;
        let expected = [("traceparent", TP.to_string()), ("tracestate", "rojo=1,congo=2".into())];
        assert_eq!(headers, expected);
        // A task the agenda's work spawns hands it on.
        let inner = scope(in_work(context), async { scope(current(), async { outgoing() }).await });
        assert_eq!(inner.await, expected);
        // Without a tracestate only the traceparent goes; outside an agenda, nothing.
        let bare = scope(in_work(Context::of(Some(TP.into()), None)), async { outgoing() }).await;
        assert_eq!(bare, [("traceparent", TP.to_string())]);
        assert!(outgoing().is_empty());
        // A tracestate alone is no trace context.
        assert_eq!(Context::of(None, Some("rojo=1".into())), None);
    }
}
