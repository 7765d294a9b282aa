//! Connection slots shared by TCP and QUIC: one budget of `connections_max`, a share
//! per client address, and each connection's activity, so that when every slot is
//! taken the connection idle the longest gives its slot to a newcomer. A few
//! addresses holding idle or stalled connections therefore cannot keep a phone out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::Service;
use crate::config::Limits;

/// A connection silent at least this long, with no request in progress, may be closed
/// to make room when every slot is taken.
const EVICTABLE_SILENCE_MS: u64 = 1000;
/// How long a newcomer waits for an evicted connection to give its slot back.
const EVICTION_WAIT_MS: u64 = 1000;
/// Newcomers waiting for a slot at once; past this they are refused at once.
const WAITING_FOR_SLOT_MAX: usize = 64;

/// Every open connection's slot, by client address, with what each is doing.
pub(super) struct Slots {
    permits: Arc<Semaphore>,
    per_address_max: usize,
    state: Mutex<SlotTable>,
    waiting: AtomicUsize,
}

#[derive(Default)]
struct SlotTable {
    per_address: HashMap<IpAddr, usize>,
    open: HashMap<u64, Arc<Activity>>,
    next_id: u64,
}

impl Slots {
    pub(super) fn new(limits: &Limits) -> Slots {
        Slots {
            permits: Arc::new(Semaphore::new(limits.connections_max)),
            per_address_max: limits.connections_per_address_max,
            state: Mutex::new(SlotTable::default()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A slot for a connection from `remote`: at once when one is free; when all are
    /// taken, after closing the connection idle the longest (if any is idle); `None`
    /// when this address holds its share already or no slot frees up in time.
    pub(super) async fn open<S: Service>(
        self: &Arc<Self>,
        remote: SocketAddr,
        service: &Arc<S>,
    ) -> Option<ConnectionSlot<S>> {
        let metrics = service.metrics();
        let address = remote.ip().to_canonical();
        let refused = || {
            metrics.connections_refused_total.inc();
            None
        };
        {
            let mut table = crate::locking::lock(&self.state);
            let open = table.per_address.entry(address).or_insert(0);
            if *open >= self.per_address_max {
                return refused();
            }
            *open += 1;
        }
        let share = AddressShare { address, slots: self.clone() };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= WAITING_FOR_SLOT_MAX || !self.evict_idlest() {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return refused();
                }
                let wait = Duration::from_millis(EVICTION_WAIT_MS);
                let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                match permit {
                    Ok(Ok(permit)) => permit,
                    _ => return refused(),
                }
            }
        };
        let activity = Arc::new(Activity::new());
        let id = {
            let mut table = crate::locking::lock(&self.state);
            table.next_id += 1;
            let id = table.next_id;
            table.open.insert(id, activity.clone());
            id
        };
        metrics.connections_open.inc();
        Some(ConnectionSlot {
            id,
            activity,
            _permit: permit,
            _share: share,
            slots: self.clone(),
            service: service.clone(),
        })
    }

    /// Asks the connection silent the longest, with no request in progress, to close.
    fn evict_idlest(&self) -> bool {
        let table = crate::locking::lock(&self.state);
        let idlest =
            table.open.values().filter(|activity| activity.evictable()).max_by_key(|activity| activity.silent_for());
        match idlest {
            Some(activity) => {
                activity.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Held for a connection's lifetime: its slot, its count against its address, and its
/// place in `connections_open`.
pub(super) struct ConnectionSlot<S: Service> {
    id: u64,
    pub(super) activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
    _share: AddressShare,
    slots: Arc<Slots>,
    service: Arc<S>,
}

impl<S: Service> Drop for ConnectionSlot<S> {
    fn drop(&mut self) {
        crate::locking::lock(&self.slots.state).open.remove(&self.id);
        self.service.metrics().connections_open.dec();
    }
}

/// One connection's count against its client address; given back when dropped.
struct AddressShare {
    address: IpAddr,
    slots: Arc<Slots>,
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut table = crate::locking::lock(&self.slots.state);
        if let Some(open) = table.per_address.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                table.per_address.remove(&self.address);
            }
        }
    }
}

/// When a connection last did work for a client, whether a request is in progress,
/// and a way to ask it to close. hyper has no idle timeout for HTTP/2 (and HTTP/1 only
/// between requests), so the connection task closes a connection without a request
/// in progress for `idle_timeout_seconds`. Bytes read do not count (a client trickling
/// a header one byte at a time, or sending pings, is not working with us); responses
/// being written do (a large download on a slow link).
pub(super) struct Activity {
    started: Instant,
    last_io_millis: AtomicU64,
    handlers_running: AtomicUsize,
    /// Notified when the connection should close: evicted to make room, or its client
    /// stalled a request body.
    close: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_io_millis: AtomicU64::new(0),
            handlers_running: AtomicUsize::new(0),
            close: Notify::new(),
        }
    }

    pub(super) fn touch(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_millis.store(millis, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last_io = Duration::from_millis(self.last_io_millis.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last_io)
    }

    fn evictable(&self) -> bool {
        self.handlers_running.load(Ordering::Relaxed) == 0
            && self.silent_for() >= Duration::from_millis(EVICTABLE_SILENCE_MS)
    }

    pub(super) fn handler_started(self: &Arc<Self>) -> HandlerRunning {
        self.handlers_running.fetch_add(1, Ordering::Relaxed);
        HandlerRunning(self.clone())
    }

    /// Asks the connection to close (its task decides how: GOAWAY, close).
    pub(super) fn request_close(&self) {
        self.close.notify_one();
    }

    /// Resolves when the connection is asked to close.
    pub(super) async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// Resolves once the connection is idle; never when `idle_timeout` is `None`.
    pub(super) async fn until_idle(&self, idle_timeout: Option<Duration>) {
        let Some(idle_timeout) = idle_timeout else { return std::future::pending().await };
        loop {
            let silent = self.silent_for();
            if silent >= idle_timeout && self.handlers_running.load(Ordering::Relaxed) == 0 {
                return;
            }
            // Check again when the silence could first reach the timeout (at least a
            // second apart while a handler keeps the connection busy).
            let wait = idle_timeout.saturating_sub(silent).max(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
        }
    }
}

pub(super) struct HandlerRunning(Arc<Activity>);

impl Drop for HandlerRunning {
    fn drop(&mut self) {
        self.0.handlers_running.fetch_sub(1, Ordering::Relaxed);
        // The response is about to be written: start counting silence from now.
        self.0.touch();
    }
}
