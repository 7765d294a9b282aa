//! mDNS/DNS-SD discovery: the node advertises `_edgenode._udp` (QUIC) and
//! `_https._tcp` (HTTPS) on its port, with host `<name>.local`, and browses
//! `_edgenode._udp` into a table of nearby nodes. This file is the glue to mdns-sd
//! (its daemon thread, event threads, OS interface flags); the decisions are sans-IO
//! in `rules` (what and where we announce) and `table` (what we saw).
//!
//! Discovery is an address hint only: identity is always checked against a pinned
//! key, and an advert is never trusted for being on the link. mDNS failing (no
//! multicast, no interface) is logged once; the node keeps serving without it.
//!
//! Names: mdns-sd probes and renames what it catches (`name (2)`, `name-2.local`);
//! `Announcer::check_names` renames what its probing misses (two nodes probing at
//! once both keep a name). Threads: mdns-sd's daemon, one following our browse
//! (`Browser`), one following daemon events (renames, errors, address changes).

pub mod rules;
pub mod table;

use crate::locking::lock;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, IfPredicate, Receiver, RecvTimeoutError, ServiceDaemon, ServiceEvent, ServiceInfo};

pub use table::NearbyNode;
use table::{Advert, NearbyTable, Seen};

/// Our service: QUIC (HTTP/3) on UDP.
pub const SERVICE_TYPE: &str = "_edgenode._udp.local.";
/// The same node for browsers and phones: HTTPS on TCP, same port number.
pub const HTTPS_SERVICE_TYPE: &str = "_https._tcp.local.";

/// How long `start` and `browse_once` wait for the daemon to take their commands.
const DAEMON_ANSWER_WAIT_MS: u64 = 2000;
/// How long `shutdown` waits for each unregister to be acknowledged.
const UNREGISTER_WAIT_MS: u64 = 1000;
/// mdns-sd sends each goodbye twice, the second 120 ms after the first: wait for it.
const GOODBYE_RESEND_WAIT_MS: u64 = 300;
/// How often the event threads look at their stop flag.
const EVENT_POLL_INTERVAL_MS: u64 = 250;
/// How long our names must have been still before a clash with another advert is
/// acted on (mdns-sd probes for about a second, and renames what it catches).
const NAMES_SETTLE_TIME_MS: u64 = 3000;
/// Renames after clashes per run; past this the node keeps its name (a rogue could
/// otherwise chase it through names forever).
const RENAMES_MAX: usize = 16;
/// Distinct messages remembered by the log-once filter; past this, repeats may be logged.
const LOGGED_ONCE_MAX: usize = 256;

/// What this node announces, from its config and identity.
#[derive(Debug, Clone)]
pub struct Advertisement {
    /// Node name: the mDNS instance name, and (made a DNS label) the host `<name>.local`.
    pub name: String,
    pub node_id: String,
    /// `sha256/BASE64` of the node's SubjectPublicKeyInfo.
    pub pin: String,
    pub region: String,
    /// The one port of HTTPS (TCP) and HTTP/3 (UDP).
    pub port: u16,
    /// The listen address; unspecified (`0.0.0.0`, `::`) means all addresses.
    pub listen_ip: IpAddr,
    /// `[mdns] interfaces`; empty means the default rule (`rules::interface_selected`).
    pub interfaces: Vec<String>,
    /// Pins of paired siblings (`[peers] siblings`): nearby nodes with one are `paired`.
    pub siblings_pins: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start the mDNS daemon: {0}")]
    Daemon(#[source] mdns_sd::Error),
    #[error("the mDNS daemon refused a command: {0}")]
    Command(#[source] mdns_sd::Error),
    #[error("the mDNS daemon did not answer within {0:?}")]
    Unresponsive(Duration),
    #[error("cannot build the mDNS advertisement: {0}")]
    Advertisement(#[source] mdns_sd::Error),
    #[error(
        "no network interface can carry mDNS: this host needs an interface that is up, not loopback \
         and allows multicast (or one named in `[mdns] interfaces`)"
    )]
    NoInterfaces,
}

/// The running discovery of a serving node: owns the mdns-sd daemon.
pub struct Discovery {
    running: Option<Running>,
    nearby: NearbyHandle,
    /// The configured name, for a Discovery that does nothing.
    name: String,
}

/// A cheap, cloneable view of the nearby table, for whoever answers
/// `GET /api/v1/node/nearby` while `Discovery` itself stays with `main` for shutdown.
#[derive(Clone)]
pub struct NearbyHandle {
    table: Arc<Mutex<NearbyTable>>,
}

struct Running {
    daemon: ServiceDaemon,
    announcer: Arc<Mutex<Announcer>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Our two registrations and the names they use, renamed after a clash.
struct Announcer {
    daemon: ServiceDaemon,
    advertisement: Advertisement,
    names: rules::OwnNames,
    /// Full names as registered (mdns-sd keys its services by them, also after it
    /// renamed one on the link).
    registered: Vec<String>,
    renames: usize,
    /// When the names last changed (registered, or renamed by mdns-sd): clashes are
    /// judged only once they have settled.
    names_changed: Instant,
    /// The addresses we announce (filled in as the daemon selects interfaces).
    own_addresses: Arc<Mutex<BTreeSet<IpAddr>>>,
    /// Set on shutdown: nothing is registered again.
    withdrawn: bool,
}

impl Discovery {
    /// Starts advertising and browsing. Errors are logged once and give a Discovery
    /// that does nothing: the node serves without mDNS.
    pub fn start(advertisement: Advertisement) -> Discovery {
        let table = NearbyTable::new(
            SERVICE_TYPE,
            Some((advertisement.node_id.clone(), advertisement.pin.clone())),
            advertisement.siblings_pins.clone(),
        );
        let nearby = NearbyHandle { table: Arc::new(Mutex::new(table)) };
        let running = match Running::start(&advertisement, &nearby) {
            Ok(running) => Some(running),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "mDNS is off: this node is not advertised and sees no nearby nodes; it keeps serving"
                );
                None
            }
        };
        Discovery { running, nearby, name: advertisement.name }
    }

    /// A snapshot of the nearby nodes, this node excluded.
    pub fn nearby(&self) -> Vec<NearbyNode> {
        self.nearby.nearby()
    }

    /// A handle on the nearby table that outlives borrows of `self`.
    pub fn nearby_handle(&self) -> NearbyHandle {
        self.nearby.clone()
    }

    /// The instance name on the link: the node name, or e.g. `name (2)` after a clash.
    pub fn instance_name(&self) -> String {
        match &self.running {
            Some(running) => lock(&running.announcer).names.instance.clone(),
            None => self.name.clone(),
        }
    }

    /// Whether mDNS runs (false when it failed to start).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Withdraws the adverts (goodbye packets), waits briefly for them to be sent,
    /// and stops the daemon.
    pub fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }
}

impl NearbyHandle {
    /// A snapshot of the nearby nodes, this node excluded.
    pub fn nearby(&self) -> Vec<NearbyNode> {
        let now = Instant::now();
        let mut table = lock(&self.table);
        table.expire(now);
        table.nodes(now)
    }
}

impl Running {
    fn start(advertisement: &Advertisement, nearby: &NearbyHandle) -> Result<Running, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Daemon)?;
        match Running::configure(daemon.clone(), advertisement, nearby) {
            Ok(running) => Ok(running),
            Err(error) => {
                let _ = daemon.shutdown();
                Err(error)
            }
        }
    }

    fn configure(
        daemon: ServiceDaemon,
        advertisement: &Advertisement,
        nearby: &NearbyHandle,
    ) -> Result<Running, DiscoveryError> {
        let configured = advertisement.interfaces.clone();
        let listen_ip = advertisement.listen_ip;
        let own_addresses = Arc::new(Mutex::new(BTreeSet::new()));
        let chosen = select_interfaces(&daemon, {
            let own_addresses = own_addresses.clone();
            move |facts, address| {
                let served = rules::interface_selected(&configured, facts) && rules::address_served(listen_ip, address);
                if served {
                    lock(&own_addresses).insert(address);
                }
                served
            }
        })?;
        let monitor = daemon.monitor().map_err(DiscoveryError::Command)?;
        let browser = Browser::start(&daemon)?;
        let mut announcer = Announcer::new(daemon.clone(), advertisement.clone(), own_addresses);
        announcer.register()?;
        wait_for_daemon(&daemon)?;

        let logged = LogOnce::default();
        let interfaces = lock(&chosen).clone();
        let host = format!("{}.local", rules::host_label(&advertisement.name));
        if interfaces.is_empty() {
            let error = DiscoveryError::NoInterfaces;
            logged.warn("no interfaces", || {
                tracing::warn!(
                    %error,
                    "mDNS: nothing is announced and no nearby node is seen until an interface comes up; \
                     the node keeps serving"
                )
            });
        } else {
            tracing::info!(
                name = %advertisement.name, host = %host, port = advertisement.port,
                interfaces = ?interfaces, "mDNS: advertising {SERVICE_TYPE} and {HTTPS_SERVICE_TYPE}"
            );
        }

        let announcer = Arc::new(Mutex::new(announcer));
        let stop = Arc::new(AtomicBool::new(false));
        let browse_thread = spawn_named("edgenode-mdns-browse", {
            let (nearby, announcer, stop, logged) = (nearby.clone(), announcer.clone(), stop.clone(), logged.clone());
            move || follow_browse_events(browser, &nearby, &announcer, &stop, &logged)
        })?;
        let monitor_thread = spawn_named("edgenode-mdns-monitor", {
            let (announcer, stop) = (announcer.clone(), stop.clone());
            move || follow_daemon_events(monitor, &announcer, listen_ip, &stop, &logged)
        })
        .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
        Ok(Running { daemon, announcer, stop, threads: vec![browse_thread, monitor_thread] })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        lock(&self.announcer).withdraw();
        std::thread::sleep(Duration::from_millis(GOODBYE_RESEND_WAIT_MS));
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(Duration::from_millis(DAEMON_ANSWER_WAIT_MS));
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        tracing::info!("mDNS: adverts withdrawn");
    }
}

impl Announcer {
    fn new(
        daemon: ServiceDaemon,
        advertisement: Advertisement,
        own_addresses: Arc<Mutex<BTreeSet<IpAddr>>>,
    ) -> Announcer {
        let names = rules::OwnNames {
            instance: advertisement.name.clone(),
            host_label: rules::host_label(&advertisement.name),
        };
        Announcer {
            daemon,
            advertisement,
            names,
            registered: Vec::new(),
            renames: 0,
            names_changed: Instant::now(),
            own_addresses,
            withdrawn: false,
        }
    }

    /// Registers both services under the current names.
    fn register(&mut self) -> Result<(), DiscoveryError> {
        for service_type in [SERVICE_TYPE, HTTPS_SERVICE_TYPE] {
            let info = service_info(service_type, &self.advertisement, &self.names)?;
            let fullname = info.get_fullname().to_owned();
            self.daemon.register(info).map_err(DiscoveryError::Command)?;
            self.registered.push(fullname);
        }
        self.names_changed = Instant::now();
        Ok(())
    }

    /// Unregisters what is registered (mdns-sd sends the goodbye packets).
    fn unregister(&mut self) {
        for fullname in self.registered.drain(..) {
            match self.daemon.unregister(&fullname) {
                Ok(status) => {
                    if status.recv_timeout(Duration::from_millis(UNREGISTER_WAIT_MS)).is_err() {
                        tracing::debug!(%fullname, "mDNS: unregister not acknowledged in time");
                    }
                }
                Err(error) => tracing::debug!(%fullname, %error, "mDNS: cannot unregister"),
            }
        }
    }

    fn withdraw(&mut self) {
        self.withdrawn = true;
        self.unregister();
    }

    /// Follows a rename mdns-sd made itself after a clash it saw while probing.
    fn handle_name_change(&mut self, change: &mdns_sd::DnsNameChange) {
        let address = matches!(change.rr_type, mdns_sd::RRType::A | mdns_sd::RRType::AAAA);
        let ours = |name: &str| name.trim_end_matches('.').eq_ignore_ascii_case(change.original.trim_end_matches('.'));
        let current = if address {
            ours(&format!("{}.local", self.names.host_label))
        } else {
            self.registered.iter().any(|fullname| ours(fullname))
        };
        if !current {
            // About a registration we have since replaced: its names are gone.
            tracing::debug!(original = %change.original, new_name = %change.new_name, "mDNS: a stale rename; ignored");
            return;
        }
        self.names_changed = Instant::now();
        if address {
            let new_host = change.new_name.trim_end_matches('.');
            if let Some(label) = new_host.strip_suffix(".local").filter(|label| !label.is_empty()) {
                self.names.host_label = label.to_owned();
            }
        } else if let Some(instance) = table::instance_name(&change.new_name, SERVICE_TYPE) {
            self.names.instance = instance;
        }
    }

    /// Renames if our instance name shows addresses that are not ours: another node
    /// advertises under it, both probed at once and missed it, and the two adverts
    /// merged into one, so neither shows the other's identity. Both nodes see the
    /// same addresses, so one rule picks one to yield: the one that does not hold the
    /// lowest address.
    fn check_merged(
        &mut self,
        now: Instant,
        addresses: &[String],
    ) -> Option<(rules::OwnNames, rules::OwnNames, String)> {
        if self.withdrawn || self.renames >= RENAMES_MAX {
            return None;
        }
        if now.saturating_duration_since(self.names_changed) < Duration::from_millis(NAMES_SETTLE_TIME_MS) {
            return None;
        }
        let addresses: Vec<IpAddr> = addresses.iter().filter_map(|address| address.parse().ok()).collect();
        let foreign = rules::merged_advert_yields(&lock(&self.own_addresses), &addresses)?;
        self.renames += 1;
        let before = self.names.clone();
        self.names.instance = rules::next_instance_name(&self.names.instance);
        self.names.host_label = rules::next_host_label(&self.names.host_label);
        self.unregister();
        if let Err(error) = self.register() {
            tracing::warn!(%error, "mDNS: cannot advertise under the new name");
        }
        Some((before, self.names.clone(), format!("(the node at {foreign})")))
    }

    /// Renames and re-registers if another node's advert uses one of our names and
    /// the rule says we yield (`rules::name_clash`). Judged only after our names have
    /// been still for `Duration::from_millis(NAMES_SETTLE_TIME_MS)`, so mdns-sd's own probing, which renames
    /// what it catches, goes first; this fixes what it missed. Returns the names
    /// before and after, and the other node's id.
    fn check_names(
        &mut self,
        now: Instant,
        others: &[table::AdvertNames],
    ) -> Option<(rules::OwnNames, rules::OwnNames, String)> {
        if self.withdrawn || self.renames >= RENAMES_MAX {
            return None;
        }
        if now.saturating_duration_since(self.names_changed) < Duration::from_millis(NAMES_SETTLE_TIME_MS) {
            return None;
        }
        let own_identity = (self.advertisement.node_id.as_str(), self.advertisement.pin.as_str());
        let (clash, other) = others.iter().find_map(|other| {
            let other_identity = (other.node_id.as_str(), other.pin.as_str());
            rules::name_clash(&self.names, own_identity, &other.instance, &other.host, other_identity)
                .map(|clash| (clash, other))
        })?;
        self.renames += 1;
        let before = self.names.clone();
        if clash.instance {
            self.names.instance = rules::next_instance_name(&self.names.instance);
        }
        if clash.host {
            self.names.host_label = rules::next_host_label(&self.names.host_label);
        }
        self.unregister();
        if let Err(error) = self.register() {
            tracing::warn!(%error, "mDNS: cannot advertise under the new name");
        }
        Some((before, self.names.clone(), other.node_id.clone()))
    }
}

/// One-shot browse for `edgenode discover`: listens for `timeout` on every up,
/// multicast-capable interface but loopback and returns what it saw.
pub fn browse_once(timeout: Duration) -> Result<Vec<NearbyNode>, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(DiscoveryError::Daemon)?;
    let result = browse_with(&daemon, timeout);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(Duration::from_millis(DAEMON_ANSWER_WAIT_MS));
    }
    result
}

fn browse_with(daemon: &ServiceDaemon, timeout: Duration) -> Result<Vec<NearbyNode>, DiscoveryError> {
    let chosen = select_interfaces(daemon, |facts, _address| rules::interface_browsed(facts))?;
    let browser = Browser::start(daemon)?;
    wait_for_daemon(daemon)?;
    if lock(&chosen).is_empty() {
        return Err(DiscoveryError::NoInterfaces);
    }
    let mut table = NearbyTable::new(SERVICE_TYPE, None, Vec::new());
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match browser.next_event(remaining.min(Duration::from_millis(EVENT_POLL_INTERVAL_MS))) {
            Ok(ServiceEvent::ServiceResolved(service)) => {
                if let Err(rejected) = table.handle_resolved(Instant::now(), advert_from(&service)) {
                    tracing::debug!(fullname = %service.fullname, %rejected, "mDNS: advert ignored");
                }
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                table.handle_removed(&fullname);
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(table.nodes(Instant::now()))
}

/// A readable aligned table of `nodes`, or `no nodes found`.
pub fn render_table(nodes: &[NearbyNode]) -> String {
    if nodes.is_empty() {
        return "no nodes found\n".to_owned();
    }
    let header = ["NAME", "ADDRESSES", "PORT", "ID", "PIN", "NOTE"].map(str::to_owned);
    let mut rows = vec![header];
    for node in nodes {
        let mut notes = Vec::new();
        if node.paired {
            notes.push("paired");
        }
        if node.conflict {
            notes.push("CONFLICT: id claimed with another pin");
        }
        rows.push([
            node.name.clone(),
            if node.addresses.is_empty() { "-".to_owned() } else { node.addresses.join(",") },
            node.port.to_string(),
            node.node_id.clone(),
            node.pin.clone(),
            notes.join(", "),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Restricts the daemon to the (interface, address) pairs `choose` accepts, and
/// returns the names of the interfaces it accepted (filled in as the daemon asks).
fn select_interfaces(
    daemon: &ServiceDaemon,
    choose: impl Fn(rules::InterfaceFacts<'_>, IpAddr) -> bool + Send + Sync + 'static,
) -> Result<Arc<Mutex<BTreeSet<String>>>, DiscoveryError> {
    let chosen = Arc::new(Mutex::new(BTreeSet::new()));
    let predicate = IfPredicate::new({
        let chosen = chosen.clone();
        move |interface| {
            let flags = os_interface_flags(&interface.name);
            let facts = rules::InterfaceFacts {
                name: &interface.name,
                up: flags.is_none_or(|flags| flags & IFF_UP != 0),
                loopback: interface.is_loopback() || flags.is_some_and(|flags| flags & IFF_LOOPBACK != 0),
                multicast: flags.is_none_or(|flags| flags & IFF_MULTICAST != 0),
            };
            let accepted = choose(facts, interface.ip());
            if accepted {
                lock(&chosen).insert(interface.name.clone());
            }
            accepted
        }
    });
    // Selections apply in order, the last match wins: everything off, then ours on.
    daemon.disable_interface(IfKind::All).map_err(DiscoveryError::Command)?;
    daemon.enable_interface(IfKind::Predicate(predicate)).map_err(DiscoveryError::Command)?;
    Ok(chosen)
}

/// Returns once the daemon has handled every command sent before (it answers in order).
fn wait_for_daemon(daemon: &ServiceDaemon) -> Result<(), DiscoveryError> {
    let status = daemon.status().map_err(DiscoveryError::Command)?;
    status
        .recv_timeout(Duration::from_millis(DAEMON_ANSWER_WAIT_MS))
        .map(|_| ())
        .map_err(|_| DiscoveryError::Unresponsive(Duration::from_millis(DAEMON_ANSWER_WAIT_MS)))
}

fn service_info(
    service_type: &str,
    advertisement: &Advertisement,
    names: &rules::OwnNames,
) -> Result<ServiceInfo, DiscoveryError> {
    let host = format!("{}.local.", names.host_label);
    let properties = rules::txt_properties(&advertisement.node_id, &advertisement.pin, &advertisement.region);
    let all_addresses = advertisement.listen_ip.is_unspecified();
    let addresses: Vec<IpAddr> = if all_addresses { Vec::new() } else { vec![advertisement.listen_ip] };
    let info =
        ServiceInfo::new(service_type, &names.instance, &host, &addresses[..], advertisement.port, &properties[..])
            .map_err(DiscoveryError::Advertisement)?;
    // With all addresses, mdns-sd fills in those of the chosen interfaces and
    // re-announces when they change.
    Ok(if all_addresses { info.enable_addr_auto() } else { info })
}

fn advert_from(service: &mdns_sd::ResolvedService) -> Advert {
    Advert {
        fullname: service.fullname.clone(),
        host: service.host.clone(),
        port: service.port,
        addresses: service.addresses.iter().map(ToString::to_string).collect(),
        txt: service
            .txt_properties
            .iter()
            .map(|property| (property.key().to_owned(), property.val_str().to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// The daemon's subscriptions: `_edgenode._udp`, and a cache-only one to `_https._tcp`.
///
/// Why the second: mdns-sd keeps only records that answer a question it asked. Our
/// two services share the host's A/AAAA records, and RFC 6762's once-a-second rule
/// puts those in whichever announcement goes out first, so they often come only with
/// the `_https._tcp` one; answers to a direct query are then held back for a second.
/// Subscribing to `_https._tcp` (no queries sent) keeps those address records, and
/// `_edgenode._udp` adverts resolve at once instead of seconds later.
struct Browser {
    events: Receiver<ServiceEvent>,
    https_events: Receiver<ServiceEvent>,
}

impl Browser {
    fn start(daemon: &ServiceDaemon) -> Result<Browser, DiscoveryError> {
        let events = daemon.browse(SERVICE_TYPE).map_err(DiscoveryError::Command)?;
        let https_events = daemon.browse_cache(HTTPS_SERVICE_TYPE).map_err(DiscoveryError::Command)?;
        Ok(Browser { events, https_events })
    }

    /// The next `_edgenode._udp` event within `timeout`. The `_https._tcp` events are
    /// dropped unread, but read: mdns-sd ends a subscription whose channel is full.
    fn next_event(&self, timeout: Duration) -> Result<ServiceEvent, RecvTimeoutError> {
        let event = self.events.recv_timeout(timeout);
        self.https_events.try_iter().for_each(drop);
        event
    }
}

fn follow_browse_events(
    browser: Browser,
    nearby: &NearbyHandle,
    announcer: &Mutex<Announcer>,
    stop: &AtomicBool,
    logged: &LogOnce,
) {
    while !stop.load(Ordering::Relaxed) {
        match browser.next_event(Duration::from_millis(EVENT_POLL_INTERVAL_MS)) {
            Ok(event) => handle_browse_event(event, nearby, logged),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let instance = lock(announcer).names.instance.clone();
        let (others, under_our_name) = {
            let table = lock(&nearby.table);
            (table.other_adverts(), table.addresses_under(&instance))
        };
        let mut announcer = lock(announcer);
        let renamed = announcer
            .check_names(Instant::now(), &others)
            .or_else(|| announcer.check_merged(Instant::now(), &under_our_name));
        drop(announcer);
        if let Some((before, after, other_node_id)) = renamed {
            tracing::warn!(
                %other_node_id, name = %after.instance, host = %format!("{}.local", after.host_label),
                "mDNS: another node also uses our name ({} on {}.local); advertising under a new one",
                before.instance, before.host_label
            );
        }
    }
}

fn handle_browse_event(event: ServiceEvent, nearby: &NearbyHandle, logged: &LogOnce) {
    match event {
        ServiceEvent::ServiceResolved(service) => {
            let advert = advert_from(&service);
            let addresses = advert.addresses.clone();
            let outcome = lock(&nearby.table).handle_resolved(Instant::now(), advert);
            match outcome {
                Ok(sighting) => {
                    if sighting.seen == Seen::NewNode {
                        tracing::info!(
                            node_id = %sighting.node_id, name = %sighting.name, ?addresses,
                            port = service.port, "mDNS: nearby node seen"
                        );
                    }
                    if sighting.conflict {
                        logged.warn(&format!("conflict {}", sighting.node_id), || {
                            tracing::warn!(
                                node_id = %sighting.node_id, name = %sighting.name,
                                "mDNS: this node id is advertised with more than one pin; \
                                 both adverts are listed as conflicting and neither is trusted"
                            )
                        });
                    }
                }
                Err(rejected) => tracing::debug!(fullname = %service.fullname, %rejected, "mDNS: advert ignored"),
            }
        }
        ServiceEvent::ServiceRemoved(_, fullname) if lock(&nearby.table).handle_removed(&fullname) => {
            tracing::info!(%fullname, "mDNS: nearby node gone");
        }
        _ => {}
    }
}

fn follow_daemon_events(
    events: Receiver<DaemonEvent>,
    announcer: &Mutex<Announcer>,
    listen_ip: IpAddr,
    stop: &AtomicBool,
    logged: &LogOnce,
) {
    while !stop.load(Ordering::Relaxed) {
        let event = match events.recv_timeout(Duration::from_millis(EVENT_POLL_INTERVAL_MS)) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match event {
            DaemonEvent::NameChange(change) => {
                lock(announcer).handle_name_change(&change);
                logged.warn(&format!("rename {} {}", change.original, change.new_name), || {
                    tracing::warn!(
                        original = %change.original, new_name = %change.new_name, interface = %change.intf_name,
                        "mDNS: the name is already taken on the link; advertising under the new name"
                    )
                });
            }
            DaemonEvent::Error(error) => {
                let message = error.to_string();
                logged.warn(
                    &format!("error {message}"),
                    || tracing::warn!(%message, "mDNS failed; discovery may be incomplete, the node keeps serving"),
                );
            }
            DaemonEvent::IpAdd(address) if rules::address_served(listen_ip, address) => {
                tracing::info!(%address, "mDNS: address added; announcing it");
            }
            DaemonEvent::IpDel(address) if rules::address_served(listen_ip, address) => {
                tracing::info!(%address, "mDNS: address removed; no longer announced");
            }
            _ => {}
        }
    }
}

/// Remembers which problems were logged, so each is logged once.
#[derive(Clone, Default)]
struct LogOnce {
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl LogOnce {
    fn warn(&self, key: &str, log: impl FnOnce()) {
        let mut seen = lock(&self.seen);
        if seen.contains(key) {
            return;
        }
        if seen.len() < LOGGED_ONCE_MAX {
            seen.insert(key.to_owned());
        }
        drop(seen);
        log();
    }
}

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_MULTICAST: u32 = 0x1000;

/// The interface flags Linux shows in `/sys/class/net/<name>/flags`; `None` where
/// there is no such file (other systems): the rules then trust mdns-sd's own filter.
fn os_interface_flags(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DiscoveryError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|error| DiscoveryError::Daemon(mdns_sd::Error::Msg(format!("cannot start thread {name}: {error}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, conflict: bool, paired: bool) -> NearbyNode {
        NearbyNode {
            node_id: format!("id-{name}"),
            name: name.to_owned(),
            addresses: vec!["10.213.0.11".into(), "fe80::1%eth0".into()],
            port: 8443,
            pin: format!("sha256/{name}"),
            region: String::new(),
            last_seen_ms_ago: 10,
            paired,
            conflict,
        }
    }

    #[test]
    fn the_table_says_when_nothing_was_found() {
        assert_eq!(render_table(&[]), "no nodes found\n");
    }

    #[test]
    fn the_table_is_aligned_and_flags_conflicts() {
        let table = render_table(&[node("kitchen", false, true), node("hall-of-fame", true, false)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME          ADDRESSES"), "{table}");
        let column = |line: &str, word: &str| line.find(word).unwrap_or_else(|| panic!("{word} in {line}"));
        assert_eq!(column(lines[0], "PORT"), column(lines[1], "8443"));
        assert_eq!(column(lines[0], "PIN"), column(lines[2], "sha256/"));
        assert!(lines[1].ends_with("paired") && lines[2].contains("CONFLICT"), "{table}");
        assert!(lines.iter().all(|line| !line.ends_with(' ')));
    }

    #[test]
    fn the_advertisement_is_a_valid_mdns_service() {
        let advertisement = Advertisement {
            name: "Kitchen node".into(),
            node_id: "0123456789abcdef".into(),
            pin: "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
            region: "earth/eu/nl".into(),
            port: 8443,
            listen_ip: "0.0.0.0".parse().unwrap(),
            interfaces: Vec::new(),
            siblings_pins: Vec::new(),
        };
        let names = rules::OwnNames { instance: "Kitchen node".into(), host_label: "kitchen-node".into() };
        let info = service_info(SERVICE_TYPE, &advertisement, &names).expect("a valid service");
        assert_eq!(info.get_fullname(), "Kitchen node._edgenode._udp.local.");
        assert_eq!(info.get_hostname(), "kitchen-node.local.");
        assert_eq!(info.get_port(), 8443);
        assert!(info.is_addr_auto());
        assert_eq!(info.get_property_val_str("id"), Some("0123456789abcdef"));
        assert_eq!(info.get_property_val_str("v"), Some("1"));

        let pinned = Advertisement { listen_ip: "10.213.0.11".parse().unwrap(), ..advertisement };
        let info = service_info(HTTPS_SERVICE_TYPE, &pinned, &names).expect("a valid service");
        assert!(!info.is_addr_auto());
        assert_eq!(info.get_addresses_v4().into_iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.213.0.11"]);
    }
}
