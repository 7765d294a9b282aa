//! Replication between siblings, sans-IO: each user's shard is copied to R siblings,
//! any replica accepts writes, and replicas converge by last-writer-wins.
//!
//! Two paths carry records. The fast path is each node's change log of its own
//! writes (`log`), streamed to peers with per-origin marks so a session resumes where
//! it stopped. The repair path is range-based set reconciliation per shard
//! (`fingerprint`, `ReplicaNode::on_repair`), on connect and periodically, which
//! mends whatever the log could not (new epochs, lost frames, long partitions).
//! `placement` decides who holds what; `wire` is the frame format; `node` is the
//! state machine a driver (redb + quinn, or the simulator in `sim`) runs.
//!
//! # Invariants
//!
//! 1. **Merge is a join.** A record's state is the LWW maximum, by `Version`, of the
//!    writes applied to it (`Item::merge`: commutative, associative, idempotent).
//!    Applying a message twice, late, or out of order changes nothing it should not.
//! 2. **Versions are unique and causal.** A node's versions come from its HLC, whose
//!    high-water mark is durable; every applied remote version is observed first, so
//!    a local write is newer than everything the node holds.
//! 3. **A log is in version order.** Within an epoch, a node's log entries have
//!    strictly increasing versions, so "applied seqs 1..=s" means "applied every
//!    write of that origin up to the version of entry s".
//! 4. **Marks prove completeness.** `received[o].clock = c` at node n means: every
//!    write of origin o, to a shard n holds, with `at <= c`, has been applied at n
//!    (or a newer version of that record has, or will arrive on its own origin's log).
//!    A new epoch of o resets the seq, never the clock; a new epoch starts with every
//!    record o wrote, so nothing from before it is skipped.
//! 5. **Horizons.** `complete(n)` = min over siblings o of `received[o].clock`. The
//!    stable horizon = min over every sibling of its reported `complete`. Both only
//!    grow. A reported horizon is a batched acknowledgement: sibling n acknowledges
//!    every write (every tombstone) older than `complete(n)`.
//! 6. **Tombstones go only when every replica has them.** A node collects a tombstone
//!    only when its version is older than its purge floor, which is at most the stable
//!    horizon (so every replica of the shard holds the tombstone or something newer).
//!    Until then a late, older write merges into the tombstone and loses.
//! 7. **Stale messages cannot resurrect.** Every message that carries records is
//!    stamped with its sender's `complete` when sent; a receiver drops it when the
//!    stamp is older than its purge floor. A sender whose horizon has passed a
//!    tombstone holds that tombstone (or newer), so a record it sends cannot be an
//!    older write the tombstone beat; a frame sent before that is dropped.
//! 8. **Acknowledged writes survive.** A write is acknowledged after it is in the
//!    durable store and log; the log (or the new epoch that replaces it) carries it to
//!    every replica, and repair carries anything the log missed.
//! 9. **Deleted stays deleted, past collection.** A record absent at a node and
//!    older than that node's floor of its shard is a delete every replica collected
//!    (see "Shard floors"): the node refuses it, and a sibling holding it drops it.
//! 10. **Everything is bounded.** Frames (`frame_bytes_max`, checked on decode before
//!     allocating), batches (`batch_bytes_max`), log entries in flight, the log itself
//!     (compacted into a new epoch past `log_entries_max`), the outbox, tombstones
//!     collected per pass, and how far in the future a remote clock may be.
//!
//! # Shard floors
//!
//! A node *settled* for a shard keeps a floor F for it (`DurableState::shard_floors`,
//! on disk): every write to the shard older than F is held there (or a newer version
//! of its record is), or was deleted and its tombstone collected by every replica.
//! So an absence below F proves a collected delete, which a tombstone no longer can.
//! - Settling: a node settles a shard at floor 0 when it creates it (a local
//!   transaction whose live records are all it holds of the shard), or at the first
//!   record a sibling sends while every origin's log has reached it since it held
//!   nothing of it. Otherwise (restored from a backup, sibling list changed) it
//!   settles when its whole shard equals a settled sibling's (equal whole-range
//!   fingerprints; a round runs soon after the shard's first record), adopting that
//!   sibling's floor; a settled node answers an unsettled one's equal probe with its
//!   own, so the probe settles either way.
//! - Raising: collection raises every settled floor to the purge floor (at most the
//!   stable horizon, so every replica has every write below it). Floors only rise.
//! - Claiming: a node claims `min(F, complete)` (`ReplicaNode::floor_of`), so a write
//!   still on its way from another origin is never taken for a collected one; it
//!   sends the claim with each probe (`Probe::floor`), and with a list of summaries
//!   only when the list is the whole range.
//! - Using: an item absent here and older than the claim is refused (a restored
//!   node's old copy does not come back); a record this node lists, the sibling's
//!   whole list lacks, and older than the sibling's claim is dropped here; a record
//!   the sibling holds under this node's claim is answered with this node's list, so
//!   the sibling drops it. Records at or above a floor, and records the sibling
//!   holds too, flow as before: a live record is never dropped for being old.
//! - A restored node learns it lost its own writes when a sibling's mark of its log
//!   (Hello, LogAck) is past its log's end: it withdraws every floor and settles
//!   again by repair. It observes that mark's clock, and every horizon, log clock
//!   and floor a sibling sends, so its new writes are newer than any floor.
//! - Mixed versions: probes carry floors from protocol version 2 on; a version-1
//!   probe claims nothing, and a version-1 node refuses version-2 frames.
//!
//! # What is absent (for now)
//!
//! - The sibling list and so placement are fixed for the life of a `ReplicaNode`.
//!   Executing a `MoveStep` plan or pairing a new sibling while running needs
//!   per-shard completeness (a node that starts holding a shard is not complete for
//!   it until a repair pass); until then a change of siblings restarts replication.
//! - No relaying: a node streams only its own log; records reach a replica from their
//!   origin's log or from repair.
//! - No media: a post's media files travel on their own streams, outside this module.
//! - A restored node that writes before every sibling has told it how far its log had
//!   gone may version a write under a sibling's floor (when its wall clock is behind
//!   the clock it had); a record new under that version is then refused as collected.
//! - After a change of siblings (pairing, a trust tier change) a node settles the
//!   shards siblings send it by repair only, for good (`shards_settle_by_repair_only`
//!   is never cleared): a shard busy enough never to be equal at a round stays
//!   unsettled there, so that node proves no delete of it (nothing is lost).

pub mod fingerprint;
pub mod item;
pub mod log;
pub mod node;
pub mod placement;
#[cfg(test)]
pub(crate) mod sim;
pub mod store;
pub mod wire;

pub use fingerprint::{Fingerprint, FingerprintTree, HashRange};
pub use item::{Item, RecordKey, ShardId, Table};
pub use log::{ChangeLog, LogEntry, LogMark};
pub use node::{DurableState, LocalWrite, ReplicaConfig, ReplicaNode, ReplicaStats, WriteError};
pub use placement::{place, plan_move, MoveStep, PlacementRecord, Sibling};
pub use store::{MemoryStore, ReplicaStore, Summary, VersionedKey};
pub use wire::{decode, encode, DecodeError, EncodeError, Message};
