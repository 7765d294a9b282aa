//! Media rows (what is known of each stored photo, derived from its blob files),
//! their owners (replicated `MediaOwner` records) and the bytes each user owns (for
//! quotas); the files themselves are in `blobs`, and owners whose files have not
//! arrived yet in `media_sync`.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, live, pair_key, BlobKind, Store, StoreResult, KEY_MAX, MEDIA, MEDIA_OWNERS, MEDIA_POSTS, META,
};
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
    /// SHA-256 hex of the stored file; its strong ETag is made from it (api/etag.rs).
    pub sha256: String,
}

/// Bytes of media each user owns (original + display + thumb of every item they own,
/// charged to every owner whoever uploaded it first), kept by `put_media` so a quota
/// check is one lookup, not a scan. Local: counted from this node's uploads, plus
/// whatever media rows existed when the counter was first built.
pub(super) const USER_STORAGE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("user_storage_bytes");
/// In `META` once `USER_STORAGE` has been built from the owners already stored.
const USER_STORAGE_COUNTED: &str = "user_storage_counted";

impl MediaInfo {
    /// Bytes of its three files: what owning it costs a user.
    pub fn total_bytes(&self) -> u64 {
        self.original.bytes + self.display.bytes + self.thumb.bytes
    }

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
            total += info.total_bytes();
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
    /// Returns whether `owner` is new to it (false only when they owned it already),
    /// so the answer to an upload never tells whether someone else holds the same
    /// bytes. Each new owner is charged the item's bytes in their storage counter.
    pub fn put_media(&self, info: &MediaInfo, owner: &str) -> StoreResult<bool> {
        let (media_is_new, owner_is_new) = self.write(|tx| put_media_in(tx, info, owner))?;
        if media_is_new {
            self.media_bytes_added(info);
        }
        Ok(owner_is_new)
    }

    /// Counts a media item that `put_media_in` found new, once its transaction committed.
    pub(super) fn media_bytes_added(&self, info: &MediaInfo) {
        self.blob_bytes.fetch_add(info.total_bytes(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes of media `user_id` owns (see `USER_STORAGE`).
    pub fn user_storage_bytes(&self, user_id: &str) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        let counted = txn.open_table(META)?.get(USER_STORAGE_COUNTED)?.is_some();
        if counted {
            return Ok(txn.open_table(USER_STORAGE)?.get(user_id)?.map_or(0, |bytes| bytes.value()));
        }
        // Not built yet (no upload since this version started): count this user now.
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let media = txn.open_table(MEDIA)?;
        let mut used = 0;
        for entry in owners.iter()? {
            let (key, value) = entry?;
            let (media_id, owner) = key.value();
            if owner == user_id && live::<MediaOwner>(value.value())?.is_some() {
                if let Some(info) = media.get(media_id)? {
                    used += decode::<MediaInfo>(info.value())?.total_bytes();
                }
            }
        }
        Ok(used)
    }

    /// Replaces the metadata of a known media item (after regenerating a derivative).
    pub fn update_media(&self, info: &MediaInfo) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(MEDIA)?.insert(info.media_id.as_str(), encode(info).as_slice())?;
        txn.commit()?;
        self.visibility_changed();
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

/// Keys in `META` of media rows removed with their last live owner, whose files
/// are still to go: `<prefix><media id>` → the row's bytes (u64 LE), so the count of
/// stored bytes drops when they do.
const UNOWNED_MEDIA_PREFIX: &str = "media_unowned/";

/// Called by `MediaOwner`'s `update_indexes` in the transaction that writes an owner
/// record (locally or applied from a sibling): when a live owner becomes a tombstone
/// and the item has no other live owner, its media row goes in this transaction (a
/// row implies complete files, so the row before the files) and a marker in `META`
/// asks `Store::remove_unowned_media_files` to remove the files after the commit.
pub(super) fn owner_gone_check(
    txn: &redb::WriteTransaction,
    key: &str,
    old: Option<&MediaOwner>,
    new: Option<&MediaOwner>,
) -> StoreResult<()> {
    if old.is_none() || new.is_some() {
        return Ok(());
    }
    let Some((media_id, gone_owner)) = super::split_pair_key(key) else { return Ok(()) };
    {
        let owners = txn.open_table(MEDIA_OWNERS)?;
        for entry in owners.range((media_id, "")..(media_id, KEY_MAX))? {
            let (owner_key, value) = entry?;
            if owner_key.value().1 != gone_owner && live::<MediaOwner>(value.value())?.is_some() {
                return Ok(());
            }
        }
    }
    let removed = {
        let mut media = txn.open_table(MEDIA)?;
        let removed = media.remove(media_id)?;
        removed.map(|bytes| decode::<MediaInfo>(bytes.value())).transpose()?
    };
    if let Some(info) = removed {
        let marker = format!("{UNOWNED_MEDIA_PREFIX}{media_id}");
        txn.open_table(META)?.insert(marker.as_str(), info.total_bytes().to_le_bytes().as_slice())?;
    }
    Ok(())
}

impl Store {
    /// Removes the files of media items whose last owner went (see `owner_gone_check`)
    /// and answers how many items it removed. Run after every commit that may have
    /// removed such a row: the deleting node's and every replica's. A row made again
    /// since (an owner came back) keeps its files. Idempotent: a file already gone is
    /// no error, so a crash before the marker goes only repeats the removal.
    pub fn remove_unowned_media_files(&self) -> StoreResult<usize> {
        let prefix_end = format!("{UNOWNED_MEDIA_PREFIX}{KEY_MAX}");
        let pending: Vec<(String, u64)> = {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let mut pending = Vec::new();
            for entry in meta.range(UNOWNED_MEDIA_PREFIX..prefix_end.as_str())? {
                let (key, value) = entry?;
                let media_id = key.value().trim_start_matches(UNOWNED_MEDIA_PREFIX).to_owned();
                pending.push((media_id, super::read_u64(value.value())));
            }
            pending
        };
        if pending.is_empty() {
            return Ok(0);
        }
        // A write transaction: no upload commits a row for these items meanwhile.
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        {
            let media = txn.open_table(MEDIA)?;
            let mut meta = txn.open_table(META)?;
            for (media_id, bytes) in &pending {
                if media.get(media_id.as_str())?.is_none() && super::blobs::is_sha256_hex(media_id) {
                    let paths = [BlobKind::Original, BlobKind::Display, BlobKind::Thumb]
                        .map(|kind| self.blobs.path(media_id, kind))
                        .into_iter()
                        .chain([self.blobs.avatar_path(media_id)]);
                    for path in paths {
                        match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                    let _ = self.blob_bytes.fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |stored| Some(stored.saturating_sub(*bytes)),
                    );
                    removed += 1;
                }
                meta.remove(format!("{UNOWNED_MEDIA_PREFIX}{media_id}").as_str())?;
            }
        }
        txn.commit()?;
        if removed > 0 {
            tracing::info!(removed, "removed the files of photos nobody owns any more");
        }
        Ok(removed)
    }
}

/// `put_media`'s writes inside a transaction `tx` (an import adds many at once):
/// (whether the media row is new, whether `owner` is new to it). Call
/// `media_bytes_added` for each new row once `tx` has committed.
pub(super) fn put_media_in(tx: &mut super::Tx<'_>, info: &MediaInfo, owner: &str) -> StoreResult<(bool, bool)> {
    count_user_storage(tx.txn)?;
    let version = tx.version();
    let media_is_new = {
        let mut media = tx.txn.open_table(MEDIA)?;
        let media_is_new = media.get(info.media_id.as_str())?.is_none();
        if media_is_new {
            media.insert(info.media_id.as_str(), encode(info).as_slice())?;
        }
        media_is_new
    };
    let owned = match tx.txn.open_table(MEDIA_OWNERS)?.get((info.media_id.as_str(), owner))? {
        Some(bytes) => live::<MediaOwner>(bytes.value())?.is_some(),
        None => false,
    };
    if !owned {
        let record = Record::live(version, MediaOwner { since: version.at.physical_ms() });
        let key = RecordKey::new(Table::MediaOwner, pair_key(&info.media_id, owner));
        tx.write_record(owner, &key, &record)?;
        let mut storage = tx.txn.open_table(USER_STORAGE)?;
        let used = storage.get(owner)?.map_or(0, |bytes| bytes.value());
        storage.insert(owner, used + info.total_bytes())?;
    }
    Ok((media_is_new, !owned))
}

/// Builds `USER_STORAGE` from the owners already stored, once per database (the
/// first upload after an upgrade pays one scan; every later one a lookup).
fn count_user_storage(txn: &redb::WriteTransaction) -> StoreResult<()> {
    let mut meta = txn.open_table(META)?;
    if meta.get(USER_STORAGE_COUNTED)?.is_some() {
        return Ok(());
    }
    let mut used_by_user = std::collections::HashMap::<String, u64>::new();
    {
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let media = txn.open_table(MEDIA)?;
        for entry in owners.iter()? {
            let (key, value) = entry?;
            let (media_id, owner) = key.value();
            if live::<MediaOwner>(value.value())?.is_none() {
                continue;
            }
            if let Some(info) = media.get(media_id)? {
                *used_by_user.entry(owner.to_owned()).or_default() += decode::<MediaInfo>(info.value())?.total_bytes();
            }
        }
    }
    let mut storage = txn.open_table(USER_STORAGE)?;
    for (user_id, used) in &used_by_user {
        storage.insert(user_id.as_str(), used)?;
    }
    meta.insert(USER_STORAGE_COUNTED, [1u8].as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_dir;
    use crate::store::Admission;

    fn item(media_id: &str, bytes: u64) -> MediaInfo {
        crate::store::tests::media_info(media_id, bytes, "", 0)
    }

    #[test]
    fn every_new_owner_is_told_so_and_charged() {
        let dir = temp_dir("owners");
        let store = Store::open(&dir).unwrap();
        let ada = store.create_user("ada", "h".into(), Admission::Claim).unwrap().user_id;
        let bob = store.create_user("bob", "h".into(), Admission::Open).unwrap().user_id;
        let photo = item("aa", 100);
        assert!(store.put_media(&photo, &ada).unwrap(), "first upload: new owner");
        assert!(store.put_media(&photo, &bob).unwrap(), "the same bytes from another user: new owner too");
        assert!(!store.put_media(&photo, &bob).unwrap(), "only an owner's own repeat is not new");
        assert_eq!(store.user_storage_bytes(&ada).unwrap(), 300);
        assert_eq!(store.user_storage_bytes(&bob).unwrap(), 300, "charged whoever uploaded first");
        store.put_media(&item("bb", 10), &ada).unwrap();
        assert_eq!(store.user_storage_bytes(&ada).unwrap(), 330);
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.user_storage_bytes(&ada).unwrap(), 330, "the counter is stored");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
