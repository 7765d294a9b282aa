//! `edgenode backup DEST`: a consistent, incremental backup of the node serving on
//! this data dir, into a directory such as a USB disk, keeping `--keep` generations.
//!
//! Consistent: the node copies its database as of one transaction into its spool dir
//! (`POST /api/v1/node/backups`, control token); this command copies that snapshot,
//! then every photo file the snapshot references and the node's other files (identity,
//! CA, siblings, trust, ACME), skipping what is transient (spool, remote photo cache,
//! control token, addresses).
//!
//! Incremental: every file is stored once in `DEST/objects/<ab>/<sha256>`, named by the
//! SHA-256 of its bytes; a photo's hash is in the snapshot's media rows, so a photo
//! file already in `objects/` is neither read nor written again. A generation is only
//! `DEST/generations/<UTC time>/manifest.json`, the list of files (path in the data
//! dir, bytes, SHA-256). It is written in `DEST/tmp-…` and renamed into place once
//! every object it names is durable, so a backup killed midway leaves the previous
//! generations as they were; the next run clears what it left. Old generations beyond
//! `--keep` are removed, then the objects no kept generation names.
//!
//! `DEST` holds the node's private keys: directories are 0700, files 0600.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use indicatif::{HumanBytes, ProgressBar};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use edgenode::config::Config;
use edgenode::store::{create_private_dir_all, create_private_file, BlobKind, BlobStore, MediaInfo};

use super::control::LocalNode;
use super::{Exit, EXIT_CANNOT_TELL, EXIT_NO};

/// At most this many generations are kept (each reads its manifest when pruning).
pub const KEEP_MAX: u64 = 10_000;
/// How long the node may take to snapshot its database (a large one on an SD card).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Entries of the data dir, by name, that a backup leaves out: the database and the
/// photos come from the snapshot; the rest is transient or made again at start.
const DATA_DIR_SKIPPED: &[&str] =
    &["edgenode.redb", "media", "spool", "remote-media", "control-token", "serving-address", "peer-address"];
/// Files outside the database and the photos that a backup copies at most (identity,
/// CA, ACME account and certificates, siblings, trust: a handful in practice).
const OTHER_FILES_MAX: usize = 10_000;
/// Version of `manifest.json`; a restore refuses a newer one.
pub const MANIFEST_FORMAT: u32 = 1;
const COPY_BUFFER_BYTES: usize = 256 * 1024;
/// Temporary names inside `DEST`, cleared by the next run.
const TEMP_PREFIX: &str = "tmp-";

/// `edgenode backup --help`, and README's "Backups".
pub const HELP_AFTER: &str = "\
DEST holds the node's private keys (node key, CA key): keep it as safe as the node. Directories are made 0700, files 0600.

Scheduled: set `[backup] dir` (and `keep`) in the config and enable edgenode-backup.timer (daily).

Without --config or --data-dir, reads /etc/edgenode/node.toml when it exists (the appliance's config).

Exit status:
  0  a new generation is complete
  1  the generation is complete but some photo files could not be read or did not match their hash (listed)
  2  no new generation: the node, the data dir or DEST could not be used";

#[derive(clap::Args)]
pub struct BackupArgs {
    /// The backup directory (made if absent), e.g. on a mounted USB disk; default: the
    /// config's `[backup] dir`.
    pub dest: Option<PathBuf>,
    /// Generations to keep; older ones and the files only they use are removed.
    /// Default: the config's `[backup] keep` (7).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=KEEP_MAX))]
    pub keep: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One generation: what a restore needs to rebuild the data dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub generation: String,
    /// When the snapshot was taken (UTC, RFC 3339).
    pub created_at: String,
    pub node_id: String,
    pub edgenode_version: String,
    /// The node's replication digest as of the snapshot: a node restored from this
    /// generation reports the same in `GET /api/v1/node/replication`.
    pub digest: String,
    pub records: u64,
    pub tombstones: u64,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the data dir, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A backup directory: `objects/`, `generations/`, and `lock` held while a run uses it.
pub struct BackupDir {
    pub root: PathBuf,
}

impl BackupDir {
    pub fn new(root: &Path) -> BackupDir {
        BackupDir { root: root.to_owned() }
    }

    pub fn objects(&self) -> PathBuf {
        self.root.join("objects")
    }

    pub fn generations(&self) -> PathBuf {
        self.root.join("generations")
    }

    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.objects().join(&sha256[..2]).join(sha256)
    }

    /// Generation names, oldest first (they are UTC times, which sort).
    pub fn generation_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(self.generations()) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(error) => return Err(error).with_context(|| format!("reading {}", self.generations().display())),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn read_manifest(&self, generation: &str) -> Result<Manifest> {
        read_manifest(&self.generations().join(generation).join("manifest.json"))
    }

    /// Makes the directory (0700) and takes its lock, so two runs never share it.
    fn create_locked(root: &Path) -> Result<(BackupDir, File)> {
        let dir = BackupDir::new(root);
        for path in [dir.root.clone(), dir.objects(), dir.generations()] {
            create_private_dir_all(&path).with_context(|| format!("making {}", path.display()))?;
        }
        let lock_path = dir.root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!("another backup is using {} (its lock is held); run again when it ends", dir.root.display());
        }
        Ok((dir, lock))
    }

    /// Removes what a killed run left: its unfinished generation and object files.
    fn clear_leftovers(&self) -> Result<()> {
        for (dir, is_dir) in [(self.root.clone(), true), (self.objects(), false)] {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    continue;
                }
                if is_dir && entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        Ok(())
    }
}

pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format > MANIFEST_FORMAT {
        bail!(
            "{} has manifest format {}, newer than this edgenode reads ({MANIFEST_FORMAT}); use a newer edgenode",
            path.display(),
            manifest.format
        );
    }
    Ok(manifest)
}

/// What a run did, for the summary line and `--json`.
#[derive(Debug, Default, Serialize)]
pub struct BackupSummary {
    pub destination: PathBuf,
    pub generation: String,
    pub node_id: String,
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub files_reused: u64,
    pub bytes_reused: u64,
    /// Bytes of the manifest written (the generation's own cost).
    pub manifest_bytes: u64,
    pub generations_kept: usize,
    pub generations_removed: Vec<String>,
    pub objects_removed: u64,
    pub seconds: f64,
    /// Photo files that could not be copied (unreadable, or not matching their hash).
    pub problems: Vec<String>,
}

pub async fn backup(config: Config, args: BackupArgs) -> Result<()> {
    let started = Instant::now();
    let cannot = |error: anyhow::Error| Exit::new(EXIT_CANNOT_TELL, format!("{error:#}"));
    let Some(dest) = args.dest.clone().or_else(|| config.backup.dir.clone()) else {
        let message = "no backup directory: give DEST, or set `[backup] dir` in the config";
        return Err(Exit::new(EXIT_CANNOT_TELL, message).into());
    };
    let keep = args.keep.unwrap_or(config.backup.keep).clamp(1, KEEP_MAX) as usize;
    let (dest, _lock) = BackupDir::create_locked(&dest).map_err(cannot)?;
    dest.clear_leftovers()
        .with_context(|| format!("clearing what an earlier run left in {}", dest.root.display()))
        .map_err(cannot)?;
    let node = LocalNode::of(&config).map_err(cannot)?;
    let snapshot = node
        .call_within(SNAPSHOT_TIMEOUT, http::Method::POST, "/api/v1/node/backups", None)
        .await
        .context("asking the node for a snapshot of its database")
        .map_err(cannot)?;
    let id = snapshot["id"].as_str().unwrap_or_default().to_owned();
    let relative = snapshot["path"].as_str().unwrap_or_default();
    if id.is_empty() || !relative.starts_with("spool/") || relative.contains("..") {
        return Err(cannot(anyhow::anyhow!("the node's snapshot answer is not understood: {snapshot}")).into());
    }
    let snapshot_path = config.data_dir.join(relative);
    let json = args.json;
    let data_dir = config.data_dir.clone();
    let run = tokio::task::spawn_blocking(move || {
        let mut run = Run {
            dest: &dest,
            progress: Progress::hidden(),
            summary: BackupSummary::default(),
            synced: HashSet::new(),
        };
        let result = run.copy_generation(&data_dir, &snapshot_path, &snapshot, keep, json);
        result.map(|()| run.summary)
    })
    .await?;
    // The node's copy is not needed any more, whatever happened.
    if let Err(error) = node.call(http::Method::DELETE, &format!("/api/v1/node/backups/{id}"), None).await {
        tracing::warn!(%error, "the node's snapshot could not be released; it is removed within an hour or at its next start");
    }
    let mut summary = run.map_err(cannot)?;
    summary.seconds = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if !summary.problems.is_empty() {
        let message = format!(
            "{} photo file(s) are not in generation {}: {}",
            summary.problems.len(),
            summary.generation,
            summary.problems.join("; ")
        );
        return Err(Exit::new(EXIT_NO, message).into());
    }
    Ok(())
}

fn print_summary(summary: &BackupSummary) {
    let removed = match summary.generations_removed.len() {
        0 => String::new(),
        count => format!(", {count} removed ({} files no longer used)", summary.objects_removed),
    };
    println!(
        "backup {} of node {} in {}: {} files, {}; copied {} ({}, manifest {}), reused {} ({}); {} kept{removed}; {:.1} s",
        summary.generation,
        summary.node_id,
        summary.destination.display(),
        summary.files,
        HumanBytes(summary.bytes),
        summary.files_copied,
        HumanBytes(summary.bytes_copied),
        HumanBytes(summary.manifest_bytes),
        summary.files_reused,
        HumanBytes(summary.bytes_reused),
        plural(summary.generations_kept as u64, "generation"),
        summary.seconds,
    );
}

/// `1 generation`, `2 generations`.
fn plural(count: u64, noun: &str) -> String {
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

/// One backup run's state while it copies.
struct Run<'a> {
    dest: &'a BackupDir,
    progress: Progress,
    summary: BackupSummary,
    /// Object directories written to, synced before the generation is committed.
    synced: HashSet<PathBuf>,
}

impl Run<'_> {
    fn copy_generation(
        &mut self,
        data_dir: &Path,
        snapshot_path: &Path,
        snapshot: &serde_json::Value,
        keep: usize,
        json: bool,
    ) -> Result<()> {
        let generation = generation_name(self.dest)?;
        self.summary.destination = self.dest.root.clone();
        self.summary.generation = generation.clone();
        self.summary.node_id = snapshot["node_id"].as_str().unwrap_or_default().to_owned();
        self.summary.digest = snapshot["digest"].as_str().unwrap_or_default().to_owned();
        let mut files = Vec::new();

        // The snapshot first: its bytes are hashed as they are copied, before opening
        // it to list its photos may touch its header.
        let database = self.copy_file(snapshot_path, None).context("copying the database snapshot")?;
        files.push(FileEntry { path: "edgenode.redb".into(), ..database });
        let media = edgenode::store::backup::snapshot_media(snapshot_path)
            .with_context(|| format!("reading the photos of the snapshot {}", snapshot_path.display()))?;
        let others = other_files(data_dir)?;
        let blobs = BlobStore::open(data_dir.join("media"))?;
        let media_files: Vec<(PathBuf, FileEntry)> = media
            .iter()
            .filter(|info| edgenode::store::blobs::is_sha256_hex(&info.media_id))
            .flat_map(|info| media_entries(&blobs, data_dir, info))
            .collect();
        let total_bytes = media_files.iter().map(|(_, entry)| entry.bytes).sum::<u64>();
        if !json {
            self.progress = Progress::new(total_bytes, media_files.len() as u64);
        }
        for relative in others {
            match self.copy_file(&data_dir.join(&relative), None) {
                Ok(entry) => files.push(FileEntry { path: relative, ..entry }),
                // Gone since it was listed: a temporary file of the node's.
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(error.context(format!("copying {}", data_dir.join(&relative).display()))),
            }
        }
        for (source, expected) in media_files {
            match self.copy_file(&source, Some(&expected)) {
                Ok(entry) => files.push(entry),
                Err(error) => self.summary.problems.push(format!("{}: {error:#}", expected.path)),
            }
            self.progress.file_done();
        }
        self.progress.finish();
        self.summary.files = files.len() as u64;
        self.summary.bytes = files.iter().map(|entry| entry.bytes).sum();

        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            generation: generation.clone(),
            created_at: rfc3339(edgenode::os::unix_seconds()),
            node_id: self.summary.node_id.clone(),
            edgenode_version: snapshot["version"].as_str().unwrap_or(env!("CARGO_PKG_VERSION")).to_owned(),
            digest: self.summary.digest.clone(),
            records: snapshot["records"].as_u64().unwrap_or_default(),
            tombstones: snapshot["tombstones"].as_u64().unwrap_or_default(),
            files,
        };
        self.commit_generation(&manifest)?;
        self.prune(keep)?;
        Ok(())
    }

    /// Copies `source` into `objects/` unless an object with its hash is there. A
    /// photo file's hash is known from the snapshot (`expected`): an object already
    /// there is reused without reading `source`, and a copy must match it. Any other
    /// file is hashed first, and copied only when no object has its hash.
    fn copy_file(&mut self, source: &Path, expected: Option<&FileEntry>) -> Result<FileEntry> {
        let must_match = expected.is_some();
        let hashed;
        let expected = match expected {
            Some(expected) => expected,
            None => {
                let (sha256, bytes) = hash_file(source, |_| {})?;
                hashed = FileEntry { path: String::new(), bytes, sha256 };
                &hashed
            }
        };
        let object = self.dest.object_path(&expected.sha256);
        if std::fs::metadata(&object).is_ok_and(|metadata| metadata.len() == expected.bytes) {
            self.summary.files_reused += 1;
            self.summary.bytes_reused += expected.bytes;
            self.progress.add_bytes(expected.bytes);
            return Ok(expected.clone());
        }
        let temp_path = self.dest.objects().join(format!("{TEMP_PREFIX}{}", std::process::id()));
        let progress = &self.progress;
        let copied = copy_hashing(source, &temp_path, |length| progress.add_bytes(length));
        let (sha256, bytes) = match copied {
            Ok(copied) if must_match && copied.0 != expected.sha256 => {
                let _ = std::fs::remove_file(&temp_path);
                bail!("its bytes do not match the hash the node recorded (damaged on the node's disk?)");
            }
            Ok(copied) => copied,
            Err(error) => {
                let _ = std::fs::remove_file(&temp_path);
                return Err(error);
            }
        };
        // A file other than a photo may have changed since it was hashed: its object
        // is named by the bytes copied.
        let object = self.dest.object_path(&sha256);
        let parent = object.parent().expect("objects have a parent");
        if !parent.exists() {
            create_private_dir_all(parent)?;
            self.synced.insert(self.dest.objects());
        }
        std::fs::rename(&temp_path, &object)?;
        self.synced.insert(parent.to_owned());
        self.summary.files_copied += 1;
        self.summary.bytes_copied += bytes;
        Ok(FileEntry { path: expected.path.clone(), bytes, sha256 })
    }

    /// Writes the manifest in `tmp-…/`, makes it and every object durable, then
    /// renames it into `generations/`: the one step that makes the generation exist.
    fn commit_generation(&mut self, manifest: &Manifest) -> Result<()> {
        for dir in std::mem::take(&mut self.synced) {
            sync_dir(&dir)?;
        }
        let temp_dir = self.dest.root.join(format!("{TEMP_PREFIX}{}", manifest.generation));
        create_private_dir_all(&temp_dir)?;
        let text = serde_json::to_vec(manifest)?;
        let mut file = create_private_file(&temp_dir.join("manifest.json"))?;
        file.write_all(&text)?;
        file.sync_all()?;
        sync_dir(&temp_dir)?;
        std::fs::rename(&temp_dir, self.dest.generations().join(&manifest.generation))?;
        sync_dir(&self.dest.generations())?;
        self.summary.manifest_bytes = text.len() as u64;
        Ok(())
    }

    /// Keeps the newest `keep` generations, then removes objects none of them names.
    fn prune(&mut self, keep: usize) -> Result<()> {
        let names = self.dest.generation_names()?;
        let removed = names.len().saturating_sub(keep);
        for name in &names[..removed] {
            std::fs::remove_dir_all(self.dest.generations().join(name))
                .with_context(|| format!("removing generation {name}"))?;
            self.summary.generations_removed.push(name.clone());
        }
        self.summary.generations_kept = names.len() - removed;
        let mut named = HashSet::new();
        for name in &names[removed..] {
            named.extend(self.dest.read_manifest(name)?.files.into_iter().map(|entry| entry.sha256));
        }
        for shard in std::fs::read_dir(self.dest.objects())? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for object in std::fs::read_dir(shard.path())? {
                let object = object?;
                if !named.contains(object.file_name().to_string_lossy().as_ref()) {
                    std::fs::remove_file(object.path())?;
                    self.summary.objects_removed += 1;
                }
            }
        }
        Ok(())
    }
}

/// The three files of a photo: where they are, and what the snapshot says they hold.
fn media_entries(blobs: &BlobStore, data_dir: &Path, info: &MediaInfo) -> Vec<(PathBuf, FileEntry)> {
    [BlobKind::Original, BlobKind::Display, BlobKind::Thumb]
        .into_iter()
        .map(|kind| {
            let path = blobs.path(&info.media_id, kind);
            let relative =
                path.strip_prefix(data_dir).expect("blobs live in the data dir").to_string_lossy().into_owned();
            let blob = info.blob(kind);
            (path, FileEntry { path: relative, bytes: blob.bytes, sha256: blob.sha256.clone() })
        })
        .collect()
}

/// The data dir's files other than the database, photos and transient ones, relative
/// and `/`-separated; symbolic links and special files are left out.
fn other_files(data_dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut directories = vec![PathBuf::new()];
    while let Some(relative_dir) = directories.pop() {
        let entries = std::fs::read_dir(data_dir.join(&relative_dir))
            .with_context(|| format!("reading {}", data_dir.join(&relative_dir).display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if relative_dir.as_os_str().is_empty() && DATA_DIR_SKIPPED.contains(&name.as_str()) {
                continue;
            }
            let relative = relative_dir.join(&name);
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                directories.push(relative);
            } else if file_type.is_file() {
                files.push(relative.to_string_lossy().into_owned());
                if files.len() > OTHER_FILES_MAX {
                    bail!("the data dir holds more than {OTHER_FILES_MAX} files besides the database and photos; is --data-dir right?");
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Copies `source` to a new file `target` (0600), fsynced; returns its SHA-256 and length.
pub fn copy_hashing(source: &Path, target: &Path, mut on_bytes: impl FnMut(u64)) -> Result<(String, u64)> {
    let mut input = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let mut output = create_private_file(target).with_context(|| format!("creating {}", target.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; COPY_BUFFER_BYTES];
    let mut bytes = 0u64;
    loop {
        let read = input.read(&mut buffer).with_context(|| format!("reading {}", source.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        output.write_all(&buffer[..read]).with_context(|| format!("writing {}", target.display()))?;
        bytes += read as u64;
        on_bytes(read as u64);
    }
    output.sync_all().with_context(|| format!("syncing {}", target.display()))?;
    Ok((edgenode::store::hex(&hasher.finalize()), bytes))
}

/// SHA-256 and length of a file, read once.
pub fn hash_file(path: &Path, mut on_bytes: impl FnMut(u64)) -> Result<(String, u64)> {
    let mut input = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; COPY_BUFFER_BYTES];
    let mut bytes = 0u64;
    loop {
        let read = input.read(&mut buffer).with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
        on_bytes(read as u64);
    }
    Ok((edgenode::store::hex(&hasher.finalize()), bytes))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|error| error.kind() == std::io::ErrorKind::NotFound)
    })
}

/// `20261205T153012Z`, the UTC time now; `-2`, `-3`… appended if taken.
fn generation_name(dest: &BackupDir) -> Result<String> {
    let base = rfc3339(edgenode::os::unix_seconds()).replace(['-', ':'], "");
    let taken = dest.generation_names()?;
    let mut name = base.clone();
    let mut suffix = 2;
    while taken.contains(&name) {
        name = format!("{base}-{suffix}");
        suffix += 1;
    }
    Ok(name)
}

/// `2026-12-05T15:30:12Z`; the epoch when out of range.
fn rfc3339(unix_seconds: i64) -> String {
    super::utc_timestamp(unix_seconds, 'T').unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// A bar on stderr when it is a terminal; nothing otherwise (the summary says it all).
pub struct Progress {
    bar: Option<ProgressBar>,
    files_total: u64,
    files_done: u64,
}

impl Progress {
    pub fn hidden() -> Progress {
        Progress { bar: None, files_total: 0, files_done: 0 }
    }

    pub fn new(total_bytes: u64, files_total: u64) -> Progress {
        let bar = super::bytes_progress_bar(total_bytes, format!("0/{files_total} files"));
        Progress { bar, files_total, files_done: 0 }
    }

    pub fn add_bytes(&self, length: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(length);
        }
    }

    pub fn file_done(&mut self) {
        self.files_done += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}/{} files", self.files_done, self.files_total));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_are_utc_times_that_sort() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_484_612), "2026-12-05T15:30:12Z");
        assert_eq!(rfc3339(1_796_484_612).replace(['-', ':'], ""), "20261205T153012Z");
    }

    #[test]
    fn the_help_says_what_the_code_does() {
        assert!(HELP_AFTER.contains("0700") && HELP_AFTER.contains("0600"));
        assert!(HELP_AFTER.contains(super::super::APPLIANCE_CONFIG_PATH));
    }
}
