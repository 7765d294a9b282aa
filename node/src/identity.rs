//! TLS identity: the node's key pair and self-signed certificate, its SPKI pin, the
//! rustls configurations built from it, and a client configuration that trusts exactly
//! one pin (for `edgenode status`, siblings and tests).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// Why the node key or certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the TLS identity {path}: {source} — check the data directory's owner and permissions")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot write the TLS identity {path}: {source} — check that the data directory is writable and the disk is not full")]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("no TLS identity in {dir} — run `edgenode serve` once to create it, or pass the right --data-dir")]
    Missing { dir: std::path::PathBuf },
    #[error("the TLS identity {path} is not valid: {reason} — restore it from a backup, or move node.key and node.crt aside to make a new one (the pin will change and paired devices must pair again)")]
    Invalid { path: std::path::PathBuf, reason: String },
    #[error("cannot generate the TLS identity: {0}")]
    Generate(String),
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
}

const KEY_FILE_NAME: &str = "node.key";
const CERTIFICATE_FILE_NAME: &str = "node.crt";

/// ALPN protocol ids.
pub const ALPN_H3: &[u8] = b"h3";
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The node's TLS identity. The pin depends only on the key, so a lost certificate
/// can be remade from the key without changing the pin.
#[derive(Clone)]
pub struct Identity {
    pub certificate_der: Vec<u8>,
    /// PKCS#8.
    pub private_key_der: Vec<u8>,
    pub pin: String,
}

impl std::fmt::Debug for Identity {
    // Never print the private key.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Identity").field("pin", &self.pin).finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads `dir/node.key` and `dir/node.crt`; on first start creates them: an ECDSA
    /// P-256 key and a self-signed certificate for `name`, `name.local`, `localhost`,
    /// 127.0.0.1 and ::1. If only the key exists (a crash between the two writes) the
    /// certificate is remade from it, keeping the pin.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Identity, IdentityError> {
        let key_path = dir.join(KEY_FILE_NAME);
        let certificate_path = dir.join(CERTIFICATE_FILE_NAME);
        let key_pem = read_if_exists(&key_path)?;
        let certificate_pem = read_if_exists(&certificate_path)?;
        match (key_pem, certificate_pem) {
            (Some(key_pem), Some(certificate_pem)) => {
                Identity::from_pem(&key_path, &key_pem, &certificate_path, &certificate_pem)
            }
            (Some(key_pem), None) => {
                tracing::warn!(path = %certificate_path.display(), "TLS certificate missing; remaking it from the existing key (the pin stays the same)");
                let key_pair = parse_key_pair(&key_path, &key_pem)?;
                let certificate = self_signed_certificate(&key_pair, name)?;
                write_private_file(dir, CERTIFICATE_FILE_NAME, certificate.pem().as_bytes())?;
                Identity::from_parts(certificate.der().to_vec(), key_pair.serialize_der())
            }
            (None, Some(_)) => Err(IdentityError::Invalid {
                path: key_path,
                reason: "the certificate exists but its key is missing".to_owned(),
            }),
            (None, None) => {
                // Owner-only whatever the umask, like everything in the data dir.
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| IdentityError::Write { path: dir.to_owned(), source })?;
                let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|error| IdentityError::Generate(error.to_string()))?;
                let certificate = self_signed_certificate(&key_pair, name)?;
                // Key first: a crash before the certificate is written is repaired above.
                write_private_file(dir, KEY_FILE_NAME, key_pair.serialize_pem().as_bytes())?;
                write_private_file(dir, CERTIFICATE_FILE_NAME, certificate.pem().as_bytes())?;
                let identity = Identity::from_parts(certificate.der().to_vec(), key_pair.serialize_der())?;
                tracing::info!(pin = %identity.pin, dir = %dir.display(), "created a new TLS identity");
                Ok(identity)
            }
        }
    }

    /// Loads an existing identity; never creates one (used by `edgenode status`).
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let key_path = dir.join(KEY_FILE_NAME);
        let certificate_path = dir.join(CERTIFICATE_FILE_NAME);
        let missing = || IdentityError::Missing { dir: dir.to_owned() };
        let key_pem = read_if_exists(&key_path)?.ok_or_else(missing)?;
        let certificate_pem = read_if_exists(&certificate_path)?.ok_or_else(missing)?;
        Identity::from_pem(&key_path, &key_pem, &certificate_path, &certificate_pem)
    }

    fn from_pem(
        key_path: &Path,
        key_pem: &[u8],
        certificate_path: &Path,
        certificate_pem: &[u8],
    ) -> Result<Identity, IdentityError> {
        let key_pair = parse_key_pair(key_path, key_pem)?;
        let certificate = CertificateDer::from_pem_slice(certificate_pem)
            .map_err(|error| IdentityError::Invalid { path: certificate_path.to_owned(), reason: error.to_string() })?;
        let identity = Identity::from_parts(certificate.to_vec(), key_pair.serialize_der()).map_err(|_| {
            IdentityError::Invalid {
                path: certificate_path.to_owned(),
                reason: "not a well-formed X.509 certificate".to_owned(),
            }
        })?;
        // A certificate for another key would make every handshake fail; say so now.
        if identity.pin != spki_pin(&key_pair.public_key_der()) {
            return Err(IdentityError::Invalid {
                path: certificate_path.to_owned(),
                reason: format!("the certificate does not belong to the key in {}", key_path.display()),
            });
        }
        warn_if_readable_by_others(key_path);
        Ok(identity)
    }

    fn from_parts(certificate_der: Vec<u8>, private_key_der: Vec<u8>) -> Result<Identity, IdentityError> {
        let pin = spki_pin_of_certificate(&certificate_der)
            .ok_or_else(|| IdentityError::Generate("the certificate has no SubjectPublicKeyInfo".to_owned()))?;
        Ok(Identity { certificate_der, private_key_der, pin })
    }

    pub(crate) fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.certificate_der.clone())]
    }

    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.private_key_der.clone()))
    }

    /// A QUIC endpoint configuration whose stateless-reset key and connection-id key
    /// are derived from the node's private key, so they are the same across restarts.
    /// A restarted node then recognises the connection ids of its previous life and
    /// answers their packets with a valid stateless reset, so peers and phones drop
    /// those dead connections at their next packet instead of waiting out the idle
    /// timeout. (quinn's defaults are random per start: the packets are dropped as
    /// foreign and no reset is sent.)
    pub(crate) fn quic_endpoint_config(&self) -> quinn::EndpointConfig {
        let derive = |purpose: &[u8]| {
            let mut hasher = Sha256::new();
            hasher.update(purpose);
            hasher.update(&self.private_key_der);
            hasher.finalize()
        };
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(b"edgenode/quic-stateless-reset\0"));
        let cid_secret = derive(b"edgenode/quic-connection-ids\0");
        let cid_key = u64::from_le_bytes(cid_secret[..8].try_into().expect("a SHA-256 has 8 bytes"));
        let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
        config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        config
    }
}

pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Read { path: path.to_owned(), source }),
    }
}

fn parse_key_pair(path: &Path, pem: &[u8]) -> Result<rcgen::KeyPair, IdentityError> {
    let invalid = |reason: String| IdentityError::Invalid { path: path.to_owned(), reason };
    let pem = std::str::from_utf8(pem).map_err(|_| invalid("not PEM text".to_owned()))?;
    rcgen::KeyPair::from_pem(pem).map_err(|error| invalid(error.to_string()))
}

fn self_signed_certificate(key_pair: &rcgen::KeyPair, name: &str) -> Result<rcgen::Certificate, IdentityError> {
    let mut subject_alt_names = Vec::new();
    // A host name that is not a valid DNS name (spaces, non-ASCII) is left out rather
    // than refusing to start: clients trust the pin, not the name.
    if rcgen::Ia5String::try_from(name).is_ok() && !name.is_empty() {
        subject_alt_names.push(name.to_owned());
        subject_alt_names.push(format!("{name}.local"));
    }
    subject_alt_names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
    let mut params =
        rcgen::CertificateParams::new(subject_alt_names).map_err(|error| IdentityError::Generate(error.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, if name.is_empty() { "edgenode" } else { name });
    // Devices without a real-time clock boot in 1970; a validity starting long ago
    // and ending far away keeps clients that check dates working. The pin is the trust.
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    params.self_signed(key_pair).map_err(|error| IdentityError::Generate(error.to_string()))
}

/// Writes `dir/file_name` with mode 0600 so that a crash never leaves half a file:
/// temp file, fsync, rename, fsync the directory.
pub(crate) fn write_private_file(dir: &Path, file_name: &str, contents: &[u8]) -> Result<(), IdentityError> {
    let path = dir.join(file_name);
    let temp_path = dir.join(format!(".{file_name}.tmp"));
    let write_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| IdentityError::Write { path, source }
    };
    // A stale temp file from a crash may carry other permissions; start afresh.
    match fs::remove_file(&temp_path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(write_error(&temp_path)(error));
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(write_error(&temp_path))?;
    file.write_all(contents).map_err(write_error(&temp_path))?;
    file.sync_all().map_err(write_error(&temp_path))?;
    drop(file);
    fs::rename(&temp_path, &path).map_err(write_error(&path))?;
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(write_error(&dir.to_owned()))?;
    Ok(())
}

pub(crate) fn warn_if_readable_by_others(key_path: &Path) {
    if let Ok(metadata) = fs::metadata(key_path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %key_path.display(), "TLS private key is readable by other users; run chmod 600 on it");
        }
    }
}

pub(crate) fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that accepts exactly a server whose certificate's SPKI pin
/// is `pin` (`sha256/…`), whatever its name or dates; handshake signatures are still
/// verified against that certificate's key.
pub fn pinned_client_config(pin: String, alpn: Vec<Vec<u8>>) -> rustls::ClientConfig {
    let provider = ring_provider();
    let verifier = PinVerifier::new(provider.clone(), move |presented| presented == pin);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider supports TLS 1.3 and 1.2")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    config
}

/// The one certificate verifier of the node, for servers (browsers' pinned clients,
/// siblings) and for clients (siblings under mutual TLS): a certificate is accepted
/// when `admit` approves its SPKI pin, whatever its names or dates. Signatures over
/// the handshake are always checked against the presented certificate's key, so a pin
/// cannot be claimed by someone who merely copied the certificate.
pub(crate) struct PinVerifier {
    admit: Box<dyn Fn(&str) -> bool + Send + Sync>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for PinVerifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PinVerifier").finish_non_exhaustive()
    }
}

impl PinVerifier {
    pub(crate) fn new(provider: Arc<CryptoProvider>, admit: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        PinVerifier { admit: Box::new(admit), provider }
    }

    fn check(&self, certificate: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match spki_pin_of_certificate(certificate) {
            Some(pin) if (self.admit)(&pin) => Ok(()),
            Some(_) => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)),
            None => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)),
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The pin of a certificate: `sha256/` + base64 of the SHA-256 of its
/// SubjectPublicKeyInfo, as shown by `edgenode status`, mDNS TXT and QR codes.
/// `None` when `certificate_der` is not a well-formed X.509 certificate.
pub fn spki_pin_of_certificate(certificate_der: &[u8]) -> Option<String> {
    spki_of_certificate(certificate_der).map(spki_pin)
}

/// The pin of a DER SubjectPublicKeyInfo.
pub fn spki_pin(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    format!("sha256/{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Finds the SubjectPublicKeyInfo inside an X.509 certificate by walking its DER:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
/// signature, issuer, validity, subject, subjectPublicKeyInfo, … }, … }
fn spki_of_certificate(certificate_der: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_element(certificate_der)?;
    let (tbs, _) = der_element(der_contents(certificate)?)?;
    let mut rest = der_contents(tbs)?;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.1;
    }
    for _ in 0..5 {
        rest = der_element(rest)?.1; // serial, signature, issuer, validity, subject
    }
    let (spki, _) = der_element(rest)?;
    (spki.first() == Some(&0x30)).then_some(spki)
}

/// Splits one DER element (tag, length, contents) off the front of `input`.
fn der_element(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let length_byte = *input.get(1)?;
    let (length, header_len) = if length_byte < 0x80 {
        (length_byte as usize, 2)
    } else {
        let n_length_bytes = (length_byte & 0x7f) as usize;
        if n_length_bytes == 0 || n_length_bytes > 4 {
            return None;
        }
        let length_bytes = input.get(2..2 + n_length_bytes)?;
        let length = length_bytes.iter().fold(0usize, |acc, byte| (acc << 8) | *byte as usize);
        (length, 2 + n_length_bytes)
    };
    let end = header_len.checked_add(length)?;
    Some((input.get(..end)?, &input[end..]))
}

fn der_contents(element: &[u8]) -> Option<&[u8]> {
    let length_byte = *element.get(1)?;
    let header_len = if length_byte < 0x80 { 2 } else { 2 + (length_byte & 0x7f) as usize };
    element.get(header_len..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn identity_is_created_once_and_kept_private() {
        let dir = TempDir::new("identity");
        let created = Identity::load_or_create(dir.path(), "garden").unwrap();
        let loaded = Identity::load_or_create(dir.path(), "garden").unwrap();
        assert_eq!(created.pin, loaded.pin);
        assert_eq!(created.certificate_der, loaded.certificate_der);
        assert_eq!(created.private_key_der, loaded.private_key_der);
        assert_eq!(Identity::load(dir.path()).unwrap().pin, created.pin);
        assert_eq!(mode_of(&dir.path().join(KEY_FILE_NAME)), 0o600);
        assert_eq!(mode_of(&dir.path().join(CERTIFICATE_FILE_NAME)), 0o600);
        assert!(created.pin.starts_with("sha256/"));
        assert!(!format!("{created:?}").contains("private_key"));
    }

    #[test]
    fn the_pin_is_the_hash_of_the_key() {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let certificate = self_signed_certificate(&key_pair, "garden").unwrap();
        assert_eq!(spki_pin_of_certificate(certificate.der()), Some(spki_pin(&key_pair.public_key_der())));

        let dir = TempDir::new("pin");
        let identity = Identity::load_or_create(dir.path(), "garden").unwrap();
        let key_pem = fs::read_to_string(dir.path().join(KEY_FILE_NAME)).unwrap();
        let stored_key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(identity.pin, spki_pin(&stored_key.public_key_der()));
    }

    #[test]
    fn a_lost_certificate_is_remade_with_the_same_pin() {
        let dir = TempDir::new("lost-certificate");
        let created = Identity::load_or_create(dir.path(), "garden").unwrap();
        fs::remove_file(dir.path().join(CERTIFICATE_FILE_NAME)).unwrap();
        assert!(matches!(Identity::load(dir.path()), Err(IdentityError::Missing { .. })));
        let remade = Identity::load_or_create(dir.path(), "garden").unwrap();
        assert_eq!(remade.pin, created.pin);
    }

    #[test]
    fn broken_or_missing_identities_are_reported() {
        let dir = TempDir::new("broken");
        assert!(matches!(Identity::load(dir.path()), Err(IdentityError::Missing { .. })));
        Identity::load_or_create(dir.path(), "garden").unwrap();
        fs::write(dir.path().join(KEY_FILE_NAME), "not a key").unwrap();
        let error = Identity::load_or_create(dir.path(), "garden").unwrap_err();
        assert!(matches!(error, IdentityError::Invalid { .. }), "{error}");

        // A certificate that belongs to another key.
        let other = TempDir::new("broken-other");
        Identity::load_or_create(other.path(), "other").unwrap();
        fs::copy(other.path().join(KEY_FILE_NAME), dir.path().join(KEY_FILE_NAME)).unwrap();
        let error = Identity::load(dir.path()).unwrap_err();
        assert!(error.to_string().contains("does not belong to the key"), "{error}");
    }

    #[test]
    fn names_that_are_not_dns_names_still_get_a_certificate() {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(self_signed_certificate(&key_pair, "Café über alles").is_ok());
        assert!(self_signed_certificate(&key_pair, "").is_ok());
    }
}
