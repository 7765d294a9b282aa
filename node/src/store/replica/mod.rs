//! Replication over redb: the one write path every replicated record takes (a local
//! write or an item applied from a sibling), the per-shard index in hash order that
//! repair walks, and `RedbReplicaStore`, the `ReplicaStore` the replication state
//! machine runs on in a real node.
//!
//! # Shards, tables and keys
//!
//! Each user is a shard (`ShardId(user_id)`); placement records live in the siblings
//! shard. A `RecordKey` names the redb row; composite redb keys are the two parts
//! joined by `/`, which never occurs in ids (user, post, comment and media ids are
//! lowercase hex):
//!
//! | `Table`      | redb table     | `RecordKey::key`       | shard                |
//! |--------------|----------------|------------------------|----------------------|
//! | `User`       | `users`        | `user_id`              | the user             |
//! | `Credential` | `credentials`  | `user_id`              | the user             |
//! | `Post`       | `posts`        | `post_id`              | the author           |
//! | `Follow`     | `follows`      | `follower/followee`    | the follower         |
//! | `Like`       | `likes`        | `post_id/user_id`      | the liker            |
//! | `Comment`    | `comments`     | `post_id/comment_id`   | the comment's author |
//! | `MediaOwner` | `media_owners` | `media_id/user_id`     | the owner            |
//! | `Placement`  | `placement`    | the placed user id     | `~siblings`          |
//! | `FollowDecision` | `follow_decisions` | `followee/follower` | the followee     |
//! | `Block`      | `blocks`       | `blocker/blocked`      | the blocker          |
//! | `Report`     | `reports`      | `report_id/reporter`   | the reporter         |
//! | `PostModeration` | `post_moderation` | `author/post_id` | the post's author  |
//!
//! An `Item`'s body is the JSON of `T` of the stored `Record<T>` (exactly what
//! `Item::from_record` makes); the row holds the whole `Record<T>` JSON as before, so
//! `Item::to_record` of what `get` returns is the stored record.
//!
//! # Derived tables (never replicated), all written in the writing transaction
//!
//! - `replica_index` (shard, key hash, table code, key) → (at, origin, tombstone):
//!   every replicated record in repair order; the source of `summaries`, deep
//!   `fingerprint`s and `originated_by`.
//! - `replica_tombstones` (at, origin, shard, table code, key) → (): tombstones by age.
//! - `replica_shard_fingerprints`, `replica_bucket_fingerprints`: each shard's
//!   fingerprint and those of its 256 buckets (`trees`), which `shards`, `fingerprint`
//!   and the replication digest read; nothing of them is held in memory.
//! - the indexes of `Store` (handles, posts_by_author, media_posts, terms, followers),
//!   kept by `Replicated::update_indexes` from the old and the new body.
//! - `replica_state` / `replica_log` / `replica_floors`: the `DurableState` of the
//!   replication node.
//!
//! # Files
//!
//! This file holds `RedbReplicaStore` and its `ReplicaStore` impl; `rows` maps a
//! `Table` to its redb rows and composite keys, `replicated` says per record type
//! which shard it is in and which derived indexes it keeps, `write` is the one write
//! path (rows, indexes, replica index, tombstones, fingerprints), `trees` the stored
//! fingerprints, `durable` the `DurableState` tables, and `migration` the
//! schema 1 → 2 indexing.

mod durable;
mod migration;
mod replicated;
mod rows;
#[cfg(test)]
mod tests;
mod trees;
mod write;

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::core::hlc::Timestamp;
use crate::core::model::{NodeId, Version};
use crate::core::replication::item::{item_hash, key_hash};
use crate::core::replication::{
    DurableState, Fingerprint, HashRange, Item, RecordKey, ReplicaStore, ShardId, Summary, Table, VersionedKey,
};
use crate::store::{Store, StoreError, StoreResult};
use durable::{read_durable, write_durable, DurableSummary, PersistedLog};
pub(super) use migration::index_v1_rows;
use replicated::for_table;
pub(super) use replicated::Replicated;
pub use rows::{pair_key, split_pair_key};
pub(super) use trees::build_fingerprints;
use trees::{stored_fingerprint, stored_shards};
pub use trees::{ShardFingerprints, ShardTrees};
pub(super) use trees::{REPLICA_BUCKET_FINGERPRINTS, REPLICA_SHARD_FINGERPRINTS};
pub(super) use write::write_record;
use write::{apply_item, purge_record, read_item};

/// (shard, key hash, table code, key) → (at, origin, tombstone).
type IndexKey<'a> = (&'a str, u64, u8, &'a str);
pub(super) const REPLICA_INDEX: TableDefinition<IndexKey, (u64, u64, bool)> = TableDefinition::new("replica_index");
pub(super) const REPLICA_TOMBSTONES: TableDefinition<(u64, u64, &str, u8, &str), ()> =
    TableDefinition::new("replica_tombstones");
pub(super) const PLACEMENT: TableDefinition<&str, &[u8]> = TableDefinition::new("placement");
pub(super) const REPLICA_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("replica_state");
pub(super) const REPLICA_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("replica_log");
/// shard → its floor (`DurableState::shard_floors`): the settled shards.
pub(super) const REPLICA_FLOORS: TableDefinition<&str, u64> = TableDefinition::new("replica_floors");

/// Writes a tombstone of the record `key` in `shard`, whatever its table (deleting
/// an account tombstones every record of its shard).
pub(super) fn write_tombstone(txn: &WriteTransaction, shard: &str, key: &RecordKey, at: Version) -> StoreResult<()> {
    fn of_type<T: Replicated>(txn: &WriteTransaction, shard: &str, key: &RecordKey, at: Version) -> StoreResult<()> {
        write_record(txn, shard, key, &crate::core::model::Record::<T>::tombstone(at))
    }
    for_table!(key.table, of_type(txn, shard, key, at))
}

fn version(at: u64, origin: u64) -> Version {
    Version { at: Timestamp(at), origin: NodeId(origin) }
}

/// The `ReplicaStore` over the node's redb database, sharing it with `Store`.
///
/// Every trait call works in one write transaction that stays open until `commit`,
/// which also writes the `DurableState` into it: the records and the state that
/// covers them become durable together. The driver calls `commit` after every
/// `ReplicaNode::handle_*` call, before sending what `poll_transmit` returns and
/// before acknowledging a client. While the transaction is open, `Store`'s writers
/// wait for it: never call a writing `Store` method on the driver's thread between a
/// `handle_*` call and `commit` (it would wait for itself).
///
/// The trait's methods cannot fail; a database error is kept and returned by the
/// next `commit`, which then rolls back everything since the last one (the driver
/// should then restart replication from `open`).
pub struct RedbReplicaStore {
    /// Declared before `store`, so it is dropped (aborted) first: dropping the last
    /// `Arc<Store>` closes the database, which waits for every write transaction.
    txn: RefCell<Option<WriteTransaction>>,
    store: Arc<Store>,
    failure: RefCell<Option<StoreError>>,
    persisted: RefCell<PersistedLog>,
    /// What the last commit made durable, to skip commits that would change nothing.
    committed: RefCell<Option<DurableSummary>>,
    /// The open transaction wrote something (a step that only read commits nothing:
    /// no fsync for a step that answers an ack or a probe).
    wrote: Cell<bool>,
}

impl std::fmt::Debug for RedbReplicaStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RedbReplicaStore").field("node_id", &self.store.node_id()).finish_non_exhaustive()
    }
}

impl RedbReplicaStore {
    /// The replica store over `store`'s database, and the durable state last
    /// committed (or a fresh one whose clock starts after every stored version; the
    /// driver should then start a new log epoch, so writes made before replication
    /// ran reach the siblings).
    pub fn open(store: Arc<Store>) -> StoreResult<(RedbReplicaStore, DurableState)> {
        let txn = store.db.begin_write()?;
        let (durable, persisted) = read_durable(&txn)?;
        txn.abort()?;
        let replica = RedbReplicaStore {
            store,
            txn: RefCell::new(None),
            failure: RefCell::new(None),
            persisted: RefCell::new(persisted),
            committed: RefCell::new(None),
            wrote: Cell::new(false),
        };
        Ok((replica, durable))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Makes every change since the last commit durable, with `durable`, in one
    /// transaction. Returns the first error any trait call met since the last
    /// commit (everything since is rolled back then).
    pub fn commit(&self, durable: &DurableState) -> StoreResult<()> {
        let pending = self.txn.borrow_mut().take();
        if let Some(error) = self.failure.borrow_mut().take() {
            drop(pending);
            return Err(error);
        }
        self.commit_pending(pending, durable)
    }

    fn commit_pending(&self, pending: Option<WriteTransaction>, durable: &DurableState) -> StoreResult<()> {
        let summary = DurableSummary::of(durable);
        let wrote = self.wrote.replace(false);
        if !wrote && self.committed.borrow().as_ref() == Some(&summary) {
            // Nothing changed since the last commit: no commit, no fsync (a read-only
            // transaction is dropped, which aborts it).
            drop(pending);
            return Ok(());
        }
        let txn = match pending {
            Some(txn) => txn,
            None => self.store.db.begin_write()?,
        };
        let persisted = write_durable(&txn, durable, &self.persisted.borrow())?;
        txn.commit()?;
        if wrote {
            self.store.visibility_changed();
            // Photos whose last owner's tombstone arrived: their rows went in the
            // commit, their files go now.
            if let Err(error) = self.store.remove_unowned_media_files() {
                tracing::warn!(%error, "could not remove the files of photos nobody owns any more");
            }
        }
        *self.persisted.borrow_mut() = persisted;
        *self.committed.borrow_mut() = Some(summary);
        Ok(())
    }

    /// Runs a client's replicated writes (`Store::write` through `LocalTransactions`)
    /// in this store's transaction. On error the transaction is rolled back, so call
    /// it only right after a commit (as a step of its own) and commit right after.
    pub fn local_transaction(
        &mut self,
        next_version: &mut dyn FnMut() -> Version,
        body: &mut crate::store::LocalBody<'_>,
    ) -> StoreResult<Vec<VersionedKey>> {
        let mut slot = self.txn.borrow_mut();
        debug_assert!(slot.is_none(), "a local transaction starts right after a commit");
        if slot.is_none() {
            *slot = Some(self.store.db.begin_write()?);
        }
        self.wrote.set(true);
        let result = body(slot.as_ref().expect("begun above"), next_version);
        if result.is_err() {
            drop(slot.take());
        }
        result
    }

    fn fail(&self, error: StoreError) {
        tracing::error!(%error, "replica store failed; the next commit rolls back");
        self.failure.borrow_mut().get_or_insert(error);
    }

    /// Runs `body` in the open write transaction (beginning one if needed); an error
    /// is kept for `commit` and `fallback` returned.
    fn in_txn<R>(&self, fallback: R, body: impl FnOnce(&WriteTransaction) -> StoreResult<R>) -> R {
        let mut slot = self.txn.borrow_mut();
        if slot.is_none() {
            match self.store.db.begin_write() {
                Ok(txn) => *slot = Some(txn),
                Err(error) => {
                    self.fail(error.into());
                    return fallback;
                }
            }
        }
        match body(slot.as_ref().expect("begun above")) {
            Ok(value) => value,
            Err(error) => {
                self.fail(error);
                fallback
            }
        }
    }

    /// Index entries of `range` of `shard`, in hash order.
    fn index_range(&self, shard: &ShardId, range: HashRange, limit: usize) -> Vec<(RecordKey, Version)> {
        self.in_txn(Vec::new(), |txn| {
            let index = txn.open_table(REPLICA_INDEX)?;
            let start = (shard.0.as_str(), range.start(), 0u8, "");
            let end = (shard.0.as_str(), range.end_inclusive(), u8::MAX, "");
            let mut found = Vec::new();
            for entry in index.range(start..=end)?.take(limit) {
                let (key, value) = entry?;
                let (_, _, code, record_key) = key.value();
                let (at, origin, _) = value.value();
                let table = Table::from_code(code)
                    .ok_or_else(|| StoreError::Corrupt(format!("replica index names unknown table {code}")))?;
                found.push((RecordKey::new(table, record_key), version(at, origin)));
            }
            Ok(found)
        })
    }
}

impl ReplicaStore for RedbReplicaStore {
    fn get(&self, shard: &ShardId, key: &RecordKey) -> Option<Item> {
        self.in_txn(None, |txn| for_table!(key.table, read_item(txn, shard, key)))
    }

    fn put(&mut self, item: Item) {
        self.wrote.set(true);
        let outcome = self.in_txn(None, |txn| for_table!(item.key.table, apply_item(txn, &item)).map(Some));
        match outcome {
            Some(Ok(true)) => self.store.observe_clock(item.version.at),
            Some(Ok(false)) | None => {}
            Some(Err(refused)) => {
                tracing::warn!(shard = %item.shard, key = %item.key.key, table = item.key.table.name(), %refused, "refused a replicated item");
            }
        }
    }

    fn purge(&mut self, shard: &ShardId, key: &RecordKey) {
        self.wrote.set(true);
        self.in_txn((), |txn| for_table!(key.table, purge_record(txn, &shard.0, key)));
    }

    fn shards(&self) -> Vec<ShardId> {
        self.in_txn(Vec::new(), stored_shards)
    }

    fn fingerprint(&self, shard: &ShardId, range: HashRange) -> Fingerprint {
        if let Some(stored) = self.in_txn(None, |txn| stored_fingerprint(txn, shard, range)) {
            return stored;
        }
        let mut fingerprint = Fingerprint::default();
        for (key, version) in self.index_range(shard, range, usize::MAX) {
            fingerprint.add(item_hash(key_hash(&key), version));
        }
        fingerprint
    }

    fn summaries(&self, shard: &ShardId, range: HashRange, limit: usize) -> Vec<Summary> {
        self.index_range(shard, range, limit).into_iter().map(|(key, version)| Summary { key, version }).collect()
    }

    fn tombstones_before(&self, before: Timestamp, limit: usize) -> Vec<VersionedKey> {
        self.in_txn(Vec::new(), |txn| {
            let tombstones = txn.open_table(REPLICA_TOMBSTONES)?;
            let mut found = Vec::new();
            for entry in tombstones.range(..(before.0, 0u64, "", 0u8, ""))?.take(limit) {
                let (key, _) = entry?;
                let (at, origin, shard, code, record_key) = key.value();
                let table = Table::from_code(code)
                    .ok_or_else(|| StoreError::Corrupt(format!("tombstone index names unknown table {code}")))?;
                found.push(VersionedKey {
                    shard: ShardId(shard.to_owned()),
                    key: RecordKey::new(table, record_key),
                    version: version(at, origin),
                });
            }
            Ok(found)
        })
    }

    fn originated_by(&self, origin: NodeId) -> Vec<VersionedKey> {
        let mut found = self.in_txn(Vec::new(), |txn| {
            let index = txn.open_table(REPLICA_INDEX)?;
            let mut found = Vec::new();
            for entry in index.iter()? {
                let (key, value) = entry?;
                let (at, stored_origin, _) = value.value();
                if stored_origin != origin.0 {
                    continue;
                }
                let (shard, _, code, record_key) = key.value();
                let Some(table) = Table::from_code(code) else { continue };
                found.push(VersionedKey {
                    shard: ShardId(shard.to_owned()),
                    key: RecordKey::new(table, record_key),
                    version: version(at, stored_origin),
                });
            }
            Ok(found)
        });
        found.sort_by_key(|entry| entry.version);
        found
    }
}
