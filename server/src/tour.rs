//! The CLI helpers of the five-minute tour: `pop submit FILE.json`, `pop progress ID` and
//! `pop watch ID` (live bars per operation, fed by a subscription).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::Client;

/// The AgendaProgress fields the CLI shows.
const PROGRESS_FIELDS: &str = "id agendaId customerId title linkId processingState \
    processingStateMessage percentComplete attemptsCompleted maximumAttempts \
    operationProgress { operation processingState processingStateMessage percentComplete \
    attemptCount diagnosticEvents { message } }";

/// What `pop progress --json` shows: the whole AgendaProgress, outputs and diagnostics included.
const JSON_FIELDS: &str = "id agendaId customerId title linkId externalId processingState \
    processingStateMessage percentComplete attemptsCompleted maximumAttempts startedTime \
    completedTime params diagnosticEvents { message payload } \
    operationProgress { operation processingState processingStateMessage percentComplete \
    attemptCount resultPayload diagnosticEvents { message payload } }";

/// Largest agenda file `pop submit` reads; the server's own body limit is 2 MiB.
const MAX_AGENDA_FILE_BYTES: u64 = 2 << 20;

pub async fn submit(client: &Client, file: &Path) -> Result<()> {
    let size =
        std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    if size > MAX_AGENDA_FILE_BYTES {
        bail!(
            "{} is {size} bytes; an agenda may be at most {MAX_AGENDA_FILE_BYTES}",
            file.display()
        );
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let agenda: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let data = client
        .graphql(
            "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id progressId \
             agendaInsight { resourcePoolId insightId } } progress { processingState \
             processingStateMessage } position cid } }",
            json!({"a": agenda}),
        )
        .await?;
    let r = &data["submitAgenda"];
    println!("submitted agenda {}", r["agenda"]["id"].as_str().unwrap_or("?"));
    println!("  progress id  {}", r["agenda"]["progressId"].as_str().unwrap_or("?"));
    println!(
        "  insight      {} (pool {})",
        r["agenda"]["agendaInsight"]["insightId"].as_str().unwrap_or("?"),
        r["agenda"]["agendaInsight"]["resourcePoolId"].as_str().unwrap_or("?")
    );
    println!(
        "  state        {} / {}",
        r["progress"]["processingState"].as_str().unwrap_or("?"),
        r["progress"]["processingStateMessage"].as_str().unwrap_or("")
    );
    println!(
        "  position     {}   cid {}",
        r["position"].as_str().unwrap_or("?"),
        r["cid"].as_str().unwrap_or("?")
    );
    println!("watch it:     pop watch {}", r["agenda"]["progressId"].as_str().unwrap_or("?"));
    Ok(())
}

pub async fn progress(client: &Client, id: &str, as_json: bool, as_of: Option<&str>) -> Result<()> {
    // A bare number (or `<commit>/<prepare>`) is a log position; anything else a time, which
    // the server checks.
    let as_of = as_of.map(str::trim).map(|text| {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'/') {
            json!({"position": text})
        } else {
            json!({"time": text})
        }
    });
    let data = client
        .graphql(
            &format!(
                "query($id: String!, $asOf: AsOfInput) {{ agendaProgress(id: $id, asOf: $asOf) {{ {} }} }}",
                if as_json { JSON_FIELDS } else { PROGRESS_FIELDS }
            ),
            json!({"id": id, "asOf": as_of}),
        )
        .await?;
    let p = &data["agendaProgress"];
    if p.is_null() {
        bail!("NOT_FOUND: no agenda progress {id} visible to this token");
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(p)?);
        return Ok(());
    }
    println!(
        "{}  {} / {}  {:.1}%  attempts {}/{}",
        p["id"].as_str().unwrap_or(id),
        p["processingState"].as_str().unwrap_or("?"),
        p["processingStateMessage"].as_str().unwrap_or(""),
        p["percentComplete"].as_f64().unwrap_or(0.0),
        p["attemptsCompleted"],
        p["maximumAttempts"]
    );
    for op in p["operationProgress"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<9} {:>6.1}%  {}",
            op["operation"].as_str().unwrap_or("?"),
            op["processingState"].as_str().unwrap_or("?"),
            op["percentComplete"].as_f64().unwrap_or(0.0),
            op["processingStateMessage"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Draws one bar for the agenda and one per operation, updated by the `agendaProgress`
/// subscription, until the agenda is COMPLETE. Fails (exit code 1) unless it succeeded.
pub async fn watch(client: &Client, id: &str) -> Result<()> {
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:<24} [{bar:30}] {pos:>3}% {msg}")
        .context("progress bar template")?
        .progress_chars("=> ");
    let agenda_bar = bars.add(ProgressBar::new(100).with_style(style.clone()));
    agenda_bar.set_prefix(format!("agenda {}", short(id)));
    let mut op_bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut outcome: Option<String> = None;
    let query = format!(
        "subscription($id: String!) {{ agendaProgress(id: $id) {{ position lagged resync removed \
         progress {{ {PROGRESS_FIELDS} }} }} }}"
    );
    client
        .subscribe(&query, json!({"id": id}), |data| {
            let update = &data["agendaProgress"];
            if update["removed"].as_bool() == Some(true) {
                outcome = Some("removed".into());
                return Ok(false);
            }
            let p = &update["progress"];
            if p.is_null() {
                bail!("NOT_FOUND: no agenda progress {id} visible to this token");
            }
            for op in p["operationProgress"].as_array().into_iter().flatten() {
                let name = op["operation"].as_str().unwrap_or("?").to_owned();
                let bar = op_bars.entry(name.clone()).or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new(100).with_style(style.clone()));
                    bar.set_prefix(format!("  {name}"));
                    bar
                });
                bar.set_position(percent(&op["percentComplete"]));
                bar.set_message(state_text(op));
            }
            agenda_bar.set_position(percent(&p["percentComplete"]));
            agenda_bar.set_message(state_text(p));
            if p["processingState"].as_str() == Some("COMPLETE") {
                outcome = Some(p["processingStateMessage"].as_str().unwrap_or("").to_owned());
                return Ok(false);
            }
            Ok(true)
        })
        .await?;
    for bar in op_bars.values().chain(std::iter::once(&agenda_bar)) {
        bar.abandon();
    }
    match outcome.as_deref() {
        Some(m) if m.eq_ignore_ascii_case("succeeded") => Ok(()),
        Some(m) => bail!("agenda {id} ended {m}"),
        None => bail!("the subscription ended before agenda {id} completed"),
    }
}

/// `pop gql`: one query or mutation, its data printed as pretty JSON.
pub async fn gql(client: &Client, query: &str, variables: &str) -> Result<()> {
    let variables: Value =
        serde_json::from_str(variables).context("--variables must be a JSON object")?;
    let data = client.graphql(query, variables).await?;
    println!("{}", serde_json::to_string_pretty(&data)?);
    Ok(())
}

fn percent(v: &Value) -> u64 {
    v.as_f64().unwrap_or(0.0).clamp(0.0, 100.0).round() as u64
}

fn state_text(p: &Value) -> String {
    format!(
        "{} {}",
        p["processingState"].as_str().unwrap_or("?"),
        p["processingStateMessage"].as_str().unwrap_or("")
    )
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
