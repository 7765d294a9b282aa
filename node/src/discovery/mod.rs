//! mDNS/DNS-SD discovery: the node advertises `_edgenode._udp` (QUIC) and
//! `_https._tcp` (HTTPS) on its port, with host `<name>.local`, and browses
//! `_edgenode._udp` into a table of nearby nodes. This file is the glue to mdns-sd
//! (its daemon thread, event threads, OS interface flags); the decisions are sans-IO
//! in `rules` (what and where we announce) and `table` (what we saw).
//!
//! Discovery is an address hint only: identity is always checked against a pinned
//! key, and an advert is never trusted for being on the link. mDNS failing (no
//! multicast, no interface) is logged once; the node keeps serving without it.

pub mod rules;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
const DAEMON_ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long `shutdown` waits for each unregister to be acknowledged.
const UNREGISTER_WAIT: Duration = Duration::from_secs(1);
/// mdns-sd sends each goodbye twice, the second 120 ms after the first: wait for it.
const GOODBYE_RESEND_WAIT: Duration = Duration::from_millis(300);
/// How often the event threads look at their stop flag.
const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(250);
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
    instance_name: Arc<Mutex<String>>,
}

/// A cheap, cloneable view of the nearby table, for whoever answers
/// `GET /api/v1/node/nearby` while `Discovery` itself stays with `main` for shutdown.
#[derive(Clone)]
pub struct NearbyHandle {
    table: Arc<Mutex<NearbyTable>>,
}

struct Running {
    daemon: ServiceDaemon,
    /// Full names we registered (before any rename: mdns-sd keeps them as keys).
    registered: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
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
        let instance_name = Arc::new(Mutex::new(advertisement.name.clone()));
        let running = match Running::start(&advertisement, &nearby, &instance_name) {
            Ok(running) => Some(running),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "mDNS is off: this node is not advertised and sees no nearby nodes; it keeps serving"
                );
                None
            }
        };
        Discovery { running, nearby, instance_name }
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
        lock(&self.instance_name).clone()
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
    fn start(
        advertisement: &Advertisement,
        nearby: &NearbyHandle,
        instance_name: &Arc<Mutex<String>>,
    ) -> Result<Running, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Daemon)?;
        match Running::configure(daemon.clone(), advertisement, nearby, instance_name) {
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
        instance_name: &Arc<Mutex<String>>,
    ) -> Result<Running, DiscoveryError> {
        let configured = advertisement.interfaces.clone();
        let listen_ip = advertisement.listen_ip;
        let chosen = select_interfaces(&daemon, move |facts, address| {
            rules::interface_selected(&configured, facts) && rules::address_served(listen_ip, address)
        })?;
        let monitor = daemon.monitor().map_err(DiscoveryError::Command)?;
        let browse = daemon.browse(SERVICE_TYPE).map_err(DiscoveryError::Command)?;
        let mut registered = Vec::new();
        for service_type in [SERVICE_TYPE, HTTPS_SERVICE_TYPE] {
            let info = service_info(service_type, advertisement)?;
            registered.push(info.get_fullname().to_owned());
            daemon.register(info).map_err(DiscoveryError::Command)?;
        }
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

        let stop = Arc::new(AtomicBool::new(false));
        let browse_thread = spawn_named("edgenode-mdns-browse", {
            let (nearby, stop, logged) = (nearby.clone(), stop.clone(), logged.clone());
            move || follow_browse_events(browse, &nearby, &stop, &logged)
        })?;
        let monitor_thread = spawn_named("edgenode-mdns-monitor", {
            let (instance_name, stop) = (instance_name.clone(), stop.clone());
            move || follow_daemon_events(monitor, &instance_name, listen_ip, &stop, &logged)
        })?;
        Ok(Running { daemon, registered, stop, threads: vec![browse_thread, monitor_thread] })
    }

    fn stop(self) {
        for fullname in &self.registered {
            match self.daemon.unregister(fullname) {
                Ok(status) => {
                    if status.recv_timeout(UNREGISTER_WAIT).is_err() {
                        tracing::debug!(%fullname, "mDNS: unregister not acknowledged in time");
                    }
                }
                Err(error) => tracing::debug!(%fullname, %error, "mDNS: cannot unregister"),
            }
        }
        std::thread::sleep(GOODBYE_RESEND_WAIT);
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(DAEMON_ANSWER_WAIT);
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        tracing::info!("mDNS: adverts withdrawn");
    }
}

/// One-shot browse for `edgenode discover`: listens for `timeout` on every up,
/// multicast-capable interface but loopback and returns what it saw.
pub fn browse_once(timeout: Duration) -> Result<Vec<NearbyNode>, DiscoveryError> {
    let daemon = ServiceDaemon::new().map_err(DiscoveryError::Daemon)?;
    let result = browse_with(&daemon, timeout);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(DAEMON_ANSWER_WAIT);
    }
    result
}

fn browse_with(daemon: &ServiceDaemon, timeout: Duration) -> Result<Vec<NearbyNode>, DiscoveryError> {
    let chosen = select_interfaces(daemon, |facts, _address| rules::interface_browsed(facts))?;
    let events = daemon.browse(SERVICE_TYPE).map_err(DiscoveryError::Command)?;
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
        match events.recv_timeout(remaining) {
            Ok(ServiceEvent::ServiceResolved(service)) => {
                if let Err(rejected) = table.handle_resolved(Instant::now(), advert_from(&service)) {
                    tracing::debug!(fullname = %service.fullname, %rejected, "mDNS: advert ignored");
                }
            }
            Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                table.handle_removed(&fullname);
            }
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => break,
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
    status.recv_timeout(DAEMON_ANSWER_WAIT).map(|_| ()).map_err(|_| DiscoveryError::Unresponsive(DAEMON_ANSWER_WAIT))
}

fn service_info(service_type: &str, advertisement: &Advertisement) -> Result<ServiceInfo, DiscoveryError> {
    let host = format!("{}.local.", rules::host_label(&advertisement.name));
    let properties = rules::txt_properties(&advertisement.node_id, &advertisement.pin, &advertisement.region);
    let all_addresses = advertisement.listen_ip.is_unspecified();
    let addresses: Vec<IpAddr> = if all_addresses { Vec::new() } else { vec![advertisement.listen_ip] };
    let info =
        ServiceInfo::new(service_type, &advertisement.name, &host, &addresses[..], advertisement.port, &properties[..])
            .map_err(DiscoveryError::Advertisement)?;
    // With all addresses, mdns-sd fills in those of the chosen interfaces and
    // re-announces when they change.
    Ok(if all_addresses { info.enable_addr_auto() } else { info })
}

fn advert_from(service: &mdns_sd::ResolvedService) -> Advert {
    Advert {
        fullname: service.fullname.clone(),
        port: service.port,
        addresses: service.addresses.iter().map(ToString::to_string).collect(),
        txt: service
            .txt_properties
            .iter()
            .map(|property| (property.key().to_owned(), property.val_str().to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn follow_browse_events(events: Receiver<ServiceEvent>, nearby: &NearbyHandle, stop: &AtomicBool, logged: &LogOnce) {
    while !stop.load(Ordering::Relaxed) {
        let event = match events.recv_timeout(EVENT_POLL_INTERVAL) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
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
}

fn follow_daemon_events(
    events: Receiver<DaemonEvent>,
    instance_name: &Mutex<String>,
    listen_ip: IpAddr,
    stop: &AtomicBool,
    logged: &LogOnce,
) {
    while !stop.load(Ordering::Relaxed) {
        let event = match events.recv_timeout(EVENT_POLL_INTERVAL) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match event {
            DaemonEvent::NameChange(change) => {
                if let Some(new_instance) = table::instance_name(&change.new_name, SERVICE_TYPE) {
                    *lock(instance_name) = new_instance;
                }
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

/// Locks a mutex; a panic elsewhere while holding it leaves the data usable here
/// (every writer keeps the table consistent between statements).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let info = service_info(SERVICE_TYPE, &advertisement).expect("a valid service");
        assert_eq!(info.get_fullname(), "Kitchen node._edgenode._udp.local.");
        assert_eq!(info.get_hostname(), "kitchen-node.local.");
        assert_eq!(info.get_port(), 8443);
        assert!(info.is_addr_auto());
        assert_eq!(info.get_property_val_str("id"), Some("0123456789abcdef"));
        assert_eq!(info.get_property_val_str("v"), Some("1"));

        let pinned = Advertisement { listen_ip: "10.213.0.11".parse().unwrap(), ..advertisement };
        let info = service_info(HTTPS_SERVICE_TYPE, &pinned).expect("a valid service");
        assert!(!info.is_addr_auto());
        assert_eq!(info.get_addresses_v4().into_iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.213.0.11"]);
    }
}
