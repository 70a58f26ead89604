//! W3C trace context through the API (issue 19): a request's `traceparent` header — GraphQL,
//! POP REST, or a WebSocket's upgrade for the connection's mutations — is stored in the metadata of the events it appends (with its bounded `tracestate`), so work done later for the
//! same agenda can join the request's trace; a malformed header stores nothing and fails
//! nothing. (With `pop serve --otlp-endpoint` the server replaces the header with its request
//! span's before the API reads it: `server/tests/e2e_tracing.rs`.)

#![allow(clippy::unwrap_used)]

mod support;

use pop_api::ApiConfig;
use pop_store::{EventMetadata, Position};
use serde_json::json;
use support::*;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The traceparents stored with the events of the agenda whose link id is `link`.
async fn stored(s: &TestServer, link: &str) -> Vec<Option<String>> {
    let events = s.store.read_all(Position::START, 10_000).await.unwrap();
    events
        .iter()
        .filter(|e| e.stream.starts_with("agenda-"))
        .filter(|e| String::from_utf8_lossy(&e.data).contains(link))
        .map(|e| EventMetadata::from_json(&e.metadata).unwrap().traceparent)
        .collect()
}

async fn submit_graphql(s: &TestServer, link: &str, traceparent: &str, after: &str) {
    let response = s
        .http
        .post(format!("{}/graphql", s.base))
        .bearer_auth(ACME)
        .header("traceparent", traceparent)
        .json(&json!({
            "query": "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, \
                      atLeastPosition: $p) { agenda { id } } }",
            "variables": {"a": agenda("acme", link), "p": after},
        }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body:#}");
}

#[tokio::test]
async fn a_requests_traceparent_is_stored_with_its_events_and_a_malformed_one_is_not() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;

    submit_graphql(&s, "traced-gql", TRACEPARENT, &after).await;
    let traced = stored(&s, "traced-gql").await;
    assert!(!traced.is_empty());
    assert!(traced.iter().all(|t| t.as_deref() == Some(TRACEPARENT)), "{traced:?}");

    // POP REST carries it the same way.
    let response = s
        .http
        .post(format!("{}/pop/agenda", s.base))
        .bearer_auth(ACME)
        .header("traceparent", TRACEPARENT)
        .json(&agenda("acme", "traced-rest"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let traced = stored(&s, "traced-rest").await;
    assert!(!traced.is_empty());
    assert!(traced.iter().all(|t| t.as_deref() == Some(TRACEPARENT)), "{traced:?}");

    // Not a version-00 traceparent (upper-case hex, an all-zero trace id): no trace context,
    // and the request still succeeds.
    let malformed = [
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "not a traceparent",
    ];
    for (i, value) in malformed.iter().enumerate() {
        let link = format!("malformed-{i}");
        submit_graphql(&s, &link, value, &after).await;
        let stored = stored(&s, &link).await;
        assert!(!stored.is_empty());
        assert!(stored.iter().all(Option::is_none), "{value:?}: {stored:?}");
    }

    // A WebSocket connection's mutations carry its upgrade request's.
    let headers = [("traceparent", TRACEPARENT)];
    let mut ws = RawWs::open(&s.ws_url(), Some("graphql-transport-ws"), &headers).await.unwrap();
    ws.send(json!({"type": "connection_init",
        "payload": {"authorization": format!("Bearer {ACME}")}}))
        .await;
    assert_eq!(ws.next().await["type"], "connection_ack");
    ws.subscribe(
        "1",
        "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
         { agenda { id } } }",
        json!({"a": agenda("acme", "traced-ws"), "p": after}),
    )
    .await;
    let next = ws.next().await;
    assert_eq!(next["type"], "next", "{next:#}");
    assert!(next["payload"].get("errors").is_none(), "{next:#}");
    let traced = stored(&s, "traced-ws").await;
    assert!(!traced.is_empty());
    assert!(traced.iter().all(|t| t.as_deref() == Some(TRACEPARENT)), "{traced:?}");

    // Without the header, nothing is stored either.
    s.submit(ACME, "acme", "untraced", &after).await;
    let untraced = stored(&s, "untraced").await;
    assert!(!untraced.is_empty());
    assert!(untraced.iter().all(Option::is_none), "{untraced:?}");
}

/// The (traceparent, tracestate) pairs stored with the events of the agenda `link`.
async fn stored_context(s: &TestServer, link: &str) -> Vec<(Option<String>, Option<String>)> {
    let events = s.store.read_all(Position::START, 10_000).await.unwrap();
    events
        .iter()
        .filter(|e| e.stream.starts_with("agenda-"))
        .filter(|e| String::from_utf8_lossy(&e.data).contains(link))
        .map(|e| EventMetadata::from_json(&e.metadata).unwrap())
        .map(|m| (m.traceparent, m.tracestate))
        .collect()
}

#[tokio::test]
async fn a_requests_tracestate_is_stored_beside_its_traceparent_only_when_bounded_and_well_formed()
{
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let submit = |link: &'static str, traceparent: &'static str, tracestate: String| {
        let s = &s;
        let after = after.clone();
        async move {
            let response = s
                .http
                .post(format!("{}/graphql", s.base))
                .bearer_auth(ACME)
                .header("traceparent", traceparent)
                .header("tracestate", tracestate)
                .json(&json!({
                    "query": "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, \
                              atLeastPosition: $p) { agenda { id } } }",
                    "variables": {"a": agenda("acme", link), "p": after},
                }))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(body.get("errors").is_none(), "{body:#}");
            stored_context(s, link).await
        }
    };
    let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_string();
    let kept = submit("ts-kept", TRACEPARENT, state.clone()).await;
    assert!(!kept.is_empty());
    let expected = (Some(TRACEPARENT.to_string()), Some(state.clone()));
    assert!(kept.iter().all(|c| *c == expected), "{kept:?}");

    // Past the 512-byte bound, or malformed: the traceparent is kept, the tracestate dropped
    // whole, and the request succeeds.
    let long = format!("a={}", "x".repeat(pop_store::TRACESTATE_MAX_BYTES));
    for (link, value) in [("ts-long", long), ("ts-bad", "Not A List".to_string())] {
        let stored = submit(link, TRACEPARENT, value).await;
        assert!(!stored.is_empty());
        let expected = (Some(TRACEPARENT.to_string()), None);
        assert!(stored.iter().all(|c| *c == expected), "{link}: {stored:?}");
    }
    // A tracestate without a valid traceparent is no trace context at all.
    let orphan = submit("ts-orphan", "not a traceparent", state).await;
    assert!(!orphan.is_empty());
    assert!(orphan.iter().all(|c| *c == (None, None)), "{orphan:?}");
}
