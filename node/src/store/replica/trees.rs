//! The fingerprint trees: one per shard, in memory, kept by every replicated write and
//! rebuilt from the replica index at start; repair's fingerprints and the
//! replication digest come from them.

use std::collections::BTreeMap;

use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::{version, REPLICA_INDEX, REPLICA_TOMBSTONES};
use crate::core::replication::item::item_hash;
use crate::core::replication::FingerprintTree;
use crate::store::{Store, StoreResult};

/// One `FingerprintTree` per non-empty shard, kept in memory and updated by every
/// replicated write (a write that is rolled back sets `changed`, and the owner
/// rebuilds from the committed index).
#[derive(Debug, Default)]
pub struct ShardTrees {
    pub(super) trees: BTreeMap<String, FingerprintTree>,
    pub(in crate::store) changed: bool,
}

impl ShardTrees {
    pub(super) fn add(&mut self, shard: &str, key_hash: u64, item_hash: u64) {
        self.changed = true;
        if !self.trees.contains_key(shard) {
            self.trees.insert(shard.to_owned(), FingerprintTree::default());
        }
        self.trees.get_mut(shard).expect("inserted above").add(key_hash, item_hash);
    }

    pub(super) fn remove(&mut self, shard: &str, key_hash: u64, item_hash: u64) {
        self.changed = true;
        let Some(tree) = self.trees.get_mut(shard) else { return };
        tree.remove(key_hash, item_hash);
        if tree.total().count == 0 {
            self.trees.remove(shard);
        }
    }

    /// (records held, tombstones included; a digest of every shard's fingerprint):
    /// two nodes holding the same shards at the same versions have equal digests.
    pub fn digest(&self) -> (u64, u64) {
        let mut records = 0u64;
        let mut digest = 0u64;
        for (shard, tree) in &self.trees {
            let total = tree.total();
            records += total.count;
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            sha2::Digest::update(&mut hasher, shard.as_bytes());
            sha2::Digest::update(&mut hasher, [0]);
            sha2::Digest::update(&mut hasher, total.sum.to_be_bytes());
            sha2::Digest::update(&mut hasher, total.count.to_be_bytes());
            let hash = sha2::Digest::finalize(hasher);
            digest = digest.wrapping_add(u64::from_be_bytes(hash[..8].try_into().expect("8 bytes")));
        }
        (records, digest)
    }

    /// The trees of every record the database holds (committed state).
    pub(in crate::store) fn build(db: &Database) -> StoreResult<ShardTrees> {
        let txn = db.begin_read()?;
        let index = txn.open_table(REPLICA_INDEX)?;
        let mut trees = ShardTrees::default();
        for entry in index.iter()? {
            let (key, value) = entry?;
            let (shard, hash, _, _) = key.value();
            let (at, origin, _) = value.value();
            trees.add(shard, hash, item_hash(hash, version(at, origin)));
        }
        trees.changed = false;
        Ok(trees)
    }
}

impl Store {
    /// (replicated records held, tombstones among them, digest of every shard).
    pub fn replication_digest(&self) -> StoreResult<(u64, u64, u64)> {
        let (records, digest) = self.trees.lock().expect("trees lock").digest();
        let txn = self.db.begin_read()?;
        let tombstones = txn.open_table(REPLICA_TOMBSTONES)?.len()?;
        Ok((records, tombstones, digest))
    }
}
