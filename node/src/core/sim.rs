//! The seeded simulators' shared harness (TigerBeetle's VOPR, quinn-proto's test
//! endpoints): `replication/sim.rs` and `fanout/sim.rs` each drive their own state
//! machines, and take everything else from here.
//!
//! - `Rng`, the seeded generator behind every random choice, so a run is a function
//!   of its seed;
//! - `World`, the simulated network and clock: global time, per-node clock skew,
//!   node up/down, partitions, links coming up and going down, messages lost,
//!   duplicated, delayed and held back, and the queue of scheduled events;
//! - `FaultPlan`, the ranges a run draws its faults and workload from, and
//!   `World::schedule_random_faults`, which draws them;
//! - `Simulator`, what a simulator implements for its nodes, with the event loop
//!   (`run_until`) and the link, partition and heal plumbing as provided methods;
//! - `run_seeds`, which runs a simulator over many seeds, sums what the runs did into
//!   a coverage line, and on failure names the first failing seed with the command
//!   that replays it.
//!
//! Test-only (declared under `#[cfg(test)]`). `run_seeds` reads its seed range from
//! the environment, spreads seeds over `std::thread`s and times itself; no simulated
//! world sees any of that, so every run stays a pure function of its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// splitmix64: tiny, fast, and good enough to drive a simulation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// Uniform in `range` (inclusive).
    pub fn within(&mut self, range: &RangeInclusive<u64>) -> u64 {
        self.between(*range.start(), *range.end())
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= probability
    }
}

/// Wall time of a simulated world at its start (a plausible Unix time, in ms).
const WORLD_START_MS: u64 = 1_700_000_000_000;

/// Faults applied to messages while they are on.
#[derive(Debug, Clone, Copy)]
pub struct NetworkFaults {
    pub loss: f64,
    pub duplication: f64,
    pub delay_ms_max: u64,
    /// Chance a message is held back (a stuck buffer) for a time drawn from the
    /// `FaultPlan`'s `held_back_ms`.
    pub held_back: f64,
}

impl NetworkFaults {
    /// No loss, no duplication, no holding back, small delays: after the faults stop.
    pub const CALM: NetworkFaults = NetworkFaults { loss: 0.0, duplication: 0.0, delay_ms_max: 5, held_back: 0.0 };
}

/// The ranges one seeded run draws its network faults, workload, partitions and
/// crashes from (`World::schedule_random_faults`).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Loss, duplication and held-back chances are drawn in thousandths, up to these.
    pub loss_per_mille_max: u64,
    pub duplication_per_mille_max: u64,
    pub held_back_per_mille_max: u64,
    /// A run's bound on delivery delay is drawn from this range.
    pub delay_ms_max: RangeInclusive<u64>,
    /// How long a held-back message is held, drawn per message.
    pub held_back_ms: RangeInclusive<u64>,
    /// How many workload events (client writes, user actions) a run has.
    pub workload_events: RangeInclusive<u64>,
    /// Workload events, partitions and crashes all start in `0..workload_ms`.
    pub workload_ms: u64,
    /// Up to this many partitions, each healed after a time drawn from `partition_ms`.
    pub partitions_max: u64,
    pub partition_ms: RangeInclusive<u64>,
    /// Up to this many crashes, each restarted after a time drawn from `downtime_ms`.
    pub crashes_max: u64,
    pub downtime_ms: RangeInclusive<u64>,
    /// Chance a restart loses the part of a node's state the simulator chooses.
    pub restart_data_loss: f64,
}

/// Something scheduled to happen at a global time.
#[derive(Debug)]
pub enum WorldEvent<Message> {
    Deliver {
        from: usize,
        to: usize,
        message: Message,
    },
    /// One step of the workload: a client write, a user action.
    Workload,
    Crash(usize),
    /// `data_loss`: the node also loses the part of its state the simulator chooses
    /// (replication: its change log; fan-out: its feed caches).
    Restart {
        node: usize,
        data_loss: bool,
    },
    Partition(Vec<usize>),
    Heal(Vec<usize>),
}

/// What `World::next_step` found to do next.
#[derive(Debug)]
pub enum Step<Message> {
    Timer(usize),
    Event(WorldEvent<Message>),
    /// Nothing is due by `until`: the world is there.
    Reached,
}

/// The network and the clock of a simulated world of nodes `0..node_count`; the
/// nodes themselves belong to the simulator.
#[derive(Debug)]
pub struct World<Message> {
    /// Every random choice of the world: network fates, workload, skews.
    pub rng: Rng,
    /// Global time, ms since the world started.
    pub now: u64,
    pub faults: NetworkFaults,
    held_back_ms: RangeInclusive<u64>,
    up: Vec<bool>,
    skew_ms: Vec<i64>,
    /// The nodes' `poll_timeout`s in global time, refreshed on every flush.
    deadlines: Vec<Option<u64>>,
    events: BTreeMap<(u64, u64), WorldEvent<Message>>,
    event_seq: u64,
    /// Per unordered pair: partitions currently cutting it.
    cuts: BTreeMap<(usize, usize), u32>,
    /// Pairs whose nodes were last told the link is up.
    connected: BTreeSet<(usize, usize)>,
    steps: u64,
    steps_max: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_lost: u64,
    pub crashes: u64,
}

fn pair(left: usize, right: usize) -> (usize, usize) {
    (left.min(right), left.max(right))
}

impl<Message: Clone> World<Message> {
    /// A calm world of `node_count` nodes, all down until booted; a run of more
    /// than `steps_max` steps is declared live-locked.
    pub fn new(seed: u64, node_count: usize, steps_max: u64, plan: &FaultPlan) -> World<Message> {
        World {
            rng: Rng::new(seed),
            now: 0,
            faults: NetworkFaults::CALM,
            held_back_ms: plan.held_back_ms.clone(),
            up: vec![false; node_count],
            skew_ms: vec![0; node_count],
            deadlines: vec![None; node_count],
            events: BTreeMap::new(),
            event_seq: 0,
            cuts: BTreeMap::new(),
            connected: BTreeSet::new(),
            steps: 0,
            steps_max,
            messages_sent: 0,
            messages_delivered: 0,
            messages_lost: 0,
            crashes: 0,
        }
    }

    pub fn node_count(&self) -> usize {
        self.up.len()
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// `node`'s wall clock: global time, skewed.
    pub fn local_time(&self, node: usize) -> u64 {
        (WORLD_START_MS + self.now).saturating_add_signed(self.skew_ms[node])
    }

    pub fn set_skew(&mut self, node: usize, skew_ms: i64) {
        self.skew_ms[node] = skew_ms;
    }

    pub fn schedule(&mut self, at: u64, event: WorldEvent<Message>) {
        self.event_seq += 1;
        self.events.insert((at, self.event_seq), event);
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.up[node]
    }

    /// The simulator started `node`.
    pub fn booted(&mut self, node: usize) {
        self.up[node] = true;
    }

    /// The simulator crashed `node`.
    pub fn crashed(&mut self, node: usize) {
        self.up[node] = false;
        self.crashes += 1;
    }

    pub fn link_up(&self, left: usize, right: usize) -> bool {
        self.up[left] && self.up[right] && self.cuts.get(&pair(left, right)).copied().unwrap_or(0) == 0
    }

    /// Notes `node`'s `poll_timeout` (in its local time).
    pub fn set_deadline(&mut self, node: usize, local_deadline: Option<u64>) {
        let local_now = self.local_time(node);
        let now = self.now;
        self.deadlines[node] = local_deadline.map(|deadline| deadline.saturating_sub(local_now).saturating_add(now));
    }

    /// Moves a deadline that is not in the future 1 ms ahead, so that a node that
    /// keeps asking to run now cannot stall the world.
    pub fn defer_overdue_deadline(&mut self, node: usize) {
        if self.deadlines[node].is_some_and(|deadline| deadline <= self.now) {
            self.deadlines[node] = Some(self.now + 1);
        }
    }

    /// Puts a message on the wire, where the faults decide its fate: lost, or
    /// delivered once or twice, late or very late.
    pub fn send(&mut self, from: usize, to: usize, message: Message) {
        self.messages_sent += 1;
        if !self.link_up(from, to) || self.rng.chance(self.faults.loss) {
            self.messages_lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplication) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = self.now + 1 + self.rng.below(self.faults.delay_ms_max);
            if self.rng.chance(self.faults.held_back) {
                at += self.rng.within(&self.held_back_ms);
            }
            self.schedule(at, WorldEvent::Deliver { from, to, message: message.clone() });
        }
    }

    /// Cuts every link between `side` and the rest, until `heal(side)`.
    pub fn partition(&mut self, side: &[usize]) {
        for inside in side {
            for outside in (0..self.node_count()).filter(|node| !side.contains(node)) {
                *self.cuts.entry(pair(*inside, outside)).or_default() += 1;
            }
        }
    }

    pub fn heal(&mut self, side: &[usize]) {
        for inside in side {
            for outside in (0..self.node_count()).filter(|node| !side.contains(node)) {
                *self.cuts.get_mut(&pair(*inside, outside)).expect("healing a partition that was made") -= 1;
            }
        }
    }

    /// Links whose state changed since the nodes were last told, as
    /// `(left, right, up)`; the nodes are taken to be told now.
    pub fn link_changes(&mut self) -> Vec<(usize, usize, bool)> {
        let mut changes = Vec::new();
        for left in 0..self.node_count() {
            for right in left + 1..self.node_count() {
                let up = self.link_up(left, right);
                if up == self.connected.contains(&(left, right)) {
                    continue;
                }
                if up {
                    self.connected.insert((left, right));
                } else {
                    self.connected.remove(&(left, right));
                }
                changes.push((left, right, up));
            }
        }
        changes
    }

    /// Draws a run's network faults from `plan` and schedules its workload,
    /// partitions (each with its heal) and crashes (each with its restart).
    pub fn schedule_random_faults(&mut self, rng: &mut Rng, plan: &FaultPlan) {
        let node_count = self.node_count();
        self.faults = NetworkFaults {
            loss: rng.between(0, plan.loss_per_mille_max) as f64 / 1000.0,
            duplication: rng.between(0, plan.duplication_per_mille_max) as f64 / 1000.0,
            delay_ms_max: rng.within(&plan.delay_ms_max),
            held_back: rng.between(0, plan.held_back_per_mille_max) as f64 / 1000.0,
        };
        for _ in 0..rng.within(&plan.workload_events) {
            self.schedule(rng.below(plan.workload_ms), WorldEvent::Workload);
        }
        for _ in 0..rng.between(0, plan.partitions_max) {
            let at = rng.below(plan.workload_ms);
            let mut side: Vec<usize> = (0..node_count).filter(|_| rng.chance(0.5)).collect();
            if side.is_empty() || side.len() == node_count {
                side = vec![rng.below(node_count as u64) as usize];
            }
            self.schedule(at, WorldEvent::Partition(side.clone()));
            self.schedule(at + rng.within(&plan.partition_ms), WorldEvent::Heal(side));
        }
        for _ in 0..rng.between(0, plan.crashes_max) {
            let node = rng.below(node_count as u64) as usize;
            let at = rng.below(plan.workload_ms);
            self.schedule(at, WorldEvent::Crash(node));
            let data_loss = rng.chance(plan.restart_data_loss);
            self.schedule(at + rng.within(&plan.downtime_ms), WorldEvent::Restart { node, data_loss });
        }
    }

    /// Faults stop: what is scheduled besides messages in flight is dropped, the
    /// network calms and partitions heal. Nodes that are down stay down.
    pub fn stop_faults(&mut self) {
        self.events.retain(|_, event| matches!(event, WorldEvent::Deliver { .. }));
        self.faults = NetworkFaults::CALM;
        self.cuts.clear();
    }

    /// Advances to the next timer or event due by `until`: the earliest node
    /// deadline, unless an event is due no later. Errs when live-locked.
    pub fn next_step(&mut self, until: u64) -> Result<Step<Message>, String> {
        self.steps += 1;
        if self.steps > self.steps_max {
            return Err(format!("live-locked: {} steps by t={} ms", self.steps_max, self.now));
        }
        let next_event = self.events.keys().next().map(|(at, _)| *at);
        let mut next_timer: Option<(u64, usize)> = None;
        for (node, deadline) in self.deadlines.iter().enumerate() {
            let Some(deadline) = deadline.filter(|_| self.up[node]) else { continue };
            if next_timer.is_none_or(|(at, _)| deadline < at) {
                next_timer = Some((deadline, node));
            }
        }
        let timer_first = match (next_timer, next_event) {
            (Some((timer_at, _)), Some(event_at)) => timer_at < event_at,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if timer_first {
            let (at, node) = next_timer.expect("checked");
            if at > until {
                self.now = self.now.max(until);
                return Ok(Step::Reached);
            }
            // A deadline in the past runs now.
            self.now = self.now.max(at);
            return Ok(Step::Timer(node));
        }
        let Some(&key) = self.events.keys().next() else {
            self.now = until;
            return Ok(Step::Reached);
        };
        if key.0 > until {
            self.now = self.now.max(until);
            return Ok(Step::Reached);
        }
        self.now = key.0;
        Ok(Step::Event(self.events.remove(&key).expect("peeked")))
    }
}

/// A simulator: its nodes, driven by a `World`. It implements what touches its
/// nodes; the event loop and the link plumbing are provided.
pub trait Simulator {
    type Message: Clone;

    fn world(&mut self) -> &mut World<Self::Message>;

    /// Starts `node` from what survived its crash (`data_loss`: minus the part the
    /// simulator chooses), tells the world, and flushes it.
    fn boot(&mut self, node: usize, data_loss: bool);

    /// Puts `node`'s outgoing messages on the wire (`World::send`) and notes when
    /// it wants to wake (`World::set_deadline`).
    fn flush(&mut self, node: usize);

    /// Tells `node` that its link to `peer` came up or went down.
    fn handle_link_change(&mut self, node: usize, peer: usize, up: bool);

    /// `node`'s deadline came.
    fn handle_timer(&mut self, node: usize);

    /// A message arrived over a link that is up.
    fn handle_delivery(&mut self, from: usize, to: usize, message: Self::Message) -> Result<(), String>;

    /// A workload event is due: one random client write or user action.
    fn handle_workload(&mut self);

    /// A scheduled crash: checks what must hold mid-run, then crashes `node` if it
    /// is up (`World::crashed`).
    fn handle_crash(&mut self, node: usize) -> Result<(), String>;

    /// A scheduled restart: boots `node` if it is down.
    fn handle_restart(&mut self, node: usize, data_loss: bool);

    /// Tells nodes about every link that came up or went down.
    fn reconnect(&mut self) {
        for (left, right, up) in self.world().link_changes() {
            self.handle_link_change(left, right, up);
            self.handle_link_change(right, left, up);
            self.flush(left);
            self.flush(right);
        }
    }

    /// Cuts every link between `side` and the rest, until `heal(side)`.
    fn partition(&mut self, side: &[usize]) {
        self.world().partition(side);
        self.reconnect();
    }

    fn heal(&mut self, side: &[usize]) {
        self.world().heal(side);
        self.reconnect();
    }

    /// Faults stop: partitions heal, crashed nodes come back, messages in flight
    /// still arrive.
    fn stop_faults(&mut self) {
        self.world().stop_faults();
        for node in 0..self.world().node_count() {
            if !self.world().is_up(node) {
                self.boot(node, false);
            }
        }
        self.reconnect();
    }

    /// Runs the world until global time `until`.
    fn run_until(&mut self, until: u64) -> Result<(), String> {
        loop {
            match self.world().next_step(until)? {
                Step::Reached => return Ok(()),
                Step::Timer(node) => self.handle_timer(node),
                Step::Event(WorldEvent::Deliver { from, to, message }) => {
                    let world = self.world();
                    if !world.link_up(from, to) {
                        world.messages_lost += 1;
                        continue;
                    }
                    world.messages_delivered += 1;
                    self.handle_delivery(from, to, message)?;
                }
                Step::Event(WorldEvent::Workload) => self.handle_workload(),
                Step::Event(WorldEvent::Crash(node)) => self.handle_crash(node)?,
                Step::Event(WorldEvent::Restart { node, data_loss }) => self.handle_restart(node, data_loss),
                Step::Event(WorldEvent::Partition(side)) => self.partition(&side),
                Step::Event(WorldEvent::Heal(side)) => self.heal(&side),
            }
        }
    }

    fn run_for(&mut self, duration_ms: u64) -> Result<(), String> {
        let until = self.world().now + duration_ms;
        self.run_until(until)
    }
}

/// Adds each listed field of `$run` to the same field of `$total`: how a simulator
/// sums its per-run reports and its nodes' stats, without a line per field to keep
/// in step with the struct.
macro_rules! add_fields {
    ($total:expr, $run:expr; $($field:ident),+ $(,)?) => {
        $($total.$field += $run.$field;)+
    };
}
pub(crate) use add_fields;

/// One simulator's seed test: which seeds it runs and how to replay one of them.
#[derive(Debug, Clone, Copy)]
pub struct SeedCampaign {
    /// Starts the coverage line, e.g. `replication sim`.
    pub name: &'static str,
    /// When set to a seed, only that seed runs (e.g. `EDGENODE_SIM_SEED`).
    pub seed_variable: &'static str,
    /// When set to n, seeds 1..=n run (e.g. `EDGENODE_SIM_SEEDS`).
    pub seed_count_variable: &'static str,
    /// How many seeds run when neither variable is set.
    pub seed_count_default: u64,
    /// The `cargo test -p edgenode --lib` filter that reaches the simulator, for the
    /// replay line.
    pub test_filter: &'static str,
}

/// A simulator's report of one run; `run_seeds` sums them and prints the sum.
pub trait SeedTotals: Default + Display + Send {
    /// Adds one run's report to the totals.
    fn add(&mut self, run: Self);
}

/// What `run_seeds` ran: how many seeds, and their reports summed.
#[derive(Debug)]
pub struct SeedRuns<Totals> {
    pub seed_count: usize,
    pub totals: Totals,
}

/// Never more threads than this, however many cores the machine has.
const THREADS_MAX: usize = 8;

/// Runs `run_seed` for every seed of `campaign`, spread over threads, and prints
/// `<name>: <n> seeds in <s> s; <totals>`. Panics when any seed failed, with the
/// lowest failing seed, its reason and the command that replays it.
pub fn run_seeds<Totals: SeedTotals>(
    campaign: &SeedCampaign,
    run_seed: impl Fn(u64) -> Result<Totals, String> + Sync,
) -> SeedRuns<Totals> {
    let seeds: Vec<u64> = match env_u64(campaign.seed_variable) {
        Some(seed) => vec![seed],
        None => (1..=env_u64(campaign.seed_count_variable).unwrap_or(campaign.seed_count_default)).collect(),
    };
    let started = Instant::now();
    let next_index = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(Totals::default());
    let threads = std::thread::available_parallelism().map_or(2, |count| count.get()).min(THREADS_MAX);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next_index.fetch_add(1, Ordering::Relaxed)) {
                    match run_seed(seed) {
                        Ok(run) => totals.lock().unwrap().add(run),
                        Err(reason) => failures.lock().unwrap().push((seed, reason)),
                    }
                }
            });
        }
    });
    let totals = totals.into_inner().unwrap();
    eprintln!("{}: {} seeds in {:.1} s; {totals}", campaign.name, seeds.len(), started.elapsed().as_secs_f64());
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    if let Some((seed, reason)) = failures.first() {
        panic!(
            "{} of {} seeds failed; first: seed {seed}: {reason}\n\
             reproduce: {}={seed} cargo test -p edgenode --lib {}",
            failures.len(),
            seeds.len(),
            campaign.seed_variable,
            campaign.test_filter,
        );
    }
    SeedRuns { seed_count: seeds.len(), totals }
}

/// A whole number from the environment, `None` when unset; panics on anything else.
fn env_u64(variable: &str) -> Option<u64> {
    let text = std::env::var(variable).ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| panic!("{variable}={text:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct SeedsSeen(u64);

    impl SeedTotals for SeedsSeen {
        fn add(&mut self, run: SeedsSeen) {
            self.0 += run.0;
        }
    }

    impl Display for SeedsSeen {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(formatter, "{} seeds seen", self.0)
        }
    }

    /// Variables nobody sets, so the default seed count applies.
    const CAMPAIGN: SeedCampaign = SeedCampaign {
        name: "runner test",
        seed_variable: "EDGENODE_RUNNER_TEST_SEED",
        seed_count_variable: "EDGENODE_RUNNER_TEST_SEEDS",
        seed_count_default: 20,
        test_filter: "core::sim",
    };

    #[test]
    fn every_seed_runs_once_and_the_totals_add_up() {
        let runs = run_seeds(&CAMPAIGN, |_| Ok(SeedsSeen(1)));
        assert_eq!((runs.seed_count, runs.totals.0), (20, 20));
    }

    #[test]
    fn a_failure_names_the_lowest_failing_seed_and_how_to_replay_it() {
        let panic = std::panic::catch_unwind(|| {
            run_seeds(
                &CAMPAIGN,
                |seed| if seed % 7 == 0 { Err(format!("seed {seed} is bad")) } else { Ok(SeedsSeen(1)) },
            )
        })
        .expect_err("seeds 7 and 14 fail");
        let message = panic.downcast_ref::<String>().expect("a formatted panic");
        assert!(message.starts_with("2 of 20 seeds failed; first: seed 7: seed 7 is bad\n"), "{message}");
        assert!(message.ends_with("reproduce: EDGENODE_RUNNER_TEST_SEED=7 cargo test -p edgenode --lib core::sim"));
    }
}
