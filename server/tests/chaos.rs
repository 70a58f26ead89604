//! Chaos (issue 19): faults injected while agendas are submitted and
//! worked through the real `pop serve`, then a Jepsen-style total-queue check after a full
//! drain — every submitted agenda exists exactly once and reached exactly one terminal state;
//! nothing was lost, duplicated or unexpected.
//!
//! Each case but the full disk runs on a throwaway PostgreSQL cluster of its own (initdb +
//! pg_ctl from Debian's binaries; a loud SKIP without them, a failure under
//! `POP_REQUIRE_POSTGRES=1`), because the faults hit the whole server:
//! - `pg_terminate_backend` on every connection of pop's database, in a loop;
//! - a PostgreSQL restart;
//! - the primary turning read-only (`default_transaction_read_only`) and back;
//! - every connection slot taken by another client, with pop's sessions killed so it must
//!   reconnect into a full server, for 3 s;
//! - `kill -9` of the replica that leads the scheduler (two replicas; clients fail over to the
//!   survivor, which takes the lead over);
//! - clock skew: two replicas, one 45 s ahead (libfaketime, Debian's `faketime`, preloaded
//!   into it; a loud SKIP without it, a failure under `POP_REQUIRE_FAKETIME=1`);
//! - `kill -9` of a real `pop worker` while it holds leases on agendas it is executing: the
//!   leases stop being renewed, the reclaimer hands those agendas out again, the other workers
//!   finish them;
//! - a full disk under the embedded store (SQLite): this case runs without PostgreSQL, on a
//!   data dir that is a small tmpfs of its own, filled to the last byte for 3 s and then freed.
//!   Mounting needs root: a loud SKIP without it, a failure under `POP_REQUIRE_TMPFS=1`.
//!
//! No call during a fault may answer INTERNAL: a storage outage is UNAVAILABLE (retryable).
//!
//! The load is what real clients do: a submitter that retries a submit until it is answered
//! (client-chosen ids make the retry safe: a second submit of an id that was committed is
//! refused as existing), and two workers that claim (`getAgenda`) and complete, retrying what
//! failed for transient reasons. A claim whose answer was lost leaves an agenda leased to no
//! one who knows it; the server's reclaimer (short leases here) hands it out again, which is
//! what a production worker would see too.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pop_store::test_cluster::{ClusterDurability, TestCluster};
use serde_json::{Value, json};
use support::{Pop, log_tail};
use tokio_postgres::NoTls;

const ACME: &str = "tok_chaos_acme_user_0123456789ab";
const WORKER: &str = "tok_chaos_worker_0123456789abcd";

/// Agendas each case submits.
const AGENDAS: usize = 120;
/// How long the whole drain may take after the fault ended.
const DRAIN: Duration = Duration::from_secs(120);
/// A new scheduler leader: PostgreSQL notices the dead session, the survivor asks again.
const TAKEOVER: Duration = Duration::from_secs(30);

/// Short leases and reclaims, so a claim whose answer was lost is handed out again quickly.
const FAST: &[&str] = &[
    "--lease",
    "2",
    "--reclaim-interval",
    "1",
    "--retry-interval",
    "1",
    "--retry-backoff",
    "0",
    "--retry-jitter-percent",
    "0",
    "--data-reap-interval",
    "0",
];

const SUBMIT: &str = "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id } } }";
const GET_AGENDA: &str = "mutation { getAgenda(insightId: \"transcode\", count: 10) \
    { agenda { id } progress { id } lease { id } } }";
const REPORT: &str = "mutation($p: JSON!, $l: String) { updateAgendaProgress(agendaProgress: $p, \
    leaseId: $l) { progress { processingState } } }";
const STATS: &str = "{ agendaStats { waiting executing succeeded failed cancelled } }";
const LIST: &str = "query($after: String) { agendaProgressList(first: 100, after: $after, \
    filter: {customerId: \"acme\"}) { items { agendaId processingState } endCursor hasNextPage } }";
const HISTORY: &str = "query($id: String!) { agendaEvents(agendaId: $id, first: 200) \
    { items { type } } }";

/// One GraphQL call that may fail in transit: the body, or why there is none. A call that
/// fails in transit moves this client to the next replica, as a load balancer would.
async fn call(load: &Load, token: &str, query: &str, variables: Value) -> Result<Value, String> {
    let at = if load.round_robin {
        load.replica.fetch_add(1, Ordering::Relaxed)
    } else {
        load.replica.load(Ordering::Relaxed)
    };
    let url = &load.urls[at % load.urls.len()];
    let sent = load
        .http
        .post(url)
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            let _ = load.replica.compare_exchange(at, at + 1, Ordering::Relaxed, Ordering::Relaxed);
            return Err(format!("transport: {e}"));
        }
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|e| format!("body ({status}): {e}"))?;
    match error_code(&body).as_deref() {
        Some("INTERNAL") => load.internal.lock().unwrap().push(body.to_string()),
        Some("UNAVAILABLE") => {
            load.unavailable.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    Ok(body)
}

/// The first error's code of a GraphQL answer, if it has errors.
fn error_code(body: &Value) -> Option<String> {
    body["errors"]
        .as_array()
        .and_then(|e| e.first())
        .map(|e| e["extensions"]["code"].as_str().unwrap_or("NO_CODE").to_string())
}

/// What each case's clients share.
struct Load {
    http: reqwest::Client,
    /// Each replica's GraphQL URL.
    urls: Vec<String>,
    /// The replica the clients call now (modulo the count); the next after a transport error.
    replica: AtomicUsize,
    /// Whether every call goes to the next replica (else only after a transport error).
    round_robin: bool,
    /// Answers that were INTERNAL: none is allowed.
    internal: Mutex<Vec<String>>,
    /// Set once every agenda is terminal: the workers stop.
    done: AtomicBool,
    /// Calls that failed in transit or with an error the client retries.
    failures: AtomicU64,
    /// Answers that were UNAVAILABLE (a storage outage, retryable).
    unavailable: AtomicU64,
    /// While set, the in-process workers claim nothing (a `pop worker` takes the work first).
    hold: AtomicBool,
}

impl Load {
    fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Submits `chaos-0 .. chaos-N`, each retried until it is answered with the agenda or as
/// existing (a retry of a submit that was committed before its answer was lost).
async fn submitter(load: Arc<Load>) -> Result<(), String> {
    for i in 0..AGENDAS {
        let id = format!("chaos-{i}");
        let agenda = json!({
            "id": id, "customerId": "acme", "linkId": "chaos", "title": "chaos",
            "params": {"maximumAttempts": 20},
            "operations": [{"name": "probe", "type": "ffmpeg", "payload": {"n": i}}]
        });
        let deadline = Instant::now() + DRAIN;
        loop {
            match call(&load, ACME, SUBMIT, json!({"a": agenda})).await {
                Ok(body) if body["data"]["submitAgenda"]["agenda"]["id"] == id.as_str() => break,
                Ok(body) if error_code(&body).as_deref() == Some("CONFLICT") => {
                    // Committed by an earlier try whose answer was lost: it must be there.
                    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
                    if message.contains("exist") {
                        break;
                    }
                    return Err(format!("submit {id}: unexpected conflict {body}"));
                }
                Ok(body) => {
                    let code = error_code(&body).unwrap_or_default();
                    if matches!(
                        code.as_str(),
                        "VALIDATION" | "BAD_REQUEST" | "FORBIDDEN" | "NOT_FOUND"
                    ) {
                        return Err(format!("submit {id}: refused {body}"));
                    }
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(format!("submit {id}: not answered within {DRAIN:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Paced so that the submits span the fault (~6 s in all).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Claims and completes until told the work is done. A report that fails in transit is
/// retried; one refused (its lease lost to the reclaimer, or the agenda already complete from
/// an earlier try whose answer was lost) is left to the reclaimer and the next claim.
async fn worker(load: Arc<Load>) {
    while !load.done.load(Ordering::Acquire) {
        if load.hold.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        }
        let claimed = match call(&load, WORKER, GET_AGENDA, json!({})).await {
            Ok(body) => {
                if body.get("errors").is_some() {
                    load.failed();
                }
                body["data"]["getAgenda"].as_array().cloned().unwrap_or_default()
            }
            Err(_) => {
                load.failed();
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(30)).await;
            continue;
        }
        for got in claimed {
            let report = json!({
                "id": got["progress"]["id"], "processingState": "COMPLETE",
                "processingStateMessage": "succeeded",
                "operationProgress": [{"operation": "probe", "processingState": "COMPLETE",
                    "processingStateMessage": "succeeded", "percentComplete": 100}]
            });
            let variables = json!({"p": report, "l": got["lease"]["id"]});
            for _ in 0..50 {
                match call(&load, WORKER, REPORT, variables.clone()).await {
                    Ok(body) if body.get("errors").is_none() => break,
                    Ok(body) => match error_code(&body).as_deref() {
                        Some("CONFLICT" | "NOT_FOUND" | "VALIDATION" | "FORBIDDEN") => break,
                        _ => load.failed(),
                    },
                    Err(_) => load.failed(),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A superuser session on the cluster's `postgres` database.
async fn admin_session(cluster: &TestCluster) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&cluster.url("postgres"), NoTls)
        .await
        .expect("a superuser session");
    tokio::spawn(connection);
    client
}

/// Terminates every session on `database` but the caller's; how many there were.
async fn terminate_sessions(admin: &tokio_postgres::Client, database: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .expect("terminating pop's sessions")
        .get(0)
}

/// The database name of a store URL (`postgres://…/NAME[?…]`).
fn database_of(url: &str) -> String {
    let tail = url.rsplit('/').next().unwrap_or_default();
    tail.split('?').next().unwrap_or_default().to_string()
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `pg_terminate_backend` on every connection of pop's database, every 250 ms for 5 s.
    TerminateBackends,
    /// `pg_ctl restart` once, mid-load.
    Restart,
    /// `default_transaction_read_only = on` for every session for 3 s, then off again.
    ReadOnly,
    /// Another client takes every free connection slot and pop's sessions are killed, so
    /// pop reconnects into a full server ("too many clients") for 3 s.
    PoolExhausted,
    /// Two replicas; the one that leads the scheduler is killed with SIGKILL.
    KillLeader,
    /// Two replicas, the second with its wall clock 45 s ahead; no fault beyond that.
    ClockSkew,
    /// A `pop worker` claims agendas and runs handlers that never end; it is killed with
    /// SIGKILL while it holds their leases.
    WorkerKilled,
    /// The embedded store's file system (a tmpfs) is filled to the last byte for 3 s.
    DiskFull,
}

impl Fault {
    fn replicas(self) -> usize {
        match self {
            Fault::KillLeader | Fault::ClockSkew => 2,
            _ => 1,
        }
    }

    /// Whether the case runs on the embedded store instead of PostgreSQL.
    fn embedded(self) -> bool {
        matches!(self, Fault::DiskFull)
    }
}

/// The store a case runs on: a throwaway PostgreSQL cluster, or the embedded store on a
/// file system of the case's own.
enum Store {
    Postgres { cluster: TestCluster, url: String },
    Embedded { _disk: Tmpfs },
}

/// A tmpfs mounted on a directory; unmounted (lazily, should a process still hold a file
/// there) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, mebibytes: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mebibytes}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs needs root here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system refuses with ENOSPC; the bytes written.
fn fill_disk(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("creating the filler file");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let zeros = vec![0u8; chunk];
        loop {
            match file.write(&zeros) {
                Ok(n) if n > 0 => written += n as u64,
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
    // Data a later flush would need space for is already counted against the tmpfs.
    let _ = file.sync_all();
    written
}

/// `/readyz`'s status of a replica.
async fn readiness(pop: &Pop) -> u16 {
    match pop.http.get(format!("{}/readyz", pop.base())).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// A real `pop worker` whose handler for the case's operations never ends (a script that
/// sleeps), in a process group of its own so its handlers can be cleaned up after it.
struct DoomedWorker {
    child: Child,
    log: PathBuf,
}

impl DoomedWorker {
    fn start(dir: &Path, base: &str) -> DoomedWorker {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let script = dir.join("hold.sh");
        // It never finishes on its own, but ends once the worker that started it is gone: a
        // handler orphaned by the SIGKILL must not outlive the test (nor keep a file
        // descriptor it inherited, such as a lock, open for minutes).
        let body = "#!/bin/sh\nwhile kill -0 \"$PPID\" 2>/dev/null; do sleep 0.2; done\n";
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let handlers = dir.join("handlers.toml");
        let text = format!(
            "[handlers.ffmpeg]\nkind = \"local\"\ncommand = [{script:?}]\ntimeout_seconds = 600\n"
        );
        std::fs::write(&handlers, text).unwrap();
        let log = dir.join("doomed-worker.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = support::pop_command()
            .args(["worker", "--server", base, "--token", WORKER, "--insight", "transcode"])
            .env("TMPDIR", dir)
            .arg("--handlers")
            .arg(&handlers)
            .args(["--max-idle-ms", "100", "--heartbeat-ms", "300", "--max-parallel", "6"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawning pop worker");
        DoomedWorker { child, log }
    }

    /// The agendas its log says it claimed.
    fn claimed(&self) -> HashSet<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("claimed"))
            .filter_map(|l| {
                let at = l.find("chaos-")?;
                let id: String = l[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                Some(id)
            })
            .collect()
    }

    /// SIGKILL to the worker, then to what is left of its group (its orphaned handlers).
    fn kill_9(&mut self) {
        let group = self.child.id();
        self.child.kill().expect("SIGKILL to pop worker");
        self.child.wait().expect("the killed worker is reaped");
        // `-s KILL -- -PGID`, never `-9 -PGID`: procps-ng 4.0.2's kill (Debian 12) turns
        // `kill -9 -29760` into kill(-2, SIGKILL) (strace shows it: the group's first digit),
        // so a group id starting with 1 became kill(-1, SIGKILL), every process this user may
        // signal, and the whole CI run died with it.
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{group}")]).status();
    }
}

impl Drop for DoomedWorker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_9();
        }
    }
}

/// Whether a replica's log says it leads the scheduler (since its start).
fn leads_scheduler(pop: &Pop) -> bool {
    leads(pop, "scheduler")
}

/// Whether `pop` said it leads the timed process `process`.
fn leads(pop: &Pop, process: &str) -> bool {
    std::fs::read_to_string(&pop.log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("this replica leads") && l.contains(process))
}

/// Waits (bounded) until one of `pops` leads the scheduler; its index.
async fn scheduler_leader(pops: &[Pop], skip: Option<usize>) -> usize {
    let until = Instant::now() + TAKEOVER;
    loop {
        if let Some(i) = (0..pops.len()).find(|&i| Some(i) != skip && leads_scheduler(&pops[i])) {
            return i;
        }
        assert!(Instant::now() < until, "no replica took the scheduler's lead within {TAKEOVER:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a case knows after its fault: the agendas the killed worker held, for `WorkerKilled`.
async fn inject(
    fault: Fault,
    store: &Store,
    pops: &mut [Pop],
    load: &Load,
    doomed: Option<&mut DoomedWorker>,
) -> HashSet<String> {
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (cluster, database) = match store {
        Store::Postgres { cluster, url } => (Some(cluster), database_of(url)),
        Store::Embedded { .. } => (None, String::new()),
    };
    let postgres = || cluster.expect("this fault needs PostgreSQL");
    let database = database.as_str();
    let mut held = HashSet::new();
    match fault {
        Fault::TerminateBackends => {
            let admin = admin_session(postgres()).await;
            let until = Instant::now() + Duration::from_secs(5);
            let mut killed = 0i64;
            while Instant::now() < until {
                killed += terminate_sessions(&admin, database).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert!(killed > 0, "the fault never hit a session of pop's");
        }
        Fault::Restart => {
            let started = "SELECT pg_postmaster_start_time()::text";
            let before: String =
                admin_session(postgres()).await.query_one(started, &[]).await.unwrap().get(0);
            postgres().restart().expect("restarting PostgreSQL");
            let after: String =
                admin_session(postgres()).await.query_one(started, &[]).await.unwrap().get(0);
            assert_ne!(before, after, "the server did not restart");
        }
        Fault::ReadOnly => {
            let admin = admin_session(postgres()).await;
            // One statement per call: a multi-statement string is one implicit transaction,
            // and ALTER SYSTEM refuses to run in one.
            for statement in
                ["ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"]
            {
                admin.batch_execute(statement).await.expect("turning the primary read-only");
            }
            // The setting reaches open sessions (pop's pooled ones too) once each has taken the
            // reload signal, a moment after pg_reload_conf() answered.
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                let row = admin.query_one("SHOW default_transaction_read_only", &[]).await.unwrap();
                if row.get::<_, String>(0) == "on" {
                    break;
                }
                assert!(Instant::now() < until, "the reload never reached a session");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let refused = admin
                .batch_execute("CREATE TABLE chaos_probe (x int)")
                .await
                .expect_err("a write while read-only");
            assert_eq!(
                refused.code(),
                Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
                "{refused}"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            // This session was reloaded too: writable again for itself first.
            for statement in [
                "SET default_transaction_read_only = off",
                "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()",
            ] {
                admin.batch_execute(statement).await.expect("turning the primary writable again");
            }
        }
        Fault::PoolExhausted => {
            let admin = admin_session(postgres()).await;
            // Every free slot, as another application's runaway pool would take them.
            let mut hogs = Vec::new();
            let refused = loop {
                match tokio_postgres::connect(&postgres().url("postgres"), NoTls).await {
                    Ok((client, connection)) => {
                        tokio::spawn(connection);
                        hogs.push(client);
                    }
                    Err(e) => break e,
                }
                assert!(hogs.len() < 1_000, "the server never refused a connection");
            };
            assert_eq!(
                refused.code(),
                Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
                "{refused}"
            );
            assert!(terminate_sessions(&admin, database).await > 0, "pop had no session to lose");
            // Killing pop's sessions freed their slots: take those too.
            while let Ok((client, connection)) =
                tokio_postgres::connect(&postgres().url("postgres"), NoTls).await
            {
                tokio::spawn(connection);
                hogs.push(client);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(hogs);
        }
        Fault::KillLeader => {
            let leader = scheduler_leader(pops, None).await;
            pops[leader].child.kill().expect("SIGKILL to the leading replica");
            pops[leader].child.wait().expect("the killed replica is reaped");
            let next = scheduler_leader(pops, Some(leader)).await;
            assert_ne!(next, leader, "the survivor took the lead over");
        }
        Fault::ClockSkew => {
            // The skew is the fault: the load runs across both replicas' clocks. Clients
            // alternate between the replicas while it runs.
        }
        Fault::WorkerKilled => {
            let doomed = doomed.expect("the worker to kill");
            let until = Instant::now() + Duration::from_secs(30);
            while doomed.claimed().len() < 4 {
                assert!(
                    Instant::now() < until,
                    "pop worker claimed {:?} within 30 s\nits log:\n{}",
                    doomed.claimed(),
                    log_tail(&doomed.log)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Its handlers never end: every agenda it claimed is still leased to it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            doomed.kill_9();
            held = doomed.claimed();
            load.hold.store(false, Ordering::Release);
        }
        Fault::DiskFull => {
            let filler = pops[0].data_dir.join("filler");
            let written = fill_disk(&filler);
            assert!(written > 0, "the filler took no space");
            // Appends fail now: the clients see UNAVAILABLE, and the server says not ready.
            let until = Instant::now() + Duration::from_secs(15);
            loop {
                let ready = readiness(&pops[0]).await;
                if ready == 503 && load.unavailable.load(Ordering::Relaxed) > 0 {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "a full disk: /readyz answers {ready}, {} UNAVAILABLE answers\nlog:\n{}",
                    load.unavailable.load(Ordering::Relaxed),
                    log_tail(&pops[0].log)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Counted as the store's outage, not as refusals (ops3am10: an alert on refused
            // commands fired on every outage).
            let page = pops[0].metrics().await;
            assert!(
                page.lines().any(|l| l.starts_with("pop_api_commands_total")
                    && l.contains("outcome=\"unavailable\"")),
                "no command counted unavailable:\n{page}"
            );
            tokio::time::sleep(Duration::from_secs(3)).await;
            std::fs::remove_file(&filler).expect("freeing the disk");
            // Ready again by itself, with nobody restarting anything.
            let until = Instant::now() + Duration::from_secs(30);
            while readiness(&pops[0]).await != 200 {
                assert!(
                    Instant::now() < until,
                    "/readyz did not come back after the disk was freed\nlog:\n{}",
                    log_tail(&pops[0].log)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    held
}

async fn chaos(name: &str, fault: Fault) {
    let skew = match fault {
        Fault::ClockSkew => match faketime_or_skip(name) {
            Some(library) => Some(library),
            None => return,
        },
        _ => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = if fault.embedded() {
        match Tmpfs::mount(&dir.path().join("data-0"), 64) {
            Ok(disk) => Store::Embedded { _disk: disk },
            Err(why) => {
                let required = std::env::var("POP_REQUIRE_TMPFS").is_ok_and(|v| v == "1");
                assert!(!required, "POP_REQUIRE_TMPFS=1 but {why}");
                eprintln!(
                    "SKIP: {name} did not run: {why}. Set POP_REQUIRE_TMPFS=1 to make this a failure."
                );
                return;
            }
        }
    } else {
        let Some(cluster) = TestCluster::start(name, ClusterDurability::Fast)
            .expect("a throwaway PostgreSQL cluster")
        else {
            return;
        };
        let url = cluster.create_database().await.expect("a database");
        Store::Postgres { cluster, url }
    };
    let (token_file, key_arg) = replica_files(dir.path());
    let mut args = FAST.to_vec();
    args.extend(["--checkpoint-key", key_arg.as_str()]);
    let mut store_args: Vec<&str> = Vec::new();
    match &store {
        Store::Postgres { url, .. } => store_args.extend(["--store", url.as_str()]),
        // The free-space floor sized to the 64 MiB disk (the default, 64 MiB, would keep
        // it unready throughout): under 4 MiB while it is filled, ready again past 8 MiB.
        Store::Embedded { .. } => args.extend(["--min-free-disk-mib", "4"]),
    }
    args.extend(store_args.iter().copied());
    let mut pops: Vec<Pop> = (0..fault.replicas())
        .map(|i| {
            let env: Vec<(&str, &str)> = match (&skew, i) {
                (Some(library), 1) => vec![
                    ("LD_PRELOAD", library.as_str()),
                    ("FAKETIME", "+45s"),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ],
                _ => Vec::new(),
            };
            Pop::start_with_env(
                &dir.path().join(format!("data-{i}")),
                Some(&token_file),
                &dir.path().join(format!("pop-{i}.log")),
                true,
                &args,
                &env,
            )
        })
        .collect();
    pops[0].seed_transcode(&pops[0].admin.clone(), 1000).await;
    if skew.is_some() {
        assert_skewed(&pops[1]).await;
    }

    let load = Arc::new(Load {
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        urls: pops.iter().map(|p| format!("{}/graphql", p.base())).collect(),
        replica: AtomicUsize::new(0),
        round_robin: matches!(fault, Fault::ClockSkew),
        internal: Mutex::new(Vec::new()),
        done: AtomicBool::new(false),
        failures: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
        hold: AtomicBool::new(matches!(fault, Fault::WorkerKilled)),
    });
    let mut doomed = matches!(fault, Fault::WorkerKilled)
        .then(|| DoomedWorker::start(dir.path(), &pops[0].base()));
    let workers: Vec<_> = (0..2).map(|_| tokio::spawn(worker(Arc::clone(&load)))).collect();
    let submitting = tokio::spawn(submitter(Arc::clone(&load)));
    let held = inject(fault, &store, &mut pops, &load, doomed.as_mut()).await;
    submitting
        .await
        .expect("the submitter")
        .unwrap_or_else(|e| panic!("{name}: {e}\nlog:\n{}", logs(&pops)));
    // How many calls failed depends on timing (pop retries a lost connection itself, so a
    // killed session often costs the client nothing): printed, not asserted. That the fault
    // really happened is asserted where it is injected.
    let failures = load.failures.load(Ordering::Relaxed);
    let unavailable = load.unavailable.load(Ordering::Relaxed);
    println!(
        "{name}: the workers saw {failures} failed calls during the fault and retried them; \
         {unavailable} answers in all were UNAVAILABLE"
    );

    // Drain: every agenda terminal.
    let deadline = Instant::now() + DRAIN;
    loop {
        let stats = call(&load, ACME, STATS, json!({})).await;
        if let Ok(body) = &stats {
            let s = &body["data"]["agendaStats"];
            let terminal = ["succeeded", "failed", "cancelled"]
                .iter()
                .map(|k| s[k].as_u64().unwrap_or(0))
                .sum::<u64>();
            if terminal == AGENDAS as u64 && s["waiting"] == 0 && s["executing"] == 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not drained within {DRAIN:?}: {stats:?}\nlog:\n{}",
            logs(&pops)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.done.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("a worker");
    }

    // The total-queue invariant.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut after = Value::Null;
    loop {
        let body = call(&load, ACME, LIST, json!({"after": after})).await.unwrap();
        let page = &body["data"]["agendaProgressList"];
        for item in page["items"].as_array().unwrap_or_else(|| panic!("no list: {body}")) {
            let id = item["agendaId"].as_str().unwrap().to_string();
            let state = item["processingState"].as_str().unwrap().to_string();
            assert!(seen.insert(id.clone(), state).is_none(), "{name}: {id} listed twice");
        }
        if page["hasNextPage"] != true {
            break;
        }
        after = page["endCursor"].clone();
    }
    let expected: HashSet<String> = (0..AGENDAS).map(|i| format!("chaos-{i}")).collect();
    let listed: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(
        listed.difference(&expected).count(),
        0,
        "{name}: unexpected agendas {:?}",
        listed.difference(&expected).collect::<Vec<_>>()
    );
    assert_eq!(
        expected.difference(&listed).count(),
        0,
        "{name}: lost agendas {:?}",
        expected.difference(&listed).collect::<Vec<_>>()
    );
    for (id, state) in &seen {
        assert_eq!(state, "COMPLETE", "{name}: {id} ended {state}");
        let body = call(&load, ACME, HISTORY, json!({"id": id})).await.unwrap();
        let types: Vec<&str> = body["data"]["agendaEvents"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no history of {id}: {body}"))
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        let count = |t: &str| types.iter().filter(|x| **x == t).count();
        assert_eq!(count("AgendaSubmitted"), 1, "{name}: {id} submitted once: {types:?}");
        assert_eq!(count("AgendaCompleted"), 1, "{name}: {id} completed once: {types:?}");
        if held.contains(id) {
            // The killed worker's claim, then the claim of the worker that finished it.
            assert!(
                count("AgendaClaimed") >= 2,
                "{name}: {id} held by the killed worker: {types:?}"
            );
        }
    }
    if matches!(fault, Fault::WorkerKilled) {
        assert!(held.len() >= 4, "{name}: the killed worker held {held:?}");
        println!("{name}: the killed worker held {} agendas; others finished them", held.len());
    }
    // And the log itself still verifies after the faults.
    let internal = load.internal.lock().unwrap().clone();
    assert!(internal.is_empty(), "{name}: answers were INTERNAL, not retryable: {internal:#?}");
    let verify = support::pop_command()
        .args(["verify", "--data-dir"])
        .arg(dir.path().join("data-0"))
        .args(&store_args)
        .args(["--checkpoint-key", &key_arg])
        .output()
        .expect("running pop verify");
    assert!(
        verify.status.success(),
        "{name}: pop verify failed after the faults: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The token file (acme's user, the worker) and the checkpoint key the replicas of a case
/// share (README "Auditing": replicas of one database share the key), written into `dir`:
/// the file and the key's path as an argument.
fn replica_files(dir: &Path) -> (PathBuf, String) {
    let tokens = json!([
        {"token": ACME, "name": "acme-user", "role": "user", "customers": ["acme"]},
        {"token": WORKER, "name": "worker", "role": "service", "customers": ["acme"]},
    ]);
    let token_file = dir.join("tokens.json");
    std::fs::write(&token_file, tokens.to_string()).unwrap();
    let key = dir.join("checkpoint.key");
    std::fs::write(&key, format!("{}\n", "7".repeat(64))).unwrap();
    (token_file, key.display().to_string())
}

/// Every replica's log tail, for failure messages.
fn logs(pops: &[Pop]) -> String {
    pops.iter()
        .enumerate()
        .map(|(i, p)| format!("---- replica {i}\n{}", log_tail(&p.log)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// libfaketime's preload library (Debian's `faketime` package), or why there is none.
fn faketime() -> Result<String, String> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .ok_or_else(|| "libfaketime is not installed (apt-get install -y faketime)".to_string())
}

/// libfaketime's preload library, or `None` after a loud SKIP line for test `name` (a failure
/// under `POP_REQUIRE_FAKETIME=1`).
fn faketime_or_skip(name: &str) -> Option<String> {
    match faketime() {
        Ok(library) => Some(library),
        Err(why) => {
            let required = std::env::var("POP_REQUIRE_FAKETIME").is_ok_and(|v| v == "1");
            assert!(!required, "POP_REQUIRE_FAKETIME=1 but {why}");
            eprintln!(
                "SKIP: {name} did not run: {why}. Set POP_REQUIRE_FAKETIME=1 to make this a failure."
            );
            None
        }
    }
}

/// The skewed replica's clock really is ahead: its `Date` header is 40–50 s past ours.
async fn assert_skewed(pop: &Pop) {
    let response = pop.http.get(format!("{}/healthz", pop.base())).send().await.unwrap();
    let date = response.headers().get("date").and_then(|d| d.to_str().ok()).map(str::to_string);
    let date = date.unwrap_or_else(|| panic!("no Date header from the skewed replica"));
    let theirs = chrono::DateTime::parse_from_rfc2822(&date).expect("an HTTP date");
    let ahead = theirs.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((40..=50).contains(&ahead), "the skewed replica is {ahead} s ahead, not 45");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_killed_in_a_loop_lose_and_duplicate_nothing() {
    chaos("connections_killed_in_a_loop", Fault::TerminateBackends).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_mid_load_loses_and_duplicates_nothing() {
    chaos("a_postgres_restart_mid_load", Fault::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_that_turns_read_only_loses_and_duplicates_nothing() {
    chaos("a_primary_that_turns_read_only", Fault::ReadOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_pool_exhausted_by_another_client_loses_and_duplicates_nothing() {
    chaos("a_connection_pool_exhausted", Fault::PoolExhausted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_scheduler_leader_under_load_loses_and_duplicates_nothing() {
    chaos("kill_9_of_the_scheduler_leader", Fault::KillLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_with_skewed_clocks_lose_and_duplicate_nothing() {
    chaos("replicas_with_skewed_clocks", Fault::ClockSkew).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_worker_holding_leases_loses_and_duplicates_nothing() {
    chaos("kill_9_of_a_worker_holding_leases", Fault::WorkerKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_under_the_embedded_store_loses_and_duplicates_nothing() {
    chaos("a_full_disk_under_the_embedded_store", Fault::DiskFull).await;
}

/// auditor19 N1: a replica whose clock is 30 s behind the one that leads the reclaimer hands
/// out a lease, and the reclaimer honours it. Both replicas follow the database server's
/// clock; before, the replica behind stamped the claim with its own time (or its last commit
/// time seen, older still), so its lease had already run out by the other's clock, was timed
/// out at once, and an attempt was used up with the agenda unrun.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_from_a_replica_whose_clock_is_behind_is_honoured() {
    let name = "a_lease_from_a_replica_behind";
    let Some(library) = faketime_or_skip(name) else { return };
    let Some(cluster) =
        TestCluster::start(name, ClusterDurability::Fast).expect("a throwaway PostgreSQL cluster")
    else {
        return;
    };
    let url = cluster.create_database().await.expect("a database");
    let dir = tempfile::tempdir().unwrap();
    let (token_file, key_arg) = replica_files(dir.path());
    let args = [
        "--lease",
        "5",
        "--reclaim-interval",
        "1",
        "--checkpoint-key",
        key_arg.as_str(),
        "--store",
        url.as_str(),
    ];
    let start = |i: usize, env: &[(&str, &str)]| {
        Pop::start_with_env(
            &dir.path().join(format!("data-{i}")),
            Some(&token_file),
            &dir.path().join(format!("pop-{i}.log")),
            true,
            &args,
            env,
        )
    };
    let ahead = start(0, &[]);
    let until = Instant::now() + TAKEOVER;
    while !leads(&ahead, "reclaimer") {
        assert!(Instant::now() < until, "the first replica does not lead the reclaimer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let behind = start(
        1,
        &[
            ("LD_PRELOAD", library.as_str()),
            ("FAKETIME", "-30s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let started = Instant::now();
    ahead.seed_transcode(&ahead.admin.clone(), 1000).await;
    let agenda = json!({
        "id": "late-1", "customerId": "acme", "title": "late",
        "params": {"maximumAttempts": 1},
        "operations": [{"name": "probe", "type": "ffmpeg", "payload": {}}]
    });
    ahead.ok(ACME, SUBMIT, json!({"a": agenda})).await;
    // Past a lease's length since the replica behind started, so that the last commit time
    // it knew then is no longer a lease's worth from now either.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(started.elapsed())).await;
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let data = behind.ok(WORKER, GET_AGENDA, json!({})).await;
        if data["getAgenda"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < until, "late-1 was never handed out: {data}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several reclaim passes, each well within the 5 s lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body = ahead.ok(ACME, HISTORY, json!({"id": "late-1"})).await;
    let types: Vec<&str> = body["agendaEvents"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {body}"))
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"AgendaClaimed"), "{types:?}");
    assert!(
        !types.contains(&"AgendaTimedOut"),
        "a lease of the replica 30 s behind was timed out by the other: {types:?}\nlog:\n{}",
        logs(&[ahead, behind])
    );
}
