//! `pop audit <agenda-id>`: an agenda's history as a human timeline — time, log position
//! (what an as-of read by position takes), version, actor, command,
//! event, the state, percent and attempts after it, the diagnostics it added, and what it did to each
//! operation it changed (state, message, the diagnostics of a failure) — or, with `--json`,
//! the same entries as JSON. Read through the public GraphQL API (`agendaHistory`), page by
//! page, so it sees exactly what the token may see.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::Client;
use crate::output;

/// Pages of 50 entries: with every diagnostic's fields (auditor55 L4), a page of the default
/// 100 costs more than a query may.
const HISTORY: &str = "query($id: String!, $customer: String, $after: String) { \
    agendaHistory(agendaId: $id, customerId: $customer, after: $after, first: 50) { \
    items { position version time committedTime type actor cid causationId command processingState \
    processingStateMessage percentComplete attemptsCompleted maximumAttempts \
    diagnostics { message statusCode time stackTrace payload } \
    operations { operation processingState processingStateMessage \
    diagnostics { message statusCode time stackTrace payload } } addedOperations \
    removedOperations } \
    endCursor hasNextPage } }";

/// Pages through the whole history; the agenda's entries in stream order.
async fn history(client: &Client, id: &str, customer: Option<&str>) -> Result<Vec<Value>> {
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = client
            .graphql(HISTORY, json!({"id": id, "customer": customer, "after": after}))
            .await?;
        let page = &data["agendaHistory"];
        if page.is_null() {
            bail!(
                "NOT_FOUND: no agenda {id:?} visible to this token (an agenda the data reaper \
                 deleted keeps no history: its reap record, with the reason, is in the log, \
                 which an operator reads with `pop log` on the server's store){}",
                client.cid_note()
            );
        }
        entries.extend(page["items"].as_array().cloned().unwrap_or_default());
        match (page["hasNextPage"].as_bool(), page["endCursor"].as_str()) {
            (Some(true), Some(cursor)) => after = Some(cursor.to_string()),
            _ => return Ok(entries),
        }
    }
}

pub async fn run(client: &Client, id: &str, customer: Option<&str>, as_json: bool) -> Result<()> {
    let entries = history(client, id, customer).await?;
    if as_json {
        output::json(&Value::Array(entries));
        return Ok(());
    }
    // What the agenda is now, before how it got there (auditor59 L1: the timeline had no
    // line naming the agenda or where it ended).
    if let Some(last) = entries.last() {
        output::out!("{}", summary(id, entries.len(), last));
    }
    for line in timeline(&entries) {
        output::out!("{line}");
    }
    Ok(())
}

/// The line above the timeline: the agenda, its events, and its state after the last.
fn summary(id: &str, events: usize, last: &Value) -> String {
    let percent =
        last["percentComplete"].as_f64().map_or_else(String::new, |p| format!(", {p:.1}%"));
    let attempts = match (last["attemptsCompleted"].as_u64(), last["maximumAttempts"].as_u64()) {
        (Some(done), Some(most)) => format!(", attempts {done}/{most}"),
        _ => String::new(),
    };
    format!(
        "agenda {}: {events} events; now {} / {}{percent}{attempts}",
        output::one_line(id),
        last["processingState"].as_str().unwrap_or("?"),
        output::one_line(last["processingStateMessage"].as_str().unwrap_or("")),
    )
}

/// The timeline's lines: a header, then one row per entry (columns as wide as their widest
/// cell), each followed by the diagnostics its event added.
fn timeline(entries: &[Value]) -> Vec<String> {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let state = format!(
                "{} / {}",
                e["processingState"].as_str().unwrap_or("?"),
                e["processingStateMessage"].as_str().unwrap_or("")
            );
            let percent = e["percentComplete"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |p| format!("{p:.1}"));
            // Attempts completed after the event, of the most (auditor25).
            let attempts = match (e["attemptsCompleted"].as_u64(), e["maximumAttempts"].as_u64()) {
                (Some(done), Some(most)) => format!("{done}/{most}"),
                _ => "-".to_string(),
            };
            vec![
                text(&e["time"]),
                text(&e["position"]),
                e["version"].to_string(),
                text(&e["actor"]),
                text(&e["command"]),
                text(&e["type"]),
                state,
                percent,
                attempts,
                // The correlation id the server's log lines and the client's error carry
                // (auditor59 L1: only `--json` had it).
                text(&e["cid"]),
            ]
        })
        .collect();
    let mut table = output::table_lines(
        &["time", "position", "v", "actor", "command", "event", "state", "%", "attempts", "cid"],
        &rows,
    )
    .into_iter();
    let mut lines: Vec<String> = table.next().into_iter().collect();
    for (e, row) in entries.iter().zip(table) {
        lines.push(row);
        for d in e["diagnostics"].as_array().into_iter().flatten() {
            diagnostic(&mut lines, "    ", d);
        }
        for (field, said) in [("addedOperations", "added"), ("removedOperations", "removed")] {
            let names: Vec<String> = e[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(output::one_line)
                .collect();
            if !names.is_empty() {
                lines.push(format!("    {said}: {}", names.join(", ")));
            }
        }
        for o in e["operations"].as_array().into_iter().flatten() {
            let message =
                o["processingStateMessage"].as_str().map(|m| format!("/{}", output::one_line(m)));
            lines.push(format!(
                "    operation {}: {}{}",
                output::one_line(o["operation"].as_str().unwrap_or("?")),
                o["processingState"].as_str().unwrap_or("?"),
                message.unwrap_or_default()
            ));
            for d in o["diagnostics"].as_array().into_iter().flatten() {
                diagnostic(&mut lines, "      ", d);
            }
        }
    }
    lines
}

/// A diagnostic's message, its first line after `diagnostic:` and each further line of it
/// marked `|` under it: a client's text cannot print a line that passes for a timeline row
/// or another diagnostic (auditor25: a cancel reason and a worker's diagnostic with newlines
/// showed a made-up `admin:root` cancel at a made-up position).
fn diagnostic(lines: &mut Vec<String>, indent: &str, d: &Value) {
    let mut text = output::text_lines(d["message"].as_str().unwrap_or(""));
    lines.push(format!("{indent}diagnostic: {}", text.next().unwrap_or_default()));
    lines.extend(text.map(|more| format!("{indent}  | {more}")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_keeps_its_columns_aligned_past_version_nine_and_shows_diagnostics() {
        let entry = |version: u64, state: &str, diagnostic: Option<&str>| {
            json!({
                "time": "2026-12-04T16:01:40.334286+00:00", "version": version,
                "position": (100 + version).to_string(),
                "actor": "admin:admin", "command": "updateAgendaProgress",
                "type": "AgendaProgressReported", "processingState": "EXECUTING",
                "processingStateMessage": state, "percentComplete": 5.0,
                "diagnostics": diagnostic.map_or(json!([]), |m| json!([{"message": m}])),
            })
        };
        let mut entries =
            vec![entry(9, "Running Operations", None), entry(10, "x", Some("exit status 1"))];
        entries[1]["attemptsCompleted"] = json!(1);
        entries[1]["maximumAttempts"] = json!(3);
        entries[1]["operations"] = json!([{"operation": "encode", "processingState": "COMPLETE",
            "processingStateMessage": "failed", "diagnostics": [{"message": "no such file"}]}]);
        entries[0]["addedOperations"] = json!(["part-1", "join"]);
        entries[0]["removedOperations"] = json!(["part-2"]);
        let lines = timeline(&entries);
        assert_eq!(lines.len(), 8, "{lines:#?}");
        assert_eq!(lines[2].trim(), "added: part-1, join");
        assert_eq!(lines[3].trim(), "removed: part-2");
        assert_eq!(lines[6].trim(), "operation encode: COMPLETE/failed");
        assert_eq!(lines[7].trim(), "diagnostic: no such file");
        let column = |line: &str, word: &str| line.find(word);
        // Every column starts where its header starts, whatever the width of the cells.
        assert_eq!(column(&lines[1], " 109 "), column(&lines[0], " position"));
        assert_eq!(column(&lines[4], " 110 "), column(&lines[0], " position"));
        for header in ["actor", "command", "event", "state"] {
            let at = column(&lines[0], header);
            let cell = match header {
                "actor" => "admin:admin",
                "command" => "updateAgendaProgress",
                "event" => "AgendaProgressReported",
                _ => "EXECUTING",
            };
            assert_eq!(column(&lines[1], cell), at, "{header}: {lines:#?}");
            assert_eq!(column(&lines[4], cell), at, "{header}: {lines:#?}");
        }
        assert_eq!(lines[5].trim(), "diagnostic: exit status 1");
        // The attempts column: completed of the most after the event (auditor25).
        assert_eq!(column(&lines[4], "1/3"), column(&lines[0], "attempts"), "{lines:#?}");
        assert!(lines[1].ends_with(" -"), "{lines:#?}");
        // The cid column, last (auditor59 L1).
        let mut with_cid = entries.clone();
        with_cid[1]["cid"] = json!("01a2-cid");
        let lines = timeline(&with_cid);
        assert!(lines[4].ends_with(" 01a2-cid"), "{lines:#?}");
        assert_eq!(column(&lines[4], "01a2-cid"), column(&lines[0], " cid").map(|c| c + 1));
        assert_eq!(
            summary("a1", 2, &with_cid[1]),
            "agenda a1: 2 events; now EXECUTING / x, 5.0%, attempts 1/3"
        );
    }

    /// A client's text with line breaks cannot print a line that passes for a row or a
    /// diagnostic of pop's (auditor25).
    #[test]
    fn a_text_with_line_breaks_cannot_pass_for_a_row() {
        let fake = "2026-12-05T20:20:00.000000+00:00  999  9  admin:root  cancelAgenda";
        let mut entry = json!({
            "time": "2026-12-04T16:01:40.334286+00:00", "version": 2, "position": "311",
            "actor": "user:alice", "command": "cancelAgenda", "type": "AgendaCancelled",
            "processingState": "COMPLETE", "processingStateMessage": format!("cancelled\n{fake}"),
            "diagnostics": [{"message": format!("wrong file\n{fake}\r{fake}\u{2028}    diagnostic: ok")}],
        });
        entry["operations"] = json!([{"operation": "o1", "processingState": "COMPLETE",
            "processingStateMessage": format!("x\r\n{fake}"), "diagnostics": []}]);
        let lines = timeline(&[entry]);
        // The header, the row, the diagnostic and its three further lines, the operation.
        assert_eq!(lines.len(), 7, "{lines:#?}");
        assert!(lines[1].contains("cancelled\\n2026-12-05"), "{lines:#?}");
        assert_eq!(lines[2].trim(), "diagnostic: wrong file");
        for line in &lines[3..6] {
            assert!(line.trim_start().starts_with("| "), "{line:?}");
        }
        assert!(lines[6].trim_start().starts_with("operation o1: COMPLETE/x\\n2026"), "{lines:#?}");
        assert!(lines.iter().all(|l| !l.starts_with("2026-12-05")), "{lines:#?}");
    }
}
