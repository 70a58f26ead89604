//! A small GraphQL client for the CLI helpers (`pop submit`, `pop progress`, `pop watch`):
//! queries and mutations over HTTP, subscriptions over WebSocket with the
//! `graphql-transport-ws` protocol — the same API any dashboard uses. Each call sends W3C
//! trace context (`crate::telemetry::client_call`): a `pop submit` is the root of the
//! agenda's trace when the CLI exports traces, or continues the environment's `TRACEPARENT`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};
use tracing::Instrument;

use crate::cli::ClientArgs;

/// A client bound to one server and token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Where the token came from, for the message when the server rejects it.
    token_source: String,
    /// What a command printed as the next step needs to reach the same server with the same
    /// token ([`Client::next_step_flags`]).
    next_step_flags: String,
    /// `--timeout`: the longest one call waits for an answer.
    timeout: std::time::Duration,
    /// The cid the server gave its latest answer (`x-pop-cid`), for a refusal the command
    /// makes of it: a null answer carries no error, so no cid of its own (newcomer56 L5).
    last_cid: std::sync::Mutex<Option<String>>,
}

/// Longest a connection to the server may take to open (TCP, and a WebSocket's upgrade).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The subscription's connection was lost or closed by the server (a restart): the caller may
/// connect again and resume after the last position it saw.
/// What a call that found no server adds: where else to look.
const NOT_THERE: &str = "is `pop serve` running there? another address: --server or POP_SERVER";

#[derive(Debug)]
pub struct Disconnected(pub String);

impl std::fmt::Display for Disconnected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Disconnected {}

impl Client {
    /// The server's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token comes from `--token`/`POP_TOKEN`, else from the admin token the embedded
    /// default generated into its data directory (the five-minute tour needs no setup).
    pub fn new(args: &ClientArgs) -> Result<Client> {
        let token = token(args)?;
        let token_source = match &args.token {
            Some(_) => "--token or POP_TOKEN".to_string(),
            None => args.data_dir.join(pop_api::auth::ADMIN_TOKEN_FILE).display().to_string(),
        };
        // What the environment gives, the next command gets from it too; a token given is
        // not printed: the next command is told to take it too.
        let from_env = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
        let server = match from_env("POP_SERVER", &args.server) {
            true => crate::cli::DEFAULT_SERVER,
            false => args.server.as_str(),
        };
        // The data directory matters only for its admin token, without a token given.
        let data_dir = match args.token.is_none() && std::env::var_os("POP_DATA_DIR").is_none() {
            true => args.data_dir.as_path(),
            false => std::path::Path::new(crate::cli::DEFAULT_DATA_DIR),
        };
        let mut next_step_flags = crate::cli::client_flags(server, data_dir, true);
        if args.token.as_ref().is_some_and(|token| !from_env("POP_TOKEN", token)) {
            next_step_flags.push_str(" --token <the same token>");
        }
        // (The first client of the process names them: a command makes one.)
        let _ = crate::output::NEXT_STEP_FLAGS.set(next_step_flags.clone());
        // Bounded (newcomer54: with the server stopped by SIGSTOP, `pop agendas` printed nothing
        // for as long as it was left to wait).
        let timeout = std::time::Duration::from_secs(args.timeout);
        let http = reqwest::Client::builder()
            // Within the call's own bound, so that a connection that does not open is said as
            // one (reprobe54 L1: under --timeout 2 it was said as a server that did not answer).
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .context("making the HTTP client")?;
        Ok(Client {
            http,
            base: args.server.trim_end_matches('/').to_owned(),
            token,
            token_source,
            next_step_flags,
            timeout,
            last_cid: std::sync::Mutex::new(None),
        })
    }

    /// ` (cid …)` of the server's latest answer, to end a refusal the command makes of it (a
    /// NOT_FOUND for a null answer), so an operator can find the request in the server's log.
    pub fn cid_note(&self) -> String {
        match self.last_cid.lock().map(|cid| cid.clone()) {
            Ok(Some(cid)) => format!(" (cid {cid})"),
            _ => String::new(),
        }
    }

    /// The flags (each with its leading space) a command printed as the next step needs to
    /// reach this server as this caller: `--server` unless the default, then `--token` (not
    /// its value) when one was given, else `--data-dir` unless the default — each unless it
    /// came from the environment (`POP_SERVER`, …), which the next command has too (newcomer8: `pop
    /// init --server … --token …` said `next: pop worker --insight …`, which went to the
    /// default address with the data directory's token and failed).
    pub fn next_step_flags(&self) -> &str {
        &self.next_step_flags
    }

    /// Runs a query or mutation; GraphQL errors become one error naming code and message.
    /// An answer the server marks retryable (UNAVAILABLE: its store cannot serve right now,
    /// and nothing was done) is sent again after its `retryAfterSeconds`, for up to
    /// [`RETRY_FOR`] in all, saying so on stderr.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let body = match self.graphql_once(query, &variables).await {
                // Nothing reached the server (a restart, a rolling update): sending it again
                // cannot do anything twice.
                Err(e) if refused(&e) && started.elapsed() + CONNECT_PAUSE <= CONNECT_RETRY_FOR => {
                    eprintln!(
                        "pop: {e:#}; retrying in {} s (attempt {})",
                        CONNECT_PAUSE.as_secs(),
                        attempt + 1
                    );
                    tokio::time::sleep(CONNECT_PAUSE).await;
                    attempt += 1;
                    continue;
                }
                other => other?,
            };
            let wait = retry_after(&body);
            match wait {
                Some(wait) if started.elapsed() + wait <= RETRY_FOR => {
                    // With the cid of the answer, as every refusal has it (operator58 L2).
                    eprintln!(
                        "pop: {}{}; retrying in {} s (attempt {})",
                        first_error(&body),
                        self.cid_note(),
                        wait.as_secs(),
                        attempt + 1
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => {
                    check_errors(&body)?;
                    let url = format!("{}/graphql", self.base);
                    return body
                        .get("data")
                        .cloned()
                        .ok_or_else(|| anyhow!("{url} answered without data"));
                }
            }
        }
    }

    /// One request: the response body. It runs in a `client` span whose trace context goes
    /// out as its `traceparent` (see [`crate::telemetry::client_call`]).
    async fn graphql_once(&self, query: &str, variables: &Value) -> Result<Value> {
        let url = format!("{}/graphql", self.base);
        let (span, trace_headers) = crate::telemetry::client_call();
        let mut request = self.http.post(&url).bearer_auth(&self.token);
        for (name, value) in trace_headers {
            request = request.header(name, value);
        }
        let response = request
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .instrument(span)
            .await
            // The URL is said once, here (ops3am18: reqwest's "for url (…)" said it again).
            .map_err(reqwest::Error::without_url)
            .map_err(|e| self.unanswered(e, &url, query))?;
        let status = response.status();
        let cid =
            response.headers().get(pop_api::request::POP_CID_HEADER).and_then(|v| v.to_str().ok());
        if let (Ok(mut last), Some(cid)) = (self.last_cid.lock(), cid) {
            *last = Some(cid.to_owned());
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // The server's cid, as every other refusal carries it (newcomer56 L5): its header,
            // else (a proxy that dropped it) the error's extensions.
            let cid = match cid {
                Some(_) => self.cid_note(),
                None => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|body| {
                        body["errors"][0]["extensions"]["cid"]
                            .as_str()
                            .map(|cid| format!(" (cid {cid})"))
                    })
                    .unwrap_or_default(),
            };
            bail!(
                "UNAUTHENTICATED: {url} rejected the token (taken from {}); pass another with \
                 --token or POP_TOKEN{cid}",
                self.token_source,
            );
        }
        response
            .json()
            .await
            .map_err(|e| self.unanswered(e.without_url(), &url, query))
            .with_context(|| format!("reading {url} ({status})"))
    }

    /// What a call that got no answer says: a server that did not answer in time (a
    /// mutation it was sent may have been done), else one that is not there.
    fn unanswered(&self, e: reqwest::Error, url: &str, query: &str) -> anyhow::Error {
        // A connection that did not open in time sent nothing (review54 L1).
        if e.is_timeout() && !e.is_connect() {
            let maybe_done = match query.trim_start().starts_with("mutation") {
                true => {
                    "; the change it was asked for may still have been made, so read it back \
                     before sending it again"
                }
                false => "",
            };
            anyhow::Error::new(e).context(format!(
                "{url} did not answer within {} s (--timeout, POP_CLIENT_TIMEOUT): the server is \
                 stopped, paused or overloaded (its /healthz and /readyz say which){maybe_done}",
                self.timeout.as_secs()
            ))
        } else {
            anyhow::Error::new(e).context(format!("calling {url} ({NOT_THERE})"))
        }
    }

    /// Subscribes and calls `on_next` with each `data` payload until it returns `false` or the
    /// server completes the subscription. A lost or closed connection is a [`Disconnected`]
    /// error; a refusal (`error` message, GraphQL errors) any other.
    pub async fn subscribe(
        &self,
        query: &str,
        variables: Value,
        mut on_next: impl FnMut(&Value) -> Result<bool>,
    ) -> Result<()> {
        let ws_base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        let url = format!("{ws_base}/graphql/ws");
        let mut request = url.as_str().into_client_request().context("the WebSocket URL")?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        // The upgrade's trace context: the server stores it with the events of the connection's
        // mutations. The span ends with the upgrade (a subscription may last for hours).
        let (_span, trace_headers) = crate::telemetry::client_call();
        for (name, value) in trace_headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                request.headers_mut().insert(name, value);
            }
        }
        let (mut ws, _) =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
            {
                Ok(connected) => connected
                    .map_err(|e| Disconnected(format!("connecting to {url} ({NOT_THERE}): {e}")))?,
                Err(_) => {
                    return Err(Disconnected(format!(
                        "{url} did not open the subscription within {} s: the server is \
                         stopped, paused or overloaded (its /healthz and /readyz say which)",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                    .into());
                }
            };
        let send = |v: Value| tungstenite::Message::Text(v.to_string().into());
        let lost = |e: tungstenite::Error| Disconnected(format!("the connection to {url}: {e}"));
        ws.send(send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", self.token)}})))
            .await
            .map_err(lost)?;
        ws.send(send(json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})))
            .await
            .map_err(lost)?;
        // The server pings every 30 s (`pop_api::ws::PING_EVERY`): nothing for longer than two
        // of them is a server stopped or paused, said as a lost connection, which a watch
        // opens again (review54 L2: `pop watch` hung silently).
        let silent_for = pop_api::ws::PING_EVERY * 2 + CONNECT_TIMEOUT;
        loop {
            let Ok(message) = tokio::time::timeout(silent_for, ws.next()).await else {
                return Err(Disconnected(format!(
                    "{url} sent nothing for {} s, not even its pings: the server is stopped, \
                     paused or overloaded (its /healthz and /readyz say which)",
                    silent_for.as_secs()
                ))
                .into());
            };
            let Some(message) = message else { break };
            let text = match message.map_err(lost)? {
                tungstenite::Message::Text(t) => t,
                tungstenite::Message::Close(frame) => {
                    let why = frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "no reason".to_string());
                    if why.starts_with("4401") || why.starts_with("4403") {
                        bail!(
                            "UNAUTHENTICATED: the server closed the subscription ({why}); the \
                             token came from {}",
                            self.token_source
                        );
                    }
                    return Err(
                        Disconnected(format!("the server closed the connection ({why})")).into()
                    );
                }
                _ => continue,
            };
            let msg: Value = serde_json::from_str(&text).context("a subscription message")?;
            match msg["type"].as_str() {
                Some("next") => {
                    check_errors(&msg["payload"])?;
                    if !on_next(&msg["payload"]["data"])? {
                        let _ = ws.send(send(json!({"id": "1", "type": "complete"}))).await;
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                }
                Some("error") => bail!("subscription refused: {}", msg["payload"]),
                Some("complete") => return Ok(()),
                Some("ping") => ws.send(send(json!({"type": "pong"}))).await.map_err(lost)?,
                _ => {}
            }
        }
        Err(Disconnected(format!("the connection to {url} ended")).into())
    }
}

/// The bearer token of `args`: `--token`/`POP_TOKEN`, else the generated admin token.
pub fn token(args: &ClientArgs) -> Result<String> {
    match &args.token {
        Some(t) => sendable(t, "--token or POP_TOKEN"),
        None => read_token(&args.data_dir.join(pop_api::auth::ADMIN_TOKEN_FILE)),
    }
}

fn read_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| {
        format!("no --token given and no admin token at {} (set POP_TOKEN)", path.display())
    })?;
    sendable(&token, &path.display().to_string())
}

/// The token `given` (from `source`), without the white space around it (a Secret written
/// with `echo` ends in a newline), if an HTTP header can carry it: otherwise the request
/// failed to build and the error sent the operator to check the server's address (ops3am7).
fn sendable(given: &str, source: &str) -> Result<String> {
    let token = given.trim();
    if token.is_empty() {
        bail!("the token from {source} is empty");
    }
    if let Some((at, c)) = token.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        bail!(
            "the token from {source} holds a character an HTTP header cannot carry ({c:?} at \
             byte {at}): pop's tokens are printable ASCII without spaces; copy it again"
        );
    }
    Ok(token.to_owned())
}

/// How long [`Client::graphql`] keeps sending a request the server answered as retryable.
pub const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// How long [`Client::graphql`] keeps trying a server that refuses the connection: long
/// enough for a restart, short enough that a wrong `--server` is soon said.
pub const CONNECT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// The pause between two connection attempts.
const CONNECT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether `e` is a refused (or reset-before-sending) connection: the request never reached
/// the server. A timeout or a lost answer is not (the server may have acted).
pub(crate) fn refused(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_connect))
}

/// The pause before sending the request again, when every error of `body` is retryable.
fn retry_after(body: &Value) -> Option<std::time::Duration> {
    let errors = body.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty())?;
    let mut wait = 0;
    for e in errors {
        if e["extensions"]["retryable"] != true {
            return None;
        }
        wait = wait.max(e["extensions"]["retryAfterSeconds"].as_u64().unwrap_or(1));
    }
    Some(std::time::Duration::from_secs(wait.clamp(1, 10)))
}

/// `CODE: message` of the first error of `body`.
fn first_error(body: &Value) -> String {
    let e = &body["errors"][0];
    format!(
        "{}: {}",
        crate::output::one_line(e["extensions"]["code"].as_str().unwrap_or("ERROR")),
        crate::output::one_line(e["message"].as_str().unwrap_or("(no message)"))
    )
}

/// The CLI's flag for an API argument a problem names, where the names differ.
fn cli_flag(field: &str) -> Option<&'static str> {
    match field {
        "customerId" => Some("--customer <id>"),
        _ => None,
    }
}

fn check_errors(body: &Value) -> Result<()> {
    let Some(errors) = body.get("errors").and_then(Value::as_array) else { return Ok(()) };
    if errors.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = errors
        .iter()
        .map(|e| {
            let code = e["extensions"]["code"].as_str().unwrap_or("ERROR");
            // The server's message may quote a client's text (a worker's state message in
            // "cannot rerun an agenda that is EXECUTING/…"): shown on one line, escaped
            // (review-s40c: ESC sequences in it reached the terminal).
            let message = e["message"].as_str().unwrap_or("(no message)");
            let problems: Vec<String> = e["extensions"]["problems"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    let field = p["field"].as_str().unwrap_or("?");
                    format!(
                        "{}: {}{}",
                        crate::output::one_line(field),
                        crate::output::one_line(p["message"].as_str().unwrap_or("?")),
                        cli_flag(field).map(|f| format!(" (pop: {f})")).unwrap_or_default()
                    )
                })
                .collect();
            // The message joins the problems when it says nothing else: each is said once
            // (newcomer14: every problem printed twice, a single one on two identical lines).
            let said_in_list = e["extensions"]["problems"].as_array().is_some_and(|ps| {
                !ps.is_empty()
                    && ps.iter().all(|p| {
                        let field = p["field"].as_str().unwrap_or("?");
                        let said = p["message"].as_str().unwrap_or("?");
                        message.contains(&format!("{field}: {said}"))
                    })
            });
            let code = crate::output::one_line(code);
            let mut line = match problems.as_slice() {
                [one] if said_in_list => format!("{code}: {one}"),
                _ if said_in_list => format!("{code}:"),
                _ => format!("{code}: {}", crate::output::one_line(message)),
            };
            if !(said_in_list && problems.len() == 1) {
                for p in &problems {
                    line.push_str(&format!("\n  - {p}"));
                }
            }
            if let Some(cid) = e["extensions"]["cid"].as_str() {
                line.push_str(&format!(" (cid {cid})"));
            }
            line
        })
        .collect();
    bail!("{}", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::{check_errors, sendable};

    /// A server error quoting a client's text prints it escaped, on one line (review-s40c:
    /// a worker's state message with ESC sequences reached the terminal through `pop rerun`).
    /// Each problem is said once (newcomer14: the message joins them, and the list repeated
    /// them).
    #[test]
    fn a_validation_error_says_each_problem_once() {
        let problem = |f: &str, m: &str| serde_json::json!({"field": f, "message": m});
        let body = |message: &str, problems: Vec<serde_json::Value>| {
            serde_json::json!({"errors": [{"message": message,
                "extensions": {"code": "VALIDATION", "problems": problems, "cid": "c1"}}]})
        };
        let one = body(
            "customerId: \"job-1\" is used by 2 customers; name the customerId",
            vec![problem("customerId", "\"job-1\" is used by 2 customers; name the customerId")],
        );
        let said = check_errors(&one).expect_err("an error").to_string();
        assert_eq!(
            said,
            "VALIDATION: customerId: \"job-1\" is used by 2 customers; name the customerId \
             (pop: --customer <id>) (cid c1)"
        );
        let two = body(
            "payload.a: missing; payload.b: missing",
            vec![problem("payload.a", "missing"), problem("payload.b", "missing")],
        );
        let said = check_errors(&two).expect_err("an error").to_string();
        assert_eq!(said, "VALIDATION:\n  - payload.a: missing\n  - payload.b: missing (cid c1)");
        // A message that says more than its problems is kept.
        let more = body("the template cannot run", vec![problem("payload.a", "missing")]);
        let said = check_errors(&more).expect_err("an error").to_string();
        assert_eq!(said, "VALIDATION: the template cannot run\n  - payload.a: missing (cid c1)");
    }

    #[test]
    fn a_server_error_prints_a_clients_text_escaped() {
        let body = serde_json::json!({"errors": [{"message":
            "cannot rerun an agenda that is EXECUTING/x\u{1b}[2K\r2026 forged\u{2028}row",
            "extensions": {"code": "CONFLICT", "problems": [{"field": "a\nb", "message": "m\u{1b}"}]}}]});
        let said = check_errors(&body).expect_err("an error").to_string();
        assert!(!said.contains(['\u{1b}', '\r', '\u{2028}']), "{said:?}");
        assert_eq!(said.lines().count(), 2, "the message and its one problem: {said:?}");
    }

    #[test]
    fn a_token_is_trimmed_and_one_no_header_can_carry_is_named() {
        assert_eq!(sendable("tok_abc\n", "POP_TOKEN").unwrap(), "tok_abc");
        assert_eq!(sendable("  tok_abc \r\n", "POP_TOKEN").unwrap(), "tok_abc");
        let inner = sendable("tok\nabc", "POP_TOKEN").unwrap_err().to_string();
        assert!(inner.contains("cannot carry") && inner.contains("POP_TOKEN"), "{inner}");
        let empty = sendable(" \n", "--token or POP_TOKEN").unwrap_err().to_string();
        assert!(empty.contains("is empty"), "{empty}");
        assert!(sendable("tök", "x").unwrap_err().to_string().contains("cannot carry"));
    }
}
