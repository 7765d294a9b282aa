//! Snapshots for `edgenode backup`: every table of the database as of ONE read
//! transaction, copied into a new redb file, while the node goes on serving.
//!
//! redb lets one process open a database file, so a backup of a serving node is made
//! by the node: it copies row by row into a compact file in its spool dir, which the
//! CLI then takes away. Every table is named once, in `every_table!` below; a snapshot
//! refuses a database holding a table that list does not name (and a unit test fails
//! first), so a new table cannot be left out of backups unnoticed.

use std::path::Path;

use redb::{Database, MultimapTableHandle, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use super::replica::ShardFingerprints;
use super::{decode, MediaInfo, Store, StoreError, StoreResult};
use crate::core::model::NodeId;

/// redb's page cache for a snapshot file while it is written or read: small, so a
/// backup costs a 1 GB board little memory (redb's own default is 1 GiB).
const SNAPSHOT_CACHE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database holds table `{0}`, which store/backup.rs does not list; a backup would lose it (a bug: add the table to `every_table!`)")]
    UnlistedTable(String),
}

/// What a snapshot holds, as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub node_id: NodeId,
    /// Bytes of the snapshot file.
    pub database_bytes: u64,
    /// Rows copied, over every table.
    pub rows: u64,
    /// Replicated records (tombstones included) and the tombstones among them.
    pub records: u64,
    pub tombstones: u64,
    /// The replication digest of the snapshot (`GET /api/v1/node/replication` of a
    /// node started on it answers the same).
    pub digest: u64,
    /// Photos whose files the snapshot references, and the bytes of those files.
    pub media_items: u64,
    pub media_bytes: u64,
}

/// Expands to `table_names()` and `copy_every_table()` over one list of tables.
macro_rules! every_table {
    ($($table:path),* $(,)?) => {
        /// The name of every table a snapshot copies.
        pub fn table_names() -> Vec<&'static str> {
            vec![$($table.name()),*]
        }

        /// Copies every listed table that exists in `from` into `to`; returns the rows.
        fn copy_every_table(from: &redb::ReadTransaction, to: &redb::WriteTransaction) -> StoreResult<u64> {
            let mut rows = 0;
            $(rows += copy_table(from, to, $table)?;)*
            Ok(rows)
        }
    };
}

every_table!(
    super::META,
    super::USERS,
    super::HANDLES,
    super::CREDENTIALS,
    super::SESSIONS,
    super::INVITES,
    super::POSTS,
    super::POSTS_BY_AUTHOR,
    super::MEDIA,
    super::MEDIA_OWNERS,
    super::MEDIA_POSTS,
    super::FOLLOWS,
    super::FOLLOWERS,
    super::FOLLOW_DECISIONS,
    super::LIKES,
    super::BLOCKS,
    super::REPORTS,
    super::POST_MODERATION,
    super::COMMENTS,
    super::TERMS,
    super::notifications::NOTIFICATIONS_READ,
    super::notifications::NOTIFICATIONS,
    super::notifications::NOTIFICATION_GROUPS,
    super::accounts::USER_QUOTAS,
    super::media::USER_STORAGE,
    super::fanout::SUBSCRIBERS,
    super::fanout::LEDGERS,
    super::fanout::SUBSCRIPTIONS,
    super::fanout::CACHES,
    super::fanout::PROFILES,
    super::search_index::SEARCH_ENTRIES,
    super::search_index::SEARCH_TERMS,
    super::search_index::SEARCH_HANDLES,
    super::search_index::SEARCH_ORIGINS,
    super::replica::REPLICA_INDEX,
    super::replica::REPLICA_TOMBSTONES,
    super::replica::PLACEMENT,
    super::replica::REPLICA_STATE,
    super::replica::REPLICA_LOG,
    super::replica::REPLICA_FLOORS,
    super::replica::REPLICA_SHARD_FINGERPRINTS,
    super::replica::REPLICA_BUCKET_FINGERPRINTS,
);

/// Copies one table row by row, in key order; a table `from` lacks (made lazily,
/// never used on this node) is skipped.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    table: TableDefinition<'static, K, V>,
) -> StoreResult<u64> {
    let source = match from.open_table(table) {
        Ok(source) => source,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut target = to.open_table(table)?;
    let mut rows = 0;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
        rows += 1;
    }
    Ok(rows)
}

/// Tables in `txn` that `table_names()` does not list.
fn unlisted_tables(txn: &redb::ReadTransaction) -> StoreResult<Vec<String>> {
    let listed = table_names();
    let mut unlisted: Vec<String> = txn
        .list_tables()?
        .map(|table| table.name().to_owned())
        .filter(|name| !listed.contains(&name.as_str()))
        .collect();
    unlisted.extend(txn.list_multimap_tables()?.map(|table| table.name().to_owned()));
    Ok(unlisted)
}

impl Store {
    /// Writes every table, as of one read transaction, into a new database file at
    /// `path` (which must not exist), durably. Writers go on meanwhile: redb keeps the
    /// pages the transaction sees. Blocking; as long as reading the database takes.
    pub fn snapshot_to(&self, path: &Path) -> Result<SnapshotSummary, SnapshotError> {
        let read = self.db.begin_read().map_err(StoreError::from)?;
        if let Some(table) = unlisted_tables(&read)?.into_iter().next() {
            return Err(SnapshotError::UnlistedTable(table));
        }
        if path.exists() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists already", path.display()),
            ))
            .into());
        }
        let target =
            redb::Builder::new().set_cache_size(SNAPSHOT_CACHE_BYTES).create(path).map_err(StoreError::from)?;
        let write = target.begin_write().map_err(StoreError::from)?;
        let rows = copy_every_table(&read, &write)?;
        write.commit().map_err(StoreError::from)?;
        drop(read);
        // Leaves no free pages behind: a smaller file, and the same bytes for the same
        // contents, so an unchanged node's snapshot is stored once by `edgenode backup`.
        let mut target = target;
        target.compact().map_err(|error| StoreError::Database(Box::new(error.into())))?;
        let contents = snapshot_contents(&target)?;
        drop(target);
        let database_bytes = std::fs::metadata(path).map_err(StoreError::from)?.len();
        Ok(SnapshotSummary { node_id: self.node_id, database_bytes, rows, ..contents })
    }
}

/// The node id, replication digest and media of a database file (fields of the file
/// alone; `rows` and `database_bytes` are left 0).
fn snapshot_contents(db: &Database) -> StoreResult<SnapshotSummary> {
    let (records, digest) = ShardFingerprints::build(db)?.digest();
    let txn = db.begin_read()?;
    let tombstones = txn.open_table(super::replica::REPLICA_TOMBSTONES)?.len()?;
    let node_id = txn
        .open_table(super::META)?
        .get("node_id")?
        .map(|value| super::read_u64(value.value()))
        .ok_or_else(|| StoreError::Corrupt("the database has no node id".into()))?;
    let (mut media_items, mut media_bytes) = (0, 0);
    for entry in txn.open_table(super::MEDIA)?.iter()? {
        let info: MediaInfo = decode(entry?.1.value())?;
        media_items += 1;
        media_bytes += info.total_bytes();
    }
    Ok(SnapshotSummary {
        node_id: NodeId(node_id),
        database_bytes: 0,
        rows: 0,
        records,
        tombstones,
        digest,
        media_items,
        media_bytes,
    })
}

/// The media rows of a snapshot file (what `edgenode backup` copies the files of),
/// read by a process that has it to itself. Opening it may rewrite its header: read
/// it only after its bytes were copied.
pub fn snapshot_media(path: &Path) -> StoreResult<Vec<MediaInfo>> {
    let db = redb::Builder::new().set_cache_size(SNAPSHOT_CACHE_BYTES).open(path)?;
    let txn = db.begin_read()?;
    let mut media = Vec::new();
    for entry in txn.open_table(super::MEDIA)?.iter()? {
        media.push(decode(entry?.1.value())?);
    }
    Ok(media)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Visibility;
    use crate::store::tests::temp_dir;
    use crate::store::{Admission, BlobInfo};

    fn blob(bytes: u64, fill: char) -> BlobInfo {
        BlobInfo { width: 1, height: 1, bytes, sha256: fill.to_string().repeat(64) }
    }

    /// Touches every table a node writes to (lazily made ones included) so the list
    /// check sees them all.
    fn busy_store(dir: &Path) -> Store {
        let store = Store::open(dir).unwrap();
        let ada = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
        let media_id = "d".repeat(64);
        let info = MediaInfo {
            media_id: media_id.clone(),
            mime: "image/jpeg".into(),
            width: 1,
            height: 1,
            blurhash: String::new(),
            original: blob(100, 'a'),
            display: blob(20, 'b'),
            thumb: blob(3, 'c'),
            created_at: 1,
        };
        store.put_media(&info, &ada.user_id).unwrap();
        store.create_post(&ada.user_id, "with a photo".into(), vec![media_id], Visibility::Public).unwrap();
        store.create_post(&ada.user_id, "harbour #sunset".into(), vec![], Visibility::Public).unwrap();
        store
    }

    #[test]
    fn every_table_of_the_database_is_listed() {
        let dir = temp_dir("backup-list");
        let store = busy_store(&dir);
        let txn = store.db.begin_read().unwrap();
        assert_eq!(unlisted_tables(&txn).unwrap(), Vec::<String>::new(), "tables a snapshot would not copy");
        let names = table_names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a table is listed twice: {names:?}");
        drop(txn);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Names given to `TableDefinition::new("…")` anywhere in the node's source: the
    /// tables made lazily (fan-out's, an aggregator's) never show in a fresh store.
    fn tables_in_source() -> Vec<String> {
        let mut names = Vec::new();
        let mut directories = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(directory) = directories.pop() {
            for entry in std::fs::read_dir(&directory).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    directories.push(path);
                    continue;
                }
                if path.extension().is_none_or(|extension| extension != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (index, _) in text.match_indices("TableDefinition::new(") {
                    let rest = text[index + "TableDefinition::new(".len()..].trim_start();
                    let name = rest.strip_prefix('"').and_then(|quoted| quoted.split('"').next()).unwrap_or("");
                    // Table names are snake case; this test's own text is not one.
                    if !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_') {
                        names.push(name.to_owned());
                    }
                }
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    #[test]
    fn every_table_in_the_source_is_listed() {
        let listed = table_names();
        let missing: Vec<String> =
            tables_in_source().into_iter().filter(|name| !listed.contains(&name.as_str())).collect();
        assert_eq!(missing, Vec::<String>::new(), "tables a snapshot would not copy: add them to `every_table!`");
    }

    #[test]
    fn a_snapshot_is_the_database_as_of_one_transaction_and_opens_as_a_store() {
        let dir = temp_dir("backup-snapshot");
        let store = busy_store(&dir);
        let snapshot_path = dir.join("snapshot.redb");
        let summary = store.snapshot_to(&snapshot_path).unwrap();
        let (records, tombstones, digest) = store.replication_digest().unwrap();
        assert_eq!((summary.records, summary.tombstones, summary.digest), (records, tombstones, digest));
        assert_eq!((summary.media_items, summary.media_bytes), (1, 123));
        assert_eq!(summary.node_id, store.node_id());
        assert!(summary.rows > 10 && summary.database_bytes > 0, "{summary:?}");
        assert!(store.snapshot_to(&snapshot_path).is_err(), "an existing file is never overwritten");
        // Writes after the snapshot are not in it.
        let ada = store.user_by_handle("ada").unwrap().unwrap();
        store.create_post(&ada.user_id, "later".into(), vec![], Visibility::Public).unwrap();
        assert_eq!(snapshot_media(&snapshot_path).unwrap().len(), 1);

        let restored_dir = temp_dir("backup-restored");
        std::fs::create_dir_all(&restored_dir).unwrap();
        std::fs::copy(&snapshot_path, restored_dir.join("edgenode.redb")).unwrap();
        let restored = Store::open(&restored_dir).unwrap();
        assert_eq!(restored.node_id(), store.node_id());
        assert_eq!(restored.replication_digest().unwrap(), (records, tombstones, digest));
        let user = restored.user_by_handle("ada").unwrap().expect("the user is restored");
        assert!(user.admin);
        let terms = crate::core::text::query_terms("#sunset");
        assert_eq!(store.search_posts(&terms, 10).unwrap().len(), 1);
        assert_eq!(restored.search_posts(&terms, 10).unwrap().len(), 1, "indexes are restored");
        drop((store, restored));
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(restored_dir).unwrap();
    }
}
