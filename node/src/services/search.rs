//! Fractal search: searches wider than this node, over the neighbour link
//! (`link::neighbours`). Scope rules and aggregator choice are `core::region`;
//! entries, hashes and digests `core::search`; the aggregated index
//! `store::search_index`.
//!
//! - `scope=node`: this node's store (the API's own visibility rules).
//! - `scope=neighbourhood`: this node plus each sibling's public `node` answer, asked
//!   at once; siblings that do not answer are listed in `unreachable`.
//! - `scope=<prefix>`: an aggregator whose region covers the prefix answers from its
//!   index (origins under the prefix) plus its own public data; any other node
//!   forwards to the tightest reachable aggregator covering it, and answers 503
//!   `no_aggregator` when none answers.
//!
//! Who is where: each node serves `info` (`{v, node_id, region, roles}`); a directory
//! task asks every sibling and neighbour for it (unknown or unreachable ones every
//! `Duration::from_millis(INFO_RETRY_MS)`, the others every `Duration::from_millis(INFO_REFRESH_MS)`), so regions and roles are configured
//! once, on their own node. An aggregator aggregates the prefix equal to its region.
//!
//! Feeding (`search-feed`): a node with a region sends the public entries of its home
//! users (public posts and profiles; never followers-only or private data) to the
//! tightest reachable aggregator covering its region; an aggregator sends its own
//! and everything it received, by origin, to the next wider one. One feeder task per
//! node, woken by local writes (debounced) and every `Duration::from_millis(RESYNC_INTERVAL_MS)`:
//! - after its first contact, and every `Duration::from_millis(RESYNC_INTERVAL_MS)`, it sends each origin's
//!   digest (`digests`); for every origin whose digest differs the aggregator holds
//!   the wrong set, and the feeder sends it whole (`replace`, in pages under one
//!   generation; the last page drops what no page carried). That is the catch-up of
//!   an aggregator that was down or lost its data, bounded by the origins' sizes.
//! - between resyncs, its own origin goes as changes against what it last sent
//!   (`changes`: upserts and deletes, so a deleted post or one no longer public
//!   leaves the index within a round), and a received origin whose digest moved is
//!   sent whole.
//! - a failed call forgets what was sent (the next contact starts with digests) and
//!   tries the next aggregator; rounds are retried every `Duration::from_millis(RETRY_AFTER_FAILURE_MS)`.
//!
//! An aggregator accepts entries only for origins its region covers, and entries of
//! other origins only from a node that says it aggregates. Origins no feeder
//! confirmed for `Duration::from_millis(ORIGIN_STALE_AFTER_MS)` are dropped. Bodies stay under the link's
//! 1 MiB (`PAGE_BYTES_MAX`), entries under `core::search` limits, origins and
//! entries per origin under `store::search_index` limits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Config;
use crate::core::model::NodeId;
use crate::core::region::{aggregators_for, feed_targets, Known, Region, Scope};
use crate::core::search::{changes, merge_posts, merge_users, Digest, Entry, EntryKey, Origin, PublicPost, PublicUser};
use crate::core::text;
use crate::link::neighbours::{NeighbourHandler, NeighbourLink, NeighbourServices, Refusal};
use crate::locking::lock;
use crate::store::search_index::{public_post, Hit, SearchIndex, ENTRIES_PER_ORIGIN_MAX};
use crate::store::{Store, StoreError};

pub const SERVICE_INFO: &str = "info";
pub const SERVICE_FEED: &str = "search-feed";
pub const SERVICE_SEARCH: &str = "search";
/// Version of the messages of all three services.
const WIRE_VERSION: u8 = 1;
/// The role that makes a node an aggregator for its region.
pub const ROLE_AGGREGATOR: &str = "aggregator";

const INFO_TIMEOUT_MS: u64 = 3000;
const SEARCH_TIMEOUT_MS: u64 = 5000;
const UNREACHABLE_SEARCH_TIMEOUT_MS: u64 = 1000;
const FEED_TIMEOUT_MS: u64 = 10_000;
/// How often known neighbours are asked again who they are.
const INFO_REFRESH_MS: u64 = 30_000;
/// How often unknown or unreachable neighbours are asked.
const INFO_RETRY_MS: u64 = 2000;
/// Writes within this are fed in one round.
const FEED_DEBOUNCE_MS: u64 = 200;
/// Full digest comparison with the aggregator.
const RESYNC_INTERVAL_MS: u64 = 60_000;
const RETRY_AFTER_FAILURE_MS: u64 = 3000;
/// An origin no feeder confirmed for this long leaves the index.
const ORIGIN_STALE_AFTER_MS: u64 = (24 * 3600) * 1000;
/// Largest feed body (the link allows 1 MiB; JSON framing stays well under it).
const PAGE_BYTES_MAX: usize = 512 * 1024;
/// Most results of each kind in an answer (the API's `limit` is at most 100).
const RESULTS_MAX: usize = 100;
/// Longest query accepted from a neighbour, in characters (the API's limit).
const QUERY_CHARS_MAX: usize = 200;
/// Most origins in one `digests` message.
const DIGESTS_PER_MESSAGE_MAX: usize = 4_096;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no aggregator for {prefix} is reachable (tried: {tried})")]
    NoAggregator { prefix: String, tried: String },
    #[error("the search index failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

// ----- wire -----

#[derive(Debug, Serialize, Deserialize)]
struct InfoAnswer {
    v: u8,
    node_id: NodeId,
    region: Option<String>,
    roles: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum FeedRequest {
    Changes { v: u8, origin: Origin, upserts: Vec<Entry>, deletes: Vec<EntryKey> },
    Replace { v: u8, origin: Origin, generation: u64, last: bool, entries: Vec<Entry> },
    Digests { v: u8, origins: Vec<(Origin, Digest)> },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FeedAnswer {
    v: u8,
    #[serde(default)]
    put: u64,
    #[serde(default)]
    deleted: u64,
    #[serde(default)]
    skipped: u64,
    /// Origins whose digest differs from the aggregator's (`digests` only).
    #[serde(default)]
    differ: Vec<NodeId>,
}

impl FeedAnswer {
    fn applied(applied: &crate::store::search_index::Applied) -> FeedAnswer {
        FeedAnswer {
            v: WIRE_VERSION,
            put: applied.put,
            deleted: applied.deleted,
            skipped: applied.skipped,
            differ: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SearchRequest {
    v: u8,
    q: String,
    /// `node` or a region prefix.
    scope: String,
    limit: usize,
}

// ----- the service -----

#[derive(Debug, Clone)]
struct DirectoryEntry {
    known: Option<Known>,
    reachable: bool,
    asked_at_ms: u64,
}

/// What the feeder sent to its current target.
#[derive(Debug, Default)]
struct FeedState {
    target: Option<NodeId>,
    /// This node's own entries as last sent (hashes), once the target holds them.
    own_sent: Option<BTreeMap<EntryKey, u64>>,
    /// Received origins' digests as last sent.
    forwarded_sent: BTreeMap<NodeId, (Origin, Digest)>,
    last_resync_ms: Option<u64>,
}

/// What search needs of the node's link, given to it directly (it holds no other
/// service): calls to siblings' and neighbours' services, the registry its own
/// services answer on, and who the siblings are now (pairing changes them).
pub struct SearchLinks {
    pub link: Arc<NeighbourLink>,
    pub services: Arc<NeighbourServices>,
    pub sibling_ids: Box<dyn Fn() -> Vec<NodeId> + Send + Sync>,
}

pub struct SearchService {
    store: Arc<Store>,
    node_id: NodeId,
    region: Option<Region>,
    roles: Vec<String>,
    /// The aggregated index, on aggregators only.
    index: Option<SearchIndex>,
    link: Arc<NeighbourLink>,
    sibling_ids: Box<dyn Fn() -> Vec<NodeId> + Send + Sync>,
    directory: Mutex<BTreeMap<NodeId, DirectoryEntry>>,
    wake_feeder: tokio::sync::Notify,
    last_generation: Mutex<u64>,
}

impl std::fmt::Debug for SearchService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SearchService")
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("aggregator", &self.index.is_some())
            .finish_non_exhaustive()
    }
}

impl SearchService {
    /// Registers `info`, `search-feed` and `search` on the neighbour services, and
    /// starts the directory and feeder tasks. Call within the runtime.
    pub fn start(
        config: &Config,
        store: Arc<Store>,
        links: impl Into<SearchLinks>,
    ) -> Result<Arc<SearchService>, SearchError> {
        let SearchLinks { link, services, sibling_ids } = links.into();
        let region = match config.region.trim() {
            "" => None,
            text => Some(Region::parse(text).map_err(|error| SearchError::Config(error.to_string()))?),
        };
        let aggregator = config.roles.iter().any(|role| role == ROLE_AGGREGATOR);
        let index = match (aggregator, &region) {
            (true, Some(_)) => Some(SearchIndex::open(store.clone())?),
            (true, None) => return Err(SearchError::Config("the aggregator role needs a `region`".to_owned())),
            (false, _) => None,
        };
        let service = Arc::new(SearchService {
            node_id: store.node_id(),
            store: store.clone(),
            region,
            roles: config.roles.clone(),
            index,
            link,
            sibling_ids,
            directory: Mutex::new(BTreeMap::new()),
            wake_feeder: tokio::sync::Notify::new(),
            last_generation: Mutex::new(0),
        });
        services.register(SERVICE_INFO, Arc::new(InfoHandler(Arc::downgrade(&service))));
        services.register(SERVICE_FEED, Arc::new(FeedHandler(Arc::downgrade(&service))));
        services.register(SERVICE_SEARCH, Arc::new(SearchHandler(Arc::downgrade(&service))));
        let weak = Arc::downgrade(&service);
        store.on_local_write(Box::new(move || {
            if let Some(service) = weak.upgrade() {
                service.wake_feeder.notify_one();
            }
        }));
        tokio::spawn(directory_loop(Arc::downgrade(&service)));
        tokio::spawn(feed_loop(Arc::downgrade(&service)));
        Ok(service)
    }

    fn is_aggregator(&self) -> bool {
        self.index.is_some()
    }

    /// The aggregated index if this node aggregates a region covering `prefix`.
    fn index_covering(&self, prefix: &Region) -> Option<&SearchIndex> {
        let region = self.region.as_ref()?;
        self.index.as_ref().filter(|_| region.covers(prefix))
    }

    fn own_origin(&self) -> Option<Origin> {
        Some(Origin { id: self.node_id, region: self.region.as_ref()?.to_string() })
    }

    // ----- directory -----

    fn known(&self) -> Vec<Known> {
        lock(&self.directory).values().filter_map(|entry| entry.known.clone()).collect()
    }

    fn reachable(&self, node: NodeId) -> bool {
        lock(&self.directory).get(&node).is_some_and(|entry| entry.reachable)
    }

    /// Reachable nodes first, in the given order otherwise.
    fn reachable_first(&self, nodes: Vec<NodeId>) -> Vec<NodeId> {
        let (mut reachable, unreachable): (Vec<NodeId>, Vec<NodeId>) =
            nodes.into_iter().partition(|node| self.reachable(*node));
        reachable.extend(unreachable);
        reachable
    }

    fn mark_unreachable(&self, node: NodeId) {
        if let Some(entry) = lock(&self.directory).get_mut(&node) {
            entry.reachable = false;
        }
    }

    /// Asks `nodes` who they are, at once; returns whether a new aggregator appeared.
    async fn ask_info(&self, nodes: Vec<NodeId>) -> bool {
        let mut asking = tokio::task::JoinSet::new();
        for node in nodes {
            let link = self.link.clone();
            asking.spawn(async move {
                (node, link.call(node, SERVICE_INFO, b"{}", Duration::from_millis(INFO_TIMEOUT_MS)).await)
            });
        }
        let mut new_aggregator = false;
        while let Some(joined) = asking.join_next().await {
            let Ok((node, answer)) = joined else { continue };
            let now = crate::os::now_ms();
            let parsed = answer.map_err(|error| error.to_string()).and_then(|bytes| {
                serde_json::from_slice::<InfoAnswer>(&bytes).map_err(|error| format!("bad info answer: {error}"))
            });
            let mut directory = lock(&self.directory);
            let entry =
                directory.entry(node).or_insert(DirectoryEntry { known: None, reachable: false, asked_at_ms: now });
            entry.asked_at_ms = now;
            match parsed {
                Ok(info) if info.node_id == node => {
                    let known = Known {
                        node_id: node,
                        region: info.region.as_deref().and_then(|text| Region::parse(text).ok()),
                        aggregator: info.roles.iter().any(|role| role == ROLE_AGGREGATOR),
                    };
                    let was_aggregator = entry.known.as_ref().is_some_and(|known| known.aggregator);
                    new_aggregator |= known.aggregator && (!was_aggregator || !entry.reachable);
                    entry.known = Some(known);
                    entry.reachable = true;
                }
                Ok(info) => {
                    tracing::warn!(%node, claimed = %info.node_id, "a neighbour's info names another node");
                    entry.reachable = false;
                }
                Err(reason) => {
                    tracing::debug!(%node, %reason, "neighbour info not available");
                    entry.reachable = false;
                }
            }
        }
        new_aggregator
    }

    /// Neighbours due to be asked who they are.
    fn due_for_info(&self, now_ms: u64) -> Vec<NodeId> {
        let directory = lock(&self.directory);
        self.link
            .neighbours()
            .into_iter()
            .map(|neighbour| neighbour.node_id)
            .filter(|node| *node != self.node_id)
            .filter(|node| match directory.get(node) {
                None => true,
                Some(entry) => {
                    let every = if entry.known.is_some() && entry.reachable {
                        Duration::from_millis(INFO_REFRESH_MS)
                    } else {
                        Duration::from_millis(INFO_RETRY_MS)
                    };
                    now_ms.saturating_sub(entry.asked_at_ms) >= every.as_millis() as u64
                }
            })
            .collect()
    }

    // ----- searching -----

    /// Answers a search over `prefix` (blocking; call from a blocking thread).
    pub fn search_region(&self, query: &str, prefix: &Region, limit: usize) -> Result<Value, SearchError> {
        if self.index_covering(prefix).is_some() {
            return Ok(self.answer_region(query, prefix, limit)?);
        }
        let runtime = tokio::runtime::Handle::current();
        // Neighbours never heard from are asked now (bounded by Duration::from_millis(INFO_TIMEOUT_MS)).
        let unknown: Vec<NodeId> = {
            let directory = lock(&self.directory);
            self.link
                .neighbours()
                .into_iter()
                .map(|neighbour| neighbour.node_id)
                .filter(|node| directory.get(node).is_none_or(|entry| entry.known.is_none()))
                .collect()
        };
        if !unknown.is_empty() {
            runtime.block_on(self.ask_info(unknown));
        }
        let candidates: Vec<NodeId> =
            aggregators_for(prefix, &self.known()).into_iter().filter(|node| *node != self.node_id).collect();
        let candidates = self.reachable_first(candidates);
        let request = serde_json::to_vec(&SearchRequest {
            v: WIRE_VERSION,
            q: query.to_owned(),
            scope: prefix.to_string(),
            limit,
        })
        .expect("requests serialize");
        let mut tried = Vec::new();
        for node in candidates {
            // One the directory could not reach lately gets a short try, not a long wait.
            let timeout = if self.reachable(node) {
                Duration::from_millis(SEARCH_TIMEOUT_MS)
            } else {
                Duration::from_millis(UNREACHABLE_SEARCH_TIMEOUT_MS)
            };
            let answer = runtime.block_on(self.link.call(node, SERVICE_SEARCH, &request, timeout));
            match answer.map_err(|error| error.to_string()).and_then(|bytes| remote_answer(&bytes, limit)) {
                Ok(answer) => return Ok(answer),
                Err(reason) => {
                    tracing::info!(%node, %reason, scope = %prefix, "an aggregator did not answer a search");
                    self.mark_unreachable(node);
                    tried.push(format!("{node}: {reason}"));
                }
            }
        }
        let tried = if tried.is_empty() {
            format!("none: no sibling or neighbour says it aggregates a region covering {prefix}")
        } else {
            tried.join("; ")
        };
        Err(SearchError::NoAggregator { prefix: prefix.to_string(), tried })
    }

    /// Each sibling's public `node` answer, asked at once: (answers, unreachable ids).
    pub fn search_siblings(&self, query: &str, limit: usize) -> (Vec<Value>, Vec<String>) {
        let sibling_ids = (self.sibling_ids)();
        let request = serde_json::to_vec(&SearchRequest {
            v: WIRE_VERSION,
            q: query.to_owned(),
            scope: "node".to_owned(),
            limit,
        })
        .expect("requests serialize");
        let runtime = tokio::runtime::Handle::current();
        runtime.block_on(async {
            let mut asking = tokio::task::JoinSet::new();
            for node in sibling_ids {
                let link = self.link.clone();
                let request = request.clone();
                asking.spawn(async move {
                    (node, link.call(node, SERVICE_SEARCH, &request, Duration::from_millis(SEARCH_TIMEOUT_MS)).await)
                });
            }
            let (mut answers, mut unreachable) = (Vec::new(), Vec::new());
            while let Some(joined) = asking.join_next().await {
                let Ok((node, answer)) = joined else { continue };
                match answer.map_err(|error| error.to_string()).and_then(|bytes| remote_answer(&bytes, limit)) {
                    Ok(answer) => answers.push(answer),
                    Err(reason) => {
                        tracing::info!(%node, %reason, "a sibling did not answer a search");
                        unreachable.push(node.to_string());
                    }
                }
            }
            unreachable.sort();
            (answers, unreachable)
        })
    }

    /// This node's public data as a `node` answer, items tagged with this node.
    fn answer_node(&self, query: &str, limit: usize) -> Result<(Vec<Value>, Vec<Value>), StoreError> {
        let node = self.node_json();
        let terms = text::query_terms(query);
        let mut posts = Vec::new();
        for post in self.store.search_posts(&terms, limit)? {
            let handle = self.store.user(&post.author_id)?.map(|user| user.handle).unwrap_or_default();
            posts.push(post_item(&public_post(&post, &handle), &node));
        }
        let prefix = text::handle_prefix(query);
        let users = if prefix.is_empty() {
            Vec::new()
        } else {
            self.store
                .users_with_handle_prefix(&prefix, limit)?
                .into_iter()
                .map(|user| {
                    let user = PublicUser {
                        user_id: user.user_id,
                        handle: user.handle,
                        display_name: user.display_name,
                        bio: user.bio,
                    };
                    user_item(&user, &node)
                })
                .collect()
        };
        Ok((users, posts))
    }

    /// An aggregator's answer over `prefix`: its index, plus its own public data when
    /// its own region is under the prefix.
    fn answer_region(&self, query: &str, prefix: &Region, limit: usize) -> Result<Value, StoreError> {
        let index = self.index_covering(prefix).expect("checked by the caller");
        let terms = text::query_terms(query);
        let handle_prefix = text::handle_prefix(query);
        let (mut users, mut posts) = match &self.region {
            Some(own) if prefix.covers(own) => self.answer_node(query, limit)?,
            _ => (Vec::new(), Vec::new()),
        };
        for Hit { origin, item } in index.search_posts(&terms, Some(prefix), limit)? {
            posts.push(post_item(&item, &origin_json(&origin)));
        }
        if !handle_prefix.is_empty() {
            for Hit { origin, item } in index.search_users(&handle_prefix, Some(prefix), limit)? {
                users.push(user_item(&item, &origin_json(&origin)));
            }
        }
        Ok(json!({
            "scope": prefix.to_string(),
            "answered_by": self.node_id.to_string(),
            "users": merge_users(users, limit),
            "posts": merge_posts(posts, limit),
        }))
    }

    fn node_json(&self) -> Value {
        json!({"id": self.node_id.to_string(), "region": self.region.as_ref().map(Region::to_string)})
    }

    /// `{id, region}` of this node, for items the API answers from its own store.
    pub fn this_node(&self) -> Value {
        self.node_json()
    }

    // ----- feeding -----

    fn next_generation(&self) -> u64 {
        let mut last = lock(&self.last_generation);
        *last = (*last + 1).max(crate::os::now_ms());
        *last
    }

    async fn feed_call(&self, target: NodeId, request: &FeedRequest) -> Result<FeedAnswer, String> {
        let body = serde_json::to_vec(request).expect("feed requests serialize");
        let answer = self
            .link
            .call(target, SERVICE_FEED, &body, Duration::from_millis(FEED_TIMEOUT_MS))
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&answer).map_err(|error| format!("bad feed answer: {error}"))
    }

    /// Sends `entries` as `origin`'s whole set, in pages under one generation.
    async fn replace(&self, target: NodeId, origin: &Origin, entries: Vec<Entry>) -> Result<(), String> {
        let generation = self.next_generation();
        let pages = pages(entries);
        let count = pages.len();
        for (number, entries) in pages.into_iter().enumerate() {
            let last = number + 1 == count;
            let request = FeedRequest::Replace { v: WIRE_VERSION, origin: origin.clone(), generation, last, entries };
            let answer = self.feed_call(target, &request).await?;
            if answer.skipped > 0 {
                tracing::warn!(%target, origin = %origin.id, skipped = answer.skipped, "the aggregator is full for this origin");
            }
        }
        Ok(())
    }

    /// One feeding round to `target`; `Err` when a call failed.
    async fn feed_round(&self, target: NodeId, state: &mut FeedState) -> Result<(), String> {
        let own_origin = self.own_origin().expect("only nodes with a region feed");
        let own: Vec<Entry> = {
            let store = self.store.clone();
            let node_id = self.node_id;
            tokio::task::spawn_blocking(move || store.public_entries(node_id, ENTRIES_PER_ORIGIN_MAX as usize))
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| error.to_string())?
        };
        let own_current: BTreeMap<EntryKey, (u64, Entry)> =
            own.into_iter().map(|entry| (entry.key(), (entry.hash(&own_origin.region), entry))).collect();
        let own_hashes = || own_current.iter().map(|(key, (hash, _))| (key.clone(), *hash)).collect();
        // Received origins held now, and those sent before that our index dropped.
        let (forwarded, gone): (Vec<(Origin, Digest)>, Vec<Origin>) = match &self.index {
            Some(index) => {
                let index = index.clone();
                let mut origins = tokio::task::spawn_blocking(move || index.origins())
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())?;
                origins.retain(|(origin, _)| origin.id != target && origin.id != self.node_id);
                let gone = state
                    .forwarded_sent
                    .values()
                    .filter(|(sent, _)| !origins.iter().any(|(origin, _)| origin.id == sent.id))
                    .map(|(sent, _)| sent.clone())
                    .collect();
                (origins, gone)
            }
            None => (Vec::new(), Vec::new()),
        };
        let now = crate::os::now_ms();
        let resync_due = state.last_resync_ms.is_none_or(|at| now.saturating_sub(at) >= RESYNC_INTERVAL_MS);
        let mut send_whole: BTreeSet<NodeId> = BTreeSet::new();
        if resync_due {
            let own_digest = Digest::of(own_current.values().map(|(hash, _)| hash));
            let mut digests = vec![(own_origin.clone(), own_digest)];
            digests.extend(forwarded.iter().cloned());
            let mut differ = BTreeSet::new();
            for chunk in digests.chunks(DIGESTS_PER_MESSAGE_MAX) {
                let request = FeedRequest::Digests { v: WIRE_VERSION, origins: chunk.to_vec() };
                differ.extend(self.feed_call(target, &request).await?.differ);
            }
            if differ.contains(&self.node_id) {
                state.own_sent = None;
            } else {
                state.own_sent = Some(own_hashes());
            }
            for (origin, digest) in &forwarded {
                if differ.contains(&origin.id) {
                    send_whole.insert(origin.id);
                } else {
                    state.forwarded_sent.insert(origin.id, (origin.clone(), *digest));
                }
            }
            state.last_resync_ms = Some(now);
        }
        // Own origin: changes against what was sent, or the whole set.
        match &state.own_sent {
            Some(sent) => {
                let (upserts, deletes) = changes(sent, &own_current);
                if !upserts.is_empty() || !deletes.is_empty() {
                    for (upserts, deletes) in change_pages(upserts, deletes) {
                        let request =
                            FeedRequest::Changes { v: WIRE_VERSION, origin: own_origin.clone(), upserts, deletes };
                        self.feed_call(target, &request).await?;
                    }
                }
            }
            None => {
                let entries = own_current.values().map(|(_, entry)| entry.clone()).collect();
                self.replace(target, &own_origin, entries).await?;
            }
        }
        state.own_sent = Some(own_hashes());
        // Received origins: whole, when their digest moved since last sent.
        for (origin, digest) in &forwarded {
            let sent = state.forwarded_sent.get(&origin.id);
            if !send_whole.contains(&origin.id) && sent == Some(&(origin.clone(), *digest)) {
                continue;
            }
            let entries = match &self.index {
                Some(index) => {
                    let index = index.clone();
                    let node = origin.id;
                    tokio::task::spawn_blocking(move || index.entries_of(node))
                        .await
                        .map_err(|error| error.to_string())?
                        .map_err(|error| error.to_string())?
                }
                None => Vec::new(),
            };
            self.replace(target, origin, entries).await?;
            state.forwarded_sent.insert(origin.id, (origin.clone(), *digest));
        }
        // Origins our index dropped (purged as stale): an empty set, once.
        for origin in gone {
            self.replace(target, &origin, Vec::new()).await?;
            state.forwarded_sent.remove(&origin.id);
        }
        Ok(())
    }

    // ----- serving -----

    fn handle_feed(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, String> {
        let (Some(index), Some(own_region)) = (&self.index, &self.region) else {
            return Err(format!("node {} is not an aggregator", self.node_id));
        };
        let request: FeedRequest =
            serde_json::from_slice(body).map_err(|error| format!("bad feed request: {error}"))?;
        let check_origin = |origin: &Origin| -> Result<(), String> {
            let region = Region::parse(&origin.region).map_err(|error| error.to_string())?;
            if !own_region.covers(&region) {
                return Err(format!("origin {} at {region} is not under {own_region}", origin.id));
            }
            if origin.id == self.node_id {
                return Err("entries of this node itself are not taken from others".to_owned());
            }
            let from_aggregator = lock(&self.directory)
                .get(&from)
                .and_then(|entry| entry.known.as_ref())
                .is_some_and(|known| known.aggregator);
            if origin.id != from && !from_aggregator {
                return Err(format!(
                    "node {from} sent entries of node {} but is not known as an aggregator (yet)",
                    origin.id
                ));
            }
            Ok(())
        };
        let now = crate::os::now_ms();
        let answer = match request {
            FeedRequest::Changes { v: _, origin, upserts, deletes } => {
                check_origin(&origin)?;
                upserts.iter().try_for_each(Entry::check).map_err(|error| error.to_string())?;
                let applied = index.apply_changes(&origin, &upserts, &deletes, now).map_err(|e| e.to_string())?;
                FeedAnswer::applied(&applied)
            }
            FeedRequest::Replace { v: _, origin, generation, last, entries } => {
                check_origin(&origin)?;
                entries.iter().try_for_each(Entry::check).map_err(|error| error.to_string())?;
                let applied =
                    index.replace_page(&origin, generation, &entries, last, now).map_err(|e| e.to_string())?;
                FeedAnswer::applied(&applied)
            }
            FeedRequest::Digests { v: _, origins } => {
                if origins.len() > DIGESTS_PER_MESSAGE_MAX {
                    return Err(format!("at most {DIGESTS_PER_MESSAGE_MAX} digests per message"));
                }
                let held: BTreeMap<NodeId, (Origin, Digest)> = index
                    .origins()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(origin, digest)| (origin.id, (origin, digest)))
                    .collect();
                let mut differ = Vec::new();
                for (origin, digest) in origins {
                    check_origin(&origin)?;
                    // Same entries under the same region: current.
                    if held.get(&origin.id) == Some(&(origin.clone(), digest)) {
                        index.confirm(origin.id, now).map_err(|e| e.to_string())?;
                    } else {
                        differ.push(origin.id);
                    }
                }
                FeedAnswer { v: WIRE_VERSION, differ, ..FeedAnswer::default() }
            }
        };
        if answer.put > 0 || answer.deleted > 0 {
            // What arrived goes on up to a wider aggregator.
            self.wake_feeder.notify_one();
        }
        Ok(serde_json::to_vec(&answer).expect("answers serialize"))
    }

    fn handle_search(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let request: SearchRequest =
            serde_json::from_slice(body).map_err(|error| format!("bad search request: {error}"))?;
        if request.q.trim().is_empty() || request.q.chars().count() > QUERY_CHARS_MAX {
            return Err(format!("a query is 1 to {QUERY_CHARS_MAX} characters"));
        }
        let limit = request.limit.clamp(1, RESULTS_MAX);
        let answer = match Scope::parse(Some(&request.scope)).map_err(|error| error.to_string())? {
            Scope::Node => {
                let (users, posts) = self.answer_node(&request.q, limit).map_err(|e| e.to_string())?;
                json!({"scope": "node", "answered_by": self.node_id.to_string(), "users": users, "posts": posts})
            }
            Scope::Neighbourhood => return Err("ask each node of the neighbourhood with scope node".to_owned()),
            Scope::Region(prefix) => {
                if self.index_covering(&prefix).is_none() {
                    return Err(format!("node {} does not aggregate a region covering {prefix}", self.node_id));
                }
                self.answer_region(&request.q, &prefix, limit).map_err(|e| e.to_string())?
            }
        };
        Ok(serde_json::to_vec(&answer).expect("answers serialize"))
    }

    fn info(&self) -> Vec<u8> {
        let info = InfoAnswer {
            v: WIRE_VERSION,
            node_id: self.node_id,
            region: self.region.as_ref().map(Region::to_string),
            roles: self.roles.clone(),
        };
        serde_json::to_vec(&info).expect("info serializes")
    }
}

// ----- tasks -----

async fn directory_loop(service: std::sync::Weak<SearchService>) {
    loop {
        let Some(service) = service.upgrade() else { return };
        let due = service.due_for_info(crate::os::now_ms());
        if !due.is_empty() && service.ask_info(due).await {
            service.wake_feeder.notify_one();
        }
        drop(service);
        tokio::time::sleep(Duration::from_millis(INFO_RETRY_MS)).await;
    }
}

async fn feed_loop(service: std::sync::Weak<SearchService>) {
    let mut state = FeedState::default();
    let mut wait = Duration::from_millis(INFO_RETRY_MS);
    loop {
        {
            let Some(service) = service.upgrade() else { return };
            let _ = tokio::time::timeout(wait, service.wake_feeder.notified()).await;
        }
        tokio::time::sleep(Duration::from_millis(FEED_DEBOUNCE_MS)).await;
        let Some(service) = service.upgrade() else { return };
        if let Some(index) = &service.index {
            let before = crate::os::now_ms().saturating_sub(ORIGIN_STALE_AFTER_MS);
            let index = index.clone();
            if let Ok(Ok(purged @ 1..)) = tokio::task::spawn_blocking(move || index.purge_unconfirmed(before)).await {
                tracing::info!(purged, "dropped search origins nobody confirmed for a day");
            }
        }
        let Some(own_region) = service.region.clone() else {
            wait = Duration::from_millis(RESYNC_INTERVAL_MS);
            continue;
        };
        let targets = feed_targets(&own_region, service.is_aggregator(), service.node_id, &service.known());
        let targets = service.reachable_first(targets);
        wait = Duration::from_millis(RESYNC_INTERVAL_MS);
        for target in targets {
            if state.target != Some(target) {
                state = FeedState { target: Some(target), ..FeedState::default() };
            }
            match service.feed_round(target, &mut state).await {
                Ok(()) => {
                    wait = Duration::from_millis(RESYNC_INTERVAL_MS);
                    break;
                }
                Err(reason) => {
                    tracing::info!(%target, %reason, "feeding the aggregator failed; trying the next");
                    service.mark_unreachable(target);
                    state = FeedState::default();
                    wait = Duration::from_millis(RETRY_AFTER_FAILURE_MS);
                }
            }
        }
    }
}

// ----- handlers -----

struct InfoHandler(std::sync::Weak<SearchService>);
struct FeedHandler(std::sync::Weak<SearchService>);
struct SearchHandler(std::sync::Weak<SearchService>);

fn stopping() -> String {
    "the node is shutting down".to_owned()
}

impl NeighbourHandler for InfoHandler {
    fn handle(&self, _from: NodeId, _body: &[u8]) -> Result<Vec<u8>, Refusal> {
        Ok(self.0.upgrade().ok_or_else(stopping)?.info())
    }
}

impl NeighbourHandler for FeedHandler {
    fn handle(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        Ok(self.0.upgrade().ok_or_else(stopping)?.handle_feed(from, body)?)
    }
}

impl NeighbourHandler for SearchHandler {
    fn handle(&self, _from: NodeId, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        Ok(self.0.upgrade().ok_or_else(stopping)?.handle_search(body)?)
    }
}

// ----- answers -----

fn origin_json(origin: &Origin) -> Value {
    json!({"id": origin.id.to_string(), "region": origin.region})
}

fn post_item(post: &PublicPost, node: &Value) -> Value {
    let media: Vec<Value> = post.media.iter().map(|id| json!({"id": id})).collect();
    json!({
        "id": post.id,
        "author": {"user_id": post.author_id, "handle": post.author_handle},
        "caption": post.caption,
        "media": media,
        "visibility": "public",
        "tags": post.tags,
        "created_at": post.created_at,
        "node": node,
    })
}

fn user_item(user: &PublicUser, node: &Value) -> Value {
    json!({
        "user_id": user.user_id,
        "handle": user.handle,
        "display_name": user.display_name,
        "bio": user.bio,
        "node": node,
    })
}

/// A neighbour's answer, checked for shape and cut to `limit`.
fn remote_answer(bytes: &[u8], limit: usize) -> Result<Value, String> {
    let mut answer: Value = serde_json::from_slice(bytes).map_err(|error| format!("bad search answer: {error}"))?;
    for key in ["users", "posts"] {
        let items = answer[key].as_array_mut().ok_or_else(|| format!("a search answer without `{key}`"))?;
        items.truncate(limit);
    }
    if !answer["answered_by"].is_string() {
        return Err("a search answer without `answered_by`".to_owned());
    }
    Ok(answer)
}

/// Entries in pages whose JSON stays under `PAGE_BYTES_MAX` (always one page, maybe
/// empty, so an empty set is sent too).
fn pages(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut pages = vec![Vec::new()];
    let mut bytes = 0;
    for entry in entries {
        let size = serde_json::to_vec(&entry).map(|json| json.len()).unwrap_or(0) + 1;
        if bytes + size > PAGE_BYTES_MAX && !pages.last().is_some_and(Vec::is_empty) {
            pages.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        pages.last_mut().expect("one page at least").push(entry);
    }
    pages
}

/// Changes in pages under `PAGE_BYTES_MAX`: deletes first, then upserts.
fn change_pages(upserts: Vec<Entry>, deletes: Vec<EntryKey>) -> Vec<(Vec<Entry>, Vec<EntryKey>)> {
    let mut out = Vec::new();
    for chunk in deletes.chunks(4_096) {
        out.push((Vec::new(), chunk.to_vec()));
    }
    for page in pages(upserts) {
        if !page.is_empty() {
            out.push((page, Vec::new()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::search::PublicPost;

    fn post(id: &str, caption_bytes: usize) -> Entry {
        Entry::Post(PublicPost {
            id: id.to_owned(),
            author_id: "u".into(),
            author_handle: "ada".into(),
            caption: "x".repeat(caption_bytes),
            tags: Vec::new(),
            media: Vec::new(),
            created_at: 0,
        })
    }

    #[test]
    fn pages_stay_under_the_body_limit_and_an_empty_set_is_one_page() {
        assert_eq!(pages(Vec::new()), vec![Vec::<Entry>::new()]);
        let entries: Vec<Entry> = (0..600).map(|n| post(&format!("p{n}"), 2_000)).collect();
        let paged = pages(entries);
        assert!(paged.len() >= 3, "{}", paged.len());
        assert_eq!(paged.iter().map(Vec::len).sum::<usize>(), 600);
        for page in &paged {
            assert!(serde_json::to_vec(page).unwrap().len() <= PAGE_BYTES_MAX + 1);
        }
    }
}
