//! The CLI helpers of the five-minute tour: `pop submit FILE.json` (`--watch`, `--json`),
//! `pop progress ID` and `pop gql`; `pop watch` is [`crate::watch`].

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use pop_app::asof::EPOCH_MS_DIGITS;

use crate::client::Client;
use crate::output::{self, out};

/// What `pop progress --json` shows: the whole AgendaProgress, outputs and diagnostics included.
const JSON_FIELDS: &str = "id agendaId customerId title linkId externalId processingState \
    processingStateMessage percentComplete attemptsCompleted maximumAttempts retryDue retryDueTime \
    startedTime completedTime params diagnosticEvents { message time payload } \
    operationProgress { operation processingState processingStateMessage percentComplete \
    attemptCount resultPayload diagnosticEvents { message payload } }";

/// Largest agenda file `pop submit` reads: the server's own body limit.
const MAX_AGENDA_FILE_BYTES: u64 = pop_api::config::MAX_REQUEST_BODY_BYTES as u64;

/// `pop submit FILE`: submits the agenda; `--json` prints the answer as JSON, `--watch` then
/// watches it (exit codes as `pop watch`).
pub async fn submit(
    client: &Client,
    file: &Path,
    as_json: bool,
    then_watch: Option<crate::watch::Watching>,
) -> Result<()> {
    let agenda = read_agenda(file)?;
    // An agenda without an id gets one here rather than on the server: the client sends a
    // request again while the server answers UNAVAILABLE, and a write whose answer was lost
    // (the database gone mid-commit) then meets itself, not a second agenda (ops3am21: one
    // `pop submit` made two agendas and printed one).
    let mut sent = agenda.clone();
    let made_id = match (sent.as_object_mut(), agenda.get("id")) {
        (Some(object), None | Some(Value::Null)) => {
            let id = uuid::Uuid::now_v7().to_string();
            object.insert("id".into(), json!(id));
            Some(id)
        }
        _ => None,
    };
    let submitted = client
        .graphql(
            "mutation($a: JSON!) { submitAgenda(agenda: $a) { agenda { id progressId customerId \
             agendaInsight { resourcePoolId insightId } } progress { processingState \
             processingStateMessage } position cid } }",
            json!({"a": sent}),
        )
        .await;
    let data = match (submitted, made_id) {
        (Ok(data), _) => data,
        (Err(e), Some(id))
            if e.to_string().starts_with("CONFLICT")
                && e.to_string().contains("already exists") =>
        {
            stored_earlier(client, &id, &agenda).await.map_err(|_| submit_error(e, &agenda))?
        }
        // An answer that leaves the outcome open (a deadline passed while the store stalled,
        // the connection broke after the send): the write may commit later. Read back once;
        // if it is not there yet, say the id it was sent with (ops3am22: the agendas were
        // stored after the stall, and a second `pop submit` made each a second time).
        (Err(e), Some(id)) if !refused_for_good(&e) => {
            match stored_earlier(client, &id, &agenda).await {
                Ok(data) => data,
                // The server's last answer said nothing was done, and the agenda is not there
                // (operator58 L2: thirty "nothing was done" lines, then "whether it was stored
                // is not known").
                Err(_) if nothing_done(&e) => return Err(submit_error(e, &agenda)),
                Err(_) => {
                    return Err(anyhow::anyhow!(
                        "{e:#}\npop: the agenda was sent with id {id:?}; whether it was stored is not \
                     known yet: `{}` tells once the server answers. To send it again without \
                     making a second agenda, put \"id\": \"{id}\" in {} first",
                        output::command(
                            "progress",
                            agenda.get("progressId").and_then(Value::as_str).unwrap_or(&id),
                            agenda.get("customerId").and_then(Value::as_str),
                            &[]
                        ),
                        file.display()
                    ));
                }
            }
        }
        (Err(e), _) => return Err(submit_error(e, &agenda)),
    };
    let r = &data["submitAgenda"];
    warn_default_insight_unmatched(client, &agenda, &r["agenda"]).await;
    let progress_id = output::text(&r["agenda"], "progressId").to_string();
    if as_json {
        output::json(r);
    } else {
        out!("submitted agenda {}", output::text(&r["agenda"], "id"));
        out!("  progress id  {progress_id}");
        out!(
            "  insight      {} (pool {})",
            output::text(&r["agenda"]["agendaInsight"], "insightId"),
            output::text(&r["agenda"]["agendaInsight"], "resourcePoolId")
        );
        out!(
            "  state        {} / {}",
            output::text(&r["progress"], "processingState"),
            output::text(&r["progress"], "processingStateMessage")
        );
        if then_watch.is_none() {
            let customer = Some(output::text(&r["agenda"], "customerId"));
            out!("watch it:     {}", output::command("watch", &progress_id, customer, &[]));
        }
    }
    if let Some(watching) = then_watch {
        let customer = output::text(&r["agenda"], "customerId");
        return crate::watch::watch(client, &progress_id, Some(customer), watching).await;
    }
    Ok(())
}

/// Warns when the agenda's `params.defaultInsight` is neither the id nor the title of the
/// insight it was bound to: it is a preference among the insights that match (DOMAIN.md §6), so
/// one that names none of them is passed over without an error (newcomer60 M2: a misspelt or
/// not yet created insight bound the agenda to another without a word).
async fn warn_default_insight_unmatched(client: &Client, sent: &Value, bound: &Value) {
    let key = pop_domain::params::keys::DEFAULT_INSIGHT;
    // As the binding reads it: text as it is, a number as its digits (renew60 L2: trimmed
    // here and not there, the warning named an insight that took the agenda).
    let wanted = match &sent["params"][key] {
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => return,
        other => {
            eprintln!(
                "WARNING: params.defaultInsight is {other}: not an insight's id or title; it \
                 was passed over"
            );
            return;
        }
    };
    let wanted = wanted.as_str();
    if wanted.is_empty() {
        return;
    }
    let insight = output::text(&bound["agendaInsight"], "insightId");
    if insight.eq_ignore_ascii_case(wanted) {
        return;
    }
    let title = client
        .graphql("query($i: String!) { insight(id: $i) { title } }", json!({"i": insight}))
        .await
        .ok()
        .and_then(|d| d["insight"]["title"].as_str().map(str::to_string));
    if title.is_some_and(|t| t.eq_ignore_ascii_case(wanted)) {
        return;
    }
    eprintln!(
        "WARNING: params.defaultInsight {wanted:?} is neither the id nor the title of an insight \
         that takes this agenda: it was bound to insight {insight:?}, the oldest that matches \
         (defaultInsight only chooses among the matching ones; `pop insights` lists them)"
    );
}

/// Whether `e` is the server's UNAVAILABLE answer that the request was not done (its store
/// could not serve it), not one whose write may still be stored.
fn nothing_done(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    text.starts_with("UNAVAILABLE:") && text.contains("nothing was done")
}

/// Whether `e` is an answer that nothing was stored: a refusal of the request itself (not an
/// outage, a deadline or a broken connection, after which a write may still commit).
fn refused_for_good(e: &anyhow::Error) -> bool {
    const REFUSALS: [&str; 9] = [
        "VALIDATION",
        "BAD_REQUEST",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "CONFLICT",
        "QUOTA_EXCEEDED",
        "BUSY",
        "QUERY_TOO_COSTLY",
    ];
    let text = e.to_string();
    REFUSALS.iter().any(|code| text.starts_with(&format!("{code}:")))
}

/// The agenda this command made the id of, stored by an earlier send whose answer was lost
/// (the id is fresh: nothing else can have used it), read back in the shape the submission
/// answers.
async fn stored_earlier(client: &Client, id: &str, agenda: &Value) -> Result<Value> {
    let customer = agenda.get("customerId").and_then(Value::as_str);
    let progress_id = agenda.get("progressId").and_then(Value::as_str).unwrap_or(id);
    let data = client
        .graphql(
            "query($id: String!, $p: String!, $c: String) { agenda(id: $id, customerId: $c) { id \
             progressId customerId cid agendaInsight { resourcePoolId insightId } } \
             agendaProgress(id: $p, customerId: $c) { processingState processingStateMessage } }",
            json!({"id": id, "p": progress_id, "c": customer}),
        )
        .await?;
    if data["agenda"].is_null() {
        bail!("agenda {id:?} is not readable");
    }
    eprintln!(
        "pop: the first send's answer was lost (the server was unavailable or did not answer in \
         time); it was stored, and this is that agenda"
    );
    // The shape a submission answers (its position is the first send's, not known here).
    let cid = data["agenda"]["cid"].clone();
    let mut agenda = data["agenda"].clone();
    if let Some(object) = agenda.as_object_mut() {
        object.remove("cid");
    }
    Ok(json!({"submitAgenda": {"agenda": agenda, "progress": data["agendaProgress"],
        "position": null, "cid": cid}}))
}

/// The agenda JSON of `file`, bounded in size; a misspelt top-level key is named with the key
/// it probably meant, before the server would only say an operation is missing.
fn read_agenda(file: &Path) -> Result<Value> {
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
    refuse_wide_integer(&file.display().to_string(), &text)?;
    // POP's `createAgenda` body is a list (newcomer57 L6: it was refused as an agenda without
    // a customer or operations).
    if agenda.get("agendas").is_some_and(Value::is_array) {
        bail!(
            "VALIDATION: {}: this is a list of agendas (POP's createAgenda body, {{\"agendas\": \
             [...]}}); `pop submit` takes one agenda: put each in a file of its own, or POST the \
             list to /pop/resourcepool/service/createAgenda",
            file.display()
        );
    }
    let source = file.display().to_string();
    // A misspelt key, at the top level or in an operation, is refused: the server ignores
    // unknown fields for POP's clients (newcomer60 M1: `"parms": {"dependsOn": …}` was dropped
    // without a word, changing the DAG).
    if let Some((_, first)) = pop_domain::wire::misspelt_agenda_keys(&agenda).first() {
        bail!("VALIDATION: {source}: {first}");
    }
    if let Some(object) = agenda.as_object() {
        warn_near_params(&source, object.get("params"), "params");
        let operations = object.get("operations").and_then(Value::as_array);
        for (i, operation) in operations.into_iter().flatten().enumerate() {
            let Some(operation) = operation.as_object() else { continue };
            warn_near_params(&source, operation.get("params"), &format!("operations[{i}].params"));
        }
    }
    Ok(agenda)
}

/// Warns of a key of `params` close to one pop reads (`dependsOn`, `defaultInsight`, …) but not
/// it: params are free, so it is kept, but pop will not read it.
fn warn_near_params(source: &str, params: Option<&Value>, place: &str) {
    for warning in near_params(source, params, place) {
        eprintln!("{warning}");
    }
}

/// [`warn_near_params`]'s warnings.
fn near_params(source: &str, params: Option<&Value>, place: &str) -> Vec<String> {
    let Some(params) = params.and_then(Value::as_object) else { return Vec::new() };
    let mut said = Vec::new();
    for key in params.keys() {
        if PARAM_KEYS.contains(&key.as_str()) {
            continue;
        }
        if let Some(near) = did_you_mean(key, PARAM_KEYS) {
            said.push(format!(
                "WARNING: {source}: {place} has {key:?}, which pop does not read; did you mean \
                 {near:?}? (kept as a param of your own)"
            ));
        }
    }
    said
}

/// The params pop reads itself (of an agenda or an operation).
const PARAM_KEYS: &[&str] = &[
    pop_domain::params::keys::DO_NOT_RUN,
    pop_domain::params::keys::MAXIMUM_ATTEMPTS,
    pop_domain::params::keys::DEFAULT_INSIGHT,
    pop_domain::params::keys::EXTERNAL_ID,
    pop_domain::params::keys::PRIORITY,
    pop_domain::params::keys::DEPENDS_ON,
    pop_domain::params::keys::GENERATED_OPERATION_PARENT,
    // (renew60 M1: a misspelt generator key let a fan-out agenda succeed without fanning out.)
    pop_domain::params::keys::GENERATOR,
];

/// An integer beyond 64 bits in `text` (read from `source`), refused as the server refuses it:
/// read into a `Value` here it would be sent as a rounded float, which the server cannot tell
/// from one the user meant (newcomer57 M1: `pop submit` stored 123456789012345678901234 as
/// 1.2345678901234569e+23).
pub(crate) fn refuse_wide_integer(source: &str, text: &str) -> Result<()> {
    match pop_api::request::refuse_wide_integer(text.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) => match e.problems.first() {
            Some(p) => bail!("VALIDATION: {source}: {}: {}", p.field, p.message),
            None => bail!("VALIDATION: {source}: {}", e.message),
        },
    }
}

/// The closest of `candidates` to `word` when it is a likely misspelling (edit distance at
/// most 2, or the same but for case or a trailing `s`).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (pop_domain::text::edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A submit the server refused, told once and without the id it generated for the attempt
/// (an operation type no insight maps: the server's message names the mapped types).
fn submit_error(e: anyhow::Error, agenda: &Value) -> anyhow::Error {
    let text = e.to_string();
    let given_id = agenda["id"].as_str().is_some_and(|i| !i.trim().is_empty());
    // What to do next, where the server's answer cannot know (newcomer6).
    if text.contains("customer \"") && text.contains("does not exist") {
        return anyhow::anyhow!(
            "{text} (`pop init --customer <id>` creates a customer, with a pool and an insight)"
        );
    }
    if given_id && text.starts_with("CONFLICT") && text.contains("already exists") {
        return anyhow::anyhow!(
            "{text} (an agenda id is used once: if an earlier submission of this file went \
             unanswered, it was stored — `pop progress` shows it; to run it again as a new \
             agenda, leave \"id\" out of the file)"
        );
    }
    if given_id || !text.contains("agenda \"") {
        return e;
    }
    // The generated id means nothing to the user: drop `agenda "<uuid>"` mentions.
    let mut cleaned = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("agenda \"") {
        cleaned.push_str(&rest[..at]);
        let after = &rest[at + "agenda \"".len()..];
        match after.find('"') {
            Some(close) if after[..close].len() >= 32 => {
                cleaned.push_str("the agenda");
                rest = &after[close + 1..];
            }
            _ => {
                cleaned.push_str("agenda \"");
                rest = after;
            }
        }
    }
    cleaned.push_str(rest);
    anyhow::anyhow!(cleaned)
}

pub async fn progress(
    client: &Client,
    id: &str,
    customer: Option<&str>,
    as_json: bool,
    as_of: Option<&str>,
) -> Result<()> {
    // A bare number (or `<commit>/<prepare>`) is a log position, unless it is epoch
    // milliseconds (as REST's `?asOf=` reads it: `pop_app::asof::EPOCH_MS_DIGITS` digits or
    // more); anything else a time.
    let as_of = match as_of.map(str::trim) {
        None => None,
        Some(text) if is_position(text) => Some(json!({"position": text})),
        Some(text) => Some(json!({"time": as_of_time(text)?})),
    };
    if !as_json && as_of.is_none() {
        let p = crate::watch::find(client, id, customer).await?;
        print_progress(&p);
        print_holding(client, &p).await?;
        return Ok(());
    }
    let data = client
        .graphql(
            &format!(
                "query($id: String!, $c: String, $asOf: AsOfInput) {{ agendaProgress(id: $id, customerId: $c, asOf: $asOf) {{ {JSON_FIELDS} }} }}"
            ),
            json!({"id": id, "c": customer, "asOf": as_of}),
        )
        .await?;
    let p = &data["agendaProgress"];
    let when =
        as_of.as_ref().and_then(|a| a.get("time").or(a.get("position"))).and_then(Value::as_str);
    if p.is_null() {
        match when {
            Some(when) => bail!(
                "NOT_FOUND: agenda progress {id:?} did not exist as of {when}, is not \
                 visible to this token, or was deleted since by the data reaper (a reaped \
                 agenda keeps no history: `pop export` keeps it){}",
                client.cid_note()
            ),
            None => bail!(
                "NOT_FOUND: no agenda progress {id:?} visible to this token{}",
                client.cid_note()
            ),
        }
    }
    if as_json {
        output::json(p);
    } else {
        // Said first, so a past state is never read as the present one.
        if let Some(when) = when {
            out!("as of {when} (folded from the log; not the live state):");
        }
        print_progress(p);
    }
    Ok(())
}

/// Whether `--as-of` names a log position: digits (and `/`), fewer of them than epoch
/// milliseconds have.
fn is_position(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'/')
        && (text.contains('/') || text.len() < EPOCH_MS_DIGITS)
}

/// `--as-of`'s time as RFC 3339: epoch milliseconds (as REST reads them), or text read by the
/// domain's one parser of text times
/// ([`pop_domain::model::epoch_ms::parse_text`]: RFC 3339, or UTC as `2026-12-02 14:02[:00]`
/// or `2026-12-02`); anything else is a usage error that lists these (the server's own
/// message names GraphQL's parser).
fn as_of_time(text: &str) -> Result<String> {
    let epoch_ms = (text.len() >= EPOCH_MS_DIGITS && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<i64>().ok().and_then(chrono::DateTime::from_timestamp_millis))
        .flatten();
    match epoch_ms.or_else(|| pop_domain::model::epoch_ms::parse_text(text)) {
        Some(t) => Ok(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        None => bail!(
            "--as-of {text:?} is neither a log position (42) nor a time: write \
             2026-12-02T14:02:00Z (any RFC 3339 offset), or 2026-12-02 14:02[:00] or 2026-12-02 \
             (both UTC)"
        ),
    }
}

/// An AgendaProgress as text: its headline, one line per operation, and for each failed
/// operation (and a failed agenda) its last diagnostic.
fn print_progress(p: &Value) {
    for line in progress_lines(p) {
        out!("{line}");
    }
}

/// [`print_progress`]'s lines.
fn progress_lines(p: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    // When (ops3am16: a failure read as final while its retry was due; reaudit59 L5: "after
    // the backoff" on a server that runs no retry process).
    let retry = match (p["retryDue"].as_bool(), p["retryDueTime"].as_str()) {
        (Some(true), Some(at)) => format!("  retry due at {at}"),
        (Some(true), None) => {
            "  retry due (this server runs no retry process: it runs where one does)".to_string()
        }
        _ => String::new(),
    };
    lines.push(format!(
        "{} ({})  {} / {}  {:.1}%  attempts {}/{}{}",
        output::one_line(output::text(p, "id")),
        output::one_line(output::text(p, "customerId")),
        output::text(p, "processingState"),
        // A worker's text on one line (review-s40: a message holding a newline printed a
        // made-up line).
        output::one_line(output::text(p, "processingStateMessage")),
        p["percentComplete"].as_f64().unwrap_or(0.0),
        p["attemptsCompleted"],
        p["maximumAttempts"],
        retry
    ));
    for op in p["operationProgress"].as_array().into_iter().flatten() {
        let word = output::outcome(op);
        lines.push(format!(
            "  {:<24} {:<9} {:>6.1}%  {}",
            output::one_line(output::text(op, "operation")),
            output::text(op, "processingState"),
            op["percentComplete"].as_f64().unwrap_or(0.0),
            if word == "failed" {
                "FAILED".to_string()
            } else {
                output::one_line(output::text(op, "processingStateMessage"))
            }
        ));
        if word == "failed" {
            let why = output::last_diagnostic(op).unwrap_or_else(|| "(no diagnostic)".into());
            lines.push(format!("      why: {why}"));
        }
    }
    // The agenda's own last word, failed or not (ops3am16: a reclaim's "timed out", which used
    // up an attempt, showed only in --json); said as the last, which may be an earlier
    // attempt's (review-s41b).
    // With its time; under an agenda that succeeded it is not why anything failed (newcomer60
    // L5: a cancel's reason read as the last word of the rerun that then succeeded).
    if let Some(why) = output::last_diagnostic(p) {
        let at = output::diagnostic_time(p);
        if output::outcome(p) == "succeeded" {
            lines.push(format!(
                "  an earlier diagnostic of the agenda{at}, before it succeeded: {why}"
            ));
        } else {
            lines.push(format!("  the agenda's last diagnostic{at}: {why}"));
        }
    }
    lines
}

/// Who holds a running agenda and until when (ops3am16: a dead worker's agenda looked like a
/// slow one; only the reclaimer's log said whose lease ran out).
async fn print_holding(client: &Client, p: &Value) -> Result<()> {
    if output::text(p, "processingState") == "COMPLETE" {
        return Ok(());
    }
    let data = client
        .graphql(
            "query($id: String!, $c: String) { agendaHolding(id: $id, customerId: $c) { holder \
             expires expiresInMs } }",
            json!({"id": output::text(p, "id"), "c": output::text(p, "customerId")}),
        )
        .await?;
    let h = &data["agendaHolding"];
    if h.is_null() {
        return Ok(());
    }
    let left = h["expiresInMs"].as_i64().unwrap_or(0);
    let when = if left > 0 {
        format!("its lease ends in {} s ({})", (left + 999) / 1000, output::text(h, "expires"))
    } else {
        // (ops3am17: during a store outage a live worker's reports cannot land either.)
        format!(
            "its lease ended at {} without a report reaching the server: the holder is gone, or \
             cannot report (is the server ready? `/readyz`); the reclaimer requeues the agenda \
             on its next pass, but after a server start or a store outage only once the store \
             has served for a lease's length (a live holder may still be reporting: \
             `pop_reclaimer_leases_waiting` and the server's log say how long)",
            output::text(h, "expires")
        )
    };
    out!("  held by {}: {when}", output::one_line(output::text(h, "holder")));
    Ok(())
}

/// `pop gql`: one query or mutation, its data printed as pretty JSON.
pub async fn gql(client: &Client, query: &str, variables: &str) -> Result<()> {
    let parsed: Value =
        serde_json::from_str(variables).context("--variables must be a JSON object")?;
    refuse_wide_integer("--variables", variables)?;
    let data = client.graphql(query, parsed).await?;
    output::json(&data);
    Ok(())
}

#[cfg(test)]
mod outcome_tests {
    use super::{nothing_done, refused_for_good};

    /// The server's UNAVAILABLE says whether the write may still be stored; a submit tells
    /// the two apart (operator58 L2: a full disk's "nothing was done" ended in "whether it
    /// was stored is not known").
    #[test]
    fn an_unavailable_answer_says_whether_anything_was_done() {
        let full = anyhow::anyhow!(
            "UNAVAILABLE: the event store cannot write (the disk is full); nothing was done: \
             retry in 1 s (cid c1)"
        );
        let unknown = anyhow::anyhow!(
            "UNAVAILABLE: the event store failed while appending, past the point where the \
             write may be stored: whether it was is not known; read it back (cid c2)"
        );
        assert!(nothing_done(&full) && !refused_for_good(&full));
        assert!(!nothing_done(&unknown) && !refused_for_good(&unknown));
        assert!(!nothing_done(&anyhow::anyhow!("VALIDATION: nothing was done")));
    }
}

#[cfg(test)]
mod as_of_tests {
    use super::{as_of_time, is_position};

    #[test]
    fn as_of_reads_rfc_3339_and_utc_dates_and_names_the_forms_otherwise() {
        assert_eq!(as_of_time("2026-12-02T14:02:00Z").unwrap(), "2026-12-02T14:02:00Z");
        assert_eq!(as_of_time("2026-12-02T15:02:00+01:00").unwrap(), "2026-12-02T14:02:00Z");
        assert_eq!(as_of_time("2026-12-02 14:02").unwrap(), "2026-12-02T14:02:00Z");
        assert_eq!(as_of_time("2026-12-02 14:02:00.5").unwrap(), "2026-12-02T14:02:00.500Z");
        assert_eq!(as_of_time("2026-12-02").unwrap(), "2026-12-02T00:00:00Z");
        // Epoch milliseconds, as REST's `?asOf=` and POP's JSON times have them.
        assert_eq!(as_of_time("1796221920000").unwrap(), "2026-12-02T14:32:00Z");
        assert!(is_position("42") && is_position("7/3") && is_position("17962195200/3"));
        assert!(!is_position("1796221920000") && !is_position(""));
        let e = as_of_time("yesterday").unwrap_err().to_string();
        assert!(e.contains("neither a log position") && e.contains("2026-12-02T14:02:00Z"), "{e}");
    }
}

#[cfg(test)]
mod submit_tests {
    use super::refused_for_good;

    /// A refusal says nothing was stored; a deadline, an outage or a broken connection leave
    /// the outcome open, and `pop submit` then reads back and names the id it sent (ops3am22).
    #[test]
    fn only_a_refusal_of_the_request_says_nothing_was_stored() {
        for refused in ["VALIDATION: agenda.operations: …", "CONFLICT: agenda is COMPLETE"] {
            assert!(refused_for_good(&anyhow::anyhow!("{refused}")), "{refused}");
        }
        for open in [
            "DEADLINE_EXCEEDED: request: not answered within the deadline",
            "UNAVAILABLE: the event store went away",
            "INTERNAL: …",
            "error sending request for url (http://127.0.0.1:8080/graphql)",
        ] {
            assert!(!refused_for_good(&anyhow::anyhow!("{open}")), "{open}");
        }
    }
}

#[cfg(test)]
mod newcomer_tests {
    use super::{progress_lines, read_agenda};
    use serde_json::json;

    fn agenda_file(dir: &tempfile::TempDir, body: &serde_json::Value) -> std::path::PathBuf {
        let path = dir.path().join("agenda.json");
        std::fs::write(&path, body.to_string()).unwrap();
        path
    }

    /// A misspelt key inside an operation is named as one at the top level is (newcomer60 M1:
    /// `"parms": {"dependsOn": …}` and `"paylod"` were dropped by the server without a word).
    #[test]
    fn a_misspelt_operation_key_is_named_with_the_key_it_meant() {
        let dir = tempfile::tempdir().unwrap();
        for (key, meant) in [("parms", "params"), ("paylod", "payload"), ("Type", "type")] {
            // (The operation without the key it meant: beside it, a key of its own.)
            let mut second = json!({"name": "b", "type": "log", key: {"dependsOn": "a"}});
            second.as_object_mut().unwrap().remove(meant);
            let body = json!({"customerId": "acme", "operations": [
                {"name": "a", "type": "log"}, second]});
            let e = read_agenda(&agenda_file(&dir, &body)).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown key {key:?} in operations[1]")), "{e}");
            assert!(e.contains(&format!("did you mean {meant:?}")), "{e}");
        }
        // Keys of its own that are not near one are the server's to ignore, as before; nor are
        // short ones two letters from one (review60 L4), nor ones near a key it has (renew60 L1).
        let body = json!({"customerId": "acme", "operations": [
            {"name": "a", "type": "log", "params": {"dependOn": "x"}, "comment": "mine",
             "ts": 1, "time": 2, "note": "n", "node": "m", "ids": [1], "nam": "x"}]});
        assert!(read_agenda(&agenda_file(&dir, &body)).is_ok());
    }

    /// A param near one pop reads is warned of, the generator's too (renew60 M1: a misspelt
    /// generator key let a fan-out agenda succeed without fanning out).
    #[test]
    fn a_param_near_one_pop_reads_is_warned_of() {
        let params = json!({"agenda.operation.generater": "x", "dependOn": "a", "mine": 1,
            "agenda.operation.generator": "ok"});
        let said = super::near_params("f.json", Some(&params), "operations[1].params");
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said.iter().any(|w| w.contains("did you mean \"agenda.operation.generator\"")));
        assert!(said.iter().any(|w| w.contains("did you mean \"dependsOn\"")));
    }

    fn succeeded_after_a_cancel() -> serde_json::Value {
        json!({"id": "p1", "customerId": "acme", "processingState": "COMPLETE",
            "processingStateMessage": "succeeded", "percentComplete": 100.0,
            "attemptsCompleted": 2, "maximumAttempts": 3,
            "diagnosticEvents": [{"message": "Agenda cancelled: tour",
                "time": "2026-12-07T10:00:00.000Z"}],
            "operationProgress": [{"operation": "a", "processingState": "COMPLETE",
                "processingStateMessage": "succeeded", "percentComplete": 100.0}]})
    }

    /// An agenda that succeeded after a cancel and a rerun does not show the cancel's reason
    /// as its last word (newcomer60 L5); one that did not succeed does, with its time.
    #[test]
    fn a_diagnostic_under_a_succeeded_agenda_is_said_to_be_earlier() {
        let mut p = succeeded_after_a_cancel();
        let lines = progress_lines(&p);
        let last = lines.last().unwrap();
        assert_eq!(
            last,
            "  an earlier diagnostic of the agenda (at 2026-12-07T10:00:00.000Z), before it \
             succeeded: Agenda cancelled: tour"
        );
        p["processingState"] = json!("WAITING");
        p["processingStateMessage"] = json!("added");
        let lines = progress_lines(&p);
        assert_eq!(
            lines.last().unwrap(),
            "  the agenda's last diagnostic (at 2026-12-07T10:00:00.000Z): Agenda cancelled: tour"
        );
    }
}
