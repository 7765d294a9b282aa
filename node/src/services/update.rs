//! Fleet updates on this box: the poller that asks the ISP's update server for its
//! manifest on `core::update`'s schedule, downloads a bundle meant for this box
//! (checked against the manifest's size and SHA-256), hands it to RAUC (`rauc
//! install`, which checks the signature and writes the inactive slot only), and
//! reboots into it inside the maintenance window (`systemctl reboot`). Also one
//! install asked for by `edgenode update install`, and what `edgenode update status`,
//! `/api/v1/node` and `/metrics` show.
//!
//! What it did survives restarts in `<data_dir>/update-state.json` (written durably).
//! After a reboot it compares the running version with the one it installed: the
//! same, the update booted; another one after the box rebooted (a new boot id), the
//! new slot was not marked good and the bootloader went back; that bundle is then
//! never installed again (a new bundle is). Without `rauc` on the system nothing is
//! installed and the state says so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::UpdateSettings;
use crate::core::update::{decide, Decision, MaintenanceWindow, Manifest, Schedule};
// The records this service keeps are core types: the API answers them as they are.
pub use crate::core::update::{CheckRecord, FailedBundle, InstallOutcome, InstallRecord};
use crate::exposition;
use crate::os;

/// The state file in the data dir (`edgenode update status` reads it directly).
pub const STATE_FILE: &str = "update-state.json";
/// Downloads go here, in the data dir (an update never writes the data partition
/// otherwise; the file is removed once RAUC has it).
const DOWNLOAD_DIR: &str = "update";
/// The release this box runs (`os::release_version`): what a manifest's `version` and
/// an installed bundle's are compared with.
pub fn running_version() -> &'static str {
    os::release_version()
}
/// A manifest is a few hundred bytes.
const MANIFEST_BYTES_MAX: usize = 64 * 1024;
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A bundle of a few hundred MB over a slow DSL line.
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
const RAUC_INSTALL_TIMEOUT: Duration = Duration::from_secs(3600);
const RAUC_STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// `rauc status` is asked at most this often (slot states change on installs and boots).
const SLOTS_CACHE_TTL: Duration = Duration::from_secs(30);
/// Bundles remembered as failed on this box.
const FAILED_BUNDLES_MAX: usize = 16;
/// The poller never sleeps longer than this at once, so a clock set forward (no RTC
/// on a Pi until NTP answers) is noticed.
const SLEEP_MAX: Duration = Duration::from_secs(300);
/// A reboot asked for and not happened is asked for again after this.
const REBOOT_RETRY: Duration = Duration::from_secs(3600);
/// How long `check` waits for the poller to answer.
const CHECK_ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("updates are not available on this system: `rauc` is not installed")]
    NotAvailable,
    #[error("no update URL is configured ([update] url)")]
    NotConfigured,
    #[error("another update is in progress")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

/// `<data_dir>/update-state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateState {
    pub last_check: Option<CheckRecord>,
    pub last_install: Option<InstallRecord>,
    pub failed_bundles: Vec<FailedBundle>,
    pub consecutive_failures: u32,
    pub next_check_at_unix: Option<u64>,
}

impl UpdateState {
    pub fn load(data_dir: &Path) -> UpdateState {
        match std::fs::read(data_dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(%error, "update-state.json is unreadable; starting from an empty update state");
                UpdateState::default()
            }),
            Err(_) => UpdateState::default(),
        }
    }

    fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        write_durably(&data_dir.join(STATE_FILE), &serde_json::to_vec_pretty(self).expect("state serializes"))
    }

    /// At start: what became of the last install, from the version running now and
    /// whether the box rebooted since.
    fn reconcile(&mut self, running_version: &str, boot_id: &str, now: u64) -> bool {
        let Some(install) = &mut self.last_install else { return false };
        let rebooted = install.boot_id != boot_id;
        let before = install.outcome;
        match install.outcome {
            InstallOutcome::Installing => {
                install.outcome = InstallOutcome::Failed;
                install.message = "interrupted (the node stopped during the install); nothing was booted".to_owned();
            }
            // The new version started (and said so), but the box is back on the old one:
            // its health check failed after the start, or someone rolled it back by hand.
            // Either way this bundle is not installed again by itself.
            InstallOutcome::Booted
                if rebooted
                    && install.from_version == running_version
                    && install.version.as_deref() != Some(running_version) =>
            {
                install.outcome = InstallOutcome::BootFailed;
                install.message = format!(
                    "the box booted {} and came back on {running_version}: its slot was not marked good (or was \
                     rolled back by hand)",
                    install.version.as_deref().unwrap_or("the new bundle")
                );
                self.remember_failed(now);
            }
            InstallOutcome::AwaitingReboot if rebooted => {
                if install.version.as_deref() == Some(running_version) {
                    install.outcome = InstallOutcome::Booted;
                    install.message = format!("booted {running_version}");
                } else {
                    install.outcome = InstallOutcome::BootFailed;
                    install.message = format!(
                        "the box rebooted into {} and came back on {running_version}: the new slot was not marked good",
                        install.version.as_deref().unwrap_or("the new bundle")
                    );
                    self.remember_failed(now);
                }
                if let Some(install) = &mut self.last_install {
                    install.finished_at_unix = Some(now);
                }
            }
            _ => {}
        }
        self.last_install.as_ref().map(|install| install.outcome) != Some(before)
    }

    /// The last install's bundle joins the ones never installed again.
    fn remember_failed(&mut self, now: u64) {
        let Some(install) = &self.last_install else { return };
        if let Some(sha256) = install.sha256.clone() {
            self.failed_bundles.push(FailedBundle { version: install.version.clone(), sha256, at_unix: now });
            let excess = self.failed_bundles.len().saturating_sub(FAILED_BUNDLES_MAX);
            self.failed_bundles.drain(..excess);
        }
    }
}

/// What the poller is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unavailable,
    Idle,
    Checking,
    Downloading,
    Installing,
    AwaitingReboot,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Unavailable,
        Phase::Idle,
        Phase::Checking,
        Phase::Downloading,
        Phase::Installing,
        Phase::AwaitingReboot,
    ];

    fn label(self) -> &'static str {
        match self {
            Phase::Unavailable => "unavailable",
            Phase::Idle => "idle",
            Phase::Checking => "checking",
            Phase::Downloading => "downloading",
            Phase::Installing => "installing",
            Phase::AwaitingReboot => "awaiting_reboot",
        }
    }
}

/// A request to the poller: check now, and say what the check decided.
type CheckRequest = oneshot::Sender<Result<Value, UpdateError>>;

pub struct UpdateService {
    settings: UpdateSettings,
    schedule: Schedule,
    window: MaintenanceWindow,
    node_id: u64,
    data_dir: PathBuf,
    /// `rauc` on the PATH, found at start.
    rauc: Option<PathBuf>,
    state: Mutex<UpdateState>,
    phase: Mutex<Phase>,
    slots: Mutex<Option<(Instant, Value)>>,
    /// When the reboot command last ran (a reboot takes a while; one that failed is
    /// tried again after `REBOOT_RETRY`).
    reboot_asked: Mutex<Option<Instant>>,
    /// One install at a time (the poller's or one asked for).
    installing: tokio::sync::Mutex<()>,
    check_requests: mpsc::Sender<CheckRequest>,
    tls: Option<Arc<rustls::ClientConfig>>,
    runtime: tokio::runtime::Handle,
}

impl UpdateService {
    /// Starts the poller (when `[update] url` is set) and returns the service; it stops
    /// when `stop` turns true. Call within the runtime.
    pub fn start(settings: &UpdateSettings, node_id: u64, data_dir: &Path, stop: watch::Receiver<bool>) -> Arc<Self> {
        let rauc = find_program(&settings.rauc_command);
        let mut state = UpdateState::load(data_dir);
        let now = os::unix_seconds() as u64;
        if state.reconcile(running_version(), &boot_id(), now) {
            if let Some(install) = &state.last_install {
                match install.outcome {
                    InstallOutcome::BootFailed => tracing::error!(message = %install.message, "an update did not boot"),
                    _ => tracing::info!(message = %install.message, "update"),
                }
            }
            if let Err(error) = state.save(data_dir) {
                tracing::warn!(%error, "cannot write update-state.json");
            }
        }
        let phase = match (&rauc, state.last_install.as_ref().map(|install| install.outcome)) {
            (None, _) => Phase::Unavailable,
            (Some(_), Some(InstallOutcome::AwaitingReboot)) => Phase::AwaitingReboot,
            (Some(_), _) => Phase::Idle,
        };
        let tls = settings.url.as_ref().map(|_| Arc::new(client_tls(settings.pin.as_deref())));
        let (check_requests, requests) = mpsc::channel(4);
        let service = Arc::new(UpdateService {
            settings: settings.clone(),
            schedule: Schedule {
                check_interval_seconds: settings.check_interval_seconds,
                jitter_seconds: settings.jitter_seconds,
                retry_seconds: settings.retry_seconds,
            },
            window: MaintenanceWindow::parse(&settings.maintenance_window).unwrap_or(MaintenanceWindow::ANY_TIME),
            node_id,
            data_dir: data_dir.to_owned(),
            rauc,
            state: Mutex::new(state),
            phase: Mutex::new(phase),
            slots: Mutex::new(None),
            reboot_asked: Mutex::new(None),
            installing: tokio::sync::Mutex::new(()),
            check_requests,
            tls,
            runtime: tokio::runtime::Handle::current(),
        });
        match (&service.settings.url, &service.rauc) {
            (Some(url), Some(_)) => tracing::info!(%url, "updates: polling the update server"),
            (Some(_), None) => tracing::info!("updates: `rauc` is not installed, so this node installs no update"),
            (None, _) => tracing::debug!("updates: no [update] url, not polling"),
        }
        tokio::spawn(poll_loop(service.clone(), requests, stop));
        service
    }

    fn now() -> u64 {
        os::unix_seconds() as u64
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().expect("phase lock") = phase;
    }

    fn update_state(&self, change: impl FnOnce(&mut UpdateState)) {
        let mut state = self.state.lock().expect("update state lock");
        change(&mut state);
        if let Err(error) = state.save(&self.data_dir) {
            tracing::warn!(%error, "cannot write update-state.json");
        }
    }

    /// For `/api/v1/node` (admin part) and `edgenode update status`: running version,
    /// the slots RAUC reports, the poller's state, the last check and install.
    /// Blocking (it may run `rauc status`).
    pub fn status(&self) -> Value {
        let state = self.state.lock().expect("update state lock").clone();
        let phase = *self.phase.lock().expect("phase lock");
        let slots = self.rauc.as_ref().map(|rauc| self.slots(rauc));
        json!({
            "available": self.rauc.is_some(),
            "message": if self.rauc.is_some() { Value::Null } else { json!("updates not available on this system (no rauc)") },
            "running_version": running_version(),
            "state": phase.label(),
            "url": self.settings.url,
            "maintenance_window_utc": self.settings.maintenance_window,
            "booted_slot": slots.as_ref().and_then(|slots| slots.get("booted").cloned()).unwrap_or(Value::Null),
            "slots": slots.as_ref().and_then(|slots| slots.get("slots").cloned()).unwrap_or(json!([])),
            "last_check": state.last_check,
            "next_check_at_unix": state.next_check_at_unix,
            "last_install": state.last_install,
            "failed_bundles": state.failed_bundles,
        })
    }

    /// RAUC's view, cached for `SLOTS_CACHE_TTL`.
    fn slots(&self, rauc: &Path) -> Value {
        if let Some((at, slots)) = self.slots.lock().expect("slots lock").as_ref() {
            if at.elapsed() < SLOTS_CACHE_TTL {
                return slots.clone();
            }
        }
        let slots = self.runtime.block_on(rauc_status(rauc));
        *self.slots.lock().expect("slots lock") = Some((Instant::now(), slots.clone()));
        slots
    }

    /// `edgenode update check`: the poller checks now; the answer is what it decided.
    /// Blocking.
    pub fn check_now(&self) -> Result<Value, UpdateError> {
        if self.settings.url.is_none() {
            return Err(UpdateError::NotConfigured);
        }
        let (answer, answered) = oneshot::channel();
        self.check_requests.try_send(answer).map_err(|_| UpdateError::Busy)?;
        self.runtime.block_on(async {
            match tokio::time::timeout(CHECK_ANSWER_TIMEOUT, answered).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(UpdateError::Failed("the update poller stopped".to_owned())),
                Err(_) => Err(UpdateError::Failed(format!(
                    "no answer within {} s (an install in progress?)",
                    CHECK_ANSWER_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    /// `edgenode update install FILE|URL`: one bundle, now; the box reboots into it in
    /// the maintenance window (or when the operator reboots it). Blocking.
    pub fn install_one(&self, source: &str) -> Result<Value, UpdateError> {
        let rauc = self.rauc.clone().ok_or(UpdateError::NotAvailable)?;
        self.runtime.block_on(async {
            let _one = self.installing.try_lock().map_err(|_| UpdateError::Busy)?;
            let record = self.install(&rauc, source, None).await?;
            self.reboot_if_in_window().await;
            Ok(json!({"installed": record}))
        })
    }

    /// Downloads (a URL) and installs a bundle; `expected`: the manifest it came from.
    async fn install(
        &self,
        rauc: &Path,
        source: &str,
        expected: Option<&Manifest>,
    ) -> Result<InstallRecord, UpdateError> {
        let now = Self::now();
        let mut record = InstallRecord {
            version: expected.map(|manifest| manifest.version.clone()),
            sha256: expected.map(|manifest| manifest.sha256.clone()),
            source: source.to_owned(),
            from_version: running_version().to_owned(),
            started_at_unix: now,
            finished_at_unix: None,
            outcome: InstallOutcome::Installing,
            message: String::new(),
            boot_id: boot_id(),
        };
        // An update installed and waiting for its reboot stays the one recorded (and
        // in its slot) unless RAUC starts writing: a download that fails changes nothing.
        let pending = self
            .state
            .lock()
            .expect("update state lock")
            .last_install
            .clone()
            .filter(|install| install.outcome == InstallOutcome::AwaitingReboot);
        if pending.is_none() {
            self.update_state(|state| state.last_install = Some(record.clone()));
        }
        let mut rauc_started = false;
        let result = self.download_and_install(rauc, source, expected, &mut record, &mut rauc_started).await;
        record.finished_at_unix = Some(Self::now());
        if let (Err(error), Some(_), false) = (&result, &pending, rauc_started) {
            tracing::error!(%error, source, "update install failed before RAUC ran; the installed update still waits");
            self.set_phase(Phase::AwaitingReboot);
            return Err(UpdateError::Failed(error.to_string()));
        }
        match &result {
            Ok(()) => {
                record.outcome = InstallOutcome::AwaitingReboot;
                record.message = format!(
                    "installed {}; the box boots it at the next reboot",
                    record.version.as_deref().unwrap_or("the bundle")
                );
                self.set_phase(Phase::AwaitingReboot);
                tracing::info!(version = ?record.version, source, "update installed; it boots at the next reboot");
            }
            Err(error) => {
                record.outcome = InstallOutcome::Failed;
                record.message = error.to_string();
                self.set_phase(Phase::Idle);
                tracing::error!(%error, source, "update install failed; nothing changed");
            }
        }
        *self.slots.lock().expect("slots lock") = None;
        self.update_state(|state| state.last_install = Some(record.clone()));
        result.map(|()| record)
    }

    async fn download_and_install(
        &self,
        rauc: &Path,
        source: &str,
        expected: Option<&Manifest>,
        record: &mut InstallRecord,
        rauc_started: &mut bool,
    ) -> Result<(), UpdateError> {
        let download_dir = self.data_dir.join(DOWNLOAD_DIR);
        let downloaded = download_dir.join("bundle.raucb");
        let bundle = if source.starts_with("https://") {
            self.set_phase(Phase::Downloading);
            let bytes_max = expected.map_or(self.settings.bundle_bytes_max, |manifest| manifest.size_bytes);
            crate::store::create_private_dir_all(&download_dir)
                .map_err(|error| UpdateError::Failed(format!("cannot create {}: {error}", download_dir.display())))?;
            let tls = self.tls.clone().unwrap_or_else(|| Arc::new(client_tls(self.settings.pin.as_deref())));
            let sha256 = download_to_file(tls, source, &downloaded, bytes_max).await?;
            if let Some(manifest) = expected {
                if sha256 != manifest.sha256 {
                    let _ = std::fs::remove_file(&downloaded);
                    return Err(UpdateError::Failed(format!(
                        "the bundle's SHA-256 is {sha256}, the manifest says {}: refused",
                        manifest.sha256
                    )));
                }
            }
            record.sha256 = Some(sha256);
            downloaded.clone()
        } else {
            let path = PathBuf::from(source);
            if !path.is_file() {
                return Err(UpdateError::Failed(format!("{source}: no such file (the node must be able to read it)")));
            }
            record.sha256 =
                Some(sha256_of_file(&path).map_err(|error| UpdateError::Failed(format!("{source}: {error}")))?);
            path
        };
        if record.version.is_none() {
            record.version = rauc_bundle_version(rauc, &bundle).await;
        }
        self.set_phase(Phase::Installing);
        if let Err(error) = check_bundle(rauc, &bundle).await {
            if bundle == downloaded {
                let _ = std::fs::remove_file(&downloaded);
            }
            return Err(UpdateError::Failed(format!("{error}: refused, nothing written")));
        }
        *rauc_started = true;
        self.update_state(|state| state.last_install = Some(record.clone()));
        let outcome = run(rauc, &["install".as_ref(), bundle.as_os_str()], RAUC_INSTALL_TIMEOUT).await;
        if bundle == downloaded {
            let _ = std::fs::remove_file(&downloaded);
        }
        match outcome {
            Ok(_) => Ok(()),
            Err(error) => Err(UpdateError::Failed(format!("rauc install: {error}"))),
        }
    }

    /// Reboots into an installed update when the window is open.
    async fn reboot_if_in_window(&self) {
        let awaiting =
            self.state.lock().expect("update state lock").last_install.as_ref().is_some_and(|install| {
                install.outcome == InstallOutcome::AwaitingReboot && install.boot_id == boot_id()
            });
        if !awaiting || !self.window.contains(Self::now()) {
            return;
        }
        if boot_id().is_empty() {
            // Without it a reboot into the update cannot be told from one not taken yet:
            // rebooting again at every start would loop.
            tracing::error!("cannot tell this boot's id (EDGENODE_BOOT_ID, /proc/sys/kernel/random/boot_id): not rebooting into the update by itself");
            return;
        }
        {
            let mut asked = self.reboot_asked.lock().expect("reboot lock");
            if asked.is_some_and(|at| at.elapsed() < REBOOT_RETRY) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let mut command = self.settings.reboot_command.split_whitespace();
        let Some(program) = command.next() else { return };
        let args: Vec<&std::ffi::OsStr> = command.map(std::ffi::OsStr::new).collect();
        tracing::warn!(command = %self.settings.reboot_command, "rebooting into the installed update (inside the maintenance window)");
        if let Err(error) = run(Path::new(program), &args, RAUC_STATUS_TIMEOUT).await {
            tracing::error!(%error, "systemctl reboot failed; the update boots at the next reboot");
        }
    }

    /// One check of the manifest; installs when it says so (the answer is sent first).
    async fn check(&self, answer: Option<CheckRequest>) {
        let Some(url) = self.settings.url.clone() else {
            if let Some(answer) = answer {
                let _ = answer.send(Err(UpdateError::NotConfigured));
            }
            return;
        };
        let phase_before = *self.phase.lock().expect("phase lock");
        self.set_phase(Phase::Checking);
        let now = Self::now();
        let tls = self.tls.clone().unwrap_or_else(|| Arc::new(client_tls(self.settings.pin.as_deref())));
        let fetched = tokio::time::timeout(MANIFEST_TIMEOUT, https_get(tls, &url, MANIFEST_BYTES_MAX))
            .await
            .unwrap_or_else(|_| Err(format!("no manifest within {} s", MANIFEST_TIMEOUT.as_secs())))
            .and_then(|body| Manifest::parse(&body).map_err(|error| error.to_string()));
        self.set_phase(phase_before);
        let manifest = match fetched {
            Ok(manifest) => manifest,
            Err(error) => {
                let mut failures = 0;
                self.update_state(|state| {
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    failures = state.consecutive_failures;
                    state.last_check = Some(CheckRecord {
                        at_unix: now,
                        outcome: "failed".into(),
                        version: None,
                        error: Some(error.clone()),
                    });
                    state.next_check_at_unix =
                        Some(self.schedule.next_after_failure(now, failures, u64::from_le_bytes(os::random_bytes())));
                });
                tracing::warn!(%url, %error, failures, "update check failed");
                if let Some(answer) = answer {
                    let _ = answer.send(Err(UpdateError::Failed(error)));
                }
                return;
            }
        };
        let (failed, pending) = {
            let state = self.state.lock().expect("update state lock");
            let failed: Vec<String> = state.failed_bundles.iter().map(|bundle| bundle.sha256.clone()).collect();
            let pending = state
                .last_install
                .as_ref()
                .filter(|install| install.outcome == InstallOutcome::AwaitingReboot)
                .and_then(|install| install.sha256.clone());
            (failed, pending)
        };
        let decision = decide(self.node_id, running_version(), &manifest, &failed, pending.as_deref());
        let (outcome, install) = match decision {
            Decision::UpToDate => ("up_to_date", false),
            Decision::NotInRollout { .. } => ("not_in_rollout", false),
            Decision::FailedBefore => ("failed_before", false),
            Decision::AwaitingReboot => ("awaiting_reboot", false),
            Decision::Install if self.rauc.is_none() => ("unavailable", false),
            Decision::Install if manifest.size_bytes > self.settings.bundle_bytes_max => ("bundle_too_large", false),
            Decision::Install => ("install", true),
        };
        self.update_state(|state| {
            state.consecutive_failures = 0;
            state.last_check = Some(CheckRecord {
                at_unix: now,
                outcome: outcome.to_owned(),
                version: Some(manifest.version.clone()),
                error: None,
            });
            state.next_check_at_unix =
                Some(self.schedule.next_after_success(now, self.node_id, u64::from_le_bytes(os::random_bytes())));
        });
        tracing::info!(version = %manifest.version, rollout_percent = manifest.rollout_percent, outcome, "update check");
        if let Some(answer) = answer {
            let _ = answer.send(Ok(json!({
                "outcome": outcome,
                "version": manifest.version,
                "running_version": running_version(),
                "rollout_percent": manifest.rollout_percent,
                "published_at": manifest.published_at,
            })));
        }
        if install {
            let Some(rauc) = self.rauc.clone() else { return };
            let Ok(_one) = self.installing.try_lock() else { return };
            let bundle_url = resolve_url(&url, &manifest.bundle_url);
            if self.install(&rauc, &bundle_url, Some(&manifest)).await.is_ok() {
                self.reboot_if_in_window().await;
            }
        }
    }

    /// For `/metrics`.
    pub fn metrics_collector(self: &Arc<Self>) -> UpdateMetrics {
        UpdateMetrics(Arc::downgrade(self))
    }

    fn encode_metrics(&self, encoder: &mut exposition::Encoder<'_>) -> std::fmt::Result {
        let phase = *self.phase.lock().expect("phase lock");
        let state = self.state.lock().expect("update state lock").clone();
        let phases: Vec<([(&str, &str); 1], u64)> =
            Phase::ALL.iter().map(|each| ([("state", each.label())], u64::from(*each == phase))).collect();
        exposition::family(
            encoder,
            "edgenode_update_state",
            "What the updater is doing (1 for the current state)",
            exposition::Kind::Gauge,
            &phases,
        )?;
        if let Some(check) = &state.last_check {
            exposition::gauge(
                encoder,
                "edgenode_update_last_check_timestamp_seconds",
                "When the update server was last asked (unix seconds)",
                check.at_unix as i64,
            )?;
            exposition::gauge(
                encoder,
                "edgenode_update_last_check_success",
                "1 when the last check got a manifest, 0 when it failed",
                i64::from(check.error.is_none()),
            )?;
        }
        exposition::gauge(
            encoder,
            "edgenode_update_check_failures",
            "Checks failed in a row",
            i64::from(state.consecutive_failures),
        )?;
        if let Some(install) = &state.last_install {
            let version = install.version.clone().unwrap_or_else(|| "unknown".to_owned());
            let outcome = serde_json::to_value(install.outcome)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            exposition::family(
                encoder,
                "edgenode_update_installed",
                "The last bundle installed on this box, by version and outcome (1)",
                exposition::Kind::Gauge,
                &[([("version", version.as_str()), ("outcome", outcome.as_str())], 1u64)],
            )?;
        }
        Ok(())
    }
}

/// `/metrics`' view of the updater (weak: the collector does not keep it alive).
pub struct UpdateMetrics(std::sync::Weak<UpdateService>);

impl std::fmt::Debug for UpdateMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("UpdateMetrics")
    }
}

impl exposition::Collector for UpdateMetrics {
    fn encode(&self, mut encoder: exposition::Encoder<'_>) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(service) => service.encode_metrics(&mut encoder),
            None => Ok(()),
        }
    }
}

/// Checks on schedule and when asked, and reboots into an installed update when the
/// window opens; ends when `stop` turns true.
async fn poll_loop(
    service: Arc<UpdateService>,
    mut requests: mpsc::Receiver<CheckRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let now = UpdateService::now();
    let random = || u64::from_le_bytes(os::random_bytes());
    // A saved time further than a full interval away is from a clock that was wrong.
    let longest = service.schedule.check_interval_seconds + 2 * service.schedule.jitter_seconds;
    let mut next_check = match service.state.lock().expect("update state lock").next_check_at_unix {
        Some(at) if at > now && at - now <= longest => at,
        _ => service.schedule.first_check_at(now, service.node_id, random()),
    };
    loop {
        let now = UpdateService::now();
        let awaiting_reboot = *service.phase.lock().expect("phase lock") == Phase::AwaitingReboot;
        if awaiting_reboot && service.window.contains(now) {
            service.reboot_if_in_window().await;
        }
        if service.settings.url.is_some() && service.rauc.is_some() && now >= next_check {
            service.check(None).await;
            next_check = service.state.lock().expect("update state lock").next_check_at_unix.unwrap_or(now + longest);
            continue;
        }
        let mut wake = if service.settings.url.is_some() { next_check.saturating_sub(now) } else { u64::MAX };
        if awaiting_reboot {
            // Inside the window the reboot was asked for above: look again later.
            let opening = service.window.next_opening(now);
            wake = wake.min(if opening <= now { SLEEP_MAX.as_secs() } else { opening - now });
        }
        let sleep = Duration::from_secs(wake.max(1)).min(SLEEP_MAX);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            request = requests.recv() => match request {
                Some(answer) => {
                    service.check(Some(answer)).await;
                    if let Some(at) = service.state.lock().expect("update state lock").next_check_at_unix {
                        next_check = at;
                    }
                }
                None => return,
            },
            () = async { let _ = stop.wait_for(|stopped| *stopped).await; } => return,
        }
    }
}

/// The client TLS config: pinned to the update server's key, or the system's roots.
fn client_tls(pin: Option<&str>) -> rustls::ClientConfig {
    let alpn = vec![crate::identity::ALPN_HTTP1.to_vec()];
    if let Some(pin) = pin {
        return crate::identity::pinned_client_config(pin.to_owned(), alpn);
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (n_added, n_ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(n_added, n_ignored, "system roots for the update server");
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::identity::ring_provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn;
    tls
}

/// `relative` against the manifest's `base` URL (an absolute `https://` URL is kept).
fn resolve_url(base: &str, relative: &str) -> String {
    if relative.starts_with("https://") || relative.starts_with("http://") {
        return relative.to_owned();
    }
    if let Some(path) = relative.strip_prefix('/') {
        let origin_end = base
            .find("://")
            .map(|scheme| scheme + 3)
            .and_then(|start| base[start..].find('/').map(|slash| start + slash));
        return format!("{}/{path}", &base[..origin_end.unwrap_or(base.len())]);
    }
    match base.rfind('/') {
        Some(slash) if slash > "https://".len() => format!("{}/{relative}", &base[..slash]),
        _ => format!("{base}/{relative}"),
    }
}

/// GETs an `https://` URL over one HTTP/1.1 connection; the body, at most `bytes_max`.
async fn https_get(tls: Arc<rustls::ClientConfig>, url: &str, bytes_max: usize) -> Result<Vec<u8>, String> {
    let mut body = https_open(tls, url).await?;
    let mut received = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(|error| error.to_string())?.data_ref() {
            if received.len() + data.len() > bytes_max {
                return Err(format!("{url}: larger than {bytes_max} bytes"));
            }
            received.extend_from_slice(data);
        }
    }
    Ok(received)
}

/// Downloads `url` into `path` (a temporary file, synced and renamed when whole),
/// returning its SHA-256; at most `bytes_max` bytes, within `BUNDLE_TIMEOUT`.
async fn download_to_file(
    tls: Arc<rustls::ClientConfig>,
    url: &str,
    path: &Path,
    bytes_max: u64,
) -> Result<String, UpdateError> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let download = async {
        let file = crate::store::create_private_file(&partial).map_err(|error| error.to_string())?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut body = https_open(tls, url).await?;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(|error| error.to_string())?.data_ref() {
                received += data.len() as u64;
                if received > bytes_max {
                    return Err(format!("larger than {bytes_max} bytes"));
                }
                hasher.update(data);
                file.write_all(data).await.map_err(|error| error.to_string())?;
            }
        }
        file.sync_all().await.map_err(|error| error.to_string())?;
        std::fs::rename(&partial, path).map_err(|error| error.to_string())?;
        Ok::<String, String>(crate::store::hex(&hasher.finalize()))
    };
    let outcome = tokio::time::timeout(BUNDLE_TIMEOUT, download)
        .await
        .unwrap_or_else(|_| Err(format!("not done within {} s", BUNDLE_TIMEOUT.as_secs())));
    outcome.map_err(|error| {
        let _ = std::fs::remove_file(&partial);
        UpdateError::Failed(format!("downloading {url}: {error}"))
    })
}

/// Sends a GET for an `https://` URL; the response's body when it is a success.
async fn https_open(tls: Arc<rustls::ClientConfig>, url: &str) -> Result<hyper::body::Incoming, String> {
    let uri: http::Uri = url.parse().map_err(|error| format!("{url}: {error}"))?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return Err(format!("{url}: only https:// URLs are fetched"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| format!("{url}: no host"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone()).map_err(|_| format!("{url}: bad server name"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| format!("cannot connect to {authority}: {error}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|error| format!("TLS with {authority}: {error}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|error| error.to_string())?;
    // Ends when the body is read and the sender dropped (or the server hangs up).
    tokio::spawn(connection);
    let request = http::Request::get(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, concat!("edgenode/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let response = sender.send_request(request).await.map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: the server answered {}", response.status()));
    }
    Ok(response.into_body())
}

fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(crate::store::hex(&hasher.finalize()))
}

/// Runs `program` with `args`; its stdout when it exits 0, else what it said.
async fn run(program: &Path, args: &[&std::ffi::OsStr], timeout: Duration) -> Result<String, String> {
    let child = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(format!("{} did not finish within {} s", program.display(), timeout.as_secs())),
        Ok(Err(error)) => Err(format!("cannot run {}: {error}", program.display())),
        Ok(Ok(output)) if output.status.success() => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        Ok(Ok(output)) => {
            let said = String::from_utf8_lossy(&output.stderr);
            let said = said.trim();
            let said = if said.len() > 2000 { &said[said.len() - 2000..] } else { said };
            Err(format!("{} ({})", said, output.status))
        }
    }
}

/// `rauc status` as `{booted, boot_primary, slots: [{name, bootname, state, boot_status, version, …}]}`,
/// or `{error}` when RAUC cannot say.
async fn rauc_status(rauc: &Path) -> Value {
    let args = ["status".as_ref(), "--detailed".as_ref(), "--output-format=json".as_ref()];
    match run(rauc, &args, RAUC_STATUS_TIMEOUT).await {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(status) => summarize_rauc_status(&status),
            Err(error) => json!({"error": format!("rauc status: unreadable JSON: {error}")}),
        },
        Err(error) => json!({"error": format!("rauc status: {error}")}),
    }
}

/// The parts of RAUC's JSON status operators need; fields RAUC does not give are null.
pub fn summarize_rauc_status(status: &Value) -> Value {
    let slots: Vec<Value> = status["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .filter_map(|slot| slot.as_object())
                .flat_map(|slot| slot.iter())
                .map(|(name, slot)| {
                    json!({
                        "name": name,
                        "class": slot["class"],
                        "bootname": slot["bootname"],
                        "device": slot["device"],
                        "state": slot["state"],
                        "boot_status": slot["boot_status"],
                        "version": slot["slot_status"]["bundle"]["version"],
                        "installed_at": slot["slot_status"]["installation"]["timestamp"],
                        "status": slot["slot_status"]["status"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "compatible": status["compatible"],
        "booted": status["booted"],
        "boot_primary": status["boot_primary"],
        "slots": slots,
    })
}

/// The version inside a bundle (`rauc info`), when RAUC says.
async fn rauc_bundle_version(rauc: &Path, bundle: &Path) -> Option<String> {
    let args = ["info".as_ref(), "--output-format=json".as_ref(), bundle.as_os_str()];
    let text = run(rauc, &args, RAUC_STATUS_TIMEOUT).await.ok()?;
    serde_json::from_str::<Value>(&text).ok()?["version"].as_str().map(str::to_owned)
}

/// Why a bundle was refused before RAUC wrote anything.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BundleRefused(pub String);

/// A verity bundle's parameters, from its signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    pub salt: Vec<u8>,
    pub root: [u8; 32],
    pub tree_bytes: u64,
}

impl VerityParams {
    /// From `rauc info`'s readable output (its JSON leaves them out); `None`: not a
    /// verity bundle (a plain one, which RAUC checks whole before it writes).
    pub fn from_rauc_info(text: &str) -> Result<Option<VerityParams>, BundleRefused> {
        let field = |name: &str| {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().trim_matches('\'').to_owned())
            })
        };
        if field("Bundle Format").as_deref() != Some("verity") {
            return Ok(None);
        }
        let refused = |reason: String| BundleRefused(format!("rauc info: {reason}"));
        let hex = |name: &str| -> Result<Vec<u8>, BundleRefused> {
            let text = field(name).ok_or_else(|| refused(format!("no {name}")))?;
            let not_hex = || refused(format!("{name} is not hex: {text}"));
            if text.len() % 2 != 0 {
                return Err(not_hex());
            }
            (0..text.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|_| not_hex()))
                .collect()
        };
        let root: [u8; 32] =
            hex("Verity Hash")?.try_into().map_err(|_| refused("Verity Hash is not 32 bytes".to_owned()))?;
        let tree_bytes = field("Verity Size")
            .and_then(|size| size.parse().ok())
            .ok_or_else(|| refused("no Verity Size".to_owned()))?;
        Ok(Some(VerityParams { salt: hex("Verity Salt")?, root, tree_bytes }))
    }
}

/// Before RAUC writes anything: `rauc info` checks the signature against the system's
/// keyring, and for a verity bundle the whole payload and hash tree are checked against
/// the signed root hash here (RAUC checks them only as it reads, mid-write).
async fn check_bundle(rauc: &Path, bundle: &Path) -> Result<(), String> {
    let info = run(rauc, &["info".as_ref(), bundle.as_os_str()], RAUC_STATUS_TIMEOUT)
        .await
        .map_err(|error| format!("rauc info: {error}"))?;
    let Some(params) = VerityParams::from_rauc_info(&info).map_err(|refused| refused.to_string())? else {
        return Ok(());
    };
    let bundle = bundle.to_owned();
    tokio::task::spawn_blocking(move || check_verity_bundle(&bundle, &params))
        .await
        .map_err(|error| format!("the bundle check stopped: {error}"))?
        .map_err(|refused| refused.to_string())
}

/// The payload and hash tree of a verity bundle at `path`, against its signed `params`.
pub fn check_verity_bundle(path: &Path, params: &VerityParams) -> Result<(), BundleRefused> {
    check_verity_payload(path, params).map_err(BundleRefused)
}

fn check_verity_payload(path: &Path, params: &VerityParams) -> Result<(), String> {
    use crate::core::update::verity::{Hasher, Layout, BLOCK_BYTES};
    use std::io::Read as _;
    use std::os::unix::fs::FileExt as _;
    let fail = |what: String| Err(format!("{}: {what}", path.display()));
    let io = |error: std::io::Error| format!("{}: {error}", path.display());
    let file = std::fs::File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let mut tail = [0u8; 8];
    if length < 8 {
        return fail("too short for a bundle".to_owned());
    }
    file.read_exact_at(&mut tail, length - 8).map_err(io)?;
    let signature_bytes = u64::from_be_bytes(tail);
    let Some(payload_bytes) = length
        .checked_sub(8)
        .and_then(|rest| rest.checked_sub(signature_bytes))
        .and_then(|rest| rest.checked_sub(params.tree_bytes))
    else {
        return fail("its sizes do not add up (signature, hash tree)".to_owned());
    };
    let layout = match Layout::new(payload_bytes / BLOCK_BYTES as u64) {
        Some(layout) if payload_bytes % BLOCK_BYTES as u64 == 0 && layout.tree_bytes() == params.tree_bytes => layout,
        _ => {
            return fail(format!(
                "a payload of {payload_bytes} bytes does not go with a hash tree of {} bytes",
                params.tree_bytes
            ))
        }
    };
    let mut hasher = Hasher::new(params.salt.clone(), layout.clone());
    let mut stored = vec![0u8; BLOCK_BYTES];
    let mut compare = |blocks: Vec<crate::core::update::verity::HashBlock>| -> Result<(), String> {
        for block in blocks {
            file.read_exact_at(&mut stored, payload_bytes + layout.offset(block.level, block.index)).map_err(io)?;
            if stored != block.bytes {
                return Err(format!(
                    "{}: hash tree block {} of level {} does not match the payload: changed",
                    path.display(),
                    block.index,
                    block.level
                ));
            }
        }
        Ok(())
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file.try_clone().map_err(io)?);
    let mut block = vec![0u8; BLOCK_BYTES];
    for _ in 0..payload_bytes / BLOCK_BYTES as u64 {
        reader.read_exact(&mut block).map_err(io)?;
        compare(hasher.push(&block))?;
    }
    let (rest, root) = hasher.finish();
    compare(rest)?;
    if root != params.root {
        return fail("the payload does not match the signed root hash: changed".to_owned());
    }
    Ok(())
}

/// `command` when it is a path to an executable file, else the executable of that
/// name in one of the PATH's directories.
pub fn find_program(command: &str) -> Option<PathBuf> {
    let executable = |candidate: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(candidate)
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let path = PathBuf::from(command);
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|candidate| executable(candidate))
}

/// The kernel's id of this boot (changes at every boot).
/// The kernel's id of this boot: what tells a restart of the node from a reboot of the
/// box. Under systemd the unit passes it (`EDGENODE_BOOT_ID=%b`: edgenode.service's
/// `ProcSubset=pid` hides /proc/sys); otherwise /proc/sys/kernel/random/boot_id. Empty
/// when neither says.
fn boot_id() -> String {
    std::env::var("EDGENODE_BOOT_ID")
        .ok()
        .filter(|id| !id.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())
        .map(|id| id.trim().replace('-', ""))
        .unwrap_or_default()
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let partial = path.with_extension("json.partial");
    let _ = std::fs::remove_file(&partial);
    {
        let mut file = crate::store::create_private_file(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&partial, path)?;
    std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(version: &str, outcome: InstallOutcome, boot_id: &str) -> InstallRecord {
        InstallRecord {
            version: Some(version.to_owned()),
            sha256: Some("b".repeat(64)),
            source: "https://updates.example.net/b.raucb".to_owned(),
            from_version: "0.1.0".to_owned(),
            started_at_unix: 1,
            finished_at_unix: Some(2),
            outcome,
            message: String::new(),
            boot_id: boot_id.to_owned(),
        }
    }

    #[test]
    fn a_reboot_onto_the_new_version_is_booted_and_back_on_the_old_one_is_a_failed_boot() {
        let mut state = UpdateState {
            last_install: Some(install("0.2.0", InstallOutcome::AwaitingReboot, "boot-1")),
            ..Default::default()
        };
        assert!(!state.reconcile("0.1.0", "boot-1", 10), "no reboot yet: still waiting");
        assert!(state.reconcile("0.2.0", "boot-2", 10));
        assert_eq!(state.last_install.as_ref().unwrap().outcome, InstallOutcome::Booted);
        assert!(state.failed_bundles.is_empty());

        let mut state = UpdateState {
            last_install: Some(install("0.2.0", InstallOutcome::AwaitingReboot, "boot-1")),
            ..Default::default()
        };
        assert!(state.reconcile("0.1.0", "boot-2", 10));
        assert_eq!(state.last_install.as_ref().unwrap().outcome, InstallOutcome::BootFailed);
        assert_eq!(state.failed_bundles.len(), 1, "that bundle is never installed again");
        assert!(state.last_install.as_ref().unwrap().message.contains("came back on 0.1.0"));

        // The new version started (booted), then the box came back on the old one.
        let mut state = UpdateState {
            last_install: Some(install("0.2.0", InstallOutcome::AwaitingReboot, "boot-1")),
            ..Default::default()
        };
        assert!(state.reconcile("0.2.0", "boot-2", 10));
        assert!(!state.reconcile("0.2.0", "boot-2", 11), "the same boot again: nothing new");
        assert!(state.reconcile("0.1.0", "boot-3", 12));
        assert_eq!(state.last_install.as_ref().unwrap().outcome, InstallOutcome::BootFailed);
        assert_eq!(state.failed_bundles.len(), 1, "that bundle is never installed again");

        let mut state = UpdateState {
            last_install: Some(install("0.2.0", InstallOutcome::Installing, "boot-1")),
            ..Default::default()
        };
        assert!(state.reconcile("0.1.0", "boot-1", 10));
        assert_eq!(state.last_install.as_ref().unwrap().outcome, InstallOutcome::Failed);
    }

    #[test]
    fn the_state_file_survives_a_restart() {
        let dir = crate::test_support::TempDir::new("update-state");
        let state = UpdateState {
            last_install: Some(install("0.2.0", InstallOutcome::AwaitingReboot, "boot-1")),
            consecutive_failures: 3,
            ..Default::default()
        };
        state.save(dir.path()).unwrap();
        assert_eq!(UpdateState::load(dir.path()), state);
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert_eq!(UpdateState::load(dir.path()), UpdateState::default(), "an unreadable file is not fatal");
    }

    #[test]
    fn bundle_urls_resolve_against_the_manifest() {
        let base = "https://updates.example.net/edgenode/x86_64/manifest.json";
        assert_eq!(resolve_url(base, "b-0.2.0.raucb"), "https://updates.example.net/edgenode/x86_64/b-0.2.0.raucb");
        assert_eq!(resolve_url(base, "/bundles/b.raucb"), "https://updates.example.net/bundles/b.raucb");
        assert_eq!(resolve_url(base, "https://cdn.example.net/b.raucb"), "https://cdn.example.net/b.raucb");
    }

    #[test]
    fn rauc_status_is_summarized() {
        let status: Value = serde_json::from_str(
            r#"{"compatible":"edgenode-x86_64","booted":"A","boot_primary":"rootfs.0","slots":[
              {"rootfs.0":{"class":"rootfs","device":"/dev/vda2","bootname":"A","state":"booted","boot_status":"good",
                "slot_status":{"bundle":{"version":"0.1.0"},"installation":{"timestamp":"2026-12-05T10:00:00Z"},"status":"ok"}}},
              {"rootfs.1":{"class":"rootfs","device":"/dev/vda3","bootname":"B","state":"inactive","boot_status":"bad"}}]}"#,
        )
        .unwrap();
        let summary = summarize_rauc_status(&status);
        assert_eq!(summary["booted"], "A");
        assert_eq!(summary["slots"][0]["version"], "0.1.0");
        assert_eq!(summary["slots"][1]["name"], "rootfs.1");
        assert_eq!(summary["slots"][1]["boot_status"], "bad");
        assert_eq!(summary["slots"][1]["version"], Value::Null);
    }
}
