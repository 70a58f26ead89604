//! What the use cases count, through the `metrics` facade (the server exports it at
//! `/metrics`): commands by name and outcome, and claims by insight with the time each agenda
//! waited in its queue. Transport metrics (requests, errors, subscriptions) are the
//! transports'.

use std::time::Duration;

/// Commands executed, by command name and outcome (`ok` or `refused`).
pub const COMMANDS: &str = "pop_api_commands_total";
/// Agendas this process handed out through `getAgenda` (by insight only when
/// [`crate::AppConfig::metrics_insight_labels`] is on).
pub const CLAIMS: &str = "pop_claims_total";
/// Per claim, the claim's time minus the agenda's `updatedTime` as read from the read model
/// while it was `queued` — the time of its `AgendaQueued` event (every event sets
/// `updatedTime`, and nothing else happens to a queued agenda), so a requeued agenda counts
/// from its latest queueing.
pub const CLAIM_LATENCY_SECONDS: &str = "pop_claim_latency_seconds";

/// One executed command (an append when it succeeded and changed something).
pub fn command<T, E: std::error::Error + 'static>(
    name: &'static str,
    executed: &Result<T, pop_store::ExecuteError<E>>,
) {
    let outcome = match executed {
        Ok(_) => "ok",
        // The store could not serve it (down, full, restarting): nothing the client did, and
        // an alert on refusals should not fire on an outage (ops3am10).
        Err(pop_store::ExecuteError::Store(e)) if e.is_unavailable() => "unavailable",
        Err(_) => "refused",
    };
    metrics::counter!(COMMANDS, "command" => name, "outcome" => outcome).increment(1);
}

/// One agenda claimed from `insight` after waiting `waited` in its queue; the insight is a
/// label only when `labelled` (insight ids are tenant data, and `/metrics` needs no token).
pub(crate) fn claimed(insight: &str, waited: Duration, labelled: bool) {
    if labelled {
        metrics::counter!(CLAIMS, "insight" => insight.to_string()).increment(1);
    } else {
        metrics::counter!(CLAIMS).increment(1);
    }
    metrics::histogram!(CLAIM_LATENCY_SECONDS).record(waited.as_secs_f64());
}
