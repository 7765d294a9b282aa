//! Placement: which siblings hold a user's shard. A pure function of the shard and the
//! sibling list (weighted rendezvous hashing, distinct zones first), a replicated
//! `PlacementRecord` that pins the result, and the plan for moving a replica
//! (add, sync, then drop) as steps a driver executes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::item::{Item, RecordKey, ShardId, Table};
use crate::core::model::{NodeId, Record, Version};

/// Copies of each shard, home included, when there are enough siblings.
pub const REPLICAS_DEFAULT: usize = 3;
/// Highest trust score; 0 means "misbehaving: never place data here".
pub const TRUST_MAX: u8 = 100;

/// A paired sibling as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub id: NodeId,
    /// Failure domain (house, street cabinet, rack). Replicas prefer distinct zones.
    pub zone: String,
    /// 0..=TRUST_MAX, from the trust ledger; 0 excludes the sibling.
    pub trust: u8,
}

/// The rendezvous hash of (shard, node): 48 uniform bits from SHA-256.
pub fn rendezvous_hash(shard: &ShardId, node: NodeId) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"edgenode/placement\0");
    hasher.update(shard.0.as_bytes());
    hasher.update([0]);
    hasher.update(node.0.to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 16
}

/// `score = rendezvous_hash(shard, node) × (trust + 1)`, in integers.
///
/// Every node must compute the same placement, so no floating point (the textbook
/// weighted rendezvous `-w / ln(h)` is not bit-identical across libms). With the hash
/// uniform in [0, 2^48), a sibling of trust `a` beats one of trust `b <= a` in a pair
/// with probability `1 - (b + 1) / (2 (a + 1))`: equal trust is a coin toss, full trust
/// against half trust wins ~75%. Fits in u64: 2^48 × 101 < 2^55.
pub fn placement_score(shard: &ShardId, sibling: &Sibling) -> u64 {
    rendezvous_hash(shard, sibling.id) * (u64::from(sibling.trust.min(TRUST_MAX)) + 1)
}

/// The replicas of `shard`, home node first: `replicas_wanted` siblings (or every
/// eligible one when fewer), highest score first, except that a sibling in a zone not
/// yet used goes before any in a used zone. The siblings shard goes to every eligible
/// sibling. Siblings with trust 0 hold nothing.
///
/// Like any rendezvous scheme, adding or removing a sibling only moves the shards for
/// which that sibling is (or was) among the chosen.
pub fn place(shard: &ShardId, siblings: &[Sibling], replicas_wanted: usize) -> Vec<NodeId> {
    let mut ranked: Vec<(u64, &Sibling)> = siblings
        .iter()
        .filter(|sibling| sibling.trust > 0)
        .map(|sibling| (placement_score(shard, sibling), sibling))
        .collect();
    // Highest score first; the id breaks the (unlikely) tie so the order is total.
    ranked.sort_by(|left, right| right.0.cmp(&left.0).then(left.1.id.cmp(&right.1.id)));
    ranked.dedup_by_key(|(_, sibling)| sibling.id);
    let wanted = if shard.is_siblings() { ranked.len() } else { replicas_wanted.min(ranked.len()) };

    let mut chosen: Vec<&Sibling> = Vec::with_capacity(wanted);
    while chosen.len() < wanted {
        let fresh_zone = ranked.iter().position(|(_, candidate)| {
            !chosen.iter().any(|taken| taken.zone == candidate.zone || taken.id == candidate.id)
        });
        let next = fresh_zone
            .or_else(|| ranked.iter().position(|(_, candidate)| !chosen.iter().any(|taken| taken.id == candidate.id)));
        match next {
            Some(index) => chosen.push(ranked.remove(index).1),
            None => break,
        }
    }
    chosen.into_iter().map(|sibling| sibling.id).collect()
}

/// Stored and wire format of `PlacementRecord`; bump with a migration and a test that
/// reads the previous format.
pub const PLACEMENT_FORMAT: u32 = 1;

/// Where a shard lives, pinned. Replicated in the siblings shard (table `Placement`,
/// key = the user id) so every sibling routes the user the same way, and merged
/// last-writer-wins like any record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub format: u32,
    /// Serving replicas, home node first.
    pub replicas: Vec<NodeId>,
    /// Replicas being added: they receive the shard's writes and repairs but do not
    /// serve it until promoted.
    pub joining: Vec<NodeId>,
}

impl PlacementRecord {
    pub fn new(replicas: Vec<NodeId>) -> PlacementRecord {
        PlacementRecord { format: PLACEMENT_FORMAT, replicas, joining: Vec::new() }
    }

    /// Every node that must receive the shard's writes.
    pub fn holders(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas.iter().chain(&self.joining).copied()
    }

    /// The record as the item that replicates it.
    pub fn to_item(&self, shard: &ShardId, version: Version) -> Item {
        Item::from_record(ShardId::siblings(), placement_key(shard), &Record::live(version, self.clone()))
            .expect("a placement record always serialises")
    }

    pub fn from_item(item: &Item) -> Result<Option<PlacementRecord>, serde_json::Error> {
        Ok(item.to_record::<PlacementRecord>()?.body)
    }
}

/// The key of `shard`'s placement record in the siblings shard.
pub fn placement_key(shard: &ShardId) -> RecordKey {
    RecordKey::new(Table::Placement, shard.0.clone())
}

/// One step of moving replicas; the driver runs them in order, each after the one
/// before it has taken effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveStep {
    /// Write this record: the new nodes join (they get the log stream and repairs).
    AddReplicas { record: PlacementRecord },
    /// Wait until `node` holds the whole shard: its whole-range fingerprint of the
    /// shard equals every serving replica's (`ReplicaStore::fingerprint` with
    /// `HashRange::ALL`; under steady writes, compare a snapshot taken after a repair).
    AwaitSync { node: NodeId },
    /// Write this record: joining nodes serve, leaving nodes are gone from it. A
    /// leaving node deletes its copy once its change-log entries for the shard are
    /// acknowledged by every remaining replica.
    DropReplicas { record: PlacementRecord, leaving: Vec<NodeId> },
}

/// The steps that take `current` to serving exactly `target` (home first) without a
/// moment where fewer than the old replicas hold the data: add, sync, then drop.
pub fn plan_move(current: &PlacementRecord, target: &[NodeId]) -> Vec<MoveStep> {
    let added: Vec<NodeId> = target.iter().copied().filter(|node| !current.replicas.contains(node)).collect();
    let leaving: Vec<NodeId> = current.replicas.iter().copied().filter(|node| !target.contains(node)).collect();
    if added.is_empty() && leaving.is_empty() && current.replicas == target && current.joining.is_empty() {
        return Vec::new();
    }
    let mut steps = Vec::new();
    if !added.is_empty() {
        let joining =
            PlacementRecord { format: PLACEMENT_FORMAT, replicas: current.replicas.clone(), joining: added.clone() };
        steps.push(MoveStep::AddReplicas { record: joining });
        steps.extend(added.iter().map(|node| MoveStep::AwaitSync { node: *node }));
    }
    steps.push(MoveStep::DropReplicas { record: PlacementRecord::new(target.to_vec()), leaving });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hlc::Timestamp;

    fn sibling(id: u64, zone: &str, trust: u8) -> Sibling {
        Sibling { id: NodeId(id), zone: zone.into(), trust }
    }

    fn shard(index: usize) -> ShardId {
        ShardId(format!("{index:032x}"))
    }

    #[test]
    fn picks_r_distinct_siblings_home_first_and_is_deterministic() {
        let siblings: Vec<Sibling> = (1..=6).map(|id| sibling(id, &format!("zone{id}"), TRUST_MAX)).collect();
        for index in 0..50 {
            let chosen = place(&shard(index), &siblings, REPLICAS_DEFAULT);
            assert_eq!(chosen.len(), 3);
            let mut unique = chosen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), 3);
            let mut reversed = siblings.clone();
            reversed.reverse();
            assert_eq!(place(&shard(index), &reversed, REPLICAS_DEFAULT), chosen, "input order must not matter");
        }
        let two = &siblings[..2];
        assert_eq!(place(&shard(0), two, REPLICAS_DEFAULT).len(), 2, "all siblings when fewer than R");
        assert_eq!(place(&ShardId::siblings(), &siblings, REPLICAS_DEFAULT).len(), 6);
    }

    #[test]
    fn prefers_distinct_zones_and_never_places_on_untrusted_siblings() {
        let siblings = vec![
            sibling(1, "a", TRUST_MAX),
            sibling(2, "a", TRUST_MAX),
            sibling(3, "a", TRUST_MAX),
            sibling(4, "b", 1),
            sibling(5, "c", 1),
            sibling(6, "d", 0),
        ];
        for index in 0..50 {
            let chosen = place(&shard(index), &siblings, 3);
            let zones: Vec<&str> =
                chosen.iter().map(|id| siblings.iter().find(|s| s.id == *id).unwrap().zone.as_str()).collect();
            assert_eq!(zones.iter().filter(|zone| **zone == "a").count(), 1, "{zones:?}");
            assert!(!chosen.contains(&NodeId(6)));
        }
    }

    #[test]
    fn higher_trust_is_home_more_often() {
        let siblings = vec![sibling(1, "a", TRUST_MAX), sibling(2, "b", TRUST_MAX / 4)];
        let homes_of_trusted = (0..1000).filter(|index| place(&shard(*index), &siblings, 1)[0] == NodeId(1)).count();
        // Expected 1 - 26 / 202 ≈ 87%.
        assert!((820..=920).contains(&homes_of_trusted), "{homes_of_trusted}");
    }

    #[test]
    fn adding_a_sibling_moves_only_shards_it_joins() {
        let mut siblings: Vec<Sibling> = (1..=5).map(|id| sibling(id, &format!("z{id}"), TRUST_MAX)).collect();
        let before: Vec<Vec<NodeId>> = (0..300).map(|index| place(&shard(index), &siblings, 3)).collect();
        siblings.push(sibling(6, "z6", TRUST_MAX));
        let mut moved = 0;
        for (index, old) in before.iter().enumerate() {
            let new = place(&shard(index), &siblings, 3);
            let lost: Vec<&NodeId> = old.iter().filter(|node| !new.contains(node)).collect();
            if !lost.is_empty() {
                moved += 1;
                assert!(new.contains(&NodeId(6)), "a shard lost a replica to someone other than the newcomer");
                assert_eq!(lost.len(), 1);
            }
        }
        // The newcomer should take about R / n = 3 / 6 of the shards.
        assert!((100..=200).contains(&moved), "{moved}");
    }

    #[test]
    fn a_move_adds_syncs_then_drops_and_the_record_replicates_as_an_item() {
        let current = PlacementRecord::new(vec![NodeId(1), NodeId(2), NodeId(3)]);
        let steps = plan_move(&current, &[NodeId(1), NodeId(2), NodeId(4)]);
        assert_eq!(
            steps,
            vec![
                MoveStep::AddReplicas {
                    record: PlacementRecord {
                        format: PLACEMENT_FORMAT,
                        replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
                        joining: vec![NodeId(4)],
                    }
                },
                MoveStep::AwaitSync { node: NodeId(4) },
                MoveStep::DropReplicas {
                    record: PlacementRecord::new(vec![NodeId(1), NodeId(2), NodeId(4)]),
                    leaving: vec![NodeId(3)],
                },
            ]
        );
        assert!(plan_move(&current, &[NodeId(1), NodeId(2), NodeId(3)]).is_empty());
        // Changing only the home is a single publish.
        assert_eq!(plan_move(&current, &[NodeId(2), NodeId(1), NodeId(3)]).len(), 1);

        let version = Version { at: Timestamp(9), origin: NodeId(1) };
        let item = current.to_item(&shard(7), version);
        assert!(item.shard.is_siblings());
        assert_eq!(item.key, placement_key(&shard(7)));
        assert_eq!(PlacementRecord::from_item(&item).unwrap(), Some(current));
    }
}
