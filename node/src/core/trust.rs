//! Trust: what this node has seen each sibling do, as a score from 0 to 100 and the
//! reasons behind it. Trust is local (no node is told what another thinks of a third),
//! and it only ever comes from observed behaviour: exchanges that verified raise a
//! score slowly; bad hashes, bad frames, a wrong key at a sibling's address and
//! timeouts lower it quickly.
//!
//! Placement sees only the *tier* of a score (`TrustTier::placement_weight`), so a
//! score moving within a tier moves no data; crossing a tier boundary does (the
//! driver restarts replication with the new weights). An untrusted sibling gets no
//! replicas: no new users are placed on it and the shards it held are placed on the
//! others, which copy them from one another.
//!
//! Sans-IO: time comes in as milliseconds; the ledger is saved and loaded as JSON by
//! the caller.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::model::NodeId;
use super::replication::placement::TRUST_MAX;

/// The score of a sibling nothing is known about yet: trusted, with room to fall.
pub const SCORE_INITIAL: u8 = 80;
/// At or above: trusted (full placement weight).
pub const TRUSTED_AT: u8 = 60;
/// Below: untrusted (no replicas). Between the two: probation (half weight).
pub const UNTRUSTED_BELOW: u8 = 30;
/// A verified exchange raises a score by 1, at most once per this interval, so trust
/// lost in a burst of misbehaviour takes sustained good behaviour to win back (from
/// 0 to trusted again: an hour).
pub const RAISE_INTERVAL_MS: u64 = 60_000;
/// Timeouts lower a score at most once per this interval, and never below probation:
/// a sibling that is off for an hour is unreachable, not malicious.
pub const TIMEOUT_PENALTY_INTERVAL_MS: u64 = 60_000;
/// Recent events kept per sibling, for `edgenode peer list`.
pub const RECENT_EVENTS_MAX: usize = 8;
/// Characters of an event's detail kept.
const DETAIL_CHARS_MAX: usize = 200;

/// Something a sibling did, as this node observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustEvent {
    /// A frame applied, a media item whose hashes matched.
    Verified,
    /// Media bytes that did not match the SHA-256 they were sent as.
    HashMismatch,
    /// A frame that does not decode, is over its limit, or breaks the protocol.
    BadFrame,
    /// The sibling's address answered with a key that is not the sibling's pin.
    RefusedPin,
    /// A dial, handshake or fetch that ran out of time.
    Timeout,
}

impl TrustEvent {
    /// The change to a score: positive raises, negative lowers.
    pub fn delta(self) -> i16 {
        match self {
            TrustEvent::Verified => 1,
            TrustEvent::HashMismatch => -25,
            TrustEvent::BadFrame => -15,
            TrustEvent::RefusedPin => -10,
            TrustEvent::Timeout => -2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustTier {
    Trusted,
    Probation,
    Untrusted,
}

impl TrustTier {
    pub fn of(score: u8) -> TrustTier {
        if score >= TRUSTED_AT {
            TrustTier::Trusted
        } else if score >= UNTRUSTED_BELOW {
            TrustTier::Probation
        } else {
            TrustTier::Untrusted
        }
    }

    /// The weight placement gives a sibling (`placement::Sibling::trust`): a trusted
    /// sibling full, one on probation half (it wins fewer rendezvous), an untrusted
    /// one none (it holds nothing).
    pub fn placement_weight(self) -> u8 {
        match self {
            TrustTier::Trusted => TRUST_MAX,
            TrustTier::Probation => TRUST_MAX / 2,
            TrustTier::Untrusted => 0,
        }
    }
}

/// One observed event, kept for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustNote {
    pub at_ms: u64,
    pub event: TrustEvent,
    /// The score after the event.
    pub score: u8,
    pub detail: String,
}

/// What this node thinks of one sibling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTrust {
    pub score: u8,
    /// Every event ever observed, by kind (including those that changed nothing).
    pub counts: BTreeMap<TrustEvent, u64>,
    /// The latest events that changed the score, newest last.
    pub recent: VecDeque<TrustNote>,
    last_raised_ms: Option<u64>,
    last_timeout_penalty_ms: Option<u64>,
}

impl Default for PeerTrust {
    fn default() -> Self {
        PeerTrust {
            score: SCORE_INITIAL,
            counts: BTreeMap::new(),
            recent: VecDeque::new(),
            last_raised_ms: None,
            last_timeout_penalty_ms: None,
        }
    }
}

impl PeerTrust {
    pub fn tier(&self) -> TrustTier {
        TrustTier::of(self.score)
    }
}

/// A sibling whose tier changed with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierChange {
    pub peer: NodeId,
    pub from: TrustTier,
    pub to: TrustTier,
}

/// Scores of every sibling this node has observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustLedger {
    peers: BTreeMap<NodeId, PeerTrust>,
}

impl TrustLedger {
    /// Records what `peer` did at `now_ms`; returns the tier change it caused, if any.
    pub fn record(&mut self, peer: NodeId, event: TrustEvent, now_ms: u64, detail: &str) -> Option<TierChange> {
        let trust = self.peers.entry(peer).or_default();
        *trust.counts.entry(event).or_default() += 1;
        let limited = match event {
            TrustEvent::Verified => &mut trust.last_raised_ms,
            TrustEvent::Timeout => &mut trust.last_timeout_penalty_ms,
            _ => {
                return Self::apply(peer, trust, event, now_ms, detail);
            }
        };
        let interval = if event == TrustEvent::Verified { RAISE_INTERVAL_MS } else { TIMEOUT_PENALTY_INTERVAL_MS };
        if limited.is_some_and(|last| now_ms < last.saturating_add(interval)) {
            return None;
        }
        *limited = Some(now_ms);
        Self::apply(peer, trust, event, now_ms, detail)
    }

    fn apply(peer: NodeId, trust: &mut PeerTrust, event: TrustEvent, now_ms: u64, detail: &str) -> Option<TierChange> {
        let from = trust.tier();
        // Being unreachable is not misbehaving: timeouts alone never make a sibling
        // untrusted (its data stays placed on it, at half weight).
        let floor = if event == TrustEvent::Timeout { trust.score.min(UNTRUSTED_BELOW) } else { 0 };
        let score = (i16::from(trust.score) + event.delta()).clamp(i16::from(floor), i16::from(TRUST_MAX)) as u8;
        if score == trust.score {
            return None;
        }
        trust.score = score;
        // Raises are many and alike; keep the record for what lowered the score.
        if event != TrustEvent::Verified {
            if trust.recent.len() == RECENT_EVENTS_MAX {
                trust.recent.pop_front();
            }
            let detail = detail.chars().take(DETAIL_CHARS_MAX).collect();
            trust.recent.push_back(TrustNote { at_ms: now_ms, event, score, detail });
        }
        let to = trust.tier();
        (from != to).then_some(TierChange { peer, from, to })
    }

    pub fn score(&self, peer: NodeId) -> u8 {
        self.peers.get(&peer).map_or(SCORE_INITIAL, |trust| trust.score)
    }

    pub fn tier(&self, peer: NodeId) -> TrustTier {
        TrustTier::of(self.score(peer))
    }

    /// What placement should weigh `peer` by.
    pub fn placement_weight(&self, peer: NodeId) -> u8 {
        self.tier(peer).placement_weight()
    }

    pub fn peer(&self, peer: NodeId) -> Option<&PeerTrust> {
        self.peers.get(&peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId(7);

    #[test]
    fn an_unknown_sibling_starts_trusted() {
        let ledger = TrustLedger::default();
        assert_eq!(ledger.score(PEER), SCORE_INITIAL);
        assert_eq!(ledger.tier(PEER), TrustTier::Trusted);
        assert_eq!(ledger.placement_weight(PEER), TRUST_MAX);
    }

    #[test]
    fn corrupted_media_makes_a_sibling_untrusted_in_a_few_items() {
        let mut ledger = TrustLedger::default();
        let changes: Vec<_> = (0..4)
            .filter_map(|item| ledger.record(PEER, TrustEvent::HashMismatch, 1_000 + item, "thumb of item"))
            .collect();
        assert_eq!(ledger.score(PEER), 0);
        assert_eq!(ledger.placement_weight(PEER), 0);
        assert_eq!(
            changes,
            vec![
                TierChange { peer: PEER, from: TrustTier::Trusted, to: TrustTier::Probation },
                TierChange { peer: PEER, from: TrustTier::Probation, to: TrustTier::Untrusted },
            ]
        );
        let trust = ledger.peer(PEER).expect("observed");
        assert_eq!(trust.counts[&TrustEvent::HashMismatch], 4);
        assert_eq!(trust.recent.len(), 4);
        assert_eq!(trust.recent.back().map(|note| note.score), Some(0));
    }

    #[test]
    fn raises_are_slow_and_rate_limited() {
        let mut ledger = TrustLedger::default();
        ledger.record(PEER, TrustEvent::BadFrame, 0, "garbage");
        assert_eq!(ledger.score(PEER), SCORE_INITIAL - 15);
        // A thousand verified frames in one second count once.
        for at in 0..1_000 {
            ledger.record(PEER, TrustEvent::Verified, 10 + at, "");
        }
        assert_eq!(ledger.score(PEER), SCORE_INITIAL - 14);
        assert_eq!(ledger.peer(PEER).expect("observed").counts[&TrustEvent::Verified], 1_000);
        ledger.record(PEER, TrustEvent::Verified, 10 + RAISE_INTERVAL_MS, "");
        assert_eq!(ledger.score(PEER), SCORE_INITIAL - 13);
        // Raises never pass the maximum and are not kept as reasons.
        for minute in 2..100 {
            ledger.record(PEER, TrustEvent::Verified, 10 + minute * RAISE_INTERVAL_MS, "");
        }
        assert_eq!(ledger.score(PEER), TRUST_MAX);
        assert_eq!(ledger.peer(PEER).expect("observed").recent.len(), 1);
    }

    #[test]
    fn an_unreachable_sibling_loses_a_little_not_everything() {
        let mut ledger = TrustLedger::default();
        // An hour of failed dials every 10 s.
        for attempt in 0..360 {
            ledger.record(PEER, TrustEvent::Timeout, attempt * 10_000, "dial timed out");
        }
        assert_eq!(ledger.score(PEER), UNTRUSTED_BELOW);
        assert_eq!(ledger.tier(PEER), TrustTier::Probation, "unreachable is not untrusted");
        assert_eq!(ledger.peer(PEER).expect("observed").counts[&TrustEvent::Timeout], 360);
        let mut brief = TrustLedger::default();
        for attempt in 0..30 {
            brief.record(PEER, TrustEvent::Timeout, attempt * 10_000, "dial timed out");
        }
        assert_eq!(brief.tier(PEER), TrustTier::Trusted, "five minutes away keeps the sibling trusted");
    }

    #[test]
    fn the_ledger_round_trips_through_json() {
        let mut ledger = TrustLedger::default();
        ledger.record(PEER, TrustEvent::RefusedPin, 5, "a different key at 10.0.0.2:8444");
        let json = serde_json::to_string(&ledger).expect("serialises");
        assert_eq!(serde_json::from_str::<TrustLedger>(&json).expect("parses"), ledger);
    }
}
