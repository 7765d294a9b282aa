//! The fan-out service's durable state (`core::fanout::FanoutState`) in redb, one row
//! per subscriber, ledger, subscription and cache, plus the profiles of remote users
//! this node follows or blocks (handle, home and avatar, learned when they were
//! followed or blocked, refreshed when their profile is asked for).
//!
//! A save writes only the rows that differ between the state last saved and the new
//! one, in one transaction (redb commits durably), so a step costs what it changed.
//! Rows are `{"format":1,"value":…}` JSON; a layout change bumps `STORED_FORMAT` and
//! keeps a reader for the previous one.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, StoreResult, POSTS};
use crate::core::fanout::{AuthorCache, FanoutState, Ledger, Subscriber, Subscription};
use crate::core::model::{NodeId, Post, Record};

pub(super) const SUBSCRIBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("fanout_subscribers");
pub(super) const LEDGERS: TableDefinition<&str, &[u8]> = TableDefinition::new("fanout_ledgers");
pub(super) const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("fanout_subscriptions");
pub(super) const CACHES: TableDefinition<&str, &[u8]> = TableDefinition::new("fanout_caches");
pub(super) const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("fanout_profiles");

/// Format of every row written here.
const STORED_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored<T> {
    format: u32,
    value: T,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(&Stored { format: STORED_FORMAT, value }).expect("fan-out rows serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    let stored: Stored<T> =
        serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt(format!("fan-out row: {error}")))?;
    if stored.format != STORED_FORMAT {
        return Err(StoreError::Corrupt(format!("fan-out row of unknown format {}", stored.format)));
    }
    Ok(stored.value)
}

/// A user of another node that a local user follows: how to show and reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteProfile {
    pub user_id: String,
    pub handle: String,
    /// The node that answers for them (where their follows are routed).
    pub home: NodeId,
    /// Their profile photo's media id as last resolved (absent in rows from before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// A follow of a locked user of this node by a user of another node, waiting for an
/// answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFollowRequest {
    pub user_id: String,
    /// Their handle on their node (absent when their node is older than requests).
    pub handle: Option<String>,
    pub home: NodeId,
    /// When the follow was made (ms).
    pub since: u64,
}

/// The rows of `after` that differ from `before` (with their bytes), and those gone
/// (`None`).
fn changes<'a, K: Ord, V: PartialEq + Serialize>(
    before: &'a BTreeMap<K, V>,
    after: &'a BTreeMap<K, V>,
) -> Vec<(&'a K, Option<Vec<u8>>)> {
    let mut changed: Vec<(&K, Option<Vec<u8>>)> = after
        .iter()
        .filter(|(key, value)| before.get(key) != Some(value))
        .map(|(key, value)| (key, Some(encode(value))))
        .collect();
    changed.extend(before.keys().filter(|key| !after.contains_key(key)).map(|key| (key, None)));
    changed
}

impl Store {
    /// The fan-out state and remote profiles saved so far (empty on a new node).
    pub fn fanout_load(&self) -> StoreResult<(FanoutState, BTreeMap<String, RemoteProfile>)> {
        // A write transaction, so the tables exist from now on.
        let txn = self.db.begin_write()?;
        let mut state = FanoutState::default();
        let mut profiles = BTreeMap::new();
        {
            for row in txn.open_table(SUBSCRIBERS)?.iter()? {
                let (key, value) = row?;
                let (author, follower) = key.value();
                let subscriber: Subscriber = decode(value.value())?;
                state.subscribers.entry(author.to_owned()).or_default().insert(follower.to_owned(), subscriber);
            }
            for row in txn.open_table(LEDGERS)?.iter()? {
                let (key, value) = row?;
                state.ledgers.insert(key.value().to_owned(), decode::<Ledger>(value.value())?);
            }
            for row in txn.open_table(SUBSCRIPTIONS)?.iter()? {
                let (key, value) = row?;
                let (follower, author) = key.value();
                state
                    .subscriptions
                    .insert((follower.to_owned(), author.to_owned()), decode::<Subscription>(value.value())?);
            }
            for row in txn.open_table(CACHES)?.iter()? {
                let (key, value) = row?;
                state.caches.insert(key.value().to_owned(), decode::<AuthorCache>(value.value())?);
            }
            for row in txn.open_table(PROFILES)?.iter()? {
                let (key, value) = row?;
                profiles.insert(key.value().to_owned(), decode::<RemoteProfile>(value.value())?);
            }
        }
        txn.commit()?;
        Ok((state, profiles))
    }

    /// Makes `after` durable, given that `before` is what is stored now.
    pub fn fanout_save(&self, before: &FanoutState, after: &FanoutState) -> StoreResult<()> {
        if before == after {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let flat = |state: &FanoutState| -> BTreeMap<(String, String), Subscriber> {
                state
                    .subscribers
                    .iter()
                    .flat_map(|(author, followers)| {
                        followers
                            .iter()
                            .map(move |(follower, subscriber)| ((author.clone(), follower.clone()), subscriber.clone()))
                    })
                    .collect()
            };
            if before.subscribers != after.subscribers {
                let (flat_before, flat_after) = (flat(before), flat(after));
                let mut table = txn.open_table(SUBSCRIBERS)?;
                for ((author, follower), bytes) in changes(&flat_before, &flat_after) {
                    match bytes {
                        Some(bytes) => table.insert((author.as_str(), follower.as_str()), bytes.as_slice())?,
                        None => table.remove((author.as_str(), follower.as_str()))?,
                    };
                }
            }
            let mut table = txn.open_table(SUBSCRIPTIONS)?;
            for ((follower, author), bytes) in changes(&before.subscriptions, &after.subscriptions) {
                match bytes {
                    Some(bytes) => table.insert((follower.as_str(), author.as_str()), bytes.as_slice())?,
                    None => table.remove((follower.as_str(), author.as_str()))?,
                };
            }
            let by_author =
                [(LEDGERS, changes(&before.ledgers, &after.ledgers)), (CACHES, changes(&before.caches, &after.caches))];
            for (definition, rows) in by_author {
                let mut table = txn.open_table(definition)?;
                for (author, bytes) in rows {
                    match bytes {
                        Some(bytes) => table.insert(author.as_str(), bytes.as_slice())?,
                        None => table.remove(author.as_str())?,
                    };
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn fanout_save_profile(&self, profile: &RemoteProfile) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(PROFILES)?.insert(profile.user_id.as_str(), encode(profile).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// A post's stored record with its version: live, or the tombstone a delete left.
    pub fn post_record(&self, post_id: &str) -> StoreResult<Option<Record<Post>>> {
        let txn = self.db.begin_read()?;
        let posts = txn.open_table(POSTS)?;
        let record = posts.get(post_id)?;
        record.map(|bytes| super::decode::<Record<Post>>(bytes.value())).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fanout::Audience;
    use crate::core::hlc::Timestamp;
    use crate::core::model::Version;

    fn version(at: u64) -> Version {
        Version { at: Timestamp(at), origin: NodeId(7) }
    }

    fn subscriber(home: NodeId, version: Version) -> Subscriber {
        Subscriber { home, version, active: true, handle: None, hears_audience: false, sees: Audience::Public }
    }

    /// Rows written before followers' audiences were kept are read as public-only
    /// (the fan-out service judges every follower again at start).
    #[test]
    fn subscriber_rows_from_before_audiences_read_as_public() {
        let row = br#"{"format":1,"value":{"home":"0000000000000001","version":{"at":3,"origin":"0000000000000007"},"active":true}}"#;
        assert_eq!(decode::<Subscriber>(row).unwrap(), subscriber(NodeId(1), version(3)));
        let profile = br#"{"format":1,"value":{"user_id":"u","handle":"bob","home":"0000000000000003"}}"#;
        let read: RemoteProfile = decode(profile).unwrap();
        assert_eq!(read.avatar, None, "profiles saved before avatars were kept have none");
    }

    /// Rows written by this format stay readable (a layout change needs a reader).
    #[test]
    fn format_1_rows_are_read() {
        let row = br#"{"format":1,"value":{"author_home":"0000000000000003","version":{"at":4,"origin":"0000000000000007"},"active":true,"acked":false}}"#;
        let subscription: Subscription = decode(row).unwrap();
        assert_eq!(
            subscription,
            Subscription {
                author_home: NodeId(3),
                version: version(4),
                active: true,
                acked: false,
                handle: None,
                sees: None,
            }
        );
        assert_eq!(encode(&subscription), row.to_vec());
        assert!(decode::<Subscription>(br#"{"format":2,"value":{}}"#).is_err());
    }

    #[test]
    fn the_state_survives_a_reopen_and_saves_write_only_changes() {
        let dir = std::env::temp_dir().join(format!("edgenode-fanout-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let (empty, profiles) = store.fanout_load().unwrap();
        assert_eq!(empty, FanoutState::default());
        assert!(profiles.is_empty());
        let mut state = FanoutState::default();
        state.subscribers.entry("bob".into()).or_default().insert("alice".into(), subscriber(NodeId(1), version(3)));
        state.subscriptions.insert(
            ("alice".into(), "carol".into()),
            Subscription {
                author_home: NodeId(3),
                version: version(4),
                active: true,
                acked: false,
                handle: None,
                sees: None,
            },
        );
        state.ledgers.insert("bob".into(), Ledger::default());
        store.fanout_save(&FanoutState::default(), &state).unwrap();
        let mut next = state.clone();
        next.subscriptions.clear();
        store.fanout_save(&state, &next).unwrap();
        let profile = RemoteProfile { user_id: "carol".into(), handle: "carol".into(), home: NodeId(3), avatar: None };
        store.fanout_save_profile(&profile).unwrap();
        drop(store);
        let store = Store::open(&dir).unwrap();
        let (loaded, profiles) = store.fanout_load().unwrap();
        assert_eq!(loaded, next);
        assert_eq!(profiles.get("carol"), Some(&profile));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
