//! Node configuration: one TOML file where every key has a default, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// mDNS instance and host name.
    pub name: String,
    pub data_dir: PathBuf,
    /// One address and port for both TCP (HTTPS) and UDP (HTTP/3).
    pub listen: SocketAddr,
    /// Region path, e.g. `earth/africa/ng/lagos` (segments of a-z, 0-9, - and _;
    /// empty: no region). A node with a region feeds the public searchable fields of
    /// its users' public posts and profiles to the tightest reachable aggregator
    /// covering it (`crate::search`); `scope=<prefix>` searches go to such aggregators.
    pub region: String,
    /// `home` (serves its users; the default) and `aggregator`: keeps the search index
    /// of every node under its own `region` and answers searches scoped to it; it
    /// feeds a wider aggregator in turn (city → country → continent).
    pub roles: Vec<String>,
    /// Code that claims the first (admin) account; generated on first start if unset.
    pub claim_code: Option<String>,
    pub open_registration: bool,
    pub mdns: MdnsConfig,
    pub peers: PeersConfig,
    pub limits: Limits,
    pub fanout: FanoutSettings,
    pub sessions: SessionSettings,
    /// Plain-HTTP address answering only `GET /metrics` without credentials, for a
    /// scraper on loopback or a management network (unset: `/metrics` only over
    /// HTTPS, to admins and the local control token).
    pub metrics_listen: Option<SocketAddr>,
    /// Plain-HTTP address a phone reaches before it trusts anything: the onboarding
    /// page (how to trust this node's CA, per platform), the CA's downloads, ACME
    /// HTTP-01 answers; every other request is redirected to HTTPS. The appliance
    /// sets `[::]:80`; unset, no plain HTTP is served.
    pub onboarding_listen: Option<SocketAddr>,
    pub tls: TlsConfig,
    /// What the node logs: comma-separated levels (`error`, `warn`, `info`, `debug`,
    /// `trace`, `off`) for every target and `target=level` directives, e.g.
    /// `"info,edgenode::link=debug"`. `RUST_LOG`, when set, wins over it.
    pub log_level: String,
    /// `[backup]`: where `edgenode backup` writes when given no DEST (the appliance's
    /// `edgenode-backup.timer`).
    pub backup: BackupSettings,
    /// `[update]`: the fleet poller (`crate::services::update`); off while `url` is unset.
    pub update: UpdateSettings,
}

/// `[update]`: where and when this box looks for updates, and when it may reboot into
/// one (provisioning/update-server.md). Unset `url`: the node never polls, and
/// `edgenode update install` still works.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSettings {
    /// The manifest's `https://` URL on the ISP's update server, e.g.
    /// `https://updates.example.net/edgenode/x86_64/manifest.json`.
    pub url: Option<String>,
    /// The server's SPKI pin (`sha256/BASE64`, as `edgenode status` shows pins): only
    /// a server with that key is accepted, whatever its certificate says. Unset: the
    /// certificate is checked against the system's CA roots.
    pub pin: Option<String>,
    /// A box asks this often (plus its own offset and jitter).
    pub check_interval_seconds: u64,
    /// Spread of the boxes' checks: each box's own offset in `[0, jitter)` from its
    /// node id, plus up to an eighth of it at random per check. 10,000 boxes with the
    /// defaults ask at most ~21 times in any second (core/update.rs's herd test).
    pub jitter_seconds: u64,
    /// First wait after a failed check, doubled per failure up to the interval (each
    /// wait drawn from its upper half). 5 minutes keeps a fleet's retries during an
    /// outage near its normal rate (core/update.rs's herd test).
    pub retry_seconds: u64,
    /// When the box may reboot into an installed update: `"HH:MM-HH:MM"` in UTC (the
    /// end may be past midnight: `"23:00-01:00"`); `""`: at once.
    pub maintenance_window: String,
    /// Largest bundle downloaded (the manifest's `size_bytes` is checked against it).
    pub bundle_bytes_max: u64,
    /// The RAUC program: a name looked up on `PATH`, or a path. Not found: updates
    /// are not available on this system, and nothing is installed.
    pub rauc_command: String,
    /// What reboots the box into an installed update (split at spaces; run inside
    /// the maintenance window).
    pub reboot_command: String,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        UpdateSettings {
            url: None,
            pin: None,
            check_interval_seconds: 6 * 3600,
            jitter_seconds: 3600,
            retry_seconds: 300,
            maintenance_window: "02:00-05:00".to_owned(),
            bundle_bytes_max: 2 << 30,
            rauc_command: "rauc".to_owned(),
            reboot_command: "systemctl reboot".to_owned(),
        }
    }
}

/// `[backup]`: scheduled backups (`edgenode backup`, `systemd/edgenode-backup.timer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// The backup directory, e.g. a folder on a USB disk; unset: DEST must be given.
    pub dir: Option<PathBuf>,
    /// Generations kept (older ones, and files only they use, are removed).
    pub keep: u64,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings { dir: None, keep: 7 }
    }
}

/// `[tls]`: what the public transports present besides the node's own CA's
/// certificate (see `crate::tls`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// A certificate chain (PEM, leaf first) and its key, e.g. from the operator's own
    /// ACME client; reloaded when either file changes. Presented for the names it is
    /// valid for.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub acme: Option<AcmeConfig>,
}

/// `[tls.acme]`: certificates from an ACME CA (Let's Encrypt, an ISP's own) for
/// boxes with a domain name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// Names on the certificate; each must reach this node.
    pub domains: Vec<String>,
    /// `mailto:` address(es) for expiry notices; may be empty.
    #[serde(default)]
    pub contact: Vec<String>,
    /// `http-01` (answered on `onboarding_listen`, which must be port 80 to the
    /// ACME server).
    #[serde(default = "default_acme_challenge")]
    pub challenge: String,
    /// Extra PEM roots to trust for the directory (a private ACME server, Pebble
    /// in tests); the system's roots are used otherwise.
    #[serde(default)]
    pub directory_ca_file: Option<PathBuf>,
    /// Renew when fewer days than this are left, or a third of the certificate's
    /// lifetime, whichever comes first (so a certificate shorter than this window is
    /// not re-ordered as soon as it arrives).
    #[serde(default = "default_acme_renew_days_before")]
    pub renew_days_before: u32,
}

/// The only ACME challenge a node answers (on `onboarding_listen`).
pub const ACME_CHALLENGE_HTTP_01: &str = "http-01";
/// Names on one certificate (Let's Encrypt's own limit).
pub const ACME_DOMAINS_MAX: usize = 100;

fn default_acme_challenge() -> String {
    "http-01".to_owned()
}

fn default_acme_renew_days_before() -> u32 {
    30
}

/// `[fanout]`: posts pushed to followers' home nodes across the neighbourhood (see
/// `crate::services::fanout`). Units are last in the names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutSettings {
    /// Posts cached per followed remote author (the newest are kept).
    pub feed_entries_per_author_max: usize,
    /// Posts cached for all remote authors together.
    pub feed_entries_max: usize,
    /// Each followed remote author is pulled this often, to mend lost pushes.
    pub pull_interval_ms: u64,
    /// Random delay before every pull (also after a node comes back), so followers
    /// spread out instead of arriving together.
    pub pull_jitter_ms: u64,
    /// A node that did not answer is tried again this often (plus up to half again
    /// of random jitter); one that answers is checked every ten times this.
    pub probe_interval_ms: u64,
    /// One call to another node (a message, a profile, a photo) within this.
    pub call_timeout_ms: u64,
    /// Messages being sent at once; more wait in a queue of `outbox_messages_max`.
    pub sends_in_flight_max: usize,
    pub outbox_messages_max: usize,
    /// Photos of remote posts cached on disk (`<data_dir>/remote-media`): files and
    /// bytes; the least recently used go first.
    pub remote_media_files_max: usize,
    pub remote_media_bytes_max: u64,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        FanoutSettings {
            feed_entries_per_author_max: 50,
            feed_entries_max: 20_000,
            pull_interval_ms: 60_000,
            pull_jitter_ms: 2_000,
            probe_interval_ms: 2_000,
            call_timeout_ms: 5_000,
            sends_in_flight_max: 16,
            outbox_messages_max: 4_096,
            remote_media_files_max: 4_096,
            remote_media_bytes_max: 256 * 1024 * 1024,
        }
    }
}

/// `[sessions]`: how long a sign-in lasts (see `crate::api`'s accounts).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// A session not used for this long is signed out. Its last use is recorded at
    /// most once an hour (or every quarter of this, when shorter), so a session may
    /// last up to that much longer than this.
    pub idle_timeout_seconds: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        // A phone opened once a month stays signed in.
        SessionSettings { idle_timeout_seconds: 30 * 24 * 3600 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdnsConfig {
    pub enabled: bool,
    /// Interface names to announce on; empty means every suitable interface.
    pub interfaces: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// UDP address of the sibling endpoint; default: `listen`'s IP with the next port
    /// (port 0, any free one, when `listen`'s port is 0).
    pub listen: Option<SocketAddr>,
    /// Failure domain (house, street cabinet, rack); replicas prefer distinct zones.
    /// Default: the node name.
    pub zone: Option<String>,
    /// Copies of each user's data, home included.
    pub replicas: Option<usize>,
    pub siblings: Vec<SiblingConfig>,
    /// Nodes of the neighbourhood that are not siblings: they hold none of our users'
    /// data, but fan-out and search calls go both ways (each must list the other).
    pub neighbours: Vec<NeighbourConfig>,
}

impl PeersConfig {
    pub fn listen_address(&self, listen: SocketAddr) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            let port = if listen.port() == 0 { 0 } else { listen.port().wrapping_add(1) };
            SocketAddr::new(listen.ip(), port)
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiblingConfig {
    /// `host:port` of the sibling's peer endpoint (for mDNS, its HTTPS address).
    pub address: String,
    pub pin: String,
    /// The sibling's node id (16 hex digits, printed in its ready line and by
    /// `edgenode status`). Default: the id its pin gives, which is every node's id
    /// whose database was created by a version that derives ids from pins.
    pub node_id: Option<String>,
    pub zone: Option<String>,
}

/// A neighbour: a node that is called (and may call) for fan-out and search only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    /// `host:port` of its peer endpoint.
    pub address: String,
    pub pin: String,
    /// Default: the id its pin gives (as for siblings).
    pub node_id: Option<String>,
}

/// Limits on every input. Units are last in the names.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest JSON request body.
    pub json_body_bytes_max: usize,
    /// Largest media upload body.
    pub upload_bytes_max: usize,
    /// Largest archive `POST /api/v1/me/import` accepts (spooled to the data dir,
    /// checked whole before anything is written). 0 turns import off.
    pub import_bytes_max: u64,
    /// Free bytes kept on the data partition: clients' writes are refused (507)
    /// rather than let the database meet a full disk; reads go on. 0 turns it off.
    pub disk_free_bytes_min: u64,
    /// Largest image, in declared pixels.
    pub image_pixels_max: u64,
    /// Image conversions running at once (one small image, ≤ 0.1 MP, may run beside them).
    pub media_workers: usize,
    /// Decoded pixel buffers alive at once, in bytes.
    pub media_decoded_bytes_in_flight_max: u64,
    /// Database pages redb keeps in memory, in bytes (redb's own default is 1 GiB).
    pub database_cache_bytes: usize,
    /// Request body bytes held in memory across the node at once (JSON bodies, and
    /// uploads' chunks on their way to the spool file); past it requests get 503.
    pub body_bytes_in_flight_max: usize,
    /// Uploads being received at once across the node (each spooled to a file); a
    /// user with none in progress may still start one.
    pub uploads_in_flight_max: usize,
    /// After a few seconds' grace, a request body must arrive at least this fast on
    /// average, or the request ends with 408 and its connection closes.
    pub body_bytes_per_second_min: u64,
    /// Photos anyone may see (thumbnails and avatars above all), kept in memory and
    /// answered without a disk read or a database transaction.
    pub public_media_cache_bytes: usize,
    /// Total size of request headers.
    pub header_bytes_max: usize,
    /// Open TCP connections plus QUIC connections.
    pub connections_max: usize,
    /// Open connections from one client address (a household behind one NAT shares
    /// one), so a single address cannot take every slot.
    pub connections_per_address_max: usize,
    /// Concurrent bidirectional streams per QUIC connection (= HTTP/3 requests).
    pub quic_streams_per_connection_max: u32,
    /// QUIC receive window per stream and per connection.
    pub quic_stream_receive_window_bytes: u32,
    pub quic_receive_window_bytes: u32,
    /// Bytes of photos one user may own on this node (original + display + thumb of
    /// each, charged to every owner); an admin may set more or less per user. 0: no quota.
    pub user_storage_bytes_max: u64,
    /// Upload body bytes one user may send in any hour (per user, adjustable by an
    /// admin). 0: no limit.
    pub user_upload_bytes_per_hour_max: u64,
    /// Connections idle longer than this are closed.
    pub idle_timeout_seconds: u64,
    /// Time for graceful shutdown before in-flight requests are dropped.
    pub shutdown_grace_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: default_name(),
            data_dir: PathBuf::from("edgenode-data"),
            listen: "[::]:8443".parse().expect("valid default address"),
            region: String::new(),
            roles: vec!["home".to_owned()],
            claim_code: None,
            open_registration: false,
            mdns: MdnsConfig::default(),
            peers: PeersConfig::default(),
            limits: Limits::default(),
            fanout: FanoutSettings::default(),
            sessions: SessionSettings::default(),
            metrics_listen: None,
            onboarding_listen: None,
            tls: TlsConfig::default(),
            log_level: "info".to_owned(),
            backup: BackupSettings::default(),
            update: UpdateSettings::default(),
        }
    }
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig { enabled: true, interfaces: Vec::new() }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_body_bytes_max: 64 * 1024,
            upload_bytes_max: 40 * 1024 * 1024,
            // An export of a few hundred photos; the spooled copy needs as much disk.
            import_bytes_max: 4 * 1024 * 1024 * 1024,
            disk_free_bytes_min: 64 * 1024 * 1024,
            image_pixels_max: 64_000_000,
            // Sized for a 1 GB board: 2 workers × 96 MiB. Two 12 MP photos convert side
            // by side; an image whose conversion alone needs more than the whole budget
            // (pixels, decoder scratch, resize buffers, upload copies) is refused, 413.
            media_workers: 2,
            media_decoded_bytes_in_flight_max: 192 * 1024 * 1024,
            // A 1 GB board: redb's default of 1 GiB would let the cache alone take
            // all of it as the database grows. It fills with the pages read (~30 MiB
            // after reading every post of a 20,000-post database, BENCHMARKS.md), and
            // the kernel's page cache keeps the file besides; 32 MiB is 3% of the board.
            database_cache_bytes: 32 * 1024 * 1024,
            // JSON bodies are at most 64 KiB and uploads go to disk: 32 MiB is 500
            // sign-ins at once, or 128 uploads' write buffers.
            body_bytes_in_flight_max: 32 * 1024 * 1024,
            // Spooled to disk, at most 64 x 40 MiB; a user sends at most 4 at once.
            uploads_in_flight_max: 64,
            // A phone on a poor 3G uplink still sends ~50 kB/s.
            body_bytes_per_second_min: 8 * 1024,
            // ~500 thumbnails: the public photos of the last few hundred posts.
            public_media_cache_bytes: 16 * 1024 * 1024,
            header_bytes_max: 16 * 1024,
            connections_max: 1024,
            // A household or office behind one NAT; when every slot is taken, idle
            // connections make room for newcomers (http/slots.rs).
            connections_per_address_max: 64,
            quic_streams_per_connection_max: 64,
            // What a client may send that the node has not read yet: like HTTP/2's
            // windows, small enough that 1,024 connections fit the memory budget
            // (ARCHITECTURE.md), large enough for tens of MB/s on a LAN.
            quic_stream_receive_window_bytes: 256 * 1024,
            quic_receive_window_bytes: 512 * 1024,
            user_storage_bytes_max: 8 << 30,
            user_upload_bytes_per_hour_max: 4 << 30,
            idle_timeout_seconds: 60,
            shutdown_grace_seconds: 10,
        }
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "edgenode".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path` if given; with no file every key takes its default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Rejects values the node cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if self.name.is_empty() || self.name.len() > 63 {
            return invalid("`name` must be 1 to 63 characters");
        }
        if self.limits.media_workers == 0 {
            return invalid("`limits.media_workers` must be at least 1");
        }
        if self.backup.keep == 0 {
            return invalid("`backup.keep` must be at least 1");
        }
        if self.limits.connections_max == 0 {
            return invalid("`limits.connections_max` must be at least 1");
        }
        if self.sessions.idle_timeout_seconds == 0 {
            return invalid("`sessions.idle_timeout_seconds` must be at least 1");
        }
        if self.peers.replicas == Some(0) {
            return invalid("`peers.replicas` must be at least 1");
        }
        for sibling in &self.peers.siblings {
            if let Some(node_id) = &sibling.node_id {
                if u64::from_str_radix(node_id, 16).is_err() || node_id.len() != 16 {
                    return invalid("`peers.siblings.node_id` must be 16 hex digits");
                }
            }
        }
        if !self.region.trim().is_empty() {
            crate::core::region::Region::parse(&self.region)
                .map_err(|reason| ConfigError::Invalid(format!("`region`: {reason}")))?;
        }
        if let Some(role) = self.roles.iter().find(|role| !matches!(role.as_str(), "home" | "aggregator")) {
            return Err(ConfigError::Invalid(format!("`roles`: unknown role {role:?} (known: home, aggregator)")));
        }
        if self.roles.iter().any(|role| role == "aggregator") && self.region.trim().is_empty() {
            return invalid("the `aggregator` role needs a `region`: it aggregates the region it is in");
        }
        if let Some(code) = &self.claim_code {
            if code.len() < 8 {
                return invalid("`claim_code` must be at least 8 characters");
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("`tls.cert_file` and `tls.key_file` go together: set both or neither");
        }
        if let Some(acme) = &self.tls.acme {
            if acme.challenge != ACME_CHALLENGE_HTTP_01 {
                return Err(ConfigError::Invalid(format!(
                    "[tls.acme] challenge = {:?} is not supported: only \"http-01\" (answered on onboarding_listen, which the ACME server must reach on port 80)",
                    acme.challenge
                )));
            }
            if acme.domains.len() > ACME_DOMAINS_MAX {
                return Err(ConfigError::Invalid(format!(
                    "`tls.acme.domains`: at most {} names on one certificate",
                    ACME_DOMAINS_MAX
                )));
            }
            if let Some(domain) = acme.domains.iter().find(|domain| {
                domain.starts_with("*.") || domain.parse::<std::net::IpAddr>().is_ok() || domain.trim().is_empty()
            }) {
                return Err(ConfigError::Invalid(format!(
                    "`tls.acme.domains`: {domain:?} cannot be validated by HTTP-01 (no wildcards or IP addresses: DNS names that reach this node)"
                )));
            }
            if acme.domains.is_empty() {
                return invalid("`tls.acme.domains` must name at least one domain");
            }
            if self.onboarding_listen.is_none() {
                return invalid(
                    "`tls.acme` answers HTTP-01 on the onboarding listener: set `onboarding_listen` (port 80 as the ACME server sees it)",
                );
            }
        }
        self.validate_update()?;
        if let Some(reason) = log_level_problem(&self.log_level) {
            return Err(ConfigError::Invalid(format!("`log_level` = {:?}: {reason}", self.log_level)));
        }
        Ok(())
    }
}

impl Config {
    fn validate_update(&self) -> Result<(), ConfigError> {
        let update = &self.update;
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if let Some(url) = &update.url {
            if !url.starts_with("https://") || url.parse::<http::Uri>().is_err() {
                return invalid(format!("`update.url` = {url:?}: an https:// URL of the update manifest"));
            }
        }
        if let Some(pin) = &update.pin {
            if !pin.starts_with("sha256/") || pin.len() != "sha256/".len() + 44 {
                return invalid(format!("`update.pin` = {pin:?}: an SPKI pin, sha256/ and 44 base64 characters"));
            }
        }
        if update.check_interval_seconds < 60 {
            return invalid("`update.check_interval_seconds` must be at least 60".to_owned());
        }
        if update.reboot_command.split_whitespace().next().is_none() {
            return invalid("`update.reboot_command` must name a program".to_owned());
        }
        if update.retry_seconds == 0 {
            return invalid("`update.retry_seconds` must be at least 1".to_owned());
        }
        if let Err(error) = crate::core::update::MaintenanceWindow::parse(&update.maintenance_window) {
            return invalid(format!("`update.maintenance_window`: {error}"));
        }
        Ok(())
    }
}

/// Why `log_level` cannot be used, if it cannot. It is an `EnvFilter` directive
/// string, but stricter than `RUST_LOG`: a bare word must be a level, because
/// `EnvFilter` would read a misspelt level (`inof`) as a target name and the node
/// would log nothing else.
fn log_level_problem(log_level: &str) -> Option<String> {
    const EXPECTED: &str =
        "expected a level (error, warn, info, debug, trace, off) or `target=level` directives such as \"info,edgenode::link=debug\"";
    if log_level.trim().is_empty() {
        return Some(format!("empty; {EXPECTED}"));
    }
    let directives: Vec<&str> = log_level.split(',').map(str::trim).filter(|directive| !directive.is_empty()).collect();
    for directive in &directives {
        let names_a_target = directive.contains('=') || directive.contains('[');
        if !names_a_target && directive.parse::<tracing_subscriber::filter::LevelFilter>().is_err() {
            return Some(format!("{directive:?} is not a level; {EXPECTED}"));
        }
    }
    // Spaces after commas are allowed (and removed before the filter is made).
    tracing_subscriber::EnvFilter::builder()
        .parse(directives.join(","))
        .err()
        .map(|error| format!("{error}; {EXPECTED}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.listen.port(), 8443);
        assert!(config.mdns.enabled);
        config.validate().unwrap();
    }

    #[test]
    fn keys_override_defaults_and_unknown_keys_are_refused() {
        let config = Config::parse(
            "name = \"kitchen\"\nregion = \"earth/eu/nl\"\n[mdns]\nenabled = false\n[limits]\nmedia_workers = 1\n",
        )
        .unwrap();
        assert_eq!(config.name, "kitchen");
        assert!(!config.mdns.enabled);
        assert_eq!(config.limits.media_workers, 1);
        assert!(Config::parse("nmae = \"typo\"").is_err());
    }

    #[test]
    fn regions_and_roles_are_checked() {
        let aggregator = Config::parse("region = \"earth/x\"\nroles = [\"home\", \"aggregator\"]\n").unwrap();
        aggregator.validate().unwrap();
        assert!(Config::parse("region = \"earth//x\"").unwrap().validate().is_err());
        assert!(Config::parse("roles = [\"aggregator\"]").unwrap().validate().is_err(), "needs a region");
        assert!(Config::parse("roles = [\"hub\"]").unwrap().validate().is_err());
    }

    #[test]
    fn log_levels_are_checked() {
        assert_eq!(Config::default().log_level, "info");
        for good in ["info", "debug", "WARN", "off", "edgenode=debug,quinn=warn", "info, edgenode::link=trace"] {
            let config = Config::parse(&format!("log_level = {good:?}")).unwrap();
            assert_eq!(config.log_level, good);
            config.validate().unwrap_or_else(|error| panic!("{good:?} refused: {error}"));
        }
        for bad in ["", " ", "inof", "edgenode=loud", "info,edgenode", "edgenode=debug=x"] {
            let error = Config::parse(&format!("log_level = {bad:?}")).unwrap().validate().unwrap_err().to_string();
            assert!(error.contains("`log_level`"), "{bad:?}: the message names the key: {error}");
        }
    }

    #[test]
    fn update_settings_are_checked() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.update.url, None);
        assert_eq!(config.update.maintenance_window, "02:00-05:00");
        let good = Config::parse(
            "[update]\nurl = \"https://updates.example.net/m.json\"\npin = \"sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nmaintenance_window = \"23:30-01:00\"\n",
        )
        .unwrap();
        good.validate().unwrap();
        for bad in [
            "url = \"http://updates.example.net/m.json\"",
            "pin = \"AAAA\"",
            "maintenance_window = \"2-5\"",
            "check_interval_seconds = 0",
        ] {
            let error = Config::parse(&format!("[update]\n{bad}\n")).unwrap().validate().unwrap_err().to_string();
            assert!(error.contains("`update."), "{bad}: {error}");
        }
    }

    #[test]
    fn tls_settings_are_checked() {
        let acme = |domains: &str, onboarding: bool| {
            let listen = if onboarding { "onboarding_listen = \"[::]:80\"\n" } else { "" };
            Config::parse(&format!(
                "{listen}[tls.acme]\ndirectory_url = \"https://ca.example/dir\"\ndomains = {domains}\n"
            ))
            .unwrap()
            .validate()
        };
        acme("[\"photos.example.org\"]", true).unwrap();
        assert!(acme("[\"photos.example.org\"]", false).is_err(), "HTTP-01 needs the onboarding listener");
        assert!(acme("[\"*.example.org\"]", true).is_err(), "no wildcards by HTTP-01");
        assert!(acme("[\"192.0.2.1\"]", true).is_err(), "no IP addresses");
        assert!(acme("[]", true).is_err());
        assert!(
            Config::parse("[tls]\ncert_file = \"a.crt\"\n").unwrap().validate().is_err(),
            "a certificate needs its key"
        );
    }
}
