//! End-to-end tests of the real `pop` binary: each test starts `pop serve` as a child process on
//! a temp data dir and `127.0.0.1:0`, reads the token and address from its stdout, and talks to
//! it the way clients do — GraphQL over HTTP, subscriptions over a raw graphql-transport-ws
//! WebSocket, and the CLI (`pop submit`, `pop progress`) as child processes. A guard kills the
//! server on drop, so a failing test leaks no process. Every wait is bounded ([`WAIT`]) and
//! fails with a message (and the server's log); nothing asserts on timing.

// Test helpers panic on purpose: a broken fixture should fail the test loudly.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use support::{Pop, WAIT, log_tail, pop_command, wait_bounded};

/// A user of customer `acme` (from the token file).
const ACME: &str = "tok_e2e_acme_user_000000000000000";
/// A user of customer `globex`.
const GLOBEX: &str = "tok_e2e_globex_user_0000000000000";
/// A resource pool's worker acting for `acme` (expansion is a service's job).
const ACME_SERVICE: &str = "tok_e2e_acme_service_000000000000";

/// The AgendaProgress fields the tests compare.
const PROGRESS_FIELDS: &str = "id agendaId customerId linkId processingState \
    processingStateMessage percentComplete attemptsCompleted maximumAttempts params \
    operationProgress { id operation processingState processingStateMessage } \
    diagnosticEvents { message } agendaInsight { resourcePoolId insightId }";

fn progress_query() -> String {
    format!(
        "query($id: String!, $p: String) {{ agendaProgress(id: $id, atLeastPosition: $p) \
         {{ {PROGRESS_FIELDS} }} }}"
    )
}

fn progress_subscription() -> String {
    format!(
        "subscription($id: String!) {{ agendaProgress(id: $id) {{ position removed lagged \
         resync progress {{ {PROGRESS_FIELDS} }} }} }}"
    )
}

/// A temp dir holding the data dir, the token file and the server's log (appended to across
/// restarts, so a failure shows every run).
struct Harness {
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("a temp dir");
        let tokens = json!([
            {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
            {"token": GLOBEX, "name": "globex-user", "role": "user", "customers": ["globex"]},
            {"token": ACME_SERVICE, "name": "acme-worker", "role": "service", "customers": ["acme"]},
        ]);
        std::fs::write(dir.path().join("tokens.json"), tokens.to_string()).unwrap();
        Harness { dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("tokens.json")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("pop.log")
    }

    /// `pop serve` with the token file.
    fn start(&self) -> Pop {
        // These tests follow agendas as the progress tracker records them (WAITING/added after
        // a submit); the scheduler moving them on is tested in e2e_scheduling.rs.
        Pop::start(&self.data_dir(), Some(&self.token_file()), &self.log(), false)
    }

    /// `pop serve` with no token file: only the generated admin token is known.
    fn start_without_token_file(&self) -> Pop {
        Pop::start(&self.data_dir(), None, &self.log(), false)
    }
}

impl Pop {
    /// The pool, customers `acme` and `globex` on it, and a global insight taking `ffmpeg`
    /// operations; returns the position of the last write.
    async fn seed(&self) -> String {
        self.ok(
            &self.admin,
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await;
        for c in ["acme", "globex"] {
            self.ok(
                &self.admin,
                "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
                json!({"c": {"id": c, "title": c, "resourcePoolId": "pool-1"}}),
            )
            .await;
        }
        let data = self
            .ok(
                &self.admin,
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": "transcode", "customerId": "ops", "title": "Transcode",
                    "resourcePoolId": "pool-1", "queueSize": 5, "isGlobal": true,
                    "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await;
        position(&data["createInsight"])
    }

    /// Submits [`agenda`] as `token`, waiting for config up to `after`; (agenda id, position).
    async fn submit(
        &self,
        token: &str,
        customer: &str,
        link: &str,
        after: &str,
    ) -> (String, String) {
        let data = self
            .ok(
                token,
                "mutation($a: JSON!, $p: String) { submitAgenda(agenda: $a, atLeastPosition: $p) \
                 { agenda { id agendaInsight { insightId } } position } }",
                json!({"a": agenda(customer, link), "p": after}),
            )
            .await;
        let r = &data["submitAgenda"];
        assert_eq!(r["agenda"]["agendaInsight"]["insightId"], "transcode", "bound: {r:#}");
        (r["agenda"]["id"].as_str().expect("an agenda id").to_string(), position(r))
    }

    async fn expand(&self, token: &str, id: &str, operation: &str) -> String {
        let data = self
            .ok(
                token,
                "mutation($id: String!, $ops: JSON!) { expandAgenda(agendaId: $id, operations: $ops, \
                 params: {tier: \"gold\"}) { position } }",
                json!({"id": id, "ops": [{"name": operation, "type": "ffmpeg"}]}),
            )
            .await;
        position(&data["expandAgenda"])
    }

    async fn cancel(&self, token: &str, id: &str) -> String {
        let data = self
            .ok(
                token,
                "mutation($id: String!) { cancelAgenda(agendaId: $id, reason: \"e2e\") { position } }",
                json!({"id": id}),
            )
            .await;
        position(&data["cancelAgenda"])
    }

    async fn rerun(&self, token: &str, id: &str) -> String {
        let data = self
            .ok(
                token,
                "mutation($id: String!) { rerunAgenda(agendaId: $id) { position } }",
                json!({"id": id}),
            )
            .await;
        position(&data["rerunAgenda"])
    }

    /// The AgendaProgress as `token` sees it once the read models reached `at`.
    async fn progress(&self, token: &str, id: &str, at: Option<&str>) -> Value {
        let data = self.ok(token, &progress_query(), json!({"id": id, "p": at})).await;
        data["agendaProgress"].clone()
    }

    /// A graphql-transport-ws connection initialised with `token`.
    async fn ws(&self, token: &str) -> Ws {
        let (ws, ack) = Ws::connect(
            &format!("ws://{}/graphql/ws", self.addr),
            json!({"authorization": format!("Bearer {token}")}),
        )
        .await;
        assert_eq!(ack["type"], "connection_ack", "{ack:#}");
        ws
    }

    /// Runs the `pop` CLI against this server (bounded); returns the finished output.
    async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::from(pop_command());
        cmd.args(args).arg("--server").arg(self.base()).kill_on_drop(true);
        tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("pop {args:?} did not finish within {WAIT:?}"))
            .expect("running the pop CLI")
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends SIGTERM with `kill -TERM` and waits (bounded) for the exit.
    fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.pid()]).status().expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit("SIGTERM")
    }

    /// `kill -9`: no chance to flush, snapshot or close anything.
    fn kill_9(mut self) {
        let sent = Command::new("kill").args(["-9", &self.pid()]).status().expect("kill");
        assert!(sent.success(), "kill -9 failed");
        self.wait_exit("SIGKILL");
    }

    fn wait_exit(&mut self, after: &str) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pop serve still running {WAIT:?} after {after}\nlog:\n{}",
                log_tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn position(result: &Value) -> String {
    result["position"].as_str().unwrap_or_else(|| panic!("no position in {result:#}")).to_string()
}

/// A two-operation agenda bound by the `ffmpeg` mapper.
fn agenda(customer: &str, link: &str) -> Value {
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

fn state(progress: &Value) -> (&str, &str) {
    (
        progress["processingState"].as_str().unwrap_or("?"),
        progress["processingStateMessage"].as_str().unwrap_or("?"),
    )
}

/// A raw graphql-transport-ws connection: every message in arrival order.
struct Ws {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    /// Connects and sends `connection_init` with `payload`; returns the connection and the
    /// server's first answer (`connection_ack`, or the close it got instead).
    async fn connect(url: &str, payload: Value) -> (Ws, Value) {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the WebSocket handshake within the wait")
            .expect("the WebSocket handshake");
        let mut ws = Ws { ws };
        ws.send(json!({"type": "connection_init", "payload": payload})).await;
        let answer = ws.next().await;
        (ws, answer)
    }

    async fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).await.expect("a WebSocket send");
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"id": id, "type": "subscribe",
                         "payload": {"query": query, "variables": variables}}))
            .await;
    }

    /// The next protocol message (pings answered); a close becomes `{"type": "close"}`.
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
                Some(Ok(Message::Close(frame))) => {
                    return json!({"type": "close",
                                  "code": frame.as_ref().map(|f| u16::from(f.code)),
                                  "reason": frame.map(|f| f.reason.to_string())});
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return json!({"type": "close", "error": e.to_string()}),
                None => return json!({"type": "close"}),
            }
        }
    }

    /// The next `agendaProgress` item of subscription `id`, which must be error-free.
    async fn update(&mut self, id: &str) -> Value {
        let m = self.next().await;
        assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("next"), Some(id)), "{m:#}");
        assert!(m["payload"].get("errors").is_none(), "{m:#}");
        m["payload"]["data"]["agendaProgress"].clone()
    }
}

/// Subscribe to an agenda through a real WebSocket, then change it with `expandAgenda`,
/// `cancelAgenda` and `rerunAgenda`: each change arrives, in order, tagged with the position
/// the mutation returned and showing the state it caused; `pop progress` prints the end state.
#[tokio::test]
async fn a_subscriber_sees_expand_cancel_and_rerun_and_pop_progress_agrees() {
    let h = Harness::new();
    let pop = h.start();
    assert!(!pop.generated_token, "with a token file no admin token is generated");
    let seeded = pop.seed().await;
    let (id, submitted) = pop.submit(ACME, "acme", "batch-1", &seeded).await;

    let mut ws = pop.ws(ACME).await;
    ws.subscribe("p", &progress_subscription(), json!({"id": id})).await;
    let first = ws.update("p").await;
    assert_eq!(state(&first["progress"]), ("WAITING", "added"), "current state first: {first:#}");
    assert_eq!(first["progress"]["agendaId"], id.as_str());
    assert_eq!(first["position"], submitted.as_str(), "nothing else was written: {first:#}");

    let expanded = pop.expand(ACME_SERVICE, &id, "thumb").await;
    let u = ws.update("p").await;
    assert_eq!(u["position"], expanded.as_str(), "{u:#}");
    assert_eq!(state(&u["progress"]), ("WAITING", "added"), "{u:#}");
    let ops: Vec<&str> = u["progress"]["operationProgress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["probe", "encode", "thumb"], "{u:#}");
    assert_eq!(u["progress"]["params"]["tier"], "gold", "{u:#}");

    let cancelled = pop.cancel(ACME, &id).await;
    let u = ws.update("p").await;
    assert_eq!(u["position"], cancelled.as_str(), "{u:#}");
    assert_eq!(state(&u["progress"]), ("COMPLETE", "cancelled"), "{u:#}");
    assert!(
        u["progress"]["operationProgress"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["processingStateMessage"] == "cancelled"),
        "every operation cancelled: {u:#}"
    );
    assert_eq!(u["progress"]["diagnosticEvents"][0]["message"], "Agenda cancelled: e2e", "{u:#}");

    // A rerun appends two events (rerun, then re-added): one update per event, each showing
    // the state current when it was rendered, the last one at the rerun's position.
    let rerun = pop.rerun(ACME, &id).await;
    let rerun_at: u64 = rerun.parse().unwrap();
    loop {
        let u = ws.update("p").await;
        let at: u64 = u["position"].as_str().unwrap().parse().unwrap();
        assert!(at <= rerun_at, "no update past the last write: {u:#}");
        assert_eq!(u["progress"]["processingState"], "WAITING", "{u:#}");
        if at == rerun_at {
            assert_eq!(state(&u["progress"]), ("WAITING", "added"), "{u:#}");
            break;
        }
    }

    // The CLI reads the same state.
    let out = pop.cli(&["progress", &id, "--token", ACME]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pop progress failed: {}", String::from_utf8_lossy(&out.stderr));
    let headline = stdout.lines().next().unwrap_or_default();
    assert!(
        headline.starts_with(&id) && headline.contains("WAITING / added"),
        "pop progress printed:\n{stdout}"
    );
    // One line per operation, then the agenda's last diagnostic (its cancel's reason).
    let operations = stdout.lines().filter(|l| l.starts_with("  ") && !l.starts_with("  the "));
    assert_eq!(operations.count(), 3, "{stdout}");
    let last = stdout.lines().find(|l| l.starts_with("  the agenda's last diagnostic (at "));
    assert!(last.is_some_and(|l| l.ends_with("): Agenda cancelled: e2e")), "{stdout}");
    let out = pop.cli(&["progress", &id, "--json", "--token", ACME]).await;
    let json: Value = serde_json::from_slice(&out.stdout).expect("pop progress --json prints JSON");
    assert_eq!(state(&json), ("WAITING", "added"), "{json:#}");
    // As of the cancel's position the agenda was cancelled, as of its submission added.
    let out = pop.cli(&["progress", &id, "--as-of", &cancelled, "--token", ACME]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("COMPLETE / cancelled"), "pop progress --as-of printed:\n{stdout}");
    // Said to be the past before anything else, so it is never read as the live state.
    let first = stdout.lines().next().unwrap_or("");
    assert!(first.starts_with(&format!("as of {cancelled} ")), "{stdout}");
    let out = pop.cli(&["progress", &id, "--as-of", &submitted, "--json", "--token", ACME]).await;
    let json: Value = serde_json::from_slice(&out.stdout).expect("pop progress --json prints JSON");
    assert_eq!(state(&json), ("WAITING", "added"), "{json:#}");
    assert_eq!(json["operationProgress"].as_array().map(Vec::len), Some(2), "before the expand");
    // Before the agenda existed there is nothing, said with a failing exit code.
    let out = pop.cli(&["progress", &id, "--as-of", "2000-01-01T00:00:00Z", "--token", ACME]).await;
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not exist as of 2000-01-01T00:00:00Z"), "{stderr}");
    // `pop audit`: the timeline names who did what, with the state after each event.
    let out = pop.cli(&["audit", &id, "--token", ACME]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let submitted_line = stdout.lines().find(|l| l.contains("AgendaSubmitted")).unwrap_or("");
    assert!(
        submitted_line.contains("user:acme-user") && submitted_line.contains("submitAgenda"),
        "pop audit printed:\n{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.contains("AgendaCancelled") && l.contains("COMPLETE / cancelled")),
        "{stdout}"
    );
    assert!(stdout.contains("service:acme-worker"), "the expand's actor: {stdout}");
    // A first line says what the agenda is now; each row carries its cid (auditor59 L1).
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("agenda {id}: ")), "{stdout}");
    assert!(first.contains(" events; now WAITING / "), "rerun after its cancel: {stdout}");
    assert!(stdout.lines().nth(1).is_some_and(|h| h.trim_end().ends_with("cid")), "{stdout}");
    let out = pop.cli(&["audit", &id, "--json", "--token", ACME]).await;
    let entries: Value = serde_json::from_slice(&out.stdout).expect("pop audit --json prints JSON");
    assert_eq!(entries[0]["type"], "AgendaSubmitted", "{entries:#}");
    assert_eq!(entries[0]["actor"], "user:acme-user");
    // Diagnostics whole, as agendaHistory has them (auditor55 L4: time, stack trace and
    // payload were left out).
    let cancel = entries.as_array().and_then(|e| e.iter().find(|e| e["type"] == "AgendaCancelled"));
    let said = cancel.map(|e| &e["diagnostics"][0]).cloned().unwrap_or_default();
    assert!(said["time"].is_string() && said.get("stackTrace").is_some(), "{entries:#}");
    let out = pop.cli(&["audit", &id, "--token", GLOBEX]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"));
    // Another customer's token sees nothing, and the CLI says so with a failing exit code.
    let out = pop.cli(&["progress", &id, "--token", GLOBEX]).await;
    assert!(!out.status.success(), "globex must not see acme's agenda");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"), "{out:?}");
}

/// `pop submit FILE` as a child process, the admin token taken from the data dir as in the
/// five-minute tour; then a subscriber follows the submitted agenda through a cancel and
/// `pop progress` prints the result.
#[tokio::test]
async fn pop_submit_from_a_file_then_subscription_and_pop_progress() {
    let h = Harness::new();
    // As in the tour: no token file, the admin token generated into the data dir.
    let pop = h.start_without_token_file();
    let seeded = pop.seed().await;
    // `pop submit` sends no atLeastPosition: make sure the binding sees the config.
    pop.ok(
        &pop.admin,
        "query($p: String) { customers(atLeastPosition: $p) { position } }",
        json!({"p": seeded}),
    )
    .await;
    let file = h.dir.path().join("agenda.json");
    std::fs::write(&file, agenda("acme", "from-cli").to_string()).unwrap();

    let data_dir = pop.data_dir.to_string_lossy().to_string();
    let out = pop.cli(&["submit", file.to_str().unwrap(), "--data-dir", &data_dir]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "pop submit failed: {}", String::from_utf8_lossy(&out.stderr));
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted agenda "))
        .unwrap_or_else(|| panic!("no agenda id in:\n{stdout}"))
        .trim()
        .to_string();
    assert!(stdout.contains("transcode (pool pool-1)"), "bound to the insight:\n{stdout}");
    assert!(stdout.contains("WAITING / added"), "{stdout}");

    let mut ws = pop.ws(&pop.admin).await;
    ws.subscribe("p", &progress_subscription(), json!({"id": id})).await;
    let first = ws.update("p").await;
    assert_eq!(state(&first["progress"]), ("WAITING", "added"), "{first:#}");
    assert_eq!(first["progress"]["customerId"], "acme");
    assert_eq!(first["progress"]["linkId"], "from-cli");

    let cancelled = pop.cancel(&pop.admin, &id).await;
    let u = ws.update("p").await;
    assert_eq!(u["position"], cancelled.as_str(), "{u:#}");
    assert_eq!(state(&u["progress"]), ("COMPLETE", "cancelled"), "{u:#}");

    let out = pop.cli(&["progress", &id, "--data-dir", &data_dir]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().next().unwrap_or_default().contains("COMPLETE / cancelled"), "{stdout}");
}

/// Read-your-writes: the `position` a mutation returns, passed as `atLeastPosition`, makes the
/// very next read show that mutation's effect — for every kind of agenda mutation, many
/// times over (a single lucky read would prove nothing).
#[tokio::test]
async fn a_mutations_position_as_at_least_position_reads_the_new_state() {
    let h = Harness::new();
    let pop = h.start();
    let seeded = pop.seed().await;
    for round in 0..10 {
        let link = format!("ryw-{round}");
        let (id, at) = pop.submit(ACME, "acme", &link, &seeded).await;
        let p = pop.progress(ACME, &id, Some(&at)).await;
        assert_eq!(state(&p), ("WAITING", "added"), "round {round} after submit: {p:#}");
        let data = pop
            .ok(
                ACME,
                "query($l: String!, $p: String) { agendas(filter: {linkId: $l}, atLeastPosition: $p) \
                 { items { id } position } }",
                json!({"l": link, "p": at}),
            )
            .await;
        assert_eq!(data["agendas"]["items"], json!([{"id": id}]), "round {round}: {data:#}");

        let at = pop.expand(ACME_SERVICE, &id, "thumb").await;
        let p = pop.progress(ACME, &id, Some(&at)).await;
        assert_eq!(p["operationProgress"].as_array().unwrap().len(), 3, "round {round}: {p:#}");

        let at = pop.cancel(ACME, &id).await;
        let p = pop.progress(ACME, &id, Some(&at)).await;
        assert_eq!(state(&p), ("COMPLETE", "cancelled"), "round {round} after cancel: {p:#}");

        let at = pop.rerun(ACME, &id).await;
        let p = pop.progress(ACME, &id, Some(&at)).await;
        assert_eq!(state(&p), ("WAITING", "added"), "round {round} after rerun: {p:#}");
    }
}

/// Auth is on by default: a server started with no token configuration at all still refuses
/// anonymous requests and sockets. With a token file, a user of one customer cannot see or
/// touch another customer's agenda — not by query, mutation, CLI or subscription.
#[tokio::test]
async fn auth_is_on_by_default_and_customers_are_isolated() {
    let bare = Harness::new();
    let pop = bare.start_without_token_file();
    for token in [None, Some("tok_not_a_known_token_00000000000")] {
        let (status, body) = pop.post(token, "{ me { name } }", json!({})).await;
        assert_eq!(status, 401, "{body:#}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body:#}");
    }
    let me = pop.ok(&pop.admin, "{ me { name role customers } }", json!({})).await;
    assert_eq!(me["me"], json!({"name": "admin", "role": "admin", "customers": ["*"]}));
    let url = format!("ws://{}/graphql/ws", pop.addr);
    for payload in [json!({}), json!({"authorization": "Bearer tok_not_a_known_token_00000000000"})]
    {
        let (_, answer) = Ws::connect(&url, payload.clone()).await;
        // graphql-transport-ws: a refused `connection_init` closes with 4403 Forbidden.
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_u64()),
            (Some("close"), Some(4403)),
            "{payload}: {answer:#}"
        );
    }
    drop(pop);

    let h = Harness::new();
    let pop = h.start();
    let seeded = pop.seed().await;
    let (mine, _) = pop.submit(ACME, "acme", "shared-link", &seeded).await;
    let (theirs, at) = pop.submit(GLOBEX, "globex", "shared-link", &seeded).await;

    // Globex asks about acme's agenda: nothing is there, as for an id that never existed.
    let data = pop
        .ok(
            GLOBEX,
            // Each field waits for the position itself: fields resolve concurrently.
            "query($id: String!, $p: String) { agendaProgress(id: $id, atLeastPosition: $p) { id } \
             agenda(id: $id, atLeastPosition: $p) { id } agendaEvents(agendaId: $id) { items { type } } \
             progressSummary(linkId: \"shared-link\", atLeastPosition: $p) { progressList { agendaId } } \
             agendas(atLeastPosition: $p) { items { id } } }",
            json!({"id": mine, "p": at}),
        )
        .await;
    assert_eq!(data["agendaProgress"], Value::Null, "{data:#}");
    assert_eq!(data["agenda"], Value::Null, "{data:#}");
    assert_eq!(data["agendaEvents"], Value::Null, "{data:#}");
    assert_eq!(data["progressSummary"]["progressList"], json!([{"agendaId": theirs}]), "{data:#}");
    assert_eq!(data["agendas"]["items"], json!([{"id": theirs}]), "{data:#}");
    for mutation in [
        "mutation($id: String!) { cancelAgenda(agendaId: $id) { position } }",
        "mutation($id: String!) { rerunAgenda(agendaId: $id) { position } }",
    ] {
        let code = pop.err_code(GLOBEX, mutation, json!({"id": mine})).await;
        assert_eq!(code, "NOT_FOUND", "{mutation}");
    }
    let code = pop
        .err_code(
            GLOBEX,
            "mutation { cancelAgenda(agendaId: \"no-such-agenda\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND", "an unknown id answers the same");
    let p = pop.progress(ACME, &mine, None).await;
    assert_eq!(state(&p), ("WAITING", "added"), "globex's cancel did nothing: {p:#}");

    // Subscriptions: globex follows acme's agenda, then its own. Acme's agenda changes first,
    // then globex's: the first thing globex's socket delivers after its own agenda's current
    // state must be its own agenda's change.
    let mut ws = pop.ws(GLOBEX).await;
    ws.subscribe("theirs", &progress_subscription(), json!({"id": mine})).await;
    ws.subscribe("own", &progress_subscription(), json!({"id": theirs})).await;
    let first = ws.update("own").await;
    assert_eq!(first["progress"]["agendaId"], theirs.as_str(), "{first:#}");
    pop.cancel(ACME, &mine).await;
    let cancelled = pop.cancel(GLOBEX, &theirs).await;
    let u = ws.update("own").await;
    assert_eq!(u["position"], cancelled.as_str(), "no acme change reached globex: {u:#}");
    assert_eq!(state(&u["progress"]), ("COMPLETE", "cancelled"), "{u:#}");
}

/// The generated admin token is the embedded default's only: without configured tokens the
/// first start generates, stores and prints one and a restart reuses it; with a token file
/// (as every replica of a deployment has) none is generated or printed, and a token left in
/// the data dir by an earlier start without one is refused.
#[tokio::test]
async fn an_admin_token_is_generated_only_without_a_token_file() {
    let h = Harness::new();
    let admin_file = h.data_dir().join("admin.token");

    let pop = h.start();
    assert!(!pop.generated_token, "with a token file no admin token is printed");
    assert!(!admin_file.exists(), "with a token file no admin token file is written");
    let me = pop.ok(&pop.admin, "{ me { role } }", json!({})).await;
    assert_eq!(me["me"]["role"], "admin", "the token file's admin works: {me:#}");
    drop(pop);

    let pop = h.start_without_token_file();
    assert!(pop.generated_token, "without a token file the first start prints an admin token");
    let stored = std::fs::read_to_string(&admin_file).expect("the generated admin token file");
    assert_eq!(stored.trim(), pop.admin, "the printed token is the stored one");
    let me = pop.ok(&pop.admin, "{ me { role } }", json!({})).await;
    assert_eq!(me["me"]["role"], "admin", "{me:#}");
    let generated = pop.admin.clone();
    drop(pop);

    let pop = h.start_without_token_file();
    assert!(!pop.generated_token, "a restart reuses the stored admin token");
    assert_eq!(pop.admin, generated);
    drop(pop);

    let pop = h.start();
    assert!(!pop.generated_token, "with a token file no admin token is printed");
    let (status, body) = pop.post(Some(&generated), "{ me { name } }", json!({})).await;
    assert_eq!(status, 401, "the generated token is not accepted with a token file: {body:#}");
}

/// `pop serve` on a fresh data directory in `dir`, started through `launcher` (a program and
/// its arguments that end by running the pop binary with the arguments after them), its log
/// in `log`; returns once it says it listens. Its stdout is read to the end (a closed pipe
/// would fail its later prints).
#[cfg(target_os = "linux")]
fn serve_through(
    launcher: &[&str],
    dir: &std::path::Path,
    log: &std::path::Path,
) -> std::process::Child {
    use std::io::BufRead;
    let mut cmd = Command::new(launcher[0]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POP_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(&launcher[1..])
        .arg(env!("CARGO_BIN_EXE_pop"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("pop: listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(WAIT).expect("pop serve says it listens");
    child
}

/// A hang-up (the terminal `pop serve` ran in was closed) stops it as SIGTERM does: drained,
/// exit 0, the store closed and the signal named in the log (it died on the spot). Started
/// through `env --default-signal=HUP`: a test run under `nohup` would otherwise hand the
/// server an ignored hang-up, which it rightly keeps (the next test).
#[cfg(target_os = "linux")] // GNU env's --default-signal; /proc tells pop a hang-up is ignored
#[test]
fn sighup_stops_the_server_as_sigterm_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pop.log");
    let mut child = serve_through(&["env", "--default-signal=HUP"], dir.path(), &log);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let status = wait_bounded(&mut child, WAIT).expect("stopped by SIGHUP");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit status {status:?} after SIGHUP\nlog:\n{}", log_tail(&log));
    assert!(
        text.lines().any(|l| l.contains("shutting down") && l.contains("SIGHUP")),
        "log:\n{}",
        log_tail(&log)
    );
    assert!(text.contains("store closed; bye"), "closed, not killed:\n{}", log_tail(&log));
}

/// Started with the hang-up ignored (`nohup pop serve &`, then the terminal closes), it keeps
/// running: listening for SIGHUP must not replace that "ignore" with a stop. SIGTERM still
/// stops it.
#[cfg(target_os = "linux")] // pop reads /proc/self/status to know the hang-up is ignored
#[test]
fn a_server_started_with_the_hang_up_ignored_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pop.log");
    let launcher = ["sh", "-c", "trap '' HUP; exec \"$@\"", "sh"];
    let mut child = serve_through(&launcher, dir.path(), &log);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(child.try_wait().unwrap().is_none(), "a nohup'd server stopped on a hang-up");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("shutting down"), "it began to stop:\n{}", log_tail(&log));
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_bounded(&mut child, WAIT).expect("stopped by SIGTERM");
    assert!(status.success(), "{status:?}\nlog:\n{}", log_tail(&log));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.contains("shutting down") && l.contains("SIGTERM")),
        "{}",
        log_tail(&log)
    );
}

/// SIGTERM stops the server cleanly (exit code 0, bounded), even with a subscriber connected;
/// a restart on the same data dir reuses the admin token, starts from the snapshot the
/// shutdown wrote, and serves every agenda exactly as before.
#[tokio::test]
async fn sigterm_exits_zero_and_a_restart_serves_the_same_state() {
    let h = Harness::new();
    let pop = h.start();
    let seeded = pop.seed().await;
    let (done, _) = pop.submit(ACME, "acme", "l", &seeded).await;
    pop.cancel(ACME, &done).await;
    let (live, _) = pop.submit(ACME, "acme", "l", &seeded).await;
    let last = pop.expand(ACME_SERVICE, &live, "thumb").await;
    let before_done = pop.progress(&pop.admin, &done, Some(&last)).await;
    let before_live = pop.progress(&pop.admin, &live, Some(&last)).await;
    assert_eq!(state(&before_done), ("COMPLETE", "cancelled"));
    assert_eq!(before_live["operationProgress"].as_array().unwrap().len(), 3);

    // An open subscription must not keep the server from stopping.
    let mut ws = pop.ws(ACME).await;
    ws.subscribe("p", &progress_subscription(), json!({"id": live})).await;
    ws.update("p").await;

    // A write acknowledged just before the signal is in the shutdown's last snapshot: the
    // projections stop only after the requests drained and they applied what was written.
    let (_, final_write) = pop.submit(ACME, "acme", "l", &last).await;
    let log = pop.log.clone();
    let started = Instant::now();
    let status = pop.terminate();
    eprintln!("pop serve stopped {:?} after SIGTERM", started.elapsed());
    assert!(status.success(), "exit status {status:?} after SIGTERM\nlog:\n{}", log_tail(&log));
    let snapshots =
        std::fs::read_dir(h.data_dir().join("snapshots")).map(|d| d.count()).unwrap_or(0);
    assert!(snapshots > 0, "the shutdown wrote a snapshot\nlog:\n{}", log_tail(&log));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let written = text
        .lines()
        .rev()
        .filter(|l| l.contains("projections snapshot written"))
        .find_map(|l| logged_number(l, "position"))
        .unwrap_or_else(|| panic!("no snapshot position logged\nlog:\n{}", log_tail(&log)));
    let final_write: u64 = final_write.parse().unwrap();
    assert!(
        written >= final_write,
        "the last snapshot is at {written}, before the write acknowledged at {final_write}\nlog:\n{}",
        log_tail(&log)
    );
    // The subscriber is not left hanging: its connection ends with the process. (Today it
    // ends with a reset, not a close frame: the shutdown does not close sockets itself.)
    let end = ws.next().await;
    assert_eq!(end["type"], "close", "{end:#}");

    let pop = h.start();
    assert!(!pop.generated_token, "with a token file a restart generates no admin token");
    let log = std::fs::read_to_string(&pop.log).unwrap_or_default();
    assert!(
        log.contains("projections snapshot loaded"),
        "the restart starts from the snapshot:\n{}",
        log_tail(&pop.log)
    );
    assert_eq!(pop.progress(&pop.admin, &done, Some(&last)).await, before_done);
    assert_eq!(pop.progress(&pop.admin, &live, Some(&last)).await, before_live);
    // And the restarted server carries on writing.
    let at = pop.cancel(ACME, &live).await;
    assert_eq!(state(&pop.progress(ACME, &live, Some(&at)).await), ("COMPLETE", "cancelled"));
}

/// What the server acknowledged survives `kill -9`: submissions and changes answered before
/// the kill are there after a restart — both on a fresh data dir (rebuilt from the log) and
/// after an earlier graceful stop (the snapshot it wrote plus the log after it).
#[tokio::test]
async fn acknowledged_changes_survive_kill_9() {
    let h = Harness::new();
    let pop = h.start();
    let seeded = pop.seed().await;
    // Concurrent acknowledged writes: each in its own group commit or sharing one.
    let submits = (0..8).map(|_| pop.submit(ACME, "acme", "durable", &seeded));
    let ids: Vec<String> =
        futures::future::join_all(submits).await.into_iter().map(|(id, _)| id).collect();
    pop.cancel(ACME, &ids[0]).await;
    let expanded = pop.expand(ACME_SERVICE, &ids[1], "thumb").await;
    pop.kill_9();

    let pop = h.start();
    // Sequential mutations: the last one acknowledged has the latest position.
    let last = expanded;
    for id in &ids {
        let p = pop.progress(ACME, id, Some(&last)).await;
        assert_eq!(p["agendaId"], id.as_str(), "agenda {id} lost by kill -9: {p:#}");
    }
    assert_eq!(state(&pop.progress(ACME, &ids[0], None).await), ("COMPLETE", "cancelled"));
    let p = pop.progress(ACME, &ids[1], None).await;
    assert_eq!(p["operationProgress"].as_array().unwrap().len(), 3, "{p:#}");

    // Graceful stop (snapshot), restart, more acknowledged writes, kill -9, restart: the
    // snapshot plus the log after it.
    assert!(pop.terminate().success());
    let pop = h.start();
    pop.rerun(ACME, &ids[0]).await;
    pop.cancel(ACME, &ids[2]).await;
    let (late, submitted) = pop.submit(ACME, "acme", "durable", &seeded).await;
    pop.kill_9();

    let pop = h.start();
    let log = std::fs::read_to_string(&pop.log).unwrap_or_default();
    assert!(log.contains("projections snapshot loaded"), "{}", log_tail(&pop.log));
    let last = submitted;
    assert_eq!(state(&pop.progress(ACME, &ids[0], Some(&last)).await), ("WAITING", "added"));
    assert_eq!(state(&pop.progress(ACME, &ids[2], None).await), ("COMPLETE", "cancelled"));
    assert_eq!(state(&pop.progress(ACME, &late, None).await), ("WAITING", "added"));
    assert_eq!(state(&pop.progress(ACME, &ids[3], None).await), ("WAITING", "added"));
}

/// Runs `cmd` to its end within [`WAIT`] (killing it and failing the test past that); returns
/// its exit status and stderr.
fn run_bounded(mut cmd: Command, what: &str) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    match wait_bounded(&mut child, WAIT) {
        Some(status) => (status, std::fs::read_to_string(&err_path).unwrap_or_default()),
        None => panic!(
            "{what} was still running after {WAIT:?}: it did not refuse the locked data \
             directory\n{}",
            log_tail(&err_path)
        ),
    }
}

#[tokio::test]
async fn one_process_per_data_dir_and_the_second_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Pop::start(&data, None, &dir.path().join("pop.log"), false);
    let holder = format!("pop serve (pid {})", first.child.id());

    // Every process that writes to the data directory refuses at once, naming the holder.
    let second_serve: &[&str] = &["serve", "--bind", "127.0.0.1:0"];
    for args in [second_serve, &["rebuild"], &["demo"], &["reap", "data", "--once"]] {
        let mut cmd = pop_command();
        cmd.args(args).arg("--data-dir").arg(&data);
        let what = format!("pop {}", args.join(" "));
        let (status, stderr) = run_bounded(cmd, &what);
        assert!(!status.success(), "{what} started on a locked data directory: {stderr}");
        assert!(stderr.contains("is in use by") && stderr.contains(&holder), "{what}: {stderr}");
    }

    // Reading stays allowed while the server runs.
    let mut log = pop_command();
    log.args(["log", "--limit", "1", "--data-dir"]).arg(&data);
    let (status, stderr) = run_bounded(log, "pop log");
    assert!(status.success(), "pop log: {stderr}");
    // A position the log never handed out is said, not printed as an empty log (auditor31:
    // nothing, exit 0).
    let mut log = pop_command();
    log.args(["log", "--after", "999999", "--data-dir"]).arg(&data);
    let (status, stderr) = run_bounded(log, "pop log --after");
    assert!(!status.success(), "pop log --after past the head: {stderr}");
    assert!(stderr.contains("past the log's head"), "{stderr}");
    // A stream without events says so, and how an agenda's stream is named.
    let mut log = pop_command();
    log.args(["log", "--stream", "agenda-job-1", "--data-dir"]).arg(&data);
    let (status, stderr) = run_bounded(log, "pop log --stream");
    assert!(status.success(), "pop log --stream: {stderr}");
    assert!(stderr.contains("no events in stream \"agenda-job-1\""), "{stderr}");
    assert!(stderr.contains("agenda-<customerId>/<id>"), "{stderr}");
    // A bare id (no category) is told the form too (newcomer61 L3).
    let mut log = pop_command();
    log.args(["log", "--stream", "01a25386-6b44-7124-b6bf-81050584c887", "--data-dir"]).arg(&data);
    let (status, stderr) = run_bounded(log, "pop log --stream <bare id>");
    assert!(status.success(), "pop log --stream: {stderr}");
    assert!(stderr.contains("<category>-<id>") && stderr.contains("pop events <id>"), "{stderr}");

    // Once the holder is gone (even killed), the directory is free again.
    drop(first);
    let mut rebuild = pop_command();
    rebuild.args(["rebuild", "--data-dir"]).arg(&data);
    let (status, stderr) = run_bounded(rebuild, "pop rebuild");
    assert!(status.success(), "pop rebuild after the server ended: {stderr}");
}

/// `pop log --follow` beside a running server prints what the server commits after it began
/// (it used to open a store of its own, which learns only of its own writer's commits: it
/// printed the log up to its start and then nothing, as long as it ran); after a `kill -9`
/// the acknowledged events are all there for it to read.
#[tokio::test]
async fn pop_log_follows_what_a_running_server_commits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pop = Pop::start(&data, None, &dir.path().join("pop.log"), false);
    let seeded = pop.seed_work(&["log"]).await;

    let out_path = dir.path().join("follow.out");
    let err_path = dir.path().join("follow.err");
    let mut follow = pop_command()
        .args(["log", "--follow", "--limit", "1", "--after", &seeded, "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // The follower has read the log's end before the server commits again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(follow.try_wait().unwrap().is_none(), "{}", log_tail(&err_path));
    pop.ok(
        &pop.admin,
        "mutation($v: JSON!) { createCustomer(customer: $v) { position } }",
        json!({"v": {"id": "later", "title": "Later", "resourcePoolId": "farm"}}),
    )
    .await;
    let status = wait_bounded(&mut follow, WAIT).unwrap_or_else(|| {
        panic!("pop log --follow never printed the server's commit: {}", log_tail(&err_path))
    });
    assert!(status.success(), "{}", log_tail(&err_path));
    let printed = std::fs::read_to_string(&out_path).unwrap();
    let event: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(event["stream"], "customer-later", "{printed}");

    // Killed: what it acknowledged is read from the file and its write-ahead log.
    drop(pop);
    let mut log = pop_command();
    log.args(["log", "--limit", "10", "--data-dir"]).arg(&data);
    let output = log.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let streams: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["stream"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streams.len(), 4, "{streams:?}");
    assert_eq!(streams.last().map(String::as_str), Some("customer-later"), "{streams:?}");
}

/// `pop log | head` ends quietly with 0 when the reader goes away, as other command-line tools
/// do, instead of "error: Broken pipe" and exit 1; `pop export | …` cut off is an error that
/// says the export is incomplete. The output here is well past a pipe's 64 KiB, so the writes
/// after the reader left fail.
#[test]
fn pop_log_ends_quietly_and_pop_export_fails_when_their_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for _ in 0..12 {
        let mut demo = pop_command();
        demo.arg("demo").arg("--data-dir").arg(&data);
        let (status, stderr) = run_bounded(demo, "pop demo");
        assert!(status.success(), "pop demo: {stderr}");
    }
    for args in [&["log"][..], &["export"]] {
        let err_path = dir.path().join("stderr");
        let mut child = pop_command()
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        assert!(first.starts_with('{'), "pop {args:?} printed {first:?}");
        drop(stdout);
        let status = wait_bounded(&mut child, WAIT)
            .unwrap_or_else(|| panic!("pop {args:?} still ran after its reader went away"));
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        if args == ["export"] {
            assert!(!status.success(), "a cut export must fail: {stderr}");
            assert!(stderr.contains("incomplete"), "{stderr}");
        } else {
            assert!(status.success(), "pop {args:?} ended with {status} after `| head`: {stderr}");
            assert!(!stderr.contains("Broken pipe"), "pop {args:?}: {stderr}");
        }
    }

    // `pop log --follow` without --limit follows past the first hundred events (the default
    // --limit of a plain `pop log` ended it there, quietly: newcomer5, ops3am4).
    let out_path = dir.path().join("follow.out");
    let mut follow = pop_command()
        .args(["log", "--follow", "--data-dir"])
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default().lines().count();
    while printed() <= 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(printed() > 100, "printed {}", printed());
    std::thread::sleep(Duration::from_millis(500));
    assert!(follow.try_wait().unwrap().is_none(), "the follow ended after {} events", printed());
    let _ = follow.kill();
    let _ = follow.wait();
}

/// The number logged as `field` in a log line (text or coloured: escape sequences are skipped).
fn logged_number(line: &str, field: &str) -> Option<u64> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let rest = &plain[plain.find(&format!("{field}="))? + field.len() + 1..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Issue 19, item 4: a replica past its memory budget (here any, at one byte) does not crash
/// or crash-loop: it serves, degraded, and says so in `/readyz`, `/metrics` and its log; a
/// restart on the same data replays into the same degraded mode and serves the same state.
#[tokio::test]
async fn past_its_memory_budget_a_replica_serves_degraded_and_says_so() {
    let h = Harness::new();
    let start = || {
        Pop::start_with(
            &h.data_dir(),
            Some(&h.token_file()),
            &h.log(),
            false,
            &["--memory-budget", "1"],
        )
    };
    let pop = start();
    let seeded = pop.seed().await;
    let (live, _) = pop.submit(ACME, "acme", "l", &seeded).await;
    let last = pop.expand(ACME_SERVICE, &live, "thumb").await;
    let before = pop.progress(&pop.admin, &live, Some(&last)).await;
    assert_eq!(before["operationProgress"].as_array().unwrap().len(), 3, "{before:#}");
    let said = |pop: &Pop| {
        let http = pop.http.clone();
        let base = pop.base();
        async move {
            let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
            let status = ready.status().as_u16();
            let text = ready.text().await.unwrap();
            let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
            (status, text, metrics.text().await.unwrap())
        }
    };
    let (status, ready, metrics) = said(&pop).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("DEGRADED") && ready.contains("memory budget"), "{ready}");
    assert!(metrics.contains("pop_projection_degraded 1"), "{metrics}");
    let log = pop.log.clone();
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("MEMORY BUDGET EXCEEDED"),
        "{}",
        log_tail(&log)
    );
    assert!(pop.terminate().success(), "{}", log_tail(&log));

    let pop = start();
    let after = pop.progress(&pop.admin, &live, Some(&last)).await;
    assert_eq!(after, before);
    let (status, ready, _) = said(&pop).await;
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("DEGRADED"), "{ready}");
    drop(pop);

    // Without the flag (and no container limit here) nothing is degraded.
    let pop = h.start();
    let (_, ready, metrics) = said(&pop).await;
    assert!(!ready.contains("DEGRADED"), "{ready}");
    assert!(metrics.contains("pop_projection_degraded 0"), "{metrics}");
}

/// ops3am53 L4: a data directory on a filesystem with less free space than the server keeps
/// (here any, at a floor of 1 TiB) says so at start and in `/readyz` (503, naming the flag),
/// before an append fails on a full disk; with the floor off the same data is ready.
#[tokio::test]
async fn a_data_directory_short_of_free_space_is_not_ready_and_says_why() {
    let h = Harness::new();
    let readyz = |pop: &Pop| {
        let http = pop.http.clone();
        let base = pop.base();
        async move {
            let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
            (ready.status().as_u16(), ready.text().await.unwrap())
        }
    };
    let floor = ["--min-free-disk-mib", "1048576"];
    let pop = Pop::start_with(&h.data_dir(), Some(&h.token_file()), &h.log(), false, &floor);
    let (status, said) = readyz(&pop).await;
    assert_eq!(status, 503, "{said}");
    // 1 TiB is more than this volume holds in all: it can never be ready there (dash55 L4).
    assert!(said.contains("MiB in all, less than the 1048576 MiB"), "{said}");
    assert!(said.contains("can never be ready there"), "{said}");
    assert!(said.contains("--min-free-disk-mib"), "{said}");
    let log = pop.log.clone();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("WARN") && logged.contains("this server keeps free"), "{logged}");
    assert!(pop.terminate().success(), "{}", log_tail(&log));

    let pop = Pop::start_with(
        &h.data_dir(),
        Some(&h.token_file()),
        &h.log(),
        false,
        &["--min-free-disk-mib", "0"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, said) = readyz(&pop).await;
        if status == 200 {
            assert!(said.starts_with("ready at position"), "{said}");
            break;
        }
        assert!(Instant::now() < deadline, "not ready without a floor: {said}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pop serve --dev` sets up the tour's objects at every start; on a restart they exist, and
/// keeping them refuses nothing: the refused-commands series stay empty (newcomer54: each
/// restart counted three refused creates, a blip on the dashboard's refused panel).
#[tokio::test]
async fn a_dev_restart_keeps_its_objects_without_refused_commands() {
    let h = Harness::new();
    let dev = || Pop::start_with(&h.data_dir(), None, &h.log(), true, &["--dev"]);
    let said = |pop: &Pop, line: &str| {
        let deadline = Instant::now() + WAIT;
        while !pop.stdout().contains(line) {
            assert!(Instant::now() < deadline, "no {line:?} in:\n{}", pop.stdout());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let pop = dev();
    said(&pop, "pop: --dev: created insight encode");
    let log = pop.log.clone();
    assert!(pop.terminate().success(), "{}", log_tail(&log));
    let pop = dev();
    said(&pop, "pop: --dev: kept insight encode (it exists)");
    let page = pop.metrics().await;
    let refused: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("pop_api_commands_total") && l.contains("outcome=\"refused\""))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    // The timed processes' counters are there from the start, at 0 until something happens
    // (newcomer57 L5: an alert over them found no series after a restart).
    for process in ["reclaimer", "retry", "data"] {
        let series = format!(
            "pop_process_skipped_cycles_total{{process=\"{process}\",reason=\"leader_lost\"}}"
        );
        assert!(page.lines().any(|l| l.starts_with(&series)), "no {series} in:\n{page}");
        let errors =
            format!("pop_process_actions_total{{process=\"{process}\",outcome=\"error\"}} 0");
        assert!(page.lines().any(|l| l == errors), "no {errors} in:\n{page}");
    }
    // So are the claims, their latency and the subscriptions (operator58 L3).
    for series in [
        "pop_claims_total 0",
        "pop_claim_latency_seconds_count 0",
        "pop_api_subscriptions_active 0",
    ] {
        assert!(page.lines().any(|l| l == series), "no {series} in:\n{page}");
    }
}
