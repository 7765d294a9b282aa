//! Hybrid logical clock: timestamps that follow wall time but never go backwards and
//! order causally related events across nodes, whatever their clock skew.
//!
//! A timestamp is one `u64`: the upper 48 bits are milliseconds since the Unix epoch,
//! the lower 16 bits a logical counter for events within the same millisecond.

use serde::{Deserialize, Serialize};

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn new(physical_ms: u64, logical: u16) -> Timestamp {
        Timestamp((physical_ms << LOGICAL_BITS) | logical as u64)
    }
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

/// The clock state of one node. Feed it wall time with every call.
#[derive(Debug, Clone, Default)]
pub struct HybridClock {
    last: Timestamp,
}

impl HybridClock {
    /// Starts after `last`, e.g. the newest timestamp found in the database, so a
    /// restart with a clock that went backwards still issues increasing timestamps.
    pub fn starting_after(last: Timestamp) -> HybridClock {
        HybridClock { last }
    }

    /// A timestamp for a local event at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Timestamp {
        let next =
            if now_ms > self.last.physical_ms() { Timestamp::new(now_ms, 0) } else { self.successor_of(self.last) };
        self.last = next;
        next
    }

    /// Takes in a timestamp seen on a remote record, so later local events order after it.
    pub fn observe(&mut self, remote: Timestamp, now_ms: u64) -> Timestamp {
        let newest = self.last.max(remote);
        let next = if now_ms > newest.physical_ms() { Timestamp::new(now_ms, 0) } else { self.successor_of(newest) };
        self.last = next;
        next
    }

    pub fn last(&self) -> Timestamp {
        self.last
    }

    fn successor_of(&self, timestamp: Timestamp) -> Timestamp {
        // A full logical counter spills into the next millisecond rather than wrapping.
        Timestamp(timestamp.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_wall_time_when_it_moves_forward() {
        let mut clock = HybridClock::default();
        assert_eq!(clock.tick(1_000), Timestamp::new(1_000, 0));
        assert_eq!(clock.tick(1_005), Timestamp::new(1_005, 0));
    }

    #[test]
    fn never_goes_backwards_when_wall_time_does() {
        let mut clock = HybridClock::default();
        let first = clock.tick(5_000);
        let second = clock.tick(4_000);
        let third = clock.tick(4_000);
        assert!(first < second && second < third);
        assert_eq!(second, Timestamp::new(5_000, 1));
    }

    #[test]
    fn orders_after_observed_remote_events_from_a_fast_clock() {
        let mut clock = HybridClock::default();
        let remote = Timestamp::new(60_000, 7);
        clock.observe(remote, 1_000);
        assert!(clock.tick(1_001) > remote);
    }

    #[test]
    fn logical_overflow_spills_into_the_next_millisecond() {
        let mut clock = HybridClock::starting_after(Timestamp::new(10, u16::MAX));
        let next = clock.tick(10);
        assert_eq!(next, Timestamp::new(11, 0));
    }
}
