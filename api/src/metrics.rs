//! The API's Prometheus metrics: request latencies and outcomes, error codes, commands
//! (appends) by mutation, active subscriptions, and — computed at scrape time — how far the
//! projections are behind the store's head. One process-wide recorder, installed on first
//! use, because the `metrics` facade has one global recorder.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "pop_api_requests_total";
pub const REQUEST_SECONDS: &str = "pop_api_request_duration_seconds";
pub const ERRORS: &str = "pop_api_errors_total";
pub const COMMANDS: &str = "pop_api_commands_total";
pub const SUBSCRIPTIONS_ACTIVE: &str = "pop_api_subscriptions_active";
pub const STORE_HEAD: &str = "pop_store_head_position";
pub const PROJECTION_APPLIED: &str = "pop_projection_applied_position";
pub const PROJECTION_LAG: &str = "pop_projection_lag_events";
pub const PROJECTION_READY: &str = "pop_projection_ready";
pub const PROJECTION_SKIPPED: &str = "pop_projection_skipped_events";

/// Latency buckets in seconds: a read answers in well under a millisecond, a command in a few
/// (an fsync'd append); anything near a second is a problem worth seeing in its own bucket.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first call. `None` when
/// another recorder was installed first (the embedding program chose its own exporter).
pub fn prometheus_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.to_string()), LATENCY_BUCKETS);
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets rejected; latencies are summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics is empty");
                    None
                }
            }
        })
        .clone()
}

pub(crate) fn request(elapsed: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn error(code: &str) {
    metrics::counter!(ERRORS, "code" => code.to_string()).increment(1);
}

/// One executed command (an append when it succeeded and changed something).
pub(crate) fn command(name: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "refused" };
    metrics::counter!(COMMANDS, "command" => name, "outcome" => outcome).increment(1);
}

pub(crate) fn subscription_started() {
    metrics::gauge!(SUBSCRIPTIONS_ACTIVE).increment(1.0);
}

pub(crate) fn subscription_ended() {
    metrics::gauge!(SUBSCRIPTIONS_ACTIVE).decrement(1.0);
}

/// The distance between two log positions in events, for sequence positions (every
/// backend pop has today); two-part positions use their commit parts.
pub(crate) fn lag(head: pop_store::Position, applied: pop_store::Position) -> u64 {
    head.commit().saturating_sub(applied.commit())
}

/// Sets the gauges that are computed at scrape time.
pub(crate) fn projection_gauges(
    head: pop_store::Position,
    applied: pop_store::Position,
    ready: bool,
    skipped: u64,
) {
    metrics::gauge!(STORE_HEAD).set(head.commit() as f64);
    metrics::gauge!(PROJECTION_APPLIED).set(applied.commit() as f64);
    metrics::gauge!(PROJECTION_LAG).set(lag(head, applied) as f64);
    metrics::gauge!(PROJECTION_READY).set(if ready { 1.0 } else { 0.0 });
    metrics::gauge!(PROJECTION_SKIPPED).set(skipped as f64);
}
