//! `edgenode upload`: photos from files and folders to a node (any node, not only the
//! one on this machine) as one of its users, over HTTP/2 checked against the node's
//! pin or its CA; several at once, skipping what the node has (by SHA-256), optionally
//! one post per photo; resumable after Ctrl-C or a crash; a progress bar and a summary.
//!
//! What is done is kept in a state journal, `$XDG_STATE_HOME/edgenode/upload-<node
//! id>-<handle>.jsonl` (or `--state FILE`): one JSON record per line, appended as
//! things happen — a file's hash (a rerun reads no unchanged file twice), a photo the
//! node holds for the user, a post about to be made (on disk before the request
//! leaves), a post made. A crash tears at most the last line, which is ignored. A rerun
//! sends nothing the journal says the node has, and makes no post twice: where a post
//! may exist that the journal does not record (its answer was lost, or the photo was
//! on the node already, sent from a phone), the user's posts are looked through first.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::{Bytes, BytesMut};
use http::{header, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http2::SendRequest;
use indicatif::{HumanBytes, HumanDuration, ProgressBar};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use edgenode::locking::lock;

use super::control::error_message;
use super::{Exit, EXIT_NO};

/// Extensions of the files taken from folders: the formats a node accepts (JPEG, PNG,
/// WebP; `media::sniff` has the last word on each file's content).
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "webp"];
/// Folder levels walked below each folder given (symlinked folders are never followed).
const WALK_DEPTH_MAX: usize = 64;
/// Files one run takes at most.
const FILES_MAX: usize = 1_000_000;
/// Bytes read at a time, to hash a file and to send it.
const FILE_CHUNK_BYTES: usize = 256 * 1024;
/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a call other than an upload may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an upload may take: the node wants a body whole within 10 minutes.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(11 * 60);
/// Tries of one request that the node answers "busy, retry" or that a broken
/// connection interrupts.
const ATTEMPTS_MAX: u32 = 6;
/// The longest wait before a retry; a node that asks for more (an hourly upload
/// limit reached) stops the run.
const RETRY_WAIT_MAX: Duration = Duration::from_secs(60);
/// Largest answer read (answers are small JSON: a media item, a post, a page of posts).
const ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// After Ctrl-C, how long requests in flight may take to finish before they are
/// abandoned (a second Ctrl-C abandons them at once).
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Posts per page, and pages at most, when looking through the user's posts.
const POSTS_PAGE_LIMIT: usize = 100;
const POSTS_PAGES_MAX: usize = 2_000;
/// Without a terminal, a progress line every this many files.
const PROGRESS_LINE_FILES: u64 = 100;
/// Failures listed in the summary table (`--json` lists them all).
const FAILURES_LISTED_MAX: usize = 20;
/// The state journal's format.
const STATE_VERSION: u32 = 1;

/// `edgenode upload`'s arguments.
#[derive(clap::Args)]
pub struct UploadArgs {
    /// The node's address, as its web app or `edgenode status` shows it
    /// (https://harbour-box.local:8443; without a scheme, port 8443 is assumed).
    #[arg(long, value_name = "URL")]
    to: String,
    /// The node's key pin, `sha256/…`, as `edgenode status` prints it.
    #[arg(long, required_unless_present = "ca", conflicts_with = "ca")]
    pin: Option<String>,
    /// Trust the node through its CA certificate instead of a pin (its ca.crt, PEM or
    /// DER); the URL's host must then be one of the node's names or addresses.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Your handle on the node. The password is read from EDGENODE_PASSWORD, else
    /// asked for on the terminal.
    #[arg(long)]
    handle: String,
    /// A session token of that handle, instead of a password. Tokens are base64url,
    /// so one may start with `-`.
    #[arg(long, allow_hyphen_values = true)]
    token: Option<String>,
    /// Make one post per photo.
    #[arg(long)]
    post: bool,
    /// Who sees the posts.
    #[arg(long, value_enum, default_value_t = Visibility::Followers)]
    visibility: Visibility,
    /// Caption of each post: `{date}` is the capture date from EXIF (2024-06-01, or
    /// nothing), `{name}` the file name without its extension.
    #[arg(long, default_value = "{date}")]
    caption: String,
    /// Photos handled at once (hashing, checking, posting); at most 3 are sent at
    /// once, as a node takes 4 uploads at a time from one user.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// The state journal [default: $XDG_STATE_HOME/edgenode/upload-<node id>-<handle>.jsonl].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Photos, and folders to take photos from (recursively, in name order).
    #[arg(required = true, value_name = "FILES|DIRS")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Visibility {
    Public,
    Followers,
    Private,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Followers => "followers",
            Visibility::Private => "private",
        }
    }
}

/// Runs `edgenode upload`. Exits 0 when every photo is on the node (and posted, with
/// `--post`), 1 when any failed or the node stopped the run, 130 after Ctrl-C, 143
/// after SIGTERM; the summary says why.
pub async fn upload(args: UploadArgs) -> Result<()> {
    let started = Instant::now();
    edgenode::core::text::check_handle(&args.handle).map_err(|error| anyhow!("--handle {}: {error}", args.handle))?;
    let target = Target::parse(&args.to)?;
    let node = NodeClient::new(target, &args)?;
    let never = CancellationToken::new();
    let about = node.call_json(Method::GET, "/api/v1/node", None, None, &never).await.map_err(Halt::into_error)?;
    if !about.status.is_success() {
        bail!("{} does not look like an Edgenode node: GET /api/v1/node answered {}", node.target, about.describe());
    }
    let about = about.json();
    let node_id = about["node_id"].as_str().filter(|id| !id.is_empty()).context("the node did not say its id")?;
    let node_name = about["name"].as_str().unwrap_or(node_id).to_owned();

    let state_path = match &args.state {
        Some(path) => path.clone(),
        None => default_state_path(node_id, &args.handle)?,
    };
    let journal = Arc::new(Journal::open(&state_path, node_id, &args.handle)?);
    let session = Session::start(&node, &args, &node_name, &journal).await?;
    let quota_left_bytes = check_token(&node, &session.token, &args.handle).await?;

    let walked = walk(&args.paths)?;
    let posting = args.post.then(|| Posting { visibility: args.visibility, caption: args.caption.clone() });
    let mut tally = Tally::default();
    let work: Vec<Candidate> = {
        let facts = lock(&journal.facts);
        walked
            .files
            .iter()
            .filter(|file| {
                let done = facts.sha256_of(file).is_some_and(|sha256| facts.is_done(sha256, posting.is_some()));
                tally.done_before += u64::from(done);
                !done
            })
            .cloned()
            .collect()
    };
    let work_bytes: u64 = work.iter().map(|file| file.size).sum();
    for (path, reason) in &walked.unreadable {
        tally.failures.push(Failure { path: path.display().to_string(), reason: reason.clone() });
    }
    eprintln!(
        "uploading {} ({}) to {node_name} ({node_id}) as {}{}{}",
        photos(work.len() as u64),
        HumanBytes(work_bytes),
        args.handle,
        if posting.is_some() { format!(", one {} post each", args.visibility.as_str()) } else { String::new() },
        if tally.done_before > 0 { format!("; {} done in an earlier run", tally.done_before) } else { String::new() },
    );
    if let Some(left) = quota_left_bytes.filter(|left| work_bytes > *left) {
        eprintln!(
            "note: your storage quota on this node has {} left, less than these photos need; \
             uploads past it will fail (ask the node's admin for more)",
            HumanBytes(left)
        );
    }

    let run = Arc::new(Run {
        node,
        token: session.token.clone(),
        handle: args.handle.clone(),
        journal,
        progress: Progress::new(work.len() as u64, work_bytes),
        tally: Mutex::new(tally),
        stop: CancellationToken::new(),
        stopped_because: Mutex::new(None),
        // One below the node's per-user limit: a phone of the same user can still upload
        // meanwhile, and a node converts only a few at a time anyway.
        upload_lanes: tokio::sync::Semaphore::new(
            usize::from(args.concurrency).clamp(1, (edgenode::api::UPLOADS_PER_USER_IN_FLIGHT_MAX - 1).max(1)),
        ),
        claimed: Mutex::new(HashSet::new()),
        posting,
        posted_media: tokio::sync::OnceCell::new(),
    });
    let signal_code = run_workers(&run, work, usize::from(args.concurrency)).await?;
    run.progress.finish();
    if session.signed_in {
        session.end(&run.node).await;
    }

    let tally = std::mem::take(&mut *lock(&run.tally));
    let summary = Summary {
        node_id: node_id.to_owned(),
        photos: walked.files.len() as u64,
        uploaded: tally.uploaded,
        uploaded_bytes: tally.uploaded_bytes,
        already_on_node: tally.already_on_node,
        done_before: tally.done_before,
        same_photo: tally.same_photo,
        posted: tally.posted,
        already_posted: tally.already_posted,
        failed: tally.failures.len() as u64,
        not_done: run.progress.total_files.saturating_sub(run.progress.files_done.load(Ordering::Relaxed)),
        failures: tally.failures,
        ignored_files: walked.ignored,
        seconds: started.elapsed().as_secs_f64(),
        interrupted: signal_code.is_some(),
        stopped_because: lock(&run.stopped_because).clone(),
        visibility: run.posting.as_ref().map(|posting| posting.visibility.as_str()),
        state_file: state_path.display().to_string(),
    };
    summary.print(args.json)?;
    match signal_code {
        Some(code) => Err(Exit::new(code, "").into()),
        None if summary.failed > 0 || summary.stopped_because.is_some() || summary.not_done > 0 => {
            Err(Exit::new(EXIT_NO, "").into())
        }
        None => Ok(()),
    }
}

/// Runs `concurrency` workers over `work` until they are done, or stopped: the first
/// Ctrl-C (or SIGTERM) lets requests in flight finish (within `STOP_GRACE`) and starts
/// no more; a second abandons them. Returns the exit code a signal asks for.
async fn run_workers(run: &Arc<Run>, work: Vec<Candidate>, concurrency: usize) -> Result<Option<u8>> {
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(work.len()) {
        let (run, work, next) = (run.clone(), work.clone(), next.clone());
        workers.spawn(async move {
            while !run.stop.is_cancelled() {
                let Some(file) = work.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                run.process(file).await;
            }
        });
    }
    let mut interrupts = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminations = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut signal_code = None;
    let mut grace_ends: Option<tokio::time::Instant> = None;
    loop {
        let deadline = grace_ends;
        let grace = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let code = tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Some(_) => continue,
            },
            _ = interrupts.recv() => 130,
            _ = terminations.recv() => 143,
            () = grace => {
                run.progress.note("abandoning the requests still in flight");
                workers.abort_all();
                grace_ends = None;
                continue;
            }
        };
        if signal_code.is_some() {
            run.progress.note("abandoning the requests in flight");
            workers.abort_all();
            continue;
        }
        signal_code = Some(code);
        run.stop.cancel();
        grace_ends = Some(tokio::time::Instant::now() + STOP_GRACE);
        run.progress.note(
            "interrupted: finishing what is in flight (Ctrl-C again to abandon it); run the same command to go on",
        );
    }
    Ok(signal_code)
}

// ---------------------------------------------------------------------------------------
// One photo

/// The run every worker shares.
struct Run {
    node: NodeClient,
    token: String,
    handle: String,
    journal: Arc<Journal>,
    progress: Progress,
    tally: Mutex<Tally>,
    /// Cancelled by Ctrl-C, or when the node refuses everything from here on: no
    /// request starts after it.
    stop: CancellationToken,
    /// Why the node stopped the run (token refused, quota full), when it did.
    stopped_because: Mutex<Option<String>>,
    upload_lanes: tokio::sync::Semaphore,
    /// The SHA-256 of every photo this run took up (copies go once).
    claimed: Mutex<HashSet<String>>,
    posting: Option<Posting>,
    /// Media id → post id over the user's posts, read from the node when first needed.
    posted_media: tokio::sync::OnceCell<HashMap<String, String>>,
}

struct Posting {
    visibility: Visibility,
    caption: String,
}

/// Why a photo did not get done: Ctrl-C (it is left for the next run), or a failure
/// with the reason a person reads.
#[derive(Debug)]
enum Halt {
    Stopped,
    Failed(String),
}

impl Halt {
    fn into_error(self) -> anyhow::Error {
        match self {
            Halt::Stopped => anyhow!("interrupted"),
            Halt::Failed(reason) => anyhow!(reason),
        }
    }
}

/// How a photo got onto the node.
enum Sent {
    Uploaded,
    AlreadyThere,
}

impl Run {
    async fn process(&self, file: &Candidate) {
        let mut bytes_counted = false;
        match self.upload_and_post(file, &mut bytes_counted).await {
            Ok(()) => {}
            Err(Halt::Stopped) => return,
            Err(Halt::Failed(reason)) => {
                lock(&self.tally).failures.push(Failure { path: file.path.display().to_string(), reason });
            }
        }
        if !bytes_counted {
            self.progress.add_bytes(file.size);
        }
        self.progress.file_done();
    }

    async fn upload_and_post(&self, file: &Candidate, bytes_counted: &mut bool) -> Result<(), Halt> {
        let cached_sha256 = lock(&self.journal.facts).sha256_of(file).map(str::to_owned);
        let needs_date = self.posting.as_ref().is_some_and(|posting| posting.caption.contains("{date}"));
        let path = file.path.clone();
        let known = cached_sha256.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&path, known, needs_date))
            .await
            .map_err(|error| Halt::Failed(format!("reading it failed: {error}")))?
            .map_err(Halt::Failed)?;
        let sha256 = prepared.sha256;
        if cached_sha256.is_none() {
            let record = Record::Hashed {
                path: file.key.clone(),
                size: file.size,
                modified_ns: file.modified_ns,
                sha256: sha256.clone(),
            };
            self.record(record, false).await?;
        }
        if !self.claim(&sha256) {
            lock(&self.tally).same_photo += 1;
            return Ok(());
        }
        let (uploaded_before, post_unknown) = {
            let facts = lock(&self.journal.facts);
            if facts.is_done(&sha256, self.posting.is_some()) {
                drop(facts);
                lock(&self.tally).done_before += 1;
                return Ok(());
            }
            (facts.uploaded.contains(&sha256), facts.posting.contains(&sha256))
        };
        let mut found_on_node = false;
        if !uploaded_before {
            match self.send_photo(file, &sha256, bytes_counted).await? {
                Sent::Uploaded => {
                    let mut tally = lock(&self.tally);
                    tally.uploaded += 1;
                    tally.uploaded_bytes += file.size;
                }
                Sent::AlreadyThere => {
                    found_on_node = true;
                    lock(&self.tally).already_on_node += 1;
                }
            }
            self.record(Record::Uploaded { sha256: sha256.clone() }, false).await?;
        }
        let Some(posting) = &self.posting else { return Ok(()) };
        self.check_stop()?;
        // A post of this photo may exist that the journal does not know of: one whose
        // answer never came, or one made from a phone that sent the photo first.
        if found_on_node || post_unknown {
            if let Some(post_id) = self.posted_media().await?.get(&sha256) {
                self.record(Record::Posted { sha256: sha256.clone(), post_id: post_id.clone() }, false).await?;
                lock(&self.tally).already_posted += 1;
                return Ok(());
            }
        }
        let caption = caption(&posting.caption, &file.path, prepared.date.as_deref());
        let body = json!({ "caption": caption, "media": [sha256], "visibility": posting.visibility.as_str() });
        // On disk before the request leaves: if this process dies before the answer
        // is recorded, the next run looks for the post instead of making another.
        self.record(Record::Posting { sha256: sha256.clone() }, true).await?;
        let answer =
            self.node.call_json(Method::POST, "/api/v1/posts", Some(&self.token), Some(body), &self.stop).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(Halt::Failed(reason)) => {
                return Err(Halt::Failed(format!(
                    "posting it: {reason} (whether the post was made is checked on the next run)"
                )))
            }
            Err(Halt::Stopped) => return Err(Halt::Stopped),
        };
        if answer.status != StatusCode::CREATED {
            // The node wrote nothing (docs/api.md): posting it again later is safe.
            self.record(Record::NotPosted { sha256: sha256.clone() }, false).await?;
            return Err(self.refused("posting it", &answer));
        }
        let post_id = answer.json()["id"].as_str().unwrap_or_default().to_owned();
        self.record(Record::Posted { sha256, post_id }, false).await?;
        lock(&self.tally).posted += 1;
        Ok(())
    }

    /// Puts the photo on the node unless it has it for this user already: asked first
    /// (a HEAD of the original, which only its owners may fetch), then sent.
    async fn send_photo(&self, file: &Candidate, sha256: &str, bytes_counted: &mut bool) -> Result<Sent, Halt> {
        self.check_stop()?;
        let original = &format!("/api/v1/media/{sha256}/original");
        let head = || async move { self.node.request(Method::HEAD, original, Some(&self.token), empty_body()) };
        let answer = self.node.call(head, true, CALL_TIMEOUT, &self.stop).await?;
        match answer.status {
            StatusCode::OK => return Ok(Sent::AlreadyThere),
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.refused("asking whether the node has it", &answer)),
        }
        let _lane = tokio::select! {
            lane = self.upload_lanes.acquire() => lane.expect("the upload lanes are never closed"),
            () = self.stop.cancelled() => return Err(Halt::Stopped),
        };
        let sent_bytes = &Arc::new(AtomicU64::new(0));
        let media = &format!("/api/v1/media/{sha256}");
        let answer = self
            .node
            .call(
                || async move {
                    // A try after a failed one starts the count again.
                    self.progress.remove_bytes(sent_bytes.swap(0, Ordering::Relaxed));
                    let opened = tokio::fs::File::open(&file.path).await.context("opening it again")?;
                    let (progress, sent_bytes) = (self.progress.bar.clone(), sent_bytes.clone());
                    let counter = self.progress.bytes_done.clone();
                    let on_chunk = move |length: u64| {
                        sent_bytes.fetch_add(length, Ordering::Relaxed);
                        counter.fetch_add(length, Ordering::Relaxed);
                        if let Some(bar) = &progress {
                            bar.inc(length);
                        }
                    };
                    let body = FileBody::new(opened, file.size, on_chunk).boxed();
                    let mut request = self.node.request(Method::PUT, media, Some(&self.token), body)?;
                    let headers = request.headers_mut();
                    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(file.size));
                    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
                    Ok(request)
                },
                true,
                UPLOAD_TIMEOUT,
                &self.stop,
            )
            .await;
        let answer = match answer {
            Ok(answer) if answer.status.is_success() => answer,
            other => {
                self.progress.remove_bytes(sent_bytes.swap(0, Ordering::Relaxed));
                let answer = other?;
                return Err(self.refused("uploading it", &answer));
            }
        };
        *bytes_counted = true;
        Ok(if answer.status == StatusCode::CREATED { Sent::Uploaded } else { Sent::AlreadyThere })
    }

    /// Media id → post id over every post of the user, read once per run.
    async fn posted_media(&self) -> Result<&HashMap<String, String>, Halt> {
        self.posted_media
            .get_or_try_init(|| async move {
                let mut posted = HashMap::new();
                let mut cursor: Option<String> = None;
                for _ in 0..POSTS_PAGES_MAX {
                    let mut path = format!("/api/v1/users/{}/posts?limit={POSTS_PAGE_LIMIT}", self.handle);
                    if let Some(cursor) = &cursor {
                        path.push_str(&format!("&cursor={cursor}"));
                    }
                    let answer = self.node.call_json(Method::GET, &path, Some(&self.token), None, &self.stop).await?;
                    if answer.status != StatusCode::OK {
                        return Err(self.refused("looking through your posts", &answer));
                    }
                    let page = answer.json();
                    for post in page["items"].as_array().into_iter().flatten() {
                        let post_id = post["id"].as_str().unwrap_or_default();
                        for media in post["media"].as_array().into_iter().flatten() {
                            if let Some(media_id) = media["id"].as_str() {
                                posted.insert(media_id.to_owned(), post_id.to_owned());
                            }
                        }
                    }
                    match page["next_cursor"].as_str() {
                        Some(next) => cursor = Some(next.to_owned()),
                        None => return Ok(posted),
                    }
                }
                Err(Halt::Failed(format!(
                    "looking through your posts: more than {} of them",
                    POSTS_PAGES_MAX * POSTS_PAGE_LIMIT
                )))
            })
            .await
    }

    /// Whether this is the run's first file with these bytes (copies go once).
    fn claim(&self, sha256: &str) -> bool {
        lock(&self.claimed).insert(sha256.to_owned())
    }

    fn check_stop(&self) -> Result<(), Halt> {
        if self.stop.is_cancelled() {
            Err(Halt::Stopped)
        } else {
            Ok(())
        }
    }

    /// A refusal of `doing`, as the photo's failure; refusals that every later
    /// request would get too (the token, the quota, the hourly limit) stop the run.
    fn refused(&self, doing: &str, answer: &Answer) -> Halt {
        let reason = format!("{doing}: the node answered {}", answer.describe());
        let stops_the_run = matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::INSUFFICIENT_STORAGE
        ) || answer.code() == "upload_rate_exceeded";
        if stops_the_run {
            lock(&self.stopped_because).get_or_insert_with(|| reason.clone());
            self.stop.cancel();
        }
        Halt::Failed(reason)
    }

    async fn record(&self, record: Record, durable: bool) -> Result<(), Halt> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.append(record, durable))
            .await
            .map_err(|error| Halt::Failed(format!("writing the state file failed: {error}")))?
            .map_err(|error| {
                let reason = format!("writing the state file {} failed: {error}", self.journal.path.display());
                lock(&self.stopped_because).get_or_insert_with(|| reason.clone());
                self.stop.cancel();
                Halt::Failed(reason)
            })
    }
}

struct Prepared {
    sha256: String,
    /// The capture date, `YYYY-MM-DD`, when asked for and the file has one.
    date: Option<String>,
}

/// The file's SHA-256 (unless known) after checking that it is an image the node
/// takes, and its capture date when `needs_date`. Blocking: reads the file.
fn prepare(path: &Path, known_sha256: Option<String>, needs_date: bool) -> Result<Prepared, String> {
    let sha256 = match known_sha256 {
        Some(sha256) => sha256,
        None => hash_image_file(path)?,
    };
    let date = if needs_date { capture_date(path) } else { None };
    Ok(Prepared { sha256, date })
}

fn hash_image_file(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|error| format!("cannot read it: {error}"))?;
    let mut buffer = vec![0u8; FILE_CHUNK_BYTES];
    let mut hasher = Sha256::new();
    let mut first = true;
    loop {
        let length = read_full(&mut file, &mut buffer).map_err(|error| format!("cannot read it: {error}"))?;
        if first && edgenode::media::sniff(&buffer[..length]).is_none() {
            return Err("not a JPEG, PNG or WebP image (the node takes only those)".to_owned());
        }
        first = false;
        hasher.update(&buffer[..length]);
        if length < buffer.len() {
            return Ok(edgenode::store::hex(&hasher.finalize()));
        }
    }
}

/// Reads until `buffer` is full or the file ends; how much was read.
fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(length) => filled += length,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// When the photo was taken, `YYYY-MM-DD`, from EXIF (DateTimeOriginal, else
/// DateTimeDigitized, else DateTime); cameras' blank and zero dates count as none.
fn capture_date(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let exif = exif::Reader::new().read_from_container(&mut BufReader::new(file)).ok()?;
    [exif::Tag::DateTimeOriginal, exif::Tag::DateTimeDigitized, exif::Tag::DateTime].into_iter().find_map(|tag| {
        let field = exif.get_field(tag, exif::In::PRIMARY)?;
        let exif::Value::Ascii(values) = &field.value else { return None };
        let date = exif::DateTime::from_ascii(values.first()?).ok()?;
        let plausible = date.year >= 1800 && (1..=12).contains(&date.month) && (1..=31).contains(&date.day);
        plausible.then(|| format!("{:04}-{:02}-{:02}", date.year, date.month, date.day))
    })
}

/// The caption `template` gives for the photo at `path`: `{name}` is the file name
/// without extension, `{date}` the capture date or nothing; runs of spaces made by an
/// empty field become one.
fn caption(template: &str, path: &Path, date: Option<&str>) -> String {
    let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    let text = template.replace("{name}", &name).replace("{date}", date.unwrap_or(""));
    text.split(' ').filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------
// Files

/// A file to upload.
#[derive(Debug, Clone)]
struct Candidate {
    /// As given or found (what a person reads).
    path: PathBuf,
    /// Its absolute path, the key of its hash in the journal.
    key: String,
    size: u64,
    modified_ns: u64,
}

#[derive(Debug, Default)]
struct Walked {
    files: Vec<Candidate>,
    /// Files in the folders that are not images the node takes (by extension).
    ignored: u64,
    /// Folders or files that could not be read, and why.
    unreadable: Vec<(PathBuf, String)>,
}

/// The files named, and the images under the folders named, in a stable order: as
/// given, each folder in name order, depth first; hidden files and folders (a leading
/// dot) are left out, symlinked folders are not followed. A file named twice counts once.
fn walk(paths: &[PathBuf]) -> Result<Walked> {
    let mut walked = Walked::default();
    let mut seen = HashSet::new();
    for path in paths {
        let metadata = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        if metadata.is_dir() {
            walk_dir(path, 0, &mut walked, &mut seen)?;
        } else {
            add_file(path, &metadata, &mut walked, &mut seen)?;
        }
    }
    Ok(walked)
}

fn walk_dir(dir: &Path, depth: usize, walked: &mut Walked, seen: &mut HashSet<String>) -> Result<()> {
    if depth > WALK_DEPTH_MAX {
        walked.unreadable.push((dir.to_owned(), format!("more than {WALK_DEPTH_MAX} folder levels deep: left out")));
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir).and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>()) {
        Ok(entries) => entries,
        Err(error) => {
            walked.unreadable.push((dir.to_owned(), format!("cannot read the folder: {error}")));
            return Ok(());
        }
    };
    let mut entries: Vec<_> =
        entries.into_iter().filter(|entry| !entry.file_name().as_encoded_bytes().starts_with(b".")).collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else { continue };
        if file_type.is_dir() {
            walk_dir(&path, depth + 1, walked, seen)?;
            continue;
        }
        let is_image = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| IMAGE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str()));
        // A symlink counts when it leads to a file (never into a folder: no loops).
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() && is_image => add_file(&path, &metadata, walked, seen)?,
            Ok(metadata) if metadata.is_file() => walked.ignored += 1,
            Ok(_) => {}
            Err(error) => walked.unreadable.push((path, format!("cannot read it: {error}"))),
        }
    }
    Ok(())
}

fn add_file(path: &Path, metadata: &std::fs::Metadata, walked: &mut Walked, seen: &mut HashSet<String>) -> Result<()> {
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_owned()).to_string_lossy().into_owned();
    if !seen.insert(key.clone()) {
        return Ok(());
    }
    if walked.files.len() == FILES_MAX {
        bail!("more than {FILES_MAX} files: upload them in parts");
    }
    let modified_ns = metadata
        .modified()
        .ok()
        .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
    walked.files.push(Candidate { path: path.to_owned(), key, size: metadata.len(), modified_ns });
    Ok(())
}

/// A file's bytes as a request body, read a chunk at a time as the connection takes
/// them (HTTP/2 flow control paces the reads); `on_chunk` hears of each chunk sent.
struct FileBody<F> {
    file: tokio::io::Take<tokio::fs::File>,
    buffer: BytesMut,
    left: u64,
    on_chunk: F,
}

impl<F: Fn(u64) + Send + Sync + Unpin + 'static> FileBody<F> {
    fn new(file: tokio::fs::File, length: u64, on_chunk: F) -> FileBody<F> {
        FileBody { file: file.take(length), buffer: BytesMut::new(), left: length, on_chunk }
    }
}

impl<F: Fn(u64) + Send + Sync + Unpin + 'static> Body for FileBody<F> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        this.buffer.reserve(FILE_CHUNK_BYTES);
        let read =
            std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.file), context, &mut this.buffer));
        Poll::Ready(Some(match read {
            Ok(0) => {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file got shorter while it was sent"))
            }
            Ok(length) => {
                this.left = this.left.saturating_sub(length as u64);
                (this.on_chunk)(length as u64);
                Ok(Frame::data(this.buffer.split().freeze()))
            }
            Err(error) => Err(error),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

// ---------------------------------------------------------------------------------------
// The state journal

/// One line of the state journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// The first line: whose journal this is.
    Journal {
        version: u32,
        node_id: String,
        handle: String,
    },
    /// A file's hash, valid while its size and modification time are these.
    Hashed {
        path: String,
        size: u64,
        modified_ns: u64,
        sha256: String,
    },
    /// The node holds the photo for the user.
    Uploaded {
        sha256: String,
    },
    /// A post of the photo is being made (written to disk before the request).
    Posting {
        sha256: String,
    },
    Posted {
        sha256: String,
        post_id: String,
    },
    /// The node refused the post and wrote nothing.
    NotPosted {
        sha256: String,
    },
    /// The device token sign-in gave (a known device is never locked out by others' guesses).
    Device {
        device: String,
    },
}

#[derive(Debug)]
struct FileHash {
    size: u64,
    modified_ns: u64,
    sha256: String,
}

/// What the journal says, replayed.
#[derive(Debug, Default)]
struct Facts {
    hashes: HashMap<String, FileHash>,
    uploaded: HashSet<String>,
    /// SHA-256 → post id.
    posted: HashMap<String, String>,
    /// Posts sent whose outcome the journal does not know.
    posting: HashSet<String>,
    device: Option<String>,
}

impl Facts {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Journal { .. } => {}
            Record::Hashed { path, size, modified_ns, sha256 } => {
                self.hashes.insert(path, FileHash { size, modified_ns, sha256 });
            }
            Record::Uploaded { sha256 } => {
                self.uploaded.insert(sha256);
            }
            Record::Posting { sha256 } => {
                self.posting.insert(sha256);
            }
            Record::Posted { sha256, post_id } => {
                self.posting.remove(&sha256);
                self.uploaded.insert(sha256.clone());
                self.posted.insert(sha256, post_id);
            }
            Record::NotPosted { sha256 } => {
                self.posting.remove(&sha256);
            }
            Record::Device { device } => self.device = Some(device),
        }
    }

    /// The file's hash, if known for its current size and modification time.
    fn sha256_of(&self, file: &Candidate) -> Option<&str> {
        let known = self.hashes.get(&file.key)?;
        (known.size == file.size && known.modified_ns == file.modified_ns).then_some(known.sha256.as_str())
    }

    fn is_done(&self, sha256: &str, posting: bool) -> bool {
        if posting {
            self.posted.contains_key(sha256)
        } else {
            self.uploaded.contains(sha256)
        }
    }
}

/// The state journal: appended to, one line per record, by one run at a time.
struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    facts: Mutex<Facts>,
    _lock: nix::fcntl::Flock<File>,
}

impl Journal {
    fn open(path: &Path, node_id: &str, handle: &str) -> Result<Journal> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
        }
        let lock_path = path.with_extension("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
            anyhow!("another `edgenode upload` to this node as {handle} is running (it holds {})", lock_path.display())
        })?;

        let mut facts = Facts::default();
        let mut owner = None;
        let mut damaged_lines = 0;
        let mut ends_in_newline = true;
        match File::open(path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let length =
                        reader.read_until(b'\n', &mut line).with_context(|| format!("reading {}", path.display()))?;
                    if length == 0 {
                        break;
                    }
                    ends_in_newline = line.ends_with(b"\n");
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    // A line cut short by a crash is not JSON: it recorded nothing
                    // that anything waited for (durable records are synced whole).
                    match serde_json::from_slice::<Record>(text) {
                        Ok(Record::Journal { version, node_id, handle }) => owner = Some((version, node_id, handle)),
                        Ok(record) => facts.apply(record),
                        Err(_) => damaged_lines += 1,
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        }
        if let Some((version, owner_node_id, owner_handle)) = &owner {
            if *version > STATE_VERSION {
                bail!("{} was written by a newer edgenode (state version {version}); use that one", path.display());
            }
            if owner_node_id != node_id || owner_handle != handle {
                bail!(
                    "{} is the state of an upload to node {owner_node_id} as {owner_handle}, not {node_id} as \
                     {handle}: pass another --state",
                    path.display()
                );
            }
        }
        if damaged_lines > 1 {
            eprintln!("note: {damaged_lines} damaged lines of {} were skipped", path.display());
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !ends_in_newline {
            file.write_all(b"\n").with_context(|| format!("writing {}", path.display()))?;
        }
        let journal = Journal { path: path.to_owned(), file: Mutex::new(file), facts: Mutex::new(facts), _lock: lock };
        if owner.is_none() {
            let header =
                Record::Journal { version: STATE_VERSION, node_id: node_id.to_owned(), handle: handle.to_owned() };
            journal.append(header, true).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(journal)
    }

    /// Appends `record` as one line with one write to a file opened for appending, so
    /// a crash leaves whole lines and at most a torn last one; `durable` waits for the
    /// disk. Blocking.
    fn append(&self, record: Record, durable: bool) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = lock(&self.file);
        file.write_all(&line)?;
        if durable {
            file.sync_data()?;
        }
        drop(file);
        lock(&self.facts).apply(record);
        Ok(())
    }
}

/// `$XDG_STATE_HOME/edgenode/upload-<node id>-<handle>.jsonl`, `$XDG_STATE_HOME`
/// being `~/.local/state` when unset.
fn default_state_path(node_id: &str, handle: &str) -> Result<PathBuf> {
    let state_home = match std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").filter(|home| !home.is_empty()).context(
                "neither XDG_STATE_HOME nor HOME is set: say where to keep the upload's state with --state FILE",
            )?;
            PathBuf::from(home).join(".local/state")
        }
    };
    let node_id: String = node_id.chars().filter(char::is_ascii_alphanumeric).collect();
    Ok(state_home.join("edgenode").join(format!("upload-{node_id}-{handle}.jsonl")))
}

// ---------------------------------------------------------------------------------------
// The node

/// Where the node is: the URL's host and port.
#[derive(Debug, Clone)]
struct Target {
    /// Without brackets, for connecting and TLS.
    host: String,
    port: u16,
    /// `host:port` as a URL carries it (IPv6 in brackets).
    authority: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "https://{}", self.authority)
    }
}

impl Target {
    fn parse(to: &str) -> Result<Target> {
        let has_scheme = to.contains("://");
        let url = if has_scheme { to.to_owned() } else { format!("https://{to}") };
        let uri: http::Uri = url.parse().with_context(|| format!("--to {to}: not a URL"))?;
        if uri.scheme_str() != Some("https") {
            bail!("--to {to}: a node serves HTTPS only (https://…)");
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            bail!("--to {to}: give the node's address only, such as https://harbour-box.local:8443");
        }
        let authority = uri.authority().with_context(|| format!("--to {to}: no host"))?;
        // A URL's default port is 443; a bare host is taken as a node on its default port.
        let port = authority.port_u16().unwrap_or(if has_scheme { 443 } else { 8443 });
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Target { host, port, authority })
    }
}

type RequestBody = BoxBody<Bytes, std::io::Error>;

fn empty_body() -> RequestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The error code of an error answer, or empty.
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// `422 hash_mismatch: the body's SHA-256 is …`, as a person reads it.
    fn describe(&self) -> String {
        let message = error_message(&self.body);
        match (self.code(), message.is_empty()) {
            (code, true) if code.is_empty() => self.status.to_string(),
            (code, _) if code.is_empty() => format!("{}: {message}", self.status.as_u16()),
            (code, true) => format!("{} {code}", self.status.as_u16()),
            (code, false) => format!("{} {code}: {message}", self.status.as_u16()),
        }
    }

    /// How long to wait before trying again, when the node asked for a retry soon.
    fn retry_wait(&self, attempt: u32) -> Option<Duration> {
        let busy = matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT
        );
        let wait = self.retry_after.unwrap_or_else(|| backoff(attempt));
        (busy && wait <= RETRY_WAIT_MAX).then_some(wait)
    }
}

/// 1 s, 2 s, 4 s, … between tries, at most 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// What went wrong below HTTP, and whether the request may have reached the node.
struct ExchangeError {
    sent: bool,
    error: anyhow::Error,
}

/// The node over one HTTP/2 connection that every request shares (made again when it
/// breaks), its key checked against the pin or its certificate against the CA.
struct NodeClient {
    target: Target,
    connector: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    connection: tokio::sync::Mutex<Option<SendRequest<RequestBody>>>,
}

impl NodeClient {
    fn new(target: Target, args: &UploadArgs) -> Result<NodeClient> {
        let alpn = vec![edgenode::identity::ALPN_H2.to_vec()];
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).ok();
        let (tls, server_name) = match (&args.pin, &args.ca) {
            (Some(pin), _) => {
                if !pin.starts_with("sha256/") {
                    bail!("--pin {pin}: a pin is `sha256/…`, as `edgenode status` prints it");
                }
                let mut tls = edgenode::identity::pinned_client_config(pin.clone(), alpn);
                // Asked for no name, a node presents its own key's certificate (tls/),
                // the one the pin names; asked for a name, it may present an operator's
                // or an ACME certificate, with another key.
                tls.enable_sni = false;
                let fallback = rustls::pki_types::ServerName::try_from("localhost").expect("a valid name");
                (tls, name.unwrap_or(fallback))
            }
            (None, Some(ca)) => {
                let roots = read_ca(ca)?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .context("TLS versions")?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                tls.alpn_protocols = alpn;
                let name = name.with_context(|| format!("--to: {} is not a host name or address", target.host))?;
                (tls, name)
            }
            (None, None) => bail!("give the node's --pin (or its --ca certificate)"),
        };
        Ok(NodeClient {
            target,
            connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            server_name,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// A request to `path` on the node, with the token when given.
    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: RequestBody,
    ) -> Result<Request<RequestBody>> {
        let mut request = Request::builder().method(method).uri(format!("https://{}{path}", self.target.authority));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        Ok(request.body(body)?)
    }

    /// A JSON call (any request but an upload), tried again while the node says it is
    /// busy; a POST is not sent again once it may have reached the node.
    async fn call_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        stop: &CancellationToken,
    ) -> Result<Answer, Halt> {
        let idempotent = method != Method::POST || path == "/api/v1/sessions";
        let (method, body) = (&method, &body.map(|body| Bytes::from(body.to_string())));
        let make = || async move {
            let Some(body) = body.clone() else {
                return self.request(method.clone(), path, token, empty_body());
            };
            let mut request =
                self.request(method.clone(), path, token, Full::new(body).map_err(|never| match never {}).boxed())?;
            request.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            Ok(request)
        };
        self.call(make, idempotent, CALL_TIMEOUT, stop).await
    }

    /// Sends the request `make` builds, again (at most `ATTEMPTS_MAX` times) while the
    /// node answers busy (after the wait it asks for) or the connection breaks — the
    /// latter only for an `idempotent` request or one that never left. Other answers
    /// are returned as they are. `stop` cuts a wait short.
    async fn call<Make, Building>(
        &self,
        make: Make,
        idempotent: bool,
        timeout: Duration,
        stop: &CancellationToken,
    ) -> Result<Answer, Halt>
    where
        Make: Fn() -> Building,
        Building: std::future::Future<Output = Result<Request<RequestBody>>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = make().await.map_err(|error| Halt::Failed(format!("{error:#}")))?;
            let wait = match self.exchange(request, timeout).await {
                Ok(answer) => match answer.retry_wait(attempt) {
                    Some(wait) if attempt < ATTEMPTS_MAX => wait,
                    _ => return Ok(answer),
                },
                Err(failed) if attempt < ATTEMPTS_MAX && (idempotent || !failed.sent) => {
                    tracing::debug!(error = %failed.error, attempt, "request failed; trying again");
                    backoff(attempt)
                }
                Err(failed) => return Err(Halt::Failed(format!("{:#}", failed.error))),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return Err(Halt::Stopped),
            }
        }
    }

    /// One request and its whole answer, within `timeout`.
    async fn exchange(&self, request: Request<RequestBody>, timeout: Duration) -> Result<Answer, ExchangeError> {
        let mut sender = match self.sender().await {
            Ok(sender) => sender,
            Err(error) => return Err(ExchangeError { sent: false, error }),
        };
        let exchange = async {
            sender.ready().await.map_err(|error| ExchangeError { sent: false, error: error.into() })?;
            let response = sender.send_request(request).await.map_err(|error| ExchangeError {
                sent: !error.is_canceled(),
                error: anyhow::Error::from(error).context(format!("asking {}", self.target)),
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = Limited::new(response.into_body(), ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|error| ExchangeError { sent: true, error: anyhow!("reading the answer: {error}") })?
                .to_bytes();
            Ok(Answer { status, retry_after, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ExchangeError {
                sent: true,
                error: anyhow!("{} did not answer within {} s", self.target, timeout.as_secs()),
            }),
        }
    }

    /// The shared connection, made when there is none or it broke.
    async fn sender(&self) -> Result<SendRequest<RequestBody>> {
        let mut connection = self.connection.lock().await;
        if let Some(sender) = connection.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(sender) => sender?,
            Err(_) => bail!("{} did not answer within {} s", self.target, CONNECT_TIMEOUT.as_secs()),
        };
        *connection = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>> {
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .with_context(|| format!("connecting to {}", self.target))?;
        tcp.set_nodelay(true)?;
        let tls =
            self.connector.connect(self.server_name.clone(), tcp).await.with_context(|| {
                format!("TLS with {} failed: check that --pin (or --ca) is this node's", self.target)
            })?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .with_context(|| format!("HTTP/2 with {}", self.target))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "the connection to the node ended");
            }
        });
        Ok(sender)
    }
}

/// The CA certificates in `path` (PEM, one or more, or one DER certificate).
fn read_ca(path: &Path) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let bytes = std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
    let certificates: Vec<CertificateDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .with_context(|| format!("--ca {}: not PEM certificates", path.display()))?
    } else {
        vec![CertificateDer::from(bytes)]
    };
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        bail!("--ca {}: no certificate in it (give the node's ca.crt)", path.display());
    }
    Ok(roots)
}

/// The token the run uses: the one given, or one from signing in (revoked at the end).
struct Session {
    token: String,
    signed_in: bool,
}

impl Session {
    async fn start(node: &NodeClient, args: &UploadArgs, node_name: &str, journal: &Journal) -> Result<Session> {
        if let Some(token) = &args.token {
            return Ok(Session { token: token.clone(), signed_in: false });
        }
        let password = match std::env::var("EDGENODE_PASSWORD") {
            Ok(password) if !password.is_empty() => password,
            _ => {
                let prompt = format!("password of {} on {node_name}: ", args.handle);
                tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
                    .await?
                    .context("no password: set EDGENODE_PASSWORD, pass --token, or run this on a terminal")?
            }
        };
        let device = lock(&journal.facts).device.clone();
        let mut body = json!({ "handle": args.handle, "password": password });
        if let Some(device) = &device {
            body["device"] = json!(device);
        }
        let never = CancellationToken::new();
        let answer = node
            .call_json(Method::POST, "/api/v1/sessions", None, Some(body), &never)
            .await
            .map_err(Halt::into_error)?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => bail!("the node refused the handle or the password ({})", answer.describe()),
            _ => bail!("signing in: the node answered {}", answer.describe()),
        }
        let answer = answer.json();
        let token = answer["token"].as_str().context("signing in: the answer had no token")?.to_owned();
        if let Some(issued) = answer["device"].as_str().filter(|issued| device.as_deref() != Some(*issued)) {
            journal.append(Record::Device { device: issued.to_owned() }, false)?;
        }
        Ok(Session { token, signed_in: true })
    }

    /// Revokes the token signing in made (best effort: it is one of many sessions).
    async fn end(&self, node: &NodeClient) {
        let never = CancellationToken::new();
        let revoke = node.call_json(Method::DELETE, "/api/v1/sessions", Some(&self.token), None, &never);
        if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(5), revoke).await {
            tracing::debug!(status = %answer.status, "session revoked");
        }
    }
}

/// Checks that the token is `handle`'s (or an admin's), before any photo is read;
/// returns the storage quota left, when the user has one.
async fn check_token(node: &NodeClient, token: &str, handle: &str) -> Result<Option<u64>> {
    let never = CancellationToken::new();
    let path = format!("/api/v1/users/{handle}/quota");
    let answer = node.call_json(Method::GET, &path, Some(token), None, &never).await.map_err(Halt::into_error)?;
    match answer.status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => bail!("the node refused the token ({}): sign in again", answer.describe()),
        StatusCode::FORBIDDEN => bail!("the token is not {handle}'s ({})", answer.describe()),
        StatusCode::NOT_FOUND => bail!("the node has no user {handle}"),
        _ => bail!("asking for {handle}'s quota: the node answered {}", answer.describe()),
    }
    let quota = answer.json();
    let max = quota["storage_bytes_max"].as_u64().unwrap_or(0);
    let used = quota["storage_bytes_used"].as_u64().unwrap_or(0);
    Ok((max > 0).then(|| max.saturating_sub(used)))
}

// ---------------------------------------------------------------------------------------
// Progress and summary

/// `1 photo`, `2 photos`.
fn photos(count: u64) -> String {
    format!("{count} photo{}", if count == 1 { "" } else { "s" })
}

/// Progress: a bar on stderr when it is a terminal, else a plain line every
/// `PROGRESS_LINE_FILES` files.
struct Progress {
    bar: Option<ProgressBar>,
    total_files: u64,
    total_bytes: u64,
    files_done: AtomicU64,
    bytes_done: Arc<AtomicU64>,
    started: Instant,
}

impl Progress {
    fn new(total_files: u64, total_bytes: u64) -> Progress {
        let bar = super::bytes_progress_bar(total_bytes, format!("0/{total_files} photos"));
        Progress {
            bar,
            total_files,
            total_bytes,
            files_done: AtomicU64::new(0),
            bytes_done: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    fn add_bytes(&self, length: u64) {
        self.bytes_done.fetch_add(length, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(length);
        }
    }

    fn remove_bytes(&self, length: u64) {
        if length == 0 {
            return;
        }
        self.bytes_done.fetch_sub(length, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.dec(length);
        }
    }

    fn file_done(&self) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => bar.set_message(format!("{done}/{} photos", self.total_files)),
            None if done.is_multiple_of(PROGRESS_LINE_FILES) && done < self.total_files => eprintln!("{}", self.line()),
            None => {}
        }
    }

    /// `upload: 200/500 photos, 1.2 MiB of 3.0 MiB, 640 KiB/s, about 3 seconds left`.
    fn line(&self) -> String {
        let (files, bytes) = (self.files_done.load(Ordering::Relaxed), self.bytes_done.load(Ordering::Relaxed));
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / seconds;
        let left = if rate > 0.0 {
            let left = Duration::from_secs_f64(self.total_bytes.saturating_sub(bytes) as f64 / rate);
            format!(", about {} left", HumanDuration(left))
        } else {
            String::new()
        };
        format!(
            "upload: {files}/{} photos, {} of {}, {}/s{left}",
            self.total_files,
            HumanBytes(bytes),
            HumanBytes(self.total_bytes),
            HumanBytes(rate as u64)
        )
    }

    /// A line for a person, above the bar when there is one.
    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.total_files > 0 => {
                let (files, bytes) = (self.files_done.load(Ordering::Relaxed), self.bytes_done.load(Ordering::Relaxed));
                let seconds = self.started.elapsed().as_secs_f64();
                eprintln!("upload: {files}/{} photos, {} in {seconds:.1} s", self.total_files, HumanBytes(bytes));
            }
            None => {}
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    uploaded: u64,
    uploaded_bytes: u64,
    already_on_node: u64,
    done_before: u64,
    same_photo: u64,
    posted: u64,
    already_posted: u64,
    failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
struct Failure {
    path: String,
    reason: String,
}

/// What the run did, as the table (or `--json`) shows it.
#[derive(Debug, Serialize)]
struct Summary {
    node_id: String,
    /// Images found in the files and folders given.
    photos: u64,
    /// Sent, and new to the user on the node.
    uploaded: u64,
    uploaded_bytes: u64,
    /// On the node for the user already (not sent again).
    already_on_node: u64,
    /// Done in an earlier run, as the state journal says.
    done_before: u64,
    /// Copies of a photo found under another name (sent and posted once).
    same_photo: u64,
    posted: u64,
    /// Photos a post of the user carried already (none made).
    already_posted: u64,
    failed: u64,
    failures: Vec<Failure>,
    /// Left for the next run (interrupted, or the node stopped the run).
    not_done: u64,
    /// Files in the folders that are not JPEG, PNG or WebP images.
    ignored_files: u64,
    seconds: f64,
    interrupted: bool,
    stopped_because: Option<String>,
    visibility: Option<&'static str>,
    state_file: String,
}

impl Summary {
    fn print(&self, json: bool) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        let rate = HumanBytes((self.uploaded_bytes as f64 / self.seconds.max(0.001)) as u64);
        let mut rows: Vec<(&str, String)> = vec![
            ("photos", format!("{}", self.photos)),
            ("uploaded", format!("{} ({})", self.uploaded, HumanBytes(self.uploaded_bytes))),
            ("already there", format!("{} (the node had them: not sent)", self.already_on_node)),
        ];
        if self.done_before > 0 {
            rows.push(("done before", format!("{} (in an earlier run)", self.done_before)));
        }
        if self.same_photo > 0 {
            rows.push(("same photo", format!("{} (copies of a photo under another name: sent once)", self.same_photo)));
        }
        if let Some(visibility) = self.visibility {
            rows.push(("posted", format!("{} ({visibility})", self.posted)));
            if self.already_posted > 0 {
                rows.push(("already posted", format!("{} (a post of yours had them)", self.already_posted)));
            }
        }
        rows.push(("failed", self.failed.to_string()));
        if self.not_done > 0 {
            rows.push(("not done", format!("{} (run the same command again to go on)", self.not_done)));
        }
        if self.ignored_files > 0 {
            rows.push(("left out", format!("{} files that are not .jpg, .png or .webp", self.ignored_files)));
        }
        rows.push(("time", format!("{:.1} s ({rate}/s)", self.seconds)));
        rows.push(("state", self.state_file.clone()));
        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        for (label, value) in rows {
            println!("{label:<width$}  {value}");
        }
        if let Some(reason) = &self.stopped_because {
            println!("\nstopped: {reason}");
        }
        if !self.failures.is_empty() {
            println!("\nfailed:");
            for failure in self.failures.iter().take(FAILURES_LISTED_MAX) {
                println!("  {}: {}", failure.path, failure.reason);
            }
            if self.failures.len() > FAILURES_LISTED_MAX {
                println!("  … and {} more (--json lists them all)", self.failures.len() - FAILURES_LISTED_MAX);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_starts_with_a_hyphen_is_a_value_not_a_flag() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            upload: UploadArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "upload",
            "--to",
            "https://localhost",
            "--pin",
            "sha256/x",
            "--handle",
            "a",
            "--token",
            "-cY_2",
            "photo.jpg",
        ])
        .expect("parses");
        assert_eq!(cli.upload.token.as_deref(), Some("-cY_2"));
    }

    #[test]
    fn captions_fill_name_and_date_and_drop_empty_fields() {
        let path = Path::new("/photos/2024/IMG_0042.JPG");
        assert_eq!(caption("{date}", path, Some("2024-06-01")), "2024-06-01");
        assert_eq!(caption("{name} {date}", path, None), "IMG_0042");
        assert_eq!(caption("{date} {name} #holiday", path, None), "IMG_0042 #holiday");
        assert_eq!(caption("{date}", path, None), "");
    }

    #[test]
    fn the_capture_date_comes_from_exif() {
        let directory = std::env::temp_dir().join(format!("edgenode-upload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let dated = directory.join("dated.jpg");
        std::fs::write(&dated, jpeg_taken_on(b"2024:06:01 12:34:56")).unwrap();
        let blank = directory.join("blank.jpg");
        std::fs::write(&blank, jpeg_taken_on(b"0000:00:00 00:00:00")).unwrap();
        let undated = directory.join("undated.jpg");
        std::fs::write(&undated, edgenode::media::testimage::jpeg_with_exif(8, 8, 1, false, |_, _| [9, 9, 9])).unwrap();
        assert_eq!(capture_date(&dated).as_deref(), Some("2024-06-01"));
        assert_eq!(capture_date(&blank), None);
        assert_eq!(capture_date(&undated), None);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    fn jpeg_taken_on(date: &[u8]) -> Vec<u8> {
        let field = exif::Field {
            tag: exif::Tag::DateTimeOriginal,
            ifd_num: exif::In::PRIMARY,
            value: exif::Value::Ascii(vec![date.to_vec()]),
        };
        let mut writer = exif::experimental::Writer::new();
        writer.push_field(&field);
        let mut tiff = std::io::Cursor::new(Vec::new());
        writer.write(&mut tiff, false).unwrap();
        let jpeg = edgenode::media::testimage::jpeg_with_exif(8, 8, 1, false, |_, _| [9, 9, 9]);
        // The camera's EXIF segment comes first; ours goes in front of it.
        edgenode::media::testimage::insert_exif_app1(&jpeg, &tiff.into_inner())
    }

    #[test]
    fn targets_take_a_url_or_a_bare_host() {
        let target = Target::parse("https://harbour-box.local:8443/").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("harbour-box.local", 8443));
        assert_eq!(Target::parse("harbour-box.local").unwrap().port, 8443);
        assert_eq!(Target::parse("https://photos.example.org").unwrap().port, 443);
        let ipv6 = Target::parse("https://[::1]:9000").unwrap();
        assert_eq!((ipv6.host.as_str(), ipv6.authority.as_str()), ("::1", "[::1]:9000"));
        assert!(Target::parse("http://harbour-box.local:8443").is_err());
        assert!(Target::parse("https://harbour-box.local:8443/api/v1").is_err());
    }

    #[test]
    fn the_journal_survives_a_torn_last_line_and_names_its_owner() {
        let path = std::env::temp_dir().join(format!("edgenode-upload-journal-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let journal = Journal::open(&path, "0123456789abcdef", "alice").unwrap();
            journal.append(Record::Uploaded { sha256: "aa".into() }, false).unwrap();
            journal.append(Record::Posting { sha256: "aa".into() }, true).unwrap();
            journal.append(Record::Uploaded { sha256: "bb".into() }, false).unwrap();
        }
        // A crash in the middle of a line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"posted":{"sha256":"aa","po"#).unwrap();
        drop(file);
        {
            let journal = Journal::open(&path, "0123456789abcdef", "alice").unwrap();
            let facts = lock(&journal.facts);
            assert!(facts.uploaded.contains("aa") && facts.uploaded.contains("bb"));
            assert!(facts.posting.contains("aa"), "the post's outcome is unknown: it is looked for");
            drop(facts);
            journal.append(Record::Posted { sha256: "aa".into(), post_id: "p1".into() }, false).unwrap();
        }
        let journal = Journal::open(&path, "0123456789abcdef", "alice").unwrap();
        assert!(lock(&journal.facts).is_done("aa", true));
        assert!(!lock(&journal.facts).is_done("bb", true));
        drop(journal);
        let other = Journal::open(&path, "0123456789abcdef", "bob").err().unwrap().to_string();
        assert!(other.contains("as alice"), "{other}");
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(path.with_extension("lock"));
    }
}
