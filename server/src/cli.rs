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
    /// Run the service on the embedded store (a SQLite file in the data directory), or on a
    /// shared PostgreSQL database with `--store`.
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
    /// A shared PostgreSQL store (`postgres://user:password@host:5432/db`) for several
    /// replicas; without it, the embedded store in the data directory. With PostgreSQL the
    /// data directory only caches projection snapshots, and durability is the database's
    /// (`synchronous_commit`).
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
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
