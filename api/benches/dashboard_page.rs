//! The dashboard's list budget: the first page of `agendaProgressList` (and `agendaStats`)
//! over real HTTP with a million agendas in the read models.
//!
//! ```sh
//! cargo bench -p pop-api --bench dashboard_page -- --agendas 1000000 --runs 21
//! ```
//!
//! What it does: a SQLite store (durability normal: loading is not what is measured) in a
//! temp dir, the real projections runner and the real router on 127.0.0.1; a pool, 100
//! customers and one insight created over GraphQL; then `--agendas` two-operation agendas
//! submitted through the application layer (`App::submit`, 64 at a time), spread over the
//! customers and 1,000 linkIds. Once the read models have them all, each query below is
//! POSTed `--runs` times as the dashboard sends it (first page of 50), and the median, p95 and
//! maximum wall time of the round trip are printed, for an admin (every customer) and for a
//! user of one customer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pop_api::auth::{Role, Tokens, principal};
use pop_api::{ApiConfig, AppState, router};
use pop_app::Caller;
use pop_projections::{Runner, RunnerConfig};
use pop_store::{Commands, Durability, EventStore, SqliteOptions, SqliteStore};
use serde_json::{Value, json};

const ADMIN: &str = "tok_bench_admin_000000000000000000";
const USER: &str = "tok_bench_user_c007_0000000000000";
const CUSTOMERS: usize = 100;
const LINKS: usize = 1_000;
const WRITERS: usize = 64;

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Args {
    agendas: usize,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { agendas: 1_000_000, runs: 21 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--agendas" => args.agendas = value("--agendas")?,
            "--runs" => args.runs = value("--runs")?.max(1),
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

async fn post(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Fallible<Value> {
    let response =
        http.post(format!("{base}/graphql")).bearer_auth(token).json(body).send().await?;
    let value: Value = response.json().await?;
    if value.get("errors").is_some() {
        return Err(format!("GraphQL errors: {value}").into());
    }
    Ok(value)
}

fn agenda(i: usize) -> Value {
    json!({
        "customerId": format!("c{:03}", i % CUSTOMERS),
        "linkId": format!("batch-{}", i % LINKS),
        "title": "bench",
        "operations": [
            {"name": "probe", "type": "ffmpeg", "payload": {"src": format!("in-{i}.mp4")}},
            {"name": "encode", "type": "ffmpeg", "payload": "@<probe.out::/streams>"}
        ]
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

async fn bench(args: Args) -> Fallible<()> {
    let dir = tempfile::tempdir()?;
    let options = SqliteOptions { durability: Durability::Normal, ..SqliteOptions::default() };
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(dir.path().join("pop.db"), options).await?);
    let commands = Arc::new(Commands::new(Arc::clone(&store)));
    let (runner, projections) = Runner::start(Arc::clone(&store), RunnerConfig::default()).await;
    tokio::spawn(async move {
        if let Err(e) = runner.run(std::future::pending()).await {
            eprintln!("projections runner stopped: {e}");
        }
    });
    let mut tokens = Tokens::new();
    tokens.insert(ADMIN, principal("admin", Role::Admin, &["*"]))?;
    tokens.insert(USER, principal("user-c007", Role::User, &["c007"]))?;
    let state = AppState::new(
        Arc::clone(&store),
        commands,
        projections.clone(),
        tokens,
        ApiConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();

    let mutation = |name: &str, arg: &str, value: Value| json!({"query": format!("mutation($v: JSON!) {{ {name}({arg}: $v) {{ position }} }}"), "variables": {"v": value}});
    post(
        &http,
        &base,
        ADMIN,
        &mutation(
            "createResourcePool",
            "resourcePool",
            json!({"id": "pool", "customerId": "ops", "title": "Pool"}),
        ),
    )
    .await?;
    for c in 0..CUSTOMERS {
        let id = format!("c{c:03}");
        post(
            &http,
            &base,
            ADMIN,
            &mutation(
                "createCustomer",
                "customer",
                json!({"id": id, "title": id, "resourcePoolId": "pool"}),
            ),
        )
        .await?;
    }
    let insight = json!({"id": "transcode", "customerId": "ops", "title": "Transcode",
        "resourcePoolId": "pool", "queueSize": 10, "isGlobal": true,
        "mappers": {"operationType": ["ffmpeg"]}});
    let last = post(&http, &base, ADMIN, &mutation("createInsight", "insight", insight)).await?;
    let at = last["data"]["createInsight"]["position"].as_str().unwrap_or_default().to_string();
    state.app().settle(Some(&at)).await.map_err(|e| e.message)?;

    println!("loading {} agendas ({} customers, {} linkIds)…", args.agendas, CUSTOMERS, LINKS);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let caller = Caller::new(principal("admin", Role::Admin, &["*"]), "bench");
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (next, app, caller, total) =
            (Arc::clone(&next), state.app().clone(), caller.clone(), args.agendas);
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), String>(());
                }
                app.submit(&caller, agenda(i), None, None).await.map_err(|e| e.message)?;
                if i > 0 && i % 100_000 == 0 {
                    println!("  {i} submitted");
                }
            }
        }));
    }
    for w in writers {
        w.await??;
    }
    let head = store.head().await?;
    while projections.applied() < head {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loaded = started.elapsed();
    println!(
        "loaded in {:.1} s ({:.0} agendas/s); read models hold {} agendas",
        loaded.as_secs_f64(),
        args.agendas as f64 / loaded.as_secs_f64(),
        projections.read().agendas().len()
    );

    const FIELDS: &str = "items { id agendaId customerId title linkId processingState processingStateMessage percentComplete addedTime updatedTime startedTime completedTime agendaInsight { insightId resourcePoolId } } endCursor hasNextPage position";
    let list = |filter: Value| json!({"query": format!("query($f: AgendaFilter) {{ agendaProgressList(filter: $f, first: 50) {{ {FIELDS} }} }}"), "variables": {"f": filter}});
    let cases: Vec<(&str, &str, Value)> = vec![
        ("admin, no filter (oldest first)", ADMIN, list(json!({}))),
        (
            "admin, no filter, newest first (the dashboard's default)",
            ADMIN,
            list(json!({"newestFirst": true})),
        ),
        ("admin, updated order", ADMIN, list(json!({"order": "UPDATED_TIME"}))),
        (
            "admin, recently changed first",
            ADMIN,
            list(json!({"order": "UPDATED_TIME", "newestFirst": true})),
        ),
        ("admin, customer c042", ADMIN, list(json!({"customerId": "c042"}))),
        ("admin, linkId batch-7", ADMIN, list(json!({"linkId": "batch-7"}))),
        ("admin, insight transcode", ADMIN, list(json!({"insightId": "transcode"}))),
        ("admin, state EXECUTING (none)", ADMIN, list(json!({"processingState": "EXECUTING"}))),
        ("user of c007, no filter", USER, list(json!({}))),
        ("user of c007, newest first", USER, list(json!({"newestFirst": true}))),
        (
            "admin, agendaStats (60 min)",
            ADMIN,
            json!({"query": "{ agendaStats(minutes: 60) { waiting executing succeeded failed cancelled perMinute { minute succeeded } } }"}),
        ),
        (
            "user of c007, agendaStats",
            USER,
            json!({"query": "{ agendaStats { waiting executing succeeded failed cancelled } }"}),
        ),
    ];
    println!(
        "{:<36} {:>10} {:>10} {:>10}  (ms, {} runs each)",
        "query", "median", "p95", "max", args.runs
    );
    for (name, token, body) in cases {
        // One warm-up (parse cache, connection).
        let first = post(&http, &base, token, &body).await?;
        let mut times = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let t = Instant::now();
            post(&http, &base, token, &body).await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let items = first["data"]["agendaProgressList"]["items"].as_array().map_or(0, Vec::len);
        println!(
            "{:<36} {:>10.2} {:>10.2} {:>10.2}  {}",
            name,
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1],
            if body["query"].as_str().unwrap_or_default().contains("agendaProgressList") {
                format!("{items} items")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
