//! Cache fills in flight. Requests for an answer the service keeps in memory once made
//! (a public thumbnail) that miss the cache together, as a feed page's do after a
//! restart, would each take a blocking thread to make the same answer, and each thread's
//! stack and allocator cache stay resident a while (bench/serving: 61-104 threads in a
//! cold warm-up; capping the pool at 8 instead peaked 2.3 MiB lower). The
//! first request for a path goes the long way and fills the cache; the others wait for
//! it here, without a thread, then look in the cache again. Fills of different paths
//! take turns, `FILLS_AT_ONCE` at a time (a cold feed page is dozens of paths), but
//! none waits for a turn longer than `TURN_WAIT_MAX`: a fill that is slow (a photo
//! fetched from another node) delays the others by that much at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::locking::lock;

/// Fills made at once. A node that starts serving 32 connections x 8 requests for 100
/// cold thumbnails (bench/serving's warm-up) ran 61-104 threads with a fill per request,
/// 11-51 with per-path fills and 8 turns.
const FILLS_AT_ONCE: usize = 8;
/// The longest a fill waits for its turn before it goes ahead anyway (50 ms let most of
/// such a warm-up go ahead: its TLS handshakes hold the same core).
const TURN_WAIT_MAX: Duration = Duration::from_millis(250);

pub(super) struct Fills {
    /// Per path being filled, a lock its filler holds until it is done.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    turns: Arc<Semaphore>,
}

impl Default for Fills {
    fn default() -> Fills {
        Fills { in_flight: Mutex::default(), turns: Arc::new(Semaphore::new(FILLS_AT_ONCE)) }
    }
}

/// Held by the request that fills the cache for a path; dropping it (done, or the
/// request given up) lets the requests waiting for that path go on.
pub(super) struct Filling {
    fills: Arc<Fills>,
    path: String,
    _held: OwnedMutexGuard<()>,
    /// `None` when it went ahead without one.
    _turn: Option<OwnedSemaphorePermit>,
}

impl Fills {
    /// `Some` when this request is to fill the cache for `path`; `None` after another
    /// request's fill of it ended (the answer may be in the cache now, or it may not
    /// be cacheable for this client: then the request goes the long way itself).
    pub(super) async fn fill_or_wait(self: &Arc<Self>, path: &str) -> Option<Filling> {
        let held = {
            let mut in_flight = lock(&self.in_flight);
            match in_flight.get(path) {
                Some(filler) => Err(filler.clone()),
                None => {
                    let filler = Arc::new(tokio::sync::Mutex::new(()));
                    let held = filler.clone().try_lock_owned().expect("a new lock is free");
                    in_flight.insert(path.to_owned(), filler);
                    Ok(held)
                }
            }
        };
        match held {
            Ok(held) => {
                let turn = tokio::time::timeout(TURN_WAIT_MAX, self.turns.clone().acquire_owned()).await;
                let turn = turn.ok().and_then(Result::ok);
                Some(Filling { fills: self.clone(), path: path.to_owned(), _held: held, _turn: turn })
            }
            Err(filler) => {
                drop(filler.lock().await);
                None
            }
        }
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        // Before `_held` is released: a request arriving from now on starts a fill of
        // its own rather than waiting for this one.
        lock(&self.fills.in_flight).remove(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_request_fills_and_the_others_wait_for_it() {
        let fills = Arc::new(Fills::default());
        let filling = fills.fill_or_wait("/a").await.expect("the first request fills");
        // Another path does not wait.
        assert!(fills.fill_or_wait("/b").await.is_some());
        let waiter = tokio::spawn({
            let fills = fills.clone();
            async move { fills.fill_or_wait("/a").await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second request for /a waits for the fill");
        drop(filling);
        assert!(waiter.await.unwrap(), "the waiter is let go, not made a filler");
        // Done: the next miss fills again.
        assert!(fills.fill_or_wait("/a").await.is_some());
        assert!(lock(&fills.in_flight).is_empty());
    }

    #[tokio::test]
    async fn fills_of_different_paths_take_turns_but_never_wait_long() {
        let fills = Arc::new(Fills::default());
        let mut filling = Vec::new();
        for n in 0..FILLS_AT_ONCE {
            filling.push(fills.fill_or_wait(&format!("/{n}")).await.unwrap());
        }
        assert!(filling.iter().all(|filling| filling._turn.is_some()));
        // Every turn taken: the next fill waits for one, then goes ahead without.
        let started = std::time::Instant::now();
        let late = fills.fill_or_wait("/late").await.unwrap();
        assert!(late._turn.is_none());
        assert!(started.elapsed() >= TURN_WAIT_MAX);
        // A turn given back is the next fill's.
        drop(filling.pop());
        assert!(fills.fill_or_wait("/next").await.unwrap()._turn.is_some());
    }
}
