//! Between users: follows (with the derived followers index), a locked account's
//! answers to follow requests, likes and comments.

use redb::ReadableTable;

use super::{
    live, pair_key, Store, StoreResult, Tx, BLOCKS, COMMENTS, FOLLOWERS, FOLLOWS, FOLLOW_DECISIONS, KEY_MAX, LIKES,
    USERS,
};
use crate::core::model::{
    follow_counts, follow_pending, follow_unanswered, time_ordered_id, Comment, Follow, FollowDecision, Like, Record,
    User, Version,
};
use crate::core::replication::{RecordKey, Table};

/// Where a follow stands, as its follower sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowStatus {
    /// Counts: the followee is not locked, or approved it.
    Following,
    /// The locked followee has not answered yet.
    Requested,
    /// The locked followee rejected it (or removed the follower).
    Rejected,
}

/// A follow request waiting for a locked account's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowRequest {
    pub follower_id: String,
    /// When the follow was made (ms).
    pub since: u64,
}

/// The follow of `follower` → `followee` and where it stands, read from any
/// transaction's tables (the one rule every read path shares).
fn follow_status_in(
    follows: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    users: &impl ReadableTable<&'static str, &'static [u8]>,
    decisions: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    blocks: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    follower_id: &str,
    followee_id: &str,
) -> StoreResult<Option<FollowStatus>> {
    let follow = match follows.get((follower_id, followee_id))? {
        Some(bytes) => live::<Follow>(bytes.value())?,
        None => None,
    };
    let Some(follow) = follow else { return Ok(None) };
    // A block ends the follow when it is written; a follow that reappears after it
    // (written on the other side of a partition) still does not count.
    if super::safety::blocks_in(blocks, followee_id, follower_id)? {
        return Ok(Some(FollowStatus::Rejected));
    }
    let locked = match users.get(followee_id)? {
        Some(bytes) => live::<User>(bytes.value())?.is_some_and(|user| user.locked),
        None => false,
    };
    let decision = match decisions.get((followee_id, follower_id))? {
        Some(bytes) => live::<FollowDecision>(bytes.value())?,
        None => None,
    };
    Ok(Some(if follow_counts(follow.since, locked, decision.as_ref()) {
        FollowStatus::Following
    } else if follow_pending(follow.since, locked, decision.as_ref()) {
        FollowStatus::Requested
    } else {
        FollowStatus::Rejected
    }))
}

/// Whether `follower` follows `followee` as visibility means it (notifications read
/// it in their own snapshot).
pub(in crate::store) fn follows_in(
    txn: &redb::ReadTransaction,
    follower_id: &str,
    followee_id: &str,
) -> StoreResult<bool> {
    let status = follow_status_in(
        &txn.open_table(FOLLOWS)?,
        &txn.open_table(USERS)?,
        &txn.open_table(FOLLOW_DECISIONS)?,
        &txn.open_table(BLOCKS)?,
        follower_id,
        followee_id,
    )?;
    Ok(status == Some(FollowStatus::Following))
}

/// Approves, in `tx`, every live follow of `followee` that has no answer: a locked
/// account keeps the followers it had when it locked, and unlocking lets everyone
/// who asked in (so locking again later does not turn them back into requests).
pub(in crate::store) fn approve_unanswered_follows(tx: &mut Tx<'_>, followee_id: &str) -> StoreResult<()> {
    let mut unanswered = Vec::new();
    {
        let followers = tx.txn.open_table(FOLLOWERS)?;
        let follows = tx.txn.open_table(FOLLOWS)?;
        let decisions = tx.txn.open_table(FOLLOW_DECISIONS)?;
        for entry in followers.range((followee_id, "")..(followee_id, KEY_MAX))? {
            let follower_id = entry?.0.value().1.to_owned();
            let follow = match follows.get((follower_id.as_str(), followee_id))? {
                Some(bytes) => live::<Follow>(bytes.value())?,
                None => None,
            };
            let Some(follow) = follow else { continue };
            let decision = match decisions.get((followee_id, follower_id.as_str()))? {
                Some(bytes) => live::<FollowDecision>(bytes.value())?,
                None => None,
            };
            if follow_unanswered(follow.since, decision.as_ref()) {
                unanswered.push((follower_id, follow.since));
            }
        }
    }
    for (follower_id, since) in unanswered {
        write_decision(tx, followee_id, &follower_id, since, true)?;
    }
    Ok(())
}

/// The followee's answer to the follow made at `follow_since`; dated no earlier than
/// the follow, so it answers that follow whatever the two nodes' clocks said.
fn write_decision(
    tx: &mut Tx<'_>,
    followee_id: &str,
    follower_id: &str,
    follow_since: u64,
    approved: bool,
) -> StoreResult<()> {
    let version = tx.version();
    let decision = FollowDecision { approved, at: version.at.physical_ms().max(follow_since) };
    let key = RecordKey::new(Table::FollowDecision, pair_key(followee_id, follower_id));
    tx.write_record(followee_id, &key, &Record::live(version, decision))
}

impl Store {
    // ----- follows -----

    /// Whether `follower` follows `followee` as visibility means it: a live follow,
    /// approved if the followee's account is locked.
    pub fn follows(&self, follower_id: &str, followee_id: &str) -> StoreResult<bool> {
        Ok(self.follow_status(follower_id, followee_id)? == Some(FollowStatus::Following))
    }

    /// The follow of `follower` → `followee` and where it stands; `None` without one.
    pub fn follow_status(&self, follower_id: &str, followee_id: &str) -> StoreResult<Option<FollowStatus>> {
        let txn = self.db.begin_read()?;
        follow_status_in(
            &txn.open_table(FOLLOWS)?,
            &txn.open_table(USERS)?,
            &txn.open_table(FOLLOW_DECISIONS)?,
            &txn.open_table(BLOCKS)?,
            follower_id,
            followee_id,
        )
    }

    /// Follows or unfollows; returns the follow record's version (fan-out keys on it).
    /// Following again while a follow is live keeps it as it is (a PUT retried, or
    /// sent twice, must not turn an approved follow back into a request).
    pub fn set_follow(&self, follower_id: &str, followee_id: &str, following: bool) -> StoreResult<Version> {
        self.write(|tx| {
            if following {
                if let Some(bytes) = tx.txn.open_table(FOLLOWS)?.get((follower_id, followee_id))? {
                    let stored = super::decode::<Record<Follow>>(bytes.value())?;
                    if stored.body.is_some() {
                        return Ok(stored.version);
                    }
                }
            }
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

    /// Followers that count (a locked account's approved ones).
    pub fn follower_count(&self, user_id: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let followers = txn.open_table(FOLLOWERS)?;
        let (follows, users, decisions, blocks) = (
            txn.open_table(FOLLOWS)?,
            txn.open_table(USERS)?,
            txn.open_table(FOLLOW_DECISIONS)?,
            txn.open_table(BLOCKS)?,
        );
        let mut count = 0;
        for entry in followers.range((user_id, "")..(user_id, KEY_MAX))? {
            let follower_id = entry?.0.value().1.to_owned();
            if follow_status_in(&follows, &users, &decisions, &blocks, &follower_id, user_id)?
                == Some(FollowStatus::Following)
            {
                count += 1;
            }
        }
        Ok(count)
    }

    /// Up to `limit` follow requests waiting for `user_id`'s answer, by follower id
    /// after `after`; empty unless the account is locked.
    pub fn follow_requests(&self, user_id: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<FollowRequest>> {
        let txn = self.db.begin_read()?;
        let followers = txn.open_table(FOLLOWERS)?;
        let (follows, users, decisions, blocks) = (
            txn.open_table(FOLLOWS)?,
            txn.open_table(USERS)?,
            txn.open_table(FOLLOW_DECISIONS)?,
            txn.open_table(BLOCKS)?,
        );
        let mut requests = Vec::new();
        for entry in followers.range((user_id, after.unwrap_or(""))..(user_id, KEY_MAX))? {
            let follower_id = entry?.0.value().1.to_owned();
            if Some(follower_id.as_str()) == after {
                continue;
            }
            if requests.len() == limit {
                break;
            }
            if follow_status_in(&follows, &users, &decisions, &blocks, &follower_id, user_id)?
                != Some(FollowStatus::Requested)
            {
                continue;
            }
            let since = match follows.get((follower_id.as_str(), user_id))? {
                Some(bytes) => live::<Follow>(bytes.value())?.map_or(0, |follow| follow.since),
                None => 0,
            };
            requests.push(FollowRequest { follower_id, since });
        }
        Ok(requests)
    }

    /// The followee answers `follower`'s follow: approve lets them see followers
    /// posts; reject (also how a follower is removed) hides them again until they
    /// unfollow and ask anew. One replicated record in the followee's shard; `false`
    /// when there is no live follow to answer.
    pub fn answer_follow(&self, followee_id: &str, follower_id: &str, approved: bool) -> StoreResult<bool> {
        self.write(|tx| {
            let follow = match tx.txn.open_table(FOLLOWS)?.get((follower_id, followee_id))? {
                Some(bytes) => live::<Follow>(bytes.value())?,
                None => None,
            };
            let Some(follow) = follow else { return Ok(false) };
            write_decision(tx, followee_id, follower_id, follow.since, approved)?;
            Ok(true)
        })
    }

    /// The followee's answer to `follower`'s follows, if any (`follow_counts` says
    /// whether it answers a given one).
    pub fn follow_decision(&self, followee_id: &str, follower_id: &str) -> StoreResult<Option<FollowDecision>> {
        let txn = self.db.begin_read()?;
        let decisions = txn.open_table(FOLLOW_DECISIONS)?;
        Ok(match decisions.get((followee_id, follower_id))? {
            Some(bytes) => live::<FollowDecision>(bytes.value())?,
            None => None,
        })
    }

    /// The followee answers the follow of a user of another node, made at
    /// `follow_since` (ms; that node keeps the Follow record, fan-out told us of it):
    /// the same replicated FollowDecision a local follower's answer is.
    pub fn answer_remote_follow(
        &self,
        followee_id: &str,
        follower_id: &str,
        follow_since: u64,
        approved: bool,
    ) -> StoreResult<()> {
        self.write(|tx| write_decision(tx, followee_id, follower_id, follow_since, approved))
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
