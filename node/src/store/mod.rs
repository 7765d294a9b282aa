//! Storage: redb tables for every record and index, plus content-addressed blob files.
//!
//! Each public method is one transaction. Replicated records are stored as
//! `core::model::Record<T>` JSON so a later replication layer ships them as they are;
//! indexes (handles, per-author posts, followers, search terms) are derived from them
//! inside the same transaction and never replicated.

pub mod blobs;
pub mod fanout;
mod media_sync;
pub mod replica;
pub mod search_index;

use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::hlc::{HybridClock, Timestamp};
use crate::core::model::{
    time_ordered_id, Comment, Credential, Follow, Invite, Like, MediaOwner, NodeId, Post, Record, User, Version,
    Visibility,
};
use crate::core::replication::{RecordKey, ShardId, Table, VersionedKey};
use crate::core::text;
use crate::os;
pub use blobs::{BlobKind, BlobStore};
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
/// Index entries a search looks at before it stops, so one query cannot scan forever.
const SEARCH_SCAN_MAX: usize = 20_000;

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

/// What we know about a stored media item; local, derived from the blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub media_id: String,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub blurhash: String,
    pub original: BlobInfo,
    pub display: BlobInfo,
    pub thumb: BlobInfo,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// SHA-256 hex of the stored file: the strong ETag.
    pub sha256: String,
}

impl MediaInfo {
    pub fn blob(&self, kind: BlobKind) -> &BlobInfo {
        match kind {
            BlobKind::Original => &self.original,
            BlobKind::Display => &self.display,
            BlobKind::Thumb => &self.thumb,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    user_id: String,
    created_at: u64,
}

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

    fn sum_blob_bytes(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let mut total = 0;
        for entry in txn.open_table(MEDIA)?.iter()? {
            let info: MediaInfo = decode(entry?.1.value())?;
            total += info.original.bytes + info.display.bytes + info.thumb.bytes;
        }
        Ok(total)
    }

    /// Moves the local clock past a version applied from a sibling, so every later
    /// local write is newer than everything the node holds.
    fn observe_clock(&self, at: Timestamp) {
        self.clock.lock().expect("clock lock").observe(at, os::now_ms());
    }

    /// (replicated records held, tombstones among them, digest of every shard).
    pub fn replication_digest(&self) -> StoreResult<(u64, u64, u64)> {
        let (records, digest) = self.trees.lock().expect("trees lock").digest();
        let txn = self.db.begin_read()?;
        let tombstones = txn.open_table(replica::REPLICA_TOMBSTONES)?.len()?;
        Ok((records, tombstones, digest))
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

    // ----- node -----

    /// The user id of the admin who claimed the node, if any.
    pub fn claimed_by(&self) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let claimed_by = meta.get("claimed_by")?.map(|v| String::from_utf8_lossy(v.value()).into_owned());
        Ok(claimed_by)
    }

    pub fn user_count(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(HANDLES)?.len()?)
    }

    // ----- accounts -----

    /// Creates an account. `how` says what admits it: the claim (first admin), an
    /// invite code (consumed in the same transaction), or open registration.
    pub fn create_user(&self, handle: &str, password_hash: String, how: Admission<'_>) -> StoreResult<User> {
        self.write(|tx| {
            let version = tx.version();
            let user_id = hex(&os::random_bytes::<16>());
            let user = User {
                user_id: user_id.clone(),
                handle: handle.to_owned(),
                display_name: handle.to_owned(),
                bio: String::new(),
                admin: matches!(how, Admission::Claim),
                created_at: version.at.physical_ms(),
                home: Some(self.node_id),
            };
            {
                if tx.txn.open_table(HANDLES)?.get(handle)?.is_some() {
                    return Err(StoreError::HandleTaken);
                }
                match how {
                    Admission::Claim => {
                        let mut meta = tx.txn.open_table(META)?;
                        if meta.get("claimed_by")?.is_some() {
                            return Err(StoreError::AlreadyClaimed);
                        }
                        meta.insert("claimed_by", user_id.as_bytes())?;
                    }
                    Admission::Invite(code) => {
                        let mut invites = tx.txn.open_table(INVITES)?;
                        let invite = match invites.get(code)? {
                            Some(bytes) => live::<Invite>(bytes.value())?,
                            None => None,
                        };
                        let Some(mut invite) = invite.filter(|invite| invite.used_by.is_none()) else {
                            return Err(StoreError::BadInvite);
                        };
                        invite.used_by = Some(user_id.clone());
                        invites.insert(code, encode(&Record::live(version, invite)).as_slice())?;
                    }
                    Admission::Open => {}
                }
                let shard = user_id.as_str();
                let user_key = RecordKey::new(Table::User, user_id.as_str());
                tx.write_record(shard, &user_key, &Record::live(version, user.clone()))?;
                // Its own version: a version names one write (the replication log needs
                // strictly increasing versions).
                let version = tx.version();
                let credential = Credential { password_hash };
                let credential_key = RecordKey::new(Table::Credential, user_id.as_str());
                tx.write_record(shard, &credential_key, &Record::live(version, credential))?;
            }
            Ok(user)
        })
    }

    pub fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let user = users.get(user_id)?;
        user.map(|bytes| live::<User>(bytes.value())).transpose().map(Option::flatten)
    }

    pub fn user_by_handle(&self, handle: &str) -> StoreResult<Option<User>> {
        let user_id = {
            let txn = self.db.begin_read()?;
            let handles = txn.open_table(HANDLES)?;
            let user_id = handles.get(handle)?.map(|id| id.value().to_owned());
            user_id
        };
        match user_id {
            Some(user_id) => self.user(&user_id),
            None => Ok(None),
        }
    }

    pub fn credential(&self, user_id: &str) -> StoreResult<Option<Credential>> {
        let txn = self.db.begin_read()?;
        let credentials = txn.open_table(CREDENTIALS)?;
        let credential = credentials.get(user_id)?;
        credential.map(|bytes| live::<Credential>(bytes.value())).transpose().map(Option::flatten)
    }

    /// Handles starting with `prefix`, in order.
    pub fn users_with_handle_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<User>> {
        let user_ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let handles = txn.open_table(HANDLES)?;
            let mut user_ids = Vec::new();
            for entry in handles.range(prefix..)? {
                let (handle, user_id) = entry?;
                if !handle.value().starts_with(prefix) || user_ids.len() == limit {
                    break;
                }
                user_ids.push(user_id.value().to_owned());
            }
            user_ids
        };
        let mut users = Vec::new();
        for user_id in user_ids {
            users.extend(self.user(&user_id)?);
        }
        Ok(users)
    }

    pub fn create_session(&self, token_hash: &[u8], user_id: &str) -> StoreResult<()> {
        let session = Session { user_id: user_id.to_owned(), created_at: os::now_ms() };
        let txn = self.db.begin_write()?;
        txn.open_table(SESSIONS)?.insert(token_hash, encode(&session).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn session_user(&self, token_hash: &[u8]) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        let sessions = txn.open_table(SESSIONS)?;
        let session = sessions.get(token_hash)?;
        Ok(session.map(|bytes| decode::<Session>(bytes.value())).transpose()?.map(|session| session.user_id))
    }

    pub fn delete_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(SESSIONS)?.remove(token_hash)?;
        txn.commit()?;
        Ok(())
    }

    /// An invite, versioned by the node's one clock (the replication node's when it
    /// runs): written through the client write path, though invites do not replicate.
    pub fn create_invite(&self, created_by: &str) -> StoreResult<Invite> {
        self.write_unhooked(|tx| {
            let version = tx.version();
            let invite = Invite {
                code: hex(&os::random_bytes::<10>()),
                created_by: created_by.to_owned(),
                created_at: version.at.physical_ms(),
                used_by: None,
            };
            tx.txn
                .open_table(INVITES)?
                .insert(invite.code.as_str(), encode(&Record::live(version, invite.clone())).as_slice())?;
            Ok(invite)
        })
    }

    // ----- media -----

    pub fn media(&self, media_id: &str) -> StoreResult<Option<MediaInfo>> {
        let txn = self.db.begin_read()?;
        let media = txn.open_table(MEDIA)?;
        let info = media.get(media_id)?;
        info.map(|bytes| decode(bytes.value())).transpose()
    }

    /// Records a media item whose blob files are already durable, owned by `owner`.
    /// Returns false when the item was already known (only the owner was added).
    pub fn put_media(&self, info: &MediaInfo, owner: &str) -> StoreResult<bool> {
        let is_new = self.write(|tx| {
            let version = tx.version();
            let mut media = tx.txn.open_table(MEDIA)?;
            let is_new = media.get(info.media_id.as_str())?.is_none();
            if is_new {
                media.insert(info.media_id.as_str(), encode(info).as_slice())?;
            }
            let owned = match tx.txn.open_table(MEDIA_OWNERS)?.get((info.media_id.as_str(), owner))? {
                Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
                None => false,
            };
            if !owned {
                let record = Record::live(version, MediaOwner { since: version.at.physical_ms() });
                let key = RecordKey::new(Table::MediaOwner, pair_key(&info.media_id, owner));
                tx.write_record(owner, &key, &record)?;
            }
            Ok(is_new)
        })?;
        if is_new {
            let bytes = info.original.bytes + info.display.bytes + info.thumb.bytes;
            self.blob_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(is_new)
    }

    /// Replaces the metadata of a known media item (after regenerating a derivative).
    pub fn update_media(&self, info: &MediaInfo) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(MEDIA)?.insert(info.media_id.as_str(), encode(info).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn owns_media(&self, media_id: &str, user_id: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let owner = owners.get((media_id, user_id))?;
        Ok(match owner {
            Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
            None => false,
        })
    }

    /// Live posts that carry a media item.
    pub fn posts_with_media(&self, media_id: &str) -> StoreResult<Vec<Post>> {
        let post_ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let media_posts = txn.open_table(MEDIA_POSTS)?;
            let mut post_ids = Vec::new();
            for entry in media_posts.range((media_id, "")..(media_id, KEY_MAX))? {
                post_ids.push(entry?.0.value().1.to_owned());
            }
            post_ids
        };
        let mut posts = Vec::new();
        for post_id in post_ids {
            posts.extend(self.post(&post_id)?);
        }
        Ok(posts)
    }

    // ----- posts -----

    pub fn create_post(
        &self,
        author_id: &str,
        caption: String,
        media: Vec<String>,
        visibility: Visibility,
    ) -> StoreResult<Post> {
        self.write(|tx| {
            let version = tx.version();
            let tags = text::hashtags(&caption);
            let post = Post {
                post_id: time_ordered_id(version),
                author_id: author_id.to_owned(),
                caption,
                media,
                visibility,
                tags,
                created_at: version.at.physical_ms(),
            };
            {
                let owners = tx.txn.open_table(MEDIA_OWNERS)?;
                for media_id in &post.media {
                    let owned = match owners.get((media_id.as_str(), author_id))? {
                        Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
                        None => false,
                    };
                    if !owned {
                        return Err(StoreError::UnknownMedia(media_id.clone()));
                    }
                }
            }
            let key = RecordKey::new(Table::Post, post.post_id.as_str());
            tx.write_record(author_id, &key, &Record::live(version, post.clone()))?;
            Ok(post)
        })
    }

    pub fn post(&self, post_id: &str) -> StoreResult<Option<Post>> {
        let txn = self.db.begin_read()?;
        let posts = txn.open_table(POSTS)?;
        let post = posts.get(post_id)?;
        post.map(|bytes| live::<Post>(bytes.value())).transpose().map(Option::flatten)
    }

    /// Replaces the post with a tombstone and drops it from every index.
    pub fn delete_post(&self, post: &Post) -> StoreResult<()> {
        self.write(|tx| {
            let version = tx.version();
            let key = RecordKey::new(Table::Post, post.post_id.as_str());
            tx.write_record(&post.author_id, &key, &Record::<Post>::tombstone(version))
        })
    }

    /// Replaces a post with an edited copy (same id, author and creation time; the
    /// caption's tags derived again) at a new version.
    pub fn update_post(&self, post: &Post) -> StoreResult<Post> {
        self.write(|tx| {
            let version = tx.version();
            let mut edited = post.clone();
            edited.tags = text::hashtags(&edited.caption);
            let key = RecordKey::new(Table::Post, edited.post_id.as_str());
            tx.write_record(&edited.author_id, &key, &Record::live(version, edited.clone()))?;
            Ok(edited)
        })
    }

    /// Up to `limit` of an author's posts older than `before`, newest first, that
    /// pass `keep`.
    pub fn posts_by_author(
        &self,
        author_id: &str,
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&Post) -> bool,
    ) -> StoreResult<Vec<Post>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(POSTS_BY_AUTHOR)?;
        let posts_table = txn.open_table(POSTS)?;
        let mut posts = Vec::new();
        for entry in index.range((author_id, "")..(author_id, before.unwrap_or(KEY_MAX)))?.rev() {
            if posts.len() == limit {
                break;
            }
            let (key, _) = entry?;
            let post_id = key.value().1;
            let post = match posts_table.get(post_id)? {
                Some(bytes) => live::<Post>(bytes.value())?,
                None => None,
            };
            posts.extend(post.filter(|post| keep(post)));
        }
        Ok(posts)
    }

    /// Public posts whose index holds every term, newest first.
    pub fn search_posts(&self, terms: &[String], limit: usize) -> StoreResult<Vec<Post>> {
        let Some((first, rest)) = terms.split_first() else { return Ok(Vec::new()) };
        let post_ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let index = txn.open_table(TERMS)?;
            let mut post_ids = Vec::new();
            let first = first.as_str();
            for entry in index.range((first, "")..(first, KEY_MAX))?.rev().take(SEARCH_SCAN_MAX) {
                if post_ids.len() == limit {
                    break;
                }
                let (key, _) = entry?;
                let post_id = key.value().1;
                let mut matches_all = true;
                for term in rest {
                    matches_all &= index.get((term.as_str(), post_id))?.is_some();
                }
                if matches_all {
                    post_ids.push(post_id.to_owned());
                }
            }
            post_ids
        };
        let mut posts = Vec::new();
        for post_id in post_ids {
            posts.extend(self.post(&post_id)?.filter(|post| post.visibility == Visibility::Public));
        }
        Ok(posts)
    }

    // ----- follows -----

    pub fn follows(&self, follower_id: &str, followee_id: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(FOLLOWERS)?.get((followee_id, follower_id))?.is_some())
    }

    /// Follows or unfollows; returns the follow record's version (fan-out keys on it).
    pub fn set_follow(&self, follower_id: &str, followee_id: &str, following: bool) -> StoreResult<Version> {
        self.write(|tx| {
            let version = tx.version();
            let record = if following {
                Record::live(version, Follow { since: version.at.physical_ms() })
            } else {
                Record::tombstone(version)
            };
            let key = RecordKey::new(Table::Follow, pair_key(follower_id, followee_id));
            tx.write_record(follower_id, &key, &record)?;
            Ok(version)
        })
    }

    /// Users `user_id` follows (live follows only).
    pub fn followees(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let txn = self.db.begin_read()?;
        let follows = txn.open_table(FOLLOWS)?;
        let mut followees = Vec::new();
        for entry in follows.range((user_id, "")..(user_id, KEY_MAX))? {
            let (key, value) = entry?;
            if live::<Follow>(value.value())?.is_some() {
                followees.push(key.value().1.to_owned());
            }
        }
        Ok(followees)
    }

    pub fn follower_count(&self, user_id: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let followers = txn.open_table(FOLLOWERS)?;
        let count = followers.range((user_id, "")..(user_id, KEY_MAX))?.count();
        Ok(count as u64)
    }

    // ----- likes and comments -----

    pub fn set_like(&self, post_id: &str, user_id: &str, liked: bool) -> StoreResult<()> {
        self.write(|tx| {
            let version = tx.version();
            let record = if liked {
                Record::live(version, Like { at: version.at.physical_ms() })
            } else {
                Record::tombstone(version)
            };
            let key = RecordKey::new(Table::Like, pair_key(post_id, user_id));
            tx.write_record(user_id, &key, &record)
        })
    }

    /// (number of likes, whether `viewer` likes it).
    pub fn likes(&self, post_id: &str, viewer: Option<&str>) -> StoreResult<(u64, bool)> {
        let txn = self.db.begin_read()?;
        let likes = txn.open_table(LIKES)?;
        let mut count = 0;
        let mut liked_by_viewer = false;
        for entry in likes.range((post_id, "")..(post_id, KEY_MAX))? {
            let (key, value) = entry?;
            if live::<Like>(value.value())?.is_some() {
                count += 1;
                liked_by_viewer |= Some(key.value().1) == viewer;
            }
        }
        Ok((count, liked_by_viewer))
    }

    pub fn add_comment(&self, post_id: &str, author_id: &str, text: String) -> StoreResult<Comment> {
        self.write(|tx| {
            let version = tx.version();
            let comment = Comment {
                comment_id: time_ordered_id(version),
                post_id: post_id.to_owned(),
                author_id: author_id.to_owned(),
                text,
                created_at: version.at.physical_ms(),
            };
            let key = RecordKey::new(Table::Comment, pair_key(post_id, &comment.comment_id));
            tx.write_record(author_id, &key, &Record::live(version, comment.clone()))?;
            Ok(comment)
        })
    }

    /// Up to `limit` comments after `after`, oldest first.
    pub fn comments(&self, post_id: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Comment>> {
        let txn = self.db.begin_read()?;
        let comments_table = txn.open_table(COMMENTS)?;
        let mut comments = Vec::new();
        for entry in comments_table.range((post_id, after.unwrap_or(""))..(post_id, KEY_MAX))? {
            let (key, value) = entry?;
            if Some(key.value().1) == after {
                continue;
            }
            if comments.len() == limit {
                break;
            }
            comments.extend(live::<Comment>(value.value())?);
        }
        Ok(comments)
    }

    pub fn comment_count(&self, post_id: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let comments = txn.open_table(COMMENTS)?;
        let mut count = 0;
        for entry in comments.range((post_id, "")..(post_id, KEY_MAX))? {
            if live::<Comment>(entry?.1.value())?.is_some() {
                count += 1;
            }
        }
        Ok(count)
    }
}

/// What lets a new account in.
#[derive(Debug, Clone, Copy)]
pub enum Admission<'a> {
    /// The first account, with the claim code: becomes admin.
    Claim,
    Invite(&'a str),
    Open,
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

    fn temp_dir(name: &str) -> std::path::PathBuf {
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

    #[test]
    fn claims_and_invites_admit_once() {
        let dir = temp_dir("admit");
        let store = Store::open(&dir).unwrap();
        let admin = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        assert!(matches!(store.create_user("eve", "h".into(), Admission::Claim), Err(StoreError::AlreadyClaimed)));
        let invite = store.create_invite(&admin.user_id).unwrap();
        store.create_user("bob", "h".into(), Admission::Invite(&invite.code)).unwrap();
        assert!(matches!(
            store.create_user("cy", "h".into(), Admission::Invite(&invite.code)),
            Err(StoreError::BadInvite)
        ));
        assert!(matches!(store.create_user("bob", "h".into(), Admission::Open), Err(StoreError::HandleTaken)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn deleted_posts_leave_a_tombstone_and_every_index() {
        let dir = temp_dir("delete");
        let store = Store::open(&dir).unwrap();
        let user = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        let post = store.create_post(&user.user_id, "boats #harbour".into(), vec![], Visibility::Public).unwrap();
        assert_eq!(store.search_posts(&["t:harbour".into()], 10).unwrap().len(), 1);
        store.delete_post(&post).unwrap();
        assert!(store.post(&post.post_id).unwrap().is_none());
        assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
        assert!(store.posts_by_author(&user.user_id, None, 10, |_| true).unwrap().is_empty());
        let txn = store.db.begin_read().unwrap();
        let posts = txn.open_table(POSTS).unwrap();
        let stored: Record<Post> = decode(posts.get(post.post_id.as_str()).unwrap().unwrap().value()).unwrap();
        assert!(stored.body.is_none() && stored.version.at.0 > 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_public_posts_are_searchable_and_media_must_be_owned() {
        let dir = temp_dir("search");
        let store = Store::open(&dir).unwrap();
        let user = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        store.create_post(&user.user_id, "secret #harbour".into(), vec![], Visibility::Followers).unwrap();
        assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
        let missing = "c".repeat(64);
        let result = store.create_post(&user.user_id, "x".into(), vec![missing], Visibility::Public);
        assert!(matches!(result, Err(StoreError::UnknownMedia(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
