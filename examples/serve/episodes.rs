//! A bounded store of per-key state, evicting the least recently used entry when full: the
//! server keeps one decoder (and so one drafting history) per episode id in it, and one reusable
//! decoder per decoder setting for requests without an episode.
//!
//! Eviction scans for the oldest entry, O(n) in the bound; it runs only when a new key arrives
//! at a full store, and n (`--max-episodes`) is small next to the cost of one action.

use std::collections::HashMap;

/// Entries keyed by string, at most `capacity` of them.
#[derive(Debug)]
pub struct Lru<V> {
    entries: HashMap<String, Slot<V>>,
    capacity: usize,
    /// Ticks once per use: a slot's `last_used` orders the entries by recency.
    clock: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    last_used: u64,
}

impl<V> Lru<V> {
    /// A store of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries dropped to make room since the store was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    #[cfg(test)]
    /// The entry for `key`, marked as just used.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|slot| {
            slot.last_used = clock;
            &mut slot.value
        })
    }

    /// Stores `value` under `key` (replacing an entry of that key), first evicting the least
    /// recently used entry when the store is full. Returns the stored value.
    pub fn insert(&mut self, key: String, value: V) -> &mut V {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, slot)| slot.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.clock += 1;
        let slot = Slot {
            value,
            last_used: self.clock,
        };
        let slot = match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.insert(slot);
                e.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(slot),
        };
        &mut slot.value
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.entries.remove(key).map(|slot| slot.value)
    }

    #[cfg(test)]
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_entry() {
        let mut lru = Lru::new(2);
        lru.insert("a".into(), 1);
        lru.insert("b".into(), 2);
        // Using `a` makes `b` the oldest.
        assert_eq!(lru.get_mut("a").copied(), Some(1));
        lru.insert("c".into(), 3);
        assert!(lru.contains("a") && lru.contains("c") && !lru.contains("b"));
        assert_eq!((lru.len(), lru.evicted()), (2, 1));
        // Replacing an entry evicts nothing.
        *lru.insert("c".into(), 4) += 1;
        assert_eq!(lru.get_mut("c").copied(), Some(5));
        assert_eq!((lru.len(), lru.evicted()), (2, 1));
        assert_eq!(lru.remove("a"), Some(1));
        assert_eq!(lru.remove("a"), None);
        lru.clear();
        assert_eq!(lru.len(), 0);
        assert_eq!(Lru::<u8>::new(0).capacity(), 1);
    }
}
