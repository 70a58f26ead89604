//! The client verbs over the public GraphQL API (the same calls any client makes): `pop init`,
//! `agendas`, `cancel`, `rerun`, `events`, `insights`, `pools`, `customers`, `templates` and
//! `run`. Each prints a table (or a few lines) on stdout, or the API's JSON with `--json`.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{self, out, table, text};

/// What `pop init` creates.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub pool: String,
    pub customer: String,
    pub insight: String,
    pub types: Vec<String>,
    pub queue_size: u32,
}

impl Default for InitSpec {
    fn default() -> Self {
        InitSpec {
            pool: "farm".into(),
            customer: "acme".into(),
            insight: "encode".into(),
            types: ["ffmpeg", "step", "fanout", "log"].map(String::from).to_vec(),
            queue_size: 10,
        }
    }
}

/// What `init` did and found: the lines to print, and the notes that decide its hints.
#[derive(Debug, Default)]
pub struct Initialized {
    pub lines: Vec<String>,
    /// The customer uses another resource pool: the new insight will never get its agendas.
    pub elsewhere: bool,
    /// An older insight of the pool takes these types: only agendas naming this one come here.
    pub shadowed: bool,
    /// The operation types the insight takes: `--types`, or an existing insight's own.
    pub types: Vec<String>,
}

/// Creates a resource pool, a customer using it and an insight mapping `types` to it; an
/// object that exists already is left as it is (so `init` may run twice).
pub async fn init(client: &Client, spec: &InitSpec) -> Result<Initialized> {
    if spec.types.iter().all(|t| t.trim().is_empty()) {
        bail!("VALIDATION: --types names no operation type");
    }
    let steps = [
        (
            "resource pool",
            &spec.pool,
            "mutation($v: JSON!) { createResourcePool(resourcePool: $v) { position } }",
            json!({"id": spec.pool, "customerId": spec.customer, "title": spec.pool}),
        ),
        (
            "customer",
            &spec.customer,
            "mutation($v: JSON!) { createCustomer(customer: $v) { position } }",
            json!({"id": spec.customer, "customerId": spec.customer, "title": spec.customer,
                   "resourcePoolId": spec.pool}),
        ),
        (
            "insight",
            &spec.insight,
            "mutation($v: JSON!) { createInsight(insight: $v) { position } }",
            json!({"id": spec.insight, "customerId": spec.customer, "title": spec.insight,
                   "resourcePoolId": spec.pool, "queueSize": spec.queue_size,
                   "mappers": {"operationType": spec.types}}),
        ),
    ];
    let mut lines = Vec::new();
    let mut kept_insight = false;
    for ((kind, id, mutation, value), (flag, field)) in steps.into_iter().zip([
        ("pool", "resourcePool"),
        ("customer", "customer"),
        ("insight", "insight"),
    ]) {
        // Looked up first: a create refused as existing counts as a refused command on
        // /metrics, and `pop serve --dev` runs this at every start (newcomer54: each restart
        // blipped the dashboard's refused-commands panel). The create still says CONFLICT
        // when one appears in between.
        let query = format!("query($id: String!) {{ {field}(id: $id) {{ customerId }} }}");
        let found = client.graphql(&query, json!({"id": id})).await?;
        if found[field]["customerId"].as_str() == Some(spec.customer.as_str()) {
            lines.push(format!("kept {kind} {id} (it exists)"));
            kept_insight |= kind == "insight";
            continue;
        }
        match client.graphql(mutation, json!({"v": value})).await {
            Ok(_) => lines.push(format!("created {kind} {id}")),
            Err(e) if e.to_string().starts_with("CONFLICT") => {
                lines.push(format!("kept {kind} {id} (it exists)"));
                kept_insight |= kind == "insight";
            }
            // Creating an object whose id another customer's object holds answers not-found
            // (what the token may not see does not exist for it); say what to do (newcomer6:
            // an admin of one customer ran init with the tour's pool, another customer's).
            Err(e) if e.to_string().starts_with("NOT_FOUND") => {
                return Err(e.context(format!(
                    "creating {kind} {id}: the id is taken by one of a customer this token may \
                     not see; choose another with --{flag} <id>"
                )));
            }
            Err(e) => return Err(e.context(format!("creating {kind} {id}"))),
        }
    }
    // An insight kept as it is takes its own types, not --types (ops3am8: init said the
    // given ones, and a submit of one of them, as the hint said, was NOT_FOUND).
    let kept_types = match kept_insight {
        true => insight_types(client, &spec.insight).await,
        false => None,
    };
    let types = kept_types.clone().unwrap_or_else(|| spec.types.clone());
    let note = match &kept_types {
        Some(kept)
            if !kept.iter().all(|k| spec.types.iter().any(|t| t.eq_ignore_ascii_case(k)))
                || !spec.types.iter().all(|t| kept.iter().any(|k| k.eq_ignore_ascii_case(t))) =>
        {
            " (its own: --types is not applied to an insight that exists; change its mappers \
             with updateInsight, or init another --insight)"
                .to_string()
        }
        _ => String::new(),
    };
    lines.push(format!(
        "insight {} takes operations of type {} from customer {}{note}",
        spec.insight,
        types.join(", "),
        spec.customer
    ));
    let elsewhere = customer_elsewhere(client, spec).await;
    let shadowing = shadowing_insights(client, spec, &types).await;
    let done = Initialized {
        elsewhere: elsewhere.is_some(),
        shadowed: !shadowing.is_empty(),
        lines: Vec::new(),
        types,
    };
    lines.extend(elsewhere);
    lines.extend(shadowing);
    Ok(Initialized { lines, ..done })
}

/// The operation types the insight `id` takes, when it can be read.
async fn insight_types(client: &Client, id: &str) -> Option<Vec<String>> {
    let query = "{ insights(first: 500) { items { id mappers } } }";
    let data = client.graphql(query, json!({})).await.ok()?;
    let ours = data["insights"]["items"].as_array()?.iter().find(|i| i["id"] == id)?;
    Some(mapped_types(ours).map(str::to_string).collect())
}

/// A note when the customer existed already with another resource pool: its agendas bind only
/// to insights of its own pool, so the new insight would never get them (newcomer3: a submit
/// naming it was NOT_FOUND in the customer's pool, and init had said nothing). Nothing when
/// the customer cannot be read: the note is a help, not a step.
async fn customer_elsewhere(client: &Client, spec: &InitSpec) -> Option<String> {
    let query = "query($id: String!) { customer(id: $id) { resourcePoolId } }";
    let data = client.graphql(query, json!({"id": spec.customer})).await.ok()?;
    let pool = data["customer"]["resourcePoolId"].as_str()?;
    (pool != spec.pool).then(|| {
        format!(
            "note: customer {} uses resource pool {pool}, not {}: its agendas bind only to \
             insights of {pool}, so insight {} will not get them (run init with --pool {pool}, \
             or change the customer's resourcePoolId)",
            spec.customer, spec.pool, spec.insight
        )
    })
}

/// A note for each older insight of the pool that maps one of `types` (the insight's own): an agenda binds
/// to the oldest insight that matches it unless its params name one (`defaultInsight`,
/// DOMAIN.md §6), so agendas of those types would go there, not to the new insight (a newcomer
/// followed `init`'s hints and watched an agenda wait for ever in another insight's queue).
/// Nothing when the insights cannot be listed: the note is a help, not a step.
async fn shadowing_insights(client: &Client, spec: &InitSpec, types: &[String]) -> Vec<String> {
    let query = "{ insights(first: 500) { items { id customerId resourcePoolId addedTime mappers \
                 isGlobal allowedCustomerIds } } }";
    let Ok(data) = client.graphql(query, json!({})).await else { return Vec::new() };
    let Some(items) = data["insights"]["items"].as_array() else { return Vec::new() };
    let added = |i: &Value| i["addedTime"].as_str().unwrap_or("").to_string();
    let Some(ours) = items.iter().find(|i| i["id"] == spec.insight.as_str()) else {
        return Vec::new();
    };
    // Only insights the customer's agendas may bind to: its own, global ones, and those
    // shared with it (another customer's private insight takes none of them).
    let usable = |i: &Value| {
        i["customerId"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(&spec.customer))
            || i["isGlobal"] == true
            || i["allowedCustomerIds"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case(&spec.customer)))
            })
    };
    let mut older: Vec<&Value> = items
        .iter()
        .filter(|i| {
            i["id"] != spec.insight.as_str()
                && i["resourcePoolId"] == spec.pool.as_str()
                && added(i) <= added(ours)
                && usable(i)
        })
        .collect();
    // Oldest first: the first one named is where such agendas go.
    older.sort_by_key(|i| added(i));
    let mut notes = Vec::new();
    for other in older {
        let types: Vec<&str> = mapped_types(other)
            .filter(|t| types.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !types.is_empty() {
            notes.push(format!(
                "note: the older insight {} of pool {} also takes {}: an agenda binds to the oldest \
                 insight that matches it, unless its params name one: \"params\": {{\"defaultInsight\": \"{}\"}}",
                other["id"].as_str().unwrap_or("?"),
                spec.pool,
                types.join(", "),
                spec.insight
            ));
        }
    }
    notes
}

/// The operation types an insight (as GraphQL answers it) maps.
pub fn mapped_types(insight: &Value) -> impl Iterator<Item = &str> {
    insight["mappers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.eq_ignore_ascii_case("operationType"))
        .flat_map(|(_, values)| values.as_array().into_iter().flatten())
        .filter_map(Value::as_str)
}

/// The operation types `examples/handlers.toml` has a handler for (a test keeps this true).
const EXAMPLE_HANDLER_TYPES: &[&str] = &["ffmpeg", "step", "fanout"];

/// `pop init`.
pub async fn init_cmd(client: &Client, spec: &InitSpec) -> Result<()> {
    let done = init(client, spec).await?;
    for line in &done.lines {
        out!("{line}");
    }
    // The hints lead to the new insight, or say nothing where a note says why they would not
    // (newcomer4: after "insight it2 will not get them", it still said to run its worker).
    if done.elsewhere {
        return Ok(());
    }
    let flags = client.next_step_flags();
    // The example file's handlers, for the types it has (newcomer54: `--types slow` was sent
    // to a file with no handler for `slow`).
    let unhandled: Vec<&str> = done
        .types
        .iter()
        .map(String::as_str)
        .filter(|t| !EXAMPLE_HANDLER_TYPES.contains(t) && !pop_worker::builtin::is_builtin(t))
        .collect();
    if unhandled.is_empty() {
        out!(
            "next: pop worker{flags} --insight {} --handlers examples/handlers.toml",
            spec.insight
        );
    } else {
        out!(
            "next: write a handlers file with a [handlers.<type>] entry for {} \
             (examples/handlers.toml shows the format), then: pop worker{flags} --insight {} \
             --handlers <that file>",
            unhandled.join(", "),
            spec.insight
        );
    }
    if done.shadowed {
        // An older insight takes these types: only an agenda naming this one comes here.
        out!(
            "      pop submit{flags} --watch <agenda.json>   (\"customerId\": \"{}\", \"params\": \
             {{\"defaultInsight\": \"{}\"}}, operations of type {})",
            spec.customer,
            spec.insight,
            done.types.join(", ")
        );
    } else if spec.customer == InitSpec::default().customer
        && done.types.iter().any(|t| t == "ffmpeg")
    {
        // The tour's agenda is acme's, of type ffmpeg.
        out!("      pop submit{flags} --watch examples/encode.json");
    } else {
        out!(
            "      pop submit{flags} --watch <agenda.json>   (\"customerId\": \"{}\", operations of type {})",
            spec.customer,
            done.types.join(", ")
        );
    }
    Ok(())
}

impl crate::cli::AgendaFilter {
    /// The flags that list the same agendas in the same order: what the next page's command
    /// repeats beside its `--after` (its cursor belongs to this filter and order).
    fn flags(&self) -> String {
        let mut flags = String::new();
        for (flag, value) in [
            ("--customer", &self.customer),
            ("--link-id", &self.link_id),
            ("--insight", &self.insight),
            ("--state", &self.state),
        ] {
            if let Some(v) = value {
                flags.push_str(&format!(" {flag} {}", output::shell_word(v)));
            }
        }
        if self.oldest_first {
            flags.push_str(" --oldest-first");
        }
        flags
    }
}

/// `pop agendas`: the visible agendas with their state, the newest added first (newcomer56 L8:
/// oldest first, a fresh submission was past the first page of a busy store).
pub async fn agendas(client: &Client, f: &crate::cli::AgendaFilter, as_json: bool) -> Result<()> {
    let mut filter = serde_json::Map::new();
    if let Some(c) = &f.customer {
        filter.insert("customerId".into(), json!(c));
    }
    if let Some(l) = &f.link_id {
        filter.insert("linkId".into(), json!(l));
    }
    if let Some(i) = &f.insight {
        filter.insert("insightId".into(), json!(i));
    }
    if let Some(s) = &f.state {
        let state = s.trim().to_ascii_uppercase();
        // (ops3am15: `--state failed` answered GraphQL's enum wording.)
        if !matches!(state.as_str(), "WAITING" | "EXECUTING" | "COMPLETE") {
            bail!(
                "VALIDATION: --state {s:?} is not a state: WAITING, EXECUTING or COMPLETE; a \
                 succeeded, failed or cancelled agenda is COMPLETE, its message says which \
                 (pop agendas --state complete)"
            );
        }
        filter.insert("processingState".into(), json!(state));
    }
    filter.insert("newestFirst".into(), json!(!f.oldest_first));
    let data = client
        .graphql(
            "query($f: AgendaFilter, $n: Int, $a: String) { agendaProgressList(filter: $f, \
             first: $n, after: $a) { items { id agendaId customerId title linkId \
             processingState processingStateMessage percentComplete updatedTime retryDue \
             agendaInsight { insightId } } endCursor hasNextPage } }",
            json!({"f": filter, "n": f.first, "a": f.after}),
        )
        .await?;
    let page = &data["agendaProgressList"];
    if as_json {
        output::json(page);
        return Ok(());
    }
    // The agenda id (what cancel, rerun, events and audit take), and the progress id (what
    // watch and progress take) only where it is another.
    let rows = rows(page, |p| {
        let (agenda, progress) = (text(p, "agendaId"), text(p, "id"));
        vec![
            agenda.to_string(),
            if progress == agenda { String::new() } else { progress.to_string() },
            text(p, "customerId").to_string(),
            text(&p["agendaInsight"], "insightId").to_string(),
            // Not final while its retry is due (newcomer55 L1: it read as a plain failure,
            // which invites a manual rerun beside the automatic one).
            if p["retryDue"] == Value::Bool(true) {
                format!("{} (retry due)", output::outcome(p))
            } else {
                output::outcome(p)
            },
            format!("{:.0}%", p["percentComplete"].as_f64().unwrap_or(0.0)),
            // A linkId may be a URL of 4,096 characters (reprobe57 L3: rows 4,190 wide): cut
            // as the dashboard cuts it; `--json` has it whole.
            output::cut(text(p, "linkId"), 80),
            output::cut(text(p, "title"), 80),
        ]
    });
    if rows.is_empty() {
        eprintln!("pop: no agendas match");
    } else {
        table(
            &["AGENDA", "PROGRESS ID", "CUSTOMER", "INSIGHT", "STATE", "DONE", "LINK", "TITLE"],
            &rows,
        );
    }
    more(page, &format!("agendas{}", f.flags()));
    Ok(())
}

/// One table row per item of a page.
fn rows(page: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    page["items"].as_array().into_iter().flatten().map(row).collect()
}

/// Says on stderr that a page has more, and how to get it.
fn more(page: &Value, verb: &str) {
    if page["hasNextPage"].as_bool() == Some(true) {
        eprintln!(
            "pop: more exist: pop {verb} --after {} (or a larger --first)",
            text(page, "endCursor")
        );
    }
}

/// `pop cancel ID`.
pub async fn cancel(
    client: &Client,
    id: &str,
    customer: Option<&str>,
    reason: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let data = client
        .graphql(
            "mutation($a: String!, $c: String, $r: String) { cancelAgenda(agendaId: $a, \
             customerId: $c, reason: $r) { progress { id customerId processingState \
             processingStateMessage } position } }",
            json!({"a": id, "c": customer, "r": reason}),
        )
        .await?;
    let r = &data["cancelAgenda"];
    if as_json {
        output::json(r);
    } else {
        // Whose agenda it was (hostile28: an operator cancelled another customer's agenda of
        // the id and read only "cancelled").
        out!(
            "agenda {} of customer {}: {}",
            output::one_line(id),
            output::one_line(output::text(&r["progress"], "customerId")),
            output::outcome(&r["progress"])
        );
    }
    Ok(())
}

/// `pop rerun ID --mode …`: POP's rerun flags.
pub async fn rerun(
    client: &Client,
    id: &str,
    customer: Option<&str>,
    flags: &[String],
    as_json: bool,
) -> Result<()> {
    let data = client
        .graphql(
            "mutation($a: String!, $c: String, $p: [String!]) { rerunAgenda(agendaId: $a, \
             customerId: $c, params: $p) { agenda { operations { name } } progress { id \
             customerId processingState processingStateMessage operationProgress { operation \
             processingState } } position } }",
            json!({"a": id, "c": customer, "p": flags}),
        )
        .await?;
    let r = &data["rerunAgenda"];
    if as_json {
        output::json(r);
    } else {
        let mode = if flags.is_empty() { "resetAll".to_string() } else { flags.join(", ") };
        out!("agenda {id}: rerun ({mode}), now {}", output::outcome(&r["progress"]));
        // Which operations run again: a reset takes every operation depending on the ones named
        // too (newcomer19: only `pop audit` showed that an expensive step downstream was reset).
        let kept: Vec<&str> = r["progress"]["operationProgress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["processingState"] == "COMPLETE")
            .filter_map(|o| o["operation"].as_str())
            .collect();
        let again: Vec<&str> = r["agenda"]["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["name"].as_str())
            .filter(|name| !kept.contains(name))
            .collect();
        let skipped = flags.iter().any(|f| f == "skipExecution");
        if !again.is_empty() && !skipped {
            out!("runs again:   {}", output::names(&again));
        }
        // The suggested commands name the agenda's customer (hostile29: without it, pasted,
        // one cancelled another customer's agenda of a look-alike id).
        let customer = Some(text(&r["progress"], "customerId"));
        if skipped {
            // (newcomer12: the watch it suggested never ended; ops3am24: it said only a cancel
            // ends it, though a rerun starts it.)
            out!(
                "not queued (skip-execution): no worker takes it; it stays pending until it \
                 is rerun ({}) or cancelled ({})",
                output::command("rerun", id, customer, &[]),
                output::command("cancel", id, customer, &[])
            );
        } else {
            out!(
                "watch it:     {}",
                output::command("watch", text(&r["progress"], "id"), customer, &[])
            );
        }
    }
    Ok(())
}

/// `pop events ID`: the agenda's stream, oldest first.
pub async fn events(
    client: &Client,
    id: &str,
    customer: Option<&str>,
    first: u32,
    after: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let data = client
        .graphql(
            "query($a: String!, $c: String, $n: Int, $after: String) { agendaEvents(agendaId: \
             $a, customerId: $c, first: $n, after: $after) { items { version position type \
             time data } endCursor hasNextPage } }",
            json!({"a": id, "c": customer, "n": first, "after": after}),
        )
        .await?;
    let page = &data["agendaEvents"];
    if page.is_null() {
        bail!(
            "NOT_FOUND: no agenda {id:?} visible to this token (`pop agendas` lists them){}",
            client.cid_note()
        );
    }
    if as_json {
        output::json(page);
        return Ok(());
    }
    let rows = rows(page, |e| {
        vec![
            e["version"].to_string(),
            text(e, "position").to_string(),
            text(e, "time").to_string(),
            text(e, "type").to_string(),
        ]
    });
    table(&["VERSION", "POSITION", "TIME", "TYPE"], &rows);
    more(page, &format!("events {id}"));
    Ok(())
}

/// Which configuration list `pop insights|pools|customers|templates` shows.
#[derive(Debug, Clone, Copy)]
pub enum ConfigKind {
    Insights,
    Pools,
    Customers,
    Templates,
}

/// `pop insights`, `pop pools`, `pop customers`, `pop templates`.
pub async fn configs(client: &Client, kind: ConfigKind, as_json: bool) -> Result<()> {
    let (field, fields, headers): (&str, &str, &[&str]) = match kind {
        ConfigKind::Insights => (
            "insights",
            "id customerId title resourcePoolId queueSize mappers isGlobal queueDepth waiting \
             executing",
            &["ID", "OWNER", "POOL", "TYPES", "QUEUED", "WAITING", "RUNNING", "TITLE"],
        ),
        ConfigKind::Pools => (
            "resourcePools",
            "id customerId title insightIds",
            &["ID", "OWNER", "INSIGHTS", "TITLE"],
        ),
        ConfigKind::Customers => ("customers", "id title resourcePoolId", &["ID", "POOL", "TITLE"]),
        ConfigKind::Templates => (
            "templates",
            "id customerId title isGlobal staticParameters",
            &["ID", "OWNER", "GLOBAL", "TITLE"],
        ),
    };
    let data = client
        .graphql(
            &format!("{{ {field}(first: 100) {{ items {{ {fields} }} hasNextPage endCursor }} }}"),
            json!({}),
        )
        .await?;
    let page = &data[field];
    if as_json {
        output::json(page);
        return Ok(());
    }
    let rows = rows(page, |o| match kind {
        ConfigKind::Insights => vec![
            text(o, "id").into(),
            text(o, "customerId").into(),
            text(o, "resourcePoolId").into(),
            o["mappers"]["operationType"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            o["queueDepth"].to_string(),
            o["waiting"].to_string(),
            o["executing"].to_string(),
            text(o, "title").into(),
        ],
        ConfigKind::Pools => vec![
            text(o, "id").into(),
            text(o, "customerId").into(),
            o["insightIds"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            text(o, "title").into(),
        ],
        ConfigKind::Customers => {
            vec![text(o, "id").into(), text(o, "resourcePoolId").into(), text(o, "title").into()]
        }
        ConfigKind::Templates => vec![
            text(o, "id").into(),
            text(o, "customerId").into(),
            o["isGlobal"].to_string(),
            text(o, "title").into(),
        ],
    });
    if rows.is_empty() {
        eprintln!("pop: none visible to this token");
    } else {
        table(headers, &rows);
    }
    if page["hasNextPage"].as_bool() == Some(true) {
        eprintln!("pop: more than 100 exist; `--json` with `pop gql` pages through them");
    }
    Ok(())
}

/// `pop run TEMPLATE [--payload JSON]`: runs a template; `--watch` then watches the agenda.
pub async fn run(
    client: &Client,
    template: &str,
    payload: Option<&str>,
    customer: Option<&str>,
    as_json: bool,
    then_watch: Option<crate::watch::Watching>,
) -> Result<()> {
    let payload_given = payload.is_some();
    let payload: Value = match payload {
        Some(p) => {
            let value = serde_json::from_str(p)
                .map_err(|e| anyhow::anyhow!("VALIDATION: --payload is not JSON: {e}"))?;
            // As `pop submit` does (reaudit59 M2: kept rounded, 1e+20).
            crate::tour::refuse_wide_integer("--payload", p)?;
            value
        }
        None => Value::Null,
    };
    let data = client
        .graphql(
            "mutation($t: String!, $p: JSON, $c: String) { runTemplate(templateId: $t, \
             payload: $p, customerId: $c) { agenda { id progressId customerId } progress { \
             processingState processingStateMessage } position } }",
            json!({"t": template, "p": payload, "c": customer}),
        )
        .await
        .map_err(|e| {
            // The template reads a payload that was not given (newcomer60 L2: three "has no
            // value at /movie" problems, never the flag).
            let text = e.to_string();
            if !payload_given && text.contains("pop.payload") {
                anyhow::anyhow!(
                    "{text}\npop: no --payload was given; this template reads one: `pop run \
                     {template} --payload '{{…}}'`"
                )
            } else {
                e
            }
        })?;
    let r = &data["runTemplate"];
    let progress_id = text(&r["agenda"], "progressId").to_string();
    if as_json {
        output::json(r);
    } else {
        out!("submitted agenda {} from template {template}", text(&r["agenda"], "id"));
        if then_watch.is_none() {
            let customer = Some(text(&r["agenda"], "customerId"));
            out!("watch it:     {}", output::command("watch", &progress_id, customer, &[]));
        }
    }
    if let Some(watching) = then_watch {
        let customer = text(&r["agenda"], "customerId");
        return crate::watch::watch(client, &progress_id, Some(customer), watching).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint's list is the example file's: a handler added there or taken out fails here.
    #[test]
    fn the_example_handler_types_are_the_example_files() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/handlers.toml");
        let text = std::fs::read_to_string(path).expect("examples/handlers.toml");
        let mut found: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("[handlers.")?.strip_suffix(']'))
            .collect();
        found.sort_unstable();
        let mut listed = EXAMPLE_HANDLER_TYPES.to_vec();
        listed.sort_unstable();
        assert_eq!(found, listed);
    }
}
