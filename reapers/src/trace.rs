//! How the timed processes' work shows in traces (only while the binary exports them,
//! [`pop_store::trace`]): each cycle is a `pass` span (a root, named after the process), and
//! each command a process appends to an agenda runs in a span named after the command
//! (`queue`, `reclaim`, `retry`, `reap`) that is a child of the agenda's stored
//! `traceparent` (the request that last touched it: its submission, a rerun, a worker's
//! report), linked to its pass. The agenda's trace then shows its queueing, reclaiming and
//! retrying beside its submission and execution; an agenda that no traced request touched
//! gets a span in its pass's trace instead. The store's `command` and `append` spans are
//! children of it. A config object's reap and a pod's deletion are spans in their pass's
//! trace (`reap`, `delete pod`, with the stream or the pod and its agenda id).
//!
//! Without an exporter the spans are disabled and nothing is looked up.

use std::future::Future;

use pop_domain::agenda::AgendaState;
use pop_store::Commands;
use tracing::Instrument;

use crate::ProcessName;

/// The `pass` span of one cycle of `process`: a root.
pub(crate) fn pass(process: ProcessName) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "pass",
        otel.name = %format!("{} pass", process.as_str()),
        process = process.as_str(),
    )
}

/// Runs `work`, the command `command` of the current pass on the agenda whose stream id is
/// `key`, in its span (see the module doc).
pub(crate) async fn on_agenda<F: Future>(
    commands: &Commands,
    key: &str,
    command: &'static str,
    work: F,
) -> F::Output {
    let span = agenda_span(commands, key, command).await;
    work.instrument(span).await
}

async fn agenda_span(commands: &Commands, key: &str, command: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "agenda_command",
        otel.name = command,
        command,
        agenda.key = key,
    );
    let Some(p) = pop_store::trace::propagation().filter(|_| !span.is_disabled()) else {
        return span;
    };
    let pass = p.context(&tracing::Span::current());
    match commands.trace_context::<AgendaState>(key).await {
        Ok((Some(traceparent), tracestate)) => {
            p.join(&span, &traceparent, tracestate.as_deref());
            if let Some((pass, _)) = pass {
                p.link(&span, &pass);
            }
        }
        // Untraced (or unreadable: the command will say why): a child of its pass.
        _ => {
            if let Some((pass, state)) = pass {
                p.join(&span, &pass, state.as_deref());
            }
        }
    }
    span
}
