//! `pop verify`: recomputes every event's digest and chain link, every stream's head, every
//! tombstone's recorded head hash, and then the whole log in global order against its signed
//! checkpoints (their signatures, sequence, links, counts, log hashes and stream lists) — of
//! the embedded store in the data directory, or of the PostgreSQL store at `--store` — prints
//! what it checked, and on the first break prints its stream, version and position and exits
//! non-zero. It writes nothing and takes no lock (the embedded file is opened read-only;
//! PostgreSQL is read in one read-only snapshot), so it may run beside `pop serve`.
//!
//! The signatures are checked with `--public-key`, else the public half of the checkpoint key
//! (`--checkpoint-key`, or `<data-dir>/checkpoint.key`); without any, verification says it did
//! not check them. The store must also still hold, unchanged, the checkpoint `pop serve`
//! witnessed for it (`--witness`, or `<data-dir>/checkpoint.witness`): without a witness,
//! checkpoints deleted and the log rewritten and sealed again cannot be told apart from a log
//! never sealed, and verification says so. One rule still catches deleted checkpoints without
//! it: the events no checkpoint covers must have been written within `--max-unsealed-span`
//! (a running server seals every few seconds; deleted checkpoints leave a long span).

use anyhow::{Context, Result, bail};

use std::path::{Path, PathBuf};

use pop_store::commitment::Trust;
use pop_store::verify::Verification;
use pop_store::{Position, SqliteLogFile, SqliteStore};

use crate::cli::VerifyArgs;

pub async fn run(args: VerifyArgs) -> Result<()> {
    let key = crate::checkpoints::verifying_key(
        &args.store.data_dir,
        args.checkpoint_key.as_deref(),
        args.public_key.as_deref(),
    )?;
    let witness = crate::checkpoints::Witness::of(
        &args.store.data_dir,
        args.witness.as_deref(),
        args.store_url.as_deref(),
    );
    let witnessed = witness.read()?;
    if args.witness.is_some() && witnessed.is_none() {
        if !witness.path().exists() {
            bail!("no witness file at {} (--witness)", witness.path().display());
        }
        bail!("{} holds no checkpoint of this store", witness.path().display());
    }
    let note = match &witnessed {
        Some(w) => format!(
            "checked against checkpoint {} witnessed in {}",
            w.seq,
            witness.path().display()
        ),
        // (newcomer12: "no witnessed checkpoint (pop-data/checkpoint.witness)" read as a
        // missing file where the file witnessed the embedded store and not this one.)
        None if witness.path().exists() => format!(
            "NOTE: no witnessed checkpoint of this store ({} witnesses another store only; \
             --witness names another file): the log's tail cut back to any checkpoint, \
             checkpoints and all, would pass without the key, and so would checkpoints deleted \
             and the log rewritten and sealed again by a server or a holder of the key",
            witness.path().display()
        ),
        None => format!(
            "NOTE: no witnessed checkpoint ({} does not exist yet; --witness): the log's tail \
             cut back to any checkpoint, checkpoints and all, would pass without the key, and \
             so would checkpoints deleted and the log rewritten and sealed again by a server or \
             a holder of the key",
            witness.path().display()
        ),
    };
    let trust = Trust { key, witness: witnessed };
    let report = match &args.store_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            pop_store::postgres::verify_trusting(url, trust)
                .await
                .context("verifying the PostgreSQL store")?
        }
        Some(_) => bail!("pop verify checks the embedded store or a PostgreSQL one (postgres://…)"),
        None => {
            let path = args.store.db_path();
            if !path.exists() {
                bail!("no embedded store at {}", path.display());
            }
            crate::checkpoints::Witness::refuse_after_move(
                &args.store.data_dir,
                args.witness.as_deref(),
                &path,
                "verify",
            )?;
            let file = path.clone();
            // SQLite's check of the file's structure, beside the walk of its contents (on the
            // other core): an index the walk does not read can be what every write fails on.
            let structure = {
                let file = path.clone();
                tokio::task::spawn_blocking(move || SqliteStore::check_file(&file, FILE_PROBLEMS))
            };
            let walked = tokio::task::spawn_blocking(move || {
                SqliteStore::verify_file_trusting(&file, trust)
            })
            .await?;
            let problems = match structure.await? {
                Ok(problems) => problems,
                // Not damage (the file busy, say): the walk's result stands, and the check not
                // made is said (review55 L3: exit 1 for a store the walk verified).
                Err(e) => {
                    if walked.is_ok() {
                        eprintln!(
                            "pop: warning: SQLite's check of the file's structure did not run \
                             ({}); what follows is the walk of its events alone",
                            pop_domain::error::ErrorChain(&e)
                        );
                    }
                    Vec::new()
                }
            };
            match walked {
                Ok(report) if !problems.is_empty() => {
                    if let Some(b) = &report.first_break {
                        println!("TAMPERED: {b}");
                    }
                    return Err(not_intact(format!(
                        "NOT INTACT: the store file {} is damaged: SQLite's check of its \
                         structure finds {}{}: {}. {}Writes to it fail where they meet the \
                         damage. Stop the server, keep a copy of the data directory, then \
                         restore it from a backup, or `pop export` what still reads and `pop \
                         import` it into a new one",
                        path.display(),
                        if problems.len() as u32 >= FILE_PROBLEMS { "at least " } else { "" },
                        plural(problems.len(), "problem"),
                        problems.join("; "),
                        if report.is_intact() {
                            format!(
                                "Its {} events, their chains and checkpoints verify (the tables \
                                 read back whole); what is damaged is the file's structure. ",
                                report.events
                            )
                        } else {
                            String::new()
                        }
                    )));
                }
                Ok(report) => report,
                // Not a store that could not be reached: one that cannot be trusted
                // (newcomer54: exit 1, "unreachable" to a cron job, for a malformed file).
                Err(e) if e.is_damaged_file() => {
                    let cause = pop_domain::error::ErrorChain(&e).to_string();
                    // The write-ahead log's refusal says all there is to do, its acceptance
                    // included (newcomer56 L7: "stop the server" and no word of it).
                    let then = if cause.contains("write-ahead log") {
                        String::new()
                    } else {
                        ". Stop any server on it, then restore the data directory from a \
                         backup, or `pop import` an export taken before into a new one"
                            .to_owned()
                    };
                    return Err(not_intact(format!(
                        "NOT INTACT: the store file {} is damaged ({cause}): its events cannot \
                         be read back, so nothing in it is verified{then}",
                        path.display(),
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let span = args.unsealed.max_span();
    // The snapshot the server starts from is checked once the log is known to be intact.
    let snapshot = if args.store_url.is_none() && !args.skip_snapshot && report.is_intact() {
        let data_dir = args.store.data_dir.clone();
        let db = args.store.db_path();
        tokio::task::spawn_blocking(move || check_snapshot(&data_dir, &db)).await??
    } else {
        None
    };
    let key_note = report.first_break.as_ref().and_then(|b| {
        crate::checkpoints::defaulted_key_note(
            &args.store.data_dir,
            args.checkpoint_key.as_deref(),
            crate::checkpoints::KeyFlags::CheckpointOrPublicKey(args.public_key.as_deref()),
            &b.to_string(),
        )
    });
    print_report(report, &note, span, snapshot, key_note)
}

/// What an operator does once `pop verify` found the log changed outside pop.
const AFTER_TAMPERED: &str = "What to do: keep a copy of the data directory (or a dump of the \
    database) as it is now, before anything else writes to it; `pop log --stream <stream>` shows \
    the events around the position named; then restore the store from a backup or an export \
    taken before the change (`pop import` into a new store verifies it whole), and find who \
    could write to the store's files or database.";

/// At most this many of SQLite's problems with the file are said.
const FILE_PROBLEMS: u32 = 5;

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// What the check of the read-model snapshot found.
enum SnapshotCheck {
    /// Caught up to the log's head, it equals the log folded from its start.
    Matches { dir: PathBuf, position: Position, head: Position },
    /// It does not: edited outside pop. `at`: where, as far as told.
    Differs { dir: PathBuf, position: Position, head: Position, at: String },
    /// The server would not load it or would set it aside (it rebuilds from the log instead).
    Unusable(String),
}

/// Agendas of the snapshot checked against the log as `pop serve` checks them at start (its
/// most recently added ones): a snapshot holding one the log never had is another store's.
const SNAPSHOT_AGENDAS_CHECKED: usize = 8;

/// Folds the embedded store's log (read through a read-only connection, as `pop log` reads it)
/// from its start, and the read-model snapshot `pop serve` starts from caught up over the same
/// log, and compares them — the state of every agenda and object, and the fields lists and
/// tenancy filter on, kept beside the state (auditor22: a snapshot edited with its checksums
/// recomputed — they are not keyed — was served as the live read models while `pop verify`
/// said intact; auditor23: its customer field alone, edited, served one customer's agenda to
/// another). A snapshot the server would set aside (past the log's end, another store's: after
/// a restore) is said, not called tampered (auditor23). `None`: there is no snapshot.
fn check_snapshot(data_dir: &Path, db: &Path) -> Result<Option<SnapshotCheck>> {
    use pop_projections::query::Visibility;
    use pop_projections::{AgendaQuery, ReadModels, Unusable, fold_events};
    let dir = crate::backend::snapshot_dir(data_dir, None);
    let snapshot = match pop_projections::snapshot::load(&dir) {
        Ok(models) => models,
        Err(Unusable::Missing(_)) => return Ok(None),
        Err(e) => {
            return Ok(Some(SnapshotCheck::Unusable(format!("{e}; `pop serve` does not load it"))));
        }
    };
    let mut file = SqliteLogFile::open(db).with_context(|| format!("opening {}", db.display()))?;
    const BATCH: usize = 2_000;
    // The whole log as it is now: its head bounds the snapshot's catching up, so events a
    // running server appends meanwhile are in neither.
    let mut folded = ReadModels::new();
    let mut head = Position::START;
    loop {
        let batch = file.read_all(head, BATCH).context("reading the log")?;
        let Some(last) = batch.last() else { break };
        head = last.position;
        fold_events(&mut folded, &batch).context("folding the log")?;
    }
    let position = snapshot.position();
    // Both causes are named (auditor29: a cut tail was said to be a restore, as a fact).
    if position > head {
        return Ok(Some(SnapshotCheck::Unusable(format!(
            "it is at position {position}, past the end of the log ({head}): the log lost \
             entries it held when the snapshot was written, restored from an older backup or \
             its tail cut (the snapshot is not signed: a hint, not proof); `pop serve` sets it \
             aside"
        ))));
    }
    let all = Visibility::All;
    let mut newest = AgendaQuery::new(&all);
    newest.descending = true;
    newest.limit = SNAPSHOT_AGENDAS_CHECKED;
    let keys: Vec<String> =
        snapshot.select_agendas(&newest).items.iter().map(|e| e.key().to_owned()).collect();
    for key in keys {
        let stream = format!("agenda-{key}");
        if file
            .read_stream(&stream, 0, 1, pop_store::Direction::Forwards)
            .is_ok_and(|events| events.is_empty())
        {
            return Ok(Some(SnapshotCheck::Unusable(format!(
                "it holds agenda {key:?}, which this log never had: another store's snapshot \
                 (copied or restored into the data directory); `pop serve` sets it aside"
            ))));
        }
    }
    let differs =
        |at: String| Ok(Some(SnapshotCheck::Differs { dir: dir.clone(), position, head, at }));
    let mut caught_up = snapshot;
    let mut after = position;
    while after < head {
        let mut batch = file.read_all(after, BATCH).context("reading the log")?;
        batch.retain(|e| e.position <= head);
        let Some(last) = batch.last() else { break };
        after = last.position;
        // An agenda the snapshot holds that does not decode (auditor23: the server answered it
        // INTERNAL while ready) is as much a break as one that differs.
        if let Err(e) = fold_events(&mut caught_up, &batch) {
            return differs(format!(
                "folding the log onto it failed: {}",
                pop_domain::error::ErrorChain(&e)
            ));
        }
    }
    // An agenda whose stream the data reaper deleted after the snapshot, before its reap
    // record was written (a crash between the two, or this very moment beside a running
    // server): the log no longer holds it, the record that makes the models forget it is not
    // there yet, and it is no edit (review-s39).
    let gone: Vec<String> = caught_up
        .agendas()
        .entries_by_id()
        .into_iter()
        .map(|e| e.key().to_owned())
        .filter(|key| folded.agendas().get(key).is_none())
        .filter(|key| {
            matches!(
                file.read_stream(&format!("agenda-{key}"), 0, 1, pop_store::Direction::Forwards),
                Err(pop_store::StoreError::StreamDeleted { .. })
            )
        })
        .collect();
    for key in gone {
        caught_up.forget_stream(head, &format!("agenda-{key}"));
    }
    let want = folded.fingerprint().context("fingerprinting")?;
    match caught_up.fingerprint() {
        Err(e) => return differs(format!("an agenda it holds does not read: {e}")),
        Ok(got) if got != want || caught_up.position() != folded.position() => {
            return differs("the state of an agenda or object differs".into());
        }
        Ok(_) => {}
    }
    // Compared in lockstep, formatted only where they differ: two models of a large store
    // are memory enough (review-s39).
    let (got, want) = (caught_up.agendas().entries_by_id(), folded.agendas().entries_by_id());
    #[allow(clippy::type_complexity)]
    fn fields(
        e: &pop_projections::AgendaEntry,
    ) -> (
        (&str, &str, &str, &str, Option<&str>, Option<&str>),
        (pop_domain::ProcessingState, pop_projections::Phase, i64, i64, i64),
        bool,
    ) {
        (
            (e.key(), e.id(), e.progress_id(), e.customer_id(), e.link_id(), e.insight_id()),
            (e.processing_state(), e.phase(), e.added_ms(), e.entered_ms(), e.updated_ms()),
            e.is_do_not_run(),
        )
    }
    if let Some((g, w)) = got.iter().zip(&want).find(|(g, w)| fields(g) != fields(w)) {
        return differs(format!(
            "agenda {:?} holds {:?} where the log gives {:?}",
            g.key(),
            fields(g),
            fields(w)
        ));
    }
    if got.len() != want.len() {
        return differs("it holds another number of agendas".into());
    }
    Ok(Some(SnapshotCheck::Matches { dir, position, head }))
}

fn print_report(
    report: Verification,
    note: &str,
    max_unsealed_span: Option<u64>,
    snapshot: Option<SnapshotCheck>,
    key_note: Option<String>,
) -> Result<()> {
    if let Some(b) = report.first_break {
        // The walks stop at the first break: their other counts are partial, so only that is
        // said (with the witness line, which says what the check trusted).
        println!("{note}");
        let key_note = key_note.map(|n| format!("\n{n}")).unwrap_or_default();
        // A key that signed none of the store's checkpoints, most likely mid-rotation: not
        // verified (exit 4 all the same), not paged as tampering (newcomer57 L2).
        if let Some(key) = &report.checkpoints.signer_not_handed_over {
            return Err(not_intact(format!(
                "NOT VERIFIED: key {key} signed none of this store's checkpoints. In a planned \
                 key rotation the next `pop serve` with this key and --checkpoint-previous-key \
                 hands the log over to it, and verify then passes; otherwise this is another \
                 store's key or the store's own checkpoints were removed. What the walk found: \
                 {b}{key_note}"
            )));
        }
        // What to do, as the damaged-file and unsealed refusals say it (auditor59 L3).
        return Err(not_intact(format!("TAMPERED: {b}{key_note}\n{AFTER_TAMPERED}")));
    }
    println!(
        "checked {} events, {} streams, {} deleted streams",
        report.events, report.streams, report.deleted_streams
    );
    let c = &report.checkpoints;
    match c.last {
        Some((seq, position, at)) => println!(
            "checked {} signed {} over {} log entries (newest: {seq}, up to position \
             {position}, sealed {}); {} entries after it not sealed yet",
            c.checkpoints,
            if c.checkpoints == 1 { "checkpoint" } else { "checkpoints" },
            c.sealed_entries,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            c.unsealed_entries
        ),
        None => println!(
            "no signed checkpoint covers the log yet ({} entries not sealed)",
            c.unsealed_entries
        ),
    }
    for k in &c.key_changes {
        if k.endorsed {
            println!(
                "the signing key changed at checkpoint {}: key {} handed the log over to key {} \
                 and endorsed it{}",
                k.seq,
                k.from,
                k.to,
                if c.signatures_checked { " (checked)" } else { "" }
            );
        } else {
            println!(
                "the signing key changed at checkpoint {}: key {} took the log over from key {}, \
                 which was lost (no endorsement): the checkpoints before are vouched for by key \
                 {} alone",
                k.seq, k.to, k.from, k.to
            );
        }
    }
    if c.pinned > 0 {
        println!(
            "{} checkpoints signed by a lost key: their signatures cannot be checked; the hash \
             chain up to the handover pins them",
            c.pinned
        );
    }
    // Unsealed events written over longer than a running server leaves them unsealed:
    // checkpoints deleted (with the witness, nothing else shows it), or offline writes.
    if let Some(u) = c.unsealed
        && let Some(max) = max_unsealed_span
        && u.longer_than(max)
    {
        println!("{note}");
        return Err(not_intact(unsealed_refusal(c.unsealed_entries, &u)));
    }
    match snapshot {
        Some(SnapshotCheck::Matches { dir, position, head }) => println!(
            "checked the read-model snapshot {} (position {position}): caught up to the log's \
             head ({head}) it equals the read models folded from the log",
            dir.display()
        ),
        Some(SnapshotCheck::Differs { dir, position, head, at }) => {
            println!("{note}");
            return Err(not_intact(format!(
                "TAMPERED: the read-model snapshot {} (position {position}), caught up to the \
                 log's head ({head}), differs from the read models folded from the log ({at}): \
                 it was edited outside pop, and `pop serve` would serve what it holds. The log \
                 itself is intact: stop the server, move the snapshot away (keep it as \
                 evidence) and start again (it rebuilds from the log), or write a fresh one \
                 with `pop rebuild --snapshot`",
                dir.display()
            )));
        }
        Some(SnapshotCheck::Unusable(why)) => {
            println!("the read-model snapshot is not used: {why} and rebuilds from the log")
        }
        None => {}
    }
    if !c.signatures_checked {
        println!(
            "WARNING: no checkpoint key given (--public-key, --checkpoint-key): checkpoint \
             signatures NOT checked, so a consistent forgery of the whole log would pass"
        );
    }
    println!("{note}");
    println!("intact");
    Ok(())
}

/// NOT VERIFIED: `entries` entries past the newest checkpoint, their events written over
/// longer than a running server leaves them unsealed (checkpoints deleted, with the witness
/// nothing else shows it, or offline writes). `pop verify` and `pop export` say it alike.
pub(crate) fn unsealed_refusal(entries: u64, u: &pop_store::verify::Unsealed) -> String {
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!(
        "NOT VERIFIED: the {} events from position {} on, written from {} to {} ({} s), are \
         covered by no signed checkpoint, while a running `pop serve` seals every few \
         seconds (--checkpoint-every): the checkpoints that covered them were deleted, or \
         they were written with no server running (`pop demo`, `pop reap --once`) or by \
         servers run with --checkpoint-every 0 (no sealing: verify with the same setting). \
         If you know they were written so, start `pop serve` on the store to seal them (or \
         accept them with --max-unsealed-span 0); otherwise treat the store as tampered with \
         and start no server on it before you know: it would sign what it finds",
        entries,
        u.from,
        at(u.first),
        at(u.last),
        u.span().num_seconds()
    )
}

/// Ends `pop verify` with [`crate::output::EXIT_NOT_INTACT`] and `message`.
pub(crate) fn not_intact(message: String) -> anyhow::Error {
    crate::output::Exit { code: crate::output::EXIT_NOT_INTACT, message }.into()
}
