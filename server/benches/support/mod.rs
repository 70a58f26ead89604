//! What the benchmarks that drive a real `pop serve` share: starting the release binary on a
//! temp data dir and reading its address and admin token, stopping it (SIGTERM, then SIGKILL)
//! on drop, reading its memory and CPU from /proc, and percentiles.

// Each benchmark uses a different part of this module.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The percentile `q` of sorted microseconds, in milliseconds.
pub fn ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1000.0
}

/// The `pop` binary the benchmarks start: `POP_BENCH_BIN` when set (e.g. a release binary
/// installed with `cargo install --path server`, when the bench client itself is built with
/// another profile), else the one cargo built for this benchmark.
pub fn pop_binary() -> std::ffi::OsString {
    std::env::var_os("POP_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_pop").into())
}

/// A `pop serve` child on a temp data dir; SIGTERM, then SIGKILL, on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub admin: String,
}

impl Server {
    /// Starts `pop serve --data-dir DATA_DIR --bind 127.0.0.1:0 ARGS…` and waits (bounded) for
    /// its address; the admin token is the one it generated into the data dir (if any).
    pub fn start<S: AsRef<OsStr>>(data_dir: &Path, args: &[S]) -> Result<Server> {
        Server::start_within(data_dir, args, Duration::from_secs(30))
    }

    /// [`Server::start`], waiting up to `limit` for the address (a start that loads a large
    /// snapshot prints it only after the load).
    pub fn start_within<S: AsRef<OsStr>>(
        data_dir: &Path,
        args: &[S],
        limit: Duration,
    ) -> Result<Server> {
        let mut child = Command::new(pop_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning pop serve")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server { child, addr: String::new(), admin: String::new() };
        let deadline = Instant::now() + limit;
        while server.addr.is_empty() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("pop serve did not print its address")?;
            if let Some(rest) = line.strip_prefix("pop: listening on http://") {
                server.addr = rest.trim_end_matches("/graphql").to_string();
            }
        }
        // Generated only without a token file; a bench with one sets `admin` itself.
        server.admin = std::fs::read_to_string(data_dir.join("admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Ok(server)
    }

    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    pub fn hwm_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // After the name, field 3 (state) is index 0, so fields 14 and 15 are 11 and 12.
    field(11) + field(12)
}

pub fn self_cpu_ticks() -> u64 {
    cpu_ticks("/proc/self/stat")
}

/// Clock ticks per second; 100 on every Linux configuration this runs on.
pub fn ticks_per_second() -> f64 {
    100.0
}

/// The three tokens of the benchmarks that start `pop serve` with [`start_with_tokens`]: a
/// worker (service) and a user of customer `acme`, and an admin.
pub const SERVICE_TOKEN: &str = "tok_bench_service_00000000000000000";
pub const USER_TOKEN: &str = "tok_bench_user_000000000000000000000";
pub const ADMIN_TOKEN: &str = "tok_bench_admin_00000000000000000000";

/// Starts `pop serve` under `dir` (data in `dir/data`) with the scheduler on, the given
/// durability, a token file with [`SERVICE_TOKEN`], [`USER_TOKEN`] and [`ADMIN_TOKEN`], and
/// `extra` arguments.
pub fn start_with_tokens(dir: &Path, durability: &str, extra: &[&str]) -> Result<Server> {
    start_with_tokens_within(dir, durability, extra, Duration::from_secs(30))
}

/// [`start_with_tokens`], waiting up to `limit` for the server's address.
pub fn start_with_tokens_within(
    dir: &Path,
    durability: &str,
    extra: &[&str],
    limit: Duration,
) -> Result<Server> {
    let tokens = serde_json::json!([
        {"token": SERVICE_TOKEN, "name": "bench-worker", "role": "service", "customers": ["acme"]},
        {"token": USER_TOKEN, "name": "bench-user", "role": "user", "customers": ["acme"]},
        {"token": ADMIN_TOKEN, "name": "bench-admin", "role": "admin", "customers": ["*"]},
    ]);
    let token_file = dir.join("tokens.json");
    std::fs::write(&token_file, tokens.to_string()).context("the token file")?;
    let mut args = vec![
        OsStr::new("--durability"),
        OsStr::new(durability),
        OsStr::new("--scheduler"),
        OsStr::new("true"),
        OsStr::new("--token-file"),
        token_file.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let mut server = Server::start_within(&dir.join("data"), &args, limit)?;
    server.admin = ADMIN_TOKEN.to_string();
    Ok(server)
}

/// A GraphQL client of one server.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
}

impl Api {
    pub fn new(server: &Server, timeout: Duration) -> Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(1024)
                .build()?,
            url: format!("http://{}/graphql", server.addr),
        })
    }

    /// One GraphQL request; its `data`, or an error carrying the response's `errors`.
    pub async fn call(
        &self,
        token: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let body: serde_json::Value = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = body.get("errors") {
            anyhow::bail!("GraphQL errors: {errors}");
        }
        Ok(body["data"].clone())
    }

    /// Pool `pool-1`, customer `acme` and one global insight per `(id, operation type, queue
    /// size)`; waits until the last insight is readable by the service token and returns the
    /// position of its creation.
    pub async fn seed(&self, insights: &[(&str, &str, usize)]) -> Result<String> {
        use serde_json::json;
        self.call(
            ADMIN_TOKEN,
            "mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }",
            json!({"p": {"id": "pool-1", "customerId": "ops", "title": "Pool"}}),
        )
        .await?;
        self.call(
            ADMIN_TOKEN,
            "mutation($c: JSON!) { createCustomer(customer: $c) { position } }",
            json!({"c": {"id": "acme", "title": "Acme", "resourcePoolId": "pool-1"}}),
        )
        .await?;
        let (mut position, mut last) = (String::new(), "");
        for (id, operation_type, queue_size) in insights {
            let data = self
                .call(
                    ADMIN_TOKEN,
                    "mutation($i: JSON!) { createInsight(insight: $i) { position } }",
                    json!({"i": {
                        "id": id, "customerId": "ops", "title": id, "resourcePoolId": "pool-1",
                        "queueSize": queue_size, "isGlobal": true,
                        "mappers": {"operationType": [operation_type]}
                    }}),
                )
                .await?;
            position = data["createInsight"]["position"]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("no position: {data}"))?;
            last = id;
        }
        let data = self
            .call(
                SERVICE_TOKEN,
                "query($i: String!, $p: String) { insight(id: $i, atLeastPosition: $p) { id } }",
                json!({"i": last, "p": position}),
            )
            .await?;
        anyhow::ensure!(data["insight"]["id"] == last, "the insight is not visible: {data}");
        Ok(position)
    }
}

/// The machine's load averages (1, 5, 15 minutes), as `/proc/loadavg` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
