//! One client must not exhaust the server (issue 19): valid but hostile requests from one
//! ordinary user token are refused with a clear code before they cost the server its memory
//! or its workers, over real HTTP. Each test prints what the request cost (`figure:` lines).

mod support;

use std::time::Instant;

use serde_json::{Value, json};
use support::*;

/// Submits `n` agendas for `acme` whose one operation carries a payload of `payload_bytes`.
async fn seed_large(server: &TestServer, n: usize, payload_bytes: usize) {
    let after = server.seed().await;
    let blob = "x".repeat(payload_bytes);
    for i in 0..n {
        server
            .ok(
                ACME,
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { position } }",
                json!({"a": {
                    "id": format!("big-{i}"), "customerId": "acme", "linkId": "big",
                    "operations": [{"name": "only", "type": "ffmpeg", "payload": {"blob": blob}}]
                }, "p": after}),
            )
            .await;
    }
}

/// POSTs a body as `token`; returns the status, the body's length and the JSON.
async fn post_raw(server: &TestServer, token: &str, body: &Value) -> (u16, usize, Value) {
    let resp = server
        .http
        .post(format!("{}/graphql", server.base))
        .bearer_auth(token)
        .header("x-correlation-id", "cid-hostile")
        .json(body)
        .send()
        .await
        .expect("the server answers");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("the body arrives");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, bytes.len(), json)
}

/// The one error of a refused response, with the cid the request sent.
fn only_error(body: &Value) -> &Value {
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("no errors: {body:.300}"));
    assert_eq!(errors.len(), 1, "{body:#.2000}");
    assert_eq!(errors[0]["extensions"]["cid"], "cid-hostile", "{body:#.2000}");
    &errors[0]
}

fn aliases(n: usize, field: &str) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("a{i}: {field}")).collect();
    format!("{{ {} }}", fields.join(" "))
}

#[tokio::test]
async fn aliases_of_large_pages_are_refused_before_they_run() {
    let server = start(Default::default()).await;
    seed_large(&server, 20, 20_000).await;
    let query = aliases(40, "agendas(first: 500) { items { operations { payload } } }");
    let started = Instant::now();
    let (status, len, body) = post_raw(&server, ACME, &json!({ "query": query })).await;
    eprintln!(
        "figure: 40 aliases x agendas(first: 500) over 20 agendas of 20 kB: status {status}, \
         {len} response bytes, {:?}",
        started.elapsed()
    );
    let error = only_error(&body);
    assert_eq!(code(error), "QUERY_TOO_COSTLY", "{error:#}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("query:") && message.contains("limit of 50000"), "{message}");
    assert!(body["data"].is_null(), "nothing ran: {body:.300}");
    // The same page once is an ordinary request.
    let one = server
        .ok(ACME, "{ agendas(first: 500) { items { operations { payload } } } }", json!({}))
        .await;
    assert_eq!(one["agendas"]["items"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn a_batch_adds_up_the_cost_of_its_operations() {
    let server = start(Default::default()).await;
    server.seed().await;
    let one =
        json!({"query": "{ agendas(first: 500) { items { id operations { name payload } } } }"});
    // Alone it is well within the limit.
    let (_, _, body) = post_raw(&server, ACME, &one).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    let batch = Value::Array(vec![one; 16]);
    let (status, len, body) = post_raw(&server, ACME, &batch).await;
    eprintln!("figure: batch of 16 x agendas(first: 500): status {status}, {len} bytes");
    let refused: Vec<&Value> = body
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY")
        .collect();
    assert!(
        !refused.is_empty(),
        "16 operations of about 11,500 points add up past 50,000: {body:#.2000}"
    );
    assert_eq!(refused[0]["errors"][0]["extensions"]["cid"], "cid-hostile");
}

#[tokio::test]
async fn a_response_past_the_byte_budget_is_one_error_not_a_huge_body() {
    let server = start(Default::default()).await;
    // 18 agendas of 0.95 MB: 17 MB of payloads, more than the 16 MiB budget.
    seed_large(&server, 18, 950_000).await;
    let started = Instant::now();
    let (status, len, body) = post_raw(
        &server,
        ACME,
        &json!({"query": "{ agendas(first: 50) { items { id operations { payload } } } }"}),
    )
    .await;
    eprintln!(
        "figure: one page of 18 agendas of 0.95 MB: status {status}, {len} response bytes, {:?}",
        started.elapsed()
    );
    let error = only_error(&body);
    assert_eq!(code(error), "RESPONSE_TOO_LARGE", "{error:#.500}");
    assert!(error["message"].as_str().unwrap().starts_with("response:"), "{error:#.500}");
    assert!(len < 10_000, "the refusal is small, not the data: {len} bytes");
    // A smaller page of the same data is answered.
    let data = server
        .ok(ACME, "{ agendas(first: 5) { items { id operations { payload } } } }", json!({}))
        .await;
    assert_eq!(data["agendas"]["items"].as_array().unwrap().len(), 5);
}
