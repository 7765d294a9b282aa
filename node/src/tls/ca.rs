//! The node's own certificate authority: what a phone trusts once so that the node's
//! HTTPS opens without a warning, offline, with no public CA involved.
//!
//! The CA is name-constrained (X.509 NameConstraints, critical) to the node's own
//! names and addresses: `<label>.local`, `<node id>.local`, `localhost`, loopback and
//! the LAN addresses the node had when the CA was made. A browser rejects any
//! certificate it signs for another name, so trusting it cannot expose another site,
//! even if the box and its CA key were stolen. Loopback is permitted because traffic
//! to it never leaves the device: a certificate for it cannot be used by anyone on the
//! network.
//!
//! Files in the data dir: `ca.key` (0600), `ca.crt` (PEM; what users install) and
//! `ca-names` (the permitted names, one per line, `dns NAME` or `ip ADDRESS`), so the
//! leaf can be issued within them without parsing X.509. The serving leaf's key is
//! the node key, so the SPKI pin of CLI and siblings does not change.

use std::net::IpAddr;
use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::identity::{read_if_exists, write_private_file, IdentityError};

pub const CA_KEY_FILE_NAME: &str = "ca.key";
pub const CA_CERTIFICATE_FILE_NAME: &str = "ca.crt";
pub const CA_NAMES_FILE_NAME: &str = "ca-names";

/// A serving certificate is valid this long. Apple platforms refuse TLS server
/// certificates valid for more than 825 days, even under a user-installed root.
const LEAF_VALIDITY_DAYS: i64 = 800;
/// Reissued when fewer days than this are left.
pub const LEAF_RENEW_DAYS_BEFORE: i64 = 60;
/// A clock before this is not trusted (a board without a real-time clock boots in
/// 1970): the leaf then starts here, so that phones with the right time accept it.
const CLOCK_FLOOR_UNIX_SECONDS: i64 = 1_767_225_600; // 2026-01-01

/// The names a node's CA permits, and so the only names its certificates may carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CaNames {
    /// `<label>.local`, `<node id>.local`, `localhost`, the loopback addresses and
    /// `lan_addresses` (those the node has now; empty when made before the box is on a
    /// network, e.g. by the provisioner: the box is then reached by name).
    pub fn for_node(host_label: &str, node_id: &str, lan_addresses: &[IpAddr]) -> CaNames {
        let mut dns = vec![format!("{host_label}.local"), format!("{node_id}.local"), "localhost".to_owned()];
        dns.dedup();
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
        for address in lan_addresses {
            if !ips.contains(address) {
                ips.push(*address);
            }
        }
        CaNames { dns, ips }
    }

    /// Whether a certificate for `address` would be accepted under this CA.
    pub fn permits_ip(&self, address: IpAddr) -> bool {
        self.ips.contains(&address)
    }

    fn to_text(&self) -> String {
        let mut text = String::new();
        for name in &self.dns {
            text.push_str(&format!("dns {name}\n"));
        }
        for address in &self.ips {
            text.push_str(&format!("ip {address}\n"));
        }
        text
    }

    fn from_text(text: &str) -> Option<CaNames> {
        let mut names = CaNames::default();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            match line.split_once(' ')? {
                ("dns", name) => names.dns.push(name.to_owned()),
                ("ip", address) => names.ips.push(address.parse().ok()?),
                _ => return None,
            }
        }
        Some(names)
    }

    fn name_constraints(&self) -> rcgen::NameConstraints {
        let mut permitted_subtrees: Vec<rcgen::GeneralSubtree> =
            self.dns.iter().map(|name| rcgen::GeneralSubtree::DnsName(name.clone())).collect();
        permitted_subtrees.extend(self.ips.iter().map(|address| {
            rcgen::GeneralSubtree::IpAddress(match address {
                IpAddr::V4(v4) => rcgen::CidrSubnet::from_v4_prefix(v4.octets(), 32),
                IpAddr::V6(v6) => rcgen::CidrSubnet::from_v6_prefix(v6.octets(), 128),
            })
        }));
        rcgen::NameConstraints { permitted_subtrees, excluded_subtrees: Vec::new() }
    }
}

/// The CA as written to disk (what the provisioner puts on a box before it boots).
pub struct CaFiles {
    pub key_pem: String,
    pub certificate_pem: String,
    pub names_text: String,
}

/// A loaded node CA, ready to issue the serving certificate.
pub struct NodeCa {
    key: rcgen::KeyPair,
    /// The CA certificate as users installed it.
    pub certificate_der: Vec<u8>,
    pub certificate_pem: String,
    pub names: CaNames,
    host_label: String,
}

impl std::fmt::Debug for NodeCa {
    // Never print the key.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("NodeCa").field("names", &self.names).finish_non_exhaustive()
    }
}

impl NodeCa {
    /// Makes a new CA (key and certificate) for these names.
    pub fn create(host_label: &str, names: CaNames) -> Result<(NodeCa, CaFiles), IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
        let certificate = ca_params(host_label, &names).self_signed(&key).map_err(generate_error)?;
        let files =
            CaFiles { key_pem: key.serialize_pem(), certificate_pem: certificate.pem(), names_text: names.to_text() };
        let ca = NodeCa {
            key,
            certificate_der: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
            names,
            host_label: host_label.to_owned(),
        };
        Ok((ca, files))
    }

    /// Loads `dir/ca.{key,crt}` and `ca-names`, or makes them with `names` on first
    /// start. An existing CA keeps its names: users trusted that certificate.
    pub fn load_or_create(dir: &Path, host_label: &str, names: CaNames) -> Result<NodeCa, IdentityError> {
        let key_path = dir.join(CA_KEY_FILE_NAME);
        let certificate_path = dir.join(CA_CERTIFICATE_FILE_NAME);
        let names_path = dir.join(CA_NAMES_FILE_NAME);
        match (read_if_exists(&key_path)?, read_if_exists(&certificate_path)?, read_if_exists(&names_path)?) {
            (Some(key_pem), Some(certificate_pem), Some(names_text)) => {
                let invalid = |path: &Path, reason: &str| IdentityError::Invalid {
                    path: path.to_owned(),
                    reason: reason.to_owned(),
                };
                let key = std::str::from_utf8(&key_pem)
                    .ok()
                    .and_then(|pem| rcgen::KeyPair::from_pem(pem).ok())
                    .ok_or_else(|| invalid(&key_path, "not a PEM private key"))?;
                let certificate = CertificateDer::from_pem_slice(&certificate_pem)
                    .map_err(|_| invalid(&certificate_path, "not a PEM certificate"))?;
                let names = std::str::from_utf8(&names_text)
                    .ok()
                    .and_then(CaNames::from_text)
                    .ok_or_else(|| invalid(&names_path, "not lines of `dns NAME` or `ip ADDRESS`"))?;
                crate::identity::warn_if_readable_by_others(&key_path);
                Ok(NodeCa {
                    key,
                    certificate_der: certificate.to_vec(),
                    certificate_pem: String::from_utf8_lossy(&certificate_pem).into_owned(),
                    names,
                    host_label: host_label.to_owned(),
                })
            }
            (None, None, None) => {
                let (ca, files) = NodeCa::create(host_label, names)?;
                // Key first: a CA certificate without its key could never issue.
                write_private_file(dir, CA_KEY_FILE_NAME, files.key_pem.as_bytes())?;
                write_private_file(dir, CA_NAMES_FILE_NAME, files.names_text.as_bytes())?;
                write_private_file(dir, CA_CERTIFICATE_FILE_NAME, files.certificate_pem.as_bytes())?;
                tracing::info!(fingerprint = %ca.fingerprint(), dir = %dir.display(), "created this node's certificate authority");
                Ok(ca)
            }
            _ => Err(IdentityError::Invalid {
                path: certificate_path,
                reason: format!(
                    "{CA_KEY_FILE_NAME}, {CA_CERTIFICATE_FILE_NAME} and {CA_NAMES_FILE_NAME} must all be present \
                     (restore them from a backup, or move all three aside to make a new CA that users must trust again)"
                ),
            }),
        }
    }

    /// `SHA-256 AB:CD:…`, what iOS, Android and browsers show for the certificate.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.certificate_der)
    }

    /// The serving certificate for `node_key` (the node's own key, so its pin stays),
    /// naming every permitted DNS name and those of `addresses` the CA permits (a
    /// name outside the constraints would make browsers reject the whole chain).
    pub fn issue_leaf(
        &self,
        node_key: &rcgen::KeyPair,
        addresses: &[IpAddr],
        now_unix_seconds: i64,
    ) -> Result<IssuedLeaf, IdentityError> {
        let mut ips: Vec<IpAddr> = self.names.ips.clone();
        ips.retain(|address| address.is_loopback() || addresses.contains(address));
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = self
            .names
            .dns
            .iter()
            .filter_map(|name| rcgen::Ia5String::try_from(name.as_str()).ok().map(rcgen::SanType::DnsName))
            .chain(ips.iter().map(|address| rcgen::SanType::IpAddress(*address)))
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{}.local", self.host_label));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let not_before = now_unix_seconds.max(CLOCK_FLOOR_UNIX_SECONDS) - 86_400;
        let not_after = not_before + LEAF_VALIDITY_DAYS * 86_400;
        params.not_before = time_of(not_before)?;
        params.not_after = time_of(not_after)?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&crate::os::random_bytes::<16>()));
        // rcgen signs with an issuer `Certificate`: the same parameters and key give
        // the same subject and key identifier as the installed CA certificate (its
        // signature differs, which a leaf does not refer to).
        let issuer = ca_params(&self.host_label, &self.names).self_signed(&self.key).map_err(generate_error)?;
        let leaf = params.signed_by(node_key, &issuer, &self.key).map_err(generate_error)?;
        Ok(IssuedLeaf {
            chain: vec![CertificateDer::from(leaf.der().to_vec()), CertificateDer::from(self.certificate_der.clone())],
            addresses: ips,
            not_after_unix_seconds: not_after,
        })
    }
}

/// A serving certificate and what it was issued for.
#[derive(Debug, Clone)]
pub struct IssuedLeaf {
    /// Leaf first, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    pub addresses: Vec<IpAddr>,
    pub not_after_unix_seconds: i64,
}

/// The fingerprint of the CA in `data_dir` (for `edgenode status`), if there is one.
pub fn fingerprint_in(data_dir: &Path) -> Option<String> {
    let pem = std::fs::read(data_dir.join(CA_CERTIFICATE_FILE_NAME)).ok()?;
    CertificateDer::from_pem_slice(&pem).ok().map(|der| fingerprint_of(&der))
}

/// Whether `pem` is one CA certificate name-constrained the way a node's CA is:
/// permitted subtrees only, each a `.local` name, `localhost`, or a single address
/// (/32, /128). A CA that could vouch for any other site is refused.
pub fn is_node_ca_pem(pem: &[u8]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(pem) else { return false };
    let Ok(anchor) = webpki::anchor_from_trusted_cert(&der) else { return false };
    anchor.name_constraints.as_ref().is_some_and(|constraints| only_node_names(constraints.as_ref()))
}

/// NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees OPTIONAL,
/// excludedSubtrees [1] … } (webpki hands over its contents); GeneralSubtree ::=
/// SEQUENCE { base GeneralName, … }.
fn only_node_names(constraints: &[u8]) -> bool {
    let mut rest = constraints;
    let mut saw_permitted = false;
    while !rest.is_empty() {
        let Some((tag, value, after)) = der_item(rest) else { return false };
        rest = after;
        match tag {
            0xA0 => {
                saw_permitted = true;
                let mut subtrees = value;
                while !subtrees.is_empty() {
                    let Some((0x30, subtree, after)) = der_item(subtrees) else { return false };
                    subtrees = after;
                    let Some((base_tag, base, _)) = der_item(subtree) else { return false };
                    let allowed = match base_tag {
                        // dNSName
                        0x82 => std::str::from_utf8(base).is_ok_and(|name| {
                            let name = name.to_ascii_lowercase();
                            name == "localhost"
                                || (name.ends_with(".local") && name.len() > ".local".len() && !name.starts_with('.'))
                        }),
                        // iPAddress: address then mask, the mask all ones.
                        0x87 => {
                            (base.len() == 8 || base.len() == 32)
                                && base[base.len() / 2..].iter().all(|byte| *byte == 0xFF)
                        }
                        _ => false,
                    };
                    if !allowed {
                        return false;
                    }
                }
            }
            // Excluded subtrees only narrow what is permitted.
            0xA1 => {}
            _ => return false,
        }
    }
    saw_permitted
}

/// One DER item with a definite length: (tag, value, the rest).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let octets = (first & 0x7F) as usize;
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let length = rest[..octets].iter().fold(0usize, |length, byte| (length << 8) | *byte as usize);
        (length, &rest[octets..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

pub fn fingerprint_of(certificate_der: &[u8]) -> String {
    let digest = Sha256::digest(certificate_der);
    let hex: Vec<String> = digest.iter().map(|byte| format!("{byte:02X}")).collect();
    format!("SHA-256 {}", hex.join(":"))
}

fn ca_params(host_label: &str, names: &CaNames) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "Edgenode");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("Edgenode {host_label}.local"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(names.name_constraints());
    // A CA is checked against the phone's clock only; a wide validity keeps boxes
    // whose clock is wrong and phones set far ahead working.
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    params
}

fn time_of(unix_seconds: i64) -> Result<time::OffsetDateTime, IdentityError> {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds).map_err(|error| IdentityError::Generate(error.to_string()))
}

fn generate_error(error: rcgen::Error) -> IdentityError {
    IdentityError::Generate(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CaNames {
        CaNames::for_node("box-0001", "00112233aabbccdd", &["192.168.1.20".parse().unwrap()])
    }

    #[test]
    fn names_round_trip_through_their_file() {
        let names = names();
        assert_eq!(CaNames::from_text(&names.to_text()), Some(names));
        assert_eq!(CaNames::from_text("dns a.local\nbogus x\n"), None);
    }

    #[test]
    fn a_leaf_chains_to_the_ca_for_permitted_names_only() {
        let (ca, _) = NodeCa::create("box-0001", names()).unwrap();
        let node_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let now = 1_800_000_000;
        let addresses: Vec<IpAddr> = vec!["192.168.1.20".parse().unwrap(), "10.9.9.9".parse().unwrap()];
        let leaf = ca.issue_leaf(&node_key, &addresses, now).unwrap();
        // 10.9.9.9 is outside the CA's names: left out rather than breaking the chain.
        assert!(leaf.addresses.contains(&"192.168.1.20".parse().unwrap()));
        assert!(!leaf.addresses.contains(&"10.9.9.9".parse().unwrap()));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.certificate_der.clone())).unwrap();
        let anchors = roots.roots;
        let end_entity = webpki::EndEntityCert::try_from(&leaf.chain[0]).unwrap();
        let time = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(now as u64));
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                time,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .expect("the leaf chains to the node's CA");
        for name in ["box-0001.local", "00112233aabbccdd.local", "localhost", "192.168.1.20", "127.0.0.1"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
            end_entity
                .verify_is_valid_for_subject_name(&server_name)
                .unwrap_or_else(|error| panic!("{name}: {error:?}"));
        }
        // The leaf's key is the node key: the pin stays.
        assert_eq!(
            crate::identity::spki_pin_of_certificate(&leaf.chain[0]),
            Some(crate::identity::spki_pin(&node_key.public_key_der()))
        );
    }

    #[test]
    fn a_certificate_for_another_name_signed_by_the_ca_is_rejected_by_its_constraints() {
        let (ca, _) = NodeCa::create("box-0001", names()).unwrap();
        let issuer = ca_params("box-0001", &ca.names).self_signed(&ca.key).unwrap();
        let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["bank.example".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let forged = params.signed_by(&other_key, &issuer, &ca.key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.certificate_der.clone())).unwrap();
        let forged_der = CertificateDer::from(forged.der().to_vec());
        let end_entity = webpki::EndEntityCert::try_from(&forged_der).unwrap();
        let time = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_790_000_000));
        let result = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &roots.roots,
            &[],
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        );
        assert!(result.is_err(), "a name outside the constraints must not verify");
    }

    #[test]
    fn only_node_cas_pass_the_sibling_check() {
        let (_, files) = NodeCa::create("box-0001", names()).unwrap();
        assert!(is_node_ca_pem(files.certificate_pem.as_bytes()));
        // An unconstrained CA, and one constrained to another site, are refused.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        assert!(!is_node_ca_pem(params.clone().self_signed(&key).unwrap().pem().as_bytes()));
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("bank.example".into())],
            excluded_subtrees: Vec::new(),
        });
        assert!(!is_node_ca_pem(params.clone().self_signed(&key).unwrap().pem().as_bytes()));
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_v4_prefix(
                [10, 0, 0, 0],
                8,
            ))],
            excluded_subtrees: Vec::new(),
        });
        assert!(!is_node_ca_pem(params.self_signed(&key).unwrap().pem().as_bytes()), "a whole subnet is refused");
        assert!(!is_node_ca_pem(b"not a certificate"));
    }

    #[test]
    fn the_ca_is_kept_across_loads_with_its_names() {
        let dir = tempdir();
        let first = NodeCa::load_or_create(&dir, "box", names()).unwrap();
        let again = NodeCa::load_or_create(&dir, "box", CaNames::for_node("box", "ff", &[])).unwrap();
        assert_eq!(first.certificate_der, again.certificate_der);
        assert_eq!(again.names, first.names, "an existing CA keeps the names it was made with");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join(CA_KEY_FILE_NAME)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(first.fingerprint().starts_with("SHA-256 "));
        std::fs::remove_file(dir.join(CA_NAMES_FILE_NAME)).unwrap();
        assert!(NodeCa::load_or_create(&dir, "box", names()).is_err(), "a partial CA is an error, not a new CA");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("edgenode-ca-test-{}", hex(&crate::os::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
