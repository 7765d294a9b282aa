//! A user's own data for an export (everything in their shard, read in one snapshot)
//! and an import (photos' rows and owners, and posts with their original dates,
//! written in one transaction: all of it or nothing).

use redb::ReadableTable;
use sha2::{Digest, Sha256};

use super::media::put_media_in;
use super::replica::REPLICA_INDEX;
use super::{
    decode, live, split_pair_key, MediaInfo, Store, StoreError, StoreResult, COMMENTS, FOLLOWS, LIKES, MEDIA,
    MEDIA_OWNERS, POSTS, USERS,
};
use crate::core::model::{Comment, Follow, Like, MediaOwner, Post, Record, User, Visibility};
use crate::core::replication::{RecordKey, Table};
use crate::core::text;

/// Everything a user authored that this node holds, as of one read transaction.
#[derive(Debug, Clone, Default)]
pub struct UserData {
    /// Live posts, oldest first.
    pub posts: Vec<Post>,
    /// Comments the user wrote (on anyone's posts), oldest first.
    pub comments: Vec<Comment>,
    /// (post id, like) of posts the user likes.
    pub likes: Vec<(String, Like)>,
    /// Users the user follows.
    pub follows: Vec<FollowedUser>,
    /// Photos the user owns whose files are on this node.
    pub media: Vec<MediaInfo>,
    /// Photos the user owns whose files have not reached this node yet.
    pub media_missing: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FollowedUser {
    pub user_id: String,
    /// `None` when the followed user is not known on this node (a remote user).
    pub handle: Option<String>,
    pub follow: Follow,
}

/// A post to recreate: as it was on the node it was exported from, its photos by
/// their media ids here.
#[derive(Debug, Clone)]
pub struct ImportedPost {
    /// The post's id on the node it came from (with the importer, it names the new one).
    pub source_post_id: String,
    pub caption: String,
    pub media: Vec<String>,
    pub visibility: Visibility,
    pub created_at: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub posts_imported: usize,
    /// Already imported before (live, or deleted since: a deletion is kept).
    pub posts_skipped: usize,
    /// Photos the user did not own before.
    pub photos_imported: usize,
    pub photos_skipped: usize,
}

/// The id an imported post gets: its creation time (so it sorts among the user's posts
/// by its date, like `time_ordered_id`), then 16 hex digits of a hash of the importer
/// and the post's id at its source. Stable, so a second import of one archive finds
/// the posts of the first; distinct per importer, so two accounts importing one
/// archive never write one record, nor collide with the source's own posts.
pub fn imported_post_id(user_id: &str, source_post_id: &str, created_at_ms: u64) -> String {
    let digest = Sha256::new()
        .chain_update(b"edgenode/imported-post\0")
        .chain_update(user_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(source_post_id.as_bytes())
        .finalize();
    let suffix = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    // The HLC layout: 48 bits of milliseconds, 16 of counter (here 0).
    let at = (created_at_ms & ((1 << 48) - 1)) << 16;
    format!("{at:016x}{suffix:016x}")
}

impl Store {
    /// `user_id`'s records (their shard), in one read transaction, so an export is
    /// one consistent snapshot.
    pub fn user_data(&self, user_id: &str) -> StoreResult<UserData> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(REPLICA_INDEX)?;
        let posts = txn.open_table(POSTS)?;
        let comments = txn.open_table(COMMENTS)?;
        let likes = txn.open_table(LIKES)?;
        let follows = txn.open_table(FOLLOWS)?;
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let media = txn.open_table(MEDIA)?;
        let users = txn.open_table(USERS)?;
        let mut data = UserData::default();
        for entry in index.range((user_id, 0u64, 0u8, "")..)? {
            let (key, value) = entry?;
            let (shard, _, code, record_key) = key.value();
            if shard != user_id {
                break;
            }
            let (_, _, tombstone) = value.value();
            if tombstone {
                continue;
            }
            match Table::from_code(code) {
                Some(Table::Post) => {
                    if let Some(row) = posts.get(record_key)? {
                        data.posts.extend(live::<Post>(row.value())?);
                    }
                }
                Some(Table::Comment) => {
                    if let Some(row) = comments.get(pair(record_key)?)? {
                        data.comments.extend(live::<Comment>(row.value())?);
                    }
                }
                Some(Table::Like) => {
                    let (post_id, _) = pair(record_key)?;
                    if let Some(row) = likes.get(pair(record_key)?)? {
                        data.likes.extend(live::<Like>(row.value())?.map(|like| (post_id.to_owned(), like)));
                    }
                }
                Some(Table::Follow) => {
                    let (_, followee) = pair(record_key)?;
                    let Some(row) = follows.get(pair(record_key)?)? else { continue };
                    let Some(follow) = live::<Follow>(row.value())? else { continue };
                    let handle = match users.get(followee)? {
                        Some(row) => live::<User>(row.value())?.map(|user| user.handle),
                        None => None,
                    };
                    data.follows.push(FollowedUser { user_id: followee.to_owned(), handle, follow });
                }
                Some(Table::MediaOwner) => {
                    let (media_id, _) = pair(record_key)?;
                    let Some(row) = owners.get(pair(record_key)?)? else { continue };
                    if live::<MediaOwner>(row.value())?.is_none() {
                        continue;
                    }
                    match media.get(media_id)? {
                        Some(info) => data.media.push(decode(info.value())?),
                        None => data.media_missing.push(media_id.to_owned()),
                    }
                }
                _ => {}
            }
        }
        // The index is in hash order; people read archives in time order.
        data.posts.sort_by(|a, b| (a.created_at, &a.post_id).cmp(&(b.created_at, &b.post_id)));
        data.comments.sort_by(|a, b| (a.created_at, &a.comment_id).cmp(&(b.created_at, &b.comment_id)));
        data.likes.sort_by(|a, b| (a.1.at, &a.0).cmp(&(b.1.at, &b.0)));
        data.follows.sort_by(|a, b| (a.follow.since, &a.user_id).cmp(&(b.follow.since, &b.user_id)));
        data.media.sort_by(|a, b| (a.created_at, &a.media_id).cmp(&(b.created_at, &b.media_id)));
        Ok(data)
    }

    /// Writes an import in one transaction: `media` (whose blob files are durable) owned
    /// by `user_id`, then each post not imported before (`imported_post_id`) with its
    /// own caption, visibility and creation time. Each post's photos must be among
    /// `media` or owned by the user already (`UnknownMedia` otherwise, nothing written).
    /// Returns the counts and the ids of the posts written.
    pub fn import_user_data(
        &self,
        user_id: &str,
        media: &[MediaInfo],
        posts: &[ImportedPost],
    ) -> StoreResult<(ImportCounts, Vec<String>)> {
        let mut new_rows = Vec::new();
        let mut new_post_ids = Vec::new();
        let counts = self.write(|tx| {
            let mut counts = ImportCounts::default();
            for info in media {
                let (media_is_new, owner_is_new) = put_media_in(tx, info, user_id)?;
                if media_is_new {
                    new_rows.push(info);
                }
                if owner_is_new {
                    counts.photos_imported += 1;
                } else {
                    counts.photos_skipped += 1;
                }
            }
            for imported in posts {
                let post_id = imported_post_id(user_id, &imported.source_post_id, imported.created_at);
                if tx.txn.open_table(POSTS)?.get(post_id.as_str())?.is_some() {
                    counts.posts_skipped += 1;
                    continue;
                }
                {
                    let owners = tx.txn.open_table(MEDIA_OWNERS)?;
                    for media_id in &imported.media {
                        let owned = match owners.get((media_id.as_str(), user_id))? {
                            Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
                            None => false,
                        };
                        if !owned {
                            return Err(StoreError::UnknownMedia(media_id.clone()));
                        }
                    }
                }
                let version = tx.version();
                let post = Post {
                    post_id,
                    author_id: user_id.to_owned(),
                    caption: imported.caption.clone(),
                    media: imported.media.clone(),
                    visibility: imported.visibility,
                    tags: text::hashtags(&imported.caption),
                    created_at: imported.created_at,
                };
                let key = RecordKey::new(Table::Post, post.post_id.as_str());
                tx.write_record(user_id, &key, &Record::live(version, post))?;
                new_post_ids.push(key.key);
                counts.posts_imported += 1;
            }
            Ok(counts)
        })?;
        for info in new_rows {
            self.media_bytes_added(info);
        }
        Ok((counts, new_post_ids))
    }
}

/// The two ids of a composite record key.
fn pair(key: &str) -> StoreResult<(&str, &str)> {
    split_pair_key(key).ok_or_else(|| StoreError::Corrupt(format!("record key {key:?} is not two ids")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_dir;
    use crate::store::Admission;

    fn photo(media_id: &str) -> MediaInfo {
        crate::store::tests::media_info(media_id, 10, media_id, 5)
    }

    #[test]
    fn an_import_keeps_dates_and_a_second_one_writes_nothing_new() {
        let dir = temp_dir("import");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "h".into(), Admission::Claim).unwrap().user_id;
        let media_id = "a".repeat(64);
        let posts = vec![
            ImportedPost {
                source_post_id: "0000000000010000aaaaaaaaaaaaaaaa".into(),
                caption: "old #boats".into(),
                media: vec![media_id.clone()],
                visibility: Visibility::Followers,
                created_at: 1_500_000_000_000,
            },
            ImportedPost {
                source_post_id: "0000000000020000aaaaaaaaaaaaaaaa".into(),
                caption: "older".into(),
                media: vec![],
                visibility: Visibility::Public,
                created_at: 1_400_000_000_000,
            },
        ];
        let (first, written) = store.import_user_data(&ada, &[photo(&media_id)], &posts).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(first, ImportCounts { posts_imported: 2, posts_skipped: 0, photos_imported: 1, photos_skipped: 0 });
        let (again, written) = store.import_user_data(&ada, &[photo(&media_id)], &posts).unwrap();
        assert!(written.is_empty());
        assert_eq!(again, ImportCounts { posts_imported: 0, posts_skipped: 2, photos_imported: 0, photos_skipped: 1 });

        let timeline = store.posts_by_author(&ada, None, 10, |_| true).unwrap();
        assert_eq!(timeline.len(), 2);
        assert_eq!(timeline[0].caption, "old #boats", "newest first, by the original dates");
        assert_eq!(timeline[0].created_at, 1_500_000_000_000);
        assert_eq!(timeline[0].tags, vec!["boats"]);
        assert_eq!(timeline[0].visibility, Visibility::Followers);
        assert_eq!(timeline[1].created_at, 1_400_000_000_000);

        let data = store.user_data(&ada).unwrap();
        assert_eq!(data.posts.len(), 2);
        assert_eq!(data.posts[0].caption, "older", "oldest first in an export");
        assert_eq!(data.media.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_post_with_a_photo_not_owned_writes_nothing() {
        let dir = temp_dir("import-unowned");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "h".into(), Admission::Claim).unwrap().user_id;
        let post = ImportedPost {
            source_post_id: "x".into(),
            caption: "c".into(),
            media: vec!["b".repeat(64)],
            visibility: Visibility::Public,
            created_at: 1,
        };
        let result = store.import_user_data(&ada, &[photo(&"a".repeat(64))], &[post]);
        assert!(matches!(result, Err(StoreError::UnknownMedia(_))));
        assert!(store.media(&"a".repeat(64)).unwrap().is_none(), "the photo of a failed import is not kept");
        assert!(store.user_data(&ada).unwrap().media.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn imported_ids_sort_by_date_and_differ_per_importer() {
        let a = imported_post_id("ada", "p", 1_000);
        assert_eq!(a.len(), 32);
        assert!(a < imported_post_id("ada", "q", 2_000));
        assert_ne!(a, imported_post_id("bob", "p", 1_000));
        assert_eq!(a, imported_post_id("ada", "p", 1_000));
    }
}
