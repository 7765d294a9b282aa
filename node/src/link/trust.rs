//! The trust ledger of a running node (`core::trust`), shared by everything that
//! observes siblings (the peer driver, the media fetcher) and by the sibling service,
//! which saves it to `<data-dir>/trust.json` and restarts replication when a
//! sibling's tier changes (placement weighs siblings by tier).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::core::model::NodeId;
use crate::core::trust::{PeerTrust, TrustEvent, TrustLedger};

use crate::locking::lock;

#[derive(Debug)]
pub struct TrustBook {
    ledger: Mutex<TrustLedger>,
    /// Where the ledger is saved; `None` keeps it in memory (tests, tools).
    path: Option<PathBuf>,
    /// Changed since the last save.
    dirty: AtomicBool,
    /// A sibling changed tier since the last `take_tier_changed`.
    tier_changed: AtomicBool,
}

/// Why the trust ledger file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    #[error("{path} is not a trust ledger: {reason} — move it aside to start every sibling trusted again")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl TrustBook {
    pub fn in_memory() -> TrustBook {
        TrustBook::with_ledger(TrustLedger::default(), None)
    }

    /// Loads `path` (a missing file is an empty ledger: every sibling starts trusted).
    pub fn load(path: &Path) -> Result<TrustBook, TrustFileError> {
        let ledger = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| TrustFileError::Invalid { path: path.to_owned(), reason: error.to_string() })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => TrustLedger::default(),
            Err(source) => return Err(TrustFileError::Io { path: path.to_owned(), source }),
        };
        Ok(TrustBook::with_ledger(ledger, Some(path.to_owned())))
    }

    fn with_ledger(ledger: TrustLedger, path: Option<PathBuf>) -> TrustBook {
        TrustBook {
            ledger: Mutex::new(ledger),
            path,
            dirty: AtomicBool::new(false),
            tier_changed: AtomicBool::new(false),
        }
    }

    /// Records what `peer` did, now.
    pub fn observe(&self, peer: NodeId, event: TrustEvent, detail: &str) {
        let mut ledger = lock(&self.ledger);
        let before = ledger.score(peer);
        let change = ledger.record(peer, event, crate::os::now_ms(), detail);
        let after = ledger.score(peer);
        drop(ledger);
        if after != before {
            self.dirty.store(true, Ordering::Relaxed);
        }
        if event != TrustEvent::Verified && after != before {
            tracing::warn!(%peer, ?event, detail, score = after, "sibling lost trust");
        }
        if let Some(change) = change {
            tracing::warn!(%peer, from = ?change.from, to = ?change.to, score = after, "sibling changed trust tier");
            self.tier_changed.store(true, Ordering::Relaxed);
        }
    }

    pub fn placement_weight(&self, peer: NodeId) -> u8 {
        lock(&self.ledger).placement_weight(peer)
    }

    pub fn score(&self, peer: NodeId) -> u8 {
        lock(&self.ledger).score(peer)
    }

    pub fn peer(&self, peer: NodeId) -> Option<PeerTrust> {
        lock(&self.ledger).peer(peer).cloned()
    }

    /// Whether some sibling changed tier since the last call.
    pub fn take_tier_changed(&self) -> bool {
        self.tier_changed.swap(false, Ordering::Relaxed)
    }

    /// Writes the ledger if it changed: temporary file, fsync, rename.
    pub fn save_if_changed(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&*lock(&self.ledger)).expect("a ledger serialises");
        let temporary = path.with_extension("json.tmp");
        let written = (|| {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            // Owner-only whatever the umask, as everything in the data dir.
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if written.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ledger_loads_with_the_same_scores() {
        let dir = crate::test_support::TempDir::new("trust");
        let path = dir.path().join("trust.json");
        let book = TrustBook::load(&path).expect("a missing file is an empty ledger");
        book.observe(NodeId(3), TrustEvent::HashMismatch, "thumb");
        book.observe(NodeId(3), TrustEvent::HashMismatch, "display");
        assert!(book.take_tier_changed(), "80 -> 30 leaves the trusted tier");
        assert!(!book.take_tier_changed());
        book.save_if_changed().expect("saved");
        let loaded = TrustBook::load(&path).expect("loads");
        assert_eq!(loaded.score(NodeId(3)), 30);
        assert_eq!(loaded.peer(NodeId(3)).expect("kept").recent.len(), 2);
    }
}
