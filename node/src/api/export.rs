//! A user's own data out and in: `GET /api/v1/me/export` answers a tar archive of
//! their originals and JSON beside them (the layout is docs/export.md);
//! `POST /api/v1/me/import` takes such an archive, checks all of it (manifest hashes,
//! names, JSON, limits, every photo a post names), and only then converts its photos
//! through the upload pipeline and writes its posts, with their own dates, in one
//! store transaction.
//!
//! The archive is built in the spool dir and streamed from there (`ResponseFile`),
//! never held in memory; an import arrives spooled there too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::social::{CAPTION_CHARS_MAX, MEDIA_PER_POST_MAX};
use super::{header_value, shapes, Api, ApiError, ApiResult, Call, RequestBody, ResponseFile, SpooledBody};
use crate::core::model::{Post, User, Visibility};
use crate::os;
use crate::store::blobs::is_sha256_hex;
use crate::store::{hex, BlobKind, ImportedPost, MediaInfo, UserData};

/// The layout's version, in every JSON file; an archive of a newer one is refused.
pub const EXPORT_FORMAT: u32 = 1;

pub const MANIFEST: &str = "manifest.json";
const PROFILE: &str = "profile.json";
const POSTS: &str = "posts.json";
const COMMENTS: &str = "comments.json";
const LIKES: &str = "likes.json";
const FOLLOWS: &str = "follows.json";
/// The JSON files an export holds besides the manifest, in the order written.
const DATA_FILES: [&str; 5] = [PROFILE, POSTS, COMMENTS, LIKES, FOLLOWS];
const MEDIA_DIR: &str = "media/";

/// Limits of an import, past which the archive is refused before anything is written.
/// Entries of the archive (files and directories).
const IMPORT_ENTRIES_MAX: usize = IMPORT_PHOTOS_MAX + DATA_FILES.len() + 2;
const IMPORT_PHOTOS_MAX: usize = 20_000;
const IMPORT_POSTS_MAX: usize = 20_000;
/// One JSON file, read into memory whole (posts.json of 20,000 long captions fits).
const IMPORT_JSON_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Characters of a post id from the source node (ours are 32).
const SOURCE_ID_CHARS_MAX: usize = 128;
/// How far in the future a post's date may be (clocks differ a little).
const FUTURE_SLACK_MS: u64 = 24 * 3600 * 1000;

// ----- the JSON files -----

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestFile {
    path: String,
    sha256: String,
    bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PostsFile {
    format: u32,
    posts: Vec<ExportedPost>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExportedPost {
    /// Its id on the node it was exported from.
    id: String,
    /// Milliseconds since 1970 (UTC); `created` says the same for people.
    created_at: u64,
    #[serde(default)]
    created: String,
    #[serde(default)]
    caption: String,
    visibility: Visibility,
    #[serde(default)]
    tags: Vec<String>,
    /// Paths in the archive (`media/<sha256>.<ext>`), in the post's order.
    #[serde(default)]
    photos: Vec<String>,
}

/// Only `format` is read back on import: the rest is for the person reading it.
#[derive(Debug, Deserialize)]
struct FormatOnly {
    format: u32,
}

// ----- export -----

/// `GET /api/v1/me/export`.
pub fn export(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user = call.user()?.clone();
    let mut data = api.store.user_data(&user.user_id)?;
    // Photos of the user's posts that their owner row does not list (not expected,
    // but an export must be complete): taken as they are stored.
    let known: BTreeSet<String> = data.media.iter().map(|info| info.media_id.clone()).collect();
    let named: BTreeSet<String> = data.posts.iter().flat_map(|post| post.media.iter().cloned()).collect();
    for media_id in named.difference(&known) {
        match api.store.media(media_id)? {
            Some(info) => data.media.push(info),
            None => data.media_missing.push(media_id.clone()),
        }
    }
    if !data.media_missing.is_empty() {
        return Err(ApiError::unavailable(format!(
            "{} of your photos have not reached this node yet (they are copied from its siblings); try the export again in a few minutes",
            data.media_missing.len()
        )));
    }
    let original_bytes: u64 = data.media.iter().map(|info| info.original.bytes).sum();
    api.store.ensure_space(original_bytes)?;
    let now_ms = os::now_ms();
    let archive = write_archive(api, &user, &data, now_ms)?;
    let length = archive.metadata().map_err(export_failed)?.len();
    let file_name = format!("edgenode-export-{}-{}.tar", user.handle, &iso8601_utc(now_ms)[..10]);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(header::CONTENT_DISPOSITION, header_value(&format!("attachment; filename=\"{file_name}\"")))
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_LENGTH, length)
        .extension(ResponseFile::new(archive, 0, length))
        .body(Bytes::new())
        .expect("valid response"))
}

fn export_failed(error: std::io::Error) -> ApiError {
    if error.raw_os_error() == Some(28) {
        return ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            "the node has no room to build your archive; ask its operator to free space",
        );
    }
    tracing::error!(%error, "export failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the archive could not be written: {error}"))
}

/// The archive's path of a photo: named by the SHA-256 of its bytes, which is the id
/// it gets when imported.
fn photo_path(info: &MediaInfo) -> String {
    let extension = match info.mime.as_str() {
        "image/png" => "png",
        "image/webp" => "webp",
        _ => "jpg",
    };
    format!("{MEDIA_DIR}{}.{extension}", info.original.sha256)
}

/// Writes the archive to a new file in the spool dir and returns it open for reading,
/// already unlinked: the response streams it and nothing is left behind.
fn write_archive(api: &Api, user: &User, data: &UserData, now_ms: u64) -> Result<std::fs::File, ApiError> {
    let suffix: [u8; 8] = os::random_bytes();
    let path = api.spool_dir.join(format!("export-{}.tar", hex(&suffix)));
    let file = crate::store::create_private_file(&path).map_err(export_failed)?;
    let reader = std::fs::File::open(&path).map_err(export_failed);
    // Unlinked at once: the open handles keep it until the download ends.
    let _ = std::fs::remove_file(&path);
    let reader = reader?;
    let photo_paths: BTreeMap<&str, String> =
        data.media.iter().map(|info| (info.media_id.as_str(), photo_path(info))).collect();
    let documents = data_documents(api, user, data, &photo_paths, now_ms);
    // Photos once per path (two uploads can scrub to the same bytes).
    let mut photos: BTreeMap<String, &MediaInfo> = BTreeMap::new();
    for info in &data.media {
        photos.entry(photo_path(info)).or_insert(info);
    }
    let mut files: Vec<ManifestFile> = documents
        .iter()
        .map(|(path, bytes)| ManifestFile {
            path: (*path).to_owned(),
            sha256: hex(&Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
        })
        .collect();
    files.extend(photos.iter().map(|(path, info)| ManifestFile {
        path: path.clone(),
        sha256: info.original.sha256.clone(),
        bytes: info.original.bytes,
    }));
    let manifest = pretty_json(&Manifest { format: EXPORT_FORMAT, files });

    let mtime_seconds = now_ms / 1000;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(256 * 1024, file));
    append(&mut builder, MANIFEST, manifest.len() as u64, mtime_seconds, manifest.as_slice())?;
    for (path, bytes) in &documents {
        append(&mut builder, path, bytes.len() as u64, mtime_seconds, bytes.as_slice())?;
    }
    for (path, info) in &photos {
        let blob = std::fs::File::open(api.store.blobs.path(&info.media_id, BlobKind::Original)).map_err(|error| {
            tracing::error!(%error, media_id = info.media_id, "original missing; cannot export it");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "media_damaged",
                format!("the original of photo {} is missing on this node; ask its operator", info.media_id),
            )
        })?;
        let mut hashing = HashingReader { inner: blob.take(info.original.bytes), hasher: Sha256::new(), bytes: 0 };
        append(&mut builder, path, info.original.bytes, info.created_at / 1000, &mut hashing)?;
        if hashing.bytes != info.original.bytes || hex(&hashing.hasher.finalize()) != info.original.sha256 {
            tracing::error!(media_id = info.media_id, "original does not match its recorded hash; export refused");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "media_damaged",
                format!(
                    "the original of photo {} on this node does not match its recorded SHA-256; ask its operator",
                    info.media_id
                ),
            ));
        }
    }
    let writer = builder.into_inner().map_err(export_failed)?;
    // Flushed, not synced: a crash loses only a download in progress.
    writer.into_inner().map_err(|error| export_failed(error.into_error()))?;
    Ok(reader)
}

fn append(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    bytes: u64,
    mtime_seconds: u64,
    data: impl Read,
) -> Result<(), ApiError> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).map_err(export_failed)?;
    header.set_size(bytes);
    header.set_mode(0o644);
    header.set_mtime(mtime_seconds);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, data).map_err(export_failed)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

fn pretty_json(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON of our own types");
    bytes.push(b'\n');
    bytes
}

/// profile.json, posts.json, comments.json, likes.json and follows.json.
fn data_documents(
    api: &Api,
    user: &User,
    data: &UserData,
    photo_paths: &BTreeMap<&str, String>,
    now_ms: u64,
) -> Vec<(&'static str, Vec<u8>)> {
    let profile = json!({
        "format": EXPORT_FORMAT,
        "exported_at": now_ms,
        "exported": iso8601_utc(now_ms),
        "node": {"id": api.store.node_id().to_string(), "name": api.node.name},
        "user": {
            "user_id": user.user_id,
            "handle": user.handle,
            "display_name": user.display_name,
            "bio": user.bio,
            // The profile photo's SHA-256 (its original is in media/ when you own it).
            "avatar": user.avatar,
            "created_at": user.created_at,
            "created": iso8601_utc(user.created_at),
        },
    });
    let posts = PostsFile {
        format: EXPORT_FORMAT,
        posts: data.posts.iter().map(|post| exported_post(post, photo_paths)).collect(),
    };
    let comments: Vec<_> = data
        .comments
        .iter()
        .map(|comment| {
            json!({
                "id": comment.comment_id,
                "post_id": comment.post_id,
                "text": comment.text,
                "created_at": comment.created_at,
                "created": iso8601_utc(comment.created_at),
            })
        })
        .collect();
    let likes: Vec<_> = data
        .likes
        .iter()
        .map(|(post_id, like)| json!({"post_id": post_id, "at": like.at, "created": iso8601_utc(like.at)}))
        .collect();
    let follows: Vec<_> = data
        .follows
        .iter()
        .map(|followed| {
            json!({
                "user_id": followed.user_id,
                "handle": followed.handle,
                "since": followed.follow.since,
                "created": iso8601_utc(followed.follow.since),
            })
        })
        .collect();
    vec![
        (PROFILE, pretty_json(&profile)),
        (POSTS, pretty_json(&posts)),
        (COMMENTS, pretty_json(&json!({"format": EXPORT_FORMAT, "comments": comments}))),
        (LIKES, pretty_json(&json!({"format": EXPORT_FORMAT, "likes": likes}))),
        (FOLLOWS, pretty_json(&json!({"format": EXPORT_FORMAT, "follows": follows}))),
    ]
}

fn exported_post(post: &Post, photo_paths: &BTreeMap<&str, String>) -> ExportedPost {
    ExportedPost {
        id: post.post_id.clone(),
        created_at: post.created_at,
        created: iso8601_utc(post.created_at),
        caption: post.caption.clone(),
        visibility: post.visibility,
        tags: post.tags.clone(),
        // Every photo is in the map: `export` refuses to go on while one is missing.
        photos: post.media.iter().filter_map(|media_id| photo_paths.get(media_id.as_str()).cloned()).collect(),
    }
}

/// `2024-05-01T12:30:05.123Z` for milliseconds since 1970.
pub fn iso8601_utc(ms: u64) -> String {
    let seconds = ms / 1000;
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    // Howard Hinnant's days-to-civil (proleptic Gregorian).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        ms % 1000
    )
}

// ----- import -----

/// A photo of a checked archive: where its bytes are in the spooled file.
#[derive(Debug, Clone)]
struct ArchivedPhoto {
    sha256: String,
    bytes: u64,
    /// Offset of its first byte in the archive.
    position: u64,
}

/// What a checked archive holds.
#[derive(Debug)]
struct CheckedArchive {
    photos: BTreeMap<String, ArchivedPhoto>,
    posts: Vec<ImportedPost>,
    /// Read and counted, not imported (they name users and posts of the source node).
    comments: usize,
    likes: usize,
    follows: usize,
}

fn bad_archive(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_archive", message)
}

fn damaged_archive(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "archive_damaged", message)
}

/// `POST /api/v1/me/import`.
pub fn import(api: &Api, call: &mut Call<'_>) -> ApiResult {
    let user = call.user()?.clone();
    let RequestBody::Spooled(archive) = &call.body else {
        return Err(bad_archive("send the archive as the request body (application/x-tar)"));
    };
    let checked = check_archive(archive.path(), api.upload_bytes_max as u64, os::now_ms())?;

    // Photos: those already here need no work; the rest are charged to the user's
    // quota together, before any is converted.
    let mut infos: Vec<MediaInfo> = Vec::new();
    let mut to_convert: Vec<&ArchivedPhoto> = Vec::new();
    for photo in checked.photos.values() {
        match api.store.media(&photo.sha256)? {
            Some(info) => infos.push(info),
            None => to_convert.push(photo),
        }
    }
    let mut new_bytes: u64 = 0;
    for photo in checked.photos.values() {
        if !api.store.owns_media(&photo.sha256, &user.user_id)? {
            new_bytes += photo.bytes;
        }
    }
    api.admit_upload(&user, new_bytes)?;
    for photo in to_convert {
        infos.push(convert_photo(api, &user.user_id, archive, photo)?);
    }
    let (counts, written) = api.store.import_user_data(&user.user_id, &infos, &checked.posts)?;
    api.record_upload(&user.user_id, new_bytes);
    for post_id in &written {
        api.fanout_post_changed(&user.user_id, post_id);
    }
    tracing::info!(
        user_id = user.user_id,
        posts_imported = counts.posts_imported,
        posts_skipped = counts.posts_skipped,
        photos_imported = counts.photos_imported,
        "import"
    );
    shapes::ok(&shapes::Imported {
        posts: shapes::ImportCounts { imported: counts.posts_imported, skipped: counts.posts_skipped },
        photos: shapes::ImportCounts { imported: counts.photos_imported, skipped: counts.photos_skipped },
        not_imported: shapes::NotImported {
            comments: checked.comments,
            likes: checked.likes,
            follows: checked.follows,
        },
    })
}

/// Copies one photo out of the archive into a spool file of its own and runs it
/// through the upload path (the pipeline's limits and GPS scrub, coalesced per hash,
/// the user's conversion turns); its blobs are durable, its row not written yet.
fn convert_photo(
    api: &Api,
    user_id: &str,
    archive: &SpooledBody,
    photo: &ArchivedPhoto,
) -> Result<MediaInfo, ApiError> {
    let copy_failed = |error: std::io::Error| {
        tracing::error!(%error, "could not copy a photo out of an import");
        ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_failed", format!("could not unpack a photo: {error}"))
    };
    let suffix: [u8; 8] = os::random_bytes();
    let path = api.spool_dir.join(format!("import-{}", hex(&suffix)));
    let mut target = crate::store::create_private_file(&path).map_err(copy_failed)?;
    // Removed when dropped, whatever happens next.
    let sha256: [u8; 32] = decode_hex32(&photo.sha256).expect("checked hex");
    let spooled = RequestBody::Spooled(SpooledBody::new(path, photo.bytes, sha256));
    let mut source = std::fs::File::open(archive.path()).map_err(copy_failed)?;
    source.seek(SeekFrom::Start(photo.position)).map_err(copy_failed)?;
    let mut hashing = HashingReader { inner: source.take(photo.bytes), hasher: Sha256::new(), bytes: 0 };
    std::io::copy(&mut hashing, &mut target).map_err(copy_failed)?;
    if hashing.bytes != photo.bytes || hashing.hasher.finalize().as_slice() != sha256.as_slice() {
        return Err(damaged_archive("the archive changed on the node's disk while it was imported; send it again"));
    }
    drop(target);
    let (result, _coalesced) = api.media_work.run(photo.sha256.clone(), || {
        let _turn = api.conversion_turns.take(user_id);
        api.convert_and_store(&photo.sha256, &spooled)
    });
    result
        .map_err(|error| ApiError::new(error.status, error.code, format!("photo {}: {}", photo.sha256, error.message)))
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * index..2 * index + 2)?, 16).ok()?;
    }
    Some(bytes)
}

/// What an entry's name makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Data,
    Photo,
    MediaDirectory,
}

/// Only the names an export writes: anything else (`../x`, `/etc/passwd`, a file
/// beside them) is refused, so no name can reach outside the archive's layout.
fn entry_kind(path: &str) -> Option<EntryKind> {
    if path == MANIFEST || DATA_FILES.contains(&path) {
        return Some(EntryKind::Data);
    }
    if path == MEDIA_DIR || path == "media" {
        return Some(EntryKind::MediaDirectory);
    }
    let name = path.strip_prefix(MEDIA_DIR)?;
    let (sha256, extension) = name.split_once('.')?;
    (is_sha256_hex(sha256) && matches!(extension, "jpg" | "jpeg" | "png" | "webp")).then_some(EntryKind::Photo)
}

/// Reads the whole archive and checks it: names, entry types, sizes, the manifest's
/// hash and size of every file, the JSON of each file, limits, and that every photo a
/// post names is in it. Nothing is written.
fn check_archive(path: &Path, photo_bytes_max: u64, now_ms: u64) -> Result<CheckedArchive, ApiError> {
    let file = std::fs::File::open(path).map_err(|error| {
        tracing::error!(%error, "spooled import unreadable");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the node could not read the upload back")
    })?;
    let not_tar = |error: std::io::Error| {
        damaged_archive(format!(
            "the archive cannot be read as tar ({error}): it is truncated, damaged or not an export; send the .tar file the export gave you, whole and unchanged"
        ))
    };
    let mut archive = tar::Archive::new(file);
    let mut documents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut found: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut photos: BTreeMap<String, ArchivedPhoto> = BTreeMap::new();
    let mut entries = 0usize;
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        entries += 1;
        if entries > IMPORT_ENTRIES_MAX {
            return Err(bad_archive(format!("the archive holds more than {IMPORT_ENTRIES_MAX} entries")));
        }
        let name_bytes = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let Some(kind) = entry_kind(&name) else {
            return Err(bad_archive(format!(
                "the archive holds {name:?}, which is not part of an Edgenode export (manifest.json, posts.json, … and media/<sha256>.jpg; see docs/export.md)"
            )));
        };
        let entry_type = entry.header().entry_type();
        match (kind, entry_type) {
            (EntryKind::MediaDirectory, tar::EntryType::Directory) => continue,
            (EntryKind::Data | EntryKind::Photo, tar::EntryType::Regular | tar::EntryType::Continuous) => {}
            _ => {
                return Err(bad_archive(format!(
                    "{name:?} is a {entry_type:?} entry; an export holds only plain files"
                )))
            }
        }
        if found.contains_key(&name) {
            return Err(bad_archive(format!("{name:?} is in the archive twice")));
        }
        let size = entry.size();
        let position = entry.raw_file_position();
        let bytes_max = if kind == EntryKind::Photo { photo_bytes_max } else { IMPORT_JSON_BYTES_MAX };
        if size > bytes_max {
            return Err(bad_archive(format!("{name:?} is {size} bytes; at most {bytes_max} are accepted")));
        }
        let mut hashing = HashingReader { inner: &mut entry, hasher: Sha256::new(), bytes: 0 };
        if kind == EntryKind::Data {
            let mut bytes = Vec::with_capacity(size as usize);
            hashing.read_to_end(&mut bytes).map_err(not_tar)?;
            documents.insert(name.clone(), bytes);
        } else {
            std::io::copy(&mut hashing, &mut std::io::sink()).map_err(not_tar)?;
        }
        if hashing.bytes != size {
            return Err(damaged_archive(format!(
                "{name:?} ends after {} of its {size} bytes: the archive is truncated",
                hashing.bytes
            )));
        }
        let sha256 = hex(&hashing.hasher.finalize());
        if kind == EntryKind::Photo {
            if !name[MEDIA_DIR.len()..].starts_with(sha256.as_str()) {
                return Err(damaged_archive(format!(
                    "{name:?} is named by a SHA-256 its bytes do not have: the archive was changed or damaged"
                )));
            }
            if photos.len() == IMPORT_PHOTOS_MAX {
                return Err(bad_archive(format!("the archive holds more than {IMPORT_PHOTOS_MAX} photos")));
            }
            photos.insert(name.clone(), ArchivedPhoto { sha256: sha256.clone(), bytes: size, position });
        }
        found.insert(name, (sha256, size));
    }
    check_manifest(&documents, &found)?;
    let posts_file = documents.get(POSTS).ok_or_else(|| bad_archive("the archive has no posts.json"))?;
    let posts: PostsFile = parse_json(POSTS, posts_file)?;
    let posts = check_posts(posts, &photos, now_ms)?;
    // The other files must be what they say, though only posts and photos are imported.
    for name in DATA_FILES {
        if let Some(bytes) = documents.get(name) {
            check_format(name, parse_json::<FormatOnly>(name, bytes)?.format)?;
        }
    }
    let count = |name: &str, field: &str| -> Result<usize, ApiError> {
        let Some(bytes) = documents.get(name) else { return Ok(0) };
        let value: serde_json::Value = parse_json(name, bytes)?;
        match &value[field] {
            serde_json::Value::Array(items) => Ok(items.len()),
            _ => Err(bad_archive(format!("{name} has no `{field}` list"))),
        }
    };
    Ok(CheckedArchive {
        comments: count(COMMENTS, "comments")?,
        likes: count(LIKES, "likes")?,
        follows: count(FOLLOWS, "follows")?,
        photos: photos.into_values().map(|photo| (photo.sha256.clone(), photo)).collect(),
        posts,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| bad_archive(format!("{name} is not what an export writes: {error}")))
}

fn check_format(name: &str, format: u32) -> Result<(), ApiError> {
    if format != EXPORT_FORMAT {
        return Err(bad_archive(format!(
            "{name} has format {format}; this node reads format {EXPORT_FORMAT} (a newer Edgenode wrote it: update this node)"
        )));
    }
    Ok(())
}

/// Every file but the manifest is listed in it with its SHA-256 and size, and every
/// file it lists is there.
fn check_manifest(
    documents: &BTreeMap<String, Vec<u8>>,
    found: &BTreeMap<String, (String, u64)>,
) -> Result<(), ApiError> {
    let manifest = documents.get(MANIFEST).ok_or_else(|| {
        damaged_archive("the archive has no manifest.json: it is not an Edgenode export, or it is truncated")
    })?;
    let manifest: Manifest = parse_json(MANIFEST, manifest)?;
    check_format(MANIFEST, manifest.format)?;
    let mut listed = BTreeSet::new();
    for file in &manifest.files {
        if !listed.insert(file.path.as_str()) {
            return Err(bad_archive(format!("manifest.json lists {:?} twice", file.path)));
        }
        let Some((sha256, bytes)) = found.get(&file.path) else {
            return Err(damaged_archive(format!(
                "{:?} is listed in manifest.json but not in the archive: the archive is incomplete or truncated",
                file.path
            )));
        };
        if *bytes != file.bytes || *sha256 != file.sha256.to_ascii_lowercase() {
            return Err(damaged_archive(format!(
                "{:?} does not match its SHA-256 and size in manifest.json: the archive was changed or damaged",
                file.path
            )));
        }
    }
    if let Some(unlisted) = found.keys().find(|name| *name != MANIFEST && !listed.contains(name.as_str())) {
        return Err(damaged_archive(format!("{unlisted:?} is in the archive but not in manifest.json")));
    }
    Ok(())
}

fn check_posts(
    file: PostsFile,
    photos: &BTreeMap<String, ArchivedPhoto>,
    now_ms: u64,
) -> Result<Vec<ImportedPost>, ApiError> {
    check_format(POSTS, file.format)?;
    if file.posts.len() > IMPORT_POSTS_MAX {
        return Err(bad_archive(format!("posts.json holds more than {IMPORT_POSTS_MAX} posts")));
    }
    let mut ids = BTreeSet::new();
    let mut posts = Vec::with_capacity(file.posts.len());
    for post in file.posts {
        let what = format!("post {:?} in posts.json", post.id);
        if post.id.is_empty() || post.id.chars().count() > SOURCE_ID_CHARS_MAX {
            return Err(bad_archive(format!("{what}: an id is 1 to {SOURCE_ID_CHARS_MAX} characters")));
        }
        if !ids.insert(post.id.clone()) {
            return Err(bad_archive(format!("{what} is there twice")));
        }
        if post.caption.chars().count() > CAPTION_CHARS_MAX {
            return Err(bad_archive(format!("{what}: a caption is at most {CAPTION_CHARS_MAX} characters")));
        }
        if post.photos.len() > MEDIA_PER_POST_MAX {
            return Err(bad_archive(format!("{what}: a post has at most {MEDIA_PER_POST_MAX} photos")));
        }
        if post.photos.is_empty() && post.caption.trim().is_empty() {
            return Err(bad_archive(format!("{what} has neither a caption nor a photo")));
        }
        if post.created_at == 0 || post.created_at > now_ms + FUTURE_SLACK_MS {
            return Err(bad_archive(format!("{what}: created_at {} is not a date this node accepts", post.created_at)));
        }
        let mut media = Vec::with_capacity(post.photos.len());
        for photo in &post.photos {
            let Some(archived) = photos.get(photo) else {
                return Err(damaged_archive(format!("{what} names the photo {photo:?}, which is not in the archive")));
            };
            media.push(archived.sha256.clone());
        }
        posts.push(ImportedPost {
            source_post_id: post.id,
            caption: post.caption,
            media,
            visibility: post.visibility,
            created_at: post.created_at,
        });
    }
    Ok(posts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_people_write_them() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_714_566_605_123), "2024-05-01T12:30:05.123Z");
    }

    const NOW_MS: u64 = 1_764_940_000_000;

    /// A tar of `files` (plus `extra` raw entries) with a true manifest of `files`.
    fn archive(files: &[(&str, Vec<u8>)], extra: &[(&str, tar::EntryType)]) -> std::path::PathBuf {
        let manifest = Manifest {
            format: EXPORT_FORMAT,
            files: files
                .iter()
                .map(|(path, bytes)| ManifestFile {
                    path: (*path).to_owned(),
                    sha256: hex(&Sha256::digest(bytes)),
                    bytes: bytes.len() as u64,
                })
                .collect(),
        };
        let mut builder = tar::Builder::new(Vec::new());
        let manifest = pretty_json(&manifest);
        append(&mut builder, MANIFEST, manifest.len() as u64, 0, manifest.as_slice()).unwrap();
        for (path, bytes) in files {
            append(&mut builder, path, bytes.len() as u64, 0, bytes.as_slice()).unwrap();
        }
        for (path, entry_type) in extra {
            let mut header = tar::Header::new_ustar();
            header.set_path(path).unwrap();
            header.set_size(0);
            header.set_entry_type(*entry_type);
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let path = std::env::temp_dir().join(format!(
            "edgenode-export-test-{}-{}",
            std::process::id(),
            hex(&os::random_bytes::<8>())
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn check(files: &[(&str, Vec<u8>)], extra: &[(&str, tar::EntryType)]) -> Result<CheckedArchive, ApiError> {
        let path = archive(files, extra);
        let checked = check_archive(&path, 1 << 20, NOW_MS);
        std::fs::remove_file(path).unwrap();
        checked
    }

    fn posts(posts: serde_json::Value) -> (&'static str, Vec<u8>) {
        (POSTS, serde_json::to_vec(&json!({"format": 1, "posts": posts})).unwrap())
    }

    fn photo() -> (String, Vec<u8>) {
        let bytes = b"not really a photo".to_vec();
        (format!("media/{}.jpg", hex(&Sha256::digest(&bytes))), bytes)
    }

    fn refusal(result: Result<CheckedArchive, ApiError>) -> (u16, &'static str, String) {
        let error = result.expect_err("refused");
        (error.status.as_u16(), error.code, error.message)
    }

    #[test]
    fn a_whole_archive_passes_and_says_what_it_holds() {
        let (photo_path, photo_bytes) = photo();
        let checked = check(
            &[
                posts(json!([{"id": "p1", "created_at": NOW_MS - 1, "caption": "hi", "visibility": "followers", "photos": [photo_path]}])),
                (photo_path.as_str(), photo_bytes.clone()),
                (LIKES, serde_json::to_vec(&json!({"format": 1, "likes": [{"post_id": "x", "at": 1}]})).unwrap()),
            ],
            &[("media/", tar::EntryType::Directory)],
        )
        .unwrap();
        assert_eq!(checked.posts.len(), 1);
        assert_eq!(checked.posts[0].visibility, Visibility::Followers);
        assert_eq!(checked.posts[0].media, vec![hex(&Sha256::digest(&photo_bytes))]);
        assert_eq!((checked.likes, checked.comments, checked.follows), (1, 0, 0));
    }

    #[test]
    fn links_duplicates_missing_photos_bad_dates_and_newer_formats_are_refused() {
        let (photo_path, photo_bytes) = photo();
        let photo = (photo_path.as_str(), photo_bytes);
        let post = |extra: serde_json::Value| {
            let mut post = json!({"id": "p1", "created_at": NOW_MS, "caption": "hi", "visibility": "public"});
            post.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            posts(json!([post]))
        };
        let link = refusal(check(&[post(json!({}))], &[(&photo_path, tar::EntryType::Symlink)]));
        assert_eq!((link.0, link.1), (400, "bad_archive"), "{}", link.2);
        let missing = refusal(check(&[post(json!({"photos": ["media/".to_owned() + &"b".repeat(64) + ".jpg"]}))], &[]));
        assert_eq!((missing.0, missing.1), (422, "archive_damaged"), "{}", missing.2);
        let future = refusal(check(&[post(json!({"created_at": NOW_MS + 2 * FUTURE_SLACK_MS})), photo.clone()], &[]));
        assert!(future.2.contains("created_at"), "{}", future.2);
        let long = refusal(check(&[post(json!({"caption": "x".repeat(CAPTION_CHARS_MAX + 1)}))], &[]));
        assert!(long.2.contains("caption"), "{}", long.2);
        let twice = refusal(check(
            &[posts(
                json!([{"id": "a", "created_at": 1, "caption": "x", "visibility": "public"}, {"id": "a", "created_at": 1, "caption": "y", "visibility": "public"}]),
            )],
            &[],
        ));
        assert!(twice.2.contains("twice"), "{}", twice.2);
        let newer = refusal(check(&[(POSTS, serde_json::to_vec(&json!({"format": 2, "posts": []})).unwrap())], &[]));
        assert!(newer.2.contains("format 2"), "{}", newer.2);
        let shape = refusal(check(&[post(json!({"visibility": "everyone"}))], &[]));
        assert_eq!((shape.0, shape.1), (400, "bad_archive"), "{}", shape.2);
        let no_posts = refusal(check(&[photo], &[]));
        assert!(no_posts.2.contains("posts.json"), "{}", no_posts.2);
    }

    #[test]
    fn only_the_layouts_names_are_entries() {
        let sha = "a".repeat(64);
        assert_eq!(entry_kind("posts.json"), Some(EntryKind::Data));
        assert_eq!(entry_kind(&format!("media/{sha}.jpg")), Some(EntryKind::Photo));
        assert_eq!(entry_kind("media/"), Some(EntryKind::MediaDirectory));
        for refused in [
            "../x".to_owned(),
            "/etc/passwd".to_owned(),
            format!("media/../{sha}.jpg"),
            format!("media/{sha}.jpg/x"),
            format!("./media/{sha}.jpg"),
            format!("media/{sha}.exe"),
            "media/short.jpg".to_owned(),
            "posts.json/".to_owned(),
        ] {
            assert_eq!(entry_kind(&refused), None, "{refused}");
        }
    }
}
