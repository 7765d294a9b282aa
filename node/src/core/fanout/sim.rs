//! Deterministic simulator for fan-out: N `FanoutNode`s with users homed across them,
//! on a seeded network that loses, delays, reorders, duplicates and holds back
//! messages, partitions and heals, and crashes nodes (keeping only `FanoutState`, and
//! sometimes not even its feed caches), while users follow, unfollow, post with every
//! visibility, edit captions and visibility, and delete. After faults stop and the
//! world is quiet, a checker compares every follower's feed with the authors' current
//! posts, and every author node's answered pulls with its token bucket. Every run is a
//! function of its seed.
//!
//! `EDGENODE_FANOUT_SEED=<seed>` replays one seed; `EDGENODE_FANOUT_SEEDS=<n>` runs n.

use std::collections::BTreeMap;

use super::node::{FanoutConfig, FanoutNode, FanoutState, FanoutStats};
use super::wire::{FeedEntry, Message};
use crate::core::hlc::HybridClock;
use crate::core::model::{NodeId, Post, Version, Visibility};
use crate::core::sim::{add_fields, FaultPlan, Rng, SeedTotals, Simulator, World};

/// Steps after which a run is declared live-locked.
const STEPS_MAX: u64 = 200_000;
/// Users act and faults happen in this window.
const WORKLOAD_MS: u64 = 60_000;
/// Quiet time after the faults stop: acks, then a pull per cache (interval + jitter,
/// rate-limit retries, refills) and held-back messages arriving.
const QUIESCE_MS: u64 = 60_000;

/// Small limits so eviction, truncation refills, full-snapshot fallbacks, dropped
/// removals and rate limiting all happen in a run of a few dozen actions.
pub fn sim_config() -> FanoutConfig {
    FanoutConfig {
        feed_entries_per_author_max: 4,
        feed_entries_max: 10_000,
        feed_removals_per_author_max: 3,
        snapshot_entries_max: 6,
        ledger_entries_per_author_max: 1_000,
        ledger_removals_per_author_max: 4,
        subscribers_max: 10_000,
        subscriptions_max: 10_000,
        outbox_messages_max: 512,
        subscribe_retry_ms: 1_500,
        pull_interval_ms: 8_000,
        pull_jitter_ms: 1_500,
        pull_timeout_ms: 3_000,
        pulls_answered_burst: 3,
        pull_refill_interval_ms: 400,
    }
}

/// The faults and user actions of one seeded run. Messages are held back for
/// 5–30 s (a stuck buffer); a restart with data loss loses the node's feed caches.
const FAULT_PLAN: FaultPlan = FaultPlan {
    loss_per_mille_max: 200,
    duplication_per_mille_max: 50,
    held_back_per_mille_max: 20,
    delay_ms_max: 5..=300,
    held_back_ms: 5_000..=30_000,
    workload_events: 30..=90,
    workload_ms: WORKLOAD_MS,
    partitions_max: 3,
    partition_ms: 1_000..=25_000,
    crashes_max: 3,
    downtime_ms: 100..=20_000,
    restart_data_loss: 0.3,
};

struct SimNode {
    fanout: Option<FanoutNode>,
    /// What survives a crash, while the node is down.
    parked: Option<FanoutState>,
    /// The node's HLC (durable: the replication node's in the real system).
    clock: HybridClock,
    incarnation: u32,
    /// (incarnation, local time) of every snapshot sent: pulls answered.
    answered: Vec<(u32, u64)>,
}

/// The truth of one post: what its author's store holds now.
#[derive(Debug, Clone)]
struct PostTruth {
    author: usize,
    version: Version,
    post: Option<Post>,
}

struct Sim {
    world: World<Message>,
    ids: Vec<NodeId>,
    config: FanoutConfig,
    nodes: Vec<SimNode>,
    /// Home node of each user `u{index}`.
    homes: Vec<usize>,
    posts: BTreeMap<String, PostTruth>,
    /// (follower, author) → follows now.
    follows: BTreeMap<(usize, usize), bool>,
    report: RunReport,
    retired_stats: Vec<FanoutStats>,
}

fn user(index: usize) -> String {
    format!("u{index}")
}

impl Sim {
    fn new(seed: u64, node_count: usize, user_count: usize, config: FanoutConfig) -> Sim {
        let mut world = World::new(seed, node_count, STEPS_MAX, &FAULT_PLAN);
        let homes = (0..user_count).map(|_| world.rng.below(node_count as u64) as usize).collect();
        let mut sim = Sim {
            world,
            ids: (0..node_count).map(|index| NodeId(0xf000 + index as u64)).collect(),
            config,
            nodes: Vec::new(),
            homes,
            posts: BTreeMap::new(),
            follows: BTreeMap::new(),
            report: RunReport { nodes: node_count, users: user_count, ..RunReport::default() },
            retired_stats: Vec::new(),
        };
        for _ in 0..node_count {
            sim.nodes.push(SimNode {
                fanout: None,
                parked: Some(FanoutState::default()),
                clock: HybridClock::default(),
                incarnation: 0,
                answered: Vec::new(),
            });
        }
        for node in 0..node_count {
            let skew_ms = sim.world.rng.between(0, 10_000) as i64 - 5_000;
            sim.world.set_skew(node, skew_ms);
            sim.boot(node, false);
        }
        sim.reconnect();
        sim
    }

    fn up(&self, node: usize) -> bool {
        self.world.is_up(node)
    }

    fn crash(&mut self, node: usize) {
        let Some(fanout) = self.nodes[node].fanout.take() else { return };
        self.retired_stats.push(fanout.stats().clone());
        self.nodes[node].parked = Some(fanout.into_state());
        self.world.crashed(node);
        self.reconnect();
    }

    fn restart(&mut self, node: usize, lose_caches: bool) {
        if self.up(node) {
            return;
        }
        if lose_caches {
            self.report.caches_lost += 1;
        }
        self.boot(node, lose_caches);
        self.reconnect();
    }

    fn fanout(&mut self, node: usize) -> &mut FanoutNode {
        self.nodes[node].fanout.as_mut().expect("node is up")
    }

    /// `author` writes post `post_id` (`None`: deletes it) at their home.
    fn write_post(&mut self, author: usize, post_id: &str, post: Option<Post>) {
        let home = self.homes[author];
        let now = self.world.local_time(home);
        let version = Version { at: self.nodes[home].clock.tick(now), origin: self.ids[home] };
        self.fanout(home).local_post(now, &user(author), post_id, version, post.clone()).expect("valid post");
        self.posts.insert(post_id.to_string(), PostTruth { author, version, post });
        self.report.post_writes += 1;
        self.flush(home);
    }

    fn write_follow(&mut self, follower: usize, author: usize, active: bool) {
        let home = self.homes[follower];
        let now = self.world.local_time(home);
        let version = Version { at: self.nodes[home].clock.tick(now), origin: self.ids[home] };
        let author_home = self.ids[self.homes[author]];
        self.fanout(home)
            .local_follow(now, &user(follower), &user(author), author_home, version, active, None)
            .expect("ok");
        self.follows.insert((follower, author), active);
        self.report.follow_writes += 1;
        self.flush(home);
    }

    fn random_visibility(&mut self) -> Visibility {
        match self.world.rng.below(10) {
            0..=3 => Visibility::Public,
            4..=7 => Visibility::Followers,
            _ => Visibility::Private,
        }
    }

    fn random_action(&mut self) {
        let users = self.homes.len();
        let roll = self.world.rng.below(100);
        if roll < 35 {
            let author = self.world.rng.below(users as u64) as usize;
            if !self.up(self.homes[author]) {
                return;
            }
            let post_id = format!("p{}", self.posts.len());
            let post = Post {
                post_id: post_id.clone(),
                author_id: user(author),
                caption: format!("{post_id} first"),
                media: vec![],
                visibility: self.random_visibility(),
                tags: vec![],
                created_at: self.world.local_time(self.homes[author]),
            };
            self.write_post(author, &post_id, Some(post));
            return;
        }
        if roll < 65 {
            let live: Vec<(String, PostTruth)> = self
                .posts
                .iter()
                .filter(|(_, truth)| truth.post.is_some() && self.up(self.homes[truth.author]))
                .map(|(id, truth)| (id.clone(), truth.clone()))
                .collect();
            if live.is_empty() {
                return;
            }
            let (post_id, truth) = live[self.world.rng.below(live.len() as u64) as usize].clone();
            if roll < 50 {
                let mut post = truth.post.expect("live");
                post.caption = format!("{post_id} edit {}", self.report.post_writes);
                if self.world.rng.chance(0.6) {
                    post.visibility = self.random_visibility();
                }
                self.write_post(truth.author, &post_id, Some(post));
            } else {
                self.write_post(truth.author, &post_id, None);
            }
            return;
        }
        let follower = self.world.rng.below(users as u64) as usize;
        let author = self.world.rng.below(users as u64) as usize;
        if follower == author || !self.up(self.homes[follower]) {
            return;
        }
        let active = !self.follows.get(&(follower, author)).copied().unwrap_or(false);
        self.write_follow(follower, author, active);
    }

    /// The newest `K` posts of `author` that followers may see, as entries.
    fn expected_entries(&self, author: usize) -> Vec<(String, Version, Post)> {
        let mut visible: Vec<(String, Version, Post)> = self
            .posts
            .iter()
            .filter(|(_, truth)| truth.author == author)
            .filter_map(|(id, truth)| {
                let post = truth.post.clone().filter(|post| post.visibility != Visibility::Private)?;
                Some((id.clone(), truth.version, post))
            })
            .collect();
        visible.sort_by(|left, right| (right.2.created_at, &right.0).cmp(&(left.2.created_at, &left.0)));
        visible.truncate(self.config.feed_entries_per_author_max);
        visible
    }

    /// Every follower's feed holds exactly the newest `K` current `Public` and
    /// `Followers` posts of each author they follow and nothing else; nobody else
    /// sees `Followers` posts; caches exist only for followed authors.
    fn check_feeds(&self) -> Result<(), String> {
        for follower in 0..self.homes.len() {
            let home = self.homes[follower];
            let node = self.nodes[home].fanout.as_ref().expect("all up when checking");
            let mut feed: BTreeMap<String, Vec<FeedEntry>> = BTreeMap::new();
            for entry in node.feed_for(&user(follower), usize::MAX) {
                let post = entry.post.as_ref().ok_or("the feed showed a removal")?;
                feed.entry(post.author_id.clone()).or_default().push(entry);
            }
            for author in 0..self.homes.len() {
                let follows = self.follows.get(&(follower, author)).copied().unwrap_or(false);
                let mut actual: Vec<(String, Version, Post)> = feed
                    .remove(&user(author))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|entry| (entry.post_id, entry.version, entry.post.expect("checked")))
                    .collect();
                actual.sort_by(|left, right| (right.2.created_at, &right.0).cmp(&(left.2.created_at, &left.0)));
                let expected = if follows { self.expected_entries(author) } else { Vec::new() };
                if actual != expected {
                    let describe = |entries: &[(String, Version, Post)]| -> String {
                        let parts: Vec<String> = entries
                            .iter()
                            .map(|(id, version, post)| {
                                format!("{id}@{}:{:?}:{:?}", version.at.0, post.visibility, post.caption)
                            })
                            .collect();
                        parts.join(", ")
                    };
                    return Err(format!(
                        "feed of u{follower} (node {home}) for u{author} (node {}, followed: {follows}): \
                         holds [{}], expected [{}]; cache: {:?}",
                        self.homes[author],
                        describe(&actual),
                        describe(&expected),
                        node.state().caches.get(&user(author)),
                    ));
                }
            }
            if let Some(author) = feed.keys().next() {
                return Err(format!("feed of u{follower} shows {author}, who is not a user"));
            }
        }
        for (index, sim_node) in self.nodes.iter().enumerate() {
            let node = sim_node.fanout.as_ref().expect("up");
            for (key, subscription) in &node.state().subscriptions {
                if !subscription.acked {
                    return Err(format!("node {index}: follow {key:?} still unacknowledged after quiescing"));
                }
            }
            for (author, cache) in &node.state().caches {
                let author_index: usize = author[1..].parse().expect("u<index>");
                let followed_here = (0..self.homes.len())
                    .any(|user| self.homes[user] == index && self.follows.get(&(user, author_index)) == Some(&true));
                if !followed_here {
                    return Err(format!("node {index} caches {author}, whom no local user follows"));
                }
                if cache.live_count() > self.config.feed_entries_per_author_max {
                    return Err(format!("node {index} caches {} entries of {author}", cache.live_count()));
                }
                for viewer in (0..self.homes.len()).filter(|viewer| self.homes[*viewer] == index) {
                    let follows = self.follows.get(&(viewer, author_index)) == Some(&true);
                    for entry in node.posts_of(author, Some(&user(viewer)), usize::MAX) {
                        let visibility = entry.post.as_ref().expect("live").visibility;
                        if visibility == Visibility::Private || (visibility == Visibility::Followers && !follows) {
                            return Err(format!("node {index} shows u{viewer} {author}'s {visibility:?} post"));
                        }
                    }
                }
                for entry in node.posts_of(author, None, usize::MAX) {
                    if entry.post.as_ref().expect("live").visibility != Visibility::Public {
                        return Err(format!("node {index} shows an anonymous viewer a non-public post"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Each author node answered pulls within its token bucket: in any window of `L`
    /// ms of one incarnation, at most `burst + L / interval + 1` snapshots.
    fn check_rate_limit(&self) -> Result<(), String> {
        let burst = f64::from(self.config.pulls_answered_burst);
        let interval = self.config.pull_refill_interval_ms as f64;
        for (index, node) in self.nodes.iter().enumerate() {
            // (j - t_j/I) - (i - t_i/I) <= burst for every i <= j of one incarnation.
            let mut lowest: Option<(u32, f64)> = None;
            for (position, (incarnation, at)) in node.answered.iter().enumerate() {
                let score = position as f64 - *at as f64 / interval;
                match lowest {
                    Some((lowest_incarnation, lowest_score)) if lowest_incarnation == *incarnation => {
                        if score - lowest_score > burst + 1e-6 {
                            return Err(format!(
                                "node {index} answered pulls faster than its bucket allows (at local {at} ms)"
                            ));
                        }
                        lowest = Some((*incarnation, lowest_score.min(score)));
                    }
                    _ => lowest = Some((*incarnation, score)),
                }
            }
        }
        Ok(())
    }

    fn total_stats(&self) -> FanoutStats {
        let live = self.nodes.iter().filter_map(|node| node.fanout.as_ref()).map(FanoutNode::stats);
        let mut total = FanoutStats::default();
        for stats in self.retired_stats.iter().chain(live) {
            add_stats(&mut total, stats);
        }
        total
    }
}

impl Simulator for Sim {
    type Message = Message;

    fn world(&mut self) -> &mut World<Message> {
        &mut self.world
    }

    fn boot(&mut self, node: usize, lose_caches: bool) {
        let mut state = self.nodes[node].parked.take().expect("node is down");
        if lose_caches {
            state.caches.clear();
        }
        let now = self.world.local_time(node);
        let random = self.world.rng.next_u64();
        self.nodes[node].incarnation += 1;
        self.nodes[node].fanout = Some(FanoutNode::new(self.ids[node], self.config.clone(), state, now, random));
        self.world.booted(node);
        self.flush(node);
    }

    fn flush(&mut self, node: usize) {
        let local_now = self.world.local_time(node);
        let deadline = self.nodes[node].fanout.as_ref().and_then(FanoutNode::poll_timeout);
        self.world.set_deadline(node, deadline);
        while let Some((to, message)) = self.nodes[node].fanout.as_mut().and_then(FanoutNode::poll_transmit) {
            let to = self.ids.iter().position(|id| *id == to).expect("messages go to nodes of the world");
            assert_ne!(to, node, "a node never sends to itself");
            if matches!(message, Message::Snapshot { .. }) {
                let incarnation = self.nodes[node].incarnation;
                self.nodes[node].answered.push((incarnation, local_now));
            }
            self.world.send(node, to, message);
        }
    }

    fn handle_link_change(&mut self, node: usize, peer: usize, up: bool) {
        let now = self.world.local_time(node);
        let peer_id = self.ids[peer];
        let random = self.world.rng.next_u64();
        if let Some(fanout) = self.nodes[node].fanout.as_mut() {
            if up {
                fanout.on_peer_up(peer_id, now, random);
            } else {
                fanout.on_peer_down(peer_id, now);
            }
        }
    }

    fn handle_timer(&mut self, node: usize) {
        let now = self.world.local_time(node);
        let random = self.world.rng.next_u64();
        self.fanout(node).on_tick(now, random);
        self.flush(node);
        self.world.defer_overdue_deadline(node);
    }

    fn handle_delivery(&mut self, from: usize, to: usize, message: Message) -> Result<(), String> {
        let now = self.world.local_time(to);
        let from_id = self.ids[from];
        self.fanout(to).on_message(from_id, message, now);
        self.flush(to);
        Ok(())
    }

    fn handle_workload(&mut self) {
        self.random_action();
    }

    fn handle_crash(&mut self, node: usize) -> Result<(), String> {
        self.crash(node);
        Ok(())
    }

    fn handle_restart(&mut self, node: usize, lose_caches: bool) {
        self.restart(node, lose_caches);
    }
}

fn add_stats(total: &mut FanoutStats, stats: &FanoutStats) {
    add_fields!(total, stats;
        subscribes_sent, subscribes_applied, subscribes_refused, pushes_sent, pushes_applied, pushes_stale,
        pushes_unwanted, pulls_sent, pulls_full_sent, pulls_timed_out, snapshots_full_sent, snapshots_delta_sent,
        snapshots_applied, answers_stale, pulls_refused_rate, pulls_refused_not_subscribed, entries_evicted,
        removals_dropped, messages_dropped);
}

/// What one random run did, for the coverage summary.
#[derive(Debug, Default)]
struct RunReport {
    nodes: usize,
    users: usize,
    steps: u64,
    post_writes: u64,
    follow_writes: u64,
    messages_sent: u64,
    messages_delivered: u64,
    messages_lost: u64,
    crashes: u64,
    caches_lost: u64,
    stats: FanoutStats,
}

impl SeedTotals for RunReport {
    fn add(&mut self, run: RunReport) {
        add_fields!(self, run;
            nodes, users, steps, post_writes, follow_writes, messages_sent, messages_delivered, messages_lost, crashes,
            caches_lost);
        add_stats(&mut self.stats, &run.stats);
    }
}

/// The coverage line: what the summed runs did.
impl std::fmt::Display for RunReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stats = &self.stats;
        write!(
            formatter,
            "{} nodes, {} users, {} steps; {} post writes, {} follow writes; {} messages ({} delivered, \
             {} lost), {} crashes ({} lost their caches); pushes {} sent, {} applied, {} stale; pulls {} \
             ({} full), {} timed out; snapshots {} full, {} delta; refused {} rate-limited, {} not subscribed; \
             evicted {}, removals dropped {}",
            self.nodes,
            self.users,
            self.steps,
            self.post_writes,
            self.follow_writes,
            self.messages_sent,
            self.messages_delivered,
            self.messages_lost,
            self.crashes,
            self.caches_lost,
            stats.pushes_sent,
            stats.pushes_applied,
            stats.pushes_stale,
            stats.pulls_sent,
            stats.pulls_full_sent,
            stats.pulls_timed_out,
            stats.snapshots_full_sent,
            stats.snapshots_delta_sent,
            stats.pulls_refused_rate,
            stats.pulls_refused_not_subscribed,
            stats.entries_evicted,
            stats.removals_dropped,
        )
    }
}

/// One seeded run: random world, random workload, random faults, then the checks.
fn run_seed(seed: u64) -> Result<RunReport, String> {
    let mut rng = Rng::new(seed ^ 0x00fa_9007_5eed_0000);
    let node_count = rng.between(3, 6) as usize;
    let user_count = rng.between(4, 10) as usize;
    let mut sim = Sim::new(seed, node_count, user_count, sim_config());
    sim.world.schedule_random_faults(&mut rng, &FAULT_PLAN);
    sim.run_until(WORKLOAD_MS)?;
    sim.stop_faults();
    sim.run_until(WORKLOAD_MS + QUIESCE_MS)?;
    sim.check_feeds().and_then(|()| sim.check_rate_limit())?;
    let mut report = std::mem::take(&mut sim.report);
    report.steps = sim.world.steps();
    report.messages_sent = sim.world.messages_sent;
    report.messages_delivered = sim.world.messages_delivered;
    report.messages_lost = sim.world.messages_lost;
    report.crashes = sim.world.crashes;
    report.stats = sim.total_stats();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sim::{run_seeds, SeedCampaign};

    const SEED_CAMPAIGN: SeedCampaign = SeedCampaign {
        name: "fan-out sim",
        seed_variable: "EDGENODE_FANOUT_SEED",
        seed_count_variable: "EDGENODE_FANOUT_SEEDS",
        seed_count_default: 1000,
        test_filter: "core::fanout::sim",
    };

    #[test]
    fn simulated_fanout_converges_under_faults() {
        let runs = run_seeds(&SEED_CAMPAIGN, run_seed);
        let totals = runs.totals;
        let stats = &totals.stats;
        if runs.seed_count >= 100 {
            // The faults and paths the run claims to cover did happen.
            assert!(totals.crashes > 0 && totals.caches_lost > 0 && totals.messages_lost > 0);
            assert!(stats.pushes_applied > 0 && stats.pushes_stale > 0);
            assert!(stats.snapshots_full_sent > 0 && stats.snapshots_delta_sent > 0 && stats.pulls_timed_out > 0);
            assert!(stats.pulls_refused_rate > 0 && stats.entries_evicted > 0 && stats.removals_dropped > 0);
        }
    }

    #[test]
    fn a_returning_author_node_is_not_hammered_and_everyone_catches_up() {
        let mut sim = Sim::new(11, 8, 18, sim_config());
        // Four authors on node 0, two followers on each other node, all following all.
        sim.homes = (0..18).map(|user| if user < 4 { 0 } else { 1 + (user - 4) / 2 }).collect();
        for follower in 4..18 {
            for author in 0..4 {
                sim.write_follow(follower, author, true);
            }
        }
        sim.run_until(5_000).unwrap();
        sim.crash(0);
        sim.run_until(20_000).unwrap();
        let answered_before = sim.nodes[0].answered.len();
        sim.restart(0, false);
        for author in 0..4 {
            for index in 0..3 {
                let post_id = format!("p{author}{index}");
                let post = Post {
                    post_id: post_id.clone(),
                    author_id: user(author),
                    caption: post_id.clone(),
                    media: vec![],
                    visibility: if index == 0 { Visibility::Followers } else { Visibility::Public },
                    tags: vec![],
                    created_at: index,
                };
                sim.write_post(author, &post_id, Some(post));
            }
        }
        // 28 caches want node 0 at once; the bucket answers 3 plus one per 400 ms.
        sim.run_until(21_500).unwrap();
        let answered = sim.nodes[0].answered.len() - answered_before;
        assert!(answered <= 3 + 1_500 / 400 + 1, "{answered} pulls answered in 1.5 s");
        assert!(sim.nodes[0].fanout.as_ref().unwrap().stats().pulls_refused_rate > 0);
        sim.run_until(60_000).unwrap();
        sim.check_feeds().and_then(|()| sim.check_rate_limit()).unwrap();
    }

    #[test]
    fn a_seed_replays_identically() {
        let reports: Vec<String> = (0..2)
            .map(|_| {
                let report = run_seed(7).unwrap();
                format!("{} {} {} {:?}", report.steps, report.messages_sent, report.messages_lost, report.stats)
            })
            .collect();
        assert_eq!(reports[0], reports[1]);
    }
}
