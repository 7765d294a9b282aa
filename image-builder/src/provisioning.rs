//! The provisioning file: `edgenode.toml` on the boot partition, read once on first
//! boot by `edgenode-firstboot`. Its format (documented in `provisioning.md`), its
//! validation, how it is written, and how it is applied to a box.
//!
//! Secrets in it (claim code, Wi-Fi PSK, the private keys of the node and of its CA)
//! leave the boot partition when it is applied: what stays is `edgenode-applied.toml`
//! without them.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Version of the provisioning file format.
pub const FORMAT: u32 = 1;
pub const FILE_NAME: &str = "edgenode.toml";
pub const APPLIED_FILE_NAME: &str = "edgenode-applied.toml";
/// The marker in the config directory that makes first boot run once.
pub const PROVISIONED_MARKER: &str = "provisioned";
/// The node's port unless the provisioning file says otherwise.
pub const DEFAULT_PORT: u16 = 8443;
/// The appliance's plain-HTTP onboarding page (`onboarding_listen` of the node): the
/// label's link, `http://<name>.local/`, which a phone opens before it trusts the CA.
pub const ONBOARDING_LISTEN: &str = "[::]:80";
const PROVISIONING_FILE_BYTES_MAX: u64 = 256 * 1024;
const SIBLINGS_MAX: usize = 64;
const SSH_KEYS_MAX: usize = 32;
const ROLES: &[&str] = &["home", "aggregator"];
/// The file in the data dir that edgenode-reboot.path watches.
const REBOOT_REQUEST: &str = "reboot-requested";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    pub format: u32,
    /// Host label: mDNS name `<name>.local`, 1–63 of `a-z 0-9 -`.
    pub name: String,
    #[serde(default)]
    pub region: String,
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    /// `ADDR:PORT`; the node's default (`[::]:8443`) when absent.
    #[serde(default)]
    pub listen: Option<String>,
    /// Claims the first (admin) account. Secret.
    #[serde(default)]
    pub claim_code: Option<String>,
    #[serde(default)]
    pub wifi: Option<Wifi>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
    #[serde(default)]
    pub ssh: Ssh,
    /// The node's TLS identity, made by the provisioner so the label's pin is true.
    /// The key is secret.
    #[serde(default)]
    pub identity: Option<IdentityPem>,
    /// The node's certificate authority, made by the provisioner so the fingerprint
    /// on the label is true. The key is secret. Absent: the node makes its own.
    #[serde(default)]
    pub ca: Option<CaPem>,
    /// Where the box asks for updates (the node's `[update]`); absent: it never asks,
    /// and `edgenode update install` still works on the box.
    #[serde(default)]
    pub update: Option<Update>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// The update server's manifest, `https://…` (provisioning/update-server.md).
    pub url: String,
    /// SPKI pin of the server (`sha256/…`); absent: checked against the system's CAs.
    #[serde(default)]
    pub pin: Option<String>,
    /// `HH:MM-HH:MM` UTC; absent: the node's default.
    #[serde(default)]
    pub maintenance_window: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    pub ssid: String,
    /// Secret. Empty in `edgenode-applied.toml`.
    #[serde(default)]
    pub psk: String,
    /// ISO 3166 country code for the regulatory domain, e.g. `NG`.
    #[serde(default)]
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sibling {
    pub address: String,
    pub pin: String,
}

/// SSH is off unless `enabled = true` and at least one key is given; never passwords.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPem {
    pub key_pem: String,
    pub certificate_pem: String,
}

impl std::fmt::Debug for IdentityPem {
    // Never print the private key.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("IdentityPem").finish_non_exhaustive()
    }
}

/// The node's CA as its three files in the data dir (see `edgenode::tls::ca`).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaPem {
    /// `ca.key`. Secret.
    pub key_pem: String,
    /// `ca.crt`: what phones install.
    pub certificate_pem: String,
    /// `ca-names`: the names the CA is constrained to, one per line (`dns NAME` or
    /// `ip ADDRESS`).
    pub names: String,
}

impl std::fmt::Debug for CaPem {
    // Never print the private key.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CaPem").field("names", &self.names).finish_non_exhaustive()
    }
}

fn default_roles() -> Vec<String> {
    vec!["home".to_owned()]
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error("provisioning file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("provisioning file {path} is larger than {bytes_max} bytes")]
    TooLarge { path: PathBuf, bytes_max: u64 },
    #[error("provisioning file is not valid TOML: {0}")]
    Parse(Box<toml::de::Error>),
    #[error("provisioning: {0}")]
    Invalid(String),
    #[error("the node config made from the provisioning file is refused by edgenode: {0}")]
    NodeConfig(String),
}

impl Provisioning {
    pub fn parse(text: &str) -> Result<Provisioning, ProvisioningError> {
        let provisioning: Provisioning =
            toml::from_str(text).map_err(|error| ProvisioningError::Parse(Box::new(error)))?;
        provisioning.validate()?;
        Ok(provisioning)
    }

    pub fn validate(&self) -> Result<(), ProvisioningError> {
        let invalid = |message: String| Err(ProvisioningError::Invalid(message));
        if self.format != FORMAT {
            return invalid(format!("`format` is {}; this version reads format {FORMAT}", self.format));
        }
        if !is_host_label(&self.name) {
            return invalid(format!(
                "`name` {:?} must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'",
                self.name
            ));
        }
        for role in &self.roles {
            if !ROLES.contains(&role.as_str()) {
                return invalid(format!("role {role:?} is not one of {ROLES:?}"));
            }
        }
        if let Some(code) = &self.claim_code {
            if code.len() < 8 || code.len() > 64 {
                return invalid("`claim_code` must be 8 to 64 characters".to_owned());
            }
        }
        if let Some(wifi) = &self.wifi {
            if wifi.ssid.is_empty() || wifi.ssid.len() > 32 {
                return invalid("`wifi.ssid` must be 1 to 32 bytes".to_owned());
            }
            let hex_key = wifi.psk.len() == 64 && wifi.psk.bytes().all(|byte| byte.is_ascii_hexdigit());
            // Empty only in edgenode-applied.toml, where the PSK was removed after use.
            if !wifi.psk.is_empty() && !hex_key && !(8..=63).contains(&wifi.psk.len()) {
                return invalid("`wifi.psk` must be a passphrase of 8 to 63 characters or 64 hex digits".to_owned());
            }
            if wifi.ssid.contains(['"', '\n', '\\']) || wifi.psk.contains(['"', '\n', '\\']) {
                return invalid(
                    "`wifi.ssid` and `wifi.psk` may not contain quotes, backslashes or newlines".to_owned(),
                );
            }
        }
        if self.siblings.len() > SIBLINGS_MAX {
            return invalid(format!("at most {SIBLINGS_MAX} siblings"));
        }
        for sibling in &self.siblings {
            if !sibling.pin.starts_with("sha256/") || sibling.address.is_empty() {
                return invalid(format!("sibling {:?}: needs an address and a pin `sha256/…`", sibling.address));
            }
        }
        if self.ssh.authorized_keys.len() > SSH_KEYS_MAX {
            return invalid(format!("at most {SSH_KEYS_MAX} SSH keys"));
        }
        if self
            .ssh
            .authorized_keys
            .iter()
            .any(|key| key.contains('\n') || !key.starts_with("ssh-") && !key.starts_with("ecdsa-"))
        {
            return invalid("each `ssh.authorized_keys` entry is one public key line (`ssh-ed25519 AAAA…`)".to_owned());
        }
        let listen_port = self.listen.as_deref().and_then(|listen| listen.parse::<std::net::SocketAddr>().ok());
        if listen_port.is_some_and(|address| address.port() == 80) {
            return invalid(format!(
                "`listen` may not use port 80: the appliance serves onboarding on {ONBOARDING_LISTEN}"
            ));
        }
        if let Some(ca) = &self.ca {
            // The node checks the PEM itself at start; a slip is caught here, on the
            // console, rather than as a node that does not start.
            if !ca.key_pem.starts_with("-----BEGIN ") || !ca.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----")
            {
                return invalid("`ca.key_pem` and `ca.certificate_pem` must be PEM".to_owned());
            }
            let name_line = |line: &str| line.starts_with("dns ") || line.starts_with("ip ");
            if !ca.names.lines().any(name_line) || !ca.names.lines().all(|line| line.is_empty() || name_line(line)) {
                return invalid("`ca.names` must be lines of `dns NAME` or `ip ADDRESS`".to_owned());
            }
        }
        self.node_config_toml("/var/lib/edgenode").map(|_| ())
    }

    /// The node's `node.toml`, checked by the node's own config parser.
    pub fn node_config_toml(&self, data_dir: &str) -> Result<String, ProvisioningError> {
        let mut text =
            String::from("# Written by edgenode-firstboot from the provisioning file; edit and restart edgenode.\n");
        text += &format!("name = {}\n", quote(&self.name));
        text += &format!("data_dir = {}\n", quote(data_dir));
        text += &format!("region = {}\n", quote(&self.region));
        text += &format!("roles = {}\n", quote_list(&self.roles));
        if let Some(listen) = &self.listen {
            text += &format!("listen = {}\n", quote(listen));
        }
        // The label's link opens here: the page that installs the node's CA.
        text += &format!("onboarding_listen = {}\n", quote(ONBOARDING_LISTEN));
        text += "\n[peers]\n";
        for sibling in &self.siblings {
            text +=
                &format!("[[peers.siblings]]\naddress = {}\npin = {}\n", quote(&sibling.address), quote(&sibling.pin));
        }
        // The node runs unprivileged: it asks edgenode-reboot.path to reboot for it.
        text += &format!(
            "\n[update]\nreboot_command = {}\n",
            quote(&format!("/usr/bin/touch {data_dir}/{REBOOT_REQUEST}"))
        );
        if let Some(update) = &self.update {
            text += &format!("url = {}\n", quote(&update.url));
            if let Some(pin) = &update.pin {
                text += &format!("pin = {}\n", quote(pin));
            }
            if let Some(window) = &update.maintenance_window {
                text += &format!("maintenance_window = {}\n", quote(window));
            }
        }
        let config =
            edgenode::config::Config::parse(&text).map_err(|error| ProvisioningError::NodeConfig(error.to_string()))?;
        config.validate().map_err(|error| ProvisioningError::NodeConfig(error.to_string()))?;
        Ok(text)
    }

    /// The file as the provisioner writes it: every key documented in place.
    /// `with_secrets = false` gives what stays on the boot partition after first boot.
    pub fn to_toml(&self, with_secrets: bool) -> String {
        let mut text = String::new();
        text += "# Edgenode provisioning file. Put it on the boot partition as edgenode.toml; the\n";
        text += "# box applies it once on first boot, then removes the secrets (claim code,\n";
        text += "# Wi-Fi PSK, private keys) and keeps the rest as edgenode-applied.toml.\n";
        text += &format!("format = {FORMAT}\n");
        text += "# Host label: the node is http://<name>.local/ (onboarding) and\n";
        text += "# https://<name>.local:8443/ on the LAN.\n";
        text += &format!("name = {}\n", quote(&self.name));
        text += "# Region path, e.g. earth/africa/ng/lagos.\n";
        text += &format!("region = {}\n", quote(&self.region));
        text += "# home, aggregator.\n";
        text += &format!("roles = {}\n", quote_list(&self.roles));
        if let Some(listen) = &self.listen {
            text += &format!("listen = {}\n", quote(listen));
        }
        if let Some(code) = &self.claim_code {
            text += "# Claims the first (admin) account.\n";
            if with_secrets {
                text += &format!("claim_code = {}\n", quote(code));
            }
        }
        if let Some(wifi) = &self.wifi {
            text += "\n[wifi]\n";
            text += &format!("ssid = {}\n", quote(&wifi.ssid));
            if with_secrets {
                text += &format!("psk = {}\n", quote(&wifi.psk));
            } else {
                text += "# psk removed after use\n";
            }
            text += &format!("country = {}\n", quote(&wifi.country));
        }
        text += "\n# SSH is off unless enabled with at least one key; passwords never work.\n[ssh]\n";
        text += &format!("enabled = {}\n", self.ssh.enabled);
        text += &format!("authorized_keys = {}\n", quote_list(&self.ssh.authorized_keys));
        for sibling in &self.siblings {
            text += "\n[[siblings]]\n";
            text += &format!("address = {}\npin = {}\n", quote(&sibling.address), quote(&sibling.pin));
        }
        if let Some(update) = &self.update {
            text += "\n# Where the box asks for signed updates, and when it may reboot into them (UTC).\n[update]\n";
            text += &format!("url = {}\n", quote(&update.url));
            if let Some(pin) = &update.pin {
                text += &format!("pin = {}\n", quote(pin));
            }
            if let Some(window) = &update.maintenance_window {
                text += &format!("maintenance_window = {}\n", quote(window));
            }
        }
        if let (Some(identity), true) = (&self.identity, with_secrets) {
            text += "\n# The node's TLS identity; its pin is printed on the label.\n[identity]\n";
            text += &format!("key_pem = {}\n", quote(&identity.key_pem));
            text += &format!("certificate_pem = {}\n", quote(&identity.certificate_pem));
        }
        if let (Some(ca), true) = (&self.ca, with_secrets) {
            text += "\n# The node's certificate authority, which phones trust once; its fingerprint\n";
            text += "# is on the label.\n[ca]\n";
            text += &format!("key_pem = {}\n", quote(&ca.key_pem));
            text += &format!("certificate_pem = {}\n", quote(&ca.certificate_pem));
            text += &format!("names = {}\n", quote(&ca.names));
        }
        if !with_secrets && (self.identity.is_some() || self.ca.is_some()) {
            text += "\n# [identity] and [ca] went into the node's data dir; removed from here.\n";
        }
        text
    }
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn quote_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|item| quote(item)).collect::<Vec<_>>().join(", "))
}

pub fn is_host_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

/// Where first boot reads and writes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The mounted boot partition that may hold `edgenode.toml`.
    pub boot_dir: PathBuf,
    /// `/var/lib/edgenode-config`: `node.toml`, Wi-Fi and SSH config, the marker.
    pub config_dir: PathBuf,
    /// `/var/lib/edgenode`: the node's data directory.
    pub state_dir: PathBuf,
    /// uid and gid of the `edgenode` user; `None` leaves ownership alone (tests).
    pub node_owner: Option<(u32, u32)>,
    /// Name when there is no provisioning file.
    pub fallback_name: String,
}

/// What first boot did, for the console and the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub name: String,
    pub from_file: bool,
    pub wifi: bool,
    pub ssh: bool,
    /// The node's CA came from the file (else the node makes its own at first start).
    pub ca: bool,
}

/// Applies the provisioning file (or defaults when there is none) once. Safe to rerun
/// after a crash: every file is written whole (temp, fsync, rename) and the marker
/// goes last; an identity or claim code already in the data dir is kept.
pub fn apply(layout: &Layout) -> Result<Applied, ProvisioningError> {
    let source = layout.boot_dir.join(FILE_NAME);
    let provisioning = match fs::metadata(&source) {
        Ok(metadata) if metadata.len() > PROVISIONING_FILE_BYTES_MAX => {
            return Err(ProvisioningError::TooLarge { path: source, bytes_max: PROVISIONING_FILE_BYTES_MAX });
        }
        Ok(_) => {
            let text = fs::read_to_string(&source).map_err(io_error(&source))?;
            Some(Provisioning::parse(&text)?)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(io_error(&source)(error)),
    };
    let from_file = provisioning.is_some();
    let provisioning = provisioning.unwrap_or_else(|| Provisioning {
        format: FORMAT,
        name: layout.fallback_name.clone(),
        region: String::new(),
        roles: default_roles(),
        listen: None,
        claim_code: None,
        wifi: None,
        siblings: Vec::new(),
        ssh: Ssh::default(),
        identity: None,
        ca: None,
        update: None,
    });

    create_dir(&layout.config_dir, 0o750)?;
    create_dir(&layout.state_dir, 0o700)?;
    chown(&layout.state_dir, layout.node_owner)?;
    let data_dir =
        layout.state_dir.to_str().ok_or_else(|| ProvisioningError::Invalid("state dir is not UTF-8".into()))?;
    let node_config = provisioning.node_config_toml(data_dir)?;
    write_file(&layout.config_dir.join("node.toml"), node_config.as_bytes(), 0o640, None)?;
    if let Some((_, gid)) = layout.node_owner {
        chown(&layout.config_dir.join("node.toml"), Some((0, gid)))?;
        chown(&layout.config_dir, Some((0, gid)))?;
    }
    if let Some(identity) = &provisioning.identity {
        // Key first, as the node does: a key without a certificate is repaired by it.
        write_if_absent(&layout.state_dir.join("node.key"), identity.key_pem.as_bytes(), layout.node_owner)?;
        write_if_absent(&layout.state_dir.join("node.crt"), identity.certificate_pem.as_bytes(), layout.node_owner)?;
    }
    if let Some(ca) = &provisioning.ca {
        install_ca(&layout.state_dir, ca, layout.node_owner)?;
    }
    if let Some(code) = &provisioning.claim_code {
        // The node reads a saved claim code when its config has none, and removes the
        // file once the node is claimed: the code never sits in a config file.
        write_if_absent(&layout.state_dir.join("claim-code"), code.as_bytes(), layout.node_owner)?;
    }
    let wifi = provisioning.wifi.as_ref().filter(|wifi| !wifi.psk.is_empty());
    if let Some(wifi) = wifi {
        let mut conf = String::from("ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev\nupdate_config=0\n");
        if !wifi.country.is_empty() {
            conf += &format!("country={}\n", wifi.country);
        }
        conf += &format!("network={{\n    ssid=\"{}\"\n", wifi.ssid);
        if wifi.psk.len() == 64 {
            conf += &format!("    psk={}\n}}\n", wifi.psk);
        } else {
            conf += &format!("    psk=\"{}\"\n}}\n", wifi.psk);
        }
        write_file(&layout.config_dir.join("wpa_supplicant-wlan0.conf"), conf.as_bytes(), 0o600, None)?;
    }
    let ssh = provisioning.ssh.enabled && !provisioning.ssh.authorized_keys.is_empty();
    if ssh {
        let keys = provisioning.ssh.authorized_keys.join("\n") + "\n";
        write_file(&layout.config_dir.join("authorized_keys"), keys.as_bytes(), 0o644, None)?;
        write_file(&layout.config_dir.join("ssh-enabled"), b"", 0o644, None)?;
    }
    if from_file {
        // Secrets leave the boot partition: keep the rest for reference.
        write_file(&layout.boot_dir.join(APPLIED_FILE_NAME), provisioning.to_toml(false).as_bytes(), 0o600, None)?;
        // Deleting a FAT file leaves its bytes in free clusters: overwrite them first.
        overwrite_with_zeros(&source)?;
        fs::remove_file(&source).map_err(io_error(&source))?;
        sync_dir(&layout.boot_dir)?;
    }
    write_file(&layout.config_dir.join(PROVISIONED_MARKER), b"", 0o644, None)?;
    Ok(Applied { name: provisioning.name, from_file, wifi: wifi.is_some(), ssh, ca: provisioning.ca.is_some() })
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ProvisioningError + '_ {
    move |source| ProvisioningError::Io { path: path.to_owned(), source }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), ProvisioningError> {
    fs::create_dir_all(path).map_err(io_error(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), ProvisioningError> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_error(path))
}

fn write_if_absent(path: &Path, bytes: &[u8], owner: Option<(u32, u32)>) -> Result<(), ProvisioningError> {
    if path.exists() {
        return Ok(());
    }
    write_file(path, bytes, 0o600, owner)
}

/// Installs the node's CA as the node itself writes it: `ca.key`, `ca-names`, then
/// `ca.crt`, each 0600. A certificate already there means a whole CA that phones may
/// trust: it is kept. Without one, what is there is an unfinished install: replaced.
fn install_ca(state_dir: &Path, ca: &CaPem, owner: Option<(u32, u32)>) -> Result<(), ProvisioningError> {
    use edgenode::tls::ca::{CA_CERTIFICATE_FILE_NAME, CA_KEY_FILE_NAME, CA_NAMES_FILE_NAME};
    if state_dir.join(CA_CERTIFICATE_FILE_NAME).exists() {
        return Ok(());
    }
    write_file(&state_dir.join(CA_KEY_FILE_NAME), ca.key_pem.as_bytes(), 0o600, owner)?;
    write_file(&state_dir.join(CA_NAMES_FILE_NAME), ca.names.as_bytes(), 0o600, owner)?;
    write_file(&state_dir.join(CA_CERTIFICATE_FILE_NAME), ca.certificate_pem.as_bytes(), 0o600, owner)
}

/// Writes durably: temp file, fsync, rename, fsync of the directory.
fn write_file(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), ProvisioningError> {
    let temp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_error(&temp))?;
    file.write_all(bytes).map_err(io_error(&temp))?;
    // FAT ignores modes; elsewhere make sure the umask did not widen or narrow them.
    let _ = file.set_permissions(fs::Permissions::from_mode(mode));
    file.sync_all().map_err(io_error(&temp))?;
    chown(&temp, owner)?;
    fs::rename(&temp, path).map_err(io_error(path))?;
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

fn overwrite_with_zeros(path: &Path) -> Result<(), ProvisioningError> {
    let mut file = fs::OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
    let bytes = file.metadata().map_err(io_error(path))?.len();
    file.write_all(&vec![0; bytes as usize]).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn sync_dir(dir: &Path) -> Result<(), ProvisioningError> {
    fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provisioning {
        Provisioning {
            format: FORMAT,
            name: "box-0001".into(),
            region: "earth/africa/ng/lagos".into(),
            roles: vec!["home".into()],
            listen: None,
            claim_code: Some("ABCD-EFGH-JKMN".into()),
            wifi: Some(Wifi {
                ssid: "Home \"net\"".replace('"', ""),
                psk: "a long passphrase".into(),
                country: "NG".into(),
            }),
            siblings: vec![Sibling { address: "box-0002.local:8443".into(), pin: "sha256/abc=".into() }],
            ssh: Ssh::default(),
            identity: Some(IdentityPem { key_pem: "KEY\nPEM\n".into(), certificate_pem: "CERT\n".into() }),
            ca: Some(CaPem {
                key_pem: "-----BEGIN PRIVATE KEY-----\nCAKEY\n-----END PRIVATE KEY-----\n".into(),
                certificate_pem: "-----BEGIN CERTIFICATE-----\nCACERT\n-----END CERTIFICATE-----\n".into(),
                names: "dns box-0001.local\nip 127.0.0.1\n".into(),
            }),
            update: None,
        }
    }

    #[test]
    fn the_update_server_reaches_the_node_config_and_the_reboot_goes_through_the_path_unit() {
        let mut provisioning = sample();
        let without = provisioning.node_config_toml("/var/lib/edgenode").unwrap();
        assert!(
            without.contains("reboot_command = \"/usr/bin/touch /var/lib/edgenode/reboot-requested\""),
            "{without}"
        );
        assert!(!without.contains("url ="), "no update server: the box never asks\n{without}");
        provisioning.update = Some(Update {
            url: "https://updates.example.net/edgenode/manifest.json".into(),
            pin: Some("sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            maintenance_window: Some("01:00-04:00".into()),
        });
        let with = provisioning.node_config_toml("/var/lib/edgenode").unwrap();
        let config = edgenode::config::Config::parse(&with).unwrap();
        assert_eq!(config.update.url.as_deref(), Some("https://updates.example.net/edgenode/manifest.json"));
        assert_eq!(config.update.maintenance_window, "01:00-04:00");
        let reparsed = Provisioning::parse(&provisioning.to_toml(false)).unwrap();
        assert_eq!(reparsed.update, provisioning.update, "the applied file keeps [update]");
        let path_unit = include_str!("../../systemd/system/edgenode-reboot.path");
        assert!(path_unit.contains(&format!("PathExists=/var/lib/edgenode/{REBOOT_REQUEST}")), "{path_unit}");
    }

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("image-builder-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn written_file_reads_back_and_the_applied_copy_has_no_secrets() {
        let provisioning = sample();
        assert_eq!(Provisioning::parse(&provisioning.to_toml(true)).unwrap(), provisioning);
        let applied = provisioning.to_toml(false);
        assert!(!applied.contains("ABCD-EFGH-JKMN") && !applied.contains("a long passphrase"));
        assert!(!applied.contains("KEY") && !applied.contains("CAKEY"));
        assert_eq!(Provisioning::parse(&applied).unwrap().ca, None);
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let refuse = |change: &dyn Fn(&mut Provisioning), key: &str| {
            let mut provisioning = sample();
            change(&mut provisioning);
            let error = provisioning.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        };
        refuse(&|p| p.name = "Kitchen".into(), "`name`");
        refuse(&|p| p.name = "-a".into(), "`name`");
        refuse(&|p| p.claim_code = Some("short".into()), "`claim_code`");
        refuse(&|p| p.wifi.as_mut().unwrap().psk = "short".into(), "`wifi.psk`");
        refuse(&|p| p.roles = vec!["king".into()], "role");
        refuse(&|p| p.siblings[0].pin = "abc".into(), "sibling");
        refuse(&|p| p.format = 2, "`format`");
        refuse(&|p| p.listen = Some("[::]:80".into()), "`listen`");
        refuse(&|p| p.ca.as_mut().unwrap().certificate_pem = "CERT".into(), "`ca.");
        refuse(&|p| p.ca.as_mut().unwrap().names = "box-0001.local".into(), "`ca.names`");
        assert!(Provisioning::parse("format = 1\nname = \"a\"\nnmae = \"typo\"").is_err());
    }

    #[test]
    fn first_boot_applies_once_and_removes_secrets_from_the_boot_partition() {
        let root = scratch("apply");
        let layout = Layout {
            boot_dir: root.join("boot"),
            config_dir: root.join("config"),
            state_dir: root.join("state"),
            node_owner: None,
            fallback_name: "edgenode".into(),
        };
        fs::create_dir_all(&layout.boot_dir).unwrap();
        fs::write(layout.boot_dir.join(FILE_NAME), sample().to_toml(true)).unwrap();
        let applied = apply(&layout).unwrap();
        assert_eq!(applied, Applied { name: "box-0001".into(), from_file: true, wifi: true, ssh: false, ca: true });

        let node_config = edgenode::config::Config::load(Some(&layout.config_dir.join("node.toml"))).unwrap();
        assert_eq!(node_config.name, "box-0001");
        assert_eq!(node_config.region, "earth/africa/ng/lagos");
        assert_eq!(node_config.peers.siblings.len(), 1);
        assert_eq!(node_config.claim_code, None, "the claim code is not kept in the config");
        assert_eq!(fs::read_to_string(layout.state_dir.join("claim-code")).unwrap(), "ABCD-EFGH-JKMN");
        assert_eq!(fs::read_to_string(layout.state_dir.join("node.key")).unwrap(), "KEY\nPEM\n");
        let ca = sample().ca.unwrap();
        for (file, contents) in [("ca.key", &ca.key_pem), ("ca.crt", &ca.certificate_pem), ("ca-names", &ca.names)] {
            let path = layout.state_dir.join(file);
            assert_eq!(&fs::read_to_string(&path).unwrap(), contents, "{file}");
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{file}");
        }
        assert_eq!(node_config.onboarding_listen, Some("[::]:80".parse().unwrap()));
        assert!(fs::read_to_string(layout.config_dir.join("wpa_supplicant-wlan0.conf"))
            .unwrap()
            .contains("psk=\"a long passphrase\""));
        assert!(!layout.config_dir.join("ssh-enabled").exists(), "SSH is off by default");
        assert!(layout.config_dir.join(PROVISIONED_MARKER).exists());

        assert!(!layout.boot_dir.join(FILE_NAME).exists());
        let left_on_boot = fs::read_to_string(layout.boot_dir.join(APPLIED_FILE_NAME)).unwrap();
        assert!(!left_on_boot.contains("ABCD-EFGH-JKMN") && !left_on_boot.contains("passphrase"));
        assert!(!left_on_boot.contains("CAKEY"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_whole_ca_in_the_data_dir_is_kept_and_an_unfinished_one_replaced() {
        let state = scratch("ca");
        let ca = sample().ca.unwrap();
        // Unfinished: a key without its certificate (a crash between the two).
        fs::write(state.join("ca.key"), "OLD").unwrap();
        install_ca(&state, &ca, None).unwrap();
        assert_eq!(fs::read_to_string(state.join("ca.key")).unwrap(), ca.key_pem);
        // Whole: phones may trust it, so another file's CA does not replace it.
        let other = CaPem { key_pem: "OTHER".into(), ..ca.clone() };
        install_ca(&state, &other, None).unwrap();
        assert_eq!(fs::read_to_string(state.join("ca.key")).unwrap(), ca.key_pem);
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn first_boot_without_a_file_writes_a_default_config() {
        let root = scratch("defaults");
        let layout = Layout {
            boot_dir: root.join("boot"),
            config_dir: root.join("config"),
            state_dir: root.join("state"),
            node_owner: None,
            fallback_name: "edgenode".into(),
        };
        fs::create_dir_all(&layout.boot_dir).unwrap();
        let applied = apply(&layout).unwrap();
        assert!(!applied.from_file);
        let node_config = edgenode::config::Config::load(Some(&layout.config_dir.join("node.toml"))).unwrap();
        assert_eq!(node_config.name, "edgenode");
        assert!(!layout.state_dir.join("claim-code").exists(), "the node makes its own");
        fs::remove_dir_all(&root).unwrap();
    }
}
