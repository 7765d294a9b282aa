//! The rows of the replicated tables: which redb table holds each `Table`, and the
//! composite keys (`pair_key`) of the two-part ones.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::PLACEMENT;
use crate::core::replication::{RecordKey, Table};
use crate::store::{
    StoreError, StoreResult, BLOCKS, COMMENTS, CREDENTIALS, FOLLOWS, FOLLOW_DECISIONS, LIKES, MEDIA_OWNERS, POSTS,
    POST_MODERATION, REPORTS, USERS,
};

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

#[derive(Clone, Copy)]
pub(super) enum RowTable {
    Single(TableDefinition<'static, &'static str, &'static [u8]>),
    Pair(TableDefinition<'static, (&'static str, &'static str), &'static [u8]>),
}

pub(super) fn row_table(table: Table) -> RowTable {
    match table {
        Table::User => RowTable::Single(USERS),
        Table::Credential => RowTable::Single(CREDENTIALS),
        Table::Post => RowTable::Single(POSTS),
        Table::Placement => RowTable::Single(PLACEMENT),
        Table::NotificationsRead => RowTable::Single(crate::store::notifications::NOTIFICATIONS_READ),
        Table::Follow => RowTable::Pair(FOLLOWS),
        Table::FollowDecision => RowTable::Pair(FOLLOW_DECISIONS),
        Table::Block => RowTable::Pair(BLOCKS),
        Table::Report => RowTable::Pair(REPORTS),
        Table::PostModeration => RowTable::Pair(POST_MODERATION),
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

pub(super) fn read_row(txn: &WriteTransaction, key: &RecordKey) -> StoreResult<Option<Vec<u8>>> {
    Ok(match row_table(key.table) {
        RowTable::Single(definition) => txn.open_table(definition)?.get(key.key.as_str())?.map(|v| v.value().to_vec()),
        RowTable::Pair(definition) => txn.open_table(definition)?.get(pair_of(key)?)?.map(|v| v.value().to_vec()),
    })
}

pub(super) fn write_row(txn: &WriteTransaction, key: &RecordKey, bytes: &[u8]) -> StoreResult<()> {
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

pub(super) fn remove_row(txn: &WriteTransaction, key: &RecordKey) -> StoreResult<()> {
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
