//! How the libraries put work that no request started (the timed processes' commands, the
//! projections' batches) into the traces of the requests it concerns. The libraries only
//! emit `tracing` spans; giving a span a remote parent, reading a span's W3C trace context
//! and linking a span to another trace need the OpenTelemetry layer that the binary installs
//! while it exports traces. It hands that ability over as a [`Propagation`] ([`install`]).
//! Without one (the default: nothing exported) [`propagation`] is `None`, every span is
//! disabled, and callers skip the work that would feed it (looking up a stream's trace
//! context, collecting a batch's traceparents).

use std::sync::{Arc, OnceLock};

use crate::EventMetadata;

/// What the tracing layer of the process can do with W3C trace context.
pub trait Propagation: Send + Sync + 'static {
    /// Makes `span` (new, not yet entered) a child of the remote span `traceparent`, carrying
    /// its `tracestate` on.
    fn join(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>);
    /// The W3C `traceparent` of `span` and its `tracestate` (if not empty), `None` when the
    /// span is not recorded.
    fn context(&self, span: &tracing::Span) -> Option<(String, Option<String>)>;
    /// Links `span` to the remote span `traceparent` (a malformed one is ignored).
    fn link(&self, span: &tracing::Span, traceparent: &str);
}

static PROPAGATION: OnceLock<Box<dyn Propagation>> = OnceLock::new();

/// Installs the process's [`Propagation`] (once: later calls are ignored, like a second global
/// subscriber).
pub fn install(propagation: Box<dyn Propagation>) {
    let _ = PROPAGATION.set(propagation);
}

/// The process's [`Propagation`], `None` unless traces are exported.
pub fn propagation() -> Option<&'static dyn Propagation> {
    PROPAGATION.get().map(|p| p.as_ref())
}

/// Most distinct traces one span links to ([`Traces`]): a batch of 1,000 events from 1,000
/// requests would otherwise carry 1,000 links (OpenTelemetry's SDK keeps 128 per span by
/// default and drops the rest silently).
pub const MAX_LINKS_PER_SPAN: usize = 32;

/// The distinct traceparents of a run of stored events, at most [`MAX_LINKS_PER_SPAN`], in
/// the order first seen (later ones are counted in `dropped`, not kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traces {
    pub traceparents: Vec<Arc<str>>,
    /// Traced events whose distinct traceparent did not fit.
    pub dropped: usize,
}

impl Traces {
    /// Notes the traceparent of a stored event's metadata, if it carries one.
    pub fn note(&mut self, metadata: &[u8]) {
        let Some(traceparent) = traceparent_in(metadata) else { return };
        if self.traceparents.iter().any(|t| **t == *traceparent) {
            return;
        }
        if self.traceparents.len() < MAX_LINKS_PER_SPAN {
            self.traceparents.push(Arc::from(traceparent));
        } else {
            self.dropped += 1;
        }
    }
}

/// The traceparent in stored metadata bytes, without parsing the JSON when it is written the
/// way [`EventMetadata::to_json`] writes it (`"traceparent":"<55 bytes>"`); parsed otherwise.
/// Metadata without the key (most events: the timed processes' commands) costs one byte
/// search.
pub fn traceparent_in(metadata: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"traceparent\"";
    let at = metadata.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = &metadata[at + KEY.len()..];
    let len = crate::TRACEPARENT_MAX_BYTES;
    if let Some(value) = rest.strip_prefix(b":\"")
        && value.get(len) == Some(&b'"')
        && let Ok(value) = std::str::from_utf8(&value[..len])
        && let Some(valid) = crate::valid_traceparent(value)
    {
        return Some(valid.to_string());
    }
    EventMetadata::from_json(metadata).ok()?.traceparent
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn traced(t: &str) -> Vec<u8> {
        EventMetadata { traceparent: Some(t.into()), actor: Some("a".into()), ..Default::default() }
            .to_json()
            .unwrap_or_default()
    }

    #[test]
    fn traceparents_are_found_fast_or_parsed_and_untraced_metadata_has_none() {
        assert_eq!(traceparent_in(&traced(A)).as_deref(), Some(A));
        let spaced = format!(r#"{{"actor": "a", "traceparent" : "{A}"}}"#);
        assert_eq!(traceparent_in(spaced.as_bytes()).as_deref(), Some(A));
        assert_eq!(traceparent_in(br#"{"actor":"a"}"#), None);
        assert_eq!(traceparent_in(b""), None);
        assert_eq!(traceparent_in(br#"{"traceparent":"00-short"}"#).as_deref(), Some("00-short"));
    }

    #[test]
    fn a_runs_traces_are_distinct_and_bounded() {
        let mut traces = Traces::default();
        traces.note(&traced(A));
        traces.note(&traced(A));
        traces.note(br#"{"actor":"system:scheduler"}"#);
        assert_eq!(traces.traceparents.len(), 1);
        for i in 0..MAX_LINKS_PER_SPAN + 5 {
            traces.note(&traced(&format!("00-{:032x}-00f067aa0ba902b7-01", i + 1)));
        }
        assert_eq!(traces.traceparents.len(), MAX_LINKS_PER_SPAN);
        assert_eq!(traces.dropped, 6);
        assert_eq!(&*traces.traceparents[0], A);
    }
}
