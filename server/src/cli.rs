//! Command-line arguments. Every flag also reads an environment variable (`POP_…`), so a
//! container can be configured without a command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The data directory unless told (`--data-dir`, `POP_DATA_DIR`).
pub const DEFAULT_DATA_DIR: &str = "pop-data";

/// The flags a client command needs to reach the server at `server` with the admin token of
/// `data_dir` (each with a leading space), for the hints that print the next command to run:
/// the server unless it is the default, and the data directory unless it is the default one
/// of the folder the command is to run in (`runs_here`), as an absolute path (newcomer7: a
/// relative one, followed from another folder, found no admin token).
pub fn client_flags(server: &str, data_dir: &std::path::Path, runs_here: bool) -> String {
    let mut flags = String::new();
    // Pasted into a shell as printed: each word quoted as a shell reads it back (one rule for
    // every command the CLI suggests: review-s41c).
    if server.trim_end_matches('/') != DEFAULT_SERVER {
        flags.push_str(&format!(" --server {}", crate::output::shell_word(server)));
    }
    if !(runs_here && data_dir == std::path::Path::new(DEFAULT_DATA_DIR)) {
        let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let shown = absolute.display().to_string();
        flags.push_str(&format!(" --data-dir {}", crate::output::shell_word(&shown)));
    }
    flags
}

/// Where the client commands find `pop serve` unless told (`--server`, `POP_SERVER`): the
/// default `--bind` of `pop serve`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "pop",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("POP_BUILD_COMMIT"), ")"),
    about = "pop — an event-sourced workflow engine",
    after_help = "Start: `pop serve --dev`, then `pop worker --insight encode --handlers \
        examples/handlers.toml` and `pop submit --watch examples/encode.json` (README.md, the \
        five-minute tour).\n\
        Client commands exit 0 when done, 1 on an error, 2 on a usage error, 3 when the \
        agenda they watched failed, and 5 when its attempt failed with a retry due (not final; \
        --follow-retries follows it); `pop verify` exits 4 when the log is not intact."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "POP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Variables a blank value of which stops the start instead of being taken as unset: they
/// choose the store, the data directory or the tokens.
pub const MUST_NOT_BE_BLANK: [&str; 3] = ["DATABASE_URL", "POP_DATA_DIR", "POP_TOKEN_FILE"];

/// The command line, with every option whose environment variable is set but blank read as if
/// the variable were unset (what a Kubernetes `env:` from an empty value or a missing optional
/// Secret key gives): clap took the blank value and named a flag nobody passed (newcomer9:
/// `POP_TOKEN_FILE=` said "a value is required for '--token-file'"; `POP_SERVER=` an internal
/// URL error). Returns the command and the variables so dropped, for a warning.
pub fn without_blank_env(command: clap::Command) -> (clap::Command, Vec<String>) {
    let mut dropped = Vec::new();
    let command = drop_blank_env(command, &mut dropped);
    dropped.sort();
    dropped.dedup();
    (command, dropped)
}

fn drop_blank_env(mut command: clap::Command, dropped: &mut Vec<String>) -> clap::Command {
    let blank: Vec<(clap::Id, String)> = command
        .get_arguments()
        .filter_map(|a| {
            let name = a.get_env()?;
            let value = std::env::var_os(name)?;
            value
                .to_string_lossy()
                .trim()
                .is_empty()
                .then(|| (a.get_id().clone(), name.to_string_lossy().into_owned()))
        })
        .collect();
    for (id, name) in blank {
        command = command.mut_arg(id, |a| a.env(None::<&str>));
        dropped.push(name);
    }
    let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in names {
        command = command.mut_subcommand(name, |s| drop_blank_env(s, dropped));
    }
    command
}

#[derive(Debug, Clone, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Command {
    /// The tracing settings and the service name of a command that exports traces (`serve`,
    /// `worker`, and the client commands: `pop-cli`); the offline commands (`log`, `verify`,
    /// `rebuild`, ...) export none.
    pub fn telemetry(&self) -> Option<(&TelemetryArgs, &'static str)> {
        match self {
            Command::Serve(args) => Some((&args.telemetry, "pop")),
            Command::Worker(args) => Some((&args.client.telemetry, "pop-worker")),
            other => other.client().map(|c| (&c.telemetry, "pop-cli")),
        }
    }

    /// The server and token of a client command (one that calls a running server's API).
    fn client(&self) -> Option<&ClientArgs> {
        match self {
            Command::Init { client, .. }
            | Command::Submit { client, .. }
            | Command::Run { client, .. }
            | Command::Watch { client, .. }
            | Command::Progress { client, .. }
            | Command::Audit { client, .. }
            | Command::Agendas { client, .. }
            | Command::Cancel { client, .. }
            | Command::Rerun { client, .. }
            | Command::Events { client, .. }
            | Command::Insights { client, .. }
            | Command::Pools { client, .. }
            | Command::Customers { client, .. }
            | Command::Templates { client, .. }
            | Command::Gql { client, .. } => Some(client),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service on the embedded store (a SQLite file in the data directory), or on a
    /// shared PostgreSQL database with `--store`.
    #[command(display_order = 1)]
    Serve(Box<ServeArgs>),
    /// Print events of the log as JSON lines, of the whole log or of one stream (an audit
    /// view): the first 100 unless --limit or --follow says otherwise.
    #[command(display_order = 40)]
    Log(LogArgs),
    /// Run one demo agenda through its whole lifecycle directly on the embedded store
    /// (with `pop serve` stopped): shows the write side without the API.
    #[command(display_order = 41)]
    Demo(StoreArgs),
    /// Create a resource pool, a customer and an insight in one step (what the first agenda
    /// needs); objects that exist are kept.
    #[command(display_order = 2)]
    Init {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        init: InitArgs,
    },
    /// Submit a POP agenda JSON file to a running server.
    #[command(display_order = 10)]
    Submit {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda, as POP JSON.
        file: PathBuf,
        /// Then watch it until it ends, or an attempt fails with its retry due (exit codes as
        /// `pop watch`).
        #[arg(long)]
        watch: bool,
        /// With --watch: follow a failed attempt's retry to the outcome (see `pop watch`).
        #[arg(long, requires = "watch")]
        follow_retries: bool,
        /// Print the server's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an agenda template with a payload.
    #[command(display_order = 11)]
    Run {
        #[command(flatten)]
        client: ClientArgs,
        /// The template's id (`pop templates` lists them).
        template: String,
        /// The payload, as JSON.
        #[arg(long)]
        payload: Option<String>,
        /// The customer to run it for, when the template and token do not decide it.
        #[arg(long)]
        customer: Option<String>,
        /// Then watch the agenda until it ends, or an attempt fails with its retry due (exit
        /// codes as `pop watch`).
        #[arg(long)]
        watch: bool,
        /// With --watch: follow a failed attempt's retry to the outcome (see `pop watch`).
        #[arg(long, requires = "watch")]
        follow_retries: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch an agenda's progress live until it ends: bars on a terminal, one line per change
    /// otherwise. Exit 0 when it succeeded, was cancelled or you pressed Ctrl-C; 3 when it
    /// failed (each failed operation's last diagnostic is printed); 5 when an attempt failed
    /// and its automatic retry is due (not the outcome yet; --follow-retries follows the retry
    /// instead); 1 on errors.
    #[command(display_order = 12)]
    Watch {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's progress id, in full, as `pop submit` and `pop agendas` print it (the
        /// agenda id unless the agenda was given another progress id).
        id: String,
        /// The agenda's customer, when the token sees several customers using the id.
        #[arg(long)]
        customer: Option<String>,
        /// Follow a failed attempt whose automatic retry is due to the agenda's outcome,
        /// instead of exiting 5 (where no replica runs a retry process, `--retry-interval 0`,
        /// no retry comes: Ctrl-C).
        #[arg(long)]
        follow_retries: bool,
    },
    /// Show an agenda's progress, with the last diagnostic of each failed operation.
    #[command(display_order = 13)]
    Progress {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's progress id (the agenda id unless it was given another).
        id: String,
        /// The agenda's customer, when the token sees several customers using the id.
        #[arg(long)]
        customer: Option<String>,
        /// Print the whole AgendaProgress as JSON.
        #[arg(long)]
        json: bool,
        /// The progress as it was at a time (`2026-12-02T14:02:00Z`, any RFC 3339 offset; or
        /// `2026-12-02 14:02` / `2026-12-02`, UTC; or epoch milliseconds, 12 digits or more) or a
        /// log position (`42`), folded from the log.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Check the store for tampering: every event's digest and hash chain, every stream's
    /// head, every deleted stream's recorded head. Exits 4 at the first break, naming its
    /// stream, version and position (1: the store could not be checked).
    Verify(VerifyArgs),
    /// An agenda's history as a timeline: time, log position, version, actor, command, event,
    /// the state, percent and attempts (completed of the most) after it, and the diagnostics
    /// it added (`--json`: the same as data).
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's id.
        id: String,
        /// The agenda's customer, when the token sees several customers using the id.
        #[arg(long)]
        customer: Option<String>,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the agendas this token may see, with their state.
    #[command(display_order = 14)]
    Agendas {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        filter: AgendaFilter,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an agenda that has not ended, or a failed one whose retry is still to come (that
    /// withdraws the retry).
    #[command(display_order = 15)]
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's id (not its progress id, where that is another).
        id: String,
        /// Why, recorded as the agenda's diagnostic.
        #[arg(long)]
        reason: Option<String>,
        /// The agenda's customer, when the token sees several using the id.
        #[arg(long)]
        customer: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run an ended agenda (or one a `skip-execution` rerun left waiting) again: `--mode reset-all` (the default) runs everything again,
    /// `continue` only what did not succeed, `skip-execution` resets it without queueing it;
    /// `--reset a,b` resets those operations and every operation that depends on them, directly
    /// or not (DOMAIN.md §8), and no other.
    #[command(display_order = 16)]
    Rerun {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's id (not its progress id, where that is another).
        id: String,
        /// What runs again (default: reset-all).
        #[arg(long, value_enum)]
        mode: Option<RerunMode>,
        /// Operations to reset (POP's `operationsToReset`), with every operation that depends
        /// on them.
        #[arg(long, value_delimiter = ',')]
        reset: Vec<String>,
        /// The agenda's customer, when the token sees several customers using the id.
        #[arg(long)]
        customer: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The events of one agenda's stream, oldest first (an audit view over the API).
    #[command(display_order = 17)]
    Events {
        #[command(flatten)]
        client: ClientArgs,
        /// The agenda's id (not its progress id, where that is another).
        id: String,
        /// The agenda's customer, when the token sees several customers using the id.
        #[arg(long)]
        customer: Option<String>,
        /// Events per page (at most 200).
        #[arg(long, default_value_t = 100)]
        first: u32,
        /// Continue after this cursor (printed when more exist).
        #[arg(long)]
        after: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the insights this token may use, with their queues.
    #[command(display_order = 20)]
    Insights {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List resource pools.
    #[command(display_order = 21)]
    Pools {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List customers.
    #[command(display_order = 22)]
    Customers {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List agenda templates.
    #[command(display_order = 23)]
    Templates {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay the log into fresh read models (progress bar, events/s, fingerprint).
    #[command(display_order = 42)]
    Rebuild(RebuildArgs),
    /// Write the log as JSON Lines: a manifest, one CloudEvents 1.0 object per event (pop's
    /// position, version, hashes and actor as extensions), the tombstones, and a checkpoint
    /// over what was written, signed with the checkpoint key.
    #[command(display_order = 44)]
    Export(ExportArgs),
    /// Import an export into an empty store (the embedded one, or PostgreSQL with --store):
    /// every digest, chain and the signature are verified before anything is committed; a
    /// bad file is refused with its line number and the store stays empty.
    #[command(display_order = 45)]
    Import(ImportArgs),
    /// Run one timed process (reclaimer, retry, data, pods) on its own: `--once` runs one
    /// cycle and exits (for a Kubernetes CronJob), otherwise it loops like in `pop serve`.
    /// Store-based processes open the store, catch the projections up to the head first, and
    /// take the process's leader lock for each cycle.
    #[command(display_order = 43)]
    Reap(ReapArgs),
    /// Run a resource pool's worker: claim agendas of the given insights and run their
    /// operations with the handlers of a registry file, reporting progress.
    #[command(display_order = 3)]
    Worker(WorkerArgs),
    /// Send one GraphQL query or mutation to a running server and print the data as JSON.
    #[command(display_order = 30)]
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

/// `--timeout` of the client commands by default, in seconds.
pub const DEFAULT_CLIENT_TIMEOUT_SECS: u64 = 60;

/// How the CLI helpers reach a running server.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(long, env = "POP_SERVER", default_value = DEFAULT_SERVER, value_parser = parse_server)]
    pub server: String,
    /// Bearer token; defaults to the admin token in the data directory.
    #[arg(long, env = "POP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory holding the generated admin token (when --token is not given).
    #[arg(long, env = "POP_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Longest one call waits for the server's answer, in seconds (1..=600; the longest a
    /// server holds a waiting `getAgenda` is 30): a server that accepts the connection and
    /// never answers (stopped, a paused VM) fails the command saying so instead of hanging.
    #[arg(long, env = "POP_CLIENT_TIMEOUT", default_value_t = DEFAULT_CLIENT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
    /// Traces of the calls (a `client` span each, the root of the server's spans for it).
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A PostgreSQL store, as for `pop serve --store`; without it, the embedded store.
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// Also write the result as the snapshot `pop serve` starts from (stop the server first).
    #[arg(long)]
    pub snapshot: bool,
}

/// Which store `pop verify` checks.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A PostgreSQL store, as for `pop serve --store`; without it, the embedded store in the
    /// data directory.
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// The checkpoint signing key file whose public half checks the checkpoints' signatures
    /// (default: `<data-dir>/checkpoint.key` when it exists).
    #[arg(long, env = "POP_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// The checkpoints' public key instead (64 hex digits, or a file holding them): an
    /// auditor needs no signing key.
    #[arg(long)]
    pub public_key: Option<String>,
    /// A checkpoint witnessed outside the store, which the store must still hold unchanged
    /// (default: `<data-dir>/checkpoint.witness` when it exists; `pop serve` keeps it).
    #[arg(long, env = "POP_CHECKPOINT_WITNESS")]
    pub witness: Option<PathBuf>,
    #[command(flatten)]
    pub unsealed: UnsealedArgs,
    /// Do not check the read-model snapshot of the data directory (by default, on the embedded
    /// store, it is caught up over the log and compared with the log folded from its start,
    /// which reads the log a second time).
    #[arg(long)]
    pub skip_snapshot: bool,
}

/// The rule for the events no signed checkpoint covers, for `pop verify` and `pop export`.
#[derive(Debug, Args)]
pub struct UnsealedArgs {
    /// The longest the events that no signed checkpoint covers may have taken to be written,
    /// in seconds (0: any length; default: 60, or three times the servers'
    /// `--checkpoint-every` when that is longer, and any length when that is 0). A running `pop serve` seals every few
    /// seconds, so what it leaves unsealed when it stops spans a few seconds; a longer span
    /// means the checkpoints that covered them were deleted, or they were written with no
    /// server running (`pop demo`, `pop reap --once`): verification (and an export, which signs what
    /// it exports) fails, saying so.
    #[arg(long, value_name = "SECONDS")]
    pub max_unsealed_span: Option<u64>,
    /// How often the servers seal (`pop serve --checkpoint-every`), for the default of
    /// `--max-unsealed-span`.
    #[arg(long, env = "POP_CHECKPOINT_EVERY", default_value_t = crate::checkpoints::SEAL_EVERY.as_secs(), value_name = "SECONDS")]
    pub checkpoint_every: u64,
}

/// `--max-unsealed-span`'s default for servers that seal every `checkpoint_every` seconds: 60 s,
/// or three of their seals when that is longer; none (0: any span) for servers that do not seal.
fn default_unsealed_span(checkpoint_every: u64) -> u64 {
    match checkpoint_every {
        0 => 0,
        every => every.saturating_mul(3).max(60),
    }
}

impl UnsealedArgs {
    /// The longest span allowed (`None`: any).
    pub fn max_span(&self) -> Option<u64> {
        let max =
            self.max_unsealed_span.unwrap_or_else(|| default_unsealed_span(self.checkpoint_every));
        (max > 0).then_some(max)
    }
}

/// What `pop export` writes.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A PostgreSQL store, as for `pop serve --store`; without it, the embedded store.
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// The checkpoint signing key file (default: `<data-dir>/checkpoint.key`).
    #[arg(long, env = "POP_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// The checkpoint witnessed outside the store, which it must still hold (default:
    /// `<data-dir>/checkpoint.witness` when it exists; see `pop verify`).
    #[arg(long, env = "POP_CHECKPOINT_WITNESS")]
    pub witness: Option<PathBuf>,
    /// Only the entries after this log position (an export of part of the log cannot be
    /// imported).
    #[arg(long)]
    pub since: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub unsealed: UnsealedArgs,
}

/// What `pop import` reads and where it writes.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export file (`pop export --out`).
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// A PostgreSQL store to import into; without it, the embedded store in the data
    /// directory.
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// The target's checkpoint signing key (default: `<data-dir>/checkpoint.key`, created when
    /// missing); when given, the file's checkpoint must be signed by it too.
    #[arg(long, env = "POP_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// The public key the file's checkpoint must be signed with (64 hex digits or a file);
    /// without it or --checkpoint-key, the key the file names is used and a warning printed.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Where `pop serve` keeps its checkpoint witness (as its `--checkpoint-witness`; default
    /// `<data-dir>/checkpoint.witness`): the new embedded store's checkpoint is recorded there;
    /// a PostgreSQL store's only when this is given.
    #[arg(long, env = "POP_CHECKPOINT_WITNESS")]
    pub witness: Option<PathBuf>,
}

/// Where the embedded store lives.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// Data directory; the embedded store is `<data-dir>/pop.db`.
    #[arg(long, env = "POP_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl StoreArgs {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("pop.db")
    }
}

/// Traces over OTLP (`pop serve`, `pop worker`, the client commands): off unless an endpoint is given. See
/// `telemetry.rs` for the standard variables that are read as well.
#[derive(Debug, Clone, Default, Args)]
pub struct TelemetryArgs {
    /// Export traces over OTLP/gRPC to this collector (`http://collector:4317`). Without it,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT`; with none of
    /// them (or `OTEL_SDK_DISABLED=true`) no exporter runs and spans cost next to nothing.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// `pop serve --min-free-disk-mib` by default (the store's own default floor).
const DEFAULT_MIN_FREE_DISK_MIB: u64 = pop_store::sqlite::DEFAULT_MIN_FREE_BYTES / (1024 * 1024);

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// A shared PostgreSQL store (`postgres://user:password@host:5432/db`) or KurrentDB
    /// (`kurrentdb://user:password@host:2113`, `esdb://…`) for several replicas; without it,
    /// the embedded store in the data directory. With a shared store the data directory only
    /// caches projection snapshots, and durability is the database's.
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// PostgreSQL only: most pooled connections this server opens for requests (at least 2);
    /// it also opens one for live tailing, one per leader lock it holds, and up to 4 to read
    /// ahead while it catches up. Size the database's `max_connections` for every replica.
    #[arg(long, env = "POP_PG_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub pg_pool_size: u16,
    /// A shared store (--store) only: how long a start waits for it to answer (its database
    /// down or starting, its credentials refused), trying again with a WARN naming why, before
    /// it gives up. Under Kubernetes keep it within the startup probe's window (300 s in
    /// deploy/). 0: give up at once.
    #[arg(long, env = "POP_STORE_CONNECT_WAIT", default_value_t = 120, value_name = "SECONDS")]
    pub store_connect_wait: u64,
    /// `full` fsyncs every commit before acknowledging it (an acknowledged append survives a
    /// power loss); `normal` fsyncs only at checkpoints (survives a crash of pop, maybe not of
    /// the machine).
    #[arg(long, env = "POP_DURABILITY", value_enum, default_value = "full")]
    pub durability: DurabilityArg,
    /// Embedded store only: MiB to keep free on the data directory's filesystem. Under it
    /// `/readyz` answers 503 saying so (and the start logs a WARN), before appends fail on a
    /// full disk; ready again by itself once there is room. 0: never.
    #[arg(long, env = "POP_MIN_FREE_DISK_MIB", default_value_t = DEFAULT_MIN_FREE_DISK_MIB,
          value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub min_free_disk_mib: u64,
    /// Once, for an older pop's store whose schema predates the hash chain: compute its
    /// events' chains and sign them. Only for a store trusted as it is: whatever its events
    /// hold then is signed (without it, such a store with events is refused at start, and
    /// `pop verify` says it cannot be verified).
    #[arg(long)]
    pub chain_unchained_history: bool,
    /// Once, for an embedded store whose write-ahead log (`pop.db-wal`) is damaged with
    /// acknowledged commits after the damage (without it such a store is refused at start, and
    /// `pop verify` says NOT INTACT): open it as SQLite would, dropping the commits from the
    /// damaged one on. Copy the data directory aside first.
    #[arg(long)]
    pub accept_wal_damage: bool,
    /// Address to listen on. Loopback by default: expose it deliberately.
    #[arg(long, env = "POP_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// A JSON token file: `[{"token","name","role":"user|service|admin","customers":["*"]}]`.
    /// Tokens also come from `POP_TOKENS` (the same JSON). Only when neither is set is an
    /// admin token generated into the data directory (and printed) on first start.
    #[arg(long, env = "POP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Whether this process runs the scheduler that tops insight queues up from their `added`
    /// agendas (`false` records and tracks agendas without moving them to queues).
    #[arg(long, env = "POP_SCHEDULER", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler: bool,
    /// How long a `getAgenda` lease lasts without a report (POP's `reclaimAge`): seconds, or a
    /// number and a unit (5m), from 1 s to a day;
    /// every `updateAgendaProgress` renews it (a lease claimed longer, before a restart with a
    /// shorter one, keeps its length).
    #[arg(long, visible_alias = "lease-seconds", env = "POP_LEASE", default_value_t = pop_api::config::DEFAULT_LEASE.as_secs(),
          value_parser = parse_lease)]
    pub lease: u64,
    /// Longest a `getAgenda` with `waitSeconds` holds its request open (0..=30 s); lower it
    /// when a proxy in front of pop closes idle requests sooner.
    #[arg(long, env = "POP_MAX_WAIT", default_value_t = pop_api::config::MAX_GET_AGENDA_WAIT_SECONDS.unsigned_abs(),
          value_parser = clap::value_parser!(u64).range(0..=30))]
    pub max_wait: u64,
    /// Most bytes of messages one WebSocket connection may hold for a client that reads
    /// slowly; past it the connection is closed with 1013 "try again later".
    #[arg(long, env = "POP_WS_MAX_QUEUED_BYTES", default_value_t = pop_api::ws::MAX_QUEUED_BYTES)]
    pub ws_max_queued_bytes: usize,
    /// Most WebSocket connections one principal (token) may have open at once.
    #[arg(long, env = "POP_WS_MAX_CONNECTIONS_PER_PRINCIPAL", default_value_t = pop_api::ws::MAX_CONNECTIONS_PER_PRINCIPAL)]
    pub ws_max_connections_per_principal: usize,
    /// Most subscriptions one principal may have at once, and one customer with all its
    /// principals together: their share of the server's 50,000.
    #[arg(long, env = "POP_MAX_SUBSCRIPTIONS_PER_PRINCIPAL", default_value_t = pop_api::config::DEFAULT_MAX_SUBSCRIPTIONS_PER_PRINCIPAL)]
    pub max_subscriptions_per_principal: usize,
    /// Answer errors under /pop with HTTP 200 and POP's error envelope (errorResponse, with
    /// the status pop would have answered as its responseCode), as POP's own endpoints answered
    /// service errors: POP's unchanged Java clients read no body on a 4xx or 5xx, so they log
    /// only the status, not pop's code, message and cid. Where POP had no error it answers as
    /// POP did: a GET of an id that matches nothing is an empty list, a DELETE of one an empty
    /// answer. Off: honest HTTP statuses (404 for both).
    #[arg(long, env = "POP_ERRORS_IN_BODY")]
    pub pop_errors_in_body: bool,
    /// Label /metrics' per-insight series with insight ids (tenant data; /metrics needs no
    /// token). Off: each is one total over every insight.
    #[arg(long, env = "POP_METRICS_INSIGHT_LABELS")]
    pub metrics_insight_labels: bool,
    /// Most live (not COMPLETE) agendas one customer may have at once; past it a submit is
    /// refused with QUOTA_EXCEEDED.
    #[arg(long, env = "POP_MAX_LIVE_AGENDAS_PER_CUSTOMER", default_value_t = pop_api::config::DEFAULT_MAX_LIVE_AGENDAS_PER_CUSTOMER)]
    pub max_live_agendas_per_customer: usize,
    /// Most bytes (as JSON) one customer's live agendas may hold together, their definitions
    /// and what they keep of reports (results, params, diagnostics, messages; all held in
    /// memory); past it a submit or rerun is refused with QUOTA_EXCEEDED and retries wait; past
    /// twice it an expansion is refused too, and reports keep nothing new while agendas finish.
    #[arg(long, env = "POP_MAX_LIVE_BYTES_PER_CUSTOMER", default_value_t = pop_api::config::DEFAULT_MAX_LIVE_BYTES_PER_CUSTOMER)]
    pub max_live_bytes_per_customer: u64,
    /// Most bytes one customer's finished agendas may hold in memory together (their
    /// compressed bodies: results, params, diagnostics kept; and ~512 B each for the entry);
    /// past it a submit or rerun is refused with QUOTA_EXCEEDED, and retries wait, until the
    /// data reaper removes some (older than --agenda-reap-age, a batch every
    /// --data-reap-interval).
    #[arg(long, env = "POP_MAX_RETAINED_BYTES_PER_CUSTOMER", default_value_t = pop_api::config::DEFAULT_MAX_RETAINED_BYTES_PER_CUSTOMER)]
    pub max_retained_bytes_per_customer: u64,
    /// Most bytes one customer's agendas may take in the log together (their events' data and
    /// metadata, live and finished, until the data reaper deletes them; 4 GiB by default);
    /// past it a submit or rerun is refused with QUOTA_EXCEEDED until the data reaper removes
    /// some (older than --agenda-reap-age). Size it to the volume over the customers sharing
    /// it: indexes, hashes and the write-ahead log come on top.
    #[arg(long, env = "POP_MAX_LOG_BYTES_PER_CUSTOMER", default_value_t = pop_api::config::DEFAULT_MAX_LOG_BYTES_PER_CUSTOMER)]
    pub max_log_bytes_per_customer: u64,
    /// Most bytes of large request bodies and WebSocket messages (16 KiB and more) one
    /// customer's tokens (or one admin of every customer) may send a second, past
    /// a burst of 4 seconds of it (4 MiB/s by default): a body ahead of its token's pace waits
    /// up to 10 s before it is read on, else is refused BUSY (429) saying when to send it.
    /// Every large body costs the server's CPU whatever its answer, and the cores are shared.
    #[arg(long, env = "POP_MAX_UPLOAD_BYTES_PER_SECOND", default_value_t = pop_api::config::DEFAULT_MAX_UPLOAD_BYTES_PER_SECOND)]
    pub max_upload_bytes_per_second: u64,
    /// Most bytes (as JSON) one operation's payload, or a report's resultPayload, may take;
    /// past it a submit is refused with VALIDATION naming the field, and a report is taken
    /// with that operation failed (NOT_RETRYABLE, without the result).
    #[arg(long, env = "POP_MAX_PAYLOAD_BYTES", default_value_t = pop_api::config::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
    /// Most bytes (as JSON) one params map (an agenda's, an operation's, a report's) may take;
    /// past it the submit or report is refused with VALIDATION naming the field.
    #[arg(long, env = "POP_MAX_PARAMS_BYTES", default_value_t = pop_api::config::DEFAULT_MAX_PARAMS_BYTES)]
    pub max_params_bytes: usize,
    /// Resident bytes past which the read models run degraded (live agendas held compressed,
    /// an error logged, `pop_projection_degraded` 1) instead of growing into an OOM kill.
    /// Default: 80% of the container's memory limit when it has one; 0: no budget.
    #[arg(long, env = "POP_MEMORY_BUDGET")]
    pub memory_budget: Option<u64>,
    /// Seconds an HTTP connection may take to send a complete request head (from when it
    /// connects or from its previous response); a half-sent header is closed after it.
    #[arg(long, env = "POP_HTTP_HEADER_TIMEOUT", default_value_t = pop_api::serve::HEADER_READ_TIMEOUT.as_secs())]
    pub http_header_timeout: u64,
    /// Seconds an HTTP keep-alive connection may stay idle (no request being served, nothing
    /// read or written) before it is closed.
    #[arg(long, env = "POP_HTTP_IDLE_TIMEOUT", default_value_t = pop_api::serve::IDLE_TIMEOUT.as_secs())]
    pub http_idle_timeout: u64,
    /// For a first try on this machine: once serving, create what `pop init` creates (pool
    /// `farm`, customer `acme`, insight `encode` for ffmpeg, step, fanout and log operations)
    /// with the generated admin token. Authentication stays on.
    #[arg(long, env = "POP_DEV")]
    pub dev: bool,
    /// The Ed25519 key that signs the log's checkpoints: a file of 64 hex digits (e.g. a
    /// mounted Secret; replicas of one shared store must share it). Default:
    /// `<data-dir>/checkpoint.key`, created (mode 0600) on first start.
    #[arg(long, env = "POP_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// A key rotation: the key that signed the store's newest checkpoint before
    /// --checkpoint-key, as its key file (the new key's first checkpoint carries its
    /// endorsement) or, when that key is lost, as its key id (16 hex digits, as `pop verify`
    /// and the server's refusal name it; then only the checkpoint witnessed outside the store
    /// is taken over). May be given again, or comma-separated. Remove it once the new key has
    /// sealed: left in place, a store whose checkpoints were deleted back to the old key's
    /// would be handed over again.
    #[arg(
        long,
        env = "POP_CHECKPOINT_PREVIOUS_KEY",
        value_delimiter = ',',
        value_name = "FILE|KEY_ID"
    )]
    pub checkpoint_previous_key: Vec<String>,
    /// With a lost previous key given by id: take its newest checkpoint over although no
    /// witness file vouches for it (a data directory or `emptyDir` lost with the key). On your
    /// word: a consistent forgery of the log and its checkpoints made meanwhile would be signed
    /// too.
    #[arg(long, env = "POP_CHECKPOINT_TAKEOVER_UNWITNESSED")]
    pub checkpoint_takeover_unwitnessed: bool,
    /// Seconds between two seals of the log's newest events into a signed checkpoint (0: do
    /// not seal).
    #[arg(long, env = "POP_CHECKPOINT_EVERY", default_value_t = crate::checkpoints::SEAL_EVERY.as_secs())]
    pub checkpoint_every: u64,
    /// Seconds between two verifications of the whole log by this server, as `pop verify`
    /// does it (digests, chains, heads, tombstones, signed checkpoints against this server's
    /// key and witness), off the request path; the outcome on /metrics (`pop_verify_broken`,
    /// `pop_verify_checkpoint_seq`, `pop_verify_last_intact_timestamp_seconds`) and a break
    /// as an ERROR. The first runs within a minute of the start. Each reads the whole log (on the
    /// embedded store about 1.5 s of both cores per million events). 0: never.
    #[arg(long, env = "POP_VERIFY_EVERY", default_value_t = crate::verifier::VERIFY_EVERY.as_secs(), value_name = "SECONDS")]
    pub verify_every: u64,
    /// Where the server keeps the newest checkpoint it saw in the store, outside the store
    /// (default: `<data-dir>/checkpoint.witness`). While the store lacks it or holds another
    /// one, the server stops sealing and says so: someone deleted or replaced checkpoints.
    #[arg(long, env = "POP_CHECKPOINT_WITNESS")]
    pub checkpoint_witness: Option<PathBuf>,
    #[command(flatten)]
    pub reapers: ReaperArgs,
}

/// `<category>=<seconds>` for --config-reap-age-by-kind.
fn parse_kind_age(text: &str) -> Result<(String, u64), String> {
    const CATEGORIES: [&str; 4] = ["customer", "resourcepool", "insight", "template"];
    let (kind, secs) = text.split_once('=').ok_or("expected <category>=<seconds>")?;
    let kind = kind.trim().to_ascii_lowercase();
    if !CATEGORIES.contains(&kind.as_str()) {
        return Err(format!("unknown config category {kind:?} (one of {})", CATEGORIES.join(", ")));
    }
    let secs = parse_age(secs)?;
    Ok((kind, secs))
}

/// A bare number under this many seconds is refused as a reap age ([`parse_age`]).
const LEAST_BARE_AGE_SECS: u64 = 3_600;

/// A reap age in seconds: a number of seconds, or a number with a unit (`90s`, `30m`, `12h`,
/// `3d`). A bare number under an hour is refused (ops3am3: `POP_AGENDA_REAP_AGE=3`, meant as
/// three days, deleted every finished agenda's history at the first cycle): an age that short
/// is written with its unit (`3s`), so it is meant.
fn parse_age(text: &str) -> Result<u64, String> {
    let (number, unit) =
        split_unit(text, "an age: seconds (259200), or a number and a unit (72h, 3d)")?;
    let unit_secs = match unit {
        None if number < LEAST_BARE_AGE_SECS => {
            return Err(format!(
                "{number} is {number} seconds: everything finished longer ago than that \
                 would be deleted; write the unit to mean it ({number}s), or give days or \
                 hours ({number}d, {number}h)"
            ));
        }
        None => 1,
        Some(secs) => secs,
    };
    let text = text.trim();
    match number.checked_mul(unit_secs) {
        Some(secs) if secs <= LONGEST_AGE_SECS => Ok(secs),
        _ => Err(format!("{text:?} is longer than 100 years (36500d)")),
    }
}

/// A number of seconds with an optional unit (`s`, `m`, `h`, `d`): the number, and the unit's
/// seconds when one was written; `expected` says what the text should have been.
fn split_unit(text: &str, expected: &str) -> Result<(u64, Option<u64>), String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not {expected}"))?;
    let unit = match unit.trim() {
        "" => None,
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3_600),
        "d" => Some(86_400),
        other => return Err(format!("unknown unit {other:?} in {text:?} (s, m, h or d)")),
    };
    Ok((number, unit))
}

/// A server's base URL: `http://host:port` (ops3am22: one without `http://`, an `https://`
/// one and one ending in `/pop` were sent anyway and failed as if no server ran there, exit 1).
fn parse_server(text: &str) -> Result<String, String> {
    let url = text.trim();
    let example = "such as http://127.0.0.1:8080";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a URL: give the server's base URL (--server or POP_SERVER), {example}"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err(format!(
                "{url:?}: this client speaks plain HTTP, as `pop serve` does; give its http:// \
                 address (--server or POP_SERVER), {example}, from where that is reachable"
            ));
        }
        other => {
            return Err(format!(
                "{url:?}: {other}:// is no scheme pop speaks (--server or POP_SERVER); {example}"
            ));
        }
    }
    let path = rest.split_once('/').map_or("", |(_, path)| path).trim_end_matches('/');
    if path.eq_ignore_ascii_case("pop") || path.eq_ignore_ascii_case("graphql") {
        return Err(format!(
            "{url:?} names an endpoint: give the server's base URL (--server or POP_SERVER), \
             without /{path} ({example})"
        ));
    }
    Ok(url.to_string())
}

/// A lease: seconds (300), or a number and a unit (5m), from 1 s to a day (ops3am7: `5m` was
/// "invalid digit found in string" where the reap ages take units).
fn parse_lease(text: &str) -> Result<u64, String> {
    let (number, unit) = split_unit(text, "a lease: seconds (300), or a number and a unit (5m)")?;
    match number.checked_mul(unit.unwrap_or(1)) {
        Some(secs @ 1..=86_400) => Ok(secs),
        _ => Err(format!("{:?} is not from 1 s to a day (86400, 24h)", text.trim())),
    }
}

/// The longest reap age taken: 100 years (a longer one, meant as "never", would make the
/// reaper's cutoff leave the calendar).
const LONGEST_AGE_SECS: u64 = 36_500 * 86_400;

/// The timed processes `pop reap` runs by name.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ReaperName {
    /// AgendaReclaimer: agendas whose lease expired go back to the queue (or fail).
    Reclaimer,
    /// AgendaRetry: failed agendas with attempts left are rerun with `continue`.
    Retry,
    /// DataObjectReaper: old finished agendas and deleted config objects are removed.
    Data,
    /// PodReaper: finished Kubernetes pods labelled as pop's are deleted.
    Pods,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Which process.
    #[arg(value_enum)]
    pub name: ReaperName,
    /// Run one cycle and exit: non-zero when the cycle reported errors; 0 when it had none
    /// or another replica holds the leader lock.
    #[arg(long)]
    pub once: bool,
    /// Seconds between cycles when looping. Default: the process's own interval setting
    /// (`--reclaim-interval`/`POP_RECLAIM_INTERVAL`, `--retry-interval`, `--data-reap-interval`,
    /// `--pod-reap-interval`); where that is `0` (off in `pop serve`), the built-in default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_SECS))]
    pub interval: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The shared PostgreSQL or KurrentDB store, as for `pop serve --store`; without it, the
    /// embedded store in the data directory.
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    #[command(flatten)]
    pub reapers: ReaperArgs,
}

/// The longest interval, backoff or delay of a timed process, in seconds: a week (ops3am53:
/// `--reclaim-interval 999999999999` was taken, and a multiplier of 0 made retries immediate).
pub const MAX_INTERVAL_SECS: u64 = 604_800;

/// Settings of the timed processes, shared by `pop serve` and `pop reap`. Durations are in
/// seconds (each at most [`MAX_INTERVAL_SECS`]); an interval of `0` turns that process off in
/// `pop serve`.
#[derive(Debug, Args, Clone)]
pub struct ReaperArgs {
    /// Log what the timed processes would do and change nothing.
    #[arg(long = "reaper-dry-run", visible_alias = "dry-run", env = "POP_REAPER_DRY_RUN")]
    pub dry_run: bool,
    /// Most actions per cycle for every timed process; `0` keeps each process's own default
    /// (reclaimer 500, retry 500, data 2,000, pods 200).
    #[arg(long, env = "POP_REAPER_BATCH_SIZE", default_value_t = 0)]
    pub reaper_batch_size: usize,
    /// Seconds between AgendaReclaimer cycles, which take back agendas whose lease expired
    /// (the lease length is the API's); `0` turns the reclaimer off in `pop serve`.
    #[arg(long, env = "POP_RECLAIM_INTERVAL", default_value_t = pop_reapers::DEFAULT_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub reclaim_interval: u64,
    /// Seconds between AgendaRetry cycles; `0` turns automatic retries off in `pop serve`.
    #[arg(long, env = "POP_RETRY_INTERVAL", default_value_t = pop_reapers::retry::DEFAULT_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub retry_interval: u64,
    /// Seconds before the first retry of a failed agenda; doubled (see
    /// --retry-backoff-multiplier) per further attempt.
    #[arg(long, env = "POP_RETRY_BACKOFF", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub retry_backoff: u64,
    /// Growth of the retry delay per attempt (1..=10; 1 keeps it the same).
    #[arg(long, env = "POP_RETRY_BACKOFF_MULTIPLIER", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    pub retry_backoff_multiplier: u32,
    /// Longest retry delay, in seconds.
    #[arg(long, env = "POP_RETRY_BACKOFF_MAX", default_value_t = 1800,
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub retry_backoff_max: u64,
    /// Spread of each retry delay, ± this percentage (0..=100; derived from the agenda id, not
    /// random).
    #[arg(long, env = "POP_RETRY_JITTER_PERCENT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retry_jitter_percent: u32,
    /// Seconds between DataObjectReaper cycles; `0` turns it off in `pop serve`.
    #[arg(long, env = "POP_DATA_REAP_INTERVAL", default_value_t = 4 * 3600,
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub data_reap_interval: u64,
    /// Age (since `updatedTime`) at which a COMPLETE agenda and its progress are reaped;
    /// also a `doNotRun` agenda, which is never scheduled and only waits. Seconds (at least
    /// 3600), or with a unit: `90s`, `30m`, `12h`, `3d`.
    #[arg(long, env = "POP_AGENDA_REAP_AGE", default_value_t = 3 * 86_400, value_parser = parse_age)]
    pub agenda_reap_age: u64,
    /// Age (since deletion) at which a deleted config object's stream is reaped, as
    /// --agenda-reap-age.
    #[arg(long, env = "POP_CONFIG_REAP_AGE", default_value_t = 3 * 86_400, value_parser = parse_age)]
    pub config_reap_age: u64,
    /// Per config kind, `<category>=<age>` (categories: customer, resourcepool, insight,
    /// template; ages as --agenda-reap-age), replacing --config-reap-age for that kind; repeat
    /// or comma-separate.
    #[arg(long, env = "POP_CONFIG_REAP_AGE_BY_KIND", value_delimiter = ',', value_parser = parse_kind_age)]
    pub config_reap_age_by_kind: Vec<(String, u64)>,
    /// Namespace whose finished pop pods the PodReaper deletes; without it `pop serve` runs
    /// no pod reaper (`pop reap pods` then uses the client's default namespace).
    #[arg(long, env = "POP_POD_REAPER_NAMESPACE")]
    pub pod_reaper_namespace: Option<String>,
    /// Seconds between PodReaper cycles.
    #[arg(long, env = "POP_POD_REAP_INTERVAL", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_SECS))]
    pub pod_reap_interval: u64,
    /// Age (since a pod finished) at which it is deleted (POP: 1440 min), as
    /// --agenda-reap-age.
    #[arg(long, env = "POP_POD_REAP_AGE", default_value_t = 86_400, value_parser = parse_age)]
    pub pod_reap_age: u64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The server, the token and the traces' collector.
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
    /// An agenda without changes is still reported at least this often (milliseconds),
    /// renewing its lease; shortened to a third of the lease `getAgenda` answers, so any
    /// server `--lease` is renewed in time.
    #[arg(long, env = "POP_WORKER_HEARTBEAT_MS", default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// How long an idle worker asks the server to hold each `getAgenda` until work is queued
    /// (seconds, 0..=30): new work is claimed as soon as it is queued. 0 polls instead (with
    /// the pauses below), for servers that cannot wait.
    #[arg(long, env = "POP_WORKER_WAIT_FOR_WORK", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=30))]
    pub wait_for_work: u64,
    /// Longest pause between polls of empty queues (milliseconds), when waiting for work is
    /// off or does not work; pauses start at 100 ms and double while the queues stay empty.
    #[arg(long, env = "POP_WORKER_MAX_IDLE_MS", default_value_t = 5_000)]
    pub max_idle_ms: u64,
    /// On SIGTERM/SIGINT to the worker's pid, how long running operations may finish
    /// (seconds) before they are stopped and their agendas handed back. A signal to the whole
    /// process group (a terminal's Ctrl-C) stops the handlers at once: they are in it. Keep it
    /// at least 10 s below whatever kills the worker after its SIGTERM (Kubernetes: the pod's
    /// `terminationGracePeriodSeconds`, 30 by default), or the hand-back is cut off and the
    /// agendas wait out their lease and lose an attempt.
    #[arg(long, env = "POP_WORKER_SHUTDOWN_GRACE", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// Namespace of the pods of `kind = "kubernetes"` handlers that name none.
    #[arg(long, env = "POP_KUBE_NAMESPACE", default_value = "default")]
    pub kube_namespace: String,
    /// How often a handler's pod is looked at (milliseconds).
    #[arg(long, env = "POP_KUBE_POLL_MS", default_value_t = 1_000)]
    pub kube_poll_ms: u64,
}

/// What `pop init` creates.
#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// The resource pool's id.
    #[arg(long, default_value = "farm")]
    pub pool: String,
    /// The customer's id (also the owner of the pool and the insight).
    #[arg(long, default_value = "acme")]
    pub customer: String,
    /// The insight's id (what `pop worker --insight` names).
    #[arg(long, default_value = "encode")]
    pub insight: String,
    /// The operation types the insight takes.
    #[arg(long, value_delimiter = ',', default_value = "ffmpeg,step,fanout,log")]
    pub types: Vec<String>,
    /// The insight's queue size.
    #[arg(long, default_value_t = 10)]
    pub queue_size: u32,
}

/// POP's rerun modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RerunMode {
    /// Every operation runs again.
    ResetAll,
    /// Only what did not succeed runs again; succeeded operations keep their results.
    Continue,
    /// Every operation is reset, but the agenda is not queued: it waits (WAITING/pending) until
    /// a later rerun (in another mode) starts it.
    SkipExecution,
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
    /// A PostgreSQL store, as for `pop serve --store`; without it, the embedded store in the
    /// data directory, read-only (beside a running server, or on a read-only copy).
    #[arg(long = "store", env = "DATABASE_URL", hide_env_values = true)]
    pub store_url: Option<String>,
    /// Only this stream, e.g. `agenda-<customerId>/<id>` (`customer-<id>`, `insight-<id>`, …).
    #[arg(long)]
    pub stream: Option<String>,
    /// Start after this global position (ignored with --stream).
    #[arg(long)]
    pub after: Option<String>,
    /// At most this many events (default 100; with --follow, no limit).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing new events as they are committed (global log only).
    #[arg(long)]
    pub follow: bool,
}

/// The environment variable (and its value) behind the flag a clap error refused a value of,
/// when that variable is set and the flag is not on the command line: `(POP_DURABILITY,
/// "fulll")` for an invalid `--durability`.
pub fn env_of_refused(command: &clap::Command, e: &clap::Error) -> Option<(String, String)> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return None };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    fn env_of(command: &clap::Command, long: &str) -> Option<String> {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .or_else(|| command.get_subcommands().find_map(|c| env_of(c, long)))
    }
    // Given on the command line, the refused value is the flag's.
    let given = std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a.strip_prefix("--").and_then(|a| a.split('=').next()) == Some(long)
    });
    if given {
        return None;
    }
    let name = env_of(command, long)?;
    let value = std::env::var_os(&name)?;
    Some((name, value.to_string_lossy().into_owned()))
}

/// Filters of `pop agendas` (its flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgendaFilter {
    /// Only this customer's agendas.
    #[arg(long)]
    pub customer: Option<String>,
    /// Only the agendas of this batch (linkId).
    #[arg(long = "link-id")]
    pub link_id: Option<String>,
    /// Only the agendas bound to this insight.
    #[arg(long)]
    pub insight: Option<String>,
    /// WAITING, EXECUTING or COMPLETE.
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many (1..=500, the server's page limit).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=pop_app::limits::MAX_PAGE_SIZE as i64))]
    pub first: u32,
    /// Continue after this cursor (printed when more exist).
    #[arg(long)]
    pub after: Option<String>,
    /// The agendas added first come first (without it, the newest come first, so what was
    /// just submitted is on the first page).
    #[arg(long)]
    pub oldest_first: bool,
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn a_server_is_a_base_url_over_http() {
        for good in ["http://127.0.0.1:8080", "http://pop.internal:80/", "HTTP://h:1/prefix"] {
            assert_eq!(parse_server(good).as_deref(), Ok(good), "{good}");
        }
        for (bad, says) in [
            ("127.0.0.1:8080", "is not a URL"),
            ("https://pop:8443", "plain HTTP"),
            ("ftp://pop", "no scheme pop speaks"),
            ("http://127.0.0.1:8080/pop", "without /pop"),
            ("http://127.0.0.1:8080/graphql/", "without /graphql"),
        ] {
            let error = parse_server(bad).unwrap_err();
            assert!(error.contains(says) && error.contains("http://127.0.0.1:8080"), "{error}");
            assert!(error.contains("POP_SERVER"), "the variable is named too: {error}");
        }
    }

    #[test]
    fn hints_name_the_data_directory_in_full_unless_it_is_the_default_here() {
        let default = std::path::Path::new(DEFAULT_DATA_DIR);
        assert_eq!(client_flags(DEFAULT_SERVER, default, true), "");
        let elsewhere = client_flags(DEFAULT_SERVER, default, false);
        let dir = elsewhere.strip_prefix(" --data-dir ").expect(&elsewhere);
        assert!(std::path::Path::new(dir).is_absolute() && dir.ends_with("/pop-data"), "{dir}");
        let relative = client_flags("http://127.0.0.1:9", std::path::Path::new("devemb"), true);
        assert!(relative.starts_with(" --server http://127.0.0.1:9 --data-dir /"), "{relative}");
        assert!(relative.ends_with("/devemb"), "{relative}");
        let spaced = client_flags(DEFAULT_SERVER, std::path::Path::new("/tmp/my data"), true);
        assert_eq!(spaced, " --data-dir '/tmp/my data'");
    }

    #[test]
    fn a_lease_takes_units_as_the_reap_ages_do() {
        assert_eq!(parse_lease("300"), Ok(300));
        assert_eq!(parse_lease("5m"), Ok(300));
        assert_eq!(parse_lease(" 2h "), Ok(7_200));
        assert_eq!(parse_lease("1d"), Ok(86_400));
        assert!(parse_lease("0").unwrap_err().contains("from 1 s to a day"));
        assert!(parse_lease("2d").unwrap_err().contains("from 1 s to a day"));
        assert!(parse_lease("5 minutes").unwrap_err().contains("unknown unit"));
        assert!(parse_lease("soon").unwrap_err().contains("not a lease"));
        // The ages keep their rules.
        assert_eq!(parse_age("3d"), Ok(259_200));
        assert!(parse_age("3").unwrap_err().contains("write the unit"));
    }
}

#[cfg(test)]
mod unsealed_tests {
    use super::default_unsealed_span;

    #[test]
    fn servers_that_do_not_seal_leave_any_span_unsealed() {
        assert_eq!(default_unsealed_span(0), 0);
        assert_eq!(default_unsealed_span(5), 60);
        assert_eq!(default_unsealed_span(30), 90);
        assert_eq!(default_unsealed_span(u64::MAX), u64::MAX);
    }
}
