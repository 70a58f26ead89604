//! The `pop` binary: CLI, configuration, logging, wiring and shutdown. The only crate that
//! reads the wall clock for commands, generates ids and picks a store backend.

mod audit;
mod backend;
mod checkpoints;
mod cli;
mod client;
mod data_lock;
mod demo;
mod log_cmd;
mod output;
mod reap;
mod rebuild;
mod serve;
mod signal;
mod telemetry;
mod tour;
mod transfer_cmd;
mod verbs;
mod verifier;
mod verify_cmd;
mod watch;
mod worker;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};

/// mimalloc instead of the system allocator: decoding and folding the log allocate many small
/// objects, and it measured ~1.4x faster on `read_all` + decode (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors end the process with one readable line (the whole cause chain) and exit code 1, not
/// a debug dump: operators read these at 3 a.m.
#[tokio::main]
async fn main() -> ExitCode {
    let (command, blank) = cli::without_blank_env(cli::Cli::command());
    // Those that choose the store, the data or the credentials stop the start: taken as unset,
    // a deployment whose Secret came out empty served an empty store of its own, ready, and
    // lost what it acknowledged with its pod (ops3am12).
    if let Some(name) = blank.iter().find(|n| cli::MUST_NOT_BE_BLANK.contains(&n.as_str())) {
        eprintln!(
            "pop: error: {name} is set but blank: give it a value or unset it (it chooses the \
             store, the data directory or the tokens, so a blank one is not taken as unset)"
        );
        return ExitCode::from(2);
    }
    for name in &blank {
        eprintln!("pop: warning: {name} is set but blank: taken as unset");
    }
    let matches = match command.clone().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => {
            // A value clap refused names the flag; say which variable gave it, when one is set
            // (ops3am53: `POP_DURABILITY=fulll` was said of `--durability` alone, and whoever
            // edits a manifest looks for the variable).
            let from_env = cli::env_of_refused(&command, &e);
            let code = e.exit_code();
            let _ = e.print();
            if let Some((name, value)) = from_env {
                eprintln!(
                    "pop: note: {name} is set in the environment ({name}={value:?}); it gives the \
                     flag its value when the flag is not on the command line"
                );
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut cli::Cli::command()).exit(),
    };
    // POP_TOKENS (a variable only, so not in `blank`) chooses the tokens as POP_TOKEN_FILE does:
    // taken as unset, an empty Secret made a fresh admin token and printed it into the pod's
    // logs while every configured client got 401 (newcomer17).
    let tokens = std::env::var_os(pop_api::auth::TOKENS_ENV);
    if matches!(cli.command, cli::Command::Serve(_))
        && tokens.is_some_and(|v| v.to_string_lossy().trim().is_empty())
    {
        eprintln!(
            "pop: error: {} is set but blank: give it a value or unset it (it chooses the tokens, \
             so a blank one is not taken as unset)",
            pop_api::auth::TOKENS_ENV
        );
        return ExitCode::from(2);
    }
    let telemetry = match telemetry::init(&cli.log_format, cli.command.telemetry()) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("pop: error: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    signal::survive_file_size_limit();
    // A service logging JSON says why it stopped in JSON too (ops3am18: the line explaining a
    // crash loop was the one line a collector could not parse).
    let json_service = matches!(cli.log_format, cli::LogFormat::Json)
        && matches!(cli.command, cli::Command::Serve(_) | cli::Command::Worker(_));
    let result = run(cli.command).await;
    // Said plainly where RUST_LOG lets no ERROR of this target through (review-s42: it
    // stopped in silence).
    let json_service = json_service && tracing::enabled!(tracing::Level::ERROR);
    if let Err(e) = &result
        && json_service
        && e.downcast_ref::<output::Exit>().is_none()
    {
        tracing::error!(error = &*error_chain(e), "pop stopped");
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<output::Exit>() {
            Some(exit) => {
                if !exit.message.is_empty() {
                    eprintln!("pop: {}", exit.message);
                }
                ExitCode::from(exit.code)
            }
            None => {
                if !json_service {
                    eprintln!("pop: error: {}", error_chain(&e));
                }
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs the read `call` on the agenda `id`; when no agenda has that id and no customer was
/// named, and the id reads `customer/id` — as the server's log and metrics name an agenda
/// (ops3am13: an operator pasting `acme/f1-3` from the log got NOT_FOUND from every verb, and
/// `pop audit` said it was reaped) — reads that customer's agenda of that id, saying so.
async fn by_id_or_key(
    c: &client::Client,
    verb: Verb,
    id: &str,
    customer: Option<&str>,
    call: impl AsyncFn(&str, Option<&str>) -> Result<()>,
) -> Result<()> {
    let keyed = key_reading(c, verb, id, customer).await;
    refuse_two_readings(c, verb, id, keyed.as_ref()).await?;
    let result = call(id, customer).await;
    match (&result, keyed) {
        (Err(e), Some((owner, keyed))) if is_not_found(e) => {
            eprintln!(
                "pop: no agenda {id:?}; taking it as the server's log writes an agenda \
                 (customer/id): the agenda of customer {owner:?} (its {} {keyed:?})",
                verb.takes()
            );
            call(&keyed, Some(&owner)).await
        }
        (Err(e), None) if is_not_found(e) => match other_reading(c, verb, id, customer).await {
            Some((other, owner)) => {
                eprintln!(
                    "pop: no agenda of {} {id:?}; it is the {} of customer {owner:?}'s agenda: \
                     taking its {} {other:?}",
                    verb.takes(),
                    verb.other(),
                    verb.takes()
                );
                call(&other, Some(&owner)).await
            }
            None => result,
        },
        _ => result,
    }
}

/// The write `call` on the agenda `id`, never on another one: an id that reads `customer/id`
/// and names no agenda gets the command to type for that customer's agenda, not the write
/// (review-s40: `pop cancel acme/nightly`, a typo, cancelled acme's `nightly`): what to name
/// in the command just typed, not a whole command (review-s41c: it dropped the flags given).
async fn by_id_hinting_key(
    c: &client::Client,
    verb: Verb,
    id: &str,
    customer: Option<&str>,
    call: impl AsyncFn(&str, Option<&str>) -> Result<()>,
) -> Result<()> {
    let keyed = key_reading(c, verb, id, customer).await;
    refuse_two_readings(c, verb, id, keyed.as_ref()).await?;
    let result = call(id, customer).await;
    match (result, keyed) {
        (Err(e), Some((owner, keyed))) if is_not_found(&e) => Err(anyhow::anyhow!(
            "{e:#} (if {id:?} is an agenda as the server's log writes it, customer/id, name it {})",
            output::naming(&keyed, &owner)
        )),
        // Never the write on another agenda than named: what to name instead.
        (Err(e), None) if is_not_found(&e) => match other_reading(c, verb, id, customer).await {
            Some((other, owner)) => Err(anyhow::anyhow!(
                "{e:#} ({id:?} is the {} of customer {owner:?}'s agenda; name it {})",
                verb.other(),
                output::naming(&other, &owner)
            )),
            None => Err(e),
        },
        (result, ..) => result,
    }
}

/// Which id a verb takes: `progress` and `watch` the progress id, the others the agenda's own.
#[derive(Clone, Copy)]
struct Verb {
    progress_id: bool,
}

impl Verb {
    const AGENDA: Verb = Verb { progress_id: false };
    const PROGRESS: Verb = Verb { progress_id: true };

    fn takes(self) -> &'static str {
        if self.progress_id { "progress id" } else { "agenda id" }
    }

    /// The kind of id the verb does not take.
    fn other(self) -> &'static str {
        Verb { progress_id: !self.progress_id }.takes()
    }
}

/// When `id` is the other kind of id of an agenda the caller sees (its agenda id for
/// `progress` and `watch`, its progress id for the others), and that agenda's id `verb` takes
/// is another: that id and the agenda's customer, which names it exactly (newcomer18: `pop
/// progress job-8`, the AGENDA column of `pop agendas`, was NOT_FOUND, and `pop audit prog-8`
/// blamed the data reaper; hostile35: without the customer, an agenda id two customers use
/// was then "ambiguous").
async fn other_reading(
    c: &client::Client,
    verb: Verb,
    id: &str,
    customer: Option<&str>,
) -> Option<(String, String)> {
    let query = if verb.progress_id {
        "query($id: String!, $c: String) { found: agenda(id: $id, customerId: $c) { other: progressId customerId } }"
    } else {
        "query($id: String!, $c: String) { found: agendaProgress(id: $id, customerId: $c) { other: agendaId customerId } }"
    };
    let found = c.graphql(query, serde_json::json!({"id": id, "c": customer})).await.ok()?;
    let other = found["found"]["other"].as_str()?;
    let owner = found["found"]["customerId"].as_str()?;
    (other != id).then(|| (other.to_string(), owner.to_string()))
}

/// When `id` reads `customer/id` as the server's log writes an agenda (no customer named), and
/// that customer has that agenda: the customer, and the id `verb` takes for it (its progress id
/// for `progress` and `watch`: review-s41b, an agenda whose progress id differs).
async fn key_reading(
    c: &client::Client,
    verb: Verb,
    id: &str,
    customer: Option<&str>,
) -> Option<(String, String)> {
    let (None, Some((owner, rest))) = (customer, as_key(id)) else { return None };
    let found = c
        .graphql(
            "query($id: String!, $c: String) { agenda(id: $id, customerId: $c) { progressId } }",
            serde_json::json!({"id": rest, "c": owner}),
        )
        .await
        .ok()?;
    let agenda = found["agenda"].as_object()?;
    let keyed = match (verb.progress_id, agenda.get("progressId").and_then(|p| p.as_str())) {
        (true, Some(progress_id)) => progress_id.to_string(),
        _ => rest.to_string(),
    };
    Some((owner, keyed))
}

/// An id that reads `customer/id` may name two agendas the caller sees: the one whose id (or
/// progress id, for `progress` and `watch`) it is — a customer may choose ids with `/` — and
/// customer `customer`'s agenda `id`, as the server's log writes it (`keyed`). Neither is
/// taken for the other (hostile27: acme's agenda "globex/gf1" answered an admin's `pop audit
/// globex/gf1`, and took the cancel meant for globex's `gf1`; hostile28: the same through a
/// progress id): the caller names the one it means, told what to name for each.
async fn refuse_two_readings(
    c: &client::Client,
    verb: Verb,
    id: &str,
    keyed: Option<&(String, String)>,
) -> Result<()> {
    let Some((owner, keyed)) = keyed else { return Ok(()) };
    let query = if verb.progress_id {
        "query($id: String!) { found: agendaProgress(id: $id) { customerId } }"
    } else {
        "query($id: String!) { found: agenda(id: $id) { customerId } }"
    };
    let given = c.graphql(query, serde_json::json!({"id": id})).await.ok();
    let Some(holder) = given.as_ref().and_then(|g| g["found"]["customerId"].as_str()) else {
        return Ok(());
    };
    anyhow::bail!(
        "{id:?} names two agendas: customer {holder:?}'s of {} {id:?}, and customer {owner:?}'s \
         that the server's log writes so; name the one you mean: {}, or {}",
        verb.takes(),
        output::naming(id, holder),
        output::naming(keyed, owner)
    )
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.to_string().contains("NOT_FOUND")
}

/// `customer/id`, when `id` reads as the server's log writes an agenda (the customer's `/` and
/// `%` escaped: [`pop_domain::agenda::key::key`]).
fn as_key(id: &str) -> Option<(String, &str)> {
    pop_domain::agenda::key::split(id)
        .filter(|(owner, rest)| !owner.trim().is_empty() && !rest.trim().is_empty())
}

async fn run(command: cli::Command) -> Result<()> {
    match command {
        cli::Command::Serve(args) => serve::run(*args).await,
        cli::Command::Log(args) => log_cmd::run(args).await,
        cli::Command::Demo(args) => demo::run(args).await,
        cli::Command::Init { client, init } => {
            let spec = verbs::InitSpec {
                pool: init.pool,
                customer: init.customer,
                insight: init.insight,
                types: init.types,
                queue_size: init.queue_size,
            };
            verbs::init_cmd(&client::Client::new(&client)?, &spec).await
        }
        cli::Command::Submit { client, file, watch, follow_retries, json } => {
            let then = watch.then_some(watch::Watching { follow_retries });
            tour::submit(&client::Client::new(&client)?, &file, json, then).await
        }
        cli::Command::Run { client, template, payload, customer, watch, follow_retries, json } => {
            let c = client::Client::new(&client)?;
            let then = watch.then_some(watch::Watching { follow_retries });
            verbs::run(&c, &template, payload.as_deref(), customer.as_deref(), json, then).await
        }
        cli::Command::Progress { client, id, customer, json, as_of } => {
            let c = client::Client::new(&client)?;
            by_id_or_key(&c, Verb::PROGRESS, &id, customer.as_deref(), async |id, customer| {
                tour::progress(&c, id, customer, json, as_of.as_deref()).await
            })
            .await
        }
        cli::Command::Verify(args) => verify_cmd::run(args).await,
        cli::Command::Audit { client, id, customer, json } => {
            let c = client::Client::new(&client)?;
            by_id_or_key(&c, Verb::AGENDA, &id, customer.as_deref(), async |id, customer| {
                audit::run(&c, id, customer, json).await
            })
            .await
        }
        cli::Command::Watch { client, id, customer, follow_retries } => {
            let c = client::Client::new(&client)?;
            by_id_or_key(&c, Verb::PROGRESS, &id, customer.as_deref(), async |id, customer| {
                watch::watch(&c, id, customer, watch::Watching { follow_retries }).await
            })
            .await
        }
        cli::Command::Agendas { client, filter, json } => {
            verbs::agendas(&client::Client::new(&client)?, &filter, json).await
        }
        cli::Command::Cancel { client, id, reason, customer, json } => {
            let c = client::Client::new(&client)?;
            by_id_hinting_key(&c, Verb::AGENDA, &id, customer.as_deref(), async |id, customer| {
                verbs::cancel(&c, id, customer, reason.as_deref(), json).await
            })
            .await
        }
        cli::Command::Rerun { client, id, mode, reset, customer, json } => {
            let mut flags: Vec<String> = match mode {
                Some(cli::RerunMode::ResetAll) => vec!["resetAll".into()],
                Some(cli::RerunMode::Continue) => vec!["continue".into()],
                Some(cli::RerunMode::SkipExecution) => vec!["skipExecution".into()],
                None => Vec::new(),
            };
            if !reset.is_empty() {
                flags.push(format!("operationsToReset={}", reset.join(",")));
            }
            let c = client::Client::new(&client)?;
            by_id_hinting_key(&c, Verb::AGENDA, &id, customer.as_deref(), async |id, customer| {
                verbs::rerun(&c, id, customer, &flags, json).await
            })
            .await
        }
        cli::Command::Events { client, id, customer, first, after, json } => {
            let c = client::Client::new(&client)?;
            by_id_or_key(&c, Verb::AGENDA, &id, customer.as_deref(), async |id, customer| {
                verbs::events(&c, id, customer, first, after.as_deref(), json).await
            })
            .await
        }
        cli::Command::Insights { client, json } => {
            verbs::configs(&client::Client::new(&client)?, verbs::ConfigKind::Insights, json).await
        }
        cli::Command::Pools { client, json } => {
            verbs::configs(&client::Client::new(&client)?, verbs::ConfigKind::Pools, json).await
        }
        cli::Command::Customers { client, json } => {
            verbs::configs(&client::Client::new(&client)?, verbs::ConfigKind::Customers, json).await
        }
        cli::Command::Templates { client, json } => {
            verbs::configs(&client::Client::new(&client)?, verbs::ConfigKind::Templates, json).await
        }
        cli::Command::Rebuild(args) => rebuild::run(args).await,
        cli::Command::Export(args) => transfer_cmd::export(args).await,
        cli::Command::Import(args) => transfer_cmd::import(args).await,
        cli::Command::Reap(args) => reap::run(args).await,
        cli::Command::Worker(args) => worker::run(args).await,
        cli::Command::Gql { client, query, variables } => {
            tour::gql(&client::Client::new(&client)?, &query, &variables).await
        }
    }
}

/// The cause chain of an error on one line, each cause once: a context that already quotes its
/// source's text (`reading x: No such file`) does not repeat it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
