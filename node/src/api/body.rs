//! Request bodies as handlers see them, and the plan a transport follows to read one:
//! small bodies in memory, uploads spooled to a file in the data dir while hashed, and
//! anything the request's head already rules out refused before a body byte is read.
//! And the other way, large response bodies as an open file the transport streams.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;

/// A request body, read whole before the handler runs.
#[derive(Debug)]
pub enum RequestBody {
    Memory(Bytes),
    Spooled(SpooledBody),
}

impl RequestBody {
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Memory(bytes) => bytes.len() as u64,
            RequestBody::Spooled(spooled) => spooled.bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for RequestBody {
    fn from(bytes: Bytes) -> RequestBody {
        RequestBody::Memory(bytes)
    }
}

/// An upload written to a file of its own in the spool dir, with its length and
/// SHA-256 computed on the way in. The file is removed when this is dropped, so a
/// request that fails or panics leaves nothing behind (a crash leaves files that the
/// next start clears).
#[derive(Debug)]
pub struct SpooledBody {
    path: PathBuf,
    bytes: u64,
    sha256: [u8; 32],
}

impl SpooledBody {
    /// Takes ownership of the file at `path`.
    pub fn new(path: PathBuf, bytes: u64, sha256: [u8; 32]) -> SpooledBody {
        SpooledBody { path, bytes, sha256 }
    }

    /// Records what was written once the body is complete.
    pub fn finish(&mut self, bytes: u64, sha256: [u8; 32]) {
        self.bytes = bytes;
        self.sha256 = sha256;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

impl Drop for SpooledBody {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, path = %self.path.display(), "could not remove a spooled upload");
            }
        }
    }
}

/// A response body to send from a file, in chunks as the client takes them (so a
/// download holds a chunk of memory, not the file): the response carries it as an
/// extension, with an empty body and the `content-length` set.
#[derive(Debug, Clone)]
pub struct ResponseFile {
    /// Shared so the response (whose extensions must be `Clone`) can carry it; opened
    /// by the handler, so the bytes are those it checked, even if the file is replaced.
    file: Arc<std::fs::File>,
    pub offset: u64,
    pub length: u64,
}

impl ResponseFile {
    pub fn new(file: std::fs::File, offset: u64, length: u64) -> ResponseFile {
        ResponseFile { file: Arc::new(file), offset, length }
    }

    /// Reads up to `bytes_max` bytes at `offset` (positioned read: no shared cursor).
    pub fn read_at(&self, offset: u64, bytes_max: usize) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt as _;
        let mut buffer = vec![0; bytes_max];
        let read = self.file.read_at(&mut buffer, offset)?;
        if read == 0 && bytes_max > 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file is shorter than announced"));
        }
        buffer.truncate(read);
        Ok(Bytes::from(buffer))
    }
}

/// What a transport does with a request's body, decided from the head alone (route,
/// credentials, declared length, quotas) before any of it is read.
#[derive(Debug)]
pub enum BodyPlan {
    /// Answer this and read nothing.
    Refuse(Response<Bytes>),
    /// Read into memory, at most `bytes_max`.
    Memory { bytes_max: usize },
    /// Write to a new file in `dir`, at most `bytes_max`, hashing it; `ticket` is held
    /// until the request is answered.
    Spool { bytes_max: u64, dir: PathBuf, ticket: UploadTicket },
}

/// Uploads being received, in total and by user: one account cannot take every upload
/// slot of the node, and a user with none in progress always gets one (so a flood by
/// a few accounts cannot keep everyone else's phone from uploading).
#[derive(Debug, Default)]
pub struct UploadTickets {
    counts: Arc<Mutex<UploadCounts>>,
}

#[derive(Debug, Default)]
struct UploadCounts {
    total: usize,
    by_user: HashMap<String, usize>,
}

/// Why no ticket was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTicket {
    /// This user has `per_user_max` uploads in progress.
    UserBusy,
    /// The node has `total_max` in progress, and this user has some of them.
    NodeBusy,
}

impl UploadTickets {
    /// A ticket for one more upload by `user_id`.
    pub fn take(&self, user_id: &str, per_user_max: usize, total_max: usize) -> Result<UploadTicket, NoTicket> {
        let mut counts = crate::locking::lock(&self.counts);
        let user_count = counts.by_user.get(user_id).copied().unwrap_or(0);
        if user_count >= per_user_max {
            return Err(NoTicket::UserBusy);
        }
        if user_count > 0 && counts.total >= total_max {
            return Err(NoTicket::NodeBusy);
        }
        counts.total += 1;
        *counts.by_user.entry(user_id.to_owned()).or_insert(0) += 1;
        Ok(UploadTicket { counts: self.counts.clone(), user_id: user_id.to_owned() })
    }
}

/// One upload in progress; given back when dropped.
#[derive(Debug)]
pub struct UploadTicket {
    counts: Arc<Mutex<UploadCounts>>,
    user_id: String,
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        let mut counts = crate::locking::lock(&self.counts);
        counts.total -= 1;
        if let Some(count) = counts.by_user.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                counts.by_user.remove(&self.user_id);
            }
        }
    }
}

/// Makes the spool dir (0700) and removes what a crash left in it.
pub fn prepare_spool_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let mut removed = 0usize;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed unfinished uploads left by an earlier run");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_no_upload_in_progress_always_gets_a_ticket() {
        let tickets = UploadTickets::default();
        let flood: Vec<_> = (0..4).map(|_| tickets.take("mallory", 4, 4).unwrap()).collect();
        assert_eq!(tickets.take("mallory", 4, 4).unwrap_err(), NoTicket::UserBusy);
        let first = tickets.take("ada", 4, 4).unwrap();
        assert_eq!(tickets.take("ada", 4, 4).unwrap_err(), NoTicket::NodeBusy);
        drop(flood);
        let _second = tickets.take("ada", 4, 4).unwrap();
        drop(first);
        assert_eq!(crate::locking::lock(&tickets.counts).total, 1);
    }
}
