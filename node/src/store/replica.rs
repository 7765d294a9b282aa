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
//!
//! An `Item`'s body is the JSON of `T` of the stored `Record<T>` (exactly what
//! `Item::from_record` makes); the row holds the whole `Record<T>` JSON as before, so
//! `Item::to_record` of what `get` returns is the stored record.
//!
//! # Derived tables (never replicated), all written in the writing transaction
//!
//! - `replica_index` (shard, key hash, table code, key) → (at, origin, tombstone):
//!   every replicated record in repair order; the source of `summaries`, deep
//!   `fingerprint`s, `originated_by`, and of the in-memory `FingerprintTree`s.
//! - `replica_tombstones` (at, origin, shard, table code, key) → (): tombstones by age.
//! - the indexes of `Store` (handles, posts_by_author, media_posts, terms, followers),
//!   kept by `Replicated::update_indexes` from the old and the new body.
//! - `replica_state` / `replica_log`: the `DurableState` of the replication node.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, read_u64, Store, StoreError, StoreResult, COMMENTS, CREDENTIALS, FOLLOWERS, FOLLOWS, HANDLES,
    LIKES, MEDIA_OWNERS, MEDIA_POSTS, META, POSTS, POSTS_BY_AUTHOR, TERMS, USERS,
};
use crate::core::hlc::{HybridClock, Timestamp};
use crate::core::model::{
    Comment, Credential, Follow, Like, MediaOwner, NodeId, Post, Record, User, Version, Visibility,
};
use crate::core::replication::item::{item_hash, key_hash};
use crate::core::replication::{
    ChangeLog, DurableState, Fingerprint, FingerprintTree, HashRange, Item, LogEntry, LogMark, PlacementRecord,
    RecordKey, ReplicaStore, ShardId, Summary, Table, VersionedKey,
};
use crate::core::text;

/// (shard, key hash, table code, key) → (at, origin, tombstone).
type IndexKey<'a> = (&'a str, u64, u8, &'a str);
pub(super) const REPLICA_INDEX: TableDefinition<IndexKey, (u64, u64, bool)> = TableDefinition::new("replica_index");
pub(super) const REPLICA_TOMBSTONES: TableDefinition<(u64, u64, &str, u8, &str), ()> =
    TableDefinition::new("replica_tombstones");
pub(super) const PLACEMENT: TableDefinition<&str, &[u8]> = TableDefinition::new("placement");
pub(super) const REPLICA_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("replica_state");
pub(super) const REPLICA_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("replica_log");

/// Separator of the two parts of a composite key; ids are hex, so it cannot occur.
const KEY_SEPARATOR: char = '/';

/// The `RecordKey::key` of a row with a composite redb key.
pub fn pair_key(first: &str, second: &str) -> String {
    format!("{first}{KEY_SEPARATOR}{second}")
}

/// The two parts of a composite key, `None` unless there are exactly two, both non-empty.
pub fn split_pair_key(key: &str) -> Option<(&str, &str)> {
    let (first, second) = key.split_once(KEY_SEPARATOR)?;
    (!first.is_empty() && !second.is_empty() && !second.contains(KEY_SEPARATOR)).then_some((first, second))
}

// ----- fingerprint trees -----

/// One `FingerprintTree` per non-empty shard, kept in memory and updated by every
/// replicated write (a write that is rolled back sets `changed`, and the owner
/// rebuilds from the committed index).
#[derive(Debug, Default)]
pub struct ShardTrees {
    trees: BTreeMap<String, FingerprintTree>,
    pub(super) changed: bool,
}

impl ShardTrees {
    fn add(&mut self, shard: &str, key_hash: u64, item_hash: u64) {
        self.changed = true;
        if !self.trees.contains_key(shard) {
            self.trees.insert(shard.to_owned(), FingerprintTree::default());
        }
        self.trees.get_mut(shard).expect("inserted above").add(key_hash, item_hash);
    }

    fn remove(&mut self, shard: &str, key_hash: u64, item_hash: u64) {
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
    pub(super) fn build(db: &Database) -> StoreResult<ShardTrees> {
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

fn version(at: u64, origin: u64) -> Version {
    Version { at: Timestamp(at), origin: NodeId(origin) }
}

// ----- rows -----

#[derive(Clone, Copy)]
enum RowTable {
    Single(TableDefinition<'static, &'static str, &'static [u8]>),
    Pair(TableDefinition<'static, (&'static str, &'static str), &'static [u8]>),
}

fn row_table(table: Table) -> RowTable {
    match table {
        Table::User => RowTable::Single(USERS),
        Table::Credential => RowTable::Single(CREDENTIALS),
        Table::Post => RowTable::Single(POSTS),
        Table::Placement => RowTable::Single(PLACEMENT),
        Table::Follow => RowTable::Pair(FOLLOWS),
        Table::Like => RowTable::Pair(LIKES),
        Table::Comment => RowTable::Pair(COMMENTS),
        Table::MediaOwner => RowTable::Pair(MEDIA_OWNERS),
    }
}

fn pair_of(key: &RecordKey) -> StoreResult<(&str, &str)> {
    split_pair_key(&key.key).ok_or_else(|| {
        StoreError::Corrupt(format!("{} key {:?} is not two ids joined by '/'", key.table.name(), key.key))
    })
}

fn read_row(txn: &WriteTransaction, key: &RecordKey) -> StoreResult<Option<Vec<u8>>> {
    Ok(match row_table(key.table) {
        RowTable::Single(definition) => txn.open_table(definition)?.get(key.key.as_str())?.map(|v| v.value().to_vec()),
        RowTable::Pair(definition) => txn.open_table(definition)?.get(pair_of(key)?)?.map(|v| v.value().to_vec()),
    })
}

fn write_row(txn: &WriteTransaction, key: &RecordKey, bytes: &[u8]) -> StoreResult<()> {
    match row_table(key.table) {
        RowTable::Single(definition) => {
            txn.open_table(definition)?.insert(key.key.as_str(), bytes)?;
        }
        RowTable::Pair(definition) => {
            txn.open_table(definition)?.insert(pair_of(key)?, bytes)?;
        }
    }
    Ok(())
}

fn remove_row(txn: &WriteTransaction, key: &RecordKey) -> StoreResult<()> {
    match row_table(key.table) {
        RowTable::Single(definition) => {
            txn.open_table(definition)?.remove(key.key.as_str())?;
        }
        RowTable::Pair(definition) => {
            txn.open_table(definition)?.remove(pair_of(key)?)?;
        }
    }
    Ok(())
}

// ----- the replicated types -----

/// A replicated record type: its table, whose shard it belongs to, and the derived
/// indexes it keeps. `update_indexes` is the only place index maintenance lives.
pub(super) trait Replicated: Serialize + DeserializeOwned {
    const TABLE: Table;

    /// The shard of the record with `key` (and live `body`, if any): `None` when it
    /// cannot be told (a tombstone whose key does not name its owner) or the body
    /// contradicts the key.
    fn shard_of<'a>(key: &'a str, body: Option<&'a Self>) -> Option<&'a str>;

    /// Moves the derived indexes from `old` to `new` (`None` = absent or tombstone).
    fn update_indexes(
        _txn: &WriteTransaction,
        _key: &str,
        _old: Option<&Self>,
        _new: Option<&Self>,
    ) -> StoreResult<()> {
        Ok(())
    }
}

impl Replicated for User {
    const TABLE: Table = Table::User;

    fn shard_of<'a>(key: &'a str, body: Option<&'a Self>) -> Option<&'a str> {
        body.is_none_or(|user| user.user_id == key).then_some(key)
    }

    fn update_indexes(txn: &WriteTransaction, key: &str, old: Option<&Self>, new: Option<&Self>) -> StoreResult<()> {
        let mut handles = txn.open_table(HANDLES)?;
        if let Some(old) = old {
            let ours = handles.get(old.handle.as_str())?.is_some_and(|user_id| user_id.value() == key);
            if ours {
                handles.remove(old.handle.as_str())?;
            }
        }
        if let Some(new) = new {
            // Two nodes can admit one handle at once (each checks only what it holds).
            // Every replica then resolves it alike, whatever order the users arrive
            // in: the handle belongs to the earliest account (then the smaller id).
            let holder = handles.get(new.handle.as_str())?.map(|user_id| user_id.value().to_owned());
            let keep_holder = match holder.filter(|holder| holder != key) {
                Some(holder) => match txn.open_table(USERS)?.get(holder.as_str())? {
                    Some(bytes) => decode::<Record<User>>(bytes.value())?
                        .body
                        .is_some_and(|other| (other.created_at, other.user_id.as_str()) < (new.created_at, key)),
                    None => false,
                },
                None => false,
            };
            if !keep_holder {
                handles.insert(new.handle.as_str(), key)?;
            }
        }
        Ok(())
    }
}

impl Replicated for Credential {
    const TABLE: Table = Table::Credential;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        Some(key)
    }
}

impl Replicated for Post {
    const TABLE: Table = Table::Post;

    fn shard_of<'a>(key: &'a str, body: Option<&'a Self>) -> Option<&'a str> {
        body.filter(|post| post.post_id == key).map(|post| post.author_id.as_str())
    }

    fn update_indexes(
        txn: &WriteTransaction,
        post_id: &str,
        old: Option<&Self>,
        new: Option<&Self>,
    ) -> StoreResult<()> {
        let mut by_author = txn.open_table(POSTS_BY_AUTHOR)?;
        let mut media_posts = txn.open_table(MEDIA_POSTS)?;
        let mut terms = txn.open_table(TERMS)?;
        if let Some(old) = old {
            by_author.remove((old.author_id.as_str(), post_id))?;
            for media_id in &old.media {
                media_posts.remove((media_id.as_str(), post_id))?;
            }
            for term in text::index_terms(&old.caption, &old.tags) {
                terms.remove((term.as_str(), post_id))?;
            }
        }
        if let Some(new) = new {
            by_author.insert((new.author_id.as_str(), post_id), ())?;
            for media_id in &new.media {
                media_posts.insert((media_id.as_str(), post_id), ())?;
            }
            if new.visibility == Visibility::Public {
                for term in text::index_terms(&new.caption, &new.tags) {
                    terms.insert((term.as_str(), post_id), ())?;
                }
            }
        }
        Ok(())
    }
}

impl Replicated for Follow {
    const TABLE: Table = Table::Follow;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(follower, _)| follower)
    }

    fn update_indexes(txn: &WriteTransaction, key: &str, _old: Option<&Self>, new: Option<&Self>) -> StoreResult<()> {
        let Some((follower, followee)) = split_pair_key(key) else { return Ok(()) };
        let mut followers = txn.open_table(FOLLOWERS)?;
        if new.is_some() {
            followers.insert((followee, follower), ())?;
        } else {
            followers.remove((followee, follower))?;
        }
        Ok(())
    }
}

impl Replicated for Like {
    const TABLE: Table = Table::Like;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(_, user_id)| user_id)
    }
}

impl Replicated for Comment {
    const TABLE: Table = Table::Comment;

    fn shard_of<'a>(key: &'a str, body: Option<&'a Self>) -> Option<&'a str> {
        let (post_id, comment_id) = split_pair_key(key)?;
        body.filter(|comment| comment.post_id == post_id && comment.comment_id == comment_id)
            .map(|comment| comment.author_id.as_str())
    }
}

impl Replicated for MediaOwner {
    const TABLE: Table = Table::MediaOwner;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(_, user_id)| user_id)
    }
}

/// The siblings shard's string, borrowed for `shard_of`.
const SIBLINGS_SHARD: &str = "~siblings";

impl Replicated for PlacementRecord {
    const TABLE: Table = Table::Placement;

    fn shard_of<'a>(_key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        Some(SIBLINGS_SHARD)
    }
}

/// Runs `$function::<T>($args)` with `T` the record type of `$table`.
macro_rules! for_table {
    ($table:expr, $function:ident($($argument:expr),* $(,)?)) => {
        match $table {
            Table::User => $function::<User>($($argument),*),
            Table::Credential => $function::<Credential>($($argument),*),
            Table::Post => $function::<Post>($($argument),*),
            Table::Follow => $function::<Follow>($($argument),*),
            Table::Like => $function::<Like>($($argument),*),
            Table::Comment => $function::<Comment>($($argument),*),
            Table::MediaOwner => $function::<MediaOwner>($($argument),*),
            Table::Placement => $function::<PlacementRecord>($($argument),*),
        }
    };
}

// ----- the one write path -----

/// Writes `record` under `key` in `shard`, unconditionally: the row, the derived
/// indexes (moved from the stored body to the new one), the replica index, the
/// tombstone index and the fingerprint tree. Local writes and applied items both
/// come through here; LWW is the caller's (`apply_item`) or given (a local write's
/// version is the newest the node holds).
pub(super) fn write_record<T: Replicated>(
    txn: &WriteTransaction,
    trees: &mut ShardTrees,
    shard: &str,
    key: &RecordKey,
    record: &Record<T>,
) -> StoreResult<()> {
    debug_assert_eq!(key.table, T::TABLE);
    let old = read_row(txn, key)?.map(|bytes| decode::<Record<T>>(&bytes)).transpose()?;
    T::update_indexes(txn, &key.key, old.as_ref().and_then(|old| old.body.as_ref()), record.body.as_ref())?;
    write_row(txn, key, &encode(record))?;
    set_index_entry(txn, trees, shard, key, Some((record.version, record.body.is_none())))
}

/// Puts, replaces or (with `None`) removes the replica index entry of a record,
/// keeping the tombstone index and the fingerprint tree in step.
fn set_index_entry(
    txn: &WriteTransaction,
    trees: &mut ShardTrees,
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
        trees.remove(shard, hash, item_hash(hash, version(at, origin)));
        if is_tombstone {
            tombstones.remove((at, origin, shard, code, key.key.as_str()))?;
        }
    }
    match new {
        Some((new_version, is_tombstone)) => {
            let (at, origin) = (new_version.at.0, new_version.origin.0);
            index.insert(index_key, (at, origin, is_tombstone))?;
            trees.add(shard, hash, item_hash(hash, new_version));
            if is_tombstone {
                tombstones.insert((at, origin, shard, code, key.key.as_str()), ())?;
            }
        }
        None => {
            index.remove(index_key)?;
        }
    }
    Ok(())
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
enum Refused {
    #[error("body is not a {0} record: {1}")]
    Body(&'static str, serde_json::Error),
    #[error("key or body does not belong to shard {0}")]
    WrongShard(String),
    #[error("key is not two ids joined by '/'")]
    BadKey,
}

/// Applies `item` if it is newer than what the shard holds (LWW). Returns whether
/// it was stored; `Ok(Err(_))` is an item refused for what it says.
fn apply_item<T: Replicated>(
    txn: &WriteTransaction,
    trees: &mut ShardTrees,
    item: &Item,
) -> StoreResult<Result<bool, Refused>> {
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
    write_record(txn, trees, &item.shard.0, &item.key, &record)?;
    Ok(Ok(true))
}

/// Removes a record for good: its derived index entries (if it was live), the row,
/// and the replica, tombstone and tree entries. Nothing if the shard does not hold it.
fn purge_record<T: Replicated>(
    txn: &WriteTransaction,
    trees: &mut ShardTrees,
    shard: &str,
    key: &RecordKey,
) -> StoreResult<()> {
    if stored_version(txn, shard, key)?.is_none() {
        return Ok(());
    }
    let old = read_row(txn, key)?.map(|bytes| decode::<Record<T>>(&bytes)).transpose()?;
    T::update_indexes(txn, &key.key, old.as_ref().and_then(|old| old.body.as_ref()), None)?;
    remove_row(txn, key)?;
    set_index_entry(txn, trees, shard, key, None)
}

fn read_item<T: Replicated>(txn: &WriteTransaction, shard: &ShardId, key: &RecordKey) -> StoreResult<Option<Item>> {
    if stored_version(txn, &shard.0, key)?.is_none() {
        return Ok(None);
    }
    let Some(bytes) = read_row(txn, key)? else { return Ok(None) };
    let record = decode::<Record<T>>(&bytes)?;
    let item = Item::from_record(shard.clone(), key.clone(), &record)
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(Some(item))
}

// ----- migration -----

/// Schema 1 → 2: builds `replica_index` and `replica_tombstones` from the v1 rows.
/// v1 post and comment tombstones name no author, so no shard: they are left out of
/// the index (v1 had no replication, so no sibling needs them) and counted.
pub(super) fn index_v1_rows(txn: &WriteTransaction) -> StoreResult<()> {
    let mut trees = ShardTrees::default();
    let mut unattributed = 0u64;
    for table in
        [Table::User, Table::Credential, Table::Post, Table::Follow, Table::Like, Table::Comment, Table::MediaOwner]
    {
        let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
        match row_table(table) {
            RowTable::Single(definition) => {
                for entry in txn.open_table(definition)?.iter()? {
                    let (key, value) = entry?;
                    rows.push((key.value().to_owned(), value.value().to_vec()));
                }
            }
            RowTable::Pair(definition) => {
                for entry in txn.open_table(definition)?.iter()? {
                    let (key, value) = entry?;
                    let (first, second) = key.value();
                    rows.push((pair_key(first, second), value.value().to_vec()));
                }
            }
        }
        for (key, bytes) in rows {
            let key = RecordKey::new(table, key);
            if !for_table!(table, index_v1_row(txn, &mut trees, &key, &bytes))? {
                unattributed += 1;
            }
        }
    }
    if unattributed > 0 {
        tracing::info!(unattributed, "schema 2 migration: tombstones without an owner stay local");
    }
    Ok(())
}

fn index_v1_row<T: Replicated>(
    txn: &WriteTransaction,
    trees: &mut ShardTrees,
    key: &RecordKey,
    bytes: &[u8],
) -> StoreResult<bool> {
    let record = decode::<Record<T>>(bytes)?;
    let Some(shard) = T::shard_of(&key.key, record.body.as_ref()) else { return Ok(false) };
    set_index_entry(txn, trees, shard, key, Some((record.version, record.body.is_none())))?;
    Ok(true)
}

// ----- durable state -----

/// Format of `replica_state` / `replica_log` values; bump with a migration.
const DURABLE_FORMAT: u32 = 1;
const STATE_KEY: &str = "state";

#[derive(Debug, Serialize, Deserialize)]
struct StoredState {
    format: u32,
    clock: u64,
    epoch: u64,
    first_seq: u64,
    end_seq: u64,
    entries_at_epoch_start: u64,
    received: Vec<StoredMark>,
    purge_floor: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredMark {
    origin: NodeId,
    epoch: u64,
    seq: u64,
    clock: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredLogEntry {
    format: u32,
    shard: String,
    table: u8,
    key: String,
    at: u64,
    origin: NodeId,
}

/// What of the log is in `replica_log`: (epoch, first seq, end seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PersistedLog {
    epoch: u64,
    first_seq: u64,
    end_seq: u64,
}

/// Rebuilds a `ChangeLog` with the same epoch, seqs and entries. `ChangeLog` has no
/// constructor from parts, so the seqs below `first_seq` are refilled with
/// placeholder entries (version `(0, i)`, older than any real one) and truncated
/// again: O(first_seq) time, O(1) extra memory.
fn restore_log(epoch: u64, first_seq: u64, entries_at_epoch_start: u64, entries: Vec<LogEntry>) -> ChangeLog {
    const TRUNCATE_EVERY: u64 = 4096;
    let placeholder = |index: u64| (ShardId(String::new()), RecordKey::new(Table::User, ""), version(0, index.max(1)));
    let skipped = first_seq.saturating_sub(1);
    let mut log = ChangeLog::default();
    let mut real = entries.into_iter().peekable();
    let mut filled = 0;
    if epoch > 1 {
        let start_placeholders = skipped.min(entries_at_epoch_start);
        let mut start: Vec<(ShardId, RecordKey, Version)> = (1..=start_placeholders).map(placeholder).collect();
        while start.len() < entries_at_epoch_start as usize {
            let Some(entry) = real.next() else { break };
            start.push((entry.shard, entry.key, entry.version));
        }
        log.start_epoch(epoch, start);
        filled = start_placeholders;
    }
    while filled < skipped {
        filled += 1;
        let (shard, key, version) = placeholder(filled);
        log.append(shard, key, version);
        if filled % TRUNCATE_EVERY == 0 {
            log.truncate_through(filled);
        }
    }
    log.truncate_through(skipped);
    for entry in real {
        let seq = log.append(entry.shard, entry.key, entry.version);
        debug_assert_eq!(seq, entry.seq, "restored log seqs match the stored ones");
    }
    log
}

fn read_durable(txn: &WriteTransaction) -> StoreResult<(DurableState, PersistedLog)> {
    let high_water = txn.open_table(META)?.get("clock_high_water")?.map(|v| read_u64(v.value())).unwrap_or(0);
    let stored = txn.open_table(REPLICA_STATE)?.get(STATE_KEY)?.map(|v| v.value().to_vec());
    let Some(bytes) = stored else {
        let durable =
            DurableState { clock: HybridClock::starting_after(Timestamp(high_water)), ..DurableState::default() };
        let persisted = PersistedLog { epoch: durable.log.epoch(), first_seq: 1, end_seq: 0 };
        return Ok((durable, persisted));
    };
    let state: StoredState = decode(&bytes)?;
    if state.format != DURABLE_FORMAT {
        return Err(StoreError::Corrupt(format!("replica state format {} is not {DURABLE_FORMAT}", state.format)));
    }
    let mut entries = Vec::new();
    let log_table = txn.open_table(REPLICA_LOG)?;
    let kept =
        if state.end_seq >= state.first_seq { Some(log_table.range(state.first_seq..=state.end_seq)?) } else { None };
    for entry in kept.into_iter().flatten() {
        let (seq, value) = entry?;
        let stored: StoredLogEntry = decode(value.value())?;
        let table = Table::from_code(stored.table)
            .ok_or_else(|| StoreError::Corrupt(format!("log entry of unknown table {}", stored.table)))?;
        entries.push(LogEntry {
            seq: seq.value(),
            shard: ShardId(stored.shard),
            key: RecordKey::new(table, stored.key),
            version: version(stored.at, stored.origin.0),
        });
    }
    if entries.len() as u64 != state.end_seq + 1 - state.first_seq {
        return Err(StoreError::Corrupt("the replication log has gaps".into()));
    }
    let durable = DurableState {
        clock: HybridClock::starting_after(Timestamp(state.clock.max(high_water))),
        log: restore_log(state.epoch, state.first_seq, state.entries_at_epoch_start, entries),
        received: state
            .received
            .iter()
            .map(|mark| (mark.origin, LogMark { epoch: mark.epoch, seq: mark.seq, clock: Timestamp(mark.clock) }))
            .collect(),
        purge_floor: Timestamp(state.purge_floor),
    };
    let persisted = PersistedLog { epoch: state.epoch, first_seq: state.first_seq, end_seq: state.end_seq };
    Ok((durable, persisted))
}

/// Writes `durable` into `txn`: the small state whole, the log as a diff against
/// `persisted` (entries never change once appended).
fn write_durable(txn: &WriteTransaction, durable: &DurableState, persisted: PersistedLog) -> StoreResult<PersistedLog> {
    let log = &durable.log;
    let now = PersistedLog { epoch: log.epoch(), first_seq: log.first_seq(), end_seq: log.end_seq() };
    let mut table = txn.open_table(REPLICA_LOG)?;
    let first_new = if now.epoch != persisted.epoch {
        table.retain(|_, _| false)?;
        now.first_seq
    } else {
        if now.first_seq > persisted.first_seq {
            table.retain_in(persisted.first_seq..now.first_seq, |_, _| false)?;
        }
        (persisted.end_seq + 1).max(now.first_seq)
    };
    for seq in first_new..=now.end_seq {
        let entry = log.get(seq).expect("seq within the kept log");
        let stored = StoredLogEntry {
            format: DURABLE_FORMAT,
            shard: entry.shard.0.clone(),
            table: entry.key.table.code(),
            key: entry.key.key.clone(),
            at: entry.version.at.0,
            origin: entry.version.origin,
        };
        table.insert(seq, encode(&stored).as_slice())?;
    }
    let state = StoredState {
        format: DURABLE_FORMAT,
        clock: durable.clock.last().0,
        epoch: now.epoch,
        first_seq: now.first_seq,
        end_seq: now.end_seq,
        entries_at_epoch_start: log.entries_at_epoch_start() as u64,
        received: durable
            .received
            .iter()
            .map(|(origin, mark)| StoredMark { origin: *origin, epoch: mark.epoch, seq: mark.seq, clock: mark.clock.0 })
            .collect(),
        purge_floor: durable.purge_floor.0,
    };
    txn.open_table(REPLICA_STATE)?.insert(STATE_KEY, encode(&state).as_slice())?;
    // One clock for the node: a restarted `Store` starts after the replication clock.
    let mut meta = txn.open_table(META)?;
    let high_water = meta.get("clock_high_water")?.map(|v| read_u64(v.value())).unwrap_or(0);
    if durable.clock.last().0 > high_water {
        meta.insert("clock_high_water", durable.clock.last().0.to_le_bytes().as_slice())?;
    }
    Ok(now)
}

// ----- the store -----

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
    persisted: Cell<PersistedLog>,
    /// What the last commit made durable, to skip commits that would change nothing.
    committed: RefCell<Option<DurableSummary>>,
    /// The open transaction wrote something (a step that only read commits nothing:
    /// no fsync for a step that answers an ack or a probe).
    wrote: Cell<bool>,
}

/// Everything of a `DurableState` a commit writes, in brief: equal summaries mean an
/// equal stored state (log entries never change once appended).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DurableSummary {
    clock: Timestamp,
    epoch: u64,
    first_seq: u64,
    end_seq: u64,
    received: Vec<(NodeId, LogMark)>,
    purge_floor: Timestamp,
}

impl DurableSummary {
    fn of(durable: &DurableState) -> DurableSummary {
        DurableSummary {
            clock: durable.clock.last(),
            epoch: durable.log.epoch(),
            first_seq: durable.log.first_seq(),
            end_seq: durable.log.end_seq(),
            received: durable.received.iter().map(|(origin, mark)| (*origin, *mark)).collect(),
            purge_floor: durable.purge_floor,
        }
    }
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
            persisted: Cell::new(persisted),
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
            self.rebuild_trees();
            return Err(error);
        }
        let result = self.commit_pending(pending, durable);
        if result.is_err() {
            self.rebuild_trees();
        }
        result
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
        let persisted = write_durable(&txn, durable, self.persisted.get())?;
        txn.commit()?;
        self.persisted.set(persisted);
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
        let mut trees = self.store.trees.lock().expect("trees lock");
        trees.changed = false;
        self.wrote.set(true);
        let result = body(slot.as_ref().expect("begun above"), &mut trees, next_version);
        if result.is_err() {
            drop(slot.take());
            if trees.changed {
                *trees = ShardTrees::build(&self.store.db)?;
            }
        }
        result
    }

    fn rebuild_trees(&self) {
        match ShardTrees::build(&self.store.db) {
            Ok(trees) => *self.store.trees.lock().expect("trees lock") = trees,
            Err(error) => tracing::error!(%error, "rebuilding fingerprint trees failed"),
        }
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
        let outcome = self.in_txn(None, |txn| {
            let mut trees = self.store.trees.lock().expect("trees lock");
            for_table!(item.key.table, apply_item(txn, &mut trees, &item)).map(Some)
        });
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
        self.in_txn((), |txn| {
            let mut trees = self.store.trees.lock().expect("trees lock");
            for_table!(key.table, purge_record(txn, &mut trees, &shard.0, key))
        });
    }

    fn shards(&self) -> Vec<ShardId> {
        let trees = self.store.trees.lock().expect("trees lock");
        trees.trees.keys().map(|shard| ShardId(shard.clone())).collect()
    }

    fn fingerprint(&self, shard: &ShardId, range: HashRange) -> Fingerprint {
        {
            let trees = self.store.trees.lock().expect("trees lock");
            let Some(tree) = trees.trees.get(&shard.0) else { return Fingerprint::default() };
            if let Some(cached) = tree.get(range) {
                return cached;
            }
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::replication::placement::TRUST_MAX;
    use crate::core::replication::{LocalWrite, MemoryStore, ReplicaConfig, ReplicaNode, Sibling};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("edgenode-replica-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &std::path::Path) -> (RedbReplicaStore, DurableState) {
        RedbReplicaStore::open(Arc::new(Store::open(dir).unwrap())).unwrap()
    }

    /// splitmix64, seeded: the same ops on every run; the seed is in every message.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut mixed = self.0;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (mixed ^ (mixed >> 31)) % bound
        }
    }

    fn item<T: Serialize>(shard: &str, table: Table, key: String, at: u64, origin: u64, body: Option<T>) -> Item {
        let record = match body {
            Some(body) => Record::live(version(at, origin), body),
            None => Record::tombstone(version(at, origin)),
        };
        Item::from_record(ShardId(shard.to_owned()), RecordKey::new(table, key), &record).unwrap()
    }

    fn post(post_id: &str, author_id: &str, caption: &str, visibility: Visibility) -> Post {
        Post {
            post_id: post_id.to_owned(),
            author_id: author_id.to_owned(),
            caption: caption.to_owned(),
            media: vec![],
            visibility,
            tags: text::hashtags(caption),
            created_at: 1,
        }
    }

    const USERS_IN_TEST: [&str; 3] = ["aa01", "bb02", "cc03"];

    /// A random valid item of a random table of a random shard, from a small key pool
    /// so that writes overwrite each other.
    fn random_item(rng: &mut Rng) -> Item {
        let shard = USERS_IN_TEST[rng.below(3) as usize];
        let other = USERS_IN_TEST[rng.below(3) as usize];
        let index = rng.below(4);
        let at = 1 + rng.below(400);
        let origin = 1 + rng.below(3);
        let live = rng.below(10) < 7;
        let post_id = format!("{other}0{index}");
        match rng.below(7) {
            0 => {
                let user = User {
                    user_id: shard.into(),
                    handle: format!("h{shard}{index}"),
                    display_name: "x".into(),
                    bio: String::new(),
                    admin: false,
                    created_at: at,
                    home: None,
                };
                item(shard, Table::User, shard.into(), at, origin, live.then_some(user))
            }
            1 => {
                let credential = Credential { password_hash: format!("hash{index}") };
                item(shard, Table::Credential, shard.into(), at, origin, live.then_some(credential))
            }
            2 => {
                let post_id = format!("{shard}0{index}");
                let visibility = if index.is_multiple_of(2) { Visibility::Public } else { Visibility::Followers };
                let body = post(&post_id, shard, &format!("boats #t{} at {at}", rng.below(3)), visibility);
                item(shard, Table::Post, post_id, at, origin, live.then_some(body))
            }
            3 => item(shard, Table::Follow, pair_key(shard, other), at, origin, live.then_some(Follow { since: at })),
            4 => item(shard, Table::Like, pair_key(&post_id, shard), at, origin, live.then_some(Like { at })),
            5 => {
                let comment_id = format!("{shard}c{index}");
                let comment = Comment {
                    comment_id: comment_id.clone(),
                    post_id: post_id.clone(),
                    author_id: shard.into(),
                    text: format!("nice {at}"),
                    created_at: at,
                };
                item(shard, Table::Comment, pair_key(&post_id, &comment_id), at, origin, live.then_some(comment))
            }
            _ => {
                let media = format!("{index:064x}");
                item(
                    shard,
                    Table::MediaOwner,
                    pair_key(&media, shard),
                    at,
                    origin,
                    live.then_some(MediaOwner { since: at }),
                )
            }
        }
    }

    /// `committed`: the store's own reads (which see only committed data) are compared too.
    fn assert_same(redb: &RedbReplicaStore, memory: &MemoryStore, seed: u64, step: usize, committed: bool) {
        let context = format!("seed {seed}, step {step}");
        assert_eq!(redb.shards(), memory.shards(), "{context}");
        for shard in memory.shards() {
            let mut ranges = vec![HashRange::ALL, HashRange::new(12, 0xabc0_0000_0000_0000).unwrap()];
            ranges.extend(HashRange::ALL.children());
            for range in ranges {
                assert_eq!(redb.fingerprint(&shard, range), memory.fingerprint(&shard, range), "{context} {range:?}");
            }
            assert_eq!(
                redb.summaries(&shard, HashRange::ALL, usize::MAX),
                memory.summaries(&shard, HashRange::ALL, usize::MAX),
                "{context}"
            );
            for stored in memory.items(&shard) {
                assert_eq!(redb.get(&shard, &stored.key), Some(stored.clone()), "{context}");
                if let (Table::Post, Some(body), true) = (stored.key.table, &stored.body, committed) {
                    let expected: Post = serde_json::from_slice(body).unwrap();
                    assert_eq!(redb.store().post(&stored.key.key).unwrap(), Some(expected), "{context}");
                }
            }
        }
        assert_eq!(
            redb.tombstones_before(Timestamp(200), 1000),
            memory.tombstones_before(Timestamp(200), 1000),
            "{context}"
        );
        assert_eq!(redb.originated_by(NodeId(2)), memory.originated_by(NodeId(2)), "{context}");
    }

    #[test]
    fn behaves_like_the_memory_store_for_random_puts_and_purges() {
        let dir = temp_dir("like-memory");
        let seed = 0x5eed;
        let mut rng = Rng(seed);
        let (mut redb, durable) = open(&dir);
        let mut memory = MemoryStore::default();
        for step in 0..300 {
            if rng.below(10) == 0 {
                // Purge what the memory store holds (any record, tombstone or not).
                let shards = memory.shards();
                if shards.is_empty() {
                    continue;
                }
                let shard = shards[rng.below(shards.len() as u64) as usize].clone();
                let items = memory.items(&shard);
                let key = items[rng.below(items.len() as u64) as usize].key.clone();
                memory.purge(&shard, &key);
                redb.purge(&shard, &key);
            } else {
                let item = random_item(&mut rng);
                // The node applies only newer versions; the redb store checks that itself.
                if memory.get(&item.shard, &item.key).is_none_or(|stored| stored.version < item.version) {
                    memory.put(item.clone());
                }
                redb.put(item);
            }
            let committed = step % 10 == 0;
            if committed {
                redb.commit(&durable).unwrap();
            }
            if step % 5 == 0 {
                assert_same(&redb, &memory, seed, step, committed);
            }
        }
        redb.commit(&durable).unwrap();
        // Derived indexes agree with the live records left.
        let store = Arc::clone(redb.store());
        for user in USERS_IN_TEST {
            let shard = ShardId(user.into());
            let live_posts: Vec<String> = memory
                .items(&shard)
                .into_iter()
                .filter(|item| item.key.table == Table::Post && item.body.is_some())
                .map(|item| item.key.key)
                .collect();
            let mut indexed: Vec<String> = store
                .posts_by_author(user, None, 100, |_| true)
                .unwrap()
                .into_iter()
                .map(|post| post.post_id)
                .collect();
            indexed.reverse();
            assert_eq!(indexed.len(), live_posts.len(), "posts_by_author of {user}");
        }
        // And everything survives a reopen: the trees are rebuilt from the index.
        drop(redb);
        drop(store);
        let (redb, _) = open(&dir);
        assert_same(&redb, &memory, seed, usize::MAX, true);
        drop(redb);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn applied_items_keep_the_indexes_and_tombstones_remove_them() {
        let dir = temp_dir("indexes");
        let (mut redb, durable) = open(&dir);
        let store = Arc::clone(redb.store());
        let author = "aa01";
        let user = User {
            user_id: author.into(),
            handle: "ada".into(),
            display_name: "Ada".into(),
            bio: String::new(),
            admin: false,
            created_at: 1,
            home: None,
        };
        redb.put(item(author, Table::User, author.into(), 10, 77, Some(user.clone())));
        let boats = post("aa0101", author, "boats in the #harbour", Visibility::Public);
        redb.put(item(author, Table::Post, "aa0101".into(), 11, 77, Some(boats.clone())));
        redb.put(item("bb02", Table::Follow, pair_key("bb02", author), 12, 77, Some(Follow { since: 1 })));
        // Refused: a post filed under someone else's shard, a key that is not a pair.
        redb.put(item(
            "bb02",
            Table::Post,
            "aa0102".into(),
            13,
            77,
            Some(post("aa0102", author, "x", Visibility::Public)),
        ));
        redb.put(item("bb02", Table::Like, "no-separator".into(), 13, 77, Some(Like { at: 1 })));
        redb.commit(&durable).unwrap();

        assert_eq!(store.user_by_handle("ada").unwrap(), Some(user.clone()));
        assert_eq!(store.posts_by_author(author, None, 10, |_| true).unwrap(), vec![boats.clone()]);
        assert_eq!(store.search_posts(&["t:harbour".into()], 10).unwrap(), vec![boats.clone()]);
        assert!(store.follows("bb02", author).unwrap());
        assert_eq!(store.follower_count(author).unwrap(), 1);
        assert!(store.post("aa0102").unwrap().is_none());
        assert_eq!(redb.shards(), vec![ShardId(author.into()), ShardId("bb02".into())]);

        // A rename moves the handle; a newer tombstone drops the post everywhere; an
        // older write after it loses.
        let renamed = User { handle: "ada2".into(), ..user };
        redb.put(item(author, Table::User, author.into(), 20, 78, Some(renamed.clone())));
        redb.put(item::<Post>(author, Table::Post, "aa0101".into(), 21, 78, None));
        redb.put(item(author, Table::Post, "aa0101".into(), 15, 79, Some(boats)));
        redb.put(item::<Follow>("bb02", Table::Follow, pair_key("bb02", author), 22, 78, None));
        redb.commit(&durable).unwrap();
        assert_eq!(store.user_by_handle("ada").unwrap(), None);
        assert_eq!(store.user_by_handle("ada2").unwrap(), Some(renamed));
        assert!(store.post("aa0101").unwrap().is_none());
        assert!(store.posts_by_author(author, None, 10, |_| true).unwrap().is_empty());
        assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
        assert!(!store.follows("bb02", author).unwrap());
        let tombstones = redb.tombstones_before(Timestamp(100), 10);
        assert_eq!(tombstones.len(), 2);
        for tombstone in tombstones {
            redb.purge(&tombstone.shard, &tombstone.key);
        }
        redb.commit(&durable).unwrap();
        assert!(redb.get(&ShardId(author.into()), &RecordKey::new(Table::Post, "aa0101")).is_none());
        assert!(redb.tombstones_before(Timestamp(100), 10).is_empty());
        assert_eq!(redb.shards(), vec![ShardId(author.into())], "bb02 held only the purged follow");
        drop(redb);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn local_writes_are_indexed_for_replication() {
        let dir = temp_dir("local");
        let store = Arc::new(Store::open(&dir).unwrap());
        let ada = store.create_user("ada", "h".into(), super::super::Admission::Claim).unwrap();
        let boats = store.create_post(&ada.user_id, "boats".into(), vec![], Visibility::Public).unwrap();
        store.set_like(&boats.post_id, &ada.user_id, true).unwrap();
        store.delete_post(&boats).unwrap();
        let (redb, _) = RedbReplicaStore::open(Arc::clone(&store)).unwrap();
        let shard = ShardId(ada.user_id.clone());
        assert_eq!(redb.shards(), vec![shard.clone()]);
        assert_eq!(redb.summaries(&shard, HashRange::ALL, 100).len(), 4, "user, credential, post, like");
        let mine = redb.originated_by(store.node_id());
        assert_eq!(mine.len(), 4);
        assert!(mine.windows(2).all(|pair| pair[0].version < pair[1].version), "one version per write");
        let post_item = redb.get(&shard, &RecordKey::new(Table::Post, boats.post_id.as_str())).unwrap();
        assert!(post_item.is_tombstone());
        assert_eq!(redb.tombstones_before(Timestamp(u64::MAX), 10).len(), 1);
        let user_item = redb.get(&shard, &RecordKey::new(Table::User, ada.user_id.as_str())).unwrap();
        assert_eq!(user_item.to_record::<User>().unwrap().body, Some(ada));
        drop(redb);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_schema_1_database_is_migrated_and_indexed() {
        let dir = temp_dir("migrate");
        std::fs::create_dir_all(&dir).unwrap();
        let stamp = |at: u64| version(at, 5);
        {
            // Schema 1, written table by table as the v1 code did.
            let db = Database::create(dir.join("edgenode.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("schema_version", 1u64.to_le_bytes().as_slice()).unwrap();
                meta.insert("node_id", 5u64.to_le_bytes().as_slice()).unwrap();
                meta.insert("clock_high_water", 100u64.to_le_bytes().as_slice()).unwrap();
                let user = User {
                    user_id: "aa01".into(),
                    handle: "ada".into(),
                    display_name: "ada".into(),
                    bio: String::new(),
                    admin: true,
                    created_at: 1,
                    home: None,
                };
                txn.open_table(USERS)
                    .unwrap()
                    .insert("aa01", encode(&Record::live(stamp(1), user)).as_slice())
                    .unwrap();
                txn.open_table(HANDLES).unwrap().insert("ada", "aa01").unwrap();
                let credential = Credential { password_hash: "h".into() };
                let credential = encode(&Record::live(stamp(1), credential));
                txn.open_table(CREDENTIALS).unwrap().insert("aa01", credential.as_slice()).unwrap();
                let boats = post("aa0101", "aa01", "boats #harbour", Visibility::Public);
                txn.open_table(POSTS)
                    .unwrap()
                    .insert("aa0101", encode(&Record::live(stamp(2), boats)).as_slice())
                    .unwrap();
                txn.open_table(POSTS_BY_AUTHOR).unwrap().insert(("aa01", "aa0101"), ()).unwrap();
                txn.open_table(TERMS).unwrap().insert(("t:harbour", "aa0101"), ()).unwrap();
                let gone = encode(&Record::<Post>::tombstone(stamp(4)));
                txn.open_table(POSTS).unwrap().insert("aa0102", gone.as_slice()).unwrap();
                let follow = encode(&Record::live(stamp(3), Follow { since: 3 }));
                txn.open_table(FOLLOWS).unwrap().insert(("aa01", "bb02"), follow.as_slice()).unwrap();
                txn.open_table(FOLLOWERS).unwrap().insert(("bb02", "aa01"), ()).unwrap();
                let unliked = encode(&Record::<Like>::tombstone(stamp(5)));
                txn.open_table(LIKES).unwrap().insert(("aa0101", "bb02"), unliked.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let (redb, durable) = open(&dir);
        let store = Arc::clone(redb.store());
        {
            let txn = store.db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            assert_eq!(read_u64(meta.get("schema_version").unwrap().unwrap().value()), 2);
        }
        let ada = ShardId("aa01".into());
        let bob = ShardId("bb02".into());
        assert_eq!(redb.shards(), vec![ada.clone(), bob.clone()]);
        let keys: Vec<RecordKey> =
            redb.summaries(&ada, HashRange::ALL, 100).into_iter().map(|summary| summary.key).collect();
        assert_eq!(keys.len(), 4, "user, credential, post, follow: {keys:?}");
        assert_eq!(redb.fingerprint(&ada, HashRange::ALL).count, 4);
        let follow = redb.get(&ada, &RecordKey::new(Table::Follow, pair_key("aa01", "bb02"))).unwrap();
        assert_eq!(follow.to_record::<Follow>().unwrap(), Record::live(stamp(3), Follow { since: 3 }));
        let unliked = redb.tombstones_before(Timestamp(100), 10);
        assert_eq!(unliked.len(), 1, "the like tombstone names its shard; the post tombstone cannot");
        assert_eq!(unliked[0].shard, bob);
        assert_eq!(redb.originated_by(NodeId(5)).len(), 5);
        assert_eq!(durable.clock.last(), Timestamp(100), "the replication clock starts after the store's");
        assert_eq!(store.search_posts(&["t:harbour".into()], 10).unwrap().len(), 1);
        drop(redb);
        drop(store);
        // Opening again does not migrate again.
        let (redb, _) = open(&dir);
        assert_eq!(redb.fingerprint(&ada, HashRange::ALL).count, 4);
        drop(redb);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn sibling(store: &Store) -> Sibling {
        Sibling { id: store.node_id(), zone: format!("z{}", store.node_id()), trust: TRUST_MAX }
    }

    fn node(store: Arc<Store>, siblings: Vec<Sibling>, now: u64) -> ReplicaNode<RedbReplicaStore> {
        let id = store.node_id();
        let (redb, durable) = RedbReplicaStore::open(store).unwrap();
        ReplicaNode::new(id, ReplicaConfig::default(), siblings, redb, durable, now)
    }

    fn commit(node: &ReplicaNode<RedbReplicaStore>) {
        node.store().commit(node.durable()).unwrap();
    }

    fn local_write<T: Serialize>(
        node: &mut ReplicaNode<RedbReplicaStore>,
        now: u64,
        shard: &str,
        table: Table,
        key: String,
        body: Option<&T>,
    ) {
        let body = body.map(|body| Bytes::from(serde_json::to_vec(body).unwrap()));
        let write = LocalWrite { shard: ShardId(shard.into()), key: RecordKey::new(table, key), body };
        node.handle_local_write(now, write).unwrap();
        commit(node);
    }

    /// Passes messages both ways until neither node has anything to say, committing
    /// each node's store and state before what it sends leaves (the driver contract).
    fn exchange(nodes: &mut [ReplicaNode<RedbReplicaStore>; 2], now: u64) {
        for _round in 0..1000 {
            let mut quiet = true;
            for from in 0..2 {
                commit(&nodes[from]);
                let mut outgoing = Vec::new();
                while let Some(message) = nodes[from].poll_transmit() {
                    outgoing.push(message);
                }
                let sender = nodes[from].id();
                let to = 1 - from;
                for (peer, message) in outgoing {
                    assert_eq!(peer, nodes[to].id());
                    quiet = false;
                    nodes[to].handle_message(now, sender, message);
                    commit(&nodes[to]);
                }
            }
            if quiet {
                return;
            }
        }
        panic!("the nodes kept talking for 1000 rounds");
    }

    #[test]
    fn two_nodes_over_redb_converge_and_answer_alike() {
        let dirs = [temp_dir("pair-a"), temp_dir("pair-b")];
        let stores = [Arc::new(Store::open(&dirs[0]).unwrap()), Arc::new(Store::open(&dirs[1]).unwrap())];
        // A write made through `Store` before replication ran: shipped by a new epoch.
        let ada = stores[0].create_user("ada", "h".into(), super::super::Admission::Claim).unwrap();
        // Real time: the store's own writes are stamped with it, and a sibling refuses
        // records stamped far ahead of its `now`.
        let start = crate::os::now_ms();
        let siblings = vec![sibling(&stores[0]), sibling(&stores[1])];
        let mut nodes =
            [node(Arc::clone(&stores[0]), siblings.clone(), start), node(Arc::clone(&stores[1]), siblings, start)];
        nodes[0].start_new_epoch(start);
        commit(&nodes[0]);

        let now = start + 1_000;
        let boats = post("aa0101", &ada.user_id, "boats #harbour", Visibility::Public);
        let boats = Post { post_id: format!("{}01", ada.user_id), ..boats };
        local_write(&mut nodes[0], now, &ada.user_id, Table::Post, boats.post_id.clone(), Some(&boats));
        let bob = User {
            user_id: "bb02".into(),
            handle: "bob".into(),
            display_name: "Bob".into(),
            bio: String::new(),
            admin: false,
            created_at: now,
            home: None,
        };
        local_write(&mut nodes[1], now, "bb02", Table::User, "bb02".into(), Some(&bob));
        local_write(
            &mut nodes[1],
            now,
            "bb02",
            Table::Follow,
            pair_key("bb02", &ada.user_id),
            Some(&Follow { since: 1 }),
        );
        let kites = post("bb0201", "bb02", "kites #sky", Visibility::Public);
        local_write(&mut nodes[1], now, "bb02", Table::Post, "bb0201".into(), Some(&kites));
        local_write(
            &mut nodes[1],
            now,
            "bb02",
            Table::Post,
            "bb0202".into(),
            Some(&post("bb0202", "bb02", "gone", Visibility::Public)),
        );
        local_write::<Post>(&mut nodes[1], now, "bb02", Table::Post, "bb0202".into(), None);

        for index in 0..2 {
            nodes[index].handle_connected(now, nodes[1 - index].id());
        }
        exchange(&mut nodes, now);
        // Later writes ride the log of the running session.
        let edited = Post { caption: "boats and #kites".into(), tags: vec!["kites".into()], ..boats.clone() };
        local_write(&mut nodes[0], now + 10, &ada.user_id, Table::Post, boats.post_id.clone(), Some(&edited));
        exchange(&mut nodes, now + 10);
        nodes[0].handle_timeout(now + 20_000);
        nodes[1].handle_timeout(now + 20_000);
        exchange(&mut nodes, now + 20_000);

        for shard in [ShardId(ada.user_id.clone()), ShardId("bb02".into())] {
            assert_eq!(
                nodes[0].store().fingerprint(&shard, HashRange::ALL),
                nodes[1].store().fingerprint(&shard, HashRange::ALL),
                "{shard}"
            );
        }
        for store in &stores {
            assert_eq!(store.user_by_handle("ada").unwrap(), Some(ada.clone()));
            assert_eq!(store.user_by_handle("bob").unwrap(), Some(bob.clone()));
            assert_eq!(store.post(&boats.post_id).unwrap(), Some(edited.clone()));
            assert_eq!(store.post("bb0201").unwrap(), Some(kites.clone()));
            assert_eq!(store.post("bb0202").unwrap(), None);
            assert!(store.follows("bb02", &ada.user_id).unwrap());
            let tagged = |tag: &str| -> Vec<String> {
                store.search_posts(&[format!("t:{tag}")], 10).unwrap().into_iter().map(|post| post.post_id).collect()
            };
            assert_eq!(tagged("kites"), vec![boats.post_id.clone()], "the edit is indexed");
            assert_eq!(tagged("sky"), vec!["bb0201".to_owned()]);
            assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
            assert_eq!(
                store.credential(&ada.user_id).unwrap().map(|credential| credential.password_hash),
                Some("h".into())
            );
        }

        // The durable state comes back as it was committed.
        let (log_end, epoch, received) =
            (nodes[1].durable().log.end_seq(), nodes[1].durable().log.epoch(), nodes[1].durable().received.clone());
        let [first, second] = nodes;
        drop(first);
        let (redb, _) = second.into_parts();
        drop(redb);
        let (_, durable) = RedbReplicaStore::open(Arc::clone(&stores[1])).unwrap();
        assert_eq!((durable.log.end_seq(), durable.log.epoch(), durable.received), (log_end, epoch, received));
        drop(stores);
        for dir in dirs {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_handle_admitted_on_two_nodes_at_once_resolves_alike_everywhere() {
        let user = |user_id: &str, created_at: u64| User {
            user_id: user_id.into(),
            handle: "ada".into(),
            display_name: "Ada".into(),
            bio: String::new(),
            admin: false,
            created_at,
            home: None,
        };
        let first = item("aa01", Table::User, "aa01".into(), 10, 1, Some(user("aa01", 10)));
        let second = item("bb02", Table::User, "bb02".into(), 20, 2, Some(user("bb02", 20)));
        let mut holders = Vec::new();
        for (name, order) in [("order-a", [&first, &second]), ("order-b", [&second, &first])] {
            let dir = temp_dir(name);
            let (mut redb, durable) = open(&dir);
            for applied in order {
                redb.put(applied.clone());
            }
            redb.commit(&durable).unwrap();
            holders.push(redb.store().user_by_handle("ada").unwrap().map(|user| user.user_id));
            drop(redb);
            std::fs::remove_dir_all(dir).unwrap();
        }
        assert_eq!(holders, vec![Some("aa01".to_owned()), Some("aa01".to_owned())], "the earlier account keeps it");
    }

    #[test]
    fn a_log_is_restored_with_its_epoch_and_seqs() {
        let entry = |seq: u64| LogEntry {
            seq,
            shard: ShardId("u".into()),
            key: RecordKey::new(Table::Post, format!("p{seq}")),
            version: version(100 + seq, 1),
        };
        for (epoch, first_seq, at_start, end) in
            [(1, 1, 0, 0), (1, 5, 0, 9), (3, 1, 2, 4), (3, 2, 4, 6), (4, 9000, 3, 9002)]
        {
            let log = restore_log(epoch, first_seq, at_start, (first_seq..=end).map(entry).collect());
            assert_eq!((log.epoch(), log.first_seq(), log.end_seq()), (epoch, first_seq, end));
            assert_eq!(log.entries_at_epoch_start() as u64, at_start);
            for seq in first_seq..=end {
                assert_eq!(log.get(seq), Some(&entry(seq)));
            }
        }
    }

    /// `EDGENODE_MEASURE_OPEN=<records>` times opening a database of that many
    /// replicated records (the fingerprint trees are built from the index); the
    /// footprint benchmark runs it.
    #[test]
    #[ignore = "benchmark: run by bench/footprint/run with EDGENODE_MEASURE_OPEN=<records>"]
    fn measure_open_time() {
        let records = std::env::var("EDGENODE_MEASURE_OPEN")
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .expect("EDGENODE_MEASURE_OPEN=<records> says how many records to measure");
        let dir = temp_dir("measure");
        {
            let (mut redb, durable) = open(&dir);
            for index in 0..records {
                let shard = format!("{:04x}", index % 1000);
                let post_id = format!("{shard}{index:012x}");
                let body = post(&post_id, &shard, "a day at the #harbour", Visibility::Public);
                redb.put(item(&shard, Table::Post, post_id, 10 + index, 1, Some(body)));
                if index % 10_000 == 9_999 {
                    redb.commit(&durable).unwrap();
                }
            }
            redb.commit(&durable).unwrap();
        }
        let started = std::time::Instant::now();
        let store = Store::open(&dir).unwrap();
        let opened = started.elapsed();
        let trees_started = std::time::Instant::now();
        drop(ShardTrees::build(&store.db).unwrap());
        println!("{records} records: Store::open {opened:?}, of which trees ~{:?}", trees_started.elapsed());
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
