//! The HTTP target: one request through the real router (auth, body limits, GraphQL parsing,
//! cost and depth checks, the REST surface) over a SQLite store in a temp dir, seeded once with
//! a pool, two customers, an insight and an agenda so that requests can reach real objects.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use pop_api::auth::{Role, Tokens, principal};
use pop_api::{ApiConfig, AppState};
use pop_projections::{Runner, RunnerConfig};
use pop_store::{Commands, EventStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The tokens a request may carry, by the name its header line uses.
const TOKENS: &[(&str, &str)] = &[
    ("admin", "tok_fuzz_admin_00000000000000000"),
    ("acme", "tok_fuzz_acme_000000000000000000"),
    ("globex", "tok_fuzz_globex_00000000000000000"),
    ("service", "tok_fuzz_service_0000000000000000"),
];

/// Largest response body read back; pop's own response budget is far below it.
const MAX_READ: usize = 64 * 1024 * 1024;

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the router");
        let dir = tempfile::tempdir().expect("a temp dir for the store");
        let router = runtime.block_on(start(dir.path().join("pop.db")));
        Harness { runtime, router, _dir: dir }
    })
}

async fn start(path: std::path::PathBuf) -> Router {
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(path, SqliteOptions::default()).await.expect("the store opens"));
    let commands = Arc::new(Commands::new(Arc::clone(&store)));
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move {
        let _ = runner.run(std::future::pending()).await;
    });
    let mut tokens = Tokens::new();
    let principals = [
        principal("admin", Role::Admin, &["*"]),
        principal("acme-user", Role::User, &["acme"]),
        principal("globex-user", Role::User, &["globex"]),
        principal("acme-worker", Role::Service, &["acme"]),
    ];
    for ((_, token), p) in TOKENS.iter().zip(principals) {
        tokens.insert(token, p).expect("a fuzz token is valid");
    }
    // Long polls end at once: a fuzzed `waitSeconds` must not hold the fuzzer.
    let config = ApiConfig { max_wait: Duration::from_millis(1), ..ApiConfig::default() };
    let router = pop_api::router(AppState::new(store, commands, projections, tokens, config));
    seed(&router).await;
    router
}

async fn seed(router: &Router) {
    let admin = TOKENS[0].1;
    let steps = [
        (
            "mutation($o: JSON!) { createResourcePool(resourcePool: $o) { position } }",
            json!({"id": "pool-1", "customerId": "ops", "title": "Pool"}),
        ),
        (
            "mutation($o: JSON!) { createCustomer(customer: $o) { position } }",
            json!({"id": "acme", "title": "acme", "resourcePoolId": "pool-1"}),
        ),
        (
            "mutation($o: JSON!) { createCustomer(customer: $o) { position } }",
            json!({"id": "globex", "title": "globex", "resourcePoolId": "pool-1"}),
        ),
        (
            "mutation($o: JSON!) { createInsight(insight: $o) { position } }",
            json!({"id": "transcode", "customerId": "ops", "title": "Transcode",
                "resourcePoolId": "pool-1", "queueSize": 5, "isGlobal": true,
                "mappers": {"operationType": ["ffmpeg"]}}),
        ),
    ];
    let mut position = Value::Null;
    for (query, object) in steps {
        let body = json!({"query": query, "variables": {"o": object}});
        let answer =
            call(router, Method::POST, "/graphql", Some(admin), body.to_string().into()).await.1;
        position = answer
            .pointer("/data")
            .and_then(|d| d.as_object())
            .and_then(|d| d.values().next().and_then(|v| v.get("position")).cloned())
            .unwrap_or_else(|| panic!("seeding failed: {answer}"));
    }
    let submit = json!({
        "query": "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) { position } }",
        "variables": {"p": position, "a": {
            "id": "agenda-1", "customerId": "acme", "linkId": "link-1", "title": "transcode",
            "operations": [
                {"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}},
                {"name": "encode", "type": "ffmpeg", "payload": "@<probe.out::/streams>"}
            ]}}
    });
    let (_, answer) =
        call(router, Method::POST, "/graphql", Some(admin), submit.to_string().into()).await;
    assert!(answer.get("errors").is_none(), "seeding the agenda failed: {answer}");
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Body::from(body)).expect("a request from a valid header line");
    let response = router.clone().oneshot(request).await.expect("the router answers");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_READ)
        .await
        .expect("the response body is readable");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A request: a header line `METHOD /path token` (token: admin, acme, globex, service or
/// none), then the body.
pub fn http_request(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(header) = std::str::from_utf8(&data[..split]) else { return };
    let mut words = header.split(' ');
    let (Some(method), Some(path), token) = (words.next(), words.next(), words.next()) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    if !path.starts_with('/') || path.parse::<axum::http::Uri>().is_err() {
        return;
    }
    let token = token.and_then(|name| TOKENS.iter().find(|(n, _)| *n == name)).map(|(_, t)| *t);
    let body = data.get(split + 1..).unwrap_or_default().to_vec();
    let h = harness();
    let (status, answer) = h.runtime.block_on(call(&h.router, method, path, token, body));
    assert!(status < 500, "{header}: status {status}, {answer}");
    // GraphQL answers (one, or a batch): every error has a code, none is INTERNAL, each a cid.
    let answers = match &answer {
        Value::Array(items) if path.starts_with("/graphql") => items.iter().collect(),
        _ if path.starts_with("/graphql") => vec![&answer],
        _ => Vec::new(),
    };
    for one in answers {
        for error in one.get("errors").and_then(Value::as_array).into_iter().flatten() {
            let code = error.pointer("/extensions/code").and_then(Value::as_str);
            assert!(
                code.is_some_and(|c| !c.is_empty()),
                "{header}: an error without a code: {error}"
            );
            assert_ne!(code, Some("INTERNAL"), "{header}: {error}");
            assert!(error.pointer("/extensions/cid").is_some(), "{header}: no cid in {error}");
        }
    }
    // REST refusals are POP's envelope: its responseCode the HTTP status, a code and the cid.
    // (The POP surface is `/pop` and what is below it; `/pop"…` is no route of it, answered by
    // the server's own 404, whose error has a code and a cid too.)
    let surface = path.split(['?', '#']).next().unwrap_or_default();
    let pop = surface == "/pop" || surface.starts_with("/pop/");
    if !pop && !path.starts_with("/graphql") && matches!(status, 404 | 405) && answer.is_object() {
        let error = &answer["errors"][0];
        assert!(error.pointer("/extensions/code").is_some(), "{header}: {answer}");
        assert!(error.pointer("/extensions/cid").is_some(), "{header}: {answer}");
    }
    if pop && status >= 400 && answer.is_object() {
        let envelope = &answer["errorResponse"];
        assert_eq!(envelope["responseCode"], json!(status), "{header}: {answer}");
        assert!(envelope["code"].as_str().is_some_and(|c| !c.is_empty()), "{header}: {answer}");
        assert!(answer["cid"].as_str().is_some_and(|c| !c.is_empty()), "{header}: {answer}");
    }
}
