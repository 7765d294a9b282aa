//! The per-origin change log (the fast path): every write a node accepts from its own
//! clients gets the next sequence number of the node's current epoch. Entries name
//! the record and version; the body is read from the store when the entry is sent, so
//! the log stays small and a record overwritten since is sent at its newest version.

use std::collections::VecDeque;

use super::item::{RecordKey, ShardId};
use crate::core::hlc::Timestamp;
use crate::core::model::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub shard: ShardId,
    pub key: RecordKey,
    pub version: Version,
}

/// How far one node has applied another's log, and what that proves.
///
/// `clock`: every write of that origin, to a shard this node replicates, with
/// `at <= clock` has been applied here (or a newer version of the same record will
/// be: see the invariants in `replication`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    /// 0 = nothing seen yet; epochs start at 1.
    pub epoch: u64,
    pub seq: u64,
    pub clock: Timestamp,
}

/// One node's own writes, in the order (and so in the version order) it made them.
///
/// Epoch: a new epoch starts when the log cannot be trusted to hold every write since
/// seq 1 of the old one (lost, or compacted because it grew past its limit). The new
/// epoch starts with one entry for every record whose stored version this node wrote,
/// oldest first, so a peer that re-reads it from seq 1 misses nothing.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    epoch: u64,
    /// Seq of `entries[0]`; entries before it were acknowledged by every sibling.
    first_seq: u64,
    entries: VecDeque<LogEntry>,
    /// Entries the epoch started with: compaction waits until the log doubled past it.
    entries_at_epoch_start: usize,
}

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog { epoch: 1, first_seq: 1, entries: VecDeque::new(), entries_at_epoch_start: 0 }
    }
}

impl ChangeLog {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Seq of the newest entry; 0 when the epoch has none yet.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64 - 1
    }

    /// Seq of the oldest entry still kept.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn append(&mut self, shard: ShardId, key: RecordKey, version: Version) -> u64 {
        debug_assert!(self.entries.back().is_none_or(|last| last.version < version), "log out of version order");
        let seq = self.end_seq() + 1;
        self.entries.push_back(LogEntry { seq, shard, key, version });
        seq
    }

    /// The entry with `seq`, if still kept.
    pub fn get(&self, seq: u64) -> Option<&LogEntry> {
        let index = seq.checked_sub(self.first_seq)?;
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// Drops entries up to and including `seq` (every sibling has them).
    pub fn truncate_through(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|entry| entry.seq <= seq) {
            self.entries.pop_front();
            self.first_seq += 1;
        }
    }

    pub fn entries_at_epoch_start(&self) -> usize {
        self.entries_at_epoch_start
    }

    /// Starts epoch `epoch` (greater than the current one) with `records` (every
    /// record whose stored version this node wrote, oldest first) as its first entries.
    pub fn start_epoch(&mut self, epoch: u64, records: impl IntoIterator<Item = (ShardId, RecordKey, Version)>) {
        assert!(epoch > self.epoch, "epochs only grow: {epoch} after {}", self.epoch);
        self.epoch = epoch;
        self.first_seq = 1;
        self.entries.clear();
        for (shard, key, version) in records {
            self.append(shard, key, version);
        }
        self.entries_at_epoch_start = self.entries.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::NodeId;
    use crate::core::replication::item::Table;

    fn version(at: u64) -> Version {
        Version { at: Timestamp(at), origin: NodeId(1) }
    }

    #[test]
    fn appends_truncates_and_restarts_in_a_new_epoch() {
        let mut log = ChangeLog::default();
        assert_eq!((log.epoch(), log.end_seq()), (1, 0));
        for at in 1..=5 {
            log.append(ShardId("u".into()), RecordKey::new(Table::Post, format!("p{at}")), version(at));
        }
        assert_eq!(log.end_seq(), 5);
        log.truncate_through(3);
        assert_eq!((log.first_seq(), log.end_seq(), log.len()), (4, 5, 2));
        assert!(log.get(3).is_none());
        assert_eq!(log.get(4).unwrap().version, version(4));
        log.truncate_through(5);
        assert_eq!((log.first_seq(), log.end_seq()), (6, 5), "empty log keeps counting");
        assert_eq!(log.append(ShardId("u".into()), RecordKey::new(Table::Post, "p6"), version(6)), 6);

        log.start_epoch(2, [(ShardId("u".into()), RecordKey::new(Table::Post, "p6"), version(6))]);
        assert_eq!((log.epoch(), log.first_seq(), log.end_seq(), log.entries_at_epoch_start()), (2, 1, 1, 1));
    }
}
