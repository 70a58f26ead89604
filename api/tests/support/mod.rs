//! Test support: a real server (axum on 127.0.0.1:0, a SQLite store in a temp dir, the real
//! projections runner), principals for two customers, a GraphQL-over-HTTP helper and a small
//! raw graphql-transport-ws client that keeps the order of every message it receives.

// Test support panics on setup failures on purpose: a broken fixture should fail the test
// loudly. Not every test uses every helper.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pop_api::auth::{Role, Tokens, principal};
use pop_api::serve::HttpTimeouts;
use pop_api::ws::WsLimits;
use pop_api::{ApiConfig, AppState, router_with};
use pop_projections::{Projections, ReadModels, Runner, RunnerConfig};
use pop_store::{Commands, EventStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const ADMIN: &str = "tok_admin_0000000000000000000000";
/// A user of customer `acme`.
pub const ACME: &str = "tok_acme_00000000000000000000000";
/// A user of customer `globex`.
pub const GLOBEX: &str = "tok_globex_000000000000000000000";
/// A worker of customer `acme` (which submits to ops' global insight: it takes only acme's
/// agendas from it).
pub const ACME_SERVICE: &str = "tok_acme_service_000000000000000";
/// A second worker of `acme` (a different lease holder).
pub const ACME_SERVICE_2: &str = "tok_acme_service_2_0000000000000";
/// An admin limited to `acme`.
pub const ACME_ADMIN: &str = "tok_acme_admin_00000000000000000";
/// The worker of `ops`, which runs `pool-1` and its global insight: it serves every customer.
pub const OPS_SERVICE: &str = "tok_ops_service_0000000000000000";
/// A second worker of `ops` (a different lease holder).
pub const OPS_SERVICE_2: &str = "tok_ops_service_2_00000000000000";
/// A worker of customer `globex` (a tenant of ops' global insight).
pub const GLOBEX_SERVICE: &str = "tok_globex_service_0000000000000";
/// A worker of both `acme` and `globex` that does not run the insight: it takes both
/// customers' agendas from it as a tenant would.
pub const TWO_CUSTOMERS_SERVICE: &str = "tok_two_customers_service_000000";

/// Longest any test waits for an expected message before failing with a clear message.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub state: AppState,
    pub store: Arc<dyn EventStore>,
    pub commands: Arc<Commands>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub fn tokens() -> Tokens {
    let mut t = Tokens::new();
    t.insert(ADMIN, principal("admin", Role::Admin, &["*"])).unwrap();
    t.insert(ACME, principal("acme-user", Role::User, &["acme"])).unwrap();
    t.insert(GLOBEX, principal("globex-user", Role::User, &["globex"])).unwrap();
    t.insert(ACME_SERVICE, principal("acme-worker", Role::Service, &["acme"])).unwrap();
    t.insert(ACME_SERVICE_2, principal("acme-worker-2", Role::Service, &["acme"])).unwrap();
    t.insert(ACME_ADMIN, principal("acme-admin", Role::Admin, &["acme"])).unwrap();
    t.insert(OPS_SERVICE, principal("ops-worker", Role::Service, &["ops"])).unwrap();
    t.insert(OPS_SERVICE_2, principal("ops-worker-2", Role::Service, &["ops"])).unwrap();
    t.insert(GLOBEX_SERVICE, principal("globex-worker", Role::Service, &["globex"])).unwrap();
    t.insert(TWO_CUSTOMERS_SERVICE, principal("two-worker", Role::Service, &["acme", "globex"]))
        .unwrap();
    t
}

/// A server with the real projections runner.
pub async fn start(config: ApiConfig) -> TestServer {
    start_with(config, true).await
}

/// A server; without `runner`, the projections never move (for timeout and readiness tests).
pub async fn start_with(config: ApiConfig, runner: bool) -> TestServer {
    start_full(config, runner, WsLimits::default(), HttpTimeouts::default()).await
}

/// A server with the real projections runner and other WebSocket limits.
pub async fn start_with_ws_limits(config: ApiConfig, ws_limits: WsLimits) -> TestServer {
    start_full(config, true, ws_limits, HttpTimeouts::default()).await
}

/// A server with the real projections runner and other HTTP connection timeouts.
pub async fn start_with_http_timeouts(timeouts: HttpTimeouts) -> TestServer {
    start_full(ApiConfig::default(), true, WsLimits::default(), timeouts).await
}

async fn start_full(
    config: ApiConfig,
    runner: bool,
    ws_limits: WsLimits,
    timeouts: HttpTimeouts,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteStore::open(dir.path().join("pop.db"), SqliteOptions::default()).await.unwrap(),
    );
    let commands = Arc::new(Commands::new(Arc::clone(&store)));
    let projections: Projections = if runner {
        let (runner, projections) =
            Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
        tokio::spawn(async move {
            if let Err(e) = runner.run(std::future::pending()).await {
                panic!("projections runner stopped: {e}");
            }
        });
        projections
    } else {
        Projections::with_models(ReadModels::new())
    };
    let state =
        AppState::new(Arc::clone(&store), Arc::clone(&commands), projections, tokens(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router_with(state.clone(), ws_limits);
    tokio::spawn(pop_api::serve::serve(listener, app, timeouts, std::future::pending()));
    TestServer {
        base: format!("http://{addr}"),
        addr,
        state,
        store,
        commands,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestServer {
    /// POSTs a GraphQL request; returns the HTTP status and the JSON body.
    pub async fn post(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/graphql", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, json)
    }

    /// Runs `query` with `variables`; returns the whole response body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        self.post(Some(token), json!({"query": query, "variables": variables})).await.1
    }

    /// Runs `query` and returns `data`, failing the test on any error.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}\nquery: {query}");
        body["data"].clone()
    }

    /// Runs `query`, expects exactly one error, and returns it.
    pub async fn err(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        let errors =
            body["errors"].as_array().unwrap_or_else(|| panic!("expected an error, got {body:#}"));
        assert_eq!(errors.len(), 1, "{body:#}");
        errors[0].clone()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }

    /// Creates the pool, the customers `acme` and `globex` on it and a global insight that
    /// takes `ffmpeg` operations; returns the position of the last write.
    pub async fn seed(&self) -> String {
        self.ok(
            ADMIN,
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await;
        for c in ["acme", "globex"] {
            self.ok(
                ADMIN,
                "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
                json!({"c": {"id": c, "title": c, "resourcePoolId": "pool-1"}}),
            )
            .await;
        }
        let data = self
            .ok(
                ADMIN,
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": "transcode", "customerId": "ops", "title": "Transcode",
                    "resourcePoolId": "pool-1", "queueSize": 5, "isGlobal": true,
                    "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await;
        data["createInsight"]["position"].as_str().unwrap().to_string()
    }

    /// Submits an agenda for `customer` as `token`, waiting for config up to `after`; returns
    /// (agenda id, position).
    pub async fn submit(
        &self,
        token: &str,
        customer: &str,
        link: &str,
        after: &str,
    ) -> (String, String) {
        let data = self
            .ok(
                token,
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { agenda { id } position } }",
                json!({"a": agenda(customer, link), "p": after}),
            )
            .await;
        (
            data["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string(),
            data["submitAgenda"]["position"].as_str().unwrap().to_string(),
        )
    }

    pub async fn cancel(&self, token: &str, id: &str) -> String {
        let data = self
            .ok(
                token,
                "mutation($id: String!) { cancelAgenda(agendaId: $id, reason: \"test\") { position } }",
                json!({"id": id}),
            )
            .await;
        data["cancelAgenda"]["position"].as_str().unwrap().to_string()
    }
}

/// A two-operation agenda bound by the `ffmpeg` mapper.
pub fn agenda(customer: &str, link: &str) -> Value {
    json!({
        "customerId": customer,
        "linkId": link,
        "title": "transcode",
        "operations": [
            {"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}},
            {"name": "encode", "type": "ffmpeg", "payload": "@<probe.out::/streams>"}
        ]
    })
}

pub fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code in {error:#}"))
}

/// A raw graphql-transport-ws connection: every message in arrival order.
pub struct RawWs {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawWs {
    /// Connects and initialises with `payload`; returns the connection and the server's
    /// answer to the init (`connection_ack`, or the close/error it got instead).
    pub async fn connect(url: &str, payload: Value) -> (RawWs, Value) {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut raw = RawWs { ws };
        raw.send(json!({"type": "connection_init", "payload": payload})).await;
        let answer = raw.next().await;
        (raw, answer)
    }

    /// Connects without initialising, offering `protocol` (none when `None`) and sending
    /// `headers` with the upgrade; the handshake's error when the client refuses it.
    pub async fn open(
        url: &str,
        protocol: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<RawWs, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request().unwrap();
        if let Some(p) = protocol {
            request.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(RawWs { ws })
    }

    /// Sends a text frame as is (for malformed messages).
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Expects the server to close with `code`; returns the reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        let m = self.next().await;
        assert_eq!(
            (m["type"].as_str(), m["code"].as_u64()),
            (Some("close"), Some(code as u64)),
            "{m:#}"
        );
        m["reason"].as_str().unwrap_or_default().to_string()
    }

    pub async fn authed(url: &str, token: &str) -> RawWs {
        let (ws, ack) =
            RawWs::connect(url, json!({"authorization": format!("Bearer {token}")})).await;
        assert_eq!(ack["type"], "connection_ack", "{ack:#}");
        ws
    }

    pub async fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).await.unwrap();
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}}))
            .await;
    }

    /// Reads for `long`, answering the server's pings as any client library does; the
    /// protocol messages that came meanwhile.
    #[allow(dead_code)] // Not every test crate that shares this module pings.
    pub async fn read_for(&mut self, long: Duration) -> Vec<Value> {
        let until = tokio::time::Instant::now() + long;
        let mut got = Vec::new();
        while let Ok(message) = tokio::time::timeout_at(until, self.ws.next()).await {
            match message {
                Some(Ok(Message::Text(t))) => got.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        got
    }

    /// The next protocol message (pings answered); a close becomes `{"type": "close", ...}`.
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no WebSocket message within {WAIT:?}"));
            match message {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return v;
                }
                Some(Ok(Message::Close(frame))) => {
                    return json!({"type": "close", "code": frame.as_ref().map(|f| u16::from(f.code)), "reason": frame.map(|f| f.reason.to_string())});
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return json!({"type": "close", "error": e.to_string()}),
                None => return json!({"type": "close"}),
            }
        }
    }
}
