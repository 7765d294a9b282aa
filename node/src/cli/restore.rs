//! `edgenode restore SRC --data-dir DIR`: a generation of `edgenode backup` back into an
//! empty (or absent) data dir, with the node stopped; the node started on it has the
//! same identity, users, posts and photos (and replication digest).
//!
//! Every file is copied into `DIR/.restore-partial/` while its SHA-256 is checked
//! against the manifest; only when all match is `COMPLETE` written there and the files
//! moved into `DIR` (the database last). A failed check leaves `DIR` as it was; a run
//! killed while staging is cleared and done again by the next run, one killed while
//! moving is finished by it. Siblings then bring the node up to date: what was written
//! or deleted since the backup arrives by replication, where the newest version wins.

use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use indicatif::HumanBytes;
use serde::Serialize;

use edgenode::store::{create_private_dir_all, create_private_file};

use super::backup::{copy_hashing, read_manifest, sync_dir, BackupDir, Manifest, Progress};
use super::{Exit, EXIT_CANNOT_TELL, EXIT_NO};

/// Where a restore stages its files inside the data dir.
const STAGING_DIR: &str = ".restore-partial";
/// Written in the staging dir once every file is there and checked.
const COMPLETE_MARKER: &str = "COMPLETE";
const DATABASE_FILE: &str = "edgenode.redb";

/// `edgenode restore --help`, and README's "Backups".
pub const HELP_AFTER: &str = "\
SRC is a backup directory (its newest generation, or --generation NAME) or one of its generations/<NAME> directories.

Run it as the user the node runs as (on the appliance: runuser -u edgenode -- edgenode restore …), with the node stopped.

Exit status:
  0  restored: start the node on DIR
  1  refused: DIR is not empty, or a file of the backup is missing or does not match its hash (DIR is left as it was)
  2  SRC or DIR cannot be read or written";

#[derive(clap::Args)]
#[command(after_help = HELP_AFTER)]
pub struct RestoreArgs {
    /// A backup directory made by `edgenode backup`, or one generation in it.
    pub src: PathBuf,
    /// The data dir to restore into: absent or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The generation to restore (a name under SRC/generations/); default: the newest.
    #[arg(long)]
    pub generation: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct RestoreSummary {
    data_dir: PathBuf,
    generation: String,
    node_id: String,
    digest: String,
    files: u64,
    bytes: u64,
    seconds: f64,
}

pub fn restore(args: RestoreArgs) -> Result<()> {
    let started = Instant::now();
    let cannot = |error: anyhow::Error| Exit::new(EXIT_CANNOT_TELL, format!("{error:#}"));
    let refused = |error: anyhow::Error| Exit::new(EXIT_NO, format!("{error:#}"));
    let (backup, manifest) = find_generation(&args.src, args.generation.as_deref()).map_err(cannot)?;
    check_paths(&manifest).map_err(refused)?;
    let staging = args.data_dir.join(STAGING_DIR);
    match prepare_data_dir(&args.data_dir) {
        Ok(DataDirState::Empty) => {}
        Ok(DataDirState::Staged) => {
            move_into_place(&args.data_dir, &manifest).map_err(cannot)?;
            return finish(&args, &manifest, started);
        }
        Err(error) => return Err(refused(error).into()),
    }
    let total_bytes = manifest.files.iter().map(|entry| entry.bytes).sum();
    let mut progress =
        if args.json { Progress::hidden() } else { Progress::new(total_bytes, manifest.files.len() as u64) };
    let staged = stage(&backup, &manifest, &staging, &mut progress);
    progress.finish();
    if let Err(error) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(refused(error.context(format!("nothing was restored into {}", args.data_dir.display()))).into());
    }
    move_into_place(&args.data_dir, &manifest).map_err(cannot)?;
    finish(&args, &manifest, started)
}

fn finish(args: &RestoreArgs, manifest: &Manifest, started: Instant) -> Result<()> {
    let summary = RestoreSummary {
        data_dir: args.data_dir.clone(),
        generation: manifest.generation.clone(),
        node_id: manifest.node_id.clone(),
        digest: manifest.digest.clone(),
        files: manifest.files.len() as u64,
        bytes: manifest.files.iter().map(|entry| entry.bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "restored generation {} of node {} into {}: {} files, {}, each checked against its SHA-256; {:.1} s",
            summary.generation,
            summary.node_id,
            summary.data_dir.display(),
            summary.files,
            HumanBytes(summary.bytes),
            summary.seconds
        );
        println!(
            "start the node on it (edgenode serve --data-dir {}); its siblings, if any, bring it up to date",
            summary.data_dir.display()
        );
    }
    Ok(())
}

/// The backup dir and manifest `src` names: a backup dir (its newest generation, or
/// `generation`), or a generation dir inside one.
fn find_generation(src: &Path, generation: Option<&str>) -> Result<(BackupDir, Manifest)> {
    if src.join("manifest.json").is_file() {
        if generation.is_some() {
            bail!("{} is one generation already; leave out --generation", src.display());
        }
        let root = src.parent().and_then(Path::parent).context("a generation lives in <backup>/generations/")?;
        return Ok((BackupDir::new(root), read_manifest(&src.join("manifest.json"))?));
    }
    let backup = BackupDir::new(src);
    let names = backup.generation_names()?;
    let name = match generation {
        Some(name) if names.iter().any(|known| known == name) => name.to_owned(),
        Some(name) => bail!("{} has no generation {name}; it has: {}", src.display(), names.join(", ")),
        None => names.last().cloned().with_context(|| {
            format!(
                "{} holds no backup generation (no {}/<time>/manifest.json)",
                src.display(),
                backup.generations().display()
            )
        })?,
    };
    let manifest = backup.read_manifest(&name)?;
    Ok((backup, manifest))
}

/// Every path relative and inside the data dir, each file once, the database among them.
fn check_paths(manifest: &Manifest) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for entry in &manifest.files {
        let path = Path::new(&entry.path);
        let inside = !entry.path.is_empty() && path.components().all(|part| matches!(part, Component::Normal(_)));
        if !inside || path.starts_with(STAGING_DIR) {
            bail!("the manifest names a file outside the data dir: {:?}", entry.path);
        }
        if !edgenode::store::blobs::is_sha256_hex(&entry.sha256) {
            bail!("the manifest's hash of {} is not a SHA-256: {:?}", entry.path, entry.sha256);
        }
        if !seen.insert(entry.path.as_str()) {
            bail!("the manifest names {} twice", entry.path);
        }
    }
    if !seen.contains(DATABASE_FILE) {
        bail!("the manifest has no database ({DATABASE_FILE})");
    }
    Ok(())
}

enum DataDirState {
    /// Absent (now made) or empty, or holding only an unfinished staging dir (cleared).
    Empty,
    /// An earlier run staged and checked everything and was moving it into place.
    Staged,
}

fn prepare_data_dir(data_dir: &Path) -> Result<DataDirState> {
    let staging = data_dir.join(STAGING_DIR);
    if staging.join(COMPLETE_MARKER).exists() {
        return Ok(DataDirState::Staged);
    }
    create_private_dir_all(data_dir).with_context(|| format!("making {}", data_dir.display()))?;
    let mut others = Vec::new();
    for entry in std::fs::read_dir(data_dir).with_context(|| format!("reading {}", data_dir.display()))? {
        let name = entry?.file_name();
        if name != STAGING_DIR {
            others.push(name.to_string_lossy().into_owned());
        }
    }
    if !others.is_empty() {
        others.sort();
        bail!(
            "{} is not empty (it holds {}); restore only into an empty or absent data dir, never over a node's data",
            data_dir.display(),
            others.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("clearing {}", staging.display()))?;
    }
    Ok(DataDirState::Empty)
}

/// Copies every file into `staging`, checking each against its hash and length.
fn stage(backup: &BackupDir, manifest: &Manifest, staging: &Path, progress: &mut Progress) -> Result<()> {
    create_private_dir_all(staging)?;
    let mut directories = std::collections::BTreeSet::new();
    for entry in &manifest.files {
        let object = backup.object_path(&entry.sha256);
        let target = staging.join(&entry.path);
        let parent = target.parent().expect("a file in the staging dir").to_owned();
        create_private_dir_all(&parent)?;
        let (sha256, bytes) = copy_hashing(&object, &target, |length| progress.add_bytes(length))
            .with_context(|| format!("{} (object {})", entry.path, object.display()))?;
        if sha256 != entry.sha256 || bytes != entry.bytes {
            bail!(
                "{}: the backup's copy ({}) does not match the manifest (SHA-256 {sha256}, {bytes} bytes; expected {}, {} bytes): the backup is damaged",
                entry.path,
                object.display(),
                entry.sha256,
                entry.bytes
            );
        }
        directories.insert(parent);
        progress.file_done();
    }
    for directory in directories.iter().rev() {
        sync_dir(directory)?;
    }
    let marker = create_private_file(&staging.join(COMPLETE_MARKER))?;
    marker.sync_all()?;
    sync_dir(staging)?;
    Ok(())
}

/// Moves the staged entries into the data dir, the database last (a node started on
/// a half-moved dir would find no database rather than a database without its
/// identity), then removes the staging dir.
fn move_into_place(data_dir: &Path, manifest: &Manifest) -> Result<()> {
    let staging = data_dir.join(STAGING_DIR);
    let mut top_level: Vec<String> = manifest
        .files
        .iter()
        .filter_map(|entry| entry.path.split('/').next().map(str::to_owned))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    top_level.sort_by_key(|name| name == DATABASE_FILE);
    for name in top_level {
        let (from, to) = (staging.join(&name), data_dir.join(&name));
        if !from.exists() && to.exists() {
            continue; // moved by the run that was killed
        }
        std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    sync_dir(data_dir)?;
    std::fs::remove_file(staging.join(COMPLETE_MARKER))?;
    std::fs::remove_dir_all(&staging)?;
    sync_dir(data_dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::backup::FileEntry;

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            format: 1,
            generation: "20261205T153012Z".into(),
            created_at: "2026-12-05T15:30:12Z".into(),
            node_id: "1".into(),
            edgenode_version: "0".into(),
            digest: "0".into(),
            records: 0,
            tombstones: 0,
            files: paths
                .iter()
                .map(|path| FileEntry { path: (*path).into(), bytes: 1, sha256: "a".repeat(64) })
                .collect(),
        }
    }

    #[test]
    fn a_manifest_cannot_write_outside_the_data_dir() {
        assert!(check_paths(&manifest(&["edgenode.redb", "media/ab/x.thumb", "acme/account.json"])).is_ok());
        for bad in ["../etc/passwd", "/etc/passwd", "media/../../x", "", ".restore-partial/COMPLETE"] {
            assert!(check_paths(&manifest(&["edgenode.redb", bad])).is_err(), "{bad:?} must be refused");
        }
        assert!(check_paths(&manifest(&["node.key"])).is_err(), "a manifest without the database is refused");
        assert!(check_paths(&manifest(&["edgenode.redb", "node.key", "node.key"])).is_err());
    }
}
