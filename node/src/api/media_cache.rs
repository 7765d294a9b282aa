//! Photos anyone may see, answered from memory without a thread-pool hop or a
//! database transaction: the hottest path a phone exercises (a feed page is dozens of
//! thumbnails, each beside its author's avatar). An entry is a proof, made by the full
//! visibility check, that the variant is visible to anyone; it holds while the store's
//! visibility epoch is unchanged (any committed replicated write moves it), so a post
//! made private or deleted, or an avatar replaced, is never served from here again.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::store::BlobKind;

/// What the cache holds of a photo: its thumb and display variants and the avatar
/// square made of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Thumb,
    Display,
    Avatar,
}

impl Cached {
    /// The cached form of a stored variant; originals are never cached.
    pub fn variant(kind: BlobKind) -> Option<Cached> {
        match kind {
            BlobKind::Thumb => Some(Cached::Thumb),
            BlobKind::Display => Some(Cached::Display),
            BlobKind::Original => None,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }

    /// Variants are served with ranges (`download`); avatars whole (`avatar`).
    fn offers_ranges(self) -> bool {
        self != Cached::Avatar
    }
}

/// Variants larger than this are read from disk each time (a display image of a few
/// hundred kB is fetched once per post view, not dozens of times per page).
pub const CACHED_VARIANT_BYTES_MAX: usize = 512 * 1024;

pub struct PublicMediaCache {
    entries: Mutex<Entries>,
    bytes_max: usize,
}

#[derive(Default)]
struct Entries {
    /// By media id, then `Cached::slot` (looked up by `&str`, no allocation).
    by_media: HashMap<String, [Option<Entry>; 3]>,
    bytes: usize,
    /// Bumped on every hit: the entry used least recently goes first when full.
    uses: u64,
}

struct Entry {
    body: Bytes,
    etag: HeaderValue,
    content_type: &'static str,
    epoch: u64,
    last_use: u64,
}

impl PublicMediaCache {
    pub fn new(bytes_max: usize) -> PublicMediaCache {
        PublicMediaCache { entries: Mutex::new(Entries::default()), bytes_max }
    }

    /// The answer for a `GET`/`HEAD` of a variant proved public under `epoch`, if
    /// cached: 200 with the bytes, or 304 when `if_none_match` names its ETag.
    pub fn answer(
        &self,
        method: &Method,
        media_id: &str,
        cached: Cached,
        if_none_match: Option<&str>,
        epoch: u64,
    ) -> Option<Response<Bytes>> {
        let mut entries = crate::locking::lock(&self.entries);
        entries.uses += 1;
        let uses = entries.uses;
        let entry = entries.by_media.get_mut(media_id)?[cached.slot()].as_mut()?;
        if entry.epoch != epoch {
            return None;
        }
        entry.last_use = uses;
        let mut builder = Response::builder()
            .header(header::ETAG, entry.etag.clone())
            .header(header::CACHE_CONTROL, super::media::MEDIA_CACHE_CONTROL);
        if cached.offers_ranges() {
            builder = builder.header(header::ACCEPT_RANGES, "bytes");
        }
        let builder = builder.header(header::CONTENT_TYPE, entry.content_type);
        let etag = entry.etag.to_str().unwrap_or_default();
        if if_none_match.is_some_and(|tags| super::etag::matches(tags, etag)) {
            return Some(builder.status(StatusCode::NOT_MODIFIED).body(Bytes::new()).expect("valid response"));
        }
        let body = if method == Method::HEAD { Bytes::new() } else { entry.body.clone() };
        let builder = builder.header(header::CONTENT_LENGTH, entry.body.len());
        Some(builder.status(StatusCode::OK).body(body).expect("valid response"))
    }

    /// Remembers that `cached` of `media_id` was proved visible to anyone under `epoch`.
    pub fn insert(
        &self,
        media_id: &str,
        cached: Cached,
        body: Bytes,
        etag: HeaderValue,
        content_type: &'static str,
        epoch: u64,
    ) {
        if body.len() > CACHED_VARIANT_BYTES_MAX || body.len() > self.bytes_max {
            return;
        }
        let index = cached.slot();
        let mut entries = crate::locking::lock(&self.entries);
        if let Some(old) = entries.by_media.get_mut(media_id).and_then(|variants| variants[index].take()) {
            entries.bytes -= old.body.len();
        }
        while entries.bytes + body.len() > self.bytes_max {
            let oldest = entries
                .by_media
                .iter()
                .flat_map(|(id, variants)| variants.iter().enumerate().map(move |(index, entry)| (id, index, entry)))
                .filter_map(|(id, index, entry)| Some((entry.as_ref()?.last_use, id.clone(), index)))
                .min();
            let Some((_, id, index)) = oldest else { break };
            let variants = entries.by_media.get_mut(&id).expect("the id was just found");
            let removed = variants[index].take().expect("the entry was just found");
            if variants.iter().all(Option::is_none) {
                entries.by_media.remove(&id);
            }
            entries.bytes -= removed.body.len();
        }
        entries.bytes += body.len();
        let last_use = entries.uses;
        let variants = entries.by_media.entry(media_id.to_owned()).or_default();
        variants[index] = Some(Entry { body, etag, content_type, epoch, last_use });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_only_under_the_epoch_it_was_proved_in() {
        let cache = PublicMediaCache::new(1024);
        let etag = HeaderValue::from_static("\"abc\"");
        cache.insert("m1", Cached::Thumb, Bytes::from_static(b"jpeg"), etag, "image/jpeg", 7);
        let hit = cache.answer(&Method::GET, "m1", Cached::Thumb, None, 7).unwrap();
        assert_eq!(hit.body().as_ref(), b"jpeg");
        assert!(cache.answer(&Method::GET, "m1", Cached::Thumb, None, 8).is_none());
        assert!(cache.answer(&Method::GET, "m1", Cached::Display, None, 7).is_none());
        let not_modified = cache.answer(&Method::GET, "m1", Cached::Thumb, Some("\"abc\""), 7).unwrap();
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        let head = cache.answer(&Method::HEAD, "m1", Cached::Thumb, None, 7).unwrap();
        assert!(head.body().is_empty());
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "4");
    }

    #[test]
    fn a_photos_avatar_is_its_own_entry_and_offers_no_ranges() {
        let cache = PublicMediaCache::new(1024);
        let etag = |tag: &'static str| HeaderValue::from_static(tag);
        cache.insert("m1", Cached::Thumb, Bytes::from_static(b"thumb"), etag("\"t\""), "image/jpeg", 3);
        cache.insert("m1", Cached::Avatar, Bytes::from_static(b"square"), etag("\"a\""), "image/jpeg", 3);
        let thumb = cache.answer(&Method::GET, "m1", Cached::Thumb, None, 3).unwrap();
        assert_eq!(thumb.body().as_ref(), b"thumb");
        assert_eq!(thumb.headers()[header::ACCEPT_RANGES], "bytes");
        let avatar = cache.answer(&Method::GET, "m1", Cached::Avatar, None, 3).unwrap();
        assert_eq!(avatar.body().as_ref(), b"square");
        assert_eq!(avatar.headers()[header::ETAG], "\"a\"");
        assert!(avatar.headers().get(header::ACCEPT_RANGES).is_none(), "the avatar route serves no ranges");
        assert!(cache.answer(&Method::GET, "m1", Cached::Avatar, None, 4).is_none(), "a new epoch drops the proof");
    }

    #[test]
    fn the_least_recently_used_entries_leave_when_full() {
        let cache = PublicMediaCache::new(10);
        let etag = || HeaderValue::from_static("\"e\"");
        cache.insert("a", Cached::Thumb, Bytes::from_static(b"aaaa"), etag(), "image/jpeg", 1);
        cache.insert("b", Cached::Thumb, Bytes::from_static(b"bbbb"), etag(), "image/jpeg", 1);
        assert!(cache.answer(&Method::GET, "a", Cached::Thumb, None, 1).is_some());
        cache.insert("c", Cached::Thumb, Bytes::from_static(b"cccc"), etag(), "image/jpeg", 1);
        assert!(cache.answer(&Method::GET, "b", Cached::Thumb, None, 1).is_none());
        assert!(cache.answer(&Method::GET, "a", Cached::Thumb, None, 1).is_some());
        assert!(cache.answer(&Method::GET, "c", Cached::Thumb, None, 1).is_some());
        // Larger than the whole cache: not kept.
        cache.insert("d", Cached::Thumb, Bytes::from(vec![0; 11]), etag(), "image/jpeg", 1);
        assert!(cache.answer(&Method::GET, "d", Cached::Thumb, None, 1).is_none());
    }
}
