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
//! 9. **Everything is bounded.** Frames (`frame_bytes_max`, checked on decode before
//!    allocating), batches (`batch_bytes_max`), log entries in flight, the log itself
//!    (compacted into a new epoch past `log_entries_max`), the outbox, tombstones
//!    collected per pass, and how far in the future a remote clock may be.
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
