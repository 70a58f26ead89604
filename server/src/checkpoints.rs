//! The signed checkpoints of the log (`pop_store::commitment`) on the server's side: the key
//! and the sealing task.
//!
//! - The key is an Ed25519 seed, 64 hex digits in a file: `--checkpoint-key <file>` (e.g. a
//!   mounted Kubernetes Secret; every replica of a shared store takes the same one), else
//!   `<data-dir>/checkpoint.key`, created on first start from the operating system's random
//!   generator with mode 0600. Whoever holds it can sign checkpoints: keep it away from the
//!   database's operators (that is the point of it), and back it up — without it a log can
//!   still be verified with the public key (`pop verify --public-key`), but not extended by
//!   the same key.
//! - `pop serve` seals every [`SEAL_EVERY`] (`--checkpoint-every`), off the write path, the
//!   entries below the point where nothing can still commit; each round first checks that the
//!   newest stored checkpoint is signed by its key. `/metrics` shows the newest checkpoint it
//!   sealed or found verified (`pop_checkpoint_*`).
//! - A new key extends another key's checkpoints only when told which key signed them
//!   (`--checkpoint-previous-key`, [`previous_keys`]): its file (the old key endorses the new
//!   one in the first checkpoint it signs), or its key id when it is lost (then only the
//!   checkpoint witnessed outside the store is taken over).
//! - A key cannot tell a log whose checkpoints someone deleted (and then rewrote) from a log
//!   never sealed: a sealer that finds no checkpoint starts afresh, and would sign the
//!   rewrite. So `pop serve` also keeps the newest checkpoint it saw, outside the store: the
//!   witness file ([`Witness`], `<data-dir>/checkpoint.witness` or `--checkpoint-witness`).
//!   Each round first checks that the store still holds exactly that checkpoint; if not, it
//!   stops sealing, logs an error and sets `pop_checkpoint_witness_broken`. `pop verify`
//!   checks the store against the same file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pop_store::commitment::{
    Checkpoint, CheckpointKey, CheckpointSigningKey, LogCommitment, PreviousKey, SealError, Sealer,
    SignedCheckpoint, parse_signing_key, parse_verifying_key,
};
use pop_store::digest::{hex, hex_bytes, parse_hex};
use serde::{Deserialize, Serialize};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "checkpoint.key";

/// How often `pop serve` seals by default: an edit of the log's newest events can go unseen by
/// the checkpoints at most this long.
pub const SEAL_EVERY: Duration = Duration::from_secs(5);

/// The signing key: the given file, else the data directory's, created when missing.
pub fn signing_key(data_dir: &Path, given: Option<&Path>) -> Result<CheckpointSigningKey> {
    match signing_key_or_new(data_dir, given)? {
        Ok(key) => Ok(key),
        Err(new) => {
            let key = new.key.clone();
            new.keep(data_dir)?;
            Ok(key)
        }
    }
}

fn read_signing_key(path: &Path) -> Result<CheckpointSigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the checkpoint key {}", path.display()))?;
    parse_signing_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn random_seed() -> Result<[u8; 32]> {
    use rand::TryRngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut seed).context("reading the OS random generator")?;
    Ok(seed)
}

/// A signing key made for a store that has none yet, kept in memory until what it signed is
/// done ([`NewKey::keep`]): `pop export` of a store whose key lives elsewhere (served or
/// imported with `--checkpoint-key`) wrote a new key into its data directory before it found
/// the store's checkpoints signed by another, and `pop verify` and `pop serve` then read that
/// key by default and said TAMPERED (auditor32).
pub struct NewKey {
    seed: [u8; 32],
    pub key: CheckpointSigningKey,
}

impl NewKey {
    /// Writes the key as the data directory's, once it signed something of this store.
    pub fn keep(self, data_dir: &Path) -> Result<()> {
        write_key(&data_dir.join(KEY_FILE), &self.seed)
    }
}

/// The given key file's key, else the data directory's; else a new one, not yet written.
pub fn signing_key_or_new(
    data_dir: &Path,
    given: Option<&Path>,
) -> Result<std::result::Result<CheckpointSigningKey, NewKey>> {
    if let Some(path) = given {
        return read_signing_key(path).map(Ok);
    }
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        return read_signing_key(&path).map(Ok);
    }
    let seed = random_seed()?;
    Ok(Err(NewKey { seed, key: CheckpointSigningKey::from_bytes(&seed) }))
}

fn write_key(path: &Path, seed: &[u8; 32]) -> Result<()> {
    let write = || format!("writing the checkpoint key {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(write)?;
    }
    let mut options = std::fs::OpenOptions::new();
    // `create_new`: two processes starting together never overwrite each other's key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(write)?;
    let hex = hex_bytes(seed);
    file.write_all(format!("{hex}\n").as_bytes()).with_context(write)?;
    file.sync_all().with_context(write)?;
    tracing::info!(path = %path.display(), "created the checkpoint signing key");
    Ok(())
}

/// The keys of `--checkpoint-previous-key`: a key id (16 hex digits) names a lost key, any
/// other value a key file.
pub fn previous_keys(given: &[String]) -> Result<Vec<PreviousKey>> {
    given
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            if v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()) && !Path::new(v).exists() {
                return Ok(PreviousKey::Lost(v.to_ascii_lowercase()));
            }
            read_signing_key(Path::new(v)).map(PreviousKey::Held).context(
                "--checkpoint-previous-key takes the previous key's file, or its key id (16 hex \
                 digits) when that key is lost",
            )
        })
        .collect()
}

/// The key `pop verify` checks signatures with: `--public-key` (hex or a file holding it),
/// else the public half of `--checkpoint-key` or of the data directory's key; `None` when
/// there is none (signatures then go unchecked, and the report says so).
pub fn verifying_key(
    data_dir: &Path,
    key_file: Option<&Path>,
    public_key: Option<&str>,
) -> Result<Option<CheckpointKey>> {
    if let Some(text) = public_key {
        let text = if Path::new(text).is_file() {
            std::fs::read_to_string(text).with_context(|| format!("reading {text}"))?
        } else {
            text.to_owned()
        };
        return match parse_verifying_key(&text) {
            Ok(key) => Ok(Some(key)),
            Err(e) => bail!("--public-key: {e}"),
        };
    }
    let path: PathBuf = match key_file {
        Some(p) => p.to_path_buf(),
        None => data_dir.join(KEY_FILE),
    };
    if key_file.is_none() && !path.exists() {
        return Ok(None);
    }
    // An auditor need not read the signing key: say how to do without it.
    let key = read_signing_key(&path).map_err(|e| {
        e.context("checking signatures needs only the public key: give it with --public-key <hex>")
    })?;
    Ok(Some(key.verifying_key()))
}

/// What a refusal says of a key a command read by default: that it was not named, and how to
/// name the right one (newcomer14: `pop verify --store postgres://…` read the tour's
/// `./pop-data/checkpoint.key`, said TAMPERED of an intact store and advised a handover). Said
/// only beside a break that names a key no checkpoint of the store names
/// ([`UNUSED_KEY`]).
pub fn defaulted_key_note(
    data_dir: &Path,
    key_file: Option<&Path>,
    flags: KeyFlags<'_>,
    refusal: &str,
) -> Option<String> {
    let path = data_dir.join(KEY_FILE);
    let given = key_file.is_some() || matches!(flags, KeyFlags::CheckpointOrPublicKey(Some(_)));
    (!given && path.exists() && refusal.contains(UNUSED_KEY)).then(|| {
        let (flags, theirs) = match flags {
            KeyFlags::CheckpointOrPublicKey(_) => (
                "neither --checkpoint-key nor --public-key was given",
                "--checkpoint-key <their key file>, or --public-key <hex>",
            ),
            KeyFlags::CheckpointKeyOnly => {
                ("no --checkpoint-key was given", "--checkpoint-key <their key file>")
            }
        };
        format!(
            "the key checked with is {}, read by default ({flags}): if the store's servers \
             sign with another key, name theirs ({theirs}) before suspecting the store",
            path.display()
        )
    })
}

/// The key flags a command takes, for what its refusal offers (auditor32: export's refusal
/// advised `--public-key`, which it does not take).
#[derive(Debug, Clone, Copy)]
pub enum KeyFlags<'a> {
    /// `--checkpoint-key` alone (`pop export`).
    CheckpointKeyOnly,
    /// `--checkpoint-key` or `--public-key`, with the public key given, if it was.
    CheckpointOrPublicKey(Option<&'a str>),
}

/// What a break says of a key that signed none of the store's checkpoints.
pub const UNUSED_KEY: &str = "no checkpoint of the store names key";

/// The witness file's name in the data directory.
pub const WITNESS_FILE: &str = "checkpoint.witness";

/// The embedded store's name in the witness file.
const EMBEDDED: &str = "embedded";

/// A PostgreSQL store's name in the witness file: one per data directory, whatever URL reaches
/// it (a host alias, another port-forward or a password in the URL must not make the server
/// start trusting afresh; nor is a URL, with its parameters, written to the file).
const POSTGRES: &str = "postgres";

/// The newest checkpoint seen in a store, kept in a file outside it: one JSON object naming
/// each store ([`EMBEDDED`], [`POSTGRES`]) and its checkpoint's exact body and signature.
#[derive(Debug, Clone)]
pub struct Witness {
    path: PathBuf,
    store: &'static str,
}

#[derive(Debug, Serialize, Deserialize)]
struct Witnessed {
    seq: u64,
    /// The signed body, as stored (JSON text).
    body: String,
    /// The Ed25519 signature, hex.
    signature: String,
}

impl Witness {
    /// The witness of the store at `store_url` (a PostgreSQL URL; `None`: the embedded
    /// store), kept in `given`, else in the data directory.
    pub fn of(data_dir: &Path, given: Option<&Path>, store_url: Option<&str>) -> Witness {
        let path = given.map_or_else(|| data_dir.join(WITNESS_FILE), Path::to_path_buf);
        Witness { path, store: if store_url.is_some() { POSTGRES } else { EMBEDDED } }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What an operator does about a store that lacks the witnessed checkpoint.
    pub fn remedy(&self) -> String {
        format!(
            "run `pop verify` to see where the log breaks; once the cause is known (a store \
             restored from a backup, say), move {} away (keep it as evidence) to seal again",
            self.path.display()
        )
    }

    fn all(&self) -> Result<BTreeMap<String, Witnessed>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the checkpoint witness {} is not readable JSON; restore it from a backup, \
                     or move it away to start witnessing afresh",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e)
                .with_context(|| format!("reading the checkpoint witness {}", self.path.display())),
        }
    }

    /// Why a writer may not open the embedded store `db` of a data directory whose witness
    /// (`given`, else `data_dir`'s [`WITNESS_FILE`]) saw a PostgreSQL store seal a checkpoint after the
    /// embedded store's last one (or the embedded store never): the directory was moved to
    /// PostgreSQL (README "From the embedded store to PostgreSQL"), and a start that lost its
    /// `--store`/`DATABASE_URL` would serve the embedded store's stale log, taking claims and
    /// writes into it, ready and silent (operator58 M1). `None` when it did not move, or the
    /// witness cannot say.
    pub fn moved_to_postgres(data_dir: &Path, given: Option<&Path>, db: &Path) -> Option<String> {
        let (witness, seq, postgres) = Witness::moved(data_dir, given)?;
        Some(format!(
            "this data directory moved to a PostgreSQL store: its checkpoint witness {} saw one \
             seal checkpoint {seq} at {}, after the embedded store's last; without --store \
             (DATABASE_URL) this start would serve the embedded store {} and its log from before \
             the move. Start with the PostgreSQL URL; to serve the embedded store again on \
             purpose, move {} away first (keep it: it witnesses the PostgreSQL store's log), or \
             delete only its \"postgres\" entry",
            witness.path.display(),
            postgres.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            db.display(),
            witness.path.display(),
        ))
    }

    /// The witness, and the checkpoint a PostgreSQL store sealed after the embedded store's
    /// last, when the data directory moved ([`Witness::moved_to_postgres`]).
    fn moved(
        data_dir: &Path,
        given: Option<&Path>,
    ) -> Option<(Witness, u64, chrono::DateTime<chrono::FixedOffset>)> {
        let witness = Witness::of(data_dir, given, None);
        let all = witness.all().ok()?;
        let sealed = |store: &str| {
            let w = all.get(store)?;
            let body: serde_json::Value = serde_json::from_str(&w.body).ok()?;
            let at = body["sealedAt"].as_str()?;
            Some((w.seq, chrono::DateTime::parse_from_rfc3339(at).ok()?))
        };
        let (seq, postgres) = sealed(POSTGRES)?;
        if sealed(EMBEDDED).is_some_and(|(_, embedded)| embedded >= postgres) {
            return None;
        }
        Some((witness, seq, postgres))
    }

    /// Refuses `pop <verb>` on the embedded store `db` of a data directory that moved to
    /// PostgreSQL ([`Witness::moved_to_postgres`]): `verify`, `export`, `log` and `rebuild`
    /// would read the log from before the move, and `demo` write into it, and a scheduled
    /// check or backup that lost its `--store`/`DATABASE_URL` said "intact" of it and signed
    /// an export of it (newcomer59 M1). An old log is read on purpose from a copy of `db` in
    /// another directory.
    pub fn refuse_after_move(
        data_dir: &Path,
        given: Option<&Path>,
        db: &Path,
        verb: &str,
    ) -> Result<()> {
        let Some((witness, seq, postgres)) = Witness::moved(data_dir, given) else {
            return Ok(());
        };
        bail!(
            "this data directory moved to a PostgreSQL store: its checkpoint witness {} saw one \
             seal checkpoint {seq} at {}, after the embedded store's last; without --store \
             (DATABASE_URL) `pop {verb}` would use the embedded store {} and its log from \
             before the move. Give the PostgreSQL URL with --store; to read the embedded \
             store's old log on purpose, copy {} into another directory and give that as \
             --data-dir",
            witness.path.display(),
            postgres.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            db.display(),
            db.display(),
        )
    }

    /// The checkpoint witnessed for this store, if any.
    pub fn read(&self) -> Result<Option<SignedCheckpoint>> {
        let Some(w) = self.all()?.remove(self.store) else { return Ok(None) };
        let signature = parse_hex(&w.signature)
            .with_context(|| format!("{}: a malformed signature", self.path.display()))?;
        Ok(Some(SignedCheckpoint { seq: w.seq, body: w.body.into_bytes(), signature }))
    }

    /// Records `checkpoint` for this store (`None`: forgets it), atomically: a new file, synced,
    /// renamed over the old one.
    pub fn write(&self, checkpoint: Option<&SignedCheckpoint>) -> Result<()> {
        let mut all = self.all()?;
        match checkpoint {
            Some(c) => {
                let body = String::from_utf8(c.body.clone()).context("a checkpoint body")?;
                let signature = hex_bytes(&c.signature);
                all.insert(self.store.to_owned(), Witnessed { seq: c.seq, body, signature });
            }
            None => {
                if all.remove(self.store).is_none() {
                    return Ok(());
                }
            }
        }
        let write = || format!("writing the checkpoint witness {}", self.path.display());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(write)?;
        // A name of this process's own: another process writing the same file (a `pop import`
        // beside `pop serve`) never writes into this one's half-written file.
        let temp = self.path.with_extension(format!(
            "witness.{}.{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            serde_json::to_writer_pretty(&mut file, &all)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if written.is_err() {
            // Not one half-written file per round left behind (ops3am5: empty ones piled up
            // in a full data directory and stayed once it had room again).
            let _ = std::fs::remove_file(&temp);
        }
        written.with_context(write)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// The public key as hex, for logs and `pop verify --public-key`.
pub fn public_hex(key: &CheckpointKey) -> String {
    hex_bytes(key.as_bytes())
}

/// Seals every `every` until `stop` resolves, and once more before returning. A round that
/// fails is logged and retried at the next tick.
pub fn spawn(
    log: Arc<dyn LogCommitment>,
    sealer: Sealer,
    witness: Witness,
    health: Arc<pop_store::Commands>,
    every: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(
        public_key = %public_hex(&sealer.verifying_key()),
        key_id = %pop_store::commitment::key_id(&sealer.verifying_key()),
        "sealing checkpoints of the log"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        // Why the last round did not seal, so a lasting refusal is logged once, not every round.
        let mut refused: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => round(&sealer, log.as_ref(), &witness, &health, &mut refused).await,
                () = &mut stop => break,
            }
        }
        round(&sealer, log.as_ref(), &witness, &health, &mut refused).await;
    })
}

async fn round(
    sealer: &Sealer,
    log: &dyn LogCommitment,
    witness: &Witness,
    health: &pop_store::Commands,
    refused: &mut Option<String>,
) {
    use pop_api::metrics::{
        CHECKPOINT_EVENTS, CHECKPOINT_POSITION, CHECKPOINT_SEALED, CHECKPOINT_SEALING_REFUSED,
        CHECKPOINT_SEQ, CHECKPOINT_WITNESS_BROKEN,
    };
    let mut refuse = |why: String, witness_broken: bool| {
        if witness_broken {
            metrics::gauge!(CHECKPOINT_WITNESS_BROKEN).set(1.0);
        }
        metrics::gauge!(CHECKPOINT_SEALING_REFUSED).set(1.0);
        if refused.as_deref() != Some(why.as_str()) {
            tracing::error!(error = %why, "not sealing checkpoints of the log");
            *refused = Some(why);
        }
    };
    let witnessed = match witnessed(log, witness).await {
        Ok(w) => w,
        Err(Unwitnessed::Broken(e)) => return refuse(format!("{e:#}"), true),
        // The store could not answer (PostgreSQL restarting, say): no alarm, the next
        // round tries again.
        Err(Unwitnessed::Failed(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "checking the checkpoint witness failed");
            return;
        }
    };
    // Stamped by the store's clock, as commits are (on PostgreSQL the database server's): a
    // replica's own clock made the signed chain's times go back (ops3am8).
    let now = pop_store::clock::now_for(health.store().as_ref());
    let sealed = sealer.seal_all_after(log, now, witnessed.as_ref()).await;
    // A seal is a write: one that failed for the store's condition (a full disk) takes the
    // server out of readiness as a client's failed append does, and one written clears it.
    match &sealed {
        Ok(Some(_)) => health.note_write(Ok(())),
        Err(SealError::Store(e)) => health.note_write(Err(e)),
        Ok(None) | Err(_) => {}
    }
    match &sealed {
        Err(e @ SealError::BehindWitness { .. }) => {
            return refuse(format!("{e}; {}", witness.remedy()), true);
        }
        // A replica started with a key of its own beside replicas that share one: it never
        // seals, and once they are gone nothing does (ops3am: an ERROR every round, nothing
        // on /metrics, then `pop verify` NOT VERIFIED as if tampered with).
        // The log itself is broken (a hash row moved outside pop): nothing is sealed around it
        // until it is found; said once and on /metrics (auditor21: an ERROR every round and
        // `pop_checkpoint_sealing_refused` 0).
        Err(SealError::Store(e @ pop_store::StoreError::Corrupt(_))) => {
            metrics::gauge!(CHECKPOINT_WITNESS_BROKEN).set(0.0);
            return refuse(format!("{e}; run `pop verify` to see where the log breaks"), false);
        }
        // The refusal says what to do itself (this key handed the log on; a lost key with no
        // witness; previous keys given that did not sign): no generic advice after it that
        // contradicts it (newcomer11).
        Err(SealError::Foreign(why))
            if [
                "restart this replica",
                "--checkpoint-takeover-unwitnessed",
                "previous keys given",
                "witnessed outside the store is checkpoint",
            ]
            .iter()
            .any(|s| why.contains(s)) =>
        {
            metrics::gauge!(CHECKPOINT_WITNESS_BROKEN).set(0.0);
            return refuse(format!("the newest checkpoint cannot be extended: {why}"), false);
        }
        Err(e @ SealError::Foreign(_)) => {
            // The witness itself checked out this round.
            metrics::gauge!(CHECKPOINT_WITNESS_BROKEN).set(0.0);
            return refuse(
                format!(
                    "{e}; this process signs with public key {} (key id {}): every replica of \
                     one store needs the same --checkpoint-key (one Kubernetes Secret, say); to \
                     change keys, start with --checkpoint-previous-key naming the key that \
                     signed it (its file, or its key id if it is lost); if no replica should \
                     have signed it, run `pop verify` to see where the log breaks",
                    public_hex(&sealer.verifying_key()),
                    pop_store::commitment::key_id(&sealer.verifying_key())
                ),
                false,
            );
        }
        _ => {}
    }
    if refused.take().is_some() {
        tracing::info!("sealing checkpoints of the log again");
    }
    metrics::gauge!(CHECKPOINT_WITNESS_BROKEN).set(0.0);
    metrics::gauge!(CHECKPOINT_SEALING_REFUSED).set(0.0);
    let show = |c: &Checkpoint| {
        metrics::gauge!(CHECKPOINT_SEQ).set(c.seq as f64);
        metrics::gauge!(CHECKPOINT_POSITION).set(c.position.commit() as f64);
        metrics::gauge!(CHECKPOINT_EVENTS).set(c.events as f64);
        metrics::gauge!(CHECKPOINT_SEALED).set(c.sealed_at.timestamp_micros() as f64 / 1e6);
    };
    let sealed_now = match &sealed {
        Ok(Some(c)) => Some(c.seq),
        _ => None,
    };
    match sealed {
        Ok(Some(c)) => {
            show(&c);
            tracing::debug!(seq = c.seq, position = %c.position, "sealed a checkpoint");
        }
        Ok(None) => {
            // Nothing new: report the newest stored one, whose signature the round checked.
            if let Ok(Some(last)) = log.last_checkpoint().await
                && last.verify_signature(&sealer.verifying_key()).is_ok()
                && let Ok(c) = last.checkpoint()
            {
                show(&c);
            }
        }
        Err(e) => tracing::error!(
            error = %pop_domain::error::ErrorChain(&e),
            "sealing a checkpoint of the log failed"
        ),
    }
    match witness_newest(sealer, log, witness, witnessed, sealed_now).await {
        Ok(()) => metrics::gauge!(pop_api::metrics::CHECKPOINT_WITNESS_STALE).set(0.0),
        Err(e) => {
            // A full or read-only data directory (ops3am5: only this warning said the witness
            // had stopped following the checkpoints).
            metrics::gauge!(pop_api::metrics::CHECKPOINT_WITNESS_STALE).set(1.0);
            tracing::warn!(error = %format!("{e:#}"), "keeping the checkpoint witness failed");
        }
    }
}

/// Why a round could not check the witness.
enum Unwitnessed {
    /// The store lacks or replaced the witnessed checkpoint, or the witness file is not
    /// readable: the alarm.
    Broken(anyhow::Error),
    /// The store could not be asked.
    Failed(anyhow::Error),
}

/// The checkpoint witnessed for this store, after checking that the store still holds it
/// unchanged.
async fn witnessed(
    log: &dyn LogCommitment,
    witness: &Witness,
) -> Result<Option<SignedCheckpoint>, Unwitnessed> {
    let Some(w) = witness.read().map_err(Unwitnessed::Broken)? else { return Ok(None) };
    let stored = log.checkpoint(w.seq).await.map_err(|e| match e {
        // The checkpoints' table is gone: the witnessed checkpoint with it.
        e @ pop_store::StoreError::Corrupt(_) => Unwitnessed::Broken(anyhow::anyhow!(
            "{e}: the store no longer holds checkpoint {} that {} witnessed; {}",
            w.seq,
            witness.path().display(),
            witness.remedy()
        )),
        e => Unwitnessed::Failed(e.into()),
    })?;
    match stored {
        Some(stored) if stored == w => Ok(Some(w)),
        stored => Err(Unwitnessed::Broken(anyhow::anyhow!(
            "the store {} checkpoint {} that {} witnessed: its checkpoints were deleted or \
             replaced, and the log may have been rewritten; {}",
            if stored.is_some() { "holds another" } else { "no longer holds" },
            w.seq,
            witness.path().display(),
            witness.remedy()
        ))),
    }
}

/// Checkpoints one round follows from the witnessed one towards the newest: after a long
/// time without a witness write (a read-only volume, say), the witness catches up over
/// several rounds instead of one query per checkpoint in one round.
const MAX_WITNESS_STEPS: u64 = 1_000;

/// Moves the witness towards the newest stored checkpoint (at most [`MAX_WITNESS_STEPS`] a
/// round) along checkpoints signed by this key that link back, one by one, to the one
/// witnessed.
async fn witness_newest(
    sealer: &Sealer,
    log: &dyn LogCommitment,
    witness: &Witness,
    witnessed: Option<SignedCheckpoint>,
    sealed_now: Option<u64>,
) -> Result<()> {
    let Some(newest) = log.last_checkpoint().await? else { return Ok(()) };
    let from = match witnessed {
        Some(w) if newest.seq <= w.seq => return Ok(()),
        Some(w) => w,
        None => {
            sealer.trusts(&newest).map_err(anyhow::Error::msg)?;
            // The embedded store's witness lives beside it: a store sealed before this round
            // without one lost it (newcomer54: a deleted witness was written anew without a
            // word). A new replica of a shared store starts without one, as it should. Said
            // once a process.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            let sealed_before = sealed_now.is_none_or(|seq| seq > 1);
            if witness.store == EMBEDDED
                && sealed_before
                && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    witness = %witness.path().display(),
                    checkpoints = newest.seq,
                    "no checkpoint witness for a store already sealed {} times: witnessing its \
                     newest checkpoint from now on; checkpoints deleted or replaced before this \
                     start cannot be found by it (restore the witness from a backup to check \
                     them: pop verify --witness <file>)",
                    newest.seq
                );
            }
            return witness.write(Some(&newest));
        }
    };
    let mut previous = from;
    for seq in previous.seq + 1..=newest.seq.min(previous.seq.saturating_add(MAX_WITNESS_STEPS)) {
        let next =
            log.checkpoint(seq).await?.with_context(|| format!("checkpoint {seq} is missing"))?;
        sealer.trusts(&next).map_err(anyhow::Error::msg)?;
        let body = next.checkpoint().map_err(anyhow::Error::msg)?;
        if body.previous != hex(&previous.hash()) {
            bail!("checkpoint {seq} does not link to checkpoint {}", previous.seq);
        }
        previous = next;
    }
    witness.write(Some(&previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = signing_key(dir.path(), None).expect("created");
        let again = signing_key(dir.path(), None).expect("read");
        assert_eq!(first.to_bytes(), again.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("the key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = verifying_key(dir.path(), None, None).expect("read").expect("a key");
        assert_eq!(public, first.verifying_key());
        let by_hex = verifying_key(dir.path(), None, Some(&public_hex(&public))).expect("parsed");
        assert_eq!(by_hex, Some(public));
        let empty = tempfile::tempdir().expect("a temp dir");
        assert!(verifying_key(empty.path(), None, None).expect("no key").is_none());
        std::fs::write(empty.path().join("bad.key"), "xyz").expect("written");
        assert!(signing_key(empty.path(), Some(&empty.path().join("bad.key"))).is_err());
    }
}
