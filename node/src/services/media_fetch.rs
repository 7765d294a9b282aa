//! Media streams between siblings: records (owners, posts) replicate on the control
//! stream, but a media item's files do not; a node that holds owners of an item
//! without its files fetches them from a sibling on a stream of their own.
//!
//! # The stream protocol (one request per bidirectional stream, opened by the fetcher)
//!
//! ```text
//! request:  "EMED1" <media id: 64 lowercase hex bytes>                     then FIN
//! answer:   0x01                                                 (not here) then FIN
//!         | 0x00 <the item, encode_media: description, original, display, thumb> then FIN
//! ```
//!
//! Every length is checked before its buffer is allocated: the description against
//! `MEDIA_INFO_BYTES_MAX`, each file against `MEDIA_BLOB_BYTES_MAX` and against the
//! length the description gives. The fetcher trusts nothing else the sibling says:
//! `Store::put_fetched_media` checks every file's SHA-256 before anything is written.
//! A node without a media store (tests, tools) resets media streams with
//! `stream_code::NOT_SERVED`.
//!
//! # What is absent
//!
//! - Files travel whole through memory (at most `fetches_in_flight_max` items on the
//!   fetching side, one file per served stream on the serving side), not streamed to disk.
//! - No preference among siblings beyond spreading ids over them; no per-sibling
//!   failure memory (a failed id is retried later, from any sibling).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::core::model::NodeId;
use crate::core::trust::TrustEvent;
use crate::link::streams::{StreamServer, MEDIA_TAG};
use crate::link::trust::TrustBook;
use crate::store::blobs::is_sha256_hex;
use crate::store::{BlobKind, MediaInfo, Store, StoreError};

/// Opens every request: the protocol and its version (the link's stream tag).
pub const MEDIA_REQUEST_MAGIC: &[u8; 5] = MEDIA_TAG;
const MEDIA_ID_BYTES: usize = 64;
const REQUEST_BYTES: usize = MEDIA_REQUEST_MAGIC.len() + MEDIA_ID_BYTES;
const STATUS_FOUND: u8 = 0;
const STATUS_NOT_FOUND: u8 = 1;
/// The largest `MediaInfo` JSON accepted (a real one is well under 1 KiB).
pub const MEDIA_INFO_BYTES_MAX: usize = 16 * 1024;
/// The largest file accepted; uploads are capped at 40 MiB by default.
pub const MEDIA_BLOB_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// How long `fetch_media` waits for a whole answer.
pub const MEDIA_FETCH_TIMEOUT_MS: u64 = 120_000;
/// How long a served stream may take, from its request to the last byte.
const MEDIA_SERVE_TIMEOUT_MS: u64 = 180_000;
/// The order of the files in an answer.
const BLOB_KINDS: [BlobKind; 3] = [BlobKind::Original, BlobKind::Display, BlobKind::Thumb];

/// QUIC stream error codes of media streams.
pub mod stream_code {
    /// This node does not serve media (no media store configured).
    pub const NOT_SERVED: u32 = 1;
    /// The request or the answer could not be completed (bad request, unreadable file,
    /// timeout).
    pub const FAILED: u32 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum MediaFetchError {
    #[error("media id {0:?} is not a SHA-256 hex digest")]
    BadMediaId(String),
    #[error("cannot open a media stream to the sibling: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("cannot send the media request: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("cannot finish the media request: {0}")]
    Finish(#[from] quinn::ClosedStream),
    #[error("the sibling's media answer ended early or was reset: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("the sibling's media answer is malformed: {0}")]
    Malformed(String),
    #[error("the sibling did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// A media item as a sibling sent it: not yet checked against its description.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedMedia {
    pub info: MediaInfo,
    pub original: Vec<u8>,
    pub display: Vec<u8>,
    pub thumb: Vec<u8>,
}

// ----- serving -----

/// The media server the link runs for streams tagged `MEDIA_REQUEST_MAGIC`.
pub fn media_server(store: Arc<Store>) -> StreamServer {
    Arc::new(move |send, recv| Box::pin(serve_media_stream(store.clone(), send, recv)))
}

/// Answers one media request on a stream a sibling opened, whose tag
/// (`MEDIA_REQUEST_MAGIC`) was read (`streams`).
pub async fn serve_media_stream(store: Arc<Store>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let failure =
        match tokio::time::timeout(Duration::from_millis(MEDIA_SERVE_TIMEOUT_MS), answer(&store, &mut send, &mut recv))
            .await
        {
            Ok(Ok(())) => return,
            Ok(Err(reason)) => reason,
            Err(_) => format!("not done within {} s", MEDIA_SERVE_TIMEOUT_MS / 1000),
        };
    tracing::debug!(reason = %failure, "media stream failed");
    let _ = send.reset(VarInt::from_u32(stream_code::FAILED));
    let _ = recv.stop(VarInt::from_u32(stream_code::FAILED));
}

async fn answer(store: &Arc<Store>, send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) -> Result<(), String> {
    let mut media_id = [0u8; MEDIA_ID_BYTES];
    recv.read_exact(&mut media_id).await.map_err(|error| format!("cannot read the request: {error}"))?;
    let media_id = std::str::from_utf8(&media_id)
        .ok()
        .filter(|media_id| is_sha256_hex(media_id))
        .ok_or("the requested media id is not a SHA-256 hex digest")?
        .to_owned();
    let info = blocking({
        let (store, media_id) = (store.clone(), media_id.clone());
        move || store.media(&media_id)
    })
    .await?
    .map_err(|error| format!("cannot look up media {media_id}: {error}"))?;
    let write_error = |error: quinn::WriteError| format!("cannot write the answer: {error}");
    let Some(info) = info else {
        tracing::debug!(media_id, "asked for media this node does not have");
        send.write_all(&[STATUS_NOT_FOUND]).await.map_err(write_error)?;
        return send.finish().map_err(|error| error.to_string());
    };
    let mut header = vec![STATUS_FOUND];
    header.extend(encode_media_head(&info));
    send.write_all(&header).await.map_err(write_error)?;
    // One file in memory at a time.
    for kind in BLOB_KINDS {
        let bytes = blocking({
            let (store, media_id) = (store.clone(), media_id.clone());
            move || store.blobs.read(&media_id, kind)
        })
        .await?
        .map_err(|error| format!("cannot read the {} file of {media_id}: {error}", kind.name()))?;
        if bytes.len() as u64 != info.blob(kind).bytes {
            // Replaced since the row was read (derivatives are regenerated in place);
            // the fetcher retries.
            return Err(format!("the {} file of {media_id} changed while being sent", kind.name()));
        }
        send.write_all(&(bytes.len() as u64).to_be_bytes()).await.map_err(write_error)?;
        send.write_all(&bytes).await.map_err(write_error)?;
    }
    tracing::debug!(media_id, "served media to a sibling");
    send.finish().map_err(|error| error.to_string())
}

/// Runs blocking file or database work off the runtime's workers.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    tokio::task::spawn_blocking(work).await.map_err(|error| format!("blocking task failed: {error}"))
}

// ----- the one encoding of a media item on the wire -----

/// A media item as it travels between nodes, on a media stream (after its status
/// byte, all three files) and in fan-out's photo answers (one file):
///
/// ```text
/// <u32 BE n ≤ MEDIA_INFO_BYTES_MAX> <n bytes: MediaInfo JSON>
/// then per file: <u64 BE length = the description's> <length bytes>
/// ```
pub fn encode_media_head(info: &MediaInfo) -> Vec<u8> {
    let info_json = serde_json::to_vec(info).expect("media descriptions serialize");
    let mut head = Vec::with_capacity(4 + info_json.len());
    head.extend_from_slice(&(info_json.len() as u32).to_be_bytes());
    head.extend_from_slice(&info_json);
    head
}

/// A whole item in memory: the head, then `files` of `kinds` in that order.
pub fn encode_media(info: &MediaInfo, files: &[(BlobKind, &[u8])]) -> Vec<u8> {
    let mut encoded = encode_media_head(info);
    for (_, bytes) in files {
        encoded.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        encoded.extend_from_slice(bytes);
    }
    encoded
}

/// Why an encoded media item (`encode_media`) does not decode: what in it is wrong.
#[derive(Debug, thiserror::Error)]
pub enum MediaDecodeError {
    #[error("the answer ends early")]
    Short,
    #[error("the description has {0} bytes; the limit is {MEDIA_INFO_BYTES_MAX}")]
    InfoTooLarge(usize),
    #[error("the description does not decode: {0}")]
    Info(serde_json::Error),
    #[error("asked for {asked}, got {got}")]
    OtherItem { asked: String, got: String },
    #[error("the {} file has {bytes} bytes; the limit is {MEDIA_BLOB_BYTES_MAX}", kind.name())]
    FileTooLarge { kind: BlobKind, bytes: u64 },
    #[error("the {} file has {length} bytes; its description says {expected}", kind.name())]
    FileLength { kind: BlobKind, length: u64, expected: u64 },
    #[error("{0} bytes after the last file")]
    Trailing(usize),
}

/// The length of a description from its 4-byte prefix, refused past the limit
/// before anything is allocated.
fn media_info_length(prefix: [u8; 4]) -> Result<usize, MediaDecodeError> {
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MEDIA_INFO_BYTES_MAX {
        return Err(MediaDecodeError::InfoTooLarge(length));
    }
    Ok(length)
}

/// A description of `media_id` whose every file is within the limit.
fn parse_media_info(info_json: &[u8], media_id: &str) -> Result<MediaInfo, MediaDecodeError> {
    let info: MediaInfo = serde_json::from_slice(info_json).map_err(MediaDecodeError::Info)?;
    if info.media_id != media_id {
        return Err(MediaDecodeError::OtherItem { asked: media_id.to_owned(), got: info.media_id });
    }
    for kind in BLOB_KINDS {
        let bytes = info.blob(kind).bytes;
        if bytes > MEDIA_BLOB_BYTES_MAX {
            return Err(MediaDecodeError::FileTooLarge { kind, bytes });
        }
    }
    Ok(info)
}

/// A file's length prefix must be what the description says.
fn check_file_length(info: &MediaInfo, kind: BlobKind, length: u64) -> Result<(), MediaDecodeError> {
    let expected = info.blob(kind).bytes;
    if length != expected {
        return Err(MediaDecodeError::FileLength { kind, length, expected });
    }
    Ok(())
}

/// Decodes an item in memory holding the files of `kinds`, in that order, and
/// nothing after them. Lengths are checked; hashes are the caller's to check.
pub fn decode_media<'a>(
    encoded: &'a [u8],
    media_id: &str,
    kinds: &[BlobKind],
) -> Result<(MediaInfo, Vec<&'a [u8]>), MediaDecodeError> {
    let short = || MediaDecodeError::Short;
    let prefix: [u8; 4] = encoded.get(..4).ok_or_else(short)?.try_into().expect("4 bytes");
    let info_end = 4 + media_info_length(prefix)?;
    let info = parse_media_info(encoded.get(4..info_end).ok_or_else(short)?, media_id)?;
    let mut rest = &encoded[info_end..];
    let mut files = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let length_prefix: [u8; 8] = rest.get(..8).ok_or_else(short)?.try_into().expect("8 bytes");
        let length = u64::from_be_bytes(length_prefix);
        check_file_length(&info, *kind, length)?;
        let file = rest.get(8..8 + length as usize).ok_or_else(short)?;
        files.push(file);
        rest = &rest[8 + length as usize..];
    }
    if !rest.is_empty() {
        return Err(MediaDecodeError::Trailing(rest.len()));
    }
    Ok((info, files))
}

// ----- fetching -----

/// Asks the sibling at the other end of `connection` for `media_id`: `None` when it
/// does not have it. The files are not checked against the description here (see
/// `Store::put_fetched_media`).
pub async fn fetch_media(
    connection: &quinn::Connection,
    media_id: &str,
) -> Result<Option<FetchedMedia>, MediaFetchError> {
    fetch_media_within(connection, media_id, Duration::from_millis(MEDIA_FETCH_TIMEOUT_MS)).await
}

async fn fetch_media_within(
    connection: &quinn::Connection,
    media_id: &str,
    timeout: Duration,
) -> Result<Option<FetchedMedia>, MediaFetchError> {
    if !is_sha256_hex(media_id) {
        return Err(MediaFetchError::BadMediaId(media_id.to_owned()));
    }
    tokio::time::timeout(timeout, fetch(connection, media_id)).await.map_err(|_| MediaFetchError::Timeout(timeout))?
}

async fn fetch(connection: &quinn::Connection, media_id: &str) -> Result<Option<FetchedMedia>, MediaFetchError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    let mut request = Vec::with_capacity(REQUEST_BYTES);
    request.extend_from_slice(MEDIA_REQUEST_MAGIC);
    request.extend_from_slice(media_id.as_bytes());
    send.write_all(&request).await?;
    send.finish()?;

    let mut status = [0u8; 1];
    recv.read_exact(&mut status).await?;
    match status[0] {
        STATUS_FOUND => {}
        STATUS_NOT_FOUND => {
            expect_end(&mut recv).await?;
            return Ok(None);
        }
        other => return Err(MediaFetchError::Malformed(format!("unknown status {other}"))),
    }
    let mut info_length = [0u8; 4];
    recv.read_exact(&mut info_length).await?;
    let malformed = |error: MediaDecodeError| MediaFetchError::Malformed(error.to_string());
    let info_length = media_info_length(info_length).map_err(malformed)?;
    let mut info_json = vec![0u8; info_length];
    recv.read_exact(&mut info_json).await?;
    let info = parse_media_info(&info_json, media_id).map_err(malformed)?;
    let mut files = Vec::with_capacity(BLOB_KINDS.len());
    for kind in BLOB_KINDS {
        let mut length = [0u8; 8];
        recv.read_exact(&mut length).await?;
        let length = u64::from_be_bytes(length);
        check_file_length(&info, kind, length).map_err(malformed)?;
        // Bounded: the description's lengths are at most `MEDIA_BLOB_BYTES_MAX`.
        let mut bytes = vec![0u8; length as usize];
        recv.read_exact(&mut bytes).await?;
        files.push(bytes);
    }
    expect_end(&mut recv).await?;
    let [original, display, thumb]: [Vec<u8>; 3] = files.try_into().expect("one file per kind");
    Ok(Some(FetchedMedia { info, original, display, thumb }))
}

/// The answer must end here.
async fn expect_end(recv: &mut quinn::RecvStream) -> Result<(), MediaFetchError> {
    recv.read_to_end(0)
        .await
        .map(drop)
        .map_err(|error| MediaFetchError::Malformed(format!("the answer does not end where it should: {error}")))
}

// ----- the fetcher -----

/// Limits and timings of the media fetcher. Units are last in the names.
#[derive(Debug, Clone)]
pub struct MediaFetchLimits {
    /// Missing media ids looked at per round (one scan of the owners table).
    pub ids_scanned_per_round_max: usize,
    /// Fetches started per round.
    pub ids_per_round_max: usize,
    pub fetches_in_flight_max: usize,
    /// A round runs this often, and whenever the fetcher is woken.
    pub round_interval_ms: u64,
    /// After a failed round for an id, it waits this long (doubling per failure, up
    /// to the max) before it is tried again.
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub fetch_timeout_ms: u64,
}

impl Default for MediaFetchLimits {
    fn default() -> Self {
        MediaFetchLimits {
            ids_scanned_per_round_max: 4096,
            ids_per_round_max: 256,
            fetches_in_flight_max: 16,
            round_interval_ms: 2_000,
            retry_backoff_initial_ms: 2_000,
            retry_backoff_max_ms: 300_000,
            fetch_timeout_ms: MEDIA_FETCH_TIMEOUT_MS,
        }
    }
}

/// Counters of the media fetcher, for metrics and tests.
#[derive(Debug, Default)]
pub struct MediaFetchStats {
    /// Items fetched and stored.
    pub fetched: AtomicU64,
    /// Items no sibling gave this round (not found, unreachable, refused); retried later.
    pub failed: AtomicU64,
    /// Answers whose files did not match their description (counted per answer).
    pub refused: AtomicU64,
    /// Missing items at the end of the last round's scan (at most
    /// `ids_scanned_per_round_max`).
    pub missing: AtomicU64,
}

type ConnectionSource = dyn Fn() -> Vec<(NodeId, quinn::Connection)> + Send + Sync;

/// Fetches the files of media items this node has owners of but no files for, from
/// whichever connected sibling has them.
pub struct MediaFetcher {
    store: Arc<Store>,
    connections: Box<ConnectionSource>,
    limits: MediaFetchLimits,
    stats: Arc<MediaFetchStats>,
    /// Ids whose last round failed: (failures, not before).
    retry_at: BTreeMap<String, (u32, Instant)>,
    /// Where the next scan starts, when more are missing than one scan looks at.
    scan_after: Option<String>,
    /// Where verified items, hash mismatches, malformed answers and timeouts are scored.
    trust: Option<Arc<TrustBook>>,
}

/// How one item's fetch ended.
enum Outcome {
    Stored,
    Unavailable,
}

impl MediaFetcher {
    pub fn new(
        store: Arc<Store>,
        connections: impl Fn() -> Vec<(NodeId, quinn::Connection)> + Send + Sync + 'static,
        limits: MediaFetchLimits,
    ) -> MediaFetcher {
        MediaFetcher {
            store,
            connections: Box::new(connections),
            limits,
            stats: Arc::new(MediaFetchStats::default()),
            retry_at: BTreeMap::new(),
            scan_after: None,
            trust: None,
        }
    }

    /// Scores each sibling's answers in `trust`.
    pub fn with_trust(mut self, trust: Arc<TrustBook>) -> MediaFetcher {
        self.trust = Some(trust);
        self
    }

    pub fn stats(&self) -> Arc<MediaFetchStats> {
        self.stats.clone()
    }

    /// Runs rounds back to back while they store something (a cold catch-up is paced
    /// by the link and the disk, not by a timer); once a round stores nothing, waits
    /// `round_interval_ms` or until `wake` is notified (`notify_one`, so a wake during
    /// a round is not lost). Runs until the task is aborted.
    pub fn spawn(mut self, wake: Arc<Notify>) -> JoinHandle<()> {
        let run = async move {
            let interval = Duration::from_millis(self.limits.round_interval_ms.max(1));
            loop {
                if self.round().await == 0 {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(interval) => {}
                    }
                }
            }
        };
        tokio::spawn(run.instrument(tracing::info_span!("media_fetcher")))
    }

    /// One pass: scan for missing items, fetch those not waiting for a retry; returns
    /// how many were stored.
    async fn round(&mut self) -> usize {
        let connections = (self.connections)();
        if connections.is_empty() {
            return 0;
        }
        let scan_limit = self.limits.ids_scanned_per_round_max.max(1);
        let scan = blocking({
            let (store, after) = (self.store.clone(), self.scan_after.clone());
            move || store.missing_media_after(after.as_deref(), scan_limit)
        })
        .await;
        let missing = match scan {
            Ok(Ok(missing)) => missing,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot list missing media");
                return 0;
            }
            Err(error) => {
                tracing::error!(%error, "cannot list missing media");
                return 0;
            }
        };
        if missing.len() < scan_limit {
            if self.scan_after.is_none() {
                // A whole scan: forget retries of ids that are no longer missing.
                self.retry_at.retain(|media_id, _| missing.binary_search(media_id).is_ok());
            }
            self.scan_after = None;
        } else {
            self.scan_after = missing.last().cloned();
        }
        self.stats.missing.store(missing.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        let due: Vec<String> = missing
            .into_iter()
            .filter(|media_id| self.retry_at.get(media_id).is_none_or(|(_, at)| *at <= now))
            .take(self.limits.ids_per_round_max)
            .collect();
        if due.is_empty() {
            return 0;
        }
        tracing::debug!(due = due.len(), siblings = connections.len(), "fetching missing media");
        let connections = Arc::new(connections);
        let timeout = Duration::from_millis(self.limits.fetch_timeout_ms);
        let mut fetches = JoinSet::new();
        let mut due = due.into_iter();
        let mut stored = 0;
        loop {
            while fetches.len() < self.limits.fetches_in_flight_max.max(1) {
                let Some(media_id) = due.next() else { break };
                let fetch = fetch_from_any(
                    self.store.clone(),
                    connections.clone(),
                    media_id.clone(),
                    timeout,
                    self.stats.clone(),
                    self.trust.clone(),
                );
                fetches.spawn(async move { (media_id, fetch.await) }.in_current_span());
            }
            let Some(done) = fetches.join_next().await else { break };
            let Ok((media_id, outcome)) = done else { continue };
            stored += usize::from(matches!(outcome, Outcome::Stored));
            self.record(media_id, outcome);
        }
        stored
    }

    fn record(&mut self, media_id: String, outcome: Outcome) {
        match outcome {
            Outcome::Stored => {
                self.stats.fetched.fetch_add(1, Ordering::Relaxed);
                self.retry_at.remove(&media_id);
            }
            Outcome::Unavailable => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                let failures = self.retry_at.get(&media_id).map_or(0, |(failures, _)| *failures);
                let delay_ms = self
                    .limits
                    .retry_backoff_initial_ms
                    .saturating_mul(1 << failures.min(20))
                    .min(self.limits.retry_backoff_max_ms);
                self.retry_at
                    .insert(media_id, (failures.saturating_add(1), Instant::now() + Duration::from_millis(delay_ms)));
            }
        }
    }
}

/// Tries each sibling in turn (starting at one chosen by the id, to spread the load)
/// until one gives the item and it is stored.
async fn fetch_from_any(
    store: Arc<Store>,
    connections: Arc<Vec<(NodeId, quinn::Connection)>>,
    media_id: String,
    timeout: Duration,
    stats: Arc<MediaFetchStats>,
    trust: Option<Arc<TrustBook>>,
) -> Outcome {
    let observe = |peer: NodeId, event: TrustEvent, detail: &str| {
        if let Some(trust) = &trust {
            trust.observe(peer, event, detail);
        }
    };
    let start = usize::from(media_id.as_bytes()[0]) % connections.len();
    for index in 0..connections.len() {
        let (peer, connection) = &connections[(start + index) % connections.len()];
        let fetched = match fetch_media_within(connection, &media_id, timeout).await {
            Ok(Some(fetched)) => fetched,
            Ok(None) => {
                tracing::debug!(%peer, media_id, "sibling does not have the media");
                continue;
            }
            Err(error) => {
                tracing::debug!(%peer, media_id, %error, "cannot fetch media from sibling");
                match error {
                    MediaFetchError::Timeout(_) => observe(*peer, TrustEvent::Timeout, "a media fetch timed out"),
                    MediaFetchError::Malformed(reason) => {
                        observe(*peer, TrustEvent::BadFrame, &format!("malformed media answer: {reason}"))
                    }
                    _ => {}
                }
                continue;
            }
        };
        let stored = blocking({
            let store = store.clone();
            move || store.put_fetched_media(&fetched.info, &fetched.original, &fetched.display, &fetched.thumb)
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                tracing::info!(%peer, media_id, "fetched media from sibling");
                observe(*peer, TrustEvent::Verified, "media whose hashes matched");
                return Outcome::Stored;
            }
            Ok(Err(StoreError::Corrupt(reason))) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, media_id, %reason, "refused media from sibling");
                observe(*peer, TrustEvent::HashMismatch, &reason);
            }
            Ok(Err(error)) => {
                // A local failure (disk, database): another sibling would not help.
                tracing::error!(media_id, %error, "cannot store fetched media");
                return Outcome::Unavailable;
            }
            Err(error) => {
                tracing::error!(media_id, %error, "cannot store fetched media");
                return Outcome::Unavailable;
            }
        }
    }
    Outcome::Unavailable
}

/// Starts a `MediaFetcher` with the default limits.
pub fn spawn_media_fetcher(
    store: Arc<Store>,
    connections: impl Fn() -> Vec<(NodeId, quinn::Connection)> + Send + Sync + 'static,
    wake: Arc<Notify>,
) -> JoinHandle<()> {
    MediaFetcher::new(store, connections, MediaFetchLimits::default()).spawn(wake)
}

#[cfg(test)]
mod tests;
