//! Two `pop serve` replicas on one PostgreSQL database (a throwaway cluster for this test
//! binary), and the same on one KurrentDB (a real server with `POP_KURRENTDB_URL`, else the
//! protocol double): the scheduler runs on one of them (leader lock) and still queues agendas;
//! concurrent `getAgenda` calls on both never hand out one agenda twice; a subscription on one
//! replica sees changes written through the other; a position returned by one is honoured by
//! the other (`atLeastPosition`); with the leader frozen (`kill -STOP`) the other keeps serving and
//! takes the scheduler over. Every wait is bounded ([`WAIT`]).

// Test helpers panic on purpose: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use pop_store::test_cluster::{ClusterDurability, TestCluster};
use serde_json::{Value, json};
use support::{Pop, WAIT, log_tail};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const POLL: Duration = Duration::from_millis(25);
/// Leader take-over: PostgreSQL must end the frozen leader's silent sessions (15 s idle), or
/// KurrentDB the frozen leader's 10 s lease must run out; then the survivor asks again every
/// 2 s.
const TAKEOVER: Duration = Duration::from_secs(30);

const ADMIN: &str = "tok_replicas_admin_000000000000000";
const ACME: &str = "tok_replicas_acme_user_0000000000";
const WORKER_1: &str = "tok_replicas_worker_1_00000000000";
const WORKER_2: &str = "tok_replicas_worker_2_00000000000";

const GET_AGENDA: &str = "mutation($i: String!, $n: Int!) { getAgenda(insightId: $i, count: $n) \
    { agenda { id } position } }";
const UPDATE: &str = "mutation($p: JSON!) { updateAgendaProgress(agendaProgress: $p) { progress \
    { id processingState processingStateMessage } position } }";
const PROGRESS: &str = "query($id: String!, $p: String) { agendaProgress(id: $id, \
    atLeastPosition: $p) { id processingState processingStateMessage } }";

fn start(dir: &Path, name: &str, url: &str) -> Pop {
    Pop::start_on(
        &dir.join(name),
        Some(&dir.join("tokens.json")),
        &dir.join(format!("{name}.log")),
        true,
        Some(url),
    )
}

fn leads_scheduler(pop: &Pop) -> bool {
    std::fs::read_to_string(&pop.log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("this replica leads") && l.contains("scheduler"))
}

fn state(p: &Value) -> (&str, &str) {
    (
        p["processingState"].as_str().unwrap_or_default(),
        p["processingStateMessage"].as_str().unwrap_or_default(),
    )
}

async fn seed(pop: &Pop) -> String {
    pop.seed_transcode(ADMIN, 20).await
}

async fn submit(pop: &Pop, after: &str) -> String {
    let data = pop
        .ok(
            ACME,
            "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
             { agenda { id } } }",
            json!({"p": after, "a": {
                "customerId": "acme", "linkId": "replicas", "title": "transcode",
                "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"src": "in.mp4"}}]
            }}),
        )
        .await;
    data["submitAgenda"]["agenda"]["id"].as_str().unwrap().to_string()
}

async fn wait_queued(pop: &Pop, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let data = pop.ok(ACME, PROGRESS, json!({"id": id, "p": null})).await;
        if state(&data["agendaProgress"]) == ("WAITING", "queued") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agenda {id} not queued within {WAIT:?}: {data:#}\nlog:\n{}",
            log_tail(&pop.log)
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn get_agenda(pop: &Pop, token: &str) -> Vec<String> {
    let data = pop.ok(token, GET_AGENDA, json!({"i": "transcode", "n": 1})).await;
    data["getAgenda"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {data:#}"))
        .iter()
        .map(|g| g["agenda"]["id"].as_str().unwrap().to_string())
        .collect()
}

/// A raw graphql-transport-ws connection.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    async fn connect(pop: &Pop, token: &str) -> Ws {
        let mut request = format!("ws://{}/graphql/ws", pop.addr).into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the WebSocket handshake within the wait")
            .expect("the WebSocket handshake");
        let mut ws = Ws { ws };
        ws.send(json!({"type": "connection_init",
                       "payload": {"authorization": format!("Bearer {token}")}}))
            .await;
        let ack = ws.next().await;
        assert_eq!(ack["type"], "connection_ack", "{ack:#}");
        ws
    }

    async fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).await.expect("a WebSocket send");
    }

    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no WebSocket message within {WAIT:?}"));
            match message {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("a JSON message");
                    if v["type"] == "ping" {
                        self.send(json!({"type": "pong"})).await;
                        continue;
                    }
                    return v;
                }
                Some(Ok(Message::Close(_))) | None => return json!({"type": "close"}),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return json!({"type": "close", "error": e.to_string()}),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_database() {
    let Some(cluster) = TestCluster::shared("two_replicas_on_one_postgres_database") else {
        return;
    };
    let url = cluster.create_database().await.expect("a database");
    two_replicas_on_one_store(&url).await;
}

/// The same on KurrentDB: on a real server when `POP_KURRENTDB_URL` is set (in a namespace
/// of its own), else on the protocol double, served on a loopback port by this test process.
#[cfg(feature = "kurrentdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_kurrentdb() {
    let mut _double = None;
    let url = match std::env::var("POP_KURRENTDB_URL") {
        Ok(url) if !url.is_empty() => {
            let glue = if url.contains('?') { '&' } else { '?' };
            format!("{url}{glue}popNamespace=e2e-{}", uuid::Uuid::new_v4().simple())
        }
        _ => {
            let options = pop_kurrentdb_double::DoubleOptions::default();
            let double = pop_kurrentdb_double::KurrentDouble::start(options).await.unwrap();
            let url = double.url();
            _double = Some(double);
            url
        }
    };
    two_replicas_on_one_store(&url).await;
}

async fn two_replicas_on_one_store(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = json!([
        {"token": ADMIN, "name": "admin", "role": "admin", "customers": ["*"]},
        {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
        {"token": WORKER_1, "name": "worker-1", "role": "service", "customers": ["acme"]},
        {"token": WORKER_2, "name": "worker-2", "role": "service", "customers": ["acme"]},
    ]);
    std::fs::write(dir.path().join("tokens.json"), tokens.to_string()).unwrap();
    let a = start(dir.path(), "a", url);
    let b = start(dir.path(), "b", url);

    // (a) One scheduler leader; agendas submitted on B get queued.
    let seeded = seed(&a).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(&b, &seeded).await);
    }
    for id in &ids {
        wait_queued(&a, id).await;
    }
    let leaders: Vec<&Pop> = [&a, &b].into_iter().filter(|p| leads_scheduler(p)).collect();
    assert_eq!(leaders.len(), 1, "exactly one replica leads the scheduler");
    // A dry run previews a reap while a replica leads it: it changes nothing, so it takes no
    // leader lock (ops3am53: "another replica holds the leader lock; nothing done").
    if url.starts_with("postgres") {
        let out = support::pop_command()
            .args(["reap", "data", "--once", "--dry-run", "--store", url, "--data-dir"])
            .arg(dir.path().join("reap-preview"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("pop reap (dry run: nothing was changed): planned="), "{stdout}");
        assert!(!stdout.contains("leader lock"), "{stdout}");
    }
    // The replica that found the store made says nothing of it (tokio-postgres logged the
    // server's NOTICE "relation \"pop_schema\" already exists, skipping" at INFO).
    for pop in [&a, &b] {
        let log = std::fs::read_to_string(&pop.log).unwrap_or_default();
        assert!(!log.contains("already exists, skipping"), "{log}");
    }

    // (b) Concurrent getAgenda on both replicas: no agenda handed out twice, all handed out.
    let calls = [(&a, WORKER_1), (&b, WORKER_2), (&a, WORKER_2), (&b, WORKER_1)];
    let mut handed = Vec::new();
    for _ in 0..3 {
        let round =
            futures::future::join_all(calls.iter().map(|(pop, token)| get_agenda(pop, token)))
                .await;
        handed.extend(round.into_iter().flatten());
    }
    let unique: HashSet<&String> = handed.iter().collect();
    assert_eq!(unique.len(), handed.len(), "an agenda was handed out twice: {handed:?}");
    loop {
        let more = get_agenda(&b, WORKER_1).await;
        if more.is_empty() {
            break;
        }
        handed.extend(more);
    }
    let unique: HashSet<&String> = handed.iter().collect();
    assert_eq!(unique.len(), handed.len(), "an agenda was handed out twice: {handed:?}");
    assert_eq!(unique.len(), ids.len(), "every queued agenda handed out once");

    // (c) A subscription on A sees a change written through B; (d) B's position is honoured
    // by a query on A.
    let id = handed[0].clone();
    let mut ws = Ws::connect(&a, ACME).await;
    ws.send(json!({"id": "p", "type": "subscribe", "payload": {
        "query": "subscription($id: String!) { agendaProgress(id: $id) { position \
                  progress { processingState processingStateMessage } } }",
        "variables": {"id": id}}}))
        .await;
    let first = ws.next().await;
    assert_eq!(first["type"], "next", "{first:#}");
    // Whoever got the agenda reports on replica B.
    let holder = [WORKER_1, WORKER_2];
    let mut reported = None;
    let mut holder_token = None;
    for token in holder {
        let (_, body) = b
            .post(
                Some(token),
                UPDATE,
                json!({"p": {"id": id, "processingState": "EXECUTING",
                             "processingStateMessage": "Running Operations",
                             "operationProgress": [{"operation": "probe",
                                                    "processingState": "EXECUTING"}]}}),
            )
            .await;
        if body.get("errors").is_none() {
            reported = Some(body["data"]["updateAgendaProgress"].clone());
            holder_token = Some(token);
            break;
        }
    }
    let reported = reported.expect("the lease holder's report through B");
    let position = reported["position"].as_str().unwrap().to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let m = ws.next().await;
        assert_eq!(m["type"], "next", "{m:#}");
        let item = &m["payload"]["data"]["agendaProgress"];
        if state(&item["progress"]) == ("EXECUTING", "Running Operations") {
            break;
        }
        assert!(Instant::now() < deadline, "A's subscriber never saw B's write");
    }
    let on_a = a.ok(ACME, PROGRESS, json!({"id": id, "p": position})).await;
    assert_eq!(
        state(&on_a["agendaProgress"]),
        ("EXECUTING", "Running Operations"),
        "read-your-writes across replicas"
    );
    // The same without any wait in between: a second write through B, read on A at once with
    // its position (A may not have applied it yet; atLeastPosition must make it wait).
    let holder_token = holder_token.expect("the holder's token");
    let (_, body) = b
        .post(
            Some(holder_token),
            UPDATE,
            json!({"p": {"id": id, "processingState": "EXECUTING",
                         "processingStateMessage": "Second step",
                         "operationProgress": [{"operation": "probe",
                                                "processingState": "EXECUTING",
                                                "percentComplete": 50}]}}),
        )
        .await;
    assert!(body.get("errors").is_none(), "the second report through B: {body:#}");
    let position = body["data"]["updateAgendaProgress"]["position"].as_str().unwrap().to_string();
    let on_a = a.ok(ACME, PROGRESS, json!({"id": id, "p": position})).await;
    assert_eq!(
        state(&on_a["agendaProgress"]),
        ("EXECUTING", "Second step"),
        "read-your-writes across replicas, read at once"
    );

    // (d') A burst of concurrent writes through both replicas: neither takes it for a
    // database restored under it (auditor24: commits of one process end out of transaction
    // order, and both replicas latched "the log went back" and answered 503 for good).
    // (16: the insight queues 20, and the agenda of (e) must still find room.)
    let burst = (0..16).map(|i| submit(if i % 2 == 0 { &a } else { &b }, &position));
    futures::future::join_all(burst).await;
    for pop in [&a, &b] {
        let (status, body) = readyz(pop).await;
        assert_eq!(status, 200, "{body}\n{}", log_tail(&pop.log));
    }

    // (e) The scheduler's leader frozen, not dead (`kill -STOP`: a hung node, Ctrl-Z): its
    // connections stay open and its kernel still answers TCP keepalives, but it says nothing.
    // The other keeps serving and takes the scheduler over (a new agenda gets queued); the
    // frozen leader's locks had kept every replica from scheduling (ops3am2).
    let (mut leader, survivor) = if leads_scheduler(&a) { (a, b) } else { (b, a) };
    let frozen = leader.child.id().to_string();
    assert!(
        std::process::Command::new("kill").args(["-STOP", &frozen]).status().unwrap().success()
    );
    let deadline = Instant::now() + TAKEOVER;
    while !leads_scheduler(&survivor) {
        assert!(
            Instant::now() < deadline,
            "the survivor did not take the scheduler over within {TAKEOVER:?}\nlog:\n{}",
            log_tail(&survivor.log)
        );
        tokio::time::sleep(POLL).await;
    }
    let after =
        survivor.ok(ADMIN, "query { agendaProgress(id: \"none\") { id } }", json!({})).await;
    assert!(after["agendaProgress"].is_null());
    let late = submit(&survivor, &position).await;
    wait_queued(&survivor, &late).await;
    // Its /metrics says it leads (the gauge an operator alerts on when no replica does).
    let metrics = survivor.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "pop_process_leader{process=\"scheduler\"} 1"),
        "{metrics}"
    );
    leader.child.kill().expect("kill -9 the frozen leader");
    leader.child.wait().expect("reap it");
    drop(leader);
}

/// One replica on `url` with an admin and acme's user, seeded; the seed's position.
async fn one_replica(dir: &Path, url: &str) -> (Pop, String) {
    let tokens = json!([
        {"token": ADMIN, "name": "admin", "role": "admin", "customers": ["*"]},
        {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
    ]);
    std::fs::write(dir.join("tokens.json"), tokens.to_string()).unwrap();
    let pop = start(dir, "a", url);
    let after = seed(&pop).await;
    (pop, after)
}

/// `/readyz`: its status and text.
async fn readyz(pop: &Pop) -> (u16, String) {
    let r = pop.http.get(format!("{}/readyz", pop.base())).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A database restored from a backup under a running replica puts the log's head back before
/// what the replica's read models applied: new events then land at positions it has passed,
/// and it never shows or runs them (ops3am10, after a `pg_basebackup` restore, with /readyz
/// 200). The head going back is simulated by deleting the newest transaction's events; the
/// replica turns unready, saying why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_log_went_back_under_it_is_not_ready() {
    let Some(cluster) = TestCluster::shared("a_replica_whose_log_went_back_under_it") else {
        return;
    };
    let url = cluster.create_database().await.expect("a database");
    let dir = tempfile::tempdir().unwrap();
    let (pop, after) = one_replica(dir.path(), &url).await;
    let id = submit(&pop, &after).await;
    wait_queued(&pop, &id).await;
    let (status, body) = readyz(&pop).await;
    assert_eq!(status, 200, "{body}");

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("DELETE FROM pop_events WHERE tx_id = (SELECT max(tx_id) FROM pop_events)")
        .await
        .unwrap();
    let (status, body) = readyz(&pop).await;
    assert_eq!(status, 503, "{body}\n{}", log_tail(&pop.log));
    assert!(body.contains("restored from a backup") && body.contains("restart"), "{body}");
    // New writes take the head past the old position again: still unready, until a restart
    // (ops3am11: it turned ready again and the writes in between were never shown or run).
    for _ in 0..3 {
        submit(&pop, &after).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (status, body) = readyz(&pop).await;
    assert_eq!(status, 503, "{body}\n{}", log_tail(&pop.log));
    assert!(body.contains("restored from a backup"), "{body}");
}

/// A transaction left open in another database of the server holds back every replica's
/// reads of the log (the gap-free horizon): /readyz names that cause and what to do, not only
/// "did not answer" (ops3am14: the operator checked a healthy PostgreSQL and restarted pop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_elsewhere_is_named_by_readiness() {
    // A cluster of its own: the transaction it leaves open holds back the reads of every
    // database of its server, and the other tests of this file share theirs (CI of 22d90ab:
    // the two replicas' read-your-writes timed out while it was open).
    let Some(cluster) =
        TestCluster::start("a_transaction_left_open_elsewhere", ClusterDurability::Fast)
            .expect("a throwaway PostgreSQL cluster")
    else {
        return;
    };
    let url = cluster.create_database().await.expect("a database");
    let elsewhere = cluster.create_database().await.expect("another database");
    let dir = tempfile::tempdir().unwrap();
    let (pop, after) = one_replica(dir.path(), &url).await;
    assert_eq!(readyz(&pop).await.0, 200);
    // Someone's BEGIN, forgotten, in another database: it holds a transaction id.
    let (client, connection) =
        tokio_postgres::connect(&elsewhere, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("BEGIN; CREATE TABLE forgotten (x int);").await.unwrap();
    // A write after it commits above the horizon, where no replica may read it yet.
    let write = pop.http.post(format!("{}/graphql", pop.base())).bearer_auth(ACME).json(&json!({
        "query": "mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }",
        "variables": {"a": {"customerId": "acme", "linkId": "held", "title": "t",
            "operations": [{"name": "probe", "type": "ffmpeg", "payload": {}}]}}}));
    let _ = write.send().await;
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = readyz(&pop).await;
        if status == 503 && body.contains("idle in transaction") {
            break body;
        }
        assert!(Instant::now() < deadline, "{status} {body}\n{}", log_tail(&pop.log));
        tokio::time::sleep(POLL).await;
    };
    assert!(body.contains("idle_in_transaction_session_timeout"), "{body}");
    // Once it ends, the replica is ready again by itself.
    client.batch_execute("COMMIT").await.unwrap();
    let deadline = Instant::now() + WAIT;
    while readyz(&pop).await.0 != 200 {
        assert!(Instant::now() < deadline, "{}", log_tail(&pop.log));
        tokio::time::sleep(POLL).await;
    }
    let _ = after;
}
