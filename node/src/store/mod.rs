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
pub mod backup;
pub mod blobs;
mod export;
pub mod fanout;
mod media;
mod media_sync;
mod notifications;
mod posts;
pub mod replica;
mod safety;
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
pub use accounts::{
    AccountDeletion, Admission, CredentialUpdate, ProfileEdit, QuotaOverride, SessionInfo, SignedIn, UserRow,
};
pub use blobs::{BlobKind, BlobStore};
pub use export::{imported_post_id, FollowedUser, ImportCounts, ImportedPost, UserData};
pub use media::{BlobInfo, MediaInfo};
pub use notifications::{check_cursor, InvalidCursor, NotificationGroup, NotificationKind, NotificationPage};
use replica::write_record;
pub use replica::{pair_key, split_pair_key, RedbReplicaStore};
pub use replica::{ShardFingerprints, ShardTrees};
pub use safety::BlockedUser;
pub use social::{FollowRequest, FollowStatus};

/// Version of the table layout; bump with a migration in `migrate`.
/// 2: the replica index (`replica_index`, `replica_tombstones`), `placement`, and the
/// replication state (`replica_state`, `replica_log`); see `replica`.
/// 3: the fingerprints repair compares, stored (`replica_shard_fingerprints`,
/// `replica_bucket_fingerprints`) instead of built in memory at every start.
/// 4: notifications (`notifications_read`, replicated; `notifications` and
/// `notification_groups`, derived from posts, likes, comments and follows).
#[cfg(not(feature = "rollback-drill"))]
pub const SCHEMA_VERSION: u32 = 4;
/// The rollback drill's build (node/Cargo.toml): one schema further, changing no table.
#[cfg(feature = "rollback-drill")]
pub const SCHEMA_VERSION: u32 = 5;

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
/// (followee, follower) → `Record<FollowDecision>`: a locked account's answers.
const FOLLOW_DECISIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("follow_decisions");
const LIKES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("likes");
/// (blocker, blocked) → `Record<Block>`.
const BLOCKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blocks");
/// (report id, reporter) → `Record<Report>`: report ids sort by time.
const REPORTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("reports");
/// (author, post) → `Record<PostModeration>`: admins' decisions on posts.
const POST_MODERATION: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("post_moderation");
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
    #[error("the database has schema version {found}, newer than this edgenode understands ({supported}), and there is no pre-migration/schema-{supported}.redb to go back to; run a newer edgenode")]
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
    /// Where the database lives, for free-space checks.
    data_dir: std::path::PathBuf,
    /// Free bytes the file system must keep after a client's write (0: no check).
    disk_reserve_bytes: std::sync::atomic::AtomicU64,
    /// The replication node local writes go through, once attached.
    local: std::sync::RwLock<Option<std::sync::Weak<dyn LocalTransactions>>>,
    /// Called after each committed client write (the search feeder wakes on it).
    write_hooks: std::sync::RwLock<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// Counts committed replicated writes (local or from siblings): whatever was
    /// proved about visibility under one value may no longer hold under the next.
    visibility_epoch: std::sync::atomic::AtomicU64,
}

/// Where a client's replicated writes run when the node replicates: the wiring holds
/// the replication node and implements this by running `body` as one local
/// transaction of it (in its store's transaction, with versions from its clock,
/// logging what `body` returns), then making it durable.
pub trait LocalTransactions: Send + Sync {
    fn transact(&self, body: &mut LocalBody<'_>) -> StoreResult<()>;
}

/// A client's replicated writes: given the write transaction and a version source,
/// writes and returns what it wrote.
pub type LocalBody<'a> =
    dyn FnMut(&redb::WriteTransaction, &mut dyn FnMut() -> Version) -> StoreResult<Vec<VersionedKey>> + 'a;

/// One transaction of a client's replicated writes.
struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
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
        write_record(self.txn, shard, key, record)?;
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
    /// Its page cache is the default `limits.database_cache_bytes`.
    pub fn open(data_dir: &Path) -> StoreResult<Store> {
        let database_cache_bytes = crate::config::Limits::default().database_cache_bytes;
        Store::open_as(data_dir, NodeId(u64::from_le_bytes(os::random_bytes())), database_cache_bytes)
    }

    /// Opens the database, creating it with `new_node_id` as its node id if it does
    /// not exist yet (an existing database keeps its id). redb keeps up to
    /// `database_cache_bytes` of its pages in memory (its own default is 1 GiB).
    pub fn open_as(data_dir: &Path, new_node_id: NodeId, database_cache_bytes: usize) -> StoreResult<Store> {
        create_private_dir_all(data_dir)?;
        let db_path = data_dir.join("edgenode.redb");
        keep_what_an_older_version_needs(data_dir, &db_path)?;
        let mut db = redb::Builder::new()
            .set_cache_size(database_cache_bytes)
            .create_with_file_format_v3(true)
            .create(&db_path)?;
        // redb creates its file with the process's umask; it holds password hashes
        // and session tokens.
        set_private_mode(&db_path, PRIVATE_FILE_MODE)?;
        upgrade_file_format(&mut db)?;
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
        let blobs = BlobStore::open(data_dir.join("media"))?;
        let store = Store {
            db,
            db_path,
            blobs,
            blob_bytes: std::sync::atomic::AtomicU64::new(0),
            node_id,
            clock: Mutex::new(HybridClock::starting_after(Timestamp(clock_high_water))),
            local: std::sync::RwLock::new(None),
            write_hooks: std::sync::RwLock::new(Vec::new()),
            visibility_epoch: std::sync::atomic::AtomicU64::new(0),
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
    /// carries them), else committed here with this store's clock.
    fn write<R>(&self, body: impl FnOnce(&mut Tx<'_>) -> StoreResult<R>) -> StoreResult<R> {
        let result = self.write_unhooked(body);
        if result.is_ok() {
            for hook in self.write_hooks.read().expect("hooks lock").iter() {
                hook();
            }
        }
        result
    }

    /// Changes after every committed write that can change who may see what. Read it
    /// before checking visibility; a proof made then holds while it is unchanged.
    pub fn visibility_epoch(&self) -> u64 {
        self.visibility_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Called after (never before) such a commit, so a proof made from the state before
    /// it is dropped.
    pub(crate) fn visibility_changed(&self) {
        self.visibility_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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
            local.transact(&mut |txn, next_version| {
                let mut tx = Tx { txn, next_version, written: Vec::new() };
                value = Some((body.take().expect("a local transaction runs its body once"))(&mut tx)?);
                Ok(tx.written)
            })?;
            return Ok(value.expect("set when the transaction succeeded"));
        }
        let txn = self.db.begin_write()?;
        let high_water = std::cell::Cell::new(None);
        let mut next_version = || {
            let at = self.clock.lock().expect("clock lock").tick(os::now_ms());
            high_water.set(Some(at));
            Version { at, origin: self.node_id }
        };
        let result = body(&mut Tx { txn: &txn, next_version: &mut next_version, written: Vec::new() });
        result.and_then(|value| {
            if let Some(at) = high_water.get() {
                txn.open_table(META)?.insert("clock_high_water", at.0.to_le_bytes().as_slice())?;
            }
            txn.commit()?;
            self.visibility_changed();
            Ok(value)
        })
    }
}

/// Where a copy of the database is kept before a migration: `pre-migration/` in the
/// data dir, one `schema-N.redb` per schema migrated from.
pub const PRE_MIGRATION_DIR: &str = "pre-migration";

/// Before this binary touches the database at `db_path`, keeps a rollback possible
/// both ways (issue 17: a rollback never leaves a node that cannot open its database):
///
/// - an older schema is about to be migrated: the file is copied first, durably, to
///   `pre-migration/schema-<old>.redb`, which the older binary restores if the box
///   goes back to it;
/// - a newer schema (a newer version ran here, and the box went back to this one):
///   with `pre-migration/schema-<ours>.redb`, the newer file is moved aside (kept:
///   `edgenode.redb.schema-<newer>-<unix seconds>`), the snapshot put in its place,
///   and a warning says so; siblings replicate back what was written since (as after
///   restoring a backup, docs/backup.md). Without one, `open` refuses it as before.
fn keep_what_an_older_version_needs(data_dir: &Path, db_path: &Path) -> StoreResult<()> {
    if !db_path.exists() {
        return Ok(());
    }
    let Some(found) = stored_schema(db_path)? else { return Ok(()) };
    let snapshots = data_dir.join(PRE_MIGRATION_DIR);
    if found < SCHEMA_VERSION {
        let snapshot = snapshots.join(format!("schema-{found}.redb"));
        create_private_dir_all(&snapshots)?;
        copy_durably(db_path, &snapshot)?;
        tracing::info!(
            from = found,
            to = SCHEMA_VERSION,
            snapshot = %snapshot.display(),
            "migrating the database; a copy of it as it was is kept for a rollback to the previous version"
        );
    } else if found > SCHEMA_VERSION {
        let snapshot = snapshots.join(format!("schema-{SCHEMA_VERSION}.redb"));
        if !snapshot.exists() {
            return Err(StoreError::NewerSchema { found, supported: SCHEMA_VERSION });
        }
        let aside = data_dir.join(format!("edgenode.redb.schema-{found}-{}", os::unix_seconds()));
        std::fs::rename(db_path, &aside)?;
        std::fs::rename(&snapshot, db_path)?;
        sync_dir(data_dir)?;
        sync_dir(&snapshots)?;
        tracing::warn!(
            found,
            supported = SCHEMA_VERSION,
            kept = %aside.display(),
            restored = %snapshot.display(),
            "the database was migrated by a newer edgenode (schema {found}) and this box went back to this version: \
             opening the copy taken before that migration; the newer file is kept as {}, and what was written since \
             comes back from siblings by replication (written here only: in the kept file)",
            aside.display()
        );
    }
    Ok(())
}

/// The schema version a database file records (`None`: a new file).
fn stored_schema(db_path: &Path) -> StoreResult<Option<u32>> {
    let db = redb::Builder::new().set_cache_size(1024 * 1024).create(db_path)?;
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let schema = meta.get("schema_version")?.map(|value| read_u64(value.value()) as u32);
    Ok(schema)
}

/// Copies `from` to `to` so that `to` is either absent or whole after a crash: into
/// a temporary file, synced, renamed, and the directory synced.
fn copy_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let partial = to.with_extension("redb.partial");
    let _ = std::fs::remove_file(&partial);
    {
        let mut source = std::fs::File::open(from)?;
        let mut target = create_private_file(&partial)?;
        std::io::copy(&mut source, &mut target)?;
        target.sync_all()?;
    }
    std::fs::rename(&partial, to)?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Moves a database on redb's v2 file format to v3, once, before anything reads it.
///
/// redb 3 and later open only v3 files, and only redb 2.6+ can upgrade a v2 one; redb
/// 2.6 reads and writes both, so the previous edgenode (redb 2.6.4) still opens an
/// upgraded file. The upgrade commits twice, durably, and a v3 file returns at once.
/// A persistent savepoint blocks it (edgenode makes none): the database is then
/// left on v2, usable, and the next start tries again.
///
/// What moving to redb 3 (or 4) takes beyond this: redb 3 also stores variable-width
/// tuples differently (fixed-width ones such as `(u64, u64, bool)` are unchanged) and
/// names them differently, so a table keyed by `(&str, &str)`, `(&str, &str, &str)`,
/// `(&str, u64, u8, &str)` or `(u64, u64, &str, u8, &str)` would fail to open
/// (`TableTypeMismatch`). Either redb 3.x reads each such table as `redb::Legacy<…>`
/// and a schema migration copies it into a new table (redb 4 has no `Legacy`), or,
/// still on redb 2.6, those tables move to key types of our own encoding (a `Key`
/// whose `SelfType` is the same tuple, so no call site changes) by a schema
/// migration; after that the move is the version bump plus `use
/// redb::ReadableDatabase` where `begin_read` is called. Tables keyed by `&str`,
/// `&[u8]` or `u64` need nothing.
fn upgrade_file_format(db: &mut Database) -> StoreResult<()> {
    match db.upgrade() {
        Ok(true) => {
            tracing::info!("moved the database to redb's v3 file format");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(error @ (redb::UpgradeError::PersistentSavepointExists | redb::UpgradeError::EphemeralSavepointExists)) => {
            tracing::warn!(%error, "the database stays on redb's v2 file format for now: a savepoint blocks the upgrade");
            Ok(())
        }
        Err(error) => Err(StoreError::Database(Box::new(error.into()))),
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
    txn.open_table(FOLLOW_DECISIONS)?;
    txn.open_table(LIKES)?;
    txn.open_table(BLOCKS)?;
    txn.open_table(REPORTS)?;
    txn.open_table(POST_MODERATION)?;
    txn.open_table(COMMENTS)?;
    txn.open_table(TERMS)?;
    txn.open_table(notifications::NOTIFICATIONS_READ)?;
    txn.open_table(notifications::NOTIFICATIONS)?;
    txn.open_table(notifications::NOTIFICATION_GROUPS)?;
    txn.open_table(replica::REPLICA_INDEX)?;
    txn.open_table(replica::REPLICA_TOMBSTONES)?;
    txn.open_table(replica::PLACEMENT)?;
    txn.open_table(replica::REPLICA_STATE)?;
    txn.open_table(replica::REPLICA_LOG)?;
    txn.open_table(replica::REPLICA_FLOORS)?;
    txn.open_table(replica::REPLICA_SHARD_FINGERPRINTS)?;
    txn.open_table(replica::REPLICA_BUCKET_FINGERPRINTS)?;
    Ok(())
}

/// Brings an older layout up to `SCHEMA_VERSION`, in the opening transaction.
/// 1 → 2: index every replicated row by shard and key hash (`replica::index_v1_rows`,
/// which stores their fingerprints as it goes, as every write does).
/// 2 → 3: store the fingerprints of what the index holds (`replica::build_fingerprints`).
/// (any) → 4: derive the notification indexes from the rows (`notifications::rebuild_index`).
fn migrate(txn: &redb::WriteTransaction, found: u32) -> StoreResult<()> {
    debug_assert!(found < SCHEMA_VERSION);
    if found < 2 {
        replica::index_v1_rows(txn)?;
    } else if found < 3 {
        replica::build_fingerprints(txn)?;
    }
    if found < 4 {
        notifications::rebuild_index(txn)?;
    }
    Ok(())
}

/// Mode of every file under the data dir: it holds the TLS key, password hashes,
/// session tokens and private photos, none of which another local user may read.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory under the data dir (see `PRIVATE_FILE_MODE`).
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Entries `make_data_dir_private` looks at before it stops: 3 files per photo, so a
/// node with a million photos, with room to spare; past it the start goes on.
const DATA_DIR_ENTRIES_MAX: usize = 8_000_000;

/// Creates `path` and its missing parents owner-only, whatever the umask (an existing
/// directory keeps its mode: `make_data_dir_private` fixes those at start).
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(path)
}

/// Creates a new file (failing if it exists) that only the owner may read or write,
/// whatever the umask.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE_MODE).open(path)
}

fn set_private_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::metadata(path)?.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// What `make_data_dir_private` found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrivateModes {
    /// Files and directories looked at (the data dir itself included).
    pub entries: usize,
    /// Those whose mode was changed to 0600 (files) or 0700 (directories).
    pub fixed: usize,
    /// Those whose mode could not be read or changed (e.g. owned by another user).
    pub failed: usize,
    /// Stopped after `DATA_DIR_ENTRIES_MAX` entries.
    pub truncated: bool,
}

/// Makes every file under `data_dir` 0600 and every directory 0700, whatever made
/// them (an older edgenode, an operator's `cp`, a umask of 022), and warns once with
/// how many it changed. Walks the tree once, bounded by `DATA_DIR_ENTRIES_MAX`;
/// symbolic links are neither followed nor changed (chmod would change their
/// target), and other special files are left as they are. Fails only when the data
/// dir itself cannot be read or changed.
pub fn make_data_dir_private(data_dir: &Path) -> std::io::Result<PrivateModes> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut modes = PrivateModes { entries: 1, ..PrivateModes::default() };
    // The data dir itself may be a symbolic link an operator made (to a bigger disk):
    // its target is ours.
    if std::fs::metadata(data_dir)?.permissions().mode() & 0o777 != PRIVATE_DIR_MODE {
        set_private_mode(data_dir, PRIVATE_DIR_MODE)?;
        modes.fixed += 1;
    }
    let mut directories = vec![data_dir.to_owned()];
    'walk: while let Some(directory) = directories.pop() {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            modes.failed += 1;
            continue;
        };
        for entry in entries {
            if modes.entries >= DATA_DIR_ENTRIES_MAX {
                modes.truncated = true;
                break 'walk;
            }
            modes.entries += 1;
            // `DirEntry::metadata` does not follow symbolic links.
            let Ok((path, metadata)) = entry.and_then(|entry| Ok((entry.path(), entry.metadata()?))) else {
                modes.failed += 1;
                continue;
            };
            let wanted = if metadata.is_dir() {
                directories.push(path.clone());
                PRIVATE_DIR_MODE
            } else if metadata.is_file() {
                PRIVATE_FILE_MODE
            } else {
                continue;
            };
            if metadata.permissions().mode() & 0o777 != wanted {
                match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted)) {
                    Ok(()) => modes.fixed += 1,
                    Err(_) => modes.failed += 1,
                }
            }
        }
    }
    if modes.fixed > 0 || modes.failed > 0 || modes.truncated {
        tracing::warn!(
            fixed = modes.fixed,
            failed = modes.failed,
            entries = modes.entries,
            truncated = modes.truncated,
            data_dir = %data_dir.display(),
            "made {} files and directories in the data dir owner-only (0600 and 0700); {} could not be changed{}",
            modes.fixed,
            modes.failed,
            if modes.truncated { "; stopped early, the data dir has too many entries to check them all" } else { "" }
        );
    }
    Ok(modes)
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

    /// A media row whose three files each have `bytes` and hash `sha256`.
    pub(super) fn media_info(media_id: &str, bytes: u64, sha256: &str, created_at: u64) -> MediaInfo {
        let blob = BlobInfo { width: 1, height: 1, bytes, sha256: sha256.to_owned() };
        MediaInfo {
            media_id: media_id.to_owned(),
            mime: "image/jpeg".into(),
            width: 1,
            height: 1,
            blurhash: String::new(),
            original: blob.clone(),
            display: blob.clone(),
            thumb: blob,
            created_at,
        }
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

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_data_dir_is_made_owner_only_without_following_links() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("private");
        let outside = temp_dir("private-outside");
        std::fs::create_dir_all(dir.join("media/ab")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(dir.join("media/ab/photo.original"), b"x").unwrap();
        std::fs::write(dir.join("claim-code"), b"x").unwrap();
        std::fs::write(outside.join("not-ours"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("not-ours"), dir.join("link")).unwrap();
        for (path, mode) in [
            (dir.clone(), 0o755),
            (dir.join("media"), 0o775),
            (dir.join("media/ab"), 0o711),
            (dir.join("media/ab/photo.original"), 0o644),
            (dir.join("claim-code"), 0o600),
            (outside.join("not-ours"), 0o644),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }

        let modes = make_data_dir_private(&dir).unwrap();
        assert_eq!(modes, PrivateModes { entries: 6, fixed: 4, failed: 0, truncated: false });
        for directory in [dir.clone(), dir.join("media"), dir.join("media/ab")] {
            assert_eq!(mode_of(&directory), 0o700, "{}", directory.display());
        }
        for file in [dir.join("media/ab/photo.original"), dir.join("claim-code")] {
            assert_eq!(mode_of(&file), 0o600, "{}", file.display());
        }
        assert_eq!(mode_of(&outside.join("not-ours")), 0o644, "a link's target outside the data dir is left alone");
        assert_eq!(make_data_dir_private(&dir).unwrap().fixed, 0, "a second walk has nothing to fix");
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(outside).unwrap();
    }

    #[test]
    fn what_the_store_creates_is_owner_only_and_its_cache_is_bounded() {
        let dir = temp_dir("created");
        let store = Store::open_as(&dir, NodeId(7), 4 * 1024 * 1024).unwrap();
        let media_id = "c".repeat(64);
        store.blobs.write_durable(&media_id, BlobKind::Original, b"photo", 1).unwrap();
        store.blobs.write_durable_set(&media_id, &[(BlobKind::Thumb, b"thumb".as_slice())], 2).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("edgenode.redb")), 0o600);
        assert_eq!(mode_of(&dir.join("media")), 0o700);
        assert_eq!(mode_of(&dir.join("media/cc")), 0o700);
        assert_eq!(mode_of(&store.blobs.path(&media_id, BlobKind::Original)), 0o600);
        assert_eq!(mode_of(&store.blobs.path(&media_id, BlobKind::Thumb)), 0o600);
        drop(store);
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
        assert!(dir.join("edgenode.redb").exists(), "a refused database is left as it was");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn set_schema(dir: &Path, schema: u64) {
        let db = Database::create(dir.join("edgenode.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema_version", schema.to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }

    fn schema_of(path: &Path) -> u32 {
        stored_schema(path).unwrap().unwrap()
    }

    #[test]
    fn a_migration_keeps_a_copy_of_the_database_as_it_was() {
        let dir = temp_dir("pre-migration");
        let user_id = {
            let store = Store::open(&dir).unwrap();
            store.create_user("ada", "hash".into(), Admission::Claim).unwrap().user_id
        };
        let older = SCHEMA_VERSION as u64 - 1;
        set_schema(&dir, older);
        let store = Store::open(&dir).unwrap();
        assert!(store.user(&user_id).unwrap().is_some());
        drop(store);
        let snapshot = dir.join(format!("pre-migration/schema-{older}.redb"));
        assert_eq!(schema_of(&snapshot), older as u32, "the copy is the database before the migration");
        assert_eq!(schema_of(&dir.join("edgenode.redb")), SCHEMA_VERSION);
        assert_eq!(mode_of(&snapshot), 0o600);
        assert!(!dir.join(format!("pre-migration/schema-{older}.redb.partial")).exists());
        // Opening at the current schema takes no copy.
        std::fs::remove_file(&snapshot).unwrap();
        drop(Store::open(&dir).unwrap());
        assert!(!snapshot.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_rollback_after_a_migration_opens_the_copy_and_keeps_the_newer_file() {
        let dir = temp_dir("rollback");
        // What this version wrote, then a copy of it "taken by a newer version's
        // migration", which then wrote a post and moved the schema on.
        let (user_id, before) = {
            let store = Store::open(&dir).unwrap();
            let user = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
            let post = store.create_post(&user.user_id, "before".into(), vec![], Visibility::Public).unwrap();
            (user.user_id, post.post_id)
        };
        std::fs::create_dir_all(dir.join(PRE_MIGRATION_DIR)).unwrap();
        std::fs::copy(dir.join("edgenode.redb"), dir.join(format!("pre-migration/schema-{SCHEMA_VERSION}.redb")))
            .unwrap();
        let after = {
            let store = Store::open(&dir).unwrap();
            store.create_post(&user_id, "after".into(), vec![], Visibility::Public).unwrap().post_id
        };
        set_schema(&dir, SCHEMA_VERSION as u64 + 1);

        let store = Store::open(&dir).expect("the older version opens the copy");
        assert!(store.post(&before).unwrap().is_some());
        assert!(store.post(&after).unwrap().is_none(), "the copy is the database as it was before the migration");
        drop(store);
        let kept: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(&format!("edgenode.redb.schema-{}-", SCHEMA_VERSION + 1)))
            .collect();
        assert_eq!(kept.len(), 1, "the newer file is kept: {kept:?}");
        assert_eq!(schema_of(&dir.join(&kept[0])), SCHEMA_VERSION + 1);
        assert!(!dir.join(format!("pre-migration/schema-{SCHEMA_VERSION}.redb")).exists(), "the copy was put in place");
        assert_eq!(schema_of(&dir.join("edgenode.redb")), SCHEMA_VERSION);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
