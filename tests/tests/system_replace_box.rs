//! System tier, a dead box replaced (issue 16): three siblings in network namespaces,
//! users homed on the first with posts and photos; that box is killed with SIGKILL
//! and its data dir deleted; a new box is paired with the two survivors as
//! docs/replace-a-box.md says (`edgenode peer pair` / `peer join`), the dead box's id
//! is retired on one survivor (`edgenode peer retire`), and then every user of the
//! dead box signs in on the new one and finds all their posts and photos there.
//!
//! What "waiting for a dead sibling" means, and what retiring it ends: a node
//! collects a tombstone only once every sibling's horizon has passed it, and a dead
//! sibling's horizon never moves. So a post deleted after the box died keeps its
//! tombstone on both survivors for as long as the dead box is a sibling (checked over
//! more than a collection interval), and loses it within a bound once the box is
//! retired on one survivor, which tells the other.
//!
//! `#[ignore]`d: run as root with `--include-ignored` (tools: tests/system/install-deps).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::lab;
use crate::lab::{eventually, Endpoint, Host, Lab, LabNode, ADMIN_PASSWORD};
use crate::lab_siblings::{
    admin_handle, expect_status, log_in, peers_config, percent_encode, start_paired, text_field,
};
use edgenode_tests::fixtures::{distinct_photo, sha256_hex};
use edgenode_tests::node::edgenode_binary;
use edgenode_tests::steps::PASSWORD;
use serde_json::{json, Value};

/// Three siblings, three replicas: every live sibling holds every user.
const REPLICAS: usize = 3;
const NODE_NAMES: [&str; 3] = ["alder", "birch", "cedar"];
const NEW_BOX_NAME: &str = "dogwood";
/// The dead box and the survivor where it is retired.
const DEAD: usize = 0;
const RETIRED_ON: usize = 1;
const USERS_ON_DEAD_BOX: usize = 2;
const PHOTOS_PER_USER: usize = 2;
const POSTS_PER_USER: usize = 3;

const CONNECT_WITHIN: Duration = Duration::from_secs(60);
const CONVERGE_WITHIN: Duration = Duration::from_secs(300);
/// Survivors notice a SIGKILLed sibling within the sibling idle timeout (30 s).
const DEATH_NOTICED_WITHIN: Duration = Duration::from_secs(60);
/// Tombstones are collected every 60 s (`ReplicaConfig::gc_interval_ms`): the
/// tombstone must outlive more than one pass while the dead box is a sibling...
const TOMBSTONE_KEPT_FOR: Duration = Duration::from_secs(75);
/// ...and go within two passes and some heartbeats once it is retired.
const TOMBSTONE_COLLECTED_WITHIN: Duration = Duration::from_secs(150);
/// Tombstones of the setup (none expected) are collected while all three live.
const SETUP_TOMBSTONES_GONE_WITHIN: Duration = Duration::from_secs(150);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A user of the dead box: what they wrote, and the photos' original bytes' hashes
/// as the dead box served them.
struct User {
    handle: String,
    posts: BTreeSet<String>,
    /// media id → SHA-256 of the original as served before the box died.
    photos: BTreeMap<String, String>,
    /// A post without a photo (the one the test deletes).
    text_only_post: String,
    /// Their session on the dead box, while it lives.
    token: String,
}

#[test]
#[ignore = "system tier: root, network namespaces"]
fn a_new_box_takes_over_the_users_of_a_dead_one_once_it_is_retired() {
    lab::require_tools();
    let started = Instant::now();
    let mut lab = Lab::new();
    let hosts: Vec<Host> = NODE_NAMES.iter().map(|_| lab.host()).collect();
    let mut nodes = start_siblings(&hosts);
    let control: Vec<String> = nodes.iter().map(|node| node.read_data_file("control-token")).collect();
    let dead_id = nodes[DEAD].ready.node_id.clone();

    // Users homed on the dead box, with posts and photos, written there.
    let admin = log_in(&nodes[DEAD].endpoint(), &admin_handle(NODE_NAMES[DEAD]), ADMIN_PASSWORD);
    let mut users: Vec<User> =
        (0..USERS_ON_DEAD_BOX).map(|number| write_user(&nodes[DEAD].endpoint(), &admin, number)).collect();
    let survivors: Vec<(Endpoint, &str)> =
        (0..NODE_NAMES.len()).map(|index| (nodes[index].endpoint(), control[index].as_str())).collect();
    let took = wait_until_converged(&survivors, "the three siblings before the box dies");
    println!("setup: {} users of {} converged on all three in {} ms", users.len(), NODE_NAMES[DEAD], took.as_millis());
    for user in &mut users {
        user.photos = originals(&nodes[DEAD].endpoint(), &user.token, &user.photos);
    }
    eventually(SETUP_TOMBSTONES_GONE_WITHIN, "no tombstones on any sibling before the test deletes a post", || {
        let counts = tombstones(&survivors)?;
        if counts.iter().all(|count| *count == 0) {
            Ok(())
        } else {
            Err(format!("tombstones per node {counts:?}"))
        }
    });

    // The box dies: SIGKILL, and its disk is gone.
    nodes[DEAD].kill_9();
    std::fs::remove_dir_all(nodes[DEAD].data_dir()).expect("deleting the dead box's data dir");
    let survivors: Vec<(Endpoint, &str)> =
        (1..NODE_NAMES.len()).map(|index| (nodes[index].endpoint(), control[index].as_str())).collect();
    eventually(DEATH_NOTICED_WITHIN, "both survivors see the dead box disconnected", || {
        for (endpoint, token) in &survivors {
            let peers = peers_of(endpoint, token)?;
            let dead = peers.iter().find(|peer| peer["node_id"] == json!(dead_id)).ok_or("dead box not listed")?;
            if dead["connected"] != json!(false) {
                return Err(format!("still connected: {dead}"));
            }
        }
        Ok(())
    });

    // A delete after the death: its tombstone is what the survivors keep while they
    // wait for the dead box.
    let deleter = &mut users[0];
    let on_survivor = nodes[RETIRED_ON].endpoint();
    let token = log_in(&on_survivor, &deleter.handle, PASSWORD);
    let deleted = deleter.text_only_post.clone();
    deleter.posts.remove(&deleted);
    let (status, answer) = on_survivor.https("DELETE", &format!("/api/v1/posts/{deleted}"), Some(&token), None);
    assert_eq!(status, 204, "{} deletes a post on {}: {answer}", deleter.handle, NODE_NAMES[RETIRED_ON]);
    let deleted_at = Instant::now();
    eventually(CONVERGE_WITHIN, "the delete's tombstone on both survivors", || {
        let counts = tombstones(&survivors)?;
        if counts.iter().all(|count| *count >= 1) {
            Ok(())
        } else {
            Err(format!("tombstones per survivor {counts:?}"))
        }
    });

    // The replacement: a fresh box in its own namespace, paired with both survivors.
    let new_host = lab.host();
    let new_box = LabNode::start_without_mdns(&new_host, NEW_BOX_NAME, &peers_config(&new_host, REPLICAS, &[]));
    let new_box_control = new_box.read_data_file("control-token");
    let new_id = new_box.ready.node_id.clone();
    for survivor in &nodes[1..] {
        pair(survivor, &new_box);
    }
    let mut everyone: Vec<(Endpoint, &str)> =
        (1..NODE_NAMES.len()).map(|index| (nodes[index].endpoint(), control[index].as_str())).collect();
    everyone.push((new_box.endpoint(), new_box_control.as_str()));
    eventually(CONNECT_WITHIN, "the new box connected to both survivors", || {
        let peers = peers_of(&new_box.endpoint(), &new_box_control)?;
        let connected = peers.iter().filter(|peer| peer["connected"] == json!(true)).count();
        if connected == 2 {
            Ok(())
        } else {
            Err(format!("{connected} connected: {peers:?}"))
        }
    });

    // Not before: while the dead box is a sibling, the tombstone stays.
    while deleted_at.elapsed() < TOMBSTONE_KEPT_FOR {
        let counts = tombstones(&survivors).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            counts.iter().all(|count| *count >= 1),
            "a survivor collected the tombstone {} ms after the delete while the dead box was still a sibling \
             (it cannot have acknowledged it): tombstones per survivor {counts:?}",
            deleted_at.elapsed().as_millis()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    println!(
        "check: the delete's tombstone stayed on both survivors for {} ms while the dead box was a sibling",
        deleted_at.elapsed().as_millis()
    );

    // Retired on one survivor, with the CLI.
    let output = cli(&nodes[RETIRED_ON], &["peer", "retire", &dead_id]);
    assert!(
        output.status.success(),
        "`edgenode peer retire {dead_id}` on {}: {}",
        NODE_NAMES[RETIRED_ON],
        text(&output)
    );
    assert!(text(&output).contains("retired"), "the retire command says what it did: {}", text(&output));
    let retired_at = Instant::now();
    let again = cli(&nodes[RETIRED_ON], &["peer", "retire", &dead_id, "--json"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap_or_else(|_| panic!("JSON: {}", text(&again)));
    assert_eq!(again["already_retired"], json!(true), "retiring twice changes nothing: {again}");
    let own = cli(&nodes[RETIRED_ON], &["peer", "retire", &nodes[RETIRED_ON].ready.node_id]);
    assert_eq!(own.status.code(), Some(1), "a node refuses to retire itself: {}", text(&own));

    let collected_after =
        eventually(TOMBSTONE_COLLECTED_WITHIN, "both survivors collect the tombstone after the retirement", || {
            let counts = tombstones(&survivors)?;
            if counts.iter().all(|count| *count == 0) {
                Ok(retired_at.elapsed())
            } else {
                Err(format!("tombstones per survivor {counts:?}"))
            }
        });
    println!("check: both survivors collected the tombstone {} ms after the retirement", collected_after.as_millis());
    for (index, (endpoint, token)) in survivors.iter().enumerate() {
        let peers = peers_of(endpoint, token).unwrap_or_else(|error| panic!("{error}"));
        let dead = peers.iter().find(|peer| peer["node_id"] == json!(dead_id));
        assert_eq!(
            dead.map(|peer| &peer["state"]),
            Some(&json!("retired")),
            "{} lists the dead box as retired (retired on {}, told over the link): {peers:#?}",
            NODE_NAMES[index + 1],
            NODE_NAMES[RETIRED_ON]
        );
    }
    let listed = cli(&nodes[RETIRED_ON], &["peer", "list"]);
    assert!(
        text(&listed).lines().any(|line| line.starts_with(&dead_id) && line.contains("retired")),
        "`peer list` shows the dead box as retired: {}",
        text(&listed)
    );

    // The new box takes over: everything converges, and each user of the dead box
    // signs in there and finds their posts and photos.
    wait_until_converged(&everyone, "the survivors and the new box after the retirement");
    println!("check: the new box holds everything {} ms after the retirement", retired_at.elapsed().as_millis());
    let on_new_box = new_box.endpoint();
    for user in &users {
        let token = log_in(&on_new_box, &user.handle, PASSWORD);
        let listed: BTreeSet<String> = posts_of(&on_new_box, &token, &user.handle).into_iter().collect();
        assert_eq!(
            listed, user.posts,
            "{} on the new box lists exactly their posts (the deleted one gone)",
            user.handle
        );
        for (media_id, expected) in &user.photos {
            let path = format!("/api/v1/media/{media_id}/original");
            let (status, bytes) =
                on_new_box.get_bytes(&path, Some(&token), REQUEST_TIMEOUT).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(status, 200, "{} GET {path} on the new box", user.handle);
            assert_eq!(&sha256_hex(&bytes), expected, "{} photo {media_id}: the same bytes as before", user.handle);
        }
        let (status, profile) = on_new_box.https("GET", &format!("/api/v1/users/{}", user.handle), Some(&token), None);
        assert_eq!(status, 200, "{}'s profile on the new box: {profile}", user.handle);
        let placed: Vec<&str> =
            profile["nodes"].as_array().into_iter().flatten().filter_map(|node| node["id"].as_str()).collect();
        assert!(
            placed.contains(&new_id.as_str()) && !placed.contains(&dead_id.as_str()),
            "{}'s placement names the new box {new_id} and not the retired {dead_id}: {placed:?}",
            user.handle
        );
        println!(
            "check: {} signed in on the new box: {} posts, {} photos by hash, placed on {placed:?}",
            user.handle,
            listed.len(),
            user.photos.len()
        );
    }
    println!("done in {} s", started.elapsed().as_secs());
}

/// The three siblings started paired (`lab_siblings::start_paired`); returns once all
/// see each other connected.
fn start_siblings(hosts: &[Host]) -> Vec<LabNode> {
    let (nodes, _configs) = start_paired(hosts, &NODE_NAMES, REPLICAS);
    eventually(CONNECT_WITHIN, "every node connected to both siblings", || {
        for node in &nodes {
            let peers = peers_of(&node.endpoint(), &node.read_data_file("control-token"))?;
            if peers.len() != 2 || peers.iter().any(|peer| peer["connected"] != json!(true)) {
                return Err(format!("{}: {peers:?}", node.name));
            }
        }
        Ok(())
    });
    nodes
}

/// A user invited on the node behind `endpoint`, with photos and posts written there
/// (every other post carries a photo).
fn write_user(endpoint: &Endpoint, admin_token: &str, number: usize) -> User {
    let invite = expect_status(endpoint, "POST", "/api/v1/invites", Some(admin_token), Some(&json!({})), 201);
    let handle = format!("{}_{number}", NODE_NAMES[DEAD]);
    let body = json!({ "handle": handle, "password": PASSWORD, "invite": text_field(&invite, "code") });
    let token = text_field(&expect_status(endpoint, "POST", "/api/v1/accounts", None, Some(&body), 201), "token");
    let mut photos = BTreeMap::new();
    for index in 0..PHOTOS_PER_USER {
        let photo = distinct_photo((number * PHOTOS_PER_USER + index) as u8);
        let path = format!("/api/v1/media/{}", sha256_hex(&photo));
        let (status, media) = endpoint
            .request("PUT", &path, Some(&token), Some(("image/jpeg", &photo)), REQUEST_TIMEOUT)
            .unwrap_or_else(|error| panic!("{handle} uploading a photo: {error}"));
        assert_eq!(status, 201, "{handle} uploading a photo: {media}");
        photos.insert(text_field(&media, "id"), String::new());
    }
    let media_ids: Vec<&String> = photos.keys().collect();
    let mut posts = BTreeSet::new();
    let mut text_only_post = String::new();
    for index in 0..POSTS_PER_USER {
        let media: Vec<&String> = media_ids.get(index).into_iter().copied().collect();
        let body = json!({ "caption": format!("post {index} of {handle}"), "media": media, "visibility": "public" });
        let post = text_field(&expect_status(endpoint, "POST", "/api/v1/posts", Some(&token), Some(&body), 201), "id");
        if media.is_empty() {
            text_only_post = post.clone();
        }
        posts.insert(post);
    }
    assert!(POSTS_PER_USER > PHOTOS_PER_USER && !text_only_post.is_empty(), "the last post carries no photo");
    User { handle, posts, photos, text_only_post, token }
}

/// The SHA-256 of each photo's original as `endpoint` serves it to its owner.
fn originals(endpoint: &Endpoint, token: &str, photos: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    photos
        .keys()
        .map(|media_id| {
            let path = format!("/api/v1/media/{media_id}/original");
            let (status, bytes) =
                endpoint.get_bytes(&path, Some(token), REQUEST_TIMEOUT).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(status, 200, "GET {path} by its owner on their home");
            (media_id.clone(), sha256_hex(&bytes))
        })
        .collect()
}

/// `edgenode ARGS --data-dir <node's>` inside the node's namespace.
fn cli(node: &LabNode, args: &[&str]) -> Output {
    let mut command = node.host().command(edgenode_binary());
    command.args(args).arg("--data-dir").arg(node.data_dir());
    command.output().unwrap_or_else(|error| panic!("running {command:?}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `peer pair` on `survivor`, then the `peer join` line it prints run on `new_box`.
fn pair(survivor: &LabNode, new_box: &LabNode) {
    let shown = cli(survivor, &["peer", "pair", "--wait", "0"]);
    assert!(shown.status.success(), "`edgenode peer pair` on {}: {}", survivor.name, text(&shown));
    let printed = String::from_utf8_lossy(&shown.stdout).into_owned();
    let join: Vec<&str> = printed
        .lines()
        .find_map(|line| line.trim().strip_prefix("edgenode peer join "))
        .unwrap_or_else(|| panic!("`peer pair` printed no `edgenode peer join` line: {printed}"))
        .split_whitespace()
        .collect();
    let [address, code] = join[..] else { panic!("a join line is ADDRESS CODE: {join:?}") };
    let joined = cli(new_box, &["peer", "join", address, code]);
    assert!(
        joined.status.success(),
        "`edgenode peer join` on {} with {}: {}",
        new_box.name,
        survivor.name,
        text(&joined)
    );
}

/// `GET /api/v1/node/peers` items.
fn peers_of(endpoint: &Endpoint, control_token: &str) -> Result<Vec<Value>, String> {
    let (status, answer) = endpoint.request("GET", "/api/v1/node/peers", Some(control_token), None, REQUEST_TIMEOUT)?;
    if status != 200 {
        return Err(format!("GET /api/v1/node/peers: {status} {answer}"));
    }
    Ok(answer["items"].as_array().cloned().unwrap_or_default())
}

fn replication(endpoint: &Endpoint, control_token: &str) -> Result<Value, String> {
    let (status, answer) =
        endpoint.request("GET", "/api/v1/node/replication", Some(control_token), None, REQUEST_TIMEOUT)?;
    if status != 200 {
        return Err(format!("GET /api/v1/node/replication: {status} {answer}"));
    }
    Ok(answer)
}

fn tombstones(nodes: &[(Endpoint, &str)]) -> Result<Vec<u64>, String> {
    nodes
        .iter()
        .map(|(endpoint, token)| Ok(replication(endpoint, token)?["tombstones"].as_u64().unwrap_or(u64::MAX)))
        .collect()
}

/// Waits until the nodes' digests agree and none misses a photo; how long that took.
fn wait_until_converged(nodes: &[(Endpoint, &str)], what: &str) -> Duration {
    let started = Instant::now();
    eventually(CONVERGE_WITHIN, what, || {
        let states: Vec<Value> =
            nodes.iter().map(|(endpoint, token)| replication(endpoint, token)).collect::<Result<_, _>>()?;
        let same = states.iter().all(|state| state["digest"] == states[0]["digest"]);
        if same && states.iter().all(|state| state["media_missing"] == json!(0)) {
            Ok(started.elapsed())
        } else {
            let lines: Vec<String> = states
                .iter()
                .map(|state| {
                    format!(
                        "{} records {} tombstones {} media_missing {} digest {}",
                        state["node_id"],
                        state["records"],
                        state["tombstones"],
                        state["media_missing"],
                        state["digest"]
                    )
                })
                .collect();
            Err(lines.join("; "))
        }
    })
}

/// Every post id of `handle` as `endpoint` lists them (pages of 100, at most 10).
fn posts_of(endpoint: &Endpoint, token: &str, handle: &str) -> Vec<String> {
    let mut posts = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!("/api/v1/users/{handle}/posts?limit=100");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", percent_encode(cursor)));
        }
        let page = expect_status(endpoint, "GET", &path, Some(token), None, 200);
        let items = page["items"].as_array().cloned().unwrap_or_default();
        posts.extend(items.iter().map(|post| text_field(post, "id")));
        match page["next_cursor"].as_str() {
            Some(next) if !items.is_empty() => cursor = Some(next.to_owned()),
            _ => return posts,
        }
    }
    panic!("{handle}'s posts did not end within 10 pages");
}
