//! The worker's view of the pop API: `getAgenda`, `updateAgendaProgress`, `expandAgenda` and
//! `releaseAgenda` behind a trait, so the executor is tested against a fake and runs against
//! the real GraphQL endpoint ([`GraphqlApi`]) in production.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::Instrument;

use pop_domain::Params;
use pop_domain::model::{Agenda, AgendaProgress, Operation, Timestamp};

/// Why a call failed, split by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The server refused the request for a reason that will not change by sending it again
    /// (`CONFLICT`: lease lost, agenda complete or cancelled; `VALIDATION`, `NOT_FOUND`,
    /// `FORBIDDEN`, `UNAUTHENTICATED`).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// The request may succeed later (connection refused, timeout, 5xx, `INTERNAL`, `TIMEOUT`,
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `BUSY`).
    #[error("{0}")]
    Transient(String),
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transient(_))
    }

    /// The server's error code, when it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Refused { code, .. } => Some(code),
            ApiError::Transient(_) => None,
        }
    }

    /// Whether the server refused because a user cancelled the agenda (no fault of the
    /// worker's: it stops the agenda's operations and says so at INFO, not as a failure).
    pub fn is_cancelled(&self) -> bool {
        // The refusal's own words (a lease refusal may mention a cancel among its causes).
        matches!(self, ApiError::Refused { code, message } if code == "CONFLICT"
            && (message.contains("agenda was cancelled") || message.contains("COMPLETE/cancelled")))
    }
}

/// An error and its causes on one line: reqwest's own text ("error sending request for
/// url") leaves out why (refused, reset, timed out), which its sources say (ops3am2).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// The lease an agenda is held under, as `getAgenda` answered it: every report names its `id`
/// (so a report from this executor is refused once the agenda was reclaimed and claimed again,
/// even by another executor sharing the token), and reports renew it before `expires`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: String,
    /// The server's clock.
    pub expires: Timestamp,
    /// How long it had left when the server answered, by the server's clock (`None`: a server
    /// that does not say): what the heartbeat is sized from, so a machine whose clock is off
    /// does not renew every 100 ms (ops3am10).
    pub left: Option<Duration>,
}

/// One agenda handed out by `getAgenda`, with its progress (to resume from) and its lease
/// (`None` from a server that does not answer one).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub agenda: Agenda,
    pub progress: Option<AgendaProgress>,
    pub lease: Option<Lease>,
    /// The W3C trace context the agenda's work joins ([`crate::trace`]); `None` when no
    /// traced request touched it, or from a server that does not answer one.
    pub traceparent: Option<std::sync::Arc<str>>,
    /// The `tracestate` that came with it, sent back with it.
    pub tracestate: Option<std::sync::Arc<str>>,
}

impl Claimed {
    /// The id progress is reported under (the agenda's `progressId`, else its id).
    pub fn progress_id(&self) -> String {
        self.agenda
            .progress_id
            .clone()
            .filter(|p| !p.is_empty())
            .or_else(|| self.progress.as_ref().map(|p| p.id.clone()).filter(|p| !p.is_empty()))
            .unwrap_or_else(|| self.agenda.id.clone())
    }
}

/// What the worker needs from the server.
#[async_trait]
pub trait WorkApi: Send + Sync + 'static {
    /// Claims up to `count` queued agendas of an insight; when there are none, waits up to
    /// `wait` (whole seconds; zero: answers at once) for one to be queued.
    async fn get_agenda(
        &self,
        insight_id: &str,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, ApiError>;
    /// Sends one POP AgendaProgress report (renews the lease).
    async fn update_progress(&self, report: &Value) -> Result<(), ApiError>;
    /// [`Self::update_progress`], answering the agenda's `processingStateMessage` as the
    /// server recorded it, when the API says (`None`: it did not).
    async fn update_progress_recorded(&self, report: &Value) -> Result<Option<String>, ApiError> {
        self.update_progress(report).await.map(|()| None)
    }
    /// Appends a generator's operations (the server validates them) and merges params. The
    /// customer names the agenda: two customers may use one agenda id, and a pool's worker
    /// serves both.
    async fn expand(
        &self,
        agenda_id: &str,
        customer_id: &str,
        operations: &[Operation],
        params: &Params,
    ) -> Result<(), ApiError>;
    /// Hands an agenda back at once under its lease (`releaseAgenda`): a worker that stops
    /// gracefully does not leave it to wait for the lease to run out.
    async fn release(
        &self,
        agenda_id: &str,
        customer_id: &str,
        lease_id: &str,
    ) -> Result<(), ApiError>;
}

const GET_AGENDA: &str = "mutation($i: String!, $n: Int!, $w: Int) { getAgenda(insightId: $i, \
    count: $n, waitSeconds: $w) { \
    agenda { id customerId title progressId params linkId agendaInsight { resourcePoolId insightId } \
    operations { name type id payload params } } \
    progress { id agendaId operationProgress { operation processingState processingStateMessage \
    resultPayload } } lease { id expires expiresInMs } traceparent tracestate } }";

const UPDATE: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { position \
    progress { processingStateMessage } } }";

const RELEASE: &str = "mutation($a: String!, $c: String, $l: String!) { releaseAgenda(agendaId: $a, \
    customerId: $c, leaseId: $l) { position } }";

const EXPAND: &str = "mutation($a: String!, $c: String, $o: JSON!, $p: JSON) { \
    expandAgenda(agendaId: $a, customerId: $c, operations: $o, params: $p) { position } }";

/// The pop GraphQL API over HTTP with a bearer token.
#[derive(Debug, Clone)]
pub struct GraphqlApi {
    http: reqwest::Client,
    url: String,
    token: String,
}

/// How long one API call may take before it counts as a transient failure (on top of the
/// wait a waiting `getAgenda` asks for).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl GraphqlApi {
    /// `base` is the server's base URL (`http://127.0.0.1:8080`).
    pub fn new(base: &str, token: &str) -> Result<GraphqlApi, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| ApiError::Transient(format!("building the HTTP client: {e}")))?;
        Ok(GraphqlApi {
            http,
            url: format!("{}/graphql", base.trim_end_matches('/')),
            token: token.to_string(),
        })
    }

    async fn call(
        &self,
        operation: &'static str,
        query: &str,
        variables: Value,
    ) -> Result<Value, ApiError> {
        self.call_waiting(operation, query, variables, Duration::ZERO).await
    }

    /// [`Self::call`] for a request the server may hold up to `wait` before it answers.
    ///
    /// An answer that says the server cannot serve right now and nothing was done
    /// (UNAVAILABLE — a store that cannot write — or a 503) is sent again after the pause it
    /// asks for (`retryAfterSeconds`, else `Retry-After`, else 1 s; at most
    /// [`MAX_RETRY_AFTER`]) plus up to half as much jitter, so the workers of a pool do not
    /// all come back at once, for up to [`UNAVAILABLE_RETRY_FOR`] in all. Only then is it a
    /// transient failure to the caller: a short outage is no failed operation.
    ///
    /// Work for an agenda runs in its span ([`crate::trace`]): the call is then an `api` span
    /// of it, whose trace context goes out as the `traceparent` header.
    async fn call_waiting(
        &self,
        operation: &'static str,
        query: &str,
        variables: Value,
        wait: Duration,
    ) -> Result<Value, ApiError> {
        // Only an agenda's work is traced: an idle puller's polls are nobody's trace.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!("api", operation, otel.kind = "client")
        };
        let body = json!({"query": query, "variables": variables});
        async {
            let started = tokio::time::Instant::now();
            let mut attempt = 1u32;
            loop {
                match self.send(&body, wait).await {
                    Sent::Answered(result) => return result,
                    Sent::Unavailable { error, retry_after } => {
                        let pause = jittered(retry_after);
                        if started.elapsed() + pause > UNAVAILABLE_RETRY_FOR {
                            return Err(error);
                        }
                        tracing::info!(
                            operation,
                            attempt,
                            retry_in = ?pause,
                            error = %error,
                            "the server cannot serve right now; sending again"
                        );
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Sends the request once.
    async fn send(&self, body: &Value, wait: Duration) -> Sent {
        let mut request =
            self.http.post(&self.url).timeout(CALL_TIMEOUT + wait).bearer_auth(&self.token);
        for (name, value) in crate::trace::outgoing() {
            request = request.header(name, value);
        }
        let response = match request.json(body).send().await {
            Ok(response) => response,
            Err(e) => {
                // The URL is said once (ops3am18: reqwest's "for url (…)" said it again).
                return Sent::Answered(Err(ApiError::Transient(format!(
                    "calling {}: {}",
                    self.url,
                    with_causes(&e.without_url())
                ))));
            }
        };
        let status = response.status();
        let header_wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(e) => {
                let error = ApiError::Transient(format!("{} answered {status}: {e}", self.url));
                return match status {
                    reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                        Sent::Unavailable { error, retry_after: retry_pause(header_wait) }
                    }
                    _ => Sent::Answered(Err(error)),
                };
            }
        };
        if let Some(errors) = body.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty())
        {
            let error = &errors[0];
            let code = match status {
                // A body over the server's limit: said apart, so a report can be sent again
                // without what made it too large (ops3am24).
                reqwest::StatusCode::PAYLOAD_TOO_LARGE => TOO_LARGE.to_string(),
                _ => error["extensions"]["code"].as_str().unwrap_or("INTERNAL").to_string(),
            };
            let message = error["message"].as_str().unwrap_or("(no message)").to_string();
            let error = match code.as_str() {
                // A deadline passed (the store stalled) or too many calls at once: nothing
                // refused the call, and a report carries the whole state, so sending it again
                // is safe (ops3am22: a second DEADLINE_EXCEEDED past the retry budget dropped
                // every running agenda of the worker, each then losing an attempt).
                "INTERNAL" | "TIMEOUT" | "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "BUSY" => {
                    ApiError::Transient(format!("{code}: {message}"))
                }
                _ => ApiError::Refused { code, message },
            };
            // Sent again only when every error says nothing was done (one refusal among
            // them stands).
            let unavailable = |e: &Value| {
                e["extensions"]["code"] == "UNAVAILABLE" || e["extensions"]["retryable"] == true
            };
            if errors.iter().all(unavailable) || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            {
                let asked = errors
                    .iter()
                    .filter_map(|e| e["extensions"]["retryAfterSeconds"].as_u64())
                    .max()
                    .or(header_wait);
                return Sent::Unavailable { error, retry_after: retry_pause(asked) };
            }
            return Sent::Answered(Err(error));
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            let error = ApiError::Transient(format!("{} answered {status}", self.url));
            return Sent::Unavailable { error, retry_after: retry_pause(header_wait) };
        }
        if status.is_server_error() {
            let error = ApiError::Transient(format!("{} answered {status}", self.url));
            return Sent::Answered(Err(error));
        }
        Sent::Answered(body.get("data").cloned().filter(|d| !d.is_null()).ok_or_else(|| {
            ApiError::Transient(format!("{} answered {status} without data", self.url))
        }))
    }
}

/// The code of a refusal of a request body over the server's limit (HTTP 413; the server's
/// own code is BAD_REQUEST).
pub const TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";

/// How long one call keeps being sent again while the server answers that it cannot serve
/// right now (see [`GraphqlApi`]'s calls). A report's caller retries beyond it anyway; an
/// expansion fails only after several such calls.
pub const UNAVAILABLE_RETRY_FOR: Duration = Duration::from_secs(30);

/// The longest pause between two sends of one call, whatever the server asks for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// What one send came to.
enum Sent {
    Answered(Result<Value, ApiError>),
    /// The server cannot serve right now and did nothing: send again after `retry_after`.
    Unavailable {
        error: ApiError,
        retry_after: Duration,
    },
}

/// The pause the server asked for (seconds), within 1 s..=[`MAX_RETRY_AFTER`].
fn retry_pause(asked: Option<u64>) -> Duration {
    Duration::from_secs(asked.unwrap_or(1)).clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
}

/// `pause` plus a random 0–50 % (from the standard library's per-process random hash keys:
/// no random number crate for this).
fn jittered(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let fraction = (hasher.finish() % 1000) as f64 / 2000.0;
    pause + pause.mul_f64(fraction)
}

#[async_trait]
impl WorkApi for GraphqlApi {
    async fn get_agenda(
        &self,
        insight_id: &str,
        count: usize,
        wait: Duration,
    ) -> Result<Vec<Claimed>, ApiError> {
        let variables = json!({"i": insight_id, "n": count, "w": wait.as_secs()});
        let data = self.call_waiting("getAgenda", GET_AGENDA, variables, wait).await?;
        let items = data["getAgenda"].as_array().cloned().unwrap_or_default();
        let mut claimed = Vec::with_capacity(items.len());
        for item in items {
            let agenda: Agenda = serde_json::from_value(item["agenda"].clone()).map_err(|e| {
                ApiError::Refused { code: "DECODE".into(), message: format!("an agenda: {e}") }
            })?;
            let progress = match &item["progress"] {
                Value::Null => None,
                p => Some(serde_json::from_value::<AgendaProgress>(p.clone()).map_err(|e| {
                    ApiError::Refused { code: "DECODE".into(), message: format!("a progress: {e}") }
                })?),
            };
            let lease = match &item["lease"] {
                Value::Null => None,
                l => Some(Lease {
                    id: l["id"].as_str().unwrap_or_default().to_string(),
                    expires: serde_json::from_value(l["expires"].clone()).map_err(|e| {
                        ApiError::Refused {
                            code: "DECODE".into(),
                            message: format!("a lease expiry: {e}"),
                        }
                    })?,
                    left: l["expiresInMs"].as_u64().map(Duration::from_millis),
                })
                .filter(|l| !l.id.is_empty()),
            };
            let traceparent = item["traceparent"].as_str().map(std::sync::Arc::from);
            let tracestate = item["tracestate"].as_str().map(std::sync::Arc::from);
            claimed.push(Claimed { agenda, progress, lease, traceparent, tracestate });
        }
        Ok(claimed)
    }

    async fn update_progress(&self, report: &Value) -> Result<(), ApiError> {
        self.update_progress_recorded(report).await.map(|_| ())
    }

    async fn update_progress_recorded(&self, report: &Value) -> Result<Option<String>, ApiError> {
        let answer = self.call("updateAgendaProgress", UPDATE, json!({"p": report})).await?;
        let recorded = &answer["updateAgendaProgress"]["progress"]["processingStateMessage"];
        Ok(recorded.as_str().map(str::to_owned))
    }

    async fn expand(
        &self,
        agenda_id: &str,
        customer_id: &str,
        operations: &[Operation],
        params: &Params,
    ) -> Result<(), ApiError> {
        let params = if params.is_empty() { Value::Null } else { json!(params) };
        let customer = Some(customer_id).filter(|c| !c.is_empty());
        let variables = json!({"a": agenda_id, "c": customer, "o": operations, "p": params});
        self.call("expandAgenda", EXPAND, variables).await.map(|_| ())
    }

    async fn release(
        &self,
        agenda_id: &str,
        customer_id: &str,
        lease_id: &str,
    ) -> Result<(), ApiError> {
        let customer = Some(customer_id).filter(|c| !c.is_empty());
        self.call("releaseAgenda", RELEASE, json!({"a": agenda_id, "c": customer, "l": lease_id}))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod cause_tests {
    use super::*;

    /// A cancel is told by the refusal's own words, not by any mention of a cancel: a lease
    /// refusal names a user's cancel and rerun among its causes (the e2e test of a stale
    /// executor read it as cancelled).
    #[test]
    fn a_cancel_is_told_by_the_refusals_own_words() {
        let refused =
            |message: &str| ApiError::Refused { code: "CONFLICT".into(), message: message.into() };
        assert!(refused("agenda \"a\": agenda was cancelled").is_cancelled());
        assert!(refused("agenda is already COMPLETE/cancelled").is_cancelled());
        let superseded = "the lease of holder \"w\" is not the agenda's current lease: it was \
            superseded (the agenda was reclaimed, or cancelled or rerun by a user, and claimed \
            again) or it is not this agenda's";
        assert!(!refused(superseded).is_cancelled());
    }

    /// A refused connection says so, not only "error sending request".
    #[tokio::test]
    async fn a_failed_call_names_its_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("an address").port();
        drop(listener);
        let e = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens");
        let line = with_causes(&e.without_url());
        assert!(line.contains("error sending request"), "{line}");
        assert!(line.to_lowercase().contains("refused"), "{line}");
        // The caller says the URL; reqwest's text does not again (ops3am18).
        assert!(!line.contains("127.0.0.1"), "{line}");
    }
}
