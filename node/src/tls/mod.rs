//! The certificates the public transports (HTTPS, HTTP/3) present, chosen per
//! handshake by the name the client asked for (SNI):
//!
//! 1. a certificate of the operator's own (`[tls] cert_file`, reloaded on change),
//! 2. one from ACME (`[tls.acme]`, `acme.rs`),
//! 3. otherwise, and always as the fallback, the serving certificate issued by the
//!    node's own CA (`ca.rs`) for its names and LAN addresses (reissued when they
//!    change or near its expiry). Its key is the node key, so the pin that the CLI
//!    and siblings check is the same whichever name a browser uses.
//!
//! A named certificate is presented only for names it is valid for and until it
//! expires, so a lapsed ACME renewal (the ACME server unreachable) falls back to the
//! last good certificate, then to the node's CA: the internet being down never takes
//! the node down. The link (node to node) keeps presenting the node's self-signed
//! certificate (`identity.rs`): siblings trust pins, not CAs.

pub mod acme;
pub mod ca;
mod sibling_card;

pub use sibling_card::{SiblingCard, SIBLING_WEB_DIR};

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::identity::{Identity, IdentityError, ALPN_H2, ALPN_H3, ALPN_HTTP1};
use crate::locking::{read, write};
use ca::NodeCa;

/// How often the LAN addresses, the serving certificate's expiry and the operator's
/// certificate files are looked at.
const CHECK_INTERVAL_MS: u64 = 10_000;

/// Where a named certificate came from; one of each kind is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[tls] cert_file` / `key_file`.
    Files,
    Acme,
}

struct Named {
    source: Source,
    certified: Arc<CertifiedKey>,
    /// Unknown for the operator's files (presented for as long as they are there).
    not_after_unix_seconds: Option<i64>,
}

/// The serving certificates of the public transports; see the module doc.
pub struct ServingCertificates {
    ca: NodeCa,
    node_key: rcgen::KeyPair,
    own: RwLock<Own>,
    named: RwLock<Vec<Named>>,
    challenges: AcmeChallenges,
}

struct Own {
    certified: Arc<CertifiedKey>,
    addresses: Vec<IpAddr>,
    not_after_unix_seconds: i64,
}

impl std::fmt::Debug for ServingCertificates {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ServingCertificates").field("ca", &self.ca).finish_non_exhaustive()
    }
}

impl ServingCertificates {
    /// Loads (or on first start makes) the node's CA in `data_dir` and issues the
    /// serving certificate for the node's current addresses.
    pub fn start(data_dir: &Path, identity: &Identity, host_label: &str, node_id: &str) -> Result<Self, IdentityError> {
        let addresses = lan_addresses();
        let ca = NodeCa::load_or_create(data_dir, host_label, ca::CaNames::for_node(host_label, node_id, &addresses))?;
        let node_key = rcgen::KeyPair::try_from(identity.private_key_der.as_slice())
            .map_err(|error| IdentityError::Generate(error.to_string()))?;
        let own = issue(&ca, &node_key, identity.private_key(), &addresses)?;
        let skipped: Vec<&IpAddr> = addresses.iter().filter(|address| !ca.names.permits_ip(**address)).collect();
        if !skipped.is_empty() {
            tracing::warn!(
                ?skipped,
                "addresses outside this node's CA are not in its certificate; phones reach it by name (<name>.local)"
            );
        }
        Ok(ServingCertificates {
            ca,
            node_key,
            own: RwLock::new(own),
            named: RwLock::new(Vec::new()),
            challenges: AcmeChallenges::default(),
        })
    }

    pub fn ca(&self) -> &NodeCa {
        &self.ca
    }

    /// The ACME HTTP-01 answers the onboarding listener serves.
    pub fn challenges(&self) -> &AcmeChallenges {
        &self.challenges
    }

    /// Presents `chain` (leaf first) with `key` for the names the leaf is valid for,
    /// in place of the previous certificate of `source`.
    pub fn set_named(
        &self,
        source: Source,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'static>,
        not_after_unix_seconds: Option<i64>,
    ) -> Result<(), IdentityError> {
        if chain.is_empty() {
            return Err(IdentityError::Generate("an empty certificate chain".to_owned()));
        }
        webpki::EndEntityCert::try_from(&chain[0])
            .map_err(|error| IdentityError::Generate(format!("the certificate cannot be parsed: {error:?}")))?;
        let certified = certified_key(chain, key)?;
        certified.keys_match().map_err(IdentityError::Tls)?;
        let mut named = write(&self.named);
        named.retain(|entry| entry.source != source);
        named.push(Named { source, certified: Arc::new(certified), not_after_unix_seconds });
        // The operator's own certificate wins over ACME's for the same name.
        named.sort_by_key(|entry| entry.source != Source::Files);
        Ok(())
    }

    pub fn clear_named(&self, source: Source) {
        write(&self.named).retain(|entry| entry.source != source);
    }

    /// Reissues the CA's serving certificate when the node's addresses changed or it
    /// is near its expiry.
    fn refresh_own(&self, private_key: PrivateKeyDer<'static>) {
        let addresses = lan_addresses();
        let now = crate::os::unix_seconds();
        let (covered, expiring) = {
            let own = read(&self.own);
            let mut covered: Vec<IpAddr> = addresses.iter().copied().filter(|a| self.ca.names.permits_ip(*a)).collect();
            covered.extend(own.addresses.iter().filter(|address| address.is_loopback()));
            covered.sort();
            let mut current = own.addresses.clone();
            current.sort();
            (covered == current, own.not_after_unix_seconds - now < ca::LEAF_RENEW_DAYS_BEFORE * 86_400)
        };
        if covered && !expiring {
            return;
        }
        match issue(&self.ca, &self.node_key, private_key, &addresses) {
            Ok(own) => {
                tracing::info!(addresses = ?own.addresses, "reissued the serving certificate");
                *write(&self.own) = own;
            }
            Err(error) => tracing::warn!(%error, "cannot reissue the serving certificate; keeping the current one"),
        }
    }

    /// Checks the serving certificate and loads the operator's files when called (so the
    /// node's first handshake presents them, as `acme::run` does with its stored
    /// certificate), then returns the task that checks again every `CHECK_INTERVAL_MS`
    /// until `stop` turns true.
    pub fn keep_current(
        self: Arc<Self>,
        private_key: PrivateKeyDer<'static>,
        files: Option<(PathBuf, PathBuf)>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut loaded: Option<(SystemTime, SystemTime)> = None;
        let check = move |certificates: &Self, loaded: &mut Option<(SystemTime, SystemTime)>| {
            certificates.refresh_own(private_key.clone_key());
            if let Some((cert_file, key_file)) = &files {
                certificates.reload_files(cert_file, key_file, loaded);
            }
        };
        check(&self, &mut loaded);
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(CHECK_INTERVAL_MS)) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
                check(&self, &mut loaded);
            }
        }
    }

    /// Loads `[tls] cert_file`/`key_file` at start and whenever either changes. A
    /// broken pair (half-written by a renewal script) keeps the previous one.
    pub fn reload_files(&self, cert_file: &Path, key_file: &Path, loaded: &mut Option<(SystemTime, SystemTime)>) {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok();
        let (Some(cert_modified), Some(key_modified)) = (modified(cert_file), modified(key_file)) else {
            if loaded.is_some() {
                tracing::warn!(cert_file = %cert_file.display(), "the certificate files are gone; keeping the last one loaded");
            }
            return;
        };
        if *loaded == Some((cert_modified, key_modified)) {
            return;
        }
        match load_files(cert_file, key_file).and_then(|(chain, key)| self.set_named(Source::Files, chain, &key, None))
        {
            Ok(()) => {
                tracing::info!(cert_file = %cert_file.display(), "serving the certificate from [tls] cert_file");
                *loaded = Some((cert_modified, key_modified));
            }
            Err(error) => {
                tracing::warn!(cert_file = %cert_file.display(), %error, "cannot use [tls] cert_file/key_file; keeping the previous certificate")
            }
        }
    }
}

impl ResolvesServerCert for ServingCertificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(server_name) = client_hello.server_name().and_then(|name| ServerName::try_from(name).ok()) {
            let now = crate::os::unix_seconds();
            for entry in read(&self.named).iter() {
                let current = entry.not_after_unix_seconds.is_none_or(|not_after| now < not_after);
                let valid_for_name = entry.certified.end_entity_cert().ok().is_some_and(|leaf| {
                    webpki::EndEntityCert::try_from(leaf)
                        .is_ok_and(|leaf| leaf.verify_is_valid_for_subject_name(&server_name).is_ok())
                });
                if current && valid_for_name {
                    return Some(entry.certified.clone());
                }
            }
        }
        Some(read(&self.own).certified.clone())
    }
}

/// ACME HTTP-01 key authorizations by token, put here by `acme.rs` while an order is
/// validated and answered at `/.well-known/acme-challenge/<token>`.
#[derive(Debug, Default)]
pub struct AcmeChallenges {
    by_token: Mutex<HashMap<String, String>>,
}

impl AcmeChallenges {
    pub fn insert(&self, token: String, key_authorization: String) {
        crate::locking::lock(&self.by_token).insert(token, key_authorization);
    }

    pub fn remove(&self, token: &str) {
        crate::locking::lock(&self.by_token).remove(token);
    }

    pub fn get(&self, token: &str) -> Option<String> {
        crate::locking::lock(&self.by_token).get(token).cloned()
    }
}

fn issue(
    ca: &NodeCa,
    node_key: &rcgen::KeyPair,
    private_key: PrivateKeyDer<'static>,
    addresses: &[IpAddr],
) -> Result<Own, IdentityError> {
    let leaf = ca.issue_leaf(node_key, addresses, crate::os::unix_seconds())?;
    let certified = certified_key(leaf.chain, &private_key)?;
    Ok(Own {
        certified: Arc::new(certified),
        addresses: leaf.addresses,
        not_after_unix_seconds: leaf.not_after_unix_seconds,
    })
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<CertifiedKey, IdentityError> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

fn load_files(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), IdentityError> {
    let invalid = |path: &Path, reason: String| IdentityError::Invalid { path: path.to_owned(), reason };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| invalid(cert_file, error.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(cert_file, "no certificate in the file".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| invalid(key_file, error.to_string()))?;
    Ok((chain, key))
}

/// The node's addresses on its networks (not loopback), as the OS reports them now.
pub fn lan_addresses() -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .filter(|address| !address.is_loopback() && !address.is_unspecified())
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Server configuration for HTTPS over TCP: TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`.
pub fn https_server_config(certificates: Arc<ServingCertificates>) -> Result<rustls::ServerConfig, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::identity::ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Server configuration for QUIC: TLS 1.3 only (QUIC requires it), ALPN `h3`. No 0-RTT:
/// early data can be replayed and our API has non-idempotent requests.
pub fn quic_server_config(certificates: Arc<ServingCertificates>) -> Result<rustls::ServerConfig, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::identity::ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![ALPN_H3.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificates(dir: &Path) -> Arc<ServingCertificates> {
        let identity = Identity::load_or_create(dir, "garden").unwrap();
        Arc::new(ServingCertificates::start(dir, &identity, "garden", "00112233aabbccdd").unwrap())
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let suffix: String = crate::os::random_bytes::<6>().iter().map(|byte| format!("{byte:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("edgenode-tls-{tag}-{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a self-signed certificate for `name` and its key as PEM files, as an
    /// operator's script or the ACME task leaves them.
    pub(super) fn write_self_signed(name: &str, cert_file: &Path, key_file: &Path) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let certificate = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(cert_file, certificate.pem()).unwrap();
        std::fs::write(key_file, key.serialize_pem()).unwrap();
        certificate
    }

    #[test]
    fn server_configs_offer_the_right_protocols() {
        let dir = temp_dir("configs");
        let certificates = certificates(&dir);
        let https = https_server_config(certificates.clone()).unwrap();
        assert_eq!(https.alpn_protocols, vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]);
        let quic = quic_server_config(certificates).unwrap();
        assert_eq!(quic.alpn_protocols, vec![ALPN_H3.to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_operators_files_are_presented_before_the_keeping_task_first_runs() {
        let dir = temp_dir("files-at-start");
        let certificates = certificates(&dir);
        let (cert_file, key_file) = (dir.join("own.crt"), dir.join("own.key"));
        let certificate = write_self_signed("photos.example.org", &cert_file, &key_file);
        let identity = Identity::load_or_create(&dir, "garden").unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        // Neither spawned nor polled: what the node's first handshake would find.
        let _task = certificates.clone().keep_current(identity.private_key(), Some((cert_file, key_file)), stopped);
        let named = read(&certificates.named);
        assert_eq!(named.len(), 1, "the operator's files are presented when keep_current is called");
        assert_eq!(named[0].certified.end_entity_cert().unwrap().as_ref(), certificate.der().as_ref());
        drop(named);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_operators_files_are_presented_for_their_names_and_a_broken_pair_keeps_the_last() {
        let dir = temp_dir("files");
        let certificates = certificates(&dir);
        let (cert_file, key_file) = (dir.join("own.crt"), dir.join("own.key"));
        let certificate = write_self_signed("photos.example.org", &cert_file, &key_file);
        let mut loaded = None;
        certificates.reload_files(&cert_file, &key_file, &mut loaded);
        assert!(loaded.is_some());
        let named = read(&certificates.named);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].certified.end_entity_cert().unwrap().as_ref(), certificate.der().as_ref());
        drop(named);

        // A key that does not match (a renewal script half done) keeps the previous pair.
        let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&key_file, other_key.serialize_pem()).unwrap();
        let before = loaded;
        certificates.reload_files(&cert_file, &key_file, &mut loaded);
        assert_eq!(loaded, before);
        assert_eq!(
            read(&certificates.named)[0].certified.end_entity_cert().unwrap().as_ref(),
            certificate.der().as_ref()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
