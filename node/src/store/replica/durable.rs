//! The `DurableState` of the replication node in `replica_state` (the small state,
//! whole), `replica_log` (the change log, written as a diff) and `replica_floors`
//! (each settled shard's floor, written as a diff), and what a commit compares to
//! skip writing an unchanged state.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::trees::stored_shards;
use super::{version, REPLICA_FLOORS, REPLICA_LOG, REPLICA_STATE};
use crate::core::hlc::{HybridClock, Timestamp};
use crate::core::model::{NodeId, Version};
use crate::core::replication::{ChangeLog, DurableState, LogEntry, LogMark, RecordKey, ShardId, Table};
use crate::store::{decode, encode, read_u64, StoreError, StoreResult, META};

/// Format of `replica_state` / `replica_log` values; bump with a migration.
const DURABLE_FORMAT: u32 = 1;
const STATE_KEY: &str = "state";

#[derive(Debug, Serialize, Deserialize)]
struct StoredState {
    format: u32,
    clock: u64,
    epoch: u64,
    first_seq: u64,
    end_seq: u64,
    entries_at_epoch_start: u64,
    received: Vec<StoredMark>,
    purge_floor: u64,
    /// `replica_floors` is kept (absent in a state written before shard floors: see
    /// `floors_from_before_floors`).
    #[serde(default)]
    floors_kept: bool,
    #[serde(default)]
    shards_settle_by_repair_only: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredMark {
    origin: NodeId,
    epoch: u64,
    seq: u64,
    clock: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredLogEntry {
    format: u32,
    shard: String,
    table: u8,
    key: String,
    at: u64,
    origin: NodeId,
}

/// What of the log is in `replica_log` (epoch, first seq, end seq), and the floors
/// in `replica_floors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PersistedLog {
    epoch: u64,
    first_seq: u64,
    end_seq: u64,
    floors: BTreeMap<ShardId, Timestamp>,
}

/// Rebuilds a `ChangeLog` with the same epoch, seqs and entries. `ChangeLog` has no
/// constructor from parts, so the seqs below `first_seq` are refilled with
/// placeholder entries (version `(0, i)`, older than any real one) and truncated
/// again: O(first_seq) time, O(1) extra memory.
fn restore_log(epoch: u64, first_seq: u64, entries_at_epoch_start: u64, entries: Vec<LogEntry>) -> ChangeLog {
    const TRUNCATE_EVERY: u64 = 4096;
    let placeholder = |index: u64| (ShardId(String::new()), RecordKey::new(Table::User, ""), version(0, index.max(1)));
    let skipped = first_seq.saturating_sub(1);
    let mut log = ChangeLog::default();
    let mut real = entries.into_iter().peekable();
    let mut filled = 0;
    if epoch > 1 {
        let start_placeholders = skipped.min(entries_at_epoch_start);
        let mut start: Vec<(ShardId, RecordKey, Version)> = (1..=start_placeholders).map(placeholder).collect();
        while start.len() < entries_at_epoch_start as usize {
            let Some(entry) = real.next() else { break };
            start.push((entry.shard, entry.key, entry.version));
        }
        log.start_epoch(epoch, start);
        filled = start_placeholders;
    }
    while filled < skipped {
        filled += 1;
        let (shard, key, version) = placeholder(filled);
        log.append(shard, key, version);
        if filled % TRUNCATE_EVERY == 0 {
            log.truncate_through(filled);
        }
    }
    log.truncate_through(skipped);
    for entry in real {
        let seq = log.append(entry.shard, entry.key, entry.version);
        debug_assert_eq!(seq, entry.seq, "restored log seqs match the stored ones");
    }
    log
}

/// The floors of a state written before shard floors existed: every shard held is
/// settled at the purge floor, which is what collection already relied on (every
/// replica had every write below it).
fn floors_from_before_floors(
    txn: &WriteTransaction,
    purge_floor: Timestamp,
) -> StoreResult<BTreeMap<ShardId, Timestamp>> {
    Ok(stored_shards(txn)?.into_iter().map(|shard| (shard, purge_floor)).collect())
}

fn read_floors(txn: &WriteTransaction) -> StoreResult<BTreeMap<ShardId, Timestamp>> {
    let mut floors = BTreeMap::new();
    for entry in txn.open_table(REPLICA_FLOORS)?.iter()? {
        let (shard, floor) = entry?;
        floors.insert(ShardId(shard.value().to_owned()), Timestamp(floor.value()));
    }
    Ok(floors)
}

/// Writes the floors that differ from `persisted` and removes those `floors` lacks.
fn write_floors(
    txn: &WriteTransaction,
    floors: &BTreeMap<ShardId, Timestamp>,
    persisted: &BTreeMap<ShardId, Timestamp>,
) -> StoreResult<()> {
    let mut table = txn.open_table(REPLICA_FLOORS)?;
    for (shard, floor) in floors {
        if persisted.get(shard) != Some(floor) {
            table.insert(shard.0.as_str(), floor.0)?;
        }
    }
    for shard in persisted.keys().filter(|shard| !floors.contains_key(*shard)) {
        table.remove(shard.0.as_str())?;
    }
    Ok(())
}

pub(super) fn read_durable(txn: &WriteTransaction) -> StoreResult<(DurableState, PersistedLog)> {
    let high_water = txn.open_table(META)?.get("clock_high_water")?.map(|v| read_u64(v.value())).unwrap_or(0);
    let stored = txn.open_table(REPLICA_STATE)?.get(STATE_KEY)?.map(|v| v.value().to_vec());
    let Some(bytes) = stored else {
        let durable =
            DurableState { clock: HybridClock::starting_after(Timestamp(high_water)), ..DurableState::default() };
        let persisted = PersistedLog { epoch: durable.log.epoch(), first_seq: 1, end_seq: 0, floors: BTreeMap::new() };
        return Ok((durable, persisted));
    };
    let state: StoredState = decode(&bytes)?;
    if state.format != DURABLE_FORMAT {
        return Err(StoreError::Corrupt(format!("replica state format {} is not {DURABLE_FORMAT}", state.format)));
    }
    let mut entries = Vec::new();
    let log_table = txn.open_table(REPLICA_LOG)?;
    let kept =
        if state.end_seq >= state.first_seq { Some(log_table.range(state.first_seq..=state.end_seq)?) } else { None };
    for entry in kept.into_iter().flatten() {
        let (seq, value) = entry?;
        let stored: StoredLogEntry = decode(value.value())?;
        let table = Table::from_code(stored.table)
            .ok_or_else(|| StoreError::Corrupt(format!("log entry of unknown table {}", stored.table)))?;
        entries.push(LogEntry {
            seq: seq.value(),
            shard: ShardId(stored.shard),
            key: RecordKey::new(table, stored.key),
            version: version(stored.at, stored.origin.0),
        });
    }
    if entries.len() as u64 != state.end_seq + 1 - state.first_seq {
        return Err(StoreError::Corrupt("the replication log has gaps".into()));
    }
    let durable = DurableState {
        clock: HybridClock::starting_after(Timestamp(state.clock.max(high_water))),
        log: restore_log(state.epoch, state.first_seq, state.entries_at_epoch_start, entries),
        received: state
            .received
            .iter()
            .map(|mark| (mark.origin, LogMark { epoch: mark.epoch, seq: mark.seq, clock: Timestamp(mark.clock) }))
            .collect(),
        purge_floor: Timestamp(state.purge_floor),
        shard_floors: if state.floors_kept {
            read_floors(txn)?
        } else {
            floors_from_before_floors(txn, Timestamp(state.purge_floor))?
        },
        shards_settle_by_repair_only: state.shards_settle_by_repair_only,
    };
    let persisted = PersistedLog {
        epoch: state.epoch,
        first_seq: state.first_seq,
        end_seq: state.end_seq,
        // Read from the table, or (before floors) nothing is in it yet.
        floors: if state.floors_kept { durable.shard_floors.clone() } else { BTreeMap::new() },
    };
    Ok((durable, persisted))
}

/// Writes `durable` into `txn`: the small state whole, the log as a diff against
/// `persisted` (entries never change once appended).
pub(super) fn write_durable(
    txn: &WriteTransaction,
    durable: &DurableState,
    persisted: &PersistedLog,
) -> StoreResult<PersistedLog> {
    let log = &durable.log;
    write_floors(txn, &durable.shard_floors, &persisted.floors)?;
    let now = PersistedLog {
        epoch: log.epoch(),
        first_seq: log.first_seq(),
        end_seq: log.end_seq(),
        floors: durable.shard_floors.clone(),
    };
    let mut table = txn.open_table(REPLICA_LOG)?;
    let first_new = if now.epoch != persisted.epoch {
        table.retain(|_, _| false)?;
        now.first_seq
    } else {
        if now.first_seq > persisted.first_seq {
            table.retain_in(persisted.first_seq..now.first_seq, |_, _| false)?;
        }
        (persisted.end_seq + 1).max(now.first_seq)
    };
    for seq in first_new..=now.end_seq {
        let entry = log.get(seq).expect("seq within the kept log");
        let stored = StoredLogEntry {
            format: DURABLE_FORMAT,
            shard: entry.shard.0.clone(),
            table: entry.key.table.code(),
            key: entry.key.key.clone(),
            at: entry.version.at.0,
            origin: entry.version.origin,
        };
        table.insert(seq, encode(&stored).as_slice())?;
    }
    let state = StoredState {
        format: DURABLE_FORMAT,
        clock: durable.clock.last().0,
        epoch: now.epoch,
        first_seq: now.first_seq,
        end_seq: now.end_seq,
        entries_at_epoch_start: log.entries_at_epoch_start() as u64,
        received: durable
            .received
            .iter()
            .map(|(origin, mark)| StoredMark { origin: *origin, epoch: mark.epoch, seq: mark.seq, clock: mark.clock.0 })
            .collect(),
        purge_floor: durable.purge_floor.0,
        floors_kept: true,
        shards_settle_by_repair_only: durable.shards_settle_by_repair_only,
    };
    txn.open_table(REPLICA_STATE)?.insert(STATE_KEY, encode(&state).as_slice())?;
    // One clock for the node: a restarted `Store` starts after the replication clock.
    let mut meta = txn.open_table(META)?;
    let high_water = meta.get("clock_high_water")?.map(|v| read_u64(v.value())).unwrap_or(0);
    if durable.clock.last().0 > high_water {
        meta.insert("clock_high_water", durable.clock.last().0.to_le_bytes().as_slice())?;
    }
    Ok(now)
}

/// Everything of a `DurableState` a commit writes, in brief: equal summaries mean an
/// equal stored state (log entries never change once appended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DurableSummary {
    clock: Timestamp,
    epoch: u64,
    first_seq: u64,
    end_seq: u64,
    received: Vec<(NodeId, LogMark)>,
    purge_floor: Timestamp,
    shard_floors: BTreeMap<ShardId, Timestamp>,
    shards_settle_by_repair_only: bool,
}

impl DurableSummary {
    pub(super) fn of(durable: &DurableState) -> DurableSummary {
        DurableSummary {
            clock: durable.clock.last(),
            epoch: durable.log.epoch(),
            first_seq: durable.log.first_seq(),
            end_seq: durable.log.end_seq(),
            received: durable.received.iter().map(|(origin, mark)| (*origin, *mark)).collect(),
            purge_floor: durable.purge_floor,
            shard_floors: durable.shard_floors.clone(),
            shards_settle_by_repair_only: durable.shards_settle_by_repair_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_restored_with_its_epoch_and_seqs() {
        let entry = |seq: u64| LogEntry {
            seq,
            shard: ShardId("u".into()),
            key: RecordKey::new(Table::Post, format!("p{seq}")),
            version: version(100 + seq, 1),
        };
        for (epoch, first_seq, at_start, end) in
            [(1, 1, 0, 0), (1, 5, 0, 9), (3, 1, 2, 4), (3, 2, 4, 6), (4, 9000, 3, 9002)]
        {
            let log = restore_log(epoch, first_seq, at_start, (first_seq..=end).map(entry).collect());
            assert_eq!((log.epoch(), log.first_seq(), log.end_seq()), (epoch, first_seq, end));
            assert_eq!(log.entries_at_epoch_start() as u64, at_start);
            for seq in first_seq..=end {
                assert_eq!(log.get(seq), Some(&entry(seq)));
            }
        }
    }
}
