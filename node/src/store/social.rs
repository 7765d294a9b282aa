//! Between users: follows (with the derived followers index), likes and comments.

use super::{live, pair_key, Store, StoreResult, COMMENTS, FOLLOWERS, FOLLOWS, KEY_MAX, LIKES};
use crate::core::model::{time_ordered_id, Comment, Follow, Like, Record, Version};
use crate::core::replication::{RecordKey, Table};

impl Store {
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
