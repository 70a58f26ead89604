//! The worker's GraphQL client through a scripted outage: a tiny HTTP server on loopback
//! answers the way `pop serve` does while its store cannot write — UNAVAILABLE in the
//! error's extensions (`retryable`, `retryAfterSeconds`) with a `Retry-After` header, or a
//! bare 503 with `Retry-After` — and then serves again. The client sends the same request
//! again after the pause the server asked for, the caller never sees the outage, and an
//! execution goes on to its end; a refusal is never sent twice.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use pop_domain::model::{Agenda, Operation, Timestamp};
use pop_worker::api::{ApiError, Claimed, GraphqlApi, Lease, WorkApi};
use pop_worker::execute::{ExecConfig, ExecEnv, Outcome, execute};
use pop_worker::handler::Registry;
use pop_worker::report::ReportConfig;

/// One scripted answer: status, extra headers, body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn unavailable() -> Answer {
    let body = json!({"errors": [{"message": "the event store cannot write: disk full",
        "extensions": {"code": "UNAVAILABLE", "retryable": true, "retryAfterSeconds": 1}}]});
    // GraphQL keeps status 200; the header says how long to wait.
    Answer { status: 200, headers: vec![("Retry-After", "1".into())], body: body.to_string() }
}

fn bare_503() -> Answer {
    Answer {
        status: 503,
        headers: vec![("Retry-After", "1".into())],
        body: "service unavailable".into(),
    }
}

fn data(value: Value) -> Answer {
    Answer { status: 200, headers: vec![], body: json!({"data": value}).to_string() }
}

/// The scripted server: answers the first requests from `script`, then `otherwise`; keeps
/// every request body.
#[derive(Clone)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Answer>>>,
    otherwise: Answer,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl Scripted {
    async fn start(script: Vec<Answer>, otherwise: Answer) -> (Scripted, String) {
        let scripted = Scripted {
            script: Arc::new(Mutex::new(script.into())),
            otherwise,
            requests: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = scripted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                tokio::spawn(server.clone().serve(socket));
            }
        });
        (scripted, base)
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// HTTP/1.1 with keep-alive: requests one after another on one connection.
    async fn serve(self, mut socket: tokio::net::TcpStream) {
        let mut buffer = Vec::new();
        loop {
            let end = loop {
                if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0u8; 4096];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buffer.len() < end + length {
                let mut chunk = [0u8; 4096];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Value = serde_json::from_slice(&buffer[end..end + length]).unwrap();
            buffer.drain(..end + length);
            self.requests.lock().unwrap().push(body);
            let answer =
                self.script.lock().unwrap().pop_front().unwrap_or_else(|| self.otherwise.clone());
            let mut response = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                answer.status,
                answer.body.len()
            );
            for (name, value) in &answer.headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&answer.body);
            if socket.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test]
async fn an_unavailable_server_is_asked_again_after_the_pause_it_asks_for() {
    let done = data(json!({"updateAgendaProgress": {"position": "7"}}));
    let (server, base) = Scripted::start(vec![unavailable(), bare_503()], done).await;
    let api = GraphqlApi::new(&base, "tok").unwrap();
    let started = Instant::now();
    let report = json!({"id": "ag", "processingState": "EXECUTING"});
    api.update_progress(&report).await.expect("the outage is not the caller's failure");
    let took = started.elapsed();
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    // The same request each time.
    assert!(requests.iter().all(|r| r == &requests[0]), "{requests:#?}");
    // Each pause honours the 1 s the server asked for (with jitter on top, never below).
    assert!(took >= Duration::from_secs(2), "sent again too soon: {took:?}");
}

#[tokio::test]
async fn a_refusal_is_not_sent_again() {
    let refused = Answer {
        status: 200,
        headers: vec![],
        body: json!({"errors": [{"message": "lease lost",
            "extensions": {"code": "CONFLICT"}}]})
        .to_string(),
    };
    let (server, base) = Scripted::start(vec![], refused).await;
    let api = GraphqlApi::new(&base, "tok").unwrap();
    let error = api.update_progress(&json!({"id": "ag"})).await.unwrap_err();
    assert!(matches!(&error, ApiError::Refused { code, .. } if code == "CONFLICT"), "{error}");
    assert_eq!(server.requests().len(), 1);
}

/// A deadline that passed (the store stalled) refuses nothing: once the client stops sending
/// it again, it is a transient failure, which the reporter keeps sending while it holds the
/// lease (ops3am22: it was a refusal, and every running agenda was dropped).
#[tokio::test]
async fn a_deadline_that_passed_is_no_refusal() {
    let stalled = Answer {
        status: 200,
        headers: vec![],
        body: json!({"errors": [{"message": "request: not answered within the deadline",
            "extensions": {"code": "DEADLINE_EXCEEDED"}}]})
        .to_string(),
    };
    let (server, base) = Scripted::start(vec![], stalled).await;
    let api = GraphqlApi::new(&base, "tok").unwrap();
    let error = api.update_progress(&json!({"id": "ag"})).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_execution_goes_on_through_an_outage_and_succeeds() {
    // The first two reports meet the outage; everything after is taken.
    let taken = data(json!({"updateAgendaProgress": {"position": "9"}}));
    let (server, base) = Scripted::start(vec![unavailable(), unavailable()], taken).await;
    let api = GraphqlApi::new(&base, "tok").unwrap();
    let env = ExecEnv {
        api: Arc::new(api),
        registry: Arc::new(Registry::with_builtins()),
        config: ExecConfig {
            max_parallel: 2,
            report: ReportConfig {
                interval: Duration::from_millis(20),
                heartbeat: Duration::from_secs(5),
                final_deadline: Duration::from_secs(60),
                lease: None,
            },
            shutdown_grace: Duration::from_secs(5),
        },
    };
    let now = Timestamp::from(std::time::SystemTime::now());
    let op = |name: &str| Operation {
        name: name.into(),
        op_type: "log".into(),
        payload: json!({"message": name}).into(),
        ..Operation::default()
    };
    let claimed = Claimed {
        agenda: Agenda {
            id: "ag".into(),
            customer_id: "c".into(),
            operations: vec![op("one"), op("two")],
            ..Agenda::default()
        },
        progress: None,
        lease: Some(Lease {
            id: "lease-1".into(),
            expires: now + Duration::from_secs(300),
            left: None,
        }),
        traceparent: None,
        tracestate: None,
    };
    let (_stop, shutdown) = watch::channel(false);
    let outcome =
        tokio::time::timeout(Duration::from_secs(60), execute(&env, claimed, None, shutdown))
            .await
            .expect("the execution ends");
    assert_eq!(outcome, Outcome::Succeeded);
    let requests = server.requests();
    assert!(requests.len() >= 3, "{requests:#?}");
    // Every operation was reported done once the server was back.
    let reported: Vec<&Value> = requests
        .iter()
        .flat_map(|r| r["variables"]["p"]["operationProgress"].as_array().into_iter().flatten())
        .filter(|o| o["processingState"] == "COMPLETE")
        .collect();
    for name in ["one", "two"] {
        assert!(
            reported.iter().any(|o| o["operation"] == name),
            "{name} never reported COMPLETE: {requests:#?}"
        );
    }
}
