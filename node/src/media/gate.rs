//! Admission gate for conversions: bounds both the number of jobs running at once and the
//! decoded-pixel bytes they hold, so a small board never runs out of memory.
//!
//! Waiters are served strictly in arrival order (a ticket queue). Without that, a stream of
//! small photos could starve a large one forever, because the large one only fits when the
//! budget is nearly empty.

use std::sync::{Condvar, Mutex, MutexGuard};

/// What the gate is holding right now; cheap to read for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    pub jobs_running: usize,
    pub jobs_waiting: usize,
    pub bytes_reserved: u64,
}

#[derive(Debug, Default)]
struct State {
    jobs_running: usize,
    bytes_reserved: u64,
    /// Next ticket to hand out to an arriving job.
    ticket_next: u64,
    /// Ticket of the job at the head of the queue; only it may be admitted.
    ticket_serving: u64,
}

#[derive(Debug)]
pub struct Gate {
    jobs_max: usize,
    bytes_max: u64,
    state: Mutex<State>,
    changed: Condvar,
}

/// Held while a job runs; returns its job slot and bytes when dropped, even on unwind.
#[derive(Debug)]
pub struct Permit<'gate> {
    gate: &'gate Gate,
    bytes: u64,
}

impl Gate {
    /// `jobs_max` of 0 is treated as 1: a gate that admits nothing would hang every caller.
    pub fn new(jobs_max: usize, bytes_max: u64) -> Self {
        Gate { jobs_max: jobs_max.max(1), bytes_max, state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    /// Blocks until a job slot is free and `bytes` fit in the budget. A job larger than the
    /// whole budget is admitted once nothing else is running, and then runs alone.
    pub fn acquire(&self, bytes: u64) -> Permit<'_> {
        let mut state = self.lock();
        let ticket = state.ticket_next;
        state.ticket_next += 1;
        while !(ticket == state.ticket_serving && self.fits(&state, bytes)) {
            state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.ticket_serving += 1;
        state.jobs_running += 1;
        state.bytes_reserved = state.bytes_reserved.saturating_add(bytes);
        drop(state);
        // The next in line may fit too (e.g. two small jobs); let it check.
        self.changed.notify_all();
        Permit { gate: self, bytes }
    }

    pub fn stats(&self) -> GateStats {
        let state = self.lock();
        GateStats {
            jobs_running: state.jobs_running,
            jobs_waiting: usize::try_from(state.ticket_next - state.ticket_serving).unwrap_or(usize::MAX),
            bytes_reserved: state.bytes_reserved,
        }
    }

    fn fits(&self, state: &State, bytes: u64) -> bool {
        if state.jobs_running == 0 {
            return true;
        }
        state.jobs_running < self.jobs_max && state.bytes_reserved.saturating_add(bytes) <= self.bytes_max
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
        state.jobs_running -= 1;
        state.bytes_reserved = state.bytes_reserved.saturating_sub(self.bytes);
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

    #[test]
    fn limits_concurrent_jobs() {
        let gate = Arc::new(Gate::new(2, u64::MAX));
        let (peak_jobs, _) = run_jobs(gate, &[1; 8]);
        assert_eq!(peak_jobs, 2);
    }

    #[test]
    fn limits_bytes_in_flight() {
        let gate = Arc::new(Gate::new(8, 100));
        let (peak_jobs, peak_bytes) = run_jobs(gate, &[40; 8]);
        assert_eq!(peak_jobs, 2, "only two 40-byte jobs fit in 100 bytes");
        assert_eq!(peak_bytes, 80);
    }

    #[test]
    fn oversized_job_runs_alone() {
        let gate = Arc::new(Gate::new(4, 100));
        let (peak_jobs, peak_bytes) = run_jobs(gate, &[500; 3]);
        assert_eq!(peak_jobs, 1);
        assert_eq!(peak_bytes, 500);
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
