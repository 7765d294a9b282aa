//! Media routes: content-addressed upload (coalesced per hash), download of
//! derivatives and originals with ETag, immutable caching and Range, and the square
//! avatar derivative of profile photos (made on demand).

use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::media_cache::{Cached, CACHED_VARIANT_BYTES_MAX};
use super::{header_value, shapes, Api, ApiError, ApiResult, Call, RequestBody, ResponseFile};
use crate::core::model::may_view;
use crate::media::Processed;
use crate::os;
use crate::store::blobs::is_sha256_hex;
use crate::store::{hex, BlobInfo, BlobKind, MediaInfo};

pub fn media_shape(info: &MediaInfo) -> shapes::Media {
    shapes::Media {
        id: info.media_id.clone(),
        width: info.width,
        height: info.height,
        blurhash: info.blurhash.clone(),
        mime: info.mime.clone(),
        variants: shapes::MediaVariants {
            thumb: shapes::Size { width: info.thumb.width, height: info.thumb.height },
            display: shapes::Size { width: info.display.width, height: info.display.height },
        },
    }
}

/// `PUT /api/v1/media/{sha256}` and `POST /api/v1/media`.
pub fn upload(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let owner = call.user()?.user_id.clone();
    let media_id = match &call.body {
        RequestBody::Memory(bytes) => hex(&Sha256::digest(bytes)),
        RequestBody::Spooled(spooled) => hex(spooled.sha256()),
    };
    if call.parts.method == Method::PUT {
        let claimed = call.param(0).to_ascii_lowercase();
        if !is_sha256_hex(&claimed) {
            return Err(ApiError::bad_request(
                "bad_media_id",
                "the path must end in the SHA-256 of the body as 64 hex digits",
            ));
        }
        if claimed != media_id {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "hash_mismatch",
                format!("the body's SHA-256 is {media_id}, not {claimed}; the upload was damaged or the hash is wrong"),
            ));
        }
    }
    api.admit_upload(call.user()?, call.body.len())?;
    let info = match api.store.media(&media_id)? {
        Some(info) => info,
        None => {
            let body = &call.body;
            let (result, coalesced) = api.media_work.run(media_id.clone(), || {
                // Only the upload that converts takes a turn (the others wait for it):
                // a batch uses every worker only while no other user waits, so another
                // user's photo is never stuck behind it.
                let _turn = api.conversion_turns.take(&owner);
                api.convert_and_store(&media_id, body)
            });
            if coalesced {
                api.metrics.media_coalesced_total.inc();
            }
            result?
        }
    };
    let is_new = api.store.put_media(&info, &owner)?;
    api.record_upload(&owner, call.body.len());
    shapes::answer(if is_new { StatusCode::CREATED } else { StatusCode::OK }, &media_shape(&info))
}

/// Each user's turns at converting: a user's first conversion always goes to the
/// gate at once; more of theirs go too (up to `per_user_max`, the worker count) only
/// while no other user waits for a turn. So one user's batch uses every worker, and
/// another user's photo is never stuck behind it. Waiters wait on their own blocking
/// threads, at most their upload tickets.
pub struct ConversionTurns {
    state: std::sync::Mutex<TurnState>,
    changed: std::sync::Condvar,
    per_user_max: usize,
}

#[derive(Default)]
struct TurnState {
    running: std::collections::HashMap<String, usize>,
    waiting: std::collections::HashMap<String, usize>,
}

impl TurnState {
    fn may_go(&self, user_id: &str, per_user_max: usize) -> bool {
        match self.running.get(user_id).copied().unwrap_or(0) {
            0 => true,
            running => running < per_user_max && self.waiting.keys().all(|waiting| waiting == user_id),
        }
    }

    fn add(counts: &mut std::collections::HashMap<String, usize>, user_id: &str, delta: isize) {
        let count = counts.entry(user_id.to_owned()).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            counts.remove(user_id);
        }
    }
}

/// A user's turn; given back when dropped.
pub struct ConversionTurn<'a> {
    turns: &'a ConversionTurns,
    user_id: String,
}

impl ConversionTurns {
    pub fn new(per_user_max: usize) -> ConversionTurns {
        ConversionTurns {
            state: std::sync::Mutex::new(TurnState::default()),
            changed: std::sync::Condvar::new(),
            per_user_max: per_user_max.max(1),
        }
    }

    /// Waits for a turn of `user_id`'s.
    pub fn take(&self, user_id: &str) -> ConversionTurn<'_> {
        let mut state = crate::locking::lock(&self.state);
        if !state.may_go(user_id, self.per_user_max) {
            TurnState::add(&mut state.waiting, user_id, 1);
            while !state.may_go(user_id, self.per_user_max) {
                state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            TurnState::add(&mut state.waiting, user_id, -1);
        }
        TurnState::add(&mut state.running, user_id, 1);
        ConversionTurn { turns: self, user_id: user_id.to_owned() }
    }
}

impl Drop for ConversionTurn<'_> {
    fn drop(&mut self) {
        TurnState::add(&mut crate::locking::lock(&self.turns.state).running, &self.user_id, -1);
        self.turns.changed.notify_all();
    }
}

/// Uploads allowed to wait for a conversion slot; past this the node answers 503 so
/// clients back off instead of piling up blocked threads.
pub const CONVERSIONS_WAITING_MAX: usize = 32;

impl Api {
    /// Converts an upload and writes its blobs durably; the database row comes after.
    pub(super) fn convert_and_store(&self, media_id: &str, body: &RequestBody) -> Result<MediaInfo, ApiError> {
        let started = Instant::now();
        if self.pipeline.gate_stats().jobs_waiting >= CONVERSIONS_WAITING_MAX {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the node is converting many photos right now; retry in a few seconds",
            ));
        }
        // The original, display and thumb together stay under twice the upload.
        self.store.ensure_space(2 * body.len())?;
        let processed = match body {
            RequestBody::Memory(bytes) => self.pipeline.process(bytes)?,
            RequestBody::Spooled(spooled) => self.pipeline.process_file(spooled.path())?,
        };
        self.metrics.record_media_processed(started.elapsed());
        self.write_blobs(media_id, &processed, true)
    }

    fn write_blobs(&self, media_id: &str, processed: &Processed, with_original: bool) -> Result<MediaInfo, ApiError> {
        let write = |kind: BlobKind, bytes: &[u8], width: u32, height: u32| -> Result<BlobInfo, ApiError> {
            self.store.blobs.write_durable(media_id, kind, bytes, u64::from_le_bytes(os::random_bytes())).map_err(
                |error| {
                    tracing::error!(%error, media_id, "could not write media file");
                    ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "storage_failed",
                        format!("could not store the image: {error}"),
                    )
                },
            )?;
            Ok(BlobInfo { width, height, bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(bytes)) })
        };
        let original = if with_original {
            write(BlobKind::Original, &processed.original, processed.width, processed.height)?
        } else {
            BlobInfo {
                width: processed.width,
                height: processed.height,
                bytes: processed.original.len() as u64,
                sha256: hex(&Sha256::digest(&processed.original)),
            }
        };
        let display =
            write(BlobKind::Display, &processed.display.bytes, processed.display.width, processed.display.height)?;
        let thumb = write(BlobKind::Thumb, &processed.thumb.bytes, processed.thumb.width, processed.thumb.height)?;
        Ok(MediaInfo {
            media_id: media_id.to_owned(),
            mime: processed.kind.mime().to_owned(),
            width: processed.width,
            height: processed.height,
            blurhash: processed.blurhash.clone(),
            original,
            display,
            thumb,
            created_at: os::now_ms(),
        })
    }

    /// Whether `viewer` may fetch `kind` of a media item: owners always; others a
    /// derivative when it is on a post they may see; never someone else's original.
    fn may_fetch(&self, media_id: &str, kind: BlobKind, viewer: Option<&str>) -> Result<bool, ApiError> {
        if let Some(viewer) = viewer {
            if self.store.owns_media(media_id, viewer)? {
                return Ok(true);
            }
        }
        if kind == BlobKind::Original {
            return Ok(false);
        }
        for post in self.store.posts_with_media(media_id)? {
            let follows = match viewer {
                Some(viewer) => self.store.follows(viewer, &post.author_id)?,
                None => false,
            };
            if may_view(&post, viewer, follows) && self.moderation_allows(&post, viewer)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes a missing derivative again from the original (a cache miss), coalesced
    /// so a burst of requests for it converts once.
    fn rebuild_derivatives(&self, info: &MediaInfo) -> Result<MediaInfo, ApiError> {
        let (result, coalesced) = self.media_work.run(info.media_id.clone(), || {
            let original = self.store.blobs.read(&info.media_id, BlobKind::Original).map_err(|error| {
                tracing::error!(%error, media_id = info.media_id, "original missing; cannot rebuild derivatives");
                ApiError::not_found("media file")
            })?;
            let processed = self.pipeline.derive(&original)?;
            let mut rebuilt = self.write_blobs(&info.media_id, &processed, false)?;
            rebuilt.original = info.original.clone();
            self.store.update_media(&rebuilt)?;
            tracing::info!(media_id = info.media_id, "rebuilt missing derivatives");
            Ok(rebuilt)
        });
        if coalesced {
            self.metrics.media_coalesced_total.inc();
        }
        result
    }
}

impl Api {
    /// Makes the avatar derivative of a photo this node holds, from its display
    /// derivative (made again first if it is missing), and writes it durably. Coalesced
    /// so a burst of requests converts once; inside the pipeline's gate and limits.
    fn make_avatar(&self, info: &MediaInfo) -> Result<(), ApiError> {
        if self.pipeline.gate_stats().jobs_waiting >= CONVERSIONS_WAITING_MAX {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the node is converting many photos right now; retry in a few seconds",
            ));
        }
        let key = format!("{}.avatar", info.media_id);
        let (result, coalesced) = self.media_work.run(key, || {
            if self.store.blobs.avatar_path(&info.media_id).is_file() {
                return Ok(info.clone()); // another request made it meanwhile
            }
            if !self.store.blobs.exists(&info.media_id, BlobKind::Display) {
                self.rebuild_derivatives(info)?;
            }
            let display = self.store.blobs.read(&info.media_id, BlobKind::Display).map_err(|error| {
                tracing::error!(%error, media_id = info.media_id, "display derivative unreadable; no avatar");
                ApiError::not_found("media file")
            })?;
            // The display file is ours: one that does not convert is damaged, not the
            // caller's fault.
            let avatar = self.pipeline.avatar(&display).map_err(|error| {
                tracing::error!(%error, media_id = info.media_id, "display derivative does not convert; no avatar");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the photo's avatar could not be made")
            })?;
            self.store.ensure_space(avatar.bytes.len() as u64)?;
            self.store
                .blobs
                .write_avatar_durable(&info.media_id, &avatar.bytes, u64::from_le_bytes(os::random_bytes()))
                .map_err(|error| {
                    tracing::error!(%error, media_id = info.media_id, "could not write the avatar file");
                    ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "storage_failed",
                        format!("could not store the avatar: {error}"),
                    )
                })?;
            tracing::info!(media_id = info.media_id, "made the avatar derivative");
            Ok(info.clone())
        });
        if coalesced {
            self.metrics.media_coalesced_total.inc();
        }
        result.map(drop)
    }
}

impl Api {
    /// Makes the avatar derivative of a photo that is some user's avatar here, if it
    /// is missing (for a neighbour asking for it); whether the file exists after.
    pub fn ensure_avatar(&self, media_id: &str) -> bool {
        let path = self.store.blobs.avatar_path(media_id);
        if path.is_file() {
            return true;
        }
        let Ok(Some(info)) = self.store.media(media_id) else { return false };
        if !self.store.is_avatar(media_id).unwrap_or(false) {
            return false;
        }
        if let Err(error) = self.make_avatar(&info) {
            tracing::warn!(media_id, error = error.message, "cannot make an avatar a neighbour asked for");
        }
        path.is_file()
    }
}

/// `GET /api/v1/media/{id}/avatar`: the square avatar derivative of a photo, for
/// anyone while it is some user's avatar (profiles are public) and for its owners
/// always; 404 otherwise, as for hidden media. Made the first time this node is asked
/// for it, so every replica holding the photo serves it without anything replicated
/// beyond the photo and the User record. One that is someone's avatar is then answered
/// from the public media cache, like a public post's thumbnail.
pub fn avatar(api: &Api, call: &mut Call<'_>) -> ApiResult {
    // Read before the visibility check: a proof made now holds while it is unchanged.
    let epoch = api.store.visibility_epoch();
    let media_id = call.param(0).to_ascii_lowercase();
    if !is_sha256_hex(&media_id) {
        return Err(ApiError::not_found("media"));
    }
    if let Some(node) = call.query("node") {
        // A user of another node: their avatar through this node (phones talk to one node).
        let node = node.parse().map_err(|_| ApiError::bad_request("bad_query", "node must be 16 hex digits"))?;
        if node != api.store.node_id() {
            return super::remote::avatar(api, call, &media_id, node);
        }
    }
    let owner = match call.viewer_id() {
        Some(viewer) => api.store.owns_media(&media_id, viewer)?,
        None => false,
    };
    let is_avatar = api.store.is_avatar(&media_id)?;
    if !owner && !is_avatar {
        return Err(ApiError::not_found("media"));
    }
    // Its owner record can replicate here before its files do.
    let Some(info) = api.store.media(&media_id)? else { return Err(ApiError::not_found("media")) };
    let path = api.store.blobs.avatar_path(&media_id);
    if !path.is_file() {
        api.make_avatar(&info)?;
    }
    let bytes = std::fs::read(&path).map_err(|error| {
        tracing::error!(%error, media_id, "avatar file unreadable");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the avatar file could not be read")
    })?;
    let etag = super::etag::of_bytes(&bytes);
    let bytes = Bytes::from(bytes);
    if is_avatar && bytes.len() <= CACHED_VARIANT_BYTES_MAX {
        api.public_media.insert(&media_id, Cached::Avatar, bytes.clone(), header_value(&etag), "image/jpeg", epoch);
    }
    let builder = Response::builder()
        .header(header::ETAG, header_value(&etag))
        .header(header::CACHE_CONTROL, MEDIA_CACHE_CONTROL)
        .header(header::CONTENT_TYPE, "image/jpeg");
    if call.header(header::IF_NONE_MATCH).is_some_and(|tags| super::etag::matches(tags, &etag)) {
        return Ok(builder.status(StatusCode::NOT_MODIFIED).body(Bytes::new()).expect("valid response"));
    }
    Ok(builder.status(StatusCode::OK).body(bytes).expect("valid response"))
}

/// Media bytes never change under one URL (content-addressed).
pub const MEDIA_CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// The route table's patterns of `download` and `avatar`, the labels `serve_cached`
/// answers under.
pub(super) const DOWNLOAD_ROUTE: &str = "/api/v1/media/{id}/{variant}";
pub(super) const AVATAR_ROUTE: &str = "/api/v1/media/{id}/avatar";

impl Api {
    /// Answers `GET`/`HEAD /api/v1/media/{id}/thumb|display|avatar` from the public
    /// media cache when it holds a proof for it; `None` sends the request the long way.
    /// Never blocks.
    pub fn serve_cached(&self, head: &http::request::Parts) -> Option<Response<Bytes>> {
        let (media_id, cached) = cached_variant(head)?;
        let if_none_match = head.headers.get(header::IF_NONE_MATCH).and_then(|value| value.to_str().ok());
        let epoch = self.store.visibility_epoch();
        let response = self.public_media.answer(&head.method, media_id, cached, if_none_match, epoch)?;
        let transport = head.extensions.get::<super::Transport>().copied();
        let elapsed = super::metrics::request_elapsed(&head.extensions);
        let route = if cached == Cached::Avatar { AVATAR_ROUTE } else { DOWNLOAD_ROUTE };
        self.metrics.record_request(route, &head.method, transport, response.status(), elapsed);
        Some(response)
    }

    /// Whether `serve_cached` may answer this request once the photo's answer is cached
    /// (it is, after the first request, when the photo is public).
    pub fn cacheable(&self, head: &http::request::Parts) -> bool {
        cached_variant(head).is_some()
    }
}

/// The photo and variant of a request `serve_cached` may answer: `GET`/`HEAD` of a
/// whole `thumb` or `display`, or of an `avatar` of this node's (no `?node=`).
fn cached_variant(head: &http::request::Parts) -> Option<(&str, Cached)> {
    if !(head.method == Method::GET || head.method == Method::HEAD) || head.headers.contains_key(header::RANGE) {
        return None;
    }
    let (media_id, variant) = head.uri.path().strip_prefix("/api/v1/media/")?.split_once('/')?;
    let cached = match variant {
        "avatar" if head.uri.query().is_none() => Cached::Avatar,
        _ => Cached::variant(BlobKind::from_name(variant)?)?,
    };
    Some((media_id, cached))
}

/// `GET /api/v1/media/{id}/{variant}`.
pub fn download(api: &Api, call: &mut Call<'_>) -> ApiResult {
    // Read before the visibility check: a proof made now holds while it is unchanged.
    let epoch = api.store.visibility_epoch();
    let media_id = call.param(0).to_ascii_lowercase();
    let kind = BlobKind::from_name(call.param(1))
        .ok_or_else(|| ApiError::bad_request("bad_variant", "variant must be thumb, display or original"))?;
    if !is_sha256_hex(&media_id) {
        return Err(ApiError::not_found("media"));
    }
    let Some(mut info) = api.store.media(&media_id)? else {
        // Not here: perhaps a photo of a followed remote user's post.
        return super::remote::download(api, call, &media_id, kind);
    };
    if !api.may_fetch(&media_id, kind, call.viewer_id())? {
        return Err(ApiError::not_found("media"));
    }
    if kind != BlobKind::Original && !api.store.blobs.exists(&media_id, kind) {
        info = api.rebuild_derivatives(&info)?;
    }
    let blob = info.blob(kind);
    let etag = super::etag::from_sha256_hex(&blob.sha256);
    let content_type = if kind == BlobKind::Original { info.mime.as_str() } else { "image/jpeg" };
    let builder = Response::builder()
        .header(header::ETAG, header_value(&etag))
        .header(header::CACHE_CONTROL, MEDIA_CACHE_CONTROL)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, content_type);
    if call.header(header::IF_NONE_MATCH).is_some_and(|tags| super::etag::matches(tags, &etag)) {
        return Ok(builder.status(StatusCode::NOT_MODIFIED).body(Bytes::new()).expect("valid response"));
    }
    let read_failed = |error: std::io::Error| {
        tracing::error!(%error, media_id, "media file unreadable");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the media file could not be read")
    };
    match call.header(header::RANGE).map(|range| parse_range(range, blob.bytes)) {
        Some(RangeRequest::Satisfiable { start, end }) => {
            let file = std::fs::File::open(api.store.blobs.path(&media_id, kind)).map_err(read_failed)?;
            let length = end - start + 1;
            Ok(builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{end}/{}", blob.bytes)))
                .header(header::CONTENT_LENGTH, length)
                .extension(ResponseFile::new(file, start, length))
                .body(Bytes::new())
                .expect("valid response"))
        }
        Some(RangeRequest::Unsatisfiable) => Ok(builder
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, header_value(&format!("bytes */{}", blob.bytes)))
            .body(Bytes::new())
            .expect("valid response")),
        Some(RangeRequest::Ignored) | None if blob.bytes > CACHED_VARIANT_BYTES_MAX as u64 => {
            // Large files go out in chunks as the client takes them, never whole.
            let file = std::fs::File::open(api.store.blobs.path(&media_id, kind)).map_err(read_failed)?;
            let length = file.metadata().map_err(read_failed)?.len();
            Ok(builder
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, length)
                .extension(ResponseFile::new(file, 0, length))
                .body(Bytes::new())
                .expect("valid response"))
        }
        Some(RangeRequest::Ignored) | None => {
            let bytes = Bytes::from(api.store.blobs.read(&media_id, kind).map_err(read_failed)?);
            let cached = Cached::variant(kind).filter(|_| bytes.len() <= CACHED_VARIANT_BYTES_MAX);
            if let Some(cached) = cached {
                if call.viewer.is_none() || api.may_fetch(&media_id, kind, None)? {
                    api.public_media.insert(&media_id, cached, bytes.clone(), header_value(&etag), "image/jpeg", epoch);
                }
            }
            Ok(builder.status(StatusCode::OK).body(bytes).expect("valid response"))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Inclusive byte positions.
    Satisfiable {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
    /// Malformed or multi-range: serve the whole file, as RFC 9110 allows.
    Ignored,
}

fn parse_range(header: &str, length: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeRequest::Ignored };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.split_once('-') else { return RangeRequest::Ignored };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        match last.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(suffix) => (length.saturating_sub(suffix), length.saturating_sub(1)),
            Err(_) => return RangeRequest::Ignored,
        }
    } else {
        let Ok(start) = first.parse::<u64>() else { return RangeRequest::Ignored };
        let end = if last.is_empty() {
            length.saturating_sub(1)
        } else {
            match last.parse::<u64>() {
                Ok(end) if end >= start => end.min(length.saturating_sub(1)),
                _ => return RangeRequest::Ignored,
            }
        };
        (start, end)
    };
    if length == 0 || range.0 >= length {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Satisfiable { start: range.0, end: range.1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Satisfiable { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Satisfiable { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=50-500", 100), Satisfiable { start: 50, end: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=9-2", 100), Ignored);
    }

    #[test]
    fn a_batch_uses_every_worker_until_someone_else_waits() {
        let turns = ConversionTurns::new(2);
        let first = turns.take("mallory");
        let second = turns.take("mallory");
        let state = || crate::locking::lock(&turns.state).running.get("mallory").copied();
        assert_eq!(state(), Some(2), "alone, a batch takes both workers");
        // Ada goes at once although mallory holds two turns.
        let ada = turns.take("ada");
        drop((first, second, ada));
        assert_eq!(state(), None);
        // While ada waits (simulated), mallory gets only one turn.
        TurnState::add(&mut crate::locking::lock(&turns.state).waiting, "ada", 1);
        let _one = turns.take("mallory");
        assert!(!crate::locking::lock(&turns.state).may_go("mallory", 2));
        assert!(crate::locking::lock(&turns.state).may_go("ada", 2));
    }
}
