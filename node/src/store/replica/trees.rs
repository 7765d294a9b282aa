//! The fingerprints repair compares, kept in redb by the write path, so opening a
//! database builds nothing and a node holds none of them in memory.
//!
//! Two tables, changed in the transaction that changes the replica index:
//! - `replica_shard_fingerprints`: shard → (sum, count) over every record of the
//!   shard (the whole-range fingerprint, depth 0); a shard with no record has no row.
//!   It lists the shards and makes the replication digest.
//! - `replica_bucket_fingerprints`: (shard, top `TREE_DEPTH` bits of the key hash) →
//!   (sum, count): the 256 leaf buckets of the shard's tree; an empty one has no row.
//!   A range down to `TREE_DEPTH` is the sum of its buckets (at most 128 rows for a
//!   range at depth 1, one at depth 8); deeper ranges are summed from the replica
//!   index, as before.
//!
//! Both are derived from `replica_index` and never replicated; schema 3 built them
//! from the index once (`build_fingerprints`).

use std::collections::BTreeMap;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{version, REPLICA_INDEX, REPLICA_TOMBSTONES};
use crate::core::replication::fingerprint::{HASH_BITS, TREE_DEPTH};
use crate::core::replication::item::item_hash;
use crate::core::replication::{Fingerprint, HashRange, ShardId};
use crate::store::{Store, StoreResult};

/// shard → (sum, count) of the item hashes of all its records.
pub(in crate::store) const REPLICA_SHARD_FINGERPRINTS: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("replica_shard_fingerprints");
/// `bucket_key(shard, bucket)` → (sum, count) of the item hashes in that bucket.
/// The key is bytes we encode, not a tuple: redb 3 stores variable-width tuples
/// differently from redb 2, and a table of ours need not move with it.
pub(in crate::store) const REPLICA_BUCKET_FINGERPRINTS: TableDefinition<&[u8], (u64, u64)> =
    TableDefinition::new("replica_bucket_fingerprints");

/// The bucket of a key hash: its top `TREE_DEPTH` bits.
fn bucket_of(key_hash: u64) -> u8 {
    (key_hash >> (HASH_BITS - TREE_DEPTH)) as u8
}

/// The shard's length (4 bytes, big-endian), the shard, then the bucket: the length
/// keeps one shard's buckets together even when a shard id is a prefix of another.
fn bucket_key(shard: &str, bucket: u8) -> Vec<u8> {
    let length = u32::try_from(shard.len()).expect("shard ids are short");
    let mut key = Vec::with_capacity(4 + shard.len() + 1);
    key.extend_from_slice(&length.to_be_bytes());
    key.extend_from_slice(shard.as_bytes());
    key.push(bucket);
    key
}

fn to_fingerprint((sum, count): (u64, u64)) -> Fingerprint {
    Fingerprint { sum, count }
}

/// Takes `removed` out of and puts `added` into the fingerprints of `shard` (an
/// index entry replaced, written or removed), dropping rows that become empty.
pub(super) fn change_fingerprints(
    txn: &WriteTransaction,
    shard: &str,
    key_hash: u64,
    removed: Option<u64>,
    added: Option<u64>,
) -> StoreResult<()> {
    let apply = |stored: Option<(u64, u64)>| {
        let mut fingerprint = stored.map(to_fingerprint).unwrap_or_default();
        if let Some(item_hash) = removed {
            fingerprint.remove(item_hash);
        }
        if let Some(item_hash) = added {
            fingerprint.add(item_hash);
        }
        fingerprint
    };
    let mut shards = txn.open_table(REPLICA_SHARD_FINGERPRINTS)?;
    let total = apply(shards.get(shard)?.map(|value| value.value()));
    if total.count == 0 {
        shards.remove(shard)?;
    } else {
        shards.insert(shard, (total.sum, total.count))?;
    }
    let mut buckets = txn.open_table(REPLICA_BUCKET_FINGERPRINTS)?;
    let key = bucket_key(shard, bucket_of(key_hash));
    let bucket = apply(buckets.get(key.as_slice())?.map(|value| value.value()));
    if bucket.count == 0 {
        buckets.remove(key.as_slice())?;
    } else {
        buckets.insert(key.as_slice(), (bucket.sum, bucket.count))?;
    }
    Ok(())
}

/// The fingerprint of `range` of `shard` from the stored ones, or `None` when the
/// range is deeper than the buckets (the caller sums the index).
pub(super) fn stored_fingerprint(
    txn: &WriteTransaction,
    shard: &ShardId,
    range: HashRange,
) -> StoreResult<Option<Fingerprint>> {
    if range.depth() == 0 {
        let shards = txn.open_table(REPLICA_SHARD_FINGERPRINTS)?;
        return Ok(Some(shards.get(shard.0.as_str())?.map(|value| to_fingerprint(value.value())).unwrap_or_default()));
    }
    if range.depth() > TREE_DEPTH {
        return Ok(None);
    }
    let buckets = txn.open_table(REPLICA_BUCKET_FINGERPRINTS)?;
    let first = bucket_key(&shard.0, bucket_of(range.start()));
    let last = bucket_key(&shard.0, bucket_of(range.end_inclusive()));
    let mut fingerprint = Fingerprint::default();
    for entry in buckets.range(first.as_slice()..=last.as_slice())? {
        fingerprint = fingerprint.combine(to_fingerprint(entry?.1.value()));
    }
    Ok(Some(fingerprint))
}

/// Shards with at least one record, in order.
pub(super) fn stored_shards(txn: &WriteTransaction) -> StoreResult<Vec<ShardId>> {
    let shards = txn.open_table(REPLICA_SHARD_FINGERPRINTS)?;
    let mut found = Vec::new();
    for entry in shards.iter()? {
        found.push(ShardId(entry?.0.value().to_owned()));
    }
    Ok(found)
}

/// Schema 2 → 3: the fingerprint tables from the replica index, in one pass in index
/// order (shard, then key hash), holding one shard's 256 buckets at a time.
pub(in crate::store) fn build_fingerprints(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(REPLICA_SHARD_FINGERPRINTS)?.retain(|_, _| false)?;
    txn.open_table(REPLICA_BUCKET_FINGERPRINTS)?.retain(|_, _| false)?;
    let index = txn.open_table(REPLICA_INDEX)?;
    let mut current: Option<(String, Vec<Fingerprint>)> = None;
    let mut shards = 0u64;
    for entry in index.iter()? {
        let (key, value) = entry?;
        let (shard, hash, _, _) = key.value();
        let (at, origin, _) = value.value();
        if current.as_ref().is_none_or(|(held, _)| held != shard) {
            if let Some((held, buckets)) = current.take() {
                write_shard(txn, &held, &buckets)?;
                shards += 1;
            }
            current = Some((shard.to_owned(), vec![Fingerprint::default(); 1 << TREE_DEPTH]));
        }
        let (_, buckets) = current.as_mut().expect("set above");
        buckets[usize::from(bucket_of(hash))].add(item_hash(hash, version(at, origin)));
    }
    if let Some((held, buckets)) = current.take() {
        write_shard(txn, &held, &buckets)?;
        shards += 1;
    }
    tracing::info!(shards, "schema 3 migration: stored the fingerprints of every shard");
    Ok(())
}

fn write_shard(txn: &WriteTransaction, shard: &str, buckets: &[Fingerprint]) -> StoreResult<()> {
    let mut bucket_table = txn.open_table(REPLICA_BUCKET_FINGERPRINTS)?;
    let mut total = Fingerprint::default();
    for (bucket, fingerprint) in buckets.iter().enumerate().filter(|(_, fingerprint)| fingerprint.count > 0) {
        let key = bucket_key(shard, u8::try_from(bucket).expect("256 buckets"));
        bucket_table.insert(key.as_slice(), (fingerprint.sum, fingerprint.count))?;
        total = total.combine(*fingerprint);
    }
    txn.open_table(REPLICA_SHARD_FINGERPRINTS)?.insert(shard, (total.sum, total.count))?;
    Ok(())
}

/// (records held, tombstones included; a digest of every shard's fingerprint): two
/// nodes holding the same shards at the same versions have equal digests.
fn digest<'a>(totals: impl Iterator<Item = (&'a str, Fingerprint)>) -> (u64, u64) {
    let mut records = 0u64;
    let mut digest = 0u64;
    for (shard, total) in totals {
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

/// The committed whole-range fingerprint of every shard of a database (one row per
/// shard, never the records): what its replication digest is made of.
#[derive(Debug, Default)]
pub struct ShardFingerprints {
    totals: BTreeMap<String, Fingerprint>,
}

/// The name store/backup.rs knows `ShardFingerprints` by.
pub type ShardTrees = ShardFingerprints;

impl ShardFingerprints {
    pub(in crate::store) fn build(db: &Database) -> StoreResult<ShardFingerprints> {
        let txn = db.begin_read()?;
        let mut totals = BTreeMap::new();
        for entry in txn.open_table(REPLICA_SHARD_FINGERPRINTS)?.iter()? {
            let (shard, total) = entry?;
            totals.insert(shard.value().to_owned(), to_fingerprint(total.value()));
        }
        Ok(ShardFingerprints { totals })
    }

    /// See `Store::replication_digest`.
    pub fn digest(&self) -> (u64, u64) {
        digest(self.totals.iter().map(|(shard, total)| (shard.as_str(), *total)))
    }
}

impl Store {
    /// (replicated records held, tombstones among them, digest of every shard), as
    /// committed; reads one row per shard.
    pub fn replication_digest(&self) -> StoreResult<(u64, u64, u64)> {
        let txn = self.db.begin_read()?;
        let mut totals = Vec::new();
        for entry in txn.open_table(REPLICA_SHARD_FINGERPRINTS)?.iter()? {
            let (shard, total) = entry?;
            totals.push((shard.value().to_owned(), to_fingerprint(total.value())));
        }
        let (records, digest) = digest(totals.iter().map(|(shard, total)| (shard.as_str(), *total)));
        let tombstones = txn.open_table(REPLICA_TOMBSTONES)?.len()?;
        Ok((records, tombstones, digest))
    }
}
