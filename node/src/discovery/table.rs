//! The table of nearby nodes, sans-IO: resolved adverts go in with the time they were
//! seen, a snapshot comes out. Nothing here is trusted because it was advertised: an
//! advert is an address hint, and two adverts claiming one node id with different
//! pins are both shown, flagged `conflict`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::rules::{PROTOCOL_VERSION, TXT_KEY_NODE_ID, TXT_KEY_PIN, TXT_KEY_REGION, TXT_KEY_VERSION};

/// Adverts kept at once; past this the one seen longest ago is dropped.
pub const ADVERTS_MAX: usize = 256;
/// Addresses kept per advert.
pub const ADDRESSES_PER_ADVERT_MAX: usize = 16;
/// An advert not heard of for this long is dropped. mdns-sd reports removals itself
/// (goodbye packets, expired records); this only bounds what a missed one costs.
/// Longer than the longest record TTL mdns-sd uses (4500 s).
pub const ADVERT_SILENCE_MAX_MS: u64 = (80 * 60) * 1000;
pub const NODE_ID_BYTES_MAX: usize = 128;
pub const PIN_BYTES_MAX: usize = 128;
pub const REGION_BYTES_MAX: usize = 255;
pub const INSTANCE_NAME_BYTES_MAX: usize = 255;

/// One node seen on the link, as `GET /api/v1/node/nearby` and `edgenode discover`
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NearbyNode {
    pub node_id: String,
    /// The mDNS instance name (the node's name, or `name (2)` after a clash).
    pub name: String,
    pub addresses: Vec<String>,
    /// The QUIC (UDP) port; HTTPS (TCP) is on the same number.
    pub port: u16,
    pub pin: String,
    pub region: String,
    pub last_seen_ms_ago: u64,
    /// The pin is one of a paired sibling's (`[peers] siblings`).
    pub paired: bool,
    /// Another advert (or this node itself) claims the same node id with a different pin.
    pub conflict: bool,
}

/// A resolved `_edgenode._udp` advert, as the glue hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// `<instance>._edgenode._udp.local.`, the key of the advert on the link.
    pub fullname: String,
    /// The SRV target, e.g. `kitchen.local.`.
    pub host: String,
    pub port: u16,
    pub addresses: Vec<String>,
    /// TXT key/value pairs; a key without value has an empty one.
    pub txt: BTreeMap<String, String>,
}

/// Why an advert was not taken into the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("`{fullname}` is not an instance of {service_type}")]
    OtherService { fullname: String, service_type: String },
    #[error("TXT key `{0}` is missing or empty")]
    MissingKey(&'static str),
    #[error("protocol version `{0}` is not ours ({PROTOCOL_VERSION})")]
    OtherVersion(String),
    #[error("`{0}` is longer than this node accepts")]
    TooLong(&'static str),
}

/// What a sighting changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A node (id and pin) that was not in the table.
    NewNode,
    /// An advert already known, with new content or just heard again.
    Known,
    /// Our own advert coming back to us.
    Ourselves,
}

/// Outcome of `NearbyTable::handle_resolved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub seen: Seen,
    pub node_id: String,
    /// The instance name (unescaped).
    pub name: String,
    /// The node id is now claimed with more than one pin.
    pub conflict: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    node_id: String,
    pin: String,
    host: String,
    region: String,
    addresses: Vec<String>,
    port: u16,
    last_seen: Instant,
}

/// The names and identity of an advert from another node, for name-clash checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertNames {
    pub instance: String,
    /// The SRV target, e.g. `kitchen.local.`.
    pub host: String,
    pub node_id: String,
    pub pin: String,
}

/// The nearby nodes, keyed by advert full name.
#[derive(Debug)]
pub struct NearbyTable {
    service_type: String,
    /// Our own node id and pin: adverts with both are ourselves and not listed.
    own: Option<(String, String)>,
    sibling_pins: BTreeSet<String>,
    adverts: BTreeMap<String, Entry>,
}

impl NearbyTable {
    /// `service_type` like `_edgenode._udp.local.`; `own` is `(node_id, pin)` of this
    /// node, `None` for a browser that is no node (`edgenode discover`).
    pub fn new(service_type: &str, own: Option<(String, String)>, sibling_pins: Vec<String>) -> NearbyTable {
        NearbyTable {
            service_type: service_type.to_owned(),
            own,
            sibling_pins: sibling_pins.into_iter().collect(),
            adverts: BTreeMap::new(),
        }
    }

    /// Takes in a resolved advert seen at `now`.
    pub fn handle_resolved(&mut self, now: Instant, advert: Advert) -> Result<Sighting, Rejected> {
        let name = instance_name(&advert.fullname, &self.service_type).ok_or_else(|| Rejected::OtherService {
            fullname: advert.fullname.clone(),
            service_type: self.service_type.clone(),
        })?;
        let field = |key: &'static str, bytes_max: usize| -> Result<String, Rejected> {
            let value = advert.txt.get(key).map(String::as_str).unwrap_or("");
            if value.is_empty() {
                return Err(Rejected::MissingKey(key));
            }
            if value.len() > bytes_max {
                return Err(Rejected::TooLong(key));
            }
            Ok(value.to_owned())
        };
        let version = field(TXT_KEY_VERSION, 16)?;
        if version != PROTOCOL_VERSION {
            return Err(Rejected::OtherVersion(version));
        }
        let node_id = field(TXT_KEY_NODE_ID, NODE_ID_BYTES_MAX)?;
        let pin = field(TXT_KEY_PIN, PIN_BYTES_MAX)?;
        let region = advert.txt.get(TXT_KEY_REGION).cloned().unwrap_or_default();
        if region.len() > REGION_BYTES_MAX {
            return Err(Rejected::TooLong(TXT_KEY_REGION));
        }
        if name.len() > INSTANCE_NAME_BYTES_MAX {
            return Err(Rejected::TooLong("instance name"));
        }
        let mut addresses = advert.addresses;
        addresses.sort();
        addresses.dedup();
        addresses.truncate(ADDRESSES_PER_ADVERT_MAX);

        let is_ourselves = self.is_ourselves(&node_id, &pin);
        let known_node = self.adverts.values().any(|entry| entry.node_id == node_id && entry.pin == pin);
        let entry = Entry {
            name: name.clone(),
            node_id: node_id.clone(),
            pin: pin.clone(),
            host: advert.host,
            region,
            addresses,
            port: advert.port,
            last_seen: now,
        };
        if !self.adverts.contains_key(&advert.fullname) && self.adverts.len() >= ADVERTS_MAX {
            self.drop_longest_silent();
        }
        self.adverts.insert(advert.fullname, entry);
        let seen = if is_ourselves {
            Seen::Ourselves
        } else if known_node {
            Seen::Known
        } else {
            Seen::NewNode
        };
        let conflict = self.pins_claiming(&node_id).len() > 1;
        Ok(Sighting { seen, node_id, name, conflict })
    }

    /// The advert `fullname` said goodbye or its records expired. Returns whether it was known.
    pub fn handle_removed(&mut self, fullname: &str) -> bool {
        self.adverts.remove(fullname).is_some()
    }

    /// Drops adverts silent for longer than `Duration::from_millis(ADVERT_SILENCE_MAX_MS)`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.adverts.len();
        self.adverts.retain(|_, entry| {
            now.saturating_duration_since(entry.last_seen) <= Duration::from_millis(ADVERT_SILENCE_MAX_MS)
        });
        before - self.adverts.len()
    }

    /// The nearby nodes at `now`, ourselves excluded: one row per (node id, pin),
    /// sorted by name. Adverts of one node under several names (a rename after a
    /// clash, several interfaces) are merged, with the newest name.
    pub fn nodes(&self, now: Instant) -> Vec<NearbyNode> {
        let mut rows: BTreeMap<(&str, &str), NearbyNode> = BTreeMap::new();
        let mut newest: BTreeMap<(&str, &str), Instant> = BTreeMap::new();
        for entry in self.adverts.values() {
            if self.is_ourselves(&entry.node_id, &entry.pin) {
                continue;
            }
            let key = (entry.node_id.as_str(), entry.pin.as_str());
            let last_seen_ms_ago = now.saturating_duration_since(entry.last_seen).as_millis() as u64;
            let row = rows.entry(key).or_insert_with(|| NearbyNode {
                node_id: entry.node_id.clone(),
                name: entry.name.clone(),
                addresses: Vec::new(),
                port: entry.port,
                pin: entry.pin.clone(),
                region: entry.region.clone(),
                last_seen_ms_ago,
                paired: self.sibling_pins.contains(&entry.pin),
                conflict: self.pins_claiming(&entry.node_id).len() > 1,
            });
            row.addresses.extend(entry.addresses.iter().cloned());
            let newest_seen = newest.entry(key).or_insert(entry.last_seen);
            if entry.last_seen > *newest_seen {
                *newest_seen = entry.last_seen;
                row.name = entry.name.clone();
                row.port = entry.port;
                row.region = entry.region.clone();
                row.last_seen_ms_ago = last_seen_ms_ago;
            }
        }
        let mut nodes: Vec<NearbyNode> = rows.into_values().collect();
        for node in &mut nodes {
            node.addresses.sort();
            node.addresses.dedup();
        }
        nodes.sort_by(|a, b| (&a.name, &a.node_id, &a.pin).cmp(&(&b.name, &b.node_id, &b.pin)));
        nodes
    }

    /// Every address advertised under instance name `instance`, whoever's TXT came
    /// with them: two nodes under one name merge into one advert.
    pub fn addresses_under(&self, instance: &str) -> Vec<String> {
        self.adverts
            .values()
            .filter(|entry| entry.name.eq_ignore_ascii_case(instance))
            .flat_map(|entry| entry.addresses.iter().cloned())
            .collect()
    }

    /// Names and identities of every advert but our own.
    pub fn other_adverts(&self) -> Vec<AdvertNames> {
        self.adverts
            .values()
            .filter(|entry| !self.is_ourselves(&entry.node_id, &entry.pin))
            .map(|entry| AdvertNames {
                instance: entry.name.clone(),
                host: entry.host.clone(),
                node_id: entry.node_id.clone(),
                pin: entry.pin.clone(),
            })
            .collect()
    }

    /// How many adverts the table holds (ourselves included).
    pub fn len(&self) -> usize {
        self.adverts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adverts.is_empty()
    }

    fn is_ourselves(&self, node_id: &str, pin: &str) -> bool {
        self.own.as_ref().is_some_and(|(own_id, own_pin)| own_id == node_id && own_pin == pin)
    }

    /// Every pin claiming `node_id`: the adverts' and, for our own id, ours.
    fn pins_claiming(&self, node_id: &str) -> BTreeSet<&str> {
        let mut pins: BTreeSet<&str> =
            self.adverts.values().filter(|entry| entry.node_id == node_id).map(|entry| entry.pin.as_str()).collect();
        if let Some((own_id, own_pin)) = &self.own {
            if own_id == node_id {
                pins.insert(own_pin);
            }
        }
        pins
    }

    fn drop_longest_silent(&mut self) {
        let oldest = self.adverts.iter().min_by_key(|(_, entry)| entry.last_seen).map(|(fullname, _)| fullname.clone());
        if let Some(fullname) = oldest {
            self.adverts.remove(&fullname);
        }
    }
}

/// The instance part of `<instance>.<service_type>`, with DNS escapes (`\.`, `\\`,
/// `\DDD`) undone; `None` if `fullname` is not of that service type.
pub fn instance_name(fullname: &str, service_type: &str) -> Option<String> {
    let fullname_lower = fullname.to_ascii_lowercase();
    let suffix = format!(".{}", service_type.to_ascii_lowercase());
    if !fullname_lower.ends_with(&suffix) || fullname.len() == suffix.len() {
        return None;
    }
    let escaped = &fullname[..fullname.len() - suffix.len()];
    let mut name = Vec::with_capacity(escaped.len());
    let bytes = escaped.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'\\' && index + 1 < bytes.len() {
            let decimal = bytes.get(index + 1..index + 4).filter(|digits| digits.iter().all(u8::is_ascii_digit));
            match decimal.and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u8>().ok()) {
                Some(value) => {
                    name.push(value);
                    index += 4;
                }
                None => {
                    name.push(bytes[index + 1]);
                    index += 2;
                }
            }
        } else {
            name.push(byte);
            index += 1;
        }
    }
    Some(String::from_utf8_lossy(&name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "_edgenode._udp.local.";
    const OWN_ID: &str = "00000000000000000000000000000001";
    const OWN_PIN: &str = "sha256/own";

    fn advert(instance: &str, node_id: &str, pin: &str, addresses: &[&str]) -> Advert {
        let txt = [("id", node_id), ("pin", pin), ("v", "1"), ("region", "earth/eu")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Advert {
            fullname: format!("{instance}.{SERVICE}"),
            host: format!("{instance}.local."),
            port: 8443,
            addresses: addresses.iter().map(|address| address.to_string()).collect(),
            txt,
        }
    }

    fn table_with_sibling(sibling_pin: &str) -> NearbyTable {
        NearbyTable::new(SERVICE, Some((OWN_ID.to_owned(), OWN_PIN.to_owned())), vec![sibling_pin.to_owned()])
    }

    fn names(nodes: &[NearbyNode]) -> Vec<&str> {
        nodes.iter().map(|node| node.name.as_str()).collect()
    }

    #[test]
    fn a_resolved_advert_becomes_a_nearby_node() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/kitchen");
        let sighting = table.handle_resolved(t0, advert("kitchen", "id-k", "sha256/kitchen", &["10.0.0.2"])).unwrap();
        assert_eq!(sighting.seen, Seen::NewNode);
        assert!(!sighting.conflict);
        let nodes = table.nodes(t0 + Duration::from_millis(1500));
        assert_eq!(
            nodes,
            vec![NearbyNode {
                node_id: "id-k".into(),
                name: "kitchen".into(),
                addresses: vec!["10.0.0.2".into()],
                port: 8443,
                pin: "sha256/kitchen".into(),
                region: "earth/eu".into(),
                last_seen_ms_ago: 1500,
                paired: true,
                conflict: false,
            }]
        );
    }

    #[test]
    fn the_names_of_other_adverts_are_listed_for_clash_checks() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        table.handle_resolved(t0, advert("me", OWN_ID, OWN_PIN, &[])).unwrap();
        table.handle_resolved(t0, advert("twin", "id-t", "sha256/t", &[])).unwrap();
        let others = table.other_adverts();
        assert_eq!(
            others,
            vec![AdvertNames {
                instance: "twin".into(),
                host: "twin.local.".into(),
                node_id: "id-t".into(),
                pin: "sha256/t".into()
            }]
        );
    }

    #[test]
    fn nearby_nodes_round_trip_through_json() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/kitchen");
        table.handle_resolved(t0, advert("kitchen", "id-k", "sha256/kitchen", &["10.0.0.2", "fe80::2%eth0"])).unwrap();
        let nodes = table.nodes(t0);
        let json = serde_json::to_value(&nodes).unwrap();
        assert_eq!(json[0]["last_seen_ms_ago"], 0);
        assert_eq!(serde_json::from_value::<Vec<NearbyNode>>(json).unwrap(), nodes);
    }

    #[test]
    fn our_own_advert_is_not_listed() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        let sighting = table.handle_resolved(t0, advert("me", OWN_ID, OWN_PIN, &["10.0.0.1"])).unwrap();
        assert_eq!(sighting.seen, Seen::Ourselves);
        table.handle_resolved(t0, advert("hall", "id-h", "sha256/hall", &["10.0.0.3"])).unwrap();
        assert_eq!(names(&table.nodes(t0)), ["hall"]);
    }

    #[test]
    fn two_pins_for_one_id_are_both_shown_and_flagged() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/real");
        table.handle_resolved(t0, advert("kitchen", "id-k", "sha256/real", &["10.0.0.2"])).unwrap();
        let sighting = table.handle_resolved(t0, advert("rogue", "id-k", "sha256/fake", &["10.0.0.66"])).unwrap();
        assert!(sighting.conflict);
        let nodes = table.nodes(t0);
        assert_eq!(names(&nodes), ["kitchen", "rogue"]);
        assert!(nodes.iter().all(|node| node.conflict));
        assert!(nodes[0].paired && !nodes[1].paired, "{nodes:?}");
    }

    #[test]
    fn an_advert_claiming_our_id_with_another_pin_is_shown_as_a_conflict() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        table.handle_resolved(t0, advert("me", OWN_ID, OWN_PIN, &["10.0.0.1"])).unwrap();
        let sighting = table.handle_resolved(t0, advert("impostor", OWN_ID, "sha256/fake", &["10.0.0.66"])).unwrap();
        assert!(sighting.conflict);
        let nodes = table.nodes(t0);
        assert_eq!(names(&nodes), ["impostor"]);
        assert!(nodes[0].conflict && !nodes[0].paired);
    }

    #[test]
    fn the_conflict_clears_when_the_impostor_leaves() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        table.handle_resolved(t0, advert("kitchen", "id-k", "sha256/real", &[])).unwrap();
        table.handle_resolved(t0, advert("rogue", "id-k", "sha256/fake", &[])).unwrap();
        assert!(table.handle_removed(&format!("rogue.{SERVICE}")));
        assert!(!table.handle_removed(&format!("rogue.{SERVICE}")));
        let nodes = table.nodes(t0);
        assert_eq!(names(&nodes), ["kitchen"]);
        assert!(!nodes[0].conflict);
    }

    #[test]
    fn one_node_under_two_names_is_one_row_with_the_newest_name() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        table.handle_resolved(t0, advert("twin", "id-t", "sha256/t", &["10.0.0.2"])).unwrap();
        let sighting = table
            .handle_resolved(t0 + Duration::from_secs(2), advert("twin (2)", "id-t", "sha256/t", &["fe80::2"]))
            .unwrap();
        assert_eq!(sighting.seen, Seen::Known);
        assert!(!sighting.conflict);
        let nodes = table.nodes(t0 + Duration::from_secs(3));
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name, "twin (2)");
        assert_eq!(nodes[0].addresses, ["10.0.0.2", "fe80::2"]);
        assert_eq!(nodes[0].last_seen_ms_ago, 1000);
    }

    #[test]
    fn a_re_resolved_advert_replaces_its_addresses_and_refreshes_last_seen() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        table.handle_resolved(t0, advert("hall", "id-h", "sha256/h", &["10.0.0.3"])).unwrap();
        table.handle_resolved(t0 + Duration::from_secs(10), advert("hall", "id-h", "sha256/h", &["10.0.0.4"])).unwrap();
        let nodes = table.nodes(t0 + Duration::from_secs(10));
        assert_eq!(nodes[0].addresses, ["10.0.0.4"]);
        assert_eq!(nodes[0].last_seen_ms_ago, 0);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn silent_adverts_expire() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        table.handle_resolved(t0, advert("old", "id-o", "sha256/o", &[])).unwrap();
        table
            .handle_resolved(t0 + Duration::from_millis(ADVERT_SILENCE_MAX_MS), advert("new", "id-n", "sha256/n", &[]))
            .unwrap();
        assert_eq!(table.expire(t0 + Duration::from_millis(ADVERT_SILENCE_MAX_MS)), 0);
        assert_eq!(table.expire(t0 + Duration::from_millis(ADVERT_SILENCE_MAX_MS) + Duration::from_millis(1)), 1);
        assert_eq!(names(&table.nodes(t0 + Duration::from_millis(ADVERT_SILENCE_MAX_MS))), ["new"]);
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_longest_silent_advert() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        for index in 0..=ADVERTS_MAX {
            let at = t0 + Duration::from_millis(index as u64);
            table.handle_resolved(at, advert(&format!("n{index}"), &format!("id{index}"), "sha256/p", &[])).unwrap();
        }
        assert_eq!(table.len(), ADVERTS_MAX);
        assert!(!names(&table.nodes(t0)).contains(&"n0"));
    }

    #[test]
    fn adverts_without_id_or_pin_or_of_another_version_or_service_are_rejected() {
        let t0 = Instant::now();
        let mut table = table_with_sibling("sha256/x");
        let mut no_pin = advert("a", "id", "sha256/p", &[]);
        no_pin.txt.remove("pin");
        assert_eq!(table.handle_resolved(t0, no_pin), Err(Rejected::MissingKey("pin")));
        let mut empty_id = advert("a", "", "sha256/p", &[]);
        empty_id.txt.insert("id".into(), String::new());
        assert_eq!(table.handle_resolved(t0, empty_id), Err(Rejected::MissingKey("id")));
        let mut version_2 = advert("a", "id", "sha256/p", &[]);
        version_2.txt.insert("v".into(), "2".into());
        assert_eq!(table.handle_resolved(t0, version_2), Err(Rejected::OtherVersion("2".into())));
        let mut other_service = advert("a", "id", "sha256/p", &[]);
        other_service.fullname = "a._https._tcp.local.".into();
        assert!(matches!(table.handle_resolved(t0, other_service), Err(Rejected::OtherService { .. })));
        let long_pin = advert("a", "id", &"p".repeat(PIN_BYTES_MAX + 1), &[]);
        assert_eq!(table.handle_resolved(t0, long_pin), Err(Rejected::TooLong("pin")));
        assert!(table.is_empty());
    }

    #[test]
    fn a_browser_that_is_no_node_lists_everything_unpaired() {
        let t0 = Instant::now();
        let mut table = NearbyTable::new(SERVICE, None, Vec::new());
        table.handle_resolved(t0, advert("b", "id-b", "sha256/b", &[])).unwrap();
        table.handle_resolved(t0, advert("a", "id-a", "sha256/a", &[])).unwrap();
        let nodes = table.nodes(t0);
        assert_eq!(names(&nodes), ["a", "b"]);
        assert!(nodes.iter().all(|node| !node.paired && !node.conflict));
    }

    #[test]
    fn instance_names_are_unescaped_and_matched_case_insensitively() {
        assert_eq!(instance_name("kitchen._edgenode._udp.local.", SERVICE).as_deref(), Some("kitchen"));
        assert_eq!(instance_name("Kitchen (2)._EdgeNode._udp.local.", SERVICE).as_deref(), Some("Kitchen (2)"));
        assert_eq!(instance_name(r"v1\.2 node\\x._edgenode._udp.local.", SERVICE).as_deref(), Some(r"v1.2 node\x"));
        assert_eq!(instance_name(r"caf\195\169._edgenode._udp.local.", SERVICE).as_deref(), Some("café"));
        assert_eq!(instance_name("kitchen._https._tcp.local.", SERVICE), None);
        assert_eq!(instance_name("._edgenode._udp.local.", SERVICE), None);
    }
}
