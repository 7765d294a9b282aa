//! What replication needs from a store, as a trait, and `MemoryStore`, the in-memory
//! implementation the simulator (and unit tests) drive. The redb-backed store
//! implements the same trait; it must keep a `FingerprintTree` per shard the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;

use super::fingerprint::{Fingerprint, FingerprintTree, HashRange};
use super::item::{item_hash, key_hash, Item, RecordKey, ShardId, Table};
use crate::core::hlc::Timestamp;
use crate::core::model::{NodeId, Version};

/// A record's key and version, without the body: what item lists in repair carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: RecordKey,
    pub version: Version,
}

/// A record named by its shard and key, with the version it is stored at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionedKey {
    pub shard: ShardId,
    pub key: RecordKey,
    pub version: Version,
}

/// The store as replication sees it. Every method is one step that a durable store
/// does in one transaction; nothing here decides who wins (the node does, by LWW).
pub trait ReplicaStore {
    fn get(&self, shard: &ShardId, key: &RecordKey) -> Option<Item>;
    /// Stores `item` in place of whatever is under its key, keeping fingerprints current.
    fn put(&mut self, item: Item);
    /// Removes a record for good: only for tombstones every replica has (GC).
    fn purge(&mut self, shard: &ShardId, key: &RecordKey);
    /// Shards with at least one stored record, in order.
    fn shards(&self) -> Vec<ShardId>;
    fn fingerprint(&self, shard: &ShardId, range: HashRange) -> Fingerprint;
    /// Up to `limit` records of `range`, in hash order.
    fn summaries(&self, shard: &ShardId, range: HashRange, limit: usize) -> Vec<Summary>;
    /// Up to `limit` tombstones with `version.at < before`, oldest first.
    fn tombstones_before(&self, before: Timestamp, limit: usize) -> Vec<VersionedKey>;
    /// Every record whose stored version was written by `origin`, oldest first: what a
    /// node's change log is rebuilt from when it starts a new epoch.
    fn originated_by(&self, origin: NodeId) -> Vec<VersionedKey>;
}

#[derive(Debug, Clone)]
struct StoredItem {
    version: Version,
    body: Option<Bytes>,
    item_hash: u64,
}

#[derive(Debug, Clone, Default)]
struct ShardContents {
    /// Ordered by (key hash, key): ranges of the hash space are ranges of the map.
    items: BTreeMap<MapKey, StoredItem>,
    tree: FingerprintTree,
}

/// Every record in memory, ordered the way repair walks it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    shards: BTreeMap<ShardId, ShardContents>,
    /// Tombstones by age, for GC without a scan.
    tombstones: BTreeSet<(Version, ShardId, RecordKey)>,
}

impl MemoryStore {
    /// Every record of `shard`, in hash order.
    pub fn items(&self, shard: &ShardId) -> Vec<Item> {
        let Some(contents) = self.shards.get(shard) else { return Vec::new() };
        contents
            .items
            .iter()
            .map(|((_, key), stored)| Item {
                shard: shard.clone(),
                key: key.clone(),
                version: stored.version,
                body: stored.body.clone(),
            })
            .collect()
    }

    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }
}

/// The smallest `RecordKey`, to start a map range at a hash.
fn lowest_key() -> RecordKey {
    RecordKey { table: Table::User, key: String::new() }
}

/// A position in a shard's map: (key hash, key).
type MapKey = (u64, RecordKey);

fn map_range(range: HashRange) -> (Bound<MapKey>, Bound<MapKey>) {
    let start = Bound::Included((range.start(), lowest_key()));
    let end = match range.end_inclusive().checked_add(1) {
        Some(next) => Bound::Excluded((next, lowest_key())),
        None => Bound::Unbounded,
    };
    (start, end)
}

impl ReplicaStore for MemoryStore {
    fn get(&self, shard: &ShardId, key: &RecordKey) -> Option<Item> {
        let stored = self.shards.get(shard)?.items.get(&(key_hash(key), key.clone()))?;
        Some(Item { shard: shard.clone(), key: key.clone(), version: stored.version, body: stored.body.clone() })
    }

    fn put(&mut self, item: Item) {
        let hash = key_hash(&item.key);
        let contents = self.shards.entry(item.shard.clone()).or_default();
        let stored = StoredItem { version: item.version, item_hash: item_hash(hash, item.version), body: item.body };
        contents.tree.add(hash, stored.item_hash);
        if stored.body.is_none() {
            self.tombstones.insert((stored.version, item.shard.clone(), item.key.clone()));
        }
        if let Some(old) = contents.items.insert((hash, item.key.clone()), stored) {
            contents.tree.remove(hash, old.item_hash);
            if old.body.is_none() {
                self.tombstones.remove(&(old.version, item.shard, item.key));
            }
        }
    }

    fn purge(&mut self, shard: &ShardId, key: &RecordKey) {
        let hash = key_hash(key);
        let Some(contents) = self.shards.get_mut(shard) else { return };
        let Some(old) = contents.items.remove(&(hash, key.clone())) else { return };
        contents.tree.remove(hash, old.item_hash);
        if old.body.is_none() {
            self.tombstones.remove(&(old.version, shard.clone(), key.clone()));
        }
        if contents.items.is_empty() {
            self.shards.remove(shard);
        }
    }

    fn shards(&self) -> Vec<ShardId> {
        self.shards.keys().cloned().collect()
    }

    fn fingerprint(&self, shard: &ShardId, range: HashRange) -> Fingerprint {
        let Some(contents) = self.shards.get(shard) else { return Fingerprint::default() };
        if let Some(cached) = contents.tree.get(range) {
            return cached;
        }
        let mut fingerprint = Fingerprint::default();
        for stored in contents.items.range(map_range(range)).map(|(_, stored)| stored) {
            fingerprint.add(stored.item_hash);
        }
        fingerprint
    }

    fn summaries(&self, shard: &ShardId, range: HashRange, limit: usize) -> Vec<Summary> {
        let Some(contents) = self.shards.get(shard) else { return Vec::new() };
        contents
            .items
            .range(map_range(range))
            .take(limit)
            .map(|((_, key), stored)| Summary { key: key.clone(), version: stored.version })
            .collect()
    }

    fn tombstones_before(&self, before: Timestamp, limit: usize) -> Vec<VersionedKey> {
        self.tombstones
            .iter()
            .take_while(|(version, _, _)| version.at < before)
            .take(limit)
            .map(|(version, shard, key)| VersionedKey { shard: shard.clone(), key: key.clone(), version: *version })
            .collect()
    }

    fn originated_by(&self, origin: NodeId) -> Vec<VersionedKey> {
        let mut found: Vec<VersionedKey> = self
            .shards
            .iter()
            .flat_map(|(shard, contents)| {
                contents.items.iter().filter(|(_, stored)| stored.version.origin == origin).map(|((_, key), stored)| {
                    VersionedKey { shard: shard.clone(), key: key.clone(), version: stored.version }
                })
            })
            .collect();
        found.sort_by_key(|entry| entry.version);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, at: u64, body: Option<&'static str>) -> Item {
        Item {
            shard: ShardId("u1".into()),
            key: RecordKey::new(Table::Post, key),
            version: Version { at: Timestamp(at), origin: NodeId(1) },
            body: body.map(|text| Bytes::from_static(text.as_bytes())),
        }
    }

    #[test]
    fn fingerprints_follow_puts_replacements_and_purges() {
        let shard = ShardId("u1".into());
        let mut store = MemoryStore::default();
        let mut other = MemoryStore::default();
        for index in 0..100 {
            store.put(item(&format!("p{index}"), index, Some("x")));
        }
        for index in (0..100).rev() {
            other.put(item(&format!("p{index}"), index, Some("x")));
        }
        assert_eq!(store.fingerprint(&shard, HashRange::ALL), other.fingerprint(&shard, HashRange::ALL));
        assert_eq!(store.fingerprint(&shard, HashRange::ALL).count, 100);

        store.put(item("p7", 500, None));
        assert_ne!(store.fingerprint(&shard, HashRange::ALL), other.fingerprint(&shard, HashRange::ALL));
        assert_eq!(store.tombstones_before(Timestamp(501), 10).len(), 1);
        assert_eq!(store.tombstones_before(Timestamp(500), 10).len(), 0);
        other.put(item("p7", 500, None));
        assert_eq!(store.fingerprint(&shard, HashRange::ALL), other.fingerprint(&shard, HashRange::ALL));

        store.purge(&shard, &RecordKey::new(Table::Post, "p7"));
        assert_eq!(store.fingerprint(&shard, HashRange::ALL).count, 99);
        assert_eq!(store.tombstone_count(), 0);
        // A deep range is summed from the items and agrees with the summaries.
        let deep = HashRange::new(12, 0).unwrap();
        assert_eq!(store.fingerprint(&shard, deep).count as usize, store.summaries(&shard, deep, usize::MAX).len());
    }
}
