//! The replicated record types: each one's `Table`, the shard a record belongs to,
//! and the derived indexes it keeps (`Replicated::update_indexes`, the only place
//! index maintenance lives).

use redb::{ReadableTable, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::rows::split_pair_key;
use crate::core::model::{
    Block, Comment, Credential, Follow, FollowDecision, Like, MediaOwner, NotificationsRead, Post, PostModeration,
    Record, Report, User, Visibility,
};
use crate::core::replication::{PlacementRecord, Table};
use crate::core::text;
use crate::store::{
    decode, notifications, StoreResult, FOLLOWERS, HANDLES, MEDIA_POSTS, POSTS_BY_AUTHOR, TERMS, USERS,
};

/// A replicated record type: its table, whose shard it belongs to, and the derived
/// indexes it keeps. `update_indexes` is the only place index maintenance lives.
pub(in crate::store) trait Replicated: Serialize + DeserializeOwned {
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
        // A deleted account (a tombstone) keeps its handle, so nobody can register it
        // to pass for them; only a live record moves it.
        if let Some(old) = old.filter(|_| new.is_some()) {
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
        notifications::post_changed(txn, post_id, old, new)
    }
}

impl Replicated for Follow {
    const TABLE: Table = Table::Follow;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(follower, _)| follower)
    }

    fn update_indexes(txn: &WriteTransaction, key: &str, old: Option<&Self>, new: Option<&Self>) -> StoreResult<()> {
        let Some((follower, followee)) = split_pair_key(key) else { return Ok(()) };
        let mut followers = txn.open_table(FOLLOWERS)?;
        if new.is_some() {
            followers.insert((followee, follower), ())?;
        } else {
            followers.remove((followee, follower))?;
        }
        drop(followers);
        notifications::follow_changed(txn, key, old, new)
    }
}

impl Replicated for Like {
    const TABLE: Table = Table::Like;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(_, user_id)| user_id)
    }

    fn update_indexes(txn: &WriteTransaction, key: &str, old: Option<&Self>, new: Option<&Self>) -> StoreResult<()> {
        notifications::like_changed(txn, key, old, new)
    }
}

impl Replicated for Comment {
    const TABLE: Table = Table::Comment;

    fn shard_of<'a>(key: &'a str, body: Option<&'a Self>) -> Option<&'a str> {
        let (post_id, comment_id) = split_pair_key(key)?;
        body.filter(|comment| comment.post_id == post_id && comment.comment_id == comment_id)
            .map(|comment| comment.author_id.as_str())
    }

    fn update_indexes(txn: &WriteTransaction, _key: &str, old: Option<&Self>, new: Option<&Self>) -> StoreResult<()> {
        notifications::comment_changed(txn, old, new)
    }
}

impl Replicated for MediaOwner {
    const TABLE: Table = Table::MediaOwner;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(_, user_id)| user_id)
    }

    fn update_indexes(txn: &WriteTransaction, key: &str, old: Option<&Self>, new: Option<&Self>) -> StoreResult<()> {
        crate::store::media::owner_gone_check(txn, key, old, new)
    }
}

/// One per user, in their shard (the key is the user id).
impl Replicated for NotificationsRead {
    const TABLE: Table = Table::NotificationsRead;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        Some(key)
    }
}

/// In the followee's shard (the key is `followee/follower`): only they answer.
impl Replicated for FollowDecision {
    const TABLE: Table = Table::FollowDecision;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(followee, _)| followee)
    }
}

/// In the blocker's shard (the key is `blocker/blocked`).
impl Replicated for Block {
    const TABLE: Table = Table::Block;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(blocker, _)| blocker)
    }
}

/// In the reporter's shard (the key is `report_id/reporter`).
impl Replicated for Report {
    const TABLE: Table = Table::Report;

    fn shard_of<'a>(key: &'a str, body: Option<&'a Self>) -> Option<&'a str> {
        let (report_id, reporter) = split_pair_key(key)?;
        body.is_none_or(|report| report.report_id == report_id && report.reporter_id == reporter).then_some(reporter)
    }
}

/// In the post author's shard (the key is `author/post_id`), beside the post.
impl Replicated for PostModeration {
    const TABLE: Table = Table::PostModeration;

    fn shard_of<'a>(key: &'a str, _body: Option<&'a Self>) -> Option<&'a str> {
        split_pair_key(key).map(|(author, _)| author)
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
/// Paths are absolute, so a caller in another file need not import every record type.
macro_rules! for_table {
    ($table:expr, $function:ident($($argument:expr),* $(,)?)) => {
        match $table {
            $crate::core::replication::Table::User => $function::<$crate::core::model::User>($($argument),*),
            $crate::core::replication::Table::Credential => {
                $function::<$crate::core::model::Credential>($($argument),*)
            }
            $crate::core::replication::Table::Post => $function::<$crate::core::model::Post>($($argument),*),
            $crate::core::replication::Table::Follow => $function::<$crate::core::model::Follow>($($argument),*),
            $crate::core::replication::Table::Like => $function::<$crate::core::model::Like>($($argument),*),
            $crate::core::replication::Table::Comment => $function::<$crate::core::model::Comment>($($argument),*),
            $crate::core::replication::Table::MediaOwner => {
                $function::<$crate::core::model::MediaOwner>($($argument),*)
            }
            $crate::core::replication::Table::Placement => {
                $function::<$crate::core::replication::PlacementRecord>($($argument),*)
            }
            $crate::core::replication::Table::NotificationsRead => {
                $function::<$crate::core::model::NotificationsRead>($($argument),*)
            }
            $crate::core::replication::Table::FollowDecision => {
                $function::<$crate::core::model::FollowDecision>($($argument),*)
            }
            $crate::core::replication::Table::Block => $function::<$crate::core::model::Block>($($argument),*),
            $crate::core::replication::Table::Report => $function::<$crate::core::model::Report>($($argument),*),
            $crate::core::replication::Table::PostModeration => {
                $function::<$crate::core::model::PostModeration>($($argument),*)
            }
        }
    };
}
pub(super) use for_table;

#[cfg(test)]
mod tests {
    use super::super::tests::{item, open, temp_dir};
    use super::*;
    use crate::core::replication::ReplicaStore;

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
            avatar: None,
            locked: false,
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
}
