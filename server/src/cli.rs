//! Command-line arguments. Every flag also reads an environment variable (`POP_…`), so a
//! container can be configured without a command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "pop", version, about = "pop — an event-sourced workflow engine")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "POP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service on the embedded store (a SQLite file in the data directory).
    Serve(ServeArgs),
    /// Print events of the log as JSON lines: the whole log, or one stream (an audit view).
    Log(LogArgs),
    /// Run one demo agenda through its whole lifecycle directly on the embedded store
    /// (with `pop serve` stopped): shows the write side without the API.
    Demo(StoreArgs),
    /// Submit a POP agenda JSON file to a running server.
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda, as POP JSON.
        file: PathBuf,
    },
    /// Show an agenda's progress.
    Progress {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's progress id (the agenda id unless it was given another).
        id: String,
        /// Print the whole AgendaProgress as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch an agenda's progress live: a bar per operation and one for the agenda.
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Replay the log into fresh read models (progress bar, events/s, fingerprint).
    Rebuild(RebuildArgs),
    /// Run a resource pool's worker: claim agendas of the given insights and run their
    /// operations with the handlers of a registry file, reporting progress.
    Worker(WorkerArgs),
    /// Send one GraphQL query or mutation to a running server and print the data as JSON.
    Gql {
        #[command(flatten)]
        client: ClientArgs,
        /// The query or mutation text.
        query: String,
        /// Variables as a JSON object.
        #[arg(long, default_value = "{}")]
        variables: String,
    },
}

/// How the CLI helpers reach a running server.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(long, env = "POP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token; defaults to the admin token in the data directory.
    #[arg(long, env = "POP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory holding the generated admin token (when --token is not given).
    #[arg(long, env = "POP_DATA_DIR", default_value = "pop-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Also write the result as the snapshot `pop serve` starts from (stop the server first).
    #[arg(long)]
    pub snapshot: bool,
}

/// Where the embedded store lives.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory; the embedded store is `<data-dir>/pop.db`.
    #[arg(long, env = "POP_DATA_DIR", default_value = "pop-data")]
    pub data_dir: PathBuf,
}

impl StoreArgs {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("pop.db")
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// `full` fsyncs every commit before acknowledging it (an acknowledged append survives a
    /// power loss); `normal` fsyncs only at checkpoints (survives a crash of pop, maybe not of
    /// the machine).
    #[arg(long, env = "POP_DURABILITY", value_enum, default_value = "full")]
    pub durability: DurabilityArg,
    /// Address to listen on. Loopback by default: expose it deliberately.
    #[arg(long, env = "POP_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// A JSON token file: `[{"token","name","role":"user|service|admin","customers":["*"]}]`.
    /// Tokens also come from `POP_TOKENS` (the same JSON) and, on the embedded default, from
    /// the admin token generated into the data directory on first start.
    #[arg(long, env = "POP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Whether this process runs the scheduler that tops insight queues up from their `added`
    /// agendas (`false` records and tracks agendas without moving them to queues).
    #[arg(long, env = "POP_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler: bool,
    /// Seconds between AgendaReclaimer cycles, which take back agendas whose lease expired
    /// (the lease length is the API's); `0` turns the reclaimer off in this process.
    #[arg(long, env = "POP_RECLAIM_INTERVAL", default_value_t = pop_reapers::DEFAULT_INTERVAL.as_secs())]
    pub reclaim_interval: u64,
    /// How long a `getAgenda` lease lasts (seconds, 1..=86400); every progress report renews
    /// it. A worker that dies is noticed by the reclaimer once its lease expires.
    #[arg(long, env = "POP_LEASE_SECONDS", default_value_t = pop_api::config::DEFAULT_LEASE.as_secs())]
    pub lease_seconds: u64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Insight ids to take work from (repeat the flag or separate with commas).
    #[arg(long = "insight", env = "POP_WORKER_INSIGHTS", value_delimiter = ',', required = true)]
    pub insights: Vec<String>,
    /// The handler registry (TOML); without it only the built-ins run (log, sample,
    /// agendaUpdate).
    #[arg(long, env = "POP_HANDLERS")]
    pub handlers: Option<PathBuf>,
    /// Most agendas executing at once.
    #[arg(long, env = "POP_WORKER_MAX_AGENDAS", default_value_t = 4)]
    pub max_agendas: usize,
    /// Most operations of one agenda running at once.
    #[arg(long, env = "POP_WORKER_MAX_PARALLEL", default_value_t = 8)]
    pub max_parallel: usize,
    /// Most operations (processes, pods) running at once per insight; no limit when absent.
    #[arg(long, env = "POP_WORKER_MAX_OPERATIONS_PER_INSIGHT")]
    pub max_operations_per_insight: Option<usize>,
    /// Most `getAgenda` calls in flight at once. More than 1 measured slower against one
    /// server: concurrent calls race for the same oldest queued agendas.
    #[arg(long, env = "POP_WORKER_MAX_CONCURRENT_CLAIMS", default_value_t = 1)]
    pub max_concurrent_claims: usize,
    /// A progress change reaches the server at most this many milliseconds after it happens
    /// (changes within the window are sent together).
    #[arg(long, env = "POP_WORKER_REPORT_INTERVAL_MS", default_value_t = 250)]
    pub report_interval_ms: u64,
    /// An agenda without changes is still reported this often (milliseconds), renewing its
    /// lease; keep it well under the server's lease.
    #[arg(long, env = "POP_WORKER_HEARTBEAT_MS", default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// Longest pause between polls of empty queues (milliseconds); pauses start at 100 ms and
    /// double while the queues stay empty.
    #[arg(long, env = "POP_WORKER_MAX_IDLE_MS", default_value_t = 5_000)]
    pub max_idle_ms: u64,
    /// On SIGTERM/SIGINT, how long running operations may finish (seconds) before they are
    /// stopped and their agendas handed back.
    #[arg(long, env = "POP_WORKER_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    /// Namespace of the pods of `kind = "kubernetes"` handlers that name none.
    #[arg(long, env = "POP_KUBE_NAMESPACE", default_value = "default")]
    pub kube_namespace: String,
    /// How often a handler's pod is looked at (milliseconds).
    #[arg(long, env = "POP_KUBE_POLL_MS", default_value_t = 1_000)]
    pub kube_poll_ms: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    Full,
    Normal,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this stream, e.g. `agenda-<id>`.
    #[arg(long)]
    pub stream: Option<String>,
    /// Start after this global position (ignored with --stream).
    #[arg(long)]
    pub after: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Keep printing new events as they are committed (global log only).
    #[arg(long)]
    pub follow: bool,
}
