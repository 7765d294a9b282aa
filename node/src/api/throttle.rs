//! Sign-in throttling that an attacker cannot turn into a lockout of the owner.
//!
//! Guessing a secret (a password, the claim code, an invite code) is limited by keys,
//! each with its own rule (`FailureLimiter`):
//!
//! - a password from a device the user signed in from before (it sends the opaque
//!   `device` token it got then): only that device's own small failure limit applies,
//!   so failures made without the device never refuse it;
//! - a password without a known device: per handle-and-address (5 failures lock that
//!   pair for 60 s), per address over every handle (20 lock the address), and a
//!   slow-down per handle (after 5 failures, one attempt per 10 s from anywhere);
//! - the claim code and invite codes: per address (5 failures lock it for 60 s), and
//!   for the claim code a node-wide slow-down (there is one code per node).
//!
//! Attempts still being checked count against the limits too, so a burst sent at
//! once cannot all be checked before the first failure is recorded. Everything here
//! is pure (time is passed in) except `DeviceKey::load_or_create`, which reads or
//! writes the key file once.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The handle-and-address rule, also the one documented as "5 failures lock for 60 s".
pub const FAILURES_MAX: u32 = 5;
pub const FAILURE_WINDOW_MS: u64 = (5 * 60) * 1000;
pub const LOCKOUT_MS: u64 = 60_000;
/// Failures from one address over every handle before it is locked: higher than the
/// pair's, so a household behind one NAT mistyping a few passwords is not locked.
pub const ADDRESS_FAILURES_MAX: u32 = 20;
/// Failures for one handle, without a known device, before attempts are spaced out.
pub const HANDLE_FAILURES_FREE: u32 = 5;
/// Past `HANDLE_FAILURES_FREE`: one attempt per this, from any address.
pub const HANDLE_ATTEMPT_INTERVAL_MS: u64 = 10_000;
/// Failures with one known device before that device is locked for `LOCKOUT_MS`.
pub const DEVICE_FAILURES_MAX: u32 = 5;
/// Wrong claim codes node-wide before claim attempts are spaced out.
pub const CLAIM_FAILURES_FREE: u32 = 5;
pub const CLAIM_ATTEMPT_INTERVAL_MS: u64 = 2_000;
/// Keys remembered per limiter; the oldest idle ones are forgotten first when full.
const KEYS_MAX: usize = 10_000;

/// What happens to a key once it has used up its free failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLimit {
    /// Refused for this long after the last failure.
    Lock { lockout_ms: u64 },
    /// One attempt at a time, at most one per this interval.
    SlowDown { interval_ms: u64 },
}

/// Failures allowed per key within a window, and what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub failures_max: u32,
    pub window_ms: u64,
    pub after_limit: AfterLimit,
}

pub const PAIR_RULE: Rule = Rule {
    failures_max: FAILURES_MAX,
    window_ms: FAILURE_WINDOW_MS,
    after_limit: AfterLimit::Lock { lockout_ms: LOCKOUT_MS },
};
pub const ADDRESS_RULE: Rule = Rule {
    failures_max: ADDRESS_FAILURES_MAX,
    window_ms: FAILURE_WINDOW_MS,
    after_limit: AfterLimit::Lock { lockout_ms: LOCKOUT_MS },
};
pub const HANDLE_RULE: Rule = Rule {
    failures_max: HANDLE_FAILURES_FREE,
    window_ms: FAILURE_WINDOW_MS,
    after_limit: AfterLimit::SlowDown { interval_ms: HANDLE_ATTEMPT_INTERVAL_MS },
};
pub const DEVICE_RULE: Rule = Rule {
    failures_max: DEVICE_FAILURES_MAX,
    window_ms: FAILURE_WINDOW_MS,
    after_limit: AfterLimit::Lock { lockout_ms: LOCKOUT_MS },
};
pub const CODE_ADDRESS_RULE: Rule = PAIR_RULE;
pub const CLAIM_RULE: Rule = Rule {
    failures_max: CLAIM_FAILURES_FREE,
    window_ms: FAILURE_WINDOW_MS,
    after_limit: AfterLimit::SlowDown { interval_ms: CLAIM_ATTEMPT_INTERVAL_MS },
};

/// Failures per key under one rule.
#[derive(Debug)]
pub struct FailureLimiter {
    rule: Rule,
    failures: HashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Attempts begun and not finished yet.
    pending: u32,
    first_at: Instant,
    last_at: Instant,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(PAIR_RULE)
    }
}

impl FailureLimiter {
    pub fn new(rule: Rule) -> FailureLimiter {
        FailureLimiter { rule, failures: HashMap::new() }
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.rule.window_ms)
    }

    /// How long until `key` may try again, if it may not now.
    pub fn locked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.get(key)?;
        if failures.count < self.rule.failures_max {
            return None;
        }
        let until = match self.rule.after_limit {
            AfterLimit::Lock { lockout_ms } => {
                // A lock outlives the window it was earned in only by its own length.
                if now.duration_since(failures.first_at) > self.window() + Duration::from_millis(lockout_ms) {
                    return None;
                }
                failures.last_at + Duration::from_millis(lockout_ms)
            }
            AfterLimit::SlowDown { interval_ms } => {
                if failures.pending > 0 {
                    return Some(Duration::from_millis(interval_ms));
                }
                failures.last_at + Duration::from_millis(interval_ms)
            }
        };
        (until > now).then(|| until - now)
    }

    /// Starts an attempt for `key`: `Err(wait)` when it may not try now, or when the
    /// attempts in flight would use up its remaining tries.
    pub fn try_begin(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if let Some(wait) = self.locked_for(key, now) {
            return Err(wait);
        }
        let rule = self.rule;
        let failures = self.entry(key, now);
        let over = failures.count + failures.pending >= rule.failures_max;
        // Once a lock has run out, one attempt at a time; its failure locks again.
        let lock_ran_out = failures.count >= rule.failures_max && failures.pending == 0;
        match rule.after_limit {
            AfterLimit::Lock { .. } if over && !lock_ran_out => return Err(Duration::from_secs(1)),
            AfterLimit::SlowDown { interval_ms } if over && failures.pending > 0 => {
                return Err(Duration::from_millis(interval_ms))
            }
            _ => {}
        }
        failures.pending += 1;
        if over {
            // The slot of a slowed-down key is taken now, not when the guess fails.
            failures.last_at = now;
        }
        Ok(())
    }

    /// Ends an attempt begun with `try_begin`.
    pub fn finish(&mut self, key: &str, now: Instant, succeeded: bool) {
        let Some(failures) = self.failures.get_mut(key) else { return };
        failures.pending = failures.pending.saturating_sub(1);
        if succeeded {
            if failures.pending == 0 {
                self.failures.remove(key);
            } else {
                failures.count = 0;
            }
        } else {
            failures.count += 1;
            failures.last_at = now;
        }
    }

    /// Takes back an attempt begun with `try_begin` that was never made.
    pub fn cancel(&mut self, key: &str) {
        if let Some(failures) = self.failures.get_mut(key) {
            failures.pending = failures.pending.saturating_sub(1);
        }
    }

    fn entry(&mut self, key: &str, now: Instant) -> &mut Failures {
        if self.failures.len() >= KEYS_MAX && !self.failures.contains_key(key) {
            self.forget_oldest(now);
        }
        let window = self.window();
        let fresh = Failures { count: 0, pending: 0, first_at: now, last_at: now };
        let failures = self.failures.entry(key.to_owned()).or_insert(fresh);
        if now.duration_since(failures.first_at) > window {
            *failures = Failures { pending: failures.pending, ..fresh };
        }
        failures
    }

    fn forget_oldest(&mut self, now: Instant) {
        let window = self.window();
        self.failures.retain(|_, failures| failures.pending > 0 || now.duration_since(failures.last_at) < window);
        if self.failures.len() >= KEYS_MAX {
            if let Some(oldest) = self
                .failures
                .iter()
                .filter(|(_, failures)| failures.pending == 0)
                .min_by_key(|(_, failures)| failures.last_at)
                .map(|(key, _)| key.clone())
            {
                self.failures.remove(&oldest);
            }
        }
    }
}

/// The secret a request guesses.
#[derive(Debug, Clone, Copy)]
pub enum Guess<'a> {
    /// A password for `handle`; `device` is the id of a device token already verified
    /// for that handle's user (see `DeviceKey::verify`).
    Password {
        handle: &'a str,
        device: Option<&'a DeviceId>,
    },
    ClaimCode,
    InviteCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limiter {
    Pair,
    Address,
    Handle,
    Device,
    CodeAddress,
    Claim,
}

/// The keys an attempt took; hand it back to `finish` or `cancel`.
#[derive(Debug)]
#[must_use = "an attempt must be finished or cancelled"]
pub struct Attempt {
    keys: Vec<(Limiter, String)>,
}

/// Every limiter of sign-in and sign-up, and the key device tokens are signed with.
/// One per node, behind one mutex (`Api::login_throttle`).
#[derive(Debug)]
pub struct LoginThrottle {
    pairs: FailureLimiter,
    addresses: FailureLimiter,
    handles: FailureLimiter,
    devices: FailureLimiter,
    code_addresses: FailureLimiter,
    claims: FailureLimiter,
    /// Loaded on first use (`device_key`), so building an `Api` touches no file.
    device_key: Option<DeviceKey>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            pairs: FailureLimiter::new(PAIR_RULE),
            addresses: FailureLimiter::new(ADDRESS_RULE),
            handles: FailureLimiter::new(HANDLE_RULE),
            devices: FailureLimiter::new(DEVICE_RULE),
            code_addresses: FailureLimiter::new(CODE_ADDRESS_RULE),
            claims: FailureLimiter::new(CLAIM_RULE),
            device_key: None,
        }
    }
}

impl LoginThrottle {
    fn limiter(&mut self, limiter: Limiter) -> &mut FailureLimiter {
        match limiter {
            Limiter::Pair => &mut self.pairs,
            Limiter::Address => &mut self.addresses,
            Limiter::Handle => &mut self.handles,
            Limiter::Device => &mut self.devices,
            Limiter::CodeAddress => &mut self.code_addresses,
            Limiter::Claim => &mut self.claims,
        }
    }

    /// Starts a guess from `address`: every key it counts against takes an attempt
    /// up front; `Err(wait)` (and nothing taken) when any of them may not try now.
    pub fn begin(&mut self, guess: Guess<'_>, address: Option<IpAddr>, now: Instant) -> Result<Attempt, Duration> {
        let address = address.map_or_else(|| "unknown".to_owned(), |address| address.to_string());
        let keys = match guess {
            Guess::Password { device: Some(device), .. } => vec![(Limiter::Device, device.0.clone())],
            Guess::Password { handle, device: None } => vec![
                (Limiter::Pair, format!("{handle}|{address}")),
                (Limiter::Address, address),
                (Limiter::Handle, handle.to_owned()),
            ],
            Guess::ClaimCode => vec![(Limiter::CodeAddress, address), (Limiter::Claim, String::new())],
            Guess::InviteCode => vec![(Limiter::CodeAddress, address)],
        };
        for (taken, (limiter, key)) in keys.iter().enumerate() {
            if let Err(wait) = self.limiter(*limiter).try_begin(key, now) {
                for (limiter, key) in &keys[..taken] {
                    self.limiter(*limiter).cancel(key);
                }
                return Err(wait);
            }
        }
        Ok(Attempt { keys })
    }

    /// Ends an attempt: a failure counts against every key it took; a success clears them.
    pub fn finish(&mut self, attempt: Attempt, now: Instant, succeeded: bool) {
        for (limiter, key) in &attempt.keys {
            self.limiter(*limiter).finish(key, now, succeeded);
        }
    }

    /// Takes back an attempt that was never judged (the node was busy, say).
    pub fn cancel(&mut self, attempt: Attempt) {
        for (limiter, key) in &attempt.keys {
            self.limiter(*limiter).cancel(key);
        }
    }

    /// The node's device-token key from `<data_dir>/device-key`, made on first use.
    pub fn device_key(&mut self, data_dir: &Path) -> &DeviceKey {
        self.device_key.get_or_insert_with(|| {
            let path = data_dir.join(DEVICE_KEY_FILE);
            DeviceKey::load_or_create(&path).unwrap_or_else(|error| {
                // Sign-in still works; device tokens just do not outlive this run.
                tracing::warn!(%error, path = %path.display(), "cannot keep the device-token key; using one for this run only");
                DeviceKey(crate::os::random_bytes())
            })
        })
    }
}

/// The file, in the data dir, holding the key device tokens are signed with (0600).
pub const DEVICE_KEY_FILE: &str = "device-key";
const DEVICE_NONCE_BYTES: usize = 16;
const DEVICE_TAG_BYTES: usize = 32;

/// Identifies one known device of one user: its token's nonce, as hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId(pub String);

/// Signs device tokens: `base64url(nonce ‖ HMAC-SHA256(key, "edgenode-device-v1\0" ‖
/// user_id ‖ "\0" ‖ nonce))`. A token is valid for the one user it was issued to and
/// is checked without a table (no write per sign-in, nothing to grow); deleting the
/// key file forgets every device at once.
pub struct DeviceKey([u8; 32]);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DeviceKey(…)")
    }
}

impl DeviceKey {
    /// Reads the key at `path`, or writes a new random one there readable only by us.
    pub fn load_or_create(path: &Path) -> std::io::Result<DeviceKey> {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::File::open(path) {
            Ok(mut file) => {
                let mut key = [0u8; 32];
                file.read_exact(&mut key)?;
                Ok(DeviceKey(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = crate::os::random_bytes::<32>();
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(DeviceKey(key))
            }
            Err(error) => Err(error),
        }
    }

    fn tag(&self, user_id: &str, nonce: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, &[b"edgenode-device-v1\0", user_id.as_bytes(), b"\0", nonce])
    }

    /// A new device token for `user_id` from a random `nonce`.
    pub fn issue(&self, user_id: &str, nonce: [u8; DEVICE_NONCE_BYTES]) -> String {
        let mut token = Vec::with_capacity(DEVICE_NONCE_BYTES + DEVICE_TAG_BYTES);
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&self.tag(user_id, &nonce));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    }

    /// The device a token names, if it was issued by this key to `user_id`.
    pub fn verify(&self, user_id: &str, token: &str) -> Option<DeviceId> {
        if token.len() > 128 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        if bytes.len() != DEVICE_NONCE_BYTES + DEVICE_TAG_BYTES {
            return None;
        }
        let (nonce, tag) = bytes.split_at(DEVICE_NONCE_BYTES);
        let expected = self.tag(user_id, nonce);
        super::accounts::constant_time_eq(&expected, tag).then(|| DeviceId(crate::store::hex(nonce)))
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`, for keys of at most 64 bytes.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK_BYTES: usize = 64;
    assert!(key.len() <= BLOCK_BYTES, "longer keys would have to be hashed first");
    let mut inner_pad = [0x36u8; BLOCK_BYTES];
    let mut outer_pad = [0x5cu8; BLOCK_BYTES];
    for (index, byte) in key.iter().enumerate() {
        inner_pad[index] ^= byte;
        outer_pad[index] ^= byte;
    }
    let mut inner = Sha256::new();
    inner.update(inner_pad);
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(outer_pad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(limiter: &mut FailureLimiter, key: &str, now: Instant) {
        limiter.try_begin(key, now).expect("not locked");
        limiter.finish(key, now, false);
    }

    fn address(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    fn wrong_password(throttle: &mut LoginThrottle, guess: Guess<'_>, from: Option<IpAddr>, now: Instant) -> bool {
        match throttle.begin(guess, from, now) {
            Ok(attempt) => {
                throttle.finish(attempt, now, false);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn guesses_in_flight_count_against_the_limit() {
        let mut limiter = FailureLimiter::default();
        let now = Instant::now();
        for _ in 0..FAILURES_MAX {
            limiter.try_begin("h:ada", now).expect("within the limit");
        }
        assert!(limiter.try_begin("h:ada", now).is_err(), "a sixth guess waits for the five in flight");
        for _ in 0..FAILURES_MAX {
            limiter.finish("h:ada", now, false);
        }
        assert!(limiter.locked_for("h:ada", now).is_some(), "five failures lock");
    }

    #[test]
    fn locks_after_the_limit_and_unlocks_after_the_lockout() {
        let mut limiter = FailureLimiter::default();
        let start = Instant::now();
        for _ in 0..FAILURES_MAX {
            assert!(limiter.locked_for("h:ada", start).is_none());
            fail(&mut limiter, "h:ada", start);
        }
        assert!(limiter.locked_for("h:ada", start).is_some());
        assert!(limiter.locked_for("h:bob", start).is_none());
        assert!(limiter
            .locked_for("h:ada", start + Duration::from_millis(LOCKOUT_MS) + Duration::from_secs(1))
            .is_none());
    }

    #[test]
    fn success_clears_failures() {
        let mut limiter = FailureLimiter::default();
        let now = Instant::now();
        for _ in 0..FAILURES_MAX - 1 {
            fail(&mut limiter, "k", now);
        }
        limiter.try_begin("k", now).expect("not locked");
        limiter.finish("k", now, true);
        fail(&mut limiter, "k", now);
        assert!(limiter.locked_for("k", now).is_none());
    }

    #[test]
    fn a_slow_down_spaces_attempts_instead_of_locking() {
        let mut limiter = FailureLimiter::new(HANDLE_RULE);
        let start = Instant::now();
        for _ in 0..HANDLE_FAILURES_FREE {
            fail(&mut limiter, "ada", start);
        }
        let interval = Duration::from_millis(HANDLE_ATTEMPT_INTERVAL_MS);
        assert_eq!(limiter.try_begin("ada", start), Err(interval));
        let later = start + interval;
        limiter.try_begin("ada", later).expect("one attempt per interval");
        assert!(limiter.try_begin("ada", later).is_err(), "only one attempt in flight once slowed down");
        limiter.finish("ada", later, false);
        assert!(limiter.try_begin("ada", later + interval / 2).is_err());
        limiter.try_begin("ada", later + interval).expect("the next interval");
    }

    #[test]
    fn a_thousand_wrong_passwords_from_fifty_addresses_never_refuse_the_known_device() {
        let mut throttle = LoginThrottle::default();
        let owner_device = DeviceId("00112233".into());
        let start = Instant::now();
        let mut checked = 0;
        for attempt in 0..1_000u32 {
            let now = start + Duration::from_millis(u64::from(attempt) * 20);
            let guess = Guess::Password { handle: "ada", device: None };
            checked += usize::from(wrong_password(&mut throttle, guess, address((attempt % 50) as u8 + 1), now));
        }
        let end = start + Duration::from_secs(20);
        assert!(checked <= 7, "20 s of guessing checks the 5 free ones and one per 10 s, not {checked}");
        let known = Guess::Password { handle: "ada", device: Some(&owner_device) };
        let attempt =
            throttle.begin(known, address(1), end).expect("the known device is never refused for others' failures");
        throttle.finish(attempt, end, true);
        let unknown = Guess::Password { handle: "ada", device: None };
        assert!(throttle.begin(unknown, address(200), end).is_err(), "a new device waits for the handle's slow-down");
        let after = end + Duration::from_millis(HANDLE_ATTEMPT_INTERVAL_MS);
        let attempt = throttle.begin(unknown, address(200), after).expect("and gets in after the interval");
        throttle.finish(attempt, after, true);
    }

    #[test]
    fn a_device_has_its_own_small_limit() {
        let mut throttle = LoginThrottle::default();
        let device = DeviceId("aa".into());
        let now = Instant::now();
        let guess = Guess::Password { handle: "ada", device: Some(&device) };
        for _ in 0..DEVICE_FAILURES_MAX {
            assert!(wrong_password(&mut throttle, guess, address(1), now));
        }
        assert!(throttle.begin(guess, address(2), now).is_err(), "a stolen device token gets 5 guesses, not more");
        let other = Guess::Password { handle: "ada", device: None };
        assert!(throttle.begin(other, address(3), now).is_ok(), "the device's failures are its own");
    }

    #[test]
    fn claim_codes_are_throttled_per_address_and_node_wide() {
        let mut throttle = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..FAILURES_MAX {
            assert!(wrong_password(&mut throttle, Guess::ClaimCode, address(1), now));
        }
        assert!(throttle.begin(Guess::ClaimCode, address(1), now).is_err(), "the address is locked");
        let wait = throttle.begin(Guess::ClaimCode, address(2), now).expect_err("node-wide slow-down");
        assert!(wait <= Duration::from_millis(CLAIM_ATTEMPT_INTERVAL_MS));
        let later = now + Duration::from_millis(CLAIM_ATTEMPT_INTERVAL_MS);
        assert!(throttle.begin(Guess::ClaimCode, address(2), later).is_ok());
        assert!(throttle.begin(Guess::InviteCode, address(3), later).is_ok(), "invites have no node-wide limit");
    }

    #[test]
    fn device_tokens_are_valid_for_their_user_only() {
        let key = DeviceKey([7; 32]);
        let token = key.issue("user-a", [1; DEVICE_NONCE_BYTES]);
        assert_eq!(key.verify("user-a", &token), Some(DeviceId(crate::store::hex(&[1; DEVICE_NONCE_BYTES]))));
        assert_eq!(key.verify("user-b", &token), None, "another user's token");
        assert_eq!(DeviceKey([8; 32]).verify("user-a", &token), None, "another node's key");
        let mut forged = token.clone().into_bytes();
        forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
        assert_eq!(key.verify("user-a", std::str::from_utf8(&forged).unwrap()), None);
        assert_eq!(key.verify("user-a", "not base64 !"), None);
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let tag = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(crate::store::hex(&tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn the_key_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("edgenode-device-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(DEVICE_KEY_FILE);
        let first = DeviceKey::load_or_create(&path).unwrap();
        let second = DeviceKey::load_or_create(&path).unwrap();
        assert_eq!(first.0, second.0);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
