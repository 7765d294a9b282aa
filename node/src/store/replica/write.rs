//! The one write path of replicated records, for local writes and items applied from
//! siblings alike: the row, its derived indexes, the replica index, the tombstone
//! index and the stored fingerprints change together; LWW for applied items; purges.

use redb::{ReadableTable, WriteTransaction};

use super::replicated::Replicated;
use super::rows::{read_row, remove_row, row_table, split_pair_key, write_row, RowTable};
use super::trees::change_fingerprints;
use super::{version, REPLICA_INDEX, REPLICA_TOMBSTONES};
use crate::core::model::{Record, Version};
use crate::core::replication::item::{item_hash, key_hash};
use crate::core::replication::{Item, RecordKey, ShardId};
use crate::store::{decode, encode, StoreError, StoreResult};

/// Writes `record` under `key` in `shard`, unconditionally: the row, the derived
/// indexes (moved from the stored body to the new one), the replica index, the
/// tombstone index and the fingerprints. Local writes and applied items both
/// come through here; LWW is the caller's (`apply_item`) or given (a local write's
/// version is the newest the node holds).
pub(in crate::store) fn write_record<T: Replicated>(
    txn: &WriteTransaction,
    shard: &str,
    key: &RecordKey,
    record: &Record<T>,
) -> StoreResult<()> {
    debug_assert_eq!(key.table, T::TABLE);
    let old = read_row(txn, key)?.map(|bytes| decode::<Record<T>>(&bytes)).transpose()?;
    T::update_indexes(txn, &key.key, old.as_ref().and_then(|old| old.body.as_ref()), record.body.as_ref())?;
    write_row(txn, key, &encode(record))?;
    set_index_entry(txn, shard, key, Some((record.version, record.body.is_none())))
}

/// Puts, replaces or (with `None`) removes the replica index entry of a record,
/// keeping the tombstone index and the fingerprints in step.
pub(super) fn set_index_entry(
    txn: &WriteTransaction,
    shard: &str,
    key: &RecordKey,
    new: Option<(Version, bool)>,
) -> StoreResult<()> {
    let hash = key_hash(key);
    let code = key.table.code();
    let index_key = (shard, hash, code, key.key.as_str());
    let mut index = txn.open_table(REPLICA_INDEX)?;
    let mut tombstones = txn.open_table(REPLICA_TOMBSTONES)?;
    let old = index.get(index_key)?.map(|value| value.value());
    if let Some((at, origin, is_tombstone)) = old {
        if is_tombstone {
            tombstones.remove((at, origin, shard, code, key.key.as_str()))?;
        }
    }
    match new {
        Some((new_version, is_tombstone)) => {
            let (at, origin) = (new_version.at.0, new_version.origin.0);
            index.insert(index_key, (at, origin, is_tombstone))?;
            if is_tombstone {
                tombstones.insert((at, origin, shard, code, key.key.as_str()), ())?;
            }
        }
        None => {
            index.remove(index_key)?;
        }
    }
    let removed = old.map(|(at, origin, _)| item_hash(hash, version(at, origin)));
    let added = new.map(|(new_version, _)| item_hash(hash, new_version));
    change_fingerprints(txn, shard, hash, removed, added)
}

/// The stored version of a record in a shard, from the replica index.
fn stored_version(txn: &WriteTransaction, shard: &str, key: &RecordKey) -> StoreResult<Option<Version>> {
    let index = txn.open_table(REPLICA_INDEX)?;
    let entry = index.get((shard, key_hash(key), key.table.code(), key.key.as_str()))?;
    Ok(entry.map(|value| {
        let (at, origin, _) = value.value();
        version(at, origin)
    }))
}

/// Why an applied item was not stored (besides being older than what is held).
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("body is not a {0} record: {1}")]
    Body(&'static str, serde_json::Error),
    #[error("key or body does not belong to shard {0}")]
    WrongShard(String),
    #[error("key is not two ids joined by '/'")]
    BadKey,
}

/// Applies `item` if it is newer than what the shard holds (LWW). Returns whether
/// it was stored; `Ok(Err(_))` is an item refused for what it says.
pub(super) fn apply_item<T: Replicated>(txn: &WriteTransaction, item: &Item) -> StoreResult<Result<bool, Refused>> {
    if matches!(row_table(item.key.table), RowTable::Pair(_)) && split_pair_key(&item.key.key).is_none() {
        return Ok(Err(Refused::BadKey));
    }
    let record = match item.to_record::<T>() {
        Ok(record) => record,
        Err(error) => return Ok(Err(Refused::Body(item.key.table.name(), error))),
    };
    match T::shard_of(&item.key.key, record.body.as_ref()) {
        Some(shard) if shard == item.shard.0 => {}
        None if record.body.is_none() => {}
        _ => return Ok(Err(Refused::WrongShard(item.shard.0.clone()))),
    }
    if stored_version(txn, &item.shard.0, &item.key)?.is_some_and(|stored| stored >= item.version) {
        return Ok(Ok(false));
    }
    write_record(txn, &item.shard.0, &item.key, &record)?;
    Ok(Ok(true))
}

/// Removes a record for good: its derived index entries (if it was live), the row,
/// and the replica, tombstone and fingerprint entries. Nothing if the shard does not hold it.
pub(super) fn purge_record<T: Replicated>(txn: &WriteTransaction, shard: &str, key: &RecordKey) -> StoreResult<()> {
    if stored_version(txn, shard, key)?.is_none() {
        return Ok(());
    }
    let old = read_row(txn, key)?.map(|bytes| decode::<Record<T>>(&bytes)).transpose()?;
    T::update_indexes(txn, &key.key, old.as_ref().and_then(|old| old.body.as_ref()), None)?;
    remove_row(txn, key)?;
    set_index_entry(txn, shard, key, None)
}

pub(super) fn read_item<T: Replicated>(
    txn: &WriteTransaction,
    shard: &ShardId,
    key: &RecordKey,
) -> StoreResult<Option<Item>> {
    if stored_version(txn, &shard.0, key)?.is_none() {
        return Ok(None);
    }
    let Some(bytes) = read_row(txn, key)? else { return Ok(None) };
    let record = decode::<Record<T>>(&bytes)?;
    let item = Item::from_record(shard.clone(), key.clone(), &record)
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(Some(item))
}
