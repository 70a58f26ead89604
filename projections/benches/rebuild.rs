//! Rebuild benchmark: (a) the rate of a rebuild from position 0 of a SQLite log (read, decode,
//! fold) in events per second; (b) the heap bytes per agenda of five operations held in the
//! read models, for finished (settled) agendas and for live ones.
//!
//! `cargo bench -p pop-projections --bench rebuild -- [--agendas N] [--runs R]
//! [--memory-agendas M] [--breakdown] [--customer-keys]`. Rates are the median of R runs. Targets:
//! ≥ 1,000,000 events/s for the rebuild including the fold (issue 18; issue 3 asked for 500,000),
//! ≤ 4 KiB per live agenda and ≤ 1 KiB per finished one.

#[path = "../../bench/cpu.rs"]
mod cpu;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use cpu::cpu_seconds;

use cap::Cap;
use pop_projections::{ReadModels, rebuild, snapshot};
use pop_store::EventStore;
use support::{Fallible, Log, write_agendas, write_agendas_keyed};

/// Counts every heap byte the process holds (the sum of live allocation sizes) on top of
/// mimalloc, the allocator the `pop` binary uses. The atomic counter costs the rebuild some
/// speed, so the rates printed here are a little pessimistic.
#[global_allocator]
static HEAP: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Customers the agendas are spread over (per-customer indexes are part of the cost).
const CUSTOMERS: usize = 50;
/// Concurrent appenders while writing the log, so the store group-commits.
const WRITERS: usize = 64;

struct Args {
    agendas: usize,
    runs: usize,
    memory_agendas: usize,
    /// Also time decoding and folding alone, on one thread, from events held in memory.
    breakdown: bool,
    /// Also measure memory with streams keyed as pop keys them (`agenda-<customer>/<id>`);
    /// the figures above keep `agenda-<id>`, comparable with earlier ones.
    customer_keys: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        agendas: 20_000,
        runs: 3,
        memory_agendas: 10_000,
        breakdown: false,
        customer_keys: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--agendas" => args.agendas = number("--agendas")?,
            "--runs" => args.runs = number("--runs")?,
            "--memory-agendas" => args.memory_agendas = number("--memory-agendas")?,
            "--breakdown" => args.breakdown = true,
            "--customer-keys" => args.customer_keys = true,
            // `cargo bench` passes `--bench`; ignore it and other harness flags.
            other if other.starts_with("--") => {}
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(args)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn rebuilt(store: Arc<dyn EventStore>) -> Fallible<ReadModels> {
    Ok(rebuild(store, |_| {}).await?)
}

/// Heap bytes the models of `count` agendas hold: allocated before dropping them minus after.
/// For live agendas (`!finish`), also prints where one agenda's bytes go.
async fn bytes_per_agenda(count: usize, finish: bool, scoped: bool) -> Fallible<(f64, usize)> {
    let log = Log::open().await?;
    write_agendas_keyed(&log, count, CUSTOMERS, WRITERS, finish, scoped).await?;
    let models = rebuilt(log.dyn_store()).await?;
    let entries = models.agendas().entries_by_id();
    let settled = entries.iter().filter(|e| e.is_settled()).count();
    let body: usize = entries.iter().map(|e| e.settled_bytes()).sum();
    drop(entries);
    let with = HEAP.allocated();
    let parts = if finish { None } else { live_breakdown(&models) };
    drop(models);
    let without = HEAP.allocated();
    let per_agenda = with.saturating_sub(without) as f64 / count as f64;
    if settled > 0 {
        let body = body as f64 / settled as f64;
        println!(
            "  a settled agenda's compressed body: {body:.0} B on average; the rest of its {per_agenda:.0} B is the entry, keys, indexes and tables"
        );
    }
    if let Some((key, mut parts)) = parts {
        let state: usize = parts.iter().map(|(_, b)| b).sum();
        parts.push((
            "entry, keys, indexes, maps (the rest)",
            (per_agenda as usize).saturating_sub(state),
        ));
        println!("  where a live agenda's {per_agenda:.0} bytes go ({key}):");
        for (part, bytes) in parts {
            println!("    {bytes:>6} B  {part}");
        }
    }
    Ok((with.saturating_sub(without) as f64 / count as f64, settled))
}

/// Heap bytes `make` allocates and keeps in what it returns (measured around building it, so
/// it must not free anything it did not allocate).
fn heap_of<T>(make: impl FnOnce() -> T) -> usize {
    let before = HEAP.allocated();
    let kept = make();
    let bytes = HEAP.allocated().saturating_sub(before);
    drop(kept);
    bytes
}

/// Where one live agenda's bytes go: each part of its state cloned and measured (a clone
/// allocates the same shape as the state holds: `evolve` builds it by cloning), the rest of the
/// per-agenda cost being the entry, its keys and the indexes.
fn live_breakdown(models: &ReadModels) -> Option<(String, Vec<(&'static str, usize)>)> {
    let entry = models.agendas().entries_by_id().into_iter().find(|e| !e.is_settled())?;
    let state = entry.state().ok()?;
    let state = state.as_ref();
    let whole = heap_of(|| state.clone());
    let progress = state.progress();
    let mut parts: Vec<(&'static str, usize)> = Vec::new();
    if let Some(agenda) = state.agenda() {
        let ops = &agenda.operations;
        parts.push((
            "agenda.operations[]: the array",
            ops.capacity() * std::mem::size_of::<pop_domain::Operation>(),
        ));
        parts.push((
            "agenda.operations[].payload",
            ops.iter().map(|o| heap_of(|| o.payload.clone())).sum(),
        ));
        parts.push((
            "agenda.operations[].params",
            ops.iter().map(|o| heap_of(|| o.params.clone())).sum(),
        ));
        parts.push(("agenda.params", heap_of(|| agenda.params.clone())));
        let agenda_total = heap_of(|| agenda.clone());
        let named: usize = parts.iter().map(|(_, b)| b).sum();
        parts.push(("agenda: strings", agenda_total.saturating_sub(named)));
    }
    let before = parts.iter().map(|(_, b)| b).sum::<usize>();
    let ops = &progress.operation_progress;
    parts.push((
        "progress.operationProgress[]: the array",
        ops.capacity() * std::mem::size_of::<pop_domain::OperationProgress>(),
    ));
    parts.push((
        "progress.operationProgress[].resultPayload",
        ops.iter().map(|o| heap_of(|| o.result_payload.clone())).sum(),
    ));
    parts.push((
        "progress.operationProgress[].params",
        ops.iter().map(|o| heap_of(|| o.params.clone())).sum(),
    ));
    parts.push((
        "progress.operationProgress[].diagnosticEvents",
        ops.iter().map(|o| heap_of(|| o.diagnostic_events.clone())).sum(),
    ));
    parts.push(("progress.params", heap_of(|| progress.params.clone())));
    let progress_named: usize = parts.iter().map(|(_, b)| b).sum::<usize>() - before;
    let progress_total = heap_of(|| progress.clone());
    parts.push(("progress: strings, diagnostics", progress_total.saturating_sub(progress_named)));
    let state_total = whole + std::mem::size_of::<pop_domain::agenda::AgendaState>();
    let named: usize = parts.iter().map(|(_, b)| b).sum();
    parts.push(("AgendaState box (inline fields), lease", state_total.saturating_sub(named)));
    Some((entry.key().to_string(), parts))
}

/// Where a rebuild's time goes: decoding and folding timed apart, single-threaded, from
/// events already read into memory.
async fn breakdown(log: &Log) -> Fallible<()> {
    let mut all = Vec::new();
    let mut after = pop_store::Position::START;
    loop {
        let batch = log.store.read_all(after, pop_projections::runner::REBUILD_BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        all.extend(batch);
    }
    let started = Instant::now();
    let decoded: Vec<_> = all.iter().map(pop_projections::decode).collect::<Result<_, _>>()?;
    let decode_rate = all.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut models = ReadModels::new();
    for (event, decoded) in all.iter().zip(&decoded) {
        models.apply(event.position, decoded, None)?;
    }
    let apply_rate = all.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "  breakdown (one thread, in memory): decode {decode_rate:.0} events/s, fold {apply_rate:.0} events/s"
    );
    Ok(())
}

async fn bench(args: Args) -> Fallible<()> {
    println!("rebuild benchmark: {} agendas × 5 operations, {} runs", args.agendas, args.runs);
    let log = Log::open().await?;
    let started = Instant::now();
    let events = write_agendas(&log, args.agendas, CUSTOMERS, WRITERS, true).await?;
    println!("  wrote {events} events in {:.1} s", started.elapsed().as_secs_f64());

    let mut rates = Vec::new();
    let mut read_rates = Vec::new();
    let mut cpu_rates = Vec::new();
    for run in 1..=args.runs {
        // The store's share: reading the log without decoding or folding.
        let started = Instant::now();
        let mut after = pop_store::Position::START;
        let mut read = 0u64;
        loop {
            let batch = log.store.read_all(after, pop_projections::runner::REBUILD_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            read += batch.len() as u64;
        }
        read_rates.push(read as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        let cpu_before = cpu_seconds();
        let models = rebuilt(log.dyn_store()).await?;
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
        let rate = events as f64 / secs;
        println!(
            "  run {run}: rebuild {:.3} s, {:.0} events/s ({} agendas), {:.2} CPU s ({:.0} events per CPU-second); read alone {:.0} events/s",
            secs,
            rate,
            models.agendas().len(),
            cpu.unwrap_or(0.0),
            cpu.filter(|c| *c > 0.0).map_or(0.0, |c| events as f64 / c),
            read_rates.last().copied().unwrap_or(0.0)
        );
        rates.push(rate);
        if let Some(cpu) = cpu.filter(|c| *c > 0.0) {
            cpu_rates.push(events as f64 / cpu);
        }
        if run == args.runs {
            let dir = tempfile::tempdir()?;
            let started = Instant::now();
            let info = snapshot::save(dir.path(), &models)?;
            let saved = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let loaded = snapshot::load(dir.path())?;
            let loaded_secs = started.elapsed().as_secs_f64();
            println!(
                "  snapshot: {:.1} MiB, written in {saved:.2} s, loaded in {loaded_secs:.2} s ({} agendas)",
                info.bytes as f64 / (1024.0 * 1024.0),
                loaded.agendas().len()
            );
        }
    }
    if args.breakdown {
        breakdown(&log).await?;
    }
    let rate = median(rates);
    println!(
        "rebuild rate (median): {rate:.0} events/s [target ≥ 1000000: {} ({:.2}x)]; reading alone {:.0} events/s",
        if rate >= 1_000_000.0 { "met" } else { "NOT met" },
        rate / 1_000_000.0,
        median(read_rates)
    );
    println!(
        "rebuild CPU cost (median): {:.0} events per CPU-second (all threads)",
        median(cpu_rates)
    );

    let (settled, n) = bytes_per_agenda(args.memory_agendas, true, false).await?;
    println!(
        "memory per finished agenda (5 operations, {n} of {} settled): {settled:.0} bytes [target ≤ 1024: {}]",
        args.memory_agendas,
        if settled <= 1024.0 { "met" } else { "NOT met" }
    );
    let (live, _) = bytes_per_agenda(args.memory_agendas, false, false).await?;
    println!(
        "memory per live agenda (5 operations, executing): {live:.0} bytes [target ≤ 4096: {}]",
        if live <= 4096.0 { "met" } else { "NOT met" }
    );
    if args.customer_keys {
        let (settled, _) = bytes_per_agenda(args.memory_agendas, true, true).await?;
        let (live, _) = bytes_per_agenda(args.memory_agendas, false, true).await?;
        println!(
            "with pop's stream keys (agenda-<customer>/<id>): {settled:.0} bytes per finished agenda [target ≤ 1024: {}], {live:.0} per live one [target ≤ 4096: {}]",
            if settled <= 1024.0 { "met" } else { "NOT met" },
            if live <= 4096.0 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("starting the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
