//! Fleet updates, sans-IO: when a box asks its update server next (interval, a
//! per-node offset, random jitter, backoff after failures), whether a published
//! version is for this box (staged rollout by node id), whether now is inside the
//! maintenance window, and what the manifest at the update URL says. The driver is
//! `services/update.rs`; times are unix seconds passed in, randomness a `u64` passed in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a box reads at its update URL (provisioning/update-server.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout of this file; 1.
    pub format: u32,
    /// The edgenode version inside the bundle, as `/api/v1/node` reports it.
    pub version: String,
    /// Where the RAUC bundle is: absolute `https://…`, or relative to the manifest's URL.
    pub bundle_url: String,
    /// SHA-256 of the bundle file, 64 lowercase hex digits.
    pub sha256: String,
    /// Bytes of the bundle file.
    pub size_bytes: u64,
    /// Boxes that install it, 0 to 100: a box does when
    /// `rollout_bucket(node id, version) < rollout_percent`.
    pub rollout_percent: u8,
    /// When it was published (RFC 3339), shown to operators.
    #[serde(default)]
    pub published_at: String,
}

/// Layout version of `Manifest` this node reads.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid JSON of the expected layout: {0}")]
    Parse(String),
    #[error("manifest format {0} is not understood (this node reads format {MANIFEST_FORMAT})")]
    Format(u32),
    #[error("manifest field `{field}`: {reason}")]
    Field { field: &'static str, reason: &'static str },
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| ManifestError::Parse(error.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(manifest.format));
        }
        let field = |field, reason| Err(ManifestError::Field { field, reason });
        if manifest.version.is_empty()
            || manifest.version.len() > 64
            || !manifest.version.bytes().all(|byte| byte.is_ascii_alphanumeric() || b".-+_~".contains(&byte))
        {
            return field("version", "1 to 64 of a-z A-Z 0-9 . - + _ ~");
        }
        if manifest.sha256.len() != 64 || !manifest.sha256.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        {
            return field("sha256", "64 lowercase hex digits");
        }
        if manifest.rollout_percent > 100 {
            return field("rollout_percent", "0 to 100");
        }
        if manifest.bundle_url.is_empty() {
            return field("bundle_url", "empty");
        }
        Ok(manifest)
    }
}

/// This box's place, 0 to 99, in the rollout of `version`: the same box gets the same
/// place for a version (raising the percent only adds boxes), and a different one for
/// the next version (the same boxes are not always first).
pub fn rollout_bucket(node_id: u64, version: &str) -> u8 {
    let digest = Sha256::new().chain_update(node_id.to_be_bytes()).chain_update(version.as_bytes()).finalize();
    (u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 100) as u8
}

/// Whether this box installs `manifest` now that it is published at its percent.
pub fn in_rollout(node_id: u64, manifest: &Manifest) -> bool {
    rollout_bucket(node_id, &manifest.version) < manifest.rollout_percent
}

/// The poll schedule's settings (from `[update]`), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub check_interval_seconds: u64,
    /// Width of the spread: each box's own offset is in `[0, jitter)`.
    pub jitter_seconds: u64,
    /// First wait after a failed check; doubled per further failure up to the interval.
    pub retry_seconds: u64,
}

/// Part of the jitter drawn at random at every check (the rest is the box's own
/// offset): an eighth, so boxes whose offsets fall close drift apart.
const RANDOM_JITTER_DIVISOR: u64 = 8;

impl Schedule {
    /// This box's own offset in `[0, jitter)`, from its node id: boxes that boot in the
    /// same second (power back in a town) still ask at different times, and a box keeps
    /// its place across restarts.
    pub fn node_offset_seconds(&self, node_id: u64) -> u64 {
        if self.jitter_seconds == 0 {
            return 0;
        }
        let digest =
            Sha256::new().chain_update(b"edgenode update offset").chain_update(node_id.to_be_bytes()).finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % self.jitter_seconds
    }

    fn random_jitter_seconds(&self, random: u64) -> u64 {
        let width = self.jitter_seconds / RANDOM_JITTER_DIVISOR;
        if width == 0 {
            0
        } else {
            random % width
        }
    }

    /// When a box that started at `now` asks first: its offset plus a little random
    /// jitter (never the interval: a box that was off for a while asks soon).
    pub fn first_check_at(&self, now: u64, node_id: u64, random: u64) -> u64 {
        now + self.node_offset_seconds(node_id) + self.random_jitter_seconds(random)
    }

    /// When to ask next after a check at `now` that got an answer.
    pub fn next_after_success(&self, now: u64, node_id: u64, random: u64) -> u64 {
        now + self.check_interval_seconds + self.node_offset_seconds(node_id) + self.random_jitter_seconds(random)
    }

    /// When to ask next after the `failures`-th failed check in a row (1 for the
    /// first) at `now`: exponential backoff up to the interval, drawn at random from
    /// the upper half of the wait ("equal jitter"), so boxes that failed together
    /// (a server outage) come back spread out rather than in step.
    pub fn next_after_failure(&self, now: u64, failures: u32, random: u64) -> u64 {
        let wait = self.backoff_seconds(failures);
        let half = wait / 2;
        now + (wait - half) + if half == 0 { 0 } else { random % (half + 1) }
    }

    /// The longest wait after `failures` failures.
    pub fn backoff_seconds(&self, failures: u32) -> u64 {
        let cap = self.check_interval_seconds.max(self.retry_seconds);
        let doublings = failures.saturating_sub(1).min(40);
        self.retry_seconds.saturating_mul(1u64 << doublings).min(cap)
    }
}

/// The maintenance window: a daily span of UTC clock time in which a box may reboot
/// into an installed update. Empty: any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Seconds after UTC midnight.
    start_second: u32,
    end_second: u32,
    any_time: bool,
}

const DAY_SECONDS: u64 = 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a window: expected \"HH:MM-HH:MM\" in UTC (e.g. \"02:00-05:00\"; \"23:00-01:00\" spans midnight), or \"\" for any time")]
pub struct WindowError(pub String);

impl MaintenanceWindow {
    pub const ANY_TIME: MaintenanceWindow = MaintenanceWindow { start_second: 0, end_second: 0, any_time: true };

    /// `"HH:MM-HH:MM"` (UTC; the end may be before the start: across midnight), or `""`.
    pub fn parse(text: &str) -> Result<MaintenanceWindow, WindowError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(MaintenanceWindow::ANY_TIME);
        }
        let invalid = || WindowError(text.to_owned());
        let clock = |part: &str| -> Result<u32, WindowError> {
            let (hours, minutes) = part.trim().split_once(':').ok_or_else(invalid)?;
            if hours.len() != 2 || minutes.len() != 2 {
                return Err(invalid());
            }
            let hours: u32 = hours.parse().map_err(|_| invalid())?;
            let minutes: u32 = minutes.parse().map_err(|_| invalid())?;
            if hours > 24 || minutes > 59 || (hours == 24 && minutes != 0) {
                return Err(invalid());
            }
            Ok(hours * 3600 + minutes * 60)
        };
        let (start, end) = text.split_once('-').ok_or_else(invalid)?;
        let (start_second, end_second) = (clock(start)?, clock(end)?);
        if start_second == end_second {
            return Err(invalid());
        }
        Ok(MaintenanceWindow { start_second, end_second, any_time: false })
    }

    pub fn contains(&self, unix_seconds: u64) -> bool {
        if self.any_time {
            return true;
        }
        let second = (unix_seconds % DAY_SECONDS) as u32;
        if self.start_second < self.end_second {
            (self.start_second..self.end_second).contains(&second)
        } else {
            second >= self.start_second || second < self.end_second
        }
    }

    /// `now` when inside the window, else when it opens next.
    pub fn next_opening(&self, now: u64) -> u64 {
        if self.contains(now) {
            return now;
        }
        let midnight = now - now % DAY_SECONDS;
        let today = midnight + u64::from(self.start_second);
        if today > now {
            today
        } else {
            today + DAY_SECONDS
        }
    }
}

/// What a check decides, given the manifest and what this box knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The box runs the published version already.
    UpToDate,
    /// Published, but not for this box yet (its rollout bucket is above the percent).
    NotInRollout { bucket: u8 },
    /// This bundle was installed here before and the box came back on the old
    /// version (its boot failed, or it was rolled back): not installed again, or the
    /// box would loop. A new bundle (another sha256) is.
    FailedBefore,
    /// Installed, waiting for the maintenance window to reboot into it.
    AwaitingReboot,
    /// Download and install it.
    Install,
}

/// Whether to install `manifest` on a box running `running_version`.
/// `failed_sha256`: bundles this box installed and came back from; `pending_sha256`:
/// the bundle installed and not booted yet.
pub fn decide(
    node_id: u64,
    running_version: &str,
    manifest: &Manifest,
    failed_sha256: &[String],
    pending_sha256: Option<&str>,
) -> Decision {
    if manifest.version == running_version {
        return Decision::UpToDate;
    }
    if failed_sha256.contains(&manifest.sha256) {
        return Decision::FailedBefore;
    }
    if pending_sha256 == Some(manifest.sha256.as_str()) {
        return Decision::AwaitingReboot;
    }
    let bucket = rollout_bucket(node_id, &manifest.version);
    if bucket >= manifest.rollout_percent {
        return Decision::NotInRollout { bucket };
    }
    Decision::Install
}

// The records of checks and installs: the service keeps them in its state file, and
// the API answers them as they are.

/// What happened to the last install this box made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstallOutcome {
    /// Downloading or in `rauc install` (at a start: it was interrupted).
    Installing,
    /// Written to the inactive slot; the box boots it at the next reboot.
    AwaitingReboot,
    /// The box runs it.
    Booted,
    /// The box rebooted and came back on the old version: not marked good, rolled back.
    BootFailed,
    /// The download or `rauc install` failed; nothing changed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UpdateCheckRecord")]
pub struct CheckRecord {
    pub at_unix: u64,
    /// `up_to_date`, `not_in_rollout`, `failed_before`, `awaiting_reboot`, `install`, `failed`.
    pub outcome: String,
    pub version: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UpdateInstallRecord")]
pub struct InstallRecord {
    /// From the manifest, or `rauc info` for a bundle installed by hand (`None`: unknown).
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// The URL or file it came from.
    pub source: String,
    pub from_version: String,
    pub started_at_unix: u64,
    pub finished_at_unix: Option<u64>,
    pub outcome: InstallOutcome,
    pub message: String,
    /// The kernel's boot id when it was installed: another one later means the box rebooted.
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailedBundle {
    pub version: Option<String>,
    pub sha256: String,
    pub at_unix: u64,
}

/// dm-verity's hash tree as RAUC lays out a verity bundle: `[payload][hash tree][CMS
/// signature][signature length, u64 big-endian]`, the tree in dm-verity's format 1
/// (SHA-256, 4096-byte blocks, the salt before each block hashed, 128 digests to a
/// hash block, the top level stored first). The signed manifest holds the tree's root
/// hash, salt and size. RAUC checks the payload only as it reads it, while it writes the
/// slot, so a changed byte would stop an install half-way; checking the whole payload
/// and tree against the signed root first means a bundle RAUC gets is whole.
pub mod verity {
    use sha2::{Digest as _, Sha256};

    pub const BLOCK_BYTES: usize = 4096;
    const DIGEST_BYTES: usize = 32;
    const DIGESTS_PER_BLOCK: u64 = (BLOCK_BYTES / DIGEST_BYTES) as u64;

    /// Where the levels of the tree of `data_blocks` blocks are.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Layout {
        /// Hash blocks per level, the lowest (over the data) first.
        level_blocks: Vec<u64>,
    }

    impl Layout {
        /// `None` for fewer than 2 data blocks (a tree with no level; no bundle is that small).
        pub fn new(data_blocks: u64) -> Option<Layout> {
            if data_blocks < 2 {
                return None;
            }
            let mut level_blocks = Vec::new();
            let mut below = data_blocks;
            loop {
                let blocks = below.div_ceil(DIGESTS_PER_BLOCK);
                level_blocks.push(blocks);
                if blocks == 1 {
                    return Some(Layout { level_blocks });
                }
                below = blocks;
            }
        }

        pub fn tree_bytes(&self) -> u64 {
            self.level_blocks.iter().sum::<u64>() * BLOCK_BYTES as u64
        }

        /// Offset in the tree of hash block `index` of `level` (0: the lowest).
        pub fn offset(&self, level: usize, index: u64) -> u64 {
            let above: u64 = self.level_blocks[level + 1..].iter().sum();
            (above + index) * BLOCK_BYTES as u64
        }
    }

    /// A hash block the tree needs, to compare with the one stored in the bundle.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct HashBlock {
        pub level: usize,
        pub index: u64,
        pub bytes: Vec<u8>,
    }

    /// Builds the tree as the data blocks come, one at a time.
    pub struct Hasher {
        salt: Vec<u8>,
        layout: Layout,
        /// Per level, the digests gathered for its hash block being filled.
        filling: Vec<Vec<u8>>,
        /// Per level, hash blocks finished.
        finished: Vec<u64>,
        /// The top level's one block, once finished: the root hash is its digest.
        top: Option<Vec<u8>>,
    }

    impl Hasher {
        pub fn new(salt: Vec<u8>, layout: Layout) -> Hasher {
            let levels = layout.level_blocks.len();
            Hasher { salt, layout, filling: vec![Vec::new(); levels], finished: vec![0; levels], top: None }
        }

        fn digest(&self, block: &[u8]) -> [u8; DIGEST_BYTES] {
            let mut hasher = Sha256::new();
            hasher.update(&self.salt);
            hasher.update(block);
            hasher.finalize().into()
        }

        /// Adds the next data block (`BLOCK_BYTES` long); returns the hash blocks it completed.
        pub fn push(&mut self, data_block: &[u8]) -> Vec<HashBlock> {
            debug_assert_eq!(data_block.len(), BLOCK_BYTES);
            let digest = self.digest(data_block);
            let mut done = Vec::new();
            self.add(0, &digest, &mut done);
            done
        }

        fn add(&mut self, level: usize, digest: &[u8], done: &mut Vec<HashBlock>) {
            self.filling[level].extend_from_slice(digest);
            if self.filling[level].len() == BLOCK_BYTES {
                self.complete(level, done);
            }
        }

        fn complete(&mut self, level: usize, done: &mut Vec<HashBlock>) {
            let mut bytes = std::mem::take(&mut self.filling[level]);
            bytes.resize(BLOCK_BYTES, 0);
            let index = self.finished[level];
            self.finished[level] += 1;
            if level + 1 < self.layout.level_blocks.len() {
                let digest = self.digest(&bytes);
                done.push(HashBlock { level, index, bytes });
                self.add(level + 1, &digest, done);
            } else {
                self.top = Some(bytes.clone());
                done.push(HashBlock { level, index, bytes });
            }
        }

        /// After the last data block: the partly filled hash blocks (zero-padded), and
        /// the root hash.
        pub fn finish(mut self) -> (Vec<HashBlock>, [u8; DIGEST_BYTES]) {
            let mut done = Vec::new();
            for level in 0..self.layout.level_blocks.len() {
                if !self.filling[level].is_empty() {
                    self.complete(level, &mut done);
                }
            }
            let root = self.digest(self.top.as_deref().unwrap_or_default());
            (done, root)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str, percent: u8) -> Manifest {
        Manifest {
            format: 1,
            version: version.to_owned(),
            bundle_url: "edgenode-x86_64.raucb".to_owned(),
            sha256: "a".repeat(64),
            size_bytes: 1,
            rollout_percent: percent,
            published_at: String::new(),
        }
    }

    #[test]
    fn manifests_are_checked() {
        let good = serde_json::to_vec(&manifest("0.2.0", 10)).unwrap();
        assert_eq!(Manifest::parse(&good).unwrap().version, "0.2.0");
        let mut bad = manifest("0.2.0", 101);
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        bad = manifest("0.2.0 ; rm", 1);
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        bad = manifest("0.2.0", 1);
        bad.sha256 = "A".repeat(64);
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        bad = manifest("0.2.0", 1);
        bad.format = 2;
        assert!(matches!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()), Err(ManifestError::Format(2))));
        assert!(Manifest::parse(b"{\"format\":1}").is_err());
    }

    #[test]
    fn a_rollout_takes_about_its_percent_and_raising_it_only_adds_boxes() {
        let nodes: Vec<u64> = (0..10_000u64).map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
        let taking = |percent: u8| nodes.iter().filter(|node| in_rollout(**node, &manifest("0.2.0", percent))).count();
        assert_eq!(taking(0), 0);
        assert_eq!(taking(100), 10_000);
        let ten = taking(10);
        assert!((800..1200).contains(&ten), "10% of 10,000 boxes took {ten}");
        for node in &nodes {
            if in_rollout(*node, &manifest("0.2.0", 10)) {
                assert!(in_rollout(*node, &manifest("0.2.0", 50)), "raising the percent keeps the first boxes");
            }
        }
        let first_of_both = nodes
            .iter()
            .filter(|node| in_rollout(**node, &manifest("0.2.0", 10)) && in_rollout(**node, &manifest("0.3.0", 10)))
            .count();
        assert!(first_of_both < 300, "each version has its own first boxes: {first_of_both} were first for both");
    }

    #[test]
    fn decisions() {
        let published = manifest("0.2.0", 100);
        assert_eq!(decide(1, "0.2.0", &published, &[], None), Decision::UpToDate);
        assert_eq!(decide(1, "0.1.0", &published, &[], None), Decision::Install);
        assert_eq!(decide(1, "0.1.0", &published, &["a".repeat(64)], None), Decision::FailedBefore);
        assert_eq!(decide(1, "0.1.0", &published, &[], Some(&"a".repeat(64))), Decision::AwaitingReboot);
        let bucket = rollout_bucket(1, "0.2.0");
        assert_eq!(decide(1, "0.1.0", &manifest("0.2.0", bucket), &[], None), Decision::NotInRollout { bucket });
    }

    #[test]
    fn windows_parse_and_span_midnight() {
        let night = MaintenanceWindow::parse("02:00-05:00").unwrap();
        let day = 20_000 * DAY_SECONDS;
        assert!(!night.contains(day + 3600));
        assert!(night.contains(day + 2 * 3600));
        assert!(night.contains(day + 5 * 3600 - 1));
        assert!(!night.contains(day + 5 * 3600));
        assert_eq!(night.next_opening(day + 3600), day + 2 * 3600);
        assert_eq!(night.next_opening(day + 6 * 3600), day + DAY_SECONDS + 2 * 3600);
        let across = MaintenanceWindow::parse("23:00-01:00").unwrap();
        assert!(across.contains(day + 23 * 3600 + 1) && across.contains(day + 1800) && !across.contains(day + 3600));
        assert!(MaintenanceWindow::parse("").unwrap().contains(day + 12 * 3600));
        for bad in ["2:00-5:00", "02:00", "02:00-02:00", "25:00-01:00", "02:60-03:00", "night"] {
            assert!(MaintenanceWindow::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_interval_and_is_jittered() {
        let schedule = Schedule { check_interval_seconds: 21_600, jitter_seconds: 3600, retry_seconds: 60 };
        assert_eq!(schedule.backoff_seconds(1), 60);
        assert_eq!(schedule.backoff_seconds(2), 120);
        assert_eq!(schedule.backoff_seconds(9), 15_360);
        assert_eq!(schedule.backoff_seconds(10), 21_600);
        assert_eq!(schedule.backoff_seconds(u32::MAX), 21_600);
        for random in [0, 1, 29, 30, 31, u64::MAX] {
            let at = schedule.next_after_failure(1000, 1, random);
            assert!((1030..=1060).contains(&at), "{at}");
        }
        assert_eq!(schedule.node_offset_seconds(7), schedule.node_offset_seconds(7));
        assert!(schedule.node_offset_seconds(7) < 3600);
    }

    /// The herd simulation of issue 17: 10,000 boxes, no sockets, no clock. Every box
    /// boots in the same second (power back in a town); at their second wave the
    /// update server is down for an hour. Requests per 1-second bucket at the server
    /// are counted over two days, for ten seeds; the peak must stay under a bound
    /// derived from the schedule (the `[update]` defaults):
    ///
    /// a wave spreads N boxes over the jitter window J (each box's offset from its node
    /// id, plus J/8 at random), a mean of N / J requests per second; during an outage
    /// the retries of boxes that failed earlier add to it (one per doubling of the
    /// wait, from 5 min: at most about as many again in an hour). A second's count is
    /// about Poisson with that mean, whose peak over a day of seconds stays under
    /// 4 × N / J + 10: for N = 10,000 and J = 3600 s, a mean of 2.8/s and a bound of
    /// 21/s. With jitter 0 every box asks in the same second: the same simulation must
    /// exceed the bound.
    #[test]
    fn herd_of_10000_boxes_stays_under_the_bound_after_a_town_power_cut_and_an_outage() {
        let schedule = Schedule { check_interval_seconds: 6 * 3600, jitter_seconds: 3600, retry_seconds: 300 };
        let boxes = 10_000;
        let bound = peak_bound(boxes, schedule.jitter_seconds);
        assert_eq!(bound, 21);
        for seed in 1..=10 {
            let peaks = simulate_herd(boxes, schedule, seed);
            println!(
                "seed {seed}: {boxes} boxes, interval {} s, jitter {} s, retry {} s: peak {} req/s after boot, {} during \
                 the outage, {} after it (bound {bound})",
                schedule.check_interval_seconds,
                schedule.jitter_seconds,
                schedule.retry_seconds,
                peaks.after_boot,
                peaks.during_outage,
                peaks.after_recovery
            );
            assert!(peaks.after_boot <= bound, "seed {seed}: {} req/s after boot", peaks.after_boot);
            assert!(peaks.during_outage <= bound, "seed {seed}: {} req/s during the outage", peaks.during_outage);
            assert!(peaks.after_recovery <= bound, "seed {seed}: {} req/s after the outage", peaks.after_recovery);
        }
        let no_jitter = Schedule { jitter_seconds: 0, ..schedule };
        let peaks = simulate_herd(boxes, no_jitter, 1);
        println!("jitter 0: peak {} req/s after boot (bound {bound})", peaks.after_boot);
        assert!(peaks.after_boot > bound, "without jitter the herd must exceed the bound: {}", peaks.after_boot);
    }

    fn peak_bound(boxes: u64, jitter_seconds: u64) -> u64 {
        4 * boxes / jitter_seconds.max(1) + 10
    }

    struct Peaks {
        after_boot: u64,
        during_outage: u64,
        after_recovery: u64,
    }

    /// Boxes boot at 0; the server is down for an hour from the interval on, when
    /// most boxes make their second check. Each box follows the schedule's rules for
    /// two days of simulated time.
    fn simulate_herd(boxes: u64, schedule: Schedule, seed: u64) -> Peaks {
        let mut random = SplitMix64(seed);
        let horizon = 2 * DAY_SECONDS;
        let outage_start = schedule.check_interval_seconds;
        let outage = outage_start..outage_start + 3600;
        let mut requests = vec![0u64; horizon as usize + 1];
        for _ in 0..boxes {
            let node_id = random.next();
            let mut failures = 0u32;
            let mut at = schedule.first_check_at(0, node_id, random.next());
            while at < horizon {
                requests[at as usize] += 1;
                if outage.contains(&at) {
                    failures += 1;
                    at = schedule.next_after_failure(at, failures, random.next());
                } else {
                    failures = 0;
                    at = schedule.next_after_success(at, node_id, random.next());
                }
            }
        }
        let peak = |range: std::ops::Range<u64>| range.map(|second| requests[second as usize]).max().unwrap_or(0);
        Peaks {
            after_boot: peak(0..outage_start),
            during_outage: peak(outage.clone()),
            after_recovery: peak(outage.end..horizon),
        }
    }

    /// A small seeded generator for the simulation (the boxes' OS RNGs).
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn the_verity_tree_is_built_as_its_definition_says() {
        use super::verity::{Hasher, Layout, BLOCK_BYTES};
        let digest = |salt: &[u8], block: &[u8]| -> Vec<u8> {
            let mut hasher = Sha256::new();
            hasher.update(salt);
            hasher.update(block);
            hasher.finalize().to_vec()
        };
        let salt = b"a salt of some bytes".to_vec();
        for data_blocks in [2u64, 128, 129, 300, 128 * 128 + 1] {
            let data: Vec<Vec<u8>> =
                (0..data_blocks).map(|index| vec![(index % 251) as u8 ^ (index / 251) as u8; BLOCK_BYTES]).collect();
            // The definition: digests of the level below, 128 to a zero-padded block, up to one block.
            let mut levels: Vec<Vec<Vec<u8>>> = Vec::new();
            let mut digests: Vec<Vec<u8>> = data.iter().map(|block| digest(&salt, block)).collect();
            loop {
                let blocks: Vec<Vec<u8>> = digests
                    .chunks(128)
                    .map(|chunk| {
                        let mut block = chunk.concat();
                        block.resize(BLOCK_BYTES, 0);
                        block
                    })
                    .collect();
                digests = blocks.iter().map(|block| digest(&salt, block)).collect();
                let top = blocks.len() == 1;
                levels.push(blocks);
                if top {
                    break;
                }
            }
            let want_root = digest(&salt, &levels.last().unwrap()[0]);

            let layout = Layout::new(data_blocks).unwrap();
            let want_bytes: usize = levels.iter().map(|level| level.len() * BLOCK_BYTES).sum();
            assert_eq!(layout.tree_bytes(), want_bytes as u64, "{data_blocks} blocks");
            assert_eq!(layout.offset(levels.len() - 1, 0), 0, "the top level is stored first");
            let mut hasher = Hasher::new(salt.clone(), layout.clone());
            let mut blocks = Vec::new();
            for block in &data {
                blocks.extend(hasher.push(block));
            }
            let (rest, root) = hasher.finish();
            blocks.extend(rest);
            assert_eq!(root.to_vec(), want_root, "{data_blocks} blocks");
            assert_eq!(blocks.len(), levels.iter().map(Vec::len).sum::<usize>());
            let mut stored = vec![0u8; want_bytes];
            for block in &blocks {
                assert_eq!(
                    block.bytes, levels[block.level][block.index as usize],
                    "{data_blocks}: {}/{}",
                    block.level, block.index
                );
                let at = layout.offset(block.level, block.index) as usize;
                stored[at..at + BLOCK_BYTES].copy_from_slice(&block.bytes);
            }
            // Laid out top first: the offsets cover the tree without overlap.
            let laid_out: Vec<u8> = levels.iter().rev().flatten().flatten().copied().collect();
            assert_eq!(stored, laid_out, "{data_blocks} blocks");
        }
        assert!(Layout::new(1).is_none());
    }
}
