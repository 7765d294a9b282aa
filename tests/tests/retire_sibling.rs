//! Retiring a sibling (`POST /api/v1/node/peers/{node_id}/retire`, `edgenode peer
//! retire`) on loopback: what is refused and why, what a retirement changes on the
//! node where it was made and on the sibling it is announced to, and that it
//! survives a restart with the retired node still in the config. The dead box
//! replaced in network namespaces is `system_replace_box.rs`.

use std::time::{Duration, Instant};

use edgenode_tests::checks::expect_error;
use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::{control_token, preloaded_siblings};
use edgenode_tests::node::{edgenode_binary, Node};
use serde_json::{json, Value};

const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// The node where it happened tells its siblings at once.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn a_retired_sibling_is_refused_listed_as_retired_and_stays_retired() {
    // `second` is retired on `first` while it runs; `third` hears of it from `first`.
    let [mut first, second, third] = preloaded_siblings(["retire-1", "retire-2", "retire-3"]);
    let at_first = Client::new(&first, Transport::Http2);
    let at_second = Client::new(&second, Transport::Http2);
    let at_third = Client::new(&third, Transport::Http2);
    let first_control = control_token(&first);
    let second_control = control_token(&second);
    let third_control = control_token(&third);
    wait_for(CONNECT_WITHIN, "the siblings connected", || {
        let peers = peers(&at_first, &first_control);
        peers.iter().filter(|peer| peer["connected"] == json!(true)).count() == 2
    });

    let retire = |node_id: &str, query: &str| {
        let path = format!("/api/v1/node/peers/{node_id}/retire{query}");
        let answer = at_first.request("POST", &path, Some(&first_control), &[], Vec::new());
        (answer.status, answer.json())
    };
    expect_error("a connected sibling", &retire(second.node_id(), ""), 409, "sibling_connected");
    expect_error("its own id", &retire(first.node_id(), ""), 400, "own_node");
    expect_error("a stranger", &retire("00000000000000aa", ""), 404, "not_a_sibling");
    expect_error("not an id", &retire("not-hex", ""), 400, "invalid_node_id");
    let (status, answer) = at_first.get_json(&format!("/api/v1/node/peers/{}/retire", second.node_id()), None);
    assert_ne!(status, 200, "anonymous callers cannot retire anything: {answer}");
    assert_eq!(
        peers(&at_first, &first_control).iter().filter(|peer| peer["state"] == json!("retired")).count(),
        0,
        "nothing refused was retired"
    );

    // Forced (the sibling is alive): retired here, announced there.
    let (status, answer) = retire(second.node_id(), "?force=true");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["node_id"], json!(second.node_id()));
    assert_eq!(answer["retired_by"], json!(first.node_id()));
    assert_eq!((answer["already_retired"].clone(), answer["siblings_left"].clone()), (json!(false), json!(1)));
    let listed = peers(&at_first, &first_control);
    let retired = |listed: &[Value], node: &Node| {
        listed.iter().any(|peer| peer["node_id"] == json!(node.node_id()) && peer["state"] == json!("retired"))
    };
    assert!(retired(&listed, &second), "{listed:#?}");
    assert_eq!(listed.len(), 2, "the live sibling and the retired one: {listed:#?}");
    let (status, node) = at_first.get_json("/api/v1/node", None);
    assert_eq!(status, 200);
    let public: Vec<&Value> = node["peers"].as_array().into_iter().flatten().map(|peer| &peer["id"]).collect();
    assert_eq!(public, [&json!(third.node_id())], "only the live sibling on the public node info: {node}");
    // The third sibling hears of it from the first; the retired one is told nothing
    // and is refused by both.
    wait_for(ANNOUNCED_WITHIN, "the third sibling lists the retired one as retired", || {
        retired(&peers(&at_third, &third_control), &second)
    });
    wait_for(ANNOUNCED_WITHIN, "the retired sibling is refused by both others", || {
        peers(&at_second, &second_control).iter().all(|peer| peer["connected"] == json!(false))
    });

    // The CLI, on the same node: already retired, as text and as JSON.
    let output = cli(&first, &["peer", "retire", second.node_id()]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("already retired"), "{output:?}");
    let output = cli(&first, &["peer", "retire", first.node_id(), "--json"]);
    assert_eq!(output.status.code(), Some(1), "refused: exit 1: {output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is this node"), "says why: {output:?}");

    // A restart keeps it retired although the config still lists it.
    first.terminate();
    first.restart();
    let at_first = Client::new(&first, Transport::Http2);
    let first_control = control_token(&first);
    let listed = peers(&at_first, &first_control);
    assert!(retired(&listed, &second), "{listed:#?}");
    assert_eq!(listed.len(), 2, "the retired one is listed once, as retired: {listed:#?}");
    let table = cli(&first, &["peer", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().any(|line| line.starts_with(second.node_id()) && line.contains("retired")),
        "`peer list` shows it retired: {table}"
    );
}

fn peers(client: &Client, control: &str) -> Vec<Value> {
    let (status, answer) = client.get_json("/api/v1/node/peers", Some(control.trim()));
    assert_eq!(status, 200, "{answer}");
    answer["items"].as_array().cloned().unwrap_or_default()
}

fn cli(node: &Node, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(edgenode_binary());
    command.args(args).arg("--data-dir").arg(node.data_dir());
    command.output().unwrap_or_else(|error| panic!("running {command:?}: {error}"))
}

fn wait_for(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
