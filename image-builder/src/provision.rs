//! `image-builder provision`: an ISP's inventory CSV becomes, per box, a provisioning
//! file (`<out>/<name>/edgenode.toml`), a printable label (`<out>/<name>/label.png`),
//! the label's text (`label.txt`) and the box's CA certificate (`ca.crt`).
//!
//! The provisioner makes each node's TLS identity and certificate authority (with the
//! node's own code) so the pin in the siblings' files and the CA fingerprint on the
//! label are those the box will have.
//!
//! Inventory columns (header row required, order free, unknown columns refused):
//! `name` (required), `region`, `role`, `wifi_ssid`, `wifi_psk`, `wifi_country`,
//! `claim_code` (generated when empty), `siblings` (space-separated: names of boxes
//! in the same inventory, or `address=pin` for boxes outside it), `ssh_keys`
//! (`;`-separated public keys; SSH is enabled only when given), `update_url`,
//! `update_pin`, `update_window` (the box's `[update]`: where it asks for updates, the
//! server's SPKI pin, its maintenance window in UTC; no URL: it never asks).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::label::{self, LabelContent, OnboardingLink};
use crate::provisioning::{self, CaPem, IdentityPem, Provisioning, Sibling, Ssh, Update, Wifi};

/// Boxes in one inventory.
pub const INVENTORY_ROWS_MAX: usize = 10_000;
const INVENTORY_BYTES_MAX: u64 = 16 * 1024 * 1024;
const COLUMNS: &[&str] = &[
    "name",
    "region",
    "role",
    "wifi_ssid",
    "wifi_psk",
    "wifi_country",
    "claim_code",
    "siblings",
    "ssh_keys",
    "update_url",
    "update_pin",
    "update_window",
];

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("inventory {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("inventory is larger than {bytes_max} bytes")]
    TooLarge { bytes_max: u64 },
    #[error("inventory: {0}")]
    Csv(#[from] crate::csv::CsvError),
    #[error("inventory line {line}: {message}")]
    Row { line: usize, message: String },
    #[error("inventory: {0}")]
    Header(String),
    #[error("box {name}: {source}")]
    Box { name: String, source: provisioning::ProvisioningError },
    #[error("box {name}: cannot make its TLS identity: {message}")]
    Identity { name: String, message: String },
    #[error("box {name}: cannot make its certificate authority: {message}")]
    Ca { name: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Label(#[from] label::LabelError),
}

/// One row of the inventory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InventoryRow {
    pub line: usize,
    pub fields: BTreeMap<String, String>,
}

impl InventoryRow {
    fn get(&self, column: &str) -> &str {
        self.fields.get(column).map_or("", |value| value.trim())
    }
}

/// What was written for one box.
#[derive(Debug, Clone)]
pub struct ProvisionedBox {
    pub name: String,
    pub dir: PathBuf,
    /// The SPKI pin of the node's key (what siblings and the CLI check).
    pub pin: String,
    /// What the label shows, with the CA's full fingerprint.
    pub label: LabelContent,
}

pub fn read_inventory(path: &Path) -> Result<Vec<InventoryRow>, ProvisionError> {
    let read_error = |source| ProvisionError::Read { path: path.to_owned(), source };
    let bytes = fs::metadata(path).map_err(read_error)?.len();
    if bytes > INVENTORY_BYTES_MAX {
        return Err(ProvisionError::TooLarge { bytes_max: INVENTORY_BYTES_MAX });
    }
    parse_inventory(&fs::read_to_string(path).map_err(read_error)?)
}

pub fn parse_inventory(text: &str) -> Result<Vec<InventoryRow>, ProvisionError> {
    let mut records = crate::csv::parse(text, INVENTORY_ROWS_MAX + 1)?.into_iter();
    let header: Vec<String> = records
        .next()
        .ok_or_else(|| ProvisionError::Header("the file is empty; it needs a header row".into()))?
        .into_iter()
        .map(|column| column.trim().to_lowercase())
        .collect();
    for column in &header {
        if !COLUMNS.contains(&column.as_str()) {
            return Err(ProvisionError::Header(format!("unknown column {column:?}; known: {}", COLUMNS.join(", "))));
        }
    }
    if !header.iter().any(|column| column == "name") {
        return Err(ProvisionError::Header("a `name` column is required".into()));
    }
    let mut rows = Vec::new();
    let mut names = BTreeSet::new();
    for (index, record) in records.enumerate() {
        let line = index + 2;
        if record.len() != header.len() {
            return Err(ProvisionError::Row {
                line,
                message: format!("{} fields; the header has {}", record.len(), header.len()),
            });
        }
        let row = InventoryRow { line, fields: header.iter().cloned().zip(record).collect() };
        let name = row.get("name");
        if !provisioning::is_host_label(name) {
            return Err(ProvisionError::Row {
                line,
                message: format!("name {name:?} must be 1 to 63 of a-z, 0-9 and '-'"),
            });
        }
        if !names.insert(name.to_owned()) {
            return Err(ProvisionError::Row { line, message: format!("name {name:?} appears twice") });
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Twelve characters without look-alikes (0/O, 1/I/L) in groups of four: the same
/// shape as the codes the node makes itself.
pub fn new_claim_code() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
    let random = edgenode::os::random_bytes::<12>();
    let chars: Vec<char> = random.iter().map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char).collect();
    chars.chunks(4).map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// Makes the node's identity with the node's own code, in a scratch directory.
fn make_identity(name: &str, scratch: &Path) -> Result<(IdentityPem, String), ProvisionError> {
    let identity_error = |message: String| ProvisionError::Identity { name: name.to_owned(), message };
    let _ = fs::remove_dir_all(scratch);
    let identity = edgenode::identity::Identity::load_or_create(scratch, name)
        .map_err(|error| identity_error(error.to_string()))?;
    let read = |file: &str| fs::read_to_string(scratch.join(file)).map_err(|error| identity_error(error.to_string()));
    let pem = IdentityPem { key_pem: read("node.key")?, certificate_pem: read("node.crt")? };
    fs::remove_dir_all(scratch).map_err(|error| identity_error(error.to_string()))?;
    Ok((pem, identity.pin))
}

/// Makes the node's CA as the node would at its first start, for the names it will
/// have (`CaNames::for_node`), without LAN addresses: they are unknown before the box
/// boots, and it is reached by name. Returns the files and the CA's fingerprint.
fn make_ca(name: &str, pin: &str) -> Result<(CaPem, String), ProvisionError> {
    use edgenode::tls::ca::{CaNames, NodeCa};
    let host_label = edgenode::discovery::rules::host_label(name);
    let node_id = edgenode::core::model::NodeId::from_pin(pin).to_string();
    let (ca, files) = NodeCa::create(&host_label, CaNames::for_node(&host_label, &node_id, &[]))
        .map_err(|error| ProvisionError::Ca { name: name.to_owned(), message: error.to_string() })?;
    let pem = CaPem { key_pem: files.key_pem, certificate_pem: files.certificate_pem, names: files.names_text };
    Ok((pem, ca.fingerprint()))
}

/// Writes one provisioning file, one label (PNG and text) and the CA certificate per
/// row into `out_dir/<name>/`.
/// `progress` is called after each box with (done, total, name).
pub fn provision(
    rows: &[InventoryRow],
    out_dir: &Path,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<ProvisionedBox>, ProvisionError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ProvisionError::Write { path: path.clone(), source }
    };
    // Checked before anything is written.
    for row in rows {
        let code = row.get("claim_code");
        if !code.is_empty() && !label::is_link_safe(code) {
            return Err(ProvisionError::Row {
                line: row.line,
                message: format!("claim_code {code:?}: the label's link carries it, so only letters, digits and '-'"),
            });
        }
    }
    fs::create_dir_all(out_dir).map_err(write_error(out_dir))?;
    // Identities first: siblings in the same inventory refer to each other's pins.
    let mut identities = BTreeMap::new();
    for row in rows {
        let name = row.get("name");
        let scratch = out_dir.join(format!(".identity-{name}"));
        identities.insert(name.to_owned(), make_identity(name, &scratch)?);
    }
    let mut provisioned = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let name = row.get("name").to_owned();
        let row_error = |message: String| ProvisionError::Row { line: row.line, message };
        let mut siblings = Vec::new();
        for entry in row.get("siblings").split_whitespace() {
            if let Some((address, pin)) = entry.split_once('=') {
                siblings.push(Sibling { address: address.to_owned(), pin: pin.to_owned() });
            } else if let Some((_, pin)) = identities.get(entry) {
                if entry == name {
                    return Err(row_error(format!("box {name} lists itself as a sibling")));
                }
                siblings.push(Sibling {
                    address: format!("{entry}.local:{}", provisioning::DEFAULT_PORT),
                    pin: pin.clone(),
                });
            } else {
                return Err(row_error(format!("sibling {entry:?} is not in the inventory and has no `=pin`")));
            }
        }
        let wifi = match (row.get("wifi_ssid"), row.get("wifi_psk")) {
            ("", "") => None,
            (ssid, psk) => {
                Some(Wifi { ssid: ssid.to_owned(), psk: psk.to_owned(), country: row.get("wifi_country").to_owned() })
            }
        };
        let ssh_keys: Vec<String> =
            row.get("ssh_keys").split(';').map(str::trim).filter(|key| !key.is_empty()).map(str::to_owned).collect();
        let claim_code = match row.get("claim_code") {
            "" => new_claim_code(),
            code => code.to_owned(),
        };
        let (identity, pin) = identities[&name].clone();
        let (ca, ca_fingerprint) = make_ca(&name, &pin)?;
        let ca_certificate_pem = ca.certificate_pem.clone();
        let provisioning = Provisioning {
            format: provisioning::FORMAT,
            name: name.clone(),
            region: row.get("region").to_owned(),
            roles: match row.get("role") {
                "" => vec!["home".to_owned()],
                role => vec![role.to_owned()],
            },
            listen: None,
            claim_code: Some(claim_code.clone()),
            wifi,
            siblings,
            ssh: Ssh { enabled: !ssh_keys.is_empty(), authorized_keys: ssh_keys },
            identity: Some(identity),
            ca: Some(ca),
            update: match row.get("update_url") {
                "" => None,
                url => Some(Update {
                    url: url.to_owned(),
                    pin: Some(row.get("update_pin")).filter(|pin| !pin.is_empty()).map(str::to_owned),
                    maintenance_window: Some(row.get("update_window"))
                        .filter(|window| !window.is_empty())
                        .map(str::to_owned),
                }),
            },
        };
        provisioning.validate().map_err(|source| ProvisionError::Box { name: name.clone(), source })?;
        let dir = out_dir.join(&name);
        fs::create_dir_all(&dir).map_err(write_error(&dir))?;
        let file = dir.join(provisioning::FILE_NAME);
        write_private(&file, provisioning.to_toml(true).as_bytes()).map_err(write_error(&file))?;
        let label = LabelContent { link: OnboardingLink { name: name.clone(), claim_code }, ca_fingerprint };
        label::write_png(&label, &dir.join("label.png"))?;
        // For label software of the ISP's own, and to check a box by hand (the claim
        // code is in it: owner-only, like the provisioning file).
        let label_text = dir.join("label.txt");
        write_private(&label_text, label_text_of(&label).as_bytes()).map_err(write_error(&label_text))?;
        // Public: `openssl x509 -noout -fingerprint -sha256 -in ca.crt` shows the label's.
        let ca_file = dir.join(edgenode::tls::ca::CA_CERTIFICATE_FILE_NAME);
        fs::write(&ca_file, ca_certificate_pem).map_err(write_error(&ca_file))?;
        progress(index + 1, rows.len(), &name);
        provisioned.push(ProvisionedBox { name, dir, pin, label });
    }
    Ok(provisioned)
}

/// `label.txt`: what the label says, one `key: value` per line, the fingerprint whole.
pub fn label_text_of(label: &LabelContent) -> String {
    format!(
        "name: {}\nlink: {}\nurl: {}\nclaim code: {}\nca fingerprint: {}\n",
        label.link.name,
        label.link.url(),
        label.link.base_url(),
        label.link.claim_code,
        label.ca_fingerprint
    )
}

/// The provisioning file holds private keys and the claim code: owner-only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_header_and_rows_are_checked() {
        let rows = parse_inventory("name,region\nbox-1,earth/eu\nbox-2,\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].get("region"), "");
        let error = |text: &str| parse_inventory(text).unwrap_err().to_string();
        assert!(error("region\nx\n").contains("`name` column"));
        assert!(error("name,colour\nbox\n").contains("unknown column \"colour\""));
        assert!(error("name\nBox_1\n").contains("line 2"));
        assert!(error("name\nbox\nbox\n").contains("appears twice"));
        assert!(error("name,region\nbox\n").contains("1 fields"));
    }

    #[test]
    fn a_claim_code_the_link_cannot_carry_is_refused() {
        let out = std::env::temp_dir().join(format!("image-builder-provision-code-{}", std::process::id()));
        let rows = parse_inventory("name,claim_code\na,two words here\n").unwrap();
        let error = provision(&rows, &out, &mut |_, _, _| {}).unwrap_err().to_string();
        assert!(error.contains("line 2") && error.contains("claim_code"), "{error}");
        assert!(!out.exists(), "nothing is written");
    }

    #[test]
    fn claim_codes_have_the_node_shape() {
        let code = new_claim_code();
        assert_eq!(code.len(), 14);
        assert_eq!(code.matches('-').count(), 2);
        assert_ne!(code, new_claim_code());
    }

    #[test]
    fn siblings_in_the_inventory_get_each_others_true_pins() {
        let out = std::env::temp_dir().join(format!("image-builder-provision-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let rows = parse_inventory(
            "name,region,siblings,claim_code\na,earth/eu,b,AAAA-BBBB-CCCC\nb,earth/eu,a c.example:8443=sha256/x=,\n",
        )
        .unwrap();
        let mut calls = 0;
        let boxes = provision(&rows, &out, &mut |_, _, _| calls += 1).unwrap();
        assert_eq!(calls, 2);
        let b = Provisioning::parse(&fs::read_to_string(out.join("b/edgenode.toml")).unwrap()).unwrap();
        assert_eq!(b.siblings[0], Sibling { address: "a.local:8443".into(), pin: boxes[0].pin.clone() });
        assert_eq!(b.siblings[1].address, "c.example:8443");
        assert_eq!(boxes[0].label.link.claim_code, "AAAA-BBBB-CCCC");
        // The pin on the label is the pin of the key in the file.
        let identity_dir = out.join("check");
        fs::create_dir_all(&identity_dir).unwrap();
        let identity = b.identity.unwrap();
        fs::write(identity_dir.join("node.key"), identity.key_pem).unwrap();
        fs::write(identity_dir.join("node.crt"), identity.certificate_pem).unwrap();
        assert_eq!(edgenode::identity::Identity::load(&identity_dir).unwrap().pin, boxes[1].pin);
        // The CA is made for the box's names, and its certificate is written beside.
        let ca = b.ca.unwrap();
        let node_id = edgenode::core::model::NodeId::from_pin(&boxes[1].pin).to_string();
        assert!(ca.names.starts_with(&format!("dns b.local\ndns {node_id}.local\n")), "{}", ca.names);
        assert_eq!(fs::read_to_string(out.join("b/ca.crt")).unwrap(), ca.certificate_pem);
        assert!(fs::read_to_string(out.join("b/label.txt")).unwrap().contains(&boxes[1].label.ca_fingerprint));
        assert!(out.join("a/label.png").exists());
        assert!(!out.join(".identity-a").exists());
        fs::remove_dir_all(&out).unwrap();
    }
}
