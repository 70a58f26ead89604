//! `pop audit <agenda-id>`: an agenda's history as a human timeline — time, actor, command,
//! event, the state and percent after it, and the diagnostics it added — or, with `--json`,
//! the same entries as JSON. Read through the public GraphQL API (`agendaHistory`), page by
//! page, so it sees exactly what the token may see.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::Client;

const HISTORY: &str = "query($id: String!, $customer: String, $after: String) { \
    agendaHistory(agendaId: $id, customerId: $customer, after: $after) { \
    items { position version time type actor cid causationId command processingState \
    processingStateMessage percentComplete diagnostics { message statusCode } } \
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
            bail!("NOT_FOUND: no agenda {id} visible to this token");
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
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    println!(
        "{:<27} {:>4} {:<24} {:<22} {:<26} {:<22} {:>6}",
        "time", "v", "actor", "command", "event", "state", "%"
    );
    for e in &entries {
        let state = format!(
            "{} / {}",
            e["processingState"].as_str().unwrap_or("?"),
            e["processingStateMessage"].as_str().unwrap_or("")
        );
        let percent =
            e["percentComplete"].as_f64().map_or_else(|| "-".to_string(), |p| format!("{p:.1}"));
        println!(
            "{:<27} {:>4} {:<24} {:<22} {:<26} {:<22} {:>6}",
            text(&e["time"]),
            e["version"],
            text(&e["actor"]),
            text(&e["command"]),
            text(&e["type"]),
            state,
            percent
        );
        for d in e["diagnostics"].as_array().into_iter().flatten() {
            println!("{:>32} diagnostic: {}", "", d["message"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}
