//! Admission gate for conversions: bounds both the number of jobs running at once and the
//! decoded-pixel bytes they hold, so a small board never runs out of memory.
//!
//! Waiters are served strictly in arrival order (a ticket queue). Without that, a stream of
//! small photos could starve a large one forever, because the large one only fits when the
//! budget is nearly empty.
//!
//! Small jobs (a tiny image converts in milliseconds) have a lane of their own beside that
//! queue: one more slot, so a small photo never waits seconds behind a large one's
//! conversion. They take a slot of the main lane instead only while nobody waits there,
//! so they never delay a large job either.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Jobs reserving at most this go by the express lane. Every job reserves about 3 MiB of
/// fixed slack (encoders, colour transform), so this admits images up to about 0.1 MP.
/// The lane's one slot may hold this on top of the main budget.
const EXPRESS_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// What the gate is holding right now; cheap to read for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    pub jobs_running: usize,
    pub jobs_waiting: usize,
    pub bytes_reserved: u64,
}

/// Tickets of one queue: handed out on arrival, served in order.
#[derive(Debug, Default)]
struct Queue {
    /// Next ticket to hand out to an arriving job.
    next: u64,
    /// Ticket of the job at the head of the queue; only it may be admitted.
    serving: u64,
}

impl Queue {
    fn join(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    fn len(&self) -> u64 {
        self.next - self.serving
    }
}

#[derive(Debug, Default)]
struct State {
    /// Jobs in the main lane's slots and the bytes they reserved.
    jobs_running: usize,
    bytes_reserved: u64,
    main: Queue,
    /// Bytes reserved by the job in the express slot; `None` when it is free.
    express_running: Option<u64>,
    express: Queue,
}

#[derive(Debug)]
pub struct Gate {
    jobs_max: usize,
    bytes_max: u64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Main,
    Express,
}

/// Held while a job runs; returns its slot and bytes when dropped, even on unwind.
#[derive(Debug)]
pub struct Permit<'gate> {
    gate: &'gate Gate,
    lane: Lane,
    bytes: u64,
}

impl Gate {
    /// `jobs_max` of 0 is treated as 1: a gate that admits nothing would hang every caller.
    pub fn new(jobs_max: usize, bytes_max: u64) -> Self {
        Gate { jobs_max: jobs_max.max(1), bytes_max, state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    /// Blocks until a slot is free and `bytes` fit in the budget. A job larger than the
    /// whole budget is admitted once nothing else is running in the main lane, and then
    /// runs alone there.
    pub fn acquire(&self, bytes: u64) -> Permit<'_> {
        let mut state = self.lock();
        let lane = if bytes <= EXPRESS_BYTES_MAX {
            let ticket = state.express.join();
            let lane = loop {
                if ticket == state.express.serving {
                    if state.main.len() == 0 && self.fits(&state, bytes) {
                        break Lane::Main;
                    }
                    if state.express_running.is_none() {
                        break Lane::Express;
                    }
                }
                state = self.wait(state);
            };
            state.express.serving += 1;
            lane
        } else {
            let ticket = state.main.join();
            while !(ticket == state.main.serving && self.fits(&state, bytes)) {
                state = self.wait(state);
            }
            state.main.serving += 1;
            Lane::Main
        };
        match lane {
            Lane::Main => {
                state.jobs_running += 1;
                state.bytes_reserved = state.bytes_reserved.saturating_add(bytes);
            }
            Lane::Express => state.express_running = Some(bytes),
        }
        drop(state);
        // The next in line may fit too (e.g. two small jobs); let it check.
        self.changed.notify_all();
        Permit { gate: self, lane, bytes }
    }

    pub fn stats(&self) -> GateStats {
        let state = self.lock();
        GateStats {
            jobs_running: state.jobs_running + usize::from(state.express_running.is_some()),
            jobs_waiting: usize::try_from(state.main.len() + state.express.len()).unwrap_or(usize::MAX),
            bytes_reserved: state.bytes_reserved.saturating_add(state.express_running.unwrap_or(0)),
        }
    }

    /// Whether `bytes` fit in the main lane now.
    fn fits(&self, state: &State, bytes: u64) -> bool {
        if state.jobs_running == 0 {
            return true;
        }
        state.jobs_running < self.jobs_max && state.bytes_reserved.saturating_add(bytes) <= self.bytes_max
    }

    fn wait<'state>(&self, state: MutexGuard<'state, State>) -> MutexGuard<'state, State> {
        self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Poisoning cannot leave the counters inconsistent (every update is a single step under
    /// the lock, and nothing in it panics), so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::locking::lock(&self.state)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        match self.lane {
            Lane::Main => {
                state.jobs_running -= 1;
                state.bytes_reserved = state.bytes_reserved.saturating_sub(self.bytes);
            }
            Lane::Express => state.express_running = None,
        }
        drop(state);
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Runs `jobs` (bytes each) on their own threads through one gate and returns the
    /// largest number of jobs and of bytes seen inside the gate at once.
    fn run_jobs(gate: Arc<Gate>, jobs: &[u64]) -> (usize, u64) {
        let inside_jobs = Arc::new(AtomicUsize::new(0));
        let inside_bytes = Arc::new(AtomicU64::new(0));
        let peak_jobs = Arc::new(AtomicUsize::new(0));
        let peak_bytes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = jobs
            .iter()
            .map(|&bytes| {
                let gate = Arc::clone(&gate);
                let (inside_jobs, inside_bytes) = (Arc::clone(&inside_jobs), Arc::clone(&inside_bytes));
                let (peak_jobs, peak_bytes) = (Arc::clone(&peak_jobs), Arc::clone(&peak_bytes));
                std::thread::spawn(move || {
                    let _permit = gate.acquire(bytes);
                    let now_jobs = inside_jobs.fetch_add(1, Ordering::SeqCst) + 1;
                    let now_bytes = inside_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
                    peak_jobs.fetch_max(now_jobs, Ordering::SeqCst);
                    peak_bytes.fetch_max(now_bytes, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(15));
                    inside_bytes.fetch_sub(bytes, Ordering::SeqCst);
                    inside_jobs.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("job thread panicked");
        }
        assert_eq!(gate.stats(), GateStats::default(), "everything was returned");
        (peak_jobs.load(Ordering::SeqCst), peak_bytes.load(Ordering::SeqCst))
    }

    const MIB: u64 = 1024 * 1024;
    /// A job too large for the express lane.
    const LARGE: u64 = EXPRESS_BYTES_MAX + MIB;

    #[test]
    fn limits_concurrent_jobs() {
        let gate = Arc::new(Gate::new(2, u64::MAX));
        let (peak_jobs, _) = run_jobs(gate, &[LARGE; 8]);
        assert_eq!(peak_jobs, 2);
    }

    #[test]
    fn limits_bytes_in_flight() {
        let gate = Arc::new(Gate::new(8, 100 * MIB));
        let (peak_jobs, peak_bytes) = run_jobs(gate, &[40 * MIB; 8]);
        assert_eq!(peak_jobs, 2, "only two 40 MiB jobs fit in 100 MiB");
        assert_eq!(peak_bytes, 80 * MIB);
    }

    #[test]
    fn oversized_job_runs_alone() {
        let gate = Arc::new(Gate::new(4, 100 * MIB));
        let (peak_jobs, peak_bytes) = run_jobs(gate, &[500 * MIB; 3]);
        assert_eq!(peak_jobs, 1);
        assert_eq!(peak_bytes, 500 * MIB);
    }

    #[test]
    fn small_jobs_take_one_slot_more_than_the_main_lane() {
        let gate = Arc::new(Gate::new(2, u64::MAX));
        let (peak_jobs, peak_bytes) = run_jobs(gate, &[MIB; 12]);
        assert_eq!(peak_jobs, 3, "two main slots and the express slot");
        assert_eq!(peak_bytes, 3 * MIB);
    }

    /// A job on its own thread that holds its permit until told to let go; the test
    /// fails, rather than hangs, when the job is not admitted in time.
    struct Job {
        admitted: std::sync::mpsc::Receiver<()>,
        release: std::sync::mpsc::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    }

    impl Job {
        fn start(gate: &Arc<Gate>, bytes: u64) -> Job {
            let (admitted_sender, admitted) = std::sync::mpsc::channel();
            let (release, release_receiver) = std::sync::mpsc::channel::<()>();
            let gate = Arc::clone(gate);
            let thread = std::thread::spawn(move || {
                let _permit = gate.acquire(bytes);
                admitted_sender.send(()).expect("test alive");
                let _ = release_receiver.recv();
            });
            Job { admitted, release, thread }
        }

        fn admitted_within(&self, time: Duration) -> bool {
            self.admitted.recv_timeout(time).is_ok()
        }

        fn finish(self) {
            let _ = self.release.send(());
            self.thread.join().expect("job thread panicked");
        }
    }

    #[test]
    fn a_small_job_passes_large_ones_waiting_but_takes_no_slot_of_theirs() {
        let gate = Arc::new(Gate::new(1, 64 * MIB));
        let running_large = Job::start(&gate, 10 * MIB);
        assert!(running_large.admitted_within(Duration::from_secs(5)));
        let waiting_large = Job::start(&gate, 10 * MIB);
        assert!(!waiting_large.admitted_within(Duration::from_millis(50)), "one main slot");

        // The main lane is full and has a queue: the small job goes by the express slot.
        let small = Job::start(&gate, MIB);
        assert!(small.admitted_within(Duration::from_secs(5)), "the small job waited behind large ones");
        assert_eq!(gate.stats(), GateStats { jobs_running: 2, jobs_waiting: 1, bytes_reserved: 11 * MIB });

        // A second small job waits for the express slot, not for a main slot.
        let second_small = Job::start(&gate, MIB);
        assert!(!second_small.admitted_within(Duration::from_millis(50)), "one express slot");
        small.finish();
        assert!(second_small.admitted_within(Duration::from_secs(5)));
        assert!(!waiting_large.admitted_within(Duration::from_millis(50)), "the large job waits for its own slot");

        second_small.finish();
        running_large.finish();
        assert!(waiting_large.admitted_within(Duration::from_secs(5)));
        waiting_large.finish();
        assert_eq!(gate.stats(), GateStats::default());
    }

    #[test]
    fn zero_workers_still_admits_one() {
        let gate = Gate::new(0, 0);
        let permit = gate.acquire(10);
        assert_eq!(gate.stats().jobs_running, 1);
        drop(permit);
        assert_eq!(gate.stats(), GateStats::default());
    }
}
