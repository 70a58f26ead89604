//! Logs and traces: the process's one `tracing` subscriber.
//!
//! Logs go to stderr as before (`RUST_LOG`, `--log-format`); they show events only, never
//! spans, so a log line reads the same whether traces are exported or not.
//!
//! Traces go over OTLP/gRPC when `pop serve` or `pop worker` is given an endpoint:
//! `--otlp-endpoint`, else the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`OTEL_SDK_DISABLED=true` turns them off;
//! `OTEL_SERVICE_NAME` renames the service, `pop` or `pop-worker`; the batch exporter reads
//! the standard `OTEL_BSP_*`). Without an endpoint nothing is installed: no exporter, no
//! connection, and every span of the libraries is disabled at its call site (no layer wants
//! spans), which costs one cached check. The libraries only emit `tracing` spans —
//! `request` (below), `command` and `append` (store), `projection_batch` (projections),
//! async-graphql's (`ApiConfig::graphql_tracing`), and the worker's `agenda`, `operation`
//! and `api` — and this module bridges them with `tracing-opentelemetry`. Only spans and
//! events at INFO or above from pop's crates and async-graphql are exported; the HTTP/2 and
//! gRPC crates underneath the exporter never are (their spans would export themselves). The
//! SDK's own warnings and errors (an export that failed: the collector is down) go to the log
//! like any other event.
//!
//! Trace context is W3C `traceparent`: a request's header continues the client's trace, and
//! the request span's own traceparent replaces the header before the API reads it, so the
//! events the request appends store it (`EventMetadata::traceparent`). A worker joins an
//! agenda's trace through [`pop_worker::trace::Propagation`], installed here.
//!
//! Why these crates: `tracing-opentelemetry` is the maintained bridge from `tracing` (which
//! the codebase already uses) to OpenTelemetry; `opentelemetry-otlp` with tonic is the
//! reference OTLP exporter. They stay in this crate: the libraries need none of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::{LogFormat, TelemetryArgs};

/// The standard variables that name the collector when `--otlp-endpoint` does not, the first
/// set one winning.
pub const ENDPOINT_VARIABLES: [&str; 2] =
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// The W3C trace context headers.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces (the API then adds its request spans and
/// async-graphql's).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The collector traces go to, if any: the flag, else the standard variables (blank is
/// unset); none when `OTEL_SDK_DISABLED` is `true`.
pub fn endpoint(args: &TelemetryArgs) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    args.otlp_endpoint
        .clone()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| ENDPOINT_VARIABLES.iter().find_map(|name| var(name)))
}

/// The exporter of a process that exports traces; [`Telemetry::shutdown`] sends what is
/// still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter (bounded by the exporter's own
    /// timeout). Blocking, so it runs off the async workers.
    pub async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("pop: exporting the last traces failed: {e}"),
            Err(e) => eprintln!("pop: exporting the last traces failed: {e}"),
        }
    }
}

/// Installs the global subscriber: the log layer, and the OpenTelemetry layer when `otlp`
/// (the command's settings and service name) names an endpoint. Must run inside the tokio
/// runtime (the gRPC exporter's connection lives on it). An endpoint that is not a URL is an
/// error: asked-for traces that silently go nowhere help nobody.
pub fn init(
    format: &LogFormat,
    otlp: Option<(&TelemetryArgs, &'static str)>,
) -> Result<Option<Telemetry>> {
    let mut layers = vec![log_layer(format)];
    let mut telemetry = None;
    let mut announce = None;
    if let Some((args, service)) = otlp
        && let Some(endpoint) = endpoint(args)
    {
        let provider = provider(&endpoint, service)?;
        let tracer = provider.tracer("pop");
        layers.push(
            tracing_opentelemetry::layer().with_tracer(tracer).with_filter(exported()).boxed(),
        );
        pop_worker::trace::install(Box::new(OtelPropagation));
        pop_store::trace::install(Box::new(OtelPropagation));
        EXPORTING.store(true, Ordering::Relaxed);
        announce = Some((endpoint, service));
        telemetry = Some(Telemetry { provider });
    }
    tracing_subscriber::registry().with(layers).init();
    // A CLI command's stderr is for its user: it says nothing about its own traces.
    if let Some((endpoint, service)) = announce.filter(|(_, s)| *s != "pop-cli") {
        tracing::info!(%endpoint, service, "exporting traces over OTLP/gRPC");
    }
    Ok(telemetry)
}

/// Logs go to stderr so that commands such as `pop log` keep stdout for data. `RUST_LOG`
/// filters (default `info`); `--log-format json` gives one JSON object per line for
/// collectors. Events only (see the module doc).
fn log_layer(format: &LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    // A blank RUST_LOG is taken as unset, as every blank variable is (newcomer11: the filter
    // accepted it and silenced every line, errors included).
    let blank = std::env::var_os("RUST_LOG").is_some_and(|v| v.to_string_lossy().trim().is_empty());
    if blank {
        eprintln!("pop: warning: RUST_LOG is set but blank: taken as unset (info)");
    }
    let filter = if blank {
        EnvFilter::new("info")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    };
    // Colours only on a terminal: a log file or pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => layer.with_filter(filter.and(EventsOnly)).boxed(),
        LogFormat::Json => layer.json().with_filter(filter.and(EventsOnly)).boxed(),
    }
}

/// What the OpenTelemetry layer takes: pop's spans and events and async-graphql's, at INFO
/// and above (a target prefix: `pop` covers every `pop_*` crate and the binary).
fn exported() -> Targets {
    Targets::new().with_target("pop", Level::INFO).with_target("async_graphql", Level::INFO)
}

/// A filter that lets events through and no span: decided per call site, once.
struct EventsOnly;

impl<S> Filter<S> for EventsOnly {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !meta.is_span()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() { Interest::never() } else { Interest::always() }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

fn provider(endpoint: &str, service: &'static str) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("the OTLP exporter to {endpoint:?}"))?;
    // `OTEL_SERVICE_NAME` (read by the default resource) wins over pop's name.
    let resource = match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.trim().is_empty() => Resource::builder().build(),
        _ => Resource::builder().with_service_name(service).build(),
    };
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// One W3C trace context (`traceparent`, maybe `tracestate`), as the propagator reads headers.
struct Incoming<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Makes `span` a child of the remote span `traceparent` (a malformed one is ignored), with
/// the vendors' `tracestate` that came with it (kept on the span and every child, and sent on
/// with their trace context).
fn join(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let parent = TraceContextPropagator::new().extract(&Incoming { traceparent, tracestate });
    // Fails only for a span that is not recorded: then there is nothing to join.
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of `span`, when it is recorded, and its `tracestate` when that is
/// not empty.
fn context_of(span: &tracing::Span) -> Option<(String, Option<String>)> {
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
    let traceparent = headers.remove(TRACEPARENT)?;
    Some((traceparent, headers.remove(TRACESTATE).filter(|s| !s.is_empty())))
}

/// The trace context a CLI call sends (`pop submit`, `pop gql`, ...): the `client` span the
/// call runs in (a root, or a child of the `TRACEPARENT` the environment names, as other
/// CLIs take it), and the headers that make the server's spans its children. When the CLI
/// does not export traces the span is disabled, and the environment's `TRACEPARENT` and
/// `TRACESTATE` go out as they are (nothing when they are unset or malformed).
pub fn client_call() -> (tracing::Span, Vec<(&'static str, String)>) {
    let span = tracing::info_span!(
        parent: None,
        "client",
        otel.name = "POST /graphql",
        otel.kind = "client",
    );
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let inherited = env("TRACEPARENT")
        .and_then(|t| pop_store::valid_traceparent(&t).map(str::to_string))
        .map(|t| (t, env("TRACESTATE").and_then(|s| valid_tracestate(&s))));
    if let Some((traceparent, tracestate)) = &inherited
        && !span.is_disabled()
    {
        join(&span, traceparent, tracestate.as_deref());
    }
    let context = if span.is_disabled() { inherited } else { context_of(&span) };
    let mut headers = Vec::new();
    if let Some((traceparent, tracestate)) = context {
        headers.push((TRACEPARENT, traceparent));
        if let Some(tracestate) = tracestate {
            headers.push((TRACESTATE, tracestate));
        }
    }
    (span, headers)
}

/// `value` when pop stores and forwards it as a `tracestate` ([`pop_store::valid_tracestate`]).
fn valid_tracestate(value: &str) -> Option<String> {
    pop_store::valid_tracestate(value).map(str::to_string)
}

/// Links `span` to the remote span `traceparent` (a malformed one is ignored).
fn link(span: &tracing::Span, traceparent: &str) {
    let cx = TraceContextPropagator::new().extract(&Incoming { traceparent, tracestate: None });
    span.add_link(cx.span().span_context().clone());
}

/// The worker's way to join an agenda's trace ([`pop_worker::trace`]), and the libraries' to
/// put the timed processes' commands and the projections' batches into the traces they
/// concern ([`pop_store::trace`]).
struct OtelPropagation;

impl pop_store::trace::Propagation for OtelPropagation {
    fn join(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
        join(span, traceparent, tracestate);
    }

    fn context(&self, span: &tracing::Span) -> Option<(String, Option<String>)> {
        context_of(span)
    }

    fn link(&self, span: &tracing::Span, traceparent: &str) {
        link(span, traceparent);
    }
}

impl pop_worker::trace::Propagation for OtelPropagation {
    fn join(&self, span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
        join(span, traceparent, tracestate);
    }

    fn context(&self, span: &tracing::Span) -> Option<(String, Option<String>)> {
        context_of(span)
    }
}

/// The `request` span of an HTTP request (a router layer, only while exporting): a child of
/// the client's `traceparent` when it sent one, named by method and route (not the path: ids
/// would make every name unique), with the response's status. The request goes on with the
/// span's own traceparent (and the client's `tracestate`, which the span carries on) in the
/// headers, which the API stores with the events it appends.
pub async fn trace_request(mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unrouted".to_string(), |p| p.as_str().to_string());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    {
        // (A block: a borrow of the request, which is not `Sync`, must not live across the
        // await below.)
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(traceparent) = header(TRACEPARENT) {
            join(&span, traceparent, header(TRACESTATE));
        }
    }
    let (own, state) = context_of(&span).map_or((None, None), |(p, s)| (Some(p), s));
    for (name, value) in [(TRACEPARENT, own), (TRACESTATE, state)] {
        match value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            Some(value) => {
                request.headers_mut().insert(name, value);
            }
            None => {
                request.headers_mut().remove(name);
            }
        }
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_spans_are_disabled_and_events_still_log() {
        let subscriber = tracing_subscriber::registry().with(vec![log_layer(&LogFormat::Text)]);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("command", stream = "agenda-c/1");
            assert!(span.is_disabled(), "a span nobody records must be disabled");
            assert!(tracing::enabled!(Level::INFO), "INFO events still reach the log");
        });
    }

    #[test]
    fn the_endpoint_comes_from_the_flag_first() {
        let args = TelemetryArgs { otlp_endpoint: Some("http://collector:4317".into()) };
        // The flag wins whatever the environment says (unless the SDK is disabled there,
        // which this test's environment does not do).
        if std::env::var("OTEL_SDK_DISABLED").is_err() {
            assert_eq!(endpoint(&args).as_deref(), Some("http://collector:4317"));
        }
        let blank = TelemetryArgs { otlp_endpoint: Some("  ".into()) };
        if ENDPOINT_VARIABLES.iter().all(|v| std::env::var(v).is_err()) {
            assert_eq!(endpoint(&blank), None);
            assert_eq!(endpoint(&TelemetryArgs::default()), None);
        }
    }
}
