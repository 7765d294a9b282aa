//! Reading a request body the way the service planned it, the same for every
//! transport: bounded in bytes; held in memory only within the node-wide budget
//! `body_bytes_in_flight_max`, uploads written to a spool file and hashed on the way
//! in; and at a minimum rate, so a client that stalls
//! its body frees its slot within seconds.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{error_response, BodyPlan, RequestBody, SpooledBody, UploadTicket};
use crate::config::Limits;
use crate::os;

/// Time every body gets before the minimum rate applies (a phone waking its radio).
const BODY_RATE_GRACE_MS: u64 = 5000;
/// A body must be complete within this, whatever its rate (40 MB at ~0.5 Mbit/s).
const BODY_READ_TIMEOUT_MS: u64 = 600_000;
/// Spooled bytes are gathered into writes of this size.
const SPOOL_WRITE_BYTES: usize = 256 * 1024;
/// Seconds a client is told to wait when the node is at its body budget.
const BUSY_RETRY_AFTER_SECONDS: u64 = 2;

/// A transport's source of body chunks.
pub(super) trait BodySource {
    /// The next chunk; `Ok(None)` at the end of the body.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, TransportError>;
}

/// The transport failed while a body arrived (reset stream, broken connection).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct TransportError(pub(super) String);

/// Why a body was not read.
#[derive(Debug)]
pub(super) enum BodyError {
    TooLarge {
        bytes_max: u64,
    },
    /// The node holds as many body bytes as it allows.
    Busy,
    /// The client sent slower than the minimum rate, or not at all.
    TooSlow,
    /// The transport failed (reset stream, broken connection).
    Unreadable(TransportError),
    /// Writing the spool file failed.
    Spool(std::io::Error),
}

impl BodyError {
    pub(super) fn response(&self) -> Response<Bytes> {
        match self {
            BodyError::TooLarge { bytes_max } => error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the request body exceeds the limit of {bytes_max} bytes for this endpoint"),
            ),
            BodyError::Busy => {
                let mut response = error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the node is receiving as many request bodies as it can hold; retry in a few seconds",
                );
                response.headers_mut().insert(http::header::RETRY_AFTER, BUSY_RETRY_AFTER_SECONDS.into());
                response
            }
            BodyError::TooSlow => error_response(
                StatusCode::REQUEST_TIMEOUT,
                "body_too_slow",
                "the request body arrived too slowly; check the connection and retry",
            ),
            BodyError::Unreadable(reason) => error_response(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                &format!("the request body could not be read: {reason}"),
            ),
            BodyError::Spool(error) if error.raw_os_error() == Some(28) => error_response(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the node's storage is full; the upload could not be written",
            ),
            BodyError::Spool(_) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the node could not write the upload to its storage",
            ),
        }
    }
}

/// The node-wide budgets for bodies being read, and the minimum rate.
pub(super) struct BodyBudget {
    memory_bytes: Arc<Semaphore>,
    bytes_per_second_min: u64,
}

impl BodyBudget {
    pub(super) fn new(limits: &Limits) -> BodyBudget {
        BodyBudget {
            memory_bytes: Arc::new(Semaphore::new(limits.body_bytes_in_flight_max)),
            bytes_per_second_min: limits.body_bytes_per_second_min,
        }
    }
}

/// A body read whole, with its share of the budget (held until the handler is done).
pub(super) struct ReadBody {
    pub(super) body: RequestBody,
    pub(super) _held: Option<OwnedSemaphorePermit>,
    pub(super) _ticket: Option<UploadTicket>,
}

/// Reads a body as `plan` says (`Refuse` must be handled by the caller).
pub(super) async fn read(
    source: &mut impl BodySource,
    plan: BodyPlan,
    budget: &BodyBudget,
) -> Result<ReadBody, BodyError> {
    let pace = Pace::new(budget.bytes_per_second_min);
    match plan {
        BodyPlan::Refuse(_) => unreachable!("refused bodies are answered, not read"),
        BodyPlan::Memory { bytes_max } => read_to_memory(source, bytes_max, budget, pace).await,
        BodyPlan::Spool { bytes_max, dir, ticket } => {
            let body = read_to_spool(source, bytes_max, &dir, budget, pace).await?;
            Ok(ReadBody { body: RequestBody::Spooled(body), _held: None, _ticket: Some(ticket) })
        }
    }
}

async fn read_to_memory(
    source: &mut impl BodySource,
    bytes_max: usize,
    budget: &BodyBudget,
    mut pace: Pace,
) -> Result<ReadBody, BodyError> {
    let mut body = BytesMut::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(chunk) = pace.next(source).await? {
        if body.len() + chunk.len() > bytes_max {
            return Err(BodyError::TooLarge { bytes_max: bytes_max as u64 });
        }
        let chunk_bytes =
            u32::try_from(chunk.len()).map_err(|_| BodyError::TooLarge { bytes_max: bytes_max as u64 })?;
        let permit = budget.memory_bytes.clone().try_acquire_many_owned(chunk_bytes).map_err(|_| BodyError::Busy)?;
        match &mut held {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        body.extend_from_slice(&chunk);
    }
    Ok(ReadBody { body: RequestBody::Memory(body.freeze()), _held: held, _ticket: None })
}

async fn read_to_spool(
    source: &mut impl BodySource,
    bytes_max: u64,
    dir: &Path,
    budget: &BodyBudget,
    mut pace: Pace,
) -> Result<SpooledBody, BodyError> {
    let path = dir.join(format!("{:016x}.upload", u64::from_le_bytes(os::random_bytes())));
    let file = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
        }
    })
    .await
    .map_err(|error| BodyError::Spool(std::io::Error::other(error)))?
    .map_err(BodyError::Spool)?;
    // From here the file is removed when `spooled` is dropped, whatever happens.
    let mut spooled = SpooledBody::new(path, 0, [0; 32]);
    let mut file = Some(file);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut pending = BytesMut::new();
    loop {
        let chunk = pace.next(source).await?;
        if let Some(chunk) = &chunk {
            bytes += chunk.len() as u64;
            if bytes > bytes_max {
                return Err(BodyError::TooLarge { bytes_max });
            }
            hasher.update(chunk);
            pending.extend_from_slice(chunk);
        }
        if pending.len() >= SPOOL_WRITE_BYTES || (chunk.is_none() && !pending.is_empty()) {
            // Held in memory only while written: counted against the body budget.
            let permit = budget
                .memory_bytes
                .clone()
                .try_acquire_many_owned(u32::try_from(pending.len()).unwrap_or(u32::MAX))
                .map_err(|_| BodyError::Busy)?;
            let data = pending.split().freeze();
            let mut writing = file.take().expect("the file is put back after every write");
            writing = tokio::task::spawn_blocking(move || {
                let result = writing.write_all(&data);
                drop(permit);
                result.map(|()| writing)
            })
            .await
            .map_err(|error| BodyError::Spool(std::io::Error::other(error)))?
            .map_err(BodyError::Spool)?;
            file = Some(writing);
        }
        if chunk.is_none() {
            break;
        }
    }
    spooled.finish(bytes, hasher.finalize().into());
    Ok(spooled)
}

/// Enforces the minimum rate: after the grace period, the body so far must have
/// arrived at `bytes_per_second_min` on average, and all of it within
/// `BODY_READ_TIMEOUT_MS`.
struct Pace {
    started: tokio::time::Instant,
    received_bytes: u64,
    bytes_per_second_min: u64,
}

impl Pace {
    fn new(bytes_per_second_min: u64) -> Pace {
        Pace { started: tokio::time::Instant::now(), received_bytes: 0, bytes_per_second_min }
    }

    /// When the next chunk is due at the latest.
    fn deadline(&self) -> tokio::time::Instant {
        let absolute = self.started + Duration::from_millis(BODY_READ_TIMEOUT_MS);
        if self.bytes_per_second_min == 0 {
            return absolute;
        }
        let earned = Duration::from_secs_f64(self.received_bytes as f64 / self.bytes_per_second_min as f64);
        (self.started + Duration::from_millis(BODY_RATE_GRACE_MS) + earned).min(absolute)
    }

    async fn next(&mut self, source: &mut impl BodySource) -> Result<Option<Bytes>, BodyError> {
        match tokio::time::timeout_at(self.deadline(), source.next_chunk()).await {
            Err(_) => Err(BodyError::TooSlow),
            Ok(Err(error)) => Err(BodyError::Unreadable(error)),
            Ok(Ok(chunk)) => {
                self.received_bytes += chunk.as_ref().map_or(0, |chunk| chunk.len() as u64);
                Ok(chunk)
            }
        }
    }
}
