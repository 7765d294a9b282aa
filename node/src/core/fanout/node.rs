//! `FanoutNode`: one node's fan-out state machine, sans-IO. Author side for users
//! homed here (who follows them from where, what followers may see), follower side
//! for local followers (their follows, the feed cache of each followed author).
//!
//! Driver contract:
//! - call `poll_transmit` until `None` and `poll_timeout` after every call;
//! - make `state()` durable before sending what `poll_transmit` returned after the
//!   same call (persist, then send: an acknowledged subscription must survive), and
//!   before acknowledging a follow to its client. The feed caches in it may be
//!   persisted lazily or dropped, but each cache as a whole (entries with its `as_of`);
//! - deliver messages in any order, any number of times or not at all; `on_peer_up`
//!   and `on_peer_down` must follow the transport's view of the connection;
//! - feed `local_post` every change of a local author's posts, in version order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::wire::{Audience, FeedEntry, Message, Refusal, UserId};
use crate::core::hlc::Timestamp;
use crate::core::model::{may_view, NodeId, Post, Version, Visibility};

/// Limits and periods. Units are last in the names; times are milliseconds of the
/// `now` the driver passes in.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// Live entries cached per followed author (`K`); the oldest are evicted.
    pub feed_entries_per_author_max: usize,
    /// Live entries cached for all authors together; the oldest are evicted.
    pub feed_entries_max: usize,
    /// Removals kept per cached author (only those newer than its `as_of` matter).
    pub feed_removals_per_author_max: usize,
    /// Entries in one snapshot; a delta with more changes is sent as a full snapshot.
    /// At least `feed_entries_per_author_max`, so a full snapshot fits.
    pub snapshot_entries_max: usize,
    /// Live entries the author side keeps per local author (the real node reads its
    /// store; this bounds the in-memory ledger).
    pub ledger_entries_per_author_max: usize,
    /// Removals the author side keeps per local author; pullers from before the
    /// oldest dropped one get a full snapshot.
    pub ledger_removals_per_author_max: usize,
    /// Subscriber records (active or not) kept for all local authors together.
    pub subscribers_max: usize,
    /// Follows of local users kept together.
    pub subscriptions_max: usize,
    /// Messages waiting for `poll_transmit`; past this, new ones are dropped (each
    /// is resent or mended by a pull later).
    pub outbox_messages_max: usize,
    /// An unacknowledged `Subscribe` is resent this often while its peer is up.
    pub subscribe_retry_ms: u64,
    /// Each cached author is pulled this often (plus jitter), to mend lost pushes.
    pub pull_interval_ms: u64,
    /// Random delay added to every scheduled pull, so followers spread out.
    pub pull_jitter_ms: u64,
    /// An unanswered pull is given up after this and retried (with jitter).
    pub pull_timeout_ms: u64,
    /// The author side answers this many pulls at once …
    pub pulls_answered_burst: u32,
    /// … and one more per this interval (a token bucket).
    pub pull_refill_interval_ms: u64,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            feed_entries_per_author_max: 50,
            feed_entries_max: 20_000,
            feed_removals_per_author_max: 64,
            snapshot_entries_max: 100,
            ledger_entries_per_author_max: 10_000,
            ledger_removals_per_author_max: 1_000,
            subscribers_max: 100_000,
            subscriptions_max: 100_000,
            outbox_messages_max: 4096,
            subscribe_retry_ms: 5_000,
            pull_interval_ms: 5 * 60_000,
            pull_jitter_ms: 30_000,
            pull_timeout_ms: 20_000,
            pulls_answered_burst: 20,
            pull_refill_interval_ms: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanoutError {
    #[error("post {post_id} names author {named} and id {named_post_id}; it was given as {author}'s {post_id}")]
    PostMismatch { author: UserId, post_id: String, named: UserId, named_post_id: String },
    #[error("a user cannot follow themselves ({user})")]
    SelfFollow { user: UserId },
    #[error("this node keeps at most {subscriptions_max} follows; unfollow someone first")]
    TooManySubscriptions { subscriptions_max: usize },
}

/// Author side: one follower of a local author, LWW on `version`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscriber {
    pub home: NodeId,
    pub version: Version,
    pub active: bool,
    /// The follower's handle on their node, as it said (absent from older nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Their node keeps followers' audiences apart (`Message::Subscribe`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hears_audience: bool,
    /// What the driver decided they may see (`set_audience`). Rows from before it was
    /// kept read as `Public`; the driver judges every follower again at start.
    #[serde(default = "public_audience")]
    pub sees: Audience,
}

fn public_audience() -> Audience {
    Audience::Public
}

/// Follower side: one local user's follow (or unfollow) of an author, LWW on
/// `version`; an acknowledged unfollow is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub author_home: NodeId,
    pub version: Version,
    pub active: bool,
    /// The author's home stored this version durably (always true for local authors).
    pub acked: bool,
    /// The follower's handle, sent with the follow (a locked author's requests show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// What the author's home lets this follower see; `None` until it says (an older
    /// home never does: an acknowledged follow then counts, as it always did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sees: Option<Audience>,
}

impl Subscription {
    /// Whether this follow lets the follower see the author's followers-only posts.
    fn counts(&self) -> bool {
        self.active
            && match self.sees {
                Some(sees) => sees == Audience::Followers,
                None => self.acked,
            }
    }
}

/// Author side: what followers of one local author may see.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// Current entry per post id: live (`Public`/`Followers`) or a removal.
    pub entries: BTreeMap<String, FeedEntry>,
    /// The newest version taken in: the `as_of` of this author's snapshots.
    pub changed_through: Option<Version>,
    /// Deltas go only to pullers with `since >= full_below`; older ones may have
    /// missed a dropped removal (or a change that arrived out of version order), so
    /// they get a full snapshot.
    pub full_below: Option<Version>,
}

/// Follower side: the cached posts of one remote author.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuthorCache {
    pub home: NodeId,
    /// Every change of the author up to this version (of the author's home) is
    /// reflected here; `None` until the first snapshot.
    pub as_of: Option<Version>,
    /// Live entries (at most `K`) and removals newer than `as_of`.
    pub entries: BTreeMap<String, FeedEntry>,
    /// The author may have visible posts older than those cached (a full snapshot
    /// said so, or an entry was evicted): a removal may call for a refill.
    pub truncated: bool,
    /// A full snapshot is wanted: new cache, or the follows on this node changed
    /// (the author side may have skipped this node meanwhile).
    pub full_wanted: bool,
    /// Pushes at or below this are ignored: a removal this new was dropped for room.
    pub push_floor: Option<Version>,
}

impl AuthorCache {
    fn new(home: NodeId) -> AuthorCache {
        AuthorCache {
            home,
            as_of: None,
            entries: BTreeMap::new(),
            truncated: false,
            full_wanted: true,
            push_floor: None,
        }
    }

    pub fn live_count(&self) -> usize {
        self.entries.values().filter(|entry| !entry.is_removal()).count()
    }
}

/// What must survive a restart. `caches` may be lost as a whole (they are rebuilt by
/// full pulls); the rest may not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FanoutState {
    /// Author side: per local author, per follower.
    pub subscribers: BTreeMap<UserId, BTreeMap<UserId, Subscriber>>,
    /// Author side: per local author.
    pub ledgers: BTreeMap<UserId, Ledger>,
    /// Follower side: per (local follower, author).
    pub subscriptions: BTreeMap<(UserId, UserId), Subscription>,
    /// Follower side: per remote author with an active local follower.
    pub caches: BTreeMap<UserId, AuthorCache>,
}

/// Counters for metrics and for the simulator's coverage report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutStats {
    pub subscribes_sent: u64,
    pub subscribes_applied: u64,
    pub subscribes_refused: u64,
    pub pushes_sent: u64,
    pub pushes_applied: u64,
    /// Pushes at or below the cache's `as_of`, or older than what it holds.
    pub pushes_stale: u64,
    /// Pushes for authors no local user follows (any more).
    pub pushes_unwanted: u64,
    pub pulls_sent: u64,
    pub pulls_full_sent: u64,
    pub pulls_timed_out: u64,
    pub snapshots_full_sent: u64,
    pub snapshots_delta_sent: u64,
    pub snapshots_applied: u64,
    /// Snapshots and refusals that answered no outstanding pull.
    pub answers_stale: u64,
    pub pulls_refused_rate: u64,
    pub pulls_refused_not_subscribed: u64,
    pub entries_evicted: u64,
    pub removals_dropped: u64,
    pub messages_dropped: u64,
}

/// The volatile pull state of one cached author.
#[derive(Debug, Clone, Default)]
struct PullState {
    in_flight: Option<InFlight>,
    next_pull_at: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    pull_id: u64,
    sent_at: u64,
    since: Option<Version>,
}

/// Token bucket for answering pulls; `now` is the driver's.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: u32,
    updated_at: u64,
}

impl TokenBucket {
    /// Takes a token, or says how long until one is earned.
    fn take(&mut self, now: u64, burst: u32, refill_interval_ms: u64) -> Result<(), u64> {
        let earned = now.saturating_sub(self.updated_at) / refill_interval_ms;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(burst)) as u32;
            self.updated_at += earned * refill_interval_ms;
        }
        if self.tokens >= burst {
            // A full bucket earns nothing: time starts counting at the next take.
            self.updated_at = now;
        }
        if self.tokens == 0 {
            return Err(refill_interval_ms - now.saturating_sub(self.updated_at).min(refill_interval_ms - 1));
        }
        self.tokens -= 1;
        Ok(())
    }
}

/// The smallest version: `as_of` of an author with no changes yet.
pub const VERSION_ZERO: Version = Version { at: Timestamp(0), origin: NodeId(0) };

/// The smallest version above `version` (for "strictly after" floors).
fn successor(version: Version) -> Version {
    Version { at: Timestamp(version.at.0.saturating_add(1)), origin: NodeId(0) }
}

/// What the author side sends a node that may see `level` of an author in place of
/// `entry`: nothing, the entry, or (a followers-only post for a node that may see
/// public posts only) a removal at its version, so a copy it had goes.
fn entry_for(entry: &FeedEntry, level: Audience) -> Option<FeedEntry> {
    match level {
        Audience::Nothing => None,
        Audience::Public if entry.post.as_ref().is_some_and(|post| post.visibility == Visibility::Followers) => {
            Some(FeedEntry { post: None, ..entry.clone() })
        }
        Audience::Public | Audience::Followers => Some(entry.clone()),
    }
}

/// What a `Subscribe` says of its follower besides the follow, and the driver's
/// judgement of it.
struct SubscribeFrom {
    handle: Option<String>,
    hears_audience: bool,
    sees: Audience,
}

/// splitmix64's finaliser: stretches the randomness the driver passes in.
fn mix(value: u64) -> u64 {
    let mut mixed = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}

/// One node's fan-out: author side and follower side.
pub struct FanoutNode {
    id: NodeId,
    config: FanoutConfig,
    state: FanoutState,
    peers_up: BTreeSet<NodeId>,
    pulls: BTreeMap<UserId, PullState>,
    /// When each unacknowledged subscription was last sent (volatile: resent on up).
    subscribe_sent_at: BTreeMap<(UserId, UserId), u64>,
    bucket: TokenBucket,
    outbox: VecDeque<(NodeId, Message)>,
    entropy: u64,
    stats: FanoutStats,
}

impl FanoutNode {
    /// Starts (or restarts) a node from its durable state; every peer is down until
    /// `on_peer_up`. `random` seeds jitter and pull ids.
    pub fn new(id: NodeId, config: FanoutConfig, state: FanoutState, now: u64, random: u64) -> FanoutNode {
        assert!(
            config.snapshot_entries_max >= config.feed_entries_per_author_max
                && config.feed_entries_per_author_max > 0
                && config.pull_refill_interval_ms > 0
                && config.pulls_answered_burst > 0,
            "fan-out limits do not nest: a full snapshot must fit a snapshot, and pulls must be answerable"
        );
        let mut node = FanoutNode {
            id,
            bucket: TokenBucket { tokens: config.pulls_answered_burst, updated_at: now },
            config,
            state,
            peers_up: BTreeSet::new(),
            pulls: BTreeMap::new(),
            subscribe_sent_at: BTreeMap::new(),
            outbox: VecDeque::new(),
            entropy: mix(random ^ id.0),
            stats: FanoutStats::default(),
        };
        // Caches follow the follows (a lost cache comes back empty, wanting a full pull).
        let followed: Vec<(UserId, NodeId)> = node
            .state
            .subscriptions
            .iter()
            .filter(|(_, subscription)| subscription.active && subscription.author_home != id)
            .map(|((_, author), subscription)| (author.clone(), subscription.author_home))
            .collect();
        for (author, home) in followed {
            node.state.caches.entry(author).or_insert_with(|| AuthorCache::new(home));
        }
        let caches: Vec<UserId> = node.state.caches.keys().cloned().collect();
        for author in caches {
            node.reconcile_cache(&author, now);
        }
        node
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn state(&self) -> &FanoutState {
        &self.state
    }

    pub fn stats(&self) -> &FanoutStats {
        &self.stats
    }

    /// The durable part, for a restart (everything else is volatile).
    pub fn into_state(self) -> FanoutState {
        self.state
    }

    // ----- inputs -----------------------------------------------------------------

    /// A change of a post of `author`, a user homed here: created or edited (`Some`),
    /// or deleted (`None`), at `version` (the post record's). Followers' homes get a
    /// push when followers may see it, or when it leaves what they may see.
    pub fn local_post(
        &mut self,
        _now: u64,
        author: &str,
        post_id: &str,
        version: Version,
        post: Option<Post>,
    ) -> Result<(), FanoutError> {
        if let Some(post) = &post {
            if post.author_id != author || post.post_id != post_id {
                return Err(FanoutError::PostMismatch {
                    author: author.into(),
                    post_id: post_id.into(),
                    named: post.author_id.clone(),
                    named_post_id: post.post_id.clone(),
                });
            }
        }
        let visible = post.filter(|post| post.visibility != Visibility::Private);
        let ledger = self.state.ledgers.entry(author.to_string()).or_default();
        let existing = ledger.entries.get(post_id);
        // A removal and a live post at one version: the ledger of a node from before
        // followers-only posts of locked authors were kept (as removals); the post is
        // taken in, and homes that may see it get it by their next full pull.
        let kept_as_removal =
            existing.is_some_and(|existing| existing.version == version && existing.is_removal()) && visible.is_some();
        if existing.is_some_and(|existing| existing.version >= version) && !kept_as_removal {
            return Ok(());
        }
        let was_live = existing.is_some_and(|existing| !existing.is_removal());
        if visible.is_none() && existing.is_none() {
            // Never shown to followers (private from the start): nothing to take back.
            return Ok(());
        }
        if let Some(through) = ledger.changed_through.filter(|through| version <= *through) {
            // Out of version order: a delta from a `since` past it would miss it.
            ledger.full_below = ledger.full_below.max(Some(successor(through)));
        }
        let created_at = match (&visible, existing) {
            (Some(post), _) => post.created_at,
            (None, Some(existing)) => existing.created_at,
            (None, None) => unreachable!("returned above"),
        };
        let entry = FeedEntry { post_id: post_id.to_string(), version, created_at, post: visible };
        ledger.changed_through = ledger.changed_through.max(Some(version));
        ledger.entries.insert(post_id.to_string(), entry.clone());
        self.bound_ledger(author);
        if !entry.is_removal() || was_live {
            self.push(author, entry);
        }
        Ok(())
    }

    /// A local user follows (`active`) or unfollows `author`, homed at `author_home`,
    /// at `version` (the follow record's). Acknowledge to the client once `state()`
    /// is durable; the author's home learns it by a `Subscribe` resent until acked.
    /// (`follower_handle` goes with the follow, for a locked author's requests.)
    #[allow(clippy::too_many_arguments)] // each is one fact of the follow; a struct would only rename them
    pub fn local_follow(
        &mut self,
        now: u64,
        follower: &str,
        author: &str,
        author_home: NodeId,
        version: Version,
        active: bool,
        follower_handle: Option<&str>,
    ) -> Result<(), FanoutError> {
        if follower == author {
            return Err(FanoutError::SelfFollow { user: follower.into() });
        }
        let key = (follower.to_string(), author.to_string());
        let existing = self.state.subscriptions.get(&key);
        if existing.is_some_and(|existing| existing.version >= version) {
            return Ok(());
        }
        if existing.is_none() && self.state.subscriptions.len() >= self.config.subscriptions_max {
            return Err(FanoutError::TooManySubscriptions { subscriptions_max: self.config.subscriptions_max });
        }
        let local = author_home == self.id;
        if local && !active {
            self.state.subscriptions.remove(&key);
        } else {
            let subscription = Subscription {
                author_home,
                version,
                active,
                acked: local,
                handle: follower_handle.map(str::to_owned),
                sees: None,
            };
            self.state.subscriptions.insert(key.clone(), subscription);
        }
        if !local {
            self.subscribe_sent_at.remove(&key);
            self.send_subscribe(now, &key);
            if active {
                self.state.caches.entry(author.to_string()).or_insert_with(|| AuthorCache::new(author_home));
            }
            if let Some(cache) = self.state.caches.get_mut(author) {
                // The author side may skip this node while it applies the change (all
                // of its followers here inactive for a moment): refill after the acks.
                cache.home = author_home;
                cache.full_wanted = true;
            }
            self.reconcile_cache(author, now);
        }
        Ok(())
    }

    pub fn on_peer_up(&mut self, peer: NodeId, now: u64, random: u64) {
        self.entropy = mix(self.entropy ^ random);
        self.peers_up.insert(peer);
        let unacked: Vec<(UserId, UserId)> = self
            .state
            .subscriptions
            .iter()
            .filter(|(_, subscription)| !subscription.acked && subscription.author_home == peer)
            .map(|(key, _)| key.clone())
            .collect();
        for key in unacked {
            self.subscribe_sent_at.remove(&key);
            self.send_subscribe(now, &key);
        }
        // Every follower of the returning node pulls, but each after its own jitter.
        let authors: Vec<UserId> = self
            .state
            .caches
            .iter()
            .filter(|(_, cache)| cache.home == peer)
            .map(|(author, _)| author.clone())
            .collect();
        for author in authors {
            let jitter = self.jitter(self.config.pull_jitter_ms);
            let pull = self.pulls.entry(author).or_default();
            pull.in_flight = None;
            pull.next_pull_at = now.saturating_add(jitter);
        }
    }

    pub fn on_peer_down(&mut self, peer: NodeId, _now: u64) {
        self.peers_up.remove(&peer);
        for (author, cache) in &self.state.caches {
            if cache.home == peer {
                if let Some(pull) = self.pulls.get_mut(author) {
                    pull.in_flight = None;
                }
            }
        }
        self.outbox.retain(|(to, _)| *to != peer);
    }

    /// A message from `from`; a `Subscribe` is judged to let its follower see
    /// everything (`Audience::Followers`): see `on_message_judged`.
    pub fn on_message(&mut self, from: NodeId, message: Message, now: u64) {
        self.on_message_judged(from, message, now, Audience::Followers)
    }

    /// A message from `from`, with the driver's judgement of a `Subscribe` in it:
    /// what its follower may see of the author (the author's blocks and approvals,
    /// which the driver reads from the store before the step).
    pub fn on_message_judged(&mut self, from: NodeId, message: Message, now: u64, sees: Audience) {
        match message {
            Message::Subscribe {
                follower,
                follower_home,
                author,
                version,
                active,
                follower_handle,
                hears_audience,
            } => {
                // Another node's word, shown in follow requests: a handle as ours are, or none.
                let handle = follower_handle.filter(|handle| crate::core::text::check_handle(handle).is_ok());
                let about = SubscribeFrom { handle, hears_audience, sees };
                self.on_subscribe(from, follower, follower_home, author, version, active, about)
            }
            Message::SubscribeAck { follower, author, version, sees } => {
                let key = (follower, author);
                if let Some(subscription) = self.state.subscriptions.get_mut(&key) {
                    if subscription.version == version && subscription.author_home == from {
                        subscription.acked = true;
                        self.subscribe_sent_at.remove(&key);
                        if !subscription.active {
                            self.state.subscriptions.remove(&key);
                        } else if let Some(sees) = sees {
                            self.apply_sees(&key, sees, now);
                        }
                    }
                }
            }
            Message::FeedPush { author, entry } => self.on_push(from, &author, entry, now),
            Message::Pull { author, pull_id, since, entries_max } => {
                self.on_pull(from, author, pull_id, since, entries_max, now)
            }
            Message::Snapshot { author, pull_id, since, as_of, truncated, entries, audience } => {
                let Some(in_flight) = self.take_in_flight(from, &author, pull_id) else { return };
                if since.is_some() && since != in_flight.since {
                    self.stats.answers_stale += 1;
                    return;
                }
                self.apply_snapshot(&author, since, as_of, truncated, entries);
                self.stats.snapshots_applied += 1;
                for (follower, sees) in audience {
                    let key = (follower, author.clone());
                    let ours = self.state.subscriptions.get(&key).is_some_and(|subscription| {
                        subscription.acked && subscription.active && subscription.author_home == from
                    });
                    if ours {
                        self.apply_sees(&key, sees, now);
                    }
                }
                let next = if self.wants_full(&author) {
                    now.saturating_add(self.jitter(self.config.pull_jitter_ms))
                } else {
                    let jitter = self.jitter(self.config.pull_jitter_ms);
                    now.saturating_add(self.config.pull_interval_ms).saturating_add(jitter)
                };
                self.pulls.entry(author).or_default().next_pull_at = next;
            }
            Message::PullRefused { author, pull_id, refusal } => {
                if self.take_in_flight(from, &author, pull_id).is_none() {
                    return;
                }
                let jitter = self.jitter(self.config.pull_jitter_ms);
                let delay = match refusal {
                    Refusal::RateLimited { retry_after_ms } => retry_after_ms,
                    Refusal::NotSubscribed => {
                        // The author side lacks this node's follows: send them again,
                        // then refill from scratch.
                        if let Some(cache) = self.state.caches.get_mut(&author) {
                            cache.full_wanted = true;
                        }
                        let keys: Vec<(UserId, UserId)> = self
                            .state
                            .subscriptions
                            .keys()
                            .filter(|(_, followed)| *followed == author)
                            .cloned()
                            .collect();
                        for key in keys {
                            if let Some(subscription) = self.state.subscriptions.get_mut(&key) {
                                subscription.acked = false;
                            }
                            self.subscribe_sent_at.remove(&key);
                            self.send_subscribe(now, &key);
                        }
                        0
                    }
                };
                self.pulls.entry(author).or_default().next_pull_at = now.saturating_add(delay).saturating_add(jitter);
            }
        }
    }

    /// Resends unacknowledged follows, gives up on unanswered pulls, sends due pulls.
    pub fn on_tick(&mut self, now: u64, random: u64) {
        self.entropy = mix(self.entropy ^ random);
        let due: Vec<(UserId, UserId)> = self
            .state
            .subscriptions
            .iter()
            .filter(|(key, subscription)| {
                !subscription.acked
                    && self.peers_up.contains(&subscription.author_home)
                    && self
                        .subscribe_sent_at
                        .get(*key)
                        .is_none_or(|sent_at| now >= sent_at.saturating_add(self.config.subscribe_retry_ms))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.send_subscribe(now, &key);
        }
        let authors: Vec<UserId> = self.state.caches.keys().cloned().collect();
        for author in authors {
            let pull = self.pulls.entry(author.clone()).or_default();
            if let Some(in_flight) = pull.in_flight {
                if now < in_flight.sent_at.saturating_add(self.config.pull_timeout_ms) {
                    continue;
                }
                pull.in_flight = None;
                self.stats.pulls_timed_out += 1;
                let jitter = self.jitter(self.config.pull_jitter_ms);
                self.pulls.entry(author.clone()).or_default().next_pull_at = now.saturating_add(jitter);
                continue;
            }
            if now >= pull.next_pull_at && self.may_pull(&author) {
                self.send_pull(&author, now);
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// When `on_tick` wants to run next (`None`: only when something arrives).
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |at: u64| next = Some(next.map_or(at, |next: u64| next.min(at)));
        for (key, subscription) in &self.state.subscriptions {
            if !subscription.acked && self.peers_up.contains(&subscription.author_home) {
                let sent_at = self.subscribe_sent_at.get(key).copied();
                consider(sent_at.map_or(0, |sent_at| sent_at.saturating_add(self.config.subscribe_retry_ms)));
            }
        }
        for author in self.state.caches.keys() {
            let pull = self.pulls.get(author);
            match pull.and_then(|pull| pull.in_flight) {
                Some(in_flight) => consider(in_flight.sent_at.saturating_add(self.config.pull_timeout_ms)),
                None if self.may_pull(author) => consider(pull.map_or(0, |pull| pull.next_pull_at)),
                None => {}
            }
        }
        next
    }

    // ----- queries ----------------------------------------------------------------

    /// Whether local user `follower` actively follows `author`.
    /// Whether local user `follower` follows `author` so that they may see the
    /// author's followers-only posts: an active follow the author's home lets count
    /// (not blocked, approved if the account is locked).
    pub fn follows(&self, follower: &str, author: &str) -> bool {
        self.state.subscriptions.get(&(follower.to_string(), author.to_string())).is_some_and(Subscription::counts)
    }

    /// Author side: what the home node `home` may be sent of `author`'s posts, from
    /// the audiences of the active followers there. A node that keeps followers
    /// apart gets what its most-allowed follower may see (it shows each only theirs);
    /// an older node gets followers-only posts only if every follower there may see
    /// them, and nothing only if none may see anything.
    pub fn home_sees(&self, author: &str, home: NodeId) -> Audience {
        self.homes_see(author).get(&home).copied().unwrap_or(Audience::Nothing)
    }

    /// `home_sees` for every home of an active follower of `author`, in one pass.
    fn homes_see(&self, author: &str) -> BTreeMap<NodeId, Audience> {
        // Per home: the most and the least any follower there may see, and whether
        // all of them keep audiences apart.
        let mut homes: BTreeMap<NodeId, (Audience, Audience, bool)> = BTreeMap::new();
        let active = self.state.subscribers.get(author).into_iter().flat_map(|followers| followers.values());
        for subscriber in active.filter(|subscriber| subscriber.active) {
            let (most, least, all_hear) =
                homes.entry(subscriber.home).or_insert((subscriber.sees, subscriber.sees, true));
            *most = (*most).max(subscriber.sees);
            *least = (*least).min(subscriber.sees);
            *all_hear &= subscriber.hears_audience;
        }
        homes
            .into_iter()
            .map(|(home, (most, least, all_hear))| {
                (home, if all_hear { most } else { most.min(Audience::Public).max(least) })
            })
            .collect()
    }

    /// Author side: the active followers of `author` homed elsewhere, with what each
    /// may see (`(follower, subscriber)`), for the driver to judge again.
    pub fn remote_followers(&self, author: &str) -> Vec<(UserId, Subscriber)> {
        self.state
            .subscribers
            .get(author)
            .into_iter()
            .flat_map(|followers| followers.iter())
            .filter(|(_, subscriber)| subscriber.active && subscriber.home != self.id)
            .map(|(follower, subscriber)| (follower.clone(), subscriber.clone()))
            .collect()
    }

    /// Author side: the driver's judgement of what `follower` may see of `author` (a
    /// block, an approval, a lock changed). A change is told to their node, which
    /// refills its cache of the author; pushes and pulls follow it at once.
    pub fn set_audience(&mut self, author: &str, follower: &str, sees: Audience) {
        let Some(subscriber) = self.state.subscribers.get_mut(author).and_then(|followers| followers.get_mut(follower))
        else {
            return;
        };
        if subscriber.sees == sees {
            return;
        }
        subscriber.sees = sees;
        let (home, version) = (subscriber.home, subscriber.version);
        if home != self.id {
            let ack = Message::SubscribeAck {
                follower: follower.to_string(),
                author: author.to_string(),
                version,
                sees: Some(sees),
            };
            self.send(home, ack);
        }
    }

    /// The feed of local user `user`: posts of the authors they follow, anywhere in
    /// the neighbourhood, newest first, at most `limit`.
    pub fn feed_for(&self, user: &str, limit: usize) -> Vec<FeedEntry> {
        let mut feed: Vec<FeedEntry> = Vec::new();
        let followed = self
            .state
            .subscriptions
            .range((user.to_string(), String::new())..)
            .take_while(|((follower, _), _)| follower == user)
            .filter(|(_, subscription)| subscription.active && subscription.sees != Some(Audience::Nothing));
        for ((_, author), subscription) in followed {
            let counts = subscription.counts();
            feed.extend(
                self.newest_entries(author)
                    .into_iter()
                    .filter(|entry| entry.post.as_ref().is_some_and(|post| may_view(post, Some(user), counts))),
            );
        }
        feed.sort_by(|left, right| right.age_key().cmp(&left.age_key()));
        feed.truncate(limit);
        feed
    }

    /// `author`'s posts known here (cached, or theirs if homed here) that `viewer`
    /// may see, newest first: `Followers` posts only to local users following them.
    pub fn posts_of(&self, author: &str, viewer: Option<&str>, limit: usize) -> Vec<FeedEntry> {
        let viewer_follows = viewer.is_some_and(|viewer| self.follows(viewer, author));
        let mut posts: Vec<FeedEntry> = self
            .newest_entries(author)
            .into_iter()
            .filter(|entry| entry.post.as_ref().is_some_and(|post| may_view(post, viewer, viewer_follows)))
            .collect();
        posts.truncate(limit);
        posts
    }

    /// The newest `K` live entries of `author` held here, newest first.
    fn newest_entries(&self, author: &str) -> Vec<FeedEntry> {
        let entries = match (self.state.caches.get(author), self.state.ledgers.get(author)) {
            (Some(cache), _) => &cache.entries,
            (None, Some(ledger)) => &ledger.entries,
            (None, None) => return Vec::new(),
        };
        let mut live: Vec<FeedEntry> = entries.values().filter(|entry| !entry.is_removal()).cloned().collect();
        live.sort_by(|left, right| right.age_key().cmp(&left.age_key()));
        live.truncate(self.config.feed_entries_per_author_max);
        live
    }

    // ----- author side ------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn on_subscribe(
        &mut self,
        from: NodeId,
        follower: UserId,
        follower_home: NodeId,
        author: UserId,
        version: Version,
        active: bool,
        about: SubscribeFrom,
    ) {
        if follower_home != from {
            // A node speaks only for its own users.
            self.stats.subscribes_refused += 1;
            return;
        }
        let known = self.state.subscribers.get(&author).and_then(|followers| followers.get(&follower));
        match known {
            Some(known) if known.version >= version => {}
            _ => {
                let total: usize = self.state.subscribers.values().map(BTreeMap::len).sum();
                if known.is_none() && total >= self.config.subscribers_max {
                    // Not stored, so not acknowledged: the follower's node retries.
                    self.stats.subscribes_refused += 1;
                    return;
                }
                let subscriber = Subscriber {
                    home: from,
                    version,
                    active,
                    handle: about.handle,
                    hears_audience: about.hears_audience,
                    sees: about.sees,
                };
                self.state.subscribers.entry(author.clone()).or_default().insert(follower.clone(), subscriber);
                self.stats.subscribes_applied += 1;
            }
        }
        let sees = self.state.subscribers.get(&author).and_then(|followers| followers.get(&follower)).map(|s| s.sees);
        self.send(from, Message::SubscribeAck { follower, author, version, sees });
    }

    /// Sends `entry` of `author` to the home of every active follower (other nodes,
    /// connected ones; the rest pull when they come back).
    fn push(&mut self, author: &str, entry: FeedEntry) {
        let homes: Vec<(NodeId, Audience)> = self
            .homes_see(author)
            .into_iter()
            .filter(|(home, _)| *home != self.id && self.peers_up.contains(home))
            .collect();
        for (home, sees) in homes {
            let Some(entry) = entry_for(&entry, sees) else { continue };
            self.stats.pushes_sent += 1;
            self.send(home, Message::FeedPush { author: author.to_string(), entry });
        }
    }

    fn bound_ledger(&mut self, author: &str) {
        let config = &self.config;
        let Some(ledger) = self.state.ledgers.get_mut(author) else { return };
        let live = ledger.entries.values().filter(|entry| !entry.is_removal()).count();
        if live > config.ledger_entries_per_author_max {
            // The oldest posts go; followers keep only the newest `K` anyway.
            let mut ages: Vec<(u64, String)> = ledger
                .entries
                .values()
                .filter(|entry| !entry.is_removal())
                .map(|entry| (entry.created_at, entry.post_id.clone()))
                .collect();
            ages.sort();
            for (_, post_id) in ages.into_iter().take(live - config.ledger_entries_per_author_max) {
                ledger.entries.remove(&post_id);
            }
        }
        let removals = ledger.entries.len() - ledger.entries.values().filter(|entry| !entry.is_removal()).count();
        if removals > config.ledger_removals_per_author_max {
            let mut versions: Vec<(Version, String)> = ledger
                .entries
                .values()
                .filter(|entry| entry.is_removal())
                .map(|entry| (entry.version, entry.post_id.clone()))
                .collect();
            versions.sort();
            for (version, post_id) in versions.into_iter().take(removals - config.ledger_removals_per_author_max) {
                ledger.entries.remove(&post_id);
                ledger.full_below = ledger.full_below.max(Some(successor(version)));
            }
        }
    }

    fn on_pull(
        &mut self,
        from: NodeId,
        author: UserId,
        pull_id: u64,
        since: Option<Version>,
        entries_max: u32,
        now: u64,
    ) {
        let subscribed =
            self.state.subscribers.get(&author).is_some_and(|followers| {
                followers.values().any(|subscriber| subscriber.active && subscriber.home == from)
            });
        if !subscribed {
            self.stats.pulls_refused_not_subscribed += 1;
            self.send(from, Message::PullRefused { author, pull_id, refusal: Refusal::NotSubscribed });
            return;
        }
        let (burst, refill_interval_ms) = (self.config.pulls_answered_burst, self.config.pull_refill_interval_ms);
        if let Err(retry_after_ms) = self.bucket.take(now, burst, refill_interval_ms) {
            self.stats.pulls_refused_rate += 1;
            let refusal = Refusal::RateLimited { retry_after_ms };
            self.send(from, Message::PullRefused { author, pull_id, refusal });
            return;
        }
        let message = self.snapshot_for(author, from, pull_id, since, entries_max);
        self.send(from, message);
    }

    /// The answer to a pull: a delta when `since` is recent enough and the changes
    /// fit one snapshot, else the newest entries.
    fn snapshot_for(
        &mut self,
        author: UserId,
        to: NodeId,
        pull_id: u64,
        since: Option<Version>,
        entries_max: u32,
    ) -> Message {
        let level = self.home_sees(&author, to);
        let audience: Vec<(UserId, Audience)> = self
            .state
            .subscribers
            .get(&author)
            .into_iter()
            .flat_map(|followers| followers.iter())
            .filter(|(_, subscriber)| subscriber.active && subscriber.home == to)
            .map(|(follower, subscriber)| (follower.clone(), subscriber.sees))
            .collect();
        let config = &self.config;
        let empty = Ledger::default();
        let ledger = self.state.ledgers.get(&author).unwrap_or(&empty);
        let as_of = ledger.changed_through.unwrap_or(VERSION_ZERO);
        let delta_allowed = since.filter(|since| ledger.full_below.is_none_or(|floor| *since >= floor));
        if let Some(since) = delta_allowed {
            let mut changes: Vec<FeedEntry> = ledger
                .entries
                .values()
                .filter(|entry| entry.version > since)
                .filter_map(|entry| entry_for(entry, level))
                .collect();
            if changes.len() <= config.snapshot_entries_max {
                changes.sort_by_key(|entry| entry.version);
                self.stats.snapshots_delta_sent += 1;
                return Message::Snapshot {
                    author,
                    pull_id,
                    since: Some(since),
                    as_of,
                    truncated: false,
                    entries: changes,
                    audience,
                };
            }
        }
        let mut live: Vec<FeedEntry> = ledger
            .entries
            .values()
            .filter_map(|entry| entry_for(entry, level))
            .filter(|entry| !entry.is_removal())
            .collect();
        live.sort_by(|left, right| right.age_key().cmp(&left.age_key()));
        let limit = (entries_max as usize).clamp(1, config.snapshot_entries_max);
        let truncated = live.len() > limit;
        live.truncate(limit);
        self.stats.snapshots_full_sent += 1;
        Message::Snapshot { author, pull_id, since: None, as_of, truncated, entries: live, audience }
    }

    // ----- follower side ----------------------------------------------------------

    /// What the author's home now lets a local follower see: a change refills the
    /// cache of the author (what was withheld comes, what is no longer allowed goes:
    /// a full snapshot replaces the cache) soon.
    fn apply_sees(&mut self, key: &(UserId, UserId), sees: Audience, now: u64) {
        let Some(subscription) = self.state.subscriptions.get_mut(key) else { return };
        if subscription.sees == Some(sees) {
            return;
        }
        let first = subscription.sees.is_none();
        subscription.sees = Some(sees);
        if first && sees == Audience::Followers {
            // The first word from a home that keeps audiences: nothing was withheld.
            return;
        }
        if let Some(cache) = self.state.caches.get_mut(&key.1) {
            cache.full_wanted = true;
        }
        self.reconcile_cache(&key.1, now);
    }

    fn send_subscribe(&mut self, now: u64, key: &(UserId, UserId)) {
        let Some(subscription) = self.state.subscriptions.get(key) else { return };
        if subscription.acked || !self.peers_up.contains(&subscription.author_home) {
            return;
        }
        let message = Message::Subscribe {
            follower: key.0.clone(),
            follower_home: self.id,
            author: key.1.clone(),
            version: subscription.version,
            active: subscription.active,
            follower_handle: subscription.handle.clone(),
            hears_audience: true,
        };
        let home = subscription.author_home;
        self.subscribe_sent_at.insert(key.clone(), now);
        self.stats.subscribes_sent += 1;
        self.send(home, message);
    }

    /// Drops the cache of an author no local user follows any more; a cache whose
    /// follows changed forgets its outstanding pull (it asked for the old state).
    fn reconcile_cache(&mut self, author: &str, now: u64) {
        let followed = self
            .state
            .subscriptions
            .iter()
            .any(|((_, followed), subscription)| followed == author && subscription.active);
        if !followed {
            self.state.caches.remove(author);
            self.pulls.remove(author);
            return;
        }
        if self.state.caches.get(author).is_some_and(|cache| cache.full_wanted) {
            let jitter = self.jitter(self.config.pull_jitter_ms);
            let pull = self.pulls.entry(author.to_string()).or_default();
            pull.in_flight = None;
            pull.next_pull_at = now.saturating_add(jitter);
        }
    }

    /// A pull goes out only when the author's home is up and has acknowledged every
    /// follow of it from here (so its answer reflects them).
    fn may_pull(&self, author: &str) -> bool {
        let Some(cache) = self.state.caches.get(author) else { return false };
        self.peers_up.contains(&cache.home)
            && self
                .state
                .subscriptions
                .iter()
                .filter(|((_, followed), _)| followed == author)
                .all(|(_, subscription)| subscription.acked)
    }

    /// A full snapshot is wanted: never synced, follows changed, or a removal left
    /// fewer than `K` entries of an author with older ones not cached (and there is
    /// room: when the total limit binds, the oldest stay out).
    fn wants_full(&self, author: &str) -> bool {
        let Some(cache) = self.state.caches.get(author) else { return false };
        if cache.full_wanted || cache.as_of.is_none() {
            return true;
        }
        cache.truncated
            && cache.live_count() < self.config.feed_entries_per_author_max
            && self.total_live() < self.config.feed_entries_max
    }

    fn total_live(&self) -> usize {
        self.state.caches.values().map(AuthorCache::live_count).sum()
    }

    fn send_pull(&mut self, author: &str, now: u64) {
        let full = self.wants_full(author);
        let Some(cache) = self.state.caches.get(author) else { return };
        let since = if full { None } else { cache.as_of };
        let home = cache.home;
        let pull_id = self.next_random();
        let pull = self.pulls.entry(author.to_string()).or_default();
        pull.in_flight = Some(InFlight { pull_id, sent_at: now, since });
        self.stats.pulls_sent += 1;
        if full {
            self.stats.pulls_full_sent += 1;
        }
        let entries_max = u32::try_from(self.config.feed_entries_per_author_max).unwrap_or(u32::MAX);
        self.send(home, Message::Pull { author: author.to_string(), pull_id, since, entries_max });
    }

    /// The outstanding pull `pull_id` of `author` to `from`, now answered.
    fn take_in_flight(&mut self, from: NodeId, author: &str, pull_id: u64) -> Option<InFlight> {
        let home = self.state.caches.get(author).map(|cache| cache.home);
        let pull = self.pulls.get_mut(author);
        match pull {
            Some(pull)
                if home == Some(from) && pull.in_flight.is_some_and(|in_flight| in_flight.pull_id == pull_id) =>
            {
                pull.in_flight.take()
            }
            _ => {
                self.stats.answers_stale += 1;
                None
            }
        }
    }

    fn on_push(&mut self, from: NodeId, author: &str, entry: FeedEntry, now: u64) {
        let Some(entry) = checked_entry(author, entry) else {
            self.stats.pushes_unwanted += 1;
            return;
        };
        let Some(cache) = self.state.caches.get_mut(author).filter(|cache| cache.home == from) else {
            self.stats.pushes_unwanted += 1;
            return;
        };
        // At or below `as_of` a snapshot already said the last word on this post.
        let floor = cache.as_of.max(cache.push_floor);
        if floor.is_some_and(|floor| entry.version <= floor) || !merge_entry(cache, entry) {
            self.stats.pushes_stale += 1;
            return;
        }
        self.stats.pushes_applied += 1;
        self.bound_cache(author);
        if self.wants_full(author) {
            // A removal left a truncated cache short: refill soon, not at the next period.
            let soon = now.saturating_add(self.jitter(self.config.pull_jitter_ms));
            let pull = self.pulls.entry(author.to_string()).or_default();
            pull.next_pull_at = pull.next_pull_at.min(soon);
        }
    }

    /// Merge rule: a full snapshot as of `T` replaces every cached entry at or below
    /// `T` (what it leaves out was deleted, made private, or is older than the newest
    /// `K`) and keeps newer ones (pushes that overtook it); a delta merges entry by
    /// entry. Either way LWW per post id, and afterwards `as_of = T`.
    fn apply_snapshot(
        &mut self,
        author: &str,
        since: Option<Version>,
        as_of: Version,
        truncated: bool,
        entries: Vec<FeedEntry>,
    ) {
        let entries_max = self.config.snapshot_entries_max;
        let Some(cache) = self.state.caches.get_mut(author) else { return };
        if since.is_none() {
            cache.entries.retain(|_, entry| entry.version > as_of);
            cache.truncated = truncated;
            cache.full_wanted = false;
        }
        for entry in entries.into_iter().take(entries_max).filter_map(|entry| checked_entry(author, entry)) {
            merge_entry(cache, entry);
        }
        cache.as_of = cache.as_of.max(Some(as_of));
        self.bound_cache(author);
    }

    /// Per-author and total limits of the feed cache.
    fn bound_cache(&mut self, author: &str) {
        let config = &self.config;
        let Some(cache) = self.state.caches.get_mut(author) else { return };
        if let Some(as_of) = cache.as_of {
            let before = cache.entries.len();
            cache.entries.retain(|_, entry| !entry.is_removal() || entry.version > as_of);
            self.stats.removals_dropped += (before - cache.entries.len()) as u64;
        }
        let mut live: Vec<(u64, String)> = cache
            .entries
            .values()
            .filter(|entry| !entry.is_removal())
            .map(|entry| (entry.created_at, entry.post_id.clone()))
            .collect();
        if live.len() > config.feed_entries_per_author_max {
            live.sort();
            for (_, post_id) in live.iter().take(live.len() - config.feed_entries_per_author_max) {
                cache.entries.remove(post_id);
                self.stats.entries_evicted += 1;
            }
            cache.truncated = true;
        }
        let mut removals: Vec<(Version, String)> = cache
            .entries
            .values()
            .filter(|entry| entry.is_removal())
            .map(|entry| (entry.version, entry.post_id.clone()))
            .collect();
        if removals.len() > config.feed_removals_per_author_max {
            // Forgetting a removal would let a late older push bring the post back;
            // ignore pushes up to it instead (the next pull brings what they carried).
            removals.sort();
            for (version, post_id) in removals.iter().take(removals.len() - config.feed_removals_per_author_max) {
                cache.entries.remove(post_id);
                cache.push_floor = cache.push_floor.max(Some(*version));
                self.stats.removals_dropped += 1;
            }
        }
        let mut total = self.total_live();
        while total > self.config.feed_entries_max {
            let oldest = self
                .state
                .caches
                .iter()
                .flat_map(|(author, cache)| {
                    cache.entries.values().filter(|entry| !entry.is_removal()).map(move |entry| (entry, author))
                })
                .min_by(|(left, _), (right, _)| left.age_key().cmp(&right.age_key()))
                .map(|(entry, author)| (author.clone(), entry.post_id.clone()));
            let Some((author, post_id)) = oldest else { break };
            let cache = self.state.caches.get_mut(&author).expect("found above");
            cache.entries.remove(&post_id);
            cache.truncated = true;
            self.stats.entries_evicted += 1;
            total -= 1;
        }
    }

    // ----- plumbing ---------------------------------------------------------------

    fn send(&mut self, to: NodeId, message: Message) {
        if self.outbox.len() >= self.config.outbox_messages_max {
            self.stats.messages_dropped += 1;
            return;
        }
        self.outbox.push_back((to, message));
    }

    fn next_random(&mut self) -> u64 {
        self.entropy = self.entropy.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.entropy)
    }

    fn jitter(&mut self, max_ms: u64) -> u64 {
        if max_ms == 0 {
            0
        } else {
            self.next_random() % max_ms
        }
    }
}

/// An entry as a follower may hold it: of this author, never `Private` (a live entry
/// that is, from a confused sender, becomes a removal).
fn checked_entry(author: &str, mut entry: FeedEntry) -> Option<FeedEntry> {
    if let Some(post) = &entry.post {
        if post.author_id != author || post.post_id != entry.post_id {
            return None;
        }
        if post.visibility == Visibility::Private {
            entry.post = None;
        }
    }
    Some(entry)
}

/// LWW per post id; returns whether `entry` won.
fn merge_entry(cache: &mut AuthorCache, entry: FeedEntry) -> bool {
    if cache.entries.get(&entry.post_id).is_some_and(|held| held.version >= entry.version) {
        return false;
    }
    cache.entries.insert(entry.post_id.clone(), entry);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes wired by hand: every message is delivered at once unless `drop` says so.
    struct World {
        nodes: Vec<FanoutNode>,
        now: u64,
        versions: u64,
    }

    impl World {
        fn new(node_count: usize) -> World {
            let config = FanoutConfig { pull_jitter_ms: 100, pull_interval_ms: 10_000, ..FanoutConfig::default() };
            let mut nodes: Vec<FanoutNode> = (0..node_count)
                .map(|index| FanoutNode::new(id(index), config.clone(), FanoutState::default(), 0, index as u64))
                .collect();
            for node in &mut nodes {
                for peer in 0..node_count {
                    if id(peer) != node.id() {
                        node.on_peer_up(id(peer), 0, 7);
                    }
                }
            }
            World { nodes, now: 0, versions: 0 }
        }

        fn version(&mut self, node: usize) -> Version {
            self.versions += 1;
            Version { at: Timestamp(self.versions), origin: id(node) }
        }

        fn deliver(&mut self, drop: impl Fn(&Message) -> bool) {
            loop {
                let mut in_flight = Vec::new();
                for (index, node) in self.nodes.iter_mut().enumerate() {
                    while let Some((to, message)) = node.poll_transmit() {
                        in_flight.push((index, to, message));
                    }
                }
                if in_flight.is_empty() {
                    return;
                }
                for (from, to, message) in in_flight {
                    if !drop(&message) {
                        self.nodes[to.0 as usize - 1].on_message(id(from), message, self.now);
                    }
                }
            }
        }

        /// Runs `duration_ms` in 100 ms ticks, delivering everything.
        fn run(&mut self, duration_ms: u64) {
            for _ in 0..duration_ms / 100 {
                self.now += 100;
                for node in &mut self.nodes {
                    node.on_tick(self.now, self.now);
                }
                self.deliver(|_| false);
            }
        }

        fn follow(&mut self, node: usize, follower: &str, author: &str, author_node: usize, active: bool) {
            let version = self.version(node);
            self.nodes[node].local_follow(self.now, follower, author, id(author_node), version, active, None).unwrap();
        }

        fn post(&mut self, node: usize, author: &str, post_id: &str, visibility: Visibility, caption: &str) {
            let version = self.version(node);
            let post = Post {
                post_id: post_id.into(),
                author_id: author.into(),
                caption: caption.into(),
                media: vec![],
                visibility,
                tags: vec![],
                created_at: post_id[1..].parse().unwrap(),
            };
            self.nodes[node].local_post(self.now, author, post_id, version, Some(post)).unwrap();
        }

        fn delete(&mut self, node: usize, author: &str, post_id: &str) {
            let version = self.version(node);
            self.nodes[node].local_post(self.now, author, post_id, version, None).unwrap();
        }

        fn feed(&self, node: usize, user: &str) -> Vec<String> {
            self.nodes[node].feed_for(user, 100).into_iter().map(|entry| entry.post.unwrap().caption).collect()
        }
    }

    fn id(index: usize) -> NodeId {
        NodeId(index as u64 + 1)
    }

    fn is_push(message: &Message) -> bool {
        matches!(message, Message::FeedPush { .. })
    }

    /// The author side's judgement per follower: a node with one approved and one
    /// waiting follower holds followers-only posts but shows them to the approved
    /// one only; a blocked follower is shown nothing; a judgement that changes back
    /// brings everything back (a full pull); a lost acknowledgement of a change is
    /// mended by the audience a pull answer carries.
    #[test]
    fn each_follower_sees_what_the_author_side_judged() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.follow(0, "waiting", "author", 1, true);
        world.run(1_000);
        assert_eq!(world.nodes[1].home_sees("author", id(0)), Audience::Followers, "the simulator's default");
        world.nodes[1].set_audience("author", "waiting", Audience::Public);
        world.deliver(|_| false);
        world.post(1, "author", "p1", Visibility::Public, "open");
        world.post(1, "author", "p2", Visibility::Followers, "inner");
        world.deliver(|_| false);
        assert_eq!(world.feed(0, "fan"), ["inner", "open"]);
        assert_eq!(world.feed(0, "waiting"), ["open"], "followers-only posts for the approved follower only");
        assert_eq!(world.nodes[0].posts_of("author", Some("waiting"), 10).len(), 1);

        // Blocked: nothing for them; the node still gets what the other may see.
        world.nodes[1].set_audience("author", "waiting", Audience::Nothing);
        world.nodes[1].set_audience("author", "fan", Audience::Public);
        world.run(2_000);
        assert!(world.feed(0, "waiting").is_empty(), "a blocked follower is shown nothing");
        assert_eq!(world.feed(0, "fan"), ["open"]);
        let cached = &world.nodes[0].state().caches["author"].entries;
        assert!(cached.values().all(|entry| entry.post.as_ref().is_none_or(|post| post.caption == "open")));
        world.post(1, "author", "p3", Visibility::Followers, "inner two");
        world.deliver(|_| false);
        assert!(world.nodes[0].state().caches["author"].entries.get("p3").is_none_or(FeedEntry::is_removal));

        // Judged back, with the acknowledgement lost: the next pull carries it.
        world.nodes[1].set_audience("author", "fan", Audience::Followers);
        world.deliver(|message| matches!(message, Message::SubscribeAck { .. }));
        assert_eq!(world.feed(0, "fan"), ["open"], "not told yet");
        world.run(25_000);
        assert_eq!(world.feed(0, "fan"), ["inner two", "inner", "open"]);
        assert!(world.feed(0, "waiting").is_empty());
    }

    #[test]
    fn a_node_that_cannot_keep_followers_apart_gets_what_all_its_followers_may_see() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        let subscriber = |world: &mut World| {
            world.nodes[1].state.subscribers.get_mut("author").unwrap().get_mut("fan").unwrap().hears_audience = false;
        };
        subscriber(&mut world);
        assert_eq!(world.nodes[1].home_sees("author", id(0)), Audience::Followers);
        world.nodes[1].set_audience("author", "fan", Audience::Nothing);
        assert_eq!(world.nodes[1].home_sees("author", id(0)), Audience::Nothing);
        world.follow(0, "other", "author", 1, true);
        world.run(1_000);
        world.nodes[1].state.subscribers.get_mut("author").unwrap().get_mut("other").unwrap().hears_audience = false;
        assert_eq!(world.nodes[1].home_sees("author", id(0)), Audience::Public, "one blocked, one not: public only");
    }

    #[test]
    fn a_post_is_pushed_to_a_follower_on_another_node() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        world.post(1, "author", "p1", Visibility::Public, "hello");
        world.deliver(|message| !is_push(message));
        assert_eq!(world.feed(0, "fan"), ["hello"]);
        assert_eq!(world.nodes[0].stats().pushes_applied, 1);
    }

    #[test]
    fn a_delete_whose_push_was_lost_disappears_at_the_next_pull() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        world.post(1, "author", "p1", Visibility::Public, "one");
        world.post(1, "author", "p2", Visibility::Followers, "two");
        world.deliver(|_| false);
        assert_eq!(world.feed(0, "fan"), ["two", "one"]);
        world.delete(1, "author", "p2");
        world.deliver(is_push);
        assert_eq!(world.feed(0, "fan"), ["two", "one"], "the removal was lost");
        world.run(11_000);
        assert_eq!(world.feed(0, "fan"), ["one"]);
        assert!(world.nodes[1].stats().snapshots_delta_sent > 0);
    }

    #[test]
    fn an_edit_to_private_removes_the_entry_and_back_to_public_restores_it() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        world.post(1, "author", "p1", Visibility::Public, "v1");
        world.deliver(|_| false);
        world.post(1, "author", "p1", Visibility::Private, "v2");
        world.deliver(|_| false);
        assert!(world.feed(0, "fan").is_empty());
        let cached = &world.nodes[0].state().caches["author"].entries["p1"];
        assert!(cached.is_removal(), "the private text never reached the follower: {cached:?}");
        world.post(1, "author", "p1", Visibility::Public, "v3");
        world.deliver(|_| false);
        assert_eq!(world.feed(0, "fan"), ["v3"]);
    }

    #[test]
    fn followers_only_posts_are_hidden_from_local_users_who_do_not_follow() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        world.post(1, "author", "p1", Visibility::Followers, "for fans");
        world.post(1, "author", "p2", Visibility::Public, "for all");
        world.deliver(|_| false);
        let captions = |entries: Vec<FeedEntry>| -> Vec<String> {
            entries.into_iter().map(|entry| entry.post.unwrap().caption).collect()
        };
        assert_eq!(captions(world.nodes[0].posts_of("author", Some("fan"), 10)), ["for all", "for fans"]);
        assert_eq!(captions(world.nodes[0].posts_of("author", Some("neighbour"), 10)), ["for all"]);
        assert_eq!(captions(world.nodes[0].posts_of("author", None, 10)), ["for all"]);
        assert!(world.feed(0, "neighbour").is_empty());
        // Unfollowing drops the cache at once, whatever the author side still sends.
        world.follow(0, "fan", "author", 1, false);
        assert!(world.feed(0, "fan").is_empty());
        assert!(world.nodes[0].state().caches.is_empty());
    }

    #[test]
    fn a_full_snapshot_keeps_pushes_that_overtook_it_and_drops_what_it_replaced() {
        let mut world = World::new(2);
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        world.post(1, "author", "p1", Visibility::Public, "old");
        world.post(1, "author", "p2", Visibility::Public, "doomed");
        world.deliver(|_| false);
        // The follower loses its cache: its next pull is a full one.
        let state = world.nodes[0].state().clone();
        let mut state_without_caches = state.clone();
        state_without_caches.caches.clear();
        let config = FanoutConfig { pull_jitter_ms: 100, pull_interval_ms: 10_000, ..FanoutConfig::default() };
        world.nodes[0] = FanoutNode::new(id(0), config, state_without_caches, world.now, 3);
        world.nodes[0].on_peer_up(id(1), world.now, 5);
        world.now += 200;
        world.nodes[0].on_tick(world.now, 9);
        let (to, pull) = world.nodes[0].poll_transmit().expect("a pull");
        assert!(matches!(pull, Message::Pull { since: None, .. }));
        world.nodes[1].on_message(id(0), pull, world.now);
        let (_, snapshot) = world.nodes[1].poll_transmit().expect("a snapshot");
        assert_eq!(to, id(1));
        // After the snapshot was made: p2 deleted, p3 posted; their pushes arrive first.
        world.delete(1, "author", "p2");
        world.post(1, "author", "p3", Visibility::Public, "new");
        world.deliver(|_| false);
        world.nodes[0].on_message(id(1), snapshot, world.now);
        assert_eq!(world.feed(0, "fan"), ["new", "old"]);
        // A late duplicate of an old push (at or below `as_of`) changes nothing.
        let stale = FeedEntry {
            post_id: "p2".into(),
            version: Version { at: Timestamp(1), origin: id(1) },
            created_at: 2,
            post: Some(Post {
                post_id: "p2".into(),
                author_id: "author".into(),
                caption: "doomed".into(),
                media: vec![],
                visibility: Visibility::Public,
                tags: vec![],
                created_at: 2,
            }),
        };
        world.nodes[0].on_message(id(1), Message::FeedPush { author: "author".into(), entry: stale }, world.now);
        assert_eq!(world.feed(0, "fan"), ["new", "old"]);
    }

    #[test]
    fn a_removal_in_a_truncated_cache_brings_an_older_post_back() {
        let mut world = World::new(2);
        world.nodes[0].config.feed_entries_per_author_max = 2;
        world.follow(0, "fan", "author", 1, true);
        world.run(1_000);
        for index in 1..=3 {
            world.post(1, "author", &format!("p{index}"), Visibility::Public, &format!("post {index}"));
        }
        world.deliver(|_| false);
        assert_eq!(world.feed(0, "fan"), ["post 3", "post 2"]);
        world.delete(1, "author", "p3");
        world.deliver(|_| false);
        world.run(1_000);
        assert_eq!(world.feed(0, "fan"), ["post 2", "post 1"]);
    }

    #[test]
    fn local_authors_feed_local_followers_without_messages() {
        let mut world = World::new(2);
        world.follow(0, "fan", "neighbour", 0, true);
        world.post(0, "neighbour", "p1", Visibility::Followers, "next door");
        assert_eq!(world.feed(0, "fan"), ["next door"]);
        assert!(world.nodes[0].poll_transmit().is_none());
    }

    #[test]
    fn over_limit_pulls_are_told_to_come_back_later() {
        let mut bucket = TokenBucket { tokens: 2, updated_at: 0 };
        assert_eq!(bucket.take(0, 2, 100), Ok(()));
        assert_eq!(bucket.take(10, 2, 100), Ok(()));
        assert_eq!(bucket.take(30, 2, 100), Err(70));
        assert_eq!(bucket.take(100, 2, 100), Ok(()));
        assert_eq!(bucket.take(150, 2, 100), Err(50));
        assert_eq!(bucket.take(10_000, 2, 100), Ok(()));
        assert_eq!(bucket.take(10_000, 2, 100), Ok(()));
        assert_eq!(bucket.take(10_000, 2, 100), Err(100));
    }

    #[test]
    fn messages_round_trip_through_json() {
        let entry = FeedEntry {
            post_id: "p".into(),
            version: Version { at: Timestamp(5), origin: NodeId(9) },
            created_at: 5,
            post: None,
        };
        let messages = [
            Message::FeedPush { author: "a".into(), entry: entry.clone() },
            Message::Snapshot {
                author: "a".into(),
                pull_id: 3,
                since: None,
                as_of: entry.version,
                truncated: true,
                entries: vec![entry],
                audience: Vec::new(),
            },
            Message::PullRefused {
                author: "a".into(),
                pull_id: 3,
                refusal: Refusal::RateLimited { retry_after_ms: 40 },
            },
        ];
        for message in messages {
            let json = serde_json::to_string(&message).unwrap();
            assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), message);
        }
    }
}
