//! The link between nodes, on loopback: one QUIC connection per remote node for all
//! node-to-node traffic and no UDP socket beyond the HTTP/3 and peer ports; a
//! neighbour that drops every packet does not slow calls to the others; a node known
//! to be down answers at once; calls that time out are scored as replication's are.

use std::time::{Duration, Instant};

use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::{control_token, known_to_each_other};
use edgenode_tests::node::Node;
use serde_json::Value;

/// Fast probes, a short call timeout: a loopback test runs in seconds.
const FANOUT_TOML: &str = "[fanout]\nprobe_interval_ms = 300\npull_jitter_ms = 500\ncall_timeout_ms = 2000\n";
const WITHIN: Duration = Duration::from_secs(30);

/// A metric, read with the control token (`/metrics` is for operators only).
fn metric(client: &Client, node: &Node, name: &str) -> u64 {
    let response = client.request("GET", "/metrics", Some(&control_token(node)), &[], Vec::new());
    let text = String::from_utf8(response.body).expect("utf-8");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// The UDP ports a process has bound, from `ss -uanp`.
fn udp_ports_of(pid: u32) -> Vec<String> {
    let output = std::process::Command::new("ss").args(["-uanp"]).output().expect("running ss (iproute2)");
    assert!(output.status.success(), "ss -uanp failed");
    let marker = format!("pid={pid},");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&marker))
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// `GET /api/v1/users/{handle}@{node}`: a profile call over the link; its status and time.
fn remote_profile(client: &Client, handle: &str, node: &str) -> (u16, Duration, Value) {
    let started = Instant::now();
    let (status, answer) = client.get_json(&format!("/api/v1/users/{handle}@{node}"), None);
    (status, started.elapsed(), answer)
}

fn search_neighbourhood(client: &Client, word: &str) -> Value {
    let (status, answer) = client.get_json(&format!("/api/v1/search?q={word}&scope=neighbourhood"), None);
    assert_eq!(status, 200, "{answer}");
    answer
}

fn peers(client: &Client, node: &Node) -> Vec<Value> {
    let token = std::fs::read_to_string(node.data_dir().join("control-token")).expect("control token");
    let (status, answer) = client.get_json("/api/v1/node/peers", Some(token.trim()));
    assert_eq!(status, 200, "{answer}");
    answer["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn siblings_that_call_each_other_share_one_connection_and_bind_no_other_socket() {
    let [one, two] = known_to_each_other([("link-1", FANOUT_TOML), ("link-2", FANOUT_TOML)], "peers.siblings", "");
    let (at_one, at_two) = (Client::new(&one, Transport::Http2), Client::new(&two, Transport::Http2));
    // Replication, search and fan-out calls both ways.
    search_neighbourhood(&at_one, "anything");
    search_neighbourhood(&at_two, "anything");
    let (status, _, answer) = remote_profile(&at_one, "nobody", two.node_id());
    assert_eq!(status, 404, "a profile call answered by two: {answer}");
    let (status, _, answer) = remote_profile(&at_two, "nobody", one.node_id());
    assert_eq!(status, 404, "a profile call answered by one: {answer}");
    for (client, node) in [(&at_one, &one), (&at_two, &two)] {
        assert_eq!(
            metric(client, node, "edgenode_link_connections"),
            1,
            "{}: one connection to the other",
            node.name()
        );
        assert_eq!(metric(client, node, "edgenode_siblings_connected"), 1, "{}: replication is on it", node.name());
        let ports = udp_ports_of(node.pid());
        // HTTP/3 and the peer port (mDNS is off in tests).
        assert_eq!(ports.len(), 2, "{} binds UDP on {ports:?}", node.name());
    }
}

#[test]
fn a_black_holed_neighbour_does_not_slow_calls_to_the_others_and_a_down_node_answers_at_once() {
    // A neighbour that drops every packet: a UDP socket nobody reads.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let hole_pin = "sha256/EREREREREREREREREREREREREREREREREREREREREQ=";
    let hole_id = edgenode::core::model::NodeId::from_pin(hole_pin).to_string();
    let extra =
        format!("\n[[peers.neighbours]]\naddress = \"{}\"\npin = \"{hole_pin}\"\n", hole.local_addr().expect("bound"));
    let [one, two, three] = known_to_each_other(
        [("hole-1", FANOUT_TOML), ("hole-2", FANOUT_TOML), ("hole-3", FANOUT_TOML)],
        "peers.neighbours",
        &extra,
    );
    let at_one = Client::new(&one, Transport::Http2);
    // Without a call to the dead neighbour in flight: the first call to two (a dial).
    let (status, alone, answer) = remote_profile(&at_one, "nobody", two.node_id());
    assert_eq!(status, 404, "{answer}");
    // With one in flight: the first call to three (also a dial) while another
    // thread's call waits on the black hole.
    let stuck = std::thread::spawn({
        let (one_addr, hole_id) = (Client::new(&one, Transport::Http2), hole_id.clone());
        move || remote_profile(&one_addr, "nobody", &hole_id)
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, beside_the_hole, answer) = remote_profile(&at_one, "nobody", three.node_id());
    assert_eq!(status, 404, "{answer}");
    println!("first call to a live neighbour: {alone:?} alone, {beside_the_hole:?} beside a black-holed one");
    assert!(
        beside_the_hole <= alone + Duration::from_millis(100),
        "a call beside a black-holed neighbour took {beside_the_hole:?}, {alone:?} alone"
    );
    let (status, waited, answer) = stuck.join().expect("the stuck call ends");
    assert_eq!(status, 502, "the black hole is unreachable: {answer}");
    assert!(waited < WITHIN, "{waited:?}");
    // Now known to be down: the next calls answer at once, 502 node_unreachable.
    for _ in 0..3 {
        let (status, took, answer) = remote_profile(&at_one, "nobody", &hole_id);
        assert_eq!(status, 502, "{answer}");
        assert_eq!(answer["error"]["code"], "node_unreachable", "{answer}");
        assert!(took < Duration::from_millis(500), "a call to a node known to be down took {took:?}");
    }
}

#[test]
fn a_sibling_whose_calls_time_out_loses_trust_as_for_replication_timeouts() {
    let [one, two] = known_to_each_other([("trust-1", FANOUT_TOML), ("trust-2", FANOUT_TOML)], "peers.siblings", "");
    let at_one = Client::new(&one, Transport::Http2);
    let (status, _, answer) = remote_profile(&at_one, "nobody", two.node_id());
    assert_eq!(status, 404, "{answer}");
    // Two stops answering (SIGSTOP), its connection stays open: calls time out.
    let stopped = std::process::Command::new("kill").args(["-STOP", &two.pid().to_string()]).status();
    assert!(stopped.is_ok_and(|status| status.success()), "kill -STOP");
    let (status, took, answer) = remote_profile(&at_one, "nobody", two.node_id());
    let _ = std::process::Command::new("kill").args(["-CONT", &two.pid().to_string()]).status();
    assert_eq!(status, 502, "{answer}");
    assert!(took >= Duration::from_millis(1_900), "the call waited for its timeout: {took:?}");
    let listed = peers(&at_one, &one);
    let entry = listed.iter().find(|peer| peer["node_id"] == two.node_id()).expect("two listed");
    let recent = entry["trust_recent"].to_string();
    assert!(recent.contains("call timed out"), "the timeout is in two's trust record: {entry}");
    assert!(entry["trust"].as_u64().expect("a score") < 100, "the timeout lowered two's score: {entry}");
}
