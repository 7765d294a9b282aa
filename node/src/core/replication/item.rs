//! What replicates: an item is one record of one user's shard, as opaque bytes with the
//! version that orders it. Any table's `Record<T>` rides along as its JSON body.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::core::model::{Record, Version};

/// The unit of placement and replication: one user (by user id). Everything the user
/// authors lives in their shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub String);

impl ShardId {
    /// The shard that holds what every sibling must know (placement records). It is
    /// replicated to every sibling. User ids are lowercase hex, so this cannot clash.
    pub fn siblings() -> ShardId {
        ShardId(SIBLINGS_SHARD.to_owned())
    }

    pub fn is_siblings(&self) -> bool {
        self.0 == SIBLINGS_SHARD
    }
}

const SIBLINGS_SHARD: &str = "~siblings";

impl std::fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The replicated tables. The numbers are the wire codes: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    User = 1,
    Credential = 2,
    Post = 3,
    Follow = 4,
    Like = 5,
    Comment = 6,
    MediaOwner = 7,
    /// `PlacementRecord`s, in the siblings shard.
    Placement = 8,
    /// `NotificationsRead`: how far a user has read their notifications.
    NotificationsRead = 9,
    /// `FollowDecision`: a locked account's answer to a follow request.
    FollowDecision = 10,
    /// `Block`: a user blocks another, in the blocker's shard.
    Block = 11,
    /// `Report`: a user reports a post to the node's admins, in the reporter's shard.
    Report = 12,
    /// `PostModeration`: an admin hid (or unhid) a post, in its author's shard.
    PostModeration = 13,
}

impl Table {
    pub const ALL: [Table; 13] = [
        Table::User,
        Table::Credential,
        Table::Post,
        Table::Follow,
        Table::Like,
        Table::Comment,
        Table::MediaOwner,
        Table::Placement,
        Table::NotificationsRead,
        Table::FollowDecision,
        Table::Block,
        Table::Report,
        Table::PostModeration,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.code() == code)
    }

    /// The name of the redb table that holds it.
    pub fn name(self) -> &'static str {
        match self {
            Table::User => "users",
            Table::Credential => "credentials",
            Table::Post => "posts",
            Table::Follow => "follows",
            Table::Like => "likes",
            Table::Comment => "comments",
            Table::MediaOwner => "media_owners",
            Table::Placement => "placement",
            Table::NotificationsRead => "notifications_read",
            Table::FollowDecision => "follow_decisions",
            Table::Block => "blocks",
            Table::Report => "reports",
            Table::PostModeration => "post_moderation",
        }
    }
}

/// Where a record lives inside its shard. Composite redb keys are joined by the store
/// (e.g. `follower/followee`); replication only needs equality and a stable hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub table: Table,
    pub key: String,
}

impl RecordKey {
    pub fn new(table: Table, key: impl Into<String>) -> RecordKey {
        RecordKey { table, key: key.into() }
    }
}

/// One replicated record: `body: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub shard: ShardId,
    pub key: RecordKey,
    pub version: Version,
    /// The record's body as the store keeps it (the JSON of `T` for a `Record<T>`).
    pub body: Option<Bytes>,
}

impl Item {
    pub fn is_tombstone(&self) -> bool {
        self.body.is_none()
    }

    /// Last-writer-wins merge of two versions of the same record.
    ///
    /// Laws, for items `a`, `b`, `c` of one (shard, key), because `Version` is a total
    /// order and a version names exactly one write:
    /// - commutative: `a.merge(b) == b.merge(a)`
    /// - associative: `a.merge(b).merge(c) == a.merge(b.merge(c))`
    /// - idempotent:  `a.merge(a) == a`
    ///
    /// so replicas that see the same set of writes in any order, any number of times,
    /// hold the same item. A tombstone is an ordinary version: an older write merged
    /// into it loses, which is why a deleted record never comes back.
    pub fn merge(self, other: Item) -> Item {
        debug_assert!(self.shard == other.shard && self.key == other.key, "merging items of different records");
        debug_assert!(
            self.version != other.version || self.body == other.body,
            "one version names two different writes"
        );
        if other.version > self.version {
            other
        } else {
            self
        }
    }

    /// Packs a `Record<T>` of a table: the body becomes the JSON of `T`.
    pub fn from_record<T: Serialize>(
        shard: ShardId,
        key: RecordKey,
        record: &Record<T>,
    ) -> Result<Item, serde_json::Error> {
        let body = match &record.body {
            Some(body) => Some(Bytes::from(serde_json::to_vec(body)?)),
            None => None,
        };
        Ok(Item { shard, key, version: record.version, body })
    }

    /// Unpacks the `Record<T>` that `from_record` packed.
    pub fn to_record<T: DeserializeOwned>(&self) -> Result<Record<T>, serde_json::Error> {
        Ok(match &self.body {
            Some(body) => Record::live(self.version, serde_json::from_slice(body)?),
            None => Record::tombstone(self.version),
        })
    }

    /// The position of the record in its shard's hash space (see `key_hash`).
    pub fn key_hash(&self) -> u64 {
        key_hash(&self.key)
    }
}

/// A record's position in its shard's hash space: the first 8 bytes of SHA-256 over
/// the table code and key. Stable across builds and machines (fingerprints from two
/// binaries are compared), and uniform, so range splits halve the items.
pub fn key_hash(key: &RecordKey) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"edgenode/key\0");
    hasher.update([key.table.code()]);
    hasher.update(key.key.as_bytes());
    first_u64(&hasher.finalize())
}

/// What a record at a version contributes to a fingerprint. The version names one
/// write, so (key, version) stands for the body too.
pub fn item_hash(key_hash: u64, version: Version) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"edgenode/item\0");
    hasher.update(key_hash.to_be_bytes());
    hasher.update(version.at.0.to_be_bytes());
    hasher.update(version.origin.0.to_be_bytes());
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Timestamp;
    use crate::core::model::{Follow, NodeId};

    fn item(at: u64, origin: u64, body: Option<&str>) -> Item {
        Item {
            shard: ShardId("u1".into()),
            key: RecordKey::new(Table::Post, "p1"),
            version: Version { at: Timestamp(at), origin: NodeId(origin) },
            body: body.map(|text| Bytes::copy_from_slice(text.as_bytes())),
        }
    }

    #[test]
    fn merge_laws_hold_over_every_triple() {
        let items =
            [item(1, 1, Some("a")), item(1, 2, Some("b")), item(2, 1, None), item(3, 3, Some("c")), item(3, 1, None)];
        for a in &items {
            assert_eq!(a.clone().merge(a.clone()), *a, "idempotent");
            for b in &items {
                assert_eq!(a.clone().merge(b.clone()), b.clone().merge(a.clone()), "commutative");
                for c in &items {
                    assert_eq!(
                        a.clone().merge(b.clone()).merge(c.clone()),
                        a.clone().merge(b.clone().merge(c.clone())),
                        "associative"
                    );
                }
            }
        }
    }

    #[test]
    fn an_older_write_loses_to_a_tombstone() {
        let tombstone = item(5, 2, None);
        let late_old_write = item(4, 9, Some("back from the dead"));
        assert!(late_old_write.merge(tombstone.clone()).is_tombstone());
    }

    #[test]
    fn records_ride_along_as_json_bodies() {
        let version = Version { at: Timestamp(7), origin: NodeId(3) };
        let record = Record::live(version, Follow { since: 12 });
        let shard = ShardId("u1".into());
        let packed = Item::from_record(shard, RecordKey::new(Table::Follow, "u1/u2"), &record).unwrap();
        assert_eq!(packed.body.as_deref(), Some(&b"{\"since\":12}"[..]));
        assert_eq!(packed.to_record::<Follow>().unwrap(), record);
        let gone = Record::<Follow>::tombstone(version);
        let packed = Item::from_record(ShardId("u1".into()), RecordKey::new(Table::Follow, "x"), &gone).unwrap();
        assert_eq!(packed.to_record::<Follow>().unwrap(), gone);
    }

    #[test]
    fn table_codes_round_trip_and_hashes_are_stable() {
        for table in Table::ALL {
            assert_eq!(Table::from_code(table.code()), Some(table));
        }
        assert_eq!(Table::from_code(0), None);
        // Pinned: a change here breaks fingerprints between old and new binaries.
        assert_eq!(key_hash(&RecordKey::new(Table::Post, "p1")), 0xfa86_c98a_658d_be57);
    }
}
