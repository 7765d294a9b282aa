//! Media replication, the store's side: which media items this node holds owners of
//! (replicated `MediaOwner` records) but not the files of, and storing an item fetched
//! from a sibling once its files are checked against the description that came with it.
//!
//! Fetched media keep the invariant of uploads: the three blob files are durable before
//! the `media` row commits, so a crash in between leaves only orphans that `Store::open`
//! removes. The `media` row is local (never replicated), so it is written in a plain
//! transaction, not through `Store::write`.

use std::sync::atomic::Ordering;

use redb::ReadableTable;
use sha2::{Digest, Sha256};

use super::blobs::is_sha256_hex;
use super::{decode, encode, hex, BlobKind, MediaInfo, Store, StoreError, StoreResult, KEY_MAX, MEDIA, MEDIA_OWNERS};
use crate::core::model::{MediaOwner, Record};
use crate::os;

impl Store {
    /// Up to `limit` media ids, in order, that have a live owner here but no `media`
    /// row (so no files): what this node should fetch from a sibling.
    pub fn missing_media(&self, limit: usize) -> StoreResult<Vec<String>> {
        self.missing_media_after(None, limit)
    }

    /// As `missing_media`, starting strictly after the media id `after`, so a caller
    /// can walk every missing item even when the first ones cannot be fetched.
    pub fn missing_media_after(&self, after: Option<&str>, limit: usize) -> StoreResult<Vec<String>> {
        let txn = self.db.begin_read()?;
        let owners = txn.open_table(MEDIA_OWNERS)?;
        let media = txn.open_table(MEDIA)?;
        // `KEY_MAX` sorts after every user id, so the range starts past every owner of `after`.
        let range = match after {
            Some(after) => owners.range((after, KEY_MAX)..)?,
            None => owners.range::<(&str, &str)>(..)?,
        };
        let mut missing = Vec::new();
        // The media id whose question "is it missing?" is settled: its rows are adjacent.
        let mut settled: Option<String> = None;
        for entry in range {
            if missing.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let (media_id, _) = key.value();
            if settled.as_deref() == Some(media_id) {
                continue;
            }
            if decode::<Record<MediaOwner>>(value.value())?.body.is_none() {
                continue; // a tombstone; another owner of the same item may be live
            }
            settled = Some(media_id.to_owned());
            // An id that is not a hash names no file; it cannot be fetched (and replication
            // should not have admitted it).
            if is_sha256_hex(media_id) && media.get(media_id)?.is_none() {
                missing.push(media_id.to_owned());
            }
        }
        Ok(missing)
    }

    pub fn missing_media_count(&self) -> StoreResult<u64> {
        Ok(self.missing_media(usize::MAX)?.len() as u64)
    }

    /// Stores a media item fetched from a sibling: checks every file's length and
    /// SHA-256 against `info` (`StoreError::Corrupt` when one differs; nothing is
    /// written then), writes the files durably, then commits the `media` row. Does
    /// nothing when the item is already here.
    pub fn put_fetched_media(
        &self,
        info: &MediaInfo,
        original: &[u8],
        display: &[u8],
        thumb: &[u8],
    ) -> StoreResult<()> {
        let media_id = info.media_id.as_str();
        if !is_sha256_hex(media_id) {
            return Err(StoreError::Corrupt(format!("fetched media id {media_id:?} is not a SHA-256 hex digest")));
        }
        let blobs = [(BlobKind::Original, original), (BlobKind::Display, display), (BlobKind::Thumb, thumb)];
        for (kind, bytes) in blobs {
            let expected = info.blob(kind);
            if bytes.len() as u64 != expected.bytes {
                return Err(StoreError::Corrupt(format!(
                    "fetched media {media_id}: the {} file has {} bytes, its description says {}",
                    kind.name(),
                    bytes.len(),
                    expected.bytes
                )));
            }
            let sha256 = hex(&Sha256::digest(bytes));
            if sha256 != expected.sha256 {
                return Err(StoreError::Corrupt(format!(
                    "fetched media {media_id}: the {} file has SHA-256 {sha256}, its description says {}",
                    kind.name(),
                    expected.sha256
                )));
            }
        }
        if self.media(media_id)?.is_some() {
            return Ok(());
        }
        self.blobs.write_durable_set(media_id, &blobs, u64::from_le_bytes(os::random_bytes()))?;
        let txn = self.db.begin_write()?;
        let is_new = {
            let mut media = txn.open_table(MEDIA)?;
            // Checked again inside the transaction: another fetch of the same item may
            // have committed since (it wrote the same files).
            let is_new = media.get(media_id)?.is_none();
            if is_new {
                media.insert(media_id, encode(info).as_slice())?;
            }
            is_new
        };
        txn.commit()?;
        if is_new {
            let bytes = info.original.bytes + info.display.bytes + info.thumb.bytes;
            self.blob_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Admission, BlobInfo};
    use super::*;
    use crate::core::hlc::Timestamp;
    use crate::core::model::{NodeId, Version};

    /// A data directory removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(name: &str) -> TempDir {
        let suffix = u64::from_le_bytes(os::random_bytes());
        TempDir(std::env::temp_dir().join(format!("edgenode-media-sync-{name}-{suffix:016x}")))
    }

    fn blob_info(bytes: &[u8]) -> BlobInfo {
        BlobInfo { width: 1, height: 1, bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) }
    }

    const ORIGINAL: &[u8] = b"original bytes";
    const DISPLAY: &[u8] = b"display bytes";
    const THUMB: &[u8] = b"thumb";

    fn media_info(media_id: &str) -> MediaInfo {
        MediaInfo {
            media_id: media_id.to_owned(),
            mime: "image/jpeg".to_owned(),
            width: 1,
            height: 1,
            blurhash: String::new(),
            original: blob_info(ORIGINAL),
            display: blob_info(DISPLAY),
            thumb: blob_info(THUMB),
            created_at: 1,
        }
    }

    /// An owner row as replication leaves it: no `media` row, no files. Written raw:
    /// the scan reads only the `media_owners` and `media` tables.
    fn replicated_owner(store: &Store, media_id: &str, user_id: &str, live: bool) {
        let version = Version { at: Timestamp(1 << 20), origin: NodeId(7) };
        let record = if live {
            Record::live(version, MediaOwner { since: 1 })
        } else {
            Record::<MediaOwner>::tombstone(version)
        };
        let txn = store.db.begin_write().unwrap();
        txn.open_table(MEDIA_OWNERS).unwrap().insert((media_id, user_id), encode(&record).as_slice()).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn missing_media_lists_live_owned_items_without_a_row_once_each() {
        let dir = temp_dir("missing");
        let store = &Store::open(&dir.0).unwrap();
        let user = store.create_user("ada", "h".into(), Admission::Claim).unwrap();
        let (a, b, c, d) = ("a".repeat(64), "b".repeat(64), "c".repeat(64), "d".repeat(64));
        replicated_owner(store, &a, &user.user_id, true);
        replicated_owner(store, &a, "00ff", true);
        replicated_owner(store, &b, &user.user_id, false);
        replicated_owner(store, &c, "00ff", false);
        replicated_owner(store, &c, &user.user_id, true);
        replicated_owner(store, &d, &user.user_id, true);
        replicated_owner(store, "not-a-hash", &user.user_id, true);
        assert_eq!(store.missing_media(10).unwrap(), vec![a.clone(), c.clone(), d.clone()]);
        assert_eq!(store.missing_media(2).unwrap(), vec![a.clone(), c.clone()]);
        assert_eq!(store.missing_media_after(Some(&a), 10).unwrap(), vec![c.clone(), d.clone()]);
        assert_eq!(store.missing_media_count().unwrap(), 3);

        store.put_fetched_media(&media_info(&c), ORIGINAL, DISPLAY, THUMB).unwrap();
        assert_eq!(store.missing_media(10).unwrap(), vec![a, d]);
        assert_eq!(store.missing_media_count().unwrap(), 2);
    }

    #[test]
    fn fetched_media_is_checked_stored_durably_and_counted_once() {
        let dir = temp_dir("put");
        let store = Store::open(&dir.0).unwrap();
        let media_id = "e".repeat(64);
        let info = media_info(&media_id);
        let used_before = store.blob_bytes.load(Ordering::Relaxed);

        let wrong_hash = b"DISPLAY bytes";
        let refused = store.put_fetched_media(&info, ORIGINAL, wrong_hash, THUMB);
        assert!(matches!(refused, Err(StoreError::Corrupt(ref message)) if message.contains("display")));
        let refused = store.put_fetched_media(&info, ORIGINAL, DISPLAY, b"thumb!");
        assert!(matches!(refused, Err(StoreError::Corrupt(ref message)) if message.contains("bytes")));
        let mut bad_id = info.clone();
        bad_id.media_id = "../etc".to_owned();
        assert!(matches!(store.put_fetched_media(&bad_id, ORIGINAL, DISPLAY, THUMB), Err(StoreError::Corrupt(_))));
        assert!(store.media(&media_id).unwrap().is_none());
        assert!(!store.blobs.exists(&media_id, BlobKind::Original), "nothing is written for a refused item");

        store.put_fetched_media(&info, ORIGINAL, DISPLAY, THUMB).unwrap();
        store.put_fetched_media(&info, ORIGINAL, DISPLAY, THUMB).unwrap();
        assert_eq!(store.media(&media_id).unwrap(), Some(info.clone()));
        assert_eq!(store.blobs.read(&media_id, BlobKind::Display).unwrap(), DISPLAY);
        let stored_bytes = (ORIGINAL.len() + DISPLAY.len() + THUMB.len()) as u64;
        assert_eq!(store.blob_bytes.load(Ordering::Relaxed), used_before + stored_bytes);

        // The row and files survive a restart (the orphan sweep keeps them).
        drop(store);
        let reopened = Store::open(&dir.0).unwrap();
        assert_eq!(reopened.media(&media_id).unwrap(), Some(info));
        assert_eq!(reopened.blobs.read(&media_id, BlobKind::Thumb).unwrap(), THUMB);
    }
}
