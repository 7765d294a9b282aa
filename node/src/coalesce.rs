//! Coalescing of identical concurrent work: the first caller for a key does the work,
//! callers arriving meanwhile wait for its result instead of doing it again.
//! This is what keeps identical uploads and cache misses from becoming a herd.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug)]
pub struct Coalescer<K, V> {
    in_flight: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

#[derive(Debug)]
struct Slot<V> {
    state: Mutex<SlotState<V>>,
    ready: Condvar,
}

#[derive(Debug)]
enum SlotState<V> {
    Pending,
    Done(V),
    /// The leader unwound without a result; a waiter takes over.
    Abandoned,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Coalescer<K, V> {
    fn default() -> Self {
        Coalescer { in_flight: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Coalescer<K, V> {
    /// Runs `work` unless the same key is already running; returns (value, coalesced)
    /// where `coalesced` says the value came from another caller's run.
    pub fn run(&self, key: K, work: impl FnOnce() -> V) -> (V, bool) {
        let mut work = Some(work);
        loop {
            let (slot, leader) = {
                let mut in_flight = self.in_flight.lock().expect("coalescer lock");
                match in_flight.get(&key) {
                    Some(slot) => (slot.clone(), false),
                    None => {
                        let slot = Arc::new(Slot { state: Mutex::new(SlotState::Pending), ready: Condvar::new() });
                        in_flight.insert(key.clone(), slot.clone());
                        (slot, true)
                    }
                }
            };
            if leader {
                let guard = LeaderGuard { coalescer: self, key: &key, slot: &slot, finished: false };
                let value = (work.take().expect("work runs once"))();
                guard.finish(value.clone());
                return (value, false);
            }
            let mut state = slot.state.lock().expect("slot lock");
            while matches!(*state, SlotState::Pending) {
                state = slot.ready.wait(state).expect("slot lock");
            }
            if let SlotState::Done(value) = &*state {
                return (value.clone(), true);
            }
            // Abandoned: loop and become the leader ourselves.
        }
    }
}

/// Publishes the leader's result, or `Abandoned` if the leader panicked, and always
/// removes the key so later calls start fresh work.
struct LeaderGuard<'a, K: Hash + Eq + Clone, V: Clone> {
    coalescer: &'a Coalescer<K, V>,
    key: &'a K,
    slot: &'a Slot<V>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> LeaderGuard<'_, K, V> {
    fn finish(mut self, value: V) {
        self.publish(SlotState::Done(value));
        self.finished = true;
    }

    fn publish(&self, state: SlotState<V>) {
        self.coalescer.in_flight.lock().expect("coalescer lock").remove(self.key);
        *self.slot.state.lock().expect("slot lock") = state;
        self.slot.ready.notify_all();
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.publish(SlotState::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_one_run() {
        let coalescer = Arc::new(Coalescer::<&str, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (coalescer, runs, barrier) = (coalescer.clone(), runs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    coalescer.run("same", || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        42
                    })
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
        assert!(results.iter().all(|(value, _)| *value == 42));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|(_, coalesced)| *coalesced).count(), 7);
        // Finished work is not cached: the next call runs again.
        assert_eq!(coalescer.run("same", || 7), (7, false));
    }

    #[test]
    fn a_panicking_leader_hands_over_to_a_waiter() {
        let coalescer = Arc::new(Coalescer::<u8, u8>::default());
        let leader = {
            let coalescer = coalescer.clone();
            std::thread::spawn(move || {
                coalescer.run(1, || {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("leader fails")
                })
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(coalescer.run(1, || 9).0, 9);
        assert!(leader.join().is_err());
    }
}
