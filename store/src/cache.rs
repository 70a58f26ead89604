//! A bounded map that keeps recently used entries: two generations, the young one filled by
//! inserts and hits, the old one dropped wholesale when the young one is full. O(1), no
//! per-entry bookkeeping, and an entry used at least once per generation stays.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub(crate) struct GenerationalCache<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    /// Entries per generation; the cache holds at most twice this.
    generation: usize,
}

impl<K: Hash + Eq, V: Clone> GenerationalCache<K, V> {
    /// A cache holding at most `capacity` entries (at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        let generation = (capacity / 2).max(1);
        GenerationalCache { young: HashMap::new(), old: HashMap::new(), generation }
    }

    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        // A hit in the old generation moves the entry to the young one, so it survives the
        // next rotation.
        let (k, v) = self.old.remove_entry(key)?;
        self.insert(k, v.clone());
        Some(v)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.generation && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    pub(crate) fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
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
}
