//! The worker's view of the pop API: `getAgenda`, `updateAgendaProgress`, `expandAgenda` and
//! `releaseAgenda` behind a trait, so the executor is tested against a fake and runs against
//! the real GraphQL endpoint ([`GraphqlApi`]) in production.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

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
    /// The request may succeed later (connection refused, timeout, 5xx, `INTERNAL`, `TIMEOUT`).
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
}

/// The lease an agenda is held under, as `getAgenda` answered it: every report names its `id`
/// (so a report from this executor is refused once the agenda was reclaimed and claimed again,
/// even by another executor sharing the token), and reports renew it before `expires`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: String,
    /// The server's clock.
    pub expires: Timestamp,
}

/// One agenda handed out by `getAgenda`, with its progress (to resume from) and its lease
/// (`None` from a server that does not answer one).
#[derive(Debug, Clone)]
pub struct Claimed {
    pub agenda: Agenda,
    pub progress: Option<AgendaProgress>,
    pub lease: Option<Lease>,
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
    /// Appends a generator's operations (the server validates them) and merges params.
    async fn expand(
        &self,
        agenda_id: &str,
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
    resultPayload } } lease { id expires } } }";

const UPDATE: &str =
    "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { position } }";

const RELEASE: &str = "mutation($a: String!, $c: String, $l: String!) { releaseAgenda(agendaId: $a, \
    customerId: $c, leaseId: $l) { position } }";

const EXPAND: &str = "mutation($a: String!, $o: JSON!, $p: JSON) { expandAgenda(agendaId: $a, \
    operations: $o, params: $p) { position } }";

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

    async fn call(&self, query: &str, variables: Value) -> Result<Value, ApiError> {
        self.call_waiting(query, variables, Duration::ZERO).await
    }

    /// [`Self::call`] for a request the server may hold up to `wait` before it answers.
    async fn call_waiting(
        &self,
        query: &str,
        variables: Value,
        wait: Duration,
    ) -> Result<Value, ApiError> {
        let response = self
            .http
            .post(&self.url)
            .timeout(CALL_TIMEOUT + wait)
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(|e| ApiError::Transient(format!("calling {}: {e}", self.url)))?;
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(e) => {
                return Err(ApiError::Transient(format!("{} answered {status}: {e}", self.url)));
            }
        };
        if let Some(error) = body.get("errors").and_then(Value::as_array).and_then(|e| e.first()) {
            let code = error["extensions"]["code"].as_str().unwrap_or("INTERNAL").to_string();
            let message = error["message"].as_str().unwrap_or("(no message)").to_string();
            return Err(match code.as_str() {
                "INTERNAL" | "TIMEOUT" | "UNAVAILABLE" => {
                    ApiError::Transient(format!("{code}: {message}"))
                }
                _ => ApiError::Refused { code, message },
            });
        }
        if status.is_server_error() {
            return Err(ApiError::Transient(format!("{} answered {status}", self.url)));
        }
        body.get("data").cloned().filter(|d| !d.is_null()).ok_or_else(|| {
            ApiError::Transient(format!("{} answered {status} without data", self.url))
        })
    }
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
        let data = self.call_waiting(GET_AGENDA, variables, wait).await?;
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
                })
                .filter(|l| !l.id.is_empty()),
            };
            claimed.push(Claimed { agenda, progress, lease });
        }
        Ok(claimed)
    }

    async fn update_progress(&self, report: &Value) -> Result<(), ApiError> {
        self.call(UPDATE, json!({"p": report})).await.map(|_| ())
    }

    async fn expand(
        &self,
        agenda_id: &str,
        operations: &[Operation],
        params: &Params,
    ) -> Result<(), ApiError> {
        let params = if params.is_empty() { Value::Null } else { json!(params) };
        self.call(EXPAND, json!({"a": agenda_id, "o": operations, "p": params})).await.map(|_| ())
    }

    async fn release(
        &self,
        agenda_id: &str,
        customer_id: &str,
        lease_id: &str,
    ) -> Result<(), ApiError> {
        let customer = Some(customer_id).filter(|c| !c.is_empty());
        self.call(RELEASE, json!({"a": agenda_id, "c": customer, "l": lease_id})).await.map(|_| ())
    }
}
