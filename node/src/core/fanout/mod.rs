//! Fan-out across the neighbourhood, sans-IO: a follow is routed to the author's home
//! node, a post is pushed to the home nodes of the author's followers, which keep it in
//! a bounded feed cache, and a follower's node that missed pushes catches up by pull.
//!
//! Roles. Every user has one home node here (in the real system, the node answering
//! for the author's shard). A `FanoutNode` is the *author side* for users homed on it
//! and the *follower side* for its local followers; `node` is the state machine, `wire`
//! its messages, `sim` the seeded simulator that checks it under faults.
//!
//! Protocol.
//! - Follow: local user F on node A follows author U homed on B. A stores the
//!   `Subscription` (LWW on the follow record's version) and sends
//!   `Subscribe{follower, follower_home: A, author, version, active}` to B until B
//!   answers `SubscribeAck` (resent every `subscribe_retry_ms` while B is up, at once on
//!   `on_peer_up`). Unfollow is the same with `active: false` and a newer version. B
//!   keeps a `Subscriber` per (U, F), LWW, inactive ones too (so a late older follow
//!   loses), and acks only what it stored.
//! - Push: a change of U's post on B (`local_post`) becomes a `FeedEntry` in U's
//!   `Ledger`: live when `Public`/`Followers`, a removal (`post: None`) when deleted or
//!   edited to `Private` — a removal only if followers could have had it. B pushes the
//!   entry once to each distinct, connected home node of U's active subscribers. Such
//!   a node has a follower of U, so it may hold `Followers` posts; it shows them only
//!   to local users who follow U (`may_view`). Pushes are best effort.
//! - Pull: A pulls each followed author at `on_peer_up` of its home and every
//!   `pull_interval_ms`, both after a random jitter, one pull outstanding per author
//!   (`pull_id`), given up after `pull_timeout_ms`. `Pull{since: as_of}` gets a delta:
//!   every entry with version in `(since, as_of]`, removals included; `since: None`
//!   gets a full snapshot: the newest `K` live entries by creation, `truncated` if
//!   there are more. B sends a full snapshot instead of a delta when the delta would not
//!   fit `snapshot_entries_max` or `since` is below the ledger's `full_below` (a removal
//!   after it was dropped for room). A pulls in full when it never synced, when its
//!   follows of U changed, and when a removal left a truncated cache with fewer than `K`
//!   entries (older posts must come back into the newest `K`).
//! - Audience: the author side keeps, per subscriber, what the driver judged they may
//!   see (`Audience`: nothing when the author blocks them, public posts only while a
//!   locked author has not approved them, followers posts too) and tells their node
//!   (`SubscribeAck.sees`, with each change and in every `Snapshot.audience`). A node
//!   is sent per post what its most-allowed follower may see (a followers post as a
//!   removal to a node that may see public posts only, nothing to a node whose
//!   followers may see nothing); a node that does not keep audiences apart (older,
//!   `hears_audience: false`) gets followers posts only if all its followers may see
//!   them. The follower side shows followers posts only to followers whose audience
//!   allows them, and a changed audience refills the cache with a full pull.
//! - No thundering herd: B answers pulls through a token bucket
//!   (`pulls_answered_burst`, one more per `pull_refill_interval_ms`) and refuses the
//!   rest with `RateLimited{retry_after_ms}`; A retries after that plus its own jitter.
//!   A pulls only when B is up and has acked all of A's follows of U, and B refuses a
//!   pull from a node with no active subscriber of U (`NotSubscribed`: A resends its
//!   follows, then pulls in full).
//!
//! Merge rules at the follower (`AuthorCache`, per author):
//! - per post id, last writer wins on the post record's version;
//! - `as_of` = the author's newest change reflected in the cache. A push at or below
//!   `as_of` is ignored (the snapshot had the last word on it), so removals at or below
//!   it need not be kept;
//! - a full snapshot as of `T` drops every cached entry at or below `T` (deleted, made
//!   private, or out of the newest `K`) and keeps newer ones (pushes that overtook the
//!   answer), then merges its entries; a delta merges entry by entry. Then `as_of = T`.
//!
//! # Invariants
//!
//! 1. **Never private, never someone else's.** The ledger holds only `Public` and
//!    `Followers` posts; a follower node turns a `Private` live entry into a removal
//!    and drops entries not authored by the author they came for.
//! 2. **Followers-only stays with followers.** Pushes and snapshots go only to nodes
//!    the author's home holds an active subscriber from, and followers posts only to
//!    nodes with one allowed to see them; queries apply `may_view` with "follows" =
//!    an active local subscription whose audience is `Followers` (or, from an older
//!    author node that never says, an acknowledged one).
//! 3. **Deleted stays deleted.** A removal beats every older version of its post. It
//!    is kept while newer than `as_of`, or replaced by a push floor when dropped for
//!    room; a full snapshot leaves it out and drops what it replaced.
//! 4. **Nothing newer is lost.** Entries newer than a snapshot's `as_of` survive it.
//! 5. **Quiet convergence.** Once faults stop and writes pause, every follower's cache
//!    of U equals the newest `K` of U's current `Public`/`Followers` posts: follows are
//!    acked, then each cache is pulled (full or delta) and every pull after that is a
//!    no-op. Unfollowed authors' caches are dropped at once.
//! 6. **Bounded.** Cached entries per author and in total, removals per author, ledger
//!    entries and removals per author, subscribers, subscriptions, one outstanding pull
//!    per author, snapshot size, outbox; pulls answered by a token bucket.
//!
//! # What is absent (for now)
//!
//! - One home per author: a follow goes to the home only, not to every replica; while
//!   the home is down, followers wait (their caches still answer feeds).
//! - Inactive subscriber records are kept for good (bounded by `subscribers_max`);
//!   collecting them needs a horizon like the replication tombstones'.
//! - The ledger is the author side's own bounded copy; a real node derives it from its
//!   store (`posts_by_author`, post tombstones, the purge floor as `full_below`).

pub mod node;
#[cfg(test)]
mod sim;
pub mod wire;

pub use node::{
    AuthorCache, FanoutConfig, FanoutError, FanoutNode, FanoutState, FanoutStats, Ledger, Subscriber, Subscription,
};
pub use wire::{Audience, FeedEntry, Message, Refusal, RemoteUser, UserId, FANOUT_PROTOCOL_VERSION};
