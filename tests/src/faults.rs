//! Helpers for the fault-injection tier (power cuts, abuse, corrupted media): a
//! seeded random source that prints its seed, the node's memory figures, small
//! photos that are all different, and blob files that rot.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::fixtures::camera_jpeg;

/// A number from the environment, or `default` when unset; panics on a bad value.
pub fn env_number(variable: &str, default: u64) -> u64 {
    match std::env::var(variable) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{variable}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// SplitMix64: small, fast and the same everywhere, so a printed seed replays a run.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }

    /// The seed from `variable` if set, else one from the clock; printed either way
    /// with the line that replays it.
    pub fn from_env(variable: &str) -> (u64, SeededRng) {
        let seed = match std::env::var(variable) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{variable}={text:?} is not a u64 seed")),
            Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
        };
        println!("seed {seed} (replay with {variable}={seed})");
        (seed, SeededRng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0; the tiny modulo bias does not matter here).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SeededRng::below(0)");
        self.next_u64() % bound
    }

    /// An independent generator for a worker, derived from this one.
    pub fn fork(&mut self) -> SeededRng {
        SeededRng::new(self.next_u64())
    }
}

/// The memory figures of a live process, from /proc/PID/status, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub resident_bytes: u64,
    /// `VmHWM`: the peak resident so far.
    pub peak_resident_bytes: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"));
        let kilobytes = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {key} line in {path}:\n{status}"))
        };
        Memory { resident_bytes: kilobytes("VmRSS:") * 1024, peak_resident_bytes: kilobytes("VmHWM:") * 1024 }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VmRSS {} MiB, VmHWM {} MiB", self.resident_bytes >> 20, self.peak_resident_bytes >> 20)
    }
}

/// A 64×64 JPEG unlike any other `number`: its 64 blocks of 8×8 pixels spell the
/// number's low 64 bits in black and white (JPEG cannot blur whole blocks into each
/// other), over a tint that varies too. Small, so a debug node converts it fast.
pub fn numbered_photo(number: u64) -> Vec<u8> {
    let tint = [(number % 251) as u8, (number / 251 % 251) as u8, 128];
    camera_jpeg(64, 64, 1, false, move |x, y| {
        let bit = (y / 8) * 8 + x / 8;
        if number >> bit & 1 == 1 {
            [255, 255, 255]
        } else {
            tint.map(|channel| channel / 4)
        }
    })
}

/// Corrupts a node's stored media as bit rot (or tampering) would: flips a byte in
/// the middle of every blob file (`<data_dir>/media/**/<id>.*`) of `media_ids`, and
/// returns how many files it changed. Run it while the node is stopped.
pub fn corrupt_media_files(data_dir: &std::path::Path, media_ids: &[String]) -> usize {
    let mut corrupted = 0;
    let mut directories = vec![data_dir.join("media")];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).expect("reading the media dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                directories.push(path);
            } else if media_ids.iter().any(|id| name.starts_with(id.as_str())) {
                let mut bytes = std::fs::read(&path).expect("reading a blob");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
                std::fs::write(&path, bytes).expect("corrupting a blob");
                corrupted += 1;
            }
        }
    }
    corrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_numbers() {
        let (mut first, mut second) = (SeededRng::new(7), SeededRng::new(7));
        let drawn: Vec<u64> = (0..5).map(|_| first.below(300)).collect();
        assert_eq!(drawn, (0..5).map(|_| second.below(300)).collect::<Vec<_>>());
        assert!(drawn.iter().all(|&n| n < 300));
    }

    #[test]
    fn numbered_photos_differ() {
        let hashes: std::collections::BTreeSet<String> =
            (0..50).map(|n| crate::fixtures::sha256_hex(&numbered_photo(n))).collect();
        assert_eq!(hashes.len(), 50);
    }
}
