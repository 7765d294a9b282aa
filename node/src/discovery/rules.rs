//! What this node announces and where, as pure functions: the TXT record, the mDNS host
//! label, which interfaces carry mDNS, which addresses the node really listens on.
//!
//! Sans-IO: the glue in `discovery/mod.rs` reads interface flags from the OS and hands
//! them in as `InterfaceFacts`.

use std::net::IpAddr;

/// The protocol version announced as `v`; adverts with another version are ignored.
pub const PROTOCOL_VERSION: &str = "1";

/// TXT keys. Short on purpose: the whole record must stay well under 400 bytes.
pub const TXT_KEY_NODE_ID: &str = "id";
pub const TXT_KEY_PIN: &str = "pin";
pub const TXT_KEY_VERSION: &str = "v";
pub const TXT_KEY_REGION: &str = "region";

/// The whole TXT record (length bytes included) stays below this.
pub const TXT_RECORD_BYTES_MAX: usize = 400;
/// A region longer than this is cut (at a character boundary) before it is announced.
pub const REGION_TXT_BYTES_MAX: usize = 120;
/// One DNS label.
pub const HOST_LABEL_BYTES_MAX: usize = 63;

/// Interface name prefixes of container and virtual-machine plumbing: mDNS is not
/// announced there unless `[mdns] interfaces` names them.
pub const VIRTUAL_INTERFACE_PREFIXES: &[&str] = &["docker", "veth", "br-", "virbr", "podman", "cni", "lxcbr", "lxdbr"];

/// The key/value pairs of our TXT record, in announcement order. The region is cut
/// to `REGION_TXT_BYTES_MAX`, and dropped if the record would still be too big.
pub fn txt_properties(node_id: &str, pin: &str, region: &str) -> Vec<(&'static str, String)> {
    let mut properties = vec![
        (TXT_KEY_NODE_ID, node_id.to_owned()),
        (TXT_KEY_PIN, pin.to_owned()),
        (TXT_KEY_VERSION, PROTOCOL_VERSION.to_owned()),
        (TXT_KEY_REGION, truncate_at_char_boundary(region, REGION_TXT_BYTES_MAX).to_owned()),
    ];
    if txt_record_bytes(&properties) >= TXT_RECORD_BYTES_MAX {
        properties.retain(|(key, _)| *key != TXT_KEY_REGION);
    }
    properties
}

/// Size on the wire of a TXT record: one length byte plus `key=value` per entry.
pub fn txt_record_bytes(properties: &[(&str, String)]) -> usize {
    properties.iter().map(|(key, value)| 1 + key.len() + 1 + value.len()).sum()
}

fn truncate_at_char_boundary(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The DNS label for `<label>.local`: lowercase ASCII letters, digits and single
/// hyphens; anything else becomes a hyphen. A name with nothing usable gives `edgenode`.
pub fn host_label(node_name: &str) -> String {
    let mut label = String::with_capacity(node_name.len());
    for character in node_name.chars() {
        let character = character.to_ascii_lowercase();
        if character.is_ascii_alphanumeric() {
            label.push(character);
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    let mut label = truncate_at_char_boundary(&label, HOST_LABEL_BYTES_MAX).trim_end_matches('-').to_owned();
    if label.is_empty() {
        label.push_str("edgenode");
    }
    label
}

/// What the glue learned about one interface from the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceFacts<'a> {
    pub name: &'a str,
    pub up: bool,
    pub loopback: bool,
    pub multicast: bool,
}

/// Whether mDNS runs on an interface. With `configured` names, exactly those; else
/// every up, multicast-capable interface that is neither loopback nor container or
/// VM plumbing (`VIRTUAL_INTERFACE_PREFIXES`).
pub fn interface_selected(configured: &[String], interface: InterfaceFacts<'_>) -> bool {
    if !configured.is_empty() {
        return configured.iter().any(|name| name == interface.name);
    }
    interface.up
        && interface.multicast
        && !interface.loopback
        && !VIRTUAL_INTERFACE_PREFIXES.iter().any(|prefix| interface.name.starts_with(prefix))
}

/// The rule of `edgenode discover`: it only listens, so it browses every up,
/// multicast-capable interface but loopback, virtual ones included.
pub fn interface_browsed(interface: InterfaceFacts<'_>) -> bool {
    interface.up && interface.multicast && !interface.loopback
}

/// Whether `address` is one the node really listens on, given its listen address:
/// `0.0.0.0` is every IPv4 address, `::` every address (dual stack), anything else
/// only addresses of its family (the advert then carries that one address).
pub fn address_served(listen_ip: IpAddr, address: IpAddr) -> bool {
    match listen_ip {
        IpAddr::V4(listen) if listen.is_unspecified() => address.is_ipv4(),
        IpAddr::V6(listen) if listen.is_unspecified() => true,
        listen => listen.is_ipv4() == address.is_ipv4(),
    }
}

/// The names this node holds on the link: its instance name (the same for both
/// services) and the label of its host `<label>.local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnNames {
    pub instance: String,
    pub host_label: String,
}

/// Which of our names another node's advert also uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameClash {
    pub instance: bool,
    pub host: bool,
}

/// Whether another node advertises one of our names (instance or host) *and* we are
/// the one to give it up: the node whose `(node id, pin)` sorts later yields, so of
/// two nodes that both notice, exactly one renames.
///
/// mdns-sd resolves clashes it sees while probing; this catches what its probing
/// misses (two nodes probing at once, after a power cut, can both keep a name).
pub fn name_clash(
    own: &OwnNames,
    own_identity: (&str, &str),
    other_instance: &str,
    other_host: &str,
    other_identity: (&str, &str),
) -> Option<NameClash> {
    if own_identity <= other_identity {
        return None; // ourselves (equal), or the other node yields
    }
    let other_host = other_host.trim_end_matches('.');
    let clash = NameClash {
        instance: own.instance.eq_ignore_ascii_case(other_instance),
        host: other_host.eq_ignore_ascii_case(&format!("{}.local", own.host_label)),
    };
    (clash.instance || clash.host).then_some(clash)
}

/// Whether we yield our name when the advert under it carries `addresses`, some of
/// them not `own` (two nodes under one name, merged into one advert): the node that
/// does not hold the lowest address yields, a rule both nodes apply alike. Returns
/// the other node's lowest address when we yield.
pub fn merged_advert_yields(
    own: &std::collections::BTreeSet<std::net::IpAddr>,
    addresses: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    let ours = addresses.iter().filter(|address| own.contains(address)).min()?;
    let foreign = addresses.iter().filter(|address| !own.contains(address)).min()?;
    (ours > foreign).then_some(*foreign)
}

/// The next instance name after a clash, as RFC 6763 suggests: `twin` → `twin (2)`
/// → `twin (3)`.
pub fn next_instance_name(current: &str) -> String {
    if let Some((base, number)) = current.strip_suffix(')').and_then(|rest| rest.rsplit_once(" (")) {
        if let Ok(number) = number.parse::<u32>() {
            return format!("{base} ({})", number.saturating_add(1));
        }
    }
    format!("{current} (2)")
}

/// The next host label after a clash: `twin` → `twin-2` → `twin-3`, within one DNS label.
pub fn next_host_label(current: &str) -> String {
    let (base, next) = match current.rsplit_once('-') {
        Some((base, number)) if !base.is_empty() => match number.parse::<u32>() {
            Ok(number) => (base, number.saturating_add(1)),
            Err(_) => (current, 2),
        },
        _ => (current, 2),
    };
    let suffix = format!("-{next}");
    let base = truncate_at_char_boundary(base, HOST_LABEL_BYTES_MAX - suffix.len());
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_ID: &str = "0123456789abcdef0123456789abcdef";
    const PIN: &str = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    fn facts(name: &str) -> InterfaceFacts<'_> {
        InterfaceFacts { name, up: true, loopback: false, multicast: true }
    }

    #[test]
    fn txt_record_carries_id_pin_version_and_region() {
        let properties = txt_properties(NODE_ID, PIN, "earth/eu/nl");
        assert_eq!(
            properties,
            vec![
                ("id", NODE_ID.to_owned()),
                ("pin", PIN.to_owned()),
                ("v", "1".to_owned()),
                ("region", "earth/eu/nl".to_owned())
            ]
        );
        assert!(txt_record_bytes(&properties) < 200, "{}", txt_record_bytes(&properties));
    }

    #[test]
    fn a_long_region_is_cut_and_the_record_stays_under_its_limit() {
        let region = "ü".repeat(500); // two bytes each: the cut must not split one
        let properties = txt_properties(NODE_ID, PIN, &region);
        let announced = &properties.iter().find(|(key, _)| *key == "region").expect("region kept").1;
        assert!(announced.len() <= REGION_TXT_BYTES_MAX && announced.chars().all(|c| c == 'ü'));
        assert!(txt_record_bytes(&properties) < TXT_RECORD_BYTES_MAX);
    }

    #[test]
    fn the_region_is_dropped_rather_than_overflowing_the_record() {
        let huge_id = "x".repeat(250);
        let properties = txt_properties(&huge_id, PIN, &"r".repeat(REGION_TXT_BYTES_MAX));
        assert!(properties.iter().all(|(key, _)| *key != "region"));
    }

    #[test]
    fn host_labels_are_plain_dns_labels() {
        assert_eq!(host_label("kitchen"), "kitchen");
        assert_eq!(host_label("Alice's Node"), "alice-s-node");
        assert_eq!(host_label("  --Büro 2--  "), "b-ro-2");
        assert_eq!(host_label("小屋"), "edgenode");
        assert_eq!(host_label(&"a".repeat(80)).len(), HOST_LABEL_BYTES_MAX);
    }

    #[test]
    fn by_default_real_multicast_interfaces_are_selected() {
        for name in ["eth0", "enp3s0", "wlan0", "wlp2s0", "bond0", "br0"] {
            assert!(interface_selected(&[], facts(name)), "{name}");
        }
    }

    #[test]
    fn by_default_loopback_virtual_down_and_non_multicast_interfaces_are_skipped() {
        for name in ["docker0", "veth1a2b3c", "br-5f3e2a", "virbr0", "podman0", "cni0", "lxcbr0"] {
            assert!(!interface_selected(&[], facts(name)), "{name}");
        }
        assert!(!interface_selected(&[], InterfaceFacts { loopback: true, ..facts("lo") }));
        assert!(!interface_selected(&[], InterfaceFacts { up: false, ..facts("eth0") }));
        assert!(!interface_selected(&[], InterfaceFacts { multicast: false, ..facts("eth0") }));
    }

    #[test]
    fn configured_interfaces_are_used_exactly() {
        let configured = vec!["veth9".to_owned(), "lo".to_owned()];
        assert!(interface_selected(&configured, facts("veth9")));
        assert!(interface_selected(&configured, InterfaceFacts { loopback: true, multicast: false, ..facts("lo") }));
        assert!(!interface_selected(&configured, facts("eth0")));
    }

    #[test]
    fn discover_listens_on_virtual_interfaces_too_but_not_loopback() {
        assert!(interface_browsed(facts("docker0")));
        assert!(!interface_browsed(InterfaceFacts { loopback: true, ..facts("lo") }));
    }

    #[test]
    fn only_addresses_the_node_listens_on_are_served() {
        let v4: IpAddr = "10.213.0.11".parse().unwrap();
        let v6: IpAddr = "fe80::1".parse().unwrap();
        let any_v4: IpAddr = "0.0.0.0".parse().unwrap();
        let any_v6: IpAddr = "::".parse().unwrap();
        assert!(address_served(any_v4, v4) && !address_served(any_v4, v6));
        assert!(address_served(any_v6, v4) && address_served(any_v6, v6));
        assert!(address_served(v4, "192.168.1.2".parse().unwrap()) && !address_served(v4, v6));
    }

    fn own_names() -> OwnNames {
        OwnNames { instance: "twin".into(), host_label: "twin".into() }
    }

    #[test]
    fn of_two_nodes_on_one_name_the_later_identity_yields() {
        let clash = name_clash(&own_names(), ("b-id", "pin"), "Twin", "twin.local.", ("a-id", "pin"));
        assert_eq!(clash, Some(NameClash { instance: true, host: true }));
        assert_eq!(name_clash(&own_names(), ("a-id", "pin"), "twin", "twin.local.", ("b-id", "pin")), None);
    }

    #[test]
    fn a_clash_on_the_host_alone_is_told_apart() {
        let clash = name_clash(&own_names(), ("b", "p"), "twin (2)", "TWIN.local", ("a", "p"));
        assert_eq!(clash, Some(NameClash { instance: false, host: true }));
        assert_eq!(name_clash(&own_names(), ("b", "p"), "twin (2)", "twin-2.local.", ("a", "p")), None);
    }

    #[test]
    fn our_own_advert_and_an_impostor_with_a_smaller_pin_are_handled() {
        assert_eq!(name_clash(&own_names(), ("id", "pin"), "twin", "twin.local.", ("id", "pin")), None);
        assert!(name_clash(&own_names(), ("id", "pin-b"), "twin", "twin.local.", ("id", "pin-a")).is_some());
    }

    #[test]
    fn renamed_names_count_up() {
        assert_eq!(next_instance_name("twin"), "twin (2)");
        assert_eq!(next_instance_name("twin (2)"), "twin (3)");
        assert_eq!(next_instance_name("twin (x)"), "twin (x) (2)");
        assert_eq!(next_host_label("twin"), "twin-2");
        assert_eq!(next_host_label("twin-2"), "twin-3");
        assert_eq!(next_host_label("my-node"), "my-node-2");
        assert_eq!(next_host_label(&"a".repeat(63)), format!("{}-2", "a".repeat(61)));
    }

    #[test]
    fn in_a_merged_advert_the_node_without_the_lowest_address_yields() {
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        let merged = [ip("10.0.0.12"), ip("10.0.0.11")];
        let low = std::collections::BTreeSet::from([ip("10.0.0.11")]);
        let high = std::collections::BTreeSet::from([ip("10.0.0.12")]);
        assert_eq!(merged_advert_yields(&low, &merged), None);
        assert_eq!(merged_advert_yields(&high, &merged), Some(ip("10.0.0.11")));
        assert_eq!(merged_advert_yields(&high, &[ip("10.0.0.12")]), None, "only our own addresses: no clash");
        assert_eq!(merged_advert_yields(&high, &[ip("10.0.0.11")]), None, "not ours at all: not our advert");
    }
}
