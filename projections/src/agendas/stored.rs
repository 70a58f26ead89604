//! One agenda as a snapshot stores it (see [`crate::snapshot`] for the file around it): a
//! finished agenda is its settled bytes as they are in memory (LZ4 of its canonical JSON
//! against [`super::dictionary::DICTIONARY`]) plus the keys the indexes need, so a load copies
//! bytes instead of decoding JSON and compressing it again; any other agenda (live, or held
//! compressed by the degraded mode) is its state's canonical JSON, decoded and folded into
//! its live form on load as before.
//!
//! Record layout (integers little-endian; `str` and `bytes` are a `u32` length and the bytes):
//!
//! ```text
//! tag u8 = 1 (JSON)      key str, log u32, state bytes (canonical JSON of the AgendaState)
//! tag u8 = 0 (settled)   key str, flags u8, [agenda id str], [progress id str], customer str,
//!                        [link str], [insight str], processing state u8, phase u8,
//!                        added i64, updated i64, entered i64, log u32, settled bytes
//! ```
//!
//! `log`: what the agenda's stream takes in the log (`Keys::log`), which no fold of the state
//! can give back.
//!
//! Flags: 1 the agenda id is the key (not written), 2 the progress id is the agenda id (not
//! written), 4 a link, 8 an insight, 16 `doNotRun`. The keys are written from the entry, not
//! derived again: the file's checksums (not this decoder) are what vouch for them.
//!
//! Hand-written rather than postcard or bincode: a dozen fixed fields, the settled bytes
//! borrowed straight out of the chunk buffer, and the `Arc<str>` sharing of the keys
//! (agenda id = key, progress id = agenda id) restored from two flag bits — a serde format
//! would need a mirror struct for the keys and would still leave the chunking and checksums
//! to us; this is ~150 lines and no new dependency.

use std::collections::HashMap;
use std::sync::Arc;

use pop_domain::ProcessingState;
use pop_domain::agenda::AgendaState;

use crate::phase::Phase;

use super::entry::{Body, Keys, Name, SettleBuffers, id_in_key, settle};
use super::{AgendaEntry, AgendaModel, CorruptEntry, Kept, Measure, keys_of};

const TAG_SETTLED: u8 = 0;
const TAG_JSON: u8 = 1;
const ID_IS_KEY: u8 = 1;
const PROGRESS_IS_ID: u8 = 2;
const HAS_LINK: u8 = 4;
const HAS_INSIGHT: u8 = 8;
const HELD: u8 = 16;
const RETRY: u8 = 32;

/// A chunk of stored agendas does not decode (a snapshot written by another build, or one
/// whose checksums happened to match corrupt bytes).
#[derive(Debug, thiserror::Error)]
pub enum StoredError {
    #[error("malformed agenda record: {0}")]
    Malformed(&'static str),
    #[error("an agenda's state does not decode")]
    Json(#[from] serde_json::Error),
}

/// Entries decoded from a snapshot, moved into the model's slots as they are.
pub(crate) type Loaded = Vec<AgendaEntry>;

/// Appends `entry`'s record to `out`.
pub(crate) fn encode(entry: &AgendaEntry, out: &mut Vec<u8>) -> Result<(), CorruptEntry> {
    match &entry.body {
        Body::Settled(bytes) if !entry.keys.phase.is_live() => {
            let k = &entry.keys;
            let key = entry.key();
            let (agenda_id, progress_id) = (k.agenda_id(key), k.progress_id(key));
            out.push(TAG_SETTLED);
            put_str(out, key);
            let mut flags = 0;
            if agenda_id == key {
                flags |= ID_IS_KEY;
            }
            if progress_id == agenda_id {
                flags |= PROGRESS_IS_ID;
            }
            if k.link.is_some() {
                flags |= HAS_LINK;
            }
            if k.insight.is_some() {
                flags |= HAS_INSIGHT;
            }
            if k.held {
                flags |= HELD;
            }
            if k.retry {
                flags |= RETRY;
            }
            out.push(flags);
            if flags & ID_IS_KEY == 0 {
                put_str(out, agenda_id);
            }
            if flags & PROGRESS_IS_ID == 0 {
                put_str(out, progress_id);
            }
            put_str(out, &k.customer);
            if let Some(link) = &k.link {
                put_str(out, link);
            }
            if let Some(insight) = &k.insight {
                put_str(out, insight);
            }
            out.push(super::indexes::state_slot(k.state) as u8);
            out.push(k.phase.index() as u8);
            for t in [k.added, k.updated, k.entered] {
                out.extend_from_slice(&t.to_le_bytes());
            }
            out.extend_from_slice(&k.log.to_le_bytes());
            put_bytes(out, bytes);
        }
        _ => {
            out.push(TAG_JSON);
            put_str(out, entry.key());
            out.extend_from_slice(&entry.keys.log.to_le_bytes());
            let json = entry.canonical_json()?;
            put_bytes(out, &json);
        }
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Records are only built from entries in memory; no string or agenda comes near 4 GiB
    // (requests are bounded far below), so the length always fits.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Decodes the `count` records of one chunk into entries (appended to `out`), using
/// `buffers` to settle the JSON ones that are finished.
pub(crate) fn decode_chunk(
    mut bytes: &[u8],
    count: u32,
    buffers: &mut LoadBuffers,
    out: &mut Loaded,
) -> Result<(), StoredError> {
    let r = &mut bytes;
    for _ in 0..count {
        let tag = take_u8(r)?;
        let key = Name::new(take_str(r)?);
        let entry = match tag {
            TAG_SETTLED => {
                let flags = take_u8(r)?;
                // Held as the model holds them: only what the key does not say.
                let agenda_id = if flags & ID_IS_KEY != 0 { &*key } else { take_str(r)? };
                let progress_id =
                    if flags & PROGRESS_IS_ID != 0 { agenda_id } else { take_str(r)? };
                let progress_id = (progress_id != agenda_id).then(|| Arc::from(progress_id));
                let agenda_id = (agenda_id != id_in_key(&key)).then(|| Arc::from(agenda_id));
                let customer = Arc::from(take_str(r)?);
                let link = if flags & HAS_LINK != 0 { Some(Name::new(take_str(r)?)) } else { None };
                let insight =
                    if flags & HAS_INSIGHT != 0 { Some(Name::new(take_str(r)?)) } else { None };
                let state = match take_u8(r)? {
                    0 => ProcessingState::Waiting,
                    1 => ProcessingState::Executing,
                    2 => ProcessingState::Complete,
                    _ => return Err(StoredError::Malformed("processing state")),
                };
                let phase = *Phase::ALL
                    .get(usize::from(take_u8(r)?))
                    .ok_or(StoredError::Malformed("phase"))?;
                if phase.is_live() {
                    return Err(StoredError::Malformed("a settled record of a live agenda"));
                }
                let added = take_i64(r)?;
                let updated = take_i64(r)?;
                let entered = take_i64(r)?;
                let log = take_u32(r)?;
                let settled = take_bytes(r)?;
                let keys = Keys {
                    agenda_id: agenda_id.map(Box::new),
                    progress_id,
                    customer,
                    link,
                    insight,
                    state,
                    phase,
                    added,
                    updated,
                    entered,
                    held: flags & HELD != 0,
                    retry: flags & RETRY != 0,
                    bytes: 0,
                    log,
                };
                AgendaEntry { key, keys, body: Body::Settled(settled.into()) }
            }
            TAG_JSON => {
                let log = take_u32(r)?;
                let state: AgendaState = serde_json::from_slice(take_bytes(r)?)?;
                let e = &buffers.empty;
                let n = &buffers.empty_names;
                let keys = keys_of(
                    e,
                    n,
                    n,
                    &state,
                    &key,
                    None,
                    Measure { now: false, kept: Kept::Unknown },
                );
                let keys = Keys { log, ..keys };
                let body = settle(&mut buffers.settle, Box::new(state), false);
                AgendaEntry { key, keys, body }
            }
            _ => return Err(StoredError::Malformed("record tag")),
        };
        out.push(entry);
    }
    if !r.is_empty() {
        return Err(StoredError::Malformed("bytes after the chunk's last record"));
    }
    Ok(())
}

/// What one loading thread reuses from record to record.
#[derive(Default)]
pub(crate) struct LoadBuffers {
    settle: SettleBuffers,
    /// No interning while loading: the ids are interned once when the indexes are built.
    empty: HashMap<Arc<str>, ()>,
    empty_names: HashMap<Name, ()>,
}

impl std::fmt::Debug for LoadBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBuffers").finish_non_exhaustive()
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoredError> {
    if r.len() < n {
        return Err(StoredError::Malformed("a record runs past its chunk"));
    }
    let (head, rest) = r.split_at(n);
    *r = rest;
    Ok(head)
}

fn take_u8(r: &mut &[u8]) -> Result<u8, StoredError> {
    Ok(take(r, 1)?[0])
}

fn take_u32(r: &mut &[u8]) -> Result<u32, StoredError> {
    let mut b = [0u8; 4];
    b.copy_from_slice(take(r, 4)?);
    Ok(u32::from_le_bytes(b))
}

fn take_i64(r: &mut &[u8]) -> Result<i64, StoredError> {
    let mut b = [0u8; 8];
    b.copy_from_slice(take(r, 8)?);
    Ok(i64::from_le_bytes(b))
}

fn take_bytes<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], StoredError> {
    let n = take_u32(r)? as usize;
    take(r, n)
}

fn take_str<'a>(r: &mut &'a [u8]) -> Result<&'a str, StoredError> {
    std::str::from_utf8(take_bytes(r)?).map_err(|_| StoredError::Malformed("a string not UTF-8"))
}

impl AgendaModel {
    /// The model of the entries a snapshot load decoded (in parts, one per thread, in any
    /// order), with its indexes built. `total` is how many the snapshot says it holds: fewer
    /// or a repeated key is an error.
    pub(crate) fn from_loaded(
        parts: Vec<Loaded>,
        total: usize,
    ) -> Result<AgendaModel, StoredError> {
        let mut model = AgendaModel { deferred: true, ..AgendaModel::default() };
        model.entries.reserve(total);
        for part in parts {
            for entry in part {
                if model.entries.insert(entry).1.is_some() {
                    return Err(StoredError::Malformed("an agenda stored twice"));
                }
            }
        }
        if model.entries.len() != total {
            return Err(StoredError::Malformed("fewer agendas than the snapshot counts"));
        }
        model.build_indexes();
        Ok(model)
    }
}
