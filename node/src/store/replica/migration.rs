//! Schema 1 → 2: the replica index and the tombstone index built from the rows a
//! version 1 database holds.

use redb::{ReadableTable, WriteTransaction};

use super::replicated::{for_table, Replicated};
use super::rows::{pair_key, row_table, RowTable};
use super::write::set_index_entry;
use crate::core::model::Record;
use crate::core::replication::{RecordKey, Table};
use crate::store::{decode, StoreResult};

/// Schema 1 → 2: builds `replica_index` and `replica_tombstones` from the v1 rows.
/// v1 post and comment tombstones name no author, so no shard: they are left out of
/// the index (v1 had no replication, so no sibling needs them) and counted.
pub(in crate::store) fn index_v1_rows(txn: &WriteTransaction) -> StoreResult<()> {
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
            if !for_table!(table, index_v1_row(txn, &key, &bytes))? {
                unattributed += 1;
            }
        }
    }
    if unattributed > 0 {
        tracing::info!(unattributed, "schema 2 migration: tombstones without an owner stay local");
    }
    Ok(())
}

fn index_v1_row<T: Replicated>(txn: &WriteTransaction, key: &RecordKey, bytes: &[u8]) -> StoreResult<bool> {
    let record = decode::<Record<T>>(bytes)?;
    let Some(shard) = T::shard_of(&key.key, record.body.as_ref()) else { return Ok(false) };
    set_index_entry(txn, shard, key, Some((record.version, record.body.is_none())))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::Database;

    use super::super::tests::{open, post, temp_dir};
    use super::super::version;
    use super::*;
    use crate::core::hlc::Timestamp;
    use crate::core::model::{Credential, Follow, Like, NodeId, Post, User, Visibility};
    use crate::core::replication::{HashRange, ReplicaStore, ShardId};
    use crate::store::{
        encode, read_u64, CREDENTIALS, FOLLOWERS, FOLLOWS, HANDLES, LIKES, META, POSTS, POSTS_BY_AUTHOR, TERMS, USERS,
    };

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
                    avatar: None,
                    locked: false,
                };
                txn.open_table(USERS)
                    .unwrap()
                    .insert("aa01", encode(&Record::live(stamp(1), user)).as_slice())
                    .unwrap();
                txn.open_table(HANDLES).unwrap().insert("ada", "aa01").unwrap();
                let credential = Credential::new("h".into());
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
            assert_eq!(
                read_u64(meta.get("schema_version").unwrap().unwrap().value()),
                u64::from(crate::store::SCHEMA_VERSION)
            );
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
}
