//! The fan-out service: the sans-IO `core::fanout::FanoutNode` driven over the
//! neighbour link, its state durable in redb (`store::fanout`), plus the two small
//! neighbour services remote follows need (a profile by handle, a photo of a post)
//! and the on-disk cache of remote photos.
//!
//! Data flow.
//! - Follow of `bob@<node id>` (api/remote.rs): the profile is asked of that node
//!   (service `profile`; its answer names bob's home, where the follow is routed when
//!   this node may call it) → the Follow record is written in the follower's shard as
//!   for any user → `local_follow(version of that record, author_home)` → the state is
//!   saved → only then the client hears back. The core resends `Subscribe` until the
//!   author's home acks it.
//! - Post created, edited or deleted through this node's API by a user homed here
//!   (`post_changed`, called by api/social.rs after the store write): the stored
//!   record is read back with its version → `local_post` (a tombstone is `None`) →
//!   saved → pushed to the homes of the author's followers.
//!   Posts of users homed on a sibling are fanned out by their home only: the home
//!   is where followers subscribe (the answer of `profile` names it). The ledger is
//!   also reconciled with the store (`reconcile`: the newest 100 posts of the author
//!   and every post the ledger shows, fed to `local_post` when the store holds a
//!   newer version): for each local author with followers at start and every
//!   `pull_interval_ms`, and for an author's first follower before the first pull.
//!   That covers posts from before fan-out existed, a crash between a post's commit
//!   and the fan-out save, and posts written on a sibling (failover) and replicated
//!   to the home.
//! - Every message: `{"version":1,"message":…}` JSON to service `fanout`, one-way
//!   (empty answer). An empty body is a probe.
//! - Feeds (api/social.rs) merge the store's posts with `feed_for`; photos of remote
//!   posts come from `remote_media`: a disk cache under `<data_dir>/remote-media`,
//!   misses coalesced per (photo, variant), fetched from the author's home (service
//!   `fanout-media/2`, in the media encoding of `media_fetch`) and checked against the SHA-256 and length its answer declares.
//!   Thumbs of posts that arrive by push or pull are prefetched (a few at a time), so
//!   feed items carry the photo's sizes and blurhash and the first view is a hit.
//!   The author's node gives a photo only when a post carrying it is public, or
//!   followers-only with an active follower homed on the asking node.
//!
//! Persistence: every step (an input and the messages it produced) runs under one
//! lock; the state is saved (only the rows that changed) before its messages are
//! queued for sending, and before a follow is acknowledged. If saving fails nothing
//! is sent; the core resends or pulls later.
//!
//! Who may see what (`core::fanout::Audience`): a follow from another node is judged
//! when it arrives and again whenever the author blocks or unblocks, answers a follow
//! request, or locks or unlocks (hooks from the API), and at every reconcile (changes
//! made on a sibling arrive by replication): nothing if the author blocks the
//! follower, public posts only while a locked author has not approved them (or their
//! node is older than audiences), followers posts too otherwise. Follow requests
//! from other nodes are the subscribers a locked author has not answered; an answer
//! is the same replicated FollowDecision a local follower's is, dated by the follow's
//! version. A post an admin hid is fanned out as a removal, versioned by the newer of
//! the post and the decision, so hiding and unhiding reach caches like edits.
//!
//! Peers up and down: the core sends only to peers it was told are up. A peer is up
//! once it answered a call (a message or a probe) or called us; it is down after a
//! call to it failed (unreachable or timed out). Peers that matter (homes of followed
//! authors, of local authors' followers) are probed with an empty `fanout` call:
//! down ones every `probe_interval_ms` plus up to half of that again at random, up
//! ones ten times less often. A node that comes back is therefore found within about
//! two probe intervals, and the core then pulls every author homed there after its
//! own jitter (`pull_jitter_ms`); the author side answers pulls through a token
//! bucket, so a returning node is not hammered by every follower at once.
//!
//! Absent (for now): a post written on a sibling for a user homed here reaches
//! followers only at the next reconcile (up to `pull_interval_ms`); a follow made on
//! a sibling of the follower's home (failover) is a Follow record there but no
//! subscription (subscriptions live where the follow was made); the feed entry does
//! not carry the photo's SHA-256, so a remote photo is checked against the length and
//! SHA-256 the serving node declares (and must be a JPEG), not against the author's
//! own statement; remote posts show no likes or comments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::coalesce::Coalescer;
use crate::config::FanoutSettings;
use crate::core::fanout::{
    Audience, FanoutConfig, FanoutError, FanoutNode, FanoutState, FeedEntry, Message, RemoteUser,
    FANOUT_PROTOCOL_VERSION,
};
use crate::core::model::{
    follow_counts, follow_pending, follow_unanswered, may_view, NodeId, Post, Record, Version, Visibility,
};
use crate::exposition;
use crate::link::neighbours::{NeighbourError, NeighbourHandler, NeighbourLink, NeighbourServices, Refusal};
use crate::os;
use crate::services::media_fetch::{decode_media, encode_media};
use crate::store::blobs::is_sha256_hex;
use crate::store::fanout::{RemoteFollowRequest, RemoteProfile};
use crate::store::{hex, BlobKind, MediaInfo, Store, StoreError};

/// Neighbour service names.
pub const SERVICE_FANOUT: &str = "fanout";
pub const SERVICE_PROFILE: &str = "profile";
/// `/2`: answers in the media encoding (`media_fetch::encode_media`); a node of
/// the earlier layout answers "no service" rather than bytes misread.
pub const SERVICE_MEDIA: &str = "fanout-media/2";
/// Longest handle asked of the profile service.
const HANDLE_BYTES_MAX: usize = 64;
/// Up peers are probed this many times less often than down ones.
const UP_PROBE_FACTOR: u64 = 10;
/// Posts per author compared with the store by `reconcile` (followers keep fewer).
const RECONCILE_POSTS_MAX: usize = 100;
/// Thumbs fetched ahead of the first feed view, per message and at once.
const PREFETCH_PER_MESSAGE_MAX: usize = 16;
const PREFETCHES_RUNNING_MAX: usize = 4;
/// The driver looks at its timers at least this often.
const DRIVER_WAKE_MAX_MS: u64 = 1000;

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u8,
    message: Message,
}

#[derive(Serialize, Deserialize)]
struct MediaRequest {
    media_id: String,
    variant: String,
}

/// Makes the avatar derivative of a media id here if missing; whether it exists after.
pub type AvatarMaker = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Why a remote avatar could not be fetched, shared by coalesced callers.
#[derive(Debug, Clone)]
enum AvatarFetchError {
    Unknown(NodeId),
    Failed(String),
}

/// A 256×256 JPEG is a few tens of kB; more is not an avatar.
pub const AVATAR_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FanoutServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fanout(#[from] FanoutError),
    #[error(transparent)]
    Neighbour(#[from] NeighbourError),
    #[error("node {node} answered badly: {reason}")]
    BadAnswer { node: NodeId, reason: String },
}

impl FanoutServiceError {
    /// The node asked for is neither a sibling nor a configured neighbour.
    pub fn is_unknown_node(&self) -> bool {
        matches!(self, FanoutServiceError::Neighbour(NeighbourError::Unknown(_)))
    }
}

#[derive(Debug, Clone, Copy)]
struct PeerHealth {
    up: bool,
    next_probe_at: u64,
}

struct Inner {
    node: FanoutNode,
    /// What the store holds now.
    saved: FanoutState,
    profiles: BTreeMap<String, RemoteProfile>,
    peers: BTreeMap<NodeId, PeerHealth>,
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct FanoutCounters {
    pub messages_sent: AtomicU64,
    pub messages_failed: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub media_fetched: AtomicU64,
    pub media_coalesced: AtomicU64,
    pub media_cache_hits: AtomicU64,
    prefetches_running: std::sync::atomic::AtomicUsize,
}

pub struct Fanout {
    node_id: NodeId,
    store: Arc<Store>,
    link: Arc<NeighbourLink>,
    settings: FanoutSettings,
    runtime: tokio::runtime::Handle,
    inner: Mutex<Inner>,
    outbox: mpsc::Sender<(NodeId, Message)>,
    wake: Notify,
    media: RemoteMedia,
    /// Makes the avatar derivative of a local photo if it is missing (the API's media
    /// pipeline, set once the API exists), so other nodes can be given it.
    avatar_maker: std::sync::OnceLock<AvatarMaker>,
    pub counters: FanoutCounters,
}

fn random_u64() -> u64 {
    u64::from_le_bytes(os::random_bytes())
}

impl Fanout {
    /// Loads the saved state, registers the neighbour services and starts the driver.
    /// Call from within the runtime.
    pub fn start(
        store: Arc<Store>,
        link: Arc<NeighbourLink>,
        services: &NeighbourServices,
        settings: &FanoutSettings,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Fanout>, FanoutServiceError> {
        let (state, profiles) = store.fanout_load()?;
        let config = FanoutConfig {
            feed_entries_per_author_max: settings.feed_entries_per_author_max.max(1),
            feed_entries_max: settings.feed_entries_max.max(1),
            snapshot_entries_max: FanoutConfig::default()
                .snapshot_entries_max
                .max(settings.feed_entries_per_author_max),
            // Followers keep the newest few; the author side needs no more than a
            // few snapshots' worth (older pullers get a full snapshot).
            ledger_entries_per_author_max: 1_000,
            outbox_messages_max: settings.outbox_messages_max.max(1),
            pull_interval_ms: settings.pull_interval_ms,
            pull_jitter_ms: settings.pull_jitter_ms,
            ..FanoutConfig::default()
        };
        let node_id = store.node_id();
        let now = os::now_ms();
        let node = FanoutNode::new(node_id, config, state.clone(), now, random_u64());
        let (sender, receiver) = mpsc::channel(settings.outbox_messages_max.max(1));
        let fanout = Arc::new(Fanout {
            node_id,
            store,
            link,
            settings: settings.clone(),
            runtime: tokio::runtime::Handle::current(),
            inner: Mutex::new(Inner { node, saved: state, profiles, peers: BTreeMap::new() }),
            outbox: sender,
            wake: Notify::new(),
            media: RemoteMedia::new(data_dir.join("remote-media"), settings),
            counters: FanoutCounters::default(),
            avatar_maker: std::sync::OnceLock::new(),
        });
        services.register(SERVICE_FANOUT, Arc::new(FanoutService(fanout.clone())));
        services.register(SERVICE_PROFILE, Arc::new(ProfileService(fanout.clone())));
        services.register(SERVICE_MEDIA, Arc::new(MediaService(fanout.clone())));
        tokio::spawn(send_loop(fanout.clone(), receiver));
        tokio::spawn(drive(fanout.clone()));
        Ok(fanout)
    }

    /// Lets this node give other nodes avatars it has not made yet (see `AvatarMaker`).
    pub fn set_avatar_maker(&self, maker: AvatarMaker) {
        if self.avatar_maker.set(maker).is_err() {
            tracing::warn!("the avatar maker was set twice; the first one stays");
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::locking::lock(&self.inner)
    }

    /// One step of the node: `input`, then the state saved, then its messages queued.
    fn step<R>(&self, input: impl FnOnce(&mut FanoutNode, u64) -> R) -> Result<R, FanoutServiceError> {
        let mut inner = self.lock();
        let result = input(&mut inner.node, os::now_ms());
        self.persist_and_queue(&mut inner)?;
        Ok(result)
    }

    fn persist_and_queue(&self, inner: &mut Inner) -> Result<(), FanoutServiceError> {
        if *inner.node.state() != inner.saved {
            if let Err(error) = self.store.fanout_save(&inner.saved, inner.node.state()) {
                tracing::error!(%error, "cannot save the fan-out state; nothing is sent until it is");
                return Err(error.into());
            }
            inner.saved = inner.node.state().clone();
        }
        let mut queued = false;
        while let Some(outgoing) = inner.node.poll_transmit() {
            queued = true;
            if self.outbox.try_send(outgoing).is_err() {
                // Resent by the core (follows) or mended by the next pull (pushes).
                self.counters.messages_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// What a call's outcome says about `peer`: it answered (up) or not (down).
    fn peer_seen(&self, peer: NodeId, reachable: bool) {
        if peer == self.node_id {
            return;
        }
        let mut inner = self.lock();
        let now = os::now_ms();
        let interval = self.settings.probe_interval_ms.max(1);
        let was_up = inner.peers.get(&peer).is_some_and(|health| health.up);
        let wait = if reachable { interval * UP_PROBE_FACTOR } else { interval };
        let next_probe_at = now + wait + random_u64() % (wait / 2 + 1);
        inner.peers.insert(peer, PeerHealth { up: reachable, next_probe_at });
        if reachable && !was_up {
            tracing::info!(%peer, "fan-out peer is up");
            inner.node.on_peer_up(peer, now, random_u64());
            let _ = self.persist_and_queue(&mut inner);
        } else if !reachable && was_up {
            tracing::info!(%peer, "fan-out peer is down");
            inner.node.on_peer_down(peer, now);
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Peers worth probing: homes of followed authors and of local authors' followers.
    fn relevant_peers(inner: &Inner, own: NodeId) -> Vec<NodeId> {
        let state = inner.node.state();
        let mut peers: Vec<NodeId> = state
            .subscriptions
            .values()
            .map(|subscription| subscription.author_home)
            .chain(state.caches.values().map(|cache| cache.home))
            .chain(
                state
                    .subscribers
                    .values()
                    .flat_map(|followers| followers.values())
                    .filter(|s| s.active)
                    .map(|s| s.home),
            )
            .filter(|peer| *peer != own)
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    // ----- hooks (blocking threads) -----

    /// Brings the ledger of `author` (a user homed here) up to date with the store:
    /// their newest `RECONCILE_POSTS_MAX` posts and every post the ledger shows live,
    /// each fed to `local_post` when the store holds a newer version (in version
    /// order). This catches posts from before the ledger existed, a crash between a
    /// post's commit and the fan-out save, and posts written on a sibling.
    pub fn reconcile(&self, author_id: &str) {
        if !self.homed_here(author_id) {
            return;
        }
        let (known, removed): (BTreeMap<String, Version>, std::collections::BTreeSet<String>) = {
            let inner = self.lock();
            let ledger = inner.node.state().ledgers.get(author_id);
            let known = ledger
                .map(|ledger| ledger.entries.values().map(|e| (e.post_id.clone(), e.version)).collect())
                .unwrap_or_default();
            let removed = ledger
                .map(|ledger| ledger.entries.values().filter(|e| e.is_removal()).map(|e| e.post_id.clone()).collect())
                .unwrap_or_default();
            (known, removed)
        };
        let newest = match self.store.posts_by_author(author_id, None, RECONCILE_POSTS_MAX, |_| true) {
            Ok(posts) => posts,
            Err(error) => {
                tracing::error!(%error, "cannot read posts to reconcile fan-out");
                return;
            }
        };
        let mut post_ids: Vec<String> = newest.into_iter().map(|post| post.post_id).collect();
        post_ids.extend(known.keys().cloned());
        post_ids.sort();
        post_ids.dedup();
        let mut changes = Vec::new();
        for post_id in post_ids {
            let (version, body) = match self
                .store
                .post_record(&post_id)
                .and_then(|record| record.map(|record| self.fanned_out(record)).transpose())
            {
                Ok(Some(fanned)) => fanned,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(%error, post_id, "cannot read a post to reconcile fan-out");
                    continue;
                }
            };
            let newer = known.get(&post_id).is_none_or(|known| *known < version);
            // Kept as a removal by a node from before locked authors' followers-only
            // posts were kept (`FanoutNode::local_post` takes the post in).
            let kept_as_removal = removed.contains(&post_id)
                && body.as_ref().is_some_and(|post| post.visibility == Visibility::Followers);
            if newer || kept_as_removal {
                changes.push((post_id, version, body));
            }
        }
        if changes.is_empty() {
            return;
        }
        changes.sort_by_key(|(_, version, _)| *version);
        let count = changes.len();
        let stepped = self.step(|node, now| {
            for (post_id, version, body) in changes {
                if let Err(error) = node.local_post(now, author_id, &post_id, version, body) {
                    tracing::error!(%error, "fan-out refused a post");
                }
            }
        });
        match stepped {
            Ok(()) => tracing::info!(author = author_id, posts = count, "fan-out ledger caught up with the store"),
            Err(error) => tracing::error!(%error, "fan-out could not save reconciled posts"),
        }
    }

    /// Reconciles every local author with followers elsewhere, and judges their
    /// followers again (blocks and approvals made on a sibling arrive by replication)
    /// (on a blocking thread).
    fn reconcile_followed_authors(&self) {
        let authors: Vec<String> = self
            .lock()
            .node
            .state()
            .subscribers
            .iter()
            .filter(|(_, followers)| followers.values().any(|follower| follower.active))
            .map(|(author, _)| author.clone())
            .collect();
        for author in authors {
            self.reconcile(&author);
            self.audience_changed(&author);
        }
    }

    /// What a follower of `author` on another node may see of them: nothing if the
    /// author blocks them; public posts only while a locked author has not approved
    /// the follow made at `follow_version`, or when the follower's node cannot keep
    /// followers apart (`hears_audience`); else followers-only posts too. A store
    /// that cannot be read gives public posts only.
    fn judge(&self, author: &str, follower: &str, follow_version: Version, hears_audience: bool) -> Audience {
        let judged = || -> Result<Audience, StoreError> {
            if self.store.blocks(author, follower)? {
                return Ok(Audience::Nothing);
            }
            let locked = self.store.user(author)?.is_some_and(|user| user.locked);
            let decision = self.store.follow_decision(author, follower)?;
            let counts = follow_counts(follow_version.at.physical_ms(), locked, decision.as_ref());
            Ok(if counts && (!locked || hears_audience) { Audience::Followers } else { Audience::Public })
        };
        judged().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot judge a follower for fan-out; public posts only");
            Audience::Public
        })
    }

    /// `author` (homed here) blocked or unblocked someone, answered a follow request,
    /// or locked or unlocked their account: each follower on another node is judged
    /// again, and told when what they may see changed.
    pub fn audience_changed(&self, author: &str) {
        let followers = self.lock().node.remote_followers(author);
        if followers.is_empty() {
            return;
        }
        let judged: Vec<(String, Audience)> = followers
            .into_iter()
            .map(|(follower, subscriber)| {
                let sees = self.judge(author, &follower, subscriber.version, subscriber.hears_audience);
                (follower, sees)
            })
            .collect();
        let stepped = self.step(|node, _| {
            for (follower, sees) in judged {
                node.set_audience(author, &follower, sees);
            }
        });
        if let Err(error) = stepped {
            tracing::error!(%error, "fan-out could not save its followers' audiences");
        }
    }

    /// `author` locked or unlocked their account: their followers on other nodes with
    /// no answer yet are approved (locking keeps the followers one has, unlocking
    /// lets in everyone who asked, as for local followers), then all are judged again.
    pub fn lock_changed(&self, author: &str) {
        let followers = self.lock().node.remote_followers(author);
        for (follower, subscriber) in followers {
            let since = subscriber.version.at.physical_ms();
            let approved = || -> Result<(), StoreError> {
                let decision = self.store.follow_decision(author, &follower)?;
                if follow_unanswered(since, decision.as_ref()) && !self.store.blocks(author, &follower)? {
                    self.store.answer_remote_follow(author, &follower, since, true)?;
                }
                Ok(())
            };
            if let Err(error) = approved() {
                tracing::error!(%error, "cannot approve a follower of another node");
            }
        }
        self.audience_changed(author);
    }

    /// Follows of `author` (homed here) by users of other nodes that wait for the
    /// locked account's answer (blocked followers are not asking).
    pub fn follow_requests(&self, author: &str) -> Result<Vec<RemoteFollowRequest>, FanoutServiceError> {
        let followers = self.lock().node.remote_followers(author);
        if followers.is_empty() || !self.store.user(author)?.is_some_and(|user| user.locked) {
            return Ok(Vec::new());
        }
        let mut requests = Vec::new();
        for (follower, subscriber) in followers {
            if self.store.blocks(author, &follower)? {
                continue;
            }
            let since = subscriber.version.at.physical_ms();
            let decision = self.store.follow_decision(author, &follower)?;
            if follow_pending(since, true, decision.as_ref()) {
                requests.push(RemoteFollowRequest {
                    user_id: follower,
                    handle: subscriber.handle.clone(),
                    home: subscriber.home,
                    since,
                });
            }
        }
        Ok(requests)
    }

    /// `author` answers the follow of `handle` (or their user id) of node `home`:
    /// the FollowDecision is written, then the follower is judged again. `None` when
    /// no such user of that node follows `author`.
    pub fn answer_follow(
        &self,
        author: &str,
        handle: &str,
        home: NodeId,
        approved: bool,
    ) -> Result<Option<RemoteFollowRequest>, FanoutServiceError> {
        let found = self.lock().node.remote_followers(author).into_iter().find(|(follower, subscriber)| {
            subscriber.home == home && (subscriber.handle.as_deref() == Some(handle) || follower == handle)
        });
        let Some((follower, subscriber)) = found else { return Ok(None) };
        let since = subscriber.version.at.physical_ms();
        self.store.answer_remote_follow(author, &follower, since, approved)?;
        self.audience_changed(author);
        Ok(Some(RemoteFollowRequest { user_id: follower, handle: subscriber.handle, home, since }))
    }

    /// Keeps how to show a remote user (a followed or blocked one): handle, home and
    /// avatar, durable before it is used.
    pub fn remember_profile(&self, user: &RemoteUser) -> Result<(), FanoutServiceError> {
        let profile = RemoteProfile {
            user_id: user.user_id.clone(),
            handle: user.handle.clone(),
            home: user.home,
            avatar: user.avatar.clone(),
        };
        if self.lock().profiles.get(&profile.user_id) != Some(&profile) {
            self.store.fanout_save_profile(&profile)?;
            self.lock().profiles.insert(profile.user_id.clone(), profile);
        }
        Ok(())
    }

    fn homed_here(&self, user_id: &str) -> bool {
        match self.store.user(user_id) {
            Ok(Some(user)) => user.home.is_none_or(|home| home == self.node_id),
            Ok(None) => false,
            Err(error) => {
                tracing::error!(%error, "cannot read a post's author for fan-out");
                false
            }
        }
    }

    /// A post record as fan-out carries it: a post an admin hid goes as a removal,
    /// and the entry's version is the newer of the post's and the admins' decision's,
    /// so hiding and unhiding reach followers' caches (last writer wins per post) as
    /// an edit does.
    fn fanned_out(&self, record: Record<Post>) -> Result<(Version, Option<Post>), StoreError> {
        let Some(post) = record.body else { return Ok((record.version, None)) };
        let moderation = self.store.post_moderation_record(&post.author_id, &post.post_id)?;
        let Some(moderation) = moderation else { return Ok((record.version, Some(post))) };
        let hidden = moderation.body.as_ref().is_some_and(|decision| decision.hidden);
        Ok((record.version.max(moderation.version), (!hidden).then_some(post)))
    }

    /// A post of `author_id` was created, edited, deleted, hidden or unhidden through
    /// this node: if the author is homed here, its stored record goes to `local_post`.
    pub fn post_changed(&self, author_id: &str, post_id: &str) {
        if !self.homed_here(author_id) {
            return;
        }
        let record = match self.store.post_record(post_id) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, post_id, "cannot read a post for fan-out");
                return;
            }
        };
        let (version, body) = match self.fanned_out(record) {
            Ok(fanned) => fanned,
            Err(error) => {
                tracing::error!(%error, post_id, "cannot read a post's moderation for fan-out");
                return;
            }
        };
        let stepped = self.step(|node, now| node.local_post(now, author_id, post_id, version, body));
        match stepped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "fan-out refused a post"),
            Err(error) => tracing::error!(%error, "fan-out could not save a post"),
        }
    }

    /// A local user follows (or stops following) a remote user; durable on return.
    pub fn follow_remote(
        &self,
        follower: &str,
        author: &RemoteUser,
        version: Version,
        active: bool,
    ) -> Result<(), FanoutServiceError> {
        self.remember_profile(author)?;
        let handle = self.store.user(follower)?.map(|user| user.handle);
        self.step(|node, now| {
            node.local_follow(now, follower, &author.user_id, author.home, version, active, handle.as_deref())
        })??;
        Ok(())
    }

    // ----- queries (blocking threads) -----

    /// Asks `node` for the user with `handle`; the answer's home is kept if this node
    /// may call it, else `node` stands for them.
    pub fn resolve(&self, handle: &str, node: NodeId) -> Result<Option<RemoteUser>, FanoutServiceError> {
        let timeout = Duration::from_millis(self.settings.call_timeout_ms);
        let answer = self.runtime.block_on(self.link.call(node, SERVICE_PROFILE, handle.as_bytes(), timeout));
        self.peer_seen(
            node,
            !matches!(
                answer,
                Err(NeighbourError::Unreachable { .. } | NeighbourError::Down { .. } | NeighbourError::Timeout { .. })
            ),
        );
        let answer = match answer {
            Ok(answer) => answer,
            Err(NeighbourError::Refused { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let mut user: RemoteUser = serde_json::from_slice(&answer)
            .map_err(|error| FanoutServiceError::BadAnswer { node, reason: format!("profile: {error}") })?;
        if user.home != node && !self.link.neighbours().iter().any(|known| known.node_id == user.home) {
            user.home = node;
        }
        // Another node's word: profile text within our limits, an avatar a media id
        // or nothing.
        user.display_name = user.display_name.chars().take(crate::core::model::DISPLAY_NAME_CHARS_MAX).collect();
        user.bio = user.bio.chars().take(crate::core::model::BIO_CHARS_MAX).collect();
        user.avatar = user.avatar.filter(|media_id| is_sha256_hex(media_id));
        Ok(Some(user))
    }

    /// The remote user a local user follows, as last resolved.
    pub fn profile(&self, user_id: &str) -> Option<RemoteProfile> {
        self.lock().profiles.get(user_id).cloned()
    }

    /// A remote user known here by `handle`, homed at or resolved through `node`:
    /// one followed or blocked from here, else a follower of a user of this node.
    pub fn known_profile(&self, handle: &str, node: NodeId) -> Option<RemoteProfile> {
        let inner = self.lock();
        let mut known = inner.profiles.values().filter(|profile| profile.handle == handle);
        let remembered = known.clone().find(|profile| profile.home == node).or_else(|| known.next()).cloned();
        remembered.or_else(|| {
            inner.node.state().subscribers.values().flat_map(|followers| followers.iter()).find_map(
                |(follower, subscriber)| {
                    (subscriber.home == node && subscriber.handle.as_deref() == Some(handle)).then(|| RemoteProfile {
                        user_id: follower.clone(),
                        handle: handle.to_owned(),
                        home: node,
                        avatar: None,
                    })
                },
            )
        })
    }

    pub fn follows(&self, follower: &str, author: &str) -> bool {
        self.lock().node.follows(follower, author)
    }

    /// Remote posts for `user`'s feed, newest first.
    pub fn feed_for(&self, user: &str, limit: usize) -> Vec<FeedEntry> {
        self.lock().node.feed_for(user, limit)
    }

    /// Cached posts of a remote author that `viewer` may see, newest first.
    pub fn posts_of(&self, author: &str, viewer: Option<&str>, limit: usize) -> Vec<FeedEntry> {
        self.lock().node.posts_of(author, viewer, limit)
    }

    /// What the photo cache knows of a remote photo (for feed items).
    pub fn cached_media_info(&self, media_id: &str) -> Option<MediaInfo> {
        self.media.info(media_id)
    }

    /// A variant of a photo of a remote post `viewer` may see: from the cache, else
    /// fetched from the author's home (one fetch per photo and variant at a time).
    /// `Ok(None)`: no cached remote post that `viewer` may see carries it.
    pub fn remote_media(
        &self,
        viewer: Option<&str>,
        media_id: &str,
        kind: BlobKind,
    ) -> Result<Option<(MediaInfo, Vec<u8>)>, FanoutServiceError> {
        if kind == BlobKind::Original || !is_sha256_hex(media_id) {
            return Ok(None);
        }
        let home = {
            let inner = self.lock();
            let state = inner.node.state();
            state.caches.iter().find_map(|(author, cache)| {
                let follows = viewer.is_some_and(|viewer| inner.node.follows(viewer, author));
                cache
                    .entries
                    .values()
                    .filter_map(|entry| entry.post.as_ref())
                    .any(|post| post.media.iter().any(|id| id == media_id) && may_view(post, viewer, follows))
                    .then_some(cache.home)
            })
        };
        let Some(home) = home else { return Ok(None) };
        if let Some(hit) = self.media.get(media_id, kind) {
            self.counters.media_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        let key = format!("{media_id}.{}", kind.name());
        let (fetched, coalesced) =
            self.media.fetches.run(key, || self.fetch_media(home, media_id, kind).map_err(|error| error.to_string()));
        if coalesced {
            self.counters.media_coalesced.fetch_add(1, Ordering::Relaxed);
        }
        match fetched {
            Ok(found) => Ok(Some(found)),
            Err(reason) => Err(FanoutServiceError::BadAnswer { node: home, reason }),
        }
    }

    /// The avatar derivative of `media_id` as `node` serves it (avatars are public):
    /// from the cache, else fetched from `node` over the link (one fetch per photo at a
    /// time). `Ok(None)`: `node` says it is not an avatar there (or not made yet).
    pub fn remote_avatar(&self, media_id: &str, node: NodeId) -> Result<Option<Vec<u8>>, FanoutServiceError> {
        if !is_sha256_hex(media_id) {
            return Ok(None);
        }
        // Only a sibling or configured neighbour is asked (or stands behind a cached copy).
        if !self.link.neighbours().iter().any(|known| known.node_id == node) {
            return Err(NeighbourError::Unknown(node).into());
        }
        // Cached by photo: the square is made from the photo alone, alike on every node.
        if let Some(hit) = self.media.get_avatar(media_id) {
            self.counters.media_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        let key = format!("{media_id}.avatar@{node}");
        let (fetched, coalesced) = self.media.avatar_fetches.run(key, || self.fetch_avatar(node, media_id));
        if coalesced {
            self.counters.media_coalesced.fetch_add(1, Ordering::Relaxed);
        }
        fetched.map_err(|reason| match reason {
            AvatarFetchError::Unknown(node) => NeighbourError::Unknown(node).into(),
            AvatarFetchError::Failed(reason) => FanoutServiceError::BadAnswer { node, reason },
        })
    }

    fn fetch_avatar(&self, node: NodeId, media_id: &str) -> Result<Option<Vec<u8>>, AvatarFetchError> {
        let request = serde_json::to_vec(&MediaRequest { media_id: media_id.to_owned(), variant: "avatar".to_owned() })
            .expect("requests serialize");
        let timeout = Duration::from_millis(self.settings.call_timeout_ms);
        let answer = self.runtime.block_on(self.link.call(node, SERVICE_MEDIA, &request, timeout));
        self.peer_seen(
            node,
            !matches!(
                answer,
                Err(NeighbourError::Unreachable { .. } | NeighbourError::Down { .. } | NeighbourError::Timeout { .. })
            ),
        );
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(NeighbourError::Refused { .. }) => return Ok(None),
            Err(NeighbourError::Unknown(node)) => return Err(AvatarFetchError::Unknown(node)),
            Err(error) => return Err(AvatarFetchError::Failed(error.to_string())),
        };
        if bytes.len() > AVATAR_BYTES_MAX {
            return Err(AvatarFetchError::Failed(format!(
                "the avatar of {media_id} has {} bytes; the limit is {AVATAR_BYTES_MAX}",
                bytes.len()
            )));
        }
        if !bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            return Err(AvatarFetchError::Failed(format!("the avatar of {media_id} is not a JPEG")));
        }
        self.media.put_avatar(media_id, &bytes);
        self.counters.media_fetched.fetch_add(1, Ordering::Relaxed);
        Ok(Some(bytes))
    }

    fn fetch_media(
        &self,
        home: NodeId,
        media_id: &str,
        kind: BlobKind,
    ) -> Result<(MediaInfo, Vec<u8>), FanoutServiceError> {
        let request =
            serde_json::to_vec(&MediaRequest { media_id: media_id.to_owned(), variant: kind.name().to_owned() })
                .expect("requests serialize");
        let timeout = Duration::from_millis(self.settings.call_timeout_ms);
        let answer = self.runtime.block_on(self.link.call(home, SERVICE_MEDIA, &request, timeout));
        self.peer_seen(
            home,
            !matches!(
                answer,
                Err(NeighbourError::Unreachable { .. } | NeighbourError::Down { .. } | NeighbourError::Timeout { .. })
            ),
        );
        let answer = answer?;
        let bad = |reason: String| FanoutServiceError::BadAnswer { node: home, reason };
        let (info, files) = decode_media(&answer, media_id, &[kind]).map_err(|error| bad(error.to_string()))?;
        let bytes = files[0];
        let blob = info.blob(kind);
        if hex(&Sha256::digest(bytes)) != blob.sha256 {
            return Err(bad(format!(
                "the {} of {media_id} does not match its declared length and SHA-256",
                kind.name()
            )));
        }
        if !bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            return Err(bad(format!("the {} of {media_id} is not a JPEG", kind.name())));
        }
        self.media.put(&info, kind, bytes);
        self.counters.media_fetched.fetch_add(1, Ordering::Relaxed);
        Ok((info, bytes.to_vec()))
    }

    /// Fetches the thumbs of posts that just arrived from `home` for `author`, in the
    /// background (a few at a time; coalesced with requests for the same photo), so
    /// feeds show them with sizes and blurhash, and the first view is a cache hit.
    fn prefetch(self: &Arc<Self>, home: NodeId, author: &str, media: Vec<String>) {
        let cached_from_home = self.lock().node.state().caches.get(author).is_some_and(|cache| cache.home == home);
        if !cached_from_home {
            return;
        }
        for media_id in media {
            if self.media.info(&media_id).is_some() || !is_sha256_hex(&media_id) {
                continue;
            }
            let running = &self.counters.prefetches_running;
            if running.fetch_add(1, Ordering::SeqCst) >= PREFETCHES_RUNNING_MAX {
                running.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let fanout = self.clone();
            self.runtime.spawn_blocking(move || {
                let key = format!("{media_id}.{}", BlobKind::Thumb.name());
                let (fetched, _) = fanout.media.fetches.run(key, || {
                    fanout.fetch_media(home, &media_id, BlobKind::Thumb).map_err(|error| error.to_string())
                });
                if let Err(reason) = fetched {
                    tracing::debug!(%home, media_id, reason, "could not prefetch a remote thumb");
                }
                fanout.counters.prefetches_running.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Fan-out's figures for `/metrics`, read at each scrape.
    pub fn metrics_collector(self: &Arc<Self>) -> FanoutMetrics {
        FanoutMetrics(Arc::downgrade(self))
    }

    fn encode_metrics(&self, encoder: &mut exposition::Encoder<'_>) -> std::fmt::Result {
        let stats = self.lock().node.stats().clone();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = [
            (
                "edgenode_fanout_messages_sent",
                "Fan-out messages sent to other nodes",
                load(&self.counters.messages_sent),
            ),
            (
                "edgenode_fanout_messages_failed",
                "Fan-out messages that failed (to be retried)",
                load(&self.counters.messages_failed),
            ),
            (
                "edgenode_fanout_messages_dropped",
                "Fan-out messages dropped (outbox full)",
                load(&self.counters.messages_dropped),
            ),
            ("edgenode_fanout_pushes_applied", "Pushed posts merged into feed caches", stats.pushes_applied),
            ("edgenode_fanout_pulls_sent", "Catch-up pulls sent", stats.pulls_sent),
            ("edgenode_fanout_pulls_refused_rate", "Pulls refused by the token bucket", stats.pulls_refused_rate),
            ("edgenode_fanout_snapshots_applied", "Full snapshots applied", stats.snapshots_applied),
            ("edgenode_fanout_media_fetched", "Remote photos fetched", load(&self.counters.media_fetched)),
            (
                "edgenode_fanout_media_coalesced",
                "Remote photo misses that waited for one in flight",
                load(&self.counters.media_coalesced),
            ),
            (
                "edgenode_fanout_media_cache_hits",
                "Remote photos answered from the cache",
                load(&self.counters.media_cache_hits),
            ),
        ];
        for (name, help, value) in counters {
            exposition::counter(encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// Fan-out's figures of `/metrics` (the registry holds this; it does not keep the
/// service alive).
pub struct FanoutMetrics(std::sync::Weak<Fanout>);

impl std::fmt::Debug for FanoutMetrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("FanoutMetrics")
    }
}

impl exposition::Collector for FanoutMetrics {
    fn encode(&self, mut encoder: exposition::Encoder<'_>) -> std::fmt::Result {
        match self.0.upgrade() {
            Some(fanout) => fanout.encode_metrics(&mut encoder),
            None => Ok(()),
        }
    }
}

/// Photos of the live posts among `entries`, at most `PREFETCH_PER_MESSAGE_MAX`.
fn photos_of<'a>(entries: impl IntoIterator<Item = &'a FeedEntry>) -> Vec<String> {
    let mut media: Vec<String> = entries
        .into_iter()
        .filter_map(|entry| entry.post.as_ref())
        .flat_map(|post| post.media.iter().cloned())
        .collect();
    media.truncate(PREFETCH_PER_MESSAGE_MAX);
    media
}

/// Sends queued messages, a few at a time; each outcome says whether its peer is up.
async fn send_loop(fanout: Arc<Fanout>, mut receiver: mpsc::Receiver<(NodeId, Message)>) {
    let slots = Arc::new(Semaphore::new(fanout.settings.sends_in_flight_max.max(1)));
    while let Some((to, message)) = receiver.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let fanout = fanout.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let kind = message.kind();
            let body = serde_json::to_vec(&Envelope { version: FANOUT_PROTOCOL_VERSION, message })
                .expect("messages serialize");
            let timeout = Duration::from_millis(fanout.settings.call_timeout_ms);
            let outcome = fanout.link.call(to, SERVICE_FANOUT, &body, timeout).await;
            let reachable = match &outcome {
                Ok(_) => {
                    fanout.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(error) => {
                    fanout.counters.messages_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %to, kind, %error, "a fan-out message was not delivered");
                    matches!(error, NeighbourError::Refused { .. } | NeighbourError::Malformed { .. })
                }
            };
            let _ = tokio::task::spawn_blocking(move || fanout.peer_seen(to, reachable)).await;
        });
    }
}

/// Runs the core's timers and the probes of relevant peers.
async fn drive(fanout: Arc<Fanout>) {
    let mut next_reconcile_at = 0;
    loop {
        // At start, then every pull interval: local authors' ledgers against the store.
        if os::now_ms() >= next_reconcile_at {
            let reconciling = fanout.clone();
            let _ = tokio::task::spawn_blocking(move || reconciling.reconcile_followed_authors()).await;
            next_reconcile_at = os::now_ms() + fanout.settings.pull_interval_ms.max(1_000);
        }
        let (wake_at, probes) = {
            let fanout = fanout.clone();
            let ticked = tokio::task::spawn_blocking(move || {
                let mut inner = fanout.lock();
                let now = os::now_ms();
                if inner.node.poll_timeout().is_some_and(|at| at <= now) {
                    inner.node.on_tick(now, random_u64());
                    let _ = fanout.persist_and_queue(&mut inner);
                }
                let relevant = Fanout::relevant_peers(&inner, fanout.node_id);
                let known: Vec<NodeId> = fanout.link.neighbours().iter().map(|known| known.node_id).collect();
                let mut probes = Vec::new();
                let mut next = inner.node.poll_timeout().unwrap_or(u64::MAX);
                for peer in relevant.into_iter().filter(|peer| known.contains(peer)) {
                    let due = inner.peers.get(&peer).map_or(0, |health| health.next_probe_at);
                    if due <= now {
                        probes.push(peer);
                        // Not probed again until this one is answered (or times out).
                        let interval = fanout.settings.probe_interval_ms.max(1);
                        let up = inner.peers.get(&peer).is_some_and(|health| health.up);
                        let wait = fanout.settings.call_timeout_ms + interval;
                        inner.peers.insert(peer, PeerHealth { up, next_probe_at: now + wait });
                    } else {
                        next = next.min(due);
                    }
                }
                (next, probes)
            })
            .await;
            match ticked {
                Ok(ticked) => ticked,
                Err(_) => return,
            }
        };
        for peer in probes {
            let fanout = fanout.clone();
            tokio::spawn(async move {
                let timeout = Duration::from_millis(fanout.settings.call_timeout_ms);
                let outcome = fanout.link.call(peer, SERVICE_FANOUT, &[], timeout).await;
                let reachable = matches!(outcome, Ok(_) | Err(NeighbourError::Refused { .. }));
                let _ = tokio::task::spawn_blocking(move || fanout.peer_seen(peer, reachable)).await;
            });
        }
        let now = os::now_ms();
        let sleep = Duration::from_millis(wake_at.saturating_sub(now)).min(Duration::from_millis(DRIVER_WAKE_MAX_MS));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = fanout.wake.notified() => {}
        }
    }
}

// ----- neighbour services -----

struct FanoutService(Arc<Fanout>);

impl NeighbourHandler for FanoutService {
    fn handle(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let fanout = &self.0;
        fanout.peer_seen(from, true);
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|error| format!("not a fan-out message: {error}"))?;
        if envelope.version != FANOUT_PROTOCOL_VERSION {
            return Err(Refusal(format!(
                "fan-out protocol {} is not spoken here (this node speaks {FANOUT_PROTOCOL_VERSION})",
                envelope.version
            )));
        }
        // A first follower of a local author: their ledger must hold their posts
        // before the follower's first pull.
        let first_follower = match &envelope.message {
            Message::Subscribe { author, active: true, .. } => {
                let inner = fanout.lock();
                let state = inner.node.state();
                (!state.subscribers.contains_key(author)).then(|| author.clone())
            }
            _ => None,
        };
        if let Some(author) = &first_follower {
            fanout.reconcile(author);
        }
        let (author, media) = match &envelope.message {
            Message::FeedPush { author, entry } => (Some(author.clone()), photos_of([entry])),
            Message::Snapshot { author, entries, .. } => (Some(author.clone()), photos_of(entries)),
            _ => (None, Vec::new()),
        };
        // A follow is judged against the author's blocks and approvals before the step.
        let sees = match &envelope.message {
            Message::Subscribe { author, follower, version, hears_audience, .. } => {
                fanout.judge(author, follower, *version, *hears_audience)
            }
            _ => Audience::Followers,
        };
        fanout
            .step(|node, now| node.on_message_judged(from, envelope.message, now, sees))
            .map_err(|error| format!("this node cannot save fan-out state: {error}"))?;
        if let Some(author) = author.filter(|_| !media.is_empty()) {
            fanout.prefetch(from, &author, media);
        }
        Ok(Vec::new())
    }
}

struct ProfileService(Arc<Fanout>);

impl NeighbourHandler for ProfileService {
    fn handle(&self, _from: NodeId, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        if body.is_empty() || body.len() > HANDLE_BYTES_MAX {
            return Err(Refusal("ask for a handle of 1 to 64 bytes".to_owned()));
        }
        let handle = std::str::from_utf8(body).map_err(|_| "the handle is not UTF-8".to_owned())?.to_lowercase();
        let fanout = &self.0;
        let user = fanout
            .store
            .user_by_handle(&handle)
            .map_err(|error| format!("this node cannot read its users: {error}"))?
            .ok_or_else(|| format!("no user {handle} here"))?;
        let remote = RemoteUser {
            home: user.home.unwrap_or(fanout.node_id),
            user_id: user.user_id,
            handle: user.handle,
            display_name: user.display_name,
            bio: user.bio,
            created_at: user.created_at,
            avatar: user.avatar,
        };
        Ok(serde_json::to_vec(&remote).expect("profiles serialize"))
    }
}

struct MediaService(Arc<Fanout>);

impl NeighbourHandler for MediaService {
    /// A photo's thumb or display for a node that holds a follower of a post carrying
    /// it (public posts for anyone who may call us).
    fn handle(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let request: MediaRequest = serde_json::from_slice(body).map_err(|error| format!("a bad request: {error}"))?;
        let media_id = request.media_id.to_ascii_lowercase();
        let not_here = || format!("no photo {media_id} that your node may see");
        if !is_sha256_hex(&media_id) {
            return Err(Refusal(not_here()));
        }
        let fanout = &self.0;
        let read = |error: StoreError| format!("this node cannot read its store: {error}");
        if request.variant == "avatar" {
            // Profiles are public: the avatar derivative of a photo that is some
            // user's avatar here, the bytes alone, made now if it was never asked for.
            if !fanout.store.is_avatar(&media_id).map_err(read)? {
                return Err(Refusal(format!("{media_id} is not an avatar on this node")));
            }
            if !fanout.store.blobs.avatar_path(&media_id).is_file() {
                if let Some(make) = fanout.avatar_maker.get() {
                    make(&media_id);
                }
            }
            let bytes = std::fs::read(fanout.store.blobs.avatar_path(&media_id))
                .map_err(|_| Refusal(format!("the avatar of {media_id} is not made on this node yet")))?;
            return Ok(bytes);
        }
        let kind = match BlobKind::from_name(&request.variant) {
            Some(kind @ (BlobKind::Thumb | BlobKind::Display)) => kind,
            _ => return Err(Refusal("only thumb, display and avatar are served to other nodes".to_owned())),
        };
        let mut posts = fanout.store.posts_with_media(&media_id).map_err(read)?;
        // A post an admin hid gives its photos to nobody on other nodes.
        let mut shown = Vec::with_capacity(posts.len());
        for post in posts.drain(..) {
            if !fanout.store.post_moderation(&post).map_err(read)?.is_some_and(|moderation| moderation.hidden) {
                shown.push(post);
            }
        }
        let posts = shown;
        let allowed = {
            let inner = fanout.lock();
            posts.iter().any(|post| match post.visibility {
                Visibility::Public => true,
                Visibility::Followers => inner.node.home_sees(&post.author_id, from) == Audience::Followers,
                Visibility::Private => false,
            })
        };
        if !allowed {
            return Err(Refusal(not_here()));
        }
        let info = fanout.store.media(&media_id).map_err(read)?.ok_or_else(not_here)?;
        let bytes = fanout.store.blobs.read(&media_id, kind).map_err(|_| not_here())?;
        Ok(encode_media(&info, &[(kind, &bytes)]))
    }
}

// ----- the remote photo cache -----

/// Photos of remote posts on disk: `<dir>/<media id>.json` (what the author's node
/// said of it) and `<dir>/<media id>.<variant>`; files are written to a temporary
/// name and renamed, and read times are kept as modification times so eviction
/// drops the least recently used first, past a file count or byte total.
struct RemoteMedia {
    dir: PathBuf,
    files_max: usize,
    bytes_max: u64,
    fetches: Coalescer<String, Result<(MediaInfo, Vec<u8>), String>>,
    avatar_fetches: Coalescer<String, Result<Option<Vec<u8>>, AvatarFetchError>>,
    /// One eviction pass at a time.
    evicting: Mutex<()>,
}

impl RemoteMedia {
    fn new(dir: PathBuf, settings: &FanoutSettings) -> RemoteMedia {
        if let Err(error) = crate::store::create_private_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "cannot create the remote photo cache");
        }
        RemoteMedia {
            dir,
            files_max: settings.remote_media_files_max.max(2),
            bytes_max: settings.remote_media_bytes_max,
            fetches: Coalescer::default(),
            avatar_fetches: Coalescer::default(),
            evicting: Mutex::new(()),
        }
    }

    fn info(&self, media_id: &str) -> Option<MediaInfo> {
        if !is_sha256_hex(media_id) {
            return None;
        }
        let text = std::fs::read(self.dir.join(format!("{media_id}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn get(&self, media_id: &str, kind: BlobKind) -> Option<(MediaInfo, Vec<u8>)> {
        let info = self.info(media_id)?;
        let path = self.dir.join(format!("{media_id}.{}", kind.name()));
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() as u64 != info.blob(kind).bytes {
            return None;
        }
        if let Ok(file) = std::fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(crate::os::now_system_time());
        }
        Some((info, bytes))
    }

    fn put(&self, info: &MediaInfo, kind: BlobKind, bytes: &[u8]) {
        let write = |name: String, contents: &[u8]| -> std::io::Result<()> {
            let path = self.dir.join(&name);
            let temporary = self.dir.join(format!("{name}.{:016x}.tmp", random_u64()));
            // Owner-only whatever the umask: a cached photo may be a private one.
            std::io::Write::write_all(&mut crate::store::create_private_file(&temporary)?, contents)?;
            std::fs::rename(&temporary, &path)
        };
        let head = serde_json::to_vec(info).expect("media info serializes");
        let written = write(format!("{}.json", info.media_id), &head)
            .and_then(|()| write(format!("{}.{}", info.media_id, kind.name()), bytes));
        if let Err(error) = written {
            tracing::warn!(%error, media_id = info.media_id, "cannot cache a remote photo");
        }
        self.evict();
    }

    /// A cached avatar derivative: `<dir>/<media id>.avatar`, the bytes alone.
    fn get_avatar(&self, media_id: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(format!("{media_id}.avatar"));
        let bytes = std::fs::read(&path).ok()?;
        if let Ok(file) = std::fs::File::options().write(true).open(&path) {
            let _ = file.set_modified(crate::os::now_system_time());
        }
        Some(bytes)
    }

    fn put_avatar(&self, media_id: &str, bytes: &[u8]) {
        let name = format!("{media_id}.avatar");
        let temporary = self.dir.join(format!("{name}.{:016x}.tmp", random_u64()));
        let written = crate::store::create_private_file(&temporary)
            .and_then(|mut file| std::io::Write::write_all(&mut file, bytes))
            .and_then(|()| std::fs::rename(&temporary, self.dir.join(&name)));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(%error, media_id, "cannot cache a remote avatar");
        }
        self.evict();
    }

    fn evict(&self) {
        let Ok(_one) = self.evicting.try_lock() else { return };
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let metadata = entry.metadata().ok()?;
                let modified = metadata.modified().ok()?;
                Some((modified, metadata.len(), entry.path()))
            })
            .collect();
        let mut bytes: u64 = files.iter().map(|(_, length, _)| length).sum();
        if files.len() <= self.files_max && bytes <= self.bytes_max {
            return;
        }
        files.sort();
        let mut count = files.len();
        for (_, length, path) in files {
            if count <= self.files_max && bytes <= self.bytes_max {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                count -= 1;
                bytes -= length;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1x1 JPEG's description whose thumb has `thumb_bytes` bytes.
    fn media_info(media_id: String, thumb_bytes: u64) -> MediaInfo {
        let blob = |bytes| crate::store::BlobInfo { width: 1, height: 1, bytes, sha256: String::new() };
        MediaInfo {
            media_id,
            mime: "image/jpeg".into(),
            width: 1,
            height: 1,
            blurhash: String::new(),
            original: blob(1),
            display: blob(1),
            thumb: blob(thumb_bytes),
            created_at: 0,
        }
    }

    #[test]
    fn photo_answers_use_the_media_encoding_and_are_checked_against_their_description() {
        let media_id = "a".repeat(64);
        let info = media_info(media_id.clone(), 3);
        let answer = encode_media(&info, &[(BlobKind::Thumb, b"abc")]);
        let (parsed, files) = decode_media(&answer, &media_id, &[BlobKind::Thumb]).unwrap();
        assert_eq!(parsed, info);
        assert_eq!(files, vec![&b"abc"[..]]);
        assert!(decode_media(&answer[..10], &media_id, &[BlobKind::Thumb]).is_err(), "short");
        assert!(decode_media(&answer, &"b".repeat(64), &[BlobKind::Thumb]).is_err(), "another item");
        let wrong_length = encode_media(&info, &[(BlobKind::Thumb, b"abcd")]);
        assert!(decode_media(&wrong_length, &media_id, &[BlobKind::Thumb]).is_err(), "not the declared length");
        let mut trailing = answer.clone();
        trailing.push(0);
        assert!(decode_media(&trailing, &media_id, &[BlobKind::Thumb]).is_err(), "bytes after the file");
    }

    #[test]
    fn cached_avatars_are_read_back_and_count_toward_the_cache_limits() {
        let dir = std::env::temp_dir().join(format!("edgenode-remote-avatars-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = FanoutSettings { remote_media_files_max: 2, ..FanoutSettings::default() };
        let cache = RemoteMedia::new(dir.clone(), &settings);
        let (first, second, third) = (format!("{:064x}", 1u8), format!("{:064x}", 2u8), format!("{:064x}", 3u8));
        assert_eq!(cache.get_avatar(&first), None, "nothing cached yet");
        cache.put_avatar(&first, b"\xff\xd8\xffone");
        assert_eq!(cache.get_avatar(&first).as_deref(), Some(&b"\xff\xd8\xffone"[..]));
        for media_id in [&second, &third] {
            std::thread::sleep(Duration::from_millis(20));
            cache.put_avatar(media_id, b"\xff\xd8\xff");
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "the file limit holds for avatars too");
        assert!(cache.get_avatar(&first).is_none(), "the oldest went");
        assert!(cache.get_avatar(&third).is_some(), "the newest stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_photo_cache_evicts_the_least_recently_used_past_its_limits() {
        let dir = std::env::temp_dir().join(format!("edgenode-remote-media-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = FanoutSettings { remote_media_files_max: 4, ..FanoutSettings::default() };
        let cache = RemoteMedia::new(dir.clone(), &settings);
        for index in 0..3u8 {
            let media_id = format!("{:064x}", index);
            let info = media_info(media_id.clone(), 2);
            cache.put(&info, BlobKind::Thumb, b"xy");
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = std::fs::read_dir(&dir).unwrap().count();
        assert!(left <= 4, "at most 4 files stay, found {left}");
        assert!(cache.get(&format!("{:064x}", 2u8), BlobKind::Thumb).is_some(), "the newest stays");
        assert!(cache.get(&format!("{:064x}", 0u8), BlobKind::Thumb).is_none(), "the oldest went");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
