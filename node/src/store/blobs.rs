//! Content-addressed blob files under `<data_dir>/media`: originals and derivatives,
//! named by the SHA-256 of the uploaded bytes, and the square avatar of a profile
//! photo (`<sha256>.avatar`, made on demand, in no media row). Written temp file → fsync → rename →
//! fsync dir, so a file that exists under its final name is complete and durable.
//! Files are created 0600 and directories 0700 whatever the umask (see
//! `super::PRIVATE_FILE_MODE`).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{create_private_dir_all, create_private_file};

const TEMP_PREFIX: &str = ".tmp-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Original,
    Display,
    Thumb,
}

impl BlobKind {
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Original => "original",
            BlobKind::Display => "display",
            BlobKind::Thumb => "thumb",
        }
    }

    pub fn from_name(name: &str) -> Option<BlobKind> {
        [BlobKind::Original, BlobKind::Display, BlobKind::Thumb].into_iter().find(|kind| kind.name() == name)
    }
}

/// File suffix of the avatar derivative. Any node holding a photo makes it from the
/// photo's display derivative when it is first asked for, so it is in no media row:
/// not replicated, not backed up, not charged to a quota (256 px, a few KiB).
const AVATAR_SUFFIX: &str = "avatar";

#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: PathBuf) -> io::Result<BlobStore> {
        create_private_dir_all(&root)?;
        Ok(BlobStore { root })
    }

    pub fn path(&self, media_id: &str, kind: BlobKind) -> PathBuf {
        debug_assert!(is_sha256_hex(media_id), "media ids are checked before they reach the blob store");
        self.root.join(&media_id[..2]).join(format!("{media_id}.{}", kind.name()))
    }

    /// The avatar derivative's file, beside the photo's other files.
    pub fn avatar_path(&self, media_id: &str) -> PathBuf {
        self.path(media_id, BlobKind::Original).with_extension(AVATAR_SUFFIX)
    }

    /// Writes `bytes` so that after return they survive a crash or power loss.
    pub fn write_durable(&self, media_id: &str, kind: BlobKind, bytes: &[u8], random_suffix: u64) -> io::Result<()> {
        self.write_file_durable(self.path(media_id, kind), bytes, random_suffix)
    }

    /// Writes the avatar derivative durably (as `write_durable`).
    pub fn write_avatar_durable(&self, media_id: &str, bytes: &[u8], random_suffix: u64) -> io::Result<()> {
        self.write_file_durable(self.avatar_path(media_id), bytes, random_suffix)
    }

    fn write_file_durable(&self, path: PathBuf, bytes: &[u8], random_suffix: u64) -> io::Result<()> {
        let dir = path.parent().expect("blob paths have a parent");
        if !dir.exists() {
            create_private_dir_all(dir)?;
            sync_dir(&self.root)?;
        }
        let temp_path = dir.join(format!("{TEMP_PREFIX}{random_suffix:016x}"));
        let result = (|| {
            let mut file = create_private_file(&temp_path)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temp_path, &path)?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp_path);
        }
        result
    }

    /// Writes several files of one media item durably: each file synced, then their
    /// directory once (rather than once per file).
    pub fn write_durable_set(&self, media_id: &str, files: &[(BlobKind, &[u8])], random_suffix: u64) -> io::Result<()> {
        let dir = self.path(media_id, BlobKind::Original).parent().expect("blob paths have a parent").to_owned();
        if !dir.exists() {
            create_private_dir_all(&dir)?;
            sync_dir(&self.root)?;
        }
        for (index, (kind, bytes)) in files.iter().enumerate() {
            let temp_path = dir.join(format!("{TEMP_PREFIX}{:016x}", random_suffix.wrapping_add(index as u64)));
            let written = (|| {
                let mut file = create_private_file(&temp_path)?;
                file.write_all(bytes)?;
                file.sync_all()?;
                fs::rename(&temp_path, self.path(media_id, *kind))
            })();
            if written.is_err() {
                let _ = fs::remove_file(&temp_path);
            }
            written?;
        }
        sync_dir(&dir)
    }

    pub fn exists(&self, media_id: &str, kind: BlobKind) -> bool {
        self.path(media_id, kind).is_file()
    }

    pub fn read(&self, media_id: &str, kind: BlobKind) -> io::Result<Vec<u8>> {
        fs::read(self.path(media_id, kind))
    }

    /// Reads `length` bytes from `offset` (for HTTP Range requests).
    pub fn read_range(&self, media_id: &str, kind: BlobKind, offset: u64, length: u64) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.path(media_id, kind))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(length as usize);
        file.take(length).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Removes files a crash left behind: temp files, and blobs whose metadata never
    /// committed (`is_known` says whether a media id is in the database).
    /// Returns how many files were removed.
    pub fn remove_orphans(&self, is_known: impl Fn(&str) -> bool) -> io::Result<usize> {
        let mut removed = 0;
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let media_id = name.split('.').next().unwrap_or_default();
                let orphan = name.starts_with(TEMP_PREFIX) || !is_sha256_hex(media_id) || !is_known(media_id);
                if orphan {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("edgenode-blobs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn writes_reads_ranges_and_cleans_orphans() {
        let root = temp_root("basic");
        let blobs = BlobStore::open(root.clone()).unwrap();
        let known = "a".repeat(64);
        let unknown = "b".repeat(64);
        blobs.write_durable(&known, BlobKind::Original, b"hello world", 1).unwrap();
        blobs.write_durable(&unknown, BlobKind::Thumb, b"orphan", 2).unwrap();
        fs::write(blobs.path(&known, BlobKind::Original).with_file_name(".tmp-dead"), b"x").unwrap();

        assert_eq!(blobs.read(&known, BlobKind::Original).unwrap(), b"hello world");
        assert_eq!(blobs.read_range(&known, BlobKind::Original, 6, 5).unwrap(), b"world");
        assert_eq!(blobs.remove_orphans(|id| id == known).unwrap(), 2);
        assert!(blobs.exists(&known, BlobKind::Original));
        assert!(!blobs.exists(&unknown, BlobKind::Thumb));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn avatars_sit_beside_the_photo_and_go_with_it() {
        let root = temp_root("avatar");
        let blobs = BlobStore::open(root.clone()).unwrap();
        let known = "c".repeat(64);
        let unknown = "d".repeat(64);
        blobs.write_avatar_durable(&known, b"square", 1).unwrap();
        blobs.write_avatar_durable(&unknown, b"orphan", 2).unwrap();
        let path = blobs.avatar_path(&known);
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("{known}.avatar"));
        assert_eq!(path.parent(), blobs.path(&known, BlobKind::Original).parent());
        assert_eq!(fs::read(&path).unwrap(), b"square");
        assert_eq!(blobs.remove_orphans(|id| id == known).unwrap(), 1, "the unknown photo's avatar");
        assert!(path.is_file());
        assert!(!blobs.avatar_path(&unknown).exists());
        fs::remove_dir_all(root).unwrap();
    }
}
