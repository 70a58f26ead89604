//! What POP's own clients send and expect (issue 12, item 17), over real HTTP: the `X-pop-cid`
//! header is the correlation id and comes back; `createAgenda` takes POP's
//! `{"agendas": [...]}` (all validated before any is written); the query parameters `byLimit`,
//! `byFields`, `byCount` and `byCid` work; and the error envelope carries POP's `error: true`.

#![allow(clippy::unwrap_used)]

mod support;

use pop_api::ApiConfig;
use serde_json::{Value, json};
use support::*;

struct Answer {
    status: u16,
    body: Value,
    pop_cid: Option<String>,
    cid: Option<String>,
}

async fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = s.http.request(method, format!("{}{path}", s.base)).bearer_auth(ACME);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (pop_cid, cid) = (header("x-pop-cid"), header("x-correlation-id"));
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap();
    Answer { status, body, pop_cid, cid }
}

fn pop_agenda(title: &str, link: &str) -> Value {
    json!({"customerId": "acme", "linkId": link, "title": title,
           "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]})
}

#[tokio::test]
async fn the_pop_cid_header_is_the_correlation_id_and_comes_back() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let body = json!({"agenda": pop_agenda("cid", "cid-link")});
    let path = format!("/pop/resourcepool/service/createAgenda?atLeastPosition={after}");
    let a = send(&s, "POST", &path, Some(body), &[("X-pop-cid", "pop-cid-42")]).await;
    assert_eq!(a.status, 200, "{:#}", a.body);
    assert_eq!(a.pop_cid.as_deref(), Some("pop-cid-42"));
    assert_eq!(a.cid.as_deref(), Some("pop-cid-42"));
    // The events carry it: the agenda was submitted with that cid.
    assert_eq!(a.body["all"][0]["cid"], json!("pop-cid-42"));
    // And errors name it.
    let e = send(&s, "GET", "/pop/agenda/missing", None, &[("X-pop-cid", "pop-cid-43")]).await;
    assert_eq!(e.status, 404);
    assert_eq!(e.body["errorResponse"]["correlationId"], json!("pop-cid-43"));
}

#[tokio::test]
async fn create_agenda_takes_pops_agendas_list_and_writes_none_when_one_is_wrong() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let path = format!("/pop/resourcepool/service/createAgenda?atLeastPosition={after}");
    let two = json!({"agendas": [pop_agenda("one", "many"), pop_agenda("two", "many")]});
    let a = send(&s, "POST", &path, Some(two), &[]).await;
    assert_eq!(a.status, 200, "{:#}", a.body);
    assert_eq!(a.body["count"], json!(2));
    let titles: Vec<&str> =
        a.body["all"].as_array().unwrap().iter().map(|x| x["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["one", "two"]);

    // The second is invalid: nothing is written, and the problem names its place.
    let mut bad = pop_agenda("bad", "none-written");
    bad["operations"] = json!([]);
    let mixed = json!({"agendas": [pop_agenda("fine", "none-written"), bad]});
    let a = send(&s, "POST", &path, Some(mixed), &[]).await;
    assert_eq!(a.status, 400, "{:#}", a.body);
    assert_eq!(a.body["error"], json!(true));
    let problems = a.body["errorResponse"]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["field"] == json!("agendas[1].operations")), "{problems:?}");
    let listed = send(&s, "GET", "/pop/agenda?byLinkId=none-written", None, &[]).await;
    assert_eq!(listed.body["count"], json!(0), "{:#}", listed.body);
}

#[tokio::test]
async fn pops_query_parameters_limit_select_count_and_filter_by_cid() {
    let s = start(ApiConfig::default()).await;
    let after = s.seed().await;
    let path = format!("/pop/resourcepool/service/createAgenda?atLeastPosition={after}");
    for (i, cid) in ["batch-a", "batch-a", "batch-b"].iter().enumerate() {
        let body = json!({"agenda": pop_agenda(&format!("t{i}"), "params")});
        let a = send(&s, "POST", &path, Some(body), &[("X-pop-cid", cid)]).await;
        assert_eq!(a.status, 200, "{:#}", a.body);
    }
    let limited = send(&s, "GET", "/pop/agenda?byLinkId=params&bylimit=2", None, &[]).await;
    assert_eq!(limited.body["all"].as_array().unwrap().len(), 2, "{:#}", limited.body);
    assert!(limited.body["next"].is_string());

    let fields = send(&s, "GET", "/pop/agenda?byLinkId=params&byFields=id,title", None, &[]).await;
    for agenda in fields.body["all"].as_array().unwrap() {
        let keys: Vec<&String> = agenda.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "title"], "{agenda}");
    }

    let counted = send(&s, "GET", "/pop/agenda?byLinkId=params&byCount=true", None, &[]).await;
    assert_eq!((counted.body["count"].clone(), counted.body["all"].clone()), (json!(3), json!([])));

    let by_cid = send(&s, "GET", "/pop/agenda?byCid=batch-a", None, &[]).await;
    assert_eq!(by_cid.body["count"], json!(2), "{:#}", by_cid.body);
    let progress =
        send(&s, "GET", "/pop/progress/agenda?byCid=batch-b&byCount=true", None, &[]).await;
    assert_eq!(progress.body["count"], json!(1), "{:#}", progress.body);
    let customers = send(&s, "GET", "/pop/customer?byCount=1", None, &[]).await;
    assert_eq!(customers.body["count"], json!(1), "acme sees itself only: {:#}", customers.body);
}

#[tokio::test]
async fn the_error_envelope_carries_pops_error_flag_and_cid() {
    let s = start(ApiConfig::default()).await;
    let a = send(&s, "GET", "/pop/agenda/nope", None, &[("X-Correlation-Id", "c-1")]).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"], json!(true));
    assert_eq!(a.body["cid"], json!("c-1"));
    assert_eq!(a.body["errorResponse"]["code"], json!("NOT_FOUND"));
}
