//! A throwaway PostgreSQL cluster for tests and benchmarks (cargo feature `test-cluster`):
//! `initdb` into a temp directory, `postgres` on a free port of 127.0.0.1, one database per
//! test. The server runs under a small shell watchdog that reads commands on its stdin
//! (`restart`, `stop`, `start`); when the test process exits, for whatever reason, the pipe
//! closes and the watchdog stops the server and removes the directory — also for the shared
//! cluster in a `static`, whose `Drop` never runs.
//!
//! As root (CI), the cluster runs as the `postgres` user: `initdb` refuses root.
//!
//! Without PostgreSQL binaries [`TestCluster::shared`] prints a loud `SKIP:` line and returns
//! `None`, unless `POP_REQUIRE_POSTGRES=1`, when it panics (CI sets it).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::StoreError;

/// The environment variable that turns a missing PostgreSQL into a failure.
pub const REQUIRE_ENV: &str = "POP_REQUIRE_POSTGRES";

/// How long a server may take to accept connections after (re)starting.
const START_GUARD: Duration = Duration::from_secs(60);

/// The watchdog, run as `sh -c WATCHDOG sh DIR BINDIR PORT SETTINGS`.
const WATCHDOG: &str = r#"
set -u
D=$1; BIN=$2; PORT=$3; SETTINGS=$4
if ! "$BIN/initdb" -D "$D/data" -A trust -U postgres -E UTF8 --no-sync >"$D/initdb.log" 2>&1; then
  cat "$D/initdb.log" >&2; echo FAILED; rm -rf "$D"; exit 1
fi
start() {
  # shellcheck disable=SC2086
  "$BIN/postgres" -D "$D/data" -p "$PORT" -k "$D" -c listen_addresses=127.0.0.1 $SETTINGS \
    >>"$D/server.log" 2>&1 &
  pid=$!
}
stop() { kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
start
echo STARTED
while read -r cmd; do
  case "$cmd" in
    restart) stop; start; echo STARTED ;;
    stop) stop; echo STOPPED ;;
    start) start; echo STARTED ;;
  esac
done
stop
rm -rf "$D"
"#;

/// How the cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterDurability {
    /// fsync and synchronous commit as in production: for benchmarks.
    Durable,
    /// `fsync=off`, `synchronous_commit=off`: for tests, whose data dies with them.
    Fast,
}

/// A running throwaway cluster. Stopped and removed when dropped (or when the process ends).
pub struct TestCluster {
    port: u16,
    dir: PathBuf,
    control: Mutex<Control>,
}

struct Control {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster").field("port", &self.port).field("dir", &self.dir).finish()
    }
}

/// The directory of the PostgreSQL server binaries, if installed.
pub fn find_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() && dir.join("postgres").exists() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .collect();
    // Highest major version last (numeric order: 9 < 10 < 15).
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl TestCluster {
    /// The cluster shared by every test of this process (started on first use), or `None`
    /// (after printing `SKIP: …` with `what`) when PostgreSQL is not installed and
    /// `POP_REQUIRE_POSTGRES` is not `1`.
    pub fn shared(what: &str) -> Option<&'static TestCluster> {
        static SHARED: OnceLock<Option<TestCluster>> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| match find_bindir() {
            None => None,
            Some(bin) => match TestCluster::start_with(&bin, ClusterDurability::Fast, "") {
                Ok(cluster) => Some(cluster),
                Err(e) => panic!("starting the throwaway PostgreSQL cluster failed: {e}"),
            },
        });
        if cluster.is_none() {
            skip_or_panic(what);
        }
        cluster.as_ref()
    }

    /// A new cluster of its own (for tests that restart it, and for benchmarks). `Ok(None)`
    /// as for [`TestCluster::shared`].
    pub fn start(what: &str, durability: ClusterDurability) -> Result<Option<TestCluster>, String> {
        TestCluster::start_with_settings(what, durability, "")
    }

    /// As [`TestCluster::start`], with `extra` server settings (`-c name=value …`, values
    /// without spaces) appended last: diagnostics such as `pg_stat_statements`.
    pub fn start_with_settings(
        what: &str,
        durability: ClusterDurability,
        extra: &str,
    ) -> Result<Option<TestCluster>, String> {
        match find_bindir() {
            None => {
                skip_or_panic(what);
                Ok(None)
            }
            Some(bin) => TestCluster::start_with(&bin, durability, extra).map(Some),
        }
    }

    fn start_with(
        bin: &Path,
        durability: ClusterDurability,
        extra: &str,
    ) -> Result<TestCluster, String> {
        let port = free_port()?;
        let dir = tempfile::Builder::new()
            .prefix("pop-pg-")
            .tempdir()
            .map_err(|e| format!("creating a temp dir: {e}"))?
            .keep();
        let mut settings = String::from("-c max_connections=300 -c shared_buffers=128MB");
        if durability == ClusterDurability::Fast {
            settings.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        for word in extra.split_whitespace() {
            settings.push(' ');
            settings.push_str(word);
        }
        let args = [
            "-c".to_owned(),
            WATCHDOG.to_owned(),
            "sh".to_owned(),
            dir.display().to_string(),
            bin.display().to_string(),
            port.to_string(),
            settings,
        ];
        let mut command = if is_root() {
            // initdb refuses root: the directory and the server belong to `postgres`.
            let uid = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .map_err(|e| format!("looking up the postgres user: {e}"))?;
            let uid: u32 = String::from_utf8_lossy(&uid.stdout)
                .trim()
                .parse()
                .map_err(|_| "there is no postgres user to run the cluster as".to_owned())?;
            std::os::unix::fs::chown(&dir, Some(uid), None)
                .map_err(|e| format!("handing the temp dir to postgres: {e}"))?;
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh"]);
            c
        } else {
            Command::new("sh")
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the PostgreSQL watchdog: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("the watchdog has no stdout")?;
        let cluster = TestCluster {
            port,
            dir,
            control: Mutex::new(Control { child, stdin, stdout: BufReader::new(stdout) }),
        };
        cluster.expect_line("STARTED")?;
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn expect_line(&self, want: &str) -> Result<(), String> {
        let mut control = self.control.lock().map_err(|_| "the cluster control is poisoned")?;
        let mut line = String::new();
        control.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != want {
            return Err(format!(
                "the PostgreSQL watchdog said {line:?} instead of {want}; see {}/server.log",
                self.dir.display()
            ));
        }
        Ok(())
    }

    fn command(&self, command: &str) -> Result<(), String> {
        let mut control = self.control.lock().map_err(|_| "the cluster control is poisoned")?;
        let stdin = control.stdin.as_mut().ok_or("the cluster is stopped for good")?;
        writeln!(stdin, "{command}").and_then(|()| stdin.flush()).map_err(|e| e.to_string())
    }

    /// Waits until the server accepts connections.
    fn wait_ready(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let ready = Command::new(find_bindir().unwrap_or_default().join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(true);
                if ready {
                    return Ok(());
                }
            }
            if start.elapsed() > START_GUARD {
                return Err(format!(
                    "PostgreSQL did not accept connections within {START_GUARD:?}; see {}/server.log",
                    self.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open connections are closed) and starts it again on
    /// the same port and data; returns once it accepts connections.
    pub fn restart(&self) -> Result<(), String> {
        self.command("restart")?;
        self.expect_line("STARTED")?;
        self.wait_ready()
    }

    /// Stops the server until [`TestCluster::start_again`].
    pub fn stop(&self) -> Result<(), String> {
        self.command("stop")?;
        self.expect_line("STOPPED")
    }

    /// Starts a server stopped with [`TestCluster::stop`].
    pub fn start_again(&self) -> Result<(), String> {
        self.command("start")?;
        self.expect_line("STARTED")?;
        self.wait_ready()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self) -> Result<String, StoreError> {
        let name = format!("pop_{}", uuid::Uuid::new_v4().simple());
        let fail = |e| StoreError::backend("creating a test database", e);
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), NoTls).await.map_err(fail)?;
        let driver = tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(fail)?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(&name))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Ok(mut control) = self.control.lock() {
            // EOF on its stdin: the watchdog stops the server and removes the directory.
            control.stdin = None;
            let _ = control.child.wait();
        }
    }
}

fn skip_or_panic(what: &str) {
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{what}: PostgreSQL binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin) and {REQUIRE_ENV}=1"
        );
    }
    eprintln!(
        "SKIP: PostgreSQL binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin); {what} did not run. Install postgresql, or set {REQUIRE_ENV}=1 to make this a failure."
    );
}
