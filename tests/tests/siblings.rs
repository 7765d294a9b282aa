//! Siblings on loopback: two real nodes paired with the CLI (`edgenode peer pair` on
//! one, `peer join` on the other), records and photos replicated both ways, a user
//! who logs in on the replica while the home node is down, and a key that was never
//! paired, refused. The multi-host version (namespaces, partitions, kill -9) is the
//! system tier's `system_replication`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgenode_tests::client::{Client, Transport};
use edgenode_tests::cluster::{peer_address, preloaded_siblings};
use edgenode_tests::faults::corrupt_media_files;
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::node::{edgenode_binary, Node, NodeOptions};
use edgenode_tests::steps::{Account, ANONYMOUS, PASSWORD};
use serde_json::{json, Value};

/// Replicas agree within this, on loopback, for the handful of records here.
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

fn start(name: &str) -> Node {
    Node::start(NodeOptions { name: name.to_owned(), ..NodeOptions::default() })
}

fn control_token(node: &Node) -> String {
    std::fs::read_to_string(node.data_dir().join("control-token")).expect("control-token in the data dir")
}

/// `edgenode peer --data-dir D <args>`; panics with its output unless it succeeds.
fn peer_cli(node: &Node, args: &[&str]) -> String {
    let output = Command::new(edgenode_binary())
        .arg("peer")
        .arg("--data-dir")
        .arg(node.data_dir())
        .args(args)
        .output()
        .expect("running edgenode peer");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "edgenode peer {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Pairs `a` and `b` as a person would: the code `peer pair` prints on one, typed
/// into `peer join` on the other. Returns what `peer pair` printed in the end.
fn pair(a: &Node, b: &Node) -> String {
    let mut pairing = Command::new(edgenode_binary())
        .args(["peer", "--data-dir"])
        .arg(a.data_dir())
        .args(["pair", "--wait", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running edgenode peer pair");
    let mut lines = BufReader::new(pairing.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("peer pair prints a line").expect("utf-8");
    let code = first
        .strip_prefix("pairing code")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in {first:?}"))
        .to_owned();
    let joined = peer_cli(b, &["join", &peer_address(a), &code]);
    assert!(joined.contains(a.node_id()), "join names the node it paired with: {joined}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = pairing.wait().expect("peer pair exits");
    assert!(status.success(), "peer pair ends once someone joined: {rest:?}");
    rest.join("\n")
}

fn replication(client: &Client, node: &Node) -> Value {
    let (status, answer) = client.get_json("/api/v1/node/replication", Some(control_token(node).trim()));
    assert_eq!(status, 200, "replication state: {answer}");
    answer
}

/// Waits until every node holds the same records and every photo; returns how long.
fn converge(nodes: &[(&Client, &Node)]) -> Duration {
    let started = Instant::now();
    let mut last = Vec::new();
    while started.elapsed() < CONVERGE_WITHIN {
        last = nodes.iter().map(|(client, node)| replication(client, node)).collect::<Vec<_>>();
        let same = last.iter().all(|state| state["digest"] == last[0]["digest"]);
        if same && last.iter().all(|state| state["media_missing"] == json!(0)) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("replicas did not converge within {CONVERGE_WITHIN:?}: {last:#?}");
}

fn log_in(client: &Client, handle: &str) -> Account {
    let (status, answer) = client.log_in(handle, PASSWORD);
    assert_eq!(status, 200, "{handle} logs in: {answer}");
    Account {
        handle: handle.to_owned(),
        password: PASSWORD.to_owned(),
        user_id: answer["user_id"].as_str().expect("user_id").to_owned(),
        token: answer["token"].as_str().expect("token").to_owned(),
    }
}

#[test]
fn paired_siblings_replicate_and_a_replica_takes_over_when_home_is_down() {
    let mut home = start("sib-home");
    let replica = start("sib-replica");
    let printed = pair(&home, &replica);
    assert!(printed.contains(replica.node_id()), "peer pair reports who joined: {printed}");
    for (node, other) in [(&home, &replica), (&replica, &home)] {
        let listed: Value = serde_json::from_str(&peer_cli(node, &["list", "--json"])).expect("peer list --json");
        let sibling = listed
            .as_array()
            .and_then(|items| items.iter().find(|item| item["node_id"] == json!(other.node_id())))
            .unwrap_or_else(|| panic!("{} lists {} after pairing: {listed}", node.name(), other.node_id()));
        assert!(sibling["trust"].is_number() && sibling.get("lag_entries").is_some(), "{sibling}");
    }

    // Ada's home is the node she claimed; her photo and posts are written there.
    let at_home = Client::new(&home, Transport::Http2);
    let at_replica = Client::new(&replica, Transport::Http3);
    let ada = at_home.claim_admin(&home, "ada");
    let photo = distinct_photo(7);
    let media = at_home.upload_jpeg(&ada, &photo);
    let media_id = media["id"].as_str().expect("media id").to_owned();
    let public = at_home.create_post(&ada, "the harbour at dawn #harbour", &[&media_id], "public");
    let private = at_home.create_post(&ada, "note to self", &[], "private");
    let took = converge(&[(&at_home, &home), (&at_replica, &replica)]);
    println!("records and the photo on both siblings {} ms after the last write", took.as_millis());

    let metrics = String::from_utf8(
        at_replica.request("GET", "/metrics", Some(control_token(&replica).trim()), &[], Vec::new()).body,
    )
    .expect("utf-8");
    let replication_lines: Vec<&str> =
        metrics.lines().filter(|line| line.contains("sibling") || line.contains("replication")).collect();
    assert!(metrics.contains("edgenode_siblings_connected 1\n"), "{replication_lines:?}");
    let applied = metrics
        .lines()
        .find_map(|line| line.strip_prefix("edgenode_replication_items_applied_total "))
        .and_then(|value| value.parse::<u64>().ok());
    assert!(applied.is_some_and(|applied| applied >= 4), "the replica counts what it applied: {metrics}");

    // On the replica: her credentials work, her posts and photo are there.
    let ada_there = log_in(&at_replica, "ada");
    let (status, post) = at_replica.get_post(Some(&ada_there), public["id"].as_str().unwrap());
    assert_eq!(status, 200, "the public post replicated: {post}");
    assert_eq!(post["media"][0]["id"], json!(media_id), "{post}");
    let (status, _) = at_replica.get_post(ANONYMOUS, private["id"].as_str().unwrap());
    assert_eq!(status, 404, "a private post stays private on the replica too");
    let (status, _) = at_replica.get_post(Some(&ada_there), private["id"].as_str().unwrap());
    assert_eq!(status, 200, "but its author sees it there");
    let thumb_there = at_replica.fetch_media(ANONYMOUS, &media_id, "thumb");
    let thumb_home = at_home.fetch_media(ANONYMOUS, &media_id, "thumb");
    assert_eq!(thumb_there.status, 200);
    assert_eq!(thumb_there.body, thumb_home.body, "the replica serves the same thumbnail bytes");
    let (status, user) = at_replica.get_json("/api/v1/users/ada", None);
    assert_eq!(status, 200);
    let nodes: Vec<&str> = user["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["id"].as_str()).collect();
    assert!(nodes.contains(&home.node_id()) && nodes.contains(&replica.node_id()), "ada's replicas: {user}");

    // Failover: home is down; Ada logs in on the replica, posts and likes there.
    home.terminate();
    let ada_there = log_in(&at_replica, "ada");
    let written = at_replica.create_post(&ada_there, "posted while home was away", &[], "public");
    let written_id = written["id"].as_str().expect("post id").to_owned();
    let liked = at_replica.like(&ada_there, &written_id);
    assert_eq!(liked["like_count"], json!(1), "{liked}");

    // Home comes back and has both.
    home.restart();
    let at_home = Client::new(&home, Transport::Http1);
    let took = converge(&[(&at_home, &home), (&at_replica, &replica)]);
    println!("home caught up {} ms after it restarted", took.as_millis());
    let ada_home = log_in(&at_home, "ada");
    let (status, post) = at_home.get_post(Some(&ada_home), &written_id);
    assert_eq!(status, 200, "the post made on the replica is on the home node: {post}");
    assert_eq!(post["like_count"], json!(1), "and so is the like: {post}");
    assert_eq!(post["liked_by_me"], json!(true), "{post}");
}

#[test]
fn siblings_preloaded_with_pins_in_the_config_replicate() {
    let [first, second] = preloaded_siblings(["preloaded-1", "preloaded-2"]);
    let (at_first, at_second) = (Client::new(&first, Transport::Http2), Client::new(&second, Transport::Http2));
    let grace = at_first.claim_admin(&first, "grace");
    at_first.create_post(&grace, "provisioned, not paired", &[], "public");
    let took = converge(&[(&at_first, &first), (&at_second, &second)]);
    println!("preloaded siblings converged {} ms after the last write", took.as_millis());
    log_in(&at_second, "grace");
    let posts = at_second.user_posts(ANONYMOUS, "grace");
    assert_eq!(posts.len(), 1, "the post reached the sibling: {posts:?}");
}

/// A sibling killed with SIGKILL and restarted at once is connected again in seconds,
/// not after the survivor's 30 s idle timeout. The survivor is the lower id, whose
/// dialled connection wins ties; it still holds the dead one when the restarted node
/// dials it (a stateless reset from the restarted node, or the dial arriving after any
/// race could, retires it).
#[test]
fn a_sibling_killed_and_restarted_at_once_is_connected_again_within_seconds() {
    const RECONNECT_WITHIN: Duration = Duration::from_secs(12);
    let [first, second] = preloaded_siblings(["crash-1", "crash-2"]);
    let id = |node: &Node| u64::from_str_radix(node.node_id(), 16).expect("node ids are hex");
    let (survivor, mut restarted) = if id(&first) < id(&second) { (first, second) } else { (second, first) };
    let (at_survivor, mut at_restarted) =
        (Client::new(&survivor, Transport::Http2), Client::new(&restarted, Transport::Http2));
    let grace = at_survivor.claim_admin(&survivor, "grace");
    at_survivor.create_post(&grace, "before the crash", &[], "public");
    converge(&[(&at_survivor, &survivor), (&at_restarted, &restarted)]);

    restarted.restart(); // SIGKILL, then the same data dir, config and ports
    at_restarted.reconnect_to(&restarted);
    let restarted_at = Instant::now();
    at_survivor.create_post(&grace, "after the crash", &[], "public");
    let started = Instant::now();
    let mut posts = Vec::new();
    while started.elapsed() < RECONNECT_WITHIN {
        posts = at_restarted.user_posts(ANONYMOUS, "grace");
        if posts.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        posts.len(),
        2,
        "a post made on the survivor after the restart reached the restarted node within {RECONNECT_WITHIN:?}: \
         {posts:?}\n{}",
        survivor.stderr_text()
    );
    println!("replicating again {} ms after the restart", restarted_at.elapsed().as_millis());
}

/// A sibling that serves corrupted media loses trust with the siblings that fetch it,
/// and they place no new users on it: a user created afterwards replicates to the
/// honest sibling, never to it. `peer list` says why.
#[test]
fn a_sibling_that_serves_corrupted_media_loses_trust_and_gets_no_new_replicas() {
    const WITHIN: Duration = Duration::from_secs(30);
    let [mut honest_a, mut honest_b, mut corrupt] = preloaded_siblings(["honest-a", "honest-b", "corrupt"]);
    let mut at_corrupt = Client::new(&corrupt, Transport::Http2);
    let mallory = at_corrupt.claim_admin(&corrupt, "mallory");
    let (at_a, at_b) = (Client::new(&honest_a, Transport::Http2), Client::new(&honest_b, Transport::Http2));
    converge(&[(&at_a, &honest_a), (&at_b, &honest_b), (&at_corrupt, &corrupt)]);

    // Photos only the corrupt node has, whose files then rot (or are tampered with).
    honest_a.terminate();
    honest_b.terminate();
    let media_ids: Vec<String> = (0..4u8)
        .map(|seed| {
            let media = at_corrupt.upload_jpeg(&mallory, &distinct_photo(100 + seed));
            let media_id = media["id"].as_str().expect("media id").to_owned();
            at_corrupt.create_post(&mallory, "look", &[&media_id], "public");
            media_id
        })
        .collect();
    corrupt.terminate();
    let corrupted = corrupt_media_files(corrupt.data_dir(), &media_ids);
    assert_eq!(corrupted, 12, "original, display and thumb of 4 photos");
    corrupt.restart();
    at_corrupt.reconnect_to(&corrupt);
    honest_a.restart();
    honest_b.restart();
    let (at_a, at_b) = (Client::new(&honest_a, Transport::Http2), Client::new(&honest_b, Transport::Http2));

    // Both honest nodes fetch from the corrupt one, refuse what they get, distrust it.
    let corrupt_id = corrupt.node_id().to_owned();
    let trust_of = |client: &Client, node: &Node| {
        let (status, answer) = client.get_json("/api/v1/node/peers", Some(control_token(node).trim()));
        assert_eq!(status, 200, "{answer}");
        answer["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["node_id"] == json!(corrupt_id)).cloned())
            .expect("the corrupt node is listed")
    };
    let started = Instant::now();
    for (client, node) in [(&at_a, &honest_a), (&at_b, &honest_b)] {
        let mut trust = trust_of(client, node);
        while trust["trust_tier"] != json!("untrusted") && started.elapsed() < WITHIN {
            std::thread::sleep(Duration::from_millis(200));
            trust = trust_of(client, node);
        }
        assert_eq!(trust["trust_tier"], json!("untrusted"), "{} distrusts the corrupt node: {trust:#}", node.name());
        // Replication restarts with the new placement weights.
        while trust["placement_weight"] != json!(0) && started.elapsed() < WITHIN {
            std::thread::sleep(Duration::from_millis(200));
            trust = trust_of(client, node);
        }
        assert_eq!(trust["placement_weight"], json!(0), "{} places nothing on it: {trust:#}", node.name());
        assert!(trust["trust_events"]["hash_mismatch"].as_u64().unwrap_or_default() >= 2, "{trust:#}");
        assert!(trust["trust"].as_u64().expect("a score") < 30, "{trust:#}");
    }
    println!("both honest nodes distrust the corrupt one {} ms after it served", started.elapsed().as_millis());
    let listed = peer_cli(&honest_a, &["list"]);
    assert!(listed.contains("untrusted") && listed.contains("hash_mismatch x"), "peer list says why:\n{listed}");
    println!("{listed}");

    // A user who joins now is placed on the two honest nodes only.
    let mallory_on_a = log_in(&at_a, "mallory");
    let invite = at_a.create_invite(&mallory_on_a);
    let newbie = at_a.join(&invite, "newbie");
    at_a.create_post(&newbie, "hello, honest neighbours", &[], "public");
    let started = Instant::now();
    while at_b.get_json("/api/v1/users/newbie", None).0 != 200 && started.elapsed() < WITHIN {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(at_b.get_json("/api/v1/users/newbie", None).0, 200, "the honest sibling gets the new user");
    assert_eq!(at_b.user_posts(ANONYMOUS, "newbie").len(), 1);
    let (_, profile) = at_a.get_json("/api/v1/users/newbie", None);
    let replicas: Vec<&str> =
        profile["nodes"].as_array().expect("nodes").iter().filter_map(|node| node["id"].as_str()).collect();
    assert!(!replicas.contains(&corrupt.node_id()), "the corrupt node is not among newbie's replicas: {profile:#}");
    assert!(replicas.contains(&honest_b.node_id()), "{profile:#}");
    std::thread::sleep(Duration::from_secs(3)); // time it would have had to replicate
    let (status, answer) = at_corrupt.get_json("/api/v1/users/newbie", None);
    assert_eq!(status, 404, "the distrusted node received the new user: {answer}");
}

#[test]
fn a_node_whose_key_was_never_paired_is_refused() {
    let home = start("sib-alone");
    // The stranger knows the node's pin, id and address, but the node does not know it.
    let config = format!(
        "[peers]\n[[peers.siblings]]\nnode_id = \"{}\"\naddress = \"{}\"\npin = \"{}\"\n",
        home.node_id(),
        peer_address(&home),
        home.pin()
    );
    let stranger = Node::start(NodeOptions { name: "stranger".to_owned(), ..NodeOptions::with_config(&config) });
    let at_stranger = Client::new(&stranger, Transport::Http2);
    let at_home = Client::new(&home, Transport::Http2);
    let mallory = at_stranger.claim_admin(&stranger, "mallory");
    at_stranger.create_post(&mallory, "let me in", &[], "public");
    std::thread::sleep(Duration::from_secs(3));
    let peers = &replication(&at_stranger, &stranger)["peers"];
    assert_eq!(peers[0]["connected"], json!(false), "the node refused the stranger's key: {peers}");
    assert_eq!(peers[0]["bytes_in"], json!(0), "{peers}");
    assert_eq!(replication(&at_home, &home)["peers"], json!([]), "the node lists no sibling");
    let (status, _) = at_home.get_json("/api/v1/users/mallory", None);
    assert_eq!(status, 404, "nothing of the stranger's reached the node");
    let (status, _) = at_home.get_json("/healthz", None);
    assert_eq!(status, 200, "and it keeps serving");
}

/// `edgenode … --data-dir D` with the flags after the subcommand, as the README
/// writes them; panics with its output unless it succeeds.
fn readme_cli(args: &[&str], data_dir: &std::path::Path) -> String {
    let output =
        Command::new(edgenode_binary()).args(args).arg("--data-dir").arg(data_dir).output().expect("running edgenode");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "edgenode {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Pairing as the README prints it (`peer pair|join|list --data-dir D`), with the
/// joiner's peer port listening on every address: the join command `peer pair`
/// prints is run as printed, and neither side stores an address nobody can dial
/// (`0.0.0.0`, `[::]`); both then replicate.
#[test]
fn pairing_as_the_readme_writes_it_stores_addresses_the_other_side_can_dial() {
    let a = start("pair-a");
    let b = Node::start(NodeOptions {
        name: "pair-b".to_owned(),
        ..NodeOptions::with_config("[peers]\nlisten = \"0.0.0.0:0\"\n")
    });
    let printed = readme_cli(&["peer", "pair", "--wait", "0"], a.data_dir());
    let join_line = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix("edgenode peer join "))
        .unwrap_or_else(|| panic!("no join command in {printed:?}"))
        .to_owned();
    let (address, code) = join_line.split_once(' ').expect("join ADDRESS CODE");
    assert!(!address.starts_with("0.0.0.0") && !address.starts_with("[::]"), "printed {address}");
    let joined = readme_cli(&["peer", "join", address, code], b.data_dir());
    assert!(joined.contains(a.node_id()), "join names the node it paired with: {joined}");

    let stored = |node: &Node| std::fs::read_to_string(node.data_dir().join("siblings.toml")).unwrap_or_default();
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while !stored(&a).contains(b.node_id()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in [&a, &b] {
        let siblings = stored(node);
        assert!(siblings.contains("address"), "{} stored its sibling: {siblings}", node.name());
        assert!(
            !siblings.contains("0.0.0.0") && !siblings.contains("[::]"),
            "{} stored an address nobody can dial: {siblings}",
            node.name()
        );
    }
    // `peer list` shows the other node's row as connected.
    let connected_to = |node: &Node, other: &Node| {
        readme_cli(&["peer", "list"], node.data_dir())
            .lines()
            .any(|row| row.contains(other.node_id()) && row.split_whitespace().any(|word| word == "connected"))
    };
    while Instant::now() < deadline && !(connected_to(&a, &b) && connected_to(&b, &a)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(connected_to(&a, &b), "{}", readme_cli(&["peer", "list"], a.data_dir()));
    assert!(connected_to(&b, &a), "{}", readme_cli(&["peer", "list"], b.data_dir()));
    let (client_a, client_b) = (Client::new(&a, Transport::Http2), Client::new(&b, Transport::Http2));
    converge(&[(&client_a, &a), (&client_b, &b)]);
}
