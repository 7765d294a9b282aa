//! Deterministic simulator for replication (TigerBeetle's VOPR, quinn-proto's test
//! harness): N `ReplicaNode`s on a seeded network that loses, delays, reorders and
//! duplicates frames, partitions and heals, crashes nodes (keeping only their durable
//! parts), loses a node's log, and skews each node's clock by up to ±60 s, while
//! clients write, update and delete across shards at any replica. After faults stop
//! and the system quiesces, a checker compares every replica with the history of
//! acknowledged writes. Every run is a function of its seed.
//!
//! A second campaign restores a node from an old snapshot of its store and durable
//! state (an old backup) among siblings that deleted records and collected the
//! tombstones since: nothing deleted comes back, nothing live is lost.
//!
//! `EDGENODE_SIM_SEED=<seed>` replays one seed; `EDGENODE_SIM_SEEDS=<n>` runs n seeds
//! (`EDGENODE_RESTORE_SEED` / `EDGENODE_RESTORE_SEEDS` for the restore campaign).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;

use super::item::{Item, RecordKey, ShardId, Table};
use super::log::ChangeLog;
use super::node::{DurableState, LocalWrite, ReplicaConfig, ReplicaNode, ReplicaStats};
use super::placement::{place, Sibling, TRUST_MAX};
use super::store::{MemoryStore, ReplicaStore};
use super::wire;
use crate::core::model::NodeId;
use crate::core::sim::{add_fields, FaultPlan, NetworkFaults, Rng, SeedTotals, Simulator, World, WorldEvent};

/// Steps after which a run is declared live-locked.
const STEPS_MAX: u64 = 2_000_000;

/// Small limits so batching, windows, splits, compaction and GC all happen in a
/// run of a few dozen writes.
pub fn sim_config() -> ReplicaConfig {
    ReplicaConfig {
        replicas_wanted: 3,
        frame_bytes_max: 4096,
        batch_bytes_max: 1024,
        body_bytes_max: 128,
        key_bytes_max: 64,
        log_entries_in_flight_max: 8,
        log_entries_max: 24,
        repair_list_items_max: 3,
        outbox_messages_max: 256,
        heartbeat_interval_ms: 5_000,
        retransmit_after_ms: 1_500,
        repair_interval_ms: 15_000,
        repair_after_connect_wait_max_ms: 5_000,
        gc_interval_ms: 4_000,
        tombstones_per_gc_max: 16,
        remote_clock_ahead_max_ms: 10 * 60_000,
    }
}

/// The faults and writes of one seeded run. Frames held back for 20–120 s arrive
/// long after the state they were made from, e.g. after a tombstone they predate
/// was collected; a restart with data loss loses the node's change log.
const FAULT_PLAN: FaultPlan = FaultPlan {
    loss_per_mille_max: 100,
    duplication_per_mille_max: 50,
    held_back_per_mille_max: 20,
    delay_ms_max: 5..=400,
    held_back_ms: 20_000..=120_000,
    workload_events: 20..=80,
    workload_ms: WORKLOAD_MS,
    partitions_max: 3,
    partition_ms: 1_000..=20_000,
    crashes_max: 3,
    downtime_ms: 100..=15_000,
    restart_data_loss: 0.35,
};

struct SimNode {
    replica: Option<ReplicaNode<MemoryStore>>,
    /// What survives a crash, while the node is down.
    parked: Option<(MemoryStore, DurableState)>,
}

/// A world of sibling nodes; frames travel the `World`'s network as bytes.
pub struct Sim {
    world: World<Vec<u8>>,
    ids: Vec<NodeId>,
    siblings: Vec<Sibling>,
    config: ReplicaConfig,
    nodes: Vec<SimNode>,
    /// Every write a client got acknowledged.
    pub history: Vec<Item>,
    /// Stats of node incarnations that crashed.
    retired_stats: Vec<ReplicaStats>,
    /// A node restored from an old snapshot takes no client writes until every
    /// sibling's Hello told it how far its lost log had gone (see the module doc of
    /// `replication`, "What is absent").
    restored_waiting: Option<usize>,
}

impl Sim {
    pub fn new(seed: u64, node_count: usize, config: ReplicaConfig) -> Sim {
        let ids: Vec<NodeId> = (0..node_count).map(|index| NodeId(0xa000 + index as u64)).collect();
        let siblings: Vec<Sibling> = ids
            .iter()
            .enumerate()
            .map(|(index, id)| Sibling { id: *id, zone: format!("zone{}", index % 3), trust: TRUST_MAX })
            .collect();
        let mut sim = Sim {
            world: World::new(seed, node_count, STEPS_MAX, &FAULT_PLAN),
            ids,
            siblings,
            config,
            nodes: Vec::new(),
            history: Vec::new(),
            retired_stats: Vec::new(),
            restored_waiting: None,
        };
        for index in 0..node_count {
            sim.nodes.push(SimNode { replica: None, parked: Some((MemoryStore::default(), DurableState::default())) });
            sim.boot(index, false);
        }
        sim.reconnect();
        sim
    }

    pub fn set_faults(&mut self, faults: NetworkFaults) {
        self.world.faults = faults;
    }

    pub fn set_skew(&mut self, node: usize, skew_ms: i64) {
        self.world.set_skew(node, skew_ms);
        self.flush(node);
    }

    pub fn node(&self, node: usize) -> &ReplicaNode<MemoryStore> {
        self.nodes[node].replica.as_ref().expect("node is up")
    }

    pub fn id(&self, node: usize) -> NodeId {
        self.ids[node]
    }

    pub fn replicas(&self, shard: &ShardId) -> Vec<usize> {
        let ids = place(shard, &self.siblings, self.config.replicas_wanted);
        (0..self.ids.len()).filter(|index| ids.contains(&self.ids[*index])).collect()
    }

    fn index_of(&self, id: NodeId) -> usize {
        self.ids.iter().position(|known| *known == id).expect("messages go to siblings")
    }

    pub fn crash(&mut self, node: usize) {
        let Some(replica) = self.nodes[node].replica.take() else { return };
        self.retired_stats.push(replica.stats().clone());
        self.nodes[node].parked = Some(replica.into_parts());
        self.world.crashed(node);
        self.reconnect();
    }

    pub fn restart(&mut self, node: usize, lose_log: bool) {
        if self.nodes[node].replica.is_some() {
            return;
        }
        self.boot(node, lose_log);
        self.reconnect();
    }

    /// A copy of a running node's store and durable state: a backup.
    pub fn snapshot(&self, node: usize) -> (MemoryStore, DurableState) {
        let replica = self.node(node);
        (replica.store().clone(), replica.durable().clone())
    }

    /// The node's disk dies and `backup` comes back in its place. Writes it made
    /// since that no sibling has (by record or by mark) died with the disk, so they
    /// leave the history the checks hold the nodes to.
    pub fn restore(&mut self, node: usize, backup: (MemoryStore, DurableState)) -> Result<(), String> {
        self.crash(node);
        // Frames it sent before it died arrive or are lost by now.
        self.run_for(DOWNTIME_BEFORE_RESTORE_MS)?;
        let id = self.ids[node];
        let (backup_store, _) = &backup;
        let siblings_have = |sim: &Sim, item: &Item| {
            (0..sim.ids.len()).filter(|other| *other != node).any(|other| {
                let (store, durable) = match (&sim.nodes[other].replica, &sim.nodes[other].parked) {
                    (Some(replica), _) => (replica.store(), replica.durable()),
                    (None, Some((store, durable))) => (store, durable),
                    (None, None) => return false,
                };
                store.get(&item.shard, &item.key).is_some_and(|held| held.version >= item.version)
                    || (sim.replicas(&item.shard).contains(&other)
                        && durable.received.get(&id).is_some_and(|mark| item.version.at <= mark.clock))
            })
        };
        let lost: Vec<bool> = self
            .history
            .iter()
            .map(|item| {
                item.version.origin == id
                    && backup_store.get(&item.shard, &item.key).is_none_or(|held| held.version < item.version)
                    && !siblings_have(self, item)
            })
            .collect();
        let mut lost = lost.into_iter();
        self.history.retain(|_| !lost.next().expect("one flag per item"));
        self.nodes[node].parked = Some(backup);
        self.restored_waiting = Some(node);
        self.restart(node, false);
        Ok(())
    }

    /// A client's write at `node`; returns the acknowledged item.
    pub fn write(&mut self, node: usize, shard: &ShardId, key: RecordKey, body: Option<&str>) -> Item {
        let now = self.world.local_time(node);
        let write =
            LocalWrite { shard: shard.clone(), key, body: body.map(|text| Bytes::copy_from_slice(text.as_bytes())) };
        let replica = self.nodes[node].replica.as_mut().expect("writes go to a running node");
        let item = replica.handle_local_write(now, write).expect("the simulator writes only at replicas");
        self.history.push(item.clone());
        self.flush(node);
        item
    }

    fn random_skew(&mut self) -> i64 {
        self.world.rng.between(0, 120_000) as i64 - 60_000
    }

    fn random_write(&mut self) {
        let shard = ShardId(format!("{:04x}", self.world.rng.below(SHARDS)));
        if let Some(restored) = self.restored_waiting {
            let replica = self.nodes[restored].replica.as_ref();
            let heard_from_all = replica.is_some_and(|replica| {
                self.ids.iter().filter(|id| **id != replica.id()).all(|id| replica.peer_lag(*id).is_some())
            });
            if heard_from_all {
                self.restored_waiting = None;
            }
        }
        let up: Vec<usize> = self
            .replicas(&shard)
            .into_iter()
            .filter(|node| self.nodes[*node].replica.is_some() && self.restored_waiting != Some(*node))
            .collect();
        if up.is_empty() {
            return;
        }
        let node = up[self.world.rng.below(up.len() as u64) as usize];
        let table = [Table::Post, Table::Like, Table::Comment, Table::Follow][self.world.rng.below(4) as usize];
        let key = RecordKey::new(table, format!("k{}", self.world.rng.below(KEYS_PER_SHARD)));
        let body =
            if self.world.rng.chance(0.3) { None } else { Some(format!("{shard}/{key:?}#{}", self.history.len())) };
        self.write(node, &shard, key, body.as_deref());
    }

    /// Every replica of every shard holds exactly the newest acknowledged version of
    /// every record (a newest tombstone may be gone: collected), nothing else, and
    /// non-replicas hold nothing.
    pub fn check(&self) -> Result<(), String> {
        let mut newest: BTreeMap<(ShardId, RecordKey), &Item> = BTreeMap::new();
        for item in &self.history {
            let slot = newest.entry((item.shard.clone(), item.key.clone())).or_insert(item);
            if item.version > slot.version {
                *slot = item;
            }
        }
        let mut shards: BTreeSet<ShardId> = newest.keys().map(|(shard, _)| shard.clone()).collect();
        for node in &self.nodes {
            shards.extend(node.replica.as_ref().expect("all up when checking").store().shards());
        }
        for shard in &shards {
            let replicas = self.replicas(shard);
            for (index, node) in self.nodes.iter().enumerate() {
                let held: BTreeMap<RecordKey, Item> = node
                    .replica
                    .as_ref()
                    .expect("up")
                    .store()
                    .items(shard)
                    .into_iter()
                    .map(|item| (item.key.clone(), item))
                    .collect();
                if !replicas.contains(&index) {
                    if !held.is_empty() {
                        return Err(format!(
                            "node {index} holds {} records of shard {shard} it does not replicate",
                            held.len()
                        ));
                    }
                    continue;
                }
                for ((item_shard, key), expected) in newest.range((shard.clone(), lowest_key())..) {
                    if item_shard != shard {
                        break;
                    }
                    match held.get(key) {
                        Some(actual) if actual == *expected => {}
                        Some(actual) if actual.version < expected.version => {
                            let what =
                                if expected.is_tombstone() { "deleted record came back" } else { "acked write lost" };
                            return Err(format!(
                                "{what}: node {index} holds {shard}/{key:?} at {:?} (tombstone: {}), newest acked is {:?} (tombstone: {})",
                                actual.version, actual.is_tombstone(), expected.version, expected.is_tombstone()
                            ));
                        }
                        Some(actual) => {
                            return Err(format!(
                                "node {index} holds {shard}/{key:?} as {actual:?}, newest acked is {expected:?}"
                            ))
                        }
                        None if expected.is_tombstone() => {}
                        None => {
                            return Err(format!(
                                "acked write lost: node {index} has nothing for {shard}/{key:?}, newest acked is {:?}",
                                expected.version
                            ))
                        }
                    }
                }
                for key in held.keys() {
                    if !newest.contains_key(&(shard.clone(), key.clone())) {
                        return Err(format!("node {index} holds {shard}/{key:?} that no client wrote"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Invariant 4, checked mid-run where repair has not yet hidden a wrong mark:
    /// a node whose mark for an origin has passed a write holds that write (or newer)
    /// whenever it is still the newest write of its record, or has collected it if it
    /// is a tombstone under the node's purge floor.
    pub fn check_marks(&self) -> Result<(), String> {
        let mut newest: BTreeMap<(&ShardId, &RecordKey), &Item> = BTreeMap::new();
        for item in &self.history {
            let slot = newest.entry((&item.shard, &item.key)).or_insert(item);
            if item.version > slot.version {
                *slot = item;
            }
        }
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(replica) = &node.replica else { continue };
            let durable = replica.durable();
            for write in newest.values() {
                let covered =
                    durable.received.get(&write.version.origin).is_some_and(|mark| write.version.at <= mark.clock);
                if !covered || !self.replicas(&write.shard).contains(&index) {
                    continue;
                }
                let held = replica.store().get(&write.shard, &write.key);
                let collected = held.is_none() && write.is_tombstone() && write.version.at < durable.purge_floor;
                if !collected && held.as_ref().is_none_or(|held| held.version < write.version) {
                    return Err(format!(
                        "node {index}'s mark for {} claims {:?} but it holds {:?} of {}/{:?}",
                        write.version.origin,
                        write.version,
                        held.map(|held| held.version),
                        write.shard,
                        write.key
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every tombstone is collected once everyone has had time to see it.
    pub fn check_tombstones_collected(&self) -> Result<(), String> {
        for (index, node) in self.nodes.iter().enumerate() {
            let left = node.replica.as_ref().expect("up").store().tombstone_count();
            if left > 0 {
                return Err(format!("node {index} still holds {left} tombstones after quiescing"));
            }
        }
        Ok(())
    }

    /// Stats of every node incarnation, summed.
    pub fn total_stats(&self) -> ReplicaStats {
        let mut total = ReplicaStats::default();
        let live = self.nodes.iter().filter_map(|node| node.replica.as_ref()).map(|replica| replica.stats());
        for stats in self.retired_stats.iter().chain(live) {
            add_stats(&mut total, stats);
        }
        total
    }

    /// One line per node with its horizons and counters, for failure reports.
    pub fn describe_nodes(&self) -> String {
        let mut text = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(replica) = &node.replica else { continue };
            let durable = replica.durable();
            let _ = write!(
                text,
                "\n  node {index} ({}): epoch {} log {}..={}, complete {:?}, horizon {:?}, floor {:?}, received {:?}, {:?}",
                replica.id(),
                durable.log.epoch(),
                durable.log.first_seq(),
                durable.log.end_seq(),
                replica.complete(),
                replica.stable_horizon(),
                durable.purge_floor,
                durable.received,
                replica.stats()
            );
        }
        text
    }

    /// A digest of every node's contents and durable marks, to compare replays.
    pub fn digest(&self) -> String {
        let mut digest = String::new();
        for node in &self.nodes {
            let replica = node.replica.as_ref().expect("up");
            for shard in replica.store().shards() {
                for item in replica.store().items(&shard) {
                    let _ = write!(digest, "{shard}/{:?}@{:?};", item.key, item.version);
                }
            }
            let _ = writeln!(digest, "|{:?}|{:?}", replica.durable().received, replica.durable().purge_floor);
        }
        digest
    }
}

impl Simulator for Sim {
    type Message = Vec<u8>;

    fn world(&mut self) -> &mut World<Vec<u8>> {
        &mut self.world
    }

    fn boot(&mut self, node: usize, lose_log: bool) {
        let (store, mut durable) = self.nodes[node].parked.take().expect("node is down");
        if lose_log {
            durable.log = ChangeLog::default();
        }
        let now = self.world.local_time(node);
        let mut replica =
            ReplicaNode::new(self.ids[node], self.config.clone(), self.siblings.clone(), store, durable, now);
        if lose_log {
            replica.start_new_epoch(now);
        }
        self.nodes[node].replica = Some(replica);
        self.world.booted(node);
        self.flush(node);
    }

    fn flush(&mut self, node: usize) {
        let deadline = self.nodes[node].replica.as_ref().and_then(ReplicaNode::poll_timeout);
        self.world.set_deadline(node, deadline);
        while let Some((to, message)) = self.nodes[node].replica.as_mut().and_then(ReplicaNode::poll_transmit) {
            let frame = wire::encode(&message, self.config.frame_bytes_max)
                .unwrap_or_else(|error| panic!("node {node} built an unsendable message: {error}"));
            let to = self.index_of(to);
            self.world.send(node, to, frame);
        }
    }

    fn handle_link_change(&mut self, node: usize, peer: usize, up: bool) {
        let now = self.world.local_time(node);
        let peer_id = self.ids[peer];
        if let Some(replica) = self.nodes[node].replica.as_mut() {
            if up {
                replica.handle_connected(now, peer_id);
            } else {
                replica.handle_disconnected(now, peer_id);
            }
        }
    }

    fn handle_timer(&mut self, node: usize) {
        let now = self.world.local_time(node);
        self.nodes[node].replica.as_mut().expect("up").handle_timeout(now);
        self.flush(node);
    }

    fn handle_delivery(&mut self, from: usize, to: usize, frame: Vec<u8>) -> Result<(), String> {
        let (message, used) = wire::decode(&frame, self.config.frame_bytes_max)
            .map_err(|error| format!("a frame from node {from} did not decode: {error}"))?
            .ok_or("a whole frame decoded as incomplete")?;
        if used != frame.len() {
            return Err("a frame decoded shorter than it is".into());
        }
        let now = self.world.local_time(to);
        let from_id = self.ids[from];
        self.nodes[to].replica.as_mut().expect("link is up").handle_message(now, from_id, message);
        self.flush(to);
        Ok(())
    }

    fn handle_workload(&mut self) {
        self.random_write();
    }

    fn handle_crash(&mut self, node: usize) -> Result<(), String> {
        self.check_marks()?;
        self.crash(node);
        Ok(())
    }

    fn handle_restart(&mut self, node: usize, lose_log: bool) {
        let skew_ms = self.random_skew();
        self.world.set_skew(node, skew_ms);
        self.restart(node, lose_log);
    }
}

fn add_stats(total: &mut ReplicaStats, stats: &ReplicaStats) {
    add_fields!(total, stats;
        items_applied, items_stale, items_refused, messages_stale, items_collected, records_dropped, messages_dropped,
        log_batches_sent, log_retransmits, repair_rounds, repair_items_pushed, tombstones_purged, epochs_started);
}

fn lowest_key() -> RecordKey {
    RecordKey::new(Table::User, "")
}

const SHARDS: u64 = 6;
const KEYS_PER_SHARD: u64 = 5;
/// Client writes happen in this window; faults too.
const WORKLOAD_MS: u64 = 60_000;
/// Long enough after the faults stop for repair rounds and for every node's horizon
/// to pass the newest tombstone, clock skew included.
const QUIESCE_MS: u64 = 150_000;

/// What one random run did, for the coverage summary.
#[derive(Debug, Default)]
pub struct RunReport {
    pub nodes: usize,
    pub writes: usize,
    pub frames_sent: u64,
    pub frames_lost: u64,
    pub crashes: u64,
    pub stats: ReplicaStats,
}

impl SeedTotals for RunReport {
    fn add(&mut self, run: RunReport) {
        add_fields!(self, run; nodes, writes, frames_sent, frames_lost, crashes);
        add_stats(&mut self.stats, &run.stats);
    }
}

/// The coverage line: what the summed runs did.
impl std::fmt::Display for RunReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} writes, {} frames ({} lost), {} crashes; applied {}, repair pushes {}, retransmits {}, \
             stale messages dropped {}, tombstones purged {}, epochs started {}, collected items refused {}, \
             records dropped on a floor {}",
            self.writes,
            self.frames_sent,
            self.frames_lost,
            self.crashes,
            self.stats.items_applied,
            self.stats.repair_items_pushed,
            self.stats.log_retransmits,
            self.stats.messages_stale,
            self.stats.tombstones_purged,
            self.stats.epochs_started,
            self.stats.items_collected,
            self.stats.records_dropped,
        )
    }
}

/// One seeded run: random world, random workload, random faults, then the checks.
pub fn run_seed(seed: u64) -> Result<RunReport, String> {
    let mut rng = Rng::new(seed ^ 0x00ed_9e0d_e5ee_d000);
    let node_count = rng.between(3, 5) as usize;
    let mut sim = Sim::new(seed, node_count, sim_config());
    for node in 0..node_count {
        let skew = rng.between(0, 120_000) as i64 - 60_000;
        sim.set_skew(node, skew);
    }
    sim.world.schedule_random_faults(&mut rng, &FAULT_PLAN);
    sim.run_until(WORKLOAD_MS)?;
    sim.check_marks().map_err(|error| error + &sim.describe_nodes())?;
    sim.stop_faults();
    sim.run_until(WORKLOAD_MS + QUIESCE_MS)?;
    sim.check()
        .and_then(|()| sim.check_marks())
        .and_then(|()| sim.check_tombstones_collected())
        .map_err(|error| error + &sim.describe_nodes())?;
    Ok(RunReport {
        nodes: node_count,
        writes: sim.history.len(),
        frames_sent: sim.world.messages_sent,
        frames_lost: sim.world.messages_lost,
        crashes: sim.world.crashes,
        stats: sim.total_stats(),
    })
}

/// The restore campaign's faults: loss, duplication, delay and partitions, no
/// crashes (the restore is the crash). Its workload runs before and after the restore.
const RESTORE_FAULT_PLAN: FaultPlan = FaultPlan {
    loss_per_mille_max: 100,
    duplication_per_mille_max: 50,
    held_back_per_mille_max: 0,
    delay_ms_max: 5..=400,
    held_back_ms: 0..=0,
    workload_events: 20..=60,
    workload_ms: RESTORE_WORKLOAD_MS,
    partitions_max: 3,
    partition_ms: 1_000..=20_000,
    crashes_max: 0,
    downtime_ms: 0..=0,
    restart_data_loss: 0.0,
};
const RESTORE_WORKLOAD_MS: u64 = 150_000;
/// Longer than any frame's delay in a restore run (nothing is held back there).
const DOWNTIME_BEFORE_RESTORE_MS: u64 = 1_000;

/// One seeded restore: three siblings, each shard on all three; one node is backed
/// up early, the others go on writing and deleting until their tombstones are
/// collected, then its disk dies and the backup comes back, among faults.
pub fn run_restore_seed(seed: u64) -> Result<RunReport, String> {
    let mut rng = Rng::new(seed ^ 0x0e57_04ed_0b5c_0000);
    let mut sim = Sim::new(seed, 3, sim_config());
    for node in 0..3 {
        let skew = rng.between(0, 60_000) as i64 - 30_000;
        sim.set_skew(node, skew);
    }
    sim.world.schedule_random_faults(&mut rng, &RESTORE_FAULT_PLAN);
    let restored = rng.below(3) as usize;
    let backup_at = rng.between(5_000, 40_000);
    let restore_at = rng.between(backup_at + 40_000, 110_000);
    sim.run_until(backup_at)?;
    let backup = sim.snapshot(restored);
    sim.run_until(restore_at)?;
    sim.restore(restored, backup)?;
    sim.run_until(RESTORE_WORKLOAD_MS)?;
    sim.stop_faults();
    sim.run_until(RESTORE_WORKLOAD_MS + QUIESCE_MS)?;
    sim.check().and_then(|()| sim.check_tombstones_collected()).map_err(|error| {
        format!("{error} (node {restored} restored at {restore_at} ms from {backup_at} ms)") + &sim.describe_nodes()
    })?;
    Ok(RunReport {
        nodes: 3,
        writes: sim.history.len(),
        frames_sent: sim.world.messages_sent,
        frames_lost: sim.world.messages_lost,
        crashes: 1,
        stats: sim.total_stats(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Timestamp;
    use crate::core::sim::{run_seeds, SeedCampaign};

    const SEED_CAMPAIGN: SeedCampaign = SeedCampaign {
        name: "replication sim",
        seed_variable: "EDGENODE_SIM_SEED",
        seed_count_variable: "EDGENODE_SIM_SEEDS",
        seed_count_default: 1000,
        test_filter: "core::replication::sim",
    };

    #[test]
    fn simulated_siblings_converge_under_faults() {
        let runs = run_seeds(&SEED_CAMPAIGN, run_seed);
        let totals = runs.totals;
        if runs.seed_count >= 100 {
            // The faults the run claims to cover did happen.
            assert!(totals.crashes > 0 && totals.frames_lost > 0 && totals.stats.log_retransmits > 0);
            assert!(totals.stats.tombstones_purged > 0 && totals.stats.epochs_started > 0);
            assert!(totals.stats.repair_items_pushed > 0);
        }
    }

    const RESTORE_CAMPAIGN: SeedCampaign = SeedCampaign {
        name: "replication restore sim",
        seed_variable: "EDGENODE_RESTORE_SEED",
        seed_count_variable: "EDGENODE_RESTORE_SEEDS",
        seed_count_default: 300,
        test_filter: "core::replication::sim::tests::old_backups",
    };

    #[test]
    fn old_backups_restored_among_moving_siblings_resurrect_nothing_and_lose_nothing() {
        let runs = run_seeds(&RESTORE_CAMPAIGN, run_restore_seed);
        if runs.seed_count >= 100 {
            // The restores did meet collected deletes, and floors stopped them.
            let stats = &runs.totals.stats;
            assert!(stats.tombstones_purged > 0 && stats.epochs_started > 0);
            assert!(stats.items_collected + stats.records_dropped > 0, "{:?}", stats);
        }
    }

    #[test]
    fn an_old_backup_restored_after_a_collected_delete_brings_back_nothing_deleted() {
        let mut sim = Sim::new(7, 3, sim_config());
        sim.run_for(1_000).unwrap();
        let shard = shard_on(&sim, &[0, 1, 2]);
        let doomed = sim.write(0, &shard, post("doomed"), Some("v1"));
        let kept = sim.write(0, &shard, post("kept"), Some("v1"));
        sim.run_for(30_000).unwrap();
        let backup = sim.snapshot(0);

        sim.write(1, &shard, post("doomed"), None);
        let later = sim.write(0, &shard, post("later"), Some("after the backup"));
        let elsewhere = sim.write(2, &shard, post("elsewhere"), Some("after the backup"));
        sim.run_for(30_000).unwrap();
        for node in 0..3 {
            assert_eq!(sim.node(node).store().tombstone_count(), 0, "node {node} collected the tombstone");
            let floor = sim.node(node).floor_of(&shard).expect("settled at the first record");
            assert!(floor > doomed.version.at, "node {node}'s floor {floor:?} is past the delete");
        }

        sim.restore(0, backup).unwrap();
        assert_eq!(sim.node(0).store().get(&shard, &post("doomed")), Some(doomed.clone()));
        sim.run_for(30_000).unwrap();
        for node in 0..3 {
            let store = sim.node(node).store();
            assert_eq!(store.get(&shard, &post("doomed")), None, "node {node}: the delete holds");
            assert_eq!(store.get(&shard, &post("kept")), Some(kept.clone()), "node {node}");
            assert_eq!(store.get(&shard, &post("later")), Some(later.clone()), "node {node}");
            assert_eq!(store.get(&shard, &post("elsewhere")), Some(elsewhere.clone()), "node {node}");
        }
        let stats = sim.total_stats();
        assert!(stats.items_collected + stats.records_dropped > 0, "{stats:?}");
        assert!(sim.node(0).floor_of(&shard).is_some(), "the restored node settled again by repair");
        sim.check().unwrap();
    }

    #[test]
    fn a_seed_replays_identically() {
        let digests: Vec<String> = (0..2)
            .map(|_| {
                let mut sim = Sim::new(42, 4, sim_config());
                sim.set_faults(NetworkFaults { loss: 0.05, duplication: 0.05, delay_ms_max: 200, held_back: 0.01 });
                for _ in 0..30 {
                    let at = sim.world.rng.below(20_000);
                    sim.world.schedule(at, WorldEvent::Workload);
                }
                sim.run_until(60_000).unwrap();
                sim.digest()
            })
            .collect();
        assert_eq!(digests[0], digests[1]);
    }

    fn shard_on(sim: &Sim, nodes: &[usize]) -> ShardId {
        (0..)
            .map(|index| ShardId(format!("{index:04x}")))
            .find(|shard| {
                let mut replicas = sim.replicas(shard);
                replicas.sort();
                replicas == nodes
            })
            .expect("some shard lands there")
    }

    fn post(key: &str) -> RecordKey {
        RecordKey::new(Table::Post, key)
    }

    #[test]
    fn a_write_reaches_every_replica_by_the_log_alone() {
        let mut sim = Sim::new(1, 3, sim_config());
        sim.run_for(1_000).unwrap();
        let shard = shard_on(&sim, &[0, 1, 2]);
        let rounds_before: u64 = (0..3).map(|node| sim.node(node).stats().repair_rounds).sum();
        let item = sim.write(0, &shard, post("p1"), Some("hello"));
        // Far less than a repair interval: only the log stream can have carried it.
        sim.run_for(100).unwrap();
        let rounds_after: u64 = (0..3).map(|node| sim.node(node).stats().repair_rounds).sum();
        assert_eq!(rounds_before, rounds_after);
        for node in 1..3 {
            assert_eq!(sim.node(node).store().get(&shard, &post("p1")), Some(item.clone()));
        }
    }

    #[test]
    fn a_late_old_write_loses_to_a_tombstone_which_is_collected_only_once_every_replica_has_it() {
        let mut sim = Sim::new(2, 3, sim_config());
        sim.set_skew(2, -60_000);
        sim.run_for(1_000).unwrap();
        let shard = shard_on(&sim, &[0, 1, 2]);
        sim.write(0, &shard, post("p1"), Some("v1"));
        sim.run_for(1_000).unwrap();

        sim.partition(&[2]);
        let tombstone = sim.write(1, &shard, post("p1"), None);
        // Node 2, a minute behind and cut off, updates the record after the delete in
        // real time but before it in version order: a late old write.
        sim.run_for(1_000).unwrap();
        let late = sim.write(2, &shard, post("p1"), Some("late"));
        assert!(late.version < tombstone.version);
        sim.run_for(30_000).unwrap();
        for node in 0..2 {
            let held = sim.node(node).store().get(&shard, &post("p1")).expect("tombstone kept while node 2 lacks it");
            assert!(held.is_tombstone());
            let acks = sim.node(node).acknowledged_by(tombstone.version.at);
            assert!(!acks.contains(&sim.id(2)), "node 2 cannot have acknowledged it: {acks:?}");
        }

        sim.heal(&[2]);
        sim.run_for(150_000).unwrap();
        for node in 0..3 {
            assert_eq!(sim.node(node).store().get(&shard, &post("p1")), None, "node {node}");
            assert!(sim.node(node).durable().purge_floor > tombstone.version.at);
            assert_eq!(sim.node(node).acknowledged_by(tombstone.version.at).len(), 3);
        }
        sim.check().unwrap();
    }

    #[test]
    fn a_node_that_loses_its_log_starts_a_new_epoch_and_peers_still_get_everything() {
        let mut sim = Sim::new(3, 3, sim_config());
        sim.run_for(1_000).unwrap();
        let shard = shard_on(&sim, &[0, 1, 2]);
        sim.partition(&[0]);
        for index in 0..10 {
            sim.write(0, &shard, post(&format!("p{index}")), Some("x"));
        }
        let epoch_before = sim.node(0).durable().log.epoch();
        sim.crash(0);
        sim.restart(0, true);
        assert!(sim.node(0).durable().log.epoch() > epoch_before);
        sim.heal(&[0]);
        sim.run_for(5_000).unwrap();
        sim.check().unwrap();
        let marks = &sim.node(1).durable().received;
        assert_eq!(marks[&sim.id(0)].epoch, sim.node(0).durable().log.epoch());
    }

    #[test]
    fn an_overgrown_log_is_compacted_and_a_returning_peer_catches_up() {
        let mut sim = Sim::new(4, 3, sim_config());
        sim.run_for(1_000).unwrap();
        let shard = shard_on(&sim, &[0, 1, 2]);
        sim.crash(2);
        // Node 2 is away, so nothing can be truncated and the log outgrows its limit.
        for index in 0..40 {
            sim.write(0, &shard, post(&format!("p{}", index % 8)), Some(&format!("v{index}")));
            sim.run_for(100).unwrap();
        }
        sim.run_for(10_000).unwrap();
        assert!(sim.node(0).stats().epochs_started > 0, "compacted");
        let log = &sim.node(0).durable().log;
        assert_eq!(log.entries_at_epoch_start(), 8, "the new epoch starts with one entry per record");
        sim.restart(2, false);
        sim.run_for(10_000).unwrap();
        sim.check().unwrap();
    }

    #[test]
    fn a_stale_repair_push_from_before_a_purge_is_dropped() {
        let mut sim = Sim::new(5, 3, sim_config());
        sim.run_for(1_000).unwrap();
        let shard = shard_on(&sim, &[0, 1, 2]);
        let old = sim.write(0, &shard, post("p1"), Some("old"));
        sim.run_for(1_000).unwrap();
        let stale_push = Message::Items(Items { complete: sim.node(1).complete(), items: vec![old] });
        sim.write(0, &shard, post("p1"), None);
        sim.run_for(60_000).unwrap();
        assert_eq!(sim.node(2).store().get(&shard, &post("p1")), None, "tombstone collected");
        assert!(sim.node(2).durable().purge_floor > Timestamp(0));
        // The push node 1 sent before the delete arrives only now.
        let now = sim.world.local_time(2);
        let from = sim.id(1);
        sim.nodes[2].replica.as_mut().unwrap().handle_message(now, from, stale_push);
        assert_eq!(sim.node(2).store().get(&shard, &post("p1")), None, "the deleted record stays deleted");
        assert_eq!(sim.node(2).stats().messages_stale, 1);
    }

    use super::super::wire::{Items, Message};

    #[test]
    fn only_shard_replicas_receive_a_shard() {
        let mut sim = Sim::new(6, 5, sim_config());
        sim.run_for(1_000).unwrap();
        for index in 0..12 {
            let shard = ShardId(format!("{index:04x}"));
            let home = sim.replicas(&shard)[0];
            sim.write(home, &shard, post("p"), Some("x"));
        }
        sim.run_for(20_000).unwrap();
        sim.check().unwrap();
    }
}
