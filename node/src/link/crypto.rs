//! TLS for the peer endpoint: mutual TLS where each side accepts exactly the keys on
//! its sibling list (by SPKI pin), the rustls and quinn configurations built on it,
//! and HMAC-SHA256 (ring's) for the pairing proof.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

use super::pairing::PairingState;
use super::{PeerError, ALPN_PAIR, ALPN_PEER};
use crate::identity::{ring_provider, spki_pin_of_certificate, Identity, PinVerifier};

/// Which certificates a peer verifier lets in (by SPKI pin; see `tls::PinVerifier`).
#[derive(Debug)]
enum Admission {
    /// Exactly these pins.
    Pins(BTreeSet<String>),
    /// The sibling pins, plus any key while a pairing code is outstanding (the
    /// connection must then speak `edgenode-pair/1`; checked after the handshake).
    SiblingsOrPairing { pins: Arc<RwLock<BTreeSet<String>>>, pairing: Arc<Mutex<PairingState>> },
    /// Any well-formed certificate: only for a joiner dialling a node it has no pin
    /// for yet, where the pairing proof (bound to both pins) is the authentication.
    Any,
}

impl Admission {
    fn into_verifier(self, provider: Arc<CryptoProvider>) -> PinVerifier {
        PinVerifier::new(provider, move |pin| match &self {
            Admission::Pins(pins) => pins.contains(pin),
            Admission::SiblingsOrPairing { pins, pairing } => {
                crate::locking::read(pins).contains(pin)
                    || crate::locking::lock(pairing).admit_unpinned(crate::os::now_ms())
            }
            Admission::Any => true,
        })
    }
}

/// The peer endpoint's server side: TLS 1.3, a client certificate required, ALPN
/// `edgenode-peer/1`, `edgenode-pair/1` and `edgenode-neighbour/1`. `sibling_pins`
/// are every pin admitted (siblings and neighbours); which may use which protocol is
/// checked after the handshake. The set is read at each handshake, so pairing or a
/// trust change admits and drops keys without rebinding anything.
pub(super) fn server_config(
    identity: &Identity,
    sibling_pins: Arc<RwLock<BTreeSet<String>>>,
    pairing: Arc<Mutex<PairingState>>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, PeerError> {
    let provider = ring_provider();
    let verifier = Admission::SiblingsOrPairing { pins: sibling_pins, pairing }.into_verifier(provider.clone());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.certificate_chain(), identity.private_key())?;
    config.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_PAIR.to_vec(), super::neighbours::ALPN_NEIGHBOUR.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|error| PeerError::Quic(error.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(transport);
    Ok(server_config)
}

/// A client configuration that presents `identity` and accepts a server whose pin is
/// `pin` (a sibling), or any server when `pin` is `None` (a joiner; see `Admission::Any`).
pub(super) fn client_config(
    identity: &Identity,
    pin: Option<&str>,
    alpn: &[u8],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, PeerError> {
    let provider = ring_provider();
    let admission = match pin {
        Some(pin) => Admission::Pins(BTreeSet::from([pin.to_owned()])),
        None => Admission::Any,
    };
    let verifier = admission.into_verifier(provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.certificate_chain(), identity.private_key())?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|error| PeerError::Quic(error.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    client_config.transport_config(transport);
    Ok(client_config)
}

/// The pin of the other side of an established connection (its certificate was
/// verified during the handshake).
pub(super) fn remote_pin(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    spki_pin_of_certificate(chain.first()?)
}

/// The ALPN protocol negotiated on an established connection.
pub(super) fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    let data = connection.handshake_data()?;
    data.downcast::<quinn::crypto::rustls::HandshakeData>().ok()?.protocol
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `message_parts`.
pub(super) fn hmac_sha256(key: &[u8], message_parts: &[&[u8]]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&key);
    for part in message_parts {
        context.update(part);
    }
    context.sign().as_ref().try_into().expect("HMAC-SHA256 has 32 bytes")
}

/// Compares two MACs in time that does not depend on where they differ.
pub(super) fn macs_equal(left: &[u8; 32], right: &[u8; 32]) -> bool {
    left.iter().zip(right).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], &[b"Hi There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2, with the message in two parts.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], &[b"Test Using Larger Than Block-Size Key - Hash Key First"])),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let mac = hmac_sha256(b"k", &[b"m"]);
        let mut other = mac;
        other[31] ^= 1;
        assert!(macs_equal(&mac, &mac));
        assert!(!macs_equal(&mac, &other));
    }
}
