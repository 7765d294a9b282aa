//! Posts: writing, editing and deleting them, reading one, an author's timeline, and
//! the search over public posts' terms.

use redb::ReadableTable;

use super::{live, Store, StoreError, StoreResult, KEY_MAX, MEDIA_OWNERS, POSTS, POSTS_BY_AUTHOR, TERMS};
use crate::core::model::{time_ordered_id, MediaOwner, Post, Record, Visibility};
use crate::core::replication::{RecordKey, Table};
use crate::core::text;

/// Index entries a search looks at before it stops, so one query cannot scan forever.
const SEARCH_SCAN_MAX: usize = 20_000;

impl Store {
    pub fn create_post(
        &self,
        author_id: &str,
        caption: String,
        media: Vec<String>,
        visibility: Visibility,
    ) -> StoreResult<Post> {
        self.write(|tx| {
            let version = tx.version();
            let tags = text::hashtags(&caption);
            let post = Post {
                post_id: time_ordered_id(version),
                author_id: author_id.to_owned(),
                caption,
                media,
                visibility,
                tags,
                created_at: version.at.physical_ms(),
            };
            {
                let owners = tx.txn.open_table(MEDIA_OWNERS)?;
                for media_id in &post.media {
                    let owned = match owners.get((media_id.as_str(), author_id))? {
                        Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
                        None => false,
                    };
                    if !owned {
                        return Err(StoreError::UnknownMedia(media_id.clone()));
                    }
                }
            }
            let key = RecordKey::new(Table::Post, post.post_id.as_str());
            tx.write_record(author_id, &key, &Record::live(version, post.clone()))?;
            Ok(post)
        })
    }

    pub fn post(&self, post_id: &str) -> StoreResult<Option<Post>> {
        let txn = self.db.begin_read()?;
        let posts = txn.open_table(POSTS)?;
        let post = posts.get(post_id)?;
        post.map(|bytes| live::<Post>(bytes.value())).transpose().map(Option::flatten)
    }

    /// Replaces the post with a tombstone and drops it from every index.
    pub fn delete_post(&self, post: &Post) -> StoreResult<()> {
        self.write(|tx| {
            let version = tx.version();
            let key = RecordKey::new(Table::Post, post.post_id.as_str());
            tx.write_record(&post.author_id, &key, &Record::<Post>::tombstone(version))
        })
    }

    /// Replaces a post with an edited copy (same id, author and creation time; the
    /// caption's tags derived again) at a new version.
    pub fn update_post(&self, post: &Post) -> StoreResult<Post> {
        self.write(|tx| {
            let version = tx.version();
            let mut edited = post.clone();
            edited.tags = text::hashtags(&edited.caption);
            let key = RecordKey::new(Table::Post, edited.post_id.as_str());
            tx.write_record(&edited.author_id, &key, &Record::live(version, edited.clone()))?;
            Ok(edited)
        })
    }

    /// Up to `limit` of an author's posts older than `before`, newest first, that
    /// pass `keep`.
    pub fn posts_by_author(
        &self,
        author_id: &str,
        before: Option<&str>,
        limit: usize,
        keep: impl Fn(&Post) -> bool,
    ) -> StoreResult<Vec<Post>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(POSTS_BY_AUTHOR)?;
        let posts_table = txn.open_table(POSTS)?;
        let mut posts = Vec::new();
        for entry in index.range((author_id, "")..(author_id, before.unwrap_or(KEY_MAX)))?.rev() {
            if posts.len() == limit {
                break;
            }
            let (key, _) = entry?;
            let post_id = key.value().1;
            let post = match posts_table.get(post_id)? {
                Some(bytes) => live::<Post>(bytes.value())?,
                None => None,
            };
            posts.extend(post.filter(|post| keep(post)));
        }
        Ok(posts)
    }

    /// Public posts whose index holds every term, newest first.
    pub fn search_posts(&self, terms: &[String], limit: usize) -> StoreResult<Vec<Post>> {
        let Some((first, rest)) = terms.split_first() else { return Ok(Vec::new()) };
        let post_ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let index = txn.open_table(TERMS)?;
            let mut post_ids = Vec::new();
            let first = first.as_str();
            for entry in index.range((first, "")..(first, KEY_MAX))?.rev().take(SEARCH_SCAN_MAX) {
                if post_ids.len() == limit {
                    break;
                }
                let (key, _) = entry?;
                let post_id = key.value().1;
                let mut matches_all = true;
                for term in rest {
                    matches_all &= index.get((term.as_str(), post_id))?.is_some();
                }
                if matches_all {
                    post_ids.push(post_id.to_owned());
                }
            }
            post_ids
        };
        let mut posts = Vec::new();
        for post_id in post_ids {
            posts.extend(self.post(&post_id)?.filter(|post| post.visibility == Visibility::Public));
        }
        Ok(posts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_dir;
    use crate::store::{decode, Admission};

    #[test]
    fn deleted_posts_leave_a_tombstone_and_every_index() {
        let dir = temp_dir("delete");
        let store = Store::open(&dir).unwrap();
        let user = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        let post = store.create_post(&user.user_id, "boats #harbour".into(), vec![], Visibility::Public).unwrap();
        assert_eq!(store.search_posts(&["t:harbour".into()], 10).unwrap().len(), 1);
        store.delete_post(&post).unwrap();
        assert!(store.post(&post.post_id).unwrap().is_none());
        assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
        assert!(store.posts_by_author(&user.user_id, None, 10, |_| true).unwrap().is_empty());
        let txn = store.db.begin_read().unwrap();
        let posts = txn.open_table(POSTS).unwrap();
        let stored: Record<Post> = decode(posts.get(post.post_id.as_str()).unwrap().unwrap().value()).unwrap();
        assert!(stored.body.is_none() && stored.version.at.0 > 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_public_posts_are_searchable_and_media_must_be_owned() {
        let dir = temp_dir("search");
        let store = Store::open(&dir).unwrap();
        let user = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        store.create_post(&user.user_id, "secret #harbour".into(), vec![], Visibility::Followers).unwrap();
        assert!(store.search_posts(&["t:harbour".into()], 10).unwrap().is_empty());
        let missing = "c".repeat(64);
        let result = store.create_post(&user.user_id, "x".into(), vec![missing], Visibility::Public);
        assert!(matches!(result, Err(StoreError::UnknownMedia(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
