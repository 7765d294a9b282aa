//! `ReplicaNode`: one node's replication state machine, sans-IO. The driver feeds it
//! local writes, peer messages, connection events and the time; it answers with
//! messages to send (`poll_transmit`) and when to wake it (`poll_timeout`).
//!
//! Driver contract:
//! - call `poll_transmit` until `None` and `poll_timeout` after every `handle_*`;
//! - make `store()` and `durable()` durable before sending what `poll_transmit`
//!   returned after the same call (persist, then send), and before acknowledging a
//!   local write to its client;
//! - deliver each peer's messages to `handle_message` in any order, any number of
//!   times or not at all: the protocol copes; only `handle_connected` /
//!   `handle_disconnected` must follow the transport's view of the connection.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::fingerprint::HashRange;
use super::item::{Item, RecordKey, ShardId};
use super::log::{ChangeLog, LogMark};
use super::placement::{place, Sibling, REPLICAS_DEFAULT};
use super::store::{MemoryStore, ReplicaStore, Summary, VersionedKey};
use super::wire::{
    item_bytes, probe_bytes, wanted_bytes, Hello, Items, LogAck, LogBatch, Message, Probe, ProbeBody, Wanted,
    FRAME_HEADER_BYTES,
};
use crate::core::hlc::{HybridClock, Timestamp};
use crate::core::model::{NodeId, Version};

/// Limits and periods. Units are last in the names; times are milliseconds of the
/// `now` the driver passes in.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Copies of each user's shard (home included), `R`.
    pub replicas_wanted: usize,
    /// Largest frame sent or accepted, header included.
    pub frame_bytes_max: usize,
    /// Target size of a batch of items or probes; a frame holds one batch.
    pub batch_bytes_max: usize,
    /// Largest record body a local write may carry.
    pub body_bytes_max: usize,
    /// Largest shard id and largest record key a local write may carry.
    pub key_bytes_max: usize,
    /// Log entries sent to a peer and not yet acknowledged.
    pub log_entries_in_flight_max: u64,
    /// Log entries kept before the log is compacted into a new epoch.
    pub log_entries_max: usize,
    /// A range holding at most this many records (on the larger side) is listed
    /// instead of split.
    pub repair_list_items_max: usize,
    /// Messages waiting for `poll_transmit`; past this, new ones are dropped (every
    /// message is retried or re-derived later).
    pub outbox_messages_max: usize,
    /// An idle log stream sends an empty batch this often, so peers' horizons move.
    pub heartbeat_interval_ms: u64,
    /// Unacknowledged log entries and unanswered Hellos are resent after this.
    pub retransmit_after_ms: u64,
    /// A repair round with each connected peer this often (and on connect).
    pub repair_interval_ms: u64,
    /// On connect, repair waits while the log streams (either way) are behind, at
    /// most this long: a catch-up then travels once, on the log, instead of also as
    /// repair pushes of the same records.
    pub repair_after_connect_wait_max_ms: u64,
    /// Tombstone collection and log truncation this often.
    pub gc_interval_ms: u64,
    pub tombstones_per_gc_max: usize,
    /// Records stamped further than this in the future (of `now`) are refused until
    /// the local clock catches up, so one broken clock cannot drag every HLC along.
    pub remote_clock_ahead_max_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            replicas_wanted: REPLICAS_DEFAULT,
            frame_bytes_max: 1024 * 1024,
            batch_bytes_max: 256 * 1024,
            body_bytes_max: 64 * 1024,
            key_bytes_max: 1024,
            log_entries_in_flight_max: 4096,
            log_entries_max: 1_000_000,
            repair_list_items_max: 32,
            outbox_messages_max: 4096,
            heartbeat_interval_ms: 5_000,
            retransmit_after_ms: 3_000,
            repair_interval_ms: 5 * 60_000,
            repair_after_connect_wait_max_ms: 10_000,
            gc_interval_ms: 60_000,
            tombstones_per_gc_max: 10_000,
            remote_clock_ahead_max_ms: 10 * 60_000,
        }
    }
}

/// A write a local client made, before it has a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWrite {
    pub shard: ShardId,
    pub key: RecordKey,
    /// `None` deletes the record (writes a tombstone).
    pub body: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("this node does not hold shard {shard}; send the write to one of its replicas {replicas:?}")]
    NotAReplica { shard: ShardId, replicas: Vec<NodeId> },
    #[error("record body of {body_bytes} bytes is over the {body_bytes_max}-byte limit")]
    BodyTooLarge { body_bytes: usize, body_bytes_max: usize },
    #[error("shard id or record key of {key_bytes} bytes is over the {key_bytes_max}-byte limit")]
    KeyTooLarge { key_bytes: usize, key_bytes_max: usize },
}

/// What must survive a restart, besides the store. The wiring keeps it in redb, in
/// the same transaction as the store changes it goes with.
#[derive(Debug, Clone, Default)]
pub struct DurableState {
    /// The node's HLC high-water mark: versions and log clocks are never reissued.
    pub clock: HybridClock,
    pub log: ChangeLog,
    /// How far this node has applied each origin's log.
    pub received: BTreeMap<NodeId, LogMark>,
    /// Tombstones older than this are collected; messages stamped with a horizon
    /// older than this are stale and dropped. Only grows.
    pub purge_floor: Timestamp,
    /// The shards this node is settled for, each with its floor: every write to the
    /// shard older than the floor is held here (or a newer version of its record
    /// is), or was deleted and its tombstone collected by every replica. A shard
    /// without an entry is unsettled: this node claims nothing for it and raises no
    /// floor for it (see "Shard floors" in `replication`). Each floor only grows.
    pub shard_floors: BTreeMap<ShardId, Timestamp>,
    /// Set once this node may lack writes its marks cover (its own writes were lost
    /// in a restore, or the sibling list changed): a shard it starts holding is then
    /// settled only by repair, never at its first record.
    pub shards_settle_by_repair_only: bool,
}

/// Counters for metrics and for the simulator's coverage report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub items_applied: u64,
    /// Items already held at that version or newer.
    pub items_stale: u64,
    /// Items of shards this node does not hold, or stamped too far in the future.
    pub items_refused: u64,
    /// Messages dropped because their sender's horizon was behind the purge floor.
    pub messages_stale: u64,
    /// Items refused because their record is absent here and older than the shard's
    /// floor: a deleted record whose tombstone every replica collected.
    pub items_collected: u64,
    /// Records this node held that a sibling's floor proved deleted (restored from an
    /// old backup), dropped.
    pub records_dropped: u64,
    /// Messages dropped because the outbox was full.
    pub messages_dropped: u64,
    pub log_batches_sent: u64,
    pub log_retransmits: u64,
    pub repair_rounds: u64,
    pub repair_items_pushed: u64,
    pub tombstones_purged: u64,
    pub epochs_started: u64,
}

/// The volatile state of one sibling's session.
#[derive(Debug, Default)]
struct PeerState {
    connected: bool,
    hello_received: bool,
    hello_sent_at: u64,
    /// The peer's position in this node's log (current epoch); `None` until its Hello.
    acked_seq: Option<u64>,
    /// Sent through here; goes back to `acked_seq` when acknowledgements stall.
    sent_seq: u64,
    /// Last acknowledged progress, or when sending started from idle.
    progress_at: u64,
    ack_due: bool,
    next_heartbeat_at: u64,
    next_repair_at: u64,
    /// When its Hello of this session came, and its log's epoch and end then: repair
    /// waits until both logs are caught up (`repair_at`).
    hello_at: u64,
    their_log_at_hello: (u64, u64),
}

/// When repair with a peer is due: at `next_repair_at`, but in the first session
/// after connect not before both log streams caught up (this node's log acknowledged
/// to its end, the peer's received up to the end it announced), or
/// `repair_after_connect_wait_max_ms` after its Hello.
fn repair_at(config: &ReplicaConfig, state: &PeerState, log_end: u64, received: Option<&LogMark>) -> u64 {
    let ours_caught_up = state.acked_seq.is_none_or(|acked| acked >= log_end);
    let (their_epoch, their_end) = state.their_log_at_hello;
    let theirs_caught_up = their_end == 0
        || received
            .is_some_and(|mark| mark.epoch > their_epoch || (mark.epoch == their_epoch && mark.seq >= their_end));
    if ours_caught_up && theirs_caught_up {
        return state.next_repair_at;
    }
    state.next_repair_at.max(state.hello_at.saturating_add(config.repair_after_connect_wait_max_ms))
}

/// Placements remembered at once; the cache is dropped when it fills.
const PLACEMENT_CACHE_MAX: usize = 100_000;
/// Fixed fields of a `LogBatch` or `Items` frame, for packing.
const BATCH_OVERHEAD_BYTES: usize = FRAME_HEADER_BYTES + 6 * 8;

/// One node's replication state: its store, its change log, its sessions with peers.
pub struct ReplicaNode<S: ReplicaStore = MemoryStore> {
    id: NodeId,
    config: ReplicaConfig,
    siblings: Vec<Sibling>,
    store: S,
    durable: DurableState,
    peers: BTreeMap<NodeId, PeerState>,
    /// Each sibling's completeness horizon, as last reported (the max seen).
    reported_complete: BTreeMap<NodeId, Timestamp>,
    placement_cache: BTreeMap<ShardId, Vec<NodeId>>,
    outbox: VecDeque<(NodeId, Message)>,
    next_gc_at: u64,
    stats: ReplicaStats,
}

impl<S: ReplicaStore> ReplicaNode<S> {
    /// Starts (or restarts) a node from its durable parts. `siblings` are the paired
    /// nodes, this one included.
    pub fn new(
        id: NodeId,
        config: ReplicaConfig,
        siblings: Vec<Sibling>,
        store: S,
        durable: DurableState,
        now: u64,
    ) -> ReplicaNode<S> {
        assert!(
            config.body_bytes_max + 2 * config.key_bytes_max + 64 + BATCH_OVERHEAD_BYTES <= config.batch_bytes_max
                && config.batch_bytes_max * 2 <= config.frame_bytes_max,
            "replication limits do not nest: a body must fit a batch and a batch a frame"
        );
        assert!(config.log_entries_in_flight_max > 0 && config.repair_list_items_max > 0);
        let peers =
            siblings.iter().filter(|sibling| sibling.id != id).map(|sibling| (sibling.id, PeerState::default()));
        ReplicaNode {
            id,
            next_gc_at: now.saturating_add(config.gc_interval_ms),
            config,
            peers: peers.collect(),
            siblings,
            store,
            durable,
            reported_complete: BTreeMap::new(),
            placement_cache: BTreeMap::new(),
            outbox: VecDeque::new(),
            stats: ReplicaStats::default(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn durable(&self) -> &DurableState {
        &self.durable
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The durable parts, for a restart (everything else is volatile).
    pub fn into_parts(self) -> (S, DurableState) {
        (self.store, self.durable)
    }

    /// Entries of this node's log the peer has not acknowledged; `None` until its
    /// session's Hello (or when it is not a sibling).
    pub fn peer_lag(&self, peer: NodeId) -> Option<u64> {
        let acked = self.peers.get(&peer)?.acked_seq?;
        Some(self.durable.log.end_seq().saturating_sub(acked))
    }

    /// The replicas of `shard`, home first.
    pub fn replicas_of(&self, shard: &ShardId) -> Vec<NodeId> {
        place(shard, &self.siblings, self.config.replicas_wanted)
    }

    /// A client's write: versioned by this node's clock, stored, logged. Acknowledge
    /// it to the client once `store()` and `durable()` are durable.
    pub fn handle_local_write(&mut self, now: u64, write: LocalWrite) -> Result<Item, WriteError> {
        let body_bytes = write.body.as_ref().map_or(0, Bytes::len);
        if body_bytes > self.config.body_bytes_max {
            return Err(WriteError::BodyTooLarge { body_bytes, body_bytes_max: self.config.body_bytes_max });
        }
        let key_bytes = write.key.key.len().max(write.shard.0.len());
        if key_bytes > self.config.key_bytes_max {
            return Err(WriteError::KeyTooLarge { key_bytes, key_bytes_max: self.config.key_bytes_max });
        }
        if !self.replicates(self.id, &write.shard) {
            return Err(WriteError::NotAReplica { replicas: self.replicas_of(&write.shard), shard: write.shard });
        }
        // The one way a local write enters replication: a transaction of one record.
        self.handle_local_transaction(now, |store, next_version| {
            let version = next_version();
            let item = Item { shard: write.shard, key: write.key, version, body: write.body };
            debug_assert!(
                store.get(&item.shard, &item.key).is_none_or(|stored| stored.version < version),
                "every stored version was observed by the clock, so a local write is the newest"
            );
            store.put(item.clone());
            let written = VersionedKey { shard: item.shard.clone(), key: item.key.clone(), version };
            Ok::<_, WriteError>((item, vec![written]))
        })
    }

    /// A client's transaction that writes records itself (validation and derived
    /// indexes belong to the store): `body` gets the store and a source of versions
    /// from this node's clock, and returns what it wrote; each record written is
    /// logged. On `Err` nothing is logged (the store must have rolled back).
    ///
    /// The written versions must come from `next_version`, each record at most once
    /// per call, so the log stays in version order (invariant 3). Placement is not
    /// checked here: the store writes shards of users homed on this node.
    pub fn handle_local_transaction<R, E>(
        &mut self,
        now: u64,
        body: impl FnOnce(&mut S, &mut dyn FnMut() -> Version) -> Result<(R, Vec<VersionedKey>), E>,
    ) -> Result<R, E> {
        let id = self.id;
        let clock = &mut self.durable.clock;
        let mut next_version = || Version { at: clock.tick(now), origin: id };
        let (result, mut written) = body(&mut self.store, &mut next_version)?;
        written.sort_by_key(|record| record.version);
        self.settle_created_shards(&written);
        for record in written {
            debug_assert_eq!(record.version.origin, id, "a local transaction writes versions of this node");
            self.durable.log.append(record.shard, record.key, record.version);
        }
        self.pump(now);
        Ok(result)
    }

    /// Replaces the sibling list (pairing, a trust tier change), this node included,
    /// without a restart: placement is computed afresh, sessions with siblings that
    /// left end, new siblings start disconnected. The driver then restarts the
    /// session of each connected sibling (`handle_connected`), so repair runs
    /// under the new placement.
    pub fn set_siblings(&mut self, siblings: Vec<Sibling>) {
        let own_id = self.id;
        let listed = |id: &NodeId| siblings.iter().any(|sibling| sibling.id == *id);
        self.peers.retain(|id, _| listed(id));
        self.reported_complete.retain(|id, _| listed(id));
        self.outbox.retain(|(to, _)| listed(to));
        for sibling in siblings.iter().filter(|sibling| sibling.id != own_id) {
            self.peers.entry(sibling.id).or_default();
        }
        // Logs skipped this node for shards it did not hold, and marks moved on: a
        // shard whose replicas changed is settled again by repair.
        let replicas_wanted = self.config.replicas_wanted;
        let old_siblings = std::mem::replace(&mut self.siblings, siblings);
        self.durable.shard_floors.retain(|shard, _| {
            place(shard, &old_siblings, replicas_wanted) == place(shard, &self.siblings, replicas_wanted)
        });
        if old_siblings != self.siblings {
            self.durable.shards_settle_by_repair_only = true;
        }
        self.placement_cache.clear();
    }

    pub fn handle_connected(&mut self, now: u64, peer: NodeId) {
        let Some(state) = self.peers.get_mut(&peer) else { return };
        *state = PeerState {
            connected: true,
            hello_sent_at: now,
            next_heartbeat_at: now.saturating_add(self.config.heartbeat_interval_ms),
            next_repair_at: u64::MAX,
            ..PeerState::default()
        };
        self.send_hello(peer, true);
    }

    pub fn handle_disconnected(&mut self, _now: u64, peer: NodeId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            *state = PeerState::default();
        }
        self.outbox.retain(|(to, _)| *to != peer);
    }

    pub fn handle_message(&mut self, now: u64, from: NodeId, message: Message) {
        if !self.peers.contains_key(&from) {
            // Not a sibling (or ourselves): the transport should not have let it in.
            return;
        }
        match message {
            Message::Hello(hello) => self.on_hello(now, from, hello),
            Message::LogBatch(batch) => self.on_log_batch(now, from, batch),
            Message::LogAck(ack) => self.on_log_ack(now, from, ack),
            Message::Repair(probes) => self.on_repair(now, from, probes),
            Message::Items(items) => {
                if items.complete < self.durable.purge_floor {
                    self.stats.messages_stale += 1;
                } else {
                    self.observe_remote(now, items.complete);
                    for item in items.items {
                        self.apply(now, from, item);
                    }
                }
            }
            Message::Want(wanted) => self.on_want(from, wanted),
        }
        self.pump(now);
    }

    pub fn handle_timeout(&mut self, now: u64) {
        let peer_ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peer_ids {
            let log_end = self.durable.log.end_seq();
            let received = self.durable.received.get(&peer).copied();
            let config = &self.config;
            let state = self.peers.get_mut(&peer).expect("listed above");
            if !state.connected {
                continue;
            }
            if !state.hello_received && now >= state.hello_sent_at.saturating_add(config.retransmit_after_ms) {
                state.hello_sent_at = now;
                self.send_hello(peer, true);
                continue;
            }
            let mut heartbeat_due = false;
            if let Some(acked) = state.acked_seq {
                if state.sent_seq > acked && now >= state.progress_at.saturating_add(config.retransmit_after_ms) {
                    // Go back N: whatever was lost is resent, duplicates are ignored.
                    state.sent_seq = acked;
                    state.progress_at = now;
                    self.stats.log_retransmits += 1;
                }
                if now >= state.next_heartbeat_at {
                    state.next_heartbeat_at = now.saturating_add(config.heartbeat_interval_ms);
                    heartbeat_due = state.sent_seq == log_end;
                }
            }
            let repair_due = state.hello_received && now >= repair_at(config, state, log_end, received.as_ref());
            if repair_due {
                state.next_repair_at = now.saturating_add(config.repair_interval_ms);
            }
            if heartbeat_due {
                self.send_heartbeat(now, peer);
            }
            if repair_due {
                self.start_repair(peer);
            }
        }
        if now >= self.next_gc_at {
            self.next_gc_at = now.saturating_add(self.config.gc_interval_ms);
            self.collect_garbage(now);
        }
        self.pump(now);
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// When `handle_timeout` wants to run next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut next = self.next_gc_at;
        for (peer, state) in self.peers.iter().filter(|(_, state)| state.connected) {
            if !state.hello_received {
                next = next.min(state.hello_sent_at.saturating_add(self.config.retransmit_after_ms));
                continue;
            }
            next =
                next.min(repair_at(&self.config, state, self.durable.log.end_seq(), self.durable.received.get(peer)));
            if let Some(acked) = state.acked_seq {
                next = next.min(state.next_heartbeat_at);
                if state.sent_seq > acked {
                    next = next.min(state.progress_at.saturating_add(self.config.retransmit_after_ms));
                }
            }
        }
        Some(next)
    }

    /// Starts a new log epoch: call when the durable log was lost or cannot be
    /// trusted (the store survived). Peers re-read the whole new epoch, which begins
    /// with every record this node wrote.
    pub fn start_new_epoch(&mut self, now: u64) {
        self.start_epoch_above(now, 0);
    }

    /// Everything of every origin up to this timestamp has been applied here (for
    /// the shards this node holds): the minimum of the log clocks of every sibling.
    pub fn complete(&self) -> Timestamp {
        let mut others = self.siblings.iter().filter(|sibling| sibling.id != self.id).peekable();
        if others.peek().is_none() {
            return self.durable.clock.last();
        }
        others
            .map(|sibling| self.durable.received.get(&sibling.id).map_or(Timestamp::default(), |mark| mark.clock))
            .min()
            .expect("at least one other sibling")
    }

    /// The minimum of every sibling's completeness horizon: every replica has applied
    /// every write older than this, so tombstones older than it can go.
    pub fn stable_horizon(&self) -> Timestamp {
        self.siblings
            .iter()
            .filter(|sibling| sibling.id != self.id)
            .map(|sibling| self.reported_complete.get(&sibling.id).copied().unwrap_or_default())
            .fold(self.complete(), Timestamp::min)
    }

    /// The siblings known to have applied every write up to `at`: for a tombstone
    /// at `at`, the replicas that acknowledged it. Acknowledgements are horizons
    /// rather than one message per tombstone, because an ack must also promise that
    /// no older write to the record is still on its way (see `replication`).
    pub fn acknowledged_by(&self, at: Timestamp) -> Vec<NodeId> {
        self.siblings
            .iter()
            .filter(|sibling| {
                let complete = if sibling.id == self.id {
                    self.complete()
                } else {
                    self.reported_complete.get(&sibling.id).copied().unwrap_or_default()
                };
                complete > at
            })
            .map(|sibling| sibling.id)
            .collect()
    }

    fn replicates(&mut self, node: NodeId, shard: &ShardId) -> bool {
        if !self.placement_cache.contains_key(shard) {
            if self.placement_cache.len() >= PLACEMENT_CACHE_MAX {
                self.placement_cache.clear();
            }
            let replicas = place(shard, &self.siblings, self.config.replicas_wanted);
            self.placement_cache.insert(shard.clone(), replicas);
        }
        self.placement_cache[shard].contains(&node)
    }

    /// What this node claims for `shard` (see `Probe::floor`): its floor, but no
    /// further than its own horizon, below which its marks prove that every other
    /// origin's writes arrived (so a write still on its way is never taken for a
    /// collected one). `None` while the shard is unsettled.
    pub fn floor_of(&self, shard: &ShardId) -> Option<Timestamp> {
        let floor = *self.durable.shard_floors.get(shard)?;
        Some(floor.min(self.complete()))
    }

    /// Settles at floor 0 (nothing claimed yet; collection raises it) each unsettled
    /// shard whose records, here, are exactly the live records this local
    /// transaction wrote: a shard it created (a new user), which no other node can
    /// have written below it. Not a transaction that overwrites or deletes what was
    /// held (an account deletion tombstones every record it knows of).
    fn settle_created_shards(&mut self, written: &[VersionedKey]) {
        let mut by_shard: BTreeMap<&ShardId, Vec<&VersionedKey>> = BTreeMap::new();
        for record in written {
            by_shard.entry(&record.shard).or_default().push(record);
        }
        for (shard, records) in by_shard {
            if self.durable.shard_floors.contains_key(shard) || !self.replicates(self.id, shard) {
                continue;
            }
            let mut keys: Vec<&RecordKey> = records.iter().map(|record| &record.key).collect();
            keys.sort();
            keys.dedup();
            let all_live = keys.iter().all(|key| self.store.get(shard, key).is_some_and(|held| !held.is_tombstone()));
            if all_live && self.store.fingerprint(shard, HashRange::ALL).count == keys.len() as u64 {
                self.durable.shard_floors.insert(shard.clone(), Timestamp::default());
            }
        }
    }

    /// A sibling has applied writes of this node's log that this node no longer has:
    /// it was restored from an old backup, and its marks no longer prove what it
    /// holds. Every shard is settled again by repair, and floors it claimed before
    /// are withdrawn.
    fn note_own_writes_lost(&mut self) {
        self.durable.shard_floors.clear();
        self.durable.shards_settle_by_repair_only = true;
    }

    /// The HLC's receive rule for the timestamps a sibling sends besides versions
    /// (log clocks, horizons, floors): later local writes are newer than every floor
    /// this node could be told about. A timestamp too far ahead of `now` is ignored.
    fn observe_remote(&mut self, now: u64, at: Timestamp) {
        if at > self.durable.clock.last()
            && at.physical_ms() <= now.saturating_add(self.config.remote_clock_ahead_max_ms)
        {
            self.durable.clock.observe(at, now);
        }
    }

    fn send(&mut self, peer: NodeId, message: Message) {
        if !self.peers.get(&peer).is_some_and(|state| state.connected) {
            return;
        }
        if self.outbox.len() >= self.config.outbox_messages_max {
            self.stats.messages_dropped += 1;
            return;
        }
        debug_assert!(message.frame_bytes() <= self.config.frame_bytes_max, "batches are packed below the frame limit");
        self.outbox.push_back((peer, message));
    }

    /// Sends `elements` in as many messages as `batch_bytes_max` needs.
    fn send_packed<T>(
        &mut self,
        peer: NodeId,
        elements: Vec<T>,
        element_bytes: impl Fn(&T) -> usize,
        wrap: impl Fn(Vec<T>) -> Message,
    ) {
        let mut batch = Vec::new();
        let mut batch_bytes = BATCH_OVERHEAD_BYTES;
        for element in elements {
            let bytes = element_bytes(&element);
            if !batch.is_empty() && batch_bytes + bytes > self.config.batch_bytes_max {
                self.send(peer, wrap(std::mem::take(&mut batch)));
                batch_bytes = BATCH_OVERHEAD_BYTES;
            }
            batch_bytes += bytes;
            batch.push(element);
        }
        if !batch.is_empty() {
            self.send(peer, wrap(batch));
        }
    }

    fn send_hello(&mut self, peer: NodeId, reply_wanted: bool) {
        let hello = Hello {
            epoch: self.durable.log.epoch(),
            log_end: self.durable.log.end_seq(),
            marks: self.durable.received.iter().map(|(origin, mark)| (*origin, *mark)).collect(),
            complete: self.complete(),
            reply_wanted,
        };
        self.send(peer, Message::Hello(hello));
    }

    fn note_complete(&mut self, peer: NodeId, complete: Timestamp) {
        let reported = self.reported_complete.entry(peer).or_default();
        *reported = (*reported).max(complete);
    }

    /// A newer epoch of `origin`'s log: its seqs start over, so the mark does too
    /// (keeping its clock, which stays true), and a repair pass runs at once rather
    /// than trusting seqs across the gap.
    fn note_epoch(&mut self, now: u64, origin: NodeId, epoch: u64) -> bool {
        let mark = self.durable.received.entry(origin).or_default();
        if epoch <= mark.epoch {
            return false;
        }
        *mark = LogMark { epoch, seq: 0, clock: mark.clock };
        if let Some(state) = self.peers.get_mut(&origin).filter(|state| state.hello_received) {
            state.next_repair_at = now;
        }
        true
    }

    fn on_hello(&mut self, now: u64, from: NodeId, hello: Hello) {
        self.note_complete(from, hello.complete);
        self.observe_remote(now, hello.complete);
        self.note_epoch(now, from, hello.epoch);
        if let Some((_, own)) = hello.marks.iter().find(|(origin, _)| *origin == self.id) {
            // Versions are never reissued, even by a node restored from a backup.
            self.observe_remote(now, own.clock);
            let log = &self.durable.log;
            if own.epoch > log.epoch() || (own.epoch == log.epoch() && own.seq > log.end_seq()) {
                self.note_own_writes_lost();
            }
        }
        let Some(state) = self.peers.get_mut(&from).filter(|state| state.connected) else { return };
        state.hello_received = true;
        state.next_repair_at = now;
        let first_of_session = state.acked_seq.is_none();
        if first_of_session {
            state.hello_at = now;
            state.their_log_at_hello = (hello.epoch, hello.log_end);
        }
        if hello.reply_wanted {
            self.send_hello(from, false);
        }
        if !first_of_session {
            // A repeated Hello carries a mark no newer than the acks since.
            return;
        }
        let mark = hello.marks.iter().find(|(origin, _)| *origin == self.id).map(|(_, mark)| *mark).unwrap_or_default();
        let log = &self.durable.log;
        let resume_at = if mark.epoch == log.epoch() && mark.seq <= log.end_seq() && mark.seq + 1 >= log.first_seq() {
            Some(mark.seq)
        } else if mark.epoch < log.epoch() && log.first_seq() == 1 {
            Some(0)
        } else {
            None
        };
        match resume_at {
            Some(seq) => {
                let state = self.peers.get_mut(&from).expect("checked above");
                state.acked_seq = Some(seq);
                state.sent_seq = seq;
                state.progress_at = now;
            }
            // The peer needs entries this log no longer has (or claims an epoch of ours
            // we never had): a new epoch holds everything again.
            None => {
                self.peers.get_mut(&from).expect("checked above").acked_seq = Some(0);
                self.start_epoch_above(now, mark.epoch);
            }
        }
    }

    fn start_epoch_above(&mut self, now: u64, above: u64) {
        let epoch = self.durable.clock.tick(now).0.max(self.durable.log.epoch() + 1).max(above + 1);
        let records = self.store.originated_by(self.id);
        self.durable
            .log
            .start_epoch(epoch, records.into_iter().map(|record| (record.shard, record.key, record.version)));
        for state in self.peers.values_mut() {
            if state.acked_seq.is_some() {
                state.acked_seq = Some(0);
                state.sent_seq = 0;
                state.progress_at = now;
            }
        }
        self.stats.epochs_started += 1;
    }

    fn on_log_batch(&mut self, now: u64, from: NodeId, batch: LogBatch) {
        if batch.complete < self.durable.purge_floor {
            self.stats.messages_stale += 1;
            return;
        }
        let current = self.durable.received.get(&from).copied().unwrap_or_default();
        if batch.epoch < current.epoch {
            return;
        }
        self.note_epoch(now, from, batch.epoch);
        let mark = self.durable.received[&from];
        if let Some(state) = self.peers.get_mut(&from).filter(|state| state.connected) {
            state.ack_due = true;
        }
        if batch.after_seq > mark.seq {
            // A gap (an earlier batch was lost or is late): the ack sends it back.
            return;
        }
        let horizon_ms = now.saturating_add(self.config.remote_clock_ahead_max_ms);
        if batch.clock.physical_ms() > horizon_ms
            || batch.items.iter().any(|item| item.version.at.physical_ms() > horizon_ms)
        {
            // Taken again once this clock catches up; the mark stays until then.
            self.stats.items_refused += batch.items.len() as u64;
            return;
        }
        self.observe_remote(now, batch.clock);
        for item in batch.items {
            self.apply(now, from, item);
        }
        let mark = self.durable.received.get_mut(&from).expect("noted above");
        mark.seq = mark.seq.max(batch.through_seq);
        mark.clock = mark.clock.max(batch.clock);
    }

    fn on_log_ack(&mut self, now: u64, from: NodeId, ack: LogAck) {
        self.note_complete(from, ack.complete);
        self.observe_remote(now, ack.complete);
        let log = &self.durable.log;
        if ack.epoch > log.epoch() || (ack.epoch == log.epoch() && ack.seq > log.end_seq()) {
            self.note_own_writes_lost();
        }
        let log = &self.durable.log;
        let Some(state) = self.peers.get_mut(&from).filter(|state| state.connected) else { return };
        let Some(acked) = state.acked_seq else { return };
        if ack.epoch != log.epoch() || ack.seq <= acked || ack.seq > log.end_seq() {
            return;
        }
        state.acked_seq = Some(ack.seq);
        state.sent_seq = state.sent_seq.max(ack.seq);
        state.progress_at = now;
    }

    /// Merges a peer's version of a record: last writer wins.
    fn apply(&mut self, now: u64, from: NodeId, item: Item) {
        if !self.replicates(self.id, &item.shard)
            || item.version.at.physical_ms() > now.saturating_add(self.config.remote_clock_ahead_max_ms)
        {
            self.stats.items_refused += 1;
            return;
        }
        let stored = self.store.get(&item.shard, &item.key);
        if stored.as_ref().is_some_and(|stored| stored.version >= item.version) {
            self.stats.items_stale += 1;
            return;
        }
        if stored.is_none() && self.floor_of(&item.shard).is_some_and(|floor| item.version.at < floor) {
            // Absent and older than the floor: deleted, and the tombstone collected.
            self.stats.items_collected += 1;
            return;
        }
        self.durable.clock.observe(item.version.at, now);
        if !self.durable.shard_floors.contains_key(&item.shard)
            && self.store.fingerprint(&item.shard, HashRange::ALL).count == 0
        {
            if self.durable.shards_settle_by_repair_only {
                // Settled by repair: soon, not at the next periodic round.
                if let Some(state) = self.peers.get_mut(&from).filter(|state| state.hello_received) {
                    let soon = now.saturating_add(self.config.repair_after_connect_wait_max_ms);
                    state.next_repair_at = state.next_repair_at.min(soon);
                }
            } else {
                self.durable.shard_floors.insert(item.shard.clone(), Timestamp::default());
            }
        }
        self.store.put(item);
        self.stats.items_applied += 1;
    }

    /// Sends each connected peer its due acks and the log entries its window allows.
    fn pump(&mut self, now: u64) {
        let peer_ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peer_ids {
            let state = &mut self.peers.get_mut(&peer).expect("listed above");
            if !state.connected {
                continue;
            }
            if std::mem::take(&mut state.ack_due) {
                let mark = self.durable.received.get(&peer).copied().unwrap_or_default();
                let ack = LogAck { epoch: mark.epoch, seq: mark.seq, complete: self.complete() };
                self.send(peer, Message::LogAck(ack));
            }
            loop {
                let state = &self.peers[&peer];
                let Some(acked) = state.acked_seq else { break };
                let window_end = acked.saturating_add(self.config.log_entries_in_flight_max);
                if state.sent_seq >= self.durable.log.end_seq()
                    || state.sent_seq >= window_end
                    || self.outbox.len() >= self.config.outbox_messages_max / 2
                {
                    break;
                }
                let after = state.sent_seq;
                if after == acked {
                    self.peers.get_mut(&peer).expect("listed above").progress_at = now;
                }
                let batch = self.build_batch(now, peer, after, window_end);
                self.peers.get_mut(&peer).expect("listed above").sent_seq = batch.through_seq;
                self.stats.log_batches_sent += 1;
                self.send(peer, Message::LogBatch(batch));
            }
        }
    }

    fn build_batch(&mut self, now: u64, peer: NodeId, after: u64, window_end: u64) -> LogBatch {
        let end = self.durable.log.end_seq().min(window_end);
        let mut items = Vec::new();
        let mut batch_bytes = BATCH_OVERHEAD_BYTES;
        let mut through = after;
        let mut seq = (after + 1).max(self.durable.log.first_seq());
        while seq <= end {
            let entry = self.durable.log.get(seq).expect("seq within the kept log").clone();
            if self.replicates(peer, &entry.shard) {
                // The record as it is now: overwritten since means newer, purged means
                // a tombstone every sibling has (so there is nothing to send).
                if let Some(item) = self.store.get(&entry.shard, &entry.key) {
                    let bytes = item_bytes(&item);
                    if !items.is_empty() && batch_bytes + bytes > self.config.batch_bytes_max {
                        break;
                    }
                    batch_bytes += bytes;
                    items.push(item);
                }
            }
            through = seq;
            seq += 1;
        }
        let clock = if through == self.durable.log.end_seq() {
            // Every later write of ours gets a later timestamp.
            self.durable.clock.tick(now)
        } else {
            self.durable.log.get(through).map_or(Timestamp::default(), |entry| entry.version.at)
        };
        LogBatch {
            epoch: self.durable.log.epoch(),
            after_seq: after,
            through_seq: through,
            clock,
            complete: self.complete(),
            items,
        }
    }

    fn send_heartbeat(&mut self, now: u64, peer: NodeId) {
        let state = &self.peers[&peer];
        let end = self.durable.log.end_seq();
        debug_assert_eq!(state.sent_seq, end);
        let batch = LogBatch {
            epoch: self.durable.log.epoch(),
            after_seq: end,
            through_seq: end,
            clock: self.durable.clock.tick(now),
            complete: self.complete(),
            items: Vec::new(),
        };
        self.send(peer, Message::LogBatch(batch));
    }

    /// Compares every shard both hold, whole-range fingerprints first.
    fn start_repair(&mut self, peer: NodeId) {
        let mut probes = Vec::new();
        for shard in self.store.shards() {
            if self.replicates(self.id, &shard) && self.replicates(peer, &shard) {
                let fingerprint = self.store.fingerprint(&shard, HashRange::ALL);
                let floor = self.floor_of(&shard);
                probes.push(Probe { shard, range: HashRange::ALL, floor, body: ProbeBody::Fingerprint(fingerprint) });
            }
        }
        self.stats.repair_rounds += 1;
        self.send_packed(peer, probes, probe_bytes, Message::Repair);
    }

    /// Range-based set reconciliation: equal ranges end, small ones are listed,
    /// large ones split; listed ones end in pushes and wants. Floors settle a shard
    /// (a whole shard equal to a settled sibling's) and prove deletes: a record one
    /// side lacks and the other holds older than the lacking side's floor was
    /// deleted, so its holder drops it instead of pushing it back to life.
    fn on_repair(&mut self, now: u64, from: NodeId, probes: Vec<Probe>) {
        let list_max = self.config.repair_list_items_max;
        let mut replies = Vec::new();
        let mut pushes = Vec::new();
        let mut wanted = Vec::new();
        for probe in probes {
            if !self.replicates(self.id, &probe.shard) || !self.replicates(from, &probe.shard) {
                continue;
            }
            let Probe { shard, range, floor: their_floor, body } = probe;
            if let Some(floor) = their_floor {
                self.observe_remote(now, floor);
            }
            match body {
                ProbeBody::Fingerprint(theirs) => {
                    let mine = self.store.fingerprint(&shard, range);
                    if mine == theirs {
                        if range != HashRange::ALL {
                            continue;
                        }
                        match (their_floor, self.floor_of(&shard)) {
                            (Some(floor), _) => {
                                // The same records as a settled sibling had when it
                                // sent this: what it claimed is true here too.
                                let entry = self.durable.shard_floors.entry(shard).or_default();
                                *entry = (*entry).max(floor);
                            }
                            (None, Some(floor)) => {
                                // An unsettled sibling with the same records: it
                                // settles on our probe.
                                let body = ProbeBody::Fingerprint(mine);
                                replies.push(Probe { shard, range, floor: Some(floor), body });
                            }
                            (None, None) => {}
                        }
                        continue;
                    }
                    let floor = self.floor_of(&shard);
                    if mine.count.max(theirs.count) as usize <= list_max || !range.can_split() {
                        let summaries = self.store.summaries(&shard, range, list_max * 4);
                        // A floor vouches for an absence only in a list of the whole range.
                        let floor = floor.filter(|_| summaries.len() as u64 == mine.count);
                        replies.push(Probe { shard, range, floor, body: ProbeBody::Summaries(summaries) });
                    } else {
                        for child in range.children() {
                            let fingerprint = self.store.fingerprint(&shard, child);
                            replies.push(Probe {
                                shard: shard.clone(),
                                range: child,
                                floor,
                                body: ProbeBody::Fingerprint(fingerprint),
                            });
                        }
                    }
                }
                ProbeBody::Summaries(theirs) => {
                    let mine = self.store.summaries(&shard, range, list_max * 4);
                    let my_floor = self.floor_of(&shard);
                    let mine_whole = mine.len() as u64 == self.store.fingerprint(&shard, range).count;
                    let theirs_by_key: BTreeMap<&RecordKey, Version> =
                        theirs.iter().map(|summary| (&summary.key, summary.version)).collect();
                    let mine_by_key: BTreeMap<&RecordKey, Version> =
                        mine.iter().map(|summary| (&summary.key, summary.version)).collect();
                    for Summary { key, version } in &mine {
                        match theirs_by_key.get(key) {
                            None if their_floor.is_some_and(|floor| version.at < floor) => {
                                // Deleted while this node was away (an old backup); a
                                // tombstone here is left to collection.
                                if self.store.get(&shard, key).is_some_and(|held| !held.is_tombstone()) {
                                    self.store.purge(&shard, key);
                                    self.stats.records_dropped += 1;
                                }
                            }
                            Some(theirs) if theirs >= version => {}
                            _ => pushes.extend(self.store.get(&shard, key)),
                        }
                    }
                    let mut they_hold_collected = false;
                    for Summary { key, version } in &theirs {
                        match mine_by_key.get(key) {
                            None if mine_whole && my_floor.is_some_and(|floor| version.at < floor) => {
                                they_hold_collected = true;
                            }
                            Some(mine) if mine >= version => {}
                            _ => wanted.push(Wanted { shard: shard.clone(), key: key.clone() }),
                        }
                    }
                    if they_hold_collected {
                        // Our list with our floor: the sender drops what it proves deleted.
                        let floor = my_floor.filter(|_| mine_whole);
                        replies.push(Probe { shard, range, floor, body: ProbeBody::Summaries(mine) });
                    }
                }
            }
        }
        self.send_packed(from, replies, probe_bytes, Message::Repair);
        self.push_items(from, pushes);
        self.send_packed(from, wanted, wanted_bytes, Message::Want);
    }

    fn on_want(&mut self, from: NodeId, wanted: Vec<Wanted>) {
        let mut pushes = Vec::new();
        for Wanted { shard, key } in wanted {
            if self.replicates(self.id, &shard) && self.replicates(from, &shard) {
                pushes.extend(self.store.get(&shard, &key));
            }
        }
        self.push_items(from, pushes);
    }

    fn push_items(&mut self, peer: NodeId, items: Vec<Item>) {
        self.stats.repair_items_pushed += items.len() as u64;
        let complete = self.complete();
        self.send_packed(peer, items, item_bytes, |items| Message::Items(Items { complete, items }));
    }

    /// Raises the purge floor to the stable horizon, collects tombstones under it,
    /// drops log entries every sibling has, and compacts an overgrown log.
    fn collect_garbage(&mut self, now: u64) {
        let horizon = self.stable_horizon();
        if horizon > self.durable.purge_floor {
            self.durable.purge_floor = horizon;
        }
        // Settled shards this node holds: every replica has every write below the
        // purge floor, and this node has them or collects their tombstones now.
        let purge_floor = self.durable.purge_floor;
        let settled: Vec<ShardId> = self.durable.shard_floors.keys().cloned().collect();
        for shard in settled {
            if self.replicates(self.id, &shard) {
                let floor = self.durable.shard_floors.get_mut(&shard).expect("listed above");
                *floor = (*floor).max(purge_floor);
            }
        }
        for doomed in self.store.tombstones_before(self.durable.purge_floor, self.config.tombstones_per_gc_max) {
            self.store.purge(&doomed.shard, &doomed.key);
            self.stats.tombstones_purged += 1;
        }
        let acked_by_all = self.peers.values().map(|state| state.acked_seq).min().flatten();
        if let Some(seq) = acked_by_all {
            self.durable.log.truncate_through(seq);
        }
        let log = &self.durable.log;
        if log.len() > self.config.log_entries_max && log.len() >= 2 * log.entries_at_epoch_start() {
            self.start_new_epoch(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::replication::item::Table;
    use crate::core::replication::placement::TRUST_MAX;

    const NOW: u64 = 1_700_000_000_000;

    fn siblings(count: u64) -> Vec<Sibling> {
        (1..=count).map(|id| Sibling { id: NodeId(id), zone: format!("z{id}"), trust: TRUST_MAX }).collect()
    }

    fn node(id: u64, sibling_count: u64) -> ReplicaNode {
        let config = ReplicaConfig::default();
        ReplicaNode::new(
            NodeId(id),
            config,
            siblings(sibling_count),
            MemoryStore::default(),
            DurableState::default(),
            NOW,
        )
    }

    fn write(shard: &ShardId, key: &str, body: Option<&'static str>) -> LocalWrite {
        LocalWrite {
            shard: shard.clone(),
            key: RecordKey::new(Table::Post, key),
            body: body.map(|text| Bytes::from_static(text.as_bytes())),
        }
    }

    #[test]
    fn local_writes_are_versioned_stored_and_logged_in_order() {
        let mut node = node(1, 1);
        let shard = ShardId("u1".into());
        let first = node.handle_local_write(NOW, write(&shard, "p1", Some("a"))).unwrap();
        // Same millisecond, then a clock that went back: versions still increase.
        let second = node.handle_local_write(NOW, write(&shard, "p1", Some("b"))).unwrap();
        let third = node.handle_local_write(NOW - 5_000, write(&shard, "p1", None)).unwrap();
        assert!(first.version < second.version && second.version < third.version);
        assert_eq!(node.store().get(&shard, &RecordKey::new(Table::Post, "p1")), Some(third));
        assert_eq!(node.durable().log.end_seq(), 3);
        // Alone, a node's horizon is its own clock: a tombstone goes at the first pass
        // after something newer happened.
        node.handle_local_write(NOW, write(&shard, "p2", Some("c"))).unwrap();
        node.handle_timeout(NOW + ReplicaConfig::default().gc_interval_ms);
        assert_eq!(node.store().tombstone_count(), 0);
    }

    #[test]
    fn writes_outside_the_limits_or_the_placement_are_refused() {
        let mut node = node(1, 5);
        let limits = ReplicaConfig::default();
        let foreign = (0..)
            .map(|index| ShardId(format!("{index:04x}")))
            .find(|shard| !node.replicas_of(shard).contains(&NodeId(1)))
            .unwrap();
        assert!(matches!(
            node.handle_local_write(NOW, write(&foreign, "p", Some("x"))),
            Err(WriteError::NotAReplica { .. })
        ));
        let mine = (0..)
            .map(|index| ShardId(format!("{index:04x}")))
            .find(|shard| node.replicas_of(shard).contains(&NodeId(1)))
            .unwrap();
        let huge = LocalWrite {
            shard: mine.clone(),
            key: RecordKey::new(Table::Post, "p"),
            body: Some(Bytes::from(vec![0; limits.body_bytes_max + 1])),
        };
        assert!(matches!(node.handle_local_write(NOW, huge), Err(WriteError::BodyTooLarge { .. })));
        let long_key = LocalWrite {
            shard: mine,
            key: RecordKey::new(Table::Post, "k".repeat(limits.key_bytes_max + 1)),
            body: None,
        };
        assert!(matches!(node.handle_local_write(NOW, long_key), Err(WriteError::KeyTooLarge { .. })));
        assert_eq!(node.durable().log.end_seq(), 0, "nothing refused is logged");
    }

    /// Delivers messages between `nodes` (ids 1, 2, …) until none is left.
    fn deliver_all(nodes: &mut [ReplicaNode], now: u64) {
        for _ in 0..1_000 {
            let mut quiet = true;
            for from in 0..nodes.len() {
                while let Some((to, message)) = nodes[from].poll_transmit() {
                    quiet = false;
                    let from_id = nodes[from].id();
                    nodes[to.0 as usize - 1].handle_message(now, from_id, message);
                }
            }
            if quiet {
                return;
            }
        }
        panic!("the nodes never stopped talking");
    }

    #[test]
    fn after_a_change_of_siblings_a_new_shard_still_settles_on_every_replica() {
        let mut nodes = [node(1, 1), node(2, 1)];
        for node in &mut nodes {
            node.set_siblings(siblings(2));
            assert!(node.durable().shards_settle_by_repair_only, "logs may have skipped it: repair settles");
        }
        nodes[0].handle_connected(NOW, NodeId(2));
        nodes[1].handle_connected(NOW, NodeId(1));
        deliver_all(&mut nodes, NOW);

        // A user created on node 1: its creator settles it; node 2, which got it by
        // the log, settles at a repair round soon after, not minutes later.
        let shard = ShardId("u1".into());
        nodes[0].handle_local_write(NOW, write(&shard, "p1", Some("hello"))).unwrap();
        assert_eq!(nodes[0].floor_of(&shard), Some(Timestamp::default()));
        deliver_all(&mut nodes, NOW);
        assert!(nodes[1].store().get(&shard, &RecordKey::new(Table::Post, "p1")).is_some());
        assert_eq!(nodes[1].floor_of(&shard), None);
        let soon = NOW + ReplicaConfig::default().repair_after_connect_wait_max_ms;
        assert!(nodes[1].poll_timeout().is_some_and(|at| at <= soon));
        for node in &mut nodes {
            node.handle_timeout(soon);
        }
        deliver_all(&mut nodes, soon);
        assert_eq!(nodes[1].floor_of(&shard), Some(Timestamp::default()), "settled on node 1's probe");

        // A deletion that tombstones what a node holds settles nothing.
        let other = ShardId("u2".into());
        nodes[1].handle_local_write(soon, write(&other, "p2", None)).unwrap();
        assert_eq!(nodes[1].floor_of(&other), None);
    }

    #[test]
    fn a_session_starts_with_hello_and_wakes_for_its_retransmit() {
        let mut node = node(1, 2);
        assert_eq!(node.poll_transmit(), None);
        node.handle_connected(NOW, NodeId(2));
        match node.poll_transmit() {
            Some((NodeId(2), Message::Hello(hello))) => assert!(hello.reply_wanted),
            other => panic!("expected a Hello to node 2, got {other:?}"),
        }
        assert_eq!(node.poll_timeout(), Some(NOW + ReplicaConfig::default().retransmit_after_ms));
        node.handle_timeout(NOW + ReplicaConfig::default().retransmit_after_ms);
        assert!(matches!(node.poll_transmit(), Some((NodeId(2), Message::Hello(_)))), "Hello is resent");
        // Messages from strangers are ignored.
        node.handle_message(NOW, NodeId(99), Message::Want(Vec::new()));
        assert_eq!(node.poll_transmit(), None);
    }
}
