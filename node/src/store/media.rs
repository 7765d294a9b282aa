//! Media rows (what is known of each stored photo, derived from its blob files) and
//! their owners (replicated `MediaOwner` records); the files themselves are in
//! `blobs`, and owners whose files have not arrived yet in `media_sync`.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{decode, encode, live, pair_key, BlobKind, Store, StoreResult, KEY_MAX, MEDIA, MEDIA_OWNERS, MEDIA_POSTS};
use crate::core::model::{MediaOwner, Post, Record};
use crate::core::replication::{RecordKey, Table};

/// What we know about a stored media item; local, derived from the blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub media_id: String,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub blurhash: String,
    pub original: BlobInfo,
    pub display: BlobInfo,
    pub thumb: BlobInfo,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// SHA-256 hex of the stored file: the strong ETag.
    pub sha256: String,
}

impl MediaInfo {
    pub fn blob(&self, kind: BlobKind) -> &BlobInfo {
        match kind {
            BlobKind::Original => &self.original,
            BlobKind::Display => &self.display,
            BlobKind::Thumb => &self.thumb,
        }
    }
}

impl Store {
    /// Bytes of the files of every media item the database knows of (`blob_bytes` at open).
    pub(super) fn sum_blob_bytes(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let mut total = 0;
        for entry in txn.open_table(MEDIA)?.iter()? {
            let info: MediaInfo = decode(entry?.1.value())?;
            total += info.original.bytes + info.display.bytes + info.thumb.bytes;
        }
        Ok(total)
    }

    pub fn media(&self, media_id: &str) -> StoreResult<Option<MediaInfo>> {
        let txn = self.db.begin_read()?;
        let media = txn.open_table(MEDIA)?;
        let info = media.get(media_id)?;
        info.map(|bytes| decode(bytes.value())).transpose()
    }

    /// Records a media item whose blob files are already durable, owned by `owner`.
    /// Returns false when the item was already known (only the owner was added).
    pub fn put_media(&self, info: &MediaInfo, owner: &str) -> StoreResult<bool> {
        let is_new = self.write(|tx| {
            let version = tx.version();
            let mut media = tx.txn.open_table(MEDIA)?;
            let is_new = media.get(info.media_id.as_str())?.is_none();
            if is_new {
                media.insert(info.media_id.as_str(), encode(info).as_slice())?;
            }
            let owned = match tx.txn.open_table(MEDIA_OWNERS)?.get((info.media_id.as_str(), owner))? {
                Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
                None => false,
            };
            if !owned {
                let record = Record::live(version, MediaOwner { since: version.at.physical_ms() });
                let key = RecordKey::new(Table::MediaOwner, pair_key(&info.media_id, owner));
                tx.write_record(owner, &key, &record)?;
            }
            Ok(is_new)
        })?;
        if is_new {
            let bytes = info.original.bytes + info.display.bytes + info.thumb.bytes;
            self.blob_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(is_new)
    }

    /// Replaces the metadata of a known media item (after regenerating a derivative).
    pub fn update_media(&self, info: &MediaInfo) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(MEDIA)?.insert(info.media_id.as_str(), encode(info).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn owns_media(&self, media_id: &str, user_id: &str) -> StoreResult<bool> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let owner = owners.get((media_id, user_id))?;
        Ok(match owner {
            Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
            None => false,
        })
    }

    /// Live posts that carry a media item.
    pub fn posts_with_media(&self, media_id: &str) -> StoreResult<Vec<Post>> {
        let post_ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let media_posts = txn.open_table(MEDIA_POSTS)?;
            let mut post_ids = Vec::new();
            for entry in media_posts.range((media_id, "")..(media_id, KEY_MAX))? {
                post_ids.push(entry?.0.value().1.to_owned());
            }
            post_ids
        };
        let mut posts = Vec::new();
        for post_id in post_ids {
            posts.extend(self.post(&post_id)?);
        }
        Ok(posts)
    }
}
