//! `pop watch ID`: an agenda's progress, live, until it ends. The id is checked first (an
//! unknown one is NOT_FOUND with a hint, not a bar stuck at 0 %). On a terminal: a bar per
//! operation and one for the agenda, failed and cancelled bars marked by a word and a colour;
//! piped: one line per change and the final state. A failed operation shows its last
//! diagnostic. After a server restart it connects again and resumes after the last position it
//! saw. Ctrl-C stops watching (exit 0; the agenda goes on); a cancelled agenda is exit 0 too,
//! a failed one exit 3 (see [`crate::output`]). A failed attempt whose retry is due is not the
//! outcome: `watch` says so and exits 5, or with `--follow-retries` follows the retry
//! (ops3am16: it exited 3 on the first of three attempts, and a script took the failure as
//! final; review-s41: following by default hung where no retry process runs).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{Client, Disconnected};
use crate::output::{self, EXIT_FAILED, EXIT_RETRY_DUE, Exit, out};

/// How `watch` treats a failed attempt whose automatic retry is due.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watching {
    /// Follow the retry to the outcome (`--follow-retries`) instead of exiting 5.
    pub follow_retries: bool,
}

/// The AgendaProgress fields `watch` and `progress` show.
pub const PROGRESS_FIELDS: &str = "id agendaId customerId title linkId processingState \
    processingStateMessage percentComplete attemptsCompleted maximumAttempts retryDue retryDueTime \
    diagnosticEvents { message time } agendaInsight { insightId } \
    operationProgress { operation processingState processingStateMessage percentComplete \
    attemptCount diagnosticEvents { message } }";

/// How long `watch` keeps trying to reach a server that went away before it gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// How long an agenda may wait unclaimed under `watch` before it says what may be missing.
const WAITING_HINT_AFTER: Duration = Duration::from_secs(15);

/// Looks the agenda progress up (the id `watch` and `progress` take; of `customer` when the
/// token sees several customers using it); NOT_FOUND with a hint when the caller sees none.
pub async fn find(client: &Client, id: &str, customer: Option<&str>) -> Result<Value> {
    let data = client
        .graphql(
            &format!(
                "query($id: String!, $c: String) {{ agendaProgress(id: $id, customerId: $c) \
                 {{ {PROGRESS_FIELDS} }} }}"
            ),
            json!({"id": id, "c": customer}),
        )
        .await?;
    let p = data["agendaProgress"].clone();
    if p.is_null() {
        bail!(
            "NOT_FOUND: no agenda progress {id:?} visible to this token (the id is the agenda's \
             progress id, as `pop submit` and `pop agendas` print it in full){}",
            client.cid_note()
        );
    }
    Ok(p)
}

/// Draws progress until the agenda ends, the user presses Ctrl-C, or the server stays away.
/// The follow names the customer of the agenda found, so another customer's agenda of the id
/// never reaches it.
pub async fn watch(
    client: &Client,
    id: &str,
    customer: Option<&str>,
    watching: Watching,
) -> Result<()> {
    let first = find(client, id, customer).await?;
    let id = output::text(&first, "id").to_string();
    let customer = output::text(&first, "customerId").to_string();
    let agenda_id = output::text(&first, "agendaId").to_string();
    let mut view = View::new(&id, &agenda_id, &customer, output::is_tty())?;
    let follow = watching.follow_retries;
    view.show(&first);
    view.note_retry(&first, follow);
    if let Some(end) = ended(&first, follow) {
        return view.finish(&first, end);
    }
    let query = format!(
        "subscription($id: String!, $c: String, $after: String) {{ agendaProgress(id: $id, \
         customerId: $c, afterPosition: $after) {{ position removed progress {{ {PROGRESS_FIELDS} \
         }} }} }}"
    );
    let mut after: Option<String> = None;
    let mut last = first;
    let mut lost_since: Option<tokio::time::Instant> = None;
    // Reconnections tried since the connection was last lost (0: connected).
    let mut lost_tries: u32 = 0;
    // When to say that no worker has taken the agenda yet, if none has (newcomer60 L1: with no
    // worker running, `pop submit --watch` sat at "queued" without a word).
    let mut hint_at = Some(tokio::time::Instant::now() + WAITING_HINT_AFTER);
    loop {
        let mut end: Option<&'static str> = None;
        let variables = json!({"id": id, "c": customer, "after": after});
        let subscription = client.subscribe(&query, variables, |data| {
            let update = &data["agendaProgress"];
            if let Some(position) = update["position"].as_str() {
                after = Some(position.to_string());
            }
            lost_since = None;
            lost_tries = 0;
            if update["removed"].as_bool() == Some(true) {
                end = Some("removed");
                return Ok(false);
            }
            let p = &update["progress"];
            if p.is_null() {
                return Ok(true);
            }
            view.show(p);
            view.note_retry(p, follow);
            last = p.clone();
            end = ended(p, follow);
            Ok(end.is_none())
        });
        let hint = async {
            match hint_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // The hint's timer ends the subscription; it is taken up again after the position.
        let result = tokio::select! {
            r = subscription => Some(Some(r)),
            () = hint => Some(None),
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(result) = result else {
            view.abandon();
            eprintln!("pop: stopped watching; agenda {id} goes on");
            return Ok(());
        };
        let Some(result) = result else {
            hint_at = None;
            if let Some(hint) = waiting_hint(&last, client.base()) {
                view.note(&hint);
            }
            continue;
        };
        match result {
            Ok(()) => match end {
                Some("removed") => {
                    view.abandon();
                    bail!("agenda {id} was removed (reaped) while watching");
                }
                Some(end) => return view.finish(&last, end),
                None => {}
            },
            Err(e) if e.downcast_ref::<Disconnected>().is_some() => {
                let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    view.abandon();
                    return Err(e).context(format!("gave up after {RECONNECT_FOR:?}"));
                }
                // Said once per outage, then retried with a growing pause (0.5 s doubling to
                // 5 s): ops3am5 saw the line twice a second for the whole outage.
                let tries = lost_tries;
                lost_tries += 1;
                if tries == 0 {
                    view.note(&format!("{e}; reconnecting…"));
                }
                let pause = Duration::from_millis(500).saturating_mul(1 << tries.min(4));
                tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
            }
            Err(e) => {
                view.abandon();
                return Err(e);
            }
        }
    }
}

/// What to check when the agenda `p` is still waiting for a worker to take it (not yet run, or
/// queued again), or `None` when it runs or ended.
fn waiting_hint(p: &Value, server: &str) -> Option<String> {
    if output::text(p, "processingState") != "WAITING" {
        return None;
    }
    let insight = output::text(&p["agendaInsight"], "insightId");
    let why = match output::text(p, "processingStateMessage") {
        "queued" => "queued, and no worker has taken it",
        // (renew60 L3: a doNotRun agenda was said to wait for a full queue.)
        "added" => {
            "not yet queued (the insight's queue is full, the scheduler is off, or its params \
             say doNotRun)"
        }
        _ => return None,
    };
    // The worker reaches the server this watch does (renew60 L4: the command lacked it).
    let server = match server.trim_end_matches('/') {
        s if s == crate::cli::DEFAULT_SERVER => String::new(),
        s => format!(" --server {}", output::shell_word(s)),
    };
    Some(format!(
        "still waiting after {}s: {why}. Is a worker running for insight {insight:?}? (`pop \
         worker{server} --insight {} --handlers examples/handlers.toml`; `pop insights` shows \
         each insight's queue)",
        WAITING_HINT_AFTER.as_secs(),
        output::shell_word(insight)
    ))
}

/// `succeeded`, `failed` or `cancelled` once the agenda is COMPLETE; `retry due` for a failed
/// attempt whose retry is due, unless it is followed (`follow`: not an end then).
fn ended(p: &Value, follow: bool) -> Option<&'static str> {
    if output::text(p, "processingState") != "COMPLETE" {
        return None;
    }
    if p["retryDue"] == Value::Bool(true) {
        return (!follow).then_some("retry due");
    }
    Some(match output::outcome(p).as_str() {
        "failed" => "failed",
        "cancelled" => "cancelled",
        _ => "succeeded",
    })
}

/// Bars on a terminal, lines otherwise.
struct View {
    id: String,
    /// The agenda's id, which `pop cancel` takes (`id` is its progress id).
    agenda_id: String,
    customer: String,
    tty: bool,
    bars: MultiProgress,
    agenda_bar: Option<ProgressBar>,
    op_bars: HashMap<String, ProgressBar>,
    /// Per operation (and `""` for the agenda): the last line printed, piped.
    printed: HashMap<String, String>,
}

fn style(state: &str) -> Result<ProgressStyle> {
    let bar = match state {
        "failed" => "{bar:30.red}",
        "cancelled" => "{bar:30.yellow}",
        "succeeded" => "{bar:30.green}",
        _ => "{bar:30}",
    };
    Ok(ProgressStyle::with_template(&format!("{{prefix:<24}} [{bar}] {{pos:>3}}% {{msg}}"))
        .context("progress bar template")?
        .progress_chars("=> "))
}

/// What a bar's or line's message says: the outcome word, the message while running, and the
/// last diagnostic of a failure.
fn message(p: &Value) -> String {
    let word = output::outcome(p);
    match word.as_str() {
        "failed" => match output::last_diagnostic(p) {
            Some(why) => format!("FAILED: {why}"),
            None => "FAILED".to_string(),
        },
        "cancelled" => "CANCELLED".to_string(),
        "running" => {
            let m = output::text(p, "processingStateMessage");
            if m.is_empty() { word } else { format!("running: {}", output::one_line(m)) }
        }
        _ => word,
    }
}

/// How far an agenda got: the share of operations that succeeded (a failed agenda is not a
/// full bar), else its own percentComplete.
fn agenda_percent(p: &Value) -> u64 {
    let ops = p["operationProgress"].as_array().map(Vec::as_slice).unwrap_or_default();
    if output::outcome(p) == "succeeded" {
        return 100;
    }
    if !ops.is_empty() && p["processingState"] == "COMPLETE" {
        let done = ops.iter().filter(|o| output::outcome(o) == "succeeded").count();
        return (done * 100 / ops.len()) as u64;
    }
    percent(&p["percentComplete"])
}

fn percent(v: &Value) -> u64 {
    v.as_f64().unwrap_or(0.0).clamp(0.0, 100.0).round() as u64
}

impl View {
    fn new(id: &str, agenda_id: &str, customer: &str, tty: bool) -> Result<View> {
        let bars = MultiProgress::new();
        // Whose agenda it is (hostile28: a tenant's agenda of the id watched in another's
        // place said nothing of it); piped, on stderr, so stdout stays the agenda's lines.
        let customer_shown = output::one_line(customer);
        let agenda_bar = if tty {
            out!("watching agenda {id} of customer {customer_shown}");
            let bar = bars.add(ProgressBar::new(100).with_style(style("")?));
            bar.set_prefix("agenda");
            Some(bar)
        } else {
            eprintln!("pop: watching agenda {id} of customer {customer_shown}");
            None
        };
        Ok(View {
            id: id.to_string(),
            agenda_id: agenda_id.to_string(),
            customer: customer.to_string(),
            tty,
            bars,
            agenda_bar,
            op_bars: HashMap::new(),
            printed: HashMap::new(),
        })
    }

    fn show(&mut self, p: &Value) {
        let ops = p["operationProgress"].as_array().cloned().unwrap_or_default();
        if self.tty {
            for op in &ops {
                let name = output::text(op, "operation").to_string();
                let bar = self.op_bars.entry(name.clone()).or_insert_with(|| {
                    let bar = self.bars.add(ProgressBar::new(100));
                    bar.set_prefix(format!("  {name}"));
                    bar
                });
                if let Ok(s) = style(&output::outcome(op)) {
                    bar.set_style(s);
                }
                bar.set_position(percent(&op["percentComplete"]));
                bar.set_message(message(op));
            }
            if let Some(bar) = &self.agenda_bar {
                if let Ok(s) = style(&output::outcome(p)) {
                    bar.set_style(s);
                }
                bar.set_position(agenda_percent(p));
                bar.set_message(message(p));
            }
            return;
        }
        for op in &ops {
            let name = output::text(op, "operation");
            let line = format!("{}  {}", output::one_line(name), message(op));
            if self.printed.get(name) != Some(&line) {
                out!("{line}");
                self.printed.insert(name.to_string(), line);
            }
        }
        // The agenda's end is said once, by `finish` (it was printed here too: newcomer3).
        if ended(p, false).is_some() {
            return;
        }
        let line = format!("agenda {}  {}", self.id, message(p));
        if self.printed.get("") != Some(&line) {
            out!("{line}");
            self.printed.insert(String::new(), line);
        }
    }

    /// Says once per failed attempt that its retry is due and is followed, and how to stop it.
    fn note_retry(&mut self, p: &Value, follow: bool) {
        if !follow || p["retryDue"] != Value::Bool(true) {
            return;
        }
        let key = format!("retry {}", p["attemptsCompleted"]);
        if self.printed.insert(key, String::new()).is_some() {
            return;
        }
        self.note(&format!(
            "attempt {} of {} failed; the server retries it after its backoff, and this watch \
             follows the retry (Ctrl-C stops watching):{}",
            p["attemptsCompleted"],
            p["maximumAttempts"],
            self.retry_advice(true)
        ));
    }

    /// The command that cancels the watched agenda: its agenda id (hostile28: the progress id
    /// named another customer's agenda, which the hinted cancel cancelled) and its customer
    /// (review-s41: an admin who watched with --customer was told an ambiguous cancel).
    fn cancel_command(&self) -> String {
        output::command("cancel", &self.agenda_id, Some(&self.customer), &[])
    }

    /// How to follow the due retry (unless `following` it already: newcomer55 L6), and how to
    /// withdraw it, each command on a line of its own: said once, by both the exit-5 text and a
    /// following watch's note.
    fn retry_advice(&self, following: bool) -> String {
        let follow = if following {
            String::new()
        } else {
            let follow =
                output::command("watch", &self.id, Some(&self.customer), &["--follow-retries"]);
            format!("\n  follow it:    {follow}")
        };
        format!(
            "{follow}\n  withdraw it:  {}\n  (where no replica runs a retry process, \
             --retry-interval 0, none comes)",
            self.cancel_command()
        )
    }

    /// A note under the bars (or on stderr, piped).
    fn note(&self, text: &str) {
        if self.tty {
            let _ = self.bars.println(format!("pop: {text}"));
        } else {
            eprintln!("pop: {text}");
        }
    }

    fn abandon(&self) {
        for bar in self.op_bars.values().chain(self.agenda_bar.iter()) {
            bar.abandon();
        }
    }

    fn finish(&self, p: &Value, end: &str) -> Result<()> {
        self.abandon();
        match end {
            "succeeded" => {
                out!("agenda {} succeeded", self.id);
                Ok(())
            }
            "cancelled" => {
                out!("agenda {} was cancelled", self.id);
                Ok(())
            }
            "retry due" => {
                let mut text = format!(
                    "agenda {}: attempt {} of {} failed, and its retry is due after the backoff \
                     (not the outcome yet):{}",
                    self.id,
                    p["attemptsCompleted"],
                    p["maximumAttempts"],
                    self.retry_advice(false)
                );
                for why in output::reasons(p) {
                    text.push_str(&format!("\n  {why}"));
                }
                Err(Exit { code: EXIT_RETRY_DUE, message: text }.into())
            }
            _ => {
                // Said as final (ops3am17: after the last attempt it read as any failure).
                let mut text = format!(
                    "agenda {} failed (attempt {} of {}; no retry follows)",
                    self.id, p["attemptsCompleted"], p["maximumAttempts"]
                );
                for why in output::reasons(p) {
                    text.push_str(&format!("\n  {why}"));
                }
                Err(Exit { code: EXIT_FAILED, message: text }.into())
            }
        }
    }
}

#[cfg(test)]
mod waiting_tests {
    use super::waiting_hint;
    use serde_json::json;

    /// An agenda no worker takes says what to check (newcomer60 L1: `pop submit --watch` sat at
    /// "queued" without a word when no worker ran); a running or finished one says nothing.
    #[test]
    fn a_waiting_agenda_names_its_insight_and_the_worker_to_start() {
        let p = |state: &str, message: &str| {
            json!({"processingState": state, "processingStateMessage": message,
                "agendaInsight": {"insightId": "encode"}})
        };
        let default = crate::cli::DEFAULT_SERVER;
        let hint = waiting_hint(&p("WAITING", "queued"), default).unwrap();
        for said in ["no worker has taken it", "insight \"encode\"", "pop worker --insight encode"]
        {
            assert!(hint.contains(said), "{said}: {hint}");
        }
        let elsewhere = waiting_hint(&p("WAITING", "queued"), "http://127.0.0.1:9090").unwrap();
        assert!(elsewhere.contains("pop worker --server http://127.0.0.1:9090 --insight encode"));
        let added = waiting_hint(&p("WAITING", "added"), default).unwrap();
        assert!(added.contains("not yet queued") && added.contains("doNotRun"), "{added}");
        assert_eq!(waiting_hint(&p("EXECUTING", "Running Operations"), default), None);
        assert_eq!(waiting_hint(&p("COMPLETE", "succeeded"), default), None);
    }
}
