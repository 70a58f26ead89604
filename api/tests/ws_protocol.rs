//! The graphql-transport-ws server (`pop_api::ws`) over a real socket, message by message:
//! the happy path of a subscription, queries and mutations over the socket, how errors are
//! delivered, and every close code of the protocol. Raw tokio-tungstenite, so each test says
//! exactly what goes over the wire. Waits are bounded (`support::WAIT`).

mod support;

use std::time::Duration;

use pop_api::ApiConfig;
use pop_api::ws::{WsLimits, close};
use serde_json::{Value, json};
use support::*;

const SUB_PROGRESS: &str = "subscription($id: String!) { agendaProgress(id: $id) { position progress { agendaId processingStateMessage } } }";
const SUB_CUSTOMER: &str =
    "subscription($c: String!) { agendaProgressByCustomer(customerId: $c) { position } }";
const SUBSCRIBE_X: &str =
    r#"{"id":"x","type":"subscribe","payload":{"query":"{ agendas { position } }"}}"#;

/// An initialised connection as `token` (raw: the support helper waits for the ack).
async fn authed(s: &TestServer, token: &str) -> RawWs {
    RawWs::authed(&s.ws_url(), token).await
}

/// An opened, uninitialised graphql-transport-ws connection.
async fn opened(s: &TestServer) -> RawWs {
    RawWs::open(&s.ws_url(), Some("graphql-transport-ws"), &[]).await.expect("the upgrade succeeds")
}

fn state_message(m: &Value) -> &str {
    m["payload"]["data"]["agendaProgress"]["progress"]["processingStateMessage"]
        .as_str()
        .unwrap_or_else(|| panic!("no progress in {m:#}"))
}

#[tokio::test]
async fn a_subscription_gets_its_state_then_updates_until_the_client_completes_it() {
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    let (id, _) = s.submit(ACME, "acme", "l", &seeded).await;
    let mut ws = authed(&s, ACME).await;
    ws.subscribe("p", SUB_PROGRESS, json!({"id": id})).await;
    let first = ws.next().await;
    assert_eq!((first["type"].as_str(), first["id"].as_str()), (Some("next"), Some("p")));
    assert_eq!(state_message(&first), "added", "{first:#}");
    s.cancel(ACME, &id).await;
    let update = ws.next().await;
    assert_eq!(state_message(&update), "cancelled", "{update:#}");
    // The client stops it; the server sends nothing more for it, not even `complete`, and
    // the id may be used again at once.
    ws.send(json!({"id": "p", "type": "complete"})).await;
    ws.send(json!({"type": "ping", "payload": {"after": "complete"}})).await;
    assert_eq!(ws.next().await, json!({"type": "pong", "payload": {"after": "complete"}}));
    ws.subscribe("p", SUB_PROGRESS, json!({"id": id})).await;
    let again = ws.next().await;
    assert_eq!((again["id"].as_str(), state_message(&again)), (Some("p"), "cancelled"));
}

#[tokio::test]
async fn queries_and_mutations_over_the_socket_are_next_then_complete() {
    let s = start(ApiConfig::default()).await;
    let mut ws = authed(&s, ADMIN).await;
    ws.send(
        json!({"id": "q", "type": "subscribe", "payload": {"query": "{ agendas { position } }"}}),
    )
    .await;
    let next = ws.next().await;
    assert_eq!((next["type"].as_str(), next["id"].as_str()), (Some("next"), Some("q")));
    assert!(next["payload"]["data"]["agendas"]["position"].is_string(), "{next:#}");
    assert_eq!(ws.next().await, json!({"type": "complete", "id": "q"}));

    let mutation = "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }";
    let pool = json!({"p": {"id": "pool-ws", "customerId": "ops", "title": "Pool"}});
    ws.send(json!({"id": "m", "type": "subscribe", "payload": {"query": mutation, "variables": pool, "operationName": null}}))
        .await;
    let next = ws.next().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert!(next["payload"]["data"]["createResourcePool"]["position"].is_string(), "{next:#}");
    assert_eq!(ws.next().await, json!({"type": "complete", "id": "m"}));
}

#[tokio::test]
async fn the_graphql_path_accepts_the_websocket_upgrade_and_still_serves_graphiql() {
    let s = start(ApiConfig::default()).await;
    let url = format!("ws://{}/graphql", s.addr);
    let mut ws = RawWs::authed(&url, ADMIN).await;
    ws.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ me { name } }"}})).await;
    let next = ws.next().await;
    assert_eq!(next["payload"]["data"]["me"]["name"], "admin", "{next:#}");
    assert_eq!(ws.next().await, json!({"type": "complete", "id": "q"}));
    // The same rules as on /graphql/ws: no subprotocol is a 4406 close.
    let mut bare = RawWs::open(&url, None, &[]).await.expect("the upgrade is accepted");
    bare.expect_close(4406).await;
    // A plain GET is still GraphiQL, and a malformed upgrade is refused, not the page.
    let (status, page) = s.get("/graphql").await;
    assert_eq!(status, 200);
    assert!(page.contains("graphiql"), "{page}");
    let resp = s
        .http
        .get(format!("{}/graphql", s.base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert!((400..500).contains(&status), "{status}: {body}");
    assert!(!body.contains("graphiql"), "{body}");
}

#[tokio::test]
async fn a_request_refused_before_execution_is_one_error_message_with_code_and_cid() {
    let s = start(ApiConfig::default()).await;
    let mut ws =
        RawWs::open(&s.ws_url(), Some("graphql-transport-ws"), &[("x-correlation-id", "cid-ws-1")])
            .await
            .unwrap();
    ws.send(json!({"type": "connection_init", "payload": {"token": ADMIN}})).await;
    assert_eq!(ws.next().await["type"], "connection_ack");
    // GraphQL's single root field rule: one subscribe is one follow (6,000 aliases in one
    // took a principal's whole share).
    let two = "subscription { a: agendaProgress(id: \"x\") { position } \
               b: agendaProgress(id: \"y\") { position } }";
    for (id, query) in [("syntax", "{ agendas { "), ("unknown", "{ noSuchField }"), ("two", two)] {
        ws.send(json!({"id": id, "type": "subscribe", "payload": {"query": query}})).await;
        let m = ws.next().await;
        assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some(id)), "{m:#}");
        let errors = m["payload"].as_array().unwrap_or_else(|| panic!("an errors array: {m:#}"));
        assert!(!errors.is_empty());
        for e in errors {
            assert_eq!(e["extensions"]["code"], "BAD_REQUEST", "{m:#}");
            assert_eq!(e["extensions"]["cid"], "cid-ws-1", "{m:#}");
        }
    }
    // No `complete` follows an `error`: the next message is the answer to this ping.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn a_resolver_refusal_is_a_next_with_errors_then_complete() {
    let s = start(ApiConfig::default()).await;
    let mut ws =
        RawWs::open(&s.ws_url(), Some("graphql-transport-ws"), &[("x-correlation-id", "cid-ws-2")])
            .await
            .unwrap();
    ws.send(
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {ACME}")}}),
    )
    .await;
    assert_eq!(ws.next().await["type"], "connection_ack");
    ws.subscribe("g", SUB_CUSTOMER, json!({"c": "globex"})).await;
    let m = ws.next().await;
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("next"), Some("g")), "{m:#}");
    let error = &m["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{m:#}");
    assert_eq!(error["extensions"]["cid"], "cid-ws-2", "{m:#}");
    assert_eq!(ws.next().await, json!({"type": "complete", "id": "g"}));
    // A bad resume position is named as the subscription's own argument (it was named
    // `atLeastPosition`, which no subscription has).
    let resume = "subscription($p: String) { agendaProgressByCustomer(customerId: \"acme\", \
                  afterPosition: $p) { position } }";
    ws.subscribe("r", resume, json!({"p": "abc"})).await;
    let m = ws.next().await;
    let error = &m["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "VALIDATION", "{m:#}");
    assert_eq!(error["extensions"]["problems"][0]["field"], "afterPosition", "{m:#}");
}

#[tokio::test]
async fn ping_is_answered_before_and_after_init_with_its_payload() {
    let s = start(ApiConfig::default()).await;
    let mut ws = opened(&s).await;
    ws.send(json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(ws.next().await, json!({"type": "pong", "payload": {"n": 1}}));
    ws.send(json!({"type": "pong"})).await; // unsolicited pongs are fine
    ws.send(json!({"type": "connection_init", "payload": {"token": ADMIN}})).await;
    assert_eq!(ws.next().await, json!({"type": "connection_ack"}));
    ws.send(json!({"type": "ping", "payload": null})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn the_upgrade_header_authenticates_when_the_payload_has_no_token() {
    let s = start(ApiConfig::default()).await;
    let bearer = format!("Bearer {ADMIN}");
    let mut ws =
        RawWs::open(&s.ws_url(), Some("graphql-transport-ws"), &[("authorization", &bearer)])
            .await
            .unwrap();
    ws.send(json!({"type": "connection_init"})).await;
    assert_eq!(ws.next().await, json!({"type": "connection_ack"}));
}

/// pop's own CLI sends `subscribe` right behind `connection_init`: the init is decided when
/// it is read, so the subscribe is after the ack.
#[tokio::test]
async fn subscribe_right_behind_init_is_after_the_ack() {
    let s = start(ApiConfig::default()).await;
    let mut ws = opened(&s).await;
    ws.send(json!({"type": "connection_init", "payload": {"token": ADMIN}})).await;
    ws.send_text(SUBSCRIBE_X).await;
    assert_eq!(ws.next().await, json!({"type": "connection_ack"}));
    assert_eq!(ws.next().await["type"], "next");
    assert_eq!(ws.next().await, json!({"type": "complete", "id": "x"}));
}

#[tokio::test]
async fn invalid_messages_close_with_4400_and_a_reason() {
    let s = start(ApiConfig::default()).await;
    for (text, why) in [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (r#"{"type": "start", "id": "1", "payload": {"query": "{ a }"}}"#, "unknown message type"),
        (r#"{"type": "subscribe", "payload": {"query": "{ agendas { position } }"}}"#, "'id'"),
        (r#"{"type": "subscribe", "id": "1", "payload": {"variables": {}}}"#, "'query'"),
        (r#"{"type": "complete"}"#, "'id'"),
        (r#"{"type": "next", "id": "1", "payload": {}}"#, "sent by the server"),
    ] {
        let mut ws = authed(&s, ADMIN).await;
        ws.send_text(text).await;
        let reason = ws.expect_close(close::BAD_REQUEST).await;
        assert!(
            reason.starts_with("Invalid message received") && reason.contains(why),
            "{text}: {reason:?} should mention {why:?}"
        );
    }
    // Before the init too.
    let mut ws = opened(&s).await;
    ws.send_text("{not json").await;
    ws.expect_close(close::BAD_REQUEST).await;
}

#[tokio::test]
async fn subscribe_before_the_ack_closes_with_4401() {
    let s = start(ApiConfig::default()).await;
    let mut ws = opened(&s).await;
    ws.send_text(SUBSCRIBE_X).await;
    assert_eq!(ws.expect_close(close::UNAUTHORIZED).await, "Unauthorized");
}

#[tokio::test]
async fn init_without_a_valid_token_closes_with_4403() {
    let s = start(ApiConfig::default()).await;
    for payload in [json!({}), json!({"token": "tok_wrong_0000000000000000000000"}), json!(null)] {
        let mut ws = opened(&s).await;
        ws.send(json!({"type": "connection_init", "payload": payload})).await;
        assert_eq!(ws.expect_close(close::FORBIDDEN).await, "Forbidden", "{payload}");
    }
    // A bad token in the payload wins over a good header.
    let bearer = format!("Bearer {ADMIN}");
    let mut ws =
        RawWs::open(&s.ws_url(), Some("graphql-transport-ws"), &[("authorization", &bearer)])
            .await
            .unwrap();
    ws.send(json!({"type": "connection_init", "payload": {"token": "tok_wrong_0000000000000000000000"}}))
        .await;
    ws.expect_close(close::FORBIDDEN).await;
}

#[tokio::test]
async fn a_second_init_closes_with_4429() {
    let s = start(ApiConfig::default()).await;
    let mut ws = authed(&s, ADMIN).await;
    ws.send(json!({"type": "connection_init", "payload": {"token": ADMIN}})).await;
    assert_eq!(
        ws.expect_close(close::TOO_MANY_INITIALISATION_REQUESTS).await,
        "Too many initialisation requests"
    );
}

#[tokio::test]
async fn a_duplicate_active_id_closes_with_4409() {
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    let (id, _) = s.submit(ACME, "acme", "l", &seeded).await;
    let mut ws = authed(&s, ACME).await;
    ws.subscribe("dup", SUB_PROGRESS, json!({"id": id})).await;
    assert_eq!(ws.next().await["type"], "next");
    ws.subscribe("dup", SUB_PROGRESS, json!({"id": id})).await;
    assert_eq!(
        ws.expect_close(close::SUBSCRIBER_ALREADY_EXISTS).await,
        "Subscriber for dup already exists"
    );
}

/// The server pings an initialised connection; one that answers nothing (a client stopped in
/// the middle of a message cannot, and held its bytes: hostile19) is closed with 1013, and one
/// that reads (its library answers pings by itself) stays open.
#[tokio::test]
async fn a_connection_that_answers_no_ping_is_closed() {
    let limits = WsLimits { ping_every: Duration::from_millis(200), ..WsLimits::default() };
    let s = start_with_ws_limits(ApiConfig::default(), limits).await;
    let mut live = RawWs::authed(&s.ws_url(), ACME).await;
    let mut silent = RawWs::authed(&s.ws_url(), ACME).await;
    assert_eq!(live.read_for(Duration::from_millis(1_200)).await, Vec::<Value>::new());
    live.send(json!({"type": "ping"})).await;
    assert_eq!(live.next().await, json!({"type": "pong"}), "still open");
    // 1013, which graphql-ws clients retry (they give up on 1008).
    let reason = silent.expect_close(close::TRY_AGAIN_LATER).await;
    assert!(reason.contains("no answer to a ping"), "{reason}");
}

#[tokio::test]
async fn no_init_in_time_closes_with_4408() {
    let limits = WsLimits { init_timeout: Duration::from_millis(200), ..WsLimits::default() };
    let s = start_with_ws_limits(ApiConfig::default(), limits).await;
    let mut ws = opened(&s).await;
    // A ping is not an init: the clock keeps running.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
    assert_eq!(
        ws.expect_close(close::CONNECTION_INITIALISATION_TIMEOUT).await,
        "Connection initialisation timeout"
    );
}

#[tokio::test]
async fn other_subprotocols_are_not_acceptable() {
    let s = start(ApiConfig::default()).await;
    // No subprotocol offered: accepted, then closed with 4406.
    let mut ws = RawWs::open(&s.ws_url(), None, &[]).await.unwrap();
    assert_eq!(
        ws.expect_close(close::SUBPROTOCOL_NOT_ACCEPTABLE).await,
        "Subprotocol not acceptable"
    );
    // Only the legacy protocol offered: the answer names none, so the client's handshake
    // fails (as it does against the reference server).
    let legacy = RawWs::open(&s.ws_url(), Some("graphql-ws"), &[]).await;
    assert!(legacy.is_err(), "the legacy graphql-ws subprotocol must not be served");
    // Offered among others, graphql-transport-ws is chosen.
    let mut ws =
        RawWs::open(&s.ws_url(), Some("graphql-ws, graphql-transport-ws"), &[]).await.unwrap();
    ws.send(json!({"type": "connection_init", "payload": {"token": ADMIN}})).await;
    assert_eq!(ws.next().await, json!({"type": "connection_ack"}));
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_4400() {
    let s = start(ApiConfig { max_body_bytes: 4_096, ..ApiConfig::default() }).await;
    let mut ws = authed(&s, ADMIN).await;
    let query = format!("{{ agendas {{ position }} }} #{}", "x".repeat(8_192));
    ws.send(json!({"id": "big", "type": "subscribe", "payload": {"query": query}})).await;
    let reason = ws.expect_close(close::BAD_REQUEST).await;
    assert!(reason.starts_with("Invalid message received"), "{reason:?}");
}

/// Under the HTTP body limit, a WebSocket message is bounded by its own, smaller one: a client
/// may hold one message half-sent while answering pings (hostile20: 2 MiB per connection).
#[tokio::test]
async fn a_websocket_message_is_bounded_below_the_http_body_limit() {
    let s = start(ApiConfig::default()).await;
    let mut ws = authed(&s, ADMIN).await;
    let padding = "x".repeat(pop_api::ws::MAX_MESSAGE_BYTES);
    let query = format!("{{ agendas {{ position }} }} #{padding}");
    ws.send(json!({"id": "big", "type": "subscribe", "payload": {"query": query}})).await;
    let reason = ws.expect_close(close::BAD_REQUEST).await;
    assert!(reason.starts_with("Invalid message received"), "{reason:?}");
    // One within it is served.
    let mut ws = authed(&s, ADMIN).await;
    ws.subscribe("q", "{ agendas { position } }", json!({})).await;
    assert_eq!(ws.next().await["type"], "next");
}

/// Large messages are paced with the large HTTP bodies of the same customer (rehostile61b
/// M1: mutations of 240 KB over graphql-ws went around the HTTP pace and held every tenant's
/// reads): past the pace, a message that would wait too long closes the connection, 1013.
#[tokio::test]
async fn large_messages_are_paced_with_the_customers_http_bodies() {
    let s = start(ApiConfig {
        max_body_bytes: 100_000,
        max_upload_bytes_per_second: 5_000,
        ..ApiConfig::default()
    })
    .await;
    // The customer's burst (one largest body) taken over HTTP by one of its tokens.
    let pad = "x".repeat(90_000);
    let (status, body) = s
        .post(Some(ACME_ADMIN), json!({"query": "{ me { name } }", "variables": {"pad": pad}}))
        .await;
    assert_eq!(status, 200, "{body:#}");
    let mut ws = authed(&s, ACME).await;
    let query = format!("{{ me {{ name }} }} #{}", "x".repeat(70_000));
    ws.send(json!({"id": "big", "type": "subscribe", "payload": {"query": query}})).await;
    let reason = ws.expect_close(close::TRY_AGAIN_LATER).await;
    assert!(reason.contains("--max-upload-bytes-per-second"), "{reason:?}");
    // Another customer's connection is served.
    let mut ws = authed(&s, GLOBEX).await;
    ws.subscribe("q", "{ me { name } }", json!({})).await;
    assert_eq!(ws.next().await["type"], "next");
}

#[tokio::test]
async fn past_the_operation_limit_a_subscribe_gets_an_error_and_the_rest_keep_running() {
    let limits = WsLimits { max_operations: 2, ..WsLimits::default() };
    let s = start_with_ws_limits(ApiConfig::default(), limits).await;
    let seeded = s.seed().await;
    let (id, _) = s.submit(ACME, "acme", "l", &seeded).await;
    let mut ws = authed(&s, ACME).await;
    for n in ["a", "b"] {
        ws.subscribe(n, SUB_PROGRESS, json!({"id": id})).await;
        assert_eq!(ws.next().await["id"], n);
    }
    ws.subscribe("c", SUB_PROGRESS, json!({"id": id})).await;
    let m = ws.next().await;
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some("c")), "{m:#}");
    assert_eq!(m["payload"][0]["extensions"]["code"], "BAD_REQUEST", "{m:#}");
    assert!(m["payload"][0]["extensions"]["cid"].is_string(), "{m:#}");
    // Completing one makes room; the two running ones still deliver.
    ws.send(json!({"id": "a", "type": "complete"})).await;
    ws.subscribe("c", SUB_PROGRESS, json!({"id": id})).await;
    assert_eq!(ws.next().await["id"], "c");
    s.cancel(ACME, &id).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = ws.next().await;
        assert_eq!(state_message(&m), "cancelled", "{m:#}");
        seen.push(m["id"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["b", "c"]);
}

#[tokio::test]
async fn on_shutdown_every_socket_gets_a_going_away_close() {
    let s = start(ApiConfig::default()).await;
    let seeded = s.seed().await;
    let (id, _) = s.submit(ACME, "acme", "l", &seeded).await;
    // One connection with a running subscription, one that never initialised.
    let mut following = authed(&s, ACME).await;
    following.subscribe("p", SUB_PROGRESS, json!({"id": id})).await;
    assert_eq!(following.next().await["type"], "next");
    let mut idle = opened(&s).await;
    let state = s.state.clone();
    let shutdown = tokio::spawn(async move { state.shutdown().await });
    for ws in [&mut following, &mut idle] {
        let reason = ws.expect_close(close::GOING_AWAY).await;
        assert!(reason.starts_with("Going away"), "{reason}");
    }
    drop((following, idle));
    shutdown.await.expect("shutdown finished");
    // A connection upgraded after the shutdown is told the same at once.
    let mut late = opened(&s).await;
    late.expect_close(close::GOING_AWAY).await;
}
