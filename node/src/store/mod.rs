//! Storage: redb tables for every record and index, plus content-addressed blob files.
//!
//! Each public method is one transaction. Replicated records are stored as
//! `core::model::Record<T>` JSON so a later replication layer ships them as they are;
//! indexes (handles, per-author posts, followers, search terms) are derived from them
//! inside the same transaction and never replicated.
//!
//! This file holds what every domain shares: the `Store`, opening and migrating the
//! database, the client write path (`Store::write`, `Tx`), the clock and the disk
//! reserve. The domains add their methods to `Store` in their own files: `accounts`,
//! `posts`, `social` (follows, likes, comments) and `media`; `replica` is the write
//! path every replicated record takes beneath them.

mod accounts;
pub mod blobs;
pub mod fanout;
mod media;
mod media_sync;
mod posts;
pub mod replica;
pub mod search_index;
mod social;

use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::hlc::{HybridClock, Timestamp};
use crate::core::model::{NodeId, Record, Version};
use crate::core::replication::{RecordKey, ShardId, VersionedKey};
use crate::os;
pub use accounts::Admission;
pub use blobs::{BlobKind, BlobStore};
pub use media::{BlobInfo, MediaInfo};
use replica::write_record;
pub use replica::ShardTrees;
pub use replica::{pair_key, split_pair_key, RedbReplicaStore};

/// Version of the table layout; bump with a migration in `migrate`.
/// 2: the replica index (`replica_index`, `replica_tombstones`), `placement`, and the
/// replication state (`replica_state`, `replica_log`); see `replica`.
pub const SCHEMA_VERSION: u32 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const HANDLES: TableDefinition<&str, &str> = TableDefinition::new("handles");
const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials");
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const INVITES: TableDefinition<&str, &[u8]> = TableDefinition::new("invites");
const POSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("posts");
const POSTS_BY_AUTHOR: TableDefinition<(&str, &str), ()> = TableDefinition::new("posts_by_author");
const MEDIA: TableDefinition<&str, &[u8]> = TableDefinition::new("media");
const MEDIA_OWNERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("media_owners");
const MEDIA_POSTS: TableDefinition<(&str, &str), ()> = TableDefinition::new("media_posts");
const FOLLOWS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("follows");
const FOLLOWERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("followers");
const LIKES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("likes");
const COMMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("comments");
const TERMS: TableDefinition<(&str, &str), ()> = TableDefinition::new("terms");

/// Sorts after every id we issue (ids are lowercase hex and `_`-free ASCII).
const KEY_MAX: &str = "\u{7f}";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Boxed: redb's error is large and would bloat every `Result` on the hot path.
    #[error("database error: {0}")]
    Database(Box<redb::Error>),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the database has schema version {found}, newer than this edgenode understands ({supported}); run a newer edgenode")]
    NewerSchema { found: u32, supported: u32 },
    #[error("handle is taken")]
    HandleTaken,
    #[error("invite code is unknown or already used")]
    BadInvite,
    #[error("the node is already claimed")]
    AlreadyClaimed,
    #[error("media {0} is not yours or does not exist")]
    UnknownMedia(String),
    #[error("the data partition is full: {free_bytes} bytes free, {reserve_bytes} kept in reserve")]
    DiskFull { free_bytes: u64, reserve_bytes: u64 },
}

impl StoreError {
    /// Out of space, whether our reserve said so or the file system did (ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        const ENOSPC: i32 = 28;
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Io(error) => error.raw_os_error() == Some(ENOSPC),
            StoreError::Database(error) => {
                matches!(&**error, redb::Error::Io(io) if io.raw_os_error() == Some(ENOSPC))
            }
            _ => false,
        }
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> StoreError {
                StoreError::Database(Box::new(error.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type StoreResult<T> = Result<T, StoreError>;

pub struct Store {
    db: Database,
    db_path: std::path::PathBuf,
    pub blobs: BlobStore,
    /// Bytes of blob files the database knows of; kept current by `put_media`.
    blob_bytes: std::sync::atomic::AtomicU64,
    node_id: NodeId,
    clock: Mutex<HybridClock>,
    /// Per-shard fingerprints of the replicated records, kept with every write.
    trees: Mutex<ShardTrees>,
    /// Where the database lives, for free-space checks.
    data_dir: std::path::PathBuf,
    /// Free bytes the file system must keep after a client's write (0: no check).
    disk_reserve_bytes: std::sync::atomic::AtomicU64,
    /// The replication node local writes go through, once attached.
    local: std::sync::RwLock<Option<std::sync::Weak<dyn LocalTransactions>>>,
    /// Called after each committed client write (the search feeder wakes on it).
    write_hooks: std::sync::RwLock<Vec<Box<dyn Fn() + Send + Sync>>>,
}

/// Where a client's replicated writes run when the node replicates: the wiring holds
/// the replication node and implements this by running `body` as one local
/// transaction of it (in its store's transaction, with versions from its clock,
/// logging what `body` returns), then making it durable.
pub trait LocalTransactions: Send + Sync {
    fn transact(&self, body: &mut LocalBody<'_>) -> StoreResult<()>;
}

/// A client's replicated writes: given the write transaction, the fingerprint trees
/// and a version source, writes and returns what it wrote.
pub type LocalBody<'a> = dyn FnMut(&redb::WriteTransaction, &mut ShardTrees, &mut dyn FnMut() -> Version) -> StoreResult<Vec<VersionedKey>>
    + 'a;

/// One transaction of a client's replicated writes.
struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
    trees: &'a mut ShardTrees,
    next_version: &'a mut dyn FnMut() -> Version,
    written: Vec<VersionedKey>,
}

impl Tx<'_> {
    /// A new version from the node's clock: one per record written.
    fn version(&mut self) -> Version {
        (self.next_version)()
    }

    fn write_record<T: replica::Replicated>(
        &mut self,
        shard: &str,
        key: &RecordKey,
        record: &Record<T>,
    ) -> StoreResult<()> {
        write_record(self.txn, self.trees, shard, key, record)?;
        self.written.push(VersionedKey { shard: ShardId(shard.to_owned()), key: key.clone(), version: record.version });
        Ok(())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Store").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// The live body of a stored record, `None` for a tombstone.
fn live<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<Option<T>> {
    Ok(decode::<Record<T>>(bytes)?.body)
}

impl Store {
    /// Opens (or creates) the database in `data_dir`, migrating it if it is older,
    /// refusing it if it is newer, and removing blob files a crash left behind.
    pub fn open(data_dir: &Path) -> StoreResult<Store> {
        Store::open_as(data_dir, NodeId(u64::from_le_bytes(os::random_bytes())))
    }

    /// Opens the database, creating it with `new_node_id` as its node id if it does
    /// not exist yet (an existing database keeps its id).
    pub fn open_as(data_dir: &Path, new_node_id: NodeId) -> StoreResult<Store> {
        std::fs::create_dir_all(data_dir)?;
        let db_path = data_dir.join("edgenode.redb");
        let db = Database::create(&db_path)?;
        let txn = db.begin_write()?;
        let node_id;
        let clock_high_water;
        {
            let mut meta = txn.open_table(META)?;
            let stored_schema = meta.get("schema_version")?.map(|v| read_u64(v.value()) as u32);
            if let Some(found) = stored_schema.filter(|found| *found > SCHEMA_VERSION) {
                return Err(StoreError::NewerSchema { found, supported: SCHEMA_VERSION });
            }
            create_tables(&txn)?;
            if let Some(found) = stored_schema.filter(|found| *found < SCHEMA_VERSION) {
                migrate(&txn, found)?;
            }
            meta.insert("schema_version", (SCHEMA_VERSION as u64).to_le_bytes().as_slice())?;
            let stored_node_id = meta.get("node_id")?.map(|v| read_u64(v.value()));
            node_id = match stored_node_id {
                Some(id) => NodeId(id),
                None => {
                    meta.insert("node_id", new_node_id.0.to_le_bytes().as_slice())?;
                    new_node_id
                }
            };
            clock_high_water = meta.get("clock_high_water")?.map(|v| read_u64(v.value())).unwrap_or(0);
        }
        txn.commit()?;
        let started = std::time::Instant::now();
        let trees = ShardTrees::build(&db)?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "fingerprint trees built");
        let blobs = BlobStore::open(data_dir.join("media"))?;
        let store = Store {
            db,
            db_path,
            blobs,
            blob_bytes: std::sync::atomic::AtomicU64::new(0),
            node_id,
            clock: Mutex::new(HybridClock::starting_after(Timestamp(clock_high_water))),
            trees: Mutex::new(trees),
            local: std::sync::RwLock::new(None),
            write_hooks: std::sync::RwLock::new(Vec::new()),
            data_dir: data_dir.to_owned(),
            disk_reserve_bytes: std::sync::atomic::AtomicU64::new(0),
        };
        let removed = store.blobs.remove_orphans(|media_id| store.media(media_id).ok().flatten().is_some())?;
        if removed > 0 {
            tracing::info!(removed, "removed blob files left behind by an interrupted upload");
        }
        store.blob_bytes.store(store.sum_blob_bytes()?, std::sync::atomic::Ordering::Relaxed);
        Ok(store)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Bytes this node stores: the database file plus every media file.
    pub fn used_bytes(&self) -> u64 {
        let db_bytes = std::fs::metadata(&self.db_path).map(|metadata| metadata.len()).unwrap_or(0);
        db_bytes + self.blob_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Moves the local clock past a version applied from a sibling, so every later
    /// local write is newer than everything the node holds.
    fn observe_clock(&self, at: Timestamp) {
        self.clock.lock().expect("clock lock").observe(at, os::now_ms());
    }

    /// Refuse clients' writes (`DiskFull`) once fewer than `bytes` would stay free, so
    /// the database never meets a full disk mid-commit and reads go on. Replication
    /// and sessions may still use the reserve.
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.disk_reserve_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Free bytes of the file system holding the data dir, for unprivileged users.
    pub fn free_bytes(&self) -> Option<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.data_dir).ok()?;
        // The statvfs field types are narrower on 32-bit targets (e.g. 32-bit Pi OS).
        #[allow(clippy::unnecessary_cast)]
        Some(stats.blocks_available() as u64 * stats.fragment_size() as u64)
    }

    /// `DiskFull` unless `incoming_bytes` more leave the reserve free.
    pub fn ensure_space(&self, incoming_bytes: u64) -> StoreResult<()> {
        let reserve_bytes = self.disk_reserve_bytes.load(std::sync::atomic::Ordering::Relaxed);
        if reserve_bytes == 0 {
            return Ok(());
        }
        match self.free_bytes() {
            Some(free_bytes) if free_bytes < reserve_bytes.saturating_add(incoming_bytes) => {
                Err(StoreError::DiskFull { free_bytes, reserve_bytes })
            }
            _ => Ok(()),
        }
    }

    /// Routes this store's replicated writes through the replication node from now on
    /// (see `LocalTransactions`); while `local` is dropped they commit on their own.
    pub fn attach_replication(&self, local: std::sync::Weak<dyn LocalTransactions>) {
        *self.local.write().expect("replication lock") = Some(local);
    }

    /// Runs `body`, a client's replicated writes, in one write transaction: through
    /// the replication node when one is attached (its clock versions them, its log
    /// carries them), else committed here with this store's clock. A transaction that
    /// fails after touching the fingerprint trees rebuilds them from the committed index.
    fn write<R>(&self, body: impl FnOnce(&mut Tx<'_>) -> StoreResult<R>) -> StoreResult<R> {
        let result = self.write_unhooked(body);
        if result.is_ok() {
            for hook in self.write_hooks.read().expect("hooks lock").iter() {
                hook();
            }
        }
        result
    }

    /// Calls `hook` after every committed client write from now on; it must be quick.
    pub fn on_local_write(&self, hook: Box<dyn Fn() + Send + Sync>) {
        self.write_hooks.write().expect("hooks lock").push(hook);
    }

    fn write_unhooked<R>(&self, body: impl FnOnce(&mut Tx<'_>) -> StoreResult<R>) -> StoreResult<R> {
        self.ensure_space(0)?;
        let attached = self.local.read().expect("replication lock").as_ref().and_then(std::sync::Weak::upgrade);
        if let Some(local) = attached {
            let mut body = Some(body);
            let mut value = None;
            local.transact(&mut |txn, trees, next_version| {
                let mut tx = Tx { txn, trees, next_version, written: Vec::new() };
                value = Some((body.take().expect("a local transaction runs its body once"))(&mut tx)?);
                Ok(tx.written)
            })?;
            return Ok(value.expect("set when the transaction succeeded"));
        }
        let txn = self.db.begin_write()?;
        let mut trees = self.trees.lock().expect("trees lock");
        trees.changed = false;
        let high_water = std::cell::Cell::new(None);
        let mut next_version = || {
            let at = self.clock.lock().expect("clock lock").tick(os::now_ms());
            high_water.set(Some(at));
            Version { at, origin: self.node_id }
        };
        let result =
            body(&mut Tx { txn: &txn, trees: &mut trees, next_version: &mut next_version, written: Vec::new() });
        let result = result.and_then(|value| {
            if let Some(at) = high_water.get() {
                txn.open_table(META)?.insert("clock_high_water", at.0.to_le_bytes().as_slice())?;
            }
            txn.commit()?;
            Ok(value)
        });
        if result.is_err() && trees.changed {
            *trees = ShardTrees::build(&self.db)?;
        }
        result
    }
}

/// Creates every table so read transactions never meet a missing one.
fn create_tables(txn: &redb::WriteTransaction) -> StoreResult<()> {
    txn.open_table(USERS)?;
    txn.open_table(HANDLES)?;
    txn.open_table(CREDENTIALS)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(INVITES)?;
    txn.open_table(POSTS)?;
    txn.open_table(POSTS_BY_AUTHOR)?;
    txn.open_table(MEDIA)?;
    txn.open_table(MEDIA_OWNERS)?;
    txn.open_table(MEDIA_POSTS)?;
    txn.open_table(FOLLOWS)?;
    txn.open_table(FOLLOWERS)?;
    txn.open_table(LIKES)?;
    txn.open_table(COMMENTS)?;
    txn.open_table(TERMS)?;
    txn.open_table(replica::REPLICA_INDEX)?;
    txn.open_table(replica::REPLICA_TOMBSTONES)?;
    txn.open_table(replica::PLACEMENT)?;
    txn.open_table(replica::REPLICA_STATE)?;
    txn.open_table(replica::REPLICA_LOG)?;
    Ok(())
}

/// Brings an older layout up to `SCHEMA_VERSION`, in the opening transaction.
/// 1 → 2: index every replicated row by shard and key hash (`replica::index_v1_rows`).
fn migrate(txn: &redb::WriteTransaction, found: u32) -> StoreResult<()> {
    debug_assert!(found < SCHEMA_VERSION);
    if found < 2 {
        replica::index_v1_rows(txn)?;
    }
    Ok(())
}

fn read_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Visibility;

    /// A fresh directory for one test's database (the domain files' tests use it too).
    pub(super) fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("edgenode-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_survive_reopen_and_the_clock_moves_past_them() {
        let dir = temp_dir("reopen");
        let (node_id, post_id) = {
            let store = Store::open(&dir).unwrap();
            let user = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
            let post = store.create_post(&user.user_id, "hi #there".into(), vec![], Visibility::Public).unwrap();
            (store.node_id(), post.post_id)
        };
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.node_id(), node_id);
        let user = store.user_by_handle("ada").unwrap().unwrap();
        assert!(user.admin);
        assert_eq!(store.claimed_by().unwrap(), Some(user.user_id.clone()));
        assert_eq!(store.post(&post_id).unwrap().unwrap().tags, vec!["there"]);
        let later = store.create_post(&user.user_id, "later".into(), vec![], Visibility::Public).unwrap();
        assert!(later.post_id > post_id, "ids keep increasing across restarts");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = temp_dir("newer");
        drop(Store::open(&dir).unwrap());
        {
            let db = Database::create(dir.join("edgenode.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", 99u64.to_le_bytes().as_slice()).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(Store::open(&dir), Err(StoreError::NewerSchema { found: 99, .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
