//! What the client commands print: lines on stdout that survive a closed pipe (`pop agendas |
//! head` ends quietly, not with a panic), tables on a terminal and JSON with `--json`, the
//! words and colours of an agenda's outcome, and exit codes other than 1.
//!
//! Exit codes of the client commands (also in `pop --help`):
//! 0 done (for `watch`: the agenda succeeded, was cancelled, or you stopped watching);
//! 1 an error (bad input, not found, refused, server unreachable); 2 a usage error;
//! 3 the watched agenda failed; 4 (`pop verify`) the log is not intact: TAMPERED or NOT
//! VERIFIED (1 there means it could not be checked: the store unreachable, say); 5 the watched
//! agenda's attempt failed and its retry is due (not final: `--follow-retries` follows it).

use std::fmt;
use std::io::{IsTerminal, Write};

use serde_json::Value;

/// The exit code for a watched agenda that failed.
pub const EXIT_FAILED: u8 = 3;

/// The exit code for a watched agenda whose attempt failed with its automatic retry due: not
/// the outcome yet (ops3am16: it was 3, and scripts took the first of three attempts as final;
/// review-s41: following the retry by default hung where no retry process runs).
pub const EXIT_RETRY_DUE: u8 = 5;

/// The exit code of `pop verify` for a log that is not intact (TAMPERED, NOT VERIFIED), apart
/// from 1, a check that could not be made (ops3am3: a scheduled verify could not tell a
/// security incident from a database blip).
pub const EXIT_NOT_INTACT: u8 = 4;

/// Ends a command with `code` (and `message` on stderr unless empty) instead of 1.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Writes one line to stdout; a reader that went away (`| head`) ends the process quietly
/// with 0, as other command-line tools do. Any other failure (a full disk, `ulimit -f`, a
/// closed descriptor) ends it with 1, saying so: the output is cut, and a script must not
/// take it for the whole (review-s37: `pop gql … > out.json` past `ulimit -f` wrote a tenth
/// of the answer and exited 0).
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written =
        out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("pop: error: writing the output failed, so it is incomplete: {e}");
            std::process::exit(1);
        }
    }
}

/// Standard output as a `Write` that, like [`write_line`], ends the process quietly with 0
/// when the reader went away (`pop log | head`): for commands that stream more than a
/// screenful through a writer. Not for `pop export`, whose cut output is an error.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        quiet_on_closed_pipe(std::io::stdout().lock().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        quiet_on_closed_pipe(std::io::stdout().lock().flush())
    }
}

fn quiet_on_closed_pipe<T>(result: std::io::Result<T>) -> std::io::Result<T> {
    if let Err(e) = &result
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
    result
}

/// `println!` through [`write_line`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}
pub(crate) use out;

/// Whether stdout is a terminal (tables, colours and live bars) or a pipe/file (plain lines).
pub fn is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    for line in table_lines(headers, rows) {
        out!("{line}");
    }
}

/// A break a terminal honours: `\n`, `\r`, U+0085, U+2028, U+2029, vertical tab, form feed.
fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{b}' | '\u{c}')
}

/// A character a terminal does not print as itself: a control character (ESC, NUL, …) but
/// tab, or a bidirectional mark, override or isolate (auditor26: a worker's diagnostic holding
/// ESC sequences erased a row of `pop audit` and drew a made-up one).
fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{61C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every hidden character and break written as its escape (`\u{1b}`, `\n`).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| is_break(c) || is_hidden(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_break(c) || is_hidden(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The lines of a free text a client wrote (a diagnostic, a reason), split at every break a
/// terminal honours, blank ones left out, each [`printable`].
pub fn text_lines(text: &str) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    text.split(is_break).filter(|l| !l.trim().is_empty()).map(printable)
}

/// A free text on one line, its breaks shown as `\n` and its hidden characters escaped: a
/// client's text cannot start a line of its own, or move the cursor, in a table or timeline
/// and pass for a row pop printed (auditor25: a cancel reason holding a newline and a made-up
/// row showed an admin's cancel that never happened).
pub fn one_line(text: &str) -> String {
    if !text.chars().any(|c| is_break(c) || is_hidden(c)) {
        return text.to_string();
    }
    text_lines(text).collect::<Vec<_>>().join("\\n")
}

/// The lines of [`table`], the headers' first: for a caller that prints more between rows.
/// A cell is shown on one line ([`one_line`]).
pub fn table_lines(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|cell| one_line(cell)).collect()).collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths.get(i).map_or(0, |w| w.saturating_sub(cell.chars().count()));
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_string()
    };
    let mut lines = vec![line(headers.to_vec())];
    lines.extend(rows.iter().map(|row| line(row.iter().map(String::as_str).collect())));
    lines
}

/// Pretty JSON on stdout.
/// Operation names as one line: the first twenty, then how many more (names printable).
pub fn names(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    let mut line: Vec<String> = names.iter().take(SHOWN).map(|n| one_line(n)).collect();
    if names.len() > SHOWN {
        line.push(format!("and {} more", names.len() - SHOWN));
    }
    line.join(", ")
}

pub fn json(value: &Value) {
    out!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// The text of a JSON string field, or "".
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// How an agenda or operation stands, as one word: `succeeded`, `failed`, `cancelled` (its
/// processingState COMPLETE), `running` (EXECUTING), or its WAITING message (`added`,
/// `queued`, `scheduled`, `pending`, `waiting`).
pub fn outcome(p: &Value) -> String {
    let message = text(p, "processingStateMessage");
    match text(p, "processingState") {
        "COMPLETE" => match message.to_ascii_lowercase().as_str() {
            m @ ("succeeded" | "failed" | "cancelled") => m.to_string(),
            _ => "complete".to_string(),
        },
        "EXECUTING" => "running".to_string(),
        _ if message.is_empty() => "waiting".to_string(),
        _ => one_line(message),
    }
}

/// The last diagnostic of something that failed, on one line (at most 160 characters).
pub fn last_diagnostic(p: &Value) -> Option<String> {
    let last = p["diagnosticEvents"].as_array()?.last()?;
    let message = text(last, "message").trim();
    if message.is_empty() {
        return None;
    }
    let line = text_lines(message).map(|l| l.trim().to_string()).collect::<Vec<_>>();
    Some(cut(&line.join(" | "), 160))
}

/// `text` in at most `max` characters: cut with `…` past it.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max.saturating_sub(1)).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Why an agenda failed: each failed operation with its last diagnostic, then the agenda's own
/// last diagnostic (a timeout, a deadlock); one line each.
pub fn reasons(p: &Value) -> Vec<String> {
    let mut lines: Vec<String> = p["operationProgress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|op| outcome(op) == "failed")
        .map(|op| {
            let why = last_diagnostic(op).unwrap_or_else(|| "(no diagnostic)".to_string());
            format!("{}: {why}", text(op, "operation"))
        })
        .collect();
    if let Some(why) = last_diagnostic(p) {
        // The last, which may be an earlier attempt's (review-s41b: given as this one's reason);
        // with its time, so an earlier one reads as such (renew60 L5: a cancel's reason, before
        // a rerun, listed as the reason of the attempt after it).
        lines.push(format!("the agenda's last diagnostic{}: {why}", diagnostic_time(p)));
    }
    lines
}

/// ` (at <time>)` of the agenda's last diagnostic, when it has one.
pub fn diagnostic_time(p: &Value) -> String {
    let last = p["diagnosticEvents"].as_array().and_then(|d| d.last());
    let at = last.map(|d| text(d, "time")).filter(|t| !t.is_empty());
    at.map(|t| format!(" (at {t})")).unwrap_or_default()
}

/// A `pop` command the CLI suggests, on agenda (or progress) id `id` of `customer`, with more
/// `flags`: each word as a POSIX shell reads it back (review-s41b: a hint `pop cancel gf5;#
/// --customer acme`, pasted, cancelled globex's `gf5`; an id `x$(…)` would have run in the
/// operator's shell), and an id or customer that starts with `-` not taken for an option
/// (hostile29: `pop cancel -x` was a usage error).
pub fn command(verb: &str, id: &str, customer: Option<&str>, flags: &[&str]) -> String {
    let mut tail: Vec<String> = Vec::new();
    match customer {
        Some(c) if c.starts_with('-') => tail.push(format!("--customer={c}")),
        Some(c) => tail.extend(["--customer".to_string(), c.to_string()]),
        None => {}
    }
    tail.extend(flags.iter().map(|f| f.to_string()));
    let quoted = |words: &[String]| words.iter().map(|w| shell_word(w)).collect::<Vec<_>>();
    let mut line = format!("pop {}", shell_word(verb));
    // The connection flags, quoted already, go before a `--` (after it they would be ids).
    let connection = NEXT_STEP_FLAGS.get().map_or("", String::as_str);
    if id.starts_with('-') {
        for word in quoted(&tail) {
            line.push(' ');
            line.push_str(&word);
        }
        line.push_str(connection);
        line.push_str(&format!(" -- {}", shell_word(id)));
    } else {
        line.push_str(&format!(" {}", shell_word(id)));
        for word in quoted(&tail) {
            line.push(' ');
            line.push_str(&word);
        }
        line.push_str(connection);
    }
    line
}

/// The flags this invocation's client was given that the next command needs too (`--server`,
/// `--token <the same token>`, `--data-dir`: [`crate::client::Client::next_step_flags`]), set
/// once its client is made; every command a hint prints takes them (newcomer20: `watch it:`
/// lines, and the exit-5 hints, went to the default server).
pub static NEXT_STEP_FLAGS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// How to name agenda `id` of `customer` on a command line, for a hint that tells what to add
/// to the command just typed: `<id> with --customer <customer>`, each a shell word, an id or
/// customer starting with `-` so that it is not taken for an option (review-s41d).
pub fn naming(id: &str, customer: &str) -> String {
    let id = match id.starts_with('-') {
        true => format!("-- {}", shell_word(id)),
        false => shell_word(id),
    };
    let customer = match customer.starts_with('-') {
        true => shell_word(&format!("--customer={customer}")),
        false => format!("--customer {}", shell_word(customer)),
    };
    format!("{id} with {customer}")
}

/// One shell word: as it is when nothing in it is special to a shell, else quoted: `'…'`, or
/// `$'…'` with `\uXXXX` escapes when it holds a character a terminal would act on.
pub fn shell_word(word: &str) -> String {
    // Not `~` (a word's leading `~`, or one after `=`, is a home directory to bash: hostile29's
    // `a=~root` pasted cancelled globex's `a=/root`) nor `=` (zsh's `=cmd`).
    let plain = |c: char| c.is_ascii_alphanumeric() || "._/:@+,-%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    let unprintable = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}');
    if !word.chars().any(unprintable) {
        return format!("'{}'", word.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in word.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if unprintable(c) || !c.is_ascii() && c.is_whitespace() => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_suggested_command_reads_back_as_its_words() {
        assert_eq!(command("cancel", "gf5", Some("acme"), &[]), "pop cancel gf5 --customer acme");
        assert_eq!(command("cancel", "gf5;#", None, &[]), "pop cancel 'gf5;#'");
        assert_eq!(command("cancel", "a=~root", None, &[]), "pop cancel 'a=~root'");
        assert_eq!(command("cancel", "~root", None, &[]), "pop cancel '~root'");
        assert_eq!(shell_word("a=b:~x"), "'a=b:~x'");
        assert_eq!(naming("k2", "acme"), "k2 with --customer acme");
        assert_eq!(naming("-r5x", "-c"), "-- -r5x with '--customer=-c'");
        assert_eq!(
            command("watch", "-x", Some("-c"), &["--follow-retries"]),
            "pop watch '--customer=-c' --follow-retries -- -x"
        );
        assert_eq!(shell_word("x$(rm -rf ~)"), "'x$(rm -rf ~)'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("a\u{2028}b'"), r"$'a\u2028b\''");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn outcomes_are_words_and_reasons_name_each_failed_operation() {
        let p = json!({"processingState": "COMPLETE", "processingStateMessage": "failed",
        "diagnosticEvents": [],
        "operationProgress": [
            {"operation": "a", "processingState": "COMPLETE", "processingStateMessage": "succeeded"},
            {"operation": "b", "processingState": "COMPLETE", "processingStateMessage": "failed",
             "diagnosticEvents": [{"message": "old"}, {"message": "no handler for operation type \"x\"\n"}]}
        ]});
        assert_eq!(outcome(&p), "failed");
        assert_eq!(outcome(&p["operationProgress"][0]), "succeeded");
        assert_eq!(reasons(&p), vec!["b: no handler for operation type \"x\"".to_string()]);
        let queued = json!({"processingState": "WAITING", "processingStateMessage": "queued"});
        assert_eq!(outcome(&queued), "queued");
    }

    /// A client's text never starts a line of its own (auditor25, review-s40).
    #[test]
    fn a_clients_text_stays_on_one_line() {
        let fake = "working\n2026-12-05T20:20:00Z  agenda a  CANCELLED by admin:root\r\u{2028}x";
        assert_eq!(
            one_line(fake),
            "working\\n2026-12-05T20:20:00Z  agenda a  CANCELLED by admin:root\\nx"
        );
        assert_eq!(one_line("plain"), "plain");
        let p = json!({"processingState": "WAITING", "processingStateMessage": fake});
        assert!(!outcome(&p).contains(['\n', '\r', '\u{2028}']), "{}", outcome(&p));
        let lines = table_lines(&["a", "b"], &[vec![fake.to_string(), "x".into()]]);
        assert_eq!(lines.len(), 2, "{lines:#?}");
        // A break that stands first, and terminal controls, are escaped too (auditor26).
        assert_eq!(one_line("\u{2028}2026 row"), "2026 row");
        let esc = "\u{1b}[1A\u{1b}[2K2026 row\u{202e}";
        assert_eq!(one_line(esc), "\\u{1b}[1A\\u{1b}[2K2026 row\\u{202e}");
        assert!(text_lines(esc).all(|l| !l.contains('\u{1b}')));
        assert!(
            last_diagnostic(&json!({"diagnosticEvents": [{"message": esc}]}))
                .is_some_and(|d| !d.contains('\u{1b}'))
        );
    }
}

#[cfg(test)]
mod cut_tests {
    #[test]
    fn a_long_text_is_cut_to_its_width_with_an_ellipsis() {
        let url = format!("https://in.example/{}", "é".repeat(4_000));
        let shown = super::cut(&url, 80);
        assert_eq!(shown.chars().count(), 80);
        assert!(shown.starts_with("https://in.example/") && shown.ends_with('…'), "{shown}");
        assert_eq!(super::cut("short", 80), "short");
    }
}
