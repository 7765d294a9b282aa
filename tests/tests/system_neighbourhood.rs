//! System tier, the neighbourhood as one network: four real `edgenode` processes in
//! network namespaces, in two regions with one aggregator above them:
//!
//! ```text
//!   douglas  earth/eu/ams          aggregator for earth/eu/ams
//!   ash      earth/eu/ams/north    siblings (each keeps the other's users)
//!   beech    earth/eu/ams/north
//!   cypress  earth/eu/ams/south    a neighbour of everyone, nobody's sibling
//! ```
//!
//! A user on ash follows users on beech (a sibling: their posts replicate) and on
//! cypress (not a sibling: their posts are fanned out) and sees their posts in order;
//! a region-scoped search on ash finds a public post made on cypress through the
//! aggregator and never a followers-only one; beech serves corrupted media, loses
//! ash's trust and gets no new replicas. `#[ignore]`d: run it with `--include-ignored`,
//! as root, with the tools `tests/system/install-deps` installs; add `--nocapture`
//! for the figures.

use std::time::{Duration, Instant};

use crate::lab;
use crate::lab::{eventually, Endpoint, Host, Lab, LabNode, ADMIN_PASSWORD};
use crate::lab_siblings::{admin_handle, log_in, peer_address, Sibling};
use edgenode_tests::faults::corrupt_media_files;
use edgenode_tests::fixtures::distinct_photo;
use edgenode_tests::steps::PASSWORD;
use serde_json::{json, Value};

/// Each user's data on two siblings (ash and beech keep each other's users).
const REPLICAS: usize = 2;
const ASH: usize = 0;
const BEECH: usize = 1;
const CYPRESS: usize = 2;
const DOUGLAS: usize = 3;
const NAMES: [&str; 4] = ["ash", "beech", "cypress", "douglas"];
const REGIONS: [&str; 4] = ["earth/eu/ams/north", "earth/eu/ams/north", "earth/eu/ams/south", "earth/eu/ams"];
const SCOPE: &str = "earth/eu/ams";
/// Who is whose sibling; everyone else is a neighbour.
const SIBLINGS: [(usize, usize); 1] = [(ASH, BEECH)];
const CONNECT_WITHIN: Duration = Duration::from_secs(60);
/// A post reaching a follower's feed on another node, a search entry its aggregator.
const ARRIVE_WITHIN: Duration = Duration::from_secs(60);
/// Fan-out latency samples.
const LATENCY_POSTS: usize = 5;

#[test]
#[ignore = "system tier: root, network namespaces, python-zeroconf (tests/system/install-deps)"]
fn four_nodes_two_regions_one_aggregator_fan_out_search_and_trust() {
    lab::require_tools();
    let mut hood = Neighbourhood::start();
    let alice = hood.register(ASH, "alice");
    let bob = hood.register(BEECH, "bob");
    let carol = hood.register(CYPRESS, "carol");
    let ash = hood.nodes[ASH].endpoint();
    let cypress_id = hood.nodes[CYPRESS].ready.node_id.clone();

    // --- fan-out: alice follows bob (a sibling's user) and carol (a neighbour's) ---
    eventually(ARRIVE_WITHIN, "bob's account replicates to ash", || {
        match ash.https("GET", "/api/v1/users/bob", None, None) {
            (200, _) => Ok(()),
            (status, answer) => Err(format!("{status} {answer}")),
        }
    });
    expect(&ash, "PUT", "/api/v1/users/bob/follow", Some(&alice), None, &[200, 201, 204]);
    let carol_remote = format!("carol@{cypress_id}");
    expect(&ash, "PUT", &format!("/api/v1/users/{carol_remote}/follow"), Some(&alice), None, &[200, 201, 204]);

    let photo = hood.upload(CYPRESS, &carol, &distinct_photo(201));
    let mut expected_order = Vec::new();
    let posts = [
        (CYPRESS, &carol, "carol public with a photo", "public", Some(photo.as_str())),
        (BEECH, &bob, "bob public", "public", None),
        (CYPRESS, &carol, "carol for followers", "followers", None),
        (CYPRESS, &carol, "carol private", "private", None),
        (BEECH, &bob, "bob for followers", "followers", None),
    ];
    for (node, author, caption, visibility, media) in posts {
        hood.post(node, author, caption, visibility, media);
        if visibility != "private" {
            expected_order.insert(0, caption.to_owned());
        }
        std::thread::sleep(Duration::from_millis(50)); // distinct creation times across nodes
    }
    let feed = eventually(ARRIVE_WITHIN, "alice's feed on ash shows bob's and carol's posts", || {
        let captions = feed_captions(&ash, &alice);
        if expected_order.iter().all(|caption| captions.contains(caption)) {
            Ok(captions)
        } else {
            Err(format!("{captions:?}"))
        }
    });
    let seen: Vec<&String> = feed.iter().filter(|caption| expected_order.contains(caption)).collect();
    assert_eq!(seen, expected_order.iter().collect::<Vec<_>>(), "newest first, across nodes: {feed:?}");
    assert!(!feed.iter().any(|caption| caption.contains("private")), "a private post reached a feed: {feed:?}");
    println!("fan-out: alice's feed on ash, newest first: {seen:?}");

    // The photo's thumbnail, served by alice's node, is the one carol's node made.
    let thumb_path = format!("/api/v1/media/{photo}/thumb");
    let (status, thumb_on_ash) = ash.https("GET", &thumb_path, Some(&alice), None);
    assert_eq!(status, 200, "ash serves the thumbnail of carol's photo: {thumb_on_ash}");
    let (status, thumb_on_cypress) = hood.nodes[CYPRESS].https("GET", &thumb_path, Some(&carol), None);
    assert_eq!(status, 200);
    assert_eq!(thumb_on_ash, thumb_on_cypress, "the same thumbnail bytes");

    // Latency: a post on cypress until it is in alice's feed on ash.
    let mut latencies = Vec::new();
    for number in 0..LATENCY_POSTS {
        let caption = format!("carol latency probe {number}");
        let posted = Instant::now();
        hood.post(CYPRESS, &carol, &caption, "public", None);
        eventually(ARRIVE_WITHIN, "a probe post reaches alice's feed", || {
            if feed_captions(&ash, &alice).contains(&caption) {
                Ok(())
            } else {
                Err(caption.clone())
            }
        });
        latencies.push(posted.elapsed());
    }
    latencies.sort();
    println!(
        "fan-out latency (post acknowledged on cypress -> in alice's feed on ash, polled every 250 ms): \
         median {} ms, max {} ms over {LATENCY_POSTS} posts",
        latencies[LATENCY_POSTS / 2].as_millis(),
        latencies[LATENCY_POSTS - 1].as_millis()
    );

    // --- fractal search: the region, through the aggregator ---
    let started = Instant::now();
    hood.post(CYPRESS, &carol, "a zebrafinch on the balcony", "public", None);
    hood.post(CYPRESS, &carol, "a nightjar only my followers may know of", "followers", None);
    let search = |word: &str| {
        let path = format!("/api/v1/search?q={word}&scope={}", SCOPE.replace('/', "%2F"));
        expect(&ash, "GET", &path, Some(&alice), None, &[200])
    };
    let found = eventually(ARRIVE_WITHIN, "a region search on ash finds carol's public post", || {
        let answer = search("zebrafinch");
        match answer["posts"].as_array() {
            Some(posts) if !posts.is_empty() => Ok(answer),
            _ => Err(answer.to_string()),
        }
    });
    println!("search: found on ash with scope={SCOPE} {} ms after the post", started.elapsed().as_millis());
    assert_eq!(found["answered_by"], json!(hood.nodes[DOUGLAS].ready.node_id), "the aggregator answered: {found}");
    let hidden = search("nightjar");
    assert_eq!(hidden["posts"], json!([]), "a followers-only post is never in a region search: {hidden}");
    let local = expect(&ash, "GET", "/api/v1/search?q=zebrafinch&scope=node", Some(&alice), None, &[200]);
    assert_eq!(local["posts"], json!([]), "scope=node on ash holds no post of cypress: {local}");

    // --- trust: beech serves corrupted media and gets no new replicas from ash ---
    hood.nodes[ASH].terminate();
    let rotten: Vec<String> = (0..4u8)
        .map(|seed| {
            let media = hood.upload(BEECH, &bob, &distinct_photo(220 + seed));
            hood.post(BEECH, &bob, "photos that will rot", "public", Some(&media));
            media
        })
        .collect();
    hood.nodes[BEECH].terminate();
    let corrupted = corrupt_media_files(hood.nodes[BEECH].data_dir(), &rotten);
    assert_eq!(corrupted, 3 * rotten.len(), "original, display and thumb of each photo");
    hood.restart(BEECH);
    hood.restart(ASH);
    let beech_id = hood.nodes[BEECH].ready.node_id.clone();
    let started = Instant::now();
    let trust = eventually(ARRIVE_WITHIN, "ash distrusts beech and places nothing on it", || {
        let token = hood.nodes[ASH].read_data_file("control-token");
        let answer = expect(&ash, "GET", "/api/v1/node/peers", Some(token.trim()), None, &[200]);
        let beech = answer["items"]
            .as_array()
            .and_then(|items| items.iter().find(|item| item["node_id"] == json!(beech_id)).cloned())
            .ok_or_else(|| format!("beech is not listed: {answer}"))?;
        if beech["trust_tier"] == json!("untrusted") && beech["placement_weight"] == json!(0) {
            Ok(beech)
        } else {
            Err(beech.to_string())
        }
    });
    println!(
        "trust: beech untrusted on ash {} ms after the restart: score {}, events {}",
        started.elapsed().as_millis(),
        trust["trust"],
        trust["trust_events"]
    );
    let dave = hood.register(ASH, "dave");
    hood.post(ASH, &dave, "dave joined after beech lost trust", "public", None);
    std::thread::sleep(Duration::from_secs(5)); // time it would have had to replicate
    let (status, answer) = hood.nodes[BEECH].https("GET", "/api/v1/users/dave", None, None);
    assert_eq!(status, 404, "beech received a new user after it lost ash's trust: {answer}");
    let (_, profile) = ash.https("GET", "/api/v1/users/dave", None, None);
    let holders: Vec<&str> =
        profile["nodes"].as_array().into_iter().flatten().filter_map(|n| n["id"].as_str()).collect();
    assert!(!holders.contains(&beech_id.as_str()), "beech is not among dave's replicas: {profile}");
    println!("trust: dave (joined on ash afterwards) is held by {holders:?}, not by beech");
}

struct Neighbourhood {
    /// Declared before `_lab`: the nodes stop before their namespaces go.
    nodes: Vec<LabNode>,
    configs: Vec<String>,
    admin_tokens: Vec<String>,
    _lab: Lab,
}

impl Neighbourhood {
    /// Starts each node alone (to learn its id and pin, and claim it), then all four
    /// with each other as siblings or neighbours.
    fn start() -> Neighbourhood {
        let mut lab = Lab::new();
        let hosts: Vec<Host> = NAMES.iter().map(|_| lab.host()).collect();
        let mut nodes: Vec<LabNode> = hosts
            .iter()
            .zip(NAMES)
            .enumerate()
            .map(|(index, (host, name))| LabNode::start_without_mdns(host, name, &config(index, host, &[])))
            .collect();
        let known: Vec<Sibling> = nodes
            .iter()
            .map(|node| {
                node.claim_as(&admin_handle(&node.name));
                Sibling::of(node)
            })
            .collect();
        for node in &mut nodes {
            assert!(node.terminate().success(), "{} exits cleanly on SIGTERM", node.name);
        }
        let known: Vec<&Sibling> = known.iter().collect();
        let configs: Vec<String> = (0..nodes.len()).map(|index| config(index, &hosts[index], &known)).collect();
        for (node, config) in nodes.iter_mut().zip(&configs) {
            node.restart(config);
        }
        let admin_tokens =
            nodes.iter().map(|node| log_in(&node.endpoint(), &admin_handle(&node.name), ADMIN_PASSWORD)).collect();
        let hood = Neighbourhood { nodes, configs, admin_tokens, _lab: lab };
        let (ash, beech) = (&hood.nodes[ASH], &hood.nodes[BEECH]);
        let token = ash.read_data_file("control-token");
        eventually(CONNECT_WITHIN, "ash and beech connected as siblings", || {
            let answer = expect(&ash.endpoint(), "GET", "/api/v1/node/peers", Some(token.trim()), None, &[200]);
            let connected = answer["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|item| item["node_id"] == json!(beech.ready.node_id) && item["connected"] == json!(true))
            });
            if connected {
                Ok(())
            } else {
                Err(answer.to_string())
            }
        });
        hood
    }

    fn restart(&mut self, node: usize) {
        let config = self.configs[node].clone();
        self.nodes[node].restart(&config);
    }

    /// A user registered on `node` with an invite of its admin; returns the token.
    fn register(&self, node: usize, handle: &str) -> String {
        let endpoint = self.nodes[node].endpoint();
        let invite =
            expect(&endpoint, "POST", "/api/v1/invites", Some(&self.admin_tokens[node]), Some(&json!({})), &[201]);
        let body = json!({ "handle": handle, "password": PASSWORD, "invite": invite["code"] });
        let created = expect(&endpoint, "POST", "/api/v1/accounts", None, Some(&body), &[201]);
        created["token"].as_str().expect("a token").to_owned()
    }

    fn upload(&self, node: usize, token: &str, jpeg: &[u8]) -> String {
        let endpoint = self.nodes[node].endpoint();
        let (status, media) = endpoint
            .request("POST", "/api/v1/media", Some(token), Some(("image/jpeg", jpeg)), Duration::from_secs(60))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(status == 200 || status == 201, "upload on {}: {status} {media}", NAMES[node]);
        media["id"].as_str().expect("a media id").to_owned()
    }

    fn post(&self, node: usize, token: &str, caption: &str, visibility: &str, media: Option<&str>) {
        let body =
            json!({ "caption": caption, "visibility": visibility, "media": media.into_iter().collect::<Vec<_>>() });
        expect(&self.nodes[node].endpoint(), "POST", "/api/v1/posts", Some(token), Some(&body), &[201]);
    }
}

/// Region, roles and the `[peers]` table of node `index`, with `known` (all nodes, or
/// none on the first start) as siblings or neighbours.
fn config(index: usize, host: &Host, known: &[&Sibling]) -> String {
    let roles = if index == DOUGLAS { r#"["home", "aggregator"]"# } else { r#"["home"]"# };
    let mut config = format!(
        "region = \"{}\"\nroles = {roles}\n[peers]\nlisten = \"{}\"\nreplicas = {REPLICAS}\n",
        REGIONS[index],
        peer_address(host)
    );
    for (other, node) in known.iter().enumerate().filter(|(other, _)| *other != index) {
        let sibling = SIBLINGS.iter().any(|&(a, b)| (a, b) == (index, other) || (b, a) == (index, other));
        let table = if sibling { "peers.siblings" } else { "peers.neighbours" };
        config.push_str(&format!(
            "\n[[{table}]]\nnode_id = \"{}\"\naddress = \"{}\"\npin = \"{}\"\n",
            node.node_id, node.address, node.pin
        ));
    }
    config
}

/// One request whose status must be one of `statuses`; the answer.
fn expect(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    statuses: &[u16],
) -> Value {
    let (status, answer) = endpoint.https(method, path, token, body);
    assert!(statuses.contains(&status), "{method} {path}: expected {statuses:?}, got {status} {answer}");
    answer
}

fn feed_captions(endpoint: &Endpoint, token: &str) -> Vec<String> {
    let feed = expect(endpoint, "GET", "/api/v1/feed?limit=100", Some(token), None, &[200]);
    feed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["caption"].as_str().map(str::to_owned))
        .collect()
}
