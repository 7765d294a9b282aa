//! Safety between users and on the node: blocks (in the blocker's shard), reports of
//! posts to the node's admins (in the reporter's shard) and admins hiding a post (in
//! its author's shard). Each is a replicated record, so it holds on every replica of
//! the shard it lives in, through failover and partitions, as posts do.

use redb::ReadableTable;

use super::{live, pair_key, Store, StoreResult, BLOCKS, FOLLOWS, KEY_MAX, POST_MODERATION, REPORTS, USERS};
use crate::core::model::{
    moderation_allows, time_ordered_id, Block, Follow, Post, PostModeration, Record, Report, ReportResolution, User,
};
use crate::core::replication::{RecordKey, Table};

/// A user the caller blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedUser {
    pub user_id: String,
    /// When the block was made (ms).
    pub since: u64,
}

/// Whether `blocker` blocks `blocked`, read from any transaction's `blocks` table.
pub(in crate::store) fn blocks_in(
    blocks: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    blocker_id: &str,
    blocked_id: &str,
) -> StoreResult<bool> {
    Ok(match blocks.get((blocker_id, blocked_id))? {
        Some(bytes) => live::<Block>(bytes.value())?.is_some(),
        None => false,
    })
}

/// Whether an admin hid the post, read from any transaction's `post_moderation` table.
pub(in crate::store) fn hidden_in(
    moderation: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    author_id: &str,
    post_id: &str,
) -> StoreResult<bool> {
    Ok(match moderation.get((author_id, post_id))? {
        Some(bytes) => live::<PostModeration>(bytes.value())?.is_some_and(|moderation| moderation.hidden),
        None => false,
    })
}

impl Store {
    // ----- blocks -----

    /// Whether `blocker` blocks `blocked`.
    pub fn blocks(&self, blocker_id: &str, blocked_id: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        blocks_in(&txn.open_table(BLOCKS)?, blocker_id, blocked_id)
    }

    /// Whether either of the two blocks the other.
    pub fn blocked_either_way(&self, user_id: &str, other_id: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        Ok(blocks_in(&blocks, user_id, other_id)? || blocks_in(&blocks, other_id, user_id)?)
    }

    /// Blocks or unblocks, in one transaction; blocking also ends the follows between
    /// the two, both ways (tombstones: the blocker's in their shard, the blocked
    /// user's in theirs), so unblocking later restores no follow. Blocking again while
    /// blocked, or unblocking someone not blocked, writes nothing.
    pub fn set_block(&self, blocker_id: &str, blocked_id: &str, blocking: bool) -> StoreResult<()> {
        self.write(|tx| {
            if blocks_in(&tx.txn.open_table(BLOCKS)?, blocker_id, blocked_id)? == blocking {
                return Ok(());
            }
            let version = tx.version();
            let record = if blocking {
                Record::live(version, Block { since: version.at.physical_ms() })
            } else {
                Record::tombstone(version)
            };
            tx.write_record(blocker_id, &RecordKey::new(Table::Block, pair_key(blocker_id, blocked_id)), &record)?;
            if !blocking {
                return Ok(());
            }
            for (follower, followee) in [(blocker_id, blocked_id), (blocked_id, blocker_id)] {
                let live_follow = match tx.txn.open_table(FOLLOWS)?.get((follower, followee))? {
                    Some(bytes) => live::<Follow>(bytes.value())?.is_some(),
                    None => false,
                };
                if live_follow {
                    let gone = Record::<Follow>::tombstone(tx.version());
                    tx.write_record(follower, &RecordKey::new(Table::Follow, pair_key(follower, followee)), &gone)?;
                }
            }
            Ok(())
        })
    }

    /// Up to `limit` users `blocker` blocks, by user id after `after`.
    pub fn blocked_users(&self, blocker_id: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<BlockedUser>> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        let mut blocked = Vec::new();
        for entry in blocks.range((blocker_id, after.unwrap_or(""))..(blocker_id, KEY_MAX))? {
            let (key, value) = entry?;
            let user_id = key.value().1;
            if Some(user_id) == after {
                continue;
            }
            if blocked.len() == limit {
                break;
            }
            if let Some(block) = live::<Block>(value.value())? {
                blocked.push(BlockedUser { user_id: user_id.to_owned(), since: block.since });
            }
        }
        Ok(blocked)
    }

    // ----- reports -----

    /// `reporter` reports `post` to the node's admins; each call is a new report.
    pub fn report_post(&self, reporter_id: &str, post: &Post, reason: String) -> StoreResult<Report> {
        self.write(|tx| {
            let version = tx.version();
            let report = Report {
                report_id: time_ordered_id(version),
                post_id: post.post_id.clone(),
                post_author_id: post.author_id.clone(),
                reporter_id: reporter_id.to_owned(),
                reason: reason.clone(),
                created_at: version.at.physical_ms(),
                resolved: None,
            };
            let key = RecordKey::new(Table::Report, pair_key(&report.report_id, reporter_id));
            tx.write_record(reporter_id, &key, &Record::live(version, report.clone()))?;
            Ok(report)
        })
    }

    /// Up to `limit` reports older than the report `before`, newest first; only open
    /// ones when `open_only`. The table is keyed by report id (time first), so a page
    /// reads back from its cursor; skipping resolved reports reads past them.
    pub fn reports(&self, before: Option<&str>, limit: usize, open_only: bool) -> StoreResult<Vec<Report>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REPORTS)?;
        let mut reports = Vec::new();
        let entries = match before {
            Some(before) => table.range(..(before, ""))?,
            None => table.range::<(&str, &str)>(..)?,
        };
        for entry in entries.rev() {
            if reports.len() == limit {
                break;
            }
            let Some(report) = live::<Report>(entry?.1.value())? else { continue };
            if open_only && report.resolved.is_some() {
                continue;
            }
            reports.push(report);
        }
        Ok(reports)
    }

    /// An admin closes a report (written again in the reporter's shard, last writer
    /// wins); `None` when there is no such report. Closing a closed one keeps the
    /// first resolution.
    pub fn resolve_report(&self, report_id: &str, admin_id: &str) -> StoreResult<Option<Report>> {
        self.write(|tx| {
            let found = {
                let table = tx.txn.open_table(REPORTS)?;
                let mut found = None;
                for entry in table.range((report_id, "")..(report_id, KEY_MAX))? {
                    found = live::<Report>(entry?.1.value())?;
                    if found.is_some() {
                        break;
                    }
                }
                found
            };
            let Some(mut report) = found else { return Ok(None) };
            if report.resolved.is_some() {
                return Ok(Some(report));
            }
            let version = tx.version();
            report.resolved = Some(ReportResolution { by: admin_id.to_owned(), at: version.at.physical_ms() });
            let key = RecordKey::new(Table::Report, pair_key(&report.report_id, &report.reporter_id));
            tx.write_record(&report.reporter_id.clone(), &key, &Record::live(version, report.clone()))?;
            Ok(Some(report))
        })
    }

    // ----- admins hiding posts -----

    /// An admin hides (or unhides) `post`: a record in its author's shard.
    pub fn set_post_hidden(&self, post: &Post, admin_id: &str, hidden: bool) -> StoreResult<()> {
        self.write(|tx| {
            let version = tx.version();
            let moderation = PostModeration { hidden, by: admin_id.to_owned(), at: version.at.physical_ms() };
            let key = RecordKey::new(Table::PostModeration, pair_key(&post.author_id, &post.post_id));
            tx.write_record(&post.author_id, &key, &Record::live(version, moderation))
        })
    }

    /// The admins' last decision on `post`, if any.
    pub fn post_moderation(&self, post: &Post) -> StoreResult<Option<PostModeration>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POST_MODERATION)?;
        Ok(match table.get((post.author_id.as_str(), post.post_id.as_str()))? {
            Some(bytes) => live::<PostModeration>(bytes.value())?,
            None => None,
        })
    }

    /// The admins' last decision on the post `post_id` of `author_id` as stored, with
    /// its version (fan-out dates a hidden post's removal by it).
    pub fn post_moderation_record(
        &self,
        author_id: &str,
        post_id: &str,
    ) -> StoreResult<Option<Record<PostModeration>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POST_MODERATION)?;
        let record = table.get((author_id, post_id))?;
        record.map(|bytes| super::decode::<Record<PostModeration>>(bytes.value())).transpose()
    }

    /// Whether moderation lets `viewer` see `post` (on top of `may_view`): a hidden
    /// post only its author and admins, nobody the posts of an author they block
    /// (`core::model::moderation_allows`). One read transaction.
    pub fn post_shown_to(&self, post: &Post, viewer: Option<&str>) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        let hidden = hidden_in(&txn.open_table(POST_MODERATION)?, &post.author_id, &post.post_id)?;
        let Some(viewer) = viewer else { return Ok(moderation_allows(hidden, false, false, false)) };
        let is_author = viewer == post.author_id;
        let blocks_author = !is_author && blocks_in(&txn.open_table(BLOCKS)?, viewer, &post.author_id)?;
        let is_admin = hidden
            && !is_author
            && match txn.open_table(USERS)?.get(viewer)? {
                Some(bytes) => live::<User>(bytes.value())?.is_some_and(|user| user.admin),
                None => false,
            };
        Ok(moderation_allows(hidden, is_author, is_admin, blocks_author))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_dir;
    use super::*;
    use crate::core::model::Visibility;
    use crate::store::Admission;

    #[test]
    fn a_block_ends_follows_both_ways_and_unblocking_restores_none() {
        let dir = temp_dir("safety-block");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "hash".into(), Admission::Claim).unwrap();
        let bob = store.create_user("bob", "hash".into(), Admission::Open).unwrap();
        store.set_follow(&ada.user_id, &bob.user_id, true).unwrap();
        store.set_follow(&bob.user_id, &ada.user_id, true).unwrap();
        store.set_block(&ada.user_id, &bob.user_id, true).unwrap();
        assert!(store.blocks(&ada.user_id, &bob.user_id).unwrap());
        assert!(!store.blocks(&bob.user_id, &ada.user_id).unwrap(), "a block has one direction");
        assert!(store.blocked_either_way(&bob.user_id, &ada.user_id).unwrap());
        assert!(store.followees(&ada.user_id).unwrap().is_empty());
        assert!(store.followees(&bob.user_id).unwrap().is_empty());
        assert_eq!(store.blocked_users(&ada.user_id, None, 10).unwrap().len(), 1);
        store.set_block(&ada.user_id, &bob.user_id, false).unwrap();
        assert!(!store.blocks(&ada.user_id, &bob.user_id).unwrap());
        assert!(store.blocked_users(&ada.user_id, None, 10).unwrap().is_empty());
        assert!(store.followees(&bob.user_id).unwrap().is_empty(), "unblocking restores no follow");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_hidden_post_is_shown_to_its_author_and_admins_only() {
        let dir = temp_dir("safety-hide");
        let store = Store::open(&dir).unwrap();
        let admin = store.create_user("root", "hash".into(), Admission::Claim).unwrap();
        let ada = store.create_user("ada", "hash".into(), Admission::Open).unwrap();
        let bob = store.create_user("bob", "hash".into(), Admission::Open).unwrap();
        let post = store.create_post(&ada.user_id, "hello".into(), vec![], Visibility::Public).unwrap();
        assert!(store.post_shown_to(&post, Some(&bob.user_id)).unwrap());
        store.set_post_hidden(&post, &admin.user_id, true).unwrap();
        assert!(!store.post_shown_to(&post, Some(&bob.user_id)).unwrap());
        assert!(!store.post_shown_to(&post, None).unwrap());
        assert!(store.post_shown_to(&post, Some(&ada.user_id)).unwrap());
        assert!(store.post_shown_to(&post, Some(&admin.user_id)).unwrap());
        let fed = |store: &Store| {
            store
                .public_entries(store.node_id(), 100)
                .unwrap()
                .iter()
                .any(|entry| matches!(entry, crate::core::search::Entry::Post(fed) if fed.id == post.post_id))
        };
        assert!(!fed(&store), "a hidden post is not fed to aggregators");
        store.set_post_hidden(&post, &admin.user_id, false).unwrap();
        assert!(store.post_shown_to(&post, Some(&bob.user_id)).unwrap());
        assert!(fed(&store), "unhidden, it is fed again");
        store.set_block(&bob.user_id, &ada.user_id, true).unwrap();
        assert!(!store.post_shown_to(&post, Some(&bob.user_id)).unwrap(), "gone for who blocks its author");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reports_page_newest_first_and_resolve_once() {
        let dir = temp_dir("safety-reports");
        let store = Store::open(&dir).unwrap();
        let admin = store.create_user("root", "hash".into(), Admission::Claim).unwrap();
        let ada = store.create_user("ada", "hash".into(), Admission::Open).unwrap();
        let post = store.create_post(&admin.user_id, "hello".into(), vec![], Visibility::Public).unwrap();
        let first = store.report_post(&ada.user_id, &post, "one".into()).unwrap();
        let second = store.report_post(&ada.user_id, &post, "two".into()).unwrap();
        let page = store.reports(None, 1, true).unwrap();
        assert_eq!(page, vec![second.clone()]);
        let next = store.reports(Some(&second.report_id), 1, true).unwrap();
        assert_eq!(next, vec![first.clone()]);
        let resolved = store.resolve_report(&first.report_id, &admin.user_id).unwrap().unwrap();
        assert_eq!(resolved.resolved.as_ref().unwrap().by, admin.user_id);
        assert_eq!(store.reports(None, 10, true).unwrap(), vec![second.clone()]);
        assert_eq!(store.reports(None, 10, false).unwrap().len(), 2);
        let again = store.resolve_report(&first.report_id, &ada.user_id).unwrap().unwrap();
        assert_eq!(again.resolved, resolved.resolved, "the first resolution stays");
        assert_eq!(store.resolve_report(&"0".repeat(32), &admin.user_id).unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
