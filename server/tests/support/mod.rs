//! The process harness the end-to-end test crates share: start the real `pop serve` on a temp
//! data dir and `127.0.0.1:0`, read its address and admin token from stdout, talk GraphQL to it
//! over HTTP, and kill and reap it on drop so a failing test leaks no process.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The bound on every wait: server start, HTTP calls, state changes.
pub const WAIT: Duration = Duration::from_secs(20);

/// The admin token the harness adds to every token file it is given: with a token file
/// `pop serve` generates no admin token of its own.
pub const TEST_ADMIN: &str = "tok_test_admin_0123456789abcdef";

/// Adds [`TEST_ADMIN`] to the token file at `path` unless it is there already.
pub fn add_test_admin(path: &Path) {
    let text = std::fs::read_to_string(path).expect("the token file");
    let mut tokens: Vec<Value> = serde_json::from_str(&text).expect("a JSON token array");
    if !tokens.iter().any(|t| t["token"] == TEST_ADMIN) {
        tokens.push(json!({"token": TEST_ADMIN, "name": "test-admin", "role": "admin",
            "customers": ["*"]}));
        std::fs::write(path, Value::Array(tokens).to_string()).expect("writing the token file");
    }
}

/// A running `pop serve`; killed (SIGKILL) and reaped on drop unless it already exited.
pub struct Pop {
    pub child: Child,
    /// `host:port`.
    pub addr: String,
    /// The admin token: [`TEST_ADMIN`] with a token file; without one, the generated token
    /// (printed on first start, else read from the data dir).
    pub admin: String,
    /// Whether this start printed a freshly generated admin token.
    pub generated_token: bool,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Every line the server printed on its standard output.
    printed: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

impl Drop for Pop {
    fn drop(&mut self) {
        // Errors mean it already exited (and was reaped by `wait` below or earlier).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to `within` for `child` to end; `None` (after killing it) when it did not.
pub fn wait_bounded(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a server log, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A `pop` command with none of the `POP_*` and `OTEL_*` variables (nor `DATABASE_URL`, nor the
/// `TRACEPARENT` and `TRACESTATE` a CLI call continues) of the environment, so the tests are
/// hermetic (and export no traces unless one asks).
pub fn pop_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pop"));
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("POP_")
            || name.starts_with("OTEL_")
            || ["DATABASE_URL", "TRACEPARENT", "TRACESTATE"].contains(&name.as_ref())
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

impl Pop {
    /// Starts `pop serve` on `data_dir` (appending its log to `log`) and waits (bounded) for
    /// its address; `scheduler` turns the scheduler on or off.
    pub fn start(data_dir: &Path, token_file: Option<&Path>, log: &Path, scheduler: bool) -> Pop {
        Pop::start_with(data_dir, token_file, log, scheduler, &[])
    }

    /// As [`Pop::start`], on the shared PostgreSQL store at `store` when given (`--store`).
    #[allow(dead_code)] // Not every test crate that shares this module runs replicas.
    pub fn start_on(
        data_dir: &Path,
        token_file: Option<&Path>,
        log: &Path,
        scheduler: bool,
        store: Option<&str>,
    ) -> Pop {
        let extra: Vec<&str> = store.map(|url| vec!["--store", url]).unwrap_or_default();
        Pop::start_with(data_dir, token_file, log, scheduler, &extra)
    }

    /// [`Pop::start`] with extra `pop serve` arguments (short intervals, leases, ages).
    pub fn start_with(
        data_dir: &Path,
        token_file: Option<&Path>,
        log: &Path,
        scheduler: bool,
        extra: &[&str],
    ) -> Pop {
        Pop::start_with_env(data_dir, token_file, log, scheduler, extra, &[])
    }

    /// [`Pop::start_with`] with extra environment variables for the server process.
    pub fn start_with_env(
        data_dir: &Path,
        token_file: Option<&Path>,
        log: &Path,
        scheduler: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Pop {
        Pop::start_wrapped(data_dir, token_file, log, scheduler, extra, env, None)
    }

    /// [`Pop::start_with_env`] under `ulimit -f <blocks>` (bash's 1 KiB blocks), when given.
    #[allow(clippy::too_many_arguments)]
    pub fn start_wrapped(
        data_dir: &Path,
        token_file: Option<&Path>,
        log: &Path,
        scheduler: bool,
        extra: &[&str],
        env: &[(&str, &str)],
        file_size_blocks: Option<u64>,
    ) -> Pop {
        let log_file =
            std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the log file");
        let mut cmd = pop_command();
        if let Some(blocks) = file_size_blocks {
            let pop = cmd;
            cmd = Command::new("bash");
            cmd.arg("-c").arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""));
            cmd.arg(pop.get_program());
            for (key, value) in pop.get_envs() {
                match value {
                    Some(value) => cmd.env(key, value),
                    None => cmd.env_remove(key),
                };
            }
        }
        cmd.arg("serve").arg("--data-dir").arg(data_dir);
        if !extra.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd.args(["--scheduler", if scheduler { "true" } else { "false" }]);
        if let Some(path) = token_file {
            add_test_admin(path);
            cmd.arg("--token-file").arg(path);
        }
        cmd.args(extra);
        cmd.envs(env.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawning pop serve");
        let stdout = child.stdout.take().expect("piped stdout");
        // A thread reads stdout to its end (so the server never blocks on a full pipe, nor
        // fails writing to a closed one), hands each line over while the start waits for
        // them, and keeps them all ([`Pop::stdout`]); the channel closes when the server exits.
        let (tx, rx) = mpsc::channel::<String>();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("pop: listening on http://") {
                        let addr = rest
                            .strip_suffix("/graphql")
                            .unwrap_or_else(|| panic!("unexpected listening line {line:?}"));
                        lines.push(line.clone());
                        break addr.to_string();
                    }
                    lines.push(line);
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "pop serve did not print its address within {WAIT:?} ({e}); stdout so far: \
                         {lines:#?}\nlog:\n{}",
                        log_tail(log)
                    );
                }
            }
        };
        let generated_token = lines.iter().any(|l| l.starts_with("pop: generated an admin token"));
        let admin = if token_file.is_some() {
            TEST_ADMIN.to_string()
        } else if generated_token {
            // The line after the announcement is `pop: <token>`.
            let at = lines.iter().position(|l| l.starts_with("pop: generated")).unwrap();
            lines[at + 1].strip_prefix("pop: ").expect("the token line").to_string()
        } else {
            std::fs::read_to_string(data_dir.join("admin.token"))
                .expect("the admin token of an earlier start")
                .trim()
                .to_string()
        };
        Pop {
            child,
            addr,
            admin,
            generated_token,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            printed,
            http: reqwest::Client::builder().timeout(WAIT).build().expect("an HTTP client"),
        }
    }

    /// What the server printed on its standard output so far.
    #[allow(dead_code)] // Not every test crate that shares this module reads it.
    pub fn stdout(&self) -> String {
        self.printed.lock().unwrap().join("\n")
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `/metrics` page.
    #[allow(dead_code)] // Not every test crate that shares this module reads metrics.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.base());
        self.http.get(url).send().await.expect("GET /metrics").text().await.expect("a body")
    }

    /// POSTs a GraphQL request; the HTTP status and the JSON body.
    pub async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base()))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql failed: {e}\nlog:\n{}", log_tail(&self.log)));
        let status = response.status().as_u16();
        let text = response.text().await.expect("a response body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, body)
    }

    /// Runs a query or mutation and returns `data`, failing on any error.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(Some(token), query, variables).await;
        assert!(
            status == 200 && body.get("errors").is_none(),
            "unexpected errors ({status}): {body:#}\nquery: {query}"
        );
        body["data"].clone()
    }

    /// As `admin`: pool `pool-1`, customer `acme` and the global insight `transcode` taking
    /// `ffmpeg` operations with a queue of `queue_size`; returns the insight's position.
    /// Pool `farm`, customer `acme` and the global insight `work` (queue size 10) taking
    /// `operation_types`, as the admin; the position of the insight's creation.
    pub async fn seed_work(&self, operation_types: &[&str]) -> String {
        let mut position = String::new();
        for (query, var) in [
            (
                "mutation($v: JSON!) { createResourcePool(resourcePool: $v) { position } }",
                json!({"id": "farm", "customerId": "ops", "title": "Farm"}),
            ),
            (
                "mutation($v: JSON!) { createCustomer(customer: $v) { position } }",
                json!({"id": "acme", "title": "Acme", "resourcePoolId": "farm"}),
            ),
            (
                "mutation($v: JSON!) { createInsight(insight: $v) { position } }",
                json!({"id": "work", "customerId": "ops", "title": "Work", "resourcePoolId": "farm",
                       "queueSize": 10, "isGlobal": true,
                       "mappers": {"operationType": operation_types}}),
            ),
        ] {
            let data = self.ok(&self.admin, query, json!({"v": var})).await;
            let result = data.as_object().and_then(|o| o.values().next()).expect("a result");
            position = result["position"].as_str().expect("a position").to_string();
        }
        position
    }

    pub async fn seed_transcode(&self, admin: &str, queue_size: u32) -> String {
        self.ok(
            admin,
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await;
        self.ok(
            admin,
            "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
            json!({"c": {"id": "acme", "title": "acme", "resourcePoolId": "pool-1"}}),
        )
        .await;
        let data = self
            .ok(
                admin,
                "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                json!({"i": {
                    "id": "transcode", "customerId": "ops", "title": "Transcode",
                    "resourcePoolId": "pool-1", "queueSize": queue_size, "isGlobal": true,
                    "mappers": {"operationType": ["ffmpeg"]}
                }}),
            )
            .await;
        data["createInsight"]["position"].as_str().expect("a position").to_string()
    }

    /// Runs a query or mutation that must fail with exactly one error; returns its code.
    pub async fn err_code(&self, token: &str, query: &str, variables: Value) -> String {
        let (_, body) = self.post(Some(token), query, variables).await;
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("expected an error, got {body:#}\nquery: {query}"));
        assert_eq!(errors.len(), 1, "{body:#}");
        errors[0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code in {body:#}"))
            .to_string()
    }
}
