//! Helpers for the crate's unit tests, below every room so any of them may use it.

use std::path::{Path, PathBuf};

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        let suffix = u64::from_le_bytes(crate::os::random_bytes::<8>());
        let path = std::env::temp_dir().join(format!("edgenode-test-{label}-{suffix:016x}"));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
