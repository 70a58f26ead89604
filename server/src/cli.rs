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
    /// Run one demo agenda through its whole lifecycle on the embedded store.
    Demo(StoreArgs),
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
