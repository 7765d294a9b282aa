//! What the node tells its operators about its siblings: the answers of
//! `GET /api/v1/node/peers`, `GET /api/v1/node/replication`, pairing and retiring.
//! The replication service builds them and the API serves them (api/ports.rs), and
//! neither may import the other, so the types live here; `/openapi.json` documents
//! them from these definitions (api/shapes.rs names them).

use std::collections::{BTreeMap, VecDeque};

use schemars::JsonSchema;
use serde::Serialize;

use super::trust::{TrustEvent, TrustNote, TrustTier};

/// A sibling this node replicates with (`peers` of `GET /api/v1/node`, public).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SiblingAddress {
    pub id: String,
    pub peer_address: String,
}

/// Replication figures for operators and tests (`GET /api/v1/node/replication`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReplicationStatus {
    pub node_id: String,
    pub peer_address: String,
    /// Live replicated records; `tombstones` apart.
    pub records: u64,
    pub tombstones: u64,
    /// The replication digest, 16 hex digits.
    pub digest: String,
    pub media_missing: u64,
    pub epoch: u64,
    pub log_end: u64,
    /// The replica's counters, as debug text.
    pub stats: String,
    pub peers: Vec<Peer>,
}

/// A sibling as `GET /api/v1/node/peers` (`edgenode peer list`) shows it: paired or
/// configured, or retired.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Peer {
    Sibling(SiblingPeer),
    Retired(RetiredPeer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiblingSource {
    /// `[peers] siblings` in the configuration.
    Config,
    /// `edgenode peer join`.
    Paired,
}

/// A configured or paired sibling, with its connection and counters.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SiblingPeer {
    pub node_id: String,
    pub address: Option<String>,
    pub pin: String,
    pub state: Connection,
    pub connected: bool,
    /// Since the last frame from it; null if never.
    pub last_contact_ms_ago: Option<u64>,
    /// Log entries it has not acknowledged; null before its first acknowledgement.
    pub lag_entries: Option<u64>,
    /// 0 to 100.
    pub trust: u8,
    #[schemars(with = "TrustTierShape")]
    pub trust_tier: TrustTier,
    /// Every event observed, by kind.
    #[schemars(with = "BTreeMap<TrustEventShape, u64>")]
    pub trust_events: BTreeMap<TrustEvent, u64>,
    /// The latest events that changed the score, newest last.
    #[schemars(with = "Vec<TrustNoteShape>")]
    pub trust_recent: VecDeque<TrustNote>,
    /// Its weight in placement; null when it is not placed on.
    pub placement_weight: Option<u8>,
    pub source: SiblingSource,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bad_frames: u64,
    pub frames_dropped: u64,
    pub connection_bytes_sent: u64,
    pub connection_bytes_received: u64,
}

/// `state` and `source` of a retired sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetiredMark {
    Retired,
}

/// A sibling an admin retired (`edgenode peer retire`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RetiredPeer {
    pub node_id: String,
    /// Its key's pin, when the node that retired it knew it.
    pub pin: Option<String>,
    pub state: RetiredMark,
    /// Always false.
    pub connected: bool,
    pub retired_at_ms: u64,
    /// The node whose admin retired it.
    pub retired_by: String,
    pub source: RetiredMark,
}

/// `POST /api/v1/node/peers/pair`: a one-time code for `edgenode peer join`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PairingCode {
    pub code: String,
    pub expires_in_seconds: u64,
    /// The first of `peer_addresses`; null when there is none.
    pub peer_address: Option<String>,
    pub peer_addresses: Vec<String>,
    pub node_id: String,
    pub pin: String,
}

/// `POST /api/v1/node/peers/{node_id}/retire`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PeerRetired {
    pub node_id: String,
    pub pin: Option<String>,
    pub retired_at_ms: u64,
    pub retired_by: String,
    /// It was retired before; nothing changed.
    pub already_retired: bool,
    pub siblings_left: u64,
}

// The JSON of the trust types (core/trust.rs), for the schema only.

#[allow(dead_code)] // a schema, never built
#[derive(JsonSchema)]
#[schemars(rename = "TrustTier")]
#[serde(rename_all = "snake_case")]
enum TrustTierShape {
    Trusted,
    Probation,
    Untrusted,
}

#[allow(dead_code)] // a schema, never built
#[derive(JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[schemars(rename = "TrustEvent")]
#[serde(rename_all = "snake_case")]
enum TrustEventShape {
    Verified,
    HashMismatch,
    BadFrame,
    RefusedPin,
    Timeout,
}

#[allow(dead_code)] // a schema, never built
#[derive(JsonSchema)]
#[schemars(rename = "TrustNote")]
struct TrustNoteShape {
    at_ms: u64,
    event: TrustEventShape,
    /// The score after the event.
    score: u8,
    detail: String,
}
