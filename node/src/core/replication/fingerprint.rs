//! Fingerprints for range-based set reconciliation: the hash space of a shard, its
//! aligned ranges, and a per-shard tree of bucket fingerprints kept up to date on
//! every insert and removal, so comparing a range never scans the shard.

/// The fingerprint of a set of items: the wrapping sum of their `item_hash`es and
/// their number. Sums (not XOR) so one item added twice is not "no item", and any
/// item can be taken out again in O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub sum: u64,
    pub count: u64,
}

impl Fingerprint {
    pub fn add(&mut self, item_hash: u64) {
        self.sum = self.sum.wrapping_add(item_hash);
        self.count += 1;
    }

    pub fn remove(&mut self, item_hash: u64) {
        debug_assert!(self.count > 0, "removing from an empty fingerprint");
        self.sum = self.sum.wrapping_sub(item_hash);
        self.count -= 1;
    }

    pub fn combine(self, other: Fingerprint) -> Fingerprint {
        Fingerprint { sum: self.sum.wrapping_add(other.sum), count: self.count + other.count }
    }
}

/// Bits a range split adds: a mismatching range is answered with 16 sub-ranges.
pub const SPLIT_BITS: u8 = 4;
pub const HASH_BITS: u8 = 64;

/// The hashes whose top `depth` bits equal those of `start`; `start`'s other bits are
/// zero. Depth 0 is the whole shard. Aligned ranges need no negotiation: both sides
/// split the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashRange {
    depth: u8,
    start: u64,
}

impl HashRange {
    pub const ALL: HashRange = HashRange { depth: 0, start: 0 };

    /// `None` unless `depth <= 64` and `start` is aligned to it.
    pub fn new(depth: u8, start: u64) -> Option<HashRange> {
        let range = HashRange { depth, start };
        (depth <= HASH_BITS && start & range.low_mask() == 0).then_some(range)
    }

    pub fn depth(self) -> u8 {
        self.depth
    }

    pub fn start(self) -> u64 {
        self.start
    }

    /// The last hash in the range.
    pub fn end_inclusive(self) -> u64 {
        self.start | self.low_mask()
    }

    pub fn contains(self, hash: u64) -> bool {
        hash & !self.low_mask() == self.start
    }

    pub fn can_split(self) -> bool {
        self.depth + SPLIT_BITS <= HASH_BITS
    }

    /// The `2^SPLIT_BITS` sub-ranges, in hash order.
    pub fn children(self) -> impl Iterator<Item = HashRange> {
        debug_assert!(self.can_split());
        let depth = self.depth + SPLIT_BITS;
        let shift = HASH_BITS - depth;
        (0..1u64 << SPLIT_BITS).map(move |index| HashRange { depth, start: self.start | (index << shift) })
    }

    fn low_mask(self) -> u64 {
        u64::MAX.checked_shr(u32::from(self.depth)).unwrap_or(0)
    }
}

/// Depth of the cached tree: 256 leaf buckets per shard, 511 nodes, 8 KiB. Ranges
/// deeper than this hold ~1/256 of a shard and are summed from the items themselves.
pub const TREE_DEPTH: u8 = 8;

/// Fingerprints of every aligned range down to `TREE_DEPTH`, as a heap-ordered array
/// (node of depth `d` and prefix `p` at `2^d - 1 + p`). Insert and remove touch one
/// node per level.
#[derive(Debug, Clone)]
pub struct FingerprintTree {
    nodes: Vec<Fingerprint>,
}

impl Default for FingerprintTree {
    fn default() -> Self {
        FingerprintTree { nodes: vec![Fingerprint::default(); (1 << (TREE_DEPTH + 1)) - 1] }
    }
}

impl FingerprintTree {
    pub fn add(&mut self, key_hash: u64, item_hash: u64) {
        for depth in 0..=TREE_DEPTH {
            let index = Self::index(depth, key_hash);
            self.nodes[index].add(item_hash);
        }
    }

    pub fn remove(&mut self, key_hash: u64, item_hash: u64) {
        for depth in 0..=TREE_DEPTH {
            let index = Self::index(depth, key_hash);
            self.nodes[index].remove(item_hash);
        }
    }

    /// The cached fingerprint of `range`, or `None` when it is deeper than the tree.
    pub fn get(&self, range: HashRange) -> Option<Fingerprint> {
        (range.depth <= TREE_DEPTH).then(|| self.nodes[Self::index(range.depth, range.start)])
    }

    pub fn total(&self) -> Fingerprint {
        self.nodes[0]
    }

    fn index(depth: u8, hash: u64) -> usize {
        let prefix = hash.checked_shr(u32::from(HASH_BITS - depth)).unwrap_or(0);
        (1usize << depth) - 1 + prefix as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_into_aligned_children_that_cover_the_parent() {
        let children: Vec<HashRange> = HashRange::ALL.children().collect();
        assert_eq!(children.len(), 16);
        assert_eq!(children[0].start(), 0);
        assert_eq!(children[15].end_inclusive(), u64::MAX);
        for pair in children.windows(2) {
            assert_eq!(pair[0].end_inclusive() + 1, pair[1].start());
        }
        let deepest = HashRange::new(64, 12345).unwrap();
        assert!(!deepest.can_split());
        assert!(deepest.contains(12345) && !deepest.contains(12344));
        assert_eq!(HashRange::new(4, 1), None, "misaligned");
        assert_eq!(HashRange::new(65, 0), None, "too deep");
    }

    #[test]
    fn tree_matches_brute_force_sums_after_inserts_and_removals() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut mixed = state;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            mixed ^ (mixed >> 27)
        };
        let mut tree = FingerprintTree::default();
        let mut items: Vec<(u64, u64)> = (0..500).map(|_| (next(), next())).collect();
        for (key_hash, item_hash) in &items {
            tree.add(*key_hash, *item_hash);
        }
        for (key_hash, item_hash) in items.drain(..200) {
            tree.remove(key_hash, item_hash);
        }
        let mut ranges = vec![HashRange::ALL];
        while let Some(range) = ranges.pop() {
            let mut expected = Fingerprint::default();
            for (key_hash, item_hash) in &items {
                if range.contains(*key_hash) {
                    expected.add(*item_hash);
                }
            }
            assert_eq!(tree.get(range), Some(expected), "{range:?}");
            if range.depth() < TREE_DEPTH {
                ranges.extend(range.children());
            }
        }
        assert_eq!(tree.get(HashRange::new(12, 0).unwrap()), None);
    }
}
