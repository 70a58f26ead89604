//! The `pop` binary: CLI, configuration, logging, wiring and shutdown. The only crate that
//! reads the wall clock for commands, generates ids and picks a store backend.

mod audit;
mod backend;
mod cli;
mod client;
mod data_lock;
mod demo;
mod log_cmd;
mod reap;
mod rebuild;
mod serve;
mod signal;
mod tour;
mod verify_cmd;
mod worker;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

/// mimalloc instead of the system allocator: decoding and folding the log allocate many small
/// objects, and it measured ~1.4x faster on `read_all` + decode (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors end the process with one readable line (the whole cause chain) and exit code 1, not
/// a debug dump: operators read these at 3 a.m.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(&cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pop: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: cli::Command) -> Result<()> {
    match command {
        cli::Command::Serve(args) => serve::run(args).await,
        cli::Command::Log(args) => log_cmd::run(args).await,
        cli::Command::Demo(args) => demo::run(args).await,
        cli::Command::Submit { client, file } => {
            tour::submit(&client::Client::new(&client)?, &file).await
        }
        cli::Command::Progress { client, id, json, as_of } => {
            tour::progress(&client::Client::new(&client)?, &id, json, as_of.as_deref()).await
        }
        cli::Command::Verify(args) => verify_cmd::run(args).await,
        cli::Command::Audit { client, id, customer, json } => {
            audit::run(&client::Client::new(&client)?, &id, customer.as_deref(), json).await
        }
        cli::Command::Watch { client, id } => {
            tour::watch(&client::Client::new(&client)?, &id).await
        }
        cli::Command::Rebuild(args) => rebuild::run(args).await,
        cli::Command::Reap(args) => reap::run(args).await,
        cli::Command::Worker(args) => worker::run(args).await,
        cli::Command::Gql { client, query, variables } => {
            tour::gql(&client::Client::new(&client)?, &query, &variables).await
        }
    }
}

/// Logs go to stderr so that commands such as `pop log` keep stdout for data. `RUST_LOG`
/// filters (default `info`); `--log-format json` gives one JSON object per line for
/// collectors.
fn init_tracing(format: &cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
