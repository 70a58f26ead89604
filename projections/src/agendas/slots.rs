//! Where the agenda entries live: in numbered slots, held inline in chunks of [`CHUNK`] (no
//! box and no pointer per entry; a model wastes at most one chunk's unused tail, and a freed
//! slot is reused by the next new agenda), found through hash tables of `u32` slot numbers by
//! stream key, by agenda id and by AgendaProgress id.
//!
//! A table's slot is 4 B where a `HashMap<Arc<str>, Box<…>>` slot was 24 B and an id map's
//! `(Arc<str>, Many)` 40 B; a table holds ~1.64 slots per entry (hashbrown keeps at most 7/8
//! of a power of two full), so the three lookups cost ~33 B an agenda instead of ~175
//! (BENCHMARKS.md, "Memory per agenda, third pass"). A table does not hold its keys: each
//! probe compares the string in the entry its slot number names.
//!
//! The id tables are kept in step by [`super::AgendaModel::reindex`] (through
//! [`Entries::move_ids`]) or built at once by [`Entries::rebuild_ids`], like the other
//! indexes. An id table may hold a slot under a hash only while the entry in that slot has
//! that id: a table recomputes every element's hash from its entry when it grows.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::AgendaEntry;
use super::entry::Keys;

/// Slots per chunk: 256 entries of ~120 B, ~30 KiB.
const CHUNK: usize = 256;

/// The agenda entries, by slot, and the tables that find them.
#[derive(Debug, Default)]
pub(super) struct Entries {
    /// Slot `s` is `slots[s / CHUNK][s % CHUNK]`: `None` for a freed slot (listed in `free`)
    /// or one not handed out yet (from `used` on).
    slots: Vec<Box<[Option<AgendaEntry>]>>,
    /// How many slots were ever handed out: the next new one.
    used: u32,
    free: Vec<u32>,
    /// Slots by the entry's stream key ([`AgendaEntry::key`]); one per key.
    by_key: HashTable<u32>,
    /// Slots by agenda id (several where customers share an id).
    ids: HashTable<u32>,
    /// Slots by AgendaProgress id (several where customers share one).
    progress_ids: HashTable<u32>,
    hasher: RandomState,
}

/// Which id table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdKind {
    Agenda,
    Progress,
}

impl IdKind {
    /// This id of the agenda keyed `key` with `keys`.
    pub(super) fn of<'a>(self, key: &'a str, keys: &'a Keys) -> &'a str {
        match self {
            IdKind::Agenda => keys.agenda_id(key),
            IdKind::Progress => keys.progress_id(key),
        }
    }
}

fn id_of(entry: &AgendaEntry, kind: IdKind) -> &str {
    kind.of(&entry.key, &entry.keys)
}

fn at(slots: &[Box<[Option<AgendaEntry>]>], slot: u32) -> Option<&AgendaEntry> {
    let slot = slot as usize;
    slots.get(slot / CHUNK)?.get(slot % CHUNK)?.as_ref()
}

impl Entries {
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// The slot of the entry keyed `key`.
    pub(super) fn slot_of(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_key.find(self.hash(key), |&s| at(slots, s).is_some_and(|e| e.key() == key)).copied()
    }

    pub(super) fn get(&self, key: &str) -> Option<&AgendaEntry> {
        self.slot_of(key).and_then(|s| at(&self.slots, s))
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut AgendaEntry> {
        let slot = self.slot_of(key)?;
        self.at_mut(slot)
    }

    /// The entry in `slot`, to change in place (never its key; its ids only with
    /// [`Entries::move_ids`] after).
    pub(super) fn at_mut(&mut self, slot: u32) -> Option<&mut AgendaEntry> {
        self.place(slot)?.as_mut()
    }

    fn place(&mut self, slot: u32) -> Option<&mut Option<AgendaEntry>> {
        let slot = slot as usize;
        self.slots.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.slot_of(key).is_some()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &AgendaEntry> {
        self.slots.iter().flat_map(|chunk| chunk.iter()).filter_map(Option::as_ref)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut AgendaEntry> {
        self.slots.iter_mut().flat_map(|chunk| chunk.iter_mut()).filter_map(Option::as_mut)
    }

    /// Room for `additional` more entries without growing.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional.saturating_sub(self.free.len()).div_ceil(CHUNK));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key.reserve(additional, |&s| at(slots, s).map_or(0, |e| hasher.hash_one(e.key())));
    }

    /// Inserts `entry`, or replaces the entry with its key (returned). Its slot is the old
    /// entry's, else a freed one, else a new one. The id tables are not touched: the caller
    /// moves the ids ([`Entries::move_ids`]) if the replaced entry's differ.
    pub(super) fn insert(&mut self, entry: AgendaEntry) -> (u32, Option<AgendaEntry>) {
        if let Some(slot) = self.slot_of(entry.key())
            && let Some(place) = self.place(slot)
        {
            return (slot, place.replace(entry));
        }
        let hash = self.hash(entry.key());
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.used;
                if (slot as usize).is_multiple_of(CHUNK) {
                    self.slots.push(std::iter::repeat_with(|| None).take(CHUNK).collect());
                }
                // 4 billion agendas would need terabytes of memory first.
                self.used = self.used.saturating_add(1);
                slot
            }
        };
        if let Some(place) = self.place(slot) {
            *place = Some(entry);
        }
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key
            .insert_unique(hash, slot, |&s| at(slots, s).map_or(0, |e| hasher.hash_one(e.key())));
        (slot, None)
    }

    /// Removes the entry keyed `key`, freeing its slot. Its ids must have been taken out of
    /// the id tables first ([`Entries::move_ids`]), or the tables be about to be rebuilt.
    pub(super) fn remove(&mut self, key: &str) -> Option<(u32, AgendaEntry)> {
        let slots = &self.slots;
        let hash = self.hash(key);
        let found =
            self.by_key.find_entry(hash, |&s| at(slots, s).is_some_and(|e| e.key() == key)).ok()?;
        let (slot, _) = found.remove();
        let entry = self.place(slot).and_then(Option::take)?;
        self.free.push(slot);
        Some((slot, entry))
    }

    /// The entries whose id of `kind` is `id`, in key order.
    pub(super) fn with(&self, kind: IdKind, id: &str) -> Vec<&AgendaEntry> {
        let table = match kind {
            IdKind::Agenda => &self.ids,
            IdKind::Progress => &self.progress_ids,
        };
        let mut found: Vec<&AgendaEntry> = table
            .iter_hash(self.hash(id))
            .filter_map(|&s| at(&self.slots, s))
            .filter(|e| id_of(e, kind) == id)
            .collect();
        if found.len() > 1 {
            found.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        }
        found
    }

    /// Moves `slot` in the id table of `kind` from under `old` to under `new` (either may be
    /// absent). The entry in `slot` must already have id `new`.
    pub(super) fn move_ids(
        &mut self,
        kind: IdKind,
        slot: u32,
        old: Option<&str>,
        new: Option<&str>,
    ) {
        let old_hash = old.map(|id| self.hash(id));
        let new_hash = new.map(|id| self.hash(id));
        let (table, slots, hasher) = match kind {
            IdKind::Agenda => (&mut self.ids, &self.slots, &self.hasher),
            IdKind::Progress => (&mut self.progress_ids, &self.slots, &self.hasher),
        };
        if let Some(hash) = old_hash
            && let Ok(found) = table.find_entry(hash, |&s| s == slot)
        {
            found.remove();
        }
        if let Some(hash) = new_hash
            && table.find(hash, |&s| s == slot).is_none()
        {
            table.insert_unique(hash, slot, |&s| {
                at(slots, s).map_or(0, |e| hasher.hash_one(id_of(e, kind)))
            });
        }
    }

    /// Builds both id tables from the entries (after a rebuild or a snapshot load).
    pub(super) fn rebuild_ids(&mut self) {
        let n = self.len();
        for kind in [IdKind::Agenda, IdKind::Progress] {
            let mut table = HashTable::with_capacity(n);
            let (slots, hasher) = (&self.slots, &self.hasher);
            let all = slots.iter().flat_map(|chunk| chunk.iter());
            for (slot, entry) in all.enumerate() {
                if let Some(entry) = entry {
                    let slot = u32::try_from(slot).unwrap_or(u32::MAX);
                    table.insert_unique(hasher.hash_one(id_of(entry, kind)), slot, |&s| {
                        at(slots, s).map_or(0, |e| hasher.hash_one(id_of(e, kind)))
                    });
                }
            }
            match kind {
                IdKind::Agenda => self.ids = table,
                IdKind::Progress => self.progress_ids = table,
            }
        }
    }

    /// Every `(id, key)` pair the id table of `kind` holds, sorted (for tests comparing
    /// models).
    #[cfg(test)]
    pub(super) fn id_pairs(&self, kind: IdKind) -> Vec<(String, String)> {
        let table = match kind {
            IdKind::Agenda => &self.ids,
            IdKind::Progress => &self.progress_ids,
        };
        let mut pairs: Vec<(String, String)> = table
            .iter()
            .filter_map(|&s| at(&self.slots, s))
            .map(|e| (id_of(e, kind).to_string(), e.key().to_string()))
            .collect();
        pairs.sort();
        pairs
    }

    /// How many slots there are, used or free (for tests of slot reuse).
    #[cfg(test)]
    pub(super) fn slot_count(&self) -> usize {
        self.used as usize
    }
}
