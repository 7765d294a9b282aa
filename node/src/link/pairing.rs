//! Pairing: a node shows a one-time code, another joins with it, and both learn each
//! other's pin, node id and address. `PairingState` is the sans-IO part (codes,
//! expiry, failures, rate limit); `serve` and `join` speak `edgenode-pair/1`.
//!
//! The proof. The joiner dials without a pin, so TLS alone proves nothing about who
//! answered. Each side proves it knows the code with
//! `HMAC-SHA256(code, "edgenode-pair/1\0" || len-prefixed(role, server_pin,
//! client_pin, sender_node_id, sender_address))`, where the pins are those of the TLS
//! handshake both sides just verified signatures for. The code never crosses the
//! wire; a machine in the middle has to terminate TLS with its own key, which changes
//! a pin, so a proof it relays does not verify. The roles (`join`, `accept`) differ so
//! one side's proof cannot be reflected as the other's.
//!
//! Limits: a code lives `PAIRING_CODE_LIFETIME_MS` and is used once; it is burnt after
//! `PAIRING_FAILURES_MAX` wrong proofs; unpinned handshakes are admitted only while a
//! code is outstanding and at most `PAIRING_HANDSHAKES_PER_MINUTE_MAX` a minute; one
//! pairing conversation runs at a time. Someone who can answer at the address the
//! joiner dials gets one proof to attack offline within the code's lifetime (50 bits);
//! a PAKE would remove that, at the cost of a new dependency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::crypto::{self, hmac_sha256, macs_equal};
use super::{lock, Shared, ALPN_PAIR};
use crate::core::model::NodeId;
use crate::identity::Identity;

pub const PAIRING_CODE_LIFETIME_MS: u64 = 10 * 60_000;
pub const PAIRING_FAILURES_MAX: u32 = 3;
pub const PAIRING_HANDSHAKES_PER_MINUTE_MAX: u32 = 10;
/// Characters of a code (5 bits each), shown as two groups of five.
const CODE_CHARACTERS: usize = 10;
/// Crockford's base32: no I, L, O or U, so a code read aloud is unambiguous.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ADDRESS_BYTES_MAX: usize = 255;
const MESSAGE_BYTES_MAX: usize = 1 + 8 + 1 + ADDRESS_BYTES_MAX + 32;
const PROTOCOL_VERSION: u8 = 1;
const CONVERSATION_TIMEOUT_MS: u64 = 10_000;

const STATUS_OK: u8 = 1;
const STATUS_WRONG_CODE: u8 = 2;
const STATUS_NO_CODE: u8 = 3;
const STATUS_MALFORMED: u8 = 4;

/// A sibling learned by pairing; persisting it is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiblingInfo {
    pub node_id: NodeId,
    pub pin: String,
    pub address: String,
}

/// A one-time pairing code, as shown to a person (`ABCDE-FGHJK`).
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode(String);

impl PairingCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PairingCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::fmt::Debug for PairingCode {
    // A code is a secret while it is outstanding.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PairingCode(…)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    #[error("the pairing code is wrong; check it and try again (after {PAIRING_FAILURES_MAX} wrong tries the code is void and a new one must be made with `edgenode peer pair`)")]
    WrongCode,
    #[error("no pairing code is outstanding on that node (it expired, was used, or was voided); make a new one with `edgenode peer pair`")]
    NoCode,
    #[error("the other node did not prove it knows the code: it may not be the node you meant; do not pair with it")]
    ServerUnproven,
    #[error("cannot reach {address} for pairing: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("pairing with {address} failed: {reason}")]
    Protocol { address: String, reason: String },
}

#[derive(Debug)]
struct Outstanding {
    /// Normalised (upper case, no separator): the HMAC key.
    code: String,
    expires_at: u64,
    failures: u32,
}

/// Codes, expiry, failures and the handshake rate limit; time and randomness are
/// passed in.
#[derive(Debug, Default)]
pub struct PairingState {
    outstanding: Option<Outstanding>,
    window_started_at: u64,
    handshakes_in_window: u32,
    paired: Vec<SiblingInfo>,
}

impl PairingState {
    /// Makes a new code (replacing any outstanding one), valid for
    /// `PAIRING_CODE_LIFETIME_MS` from `now`, from 50 bits of `random`.
    pub fn start_pairing(&mut self, now: u64, random: [u8; 8]) -> PairingCode {
        let mut bits = u64::from_le_bytes(random);
        let mut code = String::with_capacity(CODE_CHARACTERS);
        for _ in 0..CODE_CHARACTERS {
            code.push(CODE_ALPHABET[(bits & 31) as usize] as char);
            bits >>= 5;
        }
        let shown = format!("{}-{}", &code[..5], &code[5..]);
        self.outstanding =
            Some(Outstanding { code, expires_at: now.saturating_add(PAIRING_CODE_LIFETIME_MS), failures: 0 });
        PairingCode(shown)
    }

    pub fn cancel(&mut self) {
        self.outstanding = None;
    }

    /// A code is outstanding and unexpired.
    pub fn is_open(&mut self, now: u64) -> bool {
        if self.outstanding.as_ref().is_some_and(|outstanding| now >= outstanding.expires_at) {
            self.outstanding = None;
        }
        self.outstanding.is_some()
    }

    /// Whether a handshake with a key not on the sibling list may proceed (to speak
    /// `edgenode-pair/1`): only while a code is open, within the rate limit.
    pub fn admit_unpinned(&mut self, now: u64) -> bool {
        if !self.is_open(now) {
            return false;
        }
        if now.saturating_sub(self.window_started_at) >= 60_000 {
            self.window_started_at = now;
            self.handshakes_in_window = 0;
        }
        if self.handshakes_in_window >= PAIRING_HANDSHAKES_PER_MINUTE_MAX {
            return false;
        }
        self.handshakes_in_window += 1;
        true
    }

    /// Checks a joiner's proof: `expected_proof(code)` is what the joiner must have
    /// sent. On success the code is used up and returned (to make our own proof).
    pub fn check_proof(
        &mut self,
        now: u64,
        proof: &[u8; 32],
        expected_proof: impl Fn(&[u8]) -> [u8; 32],
    ) -> Result<String, PairingError> {
        if !self.is_open(now) {
            return Err(PairingError::NoCode);
        }
        let outstanding = self.outstanding.as_mut().expect("open");
        if macs_equal(&expected_proof(outstanding.code.as_bytes()), proof) {
            return Ok(self.outstanding.take().expect("open").code);
        }
        outstanding.failures += 1;
        if outstanding.failures >= PAIRING_FAILURES_MAX {
            tracing::warn!("pairing code voided after {PAIRING_FAILURES_MAX} wrong tries");
            self.outstanding = None;
        }
        Err(PairingError::WrongCode)
    }

    /// Siblings that joined through this node since the last call.
    pub fn take_paired(&mut self) -> Vec<SiblingInfo> {
        std::mem::take(&mut self.paired)
    }
}

/// Upper case, separators dropped, and the letters Crockford reads as digits mapped.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|character| !matches!(character, '-' | ' ' | '\t'))
        .map(|character| match character.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

const ROLE_JOIN: &[u8] = b"join";
const ROLE_ACCEPT: &[u8] = b"accept";

fn proof(code: &[u8], role: &[u8], server_pin: &str, client_pin: &str, node_id: NodeId, address: &str) -> [u8; 32] {
    let node_id = node_id.0.to_be_bytes();
    let mut message = Vec::with_capacity(256);
    for part in [role, server_pin.as_bytes(), client_pin.as_bytes(), &node_id, address.as_bytes()] {
        message.extend_from_slice(&(part.len() as u16).to_be_bytes());
        message.extend_from_slice(part);
    }
    hmac_sha256(code, &[b"edgenode-pair/1\0", &message])
}

/// `[node id u64][address length u8][address][proof 32]`.
fn encode_announcement(node_id: NodeId, address: &str, proof: &[u8; 32]) -> Vec<u8> {
    let address = truncate_address(address);
    let mut bytes = Vec::with_capacity(MESSAGE_BYTES_MAX);
    bytes.extend_from_slice(&node_id.0.to_be_bytes());
    bytes.push(address.len() as u8);
    bytes.extend_from_slice(address.as_bytes());
    bytes.extend_from_slice(proof);
    bytes
}

fn decode_announcement(bytes: &[u8]) -> Option<(NodeId, String, [u8; 32])> {
    let node_id = NodeId(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?));
    let address_len = *bytes.get(8)? as usize;
    let address = std::str::from_utf8(bytes.get(9..9 + address_len)?).ok()?.to_owned();
    let proof: [u8; 32] = bytes.get(9 + address_len..)?.try_into().ok()?;
    Some((node_id, address, proof))
}

fn truncate_address(address: &str) -> &str {
    let mut end = address.len().min(ADDRESS_BYTES_MAX);
    while !address.is_char_boundary(end) {
        end -= 1;
    }
    &address[..end]
}

/// The server side of one pairing connection (its TLS handshake done).
pub(super) async fn serve(shared: Shared, connection: quinn::Connection) {
    let Ok(_busy) = shared.pairing_busy.clone().try_acquire_owned() else {
        connection.close(super::close_code::BUSY.into(), b"another pairing is in progress");
        return;
    };
    let remote = connection.remote_address();
    let outcome = tokio::time::timeout(
        Duration::from_millis(CONVERSATION_TIMEOUT_MS),
        converse_as_server(&shared, &connection, remote),
    )
    .await;
    match outcome {
        Ok(Ok(sibling)) => {
            tracing::info!(node_id = %sibling.node_id, pin = %sibling.pin, address = %sibling.address, "paired with a new sibling");
            lock(&shared.pairing).paired.push(sibling);
            // Let the joiner read our answer and close first.
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        }
        Ok(Err(reason)) => {
            tracing::warn!(%remote, %reason, "pairing attempt failed");
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        }
        Err(_) => tracing::warn!(%remote, "pairing attempt timed out"),
    }
    connection.close(super::close_code::DONE.into(), b"");
}

async fn converse_as_server(
    shared: &Shared,
    connection: &quinn::Connection,
    remote: SocketAddr,
) -> Result<SiblingInfo, String> {
    let client_pin = crypto::remote_pin(connection).ok_or("the joiner presented no certificate")?;
    let (mut send, mut recv) = connection.accept_bi().await.map_err(|error| error.to_string())?;
    let request = recv.read_to_end(MESSAGE_BYTES_MAX + 1).await.map_err(|error| error.to_string())?;
    let parsed = match request.split_first() {
        Some((&PROTOCOL_VERSION, rest)) => decode_announcement(rest),
        _ => None,
    };
    let Some((node_id, address, client_proof)) = parsed else {
        let _ = send.write_all(&[STATUS_MALFORMED]).await;
        let _ = send.finish();
        return Err("malformed join request".to_owned());
    };
    let server_pin = &shared.identity.pin;
    let checked = lock(&shared.pairing).check_proof(crate::os::now_ms(), &client_proof, |code| {
        proof(code, ROLE_JOIN, server_pin, &client_pin, node_id, &address)
    });
    let code = match checked {
        Ok(code) => code,
        Err(error) => {
            let status = if error == PairingError::WrongCode { STATUS_WRONG_CODE } else { STATUS_NO_CODE };
            let _ = send.write_all(&[status]).await;
            let _ = send.finish();
            return Err(error.to_string());
        }
    };
    let own_address = &shared.advertised_address;
    let own_proof = proof(code.as_bytes(), ROLE_ACCEPT, server_pin, &client_pin, shared.node_id, own_address);
    let mut reply = vec![STATUS_OK];
    reply.extend(encode_announcement(shared.node_id, own_address, &own_proof));
    send.write_all(&reply).await.map_err(|error| error.to_string())?;
    let _ = send.finish();
    Ok(SiblingInfo { node_id, pin: client_pin, address: dialable_address(&address, remote) })
}

/// Addresses another node can dial this node's peer endpoint at: the bound address,
/// or when it is bound to every address, those of the host's interfaces that are up
/// (not loopback, not link-local; IPv4 first), loopback when there are none.
pub fn dialable_addresses(bound: SocketAddr) -> Vec<String> {
    if !bound.ip().is_unspecified() {
        return vec![bound.to_string()];
    }
    let both_families = bound.is_ipv6();
    let mut addresses: Vec<std::net::IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|interface| interface.is_oper_up() && !interface.is_loopback() && !interface.is_link_local())
        .map(|interface| interface.ip())
        .filter(|ip| ip.is_ipv4() || both_families)
        .collect();
    addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    addresses.dedup();
    if addresses.is_empty() {
        addresses.push(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addresses.into_iter().map(|ip| SocketAddr::new(ip, bound.port()).to_string()).collect()
}

/// Where a joiner can be dialled: the address it announced, with the address it
/// dialled from when it announced none or one on every interface (`[::]:9444`), which
/// the other node cannot dial. `join` dials from the peer endpoint itself, so the
/// remote port is its peer port when none was announced.
pub fn dialable_address(announced: &str, remote: SocketAddr) -> String {
    let remote_ip = match remote.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        ip => ip,
    };
    if announced.is_empty() {
        return SocketAddr::new(remote_ip, remote.port()).to_string();
    }
    match announced.parse::<SocketAddr>() {
        Ok(announced) if announced.ip().is_unspecified() => SocketAddr::new(remote_ip, announced.port()).to_string(),
        _ => announced.to_owned(),
    }
}

/// Who is joining, as the pairing conversation needs it.
struct Joiner<'a> {
    endpoint: &'a quinn::Endpoint,
    identity: &'a Identity,
    node_id: NodeId,
    advertised_address: &'a str,
    transport: Arc<quinn::TransportConfig>,
}

/// The joiner's side from the running peer endpoint (`PeerDriver::join`).
pub(super) async fn join(shared: &Shared, address: &str, code: &str) -> Result<SiblingInfo, PairingError> {
    let joiner = Joiner {
        endpoint: &shared.endpoint,
        identity: &shared.identity,
        node_id: shared.node_id,
        advertised_address: &shared.advertised_address,
        transport: shared.transport.clone(),
    };
    join_as(&joiner, address, code).await
}

/// The joiner's side from a temporary client endpoint, for when this node's peer
/// endpoint is not running (a CLI). `advertised_address` is where the other node will
/// reach this one's peer endpoint; it must not be empty here, since the temporary
/// endpoint's port means nothing afterwards.
pub async fn join_standalone(
    identity: &Identity,
    node_id: NodeId,
    advertised_address: &str,
    address: &str,
    code: &str,
) -> Result<SiblingInfo, PairingError> {
    let unreachable = |reason: String| PairingError::Unreachable { address: address.to_owned(), reason };
    let remote = resolve(address).await?;
    let local: SocketAddr = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid address");
    let endpoint = quinn::Endpoint::client(local).map_err(|error| unreachable(error.to_string()))?;
    let transport = Arc::new(
        super::transport_config(&super::PeerLimits::default()).map_err(|error| unreachable(error.to_string()))?,
    );
    let joiner = Joiner { endpoint: &endpoint, identity, node_id, advertised_address, transport };
    let result = join_as(&joiner, address, code).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}

async fn resolve(address: &str) -> Result<SocketAddr, PairingError> {
    let unreachable = |reason: String| PairingError::Unreachable { address: address.to_owned(), reason };
    tokio::net::lookup_host(address)
        .await
        .map_err(|error| unreachable(error.to_string()))?
        .next()
        .ok_or_else(|| unreachable("the name has no address".to_owned()))
}

/// Dials `address` without a pin, proves the code and checks the other node's proof.
/// Returns the new sibling; persisting it is the caller's job.
async fn join_as(joiner: &Joiner<'_>, address: &str, code: &str) -> Result<SiblingInfo, PairingError> {
    let unreachable = |reason: String| PairingError::Unreachable { address: address.to_owned(), reason };
    let protocol = |reason: String| PairingError::Protocol { address: address.to_owned(), reason };
    let socket_address = resolve(address).await?;
    let config = crypto::client_config(joiner.identity, None, ALPN_PAIR, joiner.transport.clone())
        .map_err(|error| unreachable(error.to_string()))?;
    let connecting = joiner
        .endpoint
        .connect_with(config, socket_address, "edgenode")
        .map_err(|error| unreachable(error.to_string()))?;
    let connection = tokio::time::timeout(Duration::from_millis(CONVERSATION_TIMEOUT_MS), connecting)
        .await
        .map_err(|_| unreachable("handshake timed out".to_owned()))?
        .map_err(|error| unreachable(error.to_string()))?;
    let result = tokio::time::timeout(
        Duration::from_millis(CONVERSATION_TIMEOUT_MS),
        converse_as_joiner(joiner, &connection, code),
    )
    .await
    .unwrap_or_else(|_| Err(protocol("timed out".to_owned())))
    .map(|(node_id, pin)| SiblingInfo { node_id, pin, address: address.to_owned() });
    connection.close(super::close_code::DONE.into(), b"");
    result
}

async fn converse_as_joiner(
    joiner: &Joiner<'_>,
    connection: &quinn::Connection,
    code: &str,
) -> Result<(NodeId, String), PairingError> {
    let protocol = |reason: String| PairingError::Protocol { address: connection.remote_address().to_string(), reason };
    let code = normalise_code(code);
    let server_pin = crypto::remote_pin(connection).ok_or_else(|| protocol("no server certificate".to_owned()))?;
    let client_pin = &joiner.identity.pin;
    let own_address = truncate_address(joiner.advertised_address);
    let own_proof = proof(code.as_bytes(), ROLE_JOIN, &server_pin, client_pin, joiner.node_id, own_address);
    let mut request = vec![PROTOCOL_VERSION];
    request.extend(encode_announcement(joiner.node_id, own_address, &own_proof));
    let (mut send, mut recv) = connection.open_bi().await.map_err(|error| protocol(error.to_string()))?;
    send.write_all(&request).await.map_err(|error| protocol(error.to_string()))?;
    let _ = send.finish();
    let reply = recv.read_to_end(MESSAGE_BYTES_MAX + 1).await.map_err(|error| protocol(error.to_string()))?;
    match reply.split_first() {
        Some((&STATUS_OK, rest)) => {
            let (node_id, address, server_proof) =
                decode_announcement(rest).ok_or_else(|| protocol("malformed answer".to_owned()))?;
            let expected = proof(code.as_bytes(), ROLE_ACCEPT, &server_pin, client_pin, node_id, &address);
            if !macs_equal(&expected, &server_proof) {
                return Err(PairingError::ServerUnproven);
            }
            Ok((node_id, server_pin))
        }
        Some((&STATUS_WRONG_CODE, _)) => Err(PairingError::WrongCode),
        Some((&STATUS_NO_CODE, _)) => Err(PairingError::NoCode),
        _ => Err(protocol("the node refused the request".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: [u8; 8] = [7, 1, 2, 3, 4, 5, 6, 7];

    fn joiner_proof(code: &str) -> [u8; 32] {
        proof(normalise_code(code).as_bytes(), ROLE_JOIN, "pin-a", "pin-b", NodeId(2), "b:1")
    }

    fn expected(code: &[u8]) -> [u8; 32] {
        proof(code, ROLE_JOIN, "pin-a", "pin-b", NodeId(2), "b:1")
    }

    #[test]
    fn an_unspecified_or_missing_announced_address_becomes_where_the_joiner_dialled_from() {
        let remote: SocketAddr = "[::ffff:192.168.1.20]:9444".parse().unwrap();
        assert_eq!(dialable_address("[::]:8444", remote), "192.168.1.20:8444");
        assert_eq!(dialable_address("0.0.0.0:8444", remote), "192.168.1.20:8444");
        assert_eq!(dialable_address("", remote), "192.168.1.20:9444");
        assert_eq!(dialable_address("box-2.local:8444", remote), "box-2.local:8444");
        assert_eq!(dialable_address("10.0.0.7:8444", remote), "10.0.0.7:8444");
        let remote6: SocketAddr = "[fd00::7]:9444".parse().unwrap();
        assert_eq!(dialable_address("[::]:8444", remote6), "[fd00::7]:8444");
    }

    #[test]
    fn a_code_is_used_once() {
        let mut state = PairingState::default();
        let code = state.start_pairing(1_000, RANDOM);
        assert_eq!(code.as_str().len(), 11);
        assert!(state.check_proof(2_000, &joiner_proof(&code.as_str().to_lowercase()), expected).is_ok());
        assert_eq!(state.check_proof(2_000, &joiner_proof(code.as_str()), expected), Err(PairingError::NoCode));
    }

    #[test]
    fn a_code_is_burnt_after_three_failures() {
        let mut state = PairingState::default();
        let code = state.start_pairing(1_000, RANDOM);
        for _ in 0..PAIRING_FAILURES_MAX {
            assert_eq!(state.check_proof(2_000, &joiner_proof("WRONG-CODE0"), expected), Err(PairingError::WrongCode));
        }
        assert_eq!(state.check_proof(2_000, &joiner_proof(code.as_str()), expected), Err(PairingError::NoCode));
    }

    #[test]
    fn a_code_expires_and_limits_handshakes() {
        let mut state = PairingState::default();
        assert!(!state.admit_unpinned(0), "no code, no unpinned handshakes");
        let code = state.start_pairing(1_000, RANDOM);
        for _ in 0..PAIRING_HANDSHAKES_PER_MINUTE_MAX {
            assert!(state.admit_unpinned(1_000));
        }
        assert!(!state.admit_unpinned(1_000));
        assert!(state.admit_unpinned(61_000), "a new minute, a new budget");
        let late = 1_000 + PAIRING_CODE_LIFETIME_MS;
        assert!(!state.admit_unpinned(late));
        assert_eq!(state.check_proof(late, &joiner_proof(code.as_str()), expected), Err(PairingError::NoCode));
    }

    #[test]
    fn proofs_bind_roles_and_pins() {
        let code = b"ABCDE12345";
        let join = proof(code, ROLE_JOIN, "pin-a", "pin-b", NodeId(2), "b:1");
        assert_ne!(join, proof(code, ROLE_ACCEPT, "pin-a", "pin-b", NodeId(2), "b:1"));
        assert_ne!(join, proof(code, ROLE_JOIN, "pin-m", "pin-b", NodeId(2), "b:1"));
        assert_ne!(join, proof(code, ROLE_JOIN, "pin-a", "pin-m", NodeId(2), "b:1"));
        assert_ne!(join, proof(b"ABCDE12346", ROLE_JOIN, "pin-a", "pin-b", NodeId(2), "b:1"));
        assert_eq!(normalise_code("abcde-fghjk"), "ABCDEFGHJK");
        assert_eq!(normalise_code("O1L-I"), "0111");
    }
}
