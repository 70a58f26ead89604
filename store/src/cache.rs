//! A bounded map that keeps recently used entries: two generations, the young one filled by
//! inserts and hits, the old one dropped wholesale when the young one is full (of entries, or
//! of their weight when the cache has a weight bound). O(1), no per-entry bookkeeping but a
//! weight, and an entry used at least once per generation stays.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct GenerationalCache<K, V> {
    young: HashMap<K, (V, u64)>,
    old: HashMap<K, (V, u64)>,
    /// Entries per generation; the cache holds at most twice this.
    generation: usize,
    /// Weight per generation (e.g. bytes); the cache holds at most twice this, plus one entry
    /// heavier than it alone.
    generation_weight: u64,
    young_weight: u64,
}

impl<K: Hash + Eq, V: Clone> GenerationalCache<K, V> {
    /// A cache holding at most `capacity` entries (at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        Self::weighted(capacity, u64::MAX)
    }

    /// A cache holding at most `capacity` entries (at least 2) of at most `max_weight` in all
    /// (see [`GenerationalCache::insert_weighted`]).
    pub(crate) fn weighted(capacity: usize, max_weight: u64) -> Self {
        GenerationalCache {
            young: HashMap::new(),
            old: HashMap::new(),
            generation: (capacity / 2).max(1),
            generation_weight: (max_weight / 2).max(1),
            young_weight: 0,
        }
    }

    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((v, _)) = self.young.get(key) {
            return Some(v.clone());
        }
        // A hit in the old generation moves the entry to the young one, so it survives the
        // next rotation.
        let (k, (v, weight)) = self.old.remove_entry(key)?;
        self.insert_weighted(k, v.clone(), weight);
        Some(v)
    }

    /// Inserts an entry of no weight.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.insert_weighted(key, value, 0);
    }

    /// Inserts an entry that weighs `weight` towards the cache's weight bound.
    pub(crate) fn insert_weighted(&mut self, key: K, value: V, weight: u64) {
        if let Some((_, before)) = self.young.remove(&key) {
            self.young_weight = self.young_weight.saturating_sub(before);
        } else if !self.young.is_empty()
            && (self.young.len() >= self.generation
                || self.young_weight.saturating_add(weight) > self.generation_weight)
        {
            self.old = std::mem::take(&mut self.young);
            self.young_weight = 0;
        }
        self.old.remove(&key);
        self.young_weight = self.young_weight.saturating_add(weight);
        self.young.insert(key, (value, weight));
    }

    pub(crate) fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_weight = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.young.values().chain(self.old.values()).map(|(_, w)| w).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_recent_entries() {
        let mut c = GenerationalCache::new(10);
        for i in 0..1000 {
            c.insert(i, i * 2);
            assert!(c.len() <= 10);
            // Touch 0 every time: it must never be evicted.
            assert_eq!(c.get(&0), Some(0));
        }
        assert_eq!(c.get(&999), Some(1998));
        assert_eq!(c.get(&1), None);
        c.clear();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn stays_within_its_weight_however_few_the_entries() {
        let mut c = GenerationalCache::weighted(10_000, 1_000);
        for i in 0..1000u64 {
            c.insert_weighted(i, i, 100 + i % 7);
            assert!(c.weight() <= 1_000, "{} at {i}", c.weight());
            assert!(c.len() <= 10);
        }
        assert_eq!(c.get(&999), Some(999));
        // Re-inserting a key replaces its weight rather than adding to it.
        for _ in 0..100 {
            c.insert_weighted(999, 999, 100);
        }
        assert!(c.weight() <= 1_000);
        // One entry heavier than a generation is still kept (alone).
        c.insert_weighted(5_000, 0, 2_000);
        assert_eq!(c.get(&5_000), Some(0));
    }
}
