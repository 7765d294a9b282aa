//! Password hashing: Argon2id with OWASP's minimum (19 MiB, 2 passes), about 50 ms
//! on a Raspberry Pi 4. `PasswordGate` runs at most one hash per core at a time and
//! gives each its 19 MiB from a pool it keeps, so a flood of logins neither piles up
//! threads nor churns the allocator (a fresh 19 MiB per check was seen to leave
//! gigabytes resident after a few hundred logins). Once no check runs or waits, the
//! pool shrinks to one buffer, so a flood's memory does not stay after it.

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::os;

const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
/// A stored hash asking for more memory than this is refused rather than computed.
const MEMORY_KIB_MAX: u32 = 64 * 1024;

fn params() -> Params {
    Params::new(MEMORY_KIB, PASSES, 1, None).expect("valid Argon2 parameters")
}

/// At most `slots` password hashes at once, each with memory from the pool; past
/// `waiting_max` callers waiting, `run` refuses instead of queueing.
#[derive(Debug)]
pub struct PasswordGate {
    state: std::sync::Mutex<GateState>,
    freed: std::sync::Condvar,
    slots: usize,
    waiting_max: usize,
}

#[derive(Debug, Default)]
struct GateState {
    running: usize,
    waiting: usize,
    /// Of `waiting`, those with priority.
    waiting_priority: usize,
    memories: Vec<Vec<Block>>,
}

impl PasswordGate {
    pub fn new(slots: usize, waiting_max: usize) -> PasswordGate {
        PasswordGate {
            state: std::sync::Mutex::new(GateState::default()),
            freed: std::sync::Condvar::new(),
            slots: slots.max(1),
            waiting_max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        crate::locking::lock(&self.state)
    }

    /// Runs `work` in a slot with a memory buffer; `None` when too many wait already.
    /// A `priority` caller (a sign-in from a known device) goes before every other
    /// waiter and is never refused for the queue's length: a flood of guesses must not
    /// keep the owner waiting.
    pub fn run<R>(&self, priority: bool, work: impl FnOnce(&mut Vec<Block>) -> R) -> Option<R> {
        let mut state = self.lock();
        if !priority && state.running >= self.slots && state.waiting >= self.waiting_max {
            return None;
        }
        state.waiting += 1;
        if priority {
            state.waiting_priority += 1;
        }
        while state.running >= self.slots || (!priority && state.waiting_priority > 0) {
            state = self.freed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.waiting -= 1;
        if priority {
            state.waiting_priority -= 1;
        }
        state.running += 1;
        let mut memory = state.memories.pop().unwrap_or_default();
        drop(state);
        let result = work(&mut memory);
        let mut state = self.lock();
        state.running -= 1;
        state.memories.push(memory);
        if state.running == 0 && state.waiting == 0 {
            // The burst is over: keep one buffer warm and give the rest back (the
            // allocator returns them to the OS within seconds).
            state.memories.truncate(1);
        }
        drop(state);
        // Every waiter checks whether it is next (a priority one may be among them).
        self.freed.notify_all();
        Some(result)
    }

    pub fn hash(&self, password: &str) -> Option<String> {
        self.run(false, |memory| hash_with(password, memory))
    }

    /// Checks `password` against `hash`; `known_device` goes first (see `run`).
    pub fn matches(&self, password: &str, hash: &str, known_device: bool) -> Option<bool> {
        self.run(known_device, |memory| matches_with(password, hash, memory))
    }
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of a new hash.
pub fn hash_with(password: &str, memory: &mut Vec<Block>) -> String {
    let params = params();
    let salt = SaltString::encode_b64(&os::random_bytes::<16>()).expect("16 bytes is a valid salt");
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.as_salt().decode_b64(&mut salt_bytes).expect("a salt we encoded decodes");
    let mut out = [0u8; 32];
    compute(Algorithm::Argon2id, Version::V0x13, params.clone(), password, raw_salt, &mut out, memory)
        .expect("Argon2 with valid parameters");
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("parameters format"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("32 bytes is a valid output")),
    };
    hash.to_string()
}

/// Whether `password` matches the PHC string `hash` (false for anything malformed).
pub fn matches_with(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else { return false };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    if params.m_cost() > MEMORY_KIB_MAX {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = Salt::decode_b64(&salt, &mut salt_bytes) else { return false };
    let mut out = vec![0u8; expected.len()];
    compute(algorithm, version, params, password, raw_salt, &mut out, memory).is_ok()
        && Output::new(&out).is_ok_and(|computed| computed == expected)
}

fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> argon2::Result<()> {
    let blocks = params.block_count();
    memory.resize(blocks, Block::default());
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        out,
        &mut memory[..blocks],
    )
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_verify_both_ways_with_the_argon2_crate() {
        let mut memory = Vec::new();
        let ours = hash_with("correct horse", &mut memory);
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        assert!(argon2.verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap()).is_ok());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = argon2.hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(matches_with("correct horse", &theirs, &mut memory));
        assert!(!matches_with("wrong horse", &theirs, &mut memory));
        assert!(!matches_with("anything", "not a hash", &mut memory));
        assert_ne!(hash_with("correct horse", &mut memory), ours, "salted");
    }

    #[test]
    fn the_gate_bounds_concurrency_and_waiting() {
        let gate = std::sync::Arc::new(PasswordGate::new(2, 3));
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..5)
            .map(|_| {
                let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    gate.run(false, |_| {
                        let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .is_some()
                })
            })
            .collect();
        let ran = threads.into_iter().map(|thread| thread.join().unwrap()).filter(|ran| *ran).count();
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2, "two at once at most");
        assert_eq!(ran, 5, "two ran and three waited (the waiting limit)");
        assert_eq!(gate.lock().memories.len(), 1, "once idle, one buffer is kept warm");
    }

    #[test]
    fn a_known_device_goes_before_the_queue() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc};
        let gate = Arc::new(PasswordGate::new(1, 8));
        let release = Arc::new(AtomicBool::new(false));
        let (order_sender, order) = mpsc::channel();
        let holder = {
            let (gate, release) = (gate.clone(), release.clone());
            std::thread::spawn(move || {
                gate.run(false, |_| {
                    while !release.load(Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                })
            })
        };
        let waiter = |name: &'static str, priority: bool| {
            let (gate, order_sender) = (gate.clone(), order_sender.clone());
            std::thread::spawn(move || gate.run(priority, |_| order_sender.send(name).unwrap()))
        };
        let wait_for_waiting = |count: usize| {
            while gate.lock().waiting < count {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        while gate.lock().running == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let guesses: Vec<_> = (0..3).map(|_| waiter("guess", false)).collect();
        wait_for_waiting(3);
        let owner = waiter("owner", true);
        wait_for_waiting(4);
        release.store(true, Ordering::SeqCst);
        for thread in guesses.into_iter().chain([owner, holder]) {
            thread.join().unwrap().unwrap();
        }
        assert_eq!(order.try_iter().next(), Some("owner"), "the known device went first");
    }
}
