//! Property test of the REST surface: whatever the method, path, query parameters, token and
//! body (random JSON shaped like POP's objects, or not JSON at all), the server never answers
//! 500, and every failure is POP's envelope whose `responseCode` is the HTTP status.

// The helpers panic on a broken fixture or transport on purpose: the test should fail loudly.
#![allow(clippy::unwrap_used)]

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use support::*;

use pop_api::ApiConfig;

/// Random requests per run: each is one loopback round trip of a few milliseconds.
const CASES: u32 = 1_500;

/// Field names of POP's request and object shapes, so random objects reach past the first
/// shape check.
const KEYS: &[&str] = &[
    "id",
    "customerId",
    "title",
    "operations",
    "name",
    "type",
    "payload",
    "params",
    "linkId",
    "agendaProgress",
    "insightId",
    "count",
    "agendaId",
    "agendaTemplateId",
    "processingState",
    "processingStateMessage",
    "percentComplete",
    "operationProgress",
    "operation",
    "diagnosticEvents",
    "statusCode",
    "queueSize",
    "mappers",
    "resourcePoolId",
    "isGlobal",
    "allowedCustomerIds",
    "agenda",
    "staticParameters",
    "dependsOn",
    "cid",
    "startedTime",
    "schedulingAlgorithm",
    "operationType",
];

const WORDS: &[&str] = &[
    "",
    " ",
    "agenda-1",
    "acme",
    "globex",
    "ops",
    "pool-1",
    "transcode",
    "t1",
    "EXECUTING",
    "COMPLETE",
    "WAITING",
    "succeeded",
    "failed",
    "@<a>",
    "@<a.out::/x?>",
    "@<pop.payload>",
    "resetAll",
    "continue",
    "operationsToReset=a",
    "5",
    "-1",
    "true",
    "1700000000000",
    "ffmpeg",
    "a,b",
    "%",
    "\u{0}",
    "é/ü",
    "a\u{1}b",
    "\u{18}",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WORDS).prop_map(str::to_string),
        "[a-zA-Z0-9._@<>:/?=-]{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..7).prop_map(
                |pairs| {
                    Value::Object(
                        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

/// A body: random JSON, or text that is not JSON, or none.
fn body() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => json_value().prop_map(|v| Some(v.to_string())),
        1 => "[^\u{0}]{0,20}".prop_map(Some),
        1 => Just(None),
    ]
}

/// `path` with its dot segments (`.`, `..`, and their `%2e` spellings) made plain words: the
/// client resolves them before it sends (URL parsing), so `/pop/../` went out as `/` — the
/// dashboard's page, not a POP route — and the case asserted on was not the request sent.
fn undotted(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let lower = segment.to_ascii_lowercase().replace("%2e", ".");
            if lower == "." || lower == ".." { "dots" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A path: a real route with a random `{id}`, or random segments under `/pop`.
fn path() -> impl Strategy<Value = String> {
    let routes: Vec<&'static str> = pop_api::rest::ROUTES.iter().map(|r| r.path).collect();
    let segment = prop_oneof![word(), "%[0-9A-Fa-f]{2}", "%[G-Zg-z]{2}", Just("%".to_string())];
    prop_oneof![
        3 => (proptest::sample::select(routes), segment.clone()).prop_map(|(r, id)| {
            let id: String = id.chars().filter(|c| !matches!(c, '/' | '?' | '#')).collect();
            undotted(&r.replace("{id}", if id.is_empty() { "x" } else { &id }))
        }),
        1 => proptest::collection::vec(segment, 0..5).prop_map(|s| {
            let joined: String = s.join("/").chars().filter(|c| !matches!(c, '?' | '#')).collect();
            undotted(&format!("/pop/{joined}"))
        }),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let names = prop_oneof![
        proptest::sample::select(
            &[
                "byId",
                "bylinkId",
                "BYCUSTOMERID",
                "byAgendaId",
                "byAgendaProgressId",
                "byResourcePoolId",
                "byTitle",
                "byInsightId",
                "limit",
                "after",
                "atLeastPosition",
                "linkId",
                "nonsense",
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z]{1,6}",
    ];
    proptest::collection::vec((names, "[a-zA-Z0-9%+ -]{0,8}"), 0..4).prop_map(|pairs| {
        if pairs.is_empty() {
            return String::new();
        }
        let q: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("?{}", q.join("&"))
    })
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    path: String,
    query: String,
    token: Option<&'static str>,
    body: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(&["GET", "POST", "PUT", "DELETE", "PATCH"][..]),
        path(),
        query(),
        proptest::sample::select(
            &[Some(ADMIN), Some(ACME), Some(ACME_SERVICE), Some(GLOBEX), None][..],
        ),
        body(),
    )
        .prop_map(|(method, path, query, token, body)| Case {
            method,
            path,
            query,
            token,
            body,
        })
}

async fn send(s: &TestServer, c: &Case) -> (u16, String) {
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
    let mut req = s.http.request(method, format!("{}{}{}", s.base, c.path, c.query));
    if let Some(t) = c.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = &c.body {
        req = req.header("content-type", "application/json").body(b.clone());
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[test]
fn random_requests_never_answer_500_and_always_carry_the_envelope() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let s = rt.block_on(async {
        let s = start(ApiConfig::default()).await;
        let at = s.seed().await;
        s.submit(ACME, "acme", "link-1", &at).await;
        s
    });
    let mut runner =
        TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let result = runner.run(&case(), |c| {
        let (status, text) = rt.block_on(send(&s, &c));
        prop_assert!(status < 500, "{c:?} answered {status}: {text}");
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{c:?}: not JSON ({e}): {text}")))?;
        if status != 200 {
            prop_assert_eq!(
                &body["errorResponse"]["responseCode"],
                &json!(status),
                "{:?}: {}",
                c,
                text
            );
            prop_assert!(body["errorResponse"]["code"].is_string(), "{:?}: {}", c, text);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
