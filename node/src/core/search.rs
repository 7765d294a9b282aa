//! The public search entries nodes feed to aggregators: what an entry holds, the
//! limits it must keep, its content hash, the per-origin digest, and the change set
//! between what a feeder last sent and what it holds now; and how the answers of
//! several nodes merge. Pure; `services::search` moves them.
//!
//! Only public data ever becomes an entry: public posts (no followers-only or private
//! post, ever) and profiles (handle, display name, bio). An entry belongs to its
//! origin, the node whose users wrote it; an aggregator keeps entries by (origin,
//! kind, id) and an origin's digest (count, XOR of entry hashes) tells feeder and
//! aggregator apart in one number pair.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::core::model::NodeId;
use crate::core::text;

/// Longest id (post, user, media) in an entry, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Longest caption, in characters (the API's own limit).
pub const CAPTION_CHARS_MAX: usize = 2_200;
pub const DISPLAY_NAME_CHARS_MAX: usize = 200;
pub const BIO_CHARS_MAX: usize = 1_000;
pub const MEDIA_PER_POST_MAX: usize = 10;

/// The node an entry comes from: whose users wrote it, and where that node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub id: NodeId,
    pub region: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Post,
    User,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Post => "post",
            Kind::User => "user",
        }
    }
}

/// A public post's searchable fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicPost {
    pub id: String,
    pub author_id: String,
    pub author_handle: String,
    pub caption: String,
    pub tags: Vec<String>,
    /// Media ids (SHA-256 hex).
    pub media: Vec<String>,
    pub created_at: u64,
}

/// A profile's public fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicUser {
    pub user_id: String,
    pub handle: String,
    pub display_name: String,
    pub bio: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Post(PublicPost),
    User(PublicUser),
}

/// Why `Entry::check` refuses an entry: which one (by id) and which rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEntry {
    #[error("post {0:?}: an id is empty, too long or not printable")]
    PostId(String),
    #[error("post {0:?}: {1}")]
    PostHandle(String, text::InvalidHandle),
    #[error("post {0:?} is past a limit (caption, media or tags)")]
    PostLimit(String),
    #[error("user {0:?}: the id is empty, too long or not printable")]
    UserId(String),
    #[error("user {0:?}: {1}")]
    UserHandle(String, text::InvalidHandle),
    #[error("user {0:?}: display name or bio is too long")]
    UserLimit(String),
}

/// An entry's place in its origin: (kind, id).
pub type EntryKey = (Kind, String);

impl Entry {
    pub fn kind(&self) -> Kind {
        match self {
            Entry::Post(_) => Kind::Post,
            Entry::User(_) => Kind::User,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Entry::Post(post) => &post.id,
            Entry::User(user) => &user.user_id,
        }
    }

    pub fn key(&self) -> EntryKey {
        (self.kind(), self.id().to_owned())
    }

    /// Refuses an entry past any limit (a feeder is a neighbour, not trusted to be
    /// well-behaved).
    pub fn check(&self) -> Result<(), InvalidEntry> {
        let id_ok = |id: &str| !id.is_empty() && id.len() <= ID_BYTES_MAX && id.bytes().all(|b| b.is_ascii_graphic());
        match self {
            Entry::Post(post) => {
                if !id_ok(&post.id) || !id_ok(&post.author_id) || !post.media.iter().all(|id| id_ok(id)) {
                    return Err(InvalidEntry::PostId(post.id.clone()));
                }
                text::check_handle(&post.author_handle)
                    .map_err(|reason| InvalidEntry::PostHandle(post.id.clone(), reason))?;
                if post.caption.chars().count() > CAPTION_CHARS_MAX
                    || post.media.len() > MEDIA_PER_POST_MAX
                    || post.tags.len() > text::TAGS_PER_POST_MAX
                    || post.tags.iter().any(|tag| tag.is_empty() || tag.chars().count() > 40)
                {
                    return Err(InvalidEntry::PostLimit(post.id.clone()));
                }
            }
            Entry::User(user) => {
                if !id_ok(&user.user_id) {
                    return Err(InvalidEntry::UserId(user.user_id.clone()));
                }
                text::check_handle(&user.handle)
                    .map_err(|reason| InvalidEntry::UserHandle(user.user_id.clone(), reason))?;
                if user.display_name.chars().count() > DISPLAY_NAME_CHARS_MAX
                    || user.bio.chars().count() > BIO_CHARS_MAX
                {
                    return Err(InvalidEntry::UserLimit(user.user_id.clone()));
                }
            }
        }
        Ok(())
    }

    /// Search terms of a post (the local index's terms, `core::text`); none for users,
    /// who are found by handle.
    pub fn terms(&self) -> Vec<String> {
        match self {
            Entry::Post(post) => text::index_terms(&post.caption, &post.tags),
            Entry::User(_) => Vec::new(),
        }
    }

    /// The content hash both ends compute alike: the origin's region and the entry.
    pub fn hash(&self, origin_region: &str) -> u64 {
        let mut hasher = Sha256::new();
        hasher.update(b"edgenode-search-entry/1\0");
        hasher.update(origin_region.as_bytes());
        hasher.update(b"\0");
        hasher.update(serde_json::to_vec(self).expect("entries serialize"));
        u64::from_be_bytes(hasher.finalize()[..8].try_into().expect("8 bytes"))
    }
}

/// What an origin holds, in two numbers: equal digests mean equal entries (up to a
/// 64-bit collision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub count: u64,
    pub xor: u64,
}

impl Digest {
    pub fn add(&mut self, hash: u64) {
        self.count += 1;
        self.xor ^= hash;
    }

    pub fn remove(&mut self, hash: u64) {
        self.count = self.count.saturating_sub(1);
        self.xor ^= hash;
    }

    pub fn of<'a>(hashes: impl IntoIterator<Item = &'a u64>) -> Digest {
        let mut digest = Digest::default();
        for hash in hashes {
            digest.add(*hash);
        }
        digest
    }
}

/// What changed between the hashes a feeder last sent and the entries it holds now:
/// (entries to put, keys to delete).
pub fn changes(
    last_sent: &BTreeMap<EntryKey, u64>,
    current: &BTreeMap<EntryKey, (u64, Entry)>,
) -> (Vec<Entry>, Vec<EntryKey>) {
    let upserts = current
        .iter()
        .filter(|(key, (hash, _))| last_sent.get(*key) != Some(hash))
        .map(|(_, (_, entry))| entry.clone())
        .collect();
    let deletes = last_sent.keys().filter(|key| !current.contains_key(*key)).cloned().collect();
    (upserts, deletes)
}

/// A public post by "ada" (user "u1"), for tests here and in the index store.
#[cfg(test)]
pub(crate) fn sample_post(id: &str, caption: &str) -> Entry {
    Entry::Post(PublicPost {
        id: id.to_owned(),
        author_id: "u1".to_owned(),
        author_handle: "ada".to_owned(),
        caption: caption.to_owned(),
        tags: text::hashtags(caption),
        media: Vec::new(),
        created_at: 1,
    })
}

// ----- answers -----

/// Posts without repeats (first one wins), newest id first, at most `limit`.
pub fn merge_posts(posts: Vec<Value>, limit: usize) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut posts: Vec<Value> =
        posts.into_iter().filter(|post| seen.insert(post["id"].as_str().unwrap_or_default().to_owned())).collect();
    posts.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    posts.truncate(limit);
    posts
}

/// Users without repeats (first one wins), at most `limit`.
pub fn merge_users(users: Vec<Value>, limit: usize) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut users: Vec<Value> =
        users.into_iter().filter(|user| seen.insert(user["user_id"].as_str().unwrap_or_default().to_owned())).collect();
    users.truncate(limit);
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merged_answers_have_no_repeats_and_newest_first() {
        let posts =
            vec![json!({"id": "b", "n": 1}), json!({"id": "c"}), json!({"id": "b", "n": 2}), json!({"id": "a"})];
        let merged = merge_posts(posts, 2);
        assert_eq!(merged, vec![json!({"id": "c"}), json!({"id": "b", "n": 1})]);
    }

    fn post(id: &str, caption: &str) -> Entry {
        sample_post(id, caption)
    }

    #[test]
    fn hashes_change_with_content_and_region() {
        let a = post("p1", "the harbour");
        assert_eq!(a.hash("earth/x"), post("p1", "the harbour").hash("earth/x"));
        assert_ne!(a.hash("earth/x"), post("p1", "the harbour!").hash("earth/x"));
        assert_ne!(a.hash("earth/x"), a.hash("earth/y"));
    }

    #[test]
    fn digests_are_order_free_and_undo() {
        let mut digest = Digest::of(&[1, 2, 3]);
        assert_eq!(digest, Digest::of(&[3, 1, 2]));
        digest.remove(2);
        assert_eq!(digest, Digest::of(&[1, 3]));
    }

    #[test]
    fn changes_put_what_is_new_or_changed_and_delete_what_is_gone() {
        let entries = [post("p1", "one"), post("p2", "two"), post("p3", "three")];
        let current: BTreeMap<EntryKey, (u64, Entry)> =
            entries.iter().map(|entry| (entry.key(), (entry.hash("r"), entry.clone()))).collect();
        let mut last_sent: BTreeMap<EntryKey, u64> = BTreeMap::new();
        last_sent.insert((Kind::Post, "p1".into()), entries[0].hash("r"));
        last_sent.insert((Kind::Post, "p2".into()), 7);
        last_sent.insert((Kind::Post, "gone".into()), 9);
        let (upserts, deletes) = changes(&last_sent, &current);
        assert_eq!(upserts, vec![entries[1].clone(), entries[2].clone()]);
        assert_eq!(deletes, vec![(Kind::Post, "gone".to_owned())]);
    }

    #[test]
    fn entries_past_a_limit_are_refused() {
        assert!(post("p1", "fine").check().is_ok());
        assert!(post("p1", &"x".repeat(CAPTION_CHARS_MAX + 1)).check().is_err());
        assert!(post(&"p".repeat(ID_BYTES_MAX + 1), "long id").check().is_err());
        let bad_handle = Entry::User(PublicUser {
            user_id: "u".into(),
            handle: "Not A Handle".into(),
            display_name: String::new(),
            bio: String::new(),
        });
        assert_eq!(
            bad_handle.check().unwrap_err().to_string(),
            "user \"u\": a handle is 3 to 30 characters of a-z, 0-9 and _"
        );
    }
}
